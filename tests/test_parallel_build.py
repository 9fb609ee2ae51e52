"""Builds split over threads (lowering/parallel_build.py): the partition, the thread count, and
that a split build, JIT or through the disk cache, in either VM exec mode, saved and loaded as an
AOT artifact, gives bit for bit what a build in one piece gives.

Every test gets its own GRAPHAD_CACHE_DIR and empty in-memory caches; splitting is forced on
small graphs by lowering the cost thresholds (on this project's graphs the thresholds, not
correctness, decide when a build is split).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.lowering import compile_log, parallel_build
from graphad.lowering.parallel_build import partition

pytestmark = pytest.mark.tvm


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, monkeypatch):
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "graphad-cache"))
    for name in ("GRAPHAD_NO_DISK_CACHE", "GRAPHAD_NO_KERNEL_CACHE", "GRAPHAD_COMPILE_JOBS"):
        monkeypatch.delenv(name, raising=False)
    cache_clear(disk=False)
    yield
    cache_clear(disk=False)


@pytest.fixture
def split_everything(monkeypatch):
    """Split every build that has two functions, whatever their size, into up to 3 groups."""
    monkeypatch.setattr(parallel_build, "MODULE_NODES", 1)
    monkeypatch.setattr(parallel_build, "JIT_MIN_COST", 0)
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "3")


# ------------------------------------------------------------------ partition and thread count

def test_partition_balances():
    costs = {"main": 5, "a": 900, "b": 700, "c": 600, "d": 300, "e": 100}
    groups = partition(costs, 2)
    assert sorted(k for g in groups for k in g) == sorted(costs)
    loads = sorted(sum(costs[k] for k in g) for g in groups)
    assert loads == [1300, 1305]  # LPT: a | b c ... within one key of balance


@pytest.mark.parametrize("jobs, total_per_key, n_keys, want", [
    (1, 1000, 5, 1),      # one thread: never split
    (4, 1000, 2, 2),      # no more groups than keys
    (4, 1000, 8, 4),      # no more groups than threads
    (4, 100, 5, 2),       # 500 in all: two modules of MODULE_NODES pay, three do not
    (8, 10, 5, 1),        # too little work for a second module
])
def test_partition_makes_no_group_that_does_not_pay(jobs, total_per_key, n_keys, want):
    costs = {f"k{i}": total_per_key for i in range(n_keys)}
    groups = partition(costs, jobs)
    assert len(groups) == want and all(groups)
    assert sorted(k for g in groups for k in g) == sorted(costs)


def test_compile_jobs(monkeypatch):
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "3")
    assert parallel_build.compile_jobs() == 3
    monkeypatch.delenv("GRAPHAD_COMPILE_JOBS")
    n = parallel_build.compile_jobs()
    assert 1 <= n <= min(parallel_build.MAX_JOBS, len(os.sched_getaffinity(0)))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", bad)
        with pytest.raises(gd.errors.CompileError, match="GRAPHAD_COMPILE_JOBS"):
            parallel_build.compile_jobs()


# ------------------------------------------------------------------ results

def _loss(W1, b1, W2, b2, x):
    h = ops.tanh(x @ W1 + b1)
    return ops.sum(ops.sin(h @ W2 + b2) ** 2) + ops.mean(ops.exp(-h))


def _graph(depth_mode="compiled"):
    rng = np.random.default_rng(0)
    shapes = [(32, 64), (64,), (64, 16), (16,), (8, 32)]
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    fn = gd.jit(gd.value_and_grad(_loss, grad_position=(0, 1, 2, 3)))
    graph = fn.lower(*[gd.TensorSpec(s) for s in shapes]).graph
    return graph, args


def _run(exe, args):
    return [np.asarray(t._data).copy() for t in exe([gd.Tensor(a) for a in args])]


def _whole(graph, args, monkeypatch):
    """The outputs of `graph` built in one piece, without any cache."""
    from graphad.runtime.executable import compile_graph
    with monkeypatch.context() as m:
        m.setenv("GRAPHAD_COMPILE_JOBS", "1")
        return _run(compile_graph(graph, cache=False), args)


def _same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.atleast_1d(a).view(np.uint8), np.atleast_1d(b).view(np.uint8))


@pytest.mark.parametrize("mode", ["compiled", "bytecode"])
@pytest.mark.parametrize("disk", [False, True])
def test_a_split_build_gives_the_whole_builds_bits(mode, disk, split_everything, monkeypatch, tmp_path):
    from graphad.lowering import pipeline
    from graphad.runtime.executable import compile_graph
    monkeypatch.setattr(pipeline, "choose_exec_mode", lambda mod: mode)
    graph, args = _graph()
    want = _whole(graph, args, monkeypatch)
    if not disk:
        monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    with compile_log.record("t", log=False) as rec:
        exe = compile_graph(graph, cache=disk) if disk else compile_graph(graph, cache=False)
    assert rec.info.get("compile_jobs", 1) >= 2, rec.info  # it was split
    assert rec.info["exec_mode"] == mode
    got = _run(exe, args)
    _same(got, want)
    # the split library is a whole library: saved and loaded, it gives the same bits
    path = str(tmp_path / "f.gdx")
    from graphad.runtime.aot import load_executable, save_executable
    save_executable(exe, path)
    loaded, _ = load_executable(path)
    _same(_run(loaded, args), want)


def test_the_groups_are_packs_a_later_build_links(split_everything, monkeypatch):
    """Through the disk cache each group's object is kept as a pack of its own: a graph built
    afterwards that shares the kernels compiles none of them again."""
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    graph, args = _graph()
    first = compile_graph(graph)
    assert first.report["kernels"]["built"] > 1
    kdir = os.path.join(os.environ["GRAPHAD_CACHE_DIR"], "v1", "kernels")
    packs = [p for p in os.listdir(kdir) if p.startswith("p.")]
    assert len(packs) >= 2  # one per group
    # the same kernels in another graph: drop the executables, keep the kernels
    cache_clear(disk=False)
    for name in os.listdir(os.path.join(os.environ["GRAPHAD_CACHE_DIR"], "v1")):
        if name.endswith(".so") or name.endswith(".json"):
            os.remove(os.path.join(os.environ["GRAPHAD_CACHE_DIR"], "v1", name))
    again = compile_graph(graph)
    assert again.report["kernels"]["built"] == 0
    assert again.report["kernels"]["cached"] == first.report["kernels"]["built"]
    _same(_run(again, args), _run(first, args))


def test_a_failing_split_is_built_whole_with_a_warning(split_everything, monkeypatch):
    from graphad.runtime.executable import compile_graph
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    monkeypatch.setattr(parallel_build, "_FAILED_WARNED", False)
    graph, args = _graph()
    want = _whole(graph, args, monkeypatch)

    def broken(build_one, items, *rest):
        raise RuntimeError("a group failed")
    monkeypatch.setattr(parallel_build, "build_groups", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = compile_graph(graph, cache=False)
    assert any("split over" in str(w.message) and "a group failed" in str(w.message) for w in caught)
    _same(_run(exe, args), want)


def test_small_bytecode_graphs_stay_whole(monkeypatch):
    """Below the thresholds a JIT build without a compiled main is one module (the link would
    cost more than it saves)."""
    from graphad.lowering import pipeline
    from graphad.runtime.executable import compile_graph
    monkeypatch.setattr(pipeline, "choose_exec_mode", lambda mod: "bytecode")
    graph = gd.jit(lambda a, b: ops.sin(a) @ b).lower(gd.TensorSpec((16, 8)), gd.TensorSpec((8, 4))).graph
    with compile_log.record("t", log=False) as rec:
        exe = compile_graph(graph, cache=False)
    assert "compile_jobs" not in rec.info and "library" not in exe.report


def test_the_compiled_main_is_built_apart_at_opt_level_0(monkeypatch):
    """Where libraries are linked directly (lowering/linker.py), a JIT build's compiled main is a
    module of its own at LLVM opt level 0 and the kernels are compiled at the kernels' level
    (targets.KERNEL_OPT_LEVEL): the same bits as the build in one piece, JIT-compiled."""
    import importlib

    from graphad.lowering import linker
    from graphad.lowering.targets import KERNEL_OPT_LEVEL
    from graphad.runtime.executable import compile_graph
    if not linker.available():
        pytest.skip("no direct link on this machine (no GCC/Clang on Linux)")
    tb = importlib.import_module("tvm.tirx.build")
    real, seen = tb.codegen_build, []

    def spy(mod, target):
        seen.append((sorted(gv.name_hint for gv in mod.get_global_vars()), int(target.attrs.get("opt-level", 3))))
        return real(mod, target)
    monkeypatch.setattr(tb, "codegen_build", spy)
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "1")
    graph = gd.jit(lambda a, b: ops.sin(a) @ b).lower(gd.TensorSpec((16, 8)), gd.TensorSpec((8, 4))).graph
    args = [np.linspace(-3, 3, 128, dtype=np.float32).reshape(16, 8), np.ones((8, 4), np.float32)]
    with compile_log.record("t", log=False) as rec:
        exe = compile_graph(graph, cache=False)
    assert rec.info["exec_mode"] == "compiled" and exe.report.get("library") == "split over threads"
    mains = [lev for names, lev in seen if any(n.startswith("__vmtir__") for n in names)]
    kernels = [lev for names, lev in seen if not any(n.startswith("__vmtir__") for n in names)]
    assert mains == [0] and kernels and all(lev == KERNEL_OPT_LEVEL for lev in kernels), seen
    got = _run(exe, args)
    # the build in one piece, JIT-compiled
    monkeypatch.setattr(linker, "_BROKEN", ["test: direct link off"])
    from graphad.runtime.cache import cache_clear
    cache_clear(disk=False)
    whole = compile_graph(graph, cache=False)
    assert "library" not in whole.report
    _same(got, _run(whole, args))


def test_codegen_target_sets_the_kernels_opt_level_unless_the_target_names_one():
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.targets import KERNEL_OPT_LEVEL, codegen_target, host_target
    tvm = load_tvm()
    t = codegen_target(host_target())
    assert int(t.attrs["opt-level"]) == KERNEL_OPT_LEVEL and str(t.attrs["mcpu"]) == str(host_target().attrs["mcpu"])
    own = tvm.target.Target({**dict(host_target().export()), "opt-level": 1, "cl-opt": ["-unroll-threshold:uint=9"]})
    assert codegen_target(own).same_as(own)
    from graphad.lowering.targets import DEFAULT_LLVM_OPTIONS
    assert list(t.attrs["cl-opt"]) == list(DEFAULT_LLVM_OPTIONS)  # named: LLVM's options are process-wide
    # a build with a guarded inner loop: LLVM's loop vectorizer off, unless the target names options
    from graphad.lowering.targets import GUARDED_LOOP_LLVM_OPTIONS
    g = codegen_target(host_target(), guarded_loops=True)
    assert list(g.attrs["cl-opt"]) == list(GUARDED_LOOP_LLVM_OPTIONS) and int(g.attrs["opt-level"]) == KERNEL_OPT_LEVEL
    named = tvm.target.Target({**dict(host_target().export()), "cl-opt": ["-unroll-threshold:uint=100"]})
    assert list(codegen_target(named, guarded_loops=True).attrs["cl-opt"]) == ["-unroll-threshold:uint=100"]


def test_a_split_build_that_does_not_link_leaves_later_builds_whole(split_everything, monkeypatch):
    """A JIT build split and linked that fails to link or load here is built whole, with one
    warning, and later builds in this process are not split again (they would fail alike)."""
    from graphad.runtime import executable
    from graphad.runtime.executable import build_executable
    monkeypatch.setattr(executable, "_NO_LINKER", False)
    monkeypatch.setattr(executable, "_KERNEL_LINK_WARNED", False)
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        raise RuntimeError("simulated: the library does not load")
    monkeypatch.setattr(executable, "_linked", failing)
    graph, args = _graph()
    with pytest.warns(RuntimeWarning, match="stay whole"):
        exe = build_executable(graph)
    assert calls == [1] and "library" not in exe.report
    again = build_executable(graph)
    assert calls == [1] and "library" not in again.report  # not tried again
    _same(_run(again, args), _run(exe, args))
