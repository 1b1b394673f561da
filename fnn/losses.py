"""Losses, each with its hand-derived gradient beside it, and the L1/L2 penalty.

A :class:`Loss` maps the network output ``out`` (shape ``(m, k)``) and targets to
a scalar J, the mean over the batch of a per-example loss ℓ_i ([Deep Learning 2020,
Learning algorithm]: J(θ) = (1/m) Σ_i L(ŷ_i, y_i)); ``grad`` returns ∂J/∂out with the
1/m inside, the error that starts backpropagation.

Cross-entropy and BCE take the output layer's **pre-activation** (logits) and fuse
the output activation into the loss, so they are computed stably and their error
is [Laurent]'s ``f(x) − e(y)`` ([Laurent, Backpropagation algorithm for
classification]): ∂J/∂Z = (softmax(Z) − Y)/m and (σ(Z) − Y)/(m·k). MSE, MAE and
Huber take the output after the output activation.

Per-example losses, for ``k`` outputs (r = out − y):

===============  ================================================  =================
loss             ℓ_i                                               ∂ℓ_i/∂out
===============  ================================================  =================
mse              (1/k) Σ_j r_j²                                    2r/k
mae              (1/k) Σ_j |r_j|                                   sign(r)/k
huber(δ)         (1/k) Σ_j [½r² if |r| ≤ δ else δ(|r| − ½δ)]       clip(r, −δ, δ)/k
bce (logits z)   (1/k) Σ_j [max(z,0) − z·y + log1p(e^{−|z|})]      (σ(z) − y)/k
cross_entropy    −Σ_j Y_j log softmax(z)_j                         softmax(z)·ΣY − Y
===============  ================================================  =================

Conventions: the mean runs over examples *and* output units (as PyTorch's and
Keras's ``mse``); [Laurent] writes the regression loss ‖Y − f(X)‖² summed over
outputs, which is k times fnn's (identical for one output). No ½ factor
[Laurent; Balvert]. Labels for cross-entropy are integers ``(m,)`` in ``[0, k)`` or
one-hot / probability rows ``(m, k)``.

An optional boolean ``mask`` ``(m,)`` marks the real examples of a padded batch:
J = Σ_i mask_i ℓ_i / max(Σ_i mask_i, 1), so padding changes nothing.

References: [Deep Learning 2020, Learning algorithm] (J as mean of L), [Laurent, Loss
functions] (quadratic, cross-entropy) and Backpropagation algorithm] (f(x) − e(y)),
[Neacșu & Vasilescu, Output activation functions" (identity + ℓ2, sigmoid + BCE, softmax
+ CE).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Loss",
    "get",
    "names",
    "mse",
    "mae",
    "huber",
    "bce",
    "cross_entropy",
    "sequence_cross_entropy",
    "targets",
    "weight_penalty",
    "weight_penalty_grad",
    "has_penalty",
]


class Loss(NamedTuple):
    """A loss J(out, Y) and its gradient ∂J/∂out.

    Attributes:
      name: registry name.
      fn: ``(out, Y, mask=None) -> J``, ``out`` and ``Y`` of shape ``(m, k)``.
      grad: ``(out, Y, mask=None) -> ∂J/∂out``, shape ``(m, k)``.
      fused_output: the output activation fused into the loss (``"softmax"`` or
        ``"sigmoid"``, whose logits ``out`` then is), or ``None`` when ``out`` is
        the network output after its output activation.
    """

    name: str
    fn: Callable[..., jax.Array]
    grad: Callable[..., jax.Array]
    fused_output: str | None = None


def _example_weights(mask: jax.Array | None, m: int, dtype) -> jax.Array:
    """Weights w_i with Σ w_i = 1 over the real examples: mask_i / max(Σ mask, 1)."""
    if mask is None:
        return jnp.full((m,), 1.0 / m, dtype)
    mask = jnp.asarray(mask)
    if mask.shape != (m,):
        raise ValueError(
            f"mask must have shape ({m},) (one flag per example), got {mask.shape}."
        )
    w = mask.astype(dtype)
    return w / jnp.maximum(jnp.sum(w), jnp.ones((), dtype))


def _same_shape(out, Y, name):
    if jnp.shape(Y) != jnp.shape(out):
        raise ValueError(
            f"{name} compares outputs {jnp.shape(out)} with targets of shape "
            f"{jnp.shape(Y)}: they would broadcast silently. Pass targets of the "
            f"outputs' shape, e.g. fnn.losses.targets(loss, out, y)."
        )


def _mean_loss(
    per_unit: Callable, per_unit_grad: Callable, name: str, fused=None
) -> Loss:
    """A loss whose ℓ_i is the mean over output units of ``per_unit(out, Y)``."""

    def fn(out, Y, mask=None):
        _same_shape(out, Y, name)
        w = _example_weights(mask, out.shape[0], out.dtype)
        return jnp.sum(w * jnp.mean(per_unit(out, Y), axis=-1))

    def grad(out, Y, mask=None):
        _same_shape(out, Y, name)
        w = _example_weights(mask, out.shape[0], out.dtype)
        return (w / out.shape[-1])[:, None] * per_unit_grad(out, Y)

    return Loss(name, fn, grad, fused)


def mse() -> Loss:
    """Mean squared error, ℓ = (1/k)‖out − y‖²; ∂ℓ/∂out = 2(out − y)/k [Laurent]."""
    return _mean_loss(lambda o, Y: (o - Y) ** 2, lambda o, Y: 2 * (o - Y), "mse")


def _abs(x: jax.Array) -> jax.Array:
    """|x| written as x·sign(x), so that ``jax.grad`` reads sign(0) = 0 at x = 0,
    the subgradient the hand-derived backwards use (``jnp.abs`` gives 1 there)."""
    return x * jnp.sign(x)


def mae() -> Loss:
    """Mean absolute error, ℓ = (1/k)Σ|out − y|; ∂ℓ/∂out = sign(out − y)/k
    (0 at a tie, as ``jnp.sign``)."""
    return _mean_loss(lambda o, Y: _abs(o - Y), lambda o, Y: jnp.sign(o - Y), "mae")


def huber(delta: float = 1.0) -> Loss:
    """Huber loss: ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond; derivative clip(r, −δ, δ)."""
    if not delta > 0:
        raise ValueError(f"huber delta must be positive, got {delta!r}.")

    def per_unit(o, Y):
        r = jnp.abs(o - Y)
        return jnp.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))

    return _mean_loss(
        per_unit, lambda o, Y: jnp.clip(o - Y, -delta, delta), f"huber(delta={delta})"
    )


def bce() -> Loss:
    """Binary cross-entropy on logits z ([Laurent], binary case):
    ℓ = −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − z·y,
    finite for any z; ∂ℓ/∂z = σ(z) − y (the fused sigmoid + BCE error).

    softplus is ``logaddexp(z, 0)``, smooth everywhere, so ``jax.grad`` of this
    forward reads σ(0) − y at z = 0. The common form max(z, 0) + log1p(e^{−|z|})
    has the same value but two kinks at 0, where autodiff returns −y instead."""

    def per_unit(z, Y):
        return jax.nn.softplus(z) - z * Y

    return _mean_loss(per_unit, lambda z, Y: jax.lax.logistic(z) - Y, "bce", "sigmoid")


def _log_softmax(Z):
    shifted = Z - jax.lax.stop_gradient(jnp.max(Z, axis=-1, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


def _one_hot_labels(name: str, y: jax.Array, out_shape, dtype) -> jax.Array:
    """Integer labels ``(m,)`` as one-hot rows ``(m, k)``, range-checked when
    concrete (a traced label outside ``[0, k)`` gives an all-zero row)."""
    m, k = out_shape
    if y.shape != (m,):
        raise ValueError(
            f"{name} with integer labels expects y of shape ({m},) for "
            f"outputs {tuple(out_shape)}, got {y.shape}."
        )
    if not isinstance(y, jax.core.Tracer):
        y_np = np.asarray(y)
        bad = (y_np < 0) | (y_np >= k)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{name} labels must lie in [0, {k}) for {k} outputs; row {row} "
                f"holds the label {y_np[row]} (labels span [{y_np.min()}, "
                f"{y_np.max()}]): fix the labels or widen the output layer."
            )
    return jax.nn.one_hot(y, k, dtype=dtype)


def _class_rows(Z: jax.Array, Y: Any) -> jax.Array:
    """``Y`` as rows of ``Z``'s shape: integer labels ``(m,)`` are one-hot encoded
    with ``Z``'s width ``k``; rows ``(m, k)`` pass through."""
    Y = jnp.asarray(Y)
    if jnp.issubdtype(Y.dtype, jnp.integer) and Y.ndim == Z.ndim - 1:
        return _one_hot_labels("cross_entropy", Y, Z.shape, Z.dtype)
    return Y


def cross_entropy() -> Loss:
    """Cross-entropy on logits Z with softmax outputs ([Laurent], K classes):
    ℓ = −Σ_j Y_j log softmax(Z)_j, with log softmax = Z − logsumexp(Z) computed
    from Z − max Z; ∂ℓ/∂Z = softmax(Z)·Σ_j Y_j − Y, which is [Laurent]'s
    ∇ℓ = f(x) − e(y) for one-hot Y.

    ``fn`` and ``grad`` take one-hot / probability rows Y ``(m, k)`` or integer
    labels ``(m,)`` (one-hot encoded with Z's width k, as :func:`targets` does)."""

    def fn(Z, Y, mask=None):
        Y = _class_rows(Z, Y)
        w = _example_weights(mask, Z.shape[0], Z.dtype)
        return -jnp.sum(w * jnp.sum(Y * _log_softmax(Z), axis=-1))

    def grad(Z, Y, mask=None):
        Y = _class_rows(Z, Y)
        w = _example_weights(mask, Z.shape[0], Z.dtype)
        P = jnp.exp(_log_softmax(Z))
        return w[:, None] * (P * jnp.sum(Y, axis=-1, keepdims=True) - Y)

    return Loss("cross_entropy", fn, grad, "softmax")


_REGISTRY: dict[str, Callable[..., Loss]] = {
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "bce": bce,
    "binary_cross_entropy": bce,
    "cross_entropy": cross_entropy,
    "categorical_cross_entropy": cross_entropy,
}


def names() -> list[str]:
    """The registered loss names (aliases included), sorted."""
    return sorted(_REGISTRY)


# Losses built by ``get`` (per factory and keyword arguments): the same name gives
# the same object, so that compiled functions keyed on a loss are reused.
_CACHE: dict[Any, Loss] = {}


def _cache_key(factory: Callable, kwargs: dict[str, Any]):
    key = (factory, tuple(sorted((k, type(v), v) for k, v in kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None  # unhashable parameters (e.g. an array): not cached
    return key


def get(loss: "str | Loss", **kwargs: Any) -> Loss:
    """A loss by name (``get("huber", delta=0.5)``), or a :class:`Loss` as is.

    Repeated calls with the same name (or an alias of it) and the same parameters
    return the same :class:`Loss` object.

    Raises:
      ValueError: unknown name; the message lists the valid names.
    """
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in _REGISTRY:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(names())}.")
    factory = _REGISTRY[loss]
    key = _cache_key(factory, kwargs)
    if key is None:
        return factory(**kwargs)
    if key not in _CACHE:
        _CACHE[key] = factory(**kwargs)
    return _CACHE[key]


def targets(loss: Loss, out: jax.Array, y: Any) -> jax.Array:
    """Check the labels ``y`` against the output ``out`` ``(m, k)`` and return them
    as an array ``Y`` of ``out``'s shape and dtype.

    Accepted: for cross-entropy, integer labels ``(m,)`` (one-hot encoded here)
    or rows ``(m, k)``; for the other losses, ``(m, k)`` or ``(m,)`` when
    ``k == 1``. BCE targets must lie in ``[0, 1]``.

    Values are checked only when ``y`` is concrete. Under ``jax.jit`` (or any
    trace) only the shapes are checked: a cross-entropy label outside ``[0, k)``
    becomes an all-zero one-hot row (that example then adds nothing to the loss
    and its gradient), and a BCE target outside ``[0, 1]`` gives a finite but
    meaningless loss. ``fnn.fit`` and ``fnn.evaluate`` therefore validate their
    data once on the host with :func:`fnn.data.check_examples`; call it yourself
    before a jitted ``loss``/``backprop`` of your own.

    Raises:
      ValueError: labels of the wrong shape, dtype or range for ``loss``.
    """
    if loss.name == "sequence_cross_entropy":
        return sequence_targets(out, y)
    y = jnp.asarray(y)
    m, k = out.shape
    if (
        loss.fused_output == "softmax"
        and jnp.issubdtype(y.dtype, jnp.integer)
        and y.ndim != 2
    ):
        return _one_hot_labels(loss.name, y, out.shape, out.dtype)
    if y.shape == (m,) and k == 1:
        y = y[:, None]
    if y.shape != (m, k):
        expected = f"({m}, {k})" + (f" or ({m},)" if k == 1 else "")
        if loss.fused_output == "softmax":
            expected += f", or integer labels ({m},)"
        raise ValueError(
            f"{loss.name} expects targets of shape {expected} for network outputs "
            f"{out.shape}, got {y.shape}."
        )
    if loss.fused_output == "sigmoid" and not isinstance(y, jax.core.Tracer):
        y_np = np.asarray(y)
        bad = ~((y_np >= 0) & (y_np <= 1))
        if bad.any():
            row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise ValueError(
                f"{loss.name} targets must lie in [0, 1] (labels 0/1 or "
                f"probabilities); row {row} holds {y_np[row, col]} (column {col})."
            )
    return y.astype(out.dtype)


# --- L1 / L2 penalty on the weights -----------------------------------------------
def _is_weight(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key == "W"


def _is_zero(value) -> bool:
    return isinstance(value, int | float) and value == 0


def has_penalty(l1, l2) -> bool:
    """Whether the penalty of :func:`weight_penalty` is to be computed: not when
    both strengths are the Python number 0; always for arrays and traced values
    (a population may sweep them)."""
    return not (_is_zero(l1) and _is_zero(l2))


def weight_penalty(params: Any, l1: float = 0.0, l2: float = 0.0) -> jax.Array:
    """Ω(θ) = l1·Σ|W| + l2·Σ W² over the weights only (every ``"W"`` leaf), never
    the biases ([Laurent, Penalized empirical risk]: λΩ(θ) with Ω = Σ_k ‖W^(k)‖²_F).

    Relation to the L2 term λ/(2m)‖θ‖²₂ of [Deep Learning 2020, L1 - L2
    regularization]: ``l2 = λ/(2m)`` (and the article also penalises biases; fnn
    does not). Its L1 term λ/(2m)‖θ‖₁² squares the L1 norm, a slip in the text:
    fnn uses the LASSO penalty l1·Σ|W| of [Laurent, Penalized empirical risk].
    """
    weights = [
        W
        for path, W in jax.tree_util.tree_flatten_with_path(params)[0]
        if _is_weight(path)
    ]
    total = jnp.asarray(0.0)  # weakly typed: adds to a loss of any float dtype
    for W in weights:  # terms with a weight of exactly 0 are not even computed
        if not _is_zero(l1):
            total = total + l1 * jnp.sum(_abs(W))
        if not _is_zero(l2):
            total = total + l2 * jnp.sum(W * W)
    return total


def weight_penalty_grad(params: Any, l1: float = 0.0, l2: float = 0.0) -> Any:
    """∂Ω/∂θ: l1·sign(W) + 2·l2·W on every ``"W"`` leaf, zeros elsewhere
    ([Laurent]: ∇_W Ω = 2W for the L2 penalty); the L1 subgradient at W = 0 is 0,
    also in ``jax.grad`` of :func:`weight_penalty`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: (
            l1 * jnp.sign(p) + 2 * l2 * p if _is_weight(path) else jnp.zeros_like(p)
        ),
        params,
    )


# The sequence loss (logits (m, T, V)) lives in its own module, built on Loss.
from ._seqloss import sequence_cross_entropy, sequence_targets  # noqa: E402

_REGISTRY["sequence_cross_entropy"] = sequence_cross_entropy
