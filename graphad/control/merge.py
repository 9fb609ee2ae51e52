"""merge-loops: a loop whose outputs begin with another loop's outputs stands for both.

The scan vjp rule (and a checkpoint's vjp under a saving policy, control/remat.py) runs the node forward again to stack the carries its backward pass needs
(control/prims.py); that scan has the primal scan's operands and attributes, and its body returns
the primal body's results first. When both are in one graph (value_and_grad, a gradient whose
cotangent needs the primal output), the forward pass would run twice. This pass finds such pairs
(same primitive and operands, equal attributes besides the region, and a region whose leading
outputs compute exactly the other region), moves the larger node to the smaller one's place and
gives its leading outputs to the smaller one's users. Regions are compared by their printed text
with names made positional, so nothing is merged unless it is the same computation.
"""
from __future__ import annotations

from ..ir.core import Graph, Node, Value
from ..ir.printer import print_graph
from ..passes.cleanup import dce
from ..passes.manager import register_pass
from . import regions as R


def _canonical(g: Graph) -> str:
    return print_graph(Graph("region", g.inputs, g.nodes, g.outputs, [f"i{k}" for k in range(len(g.inputs))]))


def _covers(big: Node, small: Node) -> bool:
    """Whether `big`'s leading outputs are `small`'s outputs (scan or checkpoint nodes)."""
    if big.prim is not small.prim or big.prim.name not in ("scan", "checkpoint") or big.inputs != small.inputs:
        return False
    if any(big.attrs[k] != small.attrs[k] for k in big.attrs if k != "body"):
        return False
    bb, sb = big.attrs["body"], small.attrs["body"]
    n = len(sb.outputs)
    if len(bb.outputs) <= n or list(bb.out_types[:n]) != list(sb.out_types):
        return False
    return _canonical(R.outputs_subset(bb, range(n))) == _canonical(dce(sb))


def merge_loops(graph: Graph) -> Graph:
    """`graph` with every scan that another scan covers replaced by that one's leading outputs."""
    scans = [n for n in graph.nodes if n.prim.name in ("scan", "checkpoint")]
    if len(scans) < 2:
        return graph
    replace: dict[Node, Node] = {}  # small -> big
    for small in scans:
        for big in scans:
            if big is not small and _covers(big, small):
                replace[small] = big
                break
    if not replace:
        return graph
    # covering chains (a second-order gradient: scan 0 covered by scan 1, scan 1 by scan 4) go to
    # their end: the last one stands for all of them (its leading outputs are each one's outputs)
    final: dict[Node, Node] = {}
    for small, big in replace.items():
        while big in replace:
            big = replace[big]
        final[small] = big
    roots = set(final.values())
    placed: dict[Node, Node] = {}  # root -> its node in the new graph, at the first place of its chain
    subst: dict[Value, Value] = {}
    nodes: list[Node] = []
    for n in graph.nodes:
        big = final.get(n, n)
        if big in placed:  # the root already stands at an earlier place (the operands are the same)
            subst.update(zip(n.outputs, placed[big].outputs))
            continue
        ins = [subst.get(v, v) for v in big.inputs]
        m = n
        if big is not n or ins != n.inputs:
            m = Node(big.prim, ins, big.attrs, [o.type for o in big.outputs], big.loc)
            subst.update(zip(big.outputs, m.outputs))
            subst.update(zip(n.outputs, m.outputs))  # the covered scan's outputs are m's leading ones
        if big in roots:
            placed[big] = m
        nodes.append(m)
    return Graph(graph.name, graph.inputs, nodes, [subst.get(v, v) for v in graph.outputs], graph.input_names)


@register_pass("merge-loops", "let a scan whose leading outputs are another scan's stand for both (the "
               "primal scan and the one a vjp reruns to stack its carries)", "no scan covers another")
def _merge_loops_pass(graph: Graph, *, stats) -> Graph:
    out = merge_loops(graph)
    stats["loops-merged"] += len(graph.nodes) - len(out.nodes)
    return out
