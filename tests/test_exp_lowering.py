"""The float32 `exp` and `sigmoid` kernels (lowering/relax_ops.py `_fast_exp`): topi.fast_exp's
stage, operation for operation, but for Cephes' reduction by ln 2 in two parts.

Accuracy against float64 NumPy, compiled for this CPU and for a generic x86-64 target without
FMA: topi.fast_exp's one-part reduction (`x - n * ln2`, the product rounded) was up to 68 ulp off
there for |x| in the tens, and up to 4.4 ulp with the FMA LLVM makes of it for this CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm

X = np.concatenate([np.linspace(-87.3, 88.7, 200001), np.random.default_rng(5).uniform(-1, 1, 50000),
                    [0.0, -0.0, 88.0, 88.37626, 88.72, 1e-30, -1e-30]]).astype(np.float32)


def _ulps(got, want):
    """|got - want| in units of the float32 spacing at want (want in float64)."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want.astype(np.float32))).astype(np.float64)


def _normal(want):
    return (want > np.finfo(np.float32).tiny) & (want < np.finfo(np.float32).max)


def test_exp_and_sigmoid_within_2_5_ulp_compiled():
    gd.set_backend("tvm")
    try:
        e = gd.jit(ops.exp)(gd.Tensor(X)).asnumpy()
        s = gd.jit(ops.sigmoid)(gd.Tensor(X)).asnumpy()
        special = gd.jit(ops.exp)(gd.Tensor(np.array([np.nan, np.inf, -np.inf, 89.0, -120.0], np.float32))).asnumpy()
    finally:
        gd.set_backend("numpy")
    want = np.exp(X.astype(np.float64))
    assert _ulps(e, want)[_normal(want)].max() < 2.5  # measured 1.94 (topi.fast_exp: 4.45)
    want_s = 1.0 / (1.0 + np.exp(-X.astype(np.float64)))
    assert _ulps(s, want_s)[_normal(want_s)].max() < 2.5  # measured 2.30 (5.25)
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == 0.0 and special[3] == np.inf
    assert special[4] == 0.0  # no subnormal results (documented: subnormal flushing)


def test_exp_without_fma_within_2_5_ulp():
    """`_exp_f32` built from TE for a generic x86-64 target, which has no FMA to hide the
    reduction's rounding."""
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.relax_ops import _exp_f32
    tvm = load_tvm()
    t = tvm.te.placeholder((X.size,), "float32", name="t")
    out = _exp_f32(t, tvm.te, tvm.topi, tvm.tirx)
    lib = tvm.compile(tvm.IRModule({"main": tvm.te.create_prim_func([t, out]).with_attr("global_symbol", "main")}),
                      target={"kind": "llvm", "mcpu": "x86-64"})
    res = tvm.runtime.tensor(np.zeros_like(X))
    lib["main"](tvm.runtime.tensor(X), res)
    want = np.exp(X.astype(np.float64))
    assert _ulps(res.numpy(), want)[_normal(want)].max() < 2.5  # topi.fast_exp here: 67.8 ulp
