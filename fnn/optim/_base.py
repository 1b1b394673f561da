"""The optimizer contract: ``(init, update)`` state transformers on pytrees.

An optimizer is a pair of pure functions::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)   # params optional
    params = apply_updates(params, updates)

Invariants:
  * ``updates`` already carry the sign and the learning rate: ``params + updates``
    is the new point (gradient descent gives ``updates = -lr * grads``).
  * ``state`` is a pytree of NamedTuples whose leaves have fixed dtypes; the step
    count (int32) lives inside it, so ``(params, state)`` is enough to resume.
  * ``jax.eval_shape(opt.update, grads, state, params)[1]`` has the same avals as
    ``state``: a jitted step traces once.

The names follow optax's (``learning_rate``, ``b1``, ``b2``, ``eps``, ...) so that
code moves between the two libraries.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._tree import check_inexact_leaves, check_same_structure

PyTree = Any
Params = PyTree
Updates = PyTree
State = PyTree
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = float | Schedule


class Optimizer(NamedTuple):
    """An optimizer: ``init(params) -> state`` and
    ``update(grads, state, params=None, **extra) -> (updates, state)``."""

    init: Callable[..., State]
    update: Callable[..., tuple[Updates, State]]


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates``, leaf by leaf, keeping each parameter's dtype.

    Args:
      params: the parameter pytree.
      updates: a pytree of the same structure (from ``update``).

    Returns:
      The new parameters, same structure, shapes and dtypes as ``params``.
    """
    check_same_structure(params, updates, "updates", "params")
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def learning_rate_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """The learning rate for the update whose zero-based step count is ``count``.

    A schedule is called with the count *before* the step is taken, so the first
    update uses ``schedule(0)``. Returned as a float32 scalar (the dtype stored in
    optimizer states).
    """
    value = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(value, dtype=jnp.float32)


def check_params(params: Params, where: str = "params") -> None:
    """Reject any leaf that is not an inexact array, naming its key path."""
    check_inexact_leaves(params, where)


def check_like(reference: PyTree, other: PyTree | None, what: str, like: str) -> None:
    """Raise ``ValueError`` naming the first key path where ``other`` departs from
    ``reference``; ``None`` passes (an optional argument not given)."""
    if other is not None:
        check_same_structure(reference, other, what, like)


def check_nonnegative(name: str, value: Any) -> None:
    """Validate a scalar hyperparameter up front: a number ``>= 0`` (or a schedule)."""
    if callable(value):
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.")


def check_unit_interval(name: str, value: Any) -> None:
    """Validate a decay rate: a number in ``[0, 1)``."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 <= value < 1
    ):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
