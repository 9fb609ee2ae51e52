"""Compiled graphs with control flow: straight-line segments compiled, control nodes run by the host.

A graph holding `cond`, `while_loop` or `scan` nodes (graphad/control) is split at those nodes.
Every maximal run of other nodes becomes one segment graph, and every region of a control node
is a graph of its own; each is compiled once, through the executable caches, so the program
compiles once whatever the trip counts, and a region seen before (another call site, a later
model) is a cache hit. At call time the host runs the segments in order and, at a control node,
decides which branch runs or whether the loop goes on (one scalar read per decision) and calls
the region's executable: one compiled call per loop step.

Why the host and not Relax: TVM 0.27's Relax has no loop; a loop written as a recursive Relax
function overflows the C++ stack after about 2,000 steps (a segfault, measured), and its calls
cost about 10 us per step.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphadError
from ..ir.core import Graph, Node, Value
from ..tensor import Tensor

CONTROL = "control"


def has_control_flow(graph: Graph) -> bool:
    """Whether any node of `graph` is a control-flow primitive."""
    return any(CONTROL in n.prim.traits for n in graph.nodes)


def _subgraph(name: str, nodes: list[Node], ins: list[Value], outs: list[Value]) -> Graph:
    """A closed graph of `nodes` reading `ins` and returning `outs` (fresh values, same nodes' prims)."""
    env: dict[Value, Value] = {}
    new_in = []
    for i, v in enumerate(ins):
        nv = Value(v.type, None, i, f"in{i}")
        env[v] = nv
        new_in.append(nv)
    new_nodes = []
    for n in nodes:
        m = Node(n.prim, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs], n.loc)
        env.update(zip(n.outputs, m.outputs))
        new_nodes.append(m)
    return Graph(name, new_in, new_nodes, [env[v] for v in outs], [v.name for v in new_in])


def _compile_region(graph: Graph, target):
    from ..passes.manager import run_default_pipeline
    from .executable import compile_graph
    return compile_graph(run_default_pipeline(graph), target)


class HostProgram:
    """A graph with control-flow nodes, compiled as segments and regions; `prog(flat_inputs) ->
    list[Tensor]` like an Executable."""

    source = "compiled"

    def __init__(self, graph: Graph, target=None):
        self.graph = graph
        self.target = target
        self.steps: list = []  # ("run", exe, in_values, out_values) | ("control", node, executables)
        later_use: dict[Value, int] = {}
        for k, n in enumerate(graph.nodes):
            for v in n.inputs:
                later_use[v] = k
        for v in graph.outputs:
            later_use[v] = len(graph.nodes)
        run: list[Node] = []
        start = 0

        def close(end: int):
            if not run:
                return
            defined = {o for n in run for o in n.outputs}
            ins, seen = [], set()
            for n in run:
                for v in n.inputs:
                    if v not in defined and v not in seen:
                        seen.add(v)
                        ins.append(v)
            outs = [o for n in run for o in n.outputs if later_use.get(o, -1) >= end]
            if outs:
                g = _subgraph(f"{graph.name}_seg{len(self.steps)}", list(run), ins, outs)
                self.steps.append(("run", _compile_region(g, target), ins, outs))
            run.clear()

        for k, n in enumerate(graph.nodes):
            if CONTROL in n.prim.traits:
                close(k)
                self.steps.append(("control", n, self._regions(n)))
                start = k + 1
            else:
                run.append(n)
        close(len(graph.nodes))
        del start
        self.meta = {"name": graph.name, "inputs": [{"shape": list(v.type.shape), "dtype": v.type.dtype.name}
                                                    for v in graph.inputs],
                     "outputs": [{"shape": list(v.type.shape), "dtype": v.type.dtype.name} for v in graph.outputs],
                     "device": "cpu", "host_program": True}
        self.report = {"host_program": True, "segments": sum(1 for s in self.steps if s[0] == "run"),
                       "control_nodes": sum(1 for s in self.steps if s[0] == "control")}

    def _regions(self, node: Node) -> dict:
        a = node.attrs
        if node.prim.name == "cond":
            return {"branches": [_compile_region(b, self.target) for b in a["branches"]]}
        if node.prim.name == "while_loop":
            return {"cond": _compile_region(a["cond"], self.target), "body": _compile_region(a["body"], self.target)}
        if node.prim.name == "scan":
            return {"body": _compile_region(a["body"], self.target)}
        raise GraphadError(f"internal: no host execution for control primitive {node.prim.name}")

    # ------------------------------------------------------------ calling
    def caller(self, n_args, captures, pack=None):
        return None  # the checked path (__call__) only

    def __call__(self, flat_inputs) -> list[Tensor]:
        g = self.graph
        if len(flat_inputs) != len(g.inputs):
            raise GraphadError(f"@{g.name} takes {len(g.inputs)} inputs, got {len(flat_inputs)}")
        env: dict[Value, Tensor] = {}
        for i, (v, a) in enumerate(zip(g.inputs, flat_inputs)):
            t = a if isinstance(a, Tensor) else Tensor(np.asarray(a), v.type.dtype)
            if t.shape != v.type.shape or t.dtype is not v.type.dtype:
                raise GraphadError(f"@{g.name} input {i} expects {v.type}, got {t.dtype.short}{list(t.shape)}")
            env[v] = t
        for step in self.steps:
            if step[0] == "run":
                _, exe, ins, outs = step
                for v, r in zip(outs, exe([env[v] for v in ins])):
                    env[v] = r
            else:
                _, node, exes = step
                res = _RUN[node.prim.name](node, exes, [env[v] for v in node.inputs])
                for v, r in zip(node.outputs, res):
                    env[v] = r
        return [env[v] for v in g.outputs]

    def export(self, path: str) -> str:
        raise GraphadError("a graph with control flow (cond, while_loop, scan) cannot be saved as an AOT artifact "
                           "yet: its segments and regions are separate executables")

    @property
    def library_bytes(self) -> bytes:
        raise GraphadError("a graph with control flow (cond, while_loop, scan) has no single library to save")


def _scalar(t: Tensor):
    return np.asarray(t._data).reshape(()).item()


def _run_cond(node, exes, args):
    branches = exes["branches"]
    k = min(max(int(_scalar(args[0])), 0), len(branches) - 1)
    return branches[k](args[1:])


def _run_while(node, exes, args):
    a = node.attrs
    nc, nb, cap = a["n_cond"], a["n_body"], a["max_steps"]
    cc, bc, carry = args[:nc], args[nc:nc + nb], list(args[nc + nb:])
    cond, body = exes["cond"], exes["body"]
    steps = 0
    while (cap is None or steps < cap) and bool(_scalar(cond(cc + carry)[0])):
        carry = body(bc + carry)
        steps += 1
    return carry


def _run_scan(node, exes, args):
    a = node.attrs
    nk, nc, length, reverse = a["n_consts"], a["n_carry"], a["length"], a["reverse"]
    consts, carry, xs = args[:nk], list(args[nk:nk + nc]), args[nk + nc:]
    body = exes["body"]
    y_types = node.attrs["body"].out_types[nc:]
    ys = [np.empty((length,) + t.shape, t.dtype.np) for t in y_types]
    x_arrays = [np.asarray(x._data) for x in xs]
    x_types = [x.dtype for x in xs]
    for step in range(length):
        i = length - 1 - step if reverse else step
        sl = [Tensor._wrap(np.array(x[i]), d) for x, d in zip(x_arrays, x_types)]
        out = body(consts + carry + sl)
        carry = list(out[:nc])
        for y, o in zip(ys, out[nc:]):
            y[i] = o._data
    return carry + [Tensor._wrap(y, t.dtype) for y, t in zip(ys, y_types)]


_RUN = {"cond": _run_cond, "while_loop": _run_while, "scan": _run_scan}
