"""User-facing elementwise, reduction and linear-algebra functions (NumPy names and keywords).

These wrap the primitives: they convert operands (Python scalars are weakly typed and take the
tensor operand's dtype; NumPy arrays become Tensors), promote dtypes (JAX-style lattice),
normalise axes and handle NumPy conveniences (1-D matmul) before binding a primitive.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import builtins

import numpy as np

from ... import dtypes as dt
from ...errors import ArgumentError, DTypeError, IntegerOverflowError, ShapeError
from ...ir.core import TensorType
from .. import creation as _cr
from .. import elementwise as _ew
from .. import linalg as _la
from .. import reduce as _rd
from .._util import norm_axes, norm_axis
from ...tensor import Tensor, TensorMethods

_SCALARS = (bool, int, float, complex, np.bool_, np.integer, np.floating, np.complexfloating)


def is_scalar(x) -> bool:
    return isinstance(x, _SCALARS)


def constant(value, dtype=None):
    """A constant tensor (a `constant` node when tracing, a Tensor eagerly). A Python integer that
    does not fit an integer `dtype` is refused (IntegerOverflowError), not wrapped."""
    arr = np.asarray(value)
    d = dt.as_dtype(dtype) if dtype is not None else (dt.scalar_dtype(value) if is_scalar(value) else dt.as_dtype(arr.dtype))
    _check_int_fits(value, d)
    if not is_scalar(value) and d.np.kind in "iu" and arr.dtype.kind in "iuf":
        from ...tensor import _check_int_range
        _check_int_range(arr, d, "")  # an array constant's values too (Tensor checks its data the same way)
    if d.name == "bfloat16" and arr.dtype == np.float64:
        from .._util import round_from_f64  # (ml_dtypes rounds float64 -> float32 -> bfloat16: twice)
        return _cr.constant.bind(value=round_from_f64(arr, d.np), dtype=d.name)
    return _cr.constant.bind(value=np.asarray(arr, d.np), dtype=d.name)


def _check_int_fits(value, d) -> None:
    """Refuse an integer scalar (Python's or NumPy's) that an integer dtype `d` cannot hold (a cast
    would wrap it), and a float one whose conversion would not be its truncation (NaN, inf, out of
    range: NumPy gives INT_MIN), as Tensor(value, d) refuses it."""
    if isinstance(value, (float, np.floating)) and d.np.kind in "iu":
        from ...tensor import _check_int_range
        _check_int_range(np.asarray(value, np.float64), d, "")  # (the op's error names the op)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and d.np.kind in "iu":
        info = np.iinfo(d.np)
        v = int(value)
        if not info.min <= v <= info.max:
            hint = ("make it an int64 tensor" if d is not dt.int64 else
                    "graphad has no wider integer type: use a float tensor")
            raise IntegerOverflowError(f"integer {v} out of bounds for {d.name} ([{info.min}, {info.max}]); {hint}")


def asarray_in_trace(x):
    """Convert a Python scalar or NumPy array leaf to a tensor operand (constant)."""
    return constant(x)


def as_tensor(x, dtype=None):
    """Tensor-like operand from a Tensor, tracer, scalar, list or array."""
    if isinstance(x, TensorMethods):
        return x if dtype is None or x.dtype is dt.as_dtype(dtype) else astype(x, dtype)
    if is_scalar(x):
        return constant(x, dtype)
    if isinstance(x, (list, tuple)) and _holds_tensor(x):
        return stack([as_tensor(e, dtype) for e in x])
    return Tensor(x, dtype)


def _operands(*xs):
    """Convert operands to tensors of one promoted dtype, scalars weakly typed (none: [])."""
    if not xs:  # the caller says what an op of no operands means (stack, concat, einsum)
        return []
    tensors = [x for x in xs if isinstance(x, TensorMethods)]
    others = [x for x in xs if not isinstance(x, TensorMethods) and not is_scalar(x)]
    if others:
        # a list or tuple holding traced values is stacked, as NumPy (and eager graphad) read it:
        # Tensor() would ask the tracers for data they do not have yet
        xs = tuple(as_tensor(x) if isinstance(x, (list, tuple)) and _holds_tensor(x) else x for x in xs)
        tensors = [x for x in xs if isinstance(x, TensorMethods)]
        others = [x for x in xs if not isinstance(x, TensorMethods) and not is_scalar(x)]
    tensors += [Tensor(x) for x in others]
    # jit's traced Python numbers (prims.trace.WeakTracer) are weakly typed next to other tensors,
    # as literals are; among themselves (and literals) they compute on their exact values
    strong = [t for t in tensors if getattr(t, "weak_src", None) is None]
    weak = bool(strong) and len(strong) < len(tensors)
    if weak:
        tensors = strong
    elif tensors and not strong:  # weak numbers and literals alone: computed on their exact values
        return _weak_alone(xs)
    if tensors:
        d = tensors[0].dtype
        for t in tensors[1:]:
            d = dt.promote_types(d, t.dtype)
        for x in xs:
            if is_scalar(x):
                d = dt.promote_types(d, dt.weak_scalar_dtype(x, d))
            elif weak and getattr(x, "weak_src", None) is not None:
                d = dt.promote_types(d, dt.weak_scalar_dtype(_KIND_SAMPLE[x.weak_src.dtype.name], d))
    else:
        d = dt.scalar_dtype(xs[0])
        for x in xs[1:]:
            d = dt.promote_types(d, dt.scalar_dtype(x))
    out = []
    for x in xs:
        if weak and getattr(x, "weak_src", None) is not None:
            out.append(_weak_operand(x, d))
        elif isinstance(x, TensorMethods):
            out.append(x if x.dtype is d else _ew.astype.bind(x, dtype=d.name))
        elif is_scalar(x):
            _check_int_fits(x, d)  # here, so that the error names the op this operand is for
            out.append(constant(x, d))
        else:
            t = Tensor(x)
            out.append(t if t.dtype is d else Tensor(t, d))
    return out


def _holds_tensor(x) -> bool:
    """Whether a nested list or tuple holds a tensor or a traced value anywhere."""
    return builtins.any(isinstance(e, TensorMethods) or (isinstance(e, (list, tuple)) and _holds_tensor(e)) for e in x)


# a Python number of the kind a weak number's exact input holds, for dt.weak_scalar_dtype
_KIND_SAMPLE = {"float64": 0.0, "complex128": 0j, "int64": 0}


_EXACT_OF_KIND = {"i": "int64", "f": "float64", "c": "complex128"}


def _weak_alone(xs, least: str = "i"):
    """The operands of an op of weakly typed traced numbers and Python literals only, as their
    exact values in the widest dtype of the widest kind among them and `least` (int64, float64,
    complex128), so that `s * 2` or `s + t` computes as Python would on the numbers; the trace
    marks the op's result weak (prims.trace.bind). A bool literal takes the others' kind."""
    from ..trace import ExactWeak
    kinds = [least] + [x.weak_src.dtype.kind for x in xs if isinstance(x, TensorMethods)]
    for x in xs:
        if is_scalar(x) and not isinstance(x, (builtins.bool, np.bool_)):
            kinds.append("c" if isinstance(x, (builtins.complex, np.complexfloating)) else
                         "f" if isinstance(x, (builtins.float, np.floating)) else "i")
    d = dt.as_dtype(_EXACT_OF_KIND["c" if "c" in kinds else "f" if "f" in kinds else "i"])
    out = []
    for x in xs:
        if isinstance(x, TensorMethods):
            src = x.weak_src if x.weak_src.dtype is d else _ew.astype.bind(x.weak_src, dtype=d.name)
            out.append(ExactWeak(src.value, src._trace))
        else:
            _check_int_fits(x, d)
            out.append(constant(x, d))
    return out


def _weak_operand(x, d):
    """A weakly typed traced number `x` as an operand of dtype `d`: its exact input cast once to
    `d` (so a float64 operand gets the number itself, a float32 one the number rounded once, as
    a literal would be). A cast to an integer dtype narrower than int64 is recorded (with the
    user's line) for the call-time check that the number fits it, and so is a float's cast to any
    integer dtype (NaN, inf or out of range is refused, as eagerly)."""
    src = x.weak_src
    if src.dtype is d:
        return src
    if d.is_int and (src.dtype.is_float or d.np.itemsize < src.dtype.np.itemsize):
        from ..trace import current_trace
        tr = current_trace()
        x.narrowed.append((d, tr.loc() if tr is not None else None))
    return _ew.astype.bind(src, dtype=d.name)


def _cast_operand(x, d):
    """`x` as dtype `d` for an op that writes it into a tensor of that dtype (a Parameter's
    assignment): a jit's weakly typed number from its exact value, as `_operands` casts it, so
    that `p.set_data(h)` of a float64 Parameter stores 0.1 itself, not 0.1 rounded to float32."""
    d = dt.as_dtype(d)
    if getattr(x, "weak_src", None) is not None:
        return _weak_operand(x, d)
    return x if x.dtype is d else _ew.astype.bind(x, dtype=d.name)


def _float_operand(x):
    (x,) = _operands(x)
    if not x.dtype.is_inexact:
        x = _ew.astype.bind(x, dtype=dt.default_float.name)
    return x


# ------------------------------------------------------------------ elementwise

def add(x, y): return _ew.add.bind(*_operands(x, y))
def sub(x, y): return _ew.sub.bind(*_operands(x, y))
def mul(x, y): return _ew.mul.bind(*_operands(x, y))
def maximum(x, y): return _ew.maximum.bind(*_operands(x, y))
def minimum(x, y): return _ew.minimum.bind(*_operands(x, y))


def div(x, y):
    """True division; integer operands are promoted to float32 (as MindSpore's Div does)."""
    a, b = _operands(x, y)
    if not a.dtype.is_inexact:
        from ..trace import ExactWeak
        if type(a) is ExactWeak or type(b) is ExactWeak:
            # jit's weak ints (and literals) alone: Python's true division, a weak float (`n / m`
            # of two ints went through float32, and its result met a float64 tensor as float32)
            a, b = _weak_alone((x, y), "f")
        else:
            a, b = astype(a, dt.default_float), astype(b, dt.default_float)
    return _ew.div.bind(a, b)


def floor_divide(x, y):
    """Division rounded toward minus infinity (NumPy's //), for floats and integers."""
    a, b = _operands(x, y)
    _real_only(a, "floor_divide")
    if a.dtype.is_bool:  # (as % and -: it reached NumPy's own refusal of a bool negative eagerly)
        raise DTypeError("bool operands: floor division of bools is not defined; cast them to integers first")
    if a.dtype.is_float:
        return _float_floor_divide(a, b)
    q = _ew.div.bind(a, b)  # integer division truncates toward zero: step down when signs differ
    r = sub(a, mul(q, b))
    adjust = where(not_equal(r, 0), not_equal(less(r, 0), less(b, 0)), False)
    # x // 0 is 0, as NumPy's (and x % 0); it was the truncating division's INT_MIN stepped down
    return where(equal(b, 0), zeros_like(q), where(adjust, sub(q, 1), q))


_HALF = (dt.float16, dt.bfloat16)  # computed in float32 and rounded once where a step would round


def _float_floor_divide(a, b):
    """NumPy's float floor division (npy_divmod's quotient, and Python's float //): the exact
    quotient's floor, so that a // b * b + a % b is a. floor(a / b) rounds the quotient first:
    1.0 // 0.1 is 9 (1.0 = 9 * 0.1 + 0.09999999999999995), floor(1.0 / 0.1) 10. Zero quotients keep
    the sign of a / b; a zero divisor gives a / b (inf or NaN); an infinite a gives NaN. Its
    derivative is zero (a step function), also where b is 0: the operands' gradients stop here.
    Half types are computed in float32 and rounded once, as NumPy's float16 and ml_dtypes'
    bfloat16 floor division are (each step rounded to float16, 2896 // -3 was -967)."""
    d = a.dtype
    if d in _HALF:
        return astype(_float_floor_divide(astype(a, dt.float32), astype(b, dt.float32)), d)
    a, b = stop_gradient(a), stop_gradient(b)
    mod = fmod(a, b)
    q = div(sub(a, mod), b)  # exact up to one rounding: a - mod is a multiple of b
    q = where(logical_and(not_equal(mod, 0), not_equal(less(b, 0), less(mod, 0))), sub(q, 1), q)
    fl = floor(q)
    fl = where(greater(sub(q, fl), 0.5), add(fl, 1), fl)  # q a rounding below an integer
    ratio = div(a, b)
    # a zero quotient (|a| < |b| with the signs alike, or a = 0) is a signed zero, that of a / b (finite here)
    fl = where(equal(q, 0), mul(ratio, 0), fl)
    return where(equal(b, 0), ratio, fl)


def pow(x, y):
    return _ew.pow_.bind(*_operands(x, y))


power = pow
subtract = sub
multiply = mul
divide = true_divide = div


def neg(x): return _ew.neg.bind(*_operands(x))
negative = neg
def abs(x): return _ew.abs.bind(*_operands(x))
absolute = abs
def sign(x): return _ew.sign.bind(*_operands(x))
def square(x): return _ew.square.bind(*_operands(x))
def relu(x): return _ew.relu.bind(*_operands(x))
def exp(x): return _ew.exp.bind(_float_operand(x))
def log(x): return _ew.log.bind(_float_operand(x))
def log1p(x): return _ew.log1p.bind(_float_operand(x))
def expm1(x): return _ew.expm1.bind(_float_operand(x))
def sqrt(x): return _ew.sqrt.bind(_float_operand(x))
def rsqrt(x): return _ew.rsqrt.bind(_float_operand(x))
def reciprocal(x): return _ew.reciprocal.bind(_float_operand(x))
def sin(x): return _ew.sin.bind(_float_operand(x))
def cos(x): return _ew.cos.bind(_float_operand(x))
def tan(x): return _ew.tan.bind(_float_operand(x))
def tanh(x): return _ew.tanh.bind(_float_operand(x))
def sigmoid(x): return _ew.sigmoid.bind(_float_operand(x))
def erf(x): return _ew.erf.bind(_float_operand(x))
def logical_not(x): return _ew.logical_not.bind(astype(as_tensor(x), dt.bool_))


def signbit(x):
    """NumPy's signbit: True where x's sign bit is set (negative numbers, -0.0, a NaN with its
    sign set; integers: x < 0; bool: False); complex operands are refused as NumPy does."""
    return _ew.signbit.bind(as_tensor(x))


def equal(x, y): return _ew.equal.bind(*_operands(x, y))
def not_equal(x, y): return _ew.not_equal.bind(*_operands(x, y))
def less(x, y): return _ew.less.bind(*_operands(x, y))
def less_equal(x, y): return _ew.less_equal.bind(*_operands(x, y))
def greater(x, y): return _ew.greater.bind(*_operands(x, y))
def greater_equal(x, y): return _ew.greater_equal.bind(*_operands(x, y))


def where(condition, x, y):
    """Elementwise select: x where condition else y (condition cast to bool)."""
    c = as_tensor(condition)
    if not c.dtype.is_bool:
        c = not_equal(c, 0)
    a, b = _operands(x, y)
    return _ew.where.bind(c, a, b)


def astype(x, dtype):
    """Cast to `dtype` (no node when the dtype already matches)."""
    d = dt.as_dtype(dtype)
    x = as_tensor(x)
    return x if x.dtype is d else _ew.astype.bind(x, dtype=d.name)


cast = astype


# ------------------------------------------------------------------ complex numbers (docs/complex.md)

def _part_operand(x):
    """x as the operand of real / imag / conj / angle: a jit's Python number (weakly typed) at its
    exact value, so that its part is weak and exact too (the complex64 view rounded 0.1 + 0.7j's
    real part to float32), else as a tensor."""
    (a,) = _operands(x)
    return a


def _same_real(x):
    """real(x) and conj(x) of a real x: a jit's number stays itself (weak and exact), a tensor is
    copied."""
    from ..trace import WeakTracer
    return x if isinstance(x, WeakTracer) else copy(as_tensor(x))


def real(x):
    """The real part (NumPy's real): float32 of complex64, float64 of complex128; a real tensor is
    returned as it is."""
    a = _part_operand(x)
    return _ew.real.bind(a) if a.dtype.is_complex else _same_real(x)


def imag(x):
    """The imaginary part (NumPy's imag); zeros of x's dtype for a real tensor."""
    a = _part_operand(x)
    if a.dtype.is_complex:
        return _ew.imag.bind(a)
    x = as_tensor(x)  # (a jit's real number: zeros of its default-dtype view, exact in any dtype)
    return _cr.full.bind(shape=tuple(x.shape), value=0.0 if x.dtype.is_float else 0, dtype=x.dtype.name)


def conj(x):
    """The complex conjugate (NumPy's conj); a real tensor is returned as it is."""
    a = _part_operand(x)
    return _ew.conj.bind(a) if a.dtype.is_complex else _same_real(x)


conjugate = conj


def complex(real, imag):  # noqa: A001  (torch's and JAX's name; this module uses no builtin complex)
    """real + i imag from two real tensors (torch.complex, jax.lax.complex), broadcasting as NumPy.
    The parts are promoted together, integers and half precision to float32: float32 parts give
    complex64, float64 parts complex128. Each part is stored as it is (inf and -0.0 included)."""
    a, b = _operands(real, imag)
    if a.dtype.is_complex:
        raise DTypeError(f"complex: the parts must be real, got {a.dtype.name} {tuple(a.shape)} and "
                         f"{b.dtype.name} {tuple(b.shape)}")
    if a.dtype not in (dt.float32, dt.float64):
        a, b = astype(a, dt.float32), astype(b, dt.float32)
    return _ew.complex_.bind(a, b)


def angle(x, deg=False):
    """The argument of each element, atan2(imag, real) in (-pi, pi] (NumPy's angle; JAX's);
    a real x gives 0, or pi where x < 0 or x is -0.0. `deg=True` returns degrees."""
    x = _part_operand(x)
    if not x.dtype.is_inexact:
        x = astype(x, dt.default_float)
    r = arctan2(imag(x), real(x))
    return mul(r, 180.0 / np.pi) if deg else r


def stop_gradient(x):
    """Identity whose derivative is zero in every mode."""
    return _ew.stop_gradient.bind(as_tensor(x))


def copy(x):
    """A copy of x (an identity in graph mode)."""
    x = as_tensor(x)
    return Tensor(x) if isinstance(x, Tensor) else x


def clip(x, a_min=None, a_max=None, *, min=None, max=None):  # noqa: A002  (NumPy's keywords)
    """x limited to [a_min, a_max] as NumPy's clip: minimum(maximum(x, a_min), a_max), so a NaN in
    x or in a bound gives NaN, and a_min > a_max gives a_max. `min=`/`max=` (NumPy 2, MindSpore's
    clamp) are the same bounds; None leaves that side open. The derivative follows maximum and
    minimum: 1 inside, 0 outside, 1/2 each at a tie with a bound (as JAX)."""
    lo = a_min if min is None else min
    hi = a_max if max is None else max
    if (a_min is not None and min is not None) or (a_max is not None and max is not None):
        raise ShapeError("clip: give each bound once (a_min or min, a_max or max)")
    (x,) = _operands(x) if not isinstance(x, TensorMethods) else (x,)
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


clamp = clip

# ------------------------------------------------------------------ more elementwise math (issue 17)
#
# Float functions take integer operands as float32 (as exp does); ceil/round/trunc keep integer
# and bool operands as they are (NumPy: identity-typed); isnan/isinf/isfinite of integers are
# constant. MindSpore's spellings are aliases (asin, atan2, clamp, ...).

def _exact_or_float(x):
    """x as a tensor; None when it is an integer or bool tensor (rounding leaves it unchanged)."""
    (x,) = _operands(x)
    _real_only(x, "rounding")
    return x if x.dtype.is_float else None


def _real_only(x, what: str):
    """Refuse a complex x in a function of real numbers whose integer path would accept it."""
    if x.dtype.is_complex:
        raise DTypeError(f"{what}: {x.dtype.name} operand {tuple(x.shape)}: defined for real numbers (take "
                         f"ops.real / ops.imag first; docs/complex.md)")


def floor(x):
    """Largest integer <= x, elementwise (floor(-0.0) is -0.0); integers are returned unchanged
    (they were cast to float32: floor of int32 16777217 gave 16777216.0)."""
    f = _exact_or_float(x)
    return copy(x) if f is None else _ew.floor.bind(f)


def ceil(x):
    """Smallest integer >= x, elementwise (ceil(-0.5) is -0.0); integers are returned unchanged."""
    f = _exact_or_float(x)
    return copy(x) if f is None else _ew.ceil.bind(f)


def trunc(x):
    """x rounded toward zero (trunc(-0.5) is -0.0); integers are returned unchanged."""
    f = _exact_or_float(x)
    return copy(x) if f is None else _ew.trunc.bind(f)


fix = trunc


def _int_round(x, decimals: int):
    """Integer x rounded to a multiple of 10^-decimals, half to even (NumPy's round of ints)."""
    if decimals >= 0:
        return copy(x)
    f = 10 ** (-decimals)
    q = floor_divide(x, f)
    r = sub(x, mul(q, f))  # 0 <= r < f
    odd = not_equal(remainder(q, 2), 0)
    up = logical_or(greater(mul(r, 2), f), logical_and(equal(mul(r, 2), f), odd))
    return mul(where(up, add(q, 1), q), f)


def round(x, decimals=0):  # noqa: A001  (NumPy's name; this module uses no builtin round)
    """Round half to even to `decimals` decimal places, as NumPy's round/around: x * 10^d rounded,
    divided by 10^d (d < 0: x / 10^-d rounded, times 10^-d). round(-0.4) is -0.0."""
    decimals = int(decimals)
    (x,) = _operands(x)
    _real_only(x, "round")
    if not x.dtype.is_float:
        return _int_round(x, decimals) if x.dtype.is_int else copy(x)
    if decimals == 0:
        return _ew.round_.bind(x)
    # 10^|d| beyond float64's range is inf (Python's ** raised OverflowError): the result is then
    # NaN (inf / inf, 0 * inf), as NumPy's round gives
    f = 10.0 ** builtins.abs(decimals) if builtins.abs(decimals) <= 308 else float("inf")
    if decimals > 0:
        return div(_ew.round_.bind(mul(x, f)), f)
    return mul(_ew.round_.bind(div(x, f)), f)


around = round


def exp2(x):
    """2 ** x."""
    return _ew.exp2.bind(_float_operand(x))


def log2(x):
    """Base-2 logarithm."""
    return _ew.log2.bind(_float_operand(x))


def log10(x):
    """Base-10 logarithm."""
    return _ew.log10.bind(_float_operand(x))


def sinh(x):
    """Hyperbolic sine."""
    return _ew.sinh.bind(_float_operand(x))


def cosh(x):
    """Hyperbolic cosine."""
    return _ew.cosh.bind(_float_operand(x))


def arcsin(x):
    """Inverse sine, in [-pi/2, pi/2]; NaN outside [-1, 1]."""
    return _ew.arcsin.bind(_float_operand(x))


def arccos(x):
    """Inverse cosine, in [0, pi]; NaN outside [-1, 1]."""
    return _ew.arccos.bind(_float_operand(x))


def arctan(x):
    """Inverse tangent, in [-pi/2, pi/2]."""
    return _ew.arctan.bind(_float_operand(x))


def arcsinh(x):
    """Inverse hyperbolic sine."""
    return _ew.arcsinh.bind(_float_operand(x))


def arccosh(x):
    """Inverse hyperbolic cosine; NaN below 1."""
    return _ew.arccosh.bind(_float_operand(x))


def arctanh(x):
    """Inverse hyperbolic tangent; +-inf at +-1, NaN outside [-1, 1]."""
    return _ew.arctanh.bind(_float_operand(x))


def cbrt(x):
    """Real cube root (cbrt(-8) is -2)."""
    return _ew.cbrt.bind(_float_operand(x))


def erfc(x):
    """Complementary error function 1 - erf(x), accurate where erf(x) is near 1."""
    return _ew.erfc.bind(_float_operand(x))


def erfinv(x):
    """Inverse error function: erf(erfinv(x)) = x on [-1, 1] (+-inf at +-1, NaN outside)."""
    return _ew.erfinv.bind(_float_operand(x))


def lgamma(x):
    """log |Gamma(x)| (C99's lgamma: +inf at the poles 0, -1, -2, ... and at -inf)."""
    return _ew.lgamma.bind(_float_operand(x))


gammaln = lgamma


def polygamma(n, x):
    """The n-th derivative of digamma, psi^(n)(x) (scipy's and torch's argument order)."""
    if isinstance(n, TensorMethods) or not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise DTypeError(f"polygamma: the order n must be a Python int >= 0, got {n!r}")
    return _ew.polygamma.bind(_float_operand(x), n=int(n))


def digamma(x):
    """psi(x) = d/dx log Gamma(x) (scipy's values at the poles: -inf at +0, +inf at -0, NaN at
    negative integers)."""
    return polygamma(0, x)


psi = digamma


def _float_operands(x, y):
    a, b = _operands(x, y)
    if not a.dtype.is_inexact:  # (complex operands reach the primitive, which refuses them)
        a, b = astype(a, dt.default_float), astype(b, dt.default_float)
    return a, b


def arctan2(y, x):
    """Angle of the point (x, y), quadrant-aware, with C99's signed zeros and infinities."""
    return _ew.arctan2.bind(*_float_operands(y, x))


def hypot(x, y):
    """sqrt(x^2 + y^2) without intermediate overflow or underflow (hypot(inf, NaN) is inf)."""
    return _ew.hypot.bind(*_float_operands(x, y))


def logaddexp(x, y):
    """log(exp(x) + exp(y)) without overflow (NumPy's algorithm; logaddexp(-inf, -inf) is -inf)."""
    return _ew.logaddexp.bind(*_float_operands(x, y))


def fmod(x, y):
    """C's fmod: x - trunc(x / y) * y, the sign of x; integers too (x fmod 0 is 0, as NumPy)."""
    return _ew.fmod.bind(*_operands(x, y))


def remainder(x, y):
    """NumPy's remainder (Python's %): x - floor(x / y) * y, the sign of y; integers too."""
    return _ew.remainder.bind(*_operands(x, y))


mod = floor_mod = remainder

# MindSpore's (and C's) names of the inverse functions
asin, acos, atan, atan2 = arcsin, arccos, arctan, arctan2
asinh, acosh, atanh = arcsinh, arccosh, arctanh


def logical_and(x, y):
    """Elementwise and of the operands' truth values (bool result)."""
    a, b = astype(as_tensor(x), dt.bool_), astype(as_tensor(y), dt.bool_)
    return _ew.mul.bind(*_operands(a, b))


def logical_or(x, y):
    """Elementwise or of the operands' truth values (bool result)."""
    a, b = astype(as_tensor(x), dt.bool_), astype(as_tensor(y), dt.bool_)
    return _ew.add.bind(*_operands(a, b))


def logical_xor(x, y):
    """Elementwise exclusive or of the operands' truth values (bool result)."""
    a, b = astype(as_tensor(x), dt.bool_), astype(as_tensor(y), dt.bool_)
    return _ew.not_equal.bind(*_operands(a, b))


def bitwise_and(x, y):
    """Elementwise x & y of integers (bit by bit, two's complement) or bools (logical and); the
    `&` operator. Floats are refused (DTypeError)."""
    return _ew.bitwise_and.bind(*_operands(x, y))


def bitwise_or(x, y):
    """Elementwise x | y of integers (bit by bit) or bools (logical or); the `|` operator."""
    return _ew.bitwise_or.bind(*_operands(x, y))


def bitwise_xor(x, y):
    """Elementwise x ^ y of integers (bit by bit) or bools (logical exclusive or); the `^` operator."""
    return _ew.bitwise_xor.bind(*_operands(x, y))


def left_shift(x, n):
    """Elementwise x << n of integers (two's complement, wrapping); a count n outside [0, bits)
    gives 0, as NumPy and JAX define it; the `<<` operator. Floats and bools are refused
    (DTypeError)."""
    return _ew.left_shift.bind(*_operands(x, n))


def right_shift(x, n):
    """Elementwise x >> n of integers, arithmetic (the sign is kept: -8 >> 1 is -4); a count n
    outside [0, bits) gives -1 for negative x and 0 otherwise, as NumPy and JAX define it; the `>>`
    operator. Floats and bools are refused (DTypeError)."""
    return _ew.right_shift.bind(*_operands(x, n))


bitwise_left_shift = left_shift
bitwise_right_shift = right_shift


def bitwise_not(x):
    """Elementwise ~x: for integers -x - 1 (every bit flipped, two's complement; NumPy's invert),
    for bools logical not; the `~` operator. Floats are refused (DTypeError)."""
    (x,) = _operands(x)
    if x.dtype.is_bool:
        return _ew.logical_not.bind(x)
    if not x.dtype.is_int:
        raise DTypeError(f"{x.dtype.name} operand: bitwise_not takes integers or bools")
    return sub(neg(x), 1)


invert = bitwise_not


def isnan(x):
    """Whether each element is NaN (x != x; never for integers); a complex element is NaN when
    either part is (NumPy's isnan)."""
    (x,) = _operands(x)
    if x.dtype.is_complex:
        return logical_or(isnan(real(x)), isnan(imag(x)))
    if not x.dtype.is_float:
        return _cr_full(x.shape, False)
    return not_equal(x, x)


def isinf(x):
    """Whether each element is +inf or -inf (complex: either part, as NumPy)."""
    (x,) = _operands(x)
    if x.dtype.is_complex:
        return logical_or(isinf(real(x)), isinf(imag(x)))
    if not x.dtype.is_float:
        return _cr_full(x.shape, False)
    return equal(abs(x), np.inf)


def isfinite(x):
    """Whether each element is neither infinite nor NaN (|x| < inf is false for NaN; complex: both
    parts finite)."""
    (x,) = _operands(x)
    if x.dtype.is_complex:
        return logical_and(isfinite(real(x)), isfinite(imag(x)))
    if not x.dtype.is_float:
        return _cr_full(x.shape, True)
    return less(abs(x), np.inf)


def _finfo(np_dtype):
    """np.finfo, or ml_dtypes' for bfloat16 (NumPy does not know it)."""
    try:
        return np.finfo(np_dtype)
    except ValueError:
        import ml_dtypes
        return ml_dtypes.finfo(np_dtype)


def _cr_full(shape, value):
    return _cr.full.bind(shape=tuple(shape), value=bool(value), dtype="bool")


def nan_to_num(x, nan=0.0, posinf=None, neginf=None, *, copy=True):  # noqa: A002  (NumPy's keyword)
    """NaN -> `nan`, +inf -> `posinf`, -inf -> `neginf` (defaults: 0, the dtype's largest and
    most negative finite values), as NumPy; integers are returned unchanged. `copy` is accepted for
    NumPy's signature (tensors are immutable). A complex x has each part replaced (NumPy's)."""
    (x,) = _operands(x)
    if x.dtype.is_complex:
        return complex(nan_to_num(real(x), nan, posinf, neginf), nan_to_num(imag(x), nan, posinf, neginf))
    if not x.dtype.is_float:
        return globals()["copy"](x)
    big = float(_finfo(x.dtype.np).max)
    hi = big if posinf is None else posinf
    lo = -big if neginf is None else neginf
    r = where(equal(x, np.inf), constant(hi, x.dtype), x)
    r = where(equal(x, -np.inf), constant(lo, x.dtype), r)
    return where(not_equal(x, x), constant(nan, x.dtype), r)


# ------------------------------------------------------------------ activations
#
# Compositions whose every step is exact or correctly conditioned for large |x|: no 1 + erf(-big)
# or 1 + tanh(-big) (they cancel to 0), no exp of a large positive argument in an unused branch of
# a `where` (its derivative would be inf * 0 = NaN). At x = -inf, where x * (something -> 0) would
# be inf * 0, the limit (-0.0) is returned.

_INV_SQRT2 = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654


def _neg_inf_to_zero(x, y):
    return where(equal(x, -np.inf), constant(-0.0, x.dtype), y)


def gelu(x, approximate="none"):
    """Gaussian error linear unit: x * Phi(x) = x/2 * erfc(-x / sqrt 2) (exact, the default), or
    with approximate='tanh' (or True, JAX's spelling) x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))),
    computed as x * sigmoid(2 sqrt(2/pi)(x + 0.044715 x^3)) so that large negative x keep their tiny
    values."""
    mode = {"none": "none", "tanh": "tanh", True: "tanh", False: "none"}.get(approximate)
    if mode is None:
        raise ShapeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    x = _float_operand(x)
    if mode == "none":
        y = mul(mul(x, 0.5), erfc(mul(x, -_INV_SQRT2)))
    else:
        u = mul(add(x, mul(mul(square(x), x), 0.044715)), 2.0 * _SQRT_2_OVER_PI)
        y = mul(x, sigmoid(u))
    return _neg_inf_to_zero(x, y)


def silu(x):
    """x * sigmoid(x) (swish)."""
    x = _float_operand(x)
    return _neg_inf_to_zero(x, mul(x, sigmoid(x)))


swish = silu


def softplus(x, beta=1.0, threshold=None):
    """log(1 + e^(beta x)) / beta, as logaddexp(beta x, 0) / beta (exact for every x). With a
    `threshold` (torch's and MindSpore's argument, whose default there is 20) it is x where
    beta x > threshold, as they compute it."""
    x = _float_operand(x)
    bx = x if beta == 1 else mul(x, beta)
    y = logaddexp(bx, 0.0)
    if beta != 1:
        y = div(y, beta)
    if threshold is not None:
        y = where(greater(bx, threshold), x, y)
    return y


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), exact in both tails."""
    x = _float_operand(x)
    return neg(logaddexp(neg(x), 0.0))


logsigmoid = log_sigmoid


def elu(x, alpha=1.0):
    """x for x > 0, alpha (e^x - 1) otherwise (expm1: exact near 0)."""
    x = _float_operand(x)
    pos = greater(x, 0.0)
    # the unused branch sees 0, not a large x (expm1's derivative e^x would be inf there)
    return where(pos, x, mul(expm1(where(pos, zeros_like(x), x)), alpha))


def leaky_relu(x, negative_slope=0.01, *, alpha=None):
    """x for x > 0, negative_slope * x otherwise (MindSpore's keyword `alpha` is accepted too;
    note its default there is 0.2, JAX's and torch's is 0.01, used here)."""
    s = negative_slope if alpha is None else alpha
    (x,) = _operands(x)
    return where(greater(x, 0), x, mul(x, s))


# ------------------------------------------------------------------ reductions


def _reduce(prim, x, axis, keepdims):
    (x,) = _operands(x)
    axes = norm_axes(axis, x.ndim)
    if x.dtype.is_bool:
        # the shape rule runs here first, so that its error names the user's bool operand (the
        # primitive's names the int64 cast below)
        prim.shape_rule(TensorType(tuple(x.shape), dt.int64), axes=axes, keepdims=bool(keepdims))
        x = astype(x, dt.int64)
    return prim.bind(x, axes=axes, keepdims=bool(keepdims))


def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (int, tuple or None = all)."""
    return _reduce(_rd.reduce_sum, x, axis, keepdims)


def prod(x, axis=None, keepdims=False): return _reduce(_rd.reduce_prod, x, axis, keepdims)


def _bool_back(x, r):
    """r as bool where x was bool (max and min of bools are bools, as NumPy's; the reduction
    itself runs on integers)."""
    return astype(r, dt.bool_) if as_tensor(x).dtype.is_bool else r


def max(x, axis=None, keepdims=False):
    """Maximum over `axis` (int, tuple or None = all); NaN propagates; bools give a bool (any)."""
    return _bool_back(x, _reduce(_rd.reduce_max, x, axis, keepdims))


def min(x, axis=None, keepdims=False):
    """Minimum over `axis` (int, tuple or None = all); NaN propagates; bools give a bool (all)."""
    return _bool_back(x, _reduce(_rd.reduce_min, x, axis, keepdims))


def _empty_reduction(x, axes, keepdims, value):
    """The fill of `value` (x's dtype) shaped as a reduction of x over `axes`, where one of them
    has no elements (max and min refuse such a reduction: no identity); None otherwise."""
    if not builtins.any(x.shape[a] == 0 for a in axes):
        return None
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdims or i not in axes)
    return _cr.full.bind(shape=shape, value=value, dtype=x.dtype.name)


def _any_all(x, axis, keepdims, empty: bool, reduce):
    b = astype(as_tensor(x), dt.bool_)
    axes = norm_axes(axis, b.ndim)
    filled = _empty_reduction(b, axes, keepdims, empty)  # no elements: all is true, any false
    return reduce(b, axes, keepdims) if filled is None else filled


def any(x, axis=None, keepdims=False):
    """Whether any element over `axis` is true (nonzero; NaN counts), as NumPy's any (False over
    no elements)."""
    return _any_all(x, axis, keepdims, False, max)


def all(x, axis=None, keepdims=False):
    """Whether every element over `axis` is true (nonzero), as NumPy's all (True over no elements)."""
    return _any_all(x, axis, keepdims, True, min)


amax = max
amin = min


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean; integer input gives float32. float16 and bfloat16 are averaged in float32
    and rounded once (as NumPy's and JAX's mean): their sum may overflow where the mean does not
    (100 values of 1000 in float16 gave inf)."""
    x = _float_operand(x)
    if x.dtype in _HALF:
        return astype(mean(astype(x, dt.float32), axis, keepdims), x.dtype)
    axes = norm_axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return div(sum(x, axes, keepdims), float(n))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, computed stably: the max is a stop_gradient shift (as in
    JAX), replaced by 0 where it is not finite, so +inf anywhere gives +inf, all -inf gives -inf,
    NaN gives NaN and large finite values never overflow; an empty axis gives -inf (an empty sum
    is 0). The gradient is softmax(x) (NaN where x holds +inf or all -inf, as JAX's)."""
    x = _float_operand(x)
    axes = norm_axes(axis, x.ndim)
    filled = _empty_reduction(x, axes, keepdims, -np.inf)
    if filled is not None:
        return filled
    m = max(x, axes, True)
    # a non-finite max shifts by 0 instead (as JAX does): inf - inf would turn [inf, 1] into NaN
    m = stop_gradient(where(less(abs(m), np.inf), m, 0.0))
    r = add(log(sum(exp(sub(x, m)), axes, True)), m)
    if not keepdims:
        r = reshape(r, tuple(s for i, s in enumerate(x.shape) if i not in axes))
    return r


def _arg(prim, x, axis, keepdims):
    (x,) = _operands(x)
    if axis is None:
        nd = x.ndim
        r = prim.bind(reshape(x, (-1,)), axis=0, keepdims=False)
        return reshape(r, (1,) * nd) if keepdims else r
    return prim.bind(x, axis=norm_axis(axis, x.ndim), keepdims=bool(keepdims))


def argmax(x, axis=None, keepdims=False): return _arg(_rd.argmax, x, axis, keepdims)
def argmin(x, axis=None, keepdims=False): return _arg(_rd.argmin, x, axis, keepdims)

# ------------------------------------------------------------------ linear algebra


def matmul_prim(a, b): return _la.matmul.bind(a, b)


def matmul(a, b):
    """NumPy matmul: vectors are promoted to matrices and the added axis removed afterwards."""
    a, b = _operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must not be scalars, got shapes {a.shape} and {b.shape}")
    va, vb = a.ndim == 1, b.ndim == 1
    ka, kb = a.shape[-1], b.shape[0 if vb else -2]
    if (va or vb) and ka != kb:
        # said here, with the vector's own shape (it is reshaped to a matrix below); "matmul: "
        # where another op is written with it (dense), as the primitive's own error says it
        from ._errors import _ACTIVE
        inner = "matmul: " if getattr(_ACTIVE, "depth", 0) > 1 else ""
        raise ShapeError(f"{inner}contracting dimensions differ: {a.shape} @ {b.shape} ({ka} vs {kb})")
    if va:
        a = reshape(a, (1, a.shape[0]))
    if vb:
        b = reshape(b, (b.shape[0], 1))
    if a.dtype.is_bool:  # NumPy's: any of the ands, from a count of the true products
        r = not_equal(_la.matmul.bind(astype(a, dt.int64), astype(b, dt.int64)), 0)
    else:
        r = _la.matmul.bind(a, b)
    if va or vb:
        shape = r.shape[:-2] + (() if va else (r.shape[-2],)) + (() if vb else (r.shape[-1],))
        r = reshape(r, shape)
    return r


def dense(x, weight, bias=None):
    """x @ weight.T + bias (MindSpore ops.dense, torch F.linear)."""
    x, weight = _operands(x, weight)
    if weight.ndim != 2:
        raise ShapeError(f"dense: weight must be 2-D (out, in), got {weight.shape}")
    # a vector input is the mat-vec weight @ x: no transposed copy of the weight
    y = matmul(weight, x) if x.ndim == 1 else matmul(x, transpose(weight))
    return y if bias is None else add(y, bias)


linear = dense


def einsum_prim(spec, *xs): return _la.einsum.bind(*xs, spec=spec)


def einsum(spec: str, *operands):
    """Einstein summation as NumPy's: implicit output allowed, a letter repeated within one operand
    takes that operand's diagonal ('ii->i', 'ii' the trace); an ellipsis stands for the leading
    axes an operand's letters leave unnamed, broadcast together across operands (right-aligned)
    and put first in an implicit output; an axis of length 1 broadcasts against the other
    operands' length for its letter, as NumPy's."""
    if not isinstance(spec, str):  # (an AttributeError before; NumPy's sublist form included)
        raise ArgumentError(f"einsum: the subscripts must be a string such as 'ij,jk->ik', got "
                            f"{type(spec).__name__} (NumPy's (operand, sublist, ...) form is not supported)")
    xs = list(_operands(*operands))
    if not xs:
        raise ShapeError(f"einsum: {spec!r} names no operands")
    spec = spec.replace(" ", "")
    if spec.count("->") > 1:
        raise ShapeError(f"einsum: {spec!r} has more than one '->'")
    if "." in spec:
        given = spec
        spec = _einsum_ellipsis(spec, xs)
        try:
            return _einsum_letters(spec, xs)
        except ShapeError as e:  # (its letters are new ones: the user's spec beside them, a newops trial)
            from ...errors import retold  # (imported here: a name of this module is an op)
            again = retold(e, str(e).replace(repr(spec), f"{given!r} (its '...' spelled out: {spec!r})", 1))
            if again is None:
                raise
            again.__dict__.update(e.__dict__)  # (located already: the op wrapper adds no second line)
            raise again from None
    return _einsum_letters(spec, xs)


def _einsum_letters(spec: str, xs):
    """einsum of a spec of letters only (an implicit output made explicit here)."""
    if "->" not in spec:
        letters = spec.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        spec = spec + "->" + out
    lhs, out = spec.split("->")
    subs = lhs.split(",")
    if len(subs) == len(xs):  # (a count mismatch is the primitive's error to report)
        from .shape import diagonal
        for k, sub_ in enumerate(subs):
            while len(set(sub_)) != len(sub_) and len(sub_) == xs[k].ndim:
                c = next(ch for ch in sub_ if sub_.count(ch) > 1)
                p1 = sub_.index(c)
                p2 = sub_.index(c, p1 + 1)
                if xs[k].shape[p1] != xs[k].shape[p2]:
                    raise ShapeError(f"operand {k} has lengths {xs[k].shape[p1]} and "
                                     f"{xs[k].shape[p2]} for the repeated letter {c!r} of {spec!r}")
                xs[k] = diagonal(xs[k], 0, p1, p2)  # the other axes in order, the diagonal last
                sub_ = "".join(ch for i, ch in enumerate(sub_) if i not in (p1, p2)) + c
            subs[k] = sub_
        subs = _einsum_broadcast_ones(subs, xs)
        spec = ",".join(subs) + "->" + out
    return _la.einsum.bind(*xs, spec=spec)


def _einsum_ellipsis(spec: str, xs) -> str:
    """spec with each '...' spelled out in letters the spec does not use, made explicit: operand k
    with r_k letters and rank n_k has n_k - r_k ellipsis axes, the last n_k - r_k of the E
    (the largest such count) new letters, so they line up from the right as broadcasting does; an
    implicit output is those E letters, then the letters used once, sorted (NumPy's order)."""
    lhs, arrow, out = spec.partition("->")
    subs = lhs.split(",")
    for s in subs + ([out] if arrow else []):
        if s.replace("...", "", 1).count(".") or s.count("...") > 1:
            raise ShapeError(f"einsum: {spec!r} has a '.' that is not one ellipsis '...' per operand")
    if len(subs) != len(xs):
        raise ShapeError(f"einsum: {spec!r} names {len(subs)} operands, got {len(xs)}")
    counts = []
    for k, (s, x) in enumerate(zip(subs, xs)):
        named = len(s) - 3 if "..." in s else len(s)
        if "..." in s and x.ndim < named:
            raise ShapeError(f"einsum: operand {k} of {spec!r} has rank {x.ndim}, fewer axes than its "
                             f"{named} letters")
        counts.append(x.ndim - named if "..." in s else 0)
    e = builtins.max(counts)
    fresh = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec][:e]
    if len(fresh) < e:
        raise ShapeError(f"einsum: {spec!r} leaves too few unused letters for its {e} ellipsis axes")
    subs = [s.replace("...", "".join(fresh[e - n:])) for s, n in zip(subs, counts)]
    if arrow:
        if "..." not in out and e:
            raise ShapeError(f"einsum: the output of {spec!r} has no '...' for the operands' {e} ellipsis "
                             f"axes (NumPy refuses it too)")
        out = out.replace("...", "".join(fresh))
    else:
        letters = lhs.replace(".", "").replace(",", "")
        out = "".join(fresh) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return ",".join(subs) + "->" + out


def _einsum_broadcast_ones(subs, xs):
    """The operand subscripts with each length-1 axis whose letter is longer in another operand
    dropped (the axis reshaped away): NumPy broadcasts it (the size-1 ellipsis axes of
    '...ij,...jk' batches, 'i,i' of lengths 1 and 3); the einsum primitive needs one length per
    letter. (Diagonals are taken before: 'ii,i' of shapes (1, 1) and (3,) broadcasts too.)"""
    sizes: dict[str, set] = {}
    for s, x in zip(subs, xs):
        if len(s) == x.ndim:
            for c, n in zip(s, x.shape):
                sizes.setdefault(c, set()).add(n)
    wide = {c for c, ns in sizes.items() if len(ns) == 2 and 1 in ns}
    if not wide:
        return subs
    out = []
    for k, (s, x) in enumerate(zip(subs, xs)):
        if len(s) == x.ndim and builtins.any(c in wide and n == 1 for c, n in zip(s, x.shape)):
            keep = [i for i, (c, n) in enumerate(zip(s, x.shape)) if not (c in wide and n == 1)]
            xs[k] = reshape(x, tuple(x.shape[i] for i in keep))
            s = "".join(s[i] for i in keep)
        out.append(s)
    return out


def outer(a, b):
    """a.ravel()[:, None] * b.ravel()[None, :] (NumPy's outer; a Python number takes the other's dtype)."""
    a, b = _operands(a, b)
    return einsum("i,j->ij", reshape(a, (-1,)), reshape(b, (-1,)))


# ------------------------------------------------------------------ moments and scans (issue 17)


def var(x, axis=None, ddof=0, keepdims=False):
    """Variance, NumPy's: mean(|x - mean(x)|^2) over `axis` with n - ddof in the denominator
    (max(n - ddof, 0): inf or NaN when it is 0, as NumPy); integers give float32. float16 and
    bfloat16 are computed in float32 and rounded once, as `mean`."""
    x = _float_operand(x)
    if x.dtype in _HALF:
        return astype(var(astype(x, dt.float32), axis, ddof, keepdims), x.dtype)
    axes = norm_axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    d = sub(x, mean(x, axes, True))
    # |d|^2, real for complex x (NumPy's var of complex numbers is real)
    sq = add(square(real(d)), square(imag(d))) if d.dtype.is_complex else square(d)
    return div(sum(sq, axes, keepdims), float(n - ddof) if n > ddof else 0.0)


def std(x, axis=None, ddof=0, keepdims=False):
    """Standard deviation sqrt(var(x, axis, ddof)) (its gradient is NaN where the variance is 0,
    as JAX's)."""
    return sqrt(var(x, axis, ddof, keepdims))


def _scan_operand(x, axis, what):
    """(x, axis): flattened for axis=None (NumPy's cumsum), bool as int64, the axis normalised."""
    (x,) = _operands(x)
    if x.dtype.is_bool:
        x = astype(x, dt.int64)
    if axis is None:
        return reshape(x, (-1,)), 0
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ShapeError(f"{what}: axis must be an int or None, got {axis!r}")
    return x, norm_axis(int(axis), x.ndim)


def _scan(x, axis, combine):
    """Inclusive scan of an associative `combine` along `axis` by log-depth doubling
    (Hillis-Steele): y[i] = combine(y[i], y[i - k]) for k = 1, 2, 4, ... Only slices, concats and
    `combine`, so the derivatives are those of `combine` (no division: exact with zeros)."""
    n = x.shape[axis]
    nd = x.ndim
    k = 1
    while k < n:
        head = slice_prim(x, (0,) * nd, tuple(k if i == axis else s for i, s in enumerate(x.shape)), (1,) * nd)
        hi = slice_prim(x, tuple(k if i == axis else 0 for i in range(nd)), tuple(x.shape), (1,) * nd)
        lo = slice_prim(x, (0,) * nd, tuple(n - k if i == axis else s for i, s in enumerate(x.shape)), (1,) * nd)
        x = concat([head, combine(hi, lo)], axis)
        k *= 2
    return x


def cumsum(x, axis=None, dtype=None):
    """Inclusive cumulative sum along `axis` (None: of the flattened tensor), NumPy's; bool counts
    as int64, integers keep their dtype (as sum does), `dtype=bool` accumulates a logical or. The
    derivative is the reversed cumsum."""
    x, axis = _scan_operand(x, axis, "cumsum")
    if dtype is not None and dt.as_dtype(dtype).is_bool:
        # NumPy's bool accumulation is a logical or: whether any element so far is nonzero (the
        # bool primitive had no cumsum: refused with a message about the cast operand)
        return astype(cumsum(astype(astype(x, dt.bool_), dt.int64), axis), dt.bool_)
    if dtype is not None:
        x = astype(x, dtype)
    if x.shape[axis] == 0:
        return copy(x)
    return _rd.cumsum.bind(x, axis=axis)


def cumprod(x, axis=None, dtype=None):
    """Inclusive cumulative product along `axis` (None: flattened), by doubling: O(n log n)
    multiplications and no division, so the gradient is exact where x holds zeros; `dtype=bool`
    accumulates a logical and."""
    x, axis = _scan_operand(x, axis, "cumprod")
    if dtype is not None and dt.as_dtype(dtype).is_bool:  # (NumPy's: a logical and, as cumsum's or)
        return astype(cumprod(astype(astype(x, dt.bool_), dt.int64), axis), dt.bool_)
    if dtype is not None:
        x = astype(x, dtype)
    return _scan(x, axis, mul)


def cummax(x, axis=None):
    """Running maximum along `axis` (None: flattened), NumPy's np.maximum.accumulate (NaN
    propagates); the values only (MindSpore's cummax also returns indices: use argmax). The
    derivative follows maximum's (shared at ties)."""
    x0 = x
    x, axis = _scan_operand(x, axis, "cummax")
    return _bool_back(x0, _scan(x, axis, maximum))


def cummin(x, axis=None):
    """Running minimum along `axis` (None: flattened), np.minimum.accumulate."""
    x0 = x
    x, axis = _scan_operand(x, axis, "cummin")
    return _bool_back(x0, _scan(x, axis, minimum))


def logcumsumexp(x, axis=None):
    """log(cumsum(exp(x))) along `axis` (None: flattened), as a doubling scan of logaddexp (JAX's
    cumlogsumexp): no overflow for large x, -inf stays -inf, +inf gives +inf."""
    x, axis = _scan_operand(x, axis, "logcumsumexp")
    x = _float_operand(x)
    return _scan(x, axis, logaddexp)


# late imports: shape helpers used above live in ops.shape
from .shape import concat, reshape, slice_prim, stack, transpose  # noqa: E402
from .creation import zeros_like  # noqa: E402
