"""Executable caches (memory, disk, across processes) and AOT artifacts.

Every test gets its own GRAPHAD_CACHE_DIR (inherited by the subprocesses it starts) and starts
with empty in-memory caches and counters.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from cache_probe import graph_src, load

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Built identically by the test process and by the subprocesses.
GRAPH_SRC = graph_src(64, "cached")
make_graph, make_inputs = load(GRAPH_SRC)

CHILD = GRAPH_SRC + textwrap.dedent('''
    import json, os, sys, time
    from graphad.ir.interpret import interpret
    n = int(sys.argv[1])
    go = sys.argv[2] if len(sys.argv) > 2 else None
    from graphad.lowering._tvm import load_tvm
    load_tvm()  # import TVM before the barrier, so that the compiles start together
    if go:
        open(go + ".ready." + str(os.getpid()), "w").close()
        while not os.path.exists(go):
            time.sleep(0.005)
    from graphad.runtime.executable import compile_graph
    from graphad.runtime.cache import cache_info
    g = make_graph(n)
    args = make_inputs(n)
    outs = compile_graph(g)(args)
    ok = all(np.allclose(o._data, r, rtol=1e-5, atol=1e-5) for o, r in zip(outs, interpret(g, args)))
    print(json.dumps({"ok": bool(ok), **cache_info()._asdict()}))
''')


def _run_child(code, *args, timeout=120, env=None):
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=env)
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    from graphad.runtime.cache import cache_clear
    d = tmp_path / "graphad-cache"
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(d))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    cache_clear(disk=False)
    yield d
    cache_clear(disk=False)


def _entry_files(d):
    """The executable cache's files (the kernel cache's directory, tests/test_kernel_cache.py, apart)."""
    v = d / "v1"
    return sorted(p.name for p in v.iterdir() if p.name != "kernels") if v.exists() else []


def _check(exe, n=64):
    from graphad.ir.interpret import interpret
    args = make_inputs(n)
    for o, r in zip(exe(args), interpret(make_graph(n), args)):
        np.testing.assert_allclose(o._data, r, rtol=1e-5, atol=1e-5)


def test_memory_hit_and_cache_info(cache_dir):
    from graphad.runtime.cache import cache_clear, cache_info
    from graphad.runtime.executable import compile_graph
    exe = compile_graph(make_graph())
    _check(exe)
    assert compile_graph(make_graph()) is exe  # rebuilt graph, same text: a memory hit
    info = cache_info()
    assert (info.memory_hits, info.disk_hits, info.misses) == (1, 0, 1)
    assert info.memory_entries == 1 and info.disk_entries == 1 and info.disk_bytes > 1000
    assert info.compile_seconds > 0 and info.directory == str(cache_dir / "v1")
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    names = _entry_files(cache_dir)
    assert sum(n.endswith(".json") for n in names) == 1 and sum(n.endswith(".so") for n in names) == 1
    cache_clear()
    info = cache_info()
    assert (info.memory_entries, info.disk_entries, info.misses) == (0, 0, 0)


def test_cache_key_ignores_source_locations_but_not_shapes():
    from graphad.ir.core import Loc
    from graphad.lowering.targets import host_target
    from graphad.runtime.cache import cache_key
    t = host_target()
    k = cache_key(make_graph(), t)
    assert cache_key(make_graph(loc=Loc("model.py", 12)), t) == k
    assert cache_key(make_graph(n=65), t) != k
    assert cache_key(make_graph(), "cuda-sm_90") != k


def test_disk_hit_in_a_second_process():
    from graphad.runtime.cache import cache_info
    from graphad.runtime.executable import compile_graph
    _check(compile_graph(make_graph(32), cache=True), 32)
    assert cache_info().misses == 1
    child = _run_child(CHILD, 32)
    assert child["ok"] and child["disk_hits"] == 1 and child["misses"] == 0 and child["memory_hits"] == 0


@pytest.mark.parametrize("damage", ["flip-bytes", "truncate-lib", "garbage-manifest", "foreign-manifest",
                                    "missing-lib"])
def test_corrupted_entry_is_discarded_and_rebuilt(cache_dir, damage):
    from graphad.runtime.cache import cache_clear, cache_info, cache_key
    from graphad.runtime.executable import compile_graph
    from graphad.lowering.targets import host_target
    compile_graph(make_graph(16))
    key = cache_key(make_graph(16), host_target())
    v1 = cache_dir / "v1"
    man_path = v1 / f"{key}.json"
    man = json.loads(man_path.read_text())
    lib = v1 / man["lib"]
    data = lib.read_bytes()
    if damage == "flip-bytes":
        mid = len(data) // 2
        lib.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
    elif damage == "truncate-lib":
        lib.write_bytes(data[: len(data) // 3])
    elif damage == "garbage-manifest":
        man_path.write_bytes(b"\x00{not json")
    elif damage == "foreign-manifest":
        compile_graph(make_graph(8))
        other = cache_key(make_graph(8), host_target())
        man_path.write_text((v1 / f"{other}.json").read_text())
    elif damage == "missing-lib":
        lib.unlink()
    cache_clear(disk=False)  # forget the in-memory executable and the counters
    exe = compile_graph(make_graph(16))
    _check(exe, 16)
    info = cache_info()
    assert (info.disk_hits, info.misses) == (0, 1), info
    man = json.loads(man_path.read_text())
    fresh = (v1 / man["lib"]).read_bytes()
    assert hashlib.sha256(fresh).hexdigest() == man["lib_sha256"] and man["key"] == key
    assert sum(n.startswith(key) and n.endswith(".so") for n in _entry_files(cache_dir)) == 1
    cache_clear(disk=False)  # the rebuilt entry now loads
    compile_graph(make_graph(16))
    assert cache_info().disk_hits == 1


def test_four_processes_racing_on_a_cold_entry(cache_dir, tmp_path):
    go = str(tmp_path / "go")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, "48", go], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(4)]
    try:
        deadline = time.monotonic() + 120
        while len([p for p in os.listdir(tmp_path) if p.startswith("go.ready.")]) < 4:
            assert time.monotonic() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll()]
            time.sleep(0.01)
        open(go, "w").close()  # all four compile now
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(r["ok"] for r in results)
    assert sum(r["misses"] for r in results) == 1, results  # the others waited for the entry
    assert sum(r["disk_hits"] for r in results) == 3, results
    names = [n for n in _entry_files(cache_dir) if not n.endswith(".lock")]
    assert len(names) == 2, names  # one manifest, one library, no temp files
    assert not [p for p in (cache_dir / "v1" / "kernels").iterdir() if p.name.endswith(".tmp")]
    v1 = cache_dir / "v1"
    man = json.loads(next(v1.glob("*.json")).read_text())
    assert hashlib.sha256((v1 / man["lib"]).read_bytes()).hexdigest() == man["lib_sha256"]


# ---------------------------------------------------------------- AOT artifacts

AOT_CHILD = GRAPH_SRC + textwrap.dedent('''
    import json, sys
    import tvm
    from tvm import relax
    def _no_compile(*a, **k):
        raise AssertionError("load_executable compiled something")
    tvm.compile = relax.build = _no_compile
    from graphad.runtime.aot import load_executable
    exe, manifest = load_executable(sys.argv[1])
    ref = np.load(sys.argv[2])
    outs = exe(make_inputs(24))
    ok = all(np.array_equal(o._data, ref[f"out{i}"]) for i, o in enumerate(outs))
    print(json.dumps({"ok": bool(ok), "manifest": manifest, "source": exe.source,
                      "relax_ops_imported": "graphad.lowering.relax_ops" in sys.modules,
                      "threads": tvm.runtime.num_threads()}))
''')


@pytest.fixture
def artifact(tmp_path):
    from graphad.runtime.aot import save_executable
    from graphad.runtime.executable import compile_graph
    exe = compile_graph(make_graph(24))
    path = tmp_path / "model.gdx"
    save_executable(exe, path, {"hello": [1, 2], "name": "tanh-dense"})
    return exe, path


def test_aot_round_trip_in_a_fresh_process(artifact, tmp_path):
    exe, path = artifact
    outs = exe(make_inputs(24))
    np.savez(tmp_path / "ref.npz", **{f"out{i}": o._data for i, o in enumerate(outs)})
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    child = _run_child(AOT_CHILD, path, tmp_path / "ref.npz", env=env)
    assert child["ok"] and child["source"] == "artifact"
    assert child["manifest"] == {"hello": [1, 2], "name": "tanh-dense"}
    assert not child["relax_ops_imported"]
    # TVM was imported by the user first; graphad still sized the pool before the first kernel
    assert child["threads"] == len(os.sched_getaffinity(0))


def _rewrite(path, *, manifest=None, lib=None, rehash=False):
    """Rewrite an artifact's members (optionally keeping the manifest hash consistent)."""
    from graphad.runtime import aot
    with zipfile.ZipFile(path) as z:
        rec = json.loads(z.read(aot.MANIFEST))
        data = z.read(aot.LIBRARY)
    if manifest is not None:
        manifest(rec)
    if rehash:
        rec.pop("manifest_sha256", None)
        rec["manifest_sha256"] = hashlib.sha256(aot._canonical(rec)).hexdigest()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(aot.MANIFEST, json.dumps(rec))
        z.writestr(aot.LIBRARY, lib(data) if lib is not None else data)
    path.write_bytes(buf.getvalue())


def _flip(data):
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1:]


@pytest.mark.parametrize("tamper,match", [
    (lambda p: _rewrite(p, lib=_flip), "library was modified"),
    (lambda p: _rewrite(p, manifest=lambda r: r["signature"]["inputs"][0].update(shape=[99, 16])),
     "manifest was modified"),
    (lambda p: _rewrite(p, manifest=lambda r: r["manifest"].update(hello="evil")), "manifest was modified"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:-40]), "truncated"),
    (lambda p: p.write_bytes(b"ELF not an artifact" * 10), "truncated, corrupted or not a graphad artifact"),
    (lambda p: _rewrite(p, manifest=lambda r: r.update(tvm_version="0.26.0"), rehash=True), "built with TVM 0.26.0"),
    (lambda p: _rewrite(p, manifest=lambda r: r.update(graphad_version="9.1.0"), rehash=True),
     "built with graphad 9.1.0"),
    (lambda p: _rewrite(p, manifest=lambda r: r.update(format_version=3), rehash=True), "format version 3"),
    (lambda p: _rewrite(p, manifest=lambda r: r.update(format_version=2), rehash=True),
     "control-flow artifact without its program"),
    (lambda p: _rewrite(p, manifest=lambda r: r.update(cpu_features=r["cpu_features"] + ["avx9000"]), rehash=True),
     "avx9000"),
])
def test_tampered_or_incompatible_artifact_is_refused(artifact, tamper, match):
    from graphad.errors import ArtifactError
    from graphad.runtime.aot import load_executable
    _, path = artifact
    load_executable(path)  # intact: loads
    tamper(path)
    with pytest.raises(ArtifactError, match=match):
        load_executable(path)


def test_cuda_artifact_refused_without_gpu(artifact):
    import tvm
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU")
    from graphad.errors import ArtifactError
    from graphad.runtime.aot import load_executable
    _, path = artifact
    _rewrite(path, manifest=lambda r: r.update(device="cuda"), rehash=True)
    with pytest.raises(ArtifactError, match="no CUDA GPU"):
        load_executable(path)


def test_the_cache_key_hashes_every_module_whose_code_the_lowering_emits():
    """lowering_revision() hashes lowering/ and CODEGEN_ELSEWHERE. Every graphad module that
    lowering/ imports must be one of them or a plain data structure (names, types, the registry):
    an edited prims/linalg.lone_axes, which einsum's lowering calls, was served another checkout's
    compiled code from a shared disk cache (a helper's trial)."""
    import ast
    import os
    import graphad.lowering as L
    data_only = {"errors", "dtypes", "_switches", "ir.core", "ir.registry", "prims"}
    here = os.path.dirname(L.__file__)
    imported = set()
    for name in os.listdir(here):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(here, name)) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.ImportFrom) and node.level == 2:
                imported.update(a.name for a in node.names)
    outside = imported - data_only - set(L.CODEGEN_ELSEWHERE)
    assert not outside, f"lowering/ imports {sorted(outside)}: hash them (CODEGEN_ELSEWHERE) or list them as data"
    before = L.lowering_revision()
    assert len(before) == 16 and all(os.path.exists(os.path.join(os.path.dirname(here), *m.split(".")) + ".py")
                                     for m in L.CODEGEN_ELSEWHERE)
