"""Train an MLP from the command line: fnn's main job.

    python scripts/train.py --dataset digits --out runs/digits

Loads a dataset, splits it into train/dev/test (stratified for classification),
standardises the inputs with the training split's statistics, trains with
``fnn.fit`` (one compiled ``lax.scan`` per epoch), keeps the best dev-loss
parameters (early stopping), and writes into ``--out``:

  * ``checkpoint.fnn``: the last epoch's parameters, optimizer state and epoch
    with this run's configuration (``fnn.checkpoint``, written atomically after
    every epoch; the PRNG key is the configuration's seed), to resume from;
  * ``model.fnn``: the best dev-loss parameters, with the configuration and the
    test metrics, to use;
  * ``metrics.jsonl``: one JSON line per epoch (losses, accuracies, learning
    rate, gradient norm, seconds);
  * ``curves.png``: loss and accuracy curves (when matplotlib is installed);
  * ``summary.json``: the test metrics, time and parameter count,

and ends with a one-screen summary. ``--resume DIR`` continues a run from its
checkpoint with the configuration saved in it, and reproduces the uninterrupted
run exactly on CPU (giving a different ``--epochs`` on resuming also changes
the length of epoch-based learning-rate schedules such as the default cosine).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn

CLASSIFICATION = {
    "digits",
    "breast_cancer",
    "mnist",
    "fashion_mnist",
    "moons",
    "spirals",
}
DATASETS = sorted(CLASSIFICATION | {"diabetes"})
OPTIMIZERS = [
    "sgd",
    "momentum",
    "nesterov",
    "rmsprop",
    "adagrad",
    "adam",
    "adamw",
    "nadam",
]
SCHEDULES = ["constant", "cosine", "exponential", "inverse_time", "step", "one_cycle"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train an MLP with fnn and save checkpoint, metrics and plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument(
        "--data-dir", help="folder with the IDX files (mnist, fashion_mnist)"
    )
    p.add_argument(
        "--hidden", type=int, nargs="*", default=[256, 128], help="hidden layer widths"
    )
    p.add_argument("--activation", default="relu", help="hidden activation name")
    p.add_argument("--init", default="he_normal", help="weight initialization scheme")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, default=1e-3, help="(peak) learning rate")
    p.add_argument(
        "--momentum", type=float, default=0.9, help="for sgd momentum/nesterov"
    )
    p.add_argument("--weight-decay", type=float, default=1e-4, help="for adamw")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--clip", type=float, default=None, help="clip by global norm")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs to train (default 60; on --resume, the saved value)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--dropout",
        type=float,
        nargs="*",
        default=[0.1],
        help="drop rate: one value for the hidden layers, or one per layer",
    )
    p.add_argument("--l1", type=float, default=0.0)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--patience", type=int, default=15, help="early stopping; 0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--grad",
        choices=["autodiff", "manual"],
        default="manual",
        help="jax.grad or fnn's hand-derived backprop",
    )
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--out", default="runs/digits", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def load(name: str, data_dir: str | None, key: jax.Array) -> fnn.datasets.Dataset:
    """The dataset ``name`` as one ``Dataset`` (bundled, generated or from IDX)."""
    if name in ("mnist", "fashion_mnist"):
        if not data_dir:
            raise SystemExit(f"--dataset {name} needs --data-dir with its IDX files")
        loader = getattr(fnn.datasets, f"load_{name}")
        train, test = loader(data_dir, "train"), loader(data_dir, "test")
        return train._replace(
            X=np.concatenate([train.X, test.X]), y=np.concatenate([train.y, test.y])
        )
    if name == "moons":
        return fnn.datasets.two_moons(key, 2000, noise=0.2)
    if name == "spirals":
        return fnn.datasets.two_spirals(key, 2000, noise=0.2)
    return getattr(fnn.datasets, f"load_{name}")()


def make_optimizer(cfg: dict, steps_per_epoch: int) -> fnn.optim.Optimizer:
    total = cfg["epochs"] * steps_per_epoch
    lr = cfg["lr"]
    schedule = {
        "constant": lambda: lr,
        "cosine": lambda: fnn.schedules.cosine_decay_schedule(lr, total, alpha=0.01),
        "exponential": lambda: fnn.schedules.exponential_decay(
            lr, 0.95, steps_per_epoch
        ),
        "inverse_time": lambda: fnn.schedules.inverse_time_decay(
            lr, 0.1, steps_per_epoch
        ),
        "step": lambda: fnn.schedules.piecewise_constant_schedule(
            lr, {total // 2: 0.5, 3 * total // 4: 0.5}
        ),
        "one_cycle": lambda: fnn.schedules.one_cycle(total, lr),
    }[cfg["schedule"]]()
    name, o = cfg["optimizer"], fnn.optim
    opt = {
        "sgd": lambda: o.sgd(schedule),
        "momentum": lambda: o.sgd(schedule, momentum=cfg["momentum"]),
        "nesterov": lambda: o.sgd(schedule, momentum=cfg["momentum"], nesterov=True),
        "rmsprop": lambda: o.rmsprop(schedule),
        "adagrad": lambda: o.adagrad(schedule),
        "adam": lambda: o.adam(schedule),
        "adamw": lambda: o.adamw(
            schedule,
            weight_decay=cfg["weight_decay"],
            weight_decay_mask=o.weights_only_mask,
        ),
        "nadam": lambda: o.nadam(schedule),
    }[name]()
    if cfg["clip"]:
        opt = o.chain(o.clip_by_global_norm(cfg["clip"]), opt)
    return opt


def drop_rates(dropout: list[float], n_layers: int):
    """One value: no dropout on the input, that rate on every hidden layer."""
    if not dropout:
        return 0.0
    return dropout[0] if len(dropout) == 1 else tuple(dropout)


def plot(history: dict, path: Path, classification: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = 2 if classification else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    epochs = np.asarray(history["epoch"]) + 1
    ax = axes[0, 0]
    ax.plot(epochs, history["train_loss"], label="train (training objective)")
    ax.plot(epochs, history["dev_loss"], label="dev")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="Loss")
    ax.legend()
    if classification:
        ax = axes[0, 1]
        ax.plot(epochs, 100 * np.asarray(history["train_accuracy"]), label="train")
        ax.plot(epochs, 100 * np.asarray(history["dev_accuracy"]), label="dev")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = vars(args).copy()
    cfg["epochs"] = cfg["epochs"] if args.resume or cfg["epochs"] else 60
    out = Path(args.out)
    start_epoch, restored = 0, None
    if args.resume:
        ckpt = Path(args.resume) / "checkpoint.fnn"
        saved = fnn.checkpoint.read_metadata(ckpt)
        # Everything else comes from the saved run, so the continuation is the
        # same run; a new --epochs also stretches epoch-based schedules.
        saved.update(no_progress=cfg["no_progress"], out=cfg["out"])
        if cfg["epochs"] is not None:
            saved["epochs"] = cfg["epochs"]
        cfg = saved
        out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)

    keys = fnn.data.run_keys(jax.random.key(cfg["seed"]))
    data = load(cfg["dataset"], cfg["data_dir"], keys.split)
    classification = cfg["dataset"] in CLASSIFICATION
    split = fnn.data.train_dev_test_split(
        keys.split, data.X, data.y, stratify=classification
    )
    scaler = fnn.data.fit_standardize(split.X_train)
    X_train, X_dev, X_test = (
        scaler.transform(x) for x in (split.X_train, split.X_dev, split.X_test)
    )
    y_train, y_dev, y_test = split.y_train, split.y_dev, split.y_test
    if classification:
        n_out = int(np.max(data.y)) + 1
        loss, n_out = ("bce", 1) if n_out == 2 else ("cross_entropy", n_out)
    else:
        target = fnn.data.fit_standardize(jnp.asarray(y_train)[:, None])
        y_train, y_dev, y_test = (
            target.transform(jnp.asarray(v)[:, None]) for v in (y_train, y_dev, y_test)
        )
        loss, n_out = "mse", 1

    sizes = [X_train.shape[1], *cfg["hidden"], n_out]
    params = fnn.init_params(keys.init, sizes, cfg["init"])
    steps = fnn.data.num_batches(X_train.shape[0], cfg["batch_size"])
    optimizer = make_optimizer(cfg, steps)
    opt_state = None
    if args.resume:
        template = {"params": params, "opt_state": optimizer.init(params), "epoch": 0}
        restored = fnn.checkpoint.load(
            Path(args.resume) / "checkpoint.fnn", like=template
        )
        params, opt_state = restored["params"], restored["opt_state"]
        start_epoch = restored["epoch"]

    metrics_path = out / "metrics.jsonl"
    if not args.resume:
        metrics_path.write_text("")

    def on_epoch(record, p, s):
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        state = {"params": p, "opt_state": s, "epoch": record["epoch"] + 1}
        fnn.checkpoint.save(out / "checkpoint.fnn", state, metadata=cfg)

    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    print(
        f"fnn {fnn.__version__} | {cfg['dataset']}: {X_train.shape[0]} train, "
        f"{X_dev.shape[0]} dev, {X_test.shape[0]} test | MLP {sizes} "
        f"{cfg['activation']} | {n_params:,} parameters | {cfg['optimizer']} "
        f"lr {cfg['lr']} ({cfg['schedule']}) | {cfg['grad']} gradients",
        flush=True,
    )
    t0 = time.perf_counter()
    result = fnn.fit(
        params,
        optimizer,
        X_train,
        y_train,
        key=keys.shuffle,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        dev=(X_dev, y_dev),
        activation=cfg["activation"],
        loss=loss,
        l1=cfg["l1"],
        l2=cfg["l2"],
        drop_rate=drop_rates(cfg["dropout"], len(sizes) - 1),
        grad=cfg["grad"],
        patience=cfg["patience"] or None,
        opt_state=opt_state,
        initial_epoch=start_epoch,
        progress=False if args.no_progress else None,
        callback=on_epoch,
    )
    seconds = time.perf_counter() - t0
    test = fnn.evaluate(
        result.params, X_test, y_test, activation=cfg["activation"], loss=loss
    )
    # checkpoint.fnn holds the last epoch's state (to resume); model.fnn the
    # parameters of the best dev epoch (to use).
    fnn.checkpoint.save(
        out / "model.fnn",
        {"params": result.params},
        metadata={**cfg, "sizes": sizes, "loss": loss, **test},
    )
    plotted = plot(result.history, out / "curves.png", classification)
    summary = {
        "dataset": cfg["dataset"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"] if classification else None,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history["epoch"]),
        "seconds": seconds,
        "parameters": n_params,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    headline = (
        f"test accuracy {100 * test['accuracy']:.2f}%"
        if classification
        else f"test RMSE {np.sqrt(test['loss']):.4f} (standardised target)"
    )
    print(
        f"\n{headline} | test loss {test['loss']:.4f} | best epoch "
        f"{(result.best_epoch or 0) + 1} of {len(result.history['epoch'])} run | "
        f"{seconds:.1f} s | {n_params:,} parameters"
    )
    print(
        f"wrote {out}/model.fnn, checkpoint.fnn, metrics.jsonl, summary.json"
        + (", curves.png" if plotted else " (install matplotlib for curves.png)")
    )
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
