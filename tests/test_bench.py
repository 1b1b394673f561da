"""The benchmark's quick mode, in-process on the tiny size: a well-formed
Markdown table and JSON file with positive finite rates and ratios (no timing
is asserted)."""

import importlib.util
import json
import math
import pathlib

import jax
import pytest
from conftest import markdown_tables

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "fnn_bench", ROOT / "benchmarks" / "bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # The optional peers (optax, flax) are written for JAX's standard dtype
    # promotion, not the strict one this suite runs under.
    with jax.numpy_dtype_promotion("standard"):
        bench.main(["--quick", "--sizes", "tiny", "--analysis", "--out", str(out)])
    return out


def _positive_finite(v):
    return isinstance(v, int | float) and math.isfinite(v) and v > 0


def test_step_flops_formula(bench):
    # 6 · batch · Σ n_in n_out, by hand for 64-32-10 at batch 32.
    assert bench.step_flops((64, 32, 10), 32) == 6 * 32 * (64 * 32 + 32 * 10)


def test_json_well_formed(report):
    res = json.loads((report / "results.json").read_text())
    assert {"meta", "steps", "epochs", "memory", "matmul", "scaling", "targets"} <= set(
        res
    )
    measured = [r for r in res["steps"] if "note" not in r]
    rows = {r["row"] for r in measured}
    assert {"jax reference", "fnn autodiff", "fnn manual"} <= rows
    for r in measured:
        for key in (
            "steps_per_s",
            "us_per_step",
            "ratio_to_reference",
            "gflops",
            "fraction_of_matmul",
        ):
            assert _positive_finite(r[key]), (r["row"], key, r[key])
    ref = [r for r in measured if r["row"] == "jax reference"][0]
    assert ref["ratio_to_reference"] == pytest.approx(1.0)
    for e in res["epochs"]:
        assert _positive_finite(e["us_per_step_scan"])
        assert _positive_finite(e["scan_speedup"])  # tiny is a loop size
    for m in res["memory"]:
        assert m["temp_bytes"] >= 0 and _positive_finite(m["argument_bytes"])
    for m in res["matmul"]:
        assert _positive_finite(m["matmul_gflops"])
    for d in res["scaling"]["dataset"] + res["scaling"]["width"]:
        assert _positive_finite(d["epoch_s"]) and _positive_finite(d["time_ratio"])
    for t in res["targets"]:
        assert t["met"] in (True, False, None)
        if t["met"] is not None:
            assert _positive_finite(t["measured"])
    # Peers that are not installed are skipped with a note, never an error.
    for r in res["steps"]:
        if "note" in r:
            assert r["note"]


def test_markdown_tables_well_formed(report):
    text = (report / "results.md").read_text()
    assert text.startswith("# fnn benchmark")
    tables = markdown_tables(text)
    assert len(tables) >= 5  # steps, epochs, memory, 2 scaling, targets
    for table in tables:
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, table  # every row has the header's columns
        assert set(table[1].replace("|", "").replace(":", "")) <= {"-"}
    assert "| tiny (64-32-10 @ 32) | fnn manual |" in text


def test_fit_reuse_benchmark_quick_mode(tmp_path):
    """Later identical fit calls compile nothing (counts, not times, asserted)."""
    spec = importlib.util.spec_from_file_location(
        "fit_reuse", ROOT / "benchmarks" / "fit_reuse.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--out", str(tmp_path)])
    assert result["compiles_per_call"][0] > 0
    assert result["compiles_per_call"][1:] == [0, 0]
    assert json.loads((tmp_path / "fit_reuse.json").read_text())["calls"] == 3
    assert "later / first" in (tmp_path / "fit_reuse.md").read_text()
