"""Multi-head self-attention: hand backward against jax.vjp and finite differences,
forward against jax.nn.dot_product_attention, causality by the Jacobian, masked
rows without NaN; float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_embedding import assert_grads_ok, check_block_grads

from fnn import nn
from fnn.nn import Block


def _masked_block(num_heads, causal, key_mask):
    """The functional core with a fixed key padding mask, as a block."""
    base = nn.MultiHeadAttention(num_heads, causal)

    def forward(params, state, X, key, train):
        Y, cache = nn.attention_forward(
            params, X, num_heads=num_heads, causal=causal, key_mask=key_mask
        )
        return Y, state, cache

    return Block("masked attention", base.init, forward, nn.attention_backward)


def _key_mask(key, m, T, fully_masked_row=None):
    """Random padding with at least one real token per sequence (optionally one
    sequence entirely padded)."""
    mask = jax.random.bernoulli(key, 0.6, (m, T)).at[:, 0].set(True)
    if fully_masked_row is not None:
        mask = mask.at[fully_masked_row].set(False)
    return mask


CASES = [
    # (m, T, d, heads, causal, masked)
    (2, 1, 6, 3, True, False),
    (2, 6, 8, 4, False, True),
    (3, 5, 6, 3, True, True),
    (2, 3, 8, 8, True, False),
    pytest.param(2, 1, 4, 1, False, False, marks=pytest.mark.slow),
    pytest.param(3, 5, 4, 1, False, False, marks=pytest.mark.slow),
    pytest.param(2, 4, 6, 2, True, False, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("m", "T", "d", "heads", "causal", "masked"), CASES)
def test_attention_backward(m, T, d, heads, causal, masked):
    """dS = P ⊙ (dP − rowsum(dP ⊙ P)) and the four projections: every parameter
    leaf and the input agree with jax.vjp (1e-10) and finite differences (1e-7)."""
    with jax.enable_x64(True):
        key = jax.random.key(100 * T + heads + causal)
        x = jax.random.normal(jax.random.fold_in(key, 9), (m, T, d), jnp.float64)
        if masked:
            mask = _key_mask(jax.random.fold_in(key, 8), m, T, fully_masked_row=0)
            block = _masked_block(heads, causal, mask)
        else:
            block = nn.MultiHeadAttention(heads, causal)
        results = check_block_grads(block, x, key=key)
        assert len(results) == 8  # 4 projections × (W, b), no b_k; the input
        assert_grads_ok(results)


def _reference(params, X, heads, causal, key_mask=None):
    """Attention written again in numpy, one batch row and one head at a time."""
    p = jax.tree.map(np.asarray, params)
    X = np.asarray(X)
    m, T, d = X.shape
    d_h = d // heads
    Y = np.zeros_like(X)
    for b in range(m):
        Q, K, V = (X[b] @ p[n]["W"] + p[n].get("b", 0.0) for n in "qkv")
        O = np.zeros((T, d))
        for h in range(heads):
            cols = slice(h * d_h, (h + 1) * d_h)
            for i in range(T):
                keys = [
                    j
                    for j in range(T)
                    if (not causal or j <= i)
                    and (key_mask is None or bool(key_mask[b, j]))
                ]
                if not keys:
                    continue
                s = np.array([Q[i, cols] @ K[j, cols] for j in keys]) / np.sqrt(d_h)
                w = np.exp(s - s.max())
                O[i, cols] = (w / w.sum()) @ V[keys, cols]
        Y[b] = O @ p["o"]["W"] + p["o"]["b"]
    return Y


def test_attention_forward_matches_jax_nn():
    """Agreement with jax.nn.dot_product_attention (which runs its softmax in
    float32, hence the looser tolerance)."""
    with jax.enable_x64(True):
        key = jax.random.key(7)
        params, _, _ = nn.MultiHeadAttention(2, True).init(key, (5, 8), jnp.float64)
        X = jax.random.normal(jax.random.fold_in(key, 1), (3, 5, 8), jnp.float64)
        Y = nn.attention_forward(params, X, num_heads=2, causal=True)[0]
        qkv = [
            (X @ params[n]["W"] + params[n].get("b", 0.0)).reshape(3, 5, 2, 4)
            for n in "qkv"
        ]
        with jax.numpy_dtype_promotion("standard"):
            O = jax.nn.dot_product_attention(*qkv, is_causal=True)
        ref = O.reshape(3, 5, 8) @ params["o"]["W"] + params["o"]["b"]
        np.testing.assert_allclose(Y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("heads", "causal"), [(1, False), (2, True), (4, False)])
def test_attention_forward_matches_jax(heads, causal):
    with jax.enable_x64(True):
        key = jax.random.key(heads)
        block = nn.MultiHeadAttention(heads, causal)
        params, _, _ = block.init(key, (5, 8), jnp.float64)
        params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero biases
        assert "b" not in params["k"]
        X = jax.random.normal(jax.random.fold_in(key, 1), (3, 5, 8), jnp.float64)
        Y = block.forward(params, {}, X, None, False)[0]
        np.testing.assert_allclose(Y, _reference(params, X, heads, causal), rtol=1e-12)


def test_attention_forward_with_padding_matches_jax():
    """Padded keys get no weight; the rows that have a real key match JAX's."""
    with jax.enable_x64(True):
        key = jax.random.key(3)
        params, _, _ = nn.MultiHeadAttention(2).init(key, (6, 4), jnp.float64)
        X = jax.random.normal(jax.random.fold_in(key, 1), (3, 6, 4), jnp.float64)
        mask = _key_mask(jax.random.fold_in(key, 2), 3, 6)
        for causal in (False, True):
            Y, cache = nn.attention_forward(
                params, X, num_heads=2, causal=causal, key_mask=mask
            )
            ref = _reference(params, X, 2, causal, mask)
            np.testing.assert_allclose(Y, ref, rtol=1e-12)
            P = np.asarray(cache.P)
            assert np.all(P * np.asarray(mask)[:, None, None, :] == P)


def test_attention_fully_masked_rows_are_finite():
    """A sequence with every key padded: Y = b_o there, no NaN forward or backward
    (the suite runs with jax_debug_nans), zero error into its inputs."""
    with jax.enable_x64(True):
        key = jax.random.key(4)
        params, _, _ = nn.MultiHeadAttention(2, True).init(key, (4, 4), jnp.float64)
        params = jax.tree.map(lambda p: p + 0.2, params)
        X = jax.random.normal(jax.random.fold_in(key, 1), (2, 4, 4), jnp.float64)
        mask = jnp.array([[True, True, False, True], [False] * 4])
        Y, cache = nn.attention_forward(
            params, X, num_heads=2, causal=True, key_mask=mask
        )
        np.testing.assert_array_equal(Y[1], jnp.broadcast_to(params["o"]["b"], (4, 4)))
        grads, dX = nn.attention_backward(params, cache, jnp.ones_like(Y))
        assert np.all(np.isfinite(np.asarray(dX)))
        np.testing.assert_array_equal(dX[1], 0.0)
        for g in jax.tree.leaves(grads):
            assert np.all(np.isfinite(np.asarray(g)))


def _output(block, params, X):
    return block.forward(params, {}, X, None, False)[0]


@pytest.mark.parametrize("heads", [2, pytest.param(1, marks=pytest.mark.slow)])
def test_causal_attention_jacobian_is_lower_triangular(heads):
    """∂Y_t/∂X_s = 0 exactly for every s > t (full Jacobian), and not zero for
    some s < t (the test can fail); the non-causal block does depend on s > t."""
    with jax.enable_x64(True):
        key = jax.random.key(5)
        T, d = 5, 4
        X = jax.random.normal(key, (2, T, d), jnp.float64)
        for causal in (True, False):
            block = nn.MultiHeadAttention(heads, causal)
            params, _, _ = block.init(jax.random.fold_in(key, 1), (T, d), jnp.float64)
            # J[b, t, i, b', s, j] = ∂Y[b, t, i]/∂X[b', s, j]
            J = np.asarray(jax.jacobian(_output, argnums=2)(block, params, X))
            future = np.array([[s > t for s in range(T)] for t in range(T)])
            past = np.array([[s < t for s in range(T)] for t in range(T)])
            per_pair = np.abs(J[0, :, :, 0, :, :]).max(axis=(1, 3))  # (t, s)
            assert per_pair[past].min() > 0
            if causal:
                assert np.all(per_pair[future] == 0.0)
            else:
                assert per_pair[future].min() > 0


def test_attention_under_jit_and_errors():
    block = nn.MultiHeadAttention(2, causal=True)
    params, _, out_shape = block.init(jax.random.key(0), (3, 4), jnp.float32)
    assert out_shape == (3, 4)
    assert set(params) == {"q", "k", "v", "o"}

    @jax.jit
    def step(params, X):
        Y, _, cache = block.forward(params, {}, X, None, False)
        return block.backward(params, cache, Y)

    grads, dX = step(params, jnp.ones((2, 3, 4)))
    assert dX.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        nn.MultiHeadAttention(3).init(jax.random.key(0), (3, 4), jnp.float32)
    with pytest.raises(ValueError, match=r"\(m, T, 4\)"):
        block.forward(params, {}, jnp.ones((2, 4)), None, False)
    with pytest.raises(ValueError, match="key_mask must have shape"):
        nn.attention_forward(params, jnp.ones((2, 3, 4)), num_heads=2, key_mask=[1])


def _stack_grads_vs_autodiff(blocks, T, V, key):
    """Manual walk (nn.forward, fused sequence loss gradient, nn.backward) against
    jax.grad of the same loss, float64; returns the relative error and dx."""
    from fnn._seqloss import sequence_cross_entropy

    loss = sequence_cross_entropy()
    params, state = nn.init(key, blocks, (T,), jnp.float64)
    ids = jax.random.randint(jax.random.fold_in(key, 1), (3, T), 0, V)
    y = jax.random.randint(jax.random.fold_in(key, 2), (3, T), 0, V)
    mask = jnp.ones((3, T), bool).at[0, T - 1 :].set(False)

    @jax.jit
    def manual(params):
        out, _, caches = nn.forward(blocks, params, ids, state=state)
        return nn.backward(blocks, params, caches, loss.grad(out, y, mask))

    def J(params):
        return loss.fn(nn.forward(blocks, params, ids, state=state)[0], y, mask)

    grads, dx = manual(params)
    auto = jax.jit(jax.grad(J))(params)
    flat = jax.flatten_util.ravel_pytree
    a, b = np.asarray(flat(grads)[0]), np.asarray(flat(auto)[0])
    return np.linalg.norm(a - b) / np.linalg.norm(b), dx


def test_attention_language_model_stack_backprop():
    """Embedding → positions → LayerNorm → causal attention → GELU MLP → logits:
    the generic reverse walk with the fused sequence loss equals jax.grad."""
    T, V, d = 5, 7, 8
    blocks = [
        nn.Embedding(V, d),
        nn.PositionalEmbedding(T, d),
        nn.LayerNorm(axis=-1),
        nn.MultiHeadAttention(2, causal=True),
        nn.RMSNorm(),
        nn.Dense(2 * d, "gelu"),
        nn.Dense(V),
    ]
    with jax.enable_x64(True):
        err, dx = _stack_grads_vs_autodiff(blocks, T, V, jax.random.key(0))
    assert err <= 1e-10
    assert dx.dtype == jax.dtypes.float0


def _transformer_block(d, heads):
    """A pre-norm transformer block, by composition of fnn's blocks."""
    return nn.Sequential(
        [
            nn.Residual(
                nn.Sequential(
                    [nn.LayerNorm(axis=-1), nn.MultiHeadAttention(heads, True)]
                )
            ),
            nn.Residual(
                nn.Sequential(
                    [nn.LayerNorm(axis=-1), nn.Dense(4 * d, "gelu"), nn.Dense(d)]
                )
            ),
        ]
    )


def test_check_block_passes_on_a_transformer_block():
    """fnn.nn.check_block (per-coordinate finite differences) on a pre-norm
    transformer block: Residual(LN → causal MHA), Residual(LN → GELU MLP)."""
    result = nn.check_block(_transformer_block(4, 2), (3, 4), key=jax.random.key(1))
    assert result.passed, result.table()
    assert all(r.manual_vs_autodiff <= 1e-10 for r in result.rows), result.table()
