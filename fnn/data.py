"""Data handling: input preprocessing, train/dev/test splits and mini-batches.

Everything here is a pure function of its arguments; randomness comes only from
the ``key`` passed in.

Preprocessing ([Neacșu & Vasilescu, Standardization]; [Deep Learning 2020, Normalizing
inputs]) follows one pattern for all three transforms::

    scaler = fit_standardize(X_train)        # or fit_min_max, fit_zca
    X_train_n = scaler.transform(X_train)
    X_dev_n = scaler.transform(X_dev)        # statistics of the training split
    X_back = scaler.inverse_transform(X_dev_n)

A fitted scaler is a NamedTuple of arrays (a pytree), so it can be passed into a
jitted function; ``transform`` and ``inverse_transform`` are jittable. Invariants:

  * the statistics depend on the training split only;
  * ``scaler.inverse_transform(scaler.transform(x)) == x`` up to rounding;
  * inputs are batch-first, ``(m, n)`` in and ``(m, n)`` out.

Randomness: one root key drives every random choice of a run, so a run is
reproducible from its seed::

    root = jax.random.key(seed)
    key_init, key_split, key_shuffle, key_dropout = jax.random.split(root, 4)
    # epoch e uses a fresh permutation:
    idx, mask = epoch_batches(jax.random.fold_in(key_shuffle, e), n, batch_size)

``run_keys(root)`` returns these four keys by name and ``epoch_key`` is the
``fold_in`` step.
"""

import math
import operator
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import losses as _losses

__all__ = [
    "DEFAULT_SPLIT_RATIOS_LARGE",
    "DEFAULT_SPLIT_RATIOS_SMALL",
    "MinMaxScaler",
    "RunKeys",
    "Split",
    "Standardizer",
    "ZCAWhitener",
    "check_examples",
    "default_split_ratios",
    "epoch_batches",
    "epoch_key",
    "fit_min_max",
    "fit_standardize",
    "fit_zca",
    "iterate_minibatches",
    "num_batches",
    "run_keys",
    "split_indices",
    "train_dev_test_split",
]


# --------------------------------------------------------------------------------
# Validation of examples on the host
# --------------------------------------------------------------------------------

# Elements examined at a time, so that a large (memory-mapped) array is read once,
# block by block, and no temporary larger than a block is ever made.
_CHUNK_ELEMENTS = 1 << 22


def _format_value(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(value)


def _first_bad(A: np.ndarray, is_bad) -> tuple[int, tuple[int, ...], object] | None:
    """The first row of ``A`` ``(m, ...)`` where ``is_bad`` (elementwise, vectorised)
    holds: ``(row, index within the row, value)``, or ``None``.

    ``A`` is read in blocks of rows (a memmap is never copied whole)."""
    m = A.shape[0]
    row_size = max(math.prod(A.shape[1:]), 1)
    step = max(_CHUNK_ELEMENTS // row_size, 1)
    for start in range(0, m, step):
        block = np.asarray(A[start : start + step])
        bad = np.asarray(is_bad(block)).reshape(block.shape[0], -1)
        rows = bad.any(axis=1)
        if rows.any():
            i = int(np.argmax(rows))
            j = int(np.argmax(bad[i]))
            index = np.unravel_index(j, block.shape[1:]) if block.ndim > 1 else ()
            value = block[i][index] if index else block[i]
            return start + i, tuple(int(t) for t in index), value
    return None


def _where(row: int, index: tuple[int, ...], arg: str, name: str, value) -> str:
    """``row 17 of X in the dev set holds NaN (column 3)``."""
    at = ""
    if len(index) == 1:
        at = f" (column {index[0]})"
    elif index:
        at = f" (position {index} within the row)"
    return f"row {row} of {arg} in the {name} holds {_format_value(value)}{at}"


def _as_host(A, arg: str, name: str) -> np.ndarray:
    """``A`` as a numpy array (no copy for numpy arrays and memmaps), numeric, with a
    batch axis."""
    A = np.asarray(A)
    if not (jnp.issubdtype(A.dtype, jnp.number) or A.dtype == np.bool_):
        raise ValueError(
            f"{arg} in the {name} has dtype {A.dtype}; pass a numeric array "
            f"(e.g. np.asarray({arg}, dtype=np.float32))."
        )
    if A.ndim == 0:
        raise ValueError(
            f"{arg} in the {name} is a scalar; pass an array with one row per "
            "example (batch first)."
        )
    return A


def _check_finite(A: np.ndarray, arg: str, name: str, what: str) -> None:
    if not jnp.issubdtype(A.dtype, jnp.inexact):
        return  # integers and booleans are always finite
    bad = _first_bad(A, lambda b: ~np.isfinite(b))
    if bad is not None:
        row, index, value = bad
        raise ValueError(
            f"{_where(row, index, arg, name, value)}; "
            f"{what} must be finite: remove or impute the non-finite values "
            "before passing the data (np.isfinite finds them)."
        )


def _check_range(A: np.ndarray, arg: str, name: str, lo, hi, what: str) -> None:
    """Every value of ``A`` in the closed interval ``[lo, hi]`` (NaN fails too)."""
    bad = _first_bad(A, lambda b: ~((b >= lo) & (b <= hi)))
    if bad is not None:
        row, index, value = bad
        raise ValueError(
            f"{_where(row, index, arg, name, value)}, outside [{lo}, {hi}]; {what}."
        )


def _expect_rows(y: np.ndarray, m: int, k: int | None, loss_name: str, name: str):
    """``y`` of shape ``(m, k)``, or ``(m,)`` when ``k == 1`` (``k`` None: any
    width)."""
    ok = y.ndim == 2 and (k is None or y.shape[1] == k)
    ok = ok or (y.ndim == 1 and k in (None, 1))
    if not ok:
        if k is None:
            expected = "(m, k) or (m,)"
        else:
            expected = f"({m}, {k})" + (f" or ({m},)" if k == 1 else "")
        raise ValueError(
            f"y in the {name} has shape {y.shape}, but {loss_name} expects targets "
            f"of shape {expected} for a network with "
            f"{'its' if k is None else k} output(s); reshape y or change the "
            "network's output width."
        )


def check_examples(
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    loss: "str | _losses.Loss | None" = None,
    n_outputs: int | None = None,
    name: str = "training set",
) -> None:
    """Check a data set on the host, once, where it enters training or evaluation.

    The compiled training step trusts its data (it must stay cheap, and a traced
    label cannot raise): an out-of-range class label there becomes an all-zero
    one-hot row and a NaN input can turn into a finite loss. This function finds
    such mistakes up front, in vectorised numpy (read block by block, so a numpy
    memmap is never copied whole), and names the set, the argument, the first bad
    row and value, and what to do.

    Checks:
      * ``X`` has at least one row and only finite values (no NaN or ±inf);
      * ``y`` (when given) has as many rows as ``X``;
      * cross-entropy (``loss.fused_output == "softmax"``): integer labels
        ``(m,)`` in ``[0, n_outputs)``, or one-hot / probability rows
        ``(m, n_outputs)`` with values in ``[0, 1]``; a 1-D float vector is
        refused (labels must be integers: ``y.astype(int)``);
      * binary cross-entropy (``"sigmoid"``): targets in ``[0, 1]`` of shape
        ``(m, n_outputs)``, or ``(m,)`` for one output;
      * any other loss (and ``loss=None``): finite targets of shape
        ``(m, n_outputs)``, or ``(m,)`` for one output.

    Args:
      X: ``(m, ...)`` inputs (numpy array, memmap, jax array or nested lists).
      y: ``(m,)`` or ``(m, k)`` targets, or ``None`` to check ``X`` only.
      loss: a loss name or :class:`fnn.losses.Loss`; ``None`` skips the
        loss-specific label checks.
      n_outputs: the network's output width ``k``; ``None`` skips the width and
        label-range-above checks.
      name: what the set is called in messages (``"training set"``,
        ``"dev set"``, ``"evaluation set"``).

    Raises:
      ValueError: the first problem found, e.g. ``row 17 of X in the dev set
        holds NaN; ...``.
    """
    X = _as_host(X, "X", name)
    m = X.shape[0]
    if m == 0:
        raise ValueError(
            f"the {name} is empty: X has shape {X.shape} (0 rows); pass at least "
            "one example."
        )
    if y is not None:
        y = _as_host(y, "y", name)
        if y.shape[0] != m:
            raise ValueError(
                f"X has {m} rows but y has {y.shape[0]} in the {name} (X.shape="
                f"{X.shape}, y.shape={y.shape}); pass one target per example, "
                "batch first."
            )
    if n_outputs is not None:
        n_outputs = operator.index(n_outputs)
    _check_finite(X, "X", name, "inputs")
    if y is None:
        return
    loss_obj = None if loss is None else _losses.get(loss)
    kind = None if loss_obj is None else loss_obj.fused_output
    loss_name = "the loss" if loss_obj is None else loss_obj.name
    k = n_outputs
    if kind == "softmax":
        if jnp.issubdtype(y.dtype, jnp.integer):
            # Class labels (m,), or token ids (m, T) for logits over sequences.
            sequence = loss_obj.name == "sequence_cross_entropy"
            if y.ndim == (2 if sequence else 1):
                hi = None if k is None else k - 1
                bad = _first_bad(
                    y, lambda b: (b < 0) if hi is None else ((b < 0) | (b > hi))
                )
                if bad is not None:
                    row, _, value = bad
                    span = "[0, k)" if k is None else f"[0, {k}) for {k} outputs"
                    raise ValueError(
                        f"row {row} of y in the {name} holds the label "
                        f"{_format_value(value)}, outside {span}; class labels of "
                        f"{loss_name} must be 0 ... k-1 for a network with k "
                        "outputs: fix the labels or widen the output layer."
                    )
                return
        elif y.ndim == 1:
            raise ValueError(
                f"y in the {name} is a 1-D vector of dtype {y.dtype}; "
                f"{loss_name} needs integer class labels (m,) (e.g. y.astype(int)) "
                "or one-hot / probability rows (m, k)."
            )
        if y.ndim != 2 or (k is not None and y.shape[1] != k):
            expected = "(m, k)" if k is None else f"({m}, {k})"
            raise ValueError(
                f"y in the {name} has shape {y.shape}, but {loss_name} expects "
                f"integer labels ({m},) or one-hot / probability rows {expected}"
                f"{'' if k is None else f' for {k} outputs'}; reshape y or change "
                "the network's output width."
            )
        _check_range(
            y,
            "y",
            name,
            0,
            1,
            f"{loss_name} targets given as rows must be one-hot or probability rows",
        )
        return
    _expect_rows(y, m, k, loss_name, name)
    if kind == "sigmoid":
        _check_range(
            y,
            "y",
            name,
            0,
            1,
            f"{loss_name} targets are probabilities: use labels 0/1 (or values "
            "in between)",
        )
        return
    _check_finite(y, "y", name, "targets")


# --------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------


def _paired_rows(X: ArrayLike, y: ArrayLike, min_rows: int = 0):
    """``(X, y)`` as arrays, checked to be examples ``(m, ...)`` and their targets
    ``(m, ...)``: the same number of rows (batch first), at least ``min_rows``.

    Raises:
      ValueError: naming both shapes when the rows differ or are too few.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    m = X.shape[0] if X.ndim else -1
    if m < min_rows or y.shape[:1] != (m,):
        which = "positive " if min_rows > 0 else ""
        raise ValueError(
            f"X and y must have the same {which}number of rows (batch first); "
            f"got X.shape={X.shape}, y.shape={y.shape}"
        )
    return X, y


def _as_matrix(X: ArrayLike, name: str, fit: str, min_rows: int = 1) -> jax.Array:
    """``X`` as a floating ``(m, n)`` array; integers become float32. A concrete
    ``X`` is checked to be finite (``fit`` names the caller in the message)."""
    if not isinstance(X, jax.core.Tracer):  # under jit the statistics are not checked
        X_host = np.asarray(X)
        if X_host.ndim == 2 and jnp.issubdtype(X_host.dtype, jnp.inexact):
            bad = _first_bad(X_host, lambda b: ~np.isfinite(b))
            if bad is not None:
                row, (col,), value = bad
                raise ValueError(
                    f"{fit}: row {row} of {name} holds {_format_value(value)} "
                    f"(column {col}), which would make the statistics of column "
                    f"{col} non-finite; remove or impute the non-finite values first."
                )
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (m, n) (batch first); "
            f"got shape {X.shape}"
        )
    if X.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} row(s) to fit statistics; "
            f"got shape {X.shape}"
        )
    if not jnp.issubdtype(X.dtype, jnp.inexact):
        X = X.astype(jnp.float32)
    return X


def _prepare(x: ArrayLike, n: int, stats_dtype: jnp.dtype, where: str) -> jax.Array:
    """``x`` checked to end in ``n`` features and cast to a floating dtype.

    A floating ``x`` keeps its dtype (the statistics are cast to it); any other
    ``x`` takes the statistics' dtype.
    """
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(
            f"{where}: x must have shape (m, {n}) like the data the scaler was "
            f"fitted on; got shape {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(stats_dtype)
    return x


class Standardizer(NamedTuple):
    """Z-score statistics fitted by ``fit_standardize``.

    Attributes:
      mean: ``(n,)`` per-feature mean ``mu`` of the training split.
      scale: ``(n,)`` divisor ``sigma + eps`` (``1`` for a constant feature).
    """

    mean: jax.Array
    scale: jax.Array

    def transform(self, x: ArrayLike) -> jax.Array:
        """``x' = (x - mu) / (sigma + eps)``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(x, self.mean.shape[0], self.mean.dtype, "Standardizer.transform")
        return (x - self.mean.astype(x.dtype)) / self.scale.astype(x.dtype)

    def inverse_transform(self, x: ArrayLike) -> jax.Array:
        """``x = x' * (sigma + eps) + mu``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(
            x, self.mean.shape[0], self.mean.dtype, "Standardizer.inverse_transform"
        )
        return x * self.scale.astype(x.dtype) + self.mean.astype(x.dtype)


def fit_standardize(X_train: ArrayLike, eps: float = 1e-8) -> Standardizer:
    """Fit z-score scaling on the training split.

    .. math::

        x' = (x - \\mu) / (\\sigma + \\epsilon), \\quad
        \\mu = \\frac{1}{m}\\sum_i x^{(i)}, \\quad
        \\sigma = \\sqrt{\\frac{1}{m}\\sum_i (x^{(i)} - \\mu)^2}

    ``sigma`` is the population standard deviation (divisor ``m``, as in
    [Deep Learning 2020, Normalizing inputs]). The article prints ``sigma`` without
    the square root, i.e. the variance; that is a typo: dividing by the variance
    does not give unit variance, and [Neacșu & Vasilescu, Standardization] and
    common usage divide by the standard deviation, as done
    here. A feature that is constant on the training split (``sigma == 0``) gets divisor
    ``1`` instead of ``eps``, so it maps to ``x - mu`` rather than being blown up by
    ``1 / eps`` on the other splits.

    Args:
      X_train: ``(m, n)`` training inputs, ``m >= 1``; integer inputs are
        treated as float32. NaN or ±inf raises a ``ValueError``
        naming the first row and its column (checked when not traced).
      eps: small constant ``epsilon >= 0`` added to ``sigma``.

    Returns:
      A ``Standardizer`` with ``mean`` and ``scale`` of shape ``(n,)`` in the
      dtype of ``X_train`` (float32 for integer input); its ``transform`` and
      ``inverse_transform`` map ``(m, n)`` to ``(m, n)``.

    References:
      [Neacșu & Vasilescu, Standardization: Z-score scaling];
      [Deep Learning 2020, Normalizing inputs].
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    X = _as_matrix(X_train, "X_train", "fit_standardize")
    mu = jnp.mean(X, axis=0)
    sigma = jnp.sqrt(jnp.mean(jnp.square(X - mu), axis=0))
    scale = jnp.where(sigma > 0, sigma + jnp.asarray(eps, X.dtype), 1).astype(X.dtype)
    return Standardizer(mean=mu, scale=scale)


class MinMaxScaler(NamedTuple):
    """Min-max statistics fitted by ``fit_min_max``.

    Attributes:
      minimum: ``(n,)`` per-feature minimum of the training split.
      range: ``(n,)`` ``max - min`` (``1`` for a constant feature).
    """

    minimum: jax.Array
    range: jax.Array

    def transform(self, x: ArrayLike) -> jax.Array:
        """``x' = (x - min) / (max - min)``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(
            x, self.minimum.shape[0], self.minimum.dtype, "MinMaxScaler.transform"
        )
        return (x - self.minimum.astype(x.dtype)) / self.range.astype(x.dtype)

    def inverse_transform(self, x: ArrayLike) -> jax.Array:
        """``x = x' * (max - min) + min``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(
            x,
            self.minimum.shape[0],
            self.minimum.dtype,
            "MinMaxScaler.inverse_transform",
        )
        return x * self.range.astype(x.dtype) + self.minimum.astype(x.dtype)


def fit_min_max(X_train: ArrayLike) -> MinMaxScaler:
    """Fit min-max scaling to ``[0, 1]`` on the training split.

    .. math::

        x' = \\frac{x - \\min(x)}{\\max(x) - \\min(x)}

    with the minimum and maximum taken per feature over the training split; other
    splits may fall outside ``[0, 1]``. A feature that is constant on the
    training split (``max == min``) gets divisor ``1`` (no division by zero): it
    maps to ``x - min``, i.e. ``0`` on the training split.

    Args:
      X_train: ``(m, n)`` training inputs, ``m >= 1``; integer inputs are
        treated as float32. NaN or ±inf raises a ``ValueError``
        naming the first row and its column (checked when not traced).

    Returns:
      A ``MinMaxScaler`` with ``minimum`` and ``range`` of shape ``(n,)``; its
      ``transform`` and ``inverse_transform`` map ``(m, n)`` to ``(m, n)``.

    References:
      [Neacșu & Vasilescu, Standardization: Min-Max scaling].
    """
    X = _as_matrix(X_train, "X_train", "fit_min_max")
    lo = jnp.min(X, axis=0)
    hi = jnp.max(X, axis=0)
    rng = jnp.where(hi > lo, hi - lo, 1).astype(X.dtype)
    return MinMaxScaler(minimum=lo, range=rng)


class ZCAWhitener(NamedTuple):
    """ZCA statistics fitted by ``fit_zca``.

    Attributes:
      mean: ``(n,)`` per-feature mean of the training split.
      W: ``(n, n)`` symmetric whitening matrix ``(Cov + eps I)^(-1/2)``.
      W_inv: ``(n, n)`` its inverse ``(Cov + eps I)^(1/2)``.
    """

    mean: jax.Array
    W: jax.Array
    W_inv: jax.Array

    def transform(self, x: ArrayLike) -> jax.Array:
        """``x' = (x - mu) W``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(x, self.mean.shape[0], self.mean.dtype, "ZCAWhitener.transform")
        return (x - self.mean.astype(x.dtype)) @ self.W.astype(x.dtype)

    def inverse_transform(self, x: ArrayLike) -> jax.Array:
        """``x = x' W^(-1) + mu``: ``(m, n)`` in, ``(m, n)`` out."""
        x = _prepare(
            x, self.mean.shape[0], self.mean.dtype, "ZCAWhitener.inverse_transform"
        )
        return x @ self.W_inv.astype(x.dtype) + self.mean.astype(x.dtype)


def fit_zca(X_train: ArrayLike, eps: float = 1e-5) -> ZCAWhitener:
    """Fit ZCA whitening on the training split.

    .. math::

        X' = (X - \\mu) W, \\quad W = (C + \\epsilon I)^{-1/2}, \\quad
        C = \\frac{1}{m - 1} (X - \\mu)^\\top (X - \\mu)

    computed from the eigendecomposition ``C = U diag(lambda) U^T`` as
    ``W = U diag((lambda + eps)^(-1/2)) U^T`` (symmetric, so the batch-first
    ``(X - mu) W`` equals the source's column form ``W X``). With ``eps = 0`` and a
    full-rank ``C`` the whitened training data has identity covariance; ZCA is
    the whitening closest to the original inputs (no rotation away from them).

    [Neacșu & Vasilescu] writes ``W = 1/sqrt(n-1) (X X^T)^(-1/2)``. With
    ``C = X X^T/(n-1)`` the identity-covariance whitening is
    ``C^(-1/2) = sqrt(n-1) (X X^T)^(-1/2)``: the source's factor is inverted (its
    whitened data would have covariance
    ``I / (n-1)^2``). fnn uses the covariance form above, which also makes ``W``
    independent of the sample size, and adds the usual ``eps I`` regulariser so
    that constant or collinear features (eigenvalue ``0``) stay finite.

    Unlike ``fit_standardize`` and ``fit_min_max``, this fit checks the
    eigenvalues eagerly and cannot run under ``jit`` (its ``transform`` can).

    Args:
      X_train: ``(m, n)`` training inputs, ``m >= 2``; integer inputs are
        treated as float32. NaN or ±inf raises a ``ValueError``
        naming the first row and its column (checked when not traced).
      eps: regulariser ``epsilon >= 0`` added to the eigenvalues, in squared input
        units; it must be ``> 0`` when ``C`` is singular.

    Returns:
      A ``ZCAWhitener`` with ``mean`` ``(n,)``, ``W`` and ``W_inv`` ``(n, n)``;
      its ``transform`` and ``inverse_transform`` map ``(m, n)`` to ``(m, n)``.

    References:
      [Neacșu & Vasilescu, Standardization: ZCA whitening].
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    X = _as_matrix(X_train, "X_train", "fit_zca", min_rows=2)
    m = X.shape[0]
    mu = jnp.mean(X, axis=0)
    Xc = X - mu
    C = (Xc.T @ Xc) / jnp.asarray(m - 1, X.dtype)
    lam, U = jnp.linalg.eigh(C)
    lam = jnp.maximum(lam, 0) + jnp.asarray(eps, X.dtype)
    if not bool(jnp.all(lam > 0)):
        raise ValueError(
            "fit_zca: the covariance of X_train is singular (a constant or "
            "collinear feature); pass eps > 0"
        )
    root = jnp.sqrt(lam)
    W = (U / root) @ U.T
    W_inv = (U * root) @ U.T
    return ZCAWhitener(mean=mu, W=W, W_inv=W_inv)


# --------------------------------------------------------------------------------
# Train / dev / test split
# --------------------------------------------------------------------------------

DEFAULT_SPLIT_RATIOS_SMALL = (0.6, 0.2, 0.2)
"""Train/dev/test ratios for ``m <= 10^4`` ([Deep Learning 2020, Definition])."""

DEFAULT_SPLIT_RATIOS_LARGE = (0.98, 0.01, 0.01)
"""Train/dev/test ratios for ``m >= 10^6`` (98/1/1).

[Deep Learning 2020, Data Preprocessing]'s table says 96/2/2.
"""


def default_split_ratios(m: int) -> tuple[float, float, float]:
    """Train/dev/test ratios for a data set of ``m`` examples.

    .. math::

        r_{dev} = r_{test} = \\begin{cases}
            0.2 & m \\le 10^4 \\\\
            0.2 + (0.01 - 0.2)\\,(\\log_{10} m - 4) / 2 & 10^4 < m < 10^6 \\\\
            0.01 & m \\ge 10^6
        \\end{cases}, \\quad r_{train} = 1 - 2 r_{dev}

    i.e. 60/20/20 up to ``10^4`` examples, 98/1/1 from ``10^6`` on, and a linear
    interpolation in ``log10(m)`` between (e.g. 79/10.5/10.5 at ``10^5``).
    [Deep Learning 2020, Data Preprocessing]'s table reads 96/2/2 at ``m = 10^6``;
    fnn follows the 98/1/1 rule of thumb for "around a million examples" that the
    project's specification asks for
    (a dev and a test set of ``10^4`` examples each are then large enough).

    Args:
      m: number of examples, ``m >= 1``.

    Returns:
      ``(r_train, r_dev, r_test)``, positive floats summing to 1.

    References:
      [Deep Learning 2020, Data Preprocessing] (table of repartitions).
    """
    m = operator.index(m)
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    t = min(max((math.log10(m) - 4.0) / 2.0, 0.0), 1.0)
    r = 0.2 + (0.01 - 0.2) * t
    return (1.0 - 2.0 * r, r, r)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    try:
        r = tuple(float(v) for v in ratios)
    except TypeError as e:
        raise ValueError(f"ratios must be three numbers; got {ratios!r}") from e
    if len(r) != 3:
        raise ValueError(f"ratios must be (train, dev, test); got {len(r)} values")
    if not all(v > 0 for v in r):
        raise ValueError(f"ratios must all be > 0; got {r}")
    if abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1; got {r} (sum {sum(r)})")
    return r


def _allocate(m: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``m`` into three counts proportional to ``ratios``.

    Largest-remainder rounding: ``floor(r_k m)`` each, then the leftover examples
    go one each to the largest fractional parts (ties: train, dev, test order).
    """
    exact = [r * m for r in ratios]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(3), key=lambda k: -(exact[k] - counts[k]))
    for k in order[: m - sum(counts)]:
        counts[k] += 1
    return counts


def split_indices(
    key: jax.Array,
    m: int,
    ratios: Sequence[float] | None = None,
    labels: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random disjoint train/dev/test index sets covering ``range(m)``.

    Counts use largest-remainder rounding of ``r_k m``. With ``labels``, the split
    is stratified: each class is split on its own with the same ratios, so every
    split keeps the class proportions up to one example per class and split.

    Args:
      key: PRNG key.
      m: number of examples.
      ratios: ``(r_train, r_dev, r_test)``, each ``> 0``, summing to 1; default
        ``default_split_ratios(m)``.
      labels: optional ``(m,)`` integer class labels for a stratified split.

    Returns:
      ``(train_idx, dev_idx, test_idx)``, int64 numpy arrays, each in random
      order, disjoint, together a permutation of ``range(m)``.

    References:
      [Deep Learning 2020, Data Preprocessing].
    """
    m = operator.index(m)
    r = default_split_ratios(m) if ratios is None else _check_ratios(ratios)
    key_perm, key_shuffle = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(key_perm, m), dtype=np.int64)
    if labels is None:
        c = _allocate(m, r)
        parts = [perm[: c[0]], perm[c[0] : c[0] + c[1]], perm[c[0] + c[1] :]]
    else:
        labels = np.asarray(labels)
        if labels.shape != (m,):
            raise ValueError(
                f"labels must have shape ({m},) for a stratified split; "
                f"got {labels.shape}"
            )
        permuted = labels[perm]
        parts_per_class: list[list[np.ndarray]] = [[], [], []]
        for cls in np.unique(labels):
            members = perm[permuted == cls]
            c = _allocate(members.size, r)
            bounds = [0, c[0], c[0] + c[1], members.size]
            for k in range(3):
                parts_per_class[k].append(members[bounds[k] : bounds[k + 1]])
        keys = jax.random.split(key_shuffle, 3)
        parts = []
        for k in range(3):
            p = np.concatenate(parts_per_class[k])
            order = np.asarray(jax.random.permutation(keys[k], p.size))
            parts.append(p[order])
    names = ("train", "dev", "test")
    for name, p in zip(names, parts, strict=True):
        if p.size == 0:
            raise ValueError(
                f"ratios {r} leave the {name} split empty for m={m} examples; "
                "use more examples or larger ratios"
            )
    return parts[0], parts[1], parts[2]


class Split(NamedTuple):
    """A train/dev/test split: inputs ``(m_k, ...)`` and targets ``(m_k, ...)``."""

    X_train: jax.Array
    y_train: jax.Array
    X_dev: jax.Array
    y_dev: jax.Array
    X_test: jax.Array
    y_test: jax.Array


def train_dev_test_split(
    key: jax.Array,
    X: ArrayLike,
    y: ArrayLike,
    ratios: Sequence[float] | None = None,
    stratify: bool = False,
) -> Split:
    """Shuffle and split ``(X, y)`` into train, dev and test sets.

    Train is used to fit the parameters (and the preprocessing statistics), dev
    to tune the algorithm, test to estimate the final error. The counts are
    ``round(r_k m)`` (largest remainder, so they sum to ``m``); with
    ``stratify=True`` each class of ``y`` is split on its own, so each split keeps
    the class proportions (up to one example per class).

    Args:
      key: PRNG key (``key_split`` of ``run_keys``).
      X: ``(m, ...)`` inputs.
      y: ``(m, ...)`` targets; integer class labels ``(m,)`` for ``stratify``.
      ratios: ``(r_train, r_dev, r_test)``, each ``> 0``, summing to 1; default
        ``default_split_ratios(m)`` (60/20/20 up to ``10^4`` examples, 98/1/1
        from ``10^6``).
      stratify: keep the class proportions of ``y`` in every split.

    Returns:
      ``Split(X_train, y_train, X_dev, y_dev, X_test, y_test)``, jax arrays with
      the dtypes of ``X`` and ``y``; the three parts are disjoint and cover all
      ``m`` examples.

    References:
      [Deep Learning 2020, Data Preprocessing].
    """
    X, y = _paired_rows(X, y)
    if stratify and (y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer)):
        raise ValueError(
            "stratify=True needs integer class labels y of shape (m,); got "
            f"shape {y.shape}, dtype {y.dtype}"
        )
    labels = np.asarray(y) if stratify else None
    tr, dv, te = split_indices(key, X.shape[0], ratios, labels)
    return Split(X[tr], y[tr], X[dv], y[dv], X[te], y[te])


# --------------------------------------------------------------------------------
# Mini-batches and keys
# --------------------------------------------------------------------------------


def _static_int(value: object, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError as e:
        raise TypeError(
            f"{name} must be a Python int (a static argument under jit); "
            f"got {type(value).__name__}"
        ) from e


def num_batches(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Mini-batches per epoch: ``ceil(n / batch_size)``, or ``floor`` when
    ``drop_remainder``."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_batches(
    key: jax.Array, n: int, batch_size: int, drop_remainder: bool = False
) -> tuple[jax.Array, jax.Array]:
    """One epoch of mini-batch indices, drawn at random without replacement.

    A fresh permutation ``pi`` of ``range(n)`` is cut into consecutive batches:
    batch ``b`` holds ``pi[b * batch_size : (b + 1) * batch_size]``. When
    ``batch_size`` does not divide ``n``:

    * ``drop_remainder=False`` (default): ``ceil(n / batch_size)`` batches; the
      last one is padded with indices of other examples of the epoch (valid,
      so gathering never goes out of range) and ``mask`` is ``False`` at the
      padding. Every example appears exactly once among the ``True`` entries.
      A ``batch_size`` larger than ``n`` is allowed: one padded batch.
    * ``drop_remainder=True``: ``floor(n / batch_size)`` full batches; the
      ``n mod batch_size`` examples left over (different ones each epoch) are
      skipped and ``mask`` is all ``True``. Needs ``batch_size <= n``.

    A loss over a masked batch should average over ``mask.sum()``, not
    ``batch_size``. Jittable with ``n``, ``batch_size`` and ``drop_remainder``
    static: ``jax.jit(epoch_batches, static_argnums=(1, 2, 3))``.

    Args:
      key: PRNG key for this epoch, e.g. ``epoch_key(key_shuffle, epoch)``.
      n: number of training examples, ``n >= 1``.
      batch_size: examples per batch, ``>= 1``.
      drop_remainder: drop the last incomplete batch instead of padding it.

    Returns:
      ``(idx, mask)``: ``idx`` int32 ``(num_batches, batch_size)`` and ``mask``
      bool ``(num_batches, batch_size)``.

    References:
      [Laurent, The stochastic gradient descent algorithm] (batches taken at
      random without replacement; an epoch is one pass over the examples).
    """
    n = _static_int(n, "n")
    batch_size = _static_int(batch_size, "batch_size")
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if drop_remainder and batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} > n={n} with drop_remainder=True would "
            "give no batch at all"
        )
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    nb = num_batches(n, batch_size, drop_remainder)
    total = nb * batch_size
    if total <= n:
        idx = perm[:total]
        mask = jnp.ones((total,), dtype=bool)
    else:
        pad = total - n
        filler = jnp.tile(perm, -(-pad // n))[:pad]
        idx = jnp.concatenate([perm, filler])
        mask = jnp.arange(total, dtype=jnp.int32) < n
    return idx.reshape(nb, batch_size), mask.reshape(nb, batch_size)


def iterate_minibatches(
    key: jax.Array,
    X: ArrayLike,
    y: ArrayLike,
    batch_size: int,
    drop_remainder: bool = False,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Yield one epoch of shuffled mini-batches ``(X_b, y_b)`` (for notebooks).

    The same order as ``epoch_batches(key, m, batch_size, drop_remainder)``, but
    the last batch is yielded short (no padding, no mask) when ``batch_size``
    does not divide ``m``, or skipped when ``drop_remainder``. For compiled
    training use ``epoch_batches`` (fixed shapes) instead.

    Args:
      key: PRNG key for this epoch.
      X: ``(m, ...)`` inputs.
      y: ``(m, ...)`` targets.
      batch_size: examples per batch, ``>= 1``.
      drop_remainder: skip the last incomplete batch.

    Yields:
      ``(X_b, y_b)`` with ``X_b`` ``(b, ...)`` and ``y_b`` ``(b, ...)``,
      ``b == batch_size`` except possibly for the last batch.

    References:
      [Laurent, The stochastic gradient descent algorithm].
    """
    X, y = _paired_rows(X, y)
    idx, mask = epoch_batches(key, X.shape[0], batch_size, drop_remainder)
    idx = np.asarray(idx)
    counts = np.asarray(mask).sum(axis=1)
    for b in range(idx.shape[0]):
        rows = idx[b, : counts[b]]
        yield X[rows], y[rows]


class RunKeys(NamedTuple):
    """The four keys of a run, split from one root key (see ``run_keys``)."""

    init: jax.Array
    split: jax.Array
    shuffle: jax.Array
    dropout: jax.Array


def run_keys(root: jax.Array) -> RunKeys:
    """Split a run's root key into its init, split, shuffle and dropout keys.

    ``key_init, key_split, key_shuffle, key_dropout = jax.random.split(root, 4)``,
    named; every random choice of a run derives from ``root``, so the seed alone
    reproduces the run. Per-epoch (and per-step) keys come from
    ``jax.random.fold_in`` (see ``epoch_key``), which needs no key state.

    Args:
      root: the root PRNG key, e.g. ``jax.random.key(seed)``.

    Returns:
      ``RunKeys(init, split, shuffle, dropout)``.
    """
    k = jax.random.split(root, 4)
    return RunKeys(init=k[0], split=k[1], shuffle=k[2], dropout=k[3])


def epoch_key(key: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key of epoch ``epoch``: ``jax.random.fold_in(key, epoch)``.

    Different epochs get independent keys, the same epoch always the same key,
    so a run resumed at epoch ``e`` shuffles exactly as the uninterrupted run.
    """
    return jax.random.fold_in(key, epoch)
