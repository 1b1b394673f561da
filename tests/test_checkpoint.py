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
    with pytest.raises(ValueError, match=r"\['params'\]\[0\]\['gamma'\] is missing"):
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
