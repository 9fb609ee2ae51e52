"""Half types for the TVM back end: bfloat16 is computed in float32, and the functions that round
(exp, sin, pow, ...) of float16 and bfloat16 in float64.

TVM 0.27 stores bfloat16 and casts it, but many of its operators refuse it (isnan, power, argmax's
type check) or compute it at reduced precision. `widen_bfloat16(graph)` rewrites a graph before
lowering so that bfloat16 only appears in storage: each node that reads or makes bfloat16 values
gets float32 operands (an exact `astype`), runs in float32, and its bfloat16 results are rounded
back with an `astype`. That is also what the reference interpreter's ml_dtypes kernels do per
operation (compute wider, round the result), so compiled and interpreted bfloat16 agree up to the
accumulation order of reductions. Graph inputs and outputs keep their bfloat16 types.

A float32 result rounded to a half type is the exact result rounded once for +, -, *, / and
sqrt (float32 has more than twice a half type's bits, plus 2), not for a function evaluated to
float32's accuracy and rounded to float32 first: where that float32 value lands on a half-type tie,
the second rounding goes the wrong way (float16 arctan(6.4296875) came out 1.416 for 1.417). So the
primitives of `IN_F64` on float16 or bfloat16 operands run in float64 (their float64 lowerings:
libm, or graphad's float64 algorithms), and their results are cast from float64 straight to the
half type, which relax_ops._astype rounds once: to float32 by round-to-odd, then to the half type.
"""
from __future__ import annotations

import numpy as np

from ..ir.builder import GraphBuilder
from ..ir.core import Graph

BF16, F16, F32, F64 = "bfloat16", "float16", "float32", "float64"

# the primitives whose float16 and bfloat16 results are computed in float64 and rounded once
# (module doc); the others on half types round correctly from float32 (+, -, *, /, sqrt, ...) or
# are exact (neg, abs, floor, maximum, fmod, ...)
IN_F64 = frozenset({
    "exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "sigmoid", "erf", "erfc", "erfinv", "rsqrt", "cbrt",
    "lgamma", "polygamma", "pow", "arctan2", "hypot", "logaddexp"})


# the primitives that accumulate (sums of products): on float16 they run in float32 and round the
# result once, as the reference interpreter's NumPy float16 loops (pairwise sums and matrix products
# in float) and bfloat16 here do; TVM accumulated float16 in float16 (a float16 conv2d of 72 terms
# per output was up to 994 ulps off, matmul over 300 terms 189, sum 5)
ACC_F32 = frozenset({"sum", "prod", "matmul", "einsum", "conv2d"})


def uses_dtypes(graph: Graph, names: tuple[str, ...]) -> bool:
    """Whether any input or node result of `graph` has one of the dtypes `names`."""
    return any(v.type.dtype.name in names for v in graph.inputs) or \
        any(o.type.dtype.name in names for n in graph.nodes for o in n.outputs)


def _widen_attrs(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if k == "dtype" and str(v) == BF16:
            v = F32
        elif isinstance(v, np.ndarray) and v.dtype.name == BF16:
            v = v.astype(np.float32)
        out[k] = v
    return out


def _in_f64(n) -> bool:
    """Whether node `n` is a function of `IN_F64` with a half-type result."""
    return n.prim.name in IN_F64 and n.outputs[0].type.dtype.name in (BF16, F16)


def _acc_f32(n) -> bool:
    """Whether node `n` is an accumulation of `ACC_F32` with a float16 result."""
    return n.prim.name in ACC_F32 and n.outputs[0].type.dtype.name == F16


def widen_bfloat16(graph: Graph) -> Graph:
    """`graph` with bfloat16 arithmetic and float16 accumulations (`ACC_F32`) done in float32 and
    the half-type functions of `IN_F64` in float64 (module doc); the graph itself if there is
    nothing to rewrite."""
    if not uses_dtypes(graph, (BF16,)) and not any(_in_f64(n) or _acc_f32(n) for n in graph.nodes):
        return graph
    from ..prims import PRIMITIVES
    astype = PRIMITIVES["astype"]
    b = GraphBuilder(graph.name)
    env = {}
    for v, name in zip(graph.inputs, graph.input_names):
        env[id(v)] = b.add_input(v.type, name)
    wide: dict[tuple[int, str], object] = {}  # (id(half-type value), dtype) -> its wider copy, made once

    def widened(v, dtype: str):
        w = wide.get((id(v), dtype))
        if w is None:
            src = as_f32(v) if dtype == F64 and v.type.dtype.name == BF16 else v
            (w,) = b.emit(astype, [src], {"dtype": dtype}, v.node.loc if v.node is not None else None)
            wide[(id(v), dtype)] = w
        return w

    def as_f32(v):
        return widened(v, F32)

    for n in graph.nodes:
        ins = [env[id(v)] for v in n.inputs]
        if _in_f64(n):
            # float64 operands (exact), a float64 result cast straight to the half type: rounded once
            half = n.outputs[0].type.dtype.name
            args = [widened(v, F64) if v.type.dtype.name == half else v for v in ins]
            outs = [b.emit(astype, [w], {"dtype": half}, n.loc)[0] for w in b.emit(n.prim, args, n.attrs, n.loc)]
            for o, w in zip(n.outputs, outs):
                env[id(o)] = w
            continue
        if _acc_f32(n):
            # float32 operands (exact), the float32 result rounded once to float16
            args = [widened(v, F32) if v.type.dtype.name == F16 else v for v in ins]
            outs = [b.emit(astype, [w], {"dtype": F16}, n.loc)[0] for w in b.emit(n.prim, args, n.attrs, n.loc)]
            for o, w in zip(n.outputs, outs):
                env[id(o)] = w
            continue
        touches = any(v.type.dtype.name == BF16 for v in ins) or any(o.type.dtype.name == BF16 for o in n.outputs)
        if not touches:
            outs = b.emit(n.prim, ins, n.attrs, n.loc)
        elif n.prim is astype:  # a cast to or from bfloat16 goes through float32 (exact one way)
            x = as_f32(ins[0]) if ins[0].type.dtype.name == BF16 else ins[0]
            target = str(n.attrs["dtype"])
            if target == BF16:
                if x.type.dtype.name not in (F32, F64):  # (float64: rounded once, relax_ops._astype)
                    # 32- and 64-bit integers through float64, exact below 2^53: through float32
                    # one above 2^24 was rounded twice (2^24 + 2^16 + 1 gave 2^24, not 2^24 + 2^17)
                    # (not named `wide`: that is the cache `widened` reads)
                    big_int = x.type.dtype.is_int and x.type.dtype.np.itemsize >= 4
                    (x,) = b.emit(astype, [x], {"dtype": F64 if big_int else F32}, n.loc)
                outs = b.emit(astype, [x], {"dtype": BF16}, n.loc)
            else:
                outs = [x] if x.type.dtype.name == target else b.emit(astype, [x], {"dtype": target}, n.loc)
        else:
            args = [as_f32(v) if v.type.dtype.name == BF16 else v for v in ins]
            outs = b.emit(n.prim, args, _widen_attrs(n.attrs), n.loc)
            outs = [b.emit(astype, [w], {"dtype": BF16}, n.loc)[0] if o.type.dtype.name == BF16 else w
                    for o, w in zip(n.outputs, outs)]
        for o, w in zip(n.outputs, outs):
            env[id(o)] = w
    return b.finish([env[id(v)] for v in graph.outputs])
