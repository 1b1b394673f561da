"""Generated toy data sets with closed-form structure, each driven by ``key``.

All return a ``Dataset`` with float32 ``X`` ``(n, 2)`` (``(n, 1)`` for ``line``)
and int32 labels (float32 targets for ``line``). Rows of the two-class sets are
shuffled, so any prefix holds both classes.
"""

import math
import operator

import jax
import jax.numpy as jnp

from ._dataset import Dataset

XOR_POINTS = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
XOR_LABELS = (0, 1, 1, 0)


def _check_n(n: object, minimum: int) -> int:
    try:
        n = operator.index(n)
    except TypeError as e:
        raise TypeError(f"n must be an int; got {type(n).__name__}") from e
    if n < minimum:
        raise ValueError(f"n must be >= {minimum}; got {n}")
    return n


def _check_noise(noise: float, name: str = "noise") -> float:
    noise = float(noise)
    if not noise >= 0:
        raise ValueError(f"{name} must be >= 0; got {noise}")
    return noise


def xor(
    key: jax.Array | None = None, n: int | None = None, noise: float | None = None
) -> Dataset:
    """The XOR problem: ``f*(x) = 1`` iff ``x in {(0, 1), (1, 0)}``, else 0.

    ``xor()`` returns the four points of ``{0, 1}^2`` in the order
    ``(0,0), (0,1), (1,0), (1,1)`` with labels ``0, 1, 1, 0``: not linearly
    separable, the smallest problem a hidden layer solves. ``xor(key, n, noise)``
    samples ``n`` corners uniformly and adds Gaussian noise of standard deviation
    ``noise`` to the inputs (labels are the corners' labels).

    Args:
      key: PRNG key; ``None`` for the four exact points.
      n: number of sampled points (default 200); only with ``key``.
      noise: input noise standard deviation ``>= 0`` (default 0.1); only with
        ``key``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(n, 2)`` (``(4, 2)`` without key), ``y``
      int32 ``(n,)`` in {0, 1}.

    References:
      [Laurent, Multilayer perceptron: a simple example] (XOR).
    """
    points = jnp.asarray(XOR_POINTS, dtype=jnp.float32)
    labels = jnp.asarray(XOR_LABELS, dtype=jnp.int32)
    desc = "XOR of two binary inputs [Laurent]: label 1 iff x1 != x2."
    if key is None:
        if n is not None or noise is not None:
            raise ValueError("xor: n and noise need a key (xor(key, n, noise))")
        return Dataset(points, labels, ("x1", "x2"), ("0", "1"), None, desc)
    n = _check_n(200 if n is None else n, 1)
    noise = _check_noise(0.1 if noise is None else noise)
    k_corner, k_noise = jax.random.split(key)
    corner = jax.random.randint(k_corner, (n,), 0, 4, dtype=jnp.int32)
    eps = jax.random.normal(k_noise, (n, 2), dtype=jnp.float32)
    X = points[corner] + jnp.asarray(noise, jnp.float32) * eps
    return Dataset(X, labels[corner], ("x1", "x2"), ("0", "1"), None, desc)


def line(
    key: jax.Array,
    n: int = 30,
    half_width: float = 0.1,
    x_range: tuple[float, float] = (0.0, 1.0),
) -> Dataset:
    """[Neacșu & Vasilescu]'s regression example: ``y = 3 x + 2 + U(-0.1, 0.1)``.

    .. math::

        x \\sim \\mathcal{U}(a, b), \\quad
        y = 3x + 2 + u, \\quad u \\sim \\mathcal{U}(-h, h)

    with ``N = 30`` samples and ``h = 0.1`` by default. The source does not give
    the range of ``x``; fnn draws it uniformly on ``[a, b) = [0, 1)``.

    Args:
      key: PRNG key.
      n: number of samples ``>= 1``.
      half_width: ``h >= 0``, half-width of the uniform noise.
      x_range: ``(a, b)`` with ``a < b``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(n, 1)`` (the ``x`` values) and ``y``
      float32 ``(n,)``.

    References:
      [Neacșu & Vasilescu, Let us take a simple example; The effect of
      standardization].
    """
    n = _check_n(n, 1)
    h = _check_noise(half_width, "half_width")
    a, b = float(x_range[0]), float(x_range[1])
    if not a < b:
        raise ValueError(f"x_range must be (a, b) with a < b; got {x_range}")
    k_x, k_u = jax.random.split(key)
    x = jax.random.uniform(k_x, (n, 1), jnp.float32, a, b)
    u = jax.random.uniform(k_u, (n,), jnp.float32, -h, h) if h > 0 else 0.0
    y = 3.0 * x[:, 0] + 2.0 + u
    desc = f"y = 3x + 2 + U(-{h}, {h}), x ~ U({a}, {b}) [Neacșu & Vasilescu]."
    return Dataset(x, y.astype(jnp.float32), ("x",), None, None, desc)


def _shuffled(key: jax.Array, X: jax.Array, y: jax.Array) -> tuple:
    perm = jax.random.permutation(key, X.shape[0])
    return X[perm], y[perm]


def two_moons(key: jax.Array, n: int = 200, noise: float = 0.1) -> Dataset:
    """Two interleaving half circles, one per class.

    .. math::

        \\text{class 0: } (\\cos t, \\sin t), \\quad
        \\text{class 1: } (1 - \\cos t, \\tfrac12 - \\sin t), \\quad
        t \\sim \\mathcal{U}(0, \\pi)

    plus Gaussian noise of standard deviation ``noise`` on both coordinates.
    Class 0 gets ``n - n // 2`` points, class 1 ``n // 2``.

    Args:
      key: PRNG key.
      n: number of points ``>= 2``.
      noise: noise standard deviation ``>= 0``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(n, 2)``, ``y`` int32 ``(n,)`` in {0, 1}.
    """
    n = _check_n(n, 2)
    noise = _check_noise(noise)
    k_t, k_noise, k_perm = jax.random.split(key, 3)
    n1 = n // 2
    n0 = n - n1
    t = jax.random.uniform(k_t, (n,), jnp.float32, 0.0, math.pi)
    c, s = jnp.cos(t), jnp.sin(t)
    upper = jnp.stack([c[:n0], s[:n0]], axis=1)
    lower = jnp.stack([1.0 - c[n0:], 0.5 - s[n0:]], axis=1)
    X = jnp.concatenate([upper, lower])
    X = X + jnp.asarray(noise, jnp.float32) * jax.random.normal(
        k_noise, (n, 2), dtype=jnp.float32
    )
    y = jnp.concatenate(
        [jnp.zeros((n0,), dtype=jnp.int32), jnp.ones((n1,), dtype=jnp.int32)]
    )
    X, y = _shuffled(k_perm, X, y)
    desc = "Two interleaving half circles (two moons), one class each."
    return Dataset(X, y, ("x1", "x2"), ("0", "1"), None, desc)


def two_spirals(
    key: jax.Array, n: int = 200, noise: float = 0.02, turns: float = 1.5
) -> Dataset:
    """Two interleaved Archimedean spirals, one per class.

    .. math::

        t \\sim \\mathcal{U}(0, 1), \\quad \\theta = 2\\pi \\cdot turns \\cdot t,
        \\quad \\text{class 0: } t(\\cos\\theta, \\sin\\theta), \\quad
        \\text{class 1: } -t(\\cos\\theta, \\sin\\theta)

    (class 1 is class 0 turned by ``pi``), plus Gaussian noise of standard
    deviation ``noise``. Radii lie in ``[0, 1)``; the arms are ``1 / (2 turns)``
    apart along a ray. Class 0 gets ``n - n // 2`` points, class 1 ``n // 2``.

    Args:
      key: PRNG key.
      n: number of points ``>= 2``.
      noise: noise standard deviation ``>= 0``.
      turns: number of turns of each arm ``> 0``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(n, 2)``, ``y`` int32 ``(n,)`` in {0, 1}.
    """
    n = _check_n(n, 2)
    noise = _check_noise(noise)
    turns = float(turns)
    if not turns > 0:
        raise ValueError(f"turns must be > 0; got {turns}")
    k_t, k_noise, k_perm = jax.random.split(key, 3)
    n1 = n // 2
    n0 = n - n1
    t = jax.random.uniform(k_t, (n,), jnp.float32)
    theta = (2.0 * math.pi * turns) * t
    P = t[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    sign = jnp.concatenate(
        [jnp.ones((n0, 1), jnp.float32), -jnp.ones((n1, 1), jnp.float32)]
    )
    X = sign * P + jnp.asarray(noise, jnp.float32) * jax.random.normal(
        k_noise, (n, 2), dtype=jnp.float32
    )
    y = jnp.concatenate(
        [jnp.zeros((n0,), dtype=jnp.int32), jnp.ones((n1,), dtype=jnp.int32)]
    )
    X, y = _shuffled(k_perm, X, y)
    desc = f"Two interleaved spirals of {turns} turns, one class each."
    return Dataset(X, y, ("x1", "x2"), ("0", "1"), None, desc)
