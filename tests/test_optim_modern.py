"""Tests of Lion, LAMB, LARS, Adafactor, RAdam, NAdamW, Muon, Schedule-Free,
SAM, Lookahead and the warm-up schedules.

Each optimizer runs 200 steps on a small tanh MLP regression (two matrix leaves,
one of them tall so that Muon's transposed branch runs, two bias leaves) in
float64, next to optax with the same hyperparameters: the whole trajectories
agree to 1e-10 relative. The same runs check convergence; the state avals and the
tracing count are checked on one jitted step.
"""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn.optim as optim
from fnn._schedules_extra import warmup_cosine_decay_schedule, warmup_stable_decay
from fnn.optim import _modern as modern

STEPS = 200
RTOL = 1e-10

# --------------------------------------------------------------------------
# The problem: y = tanh(x W1 + b1) W2 + b2, least squares on fixed data.
# --------------------------------------------------------------------------


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 4))
    Y = np.sin(X @ rng.normal(size=(4, 3)))
    params = [
        {"W": 0.5 * rng.normal(size=(4, 8)), "b": 0.1 * rng.normal(size=(8,))},
        {"W": 0.5 * rng.normal(size=(8, 3)), "b": 0.1 * rng.normal(size=(3,))},
    ]
    return X, Y, params


def _loss(params, X, Y):
    A = jnp.tanh(X @ params[0]["W"] + params[0]["b"])
    return jnp.mean((A @ params[1]["W"] + params[1]["b"] - Y) ** 2)


def _problem():
    X, Y, params = _data()
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    params = jax.tree.map(jnp.asarray, params)
    grad = jax.grad(lambda p: _loss(p, X, Y))
    return params, grad, lambda p: _loss(p, X, Y)


def _run(opt, apply, mode="plain", lookahead_cls=None):
    """The 200 iterates of ``opt`` (a (init, update) pair) as a stacked tree."""
    params, grad, _ = _problem()
    if mode == "lookahead":
        params = lookahead_cls.init_synced(params)

    def step(carry, _):
        p, s = carry
        if mode == "lookahead":
            u, s = opt.update(grad(p.fast), s, p)
        elif mode == "opaque":
            u, s = opt.update(grad(p), s, p, grad_fn=lambda q, i: grad(q))
        else:
            u, s = opt.update(grad(p), s, p)
        p = apply(p, u)
        return (p, s), p

    @jax.jit
    def go(p):
        (_, s), traj = jax.lax.scan(step, (p, opt.init(p)), None, length=STEPS)
        return traj, s

    return go(params)


def _optax_run(opt, optax, mode="plain"):
    # optax is not written for strict promotion, and RAdam takes the root of a
    # negative number in steps it then discards.
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return _run(opt, optax.apply_updates, mode, optax.LookaheadParams)


# --------------------------------------------------------------------------
# The cases: (fnn optimizer, optax optimizer, mode).
# --------------------------------------------------------------------------


def _adafactor_f64(optax, lr, min_dim, momentum, wd):
    """optax's adafactor chain with its decay rate computed in float64."""

    def decay64(step, exponent):
        return 1.0 - jnp.asarray(step + 1, jnp.float64) ** (-exponent)

    return optax.chain(
        optax.scale_by_factored_rms(
            min_dim_size_to_factor=min_dim, decay_rate_fn=decay64
        ),
        optax.clip_by_block_rms(1.0),
        optax.scale_by_learning_rate(lr, flip_sign=False),
        optax.scale_by_param_block_rms(),
        optax.ema(momentum, debias=False, accumulator_dtype=jnp.float64),
        optax.add_decayed_weights(wd),
        optax.scale(-1),
    )


# fnn's optimizers, built without optax, and optax's with the same settings.
FNN = {
    "lion": lambda: modern.lion(3e-3, weight_decay=1e-2, mask=optim.weights_only_mask),
    "lion_mu_bf16": lambda: modern.lion(3e-3, mu_dtype=jnp.bfloat16),
    "lamb": lambda: modern.lamb(5e-3, weight_decay=1e-3),
    "lars": lambda: modern.lars(5.0, weight_decay=1e-3, trust_coefficient=0.01),
    "lars_nesterov": lambda: modern.lars(5.0, trust_coefficient=0.01, nesterov=True),
    "adafactor": lambda: modern.adafactor(
        0.05,
        min_dim_size_to_factor=3,
        momentum=0.5,
        dtype_momentum=jnp.float64,
        weight_decay_rate=1e-4,
    ),
    "radam": lambda: modern.radam(2e-2),
    "nadamw": lambda: modern.nadamw(1e-2, weight_decay=1e-2),
    "muon": lambda: modern.muon(5e-3, adam_learning_rate=2e-2),
    "muon_wd_nonesterov": lambda: modern.muon(
        5e-3, weight_decay=1e-2, nesterov=False, adam_weight_decay=1e-3
    ),
    "schedule_free_adamw": lambda: modern.schedule_free_adamw(
        2e-2, warmup_steps=20, weight_decay=1e-3
    ),
    "schedule_free_sgd": lambda: modern.schedule_free_sgd(
        0.3, warmup_steps=10, weight_decay=1e-3
    ),
    "sam": lambda: modern.sam(
        optim.sgd(0.2, momentum=0.9),
        optim.chain(modern.normalize(), optim.sgd(0.05)),
    ),
    "sam_opaque": lambda: modern.sam(
        optim.adam(1e-2),
        optim.chain(modern.normalize(), optim.sgd(0.05)),
        opaque_mode=True,
    ),
    "lookahead": lambda: modern.lookahead(optim.adam(1e-2), 5, 0.5),
    "lookahead_reset": lambda: modern.lookahead(
        optim.sgd(0.1, momentum=0.9), 3, 0.7, reset_state=True
    ),
}

OPTAX = {
    "lion": lambda o: o.lion(3e-3, weight_decay=1e-2, mask=optim.weights_only_mask),
    "lamb": lambda o: o.lamb(5e-3, weight_decay=1e-3),
    "lars": lambda o: o.lars(5.0, weight_decay=1e-3, trust_coefficient=0.01),
    "lars_nesterov": lambda o: o.lars(5.0, trust_coefficient=0.01, nesterov=True),
    "adafactor": lambda o: _adafactor_f64(o, 0.05, 3, 0.5, 1e-4),
    "radam": lambda o: o.radam(2e-2),
    "nadamw": lambda o: o.nadamw(1e-2, weight_decay=1e-2),
    "muon": lambda o: o.contrib.muon(5e-3, adam_learning_rate=2e-2),
    "muon_wd_nonesterov": lambda o: o.contrib.muon(
        5e-3, weight_decay=1e-2, nesterov=False, adam_weight_decay=1e-3
    ),
    "schedule_free_adamw": lambda o: o.contrib.schedule_free_adamw(
        2e-2, warmup_steps=20, weight_decay=1e-3
    ),
    "schedule_free_sgd": lambda o: o.contrib.schedule_free_sgd(
        0.3, warmup_steps=10, weight_decay=1e-3
    ),
    "sam": lambda o: o.contrib.sam(
        o.sgd(0.2, momentum=0.9), o.chain(o.contrib.normalize(), o.sgd(0.05))
    ),
    "sam_opaque": lambda o: o.contrib.sam(
        o.adam(1e-2), o.chain(o.contrib.normalize(), o.sgd(0.05)), opaque_mode=True
    ),
    "lookahead": lambda o: o.lookahead(o.adam(1e-2), 5, 0.5),
    "lookahead_reset": lambda o: o.lookahead(
        o.sgd(0.1, momentum=0.9), 3, 0.7, reset_state=True
    ),
}
CASES = list(FNN)


def _mode(name):
    if name.startswith("lookahead"):
        return "lookahead"
    return "opaque" if name == "sam_opaque" else "plain"


@functools.cache
def _fnn_trajectory(name):
    with jax.enable_x64(True):
        traj, state = _run(
            FNN[name](), optim.apply_updates, _mode(name), modern.LookaheadParams
        )
        return jax.device_get(traj), jax.device_get(state)


def _assert_close(actual, expected, rtol):
    """Leaf by leaf, ``max|a - e| <= rtol * max|e|`` (relative to the leaf's scale)."""
    chex.assert_trees_all_equal_shapes(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        err = np.max(np.abs(a - e)) / np.max(np.abs(e))
        assert err <= rtol, f"relative difference {err:.3e} > {rtol:.0e}"


@pytest.mark.parametrize("name", list(OPTAX))
def test_trajectory_matches_optax(name):
    optax = pytest.importorskip("optax")
    traj, state = _fnn_trajectory(name)
    with jax.enable_x64(True):
        ref, ref_state = _optax_run(OPTAX[name](optax), optax, _mode(name))
        ref = jax.device_get(ref)
    if _mode(name) == "lookahead":
        traj, ref = tuple(traj), tuple(ref)
    _assert_close(traj, ref, RTOL)
    if name.startswith("schedule_free"):
        with jax.enable_x64(True):
            last = jax.tree.map(lambda x: x[-1], traj)
            ref_last = jax.tree.map(lambda x: x[-1], ref)
            ours = modern.schedule_free_eval_params(state, last)
            theirs = optax.contrib.schedule_free_eval_params(ref_state, ref_last)
        _assert_close(ours, theirs, RTOL)


def test_adafactor_default_differs_only_by_float32_decay():
    """optax's own adafactor computes its decay in float32: agreement ~1e-6."""
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        ours, _ = _run(
            modern.adafactor(0.05, min_dim_size_to_factor=3), optim.apply_updates
        )
        ref, _ = _optax_run(optax.adafactor(0.05, min_dim_size_to_factor=3), optax)
    _assert_close(jax.device_get(ours), jax.device_get(ref), 1e-5)


@pytest.mark.parametrize("name", CASES)
def test_converges_on_mlp(name):
    traj, state = _fnn_trajectory(name)
    with jax.enable_x64(True):
        params, _, loss = _problem()
        if _mode(name) == "lookahead":
            last = jax.tree.map(lambda x: jnp.asarray(x[-1]), traj.slow)
        else:
            last = jax.tree.map(lambda x: jnp.asarray(x[-1]), traj)
        if name.startswith("schedule_free"):
            last = modern.schedule_free_eval_params(state, last)
        start, end = float(loss(params)), float(loss(last))
    assert np.isfinite(end)
    assert end < 0.3 * start, f"{name}: loss {start:.4f} -> {end:.4f}"


# --------------------------------------------------------------------------
# Rosenbrock (a vector leaf and a 2-D leaf, so Muon sees a matrix).
# --------------------------------------------------------------------------


def _rosenbrock(p):
    x = jnp.concatenate([p["v"], p["M"].reshape(-1)])
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


ROSENBROCK = {
    "lion": lambda: modern.lion(1e-3, weight_decay=0.0),
    "lamb": lambda: modern.lamb(2e-2),
    "lars": lambda: modern.lars(1.0, trust_coefficient=0.01),
    "adafactor": lambda: modern.adafactor(0.02, min_dim_size_to_factor=2),
    "radam": lambda: modern.radam(3e-3),
    "nadamw": lambda: modern.nadamw(2e-2, weight_decay=0.0),
    "muon": lambda: modern.muon(5e-3, adam_learning_rate=2e-2),
    "schedule_free_adamw": lambda: modern.schedule_free_adamw(2e-2, warmup_steps=50),
    "lookahead": lambda: modern.lookahead(optim.adam(2e-2), 5, 0.5),
}


@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_converges_on_rosenbrock(name):
    opt = ROSENBROCK[name]()
    p0 = {"v": jnp.array([-1.0, 1.2]), "M": jnp.full((2, 2), 0.5)}
    f0 = float(_rosenbrock(p0))
    la = name == "lookahead"

    def step(carry, _):
        p, s = carry
        g = jax.grad(_rosenbrock)(p.fast if la else p)
        u, s = opt.update(g, s, p)
        return (optim.apply_updates(p, u), s), None

    @jax.jit
    def go(p):
        p = modern.LookaheadParams.init_synced(p) if la else p
        (p, s), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=1500)
        return p, s

    p, s = go(p0)
    if la:
        p = p.slow
    if name.startswith("schedule_free"):
        p = modern.schedule_free_eval_params(s, p)
    f = float(_rosenbrock(p))
    assert f < 0.05 * f0, f"{name}: {f0:.3f} -> {f:.3g}"


# --------------------------------------------------------------------------
# State avals and tracing.
# --------------------------------------------------------------------------


def _avals(tree):
    return jax.tree.map(
        lambda x: (x.shape, x.dtype, getattr(x, "weak_type", False)), tree
    )


@pytest.mark.parametrize("name", CASES)
def test_state_avals_stable_and_no_retrace(name):
    # float32 params; the adafactor case keeps a float64 momentum: float64 there.
    with jax.enable_x64(name == "adafactor"):
        _check_avals_and_traces(name)


def _check_avals_and_traces(name):
    chex.clear_trace_counter()
    opt = FNN[name]()
    params, grad, _ = _problem()
    if _mode(name) == "lookahead":
        params = modern.LookaheadParams.init_synced(params)
        g = grad(params.fast)
    else:
        g = grad(params)
    extra = {"grad_fn": lambda q, i: grad(q)} if _mode(name) == "opaque" else {}
    state = opt.init(params)
    after = jax.eval_shape(functools.partial(opt.update, **extra), g, state, params)[1]
    assert jax.tree.structure(after) == jax.tree.structure(state)
    assert _avals(after) == _avals(jax.eval_shape(opt.init, params))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(g, s, p):
        return opt.update(g, s, p, **extra)

    u, state = step(g, state, params)
    params = optim.apply_updates(params, u)
    u, state = step(g, state, params)
    chex.assert_trees_all_equal_dtypes(u, params)


@pytest.mark.parametrize(
    "name, path",
    [
        ("lion", "lion"),
        ("lamb", "lamb"),
        ("lars", "lars"),
        ("adafactor", "adafactor"),
        ("radam", "radam"),
        ("nadamw", "nadamw"),
        ("muon", "contrib.muon"),
        ("schedule_free_adamw", "contrib.schedule_free_adamw"),
        ("schedule_free_sgd", "contrib.schedule_free_sgd"),
        ("sam", "contrib.sam"),
        ("lookahead", "lookahead"),
        ("normalize", "contrib.normalize"),
        ("schedule_free_eval_params", "contrib.schedule_free_eval_params"),
    ],
)
def test_signature_is_a_prefix_of_optax(name, path):
    """Positional arguments in optax's order; keyword-only names are optax's."""
    optax = pytest.importorskip("optax")
    theirs = optax
    for part in path.split("."):
        theirs = getattr(theirs, part)
    ours = inspect.signature(getattr(modern, name)).parameters.values()
    theirs = inspect.signature(theirs).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
    pos = [p.name for p in ours if p.kind in kinds]
    assert pos == [p.name for p in theirs if p.kind in kinds][: len(pos)]
    names = {p.name for p in theirs}
    assert {p.name for p in ours} <= names


# --------------------------------------------------------------------------
# Newton-Schulz and argument checks.
# --------------------------------------------------------------------------


def test_newton_schulz_orthogonalizes():
    """Singular values land in Jordan's band [0.6, 1.25]; vectors are kept."""
    with jax.enable_x64(True):
        X = jnp.asarray(np.random.default_rng(1).normal(size=(6, 10)))
        for M in (X, X.T):
            O = modern.orthogonalize_via_newton_schulz(M)
            assert O.shape == M.shape
            s = np.linalg.svd(np.asarray(O), compute_uv=False)
            assert s.min() > 0.6 and s.max() < 1.25, s
            U, _, Vt = np.linalg.svd(np.asarray(M), full_matrices=False)
            Uo, _, Vto = np.linalg.svd(np.asarray(O), full_matrices=False)
            # same singular subspaces: |U^T Uo| is a permutation-like matrix
            np.testing.assert_allclose(
                np.linalg.svd(U.T @ Uo, compute_uv=False), 1.0, atol=1e-8
            )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: modern.lion(-1.0), "learning_rate"),
        (lambda: modern.lamb(1e-3, b2=1.0), "b2"),
        (lambda: modern.lars(1.0, momentum=1.5), "momentum"),
        (lambda: modern.adafactor(clipping_threshold=0.0), "clipping_threshold"),
        (lambda: modern.radam(1e-3, threshold="5"), "threshold"),
        (lambda: modern.muon(1e-3, ns_coeffs=(1.0, 2.0)), "ns_coeffs"),
        (lambda: modern.schedule_free_sgd(b1=0.0), "b1"),
        (lambda: modern.sam(optim.sgd(0.1), "sgd"), "adv_optimizer"),
        (lambda: modern.lookahead(optim.sgd(0.1), 0, 0.5), "sync_period"),
        (lambda: modern.lookahead(optim.sgd(0.1), 5, 1.5), "slow_step_size"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_usage_errors_name_the_fix():
    params, grad, _ = _problem()
    opt = modern.lookahead(optim.sgd(0.1), 5, 0.5)
    with pytest.raises(ValueError, match="init_synced"):
        opt.init(params)
    opt = modern.sam(optim.sgd(0.1), modern.normalize(), opaque_mode=True)
    state = opt.init(params)
    with pytest.raises(ValueError, match="grad_fn"):
        opt.update(grad(params), state, params)
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        modern.schedule_free_eval_params(optim.adam(0.1).init(params), params)


# --------------------------------------------------------------------------
# Schedules.
# --------------------------------------------------------------------------

COUNTS = np.arange(0, 400, 3)


@pytest.mark.parametrize(
    "args",
    [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=50, decay_steps=300),
        dict(
            init_value=0.1,
            peak_value=2.0,
            warmup_steps=10,
            decay_steps=250,
            end_value=0.05,
            exponent=2.0,
        ),
        dict(init_value=0.5, peak_value=0.5, warmup_steps=0, decay_steps=100),
    ],
)
def test_warmup_cosine_matches_optax(args):
    optax = pytest.importorskip("optax")
    ours = jax.jit(jax.vmap(warmup_cosine_decay_schedule(**args)))(COUNTS)
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.vmap(optax.warmup_cosine_decay_schedule(**args))(COUNTS)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay(shape):
    W, S, D, a0, peak, end = 20, 100, 80, 0.01, 1.0, 0.1
    sched = jax.jit(
        warmup_stable_decay(
            peak, W, S, D, init_value=a0, end_value=end, decay_shape=shape
        )
    )
    t = COUNTS.astype(np.float64)
    s = np.clip((t - W - S) / D, 0, 1)
    f = {
        "linear": 1 - s,
        "cosine": 0.5 * (1 + np.cos(np.pi * s)),
        "1-sqrt": 1 - np.sqrt(s),
    }
    expected = np.where(t < W, a0 + (peak - a0) * t / W, end + (peak - end) * f[shape])
    got = np.array([float(sched(jnp.int32(c))) for c in COUNTS])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    if shape == "linear":
        optax = pytest.importorskip("optax")
        ref = optax.join_schedules(
            [
                optax.linear_schedule(a0, peak, W),
                optax.constant_schedule(peak),
                optax.linear_schedule(peak, end, D),
            ],
            [W, W + S],
        )
        with jax.numpy_dtype_promotion("standard"):
            theirs = jax.vmap(ref)(COUNTS)
        np.testing.assert_allclose(got, theirs, rtol=1e-6, atol=1e-7)


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="decay_steps"):
        warmup_cosine_decay_schedule(0.0, 1.0, 10, 10)
    with pytest.raises(ValueError, match="decay_shape"):
        warmup_stable_decay(1.0, 10, 10, 10, decay_shape="exp")


def test_exported_from_fnn_optim():
    for name in [*FNN, "orthogonalize_via_newton_schulz", "normalize"]:
        name = name.split("_mu_")[0].removesuffix("_opaque").removesuffix("_reset")
        name = {"lars_nesterov": "lars", "muon_wd_nonesterov": "muon"}.get(name, name)
        assert inspect.unwrap(getattr(optim, name)) is getattr(modern, name)
    assert optim.schedule_free_eval_params is modern.schedule_free_eval_params


def test_sam_transparent_pairs_equal_opaque_steps():
    """Two transparent calls (ascent, then the outer step) = one opaque call."""
    with jax.enable_x64(True):
        params, grad, _ = _problem()

        def make(opaque):
            return modern.sam(
                optim.sgd(0.2, momentum=0.9),
                optim.chain(modern.normalize(), optim.sgd(0.05)),
                opaque_mode=opaque,
            )

        transparent, opaque = make(False), make(True)

        @jax.jit
        def go(p):
            s_t, s_o, p_t, p_o = transparent.init(p), opaque.init(p), p, p
            for _ in range(10):
                for _ in range(2):
                    u, s_t = transparent.update(grad(p_t), s_t, p_t)
                    p_t = optim.apply_updates(p_t, u)
                u, s_o = opaque.update(
                    grad(p_o), s_o, p_o, grad_fn=lambda q, i: grad(q)
                )
                p_o = optim.apply_updates(p_o, u)
            return p_t, p_o

        p_t, p_o = go(params)
    _assert_close(p_t, p_o, 1e-12)
