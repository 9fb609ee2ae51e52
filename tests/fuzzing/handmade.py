"""Hand-written TVM modules with the bug class poison mode exists for (used by tests/test_fuzz.py).

TVMScript reads the source of the module it parses, so these live in a real file.
"""
from __future__ import annotations


def half_written_module():
    """A Relax module whose kernel computes its float64 workspace only half-way but reads all of
    it into the first output, and writes only the first half of its int32 second output."""
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @I.ir_module
    class Mod:
        @T.prim_func(private=True, s_tir=True)
        def half(x: T.Buffer((T.int64(8),), "float64"), y: T.Buffer((T.int64(8),), "float64"),
                 z: T.Buffer((T.int64(8),), "int32")):
            tmp = T.sblock_alloc_buffer((T.int64(8),), "float64")
            for i in range(T.int64(4)):
                with T.sblock("w"):
                    vi = T.axis.spatial(T.int64(4), i)
                    tmp[vi] = x[vi] * T.float64(2.0)
            for i in range(T.int64(8)):
                with T.sblock("r"):
                    vi = T.axis.spatial(T.int64(8), i)
                    y[vi] = tmp[vi]
            for i in range(T.int64(4)):
                with T.sblock("z"):
                    vi = T.axis.spatial(T.int64(4), i)
                    z[vi] = T.int32(7)

        @R.function
        def main(x: R.Tensor((8,), "float64")) -> R.Tuple(R.Tensor((8,), "float64"), R.Tensor((8,), "int32")):
            cls = Mod
            with R.dataflow():
                y = R.call_tir(cls.half, (x,), out_ty=[R.Tensor((8,), "float64"), R.Tensor((8,), "int32")])
                R.output(y)
            return y

    return Mod
