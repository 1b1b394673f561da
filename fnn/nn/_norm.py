"""Batch normalization and layer normalization, forward and backward by hand.

Both standardise a group of N values and then scale and shift them:

    μ = (1/N) Σ x,   σ² = (1/N) Σ (x − μ)²  (biased),   s = √(σ² + ε)
    x̂ = (x − μ) / s,  y = γ ⊙ x̂ + β

and share the backward of that map, with every statistic differentiated (not a
stop-gradient shortcut); with dx̂ = dy ⊙ γ and sums over the N values:

    dβ = Σ dy,   dγ = Σ dy ⊙ x̂
    dx = (1/N)·(1/s)·(N·dx̂ − Σ dx̂ − x̂ ⊙ Σ(dx̂ ⊙ x̂))

* BatchNorm: the group is one feature (channel) over the batch: for ``x`` of
  shape ``(m, n)`` the sums run over the m examples, for ``(m, H, W, C)`` over
  the m·H·W positions (every axis but the last); γ, β, μ, σ² have shape ``(n,)``
  or ``(C,)``. Training mode uses the batch statistics and returns the updated
  running averages as the new state; evaluation uses the running averages, an
  affine map with dx = dy ⊙ γ / √(σ²_run + ε).
* LayerNorm: the group is one example's features (all axes but the first; or
  the last axis only, ``axis=-1``, for sequences); γ and β have the shape of
  the group. Training and evaluation are the same.

References: [Balvert, Solutions] (batch normalization against vanishing
gradients); Ioffe & Szegedy (2015); Ba, Kiros & Hinton (2016).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._block import Block, ShapeError, stateless
from ._spec import builtin


def _standardise(x, axes, eps):
    mu = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=axes, keepdims=True)
    inv_s = 1.0 / jnp.sqrt(var + eps)
    return (x - mu) * inv_s, mu, var, inv_s


def _standardise_backward(dx_hat, x_hat, inv_s, axes):
    """dx = (1/N)(1/s)(N·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂)) over ``axes``."""
    n = math.prod(x_hat.shape[a] for a in axes)
    sum_d = jnp.sum(dx_hat, axis=axes, keepdims=True)
    sum_dx = jnp.sum(dx_hat * x_hat, axis=axes, keepdims=True)
    return (inv_s / n) * (n * dx_hat - sum_d - x_hat * sum_dx)


class _BatchStats(NamedTuple):
    """Cache of a training-mode batch norm: normalised by the batch statistics."""

    x_hat: jax.Array
    inv_s: jax.Array


class _RunningStats(NamedTuple):
    """Cache of an evaluation-mode batch norm: normalised by the running averages."""

    x_hat: jax.Array
    inv_s: jax.Array


def _check_eps(eps):
    if not isinstance(eps, int | float) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}.")


@builtin
def BatchNorm(momentum: float = 0.9, eps: float = 1e-5) -> Block:
    """Batch normalization over every axis but the last, with running statistics.

    Training (``train=True``), with μ_B, σ²_B the batch mean and biased variance:

        y = γ (x − μ_B)/√(σ²_B + ε) + β
        running_mean ← momentum·running_mean + (1 − momentum)·μ_B
        running_var  ← momentum·running_var  + (1 − momentum)·σ²_B

    Evaluation: y = γ (x − running_mean)/√(running_var + ε) + β.

    Training needs at least two values per feature (m ≥ 2 rows for ``(m, C)``):
    a single row has σ²_B = 0 and x̂ = 0, so y = β and nothing else trains; such
    a batch raises :class:`ShapeError` (from the static shape, also under jit).
    Evaluation accepts one row.

    ``momentum`` is the weight of the **old** average (Keras' convention, default
    0.9 here, 0.99 there). PyTorch's ``momentum=0.1`` is the weight of the new
    batch, so PyTorch 0.1 is fnn 0.9. PyTorch also stores the unbiased variance
    (·N/(N−1)) in ``running_var``; fnn stores the biased σ²_B it normalised with.

    Args:
      momentum: weight of the old running average, in ``[0, 1)``.
      eps: ε added to the variance, positive.

    Returns:
      A :class:`Block` with params ``{"gamma": (C,), "beta": (C,)}`` (1 and 0)
      and state ``{"mean": (C,), "var": (C,)}`` (0 and 1); input ``(m, ..., C)``,
      output of the same shape.

    References: [Balvert, Solutions]; Ioffe & Szegedy (2015), Algorithm 1.
    """
    if not isinstance(momentum, int | float) or not 0 <= momentum < 1:
        raise ValueError(f"BatchNorm momentum must be in [0, 1), got {momentum!r}.")
    _check_eps(eps)

    def init(key, in_shape, dtype):
        if len(in_shape) < 1:
            raise ShapeError(f"BatchNorm expects a feature axis, got {in_shape}")
        (c,) = in_shape[-1:]
        params = {"gamma": jnp.ones((c,), dtype), "beta": jnp.zeros((c,), dtype)}
        state = {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}
        return params, state, tuple(in_shape)

    def forward(params, state, x, key, train):
        gamma, beta = params["gamma"], params["beta"]
        if x.ndim < 2 or x.shape[-1] != gamma.shape[0]:
            raise ShapeError(
                f"expected input (m, ..., {gamma.shape[0]}), got {x.shape}"
            )
        axes = tuple(range(x.ndim - 1))
        if train and math.prod(x.shape[:-1]) < 2:
            raise ShapeError(
                f"BatchNorm in training mode needs at least 2 values per feature "
                f"for its batch statistics, got input {x.shape}: one row "
                "normalises to 0 and returns beta, so nothing would train. Use "
                "batches of at least 2 rows, or evaluation mode (train=False) "
                "for a single example."
            )
        if train:
            x_hat, mu, var, inv_s = _standardise(x, axes, eps)
            new_state = {
                "mean": momentum * state["mean"] + (1 - momentum) * mu.reshape(-1),
                "var": momentum * state["var"] + (1 - momentum) * var.reshape(-1),
            }
            return gamma * x_hat + beta, new_state, _BatchStats(x_hat, inv_s)
        inv_s = 1.0 / jnp.sqrt(state["var"] + eps)
        x_hat = (x - state["mean"]) * inv_s
        return gamma * x_hat + beta, state, _RunningStats(x_hat, inv_s)

    def backward(params, cache, dy):
        x_hat, inv_s = cache
        axes = tuple(range(dy.ndim - 1))
        grads = {
            "gamma": jnp.sum(dy * x_hat, axis=axes),
            "beta": jnp.sum(dy, axis=axes),
        }
        dx_hat = dy * params["gamma"]
        if isinstance(cache, _RunningStats):  # evaluation: a fixed affine map
            return grads, dx_hat * inv_s
        return grads, _standardise_backward(dx_hat, x_hat, inv_s, axes)

    return Block(f"BatchNorm(momentum={momentum})", init, forward, backward)


@builtin
def LayerNorm(eps: float = 1e-5, *, axis: int | None = None) -> Block:
    """Layer normalization over each example's features, or over the last axis.

        y = γ ⊙ (x − μ)/√(σ² + ε) + β

    with μ, σ² over the features of one example (``axis=None``, all axes but the
    first: γ and β have the per-example shape), or over the last axis only
    (``axis=-1``: one normalization per position of a sequence ``(m, T, d)``,
    γ and β of shape ``(d,)``, as in a transformer). No state; training and
    evaluation are the same.

    Args:
      eps: ε added to the variance, positive.
      axis: ``None`` (every per-example axis) or ``-1`` (the last axis).

    Returns:
      A :class:`Block` with params ``{"gamma", "beta"}`` (1 and 0) of the
      per-example shape (``axis=None``) or ``(d,)`` (``axis=-1``); output shape
      equals input shape.

    References: Ba, Kiros & Hinton (2016), "Layer Normalization"; the per-example
    counterpart of [Balvert]'s batch normalization.
    """
    _check_eps(eps)
    if axis not in (None, -1):
        raise ValueError(f"LayerNorm axis must be None or -1, got {axis!r}.")

    def init(key, in_shape, dtype):
        if len(in_shape) < 1:
            raise ShapeError(f"LayerNorm expects a feature axis, got {in_shape}")
        shape = tuple(in_shape) if axis is None else tuple(in_shape[-1:])
        params = {"gamma": jnp.ones(shape, dtype), "beta": jnp.zeros(shape, dtype)}
        return params, tuple(in_shape)

    def _axes(x):
        return tuple(range(1, x.ndim)) if axis is None else (x.ndim - 1,)

    def forward(params, x):
        gamma, beta = params["gamma"], params["beta"]
        if axis is None and x.shape[1:] != gamma.shape:
            raise ShapeError(f"expected input (m, *{gamma.shape}), got {x.shape}")
        if axis == -1 and (x.ndim < 2 or x.shape[-1:] != gamma.shape):
            raise ShapeError(
                f"expected input (m, ..., {gamma.shape[0]}), got {x.shape}"
            )
        x_hat, _, _, inv_s = _standardise(x, _axes(x), eps)
        return gamma * x_hat + beta, (x_hat, inv_s)

    def backward(params, cache, dy):
        x_hat, inv_s = cache
        batch_axes = tuple(range(dy.ndim - params["gamma"].ndim))
        grads = {
            "gamma": jnp.sum(dy * x_hat, axis=batch_axes),
            "beta": jnp.sum(dy, axis=batch_axes),
        }
        dx = _standardise_backward(dy * params["gamma"], x_hat, inv_s, _axes(dy))
        return grads, dx

    label = f"LayerNorm(eps={eps}" + (")" if axis is None else ", axis=-1)")
    return stateless(label, init, forward, backward)


@builtin
def RMSNorm(eps: float = 1e-6) -> Block:
    """Root-mean-square normalization over the last axis, with a learned scale.

    Forward, over the d values of the last axis (no centring, no shift):

        r = √((1/d) Σ x² + ε),   x̂ = x / r,   y = γ ⊙ x̂

    Backward, with g = dy ⊙ γ and sums over the last axis:

        dγ = Σ_{batch, positions} dy ⊙ x̂
        dx = (1/r) (g − x̂ · (1/d) Σ g ⊙ x̂)

    Args:
      eps: ε added to the mean square, positive.

    Returns:
      A :class:`Block` with params ``{"gamma": (d,)}`` (ones); input
      ``(m, ..., d)``, output of the same shape.

    References: Zhang & Sennrich (2019), "Root Mean Square Layer Normalization".
    """
    _check_eps(eps)

    def init(key, in_shape, dtype):
        if len(in_shape) < 1:
            raise ShapeError(f"RMSNorm expects a feature axis, got {in_shape}")
        return {"gamma": jnp.ones(tuple(in_shape[-1:]), dtype)}, tuple(in_shape)

    def forward(params, x):
        gamma = params["gamma"]
        if x.ndim < 2 or x.shape[-1:] != gamma.shape:
            raise ShapeError(
                f"expected input (m, ..., {gamma.shape[0]}), got {x.shape}"
            )
        inv_r = 1.0 / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
        x_hat = x * inv_r
        return gamma * x_hat, (x_hat, inv_r)

    def backward(params, cache, dy):
        x_hat, inv_r = cache
        batch_axes = tuple(range(dy.ndim - 1))
        g = dy * params["gamma"]
        mean_gx = jnp.mean(g * x_hat, axis=-1, keepdims=True)
        dx = inv_r * (g - x_hat * mean_gx)
        return {"gamma": jnp.sum(dy * x_hat, axis=batch_axes)}, dx

    return stateless(f"RMSNorm(eps={eps})", init, forward, backward)
