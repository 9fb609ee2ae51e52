"""User-facing shape functions and `__getitem__` indexing, built on the shape primitives.

Composites (expand_dims, squeeze, stack, split, movedim, indexing) decompose into reshape,
transpose, slice, flip, concat and take, so they need no rules of their own.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import builtins

import numpy as np

from ... import dtypes as dt
from ...errors import GraphadError, ShapeError
from .. import shape as _sh
from .._util import norm_axes, norm_axis
from ...tensor import Tensor, TensorMethods
from .core import _operands, as_tensor


def _t(x):
    return x if isinstance(x, TensorMethods) else as_tensor(x)


def reshape(x, shape):
    """Reshape (one -1 allowed); no node when the shape is unchanged."""
    x = _t(x)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {tuple(shape)}")
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or x.size % known:
            raise ShapeError(f"reshape: cannot reshape {x.shape} to {tuple(shape)}")
        shape[shape.index(-1)] = x.size // known
    shape = tuple(shape)
    if shape == tuple(x.shape):
        return x
    return _sh.reshape.bind(x, shape=shape)


def broadcast_to(x, shape):
    x = _t(x)
    shape = tuple(int(s) for s in shape)
    return x if shape == tuple(x.shape) else _sh.broadcast_to.bind(x, shape=shape)


def transpose(x, axes=None):
    """Permute axes (None reverses them)."""
    x = _t(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(norm_axis(a, x.ndim) for a in axes)
    if len(perm) != x.ndim or sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {tuple(axes)} is not a permutation of the axes of {x.shape}")
    return x if perm == tuple(range(x.ndim)) else _sh.transpose.bind(x, perm=perm)


permute = transpose


def movedim(x, source, destination):
    """Move axes `source` to positions `destination` (NumPy moveaxis)."""
    x = _t(x)
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    if len(src) != len(dst):
        raise ShapeError(f"movedim: {len(src)} sources for {len(dst)} destinations")
    src = [norm_axis(a, x.ndim) for a in src]
    dst = [norm_axis(a, x.ndim) for a in dst]
    order = [n for n in range(x.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


moveaxis = movedim


def swapaxes(x, a, b):
    x = _t(x)
    perm = list(range(x.ndim))
    a, b = norm_axis(a, x.ndim), norm_axis(b, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def expand_dims(x, axis):
    x = _t(x)
    axes = [axis] if isinstance(axis, int) else list(axis)
    nd = x.ndim + len(axes)
    axes = sorted(norm_axis(a, nd) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, shape)


unsqueeze = expand_dims


def squeeze(x, axis=None):
    x = _t(x)
    if axis is None:
        axes = [i for i, s in enumerate(x.shape) if s == 1]
    else:
        axes = list(norm_axes(axis, x.ndim))
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} of {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, [s for i, s in enumerate(x.shape) if i not in axes])


def slice_prim(x, starts, stops, steps):
    return _sh.slice_.bind(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def pad_prim(x, lo, hi, interior, value):
    return _sh.pad.bind(x, lo=tuple(lo), hi=tuple(hi), interior=tuple(interior), value=float(value))


def concat_prim(xs, axis):
    return _sh.concat.bind(*xs, axis=axis)


def take_prim(x, idx, axis):
    return _sh.take.bind(x, idx, axis=axis)


def index_add(x, idx, updates, axis=0):
    """x with `updates` added at integer `idx` along `axis` (repeated indices accumulate)."""
    x, updates = _operands(x, updates)
    idx = _index_tensor(idx)
    return _sh.index_add.bind(x, idx, updates, axis=norm_axis(axis, x.ndim))


def flip(x, axis=None):
    x = _t(x)
    axes = norm_axes(axis, x.ndim)
    return _sh.flip.bind(x, axes=axes) if axes else x


def concat(tensors, axis=0):
    """Join tensors along an existing axis (dtypes promoted)."""
    xs = _operands(*tensors)
    if not xs:
        raise ShapeError("concat of an empty sequence")
    axis = norm_axis(axis, xs[0].ndim)
    return xs[0] if len(xs) == 1 else _sh.concat.bind(*xs, axis=axis)


concatenate = cat = concat


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    xs = _operands(*tensors)
    if not xs:
        raise ShapeError("stack of an empty sequence")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ShapeError(f"stack: all shapes must be equal, got {sorted(shapes)}")
    axis = norm_axis(axis, xs[0].ndim + 1)
    return concat([expand_dims(x, axis) for x in xs], axis)


def split(x, indices_or_sections, axis=0):
    """NumPy split: a number of equal sections or a list of split points; returns a tuple."""
    x = _t(x)
    axis = norm_axis(axis, x.ndim)
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        k = indices_or_sections
        if k <= 0 or n % k:
            raise ShapeError(f"split: axis {axis} of length {n} does not divide into {k} equal sections")
        points = [n // k * i for i in range(1, k)]
    else:
        points = [int(p) for p in indices_or_sections]
    bounds = [0] + [builtins.min(builtins.max(p, 0), n) for p in points] + [n]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        starts = tuple(a if i == axis else 0 for i in range(x.ndim))
        stops = tuple(builtins.max(a, b) if i == axis else s for i, s in enumerate(x.shape))
        out.append(slice_prim(x, starts, stops, (1,) * x.ndim))
    return tuple(out)


def pad(x, pad_width, mode="constant", constant_values=0):
    """NumPy-style constant padding: pad_width an int, (lo, hi), or one (lo, hi) per axis."""
    x = _t(x)
    if mode != "constant":
        raise GraphadError(f"pad: mode {mode!r} is not supported (only 'constant')")
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2)) if x.ndim else np.zeros((0, 2), int)
    if (pw < 0).any():
        raise ShapeError(f"pad: negative widths {pad_width}")
    return pad_prim(x, tuple(int(a) for a in pw[:, 0]), tuple(int(b) for b in pw[:, 1]), (0,) * x.ndim,
                    constant_values)


def _index_tensor(idx):
    t = idx if isinstance(idx, TensorMethods) else Tensor(np.asarray(idx))
    if t.dtype.is_bool:
        raise GraphadError("boolean mask indexing gives a data-dependent shape; use ops.where instead")
    if not t.dtype.is_int:
        raise GraphadError(f"indices must be integers, got {t.dtype.name}")
    return t


def take(x, indices, axis=None):
    """Gather `indices` along `axis` (None: from the flattened tensor); negative indices wrap."""
    x = _t(x)
    idx = _index_tensor(indices)
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    return take_prim(x, idx, norm_axis(axis, x.ndim))


def gather(input_params, input_indices, axis):
    """MindSpore's ops.gather (take along an axis)."""
    return take(input_params, input_indices, axis)


def getitem(x, idx):
    """NumPy basic indexing (ints, slices with any step, None, ...) plus one integer-array index."""
    x = _t(x)
    if not isinstance(idx, tuple):
        idx = (idx,)
    n_ell = builtins.sum(1 for i in idx if i is Ellipsis)
    if n_ell > 1:
        raise GraphadError("an index can only have a single ellipsis")
    n_real = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if n_real > x.ndim:
        raise ShapeError(f"too many indices ({n_real}) for a tensor of shape {x.shape}")
    if n_ell:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (x.ndim - n_real) + idx[k + 1:]
    else:
        idx = idx + (slice(None),) * (x.ndim - n_real)
    starts, stops, steps, flips, out_shape, arrays = [], [], [], [], [], []
    axis = 0
    for item in idx:
        if item is None:
            out_shape.append(("new",))
            continue
        n = x.shape[axis]
        if isinstance(item, (int, np.integer)) or (isinstance(item, Tensor) and item.ndim == 0 and item.dtype.is_int):
            i = int(item)
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            starts.append(i), stops.append(i + 1), steps.append(1)
        elif isinstance(item, slice):
            a, b, s = item.indices(n)
            m = len(range(a, b, s))
            if s < 0:
                flips.append(axis)
                a, s = n - 1 - a, -s
            b = a + (m - 1) * s + 1 if m else a
            starts.append(a), stops.append(b), steps.append(s)
            out_shape.append(("keep", axis))
        elif isinstance(item, (list, np.ndarray, TensorMethods)):
            arrays.append((axis, _index_tensor(item)))
            starts.append(0), stops.append(n), steps.append(1)
            out_shape.append(("array", axis))
        else:
            raise GraphadError(f"unsupported index {item!r} of type {type(item).__name__}")
        axis += 1
    if len(arrays) > 1:
        raise GraphadError("indexing with more than one integer array is not supported; use ops.take per axis")
    y = x
    if flips:
        y = _sh.flip.bind(y, axes=tuple(flips))
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, tuple(x.shape), (1,) * x.ndim):
        y = slice_prim(y, starts, stops, steps)
    # y keeps every original axis (size 1 for int indices); now gather, then drop/insert axes
    if arrays:
        ax, t = arrays[0]
        y = take_prim(y, t, ax)
        idx_shape = tuple(t.shape)
    shape = []
    for entry in out_shape:
        if entry[0] == "new":
            shape.append(1)
        elif entry[0] == "keep":
            shape.append(_len_after(starts, stops, steps, entry[1]))
        else:
            shape.extend(idx_shape)
    return reshape(y, shape)


def _len_after(starts, stops, steps, axis):
    return builtins.max(0, -(-(stops[axis] - starts[axis]) // steps[axis]))
