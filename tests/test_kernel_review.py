"""Compiled kernels where primitives fuse, around convolutions, pools, pads, gathers and the half
types: each test is a reproducer of a wrong compiled answer or a compile failure found by random
programs chaining those primitives (compiled with poisoned memory vs the NumPy interpreter)."""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
import graphad.testing
from graphad import ops
from graphad.tensor import Tensor

pytestmark = pytest.mark.tvm


def _both(fn, *args):
    """fn jitted on the interpreter and compiled (poisoned memory), as NumPy arrays."""
    out = {}
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            with graphad.testing.poisoned(backend == "tvm"):
                out[backend] = np.asarray(gd.jit(fn)(*[Tensor(a) for a in args]).asnumpy())
        finally:
            gd.set_backend("numpy")
    return out["numpy"], out["tvm"]


def test_bfloat16_arithmetic_after_a_bool_to_bfloat16_cast_compiles():
    # lowering/bf16.py: a cast to bfloat16 from a type other than float32/float64 rebound the
    # name of the widened-value cache to a bool, so the next bfloat16 node failed to compile with
    # AttributeError ('bool' object has no attribute 'get'); the gradient of a where over
    # bfloat16 values makes such a cast
    def f(x, m):
        x = ops.astype(x, "bfloat16")
        return ops.astype(ops.astype(m, "bfloat16") * x + x, "float32")

    want, got = _both(f, np.array([1.5, -2.0, 3.25], np.float32), np.array([True, False, True]))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [3.0, -2.0, 6.5])


def test_bfloat16_int_cast_then_arithmetic_compiles():
    def f(x, k):
        x = ops.astype(x, "bfloat16")
        return ops.astype(x * ops.astype(k, "bfloat16") - x, "float32")

    want, got = _both(f, np.array([1.5, -2.0, 3.25], np.float32), np.array([2, 3, -1], np.int32))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [1.5, -4.0, -6.5])
