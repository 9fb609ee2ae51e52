"""Elementwise stages that inlining keeps are computed at their consumer's vector loop.

schedule.py `_Rules.compute_at_consumers`: a stage with two or more operations read at several
sites (tanh's clamp, read by its polynomial at twenty sites; tanh read twice by a square) was a
loop nest of its own writing a whole-size buffer that the next nest read back. It is now computed
a vector at a time inside its consumer's loop. The values must be those of the schedule without
the move, bit for bit (the same operations in the same order), on odd shapes, vector tails and
sizes below one vector; and the moved stage's buffer must not be a whole-size allocation any more.
(A first attempt merged the two innermost loops instead: TVM then kept one element of the stage's
buffer for all the lanes of the vectorized loop, and exp(x) came out as its last lane's value
broadcast, which the interpreter comparison in tests/test_lowering.py caught.)
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm

RNG = np.random.default_rng(5)


def _ln_grad(u):
    m = ops.mean(u, axis=-1, keepdims=True)
    v = ops.mean((u - m) ** 2, axis=-1, keepdims=True)
    return ops.sum((u - m) / ops.sqrt(v + 1e-5) * ops.cos(u))


FUNCS = {
    "tanh": lambda t: ops.tanh(t),
    "1 - tanh^2": lambda t: 1.0 - ops.tanh(t) ** 2,
    "tanh gradient": lambda t: gd.grad(lambda u: ops.sum(ops.tanh(u)))(t),
    "exp * x": lambda t: ops.exp(t) * t,
    "softmax": lambda t: ops.softmax(t, axis=-1),
    "gelu gradient": lambda t: gd.grad(lambda u: ops.sum(ops.gelu(u)))(t),
    "layer norm gradient": lambda t: gd.grad(_ln_grad)(t),
    "sigmoid chain": lambda t: ops.sigmoid(ops.tanh(t) * 3.0) * ops.exp(-t * t),
    "two outputs": lambda t: (ops.tanh(t) * 2.0, ops.exp(t) + 1.0),
}
SHAPES = [(256, 1024), (33,), (7, 5), (1,), (3, 17), (64, 64)]


def _run(fn, x, at: bool):
    from graphad.lowering import schedule
    orig = schedule._Rules.compute_at_consumers
    if not at:
        schedule._Rules.compute_at_consumers = lambda self, sch, root, desc: []
    try:
        gd.cache_clear(disk=False)
        out = gd.jit(fn)(gd.Tensor(x))
    finally:
        schedule._Rules.compute_at_consumers = orig
        gd.cache_clear(disk=False)
    return [o.asnumpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_same_bits_as_without_the_move(name, monkeypatch):
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    gd.set_backend("tvm")
    for shape in SHAPES:
        x = (RNG.standard_normal(shape) * 3).astype(np.float32)
        x.flat[0] = np.nan if x.size > 2 else x.flat[0]
        got, want = _run(FUNCS[name], x, True), _run(FUNCS[name], x, False)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32), err_msg=f"{name} {shape}")
        gd.set_backend("numpy")
        with np.errstate(all="ignore"):
            ref = FUNCS[name](gd.Tensor(x))
        gd.set_backend("tvm")
        for g, r in zip(got, ref if isinstance(ref, tuple) else (ref,)):
            r = r.asnumpy()
            ok = ~np.isnan(r)
            assert np.array_equal(np.isnan(g), np.isnan(r)), f"{name} {shape}"
            np.testing.assert_allclose(g[ok], r[ok], rtol=2e-5, atol=2e-6, err_msg=f"{name} {shape}")


def test_the_stage_moves_and_its_buffer_shrinks():
    from graphad.lowering import lower_graph
    from graphad.lowering.pipeline import build
    from graphad.lowering.schedule import schedule_primfunc
    from graphad.runtime.executable import graph_for_lowering
    import tvm
    x = gd.Tensor(np.ones((256, 1024), np.float32))
    graph = graph_for_lowering(gd.jit(FUNCS["tanh gradient"]).lower(x).graph)
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    fused = fuse_module(lower_graph(graph), resolve_target(None))
    funcs = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    descs = [d for f in funcs for d in schedule_primfunc(f)[2]]
    assert any("at-consumer" in d and d.startswith("tanh_nan") for d in descs), descs
    ex, _ = build(lower_graph(graph))
    ll = "".join(lib.inspect_source("ll") for lib in [ex.mod, *ex.mod.imports] if lib.kind == "llvm")
    # no whole-size (1 MB) intermediate: no workspace allocation, no large alloca
    assert "TVMBackendAllocWorkspace" not in ll
    assert not re.search(r"alloca \[(\d{5,}) x float\]", ll)


@pytest.mark.parametrize("name, fn, shapes", [
    # a stage moved into a consumer the rare path runs again (cos's huge-argument path), with a
    # value both read (pow's 0-d base): TVM's CSE bound it in one copy of the nest and used it
    # in the other ("cse_v1 has been used before definition")
    ("2 ** x feeding cos", lambda x, y: ops.sum(ops.cos(2.0 ** x), axis=0), [(16, 15), (16, 15)]),
    ("2 ** x feeding cos, 64", lambda x, y: ops.cos(2.0 ** x), [(64,), (64,)]),
    # a bool cast to float inlined into a let-bound body: TVM made an IntImm of type boolx8
    ("mask into sinh", lambda x, y: ops.sinh((x > y).astype("float32") * x), [(64,), (64,)]),
    ("mask into arcsin", lambda x, y: ops.sum(ops.arcsin((x > y).astype("float32") * x * 0.5)), [(7, 16), (7, 16)]),
])
def test_kernels_tvm_rejected_now_build_scheduled(name, fn, shapes, monkeypatch):
    """A reviewer's fuzzing (16 of 700 programs) found kernels whose scheduled build TVM rejected;
    they fell back to TVM's default schedules with a warning. They must now build with graphad's
    schedules, with the interpreter's values."""
    import warnings
    from graphad.lowering import pipeline
    monkeypatch.setattr(pipeline, "_SCHEDULE_REJECTED_WARNED", False)
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    args = [gd.Tensor(RNG.standard_normal(s).astype(np.float32)) for s in shapes]
    want = gd.jit(fn, backend="numpy")(*args).asnumpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gd.jit(fn, backend="tvm")(*args).asnumpy()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
