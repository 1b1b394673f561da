"""Cross-entropy over sequences of logits, with its fused softmax gradient.

For logits ``Z`` of shape ``(m, T, V)`` (one distribution over V tokens at every
position) and targets ``y`` ``(m, T)`` (integer ids) or ``Y`` ``(m, T, V)``
(one-hot or probability rows), with token weights w_bt (1 for a real token, 0 for
padding; all ones without a mask) and N = max(Σ w, 1) the number of real tokens:

    J = −(1/N) Σ_{b,t} w_bt Σ_v Y_btv log softmax(Z_bt)_v        (mean over tokens)
    ∂J/∂Z_bt = (w_bt/N) (softmax(Z_bt)·Σ_v Y_btv − Y_bt)          (= (P − onehot(y))/N)

log softmax is Z − logsumexp(Z) computed from Z − max Z, finite for any logits.
The gradient is the fused softmax + cross-entropy error of :mod:`fnn.losses`
([Laurent]'s f(x) − e(y)) at every position, with the 1/N of the token mean
inside: the error that starts backpropagation through a language model.

The mask is ``(m, T)`` (per token: padding after the end of a sequence) or ``(m,)``
(per sequence: a padded batch; every token of a real sequence counts).

References: [Laurent, Backpropagation algorithm for classification]; Bengio et
al. (2003), "A Neural Probabilistic Language Model" (per-token log-likelihood);
PyTorch ``nn.CrossEntropyLoss`` on ``(m·T, V)`` with ``ignore_index``, mean
reduction (the same value).
"""

import jax
import jax.numpy as jnp
import numpy as np

from .losses import Loss

__all__ = ["sequence_cross_entropy", "sequence_targets"]


def _log_softmax(Z):
    shifted = Z - jax.lax.stop_gradient(jnp.max(Z, axis=-1, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


def _token_weights(mask, m, T, dtype):
    """w_bt / N with N = max(Σ w, 1), shape (m, T)."""
    if mask is None:
        return jnp.full((m, T), 1.0 / (m * T), dtype)
    mask = jnp.asarray(mask)
    if mask.shape == (m,):
        mask = jnp.broadcast_to(mask[:, None], (m, T))
    if mask.shape != (m, T):
        raise ValueError(
            f"sequence mask must have shape ({m}, {T}) (one flag per token) or "
            f"({m},) (one per sequence), got {mask.shape}."
        )
    w = mask.astype(dtype)
    return w / jnp.maximum(jnp.sum(w), jnp.ones((), dtype))


def sequence_targets(Z: jax.Array, y) -> jax.Array:
    """Check the targets against logits ``Z`` ``(m, T, V)`` and return them as
    one-hot / probability rows ``(m, T, V)`` of ``Z``'s dtype.

    Args:
      Z: logits ``(m, T, V)``.
      y: integer ids ``(m, T)`` in ``[0, V)`` (checked when not traced), or rows
        ``(m, T, V)``.

    Raises:
      ValueError: targets of the wrong shape or ids out of range.
    """
    y = jnp.asarray(y)
    if Z.ndim != 3:
        raise ValueError(f"sequence logits must be (m, T, V), got shape {Z.shape}.")
    m, T, V = Z.shape
    if jnp.issubdtype(y.dtype, jnp.integer):
        if y.shape != (m, T):
            raise ValueError(
                f"integer sequence targets must have shape ({m}, {T}) for logits "
                f"{Z.shape}, got {y.shape}."
            )
        if not isinstance(y, jax.core.Tracer) and y.size:
            y_np = np.asarray(y)
            if y_np.min() < 0 or y_np.max() >= V:
                raise ValueError(
                    f"sequence targets must lie in [0, {V}) for {V} logits, got "
                    f"values in [{y_np.min()}, {y_np.max()}]."
                )
        return jax.nn.one_hot(y, V, dtype=Z.dtype)
    if y.shape != (m, T, V):
        raise ValueError(
            f"sequence targets must be integer ids ({m}, {T}) or rows ({m}, {T}, "
            f"{V}) for logits {Z.shape}, got {y.shape}."
        )
    return y.astype(Z.dtype)


def sequence_cross_entropy() -> Loss:
    """Token-mean cross-entropy on logits ``(m, T, V)`` (module docstring).

    ``fn(Z, Y, mask=None)`` and ``grad(Z, Y, mask=None)`` take ``Y`` as integer
    ids ``(m, T)`` or rows ``(m, T, V)`` (see :func:`sequence_targets`) and an
    optional mask ``(m, T)`` or ``(m,)``; ``grad`` has ``Z``'s shape.
    ``fused_output`` is ``"softmax"``: ``Z`` are logits.

    Example:
      >>> loss = sequence_cross_entropy()
      >>> J = loss.fn(Z, ids, mask)          # mean over the real tokens
      >>> dZ = loss.grad(Z, ids, mask)       # (softmax(Z) − onehot(ids)) / N
    """

    def fn(Z, Y, mask=None):
        Y = sequence_targets(Z, Y)
        w = _token_weights(mask, Z.shape[0], Z.shape[1], Z.dtype)
        return -jnp.sum(w * jnp.sum(Y * _log_softmax(Z), axis=-1))

    def grad(Z, Y, mask=None):
        Y = sequence_targets(Z, Y)
        w = _token_weights(mask, Z.shape[0], Z.shape[1], Z.dtype)
        P = jnp.exp(_log_softmax(Z))
        return w[..., None] * (P * jnp.sum(Y, axis=-1, keepdims=True) - Y)

    return Loss("sequence_cross_entropy", fn, grad, "softmax")
