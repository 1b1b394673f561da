"""Learning-rate schedules: pure functions of the step count, usable inside jit.

A schedule is a function ``schedule(count) -> lr``:

  * ``count`` is the zero-based step count (an int, or an integer array such as the
    int32 ``count`` kept in optimizer states); the first update uses
    ``schedule(0)``.
  * the result is a float32 scalar ``jax.Array``, whatever the dtype of ``count``
    (so optimizer states keep fixed dtypes and a jitted step traces once).
  * a schedule has no state: ``schedule(c)`` depends on ``c`` only, so it can be
    called under ``jax.jit``, ``jax.vmap`` or ``lax.scan``.

Factories check their arguments up front and raise ``ValueError`` naming the
argument and the bad value. Every value a schedule can return is a learning rate:
initial, peak, end and minimum values must be finite and ``>= 0`` (a negative
rate would climb the loss). Numbers may be Python numbers, NumPy scalars or 0-d
JAX arrays; a traced value (a factory called inside ``jit`` on an argument) is
accepted unchecked (so a schedule can be built inside ``jit`` or ``vmap`` from
array arguments, and a jitted function taking them does not recompile when they
change), except for the integer step counts that fix the structure of the
schedule, which must be concrete Python (or NumPy) integers.

[Deep Learning 2020, Learning rate decay] lists three decay laws by epoch; their
formulas are images lost from the text, so fnn uses the standard forms
``a0 / (1 + k*epoch)``, ``a0 * gamma**epoch`` and ``a0 * k / sqrt(epoch)``.
[Neacșu & Vasilescu, Adaptive Learning rate] lists a linear decrease, halving on
a fixed schedule, the 1-cycle policy and SGD with warm restarts.

Convention: a schedule returns float32 (the learning rate the optimizer states
keep), also under ``jax.enable_x64``, where optax's schedules return float64; a
float64 run then agrees with optax to the float32 rounding of the rate.
"""

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from .optim._base import check_scalar, is_traced

Schedule = Callable[[jax.Array], jax.Array]

__all__ = [
    "constant_schedule",
    "inverse_time_decay",
    "exponential_decay",
    "epoch_exponential_decay",
    "warmup_cosine_decay_schedule",
    "warmup_stable_decay",
    "inverse_sqrt_decay",
    "linear_schedule",
    "polynomial_schedule",
    "piecewise_constant_schedule",
    "cosine_decay_schedule",
    "linear_warmup",
    "warmup",
    "one_cycle",
    "sgdr",
    "cosine_warm_restarts",
    "join_schedules",
]


# ----------------------------------------------------------------------------------
# Argument checks and helpers
# ----------------------------------------------------------------------------------


def _check_real(
    name: str, value, *, minimum=None, strict=False, concrete=False
) -> float | jax.Array:
    """A finite real number, optionally ``> minimum`` (strict) or ``>= minimum``:
    a Python float, or a traced value as float32 (see ``check_scalar``)."""
    value = check_scalar(name, value, lo=minimum, lo_open=strict, concrete=concrete)
    return _f32(value) if is_traced(value) else value


def _check_rate(name: str, value) -> float | jax.Array:
    """A learning-rate value: a finite number ``>= 0``."""
    return _check_real(name, value, minimum=0)


def _check_int(name: str, value, *, minimum: int) -> int:
    """An integer ``>= minimum`` (Python or NumPy integer, or a 0-d integer
    array), returned as a Python ``int``."""
    return check_scalar(name, value, lo=minimum, integer=True)


def _count(count) -> jax.Array:
    """The step count as an integer array (int32 unless it already has an int
    dtype)."""
    count = jnp.asarray(count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise ValueError(
            f"schedule count must be an integer step count, got dtype {count.dtype}."
        )
    return count


def _f32(x) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


# ----------------------------------------------------------------------------------
# [Deep Learning 2020, Learning rate decay]: decay by epoch
# ----------------------------------------------------------------------------------


def constant_schedule(value: float) -> Schedule:
    """A constant learning rate: ``lr(t) = value``.

    Args:
      value: the learning rate (a finite float).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate] (the baseline every schedule departs
      from).
    """
    value = _check_rate("value", value)

    def schedule(count):
        _count(count)
        return jnp.asarray(value, dtype=jnp.float32)

    return schedule


def inverse_time_decay(
    init_value: float, decay_rate: float, steps_per_epoch: int = 1
) -> Schedule:
    """Inverse-time decay by epoch: ``lr = a0 / (1 + k * epoch)``.

    ``epoch = count // steps_per_epoch`` (zero-based, so ``lr(0) = a0``) and
    ``k = decay_rate``.

    Args:
      init_value: ``a0``, the learning rate of epoch 0.
      decay_rate: ``k >= 0``.
      steps_per_epoch: optimizer steps per epoch (``>= 1``); 1 decays every step.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Deep Learning 2020, Learning rate decay], first law (the formula is lost
      from the article's text; this is the standard form ``a0 / (1 + k * epoch)``).
    """
    a0 = _check_rate("init_value", init_value)
    k = _check_real("decay_rate", decay_rate, minimum=0.0)
    spe = _check_int("steps_per_epoch", steps_per_epoch, minimum=1)

    def schedule(count):
        epoch = _f32(_count(count) // spe)
        return jnp.asarray(a0, jnp.float32) / (1.0 + k * epoch)

    return schedule


def epoch_exponential_decay(
    init_value: float, decay_rate: float, steps_per_epoch: int = 1
) -> Schedule:
    """Exponential decay by epoch: ``lr = a0 * gamma ** epoch``.

    The second law of [Deep Learning 2020, Learning rate decay].

    Not optax's ``exponential_decay`` (that is :func:`exponential_decay`, whose
    rate falls continuously over ``transition_steps``).

    ``epoch = count // steps_per_epoch`` (zero-based, so ``lr(0) = a0``) and
    ``gamma = decay_rate``; the rate changes by whole epochs (a staircase when
    ``steps_per_epoch > 1``).

    Args:
      init_value: ``a0``.
      decay_rate: ``gamma > 0`` (``< 1`` decays, ``1`` is constant).
      steps_per_epoch: optimizer steps per epoch (``>= 1``).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Deep Learning 2020, Learning rate decay], second law (standard form
      ``a0 * gamma**epoch``; the article's formula image is lost).
    """
    a0 = _check_rate("init_value", init_value)
    gamma = _check_real("decay_rate", decay_rate, minimum=0.0, strict=True)
    spe = _check_int("steps_per_epoch", steps_per_epoch, minimum=1)

    def schedule(count):
        epoch = _f32(_count(count) // spe)
        return jnp.asarray(a0, jnp.float32) * jnp.power(
            jnp.asarray(gamma, jnp.float32), epoch
        )

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int | None = None,
    decay_rate: float | None = None,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
    *,
    steps_per_epoch: int | None = None,
) -> Schedule:
    """Exponential decay with optax's meaning and arguments.

    ::

        p = max(count - transition_begin, 0) / transition_steps   (floor if staircase)
        lr = init_value * decay_rate ** p,   clipped at end_value when given
        lr = init_value for count < transition_begin

    Warning: before fnn 0.2 this name meant [Deep Learning 2020]'s per-epoch law
    ``exponential_decay(init_value, decay_rate, steps_per_epoch)``, now
    :func:`epoch_exponential_decay`. A call in that old form (a fractional
    ``transition_steps`` with no ``decay_rate``, or ``steps_per_epoch=``) still
    gives the old schedule, with a ``DeprecationWarning``; it goes in the next
    release.

    Args:
      init_value: the rate at count 0.
      transition_steps: ``> 0`` steps over which the rate is multiplied by
        ``decay_rate``.
      decay_rate: ``> 0`` (``< 1`` decays).
      transition_begin: ``>= 0`` steps held at ``init_value`` first.
      staircase: decay in whole multiples of ``transition_steps``.
      end_value: the bound the rate does not pass (a floor when decaying).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      optax ``exponential_decay`` (same arguments and values); TensorFlow's
      ``ExponentialDecay``.
    """
    old_form = steps_per_epoch is not None or (
        decay_rate is None
        and isinstance(transition_steps, float)
        and not float(transition_steps).is_integer()
    )
    if old_form:
        warnings.warn(
            "exponential_decay(init_value, decay_rate, steps_per_epoch) is the "
            "per-epoch law of [Deep Learning 2020, Learning rate decay], now "
            "fnn.schedules.epoch_exponential_decay; "
            "exponential_decay takes optax's arguments (init_value, "
            "transition_steps, decay_rate, ...). The old form goes in the next "
            "release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return epoch_exponential_decay(
            init_value,
            transition_steps,
            1 if steps_per_epoch is None else steps_per_epoch,
        )
    if transition_steps is None or decay_rate is None:
        raise ValueError(
            "exponential_decay needs transition_steps and decay_rate (optax's "
            "arguments); for [Deep Learning 2020]'s per-epoch law use "
            "epoch_exponential_decay(init_value, decay_rate, steps_per_epoch)."
        )
    a0 = _check_rate("init_value", init_value)
    steps = _check_int("transition_steps", transition_steps, minimum=1)
    gamma = _check_real("decay_rate", decay_rate, minimum=0.0, strict=True)
    begin = _check_int("transition_begin", transition_begin, minimum=0)
    end = None if end_value is None else _check_rate("end_value", end_value)

    def schedule(count):
        p = _f32(jnp.maximum(_count(count) - begin, 0)) / steps
        if staircase:
            p = jnp.floor(p)
        lr = jnp.asarray(a0, jnp.float32) * jnp.power(
            jnp.asarray(gamma, jnp.float32), p
        )
        if end is not None:
            bound = jnp.asarray(end, jnp.float32)
            decaying = jnp.asarray(gamma, jnp.float32) < 1
            lr = jnp.where(decaying, jnp.maximum(lr, bound), jnp.minimum(lr, bound))
        return lr

    return schedule


def inverse_sqrt_decay(
    init_value: float, k: float, steps_per_epoch: int = 1
) -> Schedule:
    """Inverse-square-root decay by epoch: ``lr = a0 * k / sqrt(epoch + 1)``.

    The article's law is ``a0 * k / sqrt(epoch)`` with epochs numbered from 1
    (the training loop of [Deep Learning 2020, Learning rate decay] runs
    ``i = 1, 2, ..., N``). fnn counts zero-based epochs
    ``epoch = count // steps_per_epoch``, so the article's epoch number is
    ``epoch + 1``: the first epoch uses ``a0 * k`` and nothing divides by zero.

    Args:
      init_value: ``a0``.
      k: the constant ``k > 0``.
      steps_per_epoch: optimizer steps per epoch (``>= 1``).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Deep Learning 2020, Learning rate decay], third law (standard form
      ``a0 * k / sqrt(epoch)``; the article's formula image is lost).
    """
    a0 = _check_rate("init_value", init_value)
    k = _check_real("k", k, minimum=0.0, strict=True)
    spe = _check_int("steps_per_epoch", steps_per_epoch, minimum=1)

    def schedule(count):
        epoch = _f32(_count(count) // spe)
        return jnp.asarray(a0 * k, jnp.float32) / jnp.sqrt(epoch + 1.0)

    return schedule


# ----------------------------------------------------------------------------------
# [Neacșu & Vasilescu, Adaptive Learning rate]
# ----------------------------------------------------------------------------------


def _fraction(count, begin: int, steps: int) -> jax.Array:
    """``clip((count - begin) / steps, 0, 1)`` as float32."""
    t = _f32(_count(count)) - float(begin)
    return jnp.clip(t / float(steps), 0.0, 1.0)


def linear_schedule(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Linear change from ``a0`` to ``af``, then constant.

    ``lr(t) = a0 + (af - a0) * clip((t - t0) / T, 0, 1)`` with ``t0 =
    transition_begin`` and ``T = transition_steps``.

    Args:
      init_value: ``a0`` (held for ``t <= t0``).
      end_value: ``af`` (held for ``t >= t0 + T``).
      transition_steps: ``T >= 1``.
      transition_begin: ``t0 >= 0``.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "Linear decrease from a0 to af".
    """
    a0 = _check_rate("init_value", init_value)
    af = _check_rate("end_value", end_value)
    T = _check_int("transition_steps", transition_steps, minimum=1)
    t0 = _check_int("transition_begin", transition_begin, minimum=0)

    def schedule(count):
        return a0 + (af - a0) * _fraction(count, t0, T)

    return schedule


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay: ``lr(t) = (a0 - af) * (1 - s) ** power + af``.

    ``s = clip((t - t0) / T, 0, 1)``; ``power = 1`` is :func:`linear_schedule`.

    Args:
      init_value: ``a0``.
      end_value: ``af``.
      power: the exponent ``> 0``.
      transition_steps: ``T >= 1``.
      transition_begin: ``t0 >= 0``.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate] (a generalisation of the linear
      decrease).
    """
    a0 = _check_rate("init_value", init_value)
    af = _check_rate("end_value", end_value)
    p = _check_real("power", power, minimum=0.0, strict=True)
    T = _check_int("transition_steps", transition_steps, minimum=1)
    t0 = _check_int("transition_begin", transition_begin, minimum=0)

    def schedule(count):
        s = _fraction(count, t0, T)
        return (a0 - af) * jnp.power(1.0 - s, p) + af

    return schedule


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """Piecewise constant: multiply by ``scale_b`` once the step reaches ``b``.

    ``lr(t) = a0 * prod_{b <= t} scale_b``; with every scale ``0.5`` this is
    the "halve the learning rate on a fixed schedule" of
    [Neacșu & Vasilescu, Adaptive Learning rate]. A boundary ``b`` takes effect at step
    ``b`` itself.

    Args:
      init_value: ``a0``.
      boundaries_and_scales: ``{step: scale}`` with integer steps ``>= 0`` and
        finite scales ``>= 0``; ``None`` or empty gives a constant.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "Halve the learning rate on a fixed
      schedule".
    """
    a0 = _check_rate("init_value", init_value)
    pairs = []
    for b, s in sorted(dict(boundaries_and_scales or {}).items()):
        _check_int(f"boundaries_and_scales key {b!r}", b, minimum=0)
        pairs.append((b, _check_real(f"boundaries_and_scales[{b}]", s, minimum=0.0)))

    def schedule(count):
        count = _count(count)
        value = jnp.asarray(a0, jnp.float32)
        for b, s in pairs:
            value = jnp.where(count >= b, value * s, value)
        return value

    return schedule


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0
) -> Schedule:
    """Cosine decay: ``lr(t) = a0 * ((1 - alpha) * (1 + cos(pi * s)) / 2 + alpha)``.

    ``s = min(t, T) / T`` with ``T = decay_steps``; the rate falls from ``a0`` to
    ``alpha * a0`` and stays there.

    Args:
      init_value: ``a0``.
      decay_steps: ``T >= 1``.
      alpha: the final fraction of ``a0`` (``>= 0``).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5 (one period, no restart);
      [Neacșu & Vasilescu, Adaptive Learning rate].
    """
    a0 = _check_rate("init_value", init_value)
    T = _check_int("decay_steps", decay_steps, minimum=1)
    alpha = _check_real("alpha", alpha, minimum=0.0)

    def schedule(count):
        s = _fraction(count, 0, T)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * s))
        return a0 * ((1.0 - alpha) * cosine + alpha)

    return schedule


def linear_warmup(
    peak_value: float, warmup_steps: int, init_value: float = 0.0
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then constant.

    ``lr(t) = a_init + (a_peak - a_init) * min(t / W, 1)`` with ``W =
    warmup_steps``.

    Args:
      peak_value: the rate reached at step ``W`` and kept after.
      warmup_steps: ``W >= 1``.
      init_value: the rate at step 0 (default 0).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      Goyal et al., "Accurate, Large Minibatch SGD", 2017 (gradual warm-up);
      [Neacșu & Vasilescu, Adaptive Learning rate] (increasing learning rate).
    """
    peak = _check_rate("peak_value", peak_value)
    W = _check_int("warmup_steps", warmup_steps, minimum=1)
    return linear_schedule(_check_rate("init_value", init_value), peak, W)


def warmup(schedule: Schedule, warmup_steps: int, init_value: float = 0.0) -> Schedule:
    """Prefix ``schedule`` with a linear warm-up to its first value.

    ``lr(t) = a_init + (s(0) - a_init) * t / W`` for ``t < W``, then
    ``lr(t) = s(t - W)``: the wrapped schedule starts counting at the end of the
    warm-up.

    Args:
      schedule: the schedule to run after the warm-up (evaluated once at 0 here).
      warmup_steps: ``W >= 1``.
      init_value: the rate at step 0 (default 0).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      Goyal et al., 2017 (gradual warm-up);
      [Neacșu & Vasilescu, Adaptive Learning rate].
    """
    if not callable(schedule):
        raise ValueError(f"schedule must be callable, got {schedule!r}.")
    W = _check_int("warmup_steps", warmup_steps, minimum=1)
    with jax.ensure_compile_time_eval():
        first = schedule(jnp.asarray(0, jnp.int32))
    first = _check_rate("schedule(0)", first)
    ramp = linear_schedule(init_value, first, W)
    return join_schedules([ramp, schedule], [W])


def one_cycle(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.45,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The 1-cycle policy (Smith): up, down, then annihilate, all linear.

    With ``T = transition_steps``, ``a_min = peak / div_factor``, ``a_end = a_min /
    final_div_factor``, ``t1 = pct_start * T`` and ``t2 = 2 * t1``::

        lr(t) = a_min + (peak - a_min) * t / t1              0  <= t <= t1
              = peak - (peak - a_min) * (t - t1) / t1         t1 <= t <= t2
              = a_min - (a_min - a_end) * (t - t2) / (T - t2) t2 <= t <= T
              = a_end                                         t >= T

    This is Smith's original three-phase, linear form (the cycle is symmetric and
    the last ``1 - 2 * pct_start`` of training anneals far below ``a_min``).
    optax's ``cosine_onecycle_schedule`` and PyTorch's default ``OneCycleLR`` use
    two cosine phases instead.

    Warning: the linear phases end one step later than PyTorch's
    ``OneCycleLR(three_phase=True, anneal_strategy="linear")``: fnn reaches the
    peak at count ``t1`` exactly and ``a_end`` at count ``T``, where PyTorch
    ends each phase one step earlier (at ``phase_end - 1``).

    Args:
      transition_steps: ``T >= 2``, the length of the policy.
      peak_value: the top of the cycle.
      pct_start: the fraction of ``T`` spent rising, in ``(0, 0.5]``.
      div_factor: ``peak / a_min > 0``.
      final_div_factor: ``a_min / a_end > 0``.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "The 1-cycle policy"; L. N. Smith,
      "A disciplined approach to neural network hyper-parameters", 2018, and
      Smith & Topin, "Super-convergence", 2018.
    """
    T = _check_int("transition_steps", transition_steps, minimum=2)
    peak = _check_rate("peak_value", peak_value)
    pct = _check_real("pct_start", pct_start, minimum=0.0, strict=True)
    if not is_traced(pct) and pct > 0.5:
        raise ValueError(f"pct_start must be in (0, 0.5], got {pct_start!r}.")
    div = _check_real("div_factor", div_factor, minimum=0.0, strict=True)
    fdiv = _check_real("final_div_factor", final_div_factor, minimum=0.0, strict=True)
    a_min = peak / div
    a_end = a_min / fdiv
    t1 = pct * T
    t2 = 2.0 * t1

    def schedule(count):
        t = _f32(_count(count))
        up = a_min + (peak - a_min) * jnp.clip(t / t1, 0.0, 1.0)
        down = peak - (peak - a_min) * jnp.clip((t - t1) / t1, 0.0, 1.0)
        if is_traced(pct):
            # The phase boundaries are arrays: both forms of the tail, selected.
            longer = T > t2
            span = jnp.where(longer, T - t2, 1.0)
            slope = jnp.clip((t - t2) / span, 0.0, 1.0)
            tail = jnp.where(longer, a_min - (a_min - a_end) * slope, a_end)
        elif T > t2:
            tail = a_min - (a_min - a_end) * jnp.clip((t - t2) / (T - t2), 0.0, 1.0)
        else:
            tail = jnp.asarray(a_end, jnp.float32)
        return jnp.where(t <= t1, up, jnp.where(t <= t2, down, tail)).astype(
            jnp.float32
        )

    return schedule


def sgdr(
    init_value: float,
    period: int,
    period_mult: float = 1.0,
    min_value: float = 0.0,
) -> Schedule:
    """SGD with warm restarts (SGDR): cosine annealing restarted every period.

    ``lr(t) = a_min + (a0 - a_min) * (1 + cos(pi * t_cur / T_i)) / 2`` where the
    ``i``-th period (zero-based) lasts ``T_i = T_0 * m**i`` steps, ``t_cur`` is
    the step counted from the start of the current period, ``T_0 = period`` and
    ``m = period_mult``. Period ``i`` starts at ``T_0 * (m**i - 1) / (m - 1)``
    (``T_0 * i`` when ``m = 1``); the rate jumps back to ``a0`` there.

    Args:
      init_value: ``a0``, the rate at each restart.
      period: ``T_0 >= 1``.
      period_mult: ``m >= 1`` (Loshchilov & Hutter's ``T_mult``).
      min_value: ``a_min`` (``eta_min``).

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate]: "Stochastic Gradient Descent
      with Warm Restart"; Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5.
    """
    a0 = _check_rate("init_value", init_value)
    T0 = _check_int("period", period, minimum=1)
    m = _check_real("period_mult", period_mult, minimum=1.0)
    a_min = _check_rate("min_value", min_value)

    def equal_periods(t):
        i = jnp.floor(t / T0)
        return i * T0, jnp.asarray(float(T0), jnp.float32)

    def growing_periods(t, m, log_m):
        # Invert start(i) = T0 (m^i - 1) / (m - 1) <= t, then correct the
        # float rounding of the logarithm by one period either way.
        def start_of(i):
            return T0 * (jnp.power(_f32(m), i) - 1.0) / (m - 1.0)

        i = jnp.floor(jnp.log1p(t * (m - 1.0) / T0) / log_m)
        i = jnp.where(start_of(i + 1.0) <= t, i + 1.0, i)
        i = jnp.where(start_of(i) > t, i - 1.0, i)
        return start_of(i), T0 * jnp.power(_f32(m), i)

    def schedule(count):
        t = _f32(_count(count))
        if is_traced(m):
            # m is an array: both forms, the growing one at a safe m when m == 1.
            same = m == 1.0
            m_safe = jnp.where(same, 2.0, m)
            start1, length1 = equal_periods(t)
            start2, length2 = growing_periods(t, m_safe, jnp.log(m_safe))
            start = jnp.where(same, start1, start2)
            length = jnp.where(same, length1, length2)
        elif m == 1.0:
            start, length = equal_periods(t)
        else:
            start, length = growing_periods(t, m, math.log(m))
        t_cur = t - start
        cosine = 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * t_cur / length))
        return (a_min + (a0 - a_min) * cosine).astype(jnp.float32)

    return schedule


cosine_warm_restarts = sgdr


def join_schedules(
    schedules: Sequence[Schedule], boundaries: Sequence[int]
) -> Schedule:
    """Run ``schedules[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``.

    ``lr(t) = schedules[i](t - b_{i-1})`` for ``b_{i-1} <= t < b_i`` (with
    ``b_{-1} = 0``): each later schedule sees the step counted from its own
    boundary.

    Args:
      schedules: ``n >= 1`` schedules.
      boundaries: ``n - 1`` strictly increasing integers ``>= 1``.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      [Neacșu & Vasilescu, Adaptive Learning rate] (warm-up, 1-cycle and restarts
      are all joins of simple pieces).
    """
    schedules = list(schedules)
    boundaries = list(boundaries)
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got none.")
    for i, s in enumerate(schedules):
        if not callable(s):
            raise ValueError(f"schedules[{i}] must be callable, got {s!r}.")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} "
            f"entries, got {len(boundaries)}: {boundaries!r}."
        )
    previous = 0
    for i, b in enumerate(boundaries):
        _check_int(f"boundaries[{i}]", b, minimum=previous + 1)
        previous = b

    def schedule(count):
        count = _count(count)
        value = _f32(schedules[0](count))
        for b, s in zip(boundaries, schedules[1:], strict=True):
            value = jnp.where(count >= b, _f32(s(count - b)), value)
        return value

    return schedule


# Warm-up schedules of today's training scripts, in their own module.
from ._schedules_extra import (  # noqa: E402
    warmup_cosine_decay_schedule as warmup_cosine_decay_schedule,
)
from ._schedules_extra import warmup_stable_decay as warmup_stable_decay  # noqa: E402
