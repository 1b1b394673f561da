"""Initialization schemes: target variances, aliases, orthogonality, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import initializers

N_IN, N_OUT = 600, 400  # 240,000 draws: the variance estimate is good to ~0.3%
TARGETS = {
    "lecun_normal": 1 / N_IN,
    "lecun_uniform": 1 / N_IN,
    "glorot_normal": 2 / (N_IN + N_OUT),
    "glorot_uniform": 2 / (N_IN + N_OUT),
    "xavier_normal": 2 / (N_IN + N_OUT),
    "xavier_uniform": 2 / (N_IN + N_OUT),
    "he_normal": 2 / N_IN,
    "he_uniform": 2 / N_IN,
    "kaiming_normal": 2 / N_IN,
    "kaiming_uniform": 2 / N_IN,
    "normal": 0.05**2,
    "uniform": 0.05**2 / 3,  # U(-a, a) has variance a²/3
    "orthogonal": 1 / N_IN,  # orthonormal columns of length 1 over N_IN rows
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_empirical_variance_matches_target(name):
    W = jax.jit(initializers.get(name), static_argnums=(1,))(
        jax.random.key(1), (N_IN, N_OUT)
    )
    assert W.shape == (N_IN, N_OUT) and W.dtype == jnp.float32
    assert abs(float(jnp.mean(W))) < 0.02 * math.sqrt(TARGETS[name])
    assert float(jnp.var(W)) == pytest.approx(TARGETS[name], rel=0.03)


@pytest.mark.parametrize(
    ("distribution", "bound"),
    [("uniform", math.sqrt(3)), ("truncated_normal", 2 / 0.8796)],
)
def test_variance_scaling_distributions(distribution, bound):
    """Var = scale/fan for every distribution; uniform and truncated are bounded."""
    init = initializers.variance_scaling(2.0, "fan_out", distribution)
    W = init(jax.random.key(2), (N_IN, N_OUT))
    std = math.sqrt(2.0 / N_OUT)
    assert float(jnp.var(W)) == pytest.approx(std**2, rel=0.03)
    assert float(jnp.max(jnp.abs(W))) <= bound * std * (1 + 1e-6)


def test_normal_variants_are_not_truncated():
    W = initializers.get("he_normal")(jax.random.key(3), (N_IN, N_OUT))
    assert float(jnp.max(jnp.abs(W))) > 3 * math.sqrt(2 / N_IN)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("xavier_normal", "glorot_normal"),
        ("xavier_uniform", "glorot_uniform"),
        ("kaiming_normal", "he_normal"),
        ("kaiming_uniform", "he_uniform"),
    ],
)
def test_aliases_give_identical_arrays(alias, name):
    key = jax.random.key(4)
    a = fnn.init_params(key, [5, 7, 3], alias)
    b = fnn.init_params(key, [5, 7, 3], name)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("shape", [(50, 20), (20, 50)])
def test_orthogonal(shape):
    W = initializers.orthogonal(2.0)(jax.random.key(5), shape)
    gram = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(gram, 4.0 * jnp.eye(min(shape)), atol=1e-5)


def test_init_params_structure():
    params = fnn.init_params(jax.random.key(6), [4, 8, 3])
    assert [sorted(p) for p in params] == [["W", "b"], ["W", "b"]]
    assert [p["W"].shape for p in params] == [(4, 8), (8, 3)]
    assert all(p["W"].dtype == jnp.float32 for p in params)
    np.testing.assert_array_equal(params[0]["b"], jnp.zeros(8))
    with jax.enable_x64(True):
        params = fnn.init_params(jax.random.key(6), [4, 8, 3], dtype=jnp.float64)
        assert params[1]["W"].dtype == jnp.float64


def test_callable_scheme():
    calls = []

    def ones(key, shape, dtype):
        calls.append(shape)
        return jnp.ones(shape, dtype)

    params = fnn.init_params(jax.random.key(7), [3, 2], ones)
    np.testing.assert_array_equal(params[0]["W"], jnp.ones((3, 2)))
    assert calls == [(3, 2)]


def test_zeros_breaks_no_symmetry():
    params = fnn.init_params(jax.random.key(8), [3, 4, 2], "zeros")
    assert all(float(jnp.abs(p["W"]).max()) == 0.0 for p in params)


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([5], "at least an input and an output"),
        ([5, 0, 2], r"sizes\[1\]"),
        ([5, -3], r"sizes\[1\]"),
        ([5, 2.5], r"sizes\[1\]"),
    ],
)
def test_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        fnn.init_params(jax.random.key(0), sizes)


def test_unknown_scheme_lists_names():
    with pytest.raises(
        ValueError, match="unknown init scheme 'hee'.*he_normal.*orthogonal"
    ):
        fnn.init_params(jax.random.key(0), [2, 2], "hee")
    with pytest.raises(ValueError, match="mode"):
        initializers.variance_scaling(1.0, "fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        initializers.variance_scaling(1.0, "fan_in", "cauchy")


@pytest.mark.parametrize("name", initializers.names())
def test_numpy_integer_widths_are_accepted(name):
    init = initializers.get(name)
    key = jax.random.key(0)
    W = init(key, (np.int64(4), np.int32(3)))
    assert W.shape == (4, 3)
    np.testing.assert_array_equal(W, init(key, (4, 3)))
    assert initializers.fans((np.int64(2), np.int64(4), np.int64(3))) == (8, 6)


@pytest.mark.parametrize("name", initializers.names())
@pytest.mark.parametrize("shape", [(True, 3), (4, 2.0), (4, -1)])
def test_bad_widths_raise(name, shape):
    with pytest.raises(ValueError, match=r"shape\[\d\] must be"):
        initializers.get(name)(jax.random.key(0), shape)


@pytest.mark.parametrize("name", [n for n in initializers.names() if n != "zeros"])
@pytest.mark.parametrize("key", [0, np.int64(7), None, 1.5])
def test_an_int_instead_of_a_key_says_what_to_pass(name, key):
    with pytest.raises(ValueError, match=r"key must be a JAX PRNG key.*jax\.random\."):
        initializers.get(name)(key, (3, 2))


def test_check_key():
    initializers.check_key(jax.random.key(0))
    initializers.check_key(jax.random.PRNGKey(0))  # legacy raw key
    initializers.check_key(jax.random.split(jax.random.key(0), 3))
    jax.jit(initializers.check_key)(jax.random.key(0))
    with pytest.raises(ValueError, match=r"key_init .*int 3.*jax\.random\.key\(3\)"):
        initializers.check_key(3, "key_init")
    with pytest.raises(ValueError, match="dtype float32"):
        initializers.check_key(jnp.zeros((2,)))
    with pytest.raises(ValueError, match="bool"):
        initializers.check_key(True)
