"""First-order optimizers: SGD (momentum, Nesterov), EMA momentum and the adaptive
methods (AdaGrad, RMSProp, AdaDelta, Adam, AdamW, AdaMax, NAdam, AMSGrad).

Notation, used in every docstring: ``g_t`` is the gradient given to the ``t``-th
call of ``update`` (``t = 1, 2, ...``), ``alpha_t`` the learning rate of that call
(``learning_rate(t - 1)`` for a schedule, so the first update uses
``schedule(0)``), ``u_t`` the returned update (``theta_t = theta_{t-1} + u_t``).
All operations are element-wise on every leaf.

Invariants:
  * each state is one NamedTuple with ``count`` (int32, number of updates taken),
    ``learning_rate`` (float32, the rate of the last update; before the first
    update, the rate it will use) and per-parameter trees in the parameters'
    *accumulation dtype*, so ``jax.eval_shape`` of ``update`` returns the avals
    of ``init``;
  * the accumulation dtype of a float32 or float64 leaf is its own dtype: float64
    parameters get float64 moments and a float64 learning rate (the float32 copy
    in the state is for reading only). For bfloat16, float16 (and narrower)
    leaves it is float32: moments, accumulators, velocities and bias corrections
    are kept and computed in float32 and only the update is rounded to the
    gradient's dtype (as optax's ``mu_dtype`` and PyTorch's mixed precision do).
    In bfloat16, ``b2 = 0.999`` rounds to 1 (``1 - b2^t = 0``) and in float16
    ``eps = 1e-8`` rounds to 0, which would give NaN or infinity from the first
    step;
  * updates have the gradients' shapes and dtypes. With 16-bit parameters an
    update smaller than half the parameter's ulp (``lr * g`` for plain SGD) is
    rounded away by ``apply_updates``: bfloat16 has 8 significant bits, so a
    parameter near 1 does not move for steps below about 0.004. Keep a float32
    master copy of the parameters when this matters;
  * hyperparameters (learning rates, decays, eps, weight decay) are Python
    numbers, NumPy scalars or 0-d JAX arrays, checked up front (finite, in range;
    a schedule is checked at count 0) with a ``ValueError`` naming the argument;
    traced values (a jitted function's arguments) are accepted unchecked;
  * ``update`` refuses (``TypeError``) a state made by another optimizer, and
    gradients whose structure or leaf shapes differ from the parameters'
    (``ValueError`` naming the key path).

Conventions where the sources (or libraries) differ, and what fnn does:
  * momentum: ``sgd`` uses the *velocity* form of [Laurent; Neacșu & Vasilescu] (``v <-
    beta v - alpha g``, ``theta <- theta + v``, PyTorch/optax differ only in where the
    learning rate sits); ``ema_momentum`` is [Deep Learning 2020]'s exponential average
    (``V <- beta V + (1 - beta) g``, ``theta <- theta - alpha V``).
  * eps outside the square root (``g / (sqrt(r) + eps)``) for AdaGrad, RMSProp and
    Adam, as in [Deep Learning 2020; Neacșu & Vasilescu] and Kingma & Ba; [Laurent]
    writes RMSProp with ``sqrt(delta + r)``: ``rmsprop(..., eps_in_sqrt=True)`` gives
    that form (also optax's default).
  * weight decay: ``adamw`` is decoupled (Loshchilov & Hutter), scaled by the
    learning rate as in optax and PyTorch; coupled L2 is
    ``chain(add_decayed_weights(wd), adam(...))``.
"""

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._base import (
    Optimizer,
    PyTree,
    Scalar,
    ScalarOrSchedule,
    accumulation_dtype,
    check_learning_rate,
    check_nonnegative,
    check_params,
    check_state,
    check_unit_interval,
    is_traced,
    learning_rate_at,
    register_state,
)
from ._renamed import _UNSET, renamed
from ._transforms import (
    Mask,
    as_dtype_of,
    check_grads,
    raw_learning_rate,
    require_params,
    resolve_mask,
    scaled_descent,
    zero_count,
    zeros_for_state,
)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}.")


def _zeros(params: PyTree) -> PyTree:
    """Per-parameter state leaves: zeros in each leaf's accumulation dtype."""
    return jax.tree.map(zeros_for_state, params)


def _fill(params: PyTree, value: float) -> PyTree:
    return jax.tree.map(
        lambda p: jnp.full(jnp.shape(p), value, accumulation_dtype(p.dtype)), params
    )


def _positive(value) -> bool:
    """``value > 0`` for a checked hyperparameter; a traced value counts as
    positive (the state keeps the buffer it may need)."""
    return is_traced(value) or value > 0


def _fields_for(flags: dict[str, bool]) -> dict[str, tuple[str, ...]]:
    """``check_state`` keywords: fields that must be set (True) or None (False)."""
    return {
        "present": tuple(k for k, v in flags.items() if v),
        "absent": tuple(k for k, v in flags.items() if not v),
    }


def _step_number(count: jax.Array, like: jax.Array) -> jax.Array:
    """``t = count + 1`` in ``like``'s dtype, for bias corrections ``1 - beta^t``."""
    return (count + 1).astype(like.dtype)


# --------------------------------------------------------------------------
# SGD and momentum.
# --------------------------------------------------------------------------


class SgdState(NamedTuple):
    """State of :func:`sgd`.

    Attributes:
      count: int32 scalar, number of updates taken.
      learning_rate: float32 scalar, rate of the last update.
      velocity: ``v``, a pytree like the params (``None`` when ``momentum == 0``).
    """

    count: jax.Array
    learning_rate: jax.Array
    velocity: PyTree


def _velocity_step(v, d, lr, beta, nesterov):
    """``v' = beta v - lr d``; returns ``(u, v')`` with ``u = v'`` or, for
    Nesterov, ``u = beta v' - lr d``. Computed in ``v``'s (accumulation) dtype;
    ``u`` is returned in ``d``'s dtype."""
    out_dtype = d.dtype
    d = d.astype(v.dtype)
    beta = as_dtype_of(beta, d)
    lr = as_dtype_of(lr, d)
    v_new = beta * v - lr * d
    u = beta * v_new - lr * d if nesterov else v_new
    return u.astype(out_dtype), v_new


def sgd(
    learning_rate: ScalarOrSchedule, momentum: Scalar = 0.0, nesterov: bool = False
) -> Optimizer:
    """Stochastic gradient descent, with optional (Nesterov) momentum, velocity form.

    Plain (``momentum = 0``)::

        u_t = -alpha_t g_t

    Momentum (Polyak; [Laurent, SGD with momentum];
    [Neacșu & Vasilescu, SGD with Momentum: Algorithm 2])::

        v_t = beta v_{t-1} - alpha_t g_t,    v_0 = 0
        u_t = v_t                            (theta_t = theta_{t-1} + v_t)

    Nesterov (Sutskever et al. 2013; [Laurent, SGD with Nesterov momentum];
    [Neacșu & Vasilescu, Gradient descent with Nesterov momentum]) is defined
    by a gradient at the look-ahead point::

        v_t = beta v_{t-1} - alpha_t grad J(theta_{t-1} + beta v_{t-1})
        theta_t = theta_{t-1} + v_t

    fnn implements it from the gradient at the *current* parameters by the usual
    change of variable ``phi_t = theta_t + beta v_t`` (the look-ahead point).
    Then ``phi_t = phi_{t-1} + beta v_t - alpha_t grad J(phi_{t-1})``, so::

        v_t = beta v_{t-1} - alpha_t g_t,    g_t = grad J(phi_{t-1})
        u_t = beta v_t - alpha_t g_t

    The parameters this optimizer holds are therefore the look-ahead points
    ``phi_t`` of the explicit formula (``phi_0 = theta_0`` since ``v_0 = 0``), and
    its velocities are the same ``v_t``; the explicit ``theta_t`` is
    ``params - beta * velocity``. At a minimum (``v = 0``) both coincide. The
    learning rate sits inside the velocity, so a schedule changes the step
    exactly as in the sources' equations (PyTorch's form ``v <- beta v + g``,
    ``u = -alpha v`` agrees only for a constant rate).

    The velocity is kept in the accumulation dtype (float32 for 16-bit
    parameters). Plain SGD forms ``alpha g`` in float32 and rounds it once to the
    gradient's dtype; in pure bfloat16 a step below half a parameter's ulp
    (about ``0.004 |theta|``) is rounded away when it is applied.

    Args:
      learning_rate: a finite number ``>= 0`` ([Neacșu & Vasilescu]: ``alpha``;
        [Laurent]: ``epsilon``) or a schedule ``count -> rate`` (checked at count 0).
      momentum: ``beta`` in ``[0, 1)`` ([Laurent] calls it ``alpha``).
      nesterov: use Nesterov's look-ahead gradient.

    Returns:
      An ``Optimizer`` with an :class:`SgdState`; updates have the gradients'
      shapes and dtypes.

    References:
      [Laurent, SGD algorithm / SGD with momentum / SGD with Nesterov momentum];
      [Neacșu & Vasilescu, Gradient descent algorithms], Algorithms 1-3.
    """
    learning_rate = check_learning_rate(learning_rate)
    momentum = check_unit_interval("momentum", momentum)
    _check_bool("nesterov", nesterov)
    use_velocity = _positive(momentum)
    expect = _fields_for({"velocity": use_velocity})

    def init(params):
        check_params(params)
        count = zero_count()
        velocity = _zeros(params) if use_velocity else None
        return SgdState(count, learning_rate_at(learning_rate, count), velocity)

    def update(grads, state, params=None, **extra):
        check_state(
            state, SgdState, "sgd", **expect, hint=" (momentum > 0 keeps a velocity)"
        )
        check_grads(grads, params, state.velocity, state_shapes=True)
        lr = raw_learning_rate(learning_rate, state.count)
        if use_velocity:
            pairs = jax.tree.map(
                lambda g, v: _velocity_step(v, g, lr, momentum, nesterov),
                grads,
                state.velocity,
            )
            updates = jax.tree.map(lambda _, p: p[0], grads, pairs)
            velocity = jax.tree.map(lambda _, p: p[1], grads, pairs)
        else:
            updates = jax.tree.map(lambda g: scaled_descent(lr, g), grads)
            velocity = None
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, SgdState(state.count + 1, lr32, velocity)

    return Optimizer(init, update)


class EmaMomentumState(NamedTuple):
    """State of :func:`ema_momentum`: ``count``, ``learning_rate`` and the
    exponential average ``V`` (like the params)."""

    count: jax.Array
    learning_rate: jax.Array
    V: PyTree


def ema_momentum(learning_rate: ScalarOrSchedule, beta: Scalar = 0.9) -> Optimizer:
    """Gradient descent with momentum, exponential-moving-average form.

    The form of [Deep Learning 2020, Gradient descent with momentum].

    ::

        V_t = beta V_{t-1} + (1 - beta) g_t,    V_0 = 0
        u_t = -alpha_t V_t

    [Deep Learning 2020] prints ``W := W - alpha dW`` in the update line; the text
    ("this exponentially weighted average ... gives a better estimation of derivatives")
    makes clear that ``V_dW`` is meant, which is what fnn does. Compared with the
    velocity form of ``sgd`` (``v = beta v - alpha g``), the average is damped by
    ``(1 - beta)``: with a constant rate, ``ema_momentum(alpha, beta)`` follows the
    same path as ``sgd(alpha * (1 - beta), momentum=beta)``. No bias correction.

    ``V`` is kept in the accumulation dtype (float32 for 16-bit parameters).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      beta: averaging rate in ``[0, 1)``.

    Returns:
      An ``Optimizer`` with an :class:`EmaMomentumState`.

    References:
      [Deep Learning 2020, Gradient descent with momentum].
    """
    learning_rate = check_learning_rate(learning_rate)
    beta = check_unit_interval("beta", beta)

    def init(params):
        check_params(params)
        count = zero_count()
        return EmaMomentumState(
            count, learning_rate_at(learning_rate, count), _zeros(params)
        )

    def update(grads, state, params=None, **extra):
        check_state(state, EmaMomentumState, "ema_momentum")
        check_grads(grads, params, state.V, state_shapes=True)
        lr = raw_learning_rate(learning_rate, state.count)
        V = jax.tree.map(
            lambda g, v: (
                as_dtype_of(beta, v) * v + as_dtype_of(1 - beta, v) * g.astype(v.dtype)
            ),
            grads,
            state.V,
        )
        updates = jax.tree.map(
            lambda g, v: (-as_dtype_of(lr, v) * v).astype(g.dtype), grads, V
        )
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, EmaMomentumState(state.count + 1, lr32, V)

    return Optimizer(init, update)


# --------------------------------------------------------------------------
# Adaptive learning rates.
# --------------------------------------------------------------------------


class AdagradState(NamedTuple):
    """State of :func:`adagrad`: ``count``, ``learning_rate`` and the sum of
    squared gradients ``r`` (like the params)."""

    count: jax.Array
    learning_rate: jax.Array
    r: PyTree


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-8,
) -> Optimizer:
    """AdaGrad (Duchi et al. 2011), with ``delta`` outside the root.

    The form of [Neacșu & Vasilescu, Adaptive first order: ADAGRAD].

    ::

        r_t = r_{t-1} + g_t * g_t,          r_0 = initial_accumulator_value
        u_t = -alpha_t g_t / (eps + sqrt(r_t))

    optax puts ``eps`` inside the root and starts ``r`` at 0.1; PyTorch matches
    fnn (``eps`` outside, ``r_0 = 0``).

    ``r`` is kept in the accumulation dtype (float32 for 16-bit parameters).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      initial_accumulator_value: ``r_0 >= 0``.
      eps: ``delta >= 0`` ([Neacșu & Vasilescu]: about 1e-8).

    Returns:
      An ``Optimizer`` with an :class:`AdagradState`.

    References:
      [Neacșu & Vasilescu, Adaptive first order]: ADAGRAD.
    """
    learning_rate = check_learning_rate(learning_rate)
    initial_accumulator_value = check_nonnegative(
        "initial_accumulator_value", initial_accumulator_value
    )
    eps = check_nonnegative("eps", eps)

    def init(params):
        check_params(params)
        count = zero_count()
        return AdagradState(
            count,
            learning_rate_at(learning_rate, count),
            _fill(params, initial_accumulator_value),
        )

    def step(g, r, lr):
        a = g.astype(r.dtype)
        u = -as_dtype_of(lr, a) * a / (as_dtype_of(eps, a) + jnp.sqrt(r))
        return u.astype(g.dtype)

    def update(grads, state, params=None, **extra):
        check_state(state, AdagradState, "adagrad")
        check_grads(grads, params, state.r, state_shapes=True)
        lr = raw_learning_rate(learning_rate, state.count)
        r = jax.tree.map(
            lambda g, r: r + g.astype(r.dtype) * g.astype(r.dtype), grads, state.r
        )
        updates = jax.tree.map(lambda g, r: step(g, r, lr), grads, r)
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, AdagradState(state.count + 1, lr32, r)

    return Optimizer(init, update)


class RmspropState(NamedTuple):
    """State of :func:`rmsprop`.

    Attributes:
      count, learning_rate: as everywhere.
      r: EMA of ``g * g`` (like the params).
      mean: EMA of ``g`` (``centered=True``) or ``None``.
      velocity: momentum buffer (``momentum > 0``) or ``None``.
    """

    count: jax.Array
    learning_rate: jax.Array
    r: PyTree
    mean: PyTree
    velocity: PyTree


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    *,
    centered: bool = False,
    momentum: Scalar = 0.0,
    nesterov: bool = False,
    eps_in_sqrt: bool = False,
) -> Optimizer:
    """RMSProp (Hinton 2012), optionally centered and with momentum.

    ::

        r_t = rho r_{t-1} + (1 - rho) g_t * g_t,       r_0 = initial_scale
        s_t = r_t                                      (plain)
        s_t = max(r_t - m_t * m_t, 0),                 (centered=True)
              m_t = rho m_{t-1} + (1 - rho) g_t
        d_t = g_t / (sqrt(s_t) + eps)                  (eps_in_sqrt=False, default)
        d_t = g_t / sqrt(s_t + eps)                    (eps_in_sqrt=True)
        u_t = -alpha_t d_t                             (momentum = 0)
        v_t = beta v_{t-1} - alpha_t d_t,  u_t = v_t   (momentum = beta > 0)
        u_t = beta v_t - alpha_t d_t                   (... and nesterov=True)

    The default (eps outside the root) follows
    [Deep Learning 2020; Neacșu & Vasilescu] and PyTorch; [Laurent] writes
    ``epsilon / sqrt(delta + r)``, which is ``eps_in_sqrt=True`` (optax's default). The
    clamp at 0 in the centered form only removes rounding
    (``r_t >= m_t^2`` holds exactly). The momentum buffer is the velocity of
    ``sgd`` applied to the preconditioned direction ``d_t`` (PyTorch/TF form).

    ``r``, ``mean`` and ``velocity`` are kept in the accumulation dtype (float32
    for 16-bit parameters).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      decay: ``rho`` in ``[0, 1)``.
      eps: ``eps >= 0`` ([Deep Learning 2020]: 1e-8; [Laurent]: ``delta``, 1e-6).
      initial_scale: ``r_0 >= 0`` (optax's fourth argument; 0 as in the sources
        and PyTorch). Passing a bool here (the former positional ``centered``)
        still means ``centered``, with a ``DeprecationWarning``.
      centered: divide by the root of the variance estimate instead.
      momentum: ``beta`` in ``[0, 1)``.
      nesterov: Nesterov form of the momentum (as in ``sgd``).
      eps_in_sqrt: put ``eps`` inside the square root.

    Returns:
      An ``Optimizer`` with an :class:`RmspropState`.

    References:
      [Deep Learning 2020, RMSprop]; [Laurent, The RMSProp algorithm];
      [Neacșu & Vasilescu, RMSProp].
    """
    if isinstance(initial_scale, bool):  # the former fourth positional, centered
        warnings.warn(
            "rmsprop's fourth positional argument is optax's initial_scale: pass "
            "centered=... by keyword (the positional form goes in the next "
            "release).",
            DeprecationWarning,
            stacklevel=2,
        )
        centered, initial_scale = initial_scale, 0.0
    learning_rate = check_learning_rate(learning_rate)
    decay = check_unit_interval("decay", decay)
    eps = check_nonnegative("eps", eps)
    initial_scale = check_nonnegative("initial_scale", initial_scale)
    momentum = check_unit_interval("momentum", momentum)
    for name, value in [
        ("centered", centered),
        ("nesterov", nesterov),
        ("eps_in_sqrt", eps_in_sqrt),
    ]:
        _check_bool(name, value)
    use_velocity = _positive(momentum)
    expect = _fields_for({"mean": centered, "velocity": use_velocity})

    def init(params):
        check_params(params)
        count = zero_count()
        return RmspropState(
            count,
            learning_rate_at(learning_rate, count),
            jax.tree.map(lambda z: z + as_dtype_of(initial_scale, z), _zeros(params)),
            _zeros(params) if centered else None,
            _zeros(params) if use_velocity else None,
        )

    def direction(g, s):
        e = as_dtype_of(eps, g)
        return g / jnp.sqrt(s + e) if eps_in_sqrt else g / (jnp.sqrt(s) + e)

    def update(grads, state, params=None, **extra):
        check_state(
            state,
            RmspropState,
            "rmsprop",
            **expect,
            hint=" (centered=True keeps a mean, momentum > 0 a velocity)",
        )
        check_grads(
            grads, params, state.r, state.mean, state.velocity, state_shapes=True
        )
        lr = raw_learning_rate(learning_rate, state.count)
        rho = decay
        # Everything in the accumulation dtype of the state (g cast to it).
        acc = jax.tree.map(lambda g, r: g.astype(r.dtype), grads, state.r)
        r = jax.tree.map(
            lambda g, r: as_dtype_of(rho, g) * r + as_dtype_of(1 - rho, g) * g * g,
            acc,
            state.r,
        )
        if centered:
            mean = jax.tree.map(
                lambda g, m: as_dtype_of(rho, g) * m + as_dtype_of(1 - rho, g) * g,
                acc,
                state.mean,
            )
            s = jax.tree.map(lambda r, m: jnp.maximum(r - m * m, 0), r, mean)
        else:
            mean, s = None, r
        d = jax.tree.map(direction, acc, s)
        if use_velocity:
            pairs = jax.tree.map(
                lambda d, v: _velocity_step(v, d, lr, momentum, nesterov),
                d,
                state.velocity,
            )
            updates = jax.tree.map(lambda _, p: p[0], d, pairs)
            velocity = jax.tree.map(lambda _, p: p[1], d, pairs)
        else:
            updates = jax.tree.map(lambda d: -as_dtype_of(lr, d) * d, d)
            velocity = None
        updates = jax.tree.map(lambda g, u: u.astype(g.dtype), grads, updates)
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, RmspropState(state.count + 1, lr32, r, mean, velocity)

    return Optimizer(init, update)


class AdadeltaState(NamedTuple):
    """State of :func:`adadelta`: ``count``, ``learning_rate``, the EMA of squared
    gradients ``Eg2`` and the EMA of squared unscaled steps ``Edx2``."""

    count: jax.Array
    learning_rate: jax.Array
    Eg2: PyTree
    Edx2: PyTree


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0, rho: Scalar = 0.9, eps: Scalar = 1e-6
) -> Optimizer:
    """AdaDelta (Zeiler 2012), with a learning rate that scales the step.

    ::

        E[g^2]_t  = rho E[g^2]_{t-1} + (1 - rho) g_t * g_t,            0 at t = 0
        dx_t      = -sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) dx_t * dx_t,          0 at t = 0
        u_t       = alpha_t dx_t

    ``alpha = 1`` is Zeiler's algorithm; the unscaled ``dx_t`` is accumulated, as
    in PyTorch and optax. Named in [Neacșu & Vasilescu, First order methods
    summary].

    ``E[g^2]`` and ``E[dx^2]`` are kept in the accumulation dtype (float32 for
    16-bit parameters).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      rho: decay rate in ``[0, 1)``.
      eps: ``eps > 0`` (it also sets the size of the first steps).

    Returns:
      An ``Optimizer`` with an :class:`AdadeltaState`.

    References:
      [Neacșu & Vasilescu, First order methods summary] (Adadelta); Zeiler (2012),
      Algorithm 1.
    """
    learning_rate = check_learning_rate(learning_rate)
    rho = check_unit_interval("rho", rho)
    eps = check_nonnegative("eps", eps)

    def init(params):
        check_params(params)
        count = zero_count()
        return AdadeltaState(
            count,
            learning_rate_at(learning_rate, count),
            _zeros(params),
            _zeros(params),
        )

    def update(grads, state, params=None, **extra):
        check_state(state, AdadeltaState, "adadelta")
        check_grads(grads, params, state.Eg2, state.Edx2, state_shapes=True)
        lr = raw_learning_rate(learning_rate, state.count)

        def leaf(g_in, eg2, edx2):
            g = g_in.astype(eg2.dtype)
            r, e = as_dtype_of(rho, g), as_dtype_of(eps, g)
            eg2 = r * eg2 + (1 - r) * g * g
            dx = -jnp.sqrt(edx2 + e) / jnp.sqrt(eg2 + e) * g
            edx2 = r * edx2 + (1 - r) * dx * dx
            return (as_dtype_of(lr, g) * dx).astype(g_in.dtype), eg2, edx2

        out = jax.tree.map(leaf, grads, state.Eg2, state.Edx2)
        pick = [jax.tree.map(lambda _, o, i=i: o[i], grads, out) for i in range(3)]
        lr32 = learning_rate_at(learning_rate, state.count)
        return pick[0], AdadeltaState(state.count + 1, lr32, pick[1], pick[2])

    return Optimizer(init, update)


class AdamState(NamedTuple):
    """State of the Adam family (:func:`adam`, :func:`adamw`, :func:`nadam`,
    :func:`amsgrad`, :func:`adamax`).

    Attributes:
      count: int32 scalar, number of updates taken (``t - 1`` during step ``t``).
      learning_rate: float32 scalar, rate of the last update.
      m: first-moment EMA (the params' shapes, in their accumulation dtype:
        float32 for 16-bit parameters, the parameter dtype otherwise).
      v: second-moment EMA (``adamax``: the infinity-norm EMA ``u``), like ``m``.
      v_max: running maximum of ``v`` (``amsgrad``) or ``None``.
    """

    count: jax.Array
    learning_rate: jax.Array
    m: PyTree
    v: PyTree
    v_max: PyTree


def _adam_family(
    name: str,
    learning_rate: ScalarOrSchedule,
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
    kind: str,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Mask | None = None,
) -> Optimizer:
    learning_rate = check_learning_rate(learning_rate)
    b1 = check_unit_interval("b1", b1)
    b2 = check_unit_interval("b2", b2)
    eps = check_nonnegative("eps", eps)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    decoupled = kind == "adamw"
    decays = decoupled and (is_traced(weight_decay) or weight_decay != 0)
    expect = _fields_for({"v_max": kind == "amsgrad"})

    def init(params):
        check_params(params)
        if decoupled and weight_decay_mask is not None:
            resolve_mask(weight_decay_mask, params, "weight_decay_mask")
        count = zero_count()
        return AdamState(
            count,
            learning_rate_at(learning_rate, count),
            _zeros(params),
            _zeros(params),
            _zeros(params) if kind == "amsgrad" else None,
        )

    def leaf(g_in, m, v, v_max, p, decay, count, lr):
        # In the state's accumulation dtype; the update is rounded at the end.
        g = g_in.astype(m.dtype)
        B1, B2, e = as_dtype_of(b1, g), as_dtype_of(b2, g), as_dtype_of(eps, g)
        t = _step_number(count, g)
        m = B1 * m + (1 - B1) * g
        if kind == "adamax":
            v = jnp.maximum(B2 * v, jnp.abs(g))
            step = m / (1 - B1**t) / (v + e)
        else:
            v = B2 * v + (1 - B2) * g * g
            if kind == "amsgrad":
                v_max = jnp.maximum(v_max, v)
                v_hat = v_max / (1 - B2**t)
            else:
                v_hat = v / (1 - B2**t)
            if kind == "nadam":
                m_hat = B1 * m / (1 - B1 ** (t + 1)) + (1 - B1) * g / (1 - B1**t)
            else:
                m_hat = m / (1 - B1**t)
            step = m_hat / (jnp.sqrt(v_hat) + e)
        u = -as_dtype_of(lr, g) * step
        if decay:
            u = u - as_dtype_of(lr, g) * as_dtype_of(weight_decay, g) * p.astype(
                g.dtype
            )
        return u.astype(g_in.dtype), m, v, v_max

    def update(grads, state, params=None, **extra):
        check_state(
            state, AdamState, name, **expect, hint=" (only amsgrad keeps v_max)"
        )
        if decoupled:
            require_params(params, name)
        check_grads(grads, params, state.m, state.v, state.v_max, state_shapes=True)
        lr = raw_learning_rate(learning_rate, state.count)
        g_leaves, treedef = jax.tree.flatten(grads)
        n = len(g_leaves)
        m_leaves = treedef.flatten_up_to(state.m)
        v_leaves = treedef.flatten_up_to(state.v)
        # Without amsgrad there is no v_max: pass m as a placeholder, unused.
        vm_leaves = treedef.flatten_up_to(state.v_max if kind == "amsgrad" else state.m)
        p_leaves = treedef.flatten_up_to(params) if decays else [None] * n
        if decays and weight_decay_mask is not None:
            flags = resolve_mask(weight_decay_mask, params, "weight_decay_mask")
        else:
            flags = [decays] * n
        out = [
            leaf(*args, state.count, lr)
            for args in zip(
                g_leaves, m_leaves, v_leaves, vm_leaves, p_leaves, flags, strict=True
            )
        ]
        pick = [treedef.unflatten([o[i] for o in out]) for i in range(4)]
        updates, m, v = pick[0], pick[1], pick[2]
        new_v_max = pick[3] if kind == "amsgrad" else None
        lr32 = learning_rate_at(learning_rate, state.count)
        return updates, AdamState(state.count + 1, lr32, m, v, new_v_max)

    return Optimizer(init, update)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> Optimizer:
    """Adam (Kingma & Ba 2014), bias-corrected, eps outside the root.

    ::

        m_t = b1 m_{t-1} + (1 - b1) g_t,           m_0 = 0
        v_t = b2 v_{t-1} + (1 - b2) g_t * g_t,     v_0 = 0
        m^_t = m_t / (1 - b1^t),   v^_t = v_t / (1 - b2^t)
        u_t = -alpha_t m^_t / (sqrt(v^_t) + eps)

    This is the form of [Deep Learning 2020, Adam] and [Neacșu & Vasilescu, ADAM
    algorithm]. [Laurent, Adam algorithm] prints the update as
    ``epsilon / sqrt(eps^ + delta) * s^`` (``rho_1, rho_2`` for ``b1, b2``, ``s, r``
    for ``m, v``); the ``eps^`` is a typo for the corrected second moment ``r^``,
    and its ``delta`` inside the root differs from the paper's, which fnn follows.

    For bfloat16 and float16 parameters ``m``, ``v`` and the bias corrections are
    kept and computed in float32 (in bfloat16, ``b2 = 0.999`` rounds to 1 and
    ``1 - b2^t`` to 0; in float16, ``eps = 1e-8`` rounds to 0); the update is
    rounded to the gradient's dtype. The same holds for every member of the
    family (``adamw``, ``adamax``, ``nadam``, ``amsgrad``).

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      b1: first-moment decay in ``[0, 1)``.
      b2: second-moment decay in ``[0, 1)``.
      eps: ``eps >= 0``.

    Returns:
      An ``Optimizer`` with an :class:`AdamState` (``v_max = None``).

    References:
      [Deep Learning 2020, Adam]; [Laurent, Adam algorithm];
      [Neacșu & Vasilescu, ADAM algorithm].
    """
    return _adam_family("adam", learning_rate, b1, b2, eps, "adam")


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-4,
    mask: Mask | None = None,
    *,
    weight_decay_mask: Any = _UNSET,
) -> Optimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    ``m^_t`` and ``v^_t`` as in :func:`adam`, then::

        u_t = -alpha_t (m^_t / (sqrt(v^_t) + eps) + wd * theta_{t-1})

    with the decay term only on leaves where ``mask`` is ``True``.
    The decay is multiplied by the learning rate, as in optax and PyTorch (the
    paper uses a separate schedule multiplier ``eta_t``; with a schedule for
    ``learning_rate`` both shrink together). Unlike coupled L2
    (``chain(add_decayed_weights(wd), adam(...))``) the decay does not pass
    through Adam's moments.

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      b1, b2, eps: as in :func:`adam`.
      weight_decay: ``wd >= 0``.
      mask: pytree of bools or callable ``params -> mask`` (optax's keyword);
        ``weights_only_mask`` leaves biases undecayed. ``None``: decay all.
      weight_decay_mask: the former name of ``mask`` (deprecated).

    Returns:
      An ``Optimizer`` with an :class:`AdamState`; ``update`` needs ``params``.

    References:
      [Deep Learning 2020, Adam; L1 - L2 regularization]; Loshchilov & Hutter,
      "Decoupled Weight Decay Regularization", Algorithm 2.
    """
    mask = renamed("adamw", "weight_decay_mask", "mask", weight_decay_mask, mask)
    return _adam_family(
        "adamw", learning_rate, b1, b2, eps, "adamw", weight_decay, mask
    )


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> Optimizer:
    """AdaMax (Kingma & Ba 2014, section 7.1): Adam with the infinity norm.

    ::

        m_t = b1 m_{t-1} + (1 - b1) g_t,     m_0 = 0
        u_t' = max(b2 u'_{t-1}, |g_t|),       u'_0 = 0
        u_t = -alpha_t m_t / (1 - b1^t) / (u'_t + eps)

    The paper has no ``eps``; fnn adds it to the denominator (outside, as for
    Adam) so that a zero gradient history does not divide by zero. PyTorch adds it
    inside the max instead. The infinity-norm average is stored in ``state.v``.

    Warning: the sources and the paper put ``eps`` outside the max, as here
    (``u = -alpha m^ / (u_t + eps)`` with ``u_t = max(b2 u_{t-1}, |g|)``); optax
    and PyTorch put it inside (``max(b2 u_{t-1}, |g| + eps)``). The two agree
    to within ``eps`` of the denominator.

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      b1, b2: decays in ``[0, 1)``.
      eps: ``eps >= 0``.

    Returns:
      An ``Optimizer`` with an :class:`AdamState`.

    References:
      Kingma & Ba, "Adam", Algorithm 2 (AdaMax); [Laurent, Adam algorithm].
    """
    return _adam_family("adamax", learning_rate, b1, b2, eps, "adamax")


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> Optimizer:
    """NAdam (Dozat 2016): Adam with a Nesterov look-ahead first moment.

    ``m_t, v_t, v^_t`` as in :func:`adam`, then::

        m^_t = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)
        u_t = -alpha_t m^_t / (sqrt(v^_t) + eps)

    This is the constant-momentum form (optax's ``nadam``); PyTorch's ``NAdam``
    also decays the momentum with a schedule ``mu_t`` (``momentum_decay``), so its
    numbers differ.

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      b1, b2, eps: as in :func:`adam`.

    Returns:
      An ``Optimizer`` with an :class:`AdamState`.

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam" (2016); [Laurent, SGD
      with Nesterov momentum; Adam algorithm].
    """
    return _adam_family("nadam", learning_rate, b1, b2, eps, "nadam")


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> Optimizer:
    """AMSGrad (Reddi et al. 2018): Adam with a non-decreasing second moment.

    ``m_t, v_t, m^_t`` as in :func:`adam`, then::

        v_max_t = max(v_max_{t-1}, v_t),     v_max_0 = 0
        u_t = -alpha_t m^_t / (sqrt(v_max_t / (1 - b2^t)) + eps)

    The maximum is taken over the uncorrected ``v_t`` and corrected afterwards, as
    in PyTorch; optax takes it over the corrected ``v^_t`` (the two differ in the
    first steps); the paper has no bias correction.

    Args:
      learning_rate: ``alpha``, a finite number ``>= 0`` or a schedule.
      b1, b2, eps: as in :func:`adam`.

    Returns:
      An ``Optimizer`` with an :class:`AdamState` (``v_max`` like the params).

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", Algorithm 2;
      [Neacșu & Vasilescu, ADAM algorithm].
    """
    return _adam_family("amsgrad", learning_rate, b1, b2, eps, "amsgrad")


register_state(SgdState, "sgd")
register_state(EmaMomentumState, "ema_momentum")
register_state(AdagradState, "adagrad")
register_state(RmspropState, "rmsprop")
register_state(AdadeltaState, "adadelta")
register_state(AdamState, "adam, adamw, adamax, nadam or amsgrad")
