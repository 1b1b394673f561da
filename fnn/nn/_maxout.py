"""Maxout: a dense layer to n_out·k units and the max over each group of k.

Forward (batch-first; piece p of unit j is column j·k + p of ``Z``):

    Z = A_prev @ W + b                      (m, n_out·k), W (n_in, n_out·k)
    A_j = max_p Z_{j,p}                     (m, n_out)

Backward ([Neacșu & Vasilescu]: ∂ρ/∂x_j = 1 for j = argmax, 0 elsewhere):

    dZ_{j,p} = dA_j · [p = p*_j],  p*_j = argmax_p Z_{j,p}   (m, n_out·k)
    dW = A_prevᵀ dZ,  db = Σ_rows dZ,  dA_prev = dZ Wᵀ

Ties: the whole gradient goes to the **first** maximal piece (``jnp.argmax``).
The forward reads the maximum at that index rather than through ``jnp.max``
(whose ``jax.grad`` splits a tie equally), so ``jax.grad`` of the block routes
ties exactly as the hand-written backward does.

References: [Neacșu & Vasilescu, Output activation functions] (Maxout and its
derivative); Goodfellow et al. (2013), "Maxout Networks".
"""

import jax
import jax.numpy as jnp

from .. import initializers as _initializers
from ._block import Block, ShapeError, stateless
from ._spec import builtin


@builtin
def Maxout(n_out: int, k: int, *, W_init="glorot_normal", b_init="zeros") -> Block:
    """A maxout layer of ``n_out`` units with ``k`` linear pieces each.

    Args:
      n_out: number of output units.
      k: pieces per unit (k = 1 is a plain dense layer).
      W_init, b_init: initializer names or callables ``(key, shape, dtype)``.

    Returns:
      A :class:`Block` with params ``{"W": (n_in, n_out·k), "b": (n_out·k,)}``
      mapping ``(m, n_in)`` to ``(m, n_out)``.
    """
    for name, value in (("n_out", n_out), ("k", k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Maxout {name} must be a positive int, got {value!r}.")
    W_init, b_init = _initializers.get(W_init), _initializers.get(b_init)

    def init(key, in_shape, dtype):
        if len(in_shape) != 1:
            raise ShapeError(f"Maxout expects flat inputs (n_in,), got {in_shape}")
        key_W, key_b = jax.random.split(key)
        params = {
            "W": W_init(key_W, (in_shape[0], n_out * k), dtype),
            "b": b_init(key_b, (n_out * k,), dtype),
        }
        return params, (n_out,)

    def forward(params, A_prev):
        W, b = params["W"], params["b"]
        if A_prev.ndim != 2 or A_prev.shape[1] != W.shape[0]:
            raise ShapeError(f"expected input (m, {W.shape[0]}), got {A_prev.shape}")
        Z = (A_prev @ W + b).reshape(A_prev.shape[0], n_out, k)
        p_star = jnp.argmax(Z, axis=-1)  # (m, n_out)
        A = jnp.take_along_axis(Z, p_star[..., None], axis=-1)[..., 0]
        return A, (A_prev, p_star)

    def backward(params, cache, dA):
        A_prev, p_star = cache
        winner = jax.nn.one_hot(p_star, k, dtype=dA.dtype)
        dZ = (winner * dA[..., None]).reshape(A_prev.shape[0], n_out * k)
        grads = {"W": A_prev.T @ dZ, "b": jnp.sum(dZ, axis=0)}
        return grads, dZ @ params["W"].T

    return stateless(f"Maxout({n_out}, k={k})", init, forward, backward)
