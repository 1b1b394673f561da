"""2-D convolution, max and average pooling, and flattening (NHWC), by hand.

Shapes: inputs ``X`` are ``(m, H, W, C)`` (batch, height, width, channels),
kernels ``K`` are ``(kh, kw, C, F)`` (HWIO), outputs ``(m, H', W', F)`` with
H' = (H + p_top + p_bottom − kh)//s + 1 (likewise W').

im2col: the patch of output position (i, j) is the window X_pad[s·i : s·i + kh,
s·j : s·j + kw, :], flattened to kh·kw·C numbers. Stacking every patch of every
example gives the matrix P of shape (m·H'·W', kh·kw·C), and

    Forward:   Y = P @ K_mat + b            K_mat = K.reshape(kh·kw·C, F)
    Backward:  dK_mat = Pᵀ @ dY,  db = Σ dY,  dP = dY @ K_matᵀ
               dX_pad = col2im(dP): every patch's gradient added back at the
               window it was read from (``.at[].add``), then the padding cropped.

"Convolution" is the deep-learning cross-correlation (no kernel flip), as in
``jax.lax.conv_general_dilated``.

Pooling reads the same windows, per channel:

    MaxPool:  y = max over the window; dX gets dy at the window's argmax (the
              first one on ties; the forward reads y at that index, so
              ``jax.grad`` routes ties the same way, where ``jnp.max`` would
              split them evenly).
    AvgPool:  y = mean over the window; dX gets dy/(kh·kw) at every position.

References: [Balvert, Convolution layers: Local receptive fields]; [Laurent],
"Conclusion" (CNNs, LeCun 1998).
"""

import math

import jax
import jax.numpy as jnp

from .. import initializers as _initializers
from ._block import Block, ShapeError, stateless
from ._spec import builtin


def _pair(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, list):  # a pair read back from JSON (a block spec)
        value = tuple(value)
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) < 1
    ):
        raise ValueError(f"{name} must be a positive int or a pair, got {value!r}.")
    return value


def _pads(size, k, s, padding):
    """(low, high) padding of one spatial axis for ``padding`` (as lax does)."""
    if padding == "VALID":
        return 0, 0
    if padding == "SAME":
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2
    return padding, padding


def _check_padding(padding):
    if padding in ("VALID", "SAME"):
        return padding
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    raise ValueError(
        f"padding must be 'VALID', 'SAME' or a non-negative int, got {padding!r}."
    )


def _geometry(shape, window, stride, padding):
    """Paddings and output size for spatial ``shape`` (H, W); ShapeError if empty."""
    (kh, kw), (sh, sw) = window, stride
    ph, pw = _pads(shape[0], kh, sh, padding), _pads(shape[1], kw, sw, padding)
    Ho = (shape[0] + sum(ph) - kh) // sh + 1
    Wo = (shape[1] + sum(pw) - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ShapeError(
            f"window {window} with padding {padding!r} does not fit input {shape}"
        )
    return ph, pw, Ho, Wo


def _windows(X_pad, window, stride, out):
    """The patches: (m, H', W', kh, kw, C), entry [.., i, j, a, b, c] =
    X_pad[.., s·i + a, s·j + b, c], by strided slicing."""
    (kh, kw), (sh, sw), (Ho, Wo) = window, stride, out
    rows = []
    for a in range(kh):
        cols = []
        for b in range(kw):
            cols.append(
                X_pad[:, a : a + sh * (Ho - 1) + 1 : sh, b : b + sw * (Wo - 1) + 1 : sw]
            )
        rows.append(jnp.stack(cols, axis=3))
    return jnp.stack(rows, axis=3)


def _windows_backward(dwin, padded_shape, window, stride):
    """col2im: add each window's gradient back where it was read from."""
    (kh, kw), (sh, sw) = window, stride
    Ho, Wo = dwin.shape[1:3]
    dX_pad = jnp.zeros(padded_shape, dwin.dtype)
    for a in range(kh):
        for b in range(kw):
            dX_pad = dX_pad.at[
                :, a : a + sh * (Ho - 1) + 1 : sh, b : b + sw * (Wo - 1) + 1 : sw
            ].add(dwin[:, :, :, a, b])
    return dX_pad


def _pad(X, ph, pw):
    return jnp.pad(X, ((0, 0), ph, pw, (0, 0)))


def _crop(dX_pad, ph, pw):
    H, W = dX_pad.shape[1] - sum(ph), dX_pad.shape[2] - sum(pw)
    return dX_pad[:, ph[0] : ph[0] + H, pw[0] : pw[0] + W]


def _check_nhwc(X, channels=None):
    if X.ndim != 4 or (channels is not None and X.shape[-1] != channels):
        c = "C" if channels is None else channels
        raise ShapeError(f"expected NHWC input (m, H, W, {c}), got {X.shape}")


@builtin
def Conv2D(
    n_filters: int,
    kernel_size,
    stride=1,
    padding="VALID",
    *,
    W_init="he_normal",
    b_init="zeros",
) -> Block:
    """A 2-D convolution layer (cross-correlation), NHWC inputs, HWIO kernels.

    Forward Y = im2col(X) @ K_mat + b; backward dK = im2col(X)ᵀ dY, db = Σ dY,
    dX = col2im(dY K_matᵀ) (module docstring).

    Args:
      n_filters: F, the number of output channels.
      kernel_size: kh (square) or (kh, kw).
      stride: s or (sh, sw).
      padding: ``"VALID"`` (none), ``"SAME"`` (output ⌈H/s⌉, the extra row/column
        at the bottom/right, as ``jax.lax``) or an int p (p rows/columns of zeros
        on every side).
      W_init, b_init: initializers; the fan-in of K is kh·kw·C.

    Returns:
      A :class:`Block` with params ``{"W": (kh, kw, C, F), "b": (F,)}`` mapping
      ``(m, H, W, C)`` to ``(m, H', W', F)``.
    """
    if not isinstance(n_filters, int) or n_filters < 1:
        raise ValueError(f"Conv2D n_filters must be a positive int, got {n_filters!r}.")
    window = _pair(kernel_size, "kernel_size")
    strides = _pair(stride, "stride")
    padding = _check_padding(padding)
    W_init, b_init = _initializers.get(W_init), _initializers.get(b_init)

    def init(key, in_shape, dtype):
        if len(in_shape) != 3:
            raise ShapeError(f"Conv2D expects (H, W, C) inputs, got {in_shape}")
        H, W, C = in_shape
        _, _, Ho, Wo = _geometry((H, W), window, strides, padding)
        key_W, key_b = jax.random.split(key)
        params = {
            "W": W_init(key_W, (*window, C, n_filters), dtype),
            "b": b_init(key_b, (n_filters,), dtype),
        }
        return params, (Ho, Wo, n_filters)

    def forward(params, X):
        K, b = params["W"], params["b"]
        _check_nhwc(X, K.shape[2])
        ph, pw, Ho, Wo = _geometry(X.shape[1:3], window, strides, padding)
        X_pad = _pad(X, ph, pw)
        P = _windows(X_pad, window, strides, (Ho, Wo)).reshape(
            -1, math.prod(K.shape[:3])
        )
        Y = P @ K.reshape(-1, n_filters) + b
        return Y.reshape(X.shape[0], Ho, Wo, n_filters), (X, P)

    def backward(params, cache, dY):
        X, P = cache
        ph, pw, _, _ = _geometry(X.shape[1:3], window, strides, padding)
        padded = (X.shape[0], X.shape[1] + sum(ph), X.shape[2] + sum(pw), X.shape[3])
        K = params["W"]
        dY_mat = dY.reshape(-1, n_filters)
        grads = {"W": (P.T @ dY_mat).reshape(K.shape), "b": jnp.sum(dY_mat, axis=0)}
        dP = (dY_mat @ K.reshape(-1, n_filters).T).reshape(*dY.shape[:3], *K.shape[:3])
        dX_pad = _windows_backward(dP, padded, window, strides)
        return grads, _crop(dX_pad, ph, pw)

    label = f"Conv2D({n_filters}, {window}, stride={strides}, padding={padding!r})"
    return stateless(label, init, forward, backward)


def _pool(kind, window, stride):
    window = _pair(window, "window")
    strides = window if stride is None else _pair(stride, "stride")

    def init(key, in_shape, dtype):
        if len(in_shape) != 3:
            raise ShapeError(f"{kind} expects (H, W, C) inputs, got {in_shape}")
        _, _, Ho, Wo = _geometry(in_shape[:2], window, strides, "VALID")
        return {}, (Ho, Wo, in_shape[2])

    def windows(X):
        _check_nhwc(X)
        _, _, Ho, Wo = _geometry(X.shape[1:3], window, strides, "VALID")
        win = _windows(X, window, strides, (Ho, Wo))  # (m, H', W', kh, kw, C)
        return win.reshape(*win.shape[:3], -1, X.shape[3])  # (m, H', W', kh·kw, C)

    def unwindows(dwin, shape):
        dwin = dwin.reshape(*dwin.shape[:3], *window, shape[3])
        return _windows_backward(dwin, shape, window, strides)

    if kind == "MaxPool2D":

        def forward(params, X):
            win = windows(X)  # (m, H', W', kh·kw, C)
            arg = jnp.argmax(win, axis=3)  # (m, H', W', C)
            Y = jnp.take_along_axis(win, arg[:, :, :, None], axis=3)[:, :, :, 0]
            return Y, (X, arg)

        def backward(params, cache, dY):
            X, arg = cache
            n = window[0] * window[1]
            dwin = jnp.moveaxis(jax.nn.one_hot(arg, n, dtype=dY.dtype), -1, 3)
            return {}, unwindows(dwin * dY[:, :, :, None, :], X.shape)

    else:

        def forward(params, X):
            return jnp.mean(windows(X), axis=3), X

        def backward(params, X, dY):
            n = window[0] * window[1]
            dwin = jnp.broadcast_to(
                dY[:, :, :, None, :] / n, (*dY.shape[:3], n, dY.shape[3])
            )
            return {}, unwindows(dwin, X.shape)

    return stateless(f"{kind}({window}, stride={strides})", init, forward, backward)


@builtin
def MaxPool2D(window=2, stride=None) -> Block:
    """Max pooling over (kh, kw) windows, per channel, no padding.

    y[i, j, c] = max_{a<kh, b<kw} x[s·i + a, s·j + b, c]; the backward sends
    dy[i, j, c] to the window's argmax (first in row-major order on ties).

    Args:
      window: kh or (kh, kw).
      stride: s or (sh, sw); ``None`` (default) means the window (no overlap).

    Returns:
      A :class:`Block` without params mapping ``(m, H, W, C)`` to
      ``(m, H', W', C)``, H' = (H − kh)//sh + 1.
    """
    return _pool("MaxPool2D", window, stride)


@builtin
def AvgPool2D(window=2, stride=None) -> Block:
    """Average pooling over (kh, kw) windows, per channel, no padding.

    y[i, j, c] = (1/(kh·kw)) Σ_{a, b} x[s·i + a, s·j + b, c]; the backward adds
    dy[i, j, c]/(kh·kw) to every position of the window.

    Args:
      window: kh or (kh, kw).
      stride: s or (sh, sw); ``None`` (default) means the window.

    Returns:
      A :class:`Block` without params, ``(m, H, W, C)`` to ``(m, H', W', C)``.
    """
    return _pool("AvgPool2D", window, stride)


@builtin
def Flatten() -> Block:
    """Flatten every axis but the batch axis: y = x.reshape(m, −1); dx = dy
    reshaped back. No params.

    Returns:
      A :class:`Block` mapping ``(m, *in_shape)`` to ``(m, prod(in_shape))``.
    """

    def init(key, in_shape, dtype):
        return {}, (math.prod(in_shape),)

    def forward(params, X):
        if X.ndim < 1:
            raise ShapeError(f"expected a batch (m, ...), got a scalar {X.shape}")
        return X.reshape(X.shape[0], -1), X

    def backward(params, X, dY):
        return {}, dY.reshape(X.shape)

    return stateless("Flatten()", init, forward, backward)
