"""Independent oracles for the elementwise primitives whose reference test compared a kernel with itself.

tests/prim_cases.py checks most primitives against a naive re-implementation, but for the
elementwise math it cannot: its reference for exp is `np.exp`, the very kernel under test (and
likewise log, log1p, expm1, sqrt, rsqrt, reciprocal, sin, cos, tan, tanh, sigmoid, erf, floor,
neg, square, add, sub, mul, div, pow, the comparisons, logical_not, astype and stop_gradient).
Here each of those primitives, in float32 and float64, is run two ways:

* `numpy`: the primitive's NumPy reference kernel, bound eagerly on Tensors;
* `tvm`:   the compiled kernel (`gd.jit(..., backend="tvm")` of the one primitive);

and compared element by element with an oracle that shares no code with either: the exact value
from mpmath (arbitrary precision, 256 bits), exact rational arithmetic for + - *, and the IEEE 754
/ C99 Annex F special-value tables written out below for NaN, infinities and signed zeros.

Inputs: ordinary values (a fixed seed: uniform, log-spaced over many decades, and a per-primitive
range) and edge values: +-0, the smallest subnormal, the smallest normal, the largest finite,
+-inf, NaN, and values beside each primitive's branch points (log near 0 and 1, log1p at -1,
exp's overflow and underflow thresholds, tan near pi/2, floor at integers and half-integers,
rsqrt of -0, pow's whole special-case table...).

Checks, per element:
* IEEE kinds exactly, as NumPy (and JAX) define them: a NaN result must be NaN and nothing
  else; an exact infinity must be that infinity; an exactly zero result must be a zero with the
  oracle's sign (`-0.0` preserved: `sin(-0.0)` is `-0.0`, `floor(-0.0)` is `-0.0`, `1/-0.0` is
  `-inf`, `rsqrt(-0.0)` is `-inf`); a zero where the true result is tiny must carry its sign.
* Finite results within a stated error in ulps of the true value (`TOL_ULPS`; the unit is the
  spacing of the dtype at the true value, with subnormal spacing below the smallest normal).
  Correctly rounded operations (+ - * /, sqrt, floor, neg, casts) must be within 0.5 ulp.
  A result that overflows must be the signed infinity (within the tolerance of the overflow
  threshold, the largest finite is accepted too).
* Bool results (comparisons, logical_not, astype to bool) exactly.

Where a compiled kernel disagrees because of a lowering bug, the case is marked
xfail(strict=True) with the reason (`LOWERING_BUGS`): the owner of graphad/lowering/relax_ops.py
flips it when the bug is fixed (a strict xfail that passes fails the suite).
"""
from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest

import graphad as gd
from graphad.prims import PRIMITIVES
from graphad.tensor import Tensor

NAN, INF = math.nan, math.inf
PREC = 256  # mpmath working precision (bits) for every oracle evaluation

# dtype: (significand bits p, minimum normal exponent, maximum exponent)
FORMATS = {"float32": (24, -126, 127), "float64": (53, -1022, 1023)}
FLOATS = tuple(FORMATS)


# ---------------------------------------------------------------- the float formats, from first principles

def max_finite(dtype: str) -> float:
    p, _, emax = FORMATS[dtype]
    return float((2 - 2.0 ** (1 - p)) * 2.0 ** emax)


def min_normal(dtype: str) -> float:
    return 2.0 ** FORMATS[dtype][1]


def min_subnormal(dtype: str) -> float:
    p, emin, _ = FORMATS[dtype]
    return 2.0 ** (emin - p + 1)


def ulp(v: mpmath.mpf, dtype: str) -> mpmath.mpf:
    """The spacing of `dtype`'s floats at |v| (subnormal spacing below the smallest normal)."""
    p, emin, _ = FORMATS[dtype]
    e = emin if v == 0 else max(int(mpmath.floor(mpmath.log(abs(v), 2))), emin)
    return mpmath.ldexp(1, e - p + 1)


# ---------------------------------------------------------------- oracle values

# An oracle returns a Python float when the result is exact in every format (NaN, an infinity, a
# signed zero, or a small exact value such as floor's), else an mpmath number (the true value,
# which the checker compares in ulps). _BIG / _TINY stand for values far beyond the overflow /
# underflow thresholds of every format (the true value of exp(1e300) is never formed).
_BIG = mpmath.ldexp(1, 100000)
_TINY = mpmath.ldexp(1, -100000)


def _mp(x: float) -> mpmath.mpf:
    return mpmath.mpf(x)


def _sgn(x: float) -> float:
    return math.copysign(1.0, x)


def _exp_mp(x: mpmath.mpf) -> mpmath.mpf:
    if x > 20000:
        return _BIG
    if x < -20000:
        return _TINY
    return mpmath.exp(x)


def o_exp(x):
    if math.isnan(x):
        return NAN
    if math.isinf(x):
        return INF if x > 0 else 0.0
    if x == 0:
        return 1.0
    return _exp_mp(_mp(x))


def o_log(x):
    if math.isnan(x) or x < 0:
        return NAN
    if x == 0:
        return -INF
    if math.isinf(x):
        return INF
    if x == 1:
        return 0.0
    return mpmath.log(_mp(x))


def o_log1p(x):
    if math.isnan(x) or x < -1:
        return NAN
    if x == -1:
        return -INF
    if x == 0 or math.isinf(x):
        return x  # log1p(+-0) = +-0
    return mpmath.log1p(_mp(x))


def o_expm1(x):
    if math.isnan(x):
        return NAN
    if math.isinf(x):
        return INF if x > 0 else -1.0
    if x == 0:
        return x  # expm1(+-0) = +-0
    if x < -20000:
        return -1 + _TINY
    return _BIG if x > 20000 else mpmath.expm1(_mp(x))


def o_sqrt(x):
    if math.isnan(x) or x < 0:
        return NAN
    if x == 0 or math.isinf(x):
        return x  # sqrt(-0) = -0
    return mpmath.sqrt(_mp(x))


def o_rsqrt(x):
    if math.isnan(x) or x < 0:
        return NAN
    if x == 0:
        return math.copysign(INF, x)  # 1/sqrt(-0) = 1/-0 = -inf
    if math.isinf(x):
        return 0.0
    return 1 / mpmath.sqrt(_mp(x))


def o_reciprocal(x):
    if math.isnan(x):
        return NAN
    if x == 0:
        return math.copysign(INF, x)
    if math.isinf(x):
        return math.copysign(0.0, x)
    return 1 / _mp(x)


def _periodic(fn, zero_is_odd: bool):
    def o(x):
        if math.isnan(x) or math.isinf(x):
            return NAN
        if x == 0:
            return x if zero_is_odd else 1.0
        return fn(_mp(x))
    return o


o_sin = _periodic(mpmath.sin, True)
o_cos = _periodic(mpmath.cos, False)
o_tan = _periodic(mpmath.tan, True)


def _odd_saturating(fn):
    """The oracle of an odd function going to +-1 at +-inf (tanh, erf): exact at +-0 and +-inf."""
    def o(x):
        if math.isnan(x):
            return NAN
        if math.isinf(x):
            return _sgn(x)
        if x == 0:
            return x
        return fn(_mp(x))
    return o


o_tanh = _odd_saturating(mpmath.tanh)


def o_sigmoid(x):
    if math.isnan(x):
        return NAN
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    if x == 0:
        return 0.5
    return 1 / (1 + _exp_mp(-_mp(x)))


o_erf = _odd_saturating(mpmath.erf)


def o_floor(x):
    if math.isnan(x) or math.isinf(x) or x == 0:
        return x  # floor(-0) = -0
    f = mpmath.floor(_mp(x))
    return 0.0 if f == 0 else f  # floor(0.5) = +0


def o_neg(x):
    return NAN if math.isnan(x) else -x


def o_square(x):
    if math.isnan(x):
        return NAN
    if math.isinf(x):
        return INF
    if x == 0:
        return 0.0
    return mpmath.fmul(_mp(x), _mp(x), exact=True)


UNARY = {
    "exp": o_exp, "log": o_log, "log1p": o_log1p, "expm1": o_expm1, "sqrt": o_sqrt, "rsqrt": o_rsqrt,
    "reciprocal": o_reciprocal, "sin": o_sin, "cos": o_cos, "tan": o_tan, "tanh": o_tanh,
    "sigmoid": o_sigmoid, "erf": o_erf, "floor": o_floor, "neg": o_neg, "square": o_square,
}


def o_add(a, b):
    if math.isnan(a) or math.isnan(b):
        return NAN
    if math.isinf(a) or math.isinf(b):
        if math.isinf(a) and math.isinf(b) and a != b:
            return NAN  # inf - inf
        return a if math.isinf(a) else b
    if a == 0 and b == 0:
        return -0.0 if (_sgn(a) < 0 and _sgn(b) < 0) else 0.0
    s = mpmath.fadd(_mp(a), _mp(b), exact=True)
    return 0.0 if s == 0 else s  # an exact cancellation is +0 when rounding to nearest


def o_sub(a, b):
    return o_add(a, NAN if math.isnan(b) else -b)


def o_mul(a, b):
    if math.isnan(a) or math.isnan(b):
        return NAN
    sign = _sgn(a) * _sgn(b)
    if math.isinf(a) or math.isinf(b):
        return NAN if (a == 0 or b == 0) else sign * INF  # inf * 0 is NaN
    if a == 0 or b == 0:
        return math.copysign(0.0, sign)
    return mpmath.fmul(_mp(a), _mp(b), exact=True)


def o_div(a, b):
    if math.isnan(a) or math.isnan(b) or (math.isinf(a) and math.isinf(b)) or (a == 0 and b == 0):
        return NAN
    sign = _sgn(a) * _sgn(b)
    if math.isinf(a) or b == 0:
        return sign * INF
    if math.isinf(b) or a == 0:
        return math.copysign(0.0, sign)
    return _mp(a) / _mp(b)


def _odd_int(y: float) -> bool:
    return math.isfinite(y) and y == math.floor(y) and abs(y) < 2.0 ** 53 and int(y) % 2 == 1


def o_pow(x, y):
    """C99 Annex F.9.4.4 (what NumPy's and JAX's pow follow), then the true value."""
    if y == 0:
        return 1.0  # even for NaN x
    if x == 1:
        return 1.0  # even for NaN y
    if math.isnan(x) or math.isnan(y):
        return NAN
    if x == 0:
        if y < 0:
            return math.copysign(INF, x) if _odd_int(y) else INF
        return x if _odd_int(y) else 0.0
    if math.isinf(y):
        if x == -1:
            return 1.0
        return (INF if y > 0 else 0.0) if abs(x) > 1 else (0.0 if y > 0 else INF)
    if math.isinf(x):
        if x < 0 and _odd_int(y):
            return -0.0 if y < 0 else -INF
        return 0.0 if y < 0 else INF
    if x < 0 and y != math.floor(y):
        return NAN
    sign = -1 if (x < 0 and _odd_int(y)) else 1
    lg = y * math.log2(abs(x))  # far outside every format: no need to form the true value
    if lg > 20000:
        return sign * _BIG
    if lg < -20000:
        return sign * _TINY
    return sign * mpmath.power(abs(_mp(x)), _mp(y))


def o_maximum(a, b):
    return NAN if (math.isnan(a) or math.isnan(b)) else (a if a > b else b)


def o_minimum(a, b):
    return NAN if (math.isnan(a) or math.isnan(b)) else (a if a < b else b)


BINARY = {"add": o_add, "sub": o_sub, "mul": o_mul, "div": o_div, "pow": o_pow,
          "maximum": o_maximum, "minimum": o_minimum}

# comparisons: Python's float comparisons are IEEE's (every comparison with NaN is false but !=)
COMPARE = {"equal": lambda a, b: a == b, "not_equal": lambda a, b: a != b, "less": lambda a, b: a < b,
           "less_equal": lambda a, b: a <= b, "greater": lambda a, b: a > b,
           "greater_equal": lambda a, b: a >= b}

# correctly rounded operations: 0.5 ulp; the rest, the stated bound for each kernel
CORRECTLY_ROUNDED = ("neg", "square", "floor", "sqrt", "reciprocal", "add", "sub", "mul", "div",
                     "maximum", "minimum")

# ulps of the true value. Measured worst cases, as of this file: NumPy's float64 kernels (glibc's
# libm, and math.erf) <= 1.1 ulp; its float32 kernels (SIMD) <= 1.5 ulp; compiled float64 kernels
# are libm's too, but expm1 is Kahan's formula (relax_ops.py), 1.44 ulp; the compiled float32 exp,
# tanh, sigmoid, erf, sin and cos are graphad's vectorized polynomials (<= 3.3e-7 relative, sin/cos
# <= 3.5 ulp). rsqrt is 1 / sqrt(x): two roundings.
TOL_ULPS = {
    ("numpy", "float64"): {"rsqrt": 1.5, "default": 2.0},
    ("numpy", "float32"): {"rsqrt": 1.5, "default": 2.0},
    ("tvm", "float64"): {"rsqrt": 1.5, "default": 2.0},
    ("tvm", "float32"): {"rsqrt": 1.5, "default": 4.0},
}

# Compiled kernels, like XLA's on CPU, need not produce subnormal results exactly: an absolute error
# up to the dtype's smallest normal number is accepted (a flush to a zero of the right sign, or the
# bits a polynomial loses when its intermediates are subnormal). The NumPy kernels get no such slack.
COMPILED_ABS_SLACK = True

# The compiled float32 sin/cos reduce their argument by Cody-Waite (relax_ops.py): documented
# accurate for |x| < 1.25e5. Beyond that only the range is required: a value in [-1, 1].
REDUCED_DOMAIN = {("sin", "float32", "tvm"): 1.25e5, ("cos", "float32", "tvm"): 1.25e5}


def tol_ulps(name: str, backend: str, dtype: str) -> float:
    if name in CORRECTLY_ROUNDED:
        return 0.5
    t = TOL_ULPS[(backend, dtype)]
    return t.get(name, t["default"])


# ---------------------------------------------------------------- inputs

def _pm(values):
    return [s * v for v in values for s in (1.0, -1.0)]


def edge_values(dtype: str) -> list[float]:
    """Values that every unary primitive meets: zeros, subnormals, extremes, infinities, NaN, units."""
    big, tiny, sub = max_finite(dtype), min_normal(dtype), min_subnormal(dtype)
    eps = 2.0 ** (1 - FORMATS[dtype][0])
    return [0.0, -0.0, INF, -INF, NAN] + _pm([sub, 3 * sub, tiny, tiny * (1 + eps), 1e-30, 1e-8, 0.5, 1.0, 1.5,
                                              2.0, 3.0, 1 - eps / 2, 1 + eps, 10.0, 100.0, 1e4, big / 2, big])


def near_branch_points(name: str, dtype: str) -> list[float]:
    """Inputs beside the primitive's singularities, thresholds and kinks."""
    p = FORMATS[dtype][0]
    eps = 2.0 ** (1 - p)
    f = np.dtype(dtype).type
    ln_max = math.log(max_finite(dtype))
    ln_sub = math.log(min_subnormal(dtype))
    if name in ("exp", "expm1", "sigmoid", "tanh"):  # overflow / underflow thresholds, the flat tails
        out = _pm([ln_max * (1 - eps), ln_max * (1 + eps), -ln_sub * 0.999, -ln_sub * 1.001, 20.0, 40.0,
                   87.0, 89.0, 105.0, 709.0, 710.0, 745.0, 746.0, 2.0 ** -12, 1e-20])
        return out + [-0.3, 0.3, 0.49, 0.51]  # expm1's branch at |x| = 0.5
    if name in ("log", "log1p"):
        return [1 - eps / 2, 1 + eps, 1e-300 if dtype == "float64" else 1e-40, -1.0, -1 + eps / 2,
                -1 - eps, -1 + 1e-3, 2.0 ** -30, -(2.0 ** -30), 1e30]
    if name in ("sqrt", "rsqrt"):
        return [-1e-30, -INF, 4.0, 0.25, 2.0 ** 100, 2.0 ** -100]
    if name in ("sin", "cos", "tan"):
        half_pi = float(f(math.pi / 2))
        return _pm([half_pi, float(np.nextafter(f(half_pi), f(0))), math.pi, float(f(math.pi)), 2 * math.pi,
                    1e3, 12345.678, 1e5 if dtype == "float64" else 1.2e5])
    if name == "floor":
        return _pm([0.25, 0.75, 1 - eps / 2, 2.0 ** (p - 1) + 0.5, 2.0 ** (p - 1) - 0.5, 2.0 ** p, 2.0 ** (p + 1),
                    7.0, 1e-300 if dtype == "float64" else 1e-40])
    if name == "erf":
        return _pm([1e-20, 0.5, 3.0, 5.9, 6.0, 27.0])
    if name == "reciprocal":
        return _pm([max_finite(dtype) / 4, min_normal(dtype) / 4])
    return []


# "ordinary" ranges beyond the shared ones, where a primitive's interesting values lie
_RANGE = {"exp": 80.0, "expm1": 80.0, "sigmoid": 80.0, "tanh": 20.0, "erf": 5.0, "sin": 1e4, "cos": 1e4,
          "tan": 1e4, "floor": 1e6}


def ordinary_values(name: str, dtype: str, n: int = 48) -> list[float]:
    rng = np.random.default_rng(zlib_seed(name, dtype))
    xs = list(rng.uniform(-10, 10, n)) + list(10.0 ** rng.uniform(-20, 20, n) * rng.choice([-1, 1], n))
    xs += list(rng.uniform(-1, 1, n) * _RANGE.get(name, 1.0))
    if dtype == "float64" and name in ("exp", "expm1", "sigmoid"):
        xs += list(rng.uniform(-740, 709, n))
    return xs


def zlib_seed(*parts: str) -> int:
    import zlib
    return zlib.crc32("/".join(parts).encode())


def as_dtype(xs, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(xs, np.float64).astype(dtype)


def unary_inputs(name: str, dtype: str) -> np.ndarray:
    """The de-duplicated inputs of a unary primitive, exactly representable in `dtype`."""
    xs = as_dtype(edge_values(dtype) + near_branch_points(name, dtype) + ordinary_values(name, dtype), dtype)
    seen, out = set(), []
    for v in xs:
        key = v.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(v)
    return np.array(out, dtype)


def binary_edges(dtype: str) -> list[float]:
    big, tiny = max_finite(dtype), min_normal(dtype)
    return [0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 1.5, -2.5, tiny, -tiny,
            big, -big, min_subnormal(dtype)]


def binary_inputs(name: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of edge values, then ordinary pairs (for pow: a positive base, and integer exponents)."""
    e = binary_edges(dtype)
    a = [x for x in e for _ in e]
    b = [y for _ in e for y in e]
    rng = np.random.default_rng(zlib_seed(name, dtype))
    n = 64
    if name == "pow":
        a += list(10.0 ** rng.uniform(-3, 3, n)) + list(rng.uniform(-4, 4, n)) + list(rng.uniform(0.5, 1.5, n))
        b += list(rng.uniform(-30, 30, n)) + list(rng.integers(-12, 12, n).astype(float)) + \
            list(rng.uniform(-300, 300, n))
        a += [-2.0, -2.0, -0.5, -1.0, 2.0, 0.999, 1.001, 10.0, 10.0]
        b += [1e300, -1e300, 1e300, 2.0 ** 60, 1024.0, 1e10, 1e6, 308.0, -320.0]
    else:
        for scale in (10.0, 1e12):
            a += list(rng.uniform(-1, 1, n) * scale)
            b += list(rng.uniform(-1, 1, n) * scale)
        a += list(10.0 ** rng.uniform(-30, 30, n))
        b += list(-(10.0 ** rng.uniform(-30, 30, n)))
        x = rng.uniform(-10, 10, n)  # close operands: cancellation, exact ties for comparisons
        a += list(x) + list(x)
        b += list(x) + list(np.nextafter(x.astype(dtype), np.inf).astype(np.float64))
    return as_dtype(a, dtype), as_dtype(b, dtype)


# ---------------------------------------------------------------- the checker

def check_float(got: float, want, dtype: str, tol: float, zero_sign_free: bool = False,
                abs_slack: bool = False) -> str | None:
    """None if `got` matches the oracle's `want` (a float or an mpmath number), else why not.

    `tol` is in ulps of the true value; `abs_slack` also accepts an absolute error up to the
    smallest normal number (compiled kernels); `zero_sign_free` accepts either zero for a zero.
    """
    if isinstance(want, float):
        if math.isnan(want):
            return None if math.isnan(got) else "expected NaN"
        if math.isnan(got):
            return "NaN where the result is a number"
        if math.isinf(want):
            return None if got == want else f"expected {want}"
        if want == 0:
            if got != 0:
                return "expected an exact zero"
            if not zero_sign_free and _sgn(got) != _sgn(want):
                return f"expected {want!r} (sign of zero)"
            return None
        want = _mp(want)
    if math.isnan(got):
        return "NaN where the result is a number"
    neg = want < 0
    if got == 0 and not zero_sign_free and (_sgn(got) < 0) != neg:
        return "zero of the wrong sign"
    if got != 0 and (got < 0) != neg:
        return "wrong sign"
    p, _, emax = FORMATS[dtype]
    big = max_finite(dtype)
    overflow = mpmath.ldexp(1, emax + 1)  # where rounding to nearest reaches infinity, minus half an ulp
    if math.isinf(got):
        if abs(want) >= overflow - ulp(_mp(big), dtype) / 2:
            return None
        g = overflow  # an early overflow: measure it as the next power of two past the largest finite
    else:
        g = abs(_mp(got))
    err = abs(g - abs(want)) / ulp(min(abs(want), _mp(big)), dtype)
    if err <= tol or (abs_slack and not math.isinf(got) and abs(g - abs(want)) <= min_normal(dtype)):
        return None
    if abs(want) >= overflow:
        return f"expected {'-' if neg else ''}inf (overflow)"
    return f"{float(err):.3g} ulp off (tolerance {tol})"


@functools.lru_cache(maxsize=None)
def oracle(name: str, dtype: str):
    """(inputs, the oracle's result per element) for a primitive, computed once per dtype."""
    with mpmath.workprec(PREC):
        if name in UNARY or name in OTHER_UNARY or name.startswith("astype"):
            x = unary_inputs("exp" if name.startswith("astype") else name, dtype)
            fn = _other_unary(name)
            return (x,), [fn(float(v)) for v in x]
        a, b = binary_inputs(name, dtype)
        fn = BINARY.get(name) or COMPARE[name]
        return (a, b), [fn(float(u), float(v)) for u, v in zip(a, b)]


def _other_unary(name):
    if name in UNARY:
        return UNARY[name]
    if name == "abs":
        return lambda x: NAN if math.isnan(x) else math.copysign(x, 1.0)
    if name == "sign":  # NumPy: sign(nan) = nan, sign(-0.0) = +0.0
        return lambda x: NAN if math.isnan(x) else (1.0 if x > 0 else -1.0 if x < 0 else 0.0)
    if name == "relu":
        return lambda x: NAN if math.isnan(x) else (x if x > 0 else 0.0)
    if name == "logical_not":
        return lambda x: not x  # NaN is true, +-0 false
    if name == "stop_gradient":  # the identity, bit for bit
        return lambda x: x
    dst = name.split(":")[1]
    if dst == "bool":
        return lambda x: bool(x)
    if dst.startswith("int"):  # truncation toward zero; out-of-range and NaN are undefined (skipped)
        return lambda x: None if not math.isfinite(x) or abs(x) >= 2.0 ** 31 else float(math.trunc(x))
    return lambda x: x if (math.isnan(x) or math.isinf(x) or x == 0) else _mp(x)  # a float cast rounds


# ---------------------------------------------------------------- running the kernels

def run_kernel(name: str, backend: str, arrays) -> np.ndarray:
    prim_name, attrs = (("astype", {"dtype": name.split(":")[1]}) if name.startswith("astype") else (name, {}))
    prim = PRIMITIVES[prim_name]
    with np.errstate(all="ignore"):
        if backend == "numpy":  # the reference kernel, bound eagerly
            out = prim.bind(*[Tensor(a) for a in arrays], **attrs)
        else:
            out = gd.jit(lambda *xs: prim.bind(*xs, **attrs), backend="tvm")(*[Tensor(a) for a in arrays])
    return np.asarray(out.asnumpy())


def disagreements(name: str, backend: str, dtype: str) -> list[str]:
    """Every element where the kernel and the oracle disagree, as readable lines."""
    arrays, want = oracle(name, dtype)
    got = run_kernel(name, backend, arrays)
    out_dtype = name.split(":")[1] if name.startswith("astype") else dtype
    tol = 0.5 if name.startswith("astype") else tol_ulps(name, backend, dtype)
    zero_free = name in ("maximum", "minimum", "relu")  # NumPy leaves the sign of max(-0, +0) open
    slack = backend == "tvm" and COMPILED_ABS_SLACK
    reduced = REDUCED_DOMAIN.get((name, dtype, backend), INF)
    bad = []
    with mpmath.workprec(PREC):
        for i, w in enumerate(want):
            g = got.flat[i].item()
            if w is None:
                continue
            if isinstance(w, bool) or got.dtype.kind in "biu":
                why = None if g == w else f"expected {w}"
            elif math.isfinite(x := float(arrays[0].flat[i])) and abs(x) >= reduced:
                why = None if -1 <= g <= 1 else f"outside [-1, 1] (accuracy is only promised for |x| < {reduced:g})"
            else:
                why = check_float(float(g), w, out_dtype, tol, zero_sign_free=zero_free, abs_slack=slack)
            if why:
                ins = ", ".join(repr(float(a.flat[i])) for a in arrays)
                shown = w if isinstance(w, float) else mpmath.nstr(w, 17)
                bad.append(f"{name}({ins}) [{dtype}] = {g!r}, oracle {shown}: {why}")
    return bad


# ---------------------------------------------------------------- the tests

# compiled kernels that disagree with the oracle because of a lowering bug: strict xfails that the
# owner of graphad/lowering/relax_ops.py flips when fixing them (see the module docstring). Fixed and
# flipped: NaN != x and NaN cast to bool were False (an ordered LLVM compare), see lowering/ieee.py.
LOWERING_BUGS: dict[tuple[str, str], str] = {}
# Fixed and flipped as well: float32 exp overflowed for 88.3763 < x <= 88.7228; float32 sin(-0.0)
# was +0.0 and float32 sin/cos left [-1, 1] beyond |x| ~ 1e8; float64 tanh cancelled for small |x|
# (TVM's (1 - e^-2x) / (1 + e^-2x)); see the exp, sin/cos and tanh lowerings in relax_ops.py.

# the reference kernels' own deviations that remain (none: fixed in graphad/prims/elementwise.py)
REFERENCE_BUGS: dict[tuple[str, str], str] = {}

OTHER_UNARY = ("abs", "sign", "relu", "logical_not", "stop_gradient")
PRIMS = (list(UNARY) + list(OTHER_UNARY) + list(BINARY) + list(COMPARE)
         + ["astype:float32", "astype:float64", "astype:int32", "astype:bool"])


def _params():
    for name in PRIMS:
        for dtype in FLOATS:
            if name == f"astype:{dtype}":
                continue
            for backend in ("numpy", "tvm"):
                reason = (LOWERING_BUGS if backend == "tvm" else REFERENCE_BUGS).get((name, dtype))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                if backend == "tvm":
                    marks.append(pytest.mark.tvm)
                yield pytest.param(name, dtype, backend, marks=marks, id=f"{name}-{dtype}-{backend}")


@pytest.mark.parametrize("name,dtype,backend", list(_params()))
def test_kernel_against_oracle(name, dtype, backend):
    """The kernel agrees with the independent oracle on every ordinary and edge input."""
    bad = disagreements(name, backend, dtype)
    assert not bad, f"{len(bad)} disagreement(s) with the oracle:\n  " + "\n  ".join(bad[:25])


def test_every_self_referenced_primitive_has_an_oracle():
    """The primitives whose prim_cases reference is the kernel's own NumPy call are all covered here."""
    from prim_cases import _UNARY_FLOAT
    covered = {n.split(":")[0] for n in PRIMS}
    missing = (set(_UNARY_FLOAT) | {"neg", "square", "add", "sub", "mul", "div", "pow", "logical_not", "astype",
                                    "stop_gradient"}
               | set(COMPARE)) - covered
    assert not missing, f"no independent oracle for {sorted(missing)}"
    assert set(covered) <= set(PRIMITIVES)


def test_oracle_self_check():
    """The oracle's special values are IEEE's / C99's (spot checks against known results)."""
    assert math.isnan(o_pow(NAN, 1.0)) and o_pow(NAN, 0.0) == 1.0 and o_pow(1.0, NAN) == 1.0
    assert o_pow(-0.0, -1.0) == -INF and o_pow(-0.0, -2.0) == INF and _sgn(o_pow(-INF, -3.0)) < 0
    assert o_pow(-1.0, INF) == 1.0 and o_pow(0.5, -INF) == INF and math.isnan(o_pow(-2.0, 0.5))
    assert _sgn(o_add(-0.0, -0.0)) < 0 and _sgn(o_add(-0.0, 0.0)) > 0 and _sgn(o_sub(1.5, 1.5)) > 0
    assert math.isnan(o_mul(INF, 0.0)) and math.isnan(o_div(0.0, -0.0)) and o_div(1.0, -0.0) == -INF
    assert o_rsqrt(-0.0) == -INF and _sgn(o_sqrt(-0.0)) < 0 and _sgn(o_floor(-0.0)) < 0 and o_floor(-1e-300) == -1
    with mpmath.workprec(PREC):
        assert check_float(1.0, o_exp(1e-300), "float64", 0.5) is None
        assert check_float(INF, o_exp(710.0), "float64", 0.5) is None
        assert check_float(0.0, o_exp(-746.0), "float64", 0.5) is None
        assert check_float(0.0, o_tanh(1e-300), "float64", 1.0) is not None  # a lost tiny value
        assert check_float(0.0, o_sin(-0.0), "float32", 1.0) is not None     # a lost sign of zero
        assert check_float(float(np.nextafter(1.0, 2.0)), _mp(1.0), "float64", 0.5) is not None
