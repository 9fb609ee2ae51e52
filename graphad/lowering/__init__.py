"""Graph -> Relax lowering and the compile pipelines (CPU with graphad's schedules, CUDA with dlight).

`lower_graph(graph)` emits ONE Relax function whose parameters are the graph inputs and whose
result is the single output tensor, or a tuple of the outputs. Every node goes through the
primitive's entry in `relax_ops.LOWERINGS`; a primitive without one raises CompileError naming it.
Only nodes the outputs depend on are lowered. TVM is imported here lazily (never by `import graphad`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError

__all__ = ["lower_graph", "lower_graph_info", "LoweredGraph", "missing_lowerings", "compile_module"]

_REVISION: str | None = None

# graphad modules outside lowering/ whose code decides what the lowering emits, hashed with it:
# erfinv's and polygamma's algorithms (written once in prims/elementwise.py and lowered from
# there), einsum's lone axes (prims/linalg.py), the graphs bf16.py builds (ir/builder.py). A
# change to one changes compiled code as much as a change in lowering/ does (an edited
# lone_axes was served another checkout's code from a shared disk cache);
# tests/test_runtime_cache.py checks that every graphad module lowering/ imports is here or is
# a plain data structure
CODEGEN_ELSEWHERE = ("prims.elementwise", "prims.linalg", "ir.builder")


def lowering_revision() -> str:
    """A content hash of the lowering and scheduling code (and of CODEGEN_ELSEWHERE, the modules
    whose code the lowering emits): part of every cache key, so a change to what a graph
    compiles to can never be served stale code from an older on-disk entry."""
    global _REVISION
    if _REVISION is None:
        import hashlib
        import os
        h = hashlib.sha256()
        here = os.path.dirname(os.path.abspath(__file__))
        paths = [os.path.join(here, n) for n in sorted(os.listdir(here)) if n.endswith(".py")]
        paths += [os.path.join(os.path.dirname(here), *m.split(".")) + ".py" for m in CODEGEN_ELSEWHERE]
        for path in paths:
            with open(path, "rb") as f:
                h.update(os.path.basename(path).encode() + b"\0" + f.read())
        _REVISION = h.hexdigest()[:16]
    return _REVISION


def missing_lowerings() -> list[str]:
    """Registered primitives without a Relax lowering (empty when the table is complete).

    Control-flow primitives (trait "control": cond, while_loop, scan) have no entry of their
    own: a loop with a straight-line body is lowered by lowering/native_loop.py, registered when
    the runtime compiles such a graph, and the rest run on the host over compiled regions
    (graphad/runtime/host.py), so they are not missing here; nor are the ones
    that only mark a region (trait "inline": checkpoint), which are inlined before lowering; nor
    the complex-number primitives (trait "complex": real, imag, conj, complex, det): TVM has no
    complex type, so a graph with complex values is rewritten into real pairs before lowering
    (passes/complex_split.py) or, where that has no rule (det), runs on the NumPy interpreter
    (frontend.function.make_runner, docs/complex.md)."""
    from ..ir.registry import PRIMITIVES
    from .relax_ops import missing_lowerings as _m
    return [n for n in _m() if not {"control", "inline", "complex"} & PRIMITIVES[n].traits]


@dataclass
class LoweredGraph:
    """A lowered graph: the Relax module and what the runtime must know about its outputs."""

    module: object  # tvm.IRModule
    # copy_outputs[i]: output i may share memory with an input, a baked-in constant or an earlier
    # output, so the runtime hands out a private copy (a graphad Tensor owns its buffer).
    copy_outputs: list[bool] = field(default_factory=list)
    # packed: the function returns ONE flat buffer holding every output, output i starting at
    # element packed[i] (64-byte aligned); None when it returns the outputs themselves.
    packed: list[int] | None = None


# Several small outputs of one dtype come back as one buffer: the runtime then makes one DLPack
# hand-off and cheap NumPy views instead of a tuple lookup and a hand-off per output (about
# 0.6 us per output, most of a small gradient's per-call cost). The copy into the buffer fuses
# with the kernels producing the outputs; above this size it would cost more than it saves.
PACK_MAX_BYTES = 16384
_PACK_ALIGN = 64


def pack_layout(types) -> list[int] | None:
    """Element offsets of `types` (TensorTypes) in one packed buffer, or None when they should
    not be packed: fewer than two, mixed dtypes, an empty one, or more than PACK_MAX_BYTES."""
    if len(types) < 2 or len({t.dtype.name for t in types}) != 1 or any(t.size == 0 for t in types):
        return None
    item = np.dtype(types[0].dtype.np).itemsize
    step = max(1, _PACK_ALIGN // item)
    offsets, at = [], 0
    for t in types:
        offsets.append(at)
        at += -(-t.size // step) * step
    return offsets if at * item <= PACK_MAX_BYTES else None


def _param_names(graph) -> list[str]:
    seen: set[str] = set()
    names = []
    for i, n in enumerate(graph.input_names):
        n = n if isinstance(n, str) and n.isidentifier() else f"arg{i}"
        base, k = n, 1
        while n in seen:
            n = f"{base}_{k}"
            k += 1
        seen.add(n)
        names.append(n)
    return names


def _live_nodes(graph) -> list:
    """Nodes that some output depends on, in graph order. A node whose results are all empty is
    lowered to an allocation that reads nothing (`_lower_graph_info`), so its inputs are not
    needed on its account (lowered anyway, they were dead Relax bindings, and FuseOps said so
    on stderr: "There are dead codes in the current IRModule")."""
    need = {id(v) for v in graph.outputs}
    live = []
    for node in reversed(graph.nodes):
        if any(id(o) in need for o in node.outputs):
            live.append(node)
            if not all(o.type.size == 0 for o in node.outputs):
                need.update(id(v) for v in node.inputs)
    live.reverse()
    return live


def _lhs_transposes(graph, nodes) -> set[int]:
    """ids of the `transpose` nodes (last two axes swapped, float) whose every use is as the left
    operand of a float matmul: those matmuls read the untransposed tensor (relax_ops._matmul)
    and the transpose is never materialised. Reverse mode makes one for every weight gradient
    (x.T @ dy) and the attention's value gradient (a.T @ do)."""
    users: dict[int, list] = {}
    for n in nodes:
        for k, v in enumerate(n.inputs):
            users.setdefault(id(v), []).append((n, k))
    outs = {id(v) for v in graph.outputs}
    found = set()
    for n in nodes:
        if n.prim.name != "transpose" or id(n.outputs[0]) in outs:
            continue
        perm = [int(p) for p in n.attrs["perm"]]
        r = len(perm)
        if r < 2 or perm != list(range(r - 2)) + [r - 1, r - 2] or n.outputs[0].type.size == 0:
            continue
        if n.inputs[0].type.dtype.name not in ("float32", "float64"):
            continue
        uses = users.get(id(n.outputs[0]), [])
        if uses and all(u.prim.name == "matmul" and k == 0 and u.inputs[1] is not n.outputs[0]
                        and u.inputs[1].type.dtype == n.inputs[0].type.dtype for u, k in uses):
            found.add(id(n))
    return found


def _input_dependent(graph, nodes) -> set[int]:
    """ids of values that depend on at least one graph input."""
    dep = {id(v) for v in graph.inputs}
    for node in nodes:
        if any(id(v) in dep for v in node.inputs):
            dep.update(id(o) for o in node.outputs)
    return dep


def lower_graph_info(graph, name: str = "main", *, gpu: bool = False) -> LoweredGraph:
    """Lower `graph` to a Relax IRModule holding one function `name`; see LoweredGraph. `gpu`: the
    module is built for a GPU, whose reductions add in a tree (dlight's schedules), so long float
    sums are not split into stages there (relax_ops.SUM_STAGED_ABOVE)."""
    from .compile_log import phase
    with phase("lower"):
        return _lower_graph_info(graph, name, gpu)


def _lower_graph_info(graph, name: str, gpu: bool = False) -> LoweredGraph:
    from ._tvm import load_tvm
    from .bf16 import BF16, uses_dtypes, widen_bfloat16
    from .relax_ops import LowerContext, get_lowering
    tvm = load_tvm()
    relax = tvm.relax
    graph = widen_bfloat16(graph)  # bfloat16 is stored, never computed in (lowering/bf16.py)
    nodes = _live_nodes(graph)
    for node in nodes:  # report a missing lowering before building anything
        get_lowering(node)
    folded = _lhs_transposes(graph, nodes)
    bb = relax.BlockBuilder()
    params = [relax.Var(nm, relax.TensorType(v.type.shape, v.type.dtype.name))
              for nm, v in zip(_param_names(graph), graph.inputs)]
    env = {id(v): p for v, p in zip(graph.inputs, params)}
    with bb.function(name, params), _closing_blocks_on_error(bb):
        with bb.dataflow():
            cx = LowerContext(bb)
            cx.stage_sums = not gpu
            cx.half_types = uses_dtypes(graph, (BF16, "float16"))
            for node in nodes:
                if id(node) in folded:
                    # read in place by the matmuls that use it (relax_ops._matmul): no kernel
                    cx.lhs_transposed[id(node.outputs[0])] = env[id(node.inputs[0])]
                    env[id(node.outputs[0])] = None  # nothing else reads it (_lhs_transposes)
                    continue
                if all(v.type.size == 0 for v in node.outputs):
                    # an empty result needs no kernel, and a zero-extent CUDA kernel from dlight's
                    # Fallback writes out of bounds (cudaErrorIllegalAddress seen on an H200)
                    # nor a baked-in constant: a 0-size constant does not survive the library's
                    # export and reload ("Invalid DLTensor file format"), so such graphs never
                    # reached the disk cache. An allocation has no elements to initialise.
                    for v in node.outputs:
                        env[id(v)] = bb.emit(relax.op.builtin.alloc_tensor(
                            relax.ShapeExpr(v.type.shape), v.type.dtype.name, 0))
                    continue
                fn = get_lowering(node)
                try:
                    res = fn(cx, node, *[env[id(v)] for v in node.inputs])
                except CompileError:
                    raise
                except Exception as e:
                    msg = str(e).strip().splitlines()
                    raise CompileError(f"lowering {node.describe()} with attributes "
                                       f"{ {k: v for k, v in node.attrs.items() if k != 'value'} } failed: "
                                       f"{type(e).__name__}: {msg[-1] if msg else ''}") from e
                res = list(res) if isinstance(res, (list, tuple)) else [res]
                if len(res) != len(node.outputs):
                    raise CompileError(f"internal: lowering of {node.prim.name} returned {len(res)} values "
                                       f"for {len(node.outputs)} outputs")
                for v, r in zip(node.outputs, res):
                    if not isinstance(r, relax.Var):
                        r = bb.emit(r)
                    _check_lowered_type(r, v, node)
                    env[id(v)] = r
            outs = [env[id(v)] for v in graph.outputs]
            packed = pack_layout([v.type for v in graph.outputs])
            if packed is not None:
                result = bb.emit_output(_pack(bb, relax, outs, graph.outputs, packed))
            elif len(outs) == 1:
                result = bb.emit_output(outs[0])
            else:
                result = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(result)
    mod = bb.finalize()

    dep = _input_dependent(graph, nodes)
    copy = []
    for i, v in enumerate(graph.outputs):
        r = outs[i]
        aliased = (any(r.same_as(p) for p in params)          # an input, possibly through identities
                   or id(v) not in dep                          # constant / creation: may be folded
                   or any(r.same_as(outs[j]) for j in range(i)))  # the same value twice
        copy.append(bool(aliased) and packed is None)  # packing copies every output anyway
    return LoweredGraph(mod, copy, packed)


class _closing_blocks_on_error:
    """Inside `bb.function(...)`: should the lowering raise, end the binding block that the
    dataflow scope's exit begins (emit_func_output would have), so the BlockBuilder is left with
    no open block: TVM printed "BlockBuilder destroyed with remaining blocks!" on stderr when it
    was collected, after every lowering error (an unsupported native loop, say)."""

    def __init__(self, bb):
        self.bb = bb

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.bb._end_block()
        return False


def _pack(bb, relax, outs, values, offsets):
    """One flat buffer: each output flattened, zero-padded up to the next one's offset."""
    pieces = []
    ends = offsets[1:] + [None]
    for r, v, start, end in zip(outs, values, offsets, ends):
        n = v.type.size
        pieces.append(bb.emit(relax.op.reshape(r, (n,))))
        if end is not None and end - start > n:
            pieces.append(relax.const(np.zeros(end - start - n, v.type.dtype.np), v.type.dtype.name))
    return bb.emit(relax.op.concat(pieces, axis=0))


def _check_lowered_type(r, v, node):
    ty = r.ty
    try:
        shape = tuple(int(s) for s in ty.shape)
        dtype = str(ty.dtype)
    except Exception:
        raise CompileError(f"internal: lowering of {node.describe()} produced {ty}, expected {v.type}") from None
    if shape != v.type.shape or dtype != v.type.dtype.name:
        raise CompileError(f"internal: lowering of {node.describe()} produced {dtype}{list(shape)}, "
                           f"the shape rule says {v.type}")


def lower_graph(graph, name: str = "main"):
    """Lower `graph` to a tvm.IRModule with one Relax function `name` (inputs -> output or tuple)."""
    return lower_graph_info(graph, name).module


def compile_module(mod, target=None, *, schedule: bool = True, exec_mode: str | None = None):
    """Compile a lowered module for `target`; returns (relax VMExecutable, report dict).
    `exec_mode` ("compiled" or "bytecode"; default: chosen by size, pipeline.choose_exec_mode)
    is the Relax VM's, for the CPU."""
    from .pipeline import build
    return build(mod, target, schedule=schedule, exec_mode=exec_mode)
