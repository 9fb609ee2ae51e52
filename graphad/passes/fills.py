"""Fills: values whose elements are all equal, as simplify and the structure rewrite see them.

A *fill* is a `full` node or a `constant` whose elements are all bitwise equal (so a constant of
-0.0 and +0.0 is not a fill, and equal NaNs are). `fill_value` is shared by simplify's rules and
by the basis-structure rewrite (passes/structure.py); it lives here so that neither of those two
modules imports the other.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphadError
from ..ir.core import Value
from ..prims import creation as _cr

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}

# What a NumPy reference kernel raises when it refuses its *data* (an index out of range, an
# integer to a negative power, a value that overflows `.item()`): folding such a node is skipped
# and the error is left for the run to report. Anything else is a bug and propagates.
KERNEL_DATA_ERRORS = (GraphadError, IndexError, ValueError, ZeroDivisionError, OverflowError)


def uniform(arr: np.ndarray) -> bool:
    """All elements bitwise equal (so -0.0 differs from 0.0, and equal NaNs are uniform)."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.size == 0:
        return False
    u = _UINT.get(flat.dtype.itemsize)
    if u is None:
        return bool((flat == flat[0]).all())
    bits = flat.view(u)
    if bits[-1] != bits[0]:  # cheap rejection before the full comparison
        return False
    return bool((bits == bits[0]).all())


def fill_value(v: Value):
    """The scalar every element of `v` equals when v is a fill (full, uniform constant), else None."""
    n = v.node
    if n is None:
        return None
    if n.prim is _cr.full:
        return np.asarray(n.attrs["value"]).astype(v.type.dtype.np).item()
    if n.prim is _cr.constant:
        arr = np.asarray(n.attrs["value"])
        if uniform(arr):
            return arr.reshape(-1)[0].item()
    return None
