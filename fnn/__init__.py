"""fnn: functional neural networks in JAX.

Pure functions on parameter pytrees, hand-written optimizers, and manual
backpropagation beside autodiff, every block checked against ``jax.grad``.
"""

__version__ = "0.1.0"
