"""Embeddings and sequence normalization: manual backward against jax.vjp and
central finite differences, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import nn


def _rel(a, b, floor=1e-3) -> float:
    """‖a − b‖ / max(‖b‖, floor): relative, absolute for a gradient that is zero
    in exact arithmetic (attention's db_k: softmax ignores a per-row shift)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor))


def check_block_grads(block, x, *, key, perturb=0.3, fd_eps=1e-6, train=False):
    """Hand backward vs jax.vjp (relative error per leaf) and vs central finite
    differences along a random direction per leaf (relative, or absolute below a
    directional derivative of 1: rounding in the differences is ~1e-9); float64.
    Returns a dict ``{leaf name: (vjp error, fd error)}``; an integer ``x`` gets no
    input entry (its cotangent must be float0). Everything runs in one jit."""
    k_init, k_pert, k_dy, k_dir, k_fwd = jax.random.split(key, 5)
    x = jnp.asarray(x)
    x_float = jnp.issubdtype(x.dtype, jnp.floating)
    params, state, out_shape = block.init(k_init, x.shape[1:], jnp.float64)
    leaves, tdef = jax.tree.flatten(params)
    n = len(leaves)
    leaves = [
        p + perturb * jax.random.normal(jax.random.fold_in(k_pert, i), p.shape, p.dtype)
        for i, p in enumerate(leaves)
    ]
    params = jax.tree.unflatten(tdef, leaves)

    def f(p, a):
        return block.forward(p, state, a, k_fwd, train)[0]

    y = jax.eval_shape(f, params, x)
    assert y.shape == (x.shape[0], *out_shape)
    dy = jax.random.normal(k_dy, y.shape, y.dtype)
    dirs = [
        jax.random.normal(jax.random.fold_in(k_dir, i), p.shape, p.dtype)
        for i, p in enumerate(leaves)
    ]
    dir_x = jax.random.normal(jax.random.fold_in(k_dir, n), x.shape) if x_float else 0

    @jax.jit
    def run(params, x):
        cache = block.forward(params, state, x, k_fwd, train)[2]
        dparams, dx = block.backward(params, cache, dy)
        dparams_auto, dx_auto = jax.vjp(f, params, x)[1](dy)

        def value(i, t):  # ⟨f(θ + t·v_i), dy⟩, v_n moving the input
            moved = [
                p + t * v if j == i else p
                for j, (p, v) in enumerate(
                    zip(jax.tree.leaves(params), dirs, strict=True)
                )
            ]
            a = x + t * dir_x if i == n else x
            return jnp.sum(f(jax.tree.unflatten(tdef, moved), a) * dy)

        fds = [
            (value(i, fd_eps) - value(i, -fd_eps)) / (2 * fd_eps)
            for i in range(n + x_float)
        ]
        return dparams, dx, dparams_auto, dx_auto, fds

    dparams, dx, dparams_auto, dx_auto, fds = run(params, x)
    assert jax.tree.structure(dparams) == jax.tree.structure(params)
    if not x_float:
        assert dx.dtype == jax.dtypes.float0 and dx.shape == x.shape
    results = {}
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_g, flat_a = jax.tree.leaves(dparams), jax.tree.leaves(dparams_auto)
    for i, ((path, p), g, ga) in enumerate(zip(paths, flat_g, flat_a, strict=True)):
        assert g.shape == p.shape and g.dtype == p.dtype
        results[jax.tree_util.keystr(path)] = (
            _rel(g, ga),
            _rel(jnp.sum(g * dirs[i]), fds[i], 1.0),
        )
    if x_float:
        results["x"] = (_rel(dx, dx_auto), _rel(jnp.sum(dx * dir_x), fds[n], 1.0))
    return results


def assert_grads_ok(results, vjp_tol=1e-10, fd_tol=1e-7):
    for name, (e_vjp, e_fd) in results.items():
        assert e_vjp <= vjp_tol, f"{name}: backward vs jax.vjp rel. error {e_vjp:.2e}"
        assert e_fd <= fd_tol, f"{name}: backward vs finite diff. rel. error {e_fd:.2e}"


# --- token embedding ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("m", "T", "V", "d"), [(3, 5, 4, 3), (2, 1, 7, 2), (4, 6, 2, 5)]
)
def test_embedding_backward_scatter_adds(m, T, V, d):
    """dW = Σ of dY over the positions holding each id: vjp and finite differences,
    with few ids so that ids repeat within and across sequences."""
    with jax.enable_x64(True):
        key = jax.random.key(m * 100 + T)
        ids = jax.random.randint(jax.random.fold_in(key, 7), (m, T), 0, V)
        assert_grads_ok(check_block_grads(nn.Embedding(V, d), ids, key=key))


def test_embedding_repeated_ids_accumulate():
    """Id 1 read three times gets the sum of its three errors; unread rows get 0."""
    block = nn.Embedding(4, 2)
    with jax.enable_x64(True):
        params, _, _ = block.init(jax.random.key(0), (3,), jnp.float64)
        ids = jnp.array([[1, 1, 0], [3, 1, 0]])
        y, _, cache = block.forward(params, {}, ids, None, False)
        np.testing.assert_array_equal(y, params["W"][np.asarray(ids)])
        dy = jnp.arange(12.0, dtype=jnp.float64).reshape(2, 3, 2)
        grads, dx = block.backward(params, cache, dy)
        expected = np.zeros((4, 2))
        for b in range(2):
            for t in range(3):
                expected[int(ids[b, t])] += np.asarray(dy[b, t])
        np.testing.assert_array_equal(grads["W"], expected)
        assert not np.any(np.asarray(grads["W"][2]))
        assert dx.dtype == jax.dtypes.float0 and dx.shape == ids.shape


def test_embedding_under_jit():
    """Forward and backward compile; the float0 input cotangent comes back out."""
    block = nn.Embedding(5, 3)
    params, _, _ = block.init(jax.random.key(0), (4,), jnp.float32)
    ids = jnp.array([[0, 4, 4, 2]])

    @jax.jit
    def step(params, ids, dy):
        _, _, cache = block.forward(params, {}, ids, None, False)
        return block.backward(params, cache, dy)

    grads, dx = step(params, ids, jnp.ones((1, 4, 3)))
    np.testing.assert_allclose(grads["W"][4], 2 * np.ones(3))
    assert dx.shape == ids.shape


def test_embedding_rejects_bad_ids():
    block = nn.Embedding(5, 3)
    params, _, _ = block.init(jax.random.key(0), (2,), jnp.float32)
    with pytest.raises(ValueError, match=r"\[0, 5\).*\[0, 5\]"):
        block.forward(params, {}, jnp.array([[0, 5]]), None, False)
    with pytest.raises(ValueError, match="integer ids"):
        block.forward(params, {}, jnp.array([[0.0, 1.0]]), None, False)
    with pytest.raises(ValueError, match="positive int"):
        nn.Embedding(0, 3)


# --- positional embedding ----------------------------------------------------------
@pytest.mark.parametrize(
    ("m", "T", "max_len", "d"), [(3, 4, 6, 3), (2, 1, 1, 2), (2, 5, 5, 4)]
)
def test_positional_embedding_backward(m, T, max_len, d):
    """dX = dY, dP[:T] = Σ_b dY[b], rows t ≥ T of dP are zero."""
    with jax.enable_x64(True):
        key = jax.random.key(T)
        x = jax.random.normal(jax.random.fold_in(key, 9), (m, T, d), jnp.float64)
        block = nn.PositionalEmbedding(max_len, d)
        assert_grads_ok(check_block_grads(block, x, key=key))
        params, _, _ = block.init(key, (T, d), jnp.float64)
        y, _, cache = block.forward(params, {}, x, None, False)
        np.testing.assert_array_equal(y, x + params["P"][None, :T])
        grads, _ = block.backward(params, cache, jnp.ones_like(x))
        assert not np.any(np.asarray(grads["P"][T:]))


def test_positional_embedding_too_long():
    block = nn.PositionalEmbedding(4, 2)
    with pytest.raises(ValueError, match="T ≤ 4"):
        block.init(jax.random.key(0), (5, 2), jnp.float32)
    params, _, _ = block.init(jax.random.key(0), (4, 2), jnp.float32)
    with pytest.raises(ValueError, match=r"got \(6, 2\)"):
        block.forward(params, {}, jnp.zeros((1, 6, 2)), None, False)
    y, _, _ = block.forward(params, {}, jnp.zeros((1, 3, 2)), None, False)
    assert y.shape == (1, 3, 2)


# --- normalization and dense layers over the last axis of sequences ----------------
SEQ_BLOCKS = [
    ("rmsnorm", lambda d: nn.RMSNorm()),
    ("layernorm_last", lambda d: nn.LayerNorm(axis=-1)),
    ("dense", lambda d: nn.Dense(3, "tanh")),
    ("dense_gelu", lambda d: nn.Dense(2 * d, "gelu")),
    ("activation", lambda d: nn.Activation("tanh")),
]


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize(("name", "make"), SEQ_BLOCKS, ids=[c[0] for c in SEQ_BLOCKS])
def test_sequence_blocks_backward(name, make, T):
    """Blocks on (m, T, d) map the last axis: backward vs vjp and finite diffs."""
    d = 4
    with jax.enable_x64(True):
        key = jax.random.key(T)
        x = jax.random.normal(jax.random.fold_in(key, 9), (3, T, d), jnp.float64)
        assert_grads_ok(check_block_grads(make(d), x, key=key))


def test_sequence_blocks_act_per_position():
    """On (m, T, d), Dense, LayerNorm(axis=-1) and RMSNorm give at every position
    what they give to that position's vector as a flat (m·T, d) batch."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (2, 3, 4), jnp.float64)
        flat = x.reshape(6, 4)
        for block in (nn.Dense(5, "relu"), nn.LayerNorm(axis=-1), nn.RMSNorm()):
            params, _, _ = block.init(jax.random.key(2), (4,), jnp.float64)
            y_seq = block.forward(params, {}, x, None, False)[0]
            y_flat = block.forward(params, {}, flat, None, False)[0]
            np.testing.assert_allclose(y_seq.reshape(6, -1), y_flat, rtol=1e-13)


def test_rmsnorm_forward_formula():
    """y = γ x / √(mean(x²) + ε) over the last axis."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(3), (2, 3, 5), jnp.float64)
        block = nn.RMSNorm(eps=1e-6)
        params, _, out_shape = block.init(jax.random.key(0), (3, 5), jnp.float64)
        assert out_shape == (3, 5) and params["gamma"].shape == (5,)
        gamma = jnp.linspace(0.5, 1.5, 5, dtype=jnp.float64)
        y = block.forward({"gamma": gamma}, {}, x, None, False)[0]
        xn = np.asarray(x)
        ref = np.asarray(gamma) * xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(y, ref, rtol=1e-13)


def test_layernorm_last_axis_params_and_errors():
    block = nn.LayerNorm(axis=-1)
    params, _, out_shape = block.init(jax.random.key(0), (7, 4), jnp.float32)
    assert params["gamma"].shape == (4,) and out_shape == (7, 4)
    with pytest.raises(ValueError, match="None or -1"):
        nn.LayerNorm(axis=1)
    with pytest.raises(ValueError, match=r"\(m, \.\.\., 4\)"):
        block.forward(params, {}, jnp.zeros((2, 7, 3)), None, False)


# --- token-mean cross-entropy on sequence logits ------------------------------------
def _seq_ce_numpy(Z, y, mask):
    """−mean over real tokens of log softmax(Z)[y], token by token in numpy."""
    Z, y, mask = np.asarray(Z), np.asarray(y), np.asarray(mask)
    total, count = 0.0, 0
    for b in range(Z.shape[0]):
        for t in range(Z.shape[1]):
            if mask[b, t]:
                z = Z[b, t] - Z[b, t].max()
                total -= z[y[b, t]] - np.log(np.exp(z).sum())
                count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("mask_kind", ["none", "tokens", "sequences"])
def test_sequence_cross_entropy_value_and_fused_grad(mask_kind):
    """J is the mean over real tokens; grad = w·(softmax(Z) − onehot(y))/N equals
    jax.grad of J, for integer and one-hot targets."""
    from fnn._seqloss import sequence_cross_entropy

    loss = sequence_cross_entropy()
    assert loss.fused_output == "softmax"
    with jax.enable_x64(True):
        key = jax.random.key(0)
        m, T, V = 3, 4, 5
        Z = 3 * jax.random.normal(key, (m, T, V), jnp.float64)
        y = jax.random.randint(jax.random.fold_in(key, 1), (m, T), 0, V)
        mask = {
            "none": None,
            "tokens": jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool),
            "sequences": jnp.array([True, False, True]),
        }[mask_kind]
        if mask is None:
            full = np.ones((m, T), bool)
        else:
            full = np.broadcast_to(np.asarray(mask).reshape(m, -1), (m, T))
        J = loss.fn(Z, y, mask)
        np.testing.assert_allclose(J, _seq_ce_numpy(Z, y, full), rtol=1e-13)
        dZ = loss.grad(Z, y, mask)
        np.testing.assert_allclose(dZ, jax.grad(loss.fn)(Z, y, mask), rtol=1e-12)
        onehot = jax.nn.one_hot(y, V, dtype=jnp.float64)
        np.testing.assert_allclose(loss.fn(Z, onehot, mask), J, rtol=1e-14)
        np.testing.assert_allclose(loss.grad(Z, onehot, mask), dZ, rtol=1e-14)
        P = np.asarray(jax.nn.softmax(Z, axis=-1))
        expected = (P - np.asarray(onehot)) * full[..., None] / full.sum()
        np.testing.assert_allclose(dZ, expected, rtol=1e-12, atol=1e-16)


def test_sequence_cross_entropy_all_masked_and_errors():
    from fnn._seqloss import sequence_cross_entropy

    loss = sequence_cross_entropy()
    Z = jnp.zeros((2, 3, 4))
    y = jnp.zeros((2, 3), jnp.int32)
    mask = jnp.zeros((2, 3), bool)
    assert float(loss.fn(Z, y, mask)) == 0.0
    assert not np.any(np.asarray(loss.grad(Z, y, mask)))
    grad = jax.jit(loss.grad)(Z, y, None)
    np.testing.assert_allclose(grad[0, 0], (np.full(4, 0.25) - [1, 0, 0, 0]) / 6)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss.fn(Z, y.at[0, 0].set(4))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        loss.fn(Z, jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="one flag per token"):
        loss.fn(Z, y, jnp.ones((3, 2), bool))


@pytest.mark.parametrize(
    ("block", "in_shape", "x"),
    [
        (nn.Embedding(4, 3), (5,), np.array([[0, 1, 1, 3, 1], [2, 2, 0, 0, 1]])),
        (nn.PositionalEmbedding(6, 3), (4, 3), None),
        (nn.RMSNorm(), (3, 4), None),
        pytest.param(nn.LayerNorm(axis=-1), (3, 4), None, marks=pytest.mark.slow),
    ],
    ids=["embedding", "positional", "rmsnorm", "layernorm_last"],
)
def test_check_block_passes(block, in_shape, x):
    """fnn.nn.check_block, the public three-way check, on every new block."""
    result = nn.check_block(block, in_shape, key=jax.random.key(3), x=x)
    assert result.passed, result.table()
    assert all(r.manual_vs_autodiff <= 1e-10 for r in result.rows), result.table()
