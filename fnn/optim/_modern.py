"""Optimizers of the 2017-2024 literature: Lion, LAMB, LARS, Adafactor, RAdam,
NAdamW, Muon, Schedule-Free AdamW/SGD, SAM and Lookahead.

Notation, as in ``_first_order.py``: ``g_t`` is the gradient given to the
``t``-th call of ``update`` (``t = 1, 2, ...``), ``theta_{t-1}`` the parameters it
was computed at, ``alpha_t`` the learning rate of that call (``learning_rate(t -
1)`` for a schedule), ``u_t`` the returned update (``theta_t = theta_{t-1} +
u_t``). Operations are element-wise on every leaf unless a norm ``||.||`` (the
Frobenius norm of one leaf) is written.

Invariants (besides those of ``_base.py``):
  * every state is a NamedTuple holding ``count`` (int32, updates taken) and, for
    optimizers with a learning rate, ``learning_rate`` (float32, the rate of the
    last update; before the first, the rate it will use); the per-parameter trees
    have the parameters' dtypes (or ``mu_dtype`` / ``dtype_momentum`` where
    given), so ``jax.eval_shape(opt.update, g, s, p)[1]``
    has the avals of ``opt.init(p)`` and a jitted step traces once;
  * the arithmetic of a leaf is done in that leaf's dtype (float64 parameters get
    float64 moments, decay factors and learning rates).

The names and keywords are optax's (``optax.lion``, ``optax.lamb``,
``optax.lars``, ``optax.adafactor``, ``optax.radam``, ``optax.nadamw``,
``optax.contrib.muon``, ``optax.contrib.schedule_free_adamw``,
``optax.contrib.schedule_free_sgd``, ``optax.contrib.sam``, ``optax.lookahead``)
and so are the numbers: 200-step float64 trajectories agree with optax's to
1e-10 relative (``tests/test_optim_modern.py``). Where fnn departs from optax
(a dtype, an option not offered) the docstring says so.

Lion, LAMB and Muon take steps of fixed length (a sign, a trust ratio, an
orthogonal matrix): they do not settle at a minimum but wander around it, and
there their trajectories are chaotic (two runs that differ by one rounding
error separate about 10x every 10 steps). Comparisons between implementations
must stop before that regime.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._base import (
    Optimizer,
    PyTree,
    ScalarOrSchedule,
    apply_updates,
    check_learning_rate,
    check_nonnegative,
    check_params,
    check_scalar,
    check_unit_interval,
    is_traced,
    learning_rate_at,
)
from ._transforms import (
    EmptyState,
    Mask,
    as_dtype_of,
    check_grads,
    raw_learning_rate,
    require_params,
    resolve_mask,
    zero_count,
    zeros_like_strong,
)

# --------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------


def _check_number(name: str, value: Any) -> Any:
    """A non-negative number (not a schedule), returned as a Python float (a
    traced value unchanged, see ``check_scalar``)."""
    if callable(value):
        raise ValueError(f"{name} must be a number, not a schedule, got {value!r}.")
    return check_nonnegative(name, value)


def _maybe_nonzero(value: Any) -> bool:
    """``value != 0`` for a checked hyperparameter; a traced value counts as
    nonzero (the term it switches on is computed, and is exact when it is 0)."""
    return is_traced(value) or value != 0


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}.")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_optimizer(name: str, value: Any) -> None:
    if not isinstance(value, Optimizer):
        raise ValueError(
            f"{name} must be an fnn Optimizer (init, update), got "
            f"{type(value).__name__}."
        )


def _zeros(tree: PyTree) -> PyTree:
    return jax.tree.map(zeros_like_strong, tree)


def _moment_zeros(params: PyTree, mu_dtype: Any) -> PyTree:
    """Zeros like ``params``, in ``mu_dtype`` when it is given."""
    if mu_dtype is None:
        return _zeros(params)
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), mu_dtype), params)


def _check_dtype(name: str, value: Any) -> None:
    if value is not None:
        try:
            ok = jnp.issubdtype(jnp.dtype(value), jnp.floating)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be None or a float dtype, got {value!r}.")


def _empty_like(x: jax.Array) -> jax.Array:
    """A shape-(0,) array of ``x``'s dtype: the slot of a leaf that has no entry."""
    return jnp.zeros((0,), x.dtype)


def _flags(mask: Mask | bool | None, tree: PyTree, what: str) -> list[bool]:
    """A mask as a flat list of bools; ``None`` or ``True``: every leaf,
    ``False``: none (optax accepts a bool for "all" or "none")."""
    n = len(jax.tree.leaves(tree))
    if mask is None:
        return [True] * n
    if isinstance(mask, bool | np.bool_):
        return [bool(mask)] * n
    return resolve_mask(mask, tree, what)


def _check_mask(mask: Any, what: str) -> None:
    if mask is not None and not (
        isinstance(mask, bool | np.bool_) or callable(mask) or jax.tree.leaves(mask)
    ):
        raise ValueError(
            f"{what} must be None, a bool, a pytree of bools or a callable, "
            f"got {mask!r}."
        )


def _unzip(first: PyTree, out: PyTree, n: int) -> tuple[PyTree, ...]:
    """Split a tree of ``n``-tuples (one per leaf of ``first``) into ``n`` trees."""
    return tuple(jax.tree.map(lambda _, o, i=i: o[i], first, out) for i in range(n))


def _step(count: jax.Array, like: jax.Array) -> jax.Array:
    """``t = count + 1`` in ``like``'s dtype."""
    return (count + 1).astype(like.dtype)


def _decay(updates: PyTree, params: PyTree, weight_decay: float, flags: list[bool]):
    """``u + wd * theta`` on the leaves whose flag is set (optax's
    ``add_decayed_weights``)."""
    if not _maybe_nonzero(weight_decay):
        return updates
    leaves, treedef = jax.tree.flatten(updates)
    p_leaves = treedef.flatten_up_to(params)
    out = [
        u + as_dtype_of(weight_decay, u) * p.astype(u.dtype) if f else u
        for u, p, f in zip(leaves, p_leaves, flags, strict=True)
    ]
    return treedef.unflatten(out)


def _scale(updates: PyTree, lr: Any) -> PyTree:
    """``-alpha * d`` leaf by leaf, ``alpha`` in each leaf's dtype."""
    return jax.tree.map(lambda d: -as_dtype_of(lr, d) * d, updates)


def _adam_direction(g, m, v, t, b1, b2, eps, eps_root, nesterov):
    """Adam's moments and direction for one leaf (optax's ``scale_by_adam``).

    ``m' = (1 - b1) g + b1 m``, ``v' = (1 - b2) g^2 + b2 v``,
    ``d = m^ / (sqrt(v^ + eps_root) + eps)`` with ``v^ = v' / (1 - b2^t)`` and
    ``m^ = m' / (1 - b1^t)`` or, Nesterov, ``b1 m' / (1 - b1^(t+1)) + (1 - b1) g /
    (1 - b1^t)``. Returns ``(d, m', v', m^, v^)``.
    """
    B1, B2 = as_dtype_of(b1, g), as_dtype_of(b2, g)
    m = (1 - B1) * g + B1 * m
    v = (1 - B2) * (g * g) + B2 * v
    if nesterov:
        m_hat = B1 * (m / (1 - B1 ** (t + 1))) + (1 - B1) * (g / (1 - B1**t))
    else:
        m_hat = m / (1 - B1**t)
    v_hat = v / (1 - B2**t)
    d = m_hat / (jnp.sqrt(v_hat + as_dtype_of(eps_root, g)) + as_dtype_of(eps, g))
    return d, m, v, m_hat, v_hat


def _trust_ratio(u: jax.Array, p: jax.Array, coefficient: float, eps: float):
    """``u * c ||theta|| / (||u|| + eps)``, or ``u`` when either norm is 0."""
    p_norm = jnp.linalg.norm(p.astype(u.dtype))
    u_norm = jnp.linalg.norm(u)
    zero = (p_norm == 0) | (u_norm == 0)
    safe_den = jnp.where(zero, jnp.ones_like(u_norm), u_norm + as_dtype_of(eps, u))
    ratio = as_dtype_of(coefficient, u) * p_norm / safe_den
    return u * jnp.where(zero, jnp.ones_like(ratio), ratio)


class MomentsState(NamedTuple):
    """State of :func:`lamb`, :func:`radam` and :func:`nadamw`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, rate of the last update.
      mu: first-moment EMA ``m`` (like the params).
      nu: second-moment EMA ``v`` (like the params).
    """

    count: jax.Array
    learning_rate: jax.Array
    mu: PyTree
    nu: PyTree


def _moments_init(learning_rate, mu_dtype=None):
    def init(params):
        check_params(params)
        count = zero_count()
        return MomentsState(
            count,
            learning_rate_at(learning_rate, count),
            _moment_zeros(params, mu_dtype),
            _zeros(params),
        )

    return init


# --------------------------------------------------------------------------
# Lion.
# --------------------------------------------------------------------------


class LionState(NamedTuple):
    """State of :func:`lion`: ``count``, ``learning_rate`` and the momentum ``mu``
    (like the params)."""

    count: jax.Array
    learning_rate: jax.Array
    mu: PyTree


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: float = 1e-3,
    mask: Mask | None = None,
) -> Optimizer:
    """Lion, "evolved sign momentum" (Chen et al. 2023).

    ::

        c_t  = b1 m_{t-1} + (1 - b1) g_t
        u_t  = -alpha_t (sign(c_t) + wd theta_{t-1})
        m_t  = b2 m_{t-1} + (1 - b2) g_t,            m_0 = 0

    Every component moves by exactly ``alpha_t`` (plus decay): the learning rate
    should be 3-10x smaller than AdamW's and the weight decay 3-10x larger.

    Args:
      learning_rate: ``alpha``, a non-negative float or a schedule.
      b1: interpolation rate of the update direction, in ``[0, 1)``.
      b2: decay of the momentum, in ``[0, 1)``.
      mu_dtype: dtype in which ``m`` is stored (``None``: the params'); the
        arithmetic is in the gradients' dtype (optax multiplies ``b * m`` in
        ``mu_dtype`` before promoting, so with a low-precision ``mu_dtype`` the
        two round differently).
      weight_decay: ``wd >= 0``, decoupled, multiplied by the learning rate
        (optax's and PyTorch's convention; the paper multiplies it by the
        schedule multiplier only).
      mask: where to apply the decay: ``None`` (all leaves), a bool, a pytree of
        bools or a callable ``params -> mask``.

    Returns:
      An ``Optimizer`` with a :class:`LionState`; ``update`` needs ``params``
      when ``weight_decay > 0``.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023,
      Program 1.
    """
    learning_rate = check_learning_rate(learning_rate)
    b1 = check_unit_interval("b1", b1)
    b2 = check_unit_interval("b2", b2)
    _check_dtype("mu_dtype", mu_dtype)
    weight_decay = _check_number("weight_decay", weight_decay)
    _check_mask(mask, "mask")

    def init(params):
        check_params(params)
        _flags(mask, params, "mask")
        count = zero_count()
        return LionState(
            count,
            learning_rate_at(learning_rate, count),
            _moment_zeros(params, mu_dtype),
        )

    def update(grads, state, params=None, **extra):
        if _maybe_nonzero(weight_decay):
            require_params(params, "lion")
        check_grads(grads, params, state.mu)
        lr = raw_learning_rate(learning_rate, state.count)

        def leaf(g, m_old):
            B1, B2 = as_dtype_of(b1, g), as_dtype_of(b2, g)
            m = m_old.astype(g.dtype)
            c = (1 - B1) * g + B1 * m
            return jnp.sign(c), ((1 - B2) * g + B2 * m).astype(m_old.dtype)

        direction, mu = _unzip(grads, jax.tree.map(leaf, grads, state.mu), 2)
        if _maybe_nonzero(weight_decay):
            direction = _decay(
                direction, params, weight_decay, _flags(mask, params, "mask")
            )
        lr32 = learning_rate_at(learning_rate, state.count)
        return _scale(direction, lr), LionState(state.count + 1, lr32, mu)

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# LAMB and LARS: layer-wise trust ratios.
# --------------------------------------------------------------------------


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask | None = None,
) -> Optimizer:
    """LAMB: Adam directions rescaled per leaf by a trust ratio (You et al. 2019).

    With Adam's bias-corrected moments ``m^_t, v^_t`` (see :func:`~fnn.optim.adam`)::

        r_t   = m^_t / (sqrt(v^_t + eps_root) + eps) + wd theta_{t-1}
        phi_t = ||theta_{t-1}|| / ||r_t||     (1 if either norm is 0)
        u_t   = -alpha_t phi_t r_t

    with one ratio ``phi_t`` per leaf ("layer"). The paper also clips
    ``||theta||`` through a function ``phi``; optax and fnn use the identity.

    Args:
      learning_rate: ``alpha``, a non-negative float or a schedule.
      b1, b2: moment decays in ``[0, 1)``.
      eps: ``eps >= 0`` outside the root (optax's default 1e-6).
      eps_root: ``>= 0`` inside the root.
      weight_decay: ``wd >= 0``, added to the direction before the trust ratio.
      mask: where to decay: ``None`` (all), a bool, a pytree of bools or a
        callable.

    Returns:
      An ``Optimizer`` with a :class:`MomentsState`; ``update`` needs ``params``.

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in
      76 minutes", 2019 (ICLR 2020), Algorithm 2.
    """
    learning_rate = check_learning_rate(learning_rate)
    b1 = check_unit_interval("b1", b1)
    b2 = check_unit_interval("b2", b2)
    eps = _check_number("eps", eps)
    eps_root = _check_number("eps_root", eps_root)
    weight_decay = _check_number("weight_decay", weight_decay)
    _check_mask(mask, "mask")

    def update(grads, state, params=None, **extra):
        require_params(params, "lamb")
        check_grads(grads, params, state.mu, state.nu)
        lr = raw_learning_rate(learning_rate, state.count)
        out = jax.tree.map(
            lambda g, m, v: _adam_direction(
                g, m, v, _step(state.count, g), b1, b2, eps, eps_root, False
            )[:3],
            grads,
            state.mu,
            state.nu,
        )
        r, mu, nu = _unzip(grads, out, 3)
        r = _decay(r, params, weight_decay, _flags(mask, params, "mask"))
        r = jax.tree.map(lambda u, p: _trust_ratio(u, p, 1.0, 0.0), r, params)
        lr32 = learning_rate_at(learning_rate, state.count)
        return _scale(r, lr), MomentsState(state.count + 1, lr32, mu, nu)

    return Optimizer(_moments_init(learning_rate), update)


class LarsState(NamedTuple):
    """State of :func:`lars`: ``count``, ``learning_rate`` and the momentum trace
    ``v`` (like the params; it holds learning-rate-scaled steps)."""

    count: jax.Array
    learning_rate: jax.Array
    trace: PyTree


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | bool = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Mask | bool = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> Optimizer:
    """LARS: SGD with momentum and a per-leaf trust ratio (You et al. 2017).

    ::

        d_t   = g_t + wd theta_{t-1}
        phi_t = eta ||theta_{t-1}|| / (||d_t|| + eps)   (1 if a norm is 0)
        s_t   = -alpha_t phi_t d_t
        v_t   = s_t + mu v_{t-1},                        v_0 = 0
        u_t   = v_t            (Nesterov: u_t = s_t + mu v_t)

    ``eta`` is ``trust_coefficient``; leaves outside ``trust_ratio_mask`` use
    ``phi_t = 1``. The learning rate sits inside the momentum trace (optax's
    order; the paper's Algorithm 1 is the same).

    Args:
      learning_rate: ``alpha``, a non-negative float or a schedule.
      weight_decay: ``wd >= 0``.
      weight_decay_mask: where to decay (bool, pytree of bools or callable).
      trust_coefficient: ``eta >= 0``.
      eps: ``>= 0`` in the ratio's denominator.
      trust_ratio_mask: where to apply the trust ratio (often: not on biases).
      momentum: ``mu`` in ``[0, 1)``.
      nesterov: Nesterov form of the momentum.

    Returns:
      An ``Optimizer`` with a :class:`LarsState`; ``update`` needs ``params``.

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
      2017, Algorithm 1.
    """
    learning_rate = check_learning_rate(learning_rate)
    weight_decay = _check_number("weight_decay", weight_decay)
    trust_coefficient = _check_number("trust_coefficient", trust_coefficient)
    eps = _check_number("eps", eps)
    momentum = check_unit_interval("momentum", momentum)
    _check_bool("nesterov", nesterov)
    _check_mask(weight_decay_mask, "weight_decay_mask")
    _check_mask(trust_ratio_mask, "trust_ratio_mask")

    def init(params):
        check_params(params)
        _flags(weight_decay_mask, params, "weight_decay_mask")
        _flags(trust_ratio_mask, params, "trust_ratio_mask")
        count = zero_count()
        return LarsState(count, learning_rate_at(learning_rate, count), _zeros(params))

    def update(grads, state, params=None, **extra):
        require_params(params, "lars")
        check_grads(grads, params, state.trace)
        lr = raw_learning_rate(learning_rate, state.count)
        d = _decay(
            grads,
            params,
            weight_decay,
            _flags(weight_decay_mask, params, "weight_decay_mask"),
        )
        flags = _flags(trust_ratio_mask, params, "trust_ratio_mask")
        leaves, treedef = jax.tree.flatten(d)
        p_leaves = treedef.flatten_up_to(params)
        leaves = [
            _trust_ratio(u, p, trust_coefficient, eps) if f else u
            for u, p, f in zip(leaves, p_leaves, flags, strict=True)
        ]
        s = _scale(treedef.unflatten(leaves), lr)
        mu = momentum
        trace = jax.tree.map(lambda s, v: s + as_dtype_of(mu, s) * v, s, state.trace)
        if nesterov:
            updates = jax.tree.map(lambda s, v: s + as_dtype_of(mu, s) * v, s, trace)
        else:
            updates = trace
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, LarsState(state.count + 1, lr32, trace)

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# Adafactor.
# --------------------------------------------------------------------------


class AdafactorState(NamedTuple):
    """State of :func:`adafactor`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, rate of the last update (1 when
        ``learning_rate`` is ``None``).
      v_row: per leaf, the row statistics ``R`` of a factored leaf (the leaf's
        shape without its largest axis ``d0``); shape ``(0,)`` for unfactored
        leaves.
      v_col: per leaf, the column statistics ``C`` (shape without the second
        largest axis ``d1``); shape ``(0,)`` for unfactored leaves.
      v: per leaf, the full second moment of an unfactored leaf; shape ``(0,)``
        for factored leaves.
      momentum: EMA of the updates in ``dtype_momentum`` (like the params), or
        ``None`` when ``momentum`` is ``None``.
    """

    count: jax.Array
    learning_rate: jax.Array
    v_row: PyTree
    v_col: PyTree
    v: PyTree
    momentum: PyTree


def _factored_dims(shape, factored: bool, min_dim: int) -> tuple[int, int] | None:
    """``(d1, d0)``: the second largest and the largest axis, or ``None`` when the
    leaf is not factored (rank < 2, or its second largest axis < ``min_dim``).
    Ties are broken as ``numpy.argsort`` breaks them, as in optax."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim:
        return None
    return int(order[-2]), int(order[-1])


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask | None = None,
) -> Optimizer:
    """Adafactor: factored second moments (Shazeer & Stern 2018), optax's pipeline.

    Second-moment decay ``b2_t = 1 - (t - offset)^(-c)`` (``c = decay_rate``).
    For a leaf whose two largest axes ``d0`` (largest) and ``d1`` are both
    ``>= min_dim_size_to_factor`` (a matrix ``(n, m)`` with ``n >= m``: ``d0 =
    0``), with ``G = g_t^2 + eps``::

        R_t = b2_t R_{t-1} + (1 - b2_t) mean_{d0}(G)      (row statistics)
        C_t = b2_t C_{t-1} + (1 - b2_t) mean_{d1}(G)      (column statistics)
        V^_t = (R_t / mean(R_t)) outer C_t                (rank-1 estimate of E[g^2])

    other leaves keep the full ``V_t = b2_t V_{t-1} + (1 - b2_t) G``. Then::

        d_t = g_t / sqrt(V^_t)
        d_t = d_t / max(1, RMS(d_t) / clipping_threshold)     (update clipping)
        d_t = alpha_t d_t                                     (if learning_rate)
        d_t = d_t max(RMS(theta_{t-1}), 1e-3)        (multiply_by_parameter_scale)
        m_t = momentum m_{t-1} + (1 - momentum) d_t, d_t = m_t  (if momentum)
        u_t = -(d_t + wd theta_{t-1})                      (if weight_decay_rate)

    Memory for an ``(n, m)`` matrix is ``n + m`` instead of ``n m``.

    Warning:
      optax's defaults are kept, and they differ from the paper's: with
      ``learning_rate=None`` the step is not scaled (the paper's relative step
      ``min(1e-2, 1/sqrt(t))`` is ``learning_rate=lambda c: jnp.minimum(1e-2,
      (c + 1.0) ** -0.5)``); the weight decay is not multiplied by the learning
      rate; the momentum EMA is not bias-corrected and is stored in
      ``dtype_momentum`` (float32). optax computes the decay ``b2_t`` in float32
      whatever the parameters' dtype; fnn computes it in each leaf's dtype, so
      float64 trajectories agree with optax to ~1e-7, and to 1e-10 when optax's
      ``scale_by_factored_rms`` is given a float64 ``decay_rate_fn``. The paper
      keeps row and column *sums*; with means the estimate ``V^`` is the same.

    Args:
      learning_rate: ``alpha`` (float or schedule), or ``None`` for no scaling.
      min_dim_size_to_factor: factor a leaf only when its two largest axes are at
        least this long.
      decay_rate: the exponent ``c`` of the decay schedule.
      decay_offset: ``offset``, a step offset for fine-tuning.
      multiply_by_parameter_scale: scale by the leaf's RMS (at least 1e-3).
      clipping_threshold: the update-clipping threshold, or ``None``.
      momentum: EMA rate of the updates in ``[0, 1)``, or ``None``.
      dtype_momentum: dtype of the momentum accumulator.
      weight_decay_rate: ``wd >= 0`` or ``None``.
      eps: added to ``g^2``.
      factored: factor the second moments of matrices at all.
      weight_decay_mask: where to decay.

    Returns:
      An ``Optimizer`` with an :class:`AdafactorState`; ``update`` needs
      ``params``.

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
      Cost", ICML 2018, Algorithms 4 and 5.
    """
    if learning_rate is not None:
        learning_rate = check_learning_rate(learning_rate)
    _check_positive_int("min_dim_size_to_factor", min_dim_size_to_factor)
    decay_rate = _check_number("decay_rate", decay_rate)
    if not isinstance(decay_offset, int) or decay_offset < 0:
        raise ValueError(f"decay_offset must be an integer >= 0, got {decay_offset!r}.")
    _check_bool("multiply_by_parameter_scale", multiply_by_parameter_scale)
    if clipping_threshold is not None:
        clipping_threshold = check_scalar(
            "clipping_threshold", clipping_threshold, lo=0, lo_open=True
        )
    if momentum is not None:
        momentum = check_unit_interval("momentum", momentum)
    if weight_decay_rate is not None:
        weight_decay_rate = _check_number("weight_decay_rate", weight_decay_rate)
    eps = _check_number("eps", eps)
    _check_bool("factored", factored)
    _check_mask(weight_decay_mask, "weight_decay_mask")
    lr_or_one = 1.0 if learning_rate is None else learning_rate

    def init_leaf(p):
        dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
        if dims is None:
            return _empty_like(p), _empty_like(p), zeros_like_strong(p)
        d1, d0 = dims
        row = jnp.zeros(np.delete(p.shape, d0), p.dtype)
        col = jnp.zeros(np.delete(p.shape, d1), p.dtype)
        return row, col, _empty_like(p)

    def init(params):
        check_params(params)
        _flags(weight_decay_mask, params, "weight_decay_mask")
        v_row, v_col, v = _unzip(params, jax.tree.map(init_leaf, params), 3)
        mom = None
        if momentum is not None:
            mom = jax.tree.map(lambda p: jnp.zeros(p.shape, dtype_momentum), params)
        count = zero_count()
        return AdafactorState(
            count, learning_rate_at(lr_or_one, count), v_row, v_col, v, mom
        )

    def leaf(g, row, col, v, p, count):
        t = (count - decay_offset + 1).astype(g.dtype)
        b2 = 1 - t ** as_dtype_of(-decay_rate, g)
        G = g * g + as_dtype_of(eps, g)
        dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
        if dims is None:
            v = b2 * v + (1 - b2) * G
            return g * v**-0.5, row, col, v
        d1, d0 = dims
        row = b2 * row + (1 - b2) * jnp.mean(G, axis=d0)
        col = b2 * col + (1 - b2) * jnp.mean(G, axis=d1)
        reduced_d1 = d1 - 1 if d1 > d0 else d1
        row_factor = (row / jnp.mean(row, axis=reduced_d1, keepdims=True)) ** -0.5
        col_factor = col**-0.5
        d = g * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
        return d, row, col, v

    def update(grads, state, params=None, **extra):
        require_params(params, "adafactor")
        check_grads(grads, params, state.v, state.momentum)
        out = jax.tree.map(
            lambda g, r, c, v, p: leaf(g, r, c, v, p, state.count),
            grads,
            state.v_row,
            state.v_col,
            state.v,
            params,
        )
        d, v_row, v_col, v = _unzip(grads, out, 4)
        if clipping_threshold is not None:

            def clip(u):
                rms = jnp.sqrt(jnp.mean(u * u))
                return u / jnp.maximum(1, rms / as_dtype_of(clipping_threshold, u))

            d = jax.tree.map(clip, d)
        if learning_rate is not None:
            lr = raw_learning_rate(learning_rate, state.count)
            d = jax.tree.map(lambda u: u * as_dtype_of(lr, u), d)
        if multiply_by_parameter_scale:

            def param_scale(u, p):
                p = p.astype(u.dtype)
                rms = jnp.sqrt(jnp.mean(p * p))
                return u * jnp.maximum(rms, as_dtype_of(1e-3, u))

            d = jax.tree.map(param_scale, d, params)
        mom = None
        if momentum is not None:
            ema = jax.tree.map(
                lambda u, m: (
                    (1 - as_dtype_of(momentum, u)) * u
                    + as_dtype_of(momentum, u) * m.astype(u.dtype)
                ),
                d,
                state.momentum,
            )
            d = ema
            mom = jax.tree.map(lambda m: m.astype(dtype_momentum), ema)
        if weight_decay_rate is not None:
            d = _decay(
                d,
                params,
                weight_decay_rate,
                _flags(weight_decay_mask, params, "weight_decay_mask"),
            )
        updates = jax.tree.map(lambda u: -u, d)
        lr32 = learning_rate_at(lr_or_one, state.count)
        new_state = AdafactorState(state.count + 1, lr32, v_row, v_col, v, mom)
        return updates, new_state

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# RAdam and NAdamW.
# --------------------------------------------------------------------------


def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> Optimizer:
    """Rectified Adam (Liu et al. 2019): Adam with its variance rectified.

    With Adam's moments ``m_t, v_t``, ``m^_t = m_t / (1 - b1^t)``, ``v^_t = v_t /
    (1 - b2^t)`` and the length of the approximate simple moving average::

        rho_inf = 2 / (1 - b2) - 1
        rho_t   = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t     = sqrt((rho_t - 4)(rho_t - 2) rho_inf
                       / ((rho_inf - 4)(rho_inf - 2) rho_t))
        u_t = -alpha_t r_t m^_t / (sqrt(v^_t + eps_root) + eps)   if rho_t >= threshold
        u_t = -alpha_t m^_t                                        otherwise

    Warning:
      the paper switches at ``rho_t > 4``; optax (and fnn) use ``rho_t >=
      threshold`` with ``threshold = 5``, PyTorch ``rho_t > 5``. With the default
      ``b2 = 0.999`` the first 5 steps are un-adapted momentum SGD.

    Args:
      learning_rate: ``alpha``, a non-negative float or a schedule.
      b1, b2: moment decays in ``[0, 1)``.
      eps, eps_root: ``>= 0``, outside and inside the root.
      threshold: the ``rho_t`` above which the adaptive step is used.
      nesterov: use NAdam's look-ahead ``m^_t`` (as in :func:`nadamw`).

    Returns:
      An ``Optimizer`` with a :class:`MomentsState`.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
      2019 (ICLR 2020), Algorithm 2.
    """
    learning_rate = check_learning_rate(learning_rate)
    b1 = check_unit_interval("b1", b1)
    b2 = check_unit_interval("b2", b2)
    eps = _check_number("eps", eps)
    eps_root = _check_number("eps_root", eps_root)
    threshold = check_scalar("threshold", threshold)
    _check_bool("nesterov", nesterov)
    rho_inf_value = 2.0 / (1.0 - b2) - 1.0

    def leaf(g, m, v, count):
        t = _step(count, g)
        d, m, v, m_hat, _ = _adam_direction(g, m, v, t, b1, b2, eps, eps_root, nesterov)
        b2t = as_dtype_of(b2, g) ** t
        rho_inf = rho_inf_value
        if is_traced(rho_inf):
            rho_inf = as_dtype_of(rho_inf, g)
        rho = rho_inf - 2 * t * b2t / (1 - b2t)
        adapt = rho >= as_dtype_of(threshold, g)
        # r_t is only evaluated where it is real (rho >= threshold >= 4 there).
        safe_rho = jnp.where(adapt, rho, jnp.full_like(rho, rho_inf))
        r = jnp.sqrt(
            (safe_rho - 4)
            * (safe_rho - 2)
            * rho_inf
            / ((rho_inf - 4) * (rho_inf - 2) * safe_rho)
        )
        return jnp.where(adapt, r * d, m_hat), m, v

    def update(grads, state, params=None, **extra):
        check_grads(grads, params, state.mu, state.nu)
        lr = raw_learning_rate(learning_rate, state.count)
        out = jax.tree.map(
            lambda g, m, v: leaf(g, m, v, state.count), grads, state.mu, state.nu
        )
        d, mu, nu = _unzip(grads, out, 3)
        lr32 = learning_rate_at(learning_rate, state.count)
        return _scale(d, lr), MomentsState(state.count + 1, lr32, mu, nu)

    return Optimizer(_moments_init(learning_rate), update)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
) -> Optimizer:
    """NAdamW: NAdam's look-ahead moment with decoupled weight decay.

    ::

        m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)
        v^_t = v_t / (1 - b2^t)
        u_t = -alpha_t (m^_t / (sqrt(v^_t + eps_root) + eps) + wd theta_{t-1})

    This is optax's ``nadamw`` (``adamw(..., nesterov=True)``): constant-momentum
    NAdam (PyTorch's ``NAdam(decoupled_weight_decay=True)`` also decays the
    momentum with its ``momentum_decay`` schedule, so its numbers differ), decay
    multiplied by the learning rate as in :func:`~fnn.optim.adamw`.

    Args:
      learning_rate: ``alpha``, a non-negative float or a schedule.
      b1, b2: moment decays in ``[0, 1)``.
      eps, eps_root: ``>= 0``, outside and inside the root.
      mu_dtype: dtype in which ``m`` is stored (``None``: the params').
      weight_decay: ``wd >= 0``.
      mask: where to decay: ``None`` (all), a bool, pytree of bools or callable.

    Returns:
      An ``Optimizer`` with a :class:`MomentsState`; ``update`` needs ``params``
      when ``weight_decay > 0``.

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", 2016; Loshchilov &
      Hutter, "Decoupled Weight Decay Regularization", 2019.
    """
    learning_rate = check_learning_rate(learning_rate)
    b1 = check_unit_interval("b1", b1)
    b2 = check_unit_interval("b2", b2)
    eps = _check_number("eps", eps)
    eps_root = _check_number("eps_root", eps_root)
    _check_dtype("mu_dtype", mu_dtype)
    weight_decay = _check_number("weight_decay", weight_decay)
    _check_mask(mask, "mask")

    def update(grads, state, params=None, **extra):
        if _maybe_nonzero(weight_decay):
            require_params(params, "nadamw")
        check_grads(grads, params, state.mu, state.nu)
        lr = raw_learning_rate(learning_rate, state.count)
        out = jax.tree.map(
            lambda g, m, v: _adam_direction(
                g,
                m.astype(g.dtype),
                v,
                _step(state.count, g),
                b1,
                b2,
                eps,
                eps_root,
                True,
            )[:3],
            grads,
            state.mu,
            state.nu,
        )
        d, mu, nu = _unzip(grads, out, 3)
        mu = jax.tree.map(lambda new, old: new.astype(old.dtype), mu, state.mu)
        if _maybe_nonzero(weight_decay):
            d = _decay(d, params, weight_decay, _flags(mask, params, "mask"))
        lr32 = learning_rate_at(learning_rate, state.count)
        return _scale(d, lr), MomentsState(state.count + 1, lr32, mu, nu)

    return Optimizer(_moments_init(learning_rate, mu_dtype), update)


# --------------------------------------------------------------------------
# Muon.
# --------------------------------------------------------------------------

MUON_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize_via_newton_schulz(
    X: jax.Array,
    ns_coeffs: tuple[float, float, float] = MUON_NS_COEFFS,
    ns_steps: int = 5,
    eps: float = 1e-8,
) -> jax.Array:
    """Approximate the orthogonal factor ``U V^T`` of ``X = U S V^T`` (Muon).

    ::

        X_0     = X / (||X||_F + eps)          (transposed first if n > m)
        A_k     = X_k X_k^T
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,   k = 0, ..., ns_steps - 1

    Each step maps every singular value ``s`` of ``X_k`` to ``p(s) = a s + b s^3 +
    c s^5``. Jordan's quintic coefficients ``(a, b, c) = (3.4445, -4.7750,
    2.0315)`` maximise the slope ``a`` at 0 so that small singular values grow
    fast; the price is that ``p`` does not converge to 1 but makes the singular
    values oscillate in about ``[0.7, 1.2]``, which does not hurt training. The
    Frobenius scaling puts every singular value in ``(0, 1]`` first. Working on
    the wide orientation (``n <= m``) keeps ``A_k`` the smaller Gram matrix.

    Args:
      X: a matrix ``(n, m)``.
      ns_coeffs: ``(a, b, c)``.
      ns_steps: number of iterations.
      eps: added to the norm.

    Returns:
      A matrix ``(n, m)`` with singular values near 1 and ``X``'s singular vectors.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
      2024 (modded-nanogpt); Bernstein & Newhouse, "Old Optimizer, New Norm: An
      Anthology", 2024.
    """
    if X.ndim != 2:
        raise ValueError(f"X must be a matrix (n, m), got shape {X.shape}.")
    transposed = X.shape[0] > X.shape[1]
    if transposed:
        X = X.T
    X = X / (jnp.linalg.norm(X) + as_dtype_of(eps, X))
    a, b, c = (as_dtype_of(k, X) for k in ns_coeffs)
    for _ in range(ns_steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transposed else X


class MuonState(NamedTuple):
    """State of :func:`muon`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, Muon's rate of the last update.
      adam_learning_rate: float32 scalar, the fallback's rate.
      mu: first moment of every leaf (Muon's momentum on matrices, Adam's ``m``
        on the other leaves).
      nu: Adam's second moment on non-matrix leaves; shape ``(0,)`` on matrices.
    """

    count: jax.Array
    learning_rate: jax.Array
    adam_learning_rate: jax.Array
    mu: PyTree
    nu: PyTree


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: tuple[float, float, float] = MUON_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    consistent_rms: float | None = None,
) -> Optimizer:
    """Muon: momentum orthogonalised by Newton-Schulz, for the matrices (2-D leaves).

    On every 2-D leaf ``W`` of shape ``(n_in, n_out)``::

        m_t = beta m_{t-1} + (1 - beta) g_t,                   m_0 = 0
        m^_t = beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t)
               (nesterov; else m^_t = m_t / (1 - beta^t))
        O_t = NewtonSchulz(m^_t)          (see orthogonalize_via_newton_schulz)
        s   = sqrt(max(1, n_out / n_in))  (or sqrt(max(n_in, n_out)) consistent_rms)
        u_t = -alpha_t (s O_t + wd W_{t-1})

    Every other leaf (biases, scalars, tensors of other ranks) is updated by
    AdamW with ``adam_b1, adam_b2, eps, adam_eps_root, adam_weight_decay`` and
    ``adam_learning_rate`` (default: ``learning_rate``); with ``nesterov=True``
    that fallback is NAdamW, as in optax.

    Warning:
      conventions differ between implementations: Jordan's reference uses the
      un-debiased momentum ``m_t = beta m_{t-1} + g_t`` and Nesterov ``g + beta
      m``, PyTorch's ``torch.optim.Muon`` scales by ``0.2 sqrt(max(n_in,
      n_out))`` (``consistent_rms=0.2`` here) and uses ``W`` as ``(n_out,
      n_in)``; fnn follows optax (``optax.contrib.muon``): bias-corrected EMA
      momentum and the width scale on fnn's ``(n_in, n_out)`` weights. optax's
      ``preconditioning``, ``adaptive`` and ``muon_weight_dimension_numbers``
      (matrices of higher-rank leaves) are not offered.

    Args:
      learning_rate: ``alpha`` for the matrices, a float or a schedule.
      ns_coeffs: the Newton-Schulz coefficients ``(a, b, c)``.
      ns_steps: number of Newton-Schulz iterations.
      beta: momentum decay in ``[0, 1)``.
      eps: added to the norm before Newton-Schulz, and Adam's ``eps``.
      weight_decay: ``wd >= 0`` on the matrices (times the learning rate).
      weight_decay_mask: mask over all params; only its matrix leaves are read.
      mu_dtype: dtype in which the first moments are stored (``None``: the
        params').
      nesterov: Nesterov momentum for Muon and for the Adam fallback.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: the fallback AdamW's.
      adam_learning_rate: the fallback's rate, ``None`` for ``learning_rate``.
      consistent_rms: ``None`` for the width scale, else the RMS-matching scale.

    Returns:
      An ``Optimizer`` with a :class:`MuonState`; ``update`` needs ``params`` when
      a weight decay is set.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
      2024; Liu et al., "Muon is Scalable for LLM Training", 2025 (the
      consistent-RMS scale).
    """
    learning_rate = check_learning_rate(learning_rate)
    if not isinstance(ns_coeffs, tuple | list) or len(ns_coeffs) != 3:
        raise ValueError(
            f"ns_coeffs must be three numbers (a, b, c), got {ns_coeffs!r}."
        )
    ns_coeffs = tuple(
        check_scalar(f"ns_coeffs[{i}]", k) for i, k in enumerate(ns_coeffs)
    )
    _check_positive_int("ns_steps", ns_steps)
    beta = check_unit_interval("beta", beta)
    eps = _check_number("eps", eps)
    weight_decay = _check_number("weight_decay", weight_decay)
    _check_mask(weight_decay_mask, "weight_decay_mask")
    _check_dtype("mu_dtype", mu_dtype)
    _check_bool("nesterov", nesterov)
    adam_b1 = check_unit_interval("adam_b1", adam_b1)
    adam_b2 = check_unit_interval("adam_b2", adam_b2)
    adam_eps_root = _check_number("adam_eps_root", adam_eps_root)
    adam_weight_decay = _check_number("adam_weight_decay", adam_weight_decay)
    if consistent_rms is not None:
        consistent_rms = _check_number("consistent_rms", consistent_rms)
    adam_lr_value = learning_rate if adam_learning_rate is None else adam_learning_rate
    adam_lr_value = check_learning_rate(adam_lr_value, "adam_learning_rate")

    def init(params):
        check_params(params)
        _flags(weight_decay_mask, params, "weight_decay_mask")
        count = zero_count()
        nu = jax.tree.map(
            lambda p: _empty_like(p) if p.ndim == 2 else zeros_like_strong(p), params
        )
        return MuonState(
            count,
            learning_rate_at(learning_rate, count),
            learning_rate_at(adam_lr_value, count),
            _moment_zeros(params, mu_dtype),
            nu,
        )

    def muon_leaf(g, m, count, lr, decay, p):
        t = _step(count, g)
        B = as_dtype_of(beta, g)
        m = (1 - B) * g + B * m
        if nesterov:
            m_hat = B * (m / (1 - B ** (t + 1))) + (1 - B) * (g / (1 - B**t))
        else:
            m_hat = m / (1 - B**t)
        O = orthogonalize_via_newton_schulz(m_hat, ns_coeffs, ns_steps, eps)
        n_in, n_out = g.shape
        if consistent_rms is None:
            s = as_dtype_of(np.sqrt(max(1.0, n_out / n_in)), g)
        elif is_traced(consistent_rms):
            root = as_dtype_of(np.sqrt(max(n_in, n_out)), g)
            s = root * as_dtype_of(consistent_rms, g)
        else:
            s = as_dtype_of(np.sqrt(max(n_in, n_out)) * consistent_rms, g)
        d = s.astype(g.dtype) * O
        if decay:
            d = d + as_dtype_of(weight_decay, g) * p.astype(g.dtype)
        return -as_dtype_of(lr, g) * d, m

    def update(grads, state, params=None, **extra):
        if _maybe_nonzero(weight_decay) or _maybe_nonzero(adam_weight_decay):
            require_params(params, "muon")
        check_grads(grads, params, state.mu, state.nu)
        lr = raw_learning_rate(learning_rate, state.count)
        adam_lr = raw_learning_rate(adam_lr_value, state.count)
        g_leaves, treedef = jax.tree.flatten(grads)
        m_leaves = treedef.flatten_up_to(state.mu)
        v_leaves = treedef.flatten_up_to(state.nu)
        p_leaves = (
            treedef.flatten_up_to(params)
            if params is not None
            else [None] * len(g_leaves)
        )
        flags = (
            _flags(weight_decay_mask, params, "weight_decay_mask")
            if _maybe_nonzero(weight_decay)
            else [False] * len(g_leaves)
        )
        out_u, out_m, out_v = [], [], []
        for g, m, v, p, f in zip(
            g_leaves, m_leaves, v_leaves, p_leaves, flags, strict=True
        ):
            m_dtype = m.dtype
            m = m.astype(g.dtype)
            if g.ndim == 2:
                u, m = muon_leaf(g, m, state.count, lr, f, p)
            else:
                t = _step(state.count, g)
                d, m, v, _, _ = _adam_direction(
                    g, m, v, t, adam_b1, adam_b2, eps, adam_eps_root, nesterov
                )
                if _maybe_nonzero(adam_weight_decay):
                    d = d + as_dtype_of(adam_weight_decay, g) * p.astype(g.dtype)
                u = -as_dtype_of(adam_lr, g) * d
            out_u.append(u)
            out_m.append(m.astype(m_dtype))
            out_v.append(v)
        new_state = MuonState(
            state.count + 1,
            learning_rate_at(learning_rate, state.count),
            learning_rate_at(adam_lr_value, state.count),
            treedef.unflatten(out_m),
            treedef.unflatten(out_v),
        )
        return treedef.unflatten(out_u), new_state

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# Schedule-Free.
# --------------------------------------------------------------------------


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free_adamw` and :func:`schedule_free_sgd`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, rate of the last update.
      b1: the interpolation ``beta`` (kept for :func:`schedule_free_eval_params`),
        in the lowest float dtype of the params.
      weight_sum: ``sum_{i <= t} w_i``, same dtype.
      max_lr: ``max_{i <= t} alpha_i``, same dtype.
      z: the base sequence ``z_t`` (like the params).
      nu: AdamW's second moment (like the params), ``None`` for SGD.
    """

    count: jax.Array
    learning_rate: jax.Array
    b1: jax.Array
    weight_sum: jax.Array
    max_lr: jax.Array
    z: PyTree
    nu: PyTree


def schedule_free_eval_params(state: PyTree, params: PyTree) -> PyTree:
    """The evaluation point ``x_t`` of a Schedule-Free optimizer.

    The parameters a Schedule-Free optimizer hands back are the gradient points
    ``y_t = (1 - beta) z_t + beta x_t``; the averaged iterate to evaluate, test
    and save is ``x_t = (y_t - (1 - beta) z_t) / beta``.

    Args:
      state: a :class:`ScheduleFreeState` (from :func:`schedule_free_adamw` or
        :func:`schedule_free_sgd`).
      params: the current parameters ``y_t``.

    Returns:
      ``x_t``, a pytree like ``params``.

    References:
      Defazio et al., "The Road Less Scheduled", 2024, equation (1).
    """
    if not isinstance(state, ScheduleFreeState):
        raise ValueError(
            "schedule_free_eval_params needs the ScheduleFreeState of "
            f"schedule_free_adamw or schedule_free_sgd, got {type(state).__name__}."
        )
    b1 = state.b1
    return jax.tree.map(
        lambda y, z: (y - (1 - b1.astype(y.dtype)) * z) / b1.astype(y.dtype),
        params,
        state.z,
    )


def _lowest_float(params: PyTree) -> Any:
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(params)]
    if not dtypes:
        return jnp.float32
    return min(dtypes, key=lambda d: jnp.dtype(d).itemsize)


def _warmup_constant(peak: float, warmup_steps: int) -> Callable:
    """``alpha(c) = peak min(c / W, 1)``, in the default float dtype (optax's
    ``warmup_constant_schedule(0, peak, W)``)."""

    def schedule(count):
        c = jnp.clip(count, 0, warmup_steps)
        return (0.0 - peak) * (1 - c / warmup_steps) + peak

    return schedule


def _schedule_free(
    name: str,
    learning_rate: ScalarOrSchedule,
    warmup_steps: int | None,
    b1: float,
    weight_lr_power: float,
    adam: tuple[float, float] | None,
    weight_decay: float | None,
) -> Optimizer:
    learning_rate = check_learning_rate(learning_rate)
    if warmup_steps is not None:
        _check_positive_int("warmup_steps", warmup_steps)
        if callable(learning_rate):
            raise ValueError(
                "warmup_steps needs a constant learning_rate; put the warm-up in "
                "the schedule instead."
            )
        learning_rate = _warmup_constant(learning_rate, warmup_steps)
    b1 = check_scalar("b1", b1, lo=0, hi=1, lo_open=True, hi_open=True)
    weight_lr_power = _check_number("weight_lr_power", weight_lr_power)
    if weight_decay is not None:
        weight_decay = _check_number("weight_decay", weight_decay)
    if adam is not None:
        adam = (check_unit_interval("b2", adam[0]), _check_number("eps", adam[1]))

    def init(params):
        check_params(params)
        dt = _lowest_float(params)
        count = zero_count()
        return ScheduleFreeState(
            count,
            learning_rate_at(learning_rate, count),
            jnp.asarray(b1, dt),
            jnp.zeros([], dt),
            jnp.zeros([], dt),
            jax.tree.map(lambda p: jnp.array(p, copy=True), params),
            _zeros(params) if adam is not None else None,
        )

    def update(grads, state, params=None, **extra):
        require_params(params, name)
        check_grads(grads, params, state.z, state.nu)
        dt = state.max_lr.dtype
        lr = raw_learning_rate(learning_rate, state.count)
        # The averaging weight reads the schedule one step ahead (optax's
        # step_count starts at 1), the base step reads it at count.
        lr_w = raw_learning_rate(learning_rate, state.count + 1)
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr_w, dt))
        weight = max_lr ** jnp.asarray(weight_lr_power, dt)
        weight_sum = state.weight_sum + weight
        safe_sum = jnp.where(weight_sum > 0, weight_sum, jnp.ones_like(weight_sum))
        ck = jnp.where(weight_sum > 0, weight / safe_sum, jnp.zeros_like(weight))
        if adam is not None:
            b2, eps = adam
            t = _step(state.count, jnp.zeros([], dt))

            def base(g, v):
                B2 = as_dtype_of(b2, g)
                v = (1 - B2) * (g * g) + B2 * v
                v_hat = v / (1 - B2 ** t.astype(g.dtype))
                return g * (1 / (jnp.sqrt(v_hat) + as_dtype_of(eps, g))), v

            d, nu = _unzip(grads, jax.tree.map(base, grads, state.nu), 2)
        else:
            d, nu = grads, None
        if _maybe_nonzero(weight_decay):
            d = _decay(d, params, weight_decay, [True] * len(jax.tree.leaves(d)))
        step = _scale(d, lr)
        z = jax.tree.map(lambda zi, si: (zi + si).astype(zi.dtype), state.z, step)

        def leaf(y, z_old, z_new):
            B = as_dtype_of(b1, y)
            c = ck.astype(y.dtype)
            x_prev = (y - (1 - B) * z_old) / B
            x = (1 - c) * x_prev + c * z_new
            y_new = B * x + (1 - B) * z_new
            return y_new - y

        updates = jax.tree.map(leaf, params, state.z, z)
        new_state = ScheduleFreeState(
            state.count + 1,
            learning_rate_at(learning_rate, state.count),
            state.b1,
            weight_sum,
            max_lr,
            z,
            nu,
        )
        return updates, new_state

    return Optimizer(init, update)


_SCHEDULE_FREE_DOC = """

    The iterates: ``z`` takes the base optimizer's steps, ``x`` is their weighted
    running average, gradients are taken at the interpolation ``y``::

        y_{t-1} = (1 - beta) z_{t-1} + beta x_{t-1}      (the params held)
        z_t     = z_{t-1} + s_t(g_t)                     (g_t = grad f(y_{t-1}))
        w_t     = max_{i <= t} alpha_i ^ weight_lr_power,   c_t = w_t / sum_i w_i
        x_t     = (1 - c_t) x_{t-1} + c_t z_t
        u_t     = y_t - y_{t-1}

    with ``z_0 = x_0 = y_0 = theta_0``. Evaluate (test, save) at ``x_t`` =
    :func:`schedule_free_eval_params` ``(state, params)``: the params themselves
    are the gradient points ``y_t``. No decaying schedule is needed; a warm-up
    is (``warmup_steps``).
"""


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
) -> Optimizer:
    return _schedule_free(
        "schedule_free_adamw",
        learning_rate,
        warmup_steps,
        b1,
        weight_lr_power,
        (b2, eps),
        weight_decay,
    )


schedule_free_adamw.__doc__ = (
    """Schedule-Free AdamW (Defazio et al. 2024).
"""
    + _SCHEDULE_FREE_DOC
    + """
    The base step is AdamW without momentum (the interpolation replaces it)::

        v_t = b2 v_{t-1} + (1 - b2) g_t^2,     v^_t = v_t / (1 - b2^t)
        s_t = -alpha_t (g_t / (sqrt(v^_t) + eps) + wd y_{t-1})

    Warning:
      as in optax, the weight ``w_t`` reads a schedule at ``t`` (one step ahead
      of the base step, which reads ``alpha(t - 1)``), and the weight decay is at
      ``y``; the reference PyTorch implementation (``AdamWScheduleFree``) decays
      at ``y`` too but folds its warm-up into the bias correction, so its numbers
      differ during the warm-up.

    Args:
      learning_rate: ``alpha``, a float or a schedule (without decay).
      warmup_steps: length of a linear warm-up from 0 (constant rate only).
      b1: the interpolation ``beta`` in ``(0, 1)``.
      b2: second-moment decay in ``[0, 1)``.
      eps: ``>= 0`` outside the root.
      weight_decay: ``wd >= 0``.
      weight_lr_power: exponent of the averaging weights.

    Returns:
      An ``Optimizer`` with a :class:`ScheduleFreeState`; ``update`` needs
      ``params``.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
      Scheduled", 2024, Algorithm 1.
    """
)


def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
) -> Optimizer:
    return _schedule_free(
        "schedule_free_sgd",
        learning_rate,
        warmup_steps,
        b1,
        weight_lr_power,
        None,
        weight_decay,
    )


schedule_free_sgd.__doc__ = (
    """Schedule-Free SGD (Defazio et al. 2024).
"""
    + _SCHEDULE_FREE_DOC
    + """
    The base step is gradient descent with coupled L2 decay::

        s_t = -alpha_t (g_t + wd y_{t-1})

    Args:
      learning_rate: ``alpha``, a float or a schedule (without decay).
      warmup_steps: length of a linear warm-up from 0 (constant rate only).
      b1: the interpolation ``beta`` in ``(0, 1)``.
      weight_decay: ``wd >= 0`` or ``None``.
      weight_lr_power: exponent of the averaging weights.

    Returns:
      An ``Optimizer`` with a :class:`ScheduleFreeState` (``nu = None``);
      ``update`` needs ``params``.

    References:
      Defazio et al., "The Road Less Scheduled", 2024, equation (1) and
      Theorem 1.
    """
)


# --------------------------------------------------------------------------
# SAM.
# --------------------------------------------------------------------------


def normalize() -> Optimizer:
    """Scale all updates together to unit global norm: ``u = g / ||g||``.

    With ``sgd(rho)`` after it, this is SAM's ascent step ``rho g / ||g||``
    (negated by :func:`sam`). A zero gradient gives a zero update (optax gives
    NaN there).

    Returns:
      An ``Optimizer`` with an ``EmptyState``.
    """

    def init(params):
        check_params(params)
        return EmptyState()

    def update(grads, state, params=None, **extra):
        check_grads(grads, params)
        leaves = jax.tree.leaves(grads)
        sq = sum(jnp.sum(g * g) for g in leaves) if leaves else jnp.zeros([])
        zero = sq == 0
        norm = jnp.sqrt(jnp.where(zero, jnp.ones_like(sq), sq))
        return jax.tree.map(lambda g: g / norm.astype(g.dtype), grads), state

    return Optimizer(init, update)


class SAMState(NamedTuple):
    """State of :func:`sam`.

    Attributes:
      count: int32 scalar, number of ``update`` calls.
      steps_since_sync: int32 scalar, adversarial steps since the last outer step.
      opt_state: the outer optimizer's state.
      adv_state: the adversarial optimizer's state.
      cache: the unperturbed params ``theta`` (transparent mode), else ``None``.
    """

    count: jax.Array
    steps_since_sync: jax.Array
    opt_state: PyTree
    adv_state: PyTree
    cache: PyTree


def sam(
    optimizer: Optimizer,
    adv_optimizer: Optimizer,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
) -> Optimizer:
    """Sharpness-aware minimization (Foret et al. 2021).

    SAM minimises ``max_{||e|| <= rho} L(theta + e)``; to first order the worst
    perturbation is ``e = rho g / ||g||``, and the step uses the gradient *at the
    perturbed point*::

        g_t   = grad L(theta_{t-1})
        e_t   = rho g_t / ||g_t||                  (adv_optimizer, negated)
        g~_t  = grad L(theta_{t-1} + e_t)          (the perturbed gradient)
        theta_t = theta_{t-1} + optimizer(g~_t)

    The paper's SAM is ``sam(opt, chain(normalize(), sgd(rho)))`` with any outer
    ``opt`` (``sgd(lr, momentum=0.9)`` in the paper). ``sync_period = k`` takes
    ``k - 1`` adversarial steps (with ``adv_optimizer`` from the perturbed
    points) before the outer step.

    Two ways to use it in a custom training loop:

    * transparent (default): the usual loop, unchanged. Calls alternate: on
      ``k - 1`` calls out of ``k`` the returned update *moves the params to the
      perturbed point* (an adversarial step), and the next call, given the
      gradient there, returns the update that takes them from the perturbed
      point to ``theta_{t-1} + optimizer(g~_t)``::

          opt = sam(sgd(0.1), chain(normalize(), sgd(0.05)))
          state = opt.init(params)
          for batch in batches:            # two calls per SAM step
              grads = jax.grad(loss)(params, batch)
              updates, state = opt.update(grads, state, params)
              params = apply_updates(params, updates)

      Every other ``params`` is a perturbed point; evaluate on
      ``state.cache`` or after an outer call (``state.steps_since_sync == 0``).
      Use the same batch for the pair for the paper's algorithm (an ``m``-sharpness
      variant otherwise). Side effects of the loss on perturbed points (batch
      norm statistics) are not undone.
    * opaque (``opaque_mode=True``): one call per SAM step; ``update`` takes a
      keyword ``grad_fn(params, i) -> grads`` and calls it ``k - 1`` times at the
      perturbed points, so the params never leave the unperturbed sequence::

          opt = sam(sgd(0.1), chain(normalize(), sgd(0.05)), opaque_mode=True)
          grads = jax.grad(loss)(params, batch)
          grad_fn = lambda p, i: jax.grad(loss)(p, batch)
          updates, state = opt.update(grads, state, params, grad_fn=grad_fn)

    Both modes give optax's numbers (``optax.contrib.sam``), the transparent
    mode after every call. A training loop that owns its batches (like
    ``fit``) should use the opaque mode: it keeps one ``update`` per batch and
    the params always unperturbed.

    Args:
      optimizer: the outer ``Optimizer`` (receives the perturbed gradients and
        the unperturbed params).
      adv_optimizer: the ascent rule (``chain(normalize(), sgd(rho))``); its
        update is negated to go uphill.
      sync_period: ``k >= 2`` calls (transparent) or gradients (opaque) per step.
      reset_state: re-initialise ``adv_optimizer`` after every outer step.
      opaque_mode: see above.

    Returns:
      An ``Optimizer`` with a :class:`SAMState`; ``update`` needs ``params``
      (and ``grad_fn`` in opaque mode).

    References:
      Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for
      Efficiently Improving Generalization", ICLR 2021, Algorithm 1.
    """
    _check_optimizer("optimizer", optimizer)
    _check_optimizer("adv_optimizer", adv_optimizer)
    _check_positive_int("sync_period", sync_period)
    _check_bool("reset_state", reset_state)
    _check_bool("opaque_mode", opaque_mode)

    def init(params):
        check_params(params)
        return SAMState(
            zero_count(),
            zero_count(),
            optimizer.init(params),
            adv_optimizer.init(params),
            None if opaque_mode else jax.tree.map(jnp.asarray, params),
        )

    def pick(cond, if_true, if_false):
        return jax.tree.map(lambda a, b: jnp.where(cond, a, b), if_true, if_false)

    def transparent(grads, state, params=None, grad_fn=None, **extra):
        require_params(params, "sam")
        check_grads(grads, params)
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(grads, state.adv_state, params)
        adv_updates = jax.tree.map(lambda u: -u, adv_updates)
        opt_updates, opt_state = optimizer.update(
            grads, state.opt_state, state.cache, **extra
        )
        # From the perturbed point back to the cache, then the outer step.
        opt_updates = jax.tree.map(
            lambda c, p, u: c - p + u, state.cache, params, opt_updates
        )
        cache = pick(first, params, state.cache)
        updates = pick(last, opt_updates, adv_updates)
        if reset_state:
            adv_state = pick(last, adv_optimizer.init(params), adv_state)
        else:
            adv_state = pick(last, state.adv_state, adv_state)
        opt_state = pick(last, opt_state, state.opt_state)
        return updates, SAMState(
            state.count + 1,
            (state.steps_since_sync + 1) % sync_period,
            opt_state,
            adv_state,
            cache,
        )

    def opaque(grads, state, params=None, grad_fn=None, **extra):
        require_params(params, "sam")
        check_grads(grads, params)
        if grad_fn is None:
            raise ValueError(
                "sam(opaque_mode=True).update needs grad_fn=lambda params, i: "
                "grads, the loss gradient at a perturbed point."
            )
        adv_params, adv_grads, adv_state = params, grads, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(
                adv_grads, adv_state, adv_params
            )
            adv_updates = jax.tree.map(lambda u: -u, adv_updates)
            adv_params = apply_updates(adv_params, adv_updates)
            adv_grads = grad_fn(adv_params, i)
            check_grads(adv_grads, params)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        updates, opt_state = optimizer.update(
            adv_grads, state.opt_state, params, **extra
        )
        return updates, SAMState(
            state.count + 1, zero_count(), opt_state, adv_state, None
        )

    return Optimizer(init, opaque if opaque_mode else transparent)


# --------------------------------------------------------------------------
# Lookahead.
# --------------------------------------------------------------------------


class LookaheadParams(NamedTuple):
    """The parameters of :func:`lookahead`: the fast weights (take gradients
    here) and the slow weights (evaluate these)."""

    fast: PyTree
    slow: PyTree

    @classmethod
    def init_synced(cls, params: PyTree) -> "LookaheadParams":
        """Fast and slow weights both equal to ``params``."""
        return cls(fast=params, slow=params)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
      fast_state: the fast optimizer's state.
      steps_since_sync: int32 scalar, fast steps since the last synchronisation.
      count: int32 scalar, number of updates taken.
    """

    fast_state: PyTree
    steps_since_sync: jax.Array
    count: jax.Array


def lookahead(
    fast_optimizer: Optimizer,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> Optimizer:
    """Lookahead (Zhang et al. 2019): ``k`` fast steps forward, one step back.

    The fast weights ``phi`` take ``fast_optimizer``'s steps; every ``k =
    sync_period`` steps the slow weights ``theta`` move a fraction ``a =
    slow_step_size`` towards them and the fast weights restart from there::

        phi_t = phi_{t-1} + fast_optimizer(g_t),    g_t = grad L(phi_{t-1})
        if t % k == 0:
            theta <- theta + a (phi_t - theta),     phi_t <- theta

    The params are a :class:`LookaheadParams` ``(fast, slow)``
    (``LookaheadParams.init_synced(params)`` to start); take gradients at
    ``params.fast`` and evaluate at ``params.slow``. The update is a
    ``LookaheadParams`` of both increments, to be applied unchanged with
    ``apply_updates``.

    Args:
      fast_optimizer: the inner ``Optimizer``.
      sync_period: ``k >= 1``.
      slow_step_size: ``a`` in ``[0, 1]``.
      reset_state: re-initialise the fast optimizer at every synchronisation.

    Returns:
      An ``Optimizer`` with a :class:`LookaheadState`; ``update(grads, state,
      params)`` takes the gradients at ``params.fast``.

    References:
      Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
      back", NeurIPS 2019, Algorithm 1.
    """
    _check_optimizer("fast_optimizer", fast_optimizer)
    _check_positive_int("sync_period", sync_period)
    slow_step_size = check_scalar("slow_step_size", slow_step_size, lo=0, hi=1)
    _check_bool("reset_state", reset_state)

    def check_lookahead(params):
        if not isinstance(params, LookaheadParams):
            raise ValueError(
                "lookahead needs params=LookaheadParams(fast, slow) (start with "
                f"LookaheadParams.init_synced(params)), got {type(params).__name__}."
            )

    def init(params):
        check_lookahead(params)
        return LookaheadState(
            fast_optimizer.init(params.fast), zero_count(), zero_count()
        )

    def update(grads, state, params=None, **extra):
        require_params(params, "lookahead")
        check_lookahead(params)
        check_grads(grads, params.fast)
        updates, fast_state = fast_optimizer.update(
            grads, state.fast_state, params.fast, **extra
        )
        sync = state.steps_since_sync == sync_period - 1

        # last = phi + u - theta; slow += a sync last; fast += u - (1-a) sync last
        def slow_leaf(f, u, s):
            last = f + u - s
            return jnp.where(sync, as_dtype_of(slow_step_size, u) * last, 0 * last)

        def fast_leaf(f, u, s):
            last = f + u - s
            a = as_dtype_of(slow_step_size, u)
            return jnp.where(sync, u - (1 - a) * last, u)

        new_updates = LookaheadParams(
            fast=jax.tree.map(fast_leaf, params.fast, updates, params.slow),
            slow=jax.tree.map(slow_leaf, params.fast, updates, params.slow),
        )
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(
                lambda new, old: jnp.where(sync, new, old), fresh, fast_state
            )
        return new_updates, LookaheadState(
            fast_state, (state.steps_since_sync + 1) % sync_period, state.count + 1
        )

    return Optimizer(init, update)
