"""The IR verifier: checks the invariants of `graphad.ir.core` on a graph, raising VerifyError.

Checked: every value is defined exactly once (a graph input or one node output); nodes are in
topological order (operands defined before use); each node output points back to its node and
position; each node's output types are what its primitive's shape rule gives for its operand
types and attributes; the graph outputs are defined; nested graphs in attributes verify too.
Messages name the graph, the node's position and text, its op, operand types and source line.
"""
from __future__ import annotations

from typing import Any

from ..errors import GraphadError, VerifyError
from .core import Graph, Node, TensorType, Value, type_problem


def verify(graph: Graph) -> None:
    """Raise VerifyError describing the first violated invariant of `graph` (and nested graphs)."""
    _verify(graph, "")


def _verify(graph: Graph, context: str) -> None:
    if not isinstance(graph, Graph):
        raise VerifyError(f"{context}expected a Graph, got {type(graph).__name__}")
    where = f"{context}verify @{graph.name}: "
    from .printer import value_names  # here: `import graphad` binds verify but needs no printer
    names = value_names(graph)

    def name(v) -> str:
        if isinstance(v, Value):
            n = names.get(v)
            return n if n is not None else f"<value of type {v.type}>"
        return f"<{type(v).__name__}>"

    defined: dict[Value, str] = {}  # value -> where it is defined
    if len(graph.input_names) != len(graph.inputs):
        raise VerifyError(f"{where}{len(graph.inputs)} inputs but {len(graph.input_names)} input names")
    for i, v in enumerate(graph.inputs):
        if not isinstance(v, Value):
            raise VerifyError(f"{where}input {i} is a {type(v).__name__}, not a Value")
        if not isinstance(v.type, TensorType):
            raise VerifyError(f"{where}input {i} ({name(v)}) has type {v.type!r}, not a TensorType")
        problem = type_problem(v.type.shape)
        if problem:
            raise VerifyError(f"{where}input {i} ({name(v)}: {v.type}): {problem}")
        if v.node is not None:
            raise VerifyError(f"{where}input {i} ({name(v)}) is also the output of a node "
                              f"({v.node.describe()})")
        if v in defined:
            raise VerifyError(f"{where}input {i} ({name(v)}) is defined twice (also {defined[v]})")
        defined[v] = f"input {i}"

    # where each node output is produced, to tell use-before-definition from a foreign value
    produced_at: dict[Value, int] = {}
    for j, n in enumerate(graph.nodes):
        for o in getattr(n, "outputs", ()):
            if isinstance(o, Value):
                produced_at.setdefault(o, j)

    for i, node in enumerate(graph.nodes):
        if not isinstance(node, Node):
            raise VerifyError(f"{where}node #{i} is a {type(node).__name__}, not a Node")
        if not callable(getattr(node.prim, "infer", None)):
            raise VerifyError(f"{where}node #{i} applies {node.prim!r}, which is not a Primitive")
        outs = ", ".join(name(o) for o in node.outputs)
        head = f"{where}node #{i} ({outs + ' = ' if outs else ''}{_describe(node)}): "
        for k, v in enumerate(node.inputs):
            if not isinstance(v, Value):
                raise VerifyError(f"{head}operand {k} is a {type(v).__name__}, not a Value")
            if v not in defined:
                j = produced_at.get(v)
                if j is not None and j >= i:
                    raise VerifyError(f"{head}operand {k} ({name(v)}: {v.type}) is used before its definition "
                                      f"by node #{j} ({graph.nodes[j].prim.name}); nodes are not in topological order")
                raise VerifyError(f"{head}operand {k} (a value of type {v.type}) is not defined in this graph "
                                  f"(not an input, nor an output of a node of @{graph.name})")
        for k, o in enumerate(node.outputs):
            if not isinstance(o, Value):
                raise VerifyError(f"{head}output {k} is a {type(o).__name__}, not a Value")
            if o.node is not node or o.index != k:
                owner = "no node" if o.node is None else f"node {o.node.describe()}"
                raise VerifyError(f"{head}output {k} ({name(o)}) has inconsistent back-pointers: "
                                  f"it says it is output {o.index} of {owner}")
            if o in defined:
                raise VerifyError(f"{head}output {k} ({name(o)}) is defined twice (also {defined[o]})")
            if not isinstance(o.type, TensorType):
                raise VerifyError(f"{head}output {k} has type {o.type!r}, not a TensorType")
            problem = type_problem(o.type.shape)
            if problem:
                raise VerifyError(f"{head}output {k} ({name(o)}: {o.type}): {problem}")
            defined[o] = f"output {k} of node #{i}"
        in_types = [v.type for v in node.inputs]
        try:
            inferred = node.prim.infer(in_types, node.attrs, node.loc)
        except GraphadError as e:
            raise VerifyError(f"{head}the shape rule rejects the node: {e}") from None
        except Exception as e:  # a shape rule choking on a malformed attribute
            raise VerifyError(f"{head}the shape rule failed ({type(e).__name__}: {e})") from None
        if len(inferred) != len(node.outputs):
            raise VerifyError(f"{head}has {len(node.outputs)} output(s) but {node.prim.name} produces "
                              f"{len(inferred)}")
        for k, (o, t) in enumerate(zip(node.outputs, inferred)):
            if o.type != t:
                raise VerifyError(f"{head}output {k} ({name(o)}) has type {o.type} but the shape rule "
                                  f"gives {t}")
        for key, value in sorted(node.attrs.items(), key=lambda kv: kv[0]):
            for path, sub in _nested_graphs(value, key):
                _verify(sub, f"{head}in attribute {path}: ")

    for k, v in enumerate(graph.outputs):
        if not isinstance(v, Value):
            raise VerifyError(f"{where}output {k} is a {type(v).__name__}, not a Value")
        if v not in defined:
            j = produced_at.get(v)
            extra = f" (it is an output of node #{j}, which was not checked)" if j is not None else ""
            raise VerifyError(f"{where}output {k} (a value of type {v.type}) is not defined in this graph{extra}")


def _describe(node: Node) -> str:
    try:
        return node.describe()
    except Exception:  # operands that are not Values
        return f"{node.prim.name}(...)"


def _nested_graphs(value: Any, path: str):
    """(path, graph) for every Graph inside an attribute value (lists and tuples searched)."""
    if isinstance(value, Graph):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, x in enumerate(value):
            yield from _nested_graphs(x, f"{path}[{i}]")
