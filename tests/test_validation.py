"""Regression tests of issue 11's front-end validation and edge-case defects (4, 7 and 8): options
checked before any cache lookup, non-callables refused, Cell.bprop used by every transformation
(issue 13), the compiled integer and bool comparisons, 0-size inputs and Jacobians, grad of None
or of integers, Tensor value ranges, and Parameter names by path."""
import numpy as np
import pytest

import graphad as gd
from graphad import api, nn, ops
from graphad.errors import DTypeError, TransformError
from graphad.tensor import aligned_empty

HERE = "test_validation.py"


def T(a, dtype=gd.float64):
    return gd.Tensor(np.asarray(a, dtype=np.float64), dtype)


def _sin(x):
    return ops.sin(x)


def _sum_sq(x):
    return ops.sum(x * x)


# ---------------------------------------------------------------- defect 4: front-end validation


def test_vmap_out_dims_none_means_unbatched_output():
    x, c = T(np.arange(6.0).reshape(2, 3)), T([1.0, 2.0, 3.0])
    with pytest.raises(TransformError, match=r"out_axes is None for output 0.*depends on the mapped") as e:
        gd.vmap(lambda x: x * 2, out_dims=None)(x)
    assert HERE in str(e.value)
    # an output that does not depend on the mapped input comes back once, not broadcast
    out = gd.vmap(lambda x, c: c * 2, in_dims=(0, None), out_dims=None)(x, c)
    assert out.shape == (3,)
    np.testing.assert_allclose(out.asnumpy(), [2.0, 4.0, 6.0])
    a, b = gd.vmap(lambda x, c: (x + c, c * 2), in_dims=(0, None), out_dims=(0, None))(x, c)
    assert a.shape == (2, 3) and b.shape == (3,)
    # and the spellings agree
    assert gd.vmap(lambda x, c: c * 2, in_axes=(0, None), out_axes=None)(x, c).shape == (3,)


@pytest.mark.parametrize("bad", [0.0, True, False, 1.0, (0.0,), (True,), "0"])
def test_grad_position_validated_after_a_cached_valid_call(bad):
    x = T([0.5, 1.5])
    # a valid call stages the graph under the key of argnums=0 ...
    assert gd.jacrev(_sin, argnums=0)(x).shape == (2, 2)
    assert gd.jacfwd(_sin, argnums=0)(x).shape == (2, 2)
    assert gd.grad(_sum_sq, argnums=0)(x).shape == (2,)
    # ... which an equal-hashing invalid option must not reach
    for make in (lambda: gd.jacrev(_sin, argnums=bad), lambda: gd.jacfwd(_sin, argnums=bad),
                 lambda: gd.jacrev(_sin, grad_position=bad), lambda: gd.grad(_sum_sq, argnums=bad),
                 lambda: gd.value_and_grad(_sum_sq, bad), lambda: gd.hessian(_sum_sq, argnums=bad)):
        with pytest.raises(TransformError, match="grad_position") as e:
            make()(x)
        assert HERE in str(e.value)


@pytest.mark.parametrize("bad", [0.0, True, (0.0,), [True]])
def test_vmap_axes_validated_after_a_cached_valid_call(bad):
    x = T(np.ones((2, 3)))
    assert gd.vmap(_sin, in_axes=0)(x).shape == (2, 3)
    with pytest.raises(TransformError, match="in_axes"):
        gd.vmap(_sin, in_axes=bad)(x)
    with pytest.raises(TransformError, match="out_axes"):
        gd.vmap(_sin, out_axes=bad)(x)


def test_cache_keys_are_type_exact():
    keys = {api._exact(v) for v in (0, 0.0, True, (0,), [0], (0.0,), (True,), None)}
    assert len(keys) == 8
    x = T([0.5, 1.5])
    gd.jacrev(_sin, chunk_size=2)(x)
    with pytest.raises(TransformError, match="chunk_size"):
        gd.jacrev(_sin, chunk_size=2.0)(x)
    with pytest.raises(TransformError, match="chunk_size"):
        gd.jacfwd(_sin, chunk_size=True)(x)


def test_vmap_unhashable_in_axes_is_a_graphad_error():
    x = T([1.0, 2.0])
    with pytest.raises(TransformError, match=r"in_axes.*\{0\}.*set") as e:
        gd.vmap(ops.mul, {0})(x, x)
    assert HERE in str(e.value)
    with pytest.raises(TransformError, match=r"in_axes\[1\]"):
        gd.vmap(ops.mul, (0, {0}))(x, x)
    with pytest.raises(TransformError, match="out_axes"):
        gd.vmap(ops.mul, 0, [{0}])(x, x)


@pytest.mark.parametrize("name", ["grad", "value_and_grad", "grad_and_value", "jacrev", "jacfwd", "hessian",
                                  "vmap", "jit", "make_graph"])
@pytest.mark.parametrize("bad", [..., None, 3, "sin"])
def test_non_callables_refused_by_every_transformation(name, bad):
    if name == "jit" and bad is None:  # jit(None) is the decorator form: jit(static_argnums=...)
        with pytest.raises(TransformError, match="jit: expected a callable"):
            gd.jit(None)(...)
        return
    with pytest.raises(TransformError, match=rf"{name}: expected a callable") as e:
        getattr(gd, name)(bad)
    assert HERE in str(e.value)


def test_non_callables_refused_by_vjp_and_jvp():
    x = T([1.0])
    with pytest.raises(TransformError, match="vjp: expected a callable"):
        gd.vjp(..., x)
    with pytest.raises(TransformError, match="jvp: expected a callable"):
        gd.jvp(..., (x,), (x,))


class _WithBprop(nn.Cell):
    def construct(self, x):
        return ops.sum(x * x)

    def bprop(self, x, out, dout):
        return (dout * (x * 0 + 5),)  # not construct's derivative (2x): which one is used shows


def test_cell_bprop_is_used_by_every_transformation():
    # MindSpore's custom rule (it used to be refused until custom rules existed): the gradient is
    # what bprop returns, never construct's derivative
    net, x = _WithBprop(), T([1.0, 2.0])
    np.testing.assert_allclose(gd.grad(net)(x).asnumpy(), [5.0, 5.0])
    v, g = gd.value_and_grad(net)(x)
    assert float(v) == 5.0
    np.testing.assert_allclose(g.asnumpy(), [5.0, 5.0])
    np.testing.assert_allclose(gd.jacrev(net)(x).asnumpy(), [5.0, 5.0])
    np.testing.assert_allclose(gd.jacfwd(net)(x).asnumpy(), [5.0, 5.0])  # bprop transposed
    out, vjp_fn = gd.vjp(net, x)
    np.testing.assert_allclose(vjp_fn(T(2.0))[0].asnumpy(), [10.0, 10.0])
    np.testing.assert_allclose(float(gd.jvp(net, (x,), (x,))[1]), 15.0)
    np.testing.assert_allclose(gd.grad(lambda x: net(x) * 2)(x).asnumpy(), [10.0, 10.0])
    np.testing.assert_allclose(gd.grad(lambda x: ops.sum(gd.vmap(net)(ops.stack([x, x]))))(x).asnumpy(), [10.0, 10.0])
    np.testing.assert_allclose(gd.grad(gd.jit(net))(x).asnumpy(), [5.0, 5.0])
    # running or batching the cell runs construct
    assert float(net(x)) == 5.0
    np.testing.assert_allclose(gd.vmap(net)(ops.stack([x, x])).asnumpy(), [5.0, 5.0])
    assert float(gd.jit(net)(x)) == 5.0


# ---------------------------------------------------------------- defect 7: edges that crash or lie


def test_integer_floor_divide_compiles():
    a = np.array([7, -7, 5, -5, 0, 9], np.int32)
    b = np.array([2, 2, -3, -3, 4, 3], np.int32)
    for d in (np.int32, np.int64):
        out = gd.jit(ops.floor_divide, backend="tvm")(gd.Tensor(a.astype(d)), gd.Tensor(b.astype(d)))
        np.testing.assert_array_equal(out.asnumpy(), a // b)


def test_bool_equal_and_not_equal_compile():
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])
    f = gd.jit(lambda a, b: (a == b, a != b, ops.equal(a, True), ops.not_equal(a, b[0])), backend="tvm")
    eq, ne, eq_s, ne_b = f(gd.Tensor(p), gd.Tensor(q))
    np.testing.assert_array_equal(eq.asnumpy(), p == q)
    np.testing.assert_array_equal(ne.asnumpy(), p != q)
    np.testing.assert_array_equal(eq_s.asnumpy(), p)
    np.testing.assert_array_equal(ne_b.asnumpy(), p != q[0])


@pytest.mark.parametrize("shape", [(3, 0), (0, 3), (2, 0, 4)])
def test_aligned_zero_size_input_compiled(shape):
    # a 0-size view whose data pointer is 64-byte aligned (NumPy gives it non-compact strides)
    arr = aligned_empty((16,), np.float32)[:0].reshape(shape)
    assert arr.ctypes.data % 64 == 0
    x = gd.Tensor._wrap(arr)
    k = shape[-1]
    out = gd.jit(lambda a: ops.matmul(a, ops.ones((k, 4))) + 1, backend="tvm")(x)
    np.testing.assert_array_equal(out.asnumpy(), np.ones(shape[:-1] + (4,), np.float32))
    s = gd.jit(lambda a: a.sum(-1), backend="tvm")(x)
    np.testing.assert_array_equal(s.asnumpy(), np.zeros(shape[:-1], np.float32))


@pytest.mark.parametrize("jac", [gd.jacrev, gd.jacfwd])
def test_jacobians_with_zero_size_sides(jac):
    empty, x = T(np.zeros(0)), T([1.0, 2.0, 3.0])
    # 0-size output
    j = jac(lambda a: a[:0] * 2)(x)
    assert j.shape == (0, 3)
    # 0-size input
    j = jac(lambda a, y: ops.sum(a) + y * 2)(empty, x)
    assert j.shape == (3, 0)
    # several inputs and outputs, one of them empty, with aux and chunks
    (j0, j1), aux = jac(lambda a, y: (ops.sum(a) + ops.sin(y), y), (0, 1), has_aux=True, chunk_size=2)(empty, x)
    assert j0.shape == (3, 0) and j1.shape == (3, 3)
    np.testing.assert_allclose(j1.asnumpy(), np.diag(np.cos([1.0, 2.0, 3.0])))
    np.testing.assert_allclose(aux[0].asnumpy(), x.asnumpy())
    jo = jac(lambda a: (a * 3, a[:0]))(x)
    assert jo[0].shape == (3, 3) and jo[1].shape == (0, 3)
    np.testing.assert_allclose(jo[0].asnumpy(), 3 * np.eye(3))
    assert gd.hessian(lambda a: ops.sum(a * a))(empty).shape == (0, 0)


def test_grad_of_a_function_returning_none():
    x = T([1.0, 2.0])
    with pytest.raises(TransformError, match="grad: .* no tensor output to differentiate") as e:
        gd.grad(lambda x: None)(x)
    assert HERE in str(e.value)
    with pytest.raises(TransformError, match="value_and_grad: .* no tensor output"):
        gd.value_and_grad(lambda x: None)(x)
    with pytest.raises(TransformError, match="no tensor output"):
        gd.grad(lambda x: (None, x), has_aux=True)(x)


class _IntParam(nn.Cell):
    def __init__(self):
        super().__init__()
        self.p = gd.Parameter(gd.Tensor(np.array([1, 2], np.int32)), name="p")
        self.w = gd.Parameter(T([0.5, 0.5]), name="w")

    def construct(self, x):
        return ops.sum(x * self.p * self.w)


def test_grad_with_respect_to_integers_is_refused():
    net, x = _IntParam(), T([1.0, 2.0])
    with pytest.raises(TransformError, match=r"Parameter 'p' of dtype int32") as e:
        gd.grad(net, None, weights=net.trainable_params())(x)
    assert HERE in str(e.value)
    with pytest.raises(TransformError, match=r"Parameter 'p' of dtype int32"):
        gd.value_and_grad(net, None, weights=net.p)
    with pytest.raises(TransformError, match=r"Parameter 'p' of dtype int32"):
        gd.vjp(net, x, weights=[net.p])
    np.testing.assert_allclose(gd.grad(net, None, weights=net.w)(x).asnumpy(), [1.0, 4.0])

    def f(scale, n):
        return ops.sum(scale * n)
    with pytest.raises(TransformError, match=r"argument 1 \('n'\) of dtype int64") as e:
        gd.grad(f, (0, 1))(T([1.0]), gd.Tensor([3]))
    assert HERE in str(e.value)
    with pytest.raises(TransformError, match=r"argument 0 \('x'\) of dtype int64"):
        gd.jacrev(_sin)(gd.Tensor([1, 2]))


def test_item_and_tolist_refuse_what_has_no_python_value():
    from graphad.errors import ShapeError, TraceError
    with pytest.raises(ShapeError, match=r"item\(\): only a tensor of one element .* shape \(2,\)"):
        gd.Tensor([1.0, 2.0]).item()
    assert gd.Tensor([[3.5]]).item() == 3.5
    for what in ("item", "tolist", "asnumpy"):
        with pytest.raises(TraceError, match=rf"{what}\(\) of a traced value"):
            gd.grad(lambda x, w=what: ops.sum(x) * len(str(getattr(x, w)())))(gd.Tensor([1.0]))


def test_tensor_keeps_or_refuses_out_of_range_integers():
    big = gd.Tensor(np.uint32(4e9))
    assert big.dtype == gd.int64 and big.item() == 4_000_000_000
    assert gd.Tensor(np.array([4e9, 1], np.uint32)).asnumpy().tolist() == [4_000_000_000, 1]
    assert gd.Tensor(np.uint64(2 ** 63 - 1)).item() == 2 ** 63 - 1
    assert gd.Tensor(np.uint16(60000)).item() == 60000
    assert gd.Tensor(-2 ** 63).item() == -2 ** 63
    assert gd.Tensor(2 ** 70, dtype=gd.float64).item() == float(2 ** 70)
    refused = [
        lambda: gd.Tensor(np.uint32(4e9), dtype=gd.int32),
        lambda: gd.Tensor(np.uint64(2 ** 63)),
        lambda: gd.Tensor(2 ** 63),
        lambda: gd.Tensor(2 ** 70),
        lambda: gd.Tensor([2 ** 63, -1]),      # NumPy would make this float64
        lambda: gd.Tensor([-2 ** 63 - 1]),
        lambda: gd.Tensor(2 ** 40, dtype=gd.int32),
        lambda: gd.Tensor(np.array([1.5e10]), dtype=gd.int32),
        lambda: gd.Tensor(float("nan"), dtype=gd.int64),
        lambda: gd.Tensor(np.int64(2 ** 31), dtype="int32"),
    ]
    for make in refused:
        with pytest.raises(DTypeError, match="int"):
            make()
    assert gd.Tensor(np.array([2 ** 31 - 1, -2 ** 31]), dtype=gd.int32).asnumpy().tolist() == [2 ** 31 - 1, -2 ** 31]
    assert gd.Tensor(3.7, dtype=gd.int32).item() == 3


# ---------------------------------------------------------------- defect 8: Parameter names by path


class _Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(2, 2)
        self.scale = gd.Parameter(T([1.0]))

    def construct(self, x):
        return self.fc(x) * self.scale


class _Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.z = gd.Parameter(T([1.0]), name="z")
        self.layer1 = _Block()
        self.layer2 = nn.SequentialCell(_Block(), nn.ReLU(), nn.Dense(2, 1))

    def construct(self, x):
        return ops.sum(self.layer2(self.layer1(x))) * self.z


def test_sequential_cell_parameter_names_are_paths():
    seq = nn.SequentialCell(nn.Dense(2, 3), nn.ReLU(), nn.Dense(3, 1))
    assert [p.name for p in seq.trainable_params()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in seq.parameters_and_names()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_nested_cell_parameter_names_and_return_ids_are_unique():
    net = _Net()
    names = [p.name for p in net.trainable_params()]
    assert names == ["z", "layer1.scale", "layer1.fc.weight", "layer1.fc.bias", "layer2.0.scale",
                     "layer2.0.fc.weight", "layer2.0.fc.bias", "layer2.2.weight", "layer2.2.bias"]
    ids = gd.grad(net, None, weights=net.trainable_params(), return_ids=True)(gd.Tensor([[1.0, 2.0]]))
    assert [n for n, _ in ids] == names
    # re-assigning a cell or a Parameter renames by path again; prefixes never stack
    net.layer1 = net.layer1
    net.layer1.fc.weight = gd.Parameter(ops.ones((2, 2)))
    assert net.layer1.fc.weight.name == "layer1.fc.weight"
    assert len({p.name for p in net.trainable_params()}) == len(names)
    # a user-given name is the last part of the path
    block = _Block()
    block.extra = gd.Parameter(T([2.0]), name="gain")
    holder = nn.SequentialCell(block)
    assert block.extra.name == "0.gain" and holder[0].fc.bias.name == "0.fc.bias"


@pytest.mark.parametrize("op", ["less", "less_equal", "greater", "greater_equal"])
def test_bool_ordering_comparisons_compile(op):
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])
    got = gd.jit(getattr(ops, op), backend="tvm")(gd.Tensor(p), gd.Tensor(q))
    np.testing.assert_array_equal(got.asnumpy(), getattr(np, op)(p, q))


def test_jit_static_arguments_are_type_exact():
    f = gd.jit(lambda x, s: x * 2 if isinstance(s, bool) else (x * 3 if isinstance(s, float) else x * 5),
               static_argnums=1)
    x = gd.Tensor(np.ones(2, np.float32))
    assert float(f(x, 1).asnumpy()[0]) == 5.0
    assert float(f(x, 1.0).asnumpy()[0]) == 3.0
    assert float(f(x, True).asnumpy()[0]) == 2.0
    g = gd.jit(lambda x, s: x / s, static_argnums=1)
    assert np.signbit(g(x, -0.0).asnumpy()[0]) and float(g(x, 0.0).asnumpy()[0]) == np.inf
