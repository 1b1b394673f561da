"""A network mixing every block: manual backprop against autodiff, and in fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import nn


# --- a network mixing every block ------------------------------------------------
def mixed():
    return [
        nn.Conv2D(4, 3, padding="SAME"),
        nn.BatchNorm(),
        nn.PReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(3, 2, stride=1, padding=1),
        nn.AvgPool2D(2),
        nn.LayerNorm(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Maxout(8, 2),
        nn.PReLU(shared=True),
        nn.Dense(5),
    ]


def test_mixed_network_manual_grad_equals_autodiff():
    """fnn.nn.loss_and_grad (the reverse walk over every block's backward) ==
    jax.grad of fnn.nn.forward + loss, float64, training mode with dropout."""
    blocks = mixed()
    with jax.enable_x64(True):
        key = jax.random.key(0)
        params, state = nn.init(key, blocks, (6, 6, 2), jnp.float64)
        x = jax.random.normal(jax.random.fold_in(key, 1), (7, 6, 6, 2), jnp.float64)
        y = jax.random.randint(jax.random.fold_in(key, 2), (7,), 0, 5)
        fkey = jax.random.fold_in(key, 3)
        (J, new_state), grads = jax.jit(
            lambda p: nn.loss_and_grad(
                blocks,
                params,
                x,
                y,
                "cross_entropy",
                state=state,
                key=fkey,
                train=True,
                l2=0.01,
            )
        )(params)

        def objective(p):
            out = nn.forward(blocks, p, x, state=state, key=fkey, train=True)[0]
            Y = jax.nn.one_hot(y, 5, dtype=out.dtype)
            return fnn.losses.get("cross_entropy").fn(out, Y) + 0.01 * sum(
                jnp.sum(q["W"] ** 2) for q in p if "W" in q
            )

        J_auto, grads_auto = jax.jit(jax.value_and_grad(objective))(params)
        assert float(J) == pytest.approx(float(J_auto), rel=1e-12)
        flat = jax.flatten_util.ravel_pytree
        g, g_auto = flat(grads)[0], flat(grads_auto)[0]
        assert float(jnp.linalg.norm(g - g_auto) / jnp.linalg.norm(g_auto)) <= 1e-10
        assert not jax.tree.all(
            jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new_state, state)
        )


def test_mixed_network_fit_manual_equals_autodiff():
    """fnn.fit with blocks: two epochs with grad="manual" give the parameters and
    running statistics of grad="autodiff" (float64, same key, same batches).

    SGD with momentum rather than Adam: the conv bias before batch norm has a
    gradient that is exactly 0 in exact arithmetic (batch norm removes the mean),
    and Adam's g/√v would blow the two computations' rounding noise (1e-17) up to
    full-size, different steps."""
    blocks = mixed()
    with jax.enable_x64(True):
        key = jax.random.key(0)
        params, state = nn.init(key, blocks, (6, 6, 2), jnp.float64)
        X = jax.random.normal(jax.random.fold_in(key, 1), (40, 6, 6, 2), jnp.float64)
        y = jax.random.randint(jax.random.fold_in(key, 2), (40,), 0, 5)
        results = {
            grad: fnn.fit(
                params,
                fnn.optim.sgd(0.1, momentum=0.9),
                X,
                y,
                key=jax.random.key(5),
                epochs=2,
                batch_size=10,
                blocks=blocks,
                state=state,
                grad=grad,
                loss="cross_entropy",
                progress=False,
            )
            for grad in ("manual", "autodiff")
        }
        manual, auto = results["manual"], results["autodiff"]
        assert manual.history["train_loss"][-1] < manual.history["train_loss"][0] + 1
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
            (manual.params, manual.state),
            (auto.params, auto.state),
        )
        moved = flat_diff(manual.params, params)
        assert moved > 1e-3


def flat_diff(a, b):
    flat = jax.flatten_util.ravel_pytree
    return float(jnp.linalg.norm(flat(a)[0] - flat(b)[0]))
