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


__all__ = ["Graph", "Loc", "Node", "TensorType", "Value", "verify", *_LAZY]
# the submodules a full import of this package bound (`graphad.ir.parser`...), imported when read
_SUBMODULES = ("builder", "core", "export", "interpret", "parser", "printer", "registry", "verify")


def __getattr__(name: str):
    """Import the module of a name of `_LAZY`, or a submodule, and bind it here (module-level
    __getattr__)."""
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'graphad.ir' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
