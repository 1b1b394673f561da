"""PReLU, maxout, batch and layer normalization: manual backward against jax.vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fnn import nn


def _rel_err(a, b):
    a = jax.flatten_util.ravel_pytree(a)[0]
    b = jax.flatten_util.ravel_pytree(b)[0]
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check_vjp(block, in_shape, m=6, seed=0, train=True, perturb=True):
    """Manual (dparams, dx) vs jax.vjp of the forward, float64; returns both errors.

    ``perturb`` moves the parameters off their initial values (γ = 1, β = 0, ...),
    so that every term of the backward matters.
    """
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        params, state, out_shape = block.init(key, in_shape, jnp.float64)
        if perturb:
            leaves, tdef = jax.tree.flatten(params)
            leaves = [
                p
                + 0.3
                * jax.random.normal(jax.random.fold_in(key, 10 + i), p.shape, p.dtype)
                for i, p in enumerate(leaves)
            ]
            params = jax.tree.unflatten(tdef, leaves)
        x = jax.random.normal(jax.random.fold_in(key, 1), (m, *in_shape), jnp.float64)
        dy = jax.random.normal(jax.random.fold_in(key, 2), (m, *out_shape), jnp.float64)
        fwd_key = jax.random.fold_in(key, 3)
        y, _, cache = block.forward(params, state, x, fwd_key, train)
        assert y.shape == (m, *out_shape)
        dparams, dx = block.backward(params, cache, dy)
        _, pullback = jax.vjp(
            lambda p, a: block.forward(p, state, a, fwd_key, train)[0], params, x
        )
        dparams_auto, dx_auto = pullback(dy)
        assert jax.tree.structure(dparams) == jax.tree.structure(params)
        for g, p in zip(jax.tree.leaves(dparams), jax.tree.leaves(params), strict=True):
            assert g.shape == p.shape and g.dtype == p.dtype
        return _rel_err(dx, dx_auto), _rel_err(dparams, dparams_auto)


CASES = [
    ("prelu", nn.PReLU(), (5,)),
    ("prelu_shared", nn.PReLU(shared=True), (5,)),
    ("prelu_image", nn.PReLU(), (3, 4, 2)),
    ("maxout_k1", nn.Maxout(3, 1), (5,)),
    ("maxout_k3", nn.Maxout(4, 3), (5,)),
    ("batchnorm", nn.BatchNorm(), (5,)),
    ("batchnorm_image", nn.BatchNorm(momentum=0.8), (3, 4, 2)),
    ("layernorm", nn.LayerNorm(), (5,)),
    ("layernorm_image", nn.LayerNorm(), (3, 4, 2)),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("name", "block", "in_shape"), CASES, ids=[c[0] for c in CASES]
)
def test_backward_equals_vjp(name, block, in_shape, train):
    """dparams, dx = block.backward(...) equals jax.vjp of block.forward."""
    err_x, err_p = check_vjp(block, in_shape, train=train)
    assert err_x <= 1e-10 and err_p <= 1e-10


@settings(max_examples=examples(15))
@given(
    kind=st.sampled_from(["prelu", "prelu_shared", "maxout", "batchnorm", "layernorm"]),
    in_shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    m=st.integers(2, 5),
    k=st.integers(1, 3),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_backward_equals_vjp_random_shapes(kind, in_shape, m, k, train, seed):
    """Property: any batch size and per-example shape (flat for maxout)."""
    block = {
        "prelu": nn.PReLU(),
        "prelu_shared": nn.PReLU(shared=True),
        "maxout": nn.Maxout(in_shape[0], k),
        "batchnorm": nn.BatchNorm(),
        "layernorm": nn.LayerNorm(),
    }[kind]
    if kind == "maxout":
        in_shape = in_shape[-1:]
    if kind == "layernorm" and np.prod(in_shape) == 1:
        in_shape = (*in_shape[:-1], 2)  # one feature: x̂ ≡ 0, the map is constant
    err_x, err_p = check_vjp(block, in_shape, m=m, seed=seed, train=train)
    assert err_x <= 1e-10 and err_p <= 1e-10


# --- batch normalization: modes, running statistics, vanishing gradients ---------
def test_batchnorm_train_uses_batch_stats_eval_uses_running(getkey):
    """Training: per-feature mean 0, biased variance 1 (up to ε); the running
    averages follow running = momentum·running + (1 − momentum)·batch; evaluation
    normalises with the running averages, not with the batch."""
    block = nn.BatchNorm(momentum=0.8, eps=1e-5)
    with jax.enable_x64(True):
        params, state, _ = block.init(getkey(), (3,), jnp.float64)
        x = 2.0 + 3.0 * jax.random.normal(getkey(), (50, 3), jnp.float64)
        y, new_state, _ = block.forward(params, state, x, None, True)
        xn = np.asarray(x)
        mu, var = xn.mean(0), xn.var(0)  # numpy's var is the biased one (ddof=0)
        np.testing.assert_allclose(y, (xn - mu) / np.sqrt(var + 1e-5), rtol=1e-12)
        np.testing.assert_allclose(new_state["mean"], 0.8 * 0 + 0.2 * mu, rtol=1e-12)
        np.testing.assert_allclose(new_state["var"], 0.8 * 1 + 0.2 * var, rtol=1e-12)
        y_eval, same_state, _ = block.forward(params, new_state, x, None, False)
        assert same_state is new_state
        ref = (xn - np.asarray(new_state["mean"])) / np.sqrt(
            np.asarray(new_state["var"]) + 1e-5
        )
        np.testing.assert_allclose(y_eval, ref, rtol=1e-12)
        assert not np.allclose(y_eval, y)
        # many steps on the same batch: the running averages converge to its stats
        s = state
        for _ in range(80):
            s = block.forward(params, s, x, None, True)[1]
        np.testing.assert_allclose(s["mean"], mu, rtol=1e-6)
        np.testing.assert_allclose(s["var"], var, rtol=1e-6)


def test_batchnorm_refuses_a_training_batch_of_one_row(getkey):
    """One row has σ²_B = 0: y = β and nothing trains, so training mode refuses it
    (also under jit, from the static shape); evaluation accepts one row, and an
    image of one example still has H·W values per channel."""
    block = nn.BatchNorm()
    params, state, _ = block.init(getkey(), (3,), jnp.float32)
    x = jnp.asarray([[1.0, -2.0, 0.5]])
    with pytest.raises(nn.ShapeError, match=r"at least 2 .*\(1, 3\)"):
        block.forward(params, state, x, None, True)
    with pytest.raises(nn.ShapeError, match="at least 2"):
        jax.jit(lambda x: block.forward(params, state, x, None, True))(x)
    y, _, _ = block.forward(params, state, x, None, False)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)
    params, state, _ = block.init(getkey(), (2, 2, 3), jnp.float32)
    image = jax.random.normal(getkey(), (1, 2, 2, 3))
    y, _, _ = block.forward(params, state, image, None, True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_batchnorm_images_normalise_per_channel(getkey):
    """On (m, H, W, C) the statistics run over m·H·W for each channel."""
    block = nn.BatchNorm()
    with jax.enable_x64(True):
        params, state, _ = block.init(getkey(), (4, 5, 2), jnp.float64)
        x = jax.random.normal(getkey(), (3, 4, 5, 2), jnp.float64) * jnp.asarray(
            [1.0, 5.0]
        )
        y, new_state, _ = block.forward(params, state, x, None, True)
        np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-12)
        np.testing.assert_allclose(jnp.var(y, axis=(0, 1, 2)), 1.0, rtol=1e-3)
        np.testing.assert_allclose(
            new_state["mean"], 0.1 * jnp.mean(x, axis=(0, 1, 2)), rtol=1e-12
        )


def test_batchnorm_keeps_gradients_of_a_deep_sigmoid_network():
    """10 sigmoid layers: without batch norm the first layer's gradient is orders
    of magnitude smaller than the last's (seed 002, "Vanishing gradients"); with
    Dense → BatchNorm → sigmoid the ratio stays within two orders of magnitude.

    Per-layer gradient norms ‖∂J/∂W_l‖ come from fnn.nn.loss_and_grad (manual
    backprop, training mode)."""
    depth, width = 10, 32
    plain = [nn.Dense(width, "sigmoid", W_init="glorot_normal") for _ in range(depth)]
    normed = []
    for _ in range(depth):
        normed += [
            nn.Dense(width, W_init="glorot_normal"),
            nn.BatchNorm(),
            nn.Activation("sigmoid"),
        ]
    ratios = {}
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (64, 16), jnp.float64)
        y = jax.random.randint(jax.random.key(1), (64,), 0, 10)
        for name, body in (("plain", plain), ("batchnorm", normed)):
            blocks = [*body, nn.Dense(10)]
            params, state = nn.init(jax.random.key(2), blocks, (16,), jnp.float64)
            _, grads = nn.loss_and_grad(
                blocks, params, x, y, "cross_entropy", state=state, train=True
            )
            norms = [float(jnp.linalg.norm(g["W"])) for g in grads if "W" in g]
            ratios[name] = norms[0] / norms[depth - 1]
    assert ratios["plain"] < 1e-3
    assert ratios["batchnorm"] > 1e-2
    assert ratios["batchnorm"] > 100 * ratios["plain"]


def test_maxout_tie_goes_to_first_piece():
    """Seed 003's derivative with ties resolved to the first index."""
    block = nn.Maxout(1, 3)
    params = {"W": jnp.zeros((2, 3)), "b": jnp.asarray([1.0, 1.0, 0.0])}
    x = jnp.ones((1, 2))
    y, _, cache = block.forward(params, {}, x, None, False)
    grads, _ = block.backward(params, cache, jnp.ones((1, 1)))
    np.testing.assert_array_equal(grads["b"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y, [[1.0]])
    auto = jax.grad(lambda p: block.forward(p, {}, x, None, False)[0].sum())(params)
    np.testing.assert_array_equal(auto["b"], grads["b"])


def test_prelu_at_zero_matches_autodiff():
    """ψ'(0) = α (left branch) by hand and by jax.vjp; dα reads min(0, 0) = 0."""
    block = nn.PReLU()
    params = {"alpha": jnp.asarray([0.25, 0.5])}
    z = jnp.zeros((3, 2))
    dy = jnp.ones((3, 2))
    _, _, cache = block.forward(params, {}, z, None, False)
    grads, dz = block.backward(params, cache, dy)
    _, pullback = jax.vjp(
        lambda p, z: block.forward(p, {}, z, None, False)[0], params, z
    )
    auto_p, auto_z = pullback(dy)
    np.testing.assert_array_equal(dz, jnp.broadcast_to(params["alpha"], (3, 2)))
    np.testing.assert_array_equal(auto_z, dz)
    np.testing.assert_array_equal(auto_p["alpha"], grads["alpha"])


def test_prelu_init_and_forward():
    """α starts at 0.25 (He et al.); ψ(z) = z for z > 0, αz otherwise."""
    params, _, _ = nn.PReLU().init(jax.random.key(0), (3,), jnp.float32)
    np.testing.assert_array_equal(params["alpha"], [0.25] * 3)
    z = jnp.asarray([[-2.0, 0.0, 3.0]])
    y = nn.PReLU().forward(params, {}, z, None, False)[0]
    np.testing.assert_allclose(y, [[-0.5, 0.0, 3.0]])


def test_prelu_backward_propagates_nan_and_keeps_inf_finite_slopes():
    block = nn.PReLU()
    params, _, _ = block.init(jax.random.key(0), (3,), jnp.float32)
    with jax.debug_nans(False):
        z = jnp.asarray(np.array([[np.nan, np.inf, -1.0]], np.float32))
        _, _, cache = block.forward(params, {}, z, None, False)
        _, dz = block.backward(params, cache, jnp.ones_like(z))
        dz = np.asarray(dz)
    assert np.isnan(dz[0, 0]) and float(dz[0, 1]) == 1.0
    assert float(dz[0, 2]) == float(params["alpha"][2])
