"""An exponential moving average of the parameters, kept beside the optimizer.

``ema_params(inner, decay)`` wraps an optimizer; after each update it folds the
new parameters into a running average::

    theta_t = theta_{t-1} + u_t                        (inner's update)
    m_t     = decay * m_{t-1} + (1 - decay) * theta_t,   m_0 = 0
    ema_t   = m_t / (1 - decay^t)                       (debias=True)
    ema_t   = m_t                                       (debias=False)

The updates are ``inner``'s, unchanged: training follows the raw parameters;
the average is read with :func:`ema_params_of` (for evaluation, for saving
beside the raw parameters). It lives in the optimizer state, so a checkpoint
of the state holds it and a resumed run continues the average exactly.

Invariants:
  * the updates equal ``inner``'s bit for bit;
  * ``ema_params_of(state)`` has the parameters' structure, shapes and dtypes;
    the average itself is kept in the accumulation dtype (float32 for 16-bit
    parameters);
  * wrapped inside :func:`fnn.optim.multi_steps`, the average moves once per
    applied update, not per micro-batch.

References:
  Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging"
  (1992); Kingma & Ba, "Adam" (2015), section 7.2 (temporal averaging with bias
  correction); optax's ``ema`` (the same recurrence on updates).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._base import (
    Optimizer,
    accumulation_dtype,
    check_scalar,
    check_state,
    register_state,
)
from ._transforms import _find_state, require_params


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`.

    Attributes:
      count: int32 scalar, updates averaged so far.
      decay: float scalar (float64 when x64 is on, float32 otherwise), the
        decay, stored so that the accessor can debias.
      debias: bool scalar, whether :func:`ema_params_of` divides by
        ``1 - decay^count``.
      ema: the running sum ``m_t`` (not yet debiased), one leaf per parameter
        in its accumulation dtype.
      inner_opt_state: the wrapped optimizer's state.
    """

    count: jax.Array
    decay: jax.Array
    debias: jax.Array
    ema: Any
    inner_opt_state: Any


register_state(EmaParamsState, "ema_params")


def ema_params(inner: Optimizer, decay: float, debias: bool = True) -> Optimizer:
    """Keep an exponential moving average of the parameters after each update.

    .. math::

        m_t = \\beta m_{t-1} + (1 - \\beta) \\theta_t, \\quad m_0 = 0, \\qquad
        \\bar\\theta_t = m_t / (1 - \\beta^t) \\text{ (debiased)}

    Args:
      inner: the optimizer whose updates train the raw parameters.
      decay: ``beta`` in ``[0, 1)``, e.g. 0.999 (an average over about
        ``1 / (1 - beta)`` steps).
      debias: divide by ``1 - beta^t`` so that the early average is not pulled
        toward the zero it starts from (as in Adam's moments).

    Returns:
      An ``Optimizer`` with the updates of ``inner``; its state is an
      :class:`EmaParamsState`; read the average with :func:`ema_params_of`.
      ``update`` needs ``params``.

    References:
      Polyak & Juditsky (1992); Kingma & Ba, "Adam" (2015), section 7.2.
    """
    decay = check_scalar("decay", decay, lo=0.0, hi=1.0, hi_open=True)
    if not isinstance(debias, bool):
        raise ValueError(f"debias must be True or False, got {debias!r}.")

    def init(params):
        return EmaParamsState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(decay, jnp.result_type(float)),
            jnp.asarray(debias),
            jax.tree.map(
                lambda p: jnp.zeros(p.shape, accumulation_dtype(p.dtype)), params
            ),
            inner.init(params),
        )

    def update(grads, state, params=None, **extra):
        check_state(state, EmaParamsState, "ema_params")
        require_params(params, "ema_params")
        updates, inner_state = inner.update(
            grads, state.inner_opt_state, params, **extra
        )

        def fold(m, p, u):
            new_p = (p + u).astype(p.dtype).astype(m.dtype)
            return decay * m + (1 - decay) * new_p

        ema = jax.tree.map(fold, state.ema, params, updates)
        new_state = EmaParamsState(
            state.count + 1, state.decay, state.debias, ema, inner_state
        )
        return updates, new_state

    return Optimizer(init, update)


def _find(node: Any) -> EmaParamsState | None:
    return _find_state(node, lambda n: isinstance(n, EmaParamsState))


def ema_params_of(state: Any, params: Any = None) -> Any:
    """The averaged parameters held in an optimizer state (searched through nested
    states: ``chain``, ``multi_steps``, ...).

    ``m_t / (1 - decay^t)`` when debiasing, ``m_t`` otherwise, cast to the
    parameters' dtypes. Before the first update (``t = 0``) there is no average:
    ``params`` is returned when given, the zeros of ``m_0`` otherwise.

    Args:
      state: an optimizer state holding an :class:`EmaParamsState`.
      params: the raw parameters, for their dtypes and for ``t = 0``.

    Returns:
      A pytree like the parameters.

    Raises:
      ValueError: ``state`` holds no :class:`EmaParamsState`.
    """
    found = _find(state)
    if found is None:
        raise ValueError(
            "ema_params_of: no EmaParamsState in an optimizer state of type "
            f"{type(state).__name__}; wrap the optimizer with "
            "fnn.optim.ema_params(optimizer, decay)."
        )
    t = found.count
    scale = jnp.where(
        found.debias & (t > 0),
        1 / (1 - found.decay ** t.astype(found.decay.dtype)),
        1.0,
    )

    def read(m, p=None):
        value = (m * scale.astype(m.dtype)).astype(m.dtype if p is None else p.dtype)
        return value if p is None else jnp.where(t > 0, value, p)

    if params is None:
        return jax.tree.map(read, found.ema)
    return jax.tree.map(read, found.ema, params)
