"""Lazy access to Apache TVM: the only place graphad imports it.

Two levels, so that running compiled code never pays for the compiler:
* `load_runtime()` loads only the TVM runtime (`libtvm_runtime`, 3 MB) through tvm-ffi, without
  importing the `tvm` package. A disk-cache hit and an AOT artifact need nothing else: loading a
  library, making its Relax VM and calling it are runtime functions. `import tvm` costs about
  0.5 s and maps the 260 MB compiler library (+150 MiB resident).
* `load_tvm()` imports the `tvm` package (compiler included), for lowering and building.

`map_prim_funcs` rewrites the bodies of a module's PrimFuncs (the lowering's TIR rewrites share it).

`import graphad` does neither. Both first fill in the thread-pool settings the TVM runtime reads
from the environment (`runtime_env_defaults`), since the pool reads them when it starts.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import types

_tvm = None
_runtime = None
# sched_yield calls a TVM pool worker makes before it sleeps (`runtime_env_defaults`)
SPIN_COUNT = 300


def default_num_threads() -> int:
    """CPUs this process may run on (the affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def env_threads() -> int | None:
    """The count TVM_NUM_THREADS (else OMP_NUM_THREADS) asks for, or None when unset or unusable."""
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            n = int(raw.split(",")[0])  # OMP_NUM_THREADS may list counts per nesting level
        except ValueError:
            return None  # TVM's atoi would read 0 too: its own default then applies
        return n if n > 0 else None
    return None


def runtime_env_defaults() -> None:
    """Set the TVM thread-pool variables the user left unset (before the pool starts).

    * TVM_NUM_THREADS: one worker per CPU this process may run on, unless TVM_NUM_THREADS or
      OMP_NUM_THREADS asks for fewer; a larger count is lowered to the CPUs (the pool reads
      TVM_NUM_THREADS, then OMP_NUM_THREADS, else takes half the hardware threads on x86: a
      single thread on a 2-vCPU machine). It is the
      pool's size; graphad chooses how many of them each executable uses (runtime/threads.py).
    * TVM_BIND_THREADS=0: TVM otherwise pins each worker to one core, chosen among all the
      machine's cores, not the process's affinity mask; a worker pinned to a core another process
      keeps busy then runs only when that process's time slice ends, while the calling thread
      spins waiting for it (a 21 us call took 1.3-2.9 ms with one busy core).
    * TVM_THREAD_POOL_SPIN_COUNT=300 (`SPIN_COUNT`): after each task a worker calls sched_yield
      this many times, watching for the next task, before it sleeps. TVM's default, 300,000, takes
      a core from every other process and the pool waits for that spin at exit: 8-13 s with one
      core busy, measured. With 0, every parallel loop pays a futex wake-up: the MLP train step
      (18 parallel loops) took 1.65-1.76 ms at 2 threads, against 1.28 ms with 300 and 1.24 with
      1,000 (2-vCPU machine, quiet). 300 yields take about 55 us on an idle core (0.18 us each,
      measured), enough to bridge the gaps between a step's kernels; under contention, where a
      yield may hand the core over for a scheduler slice, they bound the exit wait to about a
      second (10,000 took up to 28 s). With a core busy (the thread policy then runs one thread),
      exit took 0.16 s with 0, 100 and 1,000 alike.
    """
    cpus = default_num_threads()
    asked = env_threads()
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(cpus)
    elif asked is not None and asked > cpus:
        # the pool starts every worker it is told to: TVM_NUM_THREADS=100000 aborted the process
        # (std::terminate), and more workers than CPUs spin against each other (above)
        os.environ["TVM_NUM_THREADS"] = str(cpus)
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(SPIN_COUNT))


@contextlib.contextmanager
def _torch_hidden():
    """torch hidden (`import torch` fails) while the block runs, unless the user imported it.

    tvm_ffi imports torch eagerly when it is installed (about 1.5 s here) only to convert torch
    tensors, which graphad never hands to TVM (it passes NumPy buffers through DLPack).
    `import torch` works normally afterwards.
    """
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None
    try:
        yield
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _import_hiding_torch(name: str):
    """Import module `name` with torch hidden unless the user imported it already (`_torch_hidden`)."""
    import importlib
    with _torch_hidden():
        return importlib.import_module(name)


class _DeferredModule(types.ModuleType):
    """A package module that stands in `sys.modules` until one of its attributes is read: then
    the real module is imported in its place and its namespace copied into this object (so that a
    reference taken before then works too). Unlike importlib's LazyLoader, reading the module's
    import metadata (`__spec__`, `__path__`), as the import system does on `from pkg import it`,
    does not load it."""

    def __getattr__(self, name):  # called only for names not set yet
        if name.startswith("__"):
            raise AttributeError(name)
        parent, _, child = self.__name__.rpartition(".")
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        import importlib
        real = importlib.import_module(self.__name__)
        setattr(sys.modules[parent], child, real)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def _defer_tvm_ffi_modules() -> None:
    """Make tvm-ffi submodules graphad never uses load on first use rather than when `tvm_ffi`
    is imported.

    tvm-ffi's package imports them eagerly:
    * `tvm_ffi.cpp`, its helpers that build C++ extensions (sysconfig, subprocess, file locks):
      about a third of `import tvm_ffi` (12 of 40 ms, under load);
    * `tvm_ffi._optional_torch_c_dlpack`, which speeds up torch's DLPack conversion and does
      nothing without torch (graphad imports tvm_ffi with torch hidden when the user has not
      imported it, `_import_hiding_torch`): its imports (logging, subprocess, hashlib) were 3-4 ms
      of a warm process's 130-150 ms start-up. Deferred only while torch is not imported, so a
      torch user's process runs it as tvm-ffi intends.
    A `_DeferredModule` stands in for each, so `tvm_ffi.cpp.build(...)` still works for a user who
    wants it. Nothing is done when tvm_ffi is imported already or its layout differs.
    """
    import importlib.util
    if "tvm_ffi" in sys.modules:
        return
    parent = importlib.util.find_spec("tvm_ffi")  # locates the package; runs none of its code
    locs = list(parent.submodule_search_locations or []) if parent is not None else []
    if not locs:
        return
    names = [("cpp", os.path.join(locs[0], "cpp", "__init__.py"), True)]
    if "torch" not in sys.modules:
        names.append(("_optional_torch_c_dlpack", os.path.join(locs[0], "_optional_torch_c_dlpack.py"), False))
    for name, init, package in names:
        full = f"tvm_ffi.{name}"
        if full in sys.modules or not os.path.isfile(init):
            continue
        stub = _DeferredModule(full)
        search = [os.path.dirname(init)] if package else None
        if package:
            stub.__path__ = search
        stub.__file__ = init
        stub.__spec__ = importlib.util.spec_from_file_location(full, init, submodule_search_locations=search)
        sys.modules[full] = stub


class _RecordReader(types.ModuleType):
    """`importlib.metadata` as tvm-ffi's library finder uses it, without importing it.

    tvm_ffi's `libinfo` imports importlib.metadata when tvm_ffi is imported, only to read its
    wheel's RECORD (`distribution(name).read_text("RECORD")`, `dist._path`) and find
    `libtvm_ffi.so`; importing importlib.metadata (email, csv, zipfile, socket...) was 12-18 ms of
    a warm process's 130-150 ms start-up. This stands in `sys.modules` only while tvm_ffi is
    imported (`_import_tvm_ffi`) and stays as libinfo's `im`: `distribution` finds the
    distribution's `.dist-info` directory on sys.path as importlib.metadata does for an installed
    wheel (the first in sys.path order), and hands anything else (another attribute, such as the
    PackageNotFoundError libinfo's `except` names once a lookup fails, or a distribution not
    found that way) to the real importlib.metadata, imported then."""

    def __init__(self, spec):
        super().__init__("importlib.metadata")
        # the real package's spec and path: another thread importing importlib.metadata (or one
        # of its submodules) while this stands in finds a package (see _import_tvm_ffi)
        self.__spec__ = spec
        self.__path__ = list(spec.submodule_search_locations or []) if spec is not None else []

    def distribution(self, name: str):
        import re
        want = re.sub(r"[-_.]+", "_", name).lower()
        for entry in sys.path:
            if not isinstance(entry, str):
                continue
            try:
                names = os.listdir(entry or ".")
            except OSError:  # (a zip file on sys.path among them: the real lookup below reads those)
                continue
            for n in names:
                stem, ext = os.path.splitext(n)
                if ext not in (".dist-info", ".egg-info") or re.sub(r"[-_.]+", "_", stem.split("-", 1)[0]).lower() != want:
                    continue
                path = os.path.join(entry or ".", n)
                if ext == ".egg-info" or not os.path.isfile(os.path.join(path, "RECORD")):
                    return _real_metadata().distribution(name)  # not a plain wheel's: the real lookup
                return _DistInfo(path, name)
        return _real_metadata().distribution(name)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(_real_metadata(), attr)


class _DistInfo:
    """A `.dist-info` directory as importlib.metadata's PathDistribution reads files from it
    (`read_text`, `_path`); anything else from the real distribution."""

    def __init__(self, path: str, name: str):
        from pathlib import Path
        self._path = Path(path)
        self._name = name

    def read_text(self, filename: str):
        try:
            return (self._path / filename).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, KeyError, NotADirectoryError, PermissionError):
            return None

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(_real_metadata().distribution(self._name), attr)


def _real_metadata():
    """The real importlib.metadata (imported now if it is not; never the stand-in)."""
    cur = sys.modules.get("importlib.metadata")
    if cur is not None and not isinstance(cur, _RecordReader):
        return cur
    sys.modules.pop("importlib.metadata", None)
    import importlib
    if isinstance(vars(importlib).get("metadata"), _RecordReader):
        del importlib.metadata
    return importlib.import_module("importlib.metadata")  # (sets importlib.metadata to the real one)


def _import_tvm_ffi(importer=None):
    """`import tvm_ffi` (torch hidden, `_import_hiding_torch`) with `_RecordReader` standing in for
    importlib.metadata while it is imported, when importlib.metadata is not imported already.
    `importer` (default: the full `import tvm_ffi`) is what runs meanwhile.

    Another thread that imports importlib.metadata meanwhile gets the stand-in, as
    `sys.modules["importlib.metadata"]` and as `importlib.metadata`: every name but
    `distribution` is the real module's, which the first such name imports (replacing the
    stand-in in both places)."""
    if importer is None:
        def importer():
            return _import_hiding_torch("tvm_ffi")
    if "importlib.metadata" in sys.modules or "tvm_ffi" in sys.modules:
        return importer()
    import importlib
    import importlib.util
    try:
        spec = importlib.util.find_spec("importlib.metadata")
    except (ImportError, ValueError):
        spec = None
    reader = _RecordReader(spec)
    sys.modules["importlib.metadata"] = reader
    had = "metadata" in vars(importlib)
    if not had:
        importlib.metadata = reader
    try:
        return importer()
    finally:
        if sys.modules.get("importlib.metadata") is reader:
            del sys.modules["importlib.metadata"]
        if not had and vars(importlib).get("metadata") is reader:
            del importlib.metadata


# tvm-ffi's submodules that loading and calling a compiled library use, in the order its package
# imports them: the C library's bindings (core), object registration (registry), the objects a
# Relax VM hands back (containers, tensors, modules, errors); with the package names graphad's
# runtime reads (runtime/tvmrt.py, runtime/executable.py). The package's other submodules
# (dataclasses, structural, access_path, serialization, stream) are for writing or inspecting
# objects: 13-14 ms of a warm process's start-up on this project's AMD machine.
_FFI_RUNTIME_SUBMODULES = ("registry", "_dtype", "core", "_convert", "error", "_tensor", "container", "module")
_FFI_RUNTIME_NAMES = (("registry", ("register_object", "register_global_func", "get_global_func")),
                      ("_dtype", ("dtype",)), ("core", ("Object", "Function")),
                      ("_tensor", ("Device", "device", "from_dlpack", "Tensor", "Shape")),
                      ("container", ("Array", "Map")), ("module", ("Module", "load_module")))
_runtime_lock = threading.RLock()  # `load_runtime`: one thread loads, the others wait for it
# `_complete_tvm_ffi`; not `_runtime_lock`: a thread holding that one may wait for `import tvm` in
# another thread, which completes tvm_ffi on the way
_ffi_lock = threading.RLock()
_ffi_partial = None  # the tvm_ffi package module while only its runtime part is initialised


class _RuntimeOnlyLoader:
    """tvm_ffi's package loader, initialising only the runtime part (`_import_tvm_ffi_runtime`).

    It runs inside the import system, which holds the package's import lock meanwhile (another
    thread's `import tvm_ffi` waits, as for any import) and removes the module from sys.modules
    if this fails. `real` is the package's own loader, which `_complete_tvm_ffi` runs later."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        # the rest of the loader protocol (get_data, get_resource_reader, get_code...): the
        # package's files are the real loader's
        if name == "real" or name.startswith("__"):  # (an instance copied without __init__)
            raise AttributeError(name)
        return getattr(self.real, name)

    def create_module(self, spec):
        """The default module (the import system makes it from the spec)."""
        return None

    def exec_module(self, pkg) -> None:
        """Load tvm-ffi's library (what its `__init__` does first), import
        `_FFI_RUNTIME_SUBMODULES` and bind `_FFI_RUNTIME_NAMES`, with torch hidden
        (`_torch_hidden`). A failure once the C bindings are imported (another tvm-ffi
        layout) runs the package's own `__init__` here instead; one before raises (the caller
        then imports the package plainly)."""
        global _ffi_partial
        import importlib
        with _torch_hidden():
            try:
                libinfo = importlib.import_module("tvm_ffi.libinfo")
                pkg.LIB = libinfo.load_lib_ctypes("apache-tvm-ffi", "tvm_ffi", "RTLD_GLOBAL")
                for name in _FFI_RUNTIME_SUBMODULES:
                    importlib.import_module(f"tvm_ffi.{name}")
                for name, attrs in _FFI_RUNTIME_NAMES:
                    sub = sys.modules[f"tvm_ffi.{name}"]
                    for attr in attrs:
                        setattr(pkg, attr, getattr(sub, attr))
            except Exception:  # noqa: BLE001 - another layout: the package's own __init__
                if "tvm_ffi.core" not in sys.modules:
                    raise  # nothing registered yet: the caller's plain import starts clean
                self.real.exec_module(pkg)
                _restore_loader(pkg, self.real)
                return
        pkg.__getattr__ = _ffi_getattr
        _ffi_partial = pkg


def _restore_loader(pkg, real) -> None:
    """Make the package's import metadata what a plain import leaves."""
    pkg.__loader__ = real
    if pkg.__spec__ is not None:
        pkg.__spec__.loader = real


class _RuntimeOnlyFinder:
    """A meta-path finder handing the import system tvm_ffi's spec with `_RuntimeOnlyLoader`."""

    def __init__(self, spec):
        self.spec = spec

    def find_spec(self, name, path=None, target=None):
        """The prepared spec for `tvm_ffi`; None (the other finders decide) for anything else."""
        return self.spec if name == "tvm_ffi" else None


def _import_tvm_ffi_runtime():
    """The `tvm_ffi` package with only what running compiled code needs initialised.

    tvm-ffi's package `__init__` imports all of its submodules. Here the import system imports the
    package with `_RuntimeOnlyLoader`: only the library load and `_FFI_RUNTIME_SUBMODULES` run,
    and `_FFI_RUNTIME_NAMES` are bound on it as its `__init__` binds them. Reading any other name
    from the package runs the real `__init__` in that same module first (PEP 562 `__getattr__`,
    `_complete_tvm_ffi`): its submodule imports find the modules already imported, so every
    object is the one a plain `import tvm_ffi` gives; `load_tvm` does that before importing
    `tvm`. Where this fails before tvm-ffi's C bindings are imported, the package is imported
    plainly; after, its `__init__` runs at once. When torch is imported, or tvm_ffi already,
    this is the plain import. The caller holds `_runtime_lock`."""
    import importlib
    import importlib.util
    if "tvm_ffi" in sys.modules or "torch" in sys.modules:
        return _import_tvm_ffi()
    spec = importlib.util.find_spec("tvm_ffi")  # locates the package; runs none of its code
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return _import_tvm_ffi()
    import copy
    spec = copy.copy(spec)  # (find_spec hands out an imported module's own spec: never change that)
    spec.loader = _RuntimeOnlyLoader(spec.loader)
    finder = _RuntimeOnlyFinder(spec)

    def runtime_only():
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module("tvm_ffi")
        finally:
            sys.meta_path.remove(finder)
    try:
        return _import_tvm_ffi(runtime_only)
    except Exception:  # noqa: BLE001 - failed before any registration (the loader's docstring)
        if "tvm_ffi.core" in sys.modules:
            raise
        return _import_tvm_ffi()


def _ffi_getattr(name: str):
    """The partially initialised tvm_ffi package's `__getattr__`: run its `__init__`, then read.

    Another thread's read waits while one thread runs that `__init__`."""
    pkg = _complete_tvm_ffi()
    try:
        return pkg.__dict__[name]
    except KeyError:
        raise AttributeError(f"module 'tvm_ffi' has no attribute {name!r}") from None


def _complete_tvm_ffi():
    """Run tvm_ffi's package `__init__` in the module `_import_tvm_ffi_runtime` made (once; torch
    hidden, `_torch_hidden`); return the package (None when tvm_ffi is not
    imported). Another thread reading one of the package's names meanwhile waits for it
    (`_ffi_getattr`); the running thread's own reads see the module as any package being
    imported (its names bound so far). If the `__init__` fails (or is interrupted), the next
    read runs it again, as a plain import is retried."""
    global _ffi_partial
    with _ffi_lock:
        pkg = _ffi_partial
        if pkg is None:
            return sys.modules.get("tvm_ffi")
        _ffi_partial = None
        loader = pkg.__loader__
        if not isinstance(loader, _RuntimeOnlyLoader):
            # reloaded meanwhile (importlib.reload runs the package's own loader): complete already
            del pkg.__getattr__
            return pkg
        try:
            with _torch_hidden():
                # tvm_ffi.dataclasses first, whole: the package's __init__ imports its submodule
                # py_class before the dataclasses package itself, and a thread importing
                # tvm_ffi.dataclasses meanwhile takes the two import locks the other way round
                # (the import system's deadlock detection then hands one side a half-initialised
                # module)
                import importlib
                importlib.import_module("tvm_ffi.dataclasses")
                loader.real.exec_module(pkg)
        except BaseException:
            _ffi_partial = pkg  # (its __getattr__ is still there: the next read retries)
            raise
        del pkg.__getattr__
        _restore_loader(pkg, loader.real)
        return pkg


def tvm_library_dirs() -> list[str]:
    """Where the TVM wheel keeps its shared libraries, found without importing `tvm`
    ($TVM_LIBRARY_PATH first, as tvm's own loader does)."""
    import importlib.util
    dirs = []
    if os.environ.get("TVM_LIBRARY_PATH"):
        dirs.append(os.environ["TVM_LIBRARY_PATH"])
    spec = importlib.util.find_spec("tvm")  # locates the package; runs none of its code
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        dirs.append(os.path.join(loc, "lib"))
    return dirs


def load_runtime():
    """Return `tvm_ffi` with the TVM runtime library loaded, without the compiler.

    After this, `tvm_ffi.load_module` loads exported libraries and the runtime's global functions
    (`runtime.config_threadpool`, the Relax VM, tensor allocation) are there. When `tvm` is
    already imported its runtime is the one used (it is the same library file).
    """
    global _runtime
    if _runtime is not None:
        return _runtime
    with _runtime_lock:  # one thread loads; the others wait for the finished runtime
        if _runtime is not None:
            return _runtime
        runtime_env_defaults()
        if "tvm" in sys.modules:
            # (imported, or being imported by another thread: load_tvm waits for it, and with it
            # for the runtime library it loads)
            load_tvm()
            _runtime = _import_hiding_torch("tvm_ffi")
            return _runtime
        from ..errors import CompileError
        _defer_tvm_ffi_modules()
        try:
            tvm_ffi = _import_tvm_ffi_runtime()
        except ImportError as e:  # pragma: no cover - apache-tvm-ffi is a declared dependency
            raise CompileError(f"running compiled graphs needs apache-tvm 0.27 ({e}); use backend='numpy' "
                               f"instead") from e
        import ctypes
        for d in tvm_library_dirs():
            path = os.path.join(d, "libtvm_runtime.so")
            if os.path.isfile(path):
                # RTLD_GLOBAL, as tvm's own loader does: exported libraries resolve TVMBackend*
                # symbols against it; a later `import tvm` opens the same file and gets this handle
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                extra = os.path.join(d, "libtvm_runtime_extra.so")
                if os.path.isfile(extra):
                    # the runtime's contrib functions (tvm.contrib.sort.argsort, which sort, argsort,
                    # median and quantile kernels call): registered when the library loads, as
                    # tvm's own loader does (RTLD_LOCAL); 0.6 ms. Without it a library that sorts,
                    # loaded from the disk cache or by gd.load, failed at its first call
                    ctypes.CDLL(extra, mode=ctypes.RTLD_LOCAL)
                break
        else:
            # an unusual layout (a source build): the full import finds its libraries its own way
            load_tvm()
        _runtime = tvm_ffi
        return _runtime


def compiler_loaded() -> bool:
    """Whether the `tvm` package (and with it the compiler library) is imported in this process."""
    return "tvm" in sys.modules


def load_tvm():
    """Import and return the `tvm` module, compiler included (thread settings filled in first)."""
    global _tvm
    if _tvm is not None:
        return _tvm
    # The pool reads the variables when it starts (first parallel kernel), so setting them here
    # still takes effect when the user imported tvm earlier but has run nothing yet.
    runtime_env_defaults()
    from .compile_log import phase
    try:
        with phase("tvm"):  # (a compile's log shows the one-time import apart)
            # (when only tvm_ffi's runtime part was initialised: tvm reads all of it)
            try:
                _complete_tvm_ffi()
            except ImportError:
                # tvm-ffi's submodules import each other: one that another thread imports while
                # the package's __init__ runs here can fail there or here; a second run finds it
                # imported
                _complete_tvm_ffi()
            tvm = _import_hiding_torch("tvm")  # also imports tvm.relax and tvm.runtime.vm
    except ImportError as e:  # pragma: no cover - apache-tvm is a declared dependency
        from ..errors import CompileError
        raise CompileError(f"the TVM backend needs apache-tvm 0.27 ({e}); use backend='numpy' instead") from e
    _tvm = tvm
    return _tvm


_VERSION_RE = r"""^__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]"""
_version = None


def tvm_version() -> str:
    """The installed TVM version string, without importing TVM: read from the package's
    _version.py (a file read; importlib.metadata scans every installed distribution), else
    from the package metadata."""
    global _version
    if _version is not None:
        return _version
    import re
    for d in tvm_library_dirs():
        path = os.path.join(os.path.dirname(d), "_version.py")
        try:
            with open(path, encoding="utf-8") as f:
                m = re.search(_VERSION_RE, f.read(), re.MULTILINE)
        except OSError:  # not this layout: try the next, then the metadata
            continue
        if m:
            _version = m.group(1)
            return _version
    from importlib.metadata import PackageNotFoundError, version
    try:
        _version = version("apache-tvm")
    except PackageNotFoundError:  # pragma: no cover - a source build without metadata
        _version = str(load_tvm().__version__)
    return _version


class TS:
    """What graphad's TVMScript kernels are decorated with: `@TS.prim_func(private=True,
    s_tir=True)` parses the function as TVMScript's `@T.prim_func(private=True, s_tir=True)` does,
    into the same PrimFunc (tests/test_tir_kernels.py compares them), without its two calls of
    `inspect.stack()` per kernel: one when the decorator is made, one when the parser evaluates the
    decorator to find its dialect. That call reads the source line of every frame of the caller's
    stack: 17 ms under a shallow pytest test, about 100 ms under a deep one, of the 0.12-0.3 s a
    kernel took to parse. The parser reads `private` and `s_tir` from the decorator's text (any
    `<name>.prim_func(...)` call), and finds names used only in annotations (`T.Buffer((B, n), d)`
    under `from __future__ import annotations`) among the defining function's locals, which this
    decorator passes to it (TVM looks them up in the frames of the stack it took)."""

    @staticmethod
    def prim_func(private: bool = False, s_tir: bool = False):
        """The decorator (see the class)."""
        del private, s_tir  # (read from the source by the parser)

        def parse(func):
            from tvm.script.parser.core.entry import parse as parse_script
            from tvm.script.parser.core.utils import inspect_function_capture
            names = inspect_function_capture(func)  # its globals and closure, as T.prim_func's
            for k, v in sys._getframe(1).f_locals.items():  # the function defining the kernel
                names.setdefault(k, v)
            return parse_script(func, names, check_well_formed=True)
        parse.dispatch_token = "tirx"  # what the parser asks of the decorator it evaluates
        return parse


def map_prim_funcs(mod, entries):
    """`mod` with the body of each of its PrimFuncs rewritten by `tvm_ffi.structural_map(body,
    entries, order="post")` (`entries`: [(node type, function of the node)]): a copy holding the
    changed functions, or `mod` itself when nothing changed."""
    import tvm_ffi
    tvm = load_tvm()
    out = None
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            body = tvm_ffi.structural_map(func.body, entries, order="post")
            if not body.same_as(func.body):
                if out is None:
                    out = mod.clone()
                out[gv] = func.with_body(body)
    return mod if out is None else out


_TYPE_INDEX: dict = {}  # callback type -> tvm-ffi type index, for `walk`


def walk(root, callbacks, order: str = "post"):
    """`tvm_ffi.structural_walk(root, callbacks, order=order)`, less its per-call cost.

    tvm-ffi turns every callback's type into a type index (`TypeSchema.from_annotation`) on every
    walk, about 7 us a type: graphad's lowering walks TIR thousands of times per graph (about
    6,300 walks for the digits CNN train step, 19,000 type lookups, most of its schedule rules'
    own time). Here each type's index is looked up once per process and the walk is started
    with tvm-ffi's own entry point; where tvm-ffi lacks the helpers this uses (another
    version), the public function runs instead. `callbacks`: (type or tuple of types, function)
    entries, one or a sequence, as the public function takes them, or one function for any node.
    """
    import tvm_ffi
    st = tvm_ffi.structural
    start = getattr(getattr(st, "_ffi_api", None), "StructuralWalk", None)
    lookup = getattr(st, "_callback_type_to_type_index", None)
    if start is None or lookup is None or order not in ("pre", "post"):
        return tvm_ffi.structural_walk(root, callbacks, order=order)
    if callable(callbacks):
        callbacks = [(object, callbacks)]
    elif isinstance(callbacks, tuple) and len(callbacks) == 2 and callable(callbacks[1]):
        callbacks = [callbacks]
    entries = []
    for types_, fn in callbacks:
        for t in types_ if isinstance(types_, tuple) else (types_,):
            index = _TYPE_INDEX.get(t)
            if index is None:
                index = _TYPE_INDEX[t] = lookup(t, api_name="structural_walk")
            entries.append((index, fn))
    return start(root, entries, [], int(st.WalkOrder.PREORDER if order == "pre" else st.WalkOrder.POSTORDER))
