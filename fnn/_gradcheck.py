"""Gradient checking: manual backprop against finite differences and autodiff.

Seed 000 §4 "Gradient Checking": stack every W and b into one vector θ, and
compare the backprop gradient dθ with the central difference

    dθ_approx[i] = (J(θ + ε e_i) − J(θ − ε e_i)) / (2ε)        (error O(ε²))

through the relative difference

    ‖dθ_approx − dθ‖₂ / (‖dθ_approx‖₂ + ‖dθ‖₂),

which "should be close to ε" (≈1e-7); "an error is suspected when the value is
near 1e-3". At a kink (relu at exactly Z = 0, e.g. zero biases and an
all-zero input row) the central difference reads the average of the one-sided
slopes, not the derivative fnn (and JAX) use, so check with smooth
activations or nonzero biases. Everything here runs in float64, inside a scoped
``jax.enable_x64(True)`` (the global flag is never changed); parameters, inputs
and float targets are converted to float64 first.

:func:`compare_gradients` adds the third opinion, ``jax.grad``, for users who
compare manual against automatic gradients.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._mlp import backprop, loss
from ._tree import leaves_with_paths


def relative_difference(a: jax.Array, b: jax.Array) -> float:
    """‖a − b‖₂ / (‖a‖₂ + ‖b‖₂) (seed 000); 0 when both are zero."""
    a, b = jnp.ravel(a), jnp.ravel(b)
    denom = float(jnp.linalg.norm(a) + jnp.linalg.norm(b))
    return 0.0 if denom == 0 else float(jnp.linalg.norm(a - b)) / denom


def _to64(tree: Any) -> Any:
    return jax.tree.map(
        lambda v: (
            jnp.asarray(v, jnp.float64)
            if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
            else v
        ),
        tree,
    )


def numerical_grad(
    f: Callable[[Any], jax.Array], params: Any, eps: float = 1e-7
) -> Any:
    """Central differences of the scalar ``f`` at ``params``, one coordinate at a
    time (seed 000): a tree shaped like ``params``. Costs 2·P evaluations of
    ``f``, batched with ``jax.lax.map``; call it in float64."""
    theta, unravel = ravel_pytree(params)

    def partial(i):
        e = jnp.zeros_like(theta).at[i].set(eps)
        return (f(unravel(theta + e)) - f(unravel(theta - e))) / (2 * eps)

    column = jax.jit(
        lambda: jax.lax.map(partial, jnp.arange(theta.size), batch_size=256)
    )
    return unravel(column())


class GradientComparison(NamedTuple):
    """Three gradients of the same loss and their pairwise relative differences.

    Attributes:
      manual, autodiff, numerical: gradient trees (``backprop``, ``jax.grad``,
        central differences), float64.
      manual_vs_autodiff, manual_vs_numerical, autodiff_vs_numerical: seed 000's
        relative difference over all parameters.
      per_leaf: ``{key path: (manual vs autodiff, manual vs numerical)}``.
    """

    manual: Any
    autodiff: Any
    numerical: Any
    manual_vs_autodiff: float
    manual_vs_numerical: float
    autodiff_vs_numerical: float
    per_leaf: dict[str, tuple[float, float]]

    def table(self) -> str:
        """The per-leaf report as a plain-text table."""
        rows = [f"{'leaf':<16} {'manual~autodiff':>16} {'manual~numerical':>17}"]
        for path, (ma, mn) in self.per_leaf.items():
            rows.append(f"{path:<16} {ma:>16.3e} {mn:>17.3e}")
        ma, mn = self.manual_vs_autodiff, self.manual_vs_numerical
        rows.append(f"{'all':<16} {ma:>16.3e} {mn:>17.3e}")
        return "\n".join(rows)


def _gradients(params, x, y, eps, kwargs, with_autodiff):
    params, x = _to64(params), _to64(x)
    y = _to64(y)
    J = lambda p: loss(p, x, y, **kwargs)  # noqa: E731
    _, manual = jax.jit(lambda p: backprop(p, x, y, **kwargs))(params)
    numerical = numerical_grad(J, params, eps)
    autodiff = jax.jit(jax.grad(J))(params) if with_autodiff else None
    return manual, numerical, autodiff


def grad_check(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> float:
    """Seed 000's relative difference between :func:`fnn.backprop` and central
    finite differences of :func:`fnn.loss`, in float64.

    Args:
      params, x, y: as for :func:`fnn.loss` (converted to float64).
      eps: the finite-difference step ε.
      **kwargs: the keywords of :func:`fnn.loss` (activation, loss, output, l1,
        l2, drop_rate with key and train, mask).

    Returns:
      ‖dθ_approx − dθ‖ / (‖dθ_approx‖ + ‖dθ‖): ≈1e-7 or below for a correct
      backward, ≈1e-3 or above signals a bug.
    """
    with jax.enable_x64(True):
        manual, numerical, _ = _gradients(params, x, y, eps, kwargs, False)
        return relative_difference(ravel_pytree(manual)[0], ravel_pytree(numerical)[0])


def grad_check_report(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> dict[str, float]:
    """:func:`grad_check` leaf by leaf: ``{key path: relative difference}``, e.g.
    ``{"[0]['W']": 3e-10, "[0]['b']": 2e-10, ...}``, to locate a wrong backward."""
    with jax.enable_x64(True):
        manual, numerical, _ = _gradients(params, x, y, eps, kwargs, False)
        return {
            path: relative_difference(a, b)
            for (path, a), (_, b) in zip(
                leaves_with_paths(manual), leaves_with_paths(numerical), strict=True
            )
        }


def compare_gradients(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> GradientComparison:
    """Manual backprop, ``jax.grad`` and finite differences of the same loss, in
    float64, with their pairwise relative differences (overall and per leaf).

    Same arguments as :func:`grad_check`. ``print(result.table())`` shows the
    per-leaf report.
    """
    with jax.enable_x64(True):
        manual, numerical, autodiff = _gradients(params, x, y, eps, kwargs, True)
        flat = {
            name: ravel_pytree(t)[0]
            for name, t in (("m", manual), ("a", autodiff), ("n", numerical))
        }
        per_leaf = {
            path: (relative_difference(m, a), relative_difference(m, n))
            for (path, m), (_, a), (_, n) in zip(
                leaves_with_paths(manual),
                leaves_with_paths(autodiff),
                leaves_with_paths(numerical),
                strict=True,
            )
        }
        return GradientComparison(
            manual,
            autodiff,
            numerical,
            relative_difference(flat["m"], flat["a"]),
            relative_difference(flat["m"], flat["n"]),
            relative_difference(flat["a"], flat["n"]),
            per_leaf,
        )
