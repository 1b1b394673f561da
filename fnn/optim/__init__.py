"""Hand-written optimizers as ``(init, update)`` state transformers."""

from ._base import Optimizer as Optimizer
from ._base import apply_updates as apply_updates
