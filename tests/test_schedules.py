"""Tests for fnn.schedules and reduce-on-plateau.

Each schedule is compared, under jit, with its closed form written again here in
numpy (float64, step by step), at many steps.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import schedules
from fnn.optim._plateau import ReduceOnPlateauState, observe, reduce_on_plateau

STEPS = np.arange(0, 400)


def evaluate(schedule, steps=STEPS):
    """The schedule at every step, jitted, one count at a time (int32 counts)."""
    fn = jax.jit(schedule)
    out = [fn(jnp.asarray(t, jnp.int32)) for t in steps]
    for v in out:
        assert v.dtype == jnp.float32 and v.shape == ()
    batched = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(batched))
    return np.asarray(out, np.float64)


def check(schedule, reference, steps=STEPS, rtol=1e-5, atol=1e-7):
    expected = np.array([reference(int(t)) for t in steps], np.float64)
    np.testing.assert_allclose(
        evaluate(schedule, steps), expected, rtol=rtol, atol=atol
    )


# --- seed 000, section 6: the three decay laws by epoch ---------------------------


@pytest.mark.parametrize("spe", [1, 7])
def test_inverse_time_decay(spe):
    check(
        schedules.inverse_time_decay(0.2, 0.5, steps_per_epoch=spe),
        lambda t: 0.2 / (1 + 0.5 * (t // spe)),
    )


@pytest.mark.parametrize("spe", [1, 7])
def test_epoch_exponential_decay(spe):
    check(
        schedules.epoch_exponential_decay(0.2, 0.95, steps_per_epoch=spe),
        lambda t: 0.2 * 0.95 ** (t // spe),
    )


@pytest.mark.parametrize("spe", [1, 7])
def test_inverse_sqrt_decay(spe):
    # Seed's a0 k / sqrt(epoch) with 1-based epochs: epoch_1 = t // spe + 1.
    check(
        schedules.inverse_sqrt_decay(0.2, 0.5, steps_per_epoch=spe),
        lambda t: 0.2 * 0.5 / math.sqrt(t // spe + 1),
    )


def test_decay_laws_are_constant_within_an_epoch():
    lr = evaluate(
        schedules.epoch_exponential_decay(1.0, 0.5, steps_per_epoch=10), range(30)
    )
    np.testing.assert_array_equal(lr[:10], 1.0)
    np.testing.assert_array_equal(lr[10:20], 0.5)
    np.testing.assert_array_equal(lr[20:], 0.25)


# --- seed 003 ---------------------------------------------------------------------


def test_constant_schedule():
    check(schedules.constant_schedule(0.3), lambda t: 0.3)


def test_linear_schedule():
    def ref(t):
        if t <= 20:
            return 1.0
        if t >= 120:
            return 0.1
        return 1.0 + (0.1 - 1.0) * (t - 20) / 100

    check(schedules.linear_schedule(1.0, 0.1, 100, transition_begin=20), ref)


def test_polynomial_schedule():
    def ref(t):
        s = min(t, 150) / 150
        return (0.5 - 0.01) * (1 - s) ** 2 + 0.01

    check(schedules.polynomial_schedule(0.5, 0.01, 2.0, 150), ref)


def test_piecewise_constant_halving():
    # Halve at 100, 200, 300: the rate at step b already carries the scale.
    sched = schedules.piecewise_constant_schedule(0.8, {200: 0.5, 100: 0.5, 300: 0.5})
    check(sched, lambda t: 0.8 * 0.5 ** sum(t >= b for b in (100, 200, 300)))


def test_cosine_decay_schedule():
    def ref(t):
        s = min(t, 250) / 250
        return 0.4 * (0.9 * 0.5 * (1 + math.cos(math.pi * s)) + 0.1)

    check(schedules.cosine_decay_schedule(0.4, 250, alpha=0.1), ref)


def test_linear_warmup():
    check(
        schedules.linear_warmup(0.6, 50, init_value=0.0),
        lambda t: 0.6 * min(t / 50, 1.0),
    )


def test_warmup_then_epoch_exponential_decay():
    base = schedules.epoch_exponential_decay(0.5, 0.99)
    check(
        schedules.warmup(base, 30, init_value=0.05),
        lambda t: 0.05 + (0.5 - 0.05) * t / 30 if t < 30 else 0.5 * 0.99 ** (t - 30),
    )


def test_one_cycle():
    T, peak, pct, div, fdiv = 300, 1.0, 0.4, 20.0, 100.0

    def ref(t):
        a_min, t1 = peak / div, pct * T
        a_end, t2 = a_min / fdiv, 2 * pct * T
        if t <= t1:
            return a_min + (peak - a_min) * t / t1
        if t <= t2:
            return peak - (peak - a_min) * (t - t1) / t1
        if t <= T:
            return a_min - (a_min - a_end) * (t - t2) / (T - t2)
        return a_end

    sched = schedules.one_cycle(
        T, peak, pct_start=pct, div_factor=div, final_div_factor=fdiv
    )
    check(sched, ref)
    lr = evaluate(sched, [0, 120, 240, 300])
    np.testing.assert_allclose(lr, [0.05, 1.0, 0.05, 0.0005], rtol=1e-5)


def _sgdr_reference(a0, T0, mult, a_min):
    """Walk the periods one by one (no closed-form inversion)."""

    def ref(t):
        start, length = 0.0, float(T0)
        while t >= start + length:
            start += length
            length *= mult
        return a_min + (a0 - a_min) * 0.5 * (
            1 + math.cos(math.pi * (t - start) / length)
        )

    return ref


@pytest.mark.parametrize("mult", [1.0, 2.0, 1.5])
def test_sgdr(mult):
    check(
        schedules.sgdr(0.1, 10, period_mult=mult, min_value=0.001),
        _sgdr_reference(0.1, 10, mult, 0.001),
        STEPS,
        rtol=2e-4,
        atol=1e-6,
    )


def test_sgdr_restarts_at_period_starts():
    lr = evaluate(schedules.cosine_warm_restarts(1.0, 10, period_mult=2.0), range(80))
    for start in (0, 10, 30, 70):  # 10, 20, 40: T_i = 10 * 2^i
        assert lr[start] == pytest.approx(1.0)
        if start > 0:
            assert lr[start - 1] < 0.05


def test_join_schedules_counts_from_each_boundary():
    a = schedules.constant_schedule(1.0)
    b = schedules.linear_schedule(0.5, 0.0, 10)
    c = schedules.epoch_exponential_decay(0.2, 0.5)

    def ref(t):
        if t < 30:
            return 1.0
        if t < 100:
            return 0.5 * (1 - min((t - 30) / 10, 1.0))
        return 0.2 * 0.5 ** (t - 100)

    check(schedules.join_schedules([a, b, c], [30, 100]), ref, range(130))


def test_schedules_accept_python_ints_and_int64():
    sched = schedules.inverse_time_decay(1.0, 1.0)
    assert float(sched(3)) == pytest.approx(0.25)
    with jax.enable_x64(True):
        v = sched(jnp.asarray(3, jnp.int64))
        assert v.dtype == jnp.float32
        assert float(v) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "factory, args, match",
    [
        (schedules.inverse_time_decay, (0.1, -1.0), "decay_rate"),
        (schedules.epoch_exponential_decay, (0.1, 0.0), "decay_rate"),
        (schedules.epoch_exponential_decay, (0.1, 0.9, 0), "steps_per_epoch"),
        (schedules.exponential_decay, (0.1, 0, 0.5), "transition_steps"),
        (schedules.exponential_decay, (0.1, 5, -0.5), "decay_rate"),
        (schedules.inverse_sqrt_decay, (0.1, 0.0), "k"),
        (schedules.linear_schedule, (1.0, 0.0, 0), "transition_steps"),
        (schedules.linear_schedule, (float("nan"), 0.0, 5), "init_value"),
        (schedules.piecewise_constant_schedule, (1.0, {-1: 0.5}), "boundaries"),
        (schedules.cosine_decay_schedule, (1.0, 10, -0.1), "alpha"),
        (schedules.one_cycle, (100, 1.0, 0.7), "pct_start"),
        (schedules.sgdr, (1.0, 10, 0.5), "period_mult"),
        (schedules.join_schedules, ([lambda t: t], [0, 1]), "boundaries"),
        (schedules.join_schedules, ([lambda t: t] * 3, [5, 5]), r"boundaries\[1\]"),
    ],
)
def test_bad_arguments_raise(factory, args, match):
    with pytest.raises(ValueError, match=match):
        factory(*args)


def test_bad_value_appears_in_message():
    with pytest.raises(ValueError, match="-3"):
        schedules.epoch_exponential_decay(0.1, -3.0)


# --- learning-rate values: finite and >= 0; NumPy, JAX and traced scalars ---------

NAN, INF = float("nan"), float("inf")

# factory, keyword arguments of a valid schedule, the value arguments (rates)
RATE_ARGUMENTS = [
    (schedules.constant_schedule, {"value": 0.1}, ["value"]),
    (
        schedules.inverse_time_decay,
        {"init_value": 0.1, "decay_rate": 0.5},
        ["init_value"],
    ),
    (
        schedules.epoch_exponential_decay,
        {"init_value": 0.1, "decay_rate": 0.5},
        ["init_value"],
    ),
    (
        schedules.exponential_decay,
        {"init_value": 0.1, "transition_steps": 5, "decay_rate": 0.5},
        ["init_value"],
    ),
    (schedules.inverse_sqrt_decay, {"init_value": 0.1, "k": 0.5}, ["init_value"]),
    (
        schedules.linear_schedule,
        {"init_value": 0.1, "end_value": 0.01, "transition_steps": 10},
        ["init_value", "end_value"],
    ),
    (
        schedules.polynomial_schedule,
        {"init_value": 0.1, "end_value": 0.0, "power": 2.0, "transition_steps": 10},
        ["init_value", "end_value"],
    ),
    (schedules.piecewise_constant_schedule, {"init_value": 0.1}, ["init_value"]),
    (
        schedules.cosine_decay_schedule,
        {"init_value": 0.1, "decay_steps": 10},
        ["init_value"],
    ),
    (
        schedules.linear_warmup,
        {"peak_value": 0.1, "warmup_steps": 10},
        ["peak_value", "init_value"],
    ),
    (schedules.one_cycle, {"transition_steps": 100, "peak_value": 0.1}, ["peak_value"]),
    (
        schedules.sgdr,
        {"init_value": 0.1, "period": 10},
        ["init_value", "min_value"],
    ),
]


@pytest.mark.parametrize("bad", [-1.0, NAN, INF, np.float32(-0.5), jnp.float32(-0.5)])
@pytest.mark.parametrize(
    "factory, kwargs, names", RATE_ARGUMENTS, ids=lambda x: getattr(x, "__name__", "")
)
def test_schedule_values_must_be_finite_and_nonnegative(factory, kwargs, names, bad):
    for name in names:
        with pytest.raises(ValueError, match=name):
            factory(**{**kwargs, name: bad})


def test_negative_peaks_of_the_issue_are_refused():
    with pytest.raises(ValueError, match=r"init_value must be .*>= 0.*-1\.0"):
        schedules.cosine_decay_schedule(-1.0, 100)
    with pytest.raises(ValueError, match=r"peak_value.*-0\.1"):
        schedules.one_cycle(100, -0.1)
    with pytest.raises(ValueError, match=r"schedule\(0\).*-0\.5"):
        schedules.warmup(lambda count: jnp.full((), -0.5, jnp.float32), 5)
    with pytest.raises(ValueError, match=r"boundaries_and_scales\[3\].*nan"):
        schedules.piecewise_constant_schedule(0.1, {3: NAN})


@pytest.mark.parametrize(
    "factory, kwargs, names", RATE_ARGUMENTS, ids=lambda x: getattr(x, "__name__", "")
)
def test_schedule_values_accept_numpy_and_jax_scalars(factory, kwargs, names):
    reference = evaluate(factory(**kwargs), np.arange(0, 30))
    for convert in (np.float32, jnp.float32, np.asarray):
        converted = {
            k: convert(v) if k in names and k in kwargs else v
            for k, v in kwargs.items()
        }
        np.testing.assert_allclose(
            evaluate(factory(**converted), np.arange(0, 30)), reference, rtol=1e-6
        )


def test_integer_arguments_accept_numpy_integers():
    a = schedules.cosine_decay_schedule(0.1, np.int64(10))
    b = schedules.cosine_decay_schedule(0.1, 10)
    np.testing.assert_array_equal(evaluate(a, range(12)), evaluate(b, range(12)))
    with pytest.raises(ValueError, match="decay_steps must be an integer"):
        schedules.cosine_decay_schedule(0.1, 10.0)


@pytest.mark.parametrize(
    "factory, kwargs, names", RATE_ARGUMENTS, ids=lambda x: getattr(x, "__name__", "")
)
def test_traced_schedule_values_under_jit(factory, kwargs, names):
    steps = jnp.arange(0, 30, dtype=jnp.int32)
    reference = jax.vmap(factory(**kwargs))(steps)

    @jax.jit
    def traced(values):
        return jax.vmap(factory(**{**kwargs, **values}))(steps)

    values = {k: kwargs[k] for k in names if k in kwargs}
    out = traced(values)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-9)


def test_shape_arguments_must_be_concrete():
    # Step counts fix the structure; pct_start and period_mult may be arrays.
    with pytest.raises(ValueError, match="transition_steps must be a concrete"):
        jax.jit(lambda n: schedules.one_cycle(n, 0.1, 0.3)(0))(100)
    with pytest.raises(ValueError, match="period must be a concrete number"):
        jax.jit(lambda n: schedules.sgdr(0.1, n, 2.0)(0))(10)


def test_one_shared_scalar_check():
    # The schedules, the optimizers and reduce_on_plateau word their errors alike.
    messages = []
    for call in (
        lambda: schedules.constant_schedule(-1.0),
        lambda: reduce_on_plateau(min_delta=-1.0),
    ):
        with pytest.raises(ValueError) as info:
            call()
        messages.append(str(info.value).split(" ", 1)[1])
    assert messages[0] == messages[1] == "must be a finite number >= 0, got -1.0."


# --- reduce on plateau ------------------------------------------------------------


def _reference_plateau(values, factor, patience, min_delta, rtol, cooldown):
    """Plain-Python version of the rule, written from the docstring."""
    best, plateau, cool, scale, out = math.inf, 0, 0, 1.0, []
    for i, v in enumerate(values):
        limit = best - (min_delta + rtol * (abs(best) if math.isfinite(best) else 0))
        improved = i == 0 or v < limit
        if improved:
            best = v
        plateau = 0 if (improved or cool > 0) else plateau + 1
        if plateau >= patience:
            scale *= factor
            plateau = 0
            cool = cooldown
        else:
            cool = max(cool - 1, 0)
        out.append(scale)
    return out


@pytest.mark.parametrize("cooldown", [0, 2])
def test_plateau_matches_reference_with_negative_losses(cooldown):
    rng = np.random.default_rng(0)
    # A negative loss that improves, stalls, improves slightly, then stalls.
    values = np.concatenate(
        [
            -1.0 - np.arange(10) * 0.1,
            -1.9 + rng.uniform(0.0, 0.05, size=15),
            -1.95 - np.arange(5) * 1e-3,
            -1.9 + rng.uniform(0.0, 0.05, size=20),
        ]
    ).astype(np.float32)
    opt = reduce_on_plateau(factor=0.5, patience=3, min_delta=1e-2, cooldown=cooldown)
    state = opt.init({"w": jnp.zeros(2)})
    step = jax.jit(lambda s, v: opt.update.observe(s, v))
    scales = []
    for v in values:
        state = step(state, jnp.asarray(v))
        scales.append(float(state.scale))
    expected = _reference_plateau(
        [float(v) for v in values], 0.5, 3, 1e-2, 0.0, cooldown
    )
    np.testing.assert_allclose(scales, expected)
    assert min(scales) < 1.0  # the stall did reduce


def test_plateau_negative_loss_improvement_is_not_sign_relative():
    # best = -10, rtol = 0.1: an improvement needs v < -10 - 1 = -11. A
    # sign-relative rule (v < best * (1 - rtol) = -9) would call -9.5 an
    # improvement; here it is not, and -11.5 is.
    opt = reduce_on_plateau(patience=1, rtol=0.1)
    s = opt.init(None)
    s = opt.update.observe(s, -10.0)
    s1 = opt.update.observe(s, -9.5)
    assert float(s1.best) == -10.0 and float(s1.scale) == 0.5
    s2 = opt.update.observe(s, -11.5)
    assert float(s2.best) == -11.5 and float(s2.scale) == 1.0


def test_plateau_patience_and_min_scale():
    opt = reduce_on_plateau(factor=0.5, patience=2, min_scale=0.2)
    state = opt.init(None)
    scales = []
    for v in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]:
        state = opt.update.observe(state, v)
        scales.append(float(state.scale))
    # reductions after evaluations 3, 5, 7 (two non-improving each); floor 0.2.
    np.testing.assert_allclose(scales, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2])
    assert int(state.plateau_count) == 0 and float(state.best) == 0.5


def test_plateau_scales_updates_and_observes_through_update():
    # Compose by hand after a gradient-descent step: updates = -lr * g * scale.
    opt = reduce_on_plateau(factor=0.5, patience=1)
    params = {"w": jnp.ones(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    base = jax.tree.map(lambda g: -0.1 * g, grads)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, value):
        return opt.update(base, state, params, value=value)

    chex.clear_trace_counter()
    u, state = step(state, jnp.asarray(-1.0, jnp.float32))
    chex.assert_trees_all_close(u, base)
    u, state = step(state, jnp.asarray(-0.5, jnp.float32))  # worse: halve now
    chex.assert_trees_all_close(u, jax.tree.map(lambda x: 0.5 * x, base))
    assert float(state.scale) == 0.5
    # No value: no observation, just the scale.
    u, state2 = opt.update(base, state, params)
    assert int(state2.count) == int(state.count)
    chex.assert_trees_all_close(u, jax.tree.map(lambda x: 0.5 * x, base))


def test_plateau_update_keeps_dtypes_and_state_avals():
    opt = reduce_on_plateau()
    with jax.enable_x64(True):
        params = {"w": jnp.ones(2, jnp.float64)}
        state = opt.init(params)
        out = jax.eval_shape(
            lambda s: opt.update(params, s, params, value=jnp.asarray(1.0)), state
        )
        chex.assert_trees_all_equal_shapes_and_dtypes(out[1], state)
        assert out[0]["w"].dtype == jnp.float64
    assert isinstance(state, ReduceOnPlateauState)


def test_module_level_observe_matches_bound_one():
    opt = reduce_on_plateau(factor=0.3, patience=2, cooldown=1)
    a = b = opt.init(None)
    for v in [3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 1.0]:
        a = opt.update.observe(a, v)
        b = observe(b, v, factor=0.3, patience=2, cooldown=1)
        chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"factor": 1.0}, "factor"),
        ({"factor": 0.0}, "factor"),
        ({"patience": 0}, "patience"),
        ({"min_delta": -1.0}, "min_delta"),
        ({"cooldown": -1}, "cooldown"),
        ({"patience": 2.5}, "patience"),
    ],
)
def test_plateau_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reduce_on_plateau(**kwargs)


def test_plateau_rejects_non_scalar_value():
    opt = reduce_on_plateau()
    with pytest.raises(ValueError, match="scalar"):
        opt.update.observe(opt.init(None), jnp.zeros(3))
