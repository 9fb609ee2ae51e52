"""Half-precision sums and products computed as documented (float32 accumulation, rounded once) in
the interpreter as in compiled code, and float-to-int casts defined in both: the findings of a
low-precision trial (lowp), each against an exact oracle (float64 or integer arithmetic rounded
once) and across backends."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm

HALF = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _all_ways(fn, *args):
    """fn's result eager, interpreted under jit and compiled (NumPy arrays, as they came)."""
    return [np.asarray(fn(*args)), np.asarray(gd.jit(fn, backend="numpy")(*args)),
            np.asarray(gd.jit(fn, backend="tvm")(*args))]


def _same_bits(results):
    first = results[0]
    for r in results[1:]:
        assert r.dtype == first.dtype and r.shape == first.shape
        assert r.tobytes() == first.tobytes(), (first, r)


@pytest.mark.parametrize("name", list(HALF))
def test_half_einsum_accumulates_in_float32_everywhere(name):
    """float16 einsum (and tensordot, inner, built on it) summed in float16 in the interpreter and
    eagerly (2048 + 1 + 1 = 2048), in float32 compiled (2050)."""
    t = HALF[name]
    a = gd.Tensor(np.array([[2048.0, 1.0, 1.0]], t))
    b = gd.Tensor(np.ones((3, 4), t))
    for fn in (lambda a, b: ops.einsum("ij,jk->ik", a, b), lambda a, b: ops.tensordot(a, b, 1)):
        got = _all_ways(fn, a, b)
        _same_bits(got)
        np.testing.assert_array_equal(got[0], np.full((1, 4), 2050.0, np.float32).astype(t))  # (bfloat16: 2048)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 300)).astype(t), rng.standard_normal((300, 8)).astype(t)
    exact = (x.astype(np.float64) @ y.astype(np.float64)).astype(np.float32).astype(t)
    got = _all_ways(lambda a, b: ops.einsum("ij,jk->ik", a, b), gd.Tensor(x), gd.Tensor(y))
    _same_bits(got)
    # float32 accumulation rounded once: at most one half-precision ulp from the float64 product
    ulp = np.abs(np.spacing(exact.astype(np.float32).astype(t)).astype(np.float64))
    assert np.all(np.abs(got[0].astype(np.float64) - exact.astype(np.float64)) <= ulp)


@pytest.mark.parametrize("name", list(HALF))
@pytest.mark.parametrize("data", [[-0.0, 0.0], [0.0, -0.0], [-0.0, -0.0]])
def test_half_max_min_of_signed_zeros_agree_across_backends(name, data):
    """NumPy's float16 max returned the other zero than its float32 max and the compiled code."""
    x = gd.Tensor(np.array(data, HALF[name]))
    f32 = [np.signbit(np.asarray(op(gd.Tensor(np.array(data, np.float32))))) for op in (ops.max, ops.min)]
    for op, want in zip((ops.max, ops.min), f32):
        for r in _all_ways(op, x):
            assert np.signbit(r.astype(np.float32)) == want


@pytest.mark.parametrize("name", list(HALF))
def test_half_nan_moments_do_not_overflow(name):
    """nanmean / nanvar / nanstd of half types computed in float32 and rounded once, as mean, var
    and std (float16 nanvar([60000, 60000, nan]) was inf; JAX's nanvar gives 0)."""
    t = HALF[name]
    y = gd.Tensor(np.array([60000.0, 60000.0, np.nan], t))
    x = gd.Tensor(np.array([0.0] * 15 + [1000.0, np.nan], t))
    for fn, arg, ref in [(ops.nanvar, y, ops.var), (ops.nanmean, y, ops.mean), (ops.nanvar, x, ops.var),
                         (ops.nanstd, x, ops.std)]:
        got = _all_ways(fn, arg)
        _same_bits(got)
        clean = gd.Tensor(np.asarray(arg)[:-1])
        assert got[0].tobytes() == np.asarray(ref(clean)).tobytes()
    assert float(np.asarray(ops.nanvar(y)).astype(np.float32)) == 0.0


@pytest.mark.parametrize("name", list(HALF))
def test_half_vdot_sums_its_products_in_float32(name):
    t = HALF[name]
    a, b = gd.Tensor(np.array([300.0, 300.0], t)), gd.Tensor(np.array([300.0, -300.0], t))
    got = _all_ways(ops.vdot, a, b)
    _same_bits(got)
    assert float(got[0].astype(np.float32)) == 0.0  # (each product rounded to float16 overflowed: NaN)
    np.testing.assert_array_equal(got[0], np.asarray(ops.dot(a, b)))


FLOATS = ["float16", "bfloat16", "float32", "float64"]
SPECIAL = [np.nan, np.inf, -np.inf, 1e4, -1e4, 2.0 ** 31, -(2.0 ** 31), 2.0 ** 31 - 128, 3e9, -3e9,
           2.0 ** 63, -(2.0 ** 63), 1e300, -0.0, 0.7, -0.7, 65504.0]


def _float_array(values, name):
    t = HALF.get(name, np.dtype(name).type)
    top = float(ml_dtypes.finfo(t).max)
    return np.array([v for v in values if np.isnan(v) or np.isinf(v) or abs(v) <= top], t)


@pytest.mark.parametrize("src", FLOATS)
@pytest.mark.parametrize("dst", ["int32", "int64"])
def test_float_to_int_casts_are_defined_alone_and_in_chains(src, dst):
    """A float that is NaN, infinite or outside the integer type's range casts to its most negative
    value, in both backends and whatever LLVM folds: `float16 inf -> int32 -> float16 -> float64`
    gave -2^31 compiled (the float16 rounding folded away from a poison value) and -inf
    interpreted; `-> int64 -> int32` gave INT32_MIN compiled, 0 interpreted."""
    a = _float_array(SPECIAL, src)
    info = np.iinfo(dst)
    w = a.astype(np.float64)
    ok = (w >= info.min) & (w < -float(info.min))
    want = np.where(ok, np.trunc(np.where(ok, w, 0)), info.min).astype(dst)
    x = gd.Tensor(a)
    alone = _all_ways(lambda v: ops.astype(v, dst), x)
    _same_bits(alone)
    np.testing.assert_array_equal(alone[0], want)
    for chain in (lambda v: ops.astype(ops.astype(ops.astype(v, dst), src), "float64"),
                  lambda v: ops.astype(ops.astype(v, "int64" if dst == "int32" else "int32"), dst),
                  lambda v: ops.astype(v, dst) + 1,
                  lambda v: ops.arctan2(ops.astype(ops.astype(v, dst), "float32"), 1.0)):
        _same_bits(_all_ways(chain, x))
