"""Does the starting point matter? The XOR network from many initializations.

A 2-4-1 network (sigmoid hidden and output units), binary cross-entropy,
full-batch SGD with learning rate 0.1 and momentum 0.99, 1000 epochs, biases 0,
trained from 20 random initializations per scheme: weights drawn from
U(-10, 10) and from N(0, std = 1/sqrt(fan_in)). A run *fails* when, after
training, not all four XOR points are classified correctly at threshold 0.5.
The source reports 6/20 failures for U(-10, 10) and 0/20 for the scaled normal.

Every run of every scheme (and of every repeat) is one member of a single
:func:`fnn.sweep` call: the population is an array axis, compiled once.

References: [Neacșu & Vasilescu, "Initialization mechanisms: Does the starting
point matter?"].
"""

import jax
import jax.numpy as jnp
import numpy as np

import fnn

NAME = "xor_init"
SIZES = [2, 4, 1]
SOURCE_FAILURES = {"uniform(-10, 10)": 6, "normal(0, 1/sqrt(fan_in))": 0}


def fan_in_normal(key, shape, dtype):
    """N(0, std = 1/sqrt(fan_in)) weights (the source's second initialization)."""
    std = 1.0 / np.sqrt(shape[0])
    return jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)


SCHEMES = {
    "uniform(-10, 10)": fnn.initializers.uniform(10.0),
    "normal(0, 1/sqrt(fan_in))": fan_in_normal,
}


def xor_data():
    """The four XOR points ``(4, 2)`` and their float targets ``(4, 1)``."""
    data = fnn.datasets.xor()
    return data.X, data.y.astype(jnp.float32)[:, None]


def population(seeds: int = 20, repeats: int = 1):
    """Initial parameters of every run, stacked along one member axis.

    Member order: scheme, then repeat, then seed; scheme i's repeat r draws its
    ``seeds`` initializations from ``split(fold_in(key(i), r), seeds)``.

    Returns:
      ``(params, labels)``: parameters with leading axis
      ``P = len(SCHEMES) * repeats * seeds`` and, per member, the scheme's name.
    """
    groups, labels = [], []
    for i, (name, scheme) in enumerate(SCHEMES.items()):
        for r in range(repeats):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(i), r), seeds)
            groups.append(
                jax.vmap(lambda k, s=scheme: fnn.init_params(k, SIZES, s))(keys)
            )
            labels += [name] * seeds
    params = jax.tree.map(lambda *a: jnp.concatenate(a), *groups)
    return params, labels


def _sgd(learning_rate, momentum):
    return fnn.optim.sgd(learning_rate, momentum)


def train_population(params, epochs=1000, learning_rate=0.1, momentum=0.99):
    """Train every member on XOR in one :func:`fnn.sweep` call.

    Returns:
      ``(outputs (P, 4), losses (P, epochs))``: each network's outputs on the
      four points after training and its BCE before each update.
    """
    X, y = xor_data()
    P = len(jax.tree.leaves(params)[0])
    result = fnn.sweep(
        params,
        _sgd,  # the same function each call: a second call reuses the program
        X,
        y,
        hyperparams={
            "learning_rate": jnp.full(P, learning_rate, jnp.float32),
            "momentum": jnp.full(P, momentum, jnp.float32),
        },
        key=jax.random.key(0),  # full batch: the shuffle only reorders a sum
        epochs=epochs,
        batch_size=4,
        activation="sigmoid",
        loss="bce",
        grad="manual",
    )
    apply = lambda p: fnn.apply(p, X, activation="sigmoid", output="sigmoid")  # noqa: E731
    outputs = jax.vmap(apply)(result.params)[..., 0]
    return np.asarray(outputs), result.history["train_loss"]


def failures(outputs):
    """Per run: True when some XOR point is misclassified at threshold 0.5."""
    labels = np.asarray(fnn.datasets.xor().y) == 1
    return np.any((np.asarray(outputs) > 0.5) != labels, axis=-1)


def run(quick: bool = False, seeds: int = 20, repeats: int = 10, epochs: int = 1000):
    """Failures out of ``seeds`` for each initialization (and over repeats).

    All ``len(SCHEMES) * repeats * seeds`` runs are one population call.
    """
    repeats = 1 if quick else repeats
    params, labels = population(seeds, repeats)
    outputs, losses = train_population(params, epochs)
    failed = failures(outputs)
    labels = np.asarray(labels)
    rows, curves = [], {}
    for name in SCHEMES:
        mine = failed[labels == name].reshape(repeats, seeds)
        fails = mine.sum(axis=1)
        first = np.flatnonzero(labels == name)[:seeds]
        curves[name] = (losses[first], failed[first])
        rows.append(
            {
                "initialization": name,
                "failures (first 20 seeds)": f"{int(fails[0])}/{seeds}",
                "mean failures per 20": float(np.mean(fails)) * 20 / seeds,
                "std": float(np.std(fails)) * 20 / seeds,
                "repeats": repeats,
                "source": f"{SOURCE_FAILURES[name]}/20",
            }
        )
    return {"rows": rows, "curves": curves, "members": len(labels)}


def plot(result):
    """Loss curves of every run of the first repeat, failed runs in red."""
    import matplotlib.pyplot as plt

    curves = result["curves"]
    fig, axes = plt.subplots(
        1,
        len(curves),
        figsize=(5 * len(curves), 3.6),
        sharey=True,
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (name, (losses, failed)) in zip(axes[0], curves.items(), strict=True):
        for L, f in zip(losses, failed, strict=True):
            ax.plot(L, color="tab:red" if f else "tab:blue", alpha=0.6, lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name}: {int(failed.sum())}/{len(failed)} fail")
        ax.set_xlabel("epoch")
        ax.locator_params(axis="x", nbins=4)
    axes[0, 0].set_ylabel("training BCE (log scale)")
    return fig
