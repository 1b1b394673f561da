"""Blocks as plain data: to_spec / from_spec round trips, the registry, is_builtin.

Invariant (fnn.nn._spec): ``from_spec(to_spec(b))`` builds a block equal in
behaviour to ``b``: the same parameters from the same key and the same
outputs; the spec survives ``json.dumps``/``json.loads``; loading only looks
names up in the registry.
"""

import json

import chex
import jax
import jax.numpy as jnp
import pytest

import fnn
from fnn import nn
from fnn._mlp import mlp

F, IMG = (4,), (5, 5, 2)

BLOCKS = [
    ("dense", nn.Dense(3, "tanh", W_init="glorot_uniform", b_init="normal"), F),
    ("dense_default", nn.Dense(3), F),
    ("activation", nn.Activation("relu"), F),
    ("activation_with_parameter", nn.Activation("elu", alpha=0.5), F),
    ("dropout", nn.Dropout(0.25), F),
    ("batchnorm", nn.BatchNorm(momentum=0.8, eps=1e-3), F),
    ("layernorm", nn.LayerNorm(eps=1e-4), IMG),
    ("conv", nn.Conv2D(3, 3, stride=2, padding="SAME", b_init="normal"), IMG),
    ("conv_int_padding", nn.Conv2D(2, 2, 1, 1), IMG),
    ("maxpool", nn.MaxPool2D(2), IMG),
    ("avgpool", nn.AvgPool2D(3, 1), IMG),
    ("flatten", nn.Flatten(), IMG),
    ("maxout", nn.Maxout(2, 3, b_init="normal"), F),
    ("prelu", nn.PReLU(), F),
    ("prelu_shared", nn.PReLU(shared=True, alpha_init=0.1), F),
    ("sequential", nn.Sequential([nn.Dense(4, "relu"), nn.Dropout(0.5)]), F),
    ("residual", nn.Residual(nn.Dense(4, "tanh")), F),
    ("residual_projection", nn.Residual(nn.Dense(2), projection=nn.Dense(2)), F),
    ("concat", nn.Concat([nn.Dense(2, "sigmoid"), nn.Maxout(1, 2)]), F),
    (
        "nested",
        nn.Residual(
            nn.Sequential(
                [
                    nn.Dense(4, "tanh"),
                    nn.BatchNorm(),
                    nn.Dropout(0.3),
                    nn.Concat([nn.Dense(2), nn.Sequential([nn.Dense(2, "selu")])]),
                ]
            )
        ),
        F,
    ),
    (
        "cnn",
        nn.Sequential(
            [
                nn.Residual(
                    nn.Sequential([nn.Conv2D(2, 3, padding="SAME"), nn.BatchNorm()]),
                    projection=nn.Conv2D(2, 1),
                ),
                nn.MaxPool2D(2),
                nn.Flatten(),
                nn.Dense(3),
            ]
        ),
        IMG,
    ),
    ("mlp", mlp([4, 5, 3], "tanh", "sigmoid", drop_rate=0.2), None),
]


def _round_trip(block):
    text = json.dumps(nn.to_spec(block))
    return nn.from_spec(json.loads(text))


def _run(block, in_shape, train):
    """Parameters, state and outputs of ``block`` from fixed keys."""
    params, state = nn.init(jax.random.key(1), block, in_shape)
    shape = in_shape or block.in_shape
    x = jax.random.normal(jax.random.key(2), (3, *shape))
    y, new_state, _ = block.forward(params, state, x, jax.random.key(3), train)
    return params, state, y, new_state


@pytest.mark.parametrize(
    ("name", "block", "in_shape"), BLOCKS, ids=[c[0] for c in BLOCKS]
)
def test_round_trip_is_json_and_behaves_the_same(name, block, in_shape):
    spec = nn.to_spec(block)
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = _round_trip(block)
    assert nn.to_spec(rebuilt) == spec
    assert rebuilt.name == block.name
    assert rebuilt.stochastic == block.stochastic
    assert rebuilt.in_shape == block.in_shape
    for train in (False, True):
        chex.assert_trees_all_equal(
            _run(rebuilt, in_shape, train), _run(block, in_shape, train)
        )


@pytest.mark.parametrize(
    "block",
    [
        nn.Conv2D(2, (3, 2)),
        nn.Conv2D(2, 3, stride=(1, 2)),
        nn.MaxPool2D((2, 2)),
        nn.AvgPool2D(2, stride=(1, 1)),
    ],
    ids=["conv_kernel_pair", "conv_stride_pair", "maxpool_pair", "avgpool_pair"],
)
def test_round_trip_with_window_pairs(block):
    """(kh, kw) and (sh, sw) pairs come back from JSON as lists."""
    rebuilt = _round_trip(block)
    chex.assert_trees_all_equal(_run(rebuilt, IMG, False), _run(block, IMG, False))


def test_mlp_spec_rebuilds_init_params():
    """The MLP model from its spec draws init_params' parameters."""
    model = _round_trip(mlp([4, 5, 3], W_init="glorot_normal"))
    params, _ = nn.init(jax.random.key(0), model)
    expected = fnn.init_params(jax.random.key(0), [4, 5, 3], "glorot_normal")
    chex.assert_trees_all_equal(params, expected)


# --- user blocks ----------------------------------------------------------------


@nn.register
def ScaledTanh(scale: float = 1.0, n: int | None = None) -> nn.Block:
    """y = scale·tanh(x ⊙ w), a user block with a parameter w of the input's shape."""

    def init(key, in_shape, dtype):
        return {"w": 1.0 + 0.1 * jax.random.normal(key, in_shape, dtype)}, in_shape

    def forward(p, x):
        t = jnp.tanh(x * p["w"])
        return scale * t, (x, t)

    def backward(p, cache, dy):
        x, t = cache
        dz = dy * scale * (1 - t**2)
        return {"w": jnp.sum(dz * x, axis=0)}, dz * p["w"]

    return nn.stateless(f"ScaledTanh({scale})", init, forward, backward)


def _unregistered():
    def init(key, in_shape, dtype):
        return {}, in_shape

    return nn.stateless(
        "MyIdentity", init, lambda p, x: (x, None), lambda p, c, dy: ({}, dy)
    )


def test_registered_user_block_round_trips():
    block = ScaledTanh(0.5)
    spec = nn.to_spec(block)
    assert spec == {"block": "ScaledTanh", "args": {"scale": 0.5, "n": None}}
    rebuilt = _round_trip(block)
    chex.assert_trees_all_equal(_run(rebuilt, F, True), _run(block, F, True))
    model = nn.Sequential([nn.Dense(4, "relu"), nn.Residual(ScaledTanh(2.0))])
    rebuilt = _round_trip(model)
    chex.assert_trees_all_equal(_run(rebuilt, F, True), _run(model, F, True))
    assert nn.check_block(rebuilt, F).passed


def test_register_refuses_a_second_function_under_a_taken_name():
    def Dense():  # noqa: N802
        return _unregistered()

    with pytest.raises(ValueError, match="'Dense' is already registered"):
        nn.register(Dense)


@pytest.mark.parametrize(
    ("block", "name"),
    [
        (_unregistered(), "MyIdentity"),
        (nn.Dense(3, W_init=fnn.initializers.get("he_normal")), "Dense(3, identity)"),
        (nn.Dense(3, b_init=lambda key, shape, dtype: jnp.ones(shape, dtype)), "Dense"),
        (nn.Dense(3, fnn.activations.get("tanh")), "Dense(3, tanh)"),
        (nn.Sequential([nn.Dense(2), _unregistered()]), "MyIdentity"),
        (nn.Residual(nn.Dense(4), projection=None)._replace(spec=None), "Residual"),
    ],
    ids=[
        "unregistered",
        "callable_W_init",
        "lambda_b_init",
        "activation_object",
        "nested_unregistered",
        "no_spec",
    ],
)
def test_to_spec_refuses_blocks_that_are_not_data(block, name):
    with pytest.raises(ValueError, match="cannot be described as data") as err:
        nn.to_spec(block)
    assert name in str(err.value)
    assert "@fnn.nn.register" in str(err.value)


def test_to_spec_refuses_a_non_block():
    with pytest.raises(ValueError, match="expects a Block"):
        nn.to_spec([nn.Dense(2)])


def test_from_spec_refuses_unknown_names():
    spec = {"block": "NoSuchBlock", "args": {}}
    with pytest.raises(ValueError, match="unknown block 'NoSuchBlock'"):
        nn.from_spec(spec)
    nested = nn.to_spec(nn.Sequential([nn.Dense(2)]))
    nested["args"]["blocks"].append({"block": "Mystery", "args": {"k": 1}})
    with pytest.raises(ValueError, match="unknown block 'Mystery'"):
        nn.from_spec(nested)


@pytest.mark.parametrize(
    "spec",
    [
        {"block": "Dense"},
        {"block": "Dense", "args": {}, "extra": 1},
        {"block": "Dense", "args": [3]},
        {"block": "Dense", "args": {"units": 3}},
        "Dense",
    ],
    ids=["no_args", "extra_key", "args_list", "wrong_argument", "string"],
)
def test_from_spec_refuses_malformed_specs(spec):
    with pytest.raises(ValueError, match="Dense|spec"):
        nn.from_spec(spec)


# --- is_builtin -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "block", "in_shape"),
    [c for c in BLOCKS if c[0] != "mlp"],
    ids=[c[0] for c in BLOCKS if c[0] != "mlp"],
)
def test_fnn_blocks_are_builtin(name, block, in_shape):
    assert nn.is_builtin(block)
    assert nn.is_builtin(_round_trip(block))


def test_mlp_model_is_builtin():
    assert nn.is_builtin(mlp([4, 5, 3]))


@pytest.mark.parametrize(
    "block",
    [
        ScaledTanh(),
        _unregistered(),
        nn.Sequential([nn.Dense(4), ScaledTanh()]),
        nn.Residual(nn.Sequential([nn.Dense(4), nn.Concat([_unregistered()])])),
        nn.Residual(nn.Dense(2), projection=ScaledTanh()),
        nn.Dense(3, W_init=fnn.initializers.get("he_normal")),
    ],
    ids=[
        "registered_user",
        "unregistered_user",
        "sequential_with_user",
        "deeply_nested_user",
        "user_projection",
        "dense_without_spec",
    ],
)
def test_user_blocks_are_not_builtin(block):
    assert not nn.is_builtin(block)


def test_a_user_block_dressed_as_fnns_is_not_builtin():
    """A spec naming a built-in block does not make a user's functions fnn's:
    the children are looked at too."""
    fake = nn.Sequential([nn.Dense(2)])._replace(children=(ScaledTanh(),))
    assert not nn.is_builtin(fake)
