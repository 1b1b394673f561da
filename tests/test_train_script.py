"""The main job, scripts/train.py: outputs, summary, resume, other datasets."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import fnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location(
        "train", ROOT / "scripts" / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


FAST = [
    "--hidden",
    "32",
    "--batch-size",
    "64",
    "--no-progress",
    "--patience",
    "0",
    "--lr",
    "0.01",
    "--schedule",
    "constant",
]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_digits_run_writes_checkpoint_metrics_plot_summary(train, tmp_path, capsys):
    summary = train(["--epochs", "3", "--out", str(tmp_path), *FAST])
    out = capsys.readouterr().out
    assert "test accuracy" in out and "parameters" in out
    for name in (
        "checkpoint.fnn",
        "model.fnn",
        "metrics.jsonl",
        "summary.json",
        "curves.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [1, 2, 3]  # counted from 1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert 0.5 < summary["test_accuracy"] <= 1.0
    meta = fnn.checkpoint.read_metadata(tmp_path / "model.fnn")
    assert (
        meta["sizes"] == [64, 32, 10] and meta["accuracy"] == summary["test_accuracy"]
    )
    # The best epoch is the same number in the metrics, the summary, the model's
    # metadata and the printed line.
    best = min(lines, key=lambda line: line["dev_loss"])["epoch"]
    assert summary["best_epoch"] == meta["best_epoch"] == best
    assert f"best epoch {best} of 3 run" in out


def _same_checkpoints(a_path, b_path):
    a, b = fnn.checkpoint.load(a_path), fnn.checkpoint.load(b_path)
    assert a.keys() == b.keys()
    for k in a:
        if "['seconds']" not in k:  # wall-clock times differ
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def _without_seconds(lines):
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def test_resume_reproduces_the_uninterrupted_run(train, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default --out would land in tmp_path/runs
    straight, first = tmp_path / "straight", tmp_path / "first"
    train(["--epochs", "4", "--out", str(straight), *FAST])
    train(["--epochs", "2", "--out", str(first), *FAST])
    # The same run continued in its own folder: the saved configuration, a
    # longer --epochs, a flag given with its saved value.
    train(["--epochs", "4", "--resume", str(first), "--hidden", "32"])
    assert not (tmp_path / "runs").exists()
    _same_checkpoints(straight / "checkpoint.fnn", first / "checkpoint.fnn")
    assert _without_seconds(_lines(first / "metrics.jsonl")) == _without_seconds(
        _lines(straight / "metrics.jsonl")
    )
    # Flags that contradict the saved configuration are refused, each named
    # with its value and the saved one.
    for flags, named in [
        (["--hidden", "64"], ["--hidden 64", "saved: 32"]),
        (["--lr", "0.5", "--optimizer", "sgd"], ["--lr 0.5", "--optimizer sgd"]),
        (["--dataset", "moons"], ["--dataset moons", "saved: digits"]),
        (["--patience", "3"], ["--patience 3", "saved: 0"]),
        (["--epochs", "3"], ["--epochs 3", "4 epochs"]),
    ]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            train(["--resume", str(straight), *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err, flags
        assert err.startswith("train.py: error: ") and len(err.splitlines()) == 1
        assert all(text in err for text in named), (flags, err)


def test_resume_with_early_stopping_is_exact(train, tmp_path, monkeypatch):
    """Interrupted while patience is counting, resumed: same epochs, same best
    epoch, bit-identical model (the best dev loss, its parameters and the
    patience counter are in the checkpoint)."""
    config = ["--hidden", "32", "--batch-size", "64", "--no-progress"]
    config += ["--lr", "0.05", "--patience", "2", "--epochs", "20"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    summary = train([*config, "--out", str(straight)])
    lines = _lines(straight / "metrics.jsonl")
    assert summary["epochs_run"] < 20  # early stopping did stop the run
    # Interrupt right after an epoch that did not improve the dev loss, so that
    # the patience counter and the best dev loss so far matter.
    losses = [line["dev_loss"] for line in lines]
    k = next(
        i + 1
        for i in range(summary["epochs_run"] - 2, 0, -1)
        if losses[i] > min(losses[:i])
    )
    real_save = fnn.checkpoint.save

    def save_then_stop(path, tree, **kw):
        real_save(path, tree, **kw)
        if Path(path).name == "checkpoint.fnn" and tree.epoch == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(fnn.checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train([*config, "--out", str(cut)])
    monkeypatch.setattr(fnn.checkpoint, "save", real_save)
    assert len(_lines(cut / "metrics.jsonl")) == k
    resumed = train(["--resume", str(cut), "--no-progress"])
    for key in ("best_epoch", "epochs_run", "test_loss", "test_accuracy"):
        assert resumed[key] == summary[key], key
    _same_checkpoints(straight / "model.fnn", cut / "model.fnn")
    _same_checkpoints(straight / "checkpoint.fnn", cut / "checkpoint.fnn")
    assert _without_seconds(_lines(cut / "metrics.jsonl")) == _without_seconds(lines)
    # A run that stopped early stays stopped, even with more --epochs.
    again = train(["--resume", str(straight), "--epochs", "30", "--no-progress"])
    assert again["epochs_run"] == summary["epochs_run"]
    _same_checkpoints(straight / "model.fnn", cut / "model.fnn")


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--epochs", "2.5"], "--epochs"),
        (["--patience", "-1"], "--patience"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--hidden", "32", "0"], "--hidden"),
        (["--dropout", "1.0"], "--dropout"),
        (["--dropout", "-0.1"], "--dropout"),
        (["--dropout", "0.1", "0.2"], "--dropout"),  # 2 rates for 3 layers
        (["--momentum", "1"], "--momentum"),
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--l1", "-1"], "--l1"),
        (["--l2", "inf"], "--l2"),
        (["--clip", "0"], "--clip"),
        (["--seed", "-1"], "--seed"),
        (["--activation", "relux"], "--activation"),
        (["--init", "he"], "--init"),
        (["--dataset", "mnist"], "--data-dir"),
        (["--resume", "no/such/run"], "--resume"),
    ],
)
def test_bad_flags_exit_with_one_line_naming_the_flag(
    train, tmp_path, capsys, flags, flag
):
    with pytest.raises(SystemExit) as exit_info:
        train([*flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert flag in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith("train.py: error: ")
    assert not (tmp_path / "run" / "checkpoint.fnn").exists()  # nothing trained


@pytest.mark.parametrize(
    ("dataset", "key"), [("breast_cancer", "test_accuracy"), ("diabetes", "test_loss")]
)
def test_other_datasets(train, tmp_path, dataset, key):
    summary = train(
        [
            "--dataset",
            dataset,
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--optimizer",
            "momentum",
            "--lr",
            "0.01",
            *FAST,
        ]
    )
    assert np.isfinite(summary[key])
    if dataset == "diabetes":  # regression: no accuracy
        assert summary["test_accuracy"] is None


def test_mnist_needs_a_folder(train, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(
            ["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "train.py: error: " in err and "train-images-idx3-ubyte" in err
    assert jax.devices()  # the process is still usable
