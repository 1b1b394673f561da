"""The XOR initialization experiment: does the starting point matter?

A 2-4-1 sigmoid network (sigmoid output), binary cross-entropy, full-batch SGD
with learning rate 0.1 and momentum 0.99, 1000 epochs, biases 0, trained from
20 random initializations with weights drawn from U(-10, 10) and from
N(0, std = 1/sqrt(fan_in)). A run *fails* when, after training, not all four
XOR points are classified correctly at threshold 0.5 (output > 0.5 means
class 1). [Neacșu & Vasilescu] reports 6/20 failures for U(-10, 10) and 0/20 for the
scaled normal.

Without ``--quick`` the 20-seed experiment is repeated ``--repeats`` times
(default 10) with fresh seeds, giving the failure rate per 20 with its spread.

References: [Neacșu & Vasilescu, Initialization mechanisms: Does the starting point
matter?].
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

NAME = "xor_init"
SEED_FAILURES = {"uniform(-10, 10)": 6, "normal(0, 1/sqrt(fan_in))": 0}


def fan_in_normal(key, shape, dtype):
    """N(0, std = 1/sqrt(fan_in)) weights (the source's second initialization)."""
    std = 1.0 / np.sqrt(shape[0])
    return jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)


SCHEMES = {
    "uniform(-10, 10)": fnn.initializers.uniform(10.0),
    "normal(0, 1/sqrt(fan_in))": fan_in_normal,
}


def train_xor(key, scheme, epochs=1000, learning_rate=0.1, momentum=0.99):
    """Train the 2-4-1 sigmoid network on XOR from one initialization.

    Returns ``(outputs (4,), losses (epochs,))``: the network's outputs on
    the four points after training and the BCE loss before each update.
    """
    data = fnn.datasets.xor()
    X, y = data.X, data.y.astype(jnp.float32)[:, None]
    params = fnn.init_params(key, [2, 4, 1], scheme)
    opt = fnn.optim.sgd(learning_rate, momentum)

    def step(carry, _):
        p, s = carry
        J, g = fnn.backprop(p, X, y, activation="sigmoid", loss="bce")
        u, s = opt.update(g, s, p)
        return (fnn.optim.apply_updates(p, u), s), J

    (params, _), losses = jax.lax.scan(
        step, (params, opt.init(params)), None, length=epochs
    )
    out = fnn.apply(params, X, activation="sigmoid", output="sigmoid")[:, 0]
    return out, losses


def failures(outputs):
    """Per run: True when some XOR point is misclassified at threshold 0.5."""
    labels = fnn.datasets.xor().y == 1
    return jnp.any((outputs > 0.5) != labels, axis=-1)


def run(quick: bool = False, seeds: int = 20, repeats: int = 10, epochs: int = 1000):
    """Failures out of ``seeds`` for each initialization (and over repeats)."""
    repeats = 1 if quick else repeats
    rows, curves = [], {}
    for i, (name, scheme) in enumerate(SCHEMES.items()):
        train = jax.jit(jax.vmap(lambda k, s=scheme: train_xor(k, s, epochs)))
        fails = []
        for r in range(repeats):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(i), r), seeds)
            out, losses = train(keys)
            fails.append(int(failures(out).sum()))
            if r == 0:
                curves[name] = (np.asarray(losses), np.asarray(failures(out)))
        rows.append(
            {
                "initialization": name,
                "failures (first 20 seeds)": f"{fails[0]}/{seeds}",
                "mean failures per 20": float(np.mean(fails)) * 20 / seeds,
                "std": float(np.std(fails)) * 20 / seeds,
                "repeats": repeats,
                "[Neacșu & Vasilescu]": f"{SEED_FAILURES[name]}/20",
            }
        )
    return {"rows": rows, "curves": curves, "failures": fails}


def plot(result):
    """Loss curves of every run, failed runs in red."""
    curves = result["curves"]
    fig, axes = _common.figure(1, len(curves))
    for ax, (name, (losses, failed)) in zip(axes[0], curves.items(), strict=True):
        for L, f in zip(losses, failed, strict=True):
            ax.plot(L, color="tab:red" if f else "tab:blue", alpha=0.6, lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name}: {int(failed.sum())}/{len(failed)} fail")
        ax.set_xlabel("epoch")
        ax.set_ylabel("BCE")
    return fig


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1000)
    a = p.parse_args(argv)
    result = run(a.quick, a.seeds, a.repeats, a.epochs)
    _common.report(result["rows"], a.out, NAME, "XOR failures [Neacșu & Vasilescu]")
    _common.save_figure(plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
