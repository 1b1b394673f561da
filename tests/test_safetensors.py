"""Tests for checkpoints in the safetensors format: exact round trips, names any
tool reads, an independent reader, the manifest in the header, validation."""

import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import fnn
from fnn import checkpoint, interop, nn

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save as st_save  # noqa: E402


def training_tree():
    """Parameters, BatchNorm running averages, Adam state, a key, an epoch and a
    bfloat16 copy of the weights: what a resumed run needs."""
    model = nn.Sequential([nn.Dense(4, "relu"), nn.BatchNorm(), nn.Dense(2)])
    params, state = nn.init(jax.random.key(0), model, (3,))
    state = jax.tree.map(lambda s: s + 0.25, state)
    opt_state = fnn.optim.adam(1e-3).init(params)
    opt_state = opt_state._replace(count=jnp.asarray(7, jnp.int32))
    tree = {
        "params": params,
        "state": state,
        "opt_state": opt_state,
        "key": jax.random.key(3),
        "epoch": 5,
        "lr": 0.5,
        "done": False,
        "bf16": jax.tree.map(lambda p: p.astype(jnp.bfloat16), params[0]),
        "int4": np.arange(-3, 3).astype(ml_dtypes.int4),
    }
    return model, tree


# The independent reader: the safetensors format from its specification alone.
DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "U32": np.uint32,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def parse_safetensors(data: bytes) -> tuple[dict, dict]:
    """``({name: array}, metadata)``: 8-byte little-endian header length N, N
    bytes of JSON header, then each tensor's bytes at its data_offsets."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        start, stop = info["data_offsets"]
        dtype = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(body[start:stop], dtype).reshape(info["shape"])
    return out, meta


def test_round_trip_is_exact(tmp_path):
    _, tree = training_tree()
    path = checkpoint.save(tmp_path / "run.safetensors", tree, format="safetensors")
    back = checkpoint.load(path, like=tree)
    chex.assert_trees_all_equal_structs(back, tree)
    assert isinstance(back["opt_state"], type(tree["opt_state"]))
    assert type(back["epoch"]) is int and back["epoch"] == 5
    assert type(back["done"]) is bool and back["lr"] == 0.5
    assert back["bf16"]["W"].dtype == jnp.bfloat16
    assert back["int4"].dtype == ml_dtypes.int4
    np.testing.assert_array_equal(
        jax.random.key_data(back["key"]), jax.random.key_data(tree["key"])
    )
    rest = lambda t: {k: v for k, v in t.items() if k not in ("key", "int4")}  # noqa: E731
    chex.assert_trees_all_equal(rest(back), rest(tree))
    np.testing.assert_array_equal(
        back["int4"].astype(np.int8), tree["int4"].astype(np.int8)
    )


def test_names_dtypes_shapes_seen_by_safe_open(tmp_path):
    """safetensors.safe_open reads fnn's file: key-path names, BF16, shapes."""
    _, tree = training_tree()
    path = checkpoint.save(tmp_path / "run.safetensors", tree, format="safetensors")
    with safe_open(path, framework="np") as f:
        names = set(f.keys())
        meta = f.metadata()
        layout = {
            k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in names
        }
    assert {"params.0.W", "params.0.b", "params.1.gamma", "state.1.mean"} <= names
    assert {"opt_state.count", "opt_state.m.0.W", "opt_state.v.2.b"} <= names
    assert layout["params.0.W"] == ("F32", [3, 4])
    assert layout["state.1.var"] == ("F32", [4])
    assert layout["bf16.W"] == ("BF16", [3, 4])
    assert layout["opt_state.count"] == ("I32", [])
    assert layout["key"] == ("U32", [2])
    assert layout["epoch"] == ("I64", [])
    manifest = json.loads(meta["fnn.manifest"])
    assert manifest["fnn_version"] == fnn.__version__
    assert manifest["container"] == "safetensors"
    assert "AdamState" in manifest["structure"]
    by_name = {r["name"]: r for r in manifest["leaves"]}
    assert by_name["bf16.W"]["dtype"] == "bfloat16"
    assert by_name["opt_state.m.0.W"]["path"] == "['opt_state'].m[0]['W']"
    assert by_name["int4"]["dtype"] == "int4"


def test_independent_reader_gives_the_same_arrays(tmp_path):
    """A 20-line reader of the format (no safetensors package) gets the arrays."""
    _, tree = training_tree()
    path = checkpoint.save(tmp_path / "run.safetensors", tree, format="safetensors")
    arrays, meta = parse_safetensors(path.read_bytes())
    np.testing.assert_array_equal(arrays["params.0.W"], tree["params"][0]["W"])
    np.testing.assert_array_equal(arrays["state.1.var"], tree["state"][1]["var"])
    np.testing.assert_array_equal(
        arrays["opt_state.v.2.W"], tree["opt_state"].v[2]["W"]
    )
    assert arrays["bf16.W"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(
        arrays["bf16.W"].view(np.uint16), np.asarray(tree["bf16"]["W"]).view(np.uint16)
    )
    assert arrays["epoch"].item() == 5
    assert json.loads(meta["fnn.metadata"]) == {}
    assert len(arrays) == len(jax.tree.leaves(tree))


def test_model_round_trip_and_spec_in_metadata(tmp_path):
    model, tree = training_tree()
    path = checkpoint.save_model(
        tmp_path / "model.safetensors",
        model,
        tree["params"],
        tree["state"],
        in_shape=(3,),
        metadata={"lr": 1e-3},
        format="safetensors",
    )
    _, meta = parse_safetensors(path.read_bytes())
    described = json.loads(meta["fnn.metadata"])
    assert described["fnn_model"]["spec"] == nn.to_spec(model)
    assert described["lr"] == 1e-3
    model2, params, state = checkpoint.load_model(path)
    assert checkpoint.read_metadata(path)["fnn_model"]["in_shape"] == [3]
    chex.assert_trees_all_equal((params, state), (tree["params"], tree["state"]))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y1, _, _ = nn.forward(model, tree["params"], x, state=tree["state"])
    y2, _, _ = nn.forward(model2, params, x, state=state)
    np.testing.assert_array_equal(y1, y2)


def test_foreign_file_loads_without_and_with_template(tmp_path):
    """A file another tool wrote (no fnn manifest): a dict of arrays, or a tree
    matched by name; PyTorch-named weights go through fnn.interop."""
    model = fnn.mlp([3, 4, 2], "tanh")
    params, state = nn.init(jax.random.key(0), model)
    torch_named = interop.to_torch_state_dict(model, params, state)
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_save(torch_named, metadata={"format": "pt"}))
    loaded = checkpoint.load(path)
    assert set(loaded) == set(torch_named)
    back, _ = interop.from_torch_state_dict(model, loaded)
    chex.assert_trees_all_equal(back, params)
    assert checkpoint.read_metadata(path) == {}
    plain = tmp_path / "plain.safetensors"
    by_name = {
        f"{i}.{k}": np.asarray(v) for i, p in enumerate(params) for k, v in p.items()
    }
    plain.write_bytes(st_save(by_name))
    chex.assert_trees_all_equal(checkpoint.load(plain, like=params), params)


def test_template_mismatch_names_the_leaf(tmp_path):
    _, tree = training_tree()
    path = checkpoint.save(tmp_path / "run.safetensors", tree, format="safetensors")
    wrong = {**tree, "params": [dict(p) for p in tree["params"]]}
    wrong["params"][0]["W"] = jnp.zeros((3, 5))
    with pytest.raises(
        checkpoint.CheckpointError, match=r"\['params'\]\[0\]\['W'\].*shape"
    ):
        checkpoint.load(path, like=wrong)
    with pytest.raises(checkpoint.CheckpointError, match=r"\['epoch'\].*extra leaf"):
        checkpoint.load(path, like={k: v for k, v in tree.items() if k != "epoch"})
    with pytest.raises(checkpoint.CheckpointError, match=r"\['more'\] is missing"):
        checkpoint.load(path, like={**tree, "more": jnp.zeros(2)})


def _corrupt(path, find: bytes, replace: bytes):
    data = path.read_bytes()
    assert data.count(find) >= 1
    path.write_bytes(data.replace(find, replace, 1))


def test_altered_tensor_fails_its_checksum(tmp_path):
    tree = {"W": np.full((4,), 1.5, np.float32), "b": np.zeros(2, np.float32)}
    path = checkpoint.save(tmp_path / "w.safetensors", tree, format="safetensors")
    _corrupt(path, np.float32(1.5).tobytes(), np.float32(2.5).tobytes())
    with pytest.raises(
        checkpoint.CheckpointError, match="checksum mismatch in tensor 'W'"
    ):
        checkpoint.load(path)


def test_truncated_and_malformed_files_are_refused(tmp_path):
    tree = {"W": np.ones((8, 8), np.float32)}
    path = checkpoint.save(tmp_path / "w.safetensors", tree, format="safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(checkpoint.CheckpointError, match="not a valid safetensors"):
        checkpoint.load(path)
    path.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(checkpoint.CheckpointError, match="header"):
        checkpoint.load(path)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    manifest = json.loads(header["__metadata__"]["fnn.manifest"])
    manifest["leaves"][0]["name"] = "V"
    header["__metadata__"]["fnn.manifest"] = json.dumps(manifest)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_len :])
    with pytest.raises(checkpoint.CheckpointError, match="no tensor 'V'"):
        checkpoint.load(path)


def test_names_that_collide_or_cannot_be_stored_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"both be the tensor 'a.b'"):
        checkpoint.save(
            tmp_path / "x.safetensors",
            {"a": {"b": np.zeros(1)}, "a.b": np.zeros(1)},
            format="safetensors",
        )
    with pytest.raises(TypeError, match="format='fnn'"):
        checkpoint.save(
            tmp_path / "x.safetensors",
            {"z": np.zeros(2, np.complex64)},
            format="safetensors",
        )
    with pytest.raises(ValueError, match="format must be"):
        checkpoint.save(tmp_path / "x", {"z": np.zeros(2)}, format="npz")
    assert not any(tmp_path.iterdir())


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = checkpoint.save(
        tmp_path / "w.safetensors", {"v": np.ones(3)}, format="safetensors"
    )
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.save(path, {"v": np.zeros(3)}, format="safetensors")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'pip install "fnn\[safetensors\]"'):
        checkpoint.save(
            tmp_path / "w.safetensors", {"v": np.ones(2)}, format="safetensors"
        )
    checkpoint.save(tmp_path / "w.fnn", {"v": np.ones(2)})
