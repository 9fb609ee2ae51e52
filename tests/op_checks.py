"""Checks shared by the op tests of issue 17 (tests/test_ops_reductions.py, test_ops_indexing.py,
test_ops_sort.py): derivatives against float64 central finite differences (reverse mode through
grad, forward mode through jvp), vmap against a Python loop over examples.

`fn` maps Tensors to one Tensor (or a tuple, whose float parts are all checked); the oracle of
the derivative is the function itself evaluated eagerly in float64 at x +- eps e_i."""
from __future__ import annotations

import numpy as np

import graphad as gd
from graphad import ops
from graphad.tensor import Tensor


def _value(fn, xs):
    out = fn(*[Tensor(x) for x in xs])
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [np.asarray(o.asnumpy(), np.float64) for o in outs if o.dtype.is_float]


def check_derivatives(fn, *xs, argnum=0, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """grad of sum(w * fn(x)) and jvp of fn along a random tangent against central differences."""
    xs = [np.asarray(x, np.float64) if np.asarray(x).dtype.kind == "f" else np.asarray(x) for x in xs]
    rng = np.random.default_rng(seed)
    outs = _value(fn, xs)
    ws = [rng.normal(size=o.shape) for o in outs]

    def scalar(*ts):
        out = fn(*ts)
        out = out if isinstance(out, (tuple, list)) else (out,)
        floats = [o for o in out if o.dtype.is_float]
        total = ops.sum(ops.mul(floats[0], Tensor(ws[0])))
        for o, w in zip(floats[1:], ws[1:]):
            total = ops.add(total, ops.sum(ops.mul(o, Tensor(w))))
        return total

    x = xs[argnum]
    fd = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        hi, lo = [a.copy() for a in xs], [a.copy() for a in xs]
        hi[argnum][i] += eps
        lo[argnum][i] -= eps
        fd[i] = sum(float(np.sum(w * (a - b))) for w, a, b in zip(ws, _value(fn, hi), _value(fn, lo))) / (2 * eps)
    g = gd.grad(scalar, argnum)(*[Tensor(a) for a in xs]).asnumpy()
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=atol, err_msg="reverse mode vs finite differences")

    t = rng.normal(size=x.shape)
    hi, lo = [a.copy() for a in xs], [a.copy() for a in xs]
    hi[argnum] = hi[argnum] + eps * t
    lo[argnum] = lo[argnum] - eps * t
    fd_dir = [(a - b) / (2 * eps) for a, b in zip(_value(fn, hi), _value(fn, lo))]

    def only(xa):
        args = [Tensor(a) for a in xs]
        args[argnum] = xa
        out = fn(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o for o in out if o.dtype.is_float)  # integer outputs (indices) have no tangent
    _, tan = gd.jvp(only, Tensor(x), Tensor(t))
    tans = tan if isinstance(tan, (tuple, list)) else (tan,)
    tans = [np.asarray(v.asnumpy()) for v in tans if v.dtype.is_float]
    for got, want in zip(tans, fd_dir):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg="forward mode vs finite differences")


def check_vmap(fn, *xs, in_axes=0):
    """gd.vmap(fn) over axis 0 of the batched arguments equals the loop over examples."""
    axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(xs)
    n = next(np.shape(x)[0] for x, a in zip(xs, axes) if a is not None)
    got = gd.vmap(fn, in_axes=tuple(axes))(*[Tensor(x) for x in xs])
    gots = got if isinstance(got, (tuple, list)) else (got,)
    loops = []
    for b in range(n):
        r = fn(*[Tensor(x[b] if a is not None else x) for x, a in zip(xs, axes)])
        loops.append(r if isinstance(r, (tuple, list)) else (r,))
    for k, g in enumerate(gots):
        want = np.stack([np.asarray(r[k].asnumpy()) for r in loops])
        got_k = np.asarray(g.asnumpy())
        assert got_k.dtype == want.dtype and got_k.shape == want.shape, f"vmap output {k}"
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got_k, want, rtol=1e-12, atol=1e-15, err_msg=f"vmap output {k}")
        else:
            np.testing.assert_array_equal(got_k, want, err_msg=f"vmap output {k}")
