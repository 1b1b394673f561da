"""Gradient accumulation: k micro-batch gradients, one update.

``multi_steps(inner, every_k_schedule)`` wraps an optimizer so that it sums the
gradients of ``k`` consecutive calls and applies ``inner`` once, to their mean::

    G = (1/k) * sum_{i=1..k} g_i          (use_grad_mean=True)
    u = inner.update(G) on call k,   u = 0 on calls 1 .. k-1

With micro-batches of equal size ``b`` and a loss that averages over the batch,
``G`` is the gradient of the ``k * b`` batch: k accumulated steps equal one step
on the large batch (up to the order of float sums). The only extra memory is
one gradient tree (the running sum).

Invariants:
  * ``state.mini_step`` counts calls since the last update (``0 .. k-1``),
    ``state.gradient_step`` the updates applied (both int32);
  * ``inner``'s state changes only on the k-th call, so its own step count, its
    schedule and its moments count updates, not micro-batches;
  * the names and keywords are optax's ``MultiSteps(opt, every_k_schedule,
    use_grad_mean=True)``; fnn's is a function returning an
    :class:`~fnn.optim.Optimizer`, like every other fnn optimizer.

References:
  optax's ``MultiSteps``; Ott et al., "Scaling Neural Machine Translation"
  (2018), accumulating gradients over several mini-batches to emulate a large
  batch.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._base import Optimizer, check_state, register_state


class MultiStepsState(NamedTuple):
    """State of :func:`multi_steps`.

    Attributes:
      mini_step: int32 scalar, calls since the last update (``0 .. k-1``).
      gradient_step: int32 scalar, updates applied so far.
      inner_opt_state: the wrapped optimizer's state.
      acc_grads: the running sum (or mean) of the gradients since the last
        update; the parameters' structure, shapes and dtypes.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: Any
    acc_grads: Any


register_state(MultiStepsState, "multi_steps")


def _every_k(every_k_schedule) -> Callable[[jax.Array], jax.Array]:
    if callable(every_k_schedule):
        return lambda step: jnp.asarray(every_k_schedule(step), jnp.int32)
    if (
        isinstance(every_k_schedule, bool)
        or not isinstance(every_k_schedule, int)
        or every_k_schedule < 1
    ):
        raise ValueError(
            "every_k_schedule must be a positive integer or a function of the "
            f"update count, got {every_k_schedule!r}."
        )
    k = int(every_k_schedule)
    return lambda step: jnp.asarray(k, jnp.int32)


def multi_steps(
    inner: Optimizer,
    every_k_schedule: "int | Callable[[jax.Array], Any]",
    use_grad_mean: bool = True,
) -> Optimizer:
    """Accumulate ``k`` gradients, then apply ``inner`` once (gradient accumulation).

    .. math::

        G_t = \\frac{1}{k} \\sum_{i=1}^{k} g_{t,i}, \\qquad
        u = \\mathrm{inner}(G_t) \\text{ on the } k\\text{-th call, } 0 \\text{ before}

    Args:
      inner: the optimizer applied to the accumulated gradient.
      every_k_schedule: ``k``, the calls per update (a positive integer), or a
        function of the number of updates applied so far returning ``k``
        (optax's name for it).
      use_grad_mean: average the ``k`` gradients (default) rather than sum them.

    Returns:
      An ``Optimizer`` whose state is a :class:`MultiStepsState`; its updates
      are zeros except on every ``k``-th call.

    Warning:
      a micro-batch with padding (a masked last batch) weighs as much as a full
      one in the mean: accumulation equals the large batch step only for equal
      micro-batches.

    References:
      optax, ``MultiSteps``; Ott et al., "Scaling Neural Machine Translation"
      (2018).
    """
    every_k = _every_k(every_k_schedule)

    def init(params):
        return MultiStepsState(
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
            inner.init(params),
            jax.tree.map(jnp.zeros_like, params),
        )

    def update(grads, state, params=None, **extra):
        check_state(state, MultiStepsState, "multi_steps")
        k = every_k(state.gradient_step)
        acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), state.acc_grads, grads)
        last = state.mini_step + 1 >= k

        def apply(operands):
            acc, inner_state = operands
            G = acc
            if use_grad_mean:
                G = jax.tree.map(lambda a: a / k.astype(a.dtype), acc)
            updates, inner_state = inner.update(G, inner_state, params, **extra)
            updates = jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads)
            zeros = jax.tree.map(jnp.zeros_like, acc)
            return updates, inner_state, zeros

        def wait(operands):
            acc, inner_state = operands
            updates = jax.tree.map(jnp.zeros_like, grads)
            return updates, inner_state, acc

        updates, inner_state, acc = jax.lax.cond(
            last, apply, wait, (acc, state.inner_opt_state)
        )
        new_state = MultiStepsState(
            jnp.where(last, 0, state.mini_step + 1).astype(jnp.int32),
            state.gradient_step + last.astype(jnp.int32),
            inner_state,
            acc,
        )
        return updates, new_state

    return Optimizer(init, update)


#: optax's spelling: ``MultiSteps(opt, every_k_schedule)`` returns the wrapped
#: optimizer directly (fnn has no ``.gradient_transformation()`` step).
MultiSteps = multi_steps
