"""The graph IR: types, values, nodes, graphs, builder, printer/parser, verifier, interpreter.

`graphad.ir.core` is what a Tensor needs; the builder, printer, parser and exporters
are imported the first time one of their names is read here (PEP 562 `__getattr__`), so that a
process that only runs compiled code does not import them.
"""
from .core import Graph, Loc, Node, TensorType, Value  # noqa: F401
# eager: the module's name is also its function's, and importing the submodule (as the passes do)
# binds the module to the package's `verify` unless the function was bound here first
from .verify import verify  # noqa: F401,E402

_LAZY = {
    "GraphBuilder": "builder",
    "print_graph": "printer", "print_module": "printer",
    "parse_graph": "parser", "parse_module": "parser",
    "render_dot": "export", "to_dot": "export", "to_networkx": "export",
}


def __getattr__(name: str):
    """Import the module of a name of `_LAZY` and bind the name here (module-level __getattr__)."""
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'graphad.ir' has no attribute {name!r}") from None
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
