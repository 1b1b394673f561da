"""Sequence-model benchmark: manual backward against ``jax.grad``, and the
memory that recomputation saves.

What is measured (float32, random token ids, the token-mean sequence
cross-entropy, AdamW):

  * one training step -- forward, gradient, AdamW update -- of a small GPT
    (:func:`fnn.models.gpt`) and of an LSTM language model
    (:func:`fnn.models.lstm_lm`), jitted with the parameters and optimizer
    state donated, the gradient taken by fnn's hand-written backward
    (``fnn.backprop``) or by ``jax.grad`` of ``fnn.loss``;
  * the GPT also with ``recompute=True`` (:func:`fnn.nn.Recompute` around the
    attention and the MLP branch of every block): the manual backward re-runs
    those branches' forward; ``jax.grad`` then sees ``jax.checkpoint``;
  * XLA's compiled temporary memory of each step
    (``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``):
    the buffers the step needs besides its arguments and outputs, the stored
    activations among them.

Rows of one model are timed round-robin (row 1, row 2, ..., row 1, ...) so a
change in the machine's load hits every row alike; each time is the median
over the rounds, and every ratio is taken against the ``jax.grad`` row of the
same model in the same run. No test asserts a time.

Usage::

    python benchmarks/sequence.py --out benchmarks/results      # full, ~3 min
    python benchmarks/sequence.py --quick --out /tmp/seq         # seconds

Writes ``sequence.md`` (Markdown tables) and ``sequence.json`` under ``--out``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

try:
    import fnn
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fnn
from fnn import nn
from fnn.models import gpt, lstm_lm

CONFIGS = {
    "full": {
        "gpt": dict(vocab=96, d=128, heads=4, layers=4, context=128, batch=32),
        "lstm": dict(vocab=96, d=64, hidden=128, T=64, batch=32),
        "rounds": 5,
        "steps": 2,
    },
    "quick": {
        "gpt": dict(vocab=11, d=16, heads=2, layers=1, context=8, batch=4),
        "lstm": dict(vocab=11, d=8, hidden=8, T=8, batch=4),
        "rounds": 2,
        "steps": 1,
    },
}
LEARNING_RATE = 1e-3
MANUAL, AUTODIFF = "manual backward", "jax.grad"


def train_step(model, grad: str):
    """One jitted AdamW step ``(params, opt_state, x, y) -> (params, opt_state,
    J)`` of ``model``, the gradient by ``"manual"`` backprop or ``"autodiff"``."""
    optimizer = fnn.optim.adamw(LEARNING_RATE, weight_decay=0.1)
    kw = dict(loss="sequence_cross_entropy", blocks=model)

    def step(params, opt_state, x, y):
        if grad == "manual":
            J, g = fnn.backprop(params, x, y, **kw)
        else:
            J, g = jax.value_and_grad(lambda p: fnn.loss(p, x, y, **kw))(params)
        updates, opt_state = optimizer.update(g, opt_state, params)
        return fnn.optim.apply_updates(params, updates), opt_state, J

    return optimizer, jax.jit(step, donate_argnums=(0, 1))


def make_row(label, model, grad, T, vocab, batch, key):
    """A row: its compiled step, temporary memory and a runner of n steps."""
    params, _ = nn.init(key, model, (T,))
    optimizer, step = train_step(model, grad)
    opt_state = optimizer.init(params)
    x = jax.random.randint(jax.random.fold_in(key, 1), (batch, T), 0, vocab)
    y = jax.random.randint(jax.random.fold_in(key, 2), (batch, T), 0, vocab)
    compiled = step.lower(params, opt_state, x, y).compile()
    memory = compiled.memory_analysis()
    carry = [params, opt_state]

    def run(n):
        params, opt_state = carry
        for _ in range(n):
            params, opt_state, J = compiled(params, opt_state, x, y)
        jax.block_until_ready(J)
        carry[:] = [params, opt_state]

    run(1)  # warm up
    return {
        "row": label,
        "run": run,
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
    }


def time_rows(rows, rounds, steps):
    """Round-robin timing: per row the median seconds per step over rounds."""
    times = {r["row"]: [] for r in rows}
    for _ in range(rounds):
        for r in rows:
            t0 = time.perf_counter()
            r["run"](steps)
            times[r["row"]].append((time.perf_counter() - t0) / steps)
    for r in rows:
        r["ms_per_step"] = 1e3 * statistics.median(times[r["row"]])
        ratios = [a / b for a, b in zip(times[AUTODIFF], times[r["row"]], strict=True)]
        r["speed_vs_jax_grad_per_round"] = [min(ratios), max(ratios)]
    reference = next(r for r in rows if r["row"] == AUTODIFF)
    for r in rows:
        # > 1: faster than jax.grad; memory < 1: less temporary memory.
        r["speed_vs_jax_grad"] = reference["ms_per_step"] / r["ms_per_step"]
        r["temp_vs_jax_grad"] = r["temp_bytes"] / reference["temp_bytes"]
        del r["run"]
    return rows


def bench_gpt(cfg, rounds, steps, key):
    c = dict(cfg)
    batch = c.pop("batch")
    plain = gpt(**c)
    redo = gpt(**c, recompute=True)
    rows = [
        make_row(AUTODIFF, plain, "autodiff", c["context"], c["vocab"], batch, key),
        make_row(MANUAL, plain, "manual", c["context"], c["vocab"], batch, key),
        make_row(
            MANUAL + ", recompute", redo, "manual", c["context"], c["vocab"], batch, key
        ),
        make_row(
            AUTODIFF + ", recompute (jax.checkpoint)",
            redo,
            "autodiff",
            c["context"],
            c["vocab"],
            batch,
            key,
        ),
    ]
    return time_rows(rows, rounds, steps)


def bench_lstm(cfg, rounds, steps, key):
    c = dict(cfg)
    model = lstm_lm(c["vocab"], c["d"], c["hidden"])
    rows = [
        make_row(AUTODIFF, model, "autodiff", c["T"], c["vocab"], c["batch"], key),
        make_row(MANUAL, model, "manual", c["T"], c["vocab"], c["batch"], key),
    ]
    return time_rows(rows, rounds, steps)


def _mb(n):
    return f"{n / 1e6:.3g}"


def _table(rows):
    lines = [
        "| row | ms/step | speed × jax.grad | per-round range | temp memory (MB) "
        "| memory × jax.grad |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi = r["speed_vs_jax_grad_per_round"]
        lines.append(
            f"| {r['row']} | {r['ms_per_step']:.3g} | {r['speed_vs_jax_grad']:.2f} "
            f"| {lo:.2f}–{hi:.2f} | {_mb(r['temp_bytes'])} "
            f"| {r['temp_vs_jax_grad']:.2f} |"
        )
    return lines


def summary(res) -> dict:
    """The recompute saving: manual backward with and without recompute."""
    rows = {r["row"]: r for r in res["gpt"]}
    plain, redo = rows[MANUAL], rows[MANUAL + ", recompute"]
    return {
        "temp_bytes_without": plain["temp_bytes"],
        "temp_bytes_with": redo["temp_bytes"],
        "memory_saved_fraction": 1 - redo["temp_bytes"] / plain["temp_bytes"],
        "time_paid_fraction": redo["ms_per_step"] / plain["ms_per_step"] - 1,
    }


def markdown(res) -> str:
    meta, g, lstm = res["meta"], res["config"]["gpt"], res["config"]["lstm"]
    rc = res["recompute"]
    lines = [
        "# fnn sequence benchmark",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; JAX {meta['jax']} on {meta['backend']}; "
        f"load average {meta['load_start']} at start, {meta['load_end']} at end; "
        f"{meta['seconds']:.0f} s.",
        "",
        "One training step (forward, gradient, AdamW; jitted, donated), float32, "
        "random token ids. ms/step: median over rounds; speed × jax.grad: the "
        "jax.grad row's time over the row's (> 1 is faster), medians and, per "
        "round, the lowest and highest; temp memory: XLA's compiled temporary "
        "memory of the step (`memory_analysis().temp_size_in_bytes`).",
        "",
        f"## GPT (vocab {g['vocab']}, width {g['d']}, {g['heads']} heads, "
        f"{g['layers']} layers, context {g['context']}, batch {g['batch']})",
        "",
        *_table(res["gpt"]),
        "",
        f"Recompute (manual backward): temporary memory {_mb(rc['temp_bytes_without'])}"
        f" MB → {_mb(rc['temp_bytes_with'])} MB "
        f"({100 * rc['memory_saved_fraction']:.0f}% saved), for "
        f"{100 * rc['time_paid_fraction']:+.0f}% time per step. "
        "`jax.checkpoint` asks XLA for the same recomputation under `jax.grad`, "
        "but relies on `lax.optimization_barrier`, which XLA's CPU compiler "
        "drops: on CPU its re-run merges with the forward and nothing is saved. "
        "`fnn.nn.Recompute` makes its re-run depend on the incoming error, so "
        "it is kept on every backend.",
        "",
        f"## LSTM language model (vocab {lstm['vocab']}, embedding {lstm['d']}, "
        f"hidden {lstm['hidden']}, T {lstm['T']}, batch {lstm['batch']})",
        "",
        *_table(res["lstm"]),
        "",
    ]
    return "\n".join(lines)


def _load():
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    args = parser.parse_args(argv)
    cfg = CONFIGS["quick" if args.quick else "full"]
    start, load_start = time.perf_counter(), _load()
    key = jax.random.key(0)
    res = {
        "config": {"gpt": cfg["gpt"], "lstm": cfg["lstm"], "rounds": cfg["rounds"]},
        "gpt": bench_gpt(cfg["gpt"], cfg["rounds"], cfg["steps"], key),
        "lstm": bench_lstm(cfg["lstm"], cfg["rounds"], cfg["steps"], key),
    }
    res["recompute"] = summary(res)
    res["meta"] = {
        "command": "python benchmarks/sequence.py"
        + (" --quick" if args.quick else "")
        + f" --out {args.out}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_start": load_start,
        "load_end": _load(),
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sequence.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "sequence.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
