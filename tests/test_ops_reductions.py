"""Issue 17's reductions and scans: var, std, cumsum, cumprod, cummax, cummin, logcumsumexp, and
argmax/argmin with keepdims.

cumsum is a primitive (Relax cumsum); the others are compositions: var/std of mean and sum,
cumprod/cummax/cummin/logcumsumexp a log-depth doubling scan of mul/maximum/minimum/logaddexp
(no division, so cumprod's gradient is exact where the input holds zeros). Oracles: NumPy's
var/std/cumsum/cumprod and ufunc.accumulate, mpmath for logcumsumexp; derivatives against float64
central differences in both modes; vmap against a loop; compiled (TVM) against interpreted.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError
from graphad.tensor import Tensor

from backends import both_backends
from op_checks import check_derivatives, check_vmap

INF, NAN = math.inf, math.nan
RNG = np.random.default_rng(17)
X = RNG.normal(size=(3, 4, 5))


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_var_std_values(axis, ddof, keepdims):
    for f, ref in ((ops.var, np.var), (ops.std, np.std)):
        got = f(Tensor(X), axis=axis, ddof=ddof, keepdims=keepdims).asnumpy()
        want = ref(X, axis=axis, ddof=ddof, keepdims=keepdims)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_var_edge_cases():
    """ddof >= n gives inf (or NaN for a zero sum) as NumPy; ints give float32; float32 stays."""
    with np.errstate(all="ignore"):
        got = ops.var(Tensor(np.array([1.0, 2.0])), ddof=2).asnumpy()
        assert got == np.var(np.array([1.0, 2.0]), ddof=2) == INF
        assert math.isnan(ops.var(Tensor(np.array([3.0, 3.0])), ddof=2).asnumpy())
    assert ops.var(Tensor(np.arange(5))).dtype.name == "float32"
    np.testing.assert_allclose(ops.var(Tensor(np.arange(5))).asnumpy(), 2.0)
    assert ops.std(Tensor(X.astype(np.float32)), axis=0).dtype.name == "float32"


SCANS = {
    "cumsum": (ops.cumsum, lambda x, axis: np.cumsum(x, axis=axis)),
    "cumprod": (ops.cumprod, lambda x, axis: np.cumprod(x, axis=axis)),
    "cummax": (ops.cummax, lambda x, axis: np.maximum.accumulate(x.ravel() if axis is None else x,
                                                                axis=0 if axis is None else axis)),
    "cummin": (ops.cummin, lambda x, axis: np.minimum.accumulate(x.ravel() if axis is None else x,
                                                                axis=0 if axis is None else axis)),
    "logcumsumexp": (ops.logcumsumexp, lambda x, axis: np.logaddexp.accumulate(x.ravel() if axis is None else x,
                                                                              axis=0 if axis is None else axis)),
}


@pytest.mark.parametrize("name", sorted(SCANS))
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1])
def test_scan_values(name, axis):
    f, ref = SCANS[name]
    got = f(Tensor(X), axis=axis).asnumpy()
    np.testing.assert_allclose(got, ref(X, axis), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 33])
def test_scan_lengths(n):
    """Every length of the doubling scan (powers of two and their neighbours, empty)."""
    x = RNG.normal(size=(2, n))
    for name, (f, ref) in SCANS.items():
        got = f(Tensor(x), axis=1).asnumpy()
        assert got.shape == x.shape, name
        np.testing.assert_allclose(got, ref(x, 1), rtol=1e-13, atol=1e-15, err_msg=name)


def test_scan_dtypes():
    """Integers keep their dtype (as sum does), bool counts as int64, NaN propagates."""
    i = np.array([[3, -1, 4], [1, 5, -9]], np.int32)
    for name in ("cumsum", "cumprod", "cummax", "cummin"):
        got = SCANS[name][0](Tensor(i), axis=1)
        assert got.dtype.name == "int32", name
        np.testing.assert_array_equal(got.asnumpy(), SCANS[name][1](i, 1), err_msg=name)
    b = np.array([True, False, True, True])
    got = ops.cumsum(Tensor(b))
    assert got.dtype.name == "int64"
    np.testing.assert_array_equal(got.asnumpy(), np.cumsum(b))
    assert ops.logcumsumexp(Tensor(i), axis=1).dtype.name == "float32"
    n = np.array([1.0, NAN, 2.0])
    for name, (f, ref) in SCANS.items():
        np.testing.assert_array_equal(f(Tensor(n)).asnumpy(), ref(n, None), err_msg=name)
    np.testing.assert_array_equal(ops.cumsum(Tensor(i), axis=1, dtype="float64").asnumpy(),
                                  np.cumsum(i, 1, dtype=float))
    with pytest.raises(GraphadError):
        ops.cumsum(Tensor(i), axis=2)


def _mp_logcumsumexp(row):
    out, acc = [], None
    with mpmath.workprec(256):
        for v in row:
            term = mpmath.mpf(0) if v == -INF else (mpmath.inf if v == INF else mpmath.exp(mpmath.mpf(v)))
            acc = term if acc is None else acc + term
            out.append(-INF if acc == 0 else (INF if acc == mpmath.inf else float(mpmath.log(acc))))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logcumsumexp_at_infinities_and_large_values(dtype):
    """-inf stays -inf until a finite term, +inf wins, 1000 and -1000 neither overflow nor vanish."""
    rows = [[-INF, -INF, 0.0, -INF, 1.0], [1.0, INF, 2.0, -INF, 3.0], [1000.0, 1000.0, -1000.0, 999.0, 1001.0],
            [-1000.0, -1001.0, -999.0, -1000.0, -INF], [-INF, -INF, -INF, -INF, -INF]]
    x = np.array(rows, dtype)
    got = ops.logcumsumexp(Tensor(x), axis=1).asnumpy()
    want = np.array([_mp_logcumsumexp(r) for r in x.astype(np.float64)])
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=4 * eps)
    np.testing.assert_array_equal(got[~fin], want[~fin])


def test_argmax_argmin_keepdims():
    """keepdims with an axis and with axis=None (the flattened index, every axis kept as 1)."""
    x = RNG.integers(0, 3, (3, 4, 2)).astype(float)
    for f, ref in ((ops.argmax, np.argmax), (ops.argmin, np.argmin)):
        for axis in (None, 0, 1, -1):
            for kd in (False, True):
                got = f(Tensor(x), axis=axis, keepdims=kd).asnumpy()
                want = ref(x, axis=axis, keepdims=kd)
                assert got.shape == want.shape, (f, axis, kd)
                np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- derivatives

@pytest.mark.parametrize("name", ["var", "std", "var_ddof", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"])
def test_derivatives_match_finite_differences(name):
    x = RNG.normal(size=(3, 5))
    fn = {"var": lambda t: ops.var(t, axis=1), "std": lambda t: ops.std(t, axis=0, keepdims=True),
          "var_ddof": lambda t: ops.var(t, ddof=1),
          "cumsum": lambda t: ops.cumsum(t, axis=1), "cumprod": lambda t: ops.cumprod(t, axis=1),
          "cummax": lambda t: ops.cummax(t, axis=1), "cummin": lambda t: ops.cummin(t, axis=0),
          "logcumsumexp": lambda t: ops.logcumsumexp(t, axis=1)}[name]
    check_derivatives(fn, x)


def test_cumprod_gradient_with_zeros():
    """Zeros in the input (one, two, at the ends): the gradient is the product of the other
    factors, exactly (no division by x), and the second derivative too."""
    for x in ([2.0, 0.0, 3.0, -1.5], [0.0, 0.0, 2.0, 5.0], [1.5, -2.0, 3.0, 0.0], [0.0, 4.0, 0.0, 0.5]):
        x = np.array(x)
        g = gd.grad(lambda t: ops.sum(ops.cumprod(t)))(Tensor(x)).asnumpy()
        want = [sum(np.prod(np.delete(x[:k + 1], i)) for k in range(i, len(x))) for i in range(len(x))]
        np.testing.assert_array_equal(g, want)
        h = gd.hessian(lambda t: ops.sum(ops.cumprod(t)))(Tensor(x)).asnumpy()
        want_h = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                if i != j:
                    want_h[i, j] = sum(np.prod(np.delete(x[:k + 1], [i, j])) for k in range(max(i, j), 4))
        np.testing.assert_array_equal(h, want_h)
    check_derivatives(lambda t: ops.cumprod(t, axis=1), np.array([[2.0, 0.0, 3.0, -1.5], [0.0, 0.0, 2.0, 5.0]]))


def test_cumsum_second_order_and_linearity():
    x = RNG.normal(size=(4,))
    h = gd.hessian(lambda t: ops.sum(ops.square(ops.cumsum(t))))(Tensor(x)).asnumpy()
    lower = np.tril(np.ones((4, 4)))
    np.testing.assert_allclose(h, 2 * lower.T @ lower, rtol=1e-14)


def test_logcumsumexp_gradient_is_a_softmax_of_the_prefix():
    x = np.array([0.5, -1.0, 2.0, 700.0, 690.0])
    g = gd.grad(lambda t: ops.sum(ops.logcumsumexp(t)))(Tensor(x)).asnumpy()
    want = np.zeros(5)
    for k in range(5):
        e = np.exp(x[:k + 1] - x[:k + 1].max())
        want[:k + 1] += e / e.sum()
    np.testing.assert_allclose(g, want, rtol=1e-12)


# ---------------------------------------------------------------- vmap

@pytest.mark.parametrize("name", ["var", "std", "cumsum", "cumprod", "cummax", "logcumsumexp", "argmax"])
def test_vmap_is_the_loop(name):
    fn = {"var": lambda t: ops.var(t, axis=0, ddof=1), "std": lambda t: ops.std(t),
          "cumsum": lambda t: ops.cumsum(t, axis=1), "cumprod": lambda t: ops.cumprod(t, axis=0),
          "cummax": lambda t: ops.cummax(t, axis=-1), "logcumsumexp": lambda t: ops.logcumsumexp(t),
          "argmax": lambda t: ops.argmax(t, keepdims=True)}[name]
    check_vmap(fn, X)
    batched = gd.vmap(fn, in_axes=1)(Tensor(X)).asnumpy()
    want = np.stack([fn(Tensor(X[:, i])).asnumpy() for i in range(X.shape[1])])
    np.testing.assert_allclose(batched, want, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- compiled vs interpreted

@pytest.mark.tvm
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_matches_interpreted(dtype):
    x = RNG.normal(size=(3, 9)).astype(dtype)
    x[0, 2] = NAN
    x[1, :3] = -INF
    x[2, 4] = 0.0

    def f(t):
        s = ops.sum(ops.mul(ops.cumprod(t, axis=1), ops.cumsum(t, axis=1)))
        return (ops.var(t, axis=1), ops.std(t, axis=0, ddof=1), ops.cumsum(t, axis=1), ops.cumsum(t, axis=0),
                ops.cumprod(t, axis=1), ops.cummax(t, axis=1), ops.cummin(t, axis=0), ops.logcumsumexp(t, axis=1),
                ops.argmax(t, keepdims=True), ops.argmin(t, axis=1, keepdims=True), s)

    tol = dict(rtol=2e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    with np.errstate(all="ignore"):
        both_backends(gd.jit(f), Tensor(x), **tol)
        clean = RNG.normal(size=(3, 9)).astype(dtype)
        clean[1, 3] = 0.0
        g = gd.grad(lambda t: ops.sum(ops.add(ops.add(ops.cumprod(t, axis=1), ops.logcumsumexp(t, axis=0)),
                                              ops.add(ops.cumsum(t, axis=1), ops.std(t, axis=1, keepdims=True)))))
        both_backends(gd.jit(g), Tensor(clean), **tol)
    ints = RNG.integers(-5, 5, (4, 6)).astype(np.int32)
    both_backends(gd.jit(lambda t: (ops.cumsum(t, axis=1), ops.cumprod(t, axis=0), ops.cummax(t))), Tensor(ints))


# ---------------------------------------------------------------- bools and integers (a reviewer's finds)

def test_bool_reductions_and_scans_keep_bool_and_compile():
    """max/min/cummax/cummin of bools are bools (they were int64), any/all as NumPy's (over no
    elements too), and argmax/argmin of bools compile (TVM's arg reducers had no bool start value:
    `argmax(x > 0)`, the first index where, failed to build)."""
    b = np.array([[True, False, True], [False, False, True]])
    e = np.zeros((0, 3), bool)
    f = np.array([[0.0, 1.0, np.nan], [0.0, 0.0, 0.0]])

    def fn(t, z, u):
        return (ops.max(t), ops.min(t, 0), ops.cummax(t, 1), ops.cummin(t, 0), ops.any(t), ops.all(t, 0),
                t.any(1, keepdims=True), ops.all(z, 0), ops.any(z), ops.any(u, 1), ops.all(u, 1),
                ops.argmax(t, 1), ops.argmin(t, 0), ops.argmax(u > 0.5), ops.argmin(t))
    want = (b.max(), b.min(0), np.maximum.accumulate(b, 1), np.minimum.accumulate(b, 0), b.any(), b.all(0),
            b.any(1, keepdims=True), e.all(0), e.any(), f.any(1), f.all(1), b.argmax(1), b.argmin(0),
            (f > 0.5).argmax(), b.argmin())
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            for got, w in zip(gd.jit(fn)(Tensor(b), Tensor(e), Tensor(f)), want):
                w = np.asarray(w)
                assert got.asnumpy().dtype == w.dtype and got.shape == w.shape
                np.testing.assert_array_equal(got.asnumpy(), w)
        finally:
            gd.set_backend("numpy")


def test_bool_index_add_einsum_and_sub():
    """index_add into a bool tensor is or and einsum of bools an or of ands, compiled as
    interpreted (both failed to build); bool - bool is refused everywhere, as by NumPy and JAX
    (compiled gave xor, the interpreter a bare TypeError)."""
    x, upd = np.array([False, True, False, False]), np.array([True, True, False])
    idx = np.array([0, 0, -1])
    a = RNG.random((3, 4)) < 0.4
    c = RNG.random((4, 2)) < 0.4
    want_ia = x.copy()
    np.logical_or.at(want_ia, idx, upd)
    got = both_backends(lambda u, i, v, p, q: (ops.index_add(u, i, v), ops.einsum("ij,jk->ik", p, q),
                                                ops.einsum("ij->", p), ops.einsum("ij,ij->j", p, p)),
                        Tensor(x), Tensor(idx), Tensor(upd), Tensor(a), Tensor(c), rtol=0, atol=0)
    for g, w in zip(got, (want_ia, np.einsum("ij,jk->ik", a, c), np.einsum("ij->", a), np.einsum("ij,ij->j", a, a))):
        assert g.dtype == np.bool_
        np.testing.assert_array_equal(g, w)
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            with pytest.raises(GraphadError, match="subtraction of bools"):
                gd.jit(lambda p, q: p - q)(Tensor(a), Tensor(a))
        finally:
            gd.set_backend("numpy")


def test_einsum_repeated_letters_take_diagonals():
    """'ii->i', 'ii' (the trace) and other repeated letters within an operand, as NumPy's einsum
    (they were refused), with gradients against JAX-free closed forms."""
    m = RNG.standard_normal((3, 3))
    t = RNG.standard_normal((3, 3, 2))
    v = RNG.standard_normal(3)
    for spec, args in (("ii->i", (m,)), ("ii", (m,)), ("iij->j", (t,)), ("ij,jj->i", (m[:2], m)),
                       ("ii,i->", (m, v)), ("iji->j", (t.transpose(0, 2, 1)[:, :2, :].copy(),))):
        got = both_backends(lambda *xs: ops.einsum(spec, *xs), *[Tensor(a) for a in args])[0]
        np.testing.assert_allclose(got, np.einsum(spec, *args), rtol=1e-12)
    g = gd.grad(lambda a: ops.einsum("ii", a))(Tensor(m)).asnumpy()
    np.testing.assert_array_equal(g, np.eye(3))
    with pytest.raises(GraphadError, match="lengths 2 and 3 for the repeated letter"):
        ops.einsum("ii->i", Tensor(np.ones((2, 3))))


def test_pad_keeps_int64_values_exact():
    """An int64 pad value went through float64: 2^53 + 1 lost its 1 and 2^63 - 1 became -2^63."""
    x = np.array([1, 2, 3], np.int64)
    for c in (2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63) + 1):
        want = np.pad(x, 1, constant_values=c)
        got = both_backends(lambda t: ops.pad(t, 1, constant_values=c), Tensor(x), rtol=0, atol=0)[0]
        np.testing.assert_array_equal(got, want)
        got = both_backends(lambda t: ops.pad_prim(t, (0,), (0,), (1,), c), Tensor(x), rtol=0, atol=0)[0]
        np.testing.assert_array_equal(got, [1, c, 2, c, 3])
    with pytest.raises(GraphadError, match="does not fit int32"):
        ops.pad(Tensor(np.ones(2, np.int32)), 1, constant_values=2 ** 40)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_mean_var_std_are_computed_in_float32_and_rounded_once(dtype):
    """mean, var and std of float16/bfloat16 average in float32 and round once, as NumPy's and
    JAX's: 100 values of 1000 in float16 have a mean of 1000, not inf (their float16 sum overflows;
    found by a helper's trial). Oracle: the float32 computation of NumPy rounded to the dtype, on
    both backends."""
    rng = np.random.default_rng(3)
    big = Tensor(np.full(100, 1000.0, np.float32)).astype(dtype)
    small = Tensor(rng.uniform(-3, 3, (7, 9)).astype(np.float32)).astype(dtype)
    cases = [(big, lambda v: ops.mean(v), lambda a: np.mean(a)),
             (big, lambda v: ops.std(v), lambda a: np.std(a)),
             (small, lambda v: ops.mean(v, 1), lambda a: np.mean(a, 1)),
             (small, lambda v: ops.var(v, 0, ddof=1), lambda a: np.var(a, 0, ddof=1)),
             (small, lambda v: ops.std(v, keepdims=True), lambda a: np.std(a, keepdims=True))]
    for x, fn, ref in cases:
        want = ref(np.asarray(x.asnumpy(), np.float32)).astype(getattr(gd, dtype).np)
        got = both_backends(lambda v: gd.jit(fn)(v), x, rtol=0, atol=0)[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_numpy_integer_axes_and_empty_softmax_and_bool_matmul():
    """NumPy integers are axes as ints are (np.int64(1) was 'not iterable' for sum, mean, max,
    var, logsumexp and 'must be an int' for argmax, softmax, median and a tuple of them); softmax
    over an empty axis is empty, as log_softmax's and JAX's (the max of nothing raised); bool
    matmul and dot are NumPy's (refused). A helper's trial against NumPy, JAX and torch."""
    import graphad as gd
    from graphad import ops
    from graphad.ops import linalg
    a = np.arange(12.0).reshape(3, 4)
    x = gd.Tensor(a)
    ax = np.int64(1)
    for name, got, want in (("sum", ops.sum(x, axis=ax), a.sum(1)), ("mean", ops.mean(x, axis=ax), a.mean(1)),
                            ("max", ops.max(x, axis=(np.int32(0), ax)), a.max()),
                            ("var", ops.var(x, axis=ax), a.var(1)), ("argmax", ops.argmax(x, axis=ax), a.argmax(1)),
                            ("median", ops.median(x, axis=ax), np.median(a, 1)),
                            ("norm", linalg.norm(x, axis=ax), np.linalg.norm(a, axis=1)),
                            ("expand_dims", ops.expand_dims(x, np.int64(0)), a[None])):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-12, err_msg=name)
    for f in (lambda t: ops.softmax(t, axis=0), gd.jit(lambda t: ops.softmax(t, axis=0))):
        assert f(gd.Tensor(np.zeros((0, 3), np.float32))).shape == (0, 3)
    p = np.array([[True, False, True], [False, False, False]])
    q = np.array([[True, False], [False, True], [False, False]])
    for f in (ops.matmul, gd.jit(ops.matmul)):
        r = f(gd.Tensor(p), gd.Tensor(q))
        assert r.dtype == gd.bool_
        np.testing.assert_array_equal(r.asnumpy(), p @ q)


def test_an_empty_max_of_bools_names_the_bool_operand():
    """max/min of a bool tensor over an empty axis: the error names the user's bool operand (it
    named the int64 cast the reduction runs on: `max(i64[2,0], ...)`, a reducers trial)."""
    from graphad.errors import ShapeError
    b = gd.Tensor(np.zeros((2, 0), bool))
    for f in (lambda: ops.max(b, 1), lambda: gd.jit(lambda x: ops.min(x, 1))(b)):
        with pytest.raises(ShapeError, match=r"(max|min)\(bool\[2,0\], 1\): max/min over an empty axis"):
            f()
    assert ops.max(gd.Tensor(np.array([[True, False]])), 1).numpy().tolist() == [True]


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_cumulative_sum_and_product_with_dtype_bool_are_or_and_and(axis):
    """NumPy's cumsum/cumprod with dtype=bool accumulate a logical or / and; graphad refused them
    with a message about the cast operand (a reducers trial)."""
    a = np.array([[0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 1.0, 1.0]])
    for fn, ref in ((ops.cumsum, np.cumsum), (ops.cumprod, np.cumprod)):
        want = ref(a, axis, dtype=bool)
        for got in (fn(gd.Tensor(a), axis, dtype="bool"),
                    gd.jit(lambda x: fn(x, axis, dtype="bool"), backend="tvm")(gd.Tensor(a))):
            assert got.dtype == gd.bool_
            np.testing.assert_array_equal(got.asnumpy(), want)
