"""Gradient descent, momentum, Nesterov and the adaptive methods on a regression.

Problem ([Neacșu & Vasilescu, "Gradient descent algorithms"]): N = 30 points
y = 3x + 2 + U(-0.1, 0.1) (x ~ U(0, 1), ``fnn.datasets.line``), model
y^ = theta_0 + theta_1 x, loss J(theta) = sum_i (y_i - y^_i)^2 (the SUM of the
squared errors: with the 1/N mean, alpha = 0.005 is too slow to reach the
source's numbers in 1000 steps), theta_0 = (10, 5), alpha = 0.005, 1000
full-batch iterations. The source's theta_1000: SGD (1.9882, 2.9975), momentum
0.6 (1.9837, 2.9933), Nesterov 0.8 (1.9738, 2.9914). All three are the least-
squares fit of their own data up to its noise; ours differ in the third decimal
because the 30 noisy points differ.

Also: AdaGrad, RMSProp and Adam on the same problem and on a small network
(two moons, 2-16-1 tanh, BCE); learning rates too small and too large
(divergence above 2/lambda_max of the Hessian 2 X^T X), the four rates trained
as one :func:`fnn.sweep` population; the learning-rate decay laws; and the
number of iterations gradient descent needs with raw versus standardized
inputs (x ~ U(0, 10)).

References: [Neacșu & Vasilescu, "Gradient descent algorithms"] (SGD
minimization, SGD with momentum, Nesterov, ADAGRAD, RMSProp, ADAM,
Standardization); [Deep Learning 2020, 6] (learning rate decay, normalizing
inputs).
"""

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import optim, schedules
from fnn.experiments.helpers import figure, trajectory

NAME = "optimizers"
THETA0 = (10.0, 5.0)
ALPHA = 0.005
SOURCE_THETA = {
    "sgd": (1.9882, 2.9975),
    "momentum 0.6": (1.9837, 2.9933),
    "nesterov 0.8": (1.9738, 2.9914),
}


def regression_data(key=None, x_range=(0.0, 1.0)):
    """Design matrix ``(30, 2)`` with a ones column, targets ``(30,)``."""
    d = fnn.datasets.line(jax.random.key(0) if key is None else key, x_range=x_range)
    X = jnp.concatenate([jnp.ones_like(d.X), d.X], axis=1)
    return X, d.y


def sse(X, y):
    """``theta -> sum_i (y_i - X_i theta)^2`` (the source's l2 loss, summed)."""
    return lambda theta: jnp.sum((y - X @ theta) ** 2)


def source_optimizers():
    return {
        "sgd": optim.sgd(ALPHA),
        "momentum 0.6": optim.sgd(ALPHA, 0.6),
        "nesterov 0.8": optim.sgd(ALPHA, 0.8, nesterov=True),
    }


def adaptive_optimizers():
    return {
        "adagrad": optim.adagrad(1.0),
        "rmsprop": optim.rmsprop(0.05),
        "adam": optim.adam(0.2),
    }


def regression(steps=1000):
    """Paths of the source's three methods and the adaptive ones; theta table."""
    X, y = regression_data()
    J = sse(X, y)
    lstsq = np.linalg.lstsq(np.asarray(X, np.float64), np.asarray(y, np.float64))
    theta_star = lstsq[0]
    theta0 = jnp.asarray(THETA0, jnp.float32)
    paths, rows = {}, []
    for name, opt in {**source_optimizers(), **adaptive_optimizers()}.items():
        path, losses = trajectory(opt, J, theta0, steps)
        path, losses = np.asarray(path), np.asarray(losses)
        paths[name] = (path, losses)
        source = SOURCE_THETA.get(name, (float("nan"), float("nan")))
        rows.append(
            {
                "method": name,
                "theta_0 (bias)": path[-1, 0],
                "theta_1 (slope)": path[-1, 1],
                "source theta_0": source[0],
                "source theta_1": source[1],
                "|theta - lstsq|": float(np.linalg.norm(path[-1] - theta_star)),
                "final loss": losses[-1],
            }
        )
    rows.append(
        {
            "method": "least squares",
            "theta_0 (bias)": theta_star[0],
            "theta_1 (slope)": theta_star[1],
            "source theta_0": float("nan"),
            "source theta_1": float("nan"),
            "|theta - lstsq|": 0.0,
            "final loss": float(J(jnp.asarray(theta_star, jnp.float32))),
        }
    )
    return {"X": X, "y": y, "paths": paths, "rows": rows, "lstsq": theta_star}


FRACTIONS = (0.02, 0.5, 0.95, 1.05)


def learning_rates(steps=200, fractions=FRACTIONS):
    """Plain SGD at rates around the stability limit 2 / lambda_max, one
    :func:`fnn.sweep` call for all rates.

    The model theta_0 + theta_1 x is the MLP ``[1, 1]`` (``b`` = theta_0,
    ``W`` = theta_1) with the mean squared error: J_sum = N J_mean, so SGD on
    the sum with rate alpha is SGD on the mean with rate N alpha, the
    hyperparameter each member gets.

    Returns:
      ``{"rows", "curves", "limit"}``: per rate the final summed loss and
      whether it diverged; ``curves`` the summed loss before each step and
      after the last (``steps + 1`` values, NaN after a non-finite step).
    """
    X, y = regression_data()
    N = X.shape[0]
    H = 2 * np.asarray(X, np.float64).T @ np.asarray(X, np.float64)
    lam_max = float(np.linalg.eigvalsh(H)[-1])
    limit = 2.0 / lam_max
    P = len(fractions)
    theta0 = [{"W": jnp.full((1, 1), THETA0[1]), "b": jnp.full((1,), THETA0[0])}]
    params = jax.tree.map(lambda a: jnp.stack([a] * P), theta0)
    rates = np.asarray(fractions) * limit
    with jax.debug_nans(False):  # a diverging member may overflow
        result = fnn.sweep(
            params,
            optim.sgd,
            X[:, 1:],
            y[:, None],
            key=jax.random.key(0),  # full batch: the shuffle only reorders a sum
            hyperparams={"learning_rate": jnp.asarray(N * rates, jnp.float32)},
            epochs=steps,
            batch_size=N,
            activation="identity",
            loss="mse",
        )
        final = jax.vmap(
            lambda p: sse(X, y)(jnp.concatenate([p[0]["b"], p[0]["W"][0]]))
        )(result.last_params)
    final = np.where(result.nonfinite_epoch >= 0, np.nan, np.asarray(final))
    rows, curves = [], {}
    for i, frac in enumerate(fractions):
        losses = np.append(N * result.history["train_loss"][i], final[i])
        curves[f"{frac:g} x 2/lambda_max"] = losses
        rows.append(
            {
                "learning rate": float(rates[i]),
                "fraction of 2/lambda_max": frac,
                "final loss": float(final[i]),
                "diverged": bool(not np.isfinite(final[i]) or final[i] > losses[0]),
            }
        )
    return {"rows": rows, "curves": curves, "limit": limit}


def normalization(tol=1e-3, max_steps=20000):
    """Iterations of gradient descent to reach ``|theta - theta*| < tol``.

    Raw ``x ~ U(0, 10)`` versus standardized ``x`` (``fnn.data.fit_standardize``),
    each at the step ``1 / lambda_max`` of its own Hessian; the count follows
    the condition number ``lambda_max / lambda_min``.
    """
    X, y = regression_data(x_range=(0.0, 10.0))
    scaler = fnn.data.fit_standardize(X[:, 1:])
    Xs = jnp.concatenate([X[:, :1], scaler.transform(X[:, 1:])], axis=1)
    rows = []
    for name, A in (("raw x in [0, 10)", X), ("standardized x", Xs)):
        A64 = np.asarray(A, np.float64)
        H = 2 * A64.T @ A64
        eig = np.linalg.eigvalsh(H)
        star = np.linalg.lstsq(A64, np.asarray(y, np.float64))[0]
        path, _ = trajectory(
            optim.sgd(1.0 / eig[-1]),
            sse(A, y),
            jnp.asarray(THETA0, jnp.float32),
            max_steps,
        )
        err = np.linalg.norm(np.asarray(path, np.float64) - star, axis=1)
        hit = np.nonzero(err < tol * max(1.0, np.linalg.norm(star)))[0]
        rows.append(
            {
                "inputs": name,
                "condition number": float(eig[-1] / eig[0]),
                "iterations to converge": int(hit[0]) if hit.size else -1,
            }
        )
    return {"rows": rows}


def small_network(epochs=300):
    """Full-batch training of a 2-16-1 tanh network on two moons (BCE)."""
    d = fnn.datasets.two_moons(jax.random.key(1), n=200)
    y = d.y.astype(jnp.float32)[:, None]
    params = fnn.init_params(jax.random.key(2), [2, 16, 1], "glorot_normal")

    def J(p):
        return fnn.loss(p, d.X, y, activation="tanh", loss="bce")

    opts = {
        "sgd": optim.sgd(0.5),
        "momentum 0.9": optim.sgd(0.5, 0.9),
        "adagrad": optim.adagrad(0.1),
        "rmsprop": optim.rmsprop(0.01),
        "adam": optim.adam(0.01),
    }
    curves, rows = {}, []
    for name, opt in opts.items():
        _, losses = trajectory(opt, J, params, epochs)
        curves[name] = np.asarray(losses)
        rows.append({"optimizer": name, "final BCE": float(losses[-1])})
    return {"curves": curves, "rows": rows}


def decay_laws(epochs=100):
    """Learning rate against epoch for the decay laws by epoch."""
    laws = {
        "1/(1 + k e), k=0.1": schedules.inverse_time_decay(0.1, 0.1),
        "0.95^e": schedules.epoch_exponential_decay(0.1, 0.95),
        "k/sqrt(e+1), k=1": schedules.inverse_sqrt_decay(0.1, 1.0),
        "halve every 25": schedules.piecewise_constant_schedule(
            0.1, {25: 0.5, 50: 0.5, 75: 0.5}
        ),
        "cosine": schedules.cosine_decay_schedule(0.1, epochs),
    }
    t = jnp.arange(epochs)
    return {name: np.asarray(jax.vmap(f)(t)) for name, f in laws.items()}


def run(quick: bool = False):
    return {
        "regression": regression(1000),
        "learning_rates": learning_rates(60 if quick else 200),
        "normalization": normalization(max_steps=5000 if quick else 20000),
        "network": small_network(60 if quick else 400),
        "decay": decay_laws(100),
    }


def plot_paths(reg, names=("sgd", "momentum 0.6", "nesterov 0.8"), ax=None):
    """The optimization paths on the contours of J (the source's figures)."""
    if ax is None:
        fig, axes = figure(1, 1, (5.5, 4.5))
        ax = axes[0, 0]
    J = sse(reg["X"], reg["y"])
    a = np.linspace(-1, 11, 120)
    b = np.linspace(-1, 7, 120)
    A, B = np.meshgrid(a, b)
    grid = jnp.asarray(np.stack([A.ravel(), B.ravel()], 1), jnp.float32)
    Z = np.asarray(jax.vmap(J)(grid)).reshape(A.shape)
    levels = np.geomspace(max(float(Z.min()), 0.05), float(Z.max()), 20)
    ax.contour(A, B, Z, levels=levels, colors="0.65", linewidths=0.6)
    for name in names:
        path = reg["paths"][name][0]
        ax.plot(path[:, 0], path[:, 1], ".-", ms=2, lw=1, label=name)
    ax.plot(*reg["lstsq"], "k*", ms=10, label="least squares")
    ax.set_xlabel("theta_0 (bias)")
    ax.set_ylabel("theta_1 (slope)")
    ax.legend(fontsize=8)
    return ax.figure


def plot(result):
    fig, axes = figure(2, 3)
    reg = result["regression"]
    plot_paths(reg, ax=axes[0, 0])
    axes[0, 0].set_title("paths, alpha = 0.005")
    ax = axes[0, 1]
    for name, (_, losses) in reg["paths"].items():
        ax.semilogy(losses, label=name)
    ax.set(title="regression: J(theta_t)", xlabel="iteration")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    for name, losses in result["learning_rates"]["curves"].items():
        ax.semilogy(np.clip(losses, 1e-3, 1e6), label=name)
    ax.set(title="SGD: learning rate", xlabel="iteration")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    for name, losses in result["network"]["curves"].items():
        ax.semilogy(losses, label=name)
    ax.set(title="two moons, 2-16-1 tanh", xlabel="epoch", ylabel="BCE")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for name, lr in result["decay"].items():
        ax.plot(lr, label=name)
    ax.set(title="learning-rate decay", xlabel="epoch", ylabel="rate")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    rows = result["normalization"]["rows"]
    ax.bar([r["inputs"] for r in rows], [r["iterations to converge"] for r in rows])
    ax.set(title="GD iterations to converge", yscale="log")
    return fig
