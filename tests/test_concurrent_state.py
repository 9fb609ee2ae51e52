"""Calls from several Python threads against state another thread changes: a Parameter's
set_data, a Cell's attribute, the backend. Each race was found by a helper's trial (races made
deterministic here by widening the window the way the trial did: a slower step in between); each
left a wrong value in place for every later call, not only the racing one.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    t.start()
    return t, out


@pytest.mark.tvm
def test_a_parameter_set_while_a_call_makes_its_view_is_not_left_stale(monkeypatch):
    """A compiled call read p's buffer and stored its TVM view after another thread's set_data had
    replaced the buffer: every later compiled call of every function used the old value (and a
    train step wrote back a result made from it), until p's next set_data."""
    from graphad.runtime import executable as ex
    gd.set_backend("tvm")
    p = gd.Parameter(np.zeros(3, np.float32), name="p")
    x = gd.Tensor(np.ones(3, np.float32))
    f = gd.jit(lambda x: x + p)
    f(x)
    p.set_data(np.full(3, 1.0, np.float32))
    slow = ex.Executable._view_of

    def slow_view_of(self, arr):
        v = slow(self, arr)
        time.sleep(0.2)
        return v
    monkeypatch.setattr(ex.Executable, "_view_of", slow_view_of)
    t, _ = _in_thread(lambda: f(x))
    time.sleep(0.05)
    p.set_data(np.full(3, 2.0, np.float32))  # while the thread's call makes its view of the old value
    t.join(timeout=120)
    monkeypatch.setattr(ex.Executable, "_view_of", slow)
    assert f(x).numpy().tolist() == [3.0, 3.0, 3.0]
    assert gd.jit(lambda x: x * p)(x).numpy().tolist() == [2.0, 2.0, 2.0]


def test_a_cell_attribute_assigned_while_another_thread_traces_is_seen(backend):
    """A Cell's attribute assigned while another thread traced a function of it: that thread's
    graph (the old value) was kept after the assignment cleared the staged graphs, under a key
    equal to the new one, and every later call (a new gd.jit of the Cell too) used it."""
    class Scale(nn.Cell):
        def __init__(self):
            super().__init__()
            self.scale = 2.0

        def construct(self, x):
            s = self.scale
            time.sleep(0.3)  # a slow trace
            return x * s
    net = Scale()
    f = gd.jit(net)
    x = gd.Tensor(np.ones(2, np.float32))
    t, out = _in_thread(lambda: f(x))
    time.sleep(0.1)
    net.scale = 3.0
    t.join(timeout=120)
    assert out["r"].numpy().tolist() == [2.0, 2.0]  # the call that started before: the old value
    assert f(x).numpy().tolist() == [3.0, 3.0]
    assert gd.jit(net)(x).numpy().tolist() == [3.0, 3.0]


def test_a_backend_set_while_another_thread_stages_does_not_mix_keys(monkeypatch):
    """stage() read the backend and the cache key at two moments: a set_backend in between cached
    the interpreter under the compiled backend's key (correct values, the slow runner for good)."""
    import graphad.frontend.function as F
    gd.set_backend("numpy")
    slow = F.signature

    def slow_signature(leaves):
        time.sleep(0.2)
        return slow(leaves)
    monkeypatch.setattr(F, "signature", slow_signature)
    try:
        f = gd.jit(lambda x: ops.sin(x) * 2.0)
        x = gd.Tensor(np.ones(3, np.float32))
        t, _ = _in_thread(lambda: f(x))
        time.sleep(0.1)
        gd.set_backend("tvm")
        t.join(timeout=120)
        monkeypatch.setattr(F, "signature", slow)
        f(x)
        for k, st in F._STAGED.items():  # every staged graph runs on the backend its key names
            want = k[3] or k[4][0]
            plain_interpreter = type(st.runner) is F.InterpretedRunner and st.runner.host_reason is None
            assert plain_interpreter == (want == "numpy"), (k[3:5], type(st.runner).__name__)
    finally:
        gd.set_backend("numpy")
