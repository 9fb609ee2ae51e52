"""Small typed regions of the custom-derivative primitives, shared by the test tables.

tests/prim_cases_custom.py builds its oracle cases from them; `lowering_cases(C)` gives
tests/test_lowering.py's examples and `ir_text_examples()` tests/test_ir_text.py's. The rules
are the true derivatives. This module imports no other test module, so any of those can import
it first (prim_cases imports prim_cases_custom at its end).
"""
from __future__ import annotations

import numpy as np

from graphad import ops
from graphad.control.regions import make_region
from graphad.ir.core import TensorType

F64 = "float64"


def _t(shape, dtype=F64):
    return TensorType(tuple(shape), dtype)


def _lse(x):
    m = ops.stop_gradient(ops.max(x))
    return m + ops.log(ops.sum(ops.exp(x - m)))


def np_lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


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


def ir_text_examples() -> dict:
    """tests/test_ir_text.py's EXAMPLES entries (input types, attributes): the regions print inline
    and parse back."""
    s, d = (3,), "float32"
    return {"custom_jvp_call": ([_t((), d), _t(s, d)], xsinx_regions(s, d)),
            "custom_vjp_call": ([_t((), d), _t(s, d)], lse_regions(s, d))}
