"""The seed tutorials' examples run on graphad and give the tutorials' values (closed forms for random data)."""
import numpy as np
import pytest

import seed_grad_tutorial
import seed_jacobian_tutorial


@pytest.fixture(scope="module")
def grad_results():
    return seed_grad_tutorial.run(verbose=False)


@pytest.fixture(scope="module")
def jac_results():
    return seed_jacobian_tutorial.run(verbose=False, run_times=3)


def test_first_order_inputs(grad_results):
    g = grad_results["grad_inputs"]
    assert isinstance(g, tuple) and len(g) == 2
    assert repr(g) == ("(Tensor(shape=[1], dtype=Float32, value= [ 3.00000000e+01]), "
                       "Tensor(shape=[1], dtype=Float32, value= [ 9.00000000e+00]))")


def test_weights_only(grad_results):
    assert repr(grad_results["grad_weights"]) == "(Tensor(shape=[1], dtype=Float32, value= [ 4.50000000e+01]),)"


def test_has_aux(grad_results):
    assert grad_results["aux"] == (16, (16, 1))
    inputs, labels, net, g, logits = grad_results["aux_inputs"]
    x, y = inputs.asnumpy(), labels.asnumpy()
    w, b = net.weight.asnumpy(), net.bias.asnumpy()
    pred = x @ w.T + b
    np.testing.assert_allclose(logits.asnumpy(), pred, rtol=1e-5)
    np.testing.assert_allclose(g.asnumpy(), 2 * (pred - y) @ w / pred.size, rtol=1e-4, atol=1e-6)


def test_stop_gradient_values(grad_results):
    assert str(grad_results["stop_gradient"]) == "[5.0]"
    assert str(grad_results["no_stop_gradient"]) == "[10.0]"


def test_higher_order(grad_results):
    assert str(grad_results["second_sin"]) == "[-0.]"
    assert str(grad_results["second_sincos"]) == "[1.]"
    assert str(grad_results["second_mimo_x"]) == "[1.]"
    assert str(grad_results["second_mimo_y"]) == "[-1.]"


def _tanh_parts(w, b, x):
    t = np.tanh(w @ x + b)
    return t, 1 - t ** 2


def test_jacobian_closed_form(jac_results):
    w, b, x = (a.asnumpy().astype(np.float64) for a in jac_results["data16"])
    t, d = _tanh_parts(w, b, x)
    closed = d[:, None] * w
    assert jac_results["jac_shape"] == (16, 16)
    for key in ("jacobian", "jacrev_jacobian", "vmap_vjp_jacobian"):
        np.testing.assert_allclose(jac_results[key].asnumpy(), closed, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jac_results["jac_row0"].asnumpy(), closed[0], rtol=1e-4, atol=1e-6)
    jw, jb = jac_results["jac_wb"]
    assert jw.shape == (16, 16, 16) and jb.shape == (16, 16)
    np.testing.assert_allclose(jb.asnumpy(), np.diag(d), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jw.asnumpy(), np.einsum("ij,k->ijk", np.diag(d), x), rtol=1e-4, atol=1e-6)
    assert jac_results["perf_gain"] > 0


def test_hessians_agree_and_match_closed_form(jac_results):
    w, b, x, *hs = jac_results["hessians"]
    assert jac_results["hess_allclose"] is True
    assert jac_results["hess_api_allclose"] is True
    w64, b64, x64 = (a.asnumpy().astype(np.float64) for a in (w, b, x))
    t, d = _tanh_parts(w64, b64, x64)
    closed = np.einsum("i,ij,ik->ijk", -2 * t * d, w64, w64)
    for h in hs:
        assert h.shape == (16, 32, 32)
        np.testing.assert_allclose(h.asnumpy(), closed, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(h.asnumpy(), np.swapaxes(h.asnumpy(), 1, 2), atol=1e-6)


def test_batch_jacobian_and_hessian(jac_results):
    w, b, x, bj, bh = jac_results["batch"]
    assert jac_results["batch_jacobian_shape"] == (64, 33, 31)
    assert jac_results["batch_hessian_shape"] == (64, 33, 31, 31)
    w64, b64, x64 = (a.asnumpy().astype(np.float64) for a in (w, b, x))
    t = np.tanh(x64 @ w64.T + b64)
    d = 1 - t ** 2
    np.testing.assert_allclose(bj.asnumpy(), d[:, :, None] * w64[None], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bh.asnumpy(), np.einsum("bi,ij,ik->bijk", -2 * t * d, w64, w64), rtol=1e-3, atol=1e-5)


def test_hvp(jac_results):
    x, v, h1, h2 = jac_results["hvp"]
    assert jac_results["hvp_shape"] == (128,) and jac_results["hvp_revrev_shape"] == (128,)
    closed = -np.sin(x.asnumpy()) * v.asnumpy()
    np.testing.assert_allclose(h1.asnumpy(), closed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2.asnumpy(), closed, rtol=1e-5, atol=1e-6)
