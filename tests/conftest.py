"""Test configuration: strict dtype promotion and NaN checking for the whole suite.

``jax_debug_nans`` makes any NaN produced inside a jitted computation raise, so a
numerically unsafe forward or backward fails the test that produced it. Tests that
plant NaN on purpose turn it off locally with ``jax.debug_nans(False)``.
"""

import itertools

import jax
import pytest

jax.config.update("jax_debug_nans", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on every call (deterministic per test)."""
    counter = itertools.count()
    base = jax.random.key(0)

    def _getkey():
        return jax.random.fold_in(base, next(counter))

    return _getkey
