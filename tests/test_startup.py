"""Start-up without the TVM compiler: a disk-cache hit and `gd.load` in a fresh process use the
TVM runtime alone (issue 15), with results identical to the compiling process's.

Each check runs in a subprocess and reads its `sys.modules` and /proc/self/maps: the `tvm`
package must not be imported and neither libtvm_compiler nor libtvm.so mapped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The seed workload's Jacobian, built identically by the test process and the children.
SRC = textwrap.dedent('''
    import numpy as np
    import graphad as gd
    from graphad import ops

    def forecast(weight, bias, x):
        return ops.dense(x, weight, bias).tanh()

    jac = gd.jacrev(forecast, grad_position=2)
    rng = np.random.default_rng(7)
    W = rng.standard_normal((256, 32)).astype(np.float32)
    B = rng.standard_normal(256).astype(np.float32)
    X = rng.standard_normal(32).astype(np.float32)
''')

# Prints what the child loaded besides its result; `run(mode, path)` is filled in per test.
CHILD = SRC + textwrap.dedent('''
    import json, sys
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "cache":
        out = jac(gd.Tensor(W), gd.Tensor(B), gd.Tensor(X))
    else:
        out = gd.load(path)(W, B, X)
    np.save(path + ".child.npy", out.asnumpy())
    maps = open("/proc/self/maps").read()
    print(json.dumps({
        "tvm_imported": "tvm" in sys.modules,
        "tvm_modules": sorted(m for m in sys.modules if m == "tvm" or m.startswith("tvm.")),
        "compiler_mapped": "libtvm_compiler" in maps or "/libtvm.so" in maps,
        "runtime_mapped": "libtvm_runtime" in maps,
        "disk_hits": gd.cache_info().disk_hits, "misses": gd.cache_info().misses,
    }))
''')


def _run_child(code, *args, env=None):
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _python(code: str) -> str:
    """The stripped stdout of `python -c code` in a fresh process (which must succeed)."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The compiled backend and a private disk cache for this test and the children it starts."""
    import graphad as gd
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    cache_clear(disk=False)
    gd.set_backend("tvm")  # conftest runs tests on the NumPy interpreter by default
    yield dict(os.environ)
    gd.set_backend("numpy")
    cache_clear(disk=False)


@pytest.fixture
def compiled(tmp_path, env):
    """The Jacobian compiled here (disk cache filled) and saved as an artifact; (result, path)."""
    ns: dict = {}
    exec(SRC, ns)
    gd = ns["gd"]
    ref = ns["jac"](gd.Tensor(ns["W"]), gd.Tensor(ns["B"]), gd.Tensor(ns["X"])).asnumpy()
    specs = (gd.TensorSpec((256, 32)), gd.TensorSpec((256,)), gd.TensorSpec((32,)))
    path = tmp_path / "jac.gdx"
    gd.jit(ns["jac"]).lower(*specs).compile().save(path)
    return ref, path


def _assert_runtime_only(child):
    assert not child["tvm_imported"], child["tvm_modules"]
    assert not child["compiler_mapped"]
    assert child["runtime_mapped"]


def test_import_graphad_loads_no_tvm_at_all():
    code = ("import sys, graphad\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tvm', 'tvm_ffi')))")
    assert _python(code) == "[]"


def test_import_graphad_is_lazy_and_the_lazy_names_resolve():
    """`import graphad` leaves the model layers, checkpoints, cache tools, numpy.random and the
    subprocess machinery unimported; each lazy name then resolves to the module's own object."""
    code = ("import sys, graphad as gd\n"
            "lazy = ['graphad.nn', 'graphad.transforms', 'graphad.runtime.cache', 'numpy.random',\n"
            "        'subprocess', 'sysconfig', 'ctypes.util', 'ml_dtypes']\n"
            "print(sorted(m for m in lazy if m in sys.modules))\n"
            "import graphad.nn, graphad.nn.checkpoint, graphad.transforms, graphad.runtime.cache as rc\n"
            "ok = [gd.nn is graphad.nn, gd.Parameter is graphad.nn.Parameter,\n"
            "      gd.save_checkpoint is graphad.nn.checkpoint.save_checkpoint,\n"
            "      gd.cache_info is rc.cache_info, gd.linearize is graphad.transforms.linearize,\n"
            "      'nn' in dir(gd)]\n"
            "print(ok)\n"
            "try:\n"
            "    gd.no_such_name\n"
            "except AttributeError as e:\n"
            "    print(e)\n")
    imported, ok, err = _python(code).splitlines()
    assert imported == "[]"
    assert "False" not in ok
    assert err == "module 'graphad' has no attribute 'no_such_name'"


def test_runtime_defers_tvm_ffi_cpp_and_it_still_works():
    """Loading the runtime leaves tvm-ffi's C++ build helpers (`tvm_ffi.cpp`) unrun; the first use
    of one imports it, through the package attribute and through an import statement alike."""
    code = ("import sys\n"
            "from graphad.lowering._tvm import load_runtime\n"
            "ffi = load_runtime()\n"
            "before = [m for m in ('tvm_ffi.cpp.extension', 'tvm_ffi.cpp.dtype', 'sysconfig') if m in sys.modules]\n"
            "held = ffi.cpp\n"
            "fn = ffi.cpp.to_cpp_dtype\n"
            "from tvm_ffi.cpp import load_inline\n"
            "import tvm_ffi.cpp.extension as ext\n"
            "print(before, fn('float32'), load_inline is ext.load_inline, held.build is ext.build,\n"
            "      type(sys.modules['tvm_ffi.cpp']).__name__, type(ffi.cpp).__name__)\n")
    assert _python(code) == "[] float True True module module"


def test_runtime_loads_without_importlib_metadata_and_finds_the_same_libraries():
    """Loading the runtime does not import importlib.metadata (email, csv...); tvm-ffi's library finder, given the stand-in (`_RecordReader`), finds the same
    libraries as with the real importlib.metadata, the real one imports normally afterwards, and
    a name the stand-in cannot find raises the real PackageNotFoundError."""
    code = ("import sys\n"
            "from graphad.lowering._tvm import load_runtime\n"
            "ffi = load_runtime()\n"
            "before = [m for m in ('importlib.metadata', 'email', 'csv') if m in sys.modules]\n"
            "stub = ffi.libinfo.im\n"
            "find = ffi.libinfo._find_library_by_basename\n"
            "got = [find(p, n) for p, n in (('apache-tvm-ffi', 'tvm_ffi'), ('apache-tvm', 'tvm_runtime'))]\n"
            "import importlib.metadata as real\n"
            "ffi.libinfo.im = real\n"
            "want = [find(p, n) for p, n in (('apache-tvm-ffi', 'tvm_ffi'), ('apache-tvm', 'tvm_runtime'))]\n"
            "try:\n"
            "    stub.distribution('no-such-distribution-here')\n"
            "    missing = None\n"
            "except real.PackageNotFoundError as e:\n"
            "    missing = type(e).__name__\n"
            "print(before, type(stub).__name__, got == want, type(real).__name__, real.version('apache-tvm-ffi') != '',\n"
            "      missing)\n")
    assert _python(code) == "[] _RecordReader True module True PackageNotFoundError"


def test_runtime_initialises_only_tvm_ffis_runtime_part_and_the_rest_on_first_use():
    """Loading the runtime runs the part of tvm_ffi's package a compiled call needs, not its
    dataclasses or structural helpers; the first read of another name runs the package's own
    `__init__` in the same module, which then holds the names, the same objects, a plain
    `import tvm_ffi` gives (compared with a fresh process's), and `tvm` imports after it."""
    code = ("import sys\n"
            "from graphad.lowering._tvm import load_runtime\n"
            "ffi = load_runtime()\n"
            "heavy = ['tvm_ffi.dataclasses', 'tvm_ffi.structural', 'tvm_ffi.access_path', 'tvm_ffi.serialization']\n"
            "before = [m for m in heavy if m in sys.modules]\n"
            "import tvm_ffi\n"
            "same = tvm_ffi is ffi and ffi.Module is sys.modules['tvm_ffi.module'].Module\n"
            "eq = ffi.structural_equal\n"
            "after = [m for m in heavy if m not in sys.modules]\n"
            "names = sorted(n for n in vars(ffi) if not n.startswith('__'))\n"
            "import tvm\n"
            "print(before, same, after, eq is sys.modules['tvm_ffi.structural'].structural_equal,\n"
            "      '__getattr__' in vars(ffi), hasattr(tvm, 'tirx'))\n"
            "print(names)\n")
    # the whole package as graphad imported it before (its C++ build helpers deferred as here)
    plain = ("import graphad.lowering._tvm as t\nt._defer_tvm_ffi_modules()\ntvm_ffi = t._import_tvm_ffi()\n"
             "print(sorted(n for n in vars(tvm_ffi) if not n.startswith('__')))\n")
    first, names = _python(code).splitlines()
    assert first == "[] True [] True False True"
    assert names == _python(plain)


def test_runtime_part_of_tvm_ffi_waits_for_a_completion_in_another_thread():
    """Threads that read names of the partly initialised package while another thread runs its
    `__init__` get the finished module's objects, never a missing name."""
    code = ("import sys, threading\n"
            "from graphad.lowering._tvm import load_runtime\n"
            "ffi = load_runtime()\n"
            "names = ['structural_equal', 'dataclasses', 'access_path', 'serialization', 'StructuralKey', 'Array']\n"
            "got, errors = [], []\n"
            "def read(name):\n"
            "    try:\n"
            "        got.append(getattr(ffi, name) is not None)\n"
            "    except AttributeError as e:\n"
            "        errors.append(str(e))\n"
            "threads = [threading.Thread(target=read, args=(n,)) for n in names * 4]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n"
            "print(len(got), errors)\n")
    assert _python(code) == "24 []"


def test_runtime_part_of_tvm_ffi_reads_its_files_and_survives_a_reload():
    """Before the package is completed its loader reads the package's files (pkgutil,
    importlib.resources) as the real one does; `importlib.reload` runs the real `__init__`, after
    which the package is complete and `tvm` imports."""
    code = ("import sys, pkgutil, importlib, importlib.resources\n"
            "import graphad.lowering._tvm as t\n"
            "ffi = t.load_runtime()\n"
            "data = pkgutil.get_data('tvm_ffi', '_version.py')\n"
            "res = (importlib.resources.files('tvm_ffi') / '_version.py').is_file()\n"
            "partial = 'tvm_ffi.structural' not in sys.modules\n"
            "importlib.reload(ffi)\n"
            "print(bool(data), res, partial, ffi.structural_equal is not None, hasattr(t.load_tvm(), 'tirx'),\n"
            "      '__getattr__' in vars(ffi), type(ffi.__loader__).__name__)\n")
    assert _python(code) == "True True True True True False SourceFileLoader"


def test_completing_tvm_ffi_while_another_thread_imports_its_dataclasses():
    """Completing the package (here through `load_tvm`, as a first compile does) while another
    thread imports `tvm_ffi.dataclasses` succeeds in both threads: tvm-ffi's `__init__` imports
    dataclasses' submodule py_class before the dataclasses package, the other thread takes the
    two import locks the other way round, and without care one side got a half-initialised module
    (11 of 15 processes). Three fresh processes, the threads released together."""
    code = ("import sys, threading, importlib\n"
            "import graphad.lowering._tvm as t\n"
            "t.load_runtime()\n"
            "barrier = threading.Barrier(2)\n"
            "errors = []\n"
            "def run(fn):\n"
            "    barrier.wait()\n"
            "    try:\n"
            "        fn()\n"
            "    except Exception as e:\n"
            "        errors.append(f'{type(e).__name__}: {e}')\n"
            "threads = [threading.Thread(target=run, args=(f,)) for f in\n"
            "           (t.load_tvm, lambda: importlib.import_module('tvm_ffi.dataclasses'))]\n"
            "[x.start() for x in threads]; [x.join() for x in threads]\n"
            "print(errors, sys.modules['tvm_ffi'].dataclasses.py_class is not None)\n")
    for _ in range(3):
        assert _python(code) == "[] True"


def test_runtime_part_of_tvm_ffi_retries_its_init_after_a_failure():
    """A failure inside tvm_ffi's own `__init__` when it completes the package (here a submodule
    that cannot be imported once) leaves it to be run again by the next read, as a plain import is
    retried; `tvm` then imports."""
    code = ("import sys\n"
            "import graphad.lowering._tvm as t\n"
            "ffi = t.load_runtime()\n"
            "sys.modules['tvm_ffi.serialization'] = None\n"
            "try:\n"
            "    ffi.float32\n"
            "except ImportError as e:\n"
            "    first = type(e).__name__\n"
            "del sys.modules['tvm_ffi.serialization']\n"
            "print(first, ffi.float32, '__getattr__' in vars(ffi), hasattr(t.load_tvm(), 'tirx'))\n")
    assert _python(code) == "ModuleNotFoundError float32 False True"


def test_first_loads_in_several_threads_of_a_fresh_process(compiled, env):
    """Eight threads each load the artifact and call it first thing in a fresh process: every one
    gets the result (the runtime is loaded once; the others wait for it)."""
    ref, path = compiled
    code = SRC + textwrap.dedent('''
        import json, sys, threading
        barrier = threading.Barrier(8)
        outs, errors = [], []
        def work():
            barrier.wait()
            try:
                outs.append(gd.load(sys.argv[1])(W, B, X).asnumpy())
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=work) for _ in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        np.save(sys.argv[1] + ".threads.npy", np.stack(outs) if outs else np.zeros(0))
        print(json.dumps({"errors": errors, "n": len(outs), "tvm": "tvm" in sys.modules}))
    ''')
    child = _run_child(code, path, env=env)
    assert child == {"errors": [], "n": 8, "tvm": False}
    for out in np.load(f"{path}.threads.npy"):
        np.testing.assert_array_equal(out, ref)


def test_runtime_part_of_tvm_ffi_falls_back_to_the_full_package(tmp_path):
    """A tvm-ffi whose layout the runtime-only initialisation does not know (here: a submodule it
    expects is missing) gets its package's own `__init__` at once, and compiled code still runs."""
    code = ("import numpy as np, sys\n"
            "import graphad.lowering._tvm as t\n"
            "t._FFI_RUNTIME_SUBMODULES = t._FFI_RUNTIME_SUBMODULES + ('no_such_submodule',)\n"
            "ffi = t.load_runtime()\n"
            "print('tvm_ffi.dataclasses' in sys.modules, '__getattr__' in vars(ffi), ffi.Module is not None)\n")
    assert _python(code) == "True False True"


def test_ml_dtypes_is_imported_on_first_use_and_a_users_bfloat16_is_recognised():
    """`import graphad` leaves ml_dtypes unimported; a bfloat16 array the user makes with ml_dtypes
    afterwards is a bfloat16 tensor, and graphad's own first bfloat16 imports it."""
    code = ("import sys, numpy as np, graphad as gd\n"
            "first = 'ml_dtypes' in sys.modules\n"
            "print(first, gd.Tensor(np.ones(2, np.float32)).astype(gd.bfloat16).asnumpy().dtype, 'ml_dtypes' in sys.modules)\n")
    assert _python(code) == "False bfloat16 True"
    code = ("import numpy as np, graphad as gd, ml_dtypes\n"
            "t = gd.Tensor(np.array([1.5, -2.0], ml_dtypes.bfloat16))\n"
            "print(t.dtype is gd.bfloat16, (t * 2).asnumpy().tolist(), gd.dtypes.as_dtype(ml_dtypes.bfloat16) is gd.bfloat16)\n")
    assert _python(code) == "True [3.0, -4.0] True"


def test_lgamma_reference_uses_c_lgamma_on_first_use():
    """The C lgamma is found without `ctypes.util.find_library` (which runs `ldconfig -p`)."""
    from graphad.prims.elementwise import _lgamma_scalar, _libm_lgamma
    assert _libm_lgamma() is not None
    assert _lgamma_scalar(1.5) == pytest.approx(-0.12078223763524522, rel=1e-15)
    assert _lgamma_scalar(0.0) == float("inf")


def test_disk_cache_hit_in_a_fresh_process_needs_no_compiler(compiled, env):
    ref, path = compiled
    child = _run_child(CHILD, "cache", path, env=env)
    _assert_runtime_only(child)
    assert (child["disk_hits"], child["misses"]) == (1, 0)
    np.testing.assert_array_equal(np.load(f"{path}.child.npy"), ref)


def test_load_in_a_fresh_process_needs_no_compiler(compiled, env):
    ref, path = compiled
    child = _run_child(CHILD, "aot", path, env=env)
    _assert_runtime_only(child)
    np.testing.assert_array_equal(np.load(f"{path}.child.npy"), ref)


def test_a_bfloat16_artifact_runs_on_the_runtime_alone(env, tmp_path):
    """bfloat16 inputs and outputs cross as uint16 bits relabelled by the runtime's tensor views
    (tvm-ffi's tensors have no `_create_view`, which only the `tvm` package's have): a loaded
    artifact takes and returns them in a fresh process, with the compiling process's results."""
    import graphad as gd
    from graphad import ops
    bf = gd.bfloat16.np
    x = np.array([1.5, -2.25, 3.0, 0.0078125], dtype=bf)

    def f(a):
        return a * 2.0 + 1.0, ops.sum(a)
    ref = [r.asnumpy() for r in gd.jit(f)(gd.Tensor(x))]
    path = tmp_path / "bf16.gdx"
    gd.jit(f).lower(gd.Tensor(x)).compile().save(path)
    code = ("import sys, json, numpy as np, graphad as gd\n"
            "x = np.array([1.5, -2.25, 3.0, 0.0078125], dtype=gd.bfloat16.np)\n"
            "out = gd.load(sys.argv[1])(gd.Tensor(x))\n"
            "print(json.dumps({'values': [o.asnumpy().astype(np.float32).tolist() for o in out],\n"
            "                  'dtypes': [str(o.asnumpy().dtype) for o in out], 'tvm': 'tvm' in sys.modules}))\n")
    child = _run_child(code, path, env=env)
    assert child["dtypes"] == ["bfloat16", "bfloat16"] and not child["tvm"]
    assert child["values"] == [r.astype(np.float32).tolist() for r in ref]


# A graph whose kernels sort, built identically by the test process and its children.
SORTING = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphad as gd
    from graphad import ops

    def f(a):
        return ops.sort(a), ops.argsort(a), ops.median(a)
    x = gd.Tensor(np.array([3.0, 1.0, 2.0, 5.0, -1.5]))
''')
SORTING_CHILD = SORTING + textwrap.dedent('''
    out = gd.load(sys.argv[1])(x) if sys.argv[2] == "aot" else gd.jit(f)(x)
    print(json.dumps({"values": [o.asnumpy().tolist() for o in out], "tvm": "tvm" in sys.modules,
                      "disk_hits": gd.cache_info().disk_hits}))
''')


def test_sorting_kernels_run_from_the_disk_cache_and_an_artifact_on_the_runtime_alone(env, tmp_path):
    """sort, argsort and median kernels call the runtime's contrib function tvm.contrib.sort.argsort,
    registered by libtvm_runtime_extra: a fresh process that found them in the disk cache, or
    loaded their artifact, raised "Cannot find function tvm.contrib.sort.argsort" at the first
    call (found by a helper's trial). Both now give the compiling process's results, with the
    `tvm` package unimported."""
    ns: dict = {}
    exec(SORTING, ns)
    gd, f, x = ns["gd"], ns["f"], ns["x"]
    ref = [r.asnumpy() for r in gd.jit(f)(x)]
    path = tmp_path / "sort.gdx"
    gd.jit(f).lower(x).compile().save(path)
    for mode in ("aot", "cache"):
        child = _run_child(SORTING_CHILD, path, mode, env=env)
        assert not child["tvm"], mode
        assert child["values"] == [r.tolist() for r in ref], mode
    assert child["disk_hits"] == 1


def test_an_unpacked_artifact_directory_loads_and_is_checked(compiled, env, tmp_path):
    import graphad as gd
    from graphad.errors import ArtifactError
    from graphad.runtime import aot
    ref, path = compiled
    d = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as z:
        z.extractall(d)
    ns: dict = {}
    exec(SRC, ns)
    np.testing.assert_array_equal(gd.load(d)(ns["W"], ns["B"], ns["X"]).asnumpy(), ref)
    child = _run_child(CHILD, "aot", d, env=env)  # a fresh process: runtime only here too
    _assert_runtime_only(child)
    lib = (d / aot.LIBRARY).read_bytes()
    (d / aot.LIBRARY).write_bytes(lib[:100] + bytes([lib[100] ^ 1]) + lib[101:])
    with pytest.raises(ArtifactError, match="library was modified"):
        gd.load(d)
    (d / aot.LIBRARY).unlink()
    with pytest.raises(ArtifactError, match="without the members"):
        gd.load(d)


def test_host_cache_key_needs_no_llvm_and_matches_the_spelled_out_target(env):
    """The key of a host-CPU graph is computed in a fresh process without importing tvm, and a
    tvm Target equal to the host's gives the same key (the same code)."""
    code = SRC + textwrap.dedent('''
        import json, sys
        from graphad.api import make_graph
        from graphad.runtime.cache import cache_key
        g = make_graph(forecast)(W, B, X)
        print(json.dumps({"key": cache_key(g, None), "cpu": cache_key(g, "cpu"), "tvm": "tvm" in sys.modules}))
    ''')
    child = _run_child(code, env=env)
    assert not child["tvm"] and child["key"] == child["cpu"]
    ns: dict = {}
    exec(SRC, ns)
    from graphad.api import make_graph
    from graphad.lowering.targets import host_target
    from graphad.runtime.cache import cache_key
    g = make_graph(ns["forecast"])(ns["W"], ns["B"], ns["X"])
    assert cache_key(g, host_target()) == child["key"]
    assert cache_key(g, {"kind": "llvm", "mcpu": "x86-64"}) != child["key"]


def test_cpu_checks_without_llvm(monkeypatch):
    """The artifact's CPU check reads /proc/cpuinfo: features it shows pass without LLVM, another
    architecture is refused, and a feature it cannot confirm is left to LLVM."""
    from graphad.errors import ArtifactError
    from graphad.runtime import aot, tvmrt
    target = json.dumps({"kind": "llvm", "mtriple": f"{tvmrt.host_arch()}-unknown-linux-gnu"})
    flags = tvmrt._cpuinfo()[1]
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")
    have = ["sse2"] if "sse2" in flags else []
    assert aot._cpu_confirmed("a", {"target": target, "cpu_features": have + ["cx8", "64bit"]})
    assert not aot._cpu_confirmed("a", {"target": target, "cpu_features": ["avx9000"]})
    assert not aot._cpu_confirmed("a", {"target": "llvm -mcpu=x", "cpu_features": []})
    other = json.dumps({"kind": "llvm", "mtriple": "riscv64-unknown-linux-gnu"})
    with pytest.raises(ArtifactError, match="compiled for riscv64"):
        aot._cpu_confirmed("a", {"target": other, "cpu_features": []})


def test_cpu_check_covers_the_instruction_sets_outside_the_vector_families(monkeypatch):
    """popcnt, lzcnt, movbe, gfni, ssse3 and the like fault on a CPU without them as AVX does: an
    artifact that needs one is confirmed only by its /proc/cpuinfo flag (under Linux's name: lzcnt
    is "abm"), else refused by the LLVM check, which names it. Tuning features are not checked."""
    from graphad.errors import ArtifactError
    from graphad.lowering import targets
    from graphad.runtime import aot, tvmrt
    target = json.dumps({"kind": "llvm", "mtriple": f"{tvmrt.host_arch()}-unknown-linux-gnu"})
    old = tvmrt._cpuinfo()
    monkeypatch.setattr(tvmrt, "_cpuinfo", lambda: (old[0], frozenset({"sse2", "ssse3", "abm", "movbe"})))
    rec = {"target": target, "cpu_features": ["sse2", "ssse3", "lzcnt", "movbe", "fast-lzcnt", "macrofusion"]}
    assert aot._cpu_confirmed("a", rec)
    for isa in ("popcnt", "gfni", "adx", "cx16"):
        assert not aot._cpu_confirmed("a", dict(rec, cpu_features=rec["cpu_features"] + [isa])), isa
    if tvmrt.host_arch() != "x86_64":
        return
    host = [f for f in targets.cpu_features(targets.host_target()) if f != "popcnt"]
    monkeypatch.setattr(targets, "cpu_features", lambda t: host)
    with pytest.raises(ArtifactError, match="popcnt"):
        aot._check_cpu_with_llvm("a", {"target": str(targets.host_target()),
                                       "cpu_features": host + ["popcnt"]})


def test_a_warning_at_the_users_line_from_python_c():
    """errors.warn_at_user_line works for code run with `python -c` (no source file to show)."""
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "from graphad.errors import warn_at_user_line\nwarn_at_user_line('graphad: test warning')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "<string>:4: RuntimeWarning: graphad: test warning" in r.stderr


# A service's whole program: the artifact and its inputs, nothing that traces or compiles.
AOT_ONLY = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphad as gd
    path, inputs = sys.argv[1], sys.argv[2]
    with np.load(inputs) as z:
        out = gd.load(path)(z["W"], z["B"], z["X"])
    np.save(path + ".aot_only.npy", out.asnumpy())
    heavy = ("graphad.prims", "graphad.ops", "graphad.api", "graphad.control", "graphad.passes",
             "graphad.frontend.function", "graphad.frontend.jit", "graphad.ir.parser", "graphad.ir.printer",
             "tvm")
    print(json.dumps({"heavy": sorted(m for m in heavy if m in sys.modules),
                      "graphad_modules": sorted(m for m in sys.modules if m.startswith("graphad")),
                      "type": type(out).__name__ if not isinstance(out, gd.Tensor) else "Tensor"}))
''')


def test_load_and_call_import_no_tracer_primitives_or_passes(compiled, env, tmp_path):
    """`import graphad` + `gd.load(path)(...)`: the runtime's modules only (the primitives, ops,
    transformations, tracer, passes, IR printer/parser and TVM's compiler stay unimported), and the
    same result as the process that compiled it."""
    ref, path = compiled
    ns: dict = {}
    exec(SRC, ns)
    np.savez(tmp_path / "in.npz", W=ns["W"], B=ns["B"], X=ns["X"])
    child = _run_child(AOT_ONLY, path, tmp_path / "in.npz", env=env)
    assert child["heavy"] == [], child["graphad_modules"]
    assert child["type"] == "Tensor"
    np.testing.assert_array_equal(np.load(f"{path}.aot_only.npy"), ref)


def test_the_namespace_completes_on_first_use_with_every_name_of_a_full_import():
    """A lazily imported `graphad` gives every public name (those `import graphad` bound when it
    imported everything), submodules included, from the first read on; `dir` lists them first."""
    code = textwrap.dedent('''
        import sys, graphad as gd
        names = ["grad", "value_and_grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                 "vmap", "jit", "make_graph", "set_loop_options", "stop_gradient", "cond", "switch",
                 "while_loop", "fori_loop", "scan", "checkpoint", "checkpoint_policies", "remat",
                 "custom_jvp", "custom_vjp", "set_seed", "Parameter", "ParameterTuple", "set_backend",
                 "get_backend", "set_target", "get_target", "TensorSpec", "load", "Tensor", "prims", "ops",
                 "control", "float32", "GraphadError", "__version__", "api", "passes", "parameter", "pytree",
                 "tensor", "frontend", "ir", "dtypes", "errors"]
        listed = [n for n in names if n not in dir(gd)]
        before = "graphad.api" in sys.modules
        import graphad.api, graphad.control, graphad.frontend.jit
        same = [gd.grad is graphad.api.grad, gd.cond is graphad.control.cond,
                gd.TensorSpec is graphad.frontend.jit.TensorSpec, gd.load is graphad.frontend.jit.load]
        print(listed, before, [n for n in names if not hasattr(gd, n)], same)
    ''')
    assert _python(code) == "['api', 'passes', 'parameter'] False [] [True, True, True, True]"


def test_the_primitive_registry_completes_itself_on_its_first_read():
    """The primitive table read by name, `in`, iteration or length, in a process that imported
    only `graphad` and the IR: every primitive is there, the control-flow and custom-derivative
    ones (registered by graphad.control) included, and the IR parser resolves them."""
    code = textwrap.dedent('''
        import sys, graphad
        from graphad.ir.registry import PRIMITIVES, get_primitive
        from graphad.ir.parser import parse_graph
        before = "graphad.control" in sys.modules or "graphad.prims" in sys.modules
        has = ["cond" in PRIMITIVES, PRIMITIVES.get("scan") is not None, "custom_vjp_call" in set(PRIMITIVES),
               get_primitive("checkpoint").name == "checkpoint", len(PRIMITIVES) > 100]
        g = parse_graph("func @f(%x: f32[3]) -> (f32[3]) {\\n  %0 = sin(%x) : f32[3]\\n  return %0\\n}")
        print(before, has, [n.prim.name for n in g.nodes])
    ''')
    assert _python(code) == "False [True, True, True, True, True] ['sin']"


def test_the_namespace_completes_once_when_threads_read_it_first_together():
    """Eight threads of a fresh process read a name of the lazy namespace at the same moment:
    each gets the function (no AttributeError from a half-imported package) and the primitives
    are all registered once (a second registration would raise)."""
    code = textwrap.dedent('''
        import threading, graphad as gd
        barrier, got, errors = threading.Barrier(8), [], []
        def first_read(i):
            barrier.wait()
            try:
                got.append((gd.grad, gd.ops.sin, gd.cond)[i % 3])
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=first_read, args=(i,)) for i in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        import numpy as np
        print(errors, len(got), float(gd.grad(gd.ops.sin)(gd.Tensor(np.float32(0.0))).asnumpy()))
    ''')
    assert _python(code) == "[] 8 1.0"


def test_a_failed_completion_of_the_namespace_is_retried():
    """A module of the namespace that fails to import makes the read fail with its error, and the
    next read imports it again (as a plain import would), not a half-bound namespace."""
    code = textwrap.dedent('''
        import sys, graphad as gd
        sys.modules["graphad.control.custom"] = None  # an import of it raises ImportError
        try:
            gd.grad
        except ImportError as e:
            print("failed:", isinstance(e, ImportError))
        del sys.modules["graphad.control.custom"]
        from graphad.ir.registry import PRIMITIVES
        print(callable(gd.custom_vjp), "custom_vjp_call" in PRIMITIVES, callable(gd.grad))
    ''')
    assert _python(code).splitlines() == ["failed: True", "True True True"]


def test_star_import_submodules_and_passes_are_those_of_a_full_import():
    """`from graphad import *` binds the names a full import did (completing the namespace);
    submodules read as attributes of the eagerly imported packages import on demand
    (`gd.frontend.jit`, `gd.ir.parser`); the merge-loops pass (registered by graphad.control)
    is known to the pass manager before anything else was used."""
    code = textwrap.dedent('''
        import graphad as gd
        from graphad.passes.manager import lookup_pass
        found = lookup_pass("merge-loops").name
        ns = {}
        exec("from graphad import *", ns)
        star = sorted(k for k in ns if k != "__builtins__")
        attrs = [gd.frontend.jit.TensorSpec.__name__, gd.frontend.function.get_backend.__name__,
                 gd.ir.builder.GraphBuilder.__name__, gd.ir.parser.__name__, gd.ir.interpret.__name__,
                 gd.ir.verify.__name__]
        print(found, len(star), all(ns[k] is getattr(gd, k) for k in star), attrs)
    ''')
    assert _python(code) == ("merge-loops 55 True ['TensorSpec', 'get_backend', 'GraphBuilder', 'graphad.ir.parser', "
                             "'graphad.ir.interpret', 'verify']")


def test_graphad_imported_again_binds_its_namespace_again():
    """`graphad` removed from sys.modules (its submodules kept) and imported again, or reloaded:
    its names resolve, submodules included, and an unknown name reads as unknown."""
    code = textwrap.dedent('''
        import importlib, sys, graphad as gd
        gd.grad
        del sys.modules["graphad"]
        import graphad as gd2
        again = [gd2.grad is gd.grad, gd2.ops is gd.ops, gd2.jit is gd.jit, gd2.passes is gd.passes]
        gd3 = importlib.reload(gd2)
        try:
            gd3.gradd
        except AttributeError as e:
            print(again, gd3.vmap is gd.vmap, e)
    ''')
    assert _python(code) == "[True, True, True, True] True module 'graphad' has no attribute 'gradd'"


def test_a_fork_while_another_thread_completes_the_namespace():
    """A process forks while another of its threads imports graphad's namespace: the fork waits
    for the import, and the child differentiates (it hung on the lock and import locks it
    inherited from the thread it does not have)."""
    code = textwrap.dedent('''
        import os, threading
        import graphad as gd
        import graphad.ir.registry as reg
        t = threading.Thread(target=lambda: gd.grad)
        t.start()
        while not reg._state["loading"] and t.is_alive():
            pass
        pid = os.fork()
        if pid == 0:
            import signal
            signal.alarm(60)
            g = gd.grad(lambda x: (x * x).sum())(gd.Tensor([1.0, 2.0]))
            os._exit(0 if g.asnumpy().tolist() == [2.0, 4.0] else 3)
        t.join()
        _, status = os.waitpid(pid, 0)
        print(os.WIFEXITED(status) and os.WEXITSTATUS(status))
    ''')
    assert _python(code) == "0"


def test_a_completion_that_fails_after_registering_shows_the_first_failure():
    """A module of the namespace that raises after registering its primitives: the read raises
    its error, and a later read (which imports it again and meets "registered twice") names the
    first failure as its cause instead of hiding it."""
    code = textwrap.dedent('''
        import importlib.abc, importlib.util, sys
        import graphad as gd

        class FailAfterRegistering(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name != "graphad.control.prims":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(name)
                real = spec.loader

                class Loader(importlib.abc.Loader):
                    def create_module(self, spec):
                        return None

                    def exec_module(self, module):
                        real.exec_module(module)  # registers cond, while_loop, scan
                        raise RuntimeError("injected after registering")
                spec.loader = Loader()
                return spec

        sys.meta_path.insert(0, FailAfterRegistering())
        try:
            gd.grad
        except Exception as e:
            first = type(e).__name__
        try:
            gd.grad
        except Exception as e:
            print(first, type(e).__name__, type(e.__cause__).__name__, str(e.__cause__))
    ''')
    assert _python(code) == "RuntimeError ValueError RuntimeError injected after registering"


def test_a_disk_cache_hit_imports_neither_tempfile_pkgutil_nor_sysconfig(compiled, env):
    """What the fresh process of a disk-cache hit no longer imports (2-4 ms of its start-up):
    tempfile (TVM's load-time messages are filtered through an in-memory file), pkgutil (the
    pass modules are listed with os.scandir) and sysconfig (the scripts directory is looked up
    only for a frame whose file is not a .py)."""
    code = CHILD.replace('print(json.dumps({', 'print(json.dumps({"late": sorted(m for m in '
                         '("tempfile", "pkgutil", "sysconfig") if m in sys.modules),')
    child = _run_child(code, "cache", compiled[1], env=env)
    assert child["disk_hits"] == 1 and child["late"] == []


def test_quiet_scope_logs_drops_tvm_scope_lines_and_passes_the_rest(capfd):
    from graphad.runtime.executable import quiet_scope_logs
    with quiet_scope_logs():
        os.write(2, b"Warning: Scope Loaded: x\nsomething else\nWarning: Scope Saving: y\nlast\n")
    assert capfd.readouterr().err == "something else\nlast\n"


def test_user_loc_skips_a_console_script_launcher_but_not_a_py_file_beside_it():
    from graphad.prims.trace import _scripts_dir, user_loc
    ns = {"user_loc": user_loc}
    exec(compile("def launcher():\n    return user_loc()\n", os.path.join(_scripts_dir(), "tool"), "exec"), ns)
    loc = ns["launcher"]()  # the launcher's frame is skipped: this test's line is the user's
    assert loc is not None and loc.file.endswith("test_startup.py")
    exec(compile("def script():\n    return user_loc()\n", os.path.join(_scripts_dir(), "tool.py"), "exec"), ns)
    loc = ns["script"]()
    assert loc is not None and loc.file.endswith("tool.py") and loc.line == 2


def test_user_loc_takes_a_file_named_like_the_package_beside_it_as_the_users():
    """A user's graphad_demo.py next to the graphad package directory is the user's code (the
    package check compared path prefixes without the separator and skipped it)."""
    import graphad
    from graphad.prims.trace import user_loc
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(graphad.__file__))), "graphad_demo.py")
    ns = {"user_loc": user_loc}
    exec(compile("def demo():\n    return user_loc()\n", beside, "exec"), ns)
    loc = ns["demo"]()
    assert loc is not None and loc.file.endswith("graphad_demo.py") and loc.line == 2


def test_pass_modules_are_those_pkgutil_lists():
    import pkgutil
    import graphad.passes as passes
    from graphad.passes.manager import _pass_module_names
    assert _pass_module_names(passes.__path__) == sorted(m.name for m in pkgutil.iter_modules(passes.__path__))
