"""Rare paths split off the vectorized loop (lowering/rare_path.py): float32 sin and cos call the
C library's sinf / cosf for |x| >= 2^16, only for the vectors where some element needs it, and
there only for those elements.

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


def _unsplit(monkeypatch) -> list:
    """Build with the markers removed and TVM's default TIR pipeline (the kernels as written).
    Returns a list that gets an entry for every module built so."""
    from graphad.lowering import rare_path, tir_lowering
    built: list = []

    def plain(tvm, mod, default):
        built.append(1)
        strip = tvm.transform.module_pass(lambda m, _ctx: rare_path.stripped(tvm, m), opt_level=0, name="strip")
        return tvm.transform.Sequential([strip, default])
    monkeypatch.setattr(tir_lowering, "tir_pipeline", plain)
    return built


PROGRAMS = {
    "sin": (lambda x, y: ops.sin(x), 2048),
    "cos": (lambda x, y: ops.cos(x), 1001),  # a vector tail
    "fused": (lambda x, y: ops.sin(30 * x) * y + 1, 4096),
    "nested": (lambda x, y: ops.sin(ops.cos(x) * 1e6 + y), 512),
    "two_conditions": (lambda x, y: ops.cos(x) + ops.sin(y * 1e5), 777),
    "reduction": (lambda x, y: ops.sum(ops.sin(x) * y), 3000),
    "rows": (lambda x, y: ops.sum(ops.cos(x.reshape(48, -1)), axis=1), 48 * 40),
    "parallel": (lambda x, y: ops.cos(x) * y, 1 << 17),
    # not vectorized, parallel (an odd length; then odd rows): the chunk is the parallel loop, or a row
    "parallel_odd": (lambda x, y: ops.cos(x) * y, 20001),
    "odd_rows": (lambda x, y: ops.sin(x.reshape(257, -1)) * 2.0, 257 * 129),
    "hvp": (lambda x, y: gd.jvp(gd.grad(lambda x: ops.sum(ops.sin(x))), (x,), (y,))[1], 2048),
    "transposed": (lambda x, y: ops.sin(x.reshape(40, -1).T) * 2.0, 40 * 48),
    "broadcast_row": (lambda x, y: ops.cos(x.reshape(48, -1)[:1]) + y.reshape(48, -1), 48 * 40),
    "softmax": (lambda x, y: ops.softmax(ops.cos(x.reshape(48, -1)), axis=-1), 48 * 40),
    "zbool": (lambda x, y: ops.sin(x) > y, 1000),
    "zf16": (lambda x, y: ops.sin(x).astype("float16") * 3, 1000),
    "zpad": (lambda x, y: ops.pad(ops.sin(x), [(3, 5)]), 1000),
    "zlast": (lambda x, y: ops.sin(x.reshape(7, -1))[:, -1], 1001),
    "ztail2d": (lambda x, y: ops.sin(x.reshape(7, -1)) * y.reshape(7, -1), 1001),
    "zpar2d": (lambda x, y: ops.cos(x.reshape(64, -1).T) * 2, 1 << 17),
    "zconcat": (lambda x, y: ops.concatenate([ops.sin(x), ops.cos(y * 1e5)]), 1 << 16),
    "zflip": (lambda x, y: ops.flip(ops.sin(x)) + y, 1000),
}


def _inputs(n: int) -> list:
    rng = np.random.default_rng(n)
    base = (rng.standard_normal(n) * 4).astype(np.float32)
    out = [base]
    for where in (0, n - 1, n // 2 + 3):
        x = base.copy()
        x[where] = 3.0e7  # past 2^16: the C library's sinf / cosf
        out.append(x)
    many = base.copy()
    many[::5] = np.float32(1e30) * np.sign(many[::5] + 0.5)
    many[1:4] = [np.inf, np.nan, -0.0]
    many[7] = 65536.0  # the switch-over point
    out.append(many)
    return out


def _run(fn, xs, y):
    gd.cache_clear(disk=False)
    # a new function object: graphad keeps the staged graph (and its executable) per function
    staged = gd.jit(lambda *a: fn(*a))
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
        built = _unsplit(m)
        whole = _run(fn, xs, y)
    assert len(calls) == 1 and built, "the unsplit build did not run"
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


def test_the_common_nest_holds_no_call():
    """The lowered sin kernel: the nest at the common values, a check of each vector's lanes in
    the loop over vectors noting whether one needs the rare path, no sinf anywhere in it; then,
    under `if needed`, the nest again, each vector checked and, where needed, run as written with
    sinf called only where the condition holds (an if_then_else, not a Select)."""
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
    ifs, loops = [], []
    tvm_ffi.structural_walk(func.body, [(tvm.tirx.IfThenElse, ifs.append)])
    (again,) = [b for b in ifs if rare_path.NEED_NAME in b.condition.script()]
    rare = again.then_case.script()
    assert '"sinf"' in rare and "T.if_then_else(" in rare and "65536" in rare and rare_path.FLAG_NAME in rare
    tvm_ffi.structural_walk(func.body, [(tvm.tirx.For, loops.append)])
    # the first nest: the check per vector (inside the loop over vectors), then the vector at the
    # common values, vectorized; no call
    first = [f for f in loops if rare_path.NEED_NAME in f.body.script() and f.kind != tvm.tirx.ForKind.VECTORIZED]
    assert first
    common = first[0].script()
    assert "sinf" not in common and "if_then_else" not in common and "T.vectorized" in common
    assert rare_path.FLAG_NAME in common


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
    assert rare_path.FLAG_NAME not in out.script() and "if_then_else(B[i] > T.float32(1.0)" in out.script()
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


def _both(func, monkeypatch):
    """`func` built split and unsplit (`_unsplit`)."""
    split = _build_kernel(func)
    with monkeypatch.context() as m:
        built = _unsplit(m)
        whole = _build_kernel(func)
    assert built
    return split, whole


def _hand_built(case: str):
    """(PrimFunc, its argument sizes, the index of its output) of hand-built nests that graphad's
    schedules do not make but TIR allows (found by review): a guard reading the nest's own
    output, a local accumulator in a parallel loop, a vector loop with a nonzero min, a marked
    store beside the vector loop; and nests whose vectors may not run again after the nest
    (`rare_path._deferrable`, the last four found by a second review): an element written by
    several iterations, an output added to, a 0-d output written by every iteration, an index
    through a Bind's variable (3i + j: overlapping), an output read through a second Buffer of
    its memory (1-d and 2-d)."""
    from graphad.lowering import rare_path
    tvm = _tvm()
    tir = tvm.tirx

    def i32(v):
        return tir.const(v, "int32")

    def f32(v):
        return tir.const(v, "float32")

    def sel(x):  # where(x > 100, x*3, x*2), the condition marked
        return tir.Select(rare_path.rare(tvm, x > f32(100.0)), x * f32(3.0), x * f32(2.0))
    A, B, C = (tir.decl_buffer((36,), "float32", name=n) for n in "ABC")
    i, j, k = (tir.Var(n, "int32") for n in "ijk")
    if case == "guard":  # for i: B[i] = A[i] - 1; if B[i] > 0: C[i] = sel(A[i])
        body = tir.SeqStmt([tir.BufferStore(B, tir.BufferLoad(A, [i]) - f32(1.0), [i]),
                            tir.IfThenElse(tir.BufferLoad(B, [i]) > f32(0.0),
                                           tir.BufferStore(C, sel(tir.BufferLoad(A, [i])), [i]), None)])
        return tir.PrimFunc([A, B, C], tir.For(i, i32(0), i32(36), tir.ForKind.SERIAL, body)), 2
    if case == "local":  # for i (parallel): acc = 0; for k (unrolled): acc += sel(A[i + k]); C[i] = acc
        acc = tir.decl_buffer((1,), "float32", name="acc")
        inner = tir.For(k, i32(0), i32(4), tir.ForKind.UNROLLED,
                        tir.BufferStore(acc, tir.BufferLoad(acc, [i32(0)]) + sel(tir.BufferLoad(A, [i + k])), [i32(0)]))
        body = tir.SeqStmt([tir.AllocBuffer(acc), tir.BufferStore(acc, f32(0.0), [i32(0)]), inner,
                            tir.BufferStore(C, tir.BufferLoad(acc, [i32(0)]), [i])])
        return tir.PrimFunc([A, C], tir.For(i, i32(0), i32(32), tir.ForKind.PARALLEL, body)), 1
    if case == "vector_min":  # for j in vectorized(4, 4 + 8): C[j] = sel(A[j])
        body = tir.For(j, i32(4), i32(8), tir.ForKind.VECTORIZED, tir.BufferStore(C, sel(tir.BufferLoad(A, [j])), [j]))
        return tir.PrimFunc([A, C], body), 1
    if case == "overlap":  # for i: for j vectorized(4): C[i + j] = sel(A[i + j]) + i (C[m]: the last i's)
        at = i + j
        body = tir.For(j, i32(0), i32(4), tir.ForKind.VECTORIZED,
                       tir.BufferStore(C, sel(tir.BufferLoad(A, [at])) + tir.Cast("float32", i), [at]))
        return tir.PrimFunc([A, C], tir.For(i, i32(0), i32(32), tir.ForKind.SERIAL, body)), 1
    if case == "accumulate":  # for i: for j vectorized(4): C[4i + j] += sel(A[4i + j])
        at = i * 4 + j
        body = tir.For(j, i32(0), i32(4), tir.ForKind.VECTORIZED,
                       tir.BufferStore(C, tir.BufferLoad(C, [at]) + sel(tir.BufferLoad(A, [at])), [at]))
        return tir.PrimFunc([A, C], tir.For(i, i32(0), i32(9), tir.ForKind.SERIAL, body)), 1
    if case == "zero_dim":  # for i: S[()] = sel(A[i]) (S: the last i's)
        S = tir.decl_buffer((), "float32", name="S")
        body = tir.BufferStore(S, sel(tir.BufferLoad(A, [i])), [])
        return tir.PrimFunc([A, S], tir.For(i, i32(0), i32(36), tir.ForKind.SERIAL, body)), 1
    if case == "zero_dim_inner":  # for i: for j (serial 4): S[()] = sel(A[4i + j]) (S: the last's)
        S = tir.decl_buffer((), "float32", name="S")
        body = tir.For(j, i32(0), i32(4), tir.ForKind.SERIAL,
                       tir.BufferStore(S, sel(tir.BufferLoad(A, [i * 4 + j])), []))
        return tir.PrimFunc([A, S], tir.For(i, i32(0), i32(9), tir.ForKind.SERIAL, body)), 1
    if case == "bind":  # for i: v = -i; for j vec(4): C[v + 4i + j] = sel(A[4i + j]) + i (index 3i + j: overlaps)
        v = tir.Var("v", "int32")
        at = v + i * 4 + j
        inner = tir.For(j, i32(0), i32(4), tir.ForKind.VECTORIZED,
                        tir.BufferStore(C, sel(tir.BufferLoad(A, [i * 4 + j])) + tir.Cast("float32", i), [at]))
        body = tir.SeqStmt([tir.Bind(v, tir.Cast("int32", tir.BufferLoad(A, [i32(0)])) - i), inner])
        return tir.PrimFunc([A, C], tir.For(i, i32(0), i32(9), tir.ForKind.SERIAL, body)), 1
    if case in ("alias", "alias2d"):  # for i: for j vec(4): C[4i+j] = C2[4i+j] + sel(A[4i+j]), C2 a second
        # Buffer of C's data, 1-d or viewed as (9, 4) (then read as C2[i, j])
        C2 = tir.decl_buffer((36,) if case == "alias" else (9, 4), "float32", name="C2")
        at = i * 4 + j
        view = tir.BufferLoad(C2, [at] if case == "alias" else [i, j])
        body = tir.For(j, i32(0), i32(4), tir.ForKind.VECTORIZED,
                       tir.BufferStore(C, view + sel(tir.BufferLoad(A, [at])), [at]))
        nest = tir.For(i, i32(0), i32(9), tir.ForKind.SERIAL, body)
        return tir.PrimFunc([A, C], tir.SeqStmt([tir.DeclBuffer(C2, data=C.data), nest])), 1
    assert case == "beside"  # for i: C[9i] = sel(A[9i]); for j vectorized(8): C[9i+1+j] = sel(A[9i+1+j])
    at = i * 9 + 1 + j
    body = tir.SeqStmt([tir.BufferStore(C, sel(tir.BufferLoad(A, [i * 9])), [i * 9]),
                        tir.For(j, i32(0), i32(8), tir.ForKind.VECTORIZED,
                                tir.BufferStore(C, sel(tir.BufferLoad(A, [at])), [at]))])
    return tir.PrimFunc([A, C], tir.For(i, i32(0), i32(4), tir.ForKind.SERIAL, body)), 1


@pytest.mark.parametrize("case", ["guard", "local", "vector_min", "beside", "overlap", "accumulate", "zero_dim",
                                  "zero_dim_inner", "bind", "alias", "alias2d"])
def test_hand_built_nests_equal_unsplit(case, monkeypatch):
    tvm = _tvm()
    func, out = _hand_built(case)
    libs = _both(func, monkeypatch)
    for hot in ([], [3], [4], [9], [10], [11], [5, 30]):
        a = np.arange(36, dtype=np.float32)
        a[hot] = 1000.0
        got = []
        for lib in libs:
            out_shape = () if case.startswith("zero_dim") else 36
            args = [tvm.runtime.tensor(a)] + [tvm.runtime.tensor(np.full(out_shape, -5.0, np.float32))
                                              for p in func.params[1:]]
            lib["k"](*args)
            got.append(args[out].numpy())
        np.testing.assert_array_equal(got[0], got[1], err_msg=f"{case}, huge at {hot}")


def test_a_kernel_reading_bools_keeps_tvms_isnan(monkeypatch):
    """A sin kernel that also reads a bool input keeps TVM's isnan (rare_path._with_vector_isnan:
    in a complex64 graph, a vector isnan beside vectors of loaded bools made IR LLVM rejects; this
    kernel is not that pattern), builds without a fallback and gives NumPy's values."""
    import warnings
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    gd.set_backend("tvm")
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(4096) * 3).astype(np.float32)
    x[[5, 999]] = [1e7, np.nan]
    mask = rng.uniform(size=4096) > 0.5
    gd.cache_clear(disk=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = gd.jit(lambda m, x: ops.where(m, ops.sin(x), ops.isnan(x).astype("float32")))(
            gd.Tensor(mask), gd.Tensor(x)).asnumpy()
    gd.cache_clear(disk=False)
    want = np.where(mask, np.sin(x.astype(np.float64)), np.isnan(x)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-7, equal_nan=True)
