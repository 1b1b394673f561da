"""Parameter EMA (fnn.optim.ema_params): the average equals its recurrence
m_t = beta m_{t-1} + (1 - beta) theta_t, debiased by 1 - beta^t."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn


@pytest.mark.parametrize("debias", [True, False])
def test_ema_equals_recurrence_by_hand(getkey, debias):
    decay, steps = 0.8, 5
    with jax.enable_x64(True):
        params = fnn.init_params(getkey(), [3, 4, 2], dtype=jnp.float64)
        X = jax.random.normal(getkey(), (16, 3), jnp.float64)
        y = jax.random.randint(getkey(), (16,), 0, 2)
        inner = fnn.optim.adam(1e-1)
        opt = fnn.optim.ema_params(inner, decay, debias=debias)

        @jax.jit
        def step(p, s):
            u, s = opt.update(jax.grad(fnn.loss)(p, X, y), s, p)
            return fnn.optim.apply_updates(p, u), s, u

        @jax.jit
        def inner_step(p, s):
            u, s = inner.update(jax.grad(fnn.loss)(p, X, y), s, p)
            return fnn.optim.apply_updates(p, u), s

        p, s = params, opt.init(params)
        q, r = params, inner.init(params)
        m = jax.tree.map(jnp.zeros_like, params)
        for t in range(1, steps + 1):
            p, s, _ = step(p, s)
            q, r = inner_step(q, r)
            chex.assert_trees_all_equal(p, q)  # the updates are inner's, unchanged
            m = jax.tree.map(lambda m, theta: decay * m + (1 - decay) * theta, m, p)
            want = m
            if debias:
                want = jax.tree.map(lambda a, t=t: a / (1 - decay**t), m)
            chex.assert_trees_all_close(
                fnn.optim.ema_params_of(s), want, rtol=1e-12, atol=1e-14
            )
        assert int(s.count) == steps


def test_before_first_update_and_dtypes(getkey):
    params = fnn.init_params(getkey(), [3, 2], dtype=jnp.bfloat16)
    s = fnn.optim.ema_params(fnn.optim.sgd(0.1), 0.9).init(params)
    chex.assert_trees_all_equal(fnn.optim.ema_params_of(s, params), params)
    # kept in float32 for 16-bit parameters, read back in their dtype
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(s.ema))
    assert all(
        a.dtype == jnp.bfloat16
        for a in jax.tree.leaves(fnn.optim.ema_params_of(s, params))
    )


def test_found_through_chain_and_multi_steps(getkey):
    params = fnn.init_params(getkey(), [3, 2])
    g = jax.tree.map(jnp.ones_like, params)
    opt = fnn.optim.multi_steps(
        fnn.optim.ema_params(fnn.optim.sgd(0.5), 0.5, debias=False), 2
    )
    s = opt.init(params)
    update = jax.jit(opt.update)
    _, s = update(g, s, params)  # first micro-batch: no update, no averaging
    assert int(s.inner_opt_state.count) == 0
    u, s = update(g, s, params)
    assert int(s.inner_opt_state.count) == 1
    new = fnn.optim.apply_updates(params, u)
    want = jax.tree.map(lambda a: 0.5 * a, new)
    chex.assert_trees_all_close(fnn.optim.ema_params_of(s), want, rtol=1e-6)


def test_bad_arguments():
    for bad in (1.0, -0.1, np.nan):
        with pytest.raises(ValueError, match="decay"):
            fnn.optim.ema_params(fnn.optim.sgd(0.1), bad)
    with pytest.raises(ValueError, match="EmaParamsState"):
        fnn.optim.ema_params_of(fnn.optim.sgd(0.1).init({"w": jnp.ones(2)}))
    opt = fnn.optim.ema_params(fnn.optim.sgd(0.1), 0.9)
    s = opt.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="params"):
        opt.update({"w": jnp.ones(2)}, s)
