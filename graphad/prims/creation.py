"""Creation primitives: constant, full, arange, eye. They have no tensor inputs.

No input means nothing to differentiate (their jvp/vjp return nothing) and nothing to batch:
vmap leaves their results unbatched. `constant` carries its data as the `value` attribute
(a NumPy array); Python scalars in user code become 0-d constants.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import ShapeError
from ..ir.core import TensorType
from .registry import Primitive, register


def _no_inputs_jvp(primals, tangents, outs, **attrs):
    return [None]


def _no_inputs_vjp(cts, primals, outs, **attrs):
    return []


def _unbatched(prim_ref):
    def batch(args, dims, **attrs):  # never batched: no inputs carry a batch axis
        return [prim_ref[0].bind(**attrs)], [None]
    return batch


def _shape_attr(shape) -> tuple:
    shape = tuple(shape)
    for s in shape:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ShapeError(f"shape {shape} must be non-negative ints")
    return tuple(int(s) for s in shape)


def _creation(name, shape_rule, impl, formula):
    ref: list = []
    p = register(Primitive(name, shape_rule=shape_rule, impl=impl, jvp=_no_inputs_jvp, vjp=_no_inputs_vjp,
                           batch=_unbatched(ref), traits=("creation",), formula=formula))
    ref.append(p)
    return p


def _constant_shape(value, dtype):
    return TensorType(np.shape(value), dt.as_dtype(dtype))


constant = _creation("constant", _constant_shape, lambda value, dtype: np.asarray(value, dt.as_dtype(dtype).np).copy(),
                     "y = value")


def _full_shape(shape, value, dtype):
    # the fill value must be a number: a string (`value="abc"` in hand-written IR) would pass here
    # and fail only when NumPy or TVM converts it
    if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        raise ShapeError(f"the fill value {value!r} is not a number")
    return TensorType(_shape_attr(shape), dt.as_dtype(dtype))


full = _creation("full", _full_shape, lambda shape, value, dtype: np.full(shape, value, dt.as_dtype(dtype).np),
                 "y = value broadcast to shape")


def _arange_len(start, stop, step) -> int:
    if step == 0:
        raise ShapeError("arange step must not be 0")
    n = int(np.ceil((stop - start) / step))
    return max(n, 0)


def _arange_shape(start, stop, step, dtype):
    return TensorType((_arange_len(start, stop, step),), dt.as_dtype(dtype))


arange = _creation("arange", _arange_shape,
                   lambda start, stop, step, dtype: np.arange(start, stop, step).astype(dt.as_dtype(dtype).np)[
                       :_arange_len(start, stop, step)],
                   "y[i] = start + i step")


def _eye_shape(n, m, k, dtype, basis=False):
    if n < 0 or m < 0:
        raise ShapeError(f"eye sizes must be non-negative, got {n}x{m}")
    return TensorType((n, m), dt.as_dtype(dtype))


# `basis=True` marks the identity that a Jacobian transformation feeds through a derivative graph
# (absent on a user's eye). Its zeros are symbolic, as autodiff's zero cotangents are: the
# structure rewrite may drop them, so a Jacobian's off-diagonal stays 0 where a factor is inf.
# A user's eye is a value like any other: x @ eye(n) keeps IEEE's inf * 0 = NaN.
eye = _creation("eye", _eye_shape, lambda n, m, k, dtype, basis=False: np.eye(n, m, k, dtype=dt.as_dtype(dtype).np),
                "y[i, j] = [j - i == k]")
