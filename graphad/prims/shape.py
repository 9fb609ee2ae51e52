"""Shape primitives: reshape, broadcast_to, transpose, slice, pad, flip, concat, take, index_add.

Attributes are canonical (normalised by graphad.ops): full-rank tuples of non-negative ints.
slice and pad (with interior padding) are each other's adjoints; take and index_add likewise.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError, IndexOutOfRangeError, ShapeError
from ..ir.core import TensorType
from ._util import (add_any, bf16_in_f32, bdim_size, broadcast_shapes, materialize_batched, moveaxis_to_front, same_dtype,
                    unbroadcast)
from .registry import Primitive, ops, register


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------- reshape

def _reshape_shape(x: TensorType, shape):
    if _prod(shape) != x.size or any(s < 0 for s in shape):
        raise ShapeError(f"cannot reshape {x.shape} ({x.size} elements) to {tuple(shape)}")
    return TensorType(shape, x.dtype)


reshape = register(Primitive(
    "reshape", shape_rule=_reshape_shape, impl=lambda a, shape: np.reshape(a, shape),
    jvp=lambda p, t, o, shape: [ops.reshape(t[0], shape)],
    vjp=lambda c, p, o, shape: [ops.reshape(c[0], p[0].shape)],
    batch=lambda a, d, shape: ([ops.reshape(moveaxis_to_front(a[0], d[0]), (a[0].shape[d[0]],) + tuple(shape))], [0]),
    traits=("linear", "shape"), formula="y = x viewed with a new shape"))

# ---------------------------------------------------------------- broadcast_to


def _broadcast_shape(x: TensorType, shape):
    shape = tuple(shape)
    if len(shape) < x.ndim or broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast {x.shape} to {shape}")
    return TensorType(shape, x.dtype)


def _broadcast_batch(a, d, shape):
    x = moveaxis_to_front(a[0], d[0])
    b = x.shape[0]
    r = len(x.shape) - 1
    if r < len(shape):
        x = ops.reshape(x, (b,) + (1,) * (len(shape) - r) + tuple(x.shape[1:]))
    return [ops.broadcast_to(x, (b,) + tuple(shape))], [0]


broadcast_to = register(Primitive(
    "broadcast_to", shape_rule=_broadcast_shape, impl=lambda a, shape: np.broadcast_to(a, shape).copy(),
    jvp=lambda p, t, o, shape: [ops.broadcast_to(t[0], shape)],
    vjp=lambda c, p, o, shape: [unbroadcast(c[0], p[0].shape)],
    batch=_broadcast_batch, traits=("linear", "shape"), formula="y = x broadcast NumPy-style to shape"))

# ---------------------------------------------------------------- transpose


def _transpose_shape(x: TensorType, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"perm {tuple(perm)} is not a permutation of the {x.ndim} axes")
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


def _inverse_perm(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


transpose = register(Primitive(
    "transpose", shape_rule=_transpose_shape, impl=lambda a, perm: np.transpose(a, perm),
    jvp=lambda p, t, o, perm: [ops.transpose(t[0], perm)],
    vjp=lambda c, p, o, perm: [ops.transpose(c[0], _inverse_perm(perm))],
    batch=lambda a, d, perm: ([ops.transpose(moveaxis_to_front(a[0], d[0]), (0,) + tuple(q + 1 for q in perm))], [0]),
    traits=("linear", "shape"), formula="y = x with axes permuted"))

# ---------------------------------------------------------------- slice / pad / flip


def _slice_len(start, stop, step) -> int:
    return max(0, -(-(stop - start) // step))


def _slice_shape(x: TensorType, starts, stops, steps):
    if not (len(starts) == len(stops) == len(steps) == x.ndim):
        raise ShapeError(f"slice needs one start/stop/step per axis of {x.shape}")
    out = []
    for i, (a, b, s, n) in enumerate(zip(starts, stops, steps, x.shape)):
        if s < 1 or not (0 <= a <= n) or not (0 <= b <= n):
            raise ShapeError(f"slice axis {i}: [{a}:{b}:{s}] is not a canonical slice of length {n}")
        out.append(_slice_len(a, b, s))
    return TensorType(out, x.dtype)


def _slice_vjp(c, p, o, starts, stops, steps):
    x_shape = p[0].shape
    lo, hi, interior = [], [], []
    for a, s, n, m in zip(starts, steps, x_shape, o[0].shape):
        if m == 0:
            return [ops.zeros(x_shape, dtype=p[0].dtype)]
        last = a + (m - 1) * s
        lo.append(a)
        hi.append(n - last - 1)
        interior.append(s - 1)
    return [ops.pad_prim(c[0], tuple(lo), tuple(hi), tuple(interior), 0.0)]


slice_ = register(Primitive(
    "slice", shape_rule=_slice_shape,
    impl=lambda a, starts, stops, steps: a[tuple(slice(x, y, z) for x, y, z in zip(starts, stops, steps))].copy(),
    jvp=lambda p, t, o, starts, stops, steps: [ops.slice_prim(t[0], starts, stops, steps)],
    vjp=_slice_vjp,
    batch=lambda a, d, starts, stops, steps: (
        [ops.slice_prim(moveaxis_to_front(a[0], d[0]), (0,) + tuple(starts), (a[0].shape[d[0]],) + tuple(stops),
                        (1,) + tuple(steps))], [0]),
    traits=("linear", "shape"), formula="y = x[start:stop:step] per axis"))


def _pad_shape(x: TensorType, lo, hi, interior, value):
    if not (len(lo) == len(hi) == len(interior) == x.ndim):
        raise ShapeError(f"pad needs one (lo, hi, interior) per axis of {x.shape}")
    if any(v < 0 for v in tuple(lo) + tuple(hi) + tuple(interior)):
        raise ShapeError(f"pad widths must be non-negative, got lo={tuple(lo)} hi={tuple(hi)} interior={tuple(interior)}")
    return TensorType([a + b + n + max(n - 1, 0) * k for a, b, n, k in zip(lo, hi, x.shape, interior)], x.dtype)


def _pad_impl(a, lo, hi, interior, value):
    shape = [l + h + n + max(n - 1, 0) * k for l, h, n, k in zip(lo, hi, a.shape, interior)]
    out = np.full(shape, value, dtype=a.dtype)
    out[tuple(slice(l, l + max(n - 1, 0) * (k + 1) + 1 if n else l, k + 1)
              for l, n, k in zip(lo, a.shape, interior))] = a
    return out


def _pad_vjp(c, p, o, lo, hi, interior, value):
    n = p[0].shape
    starts = tuple(lo)
    stops = tuple(l + (m - 1) * (k + 1) + 1 if m else l for l, m, k in zip(lo, n, interior))
    steps = tuple(k + 1 for k in interior)
    return [ops.slice_prim(c[0], starts, stops, steps)]


pad = register(Primitive(
    "pad", shape_rule=_pad_shape, impl=_pad_impl,
    jvp=lambda p, t, o, lo, hi, interior, value: [ops.pad_prim(t[0], lo, hi, interior, 0.0)],
    vjp=_pad_vjp,
    batch=lambda a, d, lo, hi, interior, value: (
        [ops.pad_prim(moveaxis_to_front(a[0], d[0]), (0,) + tuple(lo), (0,) + tuple(hi), (0,) + tuple(interior),
                      value)], [0]),
    traits=("shape",), formula="y = x placed in a constant field with edge and interior padding"))


def _flip_shape(x: TensorType, axes):
    for a in axes:
        if not 0 <= a < x.ndim:
            raise ShapeError(f"axis {a} is out of range for a tensor of rank {x.ndim}")
    return TensorType(x.shape, x.dtype)


flip = register(Primitive(
    "flip", shape_rule=_flip_shape, impl=lambda a, axes: np.flip(a, axes).copy() if axes else a.copy(),
    jvp=lambda p, t, o, axes: [ops.flip(t[0], axes)],
    vjp=lambda c, p, o, axes: [ops.flip(c[0], axes)],
    batch=lambda a, d, axes: ([ops.flip(moveaxis_to_front(a[0], d[0]), tuple(x + 1 for x in axes))], [0]),
    traits=("linear", "shape"), formula="y = x reversed along axes"))

# ---------------------------------------------------------------- concat


def _concat_shape(*xs: TensorType, axis):
    if not xs:
        raise ShapeError("concat of no tensors")
    d = same_dtype(*xs)
    nd = xs[0].ndim
    if not 0 <= axis < nd:
        raise ShapeError(f"axis {axis} is out of range for tensors of rank {nd}")
    for x in xs:
        if x.ndim != nd or any(a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if i != axis):
            raise ShapeError(f"shapes {', '.join(str(t.shape) for t in xs)} differ outside axis {axis}")
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return TensorType(shape, d)


def _concat_jvp(p, t, o, axis):
    if all(x is None for x in t):
        return [None]
    parts = [x if x is not None else ops.zeros_like(q) for x, q in zip(t, p)]
    return [ops.concat_prim(parts, axis)]


def _concat_vjp(c, p, o, axis):
    res, off = [], 0
    full = c[0].shape
    for q in p:
        n = q.shape[axis]
        starts = tuple(off if i == axis else 0 for i in range(len(full)))
        stops = tuple(off + n if i == axis else s for i, s in enumerate(full))
        res.append(ops.slice_prim(c[0], starts, stops, (1,) * len(full)))
        off += n
    return res


def _concat_batch(args, dims, axis):
    b = bdim_size(args, dims)
    return [ops.concat_prim([materialize_batched(a, d, b) for a, d in zip(args, dims)], axis + 1)], [0]


concat = register(Primitive(
    "concat", shape_rule=_concat_shape, impl=lambda *a, axis: np.concatenate(a, axis),
    jvp=_concat_jvp, vjp=_concat_vjp, batch=_concat_batch, traits=("linear", "shape"),
    formula="y = [x0, x1, ...] joined along axis"))

# ---------------------------------------------------------------- take / index_add


def _take_shape(x: TensorType, idx: TensorType, axis):
    if not idx.dtype.is_int:
        raise DTypeError(f"indices must be int32/int64, got {idx.dtype.name}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {x.ndim}")
    if x.shape[axis] == 0 and idx.size:  # every index is out of range, whatever its value (NumPy too)
        raise IndexOutOfRangeError(f"indices of shape {idx.shape} into an axis of length 0 (axis {axis})")
    return TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)


def _checked_indices(idx, n, what="take"):
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
        raise IndexOutOfRangeError(f"{what}: index {int(bad)} is out of range for an axis of length {n}")
    return np.where(idx < 0, idx + n, idx)


def _take_impl(a, idx, axis):
    return np.take(a, _checked_indices(idx, a.shape[axis]), axis=axis)


def _flat_batched_indices(x, idx, axis, op):
    """Fold a shared batch axis into the gathered axis: returns (x2, idx2, A) for take(x2, idx2, 0).

    x is (B, pre.., A, post..) and idx (B, I..); x2 is (B*A, pre.., post..) and idx2 = idx + b*A.
    Each example's indices are checked against A first (`index_check`, named after the gather or
    scatter `op`): an index outside [-A, A) raises IndexOutOfRangeError naming A and the index,
    instead of reaching into the next example's row (the folded gather then needs no check).
    """
    b = x.shape[0]
    a = x.shape[axis + 1]
    perm = (0, axis + 1) + tuple(i for i in range(1, len(x.shape)) if i != axis + 1)
    x2 = ops.transpose(x, perm)
    x2 = ops.reshape(x2, (b * a,) + tuple(x2.shape[2:]))
    idx = index_check.bind(idx, length=a, op=op)
    offs = ops.mul(ops.arange(0, b, 1, dtype=idx.dtype), a)
    offs = ops.reshape(offs, (b,) + (1,) * (len(idx.shape) - 1))
    return x2, ops.add(idx, offs), a


def _index_check_shape(idx: TensorType, length, op):
    if not idx.dtype.is_int:
        raise DTypeError(f"indices must be int32/int64, got {idx.dtype.name}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ShapeError(f"length must be an int >= 0, got {length!r}")
    if not isinstance(op, str):
        raise ShapeError(f"op must be the name of the gather or scatter, got {op!r}")
    return TensorType(idx.shape, idx.dtype)


index_check = register(Primitive(
    "index_check", shape_rule=_index_check_shape,
    impl=lambda idx, length, op: _checked_indices(idx, length, f"{op} (under vmap, per example)").astype(idx.dtype),
    batch=lambda args, dims, length, op: ([index_check.bind(args[0], length=length, op=op)], [dims[0]]),
    nondiff="integer output",
    formula="y = idx + length where idx < 0, else idx; an index outside [-length, length) raises (the "
            "per-example check of a gather or scatter that vmap folds into one)"))


def _take_batch(args, dims, axis):
    x, idx = args
    dx, di = dims
    if di is None:
        return [ops.take_prim(moveaxis_to_front(x, dx), idx, axis + 1)], [0]
    idx = moveaxis_to_front(idx, di)
    if dx is None:
        return [ops.take_prim(x, idx, axis)], [axis]
    x = moveaxis_to_front(x, dx)
    x2, idx2, _ = _flat_batched_indices(x, idx, axis, "take")
    y = ops.take_prim(x2, idx2, 0)  # (B, I.., pre.., post..)
    n_i = len(idx.shape) - 1
    perm = [0] + list(range(1 + n_i, 1 + n_i + axis)) + list(range(1, 1 + n_i)) + \
        list(range(1 + n_i + axis, len(y.shape)))
    return [ops.transpose(y, tuple(perm))], [0]


take = register(Primitive(
    "take", shape_rule=_take_shape, impl=_take_impl,
    jvp=lambda p, t, o, axis: [ops.take_prim(t[0], p[1], axis)],
    vjp=lambda c, p, o, axis: [ops.index_add(ops.zeros_like(p[0]), p[1], c[0], axis), None],
    batch=_take_batch, nondiff_inputs=(1,), traits=("shape",),
    formula="y = x gathered at integer indices along axis"))


def _index_add_shape(x: TensorType, idx: TensorType, upd: TensorType, axis):
    want = _take_shape(x, idx, axis)
    same_dtype(x, upd)
    if upd.shape != want.shape:
        raise ShapeError(f"updates of shape {upd.shape} do not match indices {idx.shape} into {x.shape} "
                         f"along axis {axis} (expected {want.shape})")
    return TensorType(x.shape, x.dtype)


@bf16_in_f32
def _index_add_impl(a, idx, upd, axis):
    out = a.copy()
    idx = _checked_indices(idx, a.shape[axis], "index_add")
    moved = np.moveaxis(out, axis, 0)
    u = np.moveaxis(upd, tuple(range(axis, axis + idx.ndim)), tuple(range(idx.ndim)))
    np.add.at(moved, idx, u)
    return out


def _index_add_jvp(p, t, o, axis):
    if t[0] is None and t[2] is None:
        return [None]
    tx = t[0] if t[0] is not None else ops.zeros_like(p[0])
    if t[2] is None:
        return [tx]
    return [ops.index_add(tx, p[1], t[2], axis)]


def _index_add_batch(args, dims, axis):
    x, idx, upd = args
    dx, di, du = dims
    b = bdim_size(args, dims)
    xb = materialize_batched(x, dx, b)
    ub = materialize_batched(upd, du, b)
    if di is None:
        return [ops.index_add(xb, idx, ub, axis + 1)], [0]
    idx = moveaxis_to_front(idx, di)
    x2, idx2, a = _flat_batched_indices(xb, idx, axis, "index_add")
    n_i = len(idx.shape) - 1
    # updates (B, pre.., I.., post..) -> (B, I.., pre.., post..) to match take(x2, idx2, 0)
    perm = [0] + list(range(1 + axis, 1 + axis + n_i)) + list(range(1, 1 + axis)) + \
        list(range(1 + axis + n_i, len(ub.shape)))
    y2 = ops.index_add(x2, idx2, ops.transpose(ub, tuple(perm)), 0)  # (B*A, pre.., post..)
    y = ops.reshape(y2, (b, a) + tuple(y2.shape[1:]))
    back = [0] + list(range(2, 2 + axis)) + [1] + list(range(2 + axis, len(y.shape)))
    return [ops.transpose(y, tuple(back))], [0]


index_add = register(Primitive(
    "index_add", shape_rule=_index_add_shape, impl=_index_add_impl, jvp=_index_add_jvp,
    vjp=lambda c, p, o, axis: [c[0], None, ops.take_prim(c[0], p[1], axis)],
    batch=_index_add_batch, nondiff_inputs=(1,), traits=("shape",),
    formula="y = x; y[idx] += updates along axis (repeated indices accumulate)"))
