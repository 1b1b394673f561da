"""The block contract: a layer is its forward and its backward, side by side.

A :class:`Block` is a record of three pure functions::

    params, state, out_shape = block.init(key, in_shape, dtype)
    y, new_state, cache      = block.forward(params, state, x, key, train)
    dparams, dx              = block.backward(params, cache, dy)

Shapes: ``in_shape``/``out_shape`` are per-example shapes (no batch axis);
``x`` is ``(m, *in_shape)``, ``y`` and ``dy`` are ``(m, *out_shape)``.

Invariants (tested for every block, in float64):
  * ``backward(params, cache, dy) == jax.vjp(lambda p, x: forward(p, state, x,
    key, train)[0], params, x)[1](dy)``: the hand-derived backward is the
    vector-Jacobian product of the forward;
  * ``dparams`` has exactly the structure of ``params`` (``{}`` for a block
    without parameters);
  * ``forward`` reads ``key`` only when ``block.stochastic`` and ``train``.

The network's manual backprop (:mod:`fnn.nn._network`) is one reverse walk over
blocks: adding a block means writing its forward and its backward, nothing else.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class ShapeError(ValueError):
    """An input of the wrong shape for a block; the network walk names the layer."""


class Block(NamedTuple):
    """A layer: ``init``, ``forward`` and ``backward`` (see the module docstring).

    Attributes:
      name: a short description, used in error messages (``"Dense(64, relu)"``).
      init: ``(key, in_shape, dtype) -> (params, state, out_shape)``.
      forward: ``(params, state, x, key, train) -> (y, new_state, cache)``.
      backward: ``(params, cache, dy) -> (dparams, dx)``.
      stochastic: the forward draws random numbers in training mode and then
        needs a ``key`` (dropout).
      spec: plain JSON data that rebuilds the block (``{"block": name, "args":
        {...}}``, see :func:`fnn.nn.to_spec`), or ``None`` when it cannot be
        described as data (a user block that is not registered).
      children: the blocks a combinator is made of (``Sequential``, ``Residual``,
        ``Concat``), in the order of its ``params`` list; ``()`` for a layer.
      in_shape: the per-example input shape when the block fixes it (a model
        from :func:`fnn.mlp`), so that :func:`fnn.nn.init` needs none.
    """

    name: str
    init: Callable[..., tuple[Any, Any, tuple[int, ...]]]
    forward: Callable[..., tuple[jax.Array, Any, Any]]
    backward: Callable[..., tuple[Any, jax.Array]]
    stochastic: bool = False
    spec: Any = None
    children: tuple["Block", ...] = ()
    in_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"Block({self.name})"

    def _identity(self) -> tuple:
        return (self.init, self.forward, self.backward, self.children, self.in_shape)

    # Two blocks are the same when they run the same functions (the spec is a
    # description of them): the key under which fit reuses its compiled epoch.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


def stateless(
    name: str,
    init: Callable[..., tuple[Any, tuple[int, ...]]],
    forward: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    backward: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]],
) -> Block:
    """A :class:`Block` from a deterministic, stateless layer: the one-line way to
    turn a user's forward and hand-derived backward into a block.

    Example, a learnable temperature ``y = x / τ`` (``dτ = −Σ dy·x/τ²``,
    ``dx = dy/τ``)::

        def init(key, in_shape, dtype):
            return {"tau": jnp.ones((), dtype)}, in_shape
        def forward(p, x):
            return x / p["tau"], x
        def backward(p, x, dy):
            return {"tau": -jnp.sum(dy * x) / p["tau"] ** 2}, dy / p["tau"]
        Temperature = fnn.nn.stateless("Temperature", init, forward, backward)
        fnn.nn.check_block(Temperature, (5,)).passed   # True

    Args:
      name: the block's name.
      init: ``(key, in_shape, dtype) -> (params, out_shape)``.
      forward: ``(params, x) -> (y, cache)``.
      backward: ``(params, cache, dy) -> (dparams, dx)``.
    """

    def block_init(key, in_shape, dtype):
        params, out_shape = init(key, in_shape, dtype)
        return params, {}, out_shape

    def block_forward(params, state, x, key, train):
        y, cache = forward(params, x)
        return y, state, cache

    return Block(name, block_init, block_forward, backward)
