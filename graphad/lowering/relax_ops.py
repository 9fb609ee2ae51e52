"""Lowering table: one function per graphad primitive that emits Relax for one node.

`LOWERINGS[name](cx, node, args)` receives the `LowerContext`, the graph node and the Relax
expressions of its inputs, and returns the Relax expression of each output (one expression, or
a list for several outputs). It emits through `cx` (a BlockBuilder inside a dataflow block).
Where Relax has no operator with graphad's exact semantics, a TE compute is emitted instead
(`cx.emit_te`): log1p/expm1, pad with interior padding, flip, eye, arange, integer division/power,
NaN-propagating maximum/minimum/relu/sign (NumPy semantics), and in float32 vectorizable
polynomial exp/sigmoid (Cephes' expf, within 2.3 ulp), tanh/erf (TVM's topi.fast_tanh/fast_erf).

Invariants kept by every entry:
* results follow the NumPy reference interpreter (graphad.ir.interpret), NaN propagation included;
* dtypes are exact: Relax never promotes, and every constant is built with an explicit dtype
  (`relax.const(np_array)` would silently turn float64 into float32 and int64 into int32);
* no kernel can read or write out of bounds for any input values: gather/scatter indices are
  wrapped (negative) and clipped, and integer division guards zero and INT_MIN / -1;
* a primitive without an entry is reported by `missing_lowerings()` and by `lower_graph` with a
  CompileError naming it (the coverage test walks graphad.prims.PRIMITIVES).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import CompileError
from ..prims.linalg import lone_axes
from ._tvm import load_tvm
from .index_check import checked_indices
from .rare_path import rare

LOWERINGS: dict[str, Callable] = {}


def lowering(*names: str):
    """Register the decorated function as the lowering of primitives `names`."""
    def deco(fn):
        for n in names:
            if n in LOWERINGS:
                raise ValueError(f"lowering for {n!r} registered twice")
            LOWERINGS[n] = fn
        return fn
    return deco


def missing_lowerings() -> list[str]:
    """Names of registered primitives that have no Relax lowering."""
    from ..prims import PRIMITIVES
    return sorted(n for n in PRIMITIVES if n not in LOWERINGS)


def get_lowering(node) -> Callable:
    fn = LOWERINGS.get(node.prim.name)
    if fn is None:
        have = ", ".join(sorted(LOWERINGS))
        raise CompileError(f"primitive {node.prim.name!r} has no TVM lowering ({node.describe()}); "
                           f"add one to graphad/lowering/relax_ops.py (lowered: {have}) "
                           f"or run with backend='numpy'")
    return fn


class LowerContext:
    """What a lowering function may use: the builder, typed constants and TE emission."""

    def __init__(self, bb):
        tvm = load_tvm()
        self.tvm = tvm
        self.relax = tvm.relax
        self.R = tvm.relax.op
        self.te = tvm.te
        self.tir = tvm.tirx
        self.bb = bb
        # value id -> the Relax var of the tensor it is the last-two-axes transpose of, for the
        # transposes lowering/__init__._lhs_transposes leaves to the matmuls that read them
        self.lhs_transposed: dict[int, object] = {}
        self._te_memo: dict = {}  # emit_te's: key -> (PrimFunc GlobalVar, call_tir's output type(s))
        self._call_tir = tvm.ir.Op.get("relax.call_tir")
        # whether the graph holds bfloat16 or float16 values (set by the lowering of a graph):
        # kernels with let-bound bodies then stay unfused (`_heavy`)
        self.half_types = True
        # whether long float sums and products are summed in stages (`_staged_sum`): on a CPU,
        # whose reducers keep one running sum per output; a GPU's reductions add in a tree
        self.stage_sums = True

    def emit(self, expr):
        return self.bb.emit(expr)

    def const(self, value, dtype: str):
        """A Relax constant with an explicit dtype (scalar or array)."""
        arr = np.array(value, dtype=np.dtype(dtype), order="C")  # (ascontiguousarray makes 0-d 1-d)
        return self.relax.const(arr, dtype=dtype)

    def emit_te(self, fn, *args, name: str, attrs: dict | None = None):
        """Emit `fn(*te_tensors) -> te.Tensor` as a call_tir to a PrimFunc made by TE (with the
        PrimFunc attributes `attrs`).

        A call whose TE function is one made before (the same code, and closure values of
        `_te_key`'s plain kinds) on arguments of the same types calls that PrimFunc again: TE and
        create_prim_func cost about 0.5 ms a call, and a 64-layer MLP gradient made 128 of them for
        a handful of distinct kernels. A function whose closure holds anything else (a TIR
        expression, a tensor, the context) is always made anew."""
        key = _te_key(fn, args, name)
        if key is not None and attrs:
            key = (key, tuple(sorted(attrs.items())))
        if key is not None:
            hit = self._te_memo.get(key)
            if hit is not None:
                gv, sinfo = hit
                return self.bb.emit(self.relax.call_tir(gv, self.relax.Tuple(list(args)), sinfo))
        out = self.bb.emit_te(fn, *args, primfunc_name_hint=name, primfunc_attrs=attrs)
        if key is not None:
            call = self.bb.lookup_binding(out)
            if isinstance(call, self.relax.Call) and len(call.args) == 2 and call.op.same_as(self._call_tir):
                tys = list(call.ty_args)
                self._te_memo[key] = (call.args[0], tys[0] if len(tys) == 1 else tys)
        return out

    def tconst(self, value, dtype: str):
        """A TIR scalar constant of `dtype` (value converted the way NumPy's astype does)."""
        v = np.asarray(value).astype(np.dtype(dtype)).item()
        if dtype == "bool":
            return self.tir.const(bool(v), "bool")
        if _is_float(dtype):  # x - (-0.0) and x * 0.0 must not fold when this value is inlined
            from .ieee import opaque_float
            return opaque_float(v, dtype)
        return self.tir.const(v, dtype)


_PLAIN = (bool, int, str, bytes, type(None))


def _te_value_key(v, depth: int):
    """A hashable stand-in for a closure value that decides a TE function's output, or None where
    it cannot be vouched for (then the call is not memoized)."""
    import types
    if isinstance(v, _PLAIN):
        return (type(v).__name__, v)
    if isinstance(v, (float, np.floating)):
        return (type(v).__name__, repr(v))  # repr keeps -0.0 apart from 0.0
    if isinstance(v, np.integer):
        return (type(v).__name__, int(v))
    if isinstance(v, (tuple, list)):
        keys = tuple(_te_value_key(e, depth) for e in v)
        return None if any(k is None for k in keys) else (type(v).__name__, keys)
    if isinstance(v, types.ModuleType):
        return ("module", v.__name__)
    if isinstance(v, types.FunctionType):
        return _te_fn_key(v, depth + 1)
    return None


def _te_fn_key(fn, depth: int = 0):
    """(code, closure and default keys) of a Python function, or None (see _te_value_key)."""
    import types
    if depth > 4 or not isinstance(fn, types.FunctionType):
        return None
    parts = [fn.__code__]
    for v in (fn.__defaults__ or ()) + tuple((fn.__kwdefaults__ or {}).items()):
        k = _te_value_key(v, depth)
        if k is None:
            return None
        parts.append(k)
    for cell in fn.__closure__ or ():
        try:
            k = _te_value_key(cell.cell_contents, depth)
        except ValueError:  # an empty cell
            return None
        if k is None:
            return None
        parts.append(k)
    return tuple(parts)


def _te_key(fn, args, name: str):
    """emit_te's memo key: the function's key and each argument's Relax type (every argument a
    Relax variable of a static tensor type), or None."""
    from ._tvm import load_tvm
    relax = load_tvm().relax
    types = []
    for a in args:
        if not isinstance(a, relax.Var):
            return None
        types.append(str(a.ty))
    fk = _te_fn_key(fn)
    return None if fk is None else (name, fk, tuple(types))


def _is_float(d: str) -> bool:
    return d in ("float16", "bfloat16", "float32", "float64")


def _ity(i) -> str:
    """dtype of a TIR index expression."""
    return str(i.ty)


def _dt(v) -> str:
    """TVM dtype string of a graph value."""
    return v.type.dtype.name


def _out(node, i: int = 0) -> str:
    return node.outputs[i].type.dtype.name


# ---------------------------------------------------------------- unary elementwise

_SIMPLE_UNARY = {
    "neg": "negative", "abs": "abs", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "square": "square", "tan": "tan", "floor": "floor",
}


def _simple_unary(relax_name):
    def lower(cx, node, x):
        return getattr(cx.R, relax_name)(x)
    lower.__name__ = f"lower_{relax_name}"
    lower.__doc__ = f"Relax {relax_name}"
    return lower


for _g, _r in _SIMPLE_UNARY.items():
    lowering(_g)(_simple_unary(_r))


# exp, tanh, sigmoid and erf: in float32 TVM's own polynomial kernels (topi.fast_exp with a two-part
# reduction, below; fast_tanh / fast_erf; vectorizable); LLVM turns llvm.exp.v16f32 into 16 scalar
# libm calls, 8x slower, and the default float32 tanh returns 0 for |x| < ~1e-20. float64 keeps the
# exact libm-based Relax operators.
#
# Half types never reach the float32 algorithms of this file: lowering/bf16.py computes these
# functions (bf16.IN_F64) of float16 and bfloat16 in float64 and rounds the result once
# (`_f64_to_f32_odd`); float32's accuracy, rounded to float32 and then to the half type, rounded
# the wrong way where the float32 value fell on a half-type tie (tests/test_half_exhaustive.py).

def _fast_f32(d: str) -> bool:
    return d == "float32"


def _fast_unary_te(cx, node, x, make, name):
    """Emit make(te_tensor_f32) -> te_tensor_f32 for a float32 x."""
    te, topi = cx.te, cx.tvm.topi

    tir = cx.tir

    def f(t):
        p = make(t, te, topi, tir)
        # NaN in, NaN out: the polynomials clamp their argument first, and CUDA's fmaxf/fminf
        # (unlike LLVM's x86 max) return the non-NaN operand, so fast_exp(nan) would be finite
        return te.compute(t.shape, lambda *i: tir.Select(tir.isnan(t(*i)), t(*i), p(*i)), name=name + "_nan")
    return cx.emit_te(f, x, name=name)


# topi.fast_exp forms 2^n with n = round(x log2 e): n = 128 overflows for 88.376 < x <= 88.723,
# where e^x is still finite. There e^x is taken as e^(x - 64) * e^64 (x - 64 is exact in float32
# there; the product adds one rounding and overflows where e^x does). One fast_exp either way.
_EXP_SHIFT_ABOVE = 88.0
_EXP_SHIFT = 64.0
_E64 = float(np.float32(np.exp(64.0)))


# topi.fast_exp (include/tvm/topi/elemwise.h, fast_exp_float32) is Cephes' expf but for its
# reduction by ln 2: it subtracts n * ln2 with ln2 one float32, and where that product is rounded
# (a target without FMA: generic x86-64) its results were up to 68 ulp off for |x| in the tens,
# 4.4 ulp where LLVM fuses it into an FMA (this project's AVX-512 Xeon). `_fast_exp` is the same
# stage with Cephes' two-part reduction (ln 2 = _LN2_HI + _LN2_LO, n * _LN2_HI exact): 1.9 ulp at
# most on both (sigmoid 2.3, was 5.3), tests/test_exp_lowering.py.
_FAST_EXP_HI, _FAST_EXP_LO = 88.3762626647950, -88.3762626647949
_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_FAST_EXP_POLY = (1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1,
                  5.0000001201E-1)


def _fast_exp(a, te, tir):
    """topi.fast_exp(a) for a float32 tensor, operation for operation, with the two-part reduction
    (above): a stage of its own named as topi's, an expression tree as topi's (no Lets)."""
    def c(v):
        return tir.const(float(np.float32(v)), "float32")

    def body(*i):
        x = tir.max(tir.min(a(*i), c(_FAST_EXP_HI)), c(_FAST_EXP_LO))
        n = tir.floor(x * c(_LOG2E) + c(0.5))
        f = x - n * c(_LN2_HI) - n * c(_LN2_LO)
        y = c(_FAST_EXP_POLY[0])
        for coef in _FAST_EXP_POLY[1:]:
            y = y * f + c(coef)
        y = y * f * f + f + c(1.0)
        ef = tir.reinterpret("float32", tir.shift_left((n + c(127.0)).astype("int32"), tir.const(23, "int32")))
        return tir.max(ef * y, a(*i))
    return te.compute(a.shape, body, name="T_fast_exp", tag="elemwise")


def _exp_f32(t, te, topi, tir):
    big = tir.const(_EXP_SHIFT_ABOVE, "float32")
    arg = te.compute(t.shape, lambda *i: tir.Select(t(*i) > big, t(*i) - tir.const(_EXP_SHIFT, "float32"), t(*i)),
                     name="exp_arg")
    e = _fast_exp(arg, te, tir)
    return te.compute(t.shape, lambda *i: tir.Select(t(*i) > big, e(*i) * tir.const(_E64, "float32"), e(*i)),
                      name="exp_big")


@lowering("exp")
def _exp(cx, node, x):
    """TE: float32 polynomial (Cephes expf, shifted near overflow); float64 Relax exp"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.exp(x)
    return _fast_unary_te(cx, node, x, _exp_f32, "exp")


# erfc for float32, vectorizable: for a = |x| and
# t = 1 / (1 + a/2), erfc(a) = t * exp(-a^2 + P(2t - 1)) (the form of Numerical Recipes' erfcc,
# whose degree-9 P was good to 1.2e-7) with P of degree 15 fitted here by least squares to
# mpmath's log(erfc(a) / t) + a^2 on 600 Chebyshev nodes of t in (0, 1], x in [0, inf): within
# 1.1e-10 of it over the whole range, so the result's relative error is that of the float64
# arithmetic (a float32 x squares exactly in float64). x < 0: 2 - erfc(-x). The exponential is
# float64 Cody-Waite (ln 2 in two parts) and Taylor's series to degree 11 (|r| <= ln 2 / 2:
# 6e-15), 2^k by its bits; its argument is clamped at -200, far below float32's smallest
# subnormal, e^-103.3. One formula, no call: the C library's erfcf, per element, kept every
# kernel with a gelu scalar (a transformer block's gradient spent 14% of its time there).
_ERFC_P = (-0.6717940841603576, 0.6726432239564833, 0.04734332036738087, -0.04689560948547655,
           -0.009872980459293967, 0.008824933282051623, 0.0017613393645251052, -0.002345825840339264,
           -0.00015613427258906465, 0.0006739603544014877, -7.119731392016271e-05, -0.0001755877633417228,
           4.179589746580725e-05, 3.4692386099052895e-05, -8.121255427484542e-06, -3.725150739242059e-06)
_LN2_HI_F64 = 6.93147180369123816490e-01  # fdlibm's: its low 32 bits are 0, so k * it is exact
_LN2_LO_F64 = 1.90821492927058770002e-10
_ERFC_EXP_MIN = -200.0
_ROUND_F64 = 6755399441055744.0  # 1.5 * 2^52: adding it rounds a float64 below 2^51 to an integer


def _exp_f64(tir, lets, c, arg, degree: int):
    """e^arg of a float64 TIR expression `arg` (bound once by the caller) in [-1022 ln 2, 1023
    ln 2], without a call: Cody-Waite (arg = k ln 2 + r, ln 2 in two parts, |r| <= ln 2 / 2),
    Taylor's series of e^r to `degree` (11: 6e-15, 13: 4e-18), 2^k by its bits. `c` makes the
    float64 constants (the caller's: _TirMath's are opaque)."""
    k = lets.bind(tir.floor(arg * c(1.4426950408889634) + c(0.5)), "float64")
    r = lets.bind(arg - k * c(_LN2_HI_F64) - k * c(_LN2_LO_F64), "float64")
    return _exp_f64_reduced(tir, c, k, r, degree)


def _exp_f64_reduced(tir, c, k, r, degree: int):
    """2^k e^r for float64 TIR values k (an integer in [-1022, 1023]) and r (|r| <= ln 2 / 2, both
    bound by the caller): Taylor's series of e^r to `degree`, 2^k by its bits."""
    p = c(1.0 / math.factorial(degree))
    for n in range(degree - 1, -1, -1):
        p = p * r + c(1.0 / math.factorial(n))
    # k's bits without a float-to-int64 conversion, which x86 has no vector instruction for
    # before AVX-512 (LLVM made it 8 scalar conversions per loop step): k + 1.5 * 2^52 is exact and
    # has k in its low bits (two's complement, |k| < 2^51), and the shift by 52 drops the rest
    kbits = tir.reinterpret("int64", k + c(_ROUND_F64))
    return p * tir.reinterpret("float64", tir.shift_left(kbits + tir.const(1023, "int64"), tir.const(52, "int64")))


def _erfc_algorithm(m, x):
    """erfc of a float64 TIR expression `x` (the value of a float32 element), in the
    let-bound form of _TirMath (each shared value bound once: as trees, the Horner steps would
    repeat t's division 15 times)."""
    tir, c = m.tir, m.const
    a = m.bind(m.abs(x))
    u = m.bind(c(1.0) / (c(1.0) + a * c(0.5)))
    s = m.bind(u * c(2.0) - c(1.0))
    p = c(_ERFC_P[-1])
    for coef in reversed(_ERFC_P[:-1]):
        p = p * s + c(coef)
    q = m.bind(p - a * a)
    arg = m.bind(m.select(q > c(_ERFC_EXP_MIN), q, c(_ERFC_EXP_MIN)))  # (NaN: the bound, no NaN to int)
    e = m.bind(u * _exp_f64(tir, m, c, arg, 11))
    return m.wrap(m.select(x < c(0.0), c(2.0) - e, e))


@lowering("erfc")
def _erfc(cx, node, x):
    """TE: float32 t e^(-x^2 + P(t)) in float64 (P fitted to mpmath's erfc); float64 libm erfc"""
    d = _dt(node.inputs[0])
    if d == "float64":
        tir = cx.tir
        return _elementwise_te(cx, node, x, lambda v, dd: tir.call_pure_extern(dd, "erfc", v), "erfc",
                               attrs=_OPAQUE_ATTRS)
    return _in_f64_te(cx, node, x, _erfc_algorithm, "erfc")


@lowering("tanh")
def _tanh(cx, node, x):
    """TE: float32 polynomial (topi.fast_tanh); float64 libm tanh"""
    d = _dt(node.inputs[0])
    if d == "float64":
        # TVM's LLVM rule computes tanh as (1 - e^-2x) / (1 + e^-2x): it cancels for small |x|
        # (tanh(1e-8) 1e7 ulp off, tanh(-0.0) = +0.0). libm's tanh is exact to an ulp.
        tir = cx.tir
        return _elementwise_te(cx, node, x, lambda v, dd: tir.call_pure_extern(dd, "tanh", v), "tanh")
    if not _fast_f32(d):
        return cx.R.tanh(x)
    return _fast_unary_te(cx, node, x, lambda t, te, topi, tir: _tiny_linear(t, topi.fast_tanh(t), 1.0, te, tir),
                          "tanh")


# Below 2^-12, tanh(x) and erf(x) are x and (2 / sqrt(pi)) x to float32's precision (the next term
# is x^2 / 3 relative, under 2^-25). The polynomials lose bits where their intermediates are
# subnormal: tanh(1.2e-38) 28 ulp off, erf 23 (an ieee trial); the linear term is within an ulp.
_TINY = 2.0 ** -12


def _tiny_linear(t, p, slope: float, te, tir):
    """p, except slope * t where |t| < 2^-12 (t itself for slope 1, -0.0 kept)."""
    def at(*i):
        v = t(*i)
        lin = v if slope == 1.0 else v * tir.const(slope, "float32")
        return tir.Select(tir.abs(v) < tir.const(_TINY, "float32"), lin, p(*i))
    return te.compute(t.shape, at, name="tiny_linear")


@lowering("sigmoid")
def _sigmoid(cx, node, x):
    """TE: float32 1 / (1 + e^-x) (Cephes expf); float64 Relax sigmoid"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.sigmoid(x)

    def make(t, te, topi, tir):  # 1 / (1 + e^-x): relative accuracy kept for large negative x
        e = _fast_exp(te.compute(t.shape, lambda *i: -t(*i), name="neg"), te, tir)
        one = tir.const(1.0, "float32")
        return te.compute(t.shape, lambda *i: one / (one + e(*i)), name="sigmoid")
    return _fast_unary_te(cx, node, x, make, "sigmoid")


@lowering("erf")
def _erf(cx, node, x):
    """TE: float32 polynomial (topi.fast_erf); float64 Relax erf"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.erf(x)

    return _fast_unary_te(cx, node, x, lambda t, te, topi, tir: _tiny_linear(t, topi.fast_erf(t), _TWO_OVER_SQRT_PI,
                                                                               te, tir), "erf")


_TWO_OVER_SQRT_PI = 1.1283791670955126


# sin and cos in float32: Cody-Waite reduction by pi with a four-part constant and SLEEF's
# degree-9 odd polynomial (xsinf_u35), vectorizable, within 3.5 ulp for |x| < 1.25e5. From
# |x| >= 2^16 on, where that reduction runs out of bits, the element is the C library's sinf /
# cosf (glibc: within 0.55 ulp over the whole range; NumPy's float32 sin is that function above
# about 1e6, its own SIMD code below, within 1.3 ulp there): a call
# that the kernel makes only for such elements (rare_path.py), so that the kernel holds no exact
# reduction of its own to compile (it was a table-driven Payne-Hanek in float64, vectorized, 45 of
# the hvp kernel's 80 ms of TIR passes and LLVM). float64 keeps libm.
_PI_PARTS = (3.140625, 0.0009670257568359375, 6.2771141529083251953e-07, 1.2154201256553420762e-10)
_SIN_POLY = (2.6083159809786593541503e-06, -0.0001981069071916863322258, 0.00833307858556509017944336,
             -0.166666597127914428710938)
_BIG_REDUCTION_FROM = 65536.0


def _sincos_f32(t, te, tir, cosine: bool):
    f32 = "float32"

    def c(v):
        return tir.const(v, f32)

    def let(name, dtype, value, body):
        """body(v) with v bound once to value (a Let: the tree would repeat value at every use)."""
        v = tir.Var(name, dtype)
        return tir.Let(v, value, body(v))

    def small(x):
        # Cody-Waite: sin: x = q pi + r (flip when q odd); cos: x = q pi/2 + r, q odd (flip when q = 1 mod 4)
        if cosine:
            q0 = c(2.0) * tir.round(x * c(0.3183098861837907) - c(0.5)) + c(1.0)
        else:
            q0 = tir.round(x * c(0.3183098861837907))

        def with_q(q):
            r = x
            for part in _PI_PARTS:
                r = r - q * c(part * 0.5 if cosine else part)
            if cosine:
                flip = q - c(4.0) * tir.floor(q * c(0.25)) == c(1.0)
            else:
                flip = q - c(2.0) * tir.floor(q * c(0.5)) == c(1.0)
            return poly(x, r, flip)
        return let("q", f32, q0, with_q)

    def poly(x, r, flip):
        def with_r(rv):
            s = rv * rv
            u = c(_SIN_POLY[0])
            for coef in _SIN_POLY[1:]:
                u = u * s + c(coef)
            p = rv + rv * s * u
            if not cosine:  # x - q * pi gives +0 for x = -0 (q = -0): sin(-0.0) must stay -0.0
                p = tir.Select(x == c(0.0), x, p)

            def with_p(pv):  # (bound once: the flip's two branches would each hold the polynomial)
                v = tir.Select(flip, -pv, pv)
                v = tir.Select(tir.isinf(x), c(float("nan")), v)  # sin(+-inf) = cos(+-inf) = NaN

                def clamp(w):
                    return tir.Select(w > c(1.0), c(1.0), tir.Select(w < c(-1.0), c(-1.0), w))
                return let("v", f32, v, clamp)
            return let("p", f32, p, with_p)
        return let("r", f32, r, with_r)

    def huge(x):
        # marked rare: the call is then made only for the elements that need it, and the vector
        # code of the others holds no call (rare_path.py). Not for +-inf, which `poly` turns into
        # NaN: an infinite element (a mask, padding) must not send its vector down the slow path.
        a = tir.abs(x)
        return rare(load_tvm(), tir.And(a >= c(_BIG_REDUCTION_FROM), a < c(float("inf"))))

    def body(*i):
        def with_x(x):
            exact = tir.call_pure_extern(f32, "cosf" if cosine else "sinf", x)
            return tir.Select(huge(x), exact, small(x))
        return let("x", f32, t(*i), with_x)
    return te.compute(t.shape, body, name="cos" if cosine else "sin")


def _sincos_lowering(cx, node, x, cosine: bool):
    """float32 sin/cos."""
    name = "cos" if cosine else "sin"
    te, tir = cx.te, cx.tir

    def f(t):
        p = _sincos_f32(t, te, tir, cosine)
        return te.compute(t.shape, lambda *i: tir.Select(tir.isnan(t(*i)), t(*i), p(*i)), name=name + "_nan")
    return cx.bb.emit_te(f, x, primfunc_name_hint=name, primfunc_attrs=_heavy(cx))


@lowering("sin")
def _sin(cx, node, x):
    """TE: float32 Cody-Waite reduction and SLEEF polynomial; float64 Relax sin"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.sin(x)
    return _sincos_lowering(cx, node, x, False)


@lowering("cos")
def _cos(cx, node, x):
    """TE: float32 Cody-Waite reduction and SLEEF polynomial; float64 Relax cos"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.cos(x)
    return _sincos_lowering(cx, node, x, True)


@lowering("sign")
def _sign(cx, node, x):
    """TE: NaN-propagating select (integers: Relax sign; complex: z / |z| on the real/imaginary pair, passes/complex_split.py)"""
    if not _is_float(_dt(node.inputs[0])):
        return cx.R.sign(x)
    tir = cx.tir

    def body(v, d):  # sign(nan) is nan
        one, zero = tir.const(1, d), tir.const(0, d)
        return tir.Select(tir.isnan(v), v, tir.Select(v > zero, one, tir.Select(v < zero, -one, zero)))
    return _elementwise_te(cx, node, x, body, "sign")


@lowering("reciprocal")
def _reciprocal(cx, node, x):
    """Relax divide 1 / x"""
    return cx.R.divide(cx.const(1, _dt(node.inputs[0])), x)


@lowering("relu")
def _relu(cx, node, x):
    """TE: NaN-propagating max(x, 0) (integers: Relax maximum)"""
    if not _is_float(_dt(node.inputs[0])):
        return cx.R.maximum(x, cx.const(0, _dt(node.inputs[0])))
    tir = cx.tir  # NumPy's maximum(nan, 0) is nan; TIR's max drops a NaN first operand
    return _elementwise_te(cx, node, x, lambda v, d: tir.Select(tir.isnan(v), v, tir.max(v, tir.const(0, d))),
                           "relu")


@lowering("logical_not")
def _logical_not(cx, node, x):
    """Relax logical_not (numbers: x == 0)"""
    d = _dt(node.inputs[0])
    if d == "bool":
        return cx.R.logical_not(x)
    return cx.R.equal(x, cx.const(0, d))  # NumPy: logical_not(x) == (x == 0)


@lowering("signbit")
def _signbit(cx, node, x):
    """TE: the float's bits as the integer of its width, < 0 (-0.0 and a NaN's sign included; bfloat16 arrives widened to float32, exactly); integers: Relax x < 0; bool: false"""
    d = _dt(node.inputs[0])
    if not _is_float(d):
        # (bool: x and not x, false; not_equal(x, x) on bools met an LLVM verifier error)
        return cx.R.logical_and(x, cx.R.logical_not(x)) if d == "bool" else cx.R.less(x, cx.const(0, d))
    tir, te = cx.tir, cx.te
    bits = {"float16": "int16", "bfloat16": "int16", "float32": "int32", "float64": "int64"}[d]

    def f(t):
        return te.compute(t.shape, lambda *i: tir.reinterpret(bits, t(*i)) < tir.const(0, bits), name="signbit")
    return cx.emit_te(f, x, name="signbit")


@lowering("stop_gradient")
def _identity(cx, node, x):
    """no code (the operand itself)"""
    return x


def _float_compute_dtype(d: str) -> str:
    """Half-precision transcendental TE code is evaluated in float32."""
    return "float32" if d in ("float16", "bfloat16") else d


def _elementwise_te(cx, node, x, body, name, attrs: dict | None = None):
    """Emit y[i] = body(x[i]) as TE, computing half types in float32 (`attrs`: the PrimFunc's)."""
    d = _dt(node.inputs[0])
    cd = _float_compute_dtype(d)
    te = cx.te

    def f(t):
        def elem(*idx):
            v = t(*idx)
            if cd != d:
                v = v.astype(cd)
            r = body(v, cd)
            return r.astype(d) if cd != d else r
        return te.compute(t.shape, elem, name=name)
    return cx.emit_te(f, x, name=name, attrs=attrs)


# log in float32, vectorizable: Cephes' logf. x = m 2^e with m in [sqrt(1/2), sqrt 2) read off the
# bits (subnormals scaled by 2^23 first), log x = (m - 1) + a degree-8 polynomial in m - 1 times
# (m - 1)^3 - (m - 1)^2 / 2 + e ln 2 with ln 2 in two parts; Cephes documents a peak relative error
# of 7.6e-8 (about 1.3 ulp) over (0, inf). The C library's logf, called per element, kept every
# kernel with a log scalar (6.6x JAX's log over 2^18 elements). float64 keeps libm's log.
_LOGF_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
              -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
_SQRTHF = 0.707106781186547524
_F32_MIN_NORMAL = 1.1754943508222875e-38


class _Lets:
    """Let-bound names for the values a TE body uses several times (TIR expressions are trees: a
    value read at k places is computed k times, and the polynomials read theirs at every step; a
    chain of such values, Newton steps, grows exponentially: erfinv's kernel was 40 MB of TIR)."""

    def __init__(self, tir):
        self.tir, self.bindings = tir, []

    def bind(self, v, dtype: str = "float64"):
        """A let-bound name for v (of `dtype`), bound around the body by `wrap`."""
        var = self.tir.Var(f"t{len(self.bindings)}", dtype)
        self.bindings.append((var, v))
        return var

    def wrap(self, r):
        for var, v in reversed(self.bindings):
            r = self.tir.Let(var, v, r)
        self.bindings = []
        return r


def _log_f32_parts(tir, lets, x):
    """(m - 1, its square, e as float32) of a positive finite float32 `x` (Cephes' frexp step)."""
    f32, i32 = "float32", "int32"

    def c(v):
        return tir.const(float(np.float32(v)), f32)

    def ci(v):
        return tir.const(v, i32)
    # (the conditions stay expressions: a bool Let vectorized in a kernel beside other Lets made
    # TVM's passes build an IntImm of a bool vector and stop)
    sub = x < c(_F32_MIN_NORMAL)
    bits = lets.bind(tir.reinterpret(i32, tir.Select(sub, x * c(8388608.0), x)), i32)
    m = lets.bind(tir.reinterpret(f32, tir.bitwise_or(tir.bitwise_and(bits, ci(0x007FFFFF)), ci(0x3F000000))), f32)
    small = m < c(_SQRTHF)
    e = tir.bitwise_and(tir.shift_right(bits, ci(23)), ci(0xFF)) - ci(126) - tir.Select(sub, ci(23), ci(0)) \
        - tir.Select(small, ci(1), ci(0))
    xm = lets.bind(tir.Select(small, m + m - c(1.0), m - c(1.0)), f32)
    return xm, lets.bind(xm * xm, f32), lets.bind(e.astype(f32), f32)


def _log_f32(tir, lets, x, base: str = "e"):
    """log (base "e"), log2 ("2") or log10 ("10") of a float32 TIR expression `x` (Cephes' logf,
    log2f, log10f: the constants of each are split so that e's part and m - 1's leading part are
    exact), NaN, +-0, negatives and inf as C's."""
    f32 = "float32"

    def c(v):
        return tir.const(float(np.float32(v)), f32)
    xm, z, ef = _log_f32_parts(tir, lets, x)
    y = c(_LOGF_POLY[0])
    for coef in _LOGF_POLY[1:]:
        y = y * xm + c(coef)
    y = lets.bind(y * xm * z - z * c(0.5), f32)  # log(m) - (m - 1)
    if base == "e":
        r = xm + (y + ef * c(-2.12194440e-4)) + ef * c(0.693359375)
    elif base == "2":  # log2 e - 1 = LOG2EA: e + x + y + (x + y) LOG2EA, exact at powers of 2
        r = ef + (xm + (y + (y * c(0.44269504088896340736) + xm * c(0.44269504088896340736))))
    else:  # log10: log10 e = L10EA + L10EB, log10 2 = L102A + L102B
        r = (y * c(7.00731903251827651129e-4) + xm * c(7.00731903251827651129e-4) + ef * c(2.48745663981195213739e-4)
             + y * c(4.3359375e-1) + xm * c(4.3359375e-1) + ef * c(3.0078125e-1))
    r = tir.Select(x == c(math.inf), x, r)
    r = tir.Select(x == c(0.0), c(-math.inf), r)
    r = tir.Select(x < c(0.0), c(math.nan), r)
    return tir.Select(tir.isnan(x), x, r)


def _in_f32_te(cx, node, x, alg, name):
    """Emit y = alg(tir, _Lets, float32 x) for a float32 x (`_let_bound_te`)."""
    tir = cx.tir

    def body(v, d):
        lets = _Lets(tir)
        return lets.wrap(alg(tir, lets, v))
    return _let_bound_te(cx, node, x, body, name)


@lowering("log")
def _log(cx, node, x):
    """TE: float32 Cephes logf (vectorizable); float64 Relax log"""
    if not _fast_f32(_dt(node.inputs[0])):
        return cx.R.log(x)
    return _in_f32_te(cx, node, x, _log_f32, "log")


def _log_base(base: str):
    def lower(cx, node, x):
        if not _fast_f32(_dt(node.inputs[0])):
            return _libm_unary(f"log{base}", "")(cx, node, x)
        return _in_f32_te(cx, node, x, lambda tir, lets, v: _log_f32(tir, lets, v, base), f"log{base}")
    lower.__name__ = f"lower_log{base}"
    lower.__doc__ = f"TE: float32 Cephes log{base}f (vectorizable); float64 libm log{base}, a kernel of its own"
    return lower


lowering("log2")(_log_base("2"))
lowering("log10")(_log_base("10"))


def _log1p_f32(tir, lets, x):
    # Goldberg's log1p: u = 1 + x rounded; log(u) * x / (u - 1) corrects for that rounding (the
    # quotient x / (u - 1) is exact to an ulp), x itself where u == 1; inf stays inf
    f32 = "float32"
    one = tir.const(1.0, f32)
    u = lets.bind(one + x, f32)
    lg = lets.bind(_log_f32(tir, lets, u), f32)
    r = tir.Select(u == one, x, lg * (x / (u - one)))
    return tir.Select(x == tir.const(math.inf, f32), x, r)


@lowering("log1p")
def _log1p(cx, node, x):
    """TE: float32 Goldberg's log(1 + x) x / ((1 + x) - 1) on Cephes' logf; float64 TIR log1p"""
    if _fast_f32(_dt(node.inputs[0])):
        return _in_f32_te(cx, node, x, _log1p_f32, "log1p")
    tir = cx.tir
    return _elementwise_te(cx, node, x, lambda v, d: tir.log1p(v), "log1p")


def _expm1_f32(tir, lets, x):
    # fdlibm's shape on Cephes' expf: x = n ln 2 + f (two-part ln 2, |f| <= ln 2 / 2),
    # e^f - 1 = f + f^2 P(f) without adding the 1, then e^x - 1 = 2^n (e^f - 1) + (2^n - 1) (2^n - 1
    # exact for these n). Below -17, e^x < 2^-24: -1. Above 88, where 2^n would overflow before
    # e^x does, e^x itself (Cephes' shift, as `_exp_f32`; the 1 is below its ulp).
    f32, i32 = "float32", "int32"

    def c(v):
        return tir.const(float(np.float32(v)), f32)
    def reduced(v):  # (n, 2^n, e^f - 1) for v = n ln 2 + f, e^f - 1 = f + f^2 P(f)
        n = lets.bind(tir.floor(v * c(_LOG2E) + c(0.5)), f32)
        f = lets.bind(v - n * c(_LN2_HI) - n * c(_LN2_LO), f32)
        y = c(_FAST_EXP_POLY[0])
        for coef in _FAST_EXP_POLY[1:]:
            y = y * f + c(coef)
        two_n = tir.reinterpret(f32, tir.shift_left((n + c(127.0)).astype(i32), tir.const(23, i32)))
        return n, two_n, y * f * f + f
    n, two_n, em1 = reduced(tir.max(tir.min(x, c(88.0)), c(-17.0)))
    em1, two_n = lets.bind(em1, f32), lets.bind(two_n, f32)
    mid = tir.Select(n == c(0.0), em1, two_n * em1 + (two_n - c(1.0)))
    _, two_n2, em1_2 = reduced(tir.min(x, c(89.0)) - c(_EXP_SHIFT))  # (e^89 overflows: inf from 88.73 on)
    e2 = (em1_2 + c(1.0)) * two_n2 * c(_E64)
    r = tir.Select(x > c(88.0), e2, tir.Select(x < c(-17.0), c(-1.0), mid))
    # x itself for NaN, inf and +-0 (expm1(-0.0) is -0.0; f = x - 0 * ln 2 lost the sign)
    return tir.Select(tir.Or(tir.isnan(x), tir.Or(x == c(math.inf), x == c(0.0))), x, r)


@lowering("expm1")
def _expm1(cx, node, x):
    """TE: float32 2^n (e^f - 1) + (2^n - 1) on Cephes' expf polynomial; float64 Kahan's expm1"""
    if _fast_f32(_dt(node.inputs[0])):
        return _in_f32_te(cx, node, x, _expm1_f32, "expm1")
    # Kahan's accurate expm1: for |x| < 0.5, (u - 1) * x / log(u) with u = e^x cancels the rounding
    # error of u (x when u == 1); elsewhere e^x - 1 has no cancellation. Max error ~1 ulp (float64).
    tir = cx.tir

    def body(v, d):
        one = tir.const(1, d)
        u = tir.exp(v)
        um1 = u - one
        small = tir.Select(u == one, v, um1 * v / tir.log(u))
        return tir.Select(tir.abs(v) < tir.const(0.5, d), small, um1)
    return _elementwise_te(cx, node, x, body, "expm1")


# ---------------------------------------------------------------- binary elementwise

@lowering("add")
def _add(cx, node, a, b):
    """Relax add (bool: logical_or)"""
    return cx.R.logical_or(a, b) if _out(node) == "bool" else cx.R.add(a, b)


@lowering("sub")
def _sub(cx, node, a, b):
    """Relax subtract"""
    return cx.R.subtract(a, b)


@lowering("mul")
def _mul(cx, node, a, b):
    """Relax multiply (bool: logical_and)"""
    return cx.R.logical_and(a, b) if _out(node) == "bool" else cx.R.multiply(a, b)


def _nan_minmax(cx, node, a, b, which):
    """NumPy's maximum/minimum: NaN if either operand is NaN (TIR's max/min may drop it)."""
    tir = cx.tir
    op = tir.max if which == "max" else tir.min
    return _binary_te(cx, node, a, b,
                      lambda x, y: tir.Select(tir.Or(tir.isnan(x), tir.isnan(y)), x + y, op(x, y)), which + "imum")


@lowering("maximum")
def _maximum(cx, node, a, b):
    """TE: NaN-propagating max (integers: Relax maximum; bool: logical_or)"""
    d = _out(node)
    if d == "bool":
        return cx.R.logical_or(a, b)
    return _nan_minmax(cx, node, a, b, "max") if _is_float(d) else cx.R.maximum(a, b)


@lowering("minimum")
def _minimum(cx, node, a, b):
    """TE: NaN-propagating min (integers: Relax minimum; bool: logical_and)"""
    d = _out(node)
    if d == "bool":
        return cx.R.logical_and(a, b)
    return _nan_minmax(cx, node, a, b, "min") if _is_float(d) else cx.R.minimum(a, b)


def _broadcast_index(idx, in_shape, out_shape):
    """Index into an operand of `in_shape` broadcast (NumPy-style) to `out_shape`."""
    lead = len(out_shape) - len(in_shape)
    return [0 if n == 1 else idx[lead + i] for i, n in enumerate(in_shape)]


def _binary_te(cx, node, a, b, body, name, attrs: dict | None = None):
    """Emit out = body(a, b) elementwise with NumPy broadcasting, as TE (`attrs`: the PrimFunc's)."""
    te = cx.te
    sa, sb = node.inputs[0].type.shape, node.inputs[1].type.shape
    so = node.outputs[0].type.shape

    def f(ta, tb):
        return te.compute(so, lambda *i: body(ta(*_broadcast_index(i, sa, so)), tb(*_broadcast_index(i, sb, so))),
                          name=name)
    return cx.emit_te(f, a, b, name=name, attrs=attrs)


@lowering("div")
def _div(cx, node, a, b):
    """Relax divide; integers: TE truncating division guarded against 0 and INT_MIN / -1"""
    d = _out(node)
    if d.startswith("float") or d == "bfloat16":
        return cx.R.divide(a, b)
    if d == "bool":
        raise CompileError(f"div of bool tensors is not supported by the TVM backend ({node.describe()})")
    tir = cx.tir

    def body(x, y):
        # C (truncating) division, without the hardware trap: like the NumPy reference
        # (trunc(x / y) cast back), x / 0 gives INT_MIN and INT_MIN / -1 wraps to INT_MIN
        zero, one, m1 = tir.const(0, d), tir.const(1, d), tir.const(-1, d)
        int_min = tir.min_value(d)
        safe = tir.Select(tir.Or(y == zero, y == m1), one, y)
        q = tir.truncdiv(x, safe)
        return tir.Select(y == zero, int_min, tir.Select(y == m1, zero - x, q))
    return _binary_te(cx, node, a, b, body, "int_div")


# float32 pow in float64 arithmetic, without a call: |x|^y = e^(y log|x|), log|x| = e ln 2 +
# 2 atanh(s), s = (m - 1) / (m + 1) for |x| = m 2^e, m in [sqrt(1/2), sqrt 2) (|s| <= 0.1716, the
# series to s^19: relative error 3e-17), the exponential `_exp_f64` (4e-18). y log|x| is within
# about 1e-14 of the truth wherever the float32 result is neither 0 nor inf (|y log|x|| < 104), so
# the result, rounded once, is within 0.5 ulp but where float64's error meets a float32 tie: exact
# results (3^3, 2^-3, 4^0.5) come out exact. C's special cases (F.9.4.4) by selects. The C
# library's powf per element kept every kernel with a pow scalar.
_LOG_SERIES_TERMS = 10
KEEP_STAGE = "keep_"  # schedule.KEEP_PREFIX: a stage the scheduler never inlines


_F32_EXP_BOUND = 200.0  # |arguments| of float32 results' exponentials beyond this are 0 or inf anyway


def _f32_range(m, v):
    """v clamped to [-200, 200] (far beyond float32's exponent range: e^+-200 and 2^+-200 round to
    inf and 0 there; float64 computes them without overflow, and NaN stays out of the int bits)."""
    c = m.const
    return m.select(v > c(_F32_EXP_BOUND), c(_F32_EXP_BOUND), m.select(v < c(-_F32_EXP_BOUND), c(-_F32_EXP_BOUND), v))


def _log_f64(m, ax):
    """log of a float64 TIR value `ax` >= 0 (0: -inf, inf: inf; not for NaN or negatives, whose
    bits are read as some m 2^e), bound: e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1) for
    ax = m 2^e, m in [sqrt(1/2), sqrt 2), the series to s^19 (relative error 3e-17 in log m; to
    s^13 it was 1.3e-12, which a pow multiplies by y: float32 pow(1.4017395, 234.5797) came out
    0.5006 ulp off, arcsinh and arctanh 0.50001), the exponent read off the bits."""
    tir, c, f64, i64 = m.tir, m.const, "float64", "int64"
    bits = m.bind(tir.reinterpret(i64, ax), i64)
    # the biased exponent as a float64 without an int64 -> float64 conversion (no vector instruction
    # for it before AVX-512): its bits under 2^52's exponent, less 2^52
    efield = tir.reinterpret(f64, tir.bitwise_or(tir.shift_right(bits, tir.const(52, i64)),
                                                 tir.const(0x4330000000000000, i64))) - c(2.0 ** 52)
    m1 = m.bind(tir.reinterpret(f64, tir.bitwise_or(tir.bitwise_and(bits, tir.const((1 << 52) - 1, i64)),
                                                    tir.const(0x3FF0000000000000, i64))))  # in [1, 2)
    big = m1 > c(math.sqrt(2.0))
    mm = m.bind(m.select(big, m1 * c(0.5), m1))
    e = m.bind(efield - c(1023.0) + m.select(big, c(1.0), c(0.0)))
    sr = m.bind((mm - c(1.0)) / (mm + c(1.0)))
    s2 = m.bind(sr * sr)
    series = c(1.0 / (2 * _LOG_SERIES_TERMS - 1))
    for n in range(2 * _LOG_SERIES_TERMS - 3, 0, -2):
        series = series * s2 + c(1.0 / n)
    log_ax = e * c(math.log(2.0)) + c(2.0) * sr * series
    inf = c(math.inf)
    # 0 and inf give -inf and inf (their bits are no m 2^e)
    return m.bind(m.select(ax == c(0.0), c(-math.inf), m.select(ax == inf, inf, log_ax)))


def _pow_t_f32(tir, x, y):
    """y log|x| in float64 for float32 TIR expressions x, y (the first stage of `_pow_f32`)."""
    m = _TirMath(tir)
    xd, yd = m.bind(x.astype("float64")), m.bind(y.astype("float64"))
    return m.wrap(yd * _log_f64(m, m.bind(m.abs(xd))))


def _pow_f32(tir, x, y, t):
    """pow of two float32 TIR expressions, as C's powf, from t = y log|x| (`_pow_t_f32`, a stage of
    its own: the code generator's analyzer binds each Let, and the log's chain followed by the
    exponential's in one body took 0.7-0.9 s to compile, where each alone takes a few ms)."""
    m = _TirMath(tir)
    c, f64, i64 = m.const, "float64", "int64"
    xd, yd = m.bind(x.astype(f64)), m.bind(y.astype(f64))
    ax = m.bind(m.abs(xd))
    inf = c(math.inf)
    t = m.bind(t)
    r = m.bind(_exp_f64(tir, m, c, m.bind(_f32_range(m, t)), 11))
    half = m.bind(yd * c(0.5))
    y_int = m.floor(yd) == yd  # (conditions stay expressions: no bool Lets, see _log_f32_parts)
    y_odd = tir.And(y_int, m.floor(half) != half)
    # x's sign bit (-0.0 and -inf included) to an odd integer y: the result's sign
    signed = tir.reinterpret(i64, xd) < tir.const(0, i64)
    r = m.select(tir.And(signed, y_odd), c(0.0) - r, r)
    # a finite x < 0 to a non-integer y, a NaN x or y: NaN
    bad = tir.And(tir.And(xd < c(0.0), xd != c(-math.inf)), tir.Not(y_int))
    r = m.select(tir.Or(bad, tir.Or(m.isnan(xd), m.isnan(yd))), c(math.nan), r)
    # an infinite y: |x| = 1 gives 1 (t was inf * 0 = NaN); y == 0 or x == 1: 1, even for NaN
    one = c(1.0)
    r = m.select(tir.Or(tir.Or(yd == c(0.0), xd == one), tir.And(ax == one, m.abs(yd) == inf)), one, r)
    return m.wrap(r.astype("float32"))


@lowering("pow")
def _pow(cx, node, a, b):
    """TE: float32 e^(y log|x|) in float64 arithmetic without a call (vectorizable); Relax power for
    float64 (half types: in float64, lowering/bf16.py); integers: exact repeated squaring, int32
    wrapping (int_pow.py)"""
    d = _out(node)
    if d == "float32":
        tir, te = cx.tir, cx.te
        sa, sb, so = node.inputs[0].type.shape, node.inputs[1].type.shape, node.outputs[0].type.shape

        def f(ta, tb):
            def operands(i):
                return ta(*_broadcast_index(i, sa, so)), tb(*_broadcast_index(i, sb, so))
            t = te.compute(so, lambda *i: _pow_t_f32(tir, *operands(i)), name=KEEP_STAGE + "pow_log")
            return te.compute(so, lambda *i: _pow_f32(tir, *operands(i), t(*i)), name="pow")
        return cx.emit_te(f, a, b, name="pow", attrs=_heavy(cx))
    if d.startswith("float") or d == "bfloat16":
        return cx.R.power(a, b)
    if d == "bool":
        raise CompileError(f"pow of bool tensors is not supported by the TVM backend ({node.describe()})")
    from .int_pow import lower_int_pow
    return lower_int_pow(cx, node, a, b)


def _bitwise_lowering(int_name: str, bool_name: str):
    def lower(cx, node, a, b):
        return getattr(cx.R, bool_name if _out(node) == "bool" else int_name)(a, b)
    lower.__name__ = f"lower_{int_name}"
    lower.__doc__ = f"Relax {int_name} (bool: {bool_name})"
    return lower


lowering("bitwise_and")(_bitwise_lowering("bitwise_and", "logical_and"))
lowering("bitwise_or")(_bitwise_lowering("bitwise_or", "logical_or"))
lowering("bitwise_xor")(_bitwise_lowering("bitwise_xor", "logical_xor"))


def _shift_lowering(name: str):
    def lower(cx, node, a, n):
        # a shift by a count outside [0, bits) is undefined in TIR and LLVM (poison): the count
        # is clamped into range first and the out-of-range elements take NumPy's value after
        R, dtype = cx.R, _out(node)
        bits = np.dtype(dtype).itemsize * 8
        zero = cx.const(0, dtype)
        ok = cx.emit(R.logical_and(R.greater_equal(n, zero), R.less(n, cx.const(bits, dtype))))
        shifted = getattr(R, name)(a, cx.emit(R.where(ok, n, zero)))
        # right: the sign fill, a >> (bits - 1)
        out_of_range = zero if name == "left_shift" else R.right_shift(a, cx.const(bits - 1, dtype))
        return R.where(ok, shifted, out_of_range)
    lower.__name__ = f"lower_{name}"
    lower.__doc__ = f"Relax {name} with NumPy's value for a count outside [0, bits)"
    return lower


lowering("left_shift")(_shift_lowering("left_shift"))
lowering("right_shift")(_shift_lowering("right_shift"))


@lowering("equal")
def _equal(cx, node, a, b):
    """Relax equal (bool: not xor)"""
    if _dt(node.inputs[0]) == "bool":
        # TVM's codegen compares i1 operands with a float instruction (fcmp) and fails to compile
        return cx.R.logical_not(cx.R.logical_xor(a, b))
    return cx.R.equal(a, b)


@lowering("not_equal")
def _not_equal(cx, node, a, b):
    """Relax not_equal (bool: xor)"""
    if _dt(node.inputs[0]) == "bool":  # as _equal: no i1 comparison in the generated code
        return cx.R.logical_xor(a, b)
    return cx.R.not_equal(a, b)


for _g, _r in {"less": "less", "less_equal": "less_equal",
               "greater": "greater", "greater_equal": "greater_equal"}.items():
    def _mk(rn):
        def lower(cx, node, a, b):
            if _dt(node.inputs[0]) == "bool":  # False < True as integers; no i1 comparison (see _equal)
                a, b = cx.R.astype(a, "int8"), cx.R.astype(b, "int8")
            return getattr(cx.R, rn)(a, b)
        lower.__name__ = f"lower_{rn}"
        lower.__doc__ = f"Relax {rn} (bool operands as int8)"
        return lower
    lowering(_g)(_mk(_r))


@lowering("where")
def _where(cx, node, c, a, b):
    """Relax where"""
    return cx.R.where(c, a, b)


def _round_to_bfloat16(tir, v):
    """A float32 TIR expression rounded to bfloat16's precision (to nearest, ties to even, on the
    bits; NaN kept a NaN, quieted), still float32, then cast to bfloat16. TVM's bfloat16
    legalisation computes bfloat16 in float32 and turns a cast to bfloat16 inside a kernel into a
    cast to float32: the rounding of `astype(x, bfloat16)` fused into its consumers was dropped
    (astype(astype(1.0012207, bfloat16), float32) gave 1.0012207, NumPy and ml_dtypes 1.0). Rounded
    here, the value is one bfloat16 holds, and its casts, kept or dropped, are exact."""
    i32 = "int32"
    bits = tir.reinterpret(i32, v)
    high = tir.const(-65536, i32)  # 0xFFFF0000: the bits bfloat16 keeps
    lsb = tir.bitwise_and(tir.shift_right(bits, tir.const(16, i32)), tir.const(1, i32))
    rounded = tir.bitwise_and(bits + tir.const(0x7FFF, i32) + lsb, high)
    quiet = tir.bitwise_and(tir.bitwise_or(bits, tir.const(0x00400000, i32)), high)
    return tir.reinterpret("float32", tir.Select(tir.isnan(v), quiet, rounded)).astype("bfloat16")


def _f64_to_f32_odd(tir, v):
    """A float64 TIR expression rounded to float32 by round-to-odd: truncated toward zero, the last
    bit set where that was inexact; infinities, NaN and signed zeros kept, beyond float32's range
    its largest value, below its smallest subnormal that subnormal (signed). Rounded to float16 or
    bfloat16 after (to nearest), the value is v rounded once: float32 has more than two bits
    beyond them, and an odd last bit keeps a value off their ties. (float64 -> float32 -> half by
    nearest is two roundings: a value just above a half-type tie rounds to the tie, then to even.)"""
    i32 = "int32"
    t = v.astype("float32")  # to nearest
    back = t.astype("float64")
    bits = tir.reinterpret(i32, t)
    one = tir.const(1, i32)
    # rounded away from zero: one step back (the magnitude's bits; an int32 step either sign)
    trunc = tir.Select(tir.abs(back) > tir.abs(v), bits - one, bits)
    odd = tir.bitwise_or(trunc, one)
    inexact = tir.And(back != v, tir.Not(tir.isnan(v)))
    return tir.reinterpret("float32", tir.Select(inexact, odd, bits))


@lowering("astype")
def _astype(cx, node, x):
    """Relax astype (to bool: x != 0; float32/float64 to bfloat16, float64 to float16: TE, rounded
    once; float to int: NaN, infinities and values out of range give INT_MIN, as the reference)

    float32 to bfloat16 is rounded on the bits (`_round_to_bfloat16`), float64 to a half type by
    round-to-odd to float32 first (`_f64_to_f32_odd`)."""
    src, dst = _dt(node.inputs[0]), _out(node)
    if src == dst:
        return x
    if dst == "bool":  # NumPy: nonzero -> True (a plain cast would truncate 0.5 to False)
        return cx.R.not_equal(x, cx.const(0, src))
    tir = cx.tir
    if dst == "bfloat16" and src in ("float32", "float64"):  # (widen_bfloat16 leaves every cast to bfloat16 so)
        if src == "float64":
            return _elementwise_te(cx, node, x, lambda v, d: _round_to_bfloat16(tir, _f64_to_f32_odd(tir, v)),
                                   "f64_to_bfloat16")
        return _elementwise_te(cx, node, x, lambda v, d: _round_to_bfloat16(tir, v), "to_bfloat16")
    if dst == "float16" and src == "float64":
        return _elementwise_te(cx, node, x, lambda v, d: _f64_to_f32_odd(tir, v).astype("float16"), "f64_to_float16")
    if dst in ("int32", "int64") and src in ("float16", "bfloat16", "float32", "float64"):
        # LLVM's fptosi of NaN, an infinity or a value out of range is poison, which its folding of
        # a cast chain let through (float16 inf -> int32 -> float16 gave -2^31, an lowp trial): the
        # value converted is made safe first and such elements take the reference's INT_MIN
        # (prims.elementwise.float_to_int), compared in float64 (exact for every float source)
        R = cx.R
        lo = -(2 ** (np.dtype(dst).itemsize * 8 - 1))
        w = cx.emit(R.astype(x, "float64")) if src != "float64" else x
        ok = cx.emit(R.logical_and(R.greater_equal(w, cx.const(float(lo), "float64")),
                                   R.less(w, cx.const(-float(lo), "float64"))))
        safe = cx.emit(R.astype(R.where(ok, x, cx.const(0, src)), dst))
        return R.where(ok, safe, cx.const(lo, dst))
    return cx.R.astype(x, dst)


# ---------------------------------------------------------------- creation

@lowering("constant")
def _constant(cx, node):
    """Relax constant"""
    d = _out(node)
    return cx.const(node.attrs["value"], d)


@lowering("full")
def _full(cx, node):
    """TE fill"""
    t = node.outputs[0].type
    d = t.dtype.name
    v = cx.tconst(node.attrs["value"], d)
    te = cx.te
    return cx.emit_te(lambda: te.compute(t.shape, lambda *i: v, name="full"), name="full")


@lowering("eye")
def _eye(cx, node):
    """TE"""
    t = node.outputs[0].type
    d = t.dtype.name
    k = int(node.attrs["k"])
    te, tir = cx.te, cx.tir
    one, zero = cx.tconst(1, d), cx.tconst(0, d)

    def f():
        return te.compute(t.shape, lambda i, j: tir.Select(j - i == tir.const(k, _ity(i)), one, zero), name="eye")
    return cx.emit_te(f, name="eye")


@lowering("arange")
def _arange(cx, node):
    """TE (int64 or float64 index arithmetic, NumPy's fill)"""
    t = node.outputs[0].type
    d = t.dtype.name
    start, step = node.attrs["start"], node.attrs["step"]
    te, tir = cx.te, cx.tir
    wraps = False
    if all(isinstance(v, (int, np.integer)) for v in (start, node.attrs["stop"], step)):
        cd = "int64"
        s0, ds = tir.const(int(start), cd), tir.const(int(step), cd)
        # i * step leaves int64 though every value is in it (arange(-2**63, 2**63 - 1, 2**56)):
        # wrapped, as NumPy's fill computes it; left to TVM, its no-overflow arithmetic gave
        # -128 * 2**56 for the 129th value instead of 0
        wraps = not -2**63 <= (t.shape[0] - 1) * int(step) < 2**63
    else:  # NumPy fills start + i * delta in float64, delta = (start + step) - start
        cd = "float64"
        delta = float(np.float64(start) + np.float64(step) - np.float64(start))
        # opaque: TIR folds 0.0 + e to e at construction, so arange(0.0, step=-0.5)[0] came out
        # as 0 * -0.5 = -0.0; NumPy's start + 0 * delta is +0.0
        from .ieee import opaque_float
        s0, ds = opaque_float(float(start), cd), opaque_float(delta, cd)

    def value(i):
        if not wraps:
            if cd == "float64" and float(start) == 0 and np.signbit(start):
                # NumPy stores start itself first: arange(-0.0, n)[0] is -0.0 (-0.0 + 0 * delta is +0.0)
                return tir.Select(i == 0, s0, s0 + i.astype(cd) * ds)
            return s0 + i.astype(cd) * ds
        from .int_wrap import wrapping
        tvm = load_tvm()
        return wrapping(tvm, "add", s0, wrapping(tvm, "mul", i.astype(cd), ds))

    def f():
        return te.compute(t.shape, lambda i: value(i).astype(d), name="arange")
    return cx.emit_te(f, name="arange")


# ---------------------------------------------------------------- reductions

def _reduction(relax_name):
    def lower(cx, node, x):
        axes = tuple(node.attrs["axes"])
        keepdims = bool(node.attrs["keepdims"])
        if not axes:
            return x
        shape = node.inputs[0].type.shape
        if relax_name in ("sum", "prod") and all(shape[a] == 1 for a in axes):
            # one term: the term itself (the interpreter agrees; a reducer would add -0.0 to +0.0)
            return x if keepdims else cx.R.reshape(x, node.outputs[0].type.shape)
        if relax_name == "sum" and _stages(cx, _out(node), math.prod(shape[a] for a in axes), SUM_STAGED_ABOVE):
            src = node.inputs[0].node
            fusing = src is not None and "elementwise" in src.prim.traits
            return _staged_sum(cx, x, tuple(shape), tuple(sorted(axes)), keepdims, fusing)
        return getattr(cx.R, relax_name)(x, axis=list(axes), keepdims=keepdims)
    lower.__name__ = f"lower_{relax_name}"
    staged = "; long float sums in stages" if relax_name == "sum" else ""
    lower.__doc__ = f"Relax {relax_name} (one term: the term itself{staged})"
    return lower


# Long float sums in stages. A kernel's reducer adds its terms one after another into one
# accumulator per output (one per vector lane along a contiguous axis), so its rounding error
# grows with the count: 2^23 values of 0.1 in float32 summed over axis 0 came out 5.7% high
# (NumPy's strided sum the same; XLA's within 1e-6), over the contiguous axis 0.4%. A sum of more
# than SUM_STAGED_ABOVE terms per result is taken in stages of at most SUM_TERMS_MAX terms each
# (`_staged_sum`). Shorter sums stay one reduction: a stage is a kernel more, and a graph of two
# kernels is built with a compiled main (pipeline.choose_exec_mode), whose first call took 91 ms
# instead of 33 for sum(x * x) over (32, 128); one running sum of 16384 terms is off by about
# 16384 * eps / 4 (2.4e-4 in float32) at worst, much less where the errors cancel.
SUM_TERMS_MAX = 1024
SUM_STAGED_ABOVE = 16384


# A block of more than this many terms has a multiple of it: the schedules vectorize a reduction
# along a contiguous axis only by a power-of-two factor of its length (schedule.py, case B), and a
# block of 965 or 2049 terms was summed serially (a longsums trial: sum over (256, 16400) axis 1
# 15x, (8192, 4097) @ a vector 6x slower than at lengths a power of two)
BLOCK_MULTIPLE = 16


class _Blocks:
    """An axis of `length` terms cut into blocks of at most about `most` terms, as `parts`:
    (offset, count, size) runs of `count` blocks of `size` terms from term `offset` on.

    The blocks are a multiple of BLOCK_MULTIPLE long where that costs little: the largest such
    divisor of the length down to most / 8 where there is one, else about even blocks, rounded up
    to the multiple where they are at least 8 times as long. Those do not divide the length: with
    `tail`, the terms left after the whole blocks are parts of their own (a block of a multiple
    of the step and one of fewer terms, each a kernel of its own: for products, which take no
    producers into their kernel); without, the last block is read from length - size on,
    overlapping the one before it, and the terms that one already holds count as -0.0 (x + -0.0
    is x for every x, -0.0 included), so that a staged sum stays one kernel and fuses with its
    producers. Either way every read is inside the operand and a contiguous run (a last block
    padded past the end with a clamped, guarded read ran scalar: a sum over (256, 65537) axis 1
    3x, a dot product of 2^22 + 1 terms 7x slower than at a length that divides; the overlap
    costs a compare and a blend per term: 1.5x and 2.3x there)."""

    def __init__(self, cx, length: int, most: int, tail: bool = False):
        self.tir, self.length = cx.tir, length
        step = BLOCK_MULTIPLE
        exact = [n for n in range(most - most % step, max(most // 8, step) - 1, -step)
                 if n and length % n == 0]
        self.overlap = False
        if exact:
            size = exact[0]
            self.parts = [(0, length // size, size)]
        else:
            size = -(-length // -(-length // most))
            if size >= 8 * step:  # (rounded up by under an eighth: the blocks stay near `most`)
                size = -(-size // step) * step
            whole, rest = divmod(length, size)
            if tail and rest:
                # the rest as a block of a multiple of the step and, after it, one of fewer terms
                # (each a kernel: a block of 2033 terms ran serially)
                cut = [n for n in (rest - rest % step, rest % step) if n]
                self.parts = [(0, whole, size)] + [(whole * size + sum(cut[:i]), 1, n)
                                                   for i, n in enumerate(cut)]
            else:
                self.parts = [(0, -(-length // size), size)]
                self.overlap = bool(rest)
        self.blocks = sum(count for _, count, _ in self.parts)

    def term(self, part, o, kb):
        """(index, new): where term kb of block o of `part` is read, and whether it is a term of
        that block (None: always)."""
        offset, _, size = part
        if not self.overlap:
            return offset + o * size + kb, None
        tir = self.tir
        start = tir.min(o * size, self.length - size)
        # (the block's own terms are those past o * size - start: a compare of the vectorized kb
        # with one number per block)
        return start + kb, kb >= o * size - start

    def keep(self, v, new, dtype: str):
        """v (of `dtype`) where `new` holds, else -0.0 (Select: the read is inside either way)."""
        if new is None:
            return v
        from .ieee import opaque_float
        return self.tir.Select(new, v, opaque_float(-0.0, dtype))

    @staticmethod
    def tail_for(shape: tuple) -> bool:
        """Whether a product of result axes `shape` takes a tail kernel (else the overlapping last
        block): where its block axis goes `first`, or where it has few results, whose one row of
        blocks each kernel reads in one run (a dot product of 2^22 + 1 terms: 0.28 ms with a tail,
        0.71 overlapping, 0.27 at 2^22)."""
        return _Blocks.first(shape) or math.prod(shape) <= 4 * BLOCK_MULTIPLE

    @staticmethod
    def first(shape: tuple) -> bool:
        """Whether the block axis goes first among a product's result axes `shape`: except for a
        matrix-vector product (one column), so that the register tiles of a product run per block
        (and a tail is a kernel of its own: a blend per term in a tile's FMAs would cost more).
        A matrix-vector product's block axis goes last: its rows then read each row of the matrix
        in one run across its blocks, the last one overlapping (the block axis first read every
        row's first block, then every row's second: (8192, 8192) @ a vector 1.5x slower than one
        product; a tail kernel of its own read the rows twice over too: (8192, 4112) 2x). With
        more columns than one the register tiles matter more ((8192, 8192) @ (8192, 3) with the
        block axis last: 50 ms, a longsums2 trial)."""
        return not shape or shape[-1] != 1

    def place(self, shape: tuple) -> int:
        """The index of the block axis among the partials' axes (`first`)."""
        return 0 if self.first(shape) else len(shape)

    def summed(self, cx, make, args, shape: tuple, name: str, axes: tuple, keepdims: bool,
               at: int | None = None, attrs: dict | None = None):
        """The sum over `axes` of the partial results of every part on `args` (Relax values):
        each part's kernel makes its partials, the block axis inserted at `at` (default
        `place(shape)`) among the result axes `shape` (`axes` hold that axis), `_staged_sum`
        sums them, and the parts' sums are added. `make(part, te_tensors)` gives a kernel's
        body, a function of the block index and the result index; `attrs`: the kernels'
        PrimFunc attributes. (The parts are not concatenated: a concatenation is a guarded inner
        loop, which turns LLVM's loop vectorizer off for the whole build, pipeline.py, and exp(x)
        summed over 2^22 + 1 terms went scalar: 36 ms.)"""
        at = self.place(shape) if at is None else at
        te = cx.te

        def kernel(part):
            def fn(*ts):
                body = make(part, ts)
                return te.compute(shape[:at] + (part[1],) + shape[at:],
                                  lambda *idx: body(idx[at], *(idx[:at] + idx[at + 1:])), name=name)
            return fn
        total = None
        for part in self.parts:
            y = cx.emit_te(kernel(part), *args, name=name, attrs=attrs)
            y = cx.emit(_staged_sum(cx, y, shape[:at] + (part[1],) + shape[at:], axes, keepdims))
            total = y if total is None else cx.emit(cx.R.add(total, y))
        return total


def _fitting_tail(lengths: list, most: int) -> tuple[int, int]:
    """(k, p): the last items of `lengths` from index k on are the longest run at the end whose
    product p is at most `most` (the axes or letters one block holds whole)."""
    k, p = len(lengths), 1
    while k and p * lengths[k - 1] <= most:
        k -= 1
        p *= lengths[k]
    return k, p


def _stages(cx, dtype: str, terms: int, most: int) -> bool:
    """Whether a float sum of `terms` terms per result is built in stages (more than `most`, on a
    CPU: `LowerContext.stage_sums`)."""
    return cx.stage_sums and dtype.startswith("float") and terms > most


def _staged_sum(cx, x, shape, axes, keepdims, fusing: bool = False):
    """R.sum of x over `axes` (sorted), in stages while a result adds more than SUM_TERMS_MAX
    terms (whether to stage at all is the caller's: SUM_STAGED_ABOVE). Each stage sums the last
    reduced axes that fit (at most SUM_TERMS_MAX terms) together with consecutive blocks of the
    reduced axis before them (TE kernels, `_Blocks`), and the next stage sums the partial
    results. The error bound goes from about count * eps to (count / SUM_TERMS_MAX +
    SUM_TERMS_MAX) * eps per stage pair; the first stage reads x once, as one reduction did, and
    fuses with x's producers as one reduction would; every later stage reads SUM_TERMS_MAX times
    less. `fusing`: x is made by an elementwise operation (its kernel would fuse into the stage)."""
    n = math.prod(shape[a] for a in axes)
    if n <= SUM_TERMS_MAX:
        return cx.R.sum(x, axis=list(axes), keepdims=keepdims)
    k, p = _fitting_tail([shape[i] for i in axes], SUM_TERMS_MAX)
    inner, a = axes[k:], axes[k - 1]  # n > SUM_TERMS_MAX: some reduced axis is left before `inner`
    if SUM_TERMS_MAX // p == 1:  # `inner` alone holds enough terms: a plain sum over them is the stage
        y = cx.emit(cx.R.sum(x, axis=list(inner), keepdims=keepdims))
        y_shape = tuple(1 if i in inner else s for i, s in enumerate(shape)
                        if keepdims or i not in inner)
        return _staged_sum(cx, y, y_shape, axes[:k], keepdims)
    # blocks of axis a, with all of `inner`; a tail kernel of its own unless x comes from an
    # elementwise operation, which fuses into the stage only while the stage is one kernel
    bl = _Blocks(cx, shape[a], SUM_TERMS_MAX // p, tail=not fusing)
    rest_shape = tuple(1 if i in inner else s for i, s in enumerate(shape)
                       if i != a and (keepdims or i not in inner))
    te = cx.te

    def make(part, ts):
        (t,) = ts
        rb = te.reduce_axis((0, part[2]), name="rb")
        r_in = {i: te.reduce_axis((0, shape[i]), name=f"r{i}") for i in inner}

        def body(o, *idx):
            it, src, kk = iter(idx), [], None
            for i in range(len(shape)):
                if i in r_in:
                    src.append(r_in[i])
                    if keepdims:
                        next(it)
                elif i == a:
                    read, kk = bl.term(part, o, rb)
                    src.append(read)
                else:
                    src.append(next(it))
            return te.sum(bl.keep(t[tuple(src)], kk, str(t.dtype)), axis=[rb, *r_in.values()])
        return body
    # op_pattern 3 (TVM's kCommReduce), which TVM's analysis does not see through the block index
    # (`o * size + rb`): x's elementwise producers fuse into the stage as into one reduction (x * x
    # was otherwise written out whole first: 4.5 -> 26 ms for 4 rows of 2^23)
    return bl.summed(cx, make, (x,), rest_shape, "sum_blocks", axes[:k], keepdims, at=a, attrs={"op_pattern": 3})


lowering("sum")(_reduction("sum"))
lowering("prod")(_reduction("prod"))


def _nan_extremum(relax_name):
    """max/min over axes with NumPy's IEEE answers for floats. TIR's max/min reducers drop NaNs
    and start from the lowest (highest) finite value, so max of an all -inf row came out as
    -3.4e38. A second, sum reduction counts the elements that are not the identity (-inf for max,
    +inf for min) and carries NaN: NaN where it is NaN, the identity where it is 0 (selected, not
    added: -0.0 + 0.0 is +0.0, and max(-0.0) is -0.0)."""
    plain = _reduction(relax_name)
    identity = -np.inf if relax_name == "max" else np.inf

    def lower(cx, node, x):
        r = plain(cx, node, x)
        d = _dt(node.inputs[0])
        if not _is_float(d) or not node.attrs["axes"]:
            return r
        R = cx.R
        one, zero = cx.const(1, d), cx.const(0, d)
        counted = R.where(R.equal(x, cx.const(identity, d)), zero, one)
        flag = cx.emit(R.where(R.isnan(x), cx.const(np.nan, d), counted))
        tally = cx.emit(R.sum(flag, axis=list(node.attrs["axes"]), keepdims=bool(node.attrs["keepdims"])))
        r = cx.emit(R.where(R.equal(tally, zero), cx.const(identity, d), cx.emit(r)))
        return R.where(R.isnan(tally), tally, r)
    lower.__name__ = f"lower_{relax_name}"
    lower.__doc__ = f"Relax {relax_name}, and a sum that carries NaN and all-infinite rows (TIR's reducer drops them)"
    return lower


lowering("max")(_nan_extremum("max"))
lowering("min")(_nan_extremum("min"))


def _argreduce(relax_name):
    def lower(cx, node, x):
        if node.inputs[0].type.ndim == 0:
            return cx.const(0, "int64")
        R = cx.R
        axis, keep = int(node.attrs["axis"]), bool(node.attrs["keepdims"])
        d = _dt(node.inputs[0])
        if d == "bool":  # TVM's arg reducers have no start value for bool: False < True as int8
            x, d = cx.emit(R.astype(x, "int8")), "int8"
        r = cx.emit(getattr(R, relax_name)(x, axis=axis, keepdims=keep))
        if not _is_float(d):
            # TVM's reducer starts at (-1, the dtype's largest value) (argmax: its smallest) and
            # only a better value, or an equal one at a smaller index, replaces it: a row all of
            # that value left -1. NumPy: the first index, 0.
            r = cx.emit(R.maximum(r, cx.const(0, str(r.ty.dtype))))
            return r if r.ty.dtype == "int64" else R.astype(r, "int64")
        # For floats that start is the largest finite value, not inf, which no element beats,
        # and the finite extreme ties with it and loses to its index -1: argmin of [inf, max]
        # was 0 for 1. -1 comes out exactly when every element is inf, the finite extreme or
        # NaN; NaN needs a pass of its own (TVM's comparisons pass over it, NumPy's first NaN
        # wins). One int8 code per element does both: 2 for NaN, 1 for the finite extreme; its
        # first maximum is the first NaN, else the first finite extreme, else index 0.
        import ml_dtypes
        lim = float(ml_dtypes.finfo(node.inputs[0].type.dtype.np).max)
        lim = lim if relax_name == "argmin" else -lim
        i8 = lambda v: cx.const(v, "int8")  # noqa: E731
        code = cx.emit(R.where(R.isnan(x), i8(2), R.where(R.equal(x, cx.const(lim, d)), i8(1), i8(0))))
        first = cx.emit(R.argmax(code, axis=axis, keepdims=keep))
        has_nan = R.equal(R.max(code, axis=axis, keepdims=keep), i8(2))
        first = first if first.ty.dtype == r.ty.dtype else cx.emit(R.astype(first, r.ty.dtype))
        none = R.equal(r, cx.const(-1, str(r.ty.dtype)))
        r = cx.emit(R.where(R.logical_or(has_nan, none), first, r))
        return r if r.ty.dtype == "int64" else R.astype(r, "int64")
    lower.__name__ = f"lower_{relax_name}"
    lower.__doc__ = f"Relax {relax_name}, the first NaN, the finite extreme after infinities and index 0 of all-infinite rows as NumPy"
    return lower


lowering("argmax")(_argreduce("argmax"))
lowering("argmin")(_argreduce("argmin"))


# ---------------------------------------------------------------- linear algebra

@lowering("matmul")
def _matmul(cx, node, a, b):
    """Relax matmul; with a transposed left operand, a TE product that reads it untransposed; long float contractions in blocks"""
    at = cx.lhs_transposed.get(id(node.inputs[0]))
    shape, d = tuple(node.outputs[0].type.shape), _out(node)
    length = int(node.inputs[1].type.shape[-2])
    staged = _stages(cx, d, length, MATMUL_TERMS_MAX)
    if at is not None and shape[-1] < BLOCK_MULTIPLE <= shape[-2]:
        # x.T @ y with few columns: computed as y.T @ x, whose last axis (along x's rows, each
        # read in one run) the register tiles vectorize across, then its last two axes swapped;
        # read as x.T @ y, a vector of x's column was a strided gather per term ((4096, 1024).T @
        # (4096, 1) 30.2 ms, 80x the product of the transposed copy)
        swapped = shape[:-2] + (shape[-1], shape[-2])
        prod = cx.emit(_staged_matmul(cx, b, at, swapped, d, length, transposed=True) if staged
                       else _matmul_tn(cx, b, at, swapped, d))
        return cx.R.permute_dims(prod, list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2])
    if staged:
        return _staged_matmul(cx, a if at is None else at, b, shape, d, length, transposed=at is not None)
    if at is None:
        return cx.R.matmul(a, b, out_dtype=d)
    return _matmul_tn(cx, at, b, shape, d)


def _matmul_tn(cx, x, y, shape: tuple, d: str):
    """TE: out[..., i, j] = sum_k x[..., k, i] * y[..., k, j] (x: a transpose's input), batch axes
    broadcast as in matmul; the same sum over k, in the same order, as R.matmul's legalization,
    so the result is bit-identical to transposing first."""
    te = cx.te

    def matmul_tn(x, y):
        k = te.reduce_axis((0, int(x.shape[-2])), name="k")

        def body(*idx):
            *bi, i, j = idx
            return te.sum(x[(*_batch(bi, x), k, i)].astype(d) * y[(*_batch(bi, y), k, j)].astype(d), axis=k)
        return te.compute(shape, body, name="matmul_tn")
    return cx.emit_te(matmul_tn, x, y, name="matmul_tn")


def _batch(idx, t):
    """The batch indices of operand `t` (a TE tensor of rank >= 2) for the result's batch indices
    `idx`: its own batch axes, right-aligned, index 0 where they broadcast (length 1)."""
    n = len(t.shape) - 2
    lead = idx[len(idx) - n:] if n else ()
    return [0 if int(s) == 1 else i for i, s in zip(lead, t.shape[:-2])]


# The longest contraction a float matmul sums in one running sum per output. A longer one is summed
# in blocks (`_staged_matmul`): as `sum`'s SUM_TERMS_MAX, but higher, since every block adds a
# partial product of the output's size, and products up to 4096 terms (hidden layers, batches)
# are common; a running sum of 2^22 terms (a dot product of two long vectors) was 8.6e-4 off.
MATMUL_TERMS_MAX = 4096


def _staged_matmul(cx, x, y, shape: tuple, d: str, length: int, transposed: bool = False):
    """matmul(x, y) of result `shape` and dtype `d` over a contraction of `length` terms (x: the
    transpose's input when `transposed`) as partial products over consecutive blocks of it, of
    at most MATMUL_TERMS_MAX terms as `_Blocks` cuts them (a TE kernel per part: the block index
    is an outer spatial axis, so the register tiles of one product run per block), summed over
    the blocks by `_staged_sum`. Batch axes broadcast as in matmul."""
    te = cx.te
    bl = _Blocks(cx, length, MATMUL_TERMS_MAX, tail=_Blocks.tail_for(shape))

    def make(part, ts):
        x, y = ts
        kb = te.reduce_axis((0, part[2]), name="k")

        def body(o, *idx):
            *bi, i, j = idx
            kc, new = bl.term(part, o, kb)
            xv = x[(*_batch(bi, x), kc, i)] if transposed else x[(*_batch(bi, x), i, kc)]
            return te.sum(bl.keep(xv.astype(d) * y[(*_batch(bi, y), kc, j)].astype(d), new, d), axis=kb)
        return body
    return bl.summed(cx, make, (x, y), shape, "matmul_blocks", (bl.place(shape),), False)


@lowering("einsum")
def _einsum(cx, node, *xs):
    """Relax einsum (zeros over an empty contraction; long float contractions in blocks)"""
    if any(v.type.size == 0 for v in node.inputs):
        # a sum over an empty contraction is 0; TVM's einsum never writes such an output
        t = node.outputs[0].type
        return cx.R.zeros(t.shape, t.dtype.name)
    if _out(node) == "bool":  # or of ands, as NumPy: a count of true products (TVM's einsum takes numbers)
        counted = _einsum_terms(cx, node, [cx.emit(cx.R.astype(x, "int64")) for x in xs])
        return cx.R.not_equal(cx.emit(counted), cx.const(0, "int64"))
    return _einsum_terms(cx, node, xs)


def _einsum_terms(cx, node, xs):
    spec = node.attrs["spec"]
    ins, out = spec.split("->")
    subs = ins.split(",")
    shapes = [tuple(v.type.shape) for v in node.inputs]
    if len(subs) > 1:
        # Indices that occur in one operand only (and not in the result) are summed out of that
        # operand first, as the reference kernel and JAX's einsum do (prims/linalg.lone_axes):
        # summing the products instead turns inf * 1.3 + inf * -0.7 into NaN (make fuzz).
        xs = list(xs)
        for k, lone in enumerate(lone_axes(subs, out)):
            if lone:
                shape = node.inputs[k].type.shape
                if all(shape[i] == 1 for i in lone):  # one term: the term itself (as `sum`)
                    xs[k] = cx.R.reshape(xs[k], [n for i, n in enumerate(shape) if i not in lone])
                elif _stages(cx, _out(node), math.prod(shape[i] for i in lone), SUM_STAGED_ABOVE):
                    xs[k] = cx.emit(_staged_sum(cx, xs[k], tuple(shape), tuple(sorted(lone)), False))
                else:
                    xs[k] = cx.R.sum(xs[k], axis=lone, keepdims=False)
                subs[k] = "".join(ch for i, ch in enumerate(subs[k]) if i not in lone)
                shapes[k] = tuple(n for i, n in enumerate(shape) if i not in lone)
        if all(not sb for sb in subs):  # every operand summed to a scalar: their product
            res = xs[0]
            for x in xs[1:]:
                res = cx.R.multiply(res, x)
            return res
        spec = ",".join(subs) + "->" + out
    extent = {}
    for sub, shape in zip(subs, shapes):
        for ch, n in zip(sub, shape):
            extent[ch] = max(extent.get(ch, 1), n)
    summed = [ch for ch in extent if ch not in out]
    if _stages(cx, _out(node), math.prod(extent[ch] for ch in summed), MATMUL_TERMS_MAX):
        return _staged_einsum(cx, node, xs, subs, out, shapes, extent, summed)
    return cx.R.einsum(list(xs), spec)


def _staged_einsum(cx, node, xs, subs, out, shapes, extent, summed):
    """einsum over a contraction of more than MATMUL_TERMS_MAX terms as `_staged_matmul` does it.
    The summed letters, in the order they first appear in the operands, split as in
    `_staged_sum`: the last ones whose terms fit one block (`inner`), the letter before them cut
    in blocks (`_Blocks`, at most MATMUL_TERMS_MAX terms each with `inner`), and the letters
    before it (`outer`) whole axes of the partial results; a TE kernel per part makes them,
    `_staged_sum` sums them over the blocks and `outer`. A letter of extent 1 in an operand
    broadcasts (index 0), as TVM's einsum and NumPy's."""
    te, d = cx.te, _out(node)
    order = [ch for ch in dict.fromkeys("".join(subs)) if ch in summed]
    k, p = _fitting_tail([extent[ch] for ch in order], MATMUL_TERMS_MAX)
    inner, c, outer = order[k:], order[k - 1], order[:k - 1]  # (the sum is longer than a block)
    out_shape = tuple(node.outputs[0].type.shape)
    bl = _Blocks(cx, extent[c], max(1, MATMUL_TERMS_MAX // p), tail=_Blocks.tail_for(out_shape))
    shape = tuple(extent[ch] for ch in outer) + out_shape  # the partials' axes but the blocks'
    at = 0 if _Blocks.first(out_shape) else len(shape)
    axes = (at,) + tuple(i + (at == 0) for i in range(len(outer)))

    def make(part, ts):
        kb = te.reduce_axis((0, part[2]), name="k")
        red = {ch: te.reduce_axis((0, extent[ch]), name=f"r_{ch}") for ch in inner}

        def body(o, *idx):
            kc, new = bl.term(part, o, kb)
            var = dict(zip(outer + list(out), idx), **red)
            var[c] = kc
            v = None
            for t, sub, sh in zip(ts, subs, shapes):
                term = t[tuple(0 if n == 1 else var[ch] for ch, n in zip(sub, sh))].astype(d)
                v = term if v is None else v * term
            return te.sum(bl.keep(v, new, d), axis=[kb, *red.values()])
        return body
    xs = [x if isinstance(x, cx.relax.Var) else cx.emit(x) for x in xs]  # (the lone axes' sums)
    return bl.summed(cx, make, xs, shape, "einsum_blocks", tuple(sorted(axes)), False, at=at)


# ---------------------------------------------------------------- shape

def _to_shape(relax_name):
    """reshape / broadcast_to: the operand itself when it already has the target shape."""
    def lower(cx, node, x):
        shape = tuple(int(s) for s in node.attrs["shape"])
        if shape == node.inputs[0].type.shape:
            return x
        return getattr(cx.R, relax_name)(x, shape)
    lower.__name__ = f"lower_{relax_name}"
    lower.__doc__ = f"Relax {relax_name}"
    return lower


lowering("reshape")(_to_shape("reshape"))
lowering("broadcast_to")(_to_shape("broadcast_to"))


@lowering("transpose")
def _transpose(cx, node, x):
    """Relax permute_dims"""
    perm = [int(p) for p in node.attrs["perm"]]
    if perm == list(range(len(perm))):
        return x
    return cx.R.permute_dims(x, perm)


@lowering("slice")
def _slice(cx, node, x):
    """Relax strided_slice"""
    starts, stops, steps = (list(map(int, node.attrs[k])) for k in ("starts", "stops", "steps"))
    shape = node.inputs[0].type.shape
    if all(a == 0 and b == n and s == 1 for a, b, s, n in zip(starts, stops, steps, shape)):
        return x
    out = node.outputs[0].type
    if out.size == 0:
        return cx.R.zeros(out.shape, out.dtype.name)
    axes = list(range(len(shape)))
    return cx.R.strided_slice(x, axes, starts, stops, steps, assume_inbound=True)


@lowering("pad")
def _pad(cx, node, x):
    """TE (interior padding, guarded reads)"""
    lo, hi, interior = (tuple(int(v) for v in node.attrs[k]) for k in ("lo", "hi", "interior"))
    xt, ot = node.inputs[0].type, node.outputs[0].type
    d = ot.dtype.name
    if not any(lo + hi + interior):
        return x
    value = cx.tconst(node.attrs["value"], d)
    te, tir = cx.te, cx.tir
    if xt.size == 0:  # nothing to place: a constant field
        return cx.emit_te(lambda: te.compute(ot.shape, lambda *i: value, name="pad"), name="pad")

    def f(t):
        def elem(*idx):
            conds, src = [], []
            for ax, i in enumerate(idx):
                n, l, k = xt.shape[ax], lo[ax], interior[ax] + 1
                if l == 0 and hi[ax] == 0 and k == 1:
                    src.append(i)
                    continue
                j = i - tir.const(l, _ity(i))
                conds.append(j >= tir.const(0, _ity(i)))
                conds.append(j <= tir.const((n - 1) * k, _ity(i)))
                if k > 1:
                    conds.append(tir.floormod(j, k) == tir.const(0, _ity(i)))
                    j = tir.floordiv(j, k)
                # clamped, though TVM's simplifier drops the clamp inside a branch guarded by
                # `conds`: hence if_then_else (the read happens only where conds hold) and never
                # Select, which reads both sides; vectorized, that out-of-bounds read is undefined
                # behaviour to LLVM (it gave garbage rows: slice -> mul -> pad)
                src.append(tir.max(tir.min(j, tir.const(n - 1, _ity(i))), tir.const(0, _ity(i))))
            if not conds:
                return t(*src)
            return tir.if_then_else(tir.all(*conds), t(*src), value)
        return te.compute(ot.shape, elem, name="pad")
    return cx.emit_te(f, x, name="pad")


@lowering("flip")
def _flip(cx, node, x):
    """TE"""
    axes = {int(a) for a in node.attrs["axes"]}
    shape = node.inputs[0].type.shape
    axes = {a for a in axes if shape[a] > 1}
    if not axes:
        return x
    te, tir = cx.te, cx.tir

    def f(t):
        def elem(*idx):
            return t(*[tir.const(shape[a] - 1, _ity(i)) - i if a in axes else i for a, i in enumerate(idx)])
        return te.compute(shape, elem, name="flip")
    return cx.emit_te(f, x, name="flip")


@lowering("concat")
def _concat(cx, node, *xs):
    """Relax concat"""
    axis = int(node.attrs["axis"])
    parts = [x for x, v in zip(xs, node.inputs) if v.type.shape[axis] != 0]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        t = node.outputs[0].type
        return cx.R.zeros(t.shape, t.dtype.name)
    return cx.R.concat(parts, axis=axis)


def _index_message(node, axis: int, n: int) -> str:
    """What a failed index check says: the op, its operand types, the axis and its length."""
    types = ", ".join(str(v.type) for v in node.inputs)
    return f"{node.prim.name}({types}, axis={axis}): an index is out of range for an axis of length {n}"


@lowering("take")
def _take(cx, node, x, idx):
    """Relax take (indices checked: out of range raises on the CPU, is clipped on a GPU)"""
    axis = int(node.attrs["axis"])
    n = node.inputs[0].type.shape[axis]
    out = node.outputs[0].type
    if out.size == 0 or n == 0:
        return cx.R.zeros(out.shape, out.dtype.name)
    it = node.inputs[1].type
    flat = idx if it.ndim == 1 else cx.emit(cx.R.reshape(idx, (it.size,)))
    flat = checked_indices(cx, flat, it.size, it.dtype.name, n, _index_message(node, axis, n), node.inputs[1])
    idx = flat if it.ndim == 1 else cx.emit(cx.R.reshape(flat, it.shape))
    # mode="clip" (on a GPU, where the check only wraps): the default "fast" mode reads out of
    # bounds (segfaults) on a bad index
    return cx.R.take(x, idx, axis=axis, mode="clip")


@lowering("index_check")
def _index_check(cx, node, idx):
    """the indices wrapped and checked (out of range raises on the CPU, is clipped on a GPU)"""
    it = node.inputs[0].type
    n, op = int(node.attrs["length"]), node.attrs["op"]
    if it.size == 0 or n == 0:
        return idx
    d = it.dtype.name
    # (begins as _index_message's do: the op and its operand types, which the staged function
    # matches to the node to add the user's line)
    message = (f"index_check({it}, length={n}): an index of {op} (under vmap, per example) is out of range "
               f"for an axis of length {n}")
    flat = idx if it.ndim == 1 else cx.emit(cx.R.reshape(idx, (it.size,)))
    flat = checked_indices(cx, flat, it.size, d, n, message, node.inputs[0])
    # a GPU's check kernel only wraps: clipped into the example's own axis, so that a bad index
    # never reaches into another example's row of the folded gather (a no-op after a CPU check)
    flat = cx.emit(cx.R.minimum(cx.R.maximum(flat, cx.const(0, d)), cx.const(n - 1, d)))
    return flat if it.ndim == 1 else cx.R.reshape(flat, it.shape)


@lowering("index_add")
def _index_add(cx, node, x, idx, upd):
    """Relax scatter_elements (add; indices checked: out of range raises on the CPU, is clipped on a GPU)"""
    axis = int(node.attrs["axis"])
    xt, it = node.inputs[0].type, node.inputs[1].type
    n = xt.shape[axis]
    k = it.size
    if k == 0 or xt.size == 0:
        return x
    R = cx.R
    idt = it.dtype.name
    flat = cx.emit(R.reshape(idx, (k,))) if it.ndim != 1 else idx
    flat = checked_indices(cx, flat, k, idt, n, _index_message(node, axis, n), node.inputs[1])
    flat = cx.emit(R.minimum(R.maximum(flat, cx.const(0, idt)), cx.const(n - 1, idt)))  # never write out of bounds (GPU)
    ushape = xt.shape[:axis] + (k,) + xt.shape[axis + 1:]
    upd = cx.emit(R.reshape(upd, ushape)) if node.inputs[2].type.shape != ushape else upd
    ishape = (1,) * axis + (k,) + (1,) * (xt.ndim - axis - 1)
    ib = cx.emit(R.broadcast_to(R.reshape(flat, ishape), ushape))
    if xt.dtype.is_bool:  # bool add is or: TVM's scatter add takes numbers; any addend true -> true
        s = cx.emit(R.scatter_elements(cx.emit(R.astype(x, "int32")), ib, cx.emit(R.astype(upd, "int32")),
                                       axis=axis, reduction="add"))
        return R.not_equal(s, cx.const(0, "int32"))
    return R.scatter_elements(x, ib, upd, axis=axis, reduction="add")


# ---------------------------------------------------------------- neural networks

def _guarded_index(tir, j, n: int):
    """(whether index `j` lies in [0, n), `j` clamped into it): a read of a padded position, at
    the clamped index, guarded by the condition through if_then_else (never Select, which reads
    both sides: an out-of-bounds vector read is undefined behaviour to LLVM), as `_pad`'s are."""
    it = _ity(j)
    zero = tir.const(0, it)
    return tir.all(j >= zero, j < tir.const(n, it)), tir.max(tir.min(j, tir.const(n - 1, it)), zero)


@lowering("conv2d")
def _conv2d(cx, node, x, w):
    """Relax nn.conv2d"""
    if node.inputs[1].type.size == 0:
        # no input channels (or an empty kernel window) but a non-empty output: every output is an
        # empty sum, 0, and TVM's conv2d never writes it (NaN under poison; found by make fuzz)
        t = node.outputs[0].type
        return cx.R.zeros(t.shape, t.dtype.name)
    sh, sw = (int(v) for v in node.attrs["stride"])
    ph0, ph1, pw0, pw1 = (int(v) for v in node.attrs["padding"])
    dh, dw = (int(v) for v in node.attrs["dilation"])
    if _conv_as_matmul(node):
        return _conv2d_im2col(cx, node, x, w)

    def conv(x, w, groups, rows=(ph0, ph1)):
        # Relax padding order is (top, left, bottom, right)
        return cx.R.nn.conv2d(x, w, strides=(sh, sw), padding=(rows[0], pw0, rows[1], pw1), dilation=(dh, dw),
                              groups=groups, data_layout="NCHW", kernel_layout="OIHW", out_dtype=_out(node))
    _, cg, kh, kw = node.inputs[1].type.shape
    if _stages(cx, _out(node), cg * kh * kw, SUM_STAGED_ABOVE):
        if kh * kw > MATMUL_TERMS_MAX:
            rows = _conv_row_block(node)
            if rows is not None:
                return _conv2d_row_staged(cx, node, x, w, conv, rows)
        return _conv2d_staged(cx, node, x, w, conv)
    return conv(x, w, int(node.attrs["groups"]))


# a kernel-row block of a staged conv2d copies the input rows its outputs read: at most this many
# times the input in all
ROW_BLOCK_COPY_MAX = 4


def _conv_row_block(node) -> int | None:
    """The kernel rows per block (a divisor of Kh, blocks of at most MATMUL_TERMS_MAX terms when a
    row allows) for `_conv2d_row_staged`, or None where the blocks' input rows would copy the input
    more than ROW_BLOCK_COPY_MAX times (outputs many rows high: a forward conv with a huge kernel)."""
    xt, wt, ot = (v.type for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    h, kh, kw, ho = xt.shape[2], wt.shape[2], wt.shape[3], ot.shape[2]
    (sh, _), (dh, _) = node.attrs["stride"], node.attrs["dilation"]
    ph0, ph1 = node.attrs["padding"][:2]
    r = max(d for d in range(1, kh + 1) if kh % d == 0 and (d == 1 or d * kw <= MATMUL_TERMS_MAX))
    copied = (kh // r) * ((ho - 1) * int(sh) + (r - 1) * int(dh) + 1)
    return r if copied <= ROW_BLOCK_COPY_MAX * (h + int(ph0) + int(ph1)) else None


def _conv2d_row_staged(cx, node, x, w, conv, r: int):
    """A direct conv2d whose kernel window alone holds more than MATMUL_TERMS_MAX terms (a weight
    gradient's output map, 512x512 for a depthwise one at batch 1, was one running sum of 262,144
    terms: 2.5e-3 off for terms alike): partial sums over every (input channel, block of `r`
    kernel rows), then their sum. Each pair is a group of one grouped convolution of one input
    channel: its input is the rows that block reads (a TE copy with the row padding in it, about
    (Kh / r) * (its rows) / H times the input: little for a weight gradient, whose outputs are
    few rows high), its kernel the block's rows."""
    te, tir, R = cx.te, cx.tir, cx.R
    xt, wt, ot = (v.type for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    n, _, h, wd = xt.shape
    o, cg, kh, kw = wt.shape
    g = int(node.attrs["groups"])
    og, (_, ho, wo) = o // g, ot.shape[1:]
    sh, dh, ph0 = int(node.attrs["stride"][0]), int(node.attrs["dilation"][0]), int(node.attrs["padding"][0])
    nb, rows = kh // r, (ho - 1) * sh + (r - 1) * dh + 1
    zero = cx.tconst(0.0, xt.dtype.name)

    def block_rows(t):
        def elem(i, k, c, b, y, col):
            it = _ity(y)
            inside, rc = _guarded_index(tir, b * tir.const(r * dh, it) + y - tir.const(ph0, it), h)
            return tir.if_then_else(inside, t(i, k * cg + c, rc, col), zero)
        return te.compute((n, g, cg, nb, rows, wd), elem, name="conv_rows")
    xs = cx.emit(R.reshape(cx.emit_te(block_rows, x, name="conv_rows"), (n, g * cg * nb, rows, wd)))
    ws = cx.emit(R.permute_dims(cx.emit(R.reshape(w, (g, og, cg, nb, r, kw))), [0, 2, 3, 1, 4, 5]))
    ws = cx.emit(R.reshape(ws, (g * cg * nb * og, 1, r, kw)))
    parts = cx.emit(R.reshape(cx.emit(conv(xs, ws, g * cg * nb, rows=(0, 0))), (n, g, cg * nb, og, ho, wo)))
    return R.reshape(cx.emit(R.sum(parts, axis=[2])), (n, o, ho, wo))


def _conv2d_staged(cx, node, x, w, conv):
    """A direct conv2d whose outputs each sum more than SUM_STAGED_ABOVE terms (Cg * Kh * Kw: a
    weight gradient's batch times its output map) as partial sums over blocks of input channels,
    then the sum of the partials: the channel blocks become groups of one grouped convolution
    (group (g, b) reads channels b * cb .. of group g, which is where they already lie in x), and a
    sum over the blocks follows. Blocks hold at most MATMUL_TERMS_MAX terms where a channel's
    window allows (`_Blocks` picks them: a divisor of Cg if there is one, else the rest of the
    channels is one more convolution, added). One running sum of 262,144 terms (the weight
    gradient of a batch of 256 32x32 maps, 3x3 kernel) was 2.5e-3 off for terms alike."""
    R = cx.R
    xt, wt, ot = (v.type for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    n, _, h, wd = xt.shape
    o, cg, kh, kw = wt.shape
    g = int(node.attrs["groups"])
    og, (_, ho, wo) = o // g, ot.shape[1:]
    bl = _Blocks(cx, cg, max(1, MATMUL_TERMS_MAX // (kh * kw)), tail=True)
    _, blocks, cb = bl.parts[0]
    main = blocks * cb

    # x and w with each group's input channels an axis of their own (axis 2)
    xg = x if main == cg else cx.emit(R.reshape(x, (n, g, cg, h, wd)))
    wg = cx.emit(R.reshape(w, (g, og, cg, kh, kw)))

    def channels(t, lo, hi):
        return cx.emit(R.strided_slice(t, axes=[2], begin=[lo], end=[hi]))
    xm = x if main == cg else cx.emit(R.reshape(channels(xg, 0, main), (n, g * main, h, wd)))
    wm = cx.emit(R.reshape(wg if main == cg else channels(wg, 0, main), (g, og, blocks, cb, kh, kw)))
    wm = cx.emit(R.reshape(cx.emit(R.permute_dims(wm, [0, 2, 1, 3, 4, 5])), (g * blocks * og, cb, kh, kw)))
    parts = cx.emit(R.reshape(cx.emit(conv(xm, wm, g * blocks)), (n, g, blocks, og, ho, wo)))
    y = cx.emit(R.reshape(cx.emit(R.sum(parts, axis=[2])), (n, o, ho, wo)))
    if main == cg:
        return y
    # the channels after the whole blocks (`_Blocks`' tail parts, summed as one convolution)
    xr = cx.emit(R.reshape(channels(xg, main, cg), (n, g * (cg - main), h, wd)))
    wr = cx.emit(R.reshape(channels(wg, main, cg), (o, cg - main, kh, kw)))
    return R.add(y, cx.emit(conv(xr, wr, g)))


# Below this output width TVM's direct convolution vectorizes poorly (its register tile runs along
# the output row: 4 of 16 lanes at width 4): such a conv2d becomes a matmul over patches instead.
IM2COL_MAX_WIDTH = 16
IM2COL_MAX_ELEMENTS = 1 << 24  # the patch matrix (K x M) it materialises
IM2COL_MIN_TERMS = 32  # a sum of fewer terms per output (Ci * Kh * Kw) costs less than the copy


def _conv_as_matmul(node) -> bool:
    """Whether conv2d `node` is lowered as im2col + matmul (`_conv2d_im2col`): one group, a float
    type, output rows narrower than IM2COL_MAX_WIDTH and a patch matrix of bounded size."""
    xt, wt, ot = (v.type for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    n, _, ho, wo = ot.shape
    co, ci, kh, kw = wt.shape
    return (int(node.attrs["groups"]) == 1 and ot.dtype.name in ("float32", "float64") and ot.size > 0
            and wo < IM2COL_MAX_WIDTH and ci * kh * kw >= IM2COL_MIN_TERMS
            and ci * kh * kw * n * ho * wo <= IM2COL_MAX_ELEMENTS)


def _conv2d_im2col(cx, node, x, w):
    """conv2d as out(Co, M) = W(Co, K) @ patches(K, M) with K = (kh, kw, ci), M = (ho, wo, n), then
    (N, Co, Ho, Wo); or, when Co is the longer side, out^T(M, Co) = patches^T(M, K) @ W^T(K, Co).

    The patch matrix is one injective kernel whose padded positions read as 0 (as TVM's padded
    copy does: 0 * inf is NaN either way); the product is an ordinary matmul, whose schedule
    vectorizes along M or Co (1024 lanes' worth for a batch of 64 4x4 maps, against 4 along a
    4-wide output row). The batch n is the innermost part of M and the channel ci of K: the patch
    kernel's vector lanes then step through one input axis at a fixed stride, with no division
    of the index by 3 or 9 in each lane (with (ci, kh, kw) x (n, ho, wo) the patches of a weight
    gradient took 0.6-0.7 ms for 147k elements, nearly all of it index arithmetic)."""
    te, tir, R = cx.te, cx.tir, cx.R
    xt, wt, ot = (v.type for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    N, C, H, W = xt.shape
    co, ci, kh, kw = wt.shape
    _, _, ho, wo = ot.shape
    sh, sw = (int(v) for v in node.attrs["stride"])
    ph0, _, pw0, _ = (int(v) for v in node.attrs["padding"])
    dh, dw = (int(v) for v in node.attrs["dilation"])
    d = ot.dtype.name
    zero = cx.tconst(0.0, d)
    K, M = ci * kh * kw, N * ho * wo
    transposed = M < IM2COL_MAX_WIDTH and M < co  # lanes along Co: a weight gradient's few output points

    def patches(t):
        def elem(*idx):
            a, b, c, i, j, n = idx[3:] + idx[:3] if transposed else idx
            it = _ity(i)
            h_in, hc = _guarded_index(tir, i * tir.const(sh, it) + a * tir.const(dh, it) - tir.const(ph0, it), H)
            v_in, vc = _guarded_index(tir, j * tir.const(sw, it) + b * tir.const(dw, it) - tir.const(pw0, it), W)
            val = t(n, c, hc, vc)
            return tir.if_then_else(tir.all(h_in, v_in), val if str(val.ty) == d else val.astype(d), zero)
        shape = (ho, wo, N, kh, kw, ci) if transposed else (kh, kw, ci, ho, wo, N)
        return te.compute(shape, elem, name="im2col")
    cols = cx.emit(R.reshape(cx.emit_te(patches, x, name="im2col"), (M, K) if transposed else (K, M)))
    wm = cx.emit(R.reshape(cx.emit(R.permute_dims(w, [0, 2, 3, 1])), (co, K)))  # (co, kh, kw, ci)
    # a weight gradient sums over the batch and the output map (K = N * Ho * Wo): a long
    # contraction is summed in blocks (`_staged_matmul`), a 64 x 30 x 30 one was 5.7e-4 off
    staged = _stages(cx, d, K, MATMUL_TERMS_MAX)
    if transposed:
        wt_ = cx.emit(R.permute_dims(wm, [1, 0]))
        prod = cx.emit(_staged_matmul(cx, cols, wt_, (M, co), d, K) if staged
                       else R.matmul(cols, wt_, out_dtype=d))
        return R.permute_dims(R.reshape(prod, (ho, wo, N, co)), [2, 3, 0, 1])
    prod = cx.emit(_staged_matmul(cx, wm, cols, (co, M), d, K) if staged else R.matmul(wm, cols, out_dtype=d))
    return R.permute_dims(R.reshape(prod, (co, ho, wo, N)), [3, 0, 1, 2])


# ---------------------------------------------------------------- more elementwise math (issue 17)
#
# Where C's libm has the function, the kernel calls it (`call_pure_extern`: glibc on the CPU,
# CUDA's libdevice on the GPU, both within an ulp or two, with C99's special values): float64
# calls `name`, float32 `namef` (half types: in float64, lowering/bf16.py). Such a kernel is opaque (FuseOps
# leaves it alone), as lgamma's: TVM vectorizes no call, and a loop holding one runs every other
# operation fused into it one element at a time too. Over 2^16 float32 elements, 1 thread:
# sin(arccosh(x)) * x 2.6-3.0 -> 0.37-0.54 ms, tanh(arcsinh(y)) 3.0-3.2 -> 1.23-1.26 ms,
# exp2(y) * x 0.21-0.27 -> 0.15-0.19 ms, log2(x * y + 9) 0.27-0.38 -> 0.24 ms; cbrt(x) * y + 1
# 0.74-0.96 -> 0.93-1.09 ms (its extra pass over memory). erfinv and polygamma have no
# libm function: they run graphad's own algorithm (graphad/prims/elementwise.py, shared with the
# NumPy reference kernel) in float64 over `_TirMath`, and round once to float32 when asked.
# lgamma also runs in float64 (glibc's lgammaf loses accuracy near its zeros).

class _TirMath(_Lets):
    """The math namespace of the shared algorithms, on float64 TIR expressions (`bind` and `wrap`
    are _Lets')."""

    def const(self, v):
        from .ieee import opaque_float
        return opaque_float(float(v), "float64")  # a literal 0, 1 or -0.0 must not fold away

    def select(self, c, a, b):
        return self.tir.Select(c, a, b)

    def _ext(self, name, v):
        return self.tir.call_pure_extern("float64", name, v)

    def log(self, v): return self.tir.log(v)
    def log1p(self, v): return self.tir.log1p(v)
    def exp(self, v): return self.tir.exp(v)
    def sqrt(self, v): return self.tir.sqrt(v)
    def floor(self, v): return self.tir.floor(v)
    def ceil(self, v): return self.tir.ceil(v)
    def nearbyint(self, v): return self.tir.nearbyint(v)
    def abs(self, v): return self.tir.abs(v)
    def isnan(self, v): return self.tir.isnan(v)
    def logical_and(self, a, b): return self.tir.And(a, b)
    def logical_or(self, a, b): return self.tir.Or(a, b)
    def tan(self, v): return self._ext("tan", v)
    def erf(self, v): return self._ext("erf", v)
    def erfc(self, v): return self._ext("erfc", v)


def _libm_name(name: str, d: str) -> str:
    return name if d == "float64" else name + "f"


def _libm_unary(name: str, kind: str):
    def lower(cx, node, x):
        tir = cx.tir
        return _elementwise_te(cx, node, x, lambda v, d: tir.call_pure_extern(d, _libm_name(name, d), v), name,
                               attrs=_OPAQUE_ATTRS)
    lower.__name__ = f"lower_{name}"
    lower.__doc__ = kind
    return lower




# exp2, sinh, cosh and hypot in float32: computed in float64
# arithmetic without a call, vectorizable, and rounded once to float32 (the C library's exp2f,
# sinhf, coshf and hypotf, called per element, kept their kernels scalar). The float64 errors
# (the exponential's series 4e-18, a rounding or two of 2^-53) are far below float32's half ulp,
# so the results are within 0.5 ulp but where float64's rounding meets a float32 tie. Infinities,
# NaN and signed zeros as C's.
def _exp2_algorithm(m, x):
    """2^x of a float64 TIR expression: 2^k e^(f ln 2) for k = round(x), f = x - k exact (so an
    integer x gives its power of two exactly); x clamped to [-200, 200], beyond float32's range."""
    c = m.const
    a = m.bind(_f32_range(m, x))
    k = m.bind(m.floor(a + c(0.5)))
    r = m.bind((a - k) * c(math.log(2.0)))
    return m.wrap(m.select(m.isnan(x), x, _exp_f64_reduced(m.tir, c, k, r, 13)))


def _sinh_cosh_algorithm(cosh: bool):
    def alg(m, x):
        """cosh(x) = (e^a + e^-a) / 2, sinh(x) = sign(x) (e^a - e^-a) / 2 with a = |x| clamped at
        200; sinh of |x| < 2^-10 by x (1 + x^2/6 + x^4/120) (the difference would cancel)."""
        c = m.const
        a = m.bind(m.abs(x))
        e = m.bind(_exp_f64(m.tir, m, c, m.select(a > c(_F32_EXP_BOUND), c(_F32_EXP_BOUND), a), 13))
        ei = m.bind(c(1.0) / e)
        if cosh:
            r = (e + ei) * c(0.5)
        else:
            big = m.bind((e - ei) * c(0.5))
            x2 = m.bind(x * x)
            small = x * (c(1.0) + x2 * (c(1.0 / 6.0) + x2 * c(1.0 / 120.0)))
            r = m.select(a < c(2.0 ** -10), small, m.select(x < c(0.0), c(0.0) - big, big))
        return m.wrap(m.select(m.isnan(x), x, r))
    return alg


# Cephes' atan (double): |x| reduced by tan(3 pi / 8) and 0.66 to |x'| <= 0.66, then
# x' + x' z P(z) / Q(z), z = x'^2 (its relative error ~1e-16 in float64)
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
           -1.228866684490136173410e2, -6.485021904942025371773e1)
_ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)


def _arctan_algorithm(m, x):
    """arctan of a float64 TIR expression (Cephes' atan); the sign of a zero kept, NaN passed."""
    return m.wrap(_atan_f64(m, x))


def _atan_f64(m, x):
    """arctan of a float64 TIR value (unwrapped: for the caller's `m.wrap`)."""
    c = m.const
    a = m.bind(m.abs(x))
    far, mid = a > c(2.41421356237309504880), a > c(0.66)
    t = m.bind(m.select(far, c(-1.0) / a, m.select(mid, (a - c(1.0)) / (a + c(1.0)), a)))
    base = m.select(far, c(math.pi / 2), m.select(mid, c(math.pi / 4), c(0.0)))
    z = m.bind(t * t)
    p, q = c(_ATAN_P[0]), z + c(_ATAN_Q[0])
    for coef in _ATAN_P[1:]:
        p = p * z + c(coef)
    for coef in _ATAN_Q[1:]:
        q = q * z + c(coef)
    r = m.bind(base + (t * (z * p / q) + t))
    return m.select(m.isnan(x), x, m.select(x < c(0.0), c(0.0) - r, m.select(x == c(0.0), x, r)))


# the inverse sines, cosines and hyperbolic functions and cbrt, on `_atan_f64`, `_log_f64` and
# `_exp_f64` (float32 in float64 arithmetic, rounded once; C's special values)
def _arcsin_algorithm(m, x):
    """arcsin x = arctan(x / sqrt((1 - x)(1 + x))) (+-1: +-pi/2; |x| > 1: NaN from the root)."""
    c = m.const
    return m.wrap(_atan_f64(m, m.bind(x / m.sqrt((c(1.0) - x) * (c(1.0) + x)))))


def _arccos_algorithm(m, x):
    """arccos x = 2 arctan(sqrt((1 - x) / (1 + x))) (-1: pi; |x| > 1 and +-inf: NaN)."""
    c = m.const
    return m.wrap(c(2.0) * _atan_f64(m, m.bind(m.sqrt((c(1.0) - x) / (c(1.0) + x)))))


def _odd_by_series(m, x, a, big, coefs):
    """sign(x) big(a) for |x| = a >= 2^-12, x (1 + c1 x^2 + c2 x^4) below (where big's log would
    cancel; the next term is below 2^-60 relative), x itself for NaN."""
    c = m.const
    x2 = m.bind(x * x)
    small = x * (c(1.0) + x2 * (c(coefs[0]) + x2 * c(coefs[1])))
    r = m.select(a < c(2.0 ** -12), small, m.select(x < c(0.0), c(0.0) - big, big))
    return m.wrap(m.select(m.isnan(x), x, r))


def _arcsinh_algorithm(m, x):
    """arcsinh x = sign(x) log(|x| + sqrt(x^2 + 1)) (x^2 cannot overflow a float32 x in float64)."""
    c = m.const
    a = m.bind(m.abs(x))
    return _odd_by_series(m, x, a, _log_f64(m, m.bind(a + m.sqrt(a * a + c(1.0)))), (-1.0 / 6.0, 3.0 / 40.0))


def _arctanh_algorithm(m, x):
    """arctanh x = sign(x) log((1 + |x|) / (1 - |x|)) / 2 (+-1: +-inf; |x| > 1: NaN)."""
    c = m.const
    a = m.bind(m.abs(x))
    big = m.bind(m.select(a > c(1.0), c(math.nan), _log_f64(m, m.bind((c(1.0) + a) / (c(1.0) - a))) * c(0.5)))
    return _odd_by_series(m, x, a, big, (1.0 / 3.0, 1.0 / 5.0))


def _arccosh_algorithm(m, x):
    """arccosh x = log(x + sqrt((x - 1)(x + 1))) for x >= 1; NaN below 1 and for NaN."""
    c = m.const
    r = _log_f64(m, m.bind(x + m.sqrt((x - c(1.0)) * (x + c(1.0)))))
    return m.wrap(m.select(m.logical_or(m.isnan(x), x < c(1.0)), c(math.nan), r))


def _cbrt_log_algorithm(m, x):
    """log|x| / 3 (the first stage of cbrt)."""
    return m.wrap(_log_f64(m, m.bind(m.abs(x))) * m.const(1.0 / 3.0))


def _cbrt_algorithm(m, x, t=None):
    """cbrt x = sign(x) e^(log|x| / 3) (exact cubes come out exact: the float64 error is far below
    float32's half ulp); +-0, +-inf and NaN themselves. `t`: log|x| / 3 from a stage of its own
    (as pow's: the log's Let chain and the exponential's in one body took 0.6 s to compile)."""
    c = m.const
    a = m.bind(m.abs(x))
    t = m.bind(_log_f64(m, a) * c(1.0 / 3.0) if t is None else t)
    r = m.bind(_exp_f64(m.tir, m, c, _f32_range(m, t), 11))
    r = m.select(x < c(0.0), c(0.0) - r, r)
    return m.wrap(m.select(m.logical_or(m.isnan(x), m.logical_or(x == c(0.0), a == c(math.inf))), x, r))


def _f32_in_f64_or_libm(name: str, alg, libm: str):
    def lower(cx, node, x):
        if not _fast_f32(_dt(node.inputs[0])):
            return _libm_unary(libm, "")(cx, node, x)
        return _in_f64_te(cx, node, x, alg, name)
    lower.__name__ = f"lower_{name}"
    lower.__doc__ = f"TE: float32 in float64 arithmetic without a call (vectorizable); float64 libm {libm}"
    return lower


lowering("exp2")(_f32_in_f64_or_libm("exp2", _exp2_algorithm, "exp2"))
lowering("sinh")(_f32_in_f64_or_libm("sinh", _sinh_cosh_algorithm(False), "sinh"))
lowering("cosh")(_f32_in_f64_or_libm("cosh", _sinh_cosh_algorithm(True), "cosh"))
lowering("arctan")(_f32_in_f64_or_libm("arctan", _arctan_algorithm, "atan"))
lowering("arcsin")(_f32_in_f64_or_libm("arcsin", _arcsin_algorithm, "asin"))
lowering("arccos")(_f32_in_f64_or_libm("arccos", _arccos_algorithm, "acos"))
lowering("arcsinh")(_f32_in_f64_or_libm("arcsinh", _arcsinh_algorithm, "asinh"))
lowering("arccosh")(_f32_in_f64_or_libm("arccosh", _arccosh_algorithm, "acosh"))
lowering("arctanh")(_f32_in_f64_or_libm("arctanh", _arctanh_algorithm, "atanh"))


@lowering("cbrt")
def _cbrt(cx, node, x):
    """TE: float32 e^(log|x| / 3) in float64 arithmetic without a call, the log a stage of its own
    (vectorizable); float64 libm cbrt"""
    d = _dt(node.inputs[0])
    if d != "float32":
        return _f32_in_f64_or_libm("cbrt", _cbrt_algorithm, "cbrt")(cx, node, x)
    tir, te = cx.tir, cx.te

    def f(tx):
        def body(alg, *extra):
            return lambda *i: alg(_TirMath(tir), tx(*i).astype("float64"), *[e(*i) for e in extra])
        t = te.compute(tx.shape, body(_cbrt_log_algorithm), name=KEEP_STAGE + "cbrt_log")
        return te.compute(tx.shape, lambda *i: body(_cbrt_algorithm, t)(*i).astype("float32"), name="cbrt")
    return cx.emit_te(f, x, name="cbrt", attrs=_heavy(cx))


def _in_f64_te(cx, node, x, alg, name, fuse: bool = True):
    """Emit y = alg(_TirMath, float64(x)) rounded to x's dtype; `fuse`: whether the kernel may
    fuse with its neighbours in a graph without half-type values (`_heavy`), else it is opaque."""
    m = _TirMath(cx.tir)

    def body(v, d):
        w = v if d == "float64" else v.astype("float64")
        r = alg(m, w)
        return r if d == "float64" else r.astype(d)
    return _let_bound_te(cx, node, x, body, name, fuse)


def _let_bound_te(cx, node, x, body, name, fuse: bool = True):
    """Emit y[i] = body(x[i], dtype) for a let-bound `body` (`_in_f64_te`, `_in_f32_te`) of a
    float32 or float64 x (half types: in float64, lowering/bf16.py). In a graph with half-type
    values the kernel is opaque (never fused): TVM's bfloat16 legalization breaks a let-bound body
    that fusion puts beside a cast to or from bfloat16 (a graph with bfloat16 values has such casts
    around every op): "Let cannot bind the same var to two different values", or silently wrong
    values (erfinv of 9 bfloat16 values was NaN). Elsewhere it fuses as an injective op (`_heavy`)
    where `fuse` says so."""
    return _elementwise_te(cx, node, x, body, name, attrs=_heavy(cx) if fuse else _OPAQUE_ATTRS)


_KINJECTIVE, _KOPAQUE = 2, 8  # TVM's OpPatternKind
# a kernel FuseOps leaves alone: a let-bound body must not be fused with bfloat16 casts (see
# _in_f64_te)
_OPAQUE_ATTRS = {"op_pattern": _KOPAQUE}


def _heavy(cx) -> dict:
    """The PrimFunc attributes of an elementwise kernel with a let-bound body (float32 sin and
    cos, erfinv, polygamma): FuseOps pattern injective where its graph has no half-type values
    (`LowerContext.half_types`), opaque where it has. Injective, it fuses with the elementwise and
    injective ops around it (`-sin(x) * v` is one kernel, not two), but not into a reduction or a
    matmul's epilogue. Left to AnnotateTIROpPattern, sin and cos came out opaque (their table read
    had a computed index; their call of the C library's sinf now is an extern call), and erfinv
    and polygamma were marked opaque for the bfloat16 defect only: each was a kernel of its own, its result written out and read back. Given to emit_te
    (`primfunc_attrs`), not set after: the builder then finds the same kernel made before and
    calls it again (set afterwards, each call's copy differed from the marked one, and an
    unrolled loop of 100 sin steps made 100 sin kernels instead of one)."""
    return _OPAQUE_ATTRS if cx.half_types else {"op_pattern": _KINJECTIVE}


@lowering("lgamma")
def _lgamma(cx, node, x):
    """TE: libm lgamma in float64, rounded once"""
    tir = cx.tir
    # not fused: its neighbours' vector arithmetic before a libm call per element made the calls
    # 4-10% slower (2^18 elements, 1 thread, pinned: lgamma(30 a) * b + 1 2.88-3.04 -> 3.07-3.19 ms,
    # a sum of lgamma(|a| + 0.1) 4.25-4.37 -> 4.51-4.83 ms); erfinv and polygamma ran as fast fused
    return _in_f64_te(cx, node, x, lambda m, v: tir.call_pure_extern("float64", "lgamma", v), "lgamma",
                      fuse=False)


@lowering("erfinv")
def _erfinv(cx, node, x):
    """TE: graphad's erfinv (Giles, then Newton steps on erf or log erfc) in float64, rounded once"""
    from ..prims.elementwise import erfinv_algorithm
    return _in_f64_te(cx, node, x, erfinv_algorithm, "erfinv")


@lowering("polygamma")
def _polygamma(cx, node, x):
    """TE: graphad's polygamma (recurrence, asymptotic series, reflection) in float64, rounded once"""
    from ..prims.elementwise import polygamma_algorithm
    n = int(node.attrs["n"])
    return _in_f64_te(cx, node, x, lambda m, v: polygamma_algorithm(m, v, n), "polygamma")


@lowering("ceil")
def _ceil(cx, node, x):
    """Relax ceil"""
    return cx.R.ceil(x)


@lowering("trunc")
def _trunc(cx, node, x):
    """Relax trunc"""
    return cx.R.trunc(x)


@lowering("round")
def _round(cx, node, x):
    """TE: nearbyint (half to even; Relax round is C's round on CUDA, half away from zero)"""
    tir = cx.tir
    return _elementwise_te(cx, node, x, lambda v, d: tir.nearbyint(v), "round")


def _binary_float_te(cx, node, a, b, body, name, attrs: dict | None = None):
    """Emit out = body(x, y, compute_dtype) with broadcasting, half types computed in float32."""
    d = _out(node)
    cd = _float_compute_dtype(d)

    def f(x, y):
        if cd != d:
            x, y = x.astype(cd), y.astype(cd)
        r = body(x, y, cd)
        return r if cd == d else r.astype(d)
    return _binary_te(cx, node, a, b, f, name, attrs)


def _libm_binary(name: str):
    def lower(cx, node, a, b):
        tir = cx.tir
        return _binary_float_te(cx, node, a, b, lambda x, y, d: tir.call_pure_extern(d, _libm_name(name, d), x, y),
                                name, attrs=_OPAQUE_ATTRS)
    lower.__name__ = f"lower_{name}"
    lower.__doc__ = f"TE: libm {name} (float64) / {name}f (float32), a kernel of its own"
    return lower


def _arctan2_f32(tir, y, x):
    """atan2 of two float32 TIR expressions in float64 arithmetic: arctan(y / x) (the ratio of two
    float32 values neither overflows nor underflows float64), +-pi where x's sign bit is set; the
    cases where y / x is NaN (both zero, both infinite) as C's (F.9.1.4); NaN in, NaN out."""
    m = _TirMath(tir)
    c, f64, i64 = m.const, "float64", "int64"
    yd, xd = m.bind(y.astype(f64)), m.bind(x.astype(f64))
    ys = tir.reinterpret(i64, yd) < tir.const(0, i64)
    xs = tir.reinterpret(i64, xd) < tir.const(0, i64)

    def signed(v):  # v with y's sign
        return m.select(ys, c(-v), c(v))
    a = _atan_f64(m, m.bind(yd / xd))
    r = m.select(xs, a + signed(math.pi), a)
    inf = c(math.inf)
    both_inf = tir.And(m.abs(yd) == inf, m.abs(xd) == inf)
    r = m.select(both_inf, m.select(xs, signed(3 * math.pi / 4), signed(math.pi / 4)), r)
    both_zero = tir.And(yd == c(0.0), xd == c(0.0))
    r = m.select(both_zero, m.select(xs, signed(math.pi), yd), r)
    r = m.select(tir.Or(m.isnan(yd), m.isnan(xd)), c(math.nan), r)
    return m.wrap(r.astype("float32"))


@lowering("arctan2")
def _arctan2(cx, node, a, b):
    """TE: float32 arctan(y / x) +- pi in float64 arithmetic without a call (vectorizable); libm
    atan2 for other dtypes"""
    if _out(node) != "float32":
        return _libm_binary("atan2")(cx, node, a, b)
    tir = cx.tir
    return _binary_float_te(cx, node, a, b, lambda y, x, d: _arctan2_f32(tir, y, x), "arctan2", attrs=_heavy(cx))


@lowering("hypot")
def _hypot(cx, node, a, b):
    """TE: float32 sqrt(x^2 + y^2) in float64 arithmetic without a call (vectorizable); libm hypot
    for other dtypes.

    The squares are exact in float64, the sum and the root rounded once each (glibc's hypotf does
    the same); inf where either operand is infinite, even with a NaN, as C's hypot."""
    if _out(node) != "float32":
        return _libm_binary("hypot")(cx, node, a, b)
    tir = cx.tir
    from .ieee import opaque_float

    def body(x, y, d):
        f64 = "float64"
        xd, yd = x.astype(f64), y.astype(f64)
        inf = opaque_float(math.inf, f64)
        r = tir.sqrt(xd * xd + yd * yd)
        return tir.Select(tir.Or(tir.abs(xd) == inf, tir.abs(yd) == inf), inf, r).astype(d)
    return _binary_float_te(cx, node, a, b, body, "hypot")


def _int_mod_te(cx, node, a, b, floor: bool, name):
    """Integer fmod (truncmod) / remainder (floormod) without the hardware trap: x mod 0 is 0 as
    in NumPy, and x mod -1 is 0 (INT_MIN mod -1 would trap)."""
    tir = cx.tir
    d = _out(node)

    def body(x, y):
        zero, one, m1 = tir.const(0, d), tir.const(1, d), tir.const(-1, d)
        trivial = tir.Or(y == zero, y == m1)
        safe = tir.Select(trivial, one, y)
        r = tir.truncmod(x, safe)
        if floor:
            # the floored remainder from the truncated one: r + y where their signs differ (no
            # overflow: opposite signs). TVM's own floormod computes a shifted dividend that
            # overflows near the dtype's limits: -INT_MAX mod INT_MAX came out 2, not 0
            # (signs compared without an i1 comparison, which TVM's codegen emits as fcmp)
            differ = tir.Or(tir.And(r < zero, safe > zero), tir.And(r > zero, safe < zero))
            r = tir.Select(differ, r + safe, r)
        return tir.Select(trivial, zero, r)
    return _binary_te(cx, node, a, b, body, name)


# Floats: LLVM's `frem` (a float tir.Mod), which is C's fmod exactly and never sets errno, not a
# call of libm's fmodf: LLVM treats that call as a library function that may write errno, and with
# remainder's select chain around it, an argument it could fold to a NaN made it drop every store
# of the kernel for a non-zero divisor (the output left unwritten: fuzz run 19, job 0, program 4185,
# fixture remainder_of_folded_nan). The backend still calls fmodf for a frem.


@lowering("fmod")
def _fmod(cx, node, a, b):
    """TE: fmod as LLVM frem (C's fmod, exact); integers: truncmod guarded against 0 and -1"""
    if not _is_float(_out(node)):
        return _int_mod_te(cx, node, a, b, False, "int_fmod")
    tir = cx.tir
    return _binary_float_te(cx, node, a, b, lambda x, y, d: tir.Mod(x, y), "fmod")


@lowering("remainder")
def _remainder(cx, node, a, b):
    """TE: fmod (LLVM frem) moved to the divisor's sign as NumPy does; integers: floormod guarded"""
    if not _is_float(_out(node)):
        return _int_mod_te(cx, node, a, b, True, "int_remainder")
    tir = cx.tir
    from .ieee import opaque_float

    def body(x, y, d):
        # NumPy's npy_remainder: mod = fmod(x, y); y == 0 -> mod (NaN); mod != 0 (NaN included)
        # and of another sign than y -> mod + y; mod == 0 -> a zero with y's sign
        mod = tir.Mod(x, y)  # frem: see _fmod
        zero = opaque_float(0.0, d)
        yneg, mneg = y < zero, mod < zero
        flip = tir.Or(tir.And(yneg, tir.Not(mneg)), tir.And(tir.Not(yneg), mneg))
        nonzero = tir.Select(flip, mod + y, mod)
        signed_zero = tir.Select(yneg, opaque_float(-0.0, d), zero)
        r = tir.Select(mod != zero, nonzero, signed_zero)
        return tir.Select(y == zero, mod, r)
    return _binary_float_te(cx, node, a, b, body, "remainder")


def _logaddexp_f32(tir, x, y):
    """logaddexp of two float32 TIR expressions, computed in float64 without a call: NumPy's
    max + log1p(e^-|x - y|), the exponential `_exp_f64` to degree 13 (4e-18; its argument
    clamped at -700, where e^-700 < 1e-304 leaves any float32 sum
    unchanged), and log1p(u) = 2 atanh(u / (2 + u)) for u in [0, 1] by its series (s <= 1/3, 16
    terms: 5e-18). Both to the float64 rounding: where max(x, y) < 0 cancels the log1p to a small
    result, its absolute error is the result's (11 terms, 2e-13, made a result of 9.7e-14 come
    out as -8.6e-14). Each value bound once (`_Lets`)."""
    f64 = "float64"
    lets = _Lets(tir)

    def c(v):
        return tir.const(float(v), f64)
    xd, yd = lets.bind(x.astype(f64), f64), lets.bind(y.astype(f64), f64)
    t = lets.bind(xd - yd, f64)
    arg = lets.bind(tir.max(tir.min(t, c(0.0)) - tir.max(t, c(0.0)), c(-700.0)), f64)  # -|t|, clamped
    u = lets.bind(_exp_f64(tir, lets, c, arg, 13), f64)
    s = lets.bind(u / (c(2.0) + u), f64)
    s2 = lets.bind(s * s, f64)
    series = c(1.0 / 31.0)
    for n in range(29, 0, -2):
        series = series * s2 + c(1.0 / n)
    res = tir.max(xd, yd) + c(2.0) * s * series
    res = tir.Select(tir.isnan(t), t, res)
    res = tir.Select(xd == yd, xd + c(math.log(2.0)), res)  # equal infinities: no inf - inf
    return lets.wrap(res.astype("float32"))


@lowering("logaddexp")
def _logaddexp(cx, node, a, b):
    """TE: NumPy's npy_logaddexp (x == y -> x + log 2; else max + log1p(exp(-|x - y|))) in float64
    (float32: without a call, vectorizable)"""
    tir = cx.tir
    if _out(node) == "float32":
        return _binary_float_te(cx, node, a, b, lambda x, y, d: _logaddexp_f32(tir, x, y), "logaddexp",
                                attrs=_heavy(cx))

    def body(x, y, dd):
        # computed in float64 whatever the dtype: the two terms cancel when max(x, y) < 0 < the
        # result (4.3 ulp in float32 arithmetic); float64 rounds to within half an ulp
        d = "float64"
        if dd != d:
            r = body(x.astype(d), y.astype(d), d)
            return r.astype(dd)
        ln2 = tir.const(math.log(2.0), d)
        t = x - y
        zero = tir.const(0.0, d)
        r = tir.Select(t > zero, x + tir.log1p(tir.exp(t * tir.const(-1.0, d))),
                       tir.Select(t <= zero, y + tir.log1p(tir.exp(t)), t))  # neither: NaN
        return tir.Select(x == y, x + ln2, r)  # equal infinities: no inf - inf
    return _binary_float_te(cx, node, a, b, body, "logaddexp")


# ---------------------------------------------------------------- scans and sorting (issue 17)
# (appended: cumsum and argsort; the other scans, sort, top_k and the along-axis ops are
# compositions of primitives lowered above)

@lowering("cumsum")
def _cumsum(cx, node, x):
    """Relax cumsum (bfloat16/float16 accumulated in float32)"""
    d = _dt(node.inputs[0])
    axis = int(node.attrs["axis"])
    if d in ("bfloat16", "float16"):
        y = cx.emit(cx.R.cumsum(cx.emit(cx.R.astype(x, "float32")), axis=axis, dtype="float32"))
        return cx.R.astype(y, d)
    return cx.R.cumsum(x, axis=axis, dtype=d)


@lowering("argsort")
def _argsort(cx, node, x):
    """Relax argsort of an order-preserving integer key (stable: ties by index; NaNs last)"""
    R = cx.R
    d = _dt(node.inputs[0])
    axis = int(node.attrs["axis"])
    if d == "bool":  # the sort kernel takes 32- and 64-bit types
        x = cx.emit(R.astype(x, "int32"))
    elif _is_float(d):
        x = cx.emit(_float_sort_key(cx, node, x, d))
    return R.argsort(x, axis=axis, descending=False, dtype="int64")


def _float_sort_key(cx, node, x, d):
    """TE: an integer key in the order NumPy sorts floats: the IEEE bits with the magnitude bits of
    negatives flipped (a monotone map), -0.0 as +0.0 (NumPy: equal, so the stable order keeps them
    in place), every NaN the largest key (all NaNs last, in their order)."""
    tir, te = cx.tir, cx.te
    cd = "float32" if d in ("float16", "bfloat16") else d
    ity = "int64" if cd == "float64" else "int32"
    top = (1 << 63) - 1 if ity == "int64" else (1 << 31) - 1

    def f(t):
        def elem(*idx):
            v = t(*idx)
            if cd != d:
                v = v.astype(cd)
            bits = tir.reinterpret(ity, v)
            zero = tir.const(0, ity)
            key = tir.Select(bits < zero, tir.bitwise_xor(bits, tir.const(top, ity)), bits)
            key = tir.Select(v == tir.const(0.0, cd), zero, key)
            return tir.Select(tir.isnan(v), tir.const(top, ity), key)
        return te.compute(t.shape, elem, name="sort_key")
    return cx.emit_te(f, x, name="sort_key")


# ---------------------------------------------------------------- dense linear algebra (issue 17)
# TIR loop kernels written in graphad/lowering/linalg_tir.py (which says why not a LAPACK call)

@lowering("solve")
def _solve(cx, node, a, b):
    """TIR: partial-pivoting Gaussian elimination per matrix (graphad/lowering/linalg_tir.py)"""
    from .linalg_tir import lower_solve
    return lower_solve(cx, node, a, b)


@lowering("slogdet")
def _slogdet(cx, node, a):
    """TIR: partial-pivoting LU per matrix, sign and sum of log|pivot| (linalg_tir.py)"""
    from .linalg_tir import lower_slogdet
    return lower_slogdet(cx, node, a)


@lowering("cholesky")
def _cholesky(cx, node, a):
    """TIR: Cholesky-Banachiewicz per matrix, NaNs when not positive definite (linalg_tir.py)"""
    from .linalg_tir import lower_cholesky
    return lower_cholesky(cx, node, a)


@lowering("triangular_solve")
def _triangular_solve(cx, node, a, b):
    """TIR: forward / back substitution per matrix (linalg_tir.py)"""
    from .linalg_tir import lower_triangular_solve
    return lower_triangular_solve(cx, node, a, b)


@lowering("eigh")
def _eigh(cx, node, a):
    """TIR: cyclic Jacobi per matrix, sorted, signs fixed (linalg_tir.py)"""
    from .linalg_tir import lower_eigh
    return lower_eigh(cx, node, a)


@lowering("qr")
def _qr(cx, node, a):
    """TIR: Householder QR per matrix, LAPACK's signs (linalg_tir.py)"""
    from .linalg_tir import lower_qr
    return lower_qr(cx, node, a)


@lowering("svd")
def _svd(cx, node, a):
    """TIR: one-sided Jacobi per matrix, sorted, signs fixed (linalg_tir.py)"""
    from .linalg_tir import lower_svd
    return lower_svd(cx, node, a)
