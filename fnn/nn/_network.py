"""A network as a sequence of blocks: init, forward, and the manual backprop walk.

``blocks`` is a list of :class:`~fnn.nn.Block`; ``params`` and ``state`` are
lists with one entry per block (``{}`` for a block without any).

Manual backpropagation is one generic reverse walk (seed 001, "Backpropagation
algorithm"; seed 002, "Backpropagation" steps 1-4):

  1. forward pass, each block keeping its ``cache`` (Z, A_prev, masks, ...);
  2. the output error dJ/d(out) from the loss (fused with softmax/sigmoid);
  3. for blocks L, ..., 1: ``dparams_i, dx = block_i.backward(params_i, cache_i, dx)``;
  4. plus the penalty gradient on the weights.

No ``jax.grad``, ``jax.vjp`` or ``jax.jvp`` is used; everything runs under
``jax.jit`` and ``jax.vmap``.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import losses as _losses
from ._block import Block, ShapeError


def _layer_error(i: int, block: Block, err: ShapeError) -> ValueError:
    return ValueError(f"layer {i} ({block.name}): {err}")


def init(
    key: jax.Array, blocks: Sequence[Block], in_shape: Sequence[int], dtype=jnp.float32
) -> tuple[list, list]:
    """Initialise every block in turn, threading the per-example shape.

    Args:
      key: PRNG key; block ``i`` gets ``jax.random.fold_in(key, i)``.
      blocks: the network.
      in_shape: per-example input shape, e.g. ``(64,)`` or ``(8, 8, 1)``.
      dtype: parameter dtype.

    Returns:
      ``(params, state)``, lists with one entry per block.
    """
    params, state, shape = [], [], tuple(in_shape)
    for i, block in enumerate(blocks):
        try:
            p, s, shape = block.init(jax.random.fold_in(key, i), shape, dtype)
        except ShapeError as err:
            raise _layer_error(i, block, err) from None
        params.append(p)
        state.append(s)
    return params, state


def _layer_keys(key, blocks, train):
    if not train:
        return [None] * len(blocks)
    needs = [i for i, b in enumerate(blocks) if b.stochastic]
    if needs and key is None:
        i = needs[0]
        raise ValueError(
            f"layer {i} ({blocks[i].name}) is random in training mode and needs a "
            "PRNG key: pass key=... (or train=False to evaluate)."
        )
    return [
        None if key is None else jax.random.fold_in(key, i) for i in range(len(blocks))
    ]


def forward(
    blocks: Sequence[Block],
    params: Sequence[Any],
    x: jax.Array,
    *,
    state: Sequence[Any] | None = None,
    key: jax.Array | None = None,
    train: bool = False,
) -> tuple[jax.Array, list, list]:
    """Run the blocks in order, keeping what backward needs.

    Args:
      blocks, params: the network and its parameters (one entry per block).
      x: input batch ``(m, *in_shape)``.
      state: per-block state (running statistics), ``None`` for none.
      key: PRNG key for stochastic blocks in training mode (block ``i`` uses
        ``fold_in(key, i)``).
      train: training mode (dropout active, batch statistics).

    Returns:
      ``(out, new_state, caches)``.

    Raises:
      ValueError: naming the layer, on an input of the wrong shape or a missing
        key in training mode.
    """
    if len(params) != len(blocks):
        raise ValueError(f"params has {len(params)} entries for {len(blocks)} blocks.")
    state = [{}] * len(blocks) if state is None else state
    keys = _layer_keys(key, blocks, train)
    A, new_state, caches = x, [], []
    for i, (block, p, s, k) in enumerate(zip(blocks, params, state, keys, strict=True)):
        try:
            A, s, cache = block.forward(p, s, A, k, train)
        except ShapeError as err:
            raise _layer_error(i, block, err) from None
        new_state.append(s)
        caches.append(cache)
    return A, new_state, caches


def backward(
    blocks: Sequence[Block],
    params: Sequence[Any],
    caches: Sequence[Any],
    dout: jax.Array,
) -> tuple[list, jax.Array]:
    """The reverse walk: from ``dout`` = dJ/d(out) to every block's gradients.

    Returns:
      ``(grads, dx)``: ``grads`` has the structure of ``params``; ``dx`` is
      dJ/dx for the network input.
    """
    grads = [None] * len(blocks)
    d = dout
    for i in reversed(range(len(blocks))):
        grads[i], d = blocks[i].backward(params[i], caches[i], d)
    return grads, d


def loss_and_grad(
    blocks: Sequence[Block],
    params: Sequence[Any],
    x: jax.Array,
    y: Any,
    loss: "str | _losses.Loss",
    *,
    state: Sequence[Any] | None = None,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[tuple[jax.Array, list], list]:
    """J = loss(out, y) + Ω(θ) and ∂J/∂θ by manual backpropagation.

    The network's last block must produce what ``loss`` expects: logits for the
    fused cross-entropy/BCE, outputs otherwise.

    Returns:
      ``((J, new_state), grads)`` with ``grads`` shaped like ``params``.
    """
    loss = _losses.get(loss)
    out, new_state, caches = forward(
        blocks, params, x, state=state, key=key, train=train
    )
    Y = _losses.targets(loss, out, y)
    J = loss.fn(out, Y, mask) + _losses.weight_penalty(params, l1, l2)
    grads, _ = backward(blocks, params, caches, loss.grad(out, Y, mask))
    if l1 or l2:
        grads = jax.tree.map(
            jnp.add, grads, _losses.weight_penalty_grad(params, l1, l2)
        )
    return (J, new_state), grads
