"""Dense layer and activation layer: Z = A_prev @ W + b, A = ψ(Z).

Batch-first: ``A_prev`` is ``(m, n_in)``, ``W`` is ``(n_in, n_out)``, ``b`` is
``(n_out,)``, ``Z`` and ``A`` are ``(m, n_out)``. Inputs of higher rank, such as
sequences ``(m, T, n_in)``, are mapped along their last axis (every position by
the same ``W`` and ``b``), as ``x @ W`` does; the sums in dW and db then run over
every axis but the last. The sources write the same layer for one column-vector
example as z = Wᵀa + b ([Deep Learning 2020, Forward - Backpropagation]) or
a = Wh + b with ``W`` of shape (n_out, n_in) [Laurent, Mathematical formulation];
fnn's ``W`` is [Deep Learning 2020]'s ``W^{[i]}``, and the rows of fnn's ``A``
are the columns of the sources' ``A``.

Backward ([Deep Learning 2020, Forward - Backpropagation], transposed to batch-first;
[Balvert, Backpropagation]):

    dZ      = dA ⊙ ψ'(Z)              (m, n_out)
    dW      = A_prevᵀ dZ               (n_in, n_out)
    db      = Σ_rows dZ                (n_out,)
    dA_prev = dZ Wᵀ                    (m, n_in)

The 1/m of the mean loss is already inside ``dA`` (it enters once, at the loss).
"""

import jax
import jax.numpy as jnp

from .. import activations as _activations
from .. import initializers as _initializers
from ._block import Block, ShapeError, stateless
from ._spec import builtin


def _check_input(A_prev, W):
    if A_prev.ndim < 2 or A_prev.shape[-1] != W.shape[0]:
        raise ShapeError(
            f"expected input of shape (m, {W.shape[0]}) or (m, ..., {W.shape[0]}) "
            f"for W of shape {W.shape}, got {A_prev.shape}"
        )


@builtin
def Dense(
    n_out: int | None = None,
    activation="identity",
    *,
    W_init="he_normal",
    b_init="zeros",
) -> Block:
    """A dense layer, optionally followed by an activation.

    The layer of [Deep Learning 2020, Forward - Backpropagation].

    Args:
      n_out: number of units (needed by ``init`` only).
      activation: name or :class:`fnn.activations.Activation` applied to Z.
      W_init, b_init: initializer names or callables ``(key, shape, dtype)``.

    Returns:
      A :class:`Block` with params ``{"W": (n_in, n_out), "b": (n_out,)}``;
      input ``(m, n_in)`` or ``(m, ..., n_in)``, output ``(m, n_out)`` or
      ``(m, ..., n_out)`` (the last axis mapped, the others kept).
    """
    act = _activations.get(activation)
    W_init, b_init = _initializers.get(W_init), _initializers.get(b_init)

    def init(key, in_shape, dtype):
        if n_out is None or n_out < 1:
            raise ValueError(f"Dense needs a positive number of units, got {n_out!r}.")
        if len(in_shape) < 1:
            raise ShapeError(
                f"Dense expects inputs (n_in,) or (..., n_in), got {tuple(in_shape)}"
            )
        n_in = in_shape[-1]
        key_W, key_b = jax.random.split(key)
        params = {
            "W": W_init(key_W, (n_in, n_out), dtype),
            "b": b_init(key_b, (n_out,), dtype),
        }
        return params, (*in_shape[:-1], n_out)

    def forward(params, A_prev):
        W, b = params["W"], params["b"]
        _check_input(A_prev, W)
        Z = A_prev @ W + b
        return act.fn(Z), (A_prev, Z)

    def backward(params, cache, dA):
        A_prev, Z = cache
        dZ = act.vjp(Z, dA)
        if dZ.ndim == 2:
            dW = A_prev.T @ dZ
            db = jnp.sum(dZ, axis=0)
        else:  # (m, ..., n): every position is one more row
            axes = tuple(range(dZ.ndim - 1))
            dW = jnp.tensordot(A_prev, dZ, axes=(axes, axes))
            db = jnp.sum(dZ, axis=axes)
        dA_prev = dZ @ params["W"].T
        return {"W": dW, "b": db}, dA_prev

    label = f"Dense({n_out}, {act.name})" if n_out else f"Dense({act.name})"
    return stateless(label, init, forward, backward)


@builtin
def Activation(activation, **kwargs) -> Block:
    """An activation as a layer of its own: A = ψ(Z), dZ = dA ⊙ ψ'(Z); no params.

    Args:
      activation: a name (with ``**kwargs`` parameters) or an Activation object.
    """
    act = _activations.get(activation, **kwargs)

    def init(key, in_shape, dtype):
        return {}, tuple(in_shape)

    def forward(params, Z):
        return act.fn(Z), Z

    def backward(params, Z, dA):
        return {}, act.vjp(Z, dA)

    return stateless(f"Activation({act.name})", init, forward, backward)
