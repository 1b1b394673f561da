"""The whole training run as one pure function: jittable, vmappable, no host loop.

:func:`train` is :func:`fnn.fit` without its host conveniences: every epoch
of a run is one ``lax.scan`` step of one traced function of ``(params,
optimizer, data, key)``, so ``jax.jit(train)`` compiles the whole run once and
``jax.vmap`` over parameters, keys or hyperparameters trains a population
(:func:`fnn.sweep` does that, with the host checks).

Invariants:
  * same epochs as ``fit``: the epoch body (the mini-batch scan, its
    non-finite guard, the evaluation after the epoch) is the function ``fit``
    compiles, and the keys are derived the same way, so ``train`` and ``fit``
    with the same arguments give the same parameters and history (up to the
    order of floating-point sums when vmapped);
  * early stopping without a host round trip: the best dev loss, its epoch
    and its parameters (kept by ``jnp.where``) and the patience counter are
    part of the scan's carry; a member that has stopped (or met a non-finite
    value) keeps its parameters while the scan runs its remaining epochs as
    no-ops (computed and discarded by a select: every member of a population
    runs the same program, and the data is never copied per member);
  * the history is arrays ``(epochs,)``: entries of epochs that did not run
    (after stopping) are 0, ``epochs_run`` says how many did; nothing is NaN
    unless training produced it;
  * a non-finite loss, gradient or update cannot raise inside a compiled
    function: the member keeps the parameters from before that epoch and
    stops, and ``nonfinite_epoch`` names the epoch (``fit`` raises
    :class:`fnn.NonFiniteError` there);
  * the data is not checked here (it may be traced): check it on the host
    with :func:`fnn.data.check_examples`, as ``fit`` and ``sweep`` do.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import nn as _nn
from . import optim as _optim
from ._fit import _epoch_record, _EpochConfig, _objective, _positive_int


class TrainResult(NamedTuple):
    """What :func:`train` returns (a pytree: ``vmap`` stacks every field).

    Attributes:
      params: the parameters ``fit`` would return: those of the best dev-loss
        epoch with ``patience`` (when some epoch improved), else the last.
      last_params: the parameters after the last epoch run.
      opt_state: the optimizer state after the last epoch run.
      state: block state (running statistics), ``None`` for the MLP form.
      history: ``{name: (epochs,)}``: ``"epoch"`` (0, 1, ...), ``"train_loss"``
        (the epoch's mean step loss), ``"grad_norm"``, and where they exist
        ``"train_accuracy"``, ``"dev_loss"``, ``"dev_accuracy"`` (classification
        losses; with ``dev``) and ``"learning_rate"``; 0 at epochs not run.
      best_epoch: int32, the epoch of the lowest dev loss (−1 without ``dev``).
      best_loss: that dev loss (``inf`` without ``dev``).
      epochs_run: int32, epochs trained (fewer than ``epochs`` after early
        stopping or a non-finite value).
      nonfinite_epoch: int32, the epoch that met a non-finite loss, gradient or
        update (not applied; training stopped before it), −1 for none.
    """

    params: Any
    last_params: Any
    opt_state: Any
    state: Any
    history: dict[str, jax.Array]
    best_epoch: jax.Array
    best_loss: jax.Array
    epochs_run: jax.Array
    nonfinite_epoch: jax.Array


class _RunConfig(NamedTuple):
    """The static part of a run (hashable: the compile-cache key of sweeps)."""

    objective: Any
    epochs: int
    batch_size: int
    drop_remainder: bool
    patience: int | None


def _run_config(
    *,
    epochs,
    batch_size,
    drop_remainder,
    dev,
    patience,
    activation,
    loss,
    output,
    l1,
    l2,
    drop_rate,
    blocks,
    grad,
    compute_dtype,
    where,
) -> _RunConfig:
    """Validate the static arguments shared by :func:`train` and ``sweep``."""
    if grad not in ("autodiff", "manual"):
        raise ValueError(f"{where}: grad must be 'autodiff' or 'manual', got {grad!r}.")
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if patience is not None:
        if dev is None:
            raise ValueError(
                f"{where}: patience (early stopping) needs a dev set: pass dev=(X, y)."
            )
        patience = _positive_int("patience", patience)
    if compute_dtype is not None and not jnp.issubdtype(compute_dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a float dtype, got {compute_dtype!r}.")
    obj = _objective(
        blocks, activation, loss, output, l1, l2, drop_rate, grad, compute_dtype, where
    )
    return _RunConfig(obj, epochs, batch_size, bool(drop_remainder), patience)


def _empty_state(run: _RunConfig, state, in_shape, where):
    """The state argument of a model: the caller's, or the empty structure of a
    model without state (found abstractly); ``None`` for the MLP form."""
    model = run.objective.model
    if model is None or state is not None:
        return state
    shapes = jax.eval_shape(lambda: _nn.init(jax.random.key(0), model, in_shape)[1])
    if jax.tree.leaves(shapes):
        raise ValueError(
            f"{where}: this model has state (e.g. BatchNorm running statistics): "
            "pass state=... from fnn.nn.init."
        )
    return jax.tree.map(lambda s: None, shapes)


def _epoch_config(run: _RunConfig, optimizer, n: int, has_state: bool, where):
    batch_size = min(run.batch_size, n)
    padded = not run.drop_remainder and n % batch_size != 0
    if padded and has_state:
        raise ValueError(
            f"{where}: {n} examples do not split into batches of {batch_size}, and "
            "the last batch would be padded: the padding is masked out of the loss "
            "but not out of the batch statistics of blocks with state (BatchNorm). "
            "Pass drop_remainder=True or a batch size that divides the data."
        )
    return _EpochConfig(
        run.objective, optimizer, n, batch_size, run.drop_remainder, padded, None
    )


def _where(flag, a, b):
    """``a`` where ``flag`` else ``b``, leaf by leaf (``flag`` a scalar)."""
    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)


def _run(cfg: _EpochConfig, run: _RunConfig, params, opt_state, state, X, y, dev, key):
    """The traced run: a ``lax.scan`` of :func:`fnn._fit._epoch_record` over
    the epochs, early stopping and the non-finite guard in the carry."""
    keys = tuple(jax.random.split(key))
    patience = run.patience
    int32 = jnp.int32

    def run_epoch(operand, epoch):
        p, o, s = operand
        return _epoch_record(cfg, False, p, o, s, epoch, X, y, keys, dev)

    record_shape = jax.eval_shape(
        run_epoch, (params, opt_state, state), jnp.zeros((), int32)
    )[-1]  # the history's names and dtypes

    def body(carry, epoch):
        params, opt_state, state, best, active, bad_epoch = carry
        best_loss, best_epoch, best_params, wait = best

        # Every epoch runs and a stopped member's result is discarded by a
        # select: under vmap a lax.cond on a per-member flag would become a
        # select anyway, after broadcasting its closed-over operands (the data)
        # to one copy per member.
        operand = (params, opt_state, state)
        p, o, s, bad, _, finite, record = run_epoch(operand, epoch)
        failed = active & ((bad >= 0) | ~finite)
        # A non-finite epoch is not kept: the member stays as it was.
        params, opt_state, state = _where(active & ~failed, (p, o, s), operand)
        ran = active & ~failed
        bad_epoch = jnp.where(failed, epoch, bad_epoch)
        if dev is not None:
            improved = ran & (record["dev_loss"] < best_loss)
            best_loss = jnp.where(improved, record["dev_loss"], best_loss)
            best_epoch = jnp.where(improved, epoch, best_epoch)
            wait = jnp.where(improved, 0, jnp.where(ran, wait + 1, wait))
            if patience is not None:
                best_params = _where(improved, params, best_params)
        stop = failed if patience is None else failed | (wait >= patience)
        active = active & ~stop
        record = {k: jnp.where(ran, v, jnp.zeros_like(v)) for k, v in record.items()}
        carry = (
            params,
            opt_state,
            state,
            (best_loss, best_epoch, best_params, wait),
            active,
            bad_epoch,
        )
        return carry, (record, ran)

    loss_dtype = record_shape.get("dev_loss", record_shape["train_loss"]).dtype
    best = (
        jnp.asarray(jnp.inf, loss_dtype),
        jnp.asarray(-1, int32),
        params if patience is not None else None,
        jnp.asarray(0, int32),
    )
    init = (params, opt_state, state, best, jnp.asarray(True), jnp.asarray(-1, int32))
    epochs = jnp.arange(run.epochs, dtype=int32)
    carry, (records, ran) = jax.lax.scan(body, init, epochs)
    last, opt_state, state, best, _, bad_epoch = carry
    best_loss, best_epoch, best_params, _ = best
    out = last
    if patience is not None:
        out = _where(best_epoch >= 0, best_params, last)
    history = {"epoch": epochs, **records}
    return TrainResult(
        out,
        last,
        opt_state,
        state,
        history,
        best_epoch,
        best_loss,
        jnp.sum(ran).astype(int32),
        bad_epoch,
    )


def train(
    params: Any,
    optimizer: _optim.Optimizer,
    X: jax.Array,
    y: Any,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int = 32,
    drop_remainder: bool = False,
    dev: tuple[jax.Array, Any] | None = None,
    patience: int | None = None,
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
    grad: str = "autodiff",
    opt_state: Any = None,
    compute_dtype: Any = None,
) -> TrainResult:
    """The whole training run as one pure, jittable and vmappable function.

    The same mini-batch gradient descent as :func:`fnn.fit` (same epochs, same
    batches and dropout masks from ``key``, same early stopping), written as a
    ``lax.scan`` over epochs: no Python loop, no host round trip, no
    exceptions inside. Wrap it in ``jax.jit`` to compile the whole run once;
    ``jax.vmap`` it over parameters, keys or hyperparameters (build the
    optimizer inside the mapped function from traced values) to train a
    population, or call :func:`fnn.sweep`, which does that after checking the
    data on the host::

        def run(params, lr, key):
            return fnn.train(params, fnn.optim.adam(lr), X, y, key=key,
                             epochs=20, dev=(X_dev, y_dev), patience=3)

        results = jax.jit(jax.vmap(run))(stacked_params, lrs, keys)

    Early stopping (``patience``): after each epoch, the dev loss J_dev(θ_e) is
    compared with the best so far; an improvement keeps θ_e as the best
    parameters (``jnp.where``, per member) and resets the counter, otherwise
    the counter grows; at ``patience`` the member stops and the remaining
    epochs of the scan leave it unchanged.

    Args:
      params: initial parameters (MLP list or the parameters of ``blocks``).
      optimizer: an :class:`fnn.optim.Optimizer`; its hyperparameters may be
        traced values (``fnn.optim.adam(lr)`` with ``lr`` an argument of the
        jitted or vmapped function).
      X: training inputs ``(n, ...)``; y: targets ``(n,)`` labels or ``(n, k)``.
        Not checked (they may be traced): see :func:`fnn.data.check_examples`.
      key: PRNG key of the run (shuffling and dropout, as in ``fit``).
      epochs, batch_size, drop_remainder, dev, patience: as for ``fit``
        (Python numbers: they fix the shape of the computation).
      activation, loss, output, l1, l2, drop_rate, blocks, state, grad,
        compute_dtype: the objective and model, as for ``fit`` (Python values).
      opt_state: optimizer state to start from (default ``optimizer.init``).

    Returns:
      A :class:`TrainResult`; its history arrays have shape ``(epochs,)``.

    Raises:
      ValueError: bad static arguments (names, sizes, patience without dev).

    References:
      [Deep Learning 2020, 2 "Learning algorithm"; 6 "Early stopping"];
      [Laurent, "SGD algorithm"].
    """
    run = _run_config(
        epochs=epochs,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
        dev=dev,
        patience=patience,
        activation=activation,
        loss=loss,
        output=output,
        l1=l1,
        l2=l2,
        drop_rate=drop_rate,
        blocks=blocks,
        grad=grad,
        compute_dtype=compute_dtype,
        where="train",
    )
    X, y = jnp.asarray(X), jnp.asarray(y)
    state = _empty_state(run, state, X.shape[1:], "train")
    has_state = bool(jax.tree.leaves(state))
    cfg = _epoch_config(run, optimizer, X.shape[0], has_state, "train")
    if dev is not None:
        if not isinstance(dev, tuple | list) or len(dev) != 2:
            raise ValueError("train: dev must be a pair (X_dev, y_dev).")
        dev = (jnp.asarray(dev[0]), jnp.asarray(dev[1]))
    if opt_state is None:
        opt_state = optimizer.init(params)
    return _run(cfg, run, params, opt_state, state, X, y, dev, key)
