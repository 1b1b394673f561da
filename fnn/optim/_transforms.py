"""Building blocks and composition of ``(init, update)`` optimizers.

Every function here returns an :class:`~fnn.optim.Optimizer`; they combine with
``chain`` the way optax's transforms do::

    opt = chain(clip_by_global_norm(1.0), add_decayed_weights(1e-4), sgd(0.1))

Invariants (besides those of ``_base.py``):
  * a transform that does not change the update direction leaves the dtypes of
    the updates as they came in;
  * ``masked``/``partition`` give the inner optimizer only the leaves it owns: its
    state holds nothing for the others;
  * ``skip_if_nonfinite`` never lets a non-finite gradient into the inner state.

Masks are pytrees of Python bools with the structure of the parameters (``True``:
the rule applies to that leaf), or a callable ``params -> mask``. fnn parameters
are lists of ``{"W": ..., "b": ...}`` dicts; :func:`weights_only_mask` gives the
usual "weights, not biases" mask.
"""

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._tree import check_same_structure, keystr
from ._base import (
    Optimizer,
    PyTree,
    Scalar,
    ScalarOrSchedule,
    accumulation_dtype,
    check_learning_rate,
    check_like,
    check_nonnegative,
    check_params,
    check_scalar,
    check_state,
    learning_rate_at,
    register_state,
    state_owner,
)
from ._renamed import _UNSET, renamed

Mask = PyTree | Callable[[PyTree], PyTree]


# --------------------------------------------------------------------------
# Small helpers shared with the optimizers.
# --------------------------------------------------------------------------


def zeros_like_strong(x: jax.Array) -> jax.Array:
    """Zeros with ``x``'s shape and dtype and ``weak_type=False`` (state leaves)."""
    return jnp.zeros(jnp.shape(x), x.dtype)


def zero_count() -> jax.Array:
    """The step count of a fresh state: an int32 zero."""
    return jnp.zeros([], jnp.int32)


def raw_learning_rate(learning_rate: ScalarOrSchedule, count: jax.Array) -> Any:
    """The learning rate for step ``count`` as given (float or schedule value),
    not rounded to float32, so that float64 parameters get a float64 step."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def as_dtype_of(value: Any, leaf: jax.Array) -> jax.Array:
    """``value`` as an array of ``leaf``'s dtype (strict-promotion safe)."""
    return jnp.asarray(value, leaf.dtype)


def zeros_for_state(x: jax.Array) -> jax.Array:
    """Zeros with ``x``'s shape in its accumulation dtype (float32 for 16-bit and
    narrower floats, ``x.dtype`` otherwise): a per-parameter state leaf."""
    return jnp.zeros(jnp.shape(x), accumulation_dtype(x.dtype))


def scaled_descent(lr: Any, g: jax.Array) -> jax.Array:
    """``-lr * g`` in ``g``'s accumulation dtype, returned in ``g``'s dtype."""
    acc = accumulation_dtype(g.dtype)
    return (-as_dtype_of(lr, g.astype(acc)) * g.astype(acc)).astype(g.dtype)


def _first_shape_mismatch(reference: PyTree, other: PyTree):
    """``(key path, reference shape, other shape)`` of the first leaf pair whose
    shapes differ (trees of the same structure), or ``None``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(reference)
    others = treedef.flatten_up_to(other)
    for (path, a), b in zip(flat, others, strict=True):
        if jnp.shape(a) != jnp.shape(b):
            return keystr(path), jnp.shape(a), jnp.shape(b)
    return None


def check_grads(
    grads: PyTree,
    params: PyTree | None,
    *state_trees: PyTree,
    what: str = "grads",
    state_shapes: bool = False,
) -> None:
    """Check ``grads`` against ``params`` and the per-parameter trees of a state.

    ``what`` names ``grads`` in the messages (``"updates"`` for a transform that
    comes after another in a chain). ``state_shapes`` also compares the leaf
    shapes of ``state_trees`` with the gradients' (for states whose leaves have
    the parameters' shapes; factored states such as Adafactor's do not).

    Structures and leaf shapes must agree (shapes are static, so under ``jit``
    this costs nothing at run time).

    Raises:
      ValueError: naming the first key path that differs, and both shapes when a
        leaf has the wrong shape.
    """
    for tree in state_trees:
        if tree is not None:
            check_same_structure(tree, grads, what, "the optimizer state")
    check_like(grads, params, "params", what)
    if params is not None:
        bad = _first_shape_mismatch(params, grads)
        if bad is not None:
            raise ValueError(
                f"{what} leaf {bad[0]} has shape {bad[2]}, but the params leaf there "
                f"has shape {bad[1]}: each gradient must have its parameter's shape."
            )
    for tree in state_trees if state_shapes else ():
        if tree is None:
            continue
        bad = _first_shape_mismatch(tree, grads)
        if bad is not None:
            raise ValueError(
                f"{what} leaf {bad[0]} has shape {bad[2]}, but the optimizer state "
                f"leaf there has shape {bad[1]}: the state was initialised for "
                f"other parameters, or the gradient has the wrong shape."
            )


def require_params(params: PyTree | None, name: str) -> None:
    """Raise a clear ``ValueError`` when an optimizer that needs ``params`` got none."""
    if params is None:
        raise ValueError(
            f"{name}.update needs the current parameters: call "
            f"update(grads, state, params)."
        )


def _is_bool(x: Any) -> bool:
    return isinstance(x, bool | np.bool_)


def resolve_mask(mask: Mask, tree: PyTree, what: str = "mask") -> list[bool]:
    """The mask for ``tree`` as a flat list of bools in ``jax.tree`` leaf order.

    Args:
      mask: a pytree of Python bools with ``tree``'s structure, or a callable
        ``tree -> such a pytree``.
      tree: the parameters (or gradients, which have the same structure).
      what: the name used in error messages.

    Raises:
      ValueError: when the mask's structure differs from ``tree``'s (naming the
        key path) or a mask leaf is not a bool.
    """
    m = mask(tree) if callable(mask) else mask
    check_same_structure(tree, m, what, "params")
    flat, _ = jax.tree_util.tree_flatten_with_path(m)
    for path, leaf in flat:
        if not _is_bool(leaf):
            raise ValueError(
                f"{what} leaf {keystr(path)} must be a Python bool, got {leaf!r}."
            )
    return [bool(leaf) for _, leaf in flat]


def weights_only_mask(params: PyTree) -> PyTree:
    """A mask that is ``True`` on every leaf except those keyed ``"b"`` (biases).

    Args:
      params: a parameter pytree, e.g. fnn's ``[{"W": (n_in, n_out), "b":
        (n_out,)}, ...]``.

    Returns:
      A pytree of bools with ``params``' structure: ``False`` where the last key
      of the leaf's path is the dict key ``"b"``, ``True`` elsewhere.

    References:
      [Deep Learning 2020, L1 - L2 regularization] (the penalty is on the weights
      ``W``).
    """

    def is_weight(path: tuple, _: Any) -> bool:
        last = path[-1] if path else None
        return not (isinstance(last, jax.tree_util.DictKey) and last.key == "b")

    return jax.tree_util.tree_map_with_path(is_weight, params)


def current_learning_rate(state: PyTree) -> jax.Array:
    """The learning rate held in an optimizer state, searched through nested states.

    The first ``learning_rate`` field met in a depth-first walk of ``state``
    (NamedTuples, tuples, lists and dicts) is returned: for ``chain(clip, sgd)``
    that is sgd's. Optimizers store the rate of their last update (before the
    first update: the rate the first update will use, ``schedule(0)``).

    Args:
      state: a state returned by ``init`` or ``update``.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when no part of ``state`` has a ``learning_rate`` field.
    """
    found = _find_learning_rate(state)
    if found is None:
        raise ValueError(
            "current_learning_rate: no optimizer state with a learning_rate field "
            f"was found in a state of type {type(state).__name__}."
        )
    return found


def _find_state(node: Any, is_target: Callable[[Any], bool]) -> Any:
    """The first part of an optimizer state for which ``is_target`` holds, in a
    depth-first walk through NamedTuples, tuples, lists and dicts; ``None``
    when there is none."""
    if is_target(node):
        return node
    if isinstance(node, dict):
        children = list(node.values())
    elif isinstance(node, tuple | list):
        children = list(node)
    else:
        return None
    for child in children:
        found = _find_state(child, is_target)
        if found is not None:
            return found
    return None


def _has_learning_rate(node: Any) -> bool:
    fields = getattr(node, "_fields", None)
    return fields is not None and "learning_rate" in fields


def _find_learning_rate(node: Any) -> jax.Array | None:
    found = _find_state(node, _has_learning_rate)
    return None if found is None else found.learning_rate


# --------------------------------------------------------------------------
# Stateless transforms.
# --------------------------------------------------------------------------


class EmptyState(NamedTuple):
    """The state of a transform that keeps nothing between steps."""


def _check_empty(state: Any, name: str) -> None:
    """A stateless transform takes its ``EmptyState`` (or an empty tuple)."""
    if type(state) is not tuple or state != ():
        check_state(state, EmptyState, name)


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, rate of the last update (``schedule(0)``
        before the first).
    """

    count: jax.Array
    learning_rate: jax.Array


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> Optimizer:
    """Gradient descent step: ``u_t = -alpha_t * g_t``.

    With ``alpha_t = learning_rate(t)`` for a schedule (``t = 0`` on the first
    update). Alone it is plain gradient descent; last in a ``chain`` it turns
    preconditioned directions into updates.

    For 16-bit parameters the product is formed in float32 and rounded once to
    the gradient's dtype.

    Args:
      learning_rate: a finite number ``>= 0`` (Python, NumPy or 0-d JAX scalar),
        or a schedule ``count -> rate`` (its value at count 0 is checked too).

    Returns:
      An ``Optimizer``; updates have the gradients' shapes and dtypes.

    References:
      [Neacșu & Vasilescu, Gradient descent algorithms]: Mini-batch gradient descent;
      [Laurent, SGD algorithm].
    """
    learning_rate = check_learning_rate(learning_rate)

    def init(params):
        check_params(params)
        count = zero_count()
        return ScaleByLearningRateState(count, learning_rate_at(learning_rate, count))

    def update(grads, state, params=None, **extra):
        check_state(state, ScaleByLearningRateState, "scale_by_learning_rate")
        check_grads(grads, params)
        lr = raw_learning_rate(learning_rate, state.count)
        updates = jax.tree.map(lambda g: scaled_descent(lr, g), grads)
        new_state = ScaleByLearningRateState(
            state.count + 1, learning_rate_at(learning_rate, state.count)
        )
        return updates, new_state

    return Optimizer(init, update)


def clip_by_value(max_delta: Scalar) -> Optimizer:
    """Clip every update component into ``[-max_delta, max_delta]``.

    ``u = clip(g, -max_delta, max_delta)`` element-wise.

    Args:
      max_delta: a finite number ``>= 0``.

    Returns:
      An ``Optimizer`` with an ``EmptyState``.

    References:
      [Neacșu & Vasilescu, Exploding and vanishing gradients] ("use clipping methods").
    """
    max_delta = check_nonnegative("max_delta", max_delta)

    def init(params):
        check_params(params)
        return EmptyState()

    def update(grads, state, params=None, **extra):
        _check_empty(state, "clip_by_value")
        check_grads(grads, params)
        updates = jax.tree.map(
            lambda g: jnp.clip(
                g, -as_dtype_of(max_delta, g), as_dtype_of(max_delta, g)
            ),
            grads,
        )
        return updates, state

    return Optimizer(init, update)


def clip(max_delta: Any) -> "Optimizer":
    """optax's name for :func:`clip_by_value`: ``u = clip(g, -max_delta,
    max_delta)`` element-wise."""
    return clip_by_value(max_delta)


def global_norm(tree: PyTree, squared: bool = False) -> jax.Array:
    """``sqrt(sum_leaves sum_i x_i^2)`` (without the root if ``squared``).

    Computed in the widest floating dtype among the leaves, and at least in
    float32 (a sum of squares of 16-bit leaves overflows float16 and loses digits
    in bfloat16); a scalar.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    dtype = max(
        (accumulation_dtype(leaf.dtype) for leaf in leaves),
        key=lambda d: jnp.dtype(d).itemsize,
    )
    total = sum(jnp.sum(jnp.square(leaf.astype(dtype))) for leaf in leaves)
    return total if squared else jnp.sqrt(total)


def clip_by_global_norm(max_norm: Scalar) -> Optimizer:
    """Rescale all updates together so their global norm is at most ``max_norm``.

    ``n = sqrt(sum over all leaves of g^2)``; ``u = g * max_norm / n`` if
    ``n > max_norm`` else ``u = g``. At ``n = 0`` the updates are the (zero)
    gradients: the division is never evaluated on zero, so no NaN appears, neither
    in the values nor under ``jax_debug_nans``.

    Args:
      max_norm: a finite number ``> 0``.

    Returns:
      An ``Optimizer`` with an ``EmptyState``.

    References:
      [Neacșu & Vasilescu, Exploding and vanishing gradients] ("use clipping methods").
    """
    max_norm = check_scalar("max_norm", max_norm, lo=0, lo_open=True)

    def init(params):
        check_params(params)
        return EmptyState()

    def update(grads, state, params=None, **extra):
        _check_empty(state, "clip_by_global_norm")
        check_grads(grads, params)
        # n^2 is compared with max_norm^2 so that sqrt is never taken at 0 (its
        # derivative there is infinite and would give 0 * inf = NaN in a grad).
        sq = global_norm(grads, squared=True)
        bound = as_dtype_of(max_norm, sq)
        clip = sq > bound**2
        safe_norm = jnp.sqrt(jnp.where(clip, sq, jnp.ones_like(sq)))
        scale = jnp.where(clip, bound / safe_norm, jnp.ones_like(sq))
        updates = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        return updates, state

    return Optimizer(init, update)


def add_decayed_weights(weight_decay: Scalar, mask: Mask | None = None) -> Optimizer:
    """Coupled L2 weight decay: ``u = g + weight_decay * theta`` (on masked leaves).

    This is the gradient of ``J(theta) + (weight_decay / 2) ||theta||^2``: put it
    *before* an adaptive optimizer in a ``chain`` and the decay is rescaled by the
    optimizer's preconditioner (L2 regularisation). For the decoupled form
    (Loshchilov & Hutter) use ``adamw``.

    Args:
      weight_decay: a finite number ``>= 0``.
      mask: optional pytree of bools (or callable ``params -> mask``); leaves
        marked ``False`` pass through unchanged. ``weights_only_mask`` leaves
        biases undecayed.

    Returns:
      An ``Optimizer`` with an ``EmptyState``; ``update`` needs ``params``.

    References:
      [Deep Learning 2020, L1 - L2 regularization].
    """
    weight_decay = check_nonnegative("weight_decay", weight_decay)

    def init(params):
        check_params(params)
        if mask is not None:
            resolve_mask(mask, params)
        return EmptyState()

    def update(grads, state, params=None, **extra):
        _check_empty(state, "add_decayed_weights")
        require_params(params, "add_decayed_weights")
        check_grads(grads, params)
        flags = resolve_mask(mask, params) if mask is not None else None
        g_leaves, treedef = jax.tree.flatten(grads)
        p_leaves = treedef.flatten_up_to(params)
        out = []
        for i, (g, p) in enumerate(zip(g_leaves, p_leaves, strict=True)):
            if flags is None or flags[i]:
                acc = accumulation_dtype(g.dtype)
                decay = as_dtype_of(weight_decay, g.astype(acc)) * p.astype(acc)
                g = (g.astype(acc) + decay).astype(g.dtype)
            out.append(g)
        return treedef.unflatten(out), state

    return Optimizer(init, update)


def freeze(mask: Mask) -> Optimizer:
    """Zero the updates of the leaves marked ``True`` in ``mask``; others pass.

    ``u = 0`` where frozen, ``u = g`` elsewhere. Put it last in a ``chain``.

    Args:
      mask: pytree of bools (or callable ``params -> mask``), ``True`` = frozen.

    Returns:
      An ``Optimizer`` with an ``EmptyState``.
    """

    def init(params):
        check_params(params)
        resolve_mask(mask, params)
        return EmptyState()

    def update(grads, state, params=None, **extra):
        _check_empty(state, "freeze")
        check_grads(grads, params)
        flags = resolve_mask(mask, grads)
        leaves, treedef = jax.tree.flatten(grads)
        out = [
            zeros_like_strong(g) if f else g for g, f in zip(leaves, flags, strict=True)
        ]
        return treedef.unflatten(out), state

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# Composition.
# --------------------------------------------------------------------------


def chain(*optimizers: Optimizer) -> Optimizer:
    """Apply optimizers one after another: ``u = T_k(... T_2(T_1(g)))``.

    Each transform receives the previous one's updates as its "gradients" and the
    same ``params`` and extra keywords.

    Args:
      *optimizers: ``Optimizer``s, applied left to right.

    Returns:
      An ``Optimizer`` whose state is the tuple of the inner states.
    """
    for i, opt in enumerate(optimizers):
        if not isinstance(opt, Optimizer):
            raise ValueError(
                f"chain: argument {i} must be an Optimizer, got {type(opt).__name__}."
            )

    def init(params):
        return tuple(opt.init(params) for opt in optimizers)

    def update(grads, state, params=None, **extra):
        if type(state) is not tuple:
            raise TypeError(
                f"chain.update got a state made by {state_owner(state)}, but it "
                f"needs the tuple of {len(optimizers)} states that chain.init "
                f"returns."
            )
        if len(state) != len(optimizers):
            raise ValueError(
                f"chain: state must be a tuple of {len(optimizers)} states, "
                f"got a tuple of {len(state)} (the state of another chain?)."
            )
        new_states = []
        for opt, s in zip(optimizers, state, strict=True):
            grads, s = opt.update(grads, s, params, **extra)
            new_states.append(s)
        return grads, tuple(new_states)

    return Optimizer(init, update)


class _Masked(NamedTuple):
    """An empty pytree node standing in for a leaf an inner optimizer does not own."""


def _select(tree: PyTree, flags: list[bool]) -> PyTree:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten(
        [x if f else _Masked() for x, f in zip(leaves, flags, strict=True)]
    )


def _selected_leaves(tree: PyTree) -> list[Any]:
    return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, _Masked))


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner optimizer's state over the masked leaves."""

    inner_state: PyTree


def masked(
    inner: Optimizer | None = None, mask: Mask | None = None, *, optimizer=_UNSET
) -> Optimizer:
    """Apply ``optimizer`` to the leaves where ``mask`` is ``True``; pass the rest.

    ``u_i = optimizer(g)_i`` where ``mask_i``, ``u_i = g_i`` elsewhere (unchanged,
    as in optax). The inner state only holds the masked leaves.

    Args:
      inner: the inner ``Optimizer`` (optax's keyword).
      mask: pytree of bools (or callable ``params -> mask``; called on the grads
        in ``update``, which have the same structure).
      optimizer: the former name of ``inner`` (deprecated).

    Returns:
      An ``Optimizer`` with a ``MaskedState``.
    """
    optimizer = renamed("masked", "optimizer", "inner", optimizer, inner)
    if optimizer is None:
        raise TypeError("masked() needs the inner optimizer: masked(inner, mask).")

    def init(params):
        check_params(params)
        flags = resolve_mask(mask, params)
        return MaskedState(optimizer.init(_select(params, flags)))

    def update(grads, state, params=None, **extra):
        check_state(state, MaskedState, "masked")
        check_grads(grads, params)
        flags = resolve_mask(mask, grads)
        sub_params = None if params is None else _select(params, flags)
        sub_updates, inner = optimizer.update(
            _select(grads, flags), state.inner_state, sub_params, **extra
        )
        leaves, treedef = jax.tree.flatten(grads)
        chosen = _selected_leaves(sub_updates)  # aligned with leaves
        out = [c if f else g for g, c, f in zip(leaves, chosen, flags, strict=True)]
        return treedef.unflatten(out), MaskedState(inner)

    return Optimizer(init, update)


class PartitionState(NamedTuple):
    """State of :func:`partition`: one inner state per label."""

    inner_states: dict


def partition(
    transforms: dict[Hashable, Optimizer],
    param_labels: PyTree | Callable[[PyTree], PyTree] = None,
    *,
    labels: Any = _UNSET,
) -> Optimizer:
    """Per-group rules: each leaf is updated by the optimizer of its label.

    ``u_i = transforms[labels_i](g restricted to label labels_i)_i``. Every leaf
    must have a label present in ``transforms``.

    Args:
      transforms: ``{label: Optimizer}``.
      param_labels: a pytree of labels with the params' structure, or a
        callable ``params -> labels`` (optax's keyword).
      labels: the former name of ``param_labels`` (deprecated).

    Returns:
      An ``Optimizer`` with a ``PartitionState``.

    Example::

        opt = partition({"w": adam(1e-3), "b": sgd(1e-2)},
                        lambda p: [{"W": "w", "b": "b"} for _ in p])
    """
    labels = renamed("partition", "labels", "param_labels", labels, param_labels)
    if labels is None:
        raise TypeError(
            "partition() needs param_labels: partition(transforms, param_labels)."
        )
    if not isinstance(transforms, dict) or not transforms:
        raise ValueError(f"transforms must be a non-empty dict, got {transforms!r}.")

    def leaf_labels(tree):
        lab = labels(tree) if callable(labels) else labels
        check_same_structure(tree, lab, "labels", "params")
        flat, _ = jax.tree_util.tree_flatten_with_path(lab)
        for path, leaf in flat:
            if leaf not in transforms:
                raise ValueError(
                    f"labels leaf {keystr(path)} is {leaf!r}, which is not a key of "
                    f"transforms {sorted(map(repr, transforms))}."
                )
        return [leaf for _, leaf in flat]

    def init(params):
        check_params(params)
        lab = leaf_labels(params)
        return PartitionState(
            {
                name: opt.init(_select(params, [x == name for x in lab]))
                for name, opt in transforms.items()
            }
        )

    def update(grads, state, params=None, **extra):
        check_state(state, PartitionState, "partition")
        if set(state.inner_states) != set(transforms):
            raise TypeError(
                f"partition.update got a state for the labels "
                f"{sorted(map(repr, state.inner_states))}, but this partition has "
                f"{sorted(map(repr, transforms))}: it was made by another partition."
            )
        check_grads(grads, params)
        lab = leaf_labels(grads)
        leaves, treedef = jax.tree.flatten(grads)
        out = list(leaves)
        new_states = {}
        for name, opt in transforms.items():
            flags = [x == name for x in lab]
            sub_params = None if params is None else _select(params, flags)
            sub_updates, new_states[name] = opt.update(
                _select(grads, flags), state.inner_states[name], sub_params, **extra
            )
            chosen = _selected_leaves(sub_updates)  # aligned with leaves
            for i, f in enumerate(flags):
                if f:
                    out[i] = chosen[i]
        return treedef.unflatten(out), PartitionState(new_states)

    return Optimizer(init, update)


class SkipIfNonfiniteState(NamedTuple):
    """State of :func:`skip_if_nonfinite`.

    Attributes:
      inner_state: the wrapped optimizer's state (unchanged on skipped steps).
      count: int32 scalar, number of ``update`` calls (skipped or not).
      num_skipped: int32 scalar, number of skipped steps.
      last_finite: bool scalar, whether the last gradient was finite.
    """

    inner_state: PyTree
    count: jax.Array
    num_skipped: jax.Array
    last_finite: jax.Array


def skip_if_nonfinite(optimizer: Optimizer) -> Optimizer:
    """Skip steps whose gradient has a NaN or an infinity.

    If every gradient component is finite: ``(u, s') = optimizer.update(g, s)``.
    Otherwise ``u = 0`` and ``s' = s`` (the inner state, including its step count
    and moments, is left exactly as it was) and ``num_skipped`` grows by one. The
    choice is a ``lax.cond``, so the inner update never runs on the bad gradient
    (no NaN reaches its state, and it works under ``jax.jit``).

    Args:
      optimizer: the inner ``Optimizer``; its updates must have the gradients'
        dtypes and its state must keep its avals (the contract of ``_base.py``).

    Returns:
      An ``Optimizer`` with a ``SkipIfNonfiniteState``.
    """

    def init(params):
        return SkipIfNonfiniteState(
            optimizer.init(params),
            zero_count(),
            zero_count(),
            jnp.ones([], jnp.bool_),
        )

    def update(grads, state, params=None, **extra):
        check_state(state, SkipIfNonfiniteState, "skip_if_nonfinite")
        check_grads(grads, params)
        leaves = jax.tree.leaves(grads)
        finite = jnp.ones([], jnp.bool_)
        for g in leaves:
            finite = finite & jnp.all(jnp.isfinite(g))

        def take(_):
            return optimizer.update(grads, state.inner_state, params, **extra)

        def skip(_):
            return jax.tree.map(zeros_like_strong, grads), state.inner_state

        updates, inner = jax.lax.cond(finite, take, skip, None)
        new_state = SkipIfNonfiniteState(
            inner,
            state.count + 1,
            state.num_skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
            finite,
        )
        return updates, new_state

    return Optimizer(init, update)


register_state(
    EmptyState,
    "a stateless transform (clip_by_value, clip_by_global_norm, "
    "add_decayed_weights or freeze)",
)
register_state(ScaleByLearningRateState, "scale_by_learning_rate")
register_state(MaskedState, "masked")
register_state(PartitionState, "partition")
register_state(SkipIfNonfiniteState, "skip_if_nonfinite")
