"""RBF networks: the RBF block's backward, k-means++, 2-step and 3-step learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_blocks import check_vjp

import fnn
from fnn import nn, rbf


@pytest.mark.parametrize(("d", "N", "m"), [(1, 3, 5), (2, 4, 6), (5, 2, 3)])
def test_rbf_backward_equals_vjp(d, N, m):
    """dx, dμ, d(log σ) of the Gaussian layer equal jax.vjp of its forward."""
    err_x, err_p = check_vjp(rbf.RBF(N), (d,), m=m, seed=d + N)
    assert err_x <= 1e-10 and err_p <= 1e-10


def test_rbf_forward_is_gaussian():
    """Φ_ij = exp(−‖x_i − μ_j‖²/(2σ_j²)), by hand for one point and one centre."""
    params = {"mu": jnp.asarray([[1.0, 2.0]]), "log_sigma": jnp.log(jnp.asarray([2.0]))}
    x = jnp.asarray([[0.0, 0.0]])
    Phi = rbf.RBF(1).forward(params, {}, x, None, False)[0]
    np.testing.assert_allclose(Phi, [[np.exp(-5.0 / 8.0)]], rtol=1e-6)


def test_kmeans_pp_picks_distinct_rows(getkey):
    """Centres are distinct rows of X, even with many duplicate rows."""
    X = jnp.repeat(jax.random.normal(getkey(), (6, 2)), 10, axis=0)
    for _ in range(5):
        C = rbf.kmeans_pp(getkey(), X, 6)
        assert len({tuple(np.asarray(c)) for c in C}) == 6
        assert all(bool(jnp.any(jnp.all(X == c, axis=1))) for c in C)
    with pytest.raises(ValueError, match="distinct rows"):
        rbf.kmeans_pp(getkey(), X, 7)


def test_kmeans_finds_separated_clusters(getkey):
    """Three tight, far-apart blobs: k-means centres are the blob means."""
    means = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = (means[:, None, :] + 0.1 * jax.random.normal(getkey(), (3, 20, 2))).reshape(
        -1, 2
    )
    C, assign = rbf.kmeans(getkey(), X, 3)
    order = jnp.argsort(C[:, 0] + 2 * C[:, 1])
    blob_means = X.reshape(3, 20, 2).mean(axis=1)
    np.testing.assert_allclose(C[order], blob_means, atol=1e-5)
    assert len(set(np.asarray(assign).tolist())) == 3


def test_widths_rules():
    C = jnp.asarray([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(rbf.widths(C, "dmax"), np.full(3, 5 / np.sqrt(6)))
    np.testing.assert_allclose(rbf.widths(C, "nearest"), [3.0, 3.0, 4.0])


def _regression(key, m=80):
    x = jnp.linspace(-3.0, 3.0, m, dtype=jnp.float64)[:, None]
    y = jnp.sin(2 * x[:, 0]) + 0.5 * x[:, 0] + 0.05 * jax.random.normal(key, (m,))
    return x, y


def test_two_step_reaches_least_squares_optimum():
    """For fixed centres/widths, the output weights are the normal-equation
    solution (solved independently here) and the output-weight gradient is 0."""
    with jax.enable_x64(True):
        X, y = _regression(jax.random.key(0))
        fit = rbf.fit_2step(jax.random.key(1), X, y, 8)
        Phi = nn.forward(fit.blocks[:1], fit.params[:1], X)[0]
        A = np.concatenate([np.ones((X.shape[0], 1)), np.asarray(Phi)], axis=1)
        w = np.linalg.solve(A.T @ A, A.T @ np.asarray(y))
        np.testing.assert_allclose(fit.params[1]["b"], w[:1], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(
            fit.params[1]["W"][:, 0], w[1:], rtol=1e-6, atol=1e-8
        )
        (_, _), grads = nn.loss_and_grad(fit.blocks, fit.params, X, y[:, None], "mse")
        assert float(jnp.max(jnp.abs(grads[1]["W"]))) < 1e-10
        assert float(jnp.max(jnp.abs(grads[1]["b"]))) < 1e-10
        assert float(jnp.max(jnp.abs(grads[0]["mu"]))) > 1e-6  # centres not optimal


def test_three_step_improves_on_two_step():
    """Gradient descent on μ, σ, w after the 2-step fit lowers the training mse.

    With few centres (4 for a sine plus a slope) the k-means placement is far
    from the best one, so the third step has something to gain."""
    with jax.enable_x64(True):
        X, y = _regression(jax.random.key(0))
        two = rbf.fit_2step(jax.random.key(1), X, y, 4)
        three = rbf.fit_3step(jax.random.key(1), X, y, 4, steps=300)
        mse2 = float(
            jnp.mean((nn.forward(two.blocks, two.params, X)[0][:, 0] - y) ** 2)
        )
        mse3 = float(
            jnp.mean((nn.forward(three.blocks, three.params, X)[0][:, 0] - y) ** 2)
        )
        assert float(three.losses[0]) == pytest.approx(mse2, rel=1e-9)
        assert mse3 < 0.5 * mse2


def test_rbf_classification_two_and_three_step():
    """Two moons: least squares on one-hot rows, then cross-entropy descent."""
    data = fnn.datasets.two_moons(jax.random.key(0), 200, noise=0.1)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    two = rbf.fit_2step(jax.random.key(1), X, y, 10, task="classification")
    acc2 = float(jnp.mean(jnp.argmax(nn.forward(two.blocks, two.params, X)[0], 1) == y))
    three = rbf.fit_3step(jax.random.key(1), X, y, 10, task="classification", steps=200)
    out = nn.forward(three.blocks, three.params, X)[0]
    acc3 = float(jnp.mean(jnp.argmax(out, 1) == y))
    assert acc2 > 0.85 and acc3 > 0.9
    assert float(three.losses[-1]) < float(three.losses[0])
