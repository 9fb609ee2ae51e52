"""Reduction primitives: sum, max, min, prod over an axis tuple, argmax/argmin over one axis.

Attributes are canonical: `axes` a sorted tuple of non-negative axes, `keepdims` a bool. Batch
rules move the batch axis to 0 and shift the reduced axes by one.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError, ShapeError
from ..ir.core import TensorType
from ._util import bf16_in_f32, f16_in_f32, moveaxis_to_front, norm_axis
from .registry import Primitive, ops, register


def _reduce_shape(x: TensorType, axes, keepdims):
    for a in axes:
        # hand-written IR reaches here unnormalised: an axis must be an int (1.5 passes the range
        # check) and appear once (TVM refuses a repeated reduction axis when it lowers the graph)
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise ShapeError(f"axis {a!r} is not an int")
        if not 0 <= a < x.ndim:
            raise ShapeError(f"axis {a} is out of range for a tensor of rank {x.ndim}")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated axis in axes {tuple(axes)}")
    if x.dtype.is_bool:
        raise DTypeError("cannot reduce a bool tensor; cast it first")
    if keepdims:
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    else:
        shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    return TensorType(shape, x.dtype)


def _keep_shape(x_shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(x_shape))


def _expand_back(y, x_shape, axes, keepdims):
    """Reshape a reduced value so it broadcasts against the operand."""
    return y if keepdims else ops.reshape(y, _keep_shape(x_shape, axes))


def _reduce_batch(ref):
    def batch(args, dims, axes, keepdims):
        x = moveaxis_to_front(args[0], dims[0])
        return [ref[0].bind(x, axes=tuple(a + 1 for a in axes), keepdims=keepdims)], [0]
    return batch


def _reduction(name, impl, jvp, vjp, formula, traits=(), shape_rule=None):
    ref: list = []
    p = register(Primitive(name, shape_rule=shape_rule or _reduce_shape, impl=impl, jvp=jvp, vjp=vjp, batch=_reduce_batch(ref),
                           traits=("reduction",) + tuple(traits), formula=formula))
    ref.append(p)
    return p


def _sum_vjp(c, p, o, axes, keepdims):
    return [ops.broadcast_to(_expand_back(c[0], p[0].shape, axes, keepdims), p[0].shape)]


@bf16_in_f32
@f16_in_f32
def _np_sum(a, axes, keepdims):
    if all(a.shape[ax] == 1 for ax in axes):
        # a sum of one term is that term, as XLA (and graphad's compiled code and simplify) take it:
        # -0.0 stays -0.0 where NumPy would add its +0.0 identity
        out = a if keepdims else a.reshape([n for i, n in enumerate(a.shape) if i not in axes])
        return out.copy()
    return np.sum(a, axis=axes, keepdims=keepdims, dtype=a.dtype)


reduce_sum = _reduction("sum", _np_sum,
                        lambda p, t, o, axes, keepdims: [ops.sum(t[0], axes, keepdims)],
                        _sum_vjp, "d sum(x) = sum(dx)", traits=("linear",))


def _extremum_mask(x, y, axes, keepdims):
    """1/count where x attains the reduced extremum y (ties share the derivative), else 0."""
    yb = _expand_back(y, x.shape, axes, keepdims)
    m = ops.astype(ops.equal(x, yb), x.dtype)
    cnt = ops.sum(m, axes, True)
    return ops.div(m, cnt)


def _extremum_jvp(p, t, o, axes, keepdims):
    w = _extremum_mask(p[0], o[0], axes, keepdims)
    return [ops.sum(ops.mul(t[0], w), axes, keepdims)]


def _extremum_vjp(c, p, o, axes, keepdims):
    w = _extremum_mask(p[0], o[0], axes, keepdims)
    return [ops.mul(_expand_back(c[0], p[0].shape, axes, keepdims), w)]


def _refuse_complex(x: TensorType, what: str):
    if x.dtype.is_complex:
        raise DTypeError(f"{x.dtype.name} operand: {what} (docs/complex.md lists the ops that take complex numbers)")


def _extremum_shape(x: TensorType, axes, keepdims):
    """max/min have no identity: reducing an empty axis is a shape error (not a kernel crash)."""
    _refuse_complex(x, "complex numbers are not ordered")
    out = _reduce_shape(x, axes, keepdims)
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"max/min over an empty axis (axes {tuple(axes)} of shape {x.shape}) has no identity")
    return out


# (float16 through float32: NumPy's float16 max returns the first of -0.0 and 0.0, its float32 max
# and the compiled code +0.0, an lowp trial; exact either way)
reduce_max = _reduction("max", f16_in_f32(lambda a, axes, keepdims: np.max(a, axis=axes, keepdims=keepdims)),
                        _extremum_jvp, _extremum_vjp, "d max(x) = mean of dx over the argmax set",
                        shape_rule=_extremum_shape)
reduce_min = _reduction("min", f16_in_f32(lambda a, axes, keepdims: np.min(a, axis=axes, keepdims=keepdims)),
                        _extremum_jvp, _extremum_vjp, "d min(x) = mean of dx over the argmin set",
                        shape_rule=_extremum_shape)


def _exclusive_cumprod_last(a):
    """prod of a[..., :i] along the last axis, by log-depth doubling (Hillis-Steele) with slice/pad/mul.

    Only multiplications: no division and no masks, so it is exact with zeros and so are its own
    derivatives (a where-masked formula loses the second derivative at zeros).
    """
    nd = len(a.shape)
    n = a.shape[-1]

    def shift(v, k):  # v[..., i - k], ones for i < k
        stops = tuple(a.shape[:-1]) + (n - k,)
        cut = ops.slice_prim(v, (0,) * nd, stops, (1,) * nd)
        return ops.pad_prim(cut, (0,) * (nd - 1) + (k,), (0,) * nd, (0,) * nd, 1.0)
    p = shift(a, 1)
    k = 1
    while k < n - 1:
        p = ops.mul(p, shift(p, k))
        k *= 2
    return p


def _prod_partials(x, y, axes, keepdims):
    """d prod(x) / d x_i = prod of the other elements = exclusive prefix * exclusive suffix product."""
    if not axes or x.size == 0:
        return ops.ones_like(x)
    keep = tuple(i for i in range(len(x.shape)) if i not in axes)
    perm = keep + tuple(axes)
    n = 1
    for a in axes:
        n *= x.shape[a]
    xt = ops.transpose(x, perm) if perm != tuple(range(len(x.shape))) else x
    moved_shape = tuple(xt.shape)
    flat = ops.reshape(xt, tuple(x.shape[i] for i in keep) + (n,))
    last = (len(flat.shape) - 1,)
    before = _exclusive_cumprod_last(flat)
    after = ops.flip(_exclusive_cumprod_last(ops.flip(flat, last)), last)
    d = ops.reshape(ops.mul(before, after), moved_shape)
    if perm == tuple(range(len(x.shape))):
        return d
    inv = [0] * len(perm)
    for i, q in enumerate(perm):
        inv[q] = i
    return ops.transpose(d, tuple(inv))


def _prod_jvp(p, t, o, axes, keepdims):
    return [ops.sum(ops.mul(t[0], _prod_partials(p[0], o[0], axes, keepdims)), axes, keepdims)]


def _prod_vjp(c, p, o, axes, keepdims):
    return [ops.mul(_expand_back(c[0], p[0].shape, axes, keepdims), _prod_partials(p[0], o[0], axes, keepdims))]


# prod takes complex operands: its partials are products of the other elements (multiplications
# only), so the jvp sum_i p_i dx_i and the vjp ct p_i are JAX's holomorphic rules as they stand
reduce_prod = _reduction("prod", bf16_in_f32(f16_in_f32(
                             lambda a, axes, keepdims: np.prod(a, axis=axes, keepdims=keepdims, dtype=a.dtype))),
                         _prod_jvp, _prod_vjp, "d prod(x) = sum_i prod_{j != i} x_j dx_i (complex too: holomorphic)")


def _arg_shape(x: TensorType, axis, keepdims):
    _refuse_complex(x, "complex numbers are not ordered")
    axis = norm_axis(axis, x.ndim) if x.ndim else 0
    if x.ndim and axis != int(axis):
        raise ShapeError("bad axis")
    if keepdims:
        shape = tuple(1 if i == axis else s for i, s in enumerate(x.shape))
    else:
        shape = tuple(s for i, s in enumerate(x.shape) if i != axis)
    if x.ndim and x.shape[axis] == 0:
        raise ShapeError("arg-reduction over an empty axis")
    return TensorType(shape, dt.int64)


def _arg_batch(ref):
    def batch(args, dims, axis, keepdims):
        x = moveaxis_to_front(args[0], dims[0])
        return [ref[0].bind(x, axis=axis + 1, keepdims=keepdims)], [0]
    return batch


def _argred(name, fn):
    ref: list = []

    def impl(a, axis, keepdims):
        r = fn(a, axis=axis if a.ndim else None)
        if keepdims and a.ndim:
            r = np.expand_dims(r, axis)
        return np.asarray(r, np.int64)
    p = register(Primitive(name, shape_rule=_arg_shape, impl=impl, batch=_arg_batch(ref), nondiff="integer output",
                           traits=("reduction",), formula="index of the extremum along axis"))
    ref.append(p)
    return p


argmax = _argred("argmax", np.argmax)
argmin = _argred("argmin", np.argmin)


# ---------------------------------------------------------------- cumsum (issue 17)

def _cumsum_shape(x: TensorType, axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis!r} is not an axis of a tensor of rank {x.ndim}")
    if x.dtype.is_bool:
        raise DTypeError("cannot cumsum a bool tensor; cast it first")
    return TensorType(x.shape, x.dtype)


def _cumsum_vjp(c, p, o, axis):
    # the adjoint of an inclusive prefix sum is the inclusive suffix sum
    return [ops.flip(ops.cumsum(ops.flip(c[0], axis), axis), axis)]


def _cumsum_batch(args, dims, axis):
    return [cumsum.bind(moveaxis_to_front(args[0], dims[0]), axis=axis + 1)], [0]


cumsum = register(Primitive(
    "cumsum", shape_rule=_cumsum_shape,
    # half types accumulated in float32 and rounded once, as the compiled kernel (relax_ops' cumsum)
    # and the sums do: NumPy's float16 cumsum rounds every partial sum to float16 (found by the
    # fuzzer: a vmapped float16 cumsum, compiled 9.859 (correctly rounded), interpreted 9.852)
    impl=bf16_in_f32(f16_in_f32(lambda a, axis: np.cumsum(a, axis=axis, dtype=a.dtype))),
    jvp=lambda p, t, o, axis: [ops.cumsum(t[0], axis)], vjp=_cumsum_vjp, batch=_cumsum_batch,
    traits=("linear",), formula="y_i = sum_{j <= i} x_j along axis; dx = reversed cumsum of dy"))
