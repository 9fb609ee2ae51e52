"""graphad on a CUDA GPU, checked against the NumPy reference interpreter.

Every primitive's example cases (the table of tests/test_lowering.py) compiled for CUDA, the
transformations of tests/test_compiled_api.py run with `gd.set_target("cuda")`, and an AOT
artifact compiled for CUDA loaded in a fresh process. The whole module is skipped where no CUDA
GPU is present (CI has none); on a GPU machine run `pytest -m cuda tests/test_cuda.py`.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from test_compiled_api import CASES as API_CASES
from test_compiled_api import _both, _data, check_artifact_in_fresh_process, forecast
from test_lowering import _params, check_primitive

pytestmark = [pytest.mark.cuda, pytest.mark.tvm]


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from graphad.lowering._tvm import load_tvm
    if not load_tvm().cuda(0).exist:
        pytest.skip("no CUDA GPU")


@pytest.fixture
def cuda_target():
    prev = gd.get_target()
    gd.set_target("cuda")
    yield
    gd.set_target(prev)


@pytest.mark.parametrize("name,idx,fdt", _params())
def test_primitive_matches_interpreter_on_cuda(name, idx, fdt):
    check_primitive(name, idx, fdt, "cuda")


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_transformations_on_cuda_match_interpreter(name, cuda_target):
    make_fn, make_args = API_CASES[name]
    got, want = _both(make_fn(), *make_args())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        tol = 1e-4 if g.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_seed_jacobian_sizes_on_cuda(cuda_target):
    """The benchmark's larger shapes (many threads per kernel) against the closed form."""
    gd.set_backend("tvm")
    for dout, din in ((2048, 32), (32, 2048)):
        w, b, x = _data(dout, din)
        wn, bn, xn = (t.asnumpy().astype(np.float64) for t in (w, b, x))
        t = np.tanh(wn @ xn + bn)
        want = (1 - t * t)[:, None] * wn
        for f in (gd.jacrev(forecast, grad_position=2), gd.jacfwd(forecast, grad_position=2)):
            np.testing.assert_allclose(f(w, b, x).asnumpy(), want, rtol=1e-4, atol=1e-5)
    w, b, x = _data(32, 512)
    wn, bn, xn = (t.asnumpy().astype(np.float64) for t in (w, b, x))
    t = np.tanh(wn @ xn + bn)
    want = (-2 * t * (1 - t * t))[:, None, None] * wn[:, :, None] * wn[:, None, :]
    np.testing.assert_allclose(gd.hessian(forecast, grad_position=2)(w, b, x).asnumpy(), want,
                               rtol=1e-4, atol=1e-4)


def test_cuda_artifact_loads_in_fresh_process(tmp_path):
    gd.set_backend("tvm")
    w, b, x = _data(16, 16)
    fn = gd.jacrev(forecast, grad_position=2)
    compiled = gd.jit(fn).lower(w, b, x).compile("cuda")
    ref = compiled(w, b, x).asnumpy()
    gd.set_backend("numpy")
    np.testing.assert_allclose(ref, fn(w, b, x).asnumpy(), rtol=1e-4, atol=1e-5)
    check_artifact_in_fresh_process(compiled, tmp_path / "jacrev_cuda.gdx", (w, b, x), ref)


def test_control_flow_on_cuda_matches_interpreter(cuda_target):
    """cond, while_loop, fori_loop and scan (host-driven loops over CUDA segments) and their
    gradients against the NumPy interpreter."""
    from test_control_flow import every_construct as prog

    y0 = gd.Tensor(np.array([0.3, -0.2, 0.5], np.float32))
    k = gd.Tensor(np.float32(0.7))
    for fn in (prog, gd.grad(prog, grad_position=(0, 1))):
        gd.set_backend("tvm")
        got = fn(y0, k)
        gd.set_backend("numpy")
        want = fn(y0, k)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-5)


def test_train_step_on_cuda_matches_interpreter(cuda_target):
    """A compiled TrainOneStepCell (Adam, Parameter updates in the graph) on CUDA: the same
    parameters as the interpreter after 3 steps."""
    from graphad import nn

    def run(backend):
        gd.set_backend(backend)
        rng = np.random.default_rng(1)
        net = nn.SequentialCell([nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 3)])
        for p in net.trainable_params():
            p.set_data(gd.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.3))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 1e-2))
        x = gd.Tensor(rng.standard_normal((16, 6)).astype(np.float32))
        y = gd.Tensor(rng.standard_normal((16, 3)).astype(np.float32))
        losses = [float(step(x, y).asnumpy()) for _ in range(3)]
        return losses, [p.asnumpy().copy() for p in net.trainable_params()]

    l_gpu, p_gpu = run("tvm")
    l_ref, p_ref = run("numpy")
    np.testing.assert_allclose(l_gpu, l_ref, rtol=1e-4)
    for a, b in zip(p_gpu, p_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
