"""Oracle cases for the custom-derivative primitives (custom_jvp_call, custom_vjp_call).

Same format as tests/prim_cases.py (which merges CUSTOM_CASES into CASES). The regions are small
fixed programs whose rules are the true derivatives, so the generic derivative tests (float64
finite differences, <u, J v> = <J^T u, v>, second order) check that the rules are applied and
transposed consistently; each case has one output (binding returns a 1-tuple: `op` unwraps it).
A captured operand (n_caps=1) exercises the ordinary-AD path of captures, an int32 operand the
integer handling. The regions come from tests/custom_regions.py, which also gives the lowering
and IR-text tests their examples.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from graphad.prims import PRIMITIVES

from custom_regions import lse_regions, np_lse, product_regions, scaled_regions, xsinx_regions
from prim_cases import F64, factory, ints, make, shapes, side0, uniform


def _first(prim, attrs):
    p = PRIMITIVES[prim]
    return lambda *xs: p.bind(*xs, **attrs)[0]


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
    return make(draw, "custom_vjp_call", attrs, sample, lambda c, x: np.asarray(c * np_lse(x)).astype(d),
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
