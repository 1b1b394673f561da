"""Composable networks: blocks with their forward and backward side by side.

A model is a list of blocks; ``init``, ``forward``, ``backward`` and
``loss_and_grad`` walk it. The simple MLP entry points (``fnn.init_params``,
``fnn.apply``, ``fnn.loss``, ``fnn.backprop``) are built on these blocks.
"""

from ._block import Block as Block
from ._block import ShapeError as ShapeError
from ._block import stateless as stateless
from ._dense import Activation as Activation
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._network import backward as backward
from ._network import forward as forward
from ._network import init as init
from ._network import loss_and_grad as loss_and_grad
