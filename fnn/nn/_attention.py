"""Multi-head self-attention, forward and backward by hand.

Batch-first: ``X`` is ``(m, T, d)``; h heads of width d_h = d/h. Every projection
is a dense map of the last axis with ``W`` ``(d, d)`` and ``b`` ``(d,)``, except
that the key projection has no bias: b_k would add q_i·b_k to every score of row
i, a constant along the row that the softmax removes, so the output would not
depend on it and its gradient would be zero (PyTorch keeps one; load it by
dropping it).

Forward (Vaswani et al. 2017, §3.2), per head (heads split off the last axis,
``(m, T, d) → (m, h, T, d_h)``):

    Q = X W_q + b_q,   K = X W_k,   V = X W_v + b_v
    S = Q Kᵀ / √d_h                              (m, h, T, T)
    P = softmax_j(S) over the allowed keys j of each query i; P_ij = 0 elsewhere
    O = P V                                      (m, h, T, d_h) → (m, T, d)
    Y = O W_o + b_o                              (m, T, d)

Key j is allowed for query i when ``key_mask[b, j]`` (padding) and, if causal,
j ≤ i. A query with no allowed key (a fully masked row) gets P_i· = 0, so O_i = 0
and Y_i = b_o, and no error flows through it: finite values, never NaN, forward
and backward.

Backward, with dY ``(m, T, d)``:

    dW_o = Σ Oᵀ dY,   db_o = Σ dY,   dO = dY W_oᵀ
    dP = dO Vᵀ,       dV = Pᵀ dO
    dS = P ⊙ (dP − rowsum(dP ⊙ P))          (softmax Jacobian-vector product)
    dQ = dS K / √d_h,  dK = dSᵀ Q / √d_h
    dW_• = Σ Xᵀ d•,   db_• = Σ d•  (• = Q, K, V, heads merged back; no db_k)
    dX = dQ W_qᵀ + dK W_kᵀ + dV W_vᵀ

(the sums Σ run over the batch and the positions). Masked entries have P = 0 and
therefore dS = 0: the mask needs no term of its own.

References: Vaswani et al. (2017), "Attention Is All You Need", §3.2; Karpathy,
llm.c ``train_gpt2.c`` (``attention_forward``/``attention_backward``).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import initializers as _initializers
from ._block import Block, ShapeError
from ._spec import builtin

_PROJECTIONS = ("q", "k", "v", "o")


class AttentionCache(NamedTuple):
    """What the backward reads: the input, the per-head Q, K, V, the attention
    weights P and the merged head outputs O."""

    X: jax.Array  # (m, T, d)
    Q: jax.Array  # (m, h, T, d_h)
    K: jax.Array  # (m, h, T, d_h)
    V: jax.Array  # (m, h, T, d_h)
    P: jax.Array  # (m, h, T, T)
    O: jax.Array  # (m, T, d)


def _split_heads(A, num_heads):
    m, T, d = A.shape
    return A.reshape(m, T, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(A):
    m, h, T, d_h = A.shape
    return A.transpose(0, 2, 1, 3).reshape(m, T, h * d_h)


def _dense(p, A):
    return A @ p["W"] + p["b"] if "b" in p else A @ p["W"]


def _dense_grads(p, A, dZ):
    """dW = Σ Aᵀ dZ and db = Σ dZ over the batch and the positions."""
    grads = {"W": jnp.tensordot(A, dZ, axes=((0, 1), (0, 1)))}
    if "b" in p:
        grads["b"] = jnp.sum(dZ, axis=(0, 1))
    return grads


def _allowed(T, causal, key_mask):
    """Boolean (m or 1, 1, T, T): may query i attend to key j?"""
    allowed = jnp.ones((1, 1, T, T), bool)
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((T, T), bool))[None, None]
    if key_mask is not None:
        allowed = allowed & jnp.asarray(key_mask, bool)[:, None, None, :]
    return allowed


def _masked_softmax(S, allowed):
    """softmax over the allowed entries of each row; 0 at masked entries and on
    rows with no allowed entry. Masked entries are replaced by the row maximum
    before exp (a finite, constant value), so nothing overflows."""
    row_max = jnp.max(jnp.where(allowed, S, -jnp.inf), axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    E = jnp.where(allowed, jnp.exp(jnp.where(allowed, S, row_max) - row_max), 0.0)
    denom = jnp.sum(E, axis=-1, keepdims=True)
    return E / jnp.where(denom > 0, denom, 1.0)


def attention_forward(
    params: dict,
    X: jax.Array,
    *,
    num_heads: int,
    causal: bool = False,
    key_mask: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, AttentionCache]:
    """Multi-head self-attention Y = MHA(X) (equations in the module docstring).

    Args:
      params: ``{"q", "k", "v", "o"}``, each ``{"W": (d, d), "b": (d,)}``, but
        ``"k"`` without ``"b"``.
      X: ``(m, T, d)``.
      num_heads: h, dividing d.
      causal: query i attends to keys j ≤ i only.
      key_mask: optional boolean ``(m, T)``, True for the real tokens; padded keys
        get no attention. A query whose keys are all masked outputs ``b_o``.

    Returns:
      ``(Y, cache)``: Y ``(m, T, d)`` and the :class:`AttentionCache` that
      :func:`attention_backward` reads.
    """
    m, T, d = X.shape
    if key_mask is not None:
        key_mask = jnp.asarray(key_mask)
        if key_mask.shape != (m, T):
            raise ShapeError(
                f"key_mask must have shape (m, T) = {(m, T)} for X {X.shape}, got "
                f"{key_mask.shape}."
            )
    d_h = d // num_heads
    Q, K, V = (_split_heads(_dense(params[n], X), num_heads) for n in "qkv")
    S = jnp.einsum("bhid,bhjd->bhij", Q, K) / math.sqrt(d_h)
    P = _masked_softmax(S, _allowed(T, causal, key_mask))
    O = _merge_heads(jnp.einsum("bhij,bhjd->bhid", P, V))
    return _dense(params["o"], O), AttentionCache(X, Q, K, V, P, O)


def attention_backward(
    params: dict, cache: AttentionCache, dY: jax.Array
) -> tuple[dict, jax.Array]:
    """The hand-derived backward of :func:`attention_forward`.

    Args:
      params: as for the forward.
      cache: the forward's cache.
      dY: ``(m, T, d)``.

    Returns:
      ``(dparams, dX)``: ``dparams`` of the structure of ``params``, dX ``(m, T, d)``.
    """
    X, Q, K, V, P, O = cache
    num_heads, d_h = Q.shape[1], Q.shape[3]
    grads = {"o": _dense_grads(params["o"], O, dY)}
    dO = _split_heads(dY @ params["o"]["W"].T, num_heads)
    dP = jnp.einsum("bhid,bhjd->bhij", dO, V)
    dV = jnp.einsum("bhij,bhid->bhjd", P, dO)
    dS = P * (dP - jnp.sum(dP * P, axis=-1, keepdims=True))
    dQ = jnp.einsum("bhij,bhjd->bhid", dS, K) / math.sqrt(d_h)
    dK = jnp.einsum("bhij,bhid->bhjd", dS, Q) / math.sqrt(d_h)
    dX = jnp.zeros_like(X)
    for name, dZ in (("q", dQ), ("k", dK), ("v", dV)):
        dZ = _merge_heads(dZ)
        grads[name] = _dense_grads(params[name], X, dZ)
        dX = dX + dZ @ params[name]["W"].T
    return {n: grads[n] for n in _PROJECTIONS}, dX


@builtin
def MultiHeadAttention(
    num_heads: int,
    causal: bool = False,
    *,
    W_init="glorot_uniform",
    b_init="zeros",
) -> Block:
    """Multi-head self-attention on sequences ``(m, T, d)`` (module docstring).

    The block's input is the sequence alone. With ``causal=True`` position t sees
    positions ≤ t only (a language model). A key padding mask does not travel
    through the block's input: a causal model pads at the end of the sequences
    (a real token never attends to later padding) and masks the loss; a
    bidirectional model over padded batches calls the functional core
    :func:`attention_forward` / :func:`attention_backward` with ``key_mask``.

    Args:
      num_heads: h; the width d of the input must be a multiple of h.
      causal: mask the keys after each query.
      W_init, b_init: initializers of the four projections (default Glorot
        uniform and zeros, PyTorch's ``nn.MultiheadAttention`` in-projection).

    Returns:
      A :class:`Block` with params ``{"q", "k", "v", "o"}``, each
      ``{"W": (d, d), "b": (d,)}`` except ``"k"``, which has ``"W"`` only (see
      the module docstring); input and output ``(m, T, d)``.

    References: Vaswani et al. (2017), "Attention Is All You Need", §3.2.
    """
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(
            f"MultiHeadAttention num_heads must be a positive int, got {num_heads!r}."
        )
    W_init, b_init = _initializers.get(W_init), _initializers.get(b_init)
    label = f"MultiHeadAttention({num_heads}" + (", causal)" if causal else ")")

    def init(key, in_shape, dtype):
        if len(in_shape) != 2:
            raise ShapeError(
                f"{label} expects sequences (T, d) per example, got {tuple(in_shape)}"
            )
        d = in_shape[-1]
        if d % num_heads:
            raise ShapeError(
                f"{label}: width d = {d} is not a multiple of num_heads = "
                f"{num_heads}; choose d = num_heads·d_head."
            )
        params = {}
        for i, name in enumerate(_PROJECTIONS):
            k_W, k_b = jax.random.split(jax.random.fold_in(key, i))
            params[name] = {"W": W_init(k_W, (d, d), dtype)}
            if name != "k":
                params[name]["b"] = b_init(k_b, (d,), dtype)
        return params, {}, tuple(in_shape)

    def forward(params, state, X, key, train):
        d = params["q"]["W"].shape[0]
        if X.ndim != 3 or X.shape[-1] != d:
            raise ShapeError(f"{label} expects input (m, T, {d}), got {X.shape}")
        Y, cache = attention_forward(params, X, num_heads=num_heads, causal=causal)
        return Y, state, cache

    def backward(params, cache, dY):
        return attention_backward(params, cache, dY)

    return Block(label, init, forward, backward)
