"""Kernels that pass NaN through keep their vector code.

graphad's float32 exp, tanh, sigmoid, erf, log, log1p and expm1 return NaN for NaN by a Select on
`isnan` (log, log1p and expm1 are graphad's own polynomials, not the C library's), and TVM
0.27's VectorizeLoop turns a statement holding an operator without its TVectorizable attribute,
`tirx.isnan` among them, into a serial loop over the lanes: LLVM got those kernels scalar (tanh
over 2^18 float32 elements took 361 us, 74 us vectorized). lowering/rare_path.py `vector_isnan`
renames isnan to an operator TVM vectorizes for its passes, in every kernel that reads no bool
buffer. Checked on the LLVM IR each kernel's parallel loop body compiles to, and on the values,
NaN included (a kernel that reads a bool mask keeps TVM's isnan and its scalar statement).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm

X = np.tile(np.concatenate([np.linspace(-9, 9, 4093), [np.nan, np.inf, -np.inf]]).astype(np.float32).reshape(64, 64), (4, 4))

CASES = {
    "exp * x": lambda t: ops.exp(t) * t,
    "tanh": lambda t: ops.tanh(t),
    "sigmoid * x": lambda t: ops.sigmoid(t) * t,
    "erf": lambda t: ops.erf(t),
    "erfc": lambda t: ops.erfc(t),
    "softmax": lambda t: ops.softmax(t, axis=-1),
    "log": lambda t: ops.log(ops.abs(t)),
    "log1p": lambda t: ops.log1p(ops.abs(t)),
    "log2": lambda t: ops.log2(ops.abs(t)),
    "log10": lambda t: ops.log10(ops.abs(t)),
    "expm1": lambda t: ops.expm1(t),
    "log_softmax": lambda t: ops.log_softmax(t, axis=-1),
    "softplus": lambda t: ops.softplus(t),
    "log_sigmoid": lambda t: ops.log_sigmoid(t),
    "gelu gradient": lambda t: gd.grad(lambda u: ops.sum(ops.gelu(u)))(t),
    # computed in float64 without a call (the C library's exp2f, sinhf, coshf, atanf, hypotf, powf, asinf, ... per
    # element before: scalar loops)
    "exp2": lambda t: ops.exp2(t),
    "sinh": lambda t: ops.sinh(t),
    "cosh": lambda t: ops.cosh(t),
    "arctan": lambda t: ops.arctan(t),
    "hypot": lambda t: ops.hypot(t, t * 0.5 + 1.0),
    "pow": lambda t: ops.abs(t) ** (t * 0.25),
    "pow of negatives": lambda t: t ** 3.0 + t ** -1.5,
    "arcsin": lambda t: ops.arcsin(t * 0.1),
    "arccos": lambda t: ops.arccos(t * 0.1),
    "arctanh": lambda t: ops.arctanh(t * 0.1),
    "arcsinh": lambda t: ops.arcsinh(t),
    "arccosh": lambda t: ops.arccosh(ops.abs(t) + 1.0),
    "cbrt": lambda t: ops.cbrt(t),
    "arctan2": lambda t: ops.arctan2(t, t * -0.5 + 1.0),
}


def _loop_bodies(fn, *args) -> list[str]:
    """The LLVM IR of the parallel loop bodies of fn's compiled kernels."""
    from graphad.lowering import lower_graph
    from graphad.lowering.pipeline import build
    from graphad.runtime.executable import graph_for_lowering
    ex, _ = build(lower_graph(graph_for_lowering(gd.jit(fn).lower(*args).graph)))
    bodies = []
    for lib in [ex.mod, *ex.mod.imports]:
        try:
            ll = lib.inspect_source("ll")
        except Exception:  # noqa: BLE001 - a library without LLVM source (the VM's own)
            continue
        bodies += [f for f in re.split(r"\ndefine ", ll)[1:] if "parallel_lambda" in f.split("(")[0]]
    return bodies


@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_passing_kernels_are_vectorized(name):
    bodies = _loop_bodies(CASES[name], gd.Tensor(X))
    assert bodies, "no parallel loop"
    for body in bodies:
        assert re.search(r"<\d+ x (float|double)>", body), f"{name}: a loop body without vector code"
        assert not re.search(r"call [^\n]*@(exp2f|sinhf|coshf|atanf|hypotf|powf|atan2f|asinf|acosf|atanhf|asinhf|acoshf|cbrtf|llvm\.pow\.[^(]*)\(", body), f"{name}: a libm call per element"
    gd.set_backend("tvm")
    got = gd.jit(CASES[name])(gd.Tensor(X)).asnumpy()
    gd.set_backend("numpy")  # (the suite's fixture puts back the backend it found)
    with np.errstate(all="ignore"):
        want = CASES[name](gd.Tensor(X)).asnumpy()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # (the gelu gradient is a difference of O(1) terms: absolute error of their rounding)
    np.testing.assert_allclose(got[ok], want[ok], rtol=3e-6, atol=2e-7)


def test_a_kernel_reading_a_bool_mask_keeps_nan():
    """A kernel reading a bool buffer keeps TVM's isnan (TVM's code generator combined vectors of
    loaded bools with vectors of a renamed isnan into IR LLVM rejected): it builds and is right."""
    mask = (np.arange(X.size) % 3 == 0).reshape(X.shape)
    fn = (lambda t, m: ops.where(m, ops.exp(t), t * 2.0))
    gd.set_backend("tvm")
    got = gd.jit(fn)(gd.Tensor(X), gd.Tensor(mask)).asnumpy()
    with np.errstate(all="ignore"):
        want = np.where(mask, np.exp(X), X * 2)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=3e-6)


@pytest.mark.parametrize("name", ["erfc", "softplus", "log_sigmoid", "gelu gradient"])
def test_float64_exponential_has_no_float_to_int64_conversion(name):
    """The float64 exponential inside float32 erfc and logaddexp forms 2^k from k's bits by adding
    1.5 * 2^52 (`relax_ops._exp_f64`), not by converting k to int64: x86 has no vector instruction
    for that conversion before AVX-512, and LLVM turned it into 8 scalar conversions per loop step
    on an AVX2 machine (erfc 1,210 -> 1,055 us, softplus 1,620 -> 1,210 us over 2^18 elements, one
    thread). The values are checked by the test above."""
    for body in _loop_bodies(CASES[name], gd.Tensor(X)):
        assert not re.search(r"fptosi [^\n]*double[^\n]* to [^\n]*i64", body), f"{name}: a float64 -> int64 conversion"
