"""LSTM and GRU layers: forward with ``lax.scan``, backpropagation through time by
hand as a reverse ``lax.scan`` over the cached gates.

Batch-first: ``X`` is ``(m, T, d)``, the hidden states ``H`` are ``(m, T, n_h)``.
Parameters follow PyTorch's layout, transposed to fnn's ``Z = A W + b``:

    params = {"input":  {"W": (d, G·n_h),   "b": (G·n_h,)},     # W_ih^T, b_ih
              "hidden": {"W": (n_h, G·n_h), "b": (G·n_h,)}}     # W_hh^T, b_hh

with the G gate blocks side by side along the last axis in PyTorch's order
(LSTM: i, f, g, o, G = 4; GRU: r, z, n, G = 3), so PyTorch's ``weight_ih_l0`` is
``W.T`` here. With ``initial_state="learned"`` the initial state is a parameter
too: ``params["initial"] = {"h": (n_h,)}`` (and ``"c"`` for the LSTM), shared by
every sequence; by default it is zero.

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers, Schmidhuber &
Cummins 2000; PyTorch's ``nn.LSTM`` equations), σ the logistic function:

    Z_t = x_t W_x + b_x + h_{t−1} W_h + b_h         (m, 4n_h) = [Z_i Z_f Z_g Z_o]
    i = σ(Z_i),  f = σ(Z_f),  g = tanh(Z_g),  o = σ(Z_o)
    c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

Backward through time, for t = T, …, 1, with dh_t = dH_t + (dh carried from
t + 1) and dc carried from t + 1 (both zero at t = T):

    do = dh_t ⊙ tanh(c_t),    dc = dc_{t+1} + dh_t ⊙ o ⊙ (1 − tanh²(c_t))
    di = dc ⊙ g,  dg = dc ⊙ i,  df = dc ⊙ c_{t−1},  dc_t→t−1 = dc ⊙ f
    dZ_t = [di ⊙ i(1−i), df ⊙ f(1−f), dg ⊙ (1−g²), do ⊙ o(1−o)]
    dh_t→t−1 = dZ_t W_hᵀ

GRU (Cho et al. 2014; PyTorch's ``nn.GRU`` convention, the reset gate applied
after the hidden projection, and h_t leaning on h_{t−1} through z):

    [A_r A_z A_n] = x_t W_x + b_x,   [B_r B_z B_n] = h_{t−1} W_h + b_h
    r = σ(A_r + B_r),  z = σ(A_z + B_z),  n = tanh(A_n + r ⊙ B_n)
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

Backward, for t = T, …, 1, with dh_t = dH_t + (dh carried from t + 1):

    dn = dh_t ⊙ (1 − z),  dz = dh_t ⊙ (h_{t−1} − n)
    dA_n = dn ⊙ (1 − n²),  dB_n = dA_n ⊙ r,  dr = dA_n ⊙ B_n
    dA_r = dB_r = dr ⊙ r(1−r),  dA_z = dB_z = dz ⊙ z(1−z)
    dh_t→t−1 = dh_t ⊙ z + [dB_r dB_z dB_n] W_hᵀ

Both: the weights are shared over time, so their gradients are sums over the
batch and the steps, taken after the scan as two matrix products:

    dW_x = Σ_t x_tᵀ dA_t,   db_x = Σ dA_t,   dW_h = Σ_t h_{t−1}ᵀ dB_t,   db_h = Σ dB_t
    dX_t = dA_t W_xᵀ

(for the LSTM dA_t = dB_t = dZ_t), and the error left in the carry after step 1
is the gradient of the initial state.

References: Hochreiter & Schmidhuber (1997), "Long Short-Term Memory"; Gers,
Schmidhuber & Cummins (2000), "Learning to Forget"; Cho et al. (2014), "Learning
Phrase Representations using RNN Encoder-Decoder"; Werbos (1990),
"Backpropagation Through Time"; PyTorch ``nn.LSTM``/``nn.GRU`` documentation.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._block import Block, ShapeError
from ._spec import builtin


class LSTMCache(NamedTuple):
    """Time-major ``(T, m, ·)`` records of the forward pass."""

    X: jax.Array  # (m, T, d)
    H_prev: jax.Array  # (T, m, n_h): h_{t−1}, h_0 first
    C: jax.Array  # (T, m, n_h): c_t
    C_prev: jax.Array  # (T, m, n_h): c_{t−1}
    gates: jax.Array  # (T, m, 4n_h): i, f, g, o after their nonlinearity


class GRUCache(NamedTuple):
    """Time-major ``(T, m, ·)`` records of the forward pass."""

    X: jax.Array  # (m, T, d)
    H_prev: jax.Array  # (T, m, n_h): h_{t−1}, h_0 first
    gates: jax.Array  # (T, m, 3n_h): r, z, n after their nonlinearity
    B_n: jax.Array  # (T, m, n_h): h_{t−1} W_hn + b_hn


def _input_projection(params, X):
    """A_t = x_t W_x + b_x for every step at once, time-major (T, m, G·n_h)."""
    return jnp.swapaxes(X @ params["input"]["W"] + params["input"]["b"], 0, 1)


def _weight_grads(params, cache_X, H_prev, dA, dB):
    """The shared-weight sums after the reverse scan; dA, dB time-major."""
    grads = {
        "input": {
            "W": jnp.tensordot(cache_X, dA, axes=((1, 0), (0, 1))),
            "b": jnp.sum(dA, axis=(0, 1)),
        },
        "hidden": {
            "W": jnp.tensordot(H_prev, dB, axes=((0, 1), (0, 1))),
            "b": jnp.sum(dB, axis=(0, 1)),
        },
    }
    dX = jnp.swapaxes(dA, 0, 1) @ params["input"]["W"].T
    return grads, dX


def lstm_forward(params, X, h0, c0):
    """LSTM over a sequence (module docstring equations).

    Args:
      params: ``{"input": {"W", "b"}, "hidden": {"W", "b"}}``.
      X: ``(m, T, d)``.
      h0, c0: initial state, ``(m, n_h)`` each.

    Returns:
      ``(H, cache)``: the hidden states ``(m, T, n_h)`` and an
      :class:`LSTMCache` (the last cell state is ``cache.C[-1]``).
    """
    W_h, b_h = params["hidden"]["W"], params["hidden"]["b"]

    def step(carry, A_t):
        h, c = carry
        Z = A_t + h @ W_h + b_h
        Z_i, Z_f, Z_g, Z_o = jnp.split(Z, 4, axis=-1)
        i, f, g, o = (
            jax.nn.sigmoid(Z_i),
            jax.nn.sigmoid(Z_f),
            jnp.tanh(Z_g),
            jax.nn.sigmoid(Z_o),
        )
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        gates = jnp.concatenate([i, f, g, o], axis=-1)
        return (h_new, c_new), (h, c, h_new, c_new, gates)

    _, (H_prev, C_prev, H, C, gates) = jax.lax.scan(
        step, (h0, c0), _input_projection(params, X)
    )
    return jnp.swapaxes(H, 0, 1), LSTMCache(X, H_prev, C, C_prev, gates)


def lstm_backward(params, cache: LSTMCache, dH):
    """Backpropagation through time for :func:`lstm_forward`.

    Args:
      params: as for the forward.
      cache: the forward's cache.
      dH: ``(m, T, n_h)``, the error on every hidden state.

    Returns:
      ``(dparams, dX, (dh0, dc0))`` with dX ``(m, T, d)`` and the initial-state
      gradients ``(m, n_h)``.
    """
    W_h = params["hidden"]["W"]

    def step(carry, inputs):
        dh_next, dc_next = carry
        dH_t, c, c_prev, gates = inputs
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        dh = dH_t + dh_next
        tanh_c = jnp.tanh(c)
        do = dh * tanh_c
        dc = dc_next + dh * o * (1 - tanh_c**2)
        di, dg, df = dc * g, dc * i, dc * c_prev
        dZ = jnp.concatenate(
            [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)],
            axis=-1,
        )
        return (dZ @ W_h.T, dc * f), dZ

    zeros = jnp.zeros_like(cache.C[0])
    (dh0, dc0), dZ = jax.lax.scan(
        step,
        (zeros, zeros),
        (jnp.swapaxes(dH, 0, 1), cache.C, cache.C_prev, cache.gates),
        reverse=True,
    )
    grads, dX = _weight_grads(params, cache.X, cache.H_prev, dZ, dZ)
    return grads, dX, (dh0, dc0)


def gru_forward(params, X, h0):
    """GRU over a sequence (module docstring equations, PyTorch's convention).

    Args:
      params: ``{"input": {"W", "b"}, "hidden": {"W", "b"}}``.
      X: ``(m, T, d)``.
      h0: initial state ``(m, n_h)``.

    Returns:
      ``(H, cache)``: the hidden states ``(m, T, n_h)`` and a :class:`GRUCache`.
    """
    W_h, b_h = params["hidden"]["W"], params["hidden"]["b"]

    def step(h, A_t):
        A_r, A_z, A_n = jnp.split(A_t, 3, axis=-1)
        B_r, B_z, B_n = jnp.split(h @ W_h + b_h, 3, axis=-1)
        r = jax.nn.sigmoid(A_r + B_r)
        z = jax.nn.sigmoid(A_z + B_z)
        n = jnp.tanh(A_n + r * B_n)
        h_new = (1 - z) * n + z * h
        return h_new, (h, h_new, jnp.concatenate([r, z, n], axis=-1), B_n)

    _, (H_prev, H, gates, B_n) = jax.lax.scan(step, h0, _input_projection(params, X))
    return jnp.swapaxes(H, 0, 1), GRUCache(X, H_prev, gates, B_n)


def gru_backward(params, cache: GRUCache, dH):
    """Backpropagation through time for :func:`gru_forward`.

    Args:
      params: as for the forward.
      cache: the forward's cache.
      dH: ``(m, T, n_h)``, the error on every hidden state.

    Returns:
      ``(dparams, dX, dh0)`` with dX ``(m, T, d)`` and dh0 ``(m, n_h)``.
    """
    W_h = params["hidden"]["W"]

    def step(dh_next, inputs):
        dH_t, h_prev, gates, B_n = inputs
        r, z, n = jnp.split(gates, 3, axis=-1)
        dh = dH_t + dh_next
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        dA_n = dn * (1 - n**2)
        dr = dA_n * B_n
        dA_r = dr * r * (1 - r)
        dA_z = dz * z * (1 - z)
        dA = jnp.concatenate([dA_r, dA_z, dA_n], axis=-1)
        dB = jnp.concatenate([dA_r, dA_z, dA_n * r], axis=-1)
        return dh * z + dB @ W_h.T, (dA, dB)

    dh0, (dA, dB) = jax.lax.scan(
        step,
        jnp.zeros_like(cache.H_prev[0]),
        (jnp.swapaxes(dH, 0, 1), cache.H_prev, cache.gates, cache.B_n),
        reverse=True,
    )
    grads, dX = _weight_grads(params, cache.X, cache.H_prev, dA, dB)
    return grads, dX, dh0


def _recurrent_block(
    kind, hidden, return_sequences, initial_state, n_gates, state_names, fwd, bwd
):
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{kind} hidden must be a positive int, got {hidden!r}.")
    if initial_state not in ("zeros", "learned"):
        raise ValueError(
            f"{kind} initial_state must be 'zeros' or 'learned', got {initial_state!r}."
        )
    learned = initial_state == "learned"
    label = f"{kind}({hidden}" + ("" if return_sequences else ", last") + ")"

    def init(key, in_shape, dtype):
        if len(in_shape) != 2:
            raise ShapeError(
                f"{label} expects sequences (T, d) per example, got {tuple(in_shape)}"
            )
        d = in_shape[-1]
        bound = 1.0 / math.sqrt(hidden)  # PyTorch: U(−1/√n_h, 1/√n_h) everywhere
        keys = jax.random.split(key, 4)
        shapes = {
            "input": {"W": (d, n_gates * hidden), "b": (n_gates * hidden,)},
            "hidden": {"W": (hidden, n_gates * hidden), "b": (n_gates * hidden,)},
        }
        params = {
            group: {
                name: jax.random.uniform(
                    jax.random.fold_in(keys[g], j), shape, dtype, -bound, bound
                )
                for j, (name, shape) in enumerate(sorted(leaves.items()))
            }
            for g, (group, leaves) in enumerate(shapes.items())
        }
        if learned:
            params["initial"] = {s: jnp.zeros((hidden,), dtype) for s in state_names}
        out_shape = (in_shape[0], hidden) if return_sequences else (hidden,)
        return params, {}, out_shape

    def forward(params, state, X, key, train):
        d = params["input"]["W"].shape[0]
        if X.ndim != 3 or X.shape[-1] != d:
            raise ShapeError(f"{label} expects input (m, T, {d}), got {X.shape}")
        m = X.shape[0]
        if learned:
            init_state = [
                jnp.broadcast_to(params["initial"][s], (m, hidden)) for s in state_names
            ]
        else:
            init_state = [jnp.zeros((m, hidden), X.dtype) for _ in state_names]
        H, cache = fwd(params, X, *init_state)
        return (H if return_sequences else H[:, -1]), state, cache

    def backward(params, cache, dY):
        if return_sequences:
            dH = dY
        else:
            T = cache.X.shape[1]
            dH = jnp.zeros((dY.shape[0], T, hidden), dY.dtype).at[:, -1].set(dY)
        grads, dX, d_init = bwd(params, cache, dH)
        if learned:
            d_init = d_init if isinstance(d_init, tuple) else (d_init,)
            grads["initial"] = {
                s: jnp.sum(g, axis=0) for s, g in zip(state_names, d_init, strict=True)
            }
        return grads, dX

    return Block(label, init, forward, backward)


@builtin
def LSTM(
    hidden: int, return_sequences: bool = True, *, initial_state: str = "zeros"
) -> Block:
    """Long short-term memory layer over sequences (equations: module docstring).

    Args:
      hidden: n_h, the width of the hidden and cell states.
      return_sequences: output every hidden state ``(m, T, n_h)``, or only the
        last one ``(m, n_h)``.
      initial_state: ``"zeros"`` (h_0 = c_0 = 0) or ``"learned"`` (h_0 and c_0
        are parameters ``params["initial"]["h"]``, ``["c"]``, ``(n_h,)``,
        initialised to zero and shared by every sequence).

    Returns:
      A :class:`Block` with params ``{"input": {"W": (d, 4n_h), "b": (4n_h,)},
      "hidden": {"W": (n_h, 4n_h), "b": (4n_h,)}}`` (gate order i, f, g, o;
      every entry U(−1/√n_h, 1/√n_h), PyTorch's); input ``(m, T, d)``. For an
      explicit initial state, or the final cell state, use :func:`lstm_forward`
      and :func:`lstm_backward`.

    References: Hochreiter & Schmidhuber (1997); Gers, Schmidhuber & Cummins
    (2000); PyTorch ``nn.LSTM``.
    """
    return _recurrent_block(
        "LSTM",
        hidden,
        return_sequences,
        initial_state,
        4,
        ("h", "c"),
        lstm_forward,
        lstm_backward,
    )


@builtin
def GRU(
    hidden: int, return_sequences: bool = True, *, initial_state: str = "zeros"
) -> Block:
    """Gated recurrent unit layer over sequences (equations: module docstring).

    Args:
      hidden: n_h, the width of the hidden state.
      return_sequences: output every hidden state ``(m, T, n_h)``, or only the
        last one ``(m, n_h)``.
      initial_state: ``"zeros"`` (h_0 = 0) or ``"learned"`` (h_0 a parameter
        ``params["initial"]["h"]`` of shape ``(n_h,)``, initialised to zero).

    Returns:
      A :class:`Block` with params ``{"input": {"W": (d, 3n_h), "b": (3n_h,)},
      "hidden": {"W": (n_h, 3n_h), "b": (3n_h,)}}`` (gate order r, z, n;
      U(−1/√n_h, 1/√n_h), PyTorch's); input ``(m, T, d)``. For an explicit
      initial state use :func:`gru_forward` and :func:`gru_backward`.

    References: Cho et al. (2014); PyTorch ``nn.GRU``.
    """
    return _recurrent_block(
        "GRU",
        hidden,
        return_sequences,
        initial_state,
        3,
        ("h",),
        gru_forward,
        gru_backward,
    )
