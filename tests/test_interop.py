"""Tests for fnn.interop: PyTorch state_dict names and layouts, both ways.

Each PyTorch layer is replayed here by an independent numpy implementation of
the formula in PyTorch's documentation, in PyTorch's layouts (NCHW images, OIHW
kernels, ``weight`` of shape (out, in)); the fnn model with the imported weights
must give the same outputs in float64 (≤ 1e-12). When PyTorch is installed, the
same is checked against the real modules.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import interop, nn

TOL = 1e-12


# --------------------------------------------------------------------------- #
# PyTorch's layers in numpy (PyTorch layouts, float64)
# --------------------------------------------------------------------------- #


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def linear(x, sd, name):
    """nn.Linear: y = x Wᵀ + b, W of shape (out, in)."""
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def conv2d(x, sd, name, padding=0, stride=1):
    """nn.Conv2d, NCHW: y[n,f,i,j] = b[f] + Σ_{c,a,b} x[n,c,si+a,sj+b] K[f,c,a,b]."""
    K, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    F, C, kh, kw = K.shape
    Ho = (x.shape[2] - kh) // stride + 1
    Wo = (x.shape[3] - kw) // stride + 1
    y = np.zeros((x.shape[0], F, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, :, stride * i : stride * i + kh, stride * j : stride * j + kw]
            y[:, :, i, j] = np.einsum("ncab,fcab->nf", patch, K) + b
    return y


def batch_norm_eval(x, sd, name, eps=1e-5):
    """nn.BatchNorm1d/2d in eval mode, channel axis 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = sd[f"{name}.running_mean"].reshape(shape)
    var = sd[f"{name}.running_var"].reshape(shape)
    w, b = sd[f"{name}.weight"].reshape(shape), sd[f"{name}.bias"].reshape(shape)
    return (x - mean) / np.sqrt(var + eps) * w + b


def max_pool2d(x, k=2):
    n, c, H, W = x.shape
    x = x[:, :, : H // k * k, : W // k * k]
    return x.reshape(n, c, H // k, k, W // k, k).max(axis=(3, 5))


def layer_norm(x, sd, name, n_axes, eps=1e-5):
    """nn.LayerNorm over the last ``n_axes`` axes (biased variance)."""
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def rms_norm(x, sd, name, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * sd[f"{name}.weight"]


def prelu(x, sd, name):
    """nn.PReLU on channel axis 1 (or one shared slope)."""
    a = sd[f"{name}.weight"]
    if a.size > 1:
        a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, a * x)


def lstm(x, sd, name):
    """nn.LSTM(batch_first=True), one layer, zero initial state."""
    W_ih, W_hh = sd[f"{name}.weight_ih_l0"], sd[f"{name}.weight_hh_l0"]
    b_ih, b_hh = sd[f"{name}.bias_ih_l0"], sd[f"{name}.bias_hh_l0"]
    n = W_hh.shape[1]
    h = c = np.zeros((x.shape[0], n))
    out = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
        i, f = sigmoid(gates[:, :n]), sigmoid(gates[:, n : 2 * n])
        g, o = np.tanh(gates[:, 2 * n : 3 * n]), sigmoid(gates[:, 3 * n :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def gru(x, sd, name):
    """nn.GRU(batch_first=True): n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))."""
    W_ih, W_hh = sd[f"{name}.weight_ih_l0"], sd[f"{name}.weight_hh_l0"]
    b_ih, b_hh = sd[f"{name}.bias_ih_l0"], sd[f"{name}.bias_hh_l0"]
    n = W_hh.shape[1]
    h = np.zeros((x.shape[0], n))
    out = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ W_ih.T + b_ih
        gh = h @ W_hh.T + b_hh
        r = sigmoid(gi[:, :n] + gh[:, :n])
        z = sigmoid(gi[:, n : 2 * n] + gh[:, n : 2 * n])
        cand = np.tanh(gi[:, 2 * n :] + r * gh[:, 2 * n :])
        h = (1 - z) * cand + z * h
        out.append(h)
    return np.stack(out, axis=1)


def multihead_attention(x, sd, name, num_heads, causal=False):
    """nn.MultiheadAttention(batch_first=True) as self-attention (q = k = v = x)."""
    W, b = sd[f"{name}.in_proj_weight"], sd[f"{name}.in_proj_bias"]
    m, T, d = x.shape
    dh = d // num_heads
    q, k, v = (x @ W[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d] for i in range(3))

    def heads(a):
        return a.reshape(m, T, num_heads, dh).transpose(0, 2, 1, 3)

    S = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(dh)
    if causal:
        S = np.where(np.tril(np.ones((T, T), bool)), S, -np.inf)
    P = np.exp(S - S.max(-1, keepdims=True))
    P = P / P.sum(-1, keepdims=True)
    O = (P @ heads(v)).transpose(0, 2, 1, 3).reshape(m, T, d)
    return O @ sd[f"{name}.out_proj.weight"].T + sd[f"{name}.out_proj.bias"]


def random_state_dict(names_shapes, rng):
    """Random float64 values for ``{name: shape}``; running variances positive."""
    sd = {}
    for name, shape in names_shapes.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = np.asarray(3, np.int64)
        elif name.endswith("running_var"):
            sd[name] = rng.uniform(0.5, 2.0, shape)
        else:
            sd[name] = rng.normal(size=shape)
    return sd


def random_params(model, in_shape, rng, dtype=np.float32):
    """Random ``(params, state)`` of ``model`` (numpy draws in the structure of
    ``fnn.nn.init``, abstractly evaluated: quicker than drawing with jax)."""
    template = jax.eval_shape(
        lambda key: nn.init(key, model, in_shape, dtype), jax.random.key(0)
    )
    params, state = jax.tree.map(
        lambda t: jnp.asarray(rng.normal(size=t.shape).astype(t.dtype)), template
    )
    state = jax.tree.map(lambda v: jnp.abs(v) + 0.5, state)  # variances > 0
    return params, state


def torch_shapes(model, in_shape):
    """The PyTorch names and shapes of ``model``, from an fnn initialisation."""
    params, state = random_params(model, in_shape, np.random.default_rng(0))
    exported = interop.to_torch_state_dict(model, params, state, in_shape=in_shape)
    return {k: v.shape for k, v in exported.items()}


def fnn_forward(model, params, state, x):
    """fnn's forward in evaluation mode, compiled."""
    run = jax.jit(lambda p, s, x: nn.forward(model, p, x, state=s)[0])
    return np.asarray(run(params, state, jnp.asarray(x)))


# --------------------------------------------------------------------------- #
# Models: fnn block, its PyTorch forward in numpy, its input
# --------------------------------------------------------------------------- #


def mlp_case(rng):
    model = fnn.mlp([4, 8, 3], "tanh")

    def reference(x, sd):  # nn.Sequential(Linear, Tanh, Linear)
        return linear(np.tanh(linear(x, sd, "0")), sd, "2")

    return model, (4,), reference, rng.normal(size=(5, 4)), None


def cnn_case(rng):
    """Conv2d + BatchNorm2d + ReLU + MaxPool2d + Flatten + Linear + BatchNorm1d +
    ReLU + Linear: NCHW in PyTorch, NHWC in fnn."""
    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, padding=1),
            nn.BatchNorm(),
            nn.Activation("relu"),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(6),
            nn.BatchNorm(),
            nn.Activation("relu"),
            nn.Dense(3),
        ]
    )

    def reference(x, sd):
        h = conv2d(x, sd, "0", padding=1)
        h = max_pool2d(np.maximum(batch_norm_eval(h, sd, "1"), 0))
        h = h.reshape(h.shape[0], -1)  # torch.flatten(h, 1): (C, H, W) order
        h = np.maximum(batch_norm_eval(linear(h, sd, "5"), sd, "6"), 0)
        return linear(h, sd, "8")

    x = rng.normal(size=(3, 2, 6, 6))  # NCHW
    return model, (6, 6, 2), reference, x, (0, 2, 3, 1)


def recurrent_case(rng):
    model = nn.Sequential([nn.LSTM(5), nn.GRU(4)])

    def reference(x, sd):
        return gru(lstm(x, sd, "0"), sd, "1")

    return model, (7, 3), reference, rng.normal(size=(2, 7, 3)), None


def attention_case(rng):
    model = nn.Sequential(
        [nn.MultiHeadAttention(2, causal=True), nn.LayerNorm(axis=-1), nn.RMSNorm()]
    )

    def reference(x, sd):
        h = multihead_attention(x, sd, "0", 2, causal=True)
        return rms_norm(layer_norm(h, sd, "1", 1), sd, "2", 1e-6)

    return model, (5, 6), reference, rng.normal(size=(2, 5, 6)), None


def embedding_case(rng):
    model = nn.Sequential(
        [nn.Embedding(11, 4), nn.PReLU(), nn.Flatten(), nn.Dense(3), nn.PReLU(True)]
    )

    def reference(ids, sd):
        h = sd["0.weight"][ids]  # nn.Embedding
        # nn.PReLU(4) takes channels at axis 1: on h.transpose(0, 2, 1), here
        h = np.where(h > 0, h, sd["1.weight"] * h)
        return prelu(linear(h.reshape(len(ids), -1), sd, "3"), sd, "4")

    return model, (5,), reference, rng.integers(0, 11, size=(3, 5)), None


def layer_norm_image_case(rng):
    """nn.LayerNorm([C, H, W]) on NCHW is fnn's LayerNorm() on NHWC."""
    model = nn.Sequential([nn.Conv2D(3, 2), nn.LayerNorm(), nn.PReLU()])

    def reference(x, sd):
        return prelu(layer_norm(conv2d(x, sd, "0"), sd, "1", 3), sd, "2")

    return model, (4, 5, 2), reference, rng.normal(size=(2, 2, 4, 5)), (0, 2, 3, 1)


CASES = [
    mlp_case,
    cnn_case,
    recurrent_case,
    attention_case,
    embedding_case,
    layer_norm_image_case,
]


def _to_fnn_input(x, perm):
    return x if perm is None else np.transpose(x, perm)


def _to_torch_output(y, perm):
    if perm is None or y.ndim != 4:
        return y
    return np.transpose(y, (0, 3, 1, 2))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_torch_to_fnn_gives_torch_outputs(case):
    """A random PyTorch state_dict, imported: fnn's forward equals PyTorch's
    formulas in float64."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        model, in_shape, reference, x, perm = case(rng)
        sd = random_state_dict(torch_shapes(model, in_shape), rng)
        params, state = interop.from_torch_state_dict(model, sd, in_shape=in_shape)
        assert jax.tree.leaves(params)[0].dtype == jnp.float64
        y = fnn_forward(model, params, state, _to_fnn_input(x, perm))
        np.testing.assert_allclose(
            _to_torch_output(y, perm), reference(x, sd), rtol=0, atol=TOL
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_fnn_to_torch_gives_fnn_outputs(case):
    """fnn parameters (and trained-looking state), exported: PyTorch's formulas on
    the exported names give fnn's outputs."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        model, in_shape, reference, x, perm = case(rng)
        params, state = random_params(model, in_shape, rng, np.float64)
        sd = interop.to_torch_state_dict(model, params, state, in_shape=in_shape)
        y = fnn_forward(model, params, state, _to_fnn_input(x, perm))
        np.testing.assert_allclose(
            _to_torch_output(y, perm), reference(x, sd), rtol=0, atol=TOL
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_round_trip_is_exact(case):
    """from_torch_state_dict(to_torch_state_dict(p, s)) == (p, s), bit for bit."""
    rng = np.random.default_rng(2)
    model, in_shape, *_ = case(rng)
    params, state = random_params(model, in_shape, rng)
    sd = interop.to_torch_state_dict(model, params, state, in_shape=in_shape)
    assert list(sd) == interop.torch_names(model, in_shape=in_shape)
    back = interop.from_torch_state_dict(model, sd, in_shape=in_shape)
    chex.assert_trees_all_equal(back, (params, state))
    assert jax.tree.structure(back) == jax.tree.structure((params, state))


def test_names_follow_torch_sequential_indices():
    """A Dense with an activation takes two nn.Sequential indices (Linear, act)."""
    assert interop.torch_names(fnn.mlp([4, 8, 3], "tanh")) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    model = nn.Sequential([nn.Dense(5), nn.Activation("relu"), nn.Dense(2)])
    assert interop.torch_names(model, in_shape=(3,)) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    res = nn.Residual(nn.Dense(3), nn.Dense(3))
    assert interop.torch_names(res, in_shape=(2,)) == [
        "block.weight",
        "block.bias",
        "projection.weight",
        "projection.bias",
    ]


def test_layouts_are_torch_layouts():
    """Linear weight = Wᵀ; Conv2d weight OIHW from HWIO; LSTM weight_ih = Wᵀ."""
    model = nn.Sequential([nn.Conv2D(4, (3, 2)), nn.Flatten(), nn.Dense(2)])
    rng = np.random.default_rng(5)
    params, state = random_params(model, (5, 5, 3), rng)
    sd = interop.to_torch_state_dict(model, params, state, in_shape=(5, 5, 3))
    np.testing.assert_array_equal(
        sd["0.weight"], np.transpose(np.asarray(params[0]["W"]), (3, 2, 0, 1))
    )
    assert sd["0.weight"].shape == (4, 3, 3, 2)
    assert sd["2.weight"].shape == (2, 3 * 4 * 4)
    lstm_block = nn.LSTM(6)
    p, s = random_params(lstm_block, (4, 3), rng)
    sd = interop.to_torch_state_dict(lstm_block, p, s, in_shape=(4, 3))
    assert list(sd) == ["weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0"]
    np.testing.assert_array_equal(sd["weight_ih_l0"], np.asarray(p["input"]["W"]).T)
    assert sd["weight_hh_l0"].shape == (24, 6)


def test_batch_norm_state_and_counter():
    """running_mean/var go to the state unchanged; num_batches_tracked is
    optional on import and exported as int64 0."""
    model = nn.Sequential([nn.Dense(3), nn.BatchNorm()])
    rng = np.random.default_rng(3)
    sd = random_state_dict(torch_shapes(model, (2,)), rng)
    sd_f32 = {
        k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in sd.items()
    }
    params, state = interop.from_torch_state_dict(model, sd_f32, in_shape=(2,))
    np.testing.assert_array_equal(state[1]["var"], sd_f32["1.running_var"])
    np.testing.assert_array_equal(state[1]["mean"], sd_f32["1.running_mean"])
    del sd_f32["1.num_batches_tracked"]
    interop.from_torch_state_dict(model, sd_f32, in_shape=(2,))
    out = interop.to_torch_state_dict(model, params, state, in_shape=(2,))
    assert out["1.num_batches_tracked"].dtype == np.int64
    assert out["1.num_batches_tracked"].shape == ()


def test_attention_drops_the_key_bias():
    """PyTorch's key bias shifts every score of a row equally: dropped on import,
    written as zeros on export, the output unchanged."""
    rng = np.random.default_rng(4)
    model = nn.MultiHeadAttention(2)
    with jax.enable_x64(True):
        sd = random_state_dict(torch_shapes(model, (4, 6)), rng)
        params, state = interop.from_torch_state_dict(model, sd, in_shape=(4, 6))
        x = rng.normal(size=(2, 4, 6))
        np.testing.assert_allclose(
            fnn_forward(model, params, state, x),
            multihead_attention(x, {f"a.{k}": v for k, v in sd.items()}, "a", 2),
            rtol=0,
            atol=TOL,
        )
        back = interop.to_torch_state_dict(model, params, state, in_shape=(4, 6))
        np.testing.assert_array_equal(back["in_proj_bias"][6:12], 0.0)


class FakeTensor:
    """A stand-in for torch.Tensor: read only through .detach().cpu().numpy()."""

    def __init__(self, array):
        self._array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._array

    def __array__(self, *args, **kwargs):
        raise AssertionError("read through .numpy(), not np.asarray")


def test_accepts_tensors_with_detach_cpu_numpy():
    model = fnn.mlp([3, 2])
    params, state = random_params(model, (3,), np.random.default_rng(0))
    sd = interop.to_torch_state_dict(model, params, state)
    back, _ = interop.from_torch_state_dict(
        model, {k: FakeTensor(v) for k, v in sd.items()}
    )
    chex.assert_trees_all_equal(back, params)


def _mlp_dict():
    model = fnn.mlp([3, 4, 2], "relu")
    params, state = random_params(model, (3,), np.random.default_rng(0))
    return model, interop.to_torch_state_dict(model, params, state)


def test_missing_key_is_named():
    model, sd = _mlp_dict()
    del sd["2.bias"]
    with pytest.raises(ValueError, match=r"missing \['2.bias'\]"):
        interop.from_torch_state_dict(model, sd)


def test_extra_key_is_named_unless_not_strict():
    model, sd = _mlp_dict()
    sd["3.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"does not use: \['3.weight'\]"):
        interop.from_torch_state_dict(model, sd)
    interop.from_torch_state_dict(model, sd, strict=False)


def test_wrong_shape_names_key_and_shapes():
    """A weight given in fnn's layout (not transposed) is refused, not loaded."""
    model, sd = _mlp_dict()
    sd["0.weight"] = sd["0.weight"].T
    with pytest.raises(
        ValueError, match=r"'0.weight'.*shape \(3, 4\), expected \(4, 3\)"
    ):
        interop.from_torch_state_dict(model, sd)


def test_prefix_is_stripped_and_added():
    model, sd = _mlp_dict()
    prefixed = {f"model.{k}": v for k, v in sd.items()}
    params, state = interop.from_torch_state_dict(model, prefixed, prefix="model.")
    assert list(interop.to_torch_state_dict(model, params, state, prefix="model.")) == (
        list(prefixed)
    )


def test_float64_needs_x64():
    model, sd = _mlp_dict()
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    with jax.enable_x64(False), pytest.raises(ValueError, match="enable_x64"):
        interop.from_torch_state_dict(model, sd64)
    params, _ = interop.from_torch_state_dict(model, sd64, dtype=np.float32)
    assert params[0]["W"].dtype == jnp.float32


def test_blocks_without_torch_counterpart_are_refused():
    with pytest.raises(ValueError, match="learned initial state"):
        interop.torch_names(nn.LSTM(3, initial_state="learned"), in_shape=(4, 2))
    with pytest.raises(ValueError, match="no known PyTorch counterpart"):
        interop.torch_names(nn.Maxout(3, 2), in_shape=(4,))
    flat_conv = nn.Sequential([nn.Flatten(), nn.Residual(nn.Dense(12))])
    with pytest.raises(ValueError, match="flattened image"):
        interop.torch_names(flat_conv, in_shape=(2, 2, 3))


def test_to_torch_checks_params_against_model():
    model = fnn.mlp([3, 4, 2])
    params, state = random_params(fnn.mlp([3, 5, 2]), (3,), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"0.W has shape \(3, 5\).*expects \(3, 4\)"):
        interop.to_torch_state_dict(model, params, state)
    bn = nn.Sequential([nn.Dense(2), nn.BatchNorm()])
    p, _ = random_params(bn, (3,), np.random.default_rng(0))
    with pytest.raises(ValueError, match="pass state="):
        interop.to_torch_state_dict(bn, p, None, in_shape=(3,))


# --------------------------------------------------------------------------- #
# Against real PyTorch modules, when installed
# --------------------------------------------------------------------------- #


def test_against_torch_modules():
    """MLP and CNN with batch norm: PyTorch → fnn and fnn → PyTorch, float64."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    torch.manual_seed(0)
    with jax.enable_x64(True):
        mlp_t = tnn.Sequential(tnn.Linear(4, 8), tnn.Tanh(), tnn.Linear(8, 3)).double()
        cnn_t = tnn.Sequential(
            tnn.Conv2d(2, 4, 3, padding=1),
            tnn.BatchNorm2d(4),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Flatten(),
            tnn.Linear(36, 3),
        ).double()
        cnn_t.train()
        cnn_t(torch.randn(8, 2, 6, 6, dtype=torch.float64))  # running averages
        cnn_t.eval()
        mlp_f = fnn.mlp([4, 8, 3], "tanh")
        cnn_f = nn.Sequential(
            [
                nn.Conv2D(4, 3, padding=1),
                nn.BatchNorm(),
                nn.Activation("relu"),
                nn.MaxPool2D(2),
                nn.Flatten(),
                nn.Dense(3),
            ]
        )
        for t_model, f_model, x, in_shape in (
            (mlp_t, mlp_f, np.random.default_rng(0).normal(size=(5, 4)), None),
            (
                cnn_t,
                cnn_f,
                np.random.default_rng(0).normal(size=(3, 2, 6, 6)),
                (6, 6, 2),
            ),
        ):
            params, state = interop.from_torch_state_dict(
                f_model, t_model.state_dict(), in_shape=in_shape
            )
            fx = x if x.ndim == 2 else x.transpose(0, 2, 3, 1)
            y_f = fnn_forward(f_model, params, state, fx)
            with torch.no_grad():
                y_t = t_model(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(y_f, y_t, rtol=0, atol=TOL)
            params = jax.tree.map(lambda p: p * 1.5, params)
            sd = interop.to_torch_state_dict(f_model, params, state, in_shape=in_shape)
            t_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
            with torch.no_grad():
                y_t = t_model(torch.from_numpy(x)).numpy()
            y_f = fnn_forward(f_model, params, state, fx)
            np.testing.assert_allclose(y_f, y_t, rtol=0, atol=TOL)


def test_sequence_blocks_against_torch_modules():
    """Embedding, LSTM, GRU, MultiheadAttention (causal), LayerNorm, RMSNorm:
    random PyTorch modules, imported, give PyTorch's outputs in float64."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    torch.manual_seed(0)
    T, d = 5, 6

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(11, d)
            self.lstm = tnn.LSTM(d, 4, batch_first=True)
            self.gru = tnn.GRU(4, d, batch_first=True)
            self.attn = tnn.MultiheadAttention(d, 2, batch_first=True)
            self.ln = tnn.LayerNorm(d)
            self.rms = tnn.RMSNorm(d, eps=1e-6)

        def forward(self, ids):
            h = self.gru(self.lstm(self.emb(ids))[0])[0]
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            h = self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return self.rms(self.ln(h))

    net = Net().double().eval()
    blocks = [
        nn.Embedding(11, d),
        nn.LSTM(4),
        nn.GRU(d),
        nn.MultiHeadAttention(2, causal=True),
        nn.LayerNorm(axis=-1),
        nn.RMSNorm(),
    ]
    names = ["emb", "lstm", "gru", "attn", "ln", "rms"]
    ids = np.random.default_rng(0).integers(0, 11, size=(3, T))
    with jax.enable_x64(True):
        sd = net.state_dict()
        params, state = [], []
        shape = (T,)
        for name, block in zip(names, blocks, strict=True):
            p, s = interop.from_torch_state_dict(
                block, sd, in_shape=shape, prefix=f"{name}.", strict=False
            )
            params.append(p)
            state.append(s)
            shape = nn.out_shape(block, shape)
        y_f = fnn_forward(nn.Sequential(blocks), params, state, ids)
        with torch.no_grad():
            y_t = net(torch.from_numpy(ids)).numpy()
        np.testing.assert_allclose(y_f, y_t, rtol=0, atol=TOL)
