"""Checkpoints: any pytree of arrays plus a JSON manifest in one file, no pickle.

A checkpoint holds what is needed to resume a run (parameters, optimizer state,
PRNG key, epoch) and the run's configuration::

    fnn.checkpoint.save("run/ckpt.fnn", (params, opt_state, key, epoch),
                        metadata={"lr": 1e-3, "hidden": [64, 64]})
    params, opt_state, key, epoch = fnn.checkpoint.load(
        "run/ckpt.fnn", like=(params0, opt_state0, key0, 0))

Invariants:
  * ``load(path, like=tree)`` after ``save(path, tree)`` equals ``tree`` exactly:
    same treedef (NamedTuples stay NamedTuples, lists stay lists), same leaf
    types (``jax.Array``, ``numpy.ndarray``, Python ``int``/``float``/``bool``,
    typed PRNG keys), same shapes, dtypes and bits.
  * ``save`` is atomic: the file at ``path`` is either the previous checkpoint or
    the new one, never a partial write, even if the process dies mid-save.
  * Nothing is ever unpickled: every array is read with
    ``numpy.load(..., allow_pickle=False)``.

File format (version 1). The file is a zip archive (``zipfile.ZIP_STORED``, no
compression) with these entries:

  * ``leaves/<i>.npy`` for each leaf ``i`` in ``jax.tree`` order: one NPY file
    (numpy's own format, written with ``numpy.save(..., allow_pickle=False)``).
    Dtypes numpy cannot describe in NPY (``bfloat16``, ``float8_*``, ``int4``,
    ... from ``ml_dtypes``) are stored as their raw bits, viewed as the unsigned
    integer of the same width (``uint16`` for ``bfloat16``). A typed PRNG key
    array is stored as ``jax.random.key_data(key)`` (``uint32``).
  * ``manifest.json`` (UTF-8 JSON), written last, with:

    - ``format``: ``"fnn.checkpoint"``; ``format_version``: ``1``;
    - ``fnn_version``, ``jax_version``, ``numpy_version``, ``python_version``;
    - ``created``: UTC time of writing, ISO 8601;
    - ``structure``: ``str(treedef)``, for people only (``load`` never uses it);
    - ``leaves``: one record per leaf, in order: ``path`` (the key path as
      ``jax.tree_util.keystr`` writes it, e.g. ``[0]['W']``), ``entry`` (the zip
      entry name), ``kind`` (``"jax"``, ``"numpy"``, ``"key"``, ``"int"``,
      ``"float"`` or ``"bool"``), ``shape`` and ``dtype`` (of the leaf as the
      user sees it: ``key<fry>`` for a key, ``bfloat16`` for bfloat16),
      ``stored_dtype`` and ``stored_shape`` (of the NPY array in the entry),
      ``key_impl`` (keys only, e.g. ``"threefry2x32"``) and ``sha256`` (hex digest
      of the entry's bytes);
    - ``metadata``: the user's JSON object (``{}`` when none was given).

Python scalars are stored as 0-d arrays: ``int`` as ``int64``, ``float`` as
``float64``, ``bool`` as ``bool``.

Errors: a file that is not a readable checkpoint (not a zip, truncated, a
failed CRC or sha256 check, a missing or unreadable manifest, an unknown format
version, an entry that disagrees with the manifest) raises :class:`CheckpointError`
(a ``ValueError``) naming the file and the problem. A checkpoint that does not
fit the template given to ``load`` raises ``ValueError`` naming the first
missing, extra, mis-shaped or mis-typed leaf by key path, with the expected and
found shape and dtype. A missing file raises ``FileNotFoundError``.

References: seed 000, section 2, Learning algorithm
(epochs and parameter updates: the state a resumed run must restore). The NPY
format is numpy's (NEP 1); the container is the zip format of Python's
``zipfile``.
"""

import datetime
import hashlib
import io
import json
import os
import secrets
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

from ._tree import keystr

PyTree = Any

FORMAT = "fnn.checkpoint"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"

__all__ = [
    "CheckpointError",
    "FORMAT",
    "FORMAT_VERSION",
    "load",
    "read_metadata",
    "save",
]


class CheckpointError(ValueError):
    """A file that cannot be read as an fnn checkpoint (corrupt, truncated,
    foreign or of an unknown format version)."""


# --------------------------------------------------------------------------- #
# Leaves <-> stored arrays
# --------------------------------------------------------------------------- #

_PY_KINDS = {bool: "bool", int: "int", float: "float"}
_PY_DTYPES = {"bool": np.bool_, "int": np.int64, "float": np.float64}
_PY_TYPES = {"bool": bool, "int": int, "float": float}


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _native_npy(dtype: np.dtype) -> bool:
    """Whether NPY can describe ``dtype`` without pickle (numpy's own kinds)."""
    return dtype.kind in "biufcmM"


def _py_kind(leaf: Any) -> str | None:
    """``"bool"``/``"int"``/``"float"`` for a Python scalar leaf, else ``None``."""
    if isinstance(leaf, np.generic):  # np.float64 subclasses float: not Python
        return None
    for typ in (bool, int, float):  # bool first: it is a subclass of int
        if isinstance(leaf, typ):
            return _PY_KINDS[typ]
    return None


def _to_record(path: str, leaf: Any) -> tuple[dict, np.ndarray]:
    """The manifest record (without entry and checksum) and the array to store."""
    kind = _py_kind(leaf)
    if kind is not None:
        try:
            stored = np.asarray(leaf, dtype=_PY_DTYPES[kind])
        except OverflowError as err:
            raise ValueError(
                f"tree leaf {path}: the Python int {leaf} does not fit in int64."
            ) from err
        return {"kind": kind, "shape": [], "dtype": stored.dtype.name}, stored
    if isinstance(leaf, jax.Array):
        if _is_key_dtype(leaf.dtype):
            data = np.asarray(jax.device_get(jax.random.key_data(leaf)))
            record = {
                "kind": "key",
                "shape": list(leaf.shape),
                "dtype": str(leaf.dtype),
                "key_impl": str(jax.random.key_impl(leaf)),
            }
            return record, data
        kind, array = "jax", np.asarray(jax.device_get(leaf))
    elif isinstance(leaf, np.ndarray | np.generic):
        kind, array = "numpy", np.asarray(leaf)
    else:
        raise TypeError(
            f"tree leaf {path} is a {type(leaf).__name__}; a checkpoint holds only "
            "arrays (jax or numpy), typed PRNG keys and Python int/float/bool."
        )
    if not array.dtype.isnative:  # store native byte order; the name stays
        array = array.astype(array.dtype.newbyteorder("="))
    array = np.asarray(array, order="C")  # keeps 0-d (ascontiguousarray does not)
    record = {"kind": kind, "shape": list(array.shape), "dtype": array.dtype.name}
    if array.dtype.kind == "O":
        raise TypeError(
            f"tree leaf {path} is an object array; it cannot be stored without pickle."
        )
    if not _native_npy(array.dtype):
        if not hasattr(ml_dtypes, array.dtype.name):
            raise TypeError(
                f"tree leaf {path} has dtype {array.dtype}, which has no NPY "
                "representation (expected a numpy or ml_dtypes dtype)."
            )
        array = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return record, array


def _dtype_from_name(name: str) -> np.dtype:
    if hasattr(ml_dtypes, name):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def _describe(shape: Any, dtype: str) -> str:
    return f"{dtype}{list(shape)}"


# --------------------------------------------------------------------------- #
# save
# --------------------------------------------------------------------------- #


class _HashingWriter:
    """A write-only file object that forwards to ``raw`` and hashes the bytes."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable where the OS allows it (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(
    path: str | os.PathLike, tree: PyTree, *, metadata: Mapping | None = None
) -> Path:
    """Write ``tree`` and ``metadata`` to the checkpoint file ``path``, atomically.

    Invariant: after ``save(path, t, metadata=m)``, ``load(path, like=t)`` equals
    ``t`` bit for bit (same treedef and leaf types) and ``read_metadata(path)``
    equals ``json.loads(json.dumps(m))``.

    The file is first written in full to a temporary file in the same folder
    (flushed and ``fsync``-ed), then moved onto ``path`` with ``os.replace``, and
    the folder is ``fsync``-ed where the OS supports it. If anything fails, the
    temporary file is removed and a previous checkpoint at ``path`` is left as
    it was. Missing parent folders are created. ``path`` is used as given (no
    suffix is added). The format is described in the module docstring.

    Args:
      path: the file to write.
      tree: a pytree whose leaves are ``jax.Array`` (any shape and dtype,
        ``bfloat16`` included, or typed PRNG keys from ``jax.random.key``),
        ``numpy`` arrays or scalars, or Python ``int`` (must fit in int64),
        ``float`` and ``bool``.
      metadata: a JSON-serialisable mapping with string keys, e.g. the run's
        configuration. It comes back as ``json.loads`` gives it (tuples become
        lists).

    Returns:
      The ``pathlib.Path`` written.

    Raises:
      TypeError: a leaf that cannot be stored (named by key path).
      ValueError: ``metadata`` not a JSON-serialisable mapping with string keys,
        or two leaves with the same key path.

    The format is described in the module docstring.
    """
    path = Path(path)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValueError(
            f"metadata must be a mapping (a dict), got {type(metadata).__name__}."
        )
    bad_keys = [k for k in metadata if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"metadata keys must be strings, got {bad_keys[0]!r}.")
    try:
        metadata_json = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    records: list[dict] = []
    arrays: list[np.ndarray] = []
    seen: set[str] = set()
    for i, (key_path, leaf) in enumerate(flat):
        where = keystr(key_path)
        if where in seen:
            raise ValueError(f"two leaves of tree share the key path {where}.")
        seen.add(where)
        record, array = _to_record(where, leaf)
        records.append(
            {
                "path": where,
                "entry": f"leaves/{i}.npy",
                **record,
                "stored_dtype": array.dtype.name,
                "stored_shape": list(array.shape),
            }
        )
        arrays.append(array)

    from . import __version__ as fnn_version

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fnn_version": fnn_version,
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "structure": str(treedef),
        "leaves": records,
        "metadata": metadata_json,
    }

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for a
    # plain open(); O_EXCL guarantees the temporary name is ours.
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
    )
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                for record, array in zip(records, arrays, strict=True):
                    big = array.nbytes > (1 << 30)
                    with zf.open(record["entry"], "w", force_zip64=big) as entry:
                        writer = _HashingWriter(entry)
                        np.save(writer, array, allow_pickle=False)
                    record["sha256"] = writer.sha256.hexdigest()
                zf.writestr(_MANIFEST, json.dumps(manifest, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


# --------------------------------------------------------------------------- #
# load
# --------------------------------------------------------------------------- #


def _open(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (not a zip archive, or truncated): "
            f"{err}"
        ) from err


def _read_manifest(path: Path, zf: zipfile.ZipFile) -> dict:
    try:
        raw = zf.read(_MANIFEST)
    except KeyError as err:
        raise CheckpointError(
            f"{path} has no {_MANIFEST}: not an fnn checkpoint."
        ) from err
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read {_MANIFEST}: {err}") from err
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: {_MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: {_MANIFEST} does not describe an fnn checkpoint "
            f"(expected format {FORMAT!r})."
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unknown checkpoint format version {version!r}; this fnn reads "
            f"version {FORMAT_VERSION}."
        )
    leaves = manifest.get("leaves")
    needed = (
        "path",
        "entry",
        "kind",
        "shape",
        "dtype",
        "stored_dtype",
        "stored_shape",
        "sha256",
    )
    if not isinstance(leaves, list) or not all(
        isinstance(r, dict) and all(k in r for k in needed) for r in leaves
    ):
        raise CheckpointError(f"{path}: {_MANIFEST} has a malformed 'leaves' list.")
    if not isinstance(manifest.get("metadata"), dict):
        raise CheckpointError(f"{path}: {_MANIFEST} has no 'metadata' object.")
    return manifest


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` saved with the checkpoint at ``path``, without its arrays.

    Args:
      path: a checkpoint file written by :func:`save`.

    Returns:
      The metadata dict, as ``json.loads`` gives it (``{}`` if none was saved).

    Raises:
      CheckpointError: the file is not a readable checkpoint.
    """
    path = Path(path)
    with _open(path) as zf:
        return _read_manifest(path, zf)["metadata"]


def _read_array(path: Path, zf: zipfile.ZipFile, record: dict) -> np.ndarray:
    """The stored NPY array of one leaf, checked against its checksum and record."""
    where, entry = record["path"], record["entry"]
    try:
        raw = zf.read(entry)
    except KeyError as err:
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} is missing from the archive."
        ) from err
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} is corrupted: {err}"
        ) from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(
            f"{path}: checksum mismatch in entry {entry} of leaf {where} "
            f"(sha256 expected {record['sha256']}, found {digest}); the file is "
            "corrupted."
        )
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} is not a valid NPY array: {err}"
        ) from err
    if array.dtype.name != record["stored_dtype"] or list(array.shape) != list(
        record["stored_shape"]
    ):
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} holds "
            f"{_describe(array.shape, array.dtype.name)}, the manifest says "
            f"{_describe(record['stored_shape'], record['stored_dtype'])}."
        )
    return array


def _restore(path: Path, record: dict, stored: np.ndarray) -> Any:
    """The leaf as it was saved, from its stored array (no template)."""
    kind = record["kind"]
    try:
        if kind == "key":
            return jax.random.wrap_key_data(stored, impl=record["key_impl"])
        if kind in _PY_TYPES:
            return _PY_TYPES[kind](stored.item())
        dtype = _dtype_from_name(record["dtype"])
        return stored.view(dtype) if stored.dtype != dtype else stored
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path}: leaf {record['path']} cannot be restored as "
            f"{record['dtype']}: {err}"
        ) from err


def _expected(leaf: Any) -> tuple[str, list[int], str]:
    """``(kind, shape, dtype name)`` a template leaf asks for."""
    kind = _py_kind(leaf)
    if kind is not None:
        return kind, [], np.dtype(_PY_DTYPES[kind]).name
    dtype = getattr(leaf, "dtype", None)
    shape = getattr(leaf, "shape", None)
    if dtype is None or shape is None:
        raise TypeError(
            f"template leaf of type {type(leaf).__name__} is not an array, "
            "ShapeDtypeStruct, typed key or Python scalar."
        )
    if _is_key_dtype(dtype):
        return "key", list(shape), str(dtype)
    return "array", list(shape), np.dtype(dtype).name


def _shown(kind: str, shape: list, dtype: str) -> str:
    if kind in _PY_TYPES:
        return f"Python {kind}"
    return _describe(shape, dtype)


def _check_against(path: Path, template: PyTree, records: list[dict]) -> list:
    """Match the template's leaves to the records; raise on the first mismatch."""
    flat, _ = jax.tree_util.tree_flatten_with_path(template)
    by_path = {r["path"]: r for r in records}
    wanted = [keystr(p) for p, _ in flat]
    extra = [r["path"] for r in records if r["path"] not in set(wanted)]
    matched = []
    for where, (_, leaf) in zip(wanted, flat, strict=True):
        try:
            kind, shape, dtype = _expected(leaf)
        except TypeError as err:
            raise TypeError(f"like: leaf {where}: {err}") from err
        record = by_path.get(where)
        if record is None:
            hint = f"; the file has leaves the template lacks: {extra}" if extra else ""
            raise ValueError(
                f"checkpoint {path}: leaf {where} is missing (the template expects "
                f"{_shown(kind, shape, dtype)}){hint}."
            )
        found_kind = record["kind"]
        if found_kind not in ("key", *_PY_TYPES):
            found_kind = "array"
        found = _shown(found_kind, record["shape"], record["dtype"])
        expected = _shown(kind, shape, dtype)
        if found_kind != kind or record["dtype"] != dtype:
            raise ValueError(
                f"checkpoint {path}: leaf {where} has the wrong type: expected "
                f"{expected}, found {found}."
            )
        if list(record["shape"]) != shape:
            raise ValueError(
                f"checkpoint {path}: leaf {where} has the wrong shape: expected "
                f"{expected}, found {found}."
            )
        matched.append(record)
    if extra:
        found = by_path[extra[0]]
        raise ValueError(
            f"checkpoint {path}: leaf {extra[0]} "
            f"({_shown(found['kind'], found['shape'], found['dtype'])}) is in the file "
            "but not in the template (extra leaf)."
        )
    return matched


def _as_template_type(path: Path, record: dict, like_leaf: Any, value: Any) -> Any:
    """``value`` (restored as saved) converted to the container type of
    ``like_leaf``: jax array, numpy array or scalar, Python scalar, typed key."""
    if record["kind"] == "key" or _py_kind(like_leaf) is not None:
        return value
    if isinstance(like_leaf, np.ndarray):
        return np.asarray(value)
    if isinstance(like_leaf, np.generic):
        return np.asarray(value)[()]
    out = jax.device_put(value)
    if out.dtype != value.dtype:
        raise ValueError(
            f"checkpoint {path}: leaf {record['path']} is {value.dtype}, which jax "
            f"turns into {out.dtype} here; load it inside "
            "`with jax.enable_x64(True):`."
        )
    return out


def load(path: str | os.PathLike, like: PyTree | None = None) -> Any:
    """Read the checkpoint at ``path``; in the shape of ``like`` when given.

    Invariant: ``load(path, like=t) == t`` after ``save(path, t)``, for any
    template ``t2`` with the treedef, leaf types, shapes and dtypes of ``t``
    (``load(path, like=t2) == t`` too: only the template's values are ignored).

    With a template, the result has the template's treedef and leaf types:
    NamedTuples come back as the template's NamedTuple classes, lists as lists;
    a ``jax.Array`` or ``jax.ShapeDtypeStruct`` leaf gives a ``jax.Array`` on the
    default device, a numpy leaf a numpy array (or scalar), a Python scalar a
    Python scalar, a typed key a typed key of the same implementation. Leaves
    are matched by key path (``jax.tree_util.keystr``), so a list saved can be
    loaded into a tuple template. Each leaf's shape and dtype must equal the
    template's (the template's values are ignored).

    Without a template, returns a flat ``{keystr: value}`` dict in the saved
    order, where each value is a ``numpy.ndarray`` (exactly as stored, bfloat16
    as an ``ml_dtypes`` array; jax arrays are not rebuilt, so 64-bit values
    survive without ``jax_enable_x64``), a typed PRNG key ``jax.Array``, or a
    Python ``int``/``float``/``bool``.

    Args:
      path: a checkpoint file written by :func:`save`.
      like: optional template pytree (e.g. freshly initialised parameters and
        optimizer state, or their ``jax.eval_shape``).

    Returns:
      The restored tree (with ``like``) or the flat dict (without).

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: the file is not a readable checkpoint (see the module
        docstring); a ``ValueError``.
      ValueError: the checkpoint does not fit ``like``: names the first missing,
        extra, mis-shaped or mis-typed leaf with expected and found
        ``dtype[shape]``.

    The format is described in the module docstring.
    """
    path = Path(path)
    with _open(path) as zf:
        records = _read_manifest(path, zf)["leaves"]
        if like is None:
            return {
                r["path"]: _restore(path, r, _read_array(path, zf, r)) for r in records
            }
        matched = _check_against(path, like, records)
        flat, treedef = jax.tree_util.tree_flatten_with_path(like)
        leaves = []
        for (_, like_leaf), record in zip(flat, matched, strict=True):
            value = _restore(path, record, _read_array(path, zf, record))
            leaves.append(_as_template_type(path, record, like_leaf, value))
    return jax.tree.unflatten(treedef, leaves)
