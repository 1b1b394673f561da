"""Tests of the composition transforms: chain, clipping, weight decay, masks,
partition, freeze, skip_if_nonfinite and current_learning_rate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn.optim as optim


def _params():
    return [
        {"W": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.25, -1.0])},
        {"W": jnp.asarray([[2.0], [-1.0]]), "b": jnp.asarray([4.0])},
    ]


def _grads():
    return [
        {"W": jnp.asarray([[3.0, 0.0], [-4.0, 1.0]]), "b": jnp.asarray([1.0, 2.0])},
        {"W": jnp.asarray([[-2.0], [0.5]]), "b": jnp.asarray([-1.0])},
    ]


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_clip_by_value():
    opt = optim.clip_by_value(1.5)
    g = _grads()
    u, _ = jax.jit(opt.update)(g, opt.init(g))
    for a, b in zip(_leaves(u), _leaves(g), strict=True):
        np.testing.assert_array_equal(a, np.clip(b, -1.5, 1.5))


def test_clip_by_global_norm_rescales_to_max_norm():
    g = _grads()
    norm = np.sqrt(sum(np.sum(x**2) for x in _leaves(g)))  # sqrt(39.25)
    opt = optim.clip_by_global_norm(2.0)
    u, _ = jax.jit(opt.update)(g, opt.init(g))
    for a, b in zip(_leaves(u), _leaves(g), strict=True):
        np.testing.assert_allclose(a, b * 2.0 / norm, rtol=1e-6)
    # below the threshold nothing changes
    opt = optim.clip_by_global_norm(100.0)
    u, _ = jax.jit(opt.update)(g, opt.init(g))
    chex.assert_trees_all_equal(u, g)


def test_clip_by_global_norm_at_zero_norm_gives_zeros():
    # conftest turns jax_debug_nans on: a NaN anywhere would raise here.
    assert jax.config.jax_debug_nans
    z = jax.tree.map(jnp.zeros_like, _grads())
    opt = optim.clip_by_global_norm(1.0)
    u, _ = jax.jit(opt.update)(z, opt.init(z))
    chex.assert_trees_all_equal(u, z)
    # and its gradient at zero is finite too (no 0/0 in the where branches)
    d = jax.grad(lambda t: jnp.sum(opt.update(t, ())[0][0]["W"]))(z)
    assert all(np.all(np.isfinite(x)) for x in _leaves(d))


def test_add_decayed_weights_coupled_l2_with_mask():
    p, g = _params(), _grads()
    opt = optim.add_decayed_weights(0.1, mask=optim.weights_only_mask)
    u, _ = jax.jit(opt.update)(g, opt.init(p), p)
    for i in range(2):
        np.testing.assert_allclose(u[i]["W"], np.asarray(g[i]["W"]) + 0.1 * p[i]["W"])
        np.testing.assert_array_equal(u[i]["b"], g[i]["b"])
    with pytest.raises(ValueError, match="needs the current parameters"):
        opt.update(g, opt.init(p))


def test_weights_only_mask():
    assert optim.weights_only_mask(_params()) == [
        {"W": True, "b": False},
        {"W": True, "b": False},
    ]


def test_chain_equals_manual_composition():
    # chain(clip, L2, sgd momentum) against the three rules written out.
    p, g = _params(), _grads()
    opt = optim.chain(
        optim.clip_by_value(2.0),
        optim.add_decayed_weights(0.01),
        optim.sgd(0.1, momentum=0.5),
    )
    state = opt.init(p)
    step = jax.jit(opt.update)
    v = [np.zeros_like(x) for x in _leaves(p)]
    theta = _leaves(p)
    for _ in range(3):
        u, state = step(g, state, p)
        for k, (gk, pk) in enumerate(zip(_leaves(g), theta, strict=True)):
            d = np.clip(gk, -2, 2) + 0.01 * pk
            v[k] = 0.5 * v[k] - 0.1 * d
            theta[k] = pk + v[k]
        p = optim.apply_updates(p, u)
        for a, b in zip(_leaves(p), theta, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(optim.current_learning_rate(state), 0.1)


def test_masked_applies_inner_to_masked_leaves_only():
    p, g = _params(), _grads()
    mask = [{"W": True, "b": False}, {"W": False, "b": True}]
    opt = optim.masked(optim.adam(0.1), mask)
    state = opt.init(p)
    # the inner state only holds the masked leaves
    assert len(jax.tree.leaves(state.inner_state.m)) == 2
    u, state = jax.jit(opt.update)(g, state, p)
    # first Adam step: -lr * sign(g) (up to eps); unmasked leaves pass unchanged
    np.testing.assert_allclose(u[0]["W"], -0.1 * np.sign(g[0]["W"]), atol=1e-6)
    np.testing.assert_array_equal(u[0]["b"], g[0]["b"])
    np.testing.assert_array_equal(u[1]["W"], g[1]["W"])
    np.testing.assert_allclose(u[1]["b"], -0.1 * np.sign(g[1]["b"]), atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        optim.masked(optim.sgd(0.1), [{"W": True, "b": False}]).init(p)
    with pytest.raises(ValueError, match=r"mask leaf \[0\]\['W'\]"):
        optim.masked(optim.sgd(0.1), [{"W": 1, "b": 0}, {"W": 1, "b": 0}]).init(p)


def test_partition_per_group_rules():
    p, g = _params(), _grads()
    opt = optim.partition(
        {"w": optim.sgd(0.1), "b": optim.sgd(0.01, momentum=0.9)},
        lambda tree: [{"W": "w", "b": "b"} for _ in tree],
    )
    state = opt.init(p)
    step = jax.jit(opt.update)
    u1, state = step(g, state, p)
    u2, state = step(g, state, p)
    for i in range(2):
        np.testing.assert_allclose(u2[i]["W"], -0.1 * np.asarray(g[i]["W"]))
        # momentum: v1 = -0.01 g, v2 = 0.9 v1 - 0.01 g
        np.testing.assert_allclose(
            u2[i]["b"], -0.019 * np.asarray(g[i]["b"]), rtol=1e-6
        )
    assert int(state.inner_states["w"].count) == 2
    with pytest.raises(ValueError, match=r"labels leaf \[1\]\['b'\] is 'x'"):
        optim.partition(
            {"w": optim.sgd(0.1)}, [{"W": "w", "b": "w"}, {"W": "w", "b": "x"}]
        ).init(p)


def test_freeze():
    p, g = _params(), _grads()
    opt = optim.chain(
        optim.sgd(0.1), optim.freeze([{"W": False, "b": True}, {"W": True, "b": False}])
    )
    u, _ = jax.jit(opt.update)(g, opt.init(p), p)
    np.testing.assert_allclose(u[0]["W"], -0.1 * np.asarray(g[0]["W"]))
    np.testing.assert_array_equal(u[0]["b"], 0.0)
    np.testing.assert_array_equal(u[1]["W"], 0.0)
    np.testing.assert_allclose(u[1]["b"], -0.1 * np.asarray(g[1]["b"]))


def test_skip_if_nonfinite_leaves_params_and_state_unchanged():
    p, g = _params(), _grads()
    opt = optim.skip_if_nonfinite(optim.adam(0.1))
    step = jax.jit(opt.update)
    state = opt.init(p)
    u, state = step(g, state, p)
    p = optim.apply_updates(p, u)
    with jax.debug_nans(False):
        bad = [g[0], {"W": g[1]["W"], "b": jnp.asarray([jnp.nan])}]
        u_bad, state_bad = step(bad, state, p)
        inf = [g[0], {"W": g[1]["W"].at[0, 0].set(jnp.inf), "b": g[1]["b"]}]
        u_inf, state_inf = step(inf, state_bad, p)
    for x in jax.tree.leaves((u_bad, u_inf)):
        np.testing.assert_array_equal(x, 0.0)
    chex.assert_trees_all_equal(state_inf.inner_state, state.inner_state)
    chex.assert_trees_all_equal(optim.apply_updates(p, u_bad), p)
    assert int(state_inf.num_skipped) == 2 and int(state_inf.count) == 3
    assert not bool(state_inf.last_finite)
    # a finite step afterwards resumes Adam at its step 2
    u, state = step(g, state_inf, p)
    assert int(state.inner_state.count) == 2 and int(state.num_skipped) == 2
    assert bool(state.last_finite)


def test_transform_states_keep_avals_and_trace_once():
    chex.clear_trace_counter()
    p = _params()
    opt = optim.skip_if_nonfinite(
        optim.chain(
            optim.clip_by_global_norm(1.0),
            optim.partition(
                {"w": optim.adamw(0.1), "b": optim.sgd(0.1, 0.9)},
                lambda t: [{"W": "w", "b": "b"} for _ in t],
            ),
            optim.masked(optim.scale_by_learning_rate(2.0), optim.weights_only_mask),
        )
    )
    state = opt.init(p)
    after = jax.eval_shape(opt.update, _grads(), state, p)[1]
    as_avals = lambda t: jax.tree.map(  # noqa: E731
        lambda x: (x.shape, x.dtype, getattr(x, "weak_type", False)), t
    )
    assert as_avals(after) == as_avals(jax.eval_shape(opt.init, p))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(_grads(), state, params)
        return optim.apply_updates(params, updates), state

    for _ in range(5):
        p, state = step(p, state)
    assert int(state.count) == 5
    # the first learning_rate met in a depth-first walk: adamw's
    np.testing.assert_allclose(optim.current_learning_rate(state), 0.1)


def test_current_learning_rate_errors_without_one():
    with pytest.raises(ValueError, match="no optimizer state with a learning_rate"):
        optim.current_learning_rate(optim.clip_by_value(1.0).init(_params()))


@pytest.mark.parametrize(
    "make, bad",
    [
        (optim.clip_by_value, -1.0),
        (optim.clip_by_global_norm, 0.0),
        (optim.add_decayed_weights, -0.1),
        (optim.scale_by_learning_rate, -1.0),
    ],
)
def test_bad_transform_arguments_raise_with_the_value(make, bad):
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        make(bad)
    with pytest.raises(ValueError, match="argument 1 must be an Optimizer"):
        optim.chain(optim.sgd(0.1), "sgd")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize(
    "make, name",
    [
        (optim.clip_by_value, "max_delta"),
        (optim.clip_by_global_norm, "max_norm"),
        (optim.add_decayed_weights, "weight_decay"),
        (optim.scale_by_learning_rate, "learning_rate"),
    ],
)
def test_transforms_refuse_non_finite_arguments(make, name, bad):
    with pytest.raises(ValueError, match=name):
        make(bad)


def test_scale_by_learning_rate_checks_a_schedule_at_zero():
    with pytest.raises(ValueError, match=r"learning_rate.*count 0.*-0\.5"):
        optim.scale_by_learning_rate(lambda c: jnp.full((), -0.5, jnp.float32))


@pytest.mark.parametrize("convert", [np.float32, jnp.float32, np.asarray])
def test_transforms_accept_numpy_and_jax_scalars(convert):
    params, grads = _params(), _grads()
    for make, value in [
        (optim.clip_by_value, 1.5),
        (optim.clip_by_global_norm, 2.0),
        (optim.add_decayed_weights, 0.1),
        (optim.scale_by_learning_rate, 0.1),
    ]:
        ref = make(value)
        opt = make(convert(value))
        chex.assert_trees_all_equal(
            opt.update(grads, opt.init(params), params),
            ref.update(grads, ref.init(params), params),
        )


def test_traced_clip_norm_and_decay_under_jit():
    params, grads = _params(), _grads()

    def run(max_norm, wd):
        opt = optim.chain(
            optim.add_decayed_weights(wd), optim.clip_by_global_norm(max_norm)
        )
        return opt.update(grads, opt.init(params), params)[0]

    chex.assert_trees_all_close(jax.jit(run)(2.0, 0.1), run(2.0, 0.1), rtol=1e-6)


def test_global_norm_of_float16_leaves_does_not_overflow():
    # sum of squares = 1000 * 300^2 = 9e7 > 65504, the largest float16.
    grads = {"w": jnp.full(1000, 300.0, jnp.float16)}
    norm = optim.global_norm(grads)
    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(norm, 300.0 * np.sqrt(1000.0), rtol=1e-3)
    opt = optim.clip_by_global_norm(1.0)
    updates, _ = opt.update(grads, opt.init(grads))
    assert updates["w"].dtype == jnp.float16
    np.testing.assert_allclose(
        np.asarray(updates["w"], np.float32), 1 / np.sqrt(1000.0), rtol=1e-2
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.clip_by_value(1.0),
        lambda: optim.clip_by_global_norm(1.0),
        lambda: optim.add_decayed_weights(0.1),
        lambda: optim.freeze(optim.weights_only_mask),
        lambda: optim.scale_by_learning_rate(0.1),
        lambda: optim.chain(optim.sgd(0.1)),
        lambda: optim.masked(optim.sgd(0.1), optim.weights_only_mask),
        lambda: optim.partition(
            {"s": optim.sgd(0.1)}, lambda p: [{"W": "s", "b": "s"} for _ in p]
        ),
        lambda: optim.skip_if_nonfinite(optim.sgd(0.1)),
        lambda: optim.reduce_on_plateau(),
    ],
)
def test_transforms_refuse_a_state_from_another_optimizer(make):
    params, grads = _params(), _grads()
    opt = make()
    foreign = optim.adam(0.1).init(params)
    with pytest.raises(TypeError, match=r"got a state made by adam"):
        opt.update(grads, foreign, params)
    # Its own state works.
    opt.update(grads, opt.init(params), params)


def test_stateless_transforms_accept_an_empty_tuple():
    params, grads = _params(), _grads()
    updates, state = optim.clip_by_value(1.0).update(grads, (), params)
    assert state == ()


def test_partition_refuses_the_state_of_another_partition():
    params, grads = _params(), _grads()
    labels = [{"W": "w", "b": "b"}, {"W": "w", "b": "b"}]
    a = optim.partition({"w": optim.sgd(0.1), "b": optim.sgd(0.1)}, labels)
    b = optim.partition({"w": optim.sgd(0.1), "x": optim.sgd(0.1)}, labels)
    with pytest.raises(TypeError, match="another partition"):
        b.update(grads, a.init(params), params)


def test_chain_names_the_state_it_got():
    params, grads = _params(), _grads()
    opt = optim.chain(optim.clip_by_value(1.0), optim.sgd(0.1))
    with pytest.raises(TypeError, match=r"chain\.update got a state made by sgd"):
        opt.update(grads, optim.sgd(0.1).init(params), params)
    with pytest.raises(ValueError, match="tuple of 2 states, got a tuple of 1"):
        opt.update(grads, (optim.sgd(0.1).init(params),), params)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.clip_by_value(1.0),
        lambda: optim.clip_by_global_norm(1.0),
        lambda: optim.add_decayed_weights(0.1),
        lambda: optim.scale_by_learning_rate(0.1),
        lambda: optim.masked(optim.adam(0.1), optim.weights_only_mask),
    ],
)
def test_transforms_refuse_gradients_of_the_wrong_shape(make):
    params, grads = _params(), _grads()
    grads[1]["b"] = jnp.ones(3)
    opt = make()
    with pytest.raises(ValueError, match=r"\[1\]\['b'\] has shape \(3,\).*\(1,\)"):
        opt.update(grads, opt.init(params), params)
