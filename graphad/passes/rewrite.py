"""Shared machinery of Graph -> Graph passes: replaying a graph into a fresh pass trace.

A pass opens a `Trace` that may not capture anything (every operand must come from the graph
being rewritten), creates one input per input of the old graph, and re-emits nodes through
primitives or rules. Nodes emitted while rewriting `node` inherit `node.loc`, so errors and the
printed IR still point at the user's line that caused them.
"""
from __future__ import annotations

from contextlib import contextmanager

from ..errors import GraphadError, retold
from ..prims.trace import Trace, Tracer
from ..ir.core import Graph, Node, TensorType, Value


class PassTrace(Trace):
    """A trace for rewriting: no captures; `at(node)` stamps new nodes with node.loc."""

    def __init__(self, name: str):
        super().__init__(name, allow_captures=False)

    def loc(self):
        # a pass never blames the Python frame that happens to run it (a test, the CLI):
        # new nodes carry the location of the node being rewritten, or none
        return self.loc_override

    @contextmanager
    def at(self, node: Node):
        """New nodes made in the block carry node.loc; a GraphadError raised there without a
        source line (a rule's: "reverse mode of while_loop needs max_steps") gets node's, the
        user's line of the operation being rewritten."""
        prev = self.loc_override
        self.loc_override = node.loc
        try:
            yield
        except GraphadError as e:
            located = _with_loc(e, node.loc)
            if located is None:
                raise
            raise located.with_traceback(e.__traceback__) from e.__cause__
        finally:
            self.loc_override = prev


def _with_loc(e: GraphadError, loc) -> GraphadError | None:
    """`e` again with ` (at loc)` after its message; None where it has a line already, there is
    no loc, or its class takes other arguments than a message."""
    if loc is None or "(at " in str(e):
        return None
    return retold(e, f"{e} (at {loc})")


def copy_inputs(tr: PassTrace, graph: Graph) -> dict[Value, Tracer]:
    """New inputs mirroring `graph`'s (same types and names); returns old value -> tracer."""
    return {v: tr.new_arg(v.type, n) for v, n in zip(graph.inputs, graph.input_names)}


def replay(node: Node, env: dict[Value, Tracer]) -> list[Tracer]:
    """Re-emit `node` on the mapped inputs, keeping its location."""
    tr = _top()
    outs = tr.builder.emit(node.prim, [env[v].value for v in node.inputs], node.attrs, node.loc)
    res = [Tracer(v, tr) for v in outs]
    for old, new in zip(node.outputs, res):
        env[old] = new
    return res


def finish(tr: PassTrace, outputs: list) -> Graph:
    return tr.builder.finish([o.value for o in outputs])


def _top() -> Trace:
    from ..prims.trace import current_trace
    return current_trace()


def zeros_for(t: TensorType):
    from ..prims import lax as ops
    return ops.zeros(t.shape, dtype=t.dtype)


def check_rule_result(node: Node, rule: str, what: str, got, want: TensorType) -> None:
    """A rule's result must have the type of the value it stands for (else: a bug in the rule)."""
    if tuple(got.shape) != want.shape or got.dtype is not want.dtype:
        from ..errors import GraphadError
        raise GraphadError(f"internal: {rule} rule of {node.describe()} gave {what} {got.dtype.short}"
                           f"{list(got.shape)} for {want}")


def map_regions(graph: Graph, fn) -> Graph:
    """`graph` with `fn` applied to every region (a Graph, or a tuple of Graphs, held in a node
    attribute), innermost regions first; nodes whose regions did not change are kept as they are.
    fn must keep a region's signature (input and output types)."""
    from ..ir.core import Graph as _G
    subst: dict[Value, Value] = {}
    nodes = []
    changed = False
    for n in graph.nodes:
        attrs = None
        for k, v in n.attrs.items():
            if isinstance(v, _G):
                nv = fn(map_regions(v, fn))
            elif isinstance(v, tuple) and v and all(isinstance(x, _G) for x in v):
                nv = tuple(fn(map_regions(x, fn)) for x in v)
            else:
                continue
            if nv is not v:
                attrs = dict(n.attrs) if attrs is None else attrs
                attrs[k] = nv
        ins = [subst.get(v, v) for v in n.inputs]
        if attrs is None and ins == n.inputs:
            nodes.append(n)
            continue
        changed = True
        m = Node(n.prim, ins, attrs if attrs is not None else n.attrs, [o.type for o in n.outputs], n.loc)
        subst.update(zip(n.outputs, m.outputs))
        nodes.append(m)
    if not changed:
        return graph
    return Graph(graph.name, graph.inputs, nodes, [subst.get(v, v) for v in graph.outputs], graph.input_names)


def extract_subgraph(name: str, nodes: list, ins: list, outs: list) -> Graph:
    """A closed graph of `nodes` (copied with fresh values) reading `ins` and returning `outs`:
    a straight-line segment of a larger graph, or the part of one that a partial evaluation keeps."""
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
