"""Float Let values kept out of TVM's arithmetic analyzer while TVM's TIR passes run.

About a dozen of TVM's TIR passes (each an IRMutatorWithAnalyzer: FlattenBuffer, LowerIntrin,
InjectVirtualThread, InjectPermutedLayout, RenormalizeSplitPattern, InsertHoistIfThenElse, ...)
bind every pure Let value in their arithmetic analyzer, and the analyzer's simplifiers substitute
the earlier bindings into each later one. A kernel whose body is a chain of Lets, as graphad's
float32 sin and cos are (ten nested Lets: the reduction's steps, the polynomial), made each such
pass take 4-5 ms: measured on this project's 2-vCPU machine, TVM's TIR passes on the sin kernel
of `jvp(grad(sum(sin)))` over 2,048 elements took 33 ms, the host finalisation 6.3 ms; with the
float Lets fenced, 13.5 and 1.7 ms, and LLVM received the same IR (identical but for the
addresses TVM prints into its alias metadata).

The fence is a call of an operator of graphad's own (`graphad.let_fence`, registered once per
process) around the value of every Let whose type is a float: TVM counts it as opaque (so the
analyzer does not bind the variable) and as vectorizable (so VectorizeLoop vectorizes through
it). `unfenced` takes the calls out again after the TIR pipeline, before LLVM sees the module, so
what LLVM compiles (its contractions, its folding) is what it compiled without the fence. Only
float values are fenced: the analyzer reasons about integers (bounds, strides, the ramps that
vectorized loads need), and a float value never indexes a buffer; integer and bool Lets stay
visible to it.
"""
from __future__ import annotations

import threading

from ._tvm import map_prim_funcs

OP_NAME = "graphad.let_fence"

INDEX_OP_NAME = "graphad.index_fence"

_LOCK = threading.Lock()
_OPS: dict = {}


def register_op(tvm, name: str, effect: str, printer: str):
    """The operator `name` of graphad's own, registered on first use (TVM's operator registry is
    process-wide): an identity with the call effect `effect` ("Opaque", "Pure"), vectorizable,
    printed as `printer`; TVM's analyzer takes any call of it as an atom (the fences here, the
    rare-path marker of rare_path.py)."""
    op = _OPS.get(name)
    if op is None:
        with _LOCK:
            op = _OPS.get(name)
            if op is None:
                if name not in tvm.ir.Op.list_op_names():
                    tvm.ir._ffi_api.RegisterOp(name, "identity that TVM's TIR analyzer cannot see through "
                                                     "(graphad/lowering/let_fence.py)")
                op = tvm.ir.Op.get(name)
                # (set once per process: TVM refuses to set an attribute again at the same level,
                # as a reloaded copy of this module would)
                attrs = {
                    "TCallEffectKind": getattr(tvm.tirx.CallEffectKind, effect).value,
                    "TVectorizable": True,
                    "TScriptPrinterName": printer,  # printing a fenced module
                }
                for key, value in attrs.items():
                    if op.get_attr(key) is None:  # (has_attr asks whether any operator has it)
                        tvm.ir.register_op_attr(name, key, value)
                _OPS[name] = op
    return op


def _op(tvm):
    """The Let fence: opaque, since IRMutatorWithAnalyzer binds a Let only when its value is at
    most pure."""
    return register_op(tvm, OP_NAME, "Opaque", "graphad_let_fence")


def index_op(tvm):
    """The index fence (index_fence.py): pure, so that TVM's passes may still hoist, share and
    vectorize the index it wraps; the analyzer takes any call as an atom."""
    return register_op(tvm, INDEX_OP_NAME, "Pure", "graphad_index_fence")


def _is_float(tvm, expr) -> bool:
    """Whether `expr` is a float scalar or vector (float16/32/64, bfloat16, the float8 kinds; not a
    pointer to floats, whose type prints with its element type)."""
    return isinstance(expr.ty, tvm.ir.PrimType) and "float" in str(expr.ty)


def fenced(tvm, mod):
    """`mod` with the value of each float-typed Let of its PrimFuncs wrapped in the fence (`mod`
    itself when it has none)."""
    op = _op(tvm)

    def wrap(let):
        if not _is_float(tvm, let.value):
            return let
        return tvm.tirx.Let(let.var, tvm.ir.Call(op, [let.value], ret_ty=let.value.ty), let.body)
    return map_prim_funcs(mod, [(tvm.tirx.Let, wrap)])


def unfenced(tvm, mod):
    """`mod` with every fence call (of either fence) replaced by its argument (after TVM's TIR
    passes)."""
    ops = (_op(tvm), index_op(tvm))

    def strip(call):
        return call.args[0] if any(call.op.same_as(op) for op in ops) else call
    return map_prim_funcs(mod, [(tvm.ir.Call, strip)])
