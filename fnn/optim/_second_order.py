"""Second-order and quasi-Newton optimizers with a strong-Wolfe line search.

Each optimizer here is an :class:`Optimizer` whose ``update`` needs more than the
gradient::

    updates, state = opt.update(grads, state, params,
                                value=f(params), grad=grads, value_fn=f)

``value`` is the loss at ``params``, ``value_fn`` maps a parameter pytree to that
scalar loss (the line search and Newton's Hessian call it); ``grad`` is optional and,
when given, must equal ``grads`` (it is accepted so a call can name everything).
A missing ``params``, ``value`` or ``value_fn`` raises ``TypeError``.

Invariants:
  * the methods work on the flattened parameter vector ``x = ravel(params)`` (all
    leaves should share one float dtype); matrices, histories, line searches and
    step sizes take that dtype, or float32 for 16-bit (bfloat16, float16)
    parameters, whose updates are rounded back to the parameter dtype.
  * ``update`` refuses (``TypeError``) a state made by another optimizer, and
    gradients whose structure or leaf shapes differ from the parameters'
    (``ValueError`` naming the key path).
  * ``updates = unravel(step * direction)``: ``params + updates`` is the point the
    line search accepted.
  * states are NamedTuples with fixed dtypes, an int32 ``count``, the last
    accepted ``step_size``, and ``linesearch_failed`` (bool, last step) and
    ``linesearch_failures`` (int32, total); a jitted step traces once.
  * every loop (line search, two-loop recursion) is a ``lax`` loop with a fixed
    bound, so ``update`` and :func:`minimize` run under ``jax.jit``.

References: [Neacșu & Vasilescu, Second order methods]; J. Nocedal & S. J. Wright,
"Numerical Optimization", 2nd ed. (2006): Alg. 3.5-3.6 (line search), 5.4 (nonlinear
CG), 6.1 (BFGS), 7.4-7.5 (L-BFGS).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from ._base import (
    Optimizer,
    accumulation_dtype,
    apply_updates,
    check_like,
    check_params,
    check_scalar,
    check_state,
    is_traced,
    register_state,
)
from ._transforms import check_grads

PyTree = Any
ValueFn = Callable[[PyTree], jax.Array]


# ----------------------------------------------------------------------------------
# Strong-Wolfe line search
# ----------------------------------------------------------------------------------


class LineSearchResult(NamedTuple):
    """Result of :func:`strong_wolfe_line_search`.

    Attributes:
      step: the accepted step ``a`` (scalar, dtype of ``x``); 0 when nothing better
        than ``x`` was found.
      value: ``f(x + a d)``.
      grad: ``grad f(x + a d)``, shape ``(n,)``.
      failed: bool, True when no step met both strong-Wolfe conditions within
        ``max_iters`` evaluations (the step returned is then the lowest point that
        met the sufficient-decrease condition, possibly 0).
      iterations: int32, evaluations of ``f`` made.
    """

    step: jax.Array
    value: jax.Array
    grad: jax.Array
    failed: jax.Array
    iterations: jax.Array


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic through ``(a, fa, da)`` and ``(b, fb, db)``
    (Nocedal & Wright eq. 3.59), safeguarded to ``[lo + w/10, hi - w/10]`` and
    replaced by the midpoint when the cubic has no usable minimiser."""
    mid = 0.5 * (a + b)
    finite = jnp.isfinite(fa) & jnp.isfinite(fb) & jnp.isfinite(da) & jnp.isfinite(db)
    fa_, fb_ = jnp.where(finite, fa, 0.0), jnp.where(finite, fb, 0.0)
    da_, db_ = jnp.where(finite, da, 0.0), jnp.where(finite, db, 0.0)
    width = b - a
    safe_width = jnp.where(width == 0, 1.0, width)
    d1 = da_ + db_ - 3.0 * (fa_ - fb_) / (-safe_width)
    disc = d1 * d1 - da_ * db_
    d2 = jnp.sign(width) * jnp.sqrt(jnp.maximum(disc, 0.0))
    denom = db_ - da_ + 2.0 * d2
    safe_denom = jnp.where(denom == 0, 1.0, denom)
    t = b - width * (db_ + d2 - d1) / safe_denom
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    margin = 0.1 * (hi - lo)
    ok = (
        finite
        & (width != 0)
        & (disc >= 0)
        & (denom != 0)
        & jnp.isfinite(t)
        & (t >= lo + margin)
        & (t <= hi - margin)
    )
    return jnp.where(ok, t, mid)


def strong_wolfe_line_search(
    value_and_grad_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    direction: jax.Array,
    value: jax.typing.ArrayLike,
    grad: jax.Array,
    *,
    init_step: jax.typing.ArrayLike = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_iters: int = 30,
    max_step: float = 1e10,
    approx_rtol: float = 1e-6,
) -> LineSearchResult:
    """Find a step ``a`` along ``d`` that meets the strong-Wolfe conditions.

    With ``phi(a) = f(x + a d)``::

        phi(a) <= phi(0) + c1 * a * phi'(0)          (sufficient decrease)
        |phi'(a)| <= c2 * |phi'(0)|                   (strong curvature)

    or, near a minimum where f's differences reach rounding level and the first
    test cannot be decided, the approximate Wolfe conditions of Hager and Zhang
    (2005), which read the slope instead::

        phi(a) <= phi(0) + approx_rtol * |phi(0)|
        (2 c1 - 1) phi'(0) >= phi'(a),   |phi'(a)| <= c2 |phi'(0)|

    Bracketing then zoom (Nocedal & Wright, Alg. 3.5 and 3.6): trial steps double
    from ``init_step`` until an interval containing acceptable steps is bracketed;
    the interval is then shrunk by safeguarded cubic interpolation (bisection
    when the cubic is unusable). Non-finite values count as "too large". One
    ``lax.while_loop`` with at most ``max_iters`` evaluations, so it jits.

    Args:
      value_and_grad_fn: ``x -> (f(x), grad f(x))`` on flat vectors.
      x: the current point, shape ``(n,)``, float dtype.
      direction: ``d``, shape ``(n,)``; should be a descent direction
        (``grad . d < 0``).
      value: ``f(x)``, scalar.
      grad: ``grad f(x)``, shape ``(n,)``.
      init_step: the first trial step (``> 0``).
      c1: sufficient-decrease constant, ``0 < c1 < c2``.
      c2: curvature constant, ``c2 < 1`` (0.9 for quasi-Newton, 0.1 for CG).
      max_iters: the most evaluations of ``f``.
      max_step: the largest step tried.
      approx_rtol: the relative rise of f the approximate Wolfe acceptance
        tolerates (0 turns it off: strict strong Wolfe).

    Returns:
      A :class:`LineSearchResult` (step, value and gradient at the new point,
      failure flag, evaluations made), all in the dtype of ``x``.

    References:
      [Neacșu & Vasilescu, Second order methods] (line search); Nocedal & Wright,
      Alg. 3.5-3.6 and eq. 3.7; W. W. Hager and H. Zhang, "A new conjugate
      gradient method with guaranteed descent and an efficient line search",
      SIAM J. Optim. 16 (2005), the approximate Wolfe conditions (optax's zoom
      line search accepts them too).
    """
    if not (is_traced(c1) or is_traced(c2) or 0 < c1 < c2 < 1):
        raise ValueError(f"line search needs 0 < c1 < c2 < 1, got c1={c1}, c2={c2}.")
    dtype = x.dtype
    # Array constants (traced under jit or vmap) in x's dtype.
    c1, c2 = (jnp.asarray(c, dtype) if is_traced(c) else c for c in (c1, c2))
    f0 = jnp.asarray(value).astype(dtype)
    g0 = grad.astype(dtype)
    d = direction.astype(dtype)
    dphi0 = jnp.vdot(g0, d)
    inf = jnp.asarray(jnp.inf, dtype)
    zero = jnp.zeros((), dtype)

    def phi(a):
        f, g = value_and_grad_fn(x + a * d)
        f = jnp.asarray(f).astype(dtype)
        g = g.astype(dtype)
        ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        g = jnp.where(ok, g, jnp.zeros_like(g))
        return jnp.where(ok, f, inf), g, jnp.where(ok, jnp.vdot(g, d), zero)

    class Carry(NamedTuple):
        i: jax.Array
        done: jax.Array
        zooming: jax.Array
        a_prev: jax.Array
        f_prev: jax.Array
        dphi_prev: jax.Array
        a_next: jax.Array
        a_lo: jax.Array
        f_lo: jax.Array
        dphi_lo: jax.Array
        a_hi: jax.Array
        f_hi: jax.Array
        dphi_hi: jax.Array
        a_best: jax.Array
        f_best: jax.Array
        g_best: jax.Array

    init = Carry(
        i=jnp.zeros((), jnp.int32),
        done=jnp.zeros((), bool),
        zooming=jnp.zeros((), bool),
        a_prev=zero,
        f_prev=f0,
        dphi_prev=dphi0,
        a_next=jnp.clip(jnp.asarray(init_step).astype(dtype), 0.0, max_step),
        a_lo=zero,
        f_lo=f0,
        dphi_lo=dphi0,
        a_hi=zero,
        f_hi=f0,
        dphi_hi=dphi0,
        a_best=zero,
        f_best=f0,
        g_best=g0,
    )

    def cond(c):
        return (~c.done) & (c.i < max_iters)

    def body(c):
        trial = jnp.where(
            c.zooming,
            _cubic_min(c.a_lo, c.f_lo, c.dphi_lo, c.a_hi, c.f_hi, c.dphi_hi),
            c.a_next,
        )
        f, g, dphi = phi(trial)
        # Within eps_f = approx_rtol |phi(0)| of each other, values of f are
        # rounding noise: a point is "too high" only beyond that tolerance, and
        # the slope decides inside it (Hager and Zhang's updating rules).
        eps_f = approx_rtol * jnp.abs(f0)
        curvature_ok = jnp.abs(dphi) <= -c2 * dphi0
        strict_ok = f <= f0 + c1 * trial * dphi0
        approx_ok = (f <= f0 + eps_f) & (dphi <= (2 * c1 - 1) * dphi0)
        armijo_fail = ~strict_ok & (f > f0 + eps_f)
        acceptable = curvature_ok & (strict_ok | approx_ok)
        # Bracketing phase (Alg. 3.5).
        b_high = armijo_fail | ((c.i > 0) & (f > c.f_prev + eps_f))
        b_accept = ~b_high & acceptable
        b_rising = ~b_high & ~acceptable & (dphi >= 0)
        b_zoom = b_high | b_rising
        # Zoom phase (Alg. 3.6).
        z_high = armijo_fail | (f > c.f_lo + eps_f)
        z_accept = ~z_high & acceptable
        z_flip = ~z_high & ~acceptable & (dphi * (c.a_hi - c.a_lo) >= 0)

        zoom = c.zooming
        accept = jnp.where(zoom, z_accept, b_accept)
        # New interval when entering or continuing the zoom.
        lo_is_trial = jnp.where(zoom, ~z_high, b_rising)
        keep_lo_zoom = zoom & z_high
        a_lo = jnp.where(lo_is_trial, trial, jnp.where(keep_lo_zoom, c.a_lo, c.a_prev))
        f_lo = jnp.where(lo_is_trial, f, jnp.where(keep_lo_zoom, c.f_lo, c.f_prev))
        dphi_lo = jnp.where(
            lo_is_trial, dphi, jnp.where(keep_lo_zoom, c.dphi_lo, c.dphi_prev)
        )
        # hi: trial when too high; old lo when the zoom flips; prev when the
        # bracket is closed by a rising slope; otherwise unchanged.
        hi_choice_a = jnp.where(
            zoom,
            jnp.where(z_high, trial, jnp.where(z_flip, c.a_lo, c.a_hi)),
            jnp.where(b_high, trial, c.a_prev),
        )
        hi_choice_f = jnp.where(
            zoom,
            jnp.where(z_high, f, jnp.where(z_flip, c.f_lo, c.f_hi)),
            jnp.where(b_high, f, c.f_prev),
        )
        hi_choice_d = jnp.where(
            zoom,
            jnp.where(z_high, dphi, jnp.where(z_flip, c.dphi_lo, c.dphi_hi)),
            jnp.where(b_high, dphi, c.dphi_prev),
        )
        # Best point meeting sufficient decrease (the fallback on failure).
        better = strict_ok & (f < c.f_best)
        better = better | accept
        return Carry(
            i=c.i + 1,
            done=accept,
            zooming=zoom | b_zoom,
            a_prev=trial,
            f_prev=f,
            dphi_prev=dphi,
            a_next=jnp.minimum(2.0 * trial, max_step).astype(dtype),
            a_lo=a_lo,
            f_lo=f_lo,
            dphi_lo=dphi_lo,
            a_hi=hi_choice_a,
            f_hi=hi_choice_f,
            dphi_hi=hi_choice_d,
            a_best=jnp.where(better, trial, c.a_best),
            f_best=jnp.where(better, f, c.f_best),
            g_best=jnp.where(better, g, c.g_best),
        )

    out = lax.while_loop(cond, body, init)
    return LineSearchResult(
        step=out.a_best,
        value=out.f_best,
        grad=out.g_best,
        failed=~out.done,
        iterations=out.i,
    )


# ----------------------------------------------------------------------------------
# Shared plumbing
# ----------------------------------------------------------------------------------


def _require(name, params, value, value_fn, need_value=True):
    missing = []
    if params is None:
        missing.append("params")
    if need_value and value is None:
        missing.append("value=")
    if value_fn is None:
        missing.append("value_fn=")
    if missing:
        raise TypeError(
            f"{name}.update needs {', '.join(missing)}: call "
            f"update(grads, state, params, value=f(params), grad=grads, value_fn=f) "
            f"with value_fn mapping a parameter pytree to the scalar loss."
        )


def _ravel(params):
    """``(x, unravel)``: the flat parameters in their accumulation dtype (float32
    for 16-bit parameters) and the map back to a pytree of the params' dtypes."""
    x, unravel = ravel_pytree(params)
    acc = accumulation_dtype(x.dtype)
    return x.astype(acc), lambda v: unravel(jnp.asarray(v).astype(x.dtype))


def _flatten(name, grads, params, grad):
    check_like(params, grads, "grads", "params")
    check_grads(grads, params)
    if grad is not None:
        check_like(params, grad, "grad", "params")
        check_grads(grad, params)
    x, unravel = _ravel(params)
    g = ravel_pytree(grads)[0].astype(x.dtype)
    return x, g, unravel


def _flat_value_and_grad(value_fn, unravel, dtype):
    def f(x):
        return jnp.asarray(value_fn(unravel(x))).astype(dtype)

    return jax.value_and_grad(f)


def _cast_like(new, old):
    """Keep the state's dtypes fixed from one step to the next."""
    return jax.tree.map(lambda n, o: jnp.asarray(n).astype(o.dtype), new, old)


def _first_step(g):
    """``min(1, 1 / ||g||)``: a first trial step of length at most 1."""
    norm = jnp.linalg.norm(g)
    return jnp.where(norm > 1.0, 1.0 / jnp.where(norm > 1.0, norm, 1.0), 1.0).astype(
        g.dtype
    )


def _descent_or_steepest(d, g):
    """``d`` when it is finite and ``g . d < 0``; ``-g`` otherwise."""
    ok = jnp.all(jnp.isfinite(d))
    d = jnp.where(ok, d, -g)
    ok = ok & (jnp.vdot(g, d) < 0)
    return jnp.where(ok, d, -g), ok


def _check_c(c1, c2):
    c1 = check_scalar("c1", c1, lo=0, hi=1, lo_open=True, hi_open=True)
    c2 = check_scalar("c2", c2, lo=0, hi=1, lo_open=True, hi_open=True)
    if not (is_traced(c1) or is_traced(c2) or c1 < c2):
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}.")
    return c1, c2


def _check_pos_int(name, value, minimum=1):
    return check_scalar(name, value, lo=minimum, integer=True)


# ----------------------------------------------------------------------------------
# Newton
# ----------------------------------------------------------------------------------


class NewtonState(NamedTuple):
    """State of :func:`newton`: ``count`` (int32), ``step_size`` (param dtype),
    ``linesearch_failed`` (bool), ``linesearch_failures`` (int32), and
    ``newton_failures`` (int32, steps that fell back to ``-g``)."""

    count: jax.Array
    step_size: jax.Array
    linesearch_failed: jax.Array
    linesearch_failures: jax.Array
    newton_failures: jax.Array


def newton(
    damping: float = 0.0,
    linesearch: bool = True,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch_iters: int = 30,
) -> Optimizer:
    """Newton's method with the exact Hessian: solve ``(H + lambda I) d = -g``.

    ``H = hessian f(x)`` is formed densely with ``jax.hessian`` of ``value_fn`` on
    the flat vector: ``O(n^2)`` memory and ``O(n^3)`` solve, for small models only.
    When ``d`` is not a descent direction (``g . d >= 0``, e.g. an indefinite
    ``H``) or not finite, the step falls back to ``d = -g``. Then ``x <- x + a d``
    with ``a`` from the strong-Wolfe line search (first trial ``a = 1``), or
    ``a = 1`` when ``linesearch=False``. On a quadratic with SPD Hessian the first
    step lands on the minimum.

    Args:
      damping: ``lambda >= 0``, added to the Hessian's diagonal.
      linesearch: use the strong-Wolfe line search (else full steps).
      c1, c2: line-search constants.
      max_linesearch_iters: most function evaluations per line search.

    Returns:
      An :class:`Optimizer` with :class:`NewtonState`; ``update`` needs
      ``params``, ``value_fn=`` and (with the line search) ``value=``.

    References:
      [Neacșu & Vasilescu, Second order methods: Newton]; Nocedal & Wright, sec. 3.3.
    """
    damping = check_scalar("damping", damping, lo=0)
    c1, c2 = _check_c(c1, c2)
    max_linesearch_iters = _check_pos_int("max_linesearch_iters", max_linesearch_iters)

    def init(params):
        check_params(params)
        x, _ = _ravel(params)
        return NewtonState(
            count=jnp.zeros((), jnp.int32),
            step_size=jnp.zeros((), x.dtype),
            linesearch_failed=jnp.zeros((), bool),
            linesearch_failures=jnp.zeros((), jnp.int32),
            newton_failures=jnp.zeros((), jnp.int32),
        )

    def update(grads, state, params=None, *, value=None, grad=None, value_fn=None):
        check_state(state, NewtonState, "newton")
        _require("newton", params, value, value_fn, need_value=linesearch)
        x, g, unravel = _flatten("newton", grads, params, grad)
        vg = _flat_value_and_grad(value_fn, unravel, x.dtype)
        H = jax.hessian(lambda z: vg(z)[0])(x)
        H = H + jnp.asarray(damping, x.dtype) * jnp.eye(x.size, dtype=x.dtype)
        d, ok = _descent_or_steepest(jnp.linalg.solve(H, -g), g)
        if linesearch:
            ls = strong_wolfe_line_search(
                vg, x, d, value, g, init_step=1.0, c1=c1, c2=c2,
                max_iters=max_linesearch_iters,
            )  # fmt: skip
            step, failed = ls.step, ls.failed
        else:
            step, failed = jnp.ones((), x.dtype), jnp.zeros((), bool)
        new = NewtonState(
            count=state.count + 1,
            step_size=step,
            linesearch_failed=failed,
            linesearch_failures=state.linesearch_failures + failed.astype(jnp.int32),
            newton_failures=state.newton_failures + (~ok).astype(jnp.int32),
        )
        return unravel(step * d), _cast_like(new, state)

    return Optimizer(init, update)


# ----------------------------------------------------------------------------------
# Nonlinear conjugate gradient
# ----------------------------------------------------------------------------------


class ConjugateGradientState(NamedTuple):
    """State of :func:`conjugate_gradient`: ``count`` (int32), the previous
    gradient ``g_prev`` and direction ``d_prev`` (shape ``(n,)``), ``step_size``,
    ``linesearch_failed`` (bool), ``linesearch_failures`` and ``restarts``
    (int32)."""

    count: jax.Array
    g_prev: jax.Array
    d_prev: jax.Array
    step_size: jax.Array
    linesearch_failed: jax.Array
    linesearch_failures: jax.Array
    restarts: jax.Array


def conjugate_gradient(
    method: str = "polak_ribiere",
    restart: int | None = None,
    *,
    c1: float = 1e-4,
    c2: float = 0.1,
    max_linesearch_iters: int = 30,
) -> Optimizer:
    """Nonlinear conjugate gradient (Fletcher-Reeves or Polak-Ribiere+).

    ``d_0 = -g_0``; then ``d_k = -g_k + beta_k d_{k-1}`` with::

        Fletcher-Reeves:   beta = (g_k . g_k) / (g_{k-1} . g_{k-1})
        Polak-Ribiere+:    beta = max((g_k . (g_k - g_{k-1})) / (g_{k-1} . g_{k-1}), 0)

    and ``x <- x + a d_k`` with ``a`` from the strong-Wolfe line search (``c2 =
    0.1`` by default, so Fletcher-Reeves directions stay descent directions). The
    direction restarts to ``-g_k`` every ``restart`` iterations and whenever
    ``d_k`` is not a descent direction. The first trial step is ``min(1, 1/||g||)``
    on the first or a restarted iteration, else ``a_{k-1} (g_{k-1}.d_{k-1}) /
    (g_k.d_k)`` (Nocedal & Wright eq. 3.60). On an ``n``-dimensional SPD quadratic
    with exact line searches (small ``c2``) the method ends in ``n`` steps.

    Args:
      method: ``"polak_ribiere"`` (PR+, the default) or ``"fletcher_reeves"``.
      restart: restart period in iterations (``>= 1``); ``None`` uses ``n``, the
        number of parameters.
      c1, c2: line-search constants.
      max_linesearch_iters: most function evaluations per line search.

    Returns:
      An :class:`Optimizer` with :class:`ConjugateGradientState`; ``update`` needs
      ``params``, ``value=`` and ``value_fn=``.

    References:
      [Neacșu & Vasilescu, Second order methods: Conjugate gradient]; Nocedal & Wright,
      Alg. 5.4 and eq. 5.41-5.45.
    """
    if method not in ("polak_ribiere", "fletcher_reeves"):
        raise ValueError(
            f"method must be 'polak_ribiere' or 'fletcher_reeves', got {method!r}."
        )
    if restart is not None:
        restart = _check_pos_int("restart", restart)
    c1, c2 = _check_c(c1, c2)
    max_linesearch_iters = _check_pos_int("max_linesearch_iters", max_linesearch_iters)

    def init(params):
        check_params(params)
        x, _ = _ravel(params)
        return ConjugateGradientState(
            count=jnp.zeros((), jnp.int32),
            g_prev=jnp.zeros_like(x),
            d_prev=jnp.zeros_like(x),
            step_size=jnp.zeros((), x.dtype),
            linesearch_failed=jnp.zeros((), bool),
            linesearch_failures=jnp.zeros((), jnp.int32),
            restarts=jnp.zeros((), jnp.int32),
        )

    def update(grads, state, params=None, *, value=None, grad=None, value_fn=None):
        check_state(state, ConjugateGradientState, "conjugate_gradient")
        _require("conjugate_gradient", params, value, value_fn)
        x, g, unravel = _flatten("conjugate_gradient", grads, params, grad)
        vg = _flat_value_and_grad(value_fn, unravel, x.dtype)
        period = x.size if restart is None else restart
        gg_prev = jnp.vdot(state.g_prev, state.g_prev)
        safe = jnp.where(gg_prev > 0, gg_prev, 1.0)
        if method == "fletcher_reeves":
            beta = jnp.vdot(g, g) / safe
        else:
            beta = jnp.maximum(jnp.vdot(g, g - state.g_prev) / safe, 0.0)
        beta = jnp.where(gg_prev > 0, beta, 0.0)
        fresh = (state.count == 0) | (state.count % period == 0)
        d = jnp.where(fresh, -g, -g + beta * state.d_prev)
        d, descent = _descent_or_steepest(d, g)
        restarted = fresh | ~descent
        gd, gd_prev = jnp.vdot(g, d), jnp.vdot(state.g_prev, state.d_prev)
        ratio_ok = (gd < 0) & (gd_prev < 0) & (state.step_size > 0)
        guess = state.step_size * gd_prev / jnp.where(ratio_ok, gd, -1.0)
        init_step = jnp.where(restarted | ~ratio_ok, _first_step(g), guess)
        ls = strong_wolfe_line_search(
            vg, x, d, value, g, init_step=init_step, c1=c1, c2=c2,
            max_iters=max_linesearch_iters,
        )  # fmt: skip
        new = ConjugateGradientState(
            count=state.count + 1,
            g_prev=g,
            d_prev=d,
            step_size=ls.step,
            linesearch_failed=ls.failed,
            linesearch_failures=state.linesearch_failures + ls.failed.astype(jnp.int32),
            restarts=state.restarts + (restarted & (state.count > 0)).astype(jnp.int32),
        )
        return unravel(ls.step * d), _cast_like(new, state)

    return Optimizer(init, update)


# ----------------------------------------------------------------------------------
# BFGS and L-BFGS
# ----------------------------------------------------------------------------------


class BFGSState(NamedTuple):
    """State of :func:`bfgs`: ``count`` (int32), the inverse-Hessian estimate
    ``H`` (``(n, n)``), ``step_size``, ``linesearch_failed`` (bool),
    ``linesearch_failures`` and ``skipped_updates`` (int32, pairs rejected by the
    curvature check)."""

    count: jax.Array
    H: jax.Array
    step_size: jax.Array
    linesearch_failed: jax.Array
    linesearch_failures: jax.Array
    skipped_updates: jax.Array


def _curvature_ok(s, y):
    """``s . y > eps * ||s|| ||y||``: the pair keeps the update positive definite."""
    eps = jnp.finfo(s.dtype).eps
    return jnp.vdot(s, y) > eps * jnp.linalg.norm(s) * jnp.linalg.norm(y)


def bfgs(
    *, c1: float = 1e-4, c2: float = 0.9, max_linesearch_iters: int = 30
) -> Optimizer:
    """BFGS with a dense inverse-Hessian estimate ``H``.

    ``d = -H g``; ``x <- x + a d`` with a strong-Wolfe step (first trial 1, or
    ``min(1, 1/||g||)`` on the first iteration). With ``s = a d`` and
    ``y = g_new - g``, when ``s . y > eps ||s|| ||y||`` (curvature condition)::

        rho = 1 / (y . s)
        H  <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T

    else the update is skipped (and counted). Before the first update ``H_0 = I``
    is rescaled to ``(s.y / y.y) I`` (Nocedal & Wright eq. 6.20).

    Args:
      c1, c2: line-search constants.
      max_linesearch_iters: most function evaluations per line search.

    Returns:
      An :class:`Optimizer` with :class:`BFGSState`; ``update`` needs ``params``,
      ``value=`` and ``value_fn=``.

    References:
      [Neacșu & Vasilescu, Second order methods: Quasi Newton, BFGS (approximating
      H^-1)]; Nocedal & Wright, Alg. 6.1 and eq. 6.17.
    """
    c1, c2 = _check_c(c1, c2)
    max_linesearch_iters = _check_pos_int("max_linesearch_iters", max_linesearch_iters)

    def init(params):
        check_params(params)
        x, _ = _ravel(params)
        return BFGSState(
            count=jnp.zeros((), jnp.int32),
            H=jnp.eye(x.size, dtype=x.dtype),
            step_size=jnp.zeros((), x.dtype),
            linesearch_failed=jnp.zeros((), bool),
            linesearch_failures=jnp.zeros((), jnp.int32),
            skipped_updates=jnp.zeros((), jnp.int32),
        )

    def update(grads, state, params=None, *, value=None, grad=None, value_fn=None):
        check_state(state, BFGSState, "bfgs")
        _require("bfgs", params, value, value_fn)
        x, g, unravel = _flatten("bfgs", grads, params, grad)
        vg = _flat_value_and_grad(value_fn, unravel, x.dtype)
        d, _ = _descent_or_steepest(-state.H @ g, g)
        init_step = jnp.where(state.count == 0, _first_step(g), 1.0)
        ls = strong_wolfe_line_search(
            vg, x, d, value, g, init_step=init_step, c1=c1, c2=c2,
            max_iters=max_linesearch_iters,
        )  # fmt: skip
        s = ls.step * d
        y = ls.grad - g
        ok = _curvature_ok(s, y)
        sy = jnp.where(ok, jnp.vdot(s, y), 1.0)
        yy = jnp.vdot(y, y)
        H = jnp.where(
            (state.count == 0) & ok & (yy > 0),
            (sy / jnp.where(yy > 0, yy, 1.0)) * state.H,
            state.H,
        )
        rho = 1.0 / sy
        eye = jnp.eye(x.size, dtype=x.dtype)
        V = eye - rho * jnp.outer(y, s)
        H_new = V.T @ H @ V + rho * jnp.outer(s, s)
        new = BFGSState(
            count=state.count + 1,
            H=jnp.where(ok, H_new, state.H),
            step_size=ls.step,
            linesearch_failed=ls.failed,
            linesearch_failures=state.linesearch_failures + ls.failed.astype(jnp.int32),
            skipped_updates=state.skipped_updates + (~ok).astype(jnp.int32),
        )
        return unravel(s), _cast_like(new, state)

    return Optimizer(init, update)


class LBFGSState(NamedTuple):
    """State of :func:`lbfgs`: ``count`` (int32), the histories ``S`` and ``Y``
    (``(m, n)``, a ring buffer), ``rho`` (``(m,)``, ``1 / (s.y)``), ``pairs``
    (int32, pairs stored so far, the newest at ``(pairs - 1) % m``),
    ``step_size``, ``linesearch_failed`` (bool), ``linesearch_failures`` and
    ``skipped_updates`` (int32)."""

    count: jax.Array
    S: jax.Array
    Y: jax.Array
    rho: jax.Array
    pairs: jax.Array
    step_size: jax.Array
    linesearch_failed: jax.Array
    linesearch_failures: jax.Array
    skipped_updates: jax.Array


def _two_loop(g, S, Y, rho, pairs):
    """``H_k g`` by the L-BFGS two-loop recursion over the valid history entries
    (Nocedal & Wright, Alg. 7.4), with ``H_0 = gamma I``, ``gamma = s.y / y.y`` of
    the newest pair (1 when there is none)."""
    m = S.shape[0]
    count = jnp.minimum(pairs, m)
    newest = jnp.mod(pairs - 1, m)

    def backward(j, carry):
        q, alphas = carry
        i = jnp.mod(newest - j, m)
        valid = j < count
        a = jnp.where(valid, rho[i] * jnp.vdot(S[i], q), 0.0)
        return q - a * Y[i], alphas.at[i].set(a)

    q, alphas = lax.fori_loop(0, m, backward, (g, jnp.zeros_like(rho)))
    s_new, y_new = S[newest], Y[newest]
    yy = jnp.vdot(y_new, y_new)
    gamma = jnp.where(
        (count > 0) & (yy > 0), jnp.vdot(s_new, y_new) / jnp.where(yy > 0, yy, 1.0), 1.0
    )
    r = gamma * q

    def forward(j, r):
        # oldest first: j = count - 1 ... 0 in the backward numbering.
        back = m - 1 - j
        i = jnp.mod(newest - back, m)
        valid = back < count
        b = rho[i] * jnp.vdot(Y[i], r)
        return r + jnp.where(valid, alphas[i] - b, 0.0) * S[i]

    return lax.fori_loop(0, m, forward, r)


def lbfgs(
    memory_size: int = 10,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch_iters: int = 30,
) -> Optimizer:
    """Limited-memory BFGS: ``d = -H_k g`` from the last ``m`` pairs ``(s, y)``.

    ``H_k g`` comes from the two-loop recursion with ``H_0 = (s.y / y.y) I`` of the
    newest pair; ``x <- x + a d`` with a strong-Wolfe (or approximate Wolfe, see
    :func:`strong_wolfe_line_search`) step (first trial 1, or ``min(1, 1/||g||)``
    on the first iteration); then ``s = a d``, ``y = g_new - g`` enter the
    history (a fixed ``(m, n)`` ring buffer, so the step jits and traces once)
    when ``s . y > eps ||s|| ||y||``. A failed line search empties the history:
    the next iteration restarts from the scaled steepest-descent direction
    instead of repeating the same search.

    Warning: PyTorch's ``LBFGS(line_search_fn="strong_wolfe")`` differs in two
    places: its first trial step is ``min(1, 1/|g|_1) * lr`` on the first
    iteration (fnn: ``min(1, 1/|g|_2)``), and it stores a pair when
    ``y.s > 1e-10`` (fnn: ``s.y > eps |s| |y|``, scale-free). Trajectories agree
    where neither test is close.

    Args:
      memory_size: ``m >= 1``, the number of pairs kept.
      c1, c2: line-search constants.
      max_linesearch_iters: most function evaluations per line search.

    Returns:
      An :class:`Optimizer` with :class:`LBFGSState`; ``update`` needs ``params``,
      ``value=`` and ``value_fn=``.

    References:
      [Neacșu & Vasilescu, Second order methods: Quasi Newton, L-BFGS]; Nocedal &
      Wright, Alg. 7.4-7.5.
    """
    memory_size = _check_pos_int("memory_size", memory_size)
    c1, c2 = _check_c(c1, c2)
    max_linesearch_iters = _check_pos_int("max_linesearch_iters", max_linesearch_iters)
    m = memory_size

    def init(params):
        check_params(params)
        x, _ = _ravel(params)
        return LBFGSState(
            count=jnp.zeros((), jnp.int32),
            S=jnp.zeros((m, x.size), x.dtype),
            Y=jnp.zeros((m, x.size), x.dtype),
            rho=jnp.zeros((m,), x.dtype),
            pairs=jnp.zeros((), jnp.int32),
            step_size=jnp.zeros((), x.dtype),
            linesearch_failed=jnp.zeros((), bool),
            linesearch_failures=jnp.zeros((), jnp.int32),
            skipped_updates=jnp.zeros((), jnp.int32),
        )

    def update(grads, state, params=None, *, value=None, grad=None, value_fn=None):
        check_state(state, LBFGSState, "lbfgs")
        _require("lbfgs", params, value, value_fn)
        x, g, unravel = _flatten("lbfgs", grads, params, grad)
        vg = _flat_value_and_grad(value_fn, unravel, x.dtype)
        Hg = _two_loop(g, state.S, state.Y, state.rho, state.pairs)
        d, _ = _descent_or_steepest(-Hg, g)
        init_step = jnp.where(state.pairs == 0, _first_step(g), 1.0)
        ls = strong_wolfe_line_search(
            vg, x, d, value, g, init_step=init_step, c1=c1, c2=c2,
            max_iters=max_linesearch_iters,
        )  # fmt: skip
        s = ls.step * d
        y = ls.grad - g
        ok = _curvature_ok(s, y)
        slot = jnp.mod(state.pairs, m)
        sy = jnp.where(ok, jnp.vdot(s, y), 1.0)
        restart = ls.failed & ~ok
        new = LBFGSState(
            count=state.count + 1,
            S=jnp.where(ok, state.S.at[slot].set(s), state.S),
            Y=jnp.where(ok, state.Y.at[slot].set(y), state.Y),
            rho=jnp.where(ok, state.rho.at[slot].set(1.0 / sy), state.rho),
            pairs=jnp.where(restart, 0, state.pairs + ok.astype(jnp.int32)),
            step_size=ls.step,
            linesearch_failed=ls.failed,
            linesearch_failures=state.linesearch_failures + ls.failed.astype(jnp.int32),
            skipped_updates=state.skipped_updates + (~ok).astype(jnp.int32),
        )
        return unravel(s), _cast_like(new, state)

    return Optimizer(init, update)


# ----------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------


class MinimizeResult(NamedTuple):
    """Result of :func:`minimize`.

    Attributes:
      params: the final parameters (same pytree as the input).
      value: the loss there (scalar).
      grad_norm: the global L2 norm of the gradient there (scalar).
      iterations: int32, updates made.
      converged: bool, ``grad_norm <= tol``.
      linesearch_failed: bool, whether any line search failed on the way
        (always False for optimizers whose state has no ``linesearch_failed``).
      state: the final optimizer state.
    """

    params: PyTree
    value: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    linesearch_failed: jax.Array
    state: PyTree


def _global_norm(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(
        sum(
            jnp.sum(jnp.abs(x.astype(accumulation_dtype(x.dtype))) ** 2) for x in leaves
        )
    )


def minimize(
    value_fn: ValueFn,
    params: PyTree,
    optimizer: Optimizer,
    *,
    max_iters: int = 500,
    tol: float = 1e-6,
) -> MinimizeResult:
    """Run ``optimizer`` on ``value_fn`` from ``params`` until ``||grad|| <= tol``.

    Each iteration, inside one ``lax.while_loop``::

        f, g = value_and_grad(value_fn)(params)
        updates, state = optimizer.update(g, state, params,
                                          value=f, grad=g, value_fn=value_fn)
        params = apply_updates(params, updates)

    stopping when the gradient's global L2 norm is ``<= tol`` or after
    ``max_iters`` updates. Works for the optimizers of this module and for
    first-order ones (which ignore the keywords). Wrap in ``jax.jit`` as a whole
    if wanted (``value_fn`` and ``optimizer`` are closed over).

    Args:
      value_fn: ``params -> scalar loss``.
      params: the starting pytree.
      optimizer: any :class:`Optimizer` whose ``update`` accepts ``value=``,
        ``grad=`` and ``value_fn=`` (or ``**kwargs``).
      max_iters: the most updates (``>= 0``).
      tol: gradient-norm tolerance (``>= 0``).

    Returns:
      A :class:`MinimizeResult`.

    References:
      [Neacșu & Vasilescu, Second order methods]; Nocedal & Wright, ch. 3 (line-search
      methods and their stopping test).
    """
    max_iters = check_scalar("max_iters", max_iters, lo=0, integer=True)
    tol = check_scalar("tol", tol, lo=0)
    check_params(params)
    vg = jax.value_and_grad(value_fn)
    state = optimizer.init(params)
    f, g = vg(params)

    def failed_of(state):
        flag = getattr(state, "linesearch_failed", None)
        return jnp.zeros((), bool) if flag is None else flag

    carry = (params, state, f, g, _global_norm(g), jnp.zeros((), jnp.int32))
    carry = carry + (jnp.zeros((), bool),)

    def cond(c):
        _, _, _, _, norm, i, _ = c
        return (i < max_iters) & (norm > tol)

    def body(c):
        params, state, f, g, _, i, failed = c
        updates, new_state = optimizer.update(
            g, state, params, value=f, grad=g, value_fn=value_fn
        )
        params = apply_updates(params, updates)
        f, g = vg(params)
        failed = failed | failed_of(new_state)
        return params, new_state, f, g, _global_norm(g), i + 1, failed

    params, state, f, g, norm, i, failed = lax.while_loop(cond, body, carry)
    return MinimizeResult(
        params=params,
        value=f,
        grad_norm=norm,
        iterations=i,
        converged=norm <= tol,
        linesearch_failed=failed,
        state=state,
    )


register_state(NewtonState, "newton")
register_state(ConjugateGradientState, "conjugate_gradient")
register_state(BFGSState, "bfgs")
register_state(LBFGSState, "lbfgs")
