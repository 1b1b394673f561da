"""A model is one value that every tool accepts: fnn.mlp, combinators, blocks=.

Also fit's loop state (exact resume), its first-batch gradient check, its
compile cache and its non-finite update check.
"""

import importlib
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import nn


def _data(n=120, seed=0):
    ds = fnn.datasets.load_digits()
    X = np.asarray(ds.X[:n], np.float32) / 16
    return X, np.asarray(ds.y[:n])


def _temperature(sign=-1.0):
    """A user block y = x / τ with dτ = −Σ dy·x/τ² (sign=+1 plants a bug)."""

    def init(key, in_shape, dtype):
        return {"tau": jnp.full((), 1.5, dtype)}, in_shape

    def forward(p, x):
        return x / p["tau"], x

    def backward(p, x, dy):
        return {"tau": sign * jnp.sum(dy * x) / p["tau"] ** 2}, dy / p["tau"]

    return nn.stateless("Temperature", init, forward, backward)


def test_mlp_model_is_the_design_card_mlp():
    key, sizes = jax.random.key(3), [6, 5, 4, 3]
    model = fnn.mlp(sizes, activation="tanh", W_init="glorot_normal")
    params, state = nn.init(key, model)
    chex.assert_trees_all_equal(params, fnn.init_params(key, sizes, "glorot_normal"))
    x = jax.random.normal(jax.random.key(4), (7, 6))
    chex.assert_trees_all_close(
        fnn.apply(params, x, blocks=model, state=state),
        fnn.apply(params, x, activation="tanh"),
        rtol=1e-6,
    )
    assert nn.out_shape(model) == (3,)


def test_loss_of_a_model_is_differentiable_and_equals_backprop():
    model = nn.Sequential(
        [nn.Dense(5, "tanh"), nn.Residual(nn.Dense(5, "sigmoid")), nn.Dense(3)]
    )
    with jax.enable_x64(True):
        params, state = nn.init(jax.random.key(0), model, (4,), jnp.float64)
        x = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
        y = jnp.array([0, 1, 2, 0, 1, 2])
        kw = dict(blocks=model, state=state, l2=0.01)
        J, manual = fnn.backprop(params, x, y, **kw)
        auto = jax.grad(fnn.loss)(params, x, y, **kw)
        assert jnp.allclose(J, fnn.loss(params, x, y, **kw))
        assert fnn.relative_difference(manual, auto) < 1e-12
        # A list of blocks is the Sequential of its entries.
        J_list, _ = fnn.backprop(params, x, y, blocks=list(model.children))
        J_seq, _ = fnn.backprop(params, x, y, blocks=model)
        assert J_list == J_seq


def test_gradient_reports_label_leaves_by_layer():
    model = nn.Sequential([nn.Dense(4, "tanh"), nn.Residual(nn.Dense(4, "tanh"))])
    params, state = nn.init(jax.random.key(0), model, (3,))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jnp.array([0, 1, 2, 3, 0])
    result = fnn.compare_gradients(params, x, y, blocks=model, state=state)
    assert result.passed
    assert "[1][0] Dense(4, tanh) ['W']" in result.per_leaf
    assert len(repr(result)) < 200 and "passed" in repr(result)
    assert "ok" in result.table()
    report = fnn.grad_check_report(params, x, y, blocks=model, state=state)
    assert set(report) == set(result.per_leaf)
    assert fnn.grad_check(params, x, y, blocks=model, state=state) < 1e-7


def test_relative_difference_takes_pytrees():
    a = {"W": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    b = {"W": jnp.ones((2, 2)), "b": jnp.full(2, 0.5)}
    diff = np.linalg.norm([0.5, 0.5])
    expected = float(diff / (np.linalg.norm(np.ones(4)) + np.sqrt(4 + 2 * 0.25)))
    assert math.isclose(fnn.relative_difference(a, b), expected, rel_tol=1e-6)
    assert fnn.relative_difference(a, a) == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, x, m: fnn.apply(p, x, blocks=m, activation="tanh"), "MLP form"),
        (lambda p, x, m: fnn.apply(p, x), "did you forget blocks="),
        (lambda p, x, m: nn.init(jax.random.key(0), m, 64), "in_shape must be a tuple"),
        (
            lambda p, x, m: fnn.loss(p, x, jnp.zeros(4, int), blocks=m, drop_rate=0.5),
            "drop_rate",
        ),
    ],
)
def test_model_mistakes_get_a_clear_error(call, match):
    model = nn.Sequential([nn.Dense(3, "relu"), nn.LayerNorm(), nn.Dense(2)])
    params, _ = nn.init(jax.random.key(0), model, (5,))
    with pytest.raises(ValueError, match=match):
        call(params, jnp.ones((4, 5)), model)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(
            [nn.Dense(16, "relu"), nn.Residual(nn.Dense(16, "tanh")), nn.Dense(10)]
        ),
        lambda: nn.Sequential(
            [nn.Concat([nn.Dense(8, "relu"), nn.Dense(4, "tanh")]), nn.Dense(10)]
        ),
    ],
    ids=["residual", "concat"],
)
def test_composed_networks_train_the_same_with_manual_and_automatic_gradients(make):
    X, y = _data()
    model = make()
    params, state = nn.init(jax.random.key(0), model, (64,))
    runs = [
        fnn.fit(
            params,
            fnn.optim.adam(1e-2),
            X,
            y,
            key=jax.random.key(1),
            epochs=2,
            batch_size=40,
            blocks=model,
            state=state,
            grad=grad,
            progress=False,
        )
        for grad in ("manual", "autodiff")
    ]
    chex.assert_trees_all_close(runs[0].params, runs[1].params, atol=1e-5)
    assert runs[0].history["train_loss"][-1] < runs[0].history["train_loss"][0] + 1


def test_fit_stops_a_wrong_user_backward_before_the_first_update():
    X, y = _data(60)
    model = nn.Sequential([nn.Dense(10), _temperature(sign=+1.0)])
    params, state = nn.init(jax.random.key(0), model, (64,))
    seen = []
    with pytest.raises(fnn.GradientMismatchError, match=r"\[1\] Temperature \['tau'\]"):
        fnn.fit(
            params,
            fnn.optim.sgd(0.1),
            X,
            y,
            key=jax.random.key(1),
            epochs=1,
            blocks=model,
            state=state,
            grad="manual",
            progress=False,
            callback=lambda *a: seen.append(a),
        )
    assert not seen  # nothing was trained
    common = dict(
        key=jax.random.key(1), epochs=1, blocks=model, state=state, progress=False
    )
    # Turned off on request; and never on with autodiff or for fnn's own blocks.
    fnn.fit(
        params, fnn.optim.sgd(0.1), X, y, grad="manual", check_gradients=False, **common
    )
    fnn.fit(params, fnn.optim.sgd(0.1), X, y, grad="autodiff", **common)
    good = nn.Sequential([nn.Dense(10), _temperature()])
    fnn.fit(
        nn.init(jax.random.key(0), good, (64,))[0],
        fnn.optim.sgd(0.1),
        X,
        y,
        grad="manual",
        **{**common, "blocks": good},
    )


def test_fit_compiles_once_per_configuration():
    X, y = _data(100)
    params = fnn.init_params(jax.random.key(0), [64, 8, 10])
    opt = fnn.optim.adam(1e-2)
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:

        def run():
            return fnn.fit(
                params,
                opt,
                X,
                y,
                key=jax.random.key(1),
                epochs=2,
                batch_size=25,
                dev=(X[:20], y[:20]),
                progress=False,
            )

        first = run()
        before = compiles.count("/jax/core/compile/backend_compile_duration")
        second = run()
        after = compiles.count("/jax/core/compile/backend_compile_duration")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert before > 0 and after == before
    chex.assert_trees_all_equal(first.params, second.params)


def _early_stopping_run(**kw):
    X, y = _data(150)
    params = fnn.init_params(jax.random.key(0), [64, 16, 10])
    return fnn.fit(
        params,
        fnn.optim.adam(0.05),
        X[:100],
        y[:100],
        key=jax.random.key(2),
        epochs=12,
        batch_size=20,
        dev=(X[100:], y[100:]),
        patience=2,
        progress=False,
        **kw,
    )


def test_resume_from_the_loop_state_continues_exactly_with_early_stopping():
    whole = _early_stopping_run()
    saved = []

    def stop_after_three(record, params, opt_state, loop):
        saved.append(loop)
        return record["epoch"] == 2

    first = _early_stopping_run(callback=stop_after_three)
    assert first.loop.epoch == 3 and saved[-1].epoch == 3
    resumed = _early_stopping_run(resume=saved[-1])
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.stopped_early == whole.stopped_early
    chex.assert_trees_all_equal(resumed.params, whole.params)
    for k in ("epoch", "train_loss", "dev_loss"):
        assert resumed.history[k] == whole.history[k]


def test_initial_epoch_without_optimizer_state_is_refused():
    X, y = _data(40)
    params = fnn.init_params(jax.random.key(0), [64, 10])
    with pytest.raises(ValueError, match="opt_state"):
        fnn.fit(
            params,
            fnn.optim.adam(1e-3),
            X,
            y,
            key=jax.random.key(0),
            epochs=3,
            initial_epoch=1,
            progress=False,
        )


def test_a_non_finite_update_is_named_and_not_applied():
    X, y = _data(100)
    params = fnn.init_params(jax.random.key(0), [64, 10])
    schedule = lambda count: jnp.where(count < 3, 0.1, jnp.nan)  # noqa: E731
    with (
        jax.debug_nans(False),
        pytest.raises(fnn.NonFiniteError, match="non-finite update") as info,
    ):
        fnn.fit(
            params,
            fnn.optim.sgd(schedule),
            X,
            y,
            key=jax.random.key(0),
            epochs=1,
            batch_size=10,
            progress=False,
        )
    err = info.value
    assert (err.epoch, err.step, err.cause) == (0, 3, "update")
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(err.params))
    # The three finite steps were applied, the fourth was not.
    assert not np.array_equal(err.params[0]["W"], params[0]["W"])


def test_a_batch_size_above_the_data_uses_one_batch_of_all_rows():
    X, y = _data(30)
    params = fnn.init_params(jax.random.key(0), [64, 10])
    runs = [
        fnn.fit(
            params,
            fnn.optim.sgd(0.1),
            X,
            y,
            key=jax.random.key(0),
            epochs=2,
            batch_size=b,
            progress=False,
        ).params
        for b in (30, 10**9)
    ]
    chex.assert_trees_all_equal(*runs)


@pytest.mark.parametrize(
    "module",
    [
        "fnn",
        "fnn.nn",
        "fnn.losses",
        "fnn.activations",
        "fnn.initializers",
        "fnn.data",
        "fnn.datasets",
        "fnn.checkpoint",
        "fnn.interop",
        "fnn.schedules",
        "fnn.stream",
        "fnn.parallel",
        "fnn.rbf",
        "fnn.graph",
        "fnn.optim",
    ],
)
def test_public_modules_export_only_their_own_names(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ lists missing {name}"
    assert not {"jax", "jnp", "np", "math"} & set(mod.__all__)


def test_fit_drives_sharpness_aware_minimization():
    """fit hands SAM (opaque mode) the batch's gradient function: three epochs of
    one full batch equal three SAM steps written by hand with jax.grad."""
    X, y = _data(40)
    params = fnn.init_params(jax.random.key(0), [64, 8, 10])
    opt = fnn.optim.sam(
        fnn.optim.sgd(0.1),
        fnn.optim.chain(fnn.optim.normalize(), fnn.optim.sgd(0.05)),
        opaque_mode=True,
    )
    result = fnn.fit(params, opt, X, y, key=jax.random.key(1), epochs=3,
                     batch_size=40, progress=False)
    grad = jax.jit(jax.grad(lambda p: fnn.loss(p, jnp.asarray(X), jnp.asarray(y))))
    p, state = params, opt.init(params)
    for _ in range(3):
        updates, state = opt.update(grad(p), state, p, grad_fn=lambda q, i: grad(q))
        p = fnn.optim.apply_updates(p, updates)
    chex.assert_trees_all_close(result.params, p, rtol=1e-5, atol=1e-6)
    plain = fnn.fit(params, fnn.optim.sgd(0.1), X, y, key=jax.random.key(1),
                    epochs=3, batch_size=40, progress=False)
    assert not np.allclose(plain.params[0]["W"], result.params[0]["W"])
