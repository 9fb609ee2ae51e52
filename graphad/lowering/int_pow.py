"""The TIR kernel of integer `pow`: exact, and for int32 wrapping around on overflow as NumPy's.

It was computed through float64 (`pow(double(x), double(y))` rounded back), exact only while
|x ** y| < 2**53: int64 3 ** 39 came out 4052555153018976256 where it is ...267, and an int32
result beyond the dtype's range was the conversion's INT_MIN where NumPy wraps (int32 3 ** 20 is
-808182895). Here each element is raised by repeated squaring in int64, one exponent bit per
step, stopping when the exponent's bits run out (at most 31 steps for int32, 63 for int64; 2 for
x ** 2). For int32 each product is truncated back to 32 bits (exact in int64, then wrapped as
NumPy's multiplication wraps); int64 products wrap as every integer product of loaded values in
compiled code does (int_wrap.py), so an int64 result beyond the range wraps as NumPy's too. The squaring chain is a loop over local scratch, not nested expressions: written as
Lets, TVM's analyzer would substitute each square into the next and grow the expression as
2 ** steps.

A negative exponent (NumPy refuses one) gives C's truncation of 1 / x ** |y|, as the reference
kernel (prims/elementwise.py `_int_pow`): 1 for x = 1, (-1) ** y for x = -1, 0 for |x| > 1 and
the dtype's minimum for x = 0, as x // 0 gives.

The kernel is one block per element inside a loop of extent 1 (linalg_tir's _SCALAR_LANE: the
CPU scheduler does not vectorize across it) and marked opaque, so FuseOps leaves it alone.
"""
from __future__ import annotations

import functools

from ._tvm import TS
from .linalg_tir import KERNELS_KEPT, call_kernel


@functools.lru_cache(maxsize=KERNELS_KEPT)
def int_pow_kernel(n: int, d: str):
    """PrimFunc (x (n,), y (n,)) -> x ** y (n,), integers of dtype `d` (int32 or int64)."""
    from tvm.script import tirx as T
    lowest = -(2 ** (31 if d == "int32" else 63))
    narrow = d == "int32"  # products truncated to 32 bits, wrapping as NumPy's

    def wrap(v):
        return T.Cast("int64", T.Cast("int32", v)) if narrow else v

    @TS.prim_func(private=True, s_tir=True)
    def int_pow(x: T.Buffer((n,), d), y: T.Buffer((n,), d), out: T.Buffer((n,), d)):
        T.func_attr({"tir.noalias": True})
        for i, z in T.grid(n, 1):
            with T.sblock("int_pow"):
                vi, vz = T.axis.remap("SS", [i, z])
                T.reads(x[vi], y[vi])
                T.writes(out[vi])
                acc = T.alloc_buffer((1,), "int64", scope="local")
                base = T.alloc_buffer((1,), "int64", scope="local")
                e = T.alloc_buffer((1,), "int64", scope="local")
                if y[vi] < T.cast(0, d):
                    if x[vi] == T.cast(1, d):
                        out[vi] = T.cast(1, d)
                    elif x[vi] == T.cast(-1, d):
                        out[vi] = T.if_then_else(T.bitwise_and(y[vi], T.cast(1, d)) == T.cast(0, d),
                                                 T.cast(1, d), T.cast(-1, d))
                    elif x[vi] == T.cast(0, d):
                        out[vi] = T.cast(lowest, d)
                    else:
                        out[vi] = T.cast(0, d)
                else:
                    acc[0] = T.int64(1)
                    base[0] = T.Cast("int64", x[vi])
                    e[0] = T.Cast("int64", y[vi])
                    while e[0] > T.int64(0):
                        if T.bitwise_and(e[0], T.int64(1)) != T.int64(0):
                            acc[0] = wrap(acc[0] * base[0])
                        e[0] = T.shift_right(e[0], T.int64(1))
                        if e[0] > T.int64(0):  # squared only when a higher bit needs it
                            base[0] = wrap(base[0] * base[0])
                    out[vi] = T.Cast(d, acc[0])
    return int_pow


def lower_int_pow(cx, node, a, b):
    """x ** y for int32/int64: both operands broadcast to the output's shape and flattened, one
    call_tir of `int_pow_kernel`, reshaped back."""
    shape = tuple(node.outputs[0].type.shape)
    d = node.outputs[0].type.dtype.name
    n = 1
    for s in shape:
        n *= int(s)
    if n == 0:
        import numpy as np
        return cx.const(np.zeros(shape, d), d)
    flat = []
    for v, t in ((a, node.inputs[0].type), (b, node.inputs[1].type)):
        if tuple(t.shape) != shape:
            v = cx.emit(cx.R.broadcast_to(v, shape))
        if len(shape) != 1:
            v = cx.emit(cx.R.reshape(v, (n,)))
        flat.append(v)
    r = call_kernel(cx, int_pow_kernel(n, d), "int_pow", flat, [((n,), d)])
    return cx.R.reshape(r, shape) if len(shape) != 1 else r
