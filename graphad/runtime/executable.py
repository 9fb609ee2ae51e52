"""Executable: a compiled graph on the Relax VM, called with flat inputs, returning graphad Tensors.

`compile_graph(graph, target)` lowers, compiles (through the memory and disk caches of
`runtime.cache`) and returns an `Executable`. Calling it does only a signature check and the
flattening of results (and, for a bytecode build with large outputs, a call of its release
function: `_releasing`):
* inputs (graphad Tensors, NumPy arrays or anything `np.asarray` takes) go to TVM zero-copy via
  DLPack when they are C-contiguous and 64-byte aligned, otherwise as an aligned copy (TVM's
  AVX-512 kernels crash on misaligned buffers; graphad Tensors are always aligned); a Tensor
  keeps its DLPack view (`_dl`) for later calls;
* outputs are TVM-owned, 64-byte aligned tensors wrapped as graphad Tensors without a copy
  (`np.from_dlpack` keeps the TVM tensor alive). Outputs that may alias an input, a baked-in
  constant or another output are copied, so every returned Tensor owns its buffer.
`caller()` binds all of this once for a call site that already holds positional Tensors (the
hot entry of a staged GraphFunction). The `vm["main"]` function handle is looked up once. A lock
serialises calls of one Executable (one Relax VM instance is not re-entrant). TVM is imported
only when an Executable is made.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from .. import dtypes as _dt
from ..errors import CompileError, GraphadError, warn_at_user_line
from ..lowering import compile_log
from .gc_defer import deferred_collection
from ..tensor import DATA_LOCK, Tensor, aligned_copy, aligned_empty

_ALIGN = 64


def _type_str(shape, dtype) -> str:
    return f"{_dt.as_dtype(dtype).short}[{','.join(str(s) for s in shape)}]"


def graph_meta(graph, copy_outputs, target, packed=None) -> dict:
    """The JSON-able description an Executable needs (stored in cache entries and AOT artifacts)."""
    from ..lowering.targets import target_kind
    return {
        "packed": packed,
        "name": graph.name,
        "inputs": [{"name": n, "shape": list(v.type.shape), "dtype": v.type.dtype.name}
                   for n, v in zip(graph.input_names, graph.inputs)],
        "outputs": [{"shape": list(v.type.shape), "dtype": v.type.dtype.name, "copy": bool(c)}
                    for v, c in zip(graph.outputs, copy_outputs)],
        "target": str(target),
        "device": "cuda" if target_kind(target) == "cuda" else "cpu",
    }


# Outputs of at least this many bytes are released from a bytecode VM after each call (below)
RELEASE_FROM_BYTES = 64 * 1024
# = lowering.pipeline.RELEASE_FUNCTION, spelled here so that loading a library does not import the
# compile pipeline (tests/test_compile_time.py checks the two agree)
RELEASE_FUNCTION = "__graphad_release"


def _output_bytes(meta) -> int:
    return sum(int(np.prod(o["shape"], dtype=np.int64)) * np.dtype(_dt.as_dtype(o["dtype"]).np).itemsize
               for o in meta["outputs"])


def _releasing(fn, vm, meta):
    """`fn` (the VM's main), or, for a bytecode build whose outputs are large, `fn` followed by a
    call of the build's release function: the bytecode VM keeps the value main returned until its
    next call returns, so each call's outputs were allocated while the previous call's were still
    alive, even when the caller had dropped them (their memory in use twice over, and calls
    alternating between two buffers; lowering/pipeline.py `with_release_function`). Compiled-mode
    builds, and libraries made before the function existed, have no such function: `fn` itself."""
    if meta.get("device", "cpu") != "cpu" or _output_bytes(meta) < RELEASE_FROM_BYTES:
        return fn
    try:
        release = vm[RELEASE_FUNCTION]
    except AttributeError:  # "Module has no function ...": compiled exec mode, or an older library
        return fn

    def run(*args):
        res = fn(*args)
        release()
        return res
    return run


def _host(t) -> np.ndarray:
    """A NumPy view of TVM tensor `t` (bfloat16 through a uint16 view of the same bits: NumPy's
    DLPack import has no bfloat16)."""
    try:
        return np.from_dlpack(t)
    except RuntimeError:
        if str(t.dtype) != "bfloat16":
            raise
        from . import tvmrt
        return np.from_dlpack(tvmrt.view_as(t, "uint16")).view(_dt.numpy_bfloat16())


def _packed_views(meta):
    """For a packed result (meta["packed"] = element offsets): per output (slice, shape or None
    when the slice already has the output's shape, dtype); else None."""
    offsets = meta.get("packed")
    if not offsets:
        return None
    views = []
    for off, d in zip(offsets, meta["outputs"]):
        shape = tuple(d["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        views.append((slice(off, off + n), None if shape == (n,) else shape, _dt.as_dtype(d["dtype"])))
    return tuple(views)


def _unpack(arr, views) -> list[Tensor]:
    """Tensors viewing their parts of one packed output array (which they keep alive)."""
    out = []
    new = Tensor.__new__
    for sl, shape, d in views:
        v = arr[sl]
        t = new(Tensor)
        t._data = v if shape is None else v.reshape(shape)
        t._dtype = d
        t._dl = None
        out.append(t)
    return out


class Executable:
    """A compiled graph. `exe(flat_inputs) -> list[Tensor]`."""

    def __init__(self, module, meta: dict, *, lib_bytes: bytes | None = None, report: dict | None = None,
                 compile_seconds: float = 0.0, source: str = "compiled"):
        from . import threads, tvmrt
        from ..lowering._tvm import load_runtime
        tvm_ffi = load_runtime()
        self.meta = meta
        self.report = report or {}
        self.compile_seconds = compile_seconds
        self.source = source  # "compiled" | "disk-cache" | "artifact"
        self._module = module
        self._lib_bytes = lib_bytes
        self._device_kind = meta.get("device", "cpu")
        self._tvm = None  # the tvm package: only for CUDA and in-memory builds (it is imported then)
        try:
            if self._device_kind == "cpu" and tvmrt.is_runtime_module(module):
                # a loaded library on the CPU (disk cache, artifact): the runtime alone runs it
                self._vm, self._fn = tvmrt.cpu_vm_main(module)
            else:
                from ..lowering._tvm import load_tvm
                tvm = self._tvm = load_tvm()
                self._device = tvm.cuda(0) if self._device_kind == "cuda" else tvm.cpu(0)
                self._vm = tvm.runtime.vm.VirtualMachine(module, self._device)
                self._fn = self._vm["main"]
        except Exception as e:
            lines = str(e).strip().splitlines()
            raise CompileError(f"cannot load the compiled graph on {self._device_kind}: "
                               f"{lines[-1] if lines else type(e).__name__}") from e
        self._read_signature(meta)
        # how many TVM threads a call uses (runtime/threads.py): chosen by the work it does
        self._threads = threads.choose(meta, lib_bytes)
        run = _releasing(self._fn, self._vm, meta)
        self._run = run if self._threads.threads == 0 else threads.bind(self._threads, run)
        self._lock = threading.Lock()
        # bound once: `with self._lock` costs about 0.1 us more per call than these
        self._acquire, self._release = self._lock.acquire, self._lock.release
        from tvm_ffi import container as _container
        self._from_dlpack = tvm_ffi.from_dlpack
        # direct element access of a returned tuple (Array.__getitem__'s Python helper costs ~2 us)
        self._array_get = _container._ffi_api.ArrayGetItem

    @property
    def threads(self) -> int:
        """The most TVM threads a call of this executable uses (1 when it has no parallel loop)."""
        return max(1, self._threads.threads)

    def _read_signature(self, meta):
        """The input signature and output handling that meta describes."""
        self._in_sig = [(tuple(d["shape"]), np.dtype(_dt.as_dtype(d["dtype"]).np)) for d in meta["inputs"]]
        self._in_gdtypes = [_dt.as_dtype(d["dtype"]) for d in meta["inputs"]]
        self._in_names = [d.get("name") or f"arg{i}" for i, d in enumerate(meta["inputs"])]
        self._out = [(_dt.as_dtype(d["dtype"]), bool(d.get("copy", False))) for d in meta["outputs"]]
        self._packed = _packed_views(meta)
        self._single = len(self._out) == 1 or self._packed is not None  # the VM returns one tensor
        self._dev_inputs = None  # device copies of the inputs (CUDA), made at the first call

    # ------------------------------------------------------------ calling
    def __call__(self, flat_inputs) -> list[Tensor]:
        sig = self._in_sig
        if len(flat_inputs) != len(sig):
            raise GraphadError(f"@{self.meta.get('name', 'main')} takes {len(sig)} inputs, got {len(flat_inputs)}")
        gsig = self._in_gdtypes
        args = []
        for i, a in enumerate(flat_inputs):
            if isinstance(a, Tensor) and a._dtype is gsig[i] and a._data.shape == sig[i][0]:
                dl = a._dl
                args.append(dl if dl is not None else self._tensor_arg(a))
                continue
            arr = a._data if isinstance(a, Tensor) else a
            if type(arr) is not np.ndarray:
                arr = np.asarray(arr)
            shape, dtype = sig[i]
            if arr.shape != shape or arr.dtype != dtype:
                raise self._bad_input(i, arr)
            args.append(self._array_arg(arr))
        if self._device_kind != "cpu":
            return self._call_device(args)
        self._acquire()
        try:
            res = self._run(*args)
        except IndexError as e:
            raise _kernel_error(e, self.meta) from None
        finally:
            self._release()
        if self._packed is not None:
            return _unpack(_host(res), self._packed)
        if self._single:
            return [self._wrap_output(res, *self._out[0])]
        get = self._array_get
        return [self._wrap_output(get(res, i), d, copy) for i, (d, copy) in enumerate(self._out)]

    def caller(self, n_args: int, captures, pack=None):
        """A lean entry for one call site: `call(args)` runs the graph on the tuple `args` of
        positional Tensors followed by `captures`, or returns None, having run nothing, when an
        argument is not a Tensor of the expected shape and dtype (the caller then takes the
        checked path, which reports the error). `pack` turns the output Tensors into the result:
        None gives a tuple, "leaf" the one output itself, a callable is applied to the list.

        Everything `__call__` looks up per call is bound here once; with the shape/dtype check it
        is the whole per-call cost of a cached function besides the VM itself. None for a graph
        that does not run on the CPU (the device path copies in and out anyway), and for
        bfloat16 results (NumPy's DLPack import needs the uint16 detour of `_host`).
        """
        if self._device_kind != "cpu" or n_args + len(captures) != len(self._in_sig):
            return None
        if any(d is _dt.bfloat16 for d, _ in self._out):
            return None
        if pack == "leaf" and len(self._out) != 1:
            return None
        sig = tuple((shape, d) for (shape, _), d in zip(self._in_sig, self._in_gdtypes))
        extra = tuple(captures)
        tensor_arg, fn, acquire, release = self._tensor_arg, self._run, self._acquire, self._release
        get, wrap, new, from_dlpack = self._array_get, self._wrap_output, Tensor.__new__, np.from_dlpack
        outs = tuple((i, d, copy) for i, (d, copy) in enumerate(self._out))
        single = self._single
        packed = self._packed
        meta = self.meta
        plain_one = single and packed is None and not outs[0][2]  # the common case: no per-output loop
        d0 = outs[0][1] if outs else None

        def call(args):
            if len(args) != n_args:
                return None
            dls = []
            for a, (shape, d) in zip(args + extra, sig):
                if not isinstance(a, Tensor) or a._dtype is not d or a._data.shape != shape:
                    return None
                dl = a._dl
                dls.append(dl if dl is not None else tensor_arg(a))
            acquire()
            try:
                res = fn(*dls)
            except IndexError as e:
                raise _kernel_error(e, meta) from None
            finally:
                release()
            if packed is not None:
                out = _unpack(from_dlpack(res), packed)
            elif plain_one:
                t = new(Tensor)  # what _wrap_output does, inlined
                t._data = from_dlpack(res)
                t._dtype = d0
                t._dl = res
                if pack == "leaf":
                    return t
                out = [t]
            else:
                out = [wrap(res if single else get(res, i), d, copy) for i, d, copy in outs]
            if pack is None:
                return tuple(out)
            return out[0] if pack == "leaf" else pack(out)
        return call

    @staticmethod
    def _wrap_output(t, d, copy: bool) -> Tensor:
        """The Tensor for output `t` (a TVM tensor) of dtype `d`: a private copy when it may alias
        an input, a constant or another output, else a view of t itself."""
        arr = _host(t)
        if copy:
            return Tensor(_raw=aligned_copy(arr), _dtype=d)
        out = Tensor.__new__(Tensor)  # Tensor.__init__ would cost more than the rest
        out._data = arr
        out._dtype = d
        out._dl = t
        return out

    def _tensor_arg(self, a: Tensor):
        """The TVM view of a Tensor's buffer, kept on the Tensor (`_dl`) for later calls."""
        arr = a._data
        view = self._view_of(arr)
        if view is None:
            return self._copy_in(arr)  # not kept: it would miss in-place updates of the Tensor
        with DATA_LOCK:
            if a._data is arr:  # (not when another thread's set_data replaced the buffer meanwhile)
                a._dl = view
        return view

    def _array_arg(self, arr: np.ndarray):
        """A zero-copy TVM view of `arr`, or an aligned copy when TVM refuses it."""
        view = self._view_of(arr)
        return view if view is not None else self._copy_in(arr)

    def _view_of(self, arr: np.ndarray):
        """A zero-copy TVM view of `arr`, or None where TVM refuses it (64-byte alignment and
        C-contiguity are required). bfloat16 goes over as uint16 bits, viewed back as bfloat16.

        Never for a 0-size array: NumPy gives it arbitrary strides (shape (3, 0) has strides
        (4, 4)), which DLPack carries over and the compiled kernels then reject as not compact;
        `_copy_in` makes a TVM-owned (compact) empty tensor instead.
        """
        if arr.size == 0:
            return None
        try:
            if arr.dtype.kind == "V" and _dt.is_bfloat16(arr.dtype):
                from . import tvmrt
                bits = self._from_dlpack(arr.view(np.uint16), require_alignment=_ALIGN, require_contiguous=True)
                return tvmrt.view_as(bits, "bfloat16")
            return self._from_dlpack(arr, require_alignment=_ALIGN, require_contiguous=True)
        except (ValueError, RuntimeError, TypeError, BufferError):
            return None

    def _copy_in(self, arr):
        """An aligned, C-contiguous TVM tensor holding a copy of `arr`."""
        if arr.size:
            view = self._view_of(aligned_copy(arr))
            if view is not None:
                return view
        from .tvmrt import empty
        t = empty(arr.shape, str(arr.dtype))  # TVM-owned memory is always aligned
        if arr.size:
            t.copyfrom(np.asarray(arr, order="C"))  # (ascontiguousarray makes 0-d 1-d)
        return t

    def _call_device(self, args):
        """Copy the host inputs into this executable's device buffers, run, copy the outputs back.

        The input buffers are allocated once (a device allocation costs more than a small copy)
        and reused under the lock; each output is copied once, straight into a fresh aligned host
        array that the returned Tensor owns.
        """
        tvm = self._tvm
        with self._lock:
            dargs = self._dev_inputs
            if dargs is None:
                dargs = self._dev_inputs = [tvm.runtime.empty(s, str(d), device=self._device)
                                            for s, d in self._in_sig]
            for dst, a in zip(dargs, args):
                dst.copyfrom(a)
            res = self._fn(*dargs)
            outs = [res] if self._single else [self._array_get(res, i) for i in range(len(self._out))]
            hosts = []
            for t, (d, _) in zip(outs, self._out):
                host = aligned_empty(tuple(t.shape), d.np)  # a packed buffer has its outputs' one dtype
                if host.size:
                    t.copyto(self._view_of(host))
                hosts.append(host)
        if self._packed is not None:
            return _unpack(hosts[0], self._packed)
        return [Tensor(_raw=h, _dtype=d) for h, (d, _) in zip(hosts, self._out)]

    def _bad_input(self, i, arr):
        shape, dtype = self._in_sig[i]
        want = _type_str(shape, dtype)
        try:
            got = _type_str(arr.shape, arr.dtype)
        except Exception:
            got = f"{arr.dtype}{list(arr.shape)}"
        return GraphadError(f"@{self.meta.get('name', 'main')} input {i} ({self._in_names[i]}) expects {want}, "
                            f"got {got}")

    # ------------------------------------------------------------ description
    @property
    def in_types(self) -> list[str]:
        return [_type_str(s, d) for s, d in self._in_sig]

    @property
    def out_types(self) -> list[str]:
        return [_type_str(d["shape"], d["dtype"]) for d in self.meta["outputs"]]

    @property
    def target(self) -> str:
        return self.meta["target"]

    def __repr__(self):
        return (f"<Executable @{self.meta.get('name', 'main')} ({', '.join(self.in_types)}) -> "
                f"({', '.join(self.out_types)}) on {self._device_kind}, {self.source}>")

    # ------------------------------------------------------------ persistence
    def library_bytes(self) -> bytes:
        """The compiled code as a shared library (the bytes `export_library` writes)."""
        if self._lib_bytes is None:
            self._lib_bytes = export_library_bytes(self._module)
        return self._lib_bytes

    def export(self, path: str) -> str:
        """Write the compiled code as a shared library to `path` (loadable with tvm.runtime.load_module)."""
        data = self.library_bytes()
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path


def _scratch_file():
    """An anonymous read-write binary file: in memory where Linux offers it (memfd_create), else
    a temporary file (tempfile imports shutil, bz2, lzma and random: 2-4 ms of a fresh process's
    first load)."""
    if hasattr(os, "memfd_create"):
        try:
            return open(os.memfd_create("graphad-stderr", getattr(os, "MFD_CLOEXEC", 0)), "w+b")
        except OSError:  # (a seccomp filter, an old kernel): the portable way below
            pass
    import tempfile
    return tempfile.TemporaryFile()


@contextlib.contextmanager
def quiet_scope_logs():
    """Drop TVM's "Warning: Scope Saving:/Scope Loaded:" lines, printed to fd 2 on every export/load.

    They are informational noise for users; everything else TVM writes to stderr meanwhile is
    passed through unchanged after the call.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to filter
        yield
        return
    with _scratch_file() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = [ln for ln in text.splitlines(True) if "Warning: Scope Saving" not in ln
                    and "Warning: Scope Loaded" not in ln]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_library_file(path: str, device: str = "cpu"):
    """Load an exported shared library as a TVM runtime module (no compilation). A CPU library
    needs the TVM runtime alone, never the compiler (runtime/tvmrt.py); a CUDA one goes through
    the tvm package, which brings TVM's CUDA support."""
    from .tvmrt import load_module
    if device != "cpu":
        from ..lowering._tvm import load_tvm
        load_tvm()
    with quiet_scope_logs():
        return load_module(path)


def load_library_bytes(data: bytes, directory: str | None = None, device: str = "cpu"):
    """Load shared-library bytes: written to a private temp file, loaded, and the file removed."""
    import tempfile
    fd, path = tempfile.mkstemp(prefix=".graphad-lib-", suffix=".so", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_library_file(path, device)
    finally:
        try:
            os.unlink(path)  # the loaded mapping stays valid
        except OSError:
            pass


def _lower_and_build(graph, target, schedule: bool, kernels=None):
    """(VMExecutable, meta, report) for `graph`; nothing is JIT-compiled or loaded yet. With
    `kernels` (a kernel store) the report's `link_plan` holds the kernel objects to link."""
    from ..lowering import lower_graph_info
    from ..lowering.pipeline import build
    from ..lowering.targets import is_gpu, resolve_target
    tgt = resolve_target(target)
    lowered = lower_graph_info(graph, gpu=is_gpu(tgt))
    extra = {"kernels": kernels} if kernels is not None and not is_gpu(tgt) else {}
    ex, report = build(lowered.module, tgt, schedule=schedule, **extra)
    meta = graph_meta(graph, lowered.copy_outputs, tgt, lowered.packed)
    if "parallel_loops" in report:  # for runtime/threads.py, kept with the library
        meta["parallel_loops"] = bool(report["parallel_loops"])
    return ex, meta, report


# Process-wide: TVM keeps global state while it lowers and builds (the Relax BlockBuilder stack,
# the current PassContext); two threads compiling different graphs at once corrupted each other's
# build (raw AssertionErrors). Only compilation takes it: loading a cached library and running an
# Executable do not. Re-entrant, so a compile step that compiles again cannot deadlock.
COMPILE_LOCK = threading.RLock()


def _new_compile_lock_in_child() -> None:
    # a child forked while another thread compiled would inherit COMPILE_LOCK held by a thread
    # that does not exist there, and its first compile would wait forever
    global COMPILE_LOCK
    COMPILE_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_compile_lock_in_child)


def _unavailable(message: str) -> CompileError:
    """The CompileError of an export that cannot happen here at all (no room to write the library,
    no C compiler), marked so that the kernel-cache build leaves the explaining to the ordinary one."""
    e = CompileError(message)
    e.export_unavailable = True
    return e


@contextlib.contextmanager
def exported_library(module, link_plan=None):
    """The path of `module` exported as a shared library into a private temporary directory
    (removed on exit). A CompileError, never a process exit, when it cannot be made: no room to
    write it (checked before LLVM writes anything), no C compiler, a failing linker.

    `link_plan` (lowering/kernel_objects.LinkPlan): kernel objects, written into that directory
    and linked in, with the plan's linker options."""
    # the linker (subprocess and its helpers) is imported by what exports, not by a process that
    # only loads libraries: a few ms of a warm process's start-up
    from ..lowering.linker import create_shared, export_workspace
    workspace, why = export_workspace()
    if workspace is None:
        raise _unavailable(f"cannot export the compiled library: no room to write it ({why})")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="graphad-export-", dir=workspace, ignore_cleanup_errors=True) as d:
        path = os.path.join(d, "lib.so")
        extra = {}
        if link_plan is not None:
            # the kernel packs, and the groups of a split build (lowering/parallel_build.py), their
            # object code made in the build's threads
            addons = _write_objects(d, "kernel", [data for _, data in link_plan.objects])
            addons += _write_objects(d, "group", [data for data, _ in link_plan.modules])
            extra = {"addons": addons, "options": list(link_plan.options)}
        try:
            with quiet_scope_logs(), compile_log.phase("export"):
                module.export_library(path, workspace_dir=d, fcompile=create_shared, fpack_imports=_pack_imports,
                                      **extra)
            if link_plan is not None and link_plan.store is not None:
                if link_plan.new_keys:
                    _store_pack(d, link_plan)
                for data, keys in link_plan.modules:
                    link_plan.store.put(list(keys), data)
        except TypeError as e:  # tvm's get_cc() found no compiler
            raise _unavailable("exporting a compiled graph needs a C compiler (set CC/CXX or install "
                               f"gcc/clang): {e}") from e
        except (OSError, RuntimeError) as e:  # the linker failed, the directory vanished, ...
            lines = str(e).strip().splitlines()
            raise CompileError("cannot export the compiled library: "
                               f"{lines[-1] if lines else type(e).__name__}") from e
        yield path


def _write_objects(directory: str, stem: str, objects: list[bytes]) -> list[str]:
    """Write each object file of `objects` into `directory` (`<stem><i>.o`): their paths."""
    paths = []
    for i, data in enumerate(objects):
        paths.append(os.path.join(directory, f"{stem}{i}.o"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    return paths


def _pack_imports(module, is_system_lib, prefix, workspace_dir):
    """TVM's packing of the VM bytecode (and any device code) into an object file of the library,
    as export_library does it, but never as a "system library": TVM guesses that from the module
    having a start-up function, which every module compiled at opt level 0 keeps (an empty one;
    level 3 removes it), and a system library registers its blob in a process-wide table, where
    the next library's replaces it with a warning on stderr (and a pointer into a library that
    may be unloaded later). graphad's libraries are always loaded as files."""
    import json

    from tvm.runtime import _ffi_api

    from ..lowering.linker import create_shared
    target = None
    for m in module._collect_dso_modules():
        if m.kind == "llvm":
            target = m.get_function("_get_target_string")()
            break
    if target is None:
        target = json.dumps({"kind": "llvm", "mtriple": create_shared.get_target_triple().strip()})
    path = os.path.join(workspace_dir, f"{prefix}devc.o")
    _ffi_api.ModulePackImportsToLLVM(module, False, target, prefix).write_to_file(path)
    return path


def _store_pack(workspace: str, link_plan) -> None:
    """Give the kernel store the object code the export just made of the executable's own
    library (TVM writes it as lib0.o: the only module of the import tree that compiles to one)."""
    objs = [n for n in os.listdir(workspace) if n.startswith("lib") and n.endswith(".o")]
    if objs != ["lib0.o"]:
        return  # another layout than TVM 0.27's: nothing kept, nothing wrong
    with open(os.path.join(workspace, "lib0.o"), "rb") as f:
        link_plan.store.put(list(link_plan.new_keys), f.read())


def export_library_bytes(module) -> bytes:
    """The bytes of `module` exported as a shared library (see `exported_library`)."""
    with exported_library(module) as path:
        with open(path, "rb") as f:
            return f.read()


def build_executable(graph, target=None, *, schedule: bool = True) -> Executable:
    """Lower and compile `graph` now, bypassing the caches (the host code is JIT-compiled).

    Holds COMPILE_LOCK for the lowering, the build and the JIT (safe from any thread)."""
    global _NO_LINKER
    import time

    from ..lowering.parallel_build import SPLIT_JIT
    t0 = time.perf_counter()
    with COMPILE_LOCK:
        # a build big enough is split over threads and linked as a library instead of JIT-compiled
        # (lowering/parallel_build.py), unless linking was found impossible here (no C compiler)
        token = SPLIT_JIT.set(not _NO_LINKER)
        try:
            ex, meta, report = _lower_and_build(graph, target, schedule)
        finally:
            SPLIT_JIT.reset(token)
        plan = report.pop("link_plan", None)
        if plan is not None:
            try:
                return _linked(ex, plan, meta, report, t0, "split over threads")
            except Exception as e:  # no C compiler, an unusual linker...: the ordinary build
                # and every later one in one piece: what failed to link or load here would again
                _NO_LINKER = True
                if not getattr(e, "export_unavailable", False):
                    _kernel_link_failed(e, split_jit=True)
                ex, meta, report = _lower_and_build(graph, target, schedule)
        with compile_log.phase("load"):  # the JIT: LLVM emits the machine code here
            return make_executable(ex, meta, report=report, compile_seconds=time.perf_counter() - t0)


_NO_LINKER = False  # set once a split build could not be exported, linked or loaded: JIT builds stay whole


def _linked(ex, plan, meta, report, t0, how: str) -> Executable:
    """The Executable of `ex` linked with the kernel objects of `plan` (lowering/kernel_objects.py)
    into a shared library, loaded; the library's bytes are kept."""
    import time
    with exported_library(ex, plan) as path, compile_log.phase("load"):
        with open(path, "rb") as f:
            data = f.read()
        module = load_library_file(path)
    with compile_log.phase("load"):
        return make_executable(module, meta, lib_bytes=data, report={**report, "library": how},
                               compile_seconds=time.perf_counter() - t0)


def build_library(graph, target=None, *, schedule: bool = True, kernels=None) -> Executable:
    """Compile `graph`, export it as a shared library and run that library (kept as `library_bytes`).

    For the disk cache: LLVM generates the host code once, for the library, instead of once for
    the JIT and again for the export. Falls back to the JIT when the library cannot be made or
    loaded here (no C compiler; a CUDA library on a machine without a GPU; no room to write it:
    then `report["library"]` says why and the Executable has no library bytes to store). Holds
    COMPILE_LOCK like `build_executable`.

    `kernels` (runtime/kernel_cache.py; CPU only): compile the graph kernel by kernel through
    that store, linking the objects of kernels compiled before. Should that library fail to
    link or load, the graph is compiled again the ordinary way (never run half-linked).
    """
    import time
    t0 = time.perf_counter()
    with COMPILE_LOCK:
        built = None
        if kernels is not None:
            try:
                ex, meta, report = _lower_and_build(graph, target, schedule, kernels)
                plan = report.pop("link_plan", None)
                if plan is None:  # no kernels (or a GPU target): `ex` is whole, export it as usual
                    built = ex, meta, report
                    raise _NoKernels
                return _linked(ex, plan, meta, report, t0, "exported from kernel objects")
            except _NoKernels:
                pass
            except Exception as e:  # an unusual linker...: the ordinary build below
                if not getattr(e, "export_unavailable", False):  # else the ordinary path says why
                    _kernel_link_failed(e)
                    forget = getattr(kernels, "forget_served", None)
                    if forget is not None:
                        forget()
        ex, meta, report = built or _lower_and_build(graph, target, schedule)
        if device_present(meta):
            try:
                with exported_library(ex) as path, compile_log.phase("load"):
                    with open(path, "rb") as f:
                        data = f.read()
                    module = load_library_file(path, meta.get("device", "cpu"))  # the mapping outlives the file
                with compile_log.phase("load"):
                    return make_executable(module, meta, lib_bytes=data, report={**report, "library": "exported"},
                                           compile_seconds=time.perf_counter() - t0)
            except Exception as e:  # no C compiler, no room to write, ...: run the in-memory executable
                report = {**report, "library": f"not exported: {e}"}
        return make_executable(ex, meta, report=report, compile_seconds=time.perf_counter() - t0)


class _NoKernels(Exception):
    """The kernel-object build had nothing to link: its executable is complete."""


def _kernel_link_failed(e: Exception, split_jit: bool = False) -> None:
    """Warn, once per process, that a library could not be linked from kernel objects (`split_jit`:
    a build split over threads without the disk cache, after which such builds stay whole)."""
    global _KERNEL_LINK_WARNED
    if not _KERNEL_LINK_WARNED:
        _KERNEL_LINK_WARNED = True
        lines = str(e).strip().splitlines()
        then = ("Builds without the disk cache stay whole in this process from now on." if split_jit else
                "GRAPHAD_NO_KERNEL_CACHE=1 skips the kernel cache's attempts.")
        warn_at_user_line("graphad: a library could not be linked from kernel objects (cached kernels, or a "
                          "build split over threads); the graph was compiled whole instead "
                          f"({lines[-1][:300] if lines else type(e).__name__}). {then}")


_KERNEL_LINK_WARNED = False


def device_present(meta: dict) -> bool:
    """Whether this process can run code compiled for meta's device."""
    if meta.get("device", "cpu") == "cpu":
        return True
    from ..lowering._tvm import load_tvm
    return bool(load_tvm().cuda(0).exist)


def make_executable(module, meta: dict, **kw) -> "Executable":
    """An Executable, or a saveable-only one when meta's device is absent (CUDA without a GPU)."""
    if not device_present(meta):
        exe = _Unloadable(module, meta, kw.get("report"), kw.get("compile_seconds", 0.0))
        exe._lib_bytes = kw.get("lib_bytes")
        return exe
    return Executable(module, meta, **kw)


class _Unloadable(Executable):
    """A CUDA executable compiled on a machine without a GPU: it can be saved, not run."""

    def __init__(self, module, meta, report, seconds):  # noqa: D401 - no VM is created
        self.meta = meta
        self.report = report
        self.compile_seconds = seconds
        self.source = "compiled"
        self._module = module
        self._lib_bytes = None
        self._device_kind = meta["device"]
        self._read_signature(meta)

    def __call__(self, flat_inputs):
        raise GraphadError(f"this graph was compiled for {self.meta['device']} ({self.meta['target']}), "
                           f"but no such device is present; save it with save_executable and run it there")


def graph_for_lowering(graph):
    """`graph` as the lowering takes it. Custom-derivative calls become their function (then
    simplify/cse/dce again: cse merges the function with the copy a vjp rule recomputed for its
    residuals); a scan that another scan covers is merged into it (control/merge.py); checkpoint
    regions are inlined last (after cse, so the recomputation a checkpoint's vjp asked for stays)."""
    from ..control.custom import inline_custom_calls
    from ..control.merge import merge_loops
    from ..passes.inline import inline_regions
    flat = inline_custom_calls(graph)
    if flat is not graph:
        from ..passes.manager import run_default_pipeline
        graph = run_default_pipeline(flat)
    # a scan a vjp reran to stack its carries also stands for the primal scan: one forward pass
    return inline_regions(merge_loops(graph))


def compile_graph(graph, target=None, *, cache: bool = True) -> Executable:
    """Compile `graph` for `target` (None = host CPU, "cuda", a dict or tvm Target).

    With `cache` (the default) the in-memory and on-disk caches of `graphad.runtime.cache` are
    consulted first and filled afterwards.
    """
    from .host import compile_control_flow, has_control_flow
    # GRAPHAD_LOG_COMPILE=1 prints where this goes, phase by phase (lowering/compile_log.py);
    # the compile's reference cycles die young (gc_defer.py)
    with deferred_collection(), compile_log.record(graph.name) as rec:
        with compile_log.phase("inline"):
            graph = graph_for_lowering(graph)
        rec.info.setdefault("nodes", len(graph.nodes))
        if has_control_flow(graph):  # native loops and/or a host program (runtime/host.py)
            return compile_control_flow(graph, target, cache)
        if not cache:
            return build_executable(graph, target)
        from .cache import cached_compile
        return cached_compile(graph, target)


def _kernel_error(e: IndexError, meta: dict) -> Exception:
    """The GraphadError for an IndexError a kernel raised: a failed index check
    (lowering/index_check.py) becomes IndexOutOfRangeError naming the op and the graph; any other
    is returned as it is."""
    from ..lowering.index_check import check_message, is_check_error
    if not is_check_error(e):
        return e
    from ..errors import IndexOutOfRangeError
    return IndexOutOfRangeError(f"{check_message(e)} (in the compiled graph @{meta.get('name', 'main')})")
