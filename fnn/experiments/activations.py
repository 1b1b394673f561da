"""Activation functions and their derivatives; sigmoid saturation; dying ReLUs.

1. Every activation of ``fnn.activations`` (the list of [Neacșu & Vasilescu,
   Classic Activation Operators / Modern Activation Operators]: identity, step,
   sigmoid, tanh, Soboleva tanh, ReLU, leaky ReLU, GELU, ELU, SELU, SiLU,
   Gaussian, softplus; LeCun's 1.7159 tanh(2x/3)) with its derivative, and
   the largest gap between fnn's hand-written derivative and ``jax.grad`` of
   the forward function on a grid that avoids the kink at 0.
2. Sigmoid saturation: sigma'(z) = sigma(z)(1 - sigma(z)) <= 1/4, so the factor
   sigma'(z) at z = 0, 2, 5, 10 and the product 0.25^L over L layers.
3. Dying ReLU: a 10-64-64-1 ReLU network on the standardized diabetes data,
   50 full-batch SGD steps; the fraction of hidden units of each layer whose
   pre-activation is <= 0 on every training example (dead: their gradient is
   zero for all inputs, so they never recover), for a small and a large
   learning rate; leaky ReLU for comparison (its "dead" units still get a
   gradient of 0.01).

References: [Neacșu & Vasilescu, Classic Activation Operators], [Neacșu &
Vasilescu, ReLU variants]; [Laurent, Activation functions]; [Deep Learning
2020, Activation functions]; [Balvert, Vanishing gradients] (saturation).
"""

import jax
import jax.numpy as jnp
import numpy as np

import fnn

from .helpers import Table, figure, trajectory

SKIP = {"softmax", "linear", "swish"}  # vector-valued, or aliases


def activation_table(lo=-5.0, hi=5.0, n=1001):
    """Each scalar activation ψ and its hand-written ψ' on a grid of [lo, hi],
    with the largest gap between ψ' and ``jax.grad`` of ψ."""
    z = jnp.linspace(lo, hi, n)
    z = z[jnp.abs(z) > 1e-3]  # away from the kinks at 0
    rows, curves = Table(), {}
    for name in fnn.activations.names():
        if name in SKIP:
            continue
        act = fnn.activations.get(name)
        a, g = act.fn(z), act.grad(z)
        auto = jax.vmap(jax.grad(lambda t, f=act.fn: f(t)))(z)
        curves[name] = (np.asarray(a), np.asarray(g))
        rows.append(
            {
                "activation": name,
                f"min on [{lo:g}, {hi:g}]": float(a.min()),
                f"max on [{lo:g}, {hi:g}]": float(a.max()),
                "max |ψ'|": float(jnp.abs(g).max()),
                "max |ψ' − jax.grad ψ|": float(jnp.abs(g - auto).max()),
            }
        )
    return {"rows": rows, "curves": curves, "z": np.asarray(z)}


def saturation():
    """σ(z), σ'(z) and σ'(z)¹⁰ at z = 0, 2, 5, 10."""
    sig = fnn.activations.get("sigmoid")
    rows = Table()
    for z in (0.0, 2.0, 5.0, 10.0):
        d = float(sig.grad(jnp.asarray(z)))
        rows.append(
            {
                "z": z,
                "sigma(z)": float(sig.fn(jnp.asarray(z))),
                "sigma'(z)": d,
                "sigma'(z)^10 (10 layers)": d**10,
            }
        )
    return {"rows": rows}


def dead_units(params, X, activation):
    """Per hidden layer: fraction of units with Z <= 0 on every example."""
    act = fnn.activations.get(activation)
    A, out = X, []
    for layer in params[:-1]:
        Z = A @ layer["W"] + layer["b"]
        out.append(float(jnp.mean(jnp.all(Z <= 0, axis=0))))
        A = act.fn(Z)
    return out


def dying_relu(steps=50, rates=(0.01, 0.1)):
    """Dead units of a 10-64-64-1 network before and after ``steps`` full-batch
    SGD steps on the standardized diabetes data, for each learning rate."""
    d = fnn.datasets.load_diabetes()
    X = fnn.data.fit_standardize(d.X).transform(d.X)
    y = ((d.y - d.y.mean()) / d.y.std())[:, None]
    rows = Table()
    for activation in ("relu", "leaky_relu"):
        for lr in rates:
            params = fnn.init_params(jax.random.key(0), [10, 64, 64, 1], "he_normal")

            def J(p, a=activation):
                return fnn.loss(p, X, y, activation=a, loss="mse")

            path, losses = trajectory(fnn.optim.sgd(lr), J, params, steps)
            final = jax.tree.map(lambda t: t[-1], path)
            before = dead_units(params, X, activation)
            after = dead_units(final, X, activation)
            rows.append(
                {
                    "activation": activation,
                    "learning rate": lr,
                    "dead layer 1 (init)": before[0],
                    "dead layer 2 (init)": before[1],
                    "dead layer 1 (after)": after[0],
                    "dead layer 2 (after)": after[1],
                    "final MSE": float(losses[-1]),
                }
            )
    return {"rows": rows}


def run(quick: bool = False):
    """The table, the saturation numbers and the dying-ReLU runs."""
    return {
        "table": activation_table(),
        "saturation": saturation(),
        "dying": dying_relu(20 if quick else 50),
    }


def plot(result):
    """One small panel per activation: ψ (solid) and ψ' (dashed) on [−5, 5]."""
    t = result["table"]
    names = list(t["curves"])
    ncols = 5
    nrows = -(-len(names) // ncols)
    fig, axes = figure(nrows, ncols, (2.8, 2.2))
    for ax, name in zip(axes.ravel(), names, strict=False):
        a, g = t["curves"][name]
        ax.plot(t["z"], a, label="ψ(z)")
        ax.plot(t["z"], g, "--", label="ψ'(z)")
        ax.set_title(name, fontsize=9)
        ax.axhline(0, color="k", lw=0.3)
        ax.axvline(0, color="k", lw=0.3)
        ax.set_xticks([-5, 0, 5])
        ax.locator_params(axis="y", nbins=4)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("z", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    return fig
