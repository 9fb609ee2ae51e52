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


def _ulps_from_rounded(got, exact):
    """|got - exact rounded to float16| in float16 ulps of that rounded value."""
    r16 = np.asarray(exact, np.float64).astype(np.float16)
    ulp = np.spacing(np.abs(r16)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - r16.astype(np.float64)) / ulp


@pytest.mark.parametrize("case", ["conv2d", "matmul", "sum", "mean"])
def test_float16_accumulations_round_once_from_float32(case):
    # compiled float16 conv2d, matmul and sums accumulated in float16: a conv2d of 72 terms per
    # output was hundreds of ulps off, the interpreter (NumPy's float16 loops accumulate in float)
    # within one; now they run in float32 and round once (lowering/bf16.py ACC_F32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float16)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float16)
    a = rng.standard_normal((16, 300)).astype(np.float16)
    b = rng.standard_normal((300, 8)).astype(np.float16)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    if case == "conv2d":
        fn, args = (lambda x, w: ops.conv2d(x, w, padding=1)), (x, w)
        gd.set_backend("numpy")
        exact = gd.jit(fn)(Tensor(x64), Tensor(w64)).asnumpy()
    elif case == "matmul":
        fn, args, exact = ops.matmul, (a, b), a.astype(np.float64) @ b.astype(np.float64)
    elif case == "sum":
        fn, args, exact = (lambda x: ops.sum(x, axis=(1, 2, 3))), (x,), x64.sum((1, 2, 3))
    else:
        fn, args, exact = (lambda x: ops.mean(x, axis=(0, 2))), (x,), x64.mean((0, 2))
    want, got = _both(fn, *args)
    assert got.dtype == np.float16
    if case == "mean":  # averaged in float32 and rounded once, as NumPy's and JAX's mean (core.mean)
        np.testing.assert_array_equal(got, want)
    assert _ulps_from_rounded(want, exact).max() <= 1
    assert _ulps_from_rounded(got, exact).max() <= 1


def test_float16_conv2d_gradient_compiled_matches_interpreter():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)

    def f(x, w):
        return gd.grad(lambda x: ops.sum(ops.astype(ops.relu(ops.conv2d(x, w, padding=1, stride=(1, 2))), "float32")))(x)

    want, got = _both(f, x, w)
    assert got.dtype == np.float16
    assert np.max(np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want)).astype(np.float64)) <= 1


def test_max_pool_ties_and_nan_gradients_as_documented_on_both_backends():
    # ops.max_pool2d's docstring: ties share the cotangent, a NaN window is NaN and sends NaN back
    x = np.array([[[[np.inf, 1.0, 0.0], [2.0, np.inf, np.nan]]]])

    def f(x):
        return ops.max_pool2d(x, 2, 1)

    def g(x):
        return gd.grad(lambda x: ops.sum(ops.mul(f(x), Tensor(np.array([[[[1.0, 4.0]]]])))))(x)

    for out in _both(f, x):
        np.testing.assert_array_equal(out, [[[[np.inf, np.nan]]]])
    for out in _both(g, x):
        np.testing.assert_array_equal(out, [[[[0.5, np.nan, np.nan], [0.0, np.nan, np.nan]]]])


def test_float16_sums_and_products_agree_across_backends():
    """The interpreter's float16 sums over several axes and products added in float16 (a mean
    over axes (0, 2) 3 ulps off), where the compiled code accumulates in float32: both now give
    the float32 accumulation rounded once, bit for bit."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0.5, 1.5, (2, 8, 9, 9)).astype(np.float16)
    progs = [lambda t: ops.mean(t, (0, 2)), lambda t: ops.sum(t, (0, 2, 3)), lambda t: ops.prod(t[:, :, :4, 0], (0, 2))]
    for fn in progs:
        want = None
        for backend in ("numpy", "tvm"):
            gd.set_backend(backend)
            try:
                got = gd.jit(fn)(gd.Tensor(x)).asnumpy()
            finally:
                gd.set_backend("numpy")
            want = got if want is None else want
            np.testing.assert_array_equal(got, want)
        ref = fn(gd.Tensor(x.astype(np.float64))).asnumpy()
        np.testing.assert_allclose(want.astype(np.float64), ref, rtol=2 ** -10)
