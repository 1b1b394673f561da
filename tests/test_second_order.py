"""Tests for the second-order optimizers, the strong-Wolfe line search and minimize.

References are independent of the code under test: the known minimum of the
Rosenbrock function, numpy's linear solve for quadratics, and the two Wolfe
inequalities evaluated directly with float64 autodiff.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn.optim._base import Optimizer, apply_updates
from fnn.optim._second_order import (
    bfgs,
    conjugate_gradient,
    lbfgs,
    minimize,
    newton,
    strong_wolfe_line_search,
)


def rosenbrock(p):
    x, y = p["x"], p["y"]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


SECOND_ORDER = {
    "lbfgs": lambda: lbfgs(),
    "lbfgs_m2": lambda: lbfgs(memory_size=2),
    "bfgs": lambda: bfgs(),
    "cg_pr": lambda: conjugate_gradient("polak_ribiere"),
    "cg_fr": lambda: conjugate_gradient("fletcher_reeves"),
    "newton": lambda: newton(),
}


def spd_quadratic(n, seed=0):
    """``f(x) = 1/2 x^T A x - b^T x`` with distinct eigenvalues in [1, 10]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = Q @ np.diag(np.linspace(1.0, 10.0, n)) @ Q.T
    b = rng.normal(size=n)
    return A, b


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_rosenbrock_minimum_float64(name):
    # Rosenbrock's minimum is (1, 1); start from the classical (-1.2, 1).
    with jax.enable_x64(True):
        p0 = {"x": jnp.asarray(-1.2, jnp.float64), "y": jnp.asarray(1.0, jnp.float64)}
        opt = SECOND_ORDER[name]()
        run = jax.jit(lambda p: minimize(rosenbrock, p, opt, max_iters=1000, tol=1e-10))
        result = run(p0)
        assert bool(result.converged)
        assert int(result.iterations) < 1000
        np.testing.assert_allclose(float(result.params["x"]), 1.0, atol=1e-6)
        np.testing.assert_allclose(float(result.params["y"]), 1.0, atol=1e-6)
        assert result.params["x"].dtype == jnp.float64
        assert abs(float(result.value)) < 1e-12


def test_rosenbrock_float32_lbfgs():
    p0 = {"x": jnp.asarray(-1.2, jnp.float32), "y": jnp.asarray(1.0, jnp.float32)}
    result = jax.jit(lambda p: minimize(rosenbrock, p, lbfgs(), tol=1e-4))(p0)
    np.testing.assert_allclose(float(result.params["x"]), 1.0, atol=1e-3)
    np.testing.assert_allclose(float(result.params["y"]), 1.0, atol=2e-3)
    assert result.params["x"].dtype == jnp.float32


@pytest.mark.parametrize("linesearch", [True, False])
def test_newton_one_step_on_quadratic(linesearch):
    # x* = A^{-1} b solves grad f = A x - b = 0; Newton lands there in one step.
    with jax.enable_x64(True):
        A, b = spd_quadratic(5)
        Aj, bj = jnp.asarray(A), jnp.asarray(b)

        def f(p):
            return 0.5 * p["w"] @ Aj @ p["w"] - bj @ p["w"]

        params = {"w": jnp.ones(5, jnp.float64)}
        opt = newton(linesearch=linesearch)
        value, grads = jax.value_and_grad(f)(params)
        updates, state = opt.update(
            grads, opt.init(params), params, value=value, grad=grads, value_fn=f
        )
        new = apply_updates(params, updates)
        np.testing.assert_allclose(new["w"], np.linalg.solve(A, b), rtol=1e-12)
        assert float(state.step_size) == 1.0
        assert not bool(state.linesearch_failed)


def test_newton_damping_solves_damped_system():
    # With damping lambda and no line search: d = -(A + lambda I)^{-1} g.
    with jax.enable_x64(True):
        A, b = spd_quadratic(4, seed=1)
        Aj, bj = jnp.asarray(A), jnp.asarray(b)

        def f(p):
            return 0.5 * p @ Aj @ p - bj @ p

        x = jnp.zeros(4, jnp.float64)
        opt = newton(damping=2.0, linesearch=False)
        g = jax.grad(f)(x)
        updates, _ = opt.update(g, opt.init(x), x, value_fn=f)
        expected = -np.linalg.solve(A + 2.0 * np.eye(4), np.asarray(g))
        np.testing.assert_allclose(updates, expected, rtol=1e-12)


def test_newton_falls_back_to_steepest_descent_on_indefinite_hessian():
    # f = x^2 - y^2 + y^4/4 at (0.01, 0.1): g = (0.02, -0.199), H = diag(2, -1.97)
    # is indefinite and d = -H^{-1} g = (-0.01, -0.101) has g.d = 0.0199 > 0 (an
    # ascent direction), so the step must be -g.
    with jax.enable_x64(True):

        def f(p):
            return p[0] ** 2 - p[1] ** 2 + p[1] ** 4 / 4

        x = jnp.asarray([0.01, 0.1], jnp.float64)
        opt = newton(linesearch=False)
        g = jax.grad(f)(x)
        updates, state = opt.update(g, opt.init(x), x, value_fn=f)
        np.testing.assert_allclose(updates, -np.asarray(g), rtol=1e-12)
        assert int(state.newton_failures) == 1


@pytest.mark.parametrize("method", ["polak_ribiere", "fletcher_reeves"])
def test_cg_ends_in_n_steps_on_spd_quadratic(method):
    # With (near) exact line searches, nonlinear CG is linear CG on a quadratic:
    # the directions are A-conjugate and x_n = A^{-1} b (Nocedal & Wright thm 5.2).
    n = 6
    with jax.enable_x64(True):
        A, b = spd_quadratic(n, seed=2)
        Aj, bj = jnp.asarray(A), jnp.asarray(b)

        def f(x):
            return 0.5 * x @ Aj @ x - bj @ x

        opt = conjugate_gradient(method, restart=1000, c1=1e-8, c2=1e-6)
        x = jnp.zeros(n, jnp.float64)
        state = opt.init(x)
        step = jax.jit(
            lambda x, s: opt.update(
                jax.grad(f)(x), s, x, value=f(x), grad=jax.grad(f)(x), value_fn=f
            )
        )
        directions, norms = [], []
        for _ in range(n):
            updates, state = step(x, state)
            directions.append(np.asarray(state.d_prev))
            x = apply_updates(x, updates)
            norms.append(np.linalg.norm(A @ np.asarray(x) - b))
        x_star = np.linalg.solve(A, b)
        np.testing.assert_allclose(x, x_star, atol=1e-8)
        assert norms[n - 2] > 1e-4  # not done before step n
        D = np.stack(directions, axis=1)
        M = D.T @ A @ D
        off = M - np.diag(np.diag(M))
        assert np.max(np.abs(off)) < 1e-6 * np.max(np.abs(np.diag(M)))
        assert not bool(state.linesearch_failed)


def _wolfe_test_function(x):
    # A smooth non-quadratic function of two variables.
    return jnp.sum(x**4) / 4 - jnp.sum(x**2) + x[0] * x[1] + jnp.sin(x[0])


@pytest.mark.parametrize("c2", [0.9, 0.1])
@pytest.mark.parametrize("init_step", [1e-4, 1.0, 50.0])
def test_line_search_satisfies_strong_wolfe(c2, init_step):
    # init_step = 1e-4 forces the bracketing to expand, 50 forces the zoom.
    c1 = 1e-4
    with jax.enable_x64(True):
        vg = jax.jit(jax.value_and_grad(_wolfe_test_function))
        x = jnp.asarray([2.0, -1.5], jnp.float64)
        f0, g0 = vg(x)
        d = -g0
        search = jax.jit(
            lambda x, d, f0, g0: strong_wolfe_line_search(
                vg, x, d, f0, g0, init_step=init_step, c1=c1, c2=c2
            )
        )
        res = search(x, d, f0, g0)
        assert not bool(res.failed)
        a = float(res.step)
        assert a > 0
        # Independent evaluation of the two conditions.
        fa = float(_wolfe_test_function(x + a * d))
        dphi_a = float(jax.grad(_wolfe_test_function)(x + a * d) @ d)
        dphi0 = float(g0 @ d)
        assert fa <= float(f0) + c1 * a * dphi0
        assert abs(dphi_a) <= c2 * abs(dphi0)
        np.testing.assert_allclose(float(res.value), fa, rtol=1e-12)
        np.testing.assert_allclose(
            res.grad, jax.grad(_wolfe_test_function)(x + a * d), rtol=1e-12
        )


def test_line_search_reports_failure():
    # An ascent direction has no step with sufficient decrease: the search fails
    # and returns the zero step.
    with jax.enable_x64(True):
        vg = jax.value_and_grad(_wolfe_test_function)
        x = jnp.asarray([2.0, -1.5], jnp.float64)
        f0, g0 = vg(x)
        res = jax.jit(
            lambda: strong_wolfe_line_search(vg, x, g0, f0, g0, max_iters=8)
        )()
        assert bool(res.failed)
        assert float(res.step) == 0.0
        assert int(res.iterations) == 8
        np.testing.assert_allclose(float(res.value), float(f0))


def test_line_search_rejects_bad_constants():
    x = jnp.zeros(2)
    vg = jax.value_and_grad(_wolfe_test_function)
    with pytest.raises(ValueError, match="c1"):
        strong_wolfe_line_search(vg, x, x, 0.0, x, c1=0.5, c2=0.1)


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_missing_keywords_raise_type_error(name):
    opt = SECOND_ORDER[name]()
    params = {"x": jnp.asarray(-1.2), "y": jnp.asarray(1.0)}
    state = opt.init(params)
    value, grads = jax.value_and_grad(rosenbrock)(params)
    with pytest.raises(TypeError, match="value_fn="):
        opt.update(grads, state, params, value=value)
    with pytest.raises(TypeError, match="params"):
        opt.update(grads, state, value=value, value_fn=rosenbrock)
    if name != "newton":  # Newton needs value= only for its line search
        with pytest.raises(TypeError, match="value="):
            opt.update(grads, state, params, value_fn=rosenbrock)
    with pytest.raises(TypeError, match="value=, value_fn="):
        opt.update(grads, state, params)


def test_mismatched_grad_tree_raises():
    opt = lbfgs()
    params = {"x": jnp.asarray(-1.2), "y": jnp.asarray(1.0)}
    value, grads = jax.value_and_grad(rosenbrock)(params)
    with pytest.raises(ValueError, match="grad"):
        opt.update(
            grads,
            opt.init(params),
            params,
            value=value,
            grad={"x": grads["x"]},
            value_fn=rosenbrock,
        )


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_one_trace_for_five_steps_and_stable_state(name):
    opt = SECOND_ORDER[name]()
    params = {"x": jnp.asarray(-1.2, jnp.float32), "y": jnp.asarray(1.0, jnp.float32)}
    state = opt.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        value, grads = jax.value_and_grad(rosenbrock)(params)
        updates, state = opt.update(
            grads, state, params, value=value, grad=grads, value_fn=rosenbrock
        )
        return apply_updates(params, updates), state

    chex.clear_trace_counter()
    after = jax.eval_shape(step, params, state)[1]
    chex.assert_trees_all_equal_shapes_and_dtypes(after, state)
    for _ in range(5):
        params, state = step(params, state)
    assert int(state.count) == 5
    assert float(rosenbrock(params)) < float(rosenbrock({"x": -1.2, "y": 1.0}))


def test_minimize_drives_a_first_order_optimizer():
    # A bare gradient-descent optimizer that ignores the keywords.
    def init(params):
        return ()

    def update(grads, state, params=None, **extra):
        return jax.tree.map(lambda g: -0.1 * g, grads), state

    gd = Optimizer(init, update)
    with jax.enable_x64(True):
        A, b = spd_quadratic(3, seed=3)
        Aj, bj = jnp.asarray(A), jnp.asarray(b)

        def f(x):
            return 0.5 * x @ Aj @ x - bj @ x

        res = minimize(f, jnp.zeros(3, jnp.float64), gd, max_iters=2000, tol=1e-10)
        assert bool(res.converged)
        assert not bool(res.linesearch_failed)
        np.testing.assert_allclose(res.params, np.linalg.solve(A, b), atol=1e-9)


def test_minimize_stops_at_max_iters():
    with jax.enable_x64(True):
        p0 = {"x": jnp.asarray(-1.2, jnp.float64), "y": jnp.asarray(1.0, jnp.float64)}
        res = minimize(rosenbrock, p0, conjugate_gradient(), max_iters=3, tol=0.0)
        assert int(res.iterations) == 3
        assert not bool(res.converged)
        assert int(res.state.count) == 3


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (conjugate_gradient, {"method": "hestenes"}, "method"),
        (conjugate_gradient, {"restart": 0}, "restart"),
        (lbfgs, {"memory_size": 0}, "memory_size"),
        (newton, {"damping": -1.0}, "damping"),
        (bfgs, {"c1": 0.95}, "c1"),
    ],
)
def test_bad_hyperparameters_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_init_rejects_integer_leaves():
    with pytest.raises(ValueError, match="inexact"):
        bfgs().init({"w": jnp.zeros(3, jnp.int32)})


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_state_from_another_optimizer_raises(name):
    opt = SECOND_ORDER[name]()
    params = {"x": jnp.asarray(-1.2), "y": jnp.asarray(1.0)}
    value, grads = jax.value_and_grad(rosenbrock)(params)
    other = newton() if name != "newton" else bfgs()
    foreign = other.init(params)
    owner = "newton" if name != "newton" else "bfgs"
    with pytest.raises(TypeError, match=rf"got a state made by {owner}"):
        opt.update(grads, foreign, params, value=value, grad=grads, value_fn=rosenbrock)


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_gradient_of_the_wrong_shape_names_the_key_path(name):
    opt = SECOND_ORDER[name]()
    params = {"x": jnp.zeros(2), "y": jnp.asarray(1.0)}
    grads = {"x": jnp.zeros(3), "y": jnp.asarray(1.0)}
    with pytest.raises(ValueError, match=r"\['x'\] has shape \(3,\).*\(2,\)"):
        opt.update(
            grads,
            opt.init(params),
            params,
            value=0.0,
            value_fn=lambda p: jnp.sum(p["x"] ** 2) + p["y"] ** 2,
        )


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: newton(damping=float("nan")), "damping"),
        (lambda: newton(damping=np.float32(-1.0)), "damping"),
        (lambda: bfgs(c1=float("nan")), "c1"),
        (lambda: lbfgs(memory_size=np.int64(0)), "memory_size"),
        (lambda: minimize(rosenbrock, {"x": jnp.zeros(())}, bfgs(), tol=-1.0), "tol"),
    ],
)
def test_bad_scalars_raise_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_numpy_and_jax_scalars_are_accepted():
    assert isinstance(lbfgs(memory_size=np.int64(3)), Optimizer)
    assert isinstance(newton(damping=jnp.float32(0.5)), Optimizer)
    assert isinstance(conjugate_gradient(restart=np.int32(4)), Optimizer)


@pytest.mark.slow  # test_optim_precision covers each factory in both dtypes
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_sixteen_bit_parameters_work_in_float32(dtype):
    # A bfloat16 Hessian cannot even be solved (no LAPACK routine); the flat
    # vector, the state and the line search are float32, the updates 16-bit.
    params = {"x": jnp.asarray(-1.2, dtype), "y": jnp.asarray(1.0, dtype)}
    for name, make in SECOND_ORDER.items():
        opt = make()
        state = opt.init(params)
        for leaf in jax.tree.leaves(state):
            assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == (
                jnp.float32
            ), name
        value, grads = jax.value_and_grad(rosenbrock)(params)
        updates, state = jax.jit(
            lambda g, s, p, v, opt=opt: opt.update(
                g, s, p, value=v, grad=g, value_fn=rosenbrock
            )
        )(grads, state, params, value)
        assert updates["x"].dtype == jnp.dtype(dtype), name
        new = apply_updates(params, updates)
        assert float(rosenbrock(new)) <= float(value), name
