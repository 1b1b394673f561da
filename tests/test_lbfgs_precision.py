"""L-BFGS keeps converging once f's differences reach rounding level.

Near the minimum of a condition-100 quadratic in float64 the sufficient-decrease
test cannot be decided (|∇f| ≈ 1e-7 gives changes of f below its rounding);
the approximate Wolfe acceptance (Hager and Zhang 2005) and the restart after a
failed search let L-BFGS go on to the precision the problem allows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn.optim import lbfgs, minimize, strong_wolfe_line_search


def _quadratic(n=20, condition=100.0):
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = Q @ np.diag(np.logspace(0, np.log10(condition), n)) @ Q.T
    b = rng.normal(size=n)
    return jnp.asarray(A), jnp.asarray(b), np.linalg.solve(A, b)


def test_lbfgs_reaches_rounding_level_on_an_ill_conditioned_quadratic():
    with jax.enable_x64(True):
        A, b, x_star = _quadratic()
        f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
        result = jax.jit(
            lambda x0: minimize(f, x0, lbfgs(), tol=1e-12, max_iters=300)
        )(jnp.zeros(20))
        assert bool(result.converged) and float(result.grad_norm) <= 1e-12
        assert int(result.iterations) < 200
        error = np.linalg.norm(np.asarray(result.params) - x_star)
        assert error / np.linalg.norm(x_star) < 1e-11


def test_approximate_wolfe_accepts_a_step_the_strict_test_cannot_decide():
    """1e-10 from the minimum the decrease of f is below its rounding: the strict
    search fails, the approximate one accepts a step that reduces the gradient."""
    with jax.enable_x64(True):
        A, b, x_star = _quadratic()
        direction = np.random.default_rng(5).normal(size=20)
        x = jnp.asarray(x_star + 1e-10 * direction)
        vg = jax.value_and_grad(lambda x: 0.5 * x @ A @ x - b @ x)
        f0, g0 = vg(x)
        strict = strong_wolfe_line_search(vg, x, -g0, f0, g0, approx_rtol=0.0)
        approx = strong_wolfe_line_search(vg, x, -g0, f0, g0)
        assert bool(strict.failed)
        assert not bool(approx.failed) and float(approx.step) > 0
        assert float(jnp.linalg.norm(approx.grad)) < float(jnp.linalg.norm(g0))


def test_lbfgs_on_rosenbrock_needs_about_as_many_iterations_as_optax():
    optax = pytest.importorskip("optax")
    # optax is written for JAX's standard dtype promotion.
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        rosenbrock = lambda p: jnp.sum(  # noqa: E731
            100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1 - p[:-1]) ** 2
        )
        ours = jax.jit(
            lambda x0: minimize(rosenbrock, x0, lbfgs(), tol=1e-8, max_iters=500)
        )(jnp.zeros(10))
        assert bool(ours.converged)
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(rosenbrock)

        def body(carry):
            x, state, _ = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(
                grad, state, x, value=value, grad=grad, value_fn=rosenbrock
            )
            return optax.apply_updates(x, updates), state, jnp.linalg.norm(grad)

        def cond(carry):
            return (optax.tree.get(carry[1], "count") < 500) & (carry[2] > 1e-8)

        x0 = jnp.zeros(10)
        _, state, _ = jax.jit(
            lambda x0: jax.lax.while_loop(
                cond, body, (x0, opt.init(x0), jnp.asarray(jnp.inf))
            )
        )(x0)
        theirs = int(optax.tree.get(state, "count"))
        assert int(ours.iterations) <= 2 * theirs + 10
