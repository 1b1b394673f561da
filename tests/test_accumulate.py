"""Gradient accumulation (fnn.optim.multi_steps): k micro-batch steps equal one
step on the k-times larger batch."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn


def _problem(getkey, m=32, sizes=(5, 7, 3)):
    params = fnn.init_params(getkey(), list(sizes))
    X = jax.random.normal(getkey(), (m, sizes[0]))
    y = jax.random.randint(getkey(), (m,), 0, sizes[-1])
    return params, X, y


def _grad(params, X, y):
    return jax.grad(fnn.loss)(params, X, y)


@pytest.mark.parametrize(
    "make", [lambda: fnn.optim.sgd(0.1, momentum=0.9), lambda: fnn.optim.adam(1e-2)]
)
def test_k_micro_batches_equal_one_large_batch(getkey, make):
    # G = (1/k) sum_i g_i equals the gradient of the k*b batch (equal batches).
    k, b = 4, 8
    params, X, y = _problem(getkey, m=3 * k * b)
    big, acc = make(), fnn.optim.multi_steps(make(), every_k_schedule=k)

    @jax.jit
    def big_step(p, s, X, y):
        u, s = big.update(_grad(p, X, y), s, p)
        return fnn.optim.apply_updates(p, u), s

    @jax.jit
    def micro_step(p, s, X, y):
        u, s = acc.update(_grad(p, X, y), s, p)
        return fnn.optim.apply_updates(p, u), s, u

    p_big, s_big = params, big.init(params)
    p_acc, s_acc = params, acc.init(params)
    for t in range(3):
        rows = slice(t * k * b, (t + 1) * k * b)
        p_big, s_big = big_step(p_big, s_big, X[rows], y[rows])
        for i in range(k):
            r = slice(t * k * b + i * b, t * k * b + (i + 1) * b)
            before = p_acc
            p_acc, s_acc, u = micro_step(p_acc, s_acc, X[r], y[r])
            if i < k - 1:  # no update before the k-th micro-batch
                chex.assert_trees_all_equal(p_acc, before)
                assert int(s_acc.mini_step) == i + 1
        assert int(s_acc.mini_step) == 0
        assert int(s_acc.gradient_step) == t + 1
        chex.assert_trees_all_close(p_acc, p_big, rtol=1e-5, atol=1e-6)


def test_inner_state_counts_updates_and_schedule(getkey):
    # every_k_schedule as a function of the update count: 1 then 2 then 3.
    params, X, y = _problem(getkey)
    opt = fnn.optim.multi_steps(
        fnn.optim.sgd(0.1), every_k_schedule=lambda step: jnp.minimum(step + 1, 3)
    )
    state = opt.init(params)
    g = _grad(params, X, y)
    update = jax.jit(opt.update)
    applied = []
    for _ in range(6):
        u, state = update(g, state, params)
        applied.append(bool(fnn.optim.global_norm(u) > 0))
    assert applied == [True, False, True, False, False, True]
    assert int(state.inner_opt_state.count) == 3


def test_sum_instead_of_mean(getkey):
    params, X, y = _problem(getkey)
    g = _grad(params, X, y)
    opt = fnn.optim.multi_steps(fnn.optim.sgd(1.0), 2, use_grad_mean=False)
    state = opt.init(params)
    update = jax.jit(opt.update)
    _, state = update(g, state, params)
    u, state = update(g, state, params)
    chex.assert_trees_all_close(u, jax.tree.map(lambda a: -2 * a, g), rtol=1e-6)


def test_bad_every_k_is_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every_k_schedule"):
            fnn.optim.multi_steps(fnn.optim.sgd(0.1), bad)
    assert fnn.optim.MultiSteps is fnn.optim.multi_steps


def test_matches_optax_multisteps(getkey):
    optax = pytest.importorskip("optax")
    k = 3
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        params, X, y = _problem(getkey)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        X = X.astype(jnp.float64)
        ours = fnn.optim.multi_steps(fnn.optim.adam(1e-2), every_k_schedule=k)
        theirs = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=k)
        s1, s2 = ours.init(params), theirs.init(params)

        def step(opt, apply, p, s, X, y):
            u, s = opt.update(_grad(p, X, y), s, p)
            return apply(p, u), s

        step1 = jax.jit(lambda *a: step(ours, fnn.optim.apply_updates, *a))
        step2 = jax.jit(lambda *a: step(theirs, optax.apply_updates, *a))
        p1 = p2 = params
        for t in range(2 * k):
            r = slice(4 * t, 4 * t + 4)
            p1, s1 = step1(p1, s1, X[r], y[r])
            p2, s2 = step2(p2, s2, X[r], y[r])
            chex.assert_trees_all_close(p1, p2, rtol=1e-7, atol=1e-9)
        assert int(s1.gradient_step) == int(s2.gradient_step) == 2


def test_one_extra_gradient_tree(getkey):
    # Memory: the accumulator is one tree like the parameters, nothing more.
    params, _, _ = _problem(getkey)
    inner = fnn.optim.adam(1e-3)
    state = fnn.optim.multi_steps(inner, 4).init(params)
    size = lambda t: sum(np.size(a) for a in jax.tree.leaves(t))  # noqa: E731
    extra = size(state) - size(inner.init(params))
    assert extra == size(params) + 2  # the tree, plus two int32 counters
