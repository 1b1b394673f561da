"""Three-way gradient report: manual backprop, jax.grad and finite differences.

For every hidden activation x loss x depth of the grid, a random MLP and batch
are drawn and ``fnn.compare_gradients`` computes, in float64, seed 000's
relative difference ||a - b|| / (||a|| + ||b||) between the three gradients.
A row fails when manual vs autodiff exceeds ``--tol-auto`` (default 1e-9: two
exact methods) or manual vs finite differences exceeds ``--tol-fd`` (default
1e-5; seed 000 expects about eps = 1e-7 for a correct backward and flags
about 1e-3). The exit status is 1 if any row fails.

``--plant-bug`` replaces the hidden activation's derivative by a wrong one
(tanh' = 1 - tanh instead of 1 - tanh^2) in the manual backward only, to show
what a bug looks like: the manual gradient then disagrees with both others by
1e-2 or more, and the exit status is 1.

relu and leaky_relu have a kink at 0: a finite-difference step that crosses
it shows as a larger manual-vs-numerical difference, not as a bug (with
Gaussian inputs and eps = 1e-7 this is rare).

References: seed 000, section 4 "Gradient Checking".
"""

import sys

import jax
import jax.numpy as jnp

import fnn

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "gradcheck"
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu")
LOSSES = ("mse", "bce", "cross_entropy", "huber")
DEPTHS = (1, 2, 3)


def buggy_tanh():
    """tanh whose manual derivative is wrong: 1 - tanh(z) (should be 1 - tanh^2)."""
    good = fnn.activations.get("tanh")

    def grad(Z):
        return 1.0 - jnp.tanh(Z)

    return fnn.activations.Activation(
        "tanh(buggy)", good.fn, grad, lambda Z, dA: dA * grad(Z)
    )


def problem(key, activation, loss, depth, m=8, n_in=5, width=6, n_out=3):
    """A random MLP with ``depth`` hidden layers and a batch for ``loss``."""
    kp, kx, ky = jax.random.split(key, 3)
    sizes = [n_in] + [width] * depth + [n_out]
    params = fnn.init_params(kp, sizes, "glorot_normal", dtype=jnp.float64)
    X = jax.random.normal(kx, (m, n_in), jnp.float64)
    if loss == "cross_entropy":
        y = jax.random.randint(ky, (m,), 0, n_out)
    elif loss == "bce":
        y = jax.random.bernoulli(ky, 0.5, (m, n_out)).astype(jnp.float64)
    else:
        y = jax.random.normal(ky, (m, n_out), jnp.float64)
    return params, X, y


def run(
    quick: bool = False,
    plant_bug: bool = False,
    tol_auto: float = 1e-9,
    tol_fd: float = 1e-5,
):
    activations = ("sigmoid", "tanh", "relu") if quick else ACTIVATIONS
    losses = ("mse", "cross_entropy") if quick else LOSSES
    depths = (2,) if quick else DEPTHS
    rows = []
    with jax.enable_x64(True):
        for i, act in enumerate(activations):
            for j, loss in enumerate(losses):
                for depth in depths:
                    key = jax.random.key(100 * i + 10 * j + depth)
                    params, X, y = problem(key, act, loss, depth)
                    a = buggy_tanh() if plant_bug and act == "tanh" else act
                    c = fnn.compare_gradients(params, X, y, activation=a, loss=loss)
                    ok = c.manual_vs_autodiff <= tol_auto and (
                        c.manual_vs_numerical <= tol_fd
                    )
                    rows.append(
                        {
                            "activation": act + (" (bug)" if a is not act else ""),
                            "loss": loss,
                            "depth": depth,
                            "manual vs autodiff": float(c.manual_vs_autodiff),
                            "manual vs numerical": float(c.manual_vs_numerical),
                            "autodiff vs numerical": float(c.autodiff_vs_numerical),
                            "ok": bool(ok),
                        }
                    )
    return {"rows": rows, "ok": all(r["ok"] for r in rows)}


def plot(result):
    import numpy as np

    rows = result["rows"]
    fig, axes = _common.figure(1, 1, (8, 3.5))
    ax = axes[0, 0]
    pos = np.arange(len(rows))
    for k, mk in (
        ("manual vs autodiff", "o"),
        ("manual vs numerical", "s"),
        ("autodiff vs numerical", "^"),
    ):
        vals = np.maximum([r[k] for r in rows], 1e-18)
        ax.semilogy(pos, vals, mk, label=k, alpha=0.7)
    ax.axhline(1e-7, color="g", ls=":", label="seed 000: ~1e-7 fine")
    ax.axhline(1e-3, color="r", ls=":", label="seed 000: ~1e-3 bug")
    ax.set_xticks(
        pos, [f"{r['activation'][:4]}/{r['loss'][:3]}/{r['depth']}" for r in rows]
    )
    ax.tick_params(axis="x", rotation=90, labelsize=6)
    ax.set_ylabel("relative difference")
    ax.legend(fontsize=7)
    return fig


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--plant-bug", action="store_true", help="wrong tanh derivative")
    p.add_argument("--tol-auto", type=float, default=1e-9)
    p.add_argument("--tol-fd", type=float, default=1e-5)
    p.add_argument("--no-figure", action="store_true")
    a = p.parse_args(argv)
    result = run(a.quick, a.plant_bug, a.tol_auto, a.tol_fd)
    _common.report(result["rows"], a.out, NAME, "gradient check")
    if not a.no_figure:
        _common.save_figure(plot(result), a.out, NAME)
    bad = [r for r in result["rows"] if not r["ok"]]
    print(f"\n{len(result['rows']) - len(bad)}/{len(result['rows'])} rows agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
