"""Derivative rules of every primitive against numerical oracles, in float64 on drawn shapes.

For every differentiable primitive (a registered primitive without a table entry in
tests/prim_cases.py fails) on a one-node graph:
  * jvp (forward-ad's jvp_graph) against central finite differences (eps 1e-6, rtol 1e-5);
  * vjp (reverse-ad's vjp_graph) against the jvp by the identity <u, J v> = <J^T u, v>;
  * second order: the vjp of the jvp graph and the jvp of the vjp graph against central
    differences of the first-order result.
Sampled points avoid the non-differentiable sets (kinks, ties, poles); at ties of maximum/max the
inner-product identity is still checked. Non-differentiable primitives give zero derivatives.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphad
from graphad.passes.forward_ad import jvp_graph
from graphad.passes.reverse_ad import vjp_graph

from prim_cases import ALL_PRIMS, numpy_backend_for_module, assert_close, cases_for, hsettings, is_differentiable, run

SETTINGS = hsettings(15)
SETTINGS2 = hsettings(8)
DIFF = [n for n in ALL_PRIMS if is_differentiable(n)]
NONDIFF = [n for n in ALL_PRIMS if not is_differentiable(n)]



@pytest.fixture(scope="module", autouse=True)
def _numpy_backend(numpy_backend_for_module):
    """Shadows conftest's function-scoped fixture, which hypothesis tests may not use."""


def _rand_like(rng, a):
    a = np.asarray(a)
    if a.dtype.kind == "c":
        return (rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape)).astype(a.dtype)
    return rng.standard_normal(a.shape).astype(a.dtype)


def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def _inner(xs, ys) -> float:
    """The pairing cotangents and tangents are transposed under: sum(x * y), its real part for
    complex values, without conjugation (JAX's convention, docs/complex.md)."""
    return float(sum(np.sum(_wide(x) * _wide(y)).real for x, y in zip(xs, ys)))


def _fd(f, args, idx, dirs, eps):
    """Central difference of f (list of arrays -> list of arrays) along dirs on inputs idx."""
    plus, minus = list(args), list(args)
    for i, v in zip(idx, dirs):
        plus[i] = (args[i] + eps * v).astype(args[i].dtype)
        minus[i] = (args[i] - eps * v).astype(args[i].dtype)
    return [(_wide(p) - _wide(m)) / (2 * eps) for p, m in zip(f(plus), f(minus))]


def _tol(case, vals):
    scale = max([1.0] + [float(np.max(np.abs(v))) for v in vals if np.size(v)])
    return case.rtol, case.rtol * scale


def _check_first_order(case, rng):
    g = case.graph()
    D = case.diff_inputs
    args = case.args
    n_out = len(g.outputs)
    vs = [_rand_like(rng, args[i]) for i in D]
    # jvp against central differences
    jg = jvp_graph(g, D)
    res = run(jg, args + vs)
    ys, tys = res[:n_out], res[n_out:]
    for y, want in zip(ys, run(g, args)):
        assert_close(y, want, what=f"jvp graph primal output of {case}")
    if case.zero_grad:
        for t in tys:
            assert not np.any(t), f"{case}: the tangent must be zero"
    elif case.fd:
        fds = _fd(lambda a: run(g, a), args, D, vs, case.eps)
        rtol, atol = _tol(case, fds)
        for t, fd in zip(tys, fds):
            assert_close(t, fd, rtol=rtol, atol=atol, what=f"jvp vs central differences of {case}")
    # vjp against the jvp: <u, J v> = <J^T u, v>
    vg = vjp_graph(g, D)
    us = [_rand_like(rng, y) for y in ys]
    res = run(vg, args + us)
    gs = res[n_out:]
    assert len(gs) == len(D)
    for gi, i in zip(gs, D):
        assert gi.shape == args[i].shape and gi.dtype == args[i].dtype, f"{case}: gradient {gi.dtype}{gi.shape}"
    lhs, rhs = _inner(us, tys), _inner(gs, vs)
    mag = max(1.0, _inner([abs(u) for u in us], [abs(t) for t in tys]), _inner([abs(x) for x in gs], [abs(v) for v in vs]))
    tol = 1e-4 if any(a.dtype == np.float32 for a in args + ys) else 1e-10
    assert abs(lhs - rhs) <= tol * mag, f"{case}: <u, Jv> = {lhs} but <J^T u, v> = {rhs}"


@pytest.mark.parametrize("name", DIFF)
@SETTINGS
@given(data=st.data())
def test_jvp_fd_and_vjp_inner_product(name, data):
    for make_case in cases_for(name):
        case = data.draw(make_case(True), label=make_case.__name__)
        _check_first_order(case, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed")))


def _second_order_cases(name, data):
    for make_case in cases_for(name):
        case = data.draw(make_case(True), label=make_case.__name__)
        if not case.fd or not case.diff_inputs or any(a.dtype != np.float64 for a in case.args if a.dtype.kind == "f"):
            continue
        yield case, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


SECOND = [n for n in DIFF if n not in ("constant", "full", "arange", "eye")]


@pytest.mark.parametrize("name", SECOND)
@SETTINGS2
@given(data=st.data())
def test_vjp_of_jvp_against_fd(name, data):
    """d/dx <u, J(x) v> from reverse-ad of the jvp graph, against central differences along w."""
    for case, rng in _second_order_cases(name, data):
        g = case.graph()
        D, args, n_out = case.diff_inputs, case.args, len(g.outputs)
        vs = [_rand_like(rng, args[i]) for i in D]
        ws = [_rand_like(rng, args[i]) for i in D]
        jg = jvp_graph(g, D)  # (args, v) -> (y, Jv)
        us = [_rand_like(rng, y) for y in run(g, args)]
        hg = vjp_graph(jg, D, cts_for=list(range(n_out, 2 * n_out)))  # seeded at the tangent outputs
        res = run(hg, args + vs + us)
        hs = res[2 * n_out:]
        got = _inner(hs, ws)

        def s(a):  # x -> <u, J(x) v>
            return [np.asarray(_inner(us, run(jg, a + vs)[n_out:]))]
        (want,) = _fd(s, args, D, ws, case.eps)
        assert abs(got - float(want)) <= case.rtol * max(1.0, abs(float(want))), \
            f"{case}: vjp of jvp gives {got}, central differences {float(want)}"


@pytest.mark.parametrize("name", SECOND)
@SETTINGS2
@given(data=st.data())
def test_jvp_of_vjp_against_fd(name, data):
    """The derivative of x -> J(x)^T u along w from forward-ad of the vjp graph, against central differences."""
    for case, rng in _second_order_cases(name, data):
        g = case.graph()
        D, args, n_in, n_out = case.diff_inputs, case.args, len(case.args), len(g.outputs)
        us = [_rand_like(rng, y) for y in run(g, args)]
        ws = [_rand_like(rng, args[i]) for i in D]
        vg = vjp_graph(g, D)  # (args, u) -> (y, J^T u)
        wg = jvp_graph(vg, D)  # tangents on the primal inputs only
        res = run(wg, args + us + ws)
        n_vout = n_out + len(D)
        tgs = res[n_vout + n_out:]
        fds = _fd(lambda a: run(vg, a[:n_in] + us)[n_out:], args, D, ws, case.eps)
        rtol, atol = _tol(case, fds)
        for t, fd in zip(tgs, fds):
            assert_close(t, fd, rtol=rtol, atol=atol, what=f"jvp of vjp vs central differences of {case}")


@pytest.mark.parametrize("name", NONDIFF)
@SETTINGS
@given(data=st.data())
def test_nondiff_primitives_have_zero_derivatives(name, data):
    """A primitive with a `nondiff` reason: both passes accept it and give zero derivatives."""
    for make_case in cases_for(name):
        case = data.draw(make_case(True), label=make_case.__name__)
        D = [i for i, a in enumerate(case.args) if a.dtype.kind == "f"]
        g = case.graph()
        n_out = len(g.outputs)
        rng = np.random.default_rng(0)
        res = run(jvp_graph(g, D), case.args + [_rand_like(rng, case.args[i]) for i in D])
        assert all(not np.any(t) for t in res[n_out:])
        ys = run(g, case.args)
        res = run(vjp_graph(g, D), case.args + [np.zeros_like(y) for y in ys])
        assert all(not np.any(t) for t in res[n_out:])
