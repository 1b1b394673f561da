"""Per-example gradients: fnn's backward (A_prev[i]ᵀ dZ[i]) against
``jax.vmap(jax.grad(loss))``.

What is measured, for an MLP (ReLU hidden layers, softmax cross-entropy, random
float32 data and integer labels), each function jitted:

  * ``per_example_grads``: the MLP form, one batch forward and one batch
    backward whose dense layers keep the rows of dW apart (an einsum);
  * ``per_example_grads(blocks=)``: the same model as blocks, each block's own
    backward mapped over the examples' cache rows;
  * ``vmap(grad)``: ``jax.vmap`` of ``jax.grad`` of the single-example loss;
  * ``backprop (batch)``: the batch gradient alone, the floor.

Time: the median over rounds (rows measured round-robin, so a change in the
machine's load hits every row alike) of the mean time of ``reps`` calls.
Memory: the compiled program's temporary buffers (XLA's
``memory_analysis().temp_size_in_bytes``), besides its inputs and outputs (the
m per-example gradients themselves are outputs: m times the parameters).
The largest difference between the per-example results and vmap(grad)'s is
reported too.

Usage::

    python benchmarks/per_example.py --out benchmarks/results        # full run
    python benchmarks/per_example.py --quick --out /tmp/per_example   # seconds

Writes ``per_example.md`` and ``per_example.json`` under ``--out``.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn

FULL = {"sizes": (784, 256, 256, 10), "batch": 256, "rounds": 7, "reps": 10}
QUICK = {"sizes": (16, 8, 4), "batch": 8, "rounds": 2, "reps": 2}


def _functions(sizes):
    model = fnn.mlp(list(sizes), activation="relu")

    def by_hand(params, x, y):
        return fnn.per_example_grads(params, x, y, activation="relu")

    def by_blocks(params, x, y):
        return fnn.per_example_grads(params, x, y, blocks=model)

    def vmap_grad(params, x, y):
        def one(xi, yi):
            return jax.grad(fnn.loss)(params, xi[None], yi[None], activation="relu")

        return jax.vmap(one)(x, y)

    def batch(params, x, y):
        return fnn.backprop(params, x, y, activation="relu")[1]

    return {
        "per_example_grads": by_hand,
        "per_example_grads(blocks=)": by_blocks,
        "vmap(grad)": vmap_grad,
        "backprop (batch)": batch,
    }


def _temp_bytes(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def run(sizes, batch, rounds, reps) -> dict:
    key = jax.random.key(0)
    params = fnn.init_params(key, sizes)
    x = jax.random.normal(jax.random.key(1), (batch, sizes[0]), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (batch,), 0, sizes[-1])
    rows = {}
    compiled = {}
    for name, fn in _functions(sizes).items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(params, x, y).compile()
        jax.block_until_ready(compiled[name](params, x, y))
        rows[name] = {
            "compile_s": time.perf_counter() - t0,
            "temp_bytes": _temp_bytes(compiled[name]),
            "times": [],
        }
    for _ in range(rounds):
        for name, fn in compiled.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                out = fn(params, x, y)
            jax.block_until_ready(out)
            rows[name]["times"].append((time.perf_counter() - t0) / reps)
    reference = compiled["vmap(grad)"](params, x, y)
    for name in ("per_example_grads", "per_example_grads(blocks=)"):
        diff = jax.tree.map(
            lambda a, b: float(jnp.max(jnp.abs(a - b))),
            compiled[name](params, x, y),
            reference,
        )
        rows[name]["max_abs_diff_vs_vmap_grad"] = max(jax.tree.leaves(diff))
    for row in rows.values():
        row["median_ms"] = 1e3 * statistics.median(row.pop("times"))
    return {
        "sizes": list(sizes),
        "batch": batch,
        "rounds": rounds,
        "reps": reps,
        "n_params": int(sum(np.size(p) for p in jax.tree.leaves(params))),
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "rows": rows,
    }


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:.2f}"


def markdown(result: dict) -> str:
    rows = result["rows"]
    ref = rows["vmap(grad)"]
    lines = [
        "# Per-example gradients: fnn's backward vs vmap(grad)",
        "",
        f"MLP {'-'.join(map(str, result['sizes']))} (ReLU, softmax cross-entropy), "
        f"batch {result['batch']}, float32, {result['n_params']} parameters; "
        f"{result['backend']} ({result['device']}, {result['cpu_count']} cores), "
        f"jax {result['jax']}"
        + (
            f", load average {result['load_average'][0]:.1f} when done"
            if result.get("load_average")
            else ""
        )
        + f". Median over {result['rounds']} rounds of "
        f"{result['reps']} calls each; temporary memory from XLA's memory "
        "analysis of the compiled program (outputs not included: the per-example "
        f"gradients themselves are {result['batch']} × the parameters).",
        "",
        "| function | time (ms) | vs vmap(grad) | temp memory (MiB) "
        "| compile (s) | max abs diff vs vmap(grad) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        diff = row.get("max_abs_diff_vs_vmap_grad")
        lines.append(
            f"| {name} | {row['median_ms']:.3f} "
            f"| {row['median_ms'] / ref['median_ms']:.2f}× "
            f"| {_mib(row['temp_bytes'])} | {row['compile_s']:.2f} "
            f"| {'' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    result = run(**config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "per_example.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "per_example.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
