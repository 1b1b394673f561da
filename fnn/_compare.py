"""Comparing gradients: the relative difference and central differences.

The article "Deep Learning" (January 2020), section 4, "Gradient Checking":
stack every parameter into one vector θ and compare a gradient dθ with the
central difference

    dθ_approx[i] = (J(θ + ε e_i) − J(θ − ε e_i)) / (2ε)        (error O(ε²))

through ‖dθ_approx − dθ‖₂ / (‖dθ_approx‖₂ + ‖dθ‖₂): about 1e-7 or below for a
correct gradient, 1e-3 or above for a bug.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

#: [Deep Learning 2020]'s thresholds for the relative difference.
CORRECT = 1e-7
BUG = 1e-3


def relative_difference(a: Any, b: Any) -> float:
    """‖a − b‖₂ / (‖a‖₂ + ‖b‖₂) over all leaves of two arrays or pytrees of the
    same structure (the article "Deep Learning", section 4); 0 when both are
    zero."""
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    if a.shape != b.shape:
        raise ValueError(
            f"relative_difference needs trees of the same size, got {a.size} and "
            f"{b.size} values."
        )
    denom = float(jnp.linalg.norm(a) + jnp.linalg.norm(b))
    return 0.0 if denom == 0 else float(jnp.linalg.norm(a - b)) / denom


def numerical_grad(
    f: Callable[[Any], jax.Array], params: Any, eps: float = 1e-7
) -> Any:
    """Central differences of the scalar ``f`` at ``params``, one coordinate at a
    time (the article "Deep Learning", section 4): a tree shaped like ``params``.
    Costs 2·P evaluations of ``f``, batched with ``jax.lax.map``; call it in
    float64."""
    theta, unravel = ravel_pytree(params)

    def partial(i):
        e = jnp.zeros_like(theta).at[i].set(eps)
        return (f(unravel(theta + e)) - f(unravel(theta - e))) / (2 * eps)

    column = jax.jit(
        lambda: jax.lax.map(partial, jnp.arange(theta.size), batch_size=256)
    )
    return unravel(column())


def to_float64(tree: Any) -> Any:
    """Every floating leaf of ``tree`` as float64 (call inside enable_x64)."""
    return jax.tree.map(
        lambda v: (
            jnp.asarray(v, jnp.float64)
            if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
            else v
        ),
        tree,
    )


def verdict(manual_vs_autodiff: float, manual_vs_numerical: float) -> str:
    """``ok``; ``kink`` (the backward equals autodiff but finite differences
    cross a non-differentiable point); ``suspect`` (between the 1e-7 and 1e-3 of
    [Deep Learning 2020, Gradient Checking]); ``WRONG`` (1e-3 or more from
    autodiff)."""
    if manual_vs_autodiff > CORRECT:
        return "WRONG" if manual_vs_autodiff >= BUG else "suspect"
    return "ok" if manual_vs_numerical <= CORRECT else "kink"
