"""Elementwise primitives: unary math, broadcasting binary arithmetic, comparisons, where, casts.

Each unary primitive declares d(x, y) = dy/dx in one line; its jvp (t * d) and vjp (ct * d) are
built from it. Binary primitives broadcast like NumPy and take operands of equal dtype (graphad.ops
promotes first); their vjps sum cotangents back to each operand's shape.

Kernels follow NumPy and C99 Annex F (NaN, +-inf, -0.0). The special functions NumPy lacks
(erfc, erfinv, lgamma, polygamma) are computed in float64 here; erfinv and polygamma are written
once over a small math namespace (`_NP` for NumPy, a TIR one in graphad/lowering/relax_ops.py), so
the compiled kernel runs the same algorithm; tests/test_oracles.py holds both to mpmath.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError
from ..ir.core import TensorType
from ._util import (add_any, is_float_array, is_half_array, batch_broadcasting, bcast, broadcast_shapes, require_float,
                    round_from_f64, same_dtype, unbroadcast)
from .registry import Primitive, ops, register

# ---------------------------------------------------------------- unary


def _unary_shape(float_only: bool, complex_ok: bool = False):
    """Shape rule of a unary primitive: float operands (any real number with float_only=False),
    complex ones too where `complex_ok` (the holomorphic functions: docs/complex.md)."""
    def rule(x: TensorType):
        if x.dtype.is_complex:
            if not complex_ok:
                raise DTypeError(f"{x.dtype.name} operand: this function is defined for real numbers only "
                                 f"(docs/complex.md lists the complex ones)")
        elif float_only:
            require_float(x)
        elif x.dtype.is_bool:
            raise DTypeError("bool operand; cast it first")
        return TensorType(x.shape, x.dtype)
    return rule


def _unary_batch(prim_ref):
    def batch(args, dims, **attrs):
        return [prim_ref[0].bind(args[0], **attrs)], [dims[0]]
    return batch


def _unary(name: str, impl, deriv=None, *, float_only=True, formula: str = "", zero_deriv: bool = False,
           nondiff: str | None = None, shape_rule=None, complex_ok: bool = False):
    """Register a unary elementwise primitive with derivative `deriv(x, y) -> dy/dx`.

    With `complex_ok` the function is holomorphic and `deriv` its complex derivative f'(z): the
    jvp t * f'(z) and the vjp ct * f'(z) are then JAX's complex rules as they stand (JAX's
    cotangents are transposes without conjugation, docs/complex.md)."""
    ref: list = []
    jvp = vjp = None
    if deriv is not None:
        def jvp(primals, tangents, outs, **attrs):
            return [ops.mul(tangents[0], deriv(primals[0], outs[0]))]

        def vjp(cts, primals, outs, **attrs):
            return [ops.mul(cts[0], deriv(primals[0], outs[0]))]
    elif zero_deriv:
        def jvp(primals, tangents, outs, **attrs):
            return [None]

        def vjp(cts, primals, outs, **attrs):
            return [None]
    p = register(Primitive(name, shape_rule=shape_rule or _unary_shape(float_only, complex_ok), impl=impl, jvp=jvp, vjp=vjp,
                           batch=_unary_batch(ref), traits=("elementwise", "unary"), formula=formula,
                           nondiff=nondiff))
    ref.append(p)
    return p


def _erf(a):
    return round_from_f64(np.vectorize(math.erf, otypes=[np.float64])(a), a.dtype) if a.size else a.copy()


def _sigmoid(a):
    """1 / (1 + e^-x) with relative accuracy in both tails: e^x / (1 + e^x) for x < 0.

    (0.5 * (tanh(x / 2) + 1) cancels for negative x: sigmoid(-40) came out 0, not 4.2e-18.)
    Narrower floats are evaluated in float64 and rounded once. A complex z takes the same two
    forms by the sign of Re z (complex64 in complex128): e^-z never overflows, so a large |Re z|
    gives 1 or e^z, not inf / inf.
    """
    if a.dtype.kind == "c":
        z = a.astype(np.complex128)
        pos = ~(z.real < 0)  # Re z >= 0, and NaN: 1 / (1 + e^-z) propagates it
        with np.errstate(all="ignore"):
            e = np.exp(np.where(pos, -z, z))
            return np.where(pos, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype)
    x = a.astype(np.float64) if a.dtype.itemsize < 8 else a
    e = np.exp(-np.abs(x))
    return round_from_f64(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), a.dtype)


_SQRT_PI_2 = 2.0 / math.sqrt(math.pi)


def _wide_c64(fn):
    """A NumPy kernel whose complex64 operands are evaluated in complex128 and rounded once (NumPy's
    complex64 kernels lose bits: its complex64 exp2(800j) was 6e-4 off); other dtypes as NumPy."""
    def k(a):
        if a.dtype == np.complex64:
            return fn(a.astype(np.complex128)).astype(np.complex64)
        return fn(a)
    return k


def _half_in_f64(fn):
    """A NumPy kernel whose float16 and bfloat16 operands are evaluated in float64 and rounded once
    (`round_from_f64`): NumPy's float16 kernels and ml_dtypes' bfloat16 ones evaluate in float32
    and round that result again, which rounds the wrong way where the float32 value lands on a
    half-type tie (float16 exp(0.007298) gave 1.008 for 1.007); other dtypes as `fn`."""
    def k(a):
        if is_half_array(a):
            return round_from_f64(fn(a.astype(np.float64)), a.dtype)
        return fn(a)
    return k


neg = register(Primitive(
    "neg", shape_rule=_unary_shape(False, complex_ok=True), impl=np.negative, formula="y = -x; dy = -dx",
    jvp=lambda p, t, o: [ops.neg(t[0])], vjp=lambda c, p, o: [ops.neg(c[0])],
    batch=lambda a, d: ([ops.neg(a[0])], [d[0]]), traits=("elementwise", "unary", "linear")))

def _abs_shape(x: TensorType):
    if x.dtype.is_bool:
        raise DTypeError("bool operand; cast it first")
    return TensorType(x.shape, dt.real_dtype(x.dtype))  # |z| of a complex z is real


def _abs_complex_factor(x, y):
    """conj(z) / |z|, 0 at z = 0 (JAX's _abs_jvp_rule: |z| replaced by 1 where it is 0)."""
    safe = ops.where(ops.equal(y, 0.0), ops.ones_like(y), y)
    return ops.div(ops.conj(x), ops.astype(safe, x.dtype))


def _abs_jvp(p, t, o):
    if p[0].dtype.is_complex:  # d|z| = Re(conj(z) dz) / |z|
        return [ops.real(ops.mul(t[0], _abs_complex_factor(p[0], o[0])))]
    return [ops.mul(t[0], ops.sign(p[0]))]


def _abs_vjp(c, p, o):
    if p[0].dtype.is_complex:  # the transpose of Re(w dz) is ct -> ct w (JAX's convention)
        return [ops.mul(ops.astype(c[0], p[0].dtype), _abs_complex_factor(p[0], o[0]))]
    return [ops.mul(c[0], ops.sign(p[0]))]


abs_ = register(Primitive(
    "abs", shape_rule=_abs_shape, impl=np.abs, jvp=_abs_jvp, vjp=_abs_vjp,
    batch=lambda a, d: ([abs_.bind(a[0])], [d[0]]), traits=("elementwise", "unary"),
    formula="y = |x|; dy = sign(x) dx (complex: dy = Re(conj(z) dz) / |z|)"))
abs = abs_  # noqa: A001  (graphad.ops.abs binds elementwise.abs; no builtin abs is used in this module)
def _complex_sign128(z):
    """sign of a complex128 array: z / |z|, 0 at 0 (JAX's and NumPy's value), computed so that no
    part overflows or underflows on the way: the parts are divided by the larger magnitude before
    their hypot (NumPy 2's z / |z| gave 1j for 1.5e308 + 1.5e308j, 0.70720 for 1e-320 + 1e-320j).
    An infinite part counts as +-1 and a finite part beside it as +-0 (inf + inf j gives
    (1 + 1j) / sqrt 2, inf + 1j gives 1); a NaN part gives NaN + NaN j. The complex-split rule
    (passes/complex_split.py `csign`) is the same steps on the real pair."""
    x, y = z.real, z.imag
    with np.errstate(invalid="ignore", divide="ignore"):
        ix, iy = np.isinf(x), np.isinf(y)
        big = ix | iy
        x = np.where(big, np.where(ix, np.sign(x), 0.0 * x), x)
        y = np.where(big, np.where(iy, np.sign(y), 0.0 * y), y)
        m = np.maximum(np.abs(x), np.abs(y))
        m = np.where(m == 0, 1.0, m)
        xs, ys = x / m, y / m
        h = np.hypot(xs, ys)
        nz = h != 0  # (True at NaN)
        hs = np.where(nz, h, 1.0)
        out = np.empty(z.shape, np.complex128)
        out.real = np.where(nz, xs / hs, 0.0)
        out.imag = np.where(nz, ys / hs, 0.0)
    return out


def _sign(a):
    """NumPy's sign of a real array; of a complex one `_complex_sign128` (complex64 evaluated in
    complex128 and rounded once)."""
    if a.dtype.kind == "c":
        return _complex_sign128(a.astype(np.complex128)).astype(a.dtype)
    if is_half_array(a):  # (ml_dtypes' bfloat16 sign(-0.0) is -0.0, NumPy's float sign +0.0)
        return np.sign(a.astype(np.float32)).astype(a.dtype)
    return np.sign(a)


# complex_ok with a zero derivative: sign(z) = z / |z| is not holomorphic; JAX's lax.sign has a
# zero jvp for complex operands too
sign = _unary("sign", _sign, None, float_only=False, zero_deriv=True, complex_ok=True,
              formula="y = sign(x) (complex: z / |z|, 0 at 0); dy = 0")
exp = _unary("exp", _half_in_f64(np.exp), lambda x, y: y, formula="y = e^x; dy = y dx", complex_ok=True)
log = _unary("log", _half_in_f64(np.log), lambda x, y: ops.reciprocal(x), formula="y = log x; dy = dx / x",
             complex_ok=True)
log1p = _unary("log1p", _half_in_f64(_wide_c64(np.log1p)), lambda x, y: ops.reciprocal(ops.add(x, 1.0)),
               formula="dy = dx / (1 + x)", complex_ok=True)
expm1 = _unary("expm1", _half_in_f64(_wide_c64(np.expm1)), lambda x, y: ops.exp(x),
               formula="dy = e^x dx (not y + 1: it cancels for x << 0)", complex_ok=True)
sqrt = _unary("sqrt", np.sqrt, lambda x, y: ops.div(0.5, y), formula="dy = dx / (2 y)", complex_ok=True)
rsqrt = _unary("rsqrt", _half_in_f64(lambda a: 1.0 / np.sqrt(a)), lambda x, y: ops.mul(ops.div(y, x), -0.5),
               formula="y = x^-1/2; dy = -y / (2x) dx", complex_ok=True)  # complex: 1 / (principal sqrt), as JAX
square = _unary("square", np.square, lambda x, y: ops.mul(x, 2.0), float_only=False, formula="dy = 2x dx",
                complex_ok=True)
reciprocal = _unary("reciprocal", lambda a: (1.0 / a).astype(a.dtype, copy=False),
                    lambda x, y: ops.neg(ops.square(y)), formula="dy = -y^2 dx", complex_ok=True)
sin = _unary("sin", _half_in_f64(np.sin), lambda x, y: ops.cos(x), formula="dy = cos(x) dx", complex_ok=True)
cos = _unary("cos", _half_in_f64(np.cos), lambda x, y: ops.neg(ops.sin(x)), formula="dy = -sin(x) dx",
             complex_ok=True)
tan = _unary("tan", _half_in_f64(_wide_c64(np.tan)), lambda x, y: ops.add(ops.square(y), 1.0),
             formula="dy = (1 + y^2) dx", complex_ok=True)
# (1 - y)(1 + y), as JAX: 1 - y^2 cancels as |y| nears 1 (the formula's own relative error, given y:
# float32 up to 8.6e-5 against 9.4e-8, float16 7.9e-3 against 7.0e-4, bfloat16 2.2e-2 against 5.2e-3)
tanh = _unary("tanh", _half_in_f64(np.tanh), lambda x, y: _one_minus_sq(y), formula="dy = (1 - y)(1 + y) dx",
              complex_ok=True)
sigmoid = _unary("sigmoid", _sigmoid, lambda x, y: ops.mul(y, ops.sub(1.0, y)), formula="dy = y (1 - y) dx",
                 complex_ok=True)
# The mask reads the output: [y > 0] is [x > 0] for every x (NaN and -0.0 included), and a
# network's pre-activation is then dead after the forward pass, so the matmul, bias and relu fuse
# into one kernel instead of two that both write a full activation.
def _relu(a):
    """max(x, 0), NaN kept; half types through float32: NumPy's float16 maximum(-0.0, 0) is -0.0,
    its float32 and float64 ones (and compiled code) +0.0."""
    if is_half_array(a):
        return np.maximum(a.astype(np.float32), 0).astype(a.dtype)
    return np.maximum(a, 0).astype(a.dtype)


relu = _unary("relu", _relu,
              lambda x, y: ops.astype(ops.greater(y, 0.0), x.dtype), float_only=False,
              formula="y = max(x, 0); dy = [y > 0] dx (= [x > 0] dx)")
erf = _unary("erf", _erf, lambda x, y: ops.mul(ops.exp(ops.neg(ops.square(x))), _SQRT_PI_2),
             formula="dy = 2/sqrt(pi) e^(-x^2) dx")
floor = _unary("floor", np.floor, None, zero_deriv=True, formula="dy = 0")
logical_not = _unary("logical_not", np.logical_not, None, float_only=False, nondiff="boolean output",
                     formula="y = not x (bool); no derivative", shape_rule=lambda x: TensorType(x.shape, dt.bool_))


def _signbit_shape(x):
    if x.dtype.is_complex:
        raise DTypeError(f"signbit of {x.dtype.name}: complex numbers have no sign bit (NumPy refuses them too)")
    return TensorType(x.shape, dt.bool_)


# a primitive because no arithmetic or comparison observes a NaN's sign bit (copysign needs it:
# np.copysign(1.0, -nan) is -1.0) and -0.0's only through 1 / x
signbit = _unary("signbit", np.signbit, None, float_only=False, nondiff="boolean output",
                 formula="y = the sign bit of x (set for -0.0 and a NaN with its sign set; integers: x < 0); "
                         "no derivative", shape_rule=_signbit_shape)

# ---------------------------------------------------------------- more unary math (issue 17)
#
# Kernels follow NumPy (C99 Annex F special values: NaN, +-inf, -0.0). Where NumPy has no kernel
# (erfc, erfinv, lgamma, polygamma) the reference is written here; erfinv and polygamma are
# written once over a tiny math namespace (`_NP` here, a TIR one in lowering/relax_ops.py), so the
# compiled kernel runs the same algorithm (tests/test_oracles.py checks both against mpmath).

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_SQRT_PI_HALF = math.sqrt(math.pi) / 2.0


def _native(fn):
    """A NumPy (libm) kernel: float64 and complex128 as they are; narrower floats computed in
    float64 and rounded once (NumPy's own float32 kernels are up to 2.4 ulp off, e.g. exp2 near its
    overflow), complex64 in complex128."""
    def k(a):
        if a.dtype == np.float64 or a.dtype == np.complex128:
            return fn(a)
        if a.dtype.kind == "c":
            return fn(a.astype(np.complex128)).astype(a.dtype)
        return round_from_f64(fn(a.astype(np.float64)), a.dtype)
    return k


def _in_f64(fn):
    """A float64 kernel `fn` applied to any float dtype (computed in float64, rounded once)."""
    def k(a):
        with np.errstate(all="ignore"):
            return round_from_f64(fn(a.astype(np.float64)), a.dtype)
    return k


def _scalar_map(fn):
    """Elementwise application of a Python float function (math.erfc, ...) in float64."""
    def k(a):
        if not a.size:
            return a.astype(np.float64)
        return np.vectorize(fn, otypes=[np.float64])(a)
    return k


class _NP:
    """The math namespace of the shared algorithms, on NumPy float64 arrays."""
    select = staticmethod(np.where)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    exp = staticmethod(np.exp)
    sqrt = staticmethod(np.sqrt)
    tan = staticmethod(np.tan)
    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    nearbyint = staticmethod(np.rint)
    abs = staticmethod(np.abs)
    isnan = staticmethod(np.isnan)
    logical_and = staticmethod(np.logical_and)
    logical_or = staticmethod(np.logical_or)
    erf = staticmethod(_scalar_map(math.erf))
    erfc = staticmethod(_scalar_map(math.erfc))

    @staticmethod
    def const(v):
        return np.float64(v)

    @staticmethod
    def bind(v):
        """Name a value used several times (TIR: a let binding, else the expression tree repeats)."""
        return v

    @staticmethod
    def wrap(r):
        """The result inside every binding made by `bind`."""
        return r


@functools.cache
def _libm_lgamma():
    """C's lgamma from the process's libm (glibc's is within 3 ulp; Python's math.lgamma, its own
    Lanczos sum, was 15 ulp off at 1.5), or None where it cannot be loaded. Looked up on first use:
    ctypes.util.find_library runs `ldconfig -p`, which every `import graphad` paid for."""
    import ctypes
    try:
        lib = ctypes.CDLL("libm.so.6")  # glibc's soname: no search needed where it exists
    except OSError:
        import ctypes.util
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("m"))
        except (OSError, TypeError):
            return None
    try:
        f = lib.lgamma
    except AttributeError:
        return None
    f.restype, f.argtypes = ctypes.c_double, [ctypes.c_double]
    return f


def _lgamma_scalar(v: float) -> float:
    # C99: lgamma(+-0) = lgamma(-inf) = +inf and +inf at the poles (math.lgamma raises there)
    if math.isnan(v):
        return v
    if math.isinf(v) or (v <= 0 and v == math.floor(v)):
        return math.inf
    c_lgamma = _libm_lgamma()
    if c_lgamma is not None:
        return c_lgamma(v)
    try:
        return math.lgamma(v)
    except OverflowError:  # |x| beyond ~2.55e305: the result exceeds the largest float64
        return math.inf


# Giles (2010), "Approximating the erfinv function" (GPU Computing Gems), single precision: a
# relative error below 4e-7, the start of the Newton steps below
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ERFINV_NEWTON_STEPS = 3


def erfinv_algorithm(m, x):
    """erfinv of float64 `x` in math namespace `m`: Giles' approximation (an asymptotic start in the far tail) refined by three Newton
    steps on erf(y) = |x| (for |x| > 0.5 on log erfc(y) = log(1 - |x|), which keeps the tail's
    relative accuracy); +-1 -> +-inf, |x| > 1 and NaN -> NaN, +-0 -> +-0."""
    one = m.const(1.0)
    a = m.bind(m.abs(x))
    w = m.bind(-m.log((one - a) * (one + a)))
    wc = w - 2.5
    pc = m.const(_ERFINV_CENTRAL[0])
    for c in _ERFINV_CENTRAL[1:]:
        pc = pc * wc + c
    wt = m.sqrt(w) - 3.0
    pt = m.const(_ERFINV_TAIL[0])
    for c in _ERFINV_TAIL[1:]:
        pt = pt * wt + c
    tail = a > 0.5
    log_rest = m.bind(m.log(one - a))
    # beyond Giles' float32 range (w > 16, 1 - |x| < 1e-7) his polynomial is extrapolated and off
    # by up to 0.4; there erfc(y) ~ e^(-y^2) / (y sqrt(pi)) gives y^2 ~ t - log(pi t) / 2, t = -log(1 - |x|)
    far = m.bind(m.sqrt(-log_rest - m.log(-log_rest * math.pi) * 0.5))
    y = m.bind(m.select(w < 5.0, pc * a, m.select(w < 16.0, pt * a, far)))
    for _ in range(_ERFINV_NEWTON_STEPS):
        e = m.bind(m.exp(-(y * y)) * _TWO_OVER_SQRT_PI)  # erf'(y)
        # |x| <= 0.5: Newton on erf(y) = |x|; beyond, on log erfc(y) = log(1 - |x|) (1 - |x| is exact
        # there), nearly linear in the tail, where Giles' start is off by up to 0.4 at |x| -> 1
        c = m.bind(m.erfc(y))
        step_tail = (m.log(c) - log_rest) * c / (-e)
        step_centre = (m.erf(y) - a) / e
        y = m.bind(y - m.select(tail, step_tail, step_centre))
    y = m.select(a == 1.0, m.const(math.inf), y)
    y = m.bind(m.select(m.logical_or(a > 1.0, m.isnan(a)), m.const(math.nan), y))
    return m.wrap(m.select(x == 0.0, x, m.select(x < 0.0, -y, y)))


# polygamma: the root of digamma on the positive axis, x0 = X0_HI + X0_LO, and the Taylor
# coefficients psi^(k)(x0) / k! of digamma there, k = 1..48 (mpmath, 300 bits). On [1, 2] the
# series (|x - x0| <= 0.54, terms shrink like 0.37^k) keeps digamma's relative accuracy, where
# the recurrence cancels (psi(x0) = 0); (0, 1) and [2, 10) reach [1, 2] by exact steps.
_PSI_ROOT_HI = 1.4616321449683622
_PSI_ROOT_LO = 9.549995429965697e-17
_PSI_ROOT_TAYLOR = (
    0.9676722454476212, -0.4427631689835921, 0.258499760955651, -0.16394270544240652, 0.10782405069126237,
    -0.07219956125645471, 0.04880428816414311, -0.03316112647484736, 0.022597648232218104, -0.01542476590494896,
    0.010538791616612175, -0.007204534386356869, 0.004926781395729853, -0.003369801655439328,
    0.002305126326734928, -0.0015769367714301972, 0.0010788252019162967, -0.0007380709389960052,
    0.000504953265834602, -0.0003454680251063077, 0.00023635601564027053, -0.00016170622091974803,
    0.0001106337276874741, -7.569179582195066e-05, 5.178575795222081e-05, -3.5430070947659604e-05,
    2.424006611860132e-05, -1.6584242271854135e-05, 1.134638458466385e-05, -7.762817668462094e-06,
    5.3110609208898636e-06, -3.6336507898010456e-06, 2.486022733129538e-06, -1.7008538854332607e-06,
    1.1636675363548843e-06, -7.96142543124197e-07, 5.446941930669446e-07, -3.7266161283438227e-07,
    2.549626552021554e-07, -1.7443695117727745e-07, 1.1934394829830244e-07, -8.165115189488409e-08,
    5.586299683532171e-08, -3.821960061917494e-08, 2.6148576951961865e-08, -1.788998486491149e-08,
    1.2239731403233662e-08, -8.37401629767179e-09,)
# B_2, B_4, ..., B_22 (Bernoulli numbers) for the asymptotic series
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798,
              -174611 / 330, 854513 / 138)


def _cot_derivative_poly(n: int) -> list[float]:
    """Coefficients (lowest first) of P_n with d^n/dx^n cot(pi x) = pi^n P_n(cot(pi x))."""
    p = [0.0, 1.0]  # P_0(c) = c;  P_{k+1} = -(1 + c^2) P_k'
    for _ in range(n):
        d = [i * p[i] for i in range(1, len(p))] or [0.0]
        q = [0.0] * (len(d) + 2)
        for i, v in enumerate(d):
            q[i] -= v
            q[i + 2] -= v
        p = q
    return p


def _horner(m, coefs_high_first, t):
    r = m.const(coefs_high_first[0])
    for c in coefs_high_first[1:]:
        r = r * t + c
    return r


def polygamma_algorithm(m, x, n: int):
    """psi^(n)(x) (n >= 0; n = 0 is digamma) of float64 `x` in math namespace `m`.

    x > 0: the recurrence psi^(n)(x) = psi^(n)(x + k) - (-1)^n n! sum 1/(x + j)^(n+1) up to
    z >= 10 + 2n, then the asymptotic series (Bernoulli numbers up to B_22); digamma near its
    positive root by its Taylor series. x < 0: the reflection psi^(n)(x) = (-1)^n psi^(n)(1 - x)
    - pi^(n+1) P_n(cot(pi x)), cot taken of x - round(x) (exact) so that large |x| keep their
    accuracy. At the poles (x = 0, -1, ...): the limit where both sides agree (+inf for odd n),
    -inf/+inf at +0/-0 for even n, NaN elsewhere; psi^(n)(+inf) = +inf (n = 0) or a zero of
    psi^(n)'s sign, psi^(n)(-inf) = NaN."""
    one = m.const(1.0)
    x0 = float(10 + 2 * n)
    steps_max = int(x0)
    sign_n = -1.0 if n % 2 else 1.0  # (-1)^n
    fact = float(math.factorial(n))

    def positive(xp):  # psi^(n)(xp) for xp > 0
        steps = m.bind(m.select(xp < x0, m.ceil(x0 - xp), m.const(0.0)))
        s = None
        if n > 0:  # (digamma takes the exact downward steps below instead)
            for j in range(steps_max):
                inv = m.bind(one / (xp + float(j)))
                term = inv
                for _ in range(n):
                    term = term * inv
                term = m.select(steps > float(j), term, m.const(0.0))
                s = term if s is None else s + term
            s = m.bind(s)
        z = m.bind(xp + steps)
        iz = m.bind(one / z)
        t = m.bind(iz * iz)
        if n == 0:
            series = _horner(m, [b / (2 * k) for k, b in reversed(list(enumerate(_BERNOULLI, 1)))], t) * t
            asym = m.log(z) - iz * 0.5 - series
        else:
            izn = iz
            for _ in range(n - 1):
                izn = izn * iz
            coefs = [b * math.factorial(2 * k + n - 1) / math.factorial(2 * k)
                     for k, b in enumerate(_BERNOULLI, 1)]
            series = _horner(m, list(reversed(coefs)), t) * t
            head = float(math.factorial(n - 1)) + iz * (fact * 0.5)
            asym = (head + series) * izn * (1.0 if n % 2 else -1.0)  # (-1)^(n+1)
        r = asym if n == 0 else asym - s * (sign_n * fact)
        if n == 0:  # digamma on (0, x0) from the series on [1, 2]
            def series(u):
                d = m.bind((u - _PSI_ROOT_HI) - _PSI_ROOT_LO)
                return _horner(m, list(reversed(_PSI_ROOT_TAYLOR)), d) * d
            below = series(xp + 1.0) - one / xp  # 0 < x < 1: psi(x) = psi(x + 1) - 1/x
            # 1 <= x < x0: psi(x) = psi(x - k) + sum_{j=1..k} 1/(x - j), k = floor(x) - 1: x - j is
            # exact and every term positive (no cancellation beyond psi(x - k) in [-0.58, 0.43))
            k = m.bind(m.floor(xp) - 1.0)
            up = None
            for j in range(1, steps_max):
                term = m.select(k >= float(j), one / (xp - float(j)), m.const(0.0))
                up = term if up is None else up + term
            val = series(xp - m.select(xp < 2.0, m.const(0.0), k)) + up
            r = m.select(xp < x0, m.select(xp < 1.0, below, val), r)
        return r

    neg = x < 0.0
    xp = m.bind(m.select(neg, one - x, x))
    core = m.bind(positive(m.bind(m.select(xp > 0.0, xp, one))))  # (x = 0 is a pole, handled below)
    # cot(pi x) from r = x - round(x) in [-1/2, 1/2] (exact): 1 / tan(pi r) near 0, and
    # +-tan(pi (1/2 - |r|)) near +-1/2, where tan(fl(pi r)) would give ~1e-16 for cot = 0
    r_frac = m.bind(x - m.nearbyint(x))
    ar = m.bind(m.abs(r_frac))
    t_half = m.tan((0.5 - ar) * math.pi)
    c = m.bind(m.select(ar > 0.25, m.select(r_frac < 0.0, -t_half, t_half), one / m.tan(r_frac * math.pi)))
    pn = _cot_derivative_poly(n)
    poly = _horner(m, list(reversed(pn)), c)
    reflected = core * sign_n - poly * (math.pi ** (n + 1))
    r = m.select(neg, reflected, core)
    inf, nan = m.const(math.inf), m.const(math.nan)
    # poles: x a non-positive integer
    pole = m.logical_and(x <= 0.0, m.floor(x) == x)
    if n % 2:
        at_pole = inf
    else:
        zero_side = m.select(one / x < 0.0, inf, -inf)  # -0.0 is approached from below
        at_pole = m.select(x == 0.0, zero_side, nan)
    r = m.select(pole, at_pole, r)
    at_inf = inf if n == 0 else m.const(0.0 if n % 2 else -0.0)
    r = m.select(x == math.inf, at_inf, r)
    return m.wrap(m.select(m.logical_or(x == -math.inf, m.isnan(x)), nan, r))


def _round_kernel(a):
    return np.rint(a)  # half to even, as NumPy's round with decimals=0


ceil = _unary("ceil", np.ceil, None, zero_deriv=True, formula="y = ceil(x); dy = 0")
round_ = _unary("round", _round_kernel, None, zero_deriv=True, formula="y = round half to even(x); dy = 0")
trunc = _unary("trunc", np.trunc, None, zero_deriv=True, formula="y = trunc(x); dy = 0")
exp2 = _unary("exp2", _native(np.exp2), lambda x, y: ops.mul(y, _LN2), formula="y = 2^x; dy = y log(2) dx",
              complex_ok=True)
log2 = _unary("log2", _native(np.log2), lambda x, y: ops.reciprocal(ops.mul(x, _LN2)),
              formula="y = log2 x; dy = dx / (x log 2)", complex_ok=True)
log10 = _unary("log10", _native(np.log10), lambda x, y: ops.reciprocal(ops.mul(x, _LN10)),
               formula="y = log10 x; dy = dx / (x log 10)", complex_ok=True)
sinh = _unary("sinh", _native(np.sinh), lambda x, y: ops.cosh(x), formula="dy = cosh(x) dx", complex_ok=True)
cosh = _unary("cosh", _native(np.cosh), lambda x, y: ops.sinh(x), formula="dy = sinh(x) dx", complex_ok=True)


def _one_minus_sq(x):
    return ops.mul(ops.sub(1.0, x), ops.add(1.0, x))  # (1 - x)(1 + x): no cancellation near |x| = 1


def _one_minus_sq_exact_slope(x):
    """1 - x^2 in the derivatives of arcsin, arccos and arctanh: (1 - x)(1 + x) where |x| >= 1/2
    (no cancellation near |x| = 1), 1 - x x below, whose own derivative, -2x, is exact. That of
    (1 - x)(1 + x), -(1 + x) + (1 - x), cancels as x nears 0: the second derivative of arcsin at
    1e-20 came out 0 (it is 1e-20), of arccos at 1e-9 with a relative error of 2.7e-8."""
    if x.dtype.is_complex:
        return _one_minus_sq(x)
    return ops.where(ops.less(ops.abs(x), 0.5), ops.sub(1.0, ops.mul(x, x)), _one_minus_sq(x))


def _inv_sqrt(v):
    """1 / sqrt(v): rsqrt for a real v, the principal square root's reciprocal for a complex one
    (what rsqrt computes for it too; the chain rule through sqrt gives these functions' complex
    derivatives as their tests expect them)."""
    return ops.reciprocal(ops.sqrt(v)) if v.dtype.is_complex else ops.rsqrt(v)


def _arccosh_deriv(x, y):
    if x.dtype.is_complex:
        # 1 / (sqrt(z - 1) sqrt(z + 1)): its cut is arccosh's, (-inf, 1]; 1 / sqrt(z^2 - 1) has
        # the opposite sign where Re z < 0 (there sqrt(z^2 - 1) = -sqrt(z - 1) sqrt(z + 1))
        return ops.reciprocal(ops.mul(ops.sqrt(ops.sub(x, 1.0)), ops.sqrt(ops.add(x, 1.0))))
    return ops.rsqrt(ops.mul(ops.sub(x, 1.0), ops.add(x, 1.0)))


arcsin = _unary("arcsin", _native(np.arcsin), lambda x, y: _inv_sqrt(_one_minus_sq_exact_slope(x)),
                formula="dy = dx / sqrt(1 - x^2)", complex_ok=True)
arccos = _unary("arccos", _native(np.arccos), lambda x, y: ops.neg(_inv_sqrt(_one_minus_sq_exact_slope(x))),
                formula="dy = -dx / sqrt(1 - x^2)", complex_ok=True)
arctan = _unary("arctan", _native(np.arctan), lambda x, y: ops.reciprocal(ops.add(ops.square(x), 1.0)),
                formula="dy = dx / (1 + x^2)", complex_ok=True)
arcsinh = _unary("arcsinh", _native(np.arcsinh), lambda x, y: _inv_sqrt(ops.add(ops.square(x), 1.0)),
                 formula="dy = dx / sqrt(x^2 + 1)", complex_ok=True)
arccosh = _unary("arccosh", _native(np.arccosh), _arccosh_deriv,
                 formula="dy = dx / sqrt((x - 1)(x + 1)) (complex: dx / (sqrt(z - 1) sqrt(z + 1)))",
                 complex_ok=True)
arctanh = _unary("arctanh", _native(np.arctanh), lambda x, y: ops.reciprocal(_one_minus_sq_exact_slope(x)),
                 formula="dy = dx / ((1 - x)(1 + x))", complex_ok=True)
cbrt = _unary("cbrt", _native(np.cbrt), lambda x, y: ops.reciprocal(ops.mul(ops.square(y), 3.0)),
              formula="y = x^(1/3); dy = dx / (3 y^2)")
erfc = _unary("erfc", _in_f64(_scalar_map(math.erfc)),
              lambda x, y: ops.mul(ops.exp(ops.neg(ops.square(x))), -_SQRT_PI_2),
              formula="y = 1 - erf(x); dy = -2/sqrt(pi) e^(-x^2) dx")
erfinv = _unary("erfinv", _in_f64(lambda a: erfinv_algorithm(_NP, a)),
                lambda x, y: ops.mul(ops.exp(ops.square(y)), _SQRT_PI_HALF),
                formula="erf(y) = x; dy = sqrt(pi)/2 e^(y^2) dx")
lgamma = _unary("lgamma", _in_f64(_scalar_map(_lgamma_scalar)), lambda x, y: ops.digamma(x),
                formula="y = log|Gamma(x)|; dy = digamma(x) dx")


def _polygamma_shape(x: TensorType, n):
    require_float(x)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        from ..errors import ShapeError
        raise ShapeError(f"polygamma: the order n must be an int >= 0, got {n!r}")
    return TensorType(x.shape, x.dtype)


def _polygamma_impl(a, n):
    return _in_f64(lambda v: polygamma_algorithm(_NP, v, int(n)))(a)


def _polygamma_jvp(primals, tangents, outs, n):
    return [ops.mul(tangents[0], polygamma.bind(primals[0], n=int(n) + 1))]


def _polygamma_vjp(cts, primals, outs, n):
    return [ops.mul(cts[0], polygamma.bind(primals[0], n=int(n) + 1))]


polygamma = register(Primitive(
    "polygamma", shape_rule=_polygamma_shape, impl=_polygamma_impl, jvp=_polygamma_jvp, vjp=_polygamma_vjp,
    batch=lambda a, d, n: ([polygamma.bind(a[0], n=n)], [d[0]]), traits=("elementwise", "unary"),
    formula="y = psi^(n)(x) (n = 0: digamma); dy = psi^(n+1)(x) dx"))


# ---------------------------------------------------------------- binary


def _binary_shape(x: TensorType, y: TensorType):
    d = same_dtype(x, y)
    return TensorType(broadcast_shapes(x.shape, y.shape), d)


def _binary_batch(ref):
    def batch(args, dims, **attrs):
        a, b = batch_broadcasting(args, dims)
        return [ref[0].bind(a, b, **attrs)], [0]
    return batch


def _numeric_binary_shape(x: TensorType, y: TensorType):
    if x.dtype.is_bool:
        raise DTypeError("bool operands; cast them first")
    if x.dtype.is_complex:
        raise DTypeError(f"{x.dtype.name} operands: fmod and remainder are defined for real numbers")
    return _binary_shape(x, y)


def _real_binary_shape(x: TensorType, y: TensorType):
    """Operands of an ordered operation (max, min, fmod, <): complex numbers have no order."""
    if x.dtype.is_complex or y.dtype.is_complex:
        raise DTypeError(f"{x.dtype.name} operands: complex numbers are not ordered (compare ops.real or "
                         f"ops.abs of them)")
    return _binary_shape(x, y)


def _binary(name, impl, jvp, vjp, traits=(), formula="", shape_rule=_binary_shape):
    ref: list = []
    p = register(Primitive(name, shape_rule=shape_rule, impl=impl, jvp=jvp, vjp=vjp, batch=_binary_batch(ref),
                           traits=("elementwise", "binary") + tuple(traits), formula=formula))
    ref.append(p)
    return p


def _out_tangent(t, shape):
    return None if t is None else bcast(t, shape)


def _add_jvp(p, t, o):
    s = o[0].shape
    return [add_any(_out_tangent(t[0], s), _out_tangent(t[1], s))]


def _sub_jvp(p, t, o):
    s = o[0].shape
    a = _out_tangent(t[0], s)
    b = _out_tangent(t[1], s)
    if b is None:
        return [a]
    return [ops.neg(b) if a is None else ops.sub(a, b)]


def _mul_jvp(p, t, o):
    s = o[0].shape
    a = None if t[0] is None else bcast(ops.mul(t[0], p[1]), s)
    b = None if t[1] is None else bcast(ops.mul(p[0], t[1]), s)
    return [add_any(a, b)]


def _div_jvp(p, t, o):
    s = o[0].shape
    a = None if t[0] is None else bcast(ops.div(t[0], p[1]), s)
    b = None if t[1] is None else ops.neg(ops.div(ops.mul(o[0], t[1]), p[1]))
    return [add_any(a, b)]


def _pow_partials(x, y, out):
    # d/dx x^y = y x^(y-1), with 0 * 0^-1 taken as 0 only at x == y == 0 (guarding on y == 0 alone
    # would cut the y-dependence of this partial: d/dy d/dx x^y at y = 0 is 1/x, not 0, which the
    # other order already gave; JAX issue 12033); d/dy x^y = x^y log x (0 where x == 0)
    both_zero = ops.equal(ops.where(ops.equal(y, 0.0), x, ops.ones_like(x)), 0.0)
    dx = ops.where(both_zero, ops.zeros_like(out), ops.mul(y, ops.pow(x, ops.sub(y, 1.0))))
    safe_x = ops.where(ops.equal(x, 0.0), ops.ones_like(x), x)
    dy = ops.mul(out, ops.log(safe_x))
    return dx, dy


def _pow_jvp(p, t, o):
    dx, dy = _pow_partials(p[0], p[1], o[0])
    a = None if t[0] is None else ops.mul(t[0], dx)
    b = None if t[1] is None else ops.mul(t[1], dy)
    s = o[0].shape
    return [add_any(None if a is None else bcast(a, s), None if b is None else bcast(b, s))]


def _pow_vjp(c, p, o):
    dx, dy = _pow_partials(p[0], p[1], o[0])
    return [unbroadcast(ops.mul(c[0], dx), p[0].shape), unbroadcast(ops.mul(c[0], dy), p[1].shape)]


def _minmax_weights(x, y, greater: bool):
    """Weights of x and y in max(x, y) (min when not greater): [x > y] and [x < y] ([x < y] and
    [x > y] for min), ties split evenly, as in JAX. Both are 0 where an operand is NaN (so is the
    result): y's weight was 1 - x's, which gave all of a NaN's cotangent to the other operand."""
    wins = ops.greater(x, y) if greater else ops.less(x, y)
    loses = ops.less(x, y) if greater else ops.greater(x, y)
    d = x.dtype
    tie = ops.mul(ops.astype(ops.equal(x, y), d), 0.5)
    return ops.add(ops.astype(wins, d), tie), ops.add(ops.astype(loses, d), tie)


def _minmax(greater):
    def jvp(p, t, o):
        wx, wy = _minmax_weights(p[0], p[1], greater)
        s = o[0].shape
        a = None if t[0] is None else bcast(ops.mul(t[0], wx), s)
        b = None if t[1] is None else bcast(ops.mul(t[1], wy), s)
        return [add_any(a, b)]

    def vjp(c, p, o):
        wx, wy = _minmax_weights(p[0], p[1], greater)
        return [unbroadcast(ops.mul(c[0], wx), p[0].shape), unbroadcast(ops.mul(c[0], wy), p[1].shape)]
    return jvp, vjp


add = _binary("add", np.add, _add_jvp,
              lambda c, p, o: [unbroadcast(c[0], p[0].shape), unbroadcast(c[0], p[1].shape)],
              traits=("linear", "commutative"), formula="d(x + y) = dx + dy")
def _sub_shape(x: TensorType, y: TensorType):
    if x.dtype.is_bool:  # NumPy and JAX refuse it too (the interpreter's NumPy raised a TypeError)
        raise DTypeError("bool operands: subtraction of bools is not defined; use ops.logical_xor (^) or "
                         "cast them to integers")
    return _binary_shape(x, y)


sub = _binary("sub", np.subtract, _sub_jvp,
              lambda c, p, o: [unbroadcast(c[0], p[0].shape), unbroadcast(ops.neg(c[0]), p[1].shape)],
              traits=("linear",), formula="d(x - y) = dx - dy", shape_rule=_sub_shape)
mul = _binary("mul", np.multiply, _mul_jvp,
              lambda c, p, o: [unbroadcast(ops.mul(c[0], p[1]), p[0].shape),
                               unbroadcast(ops.mul(c[0], p[0]), p[1].shape)],
              traits=("commutative",), formula="d(x y) = dx y + x dy")
div = _binary("div", lambda a, b: np.true_divide(a, b) if is_float_array(a) or a.dtype.kind == "c" else _int_div(a, b),
              _div_jvp,
              lambda c, p, o: [unbroadcast(ops.div(c[0], p[1]), p[0].shape),
                               unbroadcast(ops.neg(ops.div(ops.mul(c[0], o[0]), p[1])), p[1].shape)],
              formula="d(x / y) = dx / y - (x / y) dy / y")
def _np_pow(a, b):
    """x ** y with C99's (and XLA's, and the compiled code's) special values: NumPy's float
    power takes x ** 0.5 as sqrt(x) in some loops, so (-0.0) ** 0.5 came out -0.0 and
    (-inf) ** 0.5 NaN where pow gives +0.0 and +inf. For a base of -0.0 or -inf and an exponent
    that is not an odd integer the result is that of the base's magnitude.

    float32 is computed in float64 and rounded once, as the compiled kernel does: NumPy's own
    float32 power differs by machine (where AVX-512 is, it runs a SIMD approximation that was an
    ulp off the rounded result for 3 of 54 random values of x ** -2, where powf's loop elsewhere
    was right), and the reference must not."""
    if a.dtype.kind in "iu":
        return _int_pow(a, b)
    if is_half_array(a) or (a.dtype == np.float32 and b.dtype == np.float32):
        # in float64, rounded once (NumPy's float16 power rounds powf's float32 result again)
        with np.errstate(over="ignore", under="ignore"):
            return round_from_f64(_np_pow(a.astype(np.float64), b.astype(np.float64)), a.dtype)
    r = np.power(a, b)
    if not is_float_array(r):
        return r
    with np.errstate(invalid="ignore"):
        neg_special = np.signbit(a) & ((a == 0) | np.isneginf(a))
        if not np.any(neg_special):
            return r
        odd = np.isfinite(b) & (np.floor(b) == b) & (np.fmod(b, 2) != 0)
        fix = neg_special & ~odd
        return np.where(fix, np.power(np.negative(a), b), r).astype(r.dtype, copy=False)


def _int_pow(a, b):
    """Integer x ** y, exact and wrapping around on overflow: NumPy's power (whose products
    wrap in the dtype). A negative exponent, which NumPy refuses, gives what C's truncation of 1 / x**|y|
    gives and the compiled code computes: 1 for x = 1, (-1)**y for x = -1, 0 for |x| > 1, and for
    x = 0 the dtype's minimum (as x // 0)."""
    a, b = np.broadcast_arrays(a, b)
    neg = b < 0
    with np.errstate(all="ignore"):
        r = np.power(a, np.where(neg, 0, b))
    if not neg.any():
        return r
    odd = (b % 2) != 0
    inv = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), np.where(a == 0, np.iinfo(a.dtype).min, 0)))
    return np.where(neg, inv, r).astype(a.dtype)


def _pow_shape(x: TensorType, y: TensorType):
    if x.dtype.is_bool:  # (eagerly a bool result, compiled a CompileError; NumPy gives int8, JAX int32)
        raise DTypeError("bool operands: a power of bools is not defined; cast them to integers first")
    return _binary_shape(x, y)


pow_ = _binary("pow", _np_pow, _pow_jvp, _pow_vjp,
               formula="d(x^y) = y x^(y-1) dx + x^y log(x) dy", shape_rule=_pow_shape)
def _f16_as_f32(fn):
    """`fn` with float16 operands taken through float32 (exact for max and min): NumPy's float16
    maximum(-0.0, +0.0) is the first operand, its float32 and float64 ones (and graphad's compiled
    code, every dtype) the second; so float16 agrees with the other dtypes and with compiled code."""
    def impl(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype == np.float16 and b.dtype == np.float16:
            return fn(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
        return fn(a, b)
    impl.__name__ = fn.__name__
    return impl


maximum = _binary("maximum", _f16_as_f32(np.maximum), *_minmax(True), traits=("commutative",),
                  shape_rule=_real_binary_shape, formula="d max(x, y) = [x > y] dx + [x < y] dy (ties split)")
minimum = _binary("minimum", _f16_as_f32(np.minimum), *_minmax(False), traits=("commutative",),
                  shape_rule=_real_binary_shape, formula="d min(x, y) = [x < y] dx + [x > y] dy (ties split)")


def _int_div(a, b):
    """Integer division truncating toward zero (C semantics, as TVM and MindSpore do), exact in
    integers, with the compiled code's answers where C has none: x / 0 is the dtype's minimum and
    x / -1 is -x wrapped (INT_MIN / -1 is INT_MIN). (It divided in float64, inexact beyond 2**53:
    int64 (2**62 + 1) // 1 gave 2**62.)"""
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(all="ignore"):
        safe = np.where((b == 0) | (b == -1), 1, b).astype(a.dtype)
        q = np.floor_divide(a, safe)
        q = q + ((q * safe != a) & ((a < 0) != (safe < 0))).astype(a.dtype)  # floor -> toward zero
        q = np.where(b == -1, np.negative(a), q)
    return np.where(b == 0, np.iinfo(a.dtype).min, q).astype(a.dtype)


# ---------------------------------------------------------------- more binary math (issue 17)

def _float_binary_shape(x: TensorType, y: TensorType):
    require_float(x)
    return _binary_shape(x, y)


def _by_partials(partials):
    """jvp and vjp of a broadcasting binary primitive from partials(x, y, out) -> (d/dx, d/dy)."""
    def jvp(p, t, o):
        dx, dy = partials(p[0], p[1], o[0])
        s = o[0].shape
        a = None if t[0] is None else bcast(ops.mul(t[0], dx), s)
        b = None if t[1] is None else bcast(ops.mul(t[1], dy), s)
        return [add_any(a, b)]

    def vjp(c, p, o):
        dx, dy = partials(p[0], p[1], o[0])
        return [unbroadcast(ops.mul(c[0], dx), p[0].shape), unbroadcast(ops.mul(c[0], dy), p[1].shape)]
    return jvp, vjp


def _arctan2_partials(y, x, out):
    r2 = ops.add(ops.square(x), ops.square(y))
    return ops.div(x, r2), ops.neg(ops.div(y, r2))


def _hypot_partials(x, y, out):
    return ops.div(x, out), ops.div(y, out)


def _logaddexp_partials(x, y, out):
    # d/dx log(e^x + e^y) = sigmoid(x - y); x == y == +-inf gives x - y = NaN: there 1/2 each
    # (the tie's value, as at finite ties), without cutting the dependence on x - y elsewhere
    d = ops.sub(x, y)
    inf_tie = ops.where(ops.equal(x, y), ops.not_equal(d, d), False)
    d = ops.where(inf_tie, ops.zeros_like(d), d)
    return ops.sigmoid(d), ops.sigmoid(ops.neg(d))


def _fmod_partials(a, b, out):
    return ops.ones_like(out), ops.neg(ops.trunc(ops.div(a, b)))


def _remainder_partials(a, b, out):
    return ops.ones_like(out), ops.neg(ops.floor(ops.div(a, b)))


def _int_mod(a, b, floor: bool):
    """Integer fmod (sign of the dividend) or remainder (sign of the divisor); x % 0 is 0 as in NumPy."""
    safe = np.where(b == 0, 1, b)
    with np.errstate(all="ignore"):
        r = np.remainder(a, safe) if floor else np.fmod(a, safe)
    return np.where(b == 0, 0, r).astype(a.dtype)


def _fmod_impl(a, b):
    return np.fmod(a, b) if is_float_array(a) else _int_mod(a, b, False)


def _remainder_impl(a, b):
    return np.remainder(a, b) if is_float_array(a) else _int_mod(a, b, True)


def _np2(fn):
    """A binary NumPy (libm) kernel: float64 as is, narrower floats computed in float64 and
    rounded once."""
    def k(a, b):
        if a.dtype == np.float64:
            return fn(a, b)
        return round_from_f64(fn(a.astype(np.float64), b.astype(np.float64)), a.dtype)
    return k


arctan2 = _binary("arctan2", _np2(np.arctan2), *_by_partials(_arctan2_partials), shape_rule=_float_binary_shape,
                  formula="z = atan2(y, x); dz = (x dy - y dx) / (x^2 + y^2)")
hypot = _binary("hypot", _np2(np.hypot), *_by_partials(_hypot_partials), traits=("commutative",),
                shape_rule=_float_binary_shape, formula="z = sqrt(x^2 + y^2); dz = (x dx + y dy) / z")
logaddexp = _binary("logaddexp", _np2(np.logaddexp), *_by_partials(_logaddexp_partials), traits=("commutative",),
                    shape_rule=_float_binary_shape,
                    formula="z = log(e^x + e^y); dz = sigmoid(x - y) dx + sigmoid(y - x) dy")
fmod = _binary("fmod", _fmod_impl, *_by_partials(_fmod_partials), shape_rule=_numeric_binary_shape,
               formula="z = x - trunc(x / y) y (sign of x); dz = dx - trunc(x / y) dy")
remainder = _binary("remainder", _remainder_impl, *_by_partials(_remainder_partials),
                    shape_rule=_numeric_binary_shape,
                    formula="z = x - floor(x / y) y (sign of y); dz = dx - floor(x / y) dy")


# ---------------------------------------------------------------- comparisons, where, casts


def _compare_shape(x, y):
    same_dtype(x, y)
    return TensorType(broadcast_shapes(x.shape, y.shape), dt.bool_)


def _ordered_compare_shape(x, y):
    if x.dtype.is_complex:
        raise DTypeError(f"{x.dtype.name} operands: complex numbers are not ordered (compare ops.real or "
                         f"ops.abs of them)")
    return _compare_shape(x, y)


def _compare(name, impl, formula, ordered=True):
    ref: list = []
    p = register(Primitive(name, shape_rule=_ordered_compare_shape if ordered else _compare_shape, impl=impl, batch=_binary_batch(ref),
                           nondiff="boolean output", traits=("elementwise", "binary", "comparison"),
                           formula=f"{formula} (bool, broadcasting); no derivative"))
    ref.append(p)
    return p


equal = _compare("equal", np.equal, "y = [x == y]", ordered=False)
not_equal = _compare("not_equal", np.not_equal, "y = [x != y]", ordered=False)
less = _compare("less", np.less, "y = [x < y]")
less_equal = _compare("less_equal", np.less_equal, "y = [x <= y]")
greater = _compare("greater", np.greater, "y = [x > y]")
greater_equal = _compare("greater_equal", np.greater_equal, "y = [x >= y]")


def _bitwise_shape(x: TensorType, y: TensorType):
    d = same_dtype(x, y)
    if not (d.is_int or d.is_bool):
        raise DTypeError(f"{d.name} operands: bitwise operations take integers or bools")
    return TensorType(broadcast_shapes(x.shape, y.shape), d)


def _bitwise(name, impl, formula, shape_rule=_bitwise_shape, nondiff="integer or boolean output"):
    """A broadcasting binary primitive on integers (or bools) with no derivative."""
    ref: list = []
    p = register(Primitive(name, shape_rule=shape_rule, impl=impl, batch=_binary_batch(ref), nondiff=nondiff,
                           traits=("elementwise", "binary"), formula=f"{formula}; no derivative"))
    ref.append(p)
    return p


_BITS = " bit by bit (integers, two's complement; bools: logical; broadcasting)"
bitwise_and = _bitwise("bitwise_and", np.bitwise_and, "y = x & y" + _BITS)
bitwise_or = _bitwise("bitwise_or", np.bitwise_or, "y = x | y" + _BITS)
bitwise_xor = _bitwise("bitwise_xor", np.bitwise_xor, "y = x ^ y" + _BITS)


def _shift_shape(x: TensorType, y: TensorType):
    d = same_dtype(x, y)
    if not d.is_int:
        raise DTypeError(f"{d.name} operands: shifts take integers"
                         + (" (cast bools with astype)" if d.is_bool else ""))
    return TensorType(broadcast_shapes(x.shape, y.shape), d)


# NumPy's kernels define every shift count (npy_lshift/npy_rshift): one outside [0, bits) gives 0
# (left) or the sign fill (right), as XLA's shifts do; C and LLVM leave it undefined, which the
# lowering guards against (relax_ops._shift_lowering)
left_shift = _bitwise("left_shift", np.left_shift, "y = x << n (integers, two's complement; a count outside "
                      "[0, bits) gives 0; broadcasting)", _shift_shape, "integer output")
right_shift = _bitwise("right_shift", np.right_shift, "y = x >> n, arithmetic (integers, two's complement; a count "
                       "outside [0, bits) gives the sign fill: -1 or 0; broadcasting)", _shift_shape, "integer output")


def _where_shape(c, x, y):
    if not c.dtype.is_bool:
        from ..errors import DTypeError
        raise DTypeError(f"condition must be bool, got {c.dtype.name}")
    d = same_dtype(x, y)
    return TensorType(broadcast_shapes(c.shape, x.shape, y.shape), d)


def _where_jvp(p, t, o):
    if t[1] is None and t[2] is None:
        return [None]
    s = o[0].shape
    a = t[1] if t[1] is not None else ops.zeros_like(p[1])
    b = t[2] if t[2] is not None else ops.zeros_like(p[2])
    return [bcast(ops.where(p[0], a, b), s)]


def _where_vjp(c, p, o):
    z = ops.zeros_like(c[0])
    return [None, unbroadcast(ops.where(p[0], c[0], z), p[1].shape),
            unbroadcast(ops.where(p[0], z, c[0]), p[2].shape)]


def _where_batch(args, dims):
    a = batch_broadcasting(args, dims)
    return [where.bind(*a)], [0]


where = register(Primitive("where", shape_rule=_where_shape, impl=np.where, jvp=_where_jvp, vjp=_where_vjp,
                           batch=_where_batch, nondiff_inputs=(0,), traits=("elementwise",),
                           formula="d where(c, x, y) = where(c, dx, dy)"))


def _astype_shape(x, dtype):
    return TensorType(x.shape, dt.as_dtype(dtype))


def _astype_impl(a, dtype):
    d = dt.as_dtype(dtype)
    if a.dtype.kind == "c" and d.is_bool:
        return a != 0  # true where either part is nonzero (NumPy's and JAX's truth of a complex number)
    if a.dtype.kind == "c" and not d.is_complex:
        a = a.real  # JAX's (and NumPy's) cast of a complex number to a real type keeps the real part
    if a.dtype == np.float64 and d.name in ("float16", "bfloat16"):
        return round_from_f64(a, d.np)  # (ml_dtypes' float64 -> bfloat16 rounds twice)
    if d.name == "bfloat16" and a.dtype.kind in "iu" and a.dtype.itemsize >= 4:
        return round_from_f64(a.astype(np.float64), d.np)  # (ml_dtypes goes through float32: twice)
    if d.is_int and a.dtype.kind not in "iub":
        return float_to_int(a, d.np)
    return a.astype(d.np)


def float_to_int(a: np.ndarray, to) -> np.ndarray:
    """Float (any width) values truncated toward zero to the integer type `to`; NaN, infinities
    and values outside its range give its most negative value, as x86's conversion does (the
    compiled cast selects so too: C and LLVM leave it undefined, and the machine's answer leaked
    through LLVM's folding of a cast chain, an lowp trial)."""
    info = np.iinfo(to)
    w = np.asarray(a, np.float64)  # (exact for every float type)
    ok = (w >= float(info.min)) & (w < -float(info.min))
    out = np.where(ok, w, 0.0).astype(to)
    out[~ok] = info.min
    return out


def _astype_jvp(p, t, o, dtype):
    d = dt.as_dtype(dtype)
    if t[0] is None or not d.is_inexact or not p[0].dtype.is_inexact:
        return [None]
    return [ops.astype(t[0], d)]


def _astype_vjp(c, p, o, dtype):
    # complex -> real keeps the real part, whose transpose is ct -> ct + 0j; real -> complex has
    # the transpose ct -> Re(ct): both are astype back (JAX's convert_element_type rules)
    if not p[0].dtype.is_inexact or not dt.as_dtype(dtype).is_inexact:
        return [None]
    return [ops.astype(c[0], p[0].dtype)]


astype = register(Primitive("astype", shape_rule=_astype_shape, impl=_astype_impl, jvp=_astype_jvp,
                            vjp=_astype_vjp, batch=lambda a, d, dtype: ([astype.bind(a[0], dtype=dtype)], [d[0]]),
                            traits=("elementwise", "unary", "linear"),
                            formula="d astype(x) = astype(dx) (zero unless both types are float or complex; "
                                    "complex -> real keeps the real part)"))

stop_gradient = register(Primitive(
    "stop_gradient", shape_rule=lambda x: TensorType(x.shape, x.dtype), impl=lambda a: a.copy(),
    jvp=lambda p, t, o: [None], vjp=lambda c, p, o: [None],
    batch=lambda a, d: ([stop_gradient.bind(a[0])], [d[0]]), traits=("elementwise", "unary", "stop_gradient"),
    formula="y = x; dy = 0"))


# ---------------------------------------------------------------- complex numbers (docs/complex.md)
#
# real, imag and conj are R-linear maps, and complex(re, im) is R-linear in the pair. Their
# transposes are JAX's (jax/_src/lax/lax.py): the cotangent pairing is Re(ct * t) without
# conjugation, so real's transpose is ct -> ct + 0j, imag's ct -> -i ct, conj's ct -> conj(ct), and
# complex's ct -> (Re ct, -Im ct).


def _complex_part_shape(x: TensorType):
    if not x.dtype.is_complex:
        raise DTypeError(f"operand must be complex64 or complex128, got {x.dtype.name} (ops.real and ops.imag "
                         f"of a real tensor need no primitive)")
    return TensorType(x.shape, dt.real_dtype(x.dtype))


def _conj_shape(x: TensorType):
    if not x.dtype.is_complex:
        raise DTypeError(f"operand must be complex64 or complex128, got {x.dtype.name}")
    return TensorType(x.shape, x.dtype)


def _zeros_of(x):
    return ops.zeros_like(x)


real = register(Primitive(
    "real", shape_rule=_complex_part_shape, impl=lambda a: np.real(a).copy(),
    jvp=lambda p, t, o: [real.bind(t[0])],
    vjp=lambda c, p, o: [complex_.bind(c[0], _zeros_of(c[0]))],
    batch=lambda a, d: ([real.bind(a[0])], [d[0]]), traits=("elementwise", "unary", "linear", "complex"),
    formula="y = Re z; dy = Re dz; ct_z = ct + 0i"))

imag = register(Primitive(
    "imag", shape_rule=_complex_part_shape, impl=lambda a: np.imag(a).copy(),
    jvp=lambda p, t, o: [imag.bind(t[0])],
    vjp=lambda c, p, o: [complex_.bind(_zeros_of(c[0]), neg.bind(c[0]))],
    batch=lambda a, d: ([imag.bind(a[0])], [d[0]]), traits=("elementwise", "unary", "linear", "complex"),
    formula="y = Im z; dy = Im dz; ct_z = -i ct"))

conj = register(Primitive(
    "conj", shape_rule=_conj_shape, impl=np.conjugate,
    jvp=lambda p, t, o: [conj.bind(t[0])], vjp=lambda c, p, o: [conj.bind(c[0])],
    batch=lambda a, d: ([conj.bind(a[0])], [d[0]]), traits=("elementwise", "unary", "linear", "complex"),
    formula="y = conj z; dy = conj dz; ct_z = conj ct"))


def _complex_shape(x: TensorType, y: TensorType):
    d = same_dtype(x, y)
    if d not in (dt.float32, dt.float64):
        raise DTypeError(f"the parts must be float32 or float64, got {d.name} (graphad.ops.complex promotes "
                         f"narrower types to float32)")
    return TensorType(broadcast_shapes(x.shape, y.shape), dt.complex_dtype(d))


def _complex_impl(a, b):
    # the parts are stored as given: re + 1j * im would turn an infinite im into a NaN real part
    # (1j * inf = nan + inf j) and a -0.0 re into +0.0
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dt.complex_dtype(dt.as_dtype(a.dtype)).np)
    out.real = a
    out.imag = b
    return out


def _complex_jvp(p, t, o):
    if t[0] is None and t[1] is None:
        return [None]
    s = o[0].shape
    re = bcast(t[0], s) if t[0] is not None else ops.zeros(s, dtype=p[0].dtype)
    im = bcast(t[1], s) if t[1] is not None else ops.zeros(s, dtype=p[1].dtype)
    return [complex_.bind(re, im)]


complex_ = _binary("complex", _complex_impl, _complex_jvp,
                   lambda c, p, o: [unbroadcast(real.bind(c[0]), p[0].shape),
                                    unbroadcast(imag.bind(neg.bind(c[0])), p[1].shape)],
                   formula="z = x + i y (broadcasting); dz = dx + i dy; ct_x = Re ct, ct_y = -Im ct",
                   shape_rule=_complex_shape, traits=("complex",))
