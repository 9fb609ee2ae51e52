"""Sorting primitive: argsort (stable, ascending, NaNs last as NumPy).

sort, top_k, median and quantile are compositions (graphad/prims/lax/sort.py): the values are
gathered with the permutation argsort returns, so their derivatives flow through the gather
(take / index_add) and argsort itself, an integer result, needs none.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError, ShapeError
from ..ir.core import TensorType
from ._util import moveaxis_to_front
from .registry import Primitive, register


def _argsort_shape(x: TensorType, axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis!r} is not an axis of a tensor of rank {x.ndim}")
    if x.dtype.is_complex:
        raise DTypeError(f"{x.dtype.name} operand: complex numbers are not ordered (sort ops.real or ops.abs of them)")
    return TensorType(x.shape, dt.int64)


def _argsort_impl(a, axis):
    if a.dtype.kind not in "biuf":  # bfloat16: its order is float32's
        a = a.astype(np.float32)
    return np.argsort(a, axis=axis, kind="stable").astype(np.int64)


def _argsort_batch(args, dims, axis):
    return [argsort.bind(moveaxis_to_front(args[0], dims[0]), axis=axis + 1)], [0]


argsort = register(Primitive(
    "argsort", shape_rule=_argsort_shape, impl=_argsort_impl, batch=_argsort_batch, nondiff="integer output",
    formula="the stable ascending permutation along axis (NaNs last, ties by index)"))
