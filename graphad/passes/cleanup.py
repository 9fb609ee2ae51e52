"""cse and dce: common-subexpression elimination and dead-code elimination.

All primitives are pure, so two nodes with the same primitive, operands and attributes compute
the same values (cse keeps the first), and a node none of whose results reaches an output can
be dropped (dce). Both return new graphs; the input graph is not modified.
"""
from __future__ import annotations

import numpy as np

from ..ir.core import Graph, Node, Value
from .manager import register_pass


def _freeze(x):
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(e) for e in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, float):
        # by bits: -0.0 == 0.0 in Python, but a fill of -0.0 is not a fill of 0.0 (1/x differs)
        return ("float", np.float64(x).tobytes()) if x == x else ("nan",)
    if isinstance(x, Graph):
        from ..ir.printer import print_graph
        return ("graph", print_graph(x))
    return (type(x).__name__, x)


def attrs_key(attrs: dict):
    return tuple(sorted((k, _freeze(v)) for k, v in attrs.items()))


def cse(graph: Graph) -> Graph:
    """Merge nodes that apply the same primitive to the same operands with equal attributes."""
    subst: dict[Value, Value] = {}
    seen: dict[tuple, Node] = {}
    nodes: list[Node] = []
    for n in graph.nodes:
        ins = [subst.get(v, v) for v in n.inputs]
        # the operands themselves (hashed by identity, kept alive by the key), not their id():
        # an id can be reused by another object once the first is freed
        key = (n.prim.name, tuple(ins), attrs_key(n.attrs))
        prev = seen.get(key)
        if prev is not None:
            for o, po in zip(n.outputs, prev.outputs):
                subst[o] = po
            continue
        if ins != n.inputs:
            m = Node(n.prim, ins, n.attrs, [o.type for o in n.outputs], n.loc)
            for o, mo in zip(n.outputs, m.outputs):
                subst[o] = mo
            n = m
        seen[key] = n
        nodes.append(n)
    return Graph(graph.name, graph.inputs, nodes, [subst.get(v, v) for v in graph.outputs], graph.input_names)


def dce(graph: Graph) -> Graph:
    """Drop nodes whose results reach no output."""
    live: set[Value] = set(graph.outputs)
    keep: list[Node] = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs):
            keep.append(n)
            live.update(n.inputs)
    keep.reverse()
    return Graph(graph.name, graph.inputs, keep, graph.outputs, graph.input_names)


@register_pass("cse", "merge nodes applying the same primitive to the same operands and attributes",
               "no two nodes have equal (primitive, operands, attributes)", regions=True)
def _cse_pass(graph: Graph, *, stats) -> Graph:
    out = cse(graph)
    stats["nodes-merged"] += len(graph.nodes) - len(out.nodes)
    return out


@register_pass("dce", "drop nodes whose results reach no output", "every node reaches an output", regions=True)
def _dce_pass(graph: Graph, *, stats) -> Graph:
    out = dce(graph)
    stats["nodes-removed"] += len(graph.nodes) - len(out.nodes)
    return out
