"""Custom derivative rules (graphad/control/custom.py): gd.custom_jvp, gd.custom_vjp, Cell.bprop.

Oracles that are not the code under test: closed forms (softmax and its Jacobian for
log-sum-exp, sqrt's derivatives for an implicitly differentiated Newton solver), float64 central
finite differences, per-example loops for vmap, the NumPy interpreter against the compiled
(TVM) path. Several rules are deliberately *not* the true derivative (a straight-through
estimator, a bprop that doubles the gradient, a scaled log-sum-exp rule), so that a
transformation that ignored the rule and differentiated the function instead would fail.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import graphad as gd
from backends import both_backends
from graphad import nn, ops
from graphad.ops import linalg
from graphad.errors import GraphadError
from graphad.ir.parser import parse_graph
from graphad.ir.printer import print_graph
from graphad.ir.verify import verify

RNG = np.random.default_rng(7)


def T(a):
    return gd.Tensor(np.asarray(a, np.float64))


def fd_jacobian(f, x, eps=1e-6):
    """Central differences of f (ndarray -> ndarray) at x: J[..., i] = d f / d x_i."""
    x = np.asarray(x, np.float64)
    cols = []
    for i in np.ndindex(x.shape):
        p, m = x.copy(), x.copy()
        p[i] += eps
        m[i] -= eps
        cols.append((np.asarray(f(p)) - np.asarray(f(m))) / (2 * eps))
    return np.stack(cols, axis=-1).reshape(np.shape(f(x)) + x.shape)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


# ---------------------------------------------------------------- log-sum-exp with custom_vjp


@gd.custom_vjp
def lse(x):
    m = ops.stop_gradient(ops.max(x))
    return m + ops.log(ops.sum(ops.exp(x - m)))


def _lse_fwd(x):
    y = lse(x)  # JAX's idiom: the residual is the custom function's own output
    return y, (x, y)


def _lse_bwd(res, g):
    x, y = res
    return (g * ops.exp(x - y),)  # softmax, stable for any x


lse.defvjp(_lse_fwd, _lse_bwd)


def lse_hessian(x):
    s = softmax(x)
    return np.diag(s) - np.outer(s, s)


def test_lse_value_and_gradient_are_stable_and_match_softmax():
    for x in (RNG.standard_normal(5), np.array([1000.0, 1001.0, -1000.0])):
        np.testing.assert_allclose(float(lse(T(x))), np.log(np.sum(np.exp(x - x.max()))) + x.max(), rtol=1e-14)
        g = gd.grad(lse)(T(x)).asnumpy()
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, softmax(x), rtol=1e-12, atol=1e-300)


def test_lse_grad_of_grad_and_hessian_against_closed_form_and_finite_differences():
    x = RNG.standard_normal(4)
    v = RNG.standard_normal(4)
    hv = gd.grad(lambda x: ops.sum(gd.grad(lse)(x) * T(v)))(T(x)).asnumpy()
    np.testing.assert_allclose(hv, lse_hessian(x) @ v, rtol=1e-12, atol=1e-14)
    h = gd.hessian(lse)(T(x)).asnumpy()
    np.testing.assert_allclose(h, lse_hessian(x), rtol=1e-12, atol=1e-14)
    grad_lse = gd.grad(lse)
    fd = fd_jacobian(lambda a: grad_lse(T(a)).asnumpy(), x)
    np.testing.assert_allclose(h, fd, rtol=1e-7, atol=1e-9)
    # third order: the rule's own call to lse keeps its rule one level down
    t3 = gd.jacfwd(gd.hessian(lse))(T(x)).asnumpy()
    fd3 = fd_jacobian(lambda a: lse_hessian(a), x)
    np.testing.assert_allclose(t3, fd3, rtol=1e-6, atol=1e-8)


def test_lse_forward_mode_by_transposing_bwd():
    # JAX raises for the jvp of a custom_vjp function; graphad transposes the (linear) bwd
    x, v = RNG.standard_normal(6), RNG.standard_normal(6)
    y, t = gd.jvp(lse, (T(x),), (T(v),))
    np.testing.assert_allclose(float(t), softmax(x) @ v, rtol=1e-12)
    np.testing.assert_allclose(gd.jacfwd(lse)(T(x)).asnumpy(), softmax(x), rtol=1e-12)
    # forward over reverse: the Hessian, and jvp of grad = H v
    np.testing.assert_allclose(gd.jacfwd(gd.grad(lse))(T(x)).asnumpy(), lse_hessian(x), rtol=1e-12, atol=1e-14)
    _, hv = gd.jvp(gd.grad(lse), (T(x),), (T(v),))
    np.testing.assert_allclose(hv.asnumpy(), lse_hessian(x) @ v, rtol=1e-12, atol=1e-14)


def test_lse_vmap_of_grad_matches_a_loop():
    xs = RNG.standard_normal((5, 3)) * 4
    got = gd.vmap(gd.grad(lse))(T(xs)).asnumpy()
    np.testing.assert_allclose(got, np.stack([softmax(x) for x in xs]), rtol=1e-12)
    hs = gd.vmap(gd.hessian(lse))(T(xs)).asnumpy()
    np.testing.assert_allclose(hs, np.stack([lse_hessian(x) for x in xs]), rtol=1e-12, atol=1e-14)
    # grad of a vmapped function (the batch rule of the node itself)
    gs = gd.grad(lambda xs: ops.sum(gd.vmap(lse)(xs) ** 2))(T(xs)).asnumpy()
    np.testing.assert_allclose(gs, np.stack([2 * np.log(np.exp(x).sum()) * softmax(x) for x in xs]), rtol=1e-11)


def test_lse_compiled_matches_interpreted():
    x = RNG.standard_normal(5)
    g = both_backends(gd.grad(lse), T(x))[0]
    np.testing.assert_allclose(g, softmax(x), rtol=1e-12)
    h = both_backends(gd.hessian(lse), T(x))[0]
    np.testing.assert_allclose(h, lse_hessian(x), rtol=1e-12, atol=1e-14)
    jf = both_backends(gd.jacfwd(lse), T(x))[0]
    np.testing.assert_allclose(jf, softmax(x), rtol=1e-12)
    v = both_backends(gd.jit(lse), T(x))[0]
    np.testing.assert_allclose(v, np.log(np.exp(x).sum()), rtol=1e-13)


@gd.custom_vjp
def lse3(x):
    return ops.log(ops.sum(ops.exp(x)))


lse3.defvjp(lambda x: (lse3(x), x), lambda x, g: (3.0 * g * ops.softmax(x),))


def test_a_rule_that_is_not_the_derivative_is_what_every_transformation_uses():
    # 3 x softmax: differentiating the function instead of using the rule gives 1 x softmax
    x, v = RNG.standard_normal(4), RNG.standard_normal(4)
    np.testing.assert_allclose(gd.grad(lse3)(T(x)).asnumpy(), 3 * softmax(x), rtol=1e-12)
    np.testing.assert_allclose(gd.jacfwd(lse3)(T(x)).asnumpy(), 3 * softmax(x), rtol=1e-12)
    np.testing.assert_allclose(gd.jacrev(lse3)(T(x)).asnumpy(), 3 * softmax(x), rtol=1e-12)
    np.testing.assert_allclose(float(gd.jvp(lse3, (T(x),), (T(v),))[1]), 3 * softmax(x) @ v, rtol=1e-12)
    np.testing.assert_allclose(gd.hessian(lse3)(T(x)).asnumpy(), 3 * lse_hessian(x), rtol=1e-12, atol=1e-14)
    _, vjp_fn = gd.vjp(lse3, T(x))
    np.testing.assert_allclose(vjp_fn(T(2.0))[0].asnumpy(), 6 * softmax(x), rtol=1e-12)


def test_higher_orders_use_the_rule_of_the_rules_own_call():
    # the rule claims f' = 3 f (f is x^2): each order multiplies by 3 only if the call of f inside
    # fwd keeps its rule; ordinary AD of x^2 there would give 6x at second order
    @gd.custom_vjp
    def f(x):
        return x * x

    f.defvjp(lambda x: (f(x), f(x)), lambda y, g: (3.0 * g * y,))
    x = np.array([0.5, -1.5, 2.0])
    d1 = gd.grad(lambda x: ops.sum(f(x)))
    d2 = gd.grad(lambda x: ops.sum(d1(x)))
    d3 = gd.grad(lambda x: ops.sum(d2(x)))
    np.testing.assert_allclose(d1(T(x)).asnumpy(), 3 * x ** 2, rtol=1e-14)
    np.testing.assert_allclose(d2(T(x)).asnumpy(), 9 * x ** 2, rtol=1e-14)
    np.testing.assert_allclose(d3(T(x)).asnumpy(), 27 * x ** 2, rtol=1e-14)
    np.testing.assert_allclose(gd.jacfwd(gd.jacfwd(f))(T(x)).asnumpy()[np.arange(3), np.arange(3), np.arange(3)],
                               9 * x ** 2, rtol=1e-14)  # forward over forward: bwd transposed twice


# ---------------------------------------------------------------- custom_jvp


@gd.custom_jvp
def log1pexp(x):
    return ops.log(1.0 + ops.exp(x))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp(x), t * (1.0 - 1.0 / (1.0 + ops.exp(x)))


@gd.custom_jvp
def xsinx(x):
    return x * ops.sin(x)


@xsinx.defjvp
def _xsinx_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return xsinx(x), t * (ops.sin(x) + x * ops.cos(x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_custom_jvp_rule_is_used_where_plain_ad_gives_nan():
    x = np.array([1000.0, 3.0, -2.0])
    plain = gd.grad(lambda x: ops.sum(ops.log(1.0 + ops.exp(x))))(T(x)).asnumpy()
    assert np.isnan(plain[0])  # inf / inf: why the rule exists
    g = gd.grad(lambda x: ops.sum(log1pexp(x)))(T(x)).asnumpy()  # the transposed rule
    np.testing.assert_allclose(g, _sigmoid(x), rtol=1e-14)
    jf = gd.jacfwd(log1pexp)(T(x)).asnumpy()
    np.testing.assert_allclose(jf, np.diag(_sigmoid(x)), rtol=1e-14)


def test_custom_jvp_grad_jacfwd_hessian_vmap_closed_form():
    xs = RNG.uniform(-3, 3, 5)
    d1 = np.sin(xs) + xs * np.cos(xs)
    d2 = 2 * np.cos(xs) - xs * np.sin(xs)
    f = lambda x: ops.sum(xsinx(x))  # noqa: E731
    np.testing.assert_allclose(gd.grad(f)(T(xs)).asnumpy(), d1, rtol=1e-13)
    np.testing.assert_allclose(gd.jacfwd(xsinx)(T(xs)).asnumpy(), np.diag(d1), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gd.hessian(f)(T(xs)).asnumpy(), np.diag(d2), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gd.jacrev(gd.grad(f))(T(xs)).asnumpy(), np.diag(d2), rtol=1e-12, atol=1e-14)
    batch = RNG.uniform(-3, 3, (4, 3))
    got = gd.vmap(gd.grad(f))(T(batch)).asnumpy()
    np.testing.assert_allclose(got, np.stack([np.sin(b) + b * np.cos(b) for b in batch]), rtol=1e-13)
    np.testing.assert_allclose(gd.vmap(xsinx)(T(batch)).asnumpy(), batch * np.sin(batch), rtol=1e-14)
    # softplus' second derivative through the rule: sigmoid'(x)
    x = RNG.uniform(-4, 4, 3)
    h = gd.hessian(lambda x: ops.sum(log1pexp(x)))(T(x)).asnumpy()
    np.testing.assert_allclose(h, np.diag(_sigmoid(x) * (1 - _sigmoid(x))), rtol=1e-12, atol=1e-15)


def test_custom_jvp_rule_that_is_not_the_derivative_is_transposed_for_grad():
    @gd.custom_jvp
    def f(x, y):
        return x * y

    @f.defjvp
    def f_jvp(p, t):  # d(xy) = 2 dx + 5 dy: not the product rule, linear in the tangents
        return f(*p), 2.0 * t[0] + 5.0 * t[1]

    x, y = RNG.standard_normal(3), RNG.standard_normal(3)
    gx, gy = gd.grad(lambda x, y: ops.sum(f(x, y) * T([1.0, 2.0, 3.0])), grad_position=(0, 1))(T(x), T(y))
    np.testing.assert_allclose(gx.asnumpy(), [2.0, 4.0, 6.0])
    np.testing.assert_allclose(gy.asnumpy(), [5.0, 10.0, 15.0])


def test_defjvps_sums_one_rule_per_argument():
    @gd.custom_jvp
    def f(x, y):
        return ops.sin(x) * y

    f.defjvps(lambda tx, ans, x, y: ops.cos(x) * y * tx, lambda ty, ans, x, y: ops.sin(x) * ty * 10.0)  # 10x: shows
    x, y = RNG.standard_normal(3), RNG.standard_normal(3)
    gx, gy = gd.grad(lambda x, y: ops.sum(f(x, y)), grad_position=(0, 1))(T(x), T(y))
    np.testing.assert_allclose(gx.asnumpy(), np.cos(x) * y, rtol=1e-14)
    np.testing.assert_allclose(gy.asnumpy(), 10 * np.sin(x), rtol=1e-14)
    _, t = gd.jvp(f, (T(x), T(y)), (T(np.ones(3)), T(np.ones(3))))
    np.testing.assert_allclose(t.asnumpy(), np.cos(x) * y + 10 * np.sin(x), rtol=1e-14)

    @gd.custom_jvp
    def g(x, y):
        return x * y

    g.defjvps(None, lambda ty, ans, x, y: x * ty)  # no dependence on x declared: zero
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(g(x, T(y))))(T(x)).asnumpy(), np.zeros(3))


def test_custom_jvp_compiled_matches_interpreted():
    xs = RNG.uniform(-3, 3, 4)
    f = lambda x: ops.sum(xsinx(x) + log1pexp(x))  # noqa: E731
    g = both_backends(gd.grad(f), T(xs))[0]
    np.testing.assert_allclose(g, np.sin(xs) + xs * np.cos(xs) + _sigmoid(xs), rtol=1e-13)
    h = both_backends(gd.hessian(f), T(xs))[0]
    np.testing.assert_allclose(np.diag(h), 2 * np.cos(xs) - xs * np.sin(xs) + _sigmoid(xs) * (1 - _sigmoid(xs)),
                               rtol=1e-12)


# ---------------------------------------------------------------- straight-through estimator


@gd.custom_vjp
def ste_round(x):
    return ops.round(x)


ste_round.defvjp(lambda x: (ops.round(x), None), lambda _, g: (g,))


def test_straight_through_estimator():
    x = np.array([0.2, 0.7, -1.4, 2.6])
    w = np.array([1.0, -2.0, 3.0, 0.5])
    loss = lambda x, w: ops.sum(ste_round(x) * w)  # noqa: E731
    assert np.all(gd.grad(lambda x: ops.sum(ops.round(x) * T(w)))(T(x)).asnumpy() == 0)  # round's own derivative
    np.testing.assert_allclose(gd.grad(loss)(T(x), T(w)).asnumpy(), w)  # the cotangent passed straight through
    np.testing.assert_allclose(gd.grad(loss, 1)(T(x), T(w)).asnumpy(), np.round(x))
    np.testing.assert_allclose(gd.jacfwd(ste_round)(T(x)).asnumpy(), np.eye(4))
    xs = RNG.uniform(-2, 2, (3, 4))
    np.testing.assert_allclose(gd.vmap(gd.grad(loss), in_axes=(0, None))(T(xs), T(w)).asnumpy(), np.tile(w, (3, 1)))
    np.testing.assert_allclose(both_backends(gd.grad(loss), T(x), T(w))[0], w)


# ---------------------------------------------------------------- implicit differentiation of a solver


@gd.custom_vjp
def newton_sqrt(a):
    def body(c):
        x, _ = c
        nx = 0.5 * (x + a / x)
        return nx, ops.abs(nx - x)
    # every lane steps until the largest relative step is below 1e-14 (quadratic convergence)
    x, _ = gd.while_loop(lambda c: ops.max(c[1] / c[0]) > 1e-14, body, (ops.maximum(a, 1.0), ops.ones_like(a)))
    return x


def _newton_fwd(a):
    x = newton_sqrt(a)
    return x, x


def _newton_bwd(x, g):
    # x(a) solves F(x, a) = x^2 - a = 0: dx/da = -(dF/dx)^-1 dF/da = 1 / (2x)
    return (g / (2.0 * x),)


newton_sqrt.defvjp(_newton_fwd, _newton_bwd)


def test_implicit_differentiation_of_a_while_loop_solver():
    a = np.array([2.0, 9.0, 0.3, 1e4])
    np.testing.assert_allclose(newton_sqrt(T(a)).asnumpy(), np.sqrt(a), rtol=1e-14)
    f = lambda a: ops.sum(newton_sqrt(a))  # noqa: E731
    np.testing.assert_allclose(gd.grad(f)(T(a)).asnumpy(), 0.5 / np.sqrt(a), rtol=1e-13)
    # no max_steps needed: the loop itself is never differentiated in reverse mode ...
    with pytest.raises(GraphadError, match="max_steps"):
        gd.grad(lambda a: ops.sum(newton_sqrt.fun(a)))(T(a))
    # ... in forward mode (bwd transposed) nor at second order (the fwd rule's own call)
    np.testing.assert_allclose(gd.jacfwd(newton_sqrt)(T(a)).asnumpy(), np.diag(0.5 / np.sqrt(a)), rtol=1e-13)
    np.testing.assert_allclose(gd.hessian(f)(T(a)).asnumpy(), np.diag(-0.25 * a ** -1.5), rtol=1e-12)
    batch = RNG.uniform(0.5, 50, (3, 2))
    got = gd.vmap(gd.grad(f))(T(batch)).asnumpy()
    np.testing.assert_allclose(got, 0.5 / np.sqrt(batch), rtol=1e-13)
    np.testing.assert_allclose(both_backends(gd.grad(f), T(a))[0], 0.5 / np.sqrt(a), rtol=1e-13)


# ---------------------------------------------------------------- Cell.bprop


class DoubledDense(nn.Cell):
    """y = x @ W.T + b whose bprop doubles the input gradient."""

    def __init__(self):
        super().__init__()
        self.weight = gd.Parameter(T(RNG.standard_normal((2, 3))), name="weight")
        self.bias = gd.Parameter(T(RNG.standard_normal(2)), name="bias")

    def construct(self, x):
        return ops.matmul(x, ops.transpose(self.weight, (1, 0))) + self.bias

    def bprop(self, x, out, dout):
        return (2.0 * ops.matmul(dout, self.weight),)


def test_cell_bprop_is_used_by_grad_and_the_weights_get_ordinary_gradients():
    net = DoubledDense()
    x = RNG.standard_normal((4, 3))
    u = RNG.standard_normal((4, 2))
    W, b = net.weight.asnumpy(), net.bias.asnumpy()
    loss = lambda x: ops.sum(net(x) * T(u))  # noqa: E731
    np.testing.assert_allclose(net(T(x)).asnumpy(), x @ W.T + b, rtol=1e-14)
    np.testing.assert_allclose(gd.grad(loss)(T(x)).asnumpy(), 2 * u @ W, rtol=1e-13)  # what bprop returns
    gx, (gw, gb) = gd.grad(loss, grad_position=0, weights=net.trainable_params())(T(x))
    np.testing.assert_allclose(gx.asnumpy(), 2 * u @ W, rtol=1e-13)
    np.testing.assert_allclose(gw.asnumpy(), u.T @ x, rtol=1e-13)  # ordinary AD through construct
    np.testing.assert_allclose(gb.asnumpy(), u.sum(0), rtol=1e-13)
    # forward mode transposes bprop; vmap batches it; the compiled path inlines it
    v = RNG.standard_normal((4, 3))
    _, t = gd.jvp(net, (T(x),), (T(v),))
    np.testing.assert_allclose(t.asnumpy(), 2 * v @ W.T, rtol=1e-13)
    xs = RNG.standard_normal((5, 3))
    per = gd.vmap(gd.grad(lambda x: ops.sum(net(x))))(T(xs)).asnumpy()
    np.testing.assert_allclose(per, np.tile(2 * W.sum(0), (5, 1)), rtol=1e-13)
    got = both_backends(gd.grad(loss, grad_position=0, weights=net.trainable_params()), T(x))
    np.testing.assert_allclose(got[0], 2 * u @ W, rtol=1e-13)
    np.testing.assert_allclose(got[1], u.T @ x, rtol=1e-13)


class _TwoInputs(nn.Cell):
    def construct(self, x, y):
        return x * y

    def bprop(self, x, y, out, dout):
        return dout * y * 10.0, dout * x


class _BadBprop(nn.Cell):
    def construct(self, x, y):
        return x * y

    def bprop(self, x, y, out, dout):
        return (dout,)


def test_cell_bprop_with_several_inputs_and_its_errors():
    x, y = RNG.standard_normal(3), RNG.standard_normal(3)
    gx, gy = gd.grad(lambda x, y: ops.sum(_TwoInputs()(x, y)), grad_position=(0, 1))(T(x), T(y))
    np.testing.assert_allclose(gx.asnumpy(), 10 * y)
    np.testing.assert_allclose(gy.asnumpy(), x)
    with pytest.raises(GraphadError, match=r"_BadBprop.bprop returned 1 gradient\(s\) for 2 input\(s\)"):
        gd.grad(lambda x, y: ops.sum(_BadBprop()(x, y)))(T(x), T(y))
    # running it eagerly calls construct
    np.testing.assert_allclose(_BadBprop()(T(x), T(y)).asnumpy(), x * y)


class _SelfCalling(nn.Cell):
    def construct(self, x):
        return x * x

    def bprop(self, x, out, dout):
        return (dout * 3.0 * self(x) / x,)  # claims d(x^2)/dx = 3x, calling the cell itself


def test_a_bprop_that_calls_its_own_cell_keeps_its_rule_at_second_order():
    c, x = _SelfCalling(), np.array([1.0, 2.0, -0.5])
    g1 = gd.grad(lambda x: ops.sum(c(x)))
    np.testing.assert_allclose(g1(T(x)).asnumpy(), 3 * x, rtol=1e-14)
    # d/dx 3 c(x) / x with c' = 3c/x: 9 - 3 = 6 (ordinary AD of x^2 inside the rule would give 3)
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(g1(x)))(T(x)).asnumpy(), np.full(3, 6.0), rtol=1e-14)


# ---------------------------------------------------------------- pytrees, closures, nondiff arguments


def test_pytree_arguments_and_outputs():
    @gd.custom_vjp
    def f(p, x):
        return {"y": p["w"] * x, "s": ops.sum(x)}

    def f_fwd(p, x):
        return f(p, x), (p["w"], x)

    def f_bwd(res, g):
        w, x = res
        return {"w": g["y"] * x}, g["y"] * w + g["s"]

    f.defvjp(f_fwd, f_bwd)
    w, x = RNG.standard_normal(3), RNG.standard_normal(3)
    loss = lambda p, x: ops.sum(f(p, x)["y"] * 2.0) + f(p, x)["s"] * 3.0  # noqa: E731
    gp, gx = gd.grad(loss, grad_position=(0, 1))({"w": T(w)}, T(x))
    np.testing.assert_allclose(gp["w"].asnumpy(), 2 * x)
    np.testing.assert_allclose(gx.asnumpy(), 2 * w + 3)
    # forward mode through the pytree (bwd transposed)
    jx = gd.jacfwd(loss, 1)({"w": T(w)}, T(x)).asnumpy()
    np.testing.assert_allclose(jx, 2 * w + 3)


def test_grad_of_a_vmapped_custom_function_sums_the_cotangents_of_a_shared_operand():
    @gd.custom_vjp
    def mul(x, w):
        return x * w

    mul.defvjp(lambda x, w: (mul(x, w), (x, w)), lambda r, g: (g * r[1], 3.0 * g * r[0]))  # 3x: the rule shows
    xs, w = RNG.standard_normal((5, 2)), RNG.standard_normal(2)
    for in_axes in ((0, None), (None, 0)):
        xb, wb = (xs, w) if in_axes == (0, None) else (w, xs)

        def loss(a, b):
            return ops.sum(gd.vmap(mul, in_axes=in_axes)(a, b))
        ga, gb = gd.grad(loss, grad_position=(0, 1))(T(xb), T(wb))
        if in_axes == (0, None):  # x batched, w shared: w's cotangent is the sum over examples
            np.testing.assert_allclose(ga.asnumpy(), np.tile(w, (5, 1)))
            np.testing.assert_allclose(gb.asnumpy(), 3 * xs.sum(0))
        else:  # x shared, w batched
            np.testing.assert_allclose(ga.asnumpy(), xs.sum(0))
            np.testing.assert_allclose(gb.asnumpy(), 3 * np.tile(w, (5, 1)))
        # forward mode through the batched node (its transposed bwd), against a loop
        v = RNG.standard_normal(np.shape(xb))
        _, t = gd.jvp(lambda a: gd.vmap(mul, in_axes=in_axes)(a, T(wb)), (T(xb),), (T(v),))
        want = np.stack([v[k] * wb if in_axes == (0, None) else v * wb[k] for k in range(5)])
        np.testing.assert_allclose(t.asnumpy(), want, rtol=1e-14)


def test_captured_values_are_differentiated_by_ordinary_ad():
    a, x = 1.5, RNG.standard_normal(3)

    def outer(a, x):
        b = a * a  # traced, closed over by the custom function

        @gd.custom_vjp
        def f(x):
            return ops.sin(x) * b

        f.defvjp(lambda x: (f(x), x), lambda x, g: (g * ops.cos(x) * b,))
        return ops.sum(f(x))

    ga, gx = gd.grad(outer, grad_position=(0, 1))(T(a), T(x))
    np.testing.assert_allclose(float(ga), 2 * a * np.sin(x).sum(), rtol=1e-13)  # not zero
    np.testing.assert_allclose(gx.asnumpy(), a * a * np.cos(x), rtol=1e-13)
    ja, jx = gd.jacfwd(outer, grad_position=(0, 1))(T(a), T(x))
    np.testing.assert_allclose(float(ja), 2 * a * np.sin(x).sum(), rtol=1e-13)
    np.testing.assert_allclose(jx.asnumpy(), a * a * np.cos(x), rtol=1e-13)


def test_nondiff_argnums():
    @partial(gd.custom_vjp, nondiff_argnums=(0,))
    def power(k, x):
        return x ** k

    power.defvjp(lambda k, x: (power(k, x), x), lambda k, x, g: (g * k * x ** (k - 1),))

    @partial(gd.custom_jvp, nondiff_argnums=(1,))
    def scale(x, k):
        return x * k

    scale.defjvp(lambda k, p, t: (scale(p[0], k), t[0] * (k + 1)))  # deliberately k + 1
    x = RNG.uniform(0.5, 2, 3)
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(power(3, x)))(T(x)).asnumpy(), 3 * x ** 2, rtol=1e-13)
    np.testing.assert_allclose(gd.hessian(lambda x: ops.sum(power(3, x)))(T(x)).asnumpy(), np.diag(6 * x), rtol=1e-13)
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(scale(x, 4.0)))(T(x)).asnumpy(), np.full(3, 5.0))
    with pytest.raises(GraphadError, match="nondiff_argnums but holds a tensor"):
        gd.grad(lambda x: ops.sum(power(x, x)))(T(x))


def test_residuals_may_hold_python_values():
    @gd.custom_vjp
    def flat_sum(x):
        return ops.sum(ops.reshape(x, (-1,)))

    # the shape and the flag stay Python values in bwd (a tensor could not be a reshape target)
    flat_sum.defvjp(lambda x: (flat_sum(x), (x.shape, 2.0, x)),
                    lambda r, g: (ops.broadcast_to(g * r[1], r[0]),))
    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(gd.grad(flat_sum)(T(x)).asnumpy(), np.full((2, 3), 2.0))
    np.testing.assert_allclose(gd.jacfwd(flat_sum)(T(x)).asnumpy(), np.full((2, 3), 2.0))


def test_integer_arguments_and_outputs():
    @gd.custom_vjp
    def f(x, n):
        return x * ops.astype(n, "float64"), n + 1

    f.defvjp(lambda x, n: (f(x, n), n), lambda n, g: (g[0] * ops.astype(n, "float64") * 2.0, None))
    x, n = RNG.standard_normal(3), np.array([1, 2, 3], np.int32)
    g = gd.grad(lambda x, n: ops.sum(f(x, n)[0]))(T(x), gd.Tensor(n))
    np.testing.assert_allclose(g.asnumpy(), 2.0 * n)
    jf = gd.jacfwd(lambda x, n: f(x, n)[0])(T(x), gd.Tensor(n))
    np.testing.assert_allclose(jf.asnumpy(), np.diag(2.0 * n))


def test_custom_jvp_with_several_outputs_an_integer_one_and_a_none_tangent():
    @gd.custom_jvp
    def sc(x):
        return ops.sin(x), {"c": ops.cos(x), "n": ops.astype(x > 0, "int32")}

    @sc.defjvp
    def sc_jvp(p, t):
        (x,), (dx,) = p, t
        return sc(x), (ops.cos(x) * dx, {"c": -ops.sin(x) * dx, "n": None})

    def f(x):
        s, d = sc(x)
        return ops.sum(s * d["c"]) + ops.sum(ops.astype(d["n"], "float64"))  # sin 2x / 2 + a count

    x = RNG.uniform(-2, 2, 4)
    np.testing.assert_allclose(gd.grad(f)(T(x)).asnumpy(), np.cos(2 * x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gd.jacfwd(f)(T(x)).asnumpy(), np.cos(2 * x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.diag(gd.hessian(f)(T(x)).asnumpy()), -2 * np.sin(2 * x), rtol=1e-12, atol=1e-15)
    xs = RNG.uniform(-2, 2, (3, 4))
    np.testing.assert_allclose(gd.vmap(gd.grad(f))(T(xs)).asnumpy(), np.cos(2 * xs), rtol=1e-13, atol=1e-15)


def test_keyword_arguments_are_placed_by_the_signature():
    x = RNG.standard_normal(3)
    g = gd.grad(lambda x: ops.sum(xsinx(x=x)))(T(x)).asnumpy()
    np.testing.assert_allclose(g, np.sin(x) + x * np.cos(x), rtol=1e-13)


# ---------------------------------------------------------------- inside control flow, IR, errors


def test_custom_function_inside_scan_compiled_and_interpreted():
    xs = RNG.standard_normal((6, 3))

    def f(c0):
        def step(c, x):
            c = lse(c + x) * ops.ones_like(c) * 0.5 + c * 0.5
            return c, lse(c)
        _, ys = gd.scan(step, c0, T(xs))
        return ops.sum(ys)

    c0 = RNG.standard_normal(3)
    got = both_backends(gd.grad(f), T(c0))[0]
    fd = fd_jacobian(lambda a: float(f(T(a)).asnumpy()), c0)
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-9)


def test_ir_round_trip_and_inlining_before_lowering():
    g = gd.make_graph(lambda x: lse(x) + ops.sum(log1pexp(x)), optimize=False)(T([1.0, 2.0]))
    names = {n.prim.name for n in g.nodes}
    assert {"custom_vjp_call", "custom_jvp_call"} <= names
    text = print_graph(g)
    g2 = parse_graph(text)
    verify(g2)
    assert print_graph(g2) == text
    from graphad.passes.inline import inline_regions
    flat = inline_regions(g)
    assert not any("inline" in n.prim.traits for n in flat.nodes)
    from graphad.ir.interpret import interpret
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(interpret(flat, [x])[0], interpret(g, [x])[0], rtol=1e-15)


def test_the_compiled_value_and_grad_computes_the_function_once():
    # a vjp rule recomputes fwd for its residuals; inlined before cse, that copy merges with the
    # function's own forward pass (the runtime's compile_graph does this)
    from graphad.control.custom import inline_custom_calls
    from graphad.passes.manager import run_default_pipeline
    g = gd.make_graph(gd.value_and_grad(lse))(T([1.0, 2.0, 3.0]))
    flat = run_default_pipeline(inline_custom_calls(g))
    assert not any(n.prim.name.startswith("custom_") for n in flat.nodes)
    assert sum(n.prim.name == "log" for n in flat.nodes) == 1, [n.prim.name for n in flat.nodes]
    v, gr = both_backends(gd.value_and_grad(lse), T([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(v, np.log(np.exp([1.0, 2.0, 3.0]).sum()), rtol=1e-14)
    np.testing.assert_allclose(gr, softmax(np.array([1.0, 2.0, 3.0])), rtol=1e-13)


def test_eager_calls_run_the_function():
    x = T([0.5, -1.0])
    np.testing.assert_allclose(xsinx(x).asnumpy(), [0.5 * np.sin(0.5), -np.sin(-1.0)])
    np.testing.assert_allclose(float(lse3(x)), np.log(np.exp([0.5, -1.0]).sum()))


def test_errors_name_the_problem():
    @gd.custom_jvp
    def no_rule(x):
        return x

    with pytest.raises(GraphadError, match="no jvp rule"):
        gd.grad(lambda x: ops.sum(no_rule(x)))(T([1.0]))

    @gd.custom_vjp
    def bad(x, y):
        return x * y

    bad.defvjp(lambda x, y: (bad(x, y), None), lambda r, g: (g,))
    with pytest.raises(GraphadError, match=r"one cotangent per differentiable positional argument \(2\)"):
        gd.grad(lambda x: ops.sum(bad(x, x)))(T([1.0]))

    @gd.custom_vjp
    def wrong_shape(x):
        return x * 2.0

    wrong_shape.defvjp(lambda x: (wrong_shape(x), None), lambda r, g: (ops.sum(g),))
    with pytest.raises(GraphadError, match=r"has type f64\[\], but the primal it belongs to has type f64\[3\]"):
        gd.grad(lambda x: ops.sum(wrong_shape(x)))(T([1.0, 2.0, 3.0]))

    @gd.custom_jvp
    def bad_pair(x):
        return x

    bad_pair.defjvp(lambda p, t: p[0])
    with pytest.raises(GraphadError, match="must return a pair"):
        gd.jacfwd(bad_pair)(T([1.0]))


def test_a_rule_used_by_a_traced_call_cannot_be_replaced():
    # a staged graph keyed by the transformed function would keep the old rule: refused, not stale
    @gd.custom_vjp
    def f(x):
        return x * 2.0

    f.defvjp(lambda x: (f(x), None), lambda r, g: (g * 2.0,))
    f.defvjp(lambda x: (f(x), None), lambda r, g: (g * 3.0,))  # not used yet: fine
    np.testing.assert_allclose(f(T([1.0])).asnumpy(), [2.0])  # eager: runs f, traces nothing
    f.defvjp(lambda x: (f(x), None), lambda r, g: (g * 4.0,))
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(f(x)))(T([1.0])).asnumpy(), [4.0])
    with pytest.raises(GraphadError, match="already used by a traced call"):
        f.defvjp(lambda x: (f(x), None), lambda r, g: (g * 5.0,))
    gd.jacfwd(xsinx)(T([1.0]))
    with pytest.raises(GraphadError, match="already used by a traced call"):
        xsinx.defjvp(_xsinx_jvp)


# ---------------------------------------------------------------- rules graphad cannot transpose

NONLINEAR_TANGENT_MAPS = {
    "square": lambda x, t: t * t,
    "sin": lambda x, t: ops.sin(t),
    "relu": lambda x, t: ops.where(t > 0, t, 0.0),
    "max": lambda x, t: t * 0.0 + ops.max(t),
    "divides_by": lambda x, t: x / t,
    "outer": lambda x, t: ops.sum(ops.matmul(ops.reshape(t, (3, 1)), ops.reshape(t, (1, 3))), 0),
    # the identity going forward, but its derivative (what the transpose is taken from) is 0
    "stop_gradient": lambda x, t: ops.stop_gradient(t),
}
LINEAR_TANGENT_MAPS = {  # the rule, and the derivative it stands for (linear or affine in t)
    "scaled": (lambda x, t: ops.cos(x) * t, lambda x: np.diag(np.cos(x))),
    "masked": (lambda x, t: ops.where(x > 0, t, 0.0), lambda x: np.diag((x > 0).astype(float))),
    "divided": (lambda x, t: t / (1 + x * x), lambda x: np.diag(1 / (1 + x * x))),
    "affine": (lambda x, t: t + 1.0, lambda x: np.eye(3)),  # JAX transposes the linear part too
    "matrix": (lambda x, t: ops.matmul(ops.reshape(x, (3, 1)) * ops.ones((3, 3)), t),
               lambda x: np.repeat(x[:, None], 3, 1)),
    "solve": (lambda x, t: linalg.solve(ops.eye(3) * 2.0 + ops.reshape(x, (3, 1)) * 0.1, t),
              lambda x: np.linalg.inv(np.eye(3) * 2 + x[:, None] * 0.1)),
    "cumsum": (lambda x, t: ops.cumsum(t, 0), lambda x: np.tril(np.ones((3, 3)))),
}


def _custom(tangent_map):
    @gd.custom_jvp
    def f(x):
        return ops.sin(x)
    f.defjvp(lambda p, t: (f(p[0]), tangent_map(p[0], t[0])))
    return f


@pytest.mark.parametrize("name", sorted(NONLINEAR_TANGENT_MAPS))
def test_a_tangent_map_not_linear_is_refused_where_it_is_transposed(name):
    """grad/vjp/jacrev transpose a custom_jvp rule: one nonlinear in the tangents (t * t, sin(t),
    a relu or max of them, x / t, an outer product; stop_gradient, whose derivative is 0) has no
    transpose, and gave a made-up number (a
    gradient of 0 for t * t, 1 for sin(t)); it is refused, naming the operation and its line. jvp
    and jacfwd use the rule as written."""
    f = _custom(NONLINEAR_TANGENT_MAPS[name])
    x = T([0.5, -1.0, 2.0])
    with pytest.raises(GraphadError, match="custom_jvp rule is not linear in the tangents.*test_custom_derivatives.py"):
        gd.grad(lambda x: ops.sum(f(x)))(x)
    with pytest.raises(GraphadError, match="not linear in the tangents"):
        gd.jit(gd.jacrev(f))(x)
    _, tan = gd.jvp(f, (x,), (T([1.0, 1.0, 1.0]),))
    np.testing.assert_allclose(tan.asnumpy(), NONLINEAR_TANGENT_MAPS[name](x, T([1.0, 1.0, 1.0])).asnumpy())


@pytest.mark.parametrize("name", sorted(LINEAR_TANGENT_MAPS))
def test_linear_and_affine_tangent_maps_are_transposed(name):
    """Rules linear in the tangents (products with primal values, masks on the primals, a solve
    with the tangent on the right, cumsum) or affine (t + 1: its linear part, as
    JAX) are not refused, and jacrev is the transpose of the map jacfwd applies."""
    rule, jac = LINEAR_TANGENT_MAPS[name]
    f = _custom(rule)
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(gd.jacrev(f)(T(x)).asnumpy(), jac(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gd.jit(gd.jacrev(f))(T(x)).asnumpy(), jac(x), rtol=1e-12, atol=1e-12)
    if name != "affine":  # (jacfwd applies the rule as written: t + 1 is not a Jacobian's product)
        np.testing.assert_allclose(gd.jacfwd(f)(T(x)).asnumpy(), jac(x), rtol=1e-12, atol=1e-12)


def test_a_bwd_rule_not_linear_is_refused_where_it_is_transposed():
    """jvp/jacfwd/linearize transpose a custom_vjp's bwd: g * g gave a jacfwd of 0 while grad
    used the rule at g = 1; it is refused there, and grad still uses it as written."""
    @gd.custom_vjp
    def f(x):
        return x * 2.0
    f.defvjp(lambda x: (f(x), None), lambda r, g: (g * g,))
    x = T([1.0, 2.0, 3.0])
    for transform in (gd.jacfwd(f), lambda x: gd.jvp(f, (x,), (x,)), lambda x: gd.linearize(f, x)):
        with pytest.raises(GraphadError, match="custom_vjp bwd rule is not linear in the cotangents"):
            transform(x)
    np.testing.assert_array_equal(gd.grad(lambda x: ops.sum(f(x)))(x).asnumpy(), [1.0, 1.0, 1.0])


# ---- a custom trial (JAX's CustomJVPTest / CustomVJPTest / remat tests ported) ----

def test_rules_get_the_defaults_however_the_function_is_called():
    """`f(x)` gave the rules (x,) and `f(x=x)` (x, c): JAX's resolve_kwargs fills the defaults in
    always, so a JAX-style bwd returning one cotangent per argument failed the positional call."""
    @gd.custom_vjp
    def f(x, c=2.0):
        return c * ops.sin(x)
    f.defvjp(lambda x, c=2.0: (f(x, c), (x, c)), lambda r, g: (r[1] * ops.cos(r[0]) * g, None))

    @gd.custom_jvp
    def h(x, c=2.0):
        return c * ops.sin(x)
    h.defjvp(lambda p, t: (h(*p), p[1] * ops.cos(p[0]) * t[0]))
    x = gd.Tensor(np.array([0.1, 0.2]))
    want = 2.0 * np.cos([0.1, 0.2])
    for fn in (f, h):
        for call in (lambda x: fn(x), lambda x: fn(x=x), lambda x: fn(x, 2.0)):
            np.testing.assert_allclose(gd.grad(lambda x: ops.sum(call(x)))(x).asnumpy(), want, rtol=1e-15)


def test_checkpoint_takes_keyword_arguments():
    def g(x, scale=2.0):
        return ops.sin(x) * scale
    h = gd.checkpoint(g)
    x = gd.Tensor(np.array([0.1, 0.2]))
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(h(x, scale=3.0)))(x).asnumpy(), 3.0 * np.cos([0.1, 0.2]),
                               rtol=1e-15)
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(h(x=x)))(x).asnumpy(), 2.0 * np.cos([0.1, 0.2]), rtol=1e-15)


def test_a_rule_with_the_wrong_parameters_is_named_with_its_line():
    """A jvp rule or bwd that forgot a parameter raised Python's bare TypeError from inside."""
    @gd.custom_jvp
    def f(x):
        return ops.sin(x)
    f.defjvp(lambda primals: (ops.sin(primals[0]), primals[0]))

    @gd.custom_vjp
    def h(x):
        return ops.sin(x)
    h.defvjp(lambda x: (h(x), x), lambda g: (g,))
    x = gd.Tensor(np.ones(2))
    with pytest.raises(GraphadError, match=r"custom_jvp f: the jvp rule is called as jvp\(\*nondiff_args, primals, "
                                           r"tangents\), 2 positional argument\(s\), but its signature is \(primals\).*"
                                           r"the jvp rule at tests/test_custom_derivatives.py:\d+"):
        gd.jvp(f, (x,), (x,))
    with pytest.raises(GraphadError, match=r"custom_vjp h: bwd is called as bwd\(\*nondiff_args, residuals, g\).*"
                                           r"bwd at tests/test_custom_derivatives.py:\d+"):
        gd.grad(lambda x: ops.sum(h(x)))(x)
