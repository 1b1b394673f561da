"""Checkpoints: any pytree of arrays plus a JSON manifest in one file, no pickle.

A checkpoint holds what is needed to resume a run (parameters, optimizer state,
PRNG key, epoch) and the run's configuration::

    fnn.checkpoint.save("run/ckpt.fnn", (params, opt_state, key, epoch),
                        metadata={"lr": 1e-3, "hidden": [64, 64]})
    params, opt_state, key, epoch = fnn.checkpoint.load(
        "run/ckpt.fnn", like=(params0, opt_state0, key0, 0))

A model (an ``fnn.nn`` block) is saved with its architecture as plain data, and
loaded back without any template and without running stored code::

    fnn.checkpoint.save_model("run/model.fnn", model, params, state,
                              in_shape=(28, 28, 1))
    model, params, state = fnn.checkpoint.load_model("run/model.fnn")

With ``format="safetensors"`` (``save`` and ``save_model``) the file is a
safetensors file that other tools read (PyTorch, Hugging Face, the
``safetensors`` package alone), tensors named by key path (``params.0.W``,
``opt_state.m.0.W``) and this manifest in its ``__metadata__``; ``load``,
``load_model`` and ``read_metadata`` recognise either format by its first bytes
("Safetensors format" below). The native format below stays
the default: it needs nothing beyond numpy and keeps every leaf type.

Invariants:
  * ``load(path, like=tree)`` after ``save(path, tree)`` equals ``tree`` exactly:
    same treedef (NamedTuples stay NamedTuples, lists stay lists), same leaf
    types (``jax.Array``, ``numpy.ndarray``, Python ``int``/``float``/``bool``,
    typed PRNG keys), same shapes, dtypes and bits.
  * ``save`` is atomic: the file at ``path`` is either the previous checkpoint or
    the new one, never a partial write, even if the process dies mid-save.
  * Nothing is ever unpickled: every array is rebuilt from its NPY header
    (parsed as a literal, never evaluated) and raw bytes; object dtypes are
    refused.

File format (version 1). The file is a zip archive (``zipfile.ZIP_STORED``, no
compression) with these entries:

  * ``leaves/<i>.npy`` for each leaf ``i`` in ``jax.tree`` order: one NPY file
    (numpy's own format, written with ``numpy.save(..., allow_pickle=False)``).
    Dtypes numpy cannot describe in NPY (every ``ml_dtypes`` type:
    ``bfloat16``, ``float8_*``, ``int4``, ...) are stored as their raw bits,
    viewed as the unsigned integer of the same width (``uint16`` for
    ``bfloat16``). A typed PRNG key
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

Reading trusts nothing in the file. ``load`` and ``read_metadata`` accept only:

  * entries stored uncompressed and unencrypted, each name once, whose declared
    size fits in the file; a leaf's entry must be exactly the size its NPY
    header and the manifest promise (header length + ``prod(stored_shape)`` x
    itemsize), checked before its data is read, which is then read in bounded
    chunks (a small file cannot make ``load`` allocate more than it holds);
  * NPY headers (versions 1.0 and 2.0, C order, no object dtype) whose dtype
    and shape equal the manifest's ``stored_dtype`` and ``stored_shape``;
  * manifest records with a known ``kind``, each ``path`` and ``entry`` once, and
    a legitimate (``dtype``, ``stored_dtype``) pair: the same numpy dtype, an
    ``ml_dtypes`` type stored as the unsigned integer of its width, a typed key
    stored as ``uint32`` key data of shape ``shape + key_shape`` of its
    ``key_impl``, a Python scalar as ``int64``/``float64``/``bool`` of shape ``[]``;
    ``shape`` must equal ``stored_shape`` (keys: plus the key data shape);
  * leaves whose restored shape and dtype equal the manifest's and, with a
    template, the template's; and whose sha256 matches.

Errors: a file that is not a readable checkpoint (not a zip, truncated, a
failed CRC or sha256 check, a missing or unreadable manifest, an unknown format
version, an entry that disagrees with the manifest or breaks a rule above)
raises :class:`CheckpointError` (a ``ValueError``) naming the file, the leaf or
entry and the problem, and saying what to do. A checkpoint that does not fit
the template given to ``load`` raises :class:`CheckpointError` naming the first
missing, extra, mis-shaped or mis-typed leaf by key path, with the expected and
found shape and dtype. A missing file raises ``FileNotFoundError``.

Safetensors format (``format="safetensors"``). The file is a safetensors file
(an 8-byte little-endian header length N, N bytes of JSON header, then the raw
little-endian bytes of every tensor):

  * one tensor per leaf, named by its key path with the parts joined by dots:
    a dict key, a list or tuple index, a NamedTuple field, so that
    ``{"params": [{"W": ...}], "opt_state": AdamState(m=[{"W": ...}], ...)}``
    gives ``params.0.W`` and ``opt_state.m.0.W``; a lone leaf is ``<root>``.
    Two leaves whose names coincide (a dict key holding a dot) are refused.
  * dtypes: safetensors' own (``F64``, ``F32``, ``F16``, ``BF16``, ``F8_E4M3``,
    ``F8_E5M2``, ``I8``..``I64``, ``U8``..``U64``, ``BOOL``); other ``ml_dtypes``
    types as the unsigned integer of their width (their dtype is in the
    manifest); a typed PRNG key as its ``uint32`` key data; Python ``int``,
    ``float``, ``bool`` as 0-d ``I64``, ``F64``, ``BOOL``. Complex and
    datetime arrays are refused (not every safetensors version has such types).
  * ``__metadata__`` (strings only, as safetensors requires):

    - ``fnn.manifest``: JSON with ``format`` (``"fnn.checkpoint"``),
      ``format_version``, ``container`` (``"safetensors"``), the fnn, jax,
      numpy and Python versions, ``created``, ``structure`` (``str(treedef)``,
      for people) and ``leaves``: per leaf, in ``jax.tree`` order, ``name``
      (the tensor), ``path`` (``jax.tree_util.keystr``), ``kind``, ``shape``
      and ``dtype`` as the user sees them, ``key_impl`` (keys) and ``sha256``
      of the tensor's bytes;
    - ``fnn.metadata``: the user's metadata as JSON (with the model's spec,
      ``in_shape`` and dtype under ``"fnn_model"`` for
      :func:`save_model`).

Invariants: ``load(path, like=t)`` after ``save(path, t, format="safetensors")``
equals ``t`` exactly, as for the native format; the write is atomic (the same
temporary-file, ``fsync``, rename path); every tensor's sha256 is checked on
load; nothing in the file is executed: the header is parsed as JSON and every
tensor rebuilt from raw bytes. A safetensors file written by another tool (no
``fnn.manifest``) loads too: without a template as ``{name: numpy array}``;
with one, tensors matched by the names above, shapes and dtypes checked.

Why the native format stays a zip of NPY entries: safetensors has no checksum,
no typed PRNG keys, no Python scalars and no tree structure of its own (fnn
adds them in the manifest either way), and it is written through an optional
package; the zip format needs nothing beyond numpy and its existing files keep
loading. Both share one manifest schema and one loader, so a file of either
kind loads with the same call.

References: [Deep Learning 2020, Learning algorithm] (epochs and parameter
updates: the state a resumed run must restore). The NPY format is numpy's (NEP
1); the container is the zip format of Python's ``zipfile``; the safetensors
format is Hugging Face's (the ``safetensors`` README, "Format").
"""

import datetime
import functools
import hashlib
import json
import math
import os
import re
import secrets
import socket
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ._tree import keystr, leaves_with_paths

PyTree = Any

FORMAT = "fnn.checkpoint"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"

__all__ = [
    "CheckpointError",
    "FORMAT",
    "FORMATS",
    "FORMAT_VERSION",
    "MODEL_KEY",
    "load",
    "load_model",
    "read_metadata",
    "save",
    "save_model",
]


class CheckpointError(ValueError):
    """A file that cannot be read as an fnn checkpoint (corrupt, truncated,
    altered, foreign or of an unknown format version), or one that does not fit
    the template given to :func:`load`."""


# --------------------------------------------------------------------------- #
# Leaves <-> stored arrays
# --------------------------------------------------------------------------- #

_PY_KINDS = {bool: "bool", int: "int", float: "float"}
_PY_DTYPES = {"bool": np.bool_, "int": np.int64, "float": np.float64}
_PY_TYPES = {"bool": bool, "int": int, "float": float}


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _ml_dtype_names() -> frozenset[str]:
    """Names of the ``ml_dtypes`` array types (``bfloat16``, ``float8_*``, ...)."""
    names = set()
    for name in dir(ml_dtypes):
        typ = getattr(ml_dtypes, name)
        if not isinstance(typ, type) or name.startswith("_"):
            continue
        try:
            dtype = np.dtype(typ)
        except TypeError:
            continue
        if dtype.kind != "O" and dtype.name == name:
            names.add(name)
    return frozenset(names)


_ML_DTYPES = _ml_dtype_names()


def _native_npy(dtype: np.dtype) -> bool:
    """Whether NPY can describe ``dtype`` without pickle (numpy's own kinds; not
    an ``ml_dtypes`` type, even one whose kind is ``"f"`` like ``float8_e5m2``)."""
    return dtype.kind in "biufcmM" and dtype.name not in _ML_DTYPES


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
        if array.dtype.name not in _ML_DTYPES:
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


def _host_tag() -> str:
    """8 hex digits naming this machine in temporary file names."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_name(name: str) -> str:
    """``.<name>.<host>-<pid>-<random>.tmp``: the writer's machine and process."""
    return f".{name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (POSIX only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def _remove_dead_temps(path: Path) -> None:
    """Remove the temporary files of saves to ``path`` whose writer died.

    A temporary file is removed only if all of these hold: its name is the one
    :func:`save` gives for ``path`` on this machine (same host tag), the process
    id in its name is not this process and no longer exists, and an exclusive
    ``flock`` on it can be taken at once (a live writer holds one while it
    writes, even from another PID namespace). Anything else is left alone:
    a live writer's file is never touched. Failures are ignored (the save goes
    on). POSIX only; elsewhere nothing is removed.
    """
    if os.name != "posix" or fcntl is None:  # os.kill(pid, 0) kills on Windows
        return
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.([0-9a-f]{{8}})-([0-9]{{1,10}})-[0-9a-f]+\.tmp"
    )
    host, me = _host_tag(), os.getpid()
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match.group(1) != host:
            continue
        pid = int(match.group(2))
        if pid == me or _pid_alive(pid):
            continue
        stray = path.parent / name
        try:
            fd = os.open(stray, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.lstat(stray)):
                os.unlink(stray)
        except OSError:
            pass
        finally:
            os.close(fd)


FORMATS = ("fnn", "safetensors")


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(
            f"format must be 'fnn' (the native zip format) or 'safetensors', got "
            f"{format!r}."
        )


def save(
    path: str | os.PathLike,
    tree: PyTree,
    *,
    metadata: Mapping | None = None,
    format: str = "fnn",
) -> Path:
    """Write ``tree`` and ``metadata`` to the checkpoint file ``path``, atomically.

    Invariant: after ``save(path, t, metadata=m)``, ``load(path, like=t)`` equals
    ``t`` bit for bit (same treedef and leaf types) and ``read_metadata(path)``
    equals ``json.loads(json.dumps(m))``.

    The file is first written in full to a temporary file in the same folder,
    ``.<name>.<host>-<pid>-<random>.tmp`` (locked with ``flock`` while it is
    written, then flushed and ``fsync``-ed), then moved onto ``path`` with
    ``os.replace``, and the folder is ``fsync``-ed where the OS supports it. If
    anything fails, the temporary file is removed and a previous checkpoint at
    ``path`` is left as it was. A process killed mid-save cannot remove its
    temporary file: the next ``save`` to the same ``path`` on the same machine
    removes those whose process no longer exists (never a live writer's; POSIX
    only). Missing parent folders are created. ``path`` is used as given (no
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
      format: ``"fnn"`` (the zip format described above) or ``"safetensors"``:
        a safetensors file that any tool reads, tensors named by key path
        (``params.0.W``), this manifest in its ``__metadata__`` (see
        "Safetensors format" above; needs ``pip install "fnn[safetensors]"``).
        :func:`load` recognises either.

    Returns:
      The ``pathlib.Path`` written.

    Raises:
      ImportError: ``format="safetensors"`` without the safetensors package.
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
    _check_format(format)
    if format == "safetensors":
        from . import _safetensors

        return _safetensors.save(path, tree, metadata_json)

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

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_provenance(),
        "structure": str(treedef),
        "leaves": records,
        "metadata": metadata_json,
    }

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for record, array in zip(records, arrays, strict=True):
                big = array.nbytes > (1 << 30)
                with zf.open(record["entry"], "w", force_zip64=big) as entry:
                    writer = _HashingWriter(entry)
                    np.save(writer, array, allow_pickle=False)
                record["sha256"] = writer.sha256.hexdigest()
            zf.writestr(_MANIFEST, json.dumps(manifest, indent=1))

    return _write_atomically(path, write)


def _provenance() -> dict:
    """The manifest's versions and creation time, shared by both containers."""
    from . import __version__ as fnn_version

    return {
        "fnn_version": fnn_version,
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
    }


def _write_atomically(path: Path, write: Any) -> Path:
    """Run ``write(f)`` on a fresh temporary file beside ``path``, then move it
    onto ``path``: the file at ``path`` is the old one or the new one, whole.

    The temporary file (``.<name>.<host>-<pid>-<random>.tmp``) is locked with
    ``flock`` while it is written, flushed and ``fsync``-ed, moved with
    ``os.replace``, and the folder is ``fsync``-ed; on any failure it is
    removed. Temporary files of dead writers to the same ``path`` are removed
    first (:func:`_remove_dead_temps`). Missing parent folders are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(path)
    tmp = path.with_name(_temp_name(path.name))
    # os.open with mode 0o666 lets the umask decide the permissions, as for a
    # plain open(); O_EXCL guarantees the temporary name is ours.
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
    )
    try:
        if fcntl is not None:  # held until the file is closed, or the process dies
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with os.fdopen(fd, "wb") as f:
            write(f)
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


_NOT_SAVED = (
    "The file was not written by fnn.checkpoint.save or was altered since; "
    "restore it from a backup or write it again with save."
)
_MAX_NPY_HEADER = 1 << 16  # bytes: NPY magic, header length and header dict
_CHUNK = 1 << 24  # bytes read from an entry at a time
_KINDS = ("jax", "numpy", "key", *_PY_TYPES)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_IMPL = re.compile(r"[a-z0-9_]{1,64}")


class _EntryReader:
    """Reads at most ``limit`` bytes of one zip entry, hashing what it reads."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw = raw
        self.left = limit
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.left
        data = self.raw.read(min(n, self.left, _CHUNK))
        self.left -= len(data)
        self.sha256.update(data)
        return data


class _Archive:
    """An open checkpoint zip whose entries are checked before they are read.

    Every entry read must be stored uncompressed (``ZIP_STORED``), unencrypted,
    with a declared size that fits in the file; no entry name may repeat.
    """

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}.")
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path, "r")
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is not a readable checkpoint (not a zip archive, or "
                f"truncated): {err}. {_NOT_SAVED}"
            ) from err
        try:
            self.size = os.fstat(self.zf.fp.fileno()).st_size
            self.infos: dict[str, zipfile.ZipInfo] = {}
            for info in self.zf.infolist():
                if info.filename in self.infos:
                    raise CheckpointError(
                        f"{path}: the archive holds two entries named "
                        f"{info.filename}. {_NOT_SAVED}"
                    )
                self.infos[info.filename] = info
        except BaseException:
            self.zf.close()
            raise

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.zf.close()

    def info(self, entry: str, what: str = "") -> zipfile.ZipInfo:
        """The zip record of ``entry`` (of ``what``, e.g. ``"leaf ['W']"``, for
        messages), checked: present, stored, sized within the file."""
        info = self.infos.get(entry)
        if what:
            entry = f"{entry} of {what}"
        if info is None:
            raise CheckpointError(
                f"{self.path}: entry {entry} is missing from the archive. {_NOT_SAVED}"
            )
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise CheckpointError(
                f"{self.path}: entry {entry} is compressed or encrypted "
                f"(zip method {info.compress_type}); fnn checkpoints store every "
                f"entry uncompressed, so it is refused unread. {_NOT_SAVED}"
            )
        if (
            info.file_size != info.compress_size
            or info.header_offset + info.compress_size > self.size
        ):
            raise CheckpointError(
                f"{self.path}: entry {entry} declares {info.file_size} "
                f"bytes ({info.compress_size} stored), which the {self.size}-byte "
                f"file cannot hold; it is truncated or altered. {_NOT_SAVED}"
            )
        return info


def _read_manifest(archive: _Archive) -> dict:
    path = archive.path
    if _MANIFEST not in archive.infos:
        raise CheckpointError(
            f"{path} has no {_MANIFEST}: not an fnn checkpoint. {_NOT_SAVED}"
        )
    info = archive.info(_MANIFEST)
    try:
        with archive.zf.open(info) as raw:
            reader = _EntryReader(raw, info.file_size)
            parts = []
            while chunk := reader.read():
                parts.append(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot read {_MANIFEST}: {err}. {_NOT_SAVED}"
        ) from err
    if reader.left:
        raise CheckpointError(
            f"{path}: {_MANIFEST} is truncated ({reader.left} of its "
            f"{info.file_size} bytes missing). {_NOT_SAVED}"
        )
    try:
        manifest = json.loads(b"".join(parts).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(
            f"{path}: {_MANIFEST} is not valid JSON: {err}. {_NOT_SAVED}"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: {_MANIFEST} does not describe an fnn checkpoint "
            f"(expected format {FORMAT!r}). {_NOT_SAVED}"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unknown checkpoint format version {version!r}; this fnn reads "
            f"version {FORMAT_VERSION}. Load it with the fnn version that wrote it "
            f"(its manifest names it) and save it again with this one."
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
        raise CheckpointError(
            f"{path}: {_MANIFEST} has a malformed 'leaves' list (each leaf needs "
            f"{', '.join(needed)}). {_NOT_SAVED}"
        )
    if not isinstance(manifest.get("metadata"), dict):
        raise CheckpointError(
            f"{path}: {_MANIFEST} has no 'metadata' object. {_NOT_SAVED}"
        )
    paths: set[str] = set()
    entries: set[str] = set()
    for i, record in enumerate(leaves):
        _check_record(path, i, record)
        where, entry = record["path"], record["entry"]
        if where in paths:
            raise CheckpointError(
                f"{path}: {_MANIFEST} lists leaf {where} twice. {_NOT_SAVED}"
            )
        if entry in entries:
            raise CheckpointError(
                f"{path}: {_MANIFEST} gives entry {entry} to two leaves (the second "
                f"is {where}). {_NOT_SAVED}"
            )
        paths.add(where)
        entries.add(entry)
    return manifest


def _is_shape(shape: Any) -> bool:
    return (
        isinstance(shape, list)
        and len(shape) <= 64
        and all(type(n) is int and n >= 0 for n in shape)
    )


def _stored_dtype(name: str) -> np.dtype | None:
    """The numpy dtype an NPY entry may hold, from its name; ``None`` if not one
    (unknown, object, structured, ``ml_dtypes`` or not spelled as numpy names
    it)."""
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError):
        return None
    if dtype.name != name or not _native_npy(dtype) or dtype.hasobject:
        return None
    return dtype


@functools.lru_cache(maxsize=16)
def _key_layout(impl: str) -> tuple[str, list[int]] | None:
    """``(dtype name, key data shape)`` of one key of PRNG implementation
    ``impl`` (``("key<fry>", [2])`` for threefry2x32); ``None`` if unknown."""
    try:
        key = jax.eval_shape(lambda: jax.random.key(0, impl=impl))
        data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
    except (ValueError, TypeError, KeyError):
        return None
    return str(key.dtype), list(data.shape)


def _check_record(path: Path, i: int, record: dict) -> None:
    """Raise unless ``record`` is one :func:`save` could have written: known kind,
    well-formed shapes and checksum, and a (dtype, stored dtype) pair that is a
    legitimate storage of the leaf (the same dtype; an ``ml_dtypes`` type as the
    unsigned integer of its width; a typed key as its ``uint32`` key data)."""
    where = record["path"]
    if not isinstance(where, str):
        raise CheckpointError(
            f"{path}: {_MANIFEST}: leaf number {i} has a 'path' that is not a "
            f"string ({where!r}). {_NOT_SAVED}"
        )

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: {_MANIFEST}: leaf {where}: {problem}. {_NOT_SAVED}"
        )

    entry, kind = record["entry"], record["kind"]
    if not isinstance(entry, str) or entry == _MANIFEST:
        raise bad(f"'entry' {entry!r} is not the name of an array entry")
    if kind not in _KINDS:
        raise bad(f"unknown 'kind' {kind!r} (expected one of {', '.join(_KINDS)})")
    if not isinstance(record["sha256"], str) or not _SHA256.fullmatch(record["sha256"]):
        raise bad(f"'sha256' {record['sha256']!r} is not a hex SHA-256 digest")
    shape, stored_shape = record["shape"], record["stored_shape"]
    for name, value in (("shape", shape), ("stored_shape", stored_shape)):
        if not _is_shape(value):
            raise bad(f"{name!r} {value!r} is not a list of sizes")
    dtype, stored = record["dtype"], record["stored_dtype"]
    if not isinstance(dtype, str) or not isinstance(stored, str):
        raise bad(f"dtypes {dtype!r} and {stored!r} are not dtype names")
    if _stored_dtype(stored) is None:
        raise bad(f"stored_dtype {stored!r} is not a numpy dtype an NPY entry may hold")
    pair = f"dtype {dtype} stored as {stored}"
    if kind == "key":
        impl = record.get("key_impl")
        layout = (
            _key_layout(impl)
            if isinstance(impl, str) and _KEY_IMPL.fullmatch(impl)
            else None
        )
        if layout is None:
            raise bad(f"unknown PRNG key implementation {impl!r}")
        key_dtype, key_shape = layout
        if dtype != key_dtype or stored != "uint32":
            raise bad(
                f"a {impl} key is {key_dtype} stored as uint32, the manifest says "
                f"{pair}"
            )
        if stored_shape != shape + key_shape:
            raise bad(
                f"a {impl} key array of shape {shape} is stored as uint32 key data "
                f"of shape {shape + key_shape}, the manifest says {stored_shape}"
            )
        return
    if kind in _PY_TYPES:
        want = np.dtype(_PY_DTYPES[kind]).name
        if dtype != want or stored != want:
            raise bad(f"a Python {kind} is stored as {want}, the manifest says {pair}")
        if shape != [] or stored_shape != []:
            raise bad(
                f"a Python {kind} has shape [], the manifest says shape {shape} "
                f"stored as {stored_shape}"
            )
        return
    if dtype != stored:
        width = np.dtype(_dtype_from_name(dtype)).itemsize if dtype in _ML_DTYPES else 0
        if not width or stored != f"uint{8 * width}":
            raise bad(
                f"{pair}: only an ml_dtypes type stored as the unsigned integer of "
                "its width (bfloat16 as uint16, float8_* and int4 as uint8) is "
                "reinterpreted"
            )
    if stored_shape != shape:
        raise bad(f"shape {shape} stored as {stored_shape}: the two must be equal")


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` saved with the checkpoint at ``path``, without its arrays.

    Args:
      path: a checkpoint file written by :func:`save`.

    Returns:
      The metadata dict, as ``json.loads`` gives it (``{}`` if none was saved).

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: the file is not a readable checkpoint.
    """
    path = Path(path)
    if _is_safetensors(path):
        from . import _safetensors

        return _safetensors.read_metadata(path)
    with _Archive(path) as archive:
        return _read_manifest(archive)["metadata"]


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` holds a safetensors file (else it is read as a zip)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    if path.is_dir():
        return False
    from . import _safetensors

    return _safetensors.is_safetensors(path)


def _read_npy_header(reader: _EntryReader) -> tuple[np.dtype, tuple, bool]:
    """``(dtype, shape, fortran_order)`` from an NPY header (versions 1.0, 2.0)."""
    version = np.lib.format.read_magic(reader)
    if version == (1, 0):
        read_header = np.lib.format.read_array_header_1_0
    elif version == (2, 0):
        read_header = np.lib.format.read_array_header_2_0
    else:
        raise ValueError(f"NPY format version {version}; fnn writes 1.0 or 2.0")
    shape, fortran_order, dtype = read_header(reader, max_header_size=_MAX_NPY_HEADER)
    return dtype, shape, fortran_order


def _read_array(archive: _Archive, record: dict) -> np.ndarray:
    """The stored NPY array of one leaf, checked against its record and checksum.

    The entry's declared size is checked against the manifest before anything
    is read, the NPY header against the manifest before the data is read, and
    the data is read into an array of the promised size in bounded chunks.
    """
    path, where, entry = archive.path, record["path"], record["entry"]
    what = f"leaf {where}"
    dtype = np.dtype(record["stored_dtype"])  # checked by _check_record
    shape = tuple(record["stored_shape"])
    nbytes = math.prod(shape) * dtype.itemsize
    promised = _describe(shape, dtype.name)
    info = archive.info(entry, what)
    if not nbytes < info.file_size <= nbytes + _MAX_NPY_HEADER:
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} holds {info.file_size} bytes; "
            f"the manifest's {promised} needs {nbytes} bytes of data after an NPY "
            f"header of at most {_MAX_NPY_HEADER} bytes. {_NOT_SAVED}"
        )
    try:
        with archive.zf.open(info) as raw:
            reader = _EntryReader(raw, info.file_size)
            try:
                found_dtype, found_shape, fortran_order = _read_npy_header(reader)
            except (ValueError, TypeError, SyntaxError) as err:
                raise CheckpointError(
                    f"{path}: entry {entry} of leaf {where} is not a valid NPY "
                    f"array: {err}. {_NOT_SAVED}"
                ) from err
            if found_dtype.hasobject:
                raise CheckpointError(
                    f"{path}: entry {entry} of leaf {where} is not a valid NPY array "
                    f"for a checkpoint: its dtype {found_dtype} holds Python objects "
                    f"(it would need pickle, which fnn never runs). {_NOT_SAVED}"
                )
            if found_dtype != dtype or tuple(found_shape) != shape or fortran_order:
                order = ", Fortran order" if fortran_order else ""
                raise CheckpointError(
                    f"{path}: entry {entry} of leaf {where} holds "
                    f"{_describe(found_shape, str(found_dtype))}{order}, the manifest "
                    f"says {promised}. {_NOT_SAVED}"
                )
            header = info.file_size - reader.left
            if header + nbytes != info.file_size:
                raise CheckpointError(
                    f"{path}: entry {entry} of leaf {where} holds {info.file_size} "
                    f"bytes, its {header}-byte NPY header and {promised} data make "
                    f"{header + nbytes}. {_NOT_SAVED}"
                )
            array = np.empty(shape, dtype)
            buffer = array.reshape(-1).view(np.uint8)
            done = 0
            while done < nbytes:
                chunk = reader.read(nbytes - done)
                if not chunk:
                    raise CheckpointError(
                        f"{path}: entry {entry} of leaf {where} is truncated "
                        f"({nbytes - done} of its {nbytes} data bytes missing). "
                        f"{_NOT_SAVED}"
                    )
                buffer[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path}: entry {entry} of leaf {where} is corrupted: {err}. {_NOT_SAVED}"
        ) from err
    digest = reader.sha256.hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(
            f"{path}: checksum mismatch in entry {entry} of leaf {where} "
            f"(sha256 expected {record['sha256']}, found {digest}); the file is "
            f"corrupted. {_NOT_SAVED}"
        )
    return array


def _restore(path: Path, record: dict, stored: np.ndarray) -> Any:
    """The leaf as it was saved, from its stored array (no template), checked to
    have the manifest's shape and dtype."""
    kind, where = record["kind"], record["path"]
    try:
        if kind == "key":
            value = jax.random.wrap_key_data(stored, impl=record["key_impl"])
        elif kind in _PY_TYPES:
            value = _PY_TYPES[kind](stored.item())
        else:
            dtype = _dtype_from_name(record["dtype"])
            value = stored.view(dtype) if stored.dtype != dtype else stored
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path}: leaf {where} cannot be restored as {record['dtype']}: {err}. "
            f"{_NOT_SAVED}"
        ) from err
    _, shape, dtype = _expected(value)
    if shape != record["shape"] or dtype != record["dtype"]:
        raise CheckpointError(
            f"{path}: leaf {where} restores as {_describe(shape, dtype)}, the "
            f"manifest says {_describe(record['shape'], record['dtype'])}. "
            f"{_NOT_SAVED}"
        )
    return value


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


_FIT_HINT = (
    "Build `like` for the model and optimizer the checkpoint was saved with "
    "(read_metadata(path) gives the saved configuration), or load without `like` "
    "to see what the file holds."
)


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
            raise CheckpointError(
                f"checkpoint {path}: leaf {where} is missing (the template expects "
                f"{_shown(kind, shape, dtype)}){hint}. {_FIT_HINT}"
            )
        found_kind = record["kind"]
        if found_kind not in ("key", *_PY_TYPES):
            found_kind = "array"
        found = _shown(found_kind, record["shape"], record["dtype"])
        expected = _shown(kind, shape, dtype)
        if found_kind != kind or record["dtype"] != dtype:
            raise CheckpointError(
                f"checkpoint {path}: leaf {where} has the wrong type: expected "
                f"{expected}, found {found}. {_FIT_HINT}"
            )
        if list(record["shape"]) != shape:
            raise CheckpointError(
                f"checkpoint {path}: leaf {where} has the wrong shape: expected "
                f"{expected}, found {found}. {_FIT_HINT}"
            )
        matched.append(record)
    if extra:
        found = by_path[extra[0]]
        raise CheckpointError(
            f"checkpoint {path}: leaf {extra[0]} "
            f"({_shown(found['kind'], found['shape'], found['dtype'])}) is in the file "
            f"but not in the template (extra leaf). {_FIT_HINT}"
        )
    return matched


def _as_template_type(path: Path, record: dict, like_leaf: Any, value: Any) -> Any:
    """``value`` (restored as saved) converted to the container type of
    ``like_leaf`` (jax array, numpy array or scalar, Python scalar, typed key),
    checked to have the template leaf's shape and dtype."""
    where = record["path"]
    if record["kind"] == "key" or _py_kind(like_leaf) is not None:
        out = value
    elif isinstance(like_leaf, np.ndarray):
        out = np.asarray(value)
    elif isinstance(like_leaf, np.generic):
        out = np.asarray(value)[()]
    else:
        out = jax.device_put(value)
        if out.dtype != value.dtype:
            raise CheckpointError(
                f"checkpoint {path}: leaf {where} is {value.dtype}, which jax "
                f"turns into {out.dtype} here; load it inside "
                "`with jax.enable_x64(True):`."
            )
    kind, shape, dtype = _expected(like_leaf)
    found_kind, found_shape, found_dtype = _expected(out)
    if (found_kind, found_shape, found_dtype) != (kind, shape, dtype):
        raise CheckpointError(
            f"checkpoint {path}: leaf {where} restores as "
            f"{_shown(found_kind, found_shape, found_dtype)}, the template has "
            f"{_shown(kind, shape, dtype)}. {_NOT_SAVED}"
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

    Either format is read (recognised by the file's first bytes). A safetensors
    file written by another tool (no fnn manifest) gives ``{tensor name: numpy
    array}`` without a template, e.g. PyTorch weights for
    :func:`fnn.interop.from_torch_state_dict`; with one, its tensors are matched
    to the template's leaves by name (``params.0.W``).

    Args:
      path: a checkpoint file written by :func:`save` (either format), or a
        safetensors file.
      like: optional template pytree (e.g. freshly initialised parameters and
        optimizer state, or their ``jax.eval_shape``).

    Returns:
      The restored tree (with ``like``) or the flat dict (without).

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: a ``ValueError``: the file is not a readable checkpoint
        (see the module docstring), or it does not fit ``like`` (names the
        first missing, extra, mis-shaped or mis-typed leaf with expected and
        found ``dtype[shape]``).

    The format is described in the module docstring.
    """
    path = Path(path)
    if _is_safetensors(path):
        from . import _safetensors

        return _safetensors.load(path, like)
    with _Archive(path) as archive:
        records = _read_manifest(archive)["leaves"]
        if like is None:
            return {
                r["path"]: _restore(path, r, _read_array(archive, r)) for r in records
            }
        matched = _check_against(path, like, records)
        flat, treedef = jax.tree_util.tree_flatten_with_path(like)
        leaves = []
        for (_, like_leaf), record in zip(flat, matched, strict=True):
            value = _restore(path, record, _read_array(archive, record))
            leaves.append(_as_template_type(path, record, like_leaf, value))
    return jax.tree.unflatten(treedef, leaves)


# --------------------------------------------------------------------------- #
# Models: the architecture as data, the parameters as leaves
# --------------------------------------------------------------------------- #

MODEL_KEY = "fnn_model"
_MODEL_DTYPES = ("bfloat16", "float16", "float32", "float64")


def _model_in_shape(model: Any, in_shape: Any) -> list[int]:
    if in_shape is None:
        in_shape = model.in_shape
    if in_shape is None:
        raise ValueError(
            f"save_model: {model.name} does not fix its input shape; pass in_shape, "
            "the per-example shape without the batch axis (e.g. (64,) or "
            "(28, 28, 1))."
        )
    if not isinstance(in_shape, list | tuple) or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1
        for n in in_shape
    ):
        raise ValueError(
            "save_model: in_shape must be a tuple of positive ints (the per-example "
            f"shape without the batch axis, e.g. (64,)), got {in_shape!r}."
        )
    return [int(n) for n in in_shape]


def _model_dtype(tree: PyTree) -> str:
    """The floating dtype of a model's parameters and state (float32 if none)."""
    found = {
        np.dtype(leaf.dtype).name
        for leaf in jax.tree.leaves(tree)
        if hasattr(leaf, "dtype")
        and not _is_key_dtype(leaf.dtype)
        and jax.dtypes.issubdtype(leaf.dtype, np.floating)
    }
    if len(found) > 1:
        raise ValueError(
            f"save_model: the parameters mix floating dtypes {sorted(found)}; a model "
            "is initialised in one dtype. Cast them to one (or save the tree with "
            "fnn.checkpoint.save)."
        )
    dtype = found.pop() if found else "float32"
    if dtype not in _MODEL_DTYPES:
        raise ValueError(
            f"save_model: parameters of dtype {dtype}; a model's dtype is one of "
            f"{', '.join(_MODEL_DTYPES)}."
        )
    return dtype


def _model_template(model: Any, in_shape: list[int], dtype: str) -> dict:
    """``{"params": ..., "state": ...}`` of ``model.init`` as ShapeDtypeStructs
    (``jax.eval_shape``: nothing is drawn or allocated)."""
    np_dtype = _dtype_from_name(dtype)

    def init(key):
        params, state, _ = model.init(key, tuple(in_shape), np_dtype)
        return {"params": params, "state": state}

    return jax.eval_shape(init, jax.random.key(0))


def _first_misfit(template: PyTree, tree: PyTree) -> str | None:
    """A description of the first leaf where ``tree`` does not fit ``template``
    (by key path, shape and dtype), or ``None`` when it fits."""
    want = dict(leaves_with_paths(template))
    have = dict(leaves_with_paths(tree))
    for where, leaf in want.items():
        expected = _shown(*_expected(leaf))
        if where not in have:
            return f"leaf {where} is missing (the model expects {expected})"
        try:
            found = _shown(*_expected(have[where]))
        except TypeError:
            found = type(have[where]).__name__
        if found != expected:
            return f"leaf {where} is {found}, the model expects {expected}"
    for where in have:
        if where not in want:
            return f"leaf {where} is not a parameter or state of the model"
    return None


def save_model(
    path: str | os.PathLike,
    model: Any,
    params: PyTree,
    state: PyTree = None,
    *,
    in_shape: Any = None,
    metadata: Mapping | None = None,
    format: str = "fnn",
) -> Path:
    """Write a model (its architecture as data), its parameters and state.

    Invariant: ``load_model(save_model(path, m, p, s, in_shape=n))`` gives a
    model that builds the same blocks as ``m`` (``fnn.nn.from_spec`` of
    ``fnn.nn.to_spec(m)``), and ``p``, ``s`` bit for bit, so
    ``fnn.nn.forward`` gives identical predictions.

    The file is an ordinary checkpoint (:func:`save`) of the tree
    ``{"params": params, "state": state}``; its metadata holds the user's
    ``metadata`` and, under the reserved key ``"fnn_model"``,
    ``{"spec": fnn.nn.to_spec(model), "in_shape": [...], "dtype": name,
    "fixes_in_shape": bool}``. The parameters and state are checked against
    ``model.init(key, in_shape, dtype)`` (run abstractly with ``jax.eval_shape``)
    before anything is written.

    Args:
      path: the file to write.
      model: an ``fnn.nn`` block (e.g. a ``Sequential``) built from registered
        constructors with plain-data arguments (see :func:`fnn.nn.to_spec`).
      params: its parameters, e.g. from ``fnn.nn.init`` or training.
      state: its state (BatchNorm running statistics); ``None`` for a model
        without state.
      in_shape: the per-example input shape, e.g. ``(64,)``; optional when the
        model fixes it (:func:`fnn.mlp`).
      metadata: a JSON-serialisable mapping with string keys other than
        ``"fnn_model"``.
      format: ``"fnn"`` or ``"safetensors"`` (as :func:`save`; the tensors are
        then ``params.<path>`` and ``state.<path>``, e.g. ``params.0.W``, and
        the model description is in the ``__metadata__``).

    Returns:
      The ``pathlib.Path`` written.

    Raises:
      ValueError: a model that cannot be described as data, a missing or bad
        ``in_shape``, parameters or state that do not fit the model (the leaf
        is named), ``metadata`` using the reserved key.
    """
    from . import nn

    _check_format(format)
    if not isinstance(model, nn.Block):
        raise ValueError(
            f"save_model: model must be an fnn.nn block (e.g. fnn.nn.Sequential), "
            f"got {type(model).__name__}."
        )
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValueError(
            f"metadata must be a mapping (a dict), got {type(metadata).__name__}."
        )
    if MODEL_KEY in metadata:
        raise ValueError(
            f"save_model: metadata key {MODEL_KEY!r} is reserved for the model "
            "description; rename it."
        )
    spec = nn.to_spec(model)
    shape = _model_in_shape(model, in_shape)
    tree = {"params": params, "state": state}
    dtype = _model_dtype(tree)
    template = _model_template(model, shape, dtype)
    if state is None:
        if jax.tree.leaves(template["state"]):
            raise ValueError(
                f"save_model: {model.name} has state (running statistics); pass "
                "state=..., the state returned by fnn.nn.init or training."
            )
        tree["state"] = template["state"]  # only empty containers: no leaves
    misfit = _first_misfit(template, tree)
    if misfit is not None:
        raise ValueError(
            f"save_model: the parameters do not fit {model.name} for in_shape "
            f"{tuple(shape)}: {misfit}. Pass the params and state of this model "
            "(and its in_shape)."
        )
    description = {
        "spec": spec,
        "in_shape": shape,
        "dtype": dtype,
        "fixes_in_shape": model.in_shape is not None,
    }
    return save(
        path, tree, metadata={**metadata, MODEL_KEY: description}, format=format
    )


def load_model(
    path: str | os.PathLike, *, like: PyTree = None
) -> tuple[Any, PyTree, PyTree]:
    """Read a model written by :func:`save_model`: ``(model, params, state)``.

    The model is rebuilt with :func:`fnn.nn.from_spec`, which only looks block
    names up in fnn's registry and calls the registered constructors with the
    stored plain-data arguments: no stored code is ever executed (a user's own
    block must be registered with :func:`fnn.nn.register` before loading). The
    template for the parameters and state is ``model.init`` for the stored
    ``in_shape`` and dtype, run with ``jax.eval_shape`` (nothing is drawn or
    allocated), so every leaf is checked as by :func:`load` with ``like``.

    Args:
      path: a file written by :func:`save_model`.
      like: optional ``(params, state)`` template to use instead (e.g. to get
        numpy leaves); its shapes and dtypes must match the file's.

    Returns:
      ``(model, params, state)``: the model block, its parameters and state
      (``jax.Array`` leaves with the template built from the model).

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: not a readable checkpoint, not written by
        :func:`save_model`, an unknown block name or a malformed model
        description, or parameters that do not fit the model.
    """
    from . import nn

    path = Path(path)
    described = read_metadata(path).get(MODEL_KEY)

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: the model description ({MODEL_KEY!r} in its metadata) {problem}"
        )

    if not isinstance(described, dict):
        raise bad(
            "is missing: the file was not written by fnn.checkpoint.save_model. "
            "Load its arrays with fnn.checkpoint.load instead."
        )
    spec, in_shape = described.get("spec"), described.get("in_shape")
    dtype = described.get("dtype")
    if not _is_shape(in_shape) or not all(in_shape):
        raise bad(f"has a bad 'in_shape' {in_shape!r}. {_NOT_SAVED}")
    if dtype not in _MODEL_DTYPES:
        raise bad(f"has an unknown 'dtype' {dtype!r}. {_NOT_SAVED}")
    try:
        model = nn.from_spec(spec)
    except RecursionError as err:
        raise bad(f"is nested too deeply to rebuild. {_NOT_SAVED}") from err
    except (ValueError, TypeError, KeyError) as err:
        raise bad(
            f"cannot be rebuilt: {err} If the model uses your own blocks, register "
            "their constructors with @fnn.nn.register before loading."
        ) from err
    if described.get("fixes_in_shape") is True:
        model = model._replace(in_shape=tuple(in_shape))
    if like is None:
        if jax.dtypes.canonicalize_dtype(_dtype_from_name(dtype)) != np.dtype(
            _dtype_from_name(dtype)
        ):
            raise bad(
                f"says the parameters are {dtype}, which jax turns into 32-bit "
                "here; load it inside `with jax.enable_x64(True):`."
            )
        try:
            template = _model_template(model, in_shape, dtype)
        except (ValueError, TypeError) as err:
            raise bad(
                f"gives a model that cannot be initialised for in_shape "
                f"{tuple(in_shape)}: {err} {_NOT_SAVED}"
            ) from err
    else:
        if not isinstance(like, tuple | list) or len(like) != 2:
            raise ValueError(
                "load_model: like must be a (params, state) pair, got "
                f"{type(like).__name__}."
            )
        template = {"params": like[0], "state": like[1]}
    tree = load(path, like=template)
    return model, tree["params"], tree["state"]
