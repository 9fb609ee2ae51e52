"""Compiled code gives the interpreter's answers where kernels fuse, and keeps IEEE 754 semantics.

Regression tests for issue 11's compiler defects, each of which returned silently wrong results
on the commit before its fix:
  1. slice -> elementwise -> pad (a vectorized Select read out of bounds: garbage rows), and what
     it broke (jacrev of a slice, gradients of strided slices and finite differences, max-pool
     gradients, vjp-of-vjp of prod, a total-variation denoiser);
  2. simplify folded a user's x * 0 to 0 (NaN and inf lost);
  3. the mixed second derivative of pow at y == 0 was 0 (the other order gives 1/x);
  5. elementwise chains (sin(sin(sin(x)))) grew the kernel code exponentially;
  6. IEEE deviations from rewrites, graphad's and TVM's own (x @ eye, logsumexp at inf,
     1/(x + 0.0) at -0.0, (x + x) - x, e == e, NaN != NaN, x * zeros).
Compiled results run under poisoned memory (graphad.testing.poisoned), twice on fresh buffers,
and are compared bit for bit in kind (NaN, inf, signed zero) with the NumPy interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.testing import poisoned

pytestmark = pytest.mark.tvm


def _leaves(r):
    if isinstance(r, gd.Tensor):
        return [r.asnumpy()]
    out = []
    for e in r:
        out.extend(_leaves(e))
    return out


def _interpreted(fn, *args):
    gd.set_backend("numpy")
    with np.errstate(all="ignore"):
        return _leaves(fn(*args))


def _compiled(fn, *args):
    """fn staged with gd.jit under poisoned memory; called twice, the calls must agree."""
    gd.set_backend("tvm")
    with poisoned():
        staged = gd.jit(fn)
        first = _leaves(staged(*args))
        second = _leaves(staged(*args))
    for a, b in zip(first, second):
        assert_same(a, b, "two calls of one executable")
    return first


def assert_same(got, want, what="", rtol=2e-6, atol=1e-6):
    """Equal up to rounding; NaN where NaN, inf where inf, and the sign of every zero."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.dtype, got.shape, want.shape)
    if want.dtype.name == "bfloat16":  # ml_dtypes' type is no np.floating: compared as float32 (exact)
        got, want = got.astype(np.float32), want.astype(np.float32)
    if not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN positions")
    g, w = got[~nan], want[~nan]
    np.testing.assert_array_equal(np.isinf(g), np.isinf(w), err_msg=f"{what}: inf positions")
    np.testing.assert_array_equal(g[np.isinf(w)], w[np.isinf(w)], err_msg=f"{what}: inf signs")
    zero = w == 0
    np.testing.assert_array_equal(np.signbit(g[zero]), np.signbit(w[zero]), err_msg=f"{what}: signs of zeros")
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=what)


def check(fn, *args, **tol):
    for k, (c, i) in enumerate(zip(_compiled(fn, *args), _interpreted(fn, *args))):
        assert_same(c, i, f"output {k}", **tol)


def _t(a, dtype=np.float64):
    return gd.Tensor(np.asarray(a, dtype))


# ---------------------------------------------------------------- 1. fused slices and pads

def test_slice_mul_pad():
    x = _t(np.arange(10.).reshape(2, 5))
    got = _compiled(lambda x: ops.pad(x[:, 1:] * 2, ((0, 0), (1, 0))), x)[0]
    np.testing.assert_array_equal(got, [[0, 2, 4, 6, 8], [0, 12, 14, 16, 18]])


def test_pad_slice_pad():
    y = _t(np.arange(1., 9.))
    got = _compiled(lambda x: ops.pad(ops.pad(x[:7], (1, 0))[:7], (1, 0)), y)[0]
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 3, 4, 5, 6])


def test_padded_eye_plus_input():
    got = _compiled(lambda x: ops.pad(ops.eye(3), ((0, 0), (1, 0))) + x, ops.zeros((3, 4)))[0]
    np.testing.assert_array_equal(got, np.pad(np.eye(3), ((0, 0), (1, 0))))


def test_jacrev_of_a_slice():
    x = _t(np.arange(1., 6.))
    got = _compiled(gd.jacrev(lambda x: x[1:]), x)[0]
    np.testing.assert_array_equal(got, np.eye(5)[1:])


def test_grad_of_strided_slices():
    x = _t(np.random.default_rng(0).standard_normal((3, 5, 6)))
    got = _compiled(gd.grad(lambda x: (x[:, 1::2, 1::2] ** 2).sum()), x)[0]
    want = np.zeros((3, 5, 6))
    want[:, 1::2, 1::2] = 2 * x.asnumpy()[:, 1::2, 1::2]
    assert_same(got, want)


def test_grad_of_finite_differences():
    w = _t(np.random.default_rng(1).standard_normal((4, 7)))
    check(gd.grad(lambda W: ((W[:, 1:] - W[:, :-1]) ** 2).sum()), w)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 0), (3, 2, 1), (2, 1, 1), (3, 1, 1)])
def test_max_pool_gradient(kernel, stride, padding):
    # distinct values: no ties, so the gradient is defined everywhere
    x = _t(np.random.default_rng(2).permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0, np.float32)
    check(gd.grad(lambda x: (ops.max_pool2d(x, kernel, stride, padding) ** 2).sum()), x, rtol=1e-5)


def test_transpose_reshape_flip():
    # TVM 0.27 lowers floordiv/floormod of a descending index wrongly: the reshape is not inlined
    # into the flip (this is what vjp-of-vjp of prod over axes (0, 2) computes)
    x = _t(np.arange(24.).reshape(2, 3, 4))
    got = _compiled(lambda x: ops.flip(ops.reshape(ops.transpose(x, (1, 0, 2)), (3, 8)), 1), x)[0]
    np.testing.assert_array_equal(got, np.flip(np.arange(24.).reshape(2, 3, 4).transpose(1, 0, 2).reshape(3, 8), 1))


def test_vjp_of_vjp_of_prod():
    x = _t(np.random.default_rng(3).uniform(0.5, 1.5, (2, 3, 4)))

    def f(x):
        out, pull = gd.vjp(lambda x: ops.prod(x, axis=(0, 2)), x)
        (g,) = pull(ops.ones_like(out))
        return (g * g).sum()
    check(gd.grad(f), x, rtol=1e-9)


def test_total_variation_denoiser_is_deterministic():
    rng = np.random.default_rng(4)
    noisy = _t(rng.standard_normal((16, 16)), np.float32)

    def energy(u):
        dx = u[:, 1:] - u[:, :-1]
        dy = u[1:, :] - u[:-1, :]
        return ((u - noisy) ** 2).sum() + 0.1 * (ops.sqrt(dx ** 2 + 1e-3).sum() + ops.sqrt(dy ** 2 + 1e-3).sum())
    grad = gd.grad(energy)
    want = _interpreted(grad, noisy)[0]
    gd.set_backend("tvm")
    with poisoned():
        staged = gd.jit(grad)
        for _ in range(20):
            assert_same(staged(noisy).asnumpy(), want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- 2, 6. IEEE semantics

IEEE_VALUES = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1.5, -3.0, 7.0])

IEEE_PROGRAMS = {
    "1 + x * 0": lambda x: 1 + x * 0,
    "x * zeros": lambda x: x * ops.zeros((8,), dtype=x.dtype),
    "x + zeros": lambda x: x + ops.zeros((8,), dtype=x.dtype),
    "zeros - x": lambda x: ops.zeros((8,), dtype=x.dtype) - x,
    "x - full(-0.0)": lambda x: x - ops.full((8,), -0.0, dtype=x.dtype),
    "1 / (x + 0.0)": lambda x: 1 / (x + 0.0),
    "(x + x) - x": lambda x: (x + x) - x,
    "(x + 1) - 1": lambda x: (x + 1.0) - 1.0,
    "where(x > 0, 2x, x) - x": lambda x: ops.where(x > 0, x * 2, x) - x,
    "exp(x) - exp(x)": lambda x: ops.exp(x) - ops.exp(x),
    "exp(x) == exp(x)": lambda x: ops.equal(ops.exp(x), ops.exp(x)),
    "exp(x) != exp(x)": lambda x: ops.not_equal(ops.exp(x), ops.exp(x)),
    "x != 1": lambda x: ops.not_equal(x, 1.0),
    "not (x < 0)": lambda x: ops.logical_not(x < 0),
    "not (x == 0)": lambda x: ops.logical_not(x == 0),
    "not (x != 0)": lambda x: ops.logical_not(x != 0),
    "astype bool": lambda x: ops.astype(x, "bool"),
    "x / 3": lambda x: x / ops.full((8,), 3.0, dtype=x.dtype),
    "x @ eye": lambda x: ops.matmul(ops.reshape(x, (1, 8)), ops.eye(8, dtype=x.dtype)),
    "eye * x": lambda x: ops.eye(8, dtype=x.dtype) * x,
    "relu": ops.relu,
    "x * 1": lambda x: x * 1.0,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(IEEE_PROGRAMS))
def test_ieee_semantics_compiled_and_interpreted(name, dtype):
    x = _t(IEEE_VALUES, dtype)
    fn = IEEE_PROGRAMS[name]
    want = _interpreted(fn, x)
    with np.errstate(all="ignore"):  # NumPy evaluated directly: an oracle that is not graphad
        direct = {"1 + x * 0": lambda v: 1 + v * 0, "(x + x) - x": lambda v: (v + v) - v,
                  "1 / (x + 0.0)": lambda v: 1 / (v + 0.0),
                  "x @ eye": lambda v: v.reshape(1, 8) @ np.eye(8, dtype=v.dtype)}.get(name)
        if direct is not None:
            assert_same(want[0], direct(x.asnumpy()).astype(dtype), "interpreter vs NumPy")
    check(fn, x)


def test_user_mul_by_zero_keeps_nan_and_inf():
    x = _t([np.nan, np.inf, -np.inf, 2.0])
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        got = gd.jit(lambda x: 1 + x * 0)(x).asnumpy()
        assert np.isnan(got[:3]).all() and got[3] == 1.0, backend


def test_gradient_multiplied_by_zero_keeps_nan():
    # d/dx (0 * log(x)) at 0 is 0 * (1/0) = NaN in IEEE arithmetic (JAX and PyTorch agree)
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        got = gd.grad(lambda x: 0.0 * ops.log(x))(_t(0.0)).asnumpy()
        assert np.isnan(got), backend


def test_logsumexp_at_infinity():
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        f = gd.jit(lambda x: ops.logsumexp(x))
        assert f(_t([np.inf, 1.0])).asnumpy() == np.inf, backend
        assert f(_t([-np.inf, -np.inf])).asnumpy() == -np.inf, backend
        assert np.isnan(f(_t([np.nan, 1.0])).asnumpy()), backend
        np.testing.assert_allclose(f(_t([1.0, 2.0])).asnumpy(), np.log(np.e + np.e ** 2))
    g = gd.grad(lambda x: ops.logsumexp(x))(_t([2.0, 1.0])).asnumpy()
    np.testing.assert_allclose(g, np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum())


def test_jacobian_with_an_infinite_factor_agrees_across_backends():
    # the basis is multiplied through as JAX's and torch.func's vmapped VJPs do: 0 * inf = NaN
    # off the diagonal in the column of the infinite factor, compiled and interpreted alike
    # (jacrev: cotangent rows e_i * c, NaN down column 0; jacfwd: tangent columns e_j * c, NaN
    # along row 0)
    c = _t([np.inf, 2.0, 3.0])
    for mode, nan_at in ((gd.jacrev, (slice(1, None), 0)), (gd.jacfwd, (0, slice(1, None)))):
        want = np.diag([np.inf, 2.0, 3.0])
        want[nan_at] = np.nan
        for backend in ("numpy", "tvm"):
            gd.set_backend(backend)
            assert_same(mode(lambda x: x * c)(_t([1.0, 1.0, 1.0])).asnumpy(), want, f"{mode.__name__} {backend}")


# ---------------------------------------------------------------- 3. pow's mixed derivative

@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_pow_mixed_second_derivative_at_zero_exponent(backend):
    gd.set_backend(backend)
    xy = gd.grad(gd.grad(ops.pow, 0), 1)(4.0, 0.0)
    yx = gd.grad(gd.grad(ops.pow, 1), 0)(4.0, 0.0)
    assert float(xy.asnumpy()) == pytest.approx(0.25) and float(yx.asnumpy()) == pytest.approx(0.25)
    # first derivatives keep their special points
    assert float(gd.grad(ops.pow, 0)(0.0, 0.0).asnumpy()) == 0.0
    assert float(gd.grad(ops.pow, 0)(3.0, 2.0).asnumpy()) == pytest.approx(6.0)
    assert float(gd.grad(ops.pow, 1)(0.0, 2.0).asnumpy()) == 0.0


def test_pow_hessian_is_symmetric_against_finite_differences():
    def f(v):
        return ops.pow(v[0], v[1])
    for point in ([4.0, 0.0], [2.5, 1.5], [0.5, -1.0]):
        h = gd.hessian(f)(_t(point)).asnumpy()
        np.testing.assert_allclose(h, h.T, rtol=1e-12)
        eps = 1e-4
        x, y = point
        fd = ((x + eps) ** (y + eps) - (x + eps) ** (y - eps) - (x - eps) ** (y + eps)
              + (x - eps) ** (y - eps)) / (4 * eps * eps)
        np.testing.assert_allclose(h[0, 1], fd, rtol=1e-5)


# ---------------------------------------------------------------- 5. code size of chains

def _tir_size(fn, x) -> int:
    from graphad.lowering import lower_graph
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.schedule import schedule_module
    from graphad.lowering.targets import resolve_target
    graph = gd.jit(fn).lower(x).graph
    mod, report = schedule_module(fuse_module(lower_graph(graph), resolve_target(None)))
    assert all(r.status == "scheduled" for r in report), [str(r) for r in report]
    return len(mod.script(show_meta=False))


@pytest.mark.parametrize("op", ["sin", "cos", "tanh", "exp", "relu", "sigmoid"])
def test_elementwise_chains_compile_to_code_linear_in_depth(op):
    x = _t(np.linspace(-3, 3, 8), np.float32)
    f = getattr(ops, op)

    def chain(n):
        def fn(v):
            for _ in range(n):
                v = f(v)
            return v
        return fn
    s1, s2, s6 = (_tir_size(chain(n), x) for n in (1, 2, 6))
    # linear: each extra op adds about as much as the second did (exponential growth was 8x per op)
    assert s6 - s2 <= 4 * (s2 - s1) * 1.5 + 2000, (s1, s2, s6)
    got = _compiled(chain(6), x)[0]
    want = x.asnumpy().astype(np.float64)
    for _ in range(6):
        want = np.maximum(want, 0) if op == "relu" else (1 / (1 + np.exp(-want)) if op == "sigmoid"
                                                         else getattr(np, op)(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_integer_chains_compile_to_code_linear_in_depth():
    # a counter-based hash (multiply, floor_divide, remainder per round): the integer arithmetic
    # is not "value work" to the scheduler's cost count, so every producer was inlined at every
    # read site (floor_divide reads its operands 3-4 times) and ten rounds never finished compiling
    m = 2 ** 31

    def chain(n):
        def fn(c):
            v = c
            for _ in range(n):
                v = ops.remainder(ops.add(ops.floor_divide(ops.mul(v, 0x5851F42D), m), 7), m)
            return v
        return fn
    c = _t(np.arange(16), np.int64)
    s1, s2, s6 = (_tir_size(chain(n), c) for n in (1, 2, 6))
    assert s6 - s2 <= 4 * (s2 - s1) * 1.5 + 2000, (s1, s2, s6)
    want = np.arange(16, dtype=np.int64)
    for _ in range(10):
        want = ((want * 0x5851F42D) // m + 7) % m
    np.testing.assert_array_equal(_compiled(chain(10), c)[0], want)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("axis", [0, 1])
def test_arg_reductions_pick_the_first_nan(op, axis):
    # NumPy: a NaN is the extremum, and the first one wins; TVM's comparisons passed over it
    x = _t([[1., np.nan, 3., np.nan], [5., 2., 7., 1.], [np.nan, 0., 0., 9.]], np.float32)
    got = _compiled(lambda x: getattr(ops, op)(x, axis), x)[0]
    np.testing.assert_array_equal(got, getattr(np, op)(x.asnumpy(), axis))


def test_sum_of_one_term_is_that_term():
    # -0.0 summed over size-1 axes (or none) stays -0.0 everywhere: interpreter, compiled, simplified
    x = _t(np.array([[-0.0], [1.0]]))
    for fn in (lambda x: ops.sum(x, axis=1), lambda x: ops.sum(x, axis=1, keepdims=True),
               lambda x: ops.sum(x[:1], axis=(0, 1))):
        check(fn, x)
        assert np.signbit(_interpreted(fn, x)[0].reshape(-1)[0])


def test_arg_reductions_of_all_infinite_values():
    x = _t([[-np.inf, np.inf, 1.0], [-np.inf, np.inf, 2.0]])
    got = _compiled(lambda x: (ops.argmax(x, 0), ops.argmin(x, 0)), x)
    np.testing.assert_array_equal(got[0], [0, 0, 1])
    np.testing.assert_array_equal(got[1], [0, 0, 0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int32", "int64"])
def test_arg_reductions_over_special_values(dtype):
    """Every row of up to 4 values drawn from NaN, +-inf, the finite extremes, +-0 and 1, along
    either axis: NumPy's index (the first NaN, else the first extreme). TVM's reducers start at
    the largest finite value, which an infinity cannot beat and the finite extreme ties with, so
    argmin of [inf, max] was 0 (a fuzzer's vmapped argmin of [inf, 1.8e308])."""
    import itertools
    import ml_dtypes
    is_int = dtype.startswith("int")
    info = np.iinfo(dtype) if is_int else ml_dtypes.finfo(dtype)
    pool = [info.max, info.min, 0, 1, -1] if is_int else [np.nan, np.inf, -np.inf, info.max, -info.max, 0.0, -0.0, 1.0]
    wide = np.float64 if not is_int else np.int64
    x2, x3 = (np.array(list(itertools.product(pool, repeat=n)), wide).astype(dtype) for n in (2, 3))
    x4 = np.concatenate([x3, x3[:, :1]], axis=1)  # 4 columns: a repeated extreme
    for a in (x2, x3, x4):
        got = _compiled(lambda t: (ops.argmin(t, 1), ops.argmax(t, 1), ops.argmin(t, 0), ops.argmax(t, 0)),
                        gd.Tensor(a))
        ref = a.astype(np.float64) if dtype == "bfloat16" else a  # (exact: bfloat16 -> float64)
        want = [np.argmin(ref, 1), np.argmax(ref, 1), np.argmin(ref, 0), np.argmax(ref, 0)]
        for g, w, what in zip(got, want, ("argmin rows", "argmax rows", "argmin columns", "argmax columns")):
            bad = np.flatnonzero(g != w)
            assert not bad.size, (what, a[bad[0]] if "rows" in what else a[:, bad[0]], g[bad[0]], w[bad[0]])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int32", "int64"])
def test_small_exponents_are_numpys_answers(dtype):
    """x ** 2, x ** 1, x ** 0 and x ** -1 (simplify's pow-small: x * x, x, 1, 1 / x) compiled,
    and their gradients, are NumPy's power bit for bit: random values, NaN, infinities, signed
    zeros, the extremes, and integers that overflow (x ** 2 wraps)."""
    import ml_dtypes
    rng = np.random.default_rng(7)
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        x = np.concatenate([[info.min, info.max, 0, -1, 1, 46341, -46341, 3037000500],
                            rng.integers(-1000, 1000, 56)]).astype(dtype)
        exps = (0, 1, 2)
    else:
        big = float(ml_dtypes.finfo(dtype).max)
        x = np.concatenate([[np.nan, np.inf, -np.inf, 0.0, -0.0, big, -big, 1e-30, -1e-30, 1e-310],
                            rng.standard_normal(54) * 100]).astype(dtype)
        exps = (0, 1, 2, -1)
    for e in exps:
        fn = (lambda t, e=e: t ** e)
        with np.errstate(all="ignore"):
            want = np.power(x.astype(np.float32) if dtype == "bfloat16" else x,
                            np.array(e, np.float32 if dtype == "bfloat16" else dtype)).astype(dtype)
        got = _compiled(fn, gd.Tensor(x))[0]
        eager = _interpreted(fn, gd.Tensor(x))[0]
        for g, what in ((got, "compiled"), (eager, "interpreted")):
            same = (g == want) | (np.isnan(g.astype(np.float64)) & np.isnan(want.astype(np.float64)))
            if not dtype.startswith("int"):
                same &= np.signbit(g.astype(np.float64)) == np.signbit(want.astype(np.float64))
            assert same.all(), (what, e, x[~same][:3], g[~same][:3], want[~same][:3])
    if not dtype.startswith("int") and dtype != "bfloat16":
        for e in (2, -1):  # gradients: e * x ** (e - 1), through the same rules
            g = _compiled(lambda t, e=e: gd.grad(lambda u: ops.sum(u ** e))(t), gd.Tensor(x))[0]
            # x ** -2 is no small exponent: a general power on both sides. float32's is computed
            # in float64 and rounded once by both; float64's compiled code calls the C library's
            # pow and the interpreter NumPy's power, which where AVX-512 is runs a SIMD
            # approximation (an ulp off pow for 1 of these 64 values on an AMD EPYC with AVX-512)
            rtol = 2.3e-16 if dtype == "float64" and e == -1 else 0
            assert_same(g, _interpreted(lambda t, e=e: gd.grad(lambda u: ops.sum(u ** e))(t), gd.Tensor(x))[0],
                        f"gradient of x ** {e}", rtol=rtol, atol=0)


def test_bfloat16_rounding_survives_fusion():
    """astype(x, bfloat16) rounds to bfloat16 inside a fused kernel too, as ml_dtypes does: TVM's
    bfloat16 legalisation made a cast to bfloat16 feeding a consumer a cast to float32, so
    astype(astype(1.0012207, bfloat16), float32) was 1.0012207, and bfloat16(1.0012207) +
    bfloat16(-1.0) was 0.0012207 instead of 0 (found by a reviewer). Checked on ties, carries
    into the exponent, overflow to inf, subnormals, NaN payloads and random bits."""
    import ml_dtypes
    rng = np.random.default_rng(3)
    bits = np.concatenate([
        rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32),
        np.array([0x3F808000, 0x3F818000, 0x3F80_7FFF, 0x3F80_8001, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF,
                  0x00008000, 0x00018000, 0x0000FFFF, 0x80008000, 0x7F800000, 0xFF800000, 0x7F800001,
                  0xFF800001, 0x7FC00000, 0x7F80FFFF, 0x00000000, 0x80000000, 0x3F800000, 0x3F9E0419],
                 np.uint32)])
    x = bits.view(np.float32)
    want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    got = _compiled(lambda t: ops.astype(ops.astype(t, "bfloat16"), "float32"), gd.Tensor(x))[0]
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    a = np.array([1.0012207, 3.14159, 65537.0, -2.5e-39], np.float32)
    b = np.array([-1.0, 0.0, -65536.0, 1e-40], np.float32)
    got = _compiled(lambda p, q: ops.astype(p, "bfloat16") + ops.astype(q, "bfloat16"), gd.Tensor(a), gd.Tensor(b))[0]
    want = (a.astype(ml_dtypes.bfloat16).astype(np.float32) + b.astype(ml_dtypes.bfloat16).astype(np.float32)
            ).astype(ml_dtypes.bfloat16)
    assert np.array_equal(got.astype(np.float32), want.astype(np.float32))


def test_logaddexp_where_its_terms_cancel():
    """max(x, y) < 0 < logaddexp(x, y), the sum near 0: the log1p term's absolute error is the
    result's. With an 11-term series the compiled float32 logaddexp gave -8.6e-14 for 9.7e-14 and
    98 ulp at 9.1e-8 (a reviewer's inputs, the first three); within an ulp of mpmath from 1e-7 up."""
    import mpmath
    rng = np.random.default_rng(11)
    x = -rng.uniform(0.01, 5, 3000)
    y = np.log1p(-np.exp(x) + rng.uniform(-1e-3, 1e-3, x.size) * 10 ** rng.uniform(-5, 0, x.size))
    keep = np.isfinite(y)
    x = np.concatenate([[-0.6806976199150085, -0.6934254169464111, -0.7494993805885315], x[keep]]).astype(np.float32)
    y = np.concatenate([[-0.70575350522995, -0.6928670406341553, -0.6398018598556519], y[keep]]).astype(np.float32)
    got = _compiled(lambda a, b: ops.logaddexp(a, b), gd.Tensor(x), gd.Tensor(y))[0].astype(np.float64)
    mpmath.mp.dps = 50
    want = np.array([float(mpmath.log(mpmath.exp(mpmath.mpf(float(a))) + mpmath.exp(mpmath.mpf(float(b)))))
                     for a, b in zip(x, y)])
    assert np.all(np.sign(got[:3]) == 1)
    big = np.abs(want) >= 1e-7
    ulps = np.abs(got - want)[big] / np.spacing(np.abs(want[big]).astype(np.float32)).astype(np.float64)
    assert big.sum() > 1000 and ulps.max() <= 1.0, (ulps.max(), x[big][np.argmax(ulps)], y[big][np.argmax(ulps)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_and_min_of_all_infinite_values(dtype):
    # TIR's reducers start from the lowest (highest) finite value: max of all -inf was -3.4e38
    x = _t(np.array([[-np.inf, np.inf, 1.0, -np.inf], [-np.inf, np.inf, np.nan, -np.inf]], dtype))
    got = _compiled(lambda x: (ops.max(x, 0), ops.min(x, 0), ops.max(-x, 1), ops.min(-x, (0, 1))), x)
    np.testing.assert_array_equal(got[0], [-np.inf, np.inf, np.nan, -np.inf])
    np.testing.assert_array_equal(got[1], [-np.inf, np.inf, np.nan, -np.inf])
    np.testing.assert_array_equal(got[2], [np.inf, np.nan])
    np.testing.assert_array_equal(got[3], np.nan)
    got = _compiled(lambda x: (ops.max(x[:, ::3], 1), ops.min(-x[:, ::3], 1)), x)
    np.testing.assert_array_equal(got[0], [-np.inf, -np.inf])
    np.testing.assert_array_equal(got[1], [np.inf, np.inf])


def test_einsum_over_an_empty_contraction_is_zero():
    check(lambda x: ops.einsum("ab->b", x), _t(np.zeros((0, 3))))
    check(lambda x: ops.einsum("ab->", x), _t(np.zeros((0, 1))))


def test_graph_with_an_empty_result_reaches_the_disk_cache(tmp_path, monkeypatch):
    # a 0-size result was a baked-in constant that did not survive export and reload ("Invalid
    # DLTensor file format"): such graphs stayed in memory with a warning; now an allocation
    import warnings
    x = _t(np.zeros((3, 0), np.float32))
    gd.set_backend("tvm")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = gd.jit(lambda x: (ops.sin(x) * 3.5, x.sum(1) + 1.25))(x)
    assert got[0].shape == (3, 0)
    np.testing.assert_array_equal(got[1].asnumpy(), [1.25, 1.25, 1.25])


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_float32_sin_cos_of_huge_arguments(op):
    """Beyond |x| ~ 1.25e5 the Cody-Waite reduction runs out of bits (sin(3.4e38) was 1.0; NumPy,
    JAX and torch give -0.5218765): from 2^16 on the kernel calls the C library's sinf / cosf,
    and gives its bits (glibc's: within 0.55 ulp). Within 2 ulp of the float64
    result over the whole float32 range, both signs, including the switch-over point."""
    rng = np.random.default_rng(5)
    mags = 10.0 ** rng.uniform(4, 38.5, 4000)
    xs = np.concatenate([mags * rng.choice([-1.0, 1.0], 4000),
                         [65535.99, 65536.0, 65536.01, 1.25e5, 3.4028235e38, -3.4028235e38, 2.0 ** 100]])
    xs = xs.astype(np.float32)
    got = _compiled(lambda x: getattr(ops, op)(x), _t(xs, np.float32))[0]
    want = getattr(np, op)(xs.astype(np.float64))
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, (ulps.max(), xs[np.argmax(ulps)])
    import ctypes
    import ctypes.util
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    fn = getattr(libm, op + "f")
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    huge = np.abs(xs) >= 65536.0
    want_c = np.array([fn(float(v)) for v in xs[huge]], np.float32)
    assert np.array_equal(got[huge].view(np.uint32), want_c.view(np.uint32))
    special = _compiled(lambda x: getattr(ops, op)(x), _t(np.array([np.inf, -np.inf, np.nan], np.float32),
                                                         np.float32))[0]
    assert np.isnan(special).all()


def test_conv2d_over_an_empty_contraction_is_zero():
    """No input channels but a non-empty output: every element is an empty sum (the weight
    gradient of a conv2d over a 0-size batch). TVM's conv2d never wrote it; under poison it was NaN."""
    from graphad.testing import poisoned
    x = _t(np.ones((1, 0, 3, 3)), np.float32)
    w = _t(np.ones((2, 0, 2, 2)), np.float32)
    with poisoned():
        got = _compiled(lambda x, w: ops.conv2d(x, w), x, w)[0]
    np.testing.assert_array_equal(got, np.zeros((1, 2, 2, 2), np.float32))


def test_einsum_sums_lone_indices_first_as_numpy():
    """'abc,e->' is sum(x) * sum(y) in NumPy and JAX: inf * 0.61 = inf. Summing the products
    (TVM's einsum) gave inf * 1.28 + inf * -0.67 = NaN. Found by make fuzz."""
    y = np.array([1.28, -0.67])
    for spec, a in [("abc,e->", np.full((1, 1, 1), np.inf)), ("ab,c->a", np.array([[np.inf, 1.0], [2.0, 3.0]])),
                    ("ab,c->ac", np.array([[np.inf, 1.0], [2.0, 3.0]])), ("ab,b->a", np.array([[1.0, 2.0], [3., 4.]]))]:
        got = _compiled(lambda x, y: ops.einsum(spec, x, y), _t(a, np.float64), _t(y, np.float64))[0]
        np.testing.assert_array_equal(got, np.einsum(spec, a, y), err_msg=spec)


@pytest.mark.parametrize("op", ["erfinv", "digamma"])
def test_let_bound_kernels_beside_bfloat16_casts(op):
    """erfinv/polygamma kernels let-bind reused values; fused with a bfloat16 cast, TVM's bfloat16
    legalization broke them (NaN for 9 bfloat16 values, or an internal error for 8). They are
    unfused kernels now; checked at odd and even lengths, bfloat16 and float32 beside casts."""
    import ml_dtypes
    f = getattr(ops, op)
    for n in (8, 9, 17):
        vals = np.linspace(0.1, 0.9, n)
        for fn in (f, lambda x: ops.astype(f(ops.astype(x, "float32")), "bfloat16")):
            a = vals.astype(ml_dtypes.bfloat16)
            got = _compiled(fn, gd.Tensor(a))[0].astype(np.float32)
            gd.set_backend("numpy")
            want = fn(gd.Tensor(a)).asnumpy().astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-2, err_msg=f"{op} n={n}")
