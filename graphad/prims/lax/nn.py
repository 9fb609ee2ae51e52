"""Neural-network functions: softmax, log_softmax, one_hot, clip_by_global_norm and losses' building blocks.

Composites of primitives; softmax subtracts a stop_gradient max for stability (the derivative is
unchanged because softmax is shift invariant). conv2d and the pools live in ops.conv.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import numpy as np

from ... import dtypes as dt
from .._util import norm_axis
from .core import (_float_operand, _operands, abs, add, astype, equal, exp, imag, less, log, max, maximum, mul, real,
                   sqrt, square, stop_gradient, sub, sum, div, where)
from .creation import arange
from .shape import expand_dims


def softmax(x, axis=-1):
    """exp(x - m) / sum(exp(x - m)) along `axis`, m the stop_gradient max; an empty axis gives an
    empty result (as log_softmax, JAX's and torch's; the max of nothing raised)."""
    x = _float_operand(x)
    axis = norm_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        return x
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


def clip_by_global_norm(x, clip_norm=1.0, use_norm=None):
    """Rescales the tensors `x` (a tuple or list, e.g. a model's gradients) together so that their
    global norm sqrt(sum of all their squared elements) is at most `clip_norm` (MindSpore's
    ops.clip_by_global_norm, TensorFlow's tf.clip_by_global_norm): each tensor is multiplied by
    clip_norm / max(global_norm, clip_norm), so nothing changes when the norm is below clip_norm
    and the directions are kept. Returns a tuple (a Tensor for a single Tensor x).

    `clip_norm`: a float > 0 or a scalar tensor. `use_norm`: the global norm, when already
    computed (TensorFlow's argument; MindSpore reserves it and accepts only None); None computes
    it, in the promoted floating type of the tensors (a complex element counts |z|^2). A global
    norm of inf gives zeros, NaN gives NaN, as MindSpore's and TensorFlow's. Differentiable, and
    usable in a compiled train step (docs/training.md "Gradient clipping")."""
    from ...errors import GraphadError
    single = not isinstance(x, (tuple, list))
    xs = [x] if single else list(x)
    if not xs:
        raise GraphadError("clip_by_global_norm: x is an empty sequence (pass the tensors to clip)")
    if isinstance(clip_norm, (int, float, np.integer, np.floating)) and not isinstance(clip_norm, (bool, np.bool_)):
        if not (np.isfinite(clip_norm) and clip_norm > 0):
            raise GraphadError(f"clip_by_global_norm: clip_norm must be a finite float > 0, got {clip_norm!r}")
        clip_norm = float(clip_norm)
    elif isinstance(clip_norm, (bool, np.bool_, str)) or not hasattr(clip_norm, "dtype"):
        raise GraphadError(f"clip_by_global_norm: clip_norm must be a float > 0 or a scalar tensor, got {clip_norm!r}")
    xs = [_float_operand(t) for t in xs]
    if use_norm is None:
        total = None
        for t in xs:
            s = add(sum(square(real(t))), sum(square(imag(t)))) if t.dtype.is_complex else sum(square(t))
            total = s if total is None else add(total, s)
        use_norm = sqrt(total)
    (gnorm,) = _operands(use_norm)
    if gnorm.ndim != 0:
        raise GraphadError(f"clip_by_global_norm: use_norm must be a scalar, got shape {tuple(gnorm.shape)}")
    scale = div(clip_norm, maximum(gnorm, clip_norm))
    out = tuple(mul(t, astype(scale, dt.real_dtype(t.dtype))) for t in xs)
    return out[0] if single else out
