"""Long float sums compiled in stages (lowering/relax_ops.py `_staged_sum`): a kernel's reducer adds
its terms in order into one accumulator per output (per vector lane), so 2^23 values of 0.1 summed
over axis 0 in float32 came out 5.7% high. Results here are checked against float64 sums of the same
float32 values (an oracle that is not the code under test), for the shapes that take each path of
the staging: one long axis (a block size that divides it, and one that does not: the padding), a
long axis before short reduced axes, several reduced axes, keepdims, fused producers, float16,
gradients and vmap."""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.lowering import relax_ops
from graphad.runtime.executable import compile_graph

pytestmark = pytest.mark.tvm

# (shape, axis): every path of _staged_sum; sums of more than SUM_STAGED_ABOVE (16384) terms, in
# blocks of SUM_TERMS_MAX (1024)
CASES = [
    ((1 << 20, 3), 0),  # one long axis, contiguous outputs (case A's lanes along the sum)
    ((3, 1 << 20), 1),  # one long contiguous axis
    ((1 << 20,), None),  # everything
    ((100003, 2), 0),  # a prime length: the last block padded with -0.0
    ((2, 5, 9001), (0, 2)),  # several reduced axes, the last one long and not a multiple
    ((600, 7, 30), (0, 2)),  # short axes whose product is long: the inner ones are one stage
    ((64, 3, 1025), None),  # 1025 after 3 * 64 outer terms: two blocks of 513 (even, one padded)
]


def _compiled(fn, *args):
    return np.asarray(gd.jit(fn, backend="tvm")(*[gd.Tensor(a) for a in args]))


def _rel_err(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1e-30)))


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", CASES)
def test_long_float32_sums_are_accurate(shape, axis, keepdims):
    """Within 1e-6 of the float64 sum for random terms in [0.5, 1.5) and 3e-5 for terms all 0.1
    (whose rounding errors do not cancel). One reduction per output was 0.9e-6 to 2.3e-5 and 1.4e-4
    to 9.9e-3 off for these cases (2^20 values of 0.1 over axis 0: 1% high); in stages of
    SUM_TERMS_MAX = 1024 terms, at most 4.9e-7 and 1.4e-5 (AMD EPYC, 16 float32 lanes)."""
    rng = np.random.default_rng(len(shape))
    x = (rng.random(shape) + 0.5).astype(np.float32)
    got = _compiled(lambda t: ops.sum(t, axis, keepdims), x)
    want = np.sum(x.astype(np.float64), axis=axis, keepdims=keepdims)
    assert got.shape == want.shape and got.dtype == np.float32
    assert _rel_err(got, want) < 1e-6
    tenth = np.full(shape, 0.1, np.float32)
    got = _compiled(lambda t: ops.sum(t, axis, keepdims), tenth)
    assert _rel_err(got, np.sum(tenth.astype(np.float64), axis=axis, keepdims=keepdims)) < 3e-5


@pytest.mark.parametrize("shape,axis", CASES)
def test_blocks_cover_every_term_once(shape, axis):
    """Small integers sum exactly in float32 in any order: the staged sum of each case equals the
    integer sum exactly (a block index that skipped, repeated or read past a term would not), with
    the last block a kernel of its own (an input summed) and overlapping the one before it (an
    elementwise producer fused into the stage)."""
    rng = np.random.default_rng(7)
    ints = rng.integers(-8, 9, size=shape)
    got = _compiled(lambda t: ops.sum(t, axis), ints.astype(np.float32))  # (a tail kernel)
    np.testing.assert_array_equal(got, np.sum(ints, axis=axis).astype(np.float32))
    got = _compiled(lambda t: ops.sum(t + t, axis), ints.astype(np.float32))  # (t + t fused: overlap)
    np.testing.assert_array_equal(got, np.sum(2 * ints, axis=axis).astype(np.float32))


def test_mean_var_and_fused_producers_are_staged_too():
    """mean, var and a sum of squares (whose multiply fuses into the first stage) over 2^20 rows,
    against float64 (the interpreter's NumPy strided sum adds in the old order)."""
    x = np.full((1 << 20, 4), 0.1, np.float32) + np.linspace(0, 1, 4, dtype=np.float32)
    xd = x.astype(np.float64)
    assert _rel_err(_compiled(lambda t: ops.mean(t, 0), x), xd.mean(0)) < 3e-5
    assert _rel_err(_compiled(lambda t: ops.sum(t * t, 0), x), (xd * xd).sum(0)) < 3e-5
    y = (np.random.default_rng(5).random((1 << 20, 4)) + 0.5).astype(np.float32)
    assert _rel_err(_compiled(lambda t: ops.var(t, 0), y), y.astype(np.float64).var(0)) < 1e-5


def test_special_values_survive_the_stages():
    """NaN anywhere, +inf and -inf in different blocks (NaN), an infinity alone, a last padded block
    of -0.0 terms: as the interpreter and one reduction give them."""
    n = relax_ops.SUM_STAGED_ABOVE + 5  # 17 blocks of 965 terms, the last padded with 16
    cases = {}
    x = np.ones(n, np.float32); x[n - 2] = np.nan
    cases["nan in the padded block"] = (x, np.nan)
    x = np.ones(n, np.float32); x[3] = np.inf; x[n - 1] = -np.inf
    cases["inf - inf"] = (x, np.nan)
    x = np.ones(n, np.float32); x[n // 2] = np.inf
    cases["inf"] = (x, np.inf)
    x = np.full(n, -0.0, np.float32); x[0] = 2.5
    cases["one term and negative zeros"] = (x, 2.5)
    for name, (x, want) in cases.items():
        got = float(_compiled(lambda t: ops.sum(t), x))
        assert (np.isnan(got) and np.isnan(want)) or got == want, name


def test_float16_long_sums_round_once():
    """float16 sums run in float32 (lowering/bf16.py) and are staged there: within one float16
    ulp of the float64 sum rounded to float16."""
    rng = np.random.default_rng(3)
    x = (rng.random((40000, 2)) * 0.01).astype(np.float16)
    got = _compiled(lambda t: ops.sum(t, 0), x)
    want = x.astype(np.float64).sum(0)
    assert got.dtype == np.float16
    assert np.all(np.abs(got.astype(np.float64) - want) <= np.spacing(want.astype(np.float16)).astype(np.float64))


def test_gradient_and_vmap_of_a_long_sum():
    """The gradient of a staged sum is the broadcast of the cotangent (sum's VJP, unchanged), and
    vmap of a long sum is each row's staged sum."""
    x = np.full((3, 50000), 0.1, np.float32)
    g = np.asarray(gd.jit(gd.grad(lambda t: ops.sum(t * t)), backend="tvm")(gd.Tensor(x)))
    np.testing.assert_allclose(g, 2 * x, rtol=0, atol=0)
    got = np.asarray(gd.jit(gd.vmap(lambda r: ops.sum(r)), backend="tvm")(gd.Tensor(x)))
    assert _rel_err(got, x.astype(np.float64).sum(1)) < 3e-5


def _schedule_report(fn, *args):
    """The schedule report lines of `fn` compiled at `args` (NumPy arrays), one per PrimFunc (as
    tests/test_transpose_lowering.py's `_rules`)."""
    graph = gd.make_graph(fn)(*[gd.Tensor(a) for a in args])
    return [str(line) for line in compile_graph(graph, cache=False).report["schedule"]]


@pytest.mark.parametrize("length", [1 << 16, 65537])
def test_the_first_stage_fuses_with_the_producers(length):
    """x * x is inlined into the first stage's kernel, as into one reduction (TVM's pattern
    analysis took the block index for an opaque read: x * x was written out whole first, 4.5 ->
    26 ms for (4, 2^23)), also where the last block is padded (the stage iterates past x's end)."""
    x = np.ones((4, length), np.float32)
    lines = _schedule_report(lambda t: ops.sum(t * t, 1), x)
    first = [ln for ln in lines if "sum_blocks" in ln]
    assert len(first) == 1 and "inlined=['T_multiply']" in first[0], lines
    assert not any(ln.startswith("multiply") for ln in lines), lines


def test_short_sums_are_one_reduction():
    """At most SUM_STAGED_ABOVE terms per result: one reduction as before (no stage kernel, which
    would make a graph of one kernel one of two, built with a compiled main: slower to compile)."""
    n = relax_ops.SUM_STAGED_ABOVE
    lines = _schedule_report(lambda t: ops.sum(t, 0), np.ones((n, 3), np.float32))
    assert len(lines) == 1 and "sum_blocks" not in lines[0], lines
    lines = _schedule_report(lambda t: ops.sum(t, 0), np.ones((n + 1, 3), np.float32))
    assert any("sum_blocks" in ln for ln in lines), lines


# (a shape, b shape, transposed lhs): matmul contractions longer than MATMUL_TERMS_MAX (4096)
PRODUCTS = [
    ((1 << 20,), (1 << 20,), False),  # a dot product of two vectors
    ((16, 50000), (50000, 8), False),  # a Gram-like product: few outputs, long sums
    ((50000, 16), (50000, 8), True),  # x.T @ y, read untransposed (a weight gradient over a batch)
    ((3, 4, 9001), (9001, 5), False),  # batch axes broadcast; 9001 = 3 blocks of 3001 minus 2
    ((2, 4097), (4097, 33), False),  # blocks first (33 columns), a tail kernel of 2032 + 1 terms
    ((100, 5001), (5001, 3), False),  # blocks last (3 columns, 300 results): the last overlaps
]


def _product(a, b, transposed):
    return (lambda x, y: ops.transpose(x) @ y) if transposed else (lambda x, y: x @ y)


@pytest.mark.parametrize("sa,sb,transposed", PRODUCTS)
def test_long_matmul_contractions_are_accurate(sa, sb, transposed):
    """Within 3e-5 of the float64 product for terms 0.1 * 0.3 (one running sum per output: 2^20
    terms 7.1e-4 off, in blocks 5.9e-6), and exact for small integers (each term counted once)."""
    fn = _product(None, None, transposed)
    a, b = np.full(sa, 0.1, np.float32), np.full(sb, 0.3, np.float32)
    want = np.asarray(fn(gd.Tensor(a.astype(np.float64)), gd.Tensor(b.astype(np.float64))))
    got = _compiled(fn, a, b)
    assert got.shape == want.shape and got.dtype == np.float32
    assert _rel_err(got, want) < 3e-5
    rng = np.random.default_rng(11)
    ia, ib = rng.integers(-8, 9, size=sa), rng.integers(-8, 9, size=sb)
    exact = np.asarray(fn(gd.Tensor(ia.astype(np.float64)), gd.Tensor(ib.astype(np.float64))))
    np.testing.assert_array_equal(_compiled(fn, ia.astype(np.float32), ib.astype(np.float32)), exact)


def test_long_matmul_with_an_epilogue_vmap_and_gradient():
    """tanh(x @ w + c) over a long contraction, its gradient with respect to w (a product whose
    contraction is the short batch axis) and vmap over rows, against float64."""
    rng = np.random.default_rng(2)
    x = (rng.random((6, 20000)) * 1e-4).astype(np.float32)
    w = rng.standard_normal((20000, 3)).astype(np.float32)
    c = rng.standard_normal(3).astype(np.float32)
    f = lambda x, w, c: ops.tanh(x @ w + c)  # noqa: E731
    want = np.tanh(x.astype(np.float64) @ w.astype(np.float64) + c)
    np.testing.assert_allclose(_compiled(f, x, w, c), want, rtol=1e-5, atol=1e-6)
    rows = np.asarray(gd.jit(gd.vmap(lambda r: ops.tanh(r @ gd.Tensor(w) + gd.Tensor(c))), backend="tvm")(gd.Tensor(x)))
    np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-6)
    gw = np.asarray(gd.jit(gd.grad(lambda w: ops.sum(f(gd.Tensor(x), w, gd.Tensor(c)))), backend="tvm")(gd.Tensor(w)))
    np.testing.assert_allclose(gw, x.astype(np.float64).T @ (1 - want ** 2), rtol=1e-5, atol=1e-9)


def test_matmul_up_to_the_limit_is_one_product():
    """A contraction of MATMUL_TERMS_MAX terms stays one kernel (the common layer sizes)."""
    n = relax_ops.MATMUL_TERMS_MAX
    lines = _schedule_report(lambda a, b: a @ b, np.ones((8, n), np.float32), np.ones((n, 32), np.float32))
    assert len(lines) == 1 and "blocks" not in lines[0], lines
    lines = _schedule_report(lambda a, b: a @ b, np.ones((8, n + 1), np.float32), np.ones((n + 1, 32), np.float32))
    assert any("matmul_blocks" in ln for ln in lines), lines


# einsum specs whose contraction is longer than MATMUL_TERMS_MAX: the staged TE product
EINSUMS = [
    ("i,i->", [(100000,), (100000,)]),
    ("ij,jk->ik", [(8, 50001), (50001, 4)]),
    ("bij,bjk->bik", [(2, 3, 9001), (2, 9001, 5)]),
    ("ij,ij->i", [(3, 70000), (3, 70000)]),
    ("ijk,jk->i", [(4, 100, 103), (100, 103)]),  # two summed letters: blocks of j with all of k
    ("ij,kj->ik", [(5, 8000), (1, 8000)]),  # a letter of extent 1 broadcasts
    ("i,i,i->", [(30001,), (30001,), (30001,)]),
    ("ii->", [(5000, 5000)]),  # a diagonal
    ("ij,jk->", [(16, 5000), (5000, 16)]),  # lone letters summed out first, then "j,j->"
    ("ij,j->j", [(40000, 3), (3,)]),  # a lone letter of 40000: a staged sum
    ("abcd,abcd->", [(4, 32, 64, 64)] * 2),  # c, d one block's terms, b cut, a an outer axis
    ("ijk,ijk->", [(8, 20000, 2)] * 2),  # k inside the blocks of j, i an outer axis
]


@pytest.mark.parametrize("spec,shapes", EINSUMS)
def test_long_einsum_contractions(spec, shapes):
    """Within 3e-5 of float64 for terms 0.1 (one running sum: up to 3.5e-4 off for these), exact
    for small integers (each term once, broadcasts and diagonals read right)."""
    f = lambda *a: ops.einsum(spec, *a)  # noqa: E731
    xs = [np.full(s, 0.1, np.float32) for s in shapes]
    want = np.einsum(spec, *[x.astype(np.float64) for x in xs])
    assert _rel_err(_compiled(f, *xs), want) < 3e-5
    rng = np.random.default_rng(4)
    ints = [rng.integers(-3, 4, size=s) for s in shapes]
    np.testing.assert_array_equal(_compiled(f, *[i.astype(np.float32) for i in ints]),
                                  np.einsum(spec, *ints).astype(np.float32))


def test_tensordot_and_inner_of_long_vectors():
    """tensordot and inner (einsum underneath) of float32 vectors of 2^20 terms 0.1 and 0.3."""
    a, b = np.full(1 << 20, 0.1, np.float32), np.full(1 << 20, 0.3, np.float32)
    want = float(a.astype(np.float64) @ b.astype(np.float64))
    for fn in (lambda x, y: ops.inner(x, y), lambda x, y: ops.tensordot(x, y, 1)):
        assert _rel_err(_compiled(fn, a, b), want) < 3e-5


@pytest.mark.parametrize("n", [64, 7])
def test_conv_weight_gradient_over_a_long_batch(n):
    """A conv2d weight gradient sums over the batch and the output map (n * 30 * 30 terms, in the
    im2col product): 0.1 everywhere gives exactly n * 900 * 0.1 per weight, within 1e-4 (one
    running sum: 5.7e-4 off for n = 64), and integer inputs give the exact integer sums."""
    x = np.full((n, 3, 32, 32), 0.1, np.float32)
    w = np.full((8, 3, 3, 3), 0.2, np.float32)
    g = gd.jit(gd.grad(lambda w, x: ops.sum(ops.conv2d(x, w))), backend="tvm")
    got = np.asarray(g(gd.Tensor(w), gd.Tensor(x))).astype(np.float64)
    assert np.max(np.abs(got - n * 900 * 0.1)) / (n * 900 * 0.1) < 1e-4
    xi = np.random.default_rng(n).integers(-4, 5, size=x.shape)
    exact = np.zeros(w.shape)
    for i in range(3):
        for j in range(3):
            exact[:, :, i, j] = xi[:, :, i:i + 30, j:j + 30].sum(axis=(0, 2, 3))[None, :]
    np.testing.assert_array_equal(np.asarray(g(gd.Tensor(w), gd.Tensor(xi.astype(np.float32)))), exact)


@pytest.mark.parametrize("fn,shapes", [
    (lambda t: ops.sum(t, 1), [(4, 16400)]),  # 16400 = 25 x 656: a divisor, a multiple of 16
    (lambda t: ops.sum(t * t, 1), [(4, 65537)]),  # prime: 65 overlapping blocks of 1024
    (lambda t: ops.sum(t, 1), [(4, 65537)]),  # prime, an input: a tail of 1008 + 1 terms
    (lambda a, v: a @ v, [(64, 4097), (4097,)]),  # 4097 = 17 x 241
])
def test_blocks_stay_vectorized(fn, shapes):
    """A stage's blocks are a multiple of 16 terms long (or a tail of fewer than 16), so that the
    reduction along a contiguous axis keeps its vector partial sums (blocks of 965 or 2049 terms
    were summed serially: 4-15x slower calls, a longsums trial)."""
    lines = _schedule_report(fn, *[np.ones(s, np.float32) for s in shapes])
    # the whole blocks' kernel is made first (its name without a number; the tails' are numbered,
    # and a tail of fewer than 16 terms adds them one at a time)
    main = [ln for ln in lines if ln.split(":")[0].endswith("_blocks")]
    assert len(main) == 1 and "reduceB(rfactor=" in main[0], lines
    # the parts' sums are added, not concatenated: a concatenation is a guarded inner loop, which
    # keeps LLVM's loop vectorizer off the whole build (exp(x) summed over 2^22 + 1 terms: 36 ms)
    assert not any(ln.startswith("concatenate") for ln in lines), lines


def _conv64(x, w, padding, groups, stride=(1, 1), dilation=(1, 1)):
    """conv2d in float64, from NumPy's einsum over the kernel's taps."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    pads = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[0]), (pads[1], pads[1])))
    (sh, sw), (dh, dw) = stride, dilation
    ho = (h + 2 * pads[0] - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pads[1] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for k in range(groups):
        for i in range(kh):
            for j in range(kw):
                out[:, k * og:(k + 1) * og] += np.einsum(
                    "nchw,oc->nohw", xp[:, k * cg:(k + 1) * cg, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                                        j * dw:j * dw + sw * (wo - 1) + 1:sw],
                    w[k * og:(k + 1) * og, :, i, j].astype(np.float64))
    return out


def _conv_wgrad64(x, g, kh, kw, padding, groups):
    """d/dw of sum(conv2d(x, w) * g) in float64: each tap correlates x with the cotangent g."""
    n, c, h, wd = x.shape
    o = g.shape[1]
    cg, og = c // groups, o // groups
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = g.shape[2:]
    out = np.zeros((o, cg, kh, kw))
    for k in range(groups):
        for i in range(kh):
            for j in range(kw):
                out[k * og:(k + 1) * og, :, i, j] = np.einsum(
                    "nchw,nohw->oc", xp[:, k * cg:(k + 1) * cg, i:i + ho, j:j + wo],
                    g[:, k * og:(k + 1) * og].astype(np.float64))
    return out


@pytest.mark.parametrize("n", [20, 21])
def test_direct_conv_weight_gradient_over_a_long_batch(n):
    """A grouped conv2d's weight gradient is a direct convolution (no im2col for groups), each
    output a sum over the batch and the 32x32 output map (n * 1024 terms): it sums blocks of input
    channels as groups of one convolution, then the blocks (`_conv2d_staged`; n = 21: a rest of
    one channel, a convolution of its own). 0.1 everywhere was 2.5e-3 off at n = 256 with one
    running sum; here within 5e-5 of float64, random terms within 2e-6, integers exact, and a NaN
    reaches exactly the weights that read it."""
    rng = np.random.default_rng(n)
    w = np.full((4, 2, 3, 3), 0.2, np.float32)
    gw = gd.jit(gd.grad(lambda w, x, c: ops.sum(ops.conv2d(x, w, padding=1, groups=2) * c)), backend="tvm")
    ones = np.ones((n, 4, 32, 32), np.float32)
    for x, c, tol in ((np.full((n, 4, 32, 32), 0.1, np.float32), ones, 5e-5),
                      ((rng.random((n, 4, 32, 32)) + 0.5).astype(np.float32),
                       (rng.random((n, 4, 32, 32)) + 0.5).astype(np.float32), 2e-6)):
        got = np.asarray(gw(gd.Tensor(w), gd.Tensor(x), gd.Tensor(c)))
        assert _rel_err(got, _conv_wgrad64(x, c, 3, 3, 1, 2)) < tol
    xi = rng.integers(-4, 5, size=ones.shape).astype(np.float32)
    ci = rng.integers(-3, 4, size=ones.shape).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(gw(gd.Tensor(w), gd.Tensor(xi), gd.Tensor(ci))),
                                  _conv_wgrad64(xi, ci, 3, 3, 1, 2))
    xi[n - 1, 3, 0, 5] = np.nan  # channel 1 of group 1, on the top border: taps with i >= 1 read it
    got = np.asarray(gw(gd.Tensor(w), gd.Tensor(xi), gd.Tensor(ci)))
    want = _conv_wgrad64(xi, ci, 3, 3, 1, 2)
    assert np.isnan(want).sum() == 12
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_a_depthwise_weight_gradient_over_one_large_map():
    """A depthwise weight gradient at batch 1 sums one 140x140 output map per weight (19,600 terms,
    one input channel: no channel blocks to make): it sums blocks of kernel rows (here rows of the
    output map) as groups of one convolution (`_conv2d_row_staged`). 0.1 everywhere was 1.7e-4
    off (2.5e-3 at 512x512, a trial); now within 6e-5 of float64, integers exact."""
    gw = gd.jit(gd.grad(lambda w, x: ops.sum(ops.conv2d(x, w, padding=1, groups=4))), backend="tvm")
    w = np.ones((4, 1, 3, 3), np.float32)
    x = np.full((1, 4, 140, 140), 0.1, np.float32)
    ones = np.ones((1, 4, 140, 140), np.float32)
    assert _rel_err(np.asarray(gw(gd.Tensor(w), gd.Tensor(x))), _conv_wgrad64(x, ones, 3, 3, 1, 4)) < 6e-5
    xi = np.random.default_rng(3).integers(-4, 5, size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(gw(gd.Tensor(w), gd.Tensor(xi))), _conv_wgrad64(xi, ones, 3, 3, 1, 4))


def test_direct_conv_over_many_input_channels():
    """A forward conv2d with 2100 input channels and a 3x3 kernel (18,900 terms per output) on an
    18-wide output (a direct convolution): blocks of 432 channels, and the rest of 372 channels a
    convolution of its own, added. One running sum: 5.4e-6 off for random terms, 2.3e-6 for 0.1."""
    rng = np.random.default_rng(7)
    x = (rng.random((1, 2100, 4, 20)) + 0.5).astype(np.float32)
    w = (rng.random((3, 2100, 3, 3)) + 0.5).astype(np.float32)
    got = _compiled(lambda x, w: ops.conv2d(x, w), x, w)
    assert got.shape == (1, 3, 2, 18) and _rel_err(got, _conv64(x, w, 0, 1)) < 2.5e-6
    tenth = np.full(x.shape, 0.1, np.float32)
    assert _rel_err(_compiled(lambda x, w: ops.conv2d(x, w), tenth, w), _conv64(tenth, w, 0, 1)) < 1e-6


# (groups, channels per group, kernel, stride, dilation, padding): direct convolutions (outputs
# at least 16 wide) staged at tiny limits, so that every layout of the channel blocks shows up in
# small operands: blocks that divide the channels, a rest of channels, one channel per block
# (a window longer than the block), groups, strides and dilations
TINY = [
    (1, 12, (1, 2), (1, 1), (1, 1), (0, 0)),  # 4 blocks of 3 channels
    (1, 13, (3, 3), (1, 2), (1, 1), (1, 1)),  # a window longer than a block: a channel per block
    (2, 7, (2, 3), (2, 1), (2, 1), (1, 0)),  # groups, a channel per block
    (3, 9, (1, 1), (1, 1), (1, 1), (0, 0)),  # groups, a block of 5 channels and a rest of 4
    (1, 11, (1, 2), (1, 2), (1, 2), (0, 1)),  # 3 blocks of 3 channels and a rest of 2
    (2, 3, (4, 2), (2, 1), (2, 1), (1, 1)),  # a window longer than a block: blocks of 2 kernel rows
    (1, 2, (7, 1), (1, 1), (1, 1), (0, 0)),  # blocks of one kernel row would copy the input 7 times
]


@pytest.mark.parametrize("g,cg,k,stride,dilation,padding", TINY)
def test_staged_direct_conv_layouts_are_exact(monkeypatch, g, cg, k, stride, dilation, padding):
    """With the limits lowered (stages above 8 terms, blocks of 6, under a lowering revision of
    their own so no executable of the normal limits is reused), integer convolutions, their weight
    gradients (blocks of kernel rows: a window longer than a block) and a vmap over kernels are
    exactly the float64 results."""
    import graphad.lowering as lowering
    real = lowering.lowering_revision
    monkeypatch.setattr(lowering, "lowering_revision", lambda: real() + "-tiny-stages")
    monkeypatch.setattr(relax_ops, "SUM_STAGED_ABOVE", 8)
    monkeypatch.setattr(relax_ops, "MATMUL_TERMS_MAX", 6)
    calls = []
    for name in ("_conv2d_staged", "_conv2d_row_staged"):
        staged = getattr(relax_ops, name)
        monkeypatch.setattr(relax_ops, name, lambda *a, f=staged, name=name: calls.append(name) or f(*a))
    rng = np.random.default_rng(cg)
    x = rng.integers(-3, 4, size=(2, g * cg, 30 if k[0] == 7 else 9, 40)).astype(np.float32)
    w = rng.integers(-3, 4, size=(2 * g, cg) + k).astype(np.float32)
    ws = rng.integers(-3, 4, size=(3, 2 * g, cg) + k).astype(np.float32)

    def conv(w, x):
        return ops.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=g)
    want = _conv64(x, w, padding, g, stride, dilation)
    np.testing.assert_array_equal(_compiled(lambda x, w: conv(w, x), x, w), want)
    gw = gd.jit(gd.grad(lambda w, x: ops.sum(conv(w, x) * gd.Tensor(want.astype(np.float32)))), backend="tvm")
    # d/dw of sum(conv(x, w) * c) = sum over outputs of c * (the x each weight multiplies)
    eye = np.eye(w.size).reshape((w.size,) + w.shape)
    want_w = np.array([np.sum(_conv64(x, e, padding, g, stride, dilation) * want) for e in eye]).reshape(w.shape)
    np.testing.assert_array_equal(np.asarray(gw(gd.Tensor(w), gd.Tensor(x))), want_w)
    got = np.asarray(gd.jit(gd.vmap(conv, in_axes=(0, None)), backend="tvm")(gd.Tensor(ws), gd.Tensor(x)))
    np.testing.assert_array_equal(got, np.stack([_conv64(x, v, padding, g, stride, dilation) for v in ws]))
    # the forward convolution's window is longer than a block where the kernel's is; a grouped
    # weight gradient's (the output map) always is: kernel-row blocks (one of one group is a
    # product over patches, staged as a matmul)
    forward = "_conv2d_row_staged" if k[0] * k[1] > 6 and k[0] != 7 else "_conv2d_staged"
    assert calls[0] == forward and (g == 1 or "_conv2d_row_staged" in calls[1:]), calls
