"""User-facing convolution and pooling on NCHW tensors: conv2d, max_pool2d, avg_pool2d.

conv2d normalises its arguments (int / pair / 4-tuple / "same" / "valid" padding, int or pair
stride and dilation, dtype promotion, optional bias, unbatched CHW input) and binds the conv2d
primitive, whose attributes are canonical: stride=(sh, sw), padding=(ph_lo, ph_hi, pw_lo, pw_hi),
dilation=(dh, dw), groups=G. The pools are composites, so their derivatives and batching come
from the primitives they are made of:
  * max_pool2d: pad with -inf (integer dtypes: their minimum), one strided slice per kernel
    offset, stacked on a new last axis and reduced with max (ties share the gradient).
  * avg_pool2d: a depthwise conv2d of the (N*C, 1, H, W) view with a constant 1/(KH*KW) kernel;
    with count_include_pad=False the sums are divided by a constant map of window counts.
"""
from __future__ import annotations

import builtins

import numpy as np

from .. import dtypes as dt
from ..errors import ShapeError
from ..prims import nn as _nn
from .core import _operands, add, astype, constant, max as _max, mul
from .creation import full
from .shape import pad_prim, reshape, slice_prim, stack


def _int(v, what):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ShapeError(f"{what} must be an int, got {v!r}")
    return int(v)


def _pair(v, what) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return (_int(v[0], what), _int(v[1], what))
    raise ShapeError(f"{what} must be an int or a pair of ints, got {v!r}")


def _pads4(padding, what="padding") -> tuple[int, int, int, int]:
    """int p -> (p, p, p, p); (ph, pw) -> (ph, ph, pw, pw); (ph_lo, ph_hi, pw_lo, pw_hi) as is;
    ((ph_lo, ph_hi), (pw_lo, pw_hi)) flattened."""
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, (bool, np.bool_)):
        p = (int(padding),) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(e, (tuple, list)) for e in padding):
        if any(len(e) != 2 for e in padding):
            raise ShapeError(f"{what} {padding!r}: expected ((ph_lo, ph_hi), (pw_lo, pw_hi))")
        p = tuple(_int(v, what) for e in padding for v in e)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        ph, pw = _int(padding[0], what), _int(padding[1], what)
        p = (ph, ph, pw, pw)
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:
        p = tuple(_int(v, what) for v in padding)
    else:
        raise ShapeError(f"{what} must be an int, (ph, pw), (ph_lo, ph_hi, pw_lo, pw_hi) or 'same'/'valid', "
                         f"got {padding!r}")
    if any(v < 0 for v in p):
        raise ShapeError(f"{what} must be non-negative, got {padding!r}")
    return p


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow/JAX 'SAME': output length ceil(size / s), the extra padding going high."""
    if builtins.min(k, s, d) < 1:
        raise ShapeError(f"'same' padding needs a positive kernel size, stride and dilation, got {k}, {s}, {d}")
    out = -(-size // s)
    total = builtins.max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial_input(x, fn):
    if x.ndim == 3:
        return reshape(x, (1,) + tuple(x.shape)), True
    if x.ndim != 4:
        raise ShapeError(f"{fn}: input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x, False


def conv2d_prim(x, weight, stride, padding, dilation, groups=1):
    """Bind the conv2d primitive with canonical attributes (see graphad.prims.nn)."""
    return _nn.conv2d.bind(x, weight, stride=tuple(int(v) for v in stride), padding=tuple(int(v) for v in padding),
                           dilation=tuple(int(v) for v in dilation), groups=int(groups))


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of an NCHW input with an OIHW weight (torch.nn.functional.conv2d).

    padding: int, (ph, pw), (ph_lo, ph_hi, pw_lo, pw_hi), ((ph_lo, ph_hi), (pw_lo, pw_hi)),
    "valid" (none) or "same" (output size ceil(H / stride), extra padding at the high end, as in
    TensorFlow and JAX). A (C, H, W) input is treated as a batch of one. bias has shape (O,).
    """
    x, weight = _operands(x, weight)
    if not x.dtype.is_inexact:  # (complex operands reach conv2d, which refuses them)
        x, weight = astype(x, dt.default_float), astype(weight, dt.default_float)
    x, unbatched = _spatial_input(x, "conv2d")
    if weight.ndim != 4:
        raise ShapeError(f"conv2d: weight must be (O, C/groups, KH, KW), got shape {tuple(weight.shape)}")
    groups = _int(groups, "groups")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads = (0, 0, 0, 0)
        elif mode == "same":
            pads = _same_pads(x.shape[2], weight.shape[2], stride[0], dilation[0]) + \
                _same_pads(x.shape[3], weight.shape[3], stride[1], dilation[1])
        else:
            raise ShapeError(f"conv2d: padding string must be 'same' or 'valid', got {padding!r}")
    else:
        pads = _pads4(padding)
    y = conv2d_prim(x, weight, stride, pads, dilation, groups)
    if bias is not None:
        (b,) = _operands(bias)
        if b.ndim != 1 or b.shape[0] != weight.shape[0]:
            raise ShapeError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(b.shape)}")
        y = add(y, reshape(b, (1, b.shape[0], 1, 1)))
    return reshape(y, tuple(y.shape[1:])) if unbatched else y


def _pool_args(x, kernel_size, stride, padding, dilation, fn):
    x, unbatched = _spatial_input(x, fn)
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None else _pair(stride, "stride")
    d = _pair(dilation, "dilation")
    p = _pads4(padding)
    if builtins.min(k + s + d) < 1:
        raise ShapeError(f"{fn}: kernel_size, stride and dilation must be positive, got {k}, {s}, {d}")
    for axis, kk, dd, lo, hi in (("H", k[0], d[0], p[0], p[1]), ("W", k[1], d[1], p[2], p[3])):
        half = (dd * (kk - 1) + 1) // 2
        if builtins.max(lo, hi) > half:
            raise ShapeError(f"{fn}: padding {builtins.max(lo, hi)} along {axis} exceeds half the (dilated) "
                             f"kernel extent ({half}); a window could hold only padding")
    n, c, h, w = x.shape
    oh = (h + p[0] + p[1] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + p[2] + p[3] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"{fn}: kernel {k} (dilation {d}) does not fit the padded input "
                         f"{(h + p[0] + p[1], w + p[2] + p[3])} of {tuple(x.shape)}")
    return x, unbatched, k, s, p, d, (oh, ow)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """Max over KH x KW windows of an NCHW (or CHW) input; stride defaults to kernel_size.

    padding as in conv2d (int, pair or 4-tuple), filled with -inf, at most half the window.
    A window holding NaN gives NaN (as torch). Gradient: tied maxima share a window's cotangent
    equally (torch gives it all to one); a window holding NaN sends NaN to each of its elements
    (torch: all to the NaN), on both backends.
    """
    (x,) = _operands(x)
    if x.dtype.is_bool:
        x = astype(x, dt.int32)
    x, unbatched, k, s, p, d, (oh, ow) = _pool_args(x, kernel_size, stride, padding, dilation, "max_pool2d")
    n, c = x.shape[:2]
    if any(p):
        fill = -np.inf if x.dtype.is_float else float(np.iinfo(x.dtype.np).min)
        x = pad_prim(x, (0, 0, p[0], p[2]), (0, 0, p[1], p[3]), (0, 0, 0, 0), fill)
    taps = []
    for i in range(k[0]):
        for j in range(k[1]):
            a, b = i * d[0], j * d[1]
            taps.append(slice_prim(x, (0, 0, a, b), (n, c, a + (oh - 1) * s[0] + 1, b + (ow - 1) * s[1] + 1),
                                   (1, 1, s[0], s[1])))
    y = taps[0] if len(taps) == 1 else _max(stack(taps, 4), 4)
    return reshape(y, tuple(y.shape[1:])) if unbatched else y


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, divisor_override=None):
    """Mean over KH x KW windows of an NCHW (or CHW) input; stride defaults to kernel_size.

    Zero padding as in conv2d (at most half the window). count_include_pad=False divides each
    window by the number of real (unpadded) elements in it; divisor_override replaces the divisor.
    """
    (x,) = _operands(x)
    if not x.dtype.is_inexact:
        x = astype(x, dt.default_float)
    x, unbatched, k, s, p, d, (oh, ow) = _pool_args(x, kernel_size, stride, padding, 1, "avg_pool2d")
    n, c, h, w = x.shape
    if divisor_override is not None:
        scale = 1.0 / float(divisor_override)
    elif count_include_pad or not any(p):
        scale = 1.0 / (k[0] * k[1])
    else:
        scale = None
    kern = full((1, 1, k[0], k[1]), 1.0 if scale is None else scale, x.dtype)
    y = conv2d_prim(reshape(x, (n * c, 1, h, w)), kern, s, p, (1, 1), 1)
    y = reshape(y, (n, c, oh, ow))
    if scale is None:
        counts = _window_counts(h, w, k, s, p)
        y = mul(y, constant(1.0 / counts, x.dtype))
    return reshape(y, tuple(y.shape[1:])) if unbatched else y


def _window_counts(h, w, k, s, p) -> np.ndarray:
    """(OH, OW) number of unpadded elements in each pooling window (a static NumPy map)."""
    def axis(size, kk, ss, lo, hi):
        out = (size + lo + hi - kk) // ss + 1
        starts = np.arange(out) * ss - lo
        return np.minimum(starts + kk, size) - np.maximum(starts, 0)
    return np.outer(axis(h, k[0], s[0], p[0], p[1]), axis(w, k[1], s[1], p[2], p[3])).astype(np.float64)
