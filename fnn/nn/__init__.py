"""Composable networks: blocks with their forward and backward side by side.

A model is a block; combinators (``Sequential``, ``Residual``, ``Concat``) are
blocks made of blocks, and a list of blocks is the ``Sequential`` of its
entries. ``init``, ``forward``, ``backward`` and ``loss_and_grad`` run any
model; :func:`check_block` checks a block's hand-written backward against
autodiff and finite differences; :func:`to_spec`/:func:`from_spec` describe a
model as JSON data. The simple MLP entry points (``fnn.init_params``,
``fnn.apply``, ``fnn.loss``, ``fnn.backprop``) are built on these blocks.
"""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._attention import attention_backward as attention_backward
from ._attention import attention_forward as attention_forward
from ._block import Block as Block
from ._block import ShapeError as ShapeError
from ._block import stateless as stateless
from ._check import BlockCheck as BlockCheck
from ._check import check_block as check_block
from ._check import leaf_labels as leaf_labels
from ._combinators import Concat as Concat
from ._combinators import Residual as Residual
from ._combinators import Sequential as Sequential
from ._combinators import as_model as as_model
from ._conv import AvgPool2D as AvgPool2D
from ._conv import Conv2D as Conv2D
from ._conv import Flatten as Flatten
from ._conv import MaxPool2D as MaxPool2D
from ._dense import Activation as Activation
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._embedding import PositionalEmbedding as PositionalEmbedding
from ._maxout import Maxout as Maxout
from ._network import backward as backward
from ._network import forward as forward
from ._network import init as init
from ._network import loss_and_grad as loss_and_grad
from ._network import loss_value as loss_value
from ._network import out_shape as out_shape
from ._norm import BatchNorm as BatchNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._prelu import PReLU as PReLU
from ._recompute import Recompute as Recompute
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import gru_backward as gru_backward
from ._recurrent import gru_forward as gru_forward
from ._recurrent import lstm_backward as lstm_backward
from ._recurrent import lstm_forward as lstm_forward
from ._spec import from_spec as from_spec
from ._spec import is_builtin as is_builtin
from ._spec import register as register
from ._spec import to_spec as to_spec

__all__ = [
    "AvgPool2D",
    "BatchNorm",
    "Block",
    "BlockCheck",
    "Concat",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LayerNorm",
    "MaxPool2D",
    "Maxout",
    "PReLU",
    "Residual",
    "Sequential",
    "ShapeError",
    "Activation",
    "as_model",
    "backward",
    "check_block",
    "forward",
    "from_spec",
    "init",
    "is_builtin",
    "leaf_labels",
    "loss_and_grad",
    "loss_value",
    "out_shape",
    "register",
    "stateless",
    "to_spec",
    "Embedding",
    "PositionalEmbedding",
    "RMSNorm",
    "MultiHeadAttention",
    "attention_forward",
    "attention_backward",
    "Recompute",
    "LSTM",
    "GRU",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
]
