"""Training on data that stays on the host: sources and a double-buffered loop.

:func:`fnn.fit` puts the whole training set on the device and runs one compiled
``lax.scan`` per epoch. :func:`fit_stream` trains on a *source* that stays on the
host (a memory-mapped ``.npy`` file, an IDX file pair, a folder of ``.npy``
shards, an iterator of batches), so the data may be larger than device and host
memory::

    source = fnn.stream.from_npy("x.npy", "y.npy")        # np.load(mmap_mode="r")
    result = fnn.stream.fit_stream(params, fnn.optim.adam(1e-3), source,
                                   key=key, epochs=5, batch_size=128)
    # or fnn.fit(params, optimizer, source, None, key=key, ...)

The source protocol (:class:`Source`): ``len(source)`` examples and
``source.batch(indices) -> (x, y)``, numpy arrays with one row per index, in
the order of ``indices``. Anything with these two members is a source.

Design, invariants:
  * the order is fit's: epoch ``e`` draws
    ``fnn.data.epoch_batches(fold_in(key_shuffle, e), n, batch_size)`` with
    ``key_shuffle, key_dropout = jax.random.split(key)``, and step ``s`` uses the
    dropout key ``fold_in(fold_in(key_dropout, e), s)``; the step itself is
    fit's (``fnn._fit._train_step``). So streaming gives the parameters
    in-memory ``fit`` gives on the same data and key (bit for bit on CPU);
  * ``steps_per_call`` (K) steps run per compiled call: ``lax.scan`` over a chunk
    of K batches, ``(K, batch_size, ...)``; the last chunk of an epoch may be
    shorter (a second compilation, once);
  * double buffering: while chunk c runs on the device, a background thread
    gathers chunk c+1 on the host (``source.batch``), checks it
    (:func:`fnn.data.check_examples`, the message names the source's row) and
    transfers it (``jax.device_put``, sharded along the batch axis with a
    ``mesh``); at most two chunks are in memory at a time;
  * the loop's position is ``(epoch, step)``: :class:`StreamLoop` holds it with
    the loop state; saved after any chunk and passed back as ``resume=``, the run
    continues exactly as the uninterrupted one;
  * an iterator of ``(x, y)`` batches (:class:`IterableSource`) has no random
    access: its batches are used in the order they come, nothing is shuffled
    (the key only drives dropout), and a short batch is padded and masked.

Progress and metrics come from the host loop, once per chunk, from the per-step
values the chunk returns (nothing in the compiled loop waits for the host):
a tqdm bar (examples/s and ETA; the one-line epoch report when tqdm is not
installed), per-step loss, gradient norm and learning rate to a JSONL file every
``log_every`` steps, and to TensorBoard when ``tensorboardX`` or
``torch.utils.tensorboard`` is installed. :func:`every_n_steps` calls a host
function from inside a compiled loop, throttled, for those who want it there.

References:
  [Deep Learning 2020, "SGD algorithm"] (an epoch is one pass over the examples
  in a random order, cut into mini-batches); Kingma & Ba, "Adam" (2015),
  section 7.2 (parameter averaging).
"""

import concurrent.futures
import functools
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _fit
from . import optim as _optim
from .data import check_examples, epoch_batches, num_batches
from .datasets._idx import IDX_DTYPES, MNIST_FILES

__all__ = [
    "ArraySource",
    "IterableSource",
    "ShardSource",
    "Source",
    "StreamLoop",
    "every_n_steps",
    "fit_stream",
    "from_idx",
    "from_npy",
    "from_path",
    "is_source",
    "map_batches",
    "subset",
    "wrap_optimizer",
]


# --------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """Data that stays on the host, read a batch at a time.

    ``len(source)`` is the number of examples ``n``; ``source.batch(indices)``
    returns ``(x, y)``: numpy arrays ``(len(indices), ...)`` holding examples
    ``indices`` (int, in ``[0, n)``, possibly repeated) in that order. It is
    called from a background thread, one call at a time.
    """

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _rows_of(A, name: str) -> int:
    if np.ndim(A) == 0:
        raise ValueError(f"{name} is a scalar; pass one row per example (batch first).")
    return int(np.shape(A)[0])


class ArraySource:
    """A source over numpy arrays or memory maps (``np.load(path, mmap_mode="r")``).

    ``batch`` gathers the rows with numpy fancy indexing: from a memmap only
    those rows are read (in increasing order, for locality), never the file.

    Args:
      X: ``(n, ...)`` inputs; y: ``(n, ...)`` targets.
      transform: optional ``(x, y) -> (x, y)`` applied to each gathered batch on
        the host (e.g. ``uint8`` pixels to float32 in ``[0, 1]``).
    """

    def __init__(self, X, y, transform: Callable | None = None):
        X = X if isinstance(X, np.ndarray) else np.asarray(X)
        y = y if isinstance(y, np.ndarray) else np.asarray(y)
        if _rows_of(X, "X") != _rows_of(y, "y"):
            raise ValueError(
                f"X has {X.shape[0]} rows but y has {y.shape[0]} (X.shape={X.shape}, "
                f"y.shape={y.shape}); pass one target per example, batch first."
            )
        self.X, self.y, self.transform = X, y, transform

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def batch(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        if not isinstance(self.X, np.memmap):  # in memory: no locality to gain
            x, y = self.X[indices], self.y[indices]
            return (x, y) if self.transform is None else self.transform(x, y)
        order = np.argsort(indices, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        sorted_idx = indices[order]
        x = np.asarray(self.X[sorted_idx])[back]
        y = np.asarray(self.y[sorted_idx])[back]
        return (x, y) if self.transform is None else self.transform(x, y)


def from_npy(x_path, y_path, transform: Callable | None = None) -> ArraySource:
    """A source over two ``.npy`` files, memory-mapped (``mmap_mode="r"``).

    Args:
      x_path, y_path: ``.npy`` files of ``(n, ...)`` inputs and targets.
      transform: as for :class:`ArraySource`.
    """
    return ArraySource(
        np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r"), transform
    )


def _idx_memmap(path: Path) -> np.ndarray:
    """An uncompressed IDX file as a read-only memmap (header: see
    :mod:`fnn.datasets`' IDX reader)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            raise ValueError(
                f"{path} is gzip-compressed and cannot be memory-mapped: "
                f"decompress it first (gunzip -k {path})."
            )
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES:
            raise ValueError(f"{path} is not an IDX file (magic bytes {head!r}).")
        ndim = head[3]
        shape = tuple(int.from_bytes(f.read(4), "big") for _ in range(ndim))
    return np.memmap(
        path, dtype=IDX_DTYPES[head[2]], mode="r", offset=4 + 4 * ndim, shape=shape
    )


def _scale_pixels(x, y):
    x = x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return x, y.astype(np.int32)


def from_idx(
    images, labels=None, transform: Callable | None = _scale_pixels
) -> ArraySource:
    """A source over an IDX pair (MNIST format), memory-mapped.

    Args:
      images: the images file, or a folder holding MNIST's
        ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (raw, not
        gzipped: a memmap needs the bytes as stored).
      labels: the labels file (``None`` with a folder).
      transform: applied to each batch; default: images flattened to
        ``(m, rows * cols)`` float32 in ``[0, 1]``, labels int32 (as
        :func:`fnn.datasets.load_mnist`).
    """
    images = Path(images)
    if labels is None:
        if not images.is_dir():
            raise ValueError(f"from_idx: pass labels=, or a folder; got {images}.")
        image_name, label_name = MNIST_FILES["train"]
        images, labels = images / image_name, images / label_name
        for p in (images, labels):
            if not p.is_file():
                raise FileNotFoundError(
                    f"{p} not found (raw IDX files are needed: gunzip them)."
                )
    return ArraySource(_idx_memmap(images), _idx_memmap(Path(labels)), transform)


class ShardSource:
    """A source over a folder of ``.npy`` shards, memory-mapped.

    The folder holds pairs ``x_<name>.npy`` and ``y_<name>.npy`` (e.g.
    ``x_00000.npy``, ``y_00000.npy``); the shards are concatenated in the sorted
    order of their names.

    Args:
      folder: the folder.
      transform: as for :class:`ArraySource`.
    """

    def __init__(self, folder, transform: Callable | None = None):
        folder = Path(folder)
        xs = sorted(folder.glob("x_*.npy"))
        if not xs:
            raise ValueError(f"{folder} holds no x_*.npy shards.")
        self.X, self.y = [], []
        for xp in xs:
            yp = folder / ("y_" + xp.name[2:])
            if not yp.is_file():
                raise ValueError(f"shard {xp.name} has no {yp.name} beside it.")
            X, y = np.load(xp, mmap_mode="r"), np.load(yp, mmap_mode="r")
            if X.shape[0] != y.shape[0]:
                raise ValueError(
                    f"shard {xp.name} holds {X.shape[0]} rows but {yp.name} "
                    f"{y.shape[0]}."
                )
            self.X.append(X)
            self.y.append(y)
        self.starts = np.cumsum([0] + [len(X) for X in self.X])
        self.transform = transform

    def __len__(self) -> int:
        return int(self.starts[-1])

    def batch(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        x = np.empty((indices.size, *self.X[0].shape[1:]), self.X[0].dtype)
        y = np.empty((indices.size, *self.y[0].shape[1:]), self.y[0].dtype)
        for k in np.unique(shard):
            at = np.nonzero(shard == k)[0]
            rows = indices[at] - self.starts[k]
            order = np.argsort(rows, kind="stable")
            x[at[order]] = self.X[k][rows[order]]
            y[at[order]] = self.y[k][rows[order]]
        return (x, y) if self.transform is None else self.transform(x, y)


class IterableSource:
    """Batches from an iterator of ``(x, y)`` numpy pairs: no random access.

    The batches are used in the order they come; nothing can be shuffled (the
    key still drives dropout). The first batch fixes the batch size; a shorter
    batch is padded with its own rows and masked out of the loss; a longer one
    is refused.

    Args:
      batches: a function ``epoch -> iterable of (x, y)`` (a fresh pass per
        epoch), or a single iterable (a list can be passed over again every
        epoch; a one-shot iterator or generator serves one epoch only).
      length: the number of examples per epoch, when known (for the progress
        bar's ETA), or ``None``.
    """

    def __init__(self, batches, length: int | None = None):
        self.batches, self.length = batches, length
        self._used = False
        self._head = None  # a one-shot iterator's first batch, once peeked

    def epoch(self, epoch: int) -> Iterator:
        if callable(self.batches):
            return iter(self.batches(epoch))
        if isinstance(self.batches, Iterator):
            if self._used:
                raise ValueError(
                    "this IterableSource wraps a one-shot iterator that served an "
                    "epoch already: pass a function epoch -> iterable of batches "
                    "for several epochs."
                )
            self._used = True
            if self._head is not None:
                head, self._head = self._head, None
                return itertools.chain([head], self.batches)
        return iter(self.batches)


def _peek(source: IterableSource, epoch: int):
    """The first batch of ``source`` (a one-shot iterator keeps it for its
    epoch)."""
    if callable(source.batches):
        it = iter(source.batches(epoch))
    elif isinstance(source.batches, Iterator):
        if source._used:
            source.epoch(epoch)  # raises: a one-shot iterator served its epoch
        if source._head is None:
            source._head = next(source.batches, None)
        if source._head is None:
            raise ValueError("the IterableSource's iterator is empty.")
        return source._head
    else:
        it = iter(source.batches)
    first = next(it, None)
    if first is None:
        raise ValueError("the IterableSource gives no batch.")
    return first


def from_path(path, transform: Callable | None = None):
    """The source a path names: an IDX folder (MNIST's raw file names), a folder
    holding ``x.npy`` and ``y.npy``, or a folder of ``x_*.npy``/``y_*.npy``
    shards. ``transform`` defaults to the IDX one for IDX folders.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"--data must be a folder, got {path}.")
    if (path / MNIST_FILES["train"][0]).is_file():
        return from_idx(path) if transform is None else from_idx(path, None, transform)
    if (path / "x.npy").is_file() and (path / "y.npy").is_file():
        return from_npy(path / "x.npy", path / "y.npy", transform)
    if any(path.glob("x_*.npy")):
        return ShardSource(path, transform)
    raise ValueError(
        f"{path} holds no training data: expected x.npy and y.npy, x_*.npy/y_*.npy "
        f"shards, or raw IDX files ({', '.join(MNIST_FILES['train'])})."
    )


class _Subset:
    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def batch(self, indices):
        return self.source.batch(self.indices[np.asarray(indices, dtype=np.int64)])


def subset(source: Source, indices) -> Source:
    """The examples ``indices`` of ``source`` (e.g. a training split), as a source:
    example ``i`` of the result is example ``indices[i]`` of ``source``."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or (
        indices.size and (indices.min() < 0 or indices.max() >= len(source))
    ):
        raise ValueError(
            f"subset: indices must be a 1-D array of rows in [0, {len(source)})."
        )
    return _Subset(source, indices)


class _Mapped:
    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, indices):
        return self.fn(*self.source.batch(indices))


def map_batches(source: Source, fn: Callable) -> Source:
    """``source`` with ``fn(x, y) -> (x, y)`` applied to every batch on the host
    (preprocessing: scaling, standardising with statistics of a sample, ...)."""
    return _Mapped(source, fn)


def wrap_optimizer(
    optimizer: _optim.Optimizer, accumulate: int = 1, ema: float | None = None
) -> _optim.Optimizer:
    """The optimizer :func:`fit_stream` trains with for ``accumulate`` and ``ema``:
    ``multi_steps(ema_params(optimizer, ema), accumulate)`` (each part only when
    asked for), so that the average moves once per applied update. Its ``init``
    gives the state a checkpoint of the run holds. The same arguments give the
    same object (cached), so that a second run reuses the compiled loop."""
    try:
        return _wrap_optimizer(optimizer, accumulate, ema)
    except TypeError:  # an unhashable argument: built afresh
        return _wrap_optimizer.__wrapped__(optimizer, accumulate, ema)


@functools.lru_cache(maxsize=64)
def _wrap_optimizer(optimizer, accumulate, ema):
    if ema is not None:
        optimizer = _optim.ema_params(optimizer, ema)
    if accumulate > 1:
        optimizer = _optim.multi_steps(optimizer, accumulate)
    return optimizer


def is_source(X) -> bool:
    """Whether ``X`` is streamed (a :class:`Source` or an :class:`IterableSource`)
    rather than an in-memory array."""
    if isinstance(X, IterableSource):
        return True
    return (
        not isinstance(X, np.ndarray | jax.Array)
        and callable(getattr(X, "batch", None))
        and hasattr(X, "__len__")
    )


# --------------------------------------------------------------------------------
# A host function called from inside the compiled loop, every n steps
# --------------------------------------------------------------------------------


def every_n_steps(n: int, fn: Callable, step, *args) -> None:
    """Call ``fn(step, *args)`` on the host when ``(step + 1) % n == 0``, from
    inside ``jit``/``scan``.

    A ``lax.cond`` around ``jax.debug.callback``: the steps in between cost one
    comparison, and the device does not wait for ``fn`` (its result is unused).
    Calls may reach the host out of step order; ``fn`` gets ``step`` to sort
    them.

    Args:
      n: call every ``n`` steps (``n >= 1``).
      fn: a host function of numpy values.
      step: the 0-based step number (a traced int scalar).
      *args: values passed to ``fn`` (traced arrays).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")

    def call(step, *args):
        jax.debug.callback(fn, step, *args)

    jax.lax.cond((step + 1) % n == 0, call, lambda *_: None, step, *args)


# --------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------


class StreamLoop(NamedTuple):
    """The streaming loop's whole state, position in the data included.

    Save it after any chunk (a pytree: :func:`fnn.checkpoint.save`) and pass it
    back as ``fit_stream(..., resume=loop)`` to continue exactly.

    Attributes:
      loop: the :class:`fnn.LoopState` (``loop.epoch`` is the epoch under way).
      step: the next step within ``loop.epoch`` (0: the epoch's start).
      loss_sum, grad_norm_sum: float sums of the applied steps' loss and gradient
        norm so far in the epoch; count: how many (the epoch's means).
    """

    loop: _fit.LoopState
    step: int
    loss_sum: float
    grad_norm_sum: float
    count: int


class _ChunkConfig(NamedTuple):
    epoch: _fit._EpochConfig
    with_lr: bool


def _learning_rate(opt_state):
    """The state's learning rate, or −1 (NaN on the host) when it holds none."""
    found = _fit._learning_rate(opt_state)
    return jnp.float32(-1) if found is None else jnp.asarray(found, jnp.float32)


@jax.jit(static_argnums=(0, 1))
def _run_chunk(
    cfg: _ChunkConfig, careful, params, opt_state, state, epoch, chunk, keys
):
    """K steps of an epoch: ``lax.scan`` of fit's step over a chunk of batches.

    ``chunk`` is ``(steps, xs, ys, masks)``: step numbers within the epoch
    ``(K,)``, inputs ``(K, batch_size, ...)``, targets and padding masks
    ``(K, batch_size)``. Returns ``(params, opt_state, state, bad, cause,
    finite, (J, g_norm, applied, lr))`` with per-step values ``(K,)``.
    """
    ecfg = cfg.epoch
    loss_and_grad = _fit._step_fn(ecfg.objective)
    if ecfg.mesh is not None:
        batch_axis = NamedSharding(ecfg.mesh, P("data"))
        shard = lambda a: jax.lax.with_sharding_constraint(a, batch_axis)  # noqa: E731
    else:
        shard = lambda a: a  # noqa: E731
    key_epoch = jax.random.fold_in(keys[1], epoch)

    def step(carry, batch):
        carry, (J, g_norm, ok) = _fit._train_step(
            ecfg, careful, loss_and_grad, shard, key_epoch, carry, batch
        )
        lr = _learning_rate(carry[1]) if cfg.with_lr else jnp.float32(-1)
        return carry, (J, g_norm, ok, lr)

    none = jnp.asarray(-1, jnp.int32)
    init = (params, opt_state, state, none, jnp.asarray(0, jnp.int32))
    (params, opt_state, state, bad, cause), per_step = jax.lax.scan(step, init, chunk)
    finite = jnp.isfinite(_optim.global_norm(params))
    return params, opt_state, state, bad, cause, finite, per_step


_epoch_batches = jax.jit(epoch_batches, static_argnums=(1, 2, 3))
_ROW = re.compile(r"\brow (\d+)\b")


class _Chunk(NamedTuple):
    epoch: int
    start: int  # first step of the chunk within the epoch
    data: Any  # (steps, xs, ys, masks) on the device
    examples: int  # real (unmasked) examples in the chunk
    last: bool  # the epoch's last chunk


class _Plan:
    """The chunks of the run, gathered and checked on the host, then transferred."""

    def __init__(self, source, cfg, keys, K, n_outputs, loss_obj, shardings, check):
        self.source, self.cfg, self.keys, self.K = source, cfg, keys, K
        self.n_outputs, self.loss_obj = n_outputs, loss_obj
        self.shardings, self.check = shardings, check
        self.iterable = isinstance(source, IterableSource)

    def steps_in_epoch(self):
        if self.iterable:
            if self.source.length is None:
                return None
            return -(-self.source.length // self.cfg.batch_size)
        return num_batches(self.cfg.n, self.cfg.batch_size, self.cfg.drop_remainder)

    def chunks(self, epoch: int, start: int) -> Iterator[_Chunk]:
        """The chunks of ``epoch`` from step ``start`` on, aligned to multiples of
        K from the epoch's start (a resumed run computes the same steps)."""
        if self.iterable:
            yield from self._iterable_chunks(epoch, start)
            return
        idx, mask = _epoch_batches(
            jax.random.fold_in(self.keys[0], epoch),
            self.cfg.n,
            self.cfg.batch_size,
            self.cfg.drop_remainder,
        )
        idx, mask = np.asarray(idx), np.asarray(mask)
        nb = idx.shape[0]
        a = start
        while a < nb:
            b = min((a // self.K + 1) * self.K, nb)
            rows = idx[a:b].reshape(-1)
            x, y = self.source.batch(rows)
            self._check(x, y, lambda r, rows=rows: f"row {rows[r]}", epoch)
            yield self._put(epoch, a, b, x, y, mask[a:b], b == nb)
            a = b

    def _iterable_chunks(self, epoch, start):
        it = self.source.epoch(epoch)
        bs = self.cfg.batch_size
        s = 0
        pending = []
        done = False
        while not done:
            try:
                x, y = next(it)
            except StopIteration:
                done = True
            else:
                x, y = np.asarray(x), np.asarray(y)
                m = x.shape[0]
                if m > bs or m == 0 or y.shape[0] != m:
                    raise ValueError(
                        f"batch {s} of epoch {epoch} has {m} inputs and "
                        f"{y.shape[0]} targets; every batch needs 1 to "
                        f"batch_size={bs} rows, as many targets as inputs."
                    )
                if s >= start:
                    pending.append((x, y))
                s += 1
            if pending and (done or len(pending) == self.K):
                a = s - len(pending) if not done else s - len(pending)
                xs, ys, ms = [], [], []
                for j, (x, y) in enumerate(pending):
                    m = x.shape[0]
                    self._check(
                        x, y, lambda r, j=j, a=a: f"row {r} of batch {a + j}", epoch
                    )
                    fill = np.arange(bs) % m
                    xs.append(x[fill])
                    ys.append(y[fill])
                    ms.append(np.arange(bs) < m)
                x, y = np.concatenate(xs), np.concatenate(ys)
                yield self._put(epoch, a, s, x, y, np.stack(ms), done)
                pending = []

    def _check(self, x, y, where, epoch):
        if not self.check:
            return
        try:
            check_examples(
                x, y, loss=self.loss_obj, n_outputs=self.n_outputs, name="training set"
            )
        except ValueError as err:
            msg = _ROW.sub(lambda m: where(int(m.group(1))), str(err), count=1)
            raise ValueError(f"{msg} (found while streaming epoch {epoch})") from None

    def _put(self, epoch, a, b, x, y, mask, last):
        k = b - a
        bs = self.cfg.batch_size
        xs = x.reshape(k, bs, *x.shape[1:])
        ys = y.reshape(k, bs, *y.shape[1:])
        steps = np.arange(a, b, dtype=np.int32)
        data = (steps, xs, ys, np.asarray(mask, bool))
        data = jax.device_put(data, self.shardings)
        return _Chunk(epoch, a, data, int(np.asarray(mask).sum()), last)


def _prefetched(gen: Iterator, enabled: bool) -> Iterator:
    """``gen``'s items, the next one produced in a background thread while the
    caller works on the current one (double buffering)."""
    if not enabled:
        yield from gen
        return
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fnn-stream")
    sentinel = object()
    try:
        future = pool.submit(next, gen, sentinel)
        while True:
            item = future.result()
            if item is sentinel:
                return
            future = pool.submit(next, gen, sentinel)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Writers:
    """Per-step metrics: JSONL and TensorBoard (when a writer is installed)."""

    def __init__(self, metrics_file, tensorboard, log_every):
        self.log_every = log_every
        self.jsonl = None
        if metrics_file is not None and log_every:
            Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(metrics_file, "a")  # noqa: SIM115
        self.tb = None
        if tensorboard is not None and log_every:
            self.tb = _summary_writer(tensorboard)

    def write(self, epoch, start, steps_per_epoch, J, g_norm, ok, lr):
        if not self.log_every:
            return
        for j in range(len(J)):
            s = start + j
            if (s + 1) % self.log_every:
                continue
            record = {
                "epoch": epoch,
                "step": s,
                "loss": float(J[j]),
                "grad_norm": float(g_norm[j]),
                "learning_rate": float(lr[j]),
                "applied": bool(ok[j]),
            }
            if self.jsonl is not None:
                self.jsonl.write(json.dumps(record) + "\n")
            if self.tb is not None:
                global_step = epoch * (steps_per_epoch or 0) + s
                for name in ("loss", "grad_norm", "learning_rate"):
                    self.tb.add_scalar(f"train/{name}", record[name], global_step)
        if self.jsonl is not None:
            self.jsonl.flush()

    def close(self):
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def _summary_writer(logdir):
    """A TensorBoard writer from tensorboardX or torch, or ``None`` (skipped)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "fnn.stream: no TensorBoard writer installed (pip install "
                "tensorboardX): per-step metrics go to the JSONL file only.",
                file=sys.stderr,
            )
            return None
    return SummaryWriter(str(logdir))


class _Progress:
    """A tqdm bar per epoch (examples/s, ETA), or fit's line per epoch."""

    def __init__(self, show, epochs):
        self.show, self.epochs, self.bar = show, epochs, None
        self.tqdm = None
        if show:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            self.tqdm = tqdm

    def start_epoch(self, epoch, total_examples, done_examples):
        if self.tqdm is None:
            return
        self.close()
        self.bar = self.tqdm(
            total=total_examples,
            initial=done_examples,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="ex",
            unit_scale=True,
            dynamic_ncols=True,
            leave=False,
            file=sys.stderr,
        )

    def chunk(self, examples, loss):
        if self.bar is not None:
            self.bar.update(examples)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end_epoch(self, line):
        if not self.show:
            return
        if self.bar is not None:
            self.bar.write(line.rstrip(), file=sys.stderr)
            self.close()
        else:
            print("\r" + line, end="", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def fit_stream(
    params: Any,
    optimizer: _optim.Optimizer,
    source: Any,
    y: None = None,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int = 32,
    drop_remainder: bool = False,
    dev: tuple[Any, Any] | None = None,
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    blocks: Any = None,
    state: Any = None,
    grad: str = "autodiff",
    check_gradients: bool | None = None,
    patience: int | None = None,
    opt_state: Any = None,
    initial_epoch: int = 0,
    resume: "StreamLoop | _fit.LoopState | None" = None,
    progress: bool | None = None,
    callback: Callable[..., bool | None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
    steps_per_call: int = 64,
    accumulate: int = 1,
    ema: float | None = None,
    log_every: int = 0,
    metrics_file: "str | os.PathLike | None" = None,
    tensorboard: "str | os.PathLike | None" = None,
    chunk_callback: Callable[[StreamLoop], bool | None] | None = None,
    check: bool = True,
    prefetch: bool = True,
) -> _fit.FitResult:
    """Train on a host-side source, K steps per compiled call, double-buffered.

    The arguments shared with :func:`fnn.fit` mean the same; the result is a
    :class:`fnn.FitResult` whose ``loop`` is a :class:`StreamLoop`. The history's
    ``train_accuracy`` is NaN (the training set is not read a second time);
    ``train_loss`` is the mean loss of the epoch's steps, as in fit.

    Args:
      source: a :class:`Source` (:func:`from_npy`, :func:`from_idx`,
        :class:`ShardSource`, :class:`ArraySource`, your own) or an
        :class:`IterableSource` (its first batch fixes the batch size;
        ``batch_size`` and ``drop_remainder`` are then unused).
      y: must be ``None`` (the source holds the targets; the argument is there
        so that ``fnn.fit(params, opt, source, None, ...)`` reads naturally).
      dev: ``(X_dev, y_dev)`` in memory, evaluated after every epoch (on the
        averaged parameters with ``ema``).
      resume: a :class:`StreamLoop` (from ``chunk_callback`` or
        ``FitResult.loop``) to continue mid-epoch, or an :class:`fnn.LoopState`
        at an epoch boundary.
      steps_per_call: K, the steps per compiled call (one ``lax.scan``).
      accumulate: k > 1 wraps the optimizer in
        :func:`fnn.optim.multi_steps` (one update per k batches).
      ema: a decay in ``[0, 1)``: wraps the optimizer in
        :func:`fnn.optim.ema_params`; dev evaluation, the returned ``params``
        and early stopping use the average (read it from any state with
        :func:`fnn.optim.ema_params_of`); ``FitResult.loop.loop.params`` are
        the raw ones.
      log_every: write every ``log_every``-th step's loss, gradient norm and
        learning rate (0: none) to ``metrics_file`` (JSONL, appended) and
        ``tensorboard`` (a log folder; skipped when no writer is installed).
      chunk_callback: ``fn(loop)`` after every chunk with the
        :class:`StreamLoop` to save for an exact resume; returning ``True``
        stops training there.
      check: check each chunk on the host (:func:`fnn.data.check_examples`).
      prefetch: gather the next chunk in a background thread.

    Returns:
      A :class:`fnn.FitResult`.

    Raises:
      ValueError: bad arguments or data (naming the source's row).
      NonFiniteError: as in fit (the epoch and the step within it).
    """
    if y is not None:
        raise ValueError(
            "a streamed source holds its targets: pass y=None (got an array)."
        )
    if not (isinstance(source, IterableSource) or isinstance(source, Source)):
        raise ValueError(
            f"source must be an fnn.stream Source (len() and batch(indices)) or an "
            f"IterableSource, got {type(source).__name__}."
        )
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("steps_per_call", steps_per_call),
        ("accumulate", accumulate),
    ):
        _fit._positive_int(name, value)
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 0:
        raise ValueError(f"log_every must be an integer >= 0, got {log_every!r}.")
    if grad not in ("autodiff", "manual"):
        raise ValueError(f"grad must be 'autodiff' or 'manual', got {grad!r}.")
    if patience is not None and dev is None:
        raise ValueError("patience (early stopping) needs a dev set: pass dev=(X, y).")
    if mesh is not None:
        axes = getattr(mesh, "axis_names", type(mesh).__name__)
        if not isinstance(mesh, jax.sharding.Mesh) or "data" not in axes:
            raise ValueError(f"mesh must be a Mesh with a 'data' axis, got {axes}.")
        if batch_size % mesh.shape["data"]:
            raise ValueError(
                f"batch_size={batch_size} does not divide across the "
                f"{mesh.shape['data']} devices of the mesh's 'data' axis."
            )
    optimizer = wrap_optimizer(optimizer, accumulate, ema)

    step_pos, sums = 0, (0.0, 0.0, 0)
    if isinstance(resume, StreamLoop):
        step_pos = int(resume.step)
        sums = (float(resume.loss_sum), float(resume.grad_norm_sum), int(resume.count))
        resume = resume.loop
    if resume is not None:
        if not isinstance(resume, _fit.LoopState):
            raise ValueError(
                f"resume must be a StreamLoop or a LoopState, got "
                f"{type(resume).__name__}."
            )
        if opt_state is not None or initial_epoch:
            raise ValueError(
                "resume= carries the optimizer state and the position: do not pass "
                "opt_state or initial_epoch with it."
            )
        initial_epoch = int(resume.epoch)
    elif initial_epoch and opt_state is None:
        raise ValueError(
            f"initial_epoch={initial_epoch} without opt_state would restart the "
            "optimizer at step 0: pass the saved opt_state, or resume=loop."
        )
    obj = _fit._objective(
        blocks,
        activation,
        loss,
        output,
        l1,
        l2,
        drop_rate,
        grad,
        compute_dtype,
        "fit_stream",
    )
    iterable = isinstance(source, IterableSource)
    if iterable:
        x_probe = np.asarray(_peek(source, initial_epoch)[0])
        batch_size = int(x_probe.shape[0])  # the first batch fixes it
        n = source.length or batch_size
        padded = True
    else:
        n = len(source)
        if n < 1:
            raise ValueError("the training source is empty (len(source) == 0).")
        x_probe = np.asarray(source.batch(np.zeros(1, np.int64))[0])
        batch_size = min(int(batch_size), n)
        padded = not drop_remainder and n % batch_size != 0
    if obj.model is not None and state is None:
        state = _fit._nn.init(jax.random.key(0), obj.model, x_probe.shape[1:])[1]
    if resume is not None:
        jax.tree.map(lambda a, b: None, params, resume.params)
        params, opt_state, state = resume.params, resume.opt_state, resume.state
    if padded and jax.tree.leaves(state):
        raise ValueError(
            f"{n} examples do not split into batches of {batch_size}: the padding "
            "of the last batch would enter the batch statistics of blocks with "
            "state (BatchNorm). Pass drop_remainder=True or a dividing batch size."
        )
    loss_obj = _fit._losses.get(obj.loss)
    n_outputs = _fit._n_outputs(obj, params, state, x_probe)
    if dev is not None:
        if not isinstance(dev, tuple | list) or len(dev) != 2:
            raise ValueError("dev must be a pair (X_dev, y_dev).")
        X_dev, y_dev = _fit._host_check(obj, params, state, *dev, "dev set")
    ecfg = _fit._EpochConfig(
        obj, optimizer, n, batch_size, bool(drop_remainder), padded, mesh
    )
    with_lr = _fit._learning_rate(jax.eval_shape(optimizer.init, params)) is not None
    cfg = _ChunkConfig(ecfg, with_lr)
    keys = tuple(jax.random.split(key))

    if check_gradients is None:
        check_gradients = _fit._default_check_gradients(obj, grad)
    params = _fit._copy(params)
    opt_state = optimizer.init(params) if opt_state is None else _fit._copy(opt_state)
    state = _fit._copy(state)
    if mesh is not None:
        replicated = NamedSharding(mesh, P())
        params, opt_state, state = jax.device_put(
            (params, opt_state, state), replicated
        )
        batch_axis = NamedSharding(mesh, P(None, "data"))
        shardings = (replicated, batch_axis, batch_axis, batch_axis)
        if dev is not None:
            X_dev, y_dev = jax.device_put((X_dev, y_dev), replicated)
    else:
        shardings = None
    plan = _Plan(
        source, ecfg, keys, int(steps_per_call), n_outputs, loss_obj, shardings, check
    )
    if check_gradients and initial_epoch < epochs and not iterable:

        def take(indices):
            x0, y0 = source.batch(np.asarray(indices))
            return jnp.asarray(x0), jnp.asarray(y0)

        _fit._check_first_batch(
            ecfg, params, state, keys, initial_epoch, take, _epoch_batches
        )

    eval_obj = _fit._eval_objective(obj)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(show, epochs)
    writers = _Writers(metrics_file, tensorboard, log_every)
    books = _fit._EpochEnd(
        resume,
        dev,
        patience,
        callback,
        obj.model is not None,
        epochs,
        initial_epoch,
        bar.end_epoch if show else None,
    )
    steps_per_epoch = plan.steps_in_epoch()

    def eval_params(params, opt_state):
        return _optim.ema_params_of(opt_state, params) if ema is not None else params

    def loop_state(epoch):
        return books.loop_state(epoch, params, opt_state, state)

    def chunks():
        for e in range(initial_epoch, epochs):
            yield from plan.chunks(e, step_pos if e == initial_epoch else 0)

    stopped_early = False
    epoch, next_step = initial_epoch, step_pos
    loss_sum, g_sum, count = sums
    t_epoch = time.perf_counter()
    new_epoch = True
    stream = _prefetched(chunks(), prefetch)
    try:
        for chunk in stream:
            epoch = chunk.epoch
            if new_epoch:
                t_epoch = time.perf_counter()
                done = chunk.start * batch_size
                total = None
                if steps_per_epoch is not None:
                    total = steps_per_epoch * batch_size
                if total is not None and not drop_remainder and not iterable:
                    total, done = n, min(done, n)
                bar.start_epoch(epoch, total, done)
                new_epoch = False
            before = (params, opt_state, state)
            params, opt_state, state, bad, cause, finite, per_step = _run_chunk(
                cfg, False, params, opt_state, state, np.int32(epoch), chunk.data, keys
            )
            J, g_norm, ok, lr = (np.asarray(v) for v in per_step)
            lr = np.where(lr < 0, np.nan, lr)
            if int(bad) >= 0 or not bool(finite):
                params, opt_state, state, bad, cause, _, _ = _run_chunk(
                    cfg, True, *before, np.int32(epoch), chunk.data, keys
                )
                bar.close()
                raise _fit.NonFiniteError(
                    epoch,
                    int(bad),
                    params,
                    opt_state,
                    state,
                    books.history,
                    _fit._CAUSES[int(cause)],
                )
            del before
            loss_sum += float(np.sum(J[ok], dtype=np.float64))
            g_sum += float(np.sum(g_norm[ok], dtype=np.float64))
            count += int(ok.sum())
            writers.write(epoch, chunk.start, steps_per_epoch, J, g_norm, ok, lr)
            bar.chunk(chunk.examples, float(J[-1]))
            next_step = chunk.start + len(J)
            if not chunk.last:
                if chunk_callback is not None:
                    mid = StreamLoop(
                        loop_state(epoch), next_step, loss_sum, g_sum, count
                    )
                    if chunk_callback(mid):
                        stopped_early = True
                        break
                continue
            # The epoch's end: evaluate, record, call back, stop early.
            new_epoch = True
            p_eval = eval_params(params, opt_state)
            dev_loss, dev_acc = (
                _fit._evaluate(eval_obj, p_eval, state, X_dev, y_dev)
                if dev is not None
                else (math.nan,) * 2
            )
            lr_now = _fit._learning_rate(opt_state)
            c = max(count, 1)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / c,
                "train_accuracy": math.nan,
                "dev_loss": float(dev_loss),
                "dev_accuracy": _fit._nan_if_negative(dev_acc),
                "learning_rate": math.nan if lr_now is None else float(lr_now),
                "grad_norm": g_sum / c,
                "seconds": time.perf_counter() - t_epoch,
            }
            loss_sum, g_sum, count = 0.0, 0.0, 0
            stop = books.end(record, params, opt_state, state, p_eval=p_eval)
            if chunk_callback is not None:
                at_end = StreamLoop(loop_state(epoch + 1), 0, 0.0, 0.0, 0)
                if chunk_callback(at_end):
                    stop = True
            if stop:
                stopped_early = True
                epoch += 1
                next_step = 0
                break
            epoch, next_step = epoch + 1, 0
    finally:
        stream.close()
        bar.close()
        writers.close()
    if show and bar.tqdm is None:
        print(file=sys.stderr)
    final = StreamLoop(loop_state(epoch), next_step, loss_sum, g_sum, count)
    return books.result(
        eval_params(params, opt_state), opt_state, state, stopped_early, final
    )
