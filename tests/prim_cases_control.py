"""Oracle cases for the control-flow primitives (cond, while_loop, scan, checkpoint).

Same format as tests/prim_cases.py (which merges CONTROL_CASES into CASES). The regions are
small fixed programs; the references are NumPy loops written independently of the regions, so
the reference, derivative (float64 finite differences), batching (vmap vs loop) and compiled
tests cover these primitives like any other. Each case has one output, so the generic tests'
single-output checks apply (binding one of these primitives returns a 1-tuple: `op` unwraps it).
"""
from __future__ import annotations

import numpy as np

from graphad import ops
from graphad.control.regions import make_region
from graphad.ir.core import TensorType
from graphad.prims import PRIMITIVES

from prim_cases import F64, factory, make, shapes, side0, uniform


def _t(shape, dtype=F64):
    return TensorType(tuple(shape), dtype)


def _first(prim, attrs):
    p = PRIMITIVES[prim]
    return lambda *xs: p.bind(*xs, **attrs)[0]


@factory
def cond_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    dtype = F64 if ad else draw(__import__("hypothesis").strategies.sampled_from([F64, "float32"]))
    k = draw(__import__("hypothesis").strategies.integers(-1, 3))
    branches = (make_region("b0", [_t(s, dtype)] * 2, lambda x, y: [ops.sin(x) * y]),
                make_region("b1", [_t(s, dtype)] * 2, lambda x, y: [x + ops.exp(y)]))
    attrs = {"branches": branches}

    def sample(rng):
        return [np.int32(k), uniform(rng, s, -2, 2, dtype), uniform(rng, s, -2, 2, dtype)]

    def ref(i, x, y):
        return (np.sin(x) * y if int(i) <= 0 else x + np.exp(y)).astype(x.dtype)
    return make(draw, "cond", attrs, sample, ref, op=_first("cond", attrs))


@factory
def while_loop_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=1))
    # cond(limit, x): sum(x*x) < limit; body(a, x): 1.5 x + 0.1 a; at most 12 steps
    gc = make_region("c", [_t(()), _t(s)], lambda lim, x: [ops.less(ops.sum(x * x), lim)])
    gb = make_region("b", [_t(s), _t(s)], lambda a, x: [x * 1.5 + a * 0.1])
    attrs = {"cond": gc, "body": gb, "n_cond": 1, "n_body": 1, "max_steps": 12}

    def sample(rng):
        return [np.float64(rng.uniform(1.0, 20.0)), uniform(rng, s, -1, 1), uniform(rng, s, 0.2, 1)]

    def ref(lim, a, x):
        steps = 0
        while steps < 12 and float(np.sum(x * x)) < float(lim):
            x = x * 1.5 + a * 0.1
            steps += 1
        return x
    return make(draw, "while_loop", attrs, sample, ref, op=_first("while_loop", attrs))


@factory
def scan_case(draw, ad):
    from hypothesis import strategies as st
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    n = draw(st.integers(0, 4))
    rev = draw(st.booleans())
    g = make_region("body", [_t(s), _t(s), _t(s)], lambda w, c, x: [ops.sin(c) * w + x])
    attrs = {"body": g, "n_consts": 1, "n_carry": 1, "length": n, "reverse": rev}

    def sample(rng):
        return [uniform(rng, s, -1, 1), uniform(rng, s, -2, 2), uniform(rng, (n,) + tuple(s), -1, 1)]

    def ref(w, c, xs):
        order = range(n - 1, -1, -1) if rev else range(n)
        for i in order:
            c = np.sin(c) * w + xs[i]
        return c
    return make(draw, "scan", attrs, sample, ref, op=_first("scan", attrs))


@factory
def checkpoint_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    g = make_region("body", [_t(s), _t(s)], lambda x, y: [ops.sin(x) * ops.exp(y)])
    attrs = {"body": g, "policy": None}

    def sample(rng):
        return [uniform(rng, s, -2, 2), uniform(rng, s, -1, 1)]
    return make(draw, "checkpoint", attrs, sample, lambda x, y: np.sin(x) * np.exp(y),
                op=_first("checkpoint", attrs))


CONTROL_CASES = {"cond": [cond_case], "while_loop": [while_loop_case], "scan": [scan_case],
                 "checkpoint": [checkpoint_case]}
