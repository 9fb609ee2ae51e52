"""The NumPy reference interpreter: runs any graph with the primitives' reference kernels.

It is the oracle of the test suite and the `backend="numpy"` fallback. Inputs are checked
against the graph's input types; every node's result is checked against its declared type.
`run_impl` runs one primitive's kernel: the eager `bind` (graphad.prims.trace) and the simplifier's
constant folding use it too. Primitives are duck-typed records here (`impl`, `name`): the IR never
imports graphad.prims.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphadError, IndexOutOfRangeError
from .core import Graph, TensorType, Value


def interpret(graph: Graph, args: list) -> list[np.ndarray]:
    """Evaluate `graph` on NumPy arrays (or Tensors); returns one array per graph output."""
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
        try:
            outs = run_impl(n.prim, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs])
        except IndexOutOfRangeError as e:  # a bad index is the caller's data: name their line
            if n.loc is None or " (at " in str(e):
                raise
            raise IndexOutOfRangeError(f"{e} (at {n.loc})") from None
        for v, a in zip(n.outputs, outs):
            env[v] = a
    return [env[v] for v in graph.outputs]


def run_impl(prim, arrays: list[np.ndarray], attrs: dict, out_types: list[TensorType]) -> list[np.ndarray]:
    """Run a primitive's NumPy kernel and check its result against the shape rule."""
    with np.errstate(all="ignore"):
        r = prim.impl(*arrays, **attrs)
    rs = list(r) if isinstance(r, (tuple, list)) else [r]
    out = []
    for a, t in zip(rs, out_types):
        a = np.asarray(a)
        if a.dtype != t.dtype.np:
            a = a.astype(t.dtype.np)
        if a.shape != t.shape:
            raise GraphadError(f"internal: {prim.name} kernel returned shape {a.shape}, shape rule says {t.shape}")
        out.append(a)
    return out
