"""Rare paths split off the vectorized loop (lowering/rare_path.py): float32 sin and cos compute
their exact reduction of |x| >= 2^16 only in a call where some element needs it, as scalar code.

Every split kernel must give what the same kernel gives unsplit (its markers simply removed),
bit for bit, whether no element, one element (first, last, inside the vector tail) or many take
the rare path; the structure is checked on the lowered TIR; the composed TIR pipeline is TVM's
own; a nest whose condition reads its own values is left whole.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm


def _tvm():
    from graphad.lowering._tvm import load_tvm
    return load_tvm()


def _unsplit(monkeypatch):
    """Build with the markers removed and TVM's default TIR pipeline (the kernels as written)."""
    from graphad.lowering import rare_path, tir_lowering

    def plain(tvm, mod, default):
        strip = tvm.transform.module_pass(lambda m, _ctx: rare_path.stripped(tvm, m), opt_level=0, name="strip")
        return tvm.transform.Sequential([strip, default])
    monkeypatch.setattr(tir_lowering, "tir_pipeline", plain)


PROGRAMS = {
    "sin": (lambda x, y: ops.sin(x), 2048),
    "cos": (lambda x, y: ops.cos(x), 1001),  # a vector tail
    "fused": (lambda x, y: ops.sin(30 * x) * y + 1, 4096),
    "nested": (lambda x, y: ops.sin(ops.cos(x) * 1e6 + y), 512),
    "two_conditions": (lambda x, y: ops.cos(x) + ops.sin(y * 1e5), 777),
    "reduction": (lambda x, y: ops.sum(ops.sin(x) * y), 3000),
    "rows": (lambda x, y: ops.sum(ops.cos(x.reshape(48, -1)), axis=1), 48 * 40),
    "parallel": (lambda x, y: ops.cos(x) * y, 1 << 17),
    "hvp": (lambda x, y: gd.jvp(gd.grad(lambda x: ops.sum(ops.sin(x))), (x,), (y,))[1], 2048),
}


def _inputs(n: int) -> list:
    rng = np.random.default_rng(n)
    base = (rng.standard_normal(n) * 4).astype(np.float32)
    out = [base]
    for where in (0, n - 1, n // 2 + 3):
        x = base.copy()
        x[where] = 3.0e7  # past 2^16: the exact reduction
        out.append(x)
    many = base.copy()
    many[::5] = np.float32(1e30) * np.sign(many[::5] + 0.5)
    many[1:4] = [np.inf, np.nan, -0.0]
    many[7] = 65536.0  # the switch-over point
    out.append(many)
    return out


def _run(fn, xs, y):
    gd.cache_clear(disk=False)
    staged = gd.jit(fn)
    return [np.atleast_1d(np.asarray(staged(gd.Tensor(x), gd.Tensor(y)).asnumpy())) for x in xs]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_split_kernels_equal_unsplit_bit_for_bit(name, monkeypatch):
    fn, n = PROGRAMS[name]
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    gd.set_backend("tvm")
    xs = _inputs(n)
    y = np.random.default_rng(1).uniform(-2, 2, n).astype(np.float32)
    from graphad.lowering import rare_path
    calls = []
    real = rare_path.split_rare_paths
    monkeypatch.setattr(rare_path, "split_rare_paths", lambda tvm, mod: calls.append(1) or real(tvm, mod))
    split = _run(fn, xs, y)
    assert calls, "no kernel was split"
    with monkeypatch.context() as m:
        _unsplit(m)
        whole = _run(fn, xs, y)
    assert len(calls) == 1
    gd.cache_clear(disk=False)
    for k, (a, b) in enumerate(zip(split, whole)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{name}: input {k}"


def _scheduled(fn, *args):
    """The scheduled kernels (TIR, target bound) of `fn`'s build, as the kernel-object build gets
    them."""
    from graphad.lowering import kernel_objects
    got = {}
    real = kernel_objects.build_split

    def spy(tvm, tir_mod, host, *a, **k):
        got["mod"], got["host"] = tir_mod, host
        return real(tvm, tir_mod, host, *a, **k)
    kernel_objects.build_split = spy
    try:
        gd.set_backend("tvm")
        gd.cache_clear(disk=False)
        gd.jit(fn)(*[gd.Tensor(a) for a in args])
    finally:
        kernel_objects.build_split = real
        gd.cache_clear(disk=False)
    tvm = _tvm()
    kernels = {gv: f for gv, f in got["mod"].functions_items() if not gv.name_hint.startswith("__vmtir__")}
    return tvm.IRModule(kernels, attrs=got["mod"].attrs)


def test_the_common_branch_has_no_exact_reduction():
    """The lowered sin kernel: a flag loop, then `if flag == 0` a nest without float64 arithmetic or
    table loads, else the nest as written with volatile trip counts (LLVM keeps it scalar)."""
    import tvm_ffi
    from graphad.lowering import rare_path
    tvm = _tvm()
    x = np.linspace(-3, 3, 2048).astype(np.float32)
    mod = _scheduled(lambda x: ops.sin(x) * 2.0, x)
    assert rare_path.has_markers(tvm, mod)
    before, _ = rare_path._s_tir_passes(tvm)
    split = rare_path.split_rare_paths(tvm, tvm.transform.Sequential(before)(mod))
    assert not rare_path.has_markers(tvm, split)
    (func,) = split.functions.values()
    ifs = []
    tvm_ffi.structural_walk(func.body, [(tvm.tirx.IfThenElse, ifs.append)])
    (branch,) = ifs
    assert rare_path.FLAG_NAME in branch.condition.script()
    common, rare = branch.then_case.script(), branch.else_case.script()
    assert "float64" not in common and "param_0" not in common and "T.vectorized" in common
    assert "float64" in rare and "T.vectorized" not in rare
    allocs = []
    tvm_ffi.structural_walk(branch.else_case, [(tvm.tirx.AllocBuffer, allocs.append)])
    assert allocs and all("tirx.volatile" in a.annotations for a in allocs)


def test_a_condition_on_the_nests_own_values_is_not_split():
    """for i: B[i] = A[i] * 2; C[i] = Select(rare(B[i] > 1), 1, 0): the check would read B before
    the nest wrote it, so the nest stays whole (its marker removed)."""
    from graphad.lowering import rare_path
    tvm = _tvm()
    tir = tvm.tirx
    a, b, c = (tir.decl_buffer((16,), "float32", name=n) for n in "ABC")
    i = tir.Var("i", "int32")
    cond = rare_path.rare(tvm, tir.BufferLoad(b, [i]) > tir.const(1.0, "float32"))
    body = tir.SeqStmt([tir.BufferStore(b, tir.BufferLoad(a, [i]) * tir.const(2.0, "float32"), [i]),
                        tir.BufferStore(c, tir.Select(cond, tir.const(1.0, "float32"), tir.const(0.0, "float32")), [i])])
    loop = tir.For(i, tir.const(0, "int32"), tir.const(16, "int32"), tir.ForKind.SERIAL, body)
    out = rare_path._split_body(tvm, loop)
    assert not rare_path.has_markers(tvm, out)
    assert rare_path.FLAG_NAME not in out.script() and "Select(B[i] > T.float32(1.0)" in out.script()
    # reading A instead (written before the nest): split
    cond_a = rare_path.rare(tvm, tir.BufferLoad(a, [i]) > tir.const(1.0, "float32"))
    body_a = tir.BufferStore(c, tir.Select(cond_a, tir.const(1.0, "float32"), tir.const(0.0, "float32")), [i])
    out_a = rare_path._split_body(tvm, tir.For(i, tir.const(0, "int32"), tir.const(16, "int32"),
                                              tir.ForKind.SERIAL, body_a))
    assert rare_path.FLAG_NAME in out_a.script()


def test_composed_pipeline_is_tvms_own():
    """The two halves of `_s_tir_passes` build what TVM's default TIR pipeline builds, on kernels
    of several kinds (without markers: a matmul with its epilogue, a softmax, a pool, and the sin
    kernel stripped)."""
    import tvm_ffi
    from graphad.lowering import rare_path
    tvm = _tvm()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    img = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    mods = [_scheduled(lambda x, w: ops.relu(x @ w + 1.0), x, w),
            _scheduled(lambda x: ops.softmax(x, axis=-1), x),
            _scheduled(lambda x: ops.max_pool2d(x, 2) * 3.0, img),
            rare_path.stripped(tvm, _scheduled(lambda x: ops.cos(x) - x, x))]
    default, _, _ = tvm.tirx.get_tir_pipeline("default")
    before, after = rare_path._s_tir_passes(tvm)
    composed = tvm.transform.Sequential([*before, *after])
    for mod in mods:
        assert tvm_ffi.structural_equal(composed(mod), default(mod))


def test_cuda_builds_carry_no_marker():
    """The GPU path removes the markers before dlight, and the sin kernel builds for sm_90 (no GPU
    needed to build)."""
    from graphad.lowering import lower_graph, rare_path
    from graphad.lowering.pipeline import build, prepare_module
    tvm = _tvm()
    gd.set_backend("tvm")
    g = gd.make_graph(lambda x: ops.sin(x) * 2.0)(gd.Tensor(np.ones(64, np.float32)))
    assert not rare_path.has_markers(tvm, prepare_module(lower_graph(g), "sm_90"))
    ex, _ = build(lower_graph(g), "sm_90")
    src = "\n".join(m.inspect_source() for m in ex.mod.imports[0].imports)
    assert "__global__" in src and "graphad" not in src


def _build_kernel(func):
    """`func` (a PrimFunc) compiled for this CPU through graphad's TIR lowering: its library."""
    import importlib
    from graphad.lowering.targets import codegen_target, resolve_target
    from graphad.lowering.tir_lowering import lower_tir
    tvm = _tvm()
    target = codegen_target(resolve_target("llvm"))
    mod = tvm.tirx.transform.BindTarget(target.with_host(target))(
        tvm.IRModule({"k": func.with_attr("global_symbol", "k")}))
    host, _ = lower_tir(tvm, mod)
    return importlib.import_module("tvm.tirx.build").codegen_build(host, target)


def test_two_vector_loops_in_one_nest_against_numpy():
    """A nest of two vectorized loops (one flag lane: both loops of the check serial), each
    element `where(a > 100, rare, common)`, checked against NumPy with no, one and many rare
    elements."""
    from graphad.lowering import rare_path
    tvm = _tvm()
    tir = tvm.tirx
    a, c = tir.decl_buffer((64,), "float32", name="A"), tir.decl_buffer((64,), "float32", name="C")
    i = tir.Var("i", "int32")

    def half(offset: int, rare_k: float, common_k: float):
        j = tir.Var("j", "int32")
        at = i * 16 + offset + j
        x = tir.BufferLoad(a, [at])
        value = tir.Select(rare_path.rare(tvm, x > tir.const(100.0, "float32")), x * tir.const(rare_k, "float32"),
                           x * tir.const(common_k, "float32"))
        return tir.For(j, tir.const(0, "int32"), tir.const(8, "int32"), tir.ForKind.VECTORIZED,
                       tir.BufferStore(c, value, [at]))
    body = tir.For(i, tir.const(0, "int32"), tir.const(4, "int32"), tir.ForKind.SERIAL,
                   tir.SeqStmt([half(0, 3.0, 2.0), half(8, 5.0, 7.0)]))
    split = rare_path._split_body(tvm, body).script()
    assert rare_path.FLAG_NAME in split and "T.vectorized" in split
    lib = _build_kernel(tir.PrimFunc([a, c], body))
    rng = np.random.default_rng(3)
    for hot in ([], [37], [0, 9, 63]):
        x = rng.uniform(-50, 50, 64).astype(np.float32)
        x[hot] = 1000.0
        out = tvm.runtime.tensor(np.zeros(64, np.float32))
        lib["k"](tvm.runtime.tensor(x), out)
        low = (np.arange(64) % 16) < 8
        want = np.where(x > 100, np.where(low, x * 3, x * 5), np.where(low, x * 2, x * 7)).astype(np.float32)
        np.testing.assert_array_equal(out.numpy(), want)
