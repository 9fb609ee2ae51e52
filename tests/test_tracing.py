"""The tracing front end: lifting of Parameters and closed-over tensors, pytrees, constants, errors."""
import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import TraceError


def test_dense_mse_lifts_both_parameters_as_inputs():
    net = nn.Dense(4, 2)
    loss = nn.MSELoss()
    x = gd.Tensor(np.ones((3, 4), np.float32))
    y = gd.Tensor(np.zeros((3, 2), np.float32))
    g = gd.make_graph(lambda x, y: loss(net(x), y))(x, y)
    assert len(g.inputs) == 4
    types = [str(v.type) for v in g.inputs]
    assert types == ["f32[3,4]", "f32[3,2]", "f32[2,4]", "f32[2]"]
    assert g.input_names[2:] == ["weight", "bias"]
    assert not any(n.prim.name == "constant" and n.outputs[0].type.size > 1 for n in g.nodes)


def test_closed_over_tensor_is_an_input_not_a_constant():
    w = gd.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    g = gd.make_graph(lambda x: ops.matmul(w, x))(gd.Tensor(np.ones(3, np.float32)))
    assert len(g.inputs) == 2
    assert all(n.prim.name != "constant" for n in g.nodes)


def test_python_scalars_become_weakly_typed_constants():
    g = gd.make_graph(lambda x: x * 2.5 + 1)(gd.Tensor(np.ones(2, np.float64)))
    consts = [n for n in g.nodes if n.prim.name == "constant"]
    assert consts and all(str(n.outputs[0].type) == "f64[]" for n in consts)


def test_pytree_inputs_and_outputs():
    def f(d, t):
        return {"s": d["a"] + t[0], "p": [d["b"] * t[1]]}
    a = gd.Tensor(np.ones(2, np.float32))
    out = gd.jit(f)({"a": a, "b": a}, (a, a)) if hasattr(gd, "jit") else None
    res = gd.vmap(f)({"a": a, "b": a}, (a, a))
    assert set(res) == {"p", "s"} and isinstance(res["p"], list)
    np.testing.assert_allclose(res["s"].asnumpy(), [2.0, 2.0])
    del out


def test_data_dependent_branch_is_a_clear_error():
    def f(x):
        if ops.sum(x) > 0:
            return x
        return -x
    with pytest.raises(TraceError, match="control flow") as e:
        gd.grad(lambda x: ops.sum(f(x)))(gd.Tensor([1.0]))
    assert "test_tracing.py" in str(e.value)


def test_escaped_tracer_is_rejected():
    leaked = []

    def f(x):
        leaked.append(x * 2)
        return ops.sum(x)
    gd.grad(f)(gd.Tensor([1.0]))
    with pytest.raises(TraceError, match="escaped"):
        ops.sin(leaked[0])


def test_locations_point_at_user_lines():
    def f(x):
        return ops.tanh(x)  # the node's loc is this line
    g = gd.make_graph(f)(gd.Tensor([1.0]))
    (n,) = [n for n in g.nodes if n.prim.name == "tanh"]
    assert n.loc.file.endswith("test_tracing.py") and n.loc.line == f.__code__.co_firstlineno + 1


def test_ops_classes_and_methods():
    x = gd.Tensor(np.array([[1.0, -2.0], [3.0, 4.0]], np.float32))
    np.testing.assert_allclose(ops.Sin()(x).asnumpy(), np.sin(x.asnumpy()))
    np.testing.assert_allclose(ops.ReduceSum(keep_dims=True)(x, 1).asnumpy(), [[-1.0], [7.0]])
    np.testing.assert_allclose(x.T.asnumpy(), x.asnumpy().T)
    np.testing.assert_allclose(x[:, ::-1].asnumpy(), x.asnumpy()[:, ::-1])
    np.testing.assert_allclose(x[1].asnumpy(), [3.0, 4.0])
    np.testing.assert_allclose(x[None, ..., 0].asnumpy(), x.asnumpy()[None, ..., 0])
    np.testing.assert_allclose(x[[1, 0, 1]].asnumpy(), x.asnumpy()[[1, 0, 1]])
    np.testing.assert_allclose(x.movedim(0, 1).asnumpy(), x.asnumpy().T)
    assert repr(gd.Tensor([30.0])) == "Tensor(shape=[1], dtype=Float32, value= [ 3.00000000e+01])"


@pytest.mark.parametrize("args", [(), (1,), (0, 1, 2), (-1, 2, 0)])
def test_trace_and_diagonal_methods_eager_and_traced(args):
    """NumPy's ndarray.trace / diagonal as methods, also on a traced value (a tracer's own
    attribute of that name once shadowed the method: "'Trace' object is not callable")."""
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = gd.Tensor(a)
    for f in (lambda x: (x.trace(*args), x.diagonal(*args)),
              gd.jit(lambda x: (x.trace(*args), x.diagonal(*args)))):
        t, d = f(x)
        np.testing.assert_array_equal(t.asnumpy(), a.trace(*args))
        np.testing.assert_array_equal(d.asnumpy(), a.diagonal(*args))
    np.testing.assert_array_equal(gd.grad(lambda x: x.trace())(gd.Tensor(np.ones((3, 3), np.float32))).asnumpy(),
                                  np.eye(3, dtype=np.float32))


def test_dlpack_and_numpy_roundtrip():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = gd.Tensor(a)
    np.testing.assert_array_equal(np.from_dlpack(t), a)
    np.testing.assert_array_equal(np.asarray(t), a)
    assert t._data.ctypes.data % 64 == 0
    u = gd.Tensor(np.from_dlpack(t))
    np.testing.assert_array_equal(u.asnumpy(), a)


def test_tracing_in_one_thread_does_not_capture_another_threads_ops():
    """Thread A is inside a trace (its function waits mid-trace); thread B's eager ops and its own
    transformed calls meanwhile run on their own, and A's graph holds only A's operations."""
    import threading
    inside, resume = threading.Event(), threading.Event()
    seen = {}

    def f(x):
        y = ops.sin(x)
        inside.set()
        assert resume.wait(30)
        return y * 2.0

    def thread_a():
        seen["a"] = gd.grad(lambda x: ops.sum(f(x)))(gd.Tensor(np.array([0.5, 1.0])))
    ta = threading.Thread(target=thread_a)
    ta.start()
    try:
        assert inside.wait(30)
        b = ops.exp(gd.Tensor(np.array([1.0])))  # eager, while A's trace is active
        assert type(b) is gd.Tensor
        np.testing.assert_allclose(b.asnumpy(), [np.e])
        gb = gd.grad(lambda x: ops.sum(x * x * x))(gd.Tensor(np.array([2.0])))
        np.testing.assert_allclose(gb.asnumpy(), [12.0])
    finally:
        resume.set()
        ta.join(30)
    np.testing.assert_allclose(seen["a"].asnumpy(), 2.0 * np.cos([0.5, 1.0]))


def test_item_assignment_names_the_functional_forms():
    """Tensors had no __setitem__: Python tried the sequence protocol and `x[x > 1] = 0` said
    "only integer tensors can be used as an index" (a mutation trial)."""
    from graphad.errors import ArgumentError
    x = gd.Tensor(np.array([1.0, 2.0, 3.0], np.float32))

    def g(t):
        t[0] = 5.0
        return t
    for assign in (lambda: x.__setitem__(0, 5.0), lambda: x.__setitem__(x > 1, 0.0), lambda: gd.jit(g)(x)):
        with pytest.raises(ArgumentError, match=r"x\[\.\.\.\] = value on a tensor \(float32\[3\]\).*ops.where"
                                                r".*put_along_axis.*ops.assign"):
            assign()
