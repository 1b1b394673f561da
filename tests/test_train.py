"""fnn.train: the whole run as one pure function, equal to fit epoch for epoch;
early stopping and the non-finite guard inside the compiled loop."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import optim


def _data(n=120, n_dev=60):
    d = fnn.datasets.load_digits()
    X = np.asarray(d.X, np.float32) / 16.0
    return (X[:n], d.y[:n]), (X[n : n + n_dev], d.y[n : n + n_dev])


KW = dict(epochs=8, batch_size=32, patience=2)


def _compare_with_fit(result, fitted, rtol=1e-5, atol=1e-6):
    run = len(fitted.history["epoch"])
    assert int(result.epochs_run) == run
    best = -1 if fitted.best_epoch is None else fitted.best_epoch
    assert int(result.best_epoch) == best
    for name in ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy"):
        np.testing.assert_allclose(
            result.history[name][:run], fitted.history[name], rtol=rtol, atol=atol
        )
    chex.assert_trees_all_close(result.params, fitted.params, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(
        result.last_params, fitted.loop.params, rtol=rtol, atol=atol
    )


def test_train_equals_fit_with_early_stopping():
    """The same epochs as fit: parameters, history, best epoch, stopping epoch."""
    (X, y), dev = _data()
    params = fnn.init_params(jax.random.key(0), [64, 16, 10], "he_normal")
    opt, key = optim.sgd(0.8, 0.9), jax.random.key(1)
    fitted = fnn.fit(params, opt, X, y, key=key, dev=dev, progress=False, **KW)
    assert fitted.stopped_early  # the case under test: early stopping happened
    run = jax.jit(lambda p, k: fnn.train(p, opt, X, y, key=k, dev=dev, **KW))
    result = run(params, key)
    _compare_with_fit(result, fitted, rtol=0, atol=0)
    # Epochs after stopping did not run: zeros, not a repetition.
    after = np.asarray(result.history["dev_loss"])[len(fitted.history["epoch"]) :]
    assert after.size and np.all(after == 0)


def test_train_without_dev_is_the_plain_run():
    (X, y), _ = _data()
    params = fnn.init_params(jax.random.key(2), [64, 16, 10])
    opt, key = optim.adam(1e-2), jax.random.key(3)
    fitted = fnn.fit(params, opt, X, y, key=key, epochs=3, progress=False)
    result = fnn.train(params, opt, X, y, key=key, epochs=3)
    assert int(result.best_epoch) == -1 and int(result.epochs_run) == 3
    assert "dev_loss" not in result.history
    chex.assert_trees_all_close(result.params, fitted.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        result.history["learning_rate"], fitted.history["learning_rate"]
    )


@pytest.mark.slow  # test_sweep covers the vmapped runs against fit
def test_train_vmaps_over_learning_rates_and_keys():
    """vmap of train over (learning rate, key) equals the separate runs."""
    (X, y), dev = _data()
    params = fnn.init_params(jax.random.key(4), [64, 16, 10])
    lrs = jnp.asarray([0.05, 0.5])
    keys = jax.random.split(jax.random.key(5), 2)

    def run(lr, key):
        return fnn.train(params, optim.sgd(lr), X, y, key=key, dev=dev, **KW)

    together = jax.jit(jax.vmap(run))(lrs, keys)
    for i in range(2):
        alone = jax.jit(run)(lrs[i], keys[i])
        mine = jax.tree.map(lambda a, i=i: a[i], together)
        chex.assert_trees_all_close(mine.params, alone.params, rtol=1e-5, atol=1e-6)
        assert int(mine.best_epoch) == int(alone.best_epoch)
        assert int(mine.epochs_run) == int(alone.epochs_run)


def test_nonfinite_epoch_stops_the_member_with_its_last_finite_parameters():
    """A learning rate that overflows: fit raises at that epoch; train stops the
    run there and keeps the parameters from before it (all finite)."""
    (X, y), _ = _data()
    params = fnn.init_params(jax.random.key(6), [64, 16, 10])
    opt, key = optim.sgd(1e30), jax.random.key(7)
    with jax.debug_nans(False):
        with pytest.raises(fnn.NonFiniteError) as err:
            fnn.fit(params, opt, X, y, key=key, epochs=4, progress=False)
        result = fnn.train(params, opt, X, y, key=key, epochs=4)
    assert int(result.nonfinite_epoch) == err.value.epoch
    assert int(result.epochs_run) == err.value.epoch
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(result.params))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patience=2), "needs a dev set"),
        (dict(grad="numeric"), "grad must be"),
        (dict(epochs=0), "epochs must be a positive integer"),
    ],
)
def test_bad_static_arguments(kwargs, match):
    (X, y), _ = _data(n=8)
    params = fnn.init_params(jax.random.key(0), [64, 10])
    with pytest.raises(ValueError, match=match):
        fnn.train(params, optim.sgd(0.1), X, y, key=jax.random.key(0), **kwargs)
