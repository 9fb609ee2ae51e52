"""Helpers shared by the primitive families: broadcasting, axis normalisation, batching moves.

The batching helpers implement the convention of every batch rule: a batched operand carries
its batch axis at position `dim`; rules usually move it to axis 0 first (`moveaxis_to_front`).
"""
from __future__ import annotations

import functools
import operator
from typing import Sequence

import numpy as np

from ..dtypes import is_bfloat16, numpy_bfloat16
from ..errors import ArgumentError, DTypeError, ShapeError
from ..ir.core import TensorType
from .registry import ops


def as_int(v, what: str = "size") -> int:
    """`v` as a Python int, for a size, a dimension, a count or an offset: an int, a NumPy
    integer or anything with `__index__` (a concrete integer tensor), as NumPy's
    `operator.index` takes it. A float (2.5, or 2.0), a string or another object is an
    ArgumentError (a TypeError, as NumPy's): truncating it (`int(2.5)` is 2) made
    `zeros((2.5, 3))` a (2, 3) array where NumPy and JAX refuse it. The op that called names
    itself (its error wrapper); a traced value raises its own TraceError (it has no value yet)."""
    if isinstance(v, int):
        return int(v)
    try:
        return operator.index(v)
    except TypeError:
        raise ArgumentError(f"{what} {v!r} is not an int") from None


def as_ints(vs, what: str = "shape") -> tuple:
    """The ints of the sequence `vs` (a shape), each as `as_int` takes it, naming the whole
    sequence in the error."""
    out = []
    for v in vs:
        if not isinstance(v, int):
            try:
                v = operator.index(v)
            except TypeError:
                raise ArgumentError(f"{what} {tuple(vs)!r} has an entry that is not an int: {v!r}") from None
        out.append(int(v))
    return tuple(out)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting of shapes; ShapeError naming the shapes when incompatible."""
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        dim = 1
        for s in shapes:
            j = i - (nd - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim != 1 and d != dim:
                raise ShapeError(f"shapes {' and '.join(str(tuple(x)) for x in shapes)} cannot be broadcast together "
                                 f"(axis {i - nd}: {dim} vs {d})")
            dim = d
        out.append(dim)
    return tuple(out)


def same_dtype(*types: TensorType):
    """The common dtype of operands that a primitive requires to match exactly."""
    d = types[0].dtype
    for t in types[1:]:
        if t.dtype is not d:
            raise DTypeError(f"operand dtypes differ ({', '.join(t.dtype.name for t in types)}); "
                             f"graphad.ops inserts the casts, primitives take equal dtypes")
    return d


def require_float(t: TensorType, what: str = "operand"):
    if not t.dtype.is_float:
        raise DTypeError(f"{what} must be a floating-point tensor, got {t.dtype.name}")


def norm_axis(axis: int, ndim: int) -> int:
    """Normalise a possibly negative axis (an int or a NumPy integer, as NumPy takes); ShapeError
    when out of range."""
    if isinstance(axis, np.integer):
        axis = int(axis)
    if not isinstance(axis, int):
        raise ShapeError(f"axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return axis % ndim if ndim else 0


def norm_axes(axis, ndim: int) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted unique non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    if isinstance(axis, (float, complex, str, np.floating)):  # not a sequence of axes either
        raise ArgumentError(f"axis must be an int or a sequence of ints, got {type(axis).__name__} {axis!r}")
    out = sorted({norm_axis(a, ndim) for a in axis})
    if len(out) != len(tuple(axis)):
        raise ShapeError(f"repeated axis in {tuple(axis)}")
    return tuple(out)


# ---- helpers used by rules (they run on tracers inside a trace) ----

def unbroadcast(ct, shape: tuple[int, ...]):
    """Sum `ct` down to `shape` (the adjoint of NumPy broadcasting from `shape`)."""
    if tuple(ct.shape) == tuple(shape):
        return ct
    lead = len(ct.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and ct.shape[i + lead] != 1)
    r = ops.sum(ct, axes) if axes else ct
    if tuple(r.shape) != tuple(shape):
        r = ops.reshape(r, shape)
    return r


def bcast(x, shape: tuple[int, ...]):
    """broadcast_to, skipped when the shape already matches."""
    return x if tuple(x.shape) == tuple(shape) else ops.broadcast_to(x, shape)


def add_any(a, b):
    """Sum of two possibly-None (symbolic zero) values."""
    if a is None:
        return b
    if b is None:
        return a
    return ops.add(a, b)


def moveaxis_to_front(x, dim: int):
    if dim == 0:
        return x
    perm = (dim,) + tuple(i for i in range(len(x.shape)) if i != dim)
    return ops.transpose(x, perm)


def bdim_size(args, dims) -> int:
    for a, d in zip(args, dims):
        if d is not None:
            return a.shape[d]
    raise ValueError("no batched operand")


def batch_broadcasting(args, dims):
    """Prepare operands of a broadcasting n-ary primitive: batch axis at 0 and ranks aligned.

    Each batched operand becomes (B, 1.., *example_shape) with rank out_rank + 1, so that NumPy
    broadcasting pairs it with unbatched operands (which broadcast from the right) correctly.
    """
    out_rank = max(len(a.shape) - (d is not None) for a, d in zip(args, dims))
    res = []
    for a, d in zip(args, dims):
        if d is None:
            res.append(a)
            continue
        a = moveaxis_to_front(a, d)
        r = len(a.shape) - 1
        if r < out_rank:
            a = ops.reshape(a, (a.shape[0],) + (1,) * (out_rank - r) + tuple(a.shape[1:]))
        res.append(a)
    return res


def materialize_batched(x, d, size: int):
    """x with its batch axis at 0; an unbatched x is broadcast to carry a batch axis of `size`."""
    if d is None:
        return ops.broadcast_to(ops.expand_dims(x, 0), (size,) + tuple(x.shape))
    return moveaxis_to_front(x, d)


def _in_f32(kernel, narrow):
    """`kernel` run on float32 copies of the operands of the NumPy dtype `narrow()` (None: none
    such dtype here), its results rounded back to that dtype."""
    @functools.wraps(kernel)
    def run(*arrays, **attrs):
        d = narrow()
        if d is None or not any(getattr(a, "dtype", None) == d for a in arrays):
            return kernel(*arrays, **attrs)
        out = kernel(*[a.astype(np.float32) if a.dtype == d else a for a in arrays], **attrs)
        if isinstance(out, tuple):
            return tuple(np.asarray(o).astype(d) for o in out)
        return np.asarray(out).astype(d)
    return run


def bf16_in_f32(kernel):
    """Run a NumPy kernel on float32 copies of bfloat16 operands and round its results back to
    bfloat16. ml_dtypes' bfloat16 has no einsum, and its sums, products and matrix products would
    accumulate in bfloat16 (8 significant bits); JAX and the compiled code accumulate in float32."""
    return _in_f32(kernel, lambda: numpy_bfloat16(load=False))


def f16_in_f32(kernel):
    """Run a NumPy kernel on float32 copies of float16 operands and round its results back to
    float16: NumPy's float16 sums and products add pairwise in float16 over several axes (a mean
    over axes (0, 2) of (2, 8, 9, 9) values was 3 ulps off), where the compiled code accumulates
    in float32 (lowering/bf16.py ACC_F32)."""
    return _in_f32(kernel, lambda: np.dtype(np.float16))


def f64_to_f32_odd(y) -> np.ndarray:
    """float64 values rounded to float32 by round-to-odd: truncated toward zero, the last bit set
    where that was inexact (infinities, NaN and zeros kept; beyond float32's range: its largest
    value, which a half type then rounds to infinity). Rounded once more to a narrower type with at
    least two bits fewer (float16, bfloat16), the result is the float64 value rounded once to that
    type: the double rounding of float64 -> float32 -> half by nearest is not (ml_dtypes' float64 ->
    bfloat16 cast goes that way: 1 + 2^-8 + 2^-40 gave 1, not 1 + 2^-7)."""
    y = np.asarray(y, np.float64)
    with np.errstate(all="ignore"):
        t = y.astype(np.float32)
        back = t.astype(np.float64)
        inexact = (back != y) & ~np.isnan(y)
        bits = t.view(np.int32).copy()
        bits -= (inexact & (np.abs(back) > np.abs(y))).astype(np.int32)  # rounded away from zero: one step back
        bits |= inexact.astype(np.int32)
    return bits.view(np.float32)


def round_from_f64(y, npd) -> np.ndarray:
    """float64 values `y` rounded once to the NumPy float dtype `npd` (float16 and bfloat16 through
    `f64_to_f32_odd`)."""
    y = np.asarray(y)
    if npd == np.float16 or is_bfloat16(np.dtype(npd)):
        return f64_to_f32_odd(y).astype(npd)
    return y.astype(npd)


def is_half_array(a) -> bool:
    """A NumPy array of float16 or bfloat16."""
    return a.dtype == np.float16 or is_bfloat16(a.dtype)


def is_float_array(a) -> bool:
    """A NumPy array of a float type, bfloat16 (whose NumPy kind is 'V') included."""
    return a.dtype.kind == "f" or is_bfloat16(a.dtype)
