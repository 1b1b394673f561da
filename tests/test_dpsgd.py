"""DP-SGD: fnn.optim.differentially_private_aggregate and dpsgd against a hand
computation, against optax (same key, same noise) and on fnn.per_example_grads."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import optim


def _per_example():
    """Three examples' gradients of a two-leaf model, norms 5, 1 and 0."""
    return {
        "W": jnp.array(
            [[[3.0, 0.0], [0.0, 0.0]], [[0.6, 0.0], [0.0, 0.8]], [[0.0, 0.0]] * 2]
        ),
        "b": jnp.array([[4.0], [0.0], [0.0]]),
    }


def _params():
    return {"W": jnp.zeros((2, 2)), "b": jnp.zeros((1,))}


def test_closed_form_without_noise():
    """C = 2: example 1 (norm 5) is scaled by 2/5, example 2 (norm 1) and the
    zero example are kept; the sum is divided by m = 3."""
    g = _per_example()
    opt = optim.differentially_private_aggregate(2.0, 0.0, jax.random.key(0))
    out, state = opt.update(g, opt.init(_params()), _params())
    W = (np.array([[3.0, 0.0], [0.0, 0.0]]) * 0.4 + np.diag([0.6, 0.8])) / 3
    b = np.array([4.0]) * 0.4 / 3
    chex.assert_trees_all_close(out, {"W": W, "b": b}, rtol=1e-6)
    assert int(state.count) == 1
    norms = optim.per_example_global_norms(g)
    chex.assert_trees_all_close(norms, jnp.array([5.0, 1.0, 0.0]))


def test_noise_is_sigma_c_on_the_sum_from_the_split_key():
    g = _per_example()
    key = jax.random.key(7)
    C, sigma = 0.5, 0.8
    opt = optim.differentially_private_aggregate(C, sigma, key)
    state = opt.init(_params())
    factors = np.array([C / 5.0, C / 1.0, 1.0])  # min(1, C / norm); 1 at norm 0
    for step in range(2):
        out, new_state = opt.update(g, state, _params())
        # One key per leaf, in jax.tree order ("W" before "b"), after the next one.
        next_key, *keys = jax.random.split(state.key, 3)
        for name, k in zip(["W", "b"], keys, strict=True):
            clipped = np.tensordot(factors, np.asarray(g[name]), axes=1)
            noise = np.asarray(jax.random.normal(k, clipped.shape, jnp.float32))
            expected = (clipped + C * sigma * noise) / 3
            chex.assert_trees_all_close(out[name], expected, rtol=1e-5, atol=1e-7)
        assert jax.random.key_data(new_state.key).tolist() == (
            jax.random.key_data(next_key).tolist()
        ), step
        state = new_state


def test_means_of_clipped_per_example_grads_is_the_step():
    """One dpsgd step on an MLP with fnn.per_example_grads equals the hand
    computation: clip every example's global norm to C, average, times -lr."""
    with jax.enable_x64(True):
        key = jax.random.key(0)
        params = fnn.init_params(key, [4, 6, 3], dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(1), (8, 4), jnp.float64)
        y = jnp.arange(8) % 3
        g = fnn.per_example_grads(params, x, y)
        g_leaves = jax.tree.leaves(g)
        norms = np.sqrt(
            sum(np.sum(np.asarray(a).reshape(8, -1) ** 2, 1) for a in g_leaves)
        )
        C, lr = float(np.median(norms)), 0.1  # half the examples are clipped
        opt = optim.dpsgd(lr, C, 0.0, 0)
        updates, _ = opt.update(g, opt.init(params), params)
        scale = np.minimum(1.0, C / norms)
        expected = jax.tree.map(
            lambda a: -lr * np.tensordot(scale, np.asarray(a), axes=1) / 8, g
        )
        chex.assert_trees_all_close(updates, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sigma", [0.0, 1.1])
def test_aggregate_matches_optax(sigma):
    optax = pytest.importorskip("optax")
    g = jax.tree.map(
        lambda a: a * jnp.arange(1.0, 4.0).reshape(3, *([1] * (a.ndim - 1))),
        _per_example(),
    )
    ours = optim.differentially_private_aggregate(1.5, sigma, jax.random.key(3))
    theirs = optax.contrib.differentially_private_aggregate(
        1.5, sigma, jax.random.key(3)
    )
    s_ours, s_theirs = ours.init(_params()), theirs.init(_params())
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        for _ in range(3):
            u_ours, s_ours = ours.update(g, s_ours, _params())
            u_theirs, s_theirs = theirs.update(g, s_theirs, _params())
            chex.assert_trees_all_close(u_ours, u_theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "momentum, nesterov", [(None, False), (0.9, False), (0.8, True)]
)
@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_dpsgd_matches_optax(momentum, nesterov, sigma):
    optax = pytest.importorskip("optax")
    g = _per_example()
    ours = optim.dpsgd(0.1, 1.0, sigma, 5, momentum=momentum, nesterov=nesterov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = optax.contrib.dpsgd(0.1, 1.0, sigma, 5, momentum, nesterov)
    s_ours, s_theirs = ours.init(_params()), theirs.init(_params())
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        for _ in range(4):
            u_ours, s_ours = ours.update(g, s_ours, _params())
            u_theirs, s_theirs = theirs.update(g, s_theirs, _params())
            chex.assert_trees_all_close(u_ours, u_theirs, rtol=1e-5, atol=1e-7)


def test_hyperparameters_as_arrays_under_vmap():
    g = _per_example()
    clips = jnp.array([0.5, 1.0, 10.0])
    sigmas = jnp.array([0.0, 0.3, 1.0])

    def run(C, sigma):
        opt = optim.differentially_private_aggregate(C, sigma, jax.random.key(1))
        return opt.update(g, opt.init(_params()), _params())[0]

    batched = jax.jit(jax.vmap(run))(clips, sigmas)
    for i in range(3):
        single = run(float(clips[i]), float(sigmas[i]))
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], batched), single, rtol=1e-6, atol=1e-7
        )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="l2_norm_clip"):
        optim.differentially_private_aggregate(-1.0, 1.0, 0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        optim.differentially_private_aggregate(1.0, np.float32("nan"), 0)
    with pytest.raises(ValueError, match="exactly one of key"):
        optim.differentially_private_aggregate(1.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of key"):
        optim.differentially_private_aggregate(1.0, 1.0, 0, seed=0)
    with pytest.raises(ValueError, match="momentum"):
        optim.dpsgd(0.1, 1.0, 1.0, 0, momentum=1.5)
    opt = optim.differentially_private_aggregate(1.0, 1.0, seed=0)
    state = opt.init(_params())
    with pytest.raises(ValueError, match=r"needs \(m, \*\(2, 2\)\)"):
        wrong = {"W": jnp.zeros((3, 2, 3)), "b": jnp.zeros((3, 1))}
        opt.update(wrong, state, _params())
    bad = {"W": _per_example()["W"], "b": jnp.zeros((2, 1))}
    with pytest.raises(ValueError, match="share the batch size"):
        opt.update(bad, state, _params())
