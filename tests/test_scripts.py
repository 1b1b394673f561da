"""Smoke tests of the experiment scripts on reduced sizes, with the seeds' numbers.

The scripts are imported and their ``main([...])`` called in-process; the
numbers asserted are those the seeds publish (seed 000's graph gradient, seed
001's XOR fits, seed 003's regression and XOR initialization), not the
scripts' own output.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn.experiments import activations as activations_experiment
from fnn.experiments import gradcheck as gradcheck_experiment
from fnn.experiments import seed_graph_xor as seed_graph_xor_experiment
from fnn.experiments import unstable_gradients as unstable_gradients_experiment

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import activations  # noqa: E402
import gradcheck  # noqa: E402
import optimizers  # noqa: E402
import regularization  # noqa: E402
import second_order  # noqa: E402
import seed_graph_xor  # noqa: E402
import unstable_gradients  # noqa: E402
import xor_init  # noqa: E402


def test_graph_gradient_is_seed_000s():
    g = seed_graph_xor_experiment.graph()
    assert g["f"] == -12.0
    assert g["gradient"] == (-4.0, -4.0, 3.0)


def test_xor_fits_are_seed_001s():
    r = seed_graph_xor_experiment.xor(steps=500)
    # theta* = ((0, 0), 1/2): least squares and gradient descent.
    np.testing.assert_allclose(
        r["fits"]["least squares (w1, w2, b)"], [0, 0, 0.5], atol=1e-9
    )
    np.testing.assert_allclose(
        r["fits"]["gradient descent (w1, w2, b)"], [0, 0, 0.5], atol=1e-4
    )
    np.testing.assert_allclose(r["fits"]["J linear"], 0.25, atol=1e-6)
    # The ReLU network reproduces XOR exactly.
    np.testing.assert_array_equal(r["relu_out"], [0.0, 1.0, 1.0, 0.0])


def test_universal_approximation_error_falls_with_width():
    rows = seed_graph_xor_experiment.universal(widths=(1, 16), steps=400)["rows"]
    assert rows[1]["RMS error"] < 0.5 * rows[0]["RMS error"]


def test_seed_graph_xor_main(tmp_path):
    assert seed_graph_xor.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "seed_graph_xor.png").exists()
    assert (tmp_path / "xor.csv").exists()


def test_regression_theta_near_seed_003():
    rows = {r["method"]: r for r in optimizers.regression(1000)["rows"]}
    for name, (t0, t1) in optimizers.SEED_THETA.items():
        theta = (rows[name]["theta_0 (bias)"], rows[name]["theta_1 (slope)"])
        np.testing.assert_allclose(theta, (2.0, 3.0), atol=0.05)
        np.testing.assert_allclose(theta, (t0, t1), atol=0.03)


def test_learning_rate_above_two_over_lambda_max_diverges():
    rows = optimizers.learning_rates(60)["rows"]
    assert [r["diverged"] for r in rows] == [False, False, False, True]


def test_optimizers_main(tmp_path):
    assert optimizers.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "regression.md").exists()


def test_xor_init_failures(tmp_path):
    assert xor_init.main(["--quick", "--out", str(tmp_path)]) == 0
    r = xor_init.run(quick=True)
    uniform, normal = r["rows"]
    # Seed 003: 6/20 with U(-10, 10), 0/20 with N(0, 1/sqrt(fan_in)). The count
    # is random; require clearly more failures with the uniform init.
    u = int(uniform["failures (first 20 seeds)"].split("/")[0])
    n = int(normal["failures (first 20 seeds)"].split("/")[0])
    assert 2 <= u <= 14
    assert n <= 1


@pytest.mark.slow  # test_check_block covers every block in the default run
def test_gradcheck_covers_every_activation_and_block(tmp_path, capsys):
    assert gradcheck.main(["--quick", "--no-figure", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    mlp_rows = (tmp_path / "gradcheck.md").read_text()
    block_rows = (tmp_path / "gradcheck_blocks.md").read_text()
    for name in fnn.activations.names():
        assert f"| {name} |" in mlp_rows, name
    for name in fnn.nn._spec._BUILTIN:  # every block constructor of fnn.nn
        assert f"| {name}(" in block_rows, name
        assert f"\n{name}(" in out, name  # its check_block table is printed
    for table in (mlp_rows, block_rows):
        lines = table.strip().splitlines()[2:]
        assert lines and all(line.endswith("| True |") for line in lines), table
    assert "FAILED" not in out and "WRONG" not in out and "suspect" not in out
    n_rows = len(fnn.activations.names())
    assert f"{n_rows}/{n_rows} rows agree" in out
    assert "blocks agree" in out


def test_gradcheck_planted_bug_fails(tmp_path, capsys, monkeypatch):
    """The wrong tanh derivative fails its MLP row and the tanh Dense block's
    check (the grid and the block list cut down to the affected cases)."""
    monkeypatch.setattr(gradcheck_experiment, "ACTIVATIONS", ("tanh", "relu"))
    cases = gradcheck_experiment.blocks
    monkeypatch.setattr(
        gradcheck_experiment,
        "blocks",
        lambda quick, plant_bug: [
            c for c in cases(quick, plant_bug) if c[0].name.startswith("Dense(")
        ],
    )
    argv = ["--quick", "--plant-bug", "--no-figure", "--out", str(tmp_path)]
    assert gradcheck.main(argv) == 1
    out = capsys.readouterr().out
    assert "(bug)" in out
    assert "Dense(4, tanh(buggy)): FAILED" in out
    assert "1/2 rows agree" in out and "0/1 blocks agree" in out


@pytest.mark.slow  # the notebooks run the same experiments by default
def test_activations_and_unstable_gradients(tmp_path):
    assert activations.main(["--quick", "--out", str(tmp_path)]) == 0
    sat = activations_experiment.saturation()["rows"]
    np.testing.assert_allclose(sat[0]["sigma'(z)"], 0.25, rtol=1e-6)
    assert unstable_gradients.main(["--quick", "--out", str(tmp_path)]) == 0
    lin = unstable_gradients_experiment.linear_example((10,))["rows"]
    np.testing.assert_allclose(lin[0]["dy^/dx_1"], 1.5**9, rtol=1e-5)
    np.testing.assert_allclose(lin[1]["dy^/dx_1"], 0.5**9, rtol=1e-5)


@pytest.mark.slow  # the notebooks run the same experiments by default
def test_second_order_and_regularization(tmp_path):
    assert second_order.main(["--quick", "--iters", "10", "--out", str(tmp_path)]) == 0
    assert (
        regularization.main(["--quick", "--epochs", "2", "--out", str(tmp_path)]) == 0
    )
    assert (tmp_path / "regularization.csv").exists()
