"""Differentially private SGD: clip every example's gradient, add noise, average.

Notation: ``g_i`` (i = 1..m) is example i's gradient (a pytree like the params,
e.g. a leaf of :func:`fnn.per_example_grads`, whose leaves carry a leading
axis m), ``C`` the clipping norm ``l2_norm_clip``, ``sigma`` the
``noise_multiplier``. One DP-SGD aggregation is::

    ||g_i||   = sqrt(sum over leaves of sum g_i^2)      (the global norm)
    gbar_i    = g_i * min(1, C / ||g_i||)                (clip each example)
    g~        = (sum_i gbar_i + N(0, sigma^2 C^2 I)) / m  (sum, noise, average)

The noise is drawn independently for every leaf from the state's key, which is
split at every step; its standard deviation ``sigma C`` is that of the *sum*,
so the average carries ``sigma C / m``.

Invariants:
  * the input has a leading batch axis on every leaf (the same m), the output
    has the parameters' shapes: in a ``chain`` the aggregation comes first;
  * the state holds the step count (int32) and the PRNG key of the next step;
  * with ``noise_multiplier = 0`` and ``l2_norm_clip`` above every example's
    norm, the result is the mean of the examples' gradients (the batch
    gradient of a mean loss).

The names and the meaning of the arguments are optax's
(``optax.contrib.differentially_private_aggregate`` and ``dpsgd``); with the
same key the noise is the same numbers.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._tree import keystr
from ._base import (
    Optimizer,
    PyTree,
    Scalar,
    ScalarOrSchedule,
    check_like,
    check_nonnegative,
    check_state,
    check_unit_interval,
    register_state,
)
from ._transforms import as_dtype_of, chain, scale_by_learning_rate, zero_count


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`.

    Attributes:
      count: int32 scalar, number of aggregations made.
      key: the PRNG key (typed) of the next step's noise.
    """

    count: jax.Array
    key: jax.Array


def _as_key(key: Any, seed: Any) -> jax.Array:
    if (key is None) == (seed is None):
        raise ValueError(
            "differentially_private_aggregate needs exactly one of key (a PRNG "
            "key, e.g. jax.random.key(0)) and seed (an int): the noise must come "
            f"from a key you chose; got key={key!r}, seed={seed!r}."
        )
    if seed is not None:
        key = seed
    if isinstance(key, int) and not isinstance(key, bool):
        return jax.random.key(key)
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if jnp.shape(key) != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}.")
        return key
    if dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return jax.random.wrap_key_data(key)  # a raw jax.random.PRNGKey
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and key.ndim == 0:
        return jax.random.key(key)  # an integer seed as an array
    raise ValueError(
        f"key must be a PRNG key (jax.random.key(seed)) or an int seed, got {key!r}."
    )


def _check_per_example(updates: PyTree, params: PyTree | None) -> int:
    """The batch size m; every leaf must be ``(m, *param_shape)``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
    if not leaves:
        raise ValueError("differentially_private_aggregate got no gradients.")
    shapes = [jnp.shape(leaf) for _, leaf in leaves]
    m = shapes[0][0] if shapes[0] else None
    for (path, _), shape in zip(leaves, shapes, strict=True):
        if not shape:
            raise ValueError(
                "differentially_private_aggregate needs per-example gradients with "
                f"a leading batch axis (fnn.per_example_grads); leaf {keystr(path)} "
                "is a scalar."
            )
        if shape[0] != m:
            raise ValueError(
                f"per-example gradients must share the batch size: leaf "
                f"{keystr(leaves[0][0])} has {m} examples, leaf {keystr(path)} "
                f"has {shape[0]}."
            )
    if params is not None:
        check_like(params, updates, "updates", "params")
        for (path, _), shape, p in zip(
            leaves, shapes, treedef.flatten_up_to(params), strict=True
        ):
            if tuple(shape[1:]) != tuple(jnp.shape(p)):
                raise ValueError(
                    f"updates leaf {keystr(path)} has shape {shape}, but "
                    f"differentially_private_aggregate needs (m, *{jnp.shape(p)}): "
                    "one gradient per example, stacked on a leading axis."
                )
    return m


def per_example_global_norms(grads: PyTree) -> jax.Array:
    """``||g_i||``: the global L2 norm of every example's gradient, ``(m,)``."""
    squares = [
        jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)
        for g in jax.tree.leaves(grads)
    ]
    return jnp.sqrt(sum(squares[1:], squares[0]))


def differentially_private_aggregate(
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    key: Any = None,
    *,
    seed: int | None = None,
) -> Optimizer:
    """DP-SGD's aggregation: clip each example's gradient, sum, add noise, average.

    ::

        gbar_i = g_i * min(1, C / ||g_i||)          ||.||: global L2 norm of g_i
        u      = (sum_i gbar_i + sigma C z) / m,     z ~ N(0, I), one draw per leaf

    ``u`` is an averaged gradient, not yet a step: chain it with a descent rule
    (:func:`dpsgd` is ``chain(this, momentum, -learning_rate)``). The updates
    given to ``update`` are per-example gradients with a leading axis ``m`` on
    every leaf (:func:`fnn.per_example_grads`); the result has the parameters'
    shapes.

    Warning: as in optax, this transform must come first in a ``chain`` (it
    removes the batch axis), and gradient accumulation across calls (several
    micro-batches per step) would change the privacy accounting.

    Args:
      l2_norm_clip: ``C >= 0``, the largest global norm an example's gradient
        keeps.
      noise_multiplier: ``sigma >= 0``, the noise's standard deviation in units
        of ``C`` (on the sum of the clipped gradients).
      key: the PRNG key of the noise (``jax.random.key(0)``), or an int seed;
        optax's third argument.
      seed: an int seed instead of ``key`` (keyword only).

    Returns:
      An ``Optimizer`` with a :class:`DifferentiallyPrivateAggregateState`;
      updates ``(m, *shape)`` per leaf in, ``shape`` per leaf out, in the
      gradients' dtype.

    Raises:
      ValueError: a negative or non-finite ``l2_norm_clip`` or
        ``noise_multiplier``; neither or both of ``key`` and ``seed``; updates
        without a common leading batch axis.

    References:
      Abadi et al., "Deep Learning with Differential Privacy", 2016, Algorithm 1
      (per-example clipping, Gaussian noise of std sigma C on the sum).
    """
    l2_norm_clip = check_nonnegative("l2_norm_clip", l2_norm_clip)
    noise_multiplier = check_nonnegative("noise_multiplier", noise_multiplier)
    key = _as_key(key, seed)
    noise_std = l2_norm_clip * noise_multiplier

    def init(params):
        del params
        return DifferentiallyPrivateAggregateState(zero_count(), key)

    def update(updates, state, params=None, **extra):
        check_state(
            state,
            DifferentiallyPrivateAggregateState,
            "differentially_private_aggregate",
        )
        m = _check_per_example(updates, params)
        leaves, treedef = jax.tree.flatten(updates)
        norms = per_example_global_norms(updates)
        # min(1, C / ||g_i||), and 1 for a zero gradient.
        big = norms > as_dtype_of(l2_norm_clip, norms)
        safe = jnp.where(big, norms, jnp.ones_like(norms))
        factors = jnp.where(big, as_dtype_of(l2_norm_clip, norms) / safe, 1.0)
        next_key, *keys = jax.random.split(state.key, len(leaves) + 1)
        out = []
        for g, k in zip(leaves, keys, strict=True):
            total = jnp.tensordot(factors.astype(g.dtype), g, axes=1)
            noise = jax.random.normal(k, total.shape, g.dtype)
            out.append((total + as_dtype_of(noise_std, g) * noise) / m)
        new_state = DifferentiallyPrivateAggregateState(state.count + 1, next_key)
        return treedef.unflatten(out), new_state

    return Optimizer(init, update)


class TraceState(NamedTuple):
    """State of DP-SGD's momentum: ``count`` and the trace ``t`` (like the
    params)."""

    count: jax.Array
    trace: PyTree


def _trace(decay: Scalar, nesterov: bool) -> Optimizer:
    """Heavy-ball trace of the updates (optax's ``trace``)::

        t_k = g_k + beta t_{k-1},   u_k = t_k   (Nesterov: u_k = g_k + beta t_k)
    """

    def init(params):
        return TraceState(zero_count(), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None, **extra):
        check_state(state, TraceState, "dpsgd's momentum")
        trace = jax.tree.map(
            lambda g, t: g + as_dtype_of(decay, g) * t, updates, state.trace
        )
        if nesterov:
            out = jax.tree.map(
                lambda g, t: g + as_dtype_of(decay, g) * t, updates, trace
            )
        else:
            out = trace
        return out, TraceState(state.count + 1, trace)

    return Optimizer(init, update)


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    seed: Any,
    momentum: Scalar | None = None,
    nesterov: bool = False,
) -> Optimizer:
    """DP-SGD (Abadi et al. 2016): SGD on clipped, noised, averaged per-example
    gradients, with optional (Nesterov) momentum.

    ::

        g~_k = (sum_i clip_C(g_i) + sigma C z_k) / m      (the aggregate)
        t_k  = g~_k + beta t_{k-1},   t_0 = 0             (t_k = g~_k without)
        u_k  = -alpha_k t_k            (Nesterov: -alpha_k (g~_k + beta t_k))

    This is optax's ``dpsgd``: the momentum trace sums raw averaged gradients and
    the learning rate multiplies it at the end (fnn's :func:`sgd` keeps the rate
    inside its velocity; the two agree for a constant rate).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      l2_norm_clip: ``C >= 0``.
      noise_multiplier: ``sigma >= 0``.
      seed: an int seed or a PRNG key for the noise.
      momentum: ``beta`` in ``[0, 1)``, or ``None`` for none.
      nesterov: Nesterov's form of the momentum.

    Returns:
      An ``Optimizer`` (a ``chain``); ``update`` takes per-example gradients
      ``(m, *shape)`` per leaf (:func:`fnn.per_example_grads`) and returns
      updates with the parameters' shapes.

    References:
      Abadi et al., "Deep Learning with Differential Privacy", 2016, Algorithm 1;
      Laurent, Neural Networks and Introduction to Deep Learning (SGD with
      momentum).
    """
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be a bool, got {nesterov!r}.")
    parts = [differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed)]
    if momentum is not None:
        parts.append(_trace(check_unit_interval("momentum", momentum), nesterov))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


register_state(DifferentiallyPrivateAggregateState, "differentially_private_aggregate")
register_state(TraceState, "dpsgd's momentum")
