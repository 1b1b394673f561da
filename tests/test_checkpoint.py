"""Tests for fnn.checkpoint: exact round trips, atomic writes, corrupt and
mismatched files, no pickle, and resuming a run from a checkpoint."""

import hashlib
import io
import json
import os
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from fnn import checkpoint


class MomentState(NamedTuple):
    """An optimizer-like state: a step count and two moment trees."""

    count: jax.Array
    mu: list
    nu: list


def make_tree(getkey):
    """Parameters, optimizer state, key, epoch and a bfloat16 leaf, as in a run."""
    sizes = [(4, 8), (8, 3)]
    params = [
        {
            "W": jax.random.normal(getkey(), (n_in, n_out), jnp.float32),
            "b": jax.random.normal(getkey(), (n_out,), jnp.float32),
        }
        for n_in, n_out in sizes
    ]
    state = MomentState(
        count=jnp.asarray(7, jnp.int32),
        mu=jax.tree.map(lambda p: 0.1 * p, params),
        nu=jax.tree.map(lambda p: p * p, params),
    )
    half = jnp.asarray([1.5, -0.0, 3.140625, -65280.0, jnp.inf], jnp.bfloat16)
    return {
        "params": params,
        "opt_state": state,
        "key": jax.random.key(42),
        "epoch": 12,
        "half": half,
    }


def bits(leaf):
    """The leaf's exact content: raw bytes of its array (key data for keys)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key
    ):
        leaf = jax.random.key_data(leaf)
    array = np.asarray(leaf)
    return array.shape, str(array.dtype), array.tobytes()


def assert_identical(a, b):
    """Same treedef, same leaf types, dtypes, shapes and bits."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert type(x) is type(y), (type(x), type(y))
        if hasattr(x, "dtype"):
            assert x.dtype == y.dtype
        assert bits(x) == bits(y)


# --------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------- #


def test_round_trip_realistic_tree_is_exact(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "run.ckpt", tree)
    assert path == tmp_path / "run.ckpt" and path.is_file()
    template = make_tree(getkey)  # other values, same structure
    loaded = checkpoint.load(path, like=template)
    assert_identical(loaded, tree)
    assert isinstance(loaded["opt_state"], MomentState)
    assert isinstance(loaded["params"], list)
    assert type(loaded["epoch"]) is int and loaded["epoch"] == 12
    assert jax.random.key_impl(loaded["key"]) == jax.random.key_impl(tree["key"])


def test_round_trip_numpy_and_python_leaves(tmp_path):
    tree = (
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.float32(2.5),
        np.asarray([1.0, 2.0], dtype=">f4"),  # big-endian: value kept
        3.25,
        True,
        -(2**40),
        jnp.zeros((0, 3), jnp.float32),
        {"empty": [], "none": None},
    )
    path = checkpoint.save(tmp_path / "c", tree)
    loaded = checkpoint.load(path, like=tree)
    assert jax.tree.structure(loaded) == jax.tree.structure(tree)
    assert type(loaded[0]) is np.ndarray and loaded[0].dtype == np.int16
    np.testing.assert_array_equal(loaded[0], tree[0])
    assert type(loaded[1]) is np.float32 and loaded[1] == np.float32(2.5)
    np.testing.assert_array_equal(loaded[2], [1.0, 2.0])
    assert type(loaded[3]) is float and loaded[3] == 3.25
    assert loaded[4] is True
    assert type(loaded[5]) is int and loaded[5] == -(2**40)
    assert isinstance(loaded[6], jax.Array) and loaded[6].shape == (0, 3)


def test_float64_round_trip_under_x64(tmp_path):
    with jax.enable_x64(True):
        x = jnp.asarray([1.0 / 3.0, np.pi], jnp.float64)
        path = checkpoint.save(tmp_path / "f64", {"x": x})
        loaded = checkpoint.load(path, like={"x": x})
        assert loaded["x"].dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(loaded["x"]), [1.0 / 3.0, np.pi])
    # Without x64 the flat (template-free) load still gives the exact float64.
    flat = checkpoint.load(path)
    assert flat["['x']"].dtype == np.float64
    assert flat["['x']"][0] == 1.0 / 3.0


def test_list_saved_loads_into_tuple_template(tmp_path):
    saved = [jnp.ones(2, jnp.float32), jnp.zeros(3, jnp.float32)]
    path = checkpoint.save(tmp_path / "c", saved)
    loaded = checkpoint.load(path, like=(jnp.zeros(2), jnp.zeros(3)))
    assert isinstance(loaded, tuple)
    np.testing.assert_array_equal(loaded[1], np.zeros(3, np.float32))


def test_eval_shape_template(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree)
    # ShapeDtypeStruct leaves (what jax.eval_shape gives) for the arrays; the
    # Python epoch stays a Python int (eval_shape would make it a weak int32).
    template = jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x
        ),
        tree,
    )
    loaded = checkpoint.load(path, like=template)
    assert_identical(loaded, tree)


def test_flat_load_without_template(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree)
    flat = checkpoint.load(path)
    expected_paths = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)
    ]
    assert list(flat) == expected_paths
    np.testing.assert_array_equal(
        flat["['params'][1]['W']"], np.asarray(tree["params"][1]["W"])
    )
    assert flat["['half']"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert flat["['epoch']"] == 12 and type(flat["['epoch']"]) is int
    assert flat["['opt_state'].count"].dtype == np.int32
    assert jax.dtypes.issubdtype(flat["['key']"].dtype, jax.dtypes.prng_key)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_loaded_key_draws_equal_original_draws(tmp_path, impl):
    key = jax.random.key(2024, impl=impl)
    path = checkpoint.save(tmp_path / "k", {"key": key})
    loaded = checkpoint.load(path, like={"key": jax.random.key(0, impl=impl)})["key"]
    assert jax.random.key_impl(loaded) == impl
    np.testing.assert_array_equal(
        jax.random.normal(loaded, (16,)), jax.random.normal(key, (16,))
    )
    a1, a2 = jax.random.split(loaded)
    b1, b2 = jax.random.split(key)
    np.testing.assert_array_equal(
        jax.random.uniform(a2, (4,)), jax.random.uniform(b2, (4,))
    )


def test_metadata_round_trip_and_read_metadata(tmp_path, getkey):
    config = {
        "dataset": "digits",
        "hidden": [64, 32],
        "lr": 1e-3,
        "optimizer": {"name": "adam", "b1": 0.9, "b2": 0.999},
        "dropout": None,
        "manual_backprop": False,
    }
    path = checkpoint.save(tmp_path / "c", make_tree(getkey), metadata=config)
    assert checkpoint.read_metadata(path) == config
    assert checkpoint.read_metadata(checkpoint.save(tmp_path / "d", [1.0])) == {}
    # Tuples come back as lists, as json gives them.
    path = checkpoint.save(tmp_path / "e", [1.0], metadata={"sizes": (1, 2)})
    assert checkpoint.read_metadata(path) == {"sizes": [1, 2]}


def test_bad_metadata_and_bad_leaves_raise(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        checkpoint.save(tmp_path / "c", [1.0], metadata={"f": np.zeros(2)})
    with pytest.raises(ValueError, match="mapping"):
        checkpoint.save(tmp_path / "c", [1.0], metadata=[("a", 1)])
    with pytest.raises(ValueError, match="strings"):
        checkpoint.save(tmp_path / "c", [1.0], metadata={1: "a"})
    with pytest.raises(TypeError, match=r"\['name'\]"):
        checkpoint.save(tmp_path / "c", {"name": "mlp", "x": 1.0})
    with pytest.raises(TypeError, match=r"\[1\]"):
        checkpoint.save(tmp_path / "c", [1.0, np.asarray([{}], dtype=object)])
    with pytest.raises(ValueError, match=r"\[0\].*int64"):
        checkpoint.save(tmp_path / "c", [2**70])
    assert list(tmp_path.iterdir()) == []  # nothing written on bad input


def test_save_creates_parent_folders_and_overwrites(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt"
    checkpoint.save(path, {"x": 1})
    checkpoint.save(path, {"x": 2})
    assert checkpoint.load(path, like={"x": 0}) == {"x": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        checkpoint.load(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- #
# The format: a zip of NPY entries and a manifest, no pickle
# --------------------------------------------------------------------------- #


def test_file_holds_npy_entries_and_manifest_without_pickle(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree, metadata={"seed": 0})
    flat = jax.tree_util.tree_leaves_with_path(tree)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        entries = {name: zf.read(name) for name in names if name != "manifest.json"}
    assert names[-1] == "manifest.json"
    assert all(name.endswith(".npy") for name in entries)
    assert len(entries) == len(flat)
    import fnn

    assert manifest["format"] == "fnn.checkpoint" and manifest["format_version"] == 1
    assert manifest["fnn_version"] == fnn.__version__
    assert manifest["jax_version"] == jax.__version__
    assert manifest["numpy_version"] == np.__version__
    assert manifest["metadata"] == {"seed": 0}
    assert "created" in manifest
    records = manifest["leaves"]
    assert [r["path"] for r in records] == [jax.tree_util.keystr(p) for p, _ in flat]
    for record, (_, leaf) in zip(records, flat, strict=True):
        raw = entries[record["entry"]]
        assert record["sha256"] == hashlib.sha256(raw).hexdigest()
        array = np.load(io.BytesIO(raw), allow_pickle=False)  # no pickle needed
        assert raw[:6] == b"\x93NUMPY"
        assert list(record["shape"]) == list(np.shape(leaf))
        if record["path"] == "['half']":
            assert record["dtype"] == "bfloat16" and array.dtype == np.uint16
            expected = np.asarray(tree["half"]).view(np.uint16)
            np.testing.assert_array_equal(array, expected)
            assert array[0] == 0x3FC0  # 1.5 in bfloat16: sign 0, exp 127, 1000000
        elif record["path"] == "['key']":
            assert record["kind"] == "key"
            assert record["key_impl"] == "threefry2x32"
            assert record["dtype"] == "key<fry>"
            np.testing.assert_array_equal(array, jax.random.key_data(tree["key"]))
        elif record["path"] == "['epoch']":
            assert record["kind"] == "int" and array.dtype == np.int64
        else:
            assert record["dtype"] == str(leaf.dtype)
            np.testing.assert_array_equal(array, np.asarray(leaf))


# --------------------------------------------------------------------------- #
# Atomic writes
# --------------------------------------------------------------------------- #


class Crash(Exception):
    pass


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, getkey, monkeypatch):
    good = make_tree(getkey)
    path = checkpoint.save(tmp_path / "run.ckpt", good, metadata={"epoch": 1})
    before = path.read_bytes()

    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise Crash("disk full after the first leaf")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    newer = jax.tree.map(lambda x: x, make_tree(getkey))
    with pytest.raises(Crash):
        checkpoint.save(path, newer, metadata={"epoch": 2})
    monkeypatch.undo()

    assert len(calls) == 2
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temp file
    assert_identical(checkpoint.load(path, like=good), good)
    assert checkpoint.read_metadata(path) == {"epoch": 1}


def test_crash_at_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "run.ckpt", {"x": jnp.ones(3)})
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise Crash("killed before the rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(Crash):
        checkpoint.save(path, {"x": jnp.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_interrupt_on_first_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "new.ckpt", {"x": jnp.ones(3)})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_file_is_fsynced_before_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        assert os.path.dirname(src) == os.path.dirname(dst)  # same folder
        assert os.path.getsize(src) > 0
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    checkpoint.save(tmp_path / "c", {"x": jnp.ones(3)})
    assert events[:2] == ["fsync", "replace"]


# --------------------------------------------------------------------------- #
# Corrupt files
# --------------------------------------------------------------------------- #


def test_truncated_file_raises(tmp_path, getkey):
    path = checkpoint.save(tmp_path / "c", make_tree(getkey))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        checkpoint.load(path)
    with pytest.raises(ValueError, match="truncated"):
        checkpoint.read_metadata(path)
    path.write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path, like=make_tree(getkey))


def entry_data_offset(path, name):
    """Where the bytes of zip entry ``name`` start in the file (stored, no
    compression): after the 30-byte local header, file name and extra field."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def leaf_entry(path, key_path):
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    return next(r["entry"] for r in manifest["leaves"] if r["path"] == key_path)


def test_flipped_bytes_in_an_array_raise_naming_the_leaf(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree)
    entry = leaf_entry(path, "['params'][1]['W']")
    start, size = entry_data_offset(path, entry)
    data = bytearray(path.read_bytes())
    data[start + size - 3] ^= 0xFF  # inside the array's data, past the header
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=r"\['params'\]\[1\]\['W'\]"):
        checkpoint.load(path, like=tree)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.load(path)
    assert checkpoint.read_metadata(path) == {}  # the manifest itself is fine


def rewrite(path, replace):
    """Rewrite the zip at ``path`` with ``replace(name, data) -> data`` applied to
    each entry: a well-formed archive (valid CRCs) with altered content."""
    with zipfile.ZipFile(path) as zf:
        entries = [(name, zf.read(name)) for name in zf.namelist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            new = replace(name, data)
            if new is not None:
                zf.writestr(name, new)


def test_changed_array_with_valid_zip_fails_the_checksum(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree)
    entry = leaf_entry(path, "['opt_state'].mu[0]['b']")

    def tamper(name, data):
        if name != entry:
            return data
        buf = io.BytesIO()
        np.save(buf, np.zeros(8, np.float32))
        return buf.getvalue()

    rewrite(path, tamper)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"checksum.*\['opt_state'\]\.mu\[0\]\['b'\]"
    ):
        checkpoint.load(path, like=tree)


def test_bad_manifest_raises(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"x": jnp.ones(2)})
    good = path.read_bytes()

    rewrite(path, lambda name, data: b"{not json" if name == "manifest.json" else data)
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(path)

    def version(n):
        def change(name, data):
            if name != "manifest.json":
                return data
            manifest = json.loads(data)
            manifest["format_version"] = n
            return json.dumps(manifest).encode()

        return change

    path.write_bytes(good)
    rewrite(path, version(99))
    with pytest.raises(checkpoint.CheckpointError, match="version 99"):
        checkpoint.read_metadata(path)

    path.write_bytes(good)
    rewrite(path, lambda name, data: None if name == "manifest.json" else data)
    with pytest.raises(checkpoint.CheckpointError, match="no manifest.json"):
        checkpoint.load(path)

    path.write_bytes(good)
    rewrite(path, lambda name, data: data if name == "manifest.json" else None)
    with pytest.raises(checkpoint.CheckpointError, match=r"missing.*\['x'\]|\['x'\]"):
        checkpoint.load(path)


def test_pickled_entry_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"x": jnp.ones(2)})
    entry = leaf_entry(path, "['x']")
    buf = io.BytesIO()
    np.save(buf, np.asarray([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = buf.getvalue()

    def change(name, data):
        if name == entry:
            return pickled
        if name == "manifest.json":  # make the checksum agree, to reach np.load
            manifest = json.loads(data)
            manifest["leaves"][0]["sha256"] = hashlib.sha256(pickled).hexdigest()
            return json.dumps(manifest).encode()
        return data

    rewrite(path, change)
    with pytest.raises(checkpoint.CheckpointError, match="not a valid NPY"):
        checkpoint.load(path)


# --------------------------------------------------------------------------- #
# Checkpoint vs template
# --------------------------------------------------------------------------- #


def test_mismatched_template_names_the_leaf(tmp_path, getkey):
    tree = make_tree(getkey)
    path = checkpoint.save(tmp_path / "c", tree)

    missing = make_tree(getkey)
    missing["params"][0]["gamma"] = jnp.ones(8, jnp.float32)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"\['params'\]\[0\]\['gamma'\] is missing"
    ):
        checkpoint.load(path, like=missing)

    extra = make_tree(getkey)
    del extra["half"]
    with pytest.raises(ValueError, match=r"\['half'\].*extra"):
        checkpoint.load(path, like=extra)

    renamed = make_tree(getkey)
    renamed["params"][1]["w"] = renamed["params"][1].pop("W")
    with pytest.raises(ValueError, match=r"\['w'\] is missing.*\['W'\]"):
        checkpoint.load(path, like=renamed)

    shaped = make_tree(getkey)
    shaped["params"][1]["W"] = jnp.zeros((8, 4), jnp.float32)
    with pytest.raises(
        ValueError,
        match=r"\['params'\]\[1\]\['W'\] has the wrong shape: "
        r"expected float32\[8, 4\], found float32\[8, 3\]",
    ):
        checkpoint.load(path, like=shaped)

    typed = make_tree(getkey)
    typed["opt_state"] = typed["opt_state"]._replace(count=jnp.zeros((), jnp.float32))
    with pytest.raises(
        ValueError,
        match=r"\['opt_state'\]\.count has the wrong type: "
        r"expected float32\[\], found int32\[\]",
    ):
        checkpoint.load(path, like=typed)

    epoch_float = make_tree(getkey)
    epoch_float["epoch"] = 0.0
    with pytest.raises(ValueError, match=r"\['epoch'\].*Python float.*Python int"):
        checkpoint.load(path, like=epoch_float)

    raw_key = make_tree(getkey)
    raw_key["key"] = jax.random.key_data(raw_key["key"])
    with pytest.raises(ValueError, match=r"\['key'\].*uint32\[2\].*key<fry>"):
        checkpoint.load(path, like=raw_key)

    other_impl = make_tree(getkey)
    other_impl["key"] = jax.random.key(0, impl="rbg")
    with pytest.raises(ValueError, match=r"\['key'\].*key<rbg>.*key<fry>"):
        checkpoint.load(path, like=other_impl)


# --------------------------------------------------------------------------- #
# Resuming
# --------------------------------------------------------------------------- #


def test_resume_equals_uninterrupted_run(tmp_path, getkey):
    """Momentum SGD on a least-squares problem with a key split every step:
    4 steps straight equal 2 steps, save, load, 2 more steps, bit for bit."""
    X = jax.random.normal(getkey(), (32, 4), jnp.float32)
    y = jax.random.normal(getkey(), (32, 1), jnp.float32)

    def loss(params, key):
        mask = jax.random.bernoulli(key, 0.8, (32, 1)).astype(jnp.float32)
        r = (X @ params[0]["W"] + params[0]["b"] - y) * mask
        return jnp.mean(r * r)

    @jax.jit
    def update(params, state, key):
        key, sub = jax.random.split(key)
        grads = jax.grad(loss)(params, sub)
        mu = jax.tree.map(lambda m, g: 0.9 * m + g, state.mu, grads)
        params = jax.tree.map(lambda p, m: p - 0.05 * m, params, mu)
        return params, MomentState(state.count + 1, mu, state.nu), key

    def step(run):
        params, state, key, epoch = run
        return (*update(params, state, key), epoch + 1)  # epoch stays a Python int

    params = [{"W": jnp.zeros((4, 1), jnp.float32), "b": jnp.zeros(1, jnp.float32)}]
    zeros = jax.tree.map(jnp.zeros_like, params)
    start = (params, MomentState(jnp.zeros((), jnp.int32), zeros, zeros), getkey(), 0)

    straight = start
    for _ in range(4):
        straight = step(straight)

    half = start
    for _ in range(2):
        half = step(half)
    path = checkpoint.save(tmp_path / "resume.ckpt", half, metadata={"lr": 0.05})
    resumed = checkpoint.load(path, like=start)
    for _ in range(2):
        resumed = step(resumed)

    assert_identical(resumed, straight)


# --------------------------------------------------------------------------- #
# A loader that trusts nothing: hand-edited manifests and hostile archives
# --------------------------------------------------------------------------- #


def edit_manifest(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(manifest)`` applied to its
    manifest (entries unchanged, valid CRCs)."""

    def edit(name, data):
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()

    rewrite(path, edit)


def record_of(manifest, key_path):
    return next(r for r in manifest["leaves"] if r["path"] == key_path)


@pytest.mark.parametrize(
    "name", ["bfloat16", "float8_e4m3fn", "float8_e5m2", "int4", "uint4"]
)
def test_every_ml_dtype_round_trips_as_its_bits(tmp_path, name):
    dtype = np.dtype(getattr(ml_dtypes, name))
    x = np.arange(6).astype(dtype).reshape(2, 3)
    path = checkpoint.save(tmp_path / "c", {"x": x})
    with zipfile.ZipFile(path) as zf:
        record = json.loads(zf.read("manifest.json"))["leaves"][0]
    assert record["stored_dtype"] == f"uint{8 * dtype.itemsize}"
    loaded = checkpoint.load(path, like={"x": x})["x"]
    assert loaded.dtype == dtype
    assert loaded.tobytes() == x.tobytes()


@pytest.mark.parametrize(
    ("leaf", "dtype", "shape"),
    [
        (np.arange(8, dtype=np.uint8), "float32", [2]),  # bits of another width
        (np.arange(4, dtype=np.uint32), "float32", [4]),  # not an ml_dtypes type
        (np.arange(4, dtype=np.int16), "bfloat16", [4]),  # signed storage
        (np.arange(4, dtype=np.uint8), "bfloat16", [4]),  # wrong width
        (np.arange(4, dtype=np.float32), "int32", [4]),
    ],
)
def test_manifest_dtype_other_than_a_legitimate_pair_is_refused(
    tmp_path, leaf, dtype, shape
):
    path = checkpoint.save(tmp_path / "c", {"x": leaf})

    def change(manifest):
        manifest["leaves"][0].update(dtype=dtype, shape=shape)

    edit_manifest(path, change)
    like_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    template = {"x": np.zeros(shape, like_dtype)}
    stored = leaf.dtype.name
    for like in (None, template):
        with pytest.raises(checkpoint.CheckpointError) as err:
            checkpoint.load(path, like=like)
        message = str(err.value)
        assert str(path) in message and "['x']" in message
        assert dtype in message and stored in message
        assert "backup" in message  # says what to do


def test_key_stored_as_wrong_key_data_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"k": jax.random.key(1)})
    good = path.read_bytes()
    for change, words in [
        (lambda r: r.update(key_impl="rbg", dtype="key<rbg>"), r"rbg.*\[4\]"),
        (lambda r: r.update(dtype="key<rbg>"), r"key<fry>.*key<rbg>"),
        (lambda r: r.update(key_impl="no_such_prng"), "no_such_prng"),
        (lambda r: r.update(shape=[2], stored_shape=[2, 2]), r"\[2, 2\]"),
    ]:
        path.write_bytes(good)
        edit_manifest(path, lambda m, change=change: change(m["leaves"][0]))
        with pytest.raises(checkpoint.CheckpointError, match=r"\['k'\].*" + words):
            checkpoint.load(path)


def test_manifest_shape_must_equal_stored_and_template_shape(tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    path = checkpoint.save(tmp_path / "c", {"x": x})
    edit_manifest(path, lambda m: m["leaves"][0].update(shape=[4, 2]))
    for like in (None, {"x": np.zeros((4, 2), np.float32)}):
        with pytest.raises(
            checkpoint.CheckpointError, match=r"\['x'\].*\[4, 2\].*\[2, 4\]"
        ):
            checkpoint.load(path, like=like)
    # A Python scalar with a shape is refused as well.
    path = checkpoint.save(tmp_path / "d", {"n": 3})
    edit_manifest(path, lambda m: m["leaves"][0].update(shape=[1], stored_shape=[1]))
    with pytest.raises(checkpoint.CheckpointError, match=r"\['n'\].*Python int"):
        checkpoint.load(path)


def test_duplicate_paths_and_entries_in_the_manifest_are_refused(tmp_path):
    tree = {"x": np.zeros(3, np.float32), "y": np.ones(3, np.float32)}
    path = checkpoint.save(tmp_path / "c", tree)
    good = path.read_bytes()

    def same_path(manifest):  # both records claim ['x']; the second holds y
        manifest["leaves"][1]["path"] = "['x']"

    edit_manifest(path, same_path)
    with pytest.raises(checkpoint.CheckpointError, match=r"leaf \['x'\] twice"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"leaf \['x'\] twice"):
        checkpoint.load(path, like={"x": np.zeros(3, np.float32)})

    def same_entry(manifest):  # y points at x's data
        x, y = manifest["leaves"]
        y.update(entry=x["entry"], sha256=x["sha256"])

    path.write_bytes(good)
    edit_manifest(path, same_entry)
    with pytest.raises(checkpoint.CheckpointError, match=r"leaves/0\.npy.*\['y'\]"):
        checkpoint.load(path, like=tree)


def test_duplicate_entry_names_in_the_archive_are_refused(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"x": np.zeros(3, np.float32)})
    with zipfile.ZipFile(path) as zf:
        entries = [(name, zf.read(name)) for name in zf.namelist()]
    forged = io.BytesIO()
    np.save(forged, np.ones(3, np.float32))
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Dup"):
        for name, data in entries:
            zf.writestr(name, data)
        zf.writestr("leaves/0.npy", forged.getvalue())
    with pytest.raises(checkpoint.CheckpointError, match=r"two entries.*leaves/0"):
        checkpoint.load(path)


def write_forged_checkpoint(path, shape, dtype, entry_bytes, compression):
    """A checkpoint of one leaf ``['x']`` whose manifest promises ``dtype[shape]``
    and whose entry holds the chunks of ``entry_bytes`` (written streaming)."""
    record = {
        "path": "['x']",
        "entry": "leaves/0.npy",
        "kind": "numpy",
        "shape": list(shape),
        "dtype": dtype,
        "stored_dtype": dtype,
        "stored_shape": list(shape),
        "sha256": "0" * 64,
    }
    manifest = {
        "format": "fnn.checkpoint",
        "format_version": 1,
        "leaves": [record],
        "metadata": {},
    }
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=1) as zf:
        with zf.open("leaves/0.npy", "w", force_zip64=True) as f:
            for chunk in entry_bytes:
                f.write(chunk)
        zf.writestr(
            "manifest.json", json.dumps(manifest), compress_type=zipfile.ZIP_STORED
        )


def npy_header(shape, dtype):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_deflated_bomb_is_refused_unread(tmp_path):
    """A 256 MiB entry of zeros deflated to a few hundred KB: refused from its zip
    record, without inflating it (memory stays small)."""
    import time
    import tracemalloc

    n = 256 << 20
    path = tmp_path / "bomb.ckpt"
    zeros = bytes(1 << 20)
    chunks = [npy_header((n,), np.uint8), *(zeros for _ in range(n >> 20))]
    write_forged_checkpoint(path, (n,), "uint8", chunks, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < (2 << 20)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(checkpoint.CheckpointError) as err:
            checkpoint.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < (4 << 20), peak
    message = str(err.value)
    assert str(path) in message and "leaves/0.npy" in message and "['x']" in message
    assert "compressed" in message


def test_entry_size_must_be_what_manifest_and_header_promise(tmp_path):
    path = tmp_path / "c"
    # The manifest promises 1 GiB; the stored entry holds 1 KiB: refused unread.
    big = (1 << 30,)
    header = npy_header(big, np.uint8)
    write_forged_checkpoint(
        path, big, "uint8", [header, bytes(1024)], zipfile.ZIP_STORED
    )
    with pytest.raises(
        checkpoint.CheckpointError, match=r"\['x'\] holds \d+ bytes.*1073741824"
    ):
        checkpoint.load(path)

    # Junk after the array's data (and a checksum that covers it): refused.
    saved = checkpoint.save(tmp_path / "d", {"x": np.arange(4, dtype=np.float32)})
    entry = leaf_entry(saved, "['x']")
    with zipfile.ZipFile(saved) as zf:
        longer = zf.read(entry) + b"junk" * 4

    def append_junk(name, data):
        if name == entry:
            return longer
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["leaves"][0]["sha256"] = hashlib.sha256(longer).hexdigest()
            return json.dumps(manifest).encode()
        return data

    rewrite(saved, append_junk)
    with pytest.raises(checkpoint.CheckpointError, match=r"\['x'\] holds \d+ bytes"):
        checkpoint.load(saved, like={"x": np.zeros(4, np.float32)})


def test_compressed_manifest_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"x": 1})
    with zipfile.ZipFile(path) as zf:
        entries = [(name, zf.read(name)) for name in zf.namelist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            compress = zipfile.ZIP_DEFLATED if name == "manifest.json" else None
            zf.writestr(name, data, compress_type=compress)
    with pytest.raises(checkpoint.CheckpointError, match="manifest.*compressed"):
        checkpoint.read_metadata(path)


# --------------------------------------------------------------------------- #
# Temporary files of writers that died
# --------------------------------------------------------------------------- #


def dead_pid():
    """The id of a process that has exited and been reaped."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_save_removes_temp_files_of_dead_writers_only(tmp_path):
    import fcntl
    import subprocess
    import sys

    path = checkpoint.save(tmp_path / "run.ckpt", {"x": 1})
    host = checkpoint._host_tag()
    temp = checkpoint._temp_name("run.ckpt")
    assert temp.startswith(f".run.ckpt.{host}-{os.getpid()}-") and temp.endswith(".tmp")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = dead_pid()
        names = {
            "dead": f".run.ckpt.{host}-{dead}-0123abcd.tmp",
            "live": f".run.ckpt.{host}-{live.pid}-0123abcd.tmp",
            "self": f".run.ckpt.{host}-{os.getpid()}-0123abcd.tmp",
            "other host": f".run.ckpt.{'0' * 8 if host != '0' * 8 else '1' * 8}"
            f"-{dead}-0123abcd.tmp",
            "other target": f".other.ckpt.{host}-{dead}-0123abcd.tmp",
            "locked": f".run.ckpt.{host}-{dead}-4567cdef.tmp",
            "old style": ".run.ckpt.0123456789abcdef.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        fd = os.open(tmp_path / names["locked"], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer that is still writing
        try:
            checkpoint.save(path, {"x": 2})
        finally:
            os.close(fd)
    finally:
        live.kill()
        live.wait()
    left = {p.name for p in tmp_path.iterdir()}
    assert names["dead"] not in left
    assert left == {"run.ckpt", *names.values()} - {names["dead"]}
    assert checkpoint.load(path, like={"x": 0}) == {"x": 2}


# --------------------------------------------------------------------------- #
# Models: save_model / load_model
# --------------------------------------------------------------------------- #


def models():
    """An MLP, a CNN and a residual network (with BatchNorm state), with their
    per-example input shapes."""
    from fnn import nn

    mlp = nn.Sequential([nn.Dense(16, "tanh"), nn.Dense(8, "relu"), nn.Dense(3)])
    cnn = nn.Sequential(
        [
            nn.Conv2D(4, 3, padding="SAME"),
            nn.MaxPool2D(2),
            nn.Conv2D(6, 2, stride=2),
            nn.Flatten(),
            nn.Dense(5),
        ]
    )
    residual = nn.Sequential(
        [
            nn.Dense(12, "relu"),
            nn.Residual(nn.Sequential([nn.Dense(12, "relu"), nn.Dense(12)])),
            nn.BatchNorm(),
            nn.Residual(nn.Dense(7, "tanh"), nn.Dense(7)),
            nn.Dense(4),
        ]
    )
    return {"mlp": (mlp, (6,)), "cnn": (cnn, (8, 8, 2)), "residual": (residual, (5,))}


def random_params(model, in_shape, seed, dtype=jnp.float32):
    """Parameters and state of ``model`` filled with random numbers (running
    variances positive), built from ``jax.eval_shape`` of its init: other values
    than any init gives, and nothing to compile."""
    from fnn import nn

    template = jax.eval_shape(
        lambda key: nn.init(key, model, in_shape, dtype), jax.random.key(0)
    )
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        x = rng.standard_normal(leaf.shape)
        if "var" in jax.tree_util.keystr(path):
            x = np.abs(x) + 0.5
        return jnp.asarray(x.astype(leaf.dtype))

    return jax.tree_util.tree_map_with_path(fill, template)


def predictor(model):
    """The model's eval-mode prediction, compiled (the same program everywhere)."""
    from fnn import nn

    def predict(params, state, x):
        return nn.forward(model, params, x, state=state)[0]

    return jax.jit(predict)


LOAD_AND_PREDICT = """
import sys

import jax

import fnn

folder, names = sys.argv[1], sys.argv[2:]
inputs = fnn.checkpoint.load(f"{folder}/inputs.fnn")
out = {}
for name in names:
    model, params, state = fnn.checkpoint.load_model(f"{folder}/{name}.fnn")
    x = inputs[f"[{name!r}]"]
    predict = jax.jit(
        lambda p, s, x, model=model: fnn.nn.forward(model, p, x, state=s)[0]
    )
    out[name] = predict(params, state, x)
fnn.checkpoint.save(f"{folder}/outputs.fnn", out)
"""


def test_models_round_trip_to_identical_predictions_in_a_fresh_process(tmp_path):
    """save_model, then load_model in a process that imports only fnn: the
    rebuilt MLP, CNN and residual network predict bit for bit the same."""
    import subprocess
    import sys

    import fnn
    from fnn import nn

    inputs, expected = {}, {}
    for seed, (name, (model, in_shape)) in enumerate(models().items()):
        params, state = random_params(model, in_shape, seed)
        x = np.random.default_rng(10 + seed).standard_normal((9, *in_shape))
        inputs[name] = x = x.astype(np.float32)
        expected[name] = predictor(model)(params, state, x)
        path = checkpoint.save_model(
            tmp_path / f"{name}.fnn", model, params, state, in_shape=in_shape
        )
        described = checkpoint.read_metadata(path)["fnn_model"]
        assert described["spec"] == nn.to_spec(model)
        assert described["in_shape"] == list(in_shape)
        loaded_model, loaded_params, loaded_state = checkpoint.load_model(path)
        assert nn.to_spec(loaded_model) == nn.to_spec(model)
        assert_identical(loaded_params, params)
        assert_identical(loaded_state, state)
    checkpoint.save(tmp_path / "inputs.fnn", inputs)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path), *expected],
        check=True,
        env=dict(os.environ, PYTHONPATH=root),
        timeout=120,
    )
    predicted = checkpoint.load(tmp_path / "outputs.fnn")
    for name, want in expected.items():
        got = predicted[f"[{name!r}]"]
        assert got.shape == want.shape and got.dtype == want.dtype
        assert got.tobytes() == np.asarray(want).tobytes(), name


def test_mlp_model_keeps_its_input_shape_and_like_template(tmp_path):
    import fnn

    model = fnn.mlp([4, 6, 2])
    params, state = random_params(model, (4,), 0)
    path = checkpoint.save_model(tmp_path / "m.fnn", model, params, state)
    loaded, loaded_params, _ = checkpoint.load_model(path)
    assert loaded.in_shape == (4,)
    assert_identical(loaded_params, params)
    as_numpy = jax.tree.map(np.asarray, (params, state))
    _, numpy_params, _ = checkpoint.load_model(path, like=as_numpy)
    assert type(numpy_params[0]["W"]) is np.ndarray
    with pytest.raises(ValueError, match="pair"):
        checkpoint.load_model(path, like=params[0])


def test_float64_model_round_trip_under_x64(tmp_path):
    from fnn import nn

    model = nn.Sequential([nn.Dense(3, "tanh"), nn.Dense(2)])
    with jax.enable_x64(True):
        params, state = random_params(model, (4,), 0, jnp.float64)
        assert params[0]["W"].dtype == jnp.float64
        path = checkpoint.save_model(
            tmp_path / "m", model, params, state, in_shape=(4,)
        )
        _, loaded, _ = checkpoint.load_model(path)
        assert_identical(loaded, params)
    with pytest.raises(checkpoint.CheckpointError, match="enable_x64"):
        checkpoint.load_model(path)


def test_save_model_refuses_what_does_not_fit(tmp_path):
    from fnn import nn

    model, in_shape = models()["residual"]
    params, state = random_params(model, in_shape, 0)
    path = tmp_path / "m"
    with pytest.raises(ValueError, match="in_shape"):
        checkpoint.save_model(path, model, params, state)
    with pytest.raises(ValueError, match="state="):
        checkpoint.save_model(path, model, params, in_shape=in_shape)
    with pytest.raises(ValueError, match=r"\['params'\]\[0\]\['W'\].*float32\[5, 12\]"):
        checkpoint.save_model(path, model, params, state, in_shape=(6,))
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save_model(
            path, model, params, state, in_shape=in_shape, metadata={"fnn_model": 1}
        )

    opaque = nn.Sequential([nn.Dense(3, W_init=lambda k, s, d: jnp.ones(s, d))])
    p, s = random_params(opaque, (2,), 0)
    with pytest.raises(ValueError, match="register"):
        checkpoint.save_model(path, opaque, p, s, in_shape=(2,))
    assert not path.exists()


def test_load_model_refuses_foreign_and_altered_descriptions(tmp_path):
    plain = checkpoint.save(tmp_path / "plain", {"x": 1})
    with pytest.raises(checkpoint.CheckpointError, match="not written by.*save_model"):
        checkpoint.load_model(plain)

    model, in_shape = models()["mlp"]
    params, state = random_params(model, in_shape, 0)
    path = checkpoint.save_model(
        tmp_path / "m", model, params, state, in_shape=in_shape
    )
    good = path.read_bytes()

    def described(change):
        path.write_bytes(good)
        edit_manifest(path, lambda m: change(m["metadata"]["fnn_model"]))

    # A name that is not a registered block (e.g. an attempt to reach code).
    described(lambda d: d["spec"]["args"]["blocks"][0].update(block="os.system"))
    with pytest.raises(checkpoint.CheckpointError, match=r"'os\.system'.*register"):
        checkpoint.load_model(path)
    described(lambda d: d.update(spec="Sequential"))
    with pytest.raises(checkpoint.CheckpointError, match="cannot be rebuilt"):
        checkpoint.load_model(path)
    described(lambda d: d.update(in_shape=[0]))
    with pytest.raises(checkpoint.CheckpointError, match="in_shape"):
        checkpoint.load_model(path)
    described(lambda d: d.update(dtype="object"))
    with pytest.raises(checkpoint.CheckpointError, match="dtype"):
        checkpoint.load_model(path)
    # A description that disagrees with the stored parameters.
    described(lambda d: d["spec"]["args"]["blocks"][0]["args"].update(n_out=17))
    with pytest.raises(checkpoint.CheckpointError, match=r"\['params'\]\[0\]\['W'\]"):
        checkpoint.load_model(path)
    described(lambda d: d.update(in_shape=[7]))
    with pytest.raises(checkpoint.CheckpointError, match=r"\[7, 16\].*\[6, 16\]"):
        checkpoint.load_model(path)
