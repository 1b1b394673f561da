"""Blocks as plain data: a registry of block constructors, ``to_spec``, ``from_spec``.

A block built by a registered constructor remembers the call that built it::

    Dense(64, "relu").spec == {"block": "Dense", "args": {"n_out": 64,
                               "activation": "relu", "W_init": "he_normal",
                               "b_init": "zeros"}}

Invariants:
  * ``from_spec(to_spec(b))`` builds a block equal in behaviour to ``b`` (same
    ``init``, ``forward`` and ``backward`` results);
  * a spec is JSON (dicts, lists, strings, numbers, booleans, ``None``); a
    combinator's spec holds its children's specs;
  * ``from_spec`` only looks names up in the registry: loading a model never
    executes stored code. A user's block joins the registry with
    :func:`register`.

A constructor called with an argument that is not plain data (a callable
initializer, an :class:`~fnn.activations.Activation` object) gives a block whose
``spec`` is ``None``: it works everywhere, but :func:`to_spec` refuses it.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ._block import Block

_REGISTRY: dict[str, Callable[..., Block]] = {}
_BUILTIN: set[str] = set()


def _to_data(value: Any) -> Any:
    """``value`` as JSON data, blocks as their specs; raises TypeError if it is not."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Block):
        if value.spec is None:
            raise TypeError(f"block {value.name} has no spec")
        return value.spec
    if isinstance(value, list | tuple):
        return [_to_data(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_data(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not plain data")


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"block", "args"}


def _from_data(value: Any) -> Any:
    if _is_spec(value):
        return from_spec(value)
    if isinstance(value, list):
        return [_from_data(v) for v in value]
    return value


def register(constructor: Callable[..., Block] | None = None, *, name=None):
    """Register a block constructor so that its blocks carry a spec and load back.

    Use as a decorator on a function that returns a :class:`Block`::

        @fnn.nn.register
        def Temperature(init_value: float = 1.0) -> fnn.nn.Block: ...

    The blocks it returns get ``spec = {"block": "Temperature", "args": {...}}``
    when every argument is plain data, and :func:`from_spec` (hence
    :func:`fnn.checkpoint.load_model`) rebuilds them by calling the constructor.

    Args:
      constructor: the function returning a block.
      name: the registry name (default: the function's ``__name__``).

    Returns:
      The wrapped constructor.

    Raises:
      ValueError: the name is already registered for another function.
    """
    if constructor is None:
        return functools.partial(register, name=name)
    key = name or constructor.__name__
    known = _REGISTRY.get(key)
    if known is not None and getattr(known, "__wrapped__", None) is not constructor:
        raise ValueError(
            f"a block constructor named {key!r} is already registered; pass "
            "name=... to register this one under another name."
        )
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        block = constructor(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = {}
        for pname, value in bound.arguments.items():
            kind = signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                arguments[pname] = object() if value else None  # not data
            else:
                arguments[pname] = value
        try:
            spec = {"block": key, "args": _to_data(arguments)}
        except TypeError:
            spec = None
        return block._replace(spec=spec)

    _REGISTRY[key] = build
    return build


def builtin(constructor: Callable[..., Block]) -> Callable[..., Block]:
    """:func:`register` for fnn's own blocks (whose backward fnn's tests check)."""
    _BUILTIN.add(constructor.__name__)
    return register(constructor)


def _args_of(spec) -> dict:
    args = spec["args"]
    if not isinstance(args, dict):
        raise ValueError(f"spec {spec['block']!r}: 'args' must be an object.")
    return args


def is_builtin(block: Block) -> bool:
    """Whether ``block`` and every block inside it are fnn's own (registered by
    fnn, with a backward fnn's test suite checks against autodiff)."""
    spec = block.spec
    return (
        spec is not None
        and spec["block"] in _BUILTIN
        and all(is_builtin(child) for child in block.children)
    )


def to_spec(block: Block) -> dict:
    """The block (a whole model) as JSON data: ``{"block": name, "args": {...}}``.

    Raises:
      ValueError: the block, or a block inside it, was not built by a registered
        constructor with plain-data arguments (the message names it and says how
        to register it).
    """
    if not isinstance(block, Block):
        raise ValueError(f"to_spec expects a Block, got {type(block).__name__}.")
    if block.spec is None:
        raise ValueError(
            f"block {block.name} cannot be described as data: build it with a "
            "constructor decorated with @fnn.nn.register and plain arguments "
            "(names, numbers, lists; not callables or Activation objects)."
        )
    return block.spec


def from_spec(spec: dict) -> Block:
    """Rebuild a block from :func:`to_spec`'s data, by registry look-up only.

    Raises:
      ValueError: an unknown block name (register the constructor first with
        :func:`register`) or malformed spec.
    """
    if not _is_spec(spec):
        raise ValueError(
            f"a block spec is {{'block': name, 'args': {{...}}}}, got {spec!r:.80}."
        )
    name = spec["block"]
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown block {name!r}: register its constructor with "
            "@fnn.nn.register before loading (known: "
            f"{', '.join(sorted(_REGISTRY))})."
        )
    args = {k: _from_data(v) for k, v in _args_of(spec).items()}
    try:
        return _REGISTRY[name](**args)
    except TypeError as err:
        raise ValueError(f"spec of block {name!r} does not fit it: {err}") from None
