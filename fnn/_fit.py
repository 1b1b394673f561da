"""The training loop: epochs of mini-batch gradient descent, one compiled call each.

[Deep Learning 2020, Learning algorithm] and [Laurent, SGD algorithm]: initialise θ;
for each epoch take a fresh random order of the training set, cut it into
mini-batches without replacement, and for each batch compute the loss and its
gradient and update θ; watch the dev loss and stop early when it no longer
improves ([Deep Learning 2020, Early stopping], [Laurent, Optimization algorithms]).

Design, invariants:
  * one epoch is one jitted call: ``lax.scan`` over the epoch's mini-batches,
    then the evaluation of its history entry, parameters, optimizer state and
    block state donated (no per-step Python);
  * one epoch body for every loop: ``_scan_batches`` (the step scanned over
    given mini-batches), ``_epoch`` (one shuffled epoch of them) and
    ``_epoch_record`` (the epoch and its history entry) are plain functions;
    ``fit`` jits ``_epoch_record`` once per epoch, :func:`fnn.train` scans it
    over the epochs inside one traced function (and :func:`fnn.sweep` vmaps
    that), so the three train the same epochs;
  * the gradient is ``jax.grad`` of the loss (``grad="autodiff"``) or fnn's
    manual backpropagation (``grad="manual"``); both see the same batches and
    dropout masks, so they train the same model;
  * randomness: ``key`` is split into a shuffling key and a dropout key; epoch e
    uses ``fold_in(·, e)`` and step s of it ``fold_in(·, s)``, so a run resumed at
    epoch e continues exactly as the uninterrupted run;
  * a batch size that does not divide the data gives a padded last batch whose
    padding is masked out of the loss: every example counts once per epoch
    (``drop_remainder=True`` drops the remainder instead);
  * a non-finite loss, gradient or update stops the step from being applied:
    the epoch finishes with the last finite parameters and
    :class:`NonFiniteError` names the epoch, the step and which of the three
    was non-finite, and carries those parameters and optimizer state;
  * compile once: the epoch and the evaluation are module-level jitted
    functions of a static configuration (model, optimizer, loss, sizes), so a
    second ``fit`` with the same configuration and shapes reuses them;
  * the data is checked on the host where it enters (finite inputs, labels in
    range, the dev set too), so the compiled loop carries no checks;
  * the whole loop state (epoch, parameters, optimizer and block state, best
    dev loss and parameters, patience counter, history) is a
    :class:`LoopState`: saved after any epoch and passed back as ``resume=``, it
    continues exactly as the uninterrupted run;
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

import inspect
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
from ._gradcheck import manual_vs_autodiff
from ._mlp import _block_model
from ._mlp import apply as _mlp_apply
from ._mlp import backprop as _backprop
from ._mlp import loss as _mlp_loss
from .data import check_examples, epoch_batches

__all__ = [
    "HISTORY_KEYS",
    "FitResult",
    "GradientMismatchError",
    "LoopState",
    "NonFiniteError",
    "evaluate",
    "fit",
]

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


class LoopState(NamedTuple):
    """Everything the training loop carries from one epoch to the next.

    Save it after any epoch (it is a pytree: :func:`fnn.checkpoint.save`) and
    pass it back as ``fit(..., resume=loop)`` to continue exactly as the
    uninterrupted run, early stopping included.

    Attributes:
      epoch: the next epoch to run (0-based).
      params, opt_state, state: the current parameters, optimizer state and
        block state (running statistics; ``None`` for the MLP form).
      best_loss: the lowest dev loss so far (``inf`` before any).
      best_epoch: its epoch (``-1`` before any).
      best_params: the parameters of that epoch (``None`` without ``patience``).
      wait: epochs since the best dev loss (the patience counter).
      history: ``{name: [one value per epoch run so far]}``.
    """

    epoch: int
    params: Any
    opt_state: Any
    state: Any
    best_loss: float
    best_epoch: int
    best_params: Any
    wait: int
    history: dict[str, list[float]]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (the best dev-loss ones with ``patience``).
      opt_state: the optimizer state after the last epoch run.
      state: block state (running statistics), ``None`` for an MLP.
      history: ``{name: [one value per epoch]}`` for the names in
        ``HISTORY_KEYS`` (accuracies are NaN for regression, dev values NaN
        without ``dev``), from the first epoch of the run (a resumed run
        includes the epochs before it).
      best_epoch: the epoch with the lowest dev loss (``None`` without ``dev``).
      stopped_early: whether early stopping or the callback ended training.
      loop: the final :class:`LoopState` (its ``params`` are the last epoch's).
    """

    params: Any
    opt_state: Any
    state: Any
    history: dict[str, list[float]]
    best_epoch: int | None
    stopped_early: bool
    loop: LoopState | None = None


_CAUSES = {1: "loss", 2: "gradient", 3: "update"}


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient or update during training.

    Attributes:
      epoch, step: where it happened (0-based; step within the epoch).
      cause: ``"loss"``, ``"gradient"`` or ``"update"``: the first of the three
        that was non-finite at that step.
      params, opt_state, state: the last finite values, before that step.
      history: the history of the epochs completed before.
    """

    def __init__(self, epoch, step, params, opt_state, state, history, cause="loss"):
        hint = {
            "loss": "the data was checked finite where it entered fit, so the "
            "model overflowed: lower the learning rate, clip the gradients "
            "(fnn.optim.clip_by_global_norm) or check the loss' inputs.",
            "gradient": "the loss was finite but its gradient was not: lower the "
            "learning rate or clip the gradients (fnn.optim.clip_by_global_norm).",
            "update": "the loss and gradient were finite but the optimizer's "
            "update was not: check the learning rate or schedule (nan or inf?) "
            "and the optimizer's hyperparameters.",
        }[cause]
        super().__init__(
            f"non-finite {cause} at epoch {epoch}, step {step}: training stopped "
            f"before applying that step; {hint} The last finite parameters and "
            "optimizer state are in this error's .params and .opt_state."
        )
        self.epoch, self.step, self.cause = epoch, step, cause
        self.params, self.opt_state, self.state = params, opt_state, state
        self.history = history


class GradientMismatchError(ValueError):
    """The manual gradient disagrees with autodiff on the first batch.

    Attributes:
      report: ``{leaf label: manual vs autodiff relative difference}``.
    """

    def __init__(self, report: dict[str, float], tol: float):
        bad = {k: v for k, v in report.items() if not v <= tol}
        lines = "\n".join(f"  {k}: {v:.2e}" for k, v in report.items())
        super().__init__(
            f"manual backprop disagrees with jax.grad on the first batch at "
            f"{', '.join(bad)} (relative difference above {tol:g}, in float64): "
            "a block's backward is wrong. Check it with fnn.nn.check_block(block, "
            "in_shape); train with grad='autodiff' meanwhile. Per leaf:\n" + lines
        )
        self.report = report


# --- the objective: loss and gradient of a model, as a static configuration ------
class _Objective(NamedTuple):
    """What is minimised, as hashable static data (the compile-cache key)."""

    model: Any  # an fnn.nn Block, or None for the MLP form
    activation: Any
    output: Any
    drop_rate: Any
    loss: Any
    l1: float
    l2: float
    grad: str
    compute_dtype: Any


def _mlp_keywords(obj: _Objective, loss) -> dict:
    return dict(
        activation=obj.activation,
        loss=loss,
        output=obj.output,
        drop_rate=obj.drop_rate,
    )


def _loss_and_grad_fn(obj: _Objective, loss_obj, l1, l2) -> Callable:
    """``(params, state, x, y, mask, key) -> (J, grads, new_state)``."""
    if obj.model is None:
        kw = dict(_mlp_keywords(obj, loss_obj), l1=l1, l2=l2, train=True)

        def mlp_loss_and_grad(params, state, x, y, mask, key):
            if obj.grad == "manual":
                J, g = _backprop(params, x, y, key=key, mask=mask, **kw)
            else:
                J, g = jax.value_and_grad(_mlp_loss)(
                    params, x, y, key=key, mask=mask, **kw
                )
            return J, g, state

        return mlp_loss_and_grad

    kw = dict(train=True, l1=l1, l2=l2)

    def loss_and_grad(params, state, x, y, mask, key):
        if obj.grad == "manual":
            (J, new_state), g = _nn.loss_and_grad(
                obj.model,
                params,
                x,
                y,
                loss_obj,
                state=state,
                key=key,
                mask=mask,
                **kw,
            )
        else:
            (J, new_state), g = jax.value_and_grad(_nn.loss_value, 1, has_aux=True)(
                obj.model,
                params,
                x,
                y,
                loss_obj,
                state=state,
                key=key,
                mask=mask,
                **kw,
            )
        return J, g, new_state

    return loss_and_grad


def _outputs(obj: _Objective, params, state, x):
    """The network output in evaluation mode (logits for a fused loss)."""
    if obj.model is None:
        loss_obj = _losses.get(obj.loss)
        last = "identity" if loss_obj.fused_output else (obj.output or "identity")
        return _mlp_apply(params, x, activation=obj.activation, output=last)
    return _nn.forward(obj.model, params, x, state=state, train=False)[0]


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


def _step_fn(obj: _Objective) -> Callable:
    """The step's loss and gradient, in ``compute_dtype`` when mixed precision:
    params, state and inputs cast down, gradients and state cast back; the
    penalty l1·Σ|W| + l2·ΣW² and its gradient in the parameters' dtype."""
    loss_obj = _losses.get(obj.loss)
    dtype = obj.compute_dtype
    if dtype is None:
        return _loss_and_grad_fn(obj, loss_obj, obj.l1, obj.l2)
    low = _loss_and_grad_fn(obj, _float32_loss(loss_obj), 0.0, 0.0)
    l1, l2 = obj.l1, obj.l2

    def mixed(params, state, x, y, mask, key):
        J, g, new_state = low(
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
        if _losses.has_penalty(l1, l2):
            J = J + _losses.weight_penalty(params, l1, l2)
            g = jax.tree.map(jnp.add, g, _losses.weight_penalty_grad(params, l1, l2))
        return J, g, new_state

    return mixed


def _accuracy(loss_obj, out, Y):
    """Fraction of correct predictions: argmax for softmax outputs, threshold 1/2
    (logit 0) for sigmoid outputs; NaN for regression losses."""
    if loss_obj.fused_output == "softmax":
        return jnp.mean(jnp.argmax(out, -1) == jnp.argmax(Y, -1))
    if loss_obj.fused_output == "sigmoid":
        return jnp.mean((out > 0) == (Y > 0.5))
    return -jnp.ones((), out.dtype)  # no accuracy: reported as NaN on the host


# --- one epoch: the body shared by fit (one compiled call per epoch) and by the
# --- pure training function fnn.train (a scan over epochs) -----------------------
class _EpochConfig(NamedTuple):
    objective: _Objective
    optimizer: Any
    n: int
    batch_size: int
    drop_remainder: bool
    padded: bool
    mesh: Any


def _train_step(cfg, careful, loss_and_grad, shard, key_epoch, carry, batch):
    """One training step: the body of the epoch's (and a streamed chunk's) scan.

    ``carry`` is ``(params, opt_state, state, bad, cause)``; ``batch`` is
    ``(s, x_b, y_b, mask_b)``: the step number within the epoch, the batch's
    inputs and targets, and its padding mask. Returns the new carry and the
    step's ``(J, g_norm, applied)``.
    """
    optimizer = cfg.optimizer
    params, opt_state, state, bad, cause = carry
    s, x_b, y_b, mask_b = batch
    inputs = (
        shard(x_b),
        shard(y_b),
        shard(mask_b) if cfg.padded else None,
        jax.random.fold_in(key_epoch, s),
    )
    J, g, new_state = loss_and_grad(params, state, *inputs)

    def grad_fn(p, *_):  # the batch's gradient elsewhere (SAM's second pass)
        return loss_and_grad(p, state, *inputs)[1]

    g_norm = _optim.global_norm(g)
    J_ok, g_ok = jnp.isfinite(J), jnp.isfinite(g_norm)
    ok = J_ok & g_ok & (bad < 0)

    def update(operands):
        g, params, opt_state, state, new_state = operands
        updates, new_opt_state = optimizer.update(
            g, opt_state, params, grad_fn=grad_fn
        )
        new_params = _optim.apply_updates(params, updates)
        if not careful:
            return new_params, new_opt_state, new_state, jnp.asarray(True)
        u_ok = jnp.isfinite(_optim.global_norm(updates))
        return jax.lax.cond(
            u_ok,
            lambda: (new_params, new_opt_state, new_state, u_ok),
            lambda: (params, opt_state, state, u_ok),
        )

    # A branch rather than a select of old and new values: the update then
    # happens in place (a select costs ~15% of a small step on CPU).
    params, opt_state, state, u_ok = jax.lax.cond(
        ok,
        update,
        lambda op: (*op[1:4], jnp.asarray(True)),
        (g, params, opt_state, state, new_state),
    )
    applied = ok & u_ok
    first = (bad < 0) & ~applied
    this_cause = jnp.where(~J_ok, 1, jnp.where(~g_ok, 2, 3)).astype(jnp.int32)
    cause = jnp.where(first, this_cause, cause)
    bad = jnp.where(first, s, bad)
    return (params, opt_state, state, bad, cause), (J, g_norm, applied)


def _scan_batches(cfg: _EpochConfig, careful: bool, carry, X, y, batches, key_epoch):
    """``lax.scan`` of the training step over mini-batches.

    Args:
      carry: ``(params, opt_state, state, bad, cause)``; ``bad`` the first
        non-finite step so far (−1 for none), ``cause`` its cause (1 loss,
        2 gradient, 3 update).
      X, y: the examples the batches index.
      batches: ``(steps (S,), idx (S, B), mask (S, B))``: the step numbers (the
        dropout key of step s is ``fold_in(key_epoch, s)``), the rows of ``X``
        of each batch and its padding mask.

    Returns:
      ``(carry, (J (S,), grad_norm (S,), applied (S,)))``. Once a step is
      non-finite the later steps are not applied.
    """
    loss_and_grad = _step_fn(cfg.objective)
    if cfg.mesh is not None:
        batch_axis = NamedSharding(cfg.mesh, P("data"))
        shard = lambda a: jax.lax.with_sharding_constraint(a, batch_axis)  # noqa: E731
    else:
        shard = lambda a: a  # noqa: E731

    def step(carry, batch):
        s, idx_b, mask_b = batch
        batch = (s, X[idx_b], y[idx_b], mask_b)
        return _train_step(cfg, careful, loss_and_grad, shard, key_epoch, carry, batch)

    return jax.lax.scan(step, carry, batches)


def _epoch(
    cfg: _EpochConfig, careful: bool, params, opt_state, state, epoch, X, y, keys
):
    """One epoch: :func:`_scan_batches` over the epoch's shuffled mini-batches.

    The fast form (``careful=False``) skips a step whose loss or gradient is
    non-finite (and every later step), and reports whether the parameters are
    finite at the end. The careful form, a replay from the epoch's start when
    something was not finite, also checks each update before applying it and
    reports the first bad step and its cause (1 loss, 2 gradient, 3 update):
    the update check costs a pass over the parameters every step, which the
    fast form saves.

    Returns:
      ``(params, opt_state, state, bad, cause, finite, metrics)``: ``bad`` the
      first non-finite step (−1 for none), ``finite`` whether the parameters
      are finite at the end, ``metrics`` the mean loss and gradient norm of the
      applied steps.
    """
    key_shuffle, key_dropout = keys
    idx, mask = epoch_batches(
        jax.random.fold_in(key_shuffle, epoch),
        cfg.n,
        cfg.batch_size,
        cfg.drop_remainder,
    )
    key_epoch = jax.random.fold_in(key_dropout, epoch)
    steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
    none = jnp.asarray(-1, jnp.int32)
    init = (params, opt_state, state, none, jnp.asarray(0, jnp.int32))
    (params, opt_state, state, bad, cause), (J, g_norm, ok) = _scan_batches(
        cfg, careful, init, X, y, (steps, idx, mask), key_epoch
    )
    count = jnp.maximum(jnp.sum(ok), 1).astype(J.dtype)
    metrics = {
        "train_loss": jnp.sum(jnp.where(ok, J, 0)) / count,
        "grad_norm": jnp.sum(jnp.where(ok, g_norm, 0)) / count,
    }
    finite = jnp.isfinite(_optim.global_norm(params))
    return params, opt_state, state, bad, cause, finite, metrics


def _evaluate_body(obj: _Objective, params, state, X, y):
    """``(data loss, accuracy)`` in evaluation mode (accuracy −1: none)."""
    loss_obj = _losses.get(obj.loss)
    out = _outputs(obj, params, state, X)
    Y = _losses.targets(loss_obj, out, y)
    return loss_obj.fn(out, Y), _accuracy(loss_obj, out, Y)


_evaluate = jax.jit(_evaluate_body, static_argnums=0)


def _eval_objective(obj: _Objective) -> _Objective:
    """The objective of the history's evaluation: data loss, full precision."""
    return obj._replace(l1=0.0, l2=0.0, grad="autodiff", compute_dtype=None)


def _learning_rate(opt_state) -> jax.Array | None:
    """The optimizer's current learning rate, ``None`` when its state holds none."""
    try:
        return _optim.current_learning_rate(opt_state)
    except ValueError:
        return None


def _epoch_record(
    cfg: _EpochConfig, careful: bool, params, opt_state, state, epoch, X, y, keys, dev
):
    """One epoch and its history entry: :func:`_epoch`, then the evaluation of
    the trained parameters on the training set and on ``dev`` (``(X_dev,
    y_dev)`` or ``None``).

    Returns:
      ``(params, opt_state, state, bad, cause, finite, record)`` with ``record``
      ``{name: scalar}`` for the names of ``HISTORY_KEYS`` that have a value
      (no ``"epoch"`` and ``"seconds"``; no accuracies for a regression loss,
      no dev values without ``dev``, no learning rate when the optimizer state
      holds none). Absent rather than NaN: the compiled values stay finite.
    """
    params, opt_state, state, bad, cause, finite, metrics = _epoch(
        cfg, careful, params, opt_state, state, epoch, X, y, keys
    )
    eval_obj = _eval_objective(cfg.objective)
    has_accuracy = _losses.get(eval_obj.loss).fused_output in ("softmax", "sigmoid")
    # The history's train loss is the epoch's mean step loss (the penalised
    # objective, in training mode); the training set's evaluation gives the
    # accuracy (its unused loss is compiled away).
    record = {"train_loss": metrics["train_loss"]}
    if has_accuracy:
        record["train_accuracy"] = _evaluate_body(eval_obj, params, state, X, y)[1]
    if dev is not None:
        dev_loss, dev_acc = _evaluate_body(eval_obj, params, state, *dev)
        record["dev_loss"] = dev_loss
        if has_accuracy:
            record["dev_accuracy"] = dev_acc
    lr = _learning_rate(opt_state)
    if lr is not None:
        record["learning_rate"] = lr
    record["grad_norm"] = metrics["grad_norm"]
    return params, opt_state, state, bad, cause, finite, record


# fit's compiled epoch: parameters, optimizer state and block state donated.
_run_epoch = jax.jit(_epoch_record, static_argnums=(0, 1), donate_argnums=(2, 3, 4))


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


def _objective(
    blocks, activation, loss, output, l1, l2, drop_rate, grad, compute_dtype, where
) -> _Objective:
    model = None
    if blocks is not None:
        model = _block_model(
            blocks, where, activation=activation, output=output, drop_rate=drop_rate
        )
        activation, output, drop_rate = "relu", None, 0.0
    if isinstance(drop_rate, list | tuple):
        drop_rate = tuple(float(r) for r in drop_rate)
    _losses.get(loss)  # an unknown name fails here, not inside jit
    return _Objective(
        model,
        activation,
        output,
        drop_rate,
        loss,
        float(l1),
        float(l2),
        grad,
        compute_dtype,
    )


def _n_outputs(obj: _Objective, params, state, X: np.ndarray) -> int:
    """The model's output width, found abstractly (no data is touched)."""
    x = jax.ShapeDtypeStruct((1, *X.shape[1:]), X.dtype)
    out = jax.eval_shape(lambda p, s, x: _outputs(obj, p, s, x), params, state, x)
    return out.shape[-1]


def _host_check(obj, params, state, X, y, name):
    """Validate a data set on the host where it enters, before JAX sees it (see
    :func:`fnn.data.check_examples`); returns ``(X, y)`` as device arrays."""
    X, y = np.asarray(X), np.asarray(y)
    check_examples(
        X,
        y,
        loss=_losses.get(obj.loss),
        n_outputs=_n_outputs(obj, params, state, X) if X.ndim and len(X) else None,
        name=name,
    )
    return jnp.asarray(X), jnp.asarray(y)


def evaluate(
    params: Any,
    X: jax.Array,
    y: Any,
    *,
    activation="relu",
    loss="cross_entropy",
    output=None,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
) -> dict[str, float]:
    """Loss and accuracy of a model on ``(X, y)`` in evaluation mode.

    Args:
      params: MLP parameters, or the parameters of ``blocks``.
      X: ``(m, ...)`` inputs; y: targets as for :func:`fnn.loss`.
      activation, loss, output: as for :func:`fnn.loss` (MLP form).
      blocks, state: a model (a block or a list of blocks) and its state
        instead of the MLP form.

    Returns:
      ``{"loss": data loss without penalty, "accuracy": fraction correct, NaN
      for regression losses}``.

    Raises:
      ValueError: an empty set, non-finite inputs or labels that do not fit the
        outputs (naming the row), checked on the host.
    """
    obj = _objective(
        blocks, activation, loss, output, 0.0, 0.0, 0.0, "autodiff", None, "evaluate"
    )
    X, y = _host_check(obj, params, state, X, y, "evaluation set")
    J, acc = _evaluate(obj, params, state, X, y)
    return {"loss": float(J), "accuracy": _nan_if_negative(acc)}


def _check_gradients(obj, params, state, X, y, mask, key):
    """Manual against autodiff gradients of the first batch, in float64."""
    kw = (
        dict(blocks=obj.model, state=state)
        if obj.model is not None
        else _mlp_keywords(obj, obj.loss)
    )
    kw.update(loss=obj.loss, l1=obj.l1, l2=obj.l2, key=key, train=True, mask=mask)
    report = manual_vs_autodiff(params, X, y, **kw)
    tol = 1e-6
    if not all(v <= tol for v in report.values()):
        raise GradientMismatchError(report, tol)


def _positive_int(name, value) -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is an
    integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _default_check_gradients(obj: _Objective, grad: str) -> bool:
    """check_gradients' default: on for manual gradients of a model holding a
    block that is not fnn's own."""
    return grad == "manual" and (
        obj.model is not None and not _nn.is_builtin(obj.model)
    )


def _check_first_batch(cfg, params, state, keys, epoch, take, batches=epoch_batches):
    """:func:`_check_gradients` on the first mini-batch of ``epoch``: the
    batch, padding mask and dropout key that training will use.

    ``keys`` are the run's ``(shuffle, dropout)`` keys; ``take(indices)``
    returns that batch's ``(X, y)``; ``batches`` is :func:`epoch_batches` or a
    compiled copy of it.
    """
    idx, mask = batches(
        jax.random.fold_in(keys[0], epoch), cfg.n, cfg.batch_size, cfg.drop_remainder
    )
    x0, y0 = take(idx[0])
    _check_gradients(
        cfg.objective,
        params,
        state,
        x0,
        y0,
        mask[0] if cfg.padded else None,
        jax.random.fold_in(jax.random.fold_in(keys[1], epoch), 0),
    )


def _callback_takes_loop(callback) -> bool:
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 4 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


class _EpochEnd:
    """The host loop's bookkeeping at the end of an epoch, for fit and fit_stream.

    Holds the history, the early-stopping record (best dev loss, its epoch, its
    parameters, the epochs waited) and the start time of the run; :meth:`end`
    records one epoch, updates early stopping, calls the callback and says
    whether to stop. Invariant: ``loop_state(e, ...)`` resumes exactly at epoch
    ``e`` with the bookkeeping as it stands.
    """

    def __init__(
        self, resume, dev, patience, callback, has_state, epochs, initial_epoch, show
    ):
        """``show``: ``None`` or a function given each epoch's progress line."""
        self.dev, self.patience, self.callback = dev, patience, callback
        self.has_state, self.show = has_state, show
        self.epochs, self.initial_epoch = epochs, initial_epoch
        self.pass_loop = callback is not None and _callback_takes_loop(callback)
        if resume is not None:
            self.history = {k: list(resume.history.get(k, [])) for k in HISTORY_KEYS}
            self.best_loss = float(resume.best_loss)
            self.best_epoch = int(resume.best_epoch)
            self.best_params = (
                None if resume.best_params is None else _copy(resume.best_params)
            )
            self.wait = int(resume.wait)
        else:
            self.history = {k: [] for k in HISTORY_KEYS}
            self.best_loss, self.best_epoch, self.best_params = math.inf, -1, None
            self.wait = 0
        self.start = time.perf_counter()

    def loop_state(self, epoch, params, opt_state, state) -> LoopState:
        """The :class:`LoopState` that resumes at ``epoch``."""
        return LoopState(
            epoch,
            params,
            opt_state,
            state if self.has_state else None,
            self.best_loss,
            self.best_epoch,
            self.best_params,
            self.wait,
            {k: list(v) for k, v in self.history.items()},
        )

    def end(self, record, params, opt_state, state, *, p_eval=None) -> bool:
        """Record the epoch, show its progress line, update early stopping and
        call back; returns True to stop.

        ``record`` is the epoch's complete history entry (all ``HISTORY_KEYS``);
        ``p_eval`` the parameters that were evaluated (default ``params``): the
        ones kept as the best and given to the callback.
        """
        p_eval = params if p_eval is None else p_eval
        epoch = record["epoch"]
        for k in HISTORY_KEYS:
            self.history[k].append(record[k])
        if self.show is not None:
            elapsed = time.perf_counter() - self.start
            self.show(
                _progress_line(
                    epoch, self.epochs, record, elapsed, self.initial_epoch
                )
            )
        if self.dev is not None and record["dev_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = record["dev_loss"], epoch, 0
            if self.patience is not None:
                self.best_params = _copy(p_eval)
        elif self.dev is not None:
            self.wait += 1
        stop = self.patience is not None and self.wait >= self.patience
        if self.callback is not None:
            args = (record, p_eval, opt_state)
            if self.pass_loop:
                args += (self.loop_state(epoch + 1, params, opt_state, state),)
            if self.callback(*args):
                stop = True
        return stop

    def result(self, params, opt_state, state, stopped_early, loop) -> "FitResult":
        """The :class:`FitResult`: the best epoch's parameters under early stopping."""
        return FitResult(
            params if self.best_params is None else self.best_params,
            opt_state,
            state if self.has_state else None,
            self.history,
            self.best_epoch if self.best_epoch >= 0 else None,
            stopped_early,
            loop,
        )


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
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
    grad: str = "autodiff",
    check_gradients: bool | None = None,
    patience: int | None = None,
    opt_state: Any = None,
    initial_epoch: int = 0,
    resume: LoopState | None = None,
    progress: bool | None = None,
    callback: Callable[..., bool | None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
) -> FitResult:
    """Train by mini-batch gradient descent, one compiled ``lax.scan`` per epoch.

    ``fit`` is the host loop: progress bar, callbacks, exact resume, a raised
    :class:`NonFiniteError`, data parallelism. The same epochs as one pure,
    jittable and vmappable function are :func:`fnn.train` (early stopping
    inside the compiled loop, the history as arrays); a population of runs
    over seeds and hyperparameters in one compiled call is :func:`fnn.sweep`.

    Args:
      params: initial parameters: an MLP's ``[{"W", "b"}, ...]`` or, with
        ``blocks``, the model's parameters. Not modified (fit works on a copy).
      optimizer: an :class:`fnn.optim.Optimizer`; its ``update`` also receives
        ``grad_fn=`` (parameters -> the batch's gradient), which
        :func:`fnn.optim.sam` uses for its second gradient and the others ignore.
      X: training inputs ``(n, ...)``; y: training targets, ``(n,)`` integer
        labels or ``(n, k)`` rows. Checked on the host: finite inputs, labels
        that fit the outputs (the message names the row). Or a source that
        stays on the host (:mod:`fnn.stream`: a memmap, IDX files, ``.npy``
        shards, an iterator of batches) with ``y=None``: then fit runs
        :func:`fnn.stream.fit_stream` with these arguments.
      key: root PRNG key for shuffling and dropout.
      epochs: train until this epoch count (epochs ``initial_epoch .. epochs-1``).
      batch_size: examples per mini-batch (at most ``n`` are used).
      drop_remainder: drop the last partial batch instead of masking its padding.
      dev: ``(X_dev, y_dev)`` evaluated after every epoch (loss, accuracy) and
        monitored by early stopping; checked on the host like the training set.
      activation, loss, output, l1, l2, drop_rate: the objective, as for
        :func:`fnn.loss` (``activation``, ``output`` and ``drop_rate`` apply to
        the MLP form only; a model carries its own).
      blocks, state: a model (a block such as :func:`fnn.mlp` or a
        ``Sequential``, or a list of blocks) and its state (running
        statistics), to train instead of the MLP form.
      grad: ``"autodiff"`` (``jax.grad``) or ``"manual"`` (fnn's backprop).
      check_gradients: before the first update, compare the manual and the
        automatic gradient of the first batch in float64 and raise
        :class:`GradientMismatchError` naming the layer and leaf that disagree.
        Default: on with ``grad="manual"`` for a model holding any block that is
        not fnn's own (a user's block), off otherwise; costs one float64
        compilation of the loss.
      patience: stop after this many epochs without a lower dev loss and return
        the parameters of the best epoch (needs ``dev``).
      opt_state: optimizer state to resume from (default ``optimizer.init``).
      initial_epoch: the epoch to resume at (needs ``opt_state``, so that the
        schedule and moments continue).
      resume: a :class:`LoopState` (``FitResult.loop``, or the callback's
        ``loop``) to continue exactly; it replaces ``params``' values,
        ``opt_state``, ``state`` and ``initial_epoch``.
      progress: show a progress bar on stderr; default: when stderr is a terminal.
      callback: ``callback(record, params, opt_state)`` or
        ``callback(record, params, opt_state, loop)`` after every epoch, with
        ``record`` the epoch's history entry and ``loop`` the
        :class:`LoopState` to save for an exact resume; returning ``True``
        stops training.
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
        parameters' dtype. ``None``: everything in the parameters' dtype.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: bad arguments (shapes, sizes, names, data), named.
      GradientMismatchError: the manual gradient disagrees with autodiff on the
        first batch (with ``check_gradients``).
      NonFiniteError: a non-finite loss, gradient or update; it carries the
        epoch, the step, the cause and the last finite parameters and optimizer
        state.
    """
    # --- data that stays on the host: fnn.stream's chunked loop -----------------
    from . import stream as _stream

    if _stream.is_source(X):
        return _stream.fit_stream(
            params,
            optimizer,
            X,
            y,
            **{
                name: value
                for name, value in locals().items()
                if name not in ("params", "optimizer", "X", "y", "_stream")
            },
        )
    # ----------------------------------------------------------------------------
    if grad not in ("autodiff", "manual"):
        raise ValueError(f"grad must be 'autodiff' or 'manual', got {grad!r}.")
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    if resume is not None:
        if not isinstance(resume, LoopState):
            raise ValueError(
                f"resume must be a LoopState (FitResult.loop), got "
                f"{type(resume).__name__}."
            )
        if opt_state is not None or initial_epoch:
            raise ValueError(
                "resume= carries the optimizer state and the epoch: do not pass "
                "opt_state or initial_epoch with it."
            )
        initial_epoch = int(resume.epoch)
    elif initial_epoch and opt_state is None:
        raise ValueError(
            f"initial_epoch={initial_epoch} without opt_state would restart the "
            "optimizer (its step count, moments and schedule) at step 0: pass the "
            "saved opt_state, or resume=loop_state (FitResult.loop)."
        )
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(
            f"initial_epoch must be in [0, epochs={epochs}], got {initial_epoch}."
        )
    if patience is not None and dev is None:
        raise ValueError("patience (early stopping) needs a dev set: pass dev=(X, y).")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
    ):
        raise ValueError(f"patience must be a positive integer, got {patience!r}.")
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
    obj = _objective(
        blocks, activation, loss, output, l1, l2, drop_rate, grad, compute_dtype, "fit"
    )
    if obj.model is not None and state is None:
        state = _nn.init(jax.random.key(0), obj.model, jnp.shape(X)[1:])[1]
        if jax.tree.leaves(state):
            raise ValueError(
                "this model has state (e.g. BatchNorm running statistics): pass "
                "state=... from fnn.nn.init."
            )
    if resume is not None:
        jax.tree.map(lambda a, b: None, params, resume.params)  # same structure
        params, opt_state, state = resume.params, resume.opt_state, resume.state
    X, y = _host_check(obj, params, state, X, y, "training set")
    if dev is not None:
        if not isinstance(dev, tuple | list) or len(dev) != 2:
            raise ValueError("dev must be a pair (X_dev, y_dev).")
        X_dev, y_dev = _host_check(obj, params, state, *dev, "dev set")
    n = X.shape[0]
    batch_size = min(int(batch_size), n)
    if mesh is not None and batch_size % mesh.shape["data"]:
        raise ValueError(
            f"{n} examples are fewer than batch_size and do not divide across the "
            f"{mesh.shape['data']} devices: use more examples or a smaller mesh."
        )
    padded = not drop_remainder and n % batch_size != 0
    if padded and jax.tree.leaves(state):
        raise ValueError(
            f"{n} examples do not split into batches of {batch_size}, and the last "
            "batch would be padded: the padding is masked out of the loss but not "
            "out of the batch statistics of blocks with state (BatchNorm). Pass "
            "drop_remainder=True or a batch size that divides the data."
        )
    cfg = _EpochConfig(
        obj, optimizer, n, batch_size, bool(drop_remainder), padded, mesh
    )
    keys = tuple(jax.random.split(key))

    if check_gradients is None:
        check_gradients = _default_check_gradients(obj, grad)
    if check_gradients and initial_epoch < epochs:
        _check_first_batch(
            cfg, params, state, keys, initial_epoch, lambda i: (X[i], y[i])
        )

    params = _copy(params)
    opt_state = optimizer.init(params) if opt_state is None else _copy(opt_state)
    state = _copy(state)
    if mesh is not None:
        params, opt_state, state, X, y = jax.device_put(
            (params, opt_state, state, X, y), NamedSharding(mesh, P())
        )
        if dev is not None:
            X_dev, y_dev = jax.device_put((X_dev, y_dev), NamedSharding(mesh, P()))
    dev_set = None if dev is None else (X_dev, y_dev)
    show = sys.stderr.isatty() if progress is None else progress

    def show_line(line):
        print("\r" + line, end="", file=sys.stderr, flush=True)

    books = _EpochEnd(
        resume,
        dev,
        patience,
        callback,
        obj.model is not None,
        epochs,
        initial_epoch,
        show_line if show else None,
    )
    stopped_early = False

    epoch = initial_epoch
    for epoch in range(initial_epoch, epochs):
        t0 = time.perf_counter()
        start_of_epoch = _copy((params, opt_state, state))  # the run donates its own
        params, opt_state, state, bad, cause, finite, values = _run_epoch(
            cfg, False, params, opt_state, state, np.int32(epoch), X, y, keys, dev_set
        )
        if int(bad) >= 0 or not bool(finite):
            # Replay the epoch from its start, checking every update, to find
            # the first non-finite step and the parameters just before it.
            params, opt_state, state, bad, cause, _, _ = _run_epoch(
                cfg, True, *start_of_epoch, np.int32(epoch), X, y, keys, dev_set
            )
            if show:
                print(file=sys.stderr)
            raise NonFiniteError(
                epoch,
                int(bad),
                params,
                opt_state,
                state,
                books.history,
                _CAUSES[int(cause)],
            )
        record = {
            "epoch": epoch,
            **{k: float(values.get(k, math.nan)) for k in HISTORY_KEYS[1:-1]},
            "seconds": time.perf_counter() - t0,
        }
        if books.end(record, params, opt_state, state):
            stopped_early = True
            epoch += 1
            break
    else:
        epoch = epochs
    if show:
        print(file=sys.stderr)
    loop = books.loop_state(epoch, params, opt_state, state)
    return books.result(params, opt_state, state, stopped_early, loop)
