"""Integer arithmetic that wraps around in compiled code, as NumPy's and XLA's does.

TVM treats integer arithmetic as arithmetic on mathematical integers: its LLVM code generator
marks every add, subtract and multiply of 32 or 64 bits as never overflowing (`nsw` for signed
types, `nuw` for unsigned ones), and its simplifier reasons the same way. An overflowing
operation is then undefined, and LLVM used that: `x + 1 > x` over int32 compiled to True at
INT_MAX, where NumPy (and graphad's interpreter) wrap to INT_MIN and say False.

`wrapping_primfunc` rewrites every integer `a + b`, `a - b` and `a * b` in the values a kernel
stores, where an operand depends on a value it reads, into the same operation on a type twice as
wide, cast back: `int32(int64(a) + int64(b))`. The wide operation cannot overflow (the sum,
difference or product of two n-bit integers fits in 2n bits), and the narrowing cast keeps the
low n bits, which is the wrapped result; LLVM folds `trunc(add(sext a, sext b))` back into one
n-bit add, without the no-overflow flag, so the machine code is that of the plain operation (an
int64 operation goes through int128 and folds back the same way: the same vector instructions
as before, none on 128 bits, in the kernels measured). Unsigned subtraction widens to a signed
type (its difference can be negative); unsigned addition and multiplication to an unsigned one.
TVM's simplifier takes the narrowing cast of a sum that may not fit as opaque: it neither folds
`x < int32(int64(x) + 1)` nor turns it back into `x + 1`.

Only values are rewritten: the indices of buffer loads and stores, loop bounds and arithmetic on
loop variables and constants alone stay as they are (TVM's vectorizer and its buffer flattening
read them; an index that overflows is out of bounds anyway). CPU builds run this first in
tir_lowering.lower_tir, on every kernel and native loop before TVM's TIR passes. CUDA builds do
not run it (their int64 form, through int128, is untried there: no GPU was at hand when this was
written), so on a GPU integer overflow stays undefined (docs/user_guide.md, "Numerics").
"""
from __future__ import annotations

from ._tvm import load_tvm, walk
from .let_fence import let_op

_WIDE_SIGNED = {8: "int16", 16: "int32", 32: "int64", 64: "int128"}
_WIDE_UNSIGNED = {8: "uint16", 16: "uint32", 32: "uint64", 64: "uint128"}


def _int_type(e) -> tuple[str, int, int] | None:
    """("int" or "uint", bits, lanes) of an integer-typed expression, None for any other type
    (bool included)."""
    name = _dtype(e)
    base, _, lanes = name.partition("x")
    for kind in ("uint", "int"):
        if base.startswith(kind) and base[len(kind):].isdigit():
            bits = int(base[len(kind):])
            return (kind, bits, int(lanes) if lanes else 1) if bits in _WIDE_SIGNED else None
    return None


def _dtype(e) -> str:
    ty = e.ty  # TVM 0.27: a PrimExpr's type lives in .ty
    return str(getattr(ty, "dtype", ty))


def _wide(kind: str, bits: int, lanes: int, signed: bool) -> str:
    name = (_WIDE_SIGNED if kind == "int" or signed else _WIDE_UNSIGNED)[bits]
    return name if lanes == 1 else f"{name}x{lanes}"


def wrapping_value(expr):
    """`expr` (a TIR value expression) with each integer +, - and * of values it reads computed
    wide and cast back (see the module docstring); `expr` itself when it has none.

    Each such operation is bound to a variable of its own through the Let fence (let_fence.py:
    opaque, so TVM's analyzer does not substitute it; taken off before LLVM), the Lets chained
    around the whole expression in the order they are computed. Nested in one another, as the
    operations are, the casts (or Lets) of a chain of n operations (a loop counter incremented n
    times in one kernel) took TVM's simplifier time exponential in n (RemoveNoOp, StmtSimplify:
    1.8 s at n = 8, 15 s at n = 10); bound to variables before one statement (LetStmts), they
    lost their definitions in TVM's vectorizer. Arithmetic on loop variables and constants alone
    (an iota, a concatenation's bounds) is left as it is: it cannot overflow within the loop's
    extents, and TVM's analyzer needs to see it."""
    import tvm_ffi
    tvm = load_tvm()
    tir = tvm.tirx
    fence = let_op(tvm)
    loads: dict = {}
    bound: list = []  # variables of the Let expressions inside `expr`: their uses stay inside
    bindings: list = []  # (variable, value) of each wrapped operation, in the order computed
    data: set = set()  # names of the placeholders and binding variables: values read, not indices

    def hide(load):  # a placeholder per load: its indices are index arithmetic, not values
        var = tir.Var(f"__graphad_load{len(loads)}", _dtype(load))
        loads[var.name] = load
        data.add(var.name)
        return var

    def inner(let):
        bound.append(let.var)

    def uses(e, pred) -> bool:
        found = []
        walk(e, [(tir.Var, lambda v: found.append(True) if pred(v) else None)])
        return bool(found)

    def arith(e):
        t = _int_type(e)
        if t is None or not uses(e, lambda v: v.name in data):
            return e
        kind, bits, lanes = t
        wide = _wide(kind, bits, lanes, signed=isinstance(e, tir.Sub))
        narrow = tir.Cast(_dtype(e), type(e)(tir.Cast(wide, e.a), tir.Cast(wide, e.b)))
        if bound and uses(narrow, lambda v: any(v.same_as(b) for b in bound)):
            return narrow  # (it cannot move out of the Let that defines its operand)
        var = tir.Var(f"__graphad_wrap{len(bindings)}", _dtype(e))
        data.add(var.name)
        bindings.append((var, tvm.ir.Call(fence, [narrow], ret_ty=narrow.ty)))
        return var

    # (TVM 0.27: tirx.BufferLoad is a function making an ir.TensorLoad)
    hidden = tvm_ffi.structural_map(expr, [(tvm.ir.TensorLoad, hide)], order="pre")
    if not loads:
        return expr
    walk(hidden, [(tir.Let, inner)])
    mapped = tvm_ffi.structural_map(hidden, [((tir.Add, tir.Sub, tir.Mul), arith)], order="post")
    if mapped.same_as(hidden):
        return expr
    for var, value in reversed(bindings):
        mapped = tir.Let(var, value, mapped)
    return tvm_ffi.structural_map(mapped, [(tir.Var, lambda v: loads.get(v.name, v))], order="post")


def wrapping_primfunc(func):
    """`func` with the values it stores computed with wrapping integer arithmetic."""
    import tvm_ffi
    tir = load_tvm().tirx

    def store(s):
        value = wrapping_value(s.value)
        return s if value.same_as(s.value) else tir.BufferStore(s.buffer, value, s.indices, s.span)

    body = tvm_ffi.structural_map(func.body, [(tir.BufferStore, store)], order="post")
    return func if body.same_as(func.body) else func.with_body(body)


def wrapping_module(mod):
    """`mod` with `wrapping_primfunc` applied to each PrimFunc (`mod` itself when none changed)."""
    tvm = load_tvm()
    out = None
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            new = wrapping_primfunc(func)
            if not new.same_as(func):
                if out is None:
                    out = mod.clone()
                out[gv] = new
    return mod if out is None else out
