"""Parametric ReLU: ψ(z) = z if z > 0 else α·z, with the slope α learned.

Forward (x of shape ``(m, ..., n)``; α of shape ``(n,)`` per unit, i.e. per
channel for images, or ``()`` when shared):

    y = max(z, 0) + α ⊙ min(z, 0)                       (m, ..., n)

Backward (sums over every axis that α is broadcast along):

    dz = dy ⊙ (1 if z > 0 else α)                       (m, ..., n)
    dα = Σ_{batch, ...} dy ⊙ min(z, 0)                  (n,) or ()

At z = 0 the value is 0 on both sides; fnn takes the left derivative α there
([Neacșu & Vasilescu] writes the αx branch for x ≤ 0).

References: [Neacșu & Vasilescu, ReLU variants] (Parametric Rectified Linear Unit);
He et al. (2015), "Delving Deep into Rectifiers" (α initialised to 0.25,
one α per channel or one shared α).
"""

import jax.numpy as jnp

from ._block import Block, ShapeError, stateless
from ._spec import builtin


@builtin
def PReLU(shared: bool = False, alpha_init: float = 0.25) -> Block:
    """A parametric ReLU layer with learned negative slope(s) α.

    Args:
      shared: one α for the whole layer (shape ``()``) instead of one per unit
        of the last axis (shape ``(n,)``).
      alpha_init: the initial slope (He et al.: 0.25).

    Returns:
      A :class:`Block` with params ``{"alpha": (n,) or ()}``; output shape equals
      the input shape.
    """
    if not isinstance(shared, bool):
        raise TypeError(f"PReLU shared must be a bool, got {shared!r}.")
    if not isinstance(alpha_init, int | float):
        raise TypeError(f"PReLU alpha_init must be a number, got {alpha_init!r}.")

    def init(key, in_shape, dtype):
        if len(in_shape) < 1:
            raise ShapeError(f"PReLU expects at least one feature axis, got {in_shape}")
        shape = () if shared else (in_shape[-1],)
        return {"alpha": jnp.full(shape, alpha_init, dtype)}, tuple(in_shape)

    def forward(params, z):
        alpha = params["alpha"]
        if alpha.ndim and (z.ndim < 2 or z.shape[-1] != alpha.shape[0]):
            raise ShapeError(
                f"expected input (m, ..., {alpha.shape[0]}) for alpha of shape "
                f"{alpha.shape}, got {z.shape}"
            )
        # A where, not max(z, 0) + α·min(z, 0), whose jax.grad splits z = 0.
        y = jnp.where(z > 0, z, alpha * z)
        return y, z

    def backward(params, z, dy):
        alpha = params["alpha"]
        # NaN in z stays NaN in dz (a where on z > 0 alone would hide it).
        slope = jnp.where(z > 0, jnp.ones((), z.dtype), alpha)
        dz = dy * jnp.where(jnp.isnan(z), z, slope)
        axes = tuple(range(z.ndim if alpha.ndim == 0 else z.ndim - 1))
        dalpha = jnp.sum(dy * jnp.minimum(z, 0), axis=axes)
        return {"alpha": dalpha}, dz

    return stateless(f"PReLU(shared={shared})", init, forward, backward)
