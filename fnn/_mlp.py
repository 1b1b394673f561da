"""The multilayer perceptron as pure functions on a list of ``{"W", "b"}`` dicts.

``params[i] = {"W": (n_i, n_{i+1}), "b": (n_{i+1},)}`` for ``sizes = (n_0, ...,
n_L)``; batch-first, ``Z = A_prev @ W + b`` (the sources' z = Wᵀa + b with column
vectors, [Deep Learning 2020, Forward - Backpropagation]). Hidden layers apply
``activation``; the output layer applies ``output`` (``identity`` for regression,
``sigmoid`` for binary, ``softmax`` for multi-class classification;
[Laurent; Neacșu & Vasilescu]).

These functions are built on :mod:`fnn.nn` blocks: an MLP is
``[Dropout?, Dense(activation)] * (L - 1) + [Dropout?, Dense(output)]``, and
:func:`backprop` is the generic reverse walk of :func:`fnn.nn.loss_and_grad`.
:func:`mlp` builds the same network as a model value (a ``Sequential``), so the
activation travels with the model; :func:`apply`, :func:`loss` and
:func:`backprop` run any model given as ``blocks=`` (with its ``state=``).

When the loss is cross-entropy or BCE the output activation (softmax or sigmoid)
is fused into the loss, which then reads the last layer's pre-activation Z_L
(logits); this is both the stable way to compute it and the sources' output
error f(x) − e(y).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import activations as _activations
from . import initializers as _initializers
from . import losses as _losses
from . import nn as _nn
from .nn._spec import builtin

Params = list[dict[str, jax.Array]]


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes needs at least an input and an output width, got {sizes}."
        )
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"sizes[{i}] must be a positive integer, got {n!r}.")
    return [int(n) for n in sizes]


def init_params(
    key: jax.Array,
    sizes: Sequence[int],
    scheme: "str | _initializers.Initializer" = "he_normal",
    *,
    dtype=jnp.float32,
) -> Params:
    """Initial parameters of an MLP with layer widths ``sizes``.

    Weights from ``scheme`` (a name from :func:`fnn.initializers.names` or a
    callable ``scheme(key, shape, dtype)``), biases zero
    ([Deep Learning 2020, Parameter initialization]; [Neacșu & Vasilescu]).

    Args:
      key: PRNG key.
      sizes: ``(n_0, n_1, ..., n_L)``: input width, hidden widths, output width.
      scheme: the weight initializer.
      dtype: parameter dtype.

    Returns:
      ``[{"W": (n_{i-1}, n_i), "b": (n_i,)} for i = 1..L]``.

    Raises:
      ValueError: fewer than two sizes, a non-positive or non-integer width, or
        an unknown scheme name.
    """
    _initializers.check_key(key)
    sizes = _check_sizes(sizes)
    W_init = _initializers.get(scheme)
    blocks = [_nn.Dense(n, W_init=W_init) for n in sizes[1:]]
    params, _ = _nn.init(key, blocks, (sizes[0],), dtype)
    return params


def dropout_rates(n_layers: int, input: float = 0.2, hidden: float = 0.5) -> tuple:
    """Per-layer drop rates ``(input, hidden, ..., hidden)`` for an MLP of
    ``n_layers`` dense layers; the defaults are [Laurent]'s (0.2 on the input
    layer, 0.5 on hidden layers)."""
    return (input,) + (hidden,) * (n_layers - 1)


_BLOCKS_HINT = (
    " These look like the parameters of a block network: did you forget "
    "blocks=... (and state=...)?"
)


def _check_params(params: Any) -> None:
    if not isinstance(params, list | tuple) or not params:
        raise ValueError(
            "params must be a non-empty list of {'W', 'b'} dicts."
            + (_BLOCKS_HINT if isinstance(params, list | tuple | dict) else "")
        )
    for i, layer in enumerate(params):
        if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
            keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(
                f"params[{i}] must be a dict with keys 'W' and 'b', got {keys}."
                + _BLOCKS_HINT
            )
        W, b = layer["W"], layer["b"]
        if jnp.ndim(W) != 2 or jnp.shape(b) != (jnp.shape(W)[1],):
            raise ValueError(
                f"params[{i}]: expected W (n_in, n_out) and b (n_out,), got W "
                f"{jnp.shape(W)} and b {jnp.shape(b)}."
            )
        if i and jnp.shape(W)[0] != jnp.shape(params[i - 1]["W"])[1]:
            raise ValueError(
                f"params[{i}]['W'] has {jnp.shape(W)[0]} inputs but layer {i - 1} has "
                f"{jnp.shape(params[i - 1]['W'])[1]} outputs."
            )


def _drop_rates(drop_rate: "float | Sequence[float]", n_layers: int) -> tuple:
    """A scalar rate applies to the hidden layers' inputs (not the network input)."""
    if isinstance(drop_rate, int | float):
        return (0.0,) + (float(drop_rate),) * (n_layers - 1)
    rates = tuple(drop_rate)
    if len(rates) != n_layers:
        raise ValueError(
            f"drop_rate has {len(rates)} entries for {n_layers} layers: give one per "
            "dense layer (the rate applied to that layer's input), or one number."
        )
    return rates


def _blocks(n_layers, activation, last, drop_rate, widths=None, **dense):
    """The MLP as blocks, and the positions of its dense layers in that list."""
    blocks, dense_at = [], []
    widths = widths or [None] * n_layers
    for i, rate in enumerate(_drop_rates(drop_rate, n_layers)):
        if rate:
            blocks.append(_nn.Dropout(rate))
        dense_at.append(len(blocks))
        act = activation if i < n_layers - 1 else last
        blocks.append(_nn.Dense(widths[i], act, **dense))
    return blocks, dense_at


def _as_batch(x, y=None):
    x = jnp.asarray(x)
    single = x.ndim == 1
    if single:
        x = x[None]
        if y is not None:
            y = jnp.asarray(y)[None]
    return x, y, single


def _mlp_as_blocks(params, last, activation, drop_rate):
    _check_params(params)
    blocks, dense_at = _blocks(
        len(params), _activations.get(activation), last, drop_rate
    )
    block_params = [{}] * len(blocks)
    for i, j in enumerate(dense_at):
        block_params[j] = params[i]
    return blocks, block_params, dense_at


@builtin
def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    output: str = "identity",
    *,
    drop_rate: "float | Sequence[float]" = 0.0,
    W_init: str = "he_normal",
    b_init: str = "zeros",
) -> _nn.Block:
    """The MLP of :func:`init_params` as a model value: a ``Sequential`` of
    ``[Dropout?, Dense(n_i, activation)] ... [Dropout?, Dense(n_L, output)]``
    that fixes its input width ``n_0``.

    ``fnn.nn.init(key, mlp(sizes, W_init=scheme))`` gives exactly
    ``init_params(key, sizes, scheme)`` when there is no dropout (with dropout,
    the list also holds a ``{}`` entry for each Dropout block).

    Args:
      sizes: ``(n_0, n_1, ..., n_L)``: input width, hidden widths, output width.
      activation: hidden activation name.
      output: output activation name; keep ``identity`` for ``cross_entropy``
        and ``bce``, which read logits (they apply softmax/sigmoid themselves).
      drop_rate: dropout probability before each dense layer (one number: the
        hidden layers' inputs; or one per dense layer).
      W_init, b_init: initializer names.

    Returns:
      A :class:`fnn.nn.Block` (``in_shape = (n_0,)``).

    Example::

        model = fnn.mlp([64, 32, 10], activation="tanh")
        params, state = fnn.nn.init(key, model)
        logits = fnn.apply(params, x, blocks=model)
    """
    sizes = _check_sizes(sizes)
    blocks, _ = _blocks(
        len(sizes) - 1,
        activation,
        output,
        drop_rate,
        widths=sizes[1:],
        W_init=W_init,
        b_init=b_init,
    )
    name = f"mlp({sizes}, {activation}, {output})"
    return _nn.Sequential(blocks)._replace(name=name, in_shape=(sizes[0],))


_MLP_DEFAULTS = {"activation": "relu", "output": None, "drop_rate": 0.0}


def _block_model(blocks, where, **mlp_keywords):
    """The model for ``blocks=``; the MLP-only keywords must keep their defaults."""
    for name, value in mlp_keywords.items():
        if value != _MLP_DEFAULTS[name] and not (name == "output" and value is None):
            raise ValueError(
                f"{where}: {name}={value!r} configures the MLP form and has no effect "
                "with blocks=...; put activations and Dropout blocks in the model "
                "(e.g. fnn.mlp(sizes, activation=..., drop_rate=...))."
            )
    return _nn.as_model(blocks)


def apply(
    params: Any,
    x: jax.Array,
    *,
    activation="relu",
    output="identity",
    drop_rate: "float | Sequence[float]" = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
) -> jax.Array:
    """The network output ŷ = ψ_out(Z_L) for a batch or a single example.

    Args:
      params: ``[{"W": (n_{i-1}, n_i), "b": (n_i,)}, ...]``, or the parameters
        of ``blocks``.
      x: ``(m, n_0)`` batch or ``(n_0,)`` example (with ``blocks``: ``(m,
        *in_shape)``).
      activation: hidden activation, name or Activation (MLP form).
      output: output activation (``identity``, ``sigmoid``, ``softmax``, ...;
        MLP form).
      drop_rate: dropout probability (per layer input, or one number for the
        hidden layers); active only with ``train=True``, which needs ``key``.
      key: PRNG key for dropout.
      train: training mode.
      blocks, state: a model (a block such as :func:`mlp` or a ``Sequential``,
        or a list of blocks) and its state, instead of the MLP form.

    Returns:
      ``(m, n_L)`` (or ``(n_L,)`` for a single example); with ``blocks``, the
      model's output ``(m, *out_shape)``.

    Raises:
      ValueError: naming the layer and both shapes when ``x`` does not match.
    """
    if blocks is not None:
        model = _block_model(
            blocks, "apply", activation=activation, drop_rate=drop_rate
        )
        if output != "identity":
            raise ValueError(
                "apply: output=... configures the MLP form; with blocks=... the "
                "model's last block gives the output."
            )
        return model.forward(params, state, jnp.asarray(x), key, train)[0]
    x, _, single = _as_batch(x)
    blocks, block_params, _ = _mlp_as_blocks(
        params, _activations.get(output), activation, drop_rate
    )
    out, _, _ = _nn.forward(blocks, block_params, x, key=key, train=train)
    return out[0] if single else out


def _setup(params, x, y, activation, loss, output, drop_rate):
    loss_obj = _losses.get(loss)
    if loss_obj.fused_output is not None:
        if output not in (None, loss_obj.fused_output):
            raise ValueError(
                f"loss {loss_obj.name!r} is computed from logits with a "
                f"{loss_obj.fused_output} output; output={output!r} is not allowed "
                f"(use output=None or {loss_obj.fused_output!r})."
            )
        last = _activations.identity()
    else:
        last = _activations.get("identity" if output is None else output)
    x, y, _ = _as_batch(x, y)
    blocks, block_params, dense_at = _mlp_as_blocks(params, last, activation, drop_rate)
    return loss_obj, x, y, blocks, block_params, dense_at


def loss(
    params: Any,
    x: jax.Array,
    y: Any,
    *,
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
) -> jax.Array:
    """J(θ) = (1/m) Σ_i ℓ(ŷ_i, y_i) + l1·Σ|W| + l2·Σ W² (the article "Deep
    Learning", section 2; Laurent, "Loss functions").

    Differentiable by ``jax.grad`` for the MLP form and for any model.

    Args:
      params: MLP parameters, or the parameters of ``blocks``.
      x: ``(m, n_0)`` inputs (or one ``(n_0,)`` example; with ``blocks``,
        ``(m, *in_shape)``).
      y: targets: integer labels ``(m,)`` or rows ``(m, n_L)`` (see
        :func:`fnn.losses.targets`).
      activation: hidden activation (MLP form).
      loss: a name from :func:`fnn.losses.names` or a Loss.
      output: output activation (MLP form); ``None`` picks the loss's own
        (softmax for cross-entropy, sigmoid for BCE, identity otherwise).
      l1, l2: penalty weights on the weights (never the biases).
      drop_rate, key, train: dropout, as in :func:`apply`.
      mask: optional ``(m,)`` booleans marking the real examples of a padded batch.
      blocks, state: a model and its state instead of the MLP form (its last
        block gives logits for cross-entropy/BCE).

    Returns:
      The scalar J.
    """
    if blocks is not None:
        model = _block_model(
            blocks, "loss", activation=activation, output=output, drop_rate=drop_rate
        )
        J, _ = _nn.loss_value(
            model,
            params,
            x,
            y,
            loss,
            state=state,
            key=key,
            train=train,
            mask=mask,
            l1=l1,
            l2=l2,
        )
        return J
    loss_obj, x, y, blocks, block_params, _ = _setup(
        params, x, y, activation, loss, output, drop_rate
    )
    out, _, _ = _nn.forward(blocks, block_params, x, key=key, train=train)
    Y = _losses.targets(loss_obj, out, y)
    return loss_obj.fn(out, Y, mask) + _losses.weight_penalty(params, l1, l2)


def backprop(
    params: Any,
    x: jax.Array,
    y: Any,
    *,
    activation="relu",
    loss="cross_entropy",
    output=None,
    l1: float = 0.0,
    l2: float = 0.0,
    drop_rate: "float | Sequence[float]" = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
    blocks: "_nn.Block | Sequence[_nn.Block] | None" = None,
    state: Any = None,
) -> tuple[jax.Array, Any]:
    """``(J, ∂J/∂θ)`` by the sources' backpropagation equations, no autodiff.

    Forward pass caching A_prev and Z per layer; the fused output error
    ``(ŷ − y)/m`` (softmax + cross-entropy, sigmoid + BCE) or ∂J/∂ŷ then
    ``dZ = dA ⊙ ψ'(Z)`` at the output; then for each layer from the last,
    ``dW = A_prevᵀ dZ``, ``db = Σ dZ``, ``dA_prev = dZ Wᵀ``,
    ``dZ_prev = dA_prev ⊙ ψ'(Z_prev)``; plus ``l1·sign(W) + 2·l2·W``.
    Same keywords as :func:`loss`; with the same ``key``, dropout masks equal
    those of :func:`loss`. With ``blocks``, the reverse walk of the model's
    own backward rules.

    Returns:
      ``(J, grads)``, ``grads`` with exactly the structure of ``params``.

    References: the article "Deep Learning", section 4, "Backpropagation";
    Laurent, "Backpropagation algorithm"; Balvert, "Backpropagation".
    """
    if blocks is not None:
        model = _block_model(
            blocks,
            "backprop",
            activation=activation,
            output=output,
            drop_rate=drop_rate,
        )
        (J, _), grads = _nn.loss_and_grad(
            model,
            params,
            x,
            y,
            loss,
            state=state,
            key=key,
            train=train,
            mask=mask,
            l1=l1,
            l2=l2,
        )
        return J, grads
    loss_obj, x, y, blocks, block_params, dense_at = _setup(
        params, x, y, activation, loss, output, drop_rate
    )
    (J, _), grads = _nn.loss_and_grad(
        blocks, block_params, x, y, loss_obj, key=key, train=train, mask=mask
    )
    grads = [grads[j] for j in dense_at]
    if _losses.has_penalty(l1, l2):
        J = J + _losses.weight_penalty(params, l1, l2)
        grads = jax.tree.map(
            jnp.add, grads, _losses.weight_penalty_grad(params, l1, l2)
        )
    return J, grads
