"""Inverted dropout: A_hat = A ⊙ r / (1 − p), r_j ~ Bernoulli(1 − p).

``drop_rate`` p is the probability of **dropping** a unit ([Laurent]: "with a
certain probability p ... each unit of the network is set to 0", p = 0.5 for
hidden units and 0.2 for the input layer). [Deep Learning 2020] writes
r ~ Bernoulli(p) with p the probability of *keeping*; fnn follows [Laurent] and
Keras/PyTorch.

"Inverted": the kept units are scaled by 1/(1 − p) during training, so
E[A_hat] = A and evaluation uses the layer unchanged (no rescaling at test time).

Forward (training):  A_hat = A ⊙ M,   M = r / (1 − p)       (m, n)
Backward:            dA    = dA_hat ⊙ M
Evaluation (``train=False``): identity, forward and backward.

References: [Deep Learning 2020, Dropout regularization]; [Laurent, Regularization];
Srivastava et al. (2014).
"""

import jax

from ._block import Block
from ._spec import builtin


@builtin
def Dropout(drop_rate: float) -> Block:
    """A dropout layer dropping each unit with probability ``drop_rate`` in training.

    Args:
      drop_rate: probability of dropping, in ``[0, 1)``.

    Returns:
      A stochastic :class:`Block` without parameters: training mode needs a key.
    """
    if not isinstance(drop_rate, int | float) or not 0 <= drop_rate < 1:
        raise ValueError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}.")
    keep = 1.0 - drop_rate

    def init(key, in_shape, dtype):
        return {}, {}, tuple(in_shape)

    def forward(params, state, A, key, train):
        if not train or drop_rate == 0:
            return A, state, None
        M = jax.random.bernoulli(key, keep, A.shape).astype(A.dtype) / keep
        return A * M, state, M

    def backward(params, M, dA_hat):
        return {}, dA_hat if M is None else dA_hat * M

    return Block(f"Dropout({drop_rate})", init, forward, backward, stochastic=True)
