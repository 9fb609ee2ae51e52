"""Test helpers: run a function under the NumPy reference interpreter and compiled (TVM), and
require the two to agree (the control-flow and custom-derivative tests use it); central finite
differences in float64."""
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


def fd_grad(f, x, eps=1e-6):
    """Central differences of the scalar f (ndarray -> float) at x (float64)."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        p, m = x.copy(), x.copy()
        p[i] += eps
        m[i] -= eps
        g[i] = (f(p) - f(m)) / (2 * eps)
    return g
