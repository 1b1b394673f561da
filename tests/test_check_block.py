"""fnn.nn.check_block on every built-in block and combinator, and on planted bugs.

For each block b the check compares, in float64, the hand-written backward with
``jax.vjp`` of b's own forward and with central differences of ⟨b(θ, x), dy⟩
(the article "Deep Learning", section 4, "Gradient Checking"): the backward
must equal the vector-Jacobian product to rounding (≤ 1e-10 relative) and the
finite differences to ≤ 1e-7 away from kinks. Planted bugs (a sign flip in one
parameter leaf, a factor 1.1 in dx, a wrong dparams structure, a backward that
ignores the dropout mask or the batch statistics) must fail the check with the
wrong row named; a relu or a max exactly at its kink is reported as ``kink``.
"""

import jax
import jax.numpy as jnp
import pytest

import fnn
from fnn import nn

AUTODIFF_TOL = 1e-10
NUMERICAL_TOL = 1e-7

# Nonzero biases keep every relu-like pre-activation away from 0, where the
# finite difference reads the average of the two one-sided slopes.
_B = {"b_init": "normal"}

# Shapes are shared between cases (flat inputs (3, 4), images (3, 5, 5, 2)):
# JAX compiles each eager operation once per shape, so equal shapes keep the
# file fast.
F, IMG = (4,), (5, 5, 2)


def _slow(*case):
    return pytest.param(*case, marks=pytest.mark.slow, id=case[0])


BLOCKS = [
    # Dense with smooth, piecewise and output activations
    ("dense_identity", nn.Dense(4), F, False),
    ("dense_relu", nn.Dense(4, "relu", **_B), F, False),
    ("dense_tanh", nn.Dense(4, "tanh", **_B), F, False),
    ("dense_selu", nn.Dense(4, "selu", **_B), F, False),
    ("dense_softmax", nn.Dense(4, "softmax", **_B), F, False),
    # An activation on its own, with a parameter
    ("activation_elu", nn.Activation("elu", alpha=0.5), F, False),
    # Dropout in training mode (check_block's fixed key) and in evaluation
    ("dropout_train", nn.Dropout(0.4), F, True),
    ("dropout_eval", nn.Dropout(0.4), F, False),
    # Normalization
    ("batchnorm_train", nn.BatchNorm(), F, True),
    ("batchnorm_eval", nn.BatchNorm(), F, False),
    ("batchnorm_image_train", nn.BatchNorm(momentum=0.8), IMG, True),
    ("layernorm", nn.LayerNorm(), F, False),
    _slow("layernorm_image", nn.LayerNorm(), IMG, False),
    # Convolution and pooling on 5x5x2 images
    ("conv_same", nn.Conv2D(2, 3, padding="SAME", **_B), IMG, False),
    ("conv_valid_stride2", nn.Conv2D(2, 3, stride=2, **_B), IMG, False),
    _slow("conv_pad1_stride_1x2", nn.Conv2D(2, (3, 2), (1, 2), 1, **_B), IMG, False),
    ("maxpool", nn.MaxPool2D(2), IMG, False),
    _slow("maxpool_overlap", nn.MaxPool2D(3, 1), IMG, False),
    ("avgpool", nn.AvgPool2D(2), IMG, False),
    _slow("avgpool_overlap", nn.AvgPool2D((2, 3), (1, 2)), IMG, False),
    ("flatten", nn.Flatten(), IMG, False),
    # Maxout and PReLU
    ("maxout", nn.Maxout(2, 2, **_B), F, False),
    ("prelu", nn.PReLU(), F, False),
    ("prelu_shared", nn.PReLU(shared=True), F, False),
    ("prelu_image", nn.PReLU(alpha_init=0.1), IMG, False),
    # Combinators
    ("sequential", nn.Sequential([nn.Dense(4, "tanh", **_B), nn.Dense(4)]), F, False),
    ("residual", nn.Residual(nn.Dense(4, "sigmoid", **_B)), F, False),
    (
        "residual_projection",
        nn.Residual(nn.Dense(2, "tanh", **_B), projection=nn.Dense(2, **_B)),
        F,
        False,
    ),
    ("concat", nn.Concat([nn.Dense(2, "tanh", **_B), nn.Dense(2, **_B)]), F, False),
    ("list", nn.as_model([nn.Dense(4, "gelu"), nn.LayerNorm()]), F, False),
]

NESTED = [
    # fnn.mlp: the design card's MLP as a model value, dropout on in training mode
    (
        "mlp_with_dropout_train",
        fnn.mlp([F[0], 5, 4], activation="tanh", drop_rate=0.3, b_init="normal"),
        F,
        True,
    ),
    # A residual of a Sequential holding BatchNorm and Dropout, in training mode
    (
        "residual_of_sequential_bn_dropout_train",
        nn.Residual(
            nn.Sequential([nn.Dense(4, "tanh", **_B), nn.BatchNorm(), nn.Dropout(0.3)])
        ),
        F,
        True,
    ),
    (
        "residual_of_sequential_bn_dropout_eval",
        nn.Residual(
            nn.Sequential([nn.Dense(4, "tanh", **_B), nn.BatchNorm(), nn.Dropout(0.3)])
        ),
        F,
        False,
    ),
    (
        "concat_in_residual",
        nn.Residual(nn.Concat([nn.Dense(2, "tanh", **_B), nn.Dense(2, **_B)])),
        F,
        False,
    ),
    (
        "sequential_of_sequentials",
        nn.Sequential(
            [
                nn.Sequential([nn.Dense(4, "softplus", **_B), nn.PReLU()]),
                nn.Concat([nn.Maxout(2, 2, **_B), nn.Sequential([nn.Dense(2)])]),
            ]
        ),
        F,
        False,
    ),
    pytest.param(
        "residual_cnn",
        nn.Sequential(
            [
                nn.Residual(
                    nn.Sequential([nn.Conv2D(2, 3, padding="SAME"), nn.PReLU()]),
                    projection=nn.Conv2D(2, 1),
                ),
                nn.AvgPool2D(2),
                nn.Flatten(),
                nn.Dense(2, **_B),
            ]
        ),
        IMG,
        True,
        marks=pytest.mark.slow,
        id="residual_cnn",
    ),
]


def _assert_passes(block, in_shape, train):
    result = nn.check_block(block, in_shape, train=train, key=jax.random.key(7))
    assert result.passed, result.table()
    assert result.rows[0].label == "x (input)"
    n_leaves = len(jax.tree.leaves(nn.init(jax.random.key(0), block, in_shape)[0]))
    assert len(result.rows) == 1 + n_leaves
    for row in result.rows:
        assert row.verdict == "ok", result.table()
        assert row.manual_vs_autodiff <= AUTODIFF_TOL, result.table()
        assert row.manual_vs_numerical <= NUMERICAL_TOL, result.table()
    return result


@pytest.mark.parametrize(
    ("name", "block", "in_shape", "train"),
    BLOCKS,
    ids=[getattr(c, "id", None) or c[0] for c in BLOCKS],
)
def test_builtin_block_passes(name, block, in_shape, train):
    """backward = jax.vjp (≤ 1e-10) = central differences (≤ 1e-7), every leaf."""
    _assert_passes(block, in_shape, train)


@pytest.mark.parametrize(
    ("name", "block", "in_shape", "train"),
    NESTED,
    ids=[getattr(c, "id", None) or c[0] for c in NESTED],
)
def test_nested_combinators_pass(name, block, in_shape, train):
    """Nested combinators: labels name the owning layer by its key path."""
    result = _assert_passes(block, in_shape, train)
    params = nn.init(jax.random.key(0), block, in_shape)[0]
    labels = [r.label for r in result.rows[1:]]
    assert labels == [label for label, _ in nn.leaf_labels(block, params)]
    assert all(label.startswith("[") for label in labels)


SEQ = (3, 4)  # sequences (m, T, d) with T = 3, d = 4
IDS = jnp.array([[0, 1, 1, 3, 1], [2, 2, 0, 0, 1], [3, 0, 2, 1, 1]])

SEQUENCE = [
    ("embedding", nn.Embedding(4, 3), IDS.shape[1:], IDS),
    ("positional_embedding", nn.PositionalEmbedding(5, 4), SEQ, None),
    ("rmsnorm", nn.RMSNorm(), SEQ, None),
    (
        "recompute",
        nn.Recompute(nn.Sequential([nn.LayerNorm(axis=-1), nn.Dense(4, "gelu")])),
        SEQ,
        None,
    ),
    # recurrent and attention blocks: slow here, checked in their own test files
    _slow("lstm", nn.LSTM(2), SEQ, None),
    _slow("gru_last", nn.GRU(2, return_sequences=False), SEQ, None),
    _slow("attention_causal", nn.MultiHeadAttention(2, causal=True), SEQ, None),
]


@pytest.mark.parametrize(
    ("name", "block", "in_shape", "x"),
    SEQUENCE,
    ids=[getattr(c, "id", None) or c[0] for c in SEQUENCE],
)
def test_sequence_block_passes(name, block, in_shape, x):
    """Sequence blocks; an embedding reads integer ids (no input row)."""
    result = nn.check_block(block, in_shape, x=x, key=jax.random.key(7))
    assert result.passed, result.table()
    assert (result.rows[0].label == "x (input)") == (x is None)
    for row in result.rows:
        assert row.verdict == "ok", result.table()
        assert row.manual_vs_autodiff <= AUTODIFF_TOL, result.table()
        assert row.manual_vs_numerical <= NUMERICAL_TOL, result.table()


def _walk(block):
    yield block
    for child in block.children:
        yield from _walk(child)


def test_every_builtin_constructor_is_checked():
    """The cases above cover every block constructor fnn registers as its own."""
    cases = [getattr(c, "values", c) for c in BLOCKS + NESTED + SEQUENCE]
    covered = {b.spec["block"] for _, m, _, _ in cases for b in _walk(m)}
    builtin = fnn.nn._spec._BUILTIN
    assert len(builtin) >= 20 and builtin <= set(nn.__all__) | set(fnn.__all__)
    assert builtin <= covered, builtin - covered


# --- planted bugs ---------------------------------------------------------------


def _affine(*, flip_c=False, dx_factor=1.0, drop_c=False, c_shape=None):
    """A user block y = x ⊙ a + c, with an optional planted bug in its backward."""

    def init(key, in_shape, dtype):
        k_a, k_c = jax.random.split(key)
        params = {
            "a": 1.0 + 0.5 * jax.random.normal(k_a, in_shape, dtype),
            "c": jax.random.normal(k_c, in_shape, dtype),
        }
        return params, tuple(in_shape)

    def forward(p, x):
        return x * p["a"] + p["c"], x

    def backward(p, x, dy):
        grads = {"a": jnp.sum(dy * x, axis=0), "c": jnp.sum(dy, axis=0)}
        if flip_c:
            grads["c"] = -grads["c"]
        if drop_c:
            del grads["c"]
        if c_shape is not None:
            grads["c"] = jnp.zeros(c_shape, dy.dtype)
        return grads, dx_factor * dy * p["a"]

    return nn.stateless("Affine", init, forward, backward)


def test_user_block_passes():
    result = _assert_passes(_affine(), F, False)
    assert [r.label for r in result.rows] == [
        "x (input)",
        "Affine ['a']",
        "Affine ['c']",
    ]


def test_sign_flip_in_one_leaf_is_wrong_and_named():
    result = nn.check_block(_affine(flip_c=True), F)
    assert not result.passed
    verdicts = {r.label: r.verdict for r in result.rows}
    assert verdicts == {
        "x (input)": "ok",
        "Affine ['a']": "ok",
        "Affine ['c']": "WRONG",
    }
    assert [r.label for r in result.failures] == ["Affine ['c']"]
    assert "FAILED" in result.table() and "WRONG" in result.table()
    assert "Affine ['c']" in repr(result)


def test_sign_flip_inside_a_combinator_names_the_path():
    inner = nn.Sequential([nn.Dense(4, "tanh", **_B), _affine(flip_c=True)])
    result = nn.check_block(nn.Residual(inner), F)
    assert not result.passed
    wrong = [r.label for r in result.rows if r.verdict == "WRONG"]
    # dx flows through the wrong block's input gradient only via a: still right;
    # the Dense leaves before it receive the correct dx as well.
    assert wrong == ["[0][1] Affine ['c']"]


def test_factor_in_dx_is_wrong_on_the_input_row():
    result = nn.check_block(_affine(dx_factor=1.1), F)
    assert not result.passed
    verdicts = {r.label: r.verdict for r in result.rows}
    assert verdicts["x (input)"] == "WRONG"
    assert verdicts["Affine ['a']"] == verdicts["Affine ['c']"] == "ok"
    # 0.1·g against g: ‖0.1 g‖ / (2.1 ‖g‖)
    assert result.rows[0].manual_vs_autodiff == pytest.approx(0.1 / 2.1, rel=1e-9)


def test_factor_in_dx_of_a_child_propagates_to_earlier_layers():
    model = nn.Sequential([nn.Dense(4, "tanh", **_B), _affine(dx_factor=1.1)])
    result = nn.check_block(model, F)
    verdicts = {r.label: r.verdict for r in result.rows}
    assert verdicts["x (input)"] == "WRONG"
    assert verdicts["[0] Dense(4, tanh) ['W']"] == "WRONG"
    assert verdicts["[1] Affine ['c']"] == "ok"


@pytest.mark.parametrize("bug", ["missing_leaf", "wrong_shape"])
def test_wrong_dparams_structure_fails(bug):
    block = _affine(drop_c=True) if bug == "missing_leaf" else _affine(c_shape=(3,))
    result = nn.check_block(block, F)
    assert not result.passed
    assert result.failures and all(r.verdict == "WRONG" for r in result.failures)
    assert "Affine" in result.name and "structure" in result.table()


def test_dropout_backward_ignoring_the_mask_fails_in_training():
    good = nn.Dropout(0.5)
    bad = good._replace(name="BadDropout", backward=lambda p, M, dy: ({}, dy))
    assert nn.check_block(bad, F, train=False).passed  # identity in evaluation
    result = nn.check_block(bad, F, train=True)
    assert not result.passed and result.rows[0].verdict == "WRONG"


def test_batchnorm_backward_ignoring_the_batch_statistics_fails_in_training():
    good = nn.BatchNorm()

    def backward(params, cache, dy):  # the evaluation-mode dx in training mode
        grads, _ = good.backward(params, cache, dy)
        return grads, dy * params["gamma"] * cache.inv_s

    bad = good._replace(name="BadBatchNorm", backward=backward)
    assert nn.check_block(bad, F, train=False).passed
    result = nn.check_block(bad, F, train=True)
    assert not result.passed
    verdicts = {r.label: r.verdict for r in result.rows}
    assert verdicts["x (input)"] == "WRONG"
    assert verdicts["BadBatchNorm ['gamma']"] == "ok"


# --- kinks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "x"),
    [
        (nn.Dense(4, "relu"), jnp.zeros((3, 4))),
        (nn.Maxout(2, 2), jnp.zeros((3, 4))),
        (nn.MaxPool2D(2), jnp.zeros((3, 5, 5, 2))),
    ],
    ids=["relu_at_zero", "maxout_tie", "maxpool_tie"],
)
def test_kink_is_reported_not_hidden(block, x):
    """Zero input and zero bias put every relu at 0 (every max at a tie): the
    backward still equals jax.vjp; the finite difference disagrees and the
    row says ``kink`` rather than passing silently or failing."""
    result = nn.check_block(block, x.shape[1:], x=x)
    assert result.passed, result.table()
    for row in result.rows:
        assert row.verdict in ("ok", "kink"), result.table()
        assert row.manual_vs_autodiff <= AUTODIFF_TOL
    kinks = [r for r in result.rows if r.verdict == "kink"]
    assert kinks and all(r.manual_vs_numerical > NUMERICAL_TOL for r in kinks)
    assert result.rows[0].verdict == "kink"
    assert "kink" in result.table()


def test_check_block_leaves_x64_off():
    nn.check_block(nn.Dense(4), F)
    assert jnp.zeros(()).dtype == jnp.float32


def test_fnn_mlp_model_passes():
    model = fnn._mlp.mlp([4, 4, 4], "tanh", drop_rate=0.2)
    _assert_passes(model, F, True)
