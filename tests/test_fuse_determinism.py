"""Fusion of programs that read several results of multi-output opaque kernels (native loops).

TVM's FuseOps gives a fused group one parameter per tuple it reads from and then expands each
into one parameter per field read, visiting the tuples in an order set by their addresses with
positions computed beforehand: with three or more such tuples in one group, one of them read
twice, the expansion could replace the wrong parameter and FuseTIR failed with `Check failed:
buffer_idx == buffers.size() (1 vs. 2)`, in about one process in eight for a fuzzer program
(a while_loop's jvp + vjp + vmap) and nearly always with a dozen tuples. graphad gives each
further read its own alias of the tuple before FuseOps and removes the aliases after
(lowering/pipeline.py, `_TupleReads`). Before that fix, each test below failed in every run tried.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm

_TWO = '''
@T.prim_func(private=True)
def two(x: T.Buffer((4,), "float64"), a: T.Buffer((4,), "float64"), b: T.Buffer((4,), "float64")):
    T.func_attr({"op_pattern": 8, "tirx.noalias": True})
    for i in range(4):
        a[i] = x[i] + 1.0
        b[i] = x[i] * 2.0
'''


def _module(k: int):
    """main(x) = sum over k calls of an opaque two-output kernel of both its outputs: one fused
    group of adds that reads both fields of k tuples."""
    import tvm
    from tvm import relax
    from tvm.script import tirx as T
    two = tvm.script.from_source(_TWO, extra_vars={"T": T})
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.add_func(two, "two")
            items = []
            for _ in range(k):
                t = bb.emit(relax.call_tir(gv, [x], [relax.TensorType((4,), "float64")] * 2))
                items += [bb.emit(relax.TupleGetItem(t, 0)), bb.emit(relax.TupleGetItem(t, 1))]
            acc = items[0]
            for it in items[1:]:
                acc = bb.emit(relax.op.add(acc, it))
            out = bb.emit_output(acc)
        bb.emit_func_output(out)
    return bb.finalize()


def test_fusing_many_tuple_reads_is_deterministic():
    import tvm_ffi
    from tvm import relax

    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    target = resolve_target(None)
    k = 12
    sources, fused = [], []
    for _ in range(6):
        mod = _module(k)
        sources.append(mod)  # kept alive: each copy's tuples get fresh addresses
        fused.append(fuse_module(mod, target))
    for f in fused[1:]:
        assert tvm_ffi.structural_equal(fused[0], f)
    main = fused[0]["main"]
    assert not relax.analysis.free_vars(main)
    relax.analysis.well_formed(fused[0])  # raises on a violation
    # one fused kernel reading every field through its own tensor parameter, no tuple left over
    calls = [b.value for blk in main.body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"
             and b.value.args[0].name_hint.startswith("fused_")]
    assert len(calls) == 1
    args = calls[0].args[1].fields
    assert len(args) == 2 * k and all(isinstance(a.ty, relax.TensorType) for a in args)
    # and no alias is left in main: every tuple read names a kernel call's result
    for blk in main.body.blocks:
        for b in blk.bindings:
            if isinstance(b.value, relax.TupleGetItem):
                assert any(b.value.tuple_value.same_as(c.var) for blk2 in main.body.blocks for c in blk2.bindings
                           if isinstance(c.value, relax.Call))


def test_native_loops_read_twice_compile_and_agree():
    """Twelve while loops whose two float results meet in one elementwise sum: all compiled as native
    loops (a failed native build falls back to running the loops on the host: an error here) and
    checked against NumPy."""
    from graphad.runtime.executable import compile_graph
    k = 12

    def f(x):
        acc = None
        for j in range(k):
            def body(c, j=j):
                return ops.cos(c[0]) * 0.5 + c[1], ops.sin(c[1]) + 0.25 * j, c[2] + 1
            a, b, _ = gd.while_loop(lambda c: c[2] < 1, body,
                                    (x + 0.1 * j, x * 0.5, ops.zeros((), dtype="int32")), max_steps=1)
            acc = a * b if acc is None else acc + a * b
        return acc

    xn = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    graph = gd.make_graph(f)(gd.Tensor(xn))
    exe = compile_graph(graph, cache=False)
    loops = exe.report.get("loops", "") if isinstance(getattr(exe, "report", None), dict) else ""
    assert loops.count("while_loop native") == k and "host" not in loops, loops
    got = exe([gd.Tensor(xn)])[0].asnumpy()
    want = sum((np.cos(xn + 0.1 * j) * 0.5 + xn * 0.5) * (np.sin(xn * 0.5) + 0.25 * j) for j in range(k))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
