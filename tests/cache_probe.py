"""The small graph (matmul -> tanh -> sum) the cache and security tests compile.

`graph_src(n, name)` is Python source defining `make_graph(n=..., loc=None)` and
`make_inputs(n=...)`; the test process execs it (`load`) and child processes get the same text
prepended to their script, so both build the identical graph and hit the same cache key.
"""
from __future__ import annotations

import textwrap


def graph_src(n: int, name: str) -> str:
    """Source of make_graph/make_inputs with default size `n`, the graph named `name`."""
    return textwrap.dedent(f'''
        import numpy as np
        from graphad.ir.builder import GraphBuilder
        from graphad.ir.core import Loc, TensorType
        from graphad.prims import PRIMITIVES as P

        def make_graph(n={n}, loc=None):
            b = GraphBuilder({name!r})
            x = b.add_input(TensorType((n, 16), "float32"), "x")
            w = b.add_input(TensorType((16, 8), "float32"), "w")
            (h,) = b.emit(P["matmul"], [x, w], loc=loc)
            (y,) = b.emit(P["tanh"], [h], loc=loc)
            (s,) = b.emit(P["sum"], [y], {{"axes": (0,), "keepdims": False}}, loc=loc)
            return b.finish([y, s])

        def make_inputs(n={n}):
            rng = np.random.default_rng(n)
            return [rng.normal(size=(n, 16)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)]
    ''')


def load(src: str):
    """(make_graph, make_inputs) defined by `src`."""
    ns: dict = {}
    exec(src, ns)
    return ns["make_graph"], ns["make_inputs"]
