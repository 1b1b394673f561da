"""Streaming (fnn.stream): host-side sources and the chunked, double-buffered loop
give what in-memory fit gives on the same data and key."""

import importlib.util
import json
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_on_four_cpu_devices

import fnn
import fnn.stream as st

ROOT = Path(__file__).resolve().parents[1]
SIZES = [8, 16, 3]


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], n).astype(np.int32)
    return X, y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``n -> (folder, X, y)``: x.npy and y.npy written once per size."""
    made = {}

    def get(n):
        if n not in made:
            d = tmp_path_factory.mktemp(f"data{n}")
            X, y = _data(n)
            np.save(d / "x.npy", X)
            np.save(d / "y.npy", y)
            made[n] = (d, X, y)
        return made[n]

    return get


KW = dict(key=jax.random.key(2), epochs=2, batch_size=16, progress=False)


def _params():
    return fnn.init_params(jax.random.key(1), SIZES)


@pytest.mark.parametrize(
    "n, extra",
    [
        (192, {}),
        (203, {}),
        pytest.param(203, {"drop_remainder": True}, marks=pytest.mark.slow),
    ],
    ids=["full-batches", "padded-last-batch", "drop-remainder"],
)
def test_memmap_equals_in_memory_fit(files, n, extra):
    # Same batches, same dropout keys, same step: the same bits.
    d, X, y = files(n)
    source = st.from_npy(d / "x.npy", d / "y.npy")
    assert isinstance(source.X, np.memmap)
    ref = fnn.fit(_params(), fnn.optim.adam(1e-2), X, y, **KW, **extra)
    got = st.fit_stream(
        _params(), fnn.optim.adam(1e-2), source, steps_per_call=5, **KW, **extra
    )
    chex.assert_trees_all_equal(got.params, ref.params)
    chex.assert_trees_all_equal(got.opt_state, ref.opt_state)
    np.testing.assert_allclose(
        got.history["train_loss"], ref.history["train_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        got.history["grad_norm"], ref.history["grad_norm"], rtol=1e-6
    )
    assert got.loop.loop.epoch == 2 and got.loop.step == 0


def test_fit_delegates_a_source_with_dropout(files):
    d, X, y = files(203)
    kw = dict(KW, drop_rate=0.2)
    ref = fnn.fit(_params(), fnn.optim.sgd(0.1), X, y, **kw)
    got = fnn.fit(
        _params(), fnn.optim.sgd(0.1), st.from_npy(d / "x.npy", d / "y.npy"), None, **kw
    )
    chex.assert_trees_all_equal(got.params, ref.params)
    assert isinstance(got.loop, st.StreamLoop)


def test_resume_mid_epoch_equals_uninterrupted_run(files, tmp_path):
    d, _, _ = files(203)
    source = st.from_npy(d / "x.npy", d / "y.npy")
    kw = dict(KW, epochs=3, drop_rate=0.1, steps_per_call=4, ema=0.9)
    full = st.fit_stream(_params(), fnn.optim.adam(1e-2), source, **kw)

    calls = []

    def stop_mid_epoch(loop):
        calls.append(loop)
        return len(calls) == 5  # epoch 1, after its first chunk

    part = st.fit_stream(
        _params(), fnn.optim.adam(1e-2), source, chunk_callback=stop_mid_epoch, **kw
    )
    assert part.stopped_early
    assert (part.loop.loop.epoch, part.loop.step) == (1, 4)
    path = fnn.checkpoint.save(tmp_path / "ckpt.fnn", part.loop)
    loop = fnn.checkpoint.load(path, like=part.loop)
    rest = st.fit_stream(_params(), fnn.optim.adam(1e-2), source, resume=loop, **kw)
    chex.assert_trees_all_equal(rest.params, full.params)
    chex.assert_trees_all_equal(rest.opt_state, full.opt_state)
    chex.assert_trees_all_equal(rest.loop.loop.params, full.loop.loop.params)
    for k in ("train_loss", "grad_norm", "dev_loss", "learning_rate"):
        np.testing.assert_array_equal(rest.history[k], full.history[k])


def test_sources_gather_the_same_rows(tmp_path):
    X, y = _data(50)
    for i, (a, b) in enumerate([(0, 20), (20, 21), (21, 50)]):
        np.save(tmp_path / f"x_{i:03d}.npy", X[a:b])
        np.save(tmp_path / f"y_{i:03d}.npy", y[a:b])
    images = (np.arange(50 * 2 * 3) % 256).astype(np.uint8).reshape(50, 2, 3)
    labels = (np.arange(50) % 10).astype(np.uint8)
    idx = tmp_path / "idx"
    idx.mkdir()
    with open(idx / "train-images-idx3-ubyte", "wb") as f:
        f.write(
            bytes([0, 0, 8, 3]) + b"".join(k.to_bytes(4, "big") for k in (50, 2, 3))
        )
        f.write(images.tobytes())
    with open(idx / "train-labels-idx1-ubyte", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (50).to_bytes(4, "big") + labels.tobytes())
    rows = np.array([49, 0, 20, 20, 7, 33])
    shards = st.from_path(tmp_path)
    assert isinstance(shards, st.ShardSource) and len(shards) == 50
    x, t = shards.batch(rows)
    np.testing.assert_array_equal(x, X[rows])
    np.testing.assert_array_equal(t, y[rows])
    mnist = st.from_path(idx)
    assert len(mnist) == 50 and isinstance(mnist.X, np.memmap)
    x, t = mnist.batch(rows)
    want = images[rows].reshape(len(rows), -1).astype(np.float32) / 255
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(t, labels[rows])


def test_iterable_source_in_the_order_given(files):
    # fit's first-epoch order, handed over as an iterator: the same training.
    d, X, y = files(192)
    kw = dict(KW, epochs=1)
    ref = fnn.fit(_params(), fnn.optim.adam(1e-2), X, y, **kw)
    key_shuffle = jax.random.split(kw["key"])[0]
    idx, _ = fnn.data.epoch_batches(jax.random.fold_in(key_shuffle, 0), 192, 16)
    batches = ((X[i], y[i]) for i in np.asarray(idx))
    source = st.IterableSource(batches, length=192)
    got = st.fit_stream(_params(), fnn.optim.adam(1e-2), source, steps_per_call=5, **kw)
    # always masked (a batch may come short): equal up to float32 rounding
    chex.assert_trees_all_close(got.params, ref.params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one-shot iterator"):
        st.fit_stream(_params(), fnn.optim.adam(1e-2), source, **dict(KW, epochs=2))


def test_bad_row_is_named_by_its_index_in_the_source(files, tmp_path):
    _, X, y = files(203)
    X = X.copy()
    X[157, 3] = np.nan
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    source = st.from_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(ValueError, match=r"row 157 of X in the training set holds NaN"):
        st.fit_stream(_params(), fnn.optim.sgd(0.1), source, **KW)
    with pytest.raises(ValueError, match="y=None"):
        st.fit_stream(_params(), fnn.optim.sgd(0.1), source, y, **KW)


def test_per_step_metrics_to_jsonl(files, tmp_path, capsys):
    d, _, _ = files(203)  # 13 steps per epoch, 2 epochs
    source = st.from_npy(d / "x.npy", d / "y.npy")
    schedule = fnn.schedules.exponential_decay(0.1, 10, 0.5)
    got = st.fit_stream(
        _params(),
        fnn.optim.sgd(schedule),
        source,
        steps_per_call=4,
        log_every=3,
        metrics_file=tmp_path / "steps.jsonl",
        tensorboard=tmp_path / "tb",
        **KW,
    )
    def have(m):
        return importlib.util.find_spec(m) is not None

    # torch.utils.tensorboard needs the tensorboard package beside torch
    writer = have("tensorboardX") or (have("torch") and have("tensorboard"))
    if writer:  # event files written
        assert any((tmp_path / "tb").iterdir())
    else:  # skipped, with one line saying why
        assert "no TensorBoard writer" in capsys.readouterr().err
    lines = [json.loads(s) for s in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in lines] == [
        (e, s) for e in range(2) for s in (2, 5, 8, 11)
    ]
    for r in lines:  # the rate of the step's update, from the schedule
        t = 13 * r["epoch"] + r["step"]
        assert r["learning_rate"] == pytest.approx(float(schedule(t)), rel=1e-6)
        assert np.isfinite(r["loss"]) and r["grad_norm"] > 0
    assert len(got.history["train_loss"]) == 2


def test_every_n_steps_fires_under_jit_and_scan():
    seen = []

    @jax.jit
    def run(x):
        def body(carry, s):
            st.every_n_steps(4, lambda s, v: seen.append((int(s), float(v))), s, carry)
            return carry + 1.0, None

        return jax.lax.scan(body, x, jnp.arange(10))[0]

    for _ in range(2):  # the second call reuses the compiled loop
        jax.block_until_ready(run(jnp.float32(0)))
        jax.effects_barrier()
    assert sorted(seen) == sorted([(3, 3.0), (7, 7.0)] * 2)
    assert len(seen) == 4


def test_progress_bar_and_ema(files, capsys):
    pytest.importorskip("tqdm")
    d, _, _ = files(192)
    source = st.from_npy(d / "x.npy", d / "y.npy")
    got = st.fit_stream(
        _params(),
        fnn.optim.adam(1e-2),
        source,
        steps_per_call=4,
        ema=0.9,
        **dict(KW, progress=True, epochs=1),
    )
    err = capsys.readouterr().err
    assert "ex/s" in err and "epoch 1/1" in err
    raw = got.loop.loop.params
    chex.assert_trees_all_equal(got.params, fnn.optim.ema_params_of(got.opt_state, raw))
    assert not jax.tree.all(
        jax.tree.map(lambda a, b: bool(jnp.all(a == b)), got.params, raw)
    )


def test_accumulate_option_equals_multi_steps(files):
    d, X, y = files(192)
    kw = dict(KW, epochs=1)
    ref = fnn.fit(_params(), fnn.optim.multi_steps(fnn.optim.adam(1e-2), 3), X, y, **kw)
    got = st.fit_stream(
        _params(),
        fnn.optim.adam(1e-2),
        st.from_npy(d / "x.npy", d / "y.npy"),
        accumulate=3,
        **kw,
    )
    chex.assert_trees_all_equal(got.params, ref.params)


_MESH = textwrap.dedent(
    """
    import json, sys, tempfile
    import numpy as np, jax, fnn, fnn.stream as st
    from pathlib import Path
    rng = np.random.default_rng(0)
    out = {}
    tmp = tempfile.mkdtemp()
    for n in (192, 203):
        X = rng.normal(size=(n, 8)).astype(np.float32)
        y = rng.integers(0, 3, n).astype(np.int32)
        d = Path(tmp) / str(n)
        d.mkdir()
        np.save(d / "x.npy", X); np.save(d / "y.npy", y)
        src = st.from_npy(d / "x.npy", d / "y.npy")
        mesh = fnn.parallel.data_mesh()
        p = fnn.init_params(jax.random.key(1), [8, 16, 3])
        kw = dict(key=jax.random.key(2), epochs=2, batch_size=16, progress=False)
        ref = fnn.fit(p, fnn.optim.adam(1e-2), X, y, mesh=mesh, **kw)
        one = fnn.fit(p, fnn.optim.adam(1e-2), X, y, **kw)
        got = st.fit_stream(p, fnn.optim.adam(1e-2), src, mesh=mesh,
                            steps_per_call=5, **kw)
        diff = lambda a, b: max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                                for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        out[n] = dict(
            devices=len(jax.devices()),
            vs_mesh_fit=diff(got.params, ref.params),
            vs_one_device=diff(got.params, one.params),
            sharded=len(jax.tree.leaves(got.params)[0].sharding.device_set),
        )
    import shutil
    shutil.rmtree(tmp)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_mesh_of_four_simulated_devices():
    for r in run_on_four_cpu_devices(_MESH).values():
        assert r["devices"] == 4 and r["sharded"] == 4
        assert r["vs_mesh_fit"] <= 1e-6  # same program, same sums
        assert r["vs_one_device"] <= 1e-5  # gradient sums in another order


@pytest.fixture(scope="module")
def train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_stream", ROOT / "scripts" / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.slow  # three runs of the script
def test_train_script_streams_and_resumes_mid_epoch(
    train_script, files, tmp_path, monkeypatch
):
    # --data DIR with accumulation, EMA and per-step logging; a run killed
    # right after a mid-epoch checkpoint, resumed, ends as the uninterrupted one.
    d, _, _ = files(203)
    flags = [
        "--data", str(d), "--dev-size", "40", "--epochs", "2", "--hidden", "16",
        "--batch-size", "16", "--accumulate", "2", "--ema", "0.9",
        "--log-every", "1", "--steps-per-call", "3", "--save-every", "3",
        "--patience", "0", "--no-progress", "--lr", "0.01",
    ]  # fmt: skip
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train_script([*flags, "--out", str(straight)])
    save, calls = fnn.checkpoint.save, []

    def dies_after_third_save(path, tree, **kw):
        out = save(path, tree, **kw)
        if Path(path).name == "checkpoint.fnn":
            calls.append(tree)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return out

    monkeypatch.setattr(fnn.checkpoint, "save", dies_after_third_save)
    with pytest.raises(KeyboardInterrupt):
        train_script([*flags, "--out", str(broken)])
    monkeypatch.setattr(fnn.checkpoint, "save", save)
    meta = fnn.checkpoint.read_metadata(broken / "checkpoint.fnn")["loop"]
    assert meta["stream"] and (meta["epoch"], meta["step"]) == (0, 9)
    train_script(["--resume", str(broken)])
    for name in ("model.fnn", "checkpoint.fnn"):
        a, b = (
            {
                jax.tree_util.keystr(k): v
                for k, v in jax.tree_util.tree_leaves_with_path(
                    fnn.checkpoint.load(run / name)
                )
                if "seconds" not in jax.tree_util.keystr(k)  # wall-clock times
            }
            for run in (straight, broken)
        )
        assert len(a) >= 8
        chex.assert_trees_all_equal(a, b)
    model = fnn.checkpoint.load(straight / "model.fnn")
    assert any(k.startswith("['raw_params']") for k in model)
    steps = [json.loads(s) for s in (broken / "steps.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in steps] == [
        (e, s) for e in range(2) for s in range(11)
    ]


def test_non_finite_step_is_named_as_fit_names_it(files):
    d, X, y = files(192)
    source = st.from_npy(d / "x.npy", d / "y.npy")
    errors = []
    with jax.debug_nans(False):
        with pytest.raises(fnn.NonFiniteError) as info:
            fnn.fit(_params(), fnn.optim.sgd(1e30), X, y, **KW)
        errors.append(info.value)
        with pytest.raises(fnn.NonFiniteError) as info:
            st.fit_stream(
                _params(), fnn.optim.sgd(1e30), source, steps_per_call=4, **KW
            )
        errors.append(info.value)
    got, ref = errors[1], errors[0]
    assert (got.epoch, got.step, got.cause) == (ref.epoch, ref.step, ref.cause)
    chex.assert_trees_all_equal(got.params, ref.params)
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(got.params))
