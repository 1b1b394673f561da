"""Hand-written optimizers as ``(init, update)`` state transformers."""

import inspect as _inspect

# Schedules are reachable from here too, as in optax.
from ..schedules import *  # noqa: E402, F403
from ._accumulate import MultiSteps as MultiSteps
from ._accumulate import MultiStepsState as MultiStepsState
from ._accumulate import multi_steps as multi_steps
from ._base import Optimizer as Optimizer
from ._base import apply_updates as apply_updates
from ._base import reused as _reused
from ._ema import EmaParamsState as EmaParamsState
from ._ema import ema_params as ema_params
from ._ema import ema_params_of as ema_params_of
from ._first_order import AdadeltaState as AdadeltaState
from ._first_order import AdagradState as AdagradState
from ._first_order import AdamState as AdamState
from ._first_order import EmaMomentumState as EmaMomentumState
from ._first_order import RmspropState as RmspropState
from ._first_order import SgdState as SgdState
from ._first_order import adadelta as adadelta
from ._first_order import adagrad as adagrad
from ._first_order import adam as adam
from ._first_order import adamax as adamax
from ._first_order import adamw as adamw
from ._first_order import amsgrad as amsgrad
from ._first_order import ema_momentum as ema_momentum
from ._first_order import nadam as nadam
from ._first_order import rmsprop as rmsprop
from ._first_order import sgd as sgd
from ._modern import AdafactorState as AdafactorState
from ._modern import LarsState as LarsState
from ._modern import LionState as LionState
from ._modern import LookaheadParams as LookaheadParams
from ._modern import LookaheadState as LookaheadState
from ._modern import MomentsState as MomentsState
from ._modern import MuonState as MuonState
from ._modern import SAMState as SAMState
from ._modern import ScheduleFreeState as ScheduleFreeState
from ._modern import adafactor as adafactor
from ._modern import lamb as lamb
from ._modern import lars as lars
from ._modern import lion as lion
from ._modern import lookahead as lookahead
from ._modern import muon as muon
from ._modern import nadamw as nadamw
from ._modern import normalize as normalize
from ._modern import orthogonalize_via_newton_schulz as orthogonalize_via_newton_schulz
from ._modern import radam as radam
from ._modern import sam as sam
from ._modern import schedule_free_adamw as schedule_free_adamw
from ._modern import schedule_free_eval_params as schedule_free_eval_params
from ._modern import schedule_free_sgd as schedule_free_sgd
from ._plateau import ReduceOnPlateauState as ReduceOnPlateauState
from ._plateau import reduce_on_plateau as reduce_on_plateau
from ._privacy import (
    DifferentiallyPrivateAggregateState as DifferentiallyPrivateAggregateState,
)
from ._privacy import (
    differentially_private_aggregate as differentially_private_aggregate,
)
from ._privacy import dpsgd as dpsgd
from ._privacy import per_example_global_norms as per_example_global_norms
from ._second_order import BFGSState as BFGSState
from ._second_order import ConjugateGradientState as ConjugateGradientState
from ._second_order import LBFGSState as LBFGSState
from ._second_order import LineSearchResult as LineSearchResult
from ._second_order import MinimizeResult as MinimizeResult
from ._second_order import NewtonState as NewtonState
from ._second_order import bfgs as bfgs
from ._second_order import conjugate_gradient as conjugate_gradient
from ._second_order import lbfgs as lbfgs
from ._second_order import minimize as minimize
from ._second_order import newton as newton
from ._second_order import strong_wolfe_line_search as strong_wolfe_line_search
from ._transforms import EmptyState as EmptyState
from ._transforms import MaskedState as MaskedState
from ._transforms import PartitionState as PartitionState
from ._transforms import ScaleByLearningRateState as ScaleByLearningRateState
from ._transforms import SkipIfNonfiniteState as SkipIfNonfiniteState
from ._transforms import add_decayed_weights as add_decayed_weights
from ._transforms import chain as chain
from ._transforms import clip as clip
from ._transforms import clip_by_global_norm as clip_by_global_norm
from ._transforms import clip_by_value as clip_by_value
from ._transforms import current_learning_rate as current_learning_rate
from ._transforms import freeze as freeze
from ._transforms import global_norm as global_norm
from ._transforms import masked as masked
from ._transforms import partition as partition
from ._transforms import scale_by_learning_rate as scale_by_learning_rate
from ._transforms import skip_if_nonfinite as skip_if_nonfinite
from ._transforms import weights_only_mask as weights_only_mask

# Every constructor returns the same optimizer for the same arguments: fit, train
# and sweep then compile once per configuration, however often it is rebuilt.
_wrapped: dict = {}  # one wrapper per function (MultiSteps is multi_steps)
for _name, _value in list(globals().items()):
    if (
        not _name.startswith("_")
        and callable(_value)
        and not isinstance(_value, type)
        and _inspect.signature(_value).return_annotation in (Optimizer, "Optimizer")
    ):
        globals()[_name] = _wrapped.setdefault(id(_value), _reused(_value))
del _name, _value, _wrapped

__all__ = sorted(
    {
        name
        for name in dir()
        if not name.startswith("_") and name not in ("annotations",)
    }
    - {"schedules"}
)
