"""Sorting ops (issue 17): argsort (the primitive), sort, top_k, median, quantile (compositions).

sort gathers x with argsort's permutation (take_along_axis), so its derivative is the gather's:
the cotangent of each sorted value goes back to the element it came from. top_k is the first k
of the stable descending order (JAX's lax.top_k: largest first, ties by lower index); median and
quantile interpolate linearly between sorted values (NumPy's default method).
"""
from __future__ import annotations

import builtins

import numpy as np

from ... import dtypes as dt
from ...errors import ShapeError
from .. import sort as _so
from .._util import as_int, norm_axis
from .core import _operands, sub
from .shape import flip, reshape, slice_prim, take_along_axis


def _axis_operand(x, axis):
    (x,) = _operands(x)
    if axis is None:
        return reshape(x, (-1,)), 0
    return x, norm_axis(axis, x.ndim)


def argsort(x, axis=-1, kind=None, stable=True, *, descending=False):
    """Indices that sort x along `axis` (None: the flattened x), NumPy's: stable (ties keep their
    order, whatever `kind`), NaNs last; int64. descending=True (MindSpore's keyword): largest
    first, ties by lower index, NaNs first."""
    x, axis = _axis_operand(x, axis)
    if x.ndim == 0:
        raise ShapeError("argsort: a 0-d tensor has no axis (use axis=None)")
    if descending and x.shape[axis]:
        return _descending(x, axis)
    return _so.argsort.bind(x, axis=axis)


def sort(x, axis=-1, kind=None, stable=True):
    """x sorted ascending along `axis` (None: flattened), NaNs last, as NumPy; the gradient goes to
    the element each value came from (ties: to the one the stable order put there). NumPy's
    result, the values (MindSpore's ops.sort returns (values, indices): use argsort with it)."""
    x, axis = _axis_operand(x, axis)
    if x.ndim == 0:
        raise ShapeError("sort: a 0-d tensor has no axis (use axis=None)")
    return take_along_axis(x, _so.argsort.bind(x, axis=axis), axis)


def _descending(x, axis):
    """The stable descending order along axis: ties by lower index, NaNs first (the reverse of the
    ascending order of the reversed x, its indices mapped back)."""
    n = x.shape[axis]
    r = flip(_so.argsort.bind(flip(x, axis), axis=axis), axis)
    return sub(n - 1, r)


def top_k(x, k, axis=-1):
    """(values, indices) of the k largest entries along `axis` (the last, as JAX's lax.top_k),
    largest first, ties by lower index; NaN counts as the largest. Differentiable in the values."""
    (x,) = _operands(x)
    if x.ndim == 0:
        raise ShapeError("top_k: needs at least one axis")
    axis = norm_axis(axis, x.ndim)
    k = as_int(k, "k")
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ShapeError(f"top_k: k={k} is not in [0, {n}] for axis {axis} of shape {x.shape}")
    idx = _descending(x, axis) if n else _so.argsort.bind(x, axis=axis)
    idx = slice_prim(idx, (0,) * x.ndim, tuple(k if i == axis else s for i, s in enumerate(x.shape)), (1,) * x.ndim)
    return take_along_axis(x, idx, axis), idx


def topk(input, k, dim=None, largest=True, sorted=True):  # noqa: A002  (MindSpore's and torch's names)
    """MindSpore's ops.topk: top_k along `dim` (default the last); largest=False gives the k smallest
    (smallest first, ties by lower index, NaNs last). Returns (values, indices)."""
    (x,) = _operands(input)
    axis = -1 if dim is None else dim
    if largest:
        return top_k(x, k, axis)
    axis = norm_axis(axis, x.ndim)
    k = as_int(k, "k")
    if not 0 <= k <= x.shape[axis]:
        raise ShapeError(f"topk: k={k} is not in [0, {x.shape[axis]}]")
    idx = _so.argsort.bind(x, axis=axis)
    idx = slice_prim(idx, (0,) * x.ndim, tuple(k if i == axis else s for i, s in enumerate(x.shape)), (1,) * x.ndim)
    return take_along_axis(x, idx, axis), idx


def _sorted_last(x, axis):
    """(x as float, sorted along axis moved last (a tuple of axes: moved last and merged into
    one, as NumPy's median and quantile take them); the axis or sorted axes tuple (None:
    flattened); x's rank)."""
    from .core import _float_operand
    from .shape import movedim, transpose
    x = _float_operand(x)
    if axis is None:
        return sort(reshape(x, (-1,)), 0), None, x.ndim
    if isinstance(axis, (tuple, list)):
        axes = tuple(sorted(norm_axis(a, x.ndim) for a in axis))
        if len(set(axes)) != len(axes):
            raise ShapeError(f"repeated axis in {tuple(axis)}")
        rest = [i for i in range(x.ndim) if i not in axes]
        t = transpose(x, tuple(rest) + axes)
        n = int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
        return sort(reshape(t, tuple(x.shape[i] for i in rest) + (n,)), -1), axes, x.ndim
    axis = norm_axis(axis, x.ndim)
    return sort(movedim(x, axis, -1), -1), axis, x.ndim


def _at(s, i):
    """s[..., i] (a static index)."""
    nd = len(s.shape)
    lead = tuple(s.shape[:-1])
    return reshape(slice_prim(s, (0,) * (nd - 1) + (i,), lead + (i + 1,), (1,) * nd), lead)


def _keep(r, axis, ndim, lead_q=()):
    """Put back the reduced axis (or all axes for axis=None) as size 1 (keepdims)."""
    shape = tuple(r.shape)
    q_dims, rest = shape[:len(lead_q)], list(shape[len(lead_q):])
    if axis is None:
        rest = [1] * ndim
    else:
        for a in (axis if isinstance(axis, tuple) else (axis,)):  # (increasing)
            rest.insert(a, 1)
    return reshape(r, q_dims + tuple(rest))


def _nan_if_any(s, r):
    """NaN where the sorted slice holds a NaN (it sorts last), as NumPy's median and quantile."""
    from .core import not_equal, where
    last = _at(s, s.shape[-1] - 1)
    return where(not_equal(last, last), last, r)


def quantile(a, q, axis=None, keepdims=False, method="linear"):
    """NumPy's quantile with its default method ('linear': the (n - 1) q-th order statistic,
    interpolated linearly as NumPy's _lerp, bit for bit; where a neighbour is infinite the limit,
    and q = 0 / 1 the minimum / maximum themselves, where NumPy's lerp makes NaN of inf * 0).
    `q` a concrete float in [0, 1] or a sequence of them (their axes come first in the result);
    NaN where the slice holds a NaN; integers give float32.
    Built on sort: the gradient goes to the (one or two) order statistics used."""
    from .core import abs, add, less, mul, sub, where
    from .creation import full
    from .shape import stack
    if method != "linear":
        raise ShapeError(f"quantile: method {method!r} is not supported (only NumPy's default 'linear')")
    from ..trace import Tracer
    if isinstance(q, Tracer):  # (a tracer has an asnumpy too: the one that says it has no value)
        raise ShapeError("quantile: q must be concrete (a float or a sequence of floats), not a traced tensor")
    qa = np.asarray(q.asnumpy() if hasattr(q, "asnumpy") else q, np.float64)
    if qa.size and (np.isnan(qa).any() or qa.min() < 0 or qa.max() > 1):
        raise ShapeError(f"quantile: q must lie in [0, 1], got {q!r}")
    s, axis, ndim = _sorted_last(a, axis)
    n = s.shape[-1]
    lead = tuple(s.shape[:-1])
    results = []
    for qi in qa.ravel().tolist():
        if n == 0:
            results.append(full(lead, np.nan, dtype=s.dtype))
            continue
        v = (n - 1) * qi
        lo = int(np.floor(v))
        hi = builtins.min(lo + 1, n - 1)
        g = v - lo
        a_, b_ = _at(s, lo), _at(s, hi)
        if g == 0.0:
            r = a_
        else:
            d = sub(b_, a_)
            r = sub(b_, mul(d, 1.0 - g)) if g >= 0.5 else add(a_, mul(d, g))
            # an infinite neighbour: a (1 - g) + b g, the limit (NumPy's lerp gives inf - inf = NaN)
            r = where(less(abs(d), np.inf), r, add(mul(a_, 1.0 - g), mul(b_, g)))
        results.append(_nan_if_any(s, r))
    r = results[0] if qa.ndim == 0 else reshape(stack(results), qa.shape + lead)
    return _keep(r, axis, ndim, qa.shape) if keepdims else r


def _midpoint(a, b):
    """(a + b) / 2, the median's mean of two middle values; of half types in float32, rounded once
    (float16 60000 and 65000 summed to inf: NumPy's median gives 62500, a newops trial)."""
    from .core import add, astype, mul
    if a.dtype in (dt.float16, dt.bfloat16):
        return astype(_midpoint(astype(a, dt.float32), astype(b, dt.float32)), a.dtype)
    return mul(add(a, b), 0.5)


def median(a, axis=None, keepdims=False):
    """NumPy's median: the middle of the sorted values, the mean of the two middle ones for an
    even count; NaN where the slice holds a NaN; integers give float32. (MindSpore's ops.median
    differs: axis -1 by default, the lower middle value and its index.)"""
    from .creation import full
    s, axis, ndim = _sorted_last(a, axis)
    n = s.shape[-1]
    lead = tuple(s.shape[:-1])
    if n == 0:
        r = full(lead, np.nan, dtype=s.dtype)
    elif n % 2:
        r = _nan_if_any(s, _at(s, n // 2))
    else:
        r = _nan_if_any(s, _midpoint(_at(s, n // 2 - 1), _at(s, n // 2)))
    return _keep(r, axis, ndim) if keepdims else r
