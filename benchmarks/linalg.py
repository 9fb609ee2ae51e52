"""TIR kernels against a packed callback into NumPy/LAPACK for graphad.ops.linalg (docs/linalg.md).

For each workload, the microseconds per call of the Relax VM function, inputs already TVM tensors:
* `tir`:    graphad's lowering (graphad/lowering/linalg_tir.py), built by graphad's pipeline;
* `packed`: the same op as `R.call_dps_packed` of a tvm_ffi function registered from Python that
            calls NumPy's LAPACK-backed routine on DLPack views (the other route docs/linalg.md weighs);
* `numpy`:  the NumPy call alone, eagerly.
Also each TIR module's compile time. Run: .venv/bin/python benchmarks/linalg.py
"""
from __future__ import annotations

import os
import time

import numpy as np


def _median_us(fn, reps=7, inner=None):
    fn()
    if inner is None:
        t0 = time.perf_counter()
        fn()
        inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best.append((time.perf_counter() - t0) / inner)
    return float(np.median(best)) * 1e6


def main():
    """Print the table of docs/linalg.md."""
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    from graphad import ops
    from graphad.ir.core import TensorType
    from graphad.lowering import compile_module, lower_graph
    from graphad.lowering._tvm import load_tvm
    from graphad.prims.trace import trace_to_graph
    tvm = load_tvm()
    import tvm_ffi
    from tvm import relax
    from tvm.relax import op as R

    def np_solve(a, b, out):
        np.copyto(np.from_dlpack(out), np.linalg.solve(np.from_dlpack(a), np.from_dlpack(b)))

    def np_eigh(a, w, v):
        ww, vv = np.linalg.eigh(np.from_dlpack(a))
        np.copyto(np.from_dlpack(w), ww)
        np.copyto(np.from_dlpack(v), vv)

    def np_svd(a, s):
        np.copyto(np.from_dlpack(s), np.linalg.svd(np.from_dlpack(a), compute_uv=False))

    tvm_ffi.register_global_func("graphad_bench.solve", np_solve, override=True)
    tvm_ffi.register_global_func("graphad_bench.eigh", np_eigh, override=True)
    tvm_ffi.register_global_func("graphad_bench.svd", np_svd, override=True)
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    rows = []
    for op, b, n in [("solve", 1, 3), ("solve", 1, 8), ("solve", 1, 32), ("solve", 1, 128), ("solve", 256, 3),
                     ("solve", 256, 8), ("eigh", 1, 8), ("eigh", 1, 32), ("eigh", 64, 4), ("svd", 1, 8),
                     ("svd", 1, 32), ("svd", 64, 4)]:
        a = rng.normal(size=(b, n, n)) + n * np.eye(n)
        a = a + np.swapaxes(a, -1, -2) if op == "eigh" else a
        rhs = rng.normal(size=(b, n, 1))
        fn = {"solve": lambda x, y: ops.linalg.solve(x, y), "eigh": lambda x, y: ops.linalg.eigh(x)[1],
              "svd": lambda x, y: ops.linalg.svdvals(x)}[op]
        g, _, _ = trace_to_graph(fn, [TensorType(a.shape, "float64"), TensorType(rhs.shape, "float64")])
        t0 = time.perf_counter()
        ex, _ = compile_module(lower_graph(g))
        t_compile = time.perf_counter() - t0
        vm = relax.VirtualMachine(ex, dev)
        ta, tb = tvm.runtime.tensor(a), tvm.runtime.tensor(rhs)
        args = [ta, tb] if len(g.inputs) == 2 else [ta]
        tir_us = _median_us(lambda: vm["main"](*args))
        bb = relax.BlockBuilder()
        va = relax.Var("a", relax.TensorType(a.shape, "float64"))
        vb = relax.Var("b", relax.TensorType(rhs.shape, "float64"))
        with bb.function("main", [va, vb]):
            with bb.dataflow():
                if op == "solve":
                    o = bb.emit(R.call_dps_packed("graphad_bench.solve", [va, vb],
                                                  relax.TensorType(rhs.shape, "float64")))
                elif op == "eigh":
                    o = bb.emit(R.call_dps_packed("graphad_bench.eigh", [va], [
                        relax.TensorType((b, n), "float64"), relax.TensorType(a.shape, "float64")]))
                    o = bb.emit(relax.TupleGetItem(o, 1))
                else:
                    o = bb.emit(R.call_dps_packed("graphad_bench.svd", [va], relax.TensorType((b, n), "float64")))
                out = bb.emit_output(o)
            bb.emit_func_output(out)
        pvm = relax.VirtualMachine(tvm.compile(bb.finalize(), target="llvm"), dev)
        packed_us = _median_us(lambda: pvm["main"](ta, tb))
        ref = {"solve": lambda: np.linalg.solve(a, rhs), "eigh": lambda: np.linalg.eigh(a),
               "svd": lambda: np.linalg.svd(a, compute_uv=False)}[op]
        numpy_us = _median_us(ref)
        rows.append((op, b, n, tir_us, packed_us, numpy_us, t_compile))
    print("| op | batch | n | TIR kernel µs | packed NumPy callback µs | NumPy alone µs | TIR compile s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op, b, n, t, p, q, c in rows:
        print(f"| {op} | {b} | {n} | {t:.1f} | {p:.1f} | {q:.1f} | {c:.2f} |")


if __name__ == "__main__":
    main()
