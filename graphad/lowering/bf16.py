"""bfloat16 for the TVM back end: every bfloat16 operation is computed in float32.

TVM 0.27 stores bfloat16 and casts it, but many of its operators refuse it (isnan, power, argmax's
type check) or compute it at reduced precision. `widen_bfloat16(graph)` rewrites a graph before
lowering so that bfloat16 only appears in storage: each node that reads or makes bfloat16 values
gets float32 operands (an exact `astype`), runs in float32, and its bfloat16 results are rounded
back with an `astype`. That is also what the reference interpreter's ml_dtypes kernels do per
operation (compute wider, round the result), so compiled and interpreted bfloat16 agree up to the
accumulation order of reductions. Graph inputs and outputs keep their bfloat16 types.
"""
from __future__ import annotations

import numpy as np

from ..ir.builder import GraphBuilder
from ..ir.core import Graph

BF16, F32 = "bfloat16", "float32"


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


def widen_bfloat16(graph: Graph) -> Graph:
    """`graph` with bfloat16 arithmetic done in float32 (module doc); the graph itself if it has
    no bfloat16 value."""
    if not uses_dtypes(graph, (BF16,)):
        return graph
    from ..prims import PRIMITIVES
    astype = PRIMITIVES["astype"]
    b = GraphBuilder(graph.name)
    env = {}
    for v, name in zip(graph.inputs, graph.input_names):
        env[id(v)] = b.add_input(v.type, name)
    wide: dict[int, object] = {}  # id(bfloat16 value) -> its float32 copy, made once

    def as_f32(v):
        w = wide.get(id(v))
        if w is None:
            (w,) = b.emit(astype, [v], {"dtype": F32}, v.node.loc if v.node is not None else None)
            wide[id(v)] = w
        return w

    for n in graph.nodes:
        ins = [env[id(v)] for v in n.inputs]
        touches = any(v.type.dtype.name == BF16 for v in ins) or any(o.type.dtype.name == BF16 for o in n.outputs)
        if not touches:
            outs = b.emit(n.prim, ins, n.attrs, n.loc)
        elif n.prim is astype:  # a cast to or from bfloat16 goes through float32 (exact one way)
            x = as_f32(ins[0]) if ins[0].type.dtype.name == BF16 else ins[0]
            target = str(n.attrs["dtype"])
            if target == BF16:
                if x.type.dtype.name != F32:
                    (x,) = b.emit(astype, [x], {"dtype": F32}, n.loc)
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
