"""Neural-network primitives: conv2d (NCHW input, OIHW weight, strides, padding, dilation, groups).

Attributes are canonical (normalised by graphad.ops.conv2d), flat tuples of Python ints:
  stride   = (sh, sw)                     >= 1
  padding  = (ph_lo, ph_hi, pw_lo, pw_hi) >= 0, zero padding of the input's H and W edges
  dilation = (dh, dw)                     >= 1, kernel dilation (gaps between the taps)
  groups   = G                            >= 1; C == G * weight.shape[1] and O % G == 0
Output: (N, O, OH, OW) with OH = (H + ph_lo + ph_hi - (dh*(KH-1)+1)) // sh + 1 (likewise OW).

  y[n, o, p, q] = sum_{c, i, j} xpad[n, g(o)*Cg + c, p*sh + i*dh, q*sw + j*dw] * w[o, c, i, j]

The rules are written with primitives only (conv2d itself, pad with interior padding, flip,
transpose, reshape, slice), so derivative graphs are differentiable again:
  * d/dx: the cotangent, interior-padded by stride-1 and edge-padded by dilated_kernel-1
    (less the forward padding, plus the rows the forward never reached), correlated with the
    spatially flipped, in/out-swapped kernel at the forward dilation; cropped when the forward
    padding exceeds dilated_kernel-1. Input rows no window touched get zero gradient.
  * d/dw: a conv2d that correlates the input (N and C swapped) with the cotangent (N and O
    swapped) used as kernel: stride and dilation exchange roles; cropped to (KH, KW).
  * batching folds the batch axis of x into N, of w into O (groups kept per example), and of
    both into the groups: x -> (N, B*C, H, W), w -> (B*O, Cg, KH, KW), groups B*G. No loops.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir.core import TensorType
from ._util import add_any, bf16_in_f32, moveaxis_to_front, same_dtype
from .registry import Primitive, ops, register


def _conv_out_len(n: int, lo: int, hi: int, k: int, s: int, d: int) -> int:
    """Output length along one spatial axis (may be <= 0 when the kernel does not fit)."""
    return (n + lo + hi - (d * (k - 1) + 1)) // s + 1


def _check_attrs(stride, padding, dilation, groups):
    def ints(v, n, what, lo):
        if not (isinstance(v, (tuple, list)) and len(v) == n and all(isinstance(a, int) and not isinstance(a, bool)
                                                             for a in v)):
            raise ShapeError(f"{what} must be a tuple of {n} ints, got {v!r}")
        if any(a < lo for a in v):
            raise ShapeError(f"{what} entries must be >= {lo}, got {v!r}")
    ints(stride, 2, "stride", 1)
    ints(padding, 4, "padding (ph_lo, ph_hi, pw_lo, pw_hi)", 0)
    ints(dilation, 2, "dilation", 1)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ShapeError(f"groups must be a positive int, got {groups!r}")


def _conv2d_shape(x: TensorType, w: TensorType, stride, padding, dilation, groups):
    _check_attrs(stride, padding, dilation, groups)
    if x.ndim != 4:
        raise ShapeError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    if w.ndim != 4:
        raise ShapeError(f"weight must be 4-D (O, C/groups, KH, KW), got shape {w.shape}")
    if not x.dtype.is_float or not w.dtype.is_float:
        raise DTypeError(f"conv2d takes floating-point operands, got input {x.dtype.name} and weight {w.dtype.name}")
    d = same_dtype(x, w)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if cg * groups != c:
        raise ShapeError(f"channel mismatch: input has {c} channels, weight expects {cg} per group x "
                         f"{groups} group(s) = {cg * groups}")
    if o % groups:
        raise ShapeError(f"output channels {o} are not divisible by groups={groups}")
    if kh < 1 or kw < 1:
        raise ShapeError(f"empty kernel {(kh, kw)}")
    out = []
    for axis, size, lo, hi, k, s, dl in (("H", h, padding[0], padding[1], kh, stride[0], dilation[0]),
                                         ("W", wd, padding[2], padding[3], kw, stride[1], dilation[1])):
        if size + lo + hi < dl * (k - 1) + 1:
            raise ShapeError(f"kernel {axis} extent {dl * (k - 1) + 1} (size {k}, dilation {dl}) is larger than "
                             f"the padded input {axis} {size + lo + hi} ({size} + padding {lo}+{hi})")
        out.append(_conv_out_len(size, lo, hi, k, s, dl))
    return TensorType((n, o, out[0], out[1]), d)


@bf16_in_f32
def _conv2d_impl(x, w, stride, padding, dilation, groups):
    """Sliding windows (a strided view) contracted with the kernel by one batched matmul per group."""
    sh, sw = stride
    dh, dw = dilation
    ph0, ph1, pw0, pw1 = padding
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    g = groups
    og = o // g
    xp = np.pad(x, ((0, 0), (0, 0), (ph0, ph1), (pw0, pw1))) if any(padding) else x
    xp = np.ascontiguousarray(xp)
    oh = _conv_out_len(xp.shape[2], 0, 0, kh, sh, dh)
    ow = _conv_out_len(xp.shape[3], 0, 0, kw, sw, dw)
    s0, s1, s2, s3 = xp.strides
    # (N, C, OH, OW, KH, KW) view of the windows
    win = np.lib.stride_tricks.as_strided(xp, (n, c, oh, ow, kh, kw),
                                          (s0, s1, s2 * sh, s3 * sw, s2 * dh, s3 * dw), writeable=False)
    win = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, n * oh * ow, cg * kh * kw)
    wm = w.reshape(g, og, cg * kh * kw).transpose(0, 2, 1)               # (G, Cg*KH*KW, Og)
    y = np.matmul(win, wm)                                                 # (G, N*OH*OW, Og)
    y = y.reshape(g, n, oh, ow, og).transpose(1, 0, 4, 2, 3).reshape(n, o, oh, ow)
    return np.ascontiguousarray(y, dtype=x.dtype)


def _conv(x, w, stride, padding, dilation, groups):
    return conv2d.bind(x, w, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                       groups=int(groups))


def _crop(x, starts, stops):
    """x[..., starts[0]:stops[0], starts[1]:stops[1]] (no node when nothing is cropped)."""
    if tuple(starts) == (0, 0) and tuple(stops) == tuple(x.shape[2:]):
        return x
    return ops.slice_prim(x, (0, 0) + tuple(starts), tuple(x.shape[:2]) + tuple(stops), (1, 1, 1, 1))


# ---------------------------------------------------------------- derivatives

def _conv2d_jvp(p, t, o, stride, padding, dilation, groups):
    x, w = p
    a = None if t[0] is None else _conv(t[0], w, stride, padding, dilation, groups)
    b = None if t[1] is None else _conv(x, t[1], stride, padding, dilation, groups)
    return [add_any(a, b)]


def _grad_input(ct, x_shape, w, stride, padding, dilation, groups):
    """d/dx: transposed convolution of the cotangent, written as a conv2d."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    g, og = groups, o // groups
    oh, ow = ct.shape[2], ct.shape[3]
    lo, hi, crop_lo, crop_hi = [], [], [], []
    for size, plo, phi, k, s, d, m in ((h, padding[0], padding[1], kh, stride[0], dilation[0], oh),
                                       (wd, padding[2], padding[3], kw, stride[1], dilation[1], ow)):
        ke = d * (k - 1) + 1
        rest = size + plo + phi - ((m - 1) * s + ke)     # padded rows after the last window (never read)
        a, b = ke - 1 - plo, ke - 1 + rest - phi         # edge padding of the dilated cotangent
        lo.append(max(a, 0)), hi.append(max(b, 0))
        crop_lo.append(max(-a, 0)), crop_hi.append(max(-b, 0))
    ctp = ops.pad_prim(ct, (0, 0, lo[0], lo[1]), (0, 0, hi[0], hi[1]), (0, 0, stride[0] - 1, stride[1] - 1), 0.0)
    # kernel (O, Cg, KH, KW) -> (C, Og, KH, KW) per group, flipped spatially
    wt = ops.reshape(w, (g, og, cg, kh, kw))
    wt = ops.transpose(wt, (0, 2, 1, 3, 4))
    wt = ops.reshape(wt, (c, og, kh, kw))
    wt = ops.flip(wt, (2, 3))
    gx = _conv(ctp, wt, (1, 1), (0, 0, 0, 0), dilation, groups)
    return _crop(gx, (crop_lo[0], crop_lo[1]), (crop_lo[0] + h, crop_lo[1] + wd))


def _grad_weight(ct, x, w_shape, stride, padding, dilation, groups):
    """d/dw: correlate the input with the cotangent (stride and dilation swap roles)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w_shape
    g, og = groups, o // groups
    oh, ow = ct.shape[2], ct.shape[3]
    pads = []
    for size, plo, phi, k, s, d, m in ((h, padding[0], padding[1], kh, stride[0], dilation[0], oh),
                                       (wd, padding[2], padding[3], kw, stride[1], dilation[1], ow)):
        rest = size + plo + phi - ((m - 1) * s + d * (k - 1) + 1)
        pads += [plo, max(phi - rest, 0)]  # skip high padding that no window reads
    # input as (Cg, G*N, H, W): batch = channel within group, channels = (group, example)
    xt = ops.reshape(x, (n, g, cg, h, wd))
    xt = ops.transpose(xt, (2, 1, 0, 3, 4))
    xt = ops.reshape(xt, (cg, g * n, h, wd))
    # cotangent as kernel (O, N, OH, OW): out channel o reads group o // Og
    ctt = ops.transpose(ct, (1, 0, 2, 3))
    gw = _conv(xt, ctt, dilation, tuple(pads), stride, groups)      # (Cg, O, >=KH, >=KW)
    gw = _crop(gw, (0, 0), (kh, kw))
    return ops.transpose(gw, (1, 0, 2, 3))


def _conv2d_vjp(cts, p, o, stride, padding, dilation, groups):
    x, w = p
    ct = cts[0]
    return [_grad_input(ct, x.shape, w, stride, padding, dilation, groups),
            _grad_weight(ct, x, w.shape, stride, padding, dilation, groups)]


# ---------------------------------------------------------------- batching

def _conv2d_batch(args, dims, stride, padding, dilation, groups):
    x, w = args
    dx, dw_ = dims
    attrs = (stride, padding, dilation)
    if dw_ is None:  # fold the batch into N
        x = moveaxis_to_front(x, dx)
        b, n = x.shape[0], x.shape[1]
        y = _conv(ops.reshape(x, (b * n,) + tuple(x.shape[2:])), w, *attrs, groups)
        return [ops.reshape(y, (b, n) + tuple(y.shape[1:]))], [0]
    w = moveaxis_to_front(w, dw_)
    b, o, cg, kh, kw = w.shape
    g, og = groups, o // groups
    if dx is None:  # fold the batch into O, inside each group: out channels ordered (G, B, Og)
        wf = ops.reshape(w, (b, g, og, cg, kh, kw))
        wf = ops.transpose(wf, (1, 0, 2, 3, 4, 5))
        wf = ops.reshape(wf, (g * b * og, cg, kh, kw))
        y = _conv(x, wf, *attrs, groups)                          # (N, G*B*Og, OH, OW)
        n, _, oh, ow = y.shape
        y = ops.reshape(y, (n, g, b, og, oh, ow))
        y = ops.transpose(y, (0, 2, 1, 3, 4, 5))
        return [ops.reshape(y, (n, b, o, oh, ow))], [1]
    # both batched: the batch becomes more groups (example b's channels meet only its kernel)
    x = moveaxis_to_front(x, dx)
    _, n, c, h, wd = x.shape
    xf = ops.reshape(ops.transpose(x, (1, 0, 2, 3, 4)), (n, b * c, h, wd))
    wf = ops.reshape(w, (b * o, cg, kh, kw))
    y = _conv(xf, wf, *attrs, b * g)                               # (N, B*O, OH, OW)
    y = ops.reshape(y, (n, b, o) + tuple(y.shape[2:]))
    return [y], [1]


conv2d = register(Primitive(
    "conv2d", shape_rule=_conv2d_shape, impl=_conv2d_impl, jvp=_conv2d_jvp, vjp=_conv2d_vjp, batch=_conv2d_batch,
    traits=("bilinear",),
    formula="y[n,o,p,q] = sum_{c,i,j} xpad[n, g*Cg+c, p*sh+i*dh, q*sw+j*dw] w[o,c,i,j]; dy = conv(dx, w) + conv(x, dw)"))
