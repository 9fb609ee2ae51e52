"""The losses a port from PyTorch/MindSpore needs: SmoothL1Loss, HuberLoss, NLLLoss, KLDivLoss,
BCELoss, and CrossEntropyLoss's weight / ignore_index / label_smoothing.

Oracles: each loss written out in NumPy float64 (loops over the rows for the class losses, so
the weighted mean's denominator is computed independently of the vectorized code), float64
central differences for the gradients, the reference interpreter for the compiled (TVM) results,
and, where installed, torch.nn's losses (through the `torch` fixture: CI has no torch).
"""
import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import GraphadError, ShapeError

from backends import both_backends, fd_grad

F64 = np.float64
RNG = np.random.default_rng(7)


@pytest.fixture
def torch():
    """PyTorch, the oracle of the tests that compare with it (not in the tests' extra)."""
    return pytest.importorskip("torch")


def _t(a, dtype=F64):
    return gd.Tensor(np.asarray(a, dtype))


def _reduce(v, reduction):
    return v.mean() if reduction == "mean" else v.sum() if reduction == "sum" else v


# ---------------------------------------------------------------- NumPy float64 references

def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return (x - m) - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _ce_ref(x, y, weight=None, ignore_index=-100, reduction="mean", ls=0.0):
    """torch's CrossEntropyLoss with class indices, row by row: x (N, C), y (N,)."""
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, F64)
    logp = _log_softmax(x)
    rows, den = np.zeros(n), 0.0
    for i in range(n):
        if y[i] == ignore_index:
            continue
        nll = -w[y[i]] * logp[i, y[i]]
        smooth = -sum(w[k] * logp[i, k] for k in range(c))
        rows[i] = (1 - ls) * nll + ls / c * smooth
        den += w[y[i]]
    if reduction == "mean":
        return rows.sum() / den
    return rows.sum() if reduction == "sum" else rows


def _ce_prob_ref(x, p, weight=None, reduction="mean", ls=0.0):
    c = x.shape[1]
    w = np.ones(c) if weight is None else np.asarray(weight, F64)
    q = p * (1 - ls) + ls / c
    rows = -(w * q * _log_softmax(x)).sum(1)
    return _reduce(rows, reduction)


def _nll_ref(logp, y, weight=None, ignore_index=-100, reduction="mean"):
    n, c = logp.shape
    w = np.ones(c) if weight is None else np.asarray(weight, F64)
    rows, den = np.zeros(n), 0.0
    for i in range(n):
        if y[i] != ignore_index:
            rows[i] = -w[y[i]] * logp[i, y[i]]
            den += w[y[i]]
    if reduction == "mean":
        return rows.sum() / den
    return rows.sum() if reduction == "sum" else rows


def _kl_ref(x, t, reduction="mean", log_target=False):
    if log_target:
        v = np.exp(t) * (t - x)
    else:
        v = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0) - t * x
    if reduction == "batchmean":
        return v.sum() / x.shape[0]
    return _reduce(v, reduction)


def _bce_ref(x, y, weight=None, reduction="mean"):
    with np.errstate(divide="ignore"):
        lx = np.maximum(np.log(x), -100.0)
        l1x = np.maximum(np.log(1.0 - x), -100.0)
    v = -(y * lx + (1 - y) * l1x)
    if weight is not None:
        v = v * weight
    return _reduce(v, reduction)


def _smooth_l1_ref(x, y, beta=1.0, reduction="none"):
    d = np.abs(x - y)
    return _reduce(np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta), reduction)


def _huber_ref(x, y, reduction="mean", delta=1.0):
    d = np.abs(x - y)
    return _reduce(np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


# ---------------------------------------------------------------- values against NumPy

X = RNG.normal(size=(6, 4)) * 2
Y = np.array([0, 3, -100, 1, 3, 2])
W = np.array([0.5, 2.0, 1.0, 3.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, W])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_weight_ignore_index_label_smoothing_match_numpy(reduction, weight, ls):
    loss = nn.CrossEntropyLoss(weight=None if weight is None else _t(weight), reduction=reduction, label_smoothing=ls)
    got = loss(_t(X), gd.Tensor(Y)).asnumpy()
    np.testing.assert_allclose(got, _ce_ref(X, Y, weight, -100, reduction, ls), rtol=1e-12, atol=1e-13)


def test_cross_entropy_ignore_index_may_be_a_class_and_all_ignored_is_nan():
    y = np.array([1, 1, 0, 2, 1, 3])
    got = nn.CrossEntropyLoss(weight=_t(W), ignore_index=1)(_t(X), gd.Tensor(y)).asnumpy()
    np.testing.assert_allclose(got, _ce_ref(X, y, W, 1), rtol=1e-12)
    got = nn.CrossEntropyLoss(ignore_index=1, reduction="none")(_t(X), gd.Tensor(y)).asnumpy()
    assert got[0] == 0 and got[1] == 0 and got[4] == 0 and got[2] > 0
    allign = nn.CrossEntropyLoss()(_t(X[:2]), gd.Tensor(np.array([-100, -100])))
    assert np.isnan(allign.asnumpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probability_targets_with_weight_and_smoothing(reduction):
    p = np.exp(_log_softmax(RNG.normal(size=(6, 4))))
    loss = nn.CrossEntropyLoss(weight=_t(W), reduction=reduction, label_smoothing=0.3)
    np.testing.assert_allclose(loss(_t(X), _t(p)).asnumpy(), _ce_prob_ref(X, p, W, reduction, 0.3), rtol=1e-12)


def test_cross_entropy_spatial_logits_weighted_mean():
    """(N, C, d) logits: the weighted mean runs over every (n, d) position."""
    x = RNG.normal(size=(2, 4, 3))
    y = np.array([[0, 3, -100], [2, 2, 1]])
    got = nn.CrossEntropyLoss(weight=_t(W), label_smoothing=0.1)(_t(x), gd.Tensor(y)).asnumpy()
    flat_x, flat_y = np.moveaxis(x, 1, -1).reshape(-1, 4), y.reshape(-1)
    np.testing.assert_allclose(got, _ce_ref(flat_x, flat_y, W, -100, "mean", 0.1), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, W])
def test_nll_loss_matches_numpy(reduction, weight):
    logp = _log_softmax(X)
    loss = nn.NLLLoss(weight=None if weight is None else _t(weight), reduction=reduction)
    got = loss(_t(logp), gd.Tensor(Y)).asnumpy()
    np.testing.assert_allclose(got, _nll_ref(logp, Y, weight, -100, reduction), rtol=1e-12, atol=1e-13)
    # NLLLoss of log_softmax is CrossEntropyLoss
    ce = nn.CrossEntropyLoss(weight=None if weight is None else _t(weight), reduction=reduction)(_t(X), gd.Tensor(Y))
    np.testing.assert_allclose(got, ce.asnumpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_numpy_with_zero_targets(reduction, log_target):
    x = _log_softmax(RNG.normal(size=(3, 5)))
    t = np.exp(_log_softmax(RNG.normal(size=(3, 5))))
    if log_target:
        t = np.log(t)
    else:
        t[0, 1] = 0.0  # xlogy: 0 there, not NaN
    got = nn.KLDivLoss(reduction, log_target=log_target)(_t(x), _t(t)).asnumpy()
    want = _kl_ref(x, t, reduction, log_target)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_loss_matches_numpy_and_clamps_the_logs(reduction):
    x = np.array([[0.0, 1e-50, 0.3, 1.0], [0.5, 0.999, 1.0 - 1e-12, 0.02]])
    y = np.array([[1.0, 1.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0]])
    w = np.array([1.0, 2.0, 0.5, 1.0])
    got = nn.BCELoss(weight=_t(w), reduction=reduction)(_t(x), _t(y)).asnumpy()
    np.testing.assert_allclose(got, _bce_ref(x, y, w, reduction), rtol=1e-12)
    # x = 0 with y = 1 and x = 1 with y = 0: the clamp's 100, finite
    assert nn.BCELoss(reduction="none")(_t([0.0, 1.0]), _t([1.0, 0.0])).asnumpy().tolist() == [100.0, 100.0]
    assert np.isnan(nn.BCELoss()(_t([1.5]), _t([1.0])).asnumpy())  # outside [0, 1]: NaN, not a number


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_smooth_l1_and_huber_match_numpy(reduction, beta):
    x, y = RNG.normal(size=(4, 5)), RNG.normal(size=(4, 5))
    np.testing.assert_allclose(nn.SmoothL1Loss(beta, reduction)(_t(x), _t(y)).asnumpy(),
                               _smooth_l1_ref(x, y, beta, reduction), rtol=1e-13)
    np.testing.assert_allclose(nn.HuberLoss(reduction, beta)(_t(x), _t(y)).asnumpy(),
                               _huber_ref(x, y, reduction, beta), rtol=1e-13)
    # Huber = delta * SmoothL1 with beta = delta
    np.testing.assert_allclose(nn.HuberLoss("none", beta)(_t(x), _t(y)).asnumpy(),
                               beta * nn.SmoothL1Loss(beta)(_t(x), _t(y)).asnumpy(), rtol=1e-13)


def test_defaults_follow_mindspore():
    assert nn.SmoothL1Loss().reduction == "none" and nn.SmoothL1Loss().beta == 1.0
    assert nn.HuberLoss().reduction == "mean" and nn.HuberLoss().delta == 1.0
    ce = nn.CrossEntropyLoss()
    assert (ce.weight, ce.ignore_index, ce.reduction, ce.label_smoothing) == (None, -100, "mean", 0.0)
    assert nn.NLLLoss().ignore_index == -100 and nn.KLDivLoss().reduction == "mean"


# ---------------------------------------------------------------- gradients: central differences

def _check_grad(loss_of, x, rtol=1e-6, atol=1e-8):
    g = gd.grad(lambda a: loss_of(a))(_t(x)).asnumpy()
    fd = fd_grad(lambda a: float(loss_of(_t(a)).asnumpy()), x)
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["ce", "ce_prob", "nll", "kl", "kl_log", "bce", "smooth_l1", "huber"])
def test_loss_gradients_match_central_differences(name):
    y = gd.Tensor(Y)
    p = _t(np.exp(_log_softmax(RNG.normal(size=(6, 4)))))
    xs = RNG.normal(size=(6, 4))
    probs = 1 / (1 + np.exp(-xs))
    target = RNG.uniform(size=(6, 4))
    # differences kept away from the kinks of SmoothL1/Huber (|d| = beta)
    d_far = np.where(np.abs(np.abs(xs) - 0.5) < 0.05, xs + 0.2, xs)
    cases = {
        "ce": (lambda a: nn.CrossEntropyLoss(weight=_t(W), label_smoothing=0.2)(a, y), X),
        "ce_prob": (lambda a: nn.CrossEntropyLoss(weight=_t(W), label_smoothing=0.1)(a, p), X),
        "nll": (lambda a: nn.NLLLoss(weight=_t(W), reduction="sum")(ops.log_softmax(a, -1), y), X),
        "kl": (lambda a: nn.KLDivLoss("batchmean")(ops.log_softmax(a, -1), p), X),
        "kl_log": (lambda a: nn.KLDivLoss("sum", log_target=True)(ops.log_softmax(a, -1), ops.log(p)), X),
        "bce": (lambda a: nn.BCELoss(weight=_t(W))(a, _t(target)), probs),
        "smooth_l1": (lambda a: nn.SmoothL1Loss(0.5, "sum")(a, _t(np.zeros((6, 4)))), d_far),
        "huber": (lambda a: nn.HuberLoss("mean", 0.5)(a, _t(np.zeros((6, 4)))), d_far),
    }
    fn, x = cases[name]
    _check_grad(fn, x)


def test_kl_div_gradient_in_the_target_is_finite_at_zero():
    x = _t(_log_softmax(RNG.normal(size=(2, 3))))
    t = np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]])
    g = gd.grad(lambda b: nn.KLDivLoss("sum")(x, b))(_t(t)).asnumpy()
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[1], np.log(t[1]) + 1 - x.asnumpy()[1], rtol=1e-12)


def test_bce_gradient_where_the_log_is_clamped_is_zero_not_nan():
    g = gd.grad(lambda a: nn.BCELoss(reduction="sum")(a, _t([0.0, 1.0, 1.0, 0.0])))(_t([0.0, 0.0, 0.5, 1.0]))
    # d/dx -log1p(-x) = 1 at 0; -log(x) clamped at x = 0 (and -log1p(-x) at 1): 0; -1/x = -2 at 0.5
    np.testing.assert_array_equal(g.asnumpy(), [1.0, 0.0, -2.0, 0.0])



def test_bce_gradient_where_the_log_is_below_its_clamp_is_zero_not_nan():
    """Where log(x) is below -100 for a positive x (a float64 subnormal, 1e-320), its derivative
    1/x overflowed to inf and 0 * inf made the gradient NaN (found by a helper's trial); the
    clamp's zero derivative now applies there too, on both backends, and the loss is torch's
    (each such term 100). Just above the clamp (1e-43, log -99.0) the derivative is -1/x."""
    p = _t([1e-320, 1e-50, 1e-43, 0.3])
    t = _t([1.0, 1.0, 1.0, 1.0])
    loss, g = both_backends(lambda a: gd.value_and_grad(lambda b: nn.BCELoss(reduction="sum")(b, t))(a), p)
    np.testing.assert_allclose(loss, 200.0 - np.log(1e-43) - np.log(0.3), rtol=1e-15)
    np.testing.assert_allclose(g, [0.0, 0.0, -1e43, -1 / 0.3], rtol=1e-15)


# ---------------------------------------------------------------- compiled vs interpreted

def test_losses_compiled_match_interpreter():
    x32 = RNG.normal(size=(6, 4)).astype(np.float32)
    p = np.exp(_log_softmax(RNG.normal(size=(6, 4)))).astype(np.float32)
    losses = [nn.CrossEntropyLoss(weight=_t(W, np.float32), label_smoothing=0.1),
              nn.NLLLoss(weight=_t(W, np.float32), ignore_index=3, reduction="none"),
              nn.KLDivLoss("batchmean"), nn.BCELoss(reduction="none"), nn.SmoothL1Loss(0.5), nn.HuberLoss("sum", 2.0)]

    def f(a, y, q):
        logp = ops.log_softmax(a, -1)
        outs = [losses[0](a, y), losses[1](logp, y), losses[2](logp, q), losses[3](ops.sigmoid(a), q),
                losses[4](a, q), losses[5](a, q)]
        g = gd.grad(lambda b: losses[0](b, y) + losses[2](ops.log_softmax(b, -1), q) +
                    ops.sum(losses[3](ops.sigmoid(b), q)))(a)
        return outs + [g]

    both_backends(gd.jit(f), _t(x32, np.float32), gd.Tensor(Y), _t(p, np.float32), rtol=2e-5, atol=2e-6)


# ---------------------------------------------------------------- argument checks

def test_loss_argument_checks_name_the_loss_and_the_value():
    with pytest.raises(GraphadError, match=r"SmoothL1Loss: beta .* got -1"):
        nn.SmoothL1Loss(-1.0)
    with pytest.raises(GraphadError, match=r"HuberLoss: delta .* got nan"):
        nn.HuberLoss(delta=float("nan"))
    with pytest.raises(GraphadError, match=r"KLDivLoss: reduction .* got 'avg'"):
        nn.KLDivLoss("avg")
    with pytest.raises(GraphadError, match=r"HuberLoss: reduction .*'batchmean'"):
        nn.HuberLoss("batchmean")
    with pytest.raises(GraphadError, match=r"CrossEntropyLoss: label_smoothing .* got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(GraphadError, match=r"NLLLoss: weight .*'sum'.*reduction= by keyword"):
        nn.NLLLoss("sum")
    with pytest.raises(GraphadError, match=r"CrossEntropyLoss: weight .*'sum'.*reduction= by keyword"):
        nn.CrossEntropyLoss("sum", reduction="none")
    # graphad's earlier CrossEntropyLoss(reduction) still works: a weight is never a string
    assert nn.CrossEntropyLoss("sum").reduction == "sum" and nn.CrossEntropyLoss("sum").weight is None
    with pytest.raises(GraphadError, match=r"NLLLoss: weight must be a 1-D"):
        nn.NLLLoss(weight=_t(np.ones((2, 2))))
    with pytest.raises(GraphadError, match=r"NLLLoss: ignore_index must be an int, got 1.5"):
        nn.NLLLoss(ignore_index=1.5)
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss: weight of shape \(3,\) for 4 classes"):
        nn.CrossEntropyLoss(weight=_t([1.0, 2.0, 3.0]))(_t(X), gd.Tensor(Y))
    with pytest.raises(GraphadError, match=r"NLLLoss: 1 label\(s\) outside \[0, 4\).* e.g. 7"):
        nn.NLLLoss()(_t(X), gd.Tensor(np.array([0, 1, 2, 3, 7, -100])))
    with pytest.raises(GraphadError, match=r"NLLLoss: labels must be integer"):
        nn.NLLLoss()(_t(X), _t(X))
    with pytest.raises(ShapeError, match=r"NLLLoss: input of shape \(6, 4\).*got \(5,\)"):
        nn.NLLLoss()(_t(X), gd.Tensor(Y[:5]))


def test_a_label_without_a_class_is_nan_inside_a_trace():
    f = gd.jit(lambda a, y: nn.CrossEntropyLoss(reduction="none")(a, y))
    got = f(_t(X), gd.Tensor(np.array([0, 1, 9, -100, 2, 3]))).asnumpy()
    assert np.isnan(got[2]) and got[3] == 0 and np.all(np.isfinite(np.delete(got, 2)))


# ---------------------------------------------------------------- PyTorch, when installed

def test_losses_match_pytorch(torch):
    F = torch.nn
    tx, ty, tw = torch.tensor(X), torch.tensor(Y), torch.tensor(W)
    p = np.exp(_log_softmax(RNG.normal(size=(6, 4))))
    tp = torch.tensor(p)
    for red in ("mean", "sum", "none"):
        for ls in (0.0, 0.25):
            want = F.CrossEntropyLoss(weight=tw, reduction=red, label_smoothing=ls)(tx, ty).numpy()
            got = nn.CrossEntropyLoss(weight=_t(W), reduction=red, label_smoothing=ls)(_t(X), gd.Tensor(Y))
            np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-12, atol=1e-14)
            want = F.CrossEntropyLoss(weight=tw, reduction=red, label_smoothing=ls)(tx, tp).numpy()
            got = nn.CrossEntropyLoss(weight=_t(W), reduction=red, label_smoothing=ls)(_t(X), _t(p))
            np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-12, atol=1e-14)
        logp = torch.log_softmax(tx, 1)
        y0 = np.where(Y == -100, 0, Y)  # class 3 ignored, -100 is no class here
        want = F.NLLLoss(weight=tw, ignore_index=3, reduction=red)(logp, torch.tensor(y0)).numpy()
        got = nn.NLLLoss(weight=_t(W), ignore_index=3, reduction=red)(_t(logp.numpy()), gd.Tensor(y0))
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-12, atol=1e-14)
        x, y = RNG.normal(size=(4, 5)), RNG.normal(size=(4, 5))
        np.testing.assert_allclose(nn.SmoothL1Loss(0.7, red)(_t(x), _t(y)).asnumpy(),
                                   F.SmoothL1Loss(reduction=red, beta=0.7)(torch.tensor(x), torch.tensor(y)).numpy(),
                                   rtol=1e-13)
        np.testing.assert_allclose(nn.HuberLoss(red, 0.7)(_t(x), _t(y)).asnumpy(),
                                   F.HuberLoss(reduction=red, delta=0.7)(torch.tensor(x), torch.tensor(y)).numpy(),
                                   rtol=1e-13)
        probs = np.array([[0.0, 1e-60, 0.3], [1.0, 0.7, 1 - 1e-17]])
        tgt = np.array([[1.0, 1.0, 0.2], [0.0, 0.4, 1.0]])
        np.testing.assert_allclose(nn.BCELoss(_t([1.0, 2.0, 0.5]), red)(_t(probs), _t(tgt)).asnumpy(),
                                   F.BCELoss(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), reduction=red)(
                                       torch.tensor(probs), torch.tensor(tgt)).numpy(), rtol=1e-12)
    t = p.copy()
    t[1, 2] = 0.0
    for red in ("mean", "batchmean", "sum", "none"):
        for lt in (False, True):
            tt = np.log(p) if lt else t
            want = F.KLDivLoss(reduction=red, log_target=lt)(torch.log_softmax(tx, 1), torch.tensor(tt)).numpy()
            got = nn.KLDivLoss(red, log_target=lt)(_t(torch.log_softmax(tx, 1).numpy()), _t(tt))
            np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-12, atol=1e-15)


def test_cross_entropy_gradient_matches_pytorch(torch):
    tx = torch.tensor(X, requires_grad=True)
    torch.nn.CrossEntropyLoss(weight=torch.tensor(W), label_smoothing=0.2)(tx, torch.tensor(Y)).backward()
    g = gd.grad(lambda a: nn.CrossEntropyLoss(weight=_t(W), label_smoothing=0.2)(a, gd.Tensor(Y)))(_t(X))
    np.testing.assert_allclose(g.asnumpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
