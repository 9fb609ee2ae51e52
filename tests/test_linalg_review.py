"""A reviewer's cases for graphad.ops.linalg, each of which gave a wrong answer once.

Oracles: SciPy's expm (the gradient of trace(expm(a)) is expm(a) itself), NumPy's dtype rules
as docs/linalg.md states them (an integer operand is a DTypeError, not a silent cast), and the
1 x 1 determinant's derivative (1 everywhere, 0 at second order).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import graphad as gd
from backends import fd_grad
from graphad import ops
from graphad.errors import DTypeError
from graphad.tensor import Tensor

la = ops.linalg


def _folded(g):
    """A symmetric gradient g as graphad's eigh gives it: on the lower triangle read."""
    return np.tril(g) + np.tril(g.T, -1)


def _trace_expm(a):
    w, v = la.eigh(a)
    return ops.sum(ops.diagonal(ops.matmul(ops.mul(v, ops.exp(w)), v.T)))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_eigh_gradient_of_an_invariant_function_at_a_repeated_eigenvalue(backend):
    # a triple eigenvalue 1 whose computed copies differ by rounding: 1 / (w_j - w_i) was ~1e16
    # and multiplied the rounding-level off-diagonal cotangent, an O(1) error (0.45 here)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 4)))
    a = (q * np.array([1.0, 1.0, 1.0, 3.0])) @ q.T
    a = (a + a.T) / 2
    gd.set_backend(backend)
    try:
        g = gd.jit(gd.grad(_trace_expm))(Tensor(a)).asnumpy()
        gv = gd.jit(gd.vmap(gd.grad(_trace_expm)))(Tensor(np.stack([a, 2 * a]))).asnumpy()
    finally:
        gd.set_backend("numpy")
    np.testing.assert_allclose(g, _folded(scipy.linalg.expm(a)), atol=1e-10)
    np.testing.assert_allclose(gv[1], _folded(scipy.linalg.expm(2 * a)), atol=1e-9)


def test_eigh_gradient_with_distinct_eigenvalues_is_unchanged():
    # the tie tolerance (n eps max|w|) leaves eigenvalues 1e-6 apart alone: F = 1e6 there
    a = np.diag([1.0, 1.0 + 1e-6, 2.0])
    w = np.random.default_rng(0).normal(size=(3, 3))

    def loss(x):
        return ops.sum(ops.mul(la.eigh(x)[1], Tensor(w)))
    _, t = gd.jvp(loss, Tensor(a), Tensor(np.tril(np.ones((3, 3)), -1) * 1e-3))
    x = np.tril(np.ones((3, 3)), -1) * 1e-3
    # v's first two columns turn by d a_10 / (w_1 - w_0) = 1e-3 / 1e-6: dv_10 = 1e3, dv_01 = -1e3
    assert abs(float(t.asnumpy())) > 100.0
    fd = (float(loss(Tensor(a + 1e-10 * x / 1e-3)).asnumpy()) - float(loss(Tensor(a - 1e-10 * x / 1e-3)).asnumpy())) \
        / (2e-10 / 1e-3)
    np.testing.assert_allclose(float(t.asnumpy()), fd, rtol=1e-4)


@pytest.mark.parametrize("call", [
    lambda: la.solve(np.eye(2, dtype=np.int64), np.ones(2)),
    lambda: la.solve(np.eye(2), np.ones(2, dtype=np.int32)),
    lambda: la.inv(np.eye(2, dtype=np.int64)),
    lambda: la.solve_triangular(np.eye(2, dtype=np.int32), np.ones(2)),
    lambda: la.triangular_solve(np.eye(2), np.ones((2, 2), dtype=np.int64), left_side=True),
    lambda: la.lstsq(np.eye(2, dtype=np.int64), np.ones(2)),
    lambda: la.lstsq(np.eye(2), np.ones(2, dtype=bool)),
])
def test_an_integer_operand_is_refused_not_promoted(call):
    # solve(int64 a, float64 b) was computed in float64 (the pair promoted before the dtype check)
    with pytest.raises(DTypeError, match="must be float32 or float64"):
        call()


@pytest.mark.parametrize("backend", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_det_of_a_1x1_matrix_is_differentiable_at_zero(backend):
    # det([[x]]) = x: sign * exp(log|x|) had the derivative x^-1 * 0 = NaN at x = 0
    x = np.array([[[0.0]], [[-2.0]], [[3.0]]])
    gd.set_backend(backend)
    try:
        g = gd.jit(gd.vmap(gd.grad(la.det)))(Tensor(x)).asnumpy()
        h = gd.jit(gd.hessian(la.det))(Tensor(x[0])).asnumpy()
        v = gd.jit(la.det)(Tensor(x)).asnumpy()
        _, t = gd.jvp(la.det, Tensor(x), Tensor(np.full((3, 1, 1), 0.5)))
    finally:
        gd.set_backend("numpy")
    np.testing.assert_array_equal(g, np.ones((3, 1, 1)))
    np.testing.assert_array_equal(h, np.zeros((1, 1, 1, 1)))
    np.testing.assert_array_equal(v, np.array([0.0, -2.0, 3.0]))
    np.testing.assert_array_equal(t.asnumpy(), np.full(3, 0.5))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_svd_polar_factor_gradient_at_a_repeated_singular_value(backend):
    # u vh is smooth where a has full rank, repeated singular values included; the rule's
    # 1 / (s_j^2 - s_i^2) was set to 0 at the tie, dropping the finite antisymmetric part
    # (0.47 off a gradient of size 0.53), and its jvp disagreed with its vjp
    rng = np.random.default_rng(1)
    q1 = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    q2 = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    w = rng.standard_normal((4, 4))
    cases = [q1 @ np.diag([2.0, 2.0, 2.0, 5.0]) @ q2.T, q1 @ np.diag([1.0, 2.0, 3.0, 5.0]) @ q2.T]

    def polar(a):
        u, _, vh = la.svd(a, full_matrices=False)
        return ops.sum(ops.matmul(u, vh) * Tensor(w))

    def polar_np(a):
        u, _, vh = np.linalg.svd(a, full_matrices=False)
        return float(np.sum((u @ vh) * w))
    gd.set_backend(backend)
    try:
        for a in cases:
            g = gd.jit(gd.grad(polar))(Tensor(a)).asnumpy()
            np.testing.assert_allclose(g, fd_grad(polar_np, a), atol=1e-7)
            d = rng.standard_normal((4, 4))
            jv = gd.jvp(polar, (Tensor(a),), (Tensor(d),))[1].asnumpy()
            np.testing.assert_allclose(jv, np.sum(g * d), rtol=1e-9, atol=1e-12)
    finally:
        gd.set_backend("numpy")
