"""inline-regions: replace nodes that only mark a region (trait "inline") by the region's nodes.

Some primitives carry a region that means something to the transformations only: `checkpoint`
(recompute instead of storing residuals) changes what a vjp keeps, not what the graph computes.
Once the transformations are done they are inlined before lowering (the runtime runs this pass
in `compile_graph`), recursively; the region's outputs replace the node's. The region is read
from the node's `body` attribute. Running it after cse keeps the recomputation that a checkpoint's
vjp put in its own region: cse could otherwise merge it with the forward pass it duplicates.
"""
from __future__ import annotations

from ..ir.core import Graph, Node, Value
from .manager import register_pass


def has_inline_nodes(graph: Graph) -> bool:
    """Whether a node of `graph` (not of its regions) has the trait "inline"."""
    return any("inline" in n.prim.traits for n in graph.nodes)


def inline_nodes(graph: Graph, which) -> Graph:
    """`graph` with every node for which `which(node)` holds replaced by the nodes of its `body`
    region (recursively: such nodes inside the region too); `graph` itself when there is none."""
    if not any(which(n) for n in graph.nodes):
        return graph
    subst: dict[Value, Value] = {}
    nodes: list[Node] = []

    def emit(n: Node, ins: list[Value]) -> list[Value]:
        if not which(n):
            m = Node(n.prim, ins, n.attrs, [o.type for o in n.outputs], n.loc)
            nodes.append(m)
            return m.outputs
        body = n.attrs["body"]
        env = dict(zip(body.inputs, ins))
        for b in body.nodes:
            outs = emit(b, [env.get(v, v) for v in b.inputs])
            env.update(zip(b.outputs, outs))
        return [env.get(v, v) for v in body.outputs]

    for n in graph.nodes:
        outs = emit(n, [subst.get(v, v) for v in n.inputs])
        subst.update(zip(n.outputs, outs))
    return Graph(graph.name, graph.inputs, nodes, [subst.get(v, v) for v in graph.outputs], graph.input_names)


def inline_regions(graph: Graph) -> Graph:
    """`graph` with every "inline" node replaced by its `body` region's nodes (recursively)."""
    return inline_nodes(graph, lambda n: "inline" in n.prim.traits)


@register_pass("inline-regions", "replace checkpoint (and other region-marking) nodes by their regions",
               "no node has the trait inline")
def _inline_pass(graph: Graph, *, stats) -> Graph:
    before = sum(1 for n in graph.nodes if "inline" in n.prim.traits)
    stats["nodes-inlined"] += before
    return inline_regions(graph)
