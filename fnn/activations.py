"""Activation functions, each with its hand-derived derivative beside it.

An :class:`Activation` holds ``fn(z)``, the elementwise derivative ``grad(z)``
(ψ'(z)) and ``vjp(z, dA)``, the product ``dA ⊙ ψ'(Z)`` that backpropagation uses
([Deep Learning 2020, Forward - Backpropagation]: ``dZ = dA ⋆ ψ'(Z)``). For
softmax, the one activation that is not elementwise, ``grad(z)`` returns the full
Jacobian and ``vjp`` contracts it without building it.

Invariants (tested for every activation):
  * ``grad(z) == jax.vmap(jax.grad(fn))(z)`` elementwise (softmax: the Jacobian);
  * ``vjp(z, g) == jax.vjp(fn, z)[1](g)``;
  * value and derivative are finite for ``|z| <= 1e3`` in float32;
  * NaN propagates: ``fn``, ``grad`` and ``vjp`` are NaN where ``z`` is NaN (a
    NaN input must not become a finite activation; ``jax.nn.relu`` and fnn agree
    on the value, while ``jax.grad`` of a ``where`` would give a finite derivative).

Conventions at the kinks, where the sources are silent or differ:
  * ``relu``: ψ'(0) = 0, as in JAX ([Deep Learning 2020] writes x·1{x ≥ 0}, which would
    give 1; the derivative at a single point never matters for training).
  * ``leaky_relu``: ψ'(0) = 1 (the ``x ≥ 0`` branch, as [Deep Learning 2020] writes it).
  * ``elu``/``selu``: ψ'(0) = scale·α, the left branch (1 for ELU with α = 1,
    where both sides agree).
  * ``step``: 1{z ≥ β} as [Balvert; Neacșu & Vasilescu] write it ([Laurent] writes the
    strict 1{z > β}); its derivative is 0 almost everywhere and fnn returns 0
    everywhere, so a step network cannot learn by gradient descent ([Balvert]'s
    motivation for the sigmoid).

References:
  [Deep Learning 2020, Activation functions] (ReLU, sigmoid, tanh, LeakyReLU);
  [Laurent, Activation functions] (identity, sigmoid, tanh, hard threshold,
  ReLU, max(x,0) + α min(x,0), softmax); [Neacșu & Vasilescu, Classic / Modern
  Activation Operators] (step, Soboleva tanh, PReLU, GELU, ELU, SELU, SiLU,
  Gaussian, softplus, softmax) and [Neacșu & Vasilescu, Initialization of
  Y. LeCun] (1.7159·tanh(2x/3)).
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

__all__ = ["Activation", "get", "names", "softmax"]


class Activation(NamedTuple):
    """An activation ψ with its derivative.

    Attributes:
      name: the registry name (with parameters, e.g. ``leaky_relu(alpha=0.01)``).
      fn: ``Z -> A = ψ(Z)``, any shape (softmax: over the last axis).
      grad: ``Z -> ψ'(Z)``, same shape (softmax: ``(..., n, n)`` Jacobian).
      vjp: ``(Z, dA) -> dZ = dA ⊙ ψ'(Z)``, same shape as ``Z``.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    grad: Callable[[jax.Array], jax.Array]
    vjp: Callable[[jax.Array, jax.Array], jax.Array]


def _elementwise(name: str, fn: Callable, grad: Callable) -> Activation:
    return Activation(name, fn, grad, lambda Z, dA: dA * grad(Z))


def _const(value: float, like: jax.Array) -> jax.Array:
    return jnp.full_like(like, value)


def _keep_nan(z: jax.Array, value: jax.Array) -> jax.Array:
    """``value``, but NaN wherever ``z`` is NaN: a piecewise-constant function or
    derivative selected by comparisons (false for NaN) would otherwise turn a NaN
    input into a finite number and hide it. Its autodiff is that of ``value``."""
    return jnp.where(jnp.isnan(z), z, value)


# --- identity, ψ(z) = z, ψ'(z) = 1 ------------------------------------------------
def identity() -> Activation:
    """ψ(z) = z; ψ'(z) = 1 (regression output, [Laurent])."""
    return _elementwise("identity", lambda z: z, lambda z: _keep_nan(z, _const(1, z)))


# --- sigmoid, σ(z) = 1 / (1 + e^{-z}), σ' = σ(1 - σ) ------------------------------
def _sigmoid(z):
    return jax.lax.logistic(z)  # evaluated without overflow for any z


def sigmoid() -> Activation:
    """σ(z) = 1/(1 + e^{-z}); σ'(z) = σ(z)(1 − σ(z)).

    References: [Deep Learning 2020; Laurent; Balvert].
    """

    def grad(z):
        s = _sigmoid(z)
        return s * (1 - s)

    return _elementwise("sigmoid", _sigmoid, grad)


# --- tanh, ψ' = 1 - tanh² ---------------------------------------------------------
def tanh() -> Activation:
    """ψ(z) = tanh(z); ψ'(z) = 1 − tanh²(z).

    References: [Deep Learning 2020; Laurent; Neacșu & Vasilescu].
    """

    def grad(z):
        t = jnp.tanh(z)
        return 1 - t * t

    return _elementwise("tanh", jnp.tanh, grad)


def lecun_tanh() -> Activation:
    """ψ(z) = 1.7159·tanh(2z/3); ψ'(z) = 1.7159·(2/3)·(1 − tanh²(2z/3)).

    LeCun's symmetric sigmoid, with ψ(±1) ≈ ±1 ([Neacșu & Vasilescu, Initialization of
    Y. LeCun]).
    """

    def fn(z):
        return 1.7159 * jnp.tanh(z * (2 / 3))

    def grad(z):
        t = jnp.tanh(z * (2 / 3))
        return (1.7159 * 2 / 3) * (1 - t * t)

    return _elementwise("lecun_tanh", fn, grad)


def soboleva_tanh(a: float = 1.0, b: float = 1.0, c: float = 1.0, d: float = 1.0):
    """ψ(z) = (e^{az} − e^{−bz}) / (e^{cz} + e^{−dz}); a=b=c=d=1 is tanh.

    Soboleva's modified tanh [Neacșu & Vasilescu, Classic Activation Operators].

    Evaluated with numerator and denominator both divided by e^M,
    M = max(cz, −dz), so nothing overflows when ``0 < a ≤ c`` and ``0 < b ≤ d``
    (for a > c or b > d the function itself grows like an exponential and
    overflows at large |z|, as it should). With N, D the scaled numerator and
    denominator and N', D' their derivatives,

        ψ'(z) = (N'·D − N·D') / D²,
        N' = a e^{az} + b e^{−bz},  D' = c e^{cz} − d e^{−dz}.
    """

    def parts(z):
        M = jnp.maximum(c * z, -d * z)
        ea, eb = jnp.exp(a * z - M), jnp.exp(-b * z - M)
        ec, ed = jnp.exp(c * z - M), jnp.exp(-d * z - M)
        return ea, eb, ec, ed

    def fn(z):
        ea, eb, ec, ed = parts(z)
        return (ea - eb) / (ec + ed)

    def grad(z):
        ea, eb, ec, ed = parts(z)
        N, D = ea - eb, ec + ed
        dN, dD = a * ea + b * eb, c * ec - d * ed
        return (dN * D - N * dD) / (D * D)

    return _elementwise(f"soboleva_tanh(a={a}, b={b}, c={c}, d={d})", fn, grad)


# --- step, ψ(z) = 1{z ≥ β}, ψ' = 0 a.e. -------------------------------------------
def step(beta: float = 0.0) -> Activation:
    """ψ(z) = 1{z ≥ β}; ψ'(z) = 0 (almost everywhere; fnn returns 0 everywhere).

    The hard threshold of [Laurent] (``1{x > β}``) and [Balvert; Neacșu & Vasilescu]
    (``1{x ≥ 0}``).
    """
    return _elementwise(
        f"step(beta={beta})",
        lambda z: _keep_nan(z, jnp.where(z >= beta, _const(1, z), _const(0, z))),
        lambda z: _keep_nan(z, _const(0, z)),
    )


# --- rectifiers -------------------------------------------------------------------
def relu() -> Activation:
    """ψ(z) = max(0, z); ψ'(z) = 1{z > 0} (ψ'(0) = 0, as in JAX).

    References: [Deep Learning 2020; Laurent; Balvert; Neacșu & Vasilescu].
    """
    return _elementwise(
        "relu",
        # z <= 0 is false for NaN, which so takes the z branch and propagates.
        lambda z: jnp.where(z <= 0, _const(0, z), z),
        lambda z: _keep_nan(z, jnp.where(z > 0, _const(1, z), _const(0, z))),
    )


def leaky_relu(alpha: float = 0.01) -> Activation:
    """ψ(z) = z if z ≥ 0 else αz; ψ'(z) = 1 if z ≥ 0 else α.

    References: [Deep Learning 2020; Laurent; Neacșu & Vasilescu].
    """
    return _elementwise(
        f"leaky_relu(alpha={alpha})",
        lambda z: jnp.where(z >= 0, z, alpha * z),
        lambda z: _keep_nan(z, jnp.where(z >= 0, _const(1, z), _const(alpha, z))),
    )


def _elu_parts(alpha: float, scale: float):
    # exp is taken of the non-positive part only, so the branch not selected never
    # overflows; a where (not a minimum, which splits a tie) keeps jax.grad at
    # z = 0 on the left branch, as ``grad`` is.
    def neg(z):
        return jnp.where(z > 0, _const(0, z), z)

    def fn(z):
        return scale * jnp.where(z > 0, z, alpha * jnp.expm1(neg(z)))

    def grad(z):
        return scale * jnp.where(z > 0, _const(1, z), alpha * jnp.exp(neg(z)))

    return fn, grad


def elu(alpha: float = 1.0) -> Activation:
    """ψ(z) = z if z > 0 else α(e^z − 1); ψ'(z) = 1 if z > 0 else αe^z.

    References: [Neacșu & Vasilescu, ReLU variants].
    """
    return _elementwise(f"elu(alpha={alpha})", *_elu_parts(alpha, 1.0))


SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def selu() -> Activation:
    """ψ(z) = λ·elu_α(z), α ≈ 1.67326, λ ≈ 1.0507; ψ'(z) = λ if z > 0 else λαe^z.

    References: [Neacșu & Vasilescu] (full-precision values from Klambauer et al.
    2017).
    """
    return _elementwise("selu", *_elu_parts(SELU_ALPHA, SELU_SCALE))


def gelu(approximate: bool = False) -> Activation:
    """GELU, ψ(z) = z·Φ(z) [Neacșu & Vasilescu], Φ the standard normal CDF.

    Exact form (default): ψ(z) = ½z(1 + erf(z/√2)), ψ'(z) = Φ(z) + z·φ(z),
    φ(z) = e^{−z²/2}/√(2π).

    ``approximate=True``: ψ(z) = ½z(1 + tanh(u)), u = √(2/π)(z + 0.044715z³),
    ψ'(z) = ½(1 + tanh u) + ½z(1 − tanh² u)·√(2/π)(1 + 3·0.044715z²).
    Note: ``jax.nn.gelu`` defaults to the tanh approximation; fnn defaults to the
    exact form [Neacșu & Vasilescu, Other ReLU variants] writes.
    """
    if approximate:
        k = math.sqrt(2 / math.pi)

        def fn(z):
            return 0.5 * z * (1 + jnp.tanh(k * (z + 0.044715 * z**3)))

        def grad(z):
            t = jnp.tanh(k * (z + 0.044715 * z**3))
            return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z**2)

        return _elementwise("gelu(approximate=True)", fn, grad)

    def fn(z):
        return 0.5 * z * (1 + erf(z / math.sqrt(2)))

    def grad(z):
        cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
        pdf = jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return cdf + z * pdf

    return _elementwise("gelu", fn, grad)


def silu() -> Activation:
    """ψ(z) = z·σ(z) [Neacșu & Vasilescu]; ψ'(z) = σ(z)(1 + z(1 − σ(z)))."""

    def grad(z):
        s = _sigmoid(z)
        return s * (1 + z * (1 - s))

    return _elementwise("silu", lambda z: z * _sigmoid(z), grad)


def softplus() -> Activation:
    """ψ(z) = ln(1 + e^z), computed as logaddexp(z, 0); ψ'(z) = σ(z).

    References: [Neacșu & Vasilescu].
    """
    return _elementwise("softplus", lambda z: jnp.logaddexp(z, _const(0, z)), _sigmoid)


def gaussian() -> Activation:
    """ψ(z) = e^{−z²} [Neacșu & Vasilescu]; ψ'(z) = −2z·e^{−z²}."""
    return _elementwise(
        "gaussian", lambda z: jnp.exp(-z * z), lambda z: -2 * z * jnp.exp(-z * z)
    )


# --- softmax: the output activation of multi-class classification -----------------
def _softmax(z):
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax() -> Activation:
    """softmax(z)_i = e^{z_i} / Σ_j e^{z_j} over the last axis.

    The output activation for K classes [Laurent; Neacșu & Vasilescu]. Jacobian
    [Neacșu & Vasilescu]: ∂ρ_i/∂z_j = ρ_i(δ_ij − ρ_j), so ``grad(z)`` has shape
    ``(..., n, n)``; ``vjp(z, g) = ρ ⊙ (g − Σ_j g_j ρ_j)``. Computed from
    ``z − max(z)`` so no exponential overflows. With cross-entropy, fnn never
    forms softmax explicitly in the backward pass: the fused error is
    ``softmax(Z) − Y`` (see :mod:`fnn.losses`).
    """

    def grad(z):
        s = _softmax(z)
        return s[..., :, None] * (jnp.eye(z.shape[-1], dtype=z.dtype) - s[..., None, :])

    def vjp(z, g):
        s = _softmax(z)
        return s * (g - jnp.sum(g * s, axis=-1, keepdims=True))

    return Activation("softmax", _softmax, grad, vjp)


_REGISTRY: dict[str, Callable[..., Activation]] = {
    "identity": identity,
    "linear": identity,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "lecun_tanh": lecun_tanh,
    "soboleva_tanh": soboleva_tanh,
    "step": step,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "silu": silu,
    "swish": silu,
    "softplus": softplus,
    "gaussian": gaussian,
    "softmax": softmax,
}


def names() -> list[str]:
    """The registered activation names (aliases included), sorted."""
    return sorted(_REGISTRY)


# Activations built by ``get`` (per factory and keyword arguments): the same name
# gives the same object, so that compiled functions keyed on it are reused.
_CACHE: dict[Any, Activation] = {}


def _cache_key(factory: Callable, kwargs: dict[str, Any]):
    key = (factory, tuple(sorted((k, type(v), v) for k, v in kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None  # unhashable parameters (e.g. an array): not cached
    return key


def get(activation: "str | Activation", **kwargs: Any) -> Activation:
    """Look up an activation by name, or pass an :class:`Activation` through.

    Repeated calls with the same name (or an alias of it) and the same parameters
    return the same :class:`Activation` object.

    Args:
      activation: a registered name (see :func:`names`) or an ``Activation``.
      **kwargs: parameters of a parametrised activation, e.g.
        ``get("leaky_relu", alpha=0.2)``, ``get("gelu", approximate=True)``.

    Raises:
      ValueError: unknown name (the message lists the valid ones), or parameters
        given with an ``Activation`` object or to an activation that has none.
    """
    if isinstance(activation, Activation):
        if kwargs:
            raise ValueError(
                f"parameters {sorted(kwargs)} cannot be applied to the Activation "
                f"object {activation.name!r}; pass a name instead."
            )
        return activation
    if not isinstance(activation, str) or activation not in _REGISTRY:
        raise ValueError(
            f"unknown activation {activation!r}; valid names: {', '.join(names())}."
        )
    factory = _REGISTRY[activation]
    key = _cache_key(factory, kwargs)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    try:
        result = factory(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"bad parameters for activation {activation!r}: {err}"
        ) from None
    if key is not None:
        _CACHE[key] = result
    return result
