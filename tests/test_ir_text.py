"""The textual IR: canonical printing, parsing back, exact round trips, parse errors, export."""
from __future__ import annotations

import math
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphad  # noqa: F401  (registers every primitive)
from graphad import dtypes as dt
from graphad.errors import GraphadError, IRParseError
from graphad.ir.builder import GraphBuilder
from graphad.ir.core import Graph, Loc, TensorType
from graphad.ir.export import render_dot, to_dot, to_networkx
from graphad.ir.parser import parse_graph, parse_module
from graphad.ir.printer import print_graph, print_module, prints_equal
from graphad.ir.verify import verify
from graphad.prims import PRIMITIVES
from graphad.prims.registry import Primitive


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


F = "float32"
I64 = "int64"

# One small valid application of every registered primitive: (operand types, attributes as the
# tracer produces them). A primitive registered without an entry here fails
# test_every_primitive_has_an_example.
EXAMPLES: dict[str, tuple[list[TensorType], dict]] = {
    # unary elementwise
    **{name: ([T(2, 3)], {}) for name in (
        "neg", "abs", "sign", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square", "reciprocal", "sin",
        "cos", "tan", "tanh", "sigmoid", "relu", "erf", "floor", "stop_gradient")},
    # issue 17's elementwise math
    **{name: ([T(2, 3)], {}) for name in (
        "ceil", "round", "trunc", "exp2", "log2", "log10", "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh",
        "arccosh", "arctanh", "cbrt", "erfc", "erfinv", "lgamma")},
    "polygamma": ([T(2, 3)], {"n": 1}),
    **{name: ([T(2, 3), T(3)], {}) for name in ("arctan2", "hypot", "logaddexp", "fmod", "remainder")},
    "logical_not": ([T(4, dtype="bool")], {}),
    "signbit": ([T(2, 3)], {}),
    **{name: ([T(2, 3, dtype="int32"), T(3, dtype="int32")], {}) for name in ("bitwise_and", "bitwise_or", "bitwise_xor",
                                                                                   "left_shift", "right_shift")},
    "astype": ([T(2, 3)], {"dtype": "int32"}),
    # binary (broadcasting) and comparisons
    **{name: ([T(2, 3), T(3)], {}) for name in (
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "equal", "not_equal", "less", "less_equal",
        "greater", "greater_equal")},
    "where": ([T(2, 3, dtype="bool"), T(2, 3), T(3)], {}),
    # complex numbers (docs/complex.md)
    "real": ([T(2, 3, dtype="complex64")], {}),
    "imag": ([T(3, dtype="complex128")], {}),
    "conj": ([T(2, dtype="complex64")], {}),
    "complex": ([T(2, 3, dtype="float64"), T(3, dtype="float64")], {}),
    "det": ([T(2, 3, 3, dtype="complex128")], {}),
    # reductions
    "sum": ([T(2, 3, 4)], {"axes": (0, 2), "keepdims": False}),
    "max": ([T(2, 3, 4)], {"axes": (1,), "keepdims": True}),
    "min": ([T(2, 3)], {"axes": (), "keepdims": False}),
    "prod": ([T(2, 3, 4)], {"axes": (0, 1, 2), "keepdims": False}),
    "argmax": ([T(2, 3)], {"axis": 1, "keepdims": False}),
    "argmin": ([T(2, 3)], {"axis": 0, "keepdims": True}),
    "cumsum": ([T(2, 3)], {"axis": 1}),
    "argsort": ([T(2, 3)], {"axis": 0}),
    # linear algebra
    "matmul": ([T(5, 2, 3), T(3, 4)], {}),
    "einsum": ([T(2, 3), T(3, 4)], {"spec": "ij,jk->ik"}),
    # dense linear algebra (issue 17)
    "solve": ([T(2, 3, 3), T(2, 3, 1)], {}),
    "slogdet": ([T(3, 3)], {}),
    "cholesky": ([T(2, 2, 2, dtype="float64")], {}),
    "triangular_solve": ([T(3, 3), T(3, 2)], {"lower": True, "trans": False, "unit_diagonal": True}),
    "eigh": ([T(3, 3)], {}),
    "qr": ([T(4, 2)], {}),
    "svd": ([T(2, 3, 3)], {}),
    "conv2d": ([T(1, 2, 5, 5), T(4, 2, 3, 3)],
               {"stride": (2, 1), "padding": (1, 1, 0, 2), "dilation": (1, 1), "groups": 1}),
    # shape
    "reshape": ([T(2, 3)], {"shape": (3, 1, 2)}),
    "broadcast_to": ([T(3)], {"shape": (2, 3)}),
    "transpose": ([T(2, 3, 4)], {"perm": (2, 0, 1)}),
    "slice": ([T(5, 4)], {"starts": (1, 0), "stops": (5, 4), "steps": (2, 1)}),
    "pad": ([T(2, 3)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 0), "value": -0.5}),
    "flip": ([T(2, 3)], {"axes": (0, 1)}),
    "concat": ([T(2, 3), T(1, 3), T(4, 3)], {"axis": 0}),
    "take": ([T(5, 3), T(2, 4, dtype=I64)], {"axis": 0}),
    "index_add": ([T(5, 3), T(4, dtype=I64), T(4, 3)], {"axis": 0}),
    "index_check": ([T(2, 4, dtype=I64)], {"length": 5, "op": "take"}),
    # creation
    "constant": ([], {"value": np.array([[1.0, 2.5], [-3.0, 1 / 3]], np.float32), "dtype": "float32"}),
    "full": ([], {"shape": (2, 3), "value": 1.5, "dtype": "float32"}),
    "arange": ([], {"start": 1, "stop": 7, "step": 2, "dtype": "int64"}),
    "eye": ([], {"n": 3, "m": 4, "k": 1, "dtype": "float64"}),
}


def single_node_graph(name: str, in_types, attrs, loc=Loc("model.py", 12)) -> Graph:
    b = GraphBuilder(f"one_{name}")
    xs = [b.add_input(t, f"x{i}") for i, t in enumerate(in_types)]
    outs = b.emit(PRIMITIVES[name], xs, attrs, loc)
    return b.finish(outs)


def same_attr(a, b) -> bool:
    """Equal value and Python type; arrays by dtype, shape and bits; NaN equals NaN of the same bits."""
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    if isinstance(a, (list, tuple)):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_attr(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return type(b) is float and struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, Graph):
        return isinstance(b, Graph) and print_graph(a) == print_graph(b)
    return type(a) is type(b) and a == b


def round_trip(g: Graph) -> Graph:
    text = print_graph(g)
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    verify(g2)
    assert len(g2.nodes) == len(g.nodes)
    for n1, n2 in zip(g.nodes, g2.nodes):
        assert n1.prim is n2.prim
        assert n1.loc == n2.loc
        assert set(n1.attrs) == set(n2.attrs)
        for k in n1.attrs:
            assert same_attr(n1.attrs[k], n2.attrs[k]), (k, n1.attrs[k], n2.attrs[k])
        assert [o.type for o in n1.outputs] == [o.type for o in n2.outputs]
    assert g2.in_types == g.in_types and g2.out_types == g.out_types
    return g2


# ---------------------------------------------------------------- every primitive


def _control_examples():
    """Control-flow and checkpoint nodes: their regions print inline and parse back."""
    from graphad import ops
    from graphad.control.regions import make_region
    f3, s, b, i = TensorType((3,), "float32"), TensorType((), "float32"), TensorType((), "bool"), TensorType((), "int32")
    br = (make_region("neg", [f3], lambda x: [ops.neg(x)]), make_region("sin", [f3], lambda x: [ops.sin(x)]))
    cond_g = make_region("c", [s, f3], lambda lim, x: [ops.less(ops.sum(x), lim)])
    body_g = make_region("b", [f3], lambda x: [x * 2.0])
    scan_g = make_region("s", [f3, f3], lambda c, x: [c + x, ops.sum(c)])
    return {
        "cond": ([i, f3], {"branches": br}),
        "while_loop": ([s, f3], {"cond": cond_g, "body": body_g, "n_cond": 1, "n_body": 0, "max_steps": 10}),
        "scan": ([f3, TensorType((4, 3), "float32")], {"body": scan_g, "n_consts": 0, "n_carry": 1, "length": 4,
                                                        "reverse": True}),
        "checkpoint": ([f3], {"body": br[1], "policy": None}),
    }


EXAMPLES.update(_control_examples())

from custom_regions import ir_text_examples  # noqa: E402  (custom_jvp_call / custom_vjp_call)
EXAMPLES.update(ir_text_examples())


def test_every_primitive_has_an_example():
    missing = sorted(set(PRIMITIVES) - set(EXAMPLES))
    assert not missing, f"add an entry to EXAMPLES in {__file__} for the new primitive(s) {missing}"
    stale = sorted(set(EXAMPLES) - set(PRIMITIVES))
    assert not stale, f"EXAMPLES names primitives that are not registered: {stale}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip_every_primitive(name):
    in_types, attrs = EXAMPLES[name]
    g = single_node_graph(name, in_types, attrs)
    verify(g)
    text = print_graph(g)
    assert f"= {name}(" in text
    assert 'loc("model.py":12)' in text
    round_trip(g)


def test_canonical_format():
    b = GraphBuilder("forecast")
    w = b.add_input(T(16, 16), "weight")
    bias = b.add_input(T(16), "bias")
    x = b.add_input(T(1, 16), "x")
    (wt,) = b.emit(PRIMITIVES["transpose"], [w], {"perm": (1, 0)}, Loc("model.py", 2))
    (y,) = b.emit(PRIMITIVES["matmul"], [x, wt], {}, Loc("model.py", 2))
    (z,) = b.emit(PRIMITIVES["add"], [y, bias])
    (s,) = b.emit(PRIMITIVES["sum"], [z], {"keepdims": False, "axes": (0,)})
    g = b.finish([s, x])
    assert print_graph(g) == (
        'func @forecast(%weight: f32[16,16], %bias: f32[16], %x: f32[1,16]) -> (f32[16], f32[1,16]) {\n'
        '  %0 = transpose(%weight) {perm=[1, 0]} : f32[16,16]  loc("model.py":2)\n'
        '  %1 = matmul(%x, %0) : f32[1,16]  loc("model.py":2)\n'
        '  %2 = add(%1, %bias) : f32[1,16]\n'
        '  %3 = sum(%2) {axes=[0], keepdims=false} : f32[16]\n'
        '  return %3, %x\n'
        '}')
    assert str(g) == print_graph(g)
    round_trip(g)


def test_input_names_fall_back_to_argN():
    b = GraphBuilder("grad(f)")  # not an identifier: quoted
    vals = [b.add_input(T(2), n) for n in ("x", "x", None, "bad-name", "arg0", "w.1", "_k", "arg5")]
    b.input_names[2] = None
    (y,) = b.emit(PRIMITIVES["add"], [vals[0], vals[1]])
    g = b.finish([y] + vals)
    text = print_graph(g)
    header = text.splitlines()[0]
    assert header.startswith('func @"grad(f)"(%arg0: f32[2], %arg1: f32[2], %arg2: f32[2], %arg3: f32[2], '
                             '%arg4: f32[2], %w.1: f32[2], %_k: f32[2], %arg7: f32[2])')
    g2 = round_trip(g)
    assert g2.name == "grad(f)"
    assert g2.input_names == ["arg0", "arg1", "arg2", "arg3", "arg4", "w.1", "_k", "arg7"]


def test_graph_without_nodes_and_outputs():
    g = GraphBuilder("empty").finish([])
    assert print_graph(g) == "func @empty() -> () {\n  return\n}"
    round_trip(g)


def test_module_of_several_funcs():
    g1 = single_node_graph("tanh", [T(3)], {})
    g2 = single_node_graph("sum", [T(2, 3)], {"axes": (1,), "keepdims": False})
    text = print_module([g1, g2])
    gs = parse_module(text)
    assert [g.name for g in gs] == ["one_tanh", "one_sum"]
    assert print_module(gs) == text
    with pytest.raises(IRParseError, match="parse_module") as ei:
        parse_graph(text)
    assert (ei.value.line, ei.value.column) == (6, 1)


def test_hand_written_text_with_comments_and_names():
    text = """
    // a fixture written by hand: free layout, named results
    func @f(%x: f32[4,3]) -> (f32[3]) {
      %h = tanh(%x) : f32[4,3]   // comment
      %s = sum(%h) {keepdims=false, axes=[0]}
           : f32[3]
      return %s
    }
    """
    g = parse_graph(text)
    assert print_graph(g) == (
        "func @f(%x: f32[4,3]) -> (f32[3]) {\n"
        "  %0 = tanh(%x) : f32[4,3]\n"
        "  %1 = sum(%0) {axes=[0], keepdims=false} : f32[3]\n"
        "  return %1\n"
        "}")
    assert g.nodes[1].attrs == {"axes": (0,), "keepdims": False}


# ---------------------------------------------------------------- attribute values


AWKWARD = [1 / 3, 1e-300, -0.0, 0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308, 0.1,
           -2.5e-8, 123456789.0, 65504.0, 1e16]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_float_constants_round_trip_bit_exactly(dtype):
    d = dt.as_dtype(dtype)
    with np.errstate(all="ignore"):
        arr = np.array(AWKWARD, np.float64).astype(d.np)
    # NaNs with non-default payloads and sign
    u = {16: np.uint16, 32: np.uint32, 64: np.uint64}[d.bits]
    canon = int(np.array([np.nan]).astype(d.np).view(u)[0])
    odd = np.array([canon | 1, canon | (1 << (d.bits - 1))], u).view(d.np)
    arr = np.concatenate([arr, odd]).reshape(2, 8)
    g = single_node_graph("constant", [], {"value": arr, "dtype": dtype})
    text = print_graph(g)
    assert f"array<{d.short}[2,8]>" in text and "nan:0x" in text
    g2 = round_trip(g)
    back = g2.nodes[0].attrs["value"]
    assert back.dtype == d.np and back.tobytes() == arr.tobytes()


def test_float32_prints_shortest_float64_repr():
    g = single_node_graph("constant", [], {"value": np.array([0.1, 1 / 3], np.float32), "dtype": "float32"})
    assert "array<f32[2]>[0.10000000149011612, 0.3333333432674408]" in print_graph(g)


@pytest.mark.parametrize("dtype,values", [
    ("int32", [0, -1, 2 ** 31 - 1, -2 ** 31]),
    ("int64", [0, -7, 2 ** 63 - 1, -2 ** 63]),
    ("bool", [True, False, True, True]),
])
def test_int_and_bool_constants_round_trip(dtype, values):
    d = dt.as_dtype(dtype)
    arr = np.array(values, d.np).reshape(2, 2)
    g = single_node_graph("constant", [], {"value": arr, "dtype": dtype})
    back = round_trip(g).nodes[0].attrs["value"]
    assert back.dtype == d.np and back.tobytes() == arr.tobytes()


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (2, 0), (1, 1, 1)])
def test_degenerate_array_shapes(shape):
    arr = np.full(shape, -0.0, np.float64)
    g = single_node_graph("constant", [], {"value": arr, "dtype": "float64"})
    back = round_trip(g).nodes[0].attrs["value"]
    assert back.shape == shape and back.tobytes() == arr.tobytes()


@pytest.mark.parametrize("value", [1 / 3, 1e-300, -0.0, math.inf, -math.inf, math.nan, 5e-324,
                                   struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]])
def test_scalar_float_attribute_round_trip(value):
    g = single_node_graph("full", [], {"shape": (2,), "value": value, "dtype": "float64"})
    back = round_trip(g).nodes[0].attrs["value"]
    assert type(back) is float and struct.pack("<d", back) == struct.pack("<d", value)


def test_numpy_scalar_attributes_print_as_python_scalars():
    g = single_node_graph("reshape", [T(6)], {"shape": (np.int64(2), np.int32(3))})
    text = print_graph(g)
    assert "{shape=[2, 3]}" in text
    back = parse_graph(text).nodes[0].attrs["shape"]
    assert back == (2, 3) and all(type(v) is int for v in back)


@pytest.fixture
def test_prims():
    """Temporary primitives with unusual attributes / results (removed afterwards)."""
    def attrs_rule(x, **attrs):
        return TensorType(x.shape, x.dtype)

    def call_rule(*xs, body, **attrs):
        assert [x for x in xs] == body.in_types
        return body.out_types

    def split_rule(x):
        return [TensorType((x.shape[0] // 2,), x.dtype), TensorType((x.shape[0] - x.shape[0] // 2,), x.dtype)]

    made = {
        "test_attrs": Primitive("test_attrs", shape_rule=attrs_rule, impl=lambda x, **a: x),
        "test_call": Primitive("test_call", shape_rule=call_rule, impl=None, num_outputs=1),
        "test_split": Primitive("test_split", shape_rule=split_rule, impl=None, num_outputs=2),
    }
    for k, p in made.items():
        assert k not in PRIMITIVES
        PRIMITIVES[k] = p
    try:
        yield made
    finally:
        for k in made:
            PRIMITIVES.pop(k, None)


def test_attribute_kinds_round_trip(test_prims):
    attrs = {
        "none": None, "t": True, "f": False, "big": 2 ** 70, "neg": -3,
        "s": 'quote " backslash \\ newline \n tab \t unicode é \u0001 end',
        "empty_list": [], "nested": ((1, 2), [3.5, None], "x", (True,)),
        "dtype_obj": dt.float32, "scalar_arr": np.array(7, np.int32),
    }
    b = GraphBuilder("attrs")
    x = b.add_input(T(3))
    (y,) = b.emit(test_prims["test_attrs"], [x], attrs)
    g = b.finish([y])
    text = print_graph(g)
    assert ('{big=1180591620717411303424, dtype_obj="float32", empty_list=[], f=false, neg=-3, '
            'nested=[[1, 2], [3.5, none], "x", [true]], none=none, s="quote \\" backslash \\\\ newline \\n tab \\t unicode é \\u{1} end", '
            'scalar_arr=array<i32[]>7, t=true}') in text
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    a2 = g2.nodes[0].attrs
    assert a2["nested"] == ((1, 2), (3.5, None), "x", (True,))
    assert a2["empty_list"] == () and a2["s"] == attrs["s"] and a2["dtype_obj"] == "float32"
    assert a2["none"] is None and a2["t"] is True and a2["big"] == 2 ** 70


def test_nested_graph_attribute_and_multiple_results(test_prims):
    inner = GraphBuilder("body")
    a = inner.add_input(T(4), "a")
    (n,) = inner.emit(PRIMITIVES["neg"], [a], {}, Loc("inner.py", 3))
    body = inner.finish([n])
    b = GraphBuilder("outer")
    x = b.add_input(T(4), "x")
    (y,) = b.emit(test_prims["test_call"], [x], {"body": body, "tag": "t"}, Loc("outer.py", 9))
    lo, hi = b.emit(test_prims["test_split"], [y])
    g = b.finish([hi, lo])
    text = print_graph(g)
    assert text == (
        'func @outer(%x: f32[4]) -> (f32[2], f32[2]) {\n'
        '  %0 = test_call(%x) {body=func @body(%a: f32[4]) -> (f32[4]) {\n'
        '      %0 = neg(%a) : f32[4]  loc("inner.py":3)\n'
        '      return %0\n'
        '    }, tag="t"} : f32[4]  loc("outer.py":9)\n'
        '  %1, %2 = test_split(%0) : f32[2], f32[2]\n'
        '  return %2, %1\n'
        '}')
    g2 = round_trip(g)
    assert isinstance(g2.nodes[0].attrs["body"], Graph)
    assert g2.outputs == [g2.nodes[1].outputs[1], g2.nodes[1].outputs[0]]


def test_loc_with_odd_file_names():
    g = single_node_graph("tanh", [T(2)], {}, Loc('C:\\dir\\"q".py', 1234))
    assert 'loc("C:\\\\dir\\\\\\"q\\".py":1234)' in print_graph(g)
    assert round_trip(g).nodes[0].loc == Loc('C:\\dir\\"q".py', 1234)


# ---------------------------------------------------------------- random graphs

_UNARY = ["neg", "exp", "tanh", "sin", "cos", "sigmoid", "square", "abs", "relu", "floor", "erf", "stop_gradient"]
_BINARY = ["add", "sub", "mul", "div", "maximum", "minimum", "pow"]
_REDUCE = ["sum", "max", "min", "prod"]


@st.composite
def random_graphs(draw):
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    b = GraphBuilder(draw(st.sampled_from(["main", "f", "grad_f", "jvp(f)"])))
    x = b.add_input(TensorType(shape, dtype), "x")
    vals = [x]
    cur = x
    for step in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "reshape", "transpose", "broadcast",
                                     "constant", "full"]))
        loc = Loc("rand.py", step + 1) if draw(st.booleans()) else None
        s = cur.type.shape
        if kind == "unary":
            (cur,) = b.emit(PRIMITIVES[draw(st.sampled_from(_UNARY))], [cur], {}, loc)
        elif kind == "binary":
            other = draw(st.sampled_from([v for v in vals if v.type == cur.type] + [None]))
            if other is None:
                other = b.add_input(cur.type, draw(st.sampled_from(["y", None, "x"])))
            (cur,) = b.emit(PRIMITIVES[draw(st.sampled_from(_BINARY))], [cur, other], {}, loc)
        elif kind == "reduce":
            axes = tuple(sorted(draw(st.sets(st.integers(0, max(len(s) - 1, 0)), max_size=len(s)))))
            if not s:
                axes = ()
            (cur,) = b.emit(PRIMITIVES[draw(st.sampled_from(_REDUCE))], [cur],
                            {"axes": axes, "keepdims": draw(st.booleans())}, loc)
        elif kind == "reshape":
            new = draw(st.sampled_from([tuple(reversed(s)), (int(np.prod(s)),), (1,) + s]))
            (cur,) = b.emit(PRIMITIVES["reshape"], [cur], {"shape": new}, loc)
        elif kind == "transpose":
            perm = tuple(draw(st.permutations(range(len(s)))))
            (cur,) = b.emit(PRIMITIVES["transpose"], [cur], {"perm": perm}, loc)
        elif kind == "broadcast":
            (cur,) = b.emit(PRIMITIVES["broadcast_to"], [cur], {"shape": (2,) + s}, loc)
        elif kind == "constant":
            vals_f = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64),
                                   min_size=int(np.prod(s)), max_size=int(np.prod(s))))
            with np.errstate(all="ignore"):
                arr = np.array(vals_f, np.float64).astype(cur.type.dtype.np).reshape(s)
            (c,) = b.emit(PRIMITIVES["constant"], [], {"value": arr, "dtype": cur.type.dtype.name}, loc)
            (cur,) = b.emit(PRIMITIVES["add"], [cur, c], {}, loc)
        else:
            v = draw(st.floats(allow_nan=True, allow_infinity=True))
            (c,) = b.emit(PRIMITIVES["full"], [], {"shape": s, "value": v, "dtype": cur.type.dtype.name}, loc)
            (cur,) = b.emit(PRIMITIVES["mul"], [c, cur], {}, loc)
        vals.append(cur)
    outs = draw(st.lists(st.sampled_from(vals), min_size=1, max_size=3))
    return b.finish(outs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_round_trip_random_graphs(g):
    verify(g)
    round_trip(g)


# ---------------------------------------------------------------- prints_equal

def _agrees(a, b):
    """prints_equal answers what comparing the printed texts answers, both ways round."""
    same = print_graph(a) == print_graph(b)
    assert prints_equal(a, b) is same and prints_equal(b, a) is same, (print_graph(a), print_graph(b))
    return same


def _fixture_graphs():
    import pathlib
    here = pathlib.Path(__file__).parent
    files = sorted(here.glob("ir_fixtures/**/*.gir")) + sorted(here.glob("fuzz_fixtures/*.gir")) + \
        sorted(here.glob("simplify_fixtures/*.gir"))
    out = []
    for f in files:
        try:
            out += parse_module(f.read_text())
        except IRParseError:  # the parse-error fixtures
            continue
    return out


def test_prints_equal_agrees_with_the_text_on_the_fixtures_and_their_rewrites():
    """Simplify's fixed-point test: every fixture graph against a re-parsed copy of itself (new
    objects, same text), its cse, dce and simplify rounds, and the next fixture graph."""
    from graphad.passes.cleanup import cse, dce
    from graphad.passes.simplify import algebra_round
    graphs = _fixture_graphs()
    assert len(graphs) > 80
    outcomes = set()
    for i, g in enumerate(graphs):
        variants = [g, parse_graph(print_graph(g))]
        for rewrite in (cse, dce, algebra_round):
            try:
                variants.append(rewrite(g))
            except GraphadError:  # a fixture the rewrite rejects (the errors fixtures)
                pass
        variants.append(graphs[(i + 1) % len(graphs)])
        for a in variants:
            for b in variants:
                outcomes.add(_agrees(a, b))
    assert outcomes == {True, False}


def test_prints_equal_where_python_equality_and_the_text_disagree(test_prims):
    def one(attrs, loc=None, name="x", gname="f"):
        b = GraphBuilder(gname)
        x = b.add_input(T(3), name)
        (y,) = b.emit(test_prims["test_attrs"], [x], attrs, loc)
        return b.finish([y])

    nan2 = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    # equal text though not `==` (or not identical): must say equal
    for a, b in [({"v": (1, 2)}, {"v": [1, 2]}), ({"v": float("nan")}, {"v": float("nan")}),
                 ({"v": np.array([1.0, np.nan])}, {"v": np.array([1.0, np.nan])}), ({"v": np.int64(3)}, {"v": 3}),
                 ({"v": dt.float32}, {"v": "float32"}), ({"v": ((1, 2), 3.5)}, {"v": [[1, 2], 3.5]})]:
        assert _agrees(one(a), one(b))
    # `==` though not the same text: must say different
    for a, b in [({"v": 0.0}, {"v": -0.0}), ({"v": 1}, {"v": 1.0}), ({"v": 1}, {"v": True}),
                 ({"v": (0.0,)}, {"v": (-0.0,)}), ({"v": (1,)}, {"v": (True,)}),
                 ({"v": float("nan")}, {"v": nan2}), ({"v": 1}, {"w": 1}), ({"v": 1}, {"v": 1, "w": 2})]:
        assert not _agrees(one(a), one(b))
    assert _agrees(one({}, Loc("m.py", 3)), one({}, Loc("m.py", 3)))
    assert not _agrees(one({}, Loc("m.py", 3)), one({}, Loc("m.py", 4)))
    assert not _agrees(one({}, Loc("m.py", 3)), one({}))
    assert not _agrees(one({}, name="x"), one({}, name="y"))
    assert _agrees(one({}, name="arg0"), one({}, name=None))  # both print %arg0
    assert not _agrees(one({}, gname="f"), one({}, gname="g"))
    # which values a node reads
    def sub(swap):
        b = GraphBuilder("f")
        x, y = b.add_input(T(3), "x"), b.add_input(T(3), "y")
        (z,) = b.emit(PRIMITIVES["sub"], [y, x] if swap else [x, y])
        return b.finish([z])
    assert _agrees(sub(False), sub(False)) and not _agrees(sub(False), sub(True))
    # the order of the outputs, and values the graph does not define (printed %?N)
    b = GraphBuilder("f")
    x = b.add_input(T(4), "x")
    lo, hi = b.emit(test_prims["test_split"], [x])
    g1, g2, g3 = b.finish([lo, hi]), b.finish([hi, lo]), b.finish([lo, hi])
    assert _agrees(g1, g3) and not _agrees(g1, g2)
    stray = Graph("f", [x], [], [lo], ["x"])
    assert _agrees(stray, Graph("f", [x], [], [hi], ["x"]))  # both `return %?0`


# ---------------------------------------------------------------- parse errors

GOOD = """func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {
  %0 = tanh(%x) : f32[3]
  %1 = add(%0, %y) : f32[3]  loc("m.py":4)
  return %1
}
"""


def test_good_fixture_parses():
    g = parse_graph(GOOD)
    verify(g)
    assert g.nodes[1].loc == Loc("m.py", 4)


def _err(text, source_name="<ir>") -> IRParseError:
    with pytest.raises(IRParseError) as ei:
        parse_graph(text, source_name)
    return ei.value


@pytest.mark.parametrize("old,new,line,col,fragment", [
    ("tanh(%x)", "tanhh(%x)", 2, 8, "unknown primitive 'tanhh'; did you mean tanh"),
    ("add(%0, %y)", "add(%0, %z)", 3, 16, "undefined value %z"),
    ("%1 = add", "%0 = add", 3, 3, "value %0 is defined twice"),
    ("%0 = tanh", "%x = tanh", 2, 3, "value %x is defined twice"),
    ("(%x) : f32[3]", "(%x) : f32[4]", 2, 19, "declared f32[4] but the shape rule gives f32[3]"),
    ("add(%0, %y) : f32[3]", "add(%0, %y) : f32[3] $", 3, 29, "unexpected character '$'"),
    ("  return %1\n", "", 4, 1, "missing 'return'"),
    ("%0 = tanh(%x) : f32[3]", "%0, %9 = tanh(%x) : f32[3], f32[3]", 2, 3,
     "wrong arity: tanh produces 1 result(s), 2 declared"),
    ("%0 = tanh(%x) : f32[3]", "%0 = tanh(%x) : f32[3], f32[3]", 2, 19, "1 result name(s) but 2 result type(s)"),
    ("add(%0, %y)", "add(%0)", 3, 8, "invalid add"),
    ("tanh(%x) : f32[3]", "tanh(%x) {bogus=1} : f32[3]", 2, 8, "bad arguments"),
    ("f32[3], %y", "f33[3], %y", 1, 13, "unknown dtype 'f33'"),
    ("-> (f32[3])", "-> (f32[2])", 4, 10, "has type f32[3] but @f declares f32[2]"),
    ("return %1", "return %1, %0", 4, 14, "declares 1 result(s) but returns 2"),
    ('loc("m.py":4)', 'loc("m.py:4)', 3, 34, "unterminated string"),
    ('loc("m.py":4)', 'loc("m.py", 4)', 3, 40, "expected ':' between the file and the line"),
    ("%1 = add", "1 = add", 3, 3, "expected a node"),
    ("func @f", "fun @f", 1, 1, "expected 'func'"),
    ("%0 = tanh(%x) : f32[3]", "%0 = tanh(%x) f32[3]", 2, 17, "expected ':' before the result types"),
    ("f32[3], %y", "f32[3,], %y", 1, 19, "expected a non-negative dimension"),
    ("f32[3], %y", "f32[-3], %y", 1, 17, "expected a non-negative dimension"),
])
def test_parse_errors_have_precise_positions(old, new, line, col, fragment):
    assert old in GOOD
    e = _err(GOOD.replace(old, new, 1), "fixture.ir")
    assert fragment in e.bare_message, e.bare_message
    assert (e.line, e.column) == (line, col), str(e)
    assert str(e).startswith(f"fixture.ir:{line}:{col}: ")


@pytest.mark.parametrize("attr,col,fragment", [
    ("value=array<f32[2]>[1.0]", 35, "array axis 0 has 1 entries"),
    ("value=array<f32[2]>[1.0, true]", 41, "expected a number in a f32 array"),
    ("value=array<i32[1]>[2147483648]", 36, "does not fit in i32"),
    ("value=array<i32[1]>[1.5]", 36, "expected an integer"),
    ("value=array<f32[1]>[nan:0x1]", 36, "is not the bit pattern of a f32 NaN"),
    ("value=opaque<\"x\">", 22, "opaque attribute"),
    ("value=1.0, value=2.0", 27, "attribute 'value' is given twice"),
    ("value=\"a\\qb\"", 24, "unknown escape"),
    ("value=@", 22, "expected a function name"),
])
def test_attribute_parse_errors(attr, col, fragment):
    text = f"func @g() -> (f32[1]) {{\n  %0 = full() {{{attr}}} : f32[1]\n  return %0\n}}"
    e = _err(text)
    assert fragment in e.bare_message, e.bare_message
    assert (e.line, e.column) == (2, col), str(e)


def test_parse_error_on_empty_and_trailing_input():
    assert (_err("").line, _err("").column) == (1, 1)
    e = _err(GOOD + "\n junk")
    assert (e.line, e.column) == (7, 2) and "after the end of @f" in e.bare_message


def test_parse_error_in_nested_graph_is_located(test_prims):
    text = ("func @o(%x: f32[2]) -> (f32[2]) {\n"
            "  %0 = test_call(%x) {body=func @b(%a: f32[2]) -> (f32[2]) {\n"
            "      %0 = neg(%x) : f32[2]\n"       # %x is not visible inside the nested func
            "      return %0\n"
            "    }} : f32[2]\n"
            "  return %0\n"
            "}")
    e = _err(text)
    assert (e.line, e.column) == (3, 16) and "undefined value %x" in e.bare_message


# ---------------------------------------------------------------- export


def _export_graph() -> Graph:
    b = GraphBuilder("exp")
    x = b.add_input(T(2, 3), "x")
    y = b.add_input(T(3), "y")
    (s,) = b.emit(PRIMITIVES["add"], [x, y], {}, Loc("m.py", 5))
    (r,) = b.emit(PRIMITIVES["sum"], [s], {"axes": (0,), "keepdims": False})
    (c,) = b.emit(PRIMITIVES["constant"], [], {"value": np.arange(40, dtype=np.float32), "dtype": "float32"})
    return b.finish([r, x])


def test_to_networkx_contents():
    import networkx as nx
    g = to_networkx(_export_graph())
    assert isinstance(g, nx.MultiDiGraph)
    assert g.graph["name"] == "exp"
    assert list(g.nodes) == ["in0", "in1", "n0", "n1", "n2", "out0", "out1"]
    assert g.nodes["in0"] == {**g.nodes["in0"], "kind": "input", "name": "x", "type": "f32[2,3]"}
    n0 = g.nodes["n0"]
    assert n0["kind"] == "op" and n0["op"] == "add" and n0["loc"] == "m.py:5"
    assert n0["in_types"] == ["f32[2,3]", "f32[3]"] and n0["out_types"] == ["f32[2,3]"]
    assert n0["results"] == ["%0"] and n0["attrs"] == {}
    assert g.nodes["n1"]["attrs"] == {"axes": (0,), "keepdims": False} and g.nodes["n1"]["loc"] is None
    assert g.nodes["out1"]["kind"] == "output" and g.nodes["out1"]["type"] == "f32[2,3]"
    edges = sorted((u, v, d["value"], d["type"], d["src_index"], d["dst_index"]) for u, v, d in g.edges(data=True))
    assert edges == [("in0", "n0", "%x", "f32[2,3]", 0, 0), ("in0", "out1", "%x", "f32[2,3]", 0, 0),
                     ("in1", "n0", "%y", "f32[3]", 0, 1), ("n0", "n1", "%0", "f32[2,3]", 0, 0),
                     ("n1", "out0", "%1", "f32[3]", 0, 0)]
    assert nx.is_directed_acyclic_graph(g)


def test_to_dot_is_deterministic_and_complete():
    dot = to_dot(_export_graph())
    assert dot == to_dot(_export_graph())
    assert dot.startswith('digraph "exp" {\n')
    assert dot.rstrip().endswith("}")
    assert '"in0" [label="%x: f32[2,3]", shape=ellipse];' in dot
    assert '"n0" [label="%0 = add\\n : f32[2,3]\\nm.py:5", shape=box];' in dot
    assert '"n1" [label="%1 = sum\\naxes=[0]\\nkeepdims=false\\n : f32[3]", shape=box];' in dot
    assert '"in1" -> "n0" [label="f32[3]"];' in dot
    assert '"n1" -> "out0" [label="f32[3]"];' in dot
    assert "..." in dot  # the 40-element constant is abbreviated
    edge_lines = [ln for ln in dot.splitlines() if "->" in ln]
    assert edge_lines[0].startswith('  "in0" -> "n0"') and edge_lines[-1].startswith('  "in0" -> "out1"')


def test_render_dot_without_graphviz(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphadError, match="Graphviz is not installed.*graphviz"):
        render_dot(to_dot(_export_graph()), tmp_path / "g.svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_render_dot_with_graphviz(tmp_path):
    out = render_dot(to_dot(_export_graph()), tmp_path / "g.svg")
    assert "<svg" in open(out).read()
