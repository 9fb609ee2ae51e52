"""Regression tests of issue 11's front-end validation and edge-case defects (4, 7 and 8): options
checked before any cache lookup, non-callables and Cell.bprop refused, the compiled integer and
bool comparisons, 0-size inputs and Jacobians, grad of None or of integers, Tensor value ranges,
and Parameter names by path."""
import numpy as np
import pytest

import graphad as gd
from graphad import api, nn, ops
from graphad.errors import DTypeError, TransformError
from graphad.tensor import aligned_empty

HERE = "test_validation.py"


def T(a, dtype=gd.float64):
    return gd.Tensor(np.asarray(a, dtype=np.float64), dtype)


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
