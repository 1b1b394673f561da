"""Gradient checking: manual backprop against finite differences and autodiff.

[Deep Learning 2020, Gradient Checking]: stack every W and b into one vector θ, and
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
compare manual against automatic gradients. Every function takes the MLP form
or any model through ``blocks=`` and ``state=`` (leaves are then labelled by
layer, e.g. ``[2][0] Dense(64, relu) ['W']``); :func:`fnn.nn.check_block`
checks one block on its own.
"""

from typing import Any, NamedTuple

import jax

from . import nn as _nn
from ._compare import numerical_grad as numerical_grad
from ._compare import relative_difference as relative_difference
from ._compare import to_float64, verdict
from ._mlp import backprop, loss
from ._tree import leaves_with_paths


class GradientComparison(NamedTuple):
    """Three gradients of the same loss and their pairwise relative differences.

    Attributes:
      manual, autodiff, numerical: gradient trees (``backprop``, ``jax.grad``,
        central differences), float64.
      manual_vs_autodiff, manual_vs_numerical, autodiff_vs_numerical: the
        relative difference of [Deep Learning 2020, Gradient Checking] over all
        parameters.
      per_leaf: ``{leaf label: (manual vs autodiff, manual vs numerical)}``.
    """

    manual: Any
    autodiff: Any
    numerical: Any
    manual_vs_autodiff: float
    manual_vs_numerical: float
    autodiff_vs_numerical: float
    per_leaf: dict[str, tuple[float, float]]

    @property
    def passed(self) -> bool:
        """Every leaf's manual gradient equals autodiff's (≤ 1e-7)."""
        return all(
            verdict(ma, mn) in ("ok", "kink") for ma, mn in self.per_leaf.values()
        )

    def table(self) -> str:
        """The per-leaf report as a plain-text table with a verdict column."""
        width = max([len(p) for p in self.per_leaf] + [4])
        rows = [f"{'leaf':<{width}}  {'manual~autodiff':>15}  {'manual~numerical':>16}"]
        for path, (ma, mn) in self.per_leaf.items():
            rows.append(f"{path:<{width}}  {ma:>15.2e}  {mn:>16.2e}  {verdict(ma, mn)}")
        ma, mn = self.manual_vs_autodiff, self.manual_vs_numerical
        rows.append(f"{'all':<{width}}  {ma:>15.2e}  {mn:>16.2e}  {verdict(ma, mn)}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (
            f"GradientComparison({'passed' if self.passed else 'FAILED'}, "
            f"{len(self.per_leaf)} leaves, manual~autodiff "
            f"{self.manual_vs_autodiff:.1e}, manual~numerical "
            f"{self.manual_vs_numerical:.1e}, autodiff~numerical "
            f"{self.autodiff_vs_numerical:.1e})"
        )


def _labelled(tree, kwargs):
    """``[(label, leaf)]``: by layer for a model, by key path for the MLP."""
    if kwargs.get("blocks") is not None:
        return _nn.leaf_labels(_nn.as_model(kwargs["blocks"]), tree)
    return leaves_with_paths(tree)


def _gradients(params, x, y, eps, kwargs, with_autodiff, with_numerical=True):
    params, x, y = to_float64(params), to_float64(x), to_float64(y)
    if kwargs.get("state") is not None:
        kwargs = {**kwargs, "state": to_float64(kwargs["state"])}
    J = lambda p: loss(p, x, y, **kwargs)  # noqa: E731
    _, manual = jax.jit(lambda p: backprop(p, x, y, **kwargs))(params)
    numerical = numerical_grad(J, params, eps) if with_numerical else None
    autodiff = jax.jit(jax.grad(J))(params) if with_autodiff else None
    return manual, numerical, autodiff


def manual_vs_autodiff(params: Any, x: Any, y: Any, **kwargs: Any) -> dict[str, float]:
    """``{leaf label: relative difference of fnn.backprop and jax.grad}`` in
    float64, without finite differences (cheap enough to run before training;
    :func:`fnn.fit` does with ``check_gradients``). Same arguments as
    :func:`grad_check`."""
    with jax.enable_x64(True):
        manual, _, autodiff = _gradients(params, x, y, None, kwargs, True, False)
        return {
            label: relative_difference(m, a)
            for (label, m), a in zip(
                _labelled(manual, kwargs), jax.tree.leaves(autodiff), strict=True
            )
        }


def grad_check(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> float:
    """[Deep Learning 2020]'s relative difference of backprop and central differences.

    The relative difference of [Deep Learning 2020, Gradient Checking] between
    :func:`fnn.backprop` and central finite differences of :func:`fnn.loss`, in
    float64.

    Args:
      params, x, y: as for :func:`fnn.loss` (converted to float64).
      eps: the finite-difference step ε.
      **kwargs: the keywords of :func:`fnn.loss` (activation, loss, output, l1,
        l2, drop_rate with key and train, mask; or ``blocks`` and ``state`` for
        any model).

    Returns:
      ‖dθ_approx − dθ‖ / (‖dθ_approx‖ + ‖dθ‖): ≈1e-7 or below for a correct
      backward, ≈1e-3 or above signals a bug.
    """
    with jax.enable_x64(True):
        manual, numerical, _ = _gradients(params, x, y, eps, kwargs, False)
        return relative_difference(manual, numerical)


def grad_check_report(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> dict[str, float]:
    """:func:`grad_check` leaf by leaf: ``{leaf label: relative difference}``,
    e.g. ``{"[0]['W']": 3e-10, ...}`` for the MLP or ``{"[2][0] Dense(64, relu)
    ['W']": 3e-10, ...}`` for a model, to locate a wrong backward."""
    with jax.enable_x64(True):
        manual, numerical, _ = _gradients(params, x, y, eps, kwargs, False)
        return {
            label: relative_difference(a, b)
            for (label, a), b in zip(
                _labelled(manual, kwargs), jax.tree.leaves(numerical), strict=True
            )
        }


def compare_gradients(
    params: Any, x: Any, y: Any, *, eps: float = 1e-7, **kwargs: Any
) -> GradientComparison:
    """Manual backprop, ``jax.grad`` and finite differences of the same loss, in
    float64, with their pairwise relative differences (overall and per leaf).

    Same arguments as :func:`grad_check`. ``print(result.table())`` shows the
    per-leaf report with a verdict column; ``result.passed`` the verdict.
    """
    with jax.enable_x64(True):
        manual, numerical, autodiff = _gradients(params, x, y, eps, kwargs, True)
        per_leaf = {
            label: (relative_difference(m, a), relative_difference(m, n))
            for (label, m), a, n in zip(
                _labelled(manual, kwargs),
                jax.tree.leaves(autodiff),
                jax.tree.leaves(numerical),
                strict=True,
            )
        }
        return GradientComparison(
            manual,
            autodiff,
            numerical,
            relative_difference(manual, autodiff),
            relative_difference(manual, numerical),
            relative_difference(autodiff, numerical),
            per_leaf,
        )
