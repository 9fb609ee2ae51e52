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
