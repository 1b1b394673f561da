"""Radial basis function networks: Gaussian units, k-means++ centres, 2- and
3-step learning.

The network ([Neacșu & Vasilescu, Radial Basis Function Nets]), for x in R^d:

    φ(x) = (1, φ_1(x), ..., φ_N(x)),   φ_j(x) = exp(−‖x − μ_j‖² / (2σ_j²))
    y = g(wᵀ φ(x))

fnn writes it as two blocks, ``[RBF(N), Dense(n_out)]``: the :func:`RBF` block
gives the N Gaussian features and the dense layer's bias ``b`` is the weight of
the constant feature 1 ([Neacșu & Vasilescu]'s w_0). The transfer function g is the
identity for regression (mse) and the softmax fused into the cross-entropy for
classification.

Learning ([Neacșu & Vasilescu, Learning mechanism]):
  * 2-step (:func:`fit_2step`): (1) centres μ by k-means++ seeding plus Lloyd
    iterations, widths σ by a heuristic (:func:`widths`); (2) output weights by
    linear least squares on [1, Φ] (one-hot targets for classification).
  * 3-step (:func:`fit_3step`): (3) then μ, σ and w all together by gradient
    descent on the loss, the gradients from fnn's manual backprop
    (:func:`fnn.nn.loss_and_grad`), i.e. the RBF block's hand-written backward.

The widths are stored as ``log_sigma`` so that gradient descent keeps σ > 0.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import nn
from . import optim as _optim
from .nn._block import Block, ShapeError, stateless

__all__ = [
    "RBF",
    "RBFFit",
    "fit_2step",
    "fit_3step",
    "kmeans",
    "kmeans_pp",
    "least_squares_weights",
    "network",
    "train",
    "widths",
]


# --- the RBF layer ----------------------------------------------------------------
def RBF(n_centres: int) -> Block:
    """A layer of Gaussian radial basis units.

    Forward, with D_ij = ‖x_i − μ_j‖² and σ_j = exp(s_j):

        Φ_ij = exp(−D_ij / (2σ_j²))                              (m, N)

    Backward, with G_ij = dΦ_ij · Φ_ij · (−1/(2σ_j²)) = ∂J/∂D_ij:

        dx_i  = 2 Σ_j G_ij (x_i − μ_j)                          (m, d)
        dμ_j  = −2 Σ_i G_ij (x_i − μ_j)                         (N, d)
        ds_j  = Σ_i dΦ_ij Φ_ij D_ij / σ_j²                      (N,)
                (∂Φ/∂σ = Φ·D/σ³ and ∂σ/∂s = σ)

    Args:
      n_centres: N, the number of Gaussian units.

    Returns:
      A :class:`~fnn.nn.Block` with params ``{"mu": (N, d), "log_sigma": (N,)}``
      mapping ``(m, d)`` to ``(m, N)``. ``init`` draws μ ~ N(0, 1) and σ = 1; the
      2-step fit replaces both (:func:`fit_2step`).

    References: [Neacșu & Vasilescu, Radial Basis Function Nets].
    """
    if not isinstance(n_centres, int) or n_centres < 1:
        raise ValueError(f"RBF n_centres must be a positive int, got {n_centres!r}.")

    def init(key, in_shape, dtype):
        if len(in_shape) != 1:
            raise ShapeError(f"RBF expects flat inputs (d,), got {in_shape}")
        params = {
            "mu": jax.random.normal(key, (n_centres, in_shape[0]), dtype),
            "log_sigma": jnp.zeros((n_centres,), dtype),
        }
        return params, (n_centres,)

    def forward(params, x):
        mu, log_sigma = params["mu"], params["log_sigma"]
        if x.ndim != 2 or x.shape[1] != mu.shape[1]:
            raise ShapeError(f"expected input (m, {mu.shape[1]}), got {x.shape}")
        diff = x[:, None, :] - mu[None, :, :]  # (m, N, d)
        D = jnp.sum(diff * diff, axis=-1)
        inv_var = jnp.exp(-2 * log_sigma)  # 1/σ²
        Phi = jnp.exp(-0.5 * D * inv_var)
        return Phi, (diff, D, Phi)

    def backward(params, cache, dPhi):
        diff, D, Phi = cache
        inv_var = jnp.exp(-2 * params["log_sigma"])
        G = -0.5 * dPhi * Phi * inv_var  # ∂J/∂D
        dx = 2 * jnp.einsum("ij,ijk->ik", G, diff)
        dmu = -2 * jnp.einsum("ij,ijk->jk", G, diff)
        dlog_sigma = jnp.sum(dPhi * Phi * D, axis=0) * inv_var
        return {"mu": dmu, "log_sigma": dlog_sigma}, dx

    return stateless(f"RBF({n_centres})", init, forward, backward)


def network(n_centres: int, n_out: int) -> list[Block]:
    """The RBF network ``[RBF(n_centres), Dense(n_out)]`` (identity output; the
    dense bias is the weight of the constant feature 1)."""
    return [RBF(n_centres), nn.Dense(n_out, W_init="zeros")]


# --- step 1: centres and widths ----------------------------------------------------
def _sq_dists(X, C):
    diff = X[:, None, :] - C[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def _check_X(X, k=None):
    X = jnp.asarray(X)
    if X.ndim != 2 or not jnp.issubdtype(X.dtype, jnp.floating):
        raise ValueError(f"X must be a float array (m, d), got {X.dtype} {X.shape}.")
    if k is not None and (not isinstance(k, int) or not 1 <= k <= X.shape[0]):
        raise ValueError(
            f"the number of centres must be an int in [1, m = {X.shape[0]}], got {k!r}."
        )
    return X


def kmeans_pp(key: jax.Array, X: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding: k centres drawn among the rows of X.

    The first centre is a uniformly random row; each next one is row i with
    probability D(x_i)² / Σ_l D(x_l)², D(x) the distance from x to the nearest
    centre chosen so far. A row already chosen has D = 0 and is never drawn
    again, so the centres are distinct rows as long as X has at least k distinct
    rows (otherwise the surplus centres repeat row 0's draw; see ``Raises``).

    Warning: this is the plain k-means++ seeding of Arthur and Vassilvitskii
    (2007), one candidate per centre; scikit-learn's default is the greedy
    variant (2 + log k candidates, keeping the one that lowers the inertia
    most), so the two draw different centres from the same data.

    Args:
      key: PRNG key.
      X: data ``(m, d)``, float.
      k: number of centres, ``1 <= k <= m``.

    Returns:
      ``(k, d)`` centres, rows of X, in the dtype of X.

    Raises:
      ValueError: X not a float matrix, k out of range, or (when X is concrete)
        fewer than k distinct rows.

    References: [Neacșu & Vasilescu, Learning mechanism] (K-means++); Arthur &
    Vassilvitskii (2007).
    """
    X = _check_X(X, k)
    if not isinstance(X, jax.core.Tracer):
        n_distinct = len({row.tobytes() for row in jax.device_get(X)})
        if n_distinct < k:
            raise ValueError(f"X has {n_distinct} distinct rows, fewer than k = {k}.")
    m = X.shape[0]
    key, sub = jax.random.split(key)
    first = jax.random.randint(sub, (), 0, m, dtype=jnp.int32)
    idx = jnp.zeros((k,), jnp.int32).at[0].set(first)
    d2 = jnp.sum((X - X[first]) ** 2, axis=-1)

    def pick(j, carry):
        idx, d2 = carry
        logits = jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1)), -jnp.inf)
        i = jax.random.categorical(jax.random.fold_in(key, j), logits)
        d2 = jnp.minimum(d2, jnp.sum((X - X[i]) ** 2, axis=-1))
        return idx.at[j].set(i.astype(jnp.int32)), d2

    idx, _ = jax.lax.fori_loop(1, k, pick, (idx, d2))
    return X[idx]


def kmeans(
    key: jax.Array, X: jax.Array, k: int, n_iter: int = 20
) -> tuple[jax.Array, jax.Array]:
    """k-means: k-means++ seeding, then ``n_iter`` Lloyd iterations.

    Lloyd: assign each row to its nearest centre, c(i) = argmin_j ‖x_i − μ_j‖²,
    then move each centre to the mean of its rows; a centre without rows stays.

    Args:
      key: PRNG key (for the seeding).
      X: data ``(m, d)``.
      k: number of centres.
      n_iter: Lloyd iterations (>= 0).

    Returns:
      ``(centres (k, d), assignment (m,) int32)``.

    References: [Neacșu & Vasilescu, Learning mechanism] (vector quantization); Lloyd
    (1982).
    """
    X = _check_X(X, k)
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative int, got {n_iter!r}.")
    C = kmeans_pp(key, X, k)

    def lloyd(_, C):
        onehot = jax.nn.one_hot(jnp.argmin(_sq_dists(X, C), axis=1), k, dtype=X.dtype)
        counts = jnp.sum(onehot, axis=0)
        sums = onehot.T @ X
        safe = jnp.maximum(counts, jnp.ones((), X.dtype))
        return jnp.where(counts[:, None] > 0, sums / safe[:, None], C)

    C = jax.lax.fori_loop(0, n_iter, lloyd, C)
    return C, jnp.argmin(_sq_dists(X, C), axis=1).astype(jnp.int32)


def widths(centres: jax.Array, rule: str = "dmax", scale: float = 1.0) -> jax.Array:
    """Gaussian widths σ_j from the centres.

    * ``"dmax"``: one width for all units, σ = d_max / √(2N), d_max the largest
      distance between two centres (Haykin, "Neural Networks", §5.11): units
      neither too peaked nor too flat for N centres spread over d_max.
    * ``"nearest"``: σ_j = distance from μ_j to its nearest other centre.

    Both are multiplied by ``scale``. A width of 0 (coincident centres) is
    replaced by the smallest positive one (or 1 if there is none).

    Args:
      centres: ``(N, d)``.
      rule: ``"dmax"`` or ``"nearest"``.
      scale: positive multiplier.

    Returns:
      ``(N,)`` widths σ, dtype of ``centres``.
    """
    if rule not in ("dmax", "nearest"):
        raise ValueError(f"rule must be 'dmax' or 'nearest', got {rule!r}.")
    if not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}.")
    N = centres.shape[0]
    D = jnp.sqrt(_sq_dists(centres, centres))
    if rule == "dmax":
        sigma = jnp.full((N,), jnp.max(D) / jnp.sqrt(2.0 * N), centres.dtype)
    else:
        sigma = jnp.min(jnp.where(jnp.eye(N, dtype=bool), jnp.inf, D), axis=1)
        sigma = jnp.where(jnp.isfinite(sigma), sigma, 0)
    positive = jnp.where(sigma > 0, sigma, jnp.inf)
    fallback = jnp.where(jnp.any(sigma > 0), jnp.min(positive), 1)
    return (scale * jnp.where(sigma > 0, sigma, fallback)).astype(centres.dtype)


# --- step 2: output weights by least squares ---------------------------------------
def _targets(y, task, dtype, n_classes=None):
    y = jnp.asarray(y)
    if task == "regression":
        if y.ndim == 1:
            y = y[:, None]
        return y.astype(dtype)
    if task == "classification":
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"classification expects int labels (m,), got {y.shape}.")
        k = int(jnp.max(y)) + 1 if n_classes is None else n_classes
        return jax.nn.one_hot(y, k, dtype=dtype)
    raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")


def least_squares_weights(Phi: jax.Array, Y: jax.Array) -> dict:
    """Output weights minimising ‖[1, Φ] w − Y‖² (``jnp.linalg.lstsq``).

    Args:
      Phi: RBF features ``(m, N)``.
      Y: targets ``(m, k)`` (one-hot rows for classification).

    Returns:
      Dense params ``{"W": (N, k), "b": (k,)}``: b is the row of w for the constant
      feature 1 ([Neacșu & Vasilescu]'s w_0).
    """
    A = jnp.concatenate([jnp.ones((Phi.shape[0], 1), Phi.dtype), Phi], axis=1)
    w = jnp.linalg.lstsq(A, Y)[0]
    return {"W": w[1:], "b": w[0]}


class RBFFit(NamedTuple):
    """A fitted RBF network: ``blocks``, ``params`` (for :func:`fnn.nn.forward`)
    and ``losses`` (training loss per gradient step; empty for the 2-step fit)."""

    blocks: list
    params: list
    losses: Any


def fit_2step(
    key: jax.Array,
    X: jax.Array,
    y: jax.Array,
    n_centres: int,
    *,
    task: str = "regression",
    width: str = "dmax",
    width_scale: float = 1.0,
    n_iter: int = 20,
    n_classes: int | None = None,
) -> RBFFit:
    """2-step learning: (1) centres by k-means(++) and widths by :func:`widths`;
    (2) output weights by least squares, w = argmin ‖[1, Φ(X)] w − Y‖².

    Args:
      key: PRNG key (k-means++ seeding).
      X: inputs ``(m, d)``, float.
      y: targets: ``(m,)`` or ``(m, k)`` floats for regression, int labels
        ``(m,)`` for classification (fitted as one-hot rows by least squares;
        predict with the argmax, or use the outputs as logits).
      n_centres: N.
      task: ``"regression"`` or ``"classification"``.
      width, width_scale: the width rule and its multiplier.
      n_iter: Lloyd iterations.
      n_classes: number of classes (default: max label + 1).

    Returns:
      :class:`RBFFit` with blocks ``[RBF(N), Dense(k)]``.

    References: [Neacșu & Vasilescu, Learning mechanism: 2-steps learning].
    """
    X = _check_X(X, n_centres)
    Y = _targets(y, task, X.dtype, n_classes)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {Y.shape[0]} rows for {X.shape[0]} inputs.")
    centres, _ = kmeans(key, X, n_centres, n_iter)
    sigma = widths(centres, width, width_scale)
    rbf_params = {"mu": centres, "log_sigma": jnp.log(sigma)}
    blocks = network(n_centres, Y.shape[1])
    Phi = nn.forward(blocks[:1], [rbf_params], X)[0]
    return RBFFit(blocks, [rbf_params, least_squares_weights(Phi, Y)], jnp.zeros((0,)))


def fit_3step(
    key: jax.Array,
    X: jax.Array,
    y: jax.Array,
    n_centres: int,
    *,
    task: str = "regression",
    optimizer: "_optim.Optimizer | None" = None,
    steps: int = 500,
    **kwargs: Any,
) -> RBFFit:
    """3-step learning: :func:`fit_2step`, then (3) μ, log σ and w together by
    full-batch gradient descent on the loss (mse for regression, softmax
    cross-entropy for classification), gradients by manual backprop.

    Args:
      key, X, y, n_centres, task: as :func:`fit_2step` (``**kwargs`` too).
      optimizer: an :class:`fnn.optim.Optimizer` (default ``adam(1e-2)``).
      steps: gradient steps.

    Returns:
      :class:`RBFFit`, ``losses`` ``(steps,)`` the loss before each step.

    References: [Neacșu & Vasilescu, Learning mechanism: 3-steps learning].
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}.")
    fit = fit_2step(key, X, y, n_centres, task=task, **kwargs)
    X = jnp.asarray(X)
    if task == "regression":
        loss, Y = "mse", _targets(y, task, X.dtype)
    else:
        loss, Y = "cross_entropy", jnp.asarray(y)
    params, losses = train(fit.blocks, fit.params, X, Y, loss, optimizer, steps)
    return RBFFit(fit.blocks, params, losses)


def train(
    blocks: Sequence[Block],
    params: list,
    X: jax.Array,
    Y: jax.Array,
    loss: str,
    optimizer: "_optim.Optimizer | None" = None,
    steps: int = 500,
) -> tuple[list, jax.Array]:
    """Full-batch gradient descent of ``blocks`` with manual backprop
    (:func:`fnn.nn.loss_and_grad`), ``steps`` updates in one compiled ``lax.scan``
    ([Neacșu & Vasilescu, Learning mechanism: 3-steps learning], step 3).

    Args:
      blocks, params: the network, e.g. :func:`network` and its parameters.
      X: ``(m, d)`` inputs; Y: targets for ``loss`` (``(m, n_out)`` rows for
        mse, ``(m,)`` integer labels or ``(m, n_out)`` rows for cross-entropy).
      loss: a loss name from :func:`fnn.losses.names`.
      optimizer: an :class:`fnn.optim.Optimizer` (default ``adam(1e-2)``).
      steps: gradient steps.

    Returns:
      ``(params, losses)`` with ``losses`` ``(steps,)`` the loss before each step.
    """
    optimizer = _optim.adam(1e-2) if optimizer is None else optimizer

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            (J, _), grads = nn.loss_and_grad(blocks, params, X, Y, loss)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (_optim.apply_updates(params, updates), opt_state), J

        (params, _), losses = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=steps
        )
        return params, losses

    return run(params)
