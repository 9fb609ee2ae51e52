"""The table of operations the IR knows by name: what the parser resolves an op name to.

The IR does not define operations: graphad.prims registers each Primitive record here
(`prims.registry.register`) when it is imported, which `import graphad` always does first. Nodes
hold those records, duck-typed (`name`, `infer`, `num_outputs`, `impl`), so the IR never imports
graphad.prims (a layer above it).
"""
from __future__ import annotations

from typing import Any

from ..errors import GraphadError

PRIMITIVES: dict[str, Any] = {}


def get_primitive(name: str):
    """Look up a primitive by its IR name (GraphadError naming close matches if unknown)."""
    try:
        return PRIMITIVES[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, PRIMITIVES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise GraphadError(f"unknown primitive {name!r}{hint}") from None
