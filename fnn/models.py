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


def transformer_block(d: int, heads: int, *, causal: bool = True) -> nn.Block:
    """One pre-norm transformer block on ``(m, T, d)``:
    ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP of width 4d.

    Returns:
      A ``Sequential`` of two ``Residual`` blocks; input and output ``(m, T, d)``.
    """
    _check_positive("transformer_block", d=d, heads=heads)
    if d % heads:
        raise ValueError(
            f"transformer_block: width d={d} is not a multiple of heads={heads}."
        )
    return nn.Sequential(
        [
            nn.Residual(
                nn.Sequential(
                    [
                        nn.LayerNorm(axis=-1),
                        nn.MultiHeadAttention(heads, causal=causal),
                    ]
                )
            ),
            nn.Residual(
                nn.Sequential(
                    [nn.LayerNorm(axis=-1), nn.Dense(4 * d, "gelu"), nn.Dense(d)]
                )
            ),
        ]
    )


def gpt(vocab: int, d: int, heads: int, layers: int, context: int) -> nn.Block:
    """A small decoder-only transformer (GPT) language model.

    Args:
      vocab: V, the number of token ids.
      d: model width (a multiple of ``heads``).
      heads: attention heads per layer.
      layers: number of transformer blocks.
      context: T_max, the longest sequence (the positional table's length).

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
    return nn.Sequential(
        [
            nn.Embedding(vocab, d, W_init="normal"),
            nn.PositionalEmbedding(context, d),
            *[transformer_block(d, heads) for _ in range(layers)],
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
