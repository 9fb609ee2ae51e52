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
    lists (each read beside the row index v // c1, as a flattened two-axis index is), and one
    without an offset, which it leaves alone."""
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
    bad = []
    for name, build, py in _forms():
        for n, c1, k, c2 in itertools.product((8, 12), (2, 4, 8), (-3, -1, 2), (2, 3)):
            idx = [py(x, c1, k, c2) for x in range(n)]
            lo, width = min(idx), max(idx) - min(idx) + 1
            func, rows = _gather_kernel(n, c1, lo, width, lambda v: build(v, c1, k, c2))
            mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", target)})
            mod = tvm.tirx.transform.BindTarget(target.with_host(target))(mod)
            host, dev = lower_tir(tvm, mod)
            lib = tb.tir_to_runtime(host, dev, target)
            src = tvm.runtime.tensor(np.arange(rows * width, dtype=np.int64).reshape(rows, width))
            out = tvm.runtime.tensor(np.full(n, -1, np.int64))
            lib["main"](src, out)
            want = [x // c1 * width + i - lo for x, i in zip(range(n), idx)]
            if out.numpy().tolist() != want:
                bad.append((name, n, c1, k, c2, out.numpy().tolist(), want))
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
