"""nn.RMSProp and nn.Adagrad (MindSpore's update rules) and Adam/AdamW's amsgrad.

Oracles: the update rules written out in NumPy float64 (MindSpore's ApplyRMSProp /
ApplyCenteredRMSProp / ApplyAdagrad formulas, PyTorch's amsgrad), the eager (interpreted) step
for the compiled one, a checkpoint round trip that must resume bit for bit, and torch.optim's
Adam/AdamW(amsgrad=True) where PyTorch is installed (the `torch` fixture: CI has no torch).
"""
import numpy as np
import pytest

import graphad as gd
from graphad import nn
from graphad.errors import GraphadError

F32, F64 = np.float32, np.float64


@pytest.fixture
def torch():
    """PyTorch, the oracle of the tests that compare with it (not in the tests' extra)."""
    return pytest.importorskip("torch")


def _t(a, dtype=F32):
    return gd.Tensor(np.asarray(a, dtype))


def _rmsprop_ref(init, grads_seq, lr, decay=0.9, momentum=0.0, epsilon=1e-10, centered=False, loss_scale=1.0,
                 weight_decay=0.0):
    out = []
    for k, p0 in enumerate(init):
        p = p0.astype(F64).copy()
        ms, mom, mg = np.ones_like(p), np.zeros_like(p), np.zeros_like(p)
        for grads in grads_seq:
            g = (grads[k] + weight_decay * p) / loss_scale
            ms = decay * ms + (1 - decay) * g * g
            if centered:
                mg = decay * mg + (1 - decay) * g
                den = np.sqrt(ms - mg * mg + epsilon)
            else:
                den = np.sqrt(ms + epsilon)
            mom = momentum * mom + lr * g / den
            p = p - mom
        out.append(p)
    return out


def _adagrad_ref(init, grads_seq, lr, accum=0.1, update_slots=True, loss_scale=1.0, weight_decay=0.0):
    out = []
    for k, p0 in enumerate(init):
        p = p0.astype(F64).copy()
        acc = np.full_like(p, accum)
        for grads in grads_seq:
            g = (grads[k] + weight_decay * p) / loss_scale
            if update_slots:
                acc = acc + g * g
            p = p - lr * g / np.sqrt(acc)
        out.append(p)
    return out


def _amsgrad_ref(init, grads_seq, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    out = []
    for k, p0 in enumerate(init):
        p = p0.astype(F64).copy()
        m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        for t, grads in enumerate(grads_seq, 1):
            g = grads[k]
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            vmax = np.maximum(vmax, v)
            p = p - lr * (m / (1 - beta1 ** t)) / (np.sqrt(vmax / (1 - beta2 ** t)) + eps)
        out.append(p)
    return out


CASES = [
    ("rmsprop", nn.RMSProp, dict()),
    ("rmsprop", nn.RMSProp, dict(decay=0.8, momentum=0.9, epsilon=1e-6, weight_decay=0.01)),
    ("rmsprop", nn.RMSProp, dict(centered=True, momentum=0.5, loss_scale=4.0)),
    ("adagrad", nn.Adagrad, dict()),
    ("adagrad", nn.Adagrad, dict(accum=0.5, weight_decay=0.1, loss_scale=2.0)),
    ("adagrad", nn.Adagrad, dict(update_slots=False)),
    ("amsgrad", nn.Adam, dict(amsgrad=True)),
    ("amsgrad", nn.Adam, dict(amsgrad=True, beta1=0.5, beta2=0.9, weight_decay=0.05)),
    ("amsgrad", nn.AdamW, dict(amsgrad=True, weight_decay=0.1)),
]


def _reference(kind, init, grads_seq, lr, cls, kw):
    kw = dict(kw)
    if kind == "rmsprop":
        return _rmsprop_ref(init, grads_seq, lr, **kw)
    if kind == "adagrad":
        return _adagrad_ref(init, grads_seq, lr, **kw)
    kw.pop("amsgrad")
    if cls is nn.AdamW:
        return _amsgrad_ref(init, grads_seq, lr, decoupled=True, **kw)
    return _amsgrad_ref(init, grads_seq, lr, **kw)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("kind,cls,kw", CASES)
def test_optimizer_matches_its_update_rule(kind, cls, kw, compiled, tvm):
    rng = np.random.default_rng(5)
    init = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    params = [gd.Parameter(a.astype(F32), name=f"p{i}") for i, a in enumerate(init)]
    lr = 0.05
    opt = cls(params, learning_rate=lr, **kw)
    # growing gradients, then shrinking ones: amsgrad's maximum differs from v
    scales = [1.0, 3.0, 0.2, 0.1, 2.0, 0.05]
    grads_seq = [[s * rng.normal(size=a.shape) for a in init] for s in scales]
    apply = gd.jit(lambda gs: opt(gs)) if compiled else opt
    for grads in grads_seq:
        apply([_t(g) for g in grads])
    want = _reference(kind, init, grads_seq, lr, cls, kw)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.asnumpy(), w, rtol=2e-5, atol=2e-6)
    assert int(opt.global_step.asnumpy()) == len(scales)


def test_amsgrad_differs_from_adam_once_v_shrinks():
    """The test above can fail: with shrinking gradients the maximum of v is not v."""
    init = np.array([1.0, -2.0])
    seq = [[np.array([3.0, 1.0])], [np.array([0.01, 0.02])], [np.array([0.01, -0.02])]]
    out = {}
    for ams in (False, True):
        p = gd.Parameter(init.copy(), name="p")
        opt = nn.Adam([p], 0.1, beta2=0.5, amsgrad=ams)
        for g in seq:
            opt([_t(g[0], F64)])
        out[ams] = p.asnumpy()
    np.testing.assert_allclose(out[True], _amsgrad_ref([init], seq, 0.1, beta2=0.5)[0], rtol=1e-13)
    assert np.abs(out[True] - out[False]).max() > 1e-3


def test_state_names_follow_mindspore():
    p = gd.Parameter(np.zeros(2, F32), name="w")
    names = lambda opt: sorted(n for n, _ in opt.parameters_and_names())  # noqa: E731
    assert names(nn.RMSProp([p], centered=True)) == ["global_step", "mean_grad.w", "mean_square.w", "moment.w"]
    assert names(nn.Adagrad([p])) == ["accum.w", "global_step"]
    assert names(nn.Adam([p], amsgrad=True)) == ["global_step", "moment1.w", "moment2.w", "vhat.w"]
    np.testing.assert_array_equal(nn.RMSProp([p]).mean_square_0.asnumpy(), [1.0, 1.0])  # ones, as MindSpore's
    np.testing.assert_array_equal(nn.Adagrad([p], accum=0.25).accum_0.asnumpy(), [0.25, 0.25])


def test_a_frozen_parameter_and_its_state_stay_unchanged():
    a = gd.Parameter(np.ones(2, F32), name="a")
    b = gd.Parameter(np.ones(2, F32), name="b", requires_grad=False)
    for opt in (nn.RMSProp([a, b], 0.1, momentum=0.9, centered=True), nn.Adagrad([a, b], learning_rate=0.1)):
        opt([_t([1.0, 2.0]), _t([1.0, 2.0])])
        assert (b.asnumpy() == 1).all() and (a.asnumpy() != 1).all()
        for name, s in opt.parameters_and_names():
            if name.endswith(".b"):
                assert (s.asnumpy() == (1.0 if "mean_square" in name else 0.1 if "accum" in name else 0.0)).all()


def test_complex_parameter_is_trained_as_its_real_pair():
    """As torch.optim's view_as_real: the complex Parameter follows the two real Parameters."""
    z0 = np.array([1.0 + 2.0j, -0.5 + 0.1j])
    gz = [np.array([0.3 - 0.2j, 1.0 + 0.5j]), np.array([-0.1 + 0.4j, 0.2 - 0.3j])]
    for cls, kw in ((nn.RMSProp, dict(momentum=0.5, centered=True)), (nn.Adagrad, dict())):
        z = gd.Parameter(z0.copy(), name="z")
        x, y = gd.Parameter(z0.real.copy(), name="x"), gd.Parameter(z0.imag.copy(), name="y")
        oz, oxy = cls([z], 0.1, **kw) if cls is nn.RMSProp else cls([z], learning_rate=0.1), \
            cls([x, y], 0.1, **kw) if cls is nn.RMSProp else cls([x, y], learning_rate=0.1)
        for g in gz:  # graphad's gradient of a real loss is dL/dx - i dL/dy
            oz([_t(g, np.complex128)])
            oxy([_t(g.real, F64), _t(-g.imag, F64)])
        np.testing.assert_allclose(z.asnumpy().real, x.asnumpy(), rtol=1e-14)
        np.testing.assert_allclose(z.asnumpy().imag, y.asnumpy(), rtol=1e-14)


def test_optimizer_argument_checks():
    p = [gd.Parameter(np.zeros(2, F32), name="w")]
    for bad, msg in [(lambda: nn.RMSProp(p, decay=1.5), r"RMSProp: decay must be a finite float >= 0, <= 1, got 1.5"),
                     (lambda: nn.RMSProp(p, momentum=-0.1), r"RMSProp: momentum .* got -0.1"),
                     (lambda: nn.RMSProp(p, epsilon=0.0), r"RMSProp: epsilon must be a finite float > 0, got 0.0"),
                     (lambda: nn.RMSProp(p, centered=1), r"RMSProp: centered must be a bool, got 1"),
                     (lambda: nn.RMSProp(p, loss_scale=float("inf")), r"RMSProp: loss_scale .* got inf"),
                     (lambda: nn.RMSProp(p, weight_decay=-1.0), r"RMSProp: weight_decay .* got -1.0"),
                     (lambda: nn.Adagrad(p, accum=-0.1), r"Adagrad: accum must be a finite float >= 0, got -0.1"),
                     (lambda: nn.Adagrad(p, update_slots="yes"), r"Adagrad: update_slots must be a bool"),
                     (lambda: nn.Adagrad(p, learning_rate=float("nan")), r"Adagrad: learning_rate .* got nan"),
                     (lambda: nn.Adam(p, amsgrad="true"), r"Adam: amsgrad must be a bool, got 'true'"),
                     (lambda: nn.AdamW(p, amsgrad=None), r"AdamW: amsgrad must be a bool, got None")]:
        with pytest.raises(GraphadError, match=msg):
            bad()


class _Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(3, 5)
        self.fc2 = nn.Dense(5, 2)

    def construct(self, x):
        return self.fc2(nn.Tanh()(self.fc1(x)))


def _step(opt_cls, kw):
    gd.set_seed(11)
    net = _Net()
    params = net.trainable_params()
    opt = opt_cls(params, **kw)
    return nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)


@pytest.mark.parametrize("opt_cls,kw", [(nn.RMSProp, dict(learning_rate=0.01, momentum=0.9, centered=True)),
                                        (nn.Adagrad, dict(learning_rate=0.1)),
                                        (nn.Adam, dict(learning_rate=0.01, amsgrad=True))])
def test_checkpoint_resumes_bit_identically(opt_cls, kw, tmp_path, tvm):
    rng = np.random.default_rng(2)
    data = [(_t(rng.normal(size=(4, 3))), _t(rng.normal(size=(4, 2)))) for _ in range(6)]
    step = _step(opt_cls, kw)
    for x, y in data[:3]:
        step(x, y)
    path = str(tmp_path / "ck.safetensors")
    gd.save_checkpoint(step, path)
    for x, y in data[3:]:
        step(x, y)
    want = {n: p.asnumpy().copy() for n, p in step.parameters_and_names()}
    assert any("vhat" in n or "accum" in n or "mean_grad" in n for n in want)

    fresh = _step(opt_cls, kw)  # other initial values: everything comes from the file
    gd.load_checkpoint(path, fresh)
    for x, y in data[3:]:
        fresh(x, y)
    got = {n: p.asnumpy() for n, p in fresh.parameters_and_names()}
    assert got.keys() == want.keys()
    for n in want:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)


def test_amsgrad_matches_pytorch(torch):
    rng = np.random.default_rng(9)
    init = rng.normal(size=(3, 4))
    grads = [s * rng.normal(size=(3, 4)) for s in (1.0, 5.0, 0.1, 0.3, 2.0)]
    for cls, tcls, kw in ((nn.Adam, torch.optim.Adam, dict(weight_decay=0.02)),
                          (nn.AdamW, torch.optim.AdamW, dict(weight_decay=0.1))):
        p = gd.Parameter(init.astype(F32), name="p")
        opt = cls([p], 0.01, amsgrad=True, **kw)
        tp = torch.nn.Parameter(torch.tensor(init.astype(F32)))
        topt = tcls([tp], lr=0.01, amsgrad=True, **kw)
        for g in grads:
            opt([_t(g)])
            tp.grad = torch.tensor(g.astype(F32))
            topt.step()
        np.testing.assert_allclose(p.asnumpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_rmsprop_is_not_pytorchs_and_says_so(torch):
    """The documented differences are real: with PyTorch's hyperparameters the trajectories differ
    (mean square starting at ones, epsilon inside the root); with s0 = 0, eps -> 0 they meet."""
    init = np.array([1.0, -1.0])
    grads = [np.array([0.5, -2.0]), np.array([0.1, 0.3])]
    p = gd.Parameter(init.copy(), name="p")
    opt = nn.RMSProp([p], 0.01, decay=0.99, epsilon=1e-30)
    tp = torch.nn.Parameter(torch.tensor(init))
    topt = torch.optim.RMSprop([tp], lr=0.01, alpha=0.99, eps=1e-30)
    opt.mean_square_0.set_data(np.zeros(2))  # PyTorch's square_avg starts at 0
    for g in grads:
        opt([_t(g, F64)])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p.asnumpy(), tp.detach().numpy(), rtol=1e-12)
    q = gd.Parameter(init.copy(), name="q")
    nn.RMSProp([q], 0.01, decay=0.99, epsilon=1e-30)([_t(grads[0], F64)])
    # the first step from s0 = 1 is lr * g / sqrt(0.99 + 0.01 g^2), not PyTorch's lr * g / |0.1 g| = 0.1
    g0 = grads[0]
    np.testing.assert_allclose(q.asnumpy() - init, -0.01 * g0 / np.sqrt(0.99 + 0.01 * g0 * g0), rtol=1e-12)
    assert np.abs(q.asnumpy() - init).max() < 0.05
