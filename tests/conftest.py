"""Test configuration: strict dtype promotion and NaN checking for the whole suite.

``jax_debug_nans`` makes any NaN produced inside a jitted computation raise, so a
numerically unsafe forward or backward fails the test that produced it. Tests that
plant NaN on purpose turn it off locally with ``jax.debug_nans(False)``.

Property tests draw their examples deterministically by default (profile
``repeatable``), so a run of ``make test`` gives the same verdict on every machine;
``make test-all`` uses the ``explore`` profile, which draws fresh random examples
ten times as often, to look for new counterexamples. Choose one with
``--hypothesis-profile``.
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest
from hypothesis import HealthCheck, settings

import fnn

jax.config.update("jax_debug_nans", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

_common = dict(
    deadline=None,  # the first example of a test includes its jit compilation
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("repeatable", derandomize=True, **_common)
settings.register_profile("explore", derandomize=False, **_common)
settings.load_profile("repeatable")


def examples(n: int) -> int:
    """The number of examples a property test draws: n, or 10·n when exploring."""
    return n if settings.default.derandomize else 10 * n


def run_on_four_cpu_devices(code: str) -> dict:
    """Run ``code`` in a fresh Python with 4 simulated CPU devices and this
    checkout's fnn; return the JSON of its last ``RESULT{...}`` line."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def markdown_tables(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``: runs of lines starting with ``|``."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on every call (deterministic per test)."""
    counter = itertools.count()
    base = jax.random.key(0)

    def _getkey():
        return jax.random.fold_in(base, next(counter))

    return _getkey


@pytest.fixture
def digits_test_accuracy():
    """Train the reference digits MLP (64-128-10 relu, Adam 1e-3, L2 1e-4, 30
    epochs of batch 32, manual gradients, standardized inputs, seed 0) and return
    its test accuracy; keyword arguments are passed on to ``fnn.fit``."""

    def run(**fit_kwargs):
        data = fnn.datasets.load_digits()
        keys = fnn.data.run_keys(jax.random.key(0))
        split = fnn.data.train_dev_test_split(keys.split, data.X, data.y, stratify=True)
        scaler = fnn.data.fit_standardize(split.X_train)
        params = fnn.init_params(keys.init, [64, 128, 10])
        result = fnn.fit(
            params,
            fnn.optim.adam(1e-3),
            scaler.transform(split.X_train),
            split.y_train,
            key=keys.shuffle,
            epochs=30,
            batch_size=32,
            dev=(scaler.transform(split.X_dev), split.y_dev),
            l2=1e-4,
            grad="manual",
            progress=False,
            **fit_kwargs,
        )
        X_test = scaler.transform(split.X_test)
        return fnn.evaluate(result.params, X_test, split.y_test)["accuracy"]

    return run
