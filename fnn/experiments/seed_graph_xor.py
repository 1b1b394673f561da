"""From neuron to MLP: the computational graph, XOR, universal approximation.

1. The computational graph f(x, y, z) = (x + y)·z at (−2, 5, −4): forward
   q = 3, f = −12; backward ∇f = (−4, −4, 3), with :class:`fnn.graph.Node`
   and checked against ``jax.grad``.
2. XOR: the least-squares linear fit of J(θ) = ¼ Σ (f*(x) − ⟨w, x⟩ − b)² is
   θ* = ((0, 0), ½) (f = ½ everywhere, J = ¼), found here by least squares and
   by gradient descent; the two-unit ReLU network W = [[1, 1], [1, 1]],
   c = (0, −1), w = (1, −2), b = 0 reproduces XOR exactly (J = 0).
3. Universal approximation: one tanh hidden layer of growing width fitted
   (Adam, MSE) to f(x) = sin(3x) + x/2 on [−2, 2]; the error falls as the
   width grows.

References: [Deep Learning 2020, Computational graph]; [Laurent, Multilayer
perceptron: a simple example] and [Laurent, Universal approximation theorem];
[Neacșu & Vasilescu, Universal Approximators].
"""

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn.graph import Node

from .helpers import Table, figure, trajectory

GRADIENT = (-4.0, -4.0, 3.0)  # ∇f at (−2, 5, −4)

XOR_RELU_PARAMS = [
    {"W": jnp.asarray([[1.0, 1.0], [1.0, 1.0]]), "b": jnp.asarray([0.0, -1.0])},
    {"W": jnp.asarray([[1.0], [-2.0]]), "b": jnp.asarray([0.0])},
]


def graph(x=-2.0, y=5.0, z=-4.0):
    """Forward and backward pass of f = (x + y) z; rows for the table."""
    nx, ny, nz = Node(x), Node(y), Node(z)
    q = nx + ny
    f = q * nz
    f.backward()
    auto = jax.grad(lambda v: (v[0] + v[1]) * v[2])(jnp.asarray([x, y, z]))
    rows = Table(
        [
            {"node": "x", "value": nx.value, "df/dnode": nx.grad, "jax.grad": auto[0]},
            {"node": "y", "value": ny.value, "df/dnode": ny.grad, "jax.grad": auto[1]},
            {"node": "z", "value": nz.value, "df/dnode": nz.grad, "jax.grad": auto[2]},
            {"node": "q = x + y", "value": q.value, "df/dnode": q.grad, "jax.grad": ""},
            {"node": "f = q z", "value": f.value, "df/dnode": f.grad, "jax.grad": ""},
        ]
    )
    return {"rows": rows, "gradient": (nx.grad, ny.grad, nz.grad), "f": f.value}


def xor(steps=2000):
    """The best linear fit of XOR (least squares and gradient descent) and the
    exact two-unit ReLU network."""
    d = fnn.datasets.xor()
    X, t = d.X, d.y.astype(jnp.float32)
    A = np.concatenate([np.asarray(X, np.float64), np.ones((4, 1))], axis=1)
    w_ls = np.linalg.lstsq(A, np.asarray(t, np.float64))[0]

    def J(theta):
        return jnp.sum((t - X @ theta["w"] - theta["b"]) ** 2) / 4

    theta0 = {"w": jnp.asarray([0.7, -0.3]), "b": jnp.asarray(0.1)}
    path, _ = trajectory(fnn.optim.sgd(0.5), J, theta0, steps)
    w_gd, b_gd = np.asarray(path["w"][-1]), float(path["b"][-1])
    linear_out = np.asarray(X @ jnp.asarray(w_gd, jnp.float32) + b_gd)
    relu_out = np.asarray(fnn.apply(XOR_RELU_PARAMS, X, activation="relu"))[:, 0]
    rows = Table(
        {
            "x": f"({int(X[i, 0])}, {int(X[i, 1])})",
            "f*(x)": int(d.y[i]),
            "linear theta*": float(linear_out[i]),
            "ReLU network": float(relu_out[i]),
        }
        for i in range(4)
    )
    fits = {
        "least squares (w1, w2, b)": tuple(float(v) for v in w_ls),
        "gradient descent (w1, w2, b)": (float(w_gd[0]), float(w_gd[1]), b_gd),
        "J linear": float(J({"w": path["w"][-1], "b": path["b"][-1]})),
        "J relu": float(np.mean((relu_out - np.asarray(t)) ** 2)),
    }
    return {"rows": rows, "fits": fits, "relu_out": relu_out, "linear": linear_out}


def target(x):
    """The smooth 1-D function to approximate: sin(3x) + x/2."""
    return jnp.sin(3 * x) + 0.5 * x


def universal(widths=(1, 2, 4, 8, 16, 32), steps=3000, n=200):
    """Fit one tanh hidden layer of each width by full-batch Adam on the MSE;
    max and RMS error on a fine grid of [−2, 2]."""
    x = jnp.linspace(-2.0, 2.0, n)[:, None]
    y = target(x)
    grid = jnp.linspace(-2.0, 2.0, 1000)[:, None]
    rows, fits, curves = Table(), {}, {}
    for i, width in enumerate(widths):
        kw, kb = jax.random.split(jax.random.key(i))
        # Hidden units with slopes U(-3, 3) and centres spread over the interval
        # (zero biases would centre every unit at x = 0).
        params = fnn.init_params(kw, [1, width, 1], fnn.initializers.uniform(3.0))
        params[0]["b"] = jax.random.uniform(kb, (width,), minval=-3.0, maxval=3.0)

        def J(p):
            return fnn.loss(p, x, y, activation="tanh", loss="mse")

        lr = fnn.schedules.cosine_decay_schedule(0.03, steps, alpha=0.01)
        path, losses = trajectory(fnn.optim.adam(lr), J, params, steps)
        p = jax.tree.map(lambda a: a[-1], path)
        pred = fnn.apply(p, grid, activation="tanh")
        err = np.abs(np.asarray(pred - target(grid)))
        fits[width] = np.asarray(pred)[:, 0]
        curves[width] = np.asarray(losses)
        rows.append(
            {
                "hidden width": width,
                "parameters": 3 * width + 1,
                "max |error|": float(err.max()),
                "RMS error": float(np.sqrt(np.mean(err**2))),
            }
        )
    grid = np.asarray(grid)[:, 0]
    return {"rows": rows, "fits": fits, "losses": curves, "grid": grid}


def run(quick: bool = False):
    """All three parts; ``quick`` uses fewer widths and steps."""
    widths = (1, 4, 16) if quick else (1, 2, 4, 8, 16, 32)
    return {
        "graph": graph(),
        "xor": xor(500 if quick else 2000),
        "universal": universal(widths, 800 if quick else 4000),
    }


def plot_xor(xr, ax):
    """Bars: the best linear fit and the ReLU network on the four XOR points."""
    pos = np.arange(4)
    ax.bar(pos - 0.2, xr["linear"], 0.4, label="linear θ*")
    ax.bar(pos + 0.2, xr["relu_out"], 0.4, label="ReLU 2-2-1")
    ax.plot(pos, [0, 1, 1, 0], "k_", ms=30, mew=2, label="f*(x)")
    ax.set_xticks(pos, [r["x"] for r in xr["rows"]])
    ax.set(title="XOR", xlabel="input x", ylabel="output", ylim=(-0.1, 1.45))
    ax.legend(fontsize=7, loc="upper center", ncol=3, handlelength=1.2)


def plot_universal(ux, axes):
    """Three panels: the fits, the training loss, the error against width."""
    from matplotlib.ticker import NullLocator

    ax = axes[0]
    ax.plot(ux["grid"], np.asarray(target(jnp.asarray(ux["grid"]))), "k", lw=3,
            label="target")
    for w, pred in ux["fits"].items():
        ax.plot(ux["grid"], pred, label=f"width {w}")
    ax.set(title="one hidden tanh layer", xlabel="x", ylabel="f(x)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for w, losses in ux["losses"].items():
        ax.semilogy(losses, label=f"width {w}")
    ax.set(title="training loss", xlabel="Adam step", ylabel="MSE (log scale)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ws = [r["hidden width"] for r in ux["rows"]]
    ax.loglog(ws, [r["max |error|"] for r in ux["rows"]], "o-", label="max")
    ax.loglog(ws, [r["RMS error"] for r in ux["rows"]], "s-", label="RMS")
    ax.set_xticks(ws, [str(w) for w in ws])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(title="error against width", xlabel="hidden width", ylabel="|error|")
    ax.legend()


def plot(result):
    """The XOR bars and the three universal-approximation panels."""
    fig, axes = figure(1, 4, (4.0, 3.3))
    plot_xor(result["xor"], axes[0, 0])
    plot_universal(result["universal"], axes[0, 1:])
    return fig
