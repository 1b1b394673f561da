"""Composable networks: blocks with their forward and backward side by side.

A model is a list of blocks; ``init``, ``forward``, ``backward`` and
``loss_and_grad`` walk it. The simple MLP entry points (``fnn.init_params``,
``fnn.apply``, ``fnn.loss``, ``fnn.backprop``) are built on these blocks.
"""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._attention import attention_backward as attention_backward
from ._attention import attention_forward as attention_forward
from ._block import Block as Block
from ._block import ShapeError as ShapeError
from ._block import stateless as stateless
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
from ._norm import BatchNorm as BatchNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._prelu import PReLU as PReLU
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import gru_backward as gru_backward
from ._recurrent import gru_forward as gru_forward
from ._recurrent import lstm_backward as lstm_backward
from ._recurrent import lstm_forward as lstm_forward
