"""Data-parallel training on JAX's own sharding: a mesh, replicated parameters,
sharded batches.

Data parallelism runs the same step on every device, each on its slice of the
mini-batch; the gradient of the mean loss is the mean of the per-device
gradients, which XLA computes with an all-reduce it inserts itself once the
batch is sharded and the parameters replicated. fnn writes no collective and
uses no ``pmap``: ``jax.jit`` with :class:`jax.sharding.NamedSharding` on a
one-axis mesh named ``"data"`` is the whole mechanism, so the same program runs
on one CPU, several GPUs or TPU cores, and several hosts.

Invariants:
  * ``data_mesh()`` is a 1-d mesh with the axis ``"data"`` over the given
    devices (all of ``jax.devices()`` by default);
  * ``replicate(tree, mesh)`` holds a full copy of every leaf on every device;
  * ``shard_batch(x, mesh)`` splits the leading (batch) axis into equal
    consecutive slices, slice ``i`` on device ``i`` of the ``"data"`` axis; the
    batch size must be a multiple of the axis size;
  * ``fnn.fit(..., mesh=mesh)`` trains the same parameters as ``fnn.fit``
    without a mesh, up to the order of floating-point sums.

Multi-host use (several processes, each owning some devices, e.g. one per GPU
node): call ``jax.distributed.initialize()`` in every process before any other
JAX call (on Cloud TPU and under SLURM or Open MPI the coordinator address,
process count and id are found automatically; otherwise pass
``coordinator_address="host0:1234", num_processes=N, process_id=i``). Then
``jax.devices()`` lists the devices of *all* processes, ``data_mesh()`` spans
them, and every process runs the same program (SPMD). Each process must hold
the same parameters and the same data-loading key, so every process draws the
same batches; the jitted step then computes on its own devices' slices only.
``benchmarks/multihost_example.py`` is a runnable script that works on one host
(``python benchmarks/multihost_example.py``) and on several (one launch per
process with ``--coordinator``, ``--num-processes`` and ``--process-id``).

References: the data-parallel reading of [Laurent]'s mini-batch gradient (the
gradient of a mean over the batch is the mean of the gradients over any
partition of it); JAX documentation, "Distributed arrays and automatic
parallelization" and "Multi-process environments".
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis device mesh named ``"data"`` for data-parallel training.

    Args:
      devices: the devices to use, in order; default ``jax.devices()`` (all
        devices of all processes after ``jax.distributed.initialize``).

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``{"data": len(devices)}``.

    Raises:
      ValueError: an empty device list.

    References: JAX documentation, "Distributed arrays and automatic
    parallelization" (``Mesh``, ``NamedSharding``).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device, got an empty list.")
    return Mesh(np.array(devices), ("data",))


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh) or "data" not in mesh.axis_names:
        names = getattr(mesh, "axis_names", type(mesh).__name__)
        raise ValueError(f"mesh must be a Mesh with a 'data' axis, got {names}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A copy of ``tree`` with every leaf replicated on every device of ``mesh``.

    Args:
      tree: a pytree of arrays (parameters, optimizer state); shapes and dtypes
        are kept.
      mesh: a mesh with a ``"data"`` axis.

    Returns:
      The same pytree, each leaf a ``jax.Array`` with sharding
      ``NamedSharding(mesh, PartitionSpec())``.

    References: JAX documentation, "Distributed arrays and automatic
    parallelization" (a ``PartitionSpec()`` with no axis is full replication).
    """
    _check_mesh(mesh)
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Split the batch axis (axis 0) of every leaf of ``x`` across the mesh's
    ``"data"`` axis: rows ``i·m/D .. (i+1)·m/D − 1`` on device ``i`` for a batch of
    ``m`` rows over ``D`` devices.

    Args:
      x: an array ``(m, ...)`` or a pytree of them (inputs, labels, mask).
      mesh: a mesh with a ``"data"`` axis of size ``D``.

    Returns:
      The same pytree with sharding ``NamedSharding(mesh, PartitionSpec("data"))``.

    Raises:
      ValueError: a leaf without a batch axis, or ``m`` not a multiple of ``D``
        (naming both numbers).

    References: [Laurent, SGD algorithm] (the mini-batch gradient is a mean
    over examples, so it is the mean of the per-slice means for equal slices).
    """
    _check_mesh(mesh)
    n_dev = mesh.shape["data"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
        shape = np.shape(leaf)
        where = jax.tree_util.keystr(path) or "x"
        if not shape:
            raise ValueError(f"{where}: a scalar has no batch axis to shard.")
        if shape[0] % n_dev:
            raise ValueError(
                f"{where}: batch of {shape[0]} rows does not divide across the "
                f"{n_dev} devices of the mesh's 'data' axis."
            )
    return jax.device_put(x, NamedSharding(mesh, P("data")))
