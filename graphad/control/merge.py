"""merge-loops: a loop whose outputs begin with another loop's outputs stands for both.

The reverse mode of a loop runs it forward again to record the carries its backward pass needs
(control/prims.py: a scan stacking them, a while_loop writing them into tapes it carries after
its own carries; a checkpoint's vjp under a saving policy, control/remat.py). That loop has the
primal loop's operands first, and its body returns the primal body's results first. When both are
in one graph (value_and_grad, a gradient whose cotangent needs the primal output), the forward pass
would run twice, and a second reverse pass would send its cotangents to the two copies apart (a
custom_vjp rule in the body that is not linear in its cotangent would then see two shares, not
their sum). This pass finds such pairs (same primitive and leading operands, equal attributes
besides the regions, regions whose leading outputs compute exactly the other's without reading the
extra inputs), moves the larger node to the smaller one's place and gives its leading outputs to
the smaller one's users. Regions are compared by their printed text with names made positional,
so nothing is merged unless it is the same computation.
"""
from __future__ import annotations

from ..ir.core import Graph, Node, Value
from ..ir.printer import print_graph
from ..passes.cleanup import dce
from ..passes.manager import register_pass
from . import regions as R


def _canonical(g: Graph) -> str:
    return print_graph(Graph("region", g.inputs, g.nodes, g.outputs, [f"i{k}" for k in range(len(g.inputs))]))


def _leading(region: Graph, n_out: int, n_in: int) -> Graph | None:
    """`region`'s first `n_out` outputs as a region of its first `n_in` inputs, or None when they
    read one of the later inputs."""
    sub = R.outputs_subset(region, range(n_out))
    extra = set(region.inputs[n_in:])
    if any(v in extra for v in sub.outputs) or any(v in extra for nd in sub.nodes for v in nd.inputs):
        return None
    return Graph(region.name, region.inputs[:n_in], sub.nodes, sub.outputs, region.input_names[:n_in])


def _same(big: Graph | None, small: Graph) -> bool:
    return big is not None and _canonical(big) == _canonical(dce(small))


def _covers(big: Node, small: Node) -> bool:
    """Whether `big`'s leading outputs are `small`'s outputs: scan and checkpoint nodes of the same
    operands whose region returns more; while_loop nodes whose operands begin with the other's and
    carry more, with the same condition on the shared carries."""
    if big.prim is not small.prim or big.prim.name not in ("scan", "checkpoint", "while_loop"):
        return False
    n = len(small.outputs)
    if len(big.outputs) <= n or [o.type for o in big.outputs[:n]] != [o.type for o in small.outputs]:
        return False
    if big.prim.name == "while_loop":
        if any(big.attrs[k] != small.attrs[k] for k in ("n_cond", "n_body", "max_steps")):
            return False
        if big.inputs[:len(small.inputs)] != small.inputs:
            return False
        nk, nb = small.attrs["n_cond"], small.attrs["n_body"]
        return (_same(_leading(big.attrs["body"], n, nb + n), small.attrs["body"])
                and _same(_leading(big.attrs["cond"], 1, nk + n), small.attrs["cond"]))
    if big.inputs != small.inputs or any(big.attrs[k] != small.attrs[k] for k in big.attrs if k != "body"):
        return False
    bb, sb = big.attrs["body"], small.attrs["body"]
    return _same(R.outputs_subset(bb, range(n)), sb)


def _producers(nodes) -> dict[Value, Node]:
    return {o: nd for nd in nodes for o in nd.outputs}


def _depends_on(producer: dict[Value, Node], values, node: Node) -> bool:
    """Whether any of `values` is computed (at any depth, `producer` maps a value to its node)
    from an output of `node`."""
    stack, seen = [producer.get(v) for v in values], set()
    while stack:
        nd = stack.pop()
        if nd is None or nd in seen:
            continue
        if nd is node:
            return True
        seen.add(nd)
        stack.extend(producer.get(v) for v in nd.inputs)
    return False


def _in_order(nodes: list[Node], alias: dict[Value, Value]) -> list[Node]:
    """`nodes` in their order, except that a node comes after the nodes computing its operands
    (read through `alias`): a merged while_loop moves to the primal loop's place, and its extra
    operands (the counter, the empty tapes) were made after that place."""
    producer = _producers(nodes)
    out, done = [], set()
    for root in nodes:
        stack = [(root, False)]
        while stack:
            nd, ready = stack.pop()
            if nd in done:
                continue
            if ready:
                done.add(nd)
                out.append(nd)
                continue
            stack.append((nd, True))
            for v in reversed(nd.inputs):
                p = producer.get(alias.get(v, v))
                if p is not None and p not in done:
                    stack.append((p, False))
    return out


def merge_loops(graph: Graph, origin: dict[Node, Node] | None = None) -> Graph:
    """`graph` with every loop (scan, while_loop, checkpoint) that another covers replaced by that
    one's leading outputs. `origin`, if given, gets each node that is not simply a node of `graph`
    (made anew for new operands, or moved to a covered loop's place) mapped to the node of `graph`
    whose place it takes."""
    loops = [n for n in graph.nodes if n.prim.name in ("scan", "checkpoint", "while_loop")]
    if len(loops) < 2:
        return graph
    replace: dict[Node, Node] = {}  # small -> big
    producer = _producers(graph.nodes)
    for small in loops:
        for big in loops:
            if big is not small and _covers(big, small) and not _depends_on(producer, big.inputs, small):
                replace[small] = big
                break
    if not replace:
        return graph
    # covering chains (a second-order gradient: loop 0 covered by loop 1, loop 1 by loop 4) go to
    # their end: the last one stands for all of them (its leading outputs are each one's outputs)
    alias: dict[Value, Value] = {}
    for small, big in replace.items():
        while big in replace:
            big = replace[big]
        replace[small] = big
        alias.update(zip(small.outputs, big.outputs))
    # each chain's last loop goes to the place of its first (its users may come before its own)
    placed, order, first = set(), [], {}
    for n in graph.nodes:
        big = replace.get(n, n)
        if big not in placed:
            placed.add(big)
            order.append(big)
            first[big] = n
    subst: dict[Value, Value] = {}
    nodes: list[Node] = []
    for n in _in_order(order, alias):
        ins = [subst.get(alias.get(v, v), alias.get(v, v)) for v in n.inputs]
        m = n
        if ins != n.inputs:
            m = Node(n.prim, ins, n.attrs, [o.type for o in n.outputs], n.loc)
            subst.update(zip(n.outputs, m.outputs))
        if origin is not None and (m is not n or first[n] is not n):
            origin[m] = first[n]
        nodes.append(m)
    outs = [subst.get(alias.get(v, v), alias.get(v, v)) for v in graph.outputs]
    return Graph(graph.name, graph.inputs, nodes, outs, graph.input_names)


def vjp_merged(graph: Graph, wrt, cts_for=None, **kw) -> Graph:
    """passes.reverse_ad.vjp_graph with the loops merged: a loop's reverse mode reruns it to record
    its carries, and from here on that rerun stands for the primal loop. A later transformation of
    this graph (a second-order derivative) then sees one forward pass, as the unrolled loop has:
    the cotangents of the two uses meet before a custom_vjp rule inside the body, which sees their
    sum (a rule not linear in the cotangent, a clip, gives bwd(c1 + c2), not bwd(c1) + bwd(c2))."""
    from ..passes.reverse_ad import vjp_graph
    return merge_loops(vjp_graph(graph, wrt, cts_for, **kw))


@register_pass("merge-loops", "let a loop whose leading outputs are another loop's stand for both (the "
               "primal loop and the one a vjp reruns to record its carries)", "no loop covers another")
def _merge_loops_pass(graph: Graph, *, stats) -> Graph:
    out = merge_loops(graph)
    stats["loops-merged"] += len(graph.nodes) - len(out.nodes)
    return out
