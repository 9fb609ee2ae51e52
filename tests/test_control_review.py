"""An outside review of control flow and custom derivatives against JAX's semantics.

Each test is a case where graphad's answer differed from JAX's (lax.cond / switch / while_loop /
scan, jax.custom_vjp / custom_jvp) on the same program; the expected values are closed forms or
per-lane forward-mode derivatives (which the cases do not involve), and every check runs under the
NumPy interpreter and compiled (TVM).
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from backends import both_backends
from graphad import ops
from graphad.errors import GraphadError


def T(a):
    return gd.Tensor(np.asarray(a, np.float64))


def I32(a):
    return gd.Tensor(np.asarray(a, np.int32))


# ---------------------------------------------------------------- cond's predicate


def test_cond_with_an_integer_predicate_is_true_when_nonzero():
    # JAX (and Python's `if`) take any nonzero integer as true; clamping it as a switch index
    # took false_fn for a negative one
    x = T([0.3, -0.7, 1.2])

    def f(p, x):
        return gd.cond(p, lambda x: x + 1.0, lambda x: x - 1.0, x)

    for p, want in ((-1, x.asnumpy() + 1.0), (-7, x.asnumpy() + 1.0), (2, x.asnumpy() + 1.0),
                    (0, x.asnumpy() - 1.0)):
        np.testing.assert_array_equal(both_backends(f, I32(p), x)[0], want)
    np.testing.assert_array_equal(both_backends(f, gd.Tensor(np.int64(-(2 ** 40))), x)[0], x.asnumpy() + 1.0)
    got = both_backends(gd.vmap(f), I32([2, -1, 0]), gd.Tensor(np.ones((3, 2))))[0]
    np.testing.assert_array_equal(got, [[2.0, 2.0], [2.0, 2.0], [0.0, 0.0]])


# ---------------------------------------------------------------- the where-trick under vmap


def _safe_sqrt(x):
    # JAX's testCondGradVmapNan: the branch closes over x (no operands)
    eps = 1e-3
    return gd.cond(x < eps, lambda: gd.Tensor(np.float64(eps)), lambda: ops.sqrt(x))


def test_gradient_of_a_vmapped_cond_is_not_poisoned_by_the_untaken_branch():
    # with a batched predicate every branch runs on every lane; sqrt's derivative at the lanes
    # that do not take it (x <= 0: inf or NaN) must not reach their gradient (0 * NaN = NaN)
    x = np.array([0.0, -1.0, 4.0, 0.25])
    want = np.where(x < 1e-3, 0.0, 0.5 / np.sqrt(np.where(x < 1e-3, 1.0, x)))
    for fn in (gd.grad(lambda x: ops.sum(gd.vmap(_safe_sqrt)(x))),
               lambda x: ops.diagonal(gd.jacrev(gd.vmap(_safe_sqrt))(x)),
               lambda x: ops.diagonal(gd.jacfwd(gd.vmap(_safe_sqrt))(x))):
        np.testing.assert_allclose(both_backends(fn, T(x))[0], want, rtol=1e-14)
    hess = both_backends(gd.hessian(lambda x: ops.sum(gd.vmap(_safe_sqrt)(x))), T(x))[0]
    safe = np.where(x < 1e-3, 1.0, x)
    np.testing.assert_allclose(hess, np.diag(np.where(x < 1e-3, 0.0, -0.25 * safe ** -1.5)), rtol=1e-14)


def test_vmapped_cond_selects_an_operand_shared_by_every_lane_too():
    # w is not batched: its gradient sums over the lanes, the untaken ones included
    def f(w, x):
        return gd.cond(x > 0, lambda w, x: ops.sqrt(w * x), lambda w, x: w * 0.0, w, x)

    x = np.array([0.0, -1.0, 4.0, 0.25])
    gw, gx = both_backends(gd.grad(lambda w, x: ops.sum(gd.vmap(f, in_axes=(None, 0))(w, x)),
                                   grad_position=(0, 1)), T(2.0), T(x))
    pos = x > 0
    np.testing.assert_allclose(gw, np.sum(0.5 * np.sqrt(x[pos] / 2.0)), rtol=1e-14)
    np.testing.assert_allclose(gx, np.where(pos, 0.5 * np.sqrt(2.0 / np.where(pos, x, 1.0)), 0.0), rtol=1e-14)


def test_gradient_of_a_vmapped_while_loop_ignores_the_body_on_finished_lanes():
    # a lane that has finished keeps its carry, but the batched body still runs on it, where
    # sqrt(c * a) is out of its domain (c < 0): its derivative must not reach the gradient
    def solve(x, a):
        return gd.while_loop(lambda c: c > 0.0, lambda c: ops.sqrt(c * a) - 1.0, x, max_steps=30)

    x = np.array([2.0, 5.0, 0.5, 30.0])
    a = np.array([1.0, 2.0, 0.5, 1.5])
    # per lane, forward mode (the body runs only while the lane's test holds)
    want = [both_backends(lambda x, a: gd.jvp(lambda x, a: solve(x, a), (x, a), (T(tx), T(ta)))[1],
                          T(x[k]), T(a[k]))[0] for k in range(4) for tx, ta in ((1.0, 0.0), (0.0, 1.0))]
    gx, ga = both_backends(gd.grad(lambda x, a: ops.sum(gd.vmap(solve)(x, a)), grad_position=(0, 1)), T(x), T(a))
    np.testing.assert_allclose(gx, want[0::2], rtol=1e-12)
    np.testing.assert_allclose(ga, want[1::2], rtol=1e-12)
    assert np.isfinite(gx).all() and np.isfinite(ga).all()


# ---------------------------------------------------------------- errors name the user's lines


def _line_of(fn) -> int:
    return fn.__code__.co_firstlineno


def test_a_custom_rule_of_the_wrong_structure_names_the_call_and_the_rule():
    @gd.custom_vjp
    def mul(x, y):
        return x * y

    def mul_bwd(res, g):
        return (g * res[1],)  # one cotangent for two arguments

    mul.defvjp(lambda x, y: (mul(x, y), (x, y)), mul_bwd)
    x = T([1.0, 2.0])
    with pytest.raises(GraphadError, match=r"custom_vjp mul: bwd must return a tuple .* got a tuple of 1 "
                       rf"\(at tests/test_control_review.py:\d+; bwd at tests/test_control_review.py:{_line_of(mul_bwd)}\)"):
        gd.grad(lambda x: ops.sum(mul(x, x)))(x)

    @gd.custom_jvp
    def two(x):
        return ops.stack([ops.sin(x), ops.cos(x)])

    def two_jvp(p, t):
        (x,), (tx,) = p, t
        return two(x), (ops.cos(x) * tx, -ops.sin(x) * tx)  # a tuple where two() returns one tensor

    two.defjvp(two_jvp)
    # the tuple of two f64[3] tangents was stacked into one f64[2,3] and accepted
    with pytest.raises(GraphadError, match=r"custom_jvp two: the jvp rule's tangent output: the result should be a "
                       rf"tensor, got a tuple \(at .*; the jvp rule at tests/test_control_review.py:{_line_of(two_jvp)}\)"):
        gd.jvp(two, (T([0.1, 0.2, 0.3]),), (T([1.0, 1.0, 1.0]),))


def test_control_flow_errors_name_the_users_line_and_fori_loops_own_carry():
    x = T([1.0, 2.0])
    with pytest.raises(GraphadError, match=r"while_loop: cond_fun must return one bool scalar, got \(f64\[\]\) "
                       r"\(at tests/test_control_review.py:\d+\)"):
        gd.while_loop(lambda c: ops.sum(c), lambda c: c, x)
    # the static-bound fori_loop is a scan of (i, val): its error spoke of that scan's carry
    for upper in (3, I32(3)):
        with pytest.raises(GraphadError, match=r"fori_loop: body_fun must return the carry's structure and types \* "
                           r"of \(f64\[2\]\), got \(\*, \*\) of \(f64\[2\], f64\[2\]\) \(at tests/"):
            gd.fori_loop(0, upper, lambda i, c: (c, c), x)
    with pytest.raises(GraphadError, match=r"scan: f's y: leaf 0 \(str\)"):
        gd.scan(lambda c, x: (c, "y"), x, T(np.ones((2, 2))))
    with pytest.raises(GraphadError, match=r"share their leading axis with length; got lengths \[0, 2\]"):
        gd.scan(lambda c, x: (c, x), x, T(np.ones((2, 2))), length=0)


def test_jax_unroll_arguments_are_accepted_and_checked():
    # JAX's scan(..., unroll=) and fori_loop(..., unroll=) raised a TypeError
    xs = T(np.arange(6.0).reshape(3, 2))
    for unroll in (0, 1, 2, 5, True, False):  # (0: JAX 0.10 takes it)
        c, ys = gd.scan(lambda c, x: (c + x, c * x), T([1.0, 1.0]), xs, unroll=unroll)
        np.testing.assert_array_equal(c.asnumpy(), [7.0, 10.0])
        np.testing.assert_array_equal(gd.fori_loop(0, 3, lambda i, c: c * 2.0, T([1.0]), unroll=unroll).asnumpy(), [8.0])
    for bad in (-1, 1.5):
        with pytest.raises(GraphadError, match="unroll must be a bool or a non-negative int"):
            gd.scan(lambda c, x: (c, x), T([1.0, 1.0]), xs, unroll=bad)


def test_checkpoint_takes_jaxs_static_argnums_and_prevent_cse():
    # jax.checkpoint(f, static_argnums=..., prevent_cse=...) raised a TypeError; a static argument
    # that is not a tensor (a function, a string) could not be passed at all
    def layer(x, act, n):
        for _ in range(n):
            x = act(x) * 1.5
        return x

    f = gd.checkpoint(layer, static_argnums=(1, 2), prevent_cse=False)
    x = np.array([0.3, -0.7, 1.2])
    val, g = both_backends(gd.value_and_grad(lambda x: ops.sum(f(x, ops.sin, 2))), T(x))
    inner = 1.5 * np.sin(x)
    np.testing.assert_allclose(val, np.sum(1.5 * np.sin(inner)), rtol=1e-14)
    np.testing.assert_allclose(g, 2.25 * np.cos(inner) * np.cos(x), rtol=1e-14)
    h = gd.checkpoint(lambda n, x: x ** n, static_argnums=-2)
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(h(3, x)))(T(x)).asnumpy(), 3 * x ** 2, rtol=1e-14)
    with pytest.raises(GraphadError, match=r"static_argnums \(5,\) out of range for a call with 2"):
        gd.checkpoint(lambda a, b: a, static_argnums=5)(T(1.0), T(2.0))


# ---------------------------------------------------------------- weakly typed Python numbers

@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_python_number_carries_take_the_bodys_dtype(backend):
    """A Python number as the initial carry of scan, fori_loop (static and tensor bounds) and
    while_loop takes the dtype the body gives it, as JAX's weak types do: float64 sums carry
    float64 (they were refused: 'carry f32[] ... got f64[]'), an int 0 becomes float64 too, and
    derivatives flow through the promoted carry."""
    gd.set_backend(backend)
    try:
        xs = gd.Tensor(np.arange(1.0, 5.0))
        c, ys = gd.scan(lambda c, x: (c + x, c * 2.0), 0.0, xs)
        assert c.dtype == gd.float64 and ys.dtype == gd.float64 and float(c.asnumpy()) == 10.0
        np.testing.assert_array_equal(ys.asnumpy(), [0.0, 2.0, 6.0, 12.0])
        assert gd.scan(lambda c, x: (c + x, None), 0, xs)[0].dtype == gd.float64
        for hi in (3, gd.Tensor(np.int32(3))):
            r = gd.fori_loop(0, hi, lambda i, c: c + xs[1], 0.0, max_steps=5)
            assert r.dtype == gd.float64 and float(r.asnumpy()) == 6.0
        r = gd.while_loop(lambda c: c < 5.0, lambda c: c + xs[1], 0.0, max_steps=10)
        assert r.dtype == gd.float64 and float(r.asnumpy()) == 6.0
        g = gd.grad(lambda xs: gd.scan(lambda c, x: (c + x * x, None), 0.0, xs)[0])(xs)
        np.testing.assert_array_equal(g.asnumpy(), 2 * np.arange(1.0, 5.0))
        # a tensor carry keeps its dtype: a mismatch is still refused
        with pytest.raises(GraphadError, match="carry"):
            gd.scan(lambda c, x: (c + x, None), gd.Tensor(np.float32(0.0)), xs)
        # a float number never becomes an integer carry
        with pytest.raises(GraphadError, match="carry"):
            gd.scan(lambda c, x: (ops.astype(c, gd.int64) + x, None), 0.0, gd.Tensor(np.arange(4)))
    finally:
        gd.set_backend("numpy")


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_python_number_branch_results_take_the_other_branchs_dtype(backend):
    gd.set_backend(backend)
    try:
        x = gd.Tensor(np.float64(2.0))
        r = gd.cond(x > 1, lambda x: 1.0, lambda x: x * 3, x)
        assert r.dtype == gd.float64 and float(r.asnumpy()) == 1.0
        a, b = gd.switch(1, [lambda x: (x, 2), lambda x: (x * 2, ops.astype(x, gd.int64))], x)
        assert (a.dtype, b.dtype) == (gd.float64, gd.int64) and int(b.asnumpy()) == 2
        g = gd.grad(lambda x: gd.cond(x > 1, lambda x: 1.0, lambda x: x * 3, x))(gd.Tensor(np.float64(0.5)))
        assert float(g.asnumpy()) == 3.0
        with pytest.raises(GraphadError, match="every branch must return the same"):
            gd.cond(x > 1, lambda x: 1.0, lambda x: ops.reshape(x, (1,)), x)
    finally:
        gd.set_backend("numpy")


# ---------------------------------------------------------------- from JAX's lax_control_flow_test, ported


def test_loops_and_conds_of_an_empty_carry_compile():
    """JAX's testWhileCondConstant: a while_loop (or a cond) of no values beside other work. Under
    jit the simplifier read the first output of a node that has none (IndexError)."""
    x = T([1.0, 2.0])
    cases = [
        lambda x: (gd.while_loop(lambda _: False, lambda _: (), ()), x * 2.0),
        lambda x: (gd.cond(x[0] > 0, lambda: (), lambda: ()), x * 2.0),
        lambda x: (gd.scan(lambda c, _: (c, None), (), None, length=3), x * 2.0),
    ]
    for f in cases:
        out = both_backends(gd.jit(f), x)
        np.testing.assert_array_equal(out[-1], [2.0, 4.0])
    g = gd.grad(lambda x: (gd.while_loop(lambda _: False, lambda _: (), ()), (x * 3.0).sum())[1])
    np.testing.assert_array_equal(both_backends(gd.jit(g), x)[0], [3.0, 3.0])


def test_a_loop_body_may_return_a_python_number_for_a_scalar_carry():
    """JAX's testScanVmapFixpoint / test_scan_fixpoint_instantiate: a body's Python number is
    weakly typed and takes the carry's dtype (exactly: 0.1 in float64), where graphad refused
    it as float32 against a float64 carry."""
    c = T(1.0)
    scan = lambda c: gd.scan(lambda c, _: (0.1, None), c, None, length=2)[0]  # noqa: E731
    assert both_backends(gd.jit(scan), c)[0] == 0.1
    assert both_backends(gd.jit(lambda c: gd.while_loop(lambda c: c < 5.0, lambda c: 7.1, c)), c)[0] == 7.1
    assert both_backends(gd.jit(lambda c: gd.fori_loop(0, 3, lambda i, c: 2.5, c)), c)[0] == 2.5
    assert both_backends(gd.jit(lambda c: gd.fori_loop(0, 3, lambda i, c: 5, c)), I32(1))[0] == 5
    np.testing.assert_array_equal(both_backends(gd.vmap(scan), T([1.0, 2.0]))[0], [0.1, 0.1])
    with pytest.raises(GraphadError, match=r"must return the carry's structure and types"):
        gd.fori_loop(0, 3, lambda i, c: 5.5, I32(1))  # a float cannot be an int carry


def test_vmap_forwards_what_a_cond_or_a_loop_passes_through_unchanged():
    """JAX's test_cond_vmap_forwarding_doesnt_promote and test_while_readonly_carry_optimization:
    under a mapped predicate every output of a cond (every carry of a while_loop) was batched,
    so out_axes=None refused one the branches (the body) only pass through."""
    x, y = T([0.0, 1.0, 2.0]), T(3.0)
    f = lambda x, y: gd.cond(x < 2, lambda x, y: (x * 2, y), lambda x, y: (x * 3, y), x, y)  # noqa: E731
    a, b = both_backends(gd.vmap(f, in_axes=(0, None), out_axes=(0, None)), x, y)
    np.testing.assert_array_equal(a, [0.0, 2.0, 6.0])
    assert b.shape == () and b == 3.0
    g = lambda n, y, z: gd.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, c[1], c[2] * 2.0), (0, y, z))  # noqa: E731
    i, yy, z = both_backends(gd.vmap(g, in_axes=(0, None, None), out_axes=(0, None, 0)), I32([1, 3, 2]), y, T(1.0))
    np.testing.assert_array_equal(i, [1, 3, 2])
    assert yy.shape == () and yy == 3.0
    np.testing.assert_array_equal(z, [2.0, 8.0, 4.0])
    # the derivatives through a forwarded output: y's, once per lane where it is broadcast
    assert both_backends(gd.grad(lambda y: gd.vmap(f, in_axes=(0, None))(x, y)[1].sum()), y)[0] == 3.0
    np.testing.assert_array_equal(both_backends(gd.jacrev(lambda x: gd.vmap(f, in_axes=(0, None))(x, y)[0]), x)[0],
                                  np.diag([2.0, 2.0, 3.0]))


# ---------------------------------------------------------------- from JAX's custom_api_test, ported


def test_a_python_number_passed_to_a_custom_function_is_exact():
    """`f(x, 0.1)` of a custom_jvp / custom_vjp function under jit or grad: the literal was made a
    float32 tensor, so a float64 function got 0.1 rounded (0.30000000447 for 3 * 0.1, gradient
    0.1000000015). It now reaches the function and its rules as the Python number (a zero
    tangent, no cotangent), as an eager call has it."""
    x = T(3.0)

    @gd.custom_jvp
    def f(x, s):
        return x * s
    f.defjvp(lambda p, t: (f(*p), t[0] * p[1] + t[1] * p[0]))

    @gd.custom_vjp
    def h(x, s):
        return x * s
    h.defvjp(lambda x, s: (h(x, s), (x, s)), lambda r, ct: (ct * r[1], ct * r[0]))
    for fn in (f, h):
        assert both_backends(gd.jit(lambda x: fn(x, 0.1)), x)[0] == 3.0 * 0.1
        assert both_backends(gd.jit(gd.grad(lambda x: fn(x, 0.1))), x)[0] == 0.1
        np.testing.assert_array_equal(both_backends(gd.vmap(lambda x: fn(x, 0.1)), T([1.0, 2.0]))[0], [0.1, 0.2])
    assert both_backends(lambda x: gd.jvp(lambda x: f(x, 0.1), (x,), (x,))[1], x)[0] == 3.0 * 0.1

    @gd.custom_vjp
    def k(p):  # a number inside a pytree argument: its cotangent (None here) goes nowhere
        return p[0] * p[1]
    k.defvjp(lambda p: (k(p), p), lambda r, ct: ((ct * r[1], None),))
    assert both_backends(gd.grad(lambda x: k((x, 0.1))), x)[0] == 0.1


def test_a_rule_may_return_a_python_number_for_a_scalar():
    """JAX's rules may return `0.0` as a tangent or `2.0` as a cotangent of a scalar (weakly
    typed); graphad refused them as float32 against a float64 primal, even for a plain jit."""
    x = T(3.0)

    @gd.custom_jvp
    def g(x):
        return x * 2.0
    g.defjvp(lambda p, t: (g(*p), 0.0))
    assert both_backends(gd.jit(g), x)[0] == 6.0
    assert both_backends(gd.grad(g), x)[0] == 0.0

    @gd.custom_vjp
    def f(x):
        return x * 1.0
    f.defvjp(lambda x: (f(x), None), lambda r, ct: (2.0,))
    assert both_backends(gd.grad(f), x)[0] == 2.0


def test_a_residual_holding_fwds_values_is_refused_by_name():
    """A vjp function as a custom_vjp residual (JAX's test) failed with a bare "a traced value
    escaped": now the error names the function, the residual's kind and bwd's line."""
    @gd.custom_vjp
    def f(x):
        return x * x

    def fwd(x):
        y, vjp_fn = gd.vjp(lambda x: x * x, x)
        return y, vjp_fn
    f.defvjp(fwd, lambda vjp_fn, ct: vjp_fn(ct))
    with pytest.raises(GraphadError, match=r"custom_vjp f: bwd used a traced value of fwd through a residual "
                                           r"that is not a tensor \(GraphFunction\).*bwd at .*test_control_review"):
        gd.grad(f)(T(3.0))
