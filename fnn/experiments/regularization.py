"""Regularization and the bias/variance trade-off on the bundled digits.

The 8x8 digits are split 60/20/20 into train/dev/test (stratified), standardized
on the training split, and the training split is cut to ``train_size``
examples (default 300) so that a 64-256-256-10 ReLU network can overfit it.
Four runs with Adam (learning rate 1e-3, batch 32) and ``fnn.fit``:

* none: no regularization (high variance: J_train -> 0, J_dev rises);
* L2: J + l2 sum W^2 with l2 = 1e-3;
* dropout: 0.2 on the input, 0.5 on hidden layers ([Laurent, Dropout]);
* early stopping: stop after ``patience`` epochs without a lower dev loss and
  keep the best epoch's parameters.

Reported: train/dev curves per epoch and a table of train/dev/test accuracy.

References: [Deep Learning 2020, Bias/variance], [Deep Learning 2020, L1 - L2
regularization], [Deep Learning 2020, Dropout regularization], [Deep Learning
2020, Early stopping]; [Laurent, Penalized empirical risk], [Laurent,
Dropout].
"""

import jax

import fnn

from .helpers import Table, figure


def data(train_size=300):
    """``(train, dev, test)`` pairs ``(X, y)``: the digits split 60/20/20
    (stratified), standardized on the training split, whose first
    ``train_size`` examples are kept."""
    d = fnn.datasets.load_digits()
    s = fnn.data.train_dev_test_split(
        jax.random.key(0), d.X, d.y, (0.6, 0.2, 0.2), stratify=True
    )
    scaler = fnn.data.fit_standardize(s.X_train)
    return (
        (scaler.transform(s.X_train[:train_size]), s.y_train[:train_size]),
        (scaler.transform(s.X_dev), s.y_dev),
        (scaler.transform(s.X_test), s.y_test),
    )


CONFIGS = {
    "none": {},
    "L2 (1e-3)": {"l2": 1e-3},
    "dropout (0.2 / 0.5)": {"drop_rate": fnn.dropout_rates(3)},
    "early stopping": {"patience": None},  # filled in by run()
}


def run(quick: bool = False, epochs=None, train_size=300, patience=15, width=256):
    """Train the network once per entry of ``CONFIGS`` with ``fnn.fit``.

    Returns:
      ``{"rows": one row of accuracies per configuration, "histories": the
      ``fit`` histories}``.
    """
    epochs = epochs or (8 if quick else 150)
    train, dev, test = data(train_size)
    params = fnn.init_params(jax.random.key(1), [64, width, width, 10], "he_normal")
    rows, histories = Table(), {}
    for name, cfg in CONFIGS.items():
        cfg = dict(cfg)
        if "patience" in cfg:
            cfg["patience"] = patience
        res = fnn.fit(
            params,
            fnn.optim.adam(1e-3),
            *train,
            key=jax.random.key(2),
            epochs=epochs,
            batch_size=32,
            dev=dev,
            activation="relu",
            loss="cross_entropy",
            progress=False,
            **cfg,
        )
        histories[name] = res.history
        row = {"regularization": name, "epochs run": len(res.history["epoch"])}
        for split, (X, y) in (("train", train), ("dev", dev), ("test", test)):
            ev = fnn.evaluate(res.params, X, y, activation="relu")
            row[f"{split} accuracy"] = ev["accuracy"]
        row["dev loss (final)"] = float(res.history["dev_loss"][-1])
        rows.append(row)
    return {"rows": rows, "histories": histories}


def plot(result):
    """Train and dev loss per epoch, one panel per configuration, shared log
    scale; the dashed line marks the best dev epoch."""
    import numpy as np

    h = result["histories"]
    fig, axes = figure(1, len(h), (3.4, 3.0))
    for ax, (name, hist) in zip(axes[0], h.items(), strict=True):
        ax.plot(hist["epoch"], hist["train_loss"], label="J_train")
        ax.plot(hist["epoch"], hist["dev_loss"], label="J_dev")
        ax.axvline(hist["epoch"][int(np.argmin(hist["dev_loss"]))], color="0.6",
                   ls="--", lw=1)
        ax.set(title=name, xlabel="epoch", yscale="log")
        ax.locator_params(axis="x", nbins=5, integer=True)
    axes[0, 0].set_ylabel("cross-entropy (log scale)")
    axes[0, 0].legend()
    ys = [a.get_ylim() for a in axes[0]]
    for ax in axes[0]:
        ax.set_ylim(min(y[0] for y in ys), max(y[1] for y in ys))
    return fig
