"""Weights between fnn and PyTorch: ``state_dict`` names and layouts, both ways.

A PyTorch model's ``state_dict()`` maps dotted names to tensors; an fnn model
keeps the same numbers in ``(params, state)`` pytrees, in its own layouts::

    params, state = fnn.interop.from_torch_state_dict(model, torch_model.state_dict(),
                                                      in_shape=(28, 28, 1))
    weights = fnn.interop.to_torch_state_dict(model, params, state)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

Invariants:
  * ``from_torch_state_dict(model, to_torch_state_dict(model, p, s)) == (p, s)``
    exactly (every conversion is a transpose, a permutation or a split);
  * the fnn model with the imported weights computes what the PyTorch model of
    the same architecture computes (in evaluation mode), on images transposed
    from NCHW to NHWC: ``fnn.nn.forward(model, p, x.transpose(0, 2, 3, 1),
    state=s)`` equals ``torch_model(x)`` up to rounding;
  * nothing is imported from PyTorch: values may be ``torch.Tensor`` (read with
    ``.detach().cpu().numpy()``) or anything ``numpy.asarray`` reads.

Names. The PyTorch module tree equivalent to an fnn model is: a ``Sequential``
(or :func:`fnn.mlp`) is an ``nn.Sequential`` whose index counts every block,
and one more after a ``Dense`` with an activation other than identity (its
activation is the next module: ``fnn.mlp([4, 8, 3], "tanh")`` is
``nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))``, weights
``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``); blocks without parameters
(activations, dropout, pooling, ``Flatten``) take an index and no names. A
``Residual`` is a module with attributes ``block`` and ``projection``; a
``Concat`` an ``nn.ModuleList`` (``0.``, ``1.``, ...). ``prefix`` is put before
every name (e.g. ``"model."``).

Layouts, block by block (fnn leaf → PyTorch name):

* ``Dense``: ``W (n_in, n_out)`` → ``nn.Linear`` ``weight = W.T (n_out, n_in)``;
  ``b`` → ``bias``.
* ``Conv2D``: ``W (kh, kw, C, F)`` (HWIO) → ``nn.Conv2d`` ``weight (F, C, kh,
  kw)`` (OIHW); ``b`` → ``bias``.
* ``BatchNorm``: ``gamma``, ``beta`` → ``nn.BatchNorm1d``/``2d`` ``weight``,
  ``bias``; state ``mean``, ``var`` → ``running_mean``, ``running_var``; and
  ``num_batches_tracked``.
* ``LayerNorm``: ``gamma``, ``beta`` (the per-example shape, or ``(d,)``) →
  ``nn.LayerNorm`` ``weight``, ``bias``; on images ``(H, W, C)`` → ``(C, H, W)``.
* ``RMSNorm``: ``gamma (d,)`` → ``nn.RMSNorm`` ``weight``.
* ``PReLU``: ``alpha (n,)`` or ``()`` → ``nn.PReLU`` ``weight (n,)`` or ``(1,)``.
* ``Embedding``: ``W (V, d)`` → ``nn.Embedding`` ``weight (V, d)``.
* ``LSTM``, ``GRU``: ``input.W (d, G·n_h)``, ``input.b``, ``hidden.W (n_h,
  G·n_h)``, ``hidden.b`` → ``nn.LSTM``/``nn.GRU`` ``weight_ih_l0 = input.W.T``,
  ``bias_ih_l0``, ``weight_hh_l0 = hidden.W.T``, ``bias_hh_l0``.
* ``MultiHeadAttention``: ``q``, ``k``, ``v``, ``o``, each ``W (d, d)`` and
  ``b`` (no ``k.b``) → ``nn.MultiheadAttention`` (``batch_first=True``)
  ``in_proj_weight = [W_q.T; W_k.T; W_v.T] (3d, d)``, ``in_proj_bias =
  [b_q; 0; b_v]``, ``out_proj.weight = W_o.T``, ``out_proj.bias = b_o``.

Conventions that differ, and what the conversion does about them:

* Recurrent gates: fnn stores them in PyTorch's order (LSTM i, f, g, o; GRU r,
  z, n) and keeps PyTorch's two biases (``b_ih`` inside, ``b_hh`` next to the
  recurrent product, which matters for the GRU's n gate), so each matrix is
  only transposed. A learned initial state has no PyTorch counterpart and is
  refused.
* Attention: fnn has no key bias (it adds a constant to every score of a row,
  which the softmax removes); importing drops PyTorch's, exporting writes zeros.
* Flattened images: fnn flattens ``(H, W, C)``, PyTorch ``(C, H, W)``. The rows
  of the first ``Dense`` after a ``Flatten`` of an image (and the per-feature
  parameters of the normalisations or ``PReLU`` between them) are permuted so
  that the two models agree.
* Channel axis: PyTorch's ``nn.BatchNorm1d`` and ``nn.PReLU`` take the
  channels at axis 1, fnn's at the last axis. The weights are the same; on
  sequences ``(m, T, d)`` the PyTorch model applies them to ``x.transpose(1,
  2)`` (on images, NCHW puts the channels at axis 1 already).
* BatchNorm: ``running_mean`` and ``running_var`` are copied unchanged, so
  evaluation gives the same outputs. The two libraries update them differently
  in training, and neither convention is in the ``state_dict``: fnn's
  ``momentum`` is the weight of the old average (PyTorch's ``momentum=0.1`` is
  fnn's ``0.9``), and fnn averages the biased batch variance where PyTorch
  averages the unbiased one (·N/(N−1)). ``num_batches_tracked`` is not used by
  fnn: it is read and checked (a scalar integer) and exported as 0. ``eps``
  is an argument of the block in both libraries (1e-5 by default in both).

To hand PyTorch-named weights to tools that read files (Hugging Face),
write them with the safetensors package:
``safetensors.numpy.save_file(to_torch_state_dict(model, params, state),
"model.safetensors", metadata={"format": "pt"})``; such a file loads back with
``from_torch_state_dict(model, fnn.checkpoint.load("model.safetensors"))``.

Errors: a missing or unexpected name, a shape that differs from the model's
(expected and given shapes in PyTorch's layout), a dtype that is not floating,
or a block without a PyTorch counterpart raises ``ValueError`` naming the key
and the block.

References: PyTorch documentation of ``torch.nn.Module.state_dict`` and of the
modules named above; Ioffe & Szegedy (2015) (batch normalization's running
averages).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .nn._block import Block
from .nn._combinators import as_model

__all__ = ["from_torch_state_dict", "to_torch_state_dict", "torch_names"]

PyTree = Any
Path = tuple  # a key path into {"params": ..., "state": ...}


class _Entry(NamedTuple):
    """One PyTorch tensor: its name, the fnn leaves it is made of, and the two
    conversions (``to_torch(*fnn_arrays) -> array``, ``from_torch(array) ->
    tuple of fnn arrays``); ``optional``: may be absent on import."""

    name: str
    block: str
    paths: tuple[Path, ...]
    to_torch: Callable[..., np.ndarray]
    from_torch: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    optional: bool = False


def _transpose(axes):
    inverse = tuple(np.argsort(axes))
    return (
        lambda a: np.transpose(a, axes),
        lambda t: (np.transpose(t, inverse),),
    )


_SAME = (lambda a: np.array(a), lambda t: (np.array(t),))


def _rows(perm):
    """Conversions of a Dense ``W``: ``weight = W.T`` with its columns (input
    features) in PyTorch's order; ``perm[j]`` is the PyTorch index of fnn
    feature j (``None``: the same order)."""
    if perm is None:
        return _transpose((1, 0))

    def to_torch(W):
        WT = np.empty_like(W)
        WT[perm] = W
        return WT.T.copy()

    return to_torch, lambda t: (t.T[perm].copy(),)


def _features(perm):
    """Conversions of a per-feature vector under the permutation ``perm``."""
    if perm is None:
        return _SAME

    def to_torch(v):
        out = np.empty_like(v)
        out[perm] = v
        return out

    return to_torch, lambda t: (t[perm].copy(),)


def _kind(block: Block) -> str:
    """The constructor's name: the spec's ``"block"``, else the name's prefix."""
    if isinstance(block.spec, dict) and isinstance(block.spec.get("block"), str):
        return block.spec["block"]
    return block.name.split("(", 1)[0]


def _dense_activation(block: Block) -> str:
    if isinstance(block.spec, dict):
        act = block.spec.get("args", {}).get("activation", "identity")
        if isinstance(act, str):
            return act
    return block.name.rsplit(",", 1)[-1].strip(" )")


def _abstract_init(block: Block, in_shape: tuple, dtype: Any):
    """``(params, state, out_shape)`` of ``block.init`` as ShapeDtypeStructs."""
    found = []

    def init(key):
        params, state, out = block.init(key, tuple(in_shape), dtype)
        found.append(tuple(out))
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0))
    return params, state, found[0]


def _has_leaves(tree: PyTree) -> bool:
    return bool(jax.tree.leaves(tree))


_ELEMENTWISE = ("Activation", "Dropout")


class _Walk:
    """The entries of a model, collected by walking its blocks with their shapes."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        self.entries: list[_Entry] = []

    def add(self, name, block, paths, conversions, optional=False):
        to_torch, from_torch = conversions
        self.entries.append(
            _Entry(name, block, tuple(paths), to_torch, from_torch, optional)
        )

    def block(self, block, in_shape, path, prefix, perm=None):
        """Add the entries of ``block`` (input per-example shape ``in_shape``);
        ``perm`` is the feature permutation of a flattened image feeding it.
        Returns ``(out_shape, perm of the output)``."""
        kind = _kind(block)
        params, state, out_shape = _abstract_init(block, in_shape, self.dtype)
        where = f"{block.name} (PyTorch prefix {prefix!r})"
        P, S = ("params", *path), ("state", *path)
        if block.children and kind in ("Residual", "Concat"):
            self._no_perm(perm, block, prefix)
            names = ("block", "projection") if kind == "Residual" else None
            for i, child in enumerate(block.children):
                sub = f"{prefix}{names[i] if names else i}."
                self.block(child, in_shape, (*path, i), sub)
            return out_shape, None
        if block.children:  # Sequential, fnn.mlp: one PyTorch index per module
            shape, index = tuple(in_shape), 0
            for i, child in enumerate(block.children):
                shape, perm = self.block(
                    child, shape, (*path, i), f"{prefix}{index}.", perm
                )
                index += 1
                if _kind(child) == "Dense" and _dense_activation(child) != "identity":
                    index += 1  # the activation is a module of its own
            return out_shape, perm
        if kind == "Flatten":
            self._no_perm(perm, block, prefix)
            if len(in_shape) == 3:
                H, W, C = in_shape
                perm = np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0)
                return out_shape, perm.reshape(-1)
            return out_shape, None
        if not _has_leaves(params) and not _has_leaves(state):
            if kind in _ELEMENTWISE or perm is None:
                return out_shape, perm
            self._no_perm(perm, block, prefix)
        if kind == "Dense":
            if perm is not None and len(in_shape) != 1:
                self._no_perm(perm, block, prefix)
            self.add(f"{prefix}weight", where, [(*P, "W")], _rows(perm))
            self.add(f"{prefix}bias", where, [(*P, "b")], _SAME)
            return out_shape, None
        if kind in ("BatchNorm", "RMSNorm", "PReLU", "LayerNorm"):
            if perm is not None and len(in_shape) != 1:
                self._no_perm(perm, block, prefix)
            if kind == "BatchNorm":
                self._batch_norm(where, P, S, prefix, perm)
            elif kind == "PReLU":
                if params["alpha"].shape == ():
                    conv = (lambda a: np.reshape(a, (1,)), lambda t: (t.reshape(()),))
                else:
                    conv = _features(perm)
                self.add(f"{prefix}weight", where, [(*P, "alpha")], conv)
            elif kind == "RMSNorm":
                self.add(f"{prefix}weight", where, [(*P, "gamma")], _features(perm))
            else:  # LayerNorm: images are (H, W, C) here, (C, H, W) in PyTorch
                conv = _features(perm)
                if params["gamma"].ndim == 3:
                    conv = _transpose((2, 0, 1))
                self.add(f"{prefix}weight", where, [(*P, "gamma")], conv)
                self.add(f"{prefix}bias", where, [(*P, "beta")], conv)
            return out_shape, perm
        self._no_perm(perm, block, prefix)
        if kind == "Conv2D":
            self.add(f"{prefix}weight", where, [(*P, "W")], _transpose((3, 2, 0, 1)))
            self.add(f"{prefix}bias", where, [(*P, "b")], _SAME)
        elif kind == "Embedding":
            self.add(f"{prefix}weight", where, [(*P, "W")], _SAME)
        elif kind in ("LSTM", "GRU"):
            if "initial" in params:
                raise ValueError(
                    f"{where}: a learned initial state (initial_state='learned') "
                    f"has no counterpart in PyTorch's nn.{kind}; use "
                    "initial_state='zeros' for a model that moves to PyTorch."
                )
            for side, tag in (("input", "ih"), ("hidden", "hh")):
                self.add(
                    f"{prefix}weight_{tag}_l0",
                    where,
                    [(*P, side, "W")],
                    _transpose((1, 0)),
                )
                self.add(f"{prefix}bias_{tag}_l0", where, [(*P, side, "b")], _SAME)
        elif kind == "MultiHeadAttention":
            self._attention(where, P, prefix, params)
        else:
            raise ValueError(
                f"{where} has parameters or state but no known PyTorch counterpart "
                "(fnn.interop converts Dense, Conv2D, BatchNorm, LayerNorm, RMSNorm, "
                "PReLU, Embedding, LSTM, GRU and MultiHeadAttention); convert its "
                "leaves by hand."
            )
        return out_shape, None

    def _no_perm(self, perm, block, prefix):
        if perm is not None:
            raise ValueError(
                f"{block.name} (PyTorch prefix {prefix!r}) reads a flattened image, "
                "whose features fnn orders (H, W, C) and PyTorch (C, H, W); only "
                "Dense, elementwise blocks and per-feature normalisations are "
                "converted there. Put a Dense right after the Flatten."
            )

    def _batch_norm(self, where, P, S, prefix, perm):
        conv = _features(perm)
        self.add(f"{prefix}weight", where, [(*P, "gamma")], conv)
        self.add(f"{prefix}bias", where, [(*P, "beta")], conv)
        self.add(f"{prefix}running_mean", where, [(*S, "mean")], conv)
        self.add(f"{prefix}running_var", where, [(*S, "var")], conv)

        def count_to_torch():
            return np.zeros((), np.int64)

        def count_from_torch(t):
            if t.shape not in ((), (1,)) or t.dtype.kind not in "iu":
                raise ValueError(
                    f"{prefix}num_batches_tracked of {where}: expected an integer "
                    f"scalar (int64[]), got {t.dtype}{list(t.shape)}."
                )
            return ()

        self.add(
            f"{prefix}num_batches_tracked",
            where,
            [],
            (count_to_torch, count_from_torch),
            optional=True,
        )

    def _attention(self, where, P, prefix, params):
        d = params["q"]["W"].shape[0]
        self.add(
            f"{prefix}in_proj_weight",
            where,
            [(*P, n, "W") for n in "qkv"],
            (
                lambda Wq, Wk, Wv: np.concatenate([Wq.T, Wk.T, Wv.T]),
                lambda t: tuple(t[i * d : (i + 1) * d].T.copy() for i in range(3)),
            ),
        )
        self.add(
            f"{prefix}in_proj_bias",
            where,
            [(*P, "q", "b"), (*P, "v", "b")],
            (
                lambda bq, bv: np.concatenate([bq, np.zeros_like(bq), bv]),
                lambda t: (t[:d].copy(), t[2 * d :].copy()),  # b_k is dropped
            ),
        )
        self.add(f"{prefix}out_proj.weight", where, [(*P, "o", "W")], _rows(None))
        self.add(f"{prefix}out_proj.bias", where, [(*P, "o", "b")], _SAME)


def _model_and_shape(model, in_shape):
    model = as_model(model)
    if in_shape is None:
        in_shape = model.in_shape
    if in_shape is None:
        raise ValueError(
            f"{model.name} does not fix its input shape; pass in_shape=, the "
            "per-example shape without the batch axis (images (H, W, C), e.g. "
            "(28, 28, 1))."
        )
    if not isinstance(in_shape, Sequence) or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1
        for n in in_shape
    ):
        raise ValueError(
            f"in_shape must be a tuple of positive ints, got {in_shape!r}."
        )
    return model, tuple(int(n) for n in in_shape)


def _walk(model, in_shape, dtype, prefix):
    walk = _Walk(dtype)
    walk.block(model, in_shape, (), prefix)
    template = {}
    template["params"], template["state"], _ = _abstract_init(model, in_shape, dtype)
    return walk.entries, template


def torch_names(
    model: Block | Sequence[Block], *, in_shape: Sequence[int] | None = None
) -> list[str]:
    """The PyTorch ``state_dict`` names of ``model``'s weights, in order.

    Args:
      model: an fnn block (or a list of blocks, a ``Sequential``).
      in_shape: the per-example input shape (optional when the model fixes it).

    Returns:
      The names :func:`to_torch_state_dict` writes, e.g. ``["0.weight",
      "0.bias", "2.weight", "2.bias"]`` for ``fnn.mlp([4, 8, 3], "tanh")``.
    """
    model, in_shape = _model_and_shape(model, in_shape)
    entries, _ = _walk(model, in_shape, jnp.float32, "")
    return [e.name for e in entries]


def _path_key(path) -> tuple:
    """A jax key path as a plain tuple of dict keys and indices."""
    out = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
    return tuple(out)


def _leaves_by_path(tree) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_key(p): leaf for p, leaf in flat}


def _dotted(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def to_torch_state_dict(
    model: Block | Sequence[Block],
    params: PyTree,
    state: PyTree = None,
    *,
    in_shape: Sequence[int] | None = None,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """fnn parameters and state as the ``state_dict`` of the equivalent PyTorch model.

    ``weight = W.T`` for a dense layer, OIHW kernels for a convolution, the
    BatchNorm running averages under ``running_mean``/``running_var`` (module
    docstring: names, layouts and conventions).

    Args:
      model: the fnn model (a block or a list of blocks).
      params: its parameters (as ``fnn.nn.init`` gives them).
      state: its state (BatchNorm running averages); ``None`` when it has none.
      in_shape: the per-example input shape, images ``(H, W, C)`` (optional when
        the model fixes it).
      prefix: put before every name, e.g. ``"model."``.

    Returns:
      An insertion-ordered ``{name: numpy.ndarray}``, in the dtype of the
      parameters (``num_batches_tracked`` is ``int64``); load it into PyTorch
      with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in
      d.items()})``.

    Raises:
      ValueError: a parameter or state leaf that is missing or has the wrong
        shape (named by key path, e.g. ``params.0.W``), a block without a
        PyTorch counterpart, or no ``in_shape``.
    """
    model, in_shape = _model_and_shape(model, in_shape)
    given = {"params": params, "state": state}
    floats = [
        leaf.dtype
        for leaf in jax.tree.leaves(given)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    dtype = floats[0] if floats else jnp.float32
    entries, template = _walk(model, in_shape, dtype, prefix)
    want = _leaves_by_path(template)
    if state is None:
        if _has_leaves(template["state"]):
            raise ValueError(
                f"{model.name} has state (BatchNorm running averages); pass state=, "
                "the state returned by fnn.nn.init or training."
            )
        given["state"] = template["state"]
    have = _leaves_by_path(given)
    for path, leaf in want.items():
        if path not in have:
            raise ValueError(
                f"to_torch_state_dict: {_dotted(path)} is missing; the model expects "
                f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}."
            )
        shape = tuple(np.shape(have[path]))
        if shape != tuple(leaf.shape):
            raise ValueError(
                f"to_torch_state_dict: {_dotted(path)} has shape {shape}, the model "
                f"({model.name}, in_shape {in_shape}) expects {tuple(leaf.shape)}."
            )
    extra = [p for p in have if p not in want]
    if extra:
        raise ValueError(
            f"to_torch_state_dict: {_dotted(extra[0])} is not a parameter or state "
            f"of {model.name}."
        )
    out = {}
    for entry in entries:
        arrays = [np.asarray(jax.device_get(have[p])) for p in entry.paths]
        out[entry.name] = np.array(entry.to_torch(*arrays), order="C")
    return out


def _as_numpy(name: str, value: Any) -> np.ndarray:
    """A state_dict value as numpy: ``torch.Tensor`` via ``.detach().cpu().numpy()``."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        try:
            return np.asarray(value.detach().cpu().numpy())
        except (TypeError, RuntimeError) as err:
            raise ValueError(
                f"state_dict[{name!r}]: cannot be read as a numpy array ({err}); "
                "convert it first, e.g. tensor.float() for bfloat16."
            ) from err
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"state_dict[{name!r}] is a {type(value).__name__}, not an array."
        ) from err


def from_torch_state_dict(
    model: Block | Sequence[Block],
    state_dict: Mapping[str, Any],
    *,
    in_shape: Sequence[int] | None = None,
    dtype: Any = None,
    prefix: str = "",
    strict: bool = True,
) -> tuple[PyTree, PyTree]:
    """A PyTorch ``state_dict`` as fnn ``(params, state)`` for ``model``.

    The inverse of :func:`to_torch_state_dict`: ``weight.T`` for a dense layer,
    OIHW kernels transposed to HWIO, the BatchNorm running averages into the
    state (module docstring: names, layouts and conventions). Every tensor is
    checked against the shape the model expects before anything is converted.

    Args:
      model: the fnn model equivalent to the PyTorch one (same layers, same
        sizes; see the module docstring for the index convention).
      state_dict: ``{name: tensor}``, e.g. ``torch_model.state_dict()``, or
        numpy arrays (e.g. read from a safetensors file); never modified.
      in_shape: the per-example input shape, images ``(H, W, C)`` (optional when
        the model fixes it).
      dtype: the dtype of the result (default: that of the state_dict's floating
        tensors, which must agree). float64 needs ``jax.enable_x64``.
      prefix: a prefix of every name to strip, e.g. ``"model."``.
      strict: refuse names the model does not use (as PyTorch's
        ``load_state_dict``); with ``False`` they are ignored.

    Returns:
      ``(params, state)`` with ``jax.Array`` leaves, in the structure of
      ``fnn.nn.init(key, model, in_shape, dtype)``.

    Raises:
      ValueError: a missing name, an unexpected name (``strict``), a tensor of
        the wrong shape (named, with expected and given shapes in PyTorch's
        layout), a non-floating tensor, mixed floating dtypes, a dtype JAX would
        silently narrow, or a block without a PyTorch counterpart.
    """
    model, in_shape = _model_and_shape(model, in_shape)
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"state_dict must be a mapping of names to tensors, got "
            f"{type(state_dict).__name__}."
        )
    given = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise ValueError(f"state_dict names must be strings, got {name!r}.")
        if name.startswith(prefix):
            given[name[len(prefix) :]] = (name, value)
        elif strict:
            raise ValueError(
                f"state_dict[{name!r}] does not start with prefix {prefix!r}."
            )
    arrays = {short: (name, _as_numpy(name, v)) for short, (name, v) in given.items()}
    if dtype is None:
        floats = sorted(
            {a.dtype.name for _, a in arrays.values() if a.dtype.kind == "f"}
        )
        if len(floats) > 1:
            raise ValueError(
                f"state_dict mixes floating dtypes {floats}; pass dtype= to choose "
                "the dtype of the fnn parameters."
            )
        dtype = floats[0] if floats else "float32"
    dtype = np.dtype(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"the parameters would be {dtype.name}, which JAX turns into "
            f"{jax.dtypes.canonicalize_dtype(dtype).name} here; call inside "
            "`with jax.enable_x64(True):` or pass dtype=np.float32."
        )
    entries, template = _walk(model, in_shape, dtype, "")
    want = _leaves_by_path(template)
    used = {e.name for e in entries}
    if strict:
        extra = [arrays[n][0] for n in arrays if n not in used]
        if extra:
            raise ValueError(
                f"state_dict has names that {model.name} does not use: {extra} "
                f"(expected {[prefix + e.name for e in entries]}); pass strict=False "
                "to ignore them."
            )
    missing = [
        prefix + e.name for e in entries if e.name not in arrays and not e.optional
    ]
    if missing:
        raise ValueError(
            f"state_dict is missing {missing} for {model.name} (in_shape {in_shape})."
        )
    values = {}
    for entry in entries:
        if entry.name not in arrays:
            continue
        name, array = arrays[entry.name]
        if entry.paths:
            if array.dtype.kind != "f":
                raise ValueError(
                    f"state_dict[{name!r}] of {entry.block} has dtype "
                    f"{array.dtype}; expected floating point."
                )
            zeros = [np.zeros(want[p].shape, dtype) for p in entry.paths]
            expected = entry.to_torch(*zeros).shape
            if array.shape != expected:
                raise ValueError(
                    f"state_dict[{name!r}] of {entry.block} has shape "
                    f"{tuple(array.shape)}, expected {tuple(expected)}."
                )
        parts = entry.from_torch(array)
        for path, part in zip(entry.paths, parts, strict=True):
            values[path] = jnp.asarray(part.astype(dtype))
    result = jax.tree_util.tree_map_with_path(
        lambda p, _: values[_path_key(p)], template
    )
    return result["params"], result["state"]
