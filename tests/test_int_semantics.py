"""Integer arithmetic: compiled code, the reference interpreter and Python's own integers agree,
overflow included: int32 and int64 sums, differences, products and negations wrap around, as
NumPy's and XLA's do (lowering/int_wrap.py); integer pow, division and remainder are exact
(int32 pow wraps as NumPy's).

The oracle is Python's unbounded integers reduced to the dtype's width, not the code under test.
Before: integer pow went through float64 (int64 3 ** 39 off by 11, an int32 overflow gave
INT_MIN); the reference divided int64 in float64 ((2**62 + 1) // 1 gave 2**62); TVM's floormod
overflowed near the limits (-INT_MAX mod INT_MAX gave 2); and compiled code took an overflow as
undefined (LLVM's `nsw`): `x + 1 > x` was True at INT_MAX.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphad as gd
from graphad import ops


def wrap(v: int, bits: int) -> int:
    m = 1 << bits
    return (v + (m >> 1)) % m - (m >> 1)


def py_div(x: int, y: int, bits: int) -> int:  # C's truncating division, x / 0 = INT_MIN
    if y == 0:
        return -(1 << (bits - 1))
    q = abs(x) // abs(y)
    return wrap(q if (x < 0) == (y < 0) else -q, bits)


def py_floordiv(x: int, y: int, bits: int) -> int:  # NumPy's: x // 0 = 0
    if y == 0:
        return 0
    q = py_div(x, y, bits)
    if y == -1:
        return q
    r = x - q * y
    return q - 1 if r != 0 and (r < 0) != (y < 0) else q


def py_pow(x: int, y: int, bits: int) -> int:
    if y < 0:
        return 1 if x == 1 else ((-1) ** (-y) if x == -1 else (-(1 << (bits - 1)) if x == 0 else 0))
    return wrap(pow(x, y, 1 << bits), bits)


BINARY = {
    "add": (lambda a, b: a + b, lambda x, y, n: wrap(x + y, n)),
    "sub": (lambda a, b: a - b, lambda x, y, n: wrap(x - y, n)),
    "mul": (lambda a, b: a * b, lambda x, y, n: wrap(x * y, n)),
    "floordiv": (lambda a, b: a // b, py_floordiv),
    "remainder": (lambda a, b: a % b, lambda x, y, n: 0 if y in (0, -1) else x % y),
    "max": (ops.maximum, lambda x, y, n: max(x, y)),
    "pow": (lambda a, b: ops.power(a, ops.remainder(b, 70) - 3), lambda x, y, n: py_pow(x, y % 70 - 3, n)),
}
UNARY = {
    "neg": (lambda a: -a, lambda x, n: wrap(-x, n)),
    "abs": (ops.abs, lambda x, n: wrap(abs(x), n)),
    "square": (ops.square, lambda x, n: wrap(x * x, n)),
    "inc": (lambda a: a + 1, lambda x, n: wrap(x + 1, n)),
    "dec": (lambda a: a - 1, lambda x, n: wrap(x - 1, n)),
    # sign tests after a wrapped op, fused into its kernel: a cast back from the unsigned type
    # was taken as >= 0 (relu(-x) was -x, sign(2x) 0 for negative x)
    "relu": (ops.relu, lambda x, n: max(x, 0)),
    "sign": (ops.sign, lambda x, n: (x > 0) - (x < 0)),
}
TESTS = {  # a comparison fused after the arithmetic: where the simplifier's assumptions showed
    "lt0": (lambda a: ops.less(a, 0), lambda x: x < 0),
    "ge0": (lambda a: ops.greater_equal(a, 0), lambda x: x >= 0),
}


def edge_values(dtype, rng, n):
    """Values near the dtype's limits, anywhere in its range, up to 2**10 (int32) or 2**20
    (int64) and small ones: most programs overflow somewhere."""
    i = np.iinfo(dtype)
    special = [i.max, i.min, i.max - 1, i.min + 1, -1, 0, 1, 2, 3, 46341, -46341, 65536, i.max // 2 + 1]
    top = 2**10 if dtype == np.int32 else 2**20
    rest = rng.integers(-top, top, n - len(special), dtype=dtype, endpoint=True)
    wide = rng.integers(i.min, i.max, n, dtype=dtype, endpoint=True)
    small = rng.integers(-40, 40, n, dtype=dtype)
    v = np.concatenate([np.array(special, dtype), rest])
    u = rng.random(n)
    return np.where(u < 0.3, small, np.where(u < 0.5, wide, v)).astype(dtype)


def random_program(rng):
    """A chain of 3-5 random ops on two operands: (graphad function, Python oracle)."""
    steps = []
    for _ in range(int(rng.integers(3, 6))):
        kind = rng.choice(["binary", "unary", "unary", "binary"])
        table = BINARY if kind == "binary" else UNARY
        steps.append((kind, str(rng.choice(sorted(table))), bool(rng.random() < 0.5)))
    test = str(rng.choice(sorted(TESTS))) if rng.random() < 0.5 else None

    def f(a, b):
        for kind, name, swap in steps:
            if kind == "binary":
                a = BINARY[name][0](*((b, a) if swap else (a, b)))
            else:
                a = UNARY[name][0](a)
        return TESTS[test][0](a) if test else a

    def oracle(x, y, bits):
        """The program on Python's integers, each step wrapped to `bits`; also whether a step
        overflowed."""
        overflowed = False
        for kind, name, swap in steps:
            if kind == "binary":
                exact = BINARY[name][1](*((y, x) if swap else (x, y)), 256)  # wide: no wrap from in-range operands
                x = BINARY[name][1](*((y, x) if swap else (x, y)), bits)
            else:
                exact = UNARY[name][1](x, 256)
                x = UNARY[name][1](x, bits)
            overflowed |= exact != x
        return (TESTS[test][1](x) if test else x), overflowed
    return f, oracle, (steps, test)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_random_integer_programs_match_python_integers(dtype):
    rng = np.random.default_rng(20261202 + np.dtype(dtype).itemsize)
    bits = np.iinfo(dtype).bits
    n = 256
    overflowed = 0
    for _ in range(12):
        f, oracle, desc = random_program(rng)
        x, y = edge_values(dtype, rng, n), edge_values(dtype, rng, n)
        results = [oracle(int(a), int(b), bits) for a, b in zip(x, y)]
        overflowed += sum(o for _, o in results)
        want = np.array([w for w, _ in results])
        for backend in ("numpy", "tvm"):
            gd.set_backend(backend)
            try:
                got = gd.jit(f)(gd.Tensor(x), gd.Tensor(y)).asnumpy()
            finally:
                gd.set_backend("numpy")
            bad = np.flatnonzero(got.astype(want.dtype) != want)
            assert bad.size == 0, (backend, desc, x[bad[:3]], y[bad[:3]], got[bad[:3]], want[bad[:3]])
    assert overflowed > 12 * n // 16, overflowed  # the wrapped elements were checked too


def test_sign_of_a_wrapped_result_in_one_kernel():
    """abs, relu, sign, maximum and a comparison with 0 right after add, sub, mul, neg and square
    in one fused kernel, against Python's integers (a version that computed these ops in an
    unsigned type to make them wrap got 30 of 252 such pairs wrong: TVM's bound analysis took the
    cast back as >= 0, and LLVM's `nuw` flags made a negative operand's unsigned overflow poison)."""
    producers = {"neg": (lambda a, b: -a, lambda x, y: -x), "inc": (lambda a, b: a + 1, lambda x, y: x + 1),
                 "mul2": (lambda a, b: a * 2, lambda x, y: 2 * x), "mul-3": (lambda a, b: a * -3, lambda x, y: -3 * x),
                 "add": (lambda a, b: a + b, lambda x, y: x + y), "sub": (lambda a, b: a - b, lambda x, y: x - y),
                 "square": (lambda a, b: ops.square(a), lambda x, y: x * x)}
    consumers = {"abs": (ops.abs, abs), "relu": (ops.relu, lambda v: max(v, 0)),  # abs: wrapped below
                 "sign": (ops.sign, lambda v: (v > 0) - (v < 0)),
                 "max0": (lambda v: ops.maximum(v, 0), lambda v: max(v, 0)),
                 "lt0": (lambda v: ops.less(v, 0), lambda v: v < 0)}
    for dtype in (np.int32, np.int64):
        bits = np.iinfo(dtype).bits
        big = (2**14, -2**14) if dtype == np.int32 else (2**30, -2**30)
        i = np.iinfo(dtype)
        x = np.array([-3, 4, 0, -1, 4634, *big, i.max, i.min, i.max, i.min // 2 - 1], dtype)
        y = np.array([5, -9, 0, 1, 4634, 1, -1, 1, -1, i.max, i.min], dtype)
        for (pn, (p, pp)), (cn, (c, cp)) in itertools.product(producers.items(), consumers.items()):
            want = [int(wrap(cp(wrap(pp(int(a), int(b)), bits)), bits)) for a, b in zip(x, y)]
            gd.set_backend("tvm")
            try:
                got = gd.jit(lambda a, b: c(p(a, b)))(gd.Tensor(x), gd.Tensor(y)).asnumpy()
            finally:
                gd.set_backend("numpy")
            assert got.tolist() == [int(w) for w in want], (dtype.__name__, pn, cn, got.tolist(), want)


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_exact_pow_division_and_remainder(backend):
    """pow exact (int32 wrapping as NumPy's), division and remainder exact to the dtype's limits."""
    gd.set_backend(backend)
    try:
        i64 = np.array([3, 3, 2**62 + 1, 2**63 - 1], np.int64)
        e64 = np.array([39, 38, 1, 1], np.int64)
        assert gd.jit(lambda x, y: x ** y)(gd.Tensor(i64), gd.Tensor(e64)).asnumpy().tolist() == \
            [3**39, 3**38, 2**62 + 1, 2**63 - 1]
        d64 = np.array([2**62 + 1, 2**63 - 1, 9007199254740993, -(2**62) - 3], np.int64)
        q = gd.jit(lambda x, y: x // y)(gd.Tensor(d64), gd.Tensor(np.array([1, -1, 3, 7], np.int64))).asnumpy()
        assert q.tolist() == [2**62 + 1, -(2**63 - 1), 9007199254740993 // 3, (-(2**62) - 3) // 7]
        assert gd.jit(lambda x: x ** 20)(gd.Tensor(np.array([3], np.int32))).asnumpy().tolist() == [-808182895]
        r = gd.jit(lambda x, y: x % y)(gd.Tensor(np.array([-(2**31 - 1), 7, -7], np.int32)),
                                      gd.Tensor(np.array([2**31 - 1, -3, 3], np.int32))).asnumpy()
        assert r.tolist() == [0, -2, 2]  # (TVM's floormod gave 2 for the first)
        z = gd.jit(lambda x, y: (x // y, x % y))(gd.Tensor(np.array([-7, 7, 0], np.int32)), gd.Tensor(np.zeros(3, np.int32)))
        assert [t.asnumpy().tolist() for t in z] == [[0, 0, 0], [0, 0, 0]]  # NumPy's x // 0 and x % 0
    finally:
        gd.set_backend("numpy")


def test_overflow_is_not_folded_away():
    """Comparisons TVM's simplifier and LLVM used to settle by assuming no overflow: `x + 1 > x`
    at INT_MAX, `x - 1 < x` at INT_MIN, and `b - max(a * b, b)`, which TVM's simplifier rewrote to
    `min(b - a * b, 0)` (true only without overflow: 0 where the wrapped difference is positive)."""
    gd.set_backend("tvm")
    try:
        for dtype in (np.int32, np.int64):
            i = np.iinfo(dtype)
            x = np.array([i.max, i.min, 0, -1, 5, i.max - 1, i.min + 1, 7], dtype)
            got = gd.jit(lambda a: (ops.greater(a + 1, a), ops.less(a - 1, a)))(gd.Tensor(x))
            assert got[0].asnumpy().tolist() == [v != i.max for v in x.tolist()]
            assert got[1].asnumpy().tolist() == [v != i.min for v in x.tolist()]
            a = np.array([-1, -25, 3, 2, -1, 0, 1, 9], dtype)
            b = np.array([i.min // 2 - 5, i.min // 3, i.max // 2, i.max, i.min, 4, -4, 9], dtype)
            got = gd.jit(lambda a, b: b - ops.maximum(a * b, b))(gd.Tensor(a), gd.Tensor(b)).asnumpy()
            bits = i.bits
            want = [wrap(y - max(wrap(x * y, bits), y), bits) for x, y in zip(a.tolist(), b.tolist())]
            assert got.tolist() == want
        # an int64 power beyond the dtype's range wraps as NumPy's (its products are int64 ones)
        base = np.array([3, -3, 7, 2], np.int64)
        exp = np.array([41, 41, 30, 63], np.int64)
        got = gd.jit(lambda x, y: x ** y)(gd.Tensor(base), gd.Tensor(exp)).asnumpy()
        assert got.tolist() == [wrap(int(p) ** int(q), 64) for p, q in zip(base, exp)]
    finally:
        gd.set_backend("numpy")


@pytest.mark.parametrize("start,stop,step", [
    (-2**63, 2**63 - 1, 2**56),          # 256 values; i * step leaves int64 from the 129th on
    (2**63 - 1, -2**63, -2**55 - 3),     # descending, 511 values
    (-2**62, 2**62, 2**54 + 1),          # products past 2**63 only near the end
    (5, 2**40, 2**33),                   # in range throughout: the plain arithmetic
])
def test_compiled_int64_arange_whose_index_times_step_overflows(start, stop, step):
    """An int64 arange is `start + i * step`: every value lies between start and stop, but
    `i * step` can leave int64 on the way (NumPy's fill wraps it back). Compiled, alone (the
    kernel writes the values) and fused into a product, it equals NumPy's arange."""
    want = np.arange(start, stop, step, dtype=np.int64)
    gd.set_backend("tvm")
    try:
        alone = gd.jit(lambda x: ops.arange(start, stop, step, dtype=gd.int64))(gd.Tensor(np.int64(1)))
        scaled = gd.jit(lambda x: ops.arange(start, stop, step, dtype=gd.int64) * x)(gd.Tensor(np.int64(3)))
    finally:
        gd.set_backend("numpy")
    assert alone.asnumpy().tolist() == want.tolist()
    with np.errstate(over="ignore"):
        assert scaled.asnumpy().tolist() == (want * np.int64(3)).tolist()


def _collatz_steps(n):
    """Steps of the Collatz map from each n > 0 to 1: an int32 while_loop."""
    def cond(c):
        return ops.greater(c[0], 1)

    def body(c):
        m, k = c
        return ops.where(ops.equal(m % 2, 0), m // 2, m * 3 + 1), k + 1
    return gd.while_loop(cond, body, (n, n * 0))[1]


def _chain(v):
    """Integer arithmetic after a float computation `v` (either backend's: its float bits may
    differ between them), overflowing: the int32 cast of v, times 1000003, minus 3, times 97, plus 1."""
    return (v * 1000003 - 3) * 97 + 1


INT_KERNELS = {  # integer arithmetic fused with what made an earlier wrapping scheme slow or refused
    "after sin": lambda x: (s := ops.sin(x) * 127, _chain(ops.astype(s, "int32"))),
    "after erfinv": lambda x: (e := ops.erfinv(ops.tanh(x)) * 1e6, _chain(ops.astype(e, "int32"))),
    "bool sum": lambda x: ops.sum(ops.astype(ops.greater(x, 0.5), "int32") * 3 - 1),
    "increments": lambda x: ops.astype(x * 1e9, "int32") + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1,
    "vmap while_loop": lambda x: gd.vmap(_collatz_steps)(ops.astype(ops.abs(x) * 100, "int32") + 1),
}


@pytest.mark.parametrize("name", sorted(INT_KERNELS))
def test_wrapping_arithmetic_keeps_kernels_scheduled_and_native(name):
    """Each program compiles to one scheduled executable (no fallback to TVM's default schedules,
    no host program for the loop) and agrees with the interpreter, overflowing elements included
    (where a float computation comes first, its integer part against NumPy's wrapping arithmetic
    on the compiled float values)."""
    from graphad.ir.interpret import interpret
    from graphad.runtime.executable import Executable, compile_graph, graph_for_lowering
    x = np.linspace(-2.9, 2.9, 77).astype(np.float32)
    lowered = gd.jit(INT_KERNELS[name]).lower(gd.Tensor(x))
    g = graph_for_lowering(lowered.graph)
    exe = compile_graph(g, cache=False)
    assert isinstance(exe, Executable), exe.report
    assert not exe.report.get("fallback"), exe.report["fallback"]
    assert "host" not in str(exe.report.get("loops", "")), exe.report["loops"]
    got = [np.asarray(t._data) for t in exe([gd.Tensor(x)])]
    if len(got) == 2:
        with np.errstate(over="ignore"):
            want = _chain(got[0].astype(np.int32))
        exact = [(int(v) * 1000003 - 3) * 97 + 1 for v in got[0].astype(np.int32)]
        assert sum(v != wrap(v, 32) for v in exact) > 10  # the overflowing elements are checked
        assert got[1].tolist() == want.tolist() == [wrap(v, 32) for v in exact]
    else:
        want = interpret(g, [x])
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
