"""A network: one block (often a :func:`~fnn.nn.Sequential`) or a list of blocks.

``blocks`` is a :class:`~fnn.nn.Block` or a list of blocks (a list is the
``Sequential`` of its entries); for a list, ``params`` and ``state`` are lists
with one entry per block (``{}`` for a block without any).

Manual backpropagation is one generic reverse walk (Laurent, "Backpropagation
algorithm"; Balvert, "Backpropagation" steps 1-4):

  1. forward pass, each block keeping its ``cache`` (Z, A_prev, masks, ...);
  2. the output error dJ/d(out) from the loss (fused with softmax/sigmoid);
  3. for blocks L, ..., 1: ``dparams_i, dx = block_i.backward(params_i, cache_i, dx)``
     (a combinator walks its own children the same way);
  4. plus the penalty gradient on the weights.

No ``jax.grad``, ``jax.vjp`` or ``jax.jvp`` is used; everything runs under
``jax.jit`` and ``jax.vmap``.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import losses as _losses
from ..initializers import check_key
from ._block import Block
from ._combinators import as_model

Blocks = Block | Sequence[Block]


def _in_shape(model: Block, in_shape) -> tuple[int, ...]:
    if in_shape is None:
        if model.in_shape is None:
            raise ValueError(
                f"{model.name} needs an input shape: pass in_shape, e.g. (64,) for "
                "64 features or (28, 28, 1) for images."
            )
        return tuple(model.in_shape)
    if not isinstance(in_shape, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in in_shape
    ):
        raise ValueError(
            "in_shape must be a tuple of positive ints, the per-example shape "
            f"without the batch axis (e.g. (64,)), got {in_shape!r}."
        )
    return tuple(in_shape)


def init(
    key: jax.Array,
    blocks: Blocks,
    in_shape: Sequence[int] | None = None,
    dtype=jnp.float32,
) -> tuple[Any, Any]:
    """Initialise every block in turn, threading the per-example shape.

    Args:
      key: PRNG key; block ``i`` of a list or ``Sequential`` gets
        ``jax.random.fold_in(key, i)``.
      blocks: the network (a block or a list of blocks).
      in_shape: per-example input shape, e.g. ``(64,)`` or ``(8, 8, 1)``;
        optional for a model that fixes it (:func:`fnn.mlp`).
      dtype: parameter dtype.

    Returns:
      ``(params, state)`` (lists with one entry per block for a list or a
      ``Sequential``). The output shape is :func:`out_shape`, or the third
      value of ``model.init(key, in_shape, dtype)``.
    """
    check_key(key)
    model = as_model(blocks)
    params, state, _ = model.init(key, _in_shape(model, in_shape), dtype)
    return params, state


def out_shape(blocks: Blocks, in_shape: Sequence[int] | None = None) -> tuple:
    """The per-example output shape of the network for inputs ``(m, *in_shape)``
    (computed abstractly, no parameters are drawn)."""
    model = as_model(blocks)
    shape = _in_shape(model, in_shape)
    found = []

    def init(key):
        params, state, out = model.init(key, shape, jnp.float32)
        found.append(tuple(out))
        return params, state

    jax.eval_shape(init, jax.random.key(0))
    return found[0]


def forward(
    blocks: Blocks,
    params: Any,
    x: jax.Array,
    *,
    state: Any = None,
    key: jax.Array | None = None,
    train: bool = False,
) -> tuple[jax.Array, Any, Any]:
    """Run the network, keeping what backward needs.

    Args:
      blocks, params: the network and its parameters.
      x: input batch ``(m, *in_shape)``.
      state: block state (running statistics), ``None`` for none.
      key: PRNG key for stochastic blocks in training mode (block ``i`` uses
        ``fold_in(key, i)``).
      train: training mode (dropout active, batch statistics).

    Returns:
      ``(out, new_state, caches)``.

    Raises:
      ValueError: naming the layer, on an input of the wrong shape or a missing
        key in training mode.
    """
    return as_model(blocks).forward(params, state, x, key, train)


def backward(
    blocks: Blocks, params: Any, caches: Any, dout: jax.Array
) -> tuple[Any, jax.Array]:
    """The reverse walk: from ``dout`` = dJ/d(out) to every block's gradients.

    Returns:
      ``(grads, dx)``: ``grads`` has the structure of ``params``; ``dx`` is
      dJ/dx for the network input.
    """
    return as_model(blocks).backward(params, caches, dout)


def _objective(model, params, x, y, loss, state, key, train, mask, l1, l2):
    """J = loss(out, y) + Ω(θ), the new state, and what the backward reads."""
    out, new_state, caches = model.forward(params, state, x, key, train)
    Y = _losses.targets(loss, out, y)
    J = loss.fn(out, Y, mask) + _losses.weight_penalty(params, l1, l2)
    return J, new_state, (out, Y, caches)


def loss_and_grad(
    blocks: Blocks,
    params: Any,
    x: jax.Array,
    y: Any,
    loss: "str | _losses.Loss",
    *,
    state: Any = None,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[tuple[jax.Array, Any], Any]:
    """J = loss(out, y) + Ω(θ) and ∂J/∂θ by manual backpropagation.

    The network's last block must produce what ``loss`` expects: logits for the
    fused cross-entropy/BCE, outputs otherwise.

    Returns:
      ``((J, new_state), grads)`` with ``grads`` shaped like ``params``.
    """
    loss = _losses.get(loss)
    model = as_model(blocks)
    J, new_state, (out, Y, caches) = _objective(
        model, params, x, y, loss, state, key, train, mask, l1, l2
    )
    grads, _ = model.backward(params, caches, loss.grad(out, Y, mask))
    if _losses.has_penalty(l1, l2):
        grads = jax.tree.map(
            jnp.add, grads, _losses.weight_penalty_grad(params, l1, l2)
        )
    return (J, new_state), grads


def loss_value(
    blocks: Blocks,
    params: Any,
    x: jax.Array,
    y: Any,
    loss: "str | _losses.Loss",
    *,
    state: Any = None,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[jax.Array, Any]:
    """J = loss(out, y) + Ω(θ) by the forward pass alone: the function that
    ``jax.grad`` differentiates (same arguments as :func:`loss_and_grad`).

    Returns:
      ``(J, new_state)``.
    """
    J, new_state, _ = _objective(
        as_model(blocks),
        params,
        x,
        y,
        _losses.get(loss),
        state,
        key,
        train,
        mask,
        l1,
        l2,
    )
    return J, new_state
