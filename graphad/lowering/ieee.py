"""Keep IEEE 754 results through TVM's TIR simplifier.

TVM's arithmetic simplifier, which every build runs many times, rewrites floating-point
expressions as if they were real numbers:
  * cancellation: x - x -> 0, (x + y) - y -> x, x - (x + y) -> 0 - y, select(c, y, z) - z ->
    select(c, y - z, 0): wrong when x or y is inf or NaN (inf - inf is NaN, not 0);
  * comparisons: e == e -> true, e != e -> false (NaN);
  * literal folding: x * 0.0 -> 0.0 (NaN * 0 is NaN), x + 0.0 -> x and x - (-0.0) -> x (signed
    zeros), x / c -> x * (1 / c) (one rounding more), and their vector forms.
These patterns appear as soon as kernels fuse: `(x + x) - x` after inlining, `x * zeros` once a
`full` is inlined, `exp(x) - exp(x)` after CSE reads one buffer twice.

`guard_primfunc` rewrites a scheduled PrimFunc so that none of these rules can match, while LLVM
(which keeps IEEE semantics without fast-math flags) compiles the same instructions as before:
  * every float a - b becomes a + b * (-1.0); b * (-1.0) is -b exactly for every b (signed zeros
    and NaN included), and LLVM folds the pair back into one fsub ((-0.0) - b would not do: when b
    is that same -0.0 the simplifier's own x - x -> 0 fires);
  * every float literal that is a direct operand of +, -, * or / becomes a bit-cast of its integer
    bit pattern (`reinterpret`), which the simplifier does not fold and LLVM folds to the constant;
  * every float comparison a OP b becomes a OP (b * 1): the simplifier decides a == b by
    simplifying a - b, so e == e was folded to true (false for NaN in IEEE); a != b becomes
    a < b or a > b or isnan(a) or isnan(b), since TVM's LLVM codegen emits an ordered "one"
    compare (false for NaN); not (a < b) becomes a >= b or isnan(a) or isnan(b) (the simplifier
    dropped the NaN case).
"""
from __future__ import annotations

import numpy as np

from ._tvm import load_tvm, map_prim_funcs

_INT_OF = {16: ("int16", np.float16, np.int16), 32: ("int32", np.float32, np.int32),
           64: ("int64", np.float64, np.int64)}


def _float_dtype(e) -> str | None:
    """The scalar dtype name of a float-typed expression (vector lanes dropped), else None."""
    ty = getattr(e, "ty", None)  # TVM 0.27: PrimExpr types live in .ty
    name = str(getattr(ty, "dtype", ty))
    base = name.split("x")[0]
    return base if base.startswith("float") else None


def opaque_float(value: float, dtype: str):
    """A TIR float constant the simplifier cannot fold (a bit-cast of its bits); other dtypes and
    bfloat16 get a plain constant."""
    tir = load_tvm().tirx
    bits = int(dtype[5:]) if dtype.startswith("float") else 0
    if bits not in _INT_OF:
        return tir.const(value, dtype)
    ity, fnp, inp = _INT_OF[bits]
    raw = int(np.asarray(value, fnp).view(inp))
    if raw == 0:  # TVM's codegen takes reinterpret(0) for a null pointer: +0.0 is |-0.0|
        return tir.abs(opaque_float(-0.0, dtype))
    return tir.reinterpret(dtype, tir.const(raw, ity))


def guard_primfunc(func):
    """`func` with float subtractions and arithmetic literals hidden from TVM's simplifier."""
    import tvm_ffi
    tvm = load_tvm()
    tir = tvm.tirx

    def opaque_literal(c):
        d = _float_dtype(c)
        return opaque_float(c.value, d) if d else c

    def hide(e):
        return opaque_literal(e) if isinstance(e, tir.FloatImm) else e

    def arith(e):
        if _float_dtype(e) is None:
            return e
        a, b = hide(e.a), hide(e.b)
        if isinstance(e, tir.Sub):
            # scheduled but not yet vectorized: scalar expressions, so a scalar -1.0 fits
            return tir.Add(a, tir.Mul(b, opaque_float(-1.0, _float_dtype(e))))
        if a.same_as(e.a) and b.same_as(e.b):
            return e
        return type(e)(a, b)

    def compare(e):
        d = _float_dtype(e.a)
        if d is None:
            return e
        # b * 1 is b for every b, but no longer the same expression as a: the simplifier
        # proves a == b by simplifying a - b to 0, which would make NaN == NaN true
        b = tir.Mul(e.b, opaque_literal(tir.const(1.0, d)))
        if isinstance(e, tir.NE):
            # TVM emits an ordered fcmp one (NaN != NaN false) and rewrites not (a == b) back
            # into a != b; spelled out, LLVM merges this into the unordered compare again
            return tir.Or(tir.Or(tir.LT(e.a, b), tir.GT(e.a, b)), tir.Or(tir.isnan(e.a), tir.isnan(e.b)))
        return type(e)(e.a, b)

    inverse = {tir.LT: tir.GE, tir.LE: tir.GT, tir.GT: tir.LE, tir.GE: tir.LT}

    def negation(e):
        c = e.a
        if not isinstance(c, (tir.EQ, tir.NE, tir.LT, tir.LE, tir.GT, tir.GE)) or _float_dtype(c.a) is None:
            return e
        # the simplifier turns not (x < 0) into x >= 0, which is false for NaN: spell out the
        # complement with its NaN case (not (a == b) is a != b, expanded below; not (a != b) is
        # a == b, ordered)
        if isinstance(c, tir.EQ):
            return tir.NE(c.a, c.b)
        if isinstance(c, tir.NE):
            return tir.EQ(c.a, c.b)
        return tir.Or(inverse[type(c)](c.a, c.b), tir.Or(tir.isnan(c.a), tir.isnan(c.b)))

    body = tvm_ffi.structural_map(func.body, [(tir.Not, negation)], order="post")
    body = tvm_ffi.structural_map(body, [((tir.Add, tir.Sub, tir.Mul, tir.Div), arith),
                                              ((tir.EQ, tir.NE, tir.LT, tir.LE, tir.GT, tir.GE), compare)],
                                  order="post")
    return func.with_body(body)


def guard_module(mod):
    """A copy of `mod` whose PrimFuncs went through `guard_primfunc`."""
    tvm = load_tvm()
    out = mod.clone()
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            out[gv] = guard_primfunc(func)
    return out


# CUDA's bit-cast intrinsics: TVM's CUDA codegen prints reinterpret(x) as *(float *)(&(x)), which
# takes the address of its operand, and NVRTC refuses the address of a literal
_CUDA_BITCAST = {"float16": "__short_as_half", "float32": "__int_as_float", "float64": "__longlong_as_double"}


def cuda_literals(mod):
    """A copy of `mod` whose opaque float literals (`opaque_float`: a reinterpret of an integer
    constant) are CUDA bit-cast intrinsic calls, which the simplifier does not fold either (`mod`
    itself when it has none)."""
    tvm = load_tvm()
    tir = tvm.tirx
    reinterpret = tvm.ir.Op.get("tirx.reinterpret")

    def spell(e):
        if not (e.op.same_as(reinterpret) and len(e.args) == 1
                and isinstance(e.args[0], tir.IntImm)):
            return e
        dtype = str(getattr(e.ty, "dtype", e.ty))  # TVM 0.27: PrimExpr types live in .ty
        name = _CUDA_BITCAST.get(dtype)  # vector lanes ("float32x4") are left alone
        return tir.call_pure_extern(dtype, name, e.args[0]) if name else e

    return map_prim_funcs(mod, [(tvm.ir.Call, spell)])
