"""Creation functions (zeros, ones, full, eye, arange, *_like) and eager random tensors.

Inside a traced function creation functions become nodes (an `eye` stays recognisable to the
simplifier); eagerly they return Tensors. Random tensors are always concrete: drawn on the host
from graphad's global generator (`set_seed`), and lifted into graphs like any captured tensor.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import numpy as np

from ... import dtypes as dt
from .. import creation as _cr
from ...tensor import Tensor
from ..trace import Tracer
from ...errors import IntegerOverflowError
from .core import _check_int_fits
from .._util import as_int, as_ints


def _shape(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return as_ints(shape)


def full(shape, fill_value, dtype=None):
    """A tensor of `shape` filled with `fill_value`: a number, or a tensor broadcast to the shape
    (a traced one too, as JAX's full takes it: `full_like(x, n)` of a jit's number n)."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if isinstance(fill_value, (Tracer, Tensor)):  # (a concrete one as a traced one: vmap's slices)
        from .core import _cast_operand
        from .shape import broadcast_to
        shape = as_ints(shape)
        return broadcast_to(_cast_operand(fill_value, dt.as_dtype(dtype) if dtype is not None else fill_value.dtype),
                            shape)
    d = dt.as_dtype(dtype) if dtype is not None else dt.scalar_dtype(fill_value)
    shape = as_ints(shape)
    if d.is_complex:
        v = complex(fill_value)
        if v.imag != 0 or not shape:  # a fill attribute is a real number: the rest is a constant
            return _cr.constant.bind(value=np.full(shape, v, d.np), dtype=d.name)
        return _cr.full.bind(shape=shape, value=v.real, dtype=d.name)
    if not d.is_float and isinstance(fill_value, (float, np.floating)) and not np.isfinite(fill_value):
        raise IntegerOverflowError(f"fill value {fill_value} cannot be stored in {d.name}")
    if not d.is_float:
        _check_int_fits(fill_value, d)  # (the float itself: int(1e300) printed 300 digits, and a value in
        # (INT_MIN - 1, INT_MIN) passed where Tensor() and constant refuse it)
    value = float(fill_value) if d.is_float else int(fill_value)
    if d.name == "bfloat16":  # rounded once here (ml_dtypes and TVM round float64 -> float32 -> bfloat16)
        from .._util import round_from_f64
        value = float(round_from_f64(np.float64(value), d.np))
    _check_int_fits(value, d)
    return _cr.full.bind(shape=shape, value=value, dtype=d.name)


def _shape_and_dtype(shape: tuple, dtype):
    """`zeros(2, 3)` (torch), `zeros((2, 3), float64)` (NumPy, MindSpore: the dtype second and
    positional) and `zeros((2, 3), dtype=float64)` alike."""
    if len(shape) >= 2 and not isinstance(shape[-1], (int, np.integer)):
        shape, dtype = shape[:-1], shape[-1]
    return _shape(shape), dtype


def zeros(*shape, dtype=dt.float32):
    shape, dtype = _shape_and_dtype(shape, dtype)
    return full(shape, 0, dtype)


def ones(*shape, dtype=dt.float32):
    shape, dtype = _shape_and_dtype(shape, dtype)
    return full(shape, 1, dtype)


def zeros_like(x, dtype=None):
    return full(tuple(x.shape), 0, dtype or x.dtype)


def ones_like(x, dtype=None):
    return full(tuple(x.shape), 1, dtype or x.dtype)


def full_like(x, fill_value, dtype=None):
    return full(tuple(x.shape), fill_value, dtype or x.dtype)


def eye(n, m=None, k=0, dtype=dt.float32):
    """Identity-like matrix with ones on diagonal k."""
    return _cr.eye.bind(n=as_int(n, "n"), m=as_int(n if m is None else m, "m"), k=as_int(k, "k"),
                        dtype=dt.as_dtype(dtype).name)


def basis_eye(n, dtype=dt.float32):
    """The n x n identity a Jacobian transformation seeds a derivative graph with: marked
    `basis`, so that its zeros are symbolic (graphad.prims.creation.eye)."""
    return _cr.eye.bind(n=int(n), m=int(n), k=0, dtype=dt.as_dtype(dtype).name, basis=True)


def basis_rows(n, start, size, dtype=dt.float32):
    """Rows start .. start + size of `basis_eye(n)`: the chunk of a Jacobian's basis that a
    chunked jacrev/jacfwd feeds one chunk, marked `basis` as the whole one is (its zeros stay
    symbolic: an unmarked eye multiplied as written, inf * 0 giving NaN, and a dense layer's
    chunk became a matmul with it)."""
    return _cr.eye.bind(n=int(size), m=int(n), k=int(start), dtype=dt.as_dtype(dtype).name, basis=True)


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values in [start, stop) (NumPy semantics)."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = dt.float32 if any(isinstance(v, float) for v in (start, stop, step)) else dt.int64
    d = dt.as_dtype(dtype)
    return _cr.arange.bind(start=start, stop=stop, step=step, dtype=d.name)


# ------------------------------------------------------------------ random (eager only)

_rng = None  # made on first use (seed 0): numpy.random costs every `import graphad` about 10 ms


def _generator():
    global _rng
    if _rng is None:
        _rng = np.random.default_rng(0)
    return _rng


def set_seed(seed: int) -> None:
    """Seed graphad's global random generator (NumPy PCG64)."""
    global _rng
    _rng = np.random.default_rng(as_int(seed, "seed"))


def randn(*shape, dtype=dt.float32) -> Tensor:
    """Standard-normal samples as a concrete Tensor."""
    return Tensor(_generator().standard_normal(_shape(shape)), dtype)


def rand(*shape, dtype=dt.float32) -> Tensor:
    """Uniform [0, 1) samples as a concrete Tensor."""
    return Tensor(_generator().random(_shape(shape)), dtype)


def randint(low, high, shape, dtype=dt.int64) -> Tensor:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    return Tensor(_generator().integers(low, high, size=as_ints(shape)), dtype)
