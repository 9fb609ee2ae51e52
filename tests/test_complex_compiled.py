"""Compiled complex values (passes/complex_split.py, runtime/complex_io.py; docs/complex.md, "The
compiled backend"): the tvm backend compiles a complex graph as real/imaginary pairs.

Comparison rule, compiled against the NumPy interpreter (which is NumPy's and glibc's complex
code):
* bit-equal (NaN counts equal to NaN; the sign of zero must agree) where the compiled formula is
  NumPy's and uses the same real kernels: add, sub, neg, conj, real, imag, complex, mul, square,
  equal/not_equal/isnan/isinf/isfinite, where, astype, the shape ops, and in complex128 exp, sin
  and cos (glibc's algorithms over libm's exp, sin, cos, sinh, cosh, which the compiled float64 code
  calls too), special values included. mul and square are bit-equal because NumPy's SIMD loop
  rounds once in the same fused products as the compiled code (measured; docs/complex.md);
* within k eps |w| per part (w the interpreter's result, eps the part type's epsilon) for finite
  inputs elsewhere: 4 for div and reciprocal (Smith's algorithm, NumPy's without FMA, the
  compiled code's with it), 2 for abs (NumPy's own SIMD hypot against libm's), 8 for log, sqrt,
  tanh in complex128 (glibc's clog/csqrt/ctanh use extra-precise steps this code does not), 32 for
  the complex64 transcendental functions (TVM's float32 exp/sin/cos/tanh are polynomials within
  4 ulp, and each part is a product of two of them), and for pow (1 + |b log a|) times that;
  sums and products of matrices: the real kernels' own bound (n eps sum |terms|);
* special values (inf, NaN, -0.0 parts) outside the bit-equal set: the same class per part
  (NaN, +inf, -inf, finite), except the divergences the docs list, which are tested as such.
Subnormal parts are left out: compiled kernels may flush them to zero (docs/user_guide.md).

An independent oracle (mpmath at 60 digits) checks the compiled results on random finite inputs.
"""
from __future__ import annotations

import mpmath
import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.frontend.function import make_runner
from graphad.ir.interpret import interpret
from graphad.runtime.complex_io import ComplexPairRunner

pytestmark = pytest.mark.tvm

CDTYPES = [np.complex64, np.complex128]


def _part(cdt):
    return np.float32 if cdt == np.complex64 else np.float64


def special_grid(cdt, big=True):
    """Every pair of parts from a list of special and ordinary values (no subnormals)."""
    ft = _part(cdt)
    fi = np.finfo(ft)
    vals = [0.0, -0.0, 1.0, -1.5, 0.5, np.inf, -np.inf, np.nan, 3.0, -2.0, 30.0, 1e-5, 1e5,
            float(fi.tiny) * 3]
    if big:
        vals += [float(fi.max) / 2, 1e18, 400.0 if ft == np.float64 else 50.0]
    return np.array([complex(a, b) for a in vals for b in vals], cdt)


def same_bits(a, b):
    """Elementwise: equal with the same sign (zeros included), or both NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "c":
        return same_bits(a.real, b.real) & same_bits(a.imag, b.imag)
    if a.dtype.kind != "f":
        return a == b
    return ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))


def classes(a):
    """Per part: 0 finite, 1 NaN, 2 +inf, 3 -inf."""
    a = np.asarray(a)
    if a.dtype.kind == "c":
        return np.stack([classes(a.real), classes(a.imag)])
    return np.where(np.isnan(a), 1, np.where(a == np.inf, 2, np.where(a == -np.inf, 3, 0)))


def run_both(f, *arrays):
    """(interpreter's results, compiled results, runner) of f traced at `arrays`."""
    g = gd.make_graph(f)(*[gd.Tensor(a) for a in arrays])
    with np.errstate(all="ignore"):
        want = interpret(g, list(arrays))
    runner = make_runner(g, "tvm")
    assert isinstance(runner, ComplexPairRunner), f"not compiled: {runner!r}"
    got = [t.numpy() for t in runner([gd.Tensor(a) for a in arrays])]
    return want, got, runner


def assert_bits(want, got, what, inputs):
    ok = same_bits(want, got)
    if not ok.all():
        i = np.flatnonzero(~ok.reshape(-1))[:5]
        flat = [np.broadcast_to(x, ok.shape).reshape(-1)[i] for x in inputs]
        raise AssertionError(f"{what}: {np.count_nonzero(~ok)} differ; inputs {flat}, interpreter "
                             f"{np.asarray(want).reshape(-1)[i]}, compiled {np.asarray(got).reshape(-1)[i]}")


def assert_close_parts(want, got, k, what, scale=None):
    """|got - want| <= k eps |want| per part (|want| the complex modulus), where both are finite."""
    want, got = np.asarray(want), np.asarray(got)
    eps = np.finfo(want.real.dtype).eps
    mod = np.abs(want.astype(np.complex128)) if scale is None else scale
    fin = np.isfinite(want) & np.isfinite(mod)
    for part in (np.real, np.imag):
        w, g = part(want).astype(np.float64), part(got).astype(np.float64)
        bound = k * eps * mod
        with np.errstate(invalid="ignore"):
            bad = fin & ~(np.abs(g - w) <= bound) & ~same_bits(w, g)
        assert not bad.any(), (f"{what}: {np.count_nonzero(bad)} beyond {k} eps: want {w[bad][:4]}, got "
                               f"{g[bad][:4]}")


# ---------------------------------------------------------------- bit-equal primitives

def _exact_ops(cdt):
    ft = _part(cdt)
    other = np.complex64 if cdt == np.complex128 else np.complex128

    def f(z, w):
        return (z + w, z - w, -z, ops.conj(z), z * w, ops.square(z), ops.real(z), ops.imag(z),
                ops.complex(ops.imag(w), ops.real(z)), ops.equal(z, w), ops.not_equal(z, w),
                ops.isnan(z), ops.isinf(z), ops.isfinite(z), ops.where(ops.real(w) > 0, z, w),
                ops.astype(z, other), ops.astype(z, ft), ops.astype(z, bool),
                ops.astype(ops.real(w), cdt), z * 1.0, z ** 1)
    return f


@pytest.mark.parametrize("cdt", CDTYPES)
def test_elementwise_bit_equal_with_special_values(cdt):
    z = special_grid(cdt)
    w = np.roll(z[::-1], 5)
    want, got, _ = run_both(_exact_ops(cdt), z, w)
    for i, (a, b) in enumerate(zip(want, got)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_bits(a, b, f"{cdt.__name__} output {i}", [z, w])


@pytest.mark.parametrize("cdt", CDTYPES)
def test_shape_ops_bit_equal(cdt):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(cdt)
    z[0, 1] = complex(-0.0, np.nan)
    z[2, 3] = complex(np.inf, -0.0)
    idx = np.array([2, 0, 2])

    def f(a, i):
        return (ops.reshape(a, (12,)), ops.transpose(a), ops.broadcast_to(a, (2, 3, 4)), a[1:, ::2], a[1],
                ops.concat([a, a[:1]], 0), ops.pad(a, ((1, 0), (0, 2))), ops.flip(a, 1), ops.take(a, i, axis=0),
                ops.stack([a, ops.conj(a)]), ops.stop_gradient(a), ops.full((2,), 1.5 - 2j, a.dtype),
                ops.eye(3, dtype=a.dtype), ops.zeros((2, 2), a.dtype))
    want, got, _ = run_both(f, z, idx)
    for i, (a, b) in enumerate(zip(want, got)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert_bits(a, b, f"shape op {i}", [np.zeros(a.shape)])


def test_exp_sin_cos_complex128_bit_equal_with_special_values():
    """glibc's cexp, csin and ccos, case for case, over the same libm calls."""
    z = special_grid(np.complex128)
    want, got, _ = run_both(lambda z: (ops.exp(z), ops.sin(z), ops.cos(z)), z)
    for name, a, b in zip(("exp", "sin", "cos"), want, got):
        assert_bits(a, b, name, [z])


# ---------------------------------------------------------------- within a bound

_TOL_OPS = {  # name: (function, k for complex128, k for complex64)
    "div": (lambda z, w: z / w, 4, 4),
    "reciprocal": (lambda z, w: ops.reciprocal(z), 4, 4),
    "abs": (lambda z, w: ops.abs(z), 2, 2),
    "log": (lambda z, w: ops.log(z), 8, 32),
    "sqrt": (lambda z, w: ops.sqrt(z), 8, 32),
    "tanh": (lambda z, w: ops.tanh(z), 8, 32),
    "exp": (lambda z, w: ops.exp(z), 0, 32),
    "sin": (lambda z, w: ops.sin(z), 0, 32),
    "cos": (lambda z, w: ops.cos(z), 0, 32),
    "pow2": (lambda z, w: z ** 2, 4, 4),
    "pow3": (lambda z, w: z ** 3, 8, 8),
    "pow5": (lambda z, w: z ** 5, 16, 16),
    "pow-3": (lambda z, w: z ** -3, 16, 16),
}


@pytest.mark.parametrize("cdt", CDTYPES)
def test_transcendental_and_division_within_bounds(cdt):
    """Finite inputs (ordinary and huge/tiny magnitudes): within k eps |w|; every input of the
    grid (inf, NaN, -0.0 parts too): the same class per part, except where a product of finite
    parts overflows in z ** n (the compiled code's fused product rounds once: inf where NumPy
    rounds to inf first and gets NaN; docs/user_guide.md, FMA contraction)."""
    z = special_grid(cdt)
    w = np.roll(z[::-1], 5)
    names = list(_TOL_OPS)
    want, got, _ = run_both(lambda z, w: tuple(_TOL_OPS[n][0](z, w) for n in names), z, w)
    fin = np.isfinite(z) & np.isfinite(w)
    for n, a, b in zip(names, want, got):
        k = _TOL_OPS[n][1 if cdt == np.complex128 else 2]
        if k == 0:  # bit-equal (the test above)
            assert_bits(a, b, n, [z])
            continue
        assert_close_parts(a[fin], b[fin], k, f"{cdt.__name__} {n}")
        cls_ok = (classes(a) == classes(b)).all(axis=0)
        if n.startswith("pow"):  # overflow of a finite product decides inf or NaN by the rounding
            parts = np.stack([z.real, z.imag]).astype(np.float64)
            m = np.max(np.where(np.isfinite(parts), np.abs(parts), 0), axis=0)
            with np.errstate(over="ignore"):
                cls_ok |= m ** abs(int(n[3:])) > np.finfo(_part(cdt)).max / 4
        assert cls_ok.all(), (n, z[~cls_ok][:6], a[~cls_ok][:6], b[~cls_ok][:6])


@pytest.mark.parametrize("cdt", CDTYPES)
def test_pow_with_a_tensor_exponent(cdt):
    """A tensor exponent is exp(b log a) (C's cpow) for every b: within (1 + |b log a|) k eps of
    NumPy, which multiplies for integer b; b = 0 gives 1 and a = 0 gives 0 for Re b > 0, else NaN,
    as NumPy. Documented divergence: NumPy's integer-exponent path keeps an infinite or NaN part
    apart ((1 + nan j) ** 1 is 1 + nan j in NumPy, nan + nan j compiled)."""
    rng = np.random.default_rng(5)
    a = (rng.uniform(-2, 2, 64) + 1j * rng.uniform(-2, 2, 64)).astype(cdt)
    b = (rng.uniform(-3, 3, 64) + 1j * rng.uniform(-1, 1, 64)).astype(cdt)
    b[:8] = [2, -1, 3, 0, 0.5, 1, 1j, -2 + 0j]
    a[40:44] = [0, -0.0, 0, 0]
    b[40:44] = [1 - 2j, 2, -1, 1j]
    want, got, _ = run_both(lambda a, b: a ** b, a, b)
    want, got = want[0], got[0]
    k = 8 if cdt == np.complex128 else 32
    scale = np.abs(want) * (1 + np.abs(b * np.log(np.where(a == 0, 1, a))))
    assert_close_parts(want, got, k, "pow", scale=scale)
    assert_bits(want[40:44], got[40:44], "pow with a zero base", [a[40:44]])
    assert_bits(want[3], got[3], "b = 0", [a[3]])
    g = gd.make_graph(lambda a, b: a ** b)(gd.Tensor(np.array([1 + 1j], cdt)), gd.Tensor(np.array([1 + 0j], cdt)))
    z = np.array([complex(1, np.nan)], cdt)
    one = np.array([1 + 0j], cdt)
    got = make_runner(g, "tvm")([gd.Tensor(z), gd.Tensor(one)])[0].numpy()
    with np.errstate(invalid="ignore"):
        assert np.isnan(got.real) and np.isnan(got.imag) and interpret(g, [z, one])[0].real == 1


@pytest.mark.parametrize("cdt", CDTYPES)
def test_reductions_and_products_within_the_real_kernels_bound(cdt):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((5, 6)) + 1j * rng.standard_normal((5, 6))).astype(cdt)
    y = (rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3))).astype(cdt)

    def f(x, y):
        return (ops.sum(x), ops.sum(x, 0), ops.mean(x, 1), ops.cumsum(x, 1), x @ y,
                ops.einsum("ij,jk->ik", x, y), ops.dot(x[0], x[1]), ops.outer(x[0], y[:, 0]), ops.var(x))
    want, got, _ = run_both(f, x, y)
    eps = np.finfo(_part(cdt)).eps
    ax, ay = np.abs(x.astype(np.complex128)), np.abs(y.astype(np.complex128))
    scales = [ax.sum(), ax.sum(0), ax.sum(1) / 6, np.cumsum(ax, 1), 2 * ax @ ay, 2 * ax @ ay,
              2 * (ax[0] * ax[1]).sum(), 2 * np.outer(ax[0], ay[:, 0]), np.abs(x - x.mean()).__pow__(2).sum()]
    for i, (a, b, s) in enumerate(zip(want, got, scales)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.all(np.abs(b - a) <= 16 * eps * (np.asarray(s) + np.abs(a))), i


# ---------------------------------------------------------------- an independent oracle

def _mp(fn, *zs):
    with mpmath.workdps(60):
        return complex(fn(*[mpmath.mpc(complex(z)) for z in zs]))


@pytest.mark.parametrize("cdt", CDTYPES)
def test_against_mpmath(cdt):
    """Compiled results on random finite inputs against mpmath at 60 digits (exact, then rounded):
    within k eps |exact| + (for products) the cancellation allowance of each part."""
    rng = np.random.default_rng(11)
    n = 40
    z = ((rng.uniform(-3, 3, n) + 1j * rng.uniform(-3, 3, n)) * np.exp(rng.uniform(-4, 4, n))).astype(cdt)
    w = (rng.uniform(-3, 3, n) + 1j * rng.uniform(-3, 3, n)).astype(cdt)
    s = (rng.uniform(-3, 3, n) + 1j * rng.uniform(-3, 3, n)).astype(cdt)  # moderate: exp, sin, cos
    cases = [("mul", lambda z, w, s: z * w, lambda z, w, s: z * w),
             ("div", lambda z, w, s: z / w, lambda z, w, s: z / w),
             ("reciprocal", lambda z, w, s: ops.reciprocal(z), lambda z, w, s: 1 / z),
             ("abs", lambda z, w, s: ops.abs(z), lambda z, w, s: abs(z)),
             ("exp", lambda z, w, s: ops.exp(s), lambda z, w, s: mpmath.exp(s)),
             ("log", lambda z, w, s: ops.log(z), lambda z, w, s: mpmath.log(z)),
             ("sqrt", lambda z, w, s: ops.sqrt(z), lambda z, w, s: mpmath.sqrt(z)),
             ("sin", lambda z, w, s: ops.sin(s), lambda z, w, s: mpmath.sin(s)),
             ("cos", lambda z, w, s: ops.cos(s), lambda z, w, s: mpmath.cos(s)),
             ("tanh", lambda z, w, s: ops.tanh(s), lambda z, w, s: mpmath.tanh(s)),
             ("pow", lambda z, w, s: ops.pow(w, s), lambda z, w, s: mpmath.power(w, s)),
             ("square", lambda z, w, s: ops.square(z), lambda z, w, s: z * z)]
    want, got, _ = run_both(lambda z, w, s: tuple(c[1](z, w, s) for c in cases), z, w, s)
    eps = np.finfo(_part(cdt)).eps
    k = 8 if cdt == np.complex128 else 32
    for (name, _, ref), g in zip(cases, got):
        exact = np.array([_mp(ref, a, b, c) for a, b, c in zip(z, w, s)])
        if name in ("mul", "square"):  # each part: a sum of two rounded products
            zz = z.astype(np.complex128)
            ww = zz if name == "square" else w.astype(np.complex128)
            allowance = 2 * eps * (np.abs(zz.real * ww.real) + np.abs(zz.imag * ww.imag)
                                   + np.abs(zz.real * ww.imag) + np.abs(zz.imag * ww.real))
        elif name == "pow":
            allowance = k * eps * np.abs(exact) * np.abs(s.astype(np.complex128) * np.log(w.astype(np.complex128)))
        else:
            allowance = 0
        bound = k * eps * np.abs(exact) + allowance
        for part in (np.real, np.imag):
            err = np.abs(part(g).astype(np.float64) - part(exact))
            assert np.all(err <= bound), (name, cdt.__name__, np.max(err / np.maximum(bound, 1e-300)))


# ---------------------------------------------------------------- random fused programs

_UNARY = [lambda a: ops.exp(a * 0.3), lambda a: ops.sin(a), lambda a: ops.cos(a), lambda a: ops.tanh(a),
          lambda a: ops.sqrt(a), lambda a: ops.log(a + 3.0), ops.conj, lambda a: -a, lambda a: ops.square(a) * 0.25,
          lambda a: ops.reciprocal(a + 2.5), lambda a: ops.complex(ops.abs(a), ops.imag(a)),
          lambda a: ops.transpose(ops.flip(a, 0)) if a.ndim == 2 and a.shape[0] == a.shape[1] else a * 1j,
          lambda a: a ** 2]
_BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / (b + 3.0),
           lambda a, b: ops.where(ops.real(a) > ops.imag(b), a, b),
           lambda a, b: (a @ b) * 0.25]


def random_program(rng):
    """A random straight-line program over two complex (4, 4) inputs: 3 to 7 ops, then a sum."""
    steps = []
    for _ in range(int(rng.integers(3, 8))):
        if rng.random() < 0.5:
            steps.append(("u", int(rng.integers(len(_UNARY))), int(rng.integers(2))))
        else:
            steps.append(("b", int(rng.integers(len(_BINARY))), int(rng.integers(2)), int(rng.integers(2))))

    def prog(x, y):
        vals = [x, y]
        for s in steps:
            if s[0] == "u":
                vals.append(_UNARY[s[1]](vals[-1 - s[2]]))
            else:
                vals.append(_BINARY[s[1]](vals[-1 - s[2]], vals[-1 - s[3]]))
        return vals[-1], ops.sum(vals[-1], 0)
    return prog


@pytest.mark.parametrize("cdt", CDTYPES)
def test_random_programs_compiled_match_the_interpreter(cdt):
    """30 seeded random programs per dtype (60 in all), 10 compiled together per graph,
    within 64 eps of the interpreter relative to the result's magnitude (a few ops of up to 8 eps
    each, compounding through products)."""
    rng = np.random.default_rng(2026 + (cdt == np.complex64))
    x = (rng.uniform(-1, 1, (4, 4)) + 1j * rng.uniform(-1, 1, (4, 4))).astype(cdt)
    y = (rng.uniform(-1, 1, (4, 4)) + 1j * rng.uniform(-1, 1, (4, 4))).astype(cdt)
    progs = [random_program(rng) for _ in range(30)]
    eps = np.finfo(_part(cdt)).eps
    for k in range(0, 30, 10):
        group = progs[k:k + 10]
        want, got, _ = run_both(lambda x, y: tuple(o for p in group for o in p(x, y)), x, y)
        for i, (a, b) in enumerate(zip(want, got)):
            fin = np.isfinite(a)
            assert (classes(a) == classes(b)).all(), (k + i // 2)
            tol = 64 * eps * (np.max(np.abs(a[fin]), initial=0) + 1)
            assert np.all(np.abs(a[fin] - b[fin]) <= tol), (k + i // 2, np.max(np.abs(a[fin] - b[fin])) / tol)


# ---------------------------------------------------------------- derivatives and vmap

def _both_backends(fn, *args):
    out = {}
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        out[backend] = fn(*args)
    gd.set_backend("numpy")
    return out["numpy"], out["tvm"]


def _leaves(x):
    return [t.numpy() for t in gd.pytree.flatten(x)[0]]


def test_derivatives_compiled_match_the_interpreter(monkeypatch, capsys):
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    rng = np.random.default_rng(13)
    z = gd.Tensor((rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype(np.complex128))
    w = gd.Tensor((rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))).astype(np.complex128))

    def loss(z, w):  # real loss of complex parameters
        h = ops.tanh(w @ z) * ops.exp(ops.conj(z) * 0.5)
        return ops.sum(ops.abs(h) ** 2) + ops.real(ops.sum(ops.log(z * z + 4.0)))

    def holo(z):
        return ops.sin(z) * ops.exp(z) / (z + 3.0) + z ** 3

    cases = [
        ("grad", lambda: gd.grad(loss, argnums=(0, 1))(z, w)),
        ("jacfwd", lambda: gd.jacfwd(holo, holomorphic=True)(z)),
        ("jacrev", lambda: gd.jacrev(holo, holomorphic=True)(z)),
        ("vjp", lambda: gd.vjp(holo, z)[1](gd.Tensor(np.arange(5) * (1 - 0.5j)))),
        ("jvp", lambda: gd.jvp(holo, (z,), (gd.Tensor(np.ones(5) * (0.25 + 1j)),))),
    ]
    for name, fn in cases:
        a, b = _both_backends(fn)
        for x, y in zip(_leaves(a), _leaves(b)):
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-13, err_msg=name)
    err = capsys.readouterr().err
    assert "compiled with its complex values as real/imaginary pairs" in err
    assert "runs on the NumPy interpreter" not in err


def test_vmap_compiled_matches_a_loop():
    rng = np.random.default_rng(17)
    zs = (rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3))).astype(np.complex64)
    m = gd.Tensor((rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))).astype(np.complex64))

    def f(z):
        return ops.sum(ops.exp(m @ z) / (z * z + 2.0))

    gd.set_backend("tvm")
    try:
        got = gd.vmap(f)(gd.Tensor(zs)).numpy()
        loop = np.array([gd.jit(f)(gd.Tensor(z)).numpy() for z in zs])
    finally:
        gd.set_backend("numpy")
    np.testing.assert_allclose(got, loop, rtol=1e-5)
    want = np.array([np.sum(np.exp(m.numpy() @ z) / (z * z + 2.0)) for z in zs.astype(np.complex128)])
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------- compiled, or interpreted with the reason

def test_covered_graph_is_compiled_and_saves(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    from graphad.runtime.aot import read_artifact_manifest
    from graphad.runtime.executable import Executable

    def f(z, x):
        return ops.exp(z) * x, ops.abs(z) + x

    z = gd.Tensor(np.array([1 + 2j, -0.5j, complex(np.inf, 0)], np.complex64))
    x = gd.Tensor(np.array([1.0, 2.0, 3.0], np.float32))
    gd.set_backend("tvm")
    try:
        c = gd.jit(f).lower(z, x).compile()
    finally:
        gd.set_backend("numpy")
    assert isinstance(c.runner, ComplexPairRunner) and isinstance(c.runner.inner, Executable)
    assert c.runner.inputs == ["complex64", None] and c.runner.outputs == ["complex64", None]
    assert c.runner.inner.in_types == ["f32[3]", "f32[3]", "f32[3]"]
    err = capsys.readouterr().err
    assert "@f compiled with its complex values as real/imaginary pairs (1 complex inputs, 1 complex outputs)" in err
    want = gd.jit(f, backend="numpy")(z, x)
    got = c(z, x)
    for a, b in zip(want, got):
        assert a.dtype is b.dtype
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=4e-7)
    path = str(tmp_path / "f.graphad")
    c.save(path)
    assert read_artifact_manifest(path)["manifest"]["complex_pairs"] == {"inputs": ["complex64", None],
                                                                         "outputs": ["complex64", None]}
    loaded = gd.load(path)
    for a, b in zip(loaded(z, x), got):
        assert a.dtype is b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_uncovered_primitive_falls_back_with_the_reason(monkeypatch, capsys):
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    a = np.array([[2 + 1j, 0.5], [1j, 3 - 1j]], np.complex128)

    def f(m):
        return ops.linalg.det(m) * 2.0

    gd.set_backend("tvm")
    try:
        c = gd.jit(f).lower(gd.Tensor(a)).compile()
        got = c(gd.Tensor(a)).numpy()
    finally:
        gd.set_backend("numpy")
    err = capsys.readouterr().err
    assert "@f runs on the NumPy interpreter, not compiled" in err
    assert "det(c128[2,2]) -> c128[]: no real-pair rule" in err
    assert "det(c128[2,2])" in c.runner.host_reason
    np.testing.assert_allclose(got, 2 * np.linalg.det(a), rtol=1e-14)
    with pytest.raises(gd.errors.GraphadError, match="NumPy interpreter, not compiled"):
        c.save("/tmp/never-written.graphad")


def test_split_graph_holds_no_complex_value():
    from graphad.passes.complex_split import has_complex, split_complex, unsupported
    from graphad.ir.verify import verify
    z = gd.Tensor(np.ones((2, 3), np.complex128))
    g = gd.make_graph(lambda z: (ops.sqrt(z) @ ops.transpose(z), ops.real(z) * 2.0))(z)
    assert unsupported(g) is None
    s = split_complex(g)
    verify(s.graph)
    assert not has_complex(s.graph)
    assert s.inputs == ["complex128"] and s.outputs == ["complex128", None]
    assert s.graph.input_names == ["z.re", "z.im"]
    assert [str(v.type) for v in s.graph.outputs] == ["f64[2,2]", "f64[2,2]", "f64[2,3]"]


def test_documented_divergences():
    """docs/complex.md lists these differences from the interpreter; they hold as stated."""
    z = np.array([complex(1e300, np.inf)])
    want, got, _ = run_both(lambda z: z ** 2, z)
    assert np.isnan(want[0].real[0]) and want[0].imag[0] == np.inf      # NumPy rounds 1e300^2 to inf first
    assert got[0].real[0] == -np.inf and got[0].imag[0] == np.inf       # fused: 1e600 - inf = -inf
    neg_nan = np.copysign(np.nan, -1.0)
    z = np.array([complex(-np.inf, neg_nan)])
    want, got, _ = run_both(ops.exp, z)
    assert want[0].real[0] == 0 and np.signbit(want[0].imag[0])        # glibc: copysign(0, -nan)
    assert got[0].real[0] == 0 and got[0].imag[0] == 0 and not np.signbit(got[0].imag[0])


# ---------------------------------------------------------------- the functions NumPy builds from the above

# name: (function, k for complex128 (0: bit-equal), k for complex64 (0: bit-equal)). The interpreter
# computes these complex64 values in complex128 and rounds once (prims/elementwise.py), and so does
# the compiled code: complex64 is bit-equal where complex128 is, else within one rounding (1 eps).
_NEW_OPS = {
    "sinh": (ops.sinh, 0, 0),        # -i sin(iz): glibc's csinh is its csin with the parts exchanged
    "cosh": (ops.cosh, 0, 0),        # cos(y - ix)
    "exp2": (ops.exp2, 0, 0),        # NumPy's nc_exp2: cexp(z log 2)
    "log1p": (ops.log1p, 0, 0),      # NumPy's nc_log1p: log(hypot(x + 1, y)) + i atan2(y, x + 1)
    "tan": (ops.tan, 8, 1),          # -i tanh(iz): tanh's bound
    "log2": (ops.log2, 8, 1),        # NumPy's nc_log2: clog times log2(e): log's bound
    "log10": (ops.log10, 8, 1),
    "expm1": (ops.expm1, 4, 1),      # NumPy's nc_expm1; the compiled expm1 of a real is Kahan's
    "sigmoid": (ops.sigmoid, 8, 1),  # the interpreter's two forms: cexp, then Smith's division
}


@pytest.mark.parametrize("cdt", CDTYPES)
def test_numpy_built_functions_against_the_interpreter(cdt):
    """sinh, cosh, tan, exp2, log2, log10, log1p, expm1, sigmoid on the special grid and random
    finite inputs: bit-equal (k = 0), else within k eps |w| per part for finite inputs; wherever a
    part of the input is inf or NaN, bit-equal (the sign of zero too) for all of them."""
    rng = np.random.default_rng(19)
    r = (rng.uniform(-3, 3, 200) + 1j * rng.uniform(-3, 3, 200)) * np.exp(rng.uniform(-3, 3, 200))
    z = np.concatenate([special_grid(cdt), r.astype(cdt)])
    names = list(_NEW_OPS)
    want, got, _ = run_both(lambda z: tuple(_NEW_OPS[n][0](z) for n in names), z)
    fin = np.isfinite(z)
    for n, a, b in zip(names, want, got):
        assert a.dtype == b.dtype == cdt and a.shape == b.shape
        k = _NEW_OPS[n][1 if cdt == np.complex128 else 2]
        if k == 0:
            assert_bits(a, b, f"{cdt.__name__} {n}", [z])
            continue
        assert_bits(a[~fin], b[~fin], f"{cdt.__name__} {n}, non-finite parts", [z[~fin]])
        assert_close_parts(a[fin], b[fin], k, f"{cdt.__name__} {n}")
        assert (classes(a) == classes(b)).all(), n


@pytest.mark.parametrize("cdt", CDTYPES)
def test_numpy_built_functions_against_mpmath(cdt):
    """Compiled results on random finite inputs against mpmath at 60 digits: within 8 eps |exact|,
    plus the absolute error NumPy's own formulas carry: expm1's real part cancels (8 eps (|e^z| + 1)),
    log1p's is log of the rounded |1 + z| (8 eps (1 + |z| / |1 + z|)); prod: 4 m eps prod |z_i|."""
    rng = np.random.default_rng(23)
    n = 24
    z = ((rng.uniform(-3, 3, n) + 1j * rng.uniform(-3, 3, n)) * np.exp(rng.uniform(-4, 4, n))).astype(cdt)
    s = (rng.uniform(-3, 3, n) + 1j * rng.uniform(-3, 3, n)).astype(cdt)
    h = (s * 0.5).astype(cdt)  # sigmoid: away from its poles at +-i pi
    p = (rng.uniform(-1.5, 1.5, (n, 5)) + 1j * rng.uniform(-1.5, 1.5, (n, 5))).astype(cdt)
    args = {"z": z, "s": s, "h": h}
    cases = [("sinh", ops.sinh, mpmath.sinh, "s"), ("cosh", ops.cosh, mpmath.cosh, "s"),
             ("tan", ops.tan, mpmath.tan, "s"), ("exp2", ops.exp2, lambda v: mpmath.power(2, v), "s"),
             ("log2", ops.log2, lambda v: mpmath.log(v, 2), "z"), ("log10", ops.log10, mpmath.log10, "z"),
             ("log1p", ops.log1p, lambda v: mpmath.log(1 + v), "s"), ("expm1", ops.expm1, mpmath.expm1, "s"),
             ("sigmoid", ops.sigmoid, lambda v: 1 / (1 + mpmath.exp(-v)), "h")]
    want, got, _ = run_both(lambda z, s, h, p: tuple(c[1]({"z": z, "s": s, "h": h}[c[3]]) for c in cases)
                            + (ops.prod(p, 1),), z, s, h, p)
    eps = np.finfo(_part(cdt)).eps
    for (name, _, ref, key), g in zip(cases, got):
        x = args[key]
        exact = np.array([_mp(ref, v) for v in x])
        x128 = x.astype(np.complex128)
        bound = 8 * eps * np.abs(exact)
        if name == "expm1":
            bound += 8 * eps * (np.abs(np.exp(x128)) + 1)
        elif name == "log1p":
            bound += 8 * eps * (1 + np.abs(x128) / np.abs(1 + x128))
        for part in (np.real, np.imag):
            err = np.abs(part(g).astype(np.float64) - part(exact))
            assert np.all(err <= bound), (name, cdt.__name__, np.max(err / bound))
    exact = np.array([_mp(lambda *v: mpmath.fprod(v), *row) for row in p])
    bound = 4 * 5 * eps * np.prod(np.abs(p.astype(np.complex128)), axis=1)
    for part in (np.real, np.imag):
        assert np.all(np.abs(part(got[-1]).astype(np.float64) - part(exact)) <= bound), "prod"


def test_prod_and_norms_compiled():
    """prod is NumPy's sequential product in the C order of the reduced axes: bit-equal where NumPy
    reduces with its (fused) array loop (every axis but the last, special values included), within
    2 m eps prod |z_i| where it reduces the last axis with its unfused scalar loop. The norms of a
    complex tensor are real reductions of |z| or Re^2 + Im^2: within 16 m eps of the interpreter.
    One graph: the random tensor complex128, the special values complex64."""
    cdt = np.complex128
    rng = np.random.default_rng(29)
    x = (rng.standard_normal((2, 3, 4)) + 1j * rng.standard_normal((2, 3, 4))).astype(cdt)
    g = special_grid(np.complex64, big=False)
    pair = np.stack([g, np.roll(g[::-1], 5)])  # prod over axis 0: 1 z w elementwise
    axes = [(0,), (1,), (2,), (0, 2), None]
    la = ops.linalg

    def f(x, pair):
        m = x[0]
        return tuple(ops.prod(x, a) for a in axes) + (ops.prod(x, 1, keepdims=True), ops.prod(x[:, :0], 1),
                                                      ops.prod(pair, 0),
                                                      la.norm(x), la.norm(m, "fro"), la.norm(m, 1), la.norm(m, -np.inf),
                                                      la.vector_norm(x, ord=3), la.vector_norm(x, ord=np.inf),
                                                      la.vector_norm(x, axis=2))
    want, got, _ = run_both(f, x, pair)
    eps = np.finfo(_part(cdt)).eps
    ax = np.abs(x.astype(np.complex128))
    for i, a in enumerate(axes):
        w, c = want[i], got[i]
        assert w.shape == c.shape and w.dtype == c.dtype == cdt
        if a is not None and 2 not in a:
            assert_bits(w, c, f"prod over {a}", [np.zeros(w.shape)])
        m = x.size // w.size
        bound = 2 * m * eps * np.prod(ax, axis=a)
        for part in (np.real, np.imag):
            assert np.all(np.abs(part(c).astype(np.float64) - part(w)) <= bound), a
    assert_bits(want[5], got[5], "prod keepdims", [np.zeros(want[5].shape)])
    assert_bits(want[6], got[6], "prod of no elements", [np.zeros(want[6].shape)])
    assert_bits(want[7], got[7], "prod of special values over axis 0", [g])
    for i, (w, c) in enumerate(zip(want[8:], got[8:])):
        assert w.dtype == c.dtype and w.shape == c.shape, i
        np.testing.assert_allclose(c, w, rtol=16 * 24 * eps, err_msg=f"norm {i}")


def test_numpy_built_functions_derivatives_compiled(monkeypatch, capsys):
    """f'(z) through jacfwd (the derivatives: cosh, sinh, 1 + tan^2, ...), a vjp of prod and the
    gradient of a norm: compiled against the interpreter, and every graph compiled."""
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    rng = np.random.default_rng(31)
    z = gd.Tensor((rng.uniform(-1, 1, 4) + 1j * rng.uniform(-1, 1, 4)).astype(np.complex128))
    m = gd.Tensor((rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex128))

    def holo(z):
        return (ops.sinh(z) * ops.tan(z) + ops.log1p(z) * ops.expm1(z) + ops.sigmoid(z) / ops.cosh(z)
                + ops.exp2(z) - ops.log2(z + 2.0) + ops.log10(z + 3.0))

    def f(z, m):
        return (gd.jacfwd(holo, holomorphic=True)(z),
                gd.vjp(lambda m: ops.prod(m, 1), m)[1](gd.Tensor(np.array([1, 1j, -2], np.complex128))),
                gd.grad(lambda m: ops.linalg.norm(m) + ops.linalg.vector_norm(m, ord=1))(m))
    a, b = _both_backends(lambda: gd.jit(f)(z, m))
    for i, (x, y) in enumerate(zip(_leaves(a), _leaves(b))):
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-13, err_msg=str(i))
    err = capsys.readouterr().err
    assert "compiled with its complex values as real/imaginary pairs" in err
    assert "runs on the NumPy interpreter" not in err


@pytest.mark.parametrize("spec,shapes", [("ii->", [(4, 4)]), ("ij->ji", [(3, 4)]), ("ij->i", [(3, 4)]),
                                         ("ii->i", [(4, 4)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
                                         ("i,i,i->", [(5,), (5,), (5,)]), ("ab,bc,cd,da->", [(2, 3), (3, 2), (2, 2), (2, 2)])])
def test_einsum_of_one_and_of_several_complex_operands(spec, shapes):
    """The compiled rule of a complex einsum took two operands only: one (a trace, a transpose)
    or three raised ValueError under jit and grad (a helper's trial). Values against np.einsum in
    complex128; the gradient of a real loss against the interpreter's, both backends."""
    rng = np.random.default_rng(sum(map(ord, spec)))
    zs = [(rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex128) for s in shapes]
    f = gd.jit(lambda *t: ops.einsum(spec, *t))
    for got in _both_backends(f, *map(gd.Tensor, zs)):
        np.testing.assert_allclose(got.numpy(), np.einsum(spec, *zs), rtol=1e-12, atol=1e-12)
    g = gd.grad(lambda *t: ops.sum(ops.abs(ops.einsum(spec, *t)) ** 2), argnums=tuple(range(len(zs))))
    a, b = _both_backends(g, *map(gd.Tensor, zs))
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_allclose(y, x, rtol=1e-11, atol=1e-12)


def test_pad_takes_a_complex_fill():
    """ops.pad of a complex tensor with a complex constant_values (float() refused it; NumPy's and
    jnp.pad's value), compiled and interpreted, and saved."""
    z = np.array([1 + 2j, -3j], np.complex128)
    f = gd.jit(lambda t: ops.pad(t, 1, constant_values=1 - 1j))
    for got in _both_backends(f, gd.Tensor(z)):
        np.testing.assert_array_equal(got.numpy(), np.pad(z, 1, constant_values=1 - 1j))
