"""graphad.ops.linalg: NumPy's linear algebra (issue 17) with JAX's and MindSpore's spellings.

solve, inv, det, slogdet, cholesky, and triangular solves (SciPy's `solve_triangular`, JAX's
`lax.linalg.triangular_solve`). Every function takes (batches of) matrices in the last two axes;
batch axes broadcast as NumPy's. Operands must be float32 or float64: an integer, bool or
half-precision operand is a GraphadError naming the op, shapes and dtypes (NumPy would cast
integers to float64 silently; a graph whose dtype changes under the user is worse than an error).

Singular matrices never raise (a compiled graph cannot): solve and inv give infinities/NaNs as
JAX does, det gives 0 and slogdet (0, -inf) as NumPy and JAX, cholesky of a matrix that is not
positive definite gives NaNs (JAX; NumPy raises LinAlgError). See docs/linalg.md.

The primitives are in graphad/prims/decomp.py (their derivatives are solve-based) and their
compiled kernels in graphad/lowering/linalg_tir.py.
"""
from __future__ import annotations

from ..errors import DTypeError, ShapeError
from ..prims import decomp as _dc
from ..prims._util import broadcast_shapes
from ..prims.lax import _errors as _err
from ..prims.lax.core import _operands, as_tensor, exp, mul
from ..prims.lax.shape import broadcast_to, reshape, transpose

__all__ = ["solve", "inv", "det", "slogdet", "cholesky", "solve_triangular", "triangular_solve",
           # MindSpore's spellings (ops.inverse, ops.matrix_determinant, ops.log_matrix_determinant)
           "matrix_inverse", "inverse", "matrix_determinant", "log_matrix_determinant"]


def _float_matrix(a, what="a"):
    a = as_tensor(a)
    if a.dtype.name not in ("float32", "float64"):
        raise DTypeError(f"{what} must be float32 or float64, got {a.dtype.name} {a.shape}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{what} must be a (batch of) square matrices (..., n, n), got shape {a.shape}")
    return a


def _mT(x):
    n = x.ndim
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _with_rhs(a, b, name):
    """(a, b as (..., n, k), whether b was a vector): one dtype, batch axes broadcast (NumPy 2:
    b is a vector only when it is 1-D)."""
    a, b = _operands(a, b)
    a = _float_matrix(a)
    if b.dtype.name not in ("float32", "float64"):
        raise DTypeError(f"b must be float32 or float64, got {b.dtype.name} {b.shape}")
    n = a.shape[-1]
    vec = b.ndim == 1
    if vec:
        b = reshape(b, (b.shape[0], 1))
    if b.ndim < 2 or b.shape[-2] != n:
        raise ShapeError(f"{name}: b must be (n,) or (..., n, k) with n = {n} for a of shape {a.shape}, "
                         f"got shape {b.shape if not vec else (b.shape[0],)}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if tuple(a.shape[:-2]) != batch:
        a = broadcast_to(a, batch + tuple(a.shape[-2:]))
    if tuple(b.shape[:-2]) != batch:
        b = broadcast_to(b, batch + tuple(b.shape[-2:]))
    return a, b, vec


def solve(a, b):
    """x with a @ x = b (NumPy's linalg.solve): a (..., n, n); b (n,) or (..., n, k), batch axes
    broadcast. LU with partial pivoting; a singular a gives infinities/NaNs (JAX), no error.
    Differentiable in a and b by solves (dx = solve(a, db - da x))."""
    a, b, vec = _with_rhs(a, b, "solve")
    x = _dc.solve.bind(a, b)
    return reshape(x, tuple(x.shape[:-1])) if vec else x


def inv(a):
    """The inverse of (a batch of) square matrices (NumPy's linalg.inv; MindSpore's
    matrix_inverse): solve(a, I). Singular: infinities/NaNs (JAX), no error."""
    import numpy as np
    from ..prims.lax.core import constant
    a = _float_matrix(a)
    eye = broadcast_to(constant(np.eye(a.shape[-1], dtype=a.dtype.np)), tuple(a.shape))
    return _dc.solve.bind(a, eye)


def slogdet(a):
    """(sign, log|det a|) of (a batch of) square matrices (NumPy's linalg.slogdet): LU with partial
    pivoting; a singular a gives (0, -inf). The sign's derivative is zero; log|det|'s is
    tr(solve(a, da))."""
    from ..prims.lax.shape import slice_prim
    a = _float_matrix(a)
    both = _dc.slogdet.bind(a)  # (..., 2): sign, log|det|
    nd, lead = both.ndim, tuple(both.shape[:-1])
    sign, lad = (reshape(slice_prim(both, (0,) * (nd - 1) + (i,), lead + (i + 1,), (1,) * nd), lead) for i in (0, 1))
    return sign, lad


def det(a):
    """The determinant of (a batch of) square matrices (NumPy's linalg.det): sign * exp(log|det|)
    from slogdet, so a singular a gives 0 (its gradient there is NaN, as JAX's slogdet-based one)."""
    sign, lad = slogdet(a)
    return mul(sign, exp(lad))


def cholesky(a, upper=False):
    """The Cholesky factor of (a batch of) symmetric positive definite matrices (NumPy's
    linalg.cholesky, MindSpore's ops.cholesky): lower l with l @ l.T = a, reading a's lower
    triangle only (upper=True: l.T). Not positive definite: NaNs (JAX; NumPy raises)."""
    a = _float_matrix(a)
    low = _dc.cholesky.bind(a)
    return _mT(low) if upper else low


def _trans_flag(trans):
    if trans in (0, "N", False):
        return False
    if trans in (1, 2, "T", "C", True):  # conjugate transpose is the transpose for real dtypes
        return True
    raise ShapeError(f"trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}")


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False):
    """x with op(t) @ x = b, t the lower (lower=True) or upper triangle of a, op(t) = t.T for
    trans=1/'T' (SciPy's, JAX's and MindSpore's scipy.linalg.solve_triangular): the other triangle
    of a is not read; unit_diagonal=True takes the diagonal as ones (not read either)."""
    a, b, vec = _with_rhs(a, b, "solve_triangular")
    x = _dc.triangular_solve.bind(a, b, lower=bool(lower), trans=_trans_flag(trans),
                                  unit_diagonal=bool(unit_diagonal))
    return reshape(x, tuple(x.shape[:-1])) if vec else x


def triangular_solve(a, b, left_side=False, lower=False, transpose_a=False, conjugate_a=False,
                     unit_diagonal=False):
    """JAX's lax.linalg.triangular_solve: left_side=True solves op(a) @ x = b, False (its default)
    x @ op(a) = b; op(a) = a.T if transpose_a (conjugate_a changes nothing for real dtypes)."""
    if left_side:
        return solve_triangular(a, b, 1 if transpose_a else 0, lower, unit_diagonal)
    # x op(t) = b  <=>  op(t)^T x^T = b^T
    a, b = _operands(a, b)
    if b.ndim < 2:
        raise ShapeError(f"triangular_solve: b must have at least 2 axes, got shape {b.shape}")
    xt = solve_triangular(a, _mT(b), 0 if transpose_a else 1, lower, unit_diagonal)
    return _mT(xt)


import sys as _sys  # noqa: E402

# argument errors name the op, its operands and the user's line, as every graphad.ops function's
_err.wrap_module(_sys.modules[__name__], globals())
# MindSpore's names, bound after wrapping (one wrapped function, several names)
matrix_inverse = inverse = inv
matrix_determinant = det
log_matrix_determinant = slogdet
