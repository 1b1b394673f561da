"""A population in one call against a loop of ``fnn.fit`` calls: wall time.

The sweep of the README's "Sweeps" section: 4 learning rates x 5 seeds of a
64-128-10 ReLU MLP on the bundled digits (inputs scaled to [0, 1], 1400
training and 397 dev examples), Adam, batch 32, a dev set and early stopping
(patience 3). Measured twice each, as a notebook user runs it:

  * loop: ``for lr in rates: for seed in seeds: fnn.fit(init(seed),
    fnn.optim.adam(lr), ...)`` (``adam(lr)`` built per run as a notebook
    does; equal arguments give the same optimizer, so the loop compiles once
    per rate);
  * sweep: one ``fnn.sweep(params (20, ...), lambda lr: fnn.optim.adam(lr),
    ..., hyperparams={"lr": (20,)})`` call, compiled once; its second call
    (other values, same configuration) reuses the program.

Both compute the same runs: the largest difference between the sweep's and
the loop's dev-loss histories is reported too. A second table does the same
for the XOR initialization experiment of [Neacșu & Vasilescu, Does the starting
point matter?]: 20 seeds of the 2-4-1 sigmoid network, 1000 full-batch epochs,
a loop of ``fnn.fit`` against one ``fnn.experiments.xor_init.train_population``
call.

    python benchmarks/sweep.py [--quick] [--epochs 20] [--out benchmarks/results]

Writes ``sweep.json`` and ``sweep.md`` in ``--out``.
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import fnn

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
RATES = (3e-4, 1e-3, 3e-3, 1e-2)


def _adam(lr):
    return fnn.optim.adam(lr)


def measure(
    rates, seeds: int, epochs: int, hidden: int, n_train: int, repeat_loop=True
) -> dict:
    ds = fnn.datasets.load_digits()
    X, y = np.asarray(ds.X, np.float32) / 16, np.asarray(ds.y)
    X_train, y_train, dev = X[:n_train], y[:n_train], (X[1400:], y[1400:])
    sizes = [64, hidden, 10]
    members = [(lr, s) for lr in rates for s in range(seeds)]
    kw = dict(epochs=epochs, batch_size=32, dev=dev, patience=3)
    compiles: list[float] = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(duration)

    def init(seed):
        return fnn.init_params(jax.random.key(seed), sizes, "he_normal")

    def loop():
        out = []
        for lr, s in members:
            r = fnn.fit(
                init(s),
                fnn.optim.adam(lr),
                X_train,
                y_train,
                key=jax.random.key(100 + s),
                progress=False,
                **kw,
            )
            out.append(r)
        jax.block_until_ready(out[-1].params)
        return out

    init_population = jax.jit(jax.vmap(init))  # one compiled call, not op by op

    def population():
        params = init_population(jnp.asarray([s for _, s in members]))
        keys = jax.vmap(jax.random.key)(jnp.asarray([100 + s for _, s in members]))
        lrs = jnp.asarray([lr for lr, _ in members], jnp.float32)
        r = fnn.sweep(
            params, _adam, X_train, y_train, key=keys, hyperparams={"lr": lrs}, **kw
        )
        jax.block_until_ready(r.params)
        return r

    def timed(fn):
        before, t0 = len(compiles), time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0, len(compiles) - before

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fits, loop_first, loop_first_c = timed(loop)
        if repeat_loop:
            _, loop_second, loop_second_c = timed(loop)
        else:  # quick mode: the loop's second call costs what its first did
            loop_second, loop_second_c = loop_first, loop_first_c
        swept, sweep_first, sweep_first_c = timed(population)
        _, sweep_second, sweep_second_c = timed(population)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    diff = max(
        float(
            np.nanmax(
                np.abs(
                    swept.history["dev_loss"][i, : len(f.history["dev_loss"])]
                    - np.asarray(f.history["dev_loss"])
                )
            )
        )
        for i, f in enumerate(fits)
    )
    return {
        "members": len(members),
        "rates": list(rates),
        "seeds": seeds,
        "epochs": epochs,
        "sizes": sizes,
        "n_train": n_train,
        "loop_first_s": loop_first,
        "loop_second_s": loop_second,
        "sweep_first_s": sweep_first,
        "sweep_second_s": sweep_second,
        "compiles": {
            "loop_first": loop_first_c,
            "loop_second": loop_second_c,
            "sweep_first": sweep_first_c,
            "sweep_second": sweep_second_c,
        },
        "speedup_first": loop_first / sweep_first,
        "speedup_second": loop_second / sweep_second,
        "max_dev_loss_difference": diff,
        "epochs_run": swept.epochs_run.tolist(),
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}"
        f" ({jax.devices()[0].device_kind})",
        "jax": jax.__version__,
    }


def measure_xor(seeds: int, epochs: int) -> dict:
    """The XOR experiment: ``seeds`` separate fit runs against one sweep."""
    from fnn.experiments import xor_init

    X, y = xor_init.xor_data()
    params, _ = xor_init.population(seeds)
    runs = len(jax.tree.leaves(params)[0])  # every initialization scheme's seeds
    members = [jax.tree.map(lambda a, i=i: a[i], params) for i in range(runs)]
    kw = dict(
        key=jax.random.key(0),
        epochs=epochs,
        batch_size=4,
        activation="sigmoid",
        loss="bce",
        grad="manual",
        progress=False,
    )

    def loop():
        out = [fnn.fit(p, fnn.optim.sgd(0.1, 0.99), X, y, **kw) for p in members]
        return jax.block_until_ready(out[-1].params), out

    def population():
        return xor_init.train_population(params, epochs=epochs)

    times = {}
    for name, fn in (("loop", loop), ("sweep", population)):
        for call in ("first", "second"):
            t0 = time.perf_counter()
            out = fn()
            times[f"{name}_{call}_s"] = time.perf_counter() - t0
            if name == "loop":
                fits = out[1]
            else:
                swept_outputs = out[0]
    apply = lambda p: fnn.apply(p, X, activation="sigmoid", output="sigmoid")  # noqa: E731
    loop_outputs = np.stack([np.asarray(apply(f.params))[:, 0] for f in fits])
    return {
        "seeds": seeds,
        "runs": runs,
        "epochs": epochs,
        **times,
        "speedup_first": times["loop_first_s"] / times["sweep_first_s"],
        "speedup_second": times["loop_second_s"] / times["sweep_second_s"],
        "max_output_difference": float(np.max(np.abs(loop_outputs - swept_outputs))),
        "same_failures": bool(
            np.array_equal(
                xor_init.failures(loop_outputs), xor_init.failures(swept_outputs)
            )
        ),
    }


def markdown(r: dict) -> str:
    c = r["compiles"]
    rates = ", ".join(f"{lr:g}" for lr in r["rates"])
    return "\n".join(
        [
            "# A sweep in one call against a loop of fit calls",
            "",
            f"{len(r['rates'])} learning rates ({rates}) x {r['seeds']} seeds = "
            f"{r['members']} runs of a {'-'.join(map(str, r['sizes']))} ReLU MLP "
            f"on digits ({r['n_train']} training examples), Adam, batch 32, up to "
            f"{r['epochs']} epochs with a dev set and patience 3; {r['machine']}, "
            f"jax {r['jax']}. Epochs run per member: {r['epochs_run']}.",
            "",
            "| | loop of `fnn.fit` | one `fnn.sweep` | loop / sweep |",
            "| --- | --- | --- | --- |",
            f"| first call | {r['loop_first_s']:.2f} s ({c['loop_first']} "
            f"compilations) | {r['sweep_first_s']:.2f} s ({c['sweep_first']}) | "
            f"{r['speedup_first']:.1f}x |",
            f"| second call | {r['loop_second_s']:.2f} s ({c['loop_second']}) | "
            f"{r['sweep_second_s']:.2f} s ({c['sweep_second']}) | "
            f"{r['speedup_second']:.1f}x |",
            "",
            "Same runs: the largest difference between the sweep's and the loop's "
            f"dev-loss histories is {r['max_dev_loss_difference']:.1e}. The loop "
            "builds `fnn.optim.adam(lr)` per run; equal arguments give the same "
            "optimizer, so it compiles once per rate; the sweep's optimizer "
            "factory is the same function in both calls, so its second call "
            "compiles nothing.",
            "",
        ]
        + (_xor_markdown(r["xor"]) if "xor" in r else [])
    )


def _xor_markdown(x: dict) -> list[str]:
    return [
        f"## XOR initialization experiment: {x['runs']} runs ({x['seeds']} seeds "
        f"per initialization scheme), {x['epochs']} epochs",
        "",
        "| | loop of `fnn.fit` | one `fnn.sweep` | loop / sweep |",
        "| --- | --- | --- | --- |",
        f"| first call | {x['loop_first_s']:.2f} s | {x['sweep_first_s']:.2f} s | "
        f"{x['speedup_first']:.1f}x |",
        f"| second call | {x['loop_second_s']:.2f} s | {x['sweep_second_s']:.2f} s "
        f"| {x['speedup_second']:.1f}x |",
        "",
        f"Largest difference between the two runs' outputs: "
        f"{x['max_output_difference']:.1e}; same failures: {x['same_failures']}.",
        "",
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 rates x 1 seed, 1 epoch, 16 wide"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        result = measure(RATES[1:3], 1, 1, 16, 128, repeat_loop=False)
        result["xor"] = measure_xor(2, 5)
    else:
        result = measure(RATES, args.seeds, args.epochs, 128, 1400)
        result["xor"] = measure_xor(20, 1000)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    (out / "sweep.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
