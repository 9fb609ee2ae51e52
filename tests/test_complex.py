"""complex64/complex128 (docs/complex.md): dtypes and promotion, the complex primitives, JAX's
derivative conventions against closed forms and central differences in complex128, reverse vs
forward mode, vmap vs a loop, the compiled backend (which runs complex graphs on the NumPy
interpreter) against the interpreter, and against JAX itself when it is installed.

The per-primitive rules (jvp against central differences, vjp against the jvp under the pairing
Re(sum(u * v)), second order, batching) run in the shared oracle tests on the complex cases of
tests/prim_cases.py.
"""
from __future__ import annotations

import cmath

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import DTypeError, GraphadError, TransformError
from graphad.ir.parser import parse_graph

RNG = np.random.default_rng(17)


def c128(z):
    return gd.Tensor(np.asarray(z, np.complex128))


def crand(*shape):
    return (RNG.uniform(-1.5, 1.5, shape) + 1j * RNG.uniform(-1.5, 1.5, shape)).astype(np.complex128)


def cfd(f, z: complex, eps=1e-6) -> complex:
    """JAX's gradient of a real function f of a complex z: df/dx - i df/dy, by central differences."""
    dx = (f(z + eps) - f(z - eps)) / (2 * eps)
    dy = (f(z + 1j * eps) - f(z - 1j * eps)) / (2 * eps)
    return dx - 1j * dy


# ---------------------------------------------------------------- dtypes, tensors, printing


def test_dtypes_and_promotion():
    P = gd.dtypes.promote_types
    assert gd.complex64.is_complex and gd.complex128.is_inexact and not gd.complex64.is_float
    assert P(gd.float32, gd.complex64) is gd.complex64
    assert P(gd.float64, gd.complex64) is gd.complex128
    assert P(gd.int64, gd.complex64) is gd.complex64
    assert P(gd.bfloat16, gd.complex64) is gd.complex64
    assert P(gd.complex64, gd.complex128) is gd.complex128
    assert gd.dtypes.as_dtype(np.complex64) is gd.complex64 and gd.dtypes.as_dtype("c128") is gd.complex128
    assert gd.dtypes.as_dtype(complex) is gd.complex64


def test_tensors_from_complex_data():
    assert gd.Tensor(1 + 2j).dtype is gd.complex64  # a Python complex, as JAX: complex64
    assert gd.Tensor([1j, 2]).dtype is gd.complex64
    assert gd.Tensor(np.array([1j])).dtype is gd.complex128
    assert gd.Tensor([1j], dtype=gd.complex128).dtype is gd.complex128
    with pytest.raises(DTypeError, match="imaginary parts"):
        gd.Tensor(np.array([1 + 1j]), dtype=gd.float32)
    x = gd.Tensor(np.ones(2, np.float32))
    assert (x * 1j).dtype is gd.complex64 and (gd.Tensor(np.ones(2)) * 1j).dtype is gd.complex128
    assert (gd.Tensor(np.ones(2, np.int32)) * 1j).dtype is gd.complex64
    assert complex(gd.Tensor(np.complex128(1 - 2j))) == 1 - 2j


def test_printing():
    t = gd.Tensor(np.array([1 + 2j, complex(0.0, -0.5)], np.complex64))
    assert repr(t) == ("Tensor(shape=[2], dtype=Complex64, value= [ 1.00000000e+00+2.00000000e+00j "
                       " 0.00000000e+00-5.00000000e-01j])")
    assert str(t) == str(np.array([1 + 2j, complex(0.0, -0.5)], np.complex64))


def test_ir_text_round_trips_complex_constants():
    value = np.array([1.5 - 2j, complex(-0.0, np.inf), complex(np.nan, -0.0)], np.complex64)
    g = gd.make_graph(lambda x: x * ops.constant(value))(gd.Tensor(np.ones(3, np.complex64)))
    text = str(g)
    assert "array<c64[3]>[[1.5, -2.0], [-0.0, inf], [nan, -0.0]]" in text
    g2 = parse_graph(text)
    assert str(g2) == text
    (c,) = [n for n in g2.nodes if n.prim.name == "constant"]
    got = np.asarray(c.attrs["value"])
    assert got.dtype == np.complex64 and np.array_equal(got.view(np.uint32), value.view(np.uint32))


# ---------------------------------------------------------------- ops


def test_parts_conj_angle_and_complex():
    z = crand(5)
    t = gd.Tensor(z)
    np.testing.assert_array_equal(ops.real(t).numpy(), z.real)
    np.testing.assert_array_equal(t.imag.numpy(), z.imag)
    np.testing.assert_array_equal(ops.conj(t).numpy(), np.conj(z))
    np.testing.assert_allclose(ops.angle(t).numpy(), np.arctan2(z.imag, z.real), rtol=1e-15)
    np.testing.assert_allclose(ops.angle(t, deg=True).numpy(), np.angle(z, deg=True), rtol=1e-14)
    x = np.array([-1.0, -0.0, 0.0, 2.0])
    np.testing.assert_array_equal(ops.angle(gd.Tensor(x)).numpy(), np.angle(x))  # pi, pi, 0, 0
    np.testing.assert_array_equal(ops.imag(gd.Tensor(x)).numpy(), np.zeros(4))
    # complex() stores each part as given: inf, NaN and -0.0 survive (1j * inf would be nan + inf j)
    re = np.array([np.inf, -0.0, np.nan, 1.0])
    im = np.array([np.inf, -0.0, 2.0, -np.inf])
    w = ops.complex(gd.Tensor(re), gd.Tensor(im)).numpy()
    assert w.dtype == np.complex128
    np.testing.assert_array_equal(w.real.view(np.uint64), re.view(np.uint64))
    np.testing.assert_array_equal(w.imag.view(np.uint64), im.view(np.uint64))
    assert ops.complex(gd.Tensor(np.ones(2, np.float32)), 0.5).dtype is gd.complex64
    assert ops.complex(gd.Tensor(np.ones(2, np.int32)), 1).dtype is gd.complex64


def test_arithmetic_matches_numpy():
    a, b = crand(3, 4), crand(4)
    A, B = gd.Tensor(a), gd.Tensor(b)
    for got, want in [(A + B, a + b), (A - B, a - b), (A * B, a * b), (A / B, a / b), (-A, -a),
                      (ops.square(A), a * a), (ops.exp(A), np.exp(a)), (ops.log(A), np.log(a)),
                      (ops.sqrt(A), np.sqrt(a)), (ops.sin(A), np.sin(a)), (ops.cos(A), np.cos(a)),
                      (ops.tanh(A), np.tanh(a)), (ops.abs(A), np.abs(a)), (A ** B, a ** b), (A ** 2, a ** 2),
                      (ops.sum(A, 0), a.sum(0)), (ops.mean(A), a.mean()), (A @ crand(4, 2), None)]:
        if want is not None:
            assert got.dtype.name == want.dtype.name
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-13)
    m, v = crand(3, 3) + 4 * np.eye(3), crand(3)
    np.testing.assert_allclose(ops.matmul(gd.Tensor(m), gd.Tensor(v)).numpy(), m @ v, rtol=1e-13)
    np.testing.assert_allclose(ops.einsum("ij,j->i", gd.Tensor(m), gd.Tensor(v)).numpy(), m @ v, rtol=1e-13)
    np.testing.assert_allclose(ops.linalg.solve(gd.Tensor(m), gd.Tensor(v)).numpy(), np.linalg.solve(m, v),
                               rtol=1e-12)
    np.testing.assert_allclose(ops.linalg.inv(gd.Tensor(m)).numpy(), np.linalg.inv(m), rtol=1e-12)


def test_complex_det():
    a = crand(2, 3, 3) + 3 * np.eye(3)
    A = gd.Tensor(a)
    np.testing.assert_allclose(ops.linalg.det(A).numpy(), np.linalg.det(a), rtol=1e-13)
    # d det = det tr(a^-1 da): the holomorphic derivative is det a^-T (Jacobi's formula)
    want = np.linalg.det(a)[:, None, None] * np.swapaxes(np.linalg.inv(a), -1, -2)
    got = gd.vmap(gd.grad(ops.linalg.det, holomorphic=True))(A).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(gd.jacfwd(ops.linalg.det, holomorphic=True)(A).numpy(),
                               gd.jacrev(ops.linalg.det, holomorphic=True)(A).numpy(), rtol=1e-12)
    # a real function of it, against central differences of each real coordinate
    def f(m):
        return float(np.abs(np.linalg.det(m)).sum())
    g = gd.grad(lambda m: ops.sum(ops.abs(ops.linalg.det(m))))(A).numpy()
    k = (1, 2, 0)
    e = np.zeros_like(a)
    e[k] = 1e-6
    fd = (f(a + e) - f(a - e)) / 2e-6 - 1j * (f(a + 1j * e) - f(a - 1j * e)) / 2e-6
    assert g[k] == pytest.approx(fd, rel=1e-7)
    assert ops.linalg.det(gd.Tensor(np.zeros((0, 0), np.complex64))).numpy() == 1


def test_real_only_ops_refuse_complex():
    z = gd.Tensor(crand(3))
    for fn in (ops.maximum, ops.minimum, ops.less, ops.fmod, ops.arctan2):
        with pytest.raises(DTypeError, match="complex"):
            fn(z, z)
    for fn in (ops.relu, ops.floor, ops.max, ops.round, ops.erf,
               ops.cbrt, ops.lgamma, lambda z: ops.clip(z, 0.0, 1.0)):
        with pytest.raises(GraphadError):
            fn(z)
    with pytest.raises(DTypeError, match="parts must be real"):
        ops.complex(z, z)


def _mp_sign(z: complex) -> complex:
    """z / |z| in 60-digit arithmetic (mpmath: an oracle independent of graphad's kernels)."""
    import mpmath
    with mpmath.workdps(60):
        w = mpmath.mpc(z.real, z.imag)
        return complex(w / abs(w)) if w != 0 else 0j


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_sign(dtype):
    """sign(z) = z / |z| (0 at 0), eagerly and compiled (bit for bit alike), against mpmath
    within 2 ulp over magnitudes from subnormal to near overflow, the special values as the
    docs state them, and a zero derivative (JAX's lax.sign)."""
    import itertools
    rng = np.random.default_rng(11)
    tiny, huge = (1e-320, 1e307) if dtype == np.complex128 else (1e-44, 1e37)
    mags = np.exp(rng.uniform(np.log(tiny), np.log(huge), (2, 300)))
    signs = rng.choice([-1.0, 1.0], (2, 300))
    with np.errstate(over="ignore"):  # (parts beyond the dtype's range are dropped below)
        z = (signs[0] * mags[0] + 1j * signs[1] * mags[1] * rng.choice([1.0, 1e-30, 1e30], 300)).astype(dtype)
        z = np.concatenate([z, np.array([3 + 4j, 1.5e308 + 1.5e308j, 1e-320 + 1e-320j, 2, -2j, 0.5 - 0.5j],
                                        np.complex128).astype(dtype)])
    z = z[np.isfinite(z) & (z != 0)]
    eager = ops.sign(gd.Tensor(z)).numpy()
    gd.set_backend("tvm")
    try:
        compiled = gd.jit(ops.sign)(gd.Tensor(z)).numpy()
    finally:
        gd.set_backend("numpy")
    assert eager.dtype == compiled.dtype == dtype
    np.testing.assert_array_equal(_parts_view(eager), _parts_view(compiled))
    want = np.array([_mp_sign(complex(v)) for v in z.astype(np.complex128)])
    eps = np.finfo(np.float64 if dtype == np.complex128 else np.float32).eps
    np.testing.assert_allclose(_parts_view(eager.astype(np.complex128)), _parts_view(want), rtol=0, atol=2 * eps)
    np.testing.assert_allclose(np.abs(eager.astype(np.complex128)), 1.0, rtol=0, atol=3 * eps)
    # special values: zeros, infinities, NaN parts
    inf, nan = np.inf, np.nan
    parts = [0.0, -0.0, -1.5, inf, -inf, nan]
    s = np.array([complex(a, b) for a, b in itertools.product(parts, parts)], dtype)
    got = {}
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            got[backend] = gd.jit(ops.sign)(gd.Tensor(s)).numpy()
        finally:
            gd.set_backend("numpy")
    g = _parts_view(got["numpy"])
    np.testing.assert_array_equal(g, _parts_view(got["tvm"]))
    r = 1 / np.sqrt(2)
    for v, out in zip(s, got["numpy"]):
        a, b = v.real, v.imag
        if np.isnan(a) or np.isnan(b):
            assert np.isnan(out.real) and np.isnan(out.imag), (v, out)
        elif a == 0 and b == 0:
            assert out == 0 and not np.signbit(out.real) and not np.signbit(out.imag), (v, out)
        elif np.isinf(a) and np.isinf(b):
            assert np.allclose([out.real, out.imag], [np.sign(a) * r, np.sign(b) * r], atol=1e-7), (v, out)
        elif np.isinf(a):
            assert out.real == np.sign(a) and out.imag == 0 and np.signbit(out.imag) == np.signbit(b), (v, out)
        elif np.isinf(b):
            assert out.imag == np.sign(b) and out.real == 0 and np.signbit(out.real) == np.signbit(a), (v, out)
        else:  # parts 0, -0.0 and -1.5
            want = complex(a, b) / abs(complex(a, b))
            assert abs(out - want) < 1e-7 and np.signbit(out.real) == np.signbit(a), (v, out)
    # a zero derivative, in both modes and through vmap
    w = gd.Tensor(z[:5])
    for part in (ops.real, ops.imag):
        assert not np.any(gd.grad(lambda t: ops.sum(part(ops.sign(t))))(w).numpy())
    assert not np.any(gd.jvp(ops.sign, (w,), (gd.Tensor(np.ones(5, dtype)),))[1].numpy())
    np.testing.assert_array_equal(gd.vmap(ops.sign)(gd.Tensor(z[:6].reshape(3, 2))).numpy(), eager[:6].reshape(3, 2))


# the functions that take complex operands since issue 17's second part; each is NumPy's
# principal branch (the kernel is NumPy's, complex64 evaluated in complex128), sigmoid excepted
MORE_FNS = ("tan", "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "log2", "log10",
            "exp2", "expm1", "log1p")


def _parts_view(a):
    return a.view(a.real.dtype).reshape(a.shape + (2,))


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_more_functions_match_numpy_at_special_points(dtype):
    """Every combination of parts 0, -0.0, finite, +-inf, NaN and a large one: NaN where NumPy has
    NaN, infinities and zero signs as NumPy's (complex128 bit for bit; complex64 within its
    rounding: graphad rounds the complex128 value once)."""
    import itertools
    parts = [0.0, -0.0, 0.5, -1.5, 3.0, 800.0, np.inf, -np.inf, np.nan]
    z = np.array([complex(a, b) for a, b in itertools.product(parts, parts)] + list(crand(20))).astype(dtype)
    for name in MORE_FNS:
        with np.errstate(all="ignore"):
            got, want = getattr(ops, name)(gd.Tensor(z)).numpy(), getattr(np, name)(z)
        assert got.dtype == want.dtype, name
        g, w = _parts_view(got), _parts_view(want)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w), err_msg=name)
        num = ~np.isnan(w)
        np.testing.assert_array_equal(np.signbit(g[num]), np.signbit(w[num]), err_msg=name)
        fin = np.isfinite(w)
        if dtype == np.complex128:
            np.testing.assert_array_equal(g[fin], w[fin], err_msg=name)
        else:  # the finite values against NumPy's complex128 ones: NumPy's own complex64 kernels
            # are less accurate (its exp2(800j) computes 800 log 2 in float32: 6e-4 off)
            with np.errstate(all="ignore"):
                wide = _parts_view(getattr(np, name)(z.astype(np.complex128)))
            np.testing.assert_allclose(g[fin], wide[fin], rtol=2e-7, atol=1e-37, err_msg=name)


def test_complex_sigmoid():
    """sigmoid(z) = 1 / (1 + e^-z), as e^z / (1 + e^z) where Re z < 0: no inf / inf in either tail."""
    z = crand(30) * 3
    np.testing.assert_allclose(ops.sigmoid(gd.Tensor(z)).numpy(), 1 / (1 + np.exp(-z)), rtol=1e-14)
    got = ops.sigmoid(gd.Tensor(np.array([complex(np.inf, 0.0), complex(-np.inf, 0.0), -800 + 1j, 800 + 1j,
                                          -40 + 0.5j, complex(np.nan, 1.0)]))).numpy()
    assert got[0] == 1 and got[1] == 0 and got[2] == 0 and got[3] == 1
    assert got[4] == pytest.approx(cmath.exp(-40 + 0.5j), rel=1e-14)  # e^z, where 1 - 1/(1 + e^-z) cancels
    assert np.isnan(got[5].real)
    assert ops.sigmoid(gd.Tensor(np.complex64(0.3 - 2j))).dtype is gd.complex64


def _holo_fd(f, z, h=1e-6):
    """f'(z) of a holomorphic f by central differences along the real axis."""
    return (f(z + h) - f(z - h)) / (2 * h)


def test_more_functions_derivatives():
    """The holomorphic derivative (grad, jacrev, jacfwd with holomorphic=True) against central
    differences of NumPy's function, off the branch cuts on both sides of the imaginary axis
    (arccosh's derivative is 1 / (sqrt(z - 1) sqrt(z + 1)): 1 / sqrt(z^2 - 1) has the wrong sign
    where Re z < 0), and the gradient of a real function of them against df/dx - i df/dy."""
    fns = {n: getattr(np, n) for n in MORE_FNS}
    fns["sigmoid"] = lambda z: 1 / (1 + np.exp(-z))
    for name, npf in fns.items():
        for z0 in (0.6 + 0.7j, -1.3 + 0.5j, -0.4 - 1.2j):
            want = _holo_fd(npf, z0)
            for tr in (gd.grad, gd.jacrev, gd.jacfwd):
                got = complex(tr(getattr(ops, name), holomorphic=True)(c128(z0)))
                assert got == pytest.approx(want, rel=1e-8, abs=1e-9), (name, z0, tr.__name__)
            got = complex(gd.grad(lambda z: ops.abs(getattr(ops, name)(z) * z))(c128(z0)))
            assert got == pytest.approx(cfd(lambda z: abs(npf(z) * z), z0), rel=1e-7, abs=1e-8), (name, z0)


def test_complex_prod():
    z = crand(3, 4)
    z[1, 2] = 0
    Z = gd.Tensor(z)
    np.testing.assert_allclose(ops.prod(Z, 1).numpy(), np.prod(z, 1), rtol=1e-14)
    np.testing.assert_allclose(ops.prod(Z).numpy(), np.prod(z), rtol=1e-13)
    assert ops.prod(gd.Tensor(z.astype(np.complex64)), 0).dtype is gd.complex64
    # d prod / dz_i = the product of the others, exact at a zero element (no division)
    g = gd.grad(ops.prod, holomorphic=True)(gd.Tensor(z[1])).numpy()
    want = [np.prod(np.delete(z[1], i)) for i in range(4)]
    np.testing.assert_allclose(g, want, rtol=1e-14)
    assert g[2] != 0 and np.all(g[[0, 1, 3]] == 0)
    row = z[0]
    g = gd.grad(lambda v: ops.abs(ops.prod(v)))(gd.Tensor(row)).numpy()
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1

        def f(w, e=e):
            return abs(np.prod(row + w * e))
        assert g[i] == pytest.approx(cfd(f, 0j), rel=1e-7)
    np.testing.assert_allclose(gd.vmap(ops.prod)(Z).numpy(), np.prod(z, 1), rtol=1e-14)


def test_complex_slogdet():
    a = crand(2, 3, 3) + 2 * np.eye(3)
    for dtype in (np.complex128, np.complex64):
        sign, lad = ops.linalg.slogdet(gd.Tensor(a.astype(dtype)))
        ws, wl = np.linalg.slogdet(a.astype(dtype))
        assert sign.dtype.name == np.dtype(dtype).name and lad.dtype.name == ws.real.dtype.name
        tol = 1e-13 if dtype == np.complex128 else 2e-6
        np.testing.assert_allclose(sign.numpy(), ws, rtol=tol)
        np.testing.assert_allclose(lad.numpy(), wl, rtol=tol)
    s0, l0 = ops.linalg.slogdet(gd.Tensor(np.array([[1, 2j], [1, 2j]])))
    assert complex(s0.numpy()) == 0 and float(l0.numpy()) == -np.inf  # singular: NumPy's (0, -inf)
    # real functions of the sign and of log|det|, against df/dx - i df/dy per entry
    A = gd.Tensor(a[0])
    k = (2, 1)
    e = np.zeros((3, 3))
    e[k] = 1
    for f, npf in [(lambda m: ops.linalg.slogdet(m)[1], lambda m: np.linalg.slogdet(m)[1]),
                   (lambda m: ops.imag(ops.linalg.slogdet(m)[0]), lambda m: np.linalg.slogdet(m)[0].imag),
                   (lambda m: ops.real(ops.linalg.slogdet(m)[0] * ops.exp(ops.astype(ops.linalg.slogdet(m)[1],
                                                                                     gd.complex128))),
                    lambda m: np.linalg.det(m).real)]:
        g = gd.grad(f)(A).numpy()
        assert g[k] == pytest.approx(cfd(lambda w: npf(a[0] + w * e), 0j), rel=1e-7)
    # sign * exp(log|det|) is det, holomorphic: its derivative is det a^-T (Jacobi), as the det primitive's
    d = gd.grad(lambda m: ops.linalg.slogdet(m)[0] * ops.exp(ops.astype(ops.linalg.slogdet(m)[1], gd.complex128)),
                holomorphic=True)(A).numpy()
    np.testing.assert_allclose(d, np.linalg.det(a[0]) * np.linalg.inv(a[0]).T, rtol=1e-12)
    vs, vl = gd.vmap(ops.linalg.slogdet)(gd.Tensor(a))
    np.testing.assert_allclose(vs.numpy(), np.linalg.slogdet(a)[0], rtol=1e-13)


def test_complex_norms():
    x = crand(3, 4)
    X = gd.Tensor(x)
    for o in (None, 1, -1, np.inf, -np.inf, "fro"):
        got = ops.linalg.norm(X, o)
        assert got.dtype is gd.float64
        assert float(got.numpy()) == pytest.approx(np.linalg.norm(x, o), rel=1e-14)
    for o in (None, 0, 1, 2, 3.5, -1, np.inf, -np.inf):
        got = ops.linalg.norm(X, o, axis=1)
        assert got.dtype is gd.float64, o  # real, as NumPy's (ord 0: a count of the nonzero entries)
        np.testing.assert_allclose(got.numpy(), np.linalg.norm(x, o, axis=1), rtol=1e-14)
    assert ops.linalg.vector_norm(gd.Tensor(x.astype(np.complex64)), ord=0).dtype is gd.float32
    np.testing.assert_allclose(ops.linalg.vector_norm(X, axis=(0, 1)).numpy(), np.linalg.vector_norm(x), rtol=1e-14)
    np.testing.assert_allclose(ops.linalg.matrix_norm(gd.Tensor(crand(2, 3, 3))).numpy().shape, (2,))
    assert ops.linalg.norm(gd.Tensor(x.astype(np.complex64))).dtype is gd.float32
    # grad of the 2-norm: conj(z) / |z| in JAX's convention (df/dx - i df/dy); the 1-norm: conj(z) / |z| each
    v = x[0]
    np.testing.assert_allclose(gd.grad(ops.linalg.norm)(gd.Tensor(v)).numpy(), np.conj(v) / np.linalg.norm(v),
                               rtol=1e-14)
    np.testing.assert_allclose(gd.grad(lambda z: ops.linalg.norm(z, 1))(gd.Tensor(v)).numpy(), np.conj(v) / np.abs(v),
                               rtol=1e-14)
    g = gd.grad(lambda m: ops.linalg.norm(m, np.inf))(X).numpy()
    k = (int(np.argmax(np.abs(x).sum(1))), 2)
    e = np.zeros((3, 4))
    e[k] = 1
    assert g[k] == pytest.approx(cfd(lambda w: np.linalg.norm(x + w * e, np.inf), 0j), rel=1e-7)


def _seeded_crand(seed):
    """crand from its own generator: these tests' matrices do not depend on the order tests run in."""
    rng = np.random.default_rng(seed)
    return lambda *shape: (rng.uniform(-1.5, 1.5, shape) + 1j * rng.uniform(-1.5, 1.5, shape)).astype(np.complex128)


def _hpd(crand, *shape):
    m = crand(*shape)
    return m @ np.conj(np.swapaxes(m, -1, -2)) + shape[-1] * np.eye(shape[-1])


def _entry_fd(f_np, a, k, eps=1e-6):
    """df/dx - i df/dy of a real function of the complex matrix a along its entry k."""
    e = np.zeros(a.shape)
    e[k] = 1
    return cfd(lambda w: f_np(a + w * e), 0j, eps)


def test_complex_cholesky():
    crand = _seeded_crand(1)
    h = _hpd(crand, 2, 4, 4)
    # the strict upper triangle and the diagonal's imaginary part are not read (LAPACK's zpotrf)
    junk = h + np.triu(crand(2, 4, 4), 1) + 1j * crand(2, 4).real[..., None] * np.eye(4)
    for dtype, tol in ((np.complex128, 1e-13), (np.complex64, 2e-6)):
        low = ops.linalg.cholesky(gd.Tensor(junk.astype(dtype)))
        assert low.dtype.name == np.dtype(dtype).name
        x = low.numpy().astype(np.complex128)
        np.testing.assert_allclose(x @ np.conj(np.swapaxes(x, -1, -2)), h, rtol=tol, atol=tol * 8)  # l l^H = a
        assert np.all(np.triu(x, 1) == 0) and np.all(x.diagonal(0, -2, -1).imag == 0)
        assert np.all(x.diagonal(0, -2, -1).real > 0)
    np.testing.assert_allclose(low.numpy(), np.linalg.cholesky(h.astype(np.complex64)), rtol=2e-6, atol=2e-6)
    up = ops.linalg.cholesky(gd.Tensor(h), upper=True).numpy()  # l^H (NumPy 2's upper=True)
    np.testing.assert_allclose(up, np.linalg.cholesky(h, upper=True), rtol=1e-13, atol=1e-15)
    bad = ops.linalg.cholesky(gd.Tensor(np.stack([h[0], -h[1]]))).numpy()  # not positive definite: NaNs there
    assert np.isnan(bad[1]).all() and np.isfinite(bad[0]).all()
    # real functions of l, against df/dx - i df/dy per entry (the upper triangle: zero)
    w = crand(4, 4)
    A = gd.Tensor(junk[0])
    for f, npf in [(lambda m: ops.sum(ops.abs(ops.linalg.cholesky(m) * gd.Tensor(w)) ** 2),
                    lambda m: np.sum(np.abs(np.linalg.cholesky(m) * w) ** 2)),
                   (lambda m: ops.imag(ops.sum(ops.linalg.cholesky(m, upper=True) @ gd.Tensor(w))),
                    lambda m: np.sum(np.conj(np.linalg.cholesky(m)).T @ w).imag)]:  # l^H; still the lower triangle read
        g = gd.grad(f)(A).numpy()
        for k in [(0, 0), (2, 1), (3, 0), (3, 3), (1, 2)]:
            assert g[k] == pytest.approx(_entry_fd(npf, junk[0], k), rel=1e-6, abs=1e-8), k
        np.testing.assert_allclose(gd.vmap(gd.grad(f))(gd.Tensor(junk)).numpy()[0], g, rtol=1e-13, atol=1e-14)
    # reverse mode against forward mode along a complex tangent (the pairing Re(sum(u v)))
    t, u = crand(4, 4), crand(4, 4)
    _, jv = gd.jvp(ops.linalg.cholesky, A, gd.Tensor(t))
    _, vf = gd.vjp(ops.linalg.cholesky, A)
    assert np.sum(u * jv.numpy()).real == pytest.approx(np.sum(vf(gd.Tensor(u))[0].numpy() * t).real, rel=1e-12)


def test_complex_triangular_solves():
    crand = _seeded_crand(2)
    a = crand(2, 4, 4) + 4 * np.eye(4)
    b = crand(2, 4, 3)
    A, B = gd.Tensor(a), gd.Tensor(b)
    for lower in (True, False):
        t = np.tril(a) if lower else np.triu(a)
        for unit in (False, True):
            tt = t - t * np.eye(4) + np.eye(4) if unit else t
            ops_ = {0: tt, "N": tt, 1: np.swapaxes(tt, -1, -2), "T": np.swapaxes(tt, -1, -2),
                    2: np.conj(np.swapaxes(tt, -1, -2)), "C": np.conj(np.swapaxes(tt, -1, -2))}
            for trans, op in ops_.items():
                x = ops.linalg.solve_triangular(A, B, trans=trans, lower=lower, unit_diagonal=unit).numpy()
                np.testing.assert_allclose(op @ x, b, rtol=1e-13, atol=1e-13, err_msg=str((trans, lower, unit)))
            # JAX's lax.linalg.triangular_solve: x @ op(a) = b (left_side=False), op(a) a, a^T, conj(a), a^H
            for tr in (False, True):
                for cj in (False, True):
                    op = np.swapaxes(tt, -1, -2) if tr else tt
                    op = np.conj(op) if cj else op
                    x = ops.linalg.triangular_solve(A, gd.Tensor(np.swapaxes(b, -1, -2)), lower=lower, transpose_a=tr,
                                                    conjugate_a=cj, unit_diagonal=unit).numpy()
                    np.testing.assert_allclose(x @ op, np.swapaxes(b, -1, -2), rtol=1e-13, atol=1e-13)
                    x = ops.linalg.triangular_solve(A, B, left_side=True, lower=lower, transpose_a=tr, conjugate_a=cj,
                                                    unit_diagonal=unit).numpy()
                    np.testing.assert_allclose(op @ x, b, rtol=1e-13, atol=1e-13)
    # a real a with a complex b, and complex64
    x = ops.linalg.solve_triangular(gd.Tensor(a[0].real), gd.Tensor(b[0]), lower=True).numpy()
    np.testing.assert_allclose(np.tril(a[0].real) @ x, b[0], rtol=1e-13, atol=1e-13)
    x = ops.linalg.solve_triangular(gd.Tensor(a.astype(np.complex64)), gd.Tensor(b.astype(np.complex64)), trans="C")
    assert x.dtype is gd.complex64
    np.testing.assert_allclose(np.conj(np.swapaxes(np.triu(a), -1, -2)) @ x.numpy(), b, rtol=2e-5, atol=2e-5)
    # gradients of a real function in a and b (trans='C', through conj), per entry
    w = crand(4, 3)

    def npf(m, r):
        return np.sum(np.abs(np.linalg.solve(np.conj(np.tril(m)).T, r) * w) ** 2)

    def f(m, r):
        return ops.sum(ops.abs(ops.linalg.solve_triangular(m, r, trans="C", lower=True) * gd.Tensor(w)) ** 2)
    ga, gb = gd.grad(f, argnums=(0, 1))(gd.Tensor(a[0]), gd.Tensor(b[0]))
    for k in [(0, 0), (2, 1), (3, 3), (1, 2)]:
        assert ga.numpy()[k] == pytest.approx(_entry_fd(lambda m: npf(m, b[0]), a[0], k), rel=1e-6, abs=1e-9), k
    for k in [(0, 0), (3, 2)]:
        assert gb.numpy()[k] == pytest.approx(_entry_fd(lambda r: npf(a[0], r), b[0], k), rel=1e-6), k


def test_complex_qr():
    crand = _seeded_crand(3)
    from graphad.prims.decomp import householder_qr
    for shape in [(4, 3), (3, 3), (2, 3, 2), (3, 5)]:
        a = crand(*shape)
        for dtype, tol in ((np.complex128, 1e-13), (np.complex64, 3e-6)):
            q, r = (t.numpy().astype(np.complex128) for t in ops.linalg.qr(gd.Tensor(a.astype(dtype))))
            k = min(shape[-2:])
            np.testing.assert_allclose(q @ r, a, rtol=tol, atol=tol * 4)                         # q r = a
            np.testing.assert_allclose(np.conj(np.swapaxes(q, -1, -2)) @ q, np.broadcast_to(np.eye(k), q.shape[:-2] + (k, k)),
                                       atol=tol * 4)                                              # q^H q = I
            assert np.all(np.tril(r, -1) == 0) and np.all(r.diagonal(0, -2, -1).imag == 0)     # upper, real diagonal
            nq, nr = np.linalg.qr(a.astype(dtype))                                               # LAPACK's signs
            np.testing.assert_allclose(q, nq, rtol=tol, atol=tol * 4)
            np.testing.assert_allclose(r, nr, rtol=tol, atol=tol * 4)
        np.testing.assert_allclose(ops.linalg.qr(gd.Tensor(a), mode="r").numpy(), np.linalg.qr(a, mode="r"), atol=1e-13)
        if shape[-2] >= shape[-1]:  # the fallback kernel for non-finite inputs: zgeqr2's algorithm
            np.testing.assert_allclose(householder_qr(a), np.concatenate(np.linalg.qr(a), -2), atol=1e-13)
    assert np.isnan(ops.linalg.qr(gd.Tensor(np.array([[np.nan, 1j], [1, 2]])))[1].numpy()).any()
    tall = crand(2, 4, 2)
    qc, rc = (t.numpy() for t in ops.linalg.qr(gd.Tensor(tall), mode="complete"))  # q completed by eigh of I - q q^H
    np.testing.assert_allclose(np.conj(np.swapaxes(qc, -1, -2)) @ qc, np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-14)
    np.testing.assert_allclose(qc @ rc, tall, atol=1e-14)
    np.testing.assert_allclose(qc[..., :2], np.linalg.qr(tall)[0], atol=1e-14)
    assert rc.shape == (2, 4, 2) and np.all(rc[..., 2:, :] == 0)
    np.testing.assert_allclose(ops.linalg.qr(gd.Tensor(crand(2, 2) + 2 * np.eye(2)), mode="complete")[0].numpy().shape, (2, 2))
    # real functions of q and r (LAPACK's gauge, a function of a), against df/dx - i df/dy per entry
    a, w, w2 = crand(4, 3), crand(4, 3), crand(3, 3)
    A = gd.Tensor(a)

    def npf(x):
        q, r = np.linalg.qr(x)
        return np.sum(np.abs(q * w) ** 2) + np.imag(np.sum(r * w2)) + np.real(np.sum(q * w))

    def f(x):
        q, r = ops.linalg.qr(x)
        return ops.sum(ops.abs(q * gd.Tensor(w)) ** 2) + ops.imag(ops.sum(r * gd.Tensor(w2))) + ops.real(ops.sum(q * gd.Tensor(w)))
    g = gd.grad(f)(A).numpy()
    for k in [(0, 0), (1, 2), (3, 1), (2, 2)]:
        assert g[k] == pytest.approx(_entry_fd(npf, a, k), rel=1e-6, abs=1e-8), k
    np.testing.assert_allclose(gd.vmap(gd.grad(f))(gd.Tensor(np.stack([a, a + 0.1]))).numpy()[0], g, rtol=1e-13, atol=1e-14)
    wide, ww = crand(2, 4), crand(2, 4)  # through its composition: qr of the first columns, r extended by q^H a[:, 2:]
    gw = gd.grad(lambda x: ops.imag(ops.sum(ops.linalg.qr(x)[1] * gd.Tensor(ww))))(gd.Tensor(wide)).numpy()
    assert gw[1, 3] == pytest.approx(_entry_fd(lambda x: np.imag(np.sum(np.linalg.qr(x)[1] * ww)), wide, (1, 3)),
                                     rel=1e-6)


def _herm_lower(x):
    """The Hermitian matrix x's lower triangle and the real part of its diagonal stand for."""
    low = np.tril(x, -1)
    return low + np.conj(np.swapaxes(low, -1, -2)) + np.real(x.diagonal(0, -2, -1))[..., None] * np.eye(x.shape[-1])


def test_complex_eigh():
    crand = _seeded_crand(4)
    x = crand(2, 4, 4)
    h = _herm_lower(x)
    for dtype, tol in ((np.complex128, 1e-13), (np.complex64, 4e-6)):
        w, v = ops.linalg.eigh(gd.Tensor(x.astype(dtype)))
        assert w.dtype.name == ("float64" if dtype == np.complex128 else "float32")
        assert v.dtype.name == np.dtype(dtype).name
        w, v = w.numpy().astype(np.float64), v.numpy().astype(np.complex128)
        np.testing.assert_allclose(h @ v, v * w[..., None, :], atol=tol * 40)                      # a v = v diag(w)
        np.testing.assert_allclose(np.conj(np.swapaxes(v, -1, -2)) @ v, np.broadcast_to(np.eye(4), (2, 4, 4)),
                                   atol=tol * 4)                                                   # unitary
        np.testing.assert_allclose(w, np.linalg.eigvalsh(h), rtol=tol, atol=tol * 10)              # ascending, real
        # the phase: each column's first component with |v_ij| >= 0.5 / sqrt(n) is real and positive
        for b in range(2):
            for j in range(4):
                i = int(np.argmax(np.abs(v[b, :, j]) >= 0.25))
                assert v[b, i, j].imag == 0 and v[b, i, j].real > 0
    np.testing.assert_allclose(ops.linalg.eigvalsh(gd.Tensor(x), UPLO="U").numpy(), np.linalg.eigvalsh(x, UPLO="U"),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(ops.linalg.eigh(gd.Tensor(x), symmetrize_input=True)[0].numpy(),
                               np.linalg.eigvalsh((x + np.conj(np.swapaxes(x, -1, -2))) / 2), rtol=1e-13,
                               atol=1e-14)
    wu, vu = (t.numpy() for t in ops.linalg.eigh(gd.Tensor(x), UPLO="U"))
    hu = _herm_lower(np.conj(np.swapaxes(x, -1, -2)))
    np.testing.assert_allclose(hu @ vu, vu * wu[..., None, :], atol=1e-12)
    # phase-invariant real functions: eigenvalues and a projector v v^H, against df/dx - i df/dy
    W = crand(4, 4)

    def npf(m):
        ww, vv = np.linalg.eigh(_herm_lower(m))
        return np.sum(ww ** 3) + np.real(np.sum(np.outer(vv[:, 1], np.conj(vv[:, 1])) * W))

    def f(m):
        ww, vv = ops.linalg.eigh(m)
        c = vv[:, 1:2]
        return ops.sum(ww ** 3) + ops.real(ops.sum(c @ ops.conj(ops.transpose(c, (1, 0))) * gd.Tensor(W)))
    g = gd.grad(f)(gd.Tensor(x[0])).numpy()
    for k in [(0, 0), (2, 1), (3, 3), (1, 2), (3, 0)]:
        want = _entry_fd(npf, x[0], k)
        assert g[k] == pytest.approx(want, rel=1e-6, abs=1e-6 * max(1, abs(want))), k
    np.testing.assert_allclose(gd.vmap(gd.grad(f))(gd.Tensor(x)).numpy()[0], g, rtol=1e-12, atol=1e-13)
    # the vectors themselves (graphad's phase, a function of a): a gauge-dependent loss by differences too
    def npv(m):
        vv = np.linalg.eigh(_herm_lower(m))[1]
        ph = np.array([np.conj(vv[np.argmax(np.abs(vv[:, j]) >= 0.25), j]) for j in range(4)])
        return np.imag(np.sum(vv * (ph / np.abs(ph)) * W))
    gv = gd.grad(lambda m: ops.imag(ops.sum(ops.linalg.eigh(m)[1] * gd.Tensor(W))))(gd.Tensor(x[0])).numpy()
    for k in [(0, 0), (2, 1), (3, 2)]:
        assert gv[k] == pytest.approx(_entry_fd(npv, x[0], k), rel=1e-6, abs=1e-7), k


def test_complex_svd_and_its_compositions():
    crand = _seeded_crand(5)
    for shape in [(4, 3), (3, 3), (2, 3, 5), (2, 1)]:
        a = crand(*shape)
        k = min(shape[-2:])
        for dtype, tol in ((np.complex128, 1e-13), (np.complex64, 4e-6)):
            u, s_, vh = ops.linalg.svd(gd.Tensor(a.astype(dtype)), full_matrices=False)
            assert s_.dtype.name == ("float64" if dtype == np.complex128 else "float32")
            assert u.dtype.name == vh.dtype.name == np.dtype(dtype).name
            u, s_, vh = u.numpy().astype(np.complex128), s_.numpy().astype(np.float64), vh.numpy().astype(np.complex128)
            np.testing.assert_allclose((u * s_[..., None, :]) @ vh, a, atol=tol * 20)             # u diag(s) vh = a
            eye = np.broadcast_to(np.eye(k), a.shape[:-2] + (k, k))
            np.testing.assert_allclose(np.conj(np.swapaxes(u, -1, -2)) @ u, eye, atol=tol * 4)
            np.testing.assert_allclose(vh @ np.conj(np.swapaxes(vh, -1, -2)), eye, atol=tol * 4)
            np.testing.assert_allclose(s_, np.linalg.svd(a, compute_uv=False), rtol=tol, atol=tol * 10)
            # the phase: vh's row j (v's column) has its first component of magnitude >= 0.5 / sqrt(k) real, > 0
            vc = np.conj(np.swapaxes(vh, -1, -2)).reshape((-1,) + (vh.shape[-1], k)) if shape[-2] >= shape[-1] else \
                u.reshape((-1, shape[-2], k))
            for b in range(vc.shape[0]):
                for j in range(k):
                    i = int(np.argmax(np.abs(vc[b, :, j]) >= 0.5 / np.sqrt(vc.shape[1])))
                    assert vc[b, i, j].imag == 0 and vc[b, i, j].real > 0
        uf, sf, vhf = (t.numpy() for t in ops.linalg.svd(gd.Tensor(a)))                        # full_matrices
        m, n = shape[-2:]
        assert uf.shape[-2:] == (m, m) and vhf.shape[-2:] == (n, n)
        np.testing.assert_allclose(np.conj(np.swapaxes(uf, -1, -2)) @ uf, np.broadcast_to(np.eye(m), uf.shape), atol=1e-13)
        np.testing.assert_allclose(vhf @ np.conj(np.swapaxes(vhf, -1, -2)), np.broadcast_to(np.eye(n), vhf.shape),
                                   atol=1e-13)
        np.testing.assert_allclose(ops.linalg.svdvals(gd.Tensor(a)).numpy(), np.linalg.svd(a, compute_uv=False),
                                   rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(ops.linalg.pinv(gd.Tensor(a)).numpy(), np.linalg.pinv(a), rtol=1e-12, atol=1e-13)
        if len(shape) == 2:
            for o in ("nuc", 2, -2):
                got = ops.linalg.norm(gd.Tensor(a), o)
                assert got.dtype is gd.float64
                assert float(got.numpy()) == pytest.approx(np.linalg.norm(a, o), rel=1e-13, abs=1e-14)
    a, b = crand(5, 3), crand(5, 2)
    x, res, rank, sv = ops.linalg.lstsq(gd.Tensor(a), gd.Tensor(b))
    nx, nres, nrank, nsv = np.linalg.lstsq(a, b)
    np.testing.assert_allclose(x.numpy(), nx, rtol=1e-12, atol=1e-14)
    assert res.dtype is gd.float64 and sv.dtype is gd.float64 and int(rank.numpy()) == nrank
    np.testing.assert_allclose(res.numpy(), nres, rtol=1e-12)
    np.testing.assert_allclose(ops.linalg.lstsq(gd.Tensor(a.T), gd.Tensor(b[:3, 0]))[0].numpy(),
                               np.linalg.lstsq(a.T, b[:3, 0])[0], rtol=1e-12, atol=1e-14)  # wide: minimum norm
    # real functions against df/dx - i df/dy per entry: phase-invariant (s, u_j vh_j, norms, pinv),
    # and phase-dependent (graphad's phase is a function of a)
    W = crand(4, 3)

    def ph_fixed(vh):
        v = np.conj(vh.T)
        ph = np.array([np.conj(v[np.argmax(np.abs(v[:, j]) >= 0.5 / np.sqrt(3)), j]) for j in range(3)])
        return ph / np.abs(ph)
    cases = [
        (lambda m: ops.sum(ops.linalg.svdvals(m) ** 3) + ops.real(ops.sum(ops.linalg.svd(m, False)[0][:, 1:2] @
                                                                          ops.linalg.svd(m, False)[2][1:2, :] * gd.Tensor(W))),
         lambda m: np.sum(np.linalg.svd(m, compute_uv=False) ** 3) + np.real(np.sum(
             np.linalg.svd(m, False)[0][:, 1:2] @ np.linalg.svd(m, False)[2][1:2, :] * W))),
        (lambda m: ops.linalg.norm(m, "nuc") + ops.linalg.norm(m, 2) * ops.linalg.norm(m, -2),
         lambda m: np.linalg.norm(m, "nuc") + np.linalg.norm(m, 2) * np.linalg.norm(m, -2)),
        (lambda m: ops.imag(ops.sum(ops.linalg.pinv(m) * gd.Tensor(W.T))), lambda m: np.imag(np.sum(np.linalg.pinv(m) * W.T))),
        (lambda m: ops.imag(ops.sum(ops.linalg.svd(m, False)[0] * gd.Tensor(W))) +
         ops.real(ops.sum(ops.linalg.svd(m, False)[2] * gd.Tensor(W[:3]))),
         lambda m: np.imag(np.sum(np.linalg.svd(m, False)[0] * ph_fixed(np.linalg.svd(m, False)[2]) * W)) +
         np.real(np.sum(np.linalg.svd(m, False)[2] * np.conj(ph_fixed(np.linalg.svd(m, False)[2]))[:, None] * W[:3]))),
    ]
    a = crand(4, 3)
    for f, npf in cases:
        g = gd.grad(f)(gd.Tensor(a)).numpy()
        for k in [(0, 0), (1, 2), (3, 1), (2, 2)]:
            want = _entry_fd(npf, a, k)
            assert g[k] == pytest.approx(want, rel=1e-6, abs=1e-6 * max(1, abs(want))), k
        np.testing.assert_allclose(gd.vmap(gd.grad(f))(gd.Tensor(np.stack([a, a * 1.1]))).numpy()[0], g, rtol=1e-12, atol=1e-13)
    wide = crand(2, 4)  # through a^H's svd
    gw = gd.grad(lambda m: ops.sum(ops.linalg.svdvals(m) ** 3))(gd.Tensor(wide)).numpy()
    assert gw[1, 3] == pytest.approx(_entry_fd(lambda m: np.sum(np.linalg.svd(m, compute_uv=False) ** 3), wide, (1, 3)),
                                     rel=1e-6)


@pytest.mark.tvm
def test_complex_decompositions_run_on_the_interpreter(monkeypatch, capsys):
    """cholesky, triangular_solve, qr, eigh and svd of complex matrices have no real-pair rule: the tvm backend
    runs their graphs on the interpreter, with the same results, and the compile log says why."""
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    crand = _seeded_crand(6)
    h, b = _hpd(crand, 3, 3), crand(3, 2)

    def f(a, r):
        low = ops.linalg.cholesky(a)
        return ops.sum(ops.abs(ops.linalg.solve_triangular(low, r, trans="C", lower=True)) ** 2) + \
            ops.imag(ops.sum(ops.linalg.qr(a)[1])) + ops.sum(ops.linalg.eigvalsh(a) ** 2) + ops.linalg.norm(a, "nuc")
    want = gd.jit(gd.value_and_grad(f), backend="numpy")(gd.Tensor(h), gd.Tensor(b))
    gd.set_backend("tvm")
    try:
        got = gd.jit(gd.value_and_grad(f))(gd.Tensor(h), gd.Tensor(b))
    finally:
        gd.set_backend("numpy")
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    err = capsys.readouterr().err
    assert "runs on the NumPy interpreter" in err and "no real-pair rule" in err
    assert "cholesky(c128[3,3])" in err or "triangular_solve(c128[3,3]" in err


def _real_pair_run(cls, kw, z0, loss, steps, compiled):
    """The oracle: x and y as two real Parameters, the loss of complex(x, y)."""
    from graphad import nn
    x = gd.Parameter(z0.real.copy(), name="x")
    y = gd.Parameter(z0.imag.copy(), name="y")
    opt = cls([x, y], 0.05, **kw)
    vg = gd.value_and_grad(lambda: loss(ops.complex(x, y)), None, weights=[x, y])

    def step():
        opt(vg()[1])
    step = gd.jit(step) if compiled else step
    for _ in range(steps):
        step()
    return x.asnumpy() + 1j * y.asnumpy(), x.asnumpy(), y.asnumpy()


OPTIMIZERS = [("SGD", {}), ("SGD", dict(momentum=0.9, weight_decay=0.01)), ("SGD", dict(momentum=0.8, nesterov=True)),
              ("SGD", dict(momentum=0.5, dampening=0.3)), ("Adam", {}),
              ("Adam", dict(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)), ("AdamW", dict(weight_decay=0.1))]


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("name,kw", OPTIMIZERS)
def test_optimizers_train_a_complex_parameter_as_a_real_pair(name, kw, compiled):
    """A complex Parameter follows the trajectory of its real and imaginary parts trained as two
    real Parameters (PyTorch's view_as_real), bit for bit: the step descends along conj(grad)
    (graphad's grad is dL/dx - i dL/dy) and Adam's second moments are per part."""
    from graphad import nn
    cls = getattr(nn, name)
    rng = np.random.default_rng(8)
    for dtype in (np.complex128, np.complex64):
        z0 = (rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))).astype(dtype)
        c = gd.Tensor((rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))).astype(dtype))

        def loss(z):
            return ops.sum(ops.abs(ops.sin(z) - c) ** 2) + 0.1 * ops.sum(ops.real(z * z * z))
        p = gd.Parameter(z0.copy(), name="z")
        opt = cls([p], 0.05, **kw)
        vg = gd.value_and_grad(lambda: loss(p), None, weights=[p])

        def step():
            opt(vg()[1])
        run = gd.jit(step) if compiled else step
        for _ in range(5):
            run()
        want, wx, wy = _real_pair_run(cls, kw, z0, loss, 5, compiled)
        got = p.asnumpy()
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.real, wx)
        np.testing.assert_array_equal(got.imag, wy)
        assert np.max(np.abs(got - z0)) > 1e-3  # it moved
        # the state is PyTorch's: complex, each part the state of that part
        if name != "SGD":
            m, v = (np.asarray(t.asnumpy()) for t in (opt.moment1_0, opt.moment2_0))
            assert m.dtype == dtype and np.all(v.real > 0) and np.all(v.imag > 0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("compiled", [False, True])
def test_a_complex_gradient_for_a_real_parameter_is_refused(name, compiled):
    """The update would drop the imaginary parts (new-user review: gradients passed in another
    order trained silently); torch refuses such a gradient too."""
    from graphad import nn
    w = gd.Parameter(np.array([1.0, 2.0]), name="w")
    c = gd.Parameter(np.array([1 + 1j, 2 - 1j]), name="c")
    opt = getattr(nn, name)([w, c], 0.1)
    g_w, g_c = gd.Tensor(np.array([0.5, -0.5])), gd.Tensor(np.array([1 + 5j, -2 + 3j]))
    step = gd.jit(lambda a, b: opt([a, b])) if compiled else (lambda a, b: opt([a, b]))
    with pytest.raises(gd.errors.DTypeError, match="complex128 gradient of shape \\(2,\\) for the float64 Parameter 'w'"):
        step(g_c, g_w)
    np.testing.assert_array_equal(w.asnumpy(), [1.0, 2.0])
    step(g_w, g_c)  # the right order trains
    assert not np.array_equal(w.asnumpy(), [1.0, 2.0])


def test_complex_optimizers_match_pytorch_when_installed():
    """torch.optim on a complex parameter, fed PyTorch's gradient convention dL/dx + i dL/dy: the
    conjugate of graphad's (JAX's) gradient of the same loss."""
    torch = pytest.importorskip("torch")
    from graphad import nn
    rng = np.random.default_rng(5)
    init = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    grads_seq = [rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3)) for _ in range(6)]
    cases = [(nn.SGD, torch.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
             (nn.SGD, torch.optim.SGD, dict(momentum=0.9, weight_decay=0.01)),
             (nn.Adam, torch.optim.Adam, dict(weight_decay=0.01)),
             (nn.AdamW, torch.optim.AdamW, dict(weight_decay=0.1))]
    for ours, theirs, kw in cases:
        p = gd.Parameter(init.copy(), name="p")
        opt = ours([p], 0.01, **kw)
        tp = torch.nn.Parameter(torch.tensor(init, dtype=torch.complex128))
        topt = theirs([tp], lr=0.01, **kw)
        for g in grads_seq:
            opt([gd.Tensor(g)])
            tp.grad = torch.tensor(np.conj(g), dtype=torch.complex128)
            topt.step()
        np.testing.assert_allclose(p.asnumpy(), tp.detach().numpy(), rtol=1e-13, atol=1e-14, err_msg=ours.__name__)


# ---------------------------------------------------------------- derivatives: JAX's conventions


def test_grad_of_real_function_of_complex_input():
    # JAX: grad(|z|^2)(3 + 4j) == 6 - 8j, i.e. df/dx - i df/dy
    assert complex(gd.grad(lambda z: ops.abs(z) ** 2)(c128(3 + 4j))) == pytest.approx(6 - 8j, rel=1e-14)
    cases = [
        (lambda z: ops.real(z * z * z), lambda z: (z ** 3).real),
        (lambda z: ops.imag(ops.exp(z)), lambda z: cmath.exp(z).imag),
        (lambda z: ops.abs(ops.sin(z)), lambda z: abs(cmath.sin(z))),
        (lambda z: ops.angle(z), lambda z: cmath.phase(z)),
        (lambda z: ops.real(ops.conj(z) * ops.log(z)), lambda z: (z.conjugate() * cmath.log(z)).real),
        (lambda z: ops.abs(ops.complex(ops.imag(z), ops.real(z) ** 2)), lambda z: abs(complex(z.imag, z.real ** 2))),
    ]
    for z0 in (0.7 - 1.3j, -2.1 + 0.4j):
        for f, ref in cases:
            got = complex(gd.grad(f)(c128(z0)))
            assert got == pytest.approx(cfd(ref, z0), rel=1e-7, abs=1e-8)


def test_holomorphic_derivatives_are_f_prime():
    closed = [(lambda z: z * z * z, lambda z: 3 * z * z), (ops.exp, cmath.exp), (ops.sin, cmath.cos),
              (ops.cos, lambda z: -cmath.sin(z)), (ops.tanh, lambda z: 1 - cmath.tanh(z) ** 2),
              (ops.log, lambda z: 1 / z), (ops.sqrt, lambda z: 0.5 / cmath.sqrt(z)),
              (lambda z: 1 / z, lambda z: -1 / (z * z)), (lambda z: z ** (1.5 + 0.5j), lambda z: (1.5 + 0.5j) * z ** (0.5 + 0.5j))]
    z0 = 0.8 - 0.6j
    for f, df in closed:
        want = df(z0)
        for tr in (gd.grad, gd.jacrev, gd.jacfwd):
            assert complex(tr(f, holomorphic=True)(c128(z0))) == pytest.approx(want, rel=1e-12)
    # the complex second derivative: jacfwd(jacrev) of z^3 is 6z
    assert complex(gd.hessian(lambda z: z * z * z, holomorphic=True)(c128(z0))) == pytest.approx(6 * z0, rel=1e-12)


def test_vjp_and_jvp_are_jax_r_linear_maps():
    # f(z) = z conj(z) + exp(conj z): not holomorphic. jvp is the R-linear map J t; vjp is its
    # transpose under <a, b> = Re(sum(a b)) (no conjugation), as JAX's
    def f(z):
        return z * ops.conj(z) + ops.exp(ops.conj(z))
    z0, eps = crand(3), 1e-6
    Z = gd.Tensor(z0)
    for _ in range(3):
        t, u = crand(3), crand(3)
        _, jt = gd.jvp(f, Z, gd.Tensor(t))
        fd = (f(gd.Tensor(z0 + eps * t)).numpy() - f(gd.Tensor(z0 - eps * t)).numpy()) / (2 * eps)
        np.testing.assert_allclose(jt.numpy(), fd, rtol=1e-7, atol=1e-8)
        _, vjp_fn = gd.vjp(f, Z)
        (g,) = vjp_fn(gd.Tensor(u))
        assert np.sum(u * jt.numpy()).real == pytest.approx(np.sum(g.numpy() * t).real, rel=1e-12)


def test_real_inputs_through_complex_values():
    x0 = np.array([0.4, -1.1, 2.0])

    def f(x):
        return ops.sum(ops.abs(ops.exp(x * 1j) + x) ** 2)

    def ref(x):
        return float(np.sum(np.abs(np.exp(x * 1j) + x) ** 2))
    g = gd.grad(f)(gd.Tensor(x0)).numpy()
    assert g.dtype == np.float64
    fd = [(ref(x0 + 1e-6 * e) - ref(x0 - 1e-6 * e)) / 2e-6 for e in np.eye(3)]
    np.testing.assert_allclose(g, fd, rtol=1e-7)


def test_reverse_and_forward_agree():
    a = crand(3, 3) + 3 * np.eye(3)

    def f(z):
        return ops.linalg.solve(gd.Tensor(a), ops.sin(z) * z) + ops.sum(ops.exp(z))
    z = gd.Tensor(crand(3))
    jr = gd.jacrev(f, holomorphic=True)(z).numpy()
    jf = gd.jacfwd(f, holomorphic=True)(z).numpy()
    np.testing.assert_allclose(jr, jf, rtol=1e-12, atol=1e-13)
    # real-valued output of a complex input: jacrev's rows are grad's
    h = lambda z: ops.abs(ops.matmul(gd.Tensor(a), z))  # noqa: E731
    jr = gd.jacrev(h)(z).numpy()
    for i in range(3):
        np.testing.assert_allclose(jr[i], gd.grad(lambda z: h(z)[i])(z).numpy(), rtol=1e-13)


def test_vmap_matches_a_loop():
    zs, ws = crand(4, 3), crand(3)

    def f(z, w):
        return ops.sum(ops.conj(z) * ops.exp(w)) / (1 + ops.abs(z[0]))
    got = gd.vmap(f, in_axes=(0, None))(gd.Tensor(zs), gd.Tensor(ws)).numpy()
    want = np.array([f(gd.Tensor(z), gd.Tensor(ws)).numpy() for z in zs])
    np.testing.assert_allclose(got, want, rtol=1e-14)
    g = gd.vmap(gd.grad(lambda z: ops.real(ops.sum(z * z * ops.conj(z)))))(gd.Tensor(zs)).numpy()
    loop = np.array([gd.grad(lambda z: ops.real(ops.sum(z * z * ops.conj(z))))(gd.Tensor(z)).numpy() for z in zs])
    np.testing.assert_allclose(g, loop, rtol=1e-14)


def test_errors_follow_jax():
    z = c128(1 + 1j)
    with pytest.raises(TransformError, match=r"grad of <lambda>: output leaf 0 is complex128 \(shape \(\)\).*"
                                             r"holomorphic=True.*test_complex.py"):
        gd.grad(lambda z: z * z)(z)
    with pytest.raises(TransformError, match="jacrev needs real outputs"):
        gd.jacrev(lambda z: z * z)(z)
    with pytest.raises(TransformError, match="jacfwd needs real inputs"):
        gd.jacfwd(ops.abs)(z)
    with pytest.raises(TransformError, match=r"holomorphic differentiation needs complex inputs"):
        gd.grad(lambda x: x * x, holomorphic=True)(gd.Tensor(1.0))
    with pytest.raises(TransformError, match=r"holomorphic differentiation needs complex outputs"):
        gd.grad(ops.abs, holomorphic=True)(z)


# ---------------------------------------------------------------- the compiled backend


@pytest.mark.tvm
def test_compiled_backend_compiles_complex_graphs(monkeypatch, capsys, tmp_path):
    """The tvm backend compiles complex values as real/imaginary pairs (docs/complex.md): results
    equal the interpreter's, NaN, inf and -0.0 in place, up to the documented last-bit
    differences of abs (hypot), sum and arctan2; the function saves and loads as an artifact.
    tests/test_complex_compiled.py checks every covered primitive."""
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    special = np.array([complex(np.inf, 1), complex(-0.0, -0.0), complex(np.nan, 2), complex(1, np.inf),
                        complex(0.5, -0.25)])
    xr = np.array([np.inf, -0.0, np.nan, 3.0, -2.0])

    def f(z, x):
        # real arithmetic (compilable on its own) mixed with complex values
        w = ops.complex(ops.exp(x) * 2.0, -x) * 1.0 + z * ops.conj(z)
        return ops.real(w) + ops.abs(ops.sqrt(z)), ops.sum(w * 1.0), ops.angle(w), w

    fns, z = {}, gd.Tensor(crand(4))
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        fns[backend] = [t.numpy() for t in gd.jit(f)(gd.Tensor(special), gd.Tensor(xr))]
        fns[backend + "-grad"] = gd.grad(lambda z: ops.sum(ops.abs(ops.exp(z) * z)))(z).numpy()
    err = capsys.readouterr().err
    assert "compiled with its complex values as real/imaginary pairs" in err
    assert "runs on the NumPy interpreter" not in err
    for a, b in zip(fns["numpy"], fns["tvm"]):
        np.testing.assert_allclose(b, a, rtol=4e-16, atol=0)  # NaN where NaN, inf where inf
    np.testing.assert_array_equal(fns["numpy"][3], fns["tvm"][3])  # w: the same arithmetic, bit for bit
    assert np.array_equal(np.signbit(fns["numpy"][3].real), np.signbit(fns["tvm"][3].real))
    np.testing.assert_allclose(fns["tvm-grad"], fns["numpy-grad"], rtol=1e-15)
    gd.set_backend("tvm")
    lowered = gd.jit(f).lower(gd.Tensor(special), gd.Tensor(xr)).compile()
    lowered.save(str(tmp_path / "f.graphad"))
    loaded = gd.load(str(tmp_path / "f.graphad"))
    for a, b in zip(loaded(gd.Tensor(special), gd.Tensor(xr)), fns["tvm"]):
        np.testing.assert_array_equal(a.numpy(), b)
    gd.set_backend("numpy")


def test_simplify_keeps_numpys_complex_arithmetic():
    """x * 1, x + 0, x - 0 and x / 1 are not x for complex x with infinite or signed-zero parts
    (NumPy's complex product is the textbook formula: (inf + 1j) * 1 = inf + nan j)."""
    z = np.array([complex(np.inf, 1.0), complex(-0.0, -0.0), complex(1.0, np.inf)])
    f = gd.jit(lambda t: (t * 1.0, t + 0.0, t - 0.0, t / 1.0, ops.sum(ops.full((3,), 1.0, gd.complex128) * t)))
    with np.errstate(all="ignore"):
        want = (z * (1 + 0j), z + 0j, z - 0j, z / (1 + 0j), np.sum(np.ones(3, np.complex128) * z))
    for got, w in zip(f(gd.Tensor(z)), want):
        np.testing.assert_array_equal(got.numpy(), w)
        assert np.array_equal(np.signbit(got.numpy().real), np.signbit(np.asarray(w).real))
        assert np.array_equal(np.signbit(got.numpy().imag), np.signbit(np.asarray(w).imag))


@pytest.mark.tvm
def test_complex_values_inside_regions_only(monkeypatch, capsys):
    """Real inputs and outputs, complex values only inside a branch of a switch or a loop body:
    still interpreted (TVM would meet the complex primitives in the regions)."""
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")

    def f(x, i):
        def b0(x):
            return ops.abs(ops.complex(x, -x) * ops.complex(x, 2.0))

        def b1(x):
            return ops.real(ops.exp(ops.complex(x, x)))
        y = gd.switch(i, [b0, b1, lambda x: x * 3.0], x)
        return gd.fori_loop(0, 2, lambda k, a: ops.imag(ops.complex(a, a * 0.5)) + 1.0, y)

    x = gd.Tensor(np.array([0.5, -1.25, np.inf, -0.0]))
    for i in range(3):
        want = gd.jit(f, backend="numpy")(x, gd.Tensor(np.int32(i))).numpy()
        gd.set_backend("tvm")
        got = gd.jit(f)(x, gd.Tensor(np.int32(i))).numpy()
        gd.set_backend("numpy")
        np.testing.assert_array_equal(got, want)
    assert "runs on the NumPy interpreter" in capsys.readouterr().err


# ---------------------------------------------------------------- JAX itself


def test_against_jax():
    """graphad's complex derivatives and promotion equal JAX's. JAX runs in a child process: the
    test process forks (the fuzzer's sandbox), and forking a process that runs JAX's threads can
    deadlock (tests/fuzzing/jax_oracle.py keeps JAX out of it for the same reason)."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", "import test_complex; test_complex.compare_with_jax(); print('ok')"],
                         capture_output=True, text=True, timeout=300, cwd=here,
                         env={**os.environ, "PYTHONPATH": here, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and out.stdout.split()[-1:] == ["ok"], out.stdout + out.stderr


def compare_with_jax():
    """(In a child process.) Assert that graphad's results equal JAX's."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)
    z0 = 0.7 - 1.3j
    Z = c128(z0)
    real_fns = [(lambda z: ops.abs(z) ** 2, lambda z: jnp.abs(z) ** 2),
                (lambda z: ops.imag(ops.exp(z)), lambda z: jnp.imag(jnp.exp(z))),
                (lambda z: ops.abs(ops.sin(z)), lambda z: jnp.abs(jnp.sin(z))),
                (ops.angle, jnp.angle)]
    for f, jf in real_fns:
        assert complex(gd.grad(f)(Z)) == pytest.approx(complex(jax.grad(jf)(z0)), rel=1e-12)
        assert complex(gd.jacrev(f)(Z)) == pytest.approx(complex(jax.jacrev(jf)(z0)), rel=1e-12)
    for f, jf in [(lambda z: z ** 3, lambda z: z ** 3), (ops.tanh, jnp.tanh), (ops.sqrt, jnp.sqrt)]:
        for tr, jtr in ((gd.grad, jax.grad), (gd.jacrev, jax.jacrev), (gd.jacfwd, jax.jacfwd)):
            assert complex(tr(f, holomorphic=True)(Z)) == pytest.approx(complex(jtr(jf, holomorphic=True)(z0)),
                                                                       rel=1e-12)
    ct = 0.3 + 0.9j
    for f, jf in [(ops.conj, jnp.conj), (lambda z: z * ops.conj(z), lambda z: z * jnp.conj(z)),
                  (lambda z: ops.complex(ops.real(z), ops.imag(z) ** 2),
                   lambda z: jax.lax.complex(jnp.real(z), jnp.imag(z) ** 2))]:
        _, vf = gd.vjp(f, Z)
        _, jvf = jax.vjp(jf, z0)
        assert complex(vf(c128(ct))[0]) == pytest.approx(complex(jvf(ct)[0]), rel=1e-12)
        assert complex(gd.jvp(f, Z, c128(ct))[1]) == pytest.approx(complex(jax.jvp(jf, (z0,), (ct,))[1]), rel=1e-12)
    a = np.array([[2 + 1j, 0.5], [0.3 - 1j, 3 + 0.2j]])
    b = np.array([1 + 1j, -2j])
    got = gd.grad(lambda m: ops.sum(ops.abs(ops.linalg.solve(m, gd.Tensor(b))) ** 2))(gd.Tensor(a)).numpy()
    want = jax.grad(lambda m: jnp.sum(jnp.abs(jnp.linalg.solve(m, b)) ** 2))(a)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)
    got = gd.grad(lambda m: ops.abs(ops.linalg.det(m)))(gd.Tensor(a)).numpy()
    np.testing.assert_allclose(got, np.asarray(jax.grad(lambda m: jnp.abs(jnp.linalg.det(m)))(a)), rtol=1e-12)
    got = gd.jacrev(ops.linalg.inv, holomorphic=True)(gd.Tensor(a)).numpy()
    np.testing.assert_allclose(got, np.asarray(jax.jacrev(jnp.linalg.inv, holomorphic=True)(a)), rtol=1e-12)
    for x, y in [(gd.float32, jnp.float32), (gd.float64, jnp.float64), (gd.int64, jnp.int64)]:
        assert gd.dtypes.promote_types(x, gd.complex64).name == str(jnp.promote_types(y, jnp.complex64))
    # the functions that gained complex operands later: values, f'(z) and a real function's gradient
    jfns = {n: getattr(jnp, n) for n in MORE_FNS}
    jfns["sigmoid"] = jax.nn.sigmoid
    for name, jf in jfns.items():
        f = getattr(ops, name)
        # (arccosh only where Re z > 0: JAX's derivative 1 / sqrt(z^2 - 1) has the wrong sign where
        # Re z < 0, against JAX's own values; graphad's matches central differences there)
        for zz in ((0.7 - 1.3j, 0.4 + 0.6j) if name == "arccosh" else (0.7 - 1.3j, -1.2 + 0.4j)):
            assert complex(f(c128(zz))) == pytest.approx(complex(jf(zz)), rel=1e-13), name
            assert complex(gd.grad(f, holomorphic=True)(c128(zz))) == pytest.approx(
                complex(jax.grad(jf, holomorphic=True)(zz)), rel=1e-12), name
            assert complex(gd.grad(lambda z: ops.abs(f(z)) ** 2)(c128(zz))) == pytest.approx(
                complex(jax.grad(lambda z: jnp.abs(jf(z)) ** 2)(zz)), rel=1e-12), name
    v = np.array([0.3 + 1j, -1.1 + 0.2j, 0.8 - 0.5j])
    np.testing.assert_allclose(gd.grad(lambda z: ops.abs(ops.prod(z)))(gd.Tensor(v)).numpy(),
                               np.asarray(jax.grad(lambda z: jnp.abs(jnp.prod(z)))(v)), rtol=1e-12)
    np.testing.assert_allclose(gd.grad(ops.prod, holomorphic=True)(gd.Tensor(v)).numpy(),
                               np.asarray(jax.grad(jnp.prod, holomorphic=True)(v)), rtol=1e-12)
    for f, jf in [(lambda m: ops.linalg.slogdet(m)[1], lambda m: jnp.linalg.slogdet(m)[1]),
                  (lambda m: ops.real(ops.linalg.slogdet(m)[0]), lambda m: jnp.real(jnp.linalg.slogdet(m)[0])),
                  (lambda m: ops.imag(ops.linalg.slogdet(m)[0]), lambda m: jnp.imag(jnp.linalg.slogdet(m)[0]))]:
        np.testing.assert_allclose(gd.grad(f)(gd.Tensor(a)).numpy(), np.asarray(jax.grad(jf)(a)), rtol=1e-12)
    sign, lad = ops.linalg.slogdet(gd.Tensor(a))
    jsign, jlad = jnp.linalg.slogdet(a)
    assert complex(sign.numpy()) == pytest.approx(complex(jsign), rel=1e-14)
    assert float(lad.numpy()) == pytest.approx(float(jlad), rel=1e-14)
    for kw in ({}, {"ord": 1}, {"ord": np.inf}, {"ord": "fro"}, {"ord": -1}, {"axis": 1}, {"axis": 0, "ord": 3.0}):
        got = gd.grad(lambda m: ops.sum(ops.linalg.norm(m, **kw)))(gd.Tensor(a)).numpy()
        want = jax.grad(lambda m: jnp.sum(jnp.linalg.norm(m, **kw)))(a)
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, err_msg=str(kw))
    # cholesky of a Hermitian matrix (JAX symmetrizes its input, graphad reads the lower triangle:
    # equal on Hermitian matrices, so both differentiate through herm(x) = (x + x^H) / 2)
    x = np.array([[3 + 0.5j, 0.4 - 1j, 0.2j], [1 + 1j, 2.5 - 0.3j, 0.6], [-0.5 + 0.2j, 0.1 - 0.7j, 4 + 1j]])
    wt = np.array([[1 - 2j, 0.5j, 3], [0.2, -1 + 1j, 2j], [0.7 - 0.1j, 1.5, -0.4j]])

    def herm(m, cj, tr):
        return (m + cj(tr(m))) / 2
    g_tr = lambda m: ops.transpose(m, (1, 0))  # noqa: E731
    for f, jf in [(lambda m: ops.sum(ops.abs(ops.linalg.cholesky(herm(m, ops.conj, g_tr)) * gd.Tensor(wt)) ** 2),
                   lambda m: jnp.sum(jnp.abs(jnp.linalg.cholesky(herm(m, jnp.conj, jnp.transpose)) * wt) ** 2)),
                  (lambda m: ops.imag(ops.sum(ops.linalg.cholesky(herm(m, ops.conj, g_tr), upper=True) * gd.Tensor(wt))),
                   lambda m: jnp.imag(jnp.sum(jnp.linalg.cholesky(herm(m, jnp.conj, jnp.transpose), upper=True) * wt)))]:
        np.testing.assert_allclose(gd.grad(f)(gd.Tensor(x)).numpy(), np.asarray(jax.grad(jf)(x)), rtol=1e-12, atol=1e-14)
    hx = (x + x.conj().T) / 2
    np.testing.assert_allclose(ops.linalg.cholesky(gd.Tensor(hx)).numpy(), np.asarray(jnp.linalg.cholesky(hx)),
                               rtol=1e-14, atol=1e-15)
    # triangular solves: SciPy's trans (jax.scipy.linalg) and lax.linalg.triangular_solve's flags
    import jax.scipy.linalg as jsl
    rb = np.array([[1 - 1j, 0.5], [2j, -1 + 0.3j], [0.4, 1 + 1j]])
    for trans in (0, 1, 2, "C"):
        for lower in (True, False):
            f = lambda m, r: ops.sum(ops.abs(ops.linalg.solve_triangular(m, r, trans=trans, lower=lower) * gd.Tensor(rb)) ** 2)  # noqa: E731,E501
            jf = lambda m, r: jnp.sum(jnp.abs(jsl.solve_triangular(m, r, trans=trans, lower=lower) * rb) ** 2)  # noqa: E731
            np.testing.assert_allclose(ops.linalg.solve_triangular(gd.Tensor(x), gd.Tensor(rb), trans=trans,
                                                                   lower=lower).numpy(),
                                       np.asarray(jsl.solve_triangular(x, rb, trans=trans, lower=lower)), rtol=1e-13)
            for got, want in zip(gd.grad(f, argnums=(0, 1))(gd.Tensor(x), gd.Tensor(rb)), jax.grad(jf, (0, 1))(x, rb)):
                np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-12, atol=1e-14, err_msg=str(trans))
    # qr: LAPACK's signs in both (geqrf, orgqr), so the values and the gradients of real functions of
    # q and r agree; a wide matrix by values (JAX has no derivative for it)
    xq = np.concatenate([x, rb], 1).T  # (5, 3)
    for mat in (x, xq):
        for got, want in zip(ops.linalg.qr(gd.Tensor(mat)), jnp.linalg.qr(mat)):
            np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-13, atol=1e-14)
        wq = np.cos(np.arange(mat.size)).reshape(mat.shape) + 1j * np.sin(np.arange(mat.size)).reshape(mat.shape)
        f = lambda m: ops.sum(ops.abs(ops.linalg.qr(m)[0] * gd.Tensor(wq)) ** 2) + ops.imag(ops.sum(ops.linalg.qr(m)[1]))  # noqa: E731,E501
        jf = lambda m: jnp.sum(jnp.abs(jnp.linalg.qr(m)[0] * wq) ** 2) + jnp.imag(jnp.sum(jnp.linalg.qr(m)[1]))  # noqa: E731
        np.testing.assert_allclose(gd.grad(f)(gd.Tensor(mat)).numpy(), np.asarray(jax.grad(jf)(mat)), rtol=1e-11,
                                   atol=1e-13)
        f = lambda m: ops.real(ops.sum(ops.linalg.qr(m)[0] * gd.Tensor(wq)))  # noqa: E731
        jf = lambda m: jnp.real(jnp.sum(jnp.linalg.qr(m)[0] * wq))  # noqa: E731
        np.testing.assert_allclose(gd.grad(f)(gd.Tensor(mat)).numpy(), np.asarray(jax.grad(jf)(mat)), rtol=1e-11,
                                   atol=1e-13)
    for got, want in zip(ops.linalg.qr(gd.Tensor(xq.T)), jnp.linalg.qr(xq.T)):
        np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-13, atol=1e-14)
    # eigh of a Hermitian matrix: eigenvalues, and gradients of phase-invariant functions (the
    # eigenvalues, the projectors v v^H) through herm(x), as for cholesky
    hx = herm(x, np.conj, np.transpose)
    np.testing.assert_allclose(ops.linalg.eigvalsh(gd.Tensor(hx)).numpy(), np.asarray(jnp.linalg.eigvalsh(hx)),
                               rtol=1e-13)
    for j in range(3):
        def f(m, j=j):
            ww, vv = ops.linalg.eigh(herm(m, ops.conj, g_tr))
            c = vv[:, j:j + 1]
            return ops.sum(ww ** 3) + ops.real(ops.sum(c @ ops.conj(ops.transpose(c, (1, 0))) * gd.Tensor(wt)))

        def jf(m, j=j):
            ww, vv = jnp.linalg.eigh(herm(m, jnp.conj, jnp.transpose))
            c = vv[:, j:j + 1]
            return jnp.sum(ww ** 3) + jnp.real(jnp.sum(c @ jnp.conj(c.T) * wt))
        np.testing.assert_allclose(gd.grad(f)(gd.Tensor(x)).numpy(), np.asarray(jax.grad(jf)(x)), rtol=1e-11,
                                   atol=1e-13)
        wj, vj = jnp.linalg.eigh(hx)
        vg = ops.linalg.eigh(gd.Tensor(hx))[1].numpy()
        np.testing.assert_allclose(np.abs(vg[:, j] @ np.conj(np.asarray(vj)[:, j])), 1, rtol=1e-13)  # one phase apart
    # svd: singular values, pinv, lstsq, the norms of singular values and gradients of phase-invariant
    # functions (JAX's vectors may differ from graphad's by a phase per pair)
    for mat in (x, xq, xq.T):
        np.testing.assert_allclose(ops.linalg.svdvals(gd.Tensor(mat)).numpy(),
                                   np.asarray(jnp.linalg.svd(mat, compute_uv=False)), rtol=1e-13)
        np.testing.assert_allclose(ops.linalg.pinv(gd.Tensor(mat)).numpy(), np.asarray(jnp.linalg.pinv(mat)),
                                   rtol=1e-12, atol=1e-14)
        wm = np.cos(np.arange(mat.size)).reshape(mat.shape) - 1j * np.sin(np.arange(mat.size) * 0.7).reshape(mat.shape)
        fns = [(lambda m: ops.linalg.norm(m, "nuc") + ops.linalg.norm(m, 2) * ops.linalg.norm(m, -2),
                lambda m: jnp.linalg.norm(m, "nuc") + jnp.linalg.norm(m, 2) * jnp.linalg.norm(m, -2)),
               (lambda m: ops.imag(ops.sum(ops.linalg.pinv(m) * gd.Tensor(wm.T))),
                lambda m: jnp.imag(jnp.sum(jnp.linalg.pinv(m) * wm.T)))]
        for j in range(min(mat.shape)):
            fns.append((lambda m, j=j: ops.sum(ops.linalg.svdvals(m) ** 3) + ops.real(ops.sum(
                ops.linalg.svd(m, False)[0][:, j:j + 1] @ ops.linalg.svd(m, False)[2][j:j + 1, :] * gd.Tensor(wm))),
                lambda m, j=j: jnp.sum(jnp.linalg.svd(m, compute_uv=False) ** 3) + jnp.real(jnp.sum(
                    jnp.linalg.svd(m, False)[0][:, j:j + 1] @ jnp.linalg.svd(m, False)[2][j:j + 1, :] * wm))))
        for f, jf in fns:
            np.testing.assert_allclose(gd.grad(f)(gd.Tensor(mat)).numpy(), np.asarray(jax.grad(jf)(mat)), rtol=1e-10,
                                       atol=1e-12)
    bq = np.sin(np.arange(10)).reshape(5, 2) + 1j * np.cos(np.arange(10)).reshape(5, 2)
    got = gd.grad(lambda m: ops.sum(ops.abs(ops.linalg.lstsq(m, gd.Tensor(bq))[0]) ** 2))(gd.Tensor(xq)).numpy()
    want = jax.grad(lambda m: jnp.sum(jnp.abs(jnp.linalg.lstsq(m, bq)[0]) ** 2))(xq)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-12)
    for left in (False, True):
        for tr in (False, True):
            for cj in (False, True):
                kw = dict(left_side=left, lower=True, transpose_a=tr, conjugate_a=cj)
                r = rb if left else rb.T
                got = ops.linalg.triangular_solve(gd.Tensor(x), gd.Tensor(r), **kw).numpy()
                np.testing.assert_allclose(got, np.asarray(jax.lax.linalg.triangular_solve(x, r, **kw)), rtol=1e-13)
                g = gd.grad(lambda m: ops.sum(ops.abs(ops.linalg.triangular_solve(m, gd.Tensor(r), **kw)) ** 2))
                jg = jax.grad(lambda m: jnp.sum(jnp.abs(jax.lax.linalg.triangular_solve(m, r, **kw)) ** 2))
                np.testing.assert_allclose(g(gd.Tensor(x)).numpy(), np.asarray(jg(x)), rtol=1e-12, atol=1e-14)


def test_mse_loss_of_complex_values_is_the_squared_modulus():
    """nn.MSELoss of complex values is mean(|d|^2) (real, never negative), not the mean of the
    complex square: 1j - 0 gave -1."""
    from graphad import nn
    got = nn.MSELoss()(gd.Tensor(np.array([1j, 1 + 1j])), gd.Tensor(np.array([0j, 0j])))
    assert got.dtype.name == "float64" and float(got.asnumpy()) == 1.5


def test_complex_data_into_a_real_parameter_is_refused():
    """set_data, ops.assign and ops.assign_add (eagerly and in jit) refuse complex values for a
    real Parameter, as Tensor(complex data, dtype=float) does: the imaginary parts would be
    lost silently (the Parameter keeps its value)."""
    p = gd.Parameter(np.zeros(2, np.float32), name="p")
    z = gd.Tensor(np.array([1 + 2j, 3j]))
    for write in (lambda: p.set_data(z), lambda: ops.assign(p, z),
                  lambda: gd.jit(lambda z: ops.assign_add(p, z))(z)):
        with pytest.raises(DTypeError, match="imaginary"):
            write()
    np.testing.assert_array_equal(p.asnumpy(), [0.0, 0.0])


def test_python_complex_numbers_are_arguments():
    """A Python complex is a number like a float (complex64, as docs/complex.md says): jit traces
    it, grad differentiates at it, jvp takes it (it was refused as "not a Python number")."""
    z = gd.Tensor(np.array([1 + 1j, 2 - 1j], np.complex64))
    np.testing.assert_array_equal(gd.jit(lambda z, c: z * c)(z, 2 + 1j).asnumpy(), [1 + 3j, 5 + 0j])
    g = gd.grad(lambda c: ops.abs(c) ** 2)(3 + 4j)
    assert g.dtype.name == "complex64" and complex(g.asnumpy()) == 6 - 8j  # JAX's convention
    primal, tangent = gd.jvp(lambda c: c * c, (1 + 1j,), (1 + 0j,))
    assert complex(primal.asnumpy()) == 2j and complex(tangent.asnumpy()) == 2 + 2j


def test_a_complex_cotangent_for_a_real_output_is_refused():
    """vjp_fn refuses a complex cotangent for a real output, as JAX does (the imaginary part was
    dropped silently); a real one gives JAX's gradient of |z|: conj(z) / |z|."""
    _, vf = gd.vjp(ops.abs, gd.Tensor(np.array([1 + 2j, 3 - 1j])))
    with pytest.raises(TransformError, match="real output takes a real cotangent"):
        vf(gd.Tensor(np.array([1j, 1])))
    (g,) = vf(gd.Tensor(np.array([1.0, 1.0])))
    z = np.array([1 + 2j, 3 - 1j])
    np.testing.assert_allclose(g.asnumpy(), np.conj(z) / np.abs(z), rtol=1e-15)


def test_a_complex_tangent_for_a_real_input_is_refused():
    """jvp refuses a complex tangent for a real input, as JAX does (it was cast to the input's
    dtype, dropping the imaginary part: jvp(2x, 1.0, 1+1j) gave 2 instead of refusing); a real
    tangent of another precision is cast, as vjp_fn casts a cotangent."""
    x = gd.Tensor(np.ones(3, np.float32))
    with pytest.raises(TransformError, match="real input takes a real tangent"):
        gd.jvp(lambda x: x * 2, (x,), (gd.Tensor(np.full(3, 1 + 1j, np.complex64)),))
    _, t = gd.jvp(lambda x: x * 2, (x,), (gd.Tensor(np.full(3, 0.5)),))
    assert t.dtype.name == "float32" and t.asnumpy().tolist() == [1.0, 1.0, 1.0]
    # a complex input takes a real tangent (a direction along the real axis)
    _, t = gd.jvp(lambda z: z * z, (gd.Tensor(np.array([1 + 1j], np.complex64)),), (gd.Tensor(np.ones(1, np.float32)),))
    assert complex(t.asnumpy()[0]) == 2 + 2j
