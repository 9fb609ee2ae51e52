"""Every primitive's NumPy reference kernel against an independent oracle, and its shape errors.

For each primitive registered in graphad.prims.PRIMITIVES (a missing entry in tests/prim_cases.py
fails), on hypothesis-drawn shapes (broadcasting included) and dtypes: the eager user-level op
(graphad.ops on Tensors), the primitive bound eagerly, and the interpreter on a one-node graph all
agree with the oracle, in value, shape and dtype. Shape-rule errors are GraphadError subclasses
whose message names the op, the operand shapes and dtypes, and the user's file:line.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphad
from graphad import ops
from graphad.errors import DTypeError, GraphadError, ShapeError
from graphad.frontend.trace import trace_to_graph
from graphad.ir.core import TensorType
from graphad.prims import PRIMITIVES
from graphad.tensor import Tensor

from prim_cases import ALL_PRIMS, numpy_backend_for_module, assert_close, cases_for, hsettings, run

SETTINGS = hsettings(20)
HERE = os.path.basename(__file__)



@pytest.fixture(scope="module", autouse=True)
def _numpy_backend(numpy_backend_for_module):
    """Shadows conftest's function-scoped fixture, which hypothesis tests may not use."""


@pytest.mark.parametrize("name", ALL_PRIMS)
@SETTINGS
@given(data=st.data())
def test_reference_kernel(name, data):
    for make_case in cases_for(name):
        case = data.draw(make_case(False), label=make_case.__name__)
        want = np.asarray(case.ref(*case.args))
        g = case.graph()
        (out_t,) = g.out_types
        assert out_t.shape == want.shape, f"{case}: shape rule says {out_t.shape}, oracle {want.shape}"
        assert out_t.dtype.np == want.dtype, f"{case}: shape rule says {out_t.dtype}, oracle {want.dtype}"
        # the interpreter on a one-node graph
        (got,) = run(g, case.args)
        assert got.dtype == want.dtype
        assert_close(got, want, what=f"interpret {case}")
        # eager: the user-level op on Tensors, and the primitive bound directly
        bound = case.primitive.bind(*[Tensor(a) for a in case.args], **case.attrs)
        if case.primitive.num_outputs is None:  # variadic (control flow): always a tuple
            assert isinstance(bound, tuple) and len(bound) == 1, f"bind {case}: got {type(bound).__name__}"
            bound = bound[0]
        for what, res in (("ops", case.eager(*case.args)), ("bind", bound)):
            assert isinstance(res, Tensor), f"{what} {case}: got {type(res).__name__}"
            assert res.dtype is out_t.dtype, f"{what} {case}: dtype {res.dtype} != {out_t.dtype}"
            assert_close(res.asnumpy(), want, what=f"eager {what} {case}")


# ---------------------------------------------------------------- indexing canonicalises to canonical prims

@st.composite
def _index(draw, shape):
    idx = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "slice", "int", "all"]))
        if kind == "int":
            idx.append(draw(st.integers(-n, n - 1)))
        elif kind == "all":
            idx.append(slice(None))
        else:
            bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
            step = draw(st.one_of(st.none(), st.sampled_from([1, 2, 3, -1, -2, -3])))
            idx.append(slice(draw(bound), draw(bound), step))
    if draw(st.booleans()):
        idx.insert(draw(st.integers(0, len(idx))), None)
    return tuple(idx)


@SETTINGS
@given(data=st.data())
def test_getitem_negative_steps_reach_prims_canonical(data):
    """x[a:b:s] with any signs: NumPy's values, and the slice/flip prims only see canonical attrs."""
    shape = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))
    idx = data.draw(_index(shape))
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    assert_close(Tensor(x)[idx].asnumpy(), x[idx], what=f"x{list(shape)}[{idx}]")
    g, _, _ = trace_to_graph(lambda t: t[idx], [TensorType(shape, "float64")])
    for n in g.nodes:
        t = n.inputs[0].type
        if n.name == "slice":
            for a, b, s, m in zip(n.attrs["starts"], n.attrs["stops"], n.attrs["steps"], t.shape):
                assert s >= 1 and 0 <= a <= m and 0 <= b <= m, f"non-canonical slice attrs {n.attrs} on {t}"
        elif n.name == "flip":
            assert list(n.attrs["axes"]) == sorted(set(n.attrs["axes"])) and all(0 <= a < t.ndim for a in n.attrs["axes"])


@SETTINGS
@given(data=st.data())
def test_reduction_axes_canonicalised(data):
    """ops.sum/max take negative, unsorted axes; the primitive gets a sorted tuple of non-negative axes."""
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
    nd = len(shape)
    axes = data.draw(st.lists(st.integers(-nd, nd - 1), unique_by=lambda a: a % nd, max_size=nd))
    keep = data.draw(st.booleans())
    x = np.random.default_rng(0).normal(size=shape)
    for fn, np_fn in ((ops.sum, np.sum), (ops.max, np.max)):
        assert_close(fn(Tensor(x), tuple(axes), keep).asnumpy(), np_fn(x, axis=tuple(axes), keepdims=keep))
        g, _, _ = trace_to_graph(lambda t: fn(t, tuple(axes), keep), [TensorType(shape, "float64")])
        (node,) = [n for n in g.nodes if n.name in ("sum", "max")]
        assert node.attrs["axes"] == tuple(sorted(a % nd for a in axes))


# ---------------------------------------------------------------- errors name op, shapes, dtypes, file:line

def _line(marker: str) -> int:
    with open(__file__) as f:
        for i, text in enumerate(f, 1):
            if text.rstrip().endswith(f"# {marker}"):
                return i
    raise AssertionError(marker)


def _check_message(err, op: str, *parts, marker: str):
    msg = str(err.value)
    assert isinstance(err.value, GraphadError)
    assert op in msg, f"op {op!r} not named in: {msg}"
    for p in parts:
        assert p in msg, f"{p!r} not in: {msg}"
    where = f"{HERE}:{_line(marker)}"
    assert where in msg, f"user location {where} not in: {msg}"


def test_error_broadcast_mismatch_names_op_shapes_dtypes_line():
    a, b = Tensor(np.ones((3, 4))), Tensor(np.ones(5))
    with pytest.raises(ShapeError) as ei:
        ops.add(a, b)  # ERR-ADD
    _check_message(ei, "add", "(3, 4)", "(5,)", "f64[3,4]", "f64[5]", marker="ERR-ADD")


def test_error_matmul_contraction_mismatch():
    a, b = Tensor(np.ones((2, 3), np.float32)), Tensor(np.ones((4, 2), np.float32))
    with pytest.raises(ShapeError) as ei:
        ops.matmul(a, b)  # ERR-MATMUL
    _check_message(ei, "matmul", "f32[2,3]", "f32[4,2]", marker="ERR-MATMUL")


def test_error_unknown_axis_names_op_shape_line():
    x = Tensor(np.ones((3, 4)))
    with pytest.raises(ShapeError) as ei:
        ops.sum(x, 5)  # ERR-AXIS
    _check_message(ei, "sum", "5", "f64[3,4]", marker="ERR-AXIS")


_X34 = np.ones((3, 4))


@pytest.mark.parametrize("op,call", [
    pytest.param("max", lambda x: ops.max(x, -3), id="max-axis"),
    pytest.param("argmax", lambda x: ops.argmax(x, 2), id="argmax-axis"),
    pytest.param("transpose", lambda x: ops.transpose(x, (0, 0)), id="transpose-perm"),
    pytest.param("reshape", lambda x: ops.reshape(x, (5, -1)), id="reshape-minus-one"),
    pytest.param("take", lambda x: ops.take(x, Tensor(np.array([1])), 3), id="take-axis"),
    pytest.param("take", lambda x: ops.take(x, Tensor(np.array([1.0])), 0), id="take-float-indices"),
    pytest.param("stack", lambda x: ops.stack([x, Tensor(np.ones((2, 5)))]), id="stack-shapes"),
    pytest.param("expand_dims", lambda x: ops.expand_dims(x, 4), id="expand_dims-axis"),
    pytest.param("squeeze", lambda x: ops.squeeze(x, 0), id="squeeze-size"),
    pytest.param("flip", lambda x: ops.flip(x, 3), id="flip-axis"),
    pytest.param("matmul", lambda x: ops.matmul(x, Tensor(np.ones(()))), id="matmul-scalar"),
    pytest.param("index", lambda x: x[5], id="getitem-bounds"),
])
def test_ops_argument_errors_name_op_shape_line(op, call):
    """Errors raised while graphad.ops normalises arguments (before any shape rule) carry the same context."""
    with pytest.raises(GraphadError) as ei:
        call(Tensor(_X34))  # ERR-OPS-ARGS
    msg = str(ei.value)
    assert op in msg and "3, 4" in msg.replace("[3,4]", "3, 4"), f"op {op!r} or shape (3, 4) not named in: {msg}"
    assert f"{HERE}:" in msg, f"the user's file:line is not named in: {msg}"


def test_error_unknown_axis_at_primitive_level():
    x = Tensor(np.ones((3, 4)))
    with pytest.raises(ShapeError) as ei:
        PRIMITIVES["sum"].bind(x, axes=(2,), keepdims=False)  # ERR-PRIM-AXIS
    _check_message(ei, "sum", "f64[3,4]", "axis 2", marker="ERR-PRIM-AXIS")


def test_error_matmul_int_and_bool_dtype():
    a, b = Tensor(np.ones((2, 3), np.int64)), Tensor(np.ones((3, 2), bool))
    # the primitive takes equal dtypes: int64 @ bool is a dtype error naming both
    with pytest.raises(DTypeError) as ei:
        PRIMITIVES["matmul"].bind(a, b)  # ERR-MATMUL-DTYPE
    _check_message(ei, "matmul", "int64", "bool", "[2,3]", "[3,2]", marker="ERR-MATMUL-DTYPE")
    # the primitive has no bool arithmetic; graphad.ops promotes bool with int (JAX lattice), and
    # bool @ bool is NumPy's (any of the ands, from a count of the true products)
    with pytest.raises(DTypeError) as ei:
        PRIMITIVES["matmul"].bind(b, Tensor(np.ones((2, 3), bool)))  # ERR-MATMUL-BOOL
    _check_message(ei, "matmul", "bool", marker="ERR-MATMUL-BOOL")
    p, q = np.array([[True, False], [False, False]]), np.array([[True, True], [False, True]])
    np.testing.assert_array_equal(ops.matmul(Tensor(p), Tensor(q)).asnumpy(), p @ q)


def test_error_wrong_dtype_float_only():
    with pytest.raises(DTypeError) as ei:
        PRIMITIVES["exp"].bind(Tensor(np.ones(3, np.int32)))  # ERR-EXP
    _check_message(ei, "exp", "i32[3]", marker="ERR-EXP")


def test_error_in_traced_function_names_user_line():
    def f(x):
        return ops.mul(x, Tensor(np.ones(5)))  # ERR-TRACED
    with pytest.raises(ShapeError) as ei:
        graphad.grad(lambda x: ops.sum(f(x)))(Tensor(np.ones((2, 3))))
    _check_message(ei, "mul", "f64[2,3]", "f64[5]", marker="ERR-TRACED")


@pytest.mark.parametrize("name,args,attrs", [
    ("reshape", [(2, 3)], {"shape": (4, 2)}),
    ("broadcast_to", [(2, 3)], {"shape": (3, 3)}),
    ("transpose", [(2, 3)], {"perm": (0, 0)}),
    ("slice", [(4,)], {"starts": (0,), "stops": (5,), "steps": (1,)}),
    ("pad", [(4,)], {"lo": (0,), "hi": (-1,), "interior": (0,), "value": 0.0}),
    ("concat", [(2, 3), (2, 4)], {"axis": 0}),
    ("einsum", [(2, 3), (4, 5)], {"spec": "ab,bc->ac"}),
    ("flip", [(2, 3)], {"axes": (2,)}),
    ("max", [(0, 3)], {"axes": (0,), "keepdims": False}),
    ("argmax", [(0, 3)], {"axis": 0, "keepdims": False}),
])
def test_shape_rule_errors_are_graphad_errors(name, args, attrs):
    ts = [Tensor(np.ones(s)) for s in args]
    with pytest.raises(GraphadError) as ei:
        PRIMITIVES[name].bind(*ts, **attrs)  # ERR-RULES
    _check_message(ei, name, *[f"f64[{','.join(map(str, s))}]" for s in args], marker="ERR-RULES")


def test_error_take_index_out_of_range():
    with pytest.raises(GraphadError, match="out of range"):
        ops.take(Tensor(np.ones(3)), Tensor(np.array([3])), 0)
    with pytest.raises(GraphadError, match="out of range"):
        ops.index_add(Tensor(np.ones(3)), Tensor(np.array([-4])), Tensor(np.ones(1)), 0)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_floor_divide_of_floats_is_numpys_exactly(dtype):
    """Float floor division is the exact quotient's floor, as NumPy's (and Python's //): 1.0 //
    0.1 is 9 (floor(1.0 / 0.1) is 10), with NumPy's signed zeros, inf and NaN; on both backends,
    and the // and % operators with it (a // b * b + a % b gives a back)."""
    import graphad as gd
    vals = [1.0, -1.0, 7.0, 0.3, -0.0, 0.0, 0.5, -0.5, 5.0, -5.0, np.inf, -np.inf, np.nan, 1e300, 1e-300, 2.5]
    divs = [0.1, -0.1, 0.7, 1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3.0, -2.5, 1e-300]
    with np.errstate(all="ignore"):  # 1e300 is inf in float16
        a = np.array([x for x in vals for _ in divs]).astype(dtype)
        b = np.array([y for _ in vals for y in divs]).astype(dtype)
        want = np.floor_divide(a, b)
    for backend in ("numpy", "tvm"):
        got = gd.jit(lambda x, y: x // y, backend=backend)(Tensor(a), Tensor(b)).asnumpy()
        same = ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (backend, [(a[i], b[i], got[i], want[i]) for i in np.flatnonzero(~same)[:5]])
    x, y = Tensor(np.array([1.0, -7.0, 0.3])), Tensor(np.array([0.1, 0.7, -0.1]))
    q, r = divmod(x, y)
    np.testing.assert_array_equal(q.asnumpy(), [9.0, -11.0, -3.0])  # Python: 1.0 // 0.1, -7.0 // 0.7, 0.3 // -0.1
    np.testing.assert_allclose((q * y + r).asnumpy(), x.asnumpy(), rtol=1e-15)
    np.testing.assert_array_equal((x % y).asnumpy(), np.remainder(x.asnumpy(), y.asnumpy()))
    np.testing.assert_array_equal((7 // Tensor(np.array([2, -2]))).asnumpy(), [3, -4])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_floor_divide_of_half_types_rounds_once_like_numpy(dtype):
    """float16 // and bfloat16 // compute in float32 and round once, as NumPy's float16 and
    ml_dtypes' bfloat16 do (each step rounded to float16, 2896 // -3 was -967, not -966)."""
    import graphad as gd
    import ml_dtypes
    d = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    rng = np.random.default_rng(4)
    a = np.concatenate([[2896.0, -5368.0, -128.375], rng.uniform(-3000, 3000, 3000)]).astype(d)
    b = np.concatenate([[-3.0, -7.0, 0.1526], rng.uniform(-10, 10, 3000)]).astype(d)
    with np.errstate(all="ignore"):
        want = np.floor_divide(a.astype(np.float32), b.astype(np.float32)).astype(d).astype(np.float32)
    for backend in ("numpy", "tvm"):
        got = gd.jit(lambda x, y: x // y, backend=backend)(Tensor(a), Tensor(b)).asnumpy().astype(np.float32)
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (backend, [(a[i], b[i], got[i], want[i]) for i in np.flatnonzero(~same)[:5]])


def test_floor_divide_of_ints_floors_like_numpy():
    """The div primitive truncates integers toward zero (C, TVM); ops.floor_divide must still floor."""
    a, b = np.array([-7, 7, -7, 7, 6]), np.array([2, -2, -2, 2, -3])
    got = ops.floor_divide(Tensor(a), Tensor(b)).asnumpy()
    np.testing.assert_array_equal(got, np.floor_divide(a, b))
