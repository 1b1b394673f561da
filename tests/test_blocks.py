"""PReLU, maxout, batch and layer normalization: manual backward against jax.vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
