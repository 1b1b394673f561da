"""Sequence models built from fnn's blocks by composition: a small GPT and an
LSTM language model.

Both map integer token ids ``(m, T)`` to next-token logits ``(m, T, V)``, to be
trained with the token-mean sequence cross-entropy. Every block inside has its
backward next to its forward, so the whole model backpropagates by hand
(:func:`fnn.nn.backward`, :func:`fnn.backprop` with ``blocks=``); nothing here
adds a rule of its own.

Every block is built with plain-data arguments (the embeddings start from the
``"normal"`` initializer, N(0, 0.05²)), so :func:`fnn.nn.to_spec` describes the
models and :func:`fnn.checkpoint.save_model` stores them.

The GPT is the pre-norm transformer of GPT-2 at toy size::

    H⁰ = E[ids] + P[:T]
    Hˡ' = Hˡ⁻¹ + Attn(LN(Hˡ⁻¹))                 (causal multi-head self-attention)
    Hˡ  = Hˡ' + W₂ gelu(W₁ LN(Hˡ') + b₁) + b₂    (position-wise MLP, width 4d)
    logits = LN(H^L) W_out + b_out

References: Vaswani et al. (2017), "Attention Is All You Need"; Radford et al.
(2019), "Language Models are Unsupervised Multitask Learners" (GPT-2: pre-norm,
learned positions, GELU MLP of width 4d); Hochreiter & Schmidhuber (1997), "Long
Short-Term Memory".
"""

import numpy as np

from . import nn

__all__ = ["gpt", "lstm_lm", "transformer_block"]


def _check_positive(where: str, **values) -> None:
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 1
        ):
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}.")


_RECOMPUTE = (False, True, "attention", "mlp")


def _check_recompute(where: str, recompute) -> tuple[bool, bool]:
    """``(attention, mlp)``: which branches ``recompute`` wraps in Recompute."""
    if not any(recompute is r or (isinstance(r, str) and recompute == r)
               for r in _RECOMPUTE):
        raise ValueError(
            f"{where}: recompute must be False, True, 'attention' or 'mlp', got "
            f"{recompute!r}."
        )
    return recompute in (True, "attention"), recompute in (True, "mlp")


def transformer_block(
    d: int, heads: int, *, causal: bool = True, recompute: bool | str = False
) -> nn.Block:
    """One pre-norm transformer block on ``(m, T, d)``:
    ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP of width 4d.

    Args:
      d: width (a multiple of ``heads``).
      heads: attention heads.
      causal: position t attends to positions ≤ t only.
      recompute: recompute activations in the backward instead of storing them
        (:func:`fnn.nn.Recompute`): ``True`` for both branches, ``"attention"``
        or ``"mlp"`` for one, ``False`` (default) for none. Same values and
        gradients; a wrapped branch keeps only its input between forward and
        backward (the attention branch drops Q, K, V, the (m, h, T, T)
        weights and the head outputs; the MLP branch the (m, T, 4d) hidden
        layer before and after the GELU) and runs its forward twice.

    Returns:
      A ``Sequential`` of two ``Residual`` blocks; input and output ``(m, T, d)``.
      With recompute, the wrapped branch is ``Recompute(Sequential([...]))``
      and its params entry one list deeper.
    """
    _check_positive("transformer_block", d=d, heads=heads)
    if d % heads:
        raise ValueError(
            f"transformer_block: width d={d} is not a multiple of heads={heads}."
        )
    redo_attention, redo_mlp = _check_recompute("transformer_block", recompute)
    attention = nn.Sequential(
        [nn.LayerNorm(axis=-1), nn.MultiHeadAttention(heads, causal=causal)]
    )
    mlp = nn.Sequential([nn.LayerNorm(axis=-1), nn.Dense(4 * d, "gelu"), nn.Dense(d)])
    return nn.Sequential(
        [
            nn.Residual(nn.Recompute(attention) if redo_attention else attention),
            nn.Residual(nn.Recompute(mlp) if redo_mlp else mlp),
        ]
    )


def gpt(
    vocab: int,
    d: int,
    heads: int,
    layers: int,
    context: int,
    *,
    recompute: bool | str = False,
) -> nn.Block:
    """A small decoder-only transformer (GPT) language model.

    Args:
      vocab: V, the number of token ids.
      d: model width (a multiple of ``heads``).
      heads: attention heads per layer.
      layers: number of transformer blocks.
      context: T_max, the longest sequence (the positional table's length).
      recompute: recompute the attention and/or MLP activations of every
        transformer block in the backward (``True``, ``"attention"``,
        ``"mlp"``; default ``False``), see :func:`transformer_block`. Same
        loss and gradients as without; measured on a training step of width
        128, 4 heads, 4 layers, context 128, batch 32 (float32, CPU, manual
        backward), XLA's compiled temporary memory falls from 244 MB to
        64.7 MB for about 13% more time (``benchmarks/results/sequence.md``).

    Returns:
      A ``Sequential``: ``Embedding(V, d)``, ``PositionalEmbedding(context, d)``,
      ``layers`` × :func:`transformer_block`, ``LayerNorm``, ``Dense(V)``; input
      ids ``(m, T)`` with T ≤ context (``in_shape=(T,)`` for
      :func:`fnn.nn.init`), output logits ``(m, T, V)``. Position t of the output
      depends on the ids at positions ≤ t only.
    """
    _check_positive(
        "gpt", vocab=vocab, d=d, heads=heads, layers=layers, context=context
    )
    _check_recompute("gpt", recompute)
    if d % heads:
        raise ValueError(f"gpt: width d={d} is not a multiple of heads={heads}.")
    return nn.Sequential(
        [
            nn.Embedding(vocab, d, W_init="normal"),
            nn.PositionalEmbedding(context, d),
            *[
                transformer_block(d, heads, recompute=recompute)
                for _ in range(layers)
            ],
            nn.LayerNorm(axis=-1),
            nn.Dense(vocab),
        ]
    )


def lstm_lm(vocab: int, d: int, hidden: int, layers: int = 1) -> nn.Block:
    """An LSTM language model: embedding, stacked LSTMs, a linear read-out.

    Args:
      vocab: V, the number of token ids.
      d: embedding width.
      hidden: LSTM state width.
      layers: number of stacked LSTM layers.

    Returns:
      A ``Sequential``: ``Embedding(V, d)``, ``layers`` × ``LSTM(hidden)``,
      ``Dense(V)``; input ids ``(m, T)``, output logits ``(m, T, V)``.
    """
    _check_positive("lstm_lm", vocab=vocab, d=d, hidden=hidden, layers=layers)
    return nn.Sequential(
        [
            nn.Embedding(vocab, d, W_init="normal"),
            *[nn.LSTM(hidden) for _ in range(layers)],
            nn.Dense(vocab),
        ]
    )
