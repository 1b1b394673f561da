"""fnn: functional neural networks in JAX.

Pure functions on parameter pytrees, hand-written optimizers, and manual
backpropagation beside autodiff, every block checked against ``jax.grad``::

    import jax, fnn
    params = fnn.init_params(jax.random.key(0), [64, 32, 10], "he_normal")
    J, grads = fnn.backprop(params, x, y, activation="relu", loss="cross_entropy")

A model is a value (a block): ``model = fnn.mlp([64, 32, 10], activation="tanh")``
or any composition of :mod:`fnn.nn` blocks; ``apply``, ``loss``, ``backprop``,
``evaluate``, ``fit`` and the gradient checks take it as ``blocks=`` (with its
``state=``), and :func:`fnn.nn.check_block` checks any block's backward.
"""

from . import activations as activations
from . import checkpoint as checkpoint
from . import data as data
from . import datasets as datasets
from . import graph as graph
from . import initializers as initializers
from . import interop as interop
from . import losses as losses
from . import nn as nn
from . import optim as optim
from . import parallel as parallel
from . import rbf as rbf
from . import schedules as schedules
from . import stream as stream
from ._fit import FitResult as FitResult
from ._fit import GradientMismatchError as GradientMismatchError
from ._fit import LoopState as LoopState
from ._fit import NonFiniteError as NonFiniteError
from ._fit import evaluate as evaluate
from ._fit import fit as fit
from ._gradcheck import GradientComparison as GradientComparison
from ._gradcheck import compare_gradients as compare_gradients
from ._gradcheck import grad_check as grad_check
from ._gradcheck import grad_check_report as grad_check_report
from ._gradcheck import numerical_grad as numerical_grad
from ._gradcheck import relative_difference as relative_difference
from ._mlp import apply as apply
from ._mlp import backprop as backprop
from ._mlp import dropout_rates as dropout_rates
from ._mlp import init_params as init_params
from ._mlp import loss as loss
from ._mlp import mlp as mlp
from ._per_example import per_example_grads as per_example_grads
from ._sweep import SweepResult as SweepResult
from ._sweep import sweep as sweep
from ._train import TrainResult as TrainResult
from ._train import train as train

__version__ = "0.1.0"

__all__ = [
    "FitResult",
    "GradientComparison",
    "GradientMismatchError",
    "LoopState",
    "NonFiniteError",
    "SweepResult",
    "TrainResult",
    "activations",
    "apply",
    "backprop",
    "checkpoint",
    "compare_gradients",
    "data",
    "datasets",
    "dropout_rates",
    "evaluate",
    "fit",
    "grad_check",
    "grad_check_report",
    "graph",
    "init_params",
    "initializers",
    "interop",
    "loss",
    "losses",
    "mlp",
    "nn",
    "numerical_grad",
    "optim",
    "parallel",
    "per_example_grads",
    "rbf",
    "relative_difference",
    "schedules",
    "stream",
    "sweep",
    "train",
]
