"""The sequence benchmark's quick mode, in-process on tiny models: well-formed
Markdown tables and JSON with positive finite times, ratios and memory (no
timing is asserted; the recompute row needs less temporary memory)."""

import importlib.util
import json
import math
import pathlib

import pytest
from conftest import markdown_tables

# Compiling six training steps: about 30 s of CPU, so in the slow run only.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "fnn_bench_sequence", ROOT / "benchmarks" / "sequence.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("sequence")
    module.main(["--quick", "--out", str(out)])
    return out


def _positive_finite(v):
    return isinstance(v, int | float) and math.isfinite(v) and v > 0


def test_json_well_formed(report):
    res = json.loads((report / "sequence.json").read_text())
    assert {"meta", "config", "gpt", "lstm", "recompute"} <= set(res)
    assert [r["row"] for r in res["gpt"]] == [
        "jax.grad",
        "manual backward",
        "manual backward, recompute",
        "jax.grad, recompute (jax.checkpoint)",
    ]
    assert [r["row"] for r in res["lstm"]] == ["jax.grad", "manual backward"]
    for r in res["gpt"] + res["lstm"]:
        for key in ("ms_per_step", "speed_vs_jax_grad", "temp_vs_jax_grad"):
            assert _positive_finite(r[key]), (r["row"], key, r[key])
        assert _positive_finite(r["temp_bytes"]) and _positive_finite(
            r["argument_bytes"]
        )
        lo, hi = r["speed_vs_jax_grad_per_round"]
        assert 0 < lo <= hi
    assert res["gpt"][0]["speed_vs_jax_grad"] == pytest.approx(1.0)
    rc = res["recompute"]
    assert rc["temp_bytes_with"] < rc["temp_bytes_without"]
    assert 0 < rc["memory_saved_fraction"] < 1
    assert math.isfinite(rc["time_paid_fraction"])


def test_markdown_tables_well_formed(report):
    text = (report / "sequence.md").read_text()
    assert text.startswith("# fnn sequence benchmark")
    tables = markdown_tables(text)
    assert len(tables) == 2  # GPT, LSTM
    assert [len(t) for t in tables] == [2 + 4, 2 + 2]
    for table in tables:
        assert len({line.count("|") for line in table}) == 1, table
        assert set(table[1].replace("|", "").replace(":", "")) <= {"-"}
    assert "| manual backward, recompute |" in text
    assert "Recompute (manual backward): temporary memory" in text
