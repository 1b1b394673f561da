"""Every bad input found by the bad-input campaign gets a clear error.

One row per case: the call, the exception type, and a pattern the message must
contain (the argument, the row, the layer or the key path it names, and what to
do where there is a fix). Each would have trained silently, or failed with an
internal message, before.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import nn, optim, schedules

X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
Y3 = np.arange(12) % 3
P = fnn.init_params(jax.random.key(0), [4, 5, 3])


def _fit(**kw):
    args = dict(key=jax.random.key(1), epochs=1, batch_size=4, progress=False)
    args.update(kw)
    X_, y_ = args.pop("X", X), args.pop("y", Y3)
    return fnn.fit(args.pop("params", P), args.pop("opt", optim.sgd(0.1)), X_, y_,
                   **args)


def _with(a, row, value):
    a = np.array(a)
    a[row] = value
    return a


CASES = {
    # 1. labels out of range, in fit, the dev set and evaluate; BCE targets
    "label >= k in fit": (lambda: _fit(y=_with(Y3, 7, 7)), ValueError,
                          r"row 7 of y in the training set.*label 7"),
    "label >= k in dev": (lambda: _fit(dev=(X, _with(Y3, 2, 5))), ValueError,
                          r"row 2 of y in the dev set"),
    "label < 0 in evaluate": (lambda: fnn.evaluate(P, X, _with(Y3, 0, -1)),
                              ValueError, r"row 0 of y in the evaluation set"),
    "bce target 2": (lambda: fnn.losses.targets(
        fnn.losses.get("bce"), jnp.zeros((3, 1)), jnp.array([0.0, 2.0, 1.0])),
        ValueError, r"\[0, 1\]"),
    "float labels for cross-entropy": (lambda: _fit(y=Y3.astype(np.float32)),
                                       ValueError, r"dtype float32.*integer"),
    # 2. learning rates and schedules
    "negative cosine peak": (lambda: schedules.cosine_decay_schedule(-1.0, 100),
                             ValueError, r"init_value"),
    "negative one_cycle peak": (lambda: schedules.one_cycle(100, -0.1), ValueError,
                                r"peak_value"),
    "nan sgd rate": (lambda: optim.sgd(float("nan")), ValueError, r"learning_rate"),
    "inf adam rate": (lambda: optim.adam(float("inf")), ValueError,
                      r"learning_rate"),
    "negative schedule in adam": (lambda: optim.adam(lambda count: jnp.asarray(-0.1)),
                                  ValueError, r"learning_rate"),
    # 5. non-finite inputs
    "NaN input row": (lambda: _fit(X=_with(X, 3, np.nan)), ValueError,
                      r"row 3 of X in the training set holds NaN"),
    "inf in the dev set": (lambda: _fit(dev=(_with(X, 4, np.inf), Y3)), ValueError,
                           r"row 4 of X in the dev set"),
    "NaN in fit_standardize": (lambda: fnn.data.fit_standardize(_with(X, 1, np.nan)),
                               ValueError, r"row 1"),
    # 6. resuming without the optimizer state
    "initial_epoch without opt_state": (lambda: _fit(epochs=3, initial_epoch=1),
                                        ValueError, r"opt_state"),
    # 10. smaller ones
    "empty dev set": (lambda: _fit(dev=(X[:0], Y3[:0])), ValueError,
                      r"dev set is empty"),
    "dev rows differ": (lambda: _fit(dev=(X, Y3[:5])), ValueError,
                        r"12 rows but y has 5 in the dev set"),
    "state of another optimizer": (
        lambda: optim.adam(0.1).update(P, optim.sgd(0.1).init(P), P),
        TypeError, r"adam.update got a state made by sgd"),
    "gradient leaf of the wrong shape": (
        lambda: optim.sgd(0.1).update(
            [{"W": jnp.zeros((4, 4)), "b": P[0]["b"]}, P[1]], optim.sgd(0.1).init(P),
            P),
        ValueError, r"\[0\]\['W'\]"),
    "int instead of a key": (lambda: fnn.init_params(0, [4, 3]), ValueError,
                             r"jax\.random\.key\(0\)"),
    "batch norm on one row": (
        lambda: nn.BatchNorm().forward(
            *nn.BatchNorm().init(jax.random.key(0), (3,), jnp.float32)[:2],
            jnp.ones((1, 3)), None, True),
        ValueError, r"2 rows|at least 2"),
    "block params to the MLP form": (
        lambda: fnn.apply(nn.init(jax.random.key(0), [nn.Dense(3), nn.LayerNorm()],
                                  (4,))[0], X),
        ValueError, r"did you forget blocks="),
    "in_shape as an int": (lambda: nn.init(jax.random.key(0), [nn.Dense(3)], 4),
                           ValueError, r"in_shape must be a tuple"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_clear_error(case):
    call, kind, pattern = CASES[case]
    with jax.debug_nans(False), pytest.raises(kind, match=pattern):
        call()


def test_np_int64_widths_are_accepted():
    params = fnn.init_params(jax.random.key(0), [np.int64(4), np.int64(2)])
    assert params[0]["W"].shape == (4, 2)


def test_a_huge_batch_size_uses_the_rows_there_are():
    result = _fit(batch_size=10**6)
    assert result.history["epoch"] == [0]
