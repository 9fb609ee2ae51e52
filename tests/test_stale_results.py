"""A staged (traced and compiled) function never runs code, values or structure older than what it
is called with: cases a helper's trial found answered from a stale graph (2026-12-04), each against
the eager result. The rules they exercise: nn.Cell's attribute rule (nn/cell.py: a change to what
a trace read forgets the staged graphs), the staging keys (frontend/function.py fn_key,
static_key) and graph mode's conversion of a function's source (frontend/autograph.py)."""
from __future__ import annotations

import dataclasses
import importlib
import sys
import warnings

import numpy as np
import pytest

import graphad as gd
from graphad import nn
from graphad.errors import TraceError

X = gd.Tensor(np.ones((2, 3), np.float32))


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.asnumpy()), np.asarray(b.asnumpy()))


def test_a_cell_list_changed_after_a_trace_retraces():
    """`for layer in self.layers` reads a CellList that is never called: append and item
    assignment ran the old layers (a (2, 3) result where the model now gives (2, 2))."""
    class Stack(nn.Cell):
        def __init__(self):
            super().__init__()
            self.layers = nn.CellList([nn.Dense(3, 3)])

        def construct(self, x):
            for layer in self.layers:
                x = layer(x)
            return x
    net = Stack()
    f = gd.jit(net)
    f(X)
    net.layers.append(nn.Dense(3, 2))
    assert f(X).shape == (2, 2)
    _same(f(X), net(X))
    net.layers[0] = nn.Dense(3, 3)
    _same(f(X), net(X))


def test_a_read_parameter_replaced_and_a_transformed_method_retrace():
    """construct reading `self.fc.weight` without calling `self.fc`, then the weight replaced;
    `gd.jit(net.scaled)` (a method, the cell never called), then `net.scale` reassigned."""
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(3, 2)
            self.scale = 1.0

        def construct(self, x):
            return x @ self.fc.weight.T

        def scaled(self, x):
            return x * self.scale
    net = Net()
    f = gd.jit(net)
    f(X)
    net.fc.weight = gd.Parameter(gd.Tensor(np.full((2, 3), 2.0, np.float32)), name="weight")
    _same(f(X), net(X))
    net2 = Net()
    g = gd.jit(net2.scaled)
    g(X)
    net2.scale = 7.0
    _same(g(X), net2.scaled(X))
    np.testing.assert_array_equal(g(X).asnumpy(), np.full((2, 3), 7.0, np.float32))


def test_equal_callable_objects_do_not_share_a_graph():
    """Frozen dataclasses that compare equal (Scale(1) == Scale(1.0); a field left out of the
    comparison) stage graphs of their own, as jax.jit and jax.vmap do."""
    @dataclasses.dataclass(frozen=True)
    class Scale:
        c: float

        def __call__(self, a):
            return a * self.c

    @dataclasses.dataclass(frozen=True)
    class Model:
        name: str
        w: tuple = dataclasses.field(compare=False)

        def __call__(self, a):
            return a * self.w[0]
    xi = gd.Tensor(np.arange(4, dtype=np.int32))
    gd.jit(Scale(1))(xi)
    assert gd.jit(Scale(1.0))(xi).dtype == gd.float32
    x = gd.Tensor(np.arange(4, dtype=np.float32))
    gd.vmap(Model("m", (2.0,)))(x)
    np.testing.assert_array_equal(gd.vmap(Model("m", (3.0,)))(x).asnumpy(), [0.0, 3.0, 6.0, 9.0])
    np.testing.assert_array_equal(gd.jit(Model("m", (4.0,)).__call__)(x).asnumpy(), [0.0, 4.0, 8.0, 12.0])


def test_static_dicts_in_another_order_are_another_signature():
    f = gd.jit(lambda x, w: x * list(w.values())[0], static_argnums=1)
    x = gd.Tensor(np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(f(x, {"b": 3.0, "a": 2.0}).asnumpy(), [3.0, 6.0])
    np.testing.assert_array_equal(f(x, {"a": 2.0, "b": 3.0}).asnumpy(), [2.0, 4.0])


def test_a_function_whose_file_changed_since_its_import_is_not_converted_from_it(tmp_path, monkeypatch):
    """Graph mode converts a def from its source file; a file edited after the import held another
    computation (a * 3.0 where the function computes a * 2.0), which jit then ran. Now the source
    must compile to the function's own code; else the function runs unconverted, with a warning
    (and its tensor-dependent if is refused with a TraceError rather than answered wrongly)."""
    src = ("from graphad import ops\n"
           "def f(a):\n"
           "    return a * 2.0\n"
           "def g(a):\n"
           "    if ops.sum(a) > 0:\n"
           "        r = a * 2.0\n"
           "    else:\n"
           "        r = a - 2.0\n"
           "    return r\n")
    mod = tmp_path / "edited_after_import.py"
    mod.write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = importlib.import_module("edited_after_import")
    try:
        mod.write_text(src.replace("a * 2.0", "a * 3.0"))  # edited while the process runs
        x = gd.Tensor(np.array([1.0, 2.0], np.float32))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            np.testing.assert_array_equal(gd.jit(m.f)(x).asnumpy(), [2.0, 4.0])  # no control flow: as written
            with pytest.raises(TraceError):
                gd.jit(m.g)(x)  # it gave [3, 6]
        assert any("is not the code it was compiled from" in str(w.message) for w in caught)
    finally:
        sys.modules.pop("edited_after_import", None)
