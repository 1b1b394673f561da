"""Reduce-on-plateau: scale updates down when a monitored value stops improving.

``reduce_on_plateau`` is an optimizer transformation meant to sit after another
optimizer (``chain(sgd(0.1), reduce_on_plateau())``): it multiplies the incoming
updates by its current ``scale`` (1 at the start). It is fed the monitored value
(typically the dev loss) either through ``update(updates, state, params,
value=dev_loss)`` or, once per epoch outside the training step, through the pure
function ``observe(state, value) -> state``.

Invariants:
  * an evaluation improves when ``value < best - (min_delta + rtol * |best|)``:
    an absolute threshold plus one relative to the magnitude of the best value,
    so negative losses are handled like positive ones (never ``value <
    best * (1 - rtol)``, which is wrong for ``best < 0``).
  * after ``patience`` consecutive evaluations without improvement the scale is
    multiplied by ``factor`` (never below ``min_scale``) and the count restarts;
    the ``cooldown`` evaluations after a reduction are not counted.
  * the state keeps fixed dtypes (int32 counts, float32 values): a jitted step
    traces once.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._base import Optimizer, check_scalar, check_state, register_state
from ._transforms import check_grads


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`.

    Attributes:
      count: int32, evaluations observed so far.
      best: float32, best monitored value seen (``+inf`` before the first).
      plateau_count: int32, evaluations since the last improvement (not counting
        those in cooldown).
      cooldown_count: int32, evaluations left in the current cooldown.
      scale: float32, the factor applied to updates.
    """

    count: jax.Array
    best: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    scale: jax.Array


def reduce_on_plateau(
    factor: float = 0.5,
    patience: int = 10,
    min_delta: float = 0.0,
    rtol: float = 0.0,
    cooldown: int = 0,
    min_scale: float = 0.0,
) -> Optimizer:
    """Scale updates by ``factor`` after ``patience`` evaluations without
    improvement.

    For each observed value ``v`` (in this order)::

        improved  = v < best - (min_delta + rtol * |best|)     (always at the first)
        best      = v if improved else best
        plateau   = 0 if improved or cooldown_count > 0 else plateau + 1
        if plateau >= patience:
            scale = max(factor * scale, min_scale); plateau = 0
            cooldown_count = cooldown
        else:
            cooldown_count = max(cooldown_count - 1, 0)

    and every update is ``updates * scale``. ``factor = 0.5`` is [Neacșu & Vasilescu]'s
    "halve the learning rate when the validation error stops improving".

    Warning: fnn's ``patience`` counts the epochs without improvement that
    trigger the reduction, so ``patience=p`` here equals PyTorch's
    ``ReduceLROnPlateau(patience=p - 1)`` (PyTorch reduces after ``patience + 1``
    bad epochs).

    Args:
      factor: the multiplier applied at each reduction, in ``(0, 1)``.
      patience: evaluations without improvement before a reduction (``>= 1``).
      min_delta: absolute improvement threshold (``>= 0``).
      rtol: relative improvement threshold, times ``|best|`` (``>= 0``).
      cooldown: evaluations ignored after each reduction (``>= 0``).
      min_scale: the scale never goes below this (``>= 0``).

    Returns:
      An :class:`Optimizer`. ``init(params)`` gives a
      :class:`ReduceOnPlateauState` with ``scale = 1``;
      ``update(updates, state, params=None, *, value=None)`` observes ``value``
      (a scalar; ``None`` means no new evaluation this step) and returns
      ``(updates * scale, state)``, each leaf keeping its dtype. The factory's
      ``observe(state, value)`` is available as ``reduce_on_plateau.observe``
      (module-level :func:`observe`).

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "Halve the learning rate when the
      validation error stops improving".
    """
    config = (
        check_scalar("factor", factor, lo=0, hi=1, lo_open=True, hi_open=True),
        check_scalar("patience", patience, lo=1, integer=True),
        check_scalar("min_delta", min_delta, lo=0),
        check_scalar("rtol", rtol, lo=0),
        check_scalar("cooldown", cooldown, lo=0, integer=True),
        check_scalar("min_scale", min_scale, lo=0),
    )

    def init(params):
        del params
        return ReduceOnPlateauState(
            count=jnp.zeros((), jnp.int32),
            best=jnp.asarray(jnp.inf, jnp.float32),
            plateau_count=jnp.zeros((), jnp.int32),
            cooldown_count=jnp.zeros((), jnp.int32),
            scale=jnp.ones((), jnp.float32),
        )

    def update(updates, state, params=None, *, value=None, **extra):
        del extra
        check_state(state, ReduceOnPlateauState, "reduce_on_plateau")
        check_grads(updates, params, what="updates")
        if value is not None:
            state = _observe(config, state, value)
        updates = jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates)
        return updates, state

    update.observe = lambda state, value: _observe(config, state, value)
    return Optimizer(init, update)


def _observe(config, state: ReduceOnPlateauState, value) -> ReduceOnPlateauState:
    factor, patience, min_delta, rtol, cooldown, min_scale = config
    check_state(state, ReduceOnPlateauState, "reduce_on_plateau", call="observe")
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"value must be a scalar, got shape {value.shape}.")
    value = value.astype(jnp.float32)
    finite_best = jnp.where(jnp.isfinite(state.best), state.best, 0.0)
    threshold = state.best - (min_delta + rtol * jnp.abs(finite_best))
    improved = (state.count == 0) | (value < threshold)
    best = jnp.where(improved, value, state.best)
    in_cooldown = state.cooldown_count > 0
    plateau = jnp.where(improved | in_cooldown, 0, state.plateau_count + 1)
    reduce = plateau >= patience
    scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), state.scale)
    plateau = jnp.where(reduce, 0, plateau)
    cooldown_count = jnp.where(
        reduce, cooldown, jnp.maximum(state.cooldown_count - 1, 0)
    )
    return ReduceOnPlateauState(
        count=(state.count + 1).astype(jnp.int32),
        best=best.astype(jnp.float32),
        plateau_count=plateau.astype(jnp.int32),
        cooldown_count=cooldown_count.astype(jnp.int32),
        scale=scale.astype(jnp.float32),
    )


def observe(
    state: ReduceOnPlateauState,
    value: jax.typing.ArrayLike,
    *,
    factor: float = 0.5,
    patience: int = 10,
    min_delta: float = 0.0,
    rtol: float = 0.0,
    cooldown: int = 0,
    min_scale: float = 0.0,
) -> ReduceOnPlateauState:
    """Record one evaluation of the monitored value; pure, jit-friendly.

    The same rule as :func:`reduce_on_plateau` (see its docstring); pass the same
    hyperparameters as the factory. ``opt.update.observe(state, value)`` is the
    same function with the factory's hyperparameters bound.

    Args:
      state: a :class:`ReduceOnPlateauState`.
      value: the monitored scalar (e.g. the dev loss at the end of an epoch).

    Returns:
      The new :class:`ReduceOnPlateauState`.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "Halve the learning rate when the
      validation error stops improving".
    """
    opt = reduce_on_plateau(factor, patience, min_delta, rtol, cooldown, min_scale)
    return opt.update.observe(state, value)


register_state(ReduceOnPlateauState, "reduce_on_plateau")
