"""graphad.ops.linalg: NumPy's linear algebra (issue 17) with JAX's and MindSpore's spellings.

solve, inv, det, slogdet, cholesky, triangular solves (SciPy's `solve_triangular`, JAX's
`lax.linalg.triangular_solve`), eigh / eigvalsh, qr, svd / svdvals, lstsq, pinv and the norms
(norm, vector_norm, matrix_norm). Every function takes (batches of) matrices in the last two axes;
batch axes broadcast as NumPy's. Operands must be float32 or float64, or complex64 and
complex128 (every function here, with JAX's complex derivatives, docs/complex.md): an integer,
bool or half-precision operand is a GraphadError naming the op, shapes and dtypes (NumPy would cast
integers to float64 silently; a graph whose dtype changes under the user is worse than an error).

Singular matrices never raise (a compiled graph cannot): solve and inv give infinities/NaNs as
JAX does, det gives 0 and slogdet (0, -inf) as NumPy and JAX, cholesky of a matrix that is not
positive definite gives NaNs (JAX; NumPy raises LinAlgError). Eigen- and singular vectors get a
fixed sign (NumPy leaves it to LAPACK). See docs/linalg.md.

The primitives are in graphad/prims/decomp.py (their derivatives are solve-based) and their
compiled kernels in graphad/lowering/linalg_tir.py.
"""
from __future__ import annotations

from ..errors import DTypeError, ShapeError
from ..prims import decomp as _dc
from ..prims._util import broadcast_shapes
from ..prims.lax import _errors as _err
from ..prims.lax.core import _operands, add, as_tensor, exp, mul
from ..prims.lax.shape import broadcast_to, reshape, transpose

__all__ = ["solve", "inv", "det", "slogdet", "cholesky", "solve_triangular", "triangular_solve", "eigh", "eigvalsh",
           "qr", "svd", "svdvals", "pinv", "lstsq", "norm", "vector_norm", "matrix_norm",
           # MindSpore's spellings (ops.inverse, ops.matrix_determinant, ops.log_matrix_determinant)
           "matrix_inverse", "inverse", "matrix_determinant", "log_matrix_determinant"]


def _float_matrix(a, what="a", complex_ok=False):
    """a as a tensor, refused unless float32/float64 (or, with complex_ok, complex64/complex128) (..., n, n)."""
    a = as_tensor(a)
    if complex_ok and a.dtype.is_complex:
        pass
    elif a.dtype.name not in ("float32", "float64"):
        raise DTypeError(f"{what} must be float32, float64{', complex64 or complex128' if complex_ok else ''}, got "
                         f"{a.dtype.name} {a.shape}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{what} must be a (batch of) square matrices (..., n, n), got shape {a.shape}")
    return a


def _mT(x):
    """x with its last two axes swapped."""
    n = x.ndim
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _mH(x):
    """x^H: the conjugate transpose of the last two axes (the transpose of a real x)."""
    if x.dtype.is_complex:
        from ..prims.lax.core import conj
        return _mT(conj(x))
    return _mT(x)


def _inexact_operands(a, b):
    """(a, b) as tensors of one promoted dtype, each refused first unless float32/float64 or
    complex: promotion would turn an integer operand into a float one silently (solve(int a,
    float b) computed in float64), which the dtype rule refuses."""
    for what, x in (("a", a), ("b", b)):
        x = as_tensor(x)
        if x.dtype.name not in ("float32", "float64", "complex64", "complex128"):
            raise DTypeError(f"{what} must be float32, float64, complex64 or complex128, got {x.dtype.name} {x.shape}")
    return _operands(a, b)


def _with_rhs(a, b, name):
    """(a, b as (..., n, k), whether b was a vector): one dtype, batch axes broadcast (NumPy 2:
    b is a vector only when it is 1-D)."""
    a, b = _inexact_operands(a, b)
    a = _float_matrix(a, complex_ok=True)
    if b.dtype.name not in ("float32", "float64", "complex64", "complex128"):
        raise DTypeError(f"b must be float32, float64, complex64 or complex128, got {b.dtype.name} {b.shape}")
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
    a = _float_matrix(a, complex_ok=True)
    eye = broadcast_to(constant(np.eye(a.shape[-1], dtype=a.dtype.np)), tuple(a.shape))
    return _dc.solve.bind(a, eye)


def slogdet(a):
    """(sign, log|det a|) of (a batch of) square matrices (NumPy's linalg.slogdet): LU with partial
    pivoting; a singular a gives (0, -inf). The sign's derivative is zero; log|det|'s is
    tr(solve(a, da)). A complex a gives a complex sign det / |det| and a real log|det| (NumPy's
    and JAX's), with JAX's derivatives: d sign = sign i Im T, d log|det| = Re T, T = tr(solve(a, da))."""
    from ..prims.lax.shape import slice_prim
    a = _float_matrix(a, complex_ok=True)
    both = _dc.slogdet.bind(a)  # (..., 2): sign, log|det|
    nd, lead = both.ndim, tuple(both.shape[:-1])
    sign, lad = (reshape(slice_prim(both, (0,) * (nd - 1) + (i,), lead + (i + 1,), (1,) * nd), lead) for i in (0, 1))
    if a.dtype.is_complex:
        from ..prims.lax.core import real
        lad = real(lad)
    return sign, lad


def det(a):
    """The determinant of (a batch of) square matrices (NumPy's linalg.det): sign * exp(log|det|)
    from slogdet, so a singular a gives 0 (its gradient there is NaN, as JAX's slogdet-based one).
    A complex a has its own primitive (LAPACK's LU; the derivative det tr(a^-1 da), JAX's)."""
    a = _float_matrix(a, complex_ok=True)
    if a.shape[-1] == 1:  # the entry itself: slogdet's derivative a^-T is NaN at 0, det's is 1
        return reshape(a, tuple(a.shape[:-2]))
    if a.dtype.is_complex:
        return _dc.det.bind(a)
    sign, lad = slogdet(a)
    return mul(sign, exp(lad))


def cholesky(a, upper=False):
    """The Cholesky factor of (a batch of) symmetric positive definite matrices (NumPy's
    linalg.cholesky, MindSpore's ops.cholesky): lower l with l @ l.T = a, reading a's lower
    triangle only (upper=True: l.T). Not positive definite: NaNs (JAX; NumPy raises). A complex a
    is Hermitian: l @ l^H = a, from the strict lower triangle and the real part of the diagonal
    (LAPACK's zpotrf, NumPy's); upper=True gives l^H."""
    a = _float_matrix(a, complex_ok=True)
    low = _dc.cholesky.bind(a)
    if upper and a.dtype.is_complex:
        from ..prims.lax.core import conj
        return _mT(conj(low))
    return _mT(low) if upper else low


def _trans_flag(trans):
    """SciPy's trans argument (0/1/2, 'N'/'T'/'C') as (transpose, conjugate)."""
    if trans in (0, "N", False):
        return False, False
    if trans in (1, "T", True):
        return True, False
    if trans in (2, "C"):  # the conjugate transpose (the transpose for real dtypes)
        return True, True
    raise ShapeError(f"trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}")


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False):
    """x with op(t) @ x = b, t the lower (lower=True) or upper triangle of a, op(t) = t.T for
    trans=1/'T', t^H (conjugate transpose) for trans=2/'C' (SciPy's, JAX's and MindSpore's
    scipy.linalg.solve_triangular): the other triangle of a is not read; unit_diagonal=True takes
    the diagonal as ones (not read either)."""
    a, b, vec = _with_rhs(a, b, "solve_triangular")
    tr, cj = _trans_flag(trans)
    if cj and a.dtype.is_complex:
        from ..prims.lax.core import conj
        a = conj(a)
    x = _dc.triangular_solve.bind(a, b, lower=bool(lower), trans=tr, unit_diagonal=bool(unit_diagonal))
    return reshape(x, tuple(x.shape[:-1])) if vec else x


def triangular_solve(a, b, left_side=False, lower=False, transpose_a=False, conjugate_a=False,
                     unit_diagonal=False):
    """JAX's lax.linalg.triangular_solve: left_side=True solves op(a) @ x = b, False (its default)
    x @ op(a) = b; op(a) is a, a.T if transpose_a, conj(a) if conjugate_a, a^H with both
    (conjugate_a changes nothing for real dtypes)."""
    a, b = _inexact_operands(a, b)
    if conjugate_a and a.dtype.is_complex:
        from ..prims.lax.core import conj
        a = conj(a)
    if left_side:
        return solve_triangular(a, b, 1 if transpose_a else 0, lower, unit_diagonal)
    # x op(t) = b  <=>  op(t)^T x^T = b^T
    if b.ndim < 2:
        raise ShapeError(f"triangular_solve: b must have at least 2 axes, got shape {b.shape}")
    if a.ndim >= 2 and b.shape[-1] != a.shape[-1]:  # (checked here: solve_triangular would name b^T)
        raise ShapeError(f"triangular_solve: with left_side=False b must be (..., k, n) with n = {a.shape[-1]} "
                         f"for a of shape {a.shape} (x @ op(a) = b), got shape {b.shape}")
    xt = solve_triangular(a, _mT(b), 0 if transpose_a else 1, lower, unit_diagonal)
    return _mT(xt)


def _uplo(a, UPLO, symmetrize_input):  # noqa: N803  (NumPy's keyword)
    """The matrix whose lower triangle the primitive reads: a (UPLO='L'), a^H ('U': the conjugate
    transpose, a^T for real a), or (a + a^H) / 2 with symmetrize_input (JAX's keyword)."""
    if UPLO not in ("L", "U"):
        raise ShapeError(f"UPLO must be 'L' or 'U', got {UPLO!r}")
    if symmetrize_input:
        return mul(add(a, _mH(a)), 0.5)
    return a if UPLO == "L" else _mH(a)


def _nan_unless_finite(x, packed, lower: bool = False):
    """`packed`, a decomposition's result for the matrices `x`, with NaN for every matrix of x
    holding an inf or a NaN where the primitive reads it (its lower triangle with `lower`), as
    the docs promise, LAPACK's no-convergence gives and JAX returns: the compiled Jacobi
    kernels let such an entry through only partly (svdvals of a matrix with one NaN was
    [1.21, nan, 1.0], eigvalsh of one with an inf [1.1, 1.1, inf])."""
    from ..prims.lax import core as c
    from ..prims.lax.shape import tril
    read = tril(x) if lower else x
    ok = c.all(c.isfinite(read), axis=(-2, -1), keepdims=True)
    return c.where(ok, packed, c.constant(float("nan"), packed.dtype))


def _split_rows(x, k):
    """(x[..., :k, :], x[..., k:, :]) of a packed primitive result."""
    from ..prims.decomp import rows
    return rows(x, 0, k), rows(x, k, x.shape[-2])


def eigh(a, UPLO="L", symmetrize_input=False):  # noqa: N803
    """(eigenvalues ascending (..., n), eigenvectors as columns (..., n, n)) of (a batch of)
    symmetric matrices (NumPy's linalg.eigh, reading the UPLO triangle; JAX's symmetrize_input).
    Each vector's sign is fixed: its first component of magnitude >= 0.5 / sqrt(n) is positive
    (NumPy leaves it to LAPACK). Derivatives need distinct eigenvalues (1 / (w_j - w_i)).
    A complex a is Hermitian (the UPLO triangle and the real part of the diagonal read, as LAPACK's
    zheevd): real eigenvalues, complex eigenvectors with a fixed phase (that first component is
    real and positive); JAX's derivatives, plus the phase's term in the vectors' (functions
    invariant under the phase, such as the eigenvalues and the projectors v v^H, have JAX's)."""
    a = _float_matrix(a, complex_ok=True)
    x = _uplo(a, UPLO, symmetrize_input)
    packed = _nan_unless_finite(x, _dc.eigh.bind(x), lower=True)
    n = a.shape[-1]
    v, w = _split_rows(packed, n)
    w = reshape(w, tuple(w.shape[:-2]) + (n,))
    if a.dtype.is_complex:
        from ..prims.lax.core import real
        w = real(w)
    return w, v


def eigvalsh(a, UPLO="L"):  # noqa: N803
    """The eigenvalues (ascending) of (a batch of) symmetric matrices (NumPy's linalg.eigvalsh)."""
    return eigh(a, UPLO)[0]


def qr(a, mode="reduced"):
    """NumPy's linalg.qr: (q, r) with a = q r, q (..., m, k) orthonormal columns, r (..., k, n)
    upper triangular, k = min(m, n), LAPACK's signs (r_jj = -sign(a_jj) |column|, Householder);
    mode='r' gives r alone; 'complete' gives q (..., m, m), its extra columns an orthonormal basis
    of the complement (arbitrary, as svd's full_matrices: constant to differentiation). A wide
    matrix (m < n) is the QR of its first m columns with r extended by q^H a[..., m:]. A complex a
    (complex64/complex128) gives a unitary q and an r with a real diagonal, LAPACK's zgeqrf signs
    (r_jj = -sign(Re a_jj) |column|), as NumPy's."""
    from ..prims.lax.shape import slice_prim
    from ..prims.lax.core import matmul
    a = as_tensor(a)
    if a.dtype.name not in ("float32", "float64", "complex64", "complex128"):
        raise DTypeError(f"a must be float32, float64, complex64 or complex128, got {a.dtype.name} {a.shape}")
    if a.ndim < 2:
        raise ShapeError(f"a must have at least 2 axes, got shape {a.shape}")
    m, n = a.shape[-2], a.shape[-1]
    if mode not in ("reduced", "r", "complete"):
        raise ShapeError(f"mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    if m >= n:
        q, r = _split_rows(_dc.qr.bind(a), m)
    else:
        lead = tuple(a.shape[:-2])
        nd = a.ndim
        left = slice_prim(a, (0,) * nd, lead + (m, m), (1,) * nd)
        right = slice_prim(a, (0,) * (nd - 1) + (m,), lead + (m, n), (1,) * nd)
        q, r1 = _split_rows(_dc.qr.bind(left), m)
        from ..prims.lax.shape import concat
        r = concat([r1, matmul(_mH(q), right)], -1)
    if mode == "complete" and m > n:  # q completed to (m, m), r padded with zero rows to (m, n)
        from ..prims.lax.shape import pad
        q = _complete_columns(q)
        r = pad(r, [(0, 0)] * (r.ndim - 2) + [(0, m - n), (0, 0)])
    return r if mode == "r" else (q, r)


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """NumPy's linalg.svd: (u, s, vh) with a = u diag(s) vh, s descending (..., k), k = min(m, n).
    One-sided Jacobi (compiled) / LAPACK (reference). Conventions (NumPy leaves them to LAPACK):
    each pair of singular vectors is signed so that the first component of vh's row reaching
    0.5 / sqrt(k) is positive, and u's column is zero where s is negligible (<= max(m, n) eps
    max(s)). full_matrices=True (NumPy's default) completes a rectangular matrix's u (or vh) with
    an orthonormal basis of the complement: arbitrary (LAPACK gives another), and constant to
    differentiation (JAX refuses that derivative). hermitian is accepted and changes nothing.
    Derivatives need distinct, non-zero singular values. A complex a gives a = u diag(s) vh with
    real s and unitary u, vh; each pair's phase is fixed as its sign is (vh's row's component real
    and positive, u's column turned with it), so derivatives of the vectors are JAX's plus that
    phase's term, and functions invariant under the phase (s, u_j vh_j, pinv, ...) have JAX's."""
    a = as_tensor(a)
    if a.dtype.name not in ("float32", "float64", "complex64", "complex128"):
        raise DTypeError(f"a must be float32, float64, complex64 or complex128, got {a.dtype.name} {a.shape}")
    if a.ndim < 2:
        raise ShapeError(f"a must have at least 2 axes, got shape {a.shape}")
    m, n = a.shape[-2], a.shape[-1]
    wide = m < n
    x = _mH(a) if wide else a
    u, s_, v = _dc.svd_parts(_nan_unless_finite(x, _dc.svd.bind(x)), x.shape[-2])
    if a.dtype.is_complex:
        from ..prims.lax.core import real
        s_ = real(s_)
    if not compute_uv:
        return s_
    if full_matrices and m != n:
        u = _complete_columns(u)
    if wide:  # a^H = u s v^H  =>  a = v s u^H
        return v, s_, _mH(u)
    return u, s_, _mH(v)


def _complete_columns(u):
    """u (..., m, k) with orthonormal columns, extended to an orthonormal (..., m, m): the
    eigenvectors of the projector I - u u^H for its eigenvalue 1 (eigenvalues 0 and 1, far apart).
    The extra columns are arbitrary (any orthonormal basis of the complement), so they are
    constants to differentiation (stop_gradient); JAX refuses that derivative altogether."""
    import numpy as np
    from ..prims.lax.core import constant, matmul, stop_gradient, sub
    from ..prims.lax.shape import concat
    m, k = u.shape[-2], u.shape[-1]
    uc = stop_gradient(u)
    proj = sub(broadcast_to(constant(np.eye(m, dtype=u.dtype.np)), tuple(u.shape[:-2]) + (m, m)), matmul(uc, _mH(uc)))
    _, vecs = eigh(proj)
    return concat([u, stop_gradient(_last_columns(vecs, m - k))], -1)


def _last_columns(x, c):
    """x[..., :, -c:] (a static slice)."""
    from ..prims.lax.shape import slice_prim
    nd = x.ndim
    shape = tuple(x.shape)
    return slice_prim(x, (0,) * (nd - 1) + (shape[-1] - c,), shape, (1,) * nd)


def svdvals(x):
    """The singular values of (a batch of) matrices, descending (NumPy 2's linalg.svdvals)."""
    return svd(x, compute_uv=False)


def _cutoff_inverse(s, rcond, m, n):
    """1 / s where s > rcond * max(s), else 0; and that mask (NumPy's pinv / lstsq rule)."""
    import numpy as np
    from ..prims.lax.core import div, greater, where
    from ..prims.lax.creation import ones_like, zeros_like
    from ..prims.lax.core import max as _max
    if rcond is None:
        rcond = max(m, n) * float(np.finfo(s.dtype.np).eps)
    big = greater(s, mul(_max(s, -1, keepdims=True), float(rcond))) if s.shape[-1] else greater(s, 0.0)
    return where(big, div(ones_like(s), where(big, s, ones_like(s))), zeros_like(s)), big


def _real_as(x, like):
    """The real tensor x in like's dtype (x + 0i for a complex like)."""
    if like.dtype.is_complex:
        from ..prims.lax.core import complex as _complex
        from ..prims.lax.creation import zeros_like
        return _complex(x, zeros_like(x))
    return x


def pinv(a, rcond=None, hermitian=False):
    """The Moore-Penrose pseudo-inverse by the svd (NumPy's linalg.pinv): singular values at or
    below rcond * max(s) are dropped (rcond default max(m, n) * eps, NumPy 2's rtol default).
    Its derivative is JAX's (Golub and Pereyra's formula in pinv itself, exact wherever the rank
    is locally constant), not the svd's: at a repeated singular value (the identity, any
    orthogonal matrix) the svd's derivative drops the rotation within the tied singular vectors,
    and pinv's derivative came out finite and wrong (jacrev(pinv)(eye(2)) gave -0.5 where the
    exact value is -1)."""
    a = as_tensor(a)
    if a.ndim < 2:
        raise ShapeError(f"a must have at least 2 axes, got shape {a.shape}")
    return _pinv(a, rcond)


def _pinv_svd(a, rcond):
    """pinv's value: v diag(1 / s) u^H over the singular values kept."""
    u, s_, vh = svd(a, full_matrices=False)
    return _pinv_of(u, s_, vh, rcond)


def _pinv_of(u, s_, vh, rcond):
    """v diag(1 / s) u^H over the singular values kept, from a's reduced svd."""
    from ..prims.lax.core import matmul
    from ..prims.lax.shape import expand_dims
    sinv, _ = _cutoff_inverse(s_, rcond, u.shape[-2], vh.shape[-1])
    return matmul(mul(_mH(vh), expand_dims(_real_as(sinv, u), -2)), _mH(u))


def _pinv_tangent(a, p, da):
    """d pinv(a) along da (Golub and Pereyra, as JAX's pinv jvp): -p da p + p p^H da^H (I - a p)
    + (I - p a) da^H p^H p, written without the identities."""
    from ..prims.lax.core import matmul, neg, sub
    dah = _mH(da)
    t1 = neg(matmul(matmul(p, da), p))
    t2 = matmul(matmul(p, _mH(p)), sub(dah, matmul(matmul(dah, a), p)))
    t3 = matmul(sub(dah, matmul(p, matmul(a, dah))), matmul(_mH(p), p))
    return add(add(t1, t2), t3)


def _pinv_jvp(rcond, primals, tangents):
    (a,), (da,) = primals, tangents
    p = _pinv(a, rcond)
    return p, _pinv_tangent(a, p, da)


def _lstsq_svd(a, b, u, s_, vh, rcond):
    """lstsq's x for a (..., m, n) and b (..., m, k), given a's reduced svd (computed once, by
    lstsq, which also returns s and the rank): v diag(1 / s) u^H b over the singular values kept.
    The svd's parts are arguments for their values only: x's derivative is pinv's (_lstsq_jvp)."""
    from ..prims.lax.core import matmul
    from ..prims.lax.shape import expand_dims
    sinv, _ = _cutoff_inverse(s_, rcond, a.shape[-2], a.shape[-1])
    return matmul(_mH(vh), mul(expand_dims(_real_as(sinv, u), -1), matmul(_mH(u), b)))


def _lstsq_jvp(rcond, primals, tangents):
    """x = pinv(a) b: dx = d pinv(a) b + pinv(a) db (pinv's exact derivative, not the svd's; the
    svd parts' own tangents are not used, and p is pinv's own, so that higher orders are exact)."""
    from ..prims.lax.core import matmul
    (a, b, u, s_, vh), (da, db) = primals, tangents[:2]
    p = _pinv(a, rcond)
    return _lstsq_x(a, b, u, s_, vh, rcond), add(matmul(_pinv_tangent(a, p, da), b), matmul(p, db))


def _custom(fun, rule):
    from ..control.custom import custom_jvp
    f = custom_jvp(fun, nondiff_argnums=(fun.__code__.co_argcount - 1,))  # rcond: static
    f.defjvp(rule)
    return f


_pinv = _custom(_pinv_svd, _pinv_jvp)
_lstsq_x = _custom(_lstsq_svd, _lstsq_jvp)


def lstsq(a, b, rcond=None):
    """NumPy's linalg.lstsq: (x, residuals, rank, s), x minimising |b - a x| with the smallest norm
    (by the svd, singular values at or below rcond * max(s) dropped; rcond default max(m, n) * eps).
    residuals: the squared residual norms (k,) when m > n, else empty (NumPy also empties them when
    rank < n, a value-dependent shape a graph cannot have: graphad gives the sums there too);
    rank: int64. a (..., m, n), b (..., m) or (..., m, k) with a's batch axes."""
    from ..prims.lax.core import astype, matmul, sub
    from ..prims.lax.core import sum as _sum
    from ..prims.lax.shape import expand_dims
    from ..prims.lax.creation import zeros
    a, b = _inexact_operands(a, b)
    if a.dtype.name not in ("float32", "float64", "complex64", "complex128"):
        raise DTypeError(f"a and b must be float32, float64, complex64 or complex128, got {a.dtype.name}")
    if a.ndim < 2:
        raise ShapeError(f"a must have at least 2 axes, got shape {a.shape}")
    m, n = a.shape[-2], a.shape[-1]
    vec = b.ndim == a.ndim - 1
    if vec:
        b = expand_dims(b, -1)
    if b.ndim != a.ndim or b.shape[-2] != m or tuple(b.shape[:-2]) != tuple(a.shape[:-2]):
        raise ShapeError(f"b must be (..., m) or (..., m, k) with a's batch axes and m = {m}: a {a.shape}, "
                         f"b {b.shape if not vec else b.shape[:-1]}")
    u, s_, vh = svd(a, full_matrices=False)
    _, big = _cutoff_inverse(s_, rcond, m, n)
    x = _lstsq_x(a, b, u, s_, vh, rcond)
    rank = _sum(astype(big, "int64"), -1)
    if m > n:  # |r|^2: real for complex a, as NumPy's
        r = sub(b, matmul(a, x))
        resid = _sum(_abs2(r), -2)
    else:
        resid = zeros(*(tuple(a.shape[:-2]) + (0,)), dtype=s_.dtype)
    if vec:
        x = reshape(x, tuple(x.shape[:-1]))
    return x, resid, rank, s_


def _abs2(x):
    """|x|^2 elementwise: x * x, or Re^2 + Im^2 of a complex x (real, as NumPy's (x.conj() * x).real)."""
    from ..prims.lax import core as c
    if x.dtype.is_complex:
        return c.add(c.square(c.real(x)), c.square(c.imag(x)))
    return c.mul(x, x)


def _vector_norm(x, ord_, axis, keepdims):
    """NumPy's vector norm of x over one axis."""
    from ..prims.lax import core as c
    ax = (axis,)
    if ord_ is None or ord_ == 2:
        return c.sqrt(c.sum(_abs2(x), ax, keepdims))
    ab = c.abs(x)
    if ord_ == float("inf"):
        return c.max(ab, ax, keepdims)
    if ord_ == float("-inf"):
        return c.min(ab, ax, keepdims)
    if ord_ == 0:
        return c.sum(c.astype(c.not_equal(x, 0.0), ab.dtype), ax, keepdims)  # real for complex x, as NumPy
    if ord_ == 1:
        return c.sum(ab, ax, keepdims)
    if isinstance(ord_, str):
        raise ShapeError(f"norm: ord {ord_!r} is a matrix norm; a vector norm takes a number")
    p = float(ord_)
    return c.pow(c.sum(c.pow(ab, p), ax, keepdims), 1.0 / p)


def _matrix_norm(x, ord_, axes, keepdims):
    """NumPy's matrix norm of x over axes (rows, columns)."""
    from ..prims.lax import core as c
    r, k = axes
    if ord_ in (None, "fro"):
        return c.sqrt(c.sum(_abs2(x), (r, k), keepdims))
    if (x.shape[r] == 0 or x.shape[k] == 0) and ord_ in (1, 2, float("inf"), "nuc"):
        # an empty matrix's norm is 0, as NumPy's and JAX's (its max over no column was refused);
        # the -1, -2 and -inf norms (a min over nothing) stay refused, as NumPy's
        from ..prims.lax.creation import zeros
        shape = tuple(1 if i in (r, k) else d for i, d in enumerate(x.shape)) if keepdims else \
            tuple(d for i, d in enumerate(x.shape) if i not in (r, k))
        return zeros(shape, dtype=c.real(x).dtype if x.dtype.is_complex else x.dtype)
    if ord_ in (1, -1, float("inf"), float("-inf")):
        inner, outer = (r, k) if ord_ in (1, -1) else (k, r)  # column sums (1) or row sums (inf)
        sums = c.sum(c.abs(x), inner, True)
        red = c.max if ord_ in (1, float("inf")) else c.min
        res = red(sums, outer, True)
    elif ord_ in ("nuc", 2, -2):
        # the two axes last, in order (r, k)
        rest = [i for i in range(x.ndim) if i not in (r, k)]
        y = transpose(x, tuple(rest) + (r, k))
        sv = svd(y, compute_uv=False)
        res = c.sum(sv, -1) if ord_ == "nuc" else (c.max(sv, -1) if ord_ == 2 else c.min(sv, -1))
        if keepdims:
            shape = list(x.shape)
            shape[r] = shape[k] = 1
            return reshape(res, tuple(shape))
        return res
    else:
        raise ShapeError(f"norm: ord {ord_!r} is not a matrix norm (None, 'fro', 'nuc', 1, -1, 2, -2, inf, -inf)")
    if keepdims:
        return res
    return reshape(res, tuple(s for i, s in enumerate(x.shape) if i not in (r, k)))


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002  (NumPy's keyword)
    """NumPy's linalg.norm: a vector norm over one axis (ord None/2, 1, inf, -inf, 0, any p), a
    matrix norm over two (None/'fro', 'nuc', 1, -1, 2, -2, inf, -inf; 'nuc' and +-2 by the svd),
    axis=None: the 2-norm of the flattened x when ord is None, else x's own (1-D or 2-D) norm.
    A complex x has a real norm: of its moduli |x|, or of its (real) singular values for 'nuc' and +-2."""
    import numpy as np
    from ..prims._util import norm_axis
    x = as_tensor(x)
    if not x.dtype.is_inexact:
        from ..prims.lax.core import astype
        x = astype(x, "float32")
    if axis is None:
        if ord is None:
            flat = reshape(x, (-1,))
            r = _vector_norm(flat, None, 0, False)
            return reshape(r, (1,) * x.ndim) if keepdims else r
        if x.ndim == 1:
            return _vector_norm(x, ord, 0, keepdims)
        if x.ndim == 2:
            return _matrix_norm(x, ord, (0, 1), keepdims)
        raise ShapeError(f"norm: ord={ord!r} without axis needs a 1-D or 2-D x, got shape {x.shape}")
    if isinstance(axis, (int, np.integer)):
        return _vector_norm(x, ord, norm_axis(axis, x.ndim), keepdims)
    axes = tuple(norm_axis(a, x.ndim) for a in axis)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims)
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ShapeError(f"norm: axis must be an int or two different axes, got {axis!r}")
    return _matrix_norm(x, ord, axes, keepdims)


def vector_norm(x, *, axis=None, keepdims=False, ord=2):  # noqa: A002
    """NumPy 2's linalg.vector_norm: the vector norm over `axis` (None: all of x, flattened); the
    options are keyword-only, as NumPy's (`vector_norm(x, 2)` is a TypeError, never axis 2)."""
    x = as_tensor(x)
    if axis is None:
        r = norm(reshape(x, (-1,)), ord, 0)
        return reshape(r, (1,) * x.ndim) if keepdims else r
    if isinstance(axis, tuple) and len(axis) > 1:
        from ..prims._util import norm_axes
        from ..prims.lax.shape import transpose as _tr
        axes = norm_axes(axis, x.ndim)
        rest = [i for i in range(x.ndim) if i not in axes]
        y = reshape(_tr(x, tuple(rest) + axes), tuple(x.shape[i] for i in rest) + (-1,))
        r = norm(y, ord, -1)
        if keepdims:
            return reshape(r, tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
        return r
    return norm(x, ord, axis, keepdims)


def matrix_norm(x, *, keepdims=False, ord="fro"):  # noqa: A002
    """NumPy 2's linalg.matrix_norm: the matrix norm over the last two axes; the options are
    keyword-only, as NumPy's (`matrix_norm(a, 1)` was keepdims=1: the Frobenius norm)."""
    x = as_tensor(x)
    return norm(x, ord, (-2, -1), keepdims)


import sys as _sys  # noqa: E402

# argument errors name the op, its operands and the user's line, as every graphad.ops function's
_err.wrap_module(_sys.modules[__name__], globals())
# MindSpore's names, bound after wrapping (one wrapped function, several names)
matrix_inverse = inverse = inv
matrix_determinant = det
log_matrix_determinant = slogdet
