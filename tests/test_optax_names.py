"""Code moves between optax and fnn.optim: shared names mean the same thing.

A typical optax training script runs unchanged with ``import fnn.optim as
optax`` and gives optax's numbers (float64); the keywords renamed to optax's
still accept their old names for one release, with a DeprecationWarning.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn.optim
from fnn import schedules

optax = pytest.importorskip("optax")


def _typical_script(optax, steps=60):
    """An optax-style script: chain, clipping, AdamW with a mask and a warm-up
    cosine schedule, then SGD on an exponential staircase, apply_updates."""
    key = jax.random.key(0)
    X = jax.random.normal(key, (32, 4), jnp.float64)
    y = X @ jnp.array([1.0, -2.0, 0.5, 3.0]) + 0.1
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    loss = lambda p: jnp.mean((X @ p["w"] + p["b"] - y) ** 2)  # noqa: E731
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.1, warmup_steps=10, decay_steps=50,
        end_value=1e-3,
    )
    first = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(learning_rate=schedule, weight_decay=1e-2,
                    mask={"w": True, "b": False}),
    )
    decay = optax.exponential_decay(
        init_value=0.05, transition_steps=7, decay_rate=0.5, transition_begin=5,
        staircase=True, end_value=0.01,
    )
    second = optax.chain(optax.clip(0.5), optax.sgd(learning_rate=decay))
    losses = []
    for opt in (first, second):
        state = opt.init(params)

        @jax.jit
        def step(params, state, opt=opt):
            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value

        for _ in range(steps):
            params, state, value = step(params, state)
            losses.append(value)
    return params, np.asarray(losses)


def test_a_typical_optax_script_runs_unchanged_with_fnn_optim():
    """Same numbers up to the learning rate's float32: fnn's schedules return
    float32 (the rate the optimizer state keeps), optax's follow x64."""
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        theirs, their_losses = _typical_script(optax)
        ours, our_losses = _typical_script(fnn.optim)
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-6)
    for k in ("w", "b"):
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(transition_steps=10, decay_rate=0.9),
        dict(transition_steps=4, decay_rate=0.5, staircase=True),
        dict(transition_steps=3, decay_rate=0.7, transition_begin=6, end_value=0.2),
        dict(transition_steps=5, decay_rate=1.5, end_value=2.0),
    ],
)
def test_exponential_decay_has_optax_meaning(kwargs):
    counts = jnp.arange(40)
    ours = jax.vmap(schedules.exponential_decay(1.0, **kwargs))(counts)
    theirs = jax.vmap(optax.exponential_decay(1.0, **kwargs))(counts)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def _warns(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    return result


def _trajectory(opt, steps=5):
    params = [{"W": jnp.ones((2, 2)), "b": jnp.ones(2)}]
    state = opt.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: p * (i + 1) - 0.3, params)
        updates, state = opt.update(grads, state, params)
        params = fnn.optim.apply_updates(params, updates)
    return params


@pytest.mark.parametrize(
    "old, new",
    [
        (lambda: fnn.optim.adamw(0.1, weight_decay_mask=fnn.optim.weights_only_mask),
         lambda: fnn.optim.adamw(0.1, mask=fnn.optim.weights_only_mask)),
        (lambda: fnn.optim.masked(optimizer=fnn.optim.adam(0.1),
                                  mask=fnn.optim.weights_only_mask),
         lambda: fnn.optim.masked(inner=fnn.optim.adam(0.1),
                                  mask=fnn.optim.weights_only_mask)),
        (lambda: fnn.optim.partition(
            {"w": fnn.optim.sgd(0.1), "b": fnn.optim.adam(0.1)},
            labels=[{"W": "w", "b": "b"}]),
         lambda: fnn.optim.partition(
            {"w": fnn.optim.sgd(0.1), "b": fnn.optim.adam(0.1)},
            param_labels=[{"W": "w", "b": "b"}])),
        (lambda: fnn.optim.rmsprop(0.1, 0.9, 1e-8, True),
         lambda: fnn.optim.rmsprop(0.1, 0.9, 1e-8, centered=True)),
    ],
    ids=["adamw-mask", "masked-inner", "partition-param_labels", "rmsprop-centered"],
)
def test_renamed_keywords_still_work_with_a_warning(old, new):
    for a, b in zip(
        jax.tree.leaves(_trajectory(_warns(old))),
        jax.tree.leaves(_trajectory(new())),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_the_old_exponential_decay_form_warns_and_keeps_its_meaning():
    old = _warns(lambda: schedules.exponential_decay(0.1, 0.95, steps_per_epoch=3))
    new = schedules.epoch_exponential_decay(0.1, 0.95, 3)
    counts = jnp.arange(12)
    np.testing.assert_array_equal(jax.vmap(old)(counts), jax.vmap(new)(counts))
    with pytest.raises(ValueError, match="epoch_exponential_decay"):
        schedules.exponential_decay(0.1)


def test_rmsprop_initial_scale_is_optax_fourth_argument():
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        ours = fnn.optim.rmsprop(0.01, 0.9, 1e-8, 0.5, eps_in_sqrt=True)
        theirs = optax.rmsprop(0.01, 0.9, 1e-8, 0.5)
        params = {"w": jnp.linspace(-1.0, 1.0, 5)}
        s1, s2, p1, p2 = ours.init(params), theirs.init(params), params, params
        for i in range(20):
            g = jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)), p1)
            u1, s1 = ours.update(g, s1, p1)
            u2, s2 = theirs.update(g, s2, p2)
            p1, p2 = fnn.optim.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-12)
