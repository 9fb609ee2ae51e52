"""Neural-network functions: softmax, log_softmax, one_hot and losses' building blocks.

Composites of primitives; softmax subtracts a stop_gradient max for stability (the derivative is
unchanged because softmax is shift invariant). conv2d and the pools live in ops.conv.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import numpy as np

from ... import dtypes as dt
from .._util import norm_axis
from .core import _float_operand, abs, astype, equal, exp, less, log, max, stop_gradient, sub, sum, div, where
from .creation import arange
from .shape import expand_dims


def softmax(x, axis=-1):
    x = _float_operand(x)
    axis = norm_axis(axis, x.ndim)
    e = exp(sub(x, stop_gradient(max(x, axis, True))))
    return div(e, sum(e, axis, True))


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed as (x - m) - log(sum(exp(x - m))) with m the
    stop_gradient max (as JAX's): x - logsumexp(x) would first round logsumexp's large result
    (m + log(sum)) to m's precision, so [0, 1e4, 1e4] in float32 lost 3 digits (-0.69336 for
    -0.693147). A non-finite max shifts by 0, as in logsumexp: +inf gives NaN there, all -inf gives
    NaN, as JAX's log_softmax."""
    x = _float_operand(x)
    axis = norm_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        return x
    m = max(x, axis, True)
    m = stop_gradient(where(less(abs(m), np.inf), m, 0.0))
    shifted = sub(x, m)
    return sub(shifted, log(sum(exp(shifted), axis, True)))


def one_hot(indices, depth: int, dtype=dt.float32):
    """One-hot encoding along a new last axis (indices outside [0, depth) give all zeros)."""
    idx = expand_dims(indices, -1)
    return astype(equal(idx, arange(depth, dtype=idx.dtype)), dtype)
