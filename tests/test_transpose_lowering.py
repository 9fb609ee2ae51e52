"""Transposes on the CPU: the tiled transpose schedule (lowering/schedule.py), the left operand of
a matmul read in place instead of transposed first (lowering/__init__._lhs_transposes,
relax_ops._matmul), and the weight gradient of a matrix shared by a batch (prims/linalg.py),
against NumPy and float64 references, and bit for bit against the unfolded lowering."""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.runtime.executable import compile_graph

pytestmark = pytest.mark.tvm


def _mT(x):
    return ops.swapaxes(x, -1, -2)


def _rules(fn, *args) -> list[str]:
    """The schedule report lines of `fn` compiled at `args` (one per PrimFunc)."""
    graph = gd.make_graph(fn)(*args)
    return [str(line) for line in compile_graph(graph, cache=False).report["schedule"]]


@pytest.fixture(autouse=True)
def _tvm():
    gd.set_backend("tvm")
    yield
    gd.set_backend("numpy")


TRANSPOSES = [
    ((784, 256), (1, 0)), ((128, 784), (1, 0)), ((8, 4, 128, 128), (0, 1, 3, 2)),
    ((8, 128, 4, 32), (0, 2, 3, 1)), ((4, 100, 96), (0, 2, 1)), ((6, 10), (1, 0)),
    ((3, 5, 7), (2, 0, 1)), ((17, 33), (1, 0)), ((33, 31), (1, 0)), ((0, 8), (1, 0)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "bool", "float16"])
@pytest.mark.parametrize("shape,perm", TRANSPOSES, ids=[f"{s}-{p}" for s, p in TRANSPOSES])
def test_compiled_transposes_equal_numpy(shape, perm, dtype):
    rng = np.random.default_rng(len(shape) * 31 + sum(shape))
    x = (rng.standard_normal(shape) * 50).astype(dtype)
    f = gd.jit(lambda x: ops.transpose(x, perm))
    np.testing.assert_array_equal(f(gd.Tensor(x)).asnumpy(), np.transpose(x, perm))
    # a second call on fresh buffers: a read of memory nothing wrote would differ
    np.testing.assert_array_equal(f(gd.Tensor(x.copy())).asnumpy(), np.transpose(x, perm))


def test_a_transpose_is_walked_along_its_input_rows():
    from graphad.lowering.schedule import MAX_LANES
    from graphad.lowering.targets import host_target, vector_bits
    x = gd.Tensor(np.zeros((784, 256), np.float32))
    rules = _rules(lambda x: ops.transpose(x, (1, 0)), x)
    # tiles of 8 output rows x one vector of input-row lanes, at most 16 (schedule.py `injective`):
    # V float32 lanes as the rules take them from the host target: 8x16 with AVX-512, 8x8 with AVX2
    lanes = max(1, min(MAX_LANES, vector_bits(host_target()) // 32))
    assert any(f"transpose=8x{min(lanes, 16)}," in r for r in rules), rules
    # not where another operand is read along the output rows: that order stays
    rules = _rules(lambda x: _mT(x) + x, gd.Tensor(np.zeros((64, 64), np.float32)))
    assert not any("transpose=" in r for r in rules), rules


def test_an_odd_transpose_is_not_one_gather_per_row():
    """A transpose whose extents are odd (33x31: no tile of 4 lanes fits) is not vectorized as
    whole rows, each of which would be one gather of 33 lanes (LLVM took 44 ms to compile that
    kernel, 8 ms its scalar loop, which runs as fast); a non-transposing odd row still is."""
    rules = _rules(lambda x: ops.transpose(x, (1, 0)), gd.Tensor(np.zeros((33, 31), np.float32)))
    assert not any("vec=row" in r for r in rules), rules
    rules = _rules(lambda x: ops.sin(x) * 2.0, gd.Tensor(np.zeros((33, 31), np.float32)))
    assert any("vec=row31" in r for r in rules), rules


MATMULS = [((128, 784), (128, 256)), ((8, 128, 128), (8, 128, 128)), ((8, 4, 64, 40), (8, 4, 64, 32)),
           ((1, 5, 3), (4, 5, 2)), ((4, 5, 3), (5, 2)), ((2, 1, 7, 3), (3, 7, 5)), ((9, 3), (9, 17)),
           ((9, 1), (9, 1)), ((1, 1), (1, 6)),
           # fewer than 16 columns: computed as (y.T @ x).T (relax_ops._matmul), long contractions
           # staged too
           ((64, 32), (64, 1)), ((100, 40), (100, 3)), ((2, 30, 20), (30, 15)), ((5000, 24), (5000, 2))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sa,sb", MATMULS, ids=[f"{a}x{b}" for a, b in MATMULS])
def test_matmul_of_a_transposed_left_operand(sa, sb, dtype):
    rng = np.random.default_rng(sum(sa) + 7 * sum(sb))
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    folded = gd.jit(lambda a, b: _mT(a) @ b)(gd.Tensor(a), gd.Tensor(b)).asnumpy()
    if not sb[-1] < 16 <= sa[-1]:
        # the transpose also returned: it is materialised and the matmul is R.matmul's, whose sums
        # over k run in the same order (with few columns the folded product is y.T @ x, whose
        # schedule adds in another order than R.matmul's vector partial sums: not the same bits)
        unfolded = gd.jit(lambda a, b: (_mT(a) @ b, _mT(a)))(gd.Tensor(a), gd.Tensor(b))[0].asnumpy()
        np.testing.assert_array_equal(folded, unfolded)
    ref = np.matmul(np.swapaxes(a, -1, -2).astype(np.float64), b.astype(np.float64))
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(folded, ref, rtol=tol, atol=tol * np.sqrt(sa[-2]))


def test_a_folded_transpose_is_not_materialised():
    a, b = gd.Tensor(np.ones((128, 96), np.float32)), gd.Tensor(np.ones((128, 64), np.float32))
    rules = _rules(lambda a, b: _mT(a) @ b, a, b)
    assert any(r.startswith("matmul_tn") for r in rules), rules
    assert not any("T_transpose" in r for r in rules), rules
    # used elsewhere too: kept, and the matmul reads the materialised one
    rules = _rules(lambda a, b: (_mT(a) @ b, _mT(a) * 2.0), a, b)
    assert any("T_transpose" in r for r in rules) and not any("matmul_tn" in r for r in rules), rules


def test_few_columns_are_computed_transposed():
    """x.T @ y with fewer than 16 columns and at least 16 rows runs as y.T @ x (vectorized along
    x's rows) and a transpose of the small result: read as x.T @ y, each vector of x's column was
    a strided gather ((4096, 1024).T @ (4096, 1) took 124 ms, now 13)."""
    a, b = gd.Tensor(np.ones((256, 64), np.float32)), gd.Tensor(np.ones((256, 3), np.float32))
    rules = _rules(lambda a, b: _mT(a) @ b, a, b)
    assert any(r.startswith("matmul_tn") and "reduceA" in r for r in rules), rules
    assert any("T_transpose" in r for r in rules), rules  # (the (3, 64) result's, not x's)


def test_ieee_values_through_a_folded_matmul():
    a = np.array([[np.inf, 1.0], [0.0, np.nan], [-0.0, 2.0]], np.float32)
    b = np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 3.0]], np.float32)
    got = gd.jit(lambda a, b: _mT(a) @ b)(gd.Tensor(a), gd.Tensor(b)).asnumpy()
    with np.errstate(invalid="ignore"):
        want = a.T @ b
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(8, 16, 12), (2, 3, 5, 12), (1, 4, 12)])
def test_gradient_of_a_matrix_shared_by_a_batch(shape):
    """d/dW of sum((x @ W)^2) for x with batch axes: one product over all rows (prims/linalg.py),
    against float64 NumPy, and reverse vs forward mode."""
    rng = np.random.default_rng(sum(shape))
    x, w = rng.standard_normal(shape), rng.standard_normal((12, 10))

    def loss(x, w):
        return ops.sum((x @ w) ** 2)
    rows = x.reshape(-1, 12)
    ref_w = np.einsum("mk,mn->kn", rows, 2 * (rows @ w))
    ref_x = 2 * (x @ w) @ w.T
    gx, gw = (t.asnumpy() for t in gd.grad(loss, grad_position=(0, 1))(gd.Tensor(x), gd.Tensor(w)))
    np.testing.assert_allclose(gw, ref_w, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(gx, ref_x, rtol=1e-12, atol=1e-11)
    v = rng.standard_normal((12, 10))
    _, jv = gd.jvp(lambda w: loss(gd.Tensor(x), w), (gd.Tensor(w),), (gd.Tensor(v),))
    np.testing.assert_allclose(float(jv.asnumpy()), float(np.sum(gw * v)), rtol=1e-11)
