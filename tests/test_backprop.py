"""Manual backpropagation against jax.grad (float64) and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fnn
from fnn import activations, nn

HIDDEN = [
    "identity",
    "sigmoid",
    "tanh",
    "lecun_tanh",
    "soboleva_tanh",
    "step",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "softplus",
    "gaussian",
    activations.gelu(approximate=True),
]
# (loss, output activation): fused losses read logits, the others the output.
LOSSES = [
    ("cross_entropy", None),
    ("bce", None),
    ("mse", "identity"),
    ("mae", "sigmoid"),
    ("huber", "softmax"),
]
ARCHS = [[5, 3], [5, 7, 3], [5, 6, 4, 3]]  # depth 1, 2, 3


def _data(key, m, n_in, n_out, loss, dtype):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (m, n_in), dtype)
    if loss == "cross_entropy":
        y = jax.random.randint(ky, (m,), 0, n_out)
    elif loss == "bce":
        y = jax.random.bernoulli(ky, 0.5, (m, n_out)).astype(dtype)
    else:
        y = jax.random.normal(ky, (m, n_out), dtype)
    return x, y


def _rel_err(a, b):
    a, b = jax.flatten_util.ravel_pytree(a)[0], jax.flatten_util.ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-300))


def _manual_and_auto(params, x, y, **kw):
    manual = jax.jit(functools.partial(fnn.backprop, **kw))(params, x, y)
    auto = jax.jit(jax.value_and_grad(functools.partial(fnn.loss, **kw)))(params, x, y)
    return manual, auto


@pytest.mark.parametrize("loss,output", LOSSES, ids=[name for name, _ in LOSSES])
@pytest.mark.parametrize("activation", HIDDEN, ids=lambda a: getattr(a, "name", a))
def test_manual_equals_autodiff_float64(activation, loss, output):
    """For every activation × loss: backprop == jax.grad(fnn.loss) to 1e-10."""
    i = HIDDEN.index(activation) + [name for name, _ in LOSSES].index(loss)
    sizes = ARCHS[i % 3]
    l1, l2 = (0.01, 0.02) if i % 2 else (0.0, 0.0)
    with jax.enable_x64(True):
        key = jax.random.key(i)
        params = fnn.init_params(key, sizes, "glorot_normal", dtype=jnp.float64)
        x, y = _data(
            jax.random.fold_in(key, 1), 8, sizes[0], sizes[-1], loss, jnp.float64
        )
        kw = dict(activation=activation, loss=loss, output=output, l1=l1, l2=l2)
        (J, grads), (J_auto, grads_auto) = _manual_and_auto(params, x, y, **kw)
        jax.tree.map(lambda a, b: None, grads, params)  # same structure or raises
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        assert float(J) == pytest.approx(float(J_auto), rel=1e-12)
        assert _rel_err(grads, grads_auto) <= 1e-10


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_manual_equals_autodiff_float32(activation):
    """float32: the same to a dtype-appropriate tolerance."""
    params = fnn.init_params(jax.random.key(3), [10, 32, 32, 4])
    x, y = _data(jax.random.key(4), 64, 10, 4, "cross_entropy", jnp.float32)
    (J, g), (J_auto, g_auto) = _manual_and_auto(params, x, y, activation=activation)
    assert float(J) == pytest.approx(float(J_auto), rel=1e-6)
    assert _rel_err(g, g_auto) < 1e-5
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))


@settings(max_examples=examples(12))
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    m=st.integers(1, 5),
    activation=st.sampled_from(["relu", "tanh", "sigmoid", "elu", "silu"]),
    loss=st.sampled_from(["cross_entropy", "bce", "mse"]),
    seed=st.integers(0, 2**16),
)
# A dead ReLU leaves the output logit at exactly 0, where bce's ∂ℓ/∂z = σ(0) − y.
@example(sizes=[1, 1, 1, 1], m=1, activation="relu", loss="bce", seed=0)
def test_random_architectures(sizes, m, activation, loss, seed):
    """Property: any architecture, batch size, activation and loss."""
    if loss == "cross_entropy" and sizes[-1] < 2:
        sizes = [*sizes[:-1], 2]
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        params = fnn.init_params(key, sizes, "lecun_normal", dtype=jnp.float64)
        x, y = _data(
            jax.random.fold_in(key, 1), m, sizes[0], sizes[-1], loss, jnp.float64
        )
        _, grads = fnn.backprop(params, x, y, activation=activation, loss=loss)
        auto = jax.grad(fnn.loss)(params, x, y, activation=activation, loss=loss)
        assert _rel_err(grads, auto) <= 1e-10 or _rel_err(auto, grads) == 0.0


# --- every block's backward against jax.vjp of its forward ------------------------
BLOCKS = [
    ("dense_identity", nn.Dense(4), (5,)),
    ("dense_tanh", nn.Dense(4, "tanh"), (5,)),
    ("dense_softmax", nn.Dense(4, "softmax"), (5,)),
    ("activation_elu", nn.Activation("elu"), (5,)),
    ("dropout", nn.Dropout(0.3), (5,)),
]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    ("name", "block", "in_shape"), BLOCKS, ids=[b[0] for b in BLOCKS]
)
def test_block_backward_equals_vjp(name, block, in_shape, train):
    """dparams, dx = block.backward(...) equals jax.vjp of block.forward."""
    with jax.enable_x64(True):
        key = jax.random.key(7)
        params, state, out_shape = block.init(key, in_shape, jnp.float64)
        x = jax.random.normal(jax.random.fold_in(key, 1), (6, *in_shape), jnp.float64)
        dy = jax.random.normal(jax.random.fold_in(key, 2), (6, *out_shape), jnp.float64)
        fwd_key = jax.random.fold_in(key, 3)
        y, _, cache = block.forward(params, state, x, fwd_key, train)
        dparams, dx = block.backward(params, cache, dy)
        _, pullback = jax.vjp(
            lambda p, a: block.forward(p, state, a, fwd_key, train)[0], params, x
        )
        dparams_auto, dx_auto = pullback(dy)
        assert y.shape == (6, *out_shape)
        np.testing.assert_allclose(dx, dx_auto, rtol=1e-10, atol=1e-14)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14),
            dparams,
            dparams_auto,
        )


def test_loss_blocks_grad_equals_vjp():
    """The loss block's backward, ∂J/∂out, is the vjp of its forward at 1."""
    with jax.enable_x64(True):
        for name in fnn.losses.names():
            loss = fnn.losses.get(name)
            labels = jnp.asarray([0, 2, 1, 1])
            out = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
            if name == "sequence_cross_entropy":  # logits (m, T, V), ids (m, T)
                out, labels = out.reshape(2, 2, 3), labels.reshape(2, 2)
            Y = fnn.losses.targets(
                loss,
                out,
                labels if loss.fused_output == "softmax" else jnp.abs(out) / 3,
            )
            _, pullback = jax.vjp(lambda o, loss=loss, Y=Y: loss.fn(o, Y), out)
            np.testing.assert_allclose(loss.grad(out, Y), pullback(1.0)[0], rtol=1e-12)


# --- gradient checking (seed 000) -------------------------------------------------
def _problem(seed=0, sizes=(4, 6, 3)):
    params = fnn.init_params(jax.random.key(seed), list(sizes), "glorot_normal")
    x, y = _data(
        jax.random.key(seed + 1), 10, sizes[0], sizes[-1], "cross_entropy", jnp.float32
    )
    return params, x, y


def test_grad_check_passes_for_real_backprop():
    params, x, y = _problem()
    for activation in ("tanh", "sigmoid", "gelu"):
        assert fnn.grad_check(params, x, y, activation=activation, l2=0.01) < 1e-7
    assert jnp.asarray(params[0]["W"]).dtype == jnp.float32  # inputs untouched


def test_grad_check_flags_a_wrong_backward():
    """A planted bug (ψ' off by 10%) gives ≈1e-2, far above seed 000's 1e-3 alarm."""
    good = activations.tanh()
    bad = activations.Activation(
        "buggy_tanh",
        good.fn,
        lambda z: 1.1 * good.grad(z),
        lambda z, g: 1.1 * good.vjp(z, g),
    )
    params, x, y = _problem()
    assert fnn.grad_check(params, x, y, activation=bad) > 1e-3
    report = fnn.grad_check_report(params, x, y, activation=bad)
    # The output layer's gradient does not go through ψ'; the first layer's does.
    assert report["[1]['b']"] < 1e-7 and report["[0]['W']"] > 1e-3


def test_compare_gradients_three_ways():
    params, x, y = _problem(seed=3)
    result = fnn.compare_gradients(params, x, y, activation="silu", l1=1e-3)
    assert result.manual_vs_autodiff < 1e-12
    assert result.manual_vs_numerical < 1e-7 and result.autodiff_vs_numerical < 1e-7
    assert set(result.per_leaf) == {"[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"}
    assert "manual~autodiff" in result.table()


# --- jit and vmap -----------------------------------------------------------------
def test_vmap_per_example_gradients():
    """vmap over single examples gives per-example gradients, whose mean is the
    batch gradient."""
    params, x, y = _problem(seed=5)
    per_example = jax.jit(jax.vmap(fnn.backprop, in_axes=(None, 0, 0)))(params, x, y)
    _, batch = fnn.backprop(params, x, y)
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_example[1])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), mean, batch
    )
    auto = jax.vmap(jax.grad(fnn.loss), in_axes=(None, 0, 0))(params, x, y)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        per_example[1],
        auto,
    )


def test_vmap_over_an_ensemble_of_parameters():
    keys = jax.random.split(jax.random.key(9), 3)
    ensemble = jax.vmap(lambda k: fnn.init_params(k, [4, 5, 3]))(keys)
    _, x, y = _problem()
    J, grads = jax.vmap(fnn.backprop, in_axes=(0, None, None))(ensemble, x, y)
    assert J.shape == (3,) and grads[0]["W"].shape == (3, 4, 5)
    single = fnn.backprop(jax.tree.map(lambda p: p[1], ensemble), x, y)[1]
    np.testing.assert_allclose(grads[1]["W"][1], single[1]["W"], rtol=1e-5)


def test_single_example_apply():
    params, x, _ = _problem()
    np.testing.assert_allclose(
        fnn.apply(params, x[2]), fnn.apply(params, x)[2], rtol=1e-6
    )


# --- bad input --------------------------------------------------------------------
def test_feature_mismatch_names_layer_and_shapes():
    params = fnn.init_params(jax.random.key(0), [4, 6, 3])
    with pytest.raises(
        ValueError, match=r"layer 0 \(Dense.*\(m, 4\).*\(4, 6\).*\(2, 5\)"
    ):
        fnn.apply(params, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="layer 0"):
        jax.jit(fnn.backprop)(params, jnp.ones((2, 5)), jnp.asarray([0, 1]))


def test_malformed_params_raise():
    params = fnn.init_params(jax.random.key(0), [4, 6, 3])
    with pytest.raises(ValueError, match=r"params\[1\] must be a dict with keys"):
        fnn.apply([params[0], {"W": params[1]["W"]}], jnp.ones((2, 4)))
    with pytest.raises(
        ValueError, match=r"params\[1\]\['W'\] has 3 inputs but layer 0"
    ):
        fnn.apply(
            [params[0], {"W": jnp.ones((3, 2)), "b": jnp.ones(2)}], jnp.ones((2, 4))
        )


def test_dropout_training_needs_a_key():
    params = fnn.init_params(jax.random.key(0), [4, 6, 3])
    x, y = jnp.ones((2, 4)), jnp.asarray([0, 1])
    with pytest.raises(
        ValueError, match=r"layer 1 \(Dropout\(0.5\)\).*needs a PRNG key"
    ):
        fnn.loss(params, x, y, drop_rate=0.5, train=True)
    # Evaluation mode ignores dropout and needs no key.
    np.testing.assert_allclose(
        fnn.apply(params, x, drop_rate=0.5), fnn.apply(params, x)
    )


def test_manual_backprop_with_dropout_equals_autodiff():
    """Dropout is a block like any other: same key, same masks, same gradient."""
    with jax.enable_x64(True):
        params = fnn.init_params(jax.random.key(1), [6, 8, 8, 3], dtype=jnp.float64)
        x, y = _data(jax.random.key(2), 16, 6, 3, "cross_entropy", jnp.float64)
        # tanh, not relu: with zero biases, a row whose inputs are all dropped has
        # Z = 0 exactly, on relu's kink, where central differences read 1/2.
        kw = dict(
            drop_rate=fnn.dropout_rates(3),
            key=jax.random.key(3),
            train=True,
            activation="tanh",
        )
        (J, g), (J_auto, g_auto) = _manual_and_auto(params, x, y, **kw)
        assert float(J) == pytest.approx(float(J_auto), rel=1e-12)
        assert _rel_err(g, g_auto) <= 1e-10
        assert fnn.grad_check(params, x, y, **kw) < 1e-7
