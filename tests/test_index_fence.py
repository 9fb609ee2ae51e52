"""Index divisions that TVM's IterMapSimplify rewrites wrongly compile right (lowering/index_fence.py).

Two layers: kernels whose only content is such an index (a gather through each of the measured
forms, compiled by graphad's TIR lowering and compared with Python's integers), and programs of
the kind that produced it (slices and concatenations of reshaped broadcasts, vmapped), compiled
and compared with NumPy exactly (pure data movement: no rounding anywhere).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphad as gd
from graphad import ops

tvm = pytest.importorskip("tvm")


def _forms():
    """(name, builder(v, c1, k, c2) -> index expr, Python evaluator) of the forms index_fence.py
    lists (each read beside the row index v // c1, as a flattened two-axis index is), one
    without an offset, which it leaves alone, and two with a negative divisor."""
    from tvm import tirx as tir

    def c(x):
        return tir.const(x, "int64")
    return [
        ("(v%c1+k)//c2", lambda v, c1, k, c2: tir.floordiv(tir.floormod(v, c(c1)) + c(k), c(c2)),
         lambda x, c1, k, c2: (x % c1 + k) // c2),
        ("(k-v%c1)//c2", lambda v, c1, k, c2: tir.floordiv(c(k) - tir.floormod(v, c(c1)), c(c2)),
         lambda x, c1, k, c2: (k - x % c1) // c2),
        ("(2(v%c1)+k)//c2", lambda v, c1, k, c2: tir.floordiv(c(2) * tir.floormod(v, c(c1)) + c(k), c(c2)),
         lambda x, c1, k, c2: (2 * (x % c1) + k) // c2),
        ("(v+k)//c1%c2", lambda v, c1, k, c2: tir.floormod(tir.floordiv(v + c(k), c(c1)), c(c2)),
         lambda x, c1, k, c2: (x + k) // c1 % c2),
        ("v//c1*c2+(v%c1+k)//c2", lambda v, c1, k, c2: tir.floordiv(v, c(c1)) * c(c2)
         + tir.floordiv(tir.floormod(v, c(c1)) + c(k), c(c2)),
         lambda x, c1, k, c2: x // c1 * c2 + (x % c1 + k) // c2),
        ("v%c1//c2 (no offset)", lambda v, c1, k, c2: tir.floordiv(tir.floormod(v, c(c1)), c(c2)),
         lambda x, c1, k, c2: x % c1 // c2),
        # a negative divisor (dlight's layout normalisation writes (k - v % c1) // c2 so): TVM's
        # simplifier rewrote it wrongly even inside the fence, so its dividend is fenced too
        ("v%c1//-c2", lambda v, c1, k, c2: tir.floordiv(tir.floormod(v, c(c1)), c(-c2)),
         lambda x, c1, k, c2: x % c1 // -c2),
        ("v%c1%-c2", lambda v, c1, k, c2: tir.floormod(tir.floormod(v, c(c1)), c(-c2)),
         lambda x, c1, k, c2: x % c1 % -c2),
        ("(v+k)//c1", lambda v, c1, k, c2: tir.floordiv(v + c(k), c(c1)),
         lambda x, c1, k, c2: (x + k) // c1),
    ]


def _gather_kernel(n: int, c1: int, lo: int, width: int, make_index):
    """PrimFunc out[v] = src[v // c1, index(v) - lo] over v in [0, n), from TE: flattened, the
    read's index is v // c1 * width + index(v) - lo, which FlattenBuffer simplifies (the row
    index of the kernel of slice_concat_of_broadcast_rows had this shape)."""
    from tvm import te, tirx as tir
    rows = n // c1 + 1
    i64 = lambda x: tir.const(x, "int64")  # noqa: E731  (int64 extents: int64 iterators, no casts)
    src = te.placeholder((i64(rows), i64(width)), "int64", name="src")
    out = te.compute((i64(n),), lambda v: src[tir.floordiv(v, tir.const(c1, "int64")),
                                         make_index(v) - tir.const(lo, "int64")], name="out")
    return te.create_prim_func([src, out]), rows


def test_iter_map_simplify_forms_compile_right():
    """Each form, over a grid of constants, compiled through graphad's lowering (and its fence),
    gathers exactly what Python's floor division gives. At the time of writing TVM's
    IterMapSimplify got 22-106 of 288 such cases wrong."""
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.tir_lowering import lower_tir
    tvm = load_tvm()
    import importlib
    tb = importlib.import_module("tvm.tirx.build")
    target = tvm.target.Target("llvm")
    cases, funcs = [], {}
    for name, build, py in _forms():
        for n, c1, k, c2 in itertools.product((8, 12), (2, 4, 8), (-3, -1, 2), (2, 3)):
            idx = [py(x, c1, k, c2) for x in range(n)]
            lo, width = min(idx), max(idx) - min(idx) + 1
            func, rows = _gather_kernel(n, c1, lo, width, lambda v: build(v, c1, k, c2))
            symbol = f"case{len(cases)}"
            funcs[symbol] = func.with_attr("global_symbol", symbol).with_attr("target", target)
            want = [x // c1 * width + i - lo for x, i in zip(range(n), idx)]
            cases.append((symbol, (name, n, c1, k, c2), rows, width, want))
    # one module: the TIR passes run on each function alone; one LLVM build instead of 324
    mod = tvm.tirx.transform.BindTarget(target.with_host(target))(tvm.IRModule(funcs))
    host, dev = lower_tir(tvm, mod)
    lib = tb.tir_to_runtime(host, dev, target)
    bad = []
    for symbol, case, rows, width, want in cases:
        src = tvm.runtime.tensor(np.arange(rows * width, dtype=np.int64).reshape(rows, width))
        out = tvm.runtime.tensor(np.full(len(want), -1, np.int64))
        lib[symbol](src, out)
        if out.numpy().tolist() != want:
            bad.append((*case, out.numpy().tolist(), want))
    assert bad == [], bad[:5]


@pytest.mark.parametrize("rows, cols, rep, split", [(2, 2, 2, 3), (3, 4, 2, 5), (2, 3, 4, 1), (4, 2, 3, 4),
                                                    (2, 5, 2, 9), (3, 3, 3, 2)])
def test_rotated_rows_of_a_broadcast(rows, cols, rep, split):
    """concat(r[split:], r[:split]) of r = each element repeated `rep` times, per row (vmapped),
    beside the repeated values themselves: the fuzz fixture slice_concat_of_broadcast_rows's
    kernel, at other sizes."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + rep)
    x = rng.standard_normal((rows, cols))
    n = cols * rep

    def f(v):
        r = ops.reshape(ops.broadcast_to(ops.reshape(v, (cols, 1)), (cols, rep)), (n,))
        return ops.concatenate([r[split:], r[:split]], 0), v * 1.0

    def g(v):
        a, b = gd.vmap(f)(v)
        return a, ops.pad(b, ((0, 0), (1, 2)))
    r = np.repeat(x, rep, axis=1)
    want = (np.concatenate([r[:, split:], r[:, :split]], 1), np.pad(x, ((0, 0), (1, 2))))
    gd.set_backend("tvm")
    try:
        got = gd.jit(g)(gd.Tensor(x))
    finally:
        gd.set_backend("numpy")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.asnumpy(), b)


def _evaluate(expr, env: dict) -> int:
    """The value of an integer TIR expression (as the final device TIR writes an index: floor
    and truncated division, shifts, bitwise ops, Lets, Selects) with `env` {Var: int}, by Python's
    integers: an oracle beside TVM's own constant folding."""
    from tvm import tirx as tir
    import tvm.ir.prim.expr as P
    if isinstance(expr, tir.IntImm):
        return int(expr.value)
    if isinstance(expr, tir.Var):
        return next(x for v, x in env.items() if v.same_as(expr))
    if isinstance(expr, tir.Cast):
        return _evaluate(expr.value, env)
    if isinstance(expr, P.Let):
        return _evaluate(expr.body, {**env, expr.var: _evaluate(expr.value, env)})
    if isinstance(expr, P.Select):
        return _evaluate(expr.true_value if _evaluate(expr.condition, env) else expr.false_value, env)
    trunc_div = lambda a, b: abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # noqa: E731
    binary = {P.Add: lambda a, b: a + b, P.Sub: lambda a, b: a - b, P.Mul: lambda a, b: a * b,
              P.FloorDiv: lambda a, b: a // b, P.FloorMod: lambda a, b: a % b, P.Div: trunc_div,
              P.Mod: lambda a, b: a - b * trunc_div(a, b), P.Min: min, P.Max: max,
              P.RShift: lambda a, b: a >> b, P.LShift: lambda a, b: a << b,
              P.BitwiseAnd: lambda a, b: a & b, P.BitwiseOr: lambda a, b: a | b,
              P.LE: lambda a, b: a <= b, P.LT: lambda a, b: a < b, P.GE: lambda a, b: a >= b,
              P.GT: lambda a, b: a > b, P.EQ: lambda a, b: a == b, P.NE: lambda a, b: a != b,
              P.And: lambda a, b: a and b, P.Or: lambda a, b: a or b}
    for kind, f in binary.items():
        if isinstance(expr, kind):
            return f(_evaluate(expr.a, env), _evaluate(expr.b, env))
    calls = {"tirx.shift_right": lambda a, b: a >> b, "tirx.shift_left": lambda a, b: a << b,
             "tirx.bitwise_and": lambda a, b: a & b, "tirx.bitwise_or": lambda a, b: a | b,
             "tirx.truncdiv": trunc_div, "tirx.truncmod": lambda a, b: a - b * trunc_div(a, b)}
    if isinstance(expr, tvm.ir.Call) and expr.op.name in calls:
        return calls[expr.op.name](*[_evaluate(a, env) for a in expr.args])
    raise TypeError(f"cannot evaluate {type(expr).__name__}: {expr}")


def test_gpu_kernels_index_right():
    """The GPU build (no GPU needed: TVM's CUDA pipeline up to the device TIR): each form, as a
    Relax gather through graphad's CUDA preparation (dlight schedules) and its fenced TIR
    pipeline, indexes what Python's floor division gives, at every thread. dlight's layout
    normalisation (transform_block_layout) rewrote these indices wrongly before TVM's TIR passes
    ran: without the fences 62 of these 324 cases were wrong at the time of writing."""
    import importlib
    import tvm_ffi
    from tvm import relax, te, tirx as tir
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.pipeline import _cuda_prepare
    from graphad.lowering.targets import resolve_target
    from graphad.lowering.tir_lowering import fenced_pipeline_name
    tvm = load_tvm()
    tb = importlib.import_module("tvm.tirx.build")
    target = resolve_target("sm_90")
    pipeline, _, finalize_device = tvm.tirx.get_tir_pipeline(fenced_pipeline_name(tvm))
    i64 = lambda x: tir.const(x, "int64")  # noqa: E731
    cases = []
    bb = relax.BlockBuilder()  # one module of every case: each kernel goes through the passes alone
    for name, build, py in _forms():
        for n, c1, k, c2 in itertools.product((8, 12), (2, 4, 8), (-3, -1, 2), (2, 3)):
            idx = [py(x, c1, k, c2) for x in range(n)]
            lo, width = min(idx), max(idx) - min(idx) + 1
            symbol = f"case{len(cases)}"
            src = relax.Var("src", relax.TensorType((n // c1 + 1, width), "int64"))
            with bb.function(f"main_{symbol}", [src]):
                with bb.dataflow():
                    out = bb.emit_output(bb.emit_te(lambda s: te.compute(
                        (i64(n),), lambda v: s[tir.floordiv(v, i64(c1)), build(v, c1, k, c2) - i64(lo)], name="out"),
                        src, primfunc_name_hint=symbol))
                bb.emit_func_output(out)
            cases.append((symbol, (name, n, c1, k, c2), [x // c1 * width + i - lo for x, i in zip(range(n), idx)]))
    prepared = _cuda_prepare(bb.get(), target, [])
    kernels = tvm.tirx.transform.BindTarget(target)(tvm.IRModule(
        {gv: f for gv, f in prepared.functions_items() if isinstance(f, tir.PrimFunc)}))
    _, device = tb.split_host_device_mods(pipeline(kernels))
    (dev,) = [finalize_device()(m) for m in device.values()]
    device_funcs = {gv.name_hint: f for gv, f in dev.functions_items()}
    by_case = {}  # the block builder kept one kernel of equal ones: each case's own, by its call
    for symbol, _, _ in cases:
        calls = [b.value.args[0].name_hint for blk in prepared[f"main_{symbol}"].body.blocks for b in blk.bindings
                 if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"]
        (kernel,) = calls
        by_case[symbol] = device_funcs[kernel]
    bad = []
    for symbol, case, want in cases:
        n = len(want)
        loads, threads = [], {}
        tvm_ffi.structural_walk(by_case[symbol].body, [
            (tvm.ir.TensorLoad, lambda e: loads.append(e) if e.source.name == "src" else None),
            (tir.AttrStmt, lambda a: threads.update({a.node.thread_tag: a.node.var})
             if a.attr_key == "thread_extent" else None)], order="pre")
        (load,) = loads
        got = [_evaluate(load.indices[0], {v: x if tag == "threadIdx.x" else 0 for tag, v in threads.items()})
               for x in range(n)]
        if got != want:
            bad.append(case)
    assert bad == [], bad[:5]
