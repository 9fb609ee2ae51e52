"""NumPy's conveniences composed of graphad's other ops: stacking and splitting, NaN-ignoring
reductions, closeness tests, grids, polynomials, tensordot and friends.

Each is a composition (no primitive of its own), so it differentiates, batches under vmap and
compiles as the ops it is made of; names, arguments and results follow NumPy (and so
jax.numpy). Where a NumPy formula would make a derivative NaN in a branch `where` discards (sinc
at 0), the operand of the unused branch is made safe first.
"""
from __future__ import annotations

import builtins
import math

import numpy as np

from ... import dtypes as dt
from ...errors import ArgumentError, DTypeError, ShapeError
from .._util import norm_axis
from ...tensor import TensorMethods
from .core import (abs, add, all, argmax, argmin, as_tensor, astype, constant, cumsum, div, einsum, floor_divide,  # noqa: A004
                   equal, greater, isfinite, isnan, less, less_equal, logical_and, logical_not, logical_or, matmul,
                   max, maximum, mean, min, minimum, mul, neg, not_equal, pow, prod, real, sin, sqrt, sub, sum,
                   remainder, var, where, conj, imag, _operands)
from .core import _HALF, complex as _complex, floor as floor_, _float_operands, greater_equal, signbit
from .creation import arange, eye, full
from .shape import (broadcast_to, concatenate, diagonal, expand_dims, flip, moveaxis, pad, reshape, slice_prim,
                    split, take, take_along_axis, transpose)
from .sort import argsort as argsort_, quantile


def _scalar(v, d):
    """A 0-d fill of value v and dtype d."""
    return full((), v, d)


def _count(v, what: str, op: str) -> int:
    """A count argument as an int: Python and NumPy integers only (NumPy refuses 2.5 too)."""
    if isinstance(v, TensorMethods) and not v.shape and not v.dtype.is_bool:
        import operator  # (a traced one raises the TraceError that names the fix: static_argnums)
        return operator.index(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ArgumentError(f"{op}: {what} must be an integer, got {v!r}")
    return int(v)


# ------------------------------------------------------------------ shapes, stacking, splitting

def ravel(x):
    """x flattened to one axis (row-major)."""
    return reshape(as_tensor(x), (-1,))


def atleast_1d(*xs):
    """Each operand with at least 1 axis (a scalar becomes shape (1,)); one operand: a tensor."""
    out = [reshape(t, (1,)) if t.ndim == 0 else t for t in map(as_tensor, xs)]
    return out[0] if len(out) == 1 else out


def atleast_2d(*xs):
    """Each operand with at least 2 axes: () -> (1, 1), (n,) -> (1, n)."""
    out = [reshape(t, (1,) * (2 - t.ndim) + tuple(t.shape)) if t.ndim < 2 else t for t in map(as_tensor, xs)]
    return out[0] if len(out) == 1 else out


def atleast_3d(*xs):
    """Each operand with at least 3 axes: () -> (1, 1, 1), (n,) -> (1, n, 1), (m, n) -> (m, n, 1)."""
    def three(t):
        if t.ndim == 0:
            return reshape(t, (1, 1, 1))
        if t.ndim == 1:
            return reshape(t, (1, t.shape[0], 1))
        if t.ndim == 2:
            return reshape(t, tuple(t.shape) + (1,))
        return t
    out = [three(t) for t in map(as_tensor, xs)]
    return out[0] if len(out) == 1 else out


def _seq(tensors, what):
    """The operands of a stack, promoted together: a Python number takes the tensors' dtype (as
    NumPy's weak scalars; `hstack([x64, 1.1])` rounded 1.1 to float32 first)."""
    xs = list(tensors)
    if not xs:
        raise ShapeError(f"{what}: needs at least one tensor")
    return list(_operands(*xs))


def hstack(tensors):
    """Concatenation along axis 1 (axis 0 for 1-D operands), as np.hstack."""
    ts = [atleast_1d(t) for t in _seq(tensors, "hstack")]
    return concatenate(ts, axis=0 if ts[0].ndim == 1 else 1)


def vstack(tensors):
    """Concatenation along axis 0 of the operands made at least 2-D, as np.vstack (row_stack)."""
    return concatenate([atleast_2d(t) for t in _seq(tensors, "vstack")], axis=0)


def dstack(tensors):
    """Concatenation along axis 2 of the operands made at least 3-D, as np.dstack."""
    return concatenate([atleast_3d(t) for t in _seq(tensors, "dstack")], axis=2)


def column_stack(tensors):
    """1-D operands as columns, 2-D ones as they are, concatenated along axis 1."""
    ts = [reshape(t, (t.shape[0], 1)) if t.ndim == 1 else atleast_2d(t) for t in _seq(tensors, "column_stack")]
    return concatenate(ts, axis=1)


def hsplit(x, indices_or_sections):
    """split along axis 1 (axis 0 for 1-D x)."""
    x = as_tensor(x)
    return split(x, indices_or_sections, axis=0 if x.ndim == 1 else 1)


def vsplit(x, indices_or_sections):
    """split along axis 0 of an x with at least 2 axes."""
    x = as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"vsplit: needs at least 2 axes, got shape {tuple(x.shape)}")
    return split(x, indices_or_sections, axis=0)


def array_split(x, indices_or_sections, axis=0):
    """np.array_split: split allowing unequal sections; k sections of an axis of length n are
    n % k pieces of n // k + 1, then pieces of n // k (empty ones where k > n); a list of split
    points is split's."""
    x = as_tensor(x)
    if isinstance(indices_or_sections, (tuple, list, np.ndarray)):
        return split(x, indices_or_sections, axis)
    k = _count(indices_or_sections, "the number of sections", "array_split")
    if k <= 0:
        raise ShapeError(f"array_split: the number of sections must be positive, got {k}")
    n = x.shape[norm_axis(axis, x.ndim)]
    each, extra = divmod(n, k)
    sizes = [each + 1] * extra + [each] * (k - extra)
    return split(x, [builtins.sum(sizes[:i]) for i in range(1, k)], axis)


def dsplit(x, indices_or_sections):
    """split along axis 2 of an x with at least 3 axes."""
    x = as_tensor(x)
    if x.ndim < 3:
        raise ShapeError(f"dsplit: needs at least 3 axes, got shape {tuple(x.shape)}")
    return split(x, indices_or_sections, axis=2)


def fliplr(x):
    """x reversed along axis 1."""
    x = as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"fliplr: needs at least 2 axes, got shape {tuple(x.shape)}")
    return flip(x, 1)


def flipud(x):
    """x reversed along axis 0."""
    x = as_tensor(x)
    if x.ndim < 1:
        raise ShapeError("flipud: needs at least 1 axis, got a scalar")
    return flip(x, 0)


def rot90(x, k=1, axes=(0, 1)):
    """x rotated by 90 degrees k times in the plane of `axes` (from the first towards the second)."""
    x = as_tensor(x)
    a0, a1 = (norm_axis(a, x.ndim) for a in axes)
    if a0 == a1:
        raise ShapeError("rot90: the two axes must differ")
    k = int(k) % 4
    if k == 0:
        return x
    if k == 2:
        return flip(flip(x, a0), a1)
    perm = list(range(x.ndim))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    return transpose(flip(x, a1), perm) if k == 1 else flip(transpose(x, perm), a1)


def permute_dims(x, axes=None):
    """transpose (the array API's name)."""
    return transpose(as_tensor(x), axes)


def broadcast_arrays(*xs):
    """The operands broadcast to their common shape."""
    ts = list(_operands(*xs)) if xs else []
    if not ts:
        return []
    shape = np.broadcast_shapes(*[tuple(t.shape) for t in ts])
    return [broadcast_to(t, shape) for t in ts]


def meshgrid(*xs, indexing="xy"):
    """Coordinate grids of 1-D operands, as np.meshgrid: 'xy' (the first two axes swapped) or 'ij'."""
    if indexing not in ("xy", "ij"):
        raise ShapeError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    ts = [ravel(x) for x in xs]
    n = len(ts)
    shape = [t.shape[0] for t in ts]
    if indexing == "xy" and n >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for i, t in enumerate(ts):
        pos = i
        if indexing == "xy" and n >= 2 and i < 2:
            pos = 1 - i
        view = [1] * n
        view[pos] = t.shape[0]
        out.append(broadcast_to(reshape(t, tuple(view)), tuple(shape)))
    return out


# ------------------------------------------------------------------ creation

def identity(n, dtype=dt.float32):
    """The n x n identity matrix."""
    return eye(n, dtype=dtype)


def tri(n, m=None, k=0, dtype=dt.float32):
    """Ones at and below diagonal k of an n x m matrix, zeros above."""
    m = n if m is None else m
    n, m, k = _count(n, "N", "tri"), _count(m, "M", "tri"), _count(k, "k", "tri")
    if n < 0 or m < 0:
        raise ShapeError(f"tri: negative dimensions {n} x {m}")
    rows = reshape(arange(0, n), (n, 1))
    cols = reshape(arange(0, m), (1, m))
    return astype(less_equal(cols, add(rows, k)), dtype)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """`num` evenly spaced values from start to stop (stop included with endpoint), as np.linspace:
    array bounds give one sequence per element, along `axis` (shape (num,) + their broadcast
    shape at axis 0); an integer `dtype` floors (NumPy 2); with `retstep`, (values, step).
    Python-number or NumPy bounds give NumPy's own values as a constant (float32 unless `dtype`
    says otherwise); tensor bounds are computed as start + i * step."""
    num = _count(num, "num", "linspace")
    if num < 0:
        raise ShapeError(f"linspace: num must be non-negative, got {num}")
    d = dt.as_dtype(dtype) if dtype is not None else None
    if not isinstance(start, TensorMethods) and not isinstance(stop, TensorMethods):
        lo, hi = np.asarray(start), np.asarray(stop)
        if lo.dtype.kind == "c" or hi.dtype.kind == "c":
            raise DTypeError("linspace: complex bounds are not supported")
        vals, step = np.linspace(lo.astype(np.float64), hi.astype(np.float64), num, endpoint=endpoint,
                                 retstep=True, axis=axis)
        out_d = d or dt.float32
        if out_d.is_int:
            vals = np.floor(vals)
        y = constant(vals.astype(out_d.np), out_d)
        return (y, step) if retstep else y
    a, b = _operands(start, stop)
    if not a.dtype.is_inexact:
        f = d if d is not None and d.is_inexact else dt.float32
        a, b = astype(a, f), astype(b, f)
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    a, b = broadcast_to(a, shape), broadcast_to(b, shape)
    div_ = (num - 1) if endpoint else num
    column = (num,) + (1,) * len(shape)  # the sequence axis first, before the bounds' axes
    i = reshape(astype(arange(0, num), a.dtype), column)
    step = div(sub(b, a), builtins.max(div_, 1))
    y = add(a, mul(i, step))
    if endpoint and num > 1:  # the last value is stop itself, as NumPy's
        y = where(reshape(equal(arange(0, num), num - 1), column), b, y)
    if d is not None and d.is_int and y.dtype.is_inexact:
        y = floor_(y)
    if d is not None:
        y = astype(y, d)
    if axis != 0:
        y = moveaxis(y, 0, norm_axis(axis, y.ndim))
    if retstep and div_ <= 0:
        # no interval to divide (num=1 with the endpoint, num=0): NumPy's step is NaN, as the
        # Python-bound path's is (it was (stop - start) / 1 here)
        step = full(tuple(step.shape), np.nan, step.dtype)
    return (y, step) if retstep else y


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    """base ** linspace(start, stop, num), as np.logspace (computed in floats, then cast to an
    integer `dtype` as NumPy's astype does)."""
    d = dt.as_dtype(dtype) if dtype is not None else None
    y = pow(base, linspace(start, stop, num, endpoint, dtype=d if d is not None and d.is_inexact else None,
                           axis=axis))
    return astype(y, d) if d is not None and d is not y.dtype else y


def vander(x, N=None, increasing=False):
    """The Vandermonde matrix of 1-D x: columns x^(N-1) ... x^0 (increasing: x^0 ... x^(N-1))."""
    x = as_tensor(x)
    if x.ndim != 1:
        raise ShapeError(f"vander: x must be 1-D, got shape {tuple(x.shape)}")
    n = x.shape[0] if N is None else _count(N, "N", "vander")
    if n < 0:
        raise ShapeError(f"vander: N must be non-negative, got {n}")
    if n == 0:
        return full((x.shape[0], 0), 0, x.dtype)
    cols = []
    p = None
    for k in range(n):  # successive products, so integer powers are exact as np.vander's
        p = full(tuple(x.shape), 1, x.dtype) if k == 0 else mul(p, x)
        cols.append(p)
    if not increasing:
        cols = cols[::-1]
    return concatenate([reshape(c, (x.shape[0], 1)) for c in cols], axis=1)


def diag(v, k=0):
    """A 1-D v: the square matrix with v on diagonal k (zeros elsewhere, whatever v holds: no
    inf * 0); a 2-D v: its diagonal k."""
    v = as_tensor(v)
    k = int(k)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ShapeError(f"diag: needs a 1-D or 2-D operand, got shape {tuple(v.shape)}")
    n = v.shape[0] + builtins.abs(k)
    mask = astype(eye(n, n, k), dt.bool_)
    # entry (i, i + k) is v[i] for k >= 0: v down the rows; (j - k, j) is v[j] for k < 0: along the columns
    vals = pad(v, (0, builtins.abs(k)))
    vals = broadcast_to(reshape(vals, (n, 1) if k >= 0 else (1, n)), (n, n))
    return where(mask, vals, full((n, n), 0, v.dtype))


# ------------------------------------------------------------------ elementwise

def positive(x):
    """+x (a copy of x's values)."""
    return as_tensor(x)


def fabs(x):
    """|x| of a real float x."""
    return abs(x)


def rint(x):
    """x rounded to the nearest integer, ties to even (NumPy's rint)."""
    from .core import round as _round
    return _round(x)


def deg2rad(x):
    """x * pi / 180."""
    x = as_tensor(x)
    return mul(x if x.dtype.is_inexact else astype(x, dt.float32), math.pi / 180)


def rad2deg(x):
    """x * 180 / pi."""
    x = as_tensor(x)
    return mul(x if x.dtype.is_inexact else astype(x, dt.float32), 180 / math.pi)


radians = deg2rad
degrees = rad2deg


def fmax(x, y):
    """Elementwise maximum that ignores NaN (NaN only where both are NaN), as np.fmax."""
    a, b = _operands(x, y)
    # both NaN: x's (its NaN, and the gradient to x, as jnp.fmax)
    return where(logical_and(isnan(a), logical_not(isnan(b))), b, where(isnan(b), a, maximum(a, b)))


def fmin(x, y):
    """Elementwise minimum that ignores NaN, as np.fmin."""
    a, b = _operands(x, y)
    return where(logical_and(isnan(a), logical_not(isnan(b))), b, where(isnan(b), a, minimum(a, b)))


def copysign(x1, x2):
    """np.copysign: |x1| with x2's sign bit, -0.0 and NaN signs included on both sides (read by
    the `signbit` primitive; copysign(1, -nan) is -1); integers give the default float. The
    derivative is JAX's: in x1, +1 where x1 >= 0 (both zeros) and -1 where x1 < 0, negated where
    x2's sign bit is set (so +1 where the signs agree); in x2, zero."""
    a, b = _float_operands(x1, x2)
    if a.dtype.is_complex:
        raise DTypeError(f"copysign of {a.dtype.name}: complex numbers have no sign bit (NumPy refuses them too)")
    # |a| with JAX's derivative (its abs: +1 at both zeros): a + 0.0 is +0.0 at -0.0 with slope 1;
    # a NaN keeps or drops its own sign bit (NaN >= 0 is false)
    mag = where(greater_equal(a, 0), add(a, _scalar(0, a.dtype)), where(signbit(a), neg(a), a))
    return where(signbit(b), neg(mag), mag)


def heaviside(x, h0):
    """0 where x < 0, h0 where x == 0, 1 where x > 0; NaN for NaN."""
    a, h = _operands(x, h0)
    r = where(less(a, 0), _scalar(0, a.dtype), where(greater(a, 0), _scalar(1, a.dtype), h))
    return where(isnan(a), a, r) if a.dtype.is_inexact else r


# sinc's Maclaurin series in y = pi x, the sum of (-1)^n y^(2n) / (2n + 1)! to y^16: where |y| <
# 0.5 it is sin(y) / y to within float64's rounding (the next term, y^18 / 19!, is below 4e-23),
# and its derivatives are sinc's own. The quotient's are not there: at 0 it was the constant 1
# (every derivative 0; the second is -pi^2 / 3), and near 0 its derivatives cancel (the second at
# x = 1e-8 came out -4.98 for -3.29). From |y| = 0.5 on, the quotient's k-th derivative loses
# about eps / |y|^k (against mpmath: 4th derivative 1.7e-13 just above the bound, 2.4e-14 at
# x = 0.3, 4e-16 and better below it)
_SINC_SERIES = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(9))
_SINC_SERIES_BELOW = 0.5


def sinc(x):
    """sin(pi x) / (pi x), 1 at 0; its Maclaurin series where |pi x| < 0.5, so that derivatives of
    every order there are sinc's (the second at 0 is -pi^2 / 3), not those of the quotient."""
    x = as_tensor(x)
    if not x.dtype.is_inexact:
        x = astype(x, dt.float32)
    y = mul(x, math.pi)
    magnitude = abs(y)
    near = less(magnitude, _scalar(_SINC_SERIES_BELOW, magnitude.dtype))
    ys = where(near, y, _scalar(0, x.dtype))  # the series' operand
    yq = where(near, _scalar(1, x.dtype), y)  # the quotient's (no 0 / 0 in the branch where drops)
    y2 = mul(ys, ys)
    series = _scalar(_SINC_SERIES[-1], x.dtype)
    for c in reversed(_SINC_SERIES[:-1]):
        series = add(mul(series, y2), _scalar(c, x.dtype))
    return where(near, series, div(sin(yq), yq))


def float_power(x, y):
    """x ** y computed in float64 (complex128 for complex operands), as np.float_power."""
    a, b = _operands(x, y)
    d = dt.complex128 if a.dtype.is_complex or b.dtype.is_complex else dt.float64
    return pow(astype(a, d), astype(b, d))


def ldexp(x, n):
    """x * 2 ** n for integer n, rounded once as np.ldexp (zeros, infinities and NaN unchanged)."""
    x, n = as_tensor(x), as_tensor(n)
    if not n.dtype.is_int:
        raise ShapeError(f"ldexp: the exponent must be an integer, got {n.dtype.name}")
    if not x.dtype.is_inexact:
        x = astype(x, dt.float32)
    wide = dt.complex128 if x.dtype.is_complex else dt.float64
    two = _scalar(2, wide)

    def scale(y, k):  # y * 2^k, 2^k a normal float64 (|k| <= 1022): exact unless y * 2^k rounds
        return mul(y, pow(two, astype(k, wide)))
    # beyond +-2200 every float (float64's subnormals included) has saturated to 0 or inf; the
    # exponent is clamped so that no factor 2^k is 0 or inf (ldexp(0, 2100) was 0 * inf = NaN)
    n = astype(minimum(maximum(n, -2200), 2200), dt.int64)
    if x.dtype != wide:
        # float32, float16, bfloat16 (complex64): x 2^n is exact in float64 for |n| <= 400 (whatever
        # x), and rounded once by the cast back
        return astype(scale(astype(x, wide), minimum(maximum(n, -400), 400)), x.dtype)
    # float64: one factor while |n| <= 1022 (rounded once); beyond, that factor and two more
    a = minimum(maximum(n, -1022), 1022)
    rest = sub(n, a)
    h = floor_divide(rest, 2)
    return scale(scale(scale(x, a), h), sub(rest, h))



def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol |b| elementwise, as np.isclose: infinities close only to themselves,
    NaN to nothing unless equal_nan."""
    x, y = _operands(a, b)
    if not x.dtype.is_inexact:
        x, y = astype(x, dt.float64), astype(y, dt.float64)
    finite = logical_and(isfinite(x), isfinite(y))
    near = logical_and(finite, less_equal(abs(sub(x, y)), add(mul(abs(y), rtol), atol)))
    r = logical_or(near, equal(x, y))
    if equal_nan:
        r = logical_or(r, logical_and(isnan(x), isnan(y)))
    return r


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """all(isclose(a, b, ...)): a bool scalar."""
    return all(isclose(a, b, rtol, atol, equal_nan))


def array_equal(a, b, equal_nan=False):
    """Whether a and b have one shape and equal elements (NaN equal to NaN with equal_nan)."""
    x, y = as_tensor(a), as_tensor(b)
    if tuple(x.shape) != tuple(y.shape):
        return constant(False, dt.bool_)
    x, y = _operands(x, y)
    eq = equal(x, y)
    if equal_nan and x.dtype.is_inexact:
        eq = logical_or(eq, logical_and(isnan(x), isnan(y)))
    return all(eq)


def count_nonzero(x, axis=None, keepdims=False):
    """The number of nonzero (true) elements over `axis` (int64)."""
    x = as_tensor(x)
    return sum(astype(x if x.dtype.is_bool else not_equal(x, 0), dt.int64), axis, keepdims)


def select(condlist, choicelist, default=0):
    """choicelist[k] where condlist[k] first holds, else `default`, as np.select."""
    if len(condlist) != len(choicelist):
        raise ShapeError(f"select: {len(condlist)} conditions for {len(choicelist)} choices")
    if not condlist:
        raise ShapeError("select: needs at least one condition")
    *choices, r = _operands(*choicelist, default)  # (a Python default takes the choices' dtype)
    for k, (c, v) in reversed(list(enumerate(zip(condlist, choices)))):
        c = as_tensor(c)
        if not c.dtype.is_bool:
            raise DTypeError(f"select: condition {k} is {c.dtype.name}; conditions must be bools (as NumPy's)")
        r = where(c, v, r)
    return r


def polyval(p, x):
    """p[0] x^(n-1) + ... + p[n-1] by Horner's rule (p a sequence or a 1-D tensor)."""
    if isinstance(p, TensorMethods):
        if p.ndim != 1:
            raise ShapeError(f"polyval: the coefficients must be 1-D, got shape {tuple(p.shape)}")
        coefs = [p[i] for i in range(p.shape[0])]
    else:
        coefs = list(p)
    *coefs, x = _operands(*coefs, x)  # (promoted together: a Python x takes the coefficients' dtype)
    if not coefs:
        return full(tuple(x.shape), 0, x.dtype)
    r = coefs[0]
    for c in coefs[1:]:
        r = add(mul(r, x), c)
    shape = np.broadcast_shapes(tuple(r.shape), tuple(x.shape))
    return r if tuple(r.shape) == shape else broadcast_to(r, shape)


# ------------------------------------------------------------------ reductions

def ptp(x, axis=None, keepdims=False):
    """max - min over `axis` (peak to peak)."""
    return sub(max(x, axis, keepdims), min(x, axis, keepdims))


def average(a, axis=None, weights=None, returned=False, keepdims=False):
    """The mean over `axis`, or sum(a w) / sum(w) with `weights` (of a's shape, or of the shape of
    a's `axis` axes, broadcast along them); with `returned`, (average, sum of weights), as
    np.average."""
    a = as_tensor(a)
    if weights is None:
        r = mean(a, axis, keepdims)
        if not returned:
            return r
        return r, broadcast_to(astype(_scalar(a.size // builtins.max(r.size, 1), dt.int64), r.dtype), tuple(r.shape))
    w = as_tensor(weights)
    if tuple(w.shape) != tuple(a.shape):
        axes = None if axis is None else tuple(norm_axis(i, a.ndim) for i in
                                               (axis if isinstance(axis, (tuple, list)) else (axis,)))
        if axes is None or tuple(w.shape) != tuple(a.shape[i] for i in axes):
            raise ShapeError(f"average: weights of shape {tuple(w.shape)} for a of shape {tuple(a.shape)}: they "
                             f"need a's shape, or an axis and the shape of a's axes {axes}")
        order = sorted(range(len(axes)), key=lambda k: axes[k])  # weights' axes in a's order
        w = transpose(w, tuple(order)) if order != list(range(len(axes))) else w
        w = reshape(w, tuple(a.shape[i] if i in axes else 1 for i in range(a.ndim)))
    a, w = _operands(a, w)
    if not a.dtype.is_inexact:
        a, w = astype(a, dt.float32), astype(w, dt.float32)
    total = sum(broadcast_to(w, tuple(a.shape)), axis, keepdims)
    r = div(sum(mul(a, w), axis, keepdims), total)
    return (r, total) if returned else r


def _nan_filled(x, fill):
    x = as_tensor(x)
    if not x.dtype.is_inexact:
        return x, None
    nan = isnan(x)
    return where(nan, _scalar(fill, x.dtype), x), nan


def nansum(x, axis=None, keepdims=False):
    """sum treating NaN as 0."""
    y, _ = _nan_filled(x, 0)
    return sum(y, axis, keepdims)


def nanprod(x, axis=None, keepdims=False):
    """prod treating NaN as 1."""
    y, _ = _nan_filled(x, 1)
    return prod(y, axis, keepdims)


def nancumsum(x, axis=None):
    """cumsum treating NaN as 0."""
    y, _ = _nan_filled(x, 0)
    return cumsum(y, axis)


def _nan_count(nan, axis, keepdims, d):
    return astype(sum(astype(logical_not(nan), dt.int64), axis, keepdims), d)


def nanmean(x, axis=None, keepdims=False):
    """mean over the non-NaN elements (NaN where there are none); float16 and bfloat16 computed in
    float32 and rounded once, as `mean`."""
    x = as_tensor(x)
    if x.dtype in _HALF:
        return astype(nanmean(astype(x, dt.float32), axis, keepdims), x.dtype)
    y, nan = _nan_filled(x, 0)
    if nan is None:
        return mean(y, axis, keepdims)
    return div(sum(y, axis, keepdims), _nan_count(nan, axis, keepdims, y.dtype))


def nanvar(x, axis=None, ddof=0, keepdims=False):
    """var over the non-NaN elements, with n - ddof in the denominator; float16 and bfloat16
    computed in float32 and rounded once, as `var` (in float16 [60000, 60000, nan] gave inf)."""
    x = as_tensor(x)
    if x.dtype in _HALF:
        return astype(nanvar(astype(x, dt.float32), axis, ddof, keepdims), x.dtype)
    y, nan = _nan_filled(x, 0)
    if nan is None:
        return var(y, axis, ddof, keepdims)
    n = _nan_count(nan, axis, True, y.dtype)
    m = div(sum(y, axis, True), n)
    d = where(nan, _scalar(0, y.dtype), sub(y, m))
    sq = mul(d, conj(d)) if d.dtype.is_complex else mul(d, d)
    s = real(sum(sq, axis, keepdims)) if d.dtype.is_complex else sum(sq, axis, keepdims)
    dof = sub(_nan_count(nan, axis, keepdims, s.dtype), ddof)
    # no degrees of freedom left: NaN, as np.nanvar (plain var divides by max(n - ddof, 0))
    ok = greater(dof, 0)
    return where(ok, div(s, where(ok, dof, _scalar(1, dof.dtype))), _scalar(math.nan, s.dtype))


def nanstd(x, axis=None, ddof=0, keepdims=False):
    """sqrt(nanvar)."""
    return sqrt(nanvar(x, axis, ddof, keepdims))


def _nan_extreme(x, axis, keepdims, reduce, fill):
    x = as_tensor(x)
    y, nan = _nan_filled(x, fill)
    r = reduce(y, axis, keepdims)
    if nan is None:
        return r
    return where(all(nan, axis, keepdims), _scalar(math.nan, r.dtype), r)


def nanmax(x, axis=None, keepdims=False):
    """max ignoring NaN (NaN where every element is NaN)."""
    return _nan_extreme(x, axis, keepdims, max, -math.inf)


def nanmin(x, axis=None, keepdims=False):
    """min ignoring NaN (NaN where every element is NaN)."""
    return _nan_extreme(x, axis, keepdims, min, math.inf)


def nanargmax(x, axis=None, keepdims=False):
    """argmax ignoring NaN (an all-NaN slice gives 0; NumPy raises there)."""
    y, _ = _nan_filled(x, -math.inf)
    return argmax(y, axis, keepdims)


def nanargmin(x, axis=None, keepdims=False):
    """argmin ignoring NaN (an all-NaN slice gives 0; NumPy raises there)."""
    y, _ = _nan_filled(x, math.inf)
    return argmin(y, axis, keepdims)


def nanmedian(a, axis=None, keepdims=False):
    """np.nanmedian: the median of the non-NaN elements (the mean of the two middle ones for an
    even count); NaN where there are none; integers give float32, as `median`. NaN sorts last, so
    with k non-NaN values in a sorted slice the middle ones sit at (k - 1) // 2 and k // 2,
    gathered from the sort: the gradient goes to those (one or two) order statistics."""
    from .sort import _keep, _midpoint, _sorted_last
    s, axis, ndim = _sorted_last(a, axis)
    n = s.shape[-1]
    lead = tuple(s.shape[:-1])
    if n == 0:
        r = full(lead, np.nan, s.dtype)
    else:
        k = sum(astype(logical_not(isnan(s)), dt.int64), -1, keepdims=True)
        lo = floor_divide(maximum(sub(k, 1), 0), 2)  # (k = 0: index 0, a NaN)
        hi = floor_divide(k, 2)
        hi = minimum(hi, n - 1)
        s_lo = reshape(take_along_axis(s, lo, -1), lead)
        s_hi = reshape(take_along_axis(s, hi, -1), lead)
        r = where(equal(reshape(lo, lead), reshape(hi, lead)), s_lo, _midpoint(s_lo, s_hi))
    return _keep(r, axis, ndim) if keepdims else r


def percentile(a, q, axis=None, keepdims=False, method="linear"):
    """quantile(a, q / 100)."""
    qs = div(as_tensor(q), 100) if isinstance(q, TensorMethods) else np.asarray(q, np.float64) / 100
    return quantile(a, qs, axis, keepdims, method)


def diff(x, n=1, axis=-1, prepend=None, append=None):
    """The n-th forward difference along `axis`: x[1:] - x[:-1], n times; `prepend` / `append`
    values (scalars broadcast to one slice) are joined to x along `axis` first, as np.diff."""
    x = as_tensor(x)
    n = _count(n, "n", "diff")
    if x.ndim == 0:
        raise ShapeError("diff: needs at least one axis, got a 0-d operand")
    ax = norm_axis(axis, x.ndim)
    if n < 0:
        raise ShapeError(f"diff: order must be non-negative, got {n}")
    if n and (prepend is not None or append is not None):
        parts = []
        # promoted together first: a Python prepend/append takes x's dtype (it was float32 first)
        for v in _operands(*[v for v in (prepend, x, append) if v is not None]):
            if v.ndim == 0:
                v = broadcast_to(v, tuple(1 if i == ax else s_ for i, s_ in enumerate(x.shape)))
            parts.append(v)
        x = concatenate(parts, axis=ax)
    for _ in range(n):
        m = x.shape[ax]
        if m == 0:
            break
        lo = [0] * x.ndim
        hi = list(x.shape)
        one = [1] * x.ndim
        hi_a, lo_b = list(hi), list(lo)
        hi_a[ax], lo_b[ax] = m - 1, 1
        a = slice_prim(x, lo, hi_a, one)
        b = slice_prim(x, lo_b, hi, one)
        x = not_equal(b, a) if x.dtype.is_bool else sub(b, a)
    return x


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """The integral of y by the trapezoidal rule along `axis` (samples at x, or spaced dx)."""
    y = as_tensor(y)
    if not y.dtype.is_inexact:
        y = astype(y, dt.float32)
    ax = norm_axis(axis, y.ndim)
    n = y.shape[ax]
    lo, hi, one = [0] * y.ndim, list(y.shape), [1] * y.ndim
    if n < 2:  # no interval: 0 (a sum over nothing, whatever y holds)
        hi[ax] = 0
        return sum(slice_prim(y, lo, hi, one), ax)
    hi_a, lo_b = list(hi), list(lo)
    hi_a[ax], lo_b[ax] = n - 1, 1
    mid = mul(add(slice_prim(y, lo, hi_a, one), slice_prim(y, lo_b, hi, one)), 0.5)
    if x is None:
        return mul(sum(mid, ax), dx)
    d = diff(x, 1, -1 if as_tensor(x).ndim == 1 else ax)
    if d.ndim == 1 and y.ndim > 1:
        d = reshape(d, tuple(n - 1 if i == ax else 1 for i in range(y.ndim)))
    return sum(mul(mid, d), ax)


# ------------------------------------------------------------------ products

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tensordot(a, b, axes=2):
    """Sum of products over the last `axes` axes of a and the first of b (an int), or over the
    axis lists axes = (a_axes, b_axes), as np.tensordot."""
    a, b = _operands(a, b)
    if isinstance(axes, (int, np.integer)):
        k = int(axes)
        if k < 0 or k > builtins.min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: axes={k} for operands of rank {a.ndim} and {b.ndim}")
        aa, ba = list(range(a.ndim - k, a.ndim)), list(range(k))
    else:
        aa, ba = axes
        aa = [aa] if isinstance(aa, (int, np.integer)) else list(aa)
        ba = [ba] if isinstance(ba, (int, np.integer)) else list(ba)
        if len(aa) != len(ba):
            raise ShapeError(f"tensordot: {len(aa)} axes of a for {len(ba)} of b")
        aa = [norm_axis(i, a.ndim) for i in aa]
        ba = [norm_axis(i, b.ndim) for i in ba]
        if len(set(aa)) != len(aa) or len(set(ba)) != len(ba):
            raise ShapeError(f"tensordot: repeated axes in {tuple(aa)}, {tuple(ba)}")
    if a.ndim + b.ndim - len(aa) > len(_LETTERS):
        raise ShapeError("tensordot: too many axes")
    la = list(_LETTERS[:a.ndim])
    lb = list(_LETTERS[a.ndim:a.ndim + b.ndim])
    for i, j in zip(aa, ba):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: axis {i} of a has length {a.shape[i]}, axis {j} of b {b.shape[j]}")
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in aa] + [c for j, c in enumerate(lb) if j not in ba]
    return einsum("".join(la) + "," + "".join(lb) + "->" + "".join(out), a, b)


def dot(a, b):
    """NumPy's dot: a scalar operand multiplies; 1-D and 2-D operands as matmul; otherwise the sum
    over a's last axis and b's second to last (b's only axis when 1-D), the remaining axes of a
    then of b, as np.dot (not matmul's batch broadcasting)."""
    a, b = _operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return mul(a, b)
    if a.ndim <= 2 and b.ndim <= 2:
        return matmul(a, b)
    return tensordot(a, b, ([a.ndim - 1], [builtins.max(b.ndim - 2, 0)]))


def inner(a, b):
    """NumPy's inner: the sum over the last axes of a and b, the remaining axes of a then of b
    (inner(m, m) of a matrix is m m^T); a scalar operand multiplies."""
    a, b = _operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return mul(a, b)
    return tensordot(a, b, ([a.ndim - 1], [b.ndim - 1]))


def vdot(a, b):
    """sum(conj(a) b) over the flattened operands."""
    a, b = _operands(a, b)
    a, b = ravel(a), ravel(b)
    if a.shape[0] != b.shape[0]:
        raise ShapeError(f"vdot: {a.shape[0]} and {b.shape[0]} elements")
    if a.dtype == b.dtype and a.dtype in _HALF:
        # as dot: the products and their sum in float32, rounded once (each product rounded to
        # float16 overflowed: [300, 300] . [300, -300] gave NaN, NumPy and JAX 0)
        return einsum("i,i->", a, b)
    return sum(mul(conj(a) if a.dtype.is_complex else a, b))


def kron(a, b):
    """The Kronecker product: blocks a[i, j] * b (operands of equal rank after padding the smaller
    with leading unit axes)."""
    a, b = _operands(a, b)
    n = builtins.max(a.ndim, b.ndim)
    a = reshape(a, (1,) * (n - a.ndim) + tuple(a.shape))
    b = reshape(b, (1,) * (n - b.ndim) + tuple(b.shape))
    # a[..., i, None] * b[None, ..., j]: interleave the axes, then merge each pair
    ea = reshape(a, tuple(s for d in a.shape for s in (d, 1)))
    eb = reshape(b, tuple(s for d in b.shape for s in (1, d)))
    return reshape(mul(ea, eb), tuple(x * y for x, y in zip(a.shape, b.shape)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors along `axisa` of a and `axisb` of b, put along `axisc` of
    the result (`axis` sets all three), as np.cross (2-vectors: the z component)."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("cross: needs vectors, got a 0-d operand")
    ax_a, ax_b = norm_axis(axisa, a.ndim), norm_axis(axisb, b.ndim)
    na, nb = a.shape[ax_a], b.shape[ax_b]
    if na not in (2, 3) or nb not in (2, 3):
        raise ShapeError(f"cross: vectors of length 2 or 3 along the axis, got {na} and {nb}")

    def comp(t, ax, i, n):
        if i >= n:
            return None
        lo, hi, one = [0] * t.ndim, list(t.shape), [1] * t.ndim
        lo[ax], hi[ax] = i, i + 1
        return reshape(slice_prim(t, lo, hi, one), tuple(s for k, s in enumerate(t.shape) if k != ax))
    a0, a1, a2 = (comp(a, ax_a, i, na) for i in range(3))
    b0, b1, b2 = (comp(b, ax_b, i, nb) for i in range(3))

    def m(x, y):
        return None if x is None or y is None else mul(x, y)

    def s(x, y):
        if x is None and y is None:
            return None
        if y is None:
            return x
        return neg(y) if x is None else sub(x, y)
    cz = s(m(a0, b1), m(a1, b0))
    if na == 2 and nb == 2:
        return cz
    cx, cy = s(m(a1, b2), m(a2, b1)), s(m(a2, b0), m(a0, b2))  # (a missing third component is 0)
    out = concatenate([expand_dims(p, -1) for p in broadcast_arrays(cx, cy, cz)], axis=-1)
    return moveaxis(out, -1, norm_axis(axisc, out.ndim))


def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None):
    """The covariance matrix of the variables in the rows of m (and of y, appended as more
    variables; columns with rowvar=False), with integer frequency weights `fweights` and
    observation weights `aweights` per observation, as np.cov."""
    def rows(v, what):
        v = as_tensor(v)
        if v.ndim > 2:
            raise ShapeError(f"cov: {what} needs 1 or 2 axes, got shape {tuple(v.shape)}")
        if v.ndim == 0:  # one variable, one observation (NumPy: NaN, no degrees of freedom)
            v = reshape(v, (1, 1))
        if v.ndim == 1:
            return reshape(v, (1, v.shape[0]))
        # as NumPy: y's single row stays one variable's observations even with rowvar=False
        return v if rowvar or (what == "y" and v.shape[0] == 1) else transpose(v, (1, 0))
    x = rows(m, "m")
    if y is not None:
        yr = rows(y, "y")
        if yr.shape[1] != x.shape[1]:
            raise ShapeError(f"cov: m has {x.shape[1]} observations, y {yr.shape[1]}")
        x = concatenate(list(_operands(x, yr)), axis=0)
    if not x.dtype.is_inexact:
        x = astype(x, dt.float64)
    n = x.shape[1]
    dd = (0 if bias else 1) if ddof is None else _count(ddof, "ddof", "cov")
    real_t = dt.float32 if x.dtype in (dt.float32, dt.complex64) else dt.float64
    w = None
    for v, what in ((fweights, "fweights"), (aweights, "aweights")):
        if v is None:
            continue
        v = as_tensor(v)
        if v.ndim != 1 or v.shape[0] != n:
            raise ShapeError(f"cov: {what} must be 1-D with one weight per observation ({n}), got shape "
                             f"{tuple(v.shape)}")
        v = astype(v, real_t)
        if what == "aweights":
            aw = v
        w = v if w is None else mul(w, v)
    if w is None:
        c = sub(x, mean(x, 1, True))
        cw, fact = c, builtins.max(n - dd, 0)
    else:
        v1 = sum(w)
        c = sub(x, div(sum(mul(x, w), 1, True), v1))
        cw = mul(c, w)
        # NumPy's: v1 - ddof, or v1 - ddof * sum(w * aweights) / v1 with observation weights
        fact = maximum(sub(v1, mul(div(sum(mul(w, aw)), v1), dd) if aweights is not None else dd), 0)
    r = div(matmul(cw, transpose(conj(c) if c.dtype.is_complex else c, (1, 0))), fact)
    return reshape(r, ()) if r.shape == (1, 1) else r


# ------------------------------------------------------------------ searching

def searchsorted(a, v, side="left", sorter=None):
    """Insertion indices of v into the sorted 1-D a (NumPy's order: NaN after everything), as
    np.searchsorted: the count of a's elements before (left) or not after (right) each v; with
    `sorter`, a's order is a[sorter] (as argsort gives it)."""
    if side not in ("left", "right"):
        raise ShapeError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    if sorter is not None:
        a = take(as_tensor(a), as_tensor(sorter))
    a, v = _operands(a, v)
    if a.ndim != 1:
        raise ShapeError(f"searchsorted: a must be 1-D, got shape {tuple(a.shape)}")
    ae = reshape(a, (1,) * v.ndim + (a.shape[0],))
    ve = expand_dims(v, -1)
    if side == "left":
        before = less(ae, ve)
        if a.dtype.is_inexact:
            before = logical_or(before, logical_and(isnan(ve), logical_not(isnan(ae))))
    else:
        before = less_equal(ae, ve)
        if a.dtype.is_inexact:
            before = logical_or(before, isnan(ve))
    return sum(astype(before, dt.int64), -1)


def digitize(x, bins, right=False):
    """The index of the bin of each x, as np.digitize: bins increasing or decreasing (told by the
    first and last; NumPy checks every step and refuses bins that are neither)."""
    bins = as_tensor(bins)
    if bins.ndim != 1:
        raise ShapeError(f"digitize: bins must be 1-D, got shape {tuple(bins.shape)}")
    side = "left" if right else "right"
    inc = searchsorted(bins, x, side=side)
    n = bins.shape[0]
    if n < 2:
        return inc
    dec = sub(n, searchsorted(flip(bins, (0,)), x, side=side))
    return where(greater(reshape(take(bins, 0), ()), reshape(take(bins, n - 1), ())), dec, inc)


def interp(x, xp, fp, left=None, right=None, period=None):
    """The piecewise-linear interpolant through (xp, fp) (xp increasing) at x, fp[0] / fp[-1]
    (or left / right) outside, as np.interp: complex fp interpolates its two parts; with
    `period`, x and xp are taken modulo it (left and right then do not apply).
    Differentiable in x and fp."""
    xp, fp = as_tensor(xp), as_tensor(fp)
    x = x if isinstance(x, TensorMethods) else _operands(x, xp)[0]  # (a Python x: xp's dtype)
    if xp.ndim != 1 or fp.ndim != 1:
        raise ShapeError(f"interp: xp and fp must be 1-D, got shapes {tuple(xp.shape)} and {tuple(fp.shape)}")
    if x.dtype.is_complex or xp.dtype.is_complex:
        raise DTypeError("interp: x and xp must be real")
    if fp.dtype.is_complex:
        lr = [(None, None) if v is None else (real(as_tensor(v)), imag(as_tensor(v))) for v in (left, right)]
        re = interp(x, xp, real(fp), lr[0][0], lr[1][0], period)
        im = interp(x, xp, imag(fp), lr[0][1], lr[1][1], period)
        return _complex(re, im)
    x, xp, fp = _operands(x, xp, fp)
    if not x.dtype.is_inexact:
        x, xp, fp = astype(x, dt.float64), astype(xp, dt.float64), astype(fp, dt.float64)
    n = xp.shape[0]
    if n == 0 or fp.shape[0] != n:
        raise ShapeError(f"interp: xp and fp need the same non-zero length, got {n} and {fp.shape[0]}")
    if period is not None:
        if isinstance(period, TensorMethods) or float(period) == 0:
            raise ShapeError("interp: period must be a non-zero number")
        p = builtins.abs(float(period))
        x, xp = remainder(x, p), remainder(xp, p)  # in [0, p), as NumPy's np.mod
        order = argsort_(xp)
        xp, fp = take(xp, order), take(fp, order)
        # one knot either side, a period away, as NumPy does
        xp = concatenate([sub(reshape(take(xp, n - 1), (1,)), p), xp, add(reshape(take(xp, 0), (1,)), p)], axis=0)
        fp = concatenate([reshape(take(fp, n - 1), (1,)), fp, reshape(take(fp, 0), (1,))], axis=0)
        n += 2
        left = right = None
    if n == 1:  # NumPy's: left below, right above, fp[0] otherwise (NaN x included)
        y0 = reshape(fp, ())
        x0 = reshape(xp, ())
        lo = y0 if left is None else left
        hi = y0 if right is None else right
        return where(less(x, x0), lo, where(greater(x, x0), hi, broadcast_to(y0, tuple(x.shape))))
    j = minimum(maximum(sub(searchsorted(xp, x, "right"), 1), 0), n - 2)
    x0, x1 = take(xp, j), take(xp, add(j, 1))
    y0, y1 = take(fp, j), take(fp, add(j, 1))
    span = sub(x1, x0)
    t = div(sub(x, x0), where(equal(span, 0), _scalar(1, span.dtype), span))
    dy = sub(y1, y0)
    y = add(y0, mul(t, dy))
    bad = isnan(y)
    # NumPy's fallbacks where the formula makes NaN of an infinite value (0 * inf, inf - inf):
    # a knot's own value, then the formula from the segment's right end, then y0 where y0 == y1
    y = where(logical_and(bad, equal(x, x0)), y0, y)
    y = where(isnan(y), add(y1, mul(sub(t, 1), dy)), y)
    y = where(logical_and(isnan(y), equal(y0, y1)), y0, y)
    # exactly at the right knot (only the last knot: searchsorted puts an interior knot in the
    # segment it starts): its value, with the segment's slope as the derivative in x, as JAX's
    # interp has it. The slope rides on a zero term that is -0 whatever its signs, so y1 + term
    # is y1 bit for bit (-0, inf and NaN included)
    zero = _scalar(0, span.dtype)
    slope = where(equal(span, 0), zero, div(dy, where(equal(span, 0), _scalar(1, span.dtype), span)))
    slope = where(isfinite(slope), slope, zero)
    d = sub(x, x1)
    d = where(isfinite(d), d, zero)  # +0 at the knot; an infinite knot has no slope
    term = where(less(slope, 0), mul(d, slope),                         # +0 * negative: -0
                 where(greater(slope, 0), neg(mul(sub(zero, d), slope)),  # -(+0 * positive): -0
                       _scalar(-0.0, span.dtype)))
    y = where(equal(x, x1), add(y1, term), y)
    lo = reshape(take(fp, 0), ()) if left is None else left
    hi = reshape(take(fp, n - 1), ()) if right is None else right
    y = where(less(x, reshape(take(xp, 0), ())), lo, where(greater(x, reshape(take(xp, n - 1), ())), hi, y))
    return where(isnan(x), x, y)



__all__ = [n for n in dir() if not n.startswith("_") and callable(globals()[n])
           and getattr(globals()[n], "__module__", None) == __name__] + ["radians", "degrees"]
__all__ = sorted(set(__all__))
