"""Losses: closed forms, hand-derived gradients against autodiff, stability, labels."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import losses

REGRESSION = [("mse", {}), ("mae", {}), ("huber", {}), ("huber", {"delta": 0.3})]


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_values_against_numpy_closed_forms():
    rng = np.random.default_rng(0)
    out, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    with jax.enable_x64(True):
        r = out - Y
        assert float(losses.mse().fn(out, Y)) == pytest.approx(np.mean(r**2))
        assert float(losses.mae().fn(out, Y)) == pytest.approx(np.mean(np.abs(r)))
        h = np.where(np.abs(r) <= 0.5, 0.5 * r**2, 0.5 * (np.abs(r) - 0.25))
        assert float(losses.huber(0.5).fn(out, Y)) == pytest.approx(np.mean(h))
        t = (Y > 0).astype(float)
        p = _sigmoid(out)
        bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
        assert float(losses.bce().fn(out, t)) == pytest.approx(bce)
        onehot = np.eye(3)[[0, 2, 1, 1, 0, 2]]
        softmax = np.exp(out) / np.exp(out).sum(1, keepdims=True)
        ce = -np.mean(np.sum(onehot * np.log(softmax), axis=1))
        assert float(losses.cross_entropy().fn(out, onehot)) == pytest.approx(ce)


@pytest.mark.parametrize(
    ("name", "kwargs"), [*REGRESSION, ("bce", {}), ("cross_entropy", {})]
)
@pytest.mark.parametrize("masked", [False, True])
def test_grad_equals_autodiff(name, kwargs, masked):
    """∂J/∂out, with the 1/m inside, equals jax.grad of the loss in float64."""
    loss = losses.get(name, **kwargs)
    with jax.enable_x64(True):
        key_out, key_y = jax.random.split(jax.random.key(1))
        out = jax.random.normal(key_out, (7, 3), jnp.float64)
        Y = jax.random.uniform(key_y, (7, 3), jnp.float64)
        if name == "cross_entropy":
            Y = Y / Y.sum(axis=1, keepdims=True)
        mask = jnp.asarray([1, 1, 0, 1, 0, 1, 1], bool) if masked else None
        expected = jax.grad(loss.fn)(out, Y, mask)
        np.testing.assert_allclose(
            jax.jit(loss.grad)(out, Y, mask), expected, rtol=1e-12
        )


@pytest.mark.parametrize(
    ("name", "kwargs"), [*REGRESSION, ("bce", {}), ("cross_entropy", {})]
)
def test_grad_equals_autodiff_on_exact_ties(name, kwargs):
    """Zero logits and zero residuals (|r| = δ for Huber) are where a stable or
    piecewise forward can hand jax.grad a different subgradient than the
    hand-derived one; bce once read −y there instead of σ(0) − y."""
    loss = losses.get(name, **kwargs)
    with jax.enable_x64(True):
        Y = jnp.asarray([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]], jnp.float64)
        if name == "cross_entropy":
            Y = Y / Y.sum(axis=1, keepdims=True)
        delta = kwargs.get("delta", 1.0) if name == "huber" else 0.0
        for out in (jnp.zeros_like(Y), Y, Y + delta, Y - delta):
            np.testing.assert_allclose(
                loss.grad(out, Y), jax.grad(loss.fn)(out, Y), rtol=1e-12, atol=0
            )


def test_fused_errors_are_the_seed_formula():
    """softmax + CE: ∂J/∂Z = (softmax(Z) − e(y))/m; sigmoid + BCE: (σ(Z) − y)/m
    (seed 001, f(x) − e(y))."""
    with jax.enable_x64(True):
        Z = jnp.asarray([[1.0, 2.0, -1.0], [0.5, 0.0, 0.3]], jnp.float64)
        labels = jnp.asarray([2, 0])
        E = np.eye(3)[[2, 0]]
        S = np.exp(np.asarray(Z)) / np.exp(np.asarray(Z)).sum(1, keepdims=True)
        np.testing.assert_allclose(
            losses.cross_entropy().grad(Z, E), (S - E) / 2, rtol=1e-13
        )
        z, t = Z[:, :1], jnp.asarray([[1.0], [0.0]])
        np.testing.assert_allclose(
            losses.bce().grad(z, t), (_sigmoid(np.asarray(z)) - t) / 2, rtol=1e-13
        )
        out = jnp.zeros((2, 3), jnp.float64)
        Y = losses.targets(losses.cross_entropy(), out, labels)
        np.testing.assert_array_equal(Y, E)


def test_stable_at_huge_logits_in_float32():
    """Finite values and gradients at logits of ±1e4, and the right values."""
    Z = jnp.asarray([[1e4, -1e4], [-1e4, 1e4]], jnp.float32)
    ce = losses.cross_entropy()
    Y = jnp.asarray([[1.0, 0.0], [1.0, 0.0]], jnp.float32)
    # First row right with certainty (0), second wrong by 2e4 nats.
    assert float(ce.fn(Z, Y)) == pytest.approx(1e4)
    np.testing.assert_allclose(ce.grad(Z, Y), [[0, 0], [-0.5, 0.5]])
    b = losses.bce()
    Yb = jnp.asarray([[1.0, 1.0], [0.0, 0.0]], jnp.float32)
    assert float(b.fn(Z, Yb)) == pytest.approx((0 + 1e4 + 0 + 1e4) / 4)
    assert bool(jnp.all(jnp.isfinite(b.grad(Z, Yb))))
    params = [{"W": jnp.asarray([[1e4, -1e4]], jnp.float32), "b": jnp.zeros(2)}]
    x = jnp.ones((1, 1), jnp.float32)
    for name, y in (
        ("cross_entropy", jnp.asarray([1])),
        ("bce", jnp.asarray([[0.0, 1.0]])),
    ):
        J, grads = jax.jit(lambda p, name=name, y=y: fnn.backprop(p, x, y, loss=name))(
            params
        )
        assert bool(jnp.isfinite(J)) and float(J) > 1e3
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_mask_ignores_padding():
    """A padded batch with its mask gives the loss of the real examples alone."""
    rng = np.random.default_rng(2)
    out, Y = jnp.asarray(rng.normal(size=(5, 2))), jnp.asarray(rng.normal(size=(5, 2)))
    mask = jnp.asarray([True, True, True, False, False])
    for name in ("mse", "bce", "cross_entropy"):
        loss = losses.get(name)
        T = jnp.abs(Y) / jnp.abs(Y).sum(1, keepdims=True) if name != "mse" else Y
        full = loss.fn(out[:3], T[:3])
        padded = loss.fn(out, T.at[3:].set(123.0), mask)
        np.testing.assert_allclose(padded, full, rtol=1e-6)
        np.testing.assert_allclose(loss.grad(out, T, mask)[3:], 0.0)


def test_penalty_on_weights_only():
    """Ω = l1Σ|W| + l2ΣW², biases untouched (seed 001); gradient l1 sign(W) + 2l2W."""
    params = [
        {"W": jnp.asarray([[1.0, -2.0]]), "b": jnp.asarray([5.0, 5.0])},
        {"W": jnp.asarray([[3.0], [0.5]]), "b": jnp.asarray([7.0])},
    ]
    assert float(losses.weight_penalty(params, l1=0.1, l2=0.01)) == pytest.approx(
        0.1 * 6.5 + 0.01 * (1 + 4 + 9 + 0.25)
    )
    grads = losses.weight_penalty_grad(params, l1=0.1, l2=0.01)
    np.testing.assert_allclose(grads[0]["W"], [[0.1 + 0.02, -0.1 - 0.04]])
    np.testing.assert_array_equal(grads[1]["b"], [0.0])
    # Seed 000's L2 term λ/(2m)‖W‖² is l2 = λ/(2m): its gradient is (λ/m)W.
    lam, m = 3.0, 10
    g = losses.weight_penalty_grad(params, l2=lam / (2 * m))
    np.testing.assert_allclose(g[1]["W"], (lam / m) * params[1]["W"])


def test_penalty_grad_equals_autodiff_at_zero_weights():
    """With weights at exactly 0 (zeros init, pruned units), ∂(l1Σ|W|)/∂W = 0 by
    hand and by jax.grad alike."""
    params = [{"W": jnp.asarray([[0.0, -2.0], [0.0, 1.5]]), "b": jnp.zeros(2)}]
    auto = jax.grad(lambda p: losses.weight_penalty(p, l1=0.1, l2=0.01))(params)
    manual = losses.weight_penalty_grad(params, l1=0.1, l2=0.01)
    np.testing.assert_allclose(manual[0]["W"], auto[0]["W"], rtol=1e-6)
    np.testing.assert_array_equal(manual[0]["W"][:, 0], [0.0, 0.0])


@pytest.mark.parametrize(
    ("loss", "out_shape", "y", "match"),
    [
        (
            "cross_entropy",
            (4, 3),
            jnp.zeros((4, 1), jnp.int32),
            r"integer labels.*\(4,\)",
        ),
        ("cross_entropy", (4, 3), jnp.zeros((4, 2)), r"\(4, 3\)"),
        ("cross_entropy", (4, 3), jnp.asarray([0, 1, 3, 2]), r"\[0, 3\)"),
        ("cross_entropy", (4, 3), jnp.asarray([0, -1, 0, 2]), r"\[0, 3\)"),
        ("bce", (4, 1), jnp.zeros((3,)), r"\(4, 1\) or \(4,\)"),
        ("mse", (4, 2), jnp.zeros((4,)), r"\(4, 2\)"),
    ],
)
def test_wrong_labels_raise(loss, out_shape, y, match):
    with pytest.raises(ValueError, match=match):
        losses.targets(losses.get(loss), jnp.zeros(out_shape), y)


def test_unknown_loss_and_output_mismatch():
    params = fnn.init_params(jax.random.key(0), [2, 3])
    x, y = jnp.ones((2, 2)), jnp.asarray([0, 1])
    with pytest.raises(ValueError, match="unknown loss 'xent'.*cross_entropy.*mse"):
        fnn.loss(params, x, y, loss="xent")
    with pytest.raises(ValueError, match="logits with a softmax output"):
        fnn.loss(params, x, y, loss="cross_entropy", output="sigmoid")


def test_bce_targets_outside_unit_interval_raise():
    """A BCE label 2 gives a finite loss; targets refuses it eagerly, naming the row."""
    out = jnp.zeros((4, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\].*row 2 holds 2"):
        losses.targets(losses.bce(), out, jnp.asarray([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"row 1 holds -1"):
        losses.targets(losses.bce(), out, jnp.asarray([0, -1, 1, 0]))
    Y = losses.targets(losses.bce(), out, jnp.asarray([0.0, 1.0, 0.25, 1.0]))
    np.testing.assert_array_equal(Y[:, 0], [0.0, 1.0, 0.25, 1.0])


def test_targets_under_jit_check_shapes_only():
    """The documented traced behaviour: a label outside [0, k) is an all-zero row."""
    out = jnp.zeros((3, 3))
    Y = jax.jit(lambda y: losses.targets(losses.cross_entropy(), out, y))(
        jnp.asarray([0, 7, 2])
    )
    np.testing.assert_array_equal(Y, np.eye(3)[[0, 0, 2]] * [[1], [0], [1]])


def test_cross_entropy_fn_and_grad_accept_integer_labels():
    rng = np.random.default_rng(3)
    ce = losses.cross_entropy()
    with jax.enable_x64(True):
        Z = jnp.asarray(rng.normal(size=(4, 3)))
        labels = jnp.asarray([2, 0, 1, 2])
        E = jnp.asarray(np.eye(3)[[2, 0, 1, 2]])
        np.testing.assert_allclose(ce.fn(Z, labels), ce.fn(Z, E), rtol=1e-14)
        np.testing.assert_allclose(ce.grad(Z, labels), ce.grad(Z, E), rtol=1e-14)
        np.testing.assert_allclose(jax.jit(ce.fn)(Z, labels), ce.fn(Z, E), rtol=1e-14)
    with pytest.raises(ValueError, match=r"\[0, 3\).*row 1 holds the label 3"):
        ce.fn(Z, jnp.asarray([0, 3, 1, 1]))


@pytest.mark.parametrize("name", losses.names())
def test_get_returns_the_same_object(name):
    """fit caches compiled functions keyed on the Loss: one name, one object."""
    assert losses.get(name) is losses.get(name)
    assert losses.get("huber", delta=0.5) is losses.get("huber", delta=0.5)
    assert losses.get("huber", delta=0.5) is not losses.get("huber", delta=0.25)
    assert losses.get("bce") is losses.get("binary_cross_entropy")


def test_penalty_strengths_may_be_traced():
    """l1/l2 as traced values (a vmap over L2 strengths) give each strength's
    gradient, by hand and by autodiff; the Python 0 skips the penalty."""
    X = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    y = jnp.array([0, 1, 1, 0, 1, 0])
    params = fnn.init_params(jax.random.key(0), [3, 4, 2])
    kw = dict(loss="cross_entropy", activation="tanh", output="softmax")
    strengths = jnp.array([0.0, 0.1, 0.5], jnp.float32)

    def manual(l2):
        return fnn.backprop(params, X, y, l2=l2, **kw)[1]

    def auto(l2):
        return jax.grad(lambda p: fnn.loss(p, X, y, l2=l2, **kw))(params)

    batched = jax.jit(jax.vmap(manual))(strengths)
    for i, l2 in enumerate([0.0, 0.1, 0.5]):
        one = jax.tree.map(lambda g, i=i: g[i], batched)
        chex.assert_trees_all_close(one, manual(l2), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        jax.vmap(auto)(strengths), batched, rtol=1e-5, atol=1e-6
    )
    assert not losses.has_penalty(0, 0.0) and losses.has_penalty(0, strengths[0])
