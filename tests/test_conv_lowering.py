"""conv2d compiled through TVM, both lowerings (lowering/relax_ops.py): TVM's direct convolution and
im2col + matmul (narrow outputs with enough terms per sum), against the naive loop oracle and, for
the two gradients (whose convolutions take either lowering), against the NumPy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.lowering.relax_ops import IM2COL_MAX_WIDTH, IM2COL_MIN_TERMS
from prim_cases import conv2d_ref

pytestmark = pytest.mark.tvm

# (x shape, w shape, stride, padding (top, bottom, left, right), dilation, groups)
CASES = [
    ((8, 16, 4, 4), (32, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # im2col, lanes along N*Ho*Wo
    ((2, 8, 6, 5), (24, 8, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 1),     # im2col, strides, dilation, uneven pad
    ((1, 64, 5, 5), (40, 64, 4, 4), (1, 1), (0, 0, 0, 0), (1, 1), 1),   # im2col transposed: N*Ho*Wo < Co
    ((3, 4, 9, 9), (6, 4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # direct: 36 terms but ...
    ((2, 2, 20, 20), (3, 2, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),    # direct: 18-wide rows
    ((2, 8, 5, 5), (8, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),      # direct: groups
    ((4, 1, 6, 6), (5, 1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # direct: 9 terms per sum
]


def _uses_im2col(xs, ws, stride, padding, dilation, groups):
    n, _, h, w = xs
    co, ci, kh, kw = ws
    wo = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return groups == 1 and wo < IM2COL_MAX_WIDTH and ci * kh * kw >= IM2COL_MIN_TERMS


def test_the_cases_cover_both_lowerings():
    kinds = [_uses_im2col(*c) for c in CASES]
    assert any(kinds) and not all(kinds)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_compiled_conv2d_and_its_gradients(case, dtype):
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)

    def f(x, w):
        return ops.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)

    def loss(x, w):
        y = f(x, w)
        return ops.sum(ops.tanh(y) * y)

    gd.set_backend("tvm")
    try:
        y = gd.jit(f)(gd.Tensor(x), gd.Tensor(w)).asnumpy()
        gx, gw = (t.asnumpy() for t in gd.grad(loss, grad_position=(0, 1))(gd.Tensor(x), gd.Tensor(w)))
    finally:
        gd.set_backend("numpy")
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), stride, padding, dilation, groups)
    rx, rw = (t.asnumpy() for t in gd.grad(loss, grad_position=(0, 1))(gd.Tensor(x), gd.Tensor(w)))
    # float32: sums of up to 1024 terms in another order, so a few ulps of the largest entry
    eps = 1e-4 if dtype == "float32" else 1e-12
    for got, want in ((y, ref), (gx, rx), (gw, rw)):
        np.testing.assert_allclose(got, want, rtol=eps, atol=eps * float(np.abs(want).max()))


def test_padding_reads_as_zero_times_the_weight():
    """As TVM's padded copy and the reference: a padded position contributes 0 * w (NaN for an
    infinite weight), in both lowerings."""
    x = np.ones((2, 16, 4, 4), np.float32)
    w = np.ones((4, 16, 3, 3), np.float32)
    w[0, 0, 0, 0] = np.inf
    gd.set_backend("tvm")
    try:
        y = gd.jit(lambda x, w: ops.conv2d(x, w, padding=1))(gd.Tensor(x), gd.Tensor(w)).asnumpy()
    finally:
        gd.set_backend("numpy")
    ref = gd.jit(lambda x, w: ops.conv2d(x, w, padding=1))(gd.Tensor(x), gd.Tensor(w)).asnumpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[:, 0, 0, :]).all() and np.isinf(y[:, 0, 1:, 1:]).all()
