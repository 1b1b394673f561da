"""Every activation's hand-derived derivative against autodiff, and its safety."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import activations

# Every activation, parametrised variants included (aliases are the same objects).
ALL = [
    ("identity", {}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("lecun_tanh", {}),
    ("soboleva_tanh", {}),
    ("soboleva_tanh", {"a": 0.5, "b": 0.8, "c": 1.0, "d": 1.2}),
    ("step", {}),
    ("step", {"beta": 0.5}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {}),
    ("elu", {"alpha": 0.5}),
    ("selu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": True}),
    ("silu", {}),
    ("softplus", {}),
    ("gaussian", {}),
]
IDS = [name + (str(kw) if kw else "") for name, kw in ALL]


def _points(dtype):
    # Spread over the interesting range, away from the kinks at 0 and beta.
    z = np.linspace(-6, 6, 97) + 0.0123
    return jnp.asarray(z, dtype)


@pytest.mark.parametrize(("name", "kwargs"), ALL, ids=IDS)
def test_grad_equals_autodiff_in_float64(name, kwargs):
    """ψ'(z) == d/dz ψ(z) elementwise (the equation next to each forward)."""
    act = activations.get(name, **kwargs)
    with jax.enable_x64(True):
        z = _points(jnp.float64)
        expected = jax.vmap(jax.grad(act.fn))(z)
        got = jax.jit(act.grad)(z)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "kwargs"), ALL, ids=IDS)
def test_grad_equals_autodiff_at_the_kinks(name, kwargs):
    """At z = 0 and z = β, where a one-sided derivative is a convention, the
    hand-derived ψ' takes the subgradient that jax.grad of the forward takes, so
    manual and automatic backprop agree even on exact ties (a network of ones
    hits z = 0 exactly)."""
    act = activations.get(name, **kwargs)
    with jax.enable_x64(True):
        z = jnp.asarray([0.0, 0.5, -0.0, 1.0, -1.0], jnp.float64)
        expected = jax.vmap(jax.grad(act.fn))(z)
        np.testing.assert_allclose(act.grad(z), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "kwargs"), ALL, ids=IDS)
def test_vjp_equals_jax_vjp(name, kwargs):
    """dZ = dA ⊙ ψ'(Z) equals jax.vjp of the forward on a batch."""
    act = activations.get(name, **kwargs)
    with jax.enable_x64(True):
        Z = _points(jnp.float64).reshape(97, 1) * jnp.ones((1, 3))
        dA = jnp.cos(Z * 3.0)
        _, pullback = jax.vjp(act.fn, Z)
        np.testing.assert_allclose(
            act.vjp(Z, dA), pullback(dA)[0], rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize(
    ("name", "kwargs"), [*ALL, ("softmax", {})], ids=[*IDS, "softmax"]
)
def test_finite_at_large_inputs_in_float32(name, kwargs):
    """No NaN or inf in value, derivative or vjp for |z| up to 1e3 in float32."""
    act = activations.get(name, **kwargs)
    z = jnp.asarray(
        [[-1e3, -300.0, -88.0, -1.0, 0.0, 1.0, 88.0, 300.0, 1e3]], jnp.float32
    )
    for value in (act.fn(z), act.grad(z), act.vjp(z, jnp.ones_like(z))):
        assert bool(jnp.all(jnp.isfinite(value))), (name, value)


def test_softmax_jacobian_and_vjp():
    """∂ρ_i/∂z_j = ρ_i(δ_ij − ρ_j) (seed 003) against jax.jacobian."""
    sm = activations.get("softmax")
    with jax.enable_x64(True):
        z = jnp.asarray([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, -3.0, 0.0]], jnp.float64)
        jac = jax.vmap(jax.jacobian(sm.fn))(z)
        np.testing.assert_allclose(sm.grad(z), jac, rtol=1e-12, atol=1e-15)
        g = jnp.asarray([[1.0, -2.0, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]], jnp.float64)
        np.testing.assert_allclose(
            sm.vjp(z, g), jnp.einsum("bi,bij->bj", g, jac), atol=1e-15
        )
        np.testing.assert_allclose(jnp.sum(sm.fn(z), axis=-1), 1.0, rtol=1e-15)
    big = jnp.asarray([[1e3, -1e3, 0.0]], jnp.float32)
    np.testing.assert_allclose(sm.fn(big), [[1.0, 0.0, 0.0]])


def test_closed_forms_and_conventions():
    """Values the seeds give, and the documented conventions at the kinks."""
    z = jnp.asarray([-2.0, 0.0, 2.0])
    assert activations.get("relu").grad(jnp.zeros(1))[0] == 0.0  # like jax.nn.relu
    assert jax.grad(jax.nn.relu)(0.0) == 0.0
    assert activations.get("leaky_relu").grad(jnp.zeros(1))[0] == 1.0
    np.testing.assert_allclose(activations.get("leaky_relu").fn(z), [-0.02, 0.0, 2.0])
    np.testing.assert_array_equal(activations.get("step").fn(z), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(activations.get("step", beta=2.0).fn(z), [0, 0, 1])
    np.testing.assert_array_equal(activations.get("step").grad(z), [0.0, 0.0, 0.0])
    # LeCun's tanh maps ±1 to about ±1 (seed 003).
    np.testing.assert_allclose(
        activations.get("lecun_tanh").fn(jnp.ones(1)), 1.0, atol=2e-4
    )
    # Soboleva with a = b = c = d = 1 is tanh.
    np.testing.assert_allclose(
        activations.get("soboleva_tanh").fn(z), jnp.tanh(z), rtol=1e-6
    )
    # GELU = zΦ(z); the tanh form approximates it to about 1e-3.
    exact, approx = activations.get("gelu"), activations.get("gelu", approximate=True)
    np.testing.assert_allclose(exact.fn(z), z * jax.scipy.stats.norm.cdf(z), rtol=1e-6)
    np.testing.assert_allclose(approx.fn(z), exact.fn(z), atol=1e-3)
    np.testing.assert_allclose(activations.get("gaussian").fn(z), jnp.exp(-z * z))
    np.testing.assert_allclose(
        activations.get("softplus").fn(z), jnp.log1p(jnp.exp(z)), rtol=1e-6
    )
    selu = activations.get("selu")
    np.testing.assert_allclose(selu.fn(z), jax.nn.selu(z), rtol=1e-6)
    np.testing.assert_allclose(activations.get("elu").fn(z), jax.nn.elu(z), rtol=1e-6)
    np.testing.assert_allclose(activations.get("silu").fn(z), jax.nn.silu(z), rtol=1e-6)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*relu.*sigmoid"):
        activations.get("rleu")
    with pytest.raises(ValueError, match="bad parameters"):
        activations.get("relu", alpha=0.1)
    with pytest.raises(ValueError, match="unknown activation"):
        fnn.apply(
            fnn.init_params(jax.random.key(0), [2, 2]), jnp.ones((1, 2)), activation="x"
        )


def test_activation_object_passes_through():
    act = activations.get("tanh")
    assert activations.get(act) is act
    assert set(activations.names()) >= {"relu", "gelu", "softmax", "soboleva_tanh"}


@pytest.mark.parametrize("name", activations.names())
def test_nan_propagates_through_value_and_vjp(name):
    """A NaN input gives NaN in ψ, ψ' and dA ⊙ ψ' (relu's where(z > 0, z, 0) used to
    map it to 0 and hide it); the finite entries are unchanged."""
    act = activations.get(name)
    clean = jnp.asarray([[0.5, 0.25, -1.0, 0.0]], jnp.float32)
    finite = np.array([True, False, True, True]) if name != "softmax" else None
    with jax.debug_nans(False):
        z = jnp.asarray([[0.5, np.nan, -1.0, 0.0]], jnp.float32)
        results = (act.fn(z), act.vjp(z, jnp.ones_like(z)), jax.jit(act.fn)(z))
        if name != "softmax":
            results = (*results, act.grad(z))
        references = (act.fn(clean), act.vjp(clean, jnp.ones_like(clean)))
        results = [np.asarray(value) for value in results]
    for value in results:
        assert np.isnan(value[0, 1]), (name, value)
    if finite is not None:
        for value, ref in zip(results[:2], references, strict=True):
            np.testing.assert_array_equal(value[0, finite], ref[0, finite])


@pytest.mark.parametrize("name", activations.names())
def test_get_returns_the_same_object(name):
    """fit caches compiled functions keyed on the Activation: one name, one object."""
    assert activations.get(name) is activations.get(name)
    assert activations.get("leaky_relu", alpha=0.2) is activations.get(
        "leaky_relu", alpha=0.2
    )
    assert activations.get("leaky_relu", alpha=0.2) is not activations.get(
        "leaky_relu", alpha=0.3
    )
    assert activations.get("swish") is activations.get("silu")
