"""The seeds' worked examples, reproduced with fnn and checked against their numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn.graph import Node

XOR_X = jnp.asarray([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = jnp.asarray([0.0, 1.0, 1.0, 0.0])


def test_computational_graph_seed_000():
    """f(x, y, z) = (x + y)·z at (−2, 5, −4): f = −12 and ∇f = (−4, −4, 3)."""
    x, y, z = Node(-2.0), Node(5.0), Node(-4.0)
    q = x + y
    f = q * z
    f.backward()
    assert (q.value, f.value) == (3.0, -12.0)
    assert (q.grad, z.grad) == (-4.0, 3.0)  # ∂f/∂q = z, ∂f/∂z = q
    assert (x.grad, y.grad, z.grad) == (-4.0, -4.0, 3.0)
    expected = jax.grad(lambda v: (v[0] + v[1]) * v[2])(jnp.asarray([-2.0, 5.0, -4.0]))
    np.testing.assert_array_equal(expected, [x.grad, y.grad, z.grad])


def test_graph_sums_over_paths():
    """A node used twice gets the sum of both paths (seed 003, "Multiple paths")."""
    a = Node(3.0)
    f = a * a + a.sigmoid()
    f.backward()
    s = 1 / (1 + np.exp(-3.0))
    assert a.grad == pytest.approx(2 * 3.0 + s * (1 - s))
    g = (a - 1.0).relu() * Node(2.0).exp()
    g.backward()
    assert a.grad == pytest.approx(np.exp(2.0))


def test_xor_relu_network_seed_001():
    """f(x) = wᵀ relu(Wᵀx + c) + b with W = [[1,1],[1,1]], c = (0,−1), w = (1,−2),
    b = 0 reproduces XOR exactly; in fnn's batch-first form W is the same matrix."""
    params = [
        {"W": jnp.asarray([[1.0, 1.0], [1.0, 1.0]]), "b": jnp.asarray([0.0, -1.0])},
        {"W": jnp.asarray([[1.0], [-2.0]]), "b": jnp.asarray([0.0])},
    ]
    out = fnn.apply(params, XOR_X, activation="relu", output="identity")
    np.testing.assert_array_equal(out[:, 0], XOR_Y)
    # An exact minimum of the seed's quadratic criterion: zero loss, zero gradient.
    J, grads = fnn.backprop(params, XOR_X, XOR_Y, activation="relu", loss="mse")
    assert float(J) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_xor_best_linear_fit_seed_001():
    """The linear model's least-squares fit of XOR is θ* = ((0, 0), 1/2)."""
    with jax.enable_x64(True):
        X, y = XOR_X.astype(jnp.float64), XOR_Y.astype(jnp.float64)
        # Normal equations with the bias column: an independent closed form.
        A = jnp.concatenate([X, jnp.ones((4, 1))], axis=1)
        theta = jnp.linalg.solve(A.T @ A, A.T @ y)
        np.testing.assert_allclose(theta, [0.0, 0.0, 0.5], atol=1e-12)
        # At θ* fnn's backprop gradient of J = (1/4) Σ (f* − f)² vanishes ...
        star = [{"W": jnp.zeros((2, 1)), "b": jnp.asarray([0.5])}]
        J, grads = fnn.backprop(star, X, y, activation="identity", loss="mse")
        assert float(J) == pytest.approx(0.25)  # f = 1/2 everywhere: error 1/2 each
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-15
        # ... and gradient descent from elsewhere converges to it (J is convex).
        params = fnn.init_params(jax.random.key(0), [2, 1], "normal", dtype=jnp.float64)
        step = jax.jit(
            lambda p: jax.tree.map(
                lambda w, g: w - 0.5 * g, p, fnn.backprop(p, X, y, loss="mse")[1]
            )
        )
        for _ in range(2000):
            params = step(params)
        np.testing.assert_allclose(params[0]["W"][:, 0], [0.0, 0.0], atol=1e-8)
        np.testing.assert_allclose(params[0]["b"], [0.5], atol=1e-8)


def test_linear_network_gradients_explode_or_vanish_seed_000():
    """Seed 000: a linear network with W = diag(1.5) (or 0.5) and zero biases gives
    ŷ = W^[L] diag(1.5^(L−1)) x: exponential in depth, and so are the gradients."""
    for factor in (1.5, 0.5):
        for depth in (5, 20):
            params = [
                {"W": factor * jnp.eye(2), "b": jnp.zeros(2)} for _ in range(depth)
            ]
            x = jnp.asarray([[1.0, -2.0]])
            out = fnn.apply(params, x, activation="identity")
            np.testing.assert_allclose(out, factor**depth * x, rtol=1e-5)
            _, grads = fnn.backprop(
                params, x, jnp.zeros((1, 2)), activation="identity", loss="mse"
            )
            # ∂J/∂b^[1] = W^[2..L]ᵀ ∂J/∂ŷ: a factor^(L−1) times the output error.
            dout = 2 * out / 2
            np.testing.assert_allclose(
                grads[0]["b"], factor ** (depth - 1) * dout[0], rtol=1e-5
            )
