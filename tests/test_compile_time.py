"""Compile time: the phase report (GRAPHAD_LOG_COMPILE, `graphad compile --time`), the Relax VM
exec mode chosen by graph size and work, equal results in both modes, and the integer hash (Dropout) that
TVM's simplifier took minutes on. Behaviour only: no test here asserts a duration."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops, pytree

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _graph(fn, *args):
    """The graph the runtime compiles for fn at args (traced, default passes, regions inlined)."""
    from graphad.runtime.executable import graph_for_lowering
    gf = gd.jit(fn)._plain
    leaves, tree = pytree.flatten(tuple(gd.Tensor(a) for a in args))
    return graph_for_lowering(gf.trace(leaves, tree)[0]), leaves


def _mlp(depth):
    rng = np.random.default_rng(depth)
    ws = [(rng.standard_normal((8, 8)) * 0.3).astype(np.float32) for _ in range(depth)]
    x = rng.standard_normal((4, 8)).astype(np.float32)

    def loss(*a):
        h = a[-1]
        for w in a[:-1]:
            h = ops.tanh(h @ w)
        return ops.sum(h * h)
    return (lambda *a: gd.value_and_grad(loss, grad_position=tuple(range(depth)))(*a)), ws + [x]


def _run(ex, graph, leaves):
    """Outputs (NumPy) of VM executable `ex` of `graph` on `leaves`."""
    from graphad.lowering import lower_graph_info
    from graphad.lowering.targets import resolve_target
    from graphad.runtime.executable import graph_meta, make_executable
    lo = lower_graph_info(graph)
    exe = make_executable(ex, graph_meta(graph, lo.copy_outputs, resolve_target(None), lo.packed))
    return [t.asnumpy() for t in exe(leaves)]


def test_small_graph_compiles_in_compiled_mode_deep_mlp_in_bytecode():
    """A small graph keeps the faster calls of the "compiled" exec mode; a deep MLP's gradient,
    whose main function has more bindings than COMPILED_MAX_BINDINGS, is built as bytecode (the
    compiled mode's build time grows faster than the graph)."""
    from graphad.lowering import compile_module, lower_graph_info, pipeline
    (f1, a1), (f24, a24) = _mlp(1), _mlp(24)
    small, _ = _graph(f1, *a1)
    deep, _ = _graph(f24, *a24)
    mods = {n: lower_graph_info(g).module for n, g in (("small", small), ("deep", deep))}
    fused = {n: pipeline.prepare_module(m) for n, m in mods.items()}
    assert pipeline.main_bindings(fused["small"]) <= pipeline.COMPILED_MAX_BINDINGS
    assert pipeline.main_bindings(fused["deep"]) > pipeline.COMPILED_MAX_BINDINGS
    assert pipeline.choose_exec_mode(fused["small"]) == "compiled"
    assert pipeline.choose_exec_mode(fused["deep"]) == "bytecode"
    assert compile_module(mods["small"])[1]["exec_mode"] == "compiled"
    assert compile_module(mods["deep"])[1]["exec_mode"] == "bytecode"


def test_kernel_work_counts_iterations_times_the_value_stored():
    """`kernel_work` grows with the elements a kernel writes and with what it computes for each."""
    from graphad.lowering import lower_graph_info, pipeline

    def work(fn, n):
        graph, _ = _graph(fn, np.ones(n, np.float32), np.ones(n, np.float32))
        return pipeline.kernel_work(pipeline.prepare_module(lower_graph_info(graph).module))
    add = lambda a, b: a + b  # noqa: E731
    assert work(add, 2048) == 2 * work(add, 1024) > 0
    assert work(lambda a, b: ops.sin(a) + b, 1024) > 10 * work(add, 1024)  # sin: a chain of Lets


def test_a_small_graph_of_much_work_per_call_runs_as_bytecode():
    """A graph with a handful of bindings whose kernels do much work per call (two 256x256x256
    products) is bytecode, whose calls cost 0.1-0.3 us more per binding and whose build has no
    main function to compile and link; products of little work stay compiled; a single kernel
    call (one binding) is bytecode whatever its work."""
    from graphad.lowering import compile_module, lower_graph_info, pipeline
    m, s = np.ones((256, 256), np.float32), np.ones((4, 4), np.float32)
    big, _ = _graph(lambda a, b: (a @ b, b @ a), m, m)
    tiny, _ = _graph(lambda a, b: (a @ b, b @ a), s, s)
    one, _ = _graph(lambda a, b: a @ b, s, s)
    mods = {n: lower_graph_info(g).module for n, g in (("big", big), ("tiny", tiny), ("one", one))}
    fused = {n: pipeline.prepare_module(m) for n, m in mods.items()}
    b = pipeline.main_bindings(fused["big"])
    assert b <= pipeline.COMPILED_MAX_BINDINGS
    assert pipeline.kernel_work(fused["big"]) >= pipeline.BYTECODE_WORK_PER_BINDING * b
    assert pipeline.choose_exec_mode(fused["big"]) == "bytecode"
    assert pipeline.choose_exec_mode(fused["tiny"]) == "compiled"
    assert pipeline.main_bindings(fused["one"]) < pipeline.COMPILED_MIN_BINDINGS
    assert pipeline.choose_exec_mode(fused["one"]) == "bytecode"
    assert compile_module(mods["big"])[1]["exec_mode"] == "bytecode"


def test_a_bytecode_build_does_not_keep_the_last_outputs_alive(monkeypatch):
    """The bytecode VM keeps the value main returned until its next call returns; the runtime
    calls the build's release function after main when the outputs are large, so a caller that
    drops a result gets the same buffer back at the next call (without the release, the next
    call's outputs were allocated beside the previous ones: twice the memory, alternating
    buffers)."""
    from graphad.lowering import pipeline
    from graphad.runtime import executable
    from graphad.runtime.executable import compile_graph
    assert executable.RELEASE_FUNCTION == pipeline.RELEASE_FUNCTION
    monkeypatch.setattr(pipeline, "choose_exec_mode", lambda mod: "bytecode")
    m = np.ones((256, 256), np.float32)
    graph, leaves = _graph(lambda a, b: a @ b + 1.0, m, m)
    exe = compile_graph(graph, cache=False)

    def address():
        out = exe(leaves)[0]
        np.testing.assert_array_equal(out.asnumpy(), m @ m + 1.0)
        return out._data.ctypes.data  # (the view of the buffer the VM returned)
    first = address()
    assert address() == first
    monkeypatch.setattr(executable, "RELEASE_FROM_BYTES", 1 << 60)  # without the release
    exe = compile_graph(graph, cache=False)
    first = address()
    assert address() != first


def test_exec_modes_give_bit_identical_results():
    """Both exec modes run the same kernels: the answers are equal to the bit."""
    from graphad.lowering import compile_module, lower_graph_info
    f, args = _mlp(3)
    graph, leaves = _graph(f, *args)
    mod = lower_graph_info(graph).module
    outs = {m: _run(compile_module(mod, exec_mode=m)[0], graph, leaves) for m in ("compiled", "bytecode")}
    assert len(outs["compiled"]) == 4
    for a, b in zip(outs["compiled"], outs["bytecode"]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def test_unknown_exec_mode_is_a_compile_error():
    from graphad.errors import CompileError
    from graphad.lowering import compile_module, lower_graph_info
    graph, _ = _graph(lambda x: x * 2.0, np.ones(4, np.float32))
    with pytest.raises(CompileError, match="exec mode"):
        compile_module(lower_graph_info(graph).module, exec_mode="jit")


def test_log_compile_prints_every_phase(monkeypatch, capsys):
    """GRAPHAD_LOG_COMPILE=1: one report per compile on stderr, naming the build's phases."""
    from graphad.runtime.executable import compile_graph
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    # two kernels (a single kernel call builds as bytecode: pipeline.COMPILED_MIN_BINDINGS)
    graph, leaves = _graph(lambda x: ops.sin(x * 3.0) + ops.sum(x), np.arange(5, dtype=np.float32))
    exe = compile_graph(graph, cache=False)
    np.testing.assert_allclose(exe(leaves)[0].asnumpy(), np.sin(np.arange(5) * 3.0) + 10.0, rtol=1e-6)
    err = capsys.readouterr().err
    assert err.count("graphad: compiled @") == 1, err
    assert "exec_mode compiled" in err
    # a build in one piece has `tir` and `llvm`; a split one (the main apart, lowering/linker.py)
    # `codegen` (both, in the groups' threads) and `export` (the link)
    built = ("codegen", "export") if "compile_jobs" in err else ("tir", "llvm")
    for name in ("inline", "lower", "fuse", "schedule", "ieee", "relax", "vmcodegen", *built, "load"):
        assert f"  {name} " in err, (name, err)


def test_no_report_without_the_switch(monkeypatch, capsys):
    from graphad.runtime.executable import compile_graph
    monkeypatch.delenv("GRAPHAD_LOG_COMPILE", raising=False)
    graph, _ = _graph(lambda x: x - 1.0, np.arange(3, dtype=np.float32))
    compile_graph(graph, cache=False)
    assert "graphad: compiled" not in capsys.readouterr().err


def test_compile_log_records_nest_and_phases_outside_are_free():
    """A phase outside a record records nothing; a nested record adds to the outer one (a host
    program compiling its segments reports once); phases run twice are summed."""
    from graphad.lowering import compile_log
    with compile_log.phase("lower"):
        pass
    assert compile_log.current() is None
    with compile_log.record("outer", log=False) as outer:
        with compile_log.record("inner", log=False) as inner:
            assert inner is outer
            with compile_log.phase("lower"):
                pass
        with compile_log.phase("lower"):
            pass
        compile_log.note("exec_mode", "bytecode")
    assert [n for n, _, _ in outer.phases] == ["lower"]
    assert outer.as_dict()["exec_mode"] == "bytecode"
    assert "outer" in outer.format() and "lower" in outer.format()


def test_a_nested_phase_counts_in_its_own_line_only(monkeypatch):
    """A phase inside another (TVM's import inside the phase that first needs it) is its own
    line; the enclosing phase's line is its time less the nested one's, so the lines add up
    (a fake clock: the phases take exactly the seconds it is advanced by)."""
    import types
    from graphad.lowering import compile_log
    now = [0.0]
    clock = types.SimpleNamespace(perf_counter=lambda: now[0], process_time=lambda: now[0] / 2)
    monkeypatch.setattr(compile_log, "time", clock)
    with compile_log.record("nest", log=False) as rec:
        with compile_log.phase("lower"):
            now[0] += 2.0
            with compile_log.phase("tvm"):
                now[0] += 10.0
            now[0] += 3.0
        now[0] += 1.0
    assert rec.phases == [("tvm", 10.0, 5.0), ("lower", 5.0, 2.5)]
    assert rec.wall == 16.0 and "other" in rec.format()


def test_the_first_compile_of_a_process_shows_tvms_import_apart():
    """GRAPHAD_LOG_COMPILE's report of a process's first compile has a `tvm` line (importing the
    compiler, once), not a large unexplained `other`; the next compile has none."""
    import subprocess
    import sys
    code = ("import numpy as np, graphad as gd\n"
            "gd.set_backend('tvm')\n"
            "gd.jit(lambda a: (a * 2.0).sin())(gd.Tensor(np.ones(4, np.float32)))\n"
            "gd.jit(lambda a: (a * 3.0).cos())(gd.Tensor(np.ones(4, np.float32)))\n")
    env = dict(os.environ, GRAPHAD_LOG_COMPILE="1", GRAPHAD_NO_DISK_CACHE="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    reports = [b for b in r.stderr.split("graphad: compiled @")[1:]]
    assert len(reports) == 2, r.stderr
    assert "\n  tvm " in reports[0] and "\n  tvm " not in reports[1], r.stderr


def test_cli_compile_time_shows_trace_passes_and_build(tmp_path, monkeypatch):
    from graphad.cli.main import main
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    gd.cache_clear(disk=False)
    out, err = io.StringIO(), io.StringIO()
    status = main(["compile", os.path.join(ROOT, "examples", "forecast.py") + ":forecast", "--args",
                   "f32[16,16] f32[16] f32[16]", "--transform", "jacrev:2", "--target", "llvm",
                   "-o", str(tmp_path / "f.gad"), "--time"], stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    text = out.getvalue()
    assert "graphad: compiled @forecast" in text
    built = ("codegen",) if "compile_jobs" in text else ("tir", "llvm")  # split or in one piece
    for name in ("trace", "passes", "lower", "schedule", *built, "export", "load"):
        assert f"  {name} " in text, (name, text)


def test_dropout_hash_compiles_and_matches_the_interpreter():
    """Dropout's 10-round integer Feistel hash: its rounds are no longer inlined into one
    select-guarded expression (TVM's simplifier is exponential in such nesting: about ten minutes
    of build), and the compiled bits equal the reference interpreter's."""
    from graphad.lowering import lower_graph_info
    from graphad.lowering.pipeline import prepare_module
    drop = nn.Dropout(0.7)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    key = np.array([99, 5])
    graph, leaves = _graph(lambda a, k: drop(a, k), x, key)
    mod = prepare_module(lower_graph_info(graph).module)
    import tvm
    sizes = [len(f.script()) for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert max(sizes) < 20000, sizes  # one kernel was most of 52 KB of nested selects
    out = {}
    prev = gd.get_backend()
    for backend in ("tvm", "numpy"):
        gd.set_backend(backend)
        try:
            out[backend] = gd.jit(lambda a, k: drop(a, k))(gd.Tensor(x), gd.Tensor(key)).asnumpy()
        finally:
            gd.set_backend(prev)
    np.testing.assert_array_equal(out["tvm"], out["numpy"])
    assert 0 < np.count_nonzero(out["tvm"]) < x.size  # some kept, some dropped


def test_integer_value_arithmetic_is_value_work_index_arithmetic_is_not():
    """The scheduler's cost count: a reshape's index arithmetic (inside buffer reads) is free, an
    integer remainder on values is not."""
    import tvm
    from tvm import te
    from graphad.lowering.schedule import _Rules
    a = te.placeholder((4, 6), "int64", name="a")
    r = te.compute((24,), lambda i: a[i // 6, i % 6], name="r")
    m = te.compute((24,), lambda i: r[i] % 7 + r[i] // 3, name="m")
    func = te.create_prim_func([a, m])
    sch = tvm.s_tir.Schedule(func)
    rules = _Rules(512)
    body = {n: sch.get(sch.get_sblock(n)).body for n in ("r", "m")}
    assert rules.n_value_ops(body["r"]) == 0
    assert rules.n_value_ops(body["m"]) == 3


def test_memoized_legalization_builds_the_same_module(monkeypatch):
    """Calls of one operator at one signature reuse the first call's legalized PrimFunc; the fused,
    scheduled module is the one plain LegalizeOps gives (printed text equal)."""
    from graphad.lowering import lower_graph_info, pipeline
    f, args = _mlp(6)
    graph, _ = _graph(f, *args)
    mod = lower_graph_info(graph).module
    memo = pipeline.prepare_module(mod).script()
    assert "relax.matmul" in pipeline._memo_legalize_map(mod)
    monkeypatch.setattr(pipeline, "_memo_legalize_map", lambda m: {})
    assert pipeline.prepare_module(mod).script() == memo


def test_memoized_te_calls_lower_to_the_same_module(monkeypatch):
    """emit_te calls a PrimFunc made before for the same TE function (code and plain closure
    values) on the same argument types: the Relax module is the one made without the memo
    (structurally equal), with far fewer TE functions made; a closure value it cannot vouch for
    (here a TIR expression) is never memoized."""
    import tvm_ffi
    from graphad.lowering import lower_graph_info, relax_ops
    f, args = _mlp(6)
    graph, _ = _graph(f, *args)
    made = []
    orig = relax_ops.LowerContext.emit_te

    def counting(self, fn, *a, name):
        before = len(self._te_memo)
        out = orig(self, fn, *a, name=name)
        made.append(len(self._te_memo) > before or relax_ops._te_key(fn, a, name) is None)
        return out
    monkeypatch.setattr(relax_ops.LowerContext, "emit_te", counting)
    memo = lower_graph_info(graph).module
    assert made and sum(made) < len(made)  # some calls reused a PrimFunc (the six tanh layers)
    monkeypatch.setattr(relax_ops, "_te_key", lambda *a: None)
    assert tvm_ffi.structural_equal(lower_graph_info(graph).module, memo, map_free_vars=True)
    from graphad.lowering._tvm import load_tvm
    tir = load_tvm().tirx
    def scale(c):
        return lambda x: x * c
    assert relax_ops._te_fn_key(scale(tir.const(1.5, "float32"))) is None
    assert relax_ops._te_fn_key(scale(-0.0)) != relax_ops._te_fn_key(scale(0.0))  # -0.0 == 0.0 in Python
    assert relax_ops._te_fn_key(scale(2)) == relax_ops._te_fn_key(scale(2))


def test_a_long_compile_shows_its_phases_on_a_terminal(monkeypatch, capsys):
    """On a terminal, each phase a compile enters after PROGRESS_AFTER seconds is announced; not
    on a pipe or file (logs stay clean)."""
    import sys
    from graphad.lowering import compile_log
    monkeypatch.setattr(compile_log, "PROGRESS_AFTER", 0.0)
    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        with compile_log.record("long", log=False):
            with compile_log.phase("llvm"):
                pass
        err = capsys.readouterr().err
        assert ("graphad: compiling @long: llvm" in err) is tty, err


def test_index_add_compiles_without_tvm_pragma_warnings(capfd):
    """topi's scatter kernels (index_add) carry IR-builder `pragma_scope` attributes the CPU code
    generator warned about on stderr at every compile; they are dropped before the build."""
    from graphad.runtime.executable import compile_graph
    idx = np.array([1, 3, 3])
    graph, leaves = _graph(lambda x, i, v: ops.index_add(x, i, v, axis=0),
                           np.zeros(10, np.float32), idx, np.arange(3, dtype=np.float32))
    got = compile_graph(graph, cache=False)(leaves)[0].asnumpy()
    want = np.zeros(10, np.float32)
    np.add.at(want, idx, np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(got, want)
    assert "pragma" not in capfd.readouterr().err


def test_values_only_an_empty_result_reads_compile_without_tvm_warnings(capfd):
    """An empty result is an allocation in the compiled code that reads nothing, so what only it
    reads is not lowered at all (lowered, it was dead, and FuseOps printed "There are dead codes
    in the current IRModule")."""
    from graphad.ir.interpret import interpret
    from graphad.runtime.executable import compile_graph
    graph, leaves = _graph(lambda x, s: (ops.exp(ops.exp(x))[0:0].sum() * s, ops.tanh(x)),
                           np.linspace(-1, 1, 5, dtype=np.float32), np.float32(2.0))
    got = [t.asnumpy() for t in compile_graph(graph, cache=False)(leaves)]
    want = interpret(graph, [np.asarray(t._data) for t in leaves])
    np.testing.assert_array_equal(got[0], want[0])  # the sum over nothing: 0 * s
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)  # compiled tanh: within an ulp or two
    assert "dead codes" not in capfd.readouterr().err


# ---------------------------------------------------------------- the garbage collector while compiling

def test_a_first_call_defers_young_collections_and_restores_the_thresholds():
    """Tracing, passes and compile run with the young generation's threshold raised (gc_defer.py),
    and the thresholds are what they were afterwards, after an error too."""
    import gc
    from graphad.runtime import gc_defer
    before = gc.get_threshold()
    seen = []

    def f(x):
        seen.append(gc.get_threshold())
        return ops.sin(x) * 2.0
    x = gd.Tensor(np.arange(4, dtype=np.float32))
    np.testing.assert_allclose(gd.jit(f)(x).asnumpy(), np.sin(np.arange(4, dtype=np.float32)) * 2.0, rtol=1e-6)
    assert seen == [(gc_defer.COMPILE_THRESHOLD0, *before[1:])]
    assert gc.get_threshold() == before

    def bad(x):
        seen.append(gc.get_threshold())
        return x + ops.ones((3,), np.float32)  # f32[4] + f32[3]: a shape error while tracing
    with pytest.raises(gd.GraphadError):
        gd.jit(bad)(x)
    assert seen[-1][0] == gc_defer.COMPILE_THRESHOLD0 and gc.get_threshold() == before


def test_deferred_collection_nests_and_leaves_other_settings_alone(monkeypatch):
    import gc
    from graphad.runtime.gc_defer import COMPILE_THRESHOLD0, deferred_collection
    before = gc.get_threshold()
    try:
        with deferred_collection():
            with deferred_collection():
                assert gc.get_threshold()[0] == COMPILE_THRESHOLD0
            assert gc.get_threshold()[0] == COMPILE_THRESHOLD0  # the outermost restores
        assert gc.get_threshold() == before
        with deferred_collection():  # set by someone else meanwhile: kept
            gc.set_threshold(1234, *before[1:])
        assert gc.get_threshold() == (1234, *before[1:])
        gc.set_threshold(0, *before[1:])  # automatic collection off: left off
        with deferred_collection():
            assert gc.get_threshold()[0] == 0
        gc.set_threshold(*before)
        monkeypatch.setenv("GRAPHAD_GC_DEFER", "0")
        with deferred_collection():
            assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
