"""Integer arithmetic that wraps around in compiled CPU code, as NumPy's and XLA's does.

TVM treats integer arithmetic as arithmetic on mathematical integers, twice over: its simplifier
rewrites `x + 1 > x` to True, and its LLVM code generator marks every add, subtract and multiply
of 32 or 64 bits as never overflowing (`nsw` for signed types, `nuw` for unsigned ones), which
LLVM folds on. An overflowing operation was then undefined: `x + 1 > x` over int32 compiled to
True at INT_MAX, where NumPy (and graphad's interpreter) wrap to INT_MIN and say False.

Two steps, one on each side of TVM's TIR passes (tir_lowering.lower_tir):
* `fenced_int_arith`, before the passes: each integer `a + b`, `a - b` and `a * b` of a kernel
  whose operand depends on a value the kernel reads (a buffer load, or a Let variable bound to
  one) is replaced by a call of graphad's operator for it (`graphad.int_wrap_add`, `_sub`,
  `_mul`; let_fence.register_op: pure, vectorizable) on the same two operands, which TVM's
  analyzer takes as an atom. Its simplifiers then cannot use the no-overflow assumption on such
  values, or move anything across the operation. Arithmetic on loop variables and constants alone
  (indices, a concatenation's bounds) is left as it is: it stays within the loops' extents, and
  TVM's analyzer needs to see it (vectorized ramps, buffer flattening). A kernel whose such
  arithmetic can overflow writes the fence calls itself (`wrapping`: an int64 arange's
  `start + i * step`, where `i * step` can leave the range though every value is in it).
* `wrapping_int_arith`, after them (after the host module's finalisation, before LLVM): each
  call becomes its operation on a type twice as wide, cast back:
  `int32(int64(a) + int64(b))`. The wide operation cannot overflow (the sum, difference or
  product of two n-bit integers fits in 2n bits), so its `nsw` is true, and the narrowing cast
  keeps the low n bits, which is the wrapped result. LLVM folds `trunc(add(sext a, sext b))`
  back into one n-bit add without the flag, so the machine code is that of the plain operation;
  int64 goes through int128 and folds back the same way. Unsigned subtraction widens to a
  signed type (its difference can be negative); unsigned addition and multiplication to an
  unsigned one. Types narrower than 32 bits only lose the fence: TVM emits their operations
  without flags.

The casts go in after TVM's passes on purpose. Put in before them (the sixteenth session's
attempt), a chain of n nested casts took TVM's simplifiers time exponential in n (15 s for ten
increments), and binding each to a Let instead left vector-typed integer Lets that TVM's LLVM
code generator refused. A fence call is one atom to the analyzer, whatever it holds; after the
passes, only the code generator reads the casts, once each.

CUDA builds (tir_lowering.fenced_pipeline_name) do neither step, and the fence calls a kernel
was written with become plain operations (`plain_int_arith`): the int128 form is untried on a GPU
(none was at hand when this was written), so there integer overflow stays undefined
(docs/user_guide.md, "Numerics").
"""
from __future__ import annotations

from ._tvm import map_prim_funcs, walk
from .let_fence import register_op

# the operation each fence stands for, by the name of its TIR node
OP_NAMES = {"Add": "graphad.int_wrap_add", "Sub": "graphad.int_wrap_sub", "Mul": "graphad.int_wrap_mul"}

_WIDE_SIGNED = {32: "int64", 64: "int128"}
_WIDE_UNSIGNED = {32: "uint64", 64: "uint128"}


def wrap_ops(tvm) -> dict:
    """{TIR node class (Add, Sub, Mul): the operator standing for it on wrapping integers}. Each
    takes the two operands as its arguments: pure (TVM's passes may still share, hoist and
    vectorize a call), an atom to the analyzer, whose simplifiers therefore cannot move anything
    across the operation (given `b - max(a * b, b)` as one expression, TVM's simplifier made it
    `min(b - a * b, 0)`, true only without overflow)."""
    return {getattr(tvm.tirx, node): register_op(tvm, name, "Pure", name.replace(".", "_"))
            for node, name in OP_NAMES.items()}


def _int_type(expr) -> tuple[str, int, int] | None:
    """("int" or "uint", bits, lanes) of an integer-typed expression, None for any other type
    (bool, floats and handles included)."""
    name = str(getattr(expr.ty, "dtype", expr.ty))  # TVM 0.27: a PrimExpr's type lives in .ty
    base, _, lanes = name.partition("x")
    for kind in ("uint", "int"):
        if base.startswith(kind) and base[len(kind):].isdigit():
            return kind, int(base[len(kind):]), int(lanes) if lanes else 1
    return None


def _is_fence(call, ops) -> bool:
    return any(call.op.same_as(op) for op in ops)


def _data_check(tvm, body, ops):
    """A function telling whether a TIR expression of `body` depends on a value the kernel
    reads: a buffer load, a fenced operation (which only fences such values), or a Let variable
    bound to such an expression. Memoized on the objects' handles (each entry keeps its object
    alive, so a handle cannot be reused for another): a chain of fenced operations is checked in
    constant time per link."""
    tir = tvm.tirx
    bindings: dict = {}  # Let / LetStmt variable handle -> its value

    def bind(node):
        bindings[node.var.__chandle__()] = node.value
    walk(body, [((tir.Let, tir.LetStmt), bind)])
    memo: dict = {}

    def reads_data(expr) -> bool:
        key = expr.__chandle__()
        known = memo.get(key)
        if known is not None:
            return known[1]
        memo[key] = (expr, False)  # (a Let variable's value cannot refer to the variable itself)
        if isinstance(expr, tvm.ir.TensorLoad):  # (TVM 0.27: tirx.BufferLoad makes an ir.TensorLoad)
            found = True
        elif isinstance(expr, tvm.ir.Call) and _is_fence(expr, ops):
            found = True
        elif isinstance(expr, tir.Var):
            value = bindings.get(key)
            found = value is not None and reads_data(value)
        else:
            hits: list = []

            def visit(node):
                if node.same_as(expr):
                    return
                if isinstance(node, tir.Var) or isinstance(node, tvm.ir.TensorLoad) or (
                        isinstance(node, tvm.ir.Call) and _is_fence(node, ops)):
                    if not hits and reads_data(node):
                        hits.append(node)
            walk(expr, [((tir.Var, tvm.ir.TensorLoad, tvm.ir.Call), visit)])
            found = bool(hits)
        memo[key] = (expr, found)
        return found
    return reads_data


def wrapping(tvm, op: str, a, b):
    """`a + b`, `a - b` or `a * b` (`op`: "add", "sub", "mul") of two integer TIR expressions as
    its fence call, for a kernel whose arithmetic on loop variables and constants alone may
    overflow (relax_ops `_arange`: `start + i * step`, where `i * step` can leave the range though
    every value is in it). CPU builds compute it wrapped (`wrapping_int_arith`); GPU builds as the
    plain operation (`plain_int_arith`)."""
    node = {"add": tvm.tirx.Add, "sub": tvm.tirx.Sub, "mul": tvm.tirx.Mul}[op]
    return tvm.ir.Call(wrap_ops(tvm)[node], [a, b], ret_ty=a.ty)


def fenced_int_arith(tvm, mod):
    """(`mod`, scheduled TIR before TVM's TIR passes, with each integer +, - and * that depends on
    a value its kernel reads replaced by a call of its `wrap_ops` fence (`mod` itself when none
    is); whether the result holds any fence call, its own or one the kernels were written with
    (`wrapping`), which `wrapping_int_arith` must then replace)."""
    import tvm_ffi
    ops = wrap_ops(tvm)
    tir = tvm.tirx
    out = None
    held: list = []

    def note(call):
        if not held and _is_fence(call, tuple(ops.values())):
            held.append(call)
        return call
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tir.PrimFunc):
            continue
        reads_data = _data_check(tvm, func.body, tuple(ops.values()))

        def fence(e):
            if _int_type(e) is None or not (reads_data(e.a) or reads_data(e.b)):
                return e
            return tvm.ir.Call(ops[type(e)], [e.a, e.b], ret_ty=e.ty)
        body = tvm_ffi.structural_map(func.body, [((tir.Add, tir.Sub, tir.Mul), fence), (tvm.ir.Call, note)],
                                      order="post")
        if not body.same_as(func.body):
            if out is None:
                out = mod.clone()
            out[gv] = func.with_body(body)
    return (mod, bool(held)) if out is None else (out, True)


def wrapping_int_arith(tvm, mod):
    """`mod` (after TVM's TIR passes and the host finalisation) with each fence call replaced by
    its operation computed twice as wide and cast back (32 and 64 bits), or by the plain
    operation (narrower types)."""
    ops = wrap_ops(tvm)
    tir = tvm.tirx

    def unwrap(call):
        node = next((n for n, op in ops.items() if call.op.same_as(op)), None)
        if node is None:
            return call
        a, b = call.args
        kind, bits, lanes = _int_type(call)
        if bits not in _WIDE_SIGNED:
            return node(a, b)
        wide = (_WIDE_SIGNED if kind == "int" or node is tir.Sub else _WIDE_UNSIGNED)[bits]
        wide = wide if lanes == 1 else f"{wide}x{lanes}"
        return tir.Cast(str(getattr(call.ty, "dtype", call.ty)), node(tir.Cast(wide, a), tir.Cast(wide, b)))
    return map_prim_funcs(mod, [(tvm.ir.Call, unwrap)])


def plain_int_arith(tvm, mod):
    """`mod` with each fence call replaced by its plain operation: the GPU builds' form
    (tir_lowering.fenced_pipeline_name), where integer overflow stays undefined."""
    ops = wrap_ops(tvm)

    def plain(call):
        node = next((n for n, op in ops.items() if call.op.same_as(op)), None)
        return call if node is None else node(*call.args)
    return map_prim_funcs(mod, [(tvm.ir.Call, plain)])
