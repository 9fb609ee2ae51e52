"""GraphBuilder: appends typed nodes to a graph under construction.

`emit` runs the primitive's shape rule, so a builder can only produce well-typed nodes; shape
errors are re-raised naming the op, operand types and the source location being recorded.
"""
from __future__ import annotations

from typing import Any

from .core import Graph, Loc, Node, TensorType, Value


class GraphBuilder:
    """Builds one Graph: `add_input`, `emit`, then `finish(outputs)`."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.input_names: list[str] = []
        self.nodes: list[Node] = []

    def add_input(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(type, None, len(self.inputs), name)
        self.inputs.append(v)
        self.input_names.append(name or f"arg{len(self.inputs) - 1}")
        return v

    def emit(self, prim, inputs: list[Value], attrs: dict[str, Any] | None = None,
             loc: Loc | None = None) -> list[Value]:
        """Append `prim(*inputs, **attrs)` and return its output values."""
        attrs = dict(attrs or {})
        out_types = prim.infer([v.type for v in inputs], attrs, loc)
        node = Node(prim, inputs, attrs, out_types, loc)
        self.nodes.append(node)
        return node.outputs

    def finish(self, outputs: list[Value]) -> Graph:
        return Graph(self.name, self.inputs, self.nodes, outputs, self.input_names)
