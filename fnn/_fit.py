"""The training loop: epochs of mini-batch gradient descent, one compiled call each.

Seed 000 §2 "Learning algorithm" and seed 001 "SGD algorithm": initialise θ;
for each epoch take a fresh random order of the training set, cut it into
mini-batches without replacement, and for each batch compute the loss and its
gradient and update θ; watch the dev loss and stop early when it no longer
improves (seed 000 §6 "Early stopping", seed 001 "Optimization algorithms").

Design, invariants:
  * one epoch is one jitted call: ``lax.scan`` over the epoch's mini-batches,
    parameters, optimizer state and block state donated (no per-step Python);
  * the gradient is ``jax.grad`` of the loss (``grad="autodiff"``) or fnn's
    manual backpropagation (``grad="manual"``); both see the same batches and
    dropout masks, so they train the same model;
  * randomness: ``key`` is split into a shuffling key and a dropout key; epoch e
    uses ``fold_in(·, e)`` and step s of it ``fold_in(·, s)``, so a run resumed at
    epoch e continues exactly as the uninterrupted run;
  * a batch size that does not divide the data gives a padded last batch whose
    padding is masked out of the loss: every example counts once per epoch
    (``drop_remainder=True`` drops the remainder instead);
  * a non-finite loss or gradient stops the step from being applied: the epoch
    finishes with the last finite parameters and :class:`NonFiniteError` names
    the epoch and step and carries those parameters and optimizer state;
  * data parallel (``mesh``): the same program on every device of the mesh's
    ``"data"`` axis, parameters, optimizer state and data replicated, each
    mini-batch sharded along its batch axis; XLA inserts the all-reduce of the
    gradients (one code path from one CPU to many accelerators, see
    :mod:`fnn.parallel`);
  * mixed precision (``compute_dtype``): parameters, optimizer state and
    updates stay in their own dtype; only the step's forward and backward run
    in ``compute_dtype``; the loss is evaluated in float32, the penalty in the
    parameters' dtype.
"""

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import losses as _losses
from . import nn as _nn
from . import optim as _optim
from ._mlp import apply as _mlp_apply
from ._mlp import backprop as _backprop
from ._mlp import loss as _mlp_loss
from .data import _paired_rows, epoch_batches

HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    "learning_rate",
    "grad_norm",
    "seconds",
)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (the best dev-loss ones with ``patience``).
      opt_state: the optimizer state after the last epoch run.
      state: block state (running statistics), ``None`` for an MLP.
      history: ``{name: [one value per epoch]}`` for the names in
        ``HISTORY_KEYS`` (accuracies are NaN for regression, dev values NaN
        without ``dev``).
      best_epoch: the epoch with the lowest dev loss (``None`` without ``dev``).
      stopped_early: whether early stopping or the callback ended training.
    """

    params: Any
    opt_state: Any
    state: Any
    history: dict[str, list[float]]
    best_epoch: int | None
    stopped_early: bool


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient during training.

    Attributes:
      epoch, step: where it happened (0-based; step within the epoch).
      params, opt_state, state: the last finite values, before that step.
      history: the history of the epochs completed before.
    """

    def __init__(self, epoch, step, params, opt_state, state, history):
        super().__init__(
            f"non-finite loss or gradient at epoch {epoch}, step {step}: training "
            "stopped; the last finite parameters and optimizer state are in this "
            "error's .params and .opt_state."
        )
        self.epoch, self.step = epoch, step
        self.params, self.opt_state, self.state = params, opt_state, state
        self.history = history


class _Model(NamedTuple):
    """The three functions fit needs, for an MLP or a list of blocks."""

    loss_and_grad: Callable  # (params, state, x, y, mask, key) -> (J, grads, state)
    outputs: Callable  # (params, state, x) -> network output, evaluation mode


def _make_model(blocks, grad, loss_obj, kw) -> _Model:
    l1, l2 = kw["l1"], kw["l2"]
    if blocks is None:
        mlp = dict(
            activation=kw["activation"],
            loss=loss_obj,
            output=kw["output"],
            l1=l1,
            l2=l2,
            drop_rate=kw["drop_rate"],
        )

        def loss_and_grad(params, state, x, y, mask, key):
            if grad == "manual":
                J, g = _backprop(params, x, y, key=key, train=True, mask=mask, **mlp)
            else:
                J, g = jax.value_and_grad(_mlp_loss)(
                    params, x, y, key=key, train=True, mask=mask, **mlp
                )
            return J, g, state

        def outputs(params, state, x):
            last = "identity" if loss_obj.fused_output else (kw["output"] or "identity")
            return _mlp_apply(params, x, activation=kw["activation"], output=last)

        return _Model(loss_and_grad, outputs)

    def loss_and_grad(params, state, x, y, mask, key):
        if grad == "manual":
            (J, state), g = _nn.loss_and_grad(
                blocks,
                params,
                x,
                y,
                loss_obj,
                state=state,
                key=key,
                train=True,
                mask=mask,
                l1=l1,
                l2=l2,
            )
            return J, g, state

        def objective(p):
            out, new_state, _ = _nn.forward(
                blocks, p, x, state=state, key=key, train=True
            )
            Y = _losses.targets(loss_obj, out, y)
            return loss_obj.fn(out, Y, mask) + _losses.weight_penalty(
                p, l1, l2
            ), new_state

        (J, state), g = jax.value_and_grad(objective, has_aux=True)(params)
        return J, g, state

    def outputs(params, state, x):
        return _nn.forward(blocks, params, x, state=state, train=False)[0]

    return _Model(loss_and_grad, outputs)


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
        tree,
    )


def _float32_loss(loss_obj):
    """The same loss evaluated in float32 on low-precision outputs: its value
    stays float32, its gradient ∂J/∂out is handed back in the outputs' dtype,
    the dtype the rest of the low-precision step works in."""
    f32 = jnp.float32

    def fn(out, Y, mask=None):
        return loss_obj.fn(out.astype(f32), Y.astype(f32), mask)

    def grad(out, Y, mask=None):
        return loss_obj.grad(out.astype(f32), Y.astype(f32), mask).astype(out.dtype)

    return loss_obj._replace(fn=fn, grad=grad)


def _mixed_precision(loss_and_grad, dtype, l1, l2):
    """``loss_and_grad`` computed in ``dtype`` from parameters kept in their own
    dtype: params, state and inputs cast down, gradients and state cast back;
    the penalty l1·Σ|W| + l2·ΣW² and its gradient in the parameters' dtype."""

    def wrapped(params, state, x, y, mask, key):
        J, g, new_state = loss_and_grad(
            _cast_floats(params, dtype),
            _cast_floats(state, dtype),
            _cast_floats(x, dtype),
            y,
            mask,
            key,
        )
        J = J.astype(jnp.float32)
        g = jax.tree.map(lambda g_i, p: g_i.astype(p.dtype), g, params)
        new_state = jax.tree.map(lambda s, s0: s.astype(s0.dtype), new_state, state)
        if l1 or l2:
            J = J + _losses.weight_penalty(params, l1, l2)
            g = jax.tree.map(jnp.add, g, _losses.weight_penalty_grad(params, l1, l2))
        return J, g, new_state

    return wrapped


def _accuracy(loss_obj, out, Y):
    """Fraction of correct predictions: argmax for softmax outputs, threshold 1/2
    (logit 0) for sigmoid outputs; NaN for regression losses."""
    if loss_obj.fused_output == "softmax":
        return jnp.mean(jnp.argmax(out, -1) == jnp.argmax(Y, -1))
    if loss_obj.fused_output == "sigmoid":
        return jnp.mean((out > 0) == (Y > 0.5))
    return -jnp.ones((), out.dtype)  # no accuracy: reported as NaN on the host


def _nan_if_negative(value) -> float:
    value = float(value)
    return math.nan if value < 0 else value


def _progress_line(epoch, epochs, record, elapsed, initial_epoch):
    done = epoch + 1 - initial_epoch
    left = epochs - epoch - 1
    eta = elapsed / done * left
    width = 24
    filled = int(width * (epoch + 1) / epochs)
    bar = "=" * filled + ">" * (filled < width) + " " * (width - filled - 1)
    parts = [
        f"epoch {epoch + 1}/{epochs} [{bar[:width]}]",
        f"loss {record['train_loss']:.4f}",
    ]
    if not math.isnan(record["dev_loss"]):
        parts.append(f"dev {record['dev_loss']:.4f}")
    if not math.isnan(record["dev_accuracy"]):
        parts.append(f"dev acc {100 * record['dev_accuracy']:.2f}%")
    parts.append(f"{elapsed:.1f}s, ETA {eta:.1f}s")
    return "  ".join(parts).ljust(110)


def evaluate(
    params: Any,
    X: jax.Array,
    y: Any,
    *,
    activation="relu",
    loss="cross_entropy",
    output=None,
    blocks: Sequence[_nn.Block] | None = None,
    state: Any = None,
) -> dict[str, float]:
    """Loss and accuracy of a model on ``(X, y)`` in evaluation mode.

    Args:
      params: MLP parameters, or block parameters with ``blocks``.
      X: ``(m, ...)`` inputs; y: targets as for :func:`fnn.loss`.
      activation, loss, output: as for :func:`fnn.loss` (MLP only).
      blocks, state: a block network and its state instead of the MLP.

    Returns:
      ``{"loss": data loss without penalty, "accuracy": fraction correct, NaN
      for regression losses}``.
    """
    loss_obj = _losses.get(loss)
    kw = dict(activation=activation, output=output, l1=0.0, l2=0.0, drop_rate=0.0)
    model = _make_model(
        None if blocks is None else list(blocks), "autodiff", loss_obj, kw
    )
    out = jax.jit(model.outputs)(params, state, jnp.asarray(X))
    Y = _losses.targets(loss_obj, out, y)
    return {
        "loss": float(loss_obj.fn(out, Y)),
        "accuracy": _nan_if_negative(_accuracy(loss_obj, out, Y)),
    }


def fit(
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
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    blocks: Sequence[_nn.Block] | None = None,
    state: Any = None,
    grad: str = "autodiff",
    patience: int | None = None,
    opt_state: Any = None,
    initial_epoch: int = 0,
    progress: bool | None = None,
    callback: Callable[[dict, Any, Any], bool | None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
) -> FitResult:
    """Train by mini-batch gradient descent, one compiled ``lax.scan`` per epoch.

    Args:
      params: initial parameters: an MLP's ``[{"W", "b"}, ...]`` or, with
        ``blocks``, the block parameter list. Not modified (fit works on a copy).
      optimizer: an :class:`fnn.optim.Optimizer`.
      X: training inputs ``(n, ...)``; y: training targets, ``(n,)`` integer
        labels or ``(n, k)`` rows.
      key: root PRNG key for shuffling and dropout.
      epochs: train until this epoch count (epochs ``initial_epoch .. epochs-1``).
      batch_size: examples per mini-batch.
      drop_remainder: drop the last partial batch instead of masking its padding.
      dev: ``(X_dev, y_dev)`` evaluated after every epoch (loss, accuracy) and
        monitored by early stopping.
      activation, loss, output, l1, l2, drop_rate: the objective, as for
        :func:`fnn.loss` (``activation``, ``output`` and ``drop_rate`` apply to
        the MLP only; put Dropout blocks in ``blocks`` instead).
      blocks, state: a list of :mod:`fnn.nn` blocks and their state (running
        statistics), to train a block network instead of the MLP.
      grad: ``"autodiff"`` (``jax.grad``) or ``"manual"`` (fnn's backprop).
      patience: stop after this many epochs without a lower dev loss and return
        the parameters of the best epoch (needs ``dev``).
      opt_state: optimizer state to resume from (default ``optimizer.init``).
      initial_epoch: the epoch to resume at (with ``opt_state``).
      progress: show a progress bar on stderr; default: when stderr is a terminal.
      callback: ``callback(record, params, opt_state)`` after every epoch, with
        ``record`` the epoch's history entry; returning ``True`` stops training.
      mesh: a :class:`jax.sharding.Mesh` with a ``"data"`` axis for data-parallel
        training (e.g. :func:`fnn.parallel.data_mesh`): parameters, optimizer
        state and the training set are replicated on its devices and every
        mini-batch is split along the batch axis; ``batch_size`` must be a
        multiple of the ``"data"`` axis size. The result equals single-device
        training up to the order of floating-point sums.
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision: the forward and
        backward pass of each step run in this dtype on down-cast copies of the
        parameters and inputs, the gradients are cast back to the parameters'
        dtype before the optimizer; the loss and its gradient at the output are
        computed in float32 from the low-precision output, the penalty in the
        parameters' dtype. ``None``:
        everything in the parameters' dtype.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: bad arguments (shapes, sizes, names), named.
      NonFiniteError: a non-finite loss or gradient; it carries the epoch, the
        step and the last finite parameters and optimizer state.
    """
    if grad not in ("autodiff", "manual"):
        raise ValueError(f"grad must be 'autodiff' or 'manual', got {grad!r}.")
    X, y = _paired_rows(X, y, min_rows=1)
    n = X.shape[0]
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(
            f"initial_epoch must be in [0, epochs={epochs}], got {initial_epoch}."
        )
    if patience is not None and dev is None:
        raise ValueError("patience (early stopping) needs a dev set: pass dev=(X, y).")
    if mesh is not None:
        axes = getattr(mesh, "axis_names", type(mesh).__name__)
        if not isinstance(mesh, jax.sharding.Mesh) or "data" not in axes:
            raise ValueError(f"mesh must be a Mesh with a 'data' axis, got {axes}.")
        n_dev = mesh.shape["data"]
        if batch_size % n_dev:
            raise ValueError(
                f"batch_size={batch_size} does not divide across the {n_dev} "
                f"devices of the mesh's 'data' axis: use a multiple of {n_dev}."
            )
    if compute_dtype is not None and not jnp.issubdtype(compute_dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a float dtype, got {compute_dtype!r}.")
    loss_obj = _losses.get(loss)
    blocks = None if blocks is None else list(blocks)
    if blocks is not None and state is None:
        state = [{}] * len(blocks)
    kw = dict(activation=activation, output=output, l1=l1, l2=l2, drop_rate=drop_rate)
    model = _make_model(blocks, grad, loss_obj, kw)
    if compute_dtype is not None:
        low = _make_model(
            blocks, grad, _float32_loss(loss_obj), {**kw, "l1": 0.0, "l2": 0.0}
        )
        loss_and_grad = _mixed_precision(low.loss_and_grad, compute_dtype, l1, l2)
    else:
        loss_and_grad = model.loss_and_grad
    if mesh is not None:
        batch_axis = NamedSharding(mesh, P("data"))
        shard = lambda a: jax.lax.with_sharding_constraint(a, batch_axis)  # noqa: E731
    else:
        shard = lambda a: a  # noqa: E731
    padded = not drop_remainder and n % batch_size != 0
    if padded and jax.tree.leaves(state):
        raise ValueError(
            f"{n} examples do not split into batches of {batch_size}, and the last "
            "batch would be padded: the padding is masked out of the loss but not "
            "out of the batch statistics of blocks with state (BatchNorm). Pass "
            "drop_remainder=True or a batch size that divides the data."
        )
    key_shuffle, key_dropout = jax.random.split(key)

    def epoch_fn(params, opt_state, state, epoch, X, y):
        idx, mask = epoch_batches(
            jax.random.fold_in(key_shuffle, epoch), n, batch_size, drop_remainder
        )
        key_epoch = jax.random.fold_in(key_dropout, epoch)

        def step(carry, batch):
            params, opt_state, state, bad = carry
            s, idx_b, mask_b = batch
            J, g, new_state = loss_and_grad(
                params,
                state,
                shard(X[idx_b]),
                shard(y[idx_b]),
                shard(mask_b) if padded else None,
                jax.random.fold_in(key_epoch, s),
            )
            g_norm = _optim.global_norm(g)
            ok = jnp.isfinite(J) & jnp.isfinite(g_norm) & (bad < 0)
            bad = jnp.where((bad < 0) & ~ok, s, bad)

            def update(operands):
                g, params, opt_state, _, new_state = operands
                updates, opt_state = optimizer.update(g, opt_state, params)
                return _optim.apply_updates(params, updates), opt_state, new_state

            # A branch rather than a select of old and new values: the update
            # then happens in place (a select costs ~15% of a small step on CPU).
            carry = jax.lax.cond(
                ok, update, lambda op: op[1:4], (g, params, opt_state, state, new_state)
            )
            return (*carry, bad), (J, g_norm, ok)

        steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
        init = (params, opt_state, state, jnp.asarray(-1, jnp.int32))
        (params, opt_state, state, bad), (J, g_norm, ok) = jax.lax.scan(
            step, init, (steps, idx, mask)
        )
        count = jnp.maximum(jnp.sum(ok), 1).astype(J.dtype)
        metrics = {
            "train_loss": jnp.sum(jnp.where(ok, J, 0)) / count,
            "grad_norm": jnp.sum(jnp.where(ok, g_norm, 0)) / count,
        }
        return params, opt_state, state, bad, metrics

    run_epoch = jax.jit(epoch_fn, donate_argnums=(0, 1, 2))

    @jax.jit
    def eval_fn(params, state, X, y):
        out = model.outputs(params, state, X)
        Y = _losses.targets(loss_obj, out, y)
        return loss_obj.fn(out, Y), _accuracy(loss_obj, out, Y)

    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
    params = copy(params)
    opt_state = optimizer.init(params) if opt_state is None else copy(opt_state)
    state = copy(state)
    if mesh is not None:
        params, opt_state, state, X, y = jax.device_put(
            (params, opt_state, state, X, y), NamedSharding(mesh, P())
        )
    if dev is not None:
        X_dev, y_dev = jnp.asarray(dev[0]), jnp.asarray(dev[1])
        if mesh is not None:
            X_dev, y_dev = jax.device_put((X_dev, y_dev), NamedSharding(mesh, P()))
    show = sys.stderr.isatty() if progress is None else progress
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    best_loss, best_epoch, best_params, stopped_early = math.inf, None, None, False
    wait, start = 0, time.perf_counter()

    for epoch in range(initial_epoch, epochs):
        t0 = time.perf_counter()
        params, opt_state, state, bad, metrics = run_epoch(
            params, opt_state, state, np.int32(epoch), X, y
        )
        bad = int(bad)
        if bad >= 0:
            if show:
                print(file=sys.stderr)
            raise NonFiniteError(epoch, bad, params, opt_state, state, history)
        train_loss, train_acc = eval_fn(params, state, X, y)
        dev_loss, dev_acc = (
            eval_fn(params, state, X_dev, y_dev) if dev else (math.nan,) * 2
        )
        try:
            lr = float(_optim.current_learning_rate(opt_state))
        except ValueError:
            lr = math.nan
        record = {
            "epoch": epoch,
            "train_loss": float(metrics["train_loss"]),
            "train_accuracy": _nan_if_negative(train_acc),
            "dev_loss": float(dev_loss),
            "dev_accuracy": _nan_if_negative(dev_acc),
            "learning_rate": lr,
            "grad_norm": float(metrics["grad_norm"]),
            "seconds": time.perf_counter() - t0,
        }
        for k in HISTORY_KEYS:
            history[k].append(record[k])
        if show:
            line = _progress_line(
                epoch, epochs, record, time.perf_counter() - start, initial_epoch
            )
            print("\r" + line, end="", file=sys.stderr, flush=True)
        if dev is not None and record["dev_loss"] < best_loss:
            best_loss, best_epoch, wait = record["dev_loss"], epoch, 0
            if patience is not None:
                best_params = copy(params)
        elif dev is not None:
            wait += 1
        if callback is not None and callback(record, params, opt_state):
            stopped_early = True
            break
        if patience is not None and wait >= patience:
            stopped_early = True
            break
    if show:
        print(file=sys.stderr)
    if best_params is not None:
        params = best_params
    return FitResult(
        params,
        opt_state,
        None if blocks is None else state,
        history,
        best_epoch,
        stopped_early,
    )
