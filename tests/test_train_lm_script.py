"""The main job for sequences, scripts/train_lm.py, in its quick mode."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import fnn
from fnn import nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train_lm():
    spec = importlib.util.spec_from_file_location(
        "train_lm", ROOT / "scripts" / "train_lm.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_gpt_run_beats_unigram_and_writes_artefacts(train_lm, tmp_path, capsys):
    summary = train_lm.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "bits/char" in out and "sample (temperature" in out
    for name in (
        "checkpoint.fnn",
        "model.fnn",
        "metrics.jsonl",
        "summary.json",
        "curves.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [50, 100]
    assert summary["arch"] == "gpt" and summary["grad"] == "manual"
    # bits per character = nats / ln 2, and clearly below the unigram model's
    assert np.isclose(summary["valid_bpc"], summary["valid_loss"] / np.log(2))
    assert 4.0 < summary["unigram_bpc"] < 5.5
    assert summary["valid_bpc"] < summary["unigram_bpc"] - 0.4, summary
    assert records[-1]["valid_loss"] < records[0]["valid_loss"]
    sample = summary["sample"]
    assert sample.startswith("The ") and len(sample) == len("The ") + 80
    assert sample in out

    # The saved model reloads and gives the loss the summary reports.
    model, params, state = fnn.checkpoint.load_model(tmp_path / "model.fnn")
    meta = fnn.checkpoint.read_metadata(tmp_path / "model.fnn")
    vocab, T = meta["vocab"], meta["context"]
    assert len(vocab) == summary["vocab_size"]
    ids, _ = fnn.datasets.load_pydoc_chars(meta["max_chars"])
    _, valid = fnn.datasets.split_ids(ids, 0.1)
    x, y = fnn.datasets.char_windows(valid, T)
    loss = train_lm.sequence_cross_entropy()
    logits = jax.jit(lambda p, x: nn.forward(model, p, x, state=state)[0])
    J = float(loss.fn(logits(params, x), y))
    assert np.isclose(J, summary["valid_loss"], rtol=1e-4)


def test_unigram_bits_per_character(train_lm):
    """Two symbols with train counts 3 and 1 (+1 each): p = 2/3, 1/3."""
    bpc = train_lm.unigram_bpc(np.array([0, 0, 0, 1]), np.array([0, 1]), 2)
    assert np.isclose(bpc, -(np.log2(4 / 6) + np.log2(2 / 6)) / 2)


def test_config_defaults_follow_arch_and_quick(train_lm):
    cfg = train_lm.config(train_lm.parse_args([]))
    assert (cfg["arch"], cfg["grad"], cfg["layers"], cfg["heads"]) == (
        "gpt",
        "manual",
        2,
        4,
    )
    assert (cfg["width"], cfg["context"], cfg["max_chars"]) == (64, 64, None)
    lstm = train_lm.config(train_lm.parse_args(["--arch", "lstm", "--quick"]))
    assert lstm["layers"] == 1 and lstm["steps"] < cfg["steps"]
