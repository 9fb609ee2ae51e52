"""TIR kernels of the dense linear-algebra primitives (issue 17): solve, slogdet, cholesky,
triangular_solve, lowered through TVM rather than called back into NumPy/LAPACK.

Why TIR loops and not a library call: the matrices these graphs hold are small (Jacobians of
a few to a few hundred unknowns, batches of them under vmap), where a packed call back into
Python costs more than the arithmetic (measured in docs/linalg.md), and a graph that calls a
Python-registered function needs that registration in every process that loads it (an AOT
artifact in a fresh process, a worker), while TIR kernels are part of the compiled library.
Each kernel is the textbook algorithm (the reference kernels in graphad/prims/decomp.py use
LAPACK through NumPy, or the same elimination where LAPACK would raise):
* solve: Gaussian elimination with partial pivoting (first largest |pivot|), back substitution;
* slogdet: the same elimination; sign from the swaps and pivots, log|det| the sum of log|pivot|;
  a zero pivot gives (0, -inf) as NumPy;
* cholesky: the column (Cholesky-Banachiewicz) order, reading the lower triangle; a matrix
  whose pivot is not > 0 (or NaN) comes out all NaN, as JAX's;
* triangular_solve: forward or back substitution (trans handled by transposing a in Relax).
Every kernel loops over the batch (leading axes flattened) with a scratch copy per matrix, in
the operands' dtype (float32 accumulates in float32, as LAPACK's s-routines). The PrimFuncs are
marked opaque so that FuseOps leaves them alone; graphad's CPU scheduler finds no block to
schedule in them and keeps them as written.
"""
from __future__ import annotations

import math

import numpy as np

_OPAQUE = 8  # relax OpPatternKind.kOpaque


def _consts(tir, d):
    from .ieee import opaque_float
    # opaque: the real-number simplifier must not fold x - 0.0 or 0.0 * inf away
    return (opaque_float(0.0, d), opaque_float(1.0, d), tir.const(-math.inf, d), tir.const(math.nan, d))


def solve_kernel(tvm, B: int, n: int, k: int, d: str):
    """PrimFunc (a (B, n, n), b (B, n, k)) -> x (B, n, k): partial-pivoting elimination."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def solve(a: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            m = T.alloc_buffer((n, n), d)
            p = T.alloc_buffer((1,), "int32")
            acc = T.alloc_buffer((1,), d)
            for bi in range(B):
                for i, j in T.grid(n, n):
                    m[i, j] = a[bi, i, j]
                for i, j in T.grid(n, k):
                    x[bi, i, j] = b[bi, i, j]
                for c in range(n):
                    p[0] = c
                    for r in range(c + 1, n):
                        if T.abs(m[r, c]) > T.abs(m[p[0], c]):
                            p[0] = r
                    if p[0] != c:
                        for j in range(n):
                            acc[0] = m[c, j]
                            m[c, j] = m[p[0], j]
                            m[p[0], j] = acc[0]
                        for j in range(k):
                            acc[0] = x[bi, c, j]
                            x[bi, c, j] = x[bi, p[0], j]
                            x[bi, p[0], j] = acc[0]
                    for r in range(c + 1, n):
                        f = m[r, c] / m[c, c]
                        for j in range(c + 1, n):
                            m[r, j] = m[r, j] - f * m[c, j]
                        for j in range(k):
                            x[bi, r, j] = x[bi, r, j] - f * x[bi, c, j]
                for ii in range(n):
                    i = n - 1 - ii
                    for j in range(k):
                        acc[0] = x[bi, i, j]
                        for q in range(i + 1, n):
                            acc[0] = acc[0] - m[i, q] * x[bi, q, j]
                        x[bi, i, j] = acc[0] / m[i, i]
    return solve


def slogdet_kernel(tvm, B: int, n: int, d: str):
    """PrimFunc a (B, n, n) -> r (B, 2): r[:, 0] the sign, r[:, 1] log|det|."""
    from tvm.script import tirx as T
    zero, one, ninf, _ = _consts(tvm.tirx, d)

    @T.prim_func(private=True, s_tir=True)
    def slogdet(a: T.Buffer((B, n, n), d), r: T.Buffer((B, 2), d)):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            m = T.alloc_buffer((n, n), d)
            p = T.alloc_buffer((1,), "int32")
            singular = T.alloc_buffer((1,), "int32")
            acc = T.alloc_buffer((1,), d)
            for bi in range(B):
                for i, j in T.grid(n, n):
                    m[i, j] = a[bi, i, j]
                r[bi, 0] = one
                r[bi, 1] = zero
                singular[0] = 0
                for c in range(n):
                    p[0] = c
                    for r in range(c + 1, n):
                        if T.abs(m[r, c]) > T.abs(m[p[0], c]):
                            p[0] = r
                    if p[0] != c:
                        r[bi, 0] = zero - r[bi, 0]
                        for j in range(n):
                            acc[0] = m[c, j]
                            m[c, j] = m[p[0], j]
                            m[p[0], j] = acc[0]
                    if m[c, c] == zero:
                        singular[0] = 1
                    else:
                        if m[c, c] < zero:
                            r[bi, 0] = zero - r[bi, 0]
                        r[bi, 1] = r[bi, 1] + T.log(T.abs(m[c, c]))
                        for r in range(c + 1, n):
                            f = m[r, c] / m[c, c]
                            for j in range(c + 1, n):
                                m[r, j] = m[r, j] - f * m[c, j]
                if singular[0] == 1:
                    r[bi, 0] = zero
                    r[bi, 1] = ninf
    return slogdet


def cholesky_kernel(tvm, B: int, n: int, d: str):
    """PrimFunc a (B, n, n) -> l (B, n, n) lower, l l^T = a (lower triangle of a read)."""
    from tvm.script import tirx as T
    zero, _, _, nan = _consts(tvm.tirx, d)

    @T.prim_func(private=True, s_tir=True)
    def cholesky(a: T.Buffer((B, n, n), d), low: T.Buffer((B, n, n), d)):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            bad = T.alloc_buffer((1,), "int32")
            acc = T.alloc_buffer((1,), d)
            for bi in range(B):
                bad[0] = 0
                for j in range(n):
                    for i in range(j):
                        low[bi, i, j] = zero
                    acc[0] = a[bi, j, j]
                    for q in range(j):
                        acc[0] = acc[0] - low[bi, j, q] * low[bi, j, q]
                    if not (acc[0] > zero):  # also NaN: potrf's test
                        bad[0] = 1
                    low[bi, j, j] = T.sqrt(acc[0])
                    for i in range(j + 1, n):
                        acc[0] = a[bi, i, j]
                        for q in range(j):
                            acc[0] = acc[0] - low[bi, i, q] * low[bi, j, q]
                        low[bi, i, j] = acc[0] / low[bi, j, j]
                if bad[0] == 1:
                    for i, j in T.grid(n, n):
                        low[bi, i, j] = nan
    return cholesky


def trisolve_kernel(tvm, B: int, n: int, k: int, d: str, lower: bool, unit: bool):
    """PrimFunc (t (B, n, n), b (B, n, k)) -> x: forward (lower) or back substitution, reading
    only t's lower (upper) triangle, its diagonal taken as ones when unit."""
    from tvm.script import tirx as T
    u = 1 if unit else 0

    if lower:
        @T.prim_func(private=True, s_tir=True)
        def trisolve(t: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
            T.func_attr({"tir.noalias": True})
            with T.sblock("root"):
                acc = T.alloc_buffer((1,), d)
                for bi, i, j in T.grid(B, n, k):
                    acc[0] = b[bi, i, j]
                    for q in range(i):
                        acc[0] = acc[0] - t[bi, i, q] * x[bi, q, j]
                    if u == 1:
                        x[bi, i, j] = acc[0]
                    else:
                        x[bi, i, j] = acc[0] / t[bi, i, i]
        return trisolve

    @T.prim_func(private=True, s_tir=True)
    def trisolve_upper(t: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            acc = T.alloc_buffer((1,), d)
            for bi, ii, j in T.grid(B, n, k):
                acc[0] = b[bi, n - 1 - ii, j]
                for q in range(n - 1 - ii + 1, n):
                    acc[0] = acc[0] - t[bi, n - 1 - ii, q] * x[bi, q, j]
                if u == 1:
                    x[bi, n - 1 - ii, j] = acc[0]
                else:
                    x[bi, n - 1 - ii, j] = acc[0] / t[bi, n - 1 - ii, n - 1 - ii]
    return trisolve_upper


# ---------------------------------------------------------------- Relax emission

def _batched(cx, x, shape, tail):
    """x reshaped to (B, *tail) (the leading axes flattened); returns (expr, B)."""
    bsz = int(np.prod(shape[:len(shape) - len(tail)], dtype=np.int64))
    want = (bsz,) + tuple(tail)
    if tuple(shape) == want:
        return x, bsz
    return cx.emit(cx.R.reshape(x, want)), bsz


def call_kernel(cx, func, name: str, args, out_types):
    """Emit call_tir of `func` (marked opaque) on args with outputs [(shape, dtype)]; returns the
    call (a tuple for several outputs)."""
    relax = cx.relax
    gv = cx.bb.add_func(func.with_attr("op_pattern", _OPAQUE), name)
    sinfo = [relax.TensorType(s, dt) for s, dt in out_types]
    return cx.emit(cx.R.call_tir(gv, list(args), sinfo if len(sinfo) > 1 else sinfo[0]))


def lower_solve(cx, node, a, b):
    """solve: the batch flattened, one call_tir, reshaped back."""
    shape_b = node.inputs[1].type.shape
    n, k = shape_b[-2], shape_b[-1]
    d = node.inputs[0].type.dtype.name
    a3, bsz = _batched(cx, a, node.inputs[0].type.shape, (n, n))
    b3, _ = _batched(cx, b, shape_b, (n, k))
    x = call_kernel(cx, solve_kernel(cx.tvm, bsz, n, k, d), "linalg_solve", [a3, b3], [((bsz, n, k), d)])
    return cx.R.reshape(x, shape_b) if len(shape_b) != 3 else x


def lower_slogdet(cx, node, a):
    """slogdet: (..., 2) sign and log|det|; a 0 x 0 matrix is the constant (1, 0)."""
    shape = node.inputs[0].type.shape
    n = shape[-1]
    d = node.inputs[0].type.dtype.name
    out_shape = tuple(shape[:-2]) + (2,)
    if n == 0:  # the determinant of a 0 x 0 matrix is 1: (1, 0), no kernel
        return cx.const(np.broadcast_to(np.array([1.0, 0.0]), out_shape), d)
    a3, bsz = _batched(cx, a, shape, (n, n))
    r = call_kernel(cx, slogdet_kernel(cx.tvm, bsz, n, d), "linalg_slogdet", [a3], [((bsz, 2), d)])
    return cx.R.reshape(r, out_shape) if len(shape) != 3 else r


def lower_cholesky(cx, node, a):
    """cholesky: the batch flattened, one call_tir, reshaped back."""
    shape = node.inputs[0].type.shape
    n = shape[-1]
    d = node.inputs[0].type.dtype.name
    a3, bsz = _batched(cx, a, shape, (n, n))
    low = call_kernel(cx, cholesky_kernel(cx.tvm, bsz, n, d), "linalg_cholesky", [a3], [((bsz, n, n), d)])
    return cx.R.reshape(low, shape) if len(shape) != 3 else low


def lower_triangular_solve(cx, node, a, b):
    """triangular_solve: trans by transposing a (which flips lower), then substitution."""
    shape_a, shape_b = node.inputs[0].type.shape, node.inputs[1].type.shape
    n, k = shape_b[-2], shape_b[-1]
    d = node.inputs[0].type.dtype.name
    lower, trans = bool(node.attrs["lower"]), bool(node.attrs["trans"])
    a3, bsz = _batched(cx, a, shape_a, (n, n))
    if trans:  # op(tril(a)) = triu(a^T): substitute with the transposed matrix
        a3 = cx.emit(cx.R.permute_dims(a3, [0, 2, 1]))
        lower = not lower
    b3, _ = _batched(cx, b, shape_b, (n, k))
    func = trisolve_kernel(cx.tvm, bsz, n, k, d, lower, bool(node.attrs["unit_diagonal"]))
    x = call_kernel(cx, func, "linalg_trisolve", [a3, b3], [((bsz, n, k), d)])
    return cx.R.reshape(x, shape_b) if len(shape_b) != 3 else x
