"""User-facing shape functions and `__getitem__` indexing, built on the shape primitives.

Composites (expand_dims, squeeze, stack, split, movedim, indexing) decompose into reshape,
transpose, slice, flip, concat and take, so they need no rules of their own.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import builtins
import operator

import numpy as np

from ... import dtypes as dt
from ...errors import ArgumentError, DTypeError, GraphadError, ShapeError
from .. import shape as _sh
from .._util import as_ints, norm_axes, norm_axis
from ...tensor import Tensor, TensorMethods
from .core import _holds_tensor, _operands, as_tensor, constant, mul, sub


def _t(x):
    return x if isinstance(x, TensorMethods) else as_tensor(x)


def reshape(x, shape):
    """Reshape (one -1 allowed); no node when the shape is unchanged."""
    x = _t(x)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = list(as_ints(shape))
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
    shape = as_ints((shape,) if isinstance(shape, (int, np.integer)) else shape)
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
    if isinstance(axis, (float, complex, str, np.floating)):
        raise ArgumentError(f"axis must be an int or a sequence of ints, got {type(axis).__name__} {axis!r}")
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
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
    x = _t(x)
    if x.dtype.is_int:
        # exact (as a float64, 2^53 + 1 lost its 1 and 2^63 - 1 came back as -2^63); a float value
        # is truncated, as NumPy casts it
        try:
            v = int(value)
        except (OverflowError, ValueError):  # inf, NaN: no integer (a bare OverflowError before)
            v = None
        info = np.iinfo(x.dtype.np)
        if v is None or not info.min <= v <= info.max:
            raise ShapeError(f"pad: the value {value!r} does not fit {x.dtype.name}")
    elif x.dtype.is_complex:  # (float() refused a complex fill; NumPy and jnp.pad take one)
        v = complex(value)
    else:
        v = float(value)
    return _sh.pad.bind(x, lo=tuple(lo), hi=tuple(hi), interior=tuple(interior), value=v)


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
    if isinstance(indices_or_sections, TensorMethods) and not indices_or_sections.shape:
        # (a traced count raises the TraceError that names the fix: static_argnums)
        indices_or_sections = operator.index(indices_or_sections)
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ShapeError(f"split: axis {axis} of length {n} does not divide into {k} equal sections")
        points = [n // k * i for i in range(1, k)]
    elif isinstance(indices_or_sections, (tuple, list, np.ndarray)):
        points = list(as_ints(list(indices_or_sections), "split points"))
    else:
        raise ArgumentError(f"indices_or_sections must be an int or a sequence of ints, got "
                            f"{type(indices_or_sections).__name__} {indices_or_sections!r}")
    # each piece is x[a:b] with a Python slice's bounds, as NumPy's: a negative point counts from
    # the end (split at [-1] is [:-1], [-1:]), then both are clipped to [0, n]
    bounds = [0] + [builtins.min(builtins.max(p + n if p < 0 else p, 0), n) for p in points] + [n]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.append(_along(x, axis, a, builtins.max(a, b)))
    return tuple(out)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(x, pad_width, mode="constant", constant_values=None, *, reflect_type="even"):
    """NumPy's pad: pad_width an int, (lo, hi), or one (lo, hi) per axis; mode 'constant' (the
    value `constant_values`, 0 by default), 'edge', 'reflect', 'symmetric' or 'wrap', widths
    larger than the axis included (NumPy reflects and wraps again); reflect_type 'odd' for
    reflect and symmetric (2 * edge - the reflected values).

    The other modes are slices, flips and broadcasts of x along each axis, concatenated (a gather
    only where a wide pad of a short axis would take many pieces), so they differentiate, batch
    and compile as those do; the axes are padded in order as NumPy's, corners from the padded
    axes before."""
    x = _t(x)
    if mode not in _PAD_MODES:
        raise GraphadError(f"pad: mode {mode!r} is not supported (one of {', '.join(map(repr, _PAD_MODES))})")
    if constant_values is not None and mode != "constant":
        raise ArgumentError(f"pad: constant_values is for mode 'constant', not {mode!r} (NumPy refuses it too)")
    if reflect_type not in ("even", "odd"):
        raise ArgumentError(f"pad: reflect_type must be 'even' or 'odd', got {reflect_type!r}")
    if reflect_type == "odd" and mode not in ("reflect", "symmetric"):
        raise ArgumentError(f"pad: reflect_type is for modes 'reflect' and 'symmetric', not {mode!r}")
    if isinstance(pad_width, dict):
        raise ArgumentError(f"pad_width {pad_width!r}: a dict of widths per axis is not supported; give an int, "
                            f"(lo, hi), or one (lo, hi) per axis")
    raw = np.asarray(pad_width)
    if raw.dtype.kind not in "iu":  # (a bool is no width: NumPy refuses pad_width=True too)
        raise ArgumentError(f"pad_width {pad_width!r} has an entry that is not an int")
    try:
        pw = np.broadcast_to(raw.astype(np.int64), (x.ndim, 2)) if x.ndim else np.zeros((0, 2), int)
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit shape {tuple(x.shape)} "
                         f"(an int, (lo, hi), or one (lo, hi) per axis)") from None
    if (pw < 0).any():
        raise ShapeError(f"pad: negative widths {pad_width}")
    if mode == "constant":
        if constant_values is not None and np.ndim(constant_values) and not isinstance(constant_values, TensorMethods):
            raise ArgumentError(f"pad: constant_values {constant_values!r}: one value for every side is supported, "
                                f"not one per side (NumPy's pairs); pad one axis at a time for different values")
        return pad_prim(x, tuple(int(a) for a in pw[:, 0]), tuple(int(b) for b in pw[:, 1]), (0,) * x.ndim,
                        0 if constant_values is None else constant_values)
    if reflect_type == "odd" and x.dtype.is_bool:
        # (NumPy computes it in bool arithmetic, where 2 * edge - x has no meaning of its own)
        raise DTypeError("pad: reflect_type 'odd' (2 * edge - x) is not supported for bool operands; cast "
                         "to an int type first")
    for axis in range(x.ndim):
        lo, hi = int(pw[axis, 0]), int(pw[axis, 1])
        if not (lo or hi):
            continue
        if x.shape[axis] == 0:
            raise ShapeError(f"pad: mode {mode!r} cannot extend axis {axis} of length 0 in shape "
                             f"{tuple(x.shape)} (NumPy refuses it too; only 'constant' can)")
        if reflect_type == "odd" and x.shape[axis] > 1:
            x = _pad_odd(x, axis, lo, hi, mode == "symmetric")
        else:
            x = _pad_gather(x, axis, lo, hi, mode)
    return x


def _along(x, axis, a, b):
    """x[a:b] along axis."""
    starts = tuple(a if i == axis else 0 for i in range(x.ndim))
    stops = tuple(b if i == axis else s for i, s in enumerate(x.shape))
    return slice_prim(x, starts, stops, (1,) * x.ndim)


def _pad_gather(x, axis, lo, hi, mode):
    """x padded along one axis by a mode whose pad values are x's own (edge, wrap, even
    reflections): NumPy's own pad of arange(n) gives the source index of every output position
    (so the index pattern is NumPy's by construction, repeated reflections included); each side is
    cut into runs of consecutive, reversed or repeated indices, each run a slice, a flipped slice
    or a broadcast one, and x itself sits in the middle."""
    n = x.shape[axis]
    idx = np.pad(np.arange(n), (lo, hi), mode=mode)
    runs = [r for part in (idx[:lo], idx[lo + n:]) for r in _index_runs(part)]
    if len(runs) > 16:  # (a wide pad of a short axis: one gather, not dozens of pieces)
        return take_prim(x, Tensor(idx), axis)
    pieces = []
    for part in (idx[:lo], None, idx[lo + n:]):
        if part is None:
            pieces.append(x)
            continue
        for first, count, step in _index_runs(part):
            if step == 0:
                shape = tuple(count if i == axis else s for i, s in enumerate(x.shape))
                pieces.append(broadcast_to(_along(x, axis, first, first + 1), shape))
            elif step == 1:
                pieces.append(_along(x, axis, first, first + count))
            else:
                pieces.append(flip(_along(x, axis, first - count + 1, first + 1), axis))
    return concat(pieces, axis)


def _index_runs(idx):
    """idx (a 1-D int array) as runs (first index, count, step) with step 0, 1 or -1 within each
    run; a single index is a run of step 1."""
    runs = []
    i, m = 0, len(idx)
    while i < m:
        j = i
        step = int(idx[i + 1] - idx[i]) if i + 1 < m else 1
        if step in (-1, 0, 1):
            while j + 1 < m and idx[j + 1] - idx[j] == step:
                j += 1
        else:
            step = 1
        runs.append((int(idx[i]), j - i + 1, step if j > i else 1))
        i = j + 1
    return runs


def _pad_odd(x, axis, lo, hi, include_edge):
    """x padded along one axis by odd reflection, NumPy's loop (numpy/lib/_arraypad_impl.py
    _set_reflect_both) step for step: each round reflects at most the already valid length about
    the current edge, left side first, as 2 * edge - chunk, so the arithmetic (and its rounding)
    is NumPy's. n > 1 (a length-1 axis is edge-padded, as NumPy does)."""
    n = x.shape[axis]
    e = 1 if include_edge else 0
    while lo > 0 or hi > 0:
        length = x.shape[axis]
        old = length // n * n if include_edge else (length - 1) // (n - 1) * (n - 1)
        if lo > 0:
            k = builtins.min(old, lo)
            chunk = flip(_along(x, axis, 1 - e, 1 - e + k), axis)
            x = concat([sub(mul(_along(x, axis, 0, 1), 2), chunk), x], axis)
            lo -= k
        if hi > 0:
            k = builtins.min(old, hi)
            m = x.shape[axis]
            chunk = flip(_along(x, axis, m - 1 + e - k, m - 1 + e), axis)
            x = concat([x, sub(mul(_along(x, axis, m - 1, m), 2), chunk)], axis)
            hi -= k
    return x


def _index_tensor(idx):
    if isinstance(idx, list) and not idx:
        idx = np.zeros(0, np.int64)  # (np.asarray([]) is float64: NumPy and JAX read [] as no indices)
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
        k = next(p for p, i in enumerate(idx) if i is Ellipsis)  # (not .index: == on an array index)
        idx = idx[:k] + (slice(None),) * (x.ndim - n_real) + idx[k + 1:]
    else:
        idx = idx + (slice(None),) * (x.ndim - n_real)
    starts, stops, steps, flips, out_shape, arrays = [], [], [], [], [], []
    traced = []  # (axis, index) of the traced integer scalars: ints whose value the graph reads
    advanced = []  # positions in idx of the ints and the array: NumPy's advanced indices
    axis = 0
    for pos, item in enumerate(idx):
        if item is None:
            out_shape.append(("new",))
            continue
        if isinstance(item, (bool, np.bool_)) or (isinstance(item, Tensor) and item.ndim == 0 and item.dtype.is_bool):
            # NumPy reads a scalar bool as a 0-d mask (a new axis of length 1 or 0), not as 1 / 0
            raise GraphadError("boolean mask indexing gives a data-dependent shape; use ops.where instead "
                               "(or ops.expand_dims for x[True])")
        n = x.shape[axis]
        if (isinstance(item, TensorMethods) and not isinstance(item, Tensor) and item.ndim == 0
                and item.dtype.is_int):
            # a traced integer scalar (a jit's int argument, a value computed in the graph) is an
            # int index, as a concrete one, read by the graph: x[i, j] is x[i][j] (as NumPy and
            # JAX); counted as an index array it was refused beside another one
            traced.append((axis, item))
            starts.append(0), stops.append(n), steps.append(1)
            advanced.append(pos)
        elif (isinstance(item, (int, np.integer)) or (isinstance(item, Tensor) and item.ndim == 0 and item.dtype.is_int)
                or (isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu")):
            i = int(item)
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            starts.append(i), stops.append(i + 1), steps.append(1)
            advanced.append(pos)
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
            advanced.append(pos)
        else:
            raise GraphadError(f"unsupported index {item!r} of type {type(item).__name__}")
        axis += 1
    if len(arrays) > 1:
        raise GraphadError("indexing with more than one integer array is not supported (NumPy pairs them element "
                           "by element: x[a, b] is [x[a[k], b[k]] ...]); for a 2-d x index the flattened tensor, "
                           "x.reshape(-1)[a * x.shape[1] + b] (x[a][:, b] is their outer product, another thing)")
    y = x
    if flips:
        y = _sh.flip.bind(y, axes=tuple(flips))
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, tuple(x.shape), (1,) * x.ndim):
        y = slice_prim(y, starts, stops, steps)
    # y keeps every original axis (size 1 for int indices); now gather, then drop/insert axes
    for ax, t in traced:
        y = take_prim(y, reshape(_index_tensor(t), (1,)), ax)
    if arrays:
        ax, t = arrays[0]
        y = take_prim(y, t, ax)
        idx_shape = tuple(t.shape)
        if advanced[-1] - advanced[0] + 1 != len(advanced):
            # ints count as advanced indices beside an array (0-d ones, broadcast with it); when a
            # slice, None or ... separates them, NumPy puts the array's axes first
            k = len(idx_shape)
            y = transpose(y, [*range(ax, ax + k), *range(ax), *range(ax + k, y.ndim)])
            out_shape = [e for e in out_shape if e[0] == "array"] + [e for e in out_shape if e[0] != "array"]
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


# ---------------------------------------------------------------- tiling, rolling, diagonals (issue 17)
#
# Compositions of reshape / broadcast_to / slice / concat / take / where: their derivatives,
# batching and lowering are those primitives'.

def _ints(v, what):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),)
    if isinstance(v, TensorMethods) and not v.shape:  # a scalar tensor (a traced one says why it cannot)
        try:
            return (operator.index(v),)
        except TypeError:
            raise GraphadError(f"{what} must be an int or a sequence of ints, got a {v.dtype.name} tensor") from None
    try:
        out = tuple(int(r) for r in v)
    except TypeError:
        raise GraphadError(f"{what} must be an int or a sequence of ints, got {v!r}") from None
    return out


def tile(x, reps):
    """NumPy's tile: x repeated reps[i] times along each axis (reps and x's shape are aligned on the
    right, padded with 1s). MindSpore's ops.tile(input, dims) is the same."""
    x = _t(x)
    reps = _ints(reps, "tile: reps")
    if any(r < 0 for r in reps):
        raise ShapeError(f"tile: negative repetitions {reps}")
    nd = builtins.max(len(reps), x.ndim)
    reps = (1,) * (nd - len(reps)) + reps
    shape = (1,) * (nd - x.ndim) + tuple(x.shape)
    inter = []
    for s in shape:
        inter += [1, s]
    y = reshape(x, inter)
    big = []
    for r, s in zip(reps, shape):
        big += [r, s]
    y = broadcast_to(y, big)
    return reshape(y, [r * s for r, s in zip(reps, shape)])


def repeat(x, repeats, axis=None):
    """NumPy's repeat: each element repeated `repeats` times along `axis` (None: of the flattened
    tensor); `repeats` an int or one non-negative int per element of the axis (concrete values:
    the result's shape depends on them). torch's and MindSpore's repeat_interleave."""
    x = _t(x)
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    axis = norm_axis(axis, x.ndim)
    n = x.shape[axis]
    if isinstance(repeats, TensorMethods) and not isinstance(repeats, Tensor):
        raise GraphadError("repeat: repeats must be concrete (the result's shape depends on them), not a traced tensor")
    reps = np.asarray(repeats.asnumpy() if isinstance(repeats, Tensor) else repeats)
    if reps.dtype.kind not in "iu" and not (reps.dtype.kind == "b" and reps.ndim == 0):
        raise GraphadError(f"repeat: repeats must be integers, got {reps.dtype}")
    if (reps < 0).any():
        raise ShapeError("repeat: negative repeats")
    if reps.ndim == 0 or reps.size == 1:
        r = int(reps.reshape(()))
        y = expand_dims(x, axis + 1)
        shape = list(y.shape)
        shape[axis + 1] = r
        y = broadcast_to(y, shape)
        out = list(x.shape)
        out[axis] = n * r
        return reshape(y, out)
    if reps.ndim != 1 or reps.size != n:
        raise ShapeError(f"repeat: {reps.size} repeats for an axis of length {n}")
    idx = np.repeat(np.arange(n, dtype=np.int64), reps)
    return take_prim(x, constant(idx), axis)


repeat_interleave = repeat


def roll(x, shift=None, axis=None, *, shifts=None, dims=None):
    """NumPy's roll: elements shifted by `shift` along `axis` (those past the end come back at the
    start); `shift` and `axis` may be tuples (broadcast against each other); axis None rolls the
    flattened tensor and restores the shape. MindSpore's and torch's keywords `shifts` and `dims`
    are the same arguments."""
    x = _t(x)
    if shifts is not None:
        if shift is not None:
            raise ShapeError("roll: give shift or shifts, not both")
        shift = shifts
    if dims is not None:
        if axis is not None:
            raise ShapeError("roll: give axis or dims, not both")
        axis = dims
    if shift is None:
        raise ShapeError("roll: missing the shift")
    if axis is None:
        s = _ints(shift, "roll: shift")
        if len(s) != 1:
            raise ShapeError(f"roll: one shift for axis=None, got {s}")
        return reshape(roll(reshape(x, (-1,)), s[0], 0), x.shape)
    shifts, axes = _ints(shift, "roll: shift"), _ints(axis, "roll: axis")
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(axes) == 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        raise ShapeError(f"roll: {len(shifts)} shifts for {len(axes)} axes")
    total = {}
    for s, a in zip(shifts, axes):
        a = norm_axis(a, x.ndim)
        total[a] = total.get(a, 0) + s
    y = x
    for a, s in sorted(total.items()):
        n = y.shape[a]
        if n == 0 or s % n == 0:
            continue
        first, second = split(y, [n - s % n], a)
        y = concat([second, first], a)
    return y


def diagonal(x, offset=0, axis1=0, axis2=1):
    """NumPy's diagonal: the entries x[..., i, i + offset] of the (axis1, axis2) planes, as the last
    axis of the result (the other axes first, in order)."""
    x = _t(x)
    if x.ndim < 2:
        raise ShapeError(f"diagonal: needs at least 2 axes, got shape {x.shape}")
    a1, a2 = norm_axis(axis1, x.ndim), norm_axis(axis2, x.ndim)
    if a1 == a2:
        raise ShapeError("diagonal: axis1 and axis2 cannot be the same")
    offset = int(offset)
    rest = [i for i in range(x.ndim) if i not in (a1, a2)]
    y = transpose(x, rest + [a1, a2])
    n, m = x.shape[a1], x.shape[a2]
    lead = tuple(y.shape[:-2])
    length = builtins.max(0, builtins.min(n, m - offset) if offset >= 0 else builtins.min(n + offset, m))
    if length == 0:
        return reshape(slice_prim(reshape(y, lead + (n * m,)), (0,) * (len(lead) + 1), lead + (0,),
                                  (1,) * (len(lead) + 1)), lead + (0,))
    # the flattened (n, m) plane: entry (i, i + offset) is at i * (m + 1) + offset
    start = offset if offset >= 0 else -offset * m
    flat = reshape(y, lead + (n * m,))
    stop = start + (length - 1) * (m + 1) + 1
    return slice_prim(flat, (0,) * len(lead) + (start,), lead + (stop,), (1,) * len(lead) + (m + 1,))


def trace(x, offset=0, axis1=0, axis2=1):
    """NumPy's trace: the sum of diagonal(x, offset, axis1, axis2) (bool counts as int64)."""
    from .core import sum as _sum
    return _sum(diagonal(x, offset, axis1, axis2), -1)


def _tri_mask(x, k, lower):
    if x.ndim < 2:
        raise ShapeError(f"{'tril' if lower else 'triu'}: needs at least 2 axes, got shape {x.shape}")
    n, m = x.shape[-2], x.shape[-1]
    below = np.tri(n, m, int(k), dtype=bool)  # j <= i + k
    return below if lower else ~np.tri(n, m, int(k) - 1, dtype=bool)


def tril(x, k=0, *, diagonal=None):
    """x with the entries above the k-th diagonal zeroed (j > i + k) in its last two axes
    (MindSpore's keyword `diagonal` is k)."""
    from .core import where
    from .creation import zeros_like
    x = _t(x)
    k = k if diagonal is None else diagonal
    return where(constant(_tri_mask(x, k, True)), x, zeros_like(x))


def triu(x, k=0, *, diagonal=None):
    """x with the entries below the k-th diagonal zeroed (j < i + k) in its last two axes."""
    from .core import where
    from .creation import zeros_like
    x = _t(x)
    k = k if diagonal is None else diagonal
    return where(constant(_tri_mask(x, k, False)), x, zeros_like(x))


def _along_axis_flat(x, indices, axis, what):
    """(flat x, flat indices, result shape): x's axis moved last and x and the indices broadcast in
    the other axes, then x flattened and each index offset by its row (negative indices wrap and
    are clipped to the row, so no index reaches into another row)."""
    from .core import add, clip, mul, where, less
    from .creation import arange
    idx = _index_tensor(indices)
    if idx.ndim != x.ndim:
        raise ShapeError(f"{what}: indices of rank {idx.ndim} for a tensor of rank {x.ndim} (they must match)")
    axis = norm_axis(axis, x.ndim)
    n, k = x.shape[axis], idx.shape[axis]
    xt, it = movedim(x, axis, -1), movedim(idx, axis, -1)
    lead = []
    for a, b in zip(xt.shape[:-1], it.shape[:-1]):
        if a != b and 1 not in (a, b):
            raise ShapeError(f"{what}: indices of shape {idx.shape} do not broadcast against {x.shape} "
                             f"outside axis {axis}")
        lead.append(a if b == 1 else b)
    lead = tuple(lead)
    xt = broadcast_to(xt, lead + (n,))
    it = broadcast_to(it, lead + (k,))
    rows = 1
    for s in lead:
        rows *= s
    it = reshape(it, (rows, k))
    it = where(less(it, 0), add(it, n), it)
    it = clip(it, 0, builtins.max(n - 1, 0))
    offs = reshape(mul(arange(0, rows, 1, dtype=it.dtype), n), (rows, 1))
    return reshape(xt, (rows * n,)), add(it, offs), lead, axis


def take_along_axis(arr, indices, axis=-1):
    """NumPy's take_along_axis: out[..., j, ...] = arr[..., indices[..., j, ...], ...] along `axis`
    (None: of the flattened arr, 1-D indices); indices broadcast against arr in the other axes.
    Negative indices wrap; indices must lie in [-n, n) (out-of-range ones are clipped)."""
    arr = _t(arr)
    if axis is None:
        arr = reshape(arr, (-1,))
        axis = 0
    flat, fidx, lead, axis = _along_axis_flat(arr, indices, axis, "take_along_axis")
    k = fidx.shape[-1]
    y = reshape(take_prim(flat, fidx, 0), lead + (k,))
    return movedim(y, -1, axis)


def gather_elements(input, dim, index):  # noqa: A002  (MindSpore's names and order)
    """MindSpore's ops.gather_elements(input, dim, index): take_along_axis(input, index, dim)."""
    return take_along_axis(input, index, dim)


def put_along_axis(arr, indices, values, axis):
    """NumPy's put_along_axis, functional: a new tensor, arr with `values` (broadcast to the
    indices' shape, cast to arr's dtype) written at `indices` along `axis` (None: into the
    flattened arr, whose shape is kept). Where an index repeats along the axis the last write
    wins, as NumPy's. Indices broadcast against arr outside the axis; negative ones wrap, and
    ones out of [-n, n) are clipped into it, as `take_along_axis` clips (NumPy raises).

    A composition: a stable argsort of the flat targets groups repeats in write order, the last
    of each group is scattered (index_add onto zeros: one write per target) and selected with
    `where`, so the derivative reaches the winning values and arr's elements not written."""
    from .core import add, astype, clip, greater, less, mul, not_equal, where
    from .creation import arange, zeros, zeros_like
    from .. import sort as _so
    arr = _t(arr)
    if axis is None:
        return reshape(put_along_axis(reshape(arr, (-1,)), indices, values, 0), arr.shape)
    idx = _index_tensor(indices)
    if idx.ndim != arr.ndim:
        raise ShapeError(f"put_along_axis: indices of rank {idx.ndim} for a tensor of rank {arr.ndim} "
                         f"(they must match)")
    axis = norm_axis(axis, arr.ndim)
    n, k = arr.shape[axis], idx.shape[axis]
    ishape = tuple(k if i == axis else (s if t == 1 else t) for i, (s, t) in enumerate(zip(arr.shape, idx.shape)))
    if any(i != axis and t not in (1, s) for i, (s, t) in enumerate(zip(arr.shape, idx.shape))):
        raise ShapeError(f"put_along_axis: indices of shape {idx.shape} do not broadcast against {arr.shape} "
                         f"outside axis {axis}")
    # (a Python number or list is read exactly, then cast to arr's dtype once: as_tensor made a
    # Python float float32 first)
    vals = astype(values if isinstance(values, TensorMethods) else
                  as_tensor(values) if isinstance(values, (list, tuple)) and _holds_tensor(values) else
                  as_tensor(np.asarray(values)), arr.dtype)
    vals = broadcast_to(vals, ishape)
    idx = broadcast_to(idx, ishape)
    rows = 1
    for i, s in enumerate(arr.shape):
        if i != axis:
            rows *= s
    if rows * k == 0 or n == 0:
        return arr
    work = dt.int32 if arr.dtype.is_bool else arr.dtype
    xt = reshape(astype(movedim(arr, axis, -1), work), (rows * n,))
    vt = reshape(astype(movedim(vals, axis, -1), work), (rows * k,))
    it = reshape(movedim(idx, axis, -1), (rows, k))
    it = where(less(it, 0), add(it, n), it)
    it = clip(it, 0, n - 1)
    it = reshape(add(it, reshape(mul(arange(0, rows, 1, dtype=it.dtype), n), (rows, 1))), (rows * k,))
    order = _so.argsort.bind(it, axis=0)
    ts, vs = take_prim(it, order, 0), take_prim(vt, order, 0)
    m = rows * k
    nxt = concat([slice_prim(ts, (1,), (m,), (1,)), constant(np.array([-1], ts.dtype.np))], 0)
    win = not_equal(ts, nxt)  # the last write to each target
    hits = greater(index_add(zeros((rows * n,), dtype="int32"), ts, astype(win, dt.int32), 0), 0)
    written = index_add(zeros_like(xt), ts, where(win, vs, zeros_like(vs)), 0)
    out = reshape(where(hits, written, xt), tuple(s for i, s in enumerate(arr.shape) if i != axis) + (n,))
    return astype(movedim(out, -1, axis), arr.dtype)
