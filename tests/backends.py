"""Test helper: run a function under the NumPy reference interpreter and compiled (TVM), and
require the two to agree (the control-flow and custom-derivative tests use it)."""
from __future__ import annotations

import numpy as np

import graphad as gd
from graphad import pytree


def both_backends(fn, *args, rtol: float = 1e-10, atol: float = 1e-12) -> list:
    """fn's flattened results (NumPy arrays) under the interpreter; asserts the compiled ones agree."""
    out = {}
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            res = fn(*args)
        finally:
            gd.set_backend("numpy")
        out[backend] = [np.asarray(t.asnumpy() if hasattr(t, "asnumpy") else t) for t in pytree.flatten(res)[0]]
    for a, b in zip(out["numpy"], out["tvm"]):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    return out["numpy"]
