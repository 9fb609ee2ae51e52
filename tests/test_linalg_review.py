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
    with pytest.raises(DTypeError, match="must be float32, float64"):
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


@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_pinv_and_lstsq_derivatives_at_repeated_singular_values(backend_name):
    """pinv's derivative is Golub and Pereyra's (JAX's custom jvp), not the svd's: the svd's drops
    the rotation within tied singular vectors, and at the identity or any orthogonal matrix (a
    repeated singular value) pinv's and lstsq's derivatives were finite and wrong (JAX's
    testPinvGradIssue2792: jacobian(pinv)(eye(2)) gave -0.5 / 0.5 for -1 / 0). Oracles: inv and
    solve (pinv = inv at a full-rank square matrix), and central differences in float64."""
    gd.set_backend(backend_name)
    try:
        la = ops.linalg
        for jac in (gd.jacrev, gd.jacfwd):
            J = jac(la.pinv)(gd.Tensor(np.eye(2))).asnumpy()
            np.testing.assert_allclose(J, -np.einsum("ik,lj->ijkl", np.eye(2), np.eye(2)), atol=1e-15)
        q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
        b = gd.Tensor(q @ np.diag([2.0, 2.0, 1.0]))
        g = gd.grad(lambda x: ops.sum(ops.sin(la.pinv(x))))(b).asnumpy()
        gi = gd.grad(lambda x: ops.sum(ops.sin(la.inv(x))))(b).asnumpy()
        np.testing.assert_allclose(g, gi, atol=1e-13)
        rhs = gd.Tensor(np.array([1.0, 2.0, 3.0]))
        g = gd.grad(lambda x: ops.sum(la.lstsq(x, rhs)[0]))(b).asnumpy()
        gs = gd.grad(lambda x: ops.sum(la.solve(x, rhs)))(b).asnumpy()
        np.testing.assert_allclose(g, gs, atol=1e-13)
        hl = gd.hessian(lambda x: ops.sum(la.lstsq(x, rhs)[0] ** 3))(b).asnumpy()
        hs = gd.hessian(lambda x: ops.sum(la.solve(x, rhs) ** 3))(b).asnumpy()
        np.testing.assert_allclose(hl, hs, atol=1e-11)
        h = gd.hessian(lambda x: ops.sum(la.pinv(x) ** 3))(b).asnumpy()
        hi = gd.hessian(lambda x: ops.sum(la.inv(x) ** 3))(b).asnumpy()
        np.testing.assert_allclose(h, hi, atol=1e-11)
        # rectangular complex batch (rank constant): central differences of a real function
        rng = np.random.default_rng(1)
        A = rng.standard_normal((2, 4, 3)) + 1j * rng.standard_normal((2, 4, 3))
        f = lambda x: ops.sum(ops.real(la.pinv(x)) ** 2 + ops.imag(la.pinv(x)) * 0.3)  # noqa: E731
        g = gd.grad(f)(gd.Tensor(A)).asnumpy()
        eps = 1e-6
        for idx in [(0, 0, 0), (1, 2, 1), (1, 3, 2)]:
            E = np.zeros_like(A)
            E[idx] = eps
            fd = [(f(gd.Tensor(A + d)).numpy() - f(gd.Tensor(A - d)).numpy()) / (2 * eps) for d in (E, 1j * E)]
            np.testing.assert_allclose(g[idx], fd[0] - 1j * fd[1], rtol=1e-7)
        W = rng.standard_normal((3, 5))  # wide: lstsq's minimum-norm x and its derivative
        y = rng.standard_normal(3)
        gl = gd.grad(lambda x: ops.sum(la.lstsq(x, gd.Tensor(y))[0] ** 2))(gd.Tensor(W)).asnumpy()
        E = np.zeros_like(W)
        E[1, 4] = eps
        fl = lambda x: np.sum(np.linalg.lstsq(x, y, rcond=None)[0] ** 2)  # noqa: E731
        np.testing.assert_allclose(gl[1, 4], (fl(W + E) - fl(W - E)) / (2 * eps), rtol=1e-7, atol=1e-9)
    finally:
        gd.set_backend("numpy")


@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_a_non_finite_matrix_gives_nans_and_leaves_its_batch_alone(backend_name):
    """eigh and svd of a matrix holding an inf or a NaN (where it is read) give NaNs, on both
    backends: the compiled Jacobi kernels let it through partly (svdvals [1.21, nan, 1.0];
    eigvalsh with an inf [1.1, 1.1, inf]); and the other matrices of its batch keep their values
    (the reference kernels made the whole stack NaN)."""
    gd.set_backend(backend_name)
    try:
        la = ops.linalg
        bad = np.eye(3) + 0.1
        bad[1, 1] = np.nan
        inf = np.eye(3) + 0.1
        inf[1, 1] = np.inf
        for f, m in ((la.svdvals, bad), (la.svdvals, inf), (la.eigvalsh, inf), (la.eigvalsh, bad)):
            got = gd.jit(f)(gd.Tensor(np.stack([2 * np.eye(3), m]))).numpy()
            np.testing.assert_allclose(got[0], [2.0, 2.0, 2.0], rtol=1e-14)
            assert np.isnan(got[1]).all(), (f, got)
            eager = f(gd.Tensor(np.stack([2 * np.eye(3), m]))).numpy()
            np.testing.assert_allclose(eager[0], [2.0, 2.0, 2.0], rtol=1e-14)
            assert np.isnan(eager[1]).all()
        upper = np.eye(3) + 0.1
        upper[0, 2] = np.inf  # eigh reads the lower triangle: unaffected
        np.testing.assert_allclose(gd.jit(la.eigvalsh)(gd.Tensor(upper)).numpy(),
                                   np.linalg.eigvalsh(np.tril(upper) + np.tril(upper, -1).T), rtol=1e-13)
        np.testing.assert_allclose(la.pinv(gd.Tensor(np.stack([2 * np.eye(3), bad]))).numpy()[0], 0.5 * np.eye(3),
                                   atol=1e-15)
    finally:
        gd.set_backend("numpy")


def test_empty_matrix_norms_and_messages():
    """The 1, 2, inf and nuclear norms of an empty matrix are 0, as NumPy's and JAX's (JAX's
    testEmptyMatrixNorm: a max over no column was refused); dtype errors list the complex dtypes
    the ops take; triangular_solve(left_side=False) names its own shape rule and b's shape."""
    la = ops.linalg
    for shape in [(0, 3), (3, 0), (0, 0)]:
        for o in (1, 2, np.inf, "nuc", "fro"):
            got = la.norm(gd.Tensor(np.zeros(shape)), o)
            assert got.shape == () and got.numpy() == 0.0
    assert la.norm(gd.Tensor(np.zeros((2, 0, 3))), 2, axis=(1, 2), keepdims=True).shape == (2, 1, 1)
    with pytest.raises(DTypeError, match="float32, float64, complex64 or complex128, got int64"):
        la.det(gd.Tensor(np.ones((2, 2), np.int64)))
    with pytest.raises(gd.GraphadError, match=r"left_side=False b must be \(\.\.\., k, n\) with n = 3.*got shape \(3, 2\)"):
        la.triangular_solve(gd.Tensor(np.eye(3)), gd.Tensor(np.ones((3, 2))), left_side=False)
