"""CPU kernels are compiled without TVM's argument checks (lowering/arg_checks.py): the checks are
gone from the kernels and kept in the VM's main, and every input that those checks would have
refused is refused (or copied into shape) before any kernel runs.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm


@pytest.fixture(autouse=True)
def no_caches(monkeypatch):
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "1")
    cache_clear(disk=False)
    gd.set_backend("tvm")  # conftest puts the NumPy backend back after each test
    yield
    cache_clear(disk=False)


def _asserts_per_function(monkeypatch, fn, *args):
    """{function name: AssertStmt count} of the host module LLVM receives when `fn` compiles."""
    import tvm_ffi
    from graphad.lowering._tvm import load_tvm
    tvm = load_tvm()
    tb = importlib.import_module("tvm.tirx.build")
    seen = {}
    orig = tb.codegen_build

    def spy(mod, target):
        for gv, f in mod.functions_items():
            n = [0]
            tvm_ffi.structural_walk(f.body, [(tvm.tirx.AssertStmt, lambda _: n.__setitem__(0, n[0] + 1))])
            seen[gv.name_hint] = n[0]
        return orig(mod, target)
    monkeypatch.setattr(tb, "codegen_build", spy)
    gd.jit(fn)(*args)
    return seen


def test_kernels_have_no_checks_and_the_main_keeps_its_own(monkeypatch):
    x = gd.Tensor(np.ones((16, 8), np.float32))
    w = gd.Tensor(np.ones((8, 4), np.float32))
    seen = _asserts_per_function(monkeypatch, lambda a, b: ops.sin(a) @ b + 1.0, x, w)
    kernels = {k: n for k, n in seen.items() if not k.startswith("__vmtir__")}
    assert kernels and all(n == 0 for n in kernels.values()), seen
    assert seen.get("__vmtir__main", 0) > 0, seen  # compiled exec mode: main checks its arguments


def _inputs_checks_would_refuse():
    base = np.arange(64, dtype=np.float32).reshape(8, 8) * 0.05
    raw = np.zeros(8 * 8 * 4 + 4, np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=np.float32, count=64, offset=4).reshape(8, 8)
    misaligned[...] = base
    return {
        "strided": (np.arange(128, dtype=np.float32) * 0.05).reshape(8, 16)[:, ::2],
        "transposed": np.ascontiguousarray(base.T).T,
        "fortran": np.asfortranarray(base),
        "misaligned": misaligned,
    }


@pytest.mark.parametrize("kind", ["strided", "transposed", "fortran", "misaligned"])
def test_unusual_layouts_are_copied_in_and_give_the_right_result(kind):
    from graphad.runtime.executable import compile_graph
    arr = _inputs_checks_would_refuse()[kind]
    assert not (arr.flags.c_contiguous and arr.ctypes.data % 64 == 0)
    f = lambda a: ops.exp(a) * 2.0 + a  # noqa: E731
    want = np.exp(arr.astype(np.float64)) * 2.0 + arr
    got = gd.jit(f)(arr)
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-6)
    graph = gd.jit(f).lower(gd.TensorSpec((8, 8))).graph
    exe = compile_graph(graph)
    np.testing.assert_allclose(exe([arr])[0].asnumpy(), want, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.ones((8, 9), np.float32), np.ones((8, 8), np.float64),
                                 np.ones((64,), np.float32), np.ones((8, 8), np.int32)])
def test_a_wrong_shape_or_dtype_never_reaches_a_kernel(bad):
    from graphad.runtime.executable import compile_graph
    graph = gd.jit(lambda a: ops.exp(a) * 2.0).lower(gd.TensorSpec((8, 8))).graph
    exe = compile_graph(graph)
    with pytest.raises(gd.GraphadError, match="expects f32\\[8, ?8\\]|expects"):
        exe([bad])
