"""nn layers and losses (issue 14): MaxPool2d, AvgPool2d, GELU, Dropout, LayerNorm, BatchNorm2d,
Embedding, CellList, BCEWithLogitsLoss, CrossEntropyLoss's stability.

Oracles: independent NumPy implementations (float64, loops for the pools), float64 central finite
differences for gradients, and the reference interpreter (backend "numpy") for the compiled
(TVM) results. BatchNorm2d's moving statistics: the eager run (set_data in place) is the oracle
of the functionalized ones under gd.jit and value_and_grad.
"""
import math

import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import GraphadError, ShapeError

from backends import both_backends, fd_grad

F32, F64 = np.float32, np.float64
RNG = np.random.default_rng(1234)


def _t(a, dtype=F32):
    return gd.Tensor(np.asarray(a, dtype))


def _img(shape=(2, 3, 7, 6), dtype=F32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- NumPy references

def _pool_ref(x, k, s, pads, op, count_pad=True):
    kh, kw = k
    sh, sw = s
    t, b, l, r = pads
    n, c, h, w = x.shape
    fill = -np.inf if op == "max" else 0.0
    xp = np.full((n, c, h + t + b, w + l + r), fill)
    xp[:, :, t:t + h, l:l + w] = x
    real = np.zeros((h + t + b, w + l + r))
    real[t:t + h, l:l + w] = 1
    oh, ow = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            if op == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                cnt = kh * kw if count_pad else real[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
                out[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return out


def _same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


_erf = np.vectorize(math.erf)


def _gelu_ref(x, approximate):
    x = x.astype(F64)
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _ln_ref(x, nd, gamma, beta, eps):
    axes = tuple(range(x.ndim - nd, x.ndim))
    x = x.astype(F64)
    m = x.mean(axes, keepdims=True)
    v = ((x - m) ** 2).mean(axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * gamma + beta


def _bn_train_ref(x, gamma, beta, mm, mv, eps, mom):
    x = x.astype(F64)
    m = x.mean((0, 2, 3))
    v = x.var((0, 2, 3))
    cnt = x.shape[0] * x.shape[2] * x.shape[3]
    y = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + eps) * gamma[None, :, None, None] \
        + beta[None, :, None, None]
    return y, mom * mm + (1 - mom) * m, mom * mv + (1 - mom) * v * cnt / (cnt - 1)


def _bce_ref(x, y):
    x, y = x.astype(F64), y.astype(F64)
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _num_grad(f, x, h=1e-6):
    """Central differences of scalar f at float64 array x."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


# ---------------------------------------------------------------- pools

@pytest.mark.parametrize("k,s,mode,padding", [
    (2, 2, "valid", 0), (3, 1, "valid", 0), ((3, 2), (2, 1), "valid", 0), (3, 2, "same", 0), (2, 1, "same", 0),
    (3, 2, "pad", 1), (3, 1, "valid", (1, 0)),
])
def test_max_pool2d_matches_numpy(k, s, mode, padding):
    x = _img()
    y = nn.MaxPool2d(k, s, pad_mode=mode, padding=padding)(_t(x)).asnumpy()
    kk = (k, k) if isinstance(k, int) else k
    ss = (s, s) if isinstance(s, int) else s
    if mode == "same":
        pads = _same(7, kk[0], ss[0]) + _same(6, kk[1], ss[1])
        assert y.shape[2:] == (-(-7 // ss[0]), -(-6 // ss[1]))
    else:
        p = (padding, padding) if isinstance(padding, int) else padding
        pads = (p[0], p[0], p[1], p[1])
    np.testing.assert_array_equal(y, _pool_ref(x, kk, ss, pads, "max").astype(F32))


@pytest.mark.parametrize("k,s,mode,padding,include", [
    (2, 2, "valid", 0, True), ((3, 2), (2, 1), "valid", 0, True), (3, 2, "same", 0, False), (2, 1, "same", 0, False),
    (3, 1, "pad", 1, True), (3, 1, "pad", 1, False),
])
def test_avg_pool2d_matches_numpy(k, s, mode, padding, include):
    x = _img()
    y = nn.AvgPool2d(k, s, pad_mode=mode, padding=padding, count_include_pad=include)(_t(x)).asnumpy()
    kk = (k, k) if isinstance(k, int) else k
    ss = (s, s) if isinstance(s, int) else s
    pads = _same(7, kk[0], ss[0]) + _same(6, kk[1], ss[1]) if mode == "same" else (padding,) * 4
    np.testing.assert_allclose(y, _pool_ref(x, kk, ss, pads, "avg", include), rtol=1e-6, atol=1e-6)


def test_pool_defaults_and_bad_arguments():
    x = _t(_img())
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 6, 5)  # MindSpore's stride default is 1
    with pytest.raises(ShapeError, match="pad_mode"):
        nn.MaxPool2d(2, pad_mode="full")
    with pytest.raises(ShapeError, match="padding"):
        nn.AvgPool2d(3, pad_mode="same", padding=1)(x)


# ---------------------------------------------------------------- GELU

@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_matches_numpy(approximate):
    x = np.concatenate([np.linspace(-12, 12, 97), [-30.0, 30.0, 0.0]]).astype(F32)
    y = nn.GELU(approximate)(_t(x)).asnumpy()
    np.testing.assert_allclose(y, _gelu_ref(x, approximate), rtol=2e-6, atol=1e-7)
    x64 = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(nn.GELU(approximate)(_t(x64, F64)).asnumpy(), _gelu_ref(x64, approximate),
                               rtol=1e-13, atol=1e-15)


def test_gelu_default_is_exact():
    x = np.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(nn.GELU()(_t(x, F64)).asnumpy(), _gelu_ref(x, False), rtol=1e-14)


# ---------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("shape", [6, (7, 6)])
def test_layer_norm_matches_numpy(shape):
    x = _img()
    ln = nn.LayerNorm(shape, epsilon=1e-5)
    nd = 1 if isinstance(shape, int) else len(shape)
    g = RNG.standard_normal(ln.gamma.shape).astype(F32)
    b = RNG.standard_normal(ln.beta.shape).astype(F32)
    ln.gamma.set_data(g)
    ln.beta.set_data(b)
    np.testing.assert_allclose(ln(_t(x)).asnumpy(), _ln_ref(x, nd, g, b, 1e-5), rtol=1e-5, atol=2e-5)
    assert [n for n, _ in ln.parameters_and_names()] == ["gamma", "beta"]
    with pytest.raises(ShapeError):
        ln(_t(np.zeros((2, 5))))


def test_layer_norm_gradients_match_finite_differences():
    x = RNG.standard_normal((3, 5))
    w = RNG.standard_normal((3, 5))
    ln = nn.LayerNorm(5, dtype=gd.float64)
    g0 = RNG.standard_normal(5)
    ln.gamma.set_data(g0)

    def f(xt):
        return ops.sum(ops.mul(ln(xt), _t(w, F64)))

    gx, (gg, gb) = gd.grad(f, 0, weights=[ln.gamma, ln.beta])(_t(x, F64))
    ref = lambda xx: float((_ln_ref(xx, 1, g0, 0.0, 1e-5) * w).sum())  # noqa: E731
    np.testing.assert_allclose(gx.asnumpy(), _num_grad(ref, x), rtol=1e-6, atol=1e-8)
    ref_g = lambda gg_: float((_ln_ref(x, 1, gg_, 0.0, 1e-5) * w).sum())  # noqa: E731
    np.testing.assert_allclose(gg.asnumpy(), _num_grad(ref_g, g0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb.asnumpy(), w.sum(0), rtol=1e-12)


# ---------------------------------------------------------------- BatchNorm2d

def test_batch_norm_training_and_eval_match_numpy():
    bn = nn.BatchNorm2d(3, eps=1e-5, momentum=0.9)
    assert [n for n, _ in bn.parameters_and_names()] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [p.name for p in bn.trainable_params()] == ["gamma", "beta"]
    g, b = RNG.standard_normal(3).astype(F32), RNG.standard_normal(3).astype(F32)
    bn.gamma.set_data(g)
    bn.beta.set_data(b)
    mm, mv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = _img(seed=step) * (step + 1) + step
        y = bn(_t(x)).asnumpy()
        want, mm, mv = _bn_train_ref(x, g, b, mm, mv, 1e-5, 0.9)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_mean.asnumpy(), mm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.asnumpy(), mv, rtol=1e-5, atol=1e-6)
    bn.set_train(False)
    x = _img(seed=9)
    want = (x - mm[None, :, None, None]) / np.sqrt(mv[None, :, None, None] + 1e-5) * g[None, :, None, None] \
        + b[None, :, None, None]
    np.testing.assert_allclose(bn(_t(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), mm, rtol=1e-5, atol=1e-6)  # eval: no update


def test_batch_norm_training_gradient_matches_finite_differences():
    x = RNG.standard_normal((3, 2, 2, 3))
    w = RNG.standard_normal((3, 2, 2, 3))
    bn = nn.BatchNorm2d(2, dtype=gd.float64)
    g0 = np.array([1.5, -0.7])
    bn.gamma.set_data(g0)

    def f(xt):
        return ops.sum(ops.mul(bn(xt), _t(w, F64)))

    gx, (gg, gb) = gd.grad(f, 0, weights=[bn.gamma, bn.beta])(_t(x, F64))
    ref = lambda xx: float((_bn_train_ref(xx, g0, np.zeros(2), 0, 1, 1e-5, 0.9)[0] * w).sum())  # noqa: E731
    np.testing.assert_allclose(gx.asnumpy(), _num_grad(ref, x), rtol=1e-6, atol=1e-8)
    ref_g = lambda gg_: float((_bn_train_ref(x, gg_, np.zeros(2), 0, 1, 1e-5, 0.9)[0] * w).sum())  # noqa: E731
    np.testing.assert_allclose(gg.asnumpy(), _num_grad(ref_g, g0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb.asnumpy(), w.sum((0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_batch_norm_under_jit_updates_moving_statistics_like_eager(backend):
    eager, compiled = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    gd.set_backend(backend)
    step = gd.jit(lambda x: compiled(x))
    for i in range(3):
        x = _t(_img(seed=i) * 2 + i)
        gd.set_backend("numpy")
        want = eager(x).asnumpy()
        gd.set_backend(backend)
        got = step(x).asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compiled.moving_mean.asnumpy(), eager.moving_mean.asnumpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(compiled.moving_variance.asnumpy(), eager.moving_variance.asnumpy(), rtol=1e-6,
                                   atol=1e-7)
    assert not np.allclose(compiled.moving_mean.asnumpy(), 0)


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_batch_norm_value_and_grad_in_jit_updates_statistics(backend):
    eager, compiled = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    w = _t(_img(seed=5))

    def loss_of(bn):
        return lambda x: ops.sum(ops.mul(bn(x), w))

    step = gd.jit(gd.value_and_grad(loss_of(compiled), None, weights=compiled.trainable_params()))
    eager_step = gd.value_and_grad(loss_of(eager), None, weights=eager.trainable_params())
    for i in range(2):
        x = _t(_img(seed=i) + i)
        gd.set_backend("numpy")
        lw, gw = eager_step(x)
        gd.set_backend(backend)
        lc, gc = step(x)
        np.testing.assert_allclose(lc.asnumpy(), lw.asnumpy(), rtol=1e-4, atol=1e-4)
        for a, b in zip(gc, gw):
            np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(compiled.moving_mean.asnumpy(), eager.moving_mean.asnumpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(compiled.moving_variance.asnumpy(), eager.moving_variance.asnumpy(), rtol=1e-6,
                                   atol=1e-7)
    gd.set_backend("numpy")


# ---------------------------------------------------------------- Embedding, CellList

def test_embedding_matches_numpy_and_its_gradient_scatters():
    emb = nn.Embedding(7, 4)
    assert [n for n, _ in emb.parameters_and_names()] == ["embedding_table"]
    table = emb.embedding_table.asnumpy().copy()
    idx = np.array([[0, 3, 3], [6, 1, 0]])
    np.testing.assert_array_equal(emb(gd.Tensor(idx)).asnumpy(), table[idx])
    np.testing.assert_array_equal(emb(gd.Tensor(idx.astype(np.int32))).asnumpy(), table[idx])
    g = gd.grad(lambda i: ops.sum(emb(i)), None, weights=emb.embedding_table)(gd.Tensor(idx))
    want = np.zeros((7, 4))
    np.add.at(want, idx, 1.0)
    np.testing.assert_array_equal(g.asnumpy(), want)
    with pytest.raises(GraphadError, match="integer"):
        emb(_t([0.0, 1.0]))
    assert np.all(nn.Embedding(5, 3, padding_idx=2).embedding_table.asnumpy()[2] == 0)


def test_cell_list_names_parameters_by_index_path():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.blocks = nn.CellList([nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2)])
            self.head = nn.Dense(2, 1)

        def construct(self, x):
            for c in self.blocks:
                x = c(x)
            return self.head(x)

    net = Net()
    names = [n for n, _ in net.parameters_and_names()]
    assert names == ["blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias", "head.weight", "head.bias"]
    assert [p.name for p in net.trainable_params()] == names
    assert len(net.blocks) == 3 and isinstance(net.blocks[1], nn.ReLU) and len(net.blocks[0:2]) == 2
    net.blocks.insert(0, nn.Dense(4, 4))
    net.blocks.append(nn.Tanh())
    assert [p.name for p in net.trainable_params()][:6] == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                                                             "blocks.1.bias", "blocks.3.weight", "blocks.3.bias"]
    del net.blocks[0]
    assert [p.name for p in net.trainable_params()][:2] == ["blocks.0.weight", "blocks.0.bias"]
    assert net(_t(np.ones((2, 4)))).shape == (2, 1)
    with pytest.raises(GraphadError, match="Cells"):
        net.blocks.append(3)
    n = len(net.blocks)
    with pytest.raises(GraphadError, match="Cells"):  # all or nothing: the ReLU is not appended
        net.blocks.extend([nn.ReLU(), 5])
    assert len(net.blocks) == n


# ---------------------------------------------------------------- losses

def test_bce_with_logits_is_stable_and_matches_numpy():
    x = np.array([-1e4, -50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0, 1e4], F32)
    y = np.array([1.0, 0.0, 1.0, 0.3, 1.0, 0.0, 0.7, 1.0, 0.0], F32)
    ref = _bce_ref(x, y)
    np.testing.assert_allclose(nn.BCEWithLogitsLoss("none")(_t(x), _t(y)).asnumpy(), ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nn.BCEWithLogitsLoss()(_t(x), _t(y)).asnumpy(), ref.mean(), rtol=1e-6)
    np.testing.assert_allclose(nn.BCEWithLogitsLoss("sum")(_t(x), _t(y)).asnumpy(), ref.sum(), rtol=1e-6)
    w, pw = RNG.uniform(0.5, 2, 9), 2.5
    want = w * ((1 - y) * x + (1 + (pw - 1) * y) * (np.log1p(np.exp(-np.abs(x.astype(F64)))) + np.maximum(-x, 0)))
    got = nn.BCEWithLogitsLoss("none", weight=_t(w), pos_weight=_t(pw))(_t(x), _t(y)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(got))


def test_bce_with_logits_gradient_matches_finite_differences():
    x = RNG.standard_normal(6) * 4
    y = RNG.uniform(0, 1, 6)
    g = gd.grad(lambda a: nn.BCEWithLogitsLoss()(a, _t(y, F64)))(_t(x, F64)).asnumpy()
    np.testing.assert_allclose(g, _num_grad(lambda a: float(_bce_ref(a, y).mean()), x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g, (1 / (1 + np.exp(-x)) - y) / 6, rtol=1e-12)
    gbig = gd.grad(lambda a: nn.BCEWithLogitsLoss("sum")(a, _t([0.0, 1.0])))(_t([1e4, -1e4])).asnumpy()
    np.testing.assert_allclose(gbig, [1.0, -1.0])


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [3.0, 1.0, 0.2]], F32)
    labels = np.array([2, 1, 0])
    l64 = logits.astype(F64)
    lse = l64.max(1) + np.log(np.exp(l64 - l64.max(1, keepdims=True)).sum(1))
    want = lse - l64[np.arange(3), labels]
    got = nn.CrossEntropyLoss(reduction="none")(_t(logits), gd.Tensor(labels)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    g = gd.grad(lambda a: nn.CrossEntropyLoss()(a, gd.Tensor(labels)))(_t(logits)).asnumpy()
    assert np.all(np.isfinite(g))
    sm = np.exp(l64 - lse[:, None])
    np.testing.assert_allclose(g, (sm - np.eye(3)[labels]) / 3, atol=1e-6)


# ---------------------------------------------------------------- Dropout

def test_dropout_eval_mode_and_keep_prob_one_are_identity():
    x = _t(_img())
    d = nn.Dropout(keep_prob=0.3)
    d.set_train(False)
    assert d(x) is x
    assert nn.Dropout(p=0.0)(x) is x
    assert nn.Dropout().keep_prob == 0.5 and nn.Dropout(p=0.2).keep_prob == pytest.approx(0.8)
    with pytest.raises(GraphadError):
        nn.Dropout(keep_prob=0.5, p=0.5)
    with pytest.raises(GraphadError):
        nn.Dropout(keep_prob=0.0)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_dropout_mask_fraction_scaling_and_keys(keep):
    x = np.ones((200, 500), F32)
    d = nn.Dropout(keep_prob=keep)
    y = d(_t(x), gd.Tensor(np.array(7))).asnumpy()
    kept = y != 0
    n = x.size
    assert abs(kept.mean() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)
    np.testing.assert_allclose(y[kept], np.float32(1 / keep), rtol=1e-7)
    # no structure along rows or columns
    assert np.abs(kept.mean(0) - keep).max() < 6 * math.sqrt(keep * (1 - keep) / 200)
    assert np.abs(kept.mean(1) - keep).max() < 6 * math.sqrt(keep * (1 - keep) / 500)
    # deterministic per key; different keys, different masks, independent of each other
    np.testing.assert_array_equal(d(_t(x), gd.Tensor(np.array(7))).asnumpy(), y)
    np.testing.assert_array_equal(d(_t(x), 7).asnumpy(), y)
    other = d(_t(x), gd.Tensor(np.array(8))).asnumpy() != 0
    both = (kept & other).mean()
    assert abs(both - keep * keep) < 5 * math.sqrt(keep * keep * (1 - keep * keep) / n)
    pair = d(_t(x), gd.Tensor(np.array([7, 1], np.int32))).asnumpy() != 0
    assert (pair != kept).any()


def test_dropout_gradient_is_mask_over_keep_prob():
    x = _t(_img() + 10.0)  # nonzero everywhere
    d = nn.Dropout(keep_prob=0.6)
    key = gd.Tensor(np.array(123))
    y = d(x, key).asnumpy()
    g = gd.grad(lambda a: ops.sum(d(a, key)))(x).asnumpy()
    np.testing.assert_allclose(g, (y != 0) / np.float32(0.6), rtol=1e-7)


def test_dropout_without_a_key_advances_its_seed_parameter():
    d = nn.Dropout(keep_prob=0.5, seed=41)
    assert [(n, p.requires_grad) for n, p in d.parameters_and_names()] == [("seed", False)]
    x = _t(np.ones((64, 64)))
    y1 = d(x).asnumpy()
    assert int(d.seed.asnumpy()) == 42
    np.testing.assert_array_equal(y1, d(x, 41).asnumpy())
    y2 = d(x).asnumpy()
    assert int(d.seed.asnumpy()) == 43 and (y1 != y2).any()
    d.seed.set_data(np.array(41))
    step = gd.jit(lambda a: d(a))  # functionalized: each compiled call draws the next mask
    np.testing.assert_array_equal(step(x).asnumpy(), y1)
    np.testing.assert_array_equal(step(x).asnumpy(), y2)
    assert int(d.seed.asnumpy()) == 43


# ---------------------------------------------------------------- compiled vs interpreted

def test_layers_compiled_match_interpreter():
    x = _t(_img((2, 3, 6, 6)))
    ln = nn.LayerNorm((6,))
    bn = nn.BatchNorm2d(3)
    bn.set_train(False)
    bn.moving_mean.set_data(np.array([0.1, -0.2, 0.3], F32))
    emb = nn.Embedding(5, 6)
    layers = [nn.MaxPool2d(3, 2, pad_mode="same"), nn.AvgPool2d(2, 2), nn.AvgPool2d(3, 1, pad_mode="same"),
              nn.GELU(), nn.GELU(True), ln, bn]
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()

    def f(a, idx):
        outs = [c(a) for c in layers]
        outs.append(emb(idx))
        outs.append(bce(a, ops.sigmoid(ops.neg(a))))
        outs.append(ce(a[0, 0] * 1e3, ops.remainder(ops.reshape(idx, (-1,)), 6)))
        return outs

    idx = gd.Tensor(np.array([[0, 4, 2], [1, 1, 3]]))
    both_backends(gd.jit(f), x, idx, rtol=2e-5, atol=2e-5)


def test_dropout_compiled_matches_interpreter():
    """The integer hash gives the same bits compiled (exact integer arithmetic)."""
    drop = nn.Dropout(0.7)
    x = _t(_img((2, 3, 4, 4)))
    key = gd.Tensor(np.array([99, 5]))
    y = both_backends(gd.jit(lambda a, k: drop(a, k)), x, key, rtol=0, atol=0)[0]
    np.testing.assert_array_equal(y, drop(x, key).asnumpy())


def test_batch_norm_training_compiled_matches_interpreter():
    bn = nn.BatchNorm2d(3)
    x = _t(_img())
    out = {}
    for backend in ("numpy", "tvm"):
        bn.moving_mean.set_data(np.zeros(3))
        bn.moving_variance.set_data(np.ones(3))
        gd.set_backend(backend)
        try:
            y = gd.jit(lambda a: bn(a))(x).asnumpy()
        finally:
            gd.set_backend("numpy")
        out[backend] = (y, bn.moving_mean.asnumpy().copy(), bn.moving_variance.asnumpy().copy())
    for a, b in zip(out["tvm"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- a reviewer's finds (nineteenth session)

def test_bce_with_logits_is_smooth_at_zero():
    """d loss / d x at x = 0 is sigmoid(0) - y (torch's, and the central difference of graphad's own
    loss); written with max and abs, it came out as -y (and with pos_weight p as -p y)."""
    x = np.array([0.0, 0.0, 1.3, -2.0])
    y = np.array([0.0, 1.0, 0.3, 1.0])
    for pw in (None, 2.0):
        loss = nn.BCEWithLogitsLoss(reduction="sum", pos_weight=pw)
        g = both_backends(gd.grad(lambda v: loss(v, gd.Tensor(y))), gd.Tensor(x))[0]
        coef = 1.0 + ((pw or 1.0) - 1.0) * y
        sig = 1.0 / (1.0 + np.exp(-x))
        np.testing.assert_allclose(g, (1.0 - y) - coef * (1.0 - sig), rtol=1e-12, atol=1e-15)
        value = float(loss(gd.Tensor(x), gd.Tensor(y)).asnumpy())
        want = np.sum((1 - y) * x + coef * np.logaddexp(0.0, -x))
        assert math.isclose(value, want, rel_tol=1e-14)


def test_cross_entropy_with_a_masked_class():
    """A -inf logit of another class (a masked class) gave a NaN loss (0 * -inf in a one-hot
    product); the target's log-probability is gathered now. Labels out of range stay NaN."""
    logits = np.array([[1.0, -np.inf, 2.0], [0.5, 3.0, -np.inf]])
    labels = np.array([2, 1])
    loss = nn.CrossEntropyLoss(reduction="none")
    rows = both_backends(lambda a, b: loss(a, b), gd.Tensor(logits), gd.Tensor(labels))[0]
    finite = np.where(np.isinf(logits), -1e300, logits)
    want = -(finite[np.arange(2), labels] - np.log(np.exp(finite - finite.max(1, keepdims=True)).sum(1))
             - finite.max(1))
    np.testing.assert_allclose(rows, want, rtol=1e-14)
    g = gd.grad(lambda a: nn.CrossEntropyLoss()(a, gd.Tensor(labels)))(gd.Tensor(logits)).asnumpy()
    assert np.isfinite(g).all() and g[0, 1] == 0.0 and g[1, 2] == 0.0
    bad = gd.jit(lambda a, b: loss(a, b))(gd.Tensor(logits), gd.Tensor(np.array([2, 5])))
    assert np.isnan(bad.asnumpy()[1]) and np.isfinite(bad.asnumpy()[0])


def test_weight_gradient_after_an_assignment_in_the_same_trace():
    """A gradient with weights=[p] taken after p was assigned earlier in the same traced function
    was silently zero (the inner trace captured p's assigned value, not p): two train steps in one
    compiled call trained on the first only."""
    x = gd.Tensor(np.array([0.5, -1.0, 2.0]))
    p = gd.Parameter(gd.Tensor(np.array([1.0, 2.0, 3.0])), name="p")

    def f(v):
        p.set_data(p * 2.0)
        loss, (g,) = gd.value_and_grad(lambda u: ops.sum(p * u * u), None, weights=[p])(v)
        return loss, g
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            p.set_data(gd.Tensor(np.array([1.0, 2.0, 3.0])))
            loss, g = gd.jit(f)(x)
            np.testing.assert_array_equal(g.asnumpy(), x.asnumpy() ** 2)
            assert float(loss.asnumpy()) == float(np.sum(np.array([2.0, 4.0, 6.0]) * x.asnumpy() ** 2))
            np.testing.assert_array_equal(p.asnumpy(), [2.0, 4.0, 6.0])
        finally:
            gd.set_backend("numpy")
    # two SGD steps per compiled call equal four single steps
    w = RNG.standard_normal((3, 4))
    xs, ys = RNG.standard_normal((8, 4)), RNG.standard_normal((8, 3))
    losses = {}
    for per_call in (1, 2):
        net = nn.Dense(4, 3, weight_init=gd.Tensor(w), has_bias=False, dtype=gd.float64)
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1))
        call = gd.jit(lambda a, b: tuple(step.construct(a, b) for _ in range(per_call)))
        losses[per_call] = [float(v.asnumpy()) for _ in range(4 // per_call) for v in call(gd.Tensor(xs), gd.Tensor(ys))]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-13)


def test_schedules_in_float64_and_conv2d_pad_mode_checked():
    """Learning-rate schedules compute in float64 (rounded once to each Parameter's type by the
    optimizer: a float64 model's rate drifted by 1e-8 from float32 arithmetic); Conv2d refuses an
    unknown pad_mode and a padding its pad_mode ignores (both were silently no padding)."""
    lr = nn.ExponentialDecayLR(0.1, 0.9, 3)
    assert float(lr(gd.Tensor(np.int32(0))).asnumpy()) == 0.1
    # (NumPy's float64 power, which the interpreter runs, is a SIMD approximation where AVX-512
    # is: an ulp from Python's pow on an AMD EPYC; float32 arithmetic drifted by 1e-8)
    assert float(lr(gd.Tensor(np.int32(5))).asnumpy()) == pytest.approx(0.1 * 0.9 ** (5 / 3), rel=4.5e-16, abs=0)
    for dtype in (gd.float32, gd.float64):
        net = nn.Dense(2, 1, dtype=dtype)
        opt = nn.SGD(net.trainable_params(), nn.CosineDecayLR(0.01, 0.1, 7))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
        step(gd.Tensor(np.ones((3, 2), dtype.np)), gd.Tensor(np.zeros((3, 1), dtype.np)))
        assert net.weight.dtype is dtype
    assert nn.Conv2d(1, 1, 3, pad_mode="SAME")(gd.Tensor(np.ones((1, 1, 5, 5), np.float32))).shape == (1, 1, 5, 5)
    with pytest.raises(GraphadError, match="pad_mode must be"):
        nn.Conv2d(1, 1, 3, pad_mode="bogus")
    with pytest.raises(GraphadError, match="padding must be 0 with pad_mode='valid'"):
        nn.Conv2d(1, 1, 3, pad_mode="valid", padding=1)


class _Tied(nn.Cell):
    """Two sibling layers sharing one weight, tied after both were assigned."""
    def __init__(self):
        super().__init__()
        self.a = nn.Dense(3, 3)
        self.b = nn.Dense(3, 3)
        self.b.weight = self.a.weight

    def construct(self, x):
        return self.b(self.a(x))


class _Outer(nn.Cell):
    def __init__(self):
        super().__init__()
        self.m = _Tied()
        self.head = nn.Dense(3, 1)

    def construct(self, x):
        return self.head(self.m(x))


def test_a_parameter_tied_across_siblings_keeps_its_first_path():
    """`self.b.weight = self.a.weight` named the Parameter "b.weight" while parameters_and_names
    (and so checkpoints) call it "a.weight"; also when tied after the model is nested."""
    net = _Outer()
    names = [n for n, _ in net.parameters_and_names()]
    assert names == ["m.a.weight", "m.a.bias", "m.b.bias", "head.weight", "head.bias"]
    assert [p.name for p in net.get_parameters()] == names
    net.m.b.weight = net.m.a.weight                                       # tied again from outside
    assert net.m.b.weight.name == "m.a.weight"
    assert [p.name for p in net.get_parameters()] == names


def test_copied_and_unpickled_models_keep_their_parameter_names(tmp_path):
    """A deepcopy or pickle round trip of a nested model gave "m.a.m.a.weight" from
    parameters_and_names (the copy took the path as the given name), so a checkpoint saved from
    an EMA copy did not load into the model."""
    import copy
    import pickle
    net = _Outer()
    names = [n for n, _ in net.parameters_and_names()]
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert [n for n, _ in other.parameters_and_names()] == names
        assert [p.name for p in other.get_parameters()] == names
        assert other.m.b.weight is other.m.a.weight                     # still tied
        other.m.a.weight = other.m.a.weight                             # a rename after the copy
        assert other.m.a.weight.name == "m.a.weight"
        other.m.a.weight.set_data(np.full((3, 3), 0.5, np.float32))
        path = str(tmp_path / "copy.safetensors")
        nn.save_checkpoint(other, path)
        nn.load_checkpoint(path, net)
        np.testing.assert_array_equal(net.m.b.weight.asnumpy(), np.full((3, 3), 0.5, np.float32))


# ---------------------------------------------------------------- GroupNorm, Conv1d, grouped Conv2d, activations

@pytest.fixture
def torch():
    """PyTorch, the oracle of the tests that compare with it (not in the tests' extra)."""
    return pytest.importorskip("torch")


def _group_norm_ref(x, g, eps, gamma, beta):
    n, c = x.shape[:2]
    xg = x.reshape(n, g, -1)
    y = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)).reshape(x.shape)
    cs = (1, c) + (1,) * (x.ndim - 2)
    return y * gamma.reshape(cs) + beta.reshape(cs)


def _conv1d_ref(x, w, b, stride, pads, dilation, group):
    """Direct loops in float64: x (N, C, L), w (O, C/group, K)."""
    n, c, length = x.shape
    o, cg, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), pads))
    lout = (length + sum(pads) - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((n, o, lout))
    og = o // group
    for oc in range(o):
        gi = oc // og
        for t in range(lout):
            win = xp[:, gi * cg:(gi + 1) * cg, t * stride:t * stride + dilation * (k - 1) + 1:dilation]
            out[:, oc, t] = (win * w[oc]).sum((1, 2))
    return out + (0 if b is None else b[None, :, None])


@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((2, 4, 3, 3), 2), ((3, 4), 4), ((1, 6, 2, 2, 2), 1)])
def test_group_norm_matches_numpy(shape, groups):
    x = RNG.standard_normal(shape)
    gn = nn.GroupNorm(groups, shape[1], eps=1e-3, dtype=F64)
    gamma, beta = RNG.standard_normal(shape[1]), RNG.standard_normal(shape[1])
    gn.gamma.set_data(gamma)
    gn.beta.set_data(beta)
    np.testing.assert_allclose(gn(_t(x, F64)).asnumpy(), _group_norm_ref(x, groups, 1e-3, gamma, beta),
                               rtol=1e-12, atol=1e-12)


def test_group_norm_gradients_and_affine():
    x = RNG.standard_normal((2, 4, 3))
    gn = nn.GroupNorm(2, 4, dtype=F64)
    w = RNG.standard_normal((2, 4, 3))
    f = lambda a: ops.sum(ops.mul(gn(a), _t(w, F64)))  # noqa: E731
    g = gd.grad(f)(_t(x, F64)).asnumpy()
    np.testing.assert_allclose(g, fd_grad(lambda a: float(f(_t(a, F64)).asnumpy()), x), rtol=1e-6, atol=1e-8)
    assert [p.name for p in gn.trainable_params()] == ["gamma", "beta"]
    assert nn.GroupNorm(2, 4, affine=False).trainable_params() == []
    with pytest.raises(GraphadError, match=r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(GraphadError, match=r"GroupNorm: eps .* got 0"):
        nn.GroupNorm(2, 4, eps=0)
    with pytest.raises(ShapeError, match=r"GroupNorm\(2, 4\): input must be \(N, 4, \.\.\.\), got shape \(2, 3, 5\)"):
        nn.GroupNorm(2, 4)(_t(np.ones((2, 3, 5))))


@pytest.mark.parametrize("kw,pads", [(dict(), None), (dict(stride=2, pad_mode="valid"), (0, 0)),
                                     (dict(pad_mode="pad", padding=(2, 1), dilation=2, group=2), (2, 1)),
                                     (dict(stride=3, pad_mode="same", group=4, has_bias=True), None)])
def test_conv1d_matches_numpy_loops(kw, pads):
    x = RNG.standard_normal((2, 4, 9))
    conv = nn.Conv1d(4, 8, 3, dtype=F64, **kw)
    w = conv.weight.asnumpy()
    assert w.shape == (8, 4 // kw.get("group", 1), 3)
    s = kw.get("stride", 1)
    if pads is None:  # "same": output ceil(L / stride), the extra padding at the end
        total = max((-(-9 // s) - 1) * s + 3 - 9, 0)
        pads = (total // 2, total - total // 2)
    b = conv.bias.asnumpy() if kw.get("has_bias") else None
    want = _conv1d_ref(x, w, b, s, pads, kw.get("dilation", 1), kw.get("group", 1))
    np.testing.assert_allclose(conv(_t(x, F64)).asnumpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv(_t(x[0], F64)).asnumpy(), want[0], rtol=1e-12, atol=1e-12)  # (C, L)


def test_grouped_conv2d_matches_per_group_convolutions():
    x = RNG.standard_normal((2, 6, 5, 5))
    conv = nn.Conv2d(6, 4, 3, group=2, has_bias=True, dtype=F64)
    assert tuple(conv.weight.shape) == (4, 3, 3, 3)
    w, b = conv.weight.asnumpy(), conv.bias.asnumpy()
    parts = []
    for gi in range(2):  # each group an ordinary convolution of its channels
        c = nn.Conv2d(3, 2, 3, has_bias=True, weight_init=w[2 * gi:2 * gi + 2], bias_init=b[2 * gi:2 * gi + 2],
                      dtype=F64)
        parts.append(c(_t(x[:, 3 * gi:3 * gi + 3], F64)).asnumpy())
    np.testing.assert_allclose(conv(_t(x, F64)).asnumpy(), np.concatenate(parts, 1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match=r"Conv2d: in_channels \(6\) and out_channels \(4\) .* group=3"):
        nn.Conv2d(6, 4, 3, group=3)
    with pytest.raises(GraphadError, match=r"Conv1d: group must be a positive int, got 0"):
        nn.Conv1d(4, 4, 3, group=0)
    with pytest.raises(ShapeError, match=r"Conv1d: padding must be an int >= 0 or \(left, right\), got \(1, 2, 3\)"):
        nn.Conv1d(4, 4, 3, pad_mode="pad", padding=(1, 2, 3))
    with pytest.raises(ShapeError, match=r"Conv2d: weight_init must have shape \(4, 3, 3, 3\)"):
        nn.Conv2d(6, 4, 3, group=2, weight_init=np.zeros((4, 6, 3, 3)))


def test_activation_cells_match_numpy():
    x = np.concatenate([RNG.standard_normal(20) * 5, [0.0, -30.0, 30.0, 10.5]])
    t = _t(x, F64)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(nn.SiLU()(t).asnumpy(), x * sig, rtol=1e-13)
    sp = np.where(2 * x > 21, x, np.logaddexp(2 * x, 0) / 2)
    np.testing.assert_allclose(nn.Softplus(2, 21)(t).asnumpy(), sp, rtol=1e-13)
    np.testing.assert_allclose(nn.Softplus()(t).asnumpy(), np.where(x > 20, x, np.logaddexp(x, 0)), rtol=1e-13)
    np.testing.assert_allclose(nn.LeakyReLU()(t).asnumpy(), np.where(x > 0, x, 0.2 * x), rtol=1e-15)
    np.testing.assert_allclose(nn.ELU(0.7)(t).asnumpy(), np.where(x > 0, x, 0.7 * np.expm1(x)), rtol=1e-13)
    for cell, d in [(nn.SiLU(), sig * (1 + x * (1 - sig))), (nn.LeakyReLU(0.1), np.where(x > 0, 1.0, 0.1)),
                    (nn.ELU(0.7), np.where(x > 0, 1.0, 0.7 * np.exp(x))),
                    (nn.Softplus(2, 21), np.where(2 * x > 21, 1.0, 1 / (1 + np.exp(-2 * x))))]:
        g = gd.grad(lambda a: ops.sum(cell(a)))(t).asnumpy()
        np.testing.assert_allclose(g, d, rtol=1e-12, atol=1e-300, err_msg=type(cell).__name__)
    for bad, msg in [(lambda: nn.Softplus(beta=0), r"Softplus: beta must be a finite positive float, got 0"),
                     (lambda: nn.Softplus(threshold=float("inf")), r"Softplus: threshold .* got inf"),
                     (lambda: nn.LeakyReLU("0.1"), r"LeakyReLU: alpha .* got '0.1'"),
                     (lambda: nn.ELU(None), r"ELU: alpha .* got None")]:
        with pytest.raises(GraphadError, match=msg):
            bad()


def test_new_layers_compiled_match_interpreter():
    x = _t(_img((2, 4, 6, 5)))
    layers = [nn.GroupNorm(2, 4), nn.Conv2d(4, 6, 3, group=2, has_bias=True), nn.SiLU(), nn.Softplus(2, 5),
              nn.LeakyReLU(), nn.ELU()]
    c1 = nn.Conv1d(4, 4, 3, stride=2, group=4, pad_mode="pad", padding=1)

    def f(a):
        outs = [c(a) for c in layers] + [c1(a[:, :, 0])]
        outs.append(gd.grad(lambda b: ops.sum(ops.square(layers[1](layers[0](b)))) + ops.sum(c1(b[:, :, 1])))(a))
        return outs

    both_backends(gd.jit(f), x, rtol=2e-5, atol=2e-5)


def test_new_layers_match_pytorch(torch):
    x = RNG.standard_normal((2, 4, 9))
    gn = nn.GroupNorm(2, 4, dtype=F64)
    want = torch.nn.functional.group_norm(torch.tensor(x), 2, eps=1e-5).numpy()
    np.testing.assert_allclose(gn(_t(x, F64)).asnumpy(), want, rtol=1e-12, atol=1e-12)
    conv = nn.Conv1d(4, 6, 3, stride=2, pad_mode="pad", padding=2, dilation=2, group=2, has_bias=True, dtype=F64)
    want = torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(conv.weight.asnumpy()),
                                      torch.tensor(conv.bias.asnumpy()), stride=2, padding=2, dilation=2, groups=2)
    np.testing.assert_allclose(conv(_t(x, F64)).asnumpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    tx = torch.tensor(x)
    F = torch.nn.functional
    for cell, want in [(nn.SiLU(), F.silu(tx)), (nn.Softplus(1.5, 3), F.softplus(tx, 1.5, 3)),
                       (nn.LeakyReLU(0.3), F.leaky_relu(tx, 0.3)), (nn.ELU(0.5), F.elu(tx, 0.5))]:
        np.testing.assert_allclose(cell(_t(x, F64)).asnumpy(), want.numpy(), rtol=1e-13, atol=1e-15)


def test_layer_argument_and_input_errors_name_the_layer_types_and_line():
    """Refusals a helper's trial found loose: a stride of 0 with 'same' padding raised Python's
    ZeroDivisionError (conv2d, MaxPool2d, AvgPool2d); LayerNorm and BatchNorm2d took a negative or
    NaN epsilon and gave NaN (GroupNorm refused it); a layer's own input check named neither the
    dtype nor the user's line; a bprop of the wrong arity raised a bare TypeError."""
    import inspect
    x = gd.Tensor(np.ones((1, 3, 5, 5), np.float32))
    for make in (lambda: nn.Conv2d(3, 4, 3, stride=0), lambda: nn.MaxPool2d(2, 0, "same"),
                 lambda: nn.AvgPool2d(2, 0, "same")):
        with pytest.raises(GraphadError, match="positive"):
            make()(x)
    for make in (lambda: nn.LayerNorm(4, epsilon=-1.0), lambda: nn.LayerNorm(4, epsilon=float("nan")),
                 lambda: nn.BatchNorm2d(3, eps=-1.0), lambda: nn.BatchNorm2d(3, eps=0.0)):
        with pytest.raises(GraphadError, match="finite positive float"):
            make()
    line = inspect.currentframe().f_lineno
    bad = gd.Tensor(np.ones((4, 5), np.float32))
    for k, (cell, what) in enumerate(((nn.Dense(3, 2), r"Dense\(3, 2\) got an input f32\[4,5\]"),
                                      (nn.LayerNorm(4), r"LayerNorm\(\(4,\)\) got an input f32\[4,5\]"),
                                      (nn.BatchNorm2d(3), r"BatchNorm2d\(3\) takes .* got f32\[4,5\]"))):
        for run, at in ((cell, line + 7), (gd.jit(lambda a, cell=cell: cell(a)), line + 5)):  # (the cell's call)
            with pytest.raises(GraphadError, match=f"{what}.*test_nn_layers.py:{at}"):
                run(bad)

    class Bad(nn.Cell):
        def construct(self, x):
            return x * 2.0

        def bprop(self, x, dout):  # (out is missing)
            return (dout,)
    with pytest.raises(GraphadError, match=r"Bad.bprop takes the cell's 1 input\(s\), then out and dout"):
        gd.grad(lambda t: ops.sum(Bad()(t)))(gd.Tensor(np.array([1.0, 2.0])))


def test_a_layer_constructors_error_names_the_users_line():
    """A GraphadError from a graphad layer's constructor ends with the user's line, as an op's
    does (a conv/pool trial: `nn.Conv1d(3, 4, 3, pad_mode="pad", padding=(1, 2, 3))` named none),
    also when the layer is made inside a user's Cell."""
    import graphad.nn as nn
    with pytest.raises(gd.GraphadError, match=r"Conv1d: padding must be .*\(at .*test_nn_layers\.py:\d+\)$"):
        nn.Conv1d(3, 4, 3, pad_mode="pad", padding=(1, 2, 3))

    class M(nn.Cell):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 0)
    with pytest.raises(gd.GraphadError, match=r"kernel_size must be a positive int, got 0 \(at .*test_nn_layers\.py:\d+\)$"):
        M()
