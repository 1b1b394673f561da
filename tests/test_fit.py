"""The training loop: scanned epochs, manual vs autodiff, early stopping, NaN,
resume from a checkpoint, dropout statistics, and the digits benchmark."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import optim


def _toy(key, n=40, n_in=5, k=3, dtype=jnp.float32):
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (n, n_in), dtype)
    y = jax.random.randint(ky, (n,), 0, k)
    return X, y


def _fit_toy(**kwargs):
    """fit a 5-4-3 MLP with SGD(0.1) on the 40-example toy problem, quietly."""
    X, y = _toy(jax.random.key(0))
    params = fnn.init_params(jax.random.key(1), [5, 4, 3])
    kwargs = {"progress": False, **kwargs}
    return fnn.fit(params, optim.sgd(0.1), X, y, key=jax.random.key(2), **kwargs)


def _assert_trees_equal(a, b, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if tol:
            np.testing.assert_allclose(x, z, **tol)
        else:
            np.testing.assert_array_equal(x, z)


def _steps_by_hand(params, opt, X, y, key, batch, epochs, max_steps=None, **kw):
    """The mini-batch steps fit takes, one by one in Python (the reference)."""
    n = X.shape[0]
    key_shuffle, _ = jax.random.split(key)
    p, s, taken = params, opt.init(params), 0
    grad = jax.jit(jax.grad(functools.partial(fnn.loss, **kw)))
    for epoch in range(epochs):
        idx, mask = fnn.data.epoch_batches(
            jax.random.fold_in(key_shuffle, epoch), n, batch
        )
        for b in range(idx.shape[0]):
            if taken == max_steps:
                return p, s
            g = grad(p, X[idx[b]], y[idx[b]], mask=mask[b] if n % batch else None)
            updates, s = opt.update(g, s, p)
            p, taken = optim.apply_updates(p, updates), taken + 1
    return p, s


@pytest.mark.parametrize("n", [40, 37])  # divisible by the batch size, and not
def test_scanned_epoch_equals_steps_one_by_one(n):
    """fit's lax.scan epoch == the same mini-batch steps run in a Python loop."""
    X, y = _toy(jax.random.key(0), n=n)
    params = fnn.init_params(jax.random.key(1), [5, 8, 3])
    opt, key = optim.sgd(0.1, momentum=0.9), jax.random.key(2)
    result = fnn.fit(
        params,
        opt,
        X,
        y,
        key=key,
        epochs=2,
        batch_size=8,
        activation="tanh",
        progress=False,
    )
    by_hand, _ = _steps_by_hand(params, opt, X, y, key, 8, 2, activation="tanh")
    _assert_trees_equal(result.params, by_hand, rtol=2e-6, atol=1e-7)


def test_manual_and_autodiff_training_agree_float64():
    """Training with fnn.backprop and with jax.grad ends at the same parameters."""
    with jax.enable_x64(True):
        X, y = _toy(jax.random.key(3), dtype=jnp.float64)
        params = fnn.init_params(jax.random.key(4), [5, 16, 16, 3], dtype=jnp.float64)
        kw = dict(
            key=jax.random.key(5),
            epochs=3,
            batch_size=16,
            l2=1e-3,
            drop_rate=0.25,
            progress=False,
        )
        manual = fnn.fit(params, optim.adam(1e-2), X, y, grad="manual", **kw)
        auto = fnn.fit(params, optim.adam(1e-2), X, y, grad="autodiff", **kw)
        _assert_trees_equal(manual.params, auto.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            manual.history["train_loss"], auto.history["train_loss"], rtol=1e-12
        )


def test_fit_does_not_touch_the_callers_params():
    X, y = _toy(jax.random.key(0))
    params = fnn.init_params(jax.random.key(1), [5, 4, 3])
    before = jax.tree.map(np.asarray, params)
    fnn.fit(
        params, optim.sgd(0.5), X, y, key=jax.random.key(2), epochs=2, progress=False
    )
    _assert_trees_equal(params, before)  # still alive (not donated) and unchanged


def test_early_stopping_restores_the_best_dev_parameters():
    """Patience counts epochs without a lower dev loss; the best params return."""
    X, y = _toy(jax.random.key(6), n=60)
    X_dev, y_dev = _toy(jax.random.key(7), n=30)  # unrelated labels: dev loss rises
    params = fnn.init_params(jax.random.key(8), [5, 32, 3])
    seen = {}

    def keep(record, p, _):
        seen[record["epoch"]] = jax.tree.map(np.array, p)

    result = fnn.fit(
        params,
        optim.adam(3e-2),
        X,
        y,
        key=jax.random.key(9),
        epochs=50,
        batch_size=20,
        dev=(X_dev, y_dev),
        patience=3,
        callback=keep,
        progress=False,
    )
    dev = result.history["dev_loss"]
    assert result.stopped_early and len(dev) < 50
    assert result.best_epoch == int(np.argmin(dev))
    assert len(dev) == result.best_epoch + 1 + 3  # stopped after 3 epochs of patience
    _assert_trees_equal(result.params, seen[result.best_epoch])


def test_callback_can_stop_training():
    result = _fit_toy(epochs=10, callback=lambda record, *_: record["epoch"] == 2)
    assert result.stopped_early and result.history["epoch"] == [0, 1, 2]


def test_nan_in_data_is_refused_before_training_naming_the_row():
    X, y = _toy(jax.random.key(10), n=32)
    params = fnn.init_params(jax.random.key(11), [5, 4, 3])
    X_bad = np.array(X)
    X_bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="row 5 of X in the training set holds NaN"):
        fnn.fit(params, optim.sgd(0.1), X_bad, y, key=jax.random.key(12), epochs=1,
                progress=False)


def test_overflow_stops_with_epoch_and_step_and_keeps_last_good_state():
    """A finite target so large that the squared error overflows: the step is not
    applied and the error carries the state after exactly the good steps."""
    X, labels = _toy(jax.random.key(10), n=32)
    y = jax.nn.one_hot(labels, 3)
    params = fnn.init_params(jax.random.key(11), [5, 4, 3])
    opt, key, batch = optim.sgd(0.1, momentum=0.5), jax.random.key(12), 8
    first_epoch = jax.random.fold_in(jax.random.split(key)[0], 0)
    idx, _ = fnn.data.epoch_batches(first_epoch, 32, batch)
    step = int(np.argwhere(np.asarray(idx) == 5)[0, 0])  # the batch holding row 5
    with jax.debug_nans(False):
        y_bad = y.at[5].set(3e38)
        with pytest.raises(fnn.NonFiniteError, match=f"epoch 0, step {step}") as info:
            fnn.fit(
                params,
                opt,
                X,
                y_bad,
                loss="mse",
                key=key,
                epochs=3,
                batch_size=batch,
                progress=False,
            )
    err = info.value
    assert (err.epoch, err.step) == (0, step)
    assert err.cause in ("loss", "gradient")
    # The carried state is the one after exactly `step` good steps.
    expected_params, expected_state = _steps_by_hand(
        params, opt, X, y, key, batch, 1, max_steps=step, loss="mse"
    )
    _assert_trees_equal(err.params, expected_params, rtol=1e-6, atol=1e-7)
    assert int(err.opt_state.count) == step


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    """Save after 2 epochs, load, continue to 4: bit-identical to 4 epochs straight."""
    X, y = _toy(jax.random.key(13), n=50)
    params = fnn.init_params(jax.random.key(14), [5, 8, 3])
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2))
    kw = dict(key=jax.random.key(15), batch_size=16, drop_rate=0.3, progress=False)
    straight = fnn.fit(params, opt, X, y, epochs=4, **kw)
    first = fnn.fit(params, opt, X, y, epochs=2, **kw)
    path = tmp_path / "run.ckpt"
    fnn.checkpoint.save(
        path,
        {"params": first.params, "opt_state": first.opt_state, "epoch": 2},
        metadata={"batch_size": 16},
    )
    template = {"params": params, "opt_state": opt.init(params), "epoch": 0}
    restored = fnn.checkpoint.load(path, like=template)
    resumed = fnn.fit(
        restored["params"],
        opt,
        X,
        y,
        epochs=4,
        opt_state=restored["opt_state"],
        initial_epoch=restored["epoch"],
        **kw,
    )
    _assert_trees_equal(resumed.params, straight.params)
    assert resumed.history["epoch"] == [2, 3]


def test_blocks_network_trains_and_keeps_state():
    X, y = _toy(jax.random.key(16))
    blocks = [fnn.nn.Dense(8, "tanh"), fnn.nn.Dropout(0.2), fnn.nn.Dense(3)]
    params, state = fnn.nn.init(jax.random.key(17), blocks, (5,))
    before = fnn.evaluate(params, X, y, blocks=blocks, state=state)["loss"]
    result = fnn.fit(
        params,
        optim.adam(1e-2),
        X,
        y,
        key=jax.random.key(18),
        epochs=20,
        blocks=blocks,
        state=state,
        grad="manual",
        progress=False,
    )
    after = fnn.evaluate(result.params, X, y, blocks=blocks, state=result.state)["loss"]
    assert after < 0.7 * before


def test_regression_has_no_accuracy():
    X, _ = _toy(jax.random.key(0))
    y = jnp.sum(X, axis=1, keepdims=True)
    params = fnn.init_params(jax.random.key(1), [5, 4, 1])
    result = fnn.fit(
        params,
        optim.sgd(0.01),
        X,
        y,
        key=jax.random.key(2),
        epochs=2,
        loss="mse",
        dev=(X, y),
        progress=False,
    )
    assert np.isnan(result.history["dev_accuracy"]).all()
    metrics = fnn.evaluate(result.params, X, y, loss="mse")
    assert np.isnan(metrics["accuracy"]) and metrics["loss"] > 0


def test_padded_batches_refused_with_batch_statistics():
    """BatchNorm's batch statistics would include a padded batch's filler rows."""
    X, y = _toy(jax.random.key(0), n=40)
    blocks = [
        fnn.nn.Dense(8),
        fnn.nn.BatchNorm(),
        fnn.nn.Activation("relu"),
        fnn.nn.Dense(3),
    ]
    params, state = fnn.nn.init(jax.random.key(1), blocks, (5,))
    kw = dict(
        key=jax.random.key(2), epochs=1, blocks=blocks, state=state, progress=False
    )
    with pytest.raises(ValueError, match="40 examples do not split into batches of 16"):
        fnn.fit(params, optim.sgd(0.1), X, y, batch_size=16, **kw)
    result = fnn.fit(
        params, optim.sgd(0.1), X, y, batch_size=16, drop_remainder=True, **kw
    )
    assert result.history["epoch"] == [0]


def test_progress_bar_and_history(capsys):
    result = _fit_toy(epochs=3, dev=_toy(jax.random.key(0)), progress=True)
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "ETA" in err and "dev acc" in err
    assert set(result.history) == set(fnn._fit.HISTORY_KEYS)
    assert all(len(v) == 3 for v in result.history.values())
    assert result.history["learning_rate"] == pytest.approx([0.1] * 3)
    assert 0 <= result.history["dev_accuracy"][-1] <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grad": "symbolic"}, "grad must be"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"epochs": 2.5}, "epochs must be a positive integer"),
        ({"patience": 2}, "needs a dev set"),
        ({"initial_epoch": 11}, "initial_epoch"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _fit_toy(**kwargs)
    X, y = _toy(jax.random.key(0))
    params = fnn.init_params(jax.random.key(1), [5, 4, 3])
    with pytest.raises(ValueError, match="X has 40 rows but y has 39"):
        fnn.fit(params, optim.sgd(0.1), X, y[:-1], key=jax.random.key(2))


# --- dropout statistics -----------------------------------------------------------
def test_dropout_drops_at_rate_and_preserves_expectation():
    """Fraction dropped ≈ drop_rate; E[A_hat] = A (inverted dropout, seed 001)."""
    block = fnn.nn.Dropout(0.3)
    A = jnp.ones((2000, 50))
    out, _, mask = block.forward({}, {}, A, jax.random.key(0), True)
    dropped = float(jnp.mean(out == 0))
    assert dropped == pytest.approx(0.3, abs=0.01)
    assert float(jnp.mean(out)) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(jnp.unique(out), [0.0, 1 / 0.7], rtol=1e-6)
    out_eval, _, _ = block.forward({}, {}, A, None, False)
    np.testing.assert_array_equal(out_eval, A)
    with pytest.raises(ValueError, match=r"drop_rate must be a number in \[0, 1\)"):
        fnn.nn.Dropout(1.0)


# --- the main job's benchmark: digits -----------------------------------------------
def test_digits_reaches_97_percent(digits_test_accuracy):
    assert digits_test_accuracy() >= 0.97
