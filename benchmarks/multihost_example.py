"""Data-parallel training with fnn on one host or many, through JAX's sharding.

One host (all local devices; on a CPU-only machine simulate several with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``)::

    python benchmarks/multihost_example.py

Several hosts: start the same script once per process, with the same
coordinator address (host:port of process 0) and each its own id::

    # on host 0
    python benchmarks/multihost_example.py --coordinator host0:1234 \\
        --num-processes 2 --process-id 0
    # on host 1
    python benchmarks/multihost_example.py --coordinator host0:1234 \\
        --num-processes 2 --process-id 1

On Cloud TPU, or under SLURM / Open MPI, ``--auto`` lets JAX find the three
values itself. After ``jax.distributed.initialize`` every process sees all
devices of all processes in ``jax.devices()``; ``fnn.parallel.data_mesh()``
spans them, and each process runs this same program on the same data and keys
(SPMD): the compiled step computes on the local devices' slices of every batch
and XLA all-reduces the gradients across hosts.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument(
        "--auto", action="store_true", help="jax.distributed.initialize() with no args"
    )
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)

    # Must come before any other JAX call that touches devices.
    if args.auto:
        jax.distributed.initialize()
    elif args.coordinator:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )

    import fnn
    from fnn import parallel

    mesh = parallel.data_mesh()  # every device of every process
    n_dev = mesh.shape["data"]
    batch_size = 32 * n_dev  # a multiple of the device count
    print(
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local / {n_dev} global devices, "
        f"batch {batch_size}"
    )

    # Same data and keys in every process (deterministic from the seed).
    data = fnn.datasets.load_digits()
    keys = fnn.data.run_keys(jax.random.key(0))
    split = fnn.data.train_dev_test_split(keys.split, data.X, data.y, stratify=True)
    scaler = fnn.data.fit_standardize(split.X_train)
    params = fnn.init_params(keys.init, [64, 128, 10])
    result = fnn.fit(
        params,
        fnn.optim.adam(1e-3),
        scaler.transform(split.X_train),
        split.y_train,
        key=keys.shuffle,
        epochs=args.epochs,
        batch_size=batch_size,
        dev=(scaler.transform(split.X_dev), split.y_dev),
        grad="manual",
        mesh=mesh,
        compute_dtype=jnp.bfloat16 if jax.default_backend() != "cpu" else None,
        progress=False,
    )
    test = fnn.evaluate(result.params, scaler.transform(split.X_test), split.y_test)
    if jax.process_index() == 0:
        print(
            f"train loss {result.history['train_loss'][-1]:.4f}, "
            f"test accuracy {100 * test['accuracy']:.2f}%"
        )


if __name__ == "__main__":
    main()
