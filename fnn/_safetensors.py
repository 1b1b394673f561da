"""Checkpoints as safetensors files (``fnn.checkpoint.save(..., format=
"safetensors")``): writing, and reading back through the checks of
:mod:`fnn.checkpoint`, whose docstring describes the layout ("Safetensors
format"). The ``safetensors`` package is optional
(``pip install "fnn[safetensors]"``) and imported only here.

References: the safetensors format specification (Hugging Face,
``safetensors`` README, "Format").
"""

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

from . import checkpoint as _ckpt

CONTAINER = "safetensors"
MANIFEST_KEY = "fnn.manifest"
METADATA_KEY = "fnn.metadata"
ROOT_NAME = "<root>"
_MAX_HEADER = 100_000_000  # bytes, as the safetensors library's own limit

# safetensors dtype code <-> numpy dtype, for the types every safetensors
# version writes (others are stored as the unsigned integer of their width).
_CODES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NATIVE = {dtype.name: code for code, dtype in _CODES.items()}

_MISSING = (
    "safetensors files need the optional package safetensors: "
    'pip install "fnn[safetensors]" (or pip install safetensors).'
)


def _package():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return safetensors


def tensor_name(key_path: Any) -> str:
    """The tensor name of a leaf: its key path's parts joined by dots
    (``params.0.W``); ``<root>`` for a tree that is a single leaf."""
    parts = []
    for entry in key_path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts) if parts else ROOT_NAME


def _little_bytes(array: np.ndarray) -> bytes:
    """The array's bytes as safetensors stores them (C order, little-endian)."""
    array = np.require(array, requirements="C")
    if sys.byteorder == "big":
        array = array.byteswap()
    return array.tobytes()


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(_little_bytes(array)).hexdigest()


def save(path: Path, tree: Any, metadata_json: dict) -> Path:
    """Write ``tree`` as a safetensors file at ``path`` (atomically); the
    metadata has been checked by :func:`fnn.checkpoint.save`."""
    package = _package()
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    records, tensors = [], {}
    owner: dict[str, str] = {}
    for key_path, leaf in flat:
        where = _ckpt.keystr(key_path)
        name = tensor_name(key_path)
        if name == "__metadata__":
            raise ValueError(
                f"tree leaf {where} would be the tensor '__metadata__', a name "
                "safetensors reserves; rename that key."
            )
        if name in owner:
            raise ValueError(
                f"tree leaves {owner[name]} and {where} would both be the tensor "
                f"{name!r} (a dict key holding a dot?); rename one of the keys, or "
                "save with format='fnn'."
            )
        owner[name] = where
        record, array = _ckpt._to_record(where, leaf)
        if record["dtype"] in _NATIVE and array.dtype.name != record["dtype"]:
            array = array.view(_ckpt._dtype_from_name(record["dtype"]))
        if array.dtype.name not in _NATIVE:
            raise TypeError(
                f"tree leaf {where} has dtype {array.dtype}, which safetensors "
                "cannot store; save it with format='fnn' (the native format)."
            )
        array = np.require(array, requirements="C")
        records.append(
            {"name": name, "path": where, **record, "sha256": _sha256(array)}
        )
        tensors[name] = array

    manifest = {
        "format": _ckpt.FORMAT,
        "format_version": _ckpt.FORMAT_VERSION,
        "container": CONTAINER,
        **_ckpt._provenance(),
        "structure": str(treedef),
        "leaves": records,
    }
    header = {
        MANIFEST_KEY: json.dumps(manifest),
        METADATA_KEY: json.dumps(metadata_json),
    }
    data = package.numpy.save(tensors, metadata=header)
    return _ckpt._write_atomically(path, lambda f: f.write(data))


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def is_safetensors(path: Path) -> bool:
    """Whether the file at ``path`` starts as a safetensors file does (an
    8-byte header length, then ``{``), not as a zip archive (``PK``)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[:2] == b"PK":
        return False
    return head[8:9] == b"{"


def _bad(path: Path, problem: str) -> _ckpt.CheckpointError:
    return _ckpt.CheckpointError(f"{path}: {problem}. {_ckpt._NOT_SAVED}")


def _read_header(path: Path, data: bytes) -> tuple[dict, dict]:
    """``(header without __metadata__, __metadata__)`` parsed as JSON only."""
    if len(data) < 8:
        raise _bad(path, "is too short to be a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= min(len(data) - 8, _MAX_HEADER):
        raise _bad(
            path,
            f"declares a {n}-byte safetensors header, which the {len(data)}-byte "
            "file cannot hold (truncated or not a safetensors file)",
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise _bad(path, f"has a safetensors header that is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise _bad(path, "has a safetensors header that is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _bad(path, "has a __metadata__ that is not a string-to-string map")
    return header, meta


def _tensors(path: Path, data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of the file as a numpy array, via the safetensors package
    (which checks the offsets); dtypes mapped here, bfloat16 included."""
    package = _package()
    try:
        entries = package.deserialize(data)
    except Exception as err:  # SafetensorError, or a malformed header
        raise _bad(path, f"is not a valid safetensors file: {err}") from err
    out = {}
    for name, info in entries:
        code, shape, raw = info["dtype"], list(info["shape"]), info["data"]
        dtype = _CODES.get(code)
        if dtype is None:
            raise _bad(
                path,
                f"tensor {name!r} has safetensors dtype {code}, which fnn does not "
                f"read (it reads {', '.join(_CODES)})",
            )
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise _bad(path, f"tensor {name!r} holds {len(raw)} bytes for {shape}")
        array = np.frombuffer(bytes(raw), dtype)  # owns a copy of the bytes
        if sys.byteorder == "big":
            array = array.byteswap()
        out[name] = array.reshape(shape)
    return out


def _manifest(path: Path, meta: dict) -> dict | None:
    text = meta.get(MANIFEST_KEY)
    if text is None:
        return None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise _bad(path, f"has an {MANIFEST_KEY} that is not JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != _ckpt.FORMAT:
        raise _bad(path, f"has an {MANIFEST_KEY} that is not an fnn manifest")
    version = manifest.get("format_version")
    if version != _ckpt.FORMAT_VERSION:
        raise _ckpt.CheckpointError(
            f"{path}: unknown checkpoint format version {version!r}; this fnn reads "
            f"version {_ckpt.FORMAT_VERSION}. Load it with the fnn version that "
            "wrote it (its manifest names it) and save it again with this one."
        )
    leaves = manifest.get("leaves")
    needed = ("name", "path", "kind", "shape", "dtype", "sha256")
    if not isinstance(leaves, list) or not all(
        isinstance(r, dict) and all(k in r for k in needed) for r in leaves
    ):
        raise _bad(
            path,
            f"has a malformed 'leaves' list in {MANIFEST_KEY} (each leaf needs "
            f"{', '.join(needed)})",
        )
    return manifest


def read_metadata(path: Path) -> dict:
    """The user's metadata of an fnn safetensors file (``{}`` for a foreign one)."""
    data = path.read_bytes()
    _, meta = _read_header(path, data)
    if MANIFEST_KEY not in meta:
        return {}
    _manifest(path, meta)
    try:
        metadata = json.loads(meta.get(METADATA_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError) as err:
        raise _bad(path, f"has an {METADATA_KEY} that is not JSON: {err}") from err
    if not isinstance(metadata, dict):
        raise _bad(path, f"has an {METADATA_KEY} that is not a JSON object")
    return metadata


def _npy_form(array: np.ndarray) -> np.ndarray:
    """The array as the native format stores it (``ml_dtypes`` as unsigned ints),
    so that both formats share the checks of :mod:`fnn.checkpoint`."""
    if array.dtype.name in _ckpt._ML_DTYPES:
        return array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return array


def _records(path: Path, manifest: dict, tensors: dict) -> list[dict]:
    """The manifest's leaves as native-format records, checked against the
    tensors (names, dtypes, shapes, checksums)."""
    records = []
    names = set()
    for i, leaf in enumerate(manifest["leaves"]):
        name = leaf["name"]
        if not isinstance(name, str) or name in names:
            raise _bad(path, f"lists tensor {name!r} twice or by a non-string name")
        names.add(name)
        if name not in tensors:
            raise _bad(
                path, f"has no tensor {name!r} for leaf {leaf['path']} (missing)"
            )
        stored = _npy_form(tensors[name])
        record = {
            **leaf,
            "entry": name,
            "stored_dtype": stored.dtype.name,
            "stored_shape": list(stored.shape),
        }
        _ckpt._check_record(path, i, record)
        digest = _sha256(tensors[name])
        if digest != leaf["sha256"]:
            raise _ckpt.CheckpointError(
                f"{path}: checksum mismatch in tensor {name!r} of leaf "
                f"{leaf['path']} (sha256 expected {leaf['sha256']}, found "
                f"{digest}); the file is corrupted. {_ckpt._NOT_SAVED}"
            )
        records.append(record)
    extra = [n for n in tensors if n not in names]
    if extra:
        raise _bad(path, f"holds tensors the manifest does not list: {extra}")
    return records


def _foreign_records(tensors: dict, like: Any) -> list[dict]:
    """Records for a file without fnn's manifest: every tensor a numpy leaf; with
    a template, named by the template's key path where the names agree."""
    paths = {}
    if like is not None:
        for key_path, _ in jax.tree_util.tree_flatten_with_path(like)[0]:
            paths[tensor_name(key_path)] = _ckpt.keystr(key_path)
    records = []
    for name, array in tensors.items():
        stored = _npy_form(array)
        records.append(
            {
                "path": paths.get(name, name),
                "entry": name,
                "kind": "numpy",
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "stored_dtype": stored.dtype.name,
                "stored_shape": list(stored.shape),
            }
        )
    return records


def load(path: Path, like: Any = None) -> Any:
    """:func:`fnn.checkpoint.load` for a safetensors file."""
    data = path.read_bytes()
    _, meta = _read_header(path, data)
    manifest = _manifest(path, meta)
    tensors = _tensors(path, data)
    if manifest is None:
        if like is None:
            return dict(tensors)
        records = _foreign_records(tensors, like)
    else:
        records = _records(path, manifest, tensors)
    by_entry = {r["entry"]: r for r in records}

    def restored(record):
        return _ckpt._restore(path, record, _npy_form(tensors[record["entry"]]))

    if like is None:
        return {r["path"]: restored(r) for r in records}
    matched = _ckpt._check_against(path, like, records)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for (_, like_leaf), record in zip(flat, matched, strict=True):
        record = by_entry[record["entry"]]
        leaves.append(
            _ckpt._as_template_type(path, record, like_leaf, restored(record))
        )
    return jax.tree.unflatten(treedef, leaves)
