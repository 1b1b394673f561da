"""Train an MLP from the command line: fnn's main job.

    python scripts/train.py --dataset digits --out runs/digits

Loads a dataset, splits it into train/dev/test (stratified for classification),
standardises the inputs with the training split's statistics, trains with
``fnn.fit`` (one compiled ``lax.scan`` per epoch), keeps the best dev-loss
parameters (early stopping), and writes into ``--out`` (default
``runs/<dataset>``):

  * ``checkpoint.fnn``: the whole training-loop state after the last epoch
    (``fnn.LoopState``: epoch, parameters, optimizer state, best dev loss, its
    epoch and parameters, patience counter, history) with this run's
    configuration (``fnn.checkpoint``, written atomically after every epoch;
    the PRNG key is the configuration's seed), to resume from;
  * ``model.fnn``: the best dev-loss parameters, with the configuration and the
    test metrics, to use;
  * ``metrics.jsonl``: one JSON line per epoch (losses, accuracies, learning
    rate, gradient norm, seconds);
  * ``curves.png``: loss and accuracy curves (when matplotlib is installed);
  * ``summary.json``: the test metrics, best epoch, epochs run, time and
    parameter count,

and ends with a one-screen summary. Epochs are counted from 1 in everything
the script prints and writes (``"epoch"`` in ``metrics.jsonl``, ``"best_epoch"``
in ``summary.json`` and ``model.fnn``, the plot): epoch 1 is the first.

Resuming: ``--resume DIR`` continues the run saved in ``DIR/checkpoint.fnn``
with the configuration saved in it, and writes into ``DIR`` (or into ``--out``
when given, with the metrics of the epochs before). It reproduces the
uninterrupted run exactly on CPU, early stopping included. Flags that would
change the saved configuration (``--hidden``, ``--lr``, ``--optimizer``,
``--dataset``, ...) are refused; giving them with their saved value is fine.
``--epochs`` may extend the run (it also changes the length of epoch-based
learning-rate schedules such as the default cosine); a run that stopped early
stays stopped. ``--data-dir``, ``--out`` and ``--no-progress`` may change.

Data larger than memory: ``--data DIR`` trains on a folder that stays on the
host (``x.npy`` and ``y.npy``, ``x_*.npy``/``y_*.npy`` shards, or MNIST's raw
IDX files), memory-mapped and streamed by ``fnn.stream.fit_stream``: K steps
per compiled call (``--steps-per-call``) with the next chunk read in the
background, a per-step progress bar, a dev split of ``--dev-size`` examples
held in memory, inputs standardised with the statistics of a sample of the
training split, the test set from ``x_test.npy``/``y_test.npy`` or the IDX
``t10k`` files when present (the dev split otherwise). ``--accumulate k``
applies one update per k batches (``fnn.optim.multi_steps``), ``--ema DECAY``
keeps a moving average of the parameters (``fnn.optim.ema_params``) used for
dev and test evaluation and saved in ``model.fnn`` beside the raw parameters,
``--log-every N`` writes every N-th step's loss, gradient norm and learning
rate to ``steps.jsonl`` (and to ``--tensorboard DIR`` when a writer is
installed). A streamed run (``--data``, ``--ema`` or ``--log-every``) saves
``checkpoint.fnn`` every ``--save-every`` steps and at every epoch's end, with
its position in the data (epoch and step): ``--resume`` continues mid-epoch,
exactly; its ``train_accuracy`` is not measured (NaN).

Every number is checked where it is parsed (``--epochs`` and ``--batch-size``
at least 1, ``--patience`` at least 0 with 0 meaning no early stopping,
``--lr`` positive and finite, drop rates and momentum in [0, 1), ...). A bad
flag or a library error (a bad value, an unreadable checkpoint, a missing file)
ends the script with one line ``train.py: error: ...`` and exit status 2;
training that diverges (a non-finite loss, gradient or update) with exit
status 1.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn
import fnn.stream

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
DEFAULT_EPOCHS = 60
# Flags that may differ from the saved configuration on --resume.
RESUMABLE = {
    "epochs",
    "data_dir",
    "out",
    "resume",
    "no_progress",
    "log_every",
    "save_every",
    "steps_per_call",
    "tensorboard",
}
# Flags added after the first checkpoints were written: their values there.
NEW_FLAG_DEFAULTS = {
    "data": None,
    "dev_size": None,
    "accumulate": 1,
    "ema": None,
    "log_every": 0,
    "steps_per_call": 64,
    "save_every": 500,
    "tensorboard": None,
}


# --- flag types: each checks its value and says what it must be --------------------
def _flag_type(convert, ok, what: str):
    """An argparse ``type=``: ``convert(text)`` that must satisfy ``ok``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse's fallback message names the type
    return parse


positive_int = _flag_type(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _flag_type(int, lambda v: v >= 0, "an integer >= 0")
seed_int = _flag_type(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")
positive_float = _flag_type(
    float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0"
)
non_negative_float = _flag_type(
    float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"
)
unit_rate = _flag_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only for flags whose default is a value."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train an MLP with fnn and save checkpoint, metrics and plot.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits", help="data set")
    p.add_argument(
        "--data-dir", help="folder with the IDX files (mnist, fashion_mnist)"
    )
    p.add_argument(
        "--hidden",
        type=positive_int,
        nargs="*",
        default=[256, 128],
        help="hidden layer widths (none: a linear model)",
    )
    p.add_argument(
        "--activation",
        choices=fnn.activations.names(),
        default="relu",
        metavar="NAME",
        help="hidden activation: " + ", ".join(fnn.activations.names()),
    )
    p.add_argument(
        "--init",
        choices=fnn.initializers.names(),
        default="he_normal",
        metavar="NAME",
        help="weight initialization scheme: " + ", ".join(fnn.initializers.names()),
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer")
    p.add_argument(
        "--lr", type=positive_float, default=1e-3, help="(peak) learning rate, > 0"
    )
    p.add_argument(
        "--momentum",
        type=unit_rate,
        default=0.9,
        help="for sgd momentum/nesterov, in [0, 1)",
    )
    p.add_argument(
        "--weight-decay", type=non_negative_float, default=1e-4, help="for adamw, >= 0"
    )
    p.add_argument(
        "--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule"
    )
    p.add_argument(
        "--clip",
        type=positive_float,
        default=None,
        help="clip by global norm to this value (default: no clipping)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"epochs to train (default {DEFAULT_EPOCHS}; on --resume, the saved "
        "value, which a larger one extends)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="examples per step, >= 1"
    )
    p.add_argument(
        "--dropout",
        type=unit_rate,
        nargs="*",
        default=[0.1],
        help="drop rate in [0, 1): one value for the hidden layers, or one per "
        "layer (the input of each dense layer)",
    )
    p.add_argument(
        "--l1", type=non_negative_float, default=0.0, help="L1 penalty weight, >= 0"
    )
    p.add_argument(
        "--l2", type=non_negative_float, default=1e-4, help="L2 penalty weight, >= 0"
    )
    p.add_argument(
        "--patience",
        type=non_negative_int,
        default=15,
        help="early stopping after this many epochs without a lower dev loss; 0 = off",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="PRNG seed, in [0, 2**32)")
    p.add_argument(
        "--grad",
        choices=["autodiff", "manual"],
        default="manual",
        help="jax.grad or fnn's hand-derived backprop",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR (and write into DIR unless --out)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default runs/<dataset>)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="stream the training data from DIR (x.npy/y.npy, x_*.npy/y_*.npy "
        "shards or raw IDX files), memory-mapped, instead of --dataset",
    )
    p.add_argument(
        "--dev-size",
        type=positive_int,
        default=None,
        help="with --data: dev examples held out (default min(n/10, 10000))",
    )
    p.add_argument(
        "--accumulate",
        type=positive_int,
        default=1,
        help="apply one update per this many batches (gradient accumulation)",
    )
    p.add_argument(
        "--ema",
        type=unit_rate,
        default=None,
        metavar="DECAY",
        help="keep a moving average of the parameters with this decay in [0, 1) "
        "for evaluation (e.g. 0.999)",
    )
    p.add_argument(
        "--log-every",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="write every N-th step's metrics to steps.jsonl (0: none)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write the per-step metrics to TensorBoard in DIR (needs "
        "tensorboardX or torch)",
    )
    p.add_argument(
        "--steps-per-call",
        type=positive_int,
        default=64,
        help="streamed runs: steps per compiled call",
    )
    p.add_argument(
        "--save-every",
        type=positive_int,
        default=500,
        metavar="N",
        help="streamed runs: save checkpoint.fnn every N steps (and every epoch)",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def given_flags(argv, names) -> set[str]:
    """The destinations of the flags given on the command line ``argv``."""
    unset = object()  # not a string: argparse leaves it unconverted
    p = build_parser()
    p.set_defaults(**dict.fromkeys(names, unset))
    return {k for k, v in vars(p.parse_args(argv)).items() if v is not unset}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) if value else "(none)"
    return "(none)" if value is None else str(value)


def load(name: str, data_dir: str | None, key: jax.Array) -> fnn.datasets.Dataset:
    """The dataset ``name`` as one ``Dataset`` (bundled, generated or from IDX)."""
    if name in ("mnist", "fashion_mnist"):
        if not data_dir:
            raise ValueError(f"--dataset {name} needs --data-dir with its IDX files")
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
        "exponential": lambda: fnn.schedules.epoch_exponential_decay(
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
    if cfg["clip"] is not None:
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


def resumed_config(args: argparse.Namespace, given: set[str]) -> tuple[dict, dict]:
    """The configuration saved in ``--resume DIR`` with this command's allowed
    changes, and the description of the saved loop state; refuses any flag that
    contradicts the saved configuration (naming the flag and both values)."""
    ckpt = Path(args.resume) / "checkpoint.fnn"
    try:
        saved = fnn.checkpoint.read_metadata(ckpt)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--resume {args.resume}: {err}") from err
    loop = saved.pop("loop", None)
    if not (
        isinstance(loop, dict)
        and isinstance(loop.get("epoch"), int)
        and isinstance(loop.get("best_params"), bool)
        and isinstance(loop.get("history"), list)
        and all(isinstance(k, str) for k in loop["history"])
    ):
        raise ValueError(
            f"--resume {args.resume}: {ckpt} holds no training-loop state (it was "
            "written by an older train.py or edited), so the run cannot be resumed "
            "exactly: start a new run without --resume."
        )
    cfg = vars(args)
    conflicts = [
        f"{_flag(name)} {_shown(cfg[name])} (saved: {_shown(saved.get(name))})"
        for name in sorted(given - RESUMABLE)
        if json.loads(json.dumps(cfg[name])) != saved.get(name)
    ]
    if conflicts:
        raise ValueError(
            f"--resume {args.resume} continues the saved run, and "
            + "; ".join(conflicts)
            + " would change its configuration: drop "
            + ("that flag" if len(conflicts) == 1 else "those flags")
            + " to resume, or start a new run (without --resume) to train with "
            "other settings."
        )
    for name, value in NEW_FLAG_DEFAULTS.items():
        saved.setdefault(name, value)
    for name in RESUMABLE & given & set(NEW_FLAG_DEFAULTS):
        saved[name] = cfg[name]
    saved.update(resume=args.resume, no_progress=args.no_progress)
    if "data_dir" in given:
        saved["data_dir"] = args.data_dir
    if args.epochs is not None:
        saved["epochs"] = args.epochs
    if saved["epochs"] < loop["epoch"]:
        raise ValueError(
            f"--epochs {saved['epochs']} is fewer than the {loop['epoch']} epochs "
            f"the run in {args.resume} has already trained: give at least "
            f"{loop['epoch']}, or leave --epochs out."
        )
    return saved, loop


def loop_template(params, opt_state, saved: dict) -> fnn.LoopState:
    """A ``LoopState`` shaped like the one saved (``saved``: its description in
    the checkpoint's metadata), to load it with ``fnn.checkpoint.load``."""
    n = saved["epoch"]
    history = {k: [0 if k == "epoch" else 0.0] * n for k in saved["history"]}
    return fnn.LoopState(
        epoch=0,
        params=params,
        opt_state=opt_state,
        state=None,
        best_loss=0.0,
        best_epoch=0,
        best_params=params if saved["best_params"] else None,
        wait=0,
        history=history,
    )


def stream_template(params, opt_state, saved: dict):
    """The checkpoint's loop state as saved: a ``fnn.stream.StreamLoop`` for a
    streamed run (its position in the data), a ``LoopState`` otherwise."""
    loop = loop_template(params, opt_state, saved)
    if not saved.get("stream"):
        return loop
    return fnn.stream.StreamLoop(loop, 0, 0.0, 0.0, 0)


def _max_label(source) -> int:
    """The largest label of a source over arrays or shards (read once)."""
    ys = getattr(source, "y", None)
    ys = ys if isinstance(ys, list) else [ys]
    return max(int(np.max(y)) for y in ys)


def stream_data(cfg: dict, key: jax.Array):
    """``--data``: the training split as a source, the dev and test sets in
    memory, the number of classes."""
    full = fnn.stream.from_path(cfg["data"])
    n = len(full)
    n_dev = cfg["dev_size"] or min(max(n // 10, 1), 10000)
    if n_dev >= n:
        raise ValueError(f"--dev-size {n_dev} leaves no training example of {n}.")
    perm = np.asarray(jax.random.permutation(key, n))
    dev_idx, train_idx = np.sort(perm[:n_dev]), np.sort(perm[n_dev:])
    sample = full.batch(np.sort(perm[n_dev : n_dev + 10000]))[0]
    scaler = fnn.data.fit_standardize(sample.reshape(len(sample), -1))
    mean, scale = np.asarray(scaler.mean), np.asarray(scaler.scale)

    def standardise(x, y):
        x = x.reshape(len(x), -1).astype(np.float32)
        return ((x - mean) / scale).astype(np.float32), np.asarray(y, np.int32)

    train = fnn.stream.map_batches(fnn.stream.subset(full, train_idx), standardise)
    X_dev, y_dev = standardise(*full.batch(dev_idx))
    folder = Path(cfg["data"])
    test = None
    if (folder / "x_test.npy").is_file() and (folder / "y_test.npy").is_file():
        test = fnn.stream.from_npy(folder / "x_test.npy", folder / "y_test.npy")
    elif (folder / "t10k-images-idx3-ubyte").is_file():
        test = fnn.stream.from_idx(
            folder / "t10k-images-idx3-ubyte", folder / "t10k-labels-idx1-ubyte"
        )
    if test is not None:
        X_test, y_test = standardise(*test.batch(np.arange(len(test))))
    else:
        X_test, y_test = X_dev, y_dev
    return train, (X_dev, y_dev), (X_test, y_test), _max_label(full) + 1


def one_based(record: dict) -> dict:
    """An epoch's record as the script writes it: epochs counted from 1."""
    return {**record, "epoch": record["epoch"] + 1}


def main(argv=None) -> dict:
    """Run the command line ``argv``; return the summary (also in summary.json).

    Bad flags and library errors exit with one line on stderr (status 2; 1 for
    training that diverged), never a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    given = given_flags(argv, vars(args))
    try:
        return run(args, given)
    except fnn.NonFiniteError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {err}\n")


def run(args: argparse.Namespace, given: set[str]) -> dict:
    """Train as ``args`` say (``given``: the flags on the command line, checked
    against the saved configuration on ``--resume``); return the summary."""
    saved_loop = None
    if args.resume:
        cfg, saved_loop = resumed_config(args, given)
        out = Path(args.out or args.resume)
    else:
        cfg = vars(args).copy()
        if cfg["epochs"] is None:
            cfg["epochs"] = DEFAULT_EPOCHS
        run_name = Path(cfg["data"]).name if cfg["data"] else cfg["dataset"]
        out = Path(args.out or Path("runs") / run_name)
    cfg["out"] = str(out)
    n_layers = len(cfg["hidden"]) + 1
    if len(cfg["dropout"]) > 1 and len(cfg["dropout"]) != n_layers:
        raise ValueError(
            f"--dropout has {len(cfg['dropout'])} values for {n_layers} layers: give "
            f"one value (for the hidden layers) or one per layer ({n_layers})."
        )
    out.mkdir(parents=True, exist_ok=True)

    keys = fnn.data.run_keys(jax.random.key(cfg["seed"]))
    streamed = bool(cfg["data"]) or cfg["ema"] is not None or cfg["log_every"] > 0
    if cfg["data"]:
        source, (X_dev, y_dev), (X_test, y_test), n_out = stream_data(cfg, keys.split)
        classification = True
        loss, n_out = ("bce", 1) if n_out == 2 else ("cross_entropy", n_out)
        n_train, n_in = len(source), X_dev.shape[1]
        name = Path(cfg["data"]).name
    else:
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
                target.transform(jnp.asarray(v)[:, None])
                for v in (y_train, y_dev, y_test)
            )
            loss, n_out = "mse", 1

        n_train, n_in = X_train.shape[0], X_train.shape[1]
        name = cfg["dataset"]
        if streamed:
            source = fnn.stream.ArraySource(np.asarray(X_train), np.asarray(y_train))

    sizes = [n_in, *cfg["hidden"], n_out]
    params = fnn.init_params(keys.init, sizes, cfg["init"])
    steps = fnn.data.num_batches(n_train, cfg["batch_size"])
    # the schedule counts updates: one per --accumulate batches
    optimizer = make_optimizer(cfg, max(steps // cfg["accumulate"], 1))
    # what trains (and what a checkpoint holds the state of)
    wrapped = fnn.stream.wrap_optimizer(
        optimizer, cfg["accumulate"], cfg["ema"] if streamed else None
    )
    patience = cfg["patience"] or None
    epochs, loop = cfg["epochs"], None
    if saved_loop is not None:
        template = stream_template(params, wrapped.init(params), saved_loop)
        loop = fnn.checkpoint.load(Path(args.resume) / "checkpoint.fnn", like=template)
        epoch_loop = loop.loop if isinstance(loop, fnn.stream.StreamLoop) else loop
        if patience is not None and epoch_loop.wait >= patience:
            epochs = epoch_loop.epoch  # it stopped early: it stays stopped

    # metrics.jsonl: the epochs before (from the saved loop state), then one
    # line per epoch as it ends.
    metrics_path = out / "metrics.jsonl"
    with metrics_path.open("w") as f:
        if loop is not None:
            for i in range(epoch_loop.epoch):
                record = {k: epoch_loop.history[k][i] for k in saved_loop["history"]}
                f.write(json.dumps(one_based(record)) + "\n")
    steps_path = out / "steps.jsonl"
    if loop is not None and steps_path.is_file():
        # keep the steps before the resumed position (later ones are rerun)
        at = (epoch_loop.epoch, getattr(loop, "step", 0))
        kept = [
            line
            for line in steps_path.read_text().splitlines()
            if (json.loads(line)["epoch"], json.loads(line)["step"]) < at
        ]
        steps_path.write_text("".join(line + "\n" for line in kept))
    elif loop is None and steps_path.is_file():
        steps_path.unlink()

    def save_checkpoint(loop):
        at = loop.loop if isinstance(loop, fnn.stream.StreamLoop) else loop
        saved = {
            "epoch": at.epoch,
            "best_params": at.best_params is not None,
            "history": list(at.history),
            "stream": isinstance(loop, fnn.stream.StreamLoop),
        }
        if isinstance(loop, fnn.stream.StreamLoop):
            saved["step"] = loop.step
        fnn.checkpoint.save(
            out / "checkpoint.fnn", loop, metadata={**cfg, "loop": saved}
        )

    def on_epoch(record, p, s, loop):
        with metrics_path.open("a") as f:
            f.write(json.dumps(one_based(record)) + "\n")
        if not streamed:
            save_checkpoint(loop)

    previous = [getattr(loop, "step", 0)]  # the step of the last chunk's end

    def on_chunk(loop):
        # every --save-every steps within an epoch, and at every epoch's end
        every = cfg["save_every"]
        if loop.step == 0 or loop.step // every > previous[0] // every:
            save_checkpoint(loop)
        previous[0] = loop.step

    if loop is not None and out.resolve() != Path(args.resume).resolve():
        save_checkpoint(loop)  # the new folder can be resumed from at once

    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    print(
        f"fnn {fnn.__version__} | {name}: {n_train} train, "
        f"{X_dev.shape[0]} dev, {X_test.shape[0]} test | MLP {sizes} "
        f"{cfg['activation']} | {n_params:,} parameters | {cfg['optimizer']} "
        f"lr {cfg['lr']} ({cfg['schedule']}) | {cfg['grad']} gradients",
        flush=True,
    )
    if loop is not None:
        print(
            f"resuming {args.resume} at epoch {epoch_loop.epoch + 1} of "
            f"{cfg['epochs']}, step {getattr(loop, 'step', 0)}"
            + (" (it had stopped early)" if epochs < cfg["epochs"] else ""),
            flush=True,
        )
    t0 = time.perf_counter()
    common = dict(
        key=keys.shuffle,
        epochs=epochs,
        batch_size=cfg["batch_size"],
        dev=(X_dev, y_dev),
        activation=cfg["activation"],
        loss=loss,
        l1=cfg["l1"],
        l2=cfg["l2"],
        drop_rate=drop_rates(cfg["dropout"], len(sizes) - 1),
        grad=cfg["grad"],
        patience=patience,
        resume=loop,
        progress=False if args.no_progress else None,
        callback=on_epoch,
    )
    if streamed:
        result = fnn.stream.fit_stream(
            params,
            optimizer,
            source,
            steps_per_call=cfg["steps_per_call"],
            accumulate=cfg["accumulate"],
            ema=cfg["ema"],
            log_every=cfg["log_every"],
            metrics_file=steps_path,
            tensorboard=cfg["tensorboard"],
            chunk_callback=on_chunk,
            **common,
        )
    else:
        result = fnn.fit(params, wrapped, X_train, y_train, **common)
    seconds = time.perf_counter() - t0
    test = fnn.evaluate(
        result.params, X_test, y_test, activation=cfg["activation"], loss=loss
    )
    best_epoch = None if result.best_epoch is None else result.best_epoch + 1
    epochs_run = len(result.history["epoch"])
    # checkpoint.fnn holds the last epoch's loop state (to resume); model.fnn
    # the parameters of the best dev epoch (to use).
    model = {"params": result.params}
    if cfg["ema"] is not None and streamed:  # the average, and the raw parameters
        model["raw_params"] = result.loop.loop.params
    fnn.checkpoint.save(
        out / "model.fnn",
        model,
        metadata={**cfg, "sizes": sizes, "loss": loss, "best_epoch": best_epoch} | test,
    )
    plotted = plot(result.history, out / "curves.png", classification)
    summary = {
        "dataset": cfg["data"] or cfg["dataset"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"] if classification else None,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
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
        f"{_shown(best_epoch)} of {epochs_run} run | {seconds:.1f} s | "
        f"{n_params:,} parameters"
    )
    print(
        f"wrote {out}/model.fnn, checkpoint.fnn, metrics.jsonl, summary.json"
        + (", curves.png" if plotted else " (install matplotlib for curves.png)")
    )
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
