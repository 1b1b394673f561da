"""Weight initializers: functions ``(key, shape, dtype) -> Array``.

Every variance-preserving scheme is :func:`variance_scaling` with a scale, a fan
mode and a distribution; the named schemes only fix those three:

====================  ======================  =======
name                  target Var[W]           mode
====================  ======================  =======
lecun_normal/uniform  1 / fan_in              fan_in
glorot_normal/uniform 2 / (fan_in + fan_out)  fan_avg
he_normal/uniform     2 / fan_in              fan_in
====================  ======================  =======

Sources: LeCun in [Neacșu & Vasilescu, Initialization of Y. LeCun]; Glorot in
[Deep Learning 2020, Parameter initialization] ("Glorot's") and
[Neacșu & Vasilescu, Glorot Initialization]; He in
[Neacșu & Vasilescu, He Initialization].

``xavier_*`` are aliases of ``glorot_*`` and ``kaiming_*`` of ``he_*`` (same arrays
for the same key).

**Normal variants are not truncated.** They draw from the plain Gaussian
N(0, σ²) the sources write, like PyTorch's ``kaiming_normal_``. JAX, Flax and Keras
use a normal truncated at ±2σ with σ corrected so the variance is still the
target; that is available as ``variance_scaling(..., "truncated_normal")``.
Uniform variants draw from U(−√(3σ²), √(3σ²)), whose variance is σ².

Discrepancies in the sources, and what fnn does:
  * [Deep Learning 2020, Parameter initialization] calls N(0, 2/n_i) "Xavier's"
    initialization. With n_i the fan-in that is He's (Kaiming's) normal; Xavier
    Glorot's is the N(0, 2/(n_i + n_{i+1})) that the same article calls
    "Glorot's". fnn uses the standard names.
  * [Neacșu & Vasilescu] writes N(μ, σ) with the *standard deviation* as second
    argument
    (e.g. Glorot normal N(0, √2/√(fan_in + fan_out)), XOR experiment
    N(0, 1/√fan_in)); fnn states variances.
  * [Neacșu & Vasilescu]'s He slide says "use one of them, e.g. σ² = 2/fan_out" but its
    formulas use fan_in; fnn uses fan_in (the forward constraint), the default
    everywhere else.

Fans of a shape ``(..., n_in, n_out)``: ``fan_in = n_in·r``, ``fan_out = n_out·r``
with ``r`` the product of the leading (receptive-field) dimensions; fnn's dense
weights are ``(n_in, n_out)`` (batch-first ``Z = A_prev @ W + b``).
"""

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

#: ``init(key, shape, dtype) -> W``: an array of ``shape`` ((n_in, n_out) for a
#: dense layer) and ``dtype`` drawn from ``key``; what ``scheme`` may also be.
Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]

__all__ = [
    "Initializer",
    "variance_scaling",
    "zeros",
    "normal",
    "uniform",
    "orthogonal",
    "lecun_normal",
    "lecun_uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "get",
    "names",
    "fans",
    "check_key",
    "check_shape",
]

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]

# Standard deviation of N(0, 1) truncated to [-2, 2]; dividing by it restores var 1.
_TRUNCATED_STD = 0.87962566103423978


def check_key(key: Any, name: str = "key") -> None:
    """Check that ``key`` is a JAX PRNG key, before JAX's internal message would.

    Accepted: a typed key (``jax.random.key(0)``, also traced, also a batch of
    keys) or a legacy raw ``uint32`` key (``jax.random.PRNGKey(0)``).

    Args:
      key: the value passed as a key.
      name: the argument's name in the message (``"key"``, ``"key_init"``).

    Raises:
      ValueError: ``key`` is an int (``0``), a float, ``None`` or an array that is
        not a key; the message says to pass ``jax.random.key(seed)``.
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None and not isinstance(key, np.generic):
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return
        if dtype == jnp.uint32 and getattr(key, "ndim", 0) >= 1:
            return  # a raw key from jax.random.PRNGKey
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        hint = f"jax.random.key({int(key)})"
    else:
        hint = "jax.random.key(seed)"
    what = type(key).__name__
    if dtype is not None and not isinstance(key, np.generic):
        what = f"an array of dtype {dtype} and shape {getattr(key, 'shape', ())}:"
    raise ValueError(
        f"{name} must be a JAX PRNG key, got {what} {key!r}; pass {hint} "
        "(split it with jax.random.split for several draws)."
    )


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints, each ``>= 0``.

    Python and numpy integers (``np.int64``) are accepted; booleans, floats and
    negative sizes are not.

    Raises:
      ValueError: naming the bad entry.
    """
    try:
        entries = tuple(shape)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of integers, got {shape!r}."
        ) from None
    out = []
    for i, n in enumerate(entries):
        if isinstance(n, bool | np.bool_):
            raise ValueError(f"{name}[{i}] must be an integer, got the bool {n!r}.")
        try:
            n = operator.index(n)
        except TypeError:
            raise ValueError(
                f"{name}[{i}] must be an integer, got {type(n).__name__} {n!r}."
            ) from None
        if n < 0:
            raise ValueError(f"{name}[{i}] must be >= 0, got {n}.")
        out.append(n)
    return tuple(out)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(..., n_in, n_out)``.

    A 1-D shape ``(n,)`` has ``fan_in = fan_out = n``.
    """
    shape = check_shape(shape)
    if len(shape) < 1:
        raise ValueError(f"cannot compute fans of a scalar shape {tuple(shape)}.")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def variance_scaling(
    scale: float, mode: Mode = "fan_in", distribution: Distribution = "normal"
) -> Initializer:
    """Initializer with Var[W] = scale / n, n the fan chosen by ``mode``.

    Args:
      scale: positive multiplier of the variance.
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"`` ((fan_in + fan_out)/2).
      distribution: ``"normal"`` (N(0, σ²), untruncated), ``"truncated_normal"``
        (N(0, σ'²) cut at ±2σ', σ' = σ/0.8796 so the variance is σ²) or
        ``"uniform"`` (U(−√3σ, √3σ)).

    Returns:
      ``init(key, shape, dtype=jnp.float32) -> Array`` of ``shape``.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}.")
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(
            f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}."
        )
    if distribution not in ("normal", "truncated_normal", "uniform"):
        raise ValueError(
            "distribution must be 'normal', 'truncated_normal' or 'uniform', "
            f"got {distribution!r}."
        )

    def init(key, shape, dtype=jnp.float32):
        check_key(key)
        shape = check_shape(shape)
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
        std = math.sqrt(scale / n[mode])
        if distribution == "normal":
            return std * jax.random.normal(key, shape, dtype)
        if distribution == "truncated_normal":
            draw = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
            return (std / _TRUNCATED_STD) * draw
        limit = math.sqrt(3.0) * std
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def zeros() -> Initializer:
    """All zeros. Every hidden unit then computes the same function and gets the
    same gradient, so symmetry is never broken
    ([Deep Learning 2020, Parameter initialization]; [Neacșu & Vasilescu])."""
    return lambda key, shape, dtype=jnp.float32: jnp.zeros(check_shape(shape), dtype)


def normal(stddev: float = 0.05) -> Initializer:
    """N(0, stddev²), untruncated (the default stddev is Keras's)."""

    def init(key, shape, dtype=jnp.float32):
        check_key(key)
        return stddev * jax.random.normal(key, check_shape(shape), dtype)

    return init


def uniform(scale: float = 0.05) -> Initializer:
    """Symmetric U(−scale, scale); the XOR experiment uses ``uniform(10.0)``.

    References: [Neacșu & Vasilescu, Does the starting point matter?].

    Warning: this draws from U(-scale, scale), symmetric around 0 as the
    sources' uniform scheme; ``jax.nn.initializers.uniform(scale)`` draws from
    U[0, scale).
    """

    def init(key, shape, dtype=jnp.float32):
        check_key(key)
        return jax.random.uniform(key, check_shape(shape), dtype, -scale, scale)

    return init


def orthogonal(scale: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``scale`` (Saxe et al., 2014).

    For ``(n_in, n_out)`` with ``n_in ≥ n_out`` the columns are orthonormal
    (``WᵀW = I``), otherwise the rows (``WWᵀ = I``). Drawn as the Q factor of a
    Gaussian matrix with the signs of diag(R) folded in, which makes Q uniform
    (Haar) on the orthogonal group. Leading dimensions are flattened into n_in.
    """

    def init(key, shape, dtype=jnp.float32):
        check_key(key)
        shape = check_shape(shape)
        if len(shape) < 2:
            raise ValueError(
                f"orthogonal needs a shape of rank >= 2, got {tuple(shape)}."
            )
        n_rows, n_cols = math.prod(shape[:-1]), shape[-1]
        A = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        Q, R = jnp.linalg.qr(A)
        Q = Q * jnp.sign(jnp.diagonal(R))
        if n_rows < n_cols:
            Q = Q.T
        return (scale * Q).reshape(shape)

    return init


def lecun_normal() -> Initializer:
    """N(0, 1/fan_in) [Neacșu & Vasilescu, Initialization of Y. LeCun]."""
    return variance_scaling(1.0, "fan_in", "normal")


def lecun_uniform() -> Initializer:
    """U(−√(3/fan_in), √(3/fan_in)), variance 1/fan_in."""
    return variance_scaling(1.0, "fan_in", "uniform")


def glorot_normal() -> Initializer:
    """N(0, 2/(fan_in + fan_out)) (a.k.a. Xavier normal).

    References: [Deep Learning 2020, Parameter initialization];
    [Neacșu & Vasilescu, Glorot Initialization].
    """
    return variance_scaling(1.0, "fan_avg", "normal")


def glorot_uniform() -> Initializer:
    """U(−√6/√(fan_in + fan_out), +√6/√(fan_in + fan_out)) [Neacșu & Vasilescu]."""
    return variance_scaling(1.0, "fan_avg", "uniform")


def he_normal() -> Initializer:
    """N(0, 2/fan_in).

    References: [Neacșu & Vasilescu, He Initialization];
    [Deep Learning 2020, Parameter initialization] calls it "Xavier's".
    """
    return variance_scaling(2.0, "fan_in", "normal")


def he_uniform() -> Initializer:
    """U(−√6/√fan_in, +√6/√fan_in) [Neacșu & Vasilescu, He Initialization]."""
    return variance_scaling(2.0, "fan_in", "uniform")


_REGISTRY: dict[str, Callable[[], Initializer]] = {
    "zeros": zeros,
    "normal": normal,
    "uniform": uniform,
    "orthogonal": orthogonal,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
}


def names() -> list[str]:
    """The registered scheme names (aliases included), sorted."""
    return sorted(_REGISTRY)


def get(scheme: "str | Initializer") -> Initializer:
    """An initializer by name, or a callable ``scheme(key, shape, dtype)`` as is.

    Raises:
      ValueError: unknown name; the message lists the valid names.
    """
    if callable(scheme):
        return scheme
    if not isinstance(scheme, str) or scheme not in _REGISTRY:
        raise ValueError(
            f"unknown init scheme {scheme!r}; valid names: {', '.join(names())}, "
            "or a callable scheme(key, shape, dtype)."
        )
    return _REGISTRY[scheme]()
