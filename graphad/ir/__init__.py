"""The graph IR: types, values, nodes, graphs, builder, printer/parser, verifier, interpreter."""
from .core import Graph, Loc, Node, TensorType, Value  # noqa: F401
from .builder import GraphBuilder  # noqa: F401
from .printer import print_graph, print_module  # noqa: F401,E402
from .parser import parse_graph, parse_module  # noqa: F401,E402
from .verify import verify  # noqa: F401,E402
from .export import render_dot, to_dot, to_networkx  # noqa: F401,E402
