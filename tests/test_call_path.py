"""The per-call path of a cached compiled function: GraphFunction's hot entry, Executable.caller
and the lazily viewed output Tensors. What they skip must not change what a call returns."""
import pickle
import threading

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import TransformError
from graphad.frontend.function import clear_staging_cache

pytestmark = pytest.mark.tvm


@pytest.fixture(autouse=True)
def _tvm_backend():
    gd.set_backend("tvm")  # conftest's autouse fixture puts the numpy backend back afterwards


def _t(a, dtype=np.float32):
    return gd.Tensor(np.asarray(a, dtype))


def _net():
    class Net(gd.nn.Cell):
        def construct(self, x, y, z):
            return x * x * y * z
    return gd.grad(Net(), grad_position=(0, 1))


def _arrays(res):
    return [r.asnumpy() for r in (res if isinstance(res, tuple) else (res,))]


def test_repeated_calls_return_private_aligned_buffers():
    f = _net()
    x, y, z = _t([3.0]), _t([5.0]), _t([1.0])
    first = f(x, y, z)
    second = f(x, y, z)
    third = f(_t([2.0]), y, _t([4.0]))
    for res, (xv, zv) in ((first, (3.0, 1.0)), (second, (3.0, 1.0)), (third, (2.0, 4.0))):
        np.testing.assert_allclose(_arrays(res), [[2 * xv * 5.0 * zv], [xv * xv * zv]])
    outs = [t for res in (first, second, third) for t in res]
    for i, a in enumerate(outs):
        assert isinstance(a, gd.Tensor)
        assert a._data.ctypes.data % 64 == 0
        for b in outs[i + 1:] + [x, y, z]:
            assert not np.shares_memory(a._data, b._data)


def test_signature_changes_and_returns():
    f = gd.jacrev(lambda w, b, x: ops.dense(x, w, b).tanh(), grad_position=2)
    rng = np.random.default_rng(0)
    small = [_t(rng.standard_normal(s)) for s in ((4, 3), (4,), (3,))]
    big = [_t(rng.standard_normal(s)) for s in ((5, 2), (5,), (2,))]
    f64 = [_t(a.asnumpy(), np.float64) for a in small]

    def want(w, b, x):
        w, b, x = w.asnumpy().astype(np.float64), b.asnumpy().astype(np.float64), x.asnumpy().astype(np.float64)
        return (1 - np.tanh(w @ x + b) ** 2)[:, None] * w

    for args in (small, small, big, small, f64, big, f64):
        got = f(*args)
        assert got.dtype == args[0].dtype and got.shape == args[0].shape
        np.testing.assert_allclose(got.asnumpy(), want(*args), rtol=1e-5, atol=1e-6)


def test_non_tensor_arguments_after_the_hot_path():
    f = gd.jit(lambda a, b: a * b + 1.0)
    a, b = _t([1.0, 2.0]), _t([3.0, 4.0])
    np.testing.assert_allclose(f(a, b).asnumpy(), [4.0, 9.0])
    np.testing.assert_allclose(f(np.array([1.0, 2.0], np.float32), b).asnumpy(), [4.0, 9.0])
    np.testing.assert_allclose(f(a, b).asnumpy(), [4.0, 9.0])
    np.testing.assert_allclose(f(a, np.array([0.5, 0.5], np.float32)).asnumpy(), [1.5, 2.0])


def test_differentiation_errors_are_still_raised_after_the_hot_path():
    f = gd.grad(lambda x: ops.sum(x * x))
    np.testing.assert_allclose(f(_t([1.0, 2.0])).asnumpy(), [2.0, 4.0])
    with pytest.raises(TransformError, match="only floating-point"):
        f(gd.Tensor(np.array([1, 2], np.int32)))
    np.testing.assert_allclose(f(_t([3.0, 2.0])).asnumpy(), [6.0, 4.0])


def test_clearing_the_cache_and_switching_backends_retrace():
    traces = []

    def fn(x):
        traces.append(1)
        return x * 2.0

    f = gd.jit(fn)
    x = _t([1.0, 2.0])
    for _ in range(3):
        np.testing.assert_allclose(f(x).asnumpy(), [2.0, 4.0])
    assert len(traces) == 1
    clear_staging_cache()
    np.testing.assert_allclose(f(x).asnumpy(), [2.0, 4.0])
    assert len(traces) == 2
    gd.set_backend("numpy")
    np.testing.assert_allclose(f(x).asnumpy(), [2.0, 4.0])
    assert len(traces) == 3
    gd.set_backend("tvm")
    np.testing.assert_allclose(f(x).asnumpy(), [2.0, 4.0])
    assert len(traces) == 3  # the compiled entry is still cached


def test_captured_parameter_is_reread_on_every_call():
    class Net(gd.nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = gd.Parameter(_t([2.0, 3.0]), name="w")

        def construct(self, x):
            return ops.sum(x * self.w)

    net = Net()
    f = gd.grad(net, grad_position=None, weights=net.w)
    gx = gd.grad(net)
    x = _t([1.0, -1.0])
    np.testing.assert_allclose(gx(x).asnumpy(), [2.0, 3.0])
    np.testing.assert_allclose(f(x).asnumpy(), [1.0, -1.0])
    net.w.set_data(_t([5.0, 7.0]))
    np.testing.assert_allclose(gx(x).asnumpy(), [5.0, 7.0])
    np.testing.assert_allclose(f(_t([4.0, 4.0])).asnumpy(), [4.0, 4.0])


def test_outputs_that_alias_inputs_or_each_other_are_copied():
    f = gd.jit(lambda x: (x, x, x * 2.0, ops.stop_gradient(x)))
    x = _t([1.0, 2.0])
    for _ in range(3):
        outs = f(x)
        np.testing.assert_allclose([o.asnumpy() for o in outs], [[1, 2], [1, 2], [2, 4], [1, 2]])
        arrays = [o._data for o in outs] + [x._data]
        for i, a in enumerate(arrays):
            for b in arrays[i + 1:]:
                assert not np.shares_memory(a, b)


def test_outputs_feed_later_calls_and_behave_as_tensors():
    f = gd.jit(lambda x: ops.sin(x) * 2.0)
    x = _t([0.5, 1.0, 1.5])
    y = f(x)
    z = f(y)  # an output passed straight back in
    np.testing.assert_allclose(z.asnumpy(), np.sin(np.sin(x.asnumpy()) * 2) * 2, rtol=1e-6)
    w = f(x)
    assert isinstance(w, gd.Tensor)
    assert w.shape == (3,) and w.dtype == gd.float32
    assert type(w) is gd.Tensor  # reading it made the plain Tensor
    v = f(x)
    np.testing.assert_allclose(np.asarray(v), np.sin(x.asnumpy()) * 2, rtol=1e-6)
    back = pickle.loads(pickle.dumps(f(x)))
    assert type(back) is gd.Tensor
    np.testing.assert_allclose(back.asnumpy(), np.sin(x.asnumpy()) * 2, rtol=1e-6)
    np.testing.assert_allclose((f(x) + 1.0).asnumpy(), np.sin(x.asnumpy()) * 2 + 1, rtol=1e-6)
    assert "Tensor(shape=[3]" in repr(f(x))
    u = f(x)
    u._data[0] = 7.0  # an in-place write lands in the buffer later calls read through _dl
    np.testing.assert_allclose(f(u).asnumpy()[0], np.sin(7.0) * 2, rtol=1e-6)


def test_structured_and_static_outputs():
    f = gd.jit(lambda x: {"a": x * 2.0, "b": (x + 1.0, 3, "s")})
    x = _t([1.0, 2.0])
    for _ in range(3):
        out = f(x)
        assert set(out) == {"a", "b"} and out["b"][1:] == (3, "s")
        np.testing.assert_allclose(out["a"].asnumpy(), [2.0, 4.0])
        np.testing.assert_allclose(out["b"][0].asnumpy(), [2.0, 3.0])
    g = gd.jit(lambda x: (x * 3.0,))
    for _ in range(2):
        (one,) = g(x)
        np.testing.assert_allclose(one.asnumpy(), [3.0, 6.0])


def test_hot_function_is_still_inlined_under_a_trace():
    g = gd.jit(lambda x: ops.sin(x) * x)
    x = _t([0.3, 0.7])
    g(x)
    g(x)
    d = gd.grad(lambda x: ops.sum(g(x)))
    xv = x.asnumpy()
    np.testing.assert_allclose(d(x).asnumpy(), np.cos(xv) * xv + np.sin(xv), rtol=1e-5)


def test_concurrent_calls_from_threads():
    f = _net()
    f(_t([1.0]), _t([1.0]), _t([1.0]))  # traced first: tracing itself is not thread-safe
    errors = []

    def work(k):
        try:
            for i in range(200):
                xv, yv, zv = float(k + 1), float(i % 7 + 1), float(k - i % 3)
                gx, gy = f(_t([xv]), _t([yv]), _t([zv]))
                np.testing.assert_allclose([gx.asnumpy()[0], gy.asnumpy()[0]],
                                           [2 * xv * yv * zv, xv * xv * zv], rtol=1e-6)
        except Exception as e:  # reported below, from the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
