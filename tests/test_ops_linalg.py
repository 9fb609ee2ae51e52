"""Issue 17's linear algebra (graphad.ops.linalg): solve, inv, det, slogdet, cholesky,
solve_triangular / triangular_solve.

Oracles: NumPy's LAPACK routines in float64 (and mpmath at 50 digits for det), with the
triangles masked by hand for the triangular solves; derivatives against float64 central
differences (reverse and forward mode, and jacrev against jacfwd); vmap against a Python loop;
compiled (TVM, the TIR kernels of graphad/lowering/linalg_tir.py) against the interpreter,
derivative graphs included; singular and indefinite inputs (no error: JAX's non-finite values);
bad operands (a GraphadError naming op, shapes and dtypes).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError
from graphad.tensor import Tensor

from backends import both_backends
from op_checks import check_derivatives, check_vmap

la = ops.linalg
RNG = np.random.default_rng(17)


def wellcond(*shape, dtype="float64"):
    """Matrices with a dominant diagonal of random sign (condition number below ~10)."""
    n = shape[-1]
    a = RNG.uniform(-1, 1, shape)
    d = RNG.uniform(n + 1.0, n + 2.0, shape[:-1]) * RNG.choice([-1.0, 1.0], shape[:-1])
    return (a + d[..., None] * np.eye(n)).astype(dtype)


def spd(*shape, dtype="float64"):
    m = RNG.uniform(-1, 1, shape)
    return (m @ np.swapaxes(m, -1, -2) + shape[-1] * np.eye(shape[-1])).astype(dtype)


def T(x):
    return Tensor(x)


def close(got, want, dtype="float64"):
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(np.asarray(got.asnumpy() if hasattr(got, "asnumpy") else got), want, rtol=tol,
                               atol=tol)


# ---------------------------------------------------------------- values against NumPy / mpmath

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_values_against_numpy(dtype):
    a, s = wellcond(2, 3, 4, 4, dtype=dtype), spd(3, 4, 4, dtype=dtype)
    b, v = RNG.normal(size=(2, 3, 4, 2)).astype(dtype), RNG.normal(size=4).astype(dtype)
    for got, want in [
        (la.solve(T(a), T(b)), np.linalg.solve(a, b)),
        (la.solve(T(a[0, 0]), T(v)), np.linalg.solve(a[0, 0], v)),                # a vector b
        (la.solve(T(a[0, 0]), T(b)), np.linalg.solve(a[0, 0], b)),                # one a, a batch of b
        (la.inv(T(a)), np.linalg.inv(a)),
        (la.det(T(a)), np.linalg.det(a)),
        (la.slogdet(T(a))[0], np.linalg.slogdet(a)[0]),
        (la.slogdet(T(a))[1], np.linalg.slogdet(a)[1]),
        (la.cholesky(T(s)), np.linalg.cholesky(s)),
        (la.cholesky(T(s), upper=True), np.swapaxes(np.linalg.cholesky(s), -1, -2)),
    ]:
        assert got.dtype.name == dtype and got.shape == want.shape
        close(got, want, dtype)


def test_batch_axes_broadcast():
    a, b = wellcond(3, 1, 4, 4), RNG.normal(size=(2, 4, 5))
    close(la.solve(T(a), T(b)), np.linalg.solve(a, b))
    assert la.solve(T(a), T(b)).shape == (3, 2, 4, 5)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [0, 1, "T"])
@pytest.mark.parametrize("unit", [False, True])
def test_solve_triangular_against_masked_solve(lower, trans, unit):
    a, b = wellcond(2, 4, 4), RNG.normal(size=(2, 4, 3))
    t = np.tril(a) if lower else np.triu(a)
    if unit:
        t = t * (1 - np.eye(4)) + np.eye(4)
    if trans not in (0, "N"):
        t = np.swapaxes(t, -1, -2)
    close(la.solve_triangular(T(a), T(b), trans=trans, lower=lower, unit_diagonal=unit), np.linalg.solve(t, b))


def test_lax_triangular_solve_sides():
    """JAX's lax.linalg.triangular_solve: left_side=False solves x @ op(a) = b."""
    a = wellcond(4, 4)
    t = np.tril(a)
    b = RNG.normal(size=(3, 4))
    close(la.triangular_solve(T(a), T(b), left_side=False, lower=True), b @ np.linalg.inv(t))
    close(la.triangular_solve(T(a), T(b), left_side=False, lower=True, transpose_a=True), b @ np.linalg.inv(t.T))
    bl = RNG.normal(size=(4, 3))
    close(la.triangular_solve(T(a), T(bl), left_side=True, lower=True), np.linalg.solve(t, bl))


@pytest.mark.tvm
def test_det_against_mpmath():
    """An ill-conditioned matrix (Hilbert 6x6, det ~ 5.4e-18): relative error of a few condition numbers' eps."""
    h = np.array([[1.0 / (i + j + 1) for j in range(6)] for i in range(6)])
    with mpmath.workdps(50):
        want = float(mpmath.det(mpmath.matrix(h.tolist())))
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            got = float(gd.jit(la.det)(T(h)).asnumpy())
        finally:
            gd.set_backend("numpy")
        assert abs(got - want) <= 1e-8 * abs(want), (backend, got, want)


def test_empty_and_one_by_one():
    assert la.solve(T(np.zeros((0, 0))), T(np.zeros((0, 2)))).shape == (0, 2)
    s, l = la.slogdet(T(np.zeros((3, 0, 0))))
    np.testing.assert_array_equal(s.asnumpy(), np.ones(3))
    np.testing.assert_array_equal(l.asnumpy(), np.zeros(3))
    close(la.inv(T(np.array([[4.0]]))), [[0.25]])


# ---------------------------------------------------------------- singular and indefinite inputs

@pytest.mark.tvm
def test_singular_inputs_give_jax_values_not_errors():
    """solve/inv of a singular matrix: non-finite (JAX; NumPy raises LinAlgError), det 0,
    slogdet (0, -inf) (NumPy and JAX), cholesky of an indefinite matrix all NaN (JAX). The
    compiled kernels give the same as the interpreter."""
    sing = np.array([[1.0, 2.0], [2.0, 4.0]])
    indef = np.array([[1.0, 2.0], [2.0, 1.0]])
    res = both_backends(lambda a, c: (la.solve(a, T(np.ones(2))), la.inv(a), la.det(a), *la.slogdet(a),
                                      la.cholesky(c)), T(sing), T(indef), rtol=0, atol=0)
    x, inv, det, sign, lad, chol = res
    assert not np.isfinite(x).all() and not np.isfinite(inv).all()
    assert det == 0.0 and sign == 0.0 and lad == -np.inf
    assert np.isnan(chol).all()
    # one singular matrix in a batch leaves the others alone
    batch = np.stack([sing, np.eye(2) * 2])
    got = la.inv(T(batch)).asnumpy()
    np.testing.assert_allclose(got[1], np.eye(2) / 2)
    np.testing.assert_array_equal(la.cholesky(T(np.stack([indef, np.eye(2)]))).asnumpy()[1], np.eye(2))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("call,needles", [
    (lambda: la.solve(T(np.ones((2, 3))), T(np.ones(2))), ["solve", "(2, 3)", "f64[2,3]"]),
    (lambda: la.solve(T(np.eye(3)), T(np.ones(2))), ["solve", "n = 3", "(2,)"]),
    (lambda: la.solve(T(np.ones((2, 3, 3))), T(np.ones((4, 3, 1)))), ["solve", "(2,)", "(4,)"]),
    (lambda: la.inv(T(np.eye(3, dtype=np.int64))), ["inv", "int64", "(3, 3)"]),
    (lambda: la.det(T(np.ones(3))), ["det", "(3,)"]),
    (lambda: la.cholesky(T(np.eye(2, dtype=np.float16))), ["cholesky", "float16"]),
    (lambda: la.solve(T(np.eye(2, dtype=np.int32)), T(np.ones(2, np.int32))), ["solve", "i32[2,2]", "int32"]),
    (lambda: la.solve_triangular(T(np.eye(2)), T(np.ones(2)), trans=3), ["solve_triangular", "trans"]),
])
def test_bad_operands_name_op_shapes_dtypes(call, needles):
    with pytest.raises(GraphadError) as e:
        call()
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_primitive_refuses_mismatched_operands():
    from graphad.prims import decomp
    with pytest.raises(GraphadError, match=r"solve\(f64\[2,2\], f32\[2,1\]\)"):
        decomp.solve.bind(T(np.eye(2)), T(np.ones((2, 1), np.float32)))
    with pytest.raises(GraphadError, match="triangular_solve"):
        decomp.triangular_solve.bind(T(np.eye(2)), T(np.ones((2, 1))), lower=1, trans=False, unit_diagonal=False)


# ---------------------------------------------------------------- derivatives

FNS = {
    "solve_a": (lambda a, b: la.solve(a, b), 0),
    "solve_b": (lambda a, b: la.solve(a, b), 1),
    "solve_vec": (lambda a, b: la.solve(a[0], b[0, :, 0]), 0),
    "inv": (lambda a, b: la.inv(a), 0),
    "det": (lambda a, b: la.det(a), 0),
    "slogdet": (lambda a, b: la.slogdet(a)[1], 0),
    "tri_lower": (lambda a, b: la.solve_triangular(a, b, lower=True), 0),
    "tri_upper_T_unit": (lambda a, b: la.solve_triangular(a, b, trans=1, unit_diagonal=True), 0),
    "tri_b": (lambda a, b: la.solve_triangular(a, b, trans=1, lower=True), 1),
    "lax_right": (lambda a, b: la.triangular_solve(a, ops.swapaxes(b, -1, -2), lower=True), 0),
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_derivatives_against_finite_differences(name):
    fn, argnum = FNS[name]
    check_derivatives(fn, wellcond(2, 3, 3), RNG.normal(size=(2, 3, 2)), argnum=argnum, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_derivatives(upper):
    """Only the lower triangle is read (NumPy's convention): the gradient's upper part is zero."""
    s = spd(2, 3, 3)
    check_derivatives(lambda a: la.cholesky(a, upper=upper), s, rtol=1e-6, atol=1e-8)
    g = gd.grad(lambda a: ops.sum(la.cholesky(a)))(T(s)).asnumpy()
    np.testing.assert_array_equal(np.triu(g, 1), 0)


def test_logdet_gradient_is_inverse_transpose_and_hessian():
    """grad log|det a| = a^-T; its jacfwd (second order) against central differences of it."""
    a = wellcond(3, 3)
    g = gd.grad(lambda x: la.slogdet(x)[1])(T(a)).asnumpy()
    np.testing.assert_allclose(g, np.linalg.inv(a).T, rtol=1e-12)
    h = gd.hessian(lambda x: la.slogdet(x)[1])(T(a)).asnumpy()
    eps, fd = 1e-6, np.zeros((3, 3, 3, 3))
    for i in np.ndindex(3, 3):
        p, m = a.copy(), a.copy()
        p[i] += eps
        m[i] -= eps
        fd[(...,) + i] = (np.linalg.inv(p).T - np.linalg.inv(m).T) / (2 * eps)
    np.testing.assert_allclose(h, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["solve_a", "inv", "det", "tri_lower"])
def test_jacrev_equals_jacfwd(name):
    fn, _ = FNS[name]
    a, b = wellcond(3, 3), RNG.normal(size=(3, 2))
    f = lambda x: fn(x[None], T(b[None]))  # noqa: E731
    np.testing.assert_allclose(gd.jacrev(f)(T(a)).asnumpy(), gd.jacfwd(f)(T(a)).asnumpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- vmap

@pytest.mark.parametrize("name", sorted(set(FNS) - {"solve_vec"}))  # (it indexes the batch)
def test_vmap_against_loop(name):
    fn, _ = FNS[name]
    check_vmap(fn, wellcond(4, 3, 3), RNG.normal(size=(4, 3, 2)))


def test_vmap_with_unbatched_operand_and_axis_1():
    a, b = wellcond(3, 3), RNG.normal(size=(5, 3, 2))
    check_vmap(lambda x, y: la.solve(x, y), a, b, in_axes=(None, 0))
    x = spd(4, 3, 3)
    got = gd.vmap(la.cholesky, in_axes=1)(T(np.moveaxis(x, 0, 1))).asnumpy()
    np.testing.assert_allclose(got, np.linalg.cholesky(x), rtol=1e-12)


# ---------------------------------------------------------------- compiled against interpreted

@pytest.mark.tvm
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_matches_interpreter(dtype):
    a, s, b = wellcond(2, 4, 4, dtype=dtype), spd(2, 4, 4, dtype=dtype), RNG.normal(size=(2, 4, 3)).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5

    def f(a, s, b):
        return (la.solve(a, b), la.inv(a), la.det(a), la.slogdet(a)[1], la.cholesky(s),
                la.solve_triangular(a, b, lower=True), la.solve_triangular(a, b, trans=1, unit_diagonal=True))
    both_backends(gd.jit(f), T(a), T(s), T(b), rtol=tol, atol=tol)


@pytest.mark.tvm
def test_compiled_derivatives_match_interpreter():
    a, s, b = wellcond(4, 4), spd(4, 4), RNG.normal(size=(4, 2))

    def loss(a, s, b):
        return ops.sum(la.solve(a, b) ** 2) + la.slogdet(a)[1] + ops.sum(la.cholesky(s)) \
            + ops.sum(la.solve_triangular(s, b, lower=True))
    both_backends(gd.jit(gd.grad(loss, (0, 1, 2))), T(a), T(s), T(b), rtol=1e-10, atol=1e-12)
    both_backends(gd.jit(gd.vmap(gd.grad(lambda x: la.det(x)))), T(wellcond(5, 3, 3)), rtol=1e-10, atol=1e-12)


# ================================================================ eigh, qr, svd, lstsq, pinv, norm

def sym_separated(*shape):
    """Symmetric matrices with eigenvalues at least 0.7 apart (eigenvectors well defined)."""
    n = shape[-1]
    q, _ = np.linalg.qr(RNG.normal(size=shape))
    d = np.cumsum(RNG.uniform(0.7, 1.5, shape[:-1]), -1) - n / 2
    return (q * d[..., None, :]) @ np.swapaxes(q, -1, -2)


def separated_sv(*shape):
    """Matrices whose singular values are >= 0.5 and at least 0.5 apart."""
    m, n = shape[-2:]
    k = min(m, n)
    u, _ = np.linalg.qr(RNG.normal(size=shape[:-2] + (m, k)))
    v, _ = np.linalg.qr(RNG.normal(size=shape[:-2] + (n, k)))
    s = 0.5 + np.cumsum(RNG.uniform(0.5, 1.0, shape[:-2] + (k,)), -1)
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def same_up_to_sign(got, want):
    """Columns equal up to one sign each (NumPy leaves the sign to LAPACK)."""
    got, want = np.asarray(got), np.asarray(want)
    s = np.sign(np.sum(got * want, axis=-2, keepdims=True))
    np.testing.assert_allclose(got, want * s, rtol=1e-10, atol=1e-12)


def test_eigh_values_vectors_and_sign_rule():
    s = sym_separated(2, 4, 4)
    w, v = la.eigh(T(s))
    W, V = np.linalg.eigh(s)
    close(w, W)
    same_up_to_sign(v.asnumpy(), V)
    vn = v.asnumpy()
    for b, j in np.ndindex(2, 4):  # the first component reaching 0.5 / sqrt(n) is positive
        col = vn[b, :, j]
        assert col[np.argmax(np.abs(col) >= 0.25)] > 0
    close(la.eigvalsh(T(s)), W)
    junk = s + np.triu(RNG.normal(size=s.shape), 1)  # the upper triangle is not read
    close(la.eigh(T(junk))[0], W)
    close(la.eigh(T(np.swapaxes(junk, -1, -2)), UPLO="U")[0], W)
    close(la.eigh(T(junk), symmetrize_input=True)[0], np.linalg.eigvalsh((junk + np.swapaxes(junk, -1, -2)) / 2))


def test_qr_modes_and_shapes():
    for shape in [(5, 3), (2, 4, 4), (3, 5)]:
        a = RNG.normal(size=shape)
        q, r = la.qr(T(a))
        Q, R = np.linalg.qr(a)
        close(q, Q)
        close(r, R)  # LAPACK's signs
        close(la.qr(T(a), mode="r"), R)
    q, r = la.qr(T(np.eye(3)), mode="complete")
    close(q @ r, np.eye(3))
    a = RNG.normal(size=(2, 5, 3))
    q, r = (x.asnumpy() for x in la.qr(T(a), mode="complete"))
    assert q.shape == (2, 5, 5) and r.shape == (2, 5, 3)
    np.testing.assert_allclose(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(5), q.shape), atol=1e-12)
    close(q @ r, a)
    close(r, np.linalg.qr(a, mode="complete")[1])


def test_svd_values_and_conventions():
    for shape in [(5, 3), (3, 5), (2, 4, 4)]:
        a = RNG.normal(size=shape)
        u, s, vh = la.svd(T(a), full_matrices=False)
        U, S, VH = np.linalg.svd(a, full_matrices=False)
        close(s, S)
        same_up_to_sign(u.asnumpy(), U)
        same_up_to_sign(np.swapaxes(vh.asnumpy(), -1, -2), np.swapaxes(VH, -1, -2))
        close(np.asarray(u.asnumpy() * s.asnumpy()[..., None, :]) @ vh.asnumpy(), a)
        close(la.svdvals(T(a)), S)
        close(la.svd(T(a), compute_uv=False), S)
    sq = RNG.normal(size=(3, 3))
    close(la.svd(T(sq))[1], np.linalg.svd(sq)[1])


@pytest.mark.tvm
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 1)])
def test_svd_full_matrices_completes_an_orthonormal_basis(shape):
    """full_matrices=True (NumPy's default) on a rectangular matrix: u and vh square and orthogonal,
    a reconstructed, compiled as interpreted (the completion itself is arbitrary: not compared)."""
    a = RNG.normal(size=shape)
    m, n = shape[-2:]
    k = min(m, n)
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            u, s, vh = (x.asnumpy() for x in gd.jit(la.svd)(T(a)))
        finally:
            gd.set_backend("numpy")
        assert u.shape == shape[:-2] + (m, m) and vh.shape == shape[:-2] + (n, n)
        np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, np.broadcast_to(np.eye(m), u.shape), atol=1e-12)
        np.testing.assert_allclose(vh @ np.swapaxes(vh, -1, -2), np.broadcast_to(np.eye(n), vh.shape), atol=1e-12)
        np.testing.assert_allclose((u[..., :k] * s[..., None, :]) @ vh[..., :k, :], a, atol=1e-12)
        close(s, np.linalg.svd(a, compute_uv=False))


def test_lstsq_and_pinv():
    a, b = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))
    x, res, rank, s = la.lstsq(T(a), T(b))
    X, RES, RANK, S = np.linalg.lstsq(a, b)
    close(x, X)
    close(res, RES)
    assert int(rank.asnumpy()) == RANK and rank.dtype.name == "int64"
    close(s, S)
    wide, bv = RNG.normal(size=(2, 4)), RNG.normal(size=2)  # minimum-norm solution, no residuals
    x, res, rank, _ = la.lstsq(T(wide), T(bv))
    close(x, np.linalg.lstsq(wide, bv)[0])
    assert res.shape == (0,) and int(rank.asnumpy()) == 2
    deficient = np.column_stack([a[:, 0], a[:, 0], a[:, 1]])  # rank 2: NumPy's gelsd answer
    x, _, rank, _ = la.lstsq(T(deficient), T(b))
    close(x, np.linalg.lstsq(deficient, b)[0])
    assert int(rank.asnumpy()) == 2
    close(la.pinv(T(a)), np.linalg.pinv(a))
    close(la.pinv(T(deficient)), np.linalg.pinv(deficient))


@pytest.mark.parametrize("ord_", [None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf])
def test_matrix_norms(ord_):
    m = RNG.normal(size=(3, 4))
    close(la.norm(T(m), ord_), np.linalg.norm(m, ord_))
    x = RNG.normal(size=(2, 3, 4))
    close(la.norm(T(x), ord_, axis=(2, 0)), np.linalg.norm(x, ord_, axis=(2, 0)))
    close(la.norm(T(x), ord_, axis=(1, 2), keepdims=True), np.linalg.norm(x, ord_, axis=(1, 2), keepdims=True))
    close(la.matrix_norm(T(x), ord=ord_ or "fro"), np.linalg.matrix_norm(x, ord=ord_ or "fro"))


@pytest.mark.parametrize("ord_", [None, 1, 2, np.inf, -np.inf, 0, 3, 0.5])
def test_vector_norms(ord_):
    v, x = RNG.normal(size=5), RNG.normal(size=(2, 3, 4))
    close(la.norm(T(v), ord_), np.linalg.norm(v, ord_))
    close(la.norm(T(x), ord_, axis=1), np.linalg.norm(x, ord_, axis=1))
    close(la.norm(T(x), ord_, axis=-1, keepdims=True), np.linalg.norm(x, ord_, axis=-1, keepdims=True))
    close(la.vector_norm(T(x), ord=2 if ord_ is None else ord_, axis=(0, 2)),
          np.linalg.vector_norm(x, ord=2 if ord_ is None else ord_, axis=(0, 2)))
    close(la.norm(T(x)), np.linalg.norm(x))


def test_vector_and_matrix_norm_options_are_keyword_only():
    """As NumPy 2's: `matrix_norm(a, 1)` was keepdims=1 (a Frobenius norm of shape (1, 1)) and
    `vector_norm(x, 2)` axis 2 (new-user review)."""
    a = np.arange(6.0).reshape(2, 3)
    for f in (la.matrix_norm, la.vector_norm):
        with pytest.raises(TypeError):
            f(T(a), 1)
        with pytest.raises(TypeError):
            getattr(np.linalg, f.__name__)(a, 1)  # NumPy refuses it too
    close(la.matrix_norm(T(a), ord=1), np.linalg.matrix_norm(a, ord=1))


@pytest.mark.parametrize("call,needles", [
    (lambda: la.qr(T(np.ones((3, 3), np.int32))), ["qr", "int32"]),
    (lambda: la.eigh(T(np.ones((2, 3)))), ["eigh", "(2, 3)"]),
    (lambda: la.svd(T(np.ones(3))), ["svd", "(3,)"]),
    (lambda: la.norm(T(np.ones((2, 2))), "bad"), ["norm", "bad"]),
    (lambda: la.norm(T(np.ones(3)), "fro"), ["norm", "fro"]),
    (lambda: la.lstsq(T(np.ones((3, 2))), T(np.ones(4))), ["lstsq", "m = 3"]),
])
def test_more_bad_operands(call, needles):
    with pytest.raises(GraphadError) as e:
        call()
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


@pytest.mark.tvm
def test_degenerate_inputs_do_not_crash_or_hang():
    """NaN into the Jacobi iterations ends after the sweep bound; zero and rank-deficient matrices
    give finite factors (u's column zero where s is 0), compiled as interpreted."""
    nanm = np.array([[1.0, np.nan], [np.nan, 2.0]])
    zero = np.zeros((3, 2))
    defic = np.array([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]])

    def f(a, z, d):
        return la.eigh(a) + la.svd(z, full_matrices=False) + la.svd(d, full_matrices=False) + la.qr(d)
    res = both_backends(f, T(nanm), T(zero), T(defic), rtol=1e-12, atol=1e-12)
    assert np.isnan(res[0]).all()
    np.testing.assert_array_equal(res[3], 0)  # singular values of 0
    np.testing.assert_array_equal(res[2], 0)  # u
    assert all(np.isfinite(r).all() for r in res[5:])


FNS2 = {
    "eigh": (lambda a: la.eigh(a), "sym", (3, 3)),
    "eigh_batch": (lambda a: la.eigh(a)[1], "sym", (2, 4, 4)),
    "eigvalsh_U": (lambda a: la.eigvalsh(a, "U"), "sym", (3, 3)),
    "qr_tall": (lambda a: la.qr(a), "gen", (4, 3)),
    "qr_square": (lambda a: la.qr(a), "gen", (2, 3, 3)),
    "qr_wide": (lambda a: la.qr(a), "gen", (2, 4)),
    "svd_tall": (lambda a: la.svd(a, full_matrices=False), "sv", (4, 3)),
    "svd_wide": (lambda a: la.svd(a, full_matrices=False), "sv", (2, 4)),
    "svd_square": (lambda a: la.svd(a), "sv", (3, 3)),
    "lstsq": (lambda a: la.lstsq(a, T(np.linspace(-1, 1, 5)))[0], "sv", (5, 3)),
    "lstsq_wide": (lambda a: la.lstsq(a, T(np.array([0.3, -1.2])))[0], "sv", (2, 4)),
    "pinv": (lambda a: la.pinv(a), "sv", (4, 3)),
    "norm_2": (lambda a: la.norm(a, 2), "sv", (3, 4)),
    "norm_nuc": (lambda a: la.norm(a, "nuc"), "sv", (3, 4)),
    "norm_fro_1_inf": (lambda a: (la.norm(a), la.norm(a, 1), la.norm(a, np.inf)), "gen", (3, 4)),
    "norm_vec": (lambda a: (la.norm(a, axis=1), la.norm(a, 3, axis=0), la.norm(a, 1, axis=-1)), "gen", (3, 4)),
}


def _draw(kind, shape):
    if kind == "sym":
        return sym_separated(*shape)
    if kind == "sv":
        return separated_sv(*shape)
    a = RNG.uniform(-1, 1, shape)
    k = min(shape[-2:])
    a[..., :k, :k] += 3.0 * np.eye(k)  # full rank, no tie in the max/abs norms
    return a


@pytest.mark.parametrize("name", sorted(FNS2))
def test_more_derivatives_against_finite_differences(name):
    fn, kind, shape = FNS2[name]
    check_derivatives(fn, _draw(kind, shape), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["eigh", "qr_tall", "qr_wide", "svd_tall", "svd_wide", "lstsq", "norm_2"])
def test_more_vmap_against_loop(name):
    fn, kind, shape = FNS2[name]
    check_vmap(fn, np.stack([_draw(kind, shape) for _ in range(3)]))


@pytest.mark.parametrize("name", ["eigh", "qr_tall", "svd_tall", "norm_nuc"])
def test_more_jacrev_equals_jacfwd(name):
    fn, kind, shape = FNS2[name]
    a = _draw(kind, shape)

    def f(x):
        out = fn(x)
        out = out if isinstance(out, tuple) else (out,)
        return ops.concat([ops.reshape(o, (-1,)) for o in out if o.dtype.is_float], 0)
    np.testing.assert_allclose(gd.jacrev(f)(T(a)).asnumpy(), gd.jacfwd(f)(T(a)).asnumpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.tvm
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_more_compiled_matches_interpreter(dtype):
    s, g = sym_separated(2, 4, 4).astype(dtype), RNG.normal(size=(2, 5, 3)).astype(dtype)
    tol = 1e-11 if dtype == "float64" else 2e-5

    def f(s, g):
        return (*la.eigh(s), *la.qr(g), *la.svd(g, full_matrices=False), la.norm(g, "nuc", axis=(1, 2)),
                la.lstsq(g[0], g[1])[0], la.pinv(g))
    both_backends(gd.jit(f), T(s), T(g), rtol=tol, atol=tol)


@pytest.mark.tvm
def test_more_compiled_derivatives_match_interpreter():
    s, g = sym_separated(4, 4), separated_sv(5, 3)

    def loss(s, g):
        w, v = la.eigh(s)
        q, r = la.qr(g)
        u, sv, vh = la.svd(g, full_matrices=False)
        return ops.sum(w * w) + ops.sum(v[:, 0] ** 3) + ops.sum(q * q * q) + ops.sum(r) + ops.sum(u ** 3) \
            + ops.sum(sv) + ops.sum(vh * vh * vh) + la.norm(g, 2)
    both_backends(gd.jit(gd.grad(loss, (0, 1))), T(s), T(g), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- the example and AOT artifacts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _newton_example():
    import importlib.util
    spec = importlib.util.spec_from_file_location("newton_solve", os.path.join(ROOT, "examples", "newton_solve.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("backend", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_newton_example_matches_numpy(backend):
    """examples/newton_solve.py: jacfwd + ops.linalg.solve under gd.jit (and vmap) give NumPy's
    Newton iterates (hand-written Jacobian, LAPACK solve), each a root of the system."""
    r = _newton_example().run(backend)
    np.testing.assert_allclose(r["step"], r["step_ref"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(r["one"], r["one_ref"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(r["many"], r["many_ref"], rtol=1e-13, atol=1e-14)
    mod = _newton_example()
    assert max(np.abs(mod.numpy_residual(x)).max() for x in r["many"]) < 1e-13  # every iterate is a root


AOT_CHILD = '''
import json, sys, numpy as np
import tvm
from tvm import relax
def _no_compile(*a, **k):
    raise AssertionError("gd.load compiled something")
tvm.compile = relax.build = _no_compile
import graphad as gd
f = gd.load(sys.argv[1])
data = np.load(sys.argv[2])
outs = f(gd.Tensor(data["a"]), gd.Tensor(data["s"]))
print(json.dumps({"max_err": max(float(np.abs(o.asnumpy() - data[f"r{i}"]).max()) for i, o in enumerate(outs))}))
'''


@pytest.mark.tvm
def test_aot_artifact_loads_in_fresh_process(tmp_path):
    """The TIR kernels are part of the compiled library: a saved artifact runs in a process that
    cannot compile (no callback to register), with the same results bit for bit."""
    a, s = wellcond(2, 4, 4), spd(2, 4, 4)

    def f(a, s):
        return (la.solve(a, s), la.slogdet(a)[1], la.cholesky(s), la.solve_triangular(a, s, lower=True),
                la.eigh(s)[1], la.qr(a)[0], la.svd(a)[2], gd.grad(lambda x: la.det(x[0]))(a))
    gd.set_backend("tvm")
    try:
        compiled = gd.jit(f).lower(T(a), T(s)).compile()
        ref = [o.asnumpy() for o in compiled(T(a), T(s))]
    finally:
        gd.set_backend("numpy")
    path = tmp_path / "linalg.gdx"
    compiled.save(str(path))
    data = tmp_path / "data.npz"
    np.savez(data, a=a, s=s, **{f"r{i}": r for i, r in enumerate(ref)})
    env = dict(os.environ, PYTHONPATH=ROOT)  # this checkout's graphad, from another directory
    out = subprocess.run([sys.executable, "-c", AOT_CHILD, str(path), str(data)], capture_output=True, text=True,
                         cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["max_err"] == 0.0


@pytest.mark.tvm
def test_compiled_batches_of_every_size():
    """Batches of 16 and 6 matrices (the scheduler vectorizes a batch loop whose extent a power of
    two divides; the kernels keep one lane, see linalg_tir._SCALAR_LANE) and a batch large enough
    for the CPU scheduler to run it in parallel."""
    for bsz in (16, 6, 4100):
        a, b = wellcond(bsz, 2, 2), RNG.normal(size=(bsz, 2, 4))
        s = spd(bsz, 2, 2)

        def f(a, b, s):
            return (la.solve(a, b), la.solve_triangular(a, b, lower=True), la.slogdet(a)[1], la.cholesky(s),
                    la.eigh(s)[0], la.svdvals(a), la.qr(a)[1])
        both_backends(gd.jit(f), T(a), T(b), T(s), rtol=1e-11, atol=1e-12)


@pytest.mark.tvm
def test_kernels_compile_for_cuda():
    """On CUDA dlight's fallback binds the batch to threads (one matrix per thread); compiling
    needs no GPU. tests/test_cuda.py runs them where there is one."""
    from graphad.ir.core import TensorType
    from graphad.prims.trace import trace_to_graph
    from graphad.runtime.executable import build_executable
    f = lambda a, b: (la.solve(a, b), la.slogdet(a)[1], la.cholesky(a), la.solve_triangular(a, b),  # noqa: E731
                      la.eigh(a)[1], la.qr(a)[0], la.svd(a)[1])
    g, _, _ = trace_to_graph(f, [TensorType((3, 4, 4), "float64"), TensorType((3, 4, 2), "float64")])
    exe = build_executable(g, "cuda")
    assert exe.report["pipeline"] == "cuda-default-dlight"


def test_float32_p_norm_compiles():
    """vector_norm(x, ord=3) in float32 is (|x| ** 3) summed, ** (1/3): two float32 pows in one
    kernel, whose let-bound bodies nested made TVM's code generator run for minutes (a reviewer's
    find; schedule.should_inline keeps such a producer a stage of its own now)."""
    x = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    gd.set_backend("tvm")
    try:
        for p in (3, 0.5, -1.5):
            got = gd.jit(lambda t: ops.linalg.vector_norm(t, ord=p, axis=-1))(gd.Tensor(x)).asnumpy()
            want = np.sum(np.abs(x.astype(np.float64)) ** p, axis=-1) ** (1 / p)
            np.testing.assert_allclose(got, want, rtol=2e-6)
    finally:
        gd.set_backend("numpy")


def test_decompositions_of_extreme_magnitudes():
    """eigh, qr and svd compiled on matrices of entries about 1e-170 and 1e160 (1e-23 and 1e10 in
    float32): the kernels' sums of squares underflowed or overflowed, and the results were the
    diagonal, the column norms or inf (a reviewer's find). Each matrix is scaled by a power of
    two now; the values match NumPy's up to the scale."""
    from backends import both_backends
    a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    sym = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 2.0]])
    for dtype, scales, tol in (("float64", (1e-170, 1e160, 1e-160), 1e-12), ("float32", (1e-23, 1e10, 1e19), 2e-6)):
        for k in scales:
            x, s = (a * k).astype(dtype), (sym * k).astype(dtype)
            got = both_backends(lambda u, v: (ops.linalg.svdvals(u), ops.linalg.eigvalsh(v), ops.linalg.qr(u)[1]),
                                gd.Tensor(x), gd.Tensor(s), rtol=tol, atol=0)
            np.testing.assert_allclose(got[0] / k, np.linalg.svd(a, compute_uv=False), rtol=tol)
            np.testing.assert_allclose(got[1] / k, np.linalg.eigvalsh(sym), rtol=tol)
            np.testing.assert_allclose(np.abs(got[2]) / k, np.abs(np.linalg.qr(a)[1]), rtol=tol, atol=tol)


def test_svd_gradient_with_an_exactly_zero_singular_value():
    """A tall matrix of rank 1: the compiled Jacobi kernel gives a singular value of exactly 0,
    and the vjp's 0 / 0 made the gradient NaN; JAX's guard (1 / s only where s != 0) now."""
    from backends import both_backends
    rk1 = np.outer([1.0, 2.0, 3.0], [1.0, -1.0])
    g = both_backends(gd.grad(lambda u: ops.sum(ops.linalg.svdvals(u) ** 2)), gd.Tensor(rk1))[0]
    np.testing.assert_allclose(g, 2 * rk1, rtol=1e-12)
    e = np.zeros((3, 2))
    e[0, 0] = 1.0
    g = both_backends(gd.grad(lambda u: ops.linalg.norm(u, 2)), gd.Tensor(e))[0]
    np.testing.assert_allclose(g, e, atol=1e-15)


def test_dot_and_inner_follow_numpy_for_more_axes():
    """ops.dot was matmul and ops.inner a row-wise product for N-D operands; NumPy's contract a's
    last axis with b's second to last (dot) or last (inner), the other axes a's then b's."""
    rng = np.random.default_rng(9)
    for sa, sb in (((2, 2), (2, 2)), ((2, 3, 4), (4,)), ((2, 3, 4), (5, 4)), ((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
                   ((), (3,))):
        x, y = rng.standard_normal(sa), rng.standard_normal(sb)
        for name in ("dot", "inner"):
            try:
                want = getattr(np, name)(x, y)
            except ValueError:
                continue
            got = getattr(ops, name)(gd.Tensor(x), gd.Tensor(y)).asnumpy()
            assert got.shape == np.shape(want), (name, sa, sb)
            np.testing.assert_allclose(got, want, rtol=1e-12)
