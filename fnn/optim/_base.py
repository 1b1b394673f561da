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
  * per-parameter state leaves (moments, accumulators, velocities) are kept in the
    parameter's *accumulation dtype* (:func:`accumulation_dtype`): float32 for
    bfloat16, float16 and narrower floats, the parameter's own dtype otherwise;
    updates come back in the gradients' dtype.
  * factories check their hyperparameters up front with one helper,
    :func:`check_scalar`: Python numbers, NumPy scalars and 0-d JAX arrays are
    accepted, must be finite and in range (learning rates ``>= 0``; a schedule is
    evaluated at count 0 on the host and its value checked), and are stored as
    Python numbers, so an array hyperparameter gives the same bits as the Python
    number. A traced value (a hyperparameter passed into ``jit``) cannot be
    checked and is used as given.
  * ``update`` checks, at trace time only, that ``state`` was made by the same
    optimizer (``TypeError`` naming the optimizer that made it) and that the
    gradients have the structure and leaf shapes of the parameters
    (``ValueError`` naming the key path and both shapes).

The names follow optax's (``learning_rate``, ``b1``, ``b2``, ``eps``, ...) so that
code moves between the two libraries.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._tree import check_inexact_leaves, check_same_structure
from ._renamed import OLD_KEYWORDS

PyTree = Any
Params = PyTree
Updates = PyTree
State = PyTree
Schedule = Callable[[jax.Array], jax.Array]
Scalar = float | jax.typing.ArrayLike
ScalarOrSchedule = Scalar | Schedule

#: Floating dtypes narrower than this are accumulated (moments, bias corrections,
#: curvature histories) in it; their updates are cast back to the gradient dtype.
ACCUMULATION_DTYPE = jnp.float32


class Optimizer(NamedTuple):
    """An optimizer: ``init(params) -> state`` and
    ``update(grads, state, params=None, **extra) -> (updates, state)``."""

    init: Callable[..., State]
    update: Callable[..., tuple[Updates, State]]


def _argument_key(value: Any) -> Any:
    """A hashable stand-in for a constructor argument, or ``_UNKEYED``.

    Python numbers, strings, ``None``, optimizers and functions (by identity)
    are keyed with their type, so ``1``, ``1.0`` and ``True`` stay distinct;
    tuples and lists recursively. Arrays and dicts are not keyed: a call with
    one builds a new optimizer (arrays are what changes without recompiling).
    """
    if value is None or isinstance(value, (bool, int, float, str, Optimizer)):
        return (type(value), value)
    if callable(value) and hasattr(value, "__code__"):  # a function, by identity
        return (type(value), id(value), value)
    if isinstance(value, (tuple, list)):
        keys = tuple(_argument_key(v) for v in value)
        return _UNKEYED if _UNKEYED in keys else (type(value), keys)
    return _UNKEYED


_UNKEYED = object()
_REUSE_LIMIT = 4096  # constructed optimizers kept per constructor


def reused(factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """``factory`` returning the same optimizer for the same arguments.

    ``fnn.fit``, ``fnn.train`` and ``fnn.sweep`` compile once per optimizer
    value (it is part of the compiled function's static key), so two calls of
    ``adam(1e-3)`` must give one value, not two equal closures: a notebook
    that rebuilds its optimizer in every cell then compiles once. Arguments
    that cannot be keyed (arrays, dicts) build a new optimizer every time;
    pass an array learning rate through :func:`fnn.train`/:func:`fnn.sweep`
    to change it without recompiling.
    """
    built: dict = {}

    @functools.wraps(factory)
    def build(*args, **kwargs):
        key = _argument_key((args, tuple(sorted(kwargs.items()))))
        if key is _UNKEYED:
            return factory(*args, **kwargs)
        try:
            return built[key]
        except KeyError:
            pass
        optimizer = factory(*args, **kwargs)
        if len(built) < _REUSE_LIMIT and not OLD_KEYWORDS & kwargs.keys():
            built[key] = optimizer
        return optimizer

    return build


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


def accumulation_dtype(dtype: Any) -> np.dtype:
    """The dtype an optimizer keeps its state and does its arithmetic in for a
    parameter of ``dtype``: float32 for floating dtypes narrower than 32 bits
    (bfloat16, float16, float8), ``dtype`` itself otherwise.

    bfloat16 rounds 0.999 to 1.0 (so ``1 - b2**t = 0``) and float16 flushes 1e-8 to
    zero: moments and bias corrections in such a dtype give NaN or infinity on the
    first step. optax's ``mu_dtype`` and PyTorch's autocast keep them in float32.
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(ACCUMULATION_DTYPE)
    return dtype


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a JAX tracer (an abstract value under ``jit``, ``grad``,
    ``vmap``...): such values cannot be checked on the host."""
    return isinstance(value, jax.core.Tracer)


def _interval(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"> {lo}" if lo_open else f">= {lo}"
    if lo is None:
        return f"< {hi}" if hi_open else f"<= {hi}"
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"in {left}{lo}, {hi}{right}"


def check_scalar(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    concrete: bool = False,
) -> Any:
    """Validate a scalar hyperparameter up front and return it as a Python number.

    Accepted: Python ``int``/``float`` (not ``bool``), NumPy scalars and 0-d
    arrays (``np.float32(1e-3)``) and 0-d JAX arrays (``jnp.float32(1e-3)``) of a
    real dtype (an integer dtype when ``integer``). A concrete value must be
    finite and lie in the interval given by ``lo``/``hi`` (``lo_open``/``hi_open``
    exclude the end points); it is returned as a Python ``float`` (``int`` when
    ``integer``), so an array hyperparameter gives results identical to the
    Python number.

    A JAX tracer (the hyperparameter is an argument of a jitted function) cannot
    be checked on the host: it is returned unchanged, unless ``integer`` or
    ``concrete`` says that the value fixes the structure of the computation (a
    number of steps, a phase boundary), in which case it is refused.

    Raises:
      ValueError: naming ``name`` and showing the value.
    """
    if is_traced(value):
        if integer or concrete:
            raise ValueError(
                f"{name} must be a concrete number known when the function is "
                f"built (it fixes the structure of the computation), got the traced "
                f"value {value!r}; pass it as a Python number or a static argument."
            )
        return value
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, bool | np.bool_) or isinstance(value, str | bytes):
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, np.generic | np.ndarray | jax.Array):
        dtype = np.dtype(value.dtype)
        if np.shape(value) != ():
            raise ValueError(
                f"{name} must be a scalar, got an array of shape {np.shape(value)}."
            )
        real = jnp.issubdtype(dtype, jnp.integer) or (
            not integer and jnp.issubdtype(dtype, jnp.floating)
        )
        if not real:
            raise ValueError(f"{name} must be {kind}, got {value!r} of dtype {dtype}.")
        number = int(value) if jnp.issubdtype(dtype, jnp.integer) else float(value)
    else:
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    if integer and not isinstance(number, int):
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    if not integer:
        number = float(number)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    bad = (lo is not None and (number <= lo if lo_open else number < lo)) or (
        hi is not None and (number >= hi if hi_open else number > hi)
    )
    if bad:
        raise ValueError(
            f"{name} must be {kind} {_interval(lo, hi, lo_open, hi_open)}, "
            f"got {value!r}."
        )
    return number


def check_nonnegative(name: str, value: Any) -> Any:
    """A finite number ``>= 0`` (see :func:`check_scalar`)."""
    return check_scalar(name, value, lo=0)


def check_unit_interval(name: str, value: Any) -> Any:
    """A decay rate: a number in ``[0, 1)`` (see :func:`check_scalar`)."""
    return check_scalar(name, value, lo=0, hi=1, hi_open=True)


def check_learning_rate(
    learning_rate: Any, name: str = "learning_rate"
) -> ScalarOrSchedule:
    """Validate a learning rate: a finite number ``>= 0`` or a schedule.

    A schedule is evaluated once, on the host, at count 0 (the rate of the first
    update); when that value is concrete it must be a finite scalar ``>= 0``
    (a schedule built on traced values is passed through unchecked). Numbers are
    returned as Python floats (see :func:`check_scalar`), schedules unchanged.

    Raises:
      ValueError: naming ``name`` and showing the bad value.
    """
    if not callable(learning_rate):
        return check_scalar(name, learning_rate, lo=0)
    with jax.ensure_compile_time_eval():
        first = learning_rate(jnp.zeros([], jnp.int32))
    if is_traced(first):
        return learning_rate
    if np.shape(first) != ():
        raise ValueError(
            f"{name} is a schedule whose value at count 0 has shape "
            f"{np.shape(first)}; a schedule must return a scalar."
        )
    check_scalar(f"{name} (a schedule) at count 0", first, lo=0)
    return learning_rate


# --------------------------------------------------------------------------
# Which optimizer a state belongs to.
# --------------------------------------------------------------------------

_STATE_OWNERS: dict[type, str] = {}


def register_state(state_type: type, owner: str) -> None:
    """Record that states of ``state_type`` are made by ``owner`` (for messages)."""
    _STATE_OWNERS[state_type] = owner


def state_owner(state: Any) -> str:
    """A phrase naming the optimizer that made ``state``, for error messages."""
    owner = _STATE_OWNERS.get(type(state))
    if owner is not None:
        return f"{owner} (a {type(state).__name__})"
    if state is None:
        return "no optimizer (None)"
    if type(state) is tuple:
        return f"chain (a tuple of {len(state)} states)"
    if isinstance(state, dict):
        return (
            "no optimizer: a dict (a checkpoint loaded without a template? pass "
            "like=optimizer.init(params) to checkpoint.load)"
        )
    return f"an unknown optimizer (a {type(state).__name__})"


def check_state(
    state: Any,
    state_type: type,
    name: str,
    *,
    present: tuple[str, ...] = (),
    absent: tuple[str, ...] = (),
    hint: str = "",
    call: str = "update",
) -> None:
    """Raise ``TypeError`` unless ``state`` is a ``state_type`` made by ``name``.

    Args:
      state: the state given to ``name.update``.
      state_type: the NamedTuple class ``name.init`` returns.
      name: the optimizer, e.g. ``"adam"``.
      present, absent: fields that must be set / ``None`` for this optimizer's
        settings (e.g. ``velocity`` for SGD with momentum).
      hint: the settings that decide those fields, for the message.
      call: the function that got ``state`` (``update``, or ``observe``).
    """
    if type(state) is not state_type:
        raise TypeError(
            f"{name}.{call} got a state made by {state_owner(state)}, but it needs "
            f"the {state_type.__name__} that {name}.init returns: pass the state "
            f"that {name}.init (or the previous {name}.update) returned."
        )
    for field in present:
        if getattr(state, field) is None:
            raise TypeError(
                f"{name}.{call} got a {state_type.__name__} whose {field} is None: "
                f"it was made by {_STATE_OWNERS.get(state_type, name)} with other "
                f"settings{hint}. Initialise the state with the optimizer that "
                f"updates it."
            )
    for field in absent:
        if getattr(state, field) is not None:
            raise TypeError(
                f"{name}.{call} got a {state_type.__name__} with a {field}: it was "
                f"made by {_STATE_OWNERS.get(state_type, name)} with other "
                f"settings{hint}. Initialise the state with the optimizer that "
                f"updates it."
            )
