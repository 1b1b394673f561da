"""Hyperparameters are arrays: every optimizer, transform and schedule of
fnn.optim accepts Python numbers, NumPy and JAX scalars and traced values (under
``jax.jit`` and ``jax.vmap``) for its numeric hyperparameters, gives the same
numbers as the constant form, and a jitted step taking the learning rate as an
argument compiles once."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import optim, schedules

# --------------------------------------------------------------------------
# The catalogue: every factory, its numeric hyperparameters (name -> a valid
# value) and the fixed (structural) arguments it is built with.
# --------------------------------------------------------------------------


def _opt(factory, numeric, **fixed):
    return ("optimizer", lambda **h: factory(**fixed, **h), numeric)


def _sched(factory, numeric, **fixed):
    return ("schedule", lambda **h: factory(**fixed, **h), numeric)


ADAM_HP = {"learning_rate": 0.05, "b1": 0.8, "b2": 0.95, "eps": 1e-6}

CATALOGUE = {
    "sgd": _opt(optim.sgd, {"learning_rate": 0.1, "momentum": 0.9}, nesterov=True),
    "ema_momentum": _opt(optim.ema_momentum, {"learning_rate": 0.1, "beta": 0.8}),
    "adagrad": _opt(
        optim.adagrad,
        {"learning_rate": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-6},
    ),
    "rmsprop": _opt(
        optim.rmsprop,
        {
            "learning_rate": 0.01,
            "decay": 0.9,
            "eps": 1e-6,
            "initial_scale": 0.1,
            "momentum": 0.5,
        },
        centered=True,
    ),
    "adadelta": _opt(optim.adadelta, {"learning_rate": 0.5, "rho": 0.9, "eps": 1e-4}),
    "adam": _opt(optim.adam, ADAM_HP),
    "ema_params": _opt(optim.ema_params, {"decay": 0.9}, inner=optim.sgd(0.1)),
    "adamax": _opt(optim.adamax, ADAM_HP),
    "nadam": _opt(optim.nadam, ADAM_HP),
    "amsgrad": _opt(optim.amsgrad, ADAM_HP),
    "adamw": _opt(optim.adamw, {**ADAM_HP, "weight_decay": 0.1}),
    "adafactor": _opt(
        optim.adafactor,
        {
            "learning_rate": 0.05,
            "decay_rate": 0.8,
            "clipping_threshold": 1.0,
            "momentum": 0.5,
            "weight_decay_rate": 0.01,
            "eps": 1e-30,
        },
        min_dim_size_to_factor=2,
    ),
    "lamb": _opt(
        optim.lamb, {**ADAM_HP, "eps_root": 1e-8, "weight_decay": 0.01}
    ),
    "lars": _opt(
        optim.lars,
        {
            "learning_rate": 0.1,
            "weight_decay": 0.01,
            "trust_coefficient": 0.01,
            "eps": 1e-6,
            "momentum": 0.9,
        },
    ),
    "lion": _opt(
        optim.lion,
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.95, "weight_decay": 0.01},
    ),
    "muon": _opt(
        optim.muon,
        {
            "learning_rate": 0.02,
            "beta": 0.9,
            "eps": 1e-7,
            "weight_decay": 0.01,
            "adam_b1": 0.8,
            "adam_b2": 0.95,
            "adam_eps_root": 1e-8,
            "adam_weight_decay": 0.01,
            "adam_learning_rate": 0.01,
            "consistent_rms": 0.2,
        },
    ),
    "nadamw": _opt(
        optim.nadamw, {**ADAM_HP, "eps_root": 1e-8, "weight_decay": 0.01}
    ),
    "radam": _opt(
        optim.radam,
        # b2 = 1 - 2**-10 is exact in float32, so rho_inf is the same number.
        {**ADAM_HP, "b2": 1 - 2**-10, "eps_root": 1e-8, "threshold": 4.0},
    ),
    "schedule_free_adamw": _opt(
        optim.schedule_free_adamw,
        {
            "learning_rate": 0.01,
            "b1": 0.9,
            "b2": 0.95,
            "eps": 1e-6,
            "weight_decay": 0.01,
            "weight_lr_power": 2.0,
        },
        warmup_steps=2,
    ),
    "schedule_free_sgd": _opt(
        optim.schedule_free_sgd,
        {
            "learning_rate": 0.1,
            "b1": 0.9,
            "weight_decay": 0.01,
            "weight_lr_power": 1.0,
        },
    ),
    "lookahead": _opt(
        lambda **h: optim.lookahead(optim.sgd(0.1), 2, **h), {"slow_step_size": 0.5}
    ),
    "sam": _opt(
        lambda **h: optim.sam(optim.sgd(h["lr"]), optim.sgd(h["rho"])),
        {"lr": 0.1, "rho": 0.05},
    ),
    "normalize": _opt(lambda **h: optim.chain(optim.normalize(), optim.sgd(**h)),
                      {"learning_rate": 0.1}),
    "reduce_on_plateau": _opt(
        optim.reduce_on_plateau,
        {"factor": 0.5, "min_delta": 1e-3, "rtol": 1e-3, "min_scale": 0.1},
        patience=1,
    ),
    "add_decayed_weights": _opt(optim.add_decayed_weights, {"weight_decay": 0.1}),
    "clip_by_value": _opt(optim.clip_by_value, {"max_delta": 0.3}),
    "clip": _opt(optim.clip, {"max_delta": 0.3}),
    "clip_by_global_norm": _opt(optim.clip_by_global_norm, {"max_norm": 0.5}),
    "scale_by_learning_rate": _opt(
        optim.scale_by_learning_rate, {"learning_rate": 0.1}
    ),
    "chain": _opt(
        lambda **h: optim.chain(
            optim.clip_by_global_norm(h["max_norm"]), optim.adam(h["learning_rate"])
        ),
        {"max_norm": 0.5, "learning_rate": 0.01},
    ),
    "masked": _opt(
        lambda **h: optim.masked(optim.sgd(**h), optim.weights_only_mask),
        {"learning_rate": 0.1},
    ),
    "freeze": _opt(
        lambda **h: optim.chain(optim.freeze(optim.weights_only_mask), optim.sgd(**h)),
        {"learning_rate": 0.1},
    ),
    "partition": _opt(
        lambda **h: optim.partition(
            {"w": optim.sgd(h["a"]), "b": optim.adam(h["b"])},
            lambda p: jax.tree_util.tree_map_with_path(
                lambda path, _: "b" if path[-1].key == "b" else "w", p
            ),
        ),
        {"a": 0.1, "b": 0.01},
    ),
    "skip_if_nonfinite": _opt(
        lambda **h: optim.skip_if_nonfinite(optim.sgd(**h)), {"learning_rate": 0.1}
    ),
    "newton": _opt(optim.newton, {"damping": 0.1, "c1": 1e-4, "c2": 0.9}),
    "bfgs": _opt(optim.bfgs, {"c1": 1e-4, "c2": 0.9}),
    "lbfgs": _opt(optim.lbfgs, {"c1": 1e-4, "c2": 0.9}, memory_size=3),
    "conjugate_gradient": _opt(optim.conjugate_gradient, {"c1": 1e-4, "c2": 0.1}),
    # Schedules.
    "constant_schedule": _sched(schedules.constant_schedule, {"value": 0.1}),
    "inverse_time_decay": _sched(
        schedules.inverse_time_decay,
        {"init_value": 0.1, "decay_rate": 0.5},
        steps_per_epoch=3,
    ),
    "epoch_exponential_decay": _sched(
        schedules.epoch_exponential_decay,
        {"init_value": 0.1, "decay_rate": 0.9},
        steps_per_epoch=3,
    ),
    "exponential_decay": _sched(
        schedules.exponential_decay,
        {"init_value": 0.1, "decay_rate": 0.5, "end_value": 0.01},
        transition_steps=4,
        transition_begin=2,
    ),
    "inverse_sqrt_decay": _sched(
        schedules.inverse_sqrt_decay, {"init_value": 0.1, "k": 2.0}
    ),
    "linear_schedule": _sched(
        schedules.linear_schedule,
        {"init_value": 0.1, "end_value": 0.01},
        transition_steps=10,
        transition_begin=2,
    ),
    "polynomial_schedule": _sched(
        schedules.polynomial_schedule,
        {"init_value": 0.1, "end_value": 0.01, "power": 2.0},
        transition_steps=10,
    ),
    "piecewise_constant_schedule": _sched(
        lambda **h: schedules.piecewise_constant_schedule(
            h["init_value"], {3: h["s1"], 8: h["s2"]}
        ),
        {"init_value": 0.1, "s1": 0.5, "s2": 0.1},
    ),
    "cosine_decay_schedule": _sched(
        schedules.cosine_decay_schedule,
        {"init_value": 0.1, "alpha": 0.1},
        decay_steps=10,
    ),
    "linear_warmup": _sched(
        schedules.linear_warmup,
        {"peak_value": 0.1, "init_value": 0.01},
        warmup_steps=5,
    ),
    "warmup": _sched(
        lambda **h: schedules.warmup(
            schedules.constant_schedule(h["peak"]), 5, h["init_value"]
        ),
        {"peak": 0.1, "init_value": 0.01},
    ),
    "one_cycle": _sched(
        schedules.one_cycle,
        {
            "peak_value": 0.1,
            "pct_start": 0.3,
            "div_factor": 10.0,
            "final_div_factor": 100.0,
        },
        transition_steps=20,
    ),
    "sgdr": _sched(
        schedules.sgdr,
        {"init_value": 0.1, "period_mult": 2.0, "min_value": 0.01},
        period=3,
    ),
    "sgdr_mult_1": _sched(
        schedules.sgdr,
        {"init_value": 0.1, "period_mult": 1.0, "min_value": 0.01},
        period=3,
    ),
    "cosine_warm_restarts": _sched(
        schedules.cosine_warm_restarts,
        {"init_value": 0.1, "period_mult": 1.5, "min_value": 0.0},
        period=4,
    ),
    "join_schedules": _sched(
        lambda **h: schedules.join_schedules(
            [schedules.constant_schedule(h["a"]), schedules.constant_schedule(h["b"])],
            [4],
        ),
        {"a": 0.1, "b": 0.01},
    ),
    "warmup_cosine_decay_schedule": _sched(
        schedules.warmup_cosine_decay_schedule,
        {"init_value": 0.0, "peak_value": 0.1, "end_value": 0.01, "exponent": 2.0},
        warmup_steps=3,
        decay_steps=12,
    ),
    "warmup_stable_decay": _sched(
        schedules.warmup_stable_decay,
        {"peak_value": 0.1, "init_value": 0.01, "end_value": 0.001},
        warmup_steps=3,
        stable_steps=3,
        decay_steps=5,
    ),
}

#: Public functions of fnn.optim that are not factories with hyperparameters.
NOT_FACTORIES = {
    "apply_updates",
    "current_learning_rate",
    "global_norm",
    "minimize",
    "orthogonalize_via_newton_schulz",
    "schedule_free_eval_params",
    "strong_wolfe_line_search",
    "weights_only_mask",
    "differentially_private_aggregate",  # needs per-example gradients
    "dpsgd",
    "per_example_global_norms",
    "ema_params_of",
    "MultiSteps",  # multi_steps under optax's class name
    "multi_steps",  # every_k_schedule counts steps: no numeric hyperparameter
}

SECOND_ORDER = {"newton", "bfgs", "lbfgs", "conjugate_gradient"}
COUNTS = jnp.array([0, 1, 2, 3, 5, 8, 13, 21, 40], jnp.int32)


def test_catalogue_covers_every_factory():
    public = {
        name
        for name in optim.__all__
        if inspect.isfunction(getattr(optim, name)) and name not in NOT_FACTORIES
    }
    assert public <= set(CATALOGUE), sorted(public - set(CATALOGUE))
    assert set(schedules.__all__) <= set(CATALOGUE)


# --------------------------------------------------------------------------
# A small problem every optimizer can take a few steps on.
# --------------------------------------------------------------------------


def _params():
    return [
        {"W": jnp.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.1]], jnp.float32),
         "b": jnp.array([0.1, -0.2], jnp.float32)},
    ]  # fmt: skip


def _loss(params):
    W, b = params[0]["W"], params[0]["b"]
    x = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], jnp.float32)
    Z = x @ W + b
    return jnp.sum(jnp.tanh(Z) ** 2) + 0.1 * jnp.sum(W**2)


def _run(kind, name, opt_or_schedule, steps=3):
    """Three to four steps of the optimizer (or the schedule's values)."""
    if kind == "schedule":
        return jax.vmap(opt_or_schedule)(COUNTS)
    opt = opt_or_schedule
    steps = 5 if name == "radam" else steps  # rectified from step 5 on
    steps = 1 if name in SECOND_ORDER else steps  # line searches compile slowly
    params = _params()
    if name == "lookahead":
        params = optim.LookaheadParams.init_synced(params)
    state = opt.init(params)
    for _ in range(steps):
        if name == "lookahead":
            grads = jax.grad(_loss)(params.fast)
        else:
            value, grads = jax.value_and_grad(_loss)(params)
        extra = {}
        if name in SECOND_ORDER:
            extra = dict(value=value, grad=grads, value_fn=_loss)
        elif name == "reduce_on_plateau":
            extra = dict(value=value)
        updates, state = opt.update(grads, state, params, **extra)
        params = optim.apply_updates(params, updates)
    return params


def _close(a, b, rtol=2e-5, atol=1e-7):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def _other(k, v):
    """A second valid setting of hyperparameter ``k`` (for the vmap batch)."""
    if k == "pct_start":
        return v * 1.5
    if k in ("b1", "b2", "decay", "rho", "momentum", "beta", "adam_b1",
             "adam_b2", "factor", "decay_rate", "slow_step_size"):  # fmt: skip
        return v * 0.9
    if k == "period_mult":
        return v + 0.5
    if k in ("c1", "c2", "threshold"):
        return v
    return v * 0.5


def _catalogue_params():
    """The catalogue, with the line-search optimizers marked slow (each compiles
    its while loops for four settings and a vmap: about 10 s)."""
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in SECOND_ORDER else n
        for n in sorted(CATALOGUE)
    ]


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_line_search_constants_traced(name):
    """The fast part of the slow test: built from traced constants under jit."""
    kind, make, numeric = CATALOGUE[name]
    params = _params()
    jax.jit(lambda h: make(**h).init(params))(
        {k: jnp.float32(v) for k, v in numeric.items()}
    )


@pytest.mark.parametrize("name", _catalogue_params())
def test_hyperparameters_as_arrays(name):
    """NumPy and JAX scalars give the Python numbers' results; traced values
    (jit of vmap over two settings) give each setting's separate results."""
    kind, make, numeric = CATALOGUE[name]
    second = {k: _other(k, v) for k, v in numeric.items()}
    as_np = {k: np.float32(v) for k, v in numeric.items()}
    as_jnp = {k: jnp.float32(v) for k, v in numeric.items()}

    # np.float32 / jnp.float32 are checked and stored as Python floats: the
    # same numbers as float(np.float32(v)).
    rounded = {k: float(v) for k, v in as_np.items()}
    settings = (numeric, as_np, as_jnp, second, rounded)

    @jax.jit
    def constant_forms():
        return [_run(kind, name, make(**h)) for h in settings]

    ref, from_np, from_jnp, ref_second, rounded = constant_forms()
    chex.assert_trees_all_equal(from_np, rounded)
    chex.assert_trees_all_equal(from_jnp, rounded)
    _close(from_np, ref)

    stacked = {k: jnp.array([numeric[k], second[k]], jnp.float32) for k in numeric}
    batched = jax.jit(jax.vmap(lambda h: _run(kind, name, make(**h))))(stacked)
    # A batched float32 Hessian solve rounds differently from a single one.
    rtol = 1e-3 if name in SECOND_ORDER else 2e-5
    for i, expected in enumerate([ref, ref_second]):
        _close(jax.tree.map(lambda x, i=i: x[i], batched), expected, rtol=rtol)


#: Catalogue keys whose factory names the hyperparameter otherwise.
ALIASES = {
    ("sam", "lr"): "learning_rate",
    ("sam", "rho"): "learning_rate",
    ("partition", "a"): "learning_rate",
    ("partition", "b"): "learning_rate",
    ("join_schedules", "a"): "value",
    ("join_schedules", "b"): "value",
    ("warmup", "peak"): "value",
    ("piecewise_constant_schedule", "s1"): "boundaries_and_scales",
    ("piecewise_constant_schedule", "s2"): "boundaries_and_scales",
}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_concrete_values_raise(name):
    """A concrete non-finite value, as a Python, NumPy or JAX scalar, raises a
    ValueError naming the argument."""
    _, make, numeric = CATALOGUE[name]
    for k in numeric:
        label = ALIASES.get((name, k), k)
        with jax.debug_nans(False):
            as_jax = jnp.float32(jnp.nan)
        for bad in (float("nan"), np.float32("inf"), as_jax):
            with pytest.raises(ValueError, match=label):
                make(**{**numeric, k: bad})


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda v: optim.adam(-v), "learning_rate"),
        (lambda v: optim.adam(1e-3, b1=1 + v), "b1"),
        (lambda v: optim.adamw(1e-3, weight_decay=-v), "weight_decay"),
        (lambda v: optim.sgd(0.1, momentum=1 + v), "momentum"),
        (lambda v: optim.clip_by_global_norm(0 * v), "max_norm"),
        (lambda v: optim.lookahead(optim.sgd(0.1), 2, 1 + v), "slow_step_size"),
        (lambda v: optim.schedule_free_sgd(b1=1 + v), "b1"),
        (lambda v: optim.radam(1e-3, threshold=jnp.float32(jnp.inf) * v), "threshold"),
        (lambda v: schedules.one_cycle(10, 0.1, pct_start=0.5 + v), "pct_start"),
        (lambda v: schedules.sgdr(0.1, 3, period_mult=1 - v), "period_mult"),
        (lambda v: optim.bfgs(c1=0.5 + v, c2=0.5), "c1"),
    ],
)
@pytest.mark.parametrize("kind", [float, np.float32, jnp.float32])
def test_out_of_range_arrays_raise(make, name, kind):
    with pytest.raises(ValueError, match=name):
        make(kind(0.25))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda n: schedules.linear_schedule(0.1, 0.0, n), "transition_steps"),
        (lambda n: schedules.cosine_decay_schedule(0.1, n), "decay_steps"),
        (lambda n: schedules.sgdr(0.1, n), "period"),
        (lambda n: optim.lbfgs(memory_size=n), "memory_size"),
        (lambda n: optim.reduce_on_plateau(patience=n), "patience"),
    ],
)
def test_structural_integers_refuse_tracers(make, name):
    """Step counts and memory sizes fix the structure: a traced value raises a
    ValueError naming the argument and saying to pass a Python number."""
    with pytest.raises(ValueError, match=f"{name} must be a concrete number"):
        jax.jit(make)(jnp.int32(5))


# --------------------------------------------------------------------------
# The learning rate as an argument of a jitted step.
# --------------------------------------------------------------------------


def _train(opt, params, steps):
    state = opt.init(params)
    for _ in range(steps):
        grads = jax.grad(_loss)(params)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params


FACTORIES = {"sgd": optim.sgd, "adam": optim.adam, "adamw": optim.adamw}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_array_learning_rate_is_bitwise_the_constant_form(name):
    """50 steps with the learning rate a Python float, a jnp.float32 and a traced
    argument of jit give the same float32 bits."""
    factory = FACTORIES[name]
    lr = 1e-3  # adam(jnp.float32(1e-3)) against adam(1e-3), float32 parameters

    def run(learning_rate):
        return jax.lax.fori_loop(
            0, 50, lambda _, c: _step_fn(factory(learning_rate), c), _start(factory)
        )

    constant = jax.jit(lambda: run(lr))()
    from_array = jax.jit(lambda: run(jnp.float32(lr)))()
    from_numpy = jax.jit(lambda: run(np.float32(lr)))()
    chex.assert_trees_all_equal(from_numpy, constant)
    traced = jax.jit(run)(jnp.float32(lr))
    chex.assert_trees_all_equal(from_array, constant)
    chex.assert_trees_all_equal(traced, constant)


def _start(factory):
    params = _params()
    return params, factory(0.0).init(params)


def _step_fn(opt, carry):
    params, state = carry
    grads = jax.grad(_loss)(params)
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state


def test_changing_the_learning_rate_does_not_recompile():
    traces = []

    @jax.jit
    def step(params, state, learning_rate):
        traces.append(1)  # runs once per trace
        return _step_fn(optim.adam(learning_rate), (params, state))

    params = _params()
    state = optim.adam(1e-3).init(params)
    for lr in (1e-3, 3e-3, 1e-2):
        params, state = step(params, state, jnp.float32(lr))
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_traced_learning_rate_in_the_state():
    """The state records the traced rate (as float32) like a constant one."""
    params = _params()
    state = jax.jit(lambda lr: optim.sgd(lr).init(params))(jnp.float32(0.25))
    assert state.learning_rate.dtype == jnp.float32
    assert float(state.learning_rate) == 0.25


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_vmap_over_learning_rates_equals_separate_runs(name):
    factory = FACTORIES[name]
    lrs = jnp.array([1e-3, 3e-3, 1e-2, 3e-2], jnp.float32)
    batched = jax.jit(jax.vmap(lambda lr: _train(factory(lr), _params(), 5)))(lrs)
    for i, lr in enumerate(lrs):
        single = jax.jit(lambda lr=float(lr): _train(factory(lr), _params(), 5))()
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6, atol=1e-7
        )


def test_schedule_endpoints_as_arrays_under_vmap():
    """A sweep over peak values of a warm-up cosine schedule inside one vmap."""
    peaks = jnp.array([0.1, 0.2, 0.4], jnp.float32)
    counts = jnp.arange(12, dtype=jnp.int32)

    def values(peak):
        sched = schedules.warmup_cosine_decay_schedule(0.0, peak, 3, 10, 0.0)
        return jax.vmap(sched)(counts)

    batched = jax.jit(jax.vmap(values))(peaks)
    for i, peak in enumerate([0.1, 0.2, 0.4]):
        chex.assert_trees_all_close(batched[i], values(peak), rtol=1e-5, atol=1e-8)


def test_rebuilt_optimizer_is_the_same_value_and_fit_compiles_once():
    """``adam(1e-2)`` built twice is one value (fit's compile key); an array
    learning rate or different numbers build new ones."""
    from fnn import _fit

    assert fnn.optim.adam(1e-2) is fnn.optim.adam(1e-2)
    assert fnn.optim.adam(1e-2) is not fnn.optim.adam(2e-2)
    assert fnn.optim.adam(1) is not fnn.optim.adam(1.0)  # keyed with the type
    chained = fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), fnn.optim.sgd(0.1))
    assert chained is fnn.optim.chain(
        fnn.optim.clip_by_global_norm(1.0), fnn.optim.sgd(0.1)
    )
    assert fnn.optim.adam(jnp.float32(1e-2)) is not fnn.optim.adam(jnp.float32(1e-2))

    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    params = fnn.init_params(jax.random.key(0), [3, 5, 2])
    kw = dict(key=jax.random.key(1), epochs=2, batch_size=8, loss="cross_entropy")
    fnn.fit(params, fnn.optim.adam(0.0123), X, y, **kw)
    before = _fit._run_epoch._cache_size()
    result = fnn.fit(params, fnn.optim.adam(0.0123), X, y, **kw)
    assert _fit._run_epoch._cache_size() == before
    assert np.isfinite(result.history["train_loss"]).all()
