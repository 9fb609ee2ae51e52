"""jit's Python-number arguments are weakly typed, as JAX's jit traces them.

A Python int, float or complex passed to a `gd.jit` function as an ordinary argument is a graph
input (a new value runs the same compiled code), held exactly (int64, float64, complex128) and
typed like a literal where it meets a tensor: `x * s` with a float64 `x` multiplies by the
number itself, with a float32 `x` by the number rounded once to float32. Before this, the
number was a float32 tensor (an int64 one for an int), so a float64 computation got 0.1 rounded
to float32 and an int32 one was widened to int64: jit changed the results of the code it
compiled. Oracles: the same expression run eagerly with the literal (graphad's eager operand
rules, another code path) and NumPy in float64.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import IntegerOverflowError


@pytest.fixture(params=["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def backend(request):
    gd.set_backend(request.param)
    yield request.param
    gd.set_backend("numpy")


def _same(a, b):
    """Same dtype and the same bits (NaN equal to NaN)."""
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    x, y = np.asarray(a.numpy()), np.asarray(b.numpy())
    assert x.shape == y.shape
    np.testing.assert_array_equal(x, y)


DTYPES = ["float16", "bfloat16", "float32", "float64", "int32", "int64", "bool", "complex64", "complex128"]
NUMBERS = [0.1, 3, -7, 1e-8, 2.5 + 0.3j]
OPS = {"add": lambda x, s: x + s, "mul": lambda x, s: s * x, "sub": lambda x, s: x - s,
       "maximum": lambda x, s: ops.maximum(x, s)}


def _tensor(dtype):
    data = np.array([1.5, -2.25, 3.0, 0.0])
    if dtype == "bool":
        data = data > 0
    elif dtype.startswith("int"):
        data = np.array([1, -2, 3, 0])
    elif dtype.startswith("complex"):
        data = data + 0.5j
    return gd.Tensor(data, getattr(gd, dtype + "_" if dtype == "bool" else dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_number_argument_is_typed_as_the_literal_would_be(backend, dtype):
    """jit(op)(x, s) gives what op(x, s) gives eagerly, where s is a literal: dtype and bits.
    A combination eager arithmetic refuses is left out (complex with maximum, a float with bool
    subtraction...): its refusal is another test's business."""
    x = _tensor(dtype)
    for name, op in OPS.items():
        f = gd.jit(op)
        for s in NUMBERS:
            try:
                want = op(x, s)
            except Exception:  # noqa: BLE001 -- eager refuses this combination
                continue
            _same(f(x, s), want)


def test_float64_arithmetic_gets_the_number_itself(backend):
    x = gd.Tensor(np.array([3.0, -1.0, 1e300]))
    f = gd.jit(lambda x, h: (x + h) / h)
    for h in (0.1, 1e-7, 3.3):
        np.testing.assert_array_equal(f(x, h).numpy(), (np.array([3.0, -1.0, 1e300]) + h) / h)
    c = gd.Tensor(np.array([1 + 1j]))
    np.testing.assert_array_equal(gd.jit(lambda c, z: c * z)(c, 0.1 + 0.2j).numpy(), np.array([1 + 1j]) * (0.1 + 0.2j))


def test_a_new_number_runs_the_same_compiled_function():
    traced = []

    def f(x, s):
        traced.append(1)
        return x * s
    jf = gd.jit(f)
    x = gd.Tensor(np.array([2.0]))
    for s in (0.1, 0.2, -0.0, float("inf")):
        np.testing.assert_array_equal(jf(x, s).numpy(), np.array([2.0]) * s)
    assert len(traced) == 1
    jf(x, 3)  # an int is another signature (another kind of number)
    assert len(traced) == 2


def test_a_number_alone_has_its_kinds_default_dtype(backend):
    ident = gd.jit(lambda s: s)
    assert ident(0.1).dtype == gd.float32 and ident(0.1).numpy() == np.float32(0.1)
    assert ident(3).dtype == gd.int64
    assert ident(1 + 2j).dtype == gd.complex64
    assert ident(True).dtype == gd.bool_


def test_a_weak_number_is_not_a_float64_tensor():
    """A NumPy float64 scalar is a float64 tensor (strongly typed), a Python float is not: the
    two are different signatures with different result dtypes."""
    f = gd.jit(lambda x, s: x * s)
    x = gd.Tensor(np.array([1.0], np.float32))
    assert f(x, 0.5).dtype == gd.float32
    assert f(x, np.float64(0.5)).dtype == gd.float64
    assert f(x, 0.5).dtype == gd.float32


def test_keyword_numbers_are_weak_too(backend):
    f = gd.jit(lambda x, *, s: x * s)
    x = gd.Tensor(np.array([3.0]))
    np.testing.assert_array_equal(f(x, s=0.1).numpy(), np.array([3.0]) * 0.1)
    assert f(gd.Tensor(np.array([3.0], np.float32)), s=0.1).dtype == gd.float32


def test_an_int_that_does_not_fit_the_tensors_dtype_is_refused_not_wrapped(backend):
    f = gd.jit(lambda x, n: x + n)
    x = gd.Tensor(np.array([1, 2], np.int32))
    _same(f(x, 5), gd.Tensor(np.array([6, 7], np.int32)))
    with pytest.raises(IntegerOverflowError, match=r"argument 'n' is the Python int 4294967296.*int32"):
        f(x, 2 ** 32)
    with pytest.raises(IntegerOverflowError):
        x + 2 ** 32  # eager arithmetic refuses it the same way
    _same(f(x, -(2 ** 31)), gd.Tensor(np.array([1, 2], np.int32) + np.int32(-(2 ** 31))))
    # the same number next to an int64 or a float tensor fits: no refusal
    g = gd.jit(lambda a, b, n: (a + n, b * n))
    a, b = gd.Tensor(np.array([1], np.int64)), gd.Tensor(np.array([1.0], np.float32))
    out = g(a, b, 2 ** 40)
    assert out[0].numpy()[0] == 2 ** 40 + 1 and out[1].numpy()[0] == np.float32(2 ** 40)


def test_a_number_meets_a_tensor_inside_an_inner_function(backend):
    """The weak number reaches nested jit calls and gradients traced inside the outer one."""
    inner = gd.jit(lambda x, s: x * s)
    outer = gd.jit(lambda x, s: inner(x, s) + gd.grad(lambda y: (y * s).sum())(x))
    x = gd.Tensor(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(outer(x, 0.1).numpy(), np.array([3.0, 4.0]) * 0.1 + 0.1)


def test_a_number_assigned_to_a_parameter_is_stored_exactly(backend):
    """`p.set_data(h)` / `ops.assign(p, h)` inside jit stored the float32 view of a float64
    Parameter's new value (0.1 as 0.10000000149011612: a helper's port of a torch lr change); an
    int is checked against an int32 Parameter as against an int32 tensor."""
    p = gd.Parameter(gd.Tensor(np.array(1.0)), name="lr")
    q = gd.Parameter(gd.Tensor(np.zeros(3)), name="q")
    r = gd.Parameter(gd.Tensor(np.zeros(2, np.float32)), name="r")
    k = gd.Parameter(gd.Tensor(np.zeros(2, np.int32)), name="k")

    def step(v, n):
        p.set_data(v)
        ops.assign(q, v)
        ops.assign(r, v)
        ops.assign(k, n)
        return p * 1.0
    out = gd.jit(step)(0.1, 7)
    assert float(out.numpy()) == 0.1 and float(p.numpy()) == 0.1
    np.testing.assert_array_equal(q.numpy(), [0.1] * 3)
    np.testing.assert_array_equal(r.numpy(), np.full(2, 0.1, np.float32))
    np.testing.assert_array_equal(k.numpy(), [7, 7])
    with pytest.raises(IntegerOverflowError):
        gd.jit(step)(0.1, 2 ** 40)


def test_arithmetic_of_numbers_alone_stays_exact_and_weak(backend):
    """`h * 2`, `s / t - s ** 2`, `exp(-s)` of jit's numbers are computed on the exact values (as
    Python computes them eagerly) and stay weakly typed: next to a float64 tensor the result is
    the float64 of the Python arithmetic, next to a float32 one that value rounded once."""
    x64 = gd.Tensor(np.array([3.0, -1.0]))
    x32 = gd.Tensor(np.array([3.0, -1.0], np.float32))
    f = gd.jit(lambda x, s, t: x * (s * 2) + (s / t - s ** 2) + ops.exp(-s))
    for s, t in ((0.1, 0.3), (1e-7, 3.0)):
        want = np.array([3.0, -1.0]) * (s * 2) + (s / t - s ** 2) + np.exp(-s)
        np.testing.assert_allclose(f(x64, s, t).numpy(), want, rtol=1e-15, atol=0)  # (exp's ulp)
        assert f(x32, s, t).dtype == gd.float32
    # eager graphad with the literals: the same values (Python does the number arithmetic)
    _same(gd.jit(lambda x, s: x * (s * 3))(x32, 0.1), x32 * (0.1 * 3))
    _same(gd.jit(lambda x, n: x * (n + 0.5))(x64, 3), x64 * 3.5)
    assert gd.jit(lambda s: s * 3)(0.1).dtype == gd.float32  # alone: the default dtype
    # an integer result is an ordinary int64 value: never wrapped into int32 unchecked
    xi = gd.Tensor(np.array([3, -1], np.int32))
    out = gd.jit(lambda x, n: x + (n * 3 + 1))(xi, 2 ** 40)
    assert out.dtype == gd.int64 and out.numpy()[0] == 3 + 3 * 2 ** 40 + 1


def test_a_python_number_tangent_of_jvp_is_exact():
    """`gd.jvp(f, (x,), (0.2,))` of a float64 x: the tangent went through float32 (0.20000000298;
    a helper's port of JAX's api tests). It is weakly typed as jit's numbers are."""
    x = gd.Tensor(np.float64(2.0))
    _, t = gd.jvp(lambda x: x * 3.0, (x,), (0.2,))
    assert t.dtype == gd.float64 and float(t.numpy()) == 0.2 * 3.0
    _, t = gd.jvp(lambda x: x * 3.0, (gd.Tensor(np.float32(2.0)),), (0.2,))
    assert t.dtype == gd.float32 and float(t.numpy()) == float(np.float32(0.2) * np.float32(3.0))
