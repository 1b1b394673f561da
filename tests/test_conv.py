"""Conv2D, pooling and Flatten: forwards against jax.lax, backwards against jax.vjp;
a small CNN on the bundled digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from test_blocks import check_vjp

import fnn
from fnn import nn

CASES = [
    ("conv_valid", nn.Conv2D(3, 3), (6, 5, 2)),
    ("conv_same", nn.Conv2D(4, 3, padding="SAME"), (5, 5, 1)),
    ("conv_same_stride2", nn.Conv2D(2, (3, 2), stride=2, padding="SAME"), (7, 6, 3)),
    ("conv_pad1_stride", nn.Conv2D(2, 2, stride=(2, 1), padding=1), (5, 4, 2)),
    ("maxpool", nn.MaxPool2D(2), (6, 4, 3)),
    ("maxpool_overlap", nn.MaxPool2D((3, 2), stride=1), (5, 4, 2)),
    ("avgpool", nn.AvgPool2D(2), (6, 4, 3)),
    ("avgpool_stride", nn.AvgPool2D(3, stride=2), (7, 5, 2)),
    ("flatten", nn.Flatten(), (3, 4, 2)),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("name", "block", "in_shape"), CASES, ids=[c[0] for c in CASES]
)
def test_backward_equals_vjp(name, block, in_shape, train):
    """dW, db, dX by im2col/col2im (and pooling's routing) equal jax.vjp."""
    err_x, err_p = check_vjp(block, in_shape, m=3, train=train)
    assert err_x <= 1e-10 and err_p <= 1e-10


def _lax_padding(padding):
    return [(padding, padding)] * 2 if isinstance(padding, int) else padding


@settings(max_examples=examples(4))
@given(
    H=st.integers(3, 7),
    W=st.integers(3, 7),
    C=st.integers(1, 3),
    F=st.integers(1, 3),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    sh=st.integers(1, 2),
    sw=st.integers(1, 2),
    padding=st.sampled_from(["VALID", "SAME", 0, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_conv_against_lax_random_shapes(H, W, C, F, kh, kw, sh, sw, padding, seed):
    """Forward == lax.conv_general_dilated (NHWC, HWIO); backward == jax.vjp."""
    block = nn.Conv2D(F, (kh, kw), stride=(sh, sw), padding=padding)
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        params, _, out_shape = block.init(key, (H, W, C), jnp.float64)
        x = jax.random.normal(jax.random.fold_in(key, 1), (2, H, W, C), jnp.float64)
        y = block.forward(params, {}, x, None, False)[0]
        ref = jax.lax.conv_general_dilated(
            x,
            params["W"],
            (sh, sw),
            _lax_padding(padding),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        ref = ref + params["b"]
        assert y.shape == ref.shape == (2, *out_shape)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    err_x, err_p = check_vjp(block, (H, W, C), m=2, seed=seed)
    assert err_x <= 1e-10 and err_p <= 1e-10


@settings(max_examples=examples(4))
@given(
    H=st.integers(2, 7),
    W=st.integers(2, 7),
    C=st.integers(1, 3),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    kind=st.sampled_from(["max", "avg"]),
    seed=st.integers(0, 2**16),
)
def test_pooling_against_reduce_window(H, W, C, kh, kw, stride, kind, seed):
    """MaxPool/AvgPool == lax.reduce_window (max, sum/(kh·kw)); backward == vjp."""
    kh, kw = min(kh, H), min(kw, W)
    block = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)((kh, kw), stride)
    strides = (kh, kw) if stride is None else stride
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(seed), (2, H, W, C), jnp.float64)
        y = block.forward({}, {}, x, None, False)[0]
        dims, steps = (1, kh, kw, 1), (1, *strides, 1)
        if kind == "max":
            ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, steps, "VALID")
        else:
            ref = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, steps, "VALID")
            ref = ref / (kh * kw)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    err_x, err_p = check_vjp(block, (H, W, C), m=2, seed=seed)
    assert err_x <= 1e-10 and err_p <= 1e-10


def test_maxpool_ties_go_to_first_argmax():
    """On a tie the whole gradient goes to the first maximum in row-major order,
    in the hand-written backward and in jax.vjp of the forward alike."""
    block = nn.MaxPool2D(2)
    x = jnp.ones((1, 2, 2, 1), jnp.float32)
    dy = jnp.full((1, 1, 1, 1), 3.0, jnp.float32)
    _, _, cache = block.forward({}, {}, x, None, False)
    _, dx = block.backward({}, cache, dy)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[3.0, 0.0], [0.0, 0.0]])
    _, pullback = jax.vjp(lambda x: block.forward({}, {}, x, None, False)[0], x)
    np.testing.assert_array_equal(pullback(dy)[0], dx)


def test_conv_shape_errors():
    block = nn.Conv2D(2, 3)
    params, _, _ = block.init(jax.random.key(0), (5, 5, 2), jnp.float32)
    with pytest.raises(nn.ShapeError, match="NHWC"):
        block.forward(params, {}, jnp.zeros((1, 5, 5, 3)), None, False)
    with pytest.raises(ValueError, match="layer 0"):
        nn.init(jax.random.key(0), [nn.Conv2D(2, 7)], (5, 5, 1))
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2D(2, 3, padding="FULL")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2D(2, 0)


# --- a small CNN on the bundled 8x8 digits -----------------------------------------
def _digits(n=None):
    data = fnn.datasets.load_digits()
    X, y = jnp.asarray(data.X) / 16.0, jnp.asarray(data.y)
    perm = jax.random.permutation(jax.random.key(0), X.shape[0])
    X, y = X[perm][:n], y[perm][:n]
    split = int(0.8 * X.shape[0])
    return (X[:split], y[:split]), (X[split:], y[split:])


def cnn():
    return [
        nn.Conv2D(16, 3, padding="SAME"),
        nn.Activation("relu"),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(64, "relu"),
        nn.Dense(10),
    ]


def mlp():
    return [nn.Dense(64, "relu"), nn.Dense(10)]


def _train(blocks, in_shape, X, y, epochs, batch_size=32, seed=0):
    """Mini-batch Adam with manual backprop; returns params and per-epoch losses."""
    params, state = nn.init(jax.random.key(seed), blocks, in_shape)
    opt = fnn.optim.adam(1e-3)
    n_batches = X.shape[0] // batch_size
    X = X.reshape(-1, *in_shape)

    @jax.jit
    def epoch(carry, key):
        params, opt_state = carry
        perm = jax.random.permutation(key, X.shape[0])[: n_batches * batch_size]
        Xb = X[perm].reshape(n_batches, batch_size, *in_shape)
        yb = y[perm].reshape(n_batches, batch_size)

        def step(carry, batch):
            params, opt_state = carry
            (J, _), g = nn.loss_and_grad(blocks, params, *batch, "cross_entropy")
            updates, opt_state = opt.update(g, opt_state, params)
            return (fnn.optim.apply_updates(params, updates), opt_state), J

        carry, losses = jax.lax.scan(step, (params, opt_state), (Xb, yb))
        return carry, jnp.mean(losses)

    keys = jax.random.split(jax.random.key(seed + 1), epochs)
    (params, _), losses = jax.lax.scan(epoch, (params, opt.init(params)), keys)
    return params, losses


def _accuracy(blocks, params, X, y, in_shape):
    out = nn.forward(blocks, params, X.reshape(-1, *in_shape))[0]
    return float(jnp.mean(jnp.argmax(out, axis=1) == y))


def test_cnn_digits_smoke():
    """A few epochs on 400 digits: the loss falls and accuracy beats chance (10%)."""
    (X, y), (X_test, y_test) = _digits(400)
    params, losses = _train(cnn(), (8, 8, 1), X, y, epochs=5)
    assert float(losses[-1]) < 0.7 * float(losses[0])
    assert _accuracy(cnn(), params, X_test, y_test, (8, 8, 1)) > 0.5


@pytest.mark.slow
def test_cnn_versus_mlp_on_digits():
    """Conv(16,3,SAME)-relu-MaxPool(2)-Flatten-Dense(64)-Dense(10) against
    Dense(64)-Dense(10), same optimizer (Adam 1e-3), 30 epochs, 80/20 split.

    Measured once (split and init of seed 0, CPU): CNN 98.1% test accuracy, MLP
    97.8%, so the CNN is ahead by about 0.3 points (1 of 360 test images) on this
    small set. The test asserts that the CNN is not worse than the MLP by more
    than one point and that both exceed 93%.
    """
    (X, y), (X_test, y_test) = _digits()
    p_cnn, _ = _train(cnn(), (8, 8, 1), X, y, epochs=30)
    p_mlp, _ = _train(mlp(), (64,), X, y, epochs=30)
    acc_cnn = _accuracy(cnn(), p_cnn, X_test, y_test, (8, 8, 1))
    acc_mlp = _accuracy(mlp(), p_mlp, X_test, y_test, (64,))
    print(f"digits test accuracy: CNN {acc_cnn:.4f}, MLP {acc_mlp:.4f}")
    assert acc_cnn > 0.93 and acc_mlp > 0.93
    assert acc_cnn >= acc_mlp - 0.01
