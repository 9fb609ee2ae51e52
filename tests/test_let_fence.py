"""Float Let values are hidden from TVM's arithmetic analyzer while TVM's TIR passes run
(lowering/let_fence.py), and LLVM still receives what it received without the fence: the fence
is in place for the passes, gone before LLVM, and changes neither the LLVM IR nor the results.
"""
from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm


@pytest.fixture(autouse=True)
def no_caches(monkeypatch):
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    cache_clear(disk=False)
    gd.set_backend("tvm")  # conftest puts the NumPy backend back after each test
    yield
    cache_clear(disk=False)


def _tvm():
    from graphad.lowering._tvm import load_tvm
    return load_tvm()


def _calls_of(tvm, mod, op) -> int:
    import tvm_ffi
    n = [0]

    def visit(call):
        if call.op.same_as(op):
            n[0] += 1
    for _, f in mod.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc):
            tvm_ffi.structural_walk(f.body, [(tvm.ir.Call, visit)])
    return n[0]


def _tir_of(monkeypatch, fn, *args):
    """The target-bound TIR module the build lowers when `fn` compiles (what lower_tir receives)."""
    from graphad.lowering import tir_lowering
    seen = []
    orig = tir_lowering.lower_tir

    def spy(tvm, mod):
        seen.append(mod)
        return orig(tvm, mod)
    monkeypatch.setattr(tir_lowering, "lower_tir", spy)
    import graphad.lowering.pipeline as pl
    monkeypatch.setattr(pl, "lower_tir", spy)
    gd.jit(fn)(*args)
    assert seen
    return seen


def _sin_module(monkeypatch):
    x = gd.Tensor(np.linspace(-10, 10, 256).astype(np.float32))
    mods = _tir_of(monkeypatch, lambda a: ops.sin(a) * 3.0, x)
    return [m for m in mods if any(gv.name_hint.startswith(("sin", "fused_sin")) for gv in m.get_global_vars())][0]


def test_fenced_wraps_float_lets_only_and_unfenced_restores_the_module(monkeypatch):
    import tvm_ffi
    from graphad.lowering.let_fence import _op, fenced, unfenced
    tvm = _tvm()
    tir = tvm.tirx
    # a float Let around an int Let: only the float value gets the fence
    i = tir.Var("i", "int32")
    f = tir.Var("f", "float32")
    buf = tvm.tirx.decl_buffer((8,), "float32", name="b")
    value = tir.Let(f, tir.Cast("float32", i) * tir.FloatImm("float32", 2.0),
                    f + f)
    body = tir.BufferStore(buf, tir.Let(i, tir.IntImm("int32", 3), value), [tir.IntImm("int32", 0)])
    func = tir.PrimFunc([buf], body).with_attr("global_symbol", "k")
    mod = tvm.IRModule({"k": func})
    op = _op(tvm)
    fmod = fenced(tvm, mod)
    assert _calls_of(tvm, fmod, op) == 1
    assert not tvm_ffi.structural_equal(fmod, mod)
    assert tvm_ffi.structural_equal(unfenced(tvm, fmod), mod)
    assert unfenced(tvm, mod).same_as(mod)  # nothing to strip: the same module


def test_the_fence_is_gone_before_llvm_and_llvm_gets_the_same_ir(monkeypatch):
    """The sin kernel (a chain of five float Lets) lowered with and without the fence: the fence
    calls are in the module TVM's passes see, none reach LLVM, and LLVM's IR is the same (up to
    the object addresses TVM prints into its alias metadata)."""
    from graphad.lowering import let_fence, tir_lowering
    from graphad.lowering.targets import codegen_target
    tvm = _tvm()
    tb = importlib.import_module("tvm.tirx.build")
    mod = _sin_module(monkeypatch)
    op = let_fence._op(tvm)
    assert _calls_of(tvm, let_fence.fenced(tvm, mod), op) >= 5
    host_fenced, _ = tir_lowering.lower_tir(tvm, mod)
    assert _calls_of(tvm, host_fenced, op) == 0
    monkeypatch.setattr(tir_lowering, "fenced", lambda tvm, m: m)
    host_plain, _ = tir_lowering.lower_tir(tvm, mod)
    target = codegen_target([f for _, f in mod.functions_items()][0].attrs["target"])

    def ir(host):
        text = tb.codegen_build(host, target).inspect_source("ll")
        return re.sub(r'!"0x[0-9a-f]+((\.[a-z0-9]+)*)"', r'!"ADDR\1"', text)  # (".w4.b0": an access's lanes, base)
    assert re.search(r"<(4|8|16) x float>", ir(host_fenced)), sorted(set(re.findall(r"<\d+ x \w+>", ir(host_fenced))))
    assert ir(host_fenced) == ir(host_plain)


@pytest.mark.parametrize("name", ["sin", "cos", "erfinv", "lgamma"])
def test_let_heavy_kernels_match_the_reference(name):
    """Compiled (fenced) against the NumPy backend, value and gradient, float32 and float64."""
    f = getattr(ops, name)
    rng = np.random.default_rng(3)
    for dt in ("float32", "float64"):
        x = rng.uniform(-0.95, 0.95, 300) if name == "erfinv" else rng.standard_normal(300) * 30
        if name == "lgamma":
            x = np.abs(x) + 0.05
        x = x.astype(dt)
        gd.set_backend("tvm")
        got = gd.jit(lambda a: f(a))(gd.Tensor(x)).asnumpy()
        dgot = gd.jit(gd.grad(lambda a: f(a).sum()))(gd.Tensor(x)).asnumpy()
        gd.set_backend("numpy")
        want = f(gd.Tensor(x)).asnumpy()
        dwant = gd.grad(lambda a: f(a).sum())(gd.Tensor(x)).asnumpy()
        tol = 2e-6 if dt == "float32" else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(dgot, dwant, rtol=tol * 10, atol=tol * 10)


def test_the_fence_operator_survives_a_reload_and_skips_pointers():
    """Registering the operator again (a reloaded module) leaves TVM's registry as it was and
    builds still work; a Let of a pointer to floats is not fenced (only float scalars and vectors)."""
    import importlib

    from graphad.lowering import let_fence
    tvm = _tvm()
    first = let_fence._op(tvm)
    let_fence._OP = None  # as a reloaded copy of the module starts
    assert let_fence._op(tvm).same_as(first)
    importlib.reload(let_fence)
    x = gd.Tensor(np.linspace(-3, 3, 64).astype(np.float32))
    np.testing.assert_allclose(gd.jit(lambda a: ops.sin(a) * 2.0)(x).asnumpy(),
                               2.0 * np.sin(np.linspace(-3, 3, 64).astype(np.float32)), rtol=3e-7, atol=3e-7)
    buf = tvm.tirx.decl_buffer((8,), "float32", name="b")
    assert not let_fence._is_float(tvm, buf.data)
    assert let_fence._is_float(tvm, tvm.tirx.FloatImm("float32", 1.0))
    assert not let_fence._is_float(tvm, tvm.tirx.IntImm("int32", 1))
