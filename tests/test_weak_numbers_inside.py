"""jit's weakly typed numbers stay exact where they are handed on: to grad, value_and_grad, vmap,
jacrev, jacfwd and hessian as arguments, to custom_jvp / custom_vjp functions, as loop carries and
branch results; and Python numbers stay exact eagerly in loop carries, branch results and
`ops.assign`.

Each case was a silent loss of precision (a trial from the docs, weakdocs): the number reached
the inner function as float32 (`gd.jit(gd.grad(f))(x64, 0.1)` computed with 0.1 rounded to
float32; 1e300 became inf), or was refused (`gd.jit(custom_vjp_fn)(x64, 0.1)`, a jit number as a
scan's initial carry). Oracles: the same code run eagerly with the number as a closure constant
or literal (another code path: no transformation argument, no weak input), and NumPy in float64.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import DTypeError, IntegerOverflowError


X = np.array([0.3, -1.2, 2.0])


def _x64():
    return gd.Tensor(X.copy())


def _f(x, h):
    return ops.sum(ops.sin(x * h))


@pytest.mark.parametrize("h", [0.1, 1e-8, 1e300, -0.0])
def test_a_jit_number_handed_to_grad_is_exact(backend, h):
    """The number is an argument grad does not differentiate: it reaches f as jit traced it."""
    x = _x64()
    got = gd.jit(gd.grad(_f))(x, h).numpy()
    want = gd.grad(lambda y: _f(y, h))(x).numpy()  # the number as a closure constant
    np.testing.assert_array_equal(got, want)
    if h == 0.1:
        np.testing.assert_allclose(got, np.cos(X * 0.1) * 0.1, rtol=1e-15)


def test_a_jit_number_handed_to_the_other_transformations_is_exact(backend):
    x, h = _x64(), 0.1
    v, g = gd.jit(gd.value_and_grad(lambda x, h: ops.sum(x * h)))(x, h)
    assert v.dtype == gd.float64 and v.numpy() == np.sum(X * 0.1)
    got = gd.jit(gd.vmap(lambda a, h: a * h, in_axes=(0, None)))(x, h)
    np.testing.assert_array_equal(got.numpy(), X * 0.1)
    np.testing.assert_array_equal(gd.jit(gd.jacfwd(lambda x, h: x * h))(x, h).numpy(), np.diag([0.1] * 3))
    np.testing.assert_array_equal(gd.jit(gd.jacrev(lambda x, h: x * h))(x, h).numpy(), np.diag([0.1] * 3))
    # by keyword too
    np.testing.assert_array_equal(gd.jit(gd.grad(lambda x, h=1.0: _f(x, h)))(x, h=h).numpy(),
                                  np.cos(X * 0.1) * 0.1)
    # 1e300 through a Hessian: finite where the closure's is, not NaN from inf * 0
    hess = gd.jit(gd.hessian(_f))(x, 1e300).numpy()
    want = gd.hessian(lambda y: _f(y, 1e300))(x).numpy()
    np.testing.assert_array_equal(hess, want)


def test_a_jit_int_handed_to_vmap_keeps_its_dtype_check(backend):
    """An int next to an int32 tensor inside the vmap: int32, and a call whose int does not fit
    is refused, as `x + n` is directly under jit."""
    xi = gd.Tensor(np.array([1, 2], np.int32))
    f = gd.jit(lambda x, n: gd.vmap(lambda a, m: a + m, in_axes=(0, None))(x, n))
    r = f(xi, 2)
    assert r.dtype == gd.int32 and r.numpy().tolist() == [3, 4]
    with pytest.raises(IntegerOverflowError, match="argument 'n'"):
        f(xi, 2 ** 40)


def test_a_differentiated_number_is_computed_with_exactly(backend):
    """grad_position at a Python number (eagerly, and jit's number): f is evaluated at the number
    itself where it meets a float64 tensor; the gradient is a float32 scalar, as the number alone
    is, the float64 derivative rounded once."""
    x = _x64()
    exact = np.cos(X * 0.1) @ X
    for fn in (gd.value_and_grad(_f, grad_position=1), gd.jit(gd.value_and_grad(_f, grad_position=1))):
        v, g = fn(x, 0.1)
        assert v.numpy() == np.sum(np.sin(X * 0.1))
        assert g.dtype == gd.float32 and g.numpy() == np.float32(exact)
    jr = gd.jacrev(_f, grad_position=1)(x, 0.1)
    assert jr.dtype == gd.float32 and jr.numpy() == np.float32(exact)
    np.testing.assert_allclose(gd.jacfwd(_f, grad_position=1)(x, 0.1).numpy(), exact, rtol=1e-15)
    hh = gd.hessian(_f, grad_position=1)(x, 0.1).numpy()
    np.testing.assert_allclose(hh, -np.sin(X * 0.1) @ X ** 2, rtol=1e-6)
    # a new number runs the same staged function
    g2 = gd.grad(_f, grad_position=1)(x, 0.2)
    assert g2.numpy() == np.float32(np.cos(X * 0.2) @ X)


def _custom_jvp():
    @gd.custom_jvp
    def cj(x, s):
        return ops.sin(x) * s

    cj.defjvp(lambda p, t: (cj(*p), ops.cos(p[0]) * p[1] * t[0] + ops.sin(p[0]) * t[1]))
    return cj


def _custom_vjp(s_factor=2.0):
    @gd.custom_vjp
    def cv(x, s):
        return ops.sin(x) * s

    # the rule for s is deliberately not the true derivative: it must be the one used
    cv.defvjp(lambda x, s: (cv(x, s), (x, s)),
              lambda r, g: (g * ops.cos(r[0]) * r[1], ops.sum(g * ops.sin(r[0])) * s_factor))
    return cv


@pytest.mark.parametrize("h", [0.1, 1e300])
def test_a_jit_number_passed_to_custom_functions_is_exact(backend, h):
    x = _x64()
    want = np.sin(X) * h
    np.testing.assert_array_equal(gd.jit(_custom_jvp())(x, h).numpy(), want)
    np.testing.assert_array_equal(gd.jit(_custom_vjp())(x, h).numpy(), want)  # was refused
    x32 = gd.Tensor(X.astype(np.float32))
    for c in (_custom_jvp(), _custom_vjp()):
        r = gd.jit(c)(x32, 0.1)
        assert r.dtype == gd.float32
        # (float32 sin: the compiled one may differ from NumPy's by an ulp)
        np.testing.assert_allclose(r.numpy(), np.sin(X.astype(np.float32)) * np.float32(0.1), rtol=3e-7)


def test_custom_rules_see_a_jit_number_exactly_and_keep_its_derivative(backend):
    x = _x64()
    cv = _custom_vjp()
    f = lambda x, h: ops.sum(cv(x, h))  # noqa: E731
    # a residual that is the number: bwd gets it exactly
    np.testing.assert_array_equal(gd.jit(gd.grad(f))(x, 0.1).numpy(), np.cos(X) * 0.1)
    # differentiated with respect to the number: bwd's (deliberately doubled) rule is used
    want = np.float32(2 * np.sum(np.sin(X)))
    for fn in (gd.grad(f, grad_position=1), gd.jit(gd.grad(f, grad_position=1))):
        assert fn(x, 0.1).numpy() == want
    cj = _custom_jvp()
    g = lambda x, h: ops.sum(cj(x, h))  # noqa: E731
    assert gd.jit(gd.grad(g, grad_position=1))(x, 0.1).numpy() == np.float32(np.sum(np.sin(X)))
    out, tan = gd.jit(lambda x, h: gd.jvp(lambda a: cv(a, h), (x,), (ops.ones_like(x),)))(x, 0.1)
    np.testing.assert_array_equal(out.numpy(), np.sin(X) * 0.1)
    np.testing.assert_array_equal(tan.numpy(), np.cos(X) * 0.1)


def test_a_jit_number_as_carry_or_branch_result(backend):
    x = _x64()
    assert gd.jit(lambda xs, h: gd.scan(lambda c, a: (c + a, None), h, xs)[0])(x, 0.1).numpy() == 0.1 + X.sum()
    assert gd.jit(lambda x, h: gd.fori_loop(0, 3, lambda i, c: c + x[i], h))(x, 0.1).numpy() == 0.1 + X.sum()
    w = gd.jit(lambda x, h: gd.while_loop(lambda c: c[1] < 3, lambda c: (c[0] + x[c[1]], c[1] + 1), (h, 0)))
    assert w(x, 0.1)[0].numpy() == 0.1 + X.sum()
    assert gd.jit(lambda x, h: gd.cond(x[0] > 0, lambda t: h, lambda t: t, x[0]))(x, 0.1).numpy() == 0.1
    assert gd.jit(lambda x, h: gd.switch(1, [lambda t: t, lambda t: h], x[0]))(x, 0.1).numpy() == 0.1
    assert gd.jit(lambda c, h: gd.scan(lambda c, _: (h, None), c, length=2)[0])(x[0], 0.1).numpy() == 0.1

    def graph_if(xs, h):
        if xs[0] > 0:
            r = h
        else:
            r = xs[1]
        return r
    r = gd.jit(graph_if)(x, 0.1)
    assert r.dtype == gd.float64 and r.numpy() == 0.1
    # an int carry next to int32 values: int32, checked
    xi = gd.Tensor(np.array([1, 2], np.int32))
    fi = gd.jit(lambda x, n: gd.cond(x[0] > 0, lambda t: n, lambda t: t, x[1]))
    assert fi(xi, 5).dtype == gd.int32 and fi(xi, 5).numpy() == 5
    with pytest.raises(IntegerOverflowError):
        fi(xi, 2 ** 40)


def test_a_python_float_carry_or_branch_result_is_not_rounded_to_float32_first(backend):
    x = _x64()
    assert gd.scan(lambda c, a: (c + a, None), 0.1, x)[0].numpy() == 0.1 + X.sum()
    assert gd.fori_loop(0, 3, lambda i, c: c + x[i], 0.1).numpy() == 0.1 + X.sum()
    assert gd.while_loop(lambda c: c[1] < 3, lambda c: (c[0] + x[c[1]], c[1] + 1), (0.1, 0))[0].numpy() == \
        0.1 + X.sum()
    assert gd.cond(x[0] > 0, lambda t: 0.1, lambda t: t, x[0]).numpy() == 0.1
    assert gd.switch(gd.Tensor(np.int32(0)), [lambda t: 0.1, lambda t: t], x[0]).numpy() == 0.1
    with np.errstate(over="ignore"):  # (the first trace's float32 carry)
        assert gd.scan(lambda c, a: (c + a, None), 1e300, x)[0].numpy() == 1e300


def test_integer_true_division_of_jit_numbers_is_pythons(backend):
    """`n / m` of two jit ints: a weak float of the exact quotient (it went through float32)."""
    x = _x64()
    np.testing.assert_array_equal(gd.jit(lambda x, n, m: x * (n / m))(x, 3, 7).numpy(), X * (3 / 7))
    x16 = gd.Tensor(X.astype(np.float16))
    r = gd.jit(lambda x, n: x + n / 3)(x16, 2)
    assert r.dtype == gd.float16
    np.testing.assert_array_equal(r.numpy(), (x16 + 2 / 3).numpy())
    alone = gd.jit(lambda n, m: n / m)(3, 7)
    assert alone.dtype == gd.float32 and alone.numpy() == np.float32(3 / 7)


def test_assigning_numbers_to_parameters(backend):
    p = gd.Parameter(gd.Tensor(np.zeros(2)), name="p")
    ops.assign(p, 0.1)
    assert p.numpy().tolist() == [0.1, 0.1]  # was 0.10000000149011612
    ops.assign(p, 1e300)
    assert p.numpy().tolist() == [1e300, 1e300]
    q = gd.Parameter(gd.Tensor(np.zeros(2)), name="q")

    def st(v):
        ops.assign(q, v)
        return q * 1
    with pytest.raises(DTypeError, match="imaginary"):  # under jit too (was: imaginary part dropped)
        gd.jit(st)(2.5 + 0.5j)
    with pytest.raises(DTypeError, match="imaginary"):
        ops.assign(q, 2.5 + 0.5j)
    k = gd.Parameter(gd.Tensor(np.zeros(2, np.int32)), name="k")

    def sk(v):
        ops.assign(k, v)
        return k * 1
    for v in (2.7, -2.7):  # a float into an int Parameter: its truncation, as NumPy's cast
        np.testing.assert_array_equal(gd.jit(sk)(v).numpy(), np.full(2, v).astype(np.int32))
    for v in (3e9, float("nan"), float("inf")):
        # one that does not fit is refused, as eager set_data and Tensor(v, int32) refuse it (jit
        # and ops.assign stored INT_MIN; the message called 3e9 a "Python int")
        with pytest.raises(IntegerOverflowError, match="argument 'v' is the Python float"):
            gd.jit(sk)(v)
        with pytest.raises(IntegerOverflowError):
            ops.assign(k, v)
        with pytest.raises(IntegerOverflowError):
            k.set_data(v)


def test_an_operand_number_where_a_static_one_is_needed_says_close_over_it():
    """A Python number handed to cond or checkpoint as an operand is traced weakly typed too; used
    as a shape it is refused with its own fix (the message spoke of gd.jit and static_argnums,
    and described a shape as "use as an index"); a jit's number keeps the jit message."""
    from graphad.errors import TraceError
    x = gd.Tensor(np.ones(4))
    for f in (lambda: gd.cond(gd.Tensor(True), lambda n: ops.zeros(n), lambda n: ops.ones(n), 3),
              lambda: gd.checkpoint(lambda x, n: ops.reshape(x, (n, 2)))(x, 2),
              lambda: gd.jit(lambda x: gd.checkpoint(lambda x, n: ops.reshape(x, (n, 2)))(x, 2))(x)):
        with pytest.raises(TraceError, match=r"use as an int \(a shape.*an int passed as an operand.*close over it"):
            f()
    with pytest.raises(TraceError, match="an int that gd.jit traces.*static_argnums"):
        gd.jit(lambda x, n: gd.checkpoint(lambda x, n: ops.reshape(x, (n, 2)))(x, n))(x, 2)
    with pytest.raises(TraceError, match=r"getitem\(f64\[4,1\], \(1:i64\[\]:2, ::-1\)\)"):  # (not WeakTracer(...))
        gd.jit(lambda x, n: x[1:n:2, ::-1])(x.reshape(4, 1), 1)


def test_a_jit_number_where_a_static_one_is_needed_says_static_argnums(backend):
    """An axis, a shift, a slice bound or a shape from a jit's number: refused (as JAX), with the
    fix named (the messages spoke of tensor-dependent control flow, `len() of a 0-d tensor`, or
    printed the WeakTracer class); a traced fill value is taken, as JAX's full takes it."""
    from graphad.errors import TraceError
    x = gd.Tensor(np.ones((3, 4)))
    for f in (lambda x, n: x.sum(axis=n), lambda x, n: ops.roll(x, n), lambda x, n: x[n:],
              lambda x, n: x.reshape(n, -1), lambda x, n: ops.zeros((n, 2)),
              # (these three said only "must be an integer, got WeakTracer(...)": an npops trial)
              lambda x, n: ops.split(x, n), lambda x, n: ops.diff(x, n=n), lambda x, n: ops.linspace(0.0, 1.0, n)):
        with pytest.raises(TraceError, match="an int that gd.jit traces.*static_argnums or static_argnames"):
            gd.jit(f)(x, 1)
    assert gd.jit(lambda x, n: x.sum(axis=n), static_argnums=1)(x, 1).shape == (3,)
    r = gd.jit(lambda x, h: ops.full_like(x, h))(x, 0.1)
    assert r.dtype == gd.float64 and (r.numpy() == 0.1).all()
    r = gd.jit(lambda x, n: ops.full_like(x, n, gd.int32))(x, 7)
    assert r.dtype == gd.int32 and (r.numpy() == 7).all()


def test_jvp_of_a_number_primal_and_a_number_tangent(backend):
    """A Python-number primal of jvp is weakly typed inside f (f at 0.1 itself next to a float64
    x), eagerly and under jit; under jit a number tangent crashed (AttributeError: 'float' object
    has no attribute 'shape')."""
    x = _x64()
    f = lambda x, h: ops.sin(x * h)  # noqa: E731
    want_p, want_t = np.sin(X * 0.1), np.cos(X * 0.1) * (0.1 + X)
    for call in (lambda: gd.jvp(f, (x, 0.1), (ops.ones_like(x), 1.0)),
                 lambda: gd.jit(lambda x, h: gd.jvp(f, (x, h), (ops.ones_like(x), 1.0)))(x, 0.1)):
        p, t = call()
        np.testing.assert_array_equal(p.numpy(), want_p)
        np.testing.assert_allclose(t.numpy(), want_t, rtol=1e-15)
    p, t = gd.jit(lambda x: gd.jvp(lambda a: a * 2, (x[0],), (0.1,)))(x)
    assert t.dtype == gd.float64 and t.numpy() == 0.2


def test_numbers_as_primals_of_vjp_and_linearize_and_arguments_of_checkpoint(backend):
    """A Python number (or jit's) as a primal of vjp / linearize or an argument of checkpoint is
    exact where it meets a float64 tensor (it was a float32 tensor: under jit vjp's primal was
    exact and its cotangent computed with 0.1 rounded, and with 1e300 the cotangent was inf)."""
    x = _x64()
    f = lambda x, h: x * h  # noqa: E731
    p, vf = gd.vjp(f, x, 0.1)
    np.testing.assert_array_equal(p.numpy(), X * 0.1)
    gx, gh = vf(ops.ones_like(x))
    np.testing.assert_array_equal(gx.numpy(), np.full(3, 0.1))
    assert gh.dtype == gd.float32 and gh.numpy() == np.float32(X.sum())
    out, ct = gd.jit(lambda x, h: (lambda pv: (pv[0], pv[1](ops.ones_like(x))[0]))(gd.vjp(f, x, h)))(x, 1e300)
    np.testing.assert_array_equal(out.numpy(), X * 1e300)
    np.testing.assert_array_equal(ct.numpy(), np.full(3, 1e300))
    for c in (gd.checkpoint(f), gd.jit(gd.checkpoint(f))):
        np.testing.assert_array_equal(c(x, 0.1).numpy(), X * 0.1)
    g = gd.jit(gd.grad(lambda x, h: ops.sum(gd.checkpoint(f)(x, h))))(x, 1e300)
    np.testing.assert_array_equal(g.numpy(), np.full(3, 1e300))
    xi = gd.Tensor(np.array([1, 2], np.int32))
    r = gd.checkpoint(lambda a, n: a + n)(xi, 3)
    assert r.dtype == gd.int32 and r.numpy().tolist() == [4, 5]
    with pytest.raises(IntegerOverflowError, match="checkpoint"):
        gd.checkpoint(lambda a, n: a + n)(xi, 2 ** 40)
    o, jf = gd.linearize(f, x, 0.1)
    np.testing.assert_array_equal(o.numpy(), X * 0.1)
    np.testing.assert_allclose(jf(x, 1.0).numpy(), X * 0.1 + X, rtol=1e-15)
    s = gd.Tensor(np.float64(0.7))
    assert gd.linearize(lambda s: s * 2, s)[1](0.1).numpy() == 0.2  # a number tangent (was refused)
    assert gd.jit(lambda s: gd.linearize(lambda s: s * 2, s)[1](0.1))(s).numpy() == 0.2


def test_numbers_as_operands_graph_mode_loops_and_loop_bounds(backend):
    """A number as a cond/switch operand is weakly typed in the branches (it was a float32
    tensor: `t * s` of a float64 t used 0.1 rounded); a jit number starts a graph-mode `while`
    loop's variable (was refused, f32 against f64); loop bounds are not wrapped through int32
    (`range(2**32 + 2)` ran 2 steps, `range(-2**32 + 2)` 2 instead of 0): an int64 bound makes an
    int64 counter, a jit int past int32 is refused as eagerly, and a jit float bound is refused as
    Python's range refuses it (2.5 ran 2 steps, NaN none); complex numbers are weakly typed
    carries and branch results too."""
    x = _x64()
    assert gd.cond(x[0] > 0, lambda t, s: t * s, lambda t, s: t, x[1], 0.1).numpy() == -1.2 * 0.1
    assert gd.jit(lambda x, h: gd.cond(x[0] > 0, lambda s: s * x[1], lambda s: s, h))(x, 0.1).numpy() == -0.12
    assert gd.switch(1, [lambda t, s: t, lambda t, s: t * s], x[1], 0.1).numpy() == -1.2 * 0.1
    xi = gd.Tensor(np.array([1, 2], np.int32))
    r = gd.cond(xi[0] > 0, lambda t, n: t + n, lambda t, n: t, xi, 3)
    assert r.dtype == gd.int32 and r.numpy().tolist() == [4, 5]
    with pytest.raises(IntegerOverflowError, match="cond: an operand"):
        gd.cond(xi[0] > 0, lambda t, n: t + n, lambda t, n: t, xi, 2 ** 40)

    def hw(x, h):
        s = h
        while s < 10:
            s = s + ops.abs(x[0]) + 1
        return s
    assert gd.jit(hw)(x, 0.1).numpy() == hw(x, 0.1).numpy() == 0.1 + 8 * 1.3

    def rg(x, h):
        c = x[0] * 0
        for i in range(h):
            c = c + 1
        return c
    assert gd.jit(rg)(x, 3).numpy() == 3
    fl = gd.jit(lambda x, h: gd.fori_loop(0, h, lambda i, c: c + 1, x[0] * 0))
    assert fl(x, 3).numpy() == 3
    for f in (rg, lambda x, h: gd.fori_loop(0, h, lambda i, c: c + 1, x[0] * 0)):
        with pytest.raises(IntegerOverflowError, match="argument 'h' is the Python int"):
            gd.jit(f)(x, -2 ** 32 + 2)  # (as eagerly: a jit int meets the int32 counter)
    # int64 tensor bounds: an int64 counter, the exact trip count (two bounds past int32 ran 0 steps
    # clamped, and a single one wrapped)
    i64 = lambda v: gd.Tensor(np.int64(v))  # noqa: E731
    fb = gd.jit(lambda x, lo, hi: gd.fori_loop(lo, hi, lambda i, c: c + 1, x[0] * 0))
    assert fb(x, i64(2 ** 31 + 5), i64(2 ** 31 + 7)).numpy() == 2
    assert fb(x, i64(0), i64(-2 ** 32 + 2)).numpy() == 0 and fb(x, i64(0), i64(3)).numpy() == 3

    def rg2(x, lo, hi):
        c = x[0] * 0
        for i in range(lo, hi):
            c = c + 1
        return c
    assert gd.jit(rg2)(x, i64(2 ** 31 + 5), i64(2 ** 31 + 7)).numpy() == 2
    for f in (rg, lambda x, h: gd.fori_loop(0, h, lambda i, c: c + 1, x[0] * 0)):
        with pytest.raises(gd.GraphadError, match="must be an integer.*a float that gd.jit traces"):
            gd.jit(f)(x, 2.5)
    c = gd.scan(lambda c, a: (c + a, None), 2.5 + 0.3j, x)[0]
    assert c.dtype == gd.complex128 and c.numpy() == (2.5 + 0.3j) + 0.3 - 1.2 + 2.0
    assert gd.cond(x[0] > 0, lambda t: 2.5 + 0.3j, lambda t: t * 1j, x[0]).numpy() == 2.5 + 0.3j
    assert gd.jit(lambda xs, h: gd.scan(lambda c, a: (c + a, None), h, xs)[0])(x, 2.5 + 0.3j).numpy() == \
        (2.5 + 0.3j) + 0.3 - 1.2 + 2.0


def test_a_jit_number_in_nondiff_argnums_names_static_argnums(backend):
    from functools import partial

    @partial(gd.custom_jvp, nondiff_argnums=(1,))
    def cn(x, s):
        return ops.sin(x) * s
    cn.defjvp(lambda s, p, t: (cn(p[0], s), ops.cos(p[0]) * s * t[0]))
    x = _x64()
    with pytest.raises(gd.GraphadError, match="nondiff_argnums but is a Python number that gd.jit traces.*static_argnums"):
        gd.jit(cn)(x, 0.1)
    np.testing.assert_array_equal(gd.jit(cn, static_argnums=1)(x, 0.1).numpy(), np.sin(X) * 0.1)


def test_the_parts_of_a_jit_number_are_exact_and_weak(backend):
    """real / imag / conj / angle (and .real) of a jit's Python number: the exact value, weakly
    typed (a complex trial: `x * ops.real(0.1 + 0.7j)` of a float64 x gave 0.10000000149, the
    complex64 view's part; angle(-1.0) float32 pi), and a float32 x keeps float32."""
    o64, o32 = gd.Tensor(np.ones(2)), gd.Tensor(np.ones(2, np.float32))
    z = 0.1 + 0.7j
    cases = [(lambda x, s: x * ops.real(s), z, 0.1), (lambda x, s: x * ops.imag(s), z, 0.7),
             (lambda x, s: x * s.real, z, 0.1), (lambda x, s: x * ops.angle(s), z, np.angle(z)),
             (lambda x, s: x * ops.angle(s), -1.0, np.pi), (lambda x, s: x * ops.real(s), 0.1, 0.1),
             (lambda x, s: x * ops.conj(s), 0.1, 0.1), (lambda x, s: x * ops.imag(s), 0.1, 0.0)]
    for f, s, want in cases:
        r = gd.jit(f, backend=backend)(o64, s)
        assert r.dtype == gd.float64 and r.numpy()[0] == want, (s, r)
        r = gd.jit(f, backend=backend)(o32, s)
        assert r.dtype == gd.float32 and r.numpy()[0] == np.float32(want), (s, r)
    r = gd.jit(lambda x, s: x * ops.conj(s), backend=backend)(o64, z)
    assert r.dtype == gd.complex128 and r.numpy()[0] == np.conj(z)
