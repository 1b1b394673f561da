"""Warm-up schedules of today's training scripts: warm-up + cosine, and
warm-up-stable-decay (WSD).

Same contract as ``fnn.schedules``: ``schedule(count) -> float32 scalar`` with the
zero-based step count, pure and usable under ``jax.jit``; factories check their
arguments up front.
"""

import math

import jax
import jax.numpy as jnp

from .optim._base import is_traced
from .schedules import Schedule, _check_int, _check_real, _count, _f32

_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    With ``W = warmup_steps`` and ``T = decay_steps - W`` (``decay_steps`` counts
    the warm-up, as in optax)::

        lr(t) = a_init + (a_peak - a_init) t / W                       t < W
        s     = min(t - W, T) / T
        lr(t) = a_peak ((1 - r) (0.5 (1 + cos(pi s)))^exponent + r)    t >= W

    with ``r = end_value / peak_value`` (``0`` if ``peak_value = 0``), so the rate
    reaches ``end_value`` at ``t = decay_steps`` and stays there. This is
    ``optax.warmup_cosine_decay_schedule`` (same arguments and values; fnn
    returns float32).

    Args:
      init_value: ``a_init``, the rate at step 0.
      peak_value: ``a_peak``, reached at step ``W``.
      warmup_steps: ``W >= 0`` (0: no warm-up).
      decay_steps: total length ``> W``.
      end_value: the final rate.
      exponent: ``> 0``, sharpens (``> 1``) or flattens the cosine.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
      Restarts", ICLR 2017; Goyal et al., "Accurate, Large Minibatch SGD", 2017
      (gradual warm-up).
    """
    a0 = _check_real("init_value", init_value)
    peak = _check_real("peak_value", peak_value)
    W = _check_int("warmup_steps", warmup_steps, minimum=0)
    total = _check_int("decay_steps", decay_steps, minimum=W + 1)
    end = _check_real("end_value", end_value)
    p = _check_real("exponent", exponent, minimum=0.0, strict=True)
    T = total - W
    if is_traced(peak) or is_traced(end):
        zero_peak = jnp.asarray(peak) == 0.0
        ratio = jnp.where(zero_peak, 0.0, end / jnp.where(zero_peak, 1.0, peak))
    else:
        ratio = 0.0 if peak == 0.0 else end / peak

    def schedule(count):
        t = _f32(_count(count))
        ramp = a0 + (peak - a0) * jnp.clip(t / max(W, 1), 0.0, 1.0)
        s = jnp.clip((t - W) / T, 0.0, 1.0)
        cosine = (0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * s))) ** p
        decay = peak * ((1.0 - ratio) * cosine + ratio)
        return jnp.where(t < W, ramp, decay).astype(jnp.float32)

    return schedule


def warmup_stable_decay(
    peak_value: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
    decay_shape: str = "linear",
) -> Schedule:
    """Warm-up-stable-decay (WSD, "trapezoidal"): ramp up, hold, anneal.

    With ``W = warmup_steps``, ``S = stable_steps``, ``D = decay_steps`` and
    ``s = clip((t - W - S) / D, 0, 1)``::

        lr(t) = a_init + (a_peak - a_init) t / W         t < W
        lr(t) = a_peak                                   W <= t < W + S
        lr(t) = a_end + (a_peak - a_end) f(s)            t >= W + S

    with ``f(s) = 1 - s`` (``"linear"``), ``(1 + cos(pi s)) / 2`` (``"cosine"``)
    or ``1 - sqrt(s)`` (``"1-sqrt"``, Hägele et al.); the rate is ``a_end`` from
    ``t = W + S + D`` on. The stable phase can be extended (a run continued)
    without touching the warm-up, and a decay can branch off any checkpoint.

    Args:
      peak_value: ``a_peak``.
      warmup_steps: ``W >= 0``.
      stable_steps: ``S >= 0``.
      decay_steps: ``D >= 1``.
      init_value: ``a_init``, the rate at step 0.
      end_value: ``a_end``.
      decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Returns:
      A schedule ``count -> float32 scalar``.

    References:
      Hu et al., "MiniCPM: Unveiling the Potential of Small Language Models with
      Scalable Training Strategies", 2024 (WSD); Hägele et al., "Scaling Laws and
      Compute-Optimal Training beyond Fixed Training Durations", 2024.
    """
    peak = _check_real("peak_value", peak_value)
    W = _check_int("warmup_steps", warmup_steps, minimum=0)
    S = _check_int("stable_steps", stable_steps, minimum=0)
    D = _check_int("decay_steps", decay_steps, minimum=1)
    a0 = _check_real("init_value", init_value)
    end = _check_real("end_value", end_value)
    if decay_shape not in _DECAY_SHAPES:
        raise ValueError(
            f"decay_shape must be one of {_DECAY_SHAPES}, got {decay_shape!r}."
        )

    def shape(s: jax.Array) -> jax.Array:
        if decay_shape == "linear":
            return 1.0 - s
        if decay_shape == "cosine":
            return 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * s))
        return 1.0 - jnp.sqrt(s)

    def schedule(count):
        t = _f32(_count(count))
        ramp = a0 + (peak - a0) * jnp.clip(t / max(W, 1), 0.0, 1.0)
        s = jnp.clip((t - (W + S)) / D, 0.0, 1.0)
        decay = end + (peak - end) * shape(s)
        return jnp.where(t < W, ramp, decay).astype(jnp.float32)

    return schedule
