"""Repeated ``fnn.fit`` calls: wall time and compilations of N identical calls.

``fit`` keeps its compiled epoch and evaluation functions in a module-level
cache keyed by the configuration (model, optimizer, loss, sizes), so only the
first of N identical calls compiles. This measures N calls against one on the
bundled digits (64-64-10 MLP, Adam, batch 32, dev set, early stopping off) and
counts XLA compilations with ``jax.monitoring``; the ratio is what a loop of
runs (seeds, a notebook cell run again) saves.

    python benchmarks/fit_reuse.py [--quick] [--calls 10] [--out benchmarks/results]

Writes ``fit_reuse.json`` and ``fit_reuse.md`` in ``--out``.
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

import fnn

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def measure(calls: int, epochs: int) -> dict:
    ds = fnn.datasets.load_digits()
    X, y = np.asarray(ds.X, np.float32) / 16, np.asarray(ds.y)
    X_train, y_train, dev = X[:1400], y[:1400], (X[1400:], y[1400:])
    params = fnn.init_params(jax.random.key(0), [64, 64, 10])
    optimizer = fnn.optim.adam(1e-3)
    compiles: list[float] = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    seconds, counts = [], []
    try:
        for _ in range(calls):
            before, t0 = len(compiles), time.perf_counter()
            fnn.fit(
                params,
                optimizer,
                X_train,
                y_train,
                key=jax.random.key(1),
                epochs=epochs,
                batch_size=32,
                dev=dev,
                progress=False,
            )
            seconds.append(time.perf_counter() - t0)
            counts.append(len(compiles) - before)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return {
        "calls": calls,
        "epochs": epochs,
        "seconds_per_call": seconds,
        "compiles_per_call": counts,
        "first_call_s": seconds[0],
        "later_call_median_s": float(np.median(seconds[1:])),
        "total_s": float(sum(seconds)),
        "total_over_first": float(sum(seconds) / seconds[0]),
        "later_over_first": float(np.median(seconds[1:]) / seconds[0]),
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}",
        "jax": jax.__version__,
    }


def markdown(r: dict) -> str:
    return "\n".join(
        [
            "# Repeated fit calls",
            "",
            f"{r['calls']} identical `fnn.fit` calls on digits (64-64-10, Adam, "
            f"batch 32, "
            f"{r['epochs']} epochs, dev set), {r['machine']}, jax {r['jax']}.",
            "",
            "| quantity | value |",
            "| --- | --- |",
            f"| first call | {r['first_call_s']:.2f} s, {r['compiles_per_call'][0]} "
            "compilations |",
            f"| later calls (median) | {r['later_call_median_s']:.3f} s, "
            f"{max(r['compiles_per_call'][1:])} compilations at most |",
            f"| later / first | {r['later_over_first']:.3f} |",
            f"| all {r['calls']} calls / first | {r['total_over_first']:.2f} |",
            "",
        ]
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 calls of 2 epochs")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    calls, epochs = (3, 2) if args.quick else (args.calls, args.epochs)
    result = measure(calls, epochs)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit_reuse.json").write_text(json.dumps(result, indent=2))
    (out / "fit_reuse.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
