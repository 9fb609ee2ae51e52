"""The NumPy reference interpreter: runs any graph with the primitives' reference kernels.

It is the oracle of the test suite and the `backend="numpy"` fallback. Inputs are checked
against the graph's input types; every node's result is checked against its declared type.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphadError
from .core import Graph, Value


def interpret(graph: Graph, args: list) -> list[np.ndarray]:
    """Evaluate `graph` on NumPy arrays (or Tensors); returns one array per graph output."""
    from ..frontend.trace import run_impl
    if len(args) != len(graph.inputs):
        raise GraphadError(f"@{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    env: dict[Value, np.ndarray] = {}
    for i, (v, a) in enumerate(zip(graph.inputs, args)):
        arr = np.asarray(a)
        if arr.shape != v.type.shape or arr.dtype != v.type.dtype.np:
            raise GraphadError(f"@{graph.name} input {i} ({graph.input_names[i]}) expects {v.type}, "
                               f"got {arr.dtype}{list(arr.shape)}")
        env[v] = arr
    for n in graph.nodes:
        outs = run_impl(n.prim, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs])
        for v, a in zip(n.outputs, outs):
            env[v] = a
    return [env[v] for v in graph.outputs]
