"""Keywords renamed to optax's: the old name still works for one release."""

import warnings
from typing import Any

_UNSET = object()

#: Deprecated keywords seen so far: a call using one is not reused (it warns
#: every time).
OLD_KEYWORDS: set[str] = set()


def renamed(function: str, old: str, new: str, old_value: Any, new_value: Any):
    """The value of keyword ``new``, taking the deprecated ``old`` one (with a
    ``DeprecationWarning``) when only that was given.

    Raises:
      TypeError: both were given.
    """
    if old_value is _UNSET:
        return new_value
    if new_value is not None and new_value is not _UNSET:
        raise TypeError(f"{function}() got both {old}= and {new}=; pass {new}= only.")
    OLD_KEYWORDS.add(old)
    warnings.warn(
        f"{function}({old}=...) is deprecated: use {new}=..., optax's name for the "
        "same argument. The old keyword goes in the next release.",
        DeprecationWarning,
        stacklevel=4,  # renamed, the constructor, optim's reuse wrapper
    )
    return old_value
