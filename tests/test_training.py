"""Graph-mode training: functionalized Parameter assignment, optimizers, train-step cells.

Oracles: the same step run eagerly (reference kernels, in-place updates), and the optimizers'
published update rules written out in NumPy float64 (and PyTorch's optimizers when installed).
"""
import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import GraphadError, TraceError

F32 = np.float32


@pytest.fixture(params=["tvm", "numpy"])
def backend(request):
    """Compiled (TVM) and the reference interpreter (the test session's default is the latter)."""
    gd.set_backend(request.param)
    yield request.param
    gd.set_backend("numpy")


def _t(a, dtype=F32):
    return gd.Tensor(np.asarray(a, dtype))


# ---------------------------------------------------------------- functionalized assignment

def test_set_data_in_jit_updates_the_parameter_after_each_call(backend):
    p = gd.Parameter(np.array([1.0, 2.0], F32), name="w")
    count = gd.Parameter(np.array(0, np.int32), name="count", requires_grad=False)

    def step(x):
        p.set_data(p * 2 + x)
        count.set_data(count + 1)
        return ops.sum(p)  # read after the assignment: the new value

    f = gd.jit(step)
    want = np.array([1.0, 2.0])
    for i in range(4):  # the first call stages, the next ones take the cached fast path
        got = f(_t([1.0, 1.0]))
        want = want * 2 + 1
        assert float(got.asnumpy()) == want.sum()
        np.testing.assert_array_equal(p.asnumpy(), want)
        assert int(count.asnumpy()) == i + 1


def test_assignment_order_and_reads_follow_python(backend):
    a = gd.Parameter(np.array([1.0], F32), name="a")
    b = gd.Parameter(np.array([10.0], F32), name="b")

    def step():
        old_a = a + 0.0
        ops.assign(a, b)          # a := b
        ops.assign(b, old_a)      # b := old a: a swap
        ops.assign_add(a, 1.0)    # a := a + 1 reads the assigned value
        return a * 1.0, b * 1.0

    f = gd.jit(step)
    ra, rb = f()
    assert float(ra.asnumpy()[0]) == 11.0 and float(rb.asnumpy()[0]) == 1.0
    assert float(a.asnumpy()[0]) == 11.0 and float(b.asnumpy()[0]) == 1.0
    f()
    assert float(a.asnumpy()[0]) == 2.0 and float(b.asnumpy()[0]) == 11.0


def test_a_function_returning_nothing_still_updates(backend):
    p = gd.Parameter(np.zeros(3, F32), name="p")

    def accumulate(x):
        ops.assign_add(p, x)

    f = gd.jit(accumulate)
    for _ in range(3):
        assert f(_t([1.0, 2.0, 3.0])) is None
    np.testing.assert_array_equal(p.asnumpy(), [3.0, 6.0, 9.0])


def test_assignment_inside_value_and_grad_is_carried_out(backend):
    # a BatchNorm-like statistic updated in the forward pass of the differentiated function
    w = gd.Parameter(np.array([1.0, 2.0], F32), name="w")
    stat = gd.Parameter(np.zeros(2, F32), name="stat", requires_grad=False)

    def loss(x):
        ops.assign(stat, 0.5 * stat + 0.5 * x)
        return ops.sum(w * w * x)

    vg = gd.value_and_grad(loss, None, weights=[w])

    def train(x):
        value, (g,) = vg(x)
        w.set_data(w - 0.1 * g)
        return value

    f = gd.jit(train)
    x = np.array([1.0, 3.0])
    w_ref, s_ref = np.array([1.0, 2.0]), np.zeros(2)
    for _ in range(3):
        value = f(_t(x))
        assert np.isclose(float(value.asnumpy()), np.sum(w_ref ** 2 * x))
        w_ref = w_ref - 0.1 * 2 * w_ref * x
        s_ref = 0.5 * s_ref + 0.5 * x
        np.testing.assert_allclose(w.asnumpy(), w_ref, rtol=1e-6)
        np.testing.assert_allclose(stat.asnumpy(), s_ref, rtol=1e-6)
    # eagerly (no jit) the same function updates the same way
    g = gd.grad(loss, None, weights=w)(_t(x))
    np.testing.assert_allclose(g.asnumpy(), 2 * w_ref * x, rtol=1e-6)
    np.testing.assert_allclose(stat.asnumpy(), 0.5 * s_ref + 0.5 * x, rtol=1e-6)


def test_transformations_without_state_refuse_an_assignment():
    p = gd.Parameter(np.zeros(2, F32), name="acc")

    def f(x):
        ops.assign_add(p, x)
        return x * 2.0

    for transform, arg in ((gd.vmap(f), np.ones((3, 2))), (gd.jacrev(f), np.ones(2)), (gd.jacfwd(f), np.ones(2))):
        with pytest.raises(TraceError, match=r"'acc' is assigned .*test_training.py:\d+ inside (vmap|jacrev|jacfwd)"):
            transform(_t(arg))
    np.testing.assert_array_equal(p.asnumpy(), [0.0, 0.0])  # nothing was half-applied


def test_an_assigning_function_cannot_be_saved(tmp_path, tvm):
    p = gd.Parameter(np.zeros(2, F32), name="acc")
    compiled = gd.jit(lambda x: ops.assign_add(p, x) * 1.0).lower(gd.TensorSpec((2,))).compile()
    compiled(_t([1.0, 1.0]))
    np.testing.assert_array_equal(p.asnumpy(), [1.0, 1.0])
    with pytest.raises(GraphadError, match="assigns Parameters \\('acc'\\)"):
        compiled.save(str(tmp_path / "f.gdx"))


def test_assign_checks_its_operands():
    p = gd.Parameter(np.zeros((2, 3), F32), name="p")
    with pytest.raises(GraphadError, match="must be a Parameter"):
        ops.assign(_t([1.0]), 2.0)
    with pytest.raises(GraphadError):
        gd.jit(lambda x: ops.assign(p, x) * 1.0)(_t(np.ones(4)))
    ops.assign(p, 2.0)  # a scalar broadcasts
    np.testing.assert_array_equal(p.asnumpy(), np.full((2, 3), 2.0))


# ---------------------------------------------------------------- optimizers vs their formulas

def _reference(kind, params, grads_seq, lr, **kw):
    """The update rules written out in float64 (module docstring of graphad/nn/optim.py)."""
    ps = [np.asarray(p, np.float64).copy() for p in params]
    state = [dict(m=np.zeros_like(p), v=np.zeros_like(p)) for p in ps]
    wd = kw.get("weight_decay", 0.0)
    for t, grads in enumerate(grads_seq, start=1):
        rate = lr(t - 1) if callable(lr) else lr  # a schedule sees the counter before the step (MindSpore)
        for p, g, s in zip(ps, grads, state):
            g = np.asarray(g, np.float64)
            if kind == "sgd":
                g = g + wd * p
                mom = kw.get("momentum", 0.0)
                if mom:
                    s["m"] = mom * s["m"] + (1 - kw.get("dampening", 0.0)) * g
                    g = g + mom * s["m"] if kw.get("nesterov") else s["m"]
                p -= rate * g
            else:
                b1, b2, eps = kw.get("beta1", 0.9), kw.get("beta2", 0.999), kw.get("eps", 1e-8)
                if kind == "adam":
                    g = g + wd * p
                else:
                    p *= 1 - rate * wd
                s["m"] = b1 * s["m"] + (1 - b1) * g
                s["v"] = b2 * s["v"] + (1 - b2) * g * g
                p -= rate * (s["m"] / (1 - b1 ** t)) / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps)
    return ps


OPTIMIZERS = [
    ("sgd", nn.SGD, dict()),
    ("sgd", nn.SGD, dict(momentum=0.9, weight_decay=0.01)),
    ("sgd", nn.SGD, dict(momentum=0.8, nesterov=True)),
    ("sgd", nn.SGD, dict(momentum=0.5, dampening=0.3)),
    ("adam", nn.Adam, dict()),
    ("adam", nn.Adam, dict(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05)),
    ("adamw", nn.AdamW, dict(weight_decay=0.1)),
]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("kind,cls,kw", OPTIMIZERS)
def test_optimizer_matches_its_update_rule(kind, cls, kw, compiled, tvm):
    rng = np.random.default_rng(3)
    init = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    params = [gd.Parameter(a.astype(F32), name=f"p{i}") for i, a in enumerate(init)]
    opt = cls(params, 0.05, **kw)
    grads_seq = [[rng.normal(size=a.shape) for a in init] for _ in range(5)]
    apply = gd.jit(lambda gs: opt(gs)) if compiled else opt
    for grads in grads_seq:
        apply([_t(g) for g in grads])
    want = _reference(kind, init, grads_seq, 0.05, **kw)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.asnumpy(), w, rtol=2e-5, atol=2e-6)
    assert int(opt.global_step.asnumpy()) == 5


def test_learning_rate_schedules(backend):
    p = gd.Parameter(np.ones(2, F32), name="p")
    sched = nn.ExponentialDecayLR(0.1, 0.5, 2)
    opt = nn.SGD([p], sched)
    step = gd.jit(lambda g: opt([g]))
    for _ in range(4):
        step(_t([1.0, 1.0]))
    want = _reference("sgd", [np.ones(2)], [[np.ones(2)]] * 4, lambda t: 0.1 * 0.5 ** (t / 2))
    np.testing.assert_allclose(p.asnumpy(), want[0], rtol=1e-6)
    cos = nn.CosineDecayLR(0.01, 0.1, 10)
    got = [float(cos(gd.Tensor(np.array(s, np.int32))).asnumpy()) for s in (0, 5, 10, 20)]
    np.testing.assert_allclose(got, [0.1, 0.055, 0.01, 0.01], rtol=1e-6)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_schedule_sees_the_counter_before_the_step(compiled):
    """As MindSpore's Optimizer.get_lr (the schedule, then assignadd of global_step): the first
    step's rate is the schedule's at 0. A rate equal to the counter, 3 steps of gradient 1: p
    moves by 0 + 1 + 2."""
    p = gd.Parameter(np.zeros(2, F32), name="p")
    opt = nn.SGD([p], lambda step: ops.astype(step, "float32"))
    apply = gd.jit(lambda g: opt([g])) if compiled else opt
    for _ in range(3):
        apply([_t([1.0, 1.0])] if not compiled else _t([1.0, 1.0]))
    np.testing.assert_array_equal(p.asnumpy(), [-3.0, -3.0])
    assert int(opt.global_step.asnumpy()) == 3


def test_a_learning_rate_parameter_is_read_at_every_step():
    """A Parameter learning rate is kept as the Parameter (MindSpore's rates are Parameters): a
    compiled step reads its current value, so set_data changes the rate (a Tensor's value was
    frozen into a float when the optimizer was made)."""
    p = gd.Parameter(np.ones(2, F32), name="p")
    lr = gd.Parameter(np.array(0.1, F32), name="lr", requires_grad=False)
    opt = nn.SGD([p], lr)
    step = gd.jit(lambda g: opt([g]))
    step(_t([1.0, 1.0]))
    lr.set_data(np.array(0.0, F32))
    step(_t([1.0, 1.0]))
    np.testing.assert_allclose(p.asnumpy(), [0.9, 0.9], rtol=1e-6)
    lr.set_data(np.array(0.5, F32))
    step(_t([1.0, 1.0]))
    np.testing.assert_allclose(p.asnumpy(), [0.4, 0.4], rtol=1e-6)
    with pytest.raises(GraphadError, match="learning-rate Parameter"):
        nn.SGD([p], gd.Parameter(np.array(-1.0, F32), name="bad"))


def test_optimizers_match_pytorch_when_installed(tvm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    init = rng.normal(size=(3, 3))
    grads_seq = [rng.normal(size=(3, 3)) for _ in range(6)]
    cases = [(nn.SGD, torch.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
             (nn.Adam, torch.optim.Adam, dict(weight_decay=0.01)),
             (nn.AdamW, torch.optim.AdamW, dict(weight_decay=0.1))]
    for ours, theirs, kw in cases:
        p = gd.Parameter(init.astype(F32), name="p")
        opt = ours([p], 0.01, **kw)
        tp = torch.nn.Parameter(torch.tensor(init, dtype=torch.float64))
        topt = theirs([tp], lr=0.01, **kw)
        step = gd.jit(lambda g: opt([g]))
        for g in grads_seq:
            step(_t(g))
            tp.grad = torch.tensor(g, dtype=torch.float64)
            topt.step()
        np.testing.assert_allclose(p.asnumpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=ours.__name__)


def test_optimizer_argument_checks():
    p = gd.Parameter(np.ones(2, F32), name="p")
    with pytest.raises(GraphadError, match="empty"):
        nn.SGD([], 0.1)
    with pytest.raises(GraphadError, match="int32"):
        nn.SGD([gd.Parameter(np.ones(2, np.int32), name="i")], 0.1)
    with pytest.raises(GraphadError, match="listed twice"):
        nn.Adam([p, p])
    with pytest.raises(GraphadError, match="nesterov"):
        nn.SGD([p], 0.1, nesterov=True)
    with pytest.raises(GraphadError, match="2 gradients for 1"):
        nn.SGD([p], 0.1)([_t([1.0, 1.0]), _t([1.0, 1.0])])


# ---------------------------------------------------------------- train-step cells

def _mlp():
    gd.set_seed(7)
    return nn.SequentialCell(nn.Dense(5, 16), nn.Tanh(), nn.Dense(16, 3))


def _data(n=64):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, 5)).astype(F32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return gd.Tensor(x), gd.Tensor(y)


@pytest.mark.parametrize("opt_cls", [nn.SGD, nn.Adam])
def test_train_one_step_compiled_equals_eager(opt_cls, tvm):
    x, y = _data()
    runs = []
    for jit in (True, False):
        net = _mlp()
        opt = opt_cls(net.trainable_params(), 0.05, **({"momentum": 0.9} if opt_cls is nn.SGD else {}))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt, jit=jit)
        losses = [float(step(x, y).asnumpy()) for _ in range(10)]
        runs.append((losses, [p.asnumpy().copy() for p in net.trainable_params()]))
    (lc, pc), (le, pe) = runs
    np.testing.assert_allclose(lc, le, rtol=1e-5)
    for a, b in zip(pc, pe):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert lc[-1] < lc[0] * 0.9


def test_train_cells_keep_the_model_names():
    net = _mlp()
    names = [p.name for p in net.trainable_params()]
    opt = nn.Adam(net.trainable_params())
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt)
    assert [p.name for p in net.trainable_params()] == names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    all_names = [n for n, _ in step.parameters_and_names()]
    assert all_names[:4] == names and "global_step" in all_names and "moment2.2.bias" in all_names
    assert all_names == [p.name for p in step.get_parameters()]
    assert len(set(all_names)) == len(all_names)


def test_train_step_loss_scaling(tvm):
    x, y = _data(16)
    finals = []
    for sens, lr in ((1.0, 0.1), (4.0, 0.025)):  # SGD: scaling the gradient by 4 = a 4x smaller rate
        net = _mlp()
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), nn.SGD(net.trainable_params(), lr),
                                   sens=sens)
        for _ in range(3):
            step(x, y)
        finals.append(net.trainable_params()[0].asnumpy().copy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_jit_of_a_cell_follows_set_train():
    # the mode is read when tracing: a jitted Cell used to keep the mode of its first trace (on the
    # interpreter: staging is the same for both backends, and Dropout's hash compiles slowly in TVM)
    drop = nn.Dropout(keep_prob=0.5, seed=1)
    bn = nn.BatchNorm2d(2)
    f = gd.jit(lambda a: drop(a))
    g = gd.jit(lambda a: bn(a))
    x = _t(np.ones(64))
    xb = _t(np.arange(16.0).reshape(2, 2, 2, 2) + 3.0)
    assert (f(x).asnumpy() == 0).any()
    g(xb)
    drop.set_train(False)
    bn.set_train(False)
    np.testing.assert_array_equal(f(x).asnumpy(), np.ones(64))
    mean, var = bn.moving_mean.asnumpy().copy(), bn.moving_variance.asnumpy().copy()
    out = g(xb).asnumpy()
    np.testing.assert_array_equal(bn.moving_mean.asnumpy(), mean)  # eval mode: no update
    want = (xb.asnumpy() - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    drop.set_train(True)
    assert (f(x).asnumpy() == 0).any()


def test_cross_entropy_refuses_labels_without_a_class():
    """An integer label outside [0, C) was a row of zeros that still counted in the mean: now a
    GraphadError for concrete labels and a NaN loss inside a compiled step (visible, not a
    plausible number)."""
    ce = nn.CrossEntropyLoss()
    logits = gd.Tensor(np.random.default_rng(0).normal(size=(4, 3)).astype(F32))
    bad = gd.Tensor(np.array([0, 1, 3, 0], np.int32))
    with pytest.raises(GraphadError, match=r"outside \[0, 3\)"):
        ce(logits, bad)
    assert np.isnan(float(gd.jit(lambda a, b: ce(a, b))(logits, bad).asnumpy()))
    good = gd.Tensor(np.array([0, 1, 2, -0], np.int32))
    lp = logits.asnumpy() - np.log(np.exp(logits.asnumpy()).sum(-1, keepdims=True))
    want = -lp[np.arange(4), good.asnumpy()].mean()
    for got in (ce(logits, good), gd.jit(lambda a, b: ce(a, b))(logits, good)):
        np.testing.assert_allclose(float(got.asnumpy()), want, rtol=1e-6)


# ---------------------------------------------------------------- gradient clipping

def _clip_ref(xs, clip_norm):
    norm = np.sqrt(sum(float(np.sum(np.abs(x) ** 2)) for x in xs))
    return [x * clip_norm / max(norm, clip_norm) for x in xs]


def test_clip_by_global_norm_matches_numpy(backend):
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(3, 2)), rng.normal(size=(4,)), np.array(2.5)]
    f = gd.jit(lambda a, b, c, n: ops.clip_by_global_norm((a, b, c), n))
    for clip in (0.5, 100.0):  # clipped, and left as it is
        got = f(*[_t(x, np.float64) for x in xs], _t(clip, np.float64))
        assert isinstance(got, tuple) and len(got) == 3
        for g, w in zip(got, _clip_ref(xs, clip)):
            np.testing.assert_allclose(g.asnumpy(), w, rtol=1e-13)
    z = np.array([3.0 + 4.0j, 0.0 + 12.0j])  # |z|^2 counts, not z^2: global norm 13
    got = ops.clip_by_global_norm([_t(z, np.complex128)], 1.3)[0]
    np.testing.assert_allclose(got.asnumpy(), z / 10, rtol=1e-14)
    one = ops.clip_by_global_norm(_t([3.0, 4.0], np.float64), 1.0, use_norm=_t(10.0, np.float64))
    np.testing.assert_allclose(one.asnumpy(), [0.3, 0.4], rtol=1e-15)  # a Tensor in, a Tensor out


def test_clip_by_global_norm_gradient_matches_central_differences():
    from backends import fd_grad
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    f = lambda a: ops.sum(ops.clip_by_global_norm((a, ops.sin(a)), 0.7)[1] * _t(w, np.float64))  # noqa: E731
    g = gd.grad(f)(_t(x, np.float64)).asnumpy()
    np.testing.assert_allclose(g, fd_grad(lambda a: float(f(_t(a, np.float64)).asnumpy()), x), rtol=1e-6, atol=1e-9)


def test_clip_by_global_norm_argument_checks():
    x = _t([1.0, 2.0])
    for bad, msg in [((x, 0.0), r"clip_by_global_norm: clip_norm must be a finite float > 0, got 0.0"),
                     ((x, float("inf")), r"clip_norm must be a finite float > 0, got inf"),
                     ((x, "1"), r"clip_norm must be a float > 0 or a scalar tensor, got '1'"),
                     (([], 1.0), r"clip_by_global_norm: x is an empty sequence")]:
        with pytest.raises(GraphadError, match=msg):
            ops.clip_by_global_norm(*bad)
    with pytest.raises(GraphadError, match=r"use_norm must be a scalar, got shape \(2,\)"):
        ops.clip_by_global_norm([x], 1.0, use_norm=x)


class _ClipStep(nn.TrainOneStepCell):
    """docs/training.md's pattern: clip the gradients before the update."""

    def construct(self, x, y):
        loss, grads = self.loss_and_grads(x, y)
        self.optimizer(ops.clip_by_global_norm(grads, 0.5))
        return loss


@pytest.mark.parametrize("jit", [True, False])
def test_a_train_step_with_clipped_gradients_matches_numpy(jit, tvm):
    rng = np.random.default_rng(8)
    w0, b0 = rng.normal(size=(2, 3)), rng.normal(size=(2,))
    net = nn.Dense(3, 2, weight_init=_t(w0, np.float64), bias_init=_t(b0, np.float64))
    step = _ClipStep(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1), jit=jit)
    w, b = w0.copy(), b0.copy()
    norms = []
    for _ in range(4):
        x, y = rng.normal(size=(5, 3)) * 3, rng.normal(size=(5, 2))
        loss = step(_t(x, np.float64), _t(y, np.float64))
        r = x @ w.T + b - y  # MSE's gradients in NumPy
        np.testing.assert_allclose(float(loss.asnumpy()), np.mean(r * r), rtol=1e-12)
        gw, gb = 2 * r.T @ x / r.size, 2 * r.sum(0) / r.size
        norms.append(np.sqrt(np.sum(gw * gw) + np.sum(gb * gb)))
        gw, gb = _clip_ref([gw, gb], 0.5)
        w, b = w - 0.1 * gw, b - 0.1 * gb
        np.testing.assert_allclose(net.weight.asnumpy(), w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(net.bias.asnumpy(), b, rtol=1e-12, atol=1e-14)
    assert max(norms) > 0.5  # some steps were clipped (the oracle's scale is not 1)
