"""TVM 0.27's TIR CommonSubexprElim can hoist a value out of a Let chain inside a Select's branch
above the Let that binds what it reads; the build then stops with "variable cse_v1 has been used
before definition" (the forward derivative of a float32 `power` with broadcasting hit it: pow's
float64 kernel under a where). Such builds fell back to TVM's default schedules with a warning;
`lowering/tir_lowering.lower_tir` now runs the TIR pipeline again without that pass (LLVM's own
common-subexpression passes still run), keeping graphad's schedules.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.ir.interpret import interpret
from graphad.runtime.executable import compile_graph, graph_for_lowering

pytestmark = pytest.mark.tvm


def _pow_jvp(x, y, tx, ty):
    return gd.jvp(lambda a, b: ops.power(a, b), (x, y), (tx, ty))[1]


def test_a_build_tvm_cse_breaks_keeps_graphads_schedules():
    rng = np.random.default_rng(0)
    args = [rng.uniform(-3, 3, (4, 1, 3)).astype(np.float32), rng.uniform(-3, 3, (3,)).astype(np.float32),
            np.ones((4, 1, 3), np.float32), np.ones(3, np.float32)]
    graph = graph_for_lowering(gd.make_graph(_pow_jvp)(*[gd.Tensor(a) for a in args]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "TVM rejected a scheduled kernel" fallback
        exe = compile_graph(graph, cache=False)
    assert exe.report["pipeline"] == "cpu-fused-scheduled" and exe.report["fallback"] is None, exe.report
    got = [np.asarray(t._data) for t in exe([gd.Tensor(a) for a in args])]
    want = interpret(graph, args)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)


def test_only_that_defect_is_retried():
    from graphad.lowering.tir_lowering import _cse_defect
    assert _cse_defect(RuntimeError("InternalError: Check failed: (!use_count_.count(v)) is false: variable "
                                    "cse_v1 has been used before definition!"))
    assert not _cse_defect(RuntimeError("variable x has been used before definition!"))
    assert not _cse_defect(RuntimeError("Check failed: cse_v1 is not bound"))
