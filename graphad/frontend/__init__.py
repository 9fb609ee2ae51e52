"""The tracing front end: Python functions over tracer tensors become graphs.

`import graphad` imports `frontend.compiled` (gd.load) only; the other submodules (`function`,
`jit`, `trace`, `autograph`, `memory`) are imported when the whole namespace is, or when read
here (`graphad.frontend.jit`), as a package whose `__init__` imported them would give them.
"""

_SUBMODULES = ("autograph", "compiled", "function", "jit", "memory", "trace")


def __getattr__(name: str):
    """Import a submodule read as an attribute (module-level __getattr__, PEP 562)."""
    if name not in _SUBMODULES:
        raise AttributeError(f"module 'graphad.frontend' has no attribute {name!r}")
    import importlib
    return importlib.import_module(f"{__name__}.{name}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
