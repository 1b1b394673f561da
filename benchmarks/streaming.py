"""Streaming vs in-memory training: throughput, and memory over a file larger
than the process may hold.

1. Throughput, in one process: ``fnn.fit`` on arrays in memory against
   ``fnn.stream.fit_stream`` on the same data memory-mapped from ``.npy`` files,
   the 784-256-256-10 MLP (relu, Adam), batch 128, one epoch of ``--n``
   examples, compilation excluded (a warm-up call first), best of ``--repeats``.
   ``fit`` also evaluates the training set after the epoch (one forward pass,
   which streaming does not do): its time is measured apart and reported both
   ways.
2. Memory: one epoch over a float32 file of ``--gigabytes`` GB in a child
   process allowed to hold ``--limit-mb`` of resident memory, several times
   less than the file: a thread reads ``VmRSS`` every 0.1 s and kills the
   process when it exceeds the limit (``RLIMIT_AS`` cannot serve: XLA's
   compiler alone needs about 2 GB of address space). The model is the
   784-10 softmax regression, so that the epoch is bound by reading the data
   (this machine trains the large MLP at a few thousand examples/s). The source
   reads rows with ``os.pread`` (an example of the two-member source protocol:
   nothing is mapped, nothing kept). The peak (``VmHWM``) and samples through
   the epoch are reported: flat means the data never accumulates.
   The same epoch over a memmap (no limit) is reported too: its file-backed
   pages count in ``VmRSS`` (``RssFile``) as the kernel keeps them mapped,
   while the process's own memory (``RssAnon``) stays flat; the kernel drops
   file pages under pressure.

    python benchmarks/streaming.py [--quick] [--out benchmarks/results]

The data files go to ``--tmp`` (default /tmp; free space is checked first) and
are deleted at the end. Writes ``streaming.json`` and ``streaming.md``.
"""

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import numpy as np

import fnn
import fnn.stream

SIZES = [784, 256, 256, 10]
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(folder: pathlib.Path, n: int, seed: int = 0, chunk: int = 65536):
    """x.npy (n, 784) float32 and y.npy (n,) int32, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(784, 10)).astype(np.float32)
    X = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (n, 784))
    y = np.lib.format.open_memmap(folder / "y.npy", "w+", np.int32, (n,))
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        x = rng.normal(size=(b - a, 784)).astype(np.float32)
        X[a:b] = x
        y[a:b] = np.argmax(x @ W, axis=1)
    X.flush()
    y.flush()
    del X, y


def throughput(folder: pathlib.Path, n: int, repeats: int, steps_per_call: int):
    X = np.load(folder / "x.npy")
    y = np.load(folder / "y.npy")
    source = fnn.stream.from_npy(folder / "x.npy", folder / "y.npy")
    params = fnn.init_params(jax.random.key(0), SIZES)
    # one optimizer object: the compiled loops are reused from call to call
    adam = fnn.optim.adam(1e-3)
    kw = dict(key=jax.random.key(1), epochs=1, batch_size=128, progress=False)

    def run_fit():
        r = fnn.fit(params, adam, X, y, **kw)
        jax.block_until_ready(r.params)

    def run_stream():
        r = fnn.stream.fit_stream(
            params,
            adam,
            source,
            steps_per_call=steps_per_call,
            **kw,
        )
        jax.block_until_ready(r.params)

    Xd, yd = jax.numpy.asarray(X), jax.numpy.asarray(y)
    obj = fnn._fit._objective(
        None, "relu", "cross_entropy", None, 0.0, 0.0, 0.0, "autodiff", None, "b"
    )

    def run_eval():
        jax.block_until_ready(fnn._fit._evaluate(obj, params, None, Xd, yd))

    def run_stream_one_call():  # the whole epoch in one call: no overlap
        r = fnn.stream.fit_stream(
            params, adam, source, steps_per_call=n, **kw
        )
        jax.block_until_ready(r.params)

    runs = {
        "fit": run_fit,
        "stream": run_stream,
        "stream_one_call": run_stream_one_call,
        "eval": run_eval,
    }
    for fn in runs.values():
        fn()  # compile
    times = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):  # interleaved: the machine's load hits all alike
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t)
    steps_only = times["fit"] - times["eval"]
    return {
        "n": n,
        "steps_per_call": steps_per_call,
        "fit_seconds": times["fit"],
        "fit_train_eval_seconds": times["eval"],
        "stream_seconds": times["stream"],
        "fit_examples_per_s": n / times["fit"],
        "fit_steps_only_examples_per_s": n / steps_only,
        "stream_examples_per_s": n / times["stream"],
        "stream_one_call_seconds": times["stream_one_call"],
        "load_average": os.getloadavg(),
        "ratio_vs_fit": times["fit"] / times["stream"],
        "ratio_vs_fit_steps_only": steps_only / times["stream"],
    }


_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, threading, time
    limit_mb, folder, mode, steps_per_call = sys.argv[1:5]
    limit_mb = int(limit_mb)
    import numpy as np, jax, fnn, fnn.stream

    def status():
        out = {}
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024  # MB
        return out

    class PreadSource:
        # Rows of a float32 .npy read with os.pread: nothing mapped, nothing kept.
        def __init__(self, folder):
            path = os.path.join(folder, "x.npy")
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, _ = read(f)
                self.offset = f.tell()
            self.fd = os.open(path, os.O_RDONLY)
            self.n, self.d = shape
            self.y = np.load(os.path.join(folder, "y.npy"), mmap_mode="r")

        def __len__(self):
            return self.n

        def batch(self, indices):
            row = 4 * self.d
            x = np.empty((len(indices), self.d), np.float32)
            buf = memoryview(x).cast("B")
            for j, i in enumerate(indices):
                os.preadv(self.fd, [buf[j * row : (j + 1) * row]],
                          self.offset + int(i) * row)
            order = np.argsort(indices)
            y = np.empty(len(indices), self.y.dtype)
            y[order] = self.y[indices[order]]
            return x, y

    source = (PreadSource(folder) if mode == "pread"
              else fnn.stream.from_npy(f"{folder}/x.npy", f"{folder}/y.npy"))
    samples, done = [], False

    def sample():
        t0 = time.perf_counter()
        while not done:
            s = status()
            samples.append((time.perf_counter() - t0, s))
            if limit_mb and s["VmRSS"] > limit_mb:  # the limit, enforced
                print(f"resident set {s['VmRSS']:.0f} MB over the limit", flush=True)
                os._exit(3)
            time.sleep(0.1)

    params = fnn.init_params(jax.random.key(0), [784, 10])
    kw = dict(key=jax.random.key(1), batch_size=128, progress=False,
              steps_per_call=int(steps_per_call))
    # compile first (a warm-up on a few chunks' worth), then measure one epoch
    warm = fnn.stream.subset(source, np.arange(2 * 128 * int(steps_per_call)))
    adam = fnn.optim.adam(1e-3)  # one object: the compiled loop is reused
    fnn.stream.fit_stream(params, adam, warm, epochs=1, **kw)
    before = status()
    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    r = fnn.stream.fit_stream(params, adam, source, epochs=1, **kw)
    jax.block_until_ready(r.params)
    seconds = time.perf_counter() - t
    done = True
    print("RESULT" + json.dumps(dict(before=before, after=status(), seconds=seconds,
          samples=samples, loss=r.history["train_loss"][0])))
    """
)


def memory(folder: pathlib.Path, limit_mb: int, mode: str, steps_per_call: int):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit_mb), str(folder), mode,
         str(steps_per_call)],
        env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")][-1]
    r = json.loads(line[len("RESULT") :])
    if not r["samples"]:
        raise RuntimeError("no sample taken")
    rss = [s["VmRSS"] for _, s in r["samples"]]
    anon = [s["RssAnon"] for _, s in r["samples"]]
    k = len(rss)
    return {
        "mode": mode,
        "limit_mb": limit_mb,
        "seconds": r["seconds"],
        "rss_before_mb": r["before"]["VmRSS"],
        "peak_before_mb": r["before"]["VmHWM"],
        "peak_rss_mb": r["after"]["VmHWM"],
        "rss_at_10_50_90_percent_mb": [rss[int(f * (k - 1))] for f in (0.1, 0.5, 0.9)],
        "rss_anon_at_10_50_90_percent_mb": [
            anon[int(f * (k - 1))] for f in (0.1, 0.5, 0.9)
        ],
        "rss_file_end_mb": r["after"]["RssFile"],
        "samples": len(rss),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-per-call", type=int, default=64)
    p.add_argument("--gigabytes", type=float, default=2.0)
    p.add_argument("--limit-mb", type=int, default=700)
    p.add_argument("--tmp", default="/tmp")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.gigabytes, args.limit_mb = 8192, 1, 0.1, 700
    big_n = int(args.gigabytes * 2**30 / (784 * 4))
    free = shutil.disk_usage(args.tmp).free
    if free < 2 * args.gigabytes * 2**30 + 2**30:
        sys.exit(f"not enough free space in {args.tmp}: {free / 2**30:.1f} GB")
    results = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        small, big = pathlib.Path(tmp, "small"), pathlib.Path(tmp, "big")
        small.mkdir()
        big.mkdir()
        _write(small, args.n)
        results["throughput"] = throughput(
            small, args.n, args.repeats, args.steps_per_call
        )
        print(json.dumps(results["throughput"], indent=1), flush=True)
        t = time.perf_counter()
        _write(big, big_n)
        results["file_gb"] = os.path.getsize(big / "x.npy") / 2**30
        results["file_examples"] = big_n
        results["write_seconds"] = time.perf_counter() - t
        results["memory"] = [
            memory(big, args.limit_mb, "pread", args.steps_per_call),
            memory(big, 0, "memmap", args.steps_per_call),
        ]
        print(json.dumps(results["memory"], indent=1), flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "streaming.md").write_text(report(results, args.repeats))
    print(report(results, args.repeats))


def _mb(values) -> str:
    return " / ".join(f"{v:.0f}" for v in values) + " MB"


def report(results: dict, repeats: int) -> str:
    tp, (lim, mm) = results["throughput"], results["memory"]
    epoch_only = tp["fit_seconds"] - tp["fit_train_eval_seconds"]
    rows = [
        (
            "`fnn.fit`, in memory (epoch + train-set evaluation)",
            tp["fit_seconds"],
            tp["fit_examples_per_s"],
            tp["ratio_vs_fit"],
        ),
        (
            f"`fnn.fit`, epoch only (evaluation, {tp['fit_train_eval_seconds']:.2f}"
            " s, taken off)",
            epoch_only,
            tp["fit_steps_only_examples_per_s"],
            tp["ratio_vs_fit_steps_only"],
        ),
        (
            "`fnn.stream.fit_stream`, memmap",
            tp["stream_seconds"],
            tp["stream_examples_per_s"],
            1.0,
        ),
        (
            "`fnn.stream.fit_stream`, memmap, the epoch in one call (no overlap)",
            tp["stream_one_call_seconds"],
            tp["n"] / tp["stream_one_call_seconds"],
            tp["stream_one_call_seconds"] / tp["stream_seconds"],
        ),
    ]
    table = "\n".join(
        f"| {name} | {sec:.2f} | {rate:,.0f} | {ratio:.2f}x |"
        for name, sec, rate, ratio in rows
    )
    mem = "\n".join(
        f"| {name} | {limit} | {r['seconds']:.1f} | {r['rss_before_mb']:.0f} MB | "
        f"{_mb(r['rss_at_10_50_90_percent_mb'])} | {r['peak_rss_mb']:.0f} MB | "
        f"{_mb(r['rss_anon_at_10_50_90_percent_mb'])} |"
        for name, limit, r in (
            ("`os.pread` rows", f"{lim['limit_mb']} MB", lim),
            ("memmap (`from_npy`)", "none", mm),
        )
    )
    times = results["file_gb"] * 1024 / lim["limit_mb"]
    load = ", ".join(f"{v:.1f}" for v in tp["load_average"])
    return f"""# Streaming vs in-memory training

{results["machine"]}, {results["cpus"]} CPUs, jax {results["jax"]},
{results["device"]}. 784-256-256-10 MLP (relu, Adam 1e-3), batch 128, one
epoch, compilation excluded, best of {repeats}; `fit_stream` with
{tp["steps_per_call"]} steps per compiled call, the next chunk gathered from a
memmap in a background thread. `python benchmarks/streaming.py`.

## Throughput ({tp["n"]:,} examples)

| | seconds | examples/s | streaming / this |
|---|---:|---:|---:|
{table}

Target: streaming at >= 0.9x the in-memory throughput. Load average of the
(shared, 2-core) machine during the run: {load}.

## Memory: one epoch over a {results["file_gb"]:.2f} GB file \
({results["file_examples"]:,} examples)

| source | resident-set limit | seconds | RSS before | RSS at 10 / 50 / 90 % \
of the epoch | peak RSS (VmHWM) | anonymous RSS at 10 / 50 / 90 % |
|---|---:|---:|---:|---:|---:|---:|
{mem}

The file is {times:.1f}x the resident memory the first process may hold (a
watchdog kills it above the limit): the epoch completes, with a flat resident
set. A memmap's pages
are file-backed: they count in its RSS ({mm["rss_file_end_mb"]:.0f} MB of
`RssFile` at the end) while mapped, but belong to the page cache, which the
kernel reclaims under pressure; the process's own (anonymous) memory stays
flat.
"""


if __name__ == "__main__":
    main()
