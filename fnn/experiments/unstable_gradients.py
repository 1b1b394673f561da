"""Vanishing and exploding gradients: per-layer gradient norms against depth.

1. A deep MLP (``depth`` hidden layers of width 64, softmax cross-entropy,
   a batch of 256 standardized digits) at initialization; the Frobenius norm
   ||dJ/dW_l|| of every layer l, for sigmoid/tanh/ReLU hidden activations
   under zero, small-random N(0, 0.01^2), Glorot-normal and He-normal weights.
   Zero weights give zero gradients in every layer but the last (the hidden
   units are symmetric, [Deep Learning 2020, Parameter initialization]);
   sigmoid's gradient shrinks
   towards the input by about sigma' <= 1/4 per layer; He keeps ReLU's
   gradient flat, Glorot keeps tanh's flat.
2. The linear example of [Deep Learning 2020, Gradient problems]: all
   activations linear, W = 1.5 I (or 0.5 I), b = 0, so
   y^ = W_L diag(1.5^(L-1)) x: the output and the gradient with respect to the
   input grow (shrink) like 1.5^(L-1) (0.5^(L-1)).

References: [Deep Learning 2020, Gradient problems], [Deep Learning 2020,
Parameter initialization]; [Balvert, Vanishing gradients], [Balvert, Exploding
gradients]; [Neacșu & Vasilescu, Exploding and vanishing gradients] and its
LeCun, Glorot and He initializations.
"""

import jax
import jax.numpy as jnp
import numpy as np

import fnn

from .helpers import Table, figure

ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = {
    "zero": "zeros",
    "small random N(0, 0.01^2)": fnn.initializers.normal(0.01),
    "glorot normal": "glorot_normal",
    "he normal": "he_normal",
}


def layer_grad_norms(depth=10, width=64, batch=256):
    """‖∂J/∂W_l‖ for every layer of a ``depth``-hidden-layer MLP at
    initialization, by ``fnn.backprop``, for each activation and initializer."""
    d = fnn.datasets.load_digits()
    X = fnn.data.fit_standardize(d.X).transform(d.X)[:batch]
    y = d.y[:batch]
    sizes = [64] + [width] * depth + [10]
    norms, rows = {}, Table()
    for act in ACTIVATIONS:
        for init_name, scheme in INITS.items():
            params = fnn.init_params(jax.random.key(0), sizes, scheme)
            _, grads = fnn.backprop(params, X, y, activation=act, loss="cross_entropy")
            n = np.asarray([float(jnp.linalg.norm(g["W"])) for g in grads])
            norms[(act, init_name)] = n
            rows.append(
                {
                    "activation": act,
                    "init": init_name,
                    "||dW_1||": n[0],
                    "||dW_L||": n[-1],
                    "||dW_1|| / ||dW_L||": n[0] / n[-1] if n[-1] > 0 else 0.0,
                }
            )
    return {"norms": norms, "rows": rows, "depth": depth}


def linear_example(depths=(1, 2, 5, 10, 20, 30)):
    """Linear layers W = s I: the output and the input gradient against
    s^(L-1) ([Deep Learning 2020, Gradient problems])."""
    x = jnp.asarray([[1.0, 1.0]])
    rows = Table()
    for scale in (1.5, 0.5):
        for L in depths:
            params = [
                {"W": scale * jnp.eye(2), "b": jnp.zeros(2)} for _ in range(L - 1)
            ] + [{"W": jnp.ones((2, 1)), "b": jnp.zeros(1)}]
            out = fnn.apply(params, x, activation="identity")[0, 0]
            gx = jax.grad(
                lambda v, p=params: fnn.apply(p, v, activation="identity")[0, 0]
            )(x)
            rows.append(
                {
                    "W": f"{scale} I",
                    "L": L,
                    "y^ (x = (1, 1))": float(out),
                    "2 * scale^(L-1)": 2 * scale ** (L - 1),
                    "dy^/dx_1": float(gx[0, 0]),
                    "scale^(L-1)": scale ** (L - 1),
                }
            )
    return {"rows": rows}


def run(quick: bool = False):
    """The gradient norms (depth 8 when ``quick``, else 20) and the linear example."""
    return {
        "norms": layer_grad_norms(depth=8 if quick else 20),
        "linear": linear_example(),
    }


def plot(result):
    """‖∂J/∂W_l‖ against the layer, one panel per activation (log scale; an
    exactly zero gradient, as with zero weights, is left out), and the linear
    example's input gradient against depth."""
    r = result["norms"]
    fig, axes = figure(1, len(ACTIVATIONS) + 1, (3.8, 3.2))
    for ax, act in zip(axes[0], ACTIVATIONS, strict=False):
        for init_name in INITS:
            n = np.asarray(r["norms"][(act, init_name)], float)
            layers = np.arange(1, len(n) + 1)
            shown = np.where(n > 0, n, np.nan)
            ax.semilogy(layers, shown, "o-", ms=3, label=init_name)
        ax.set(
            title=f"{act}, depth {r['depth']}",
            xlabel="layer l",
            ylabel="‖∂J/∂W_l‖ (log scale)",
        )
        ax.locator_params(axis="x", nbins=6, integer=True)
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, -1]
    for scale in (1.5, 0.5):
        rows = [x for x in result["linear"]["rows"] if x["W"] == f"{scale} I"]
        ax.semilogy(
            [x["L"] for x in rows],
            [x["dy^/dx_1"] for x in rows],
            "o-",
            label=f"W = {scale} I",
        )
    ax.set(
        title="linear network, W = s·I",
        xlabel="depth L",
        ylabel="∂ŷ/∂x₁ (log scale)",
    )
    ax.legend()
    return fig
