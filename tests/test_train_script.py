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
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert 0.5 < summary["test_accuracy"] <= 1.0
    meta = fnn.checkpoint.read_metadata(tmp_path / "model.fnn")
    assert (
        meta["sizes"] == [64, 32, 10] and meta["accuracy"] == summary["test_accuracy"]
    )


def test_resume_reproduces_the_uninterrupted_run(train, tmp_path):
    straight, first = tmp_path / "straight", tmp_path / "first"
    train(["--epochs", "4", "--out", str(straight), *FAST])
    train(["--epochs", "2", "--out", str(first), *FAST])
    # The same run continued: the saved configuration, a longer --epochs.
    train(["--epochs", "4", "--resume", str(first), "--out", str(first)])
    a = fnn.checkpoint.load(straight / "checkpoint.fnn")
    b = fnn.checkpoint.load(first / "checkpoint.fnn")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    lines = (first / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]


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


def test_mnist_needs_a_folder(train, tmp_path):
    with pytest.raises(SystemExit, match="needs --data-dir"):
        train(["--dataset", "mnist", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        train(
            ["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
        )
    assert jax.devices()  # the process is still usable
