"""Vanishing and exploding gradients: per-layer gradient norms against depth.

1. A deep MLP (``--depth`` hidden layers of width 64, softmax cross-entropy,
   a batch of 256 standardized digits) at initialization; the Frobenius norm
   ||dJ/dW_l|| of every layer l, for sigmoid/tanh/ReLU hidden activations
   under zero, small-random N(0, 0.01^2), Glorot-normal and He-normal weights.
   Zero weights give zero gradients in every layer but the last (the hidden
   units are symmetric, [Deep Learning 2020, Parameter initialization]); sigmoid's
   gradient shrinks towards the input by about sigma' <= 1/4 per layer; He keeps ReLU's
   gradient flat, Glorot keeps tanh's flat.
2. [Deep Learning 2020]'s linear example: all activations linear, W = 1.5 I (or 0.5 I),
   b = 0, so y^ = W_L diag(1.5^(L-1)) x: the output and the gradient with
   respect to the input grow (shrink) like 1.5^(L-1) (0.5^(L-1)).

References: [Deep Learning 2020, Gradient problems; Parameter
initialization]; [Balvert, Challenge: Unstable gradients];
[Neacșu & Vasilescu, Exploding and vanishing gradients], LeCun/Glorot/He initialization.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import fnn

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "unstable_gradients"
ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = {
    "zero": "zeros",
    "small random N(0, 0.01^2)": fnn.initializers.normal(0.01),
    "glorot normal": "glorot_normal",
    "he normal": "he_normal",
}


def layer_grad_norms(depth=10, width=64, batch=256):
    d = fnn.datasets.load_digits()
    X = fnn.data.fit_standardize(d.X).transform(d.X)[:batch]
    y = d.y[:batch]
    sizes = [64] + [width] * depth + [10]
    norms, rows = {}, []
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
    """Linear layers W = s I; output and input-gradient vs 1.5^(L-1).

    The example of [Deep Learning 2020, Gradient problems].
    """
    x = jnp.asarray([[1.0, 1.0]])
    rows = []
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
    return {
        "norms": layer_grad_norms(depth=8 if quick else 20),
        "linear": linear_example(),
    }


def plot(result):
    r = result["norms"]
    fig, axes = _common.figure(1, len(ACTIVATIONS) + 1)
    for ax, act in zip(axes[0], ACTIVATIONS, strict=False):
        for init_name in INITS:
            n = r["norms"][(act, init_name)]
            layers = np.arange(1, len(n) + 1)
            ax.semilogy(layers, np.maximum(n, 1e-30), "o-", ms=3, label=init_name)
        ax.set(
            title=f"{act}, depth {r['depth']}", xlabel="layer l", ylabel="||dJ/dW_l||"
        )
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
        title="[Deep Learning 2020] linear network",
        xlabel="depth L",
        ylabel="dy^/dx_1",
    )
    ax.legend()
    return fig


def main(argv=None) -> int:
    a = _common.parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    result = run(a.quick)
    _common.report(result["norms"]["rows"], a.out, NAME, "gradient norms")
    _common.report(result["linear"]["rows"], a.out, "linear", "1.5^L and 0.5^L")
    _common.save_figure(plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
