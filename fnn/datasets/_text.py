"""A character corpus that needs no network: the Python documentation text.

Every CPython installation carries ``pydoc_data.topics.topics``, a dict from
help topic (``"assert"``, ``"for"``, ``"typesseq"``, ...) to the plain-text
rendering of that section of the Python Language Reference and Library
Reference, used by ``help()``. Joined in sorted key order it is about 0.45 MB of
English prose, grammar rules and code: a small, fixed corpus for
character-level language models.

Attribution: the text is the Python documentation, Copyright © 2001 Python
Software Foundation; All Rights Reserved. It is distributed with CPython under
the Python Software Foundation License Version 2 (docs.python.org/3/license.html)
and is read here from the running interpreter's own standard library; fnn ships
no copy of it. Its exact content depends on the Python version.

Tokens are characters: the vocabulary is the sorted set of characters of the
text, ``ids[i] = vocab.index(text[i])``. Next-character examples are windows
``x = ids[s : s + T]``, ``y = ids[s + 1 : s + T + 1]`` (the target at every
position is the following character). A train/validation split cuts the id
sequence by position (the first part trains, the last part validates), so that
no validation window overlaps a training one.

References: Bengio et al. (2003), "A Neural Probabilistic Language Model";
Karpathy, "The Unreasonable Effectiveness of Recurrent Neural Networks" (2015)
(character-level language models, bits per character).
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "char_ids",
    "char_windows",
    "decode_chars",
    "load_pydoc_chars",
    "pydoc_text",
    "random_char_windows",
    "split_ids",
]


def pydoc_text(max_chars: int | None = None) -> str:
    """The Python documentation text of this interpreter (``pydoc_data``).

    Args:
      max_chars: keep only the first ``max_chars`` characters (``None``: all).

    Returns:
      The topics of ``pydoc_data.topics.topics`` in sorted key order, joined by
      blank lines (module docstring for the attribution).

    Raises:
      ValueError: ``max_chars`` not a positive int.
      ImportError: an interpreter built without ``pydoc_data``.
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k].strip("\n") for k in sorted(topics))
    if max_chars is not None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or (
            max_chars < 1
        ):
            raise ValueError(f"max_chars must be a positive int, got {max_chars!r}.")
        text = text[:max_chars]
    return text


def char_ids(text: str, vocab: str | None = None) -> tuple[np.ndarray, str]:
    """Encode ``text`` as character ids.

    Args:
      text: the corpus, a non-empty string.
      vocab: the characters, in id order (default: the sorted characters of
        ``text``).

    Returns:
      ``(ids, vocab)``: int32 ids ``(len(text),)`` and the vocabulary string.

    Raises:
      ValueError: empty text, a repeated vocabulary character, or a character of
        ``text`` missing from ``vocab`` (named, with its position).
    """
    if not isinstance(text, str) or not text:
        raise ValueError("char_ids needs a non-empty string.")
    if vocab is None:
        vocab = "".join(sorted(set(text)))
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab must not repeat a character.")
    index = {c: i for i, c in enumerate(vocab)}
    missing = set(text) - index.keys()
    if missing:
        first = min(text.index(c) for c in missing)
        raise ValueError(
            f"text holds {len(missing)} character(s) not in vocab, the first "
            f"{text[first]!r} at position {first}; build the vocabulary from the "
            "whole corpus (vocab=None)."
        )
    lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return lookup[codes], vocab


def decode_chars(ids, vocab: str) -> str:
    """The text of the ids ``(T,)``: ``"".join(vocab[i] for i in ids)``."""
    return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def load_pydoc_chars(max_chars: int | None = None) -> tuple[np.ndarray, str]:
    """The Python documentation as character ids: ``char_ids(pydoc_text(...))``.

    Returns:
      ``(ids, vocab)``: int32 ids ``(n,)`` and the vocabulary (about 100
      characters; its size depends on the Python version).
    """
    return char_ids(pydoc_text(max_chars))


def split_ids(ids, valid_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split an id sequence by position: the first ``1 − valid_fraction`` trains.

    Returns:
      ``(train_ids, valid_ids)``, consecutive and disjoint.

    Raises:
      ValueError: ``valid_fraction`` outside (0, 1) or a part left empty.
    """
    ids = np.asarray(ids)
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}.")
    cut = int(round(len(ids) * (1.0 - valid_fraction)))
    if cut < 2 or len(ids) - cut < 2:
        raise ValueError(
            f"{len(ids)} ids are too few to split with valid_fraction="
            f"{valid_fraction}: each part needs at least 2."
        )
    return ids[:cut], ids[cut:]


def _check_context(n: int, context: int) -> None:
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive int, got {context!r}.")
    if n < context + 1:
        raise ValueError(
            f"{n} ids are too few for one window of context {context} (need "
            f"{context + 1}); shorten the context or use more text."
        )


def char_windows(
    ids, context: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All next-character windows of an id sequence, ``stride`` apart.

        x[k] = ids[s_k : s_k + T],   y[k] = ids[s_k + 1 : s_k + T + 1],
        s_k = k·stride

    Args:
      ids: int ids ``(n,)``.
      context: T, the window length.
      stride: distance between window starts (default ``context``:
        non-overlapping windows, every id predicted once).

    Returns:
      ``(x, y)``, int32 ``(k, T)`` each.
    """
    ids = np.asarray(ids, np.int32)
    _check_context(len(ids), context)
    stride = context if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}.")
    starts = np.arange(0, len(ids) - context, stride)
    offsets = starts[:, None] + np.arange(context)[None, :]
    return ids[offsets], ids[offsets + 1]


def random_char_windows(
    key: jax.Array, ids: jax.Array, context: int, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """A batch of next-character windows at uniformly random starts (jittable).

    Args:
      key: PRNG key.
      ids: int ids ``(n,)`` with n ≥ T + 1 (a device array, for use under jit).
      context: T, the window length (static).
      batch_size: m, windows per batch (static).

    Returns:
      ``(x, y)``: ``(m, T)`` each, with ``y`` one position ahead of ``x``.
    """
    n = ids.shape[0]
    _check_context(n, context)
    starts = jax.random.randint(key, (batch_size,), 0, n - context)
    offsets = starts[:, None] + jnp.arange(context)[None, :]
    return ids[offsets], ids[offsets + 1]
