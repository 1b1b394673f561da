"""Per-example gradients from the batch backward pass, without re-running the
forward per example.

The batch loss is the mean of the examples' losses, J = (1/m) Σ_i ℓ_i + Ω(θ),
so the batch gradient is the mean of the per-example gradients

    g_i = ∂/∂θ [ℓ_i(θ) + Ω(θ)],      ∂J/∂θ = (1/m) Σ_i g_i.

Each g_i is the gradient of example i's *own* loss (no 1/m; the weight penalty
Ω counted once per example), the quantity that per-example clipping (DP-SGD)
and gradient-noise statistics need.

For a dense layer (Z = A_prev W + b, batch-first) the batch backward already
holds everything: the cache keeps A_prev (m, n_in) and Z (m, n_out), the
backward forms dZ (m, n_out) row by row, and the batch dW = A_prevᵀ dZ is the
sum over rows of the outer products A_prev[i]ᵀ dZ[i]. Keeping the rows apart
instead of summing them gives every example's gradient at once:

    dZ_i  = dA_i ⊙ ψ'(Z_i)                    (m, n_out)
    dW_i  = A_prev[i]ᵀ dZ_i                   (m, n_in, n_out)   einsum "mi,mo->mio"
    db_i  = dZ_i                              (m, n_out)
    dA_prev = dZ Wᵀ                           (m, n_in), unchanged

with dA_i = ∂ℓ_i/∂out_i at the output (the loss's own gradient on one row,
without the batch's 1/m). One forward and one backward for the whole batch;
``jax.vmap(jax.grad(...))`` differentiates m single-example copies of the
network instead.

Any other model (``blocks=``) uses its blocks' own backward rules: the batch
forward is run once, and the model's backward is mapped (``jax.vmap``) over the
examples' rows of the caches, each row a batch of one. The batch axis of every
cache leaf is found from the shapes (a forward traced at batch size m + 1);
leaves without one (running statistics, shared constants) are shared by every
example. For a dense layer the mapped backward is exactly the einsum above.

Invariants (tested in float64 against ``jax.vmap(jax.grad(...))``):
  * the result has the structure of ``params`` with a leading axis m on every
    leaf;
  * without ``mask``, the mean over the leading axis is :func:`fnn.backprop`'s
    gradient; with a ``mask``, the masked rows are zero and
    Σ_i mask_i g_i / Σ_i mask_i is the batch gradient.

A block whose forward mixes the examples of a batch (BatchNorm in training
mode) has no per-example gradient in this sense: fnn's BatchNorm raises; a user
block must treat the rows of its input independently.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from . import activations as _activations
from . import losses as _losses
from . import nn as _nn
from ._mlp import _block_model, _setup
from ._tree import keystr


def _output_errors(loss: _losses.Loss, out: jax.Array, Y: jax.Array) -> jax.Array:
    """∂ℓ_i/∂out_i for every row: the loss's gradient on a batch of one."""
    return jax.vmap(lambda o, t: loss.grad(o[None], t[None])[0])(out, Y)


def _finish(grads, params, l1, l2, mask, m):
    """Add the penalty gradient to every example and zero the padded rows."""
    if _losses.has_penalty(l1, l2):
        penalty = _losses.weight_penalty_grad(params, l1, l2)
        grads = jax.tree.map(lambda g, p: g + p[None], grads, penalty)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (m,):
            raise ValueError(
                f"mask must have shape ({m},) (one flag per example), got "
                f"{mask.shape}."
            )
        grads = jax.tree.map(
            lambda g: g * mask.astype(g.dtype).reshape((m,) + (1,) * (g.ndim - 1)),
            grads,
        )
    return grads


def _mixing_blocks(block: _nn.Block, where: str):
    """Yield ``(where, block)`` for every BatchNorm inside ``block``."""
    spec = block.spec
    if (spec is not None and spec.get("block") == "BatchNorm") or (
        not block.children and block.name.startswith("BatchNorm")
    ):
        yield where, block
    for i, child in enumerate(block.children):
        yield from _mixing_blocks(child, f"{where}[{i}]" if where else f"layer {i}")


def _check_per_example(model: _nn.Block, train: bool) -> None:
    if not train:
        return
    for where, block in _mixing_blocks(model, ""):
        raise ValueError(
            f"per_example_grads: {where or 'the model'} ({block.name}) normalises "
            "with the statistics of the whole batch in training mode, so one "
            "example's output depends on the others and has no gradient of its "
            "own. Use train=False (running statistics), or LayerNorm/RMSNorm, "
            "which normalise each example alone."
        )


def _batch_axes(model, params, state, x, key, train, caches):
    """How every cache leaf holds the examples, found by tracing the forward at
    batch size m + 1: ``None`` (shared by all examples), ``("axis", k)`` (one
    slice per example along axis k) or ``("rows", r)`` (the leading axis holds
    r rows per example, example after example: im2col patches)."""
    m = x.shape[0]
    bigger = jax.ShapeDtypeStruct((m + 1, *x.shape[1:]), x.dtype)
    other = jax.eval_shape(
        lambda xx: model.forward(params, state, xx, key, train)[2], bigger
    )
    leaves, treedef = jax.tree_util.tree_flatten_with_path(caches)
    other_leaves = treedef.flatten_up_to(other)
    how = []
    for (path, leaf), big in zip(leaves, other_leaves, strict=True):
        dtype = getattr(leaf, "dtype", None)
        if train and dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"per_example_grads: the cache leaf {keystr(path)} is a PRNG key: a "
                "block (Recompute around a random block) draws its random numbers "
                "again in the backward, and one example alone would get other "
                "draws than in the batch. Use train=False, or keep the random "
                "blocks outside Recompute."
            )
        s, t = jnp.shape(leaf), tuple(big.shape)
        changed = [k for k, (a, b) in enumerate(zip(s, t, strict=False)) if a != b]
        if len(s) == len(t) and not changed:
            how.append(None)
            continue
        if len(s) == len(t) and len(changed) == 1:
            k = changed[0]
            if s[k] == m and t[k] == m + 1:
                how.append(("axis", k))
                continue
            r = s[k] // m
            if k == 0 and s[0] == m * r and t[0] == (m + 1) * r:
                how.append(("rows", r))
                continue
        raise ValueError(
            f"per_example_grads: the cache leaf {keystr(path)} has shape {s} for a "
            f"batch of {m} and {t} for {m + 1}: a block keeps values that are not "
            "one slice per example, so its backward cannot be split by example."
        )
    return treedef, how


def _blocks_per_example(model, params, x, y, loss, state, key, train):
    _check_per_example(model, train)
    out, _, caches = model.forward(params, state, x, key, train)
    Y = _losses.targets(loss, out, y)
    dout = _output_errors(loss, out, Y)
    treedef, how = _batch_axes(model, params, state, x, key, train, caches)
    m = x.shape[0]
    leaves = treedef.flatten_up_to(caches)
    # Map over axis k, or over the (m, r, ...) view of merged rows.
    mapped = [
        c.reshape(m, h[1], *c.shape[1:]) if h is not None and h[0] == "rows" else c
        for c, h in zip(leaves, how, strict=True)
    ]
    in_axes = [
        None if h is None else (h[1] if h[0] == "axis" else 0) for h in how
    ]

    def one(cache_leaves, d):
        # Each example as a batch of one: put its batch axis back.
        restored = [
            c if h is None
            else jnp.expand_dims(c, h[1]) if h[0] == "axis"
            else c  # r rows: already a batch of one example's rows
            for c, h in zip(cache_leaves, how, strict=True)
        ]  # fmt: skip
        cache = treedef.unflatten(restored)
        return model.backward(params, cache, d[None])[0]

    return jax.vmap(one, in_axes=(in_axes, 0))(mapped, dout)


def _mlp_per_example(params, x, y, activation, loss, output, drop_rate, key, train):
    loss_obj, x, y, blocks, block_params, dense_at = _setup(
        params, x, y, activation, loss, output, drop_rate
    )
    if loss_obj.fused_output is not None:
        last = _activations.identity()
    else:
        last = _activations.get("identity" if output is None else output)
    hidden = _activations.get(activation)
    out, _, caches = _nn.forward(blocks, block_params, x, key=key, train=train)
    Y = _losses.targets(loss_obj, out, y)
    dA = _output_errors(loss_obj, out, Y)  # (m, n_L): no 1/m
    grads = [None] * len(dense_at)
    for j in reversed(range(len(blocks))):
        if j in dense_at:
            layer = dense_at.index(j)
            act = last if layer == len(dense_at) - 1 else hidden
            A_prev, Z = caches[j]
            dZ = act.vjp(Z, dA)  # (m, n_out)
            grads[layer] = {
                "W": jnp.einsum("mi,mo->mio", A_prev, dZ),  # A_prev[i]ᵀ dZ[i]
                "b": dZ,
            }
            if j > 0:
                dA = dZ @ block_params[j]["W"].T
        else:  # dropout: an elementwise mask, row by row already
            _, dA = blocks[j].backward(block_params[j], caches[j], dA)
    return grads, x.shape[0]


def per_example_grads(
    params: Any,
    x: jax.Array,
    y: Any,
    *,
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
) -> Any:
    """Every example's gradient g_i = ∂/∂θ [ℓ_i + Ω(θ)] from one batch backward.

    For dense layers, ``dW_i = A_prev[i]ᵀ dZ_i`` and ``db_i = dZ_i`` from the
    batch pass's cached ``A_prev``, ``Z`` and its ``dZ`` rows (see the module
    docstring); other blocks map their own backward over the examples' cache
    rows. Same keywords as :func:`fnn.backprop`.

    Scaling: the batch loss is the mean, J = (1/m) Σ ℓ_i + Ω, so g_i is the
    gradient of example i's own loss (not divided by m) plus the penalty
    gradient; the mean of the g_i over i is ``fnn.backprop``'s gradient.

    Args:
      params: MLP parameters ``[{"W": (n_{l-1}, n_l), "b": (n_l,)}, ...]``, or
        the parameters of ``blocks``.
      x: ``(m, n_0)`` inputs (with ``blocks``: ``(m, *in_shape)``); one
        ``(n_0,)`` example counts as m = 1.
      y: the targets, as for :func:`fnn.loss`.
      activation, loss, output, l1, l2, drop_rate, key, train: as in
        :func:`fnn.backprop` (with dropout, each example's gradient uses the
        batch's masks).
      mask: optional ``(m,)`` booleans of a padded batch: padded rows get zero
        gradients, and Σ_i mask_i g_i / Σ_i mask_i is the batch gradient.
      blocks, state: a model and its state instead of the MLP form.

    Returns:
      A pytree with the structure of ``params``; every leaf has a leading axis
      m: leaf ``(*shape)`` becomes ``(m, *shape)``.

    Raises:
      ValueError: a block whose forward mixes the examples (BatchNorm in
        training mode), naming the layer; a cache that is not one row per
        example; a mask of the wrong shape.

    References: the article "Deep Learning" (January 2020), section 4,
    "Backpropagation" (the per-layer dW = A_prevᵀ dZ); Goodfellow, "Efficient
    Per-Example Gradient Computations", 2015; Abadi et al., "Deep Learning with
    Differential Privacy", 2016 (their use in DP-SGD).
    """
    if blocks is not None:
        model = _block_model(
            blocks,
            "per_example_grads",
            activation=activation,
            output=output,
            drop_rate=drop_rate,
        )
        x = jnp.asarray(x)
        grads = _blocks_per_example(
            model, params, x, y, _losses.get(loss), state, key, train
        )
        m = x.shape[0]
    else:
        grads, m = _mlp_per_example(
            params, x, y, activation, loss, output, drop_rate, key, train
        )
    return _finish(grads, params, l1, l2, mask, m)

