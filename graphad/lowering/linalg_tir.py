"""TIR kernels of the dense linear-algebra primitives (issue 17): solve, slogdet, cholesky,
triangular_solve, eigh, qr, svd, lowered through TVM rather than called back into NumPy/LAPACK.

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
* triangular_solve: forward or back substitution (trans handled by transposing a in Relax);
* eigh: cyclic Jacobi rotations, sorted, vector signs fixed; svd: one-sided Jacobi; qr: Householder
  with LAPACK's signs (see each kernel).
Every kernel is one block per matrix of the batch (leading axes flattened; per column of the
right-hand side too for the triangular solve), with its scratch in "local" buffers: the CPU
scheduler treats it as an injective nest (parallel over the batch when it is large), and on CUDA
dlight's fallback rule binds the batch to threads, one matrix per thread. Arithmetic is in the
operands' dtype (float32 accumulates in float32, as LAPACK's s-routines). The PrimFuncs are
marked opaque so that FuseOps leaves them alone.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._tvm import TS

_OPAQUE = 8  # relax OpPatternKind.kOpaque
# _SCALAR_LANE: every kernel's block sits in an innermost loop of extent 1. graphad's CPU scheduler
# vectorizes the innermost loop of a spatial nest by the largest power of two dividing its extent;
# vectorizing the batch loop around a block of sequential code with local scratch miscompiled
# (a 6-matrix solve came out wrong by 3e2): an extent of 1 leaves one lane.


# parsed kernels kept per process by their arguments (the parse is 0.1-0.3 s; a PrimFunc is an
# immutable value, shared by every graph that calls it)
KERNELS_KEPT = 64


def _consts(tir, d):
    from .ieee import opaque_float
    # opaque: the real-number simplifier must not fold x - 0.0 or 0.0 * inf away
    return (opaque_float(0.0, d), opaque_float(1.0, d), tir.const(-math.inf, d), tir.const(math.nan, d))


@functools.lru_cache(maxsize=KERNELS_KEPT)
def solve_kernel(tvm, B: int, n: int, k: int, d: str):
    """PrimFunc (a (B, n, n), b (B, n, k)) -> x (B, n, k): partial-pivoting elimination."""
    from tvm.script import tirx as T

    @TS.prim_func(private=True, s_tir=True)
    def solve(a: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("solve"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:n, 0:n], b[vb, 0:n, 0:k])
                T.writes(x[vb, 0:n, 0:k])
                m = T.alloc_buffer((n, n), d, scope="local")
                p = T.alloc_buffer((1,), "int32", scope="local")
                acc = T.alloc_buffer((1,), d, scope="local")
                for i, j in T.grid(n, n):
                    m[i, j] = a[vb, i, j]
                for i, j in T.grid(n, k):
                    x[vb, i, j] = b[vb, i, j]
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
                            acc[0] = x[vb, c, j]
                            x[vb, c, j] = x[vb, p[0], j]
                            x[vb, p[0], j] = acc[0]
                    for r in range(c + 1, n):
                        f = m[r, c] / m[c, c]
                        for j in range(c + 1, n):
                            m[r, j] = m[r, j] - f * m[c, j]
                        for j in range(k):
                            x[vb, r, j] = x[vb, r, j] - f * x[vb, c, j]
                for ii in range(n):
                    i = n - 1 - ii
                    for j in range(k):
                        acc[0] = x[vb, i, j]
                        for q in range(i + 1, n):
                            acc[0] = acc[0] - m[i, q] * x[vb, q, j]
                        x[vb, i, j] = acc[0] / m[i, i]
    return solve


@functools.lru_cache(maxsize=KERNELS_KEPT)
def slogdet_kernel(tvm, B: int, n: int, d: str):
    """PrimFunc a (B, n, n) -> r (B, 2): r[:, 0] the sign, r[:, 1] log|det|."""
    from tvm.script import tirx as T
    zero, one, ninf, _ = _consts(tvm.tirx, d)

    @TS.prim_func(private=True, s_tir=True)
    def slogdet(a: T.Buffer((B, n, n), d), r: T.Buffer((B, 2), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("slogdet"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:n, 0:n])
                T.writes(r[vb, 0:2])
                m = T.alloc_buffer((n, n), d, scope="local")
                p = T.alloc_buffer((1,), "int32", scope="local")
                singular = T.alloc_buffer((1,), "int32", scope="local")
                acc = T.alloc_buffer((1,), d, scope="local")
                for i, j in T.grid(n, n):
                    m[i, j] = a[vb, i, j]
                r[vb, 0] = one
                r[vb, 1] = zero
                singular[0] = 0
                for c in range(n):
                    p[0] = c
                    for r in range(c + 1, n):
                        if T.abs(m[r, c]) > T.abs(m[p[0], c]):
                            p[0] = r
                    if p[0] != c:
                        r[vb, 0] = zero - r[vb, 0]
                        for j in range(n):
                            acc[0] = m[c, j]
                            m[c, j] = m[p[0], j]
                            m[p[0], j] = acc[0]
                    if m[c, c] == zero:
                        singular[0] = 1
                    else:
                        if m[c, c] < zero:
                            r[vb, 0] = zero - r[vb, 0]
                        r[vb, 1] = r[vb, 1] + T.log(T.abs(m[c, c]))
                        for r in range(c + 1, n):
                            f = m[r, c] / m[c, c]
                            for j in range(c + 1, n):
                                m[r, j] = m[r, j] - f * m[c, j]
                if singular[0] == 1:
                    r[vb, 0] = zero
                    r[vb, 1] = ninf
    return slogdet


@functools.lru_cache(maxsize=KERNELS_KEPT)
def cholesky_kernel(tvm, B: int, n: int, d: str):
    """PrimFunc a (B, n, n) -> l (B, n, n) lower, l l^T = a (lower triangle of a read)."""
    from tvm.script import tirx as T
    zero, _, _, nan = _consts(tvm.tirx, d)

    @TS.prim_func(private=True, s_tir=True)
    def cholesky(a: T.Buffer((B, n, n), d), low: T.Buffer((B, n, n), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("cholesky"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:n, 0:n])
                T.writes(low[vb, 0:n, 0:n])
                bad = T.alloc_buffer((1,), "int32", scope="local")
                acc = T.alloc_buffer((1,), d, scope="local")
                bad[0] = 0
                for j in range(n):
                    for i in range(j):
                        low[vb, i, j] = zero
                    acc[0] = a[vb, j, j]
                    for q in range(j):
                        acc[0] = acc[0] - low[vb, j, q] * low[vb, j, q]
                    if not (acc[0] > zero):  # also NaN: potrf's test
                        bad[0] = 1
                    low[vb, j, j] = T.sqrt(acc[0])
                    for i in range(j + 1, n):
                        acc[0] = a[vb, i, j]
                        for q in range(j):
                            acc[0] = acc[0] - low[vb, i, q] * low[vb, j, q]
                        low[vb, i, j] = acc[0] / low[vb, j, j]
                if bad[0] == 1:
                    for i, j in T.grid(n, n):
                        low[vb, i, j] = nan
    return cholesky


@functools.lru_cache(maxsize=KERNELS_KEPT)
def trisolve_kernel(tvm, B: int, n: int, k: int, d: str, lower: bool, unit: bool):
    """PrimFunc (t (B, n, n), b (B, n, k)) -> x: forward (lower) or back substitution, reading
    only t's lower (upper) triangle, its diagonal taken as ones when unit."""
    from tvm.script import tirx as T
    u = 1 if unit else 0

    if lower:
        @TS.prim_func(private=True, s_tir=True)
        def trisolve(t: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
            T.func_attr({"tir.noalias": True})
            for bi, j, z in T.grid(B, k, 1):
                with T.sblock("trisolve"):
                    vb, vj, vz = T.axis.remap("SSS", [bi, j, z])
                    T.reads(t[vb, 0:n, 0:n], b[vb, 0:n, vj])
                    T.writes(x[vb, 0:n, vj])
                    acc = T.alloc_buffer((1,), d, scope="local")
                    for i in range(n):
                        acc[0] = b[vb, i, vj]
                        for q in range(i):
                            acc[0] = acc[0] - t[vb, i, q] * x[vb, q, vj]
                        if u == 1:
                            x[vb, i, vj] = acc[0]
                        else:
                            x[vb, i, vj] = acc[0] / t[vb, i, i]
        return trisolve

    @TS.prim_func(private=True, s_tir=True)
    def trisolve_upper(t: T.Buffer((B, n, n), d), b: T.Buffer((B, n, k), d), x: T.Buffer((B, n, k), d)):
        T.func_attr({"tir.noalias": True})
        for bi, j, z in T.grid(B, k, 1):
            with T.sblock("trisolve"):
                vb, vj, vz = T.axis.remap("SSS", [bi, j, z])
                T.reads(t[vb, 0:n, 0:n], b[vb, 0:n, vj])
                T.writes(x[vb, 0:n, vj])
                acc = T.alloc_buffer((1,), d, scope="local")
                for ii in range(n):
                    acc[0] = b[vb, n - 1 - ii, vj]
                    for q in range(n - ii, n):
                        acc[0] = acc[0] - t[vb, n - 1 - ii, q] * x[vb, q, vj]
                    if u == 1:
                        x[vb, n - 1 - ii, vj] = acc[0]
                    else:
                        x[vb, n - 1 - ii, vj] = acc[0] / t[vb, n - 1 - ii, n - 1 - ii]
    return trisolve_upper


@functools.lru_cache(maxsize=KERNELS_KEPT)
def eigh_kernel(tvm, B: int, n: int, d: str):
    """PrimFunc a (B, n, n) -> (B, n + 1, n): cyclic Jacobi on the symmetric matrix a's lower
    triangle stands for (rotations until the off-diagonal mass is below eps^2 of the total, at
    most 100 sweeps: NaN input ends, it does not hang), eigenvalues sorted ascending with their
    vectors, each vector's sign fixed as graphad.prims.decomp.sign_normalize does."""
    from tvm.script import tirx as T
    zero, one, _, _ = _consts(tvm.tirx, d)
    two = tvm.tirx.const(2.0, d)
    eps = float(np.finfo(np.dtype(d)).eps)
    tol2 = tvm.tirx.const(eps * eps, d)
    thr = tvm.tirx.const(0.5 / math.sqrt(max(n, 1)), d)
    sweeps = 100

    @TS.prim_func(private=True, s_tir=True)
    def eigh(a: T.Buffer((B, n, n), d), out: T.Buffer((B, n + 1, n), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("eigh"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:n, 0:n])
                T.writes(out[vb, 0:n + 1, 0:n])
                m = T.alloc_buffer((n, n), d, scope="local")
                v = T.alloc_buffer((n, n), d, scope="local")
                sc = T.alloc_buffer((8,), d, scope="local")
                flag = T.alloc_buffer((2,), "int32", scope="local")
                for i, j in T.grid(n, n):
                    m[i, j] = a[vb, T.max(i, j), T.min(i, j)]
                    v[i, j] = T.Select(i == j, one, zero)
                flag[0] = 0
                for sweep in range(sweeps):
                    if flag[0] == 0:
                        sc[0] = zero
                        sc[1] = zero
                        for i, j in T.grid(n, n):
                            sc[1] = sc[1] + m[i, j] * m[i, j]
                            if i != j:
                                sc[0] = sc[0] + m[i, j] * m[i, j]
                        if sc[0] <= tol2 * sc[1]:
                            flag[0] = 1
                        else:
                            for p in range(n):
                                for q in range(p + 1, n):
                                    if m[p, q] != zero:
                                        sc[2] = (m[q, q] - m[p, p]) / (two * m[p, q])
                                        sc[3] = T.Select(sc[2] >= zero, one, zero - one) / (
                                            T.abs(sc[2]) + T.hypot(sc[2], one))
                                        sc[4] = one / T.sqrt(sc[3] * sc[3] + one)
                                        sc[5] = sc[3] * sc[4]
                                        for k in range(n):
                                            sc[6] = m[k, p]
                                            sc[7] = m[k, q]
                                            m[k, p] = sc[4] * sc[6] - sc[5] * sc[7]
                                            m[k, q] = sc[5] * sc[6] + sc[4] * sc[7]
                                        for k in range(n):
                                            sc[6] = m[p, k]
                                            sc[7] = m[q, k]
                                            m[p, k] = sc[4] * sc[6] - sc[5] * sc[7]
                                            m[q, k] = sc[5] * sc[6] + sc[4] * sc[7]
                                        for k in range(n):
                                            sc[6] = v[k, p]
                                            sc[7] = v[k, q]
                                            v[k, p] = sc[4] * sc[6] - sc[5] * sc[7]
                                            v[k, q] = sc[5] * sc[6] + sc[4] * sc[7]
                                        # the rotation's own value there, without its rounding
                                        # error: left in, a float32 matrix never met the stopping
                                        # test and ran all its sweeps (200x200: 100, 1.6 s)
                                        m[p, q] = zero
                                        m[q, p] = zero
                # selection sort of the diagonal, ascending, moving the vectors along
                for i in range(n):
                    flag[1] = i
                    for j in range(i + 1, n):
                        if m[j, j] < m[flag[1], flag[1]]:
                            flag[1] = j
                    if flag[1] != i:
                        sc[6] = m[i, i]
                        m[i, i] = m[flag[1], flag[1]]
                        m[flag[1], flag[1]] = sc[6]
                        for k in range(n):
                            sc[7] = v[k, i]
                            v[k, i] = v[k, flag[1]]
                            v[k, flag[1]] = sc[7]
                # the sign: the first component reaching 0.5 / sqrt(n) is positive
                for j in range(n):
                    flag[1] = 0
                    for i in range(n):
                        if flag[1] == 0:
                            if T.abs(v[i, j]) >= thr:
                                flag[1] = T.Select(v[i, j] < zero, 2, 1)
                    for i in range(n):
                        out[vb, i, j] = T.Select(flag[1] == 2, zero - v[i, j], v[i, j])
                    out[vb, n, j] = m[j, j]
    return eigh


@functools.lru_cache(maxsize=KERNELS_KEPT)
def qr_kernel(tvm, B: int, m_: int, n: int, d: str):
    """PrimFunc a (B, m, n), m >= n -> (B, m + n, n): Householder QR as LAPACK's dgeqr2 (dlarfg's
    signs) with q accumulated backwards (dorg2r); rows 0..m-1 q, then r."""
    from tvm.script import tirx as T
    zero, one, _, _ = _consts(tvm.tirx, d)

    @TS.prim_func(private=True, s_tir=True)
    def qr(a: T.Buffer((B, m_, n), d), out: T.Buffer((B, m_ + n, n), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("qr"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:m_, 0:n])
                T.writes(out[vb, 0:m_ + n, 0:n])
                r = T.alloc_buffer((m_, n), d, scope="local")
                vv = T.alloc_buffer((m_, n), d, scope="local")
                tau = T.alloc_buffer((n,), d, scope="local")
                sc = T.alloc_buffer((4,), d, scope="local")
                for i, j in T.grid(m_, n):
                    r[i, j] = a[vb, i, j]
                for j in range(n):
                    sc[0] = zero
                    for i in range(j + 1, m_):
                        sc[0] = sc[0] + r[i, j] * r[i, j]
                    sc[1] = r[j, j]
                    for i in range(m_):
                        vv[i, j] = zero
                    vv[j, j] = one
                    if sc[0] == zero:
                        tau[j] = zero
                    else:
                        sc[2] = T.Select(sc[1] >= zero, zero - one, one) * T.hypot(sc[1], T.sqrt(sc[0]))
                        tau[j] = (sc[2] - sc[1]) / sc[2]
                        for i in range(j + 1, m_):
                            vv[i, j] = r[i, j] / (sc[1] - sc[2])
                            r[i, j] = zero
                        r[j, j] = sc[2]
                        for c in range(j + 1, n):
                            sc[3] = zero
                            for i in range(j, m_):
                                sc[3] = sc[3] + vv[i, j] * r[i, c]
                            for i in range(j, m_):
                                r[i, c] = r[i, c] - tau[j] * vv[i, j] * sc[3]
                for i, c in T.grid(m_, n):
                    out[vb, i, c] = T.Select(i == c, one, zero)
                for jj in range(n):
                    for c in range(n):
                        sc[3] = zero
                        for i in range(n - 1 - jj, m_):
                            sc[3] = sc[3] + vv[i, n - 1 - jj] * out[vb, i, c]
                        for i in range(n - 1 - jj, m_):
                            out[vb, i, c] = out[vb, i, c] - tau[n - 1 - jj] * vv[i, n - 1 - jj] * sc[3]
                for i, c in T.grid(n, n):
                    out[vb, m_ + i, c] = r[i, c]
    return qr


@functools.lru_cache(maxsize=KERNELS_KEPT)
def svd_kernel(tvm, B: int, m_: int, n: int, d: str):
    """PrimFunc a (B, m, n), m >= n -> (B, m + 1 + n, n): one-sided Jacobi (Hestenes): rotate
    column pairs of u = a until every pair is orthogonal to eps (at most 100 sweeps), the same
    rotations accumulated in v; s the column norms, sorted descending; u's columns divided by s
    (zero where s is negligible), signs as graphad.prims.decomp.svd_canonical."""
    from tvm.script import tirx as T
    zero, one, _, _ = _consts(tvm.tirx, d)
    two = tvm.tirx.const(2.0, d)
    eps = tvm.tirx.const(float(np.finfo(np.dtype(d)).eps), d)
    thr = tvm.tirx.const(0.5 / math.sqrt(max(n, 1)), d)
    small = tvm.tirx.const(max(m_, n) * float(np.finfo(np.dtype(d)).eps), d)
    sweeps = 100

    @TS.prim_func(private=True, s_tir=True)
    def svd(a: T.Buffer((B, m_, n), d), out: T.Buffer((B, m_ + 1 + n, n), d)):
        T.func_attr({"tir.noalias": True})
        for bi, z in T.grid(B, 1):  # z: see _SCALAR_LANE
            with T.sblock("svd"):
                vb, vz = T.axis.remap("SS", [bi, z])
                T.reads(a[vb, 0:m_, 0:n])
                T.writes(out[vb, 0:m_ + 1 + n, 0:n])
                u = T.alloc_buffer((m_, n), d, scope="local")
                v = T.alloc_buffer((n, n), d, scope="local")
                sv = T.alloc_buffer((n,), d, scope="local")
                sc = T.alloc_buffer((8,), d, scope="local")
                flag = T.alloc_buffer((3,), "int32", scope="local")
                for i, j in T.grid(m_, n):
                    u[i, j] = a[vb, i, j]
                for i, j in T.grid(n, n):
                    v[i, j] = T.Select(i == j, one, zero)
                flag[0] = 0
                for sweep in range(sweeps):
                    if flag[0] == 0:
                        flag[2] = 0
                        for p in range(n):
                            for q in range(p + 1, n):
                                sc[0] = zero
                                sc[1] = zero
                                sc[2] = zero
                                for k in range(m_):
                                    sc[0] = sc[0] + u[k, p] * u[k, p]
                                    sc[1] = sc[1] + u[k, q] * u[k, q]
                                    sc[2] = sc[2] + u[k, p] * u[k, q]
                                if T.abs(sc[2]) > eps * T.sqrt(sc[0] * sc[1]):
                                    flag[2] = 1
                                    sc[3] = (sc[1] - sc[0]) / (two * sc[2])
                                    sc[4] = T.Select(sc[3] >= zero, one, zero - one) / (
                                        T.abs(sc[3]) + T.hypot(sc[3], one))
                                    sc[5] = one / T.sqrt(sc[4] * sc[4] + one)
                                    sc[4] = sc[5] * sc[4]
                                    for k in range(m_):
                                        sc[6] = u[k, p]
                                        sc[7] = u[k, q]
                                        u[k, p] = sc[5] * sc[6] - sc[4] * sc[7]
                                        u[k, q] = sc[4] * sc[6] + sc[5] * sc[7]
                                    for k in range(n):
                                        sc[6] = v[k, p]
                                        sc[7] = v[k, q]
                                        v[k, p] = sc[5] * sc[6] - sc[4] * sc[7]
                                        v[k, q] = sc[4] * sc[6] + sc[5] * sc[7]
                        if flag[2] == 0:
                            flag[0] = 1
                for j in range(n):
                    sc[0] = zero
                    for k in range(m_):
                        sc[0] = sc[0] + u[k, j] * u[k, j]
                    sv[j] = T.sqrt(sc[0])
                # selection sort, descending, moving u's and v's columns along
                for i in range(n):
                    flag[1] = i
                    for j in range(i + 1, n):
                        if sv[j] > sv[flag[1]]:
                            flag[1] = j
                    if flag[1] != i:
                        sc[6] = sv[i]
                        sv[i] = sv[flag[1]]
                        sv[flag[1]] = sc[6]
                        for k in range(m_):
                            sc[7] = u[k, i]
                            u[k, i] = u[k, flag[1]]
                            u[k, flag[1]] = sc[7]
                        for k in range(n):
                            sc[7] = v[k, i]
                            v[k, i] = v[k, flag[1]]
                            v[k, flag[1]] = sc[7]
                for j in range(n):
                    flag[1] = 0
                    for i in range(n):
                        if flag[1] == 0:
                            if T.abs(v[i, j]) >= thr:
                                flag[1] = T.Select(v[i, j] < zero, 2, 1)
                    sc[0] = T.Select(flag[1] == 2, zero - one, one)
                    for i in range(n):
                        out[vb, m_ + 1 + i, j] = sc[0] * v[i, j]
                    for k in range(m_):
                        out[vb, k, j] = T.Select(sv[j] <= small * sv[0], zero, sc[0] * u[k, j] / sv[j])
                    out[vb, m_, j] = sv[j]
    return svd


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


_EXPONENT_BITS = {"float32": ("int32", 0x7F800000), "float64": ("int64", 0x7FF0000000000000)}


def _power_of_two_scale(cx, a3, d: str):
    """(a3 / p, p) with p (B, 1, 1) the power of two at or below each matrix's largest |entry|
    (1 for a zero, subnormal, infinite or NaN maximum). The Jacobi and Householder kernels sum
    squares of the entries: unscaled, a matrix of entries about 1e-170 (or 1e160; 1e-23 and 1e19
    in float32, whose product of two squared column norms overflowed at 4e9) underflowed or
    overflowed there and came back as its diagonal or column norms (a reviewer's find). Scaling
    by a power of two is exact, so every other matrix gets the same bits as before."""
    R, te, tir = cx.R, cx.te, cx.tir
    ity, mask = _EXPONENT_BITS[d]
    amax = cx.emit(R.max(R.abs(a3), axis=[1, 2], keepdims=True))

    def scale(t):
        def elem(*i):
            e = tir.bitwise_and(tir.reinterpret(ity, t(*i)), tir.const(mask, ity))  # the exponent's bits
            bad = tir.Or(e == tir.const(0, ity), e == tir.const(mask, ity))  # 0 or subnormal; inf or NaN
            return tir.Select(bad, tir.const(1.0, d), tir.reinterpret(d, e))
        return te.compute(t.shape, elem, name="pow2_scale")
    p = cx.emit_te(scale, amax, name="pow2_scale")
    return cx.emit(R.divide(a3, p)), p


def _rows_times(cx, r, p, rows: int, lo: int, hi: int, d: str):
    """r (B, rows, n) with its rows lo..hi-1 multiplied by p (B, 1, 1)."""
    mask = np.zeros((rows, 1), bool)
    mask[lo:hi] = True
    factor = cx.emit(cx.R.where(cx.const(mask, "bool"), p, cx.const(1.0, d)))
    return cx.emit(cx.R.multiply(r, factor))


def lower_eigh(cx, node, a):
    """eigh: the batch flattened and scaled by a power of two, one call_tir (Jacobi), the
    eigenvalues scaled back, reshaped back."""
    shape = node.inputs[0].type.shape
    n = shape[-1]
    d = node.inputs[0].type.dtype.name
    a3, bsz = _batched(cx, a, shape, (n, n))
    a3, p = _power_of_two_scale(cx, a3, d)
    r = call_kernel(cx, eigh_kernel(cx.tvm, bsz, n, d), "linalg_eigh", [a3], [((bsz, n + 1, n), d)])
    r = _rows_times(cx, r, p, n + 1, n, n + 1, d)
    out = tuple(node.outputs[0].type.shape)
    return cx.R.reshape(r, out) if len(out) != 3 else r


def lower_qr(cx, node, a):
    """qr: the batch flattened and scaled by a power of two, one call_tir (Householder), r scaled
    back, reshaped back."""
    shape = node.inputs[0].type.shape
    m, n = shape[-2], shape[-1]
    d = node.inputs[0].type.dtype.name
    a3, bsz = _batched(cx, a, shape, (m, n))
    a3, p = _power_of_two_scale(cx, a3, d)
    r = call_kernel(cx, qr_kernel(cx.tvm, bsz, m, n, d), "linalg_qr", [a3], [((bsz, m + n, n), d)])
    r = _rows_times(cx, r, p, m + n, m, m + n, d)
    out = tuple(node.outputs[0].type.shape)
    return cx.R.reshape(r, out) if len(out) != 3 else r


def lower_svd(cx, node, a):
    """svd: the batch flattened and scaled by a power of two, one call_tir (one-sided Jacobi), s
    scaled back, reshaped back."""
    shape = node.inputs[0].type.shape
    m, n = shape[-2], shape[-1]
    d = node.inputs[0].type.dtype.name
    a3, bsz = _batched(cx, a, shape, (m, n))
    a3, p = _power_of_two_scale(cx, a3, d)
    r = call_kernel(cx, svd_kernel(cx.tvm, bsz, m, n, d), "linalg_svd", [a3], [((bsz, m + 1 + n, n), d)])
    r = _rows_times(cx, r, p, m + 1 + n, m, m + 1, d)
    out = tuple(node.outputs[0].type.shape)
    return cx.R.reshape(r, out) if len(out) != 3 else r
