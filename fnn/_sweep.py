"""Populations in one call: P training runs of :func:`fnn.train`, vmapped and jitted.

A population of models is an ordinary array axis: parameters stacked along a
leading axis ``(P, ...)``, one key per member, hyperparameters as ``(P,)``
arrays. :func:`sweep` checks the data on the host once, then runs
``jax.jit(jax.vmap(train))`` with the data shared (``in_axes=None``: one copy
on the device, not P), and returns every member's parameters, history and
best epoch.

Invariants:
  * member i of ``sweep(...)`` is ``fnn.fit`` (or :func:`fnn.train`) run alone
    with member i's parameters, key and hyperparameters, up to the order of
    floating-point sums that batching may change (float32 tolerance);
  * one compilation per configuration: the model, loss, sizes, the optimizer
    (or optimizer factory) and the population size are the cache key; the
    hyperparameter values, parameters, keys and data are arguments, so a
    second sweep over other learning rates or seeds reuses the compiled run;
  * any mix: seeds (rows of ``key``), initial parameters (stack the outputs of
    any initializers, schemes mixed; ``jax.jit(jax.vmap(init))`` builds a
    group in one compiled call), and every numeric hyperparameter that
    the optimizer factory takes (learning rate, momentum, weight decay, ...).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import nn as _nn
from . import optim as _optim
from ._fit import (
    HISTORY_KEYS,
    _check_first_batch,
    _default_check_gradients,
    _host_check,
)
from ._train import (
    TrainResult,
    _empty_state,
    _epoch_config,
    _run,
    _run_config,
    _RunConfig,
)

__all__ = ["SweepResult", "sweep"]


class SweepResult(NamedTuple):
    """What :func:`sweep` returns: every field stacked over the P members.

    Attributes:
      params: ``(P, ...)`` the parameters ``fit`` would return for each member
        (best dev-loss epoch with ``patience``, else the last).
      last_params: ``(P, ...)`` the parameters after each member's last epoch.
      opt_state, state: ``(P, ...)`` optimizer and block state (``state``
        ``None`` for the MLP form).
      history: ``{name: (P, epochs) numpy float array}`` for the names of
        ``FitResult.history`` but ``"seconds"``, with the same values:
        NaN where ``fit`` has NaN (no dev set, no accuracy for a regression)
        and at the epochs a member did not run.
      best_epoch: ``(P,)`` int, the lowest dev loss' epoch, −1 without ``dev``.
      epochs_run: ``(P,)`` int, epochs each member trained.
      nonfinite_epoch: ``(P,)`` int, the epoch where a member met a non-finite
        loss, gradient or update (it stopped before it; −1 for none).
      hyperparams: ``{name: (P,) numpy array}``, as passed.
    """

    params: Any
    last_params: Any
    opt_state: Any
    state: Any
    history: dict[str, np.ndarray]
    best_epoch: np.ndarray
    epochs_run: np.ndarray
    nonfinite_epoch: np.ndarray
    hyperparams: dict[str, np.ndarray]


class _SweepConfig(NamedTuple):
    run: _RunConfig
    optimizer: Any  # an Optimizer, or a factory called with the hyperparameters
    factory: bool
    key_axis: Any  # 0: one key per member; None: one key for all


def _member(sweep_cfg: _SweepConfig, n, has_state, params, state, hp, key, X, y, dev):
    run = sweep_cfg.run
    optimizer = sweep_cfg.optimizer(**hp) if sweep_cfg.factory else sweep_cfg.optimizer
    cfg = _epoch_config(run, optimizer, n, has_state, "sweep")
    return _run(cfg, run, params, optimizer.init(params), state, X, y, dev, key)


def _population(sweep_cfg: _SweepConfig, params, state, hp, key, X, y, dev):
    n = X.shape[0]
    has_state = bool(jax.tree.leaves(state))
    member = lambda p, s, h, k: _member(  # noqa: E731
        sweep_cfg, n, has_state, p, s, h, k, X, y, dev
    )
    return jax.vmap(member, in_axes=(0, 0, 0, sweep_cfg.key_axis))(
        params, state, hp, key
    )


# Module level: a second sweep with the same configuration reuses the program.
_population_jit = jax.jit(_population, static_argnums=0)


def _size(tree, what: str) -> int | None:
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree.leaves(tree)}
    if None in sizes:
        raise ValueError(
            f"sweep: every leaf of {what} needs a leading member axis (P, ...); "
            "stack one entry per member, e.g. jax.vmap(init)(keys)."
        )
    if len(sizes) > 1:
        raise ValueError(
            f"sweep: the leaves of {what} disagree on the number of members "
            f"(leading axes {sorted(sizes)})."
        )
    return sizes.pop() if sizes else None


def sweep(
    params: Any,
    optimizer: "_optim.Optimizer | Callable[..., _optim.Optimizer]",
    X: jax.Array,
    y: Any,
    *,
    key: jax.Array,
    hyperparams: Mapping[str, Any] | None = None,
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
    check_gradients: bool | None = None,
    compute_dtype: Any = None,
) -> SweepResult:
    """Train a population of P models in one compiled call: ``vmap`` of
    :func:`fnn.train` over members, the data shared.

    Member i trains from ``params[i]`` with ``key[i]`` and the optimizer
    ``optimizer(**{name: values[i] for name, values in hyperparams.items()})``,
    exactly as ``fnn.fit(params[i], ..., key=key[i])`` would (same batches,
    dropout masks, early stopping), all members in one ``jax.jit(jax.vmap(...))``
    compiled once per configuration::

        lrs = jnp.repeat(jnp.array([0.01, 0.03, 0.1, 0.3]), 5)      # 4 rates
        seeds = jnp.tile(jnp.arange(5), 4)                           # x 5 seeds
        params = jax.jit(jax.vmap(lambda s: fnn.init_params(
            jax.random.key(s), [64, 128, 10], "he_normal")))(seeds)
        result = fnn.sweep(params, lambda lr: fnn.optim.sgd(lr, 0.9), X, y,
                           key=jax.vmap(jax.random.key)(seeds),
                           hyperparams={"lr": lrs}, epochs=20, dev=(Xd, yd),
                           patience=3)
        result.history["dev_loss"]   # (20, 20): member x epoch
        result.best_epoch            # (20,)

    Initialization schemes or scales are a property of the stacked parameters:
    build each group with its initializer and concatenate them along the
    member axis (``jax.tree.map(lambda *a: jnp.concatenate(a), p_a, p_b)``).

    Measured (``benchmarks/sweep.py``, 2-core CPU): the XOR initialization
    experiment, 40 runs of 1000 full-batch epochs, takes 1.6 s as one sweep
    call (compilation included) against 26.4 s as a loop of ``fit`` calls
    (16x), and 0.03 s against 22.4 s on a second call; 20 digits runs of up to
    20 epochs take 6.7 s against 10.8 s (1.6x). Details in the README's
    "Sweeps" section.

    Args:
      params: initial parameters stacked along a leading member axis ``(P, ...)``.
      optimizer: an :class:`fnn.optim.Optimizer` shared by every member, or a
        factory ``optimizer(**hyperparams_i) -> Optimizer`` called inside the
        compiled function with member i's (traced) hyperparameters. Pass the
        same object again to reuse the compilation.
      X, y: the training set, shared by every member (one copy on the device),
        checked on the host as ``fit`` checks it.
      key: ``(P,)`` PRNG keys, one per member (shuffling and dropout), or one
        key shared by all.
      hyperparams: ``{name: (P,) values}`` passed to ``optimizer`` (needs a
        factory).
      epochs, batch_size, drop_remainder, dev, patience, activation, loss,
        output, l1, l2, drop_rate, blocks, grad, compute_dtype: as for
        :func:`fnn.fit`, the same for every member.
      state: block state stacked ``(P, ...)`` for a model with state.
      check_gradients: as for ``fit``, on member 0's first batch.

    Returns:
      A :class:`SweepResult` (histories ``(P, epochs)``).

    Raises:
      ValueError: bad data (named row, as ``fit``), members that disagree in
        number, hyperparameters without a factory, bad static arguments.
      GradientMismatchError: with ``check_gradients``, as for ``fit``.

    References:
      [Deep Learning 2020, 6 "Early stopping"]; [Neacșu & Vasilescu,
      "Initialization mechanisms"] (an experiment over many seeds).
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
        where="sweep",
    )
    factory = not isinstance(optimizer, _optim.Optimizer)
    if factory and not callable(optimizer):
        raise ValueError(
            "sweep: optimizer must be an fnn.optim.Optimizer or a function of the "
            f"hyperparameters returning one, got {type(optimizer).__name__}."
        )
    hyperparams = dict(hyperparams or {})
    if hyperparams and not factory:
        raise ValueError(
            f"sweep: hyperparams {sorted(hyperparams)} need an optimizer factory, "
            "e.g. optimizer=lambda lr: fnn.optim.adam(lr)."
        )
    hp = {k: jnp.asarray(v) for k, v in hyperparams.items()}
    P = _size(params, "params")
    if P is None:
        raise ValueError("sweep: params has no arrays.")
    for name, v in hp.items():
        if v.shape != (P,):
            raise ValueError(
                f"sweep: hyperparams[{name!r}] must have shape ({P},) (one value "
                f"per member), got {v.shape}."
            )
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_ndim = key.ndim if typed else key.ndim - 1
    if key_ndim == 0:
        key_axis = None
    elif key_ndim == 1 and key.shape[0] == P:
        key_axis = 0
    else:
        raise ValueError(
            f"sweep: key must be one PRNG key or {P} keys (one per member), got "
            f"shape {key.shape}."
        )
    # Member 0's shapes: enough for the host checks (no device work).
    member0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
    state0 = None
    if state is not None:
        state0 = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state
        )
    if state is not None:
        size = _size(state, "state")
        if size not in (None, P):
            raise ValueError(f"sweep: state has {size} members, params {P}.")
    if state is None:  # a model without state: its empty structure
        state0 = state = _empty_state(run, None, np.shape(X)[1:], "sweep")
    X, y = _host_check(run.objective, member0, state0, X, y, "training set")
    if dev is not None:
        if not isinstance(dev, tuple | list) or len(dev) != 2:
            raise ValueError("sweep: dev must be a pair (X_dev, y_dev).")
        dev = _host_check(run.objective, member0, state0, *dev, "dev set")
    has_state = bool(jax.tree.leaves(state))
    cfg = _epoch_config(run, None, X.shape[0], has_state, "sweep")  # checks sizes
    if check_gradients is None:
        check_gradients = _default_check_gradients(run.objective, grad)
    if check_gradients:
        k0 = key if key_axis is None else key[0]
        _check_first_batch(
            cfg,
            jax.tree.map(lambda a: a[0], params),
            jax.tree.map(lambda a: a[0], state),
            jax.random.split(k0),
            0,
            lambda i: (X[i], y[i]),
        )
    sweep_cfg = _SweepConfig(run, optimizer, factory, key_axis)
    out: TrainResult = _population_jit(sweep_cfg, params, state, hp, key, X, y, dev)
    epochs_run = np.asarray(out.epochs_run)
    ran = np.arange(run.epochs)[None, :] < epochs_run[:, None]
    history = {"epoch": np.broadcast_to(np.arange(run.epochs), ran.shape).copy()}
    for name in HISTORY_KEYS[1:-1]:
        if name in out.history:
            values = np.asarray(out.history[name], np.float64)
            history[name] = np.where(ran, values, np.nan)
        else:
            history[name] = np.full(ran.shape, np.nan)
    return SweepResult(
        out.params,
        out.last_params,
        out.opt_state,
        None if run.objective.model is None else out.state,
        history,
        np.asarray(out.best_epoch),
        epochs_run,
        np.asarray(out.nonfinite_epoch),
        {k: np.asarray(v) for k, v in hp.items()},
    )
