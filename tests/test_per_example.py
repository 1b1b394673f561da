"""fnn.per_example_grads: g_i = ∂/∂θ [ℓ_i + Ω] from one batch backward, checked
against jax.vmap(jax.grad(...)) of the single-example loss in float64, and
mean_i g_i = the batch gradient."""

import chex
import jax
import jax.numpy as jnp
import pytest

import fnn
from fnn import nn

TOL = dict(rtol=1e-10, atol=1e-10)


def _vmap_grad(params, x, y, **kw):
    """The reference: autodiff of each example's own loss, one at a time."""

    def one(xi, yi):
        return jax.grad(lambda p: fnn.loss(p, xi[None], yi[None], **kw))(params)

    return jax.jit(jax.vmap(one))(x, y)


def _mean(tree):
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), tree)


@pytest.mark.parametrize(
    "loss, output, k",
    [("cross_entropy", None, 3), ("mse", "identity", 2), ("bce", None, 1)],
)
def test_mlp_equals_vmap_grad_and_its_mean_is_backprop(getkey, loss, output, k):
    with jax.enable_x64(True):
        params = fnn.init_params(getkey(), [5, 7, 6, k], dtype=jnp.float64)
        x = jax.random.normal(getkey(), (9, 5), jnp.float64)
        if loss == "cross_entropy":
            y = jax.random.randint(getkey(), (9,), 0, k)
        elif loss == "bce":
            y = jax.random.bernoulli(getkey(), 0.5, (9, 1)).astype(jnp.float64)
        else:
            y = jax.random.normal(getkey(), (9, k), jnp.float64)
        kw = dict(loss=loss, output=output, activation="tanh", l2=1e-2)
        g = jax.jit(lambda p: fnn.per_example_grads(p, x, y, **kw))(params)
        chex.assert_trees_all_close(g, _vmap_grad(params, x, y, **kw), **TOL)
        _, batch = jax.jit(lambda p: fnn.backprop(p, x, y, **kw))(params)
        chex.assert_trees_all_close(_mean(g), batch, **TOL)
        assert jax.tree.map(jnp.shape, g) == jax.tree.map(
            lambda p: (9, *p.shape), params
        )


def test_mlp_with_dropout_uses_the_batch_masks(getkey):
    """Per-example gradients of a dropout step: their mean is backprop's gradient
    with the same key, and each equals the gradient of the masked example."""
    with jax.enable_x64(True):
        params = fnn.init_params(getkey(), [4, 8, 3], dtype=jnp.float64)
        x = jax.random.normal(getkey(), (6, 4), jnp.float64)
        y = jnp.array([0, 1, 2, 0, 1, 2])
        kw = dict(drop_rate=0.5, key=getkey(), train=True)
        g = jax.jit(lambda p: fnn.per_example_grads(p, x, y, **kw))(params)
        _, batch = jax.jit(lambda p: fnn.backprop(p, x, y, **kw))(params)
        chex.assert_trees_all_close(_mean(g), batch, **TOL)
        # The same model as blocks ([Dense, Dropout, Dense]), the same masks: the
        # generic path gives the MLP form's numbers.
        model = fnn.mlp([4, 8, 3], drop_rate=0.5)
        block_params = [params[0], {}, params[1]]
        g_blocks = jax.jit(
            lambda p: fnn.per_example_grads(
                p, x, y, blocks=model, key=kw["key"], train=True
            )
        )(block_params)
        chex.assert_trees_all_close([g_blocks[0], g_blocks[2]], g, **TOL)


def test_mask_zeroes_padded_rows(getkey):
    with jax.enable_x64(True):
        params = fnn.init_params(getkey(), [4, 5, 3], dtype=jnp.float64)
        x = jax.random.normal(getkey(), (6, 4), jnp.float64)
        y = jnp.array([0, 1, 2, 0, 1, 2])
        mask = jnp.array([True, True, False, True, False, True])
        g = fnn.per_example_grads(params, x, y, mask=mask)
        for leaf in jax.tree.leaves(g):
            assert jnp.all(leaf[~mask] == 0)
        _, batch = fnn.backprop(params, x, y, mask=mask)
        weighted = jax.tree.map(lambda a: jnp.sum(a, axis=0) / 4, g)
        chex.assert_trees_all_close(weighted, batch, **TOL)
        with pytest.raises(ValueError, match="mask must have shape"):
            fnn.per_example_grads(params, x, y, mask=mask[:5])


def _blocks_vmap_grad(model, params, x, y, loss, state=None):
    def one(xi, yi):
        return jax.grad(
            lambda p: fnn.loss(p, xi[None], yi[None], loss=loss, blocks=model,
                               state=state)  # fmt: skip
        )(params)

    return jax.jit(jax.vmap(one))(x, y)


MODELS = {
    "cnn": (
        lambda: nn.Sequential([
            nn.Conv2D(3, 3, padding="SAME"), nn.Activation("relu"),
            nn.MaxPool2D(2), nn.Flatten(), nn.Dense(4),
        ]),  # fmt: skip
        (6, 6, 2),
        "cross_entropy",
    ),
    "residual_layernorm": (
        lambda: [
            nn.Dense(6, "tanh"),
            nn.Residual(nn.Sequential([nn.LayerNorm(), nn.Dense(6, "gelu")])),
            nn.Dense(3),
        ],
        (5,),
        "cross_entropy",
    ),
    "lstm": (
        lambda: [nn.LSTM(5, return_sequences=False), nn.Dense(3)],
        (4, 3),
        "cross_entropy",
    ),
    "gru_sequence": (
        lambda: [nn.GRU(4), nn.Dense(2)],
        (5, 3),
        "mse",
    ),
    "attention": (
        lambda: [
            nn.Dense(8),
            nn.MultiHeadAttention(2, causal=True),
            nn.Flatten(),
            nn.Dense(3),
        ],
        (4, 3),
        "cross_entropy",
    ),
    "recompute": (
        lambda: [nn.Recompute(nn.Sequential([nn.Dense(6, "tanh"), nn.Dense(6)])),
                 nn.Dense(3)],  # fmt: skip
        (5,),
        "cross_entropy",
    ),
    "batchnorm_eval": (
        lambda: [nn.Dense(6), nn.BatchNorm(), nn.Activation("relu"), nn.Dense(3)],
        (5,),
        "cross_entropy",
    ),
}


#: Compiled three times in float64 (by hand, vmap(grad), backprop): 10-30 s each.
SLOW_MODELS = {"gru_sequence", "attention"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n
        for n in sorted(MODELS)
    ],
)
def test_block_models_equal_vmap_grad(getkey, name):
    make, in_shape, loss = MODELS[name]
    model = make()
    m = 5
    with jax.enable_x64(True):
        params, state = nn.init(getkey(), model, in_shape, jnp.float64)
        x = jax.random.normal(getkey(), (m, *in_shape), jnp.float64)
        out_shape = nn.out_shape(model, in_shape)
        if loss == "cross_entropy":
            y = jax.random.randint(getkey(), (m,), 0, out_shape[-1])
        else:
            y = jax.random.normal(getkey(), (m, *out_shape), jnp.float64)
        if loss == "mse" and len(out_shape) > 1:
            # mse reads (m, k) rows: a sequence output is flattened by a block.
            model = [*model, nn.Flatten()] if isinstance(model, list) else model
            params, state = nn.init(getkey(), model, in_shape, jnp.float64)
            y = y.reshape(m, -1)
        g = jax.jit(
            lambda p: fnn.per_example_grads(
                p, x, y, loss=loss, blocks=model, state=state
            )
        )(params)
        expected = _blocks_vmap_grad(model, params, x, y, loss, state)
        chex.assert_trees_all_close(g, expected, **TOL)
        _, batch = jax.jit(
            lambda p: fnn.backprop(p, x, y, loss=loss, blocks=model, state=state)
        )(params)
        chex.assert_trees_all_close(_mean(g), batch, **TOL)


def test_batchnorm_in_training_mode_raises_naming_the_layer(getkey):
    model = [nn.Dense(6), nn.Residual(nn.Sequential([nn.BatchNorm()])), nn.Dense(3)]
    params, state = nn.init(getkey(), model, (5,))
    x = jax.random.normal(getkey(), (4, 5))
    y = jnp.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"layer 1\[0\]\[0\] \(BatchNorm"):
        fnn.per_example_grads(params, x, y, blocks=model, state=state, train=True)
    # Evaluation mode (running statistics) is per example.
    fnn.per_example_grads(params, x, y, blocks=model, state=state)


def test_mlp_form_matches_the_generic_block_path(getkey):
    """The einsum rule (A_prev[i]ᵀ dZ[i]) and the mapped Dense backward agree."""
    with jax.enable_x64(True):
        params = fnn.init_params(getkey(), [6, 8, 8, 4], dtype=jnp.float64)
        x = jax.random.normal(getkey(), (7, 6), jnp.float64)
        y = jax.random.randint(getkey(), (7,), 0, 4)
        by_hand = fnn.per_example_grads(params, x, y, activation="relu")
        generic = fnn.per_example_grads(
            params, x, y, blocks=fnn.mlp([6, 8, 8, 4], activation="relu")
        )
        chex.assert_trees_all_close(by_hand, generic, **TOL)


def test_no_vmap_of_the_forward_in_the_mlp_form(getkey):
    """The MLP form's program has one forward matmul per layer on the whole
    batch: no (m, 1, n) batched copies of the forward."""
    params = fnn.init_params(getkey(), [6, 8, 4])
    x = jax.random.normal(getkey(), (7, 6))
    y = jax.random.randint(getkey(), (7,), 0, 4)
    jaxpr = jax.make_jaxpr(lambda p: fnn.per_example_grads(p, x, y))(params)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    shapes = sorted(tuple(e.outvars[0].aval.shape) for e in dots)
    # forward: (7, 8), (7, 4); backward: dA_prev (7, 8); dW_i: (7, 6, 8), (7, 8, 4)
    assert shapes == sorted([(7, 8), (7, 4), (7, 8), (7, 6, 8), (7, 8, 4)])


def test_benchmark_quick_mode(tmp_path):
    """benchmarks/per_example.py --quick writes its table; the per-example
    results agree with vmap(grad) to float32 rounding."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "per_example.py"
    spec = importlib.util.spec_from_file_location("per_example_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "per_example.md").read_text()
    assert text.startswith("# Per-example gradients")
    assert set(result["rows"]) == {
        "per_example_grads",
        "per_example_grads(blocks=)",
        "vmap(grad)",
        "backprop (batch)",
    }
    for name in ("per_example_grads", "per_example_grads(blocks=)"):
        assert result["rows"][name]["max_abs_diff_vs_vmap_grad"] < 1e-5
        assert result["rows"][name]["median_ms"] > 0


def test_recompute_of_a_random_block_in_training_raises(getkey):
    model = [nn.Recompute(nn.Sequential([nn.Dense(6), nn.Dropout(0.5)])), nn.Dense(3)]
    params, state = nn.init(getkey(), model, (5,))
    x = jax.random.normal(getkey(), (4, 5))
    y = jnp.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="PRNG key"):
        fnn.per_example_grads(
            params, x, y, blocks=model, state=state, key=getkey(), train=True
        )
