"""Regularization and the bias/variance trade-off on the bundled digits.

The 8x8 digits are split 60/20/20 into train/dev/test (stratified), standardized
on the training split, and the training split is cut to ``--train-size``
examples (default 300) so that a 64-256-256-10 ReLU network can overfit it.
Four runs with Adam (learning rate 1e-3, batch 32) and ``fnn.fit``:

* none: no regularization (high variance: J_train -> 0, J_dev rises);
* L2: J + l2 sum W^2 with l2 = 1e-3;
* dropout: [Laurent]'s rates, 0.2 on the input, 0.5 on hidden layers;
* early stopping: stop after ``--patience`` epochs without a lower dev loss and
  keep the best epoch's parameters.

Reported: train/dev curves per epoch and a table of train/dev/test accuracy.

References: [Deep Learning 2020, Bias/variance; L1 - L2 regularization;
Dropout regularization; Early stopping]; [Laurent, Regularization],
"Dropout".
"""

import sys

import jax

import fnn

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "regularization"


def data(train_size=300):
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
    epochs = epochs or (8 if quick else 150)
    train, dev, test = data(train_size)
    params = fnn.init_params(jax.random.key(1), [64, width, width, 10], "he_normal")
    rows, histories = [], {}
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
    h = result["histories"]
    fig, axes = _common.figure(1, len(h), (3.6, 3.0))
    for ax, (name, hist) in zip(axes[0], h.items(), strict=True):
        ax.plot(hist["epoch"], hist["train_loss"], label="J_train")
        ax.plot(hist["epoch"], hist["dev_loss"], label="J_dev")
        ax.set(title=name, xlabel="epoch", yscale="log")
    axes[0, 0].legend()
    return fig


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-size", type=int, default=300)
    p.add_argument("--patience", type=int, default=15)
    a = p.parse_args(argv)
    result = run(a.quick, a.epochs, a.train_size, a.patience)
    _common.report(result["rows"], a.out, NAME, "test accuracy")
    _common.save_figure(plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
