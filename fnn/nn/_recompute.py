"""Recomputation: a block that stores its input and re-runs its forward in the
backward, trading compute for activation memory.

``Recompute(f)`` computes what ``f`` computes, forward and backward:

    forward:   y = f(θ, x);            cache = (x, state, key)   (f's cache dropped)
    backward:  _, _, cache_f = f.forward(θ, state, x, key, train)   (run again)
               dθ, dx = f.backward(θ, cache_f, dy)

so between the forward and the backward only the input x of the wrapped block
stays alive, instead of every intermediate its backward reads (for a transformer
block's attention: Q, K, V, the (m, h, T, T) attention weights and the head
outputs; for its MLP: both LayerNorm caches and the (m, T, 4d) hidden layer
before and after the GELU). The price is one more forward pass of the wrapped
block per training step. This is llm.c's ``recompute`` switch and the
gradient checkpointing of Chen et al. (2016).

Invariants:
  * ``Recompute(f)`` initialises like ``f`` from the same key, with params and
    state ``[f's params]``, ``[f's state]`` (one entry, as every combinator);
  * its forward output, new state and backward ``(dparams, dx)`` are ``f``'s
    on the same inputs (same key, so dropout draws the same mask), to
    rounding: XLA may fuse the re-run differently;
  * under ``jax.jit`` the re-run forward is kept apart from the first one:
    its inputs are made to depend on ``dy`` (a barrier and an exact zero
    computed from ``dy``, see :func:`_after`), so XLA can neither merge the two
    forwards (common subexpression elimination would undo the saving) nor
    schedule the re-run before the error ``dy`` reaches the block;
  * the forward is also wrapped in ``jax.checkpoint``, so ``jax.grad`` of a model
    holding ``Recompute`` blocks asks for recomputation in the same places.
    (``jax.checkpoint`` relies on ``lax.optimization_barrier`` alone, which
    XLA's CPU compiler drops: on CPU autodiff then stores the activations
    anyway, see ``benchmarks/results/sequence.md``.)

Measured on a GPT training step (width 128, 4 heads, 4 layers, context 128,
batch 32, float32, AdamW; ``benchmarks/sequence.py`` on a 2-core CPU), XLA's
compiled temporary memory with the manual backward falls from 244 MB to
64.7 MB with ``fnn.models.gpt(..., recompute=True)`` (73% saved), for about
13% more time per step in that run; ``jax.grad`` needs 338 MB, with or
without ``jax.checkpoint`` on CPU. ``benchmarks/results/sequence.md`` has the
latest run.

References: Chen, Xu, Zhang and Guestrin (2016), "Training Deep Nets with
Sublinear Memory Cost"; Karpathy, llm.c ``train_gpt2.cu`` (``recompute``: the
GELU and LayerNorm outputs recomputed in the backward).
"""

import jax
import jax.numpy as jnp

from ._block import Block, ShapeError
from ._combinators import _check_params, _check_state
from ._spec import builtin


def _train_marker(train: bool) -> jax.Array:
    # The training flag travels in the cache as a zero-size array: its static
    # shape survives jit, where a Python bool leaf would become a tracer.
    return jnp.zeros((1 if train else 0, 0), jnp.int8)


def _after(dy: jax.Array, tree):
    """``tree`` unchanged, but computed from ``dy``: what the re-run forward reads.

    ``lax.optimization_barrier`` keeps XLA from merging the re-run forward with
    the first one (common subexpression elimination would undo the saving) on
    backends that honour it; XLA's CPU compiler drops barriers, so every
    floating leaf also subtracts z = min(|dy₀|, 0), a zero that the compiler
    cannot fold away (it is NaN when dy₀ is). ``a − (+0) = a`` bit for bit,
    signed zeros included, so the values are untouched; the re-run then
    depends on ``dy`` and can neither be merged with the forward nor be
    scheduled before the error reaches the block.
    """
    if jnp.size(dy) == 0:  # an empty batch: nothing to tie to, nothing stored
        return jax.lax.optimization_barrier(tree)
    dy0 = jnp.ravel(dy)[0]
    tree, dy0 = jax.lax.optimization_barrier((tree, dy0))
    zero = jnp.minimum(jnp.abs(dy0), 0)

    def tie(leaf):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return leaf - zero.astype(jnp.result_type(leaf))
        return leaf

    return jax.tree.map(tie, tree)


@builtin
def Recompute(block: Block) -> Block:
    """``block``, with its activations recomputed in the backward instead of
    stored.

    Forward: y = f(θ, x), keeping only (x, state, key) as cache. Backward: run
    f's forward again on the cached input to rebuild its cache, then f's
    backward: dθ, dx = f'ᵀ(dy). Same results as ``block``, less memory between
    forward and backward, one more forward pass of ``block``.

    Args:
      block: f, any block (a layer or a combinator; e.g. the attention or the
        MLP branch of a transformer block).

    Returns:
      A :class:`Block` with params/state lists ``[f's]``, input and output
      shapes those of ``block``.

    Raises:
      ValueError: ``block`` is not an fnn.nn block.

    References: Chen, Xu, Zhang and Guestrin (2016), "Training Deep Nets with
    Sublinear Memory Cost"; Karpathy, llm.c (``recompute``).
    """
    if not isinstance(block, Block):
        raise ValueError(
            f"Recompute expects an fnn.nn block (e.g. a Sequential), got "
            f"{type(block).__name__}."
        )
    children = (block,)

    def init(key, in_shape, dtype):
        try:
            params, state, shape = block.init(key, in_shape, dtype)
        except ShapeError as err:
            raise ShapeError(f"Recompute({block.name}): {err}") from None
        return [params], [state], shape

    def forward(params, state, x, key, train):
        _check_params(params, children)
        state = _check_state(state, children)

        # Only (y, new state) leave the checkpointed function: its own cache is
        # dropped here and rebuilt in the backward.
        def run(p, s, x, key):
            y, new_state, _ = block.forward(p, s, x, key, train)
            return y, new_state

        try:
            y, new_state = jax.checkpoint(run)(params[0], state[0], x, key)
        except ShapeError as err:
            raise ShapeError(f"Recompute({block.name}): {err}") from None
        return y, [new_state], (x, state[0], key, _train_marker(train))

    def backward(params, cache, dy):
        x, state, key, marker = cache
        train = marker.shape[0] == 1
        p, x = _after(dy, (params[0], x))
        _, _, inner_cache = block.forward(p, state, x, key, train)
        grads, dx = block.backward(p, inner_cache, dy)
        return [grads], dx

    return Block(
        f"Recompute({block.name})",
        init,
        forward,
        backward,
        block.stochastic,
        children=children,
    )
