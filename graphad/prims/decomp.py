"""Dense linear-algebra primitives (issue 17): solve, slogdet, cholesky, triangular_solve.

Each takes square matrices in its operands' last two axes and any number of leading batch axes
(equal in both operands: graphad.ops.linalg broadcasts them first). Only float32 and float64 are
accepted (NumPy's linalg refuses float16; JAX's takes float32/float64), so an integer, bool or
half-precision operand is a DTypeError naming the op, shapes and dtypes.

Derivatives follow JAX (jax/_src/lax/linalg.py): they are written with solves, never with an
explicit inverse, and every rule is built from these primitives and the op functions, so the
derivative graphs are differentiable again:
* solve:   dx = solve(a, db - da x);  gb = solve(a^T, g), ga = -gb x^T
* slogdet (one result: sign and log|det| stacked in a last axis of 2): d logabsdet = tr(solve(a, da));  ga = g solve(a^T, I) (the sign is piecewise constant)
* cholesky (reads the lower triangle, as NumPy's): dl = l phi(l^-1 ds l^-T), ds the symmetric
  matrix the lower triangle of da stands for, phi = lower triangle with the diagonal halved;
  gs = l^-T phi(l^T g) l^-1, folded back onto the lower triangle
* triangular_solve: dx = op(t)^-1 (db - op(dt) x);  gb = op(t)^-T g, gt = -(gb x^T or x gb^T)
  restricted to the triangle read.

Singular or not positive definite inputs never raise (a compiled graph has no exception to give):
as JAX, solve gives non-finite values, slogdet gives sign 0 and logabsdet -inf (NumPy's answer),
cholesky gives a matrix of NaNs (NumPy raises LinAlgError instead; JAX returns NaNs).

The reference kernels call NumPy's LAPACK-backed routines where those do not raise, and the
same partial-pivoting elimination the compiled kernel runs (graphad/lowering/linalg_tir.py)
where they would (a singular matrix), so both backends give the same non-finite pattern.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir.core import TensorType
from ._util import moveaxis_to_front
from .registry import Primitive, ops, register


# ---------------------------------------------------------------- shape rules

def _square(a: TensorType, what: str = "a"):
    if a.dtype.name not in ("float32", "float64"):
        raise DTypeError(f"{what} must be float32 or float64, got {a.dtype.name} (linear algebra is not defined "
                         f"for integers, bool or half precision: cast first)")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{what} must be a (batch of) square matrices (..., n, n), got shape {a.shape}")


def _rhs(a: TensorType, b: TensorType):
    _square(a)
    if b.dtype is not a.dtype:
        raise DTypeError(f"a and b must have one dtype, got {a.dtype.name} and {b.dtype.name}")
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"b must be (..., n, k) with a's batch axes and n = {a.shape[-1] if a.ndim else '?'}: "
                         f"a {a.shape}, b {b.shape} (graphad.ops.linalg broadcasts the batch axes and takes vectors)")


def _solve_shape(a, b):
    _rhs(a, b)
    return TensorType(b.shape, b.dtype)


def _slogdet_shape(a):
    _square(a)
    return TensorType(a.shape[:-2] + (2,), a.dtype)


def _cholesky_shape(a):
    _square(a)
    return TensorType(a.shape, a.dtype)


def _check_flags(**flags):
    for k, v in flags.items():
        if not isinstance(v, (bool, np.bool_)):
            raise ShapeError(f"{k} must be a bool, got {v!r}")


def _trisolve_shape(a, b, lower, trans, unit_diagonal):
    _check_flags(lower=lower, trans=trans, unit_diagonal=unit_diagonal)
    _rhs(a, b)
    return TensorType(b.shape, b.dtype)


# ---------------------------------------------------------------- NumPy reference kernels

def ge_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gaussian elimination with partial pivoting over the batch axes, in a's dtype: the very
    algorithm of the compiled kernel (first largest |pivot|, row swaps, back substitution). Used
    for singular matrices, where NumPy raises; a zero pivot gives infinities and NaNs as JAX's."""
    m = np.array(a, copy=True)
    x = np.array(b, copy=True)
    n = m.shape[-1]
    idx = np.indices(m.shape[:-2])
    with np.errstate(all="ignore"):
        for c in range(n):
            p = c + np.argmax(np.abs(m[..., c:, c]), axis=-1) if n else None
            rows_c, rows_p = m[..., c, :].copy(), m[(*idx, p)].copy()
            m[..., c, :], m[(*idx, p)] = rows_p, rows_c
            xc, xp = x[..., c, :].copy(), x[(*idx, p)].copy()
            x[..., c, :], x[(*idx, p)] = xp, xc
            f = m[..., c + 1:, c] / m[..., c:c + 1, c]
            m[..., c + 1:, c + 1:] -= f[..., :, None] * m[..., c:c + 1, c + 1:]
            x[..., c + 1:, :] -= f[..., :, None] * x[..., c:c + 1, :]
        for i in range(n - 1, -1, -1):
            s = x[..., i, :] - np.einsum("...q,...qk->...k", m[..., i, i + 1:], x[..., i + 1:, :])
            x[..., i, :] = s / m[..., i, i:i + 1]
    return x


def _solve_impl(a, b):
    if a.size == 0 or b.size == 0:
        return np.zeros(b.shape, b.dtype)
    try:
        return np.linalg.solve(a, b).astype(b.dtype, copy=False)
    except np.linalg.LinAlgError:  # an exactly singular matrix: JAX's non-finite answer, no error
        return ge_solve(a, b)


def _slogdet_impl(a):
    sign, lad = np.linalg.slogdet(a)
    return np.stack([np.asarray(sign, a.dtype), np.asarray(lad, a.dtype)], axis=-1)


def _cholesky_impl(a):
    try:
        return np.linalg.cholesky(a).astype(a.dtype, copy=False)
    except np.linalg.LinAlgError:  # not positive definite somewhere: NaNs there (JAX), no error
        out = np.empty_like(a)
        for pos in np.ndindex(*a.shape[:-2]):
            try:
                out[pos] = np.linalg.cholesky(a[pos])
            except np.linalg.LinAlgError:
                out[pos] = np.nan
        return out


def tri_substitute(a, b, lower, trans, unit_diagonal):
    """op(t) x = b by substitution over the batch axes, t the lower (or upper) triangle of a with
    a unit diagonal if asked, op(t) = t^T if trans: the compiled kernel's order of operations."""
    t = np.tril(a) if lower else np.triu(a)
    if trans:
        t = np.swapaxes(t, -1, -2)
        lower = not lower
    n = a.shape[-1]
    x = np.array(b, copy=True)
    order = range(n) if lower else range(n - 1, -1, -1)
    with np.errstate(all="ignore"):
        for i in order:
            rest = slice(0, i) if lower else slice(i + 1, n)
            s = x[..., i, :] - np.einsum("...q,...qk->...k", t[..., i, rest], x[..., rest, :])
            x[..., i, :] = s if unit_diagonal else s / t[..., i, i:i + 1]
    return x


def _trisolve_impl(a, b, lower, trans, unit_diagonal):
    return tri_substitute(a, b, bool(lower), bool(trans), bool(unit_diagonal))


# ---------------------------------------------------------------- rule helpers (on tracers)

def mT(x):
    """x with its last two axes swapped."""
    n = len(x.shape)
    return ops.transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _eye_like(a):
    """The identity broadcast to a's shape (a constant)."""
    n = a.shape[-1]
    return ops.broadcast_to(ops.constant(np.eye(n, dtype=a.dtype.np)), tuple(a.shape))


def _masked(x, mask: np.ndarray):
    """x where the constant bool mask (n, n) holds, else 0 (a select: an infinity outside stays out)."""
    return ops.where(ops.constant(mask), x, ops.zeros_like(x))


def _tri(n: int, lower: bool, strict: bool) -> np.ndarray:
    """The (n, n) mask of the lower (upper) triangle, without the diagonal if strict."""
    k = -1 if strict else 0
    m = np.tri(n, n, k, dtype=bool)
    return m if lower else m.T


def _batch_all(args, dims):
    """Every operand with the batch axis at 0 (unbatched ones broadcast to the batch size)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    out = []
    for a, d in zip(args, dims):
        if d is None:
            out.append(ops.broadcast_to(ops.expand_dims(a, 0), (size,) + tuple(a.shape)))
        else:
            out.append(moveaxis_to_front(a, d))
    return out


# ---------------------------------------------------------------- solve

def _solve_jvp(p, t, o):
    a, _ = p
    x = o[0]
    rhs = t[1]
    if t[0] is not None:
        ax = ops.matmul_prim(t[0], x)
        rhs = ops.neg(ax) if rhs is None else ops.sub(rhs, ax)
    return [solve.bind(a, rhs)]


def _solve_vjp(c, p, o):
    a, _ = p
    gb = solve.bind(mT(a), c[0])
    return [ops.neg(ops.matmul_prim(gb, mT(o[0]))), gb]


def _solve_batch(args, dims):
    return [solve.bind(*_batch_all(args, dims))], [0]


solve = register(Primitive(
    "solve", shape_rule=_solve_shape, impl=_solve_impl, jvp=_solve_jvp, vjp=_solve_vjp, batch=_solve_batch,
    formula="x = a^-1 b (LU, partial pivoting); dx = solve(a, db - da x); gb = solve(a^T, g), ga = -gb x^T"))


# ---------------------------------------------------------------- slogdet

def _last(x, i):
    """x[..., i] (a static slice of the last axis, which is dropped)."""
    nd = len(x.shape)
    lead = tuple(x.shape[:-1])
    return ops.reshape(ops.slice_prim(x, (0,) * (nd - 1) + (i,), lead + (i + 1,), (1,) * nd), lead)


def _slogdet_jvp(p, t, o):
    if t[0] is None:
        return [None]
    y = solve.bind(p[0], t[0])
    dlad = ops.trace(y, 0, -2, -1)
    return [ops.stack([ops.zeros_like(dlad), dlad], -1)]  # the sign is piecewise constant


def _slogdet_vjp(c, p, o):
    a = p[0]
    g = _last(c[0], 1)  # the sign's cotangent meets a zero derivative
    inv_t = solve.bind(mT(a), _eye_like(a))  # a^-T by a solve (LU of a^T), as JAX's slogdet
    return [ops.mul(ops.expand_dims(ops.expand_dims(g, -1), -1), inv_t)]


def _slogdet_batch(args, dims):
    return [slogdet.bind(moveaxis_to_front(args[0], dims[0]))], [0]


slogdet = register(Primitive(
    "slogdet", shape_rule=_slogdet_shape, impl=_slogdet_impl, jvp=_slogdet_jvp, vjp=_slogdet_vjp,
    batch=_slogdet_batch,
    formula="[..., 0] sign, [..., 1] log|det a| (LU); d log|det| = tr(solve(a, da)); ga = g a^-T; sign: zero"))


# ---------------------------------------------------------------- cholesky

def _sym_from_lower(x):
    """The symmetric matrix x's lower triangle stands for: tril(x) + tril(x, -1)^T."""
    n = x.shape[-1]
    low = _masked(x, _tri(n, True, False))
    return ops.add(low, mT(_masked(x, _tri(n, True, True))))


def _phi(x):
    """The lower triangle of x with its diagonal halved."""
    n = x.shape[-1]
    w = np.tri(n, n, 0) - 0.5 * np.eye(n)
    return ops.mul(_masked(x, _tri(n, True, False)), ops.constant(w.astype(x.dtype.np)))


def _cholesky_jvp(p, t, o):
    if t[0] is None:
        return [None]
    low = o[0]
    ds = _sym_from_lower(t[0])
    y = triangular_solve.bind(low, ds, lower=True, trans=False, unit_diagonal=False)           # l^-1 ds
    z = mT(triangular_solve.bind(low, mT(y), lower=True, trans=False, unit_diagonal=False))    # l^-1 ds l^-T
    return [ops.matmul_prim(low, _phi(z))]


def _cholesky_vjp(c, p, o):
    low = o[0]
    m = _phi(ops.matmul_prim(mT(low), c[0]))
    y = triangular_solve.bind(low, m, lower=True, trans=True, unit_diagonal=False)             # l^-T m
    gs = mT(triangular_solve.bind(low, mT(y), lower=True, trans=True, unit_diagonal=False))    # l^-T m l^-1
    # ds = tril(da) + tril(da, -1)^T: its adjoint puts gs_ij + gs_ji below the diagonal, gs_ii on it
    n = low.shape[-1]
    return [ops.add(_masked(gs, _tri(n, True, False)), _masked(mT(gs), _tri(n, True, True)))]


def _cholesky_batch(args, dims):
    return [cholesky.bind(moveaxis_to_front(args[0], dims[0]))], [0]


cholesky = register(Primitive(
    "cholesky", shape_rule=_cholesky_shape, impl=_cholesky_impl, jvp=_cholesky_jvp, vjp=_cholesky_vjp,
    batch=_cholesky_batch,
    formula="l l^T = a (lower triangle read); dl = l phi(l^-1 ds l^-T); gs = l^-T phi(l^T g) l^-1"))


# ---------------------------------------------------------------- triangular_solve

def _tri_mask_of(n, lower, unit_diagonal):
    return _tri(n, lower, bool(unit_diagonal))


def _trisolve_jvp(p, t, o, lower, trans, unit_diagonal):
    a, _ = p
    x = o[0]
    rhs = t[1]
    if t[0] is not None:
        dt_ = _masked(t[0], _tri_mask_of(a.shape[-1], lower, unit_diagonal))
        tx = ops.matmul_prim(mT(dt_) if trans else dt_, x)
        rhs = ops.neg(tx) if rhs is None else ops.sub(rhs, tx)
    return [triangular_solve.bind(a, rhs, lower=lower, trans=trans, unit_diagonal=unit_diagonal)]


def _trisolve_vjp(c, p, o, lower, trans, unit_diagonal):
    a, _ = p
    x = o[0]
    gb = triangular_solve.bind(a, c[0], lower=lower, trans=not trans, unit_diagonal=unit_diagonal)
    gt = ops.matmul_prim(x, mT(gb)) if trans else ops.matmul_prim(gb, mT(x))
    ga = ops.neg(_masked(gt, _tri_mask_of(a.shape[-1], lower, unit_diagonal)))
    return [ga, gb]


def _trisolve_batch(args, dims, lower, trans, unit_diagonal):
    return [triangular_solve.bind(*_batch_all(args, dims), lower=lower, trans=trans,
                                  unit_diagonal=unit_diagonal)], [0]


triangular_solve = register(Primitive(
    "triangular_solve", shape_rule=_trisolve_shape, impl=_trisolve_impl, jvp=_trisolve_jvp, vjp=_trisolve_vjp,
    batch=_trisolve_batch,
    formula="x = op(t)^-1 b, t = tril/triu(a); dx = op(t)^-1 (db - op(dt) x); gb = op(t)^-T g, gt = -gb x^T"))
