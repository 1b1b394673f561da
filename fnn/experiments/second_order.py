"""Second-order methods: Newton, nonlinear CG and L-BFGS against Adam.

A small full-batch problem: a 4-8-1 tanh network (49 parameters) on the
standardized first four breast-cancer features, BCE loss with l2 = 1e-3
(so the minimum is isolated), float32. Each method runs ``iters``
iterations from the same start; we record the loss after every iteration and
the wall time (the jitted step is compiled and warmed up before timing). An
iteration of Newton forms and solves the 49 x 49 Hessian; CG and L-BFGS make a
strong-Wolfe line search; Adam takes one gradient step.

References: [Neacșu & Vasilescu, Second order methods] (conjugate gradient,
Newton, quasi-Newton: BFGS, L-BFGS); [Balvert, Some more challenges] ("second
order methods do not scale well").
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import optim

from .helpers import Table, figure


def problem(m=300):
    """``(J, params)``: the regularized BCE loss of a 4-8-1 tanh network on
    ``m`` breast-cancer examples, and its initial parameters."""
    d = fnn.datasets.load_breast_cancer()
    X = fnn.data.fit_standardize(d.X[:, :4]).transform(d.X[:, :4])[:m]
    y = d.y[:m].astype(jnp.float32)[:, None]
    params = fnn.init_params(jax.random.key(0), [4, 8, 1], "glorot_normal")

    def J(p):
        return fnn.loss(p, X, y, activation="tanh", loss="bce", l2=1e-3)

    return J, params


def methods():
    """The four optimizers compared, by name."""
    return {
        "adam (lr 0.05)": optim.adam(0.05),
        "newton (damping 1e-3)": optim.newton(damping=1e-3),
        "conjugate gradient (PR+)": optim.conjugate_gradient(),
        "l-bfgs (m = 10)": optim.lbfgs(10),
    }


def run_method(opt, J, params, iters):
    """Losses after each iteration and the cumulative wall time."""

    @jax.jit
    def step(p, s):
        f, g = jax.value_and_grad(J)(p)
        u, s = opt.update(g, s, p, value=f, grad=g, value_fn=J)
        p = optim.apply_updates(p, u)
        return p, s, J(p)

    s = opt.init(params)
    jax.block_until_ready(step(params, s))  # compile
    p, losses, times = params, [float(J(params))], [0.0]
    t0 = time.perf_counter()
    for _ in range(iters):
        p, s, f = step(p, s)
        f = float(f)
        losses.append(f)
        times.append(time.perf_counter() - t0)
    return np.asarray(losses), np.asarray(times)


def run(quick: bool = False, iters: int | None = None):
    """Every method of :func:`methods` for ``iters`` iterations from the same
    start; ``best`` is the lowest loss any of them reached."""
    iters = iters or (40 if quick else 300)
    J, params = problem()
    curves, rows = {}, Table()
    best = np.inf
    for name, opt in methods().items():
        losses, times = run_method(opt, J, params, iters)
        curves[name] = (losses, times)
        best = min(best, float(np.nanmin(losses)))
    for name, (losses, times) in curves.items():
        gap = losses - best
        hit = np.nonzero(gap <= 1e-3 * max(1.0, abs(best)))[0]
        rows.append(
            {
                "method": name,
                "final loss": float(losses[-1]),
                "iterations to within 0.1% of best": int(hit[0]) if hit.size else -1,
                "seconds to within 0.1%": float(times[hit[0]]) if hit.size else -1.0,
                "seconds total": float(times[-1]),
            }
        )
    return {"curves": curves, "rows": rows, "best": best}


def plot(result):
    """J − J_best against iterations and against wall time, log scales."""
    fig, axes = figure(1, 2, (4.6, 3.4))
    best = result["best"]
    for name, (losses, times) in result["curves"].items():
        gap = np.maximum(losses - best, 1e-8)
        axes[0, 0].semilogy(gap, label=name)
        axes[0, 1].loglog(times[1:], gap[1:], label=name)
    axes[0, 0].set(
        xlabel="iteration", ylabel="J − J_best (log scale)", title="loss vs iterations"
    )
    axes[0, 1].set(
        xlabel="seconds after compilation (log scale)",
        ylabel="J − J_best (log scale)",
        title="loss vs wall time",
    )
    axes[0, 0].legend(fontsize=7)
    return fig
