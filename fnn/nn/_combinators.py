"""Combinators: blocks made of blocks, each with its forward and backward.

A combinator is a :class:`Block` like any other: its ``params`` and ``state``
are lists with one entry per child (in the order of ``block.children``), and
its backward is the reverse walk of its children plus its own rule. No block
needs to know it is nested.

  * ``Sequential([f_1, ..., f_L])``: y = f_L(... f_1(x)); backward
    dx_{i-1} = f_iᵀ(dx_i), from dx_L = dy (Laurent, "Backpropagation
    algorithm"; Balvert, "Backpropagation" steps 1-4).
  * ``Residual(f)``: y = x + f(x), dx = dy + f'ᵀ(dy) (He et al., "Deep residual
    learning", 2016); ``Residual(f, P)``: y = P(x) + f(x), dx = P'ᵀ(dy) + f'ᵀ(dy).
  * ``Concat([f_1, ..., f_k])``: y = [f_1(x), ..., f_k(x)] along the last
    axis; backward splits dy into the branches' pieces and adds their dx.

Randomness: child ``i`` uses ``fold_in(key, i)`` in training mode.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._block import Block, ShapeError
from ._spec import builtin


def _layer_error(i: int, block: Block, err: Exception) -> ShapeError:
    return ShapeError(f"layer {i} ({block.name}): {err}")


def _child_keys(key, children, train):
    """One key per child (``fold_in(key, i)``), or ``None`` outside training."""
    if not train:
        return [None] * len(children)
    if key is None:
        for i, child in enumerate(children):
            if child.stochastic:
                raise ValueError(
                    f"layer {i} ({child.name}) is random in training mode and needs "
                    "a PRNG key: pass key=... (or train=False to evaluate)."
                )
        return [None] * len(children)
    return [jax.random.fold_in(key, i) for i in range(len(children))]


def _check_children(blocks, what) -> tuple[Block, ...]:
    blocks = tuple(blocks) if isinstance(blocks, list | tuple) else None
    if not blocks or not all(isinstance(b, Block) for b in blocks):
        raise ValueError(f"{what} expects a non-empty list of fnn.nn blocks.")
    return blocks


def _check_state(state, children):
    if state is None:  # no state given: nested combinators expand their own
        return [None if child.children else {} for child in children]
    if not isinstance(state, list | tuple) or len(state) != len(children):
        raise ValueError(
            f"state must be a list with one entry per block ({len(children)}), got "
            f"{type(state).__name__}"
            + (f" of length {len(state)}" if isinstance(state, list | tuple) else "")
            + "."
        )
    return state


def _check_params(params, children):
    if not isinstance(params, list | tuple) or len(params) != len(children):
        found = (
            f"{len(params)} entries"
            if isinstance(params, list | tuple)
            else type(params).__name__
        )
        raise ValueError(
            f"params must be a list with one entry per block ({len(children)}), "
            f"got {found}."
        )


def _combinator(name, children, init, forward, backward) -> Block:
    """A block made of ``children``: random when any child is."""
    stochastic = any(c.stochastic for c in children)
    return Block(name, init, forward, backward, stochastic, children=children)


def _walk_init(children, key, in_shape, dtype):
    params, state, shape = [], [], tuple(in_shape)
    for i, child in enumerate(children):
        try:
            p, s, shape = child.init(jax.random.fold_in(key, i), shape, dtype)
        except ShapeError as err:
            raise _layer_error(i, child, err) from None
        params.append(p)
        state.append(s)
    return params, state, tuple(shape)


def _branches_init(children, key, in_shape, dtype):
    """Initialise branches that all read the same input (Residual, Concat)."""
    params, state, shapes = [], [], []
    for i, child in enumerate(children):
        try:
            p, s, shape = child.init(jax.random.fold_in(key, i), in_shape, dtype)
        except ShapeError as err:
            raise _layer_error(i, child, err) from None
        params.append(p)
        state.append(s)
        shapes.append(tuple(shape))
    return params, state, shapes


def _branches_forward(children, params, state, x, key, train):
    """Run branches that all read ``x``: their outputs, states and caches."""
    _check_params(params, children)
    state = _check_state(state, children)
    keys = _child_keys(key, children, train)
    outs, new_state, caches = [], [], []
    for i, child in enumerate(children):
        try:
            y, s, cache = child.forward(params[i], state[i], x, keys[i], train)
        except ShapeError as err:
            raise _layer_error(i, child, err) from None
        outs.append(y)
        new_state.append(s)
        caches.append(cache)
    return outs, new_state, caches


@builtin
def Sequential(blocks: Sequence[Block]) -> Block:
    """The blocks in order: y = f_L(... f_2(f_1(x))).

    Forward keeps every child's cache; backward is the reverse walk
    ``dparams_i, d = f_i.backward(params_i, cache_i, d)`` for i = L, ..., 1,
    starting from d = dy.

    Args:
      blocks: the children, a non-empty list (they may be combinators).

    Returns:
      A :class:`Block` whose params and state are lists, one entry per child.
    """
    children = _check_children(blocks, "Sequential")

    def init(key, in_shape, dtype):
        return _walk_init(children, key, in_shape, dtype)

    def forward(params, state, x, key, train):
        _check_params(params, children)
        state = _check_state(state, children)
        keys = _child_keys(key, children, train)
        A, new_state, caches = x, [], []
        for i, child in enumerate(children):
            try:
                A, s, cache = child.forward(params[i], state[i], A, keys[i], train)
            except ShapeError as err:
                raise _layer_error(i, child, err) from None
            new_state.append(s)
            caches.append(cache)
        return A, new_state, caches

    def backward(params, caches, dy):
        grads, d = [None] * len(children), dy
        for i in reversed(range(len(children))):
            grads[i], d = children[i].backward(params[i], caches[i], d)
        return grads, d

    names = ", ".join(c.name for c in children)
    return _combinator(f"Sequential([{names}])", children, init, forward, backward)


@builtin
def Residual(block: Block, projection: Block | None = None) -> Block:
    """A residual connection: y = x + f(x), or y = P(x) + f(x) with a projection.

    Backward: the two paths' input gradients add, dx = dy + f'ᵀ(dy) (or
    P'ᵀ(dy) + f'ᵀ(dy)); dparams are the children's.

    Args:
      block: f, whose output shape equals its input shape (or P's output shape).
      projection: P, e.g. ``Dense(n)`` or a 1×1 ``Conv2D`` when the shapes differ.

    Returns:
      A :class:`Block` with params/state lists ``[f]`` or ``[f, P]``.

    References: He, Zhang, Ren and Sun, "Deep Residual Learning for Image
    Recognition" (2016).
    """
    children = _check_children(
        [block] if projection is None else [block, projection], "Residual"
    )

    def init(key, in_shape, dtype):
        params, state, shapes = _branches_init(children, key, in_shape, dtype)
        skip = shapes[1] if projection is not None else tuple(in_shape)
        if shapes[0] != skip:
            raise ShapeError(
                f"Residual adds f(x) of shape {shapes[0]} to "
                f"{'P(x)' if projection is not None else 'x'} of shape {skip}: "
                + (
                    "make the projection's output match."
                    if projection is not None
                    else "pass a projection block (e.g. Dense) to match them."
                )
            )
        return params, state, shapes[0]

    def forward(params, state, x, key, train):
        outs, new_state, caches = _branches_forward(
            children, params, state, x, key, train
        )
        skip = outs[1] if projection is not None else x
        return outs[0] + skip, new_state, caches

    def backward(params, caches, dy):
        grads, dxs = [], []
        for i, child in enumerate(children):
            g, dx = child.backward(params[i], caches[i], dy)
            grads.append(g)
            dxs.append(dx)
        skip = dxs[1] if projection is not None else dy
        return grads, dxs[0] + skip

    label = block.name if projection is None else f"{block.name}, {projection.name}"
    return _combinator(f"Residual({label})", children, init, forward, backward)


@builtin
def Concat(blocks: Sequence[Block]) -> Block:
    """Parallel branches on the same input, concatenated on the last axis.

    y = concat(f_1(x), ..., f_k(x), axis=−1); backward hands each branch its
    slice dy_j of dy, and dx = Σ_j f_j'ᵀ(dy_j).

    Args:
      blocks: the branches; their outputs must agree on every axis but the last.

    Returns:
      A :class:`Block` with params/state lists, one entry per branch.
    """
    children = _check_children(blocks, "Concat")

    def init(key, in_shape, dtype):
        params, state, shapes = _branches_init(children, key, in_shape, dtype)
        if len({shape[:-1] for shape in shapes}) != 1 or not all(shapes):
            raise ShapeError(
                f"Concat joins branch outputs on the last axis; their other axes "
                f"must agree, got {shapes}"
            )
        width = sum(shape[-1] for shape in shapes)
        return params, state, (*shapes[0][:-1], width)

    def forward(params, state, x, key, train):
        outs, new_state, caches = _branches_forward(
            children, params, state, x, key, train
        )
        # The split points travel in the cache as zero-size arrays: their static
        # shapes survive jit, where plain ints would become tracers.
        widths = [jnp.zeros((0, y.shape[-1]), jnp.int8) for y in outs]
        return jnp.concatenate(outs, axis=-1), new_state, (caches, widths)

    def backward(params, cache, dy):
        caches, widths = cache
        grads, dx, start = [], None, 0
        for i, child in enumerate(children):
            stop = start + widths[i].shape[-1]
            g, d = child.backward(params[i], caches[i], dy[..., start:stop])
            grads.append(g)
            dx = d if dx is None else dx + d
            start = stop
        return grads, dx

    names = ", ".join(c.name for c in children)
    return _combinator(f"Concat([{names}])", children, init, forward, backward)


def as_model(blocks: "Block | Sequence[Block]") -> Block:
    """One block for the model: a block as is, a list as ``Sequential(list)``."""
    if isinstance(blocks, Block):
        return blocks
    if isinstance(blocks, list | tuple) and blocks:
        return Sequential(list(blocks))
    raise ValueError(
        "blocks must be an fnn.nn block (e.g. Sequential) or a non-empty list of "
        f"blocks, got {type(blocks).__name__}."
    )
