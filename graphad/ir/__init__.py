"""The graph IR: types, values, nodes, graphs, builder, printer/parser, verifier, interpreter."""
from .core import Graph, Loc, Node, TensorType, Value  # noqa: F401
from .builder import GraphBuilder  # noqa: F401
