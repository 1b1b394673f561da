"""Small pytree helpers shared across fnn: key paths in error messages.

Every error about a tree names the offending leaf by its key path, written the
way ``jax.tree_util.keystr`` writes it (``[0]['W']``), so a user can find it.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def keystr(path: Sequence[Any]) -> str:
    """The key path ``path`` as text, e.g. ``[0]['W']``; ``<root>`` when empty."""
    return jax.tree_util.keystr(tuple(path)) or "<root>"


def leaves_with_paths(tree: PyTree) -> list[tuple[str, Any]]:
    """``[(keystr(path), leaf), ...]`` in ``jax.tree`` order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(keystr(path), leaf) for path, leaf in flat]


def first_structure_mismatch(a: PyTree, b: PyTree) -> str | None:
    """The key path of the first place where trees ``a`` and ``b`` differ.

    Returns ``None`` when both have the same structure. The comparison walks both
    trees together, so the path is the shallowest node whose type, keys or
    length differ (or a leaf present in one and not the other).
    """
    if jax.tree.structure(a) == jax.tree.structure(b):
        return None

    def walk(x: Any, y: Any, path: tuple) -> str | None:
        if jax.tree.structure(x) == jax.tree.structure(y):
            return None
        x_leaf = jax.tree_util.treedef_is_leaf(jax.tree.structure(x))
        y_leaf = jax.tree_util.treedef_is_leaf(jax.tree.structure(y))
        if x_leaf or y_leaf:
            return None if x_leaf and y_leaf else keystr(path)
        x_kids, x_def = jax.tree_util.tree_flatten_with_path(
            x, is_leaf=lambda node: node is not x
        )
        y_kids, y_def = jax.tree_util.tree_flatten_with_path(
            y, is_leaf=lambda node: node is not y
        )
        x_keys = [p for p, _ in x_kids]
        y_keys = [p for p, _ in y_kids]
        if type(x) is not type(y) or x_keys != y_keys:
            for (px, _), (py, _) in zip(x_kids, y_kids, strict=False):
                if px != py:
                    return keystr(path + tuple(px))
            longer = x_kids if len(x_kids) > len(y_kids) else y_kids
            if len(x_kids) != len(y_kids):
                return keystr(path + tuple(longer[min(len(x_kids), len(y_kids))][0]))
            return keystr(path)
        for (p, cx), (_, cy) in zip(x_kids, y_kids, strict=True):
            found = walk(cx, cy, path + tuple(p))
            if found is not None:
                return found
        return keystr(path)

    return walk(a, b, ())


def check_same_structure(
    reference: PyTree, other: PyTree, what: str, like: str
) -> None:
    """Raise ``ValueError`` naming the first key path where ``other`` departs from
    ``reference``.

    Args:
      reference: the tree whose structure is expected.
      other: the tree to check.
      what: the argument name of ``other`` (for the message).
      like: the argument name of ``reference`` (for the message).
    """
    where = first_structure_mismatch(reference, other)
    if where is not None:
        raise ValueError(
            f"{what} does not have the structure of {like}: first difference at "
            f"{where}. Expected structure {jax.tree.structure(reference)}, "
            f"got {jax.tree.structure(other)}."
        )


def check_inexact_leaves(tree: PyTree, what: str) -> None:
    """Raise ``ValueError`` naming the first leaf of ``tree`` that is not an
    inexact (floating or complex) array."""
    for path, leaf in leaves_with_paths(tree):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            shown = dtype if dtype is not None else type(leaf).__name__
            raise ValueError(
                f"{what} leaf {path} must be an inexact (floating) array, got {shown}."
            )
