"""Findings of an outside review of graphad.nn against PyTorch and MindSpore's documented contracts.

Each test failed before its fix: a compiled step that kept using a replaced submodule, Parameter
or setting; a frozen Parameter (requires_grad=False) still updated by the optimizers;
BatchNorm2d's use_batch_statistics=True not tracking the moving statistics in eval mode, and a
batch of one value per channel accepted; CrossEntropyLoss's (N, C, d1, ...) logits (classes along
axis 1) and its labels broadcast instead of refused; NaN/inf hyperparameters accepted; an
Embedding padding_idx outside the table an IndexError; Adam's bias corrections rounded in the
Parameter's type (float32 steps 50 epsilons off, bfloat16 Parameters never moving).
"""
import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import GraphadError, ShapeError

F64 = np.float64


@pytest.fixture
def torch():
    """PyTorch, the oracle of the tests that compare with it (the benchmarks' extra, not the tests'):
    only those tests skip without it."""
    return pytest.importorskip("torch")


@pytest.fixture(params=["tvm", "numpy"])
def backend(request):
    gd.set_backend(request.param)
    yield request.param
    gd.set_backend("numpy")


def _t(a, dtype=F64):
    return gd.Tensor(np.asarray(a, dtype))


# ---------------------------------------------------------------- stale compiled structure

class _Net(nn.Cell):
    def __init__(self, w):
        super().__init__()
        self.fc = nn.Dense(3, 2, weight_init=_t(np.full((2, 3), w)), bias_init=_t(np.zeros(2)))

    def construct(self, x):
        return self.fc(x)


def test_a_replaced_submodule_or_parameter_is_used_by_the_next_compiled_call(backend):
    """gd.jit of a cell kept running the graph traced with the old submodule (3 instead of 6):
    attributes are read while tracing, and assigning one did not make the function trace again."""
    net = _Net(1.0)
    f = gd.jit(net)
    x = _t(np.ones((1, 3)))
    np.testing.assert_array_equal(f(x).asnumpy(), [[3.0, 3.0]])
    net.fc = nn.Dense(3, 2, weight_init=_t(np.full((2, 3), 2.0)), bias_init=_t(np.zeros(2)))
    np.testing.assert_array_equal(f(x).asnumpy(), [[6.0, 6.0]])
    net.fc.weight = gd.Parameter(np.full((2, 3), 3.0), name="weight")
    np.testing.assert_array_equal(f(x).asnumpy(), [[9.0, 9.0]])
    assert [n for n, _ in net.parameters_and_names()] == ["fc.weight", "fc.bias"]


def test_changed_settings_reach_a_compiled_step():
    """A float learning rate, a loss's reduction and TrainOneStepCell's sens reassigned after the
    first compiled call were ignored (the traced constants stayed)."""
    p = gd.Parameter(np.ones(2), name="p")
    opt = nn.SGD([p], 0.1)
    apply = gd.jit(lambda g: opt([g]))
    apply(_t(np.ones(2)))
    opt.learning_rate = 1.0
    apply(_t(np.ones(2)))
    np.testing.assert_allclose(p.asnumpy(), [-0.1, -0.1], rtol=1e-15)

    loss = nn.MSELoss()
    f = gd.jit(lambda a, b: loss(a, b))
    a, b = _t(np.ones(3)), _t(np.zeros(3))
    assert float(f(a, b).asnumpy()) == 1.0
    loss.reduction = "sum"
    assert float(f(a, b).asnumpy()) == 3.0

    net = nn.Dense(1, 1, weight_init=_t([[1.0]]), has_bias=False)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1))
    step(_t([[1.0]]), _t([[0.0]]))   # w = 1 - 0.1 * 2 = 0.8
    step.sens = 2.0
    step(_t([[1.0]]), _t([[0.0]]))   # w = 0.8 - 0.1 * 2 * 2 * 0.8 = 0.48
    np.testing.assert_allclose(net.weight.asnumpy(), [[0.48]], rtol=1e-15)


def test_deleting_a_cell_attribute_unregisters_it():
    net = _Net(1.0)
    net.extra = nn.Dense(2, 2)
    del net.extra
    assert [n for n, _ in net.parameters_and_names()] == ["fc.weight", "fc.bias"]
    with pytest.raises(AttributeError):
        net.extra


# ---------------------------------------------------------------- frozen Parameters

def test_frozen_parameters_are_not_updated(backend):
    """A Parameter with requires_grad=False given to an optimizer was updated (its gradient
    taken anyway, weight decay applied); torch.optim leaves it alone. Freezing one after the
    step was compiled was ignored too."""
    for make in (lambda ps: nn.SGD(ps, 0.1, momentum=0.9, weight_decay=0.1),
                 lambda ps: nn.Adam(ps, 0.1, weight_decay=0.1), lambda ps: nn.AdamW(ps, 0.1)):
        net = nn.Dense(3, 2, weight_init=_t(np.ones((2, 3))), bias_init=_t(np.full(2, 0.5)))
        net.bias.requires_grad = False
        opt = make(list(net.get_parameters()))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
        x, y = _t(np.ones((2, 3))), _t(np.zeros((2, 2)))
        step(x, y)
        np.testing.assert_array_equal(net.bias.asnumpy(), [0.5, 0.5])
        w = net.weight.asnumpy().copy()
        assert not np.array_equal(w, np.ones((2, 3)))
        net.weight.requires_grad = False   # frozen after compiling
        net.bias.requires_grad = True
        step(x, y)
        np.testing.assert_array_equal(net.weight.asnumpy(), w)
        assert not np.array_equal(net.bias.asnumpy(), [0.5, 0.5])
        assert int(opt.global_step.asnumpy()) == 2


def test_frozen_parameter_matches_torch_over_steps(torch):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    net = nn.Dense(3, 2, weight_init=_t(w), bias_init=_t(b))
    net.weight.requires_grad = False
    opt = nn.Adam(list(net.get_parameters()), 0.05, weight_decay=0.01)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    tw = torch.tensor(w, requires_grad=False)
    tb = torch.tensor(b, requires_grad=True)
    topt = torch.optim.Adam([tw, tb], 0.05, weight_decay=0.01)
    for _ in range(5):
        step(_t(x), _t(y))
        topt.zero_grad()
        torch.nn.functional.mse_loss(torch.nn.functional.linear(torch.tensor(x), tw, tb), torch.tensor(y)).backward()
        topt.step()
    np.testing.assert_array_equal(net.weight.asnumpy(), w)
    np.testing.assert_allclose(net.bias.asnumpy(), tb.detach().numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- BatchNorm2d

def test_batchnorm_use_batch_statistics_tracks_in_eval_mode(torch, backend):
    """MindSpore: use_batch_statistics=True uses the batch's statistics and tracks the moving
    ones (bn_train), whatever the mode; graphad left them unchanged in eval mode."""
    bn = nn.BatchNorm2d(2, momentum=0.8, use_batch_statistics=True, dtype=gd.float64)
    bn.set_train(False)
    x = np.arange(16.0).reshape(2, 2, 2, 2) ** 1.5
    out = gd.jit(bn)(_t(x)).asnumpy()
    tb = torch.nn.BatchNorm2d(2, momentum=0.2, dtype=torch.float64)
    want = tb(torch.tensor(x)).detach().numpy()   # torch in training mode: batch statistics, tracked
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), tb.running_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(bn.moving_variance.asnumpy(), tb.running_var.numpy(), rtol=1e-13)
    frozen = nn.BatchNorm2d(2, use_batch_statistics=False, dtype=gd.float64)   # training mode
    gd.jit(frozen)(_t(x))
    np.testing.assert_array_equal(frozen.moving_mean.asnumpy(), [0.0, 0.0])


def test_batchnorm_refuses_one_value_per_channel():
    """(1, C, 1, 1) in training normalised everything to beta and set the moving variance from
    a zero 'unbiased' variance; torch refuses such a batch."""
    bn = nn.BatchNorm2d(2)
    with pytest.raises(ShapeError, match="more than one value per channel"):
        bn(_t(np.ones((1, 2, 1, 1)), np.float32))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        gd.jit(bn)(_t(np.ones((1, 2, 1, 1)), np.float32))
    np.testing.assert_array_equal(bn.moving_variance.asnumpy(), [1.0, 1.0])
    bn.set_train(False)   # the moving statistics: any batch
    assert bn(_t(np.ones((1, 2, 1, 1)), np.float32)).shape == (1, 2, 1, 1)


# ---------------------------------------------------------------- CrossEntropyLoss

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_classes_along_axis_1(torch, backend, reduction):
    """MindSpore's and torch's (N, C, d1, ...) logits: graphad took the last axis as the classes
    (a ShapeError, or a silently wrong loss when d_K == C)."""
    rng = np.random.default_rng(1)
    ce = nn.CrossEntropyLoss(reduction)
    tce = lambda a, b: torch.nn.functional.cross_entropy(a, b, reduction=reduction)  # noqa: E731
    for shape in ((2, 3, 3), (2, 4, 3, 2)):
        x = rng.normal(size=shape)
        labels = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
        probs = np.moveaxis(rng.dirichlet(np.ones(shape[1]), size=(shape[0],) + shape[2:]), -1, 1)
        for lab in (labels, probs):
            f = gd.jit(gd.value_and_grad(lambda a, b: ops.sum(ce(a, b))))
            v, g = f(_t(x), gd.Tensor(lab))
            tx = torch.tensor(x, requires_grad=True)
            tv = tce(tx, torch.tensor(lab)).sum()
            tv.backward()
            np.testing.assert_allclose(float(v.asnumpy()), tv.item(), rtol=1e-12)
            np.testing.assert_allclose(g.asnumpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-14)
            if reduction == "none":
                assert ce(_t(x), gd.Tensor(lab)).shape == (shape[0],) + shape[2:]


def test_cross_entropy_refuses_labels_of_another_shape(torch):
    """Labels that broadcast against the rows ((N, 1) or (1,)) gave a plausible wrong loss."""
    ce = nn.CrossEntropyLoss()
    x = _t(np.random.default_rng(2).normal(size=(4, 5)))
    for bad in (np.zeros((4, 1), np.int32), np.zeros(1, np.int32), np.zeros(3, np.int32)):
        with pytest.raises(ShapeError, match="CrossEntropyLoss"):
            ce(x, gd.Tensor(bad))
        with pytest.raises(ShapeError, match="CrossEntropyLoss"):
            gd.jit(lambda a, b: ce(a, b))(x, gd.Tensor(bad))
    with pytest.raises(ShapeError, match="class probabilities"):
        ce(x, _t(np.full((1, 5), 0.2)))
    # (C,) logits with a scalar label, as torch
    v = ce(_t([1.0, 2.0, 3.0]), gd.Tensor(np.array(2)))
    want = torch.nn.functional.cross_entropy(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor(2))
    np.testing.assert_allclose(float(v.asnumpy()), want.item(), rtol=1e-14)


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("make", [
    lambda p: nn.SGD([p], 0.1, momentum=float("nan")),
    lambda p: nn.SGD([p], 0.1, dampening=float("nan")),
    lambda p: nn.SGD([p], 0.1, dampening=-0.5),
    lambda p: nn.SGD([p], 0.1, weight_decay=float("nan")),
    lambda p: nn.SGD([p], 0.1, weight_decay=float("inf")),
    lambda p: nn.SGD([p], "0.1"),
    lambda p: nn.Adam([p], 0.1, eps=float("nan")),
    lambda p: nn.Adam([p], 0.1, eps=float("inf")),
    lambda p: nn.Adam([p], 0.1, beta2=float("nan")),
    lambda p: nn.AdamW([p], 0.1, weight_decay=float("nan")),
])
def test_optimizers_refuse_nan_and_inf_hyperparameters(make):
    """NaN momentum, dampening, weight decay or eps were accepted (every step then made the
    Parameters NaN); a string learning rate was a ValueError from float()."""
    p = gd.Parameter(np.ones(2, np.float32), name="p")
    with pytest.raises(GraphadError):
        make(p)


def test_embedding_padding_idx_out_of_range():
    with pytest.raises(ShapeError, match="padding_idx"):
        nn.Embedding(5, 3, padding_idx=5)
    with pytest.raises(ShapeError, match="padding_idx"):
        nn.Embedding(5, 3, padding_idx=1.0)
    e = nn.Embedding(5, 3, padding_idx=-1)   # torch's: counts from the end
    assert e.padding_idx == 4
    np.testing.assert_array_equal(e.embedding_table.asnumpy()[4], np.zeros(3))


# ---------------------------------------------------------------- Adam's bias corrections

@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_float32_steps_match_torch(torch, backend, wd):
    """The bias corrections 1 - beta^t were computed in the Parameter's float32: float32's 0.999
    is 1.3e-8 off, 1 - 0.999 then 1.3e-5 off, and every update about 6e-6 off (50 times
    float32's epsilon); PyTorch computes them in float64. Now graphad's float32 steps are as close
    to the float64 trajectory as PyTorch's (measured in units of lr * epsilon, the update's own
    rounding), Adam and AdamW."""
    lr, n = 1e-3, 2000
    rng = np.random.default_rng(3)
    w0 = rng.normal(scale=1e-3, size=n).astype(np.float32)
    p = gd.Parameter(w0.copy(), name="p")
    opt = nn.AdamW([p], lr, weight_decay=wd) if wd else nn.Adam([p], lr)
    apply = gd.jit(lambda g: opt([g]))
    tp = torch.tensor(w0.copy(), requires_grad=True)
    topt = (torch.optim.AdamW([tp], lr, weight_decay=wd, foreach=False) if wd else
            torch.optim.Adam([tp], lr, foreach=False))
    w, m, v = w0.astype(np.float64), np.zeros(n), np.zeros(n)
    unit = lr * np.finfo(np.float32).eps
    for t in range(1, 5):
        g = rng.normal(size=n).astype(np.float32)
        apply(gd.Tensor(g))
        tp.grad = torch.tensor(g)
        topt.step()
        m = 0.9 * m + 0.1 * g.astype(np.float64)
        v = 0.999 * v + 0.001 * g.astype(np.float64) ** 2
        w = w * (1 - lr * wd) - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        err = np.abs(p.asnumpy() - w).max() / unit
        terr = np.abs(tp.detach().numpy() - w).max() / unit
        assert err <= 2 * terr + 2, (t, err, terr)


def test_adam_bfloat16_parameters_train(torch, backend):
    """bfloat16 rounds 0.999 to 1.0: 1 - beta2^t was 0, the denominator inf, and a bfloat16
    Parameter never moved under Adam."""
    p = gd.Parameter(gd.Tensor(np.ones(3), "bfloat16"), name="p")
    opt = nn.Adam([p], 1e-2)
    apply = gd.jit(lambda g: opt([g]))
    tp = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    topt = torch.optim.Adam([tp], 1e-2)
    for _ in range(3):
        apply(gd.Tensor(np.array([1.0, -2.0, 0.5]), "bfloat16"))
        tp.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)
        topt.step()
    np.testing.assert_array_equal(p.asnumpy().astype(np.float64), tp.detach().double().numpy())
    assert (p.asnumpy().astype(np.float64) != 1.0).all()


def test_sequential_cell_item_assignment_runs_the_new_cell(backend):
    """`seq[i] = cell`, `setattr(seq, "i", cell)`, del, insert and append change what runs, also
    in a function compiled before (setattr used to leave the old cell running, silently; item
    assignment was a TypeError)."""
    gd.set_seed(0)
    net = nn.SequentialCell(nn.Dense(3, 4), nn.ReLU(), nn.Dense(4, 2))
    x = gd.Tensor(np.linspace(-1, 1, 6).reshape(2, 3).astype(np.float32))
    f = gd.jit(net)
    assert f(x).shape == (2, 2)
    net[2] = nn.Dense(4, 5)
    assert f(x).shape == (2, 5)
    setattr(net, "1", nn.Tanh())
    want = net[2](ops.tanh(net[0](x)))
    np.testing.assert_allclose(f(x).asnumpy(), want.asnumpy(), rtol=1e-6)
    del net[1]
    assert [type(c).__name__ for c in net] == ["Dense", "Dense"]
    assert [n for n, _ in net.parameters_and_names()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    net.insert(1, nn.ReLU())
    net.append(nn.Dense(5, 1))
    assert len(net) == 4 and f(x).shape == (2, 1)
    assert isinstance(net[1:3], list) and len(net[1:3]) == 2
    with pytest.raises(GraphadError, match="SequentialCell takes Cells"):
        net[0] = 3


def test_a_traced_value_stored_in_a_cell_attribute_is_refused():
    """`self.w = self.w + 1` in a jitted (or differentiated) construct left a tracer where the
    Parameter was: gone from trainable_params(), later jit calls on a stale graph, then an
    escaped-tracer error (a mutation trial). It is a TraceError naming the attribute, the way out
    and the line; eagerly it rebinds the attribute as Python does."""
    from graphad.errors import TraceError

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = gd.Parameter(np.array([1.0, 2.0]), name="w")

        def construct(self, x):
            self.w = self.w + 1.0
            return x * self.w
    x = gd.Tensor(np.array([1.0, 1.0]))
    for call in (lambda n: gd.jit(n)(x), lambda n: gd.grad(n)(x)):
        net = Net()
        with pytest.raises(TraceError, match=r"Net.w = a traced value \(float64\[2\]\) while tracing.*"
                                             r"ops.assign\(self.w, \.\.\.\) \(at [^)]*test_nn_review.py:\d+\)"):
            call(net)
        assert isinstance(net.w, gd.Parameter) and len(net.trainable_params()) == 1
    eager = Net()
    np.testing.assert_array_equal(eager(x).asnumpy(), [2.0, 3.0])


def test_an_eager_no_op_on_a_parameter_gives_a_copy_not_the_parameter():
    """`p.astype(p.dtype)`, `+p`, `p[:]`, `concat([p])`, `reshape(p, p.shape)`... returned the
    Parameter itself eagerly, so a later set_data or optimizer step changed the "result"
    (`old = w.astype(w.dtype); step(); w - old` gave 0), where jit gives the value (a mutation
    trial). ops.assign still returns its Parameter."""
    p = gd.Parameter(np.array([1.0, 2.0], np.float32), name="p")
    snaps = [p.astype(gd.float32), +p, p[:], p[...], ops.concat([p]), ops.reshape(p, (2,)), ops.squeeze(p),
             ops.broadcast_to(p, (2,)), ops.hstack([p]), ops.clip(p), ops.atleast_1d(p), p.T, p.flatten()]
    assert not any(s is p or isinstance(s, gd.Parameter) for s in snaps)
    p.set_data(np.array([10.0, 20.0], np.float32))
    for s in snaps:
        np.testing.assert_array_equal(s.asnumpy(), [1.0, 2.0])
    assert ops.assign(p, gd.Tensor(np.array([3.0, 4.0], np.float32))) is p


def test_set_data_errors_name_the_parameter_and_the_line():
    """set_data's errors had no source line, and an integer overflow named "Tensor", neither
    set_data nor the Parameter (a mutation trial)."""
    from graphad.errors import IntegerOverflowError
    p = gd.Parameter(np.zeros(2, np.float32), name="p")
    q = gd.Parameter(np.zeros(2, np.int32), name="q")
    with pytest.raises(ShapeError, match=r"Parameter p: set_data with shape \(3,\) for shape \(2,\) "
                                         r"\(at [^)]*test_nn_review.py:\d+\)"):
        p.set_data(np.zeros(3, np.float32))
    with pytest.raises(IntegerOverflowError, match=r"Parameter q: set_data: .*1099511627776.*int32.*"
                                                   r"\(at [^)]*test_nn_review.py:\d+\)"):
        q.set_data([2 ** 40, 0])
