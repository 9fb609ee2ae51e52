"""Issue 17's sorting ops: argsort (the primitive: Relax argsort of an order-preserving integer
key), sort, top_k / topk (gathers by it).

NumPy's conventions: ascending, stable (ties keep their order), NaNs last, -0.0 equal to 0.0;
top_k is JAX's lax.top_k: the k largest, largest first, ties by lower index (NaN the largest).
Oracles: np.sort / np.argsort(kind="stable") and a naive Python sort for top_k; derivatives
against float64 central differences (distinct values: sorting has kinks at ties); vmap against
a loop; compiled (TVM) against interpreted, with NaN, +-inf, -0.0 and ties in the inputs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError
from graphad.tensor import Tensor

from backends import both_backends
from op_checks import check_derivatives, check_vmap

NAN, INF = math.nan, math.inf
RNG = np.random.default_rng(29)


def _special(shape, dtype="float64"):
    """Small integers (many ties) with NaN, +-inf, -0.0 sprinkled in."""
    x = RNG.integers(-3, 4, shape).astype(dtype)
    pick = RNG.random(shape)
    x[pick < 0.1] = NAN
    x[(pick >= 0.1) & (pick < 0.15)] = INF
    x[(pick >= 0.15) & (pick < 0.2)] = -INF
    x[(pick >= 0.2) & (pick < 0.3)] = -0.0
    return x


def _ref_top_k(x, k, axis=-1):
    """Naive: per row, indices sorted by (not NaN, -value, index) (NaN the largest)."""
    moved = np.moveaxis(x, axis, -1)
    vals = np.empty(moved.shape[:-1] + (k,), x.dtype)
    idx = np.empty(moved.shape[:-1] + (k,), np.int64)
    for pos in np.ndindex(*moved.shape[:-1]):
        row = moved[pos].astype(np.float64)
        order = sorted(range(len(row)), key=lambda i: (not np.isnan(row[i]), 0.0 if np.isnan(row[i]) else -row[i], i))
        idx[pos] = order[:k]
        vals[pos] = moved[pos][order[:k]]
    return np.moveaxis(vals, -1, axis), np.moveaxis(idx, -1, axis)


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "bool"])
@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_sort_and_argsort_values(dtype, axis):
    x = _special((4, 7), dtype) if dtype.startswith("float") else (
        RNG.random((4, 7)) < 0.5 if dtype == "bool" else RNG.integers(-3, 4, (4, 7)).astype(dtype))
    got = ops.sort(Tensor(x), axis).asnumpy()
    want = np.sort(x, axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    gi = ops.argsort(Tensor(x), axis)
    assert gi.dtype.name == "int64"
    np.testing.assert_array_equal(gi.asnumpy(), np.argsort(x, axis, kind="stable"))


def test_sort_edge_shapes_and_zeros():
    """Empty axes, length 1, and -0.0 / 0.0 kept in their order (they compare equal)."""
    for shape in [(0,), (3, 0), (0, 4), (1,), (5, 1)]:
        x = RNG.normal(size=shape)
        np.testing.assert_array_equal(ops.sort(Tensor(x), -1).asnumpy(), np.sort(x, -1))
        np.testing.assert_array_equal(ops.argsort(Tensor(x), 0).asnumpy(), np.argsort(x, 0, kind="stable"))
    z = np.array([0.0, -0.0, -1.0, 0.0, -0.0])
    np.testing.assert_array_equal(ops.argsort(Tensor(z)).asnumpy(), [2, 0, 1, 3, 4])
    assert [math.copysign(1, v) for v in ops.sort(Tensor(z)).asnumpy()] == [-1, 1, -1, 1, -1]
    with pytest.raises(GraphadError):
        ops.sort(Tensor(np.float64(1.0)))
    np.testing.assert_array_equal(ops.sort(Tensor(np.float64(1.0)), None).asnumpy(), [1.0])


@pytest.mark.parametrize("k", [0, 1, 3, 7])
@pytest.mark.parametrize("axis", [-1, 0])
def test_top_k(k, axis):
    x = _special((7, 7))
    v, i = ops.top_k(Tensor(x), k, axis)
    wv, wi = _ref_top_k(x, k, axis)
    assert i.dtype.name == "int64"
    np.testing.assert_array_equal(i.asnumpy(), wi)
    np.testing.assert_array_equal(v.asnumpy(), wv)
    xi = RNG.integers(-2, 3, (3, 6)).astype(np.int32)
    v, i = ops.top_k(Tensor(xi), 4)
    wv, wi = _ref_top_k(xi, 4)
    np.testing.assert_array_equal(i.asnumpy(), wi)
    np.testing.assert_array_equal(v.asnumpy(), wv)
    with pytest.raises(GraphadError):
        ops.top_k(Tensor(x), 8)


def test_argsort_descending():
    """MindSpore's descending=True: largest first, ties by lower index, NaN first (top_k's order)."""
    x = _special((4, 7))
    got = ops.argsort(Tensor(x), 1, descending=True).asnumpy()
    np.testing.assert_array_equal(got, _ref_top_k(x, 7, 1)[1])
    np.testing.assert_array_equal(ops.argsort(Tensor(x), 0, descending=True).asnumpy(), _ref_top_k(x, 4, 0)[1])


def test_topk_mindspore_spelling():
    x = _special((3, 6))
    v, i = ops.topk(Tensor(x), 2, dim=0)
    wv, wi = _ref_top_k(x, 2, 0)
    np.testing.assert_array_equal(i.asnumpy(), wi)
    np.testing.assert_array_equal(v.asnumpy(), wv)
    v, i = ops.topk(Tensor(x), 3, largest=False)  # the 3 smallest, smallest first, NaNs last
    order = np.argsort(x, -1, kind="stable")[:, :3]
    np.testing.assert_array_equal(i.asnumpy(), order)
    np.testing.assert_array_equal(v.asnumpy(), np.take_along_axis(x, order, -1))


# ---------------------------------------------------------------- derivatives, vmap, compiled

def _distinct(shape):
    n = int(np.prod(shape))
    return (RNG.permutation(n) - n / 2 + RNG.uniform(0, 0.2, n)).reshape(shape) * 0.3


@pytest.mark.parametrize("name", ["sort0", "sort1", "sort_flat", "top_k", "topk_smallest"])
def test_derivatives_match_finite_differences(name):
    fn = {"sort0": lambda t: ops.sort(t, 0), "sort1": lambda t: ops.sort(t), "sort_flat": lambda t: ops.sort(t, None),
          "top_k": lambda t: ops.top_k(t, 2), "topk_smallest": lambda t: ops.topk(t, 3, dim=0, largest=False)}[name]
    check_derivatives(fn, _distinct((4, 5)))


def test_sort_gradient_is_the_inverse_permutation():
    x = _distinct((6,))
    w = RNG.normal(size=6)
    g = gd.grad(lambda t: ops.sum(ops.mul(ops.sort(t), Tensor(w))))(Tensor(x)).asnumpy()
    want = np.empty(6)
    want[np.argsort(x)] = w
    np.testing.assert_array_equal(g, want)
    # top_k: the cotangent reaches the chosen elements only; ties go to the chosen (lower) index
    t = np.array([1.0, 3.0, 3.0, 2.0])
    g = gd.grad(lambda a: ops.sum(ops.top_k(a, 2)[0]))(Tensor(t)).asnumpy()
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 0.0])
    g = gd.grad(lambda a: ops.sum(ops.top_k(a, 1)[0]))(Tensor(t)).asnumpy()
    np.testing.assert_array_equal(g, [0.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("name", ["sort", "argsort", "top_k"])
def test_vmap_is_the_loop(name):
    fn = {"sort": lambda t: ops.sort(t, 0), "argsort": lambda t: ops.argsort(t),
          "top_k": lambda t: ops.top_k(t, 2)}[name]
    x = _special((3, 4, 5))
    check_vmap(fn, x)
    batched = gd.vmap(fn, in_axes=2)(Tensor(x))
    b = batched if isinstance(batched, tuple) else (batched,)
    for k, out in enumerate(b):
        loop = [fn(Tensor(x[:, :, j])) for j in range(5)]
        loop = [r if isinstance(r, tuple) else (r,) for r in loop]
        np.testing.assert_array_equal(out.asnumpy(), np.stack([r[k].asnumpy() for r in loop]))


@pytest.mark.tvm
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_compiled_matches_interpreted(dtype):
    x = _special((5, 9), dtype) if dtype.startswith("float") else RNG.integers(-3, 4, (5, 9)).astype(dtype)

    def f(t):
        v, i = ops.top_k(t, 4)
        s, si = ops.topk(t, 2, dim=0, largest=False)
        return ops.sort(t), ops.sort(t, 0), ops.argsort(t, 0), ops.sort(t, None), v, i, s, si

    got = both_backends(gd.jit(f), Tensor(x), rtol=0, atol=0)
    np.testing.assert_array_equal(got[0], np.sort(x, -1))
    np.testing.assert_array_equal(got[2], np.argsort(x, 0, kind="stable"))
    if dtype == "float64":
        g = gd.grad(lambda t: ops.sum(ops.mul(ops.sort(t), ops.top_k(t, 9)[0])))
        both_backends(gd.jit(g), Tensor(_distinct((5, 9))))


# ---------------------------------------------------------------- median and quantile

@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_median_quantile_values(axis, keepdims):
    """Bit-for-bit NumPy's (linear method: its _lerp), NaN slices included; q sequences' axes first."""
    x = RNG.normal(size=(4, 6))
    x[1, 2] = NAN
    x[2, :] = [1.0, INF, -INF, 2.0, 2.0, -0.0]
    if axis is not None:  # an infinite extreme in every slice would meet NumPy's inf * 0 (below)
        x[2, :] = [1.0, 3.0, -2.0, 2.0, 2.0, -0.0]
    for q in (0.0, 0.25, 0.5, 0.7, 1.0, [0.1, 0.5, 0.99], [[0.3], [0.8]]):
        got = ops.quantile(Tensor(x), q, axis=axis, keepdims=keepdims).asnumpy()
        want = np.quantile(x, q, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape, q
        np.testing.assert_array_equal(got, want, err_msg=str(q))
    for shape in [(4, 6), (5, 3)]:
        y = x if shape == (4, 6) else RNG.normal(size=shape)
        got = ops.median(Tensor(y), axis=axis, keepdims=keepdims).asnumpy()
        want = np.median(y, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_quantile_at_an_infinite_extreme_is_the_order_statistic():
    """q = 0 (1) is the minimum (maximum), also when it is -inf (+inf), and next to an infinite
    neighbour the limit: NumPy's lerp computes -inf + (b - -inf) * 0 and inf - inf * 0.5, NaN;
    between finite neighbours both agree bit for bit."""
    x = np.array([1.0, INF, -INF, 2.0, 2.0, -0.0])
    got = ops.quantile(Tensor(x), [0.0, 0.1, 0.3, 0.5, 0.9, 1.0]).asnumpy()
    np.testing.assert_array_equal(got, [-INF, -INF, 0.5, 1.5, INF, INF])
    with np.errstate(invalid="ignore"):
        want = np.quantile(x, [0.1, 0.3, 0.5, 0.9])
    np.testing.assert_array_equal(got[1:4], want[:3])
    assert math.isnan(want[3])  # NumPy: inf - (inf - 2) * 0.5
    assert ops.median(Tensor(x)).asnumpy() == np.median(x) == 1.5


def test_median_quantile_dtypes_and_errors():
    i = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    got = ops.median(Tensor(i), axis=1)
    assert got.dtype.name == "float32"  # integers give the default float, as mean
    np.testing.assert_allclose(got.asnumpy(), np.median(i, axis=1))
    f = RNG.normal(size=(5, 7)).astype(np.float32)
    got = ops.quantile(Tensor(f), [0.1, 0.65], axis=0)
    assert got.dtype.name == "float32"
    np.testing.assert_allclose(got.asnumpy(), np.quantile(f, [0.1, 0.65], axis=0), rtol=2e-7, atol=1e-7)
    for bad in (1.5, -0.1, NAN):
        with pytest.raises(GraphadError):
            ops.quantile(Tensor(f), bad)
    with pytest.raises(GraphadError):
        ops.quantile(Tensor(f), 0.5, method="nearest")
    with pytest.raises(GraphadError):
        gd.jit(lambda t, q: ops.quantile(t, q))(Tensor(f), Tensor(np.float32(0.5)))


def test_median_quantile_derivatives_and_vmap():
    x = _distinct((4, 6))
    check_derivatives(lambda t: ops.median(t, axis=1), x)
    check_derivatives(lambda t: ops.median(t, axis=0, keepdims=True), x)
    check_derivatives(lambda t: ops.quantile(t, [0.3, 0.8], axis=1), x)
    check_vmap(lambda t: ops.median(t), _distinct((3, 4, 5)))
    check_vmap(lambda t: ops.quantile(t, [0.25, 0.6], axis=0), _distinct((3, 4, 5)))


@pytest.mark.tvm
def test_median_quantile_compiled():
    x = _special((5, 8))
    both_backends(gd.jit(lambda t: (ops.median(t, 1), ops.median(t), ops.quantile(t, [0.2, 0.5, 0.9], 0))), Tensor(x))
    g = gd.grad(lambda t: ops.sum(ops.add(ops.median(t, 1), ops.quantile(t, 0.3, 1))))
    both_backends(gd.jit(g), Tensor(_distinct((5, 8))))
