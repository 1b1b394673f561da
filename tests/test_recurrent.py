"""LSTM and GRU: backpropagation through time by hand against jax.vjp and finite
differences, forward against the gate equations unrolled in a Python loop;
float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_embedding import assert_grads_ok, check_block_grads

from fnn import nn


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_loop(params, X, h, c):
    """Textbook LSTM, one step and one gate at a time (PyTorch's order i, f, g, o)."""
    p = jax.tree.map(np.asarray, params)
    X, h, c = np.asarray(X), np.asarray(h), np.asarray(c)
    n_h = h.shape[1]

    def gate(k, x_t, h):
        cols = slice(k * n_h, (k + 1) * n_h)
        return (
            x_t @ p["input"]["W"][:, cols]
            + p["input"]["b"][cols]
            + h @ p["hidden"]["W"][:, cols]
            + p["hidden"]["b"][cols]
        )

    out = []
    for t in range(X.shape[1]):
        x_t = X[:, t]
        i = _sigmoid(gate(0, x_t, h))
        f = _sigmoid(gate(1, x_t, h))
        g = np.tanh(gate(2, x_t, h))
        o = _sigmoid(gate(3, x_t, h))
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), c


def _gru_loop(params, X, h):
    """Textbook GRU (PyTorch's convention: r multiplies W_hn h + b_hn)."""
    p = jax.tree.map(np.asarray, params)
    X, h = np.asarray(X), np.asarray(h)
    n_h = h.shape[1]

    def part(group, k, v):
        cols = slice(k * n_h, (k + 1) * n_h)
        return v @ p[group]["W"][:, cols] + p[group]["b"][cols]

    out = []
    for t in range(X.shape[1]):
        x_t = X[:, t]
        r = _sigmoid(part("input", 0, x_t) + part("hidden", 0, h))
        z = _sigmoid(part("input", 1, x_t) + part("hidden", 1, h))
        n = np.tanh(part("input", 2, x_t) + r * part("hidden", 2, h))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


CASES = [
    # (kind, m, T, d, hidden, return_sequences, initial_state)
    ("lstm", 2, 1, 3, 4, True, "zeros"),
    ("lstm", 3, 5, 2, 3, True, "learned"),
    pytest.param("lstm", 2, 4, 3, 2, False, "zeros", marks=pytest.mark.slow),
    pytest.param("gru", 2, 1, 3, 4, True, "zeros", marks=pytest.mark.slow),
    ("gru", 3, 5, 2, 3, True, "learned"),
    ("gru", 2, 4, 3, 2, False, "learned"),
]


@pytest.mark.parametrize(("kind", "m", "T", "d", "hidden", "seq", "init"), CASES)
def test_recurrent_backward(kind, m, T, d, hidden, seq, init):
    """The reverse scan (BPTT) equals jax.vjp (1e-10) and finite differences
    (1e-7) for the input, every weight and bias, and a learned initial state."""
    make = nn.LSTM if kind == "lstm" else nn.GRU
    block = make(hidden, return_sequences=seq, initial_state=init)
    with jax.enable_x64(True):
        key = jax.random.key(10 * T + hidden)
        x = jax.random.normal(jax.random.fold_in(key, 9), (m, T, d), jnp.float64)
        results = check_block_grads(block, x, key=key)
        n_initial = 0 if init == "zeros" else (2 if kind == "lstm" else 1)
        assert len(results) == 4 + n_initial + 1
        assert_grads_ok(results)


def test_lstm_forward_matches_python_loop():
    with jax.enable_x64(True):
        key = jax.random.key(1)
        params, _, _ = nn.LSTM(4).init(key, (6, 3), jnp.float64)
        X = jax.random.normal(jax.random.fold_in(key, 1), (2, 6, 3), jnp.float64)
        h0 = jax.random.normal(jax.random.fold_in(key, 2), (2, 4), jnp.float64)
        c0 = jax.random.normal(jax.random.fold_in(key, 3), (2, 4), jnp.float64)
        H, cache = nn.lstm_forward(params, X, h0, c0)
        H_ref, c_ref = _lstm_loop(params, X, h0, c0)
        np.testing.assert_allclose(H, H_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(cache.C[-1], c_ref, rtol=1e-12, atol=1e-14)
        # the block: zero initial state, last step only
        Y = nn.LSTM(4, False).forward(params, {}, X, None, False)[0]
        zeros = np.zeros((2, 4))
        np.testing.assert_allclose(Y, _lstm_loop(params, X, zeros, zeros)[0][:, -1])


def test_gru_forward_matches_python_loop():
    with jax.enable_x64(True):
        key = jax.random.key(2)
        params, _, _ = nn.GRU(4).init(key, (6, 3), jnp.float64)
        X = jax.random.normal(jax.random.fold_in(key, 1), (2, 6, 3), jnp.float64)
        h0 = jax.random.normal(jax.random.fold_in(key, 2), (2, 4), jnp.float64)
        H, _ = nn.gru_forward(params, X, h0)
        np.testing.assert_allclose(H, _gru_loop(params, X, h0), rtol=1e-12, atol=1e-14)


def test_initial_state_gradients_match_vjp():
    """The carry left after step 1 is ∂J/∂h_0 (and ∂J/∂c_0)."""
    with jax.enable_x64(True):
        key = jax.random.key(3)
        X = jax.random.normal(key, (2, 5, 3), jnp.float64)
        s0 = [jax.random.normal(jax.random.fold_in(key, i), (2, 4)) for i in (1, 2)]
        dH = jax.random.normal(jax.random.fold_in(key, 4), (2, 5, 4), jnp.float64)
        for make, fwd, bwd, n in (
            (nn.LSTM, nn.lstm_forward, nn.lstm_backward, 2),
            (nn.GRU, nn.gru_forward, nn.gru_backward, 1),
        ):
            params, _, _ = make(4).init(jax.random.fold_in(key, 5), (5, 3), jnp.float64)
            H, cache = jax.jit(fwd)(params, X, *s0[:n])
            grads, dX, d_init = jax.jit(bwd)(params, cache, dH)
            auto = jax.vjp(
                lambda p, x, *s, fwd=fwd: fwd(p, x, *s)[0], params, X, *s0[:n]
            )[1](dH)
            d_init = d_init if n == 2 else (d_init,)
            for a, b in zip((grads, dX, *d_init), auto, strict=True):
                jax.tree.map(
                    lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-11), a, b
                )


def test_recurrent_shapes_jit_and_errors():
    for make, n_gates in ((nn.LSTM, 4), (nn.GRU, 3)):
        block = make(5)
        params, _, out_shape = block.init(jax.random.key(0), (7, 3), jnp.float32)
        assert out_shape == (7, 5)
        assert params["input"]["W"].shape == (3, n_gates * 5)
        assert params["hidden"]["W"].shape == (5, n_gates * 5)
        assert make(5, False).init(jax.random.key(0), (7, 3), jnp.float32)[2] == (5,)

        @jax.jit
        def step(params, X, block=block):
            Y, _, cache = block.forward(params, {}, X, None, False)
            return block.backward(params, cache, Y)

        grads, dX = step(params, jnp.ones((2, 7, 3)))
        assert dX.shape == (2, 7, 3)
        with pytest.raises(ValueError, match=r"\(m, T, 3\)"):
            block.forward(params, {}, jnp.ones((2, 3)), None, False)
        with pytest.raises(ValueError, match="'zeros' or 'learned'"):
            make(5, initial_state="random")
        with pytest.raises(ValueError, match="sequences"):
            block.init(jax.random.key(0), (3,), jnp.float32)


@pytest.mark.parametrize("make", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_recurrent_language_model_stack_backprop(make):
    """Embedding → recurrent layer → logits: the generic reverse walk with the
    fused sequence loss equals jax.grad of the same loss."""
    from test_attention import _stack_grads_vs_autodiff

    T, V = 6, 5
    blocks = [nn.Embedding(V, 4), make(6, initial_state="learned"), nn.Dense(V)]
    with jax.enable_x64(True):
        err, _ = _stack_grads_vs_autodiff(blocks, T, V, jax.random.key(1))
    assert err <= 1e-10


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(nn.LSTM(3, initial_state="learned"), marks=pytest.mark.slow),
        nn.GRU(3, False),
    ],
    ids=["lstm_learned", "gru_last"],
)
def test_check_block_passes(block):
    """fnn.nn.check_block: per-coordinate finite differences, every leaf."""
    result = nn.check_block(block, (4, 2), key=jax.random.key(2))
    assert result.passed, result.table()
    assert all(r.manual_vs_autodiff <= 1e-10 for r in result.rows), result.table()
