"""Neural-network functions: softmax, log_softmax, one_hot and losses' building blocks.

Composites of primitives; softmax subtracts a stop_gradient max for stability (the derivative is
unchanged because softmax is shift invariant). conv2d and the pools live in ops.conv.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

from ... import dtypes as dt
from .._util import norm_axis
from .core import _float_operand, astype, equal, exp, logsumexp, max, stop_gradient, sub, sum, div
from .creation import arange
from .shape import expand_dims


def softmax(x, axis=-1):
    x = _float_operand(x)
    axis = norm_axis(axis, x.ndim)
    e = exp(sub(x, stop_gradient(max(x, axis, True))))
    return div(e, sum(e, axis, True))


def log_softmax(x, axis=-1):
    x = _float_operand(x)
    axis = norm_axis(axis, x.ndim)
    return sub(x, logsumexp(x, axis, True))


def one_hot(indices, depth: int, dtype=dt.float32):
    """One-hot encoding along a new last axis (indices outside [0, depth) give all zeros)."""
    idx = expand_dims(indices, -1)
    return astype(equal(idx, arange(depth, dtype=idx.dtype)), dtype)
