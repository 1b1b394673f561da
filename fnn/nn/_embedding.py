"""Token and learned positional embeddings, forward and backward by hand.

Token embedding: a table ``W`` of shape ``(V, d)``; integer ids ``(m, T)`` pick
its rows, ``Y[b, t] = W[ids[b, t]]`` of shape ``(m, T, d)``. Its backward is a
scatter-add: every position sends its error to the row it read,

    dW[v] = Σ_{b, t : ids[b, t] = v} dY[b, t]        (V, d)

so an id that occurs several times accumulates (``dW.at[ids].add(dY)``), and a row
that no id read gets zero. The ids are integers: there is no gradient to them;
the backward returns, as ``jax.vjp`` does for an integer input, a zero cotangent
of dtype ``jax.dtypes.float0`` and the shape of the ids.

Learned positional embedding: a table ``P`` of shape ``(T_max, d)`` added to a
sequence ``X`` of shape ``(m, T, d)``, T ≤ T_max:

    Y[b, t] = X[b, t] + P[t]
    dX = dY,   dP[t] = Σ_b dY[b, t] for t < T, dP[t] = 0 for t ≥ T

References: Bengio et al. (2003), "A Neural Probabilistic Language Model" (the
word feature matrix C); Vaswani et al. (2017), "Attention Is All You Need", §3.4;
Radford et al. (2019), GPT-2 (learned positions ``wpe`` added to ``wte``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers as _initializers
from ._block import Block, ShapeError, stateless
from ._spec import builtin


def _float0_zeros(shape) -> np.ndarray:
    """The cotangent of an integer input: zeros of dtype float0 (as jax.vjp)."""
    return np.zeros(shape, dtype=jax.dtypes.float0)


@builtin
def Embedding(vocab_size: int, dim: int, *, W_init=None) -> Block:
    """Token embedding: integer ids ``(m, T)`` → rows of a table ``(m, T, dim)``.

        Y[b, t] = W[ids[b, t]],   dW = scatter-add of dY at the ids

    Args:
      vocab_size: V, the number of ids (ids lie in ``[0, V)``).
      dim: d, the embedding width.
      W_init: initializer for the table (default N(0, 1), as PyTorch's
        ``nn.Embedding``; GPT-2 uses ``fnn.initializers.normal(0.02)``).

    Returns:
      A :class:`Block` with params ``{"W": (V, d)}``; input integer ids ``(m, T)``
      (per-example shape ``(T,)``; any per-example shape works, the output adds
      a last axis ``d``), output ``(m, T, d)``. ``backward`` returns
      ``({"W": dW}, dx)`` with ``dx`` a float0 zero array of the ids' shape.
      Ids outside ``[0, V)`` raise ``ValueError`` when the ids are concrete
      (outside ``jax.jit``); under ``jit`` they cannot be checked and JAX clamps
      them, so check data where it enters.

    References: Bengio et al. (2003); Vaswani et al. (2017), §3.4.
    """
    for name, value in (("vocab_size", vocab_size), ("dim", dim)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"Embedding {name} must be a positive int, got {value!r}.")
    W_init = _initializers.normal(1.0) if W_init is None else W_init
    W_init = _initializers.get(W_init)

    def init(key, in_shape, dtype):
        return {"W": W_init(key, (vocab_size, dim), dtype)}, (*in_shape, dim)

    def forward(params, ids):
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ShapeError(
                f"Embedding expects integer ids (m, T), got dtype {ids.dtype}; "
                "cast token ids with .astype(int)."
            )
        if ids.ndim < 1:
            raise ShapeError(f"Embedding expects ids (m, T), got shape {ids.shape}")
        if not isinstance(ids, jax.core.Tracer) and ids.size:
            ids_np = np.asarray(ids)  # concrete ids: checked on the host
            lo, hi = int(ids_np.min()), int(ids_np.max())
            if lo < 0 or hi >= vocab_size:
                raise ValueError(
                    f"Embedding ids must lie in [0, {vocab_size}), got values in "
                    f"[{lo}, {hi}]; enlarge vocab_size or fix the tokenizer."
                )
        return params["W"][ids], ids

    def backward(params, ids, dY):
        dW = jnp.zeros_like(params["W"]).at[ids].add(dY)
        return {"W": dW}, _float0_zeros(ids.shape)

    return stateless(f"Embedding({vocab_size}, {dim})", init, forward, backward)


@builtin
def PositionalEmbedding(max_len: int, dim: int, *, P_init=None) -> Block:
    """Learned positional embedding added to a sequence: Y[b, t] = X[b, t] + P[t].

        dX = dY,   dP[:T] = Σ_b dY[b],   dP[T:] = 0

    Args:
      max_len: T_max, the longest sequence the table covers.
      dim: d, the width of the sequence.
      P_init: initializer for the table (default N(0, 0.02²), GPT-2's).

    Returns:
      A :class:`Block` with params ``{"P": (T_max, d)}``; input ``(m, T, d)``
      with T ≤ T_max (shorter sequences use the first T rows), output of the same
      shape. A longer sequence raises :class:`ShapeError`.

    References: Vaswani et al. (2017), §3.5 (learned positional embeddings);
    Radford et al. (2019), GPT-2 (``wpe``).
    """
    for name, value in (("max_len", max_len), ("dim", dim)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(
                f"PositionalEmbedding {name} must be a positive int, got {value!r}."
            )
    P_init = _initializers.normal(0.02) if P_init is None else P_init
    P_init = _initializers.get(P_init)

    def _check(shape, where):
        if len(shape) != 2 or shape[1] != dim or shape[0] > max_len:
            raise ShapeError(
                f"PositionalEmbedding({max_len}, {dim}) expects {where} (T, {dim}) "
                f"with T ≤ {max_len}, got {tuple(shape)}; raise max_len or cut the "
                "sequence."
            )

    def init(key, in_shape, dtype):
        _check(tuple(in_shape), "per-example input shape")
        return {"P": P_init(key, (max_len, dim), dtype)}, tuple(in_shape)

    def forward(params, X):
        _check(X.shape[1:], "inputs (m, T, d), per example")
        return X + params["P"][: X.shape[1]], None

    def backward(params, cache, dY):
        T = dY.shape[1]
        dP = jnp.zeros_like(params["P"]).at[:T].set(jnp.sum(dY, axis=0))
        return {"P": dP}, dY

    return stateless(f"PositionalEmbedding({max_len}, {dim})", init, forward, backward)
