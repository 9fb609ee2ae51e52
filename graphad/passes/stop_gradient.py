"""Activity analysis: which nodes can carry a non-zero derivative from the requested inputs to outputs.

A value is *varying* when it depends on a requested input through differentiable edges (float
dtypes; not through stop_gradient, non-differentiable primitives or their non-differentiable
operands). A node is *useful* when one of its outputs reaches a requested output. AD passes
only emit derivative work for nodes that are both: everything else is provably zero and pruned
before any derivative node exists. This is an analysis, not a registered pass: reverse-ad and
forward-ad call `active_nodes` themselves (`graphad passes` lists the passes that exist).
"""
from __future__ import annotations

from ..ir.core import Graph, Node, Value


def _differentiable_edge(node: Node, i: int) -> bool:
    p = node.prim
    if p.nondiff is not None or "stop_gradient" in p.traits or i in p.nondiff_inputs:
        return False
    return node.inputs[i].type.dtype.is_inexact


def varying_values(graph: Graph, wrt: list[int]) -> set[Value]:
    """Values that depend differentiably on graph inputs `wrt` (forward sweep)."""
    act: set[Value] = {graph.inputs[i] for i in wrt if graph.inputs[i].type.dtype.is_inexact}
    for n in graph.nodes:
        if any(v in act and _differentiable_edge(n, i) for i, v in enumerate(n.inputs)):
            for o in n.outputs:
                if o.type.dtype.is_inexact:
                    act.add(o)
    return act


def useful_values(graph: Graph, outputs: list[int]) -> set[Value]:
    """Values from which one of the selected graph outputs is reachable through differentiable edges."""
    useful: set[Value] = {graph.outputs[i] for i in outputs}
    for n in reversed(graph.nodes):
        if any(o in useful for o in n.outputs):
            for i, v in enumerate(n.inputs):
                if _differentiable_edge(n, i):
                    useful.add(v)
    return useful


def active_nodes(graph: Graph, wrt: list[int], outputs: list[int]) -> set[Node]:
    """Nodes that need derivative work: a varying input and a useful output."""
    var = varying_values(graph, wrt)
    use = useful_values(graph, outputs)
    return {n for n in graph.nodes
            if any(v in var for v in n.inputs) and any(o in use for o in n.outputs)}
