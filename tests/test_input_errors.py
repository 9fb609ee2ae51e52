"""Issue 12, finding 7: input that used to escape as a raw Python/NumPy/TVM error (or be accepted)
is refused with a GraphadError naming what is wrong; the CLI exits 1 with FILE:LINE:COL.

Library: rank above 64, ragged lists, jit's static_argnums out of range / negative / repeated,
TensorSpec with a negative (or non-int, or too large) dimension, bfloat16 tensors imported through
DLPack (torch's, TVM's). CLI and IR: 5,000-level nesting, sum over a repeated axis and dimensions
beyond int64 (refused by the parser, and by the verifier for graphs built in Python), `cache ls`
on a manifest with an out-of-range time, two funcs of one name, `full value="abc"`,
`reverse-ad:wrt=0|0` and `vmap:size=-1`.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import DTypeError, GraphadError, IRParseError, ShapeError, TransformError, VerifyError


def run_cli(*argv) -> tuple[int, str, str]:
    from graphad.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def assert_located_error(path, status, out, err, line: int, fragment: str) -> None:
    """Exit 1 and one line `PATH:LINE:COL: error: ...fragment...`, no traceback."""
    assert status == 1, (status, out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"{path}:{line}:"), err
    assert "error:" in err and fragment in err, err


# ================================================================ the library

def test_rank_above_64_is_a_shape_error_eager_and_traced():
    x = gd.Tensor([1.0])
    with pytest.raises(ShapeError, match="rank 65 is above the maximum rank 64"):
        ops.reshape(x, (1,) * 65)
    with pytest.raises(ShapeError, match="rank 65 is above the maximum rank 64"):
        gd.make_graph(lambda v: ops.reshape(v, (1,) * 64)[None])(x)
    ops.reshape(x, (1,) * 64)  # 64 is allowed
    with pytest.raises(ShapeError, match="rank 65"):
        gd.TensorSpec((1,) * 65)
    deep = 1.0
    for _ in range(65):
        deep = [deep]
    with pytest.raises(ShapeError, match="more than 64 levels deep"):
        gd.Tensor(deep)


def test_ragged_list_is_a_shape_error():
    with pytest.raises(ShapeError, match="ragged"):
        gd.Tensor([[1, 2], [3]])
    with pytest.raises(ShapeError, match="ragged"):
        gd.Tensor([[1.0, 2.0], [3.0, [4.0]]])
    with pytest.raises(ShapeError, match="ragged"):
        gd.Tensor(np.array([[1, 2], [3]], dtype=object).tolist())


@pytest.mark.parametrize("bad,fragment", [
    (-3, "negative static_argnums -3 cannot be resolved: it has 2 positional parameter"),
    ((0, -2), "repeated static_argnums in \\(0, 0\\)"),  # -2 is 0 here
    ((1, 1), "repeated static_argnums"),
    ("1", "must be an int or a tuple of ints"),
    (1.0, "must be an int or a tuple of ints"),
    (True, "must be an int or a tuple of ints"),
])
def test_static_argnums_are_checked_when_jit_is_made(bad, fragment):
    with pytest.raises(TransformError, match=fragment):
        gd.jit(lambda a, b: a * b, static_argnums=bad)


def test_negative_static_argnums_count_from_the_end_as_in_jax():
    f = gd.jit(lambda a, n: a * n, static_argnums=-1)
    assert f.static_argnums == (1,) and f.static_argnames == ("n",)
    np.testing.assert_array_equal(f(gd.Tensor([2.0]), 3).numpy(), [6.0])
    with pytest.raises(TransformError, match=r"takes \*args, so positions count from 0 \(at .*test_input_errors"):
        gd.jit(lambda *a: a[0], static_argnums=-1)


def test_static_argnums_out_of_range_at_the_call():
    f = gd.jit(lambda a, b: a * b, static_argnums=5)
    with pytest.raises(TransformError, match="static_argnums 5 is out of range for a call with 2"):
        f(gd.Tensor([1.0]), 2.0)
    with pytest.raises(TransformError, match="static_argnums 5 is out of range"):
        f.lower(gd.TensorSpec((1,)), 2.0)
    g = gd.jit(lambda a, b: a * b, static_argnums=1)  # in range: works, eagerly and ahead of time
    np.testing.assert_allclose(g(gd.Tensor([2.0]), 3.0).asnumpy(), [6.0])
    assert "mul" in g.lower(gd.TensorSpec((1,)), 3.0).as_text()


@pytest.mark.parametrize("shape,fragment", [
    ((-1,), "negative dimension -1"),
    ((3, -2), "negative dimension -2"),
    ((2.5,), "not an int"),
    ((True,), "not an int"),
    ((1 << 63,), "does not fit in int64"),
    (None, "must be a tuple of ints"),
])
def test_tensorspec_refuses_bad_shapes(shape, fragment):
    with pytest.raises(ShapeError, match=fragment):
        gd.TensorSpec(shape)


def test_tensorspec_accepts_ints_and_numpy_ints():
    assert gd.TensorSpec((np.int64(3), 4)).shape == (3, 4)
    assert gd.TensorSpec(5).shape == (5,)
    assert gd.TensorSpec(()).shape == ()


def _tvm_bfloat16(values):
    """A TVM bfloat16 tensor (a DLPack exporter NumPy cannot import directly) with these values."""
    tvm = pytest.importorskip("tvm")
    import ml_dtypes
    bits = np.asarray(values, dtype=ml_dtypes.bfloat16).view(np.uint16)
    return tvm.runtime.tensor(bits)._create_view(bits.shape, "bfloat16")


class _TorchLike:
    """A stand-in for a torch bfloat16 tensor: a DLPack exporter whose dtype prints as torch's."""

    dtype = "torch.bfloat16"

    def __init__(self, inner):
        self.inner = inner

    def __dlpack__(self, *args, **kwargs):
        return self.inner.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.inner.__dlpack_device__()


def test_bfloat16_dlpack_tensors_are_imported_bit_exactly():
    import ml_dtypes
    values = [1.5, -2.25, 3.0e38, float("nan"), -0.0]
    want = np.asarray(values, dtype=ml_dtypes.bfloat16).view(np.uint16)
    for src in (_tvm_bfloat16(values), _TorchLike(_tvm_bfloat16(values))):
        t = gd.Tensor(src)
        assert t.dtype is gd.bfloat16 and t.shape == (5,)
        np.testing.assert_array_equal(t.asnumpy().view(np.uint16), want)
    # as an argument of a transformed function ("argument of type Tensor is not a tensor" before)
    out = gd.jit(lambda v: v * 2)(_TorchLike(_tvm_bfloat16([1.0, 2.0])))
    assert out.dtype is gd.bfloat16
    np.testing.assert_array_equal(out.asnumpy().astype(np.float32), [2.0, 4.0])


def test_real_torch_bfloat16_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    t = gd.Tensor(x)
    assert t.dtype is gd.bfloat16
    np.testing.assert_array_equal(t.asnumpy().astype(np.float32), [1.5, -2.0])


def test_a_dlpack_object_numpy_cannot_read_is_a_graphad_error():
    class Broken:
        dtype = "float8"

        def __dlpack__(self, *args, **kwargs):
            raise BufferError("no DLPack export for float8")

        def __dlpack_device__(self):
            return (1, 0)

    with pytest.raises(DTypeError, match="cannot import Broken .*no DLPack export for float8"):
        gd.Tensor(Broken())
    with pytest.raises(GraphadError, match="no DLPack export for float8"):
        gd.jit(lambda v: v)(Broken())


# ================================================================ the IR: parser and verifier

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_cli_deep_nesting_is_a_located_error(tmp_path):
    n = 5000
    lists = _write(tmp_path, "lists.gir", "func @f(%x: f32[1]) -> (f32[1]) {\n  %0 = exp(%x) {note="
                   + "[" * n + "1" + "]" * n + "} : f32[1]\n  return %0\n}\n")
    assert_located_error(lists, *run_cli("opt", lists), 2, "nested more than 64 levels deep")
    funcs = "func @f(%x: f32[1]) -> (f32[1]) {\n  return %x\n}"
    for _ in range(300):  # funcs nested in attributes, 300 deep
        funcs = "func @g(%x: f32[1]) -> (f32[1]) {\n  %0 = exp(%x) {body=" + funcs + "} : f32[1]\n  return %0\n}"
    nested = _write(tmp_path, "funcs.gir", funcs + "\n")
    status, out, err = run_cli("opt", nested)
    assert status == 1 and "nested more than 64 levels deep" in err and err.startswith(f"{nested}:"), err


def test_cli_sum_over_a_repeated_axis_is_refused_when_read(tmp_path):
    p = _write(tmp_path, "sum.gir", "func @f(%x: f32[3,4]) -> (f32[3]) {\n"
               "  %0 = sum(%x) {axes=[1, 1], keepdims=false} : f32[3]\n  return %0\n}\n")
    for cmd in ("opt", "lower", "compile"):
        extra = ("-o", tmp_path / "out.gad") if cmd == "compile" else ()
        assert_located_error(p, *run_cli(cmd, p, *extra), 2, "repeated axis in axes (1, 1)")


def test_cli_dimensions_beyond_int64_and_rank_above_64(tmp_path):
    big = _write(tmp_path, "big.gir", "func @f(%x: f32[99999999999999999999]) -> (f32[99999999999999999999]) {\n"
                 "  %0 = exp(%x) : f32[99999999999999999999]\n  return %0\n}\n")
    for cmd in ("opt", "lower"):
        assert_located_error(big, *run_cli(cmd, big), 1, "does not fit in int64")
    many = _write(tmp_path, "many.gir", "func @f(%x: f32[4294967296,4294967296,4]) -> (f32[1]) {\n"
                  "  return %x\n}\n")
    assert_located_error(many, *run_cli("opt", many), 1, "more than int64 can count")
    rank = _write(tmp_path, "rank.gir", "func @f(%x: f32[" + ",".join(["1"] * 65) + "]) -> (f32[1]) {\n"
                  "  %0 = reshape(%x) {shape=[1]} : f32[1]\n  return %0\n}\n")
    assert_located_error(rank, *run_cli("opt", rank), 1, "at most 64 dimensions")


def test_cli_two_funcs_of_one_name(tmp_path):
    p = _write(tmp_path, "two.gir", "func @f(%x: f32[3]) -> (f32[3]) {\n  return %x\n}\n"
               "func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = sin(%x) : f32[3]\n  return %0\n}\n")
    assert_located_error(p, *run_cli("opt", p), 4, "func @f is defined twice (first at line 1)")


def test_cli_full_with_a_string_value(tmp_path):
    p = _write(tmp_path, "full.gir", 'func @f() -> (f32[3]) {\n'
               '  %0 = full() {dtype="float32", shape=[3], value="abc"} : f32[3]\n  return %0\n}\n')
    for cmd in ("opt", "lower"):
        assert_located_error(p, *run_cli(cmd, p), 2, "the fill value 'abc' is not a number")


@pytest.mark.parametrize("passes,fragment", [
    ("reverse-ad:wrt=0|0", "option wrt=0|0: index 0 is repeated"),
    ("reverse-ad:outputs=0|0", "option outputs=0|0: index 0 is repeated"),
    ("forward-ad:wrt=1|1", "option wrt=1|1: index 1 is repeated"),
    ("vmap:size=-1", "option size must be at least 1, got -1"),
    ("vmap:size=2;batched=0|0", "index 0 is repeated"),
])
def test_cli_bad_pass_options(tmp_path, passes, fragment):
    p = _write(tmp_path, "f.gir", "func @f(%x: f32[3], %y: f32[3]) -> (f32[3]) {\n"
               "  %0 = mul(%x, %y) : f32[3]\n  return %0\n}\n")
    status, out, err = run_cli("opt", p, "--passes", passes)
    assert status == 1 and out == "" and err.count("\n") == 1, (status, out, err)
    assert fragment in err and "None" not in err, err


def _graph_with(node_prim, attrs, in_types, out_type):
    """A graph built in Python (not parsed) holding one node, whatever its attributes say."""
    from graphad.ir.core import Graph, Node, Value
    ins = [Value(t, None, i, f"x{i}") for i, t in enumerate(in_types)]
    node = Node(node_prim, ins, attrs, [out_type])
    return Graph("f", ins, [node], node.outputs)


def test_the_verifier_refuses_what_the_parser_refuses():
    from graphad.ir import verify
    from graphad.ir.core import Graph, TensorType, Value
    from graphad.prims.registry import get_primitive
    f32 = gd.float32
    g = _graph_with(get_primitive("sum"), {"axes": (1, 1), "keepdims": False}, [TensorType((3, 4), f32)],
                    TensorType((3,), f32))
    with pytest.raises(VerifyError, match="repeated axis"):
        verify(g)
    g = _graph_with(get_primitive("full"), {"shape": (3,), "value": "abc", "dtype": "float32"}, [],
                    TensorType((3,), f32))
    with pytest.raises(VerifyError, match="not a number"):
        verify(g)
    huge = Value(TensorType((10 ** 20,), f32), None, 0, "x")
    with pytest.raises(VerifyError, match=r"dimension 100000000000000000000 is not in \[0, 2\^63 - 1\]"):
        verify(Graph("f", [huge], [], [huge]))
    deep = Value(TensorType((1,) * 65, f32), None, 0, "x")
    with pytest.raises(VerifyError, match="rank 65 is above the maximum rank 64"):
        verify(Graph("f", [deep], [], [deep]))


def test_parse_errors_are_irparseerrors_with_positions():
    from graphad.ir import parse_module
    with pytest.raises(IRParseError) as e:
        parse_module("func @f(%x: f32[3]) -> (f32[3]) {\n  return %x\n}\nfunc @f(%x: f32[3]) -> (f32[3]) {\n"
                     "  return %x\n}\n")
    assert (e.value.line, e.value.column) == (4, 6)
    with pytest.raises(IRParseError) as e:
        parse_module("func @f(%x: f32[3,4]) -> (f32[3]) {\n  %0 = sum(%x) {axes=[1.5], keepdims=false} : f32[3]\n"
                     "  return %0\n}\n")
    assert e.value.line == 2 and "is not an int" in str(e.value)


# ================================================================ the cache listing

@pytest.mark.tvm
def test_cache_ls_lists_a_manifest_with_an_out_of_range_time(tmp_path, monkeypatch):
    from graphad.runtime import cache
    from graphad.runtime.executable import compile_graph
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    cache.cache_clear(disk=False)
    try:
        compile_graph(gd.make_graph(lambda v: ops.sin(v) * 3.0)(gd.Tensor(np.ones(5, np.float32))))
        (man_path,) = (tmp_path / "cache" / "v1").glob("*.json")
        for created in (1e300, float("inf"), -1e30):
            man = json.loads(man_path.read_text())
            man["created"] = created
            man["manifest_sha256"] = cache.manifest_checksum(man)  # a valid entry, with a strange time
            man_path.write_text(json.dumps(man))
            status, out, err = run_cli("cache", "ls")
            assert status == 0, err
            assert "?" * 16 in out and "@" in out and "invalid" not in out, out
    finally:
        cache.cache_clear(disk=False)


def test_python_integer_out_of_an_integer_dtype_is_refused_not_wrapped():
    """A Python int that the integer dtype it meets cannot hold raises IntegerOverflowError (an
    OverflowError, as NumPy 2 and JAX raise), naming the op and the line; a cast wrapped it: int32
    3 + 2**40 was 3. The dtype's own bounds are accepted, and int64 takes 2**40."""
    import graphad as gd
    from graphad import ops
    from graphad.errors import IntegerOverflowError
    t = gd.Tensor(np.array([3], np.int32))
    with pytest.raises(IntegerOverflowError, match=r"add\(i32\[1\], 1099511627776\): integer 1099511627776 "
                                                   r"out of bounds for int32 .* \(at .*test_input_errors.py:\d+\)"):
        t + 2**40
    with pytest.raises(OverflowError, match="out of bounds for int32"):
        gd.jit(lambda a: a * -(2**31 + 1))(t)
    with pytest.raises(IntegerOverflowError, match=r"where\(bool\[1\], i32\[1\], -4294967296\)"):
        ops.where(t > 0, t, -(2**32))
    with pytest.raises(IntegerOverflowError, match=r"full\(\(2,\), 1099511627776, 'int32'\)"):
        ops.full((2,), 2**40, "int32")
    np.testing.assert_array_equal((t + (2**31 - 4)).asnumpy(), [2**31 - 1])
    np.testing.assert_array_equal((t * 0 + -(2**31)).asnumpy(), [-2**31])
    with pytest.raises(IntegerOverflowError, match="out of bounds for int32"):
        t + np.int64(2**40)  # a NumPy integer scalar too
    with pytest.raises(IntegerOverflowError):
        ops.constant([2**40], "int32")
    with pytest.raises(IntegerOverflowError, match=r"full\(\(2,\), 25000000000.0, 'int32'\): the value 25000000000.0 "
                       r"\(from float64 data\) does not fit in int32"):
        ops.full((2,), 2.5e10, "int32")
    # a float is checked as a float (int(1e300) printed 300 digits; -2**31 - 0.5 passed in full
    # alone, where Tensor() and constant refuse it)
    with pytest.raises(IntegerOverflowError, match=r"the value 1e\+300 \(from float64"):
        ops.full((2,), 1e300, "int32")
    with pytest.raises(IntegerOverflowError, match="does not fit in int32"):
        ops.full((2,), -2147483648.5, "int32")
    np.testing.assert_array_equal(ops.full((2,), -2147483648.0, "int32").asnumpy(), [-2**31] * 2)
    with pytest.raises(IntegerOverflowError, match="fill value nan cannot be stored in int32"):
        ops.full((2,), float("nan"), "int32")
    with pytest.raises(IntegerOverflowError, match="graphad has no wider integer type"):
        gd.Tensor(np.array([1], np.int64)) + 2**70
    np.testing.assert_array_equal((gd.Tensor(np.array([3], np.int64)) + 2**40).asnumpy(), [2**40 + 3])


# ---- a new user's mistakes (a helper's trial, 2026-12-04): sizes that are not ints, layer sizes,
# recursion under graph mode, and messages that named the wrong kind of thing

_X6 = np.arange(6.0)


@pytest.mark.parametrize("call", [
    lambda: ops.zeros((2.5, 3)), lambda: ops.zeros(("2", 3)), lambda: ops.ones(2.0, 3),
    lambda: ops.full((2.5,), 1.0), lambda: gd.Tensor(_X6).reshape((2.5, 3)),
    lambda: ops.broadcast_to(gd.Tensor(_X6), (2.9, 6)), lambda: ops.eye(2.5), lambda: ops.eye(2, 3.0),
    lambda: ops.randn(2.5, 3), lambda: ops.rand("3"), lambda: ops.pad(gd.Tensor(_X6), 1.5),
    lambda: ops.topk(gd.Tensor(_X6), 2.5), lambda: ops.top_k(gd.Tensor(_X6), 2.0), lambda: gd.set_seed(1.5),
    lambda: gd.jit(lambda a: a.reshape((2.5, 3)))(gd.Tensor(_X6)),
], ids=["zeros", "zeros-str", "ones", "full", "reshape", "broadcast_to", "eye", "eye-m", "randn", "rand",
        "pad", "topk", "top_k", "set_seed", "jit-reshape"])
def test_a_size_that_is_not_an_int_is_refused_not_truncated(call):
    """int(2.5) is 2: a float size was truncated ((2.5, 3) gave a (2, 3) array; a reshape of six
    elements to (2.5, 3) went through). NumPy and JAX refuse it (a TypeError): so does graphad,
    with an ArgumentError (a TypeError) naming the op and the value."""
    with pytest.raises(gd.errors.ArgumentError, match=r"is not an int|not an int:") as e:
        call()
    assert isinstance(e.value, TypeError)


def test_integer_sizes_of_every_kind_are_still_taken():
    assert ops.zeros((np.int64(2), np.int32(3))).shape == (2, 3)
    assert ops.zeros(2, 3).shape == (2, 3) and ops.ones(4).shape == (4,)
    assert gd.Tensor(_X6).reshape((np.int64(3), -1)).shape == (3, 2)
    assert ops.broadcast_to(gd.Tensor(_X6), (2, 6)).shape == (2, 6)
    assert ops.pad(gd.Tensor(_X6), (1, np.int64(2))).shape == (9,)
    assert ops.eye(np.int64(3)).shape == (3, 3)
    assert ops.topk(gd.Tensor(_X6), np.int64(2))[0].shape == (2,)


@pytest.mark.parametrize("make", [
    lambda: gd.nn.Dense(0, 2), lambda: gd.nn.Dense(-1, 2), lambda: gd.nn.Dense(3, -2), lambda: gd.nn.Dense(3.5, 2),
    lambda: gd.nn.Conv2d(3, 2, 0), lambda: gd.nn.Conv2d(3, 2, (3, 0)), lambda: gd.nn.Conv2d(3, 2, 3, stride=0),
    lambda: gd.nn.Embedding(4.5, 2), lambda: gd.nn.Embedding(-1, 2), lambda: gd.nn.LayerNorm(-3),
    lambda: gd.nn.LayerNorm((4, 0)), lambda: gd.nn.BatchNorm2d(-1), lambda: gd.nn.MaxPool2d(0),
    lambda: gd.nn.AvgPool2d(2, stride=0),
])
def test_a_layer_size_that_is_not_a_positive_int_is_refused(make):
    """Dense(0, 2) divided by zero in its initialiser, Dense(-1, 2) raised `math domain error`,
    Embedding(4.5, 2) had 4 rows: each is now a GraphadError naming the layer and the argument."""
    with pytest.raises(GraphadError, match=r"must be a positive int"):
        make()


def test_recursion_whose_base_case_tests_a_tensor_is_a_trace_error_under_jit():
    """Graph mode traces both branches of an `if` on a tensor, so the recursive branch recursed
    without end: a raw RecursionError from about 1000 graphad frames. Now a TraceError with the
    user's recursive line; the process goes on compiling."""
    def grow(a):
        if a.sum() > 100:
            return a
        return grow(a * 2)
    x = gd.Tensor(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(grow(x).numpy(), [32.0, 64.0, 96.0])  # eagerly, a Python recursion
    with pytest.raises(gd.errors.TraceError, match=r"maximum recursion depth exceeded while tracing at "
                                                   r".*test_input_errors.py:\d+.*while_loop"):
        gd.jit(grow)(x)
    np.testing.assert_array_equal(gd.jit(lambda a: a + 1)(x).numpy(), [2.0, 3.0, 4.0])

    def fact(n):  # recursion on Python values traces as before
        return 1 if n == 0 else n * fact(n - 1)
    np.testing.assert_array_equal(gd.jit(lambda a: a * fact(5))(x).numpy(), [120.0, 240.0, 360.0])


def test_structure_mismatches_name_what_is_there():
    x = gd.Tensor(np.ones((2, 3)))
    with pytest.raises(GraphadError, match=r"but the output there is one tensor"):
        gd.vmap(lambda a: a * 2, out_axes=(0, 1))(x)
    with pytest.raises(TransformError, match=r"is an int \(3\)"):
        gd.vmap(lambda a, n: a * n, in_axes=(0, 0))(x, 3)


def test_a_non_tensor_output_names_the_transformation_and_the_line():
    x = gd.Tensor(np.ones(3))
    with pytest.raises(gd.errors.TraceError, match=r"^vmap: output 1 of the traced function is a str \('s'\), "
                                                   r"not a tensor.*\(at .*test_input_errors.py:\d+\)"):
        gd.vmap(lambda a: (a, "s"))(x)
    with pytest.raises(gd.errors.TraceError, match=r"^grad: output 0 .* is a str"):
        gd.grad(lambda a: "s")(x)


def test_a_list_of_traced_values_as_an_operand_is_stacked_as_eagerly():
    """`a * (a, a)` stacks the tuple as NumPy does, eagerly and traced alike; traced it was a
    TraceError about Python control flow (Tensor() asked the tracers for data)."""
    x = gd.Tensor(np.array([1.0, 2.0, 3.0]))
    for f in (lambda a: a * (a, a), lambda a: a * [[a]], lambda a: ops.maximum([a, 2 * a], a)):
        want = f(x)
        got = gd.jit(f)(x)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_quantile_of_a_traced_q_says_q_must_be_concrete():
    """The check meant for a traced q never fired (a tracer has an asnumpy, the one that says it
    has no value): the user got the generic conversion TraceError (a helper's trial)."""
    x = gd.Tensor(np.arange(5.0))
    with pytest.raises(ShapeError, match=r"q must be concrete"):
        gd.jit(lambda a, q: ops.quantile(a, q))(x, gd.Tensor(0.5))
    assert float(gd.jit(lambda a: ops.quantile(a, 0.5))(x).numpy()) == 2.0


def test_float_axes_and_split_points_are_refused_by_name():
    """`x.sum(axis=0.0)` and `expand_dims(x, 0.5)` said "'float' object is not iterable";
    `split(x, [1.5])` truncated the point to 1."""
    x = gd.Tensor(np.ones((4, 3)))
    with pytest.raises(gd.errors.ArgumentError, match=r"axis must be an int or a sequence of ints, got float 0.0"):
        x.sum(axis=0.0)
    with pytest.raises(gd.errors.ArgumentError, match=r"axis must be an int or a sequence of ints, got float 0.5"):
        ops.expand_dims(x, 0.5)
    with pytest.raises(gd.errors.ArgumentError, match=r"indices_or_sections must be an int or a sequence"):
        ops.split(x, 2.5)
    with pytest.raises(gd.errors.ArgumentError, match=r"has an entry that is not an int: 1.5"):
        ops.split(x, [1.5])
    assert [t.shape for t in ops.split(x, np.array([1, 3]))] == [(1, 3), (2, 3), (1, 3)]


def test_an_escaped_tracer_says_so():
    """A tracer kept in a global list and read after jit returned got the advice about Python
    control flow on tensors; it is an escaped tracer (as `leak[0] + 1` already said)."""
    leak = []
    x = gd.Tensor(np.ones(3))
    gd.jit(lambda a: (leak.append(a), a + 1)[1])(x)
    for use in (lambda t: t.asnumpy(), float, lambda t: t.item()):
        with pytest.raises(gd.errors.TraceError, match=r"escaped tracer"):
            use(leak[0])


def test_static_argnames_naming_no_parameter_warn_as_in_jax():
    """A misspelt static_argnames left the argument traced, silently (JAX warns)."""
    with pytest.warns(UserWarning, match=r"static_argnames \['scal'\] name no parameter"):
        gd.jit(lambda x, scale=1.0: x * scale, static_argnames="scal")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gd.jit(lambda x, **kw: x, static_argnames="scal")  # **kwargs may receive it
        gd.jit(lambda x, *, scale: x * scale, static_argnames="scale")


def test_an_unknown_target_is_refused_by_set_target():
    """`gd.set_target("nonsense")` was taken and failed at the next compilation, far from the typo."""
    prev = gd.get_target()
    with pytest.raises(gd.errors.CompileError, match=r"unknown target 'nonsense'"):
        gd.set_target("nonsense")
    with pytest.raises(gd.errors.CompileError, match=r"cannot use 3 as a compile target"):
        gd.set_target(3)
    assert gd.get_target() is prev  # unchanged by the refusals
    for ok in ("cpu", "llvm", {"kind": "llvm"}, None):
        gd.set_target(ok)
    gd.set_target(prev)
