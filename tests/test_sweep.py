"""fnn.sweep: a population trained in one compiled call equals the separate fit
runs (MLP and block models, manual and autodiff gradients, early stopping);
one compilation per configuration; the data shared, not copied per member."""

import importlib.util
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import optim

ROOT = Path(__file__).resolve().parents[1]
LRS = (0.1, 0.6)
SEEDS = (0, 1)
MEMBERS = [(lr, s) for lr in LRS for s in SEEDS]  # 2 learning rates x 2 seeds


def _data(n=128, n_dev=64):
    d = fnn.datasets.load_digits()
    X = np.asarray(d.X, np.float32) / 16.0
    return (X[:n], d.y[:n]), (X[n : n + n_dev], d.y[n : n + n_dev])


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _momentum(lr):
    return optim.sgd(lr, 0.9)


# One optimizer value per rate: the separate fit runs of a rate share their
# compiled epoch (fit's cache is keyed by the optimizer).
OPTIMIZERS = {lr: _momentum(lr) for lr in LRS}


def _check_members(result, fitted, rtol=2e-5, atol=2e-6):
    """Member i of the sweep against the i-th separate fit run."""
    assert result.history["dev_loss"].shape == (len(fitted), 10)
    for i, f in enumerate(fitted):
        run = len(f.history["epoch"])
        assert result.epochs_run[i] == run
        assert result.best_epoch[i] == f.best_epoch
        for name in ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy"):
            np.testing.assert_allclose(
                result.history[name][i, :run], f.history[name], rtol=rtol, atol=atol
            )
            assert np.all(np.isnan(result.history[name][i, run:]))
        mine = jax.tree.map(lambda a, i=i: a[i], result.params)
        chex.assert_trees_all_close(mine, f.params, rtol=rtol, atol=atol)
        if f.state is not None:
            state = jax.tree.map(lambda a, i=i: a[i], result.state)
            chex.assert_trees_all_close(state, f.state, rtol=rtol, atol=atol)
    # The case under test: some member stopped early, and not all at once.
    assert len(set(result.epochs_run.tolist())) > 1


def test_mlp_population_equals_separate_fits_manual_gradients():
    (X, y), dev = _data()
    kw = dict(epochs=10, batch_size=32, dev=dev, patience=2, grad="manual")
    inits = [
        fnn.init_params(jax.random.key(s), [64, 16, 10], "he_normal") for s in SEEDS
    ]
    params = _stack([inits[SEEDS.index(s)] for _, s in MEMBERS])
    keys = jnp.stack([jax.random.key(10 + s) for _, s in MEMBERS])
    lrs = jnp.asarray([lr for lr, _ in MEMBERS], jnp.float32)
    result = fnn.sweep(params, _momentum, X, y, key=keys, hyperparams={"lr": lrs}, **kw)
    fitted = [
        fnn.fit(
            inits[SEEDS.index(s)],
            OPTIMIZERS[lr],
            X,
            y,
            key=jax.random.key(10 + s),
            progress=False,
            **kw,
        )
        for lr, s in MEMBERS
    ]
    _check_members(result, fitted)
    np.testing.assert_array_equal(result.hyperparams["lr"], lrs)


def test_block_population_equals_separate_fits_with_state_and_dropout():
    """Dense, BatchNorm (stacked running statistics) and dropout (per-member keys),
    autodiff gradients."""
    (X, y), dev = _data()
    blocks = [
        fnn.nn.Dense(16),
        fnn.nn.BatchNorm(),
        fnn.nn.Activation("relu"),
        fnn.nn.Dropout(0.2),
        fnn.nn.Dense(10),
    ]
    kw = dict(epochs=10, batch_size=32, dev=dev, patience=2, blocks=blocks)
    inits = [fnn.nn.init(jax.random.key(s), blocks, (64,)) for s in SEEDS]
    params = _stack([inits[SEEDS.index(s)][0] for _, s in MEMBERS])
    state = _stack([inits[SEEDS.index(s)][1] for _, s in MEMBERS])
    keys = jnp.stack([jax.random.key(20 + s) for _, s in MEMBERS])
    lrs = jnp.asarray([lr for lr, _ in MEMBERS], jnp.float32)
    result = fnn.sweep(
        params, _momentum, X, y, key=keys, hyperparams={"lr": lrs}, state=state, **kw
    )
    fitted = [
        fnn.fit(
            inits[SEEDS.index(s)][0],
            OPTIMIZERS[lr],
            X,
            y,
            state=inits[SEEDS.index(s)][1],
            key=jax.random.key(20 + s),
            progress=False,
            **kw,
        )
        for lr, s in MEMBERS
    ]
    _check_members(result, fitted)


def test_second_sweep_with_other_values_reuses_the_compilation():
    """New learning rates, seeds and initial parameters: the same program."""
    (X, y), _ = _data(n=64)
    opt = lambda lr: optim.sgd(lr)  # noqa: E731
    init = jax.vmap(lambda k: fnn.init_params(k, [64, 8, 10]))

    def go(seed, lrs):
        keys = jax.random.split(jax.random.key(seed), 3)
        return fnn.sweep(
            init(keys),
            opt,
            X,
            y,
            key=keys,
            epochs=2,
            hyperparams={"lr": jnp.asarray(lrs, jnp.float32)},
        )

    first = go(0, [0.1, 0.2, 0.3])
    size = fnn._sweep._population_jit._cache_size()
    second = go(1, [0.3, 0.4, 0.5])
    assert fnn._sweep._population_jit._cache_size() == size
    assert not np.allclose(first.history["train_loss"], second.history["train_loss"])


def test_data_is_shared_not_copied_per_member():
    """No value of the compiled population has a (P, n, features) shape."""
    (X, y), _ = _data(n=64)
    P = 3
    params = jax.vmap(lambda k: fnn.init_params(k, [64, 8, 10]))(
        jax.random.split(jax.random.key(0), P)
    )
    run = fnn._train._run_config(
        epochs=1,
        batch_size=16,
        drop_remainder=False,
        dev=None,
        patience=None,
        activation="relu",
        loss="cross_entropy",
        output=None,
        l1=0.0,
        l2=0.0,
        drop_rate=0.0,
        blocks=None,
        grad="autodiff",
        compute_dtype=None,
        where="t",
    )
    cfg = fnn._sweep._SweepConfig(run, optim.sgd(0.1), False, 0)
    keys = jax.random.split(jax.random.key(1), P)
    jaxpr = jax.make_jaxpr(
        lambda p, k, X, y: fnn._sweep._population(cfg, p, None, {}, k, X, y, None)
    )(params, keys, jnp.asarray(X), jnp.asarray(y))
    shapes = set()

    def walk(jx):
        for eqn in jx.eqns:
            shapes.update(tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else [value]:
                    if hasattr(sub, "jaxpr"):  # a ClosedJaxpr
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jaxpr.jaxpr)
    assert (P, 16, 10) in shapes  # the walk sees the members' batch outputs
    assert not any(s[:1] == (P,) and s[-2:] == X.shape for s in shapes)


def test_bad_inputs_are_named():
    (X, y), _ = _data(n=16)
    params = jax.vmap(lambda k: fnn.init_params(k, [64, 10]))(
        jax.random.split(jax.random.key(0), 2)
    )
    keys = jax.random.split(jax.random.key(1), 2)
    opt = lambda lr: optim.sgd(lr)  # noqa: E731
    bad = X.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        fnn.sweep(params, opt, bad, y, key=keys, hyperparams={"lr": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"hyperparams\['lr'\] must have shape \(2,\)"):
        fnn.sweep(params, opt, X, y, key=keys, hyperparams={"lr": jnp.ones(3)})
    with pytest.raises(ValueError, match="2 keys"):
        fnn.sweep(
            params,
            opt,
            X,
            y,
            key=jax.random.split(keys[0], 3),
            hyperparams={"lr": jnp.ones(2)},
        )
    with pytest.raises(ValueError, match="need an optimizer factory"):
        fnn.sweep(params, optim.sgd(0.1), X, y, key=keys, hyperparams={"lr": [1, 2]})
    with pytest.raises(ValueError, match="leading member axis"):
        fnn.sweep(
            jax.tree.map(lambda a: a[0, 0], params), optim.sgd(0.1), X, y, key=keys
        )


def test_sweep_benchmark_quick_mode(tmp_path):
    """The benchmark's quick mode: a well-formed report, the same runs both ways,
    and a second sweep call that compiles nothing (counts, not times)."""
    spec = importlib.util.spec_from_file_location(
        "sweep_benchmark", ROOT / "benchmarks" / "sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--out", str(tmp_path)])
    assert result["members"] == 2
    assert result["compiles"]["sweep_first"] > 0
    assert result["compiles"]["sweep_second"] == 0
    assert result["max_dev_loss_difference"] < 1e-5
    assert json.loads((tmp_path / "sweep.json").read_text())["members"] == 2
    assert "| second call |" in (tmp_path / "sweep.md").read_text()
    assert result["xor"]["same_failures"]  # the XOR table: the same runs both ways
    assert result["xor"]["max_output_difference"] < 1e-5


@pytest.mark.slow
def test_eight_seeds_by_three_rates_equal_24_separate_fits_autodiff():
    """A larger population: 8 seeds x 3 learning rates, automatic
    gradients, early stopping on; every member equals its own fit run."""
    (X, y), dev = _data()
    rates, seeds = (0.05, 0.1, 0.6), tuple(range(8))
    members = [(lr, s) for lr in rates for s in seeds]
    kw = dict(epochs=10, batch_size=32, dev=dev, patience=2, grad="autodiff")
    inits = {
        s: fnn.init_params(jax.random.key(s), [64, 16, 10], "he_normal") for s in seeds
    }
    params = _stack([inits[s] for _, s in members])
    keys = jnp.stack([jax.random.key(10 + s) for _, s in members])
    lrs = jnp.asarray([lr for lr, _ in members], jnp.float32)
    result = fnn.sweep(params, _momentum, X, y, key=keys, hyperparams={"lr": lrs}, **kw)
    fitted = [
        fnn.fit(
            inits[s], _momentum(lr), X, y, key=jax.random.key(10 + s),
            progress=False, **kw,
        )
        for lr, s in members
    ]
    # 24 batched runs: float32 rounding drifts a little more over the epochs
    _check_members(result, fitted, rtol=1e-4, atol=1e-5)
