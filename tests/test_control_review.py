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
