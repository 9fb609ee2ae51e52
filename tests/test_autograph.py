"""Python control flow in graph mode (graphad/frontend/autograph.py): `if` / `while` / `for` on tensors
inside gd.jit functions and Cell.construct become gd.cond / gd.while_loop / gd.scan.

Oracles: the same program written with NumPy (or run as plain Python on NumPy values), float64
central finite differences for derivatives, and the graph's text (which loop nodes it holds).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import graphad as gd
from backends import both_backends, fd_grad
from graphad import ops
from graphad.errors import TraceError
from graphad.frontend.autograph import convert

RNG = np.random.default_rng(7)
HERE = "test_autograph.py"


def T(a):
    return gd.Tensor(np.asarray(a, np.float64))


def I32(n):
    return gd.Tensor(np.int32(n))


def line_of(fn, text: str) -> int:
    """The file line of the first source line of fn that contains text."""
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, ln in enumerate(lines) if text in ln)




def text_of(fn, *args) -> str:
    return gd.jit(fn).lower(*args).as_text()


# ---------------------------------------------------------------- if


def _piecewise(x):
    if ops.sum(x) > 0:
        y = ops.sin(x) * x
    else:
        y = ops.exp(-x) + 1.0
    return y


def test_if_on_a_tensor_is_one_cond_taking_both_branches():
    traced = []

    def f(x):
        traced.append(1)  # runs once per trace: one compiled function serves both branches
        return _piecewise(x)
    jf = gd.jit(f)
    pos, neg = RNG.uniform(0.1, 1.0, 4), -RNG.uniform(0.1, 1.0, 4)
    np.testing.assert_allclose(jf(T(pos)).asnumpy(), np.sin(pos) * pos, rtol=1e-12)
    np.testing.assert_allclose(jf(T(neg)).asnumpy(), np.exp(-neg) + 1.0, rtol=1e-12)
    assert len(traced) == 1
    assert text_of(f, T(pos)).count("cond(") == 1


def test_if_compiled_with_tvm_matches_the_interpreter():
    x = RNG.standard_normal(5)
    for v in (x, -np.abs(x), np.abs(x)):
        got = both_backends(gd.jit(_piecewise), T(v))[0]
        want = np.sin(v) * v if v.sum() > 0 else np.exp(-v) + 1.0
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _three_way(x):
    s = ops.sum(x)
    if s > 1.0:
        y = x * 2.0
    elif s < -1.0:
        y = x - 1.0
    else:
        y = ops.zeros_like(x)
    return y


def _number_beside_a_vector(x):
    if ops.sum(x) > 0:
        y = 1.0
    else:
        y = x
    return ops.sum(y)


def test_if_elif_else():
    jf = gd.jit(_three_way)
    for v in ([1.0, 2.0, 0.5], [-3.0, 0.5, 0.1], [0.1, 0.2, -0.3]):
        v = np.array(v)
        want = v * 2.0 if v.sum() > 1 else v - 1.0 if v.sum() < -1 else np.zeros(3)
        np.testing.assert_allclose(jf(T(v)).asnumpy(), want, rtol=1e-12)
    assert text_of(_three_way, T(np.ones(3))).count("cond(") == 2
    # a number is a scalar: beside a non-scalar tensor it is refused, not broadcast (sum(y) was 3.0
    # where Python gives 1.0; a helper's trial), as gd.cond refuses branches of different shapes
    with pytest.raises(TraceError, match=r"variable 'y' is a float \(1.0\) in the true branch and a tensor "
                                         r"f64\[3\] in the false branch.*a Python number is a scalar"):
        gd.jit(_number_beside_a_vector)(T(np.ones(3)))


def test_boolean_operators_in_a_tensor_test():
    def f(x):
        if ops.sum(x) > 0 and not ops.max(x) > 5.0 or ops.min(x) < -10.0:
            y = x + 1.0
        else:
            y = x - 1.0
        return y
    jf = gd.jit(f)
    for v in ([1.0, 2.0], [1.0, 6.0], [-11.0, 0.0], [-1.0, 0.5]):
        v = np.array(v)
        take = (v.sum() > 0 and not v.max() > 5.0) or v.min() < -10.0
        np.testing.assert_allclose(jf(T(v)).asnumpy(), v + 1.0 if take else v - 1.0)


def _ifexp(x, y):
    z = ops.sum(ops.sin(x) * x) if ops.sum(x) > 0 else 0.0  # a number in one branch: typed as an `if` types it
    return z + (y if ops.sum(y) < 0 and not ops.max(x) > 5.0 else y * 3.0)


def test_conditional_expression_on_a_tensor_is_a_cond():
    jf = gd.jit(_ifexp)
    for a, b in (([0.5, 2.0], [-1.0, 0.5]), ([-0.5, 0.2], [1.0, 0.5]), ([6.0, 1.0], [-3.0, 0.5])):
        a, b = np.array(a), np.array(b)
        z = np.sum(np.sin(a) * a) if a.sum() > 0 else 0.0
        want = z + (b if b.sum() < 0 and not a.max() > 5.0 else b * 3.0)
        got = both_backends(jf, T(a), T(b))
        for g in got:
            np.testing.assert_allclose(g, want, rtol=1e-12)
        # reverse mode through both conds: the taken branches' derivatives
        gx = gd.grad(jf)(T(a), T(b)).asnumpy()
        want_gx = 2 * (np.sin(a) + a * np.cos(a)) if a.sum() > 0 else np.zeros(2)  # (z is added to both)
        np.testing.assert_allclose(gx, want_gx, rtol=1e-12)
    assert text_of(_ifexp, T(np.ones(2)), T(np.ones(2))).count("cond(") == 2
    # in a lambda too
    f = gd.jit(lambda x: x * 2.0 if ops.sum(x) > 0 else -x)
    np.testing.assert_allclose(f(T([1.0, 2.0])).asnumpy(), [2.0, 4.0])
    np.testing.assert_allclose(f(T([-1.0, -2.0])).asnumpy(), [1.0, 2.0])


def test_conditional_expression_on_a_python_value_evaluates_one_branch():
    def f(x, k=3):
        return x * k if k > 2 else 1 / 0  # the other branch would raise
    v = np.array([1.0, 2.0])
    np.testing.assert_allclose(gd.jit(f)(T(v)).asnumpy(), v * 3)
    assert "cond(" not in text_of(f, T(v))


def test_conditional_expression_errors_name_the_line():
    def shapes(x):
        return x if ops.sum(x) > 0 else ops.reshape(x, (2, 1))

    def vector_test(x):
        return x if x > 0 else -x

    def walrus(x):
        return (y := x) if ops.sum(x) > 0 else -x  # left as Python: an assignment would bind in a thunk

    def walrus_test(x):
        return t * 2.0 if (t := ops.sum(x)) > 0 else t  # in the test: evaluated in place, converted
    with pytest.raises(TraceError, match=rf"{HERE}:{line_of(shapes, 'reshape')}: the value is f64\[2\] in the "
                                         r"true branch and f64\[2,1\] in the false branch"):
        gd.jit(shapes)(T([1.0, 2.0]))
    with pytest.raises(TraceError, match=rf"{HERE}:{line_of(vector_test, 'else -x')}: the condition of this "
                                         r"`\.\.\. if \.\.\. else \.\.\.` is a tensor of shape \(2,\)"):
        gd.jit(vector_test)(T([1.0, 2.0]))
    with pytest.raises(TraceError, match=rf"{HERE}:{line_of(walrus, 'y := x')}: this `\.\.\. if \.\.\. else "
                                         r"\.\.\.` depends on a traced value \(bool\[\]\) and cannot be converted "
                                         r"to gd.cond because it contains an assignment expression"):
        gd.jit(walrus)(T([1.0, 2.0]))
    assert gd.jit(walrus_test)(T([1.0, 2.0])).asnumpy() == 6.0
    assert gd.jit(walrus_test)(T([-1.0, -2.0])).asnumpy() == -3.0


def test_and_or_whose_operands_read_the_frame_stay_python():
    """An `and` / `or` in a test whose operands hold `:=` or `locals()` is evaluated in place, as
    Python evaluates it (made thunks, `locals()` read the thunk's frame and a name bound by `:=`
    was undefined after it)."""
    def reads_locals(x, k=2.0):
        return ops.sin(x) if "k" in locals() and k > 1 else -x

    def binds(x, k=2.0):
        y = ops.sin(x) if (m := k) > 0 and m < 5 else -x
        return y + m
    np.testing.assert_allclose(gd.jit(reads_locals)(T([1.0])).asnumpy(), np.sin([1.0]))
    np.testing.assert_allclose(gd.jit(binds)(T([1.0, 2.0])).asnumpy(), np.sin([1.0, 2.0]) + 2.0)


def test_chained_comparisons_in_tests():
    """`a < b < c` in a test is `a < b and b < c` with b evaluated once: element-wise on tensors
    (one cond), Python's short circuit on Python values."""
    def f(x):
        s = ops.sum(x)
        if 0.0 < s < 1.0:
            y = x * 2.0
        else:
            y = -x
        return y + (1.0 if -1.0 <= s <= 0.5 else 0.0)
    jf = gd.jit(f)
    for v in ([0.2, 0.3], [0.7, 0.6], [-0.3, -0.4], [-2.0, 0.5]):
        v = np.array(v)
        s = v.sum()
        want = (v * 2.0 if 0.0 < s < 1.0 else -v) + (1.0 if -1.0 <= s <= 0.5 else 0.0)
        for got in both_backends(jf, T(v)):
            np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_allclose(gd.grad(jf)(T([0.2, 0.3])).asnumpy(), [2.0, 2.0])
    assert text_of(f, T(np.ones(2))).count("cond(") == 2
    seen = []

    def probe(v):
        seen.append(v)
        return v

    def g(x, k=5):
        if 0 < k < probe(3) < probe(10):  # 5 < 3 is false: probe(10) is never called
            x = x * 2.0
        return x
    np.testing.assert_allclose(gd.jit(g)(T([1.0])).asnumpy(), [1.0])
    assert seen == [3]


def test_if_on_a_python_value_stays_python():
    def f(x, flag=True):
        if flag:
            x = x + 1.0
        if x.shape[0] > 2:  # shapes are Python ints
            x = x * 2.0
        return x
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(gd.jit(f)(T(v)).asnumpy(), (v + 1.0) * 2.0)
    assert "cond(" not in text_of(f, T(v))


def test_variables_the_branches_do_not_share_and_statics():
    def f(x):
        act = ops.tanh
        z = x
        if ops.sum(x) > 0:
            t = x * 2.0  # a temporary of this branch, not read after the if
            z = t + 1.0
            act = ops.tanh  # the same non-tensor value in both branches
        return act(z)
    for v in ([1.0, 2.0], [-1.0, -2.0]):
        v = np.array(v)
        np.testing.assert_allclose(gd.jit(f)(T(v)).asnumpy(), np.tanh(v * 2.0 + 1.0 if v.sum() > 0 else v))


def test_a_closed_over_tensor_test_is_read_at_every_call_not_frozen():
    flag = gd.Parameter(gd.Tensor(np.array(True)), name="flag")

    @gd.jit
    def f(x):
        if flag:  # a concrete Parameter: a graph input, so a cond (not a trace-time choice)
            x = x * 2.0
        return x
    np.testing.assert_allclose(f(T([1.0])).asnumpy(), [2.0])
    flag.set_data(gd.Tensor(np.array(False)))
    np.testing.assert_allclose(f(T([1.0])).asnumpy(), [1.0])


def test_vmap_of_a_converted_if_decides_per_example():
    xs = np.array([[1.0, 2.0], [-1.0, -2.0], [0.5, -0.1]])
    got = gd.vmap(gd.jit(_piecewise))(T(xs)).asnumpy()
    for g, v in zip(got, xs):
        np.testing.assert_allclose(g, np.sin(v) * v if v.sum() > 0 else np.exp(-v) + 1.0, rtol=1e-12)


# ---------------------------------------------------------------- while / for


def _newton_sqrt(a):
    x = a + 1.0
    k = 0
    while ops.abs(x * x - a) > 1e-12 * a:
        x = 0.5 * (x + a / x)
        k += 1  # a Python int before the loop: carried as an integer tensor
    return x, k


def test_while_on_a_tensor_condition_newton_iteration():
    jf = gd.jit(_newton_sqrt)
    for a in (2.0, 9.0, 1e4):
        x, k = jf(T(a))
        np.testing.assert_allclose(x.asnumpy(), np.sqrt(a), rtol=1e-12)
        # the oracle: the same iteration run eagerly, as Python on concrete values
        xe, ke = _newton_sqrt(T(a))
        assert int(k.asnumpy()) == ke > 0
    assert "while_loop(" in text_of(_newton_sqrt, T(2.0))


def _power(x, n):
    y = ops.ones_like(x)
    for i in range(n):
        y = y * x
    return y


def test_for_over_a_traced_range_is_one_loop_node():
    jf = gd.jit(_power)
    x = np.array([1.5, -2.0, 0.5])
    for n in (0, 1, 5):
        np.testing.assert_allclose(jf(T(x), I32(n)).asnumpy(), x ** n, rtol=1e-12)
    assert "while_loop(" in text_of(_power, T(x), I32(3))


def test_for_over_a_traced_range_with_a_step_and_the_index_in_the_body():
    def f(x, lo, hi):
        s = ops.zeros_like(x)
        for i in range(hi, lo, -2):
            s = s + x * ops.astype(i, x.dtype)
        return s
    x = np.array([1.0, 0.5])
    got = gd.jit(f)(T(x), I32(1), I32(8))
    np.testing.assert_allclose(got.asnumpy(), x * sum(range(8, 1, -2)))


def test_for_over_a_python_range_is_unrolled():
    def f(x):
        s = 0.0
        for i in range(3):
            s = s + x * float(i)
        return s
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(gd.jit(f)(T(x)).asnumpy(), x * 3.0)
    text = text_of(f, T(x))
    assert "while_loop(" not in text and "scan(" not in text and "cond(" not in text


def test_nested_if_inside_a_traced_loop():
    def f(x, n):
        s = ops.zeros_like(x)
        for i in range(n):
            if ops.sum(s) > 3.0:
                s = s - x
            else:
                s = s + 2.0 * x
        return s

    def oracle(x, n):
        s = np.zeros_like(x)
        for _ in range(n):
            s = s - x if s.sum() > 3.0 else s + 2.0 * x
        return s
    x = np.array([0.5, 0.25])
    jf = gd.jit(f)
    for n in (0, 3, 7):
        np.testing.assert_allclose(jf(T(x), I32(n)).asnumpy(), oracle(x, n), rtol=1e-12)
    text = text_of(f, T(x), I32(3))
    assert "while_loop(" in text and "cond(" in text


def test_converted_loops_compiled_with_tvm_match_the_interpreter():
    x = np.array([0.5, 0.25])
    got = both_backends(gd.jit(_newton_sqrt), T(9.0))
    np.testing.assert_allclose(got[0], 3.0, rtol=1e-12)
    np.testing.assert_allclose(both_backends(gd.jit(_power), T(x), I32(4))[0], x ** 4, rtol=1e-12)


def test_python_numbers_become_carries_of_the_loops_type():
    def f(x, n):
        s = 0.0  # takes x's dtype and shape from the body
        i = 0
        while i < n:
            s = s + x
            i = i + 1
        return s, i
    s, i = gd.jit(f)(T([1.0, 2.0]), I32(3))
    np.testing.assert_allclose(s.asnumpy(), [3.0, 6.0])
    assert s.dtype is gd.float64 and int(i.asnumpy()) == 3


def _lstm_ish(state, x):
    h, c = state
    return ops.tanh(h + x), c + h


def test_tuple_carries_and_dynamic_indexing_in_a_traced_loop():
    def f(xs, n):
        state = (ops.zeros_like(xs[0]), ops.zeros_like(xs[0]))
        for i in range(n):
            state = _lstm_ish(state, xs[i])
        return state
    xs = RNG.standard_normal((4, 3))
    h, c = np.zeros(3), np.zeros(3)
    for x in xs[:3]:
        h, c = np.tanh(h + x), c + h
    got = gd.jit(f)(T(xs), I32(3))
    np.testing.assert_allclose(got[0].asnumpy(), h, rtol=1e-12)
    np.testing.assert_allclose(got[1].asnumpy(), c, rtol=1e-12)


def test_for_over_a_traced_tensor_is_a_scan():
    def f(xs):
        h = ops.zeros_like(xs[0])
        for x in xs:
            h = ops.tanh(h + x)
        return h

    def oracle(xs):
        h = np.zeros_like(xs[0])
        for x in xs:
            h = np.tanh(h + x)
        return h
    xs = RNG.standard_normal((6, 3))
    np.testing.assert_allclose(gd.jit(f)(T(xs)).asnumpy(), oracle(xs), rtol=1e-12)
    assert "scan(" in text_of(f, T(xs))


def test_a_loop_with_python_side_effects_over_a_tensor_still_unrolls():
    def f(xs):
        ys = []
        for x in xs:
            ys.append(x * 2.0)
        return ops.stack(ys)
    xs = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(gd.jit(f)(T(xs)).asnumpy(), xs * 2.0)
    assert "scan(" not in text_of(f, T(xs))


# ---------------------------------------------------------------- Cells, closures, methods


class _Gate(gd.nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = gd.Parameter(T([0.5, -1.0, 0.25]), name="w")

    def construct(self, x):
        h = x * self.w
        if ops.sum(h) > 0:
            out = ops.sum(ops.sin(h))
        else:
            out = ops.sum(h * h)
        return out


def _gate_np(w, x):
    h = x * w
    return np.sum(np.sin(h)) if h.sum() > 0 else np.sum(h * h)


def test_cell_with_a_tensor_if_under_jit_and_grad():
    net = _Gate()
    w = net.w.asnumpy()
    jf = gd.jit(net)
    for x in (np.array([1.0, 0.2, 0.4]), np.array([-1.0, 0.2, 0.4])):
        np.testing.assert_allclose(jf(T(x)).asnumpy(), _gate_np(w, x), rtol=1e-12)
        want = fd_grad(lambda a: _gate_np(w, a), x)
        np.testing.assert_allclose(gd.grad(net)(T(x)).asnumpy(), want, rtol=1e-6, atol=1e-9)
        gw = gd.grad(net, grad_position=None, weights=net.trainable_params())(T(x))
        gw = gw[0] if isinstance(gw, (tuple, list)) else gw
        np.testing.assert_allclose(gw.asnumpy(), fd_grad(lambda a: _gate_np(a, x), w), rtol=1e-6, atol=1e-9)
        # and the compiled gradient agrees
        np.testing.assert_allclose(gd.jit(gd.grad(net))(T(x)).asnumpy(), want, rtol=1e-6, atol=1e-9)


def test_cell_eagerly_runs_plain_python():
    net = _Gate()
    x = np.array([1.0, 0.2, 0.4])
    np.testing.assert_allclose(net(T(x)).asnumpy(), _gate_np(net.w.asnumpy(), x), rtol=1e-12)


class _Base(gd.nn.Cell):
    def construct(self, x):
        return x * 2.0


class _Sub(_Base):
    def construct(self, x, n=2):
        y = super().construct(x)  # zero-argument super() keeps its __class__ cell
        i = 0
        while i < n:  # Python ints: a Python loop
            y = y + 1.0
            i += 1
        if ops.sum(y) > 100.0:
            y = y * 0.0
        return y


def test_methods_super_defaults_and_closures():
    net = gd.jit(_Sub())
    np.testing.assert_allclose(net(T([1.0])).asnumpy(), [4.0])
    np.testing.assert_allclose(net(T([100.0])).asnumpy(), [0.0])

    k = 3.0
    scale = T(2.0)

    @gd.jit
    def inner(x):
        if ops.sum(x) > 0:
            x = x * scale * k  # a closed-over tensor and a closed-over number
        return x
    np.testing.assert_allclose(inner(T([1.0])).asnumpy(), [6.0])
    np.testing.assert_allclose(inner(T([-1.0])).asnumpy(), [-1.0])
    k = 5.0  # the converted function shares the closure's cells (run eagerly: no staged graph)
    np.testing.assert_allclose(convert(inner.fn)(T([1.0])).asnumpy(), [10.0])


class _Scaler:
    def __init__(self, limit):
        self.limit = limit

    def apply(self, x, *rest, gain=2.0):
        def clip(v):  # a nested helper with its own tensor if: converted when called
            if ops.max(v) > self.limit:
                v = v * (self.limit / ops.max(v))
            return v
        y = clip(x * gain)
        for r in rest:  # a Python tuple: a Python loop
            y = y + r
        if ops.sum(y) > 0:
            pass  # a tensor if that assigns nothing
        return y


def test_bound_methods_varargs_keyword_defaults_and_nested_helpers():
    s = _Scaler(3.0)
    f = gd.jit(s.apply)
    np.testing.assert_allclose(f(T([1.0, 1.0])).asnumpy(), [2.0, 2.0])
    np.testing.assert_allclose(f(T([1.0, 4.0])).asnumpy(), [0.75, 3.0])
    np.testing.assert_allclose(f(T([1.0, 4.0]), T([1.0, 1.0])).asnumpy(), [1.75, 4.0])
    np.testing.assert_allclose(gd.jit(lambda x: s.apply(x, gain=1.0))(T([1.0, 6.0])).asnumpy(), [0.5, 3.0])


def test_lambdas_calling_converted_helpers():
    f = gd.jit(lambda x: _piecewise(x) * 2.0)  # the lambda's calls go through the converter
    for v in (np.array([0.5, 1.0]), np.array([-0.5, -1.0])):
        want = 2.0 * (np.sin(v) * v if v.sum() > 0 else np.exp(-v) + 1.0)
        np.testing.assert_allclose(f(T(v)).asnumpy(), want, rtol=1e-12)
    # two lambdas of the same parameters on one line: each is read from the columns of its own
    # code (autograph._lambda_from_positions), so each is converted to its own body
    g, h = (lambda x: ops.sin(x)), (lambda x: ops.cos(x))
    assert convert(g) is not g and convert(h) is not h
    np.testing.assert_allclose(gd.jit(g)(T([0.5])).asnumpy(), np.sin([0.5]), rtol=1e-12)
    np.testing.assert_allclose(gd.jit(h)(T([0.5])).asnumpy(), np.cos([0.5]), rtol=1e-12)


def test_a_lambda_is_read_from_its_own_columns_else_from_the_parsed_file():
    """The lambda's source comes from the columns of its instructions where that reads back as
    the same code; where it does not (a body that starts inside a parenthesis: the columns miss
    the "("), from the file's parsed lambdas; never from text compiled under a file's name that
    is not that file's."""
    from graphad.frontend import autograph
    g = lambda x: (ops.sin(x) + 1.0) if x.ndim else -x  # noqa: E731
    flag = {"on": True}
    k = lambda n: (2e-3 if flag["on"] else 20e-6) if n == 2 else 33e-6  # noqa: E731
    assert autograph._lambda_from_positions(g.__code__) is not None
    np.testing.assert_allclose(gd.jit(g)(T([0.5])).asnumpy(), np.sin([0.5]) + 1.0, rtol=1e-12)
    assert autograph._lambda_from_positions(k.__code__) is None  # its columns start after "("
    assert autograph._lambda_def(k.__code__) is not None  # the parsed file has it
    # code compiled from a string under this file's name: its columns point at other text
    ns = {}
    exec(compile("\n" * 3 + "q = lambda x: ops.exp(x)\n", __file__, "exec"), {"ops": ops}, ns)
    assert autograph._lambda_from_positions(ns["q"].__code__) is None


def test_conversion_is_cached_per_code_object():
    def make(c):
        def f(x):
            if ops.sum(x) > 0:
                x = x + c
            return x
        return f
    f1, f2 = make(1.0), make(2.0)
    c1, c2 = convert(f1), convert(f2)
    assert c1 is not f1 and c1.__code__ is c2.__code__
    np.testing.assert_allclose(gd.jit(f2)(T([1.0])).asnumpy(), [3.0])


# ---------------------------------------------------------------- what is refused


def test_variable_defined_in_one_branch_only_is_refused_with_the_line():
    def f(x):
        if ops.sum(x) > 0:
            y = x * 2.0
        return y
    with pytest.raises(TraceError) as e:
        gd.jit(f)(T([1.0]))
    msg = str(e.value)
    assert f"{HERE}:{line_of(f, 'if ops.sum')}" in msg and "'y'" in msg and "only in the other branch" in msg


def test_shape_changing_loop_carry_is_refused_with_the_line():
    def f(x):
        while ops.sum(x) < 10.0:
            x = ops.concat([x, x])
        return x
    with pytest.raises(TraceError) as e:
        gd.jit(f)(T([1.0]))
    msg = str(e.value)
    assert f"{HERE}:{line_of(f, 'while')}" in msg and "'x'" in msg and "f64[1]" in msg and "f64[2]" in msg


def test_branches_of_different_shapes_are_refused():
    def f(x):
        if ops.sum(x) > 0:
            x = ops.concat([x, x])
        return x
    with pytest.raises(TraceError, match=f"{HERE}:{line_of(f, 'if ops')}.*'x' is f64\\[2\\] in the true branch"):
        gd.jit(f)(T([1.0]))


def test_variable_first_assigned_in_a_tensor_loop_and_read_after_is_refused():
    def f(x, n):
        for i in range(n):
            y = x * 2.0
        return y
    with pytest.raises(TraceError, match=f"{HERE}:{line_of(f, 'for i')}.*'y' is first assigned inside"):
        gd.jit(f)(T([1.0]), I32(2))


def test_return_in_a_loop_and_a_loop_else_are_refused_with_the_reason():
    def ret(x, n):
        for i in range(n):
            if ops.sum(x) > 10.0:
                return x
            x = x * 2.0
        return x

    def for_else(x, n):
        for i in range(n):
            x = x + 1.0
            if i > 3:
                break
        else:
            x = -x
        return x
    with pytest.raises(TraceError, match=f"{HERE}:{line_of(ret, 'for i')}.*contains `return`"):
        gd.jit(ret)(T([1.0]), I32(3))
    with pytest.raises(TraceError, match=f"{HERE}:{line_of(for_else, 'for i')}.*has an `else:` clause"):
        gd.jit(for_else)(T([1.0]), I32(5))
    # the same statements run as Python when their tests are Python values
    np.testing.assert_allclose(gd.jit(for_else, static_argnums=1)(T([1.0]), 7).asnumpy(), [6.0])
    np.testing.assert_allclose(gd.jit(for_else, static_argnums=1)(T([1.0]), 2).asnumpy(), [-3.0])


def _break_np(x, n):
    for i in range(n):
        x = x + 1.0
        if x.sum() > 3.5:
            break
        x = x * 1.5
    return x


def test_break_and_continue_in_tensor_loops():
    def brk(x, n):
        for i in range(n):
            x = x + 1.0
            if ops.sum(x) > 3.5:  # a tensor-dependent break: a flag carried by the loop
                break
            x = x * 1.5
        return x

    def cont(x, n):
        s = ops.zeros_like(x)
        i = 0
        while i < n:
            i += 1
            if ops.sum(x) * ops.astype(i, x.dtype) > 4.0:
                continue
            s = s + x
        return s

    def scan_break(xs):
        s = ops.zeros_like(xs[0])
        for x in xs:
            if ops.sum(s) > 2.0:
                break
            s = s + x
        return s

    def py_break(x):
        for i in range(10):  # a Python loop and a Python break: plain Python, stops at 3
            if i == 3:
                break
            x = x + 1.0
        return x, i
    for x0 in (0.1, 1.0, 5.0):
        for n in (0, 2, 5):
            np.testing.assert_allclose(gd.jit(brk)(T([x0]), I32(n)).asnumpy(), _break_np(np.array([x0]), n))
    np.testing.assert_allclose(gd.jit(brk, static_argnums=1)(T([0.1]), 5).asnumpy(), _break_np(np.array([0.1]), 5))
    for x0, n in ((1.0, 6), (0.5, 10), (3.0, 3)):
        want = sum(x0 for i in range(1, n + 1) if not x0 * i > 4.0)
        np.testing.assert_allclose(gd.jit(cont)(T([x0]), I32(n)).asnumpy(), [want])
    np.testing.assert_allclose(gd.jit(scan_break)(T(np.ones((5, 1)))).asnumpy(), [3.0])
    x, i = gd.jit(py_break)(T([0.0]))
    assert i == 3
    np.testing.assert_allclose(x.asnumpy(), [3.0])
    assert "while_loop(" not in text_of(py_break, T([0.0]))


def _early_return(x):
    if ops.sum(x) > 0:
        if ops.max(x) > 3.0:
            return x * 10.0, ops.sum(x)
        return x, ops.sum(x)
    elif ops.sum(x) < -5.0:
        return x * 0.0, ops.min(x)
    y = -x
    return y, ops.max(x)


def test_returns_under_tensor_ifs_become_one_return_value():
    jf = gd.jit(_early_return)
    for v in ([4.0, 1.0], [1.0, 0.5], [-6.0, -1.0], [-1.0, 0.5]):
        want = _early_return(T(v))  # the oracle: the same function run eagerly, as Python
        got = jf(T(v))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.asnumpy(), w.asnumpy())
    assert text_of(_early_return, T([1.0])).count("cond(") == 3

    def falls_off(x):
        if ops.sum(x) > 0:
            return x
    with pytest.raises(TraceError, match=f"{HERE}:{line_of(falls_off, 'if ops')}: the return value is a tensor "
                                         f"f64\\[1\\] in the true branch and a NoneType in the false branch"):
        gd.jit(falls_off)(T([1.0]))


def test_user_decorators_and_helpers_are_converted_too():
    import functools

    def twice(f):
        @functools.wraps(f)
        def wrapper(*a):
            return f(*a) * 2.0
        return wrapper

    @twice
    def g(x):
        return _piecewise(x)  # a helper with a tensor if, called from converted code
    for v in (np.array([0.5, 1.0]), np.array([-0.5, -1.0])):
        want = 2.0 * (np.sin(v) * v if v.sum() > 0 else np.exp(-v) + 1.0)
        np.testing.assert_allclose(gd.jit(g)(T(v)).asnumpy(), want, rtol=1e-12)


def test_non_scalar_condition_is_refused():
    def f(x):
        if x > 0:
            x = x + 1.0
        return x
    with pytest.raises(TraceError, match="shape \\(2,\\).*ops.any / ops.all"):
        gd.jit(f)(T([1.0, 2.0]))


# ---------------------------------------------------------------- no source, grad outside jit


def test_functions_without_source_still_work():
    ns = {}
    exec("def nosrc(x):\n    for i in range(2):\n        x = x + 1.0\n    return x\n", ns)
    assert convert(ns["nosrc"]) is ns["nosrc"]
    np.testing.assert_allclose(gd.jit(ns["nosrc"])(T([1.0])).asnumpy(), [3.0])
    np.testing.assert_allclose(gd.jit(lambda x: x * 2.0)(T([1.0])).asnumpy(), [2.0])
    assert convert(len) is len


def _plain(x):
    if ops.sum(x) > 0:
        x = x * 3.0
    return ops.sum(x * x)


def test_grad_converts_through_jit_and_cells_not_plain_functions():
    """Graph mode is gd.jit (and Cells): gd.grad of a plain function traces it unconverted, as
    MindSpore converts only in graph mode; gd.grad(gd.jit(f)) differentiates the converted one."""
    with pytest.raises(TraceError, match="gd.cond"):
        gd.grad(_plain)(T([1.0]))
    for v in (np.array([1.0, -0.5]), np.array([-1.0, 0.5])):
        want = fd_grad(lambda a: (9.0 if a.sum() > 0 else 1.0) * np.sum(a * a), v)
        np.testing.assert_allclose(gd.grad(gd.jit(_plain))(T(v)).asnumpy(), want, rtol=1e-6)
        np.testing.assert_allclose(gd.jit(gd.grad(gd.jit(_plain)))(T(v)).asnumpy(), want, rtol=1e-6)


def test_the_docs_example_runs_from_a_file(tmp_path, capsys):
    """docs/control_flow.md's converted example (no-run there: the docs test compiles blocks where
    their source cannot be read back) runs from a file and prints what its comments say."""
    import importlib.util
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "control_flow.md")) as f:
        doc = f.read()
    section = doc[doc.index("## Python control flow in jit and Cells"):]
    code = re.search(r"```python no-run\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "doc_example.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("doc_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = capsys.readouterr().out
    assert "1.41421356" in out and "5" in out.splitlines()[0]
    x, steps = mod.newton_sqrt(T(2.0))
    assert int(steps.asnumpy()) == 5
    y = np.ones(2)
    for _ in range(6):
        y = (y / 100.0 if y.max() > 100.0 else y) * np.array([2.0, 3.0])
    np.testing.assert_allclose(mod.damped_power(T([2.0, 3.0]), I32(6)).asnumpy(), y)
    assert "[0.64" in out and "7.29" in out
    # the reverse-mode part: gd.set_loop_options and gd.jit(max_steps=) against finite differences
    assert "0.35355339" in out and "14.58" in out
    np.testing.assert_allclose(mod.dpow(T([2.0, 3.0]), I32(6)).asnumpy(),
                               fd_grad(lambda v: _damped_np(v, 6).sum(), np.array([2.0, 3.0])), rtol=1e-6)


def _damped_np(x, n):
    y = np.ones_like(x)
    for _ in range(n):
        y = (y / 100.0 if y.max() > 100.0 else y) * x
    return y


# ---------------------------------------------------------------- reverse mode through converted loops
#
# A converted `while` (or a `for` over a traced range) is a while_loop node; reverse mode needs its
# max_steps, which the user gives with gd.set_loop_options(max_steps=N) in the loop's body or
# gd.jit(..., max_steps=N) for every converted loop of the function (issue 14).


def _newton_bounded(a):
    x = a + 1.0
    while ops.abs(x * x - a) > 1e-12 * a:
        gd.set_loop_options(max_steps=60)
        x = 0.5 * (x + a / x)
    return x


def _newton_np(a: float) -> float:
    x = a + 1.0
    while abs(x * x - a) > 1e-12 * a:
        x = 0.5 * (x + a / x)
    return x


def test_grad_through_a_converted_while_with_set_loop_options():
    for a in (2.0, 9.0, 0.3):
        want = fd_grad(lambda v: _newton_np(float(v)), np.array(a))
        got = both_backends(lambda t: gd.grad(gd.jit(_newton_bounded))(t), T(a), rtol=1e-12)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(got, 0.5 / np.sqrt(a), rtol=1e-10)
        # compiled as one program: jit(grad(jit(f)))
        np.testing.assert_allclose(gd.jit(gd.grad(gd.jit(_newton_bounded)))(T(a)).asnumpy(), got, rtol=1e-12)
    assert "max_steps=60" in text_of(gd.grad(gd.jit(_newton_bounded)), T(2.0))


def _newton_plain(a):
    x = a + 1.0
    while ops.abs(x * x - a) > 1e-12 * a:
        x = 0.5 * (x + a / x)
    return x


def _sin_power(x, n):
    y = x
    for i in range(n):
        y = ops.sin(y) * x
    return ops.sum(y)


def _sin_power_np(x, n):
    y = x
    for _ in range(n):
        y = np.sin(y) * x
    return y.sum()


def test_grad_through_converted_loops_with_the_jit_bound():
    x = np.array([0.3, -0.7, 1.1])
    for n in (0, 1, 4):
        want = fd_grad(lambda v: _sin_power_np(v, n), x)
        got = both_backends(lambda t, k: gd.grad(gd.jit(_sin_power, max_steps=16))(t, k), T(x), I32(n))[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gd.grad(gd.jit(_newton_plain, max_steps=40))(T(2.0)).asnumpy(), 0.5 / np.sqrt(2.0),
                               rtol=1e-10)
    # second order, through the tape of the tape
    h = gd.grad(gd.grad(gd.jit(_newton_plain, max_steps=40)))(T(2.0))
    np.testing.assert_allclose(h.asnumpy(), -0.25 * 2.0 ** -1.5, rtol=1e-8)


def test_without_a_bound_reverse_mode_says_how_to_give_one():
    with pytest.raises(gd.GraphadError, match=r"gd.set_loop_options\(max_steps=N\).*gd.jit\(\.\.\., max_steps=N\)"):
        gd.grad(gd.jit(_newton_plain))(T(2.0))
    # forward mode needs none
    _, t = gd.jvp(gd.jit(_newton_plain), T(2.0), T(1.0))
    np.testing.assert_allclose(t.asnumpy(), 0.5 / np.sqrt(2.0), rtol=1e-10)


def _nested_bounds(x, n):
    s = x
    for i in range(n):          # bounded by the jit's max_steps
        k = 0
        while ops.sum(s) > 1.0 + k:   # bounded by its own set_loop_options
            gd.set_loop_options(max_steps=3)
            s = s * 0.9
            k += 1
        s = s + x
    return ops.sum(s)


def test_each_loop_gets_its_own_bound_and_a_bound_truncates_the_loop():
    text = text_of(gd.jit(_nested_bounds, max_steps=7), T([0.6, 0.7]), I32(2))
    assert "max_steps=7" in text and "max_steps=3" in text
    # the bound stops a loop as gd.while_loop(max_steps=) does (TensorFlow's maximum_iterations)
    x = 4.0
    got = gd.jit(_newton_bounded)(T(x)).asnumpy()
    np.testing.assert_allclose(got, 2.0, rtol=1e-12)

    def capped(a):
        x = a + 1.0
        while ops.abs(x * x - a) > 1e-12 * a:
            gd.set_loop_options(max_steps=2)
            x = 0.5 * (x + a / x)
        return x
    y = 5.0
    for _ in range(2):
        y = 0.5 * (y + 4.0 / y)
    np.testing.assert_allclose(gd.jit(capped)(T(x)).asnumpy(), y, rtol=1e-12)
    with pytest.raises(gd.GraphadError, match="max_steps must be a positive int"):
        gd.set_loop_options(max_steps=0)
    with pytest.raises(gd.GraphadError, match="max_steps must be a positive int"):
        gd.jit(_newton_plain, max_steps=-1)


class _Relax(gd.nn.Cell):
    """A Cell whose construct iterates until a tensor test fails: converted under any trace."""

    def __init__(self):
        super().__init__()
        self.rate = gd.Parameter(gd.Tensor(np.array([0.5])), name="rate")

    def construct(self, x):
        while ops.sum(ops.abs(x)) > 0.01:
            gd.set_loop_options(max_steps=100)
            x = x * self.rate
        return ops.sum(x)


def _relax_np(rate, x):
    while np.abs(x).sum() > 0.01:
        x = x * rate
    return x.sum()


def test_grad_of_a_cell_with_a_bounded_while_in_construct():
    net = _Relax()
    x = np.array([0.8, -0.3])
    rate = net.rate.asnumpy()
    # the trip count is piecewise constant: finite differences see the smooth part
    want_x = fd_grad(lambda v: _relax_np(rate, v), x)
    np.testing.assert_allclose(gd.grad(net)(T(x)).asnumpy(), want_x, rtol=1e-6)
    gw = gd.grad(net, grad_position=None, weights=net.trainable_params())(T(x))
    gw = gw[0] if isinstance(gw, (tuple, list)) else gw
    np.testing.assert_allclose(gw.asnumpy(), fd_grad(lambda r: _relax_np(r, x), rate), rtol=1e-6)


def _decorator(f):
    return f


class _Holder:
    @staticmethod
    @_decorator
    def method(x,
               y=(1,
                  2)):
        if x > 0:
            return x
        return y

    def plain(self, x):  # a comment
        return x


def test_code_source_is_what_inspect_finds_without_walking_sys_modules(monkeypatch, tmp_path):
    """autograph reads a function's source as inspect.getsource(fn.__code__) does, but without
    inspect.getmodule (which, given a code object, walks every module in sys.modules)."""
    import inspect

    from graphad.frontend import autograph

    def nested(a):
        def inner(b):
            return b + 1
        return inner(a)
    lam = lambda v: v * 2  # noqa: E731
    funcs = [nested, lam, _Holder.method, _Holder.plain, _decorator, autograph.convert]
    want = [inspect.getsource(f.__code__) for f in funcs]
    monkeypatch.setattr(inspect, "getmodule", lambda *a, **k: pytest.fail("getmodule called"))
    assert [autograph._code_source(f) for f in funcs] == want
    # code whose file has no source: an OSError, as inspect raises
    g = {}
    exec(compile("def nosource(x):\n    return x\n", "<nowhere>", "exec"), g)
    with pytest.raises(OSError):
        autograph._code_source(g["nosource"])
    # compiled under a relative path that is not there from the working directory (linecache
    # would still find a file of that name along sys.path)
    import os
    monkeypatch.syspath_prepend(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.chdir(tmp_path)
    g = {}
    exec(compile("\n" * 40 + "def elsewhere(x):\n    return x\n", "graphad/api.py", "exec"), g)
    with pytest.raises(OSError):  # (inspect.getsource raises too: getsourcefile finds no file)
        autograph._code_source(g["elsewhere"])


def test_code_compiled_from_other_text_is_never_read_back_as_its_module_s(tmp_path, monkeypatch):
    """Code compiled from a string (a patched copy of a function, a lambda made by exec) is not
    converted from the source of the file or module it claims: the function under a name that is
    no file, in a module's globals, is not given the module's source (its loader would give it);
    a lambda compiled under a real file's name at a line where that file has another lambda of
    the same parameters is not read as that one (it is checked against its code object)."""
    import sys

    from graphad.frontend import autograph
    (tmp_path / "ag_patch_mod.py").write_text(
        "from graphad import ops\n\n\ndef f(x):\n    return ops.sin(x)\n\n\nlam = lambda x: ops.sin(x) + 1.0  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__("ag_patch_mod")
    try:
        ns = mod.__dict__
        exec(compile("\n" * 3 + "def f(x):\n    return ops.cos(x)\n", "patched_f.py", "exec"), ns)
        with pytest.raises(OSError):
            autograph._code_source(ns["f"])
        x = T(np.array([0.5]))
        np.testing.assert_allclose(gd.jit(ns["f"])(x).asnumpy(), np.cos([0.5]), rtol=1e-12)
        other = {"ops": ops}
        exec(compile("\n" * 7 + "lam = lambda x: ops.sin(x) - 1.0\n", mod.__file__, "exec"), other)
        assert autograph._lambda_def(other["lam"].__code__) is None
        np.testing.assert_allclose(gd.jit(other["lam"])(x).asnumpy(), np.sin([0.5]) - 1.0, rtol=1e-12)
        np.testing.assert_allclose(gd.jit(mod.lam)(x).asnumpy(), np.sin([0.5]) + 1.0, rtol=1e-12)
    finally:
        sys.modules.pop("ag_patch_mod", None)


def _for_break_from(first):
    """`s = first(x)`, then s grows by sum(x) i until it passes 5: a loop with a break."""
    def f(x, n):
        s = first(x)
        for i in range(n):
            s = s + ops.sum(x) * i
            if s > 5.0:
                break
        return s
    return f


def _for_break(x, n):
    return _for_break_from(lambda x: 0.0)(x, n)


def _nested_break(x, n):
    s = 0.0
    for i in range(n):
        t = 0
        for j in range(n):
            t = t + ops.sum(x) * j
            if t > 3.0:
                break
        s = s + t
        if s > 20.0:
            break
    return s


def _continue_int_start(x, n):
    s = 0
    for i in range(n):
        if ops.sum(x) * i > 4.0:
            continue
        s = s + ops.sum(x) * i
    return s


@pytest.mark.parametrize("fn", [_for_break, _nested_break, _continue_int_start], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [0, 2, 7])
def test_python_number_carry_widens_through_a_break_or_continue(fn, n):
    """A Python number as a traced loop's carry takes the dtype the body gives it (docs/
    control_flow.md), also where `break`/`continue` put the body under a tensor-dependent `if`
    whose other branch passes the carry through: that `if` saw float64 against the carry's
    first-trace float32 (int64) and raised a TraceError (found by a helper's trial against JAX).
    Oracle: the same function run as Python on a NumPy float64 array and a Python int."""
    x = np.array([1.0, 2.0])
    got = both_backends(lambda x, n: gd.jit(fn)(x, n), T(x), I32(n))
    assert got[0].dtype == np.float64
    want = fn(x, n)  # plain Python: ops.sum of a NumPy array is a float
    np.testing.assert_allclose(got[0], want, rtol=1e-15)


def test_a_typed_tensor_carry_is_not_widened_by_a_branch():
    """Only a Python number's carry widens: a float32 tensor carry that one branch makes float64
    is still the error it was."""
    f = _for_break_from(lambda x: ops.sum(x).astype("float32"))
    with pytest.raises(TraceError, match="true branch and f32"):
        gd.jit(f)(T([1.0, 2.0]), I32(7))


def _recursive(x, depth):
    if ops.sum(x) > 0:
        y = x * 0.5
    else:
        y = x + 1.0
    if depth == 0:
        return y
    return _recursive(y, depth - 1)


def test_a_recursive_function_is_converted():
    """A function calling itself (a static depth) with a tensor `if`: its converted body was
    compiled under its own name, so the recursive call read the converted code's own local and
    the function was never converted (a bool() TraceError); a helper's trial. Values eager and
    compiled, and the gradient, against NumPy's closed form."""
    a = np.array([0.5, -0.2, 1.0])
    want = a.copy()
    for _ in range(3):
        want = want * 0.5 if want.sum() > 0 else want + 1.0
    x = gd.Tensor(a)
    np.testing.assert_allclose(_recursive(x, 2).asnumpy(), want)
    np.testing.assert_allclose(gd.jit(lambda t: _recursive(t, 2))(x).asnumpy(), want)
    np.testing.assert_allclose(gd.grad(gd.jit(lambda t: ops.sum(_recursive(t, 2))))(x).asnumpy(), [0.125] * 3)


def test_a_converted_statement_that_changes_python_objects_is_refused():
    """A tensor `if` traces both branches and a traced loop its body once, so a change to a Python
    object in them (ys.append, d[k] = v, self.mode = ..., a global) happened at trace time whatever
    the tensors held: jit gave 1.5x and 2x the eager results (a helper's trial). Refused now,
    naming the statement, the change and its line; a Python test still runs it as Python, and a
    call that changes nothing (print) is no change."""
    state = {"mode": 1.0}

    def appends(x):
        scales = []
        if ops.sum(x) > 0:
            scales.append(1.0)
        else:
            scales.append(2.0)
        return x * scales[0]

    def sets_item(x):
        if ops.sum(x) > 0:
            state["mode"] = 2.0
        return x * state["mode"]

    def counts(x, n):
        count = [0]
        for i in range(n):
            count[0] += 1
        return x * count[0]

    def loops(x):
        hits = []
        while ops.sum(x) < 10.0:
            x = x * 2.0
            hits.append(1)
        return x

    x = T(np.array([1.0, 2.0]))
    for fn, args, what in ((appends, (x,), r"`if` \(converted to gd.cond\) calls `scales.append` \(line \d+\)"),
                           (sets_item, (x,), r"`if` \(converted to gd.cond\) assigns `state\['mode'\]`"),
                           (counts, (x, T(np.array(3, np.int32))), r"`for` \(converted to a loop node\) assigns "
                                                                    r"`count\[0\]`"),
                           (loops, (x,), r"`while` \(converted to gd.while_loop\) calls `hits.append`")):
        with pytest.raises(TraceError, match=what):
            gd.jit(fn)(*args)
    np.testing.assert_array_equal(gd.jit(lambda t: appends(t) if False else t * 1.0)(x).asnumpy(), [1.0, 2.0])
    np.testing.assert_array_equal(gd.jit(counts, static_argnums=1)(x, 3).asnumpy(), [3.0, 6.0])  # Python range

    def prints(x):
        if ops.sum(x) > 0:
            print("positive")  # (no Python object changes)
            y = x * 2.0
        else:
            y = x
        return y
    np.testing.assert_array_equal(gd.jit(prints)(x).asnumpy(), [2.0, 4.0])


def _closure_in_if(x, flag):
    k = x
    def scale(v):  # noqa: E306
        return v * k
    if flag:
        k = x * 2.0
        y = scale(x)
    else:
        y = scale(x)
    return y


def _closure_over_rows(m):
    k = ops.zeros((3,), m.dtype)
    def shift(v):  # noqa: E306
        return v + k
    acc = k
    for row in m:
        k = row
        acc = shift(acc)
    return acc


def test_a_nested_function_reading_a_variable_the_statement_assigns_sees_its_new_value():
    """A converted statement's body is a function of its own, whose copy of `k` a nested function
    defined before it never saw: `scale(x)` used `k`'s value from before the `if` (with a Python
    test too) and a scan over rows the zeros (a helper's trial). Such a statement stays Python: a
    Python test or a row loop runs as Python, a tensor test is a TraceError with the reason."""
    x = T(np.array([0.5, -0.2, 1.0]))
    np.testing.assert_allclose(gd.jit(_closure_in_if, static_argnums=1)(x, True).asnumpy(),
                               _closure_in_if(x, True).asnumpy())
    m = T(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(gd.jit(_closure_over_rows)(m).asnumpy(), [3.0, 5.0, 7.0])
    with pytest.raises(TraceError, match=r"assigns `k`, which the nested function `scale` \(line \d+\) reads"):
        gd.jit(lambda t: _closure_in_if(t, ops.sum(t) > 0))(x)


def _deletes(x):
    tmp = x * 5.0
    if ops.sum(x) > 0:
        del tmp
        y = x
    else:
        y = tmp
    return y


def test_del_in_a_branch_keeps_the_statement_python():
    """`del tmp` in one branch of a tensor `if` raised a bare UnboundLocalError from the generated
    branch function (a helper's trial): it is a TraceError with the reason."""
    x = T(np.array([0.5, -0.2, 1.0]))
    with pytest.raises(TraceError, match=r"deletes a variable \(`del`\)"):
        gd.jit(_deletes)(x)
    np.testing.assert_allclose(_deletes(x).asnumpy(), [0.5, -0.2, 1.0])  # (eagerly: Python's own if)


def _nested_number_carry(x, n):
    tot = 0.0
    for i in range(n):
        for j in range(n):
            tot = tot + ops.sum(x)
    return tot


def test_a_number_carried_through_nested_traced_loops_takes_the_bodys_type():
    """`tot = 0.0` carried by two nested loops over traced ranges: the inner loop saw the outer
    loop's carry (float32, from the number) as a typed tensor and refused the float64 body (a
    helper's trial); it widens it as the outer loop does, and the outer loop follows."""
    x = T(np.array([0.5, -0.2, 1.0]))
    for n in (0, 1, 3):
        got = gd.jit(_nested_number_carry)(x, gd.Tensor(np.array(n, np.int32)))  # (T() made it float64: a float
        # range bound is refused now, as Python's range refuses it; it was cast to int32 silently)
        assert got.dtype == gd.float64
        np.testing.assert_allclose(got.asnumpy(), 1.3 * n * n, rtol=1e-12)


def _two_loops(xs):
    acc = ops.zeros_like(xs[0])
    for x in xs:
        acc = acc + x
    sq = ops.zeros_like(xs[0])
    for x in xs:
        sq = sq + x * x
    return acc, sq


def _nested_param(xs):
    acc = ops.zeros_like(xs[0])
    for x in xs:
        acc = acc + x

    def body(c, x):
        return c + x, None
    return acc + gd.scan(body, acc * 0, xs)[0] + (lambda x: x)(acc)


def _used_after(xs):
    for x in xs:
        pass
    return x


def test_a_loop_variable_read_only_by_a_later_loop_or_a_nested_function_is_not_used_after():
    """`for x in xs` twice in a row, or a nested def / lambda whose own parameter is x: the first
    loop's x was refused as "first assigned inside this loop and used after it" (a sequence-model
    trial: reads of the later loop's own target, and of a nested function's parameters, counted
    as reads of the loop's variable). A real read after the loop is still refused."""
    xs = T(np.arange(6.0).reshape(3, 2))
    acc, sq = gd.jit(_two_loops)(xs)
    np.testing.assert_allclose(acc.asnumpy(), [6.0, 9.0])
    np.testing.assert_allclose(sq.asnumpy(), [20.0, 35.0])
    np.testing.assert_allclose(gd.jit(_nested_param)(xs).asnumpy(), [18.0, 27.0])
    with pytest.raises(TraceError, match="first assigned inside this tensor-dependent `for` loop and used after"):
        gd.jit(_used_after)(xs)


def _subscript_target_after(x, n):
    c = x * 0
    buf = [0, 0, 0]
    for i in range(n):
        k = 1
        c = c + x
    for buf[k] in range(2):
        c = c + buf[k]
    return c


def test_a_later_loop_with_a_subscript_target_still_reads_its_names():
    """`for buf[k] in ...` after a loop that first assigned k reads k: still the clear refusal
    (a refinement of the loop-variable analysis had counted k as the later loop's own)."""
    with pytest.raises(TraceError, match="variable 'k' is first assigned inside this tensor-dependent `for` loop"):
        gd.jit(_subscript_target_after)(T(1.5), gd.Tensor(np.int32(3)))


def _target_reads_only(x, n):
    buf = [x, x]
    for k in range(n):
        x = x + 1.0
    for buf[k] in [1.0, 2.0]:
        pass
    return buf[0]


def _loop_var_in_other_branch(x, n, flag):
    if flag:
        for k in range(n):
            x = x + 1.0
    else:
        k = 2.0
        x = x * k
    return x


def _read_by_next_step(x, n):
    for j in range(3):  # a Python range: unrolled, its next step reads k
        if j > 0:
            x = x + k
        for k in range(n):
            x = x + 1.0
    return x


def _read_by_a_closure(x, n):
    get = lambda: k  # noqa: E731
    for k in range(n):
        x = x + 1.0
    return x + get()


def test_reads_after_a_loop_follow_the_program_flow():
    """Which variables a converted loop must define is what may be read once it has finished: the
    rest of its block and of the blocks around it, an enclosing loop's next step, a nested function
    (it may be called later); not the other branch of an enclosing Python `if` (refused as "first
    assigned inside this loop and used after it": the analysis counted every read in the function
    but the loop's own). A `for buf[k]` target's read of k counts (it raised Undefined's
    UnboundLocalError, not the TraceError, when the later loop's body did not read k)."""
    n = gd.Tensor(np.int32(3))
    f = gd.jit(_loop_var_in_other_branch, static_argnums=2)
    np.testing.assert_allclose(f(T(1.5), n, True).asnumpy(), 4.5)
    np.testing.assert_allclose(f(T(1.5), n, False).asnumpy(), 3.0)
    for fn in (_target_reads_only, _read_by_next_step, _read_by_a_closure):
        with pytest.raises(TraceError, match="variable 'k' is first assigned inside this tensor-dependent `for`"):
            gd.jit(fn)(T(1.5), n)


# ---- liveness across exceptions, lazy reads, patterns and breaks (an autograph2 trial) ----

def _lv_try_handler_reads_old(x):
    try:
        if ops.sum(x) > 0:
            y = x * 2
        else:
            y = x * 3
        y = ops.reshape(x, (2, 2))  # raises for a 3-vector: the handler's path keeps the if's y
    except Exception:
        pass
    return y


def _lv_break_in_try_finally_reads(x):
    acc = x
    for i in range(3):
        try:
            if ops.sum(x) > 0:
                z = x * 2
            else:
                z = x * 3
            break
        finally:
            acc = acc + z
    return acc


def _lv_raise_then_handler(x):
    try:
        if ops.sum(x) > 0:
            y = x * 2
        else:
            y = x * 3
        raise ValueError
    except ValueError:
        return y


def _lv_suppress(x):
    import contextlib
    with contextlib.suppress(Exception):
        if ops.sum(x) > 0:
            y = x * 2
        else:
            y = x * 3
        y = ops.reshape(x, (2, 2))
    return y


def _lv_generator_before(x):
    g = (y * k for k in (1.0, 2.0))
    if ops.sum(x) > 0:
        y = x
    else:
        y = -x
    return sum(g)


def _lv_locals_after(x):
    if ops.sum(x) > 0:
        y = x * 2
    else:
        y = x * 3
    return locals()["y"]


def _lv_placeholder(x, n):
    y = None  # dead after the if: one branch's temporary
    if ops.sum(x) > 0:
        y = x * 2
        x = x + y
    t = None  # dead on entry to the loop: every step assigns it first
    for i in range(n):
        t = x * 0.5
        x = x + t
    return x


def _lv_nested_local(x, n):
    def act(v):
        t = ops.tanh(v)  # act's own t, not the loop's
        return t * 2
    for i in range(n):
        t = x * 0.5
        x = x + t
    return act(x)


def _lv_break_keeps_item(xs):
    r = xs[0] * 0
    for r in xs:
        if ops.sum(r) > 0:
            break
    return r


def _lv_subscript_target(xs):
    buf = [None]
    for buf[0] in xs:  # stores into a list: unrolled as Python, not a scan
        pass
    return buf[0]


def _lv_match_capture(x, n):
    v = x
    for i in range(n):
        match (v * 2,):
            case (v,):
                pass
    return v


def _lv_walrus_in_comprehension(x, flag):
    z = x * 0
    if flag:
        ys = [(z := x * k) for k in (1.0, 2.0)]  # binds the function's z
    else:
        ys = [x, x]
    return ys[0] + z


def _lv_walrus_in_while_test(x):
    k = 0
    s = 0
    while (s := k * 2) < 6:
        k += 1
    return x * s


@pytest.mark.parametrize("fn, args", [
    (_lv_try_handler_reads_old, ([1.0, -2.0, 3.0],)), (_lv_break_in_try_finally_reads, ([1.0, -2.0, 3.0],)),
    (_lv_raise_then_handler, ([1.0, -2.0, 3.0],)), (_lv_suppress, ([1.0, -2.0, 3.0],)),
    (_lv_generator_before, ([1.0, -2.0, 3.0],)), (_lv_locals_after, ([1.0, 2.0],)),
    (_lv_placeholder, ([1.0, 2.0], 3)), (_lv_nested_local, ([1.0, 2.0], 2)),
    (_lv_break_keeps_item, (np.arange(12.0).reshape(4, 3) - 5,)), (_lv_subscript_target, (np.arange(6.0).reshape(2, 3),)),
    (_lv_match_capture, ([1.0, 2.0], 3)), (_lv_walrus_in_while_test, ([1.0, 2.0],)),
], ids=lambda a: a.__name__ if callable(a) else "")
def test_what_a_converted_statement_keeps_follows_every_path(fn, args):
    """Graph mode keeps a variable that may be read after an if/loop on any path: through a try's
    handler or finally (an assignment in between may raise), past a `with` that may swallow an
    exception, from a generator expression or locals(); it drops one that is dead (a placeholder
    `y = None`, a nested function's own local); a loop that breaks leaves its target at the item
    it broke at; a `for buf[k]` target, a match capture and a `:=` are assignments as Python makes
    them. Found by a trial against eager Python (the oracle here): jit returned `<undefined y>`,
    raised UnboundLocalError, returned the last row after a break, or lost a `:=`."""
    ins = [I32(a) if isinstance(a, int) else T(a) for a in args]
    want = fn(*ins).numpy()
    for backend in ("tvm", "numpy"):
        got = gd.jit(fn, backend=backend)(*ins).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-15, err_msg=backend)


def test_walrus_assignments_in_converted_statements_stay_python():
    """A `:=` in a while test (the test becomes a function) or in a comprehension (it binds the
    enclosing function's name) keeps the statement Python: right with Python values, a TraceError
    naming the reason with a traced test (a walrus was lost silently)."""
    x = T([1.0, 2.0])
    f = gd.jit(_lv_walrus_in_comprehension, static_argnums=1)
    np.testing.assert_allclose(f(x, True).numpy(), _lv_walrus_in_comprehension(x, True).numpy())

    def traced_test(x):
        s = ops.sum(x) * 0
        while (s := ops.sum(x)) < 50.0:
            x = x * 2.0
        return x + s
    with pytest.raises(TraceError, match="its test contains an assignment expression"):
        gd.jit(traced_test)(x)

    def traced_if(x):
        z = x * 0
        if ops.sum(x) > 0:
            ys = [(z := x * k) for k in (1.0, 2.0)]
        else:
            ys = [x, x]
        return ys[0] + z
    with pytest.raises(TraceError, match="a comprehension in it contains an assignment expression"):
        gd.jit(traced_if)(x)


def _lv_next_step_reads(x, n):
    for i in range(n):
        if i > 0:
            x = x + prev  # noqa: F821  (the previous step's, unbound in the first)
        prev = x * 0.5
    return x


def test_a_variable_unbound_on_a_traced_path_is_a_trace_error_with_its_line():
    """Reading a variable a traced path has not bound raises UnboundVariableError, a TraceError
    (and an UnboundLocalError) naming the variable and the user's line: it was a bare
    UnboundLocalError raised inside graphad's error formatting, without a line."""
    from graphad.frontend.autograph import UnboundVariableError
    with pytest.raises(TraceError, match=r"variable 'prev' is not defined on this path.*test_autograph.py:\d+") as e:
        gd.jit(_lv_next_step_reads)(T([1.0, 2.0]), I32(3))
    assert isinstance(e.value, UnboundVariableError) and isinstance(e.value, UnboundLocalError)


# ---- an autograph3 trial of the liveness above: jumps through finally, exception paths, except-as

def _lv_break_through_finally(x):
    y = x
    for i in range(2):
        try:
            if i == 1:
                break
        finally:
            if ops.sum(x) > 0:  # traced: its y is read after the loop when the break went through it
                y = x * 2
            else:
                y = x * 3
        y = x
    return y


def _lv_continue_through_finally(x):
    acc = x
    t = x * 0
    for i in range(3):
        acc = acc + t
        try:
            if i == 0:
                continue
        finally:
            if ops.sum(x) > 0:
                t = x * 2
            else:
                t = x * 3
        t = x * 0
    return acc


def _lv_except_as(x):
    y = x
    for i in range(2):
        try:
            if i == 1:
                raise ValueError("bad")
        except ValueError as err:  # noqa: F841  (Python deletes err after the handler)
            y = y * 2
    return y


def _lv_handler_kills(x):
    try:
        if ops.sum(x) > 0:
            c = x * 2  # a temporary of the true branch: every path reassigns c before reading it
            b = c + 1
        else:
            b = x
        c = b * 3
    except ValueError:
        c = x
        b = x
    return b + c


def _lv_match_default(x, n, p):
    for i in range(n):
        t = x * 0.5  # a loop temporary: every case of the match reassigns t
        x = x + t
    match p:
        case 0:
            t = x
        case _:
            t = x * 2
    return x + t


class _SuperBase(gd.nn.Cell):
    def construct(self, x, n):
        return x * 2.0


class _SuperNet(_SuperBase):
    def construct(self, x, n):
        h = super().construct(x, n)  # super() reads no local variable
        for i in range(n):
            t = h * 0.5
            h = h + t
        return h


@pytest.mark.parametrize("fn, args", [
    (_lv_break_through_finally, ([1.0, -2.0, 3.0],)), (_lv_continue_through_finally, ([1.0, -2.0, 3.0],)),
    (_lv_except_as, ([1.0, -2.0, 3.0],)), (_lv_handler_kills, ([1.0, -2.0, 3.0],)),
    (_lv_match_default, ([1.0, 2.0], 2, 1)), (_SuperNet(), ([1.0, -2.0, 3.0], 2)),
], ids=lambda a: getattr(a, "__name__", type(a).__name__) if callable(a) else "")
def test_liveness_follows_jumps_through_finally_and_exception_paths(fn, args):
    """A break/continue through a `finally` makes the finally's variables live at the loop's exit
    or head (jit raised UnboundVariableError, or returned x inside a try); an exception leaving a
    try body runs the finally and goes outward, so what is read after the try is not live in the
    body (needless refusals); `except E as err` binds no variable of the statement (Python deletes
    err: UnboundLocalError); a match ending in `case _:` always assigns; super() reads no local.
    Found by an autograph3 trial; oracle: eager Python."""
    ins = [I32(a) if isinstance(a, int) else T(a) for a in args]
    if fn is _lv_match_default:
        ins[-1] = args[-1]
        jf = gd.jit(fn, static_argnums=2)
    else:
        jf = gd.jit(fn)
    want = fn(*ins).numpy()
    np.testing.assert_allclose(jf(*ins).numpy(), want, rtol=1e-15)


# ---- a break / continue under nested tensor ifs (autograph2/3 trials' F3) ----

def _jg_while_break(x, n):
    k = 0
    while k < n:
        k += 1
        if ops.sum(x) > 0:
            if ops.sum(x) > 10:
                break
            b = x * 0.3
        else:
            b = x * 0.5
        x = x + b  # b is assigned on every path that reaches here
    return x


def _jg_while_continue(x, n):
    k = 0
    while k < n:
        k += 1
        if ops.sum(x) > 0:
            if ops.sum(x) > 3:
                x = x - 1.0
                continue
            b, c = x * 0.3, 2.0
        else:
            b, c = x * 0.5, 3.0
        x = x + b * c
    return x


def _jg_for_break(x, xs):
    for r in xs:
        if ops.sum(r) > 0:
            if ops.sum(x) > 5:
                break
            b = x * r
        else:
            b = x - r
        x = x + b
    return x


def _jg_nested_loops(x, n):
    for i in range(3):
        k = 0
        while k < n:
            k += 1
            if ops.sum(x) > 2 * i:
                if ops.sum(x) > 10:
                    break
                c = x * 0.25
                d = c + 1
            else:
                c, d = x * 0.5, x
            x = x + c * d
    return x


def _jg_read_after_loop_defined(x, n):
    b = x * 0
    k = 0
    while k < n:
        k += 1
        if ops.sum(x) > 0:
            if ops.sum(x) > 10:
                break
            b = x * 0.3
        else:
            b = x * 0.5
        x = x + b
    return x + b  # the b of the step before the break (or the one before the loop)


def _jg_read_after_loop_undefined(x, n):
    k = 0
    while k < n:
        k += 1
        if ops.sum(x) > 0:
            if ops.sum(x) > 10:
                break
            b = x * 0.3
        else:
            b = x * 0.5
        x = x + b
    return x + b  # unbound in Python when the first step breaks


XS = np.array([[1.0, 1.0], [-1.0, 0.5], [2.0, 2.0], [3.0, -1.0]])


@pytest.mark.parametrize("fn", [_jg_while_break, _jg_while_continue, _jg_for_break, _jg_nested_loops,
                                _jg_read_after_loop_defined], ids=lambda f: f.__name__)
@pytest.mark.parametrize("x0", [[1.0, 2.25], [-1.0, -2.0], [6.0, 6.5], [0.5, 0.2]])
def test_a_jump_under_nested_tensor_ifs_leaves_variables_read_only_without_it(fn, x0):
    """A variable that the statements after a break or continue assign (lowered: under `if not
    flag:`) and that is read later only on paths without the jump was refused as "assigned only in
    the other branch": the liveness took the guard's other branch (the jump's path) to go on to the
    rest of the step, which is guarded off too. On that path the variable is now what is live where
    the jump goes; the guard gives it zeros nobody reads. Oracle: eager Python; the gradient
    against central differences."""
    second = XS if fn is _jg_for_break else I32(5)
    want = fn(T(x0), second).numpy()
    got = both_backends(gd.jit(fn), T(x0), second)
    np.testing.assert_allclose(got[0], want, rtol=1e-12)
    g = gd.grad(gd.jit(lambda x: ops.sum(fn(x, second)), max_steps=8))(T(x0)).numpy()
    np.testing.assert_allclose(g, fd_grad(lambda a: float(np.sum(fn(T(a), second).numpy())), x0), rtol=1e-6, atol=1e-8)


def test_a_jump_guard_variable_read_after_the_loop_is_still_refused():
    """Read after the loop, the variable is live where the break goes: the step that breaks
    before assigning it leaves the one from before (undefined before the loop here: Python
    would raise), so graph mode refuses it as any loop's new variable."""
    with pytest.raises(TraceError, match="variable 'b' is first assigned inside this tensor-dependent `while`"):
        gd.jit(_jg_read_after_loop_undefined)(T([1.0, 2.0]), I32(5))


# ---- closures that see a converted statement's variables (autograph3 trial, 1d) ----

def _cl_nonlocal_writer(x):
    y = x
    def inc():
        nonlocal y
        y = y * 2
    for i in range(3):
        inc()
        y = y + 1
    return y


def _cl_through_a_container(x):
    y = x
    get = (lambda: y,)
    for i in range(3):
        y = y + get[0]()
    return y


def _cl_appended(x):
    y = x
    fs = []
    fs.append(lambda: y)
    for i in range(3):
        y = y + fs[0]()
    return y


def _cl_made_in_the_body(x):
    fs = []
    for i in range(3):
        fs.append(lambda: x * i)
    return fs[0]() + fs[1]()  # late binding: both see the last i


def _cl_generator_made_in_a_step(x):
    y = x * 0
    gen = None
    for i in range(3):
        y = y + x
        if i == 0:
            gen = (y * k for k in (1.0, 2.0))
    return sum(gen)


def _cl_alias_in_a_tensor_if(x):
    y = x
    def g():
        return y
    h = g
    if ops.sum(x) > 0:
        y = x * 5
        z = h()
    else:
        y = x * 7
        z = h()
    return z


def _cl_lambda_after_the_loop(x, n):
    h = x
    for i in range(n):  # a traced range: converted, the lambda made after it reads the result
        h = h * 0.5 + 1.0
    get = lambda: h  # noqa: E731
    return get()


@pytest.mark.parametrize("fn", [_cl_nonlocal_writer, _cl_through_a_container, _cl_appended, _cl_made_in_the_body,
                                _cl_generator_made_in_a_step], ids=lambda f: f.__name__)
def test_statements_a_closure_sees_stay_python(fn):
    """A nested function that writes the variable through `nonlocal`, one reached through a tuple
    or a list, a lambda or a generator expression made inside a loop's body: converted, each saw
    another copy of the statement's variable than Python does (silently: x + 3 for 8x + 7, x for
    4x). These statements stay Python now. Oracle: eager Python."""
    x = T([1.0, -2.0, 3.0])
    np.testing.assert_allclose(both_backends(gd.jit(fn), x)[0], fn(x).numpy(), rtol=1e-15)


def test_a_closure_called_in_a_tensor_if_under_an_alias_is_refused():
    with pytest.raises(TraceError, match=r"assigns `y`, which the nested function `h` \(line \d+\) reads"):
        gd.jit(_cl_alias_in_a_tensor_if)(T([1.0, -2.0, 3.0]))


def test_a_closure_made_after_a_converted_loop_reads_its_result():
    got = gd.jit(_cl_lambda_after_the_loop)(T([1.0, 4.0]), I32(3)).numpy()
    np.testing.assert_allclose(got, _cl_lambda_after_the_loop(T([1.0, 4.0]), 3).numpy(), rtol=1e-15)


# ---- an exception leaving a statement that ran as Python keeps its assignments (autograph3 1b) ----

def _ex_loop_raises_in_a_later_step(x):
    t = x
    try:
        for i in range(3):
            t = t * 2.0
            if i == 1:
                raise ValueError
    except ValueError:
        pass
    return t


def _ex_drain_an_iterator(x):
    it = iter([x, x * 2.0])
    acc = x * 0
    try:
        while True:
            acc = acc + next(it)
    except StopIteration:
        pass
    return acc


def _ex_branch_raises_after_assigning(x, flag=True):
    t = x
    try:
        if flag:
            t = t * 2.0
            raise ValueError
    except ValueError:
        pass
    return t


def _ex_nested_and_iterator(x):
    def items():
        yield 1.0
        yield 2.0
        raise KeyError("gone")
    s, n = x * 0, 0
    try:
        for w in items():  # the iterable raises after two steps
            for k in range(2):
                s = s + x * w
                n += 1
    except KeyError:
        pass
    return s * n


def _ex_traced_branch_raises(x):
    y = x
    try:
        if ops.sum(x) > 0:
            y = x * 2.0
        else:
            y = x * 3.0
            raise ValueError  # traced too, whatever the data: the if left no values
    except ValueError:
        pass
    return y


@pytest.mark.parametrize("fn", [_ex_loop_raises_in_a_later_step, _ex_drain_an_iterator,
                                _ex_branch_raises_after_assigning, _ex_nested_and_iterator],
                         ids=lambda f: f.__name__)
def test_an_exception_leaving_a_python_statement_keeps_its_assignments(fn):
    """The body of a converted statement is a function returning its variables, so a raise lost
    what it had assigned: jit gave x for 4x (a Python range whose second step raised), 0 for 3x
    (draining an iterator until StopIteration). A statement that ran as Python now assigns its
    variables' values as the exception leaves it. Oracle: eager Python."""
    x = T([1.0, -2.0, 3.0])
    np.testing.assert_allclose(both_backends(gd.jit(fn), x)[0], fn(x).numpy(), rtol=1e-15)


def test_an_exception_while_a_tensor_if_is_traced_leaves_the_variables_as_before():
    x = T([1.0, -2.0, 3.0])
    np.testing.assert_allclose(gd.jit(_ex_traced_branch_raises)(x).numpy(), x.numpy(), rtol=1e-15)


# ---- an autograph4 trial of the three changes above ----

class _E(Exception):
    pass


def _ex_stale_mark(x, p):
    s = 0.0
    try:
        if ops.sum(x) > 0:
            s = 1.0
            if p:  # a Python if that assigns nothing: its mark is its own
                raise _E
    except _E:
        pass
    return x + s


def _cl_call_result_is_no_closure(x, n):
    y = x
    g = lambda s: s * y  # noqa: E731
    z = g(x)  # z holds g's result, not g
    t = ops.sum(g(x))
    for i in range(n):
        y = y * 0.5 + z + t
    return y


def _cl_made_and_used_in_the_step(x, n):
    for i in range(n):
        x = x * 0.5 + sum(x * k for k in (1.0, 2.0))  # a generator consumed where it is made
    return x


def test_the_changes_of_autograph_four():
    """An exception from a Python statement that assigns nothing, inside a tensor `if`, left its
    mark: the tensor `if` then assigned its traced branch's values ([0, -1] for [-1, -2]). A call's
    result counted as holding the closure called (`z = g(x)` refused a later loop assigning y),
    and a generator expression made and consumed in a loop step was refused."""
    x = T([-1.0, -2.0])
    np.testing.assert_allclose(gd.jit(_ex_stale_mark, static_argnums=1)(x, True).numpy(),
                               _ex_stale_mark(x, True).numpy())
    n = I32(3)
    for fn in (_cl_call_result_is_no_closure, _cl_made_and_used_in_the_step):
        np.testing.assert_allclose(both_backends(gd.jit(fn), T([1.0, 4.0]), n)[0],
                                   fn(T([1.0, 4.0]), 3).numpy(), rtol=1e-15)
