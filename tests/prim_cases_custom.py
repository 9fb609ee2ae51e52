"""Oracle cases for the custom-derivative primitives (custom_jvp_call, custom_vjp_call).

Same format as tests/prim_cases.py (which merges CUSTOM_CASES into CASES). The regions are small
fixed programs whose rules are the true derivatives, so the generic derivative tests (float64
finite differences, <u, J v> = <J^T u, v>, second order) check that the rules are applied and
transposed consistently; each case has one output (binding returns a 1-tuple: `op` unwraps it).
A captured operand (n_caps=1) exercises the ordinary-AD path of captures, an int32 operand the
integer handling. `lowering_cases(C)` gives tests/test_lowering.py's examples (the runtime inlines
these primitives before lowering).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from graphad import ops
from graphad.control.regions import make_region
from graphad.ir.core import TensorType
from graphad.prims import PRIMITIVES

from prim_cases import F64, factory, ints, make, shapes, side0, uniform


def _t(shape, dtype=F64):
    return TensorType(tuple(shape), dtype)


def _first(prim, attrs):
    p = PRIMITIVES[prim]
    return lambda *xs: p.bind(*xs, **attrs)[0]


def _lse(x):
    m = ops.stop_gradient(ops.max(x))
    return m + ops.log(ops.sum(ops.exp(x - m)))


def _np_lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


# ---------------------------------------------------------------- regions (typed: one set per dtype)


def xsinx_regions(s, dtype):
    """custom_jvp_call(c, x) {n_caps=1}: c * x sin x, the rule's tangent for x only (c by AD)."""
    body = make_region("xsinx", [_t((), dtype), _t(s, dtype)], lambda c, x: [c * x * ops.sin(x)])
    jvp = make_region("xsinx_jvp", [_t((), dtype), _t(s, dtype), _t(s, dtype)],
                      lambda c, x, t: [c * x * ops.sin(x), t * c * (ops.sin(x) + x * ops.cos(x))])
    return {"body": body, "jvp": jvp, "n_caps": 1}


def scaled_regions(s, dtype):
    """custom_jvp_call(x, n: int32) {n_caps=0}: x^2 n, the integer operand has no tangent."""
    body = make_region("scaled", [_t(s, dtype), _t(s, "int32")], lambda x, n: [x * x * ops.astype(n, dtype)])
    jvp = make_region("scaled_jvp", [_t(s, dtype), _t(s, "int32"), _t(s, dtype)],
                      lambda x, n, t: [x * x * ops.astype(n, dtype), 2.0 * x * t * ops.astype(n, dtype)])
    return {"body": body, "jvp": jvp, "n_caps": 0}


def lse_regions(s, dtype):
    """custom_vjp_call(c, x) {n_caps=1}: c * logsumexp(x); residuals (x, lse x); bwd g c softmax."""
    body = make_region("lse", [_t((), dtype), _t(s, dtype)], lambda c, x: [c * _lse(x)])

    def fwd_fn(c, x):
        y = _lse(x)
        return [c * y, x, y]
    fwd = make_region("lse_fwd", [_t((), dtype), _t(s, dtype)], fwd_fn)
    bwd = make_region("lse_bwd", [_t((), dtype), _t(s, dtype), _t((), dtype), _t((), dtype)],
                      lambda c, x, y, g: [g * c * ops.exp(x - y)])
    return {"body": body, "fwd": fwd, "bwd": bwd, "n_caps": 1}


def product_regions(s, dtype):
    """custom_vjp_call(x, y) {n_caps=0}: x y elementwise; residuals (x, y); bwd (g y, g x)."""
    body = make_region("prod", [_t(s, dtype)] * 2, lambda x, y: [x * y])
    fwd = make_region("prod_fwd", [_t(s, dtype)] * 2, lambda x, y: [x * y, x, y])
    bwd = make_region("prod_bwd", [_t(s, dtype)] * 3, lambda x, y, g: [g * y, g * x])
    return {"body": body, "fwd": fwd, "bwd": bwd, "n_caps": 0}


# ---------------------------------------------------------------- cases


def _dtype(draw, ad):
    return F64 if ad else draw(st.sampled_from([F64, "float32"]))


@factory
def custom_jvp_capture_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    d = _dtype(draw, ad)
    attrs = xsinx_regions(s, d)

    def sample(rng):
        return [np.asarray(rng.uniform(-2, 2), d), uniform(rng, s, -3, 3, d)]
    return make(draw, "custom_jvp_call", attrs, sample, lambda c, x: (c * x * np.sin(x)).astype(d),
                op=_first("custom_jvp_call", attrs))


@factory
def custom_jvp_int_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    d = _dtype(draw, ad)
    attrs = scaled_regions(s, d)

    def sample(rng):
        return [uniform(rng, s, -2, 2, d), ints(rng, s, -3, 3, "int32")]
    return make(draw, "custom_jvp_call", attrs, sample, lambda x, n: (x * x * n).astype(d),
                op=_first("custom_jvp_call", attrs))


@factory
def custom_vjp_capture_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=1))  # logsumexp of nothing is -inf
    d = _dtype(draw, ad)
    attrs = lse_regions(s, d)

    def sample(rng):
        return [np.asarray(rng.uniform(-2, 2), d), uniform(rng, s, -3, 3, d)]
    return make(draw, "custom_vjp_call", attrs, sample, lambda c, x: np.asarray(c * _np_lse(x)).astype(d),
                op=_first("custom_vjp_call", attrs))


@factory
def custom_vjp_two_args_case(draw, ad):
    s = draw(shapes(max_dims=2, min_side=side0(draw)))
    d = _dtype(draw, ad)
    attrs = product_regions(s, d)

    def sample(rng):
        return [uniform(rng, s, -2, 2, d), uniform(rng, s, -2, 2, d)]
    return make(draw, "custom_vjp_call", attrs, sample, lambda x, y: (x * y).astype(d),
                op=_first("custom_vjp_call", attrs))


CUSTOM_CASES = {"custom_jvp_call": [custom_jvp_capture_case, custom_jvp_int_case],
                "custom_vjp_call": [custom_vjp_capture_case, custom_vjp_two_args_case]}


def lowering_cases(C) -> dict:
    """tests/test_lowering.py's examples of these primitives, in float32 and float64 (regions are
    typed, so each dtype gets its own example): `C(inputs, attrs)` is that module's record."""
    out: dict = {"custom_jvp_call": [], "custom_vjp_call": []}
    for d in ("float32", "float64"):
        s = (3, 4)
        out["custom_jvp_call"].append(C([((), d), (s, d)], xsinx_regions(s, d)))
        out["custom_jvp_call"].append(C([(s, d), (s, "int32")], scaled_regions(s, d)))
        out["custom_vjp_call"].append(C([((), d), (s, d)], lse_regions(s, d)))
        out["custom_vjp_call"].append(C([(s, d), (s, d)], product_regions(s, d)))
    return out
