"""fnn.nn.Recompute and the ``recompute=`` switch of fnn.models.gpt.

Recompute(f) keeps only f's input between forward and backward and runs f's
forward again in the backward: the values are f's (forward output, parameter
and input gradients, in float64 against jax.vjp and finite differences, and a
GPT with and without the switch over whole AdamW steps), and the compiled
training step needs less temporary memory (XLA's own memory analysis, no
timing).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import nn
from fnn.models import gpt, transformer_block

SEQ = (3, 4)  # (T, d)


def _unwrap(model, params):
    """The params of ``model`` with every Recompute entry ``[p]`` replaced by
    ``p``: the params tree of the same model without recompute."""
    if model.spec["block"] == "Recompute":
        return _unwrap(model.children[0], params[0])
    if model.children:
        return [_unwrap(c, p) for c, p in zip(model.children, params, strict=True)]
    return params


def _check(block, in_shape, train=False):
    result = nn.check_block(block, in_shape, train=train, key=jax.random.key(7))
    assert result.passed, result.table()
    for row in result.rows:
        assert row.verdict == "ok", result.table()
        assert row.manual_vs_autodiff <= 1e-10, result.table()
        assert row.manual_vs_numerical <= 1e-7, result.table()
    return result


def test_recompute_in_training_mode_redraws_the_same_dropout_mask():
    """The re-run forward reads the cached key: dropout's mask is the same, so
    the backward is still the forward's vector-Jacobian product."""
    branch = nn.Sequential([nn.Dense(4, "tanh"), nn.Dropout(0.5)])
    _check(nn.Recompute(branch), (4,), train=True)


@pytest.mark.slow
def test_recompute_of_causal_attention_passes_check_block():
    branch = nn.Sequential(
        [nn.LayerNorm(axis=-1), nn.MultiHeadAttention(2, causal=True)]
    )
    _check(nn.Recompute(branch), SEQ)


def test_recompute_initialises_and_computes_like_the_wrapped_block():
    """Same key → the wrapped block's params (one list deeper); forward and
    backward under jit equal the wrapped block's to float64 rounding."""
    branch = nn.Sequential([nn.LayerNorm(axis=-1), nn.Dense(8, "gelu"), nn.Dense(4)])
    wrapped = nn.Recompute(branch)
    with jax.enable_x64(True):
        key = jax.random.key(1)
        p_plain, _ = nn.init(key, branch, SEQ, jnp.float64)
        p_wrap, _ = nn.init(key, wrapped, SEQ, jnp.float64)
        chex.assert_trees_all_equal(p_wrap, [p_plain])
        x = jax.random.normal(jax.random.key(2), (5, *SEQ), jnp.float64)
        dy = jax.random.normal(jax.random.key(3), (5, *SEQ), jnp.float64)

        @jax.jit
        def both(p_plain, p_wrap):
            out = []
            for model, params in ((branch, p_plain), (wrapped, p_wrap)):
                y, _, cache = nn.forward(model, params, x)
                out.append((y, *nn.backward(model, params, cache, dy)))
            return out

        (y_p, g_p, dx_p), (y_w, g_w, dx_w) = both(p_plain, p_wrap)
    chex.assert_trees_all_close(
        (y_w, g_w, dx_w), (y_p, [g_p], dx_p), rtol=1e-13, atol=1e-15
    )


def test_gpt_with_recompute_trains_exactly_like_gpt_without():
    """Three AdamW steps in float64 from the same initialization: the loss at
    every step and the final parameters of gpt(recompute=True) equal those of
    gpt(), manual backprop (jax.vjp of Recompute: the check_block tests)."""
    T, V = 5, 7
    plain, redo = gpt(V, 8, 2, 1, T), gpt(V, 8, 2, 1, T, recompute=True)
    optimizer = fnn.optim.adamw(1e-2, weight_decay=0.1)
    x = jax.random.randint(jax.random.key(3), (4, T), 0, V)
    y = jax.random.randint(jax.random.key(4), (4, T), 0, V)

    def train(model, params):
        kw = dict(loss="sequence_cross_entropy", blocks=model)

        def step(carry, _):
            params, opt_state = carry
            J, g = fnn.backprop(params, x, y, **kw)
            updates, opt_state = optimizer.update(g, opt_state, params)
            return (fnn.optim.apply_updates(params, updates), opt_state), J

        (params, _), losses = jax.lax.scan(
            step, (params, optimizer.init(params)), length=3
        )
        return losses, params

    with jax.enable_x64(True):
        p_plain, _ = nn.init(jax.random.key(0), plain, (T,), jnp.float64)
        p_redo, _ = nn.init(jax.random.key(0), redo, (T,), jnp.float64)
        chex.assert_trees_all_equal(_unwrap(redo, p_redo), p_plain)
        runs = jax.jit(lambda p, q: (train(plain, p), train(redo, q)))
        (l_plain, q_plain), (l_redo, q_redo) = runs(p_plain, p_redo)
    assert l_redo.dtype == jnp.float64
    chex.assert_trees_all_close(l_redo, l_plain, rtol=1e-13, atol=0)
    chex.assert_trees_all_close(_unwrap(redo, q_redo), q_plain, rtol=1e-12, atol=1e-14)
    assert l_plain[-1] < l_plain[0]


def _temp_bytes(model, in_shape, m=8):
    """Compiled temporary memory of the jitted forward + manual backward."""
    params, _ = nn.init(jax.random.key(0), model, in_shape)
    x = jnp.zeros((m, *in_shape))

    def grads(params, x):
        y, _, cache = nn.forward(model, params, x)
        return nn.backward(model, params, cache, y)  # J = ‖y‖²/2

    compiled = jax.jit(grads).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_recompute_lowers_the_compiled_temporary_memory():
    """XLA's memory analysis of the jitted manual backward of two transformer
    blocks: recomputing the attention and MLP branches needs at most 3/4 of the
    memory of storing them (the measured ratio on a GPT step is far lower; see
    benchmarks/sequence.py). Fails when XLA merges the re-run forward with the
    first one."""
    d, T = 8, 16
    plain = nn.Sequential([transformer_block(d, 2) for _ in range(2)])
    redo = nn.Sequential(
        [transformer_block(d, 2, recompute=True) for _ in range(2)]
    )
    plain_bytes, redo_bytes = _temp_bytes(plain, (T, d)), _temp_bytes(redo, (T, d))
    assert 0 < redo_bytes <= 0.75 * plain_bytes, (redo_bytes, plain_bytes)


def test_gpt_with_recompute_saves_and_loads(tmp_path):
    """The Recompute blocks are in the spec: save_model/load_model rebuild the
    model, whose forward equals the original's."""
    T = 4
    model = gpt(9, 8, 2, 1, T, recompute="attention")
    spec = nn.to_spec(model)
    assert "Recompute" in str(spec) and nn.is_builtin(model)
    assert nn.to_spec(nn.from_spec(spec)) == spec
    params, state = nn.init(jax.random.key(0), model, (T,))
    path = fnn.checkpoint.save_model(
        tmp_path / "gpt.fnn", model, params, state, in_shape=(T,)
    )
    loaded, params2, _ = fnn.checkpoint.load_model(path)
    x = jnp.array([[1, 2, 3, 4], [0, 8, 8, 1]])
    run = jax.jit(lambda m, p: nn.forward(m, p, x)[0], static_argnums=0)
    np.testing.assert_array_equal(run(loaded, params2), run(model, params))


@pytest.mark.parametrize(
    ("recompute", "wrapped"),
    [(False, []), (True, [0, 1]), ("attention", [0]), ("mlp", [1])],
)
def test_transformer_block_wraps_the_chosen_branches(recompute, wrapped):
    block = transformer_block(8, 2, recompute=recompute)
    found = [
        i
        for i, residual in enumerate(block.children)
        if residual.children[0].spec["block"] == "Recompute"
    ]
    assert found == wrapped


def test_bad_recompute_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="Recompute expects an fnn.nn block"):
        nn.Recompute("attention")
    with pytest.raises(ValueError, match="recompute must be False, True"):
        gpt(9, 8, 2, 1, 4, recompute="yes")
    with pytest.raises(ValueError, match="recompute must be False, True"):
        transformer_block(8, 2, recompute=1)
    params, _ = nn.init(jax.random.key(0), nn.Recompute(nn.Dense(3)), (4,))
    with pytest.raises(ValueError, match="one entry per block"):
        nn.forward(nn.Recompute(nn.Dense(3)), params[0], jnp.ones((2, 4)))
