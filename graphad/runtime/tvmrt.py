"""The TVM runtime without the compiler: load a library, make its Relax VM, describe the host.

What a disk-cache hit and `gd.load` need, done with `libtvm_runtime` through tvm-ffi only
(`lowering._tvm.load_runtime`), so that a fresh process that finds its code compiled never
imports the `tvm` package (0.5 s and a 260 MB library mapped). CUDA executables still go through
the `tvm` package (its device support), as does anything that compiles.

`host_fingerprint()` identifies the host CPU for the disk cache's keys without asking LLVM (the
compiler): the same fingerprint means the same CPU model and features, hence the same code.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache

from ..lowering._tvm import load_runtime, tvm_version

KDL_CPU = 1  # DLPack's device type of the host CPU
POOLED_ALLOCATOR = 2  # the Relax VM's default allocator (tvm.runtime.vm.VirtualMachine's)


def is_runtime_module(module) -> bool:
    """Whether `module` is a loaded runtime module (a library), not an in-memory build result."""
    tvm_ffi = load_runtime()
    return isinstance(module, tvm_ffi.Module)


def load_module(path: str):
    """Load the exported shared library at `path` as a runtime module (compiles nothing)."""
    tvm_ffi = load_runtime()
    return tvm_ffi.load_module(os.path.realpath(path))


def cpu_vm_main(module):
    """(vm, main) for a library module on the host CPU: what tvm.runtime.vm.VirtualMachine(module,
    tvm.cpu()) sets up (its executable on the CPU with the pooled allocator), from the runtime alone."""
    vm = module["vm_load_executable"]()
    vm["vm_initialization"](KDL_CPU, 0, POOLED_ALLOCATOR)
    return vm, vm["main"]


@lru_cache(maxsize=None)
def _create_view():
    """The runtime's TVMTensorCreateView and tvm-ffi's Shape, looked up once (`view_as` runs on
    every call of a bfloat16 executable)."""
    tvm_ffi = load_runtime()
    return tvm_ffi.get_global_func("runtime.TVMTensorCreateView"), tvm_ffi.Shape


def view_as(t, dtype: str):
    """A view of tensor `t`'s memory with element type `dtype` of the same width (bfloat16 <->
    uint16 bits: NumPy's DLPack has no bfloat16). tvm.runtime.Tensor's `_create_view` does this,
    but a loaded library's tensors are tvm-ffi's own (the `tvm` package is not imported)."""
    create, shape = _create_view()
    return create(t, shape([int(s) for s in t.shape]), dtype, 0)


def empty(shape, dtype: str):
    """A TVM-owned (so aligned) uninitialised host tensor."""
    tvm_ffi = load_runtime()
    alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
    return alloc(tvm_ffi.Shape([int(s) for s in shape]), tvm_ffi.dtype(dtype), tvm_ffi.device("cpu", 0), None)


@lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset]:
    """(identity text, flags) of the first processor in /proc/cpuinfo; ("", {}) when unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return "", frozenset()
    fields = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        fields[k.strip()] = v.strip()
    ident = "\n".join(f"{k}={fields.get(k, '')}" for k in ("vendor_id", "cpu family", "model", "model name",
                                                             "CPU implementer", "CPU part", "flags", "Features"))
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())
    return ident, flags


@lru_cache(maxsize=None)
def host_fingerprint() -> str | None:
    """A stable identity of the host CPU (architecture, vendor, model, feature flags) and the TVM
    release, or None when /proc/cpuinfo cannot tell (the caller then asks LLVM)."""
    ident, flags = _cpuinfo()
    if not flags:
        return None
    text = f"{platform.machine()}\n{tvm_version()}\n{ident}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _norm(feature: str) -> str:
    return "".join(c for c in feature.lower() if c.isalnum())


# LLVM feature names whose Linux /proc/cpuinfo flag differs by more than punctuation
_LINUX_FLAG = {"sse3": "pni", "bmi": "bmi1", "sha": "shani", "pclmul": "pclmulqdq", "rdrnd": "rdrand",
               "lzcnt": "abm", "sahf": "lahf_lm", "prfchw": "3dnowprefetch", "crc32": "sse4_2"}


def unconfirmed_features(features) -> list[str] | None:
    """Which of the LLVM feature names `features` the host's /proc/cpuinfo flags do not show, or
    None when the flags cannot be read (the caller then asks LLVM)."""
    _, flags = _cpuinfo()
    if not flags:
        return None
    have = {_norm(f) for f in flags}
    return sorted(f for f in features if _norm(_LINUX_FLAG.get(f, f)) not in have)


def target_arch(target_text: str) -> str | None:
    """The architecture (mtriple's first part) of a target as str(tvm Target) prints it (JSON), or
    None when it cannot be read without TVM."""
    try:
        spec = json.loads(target_text)
    except ValueError:
        return None
    triple = spec.get("mtriple") if isinstance(spec, dict) else None
    return str(triple).split("-")[0] if triple else None


def host_arch() -> str:
    """The host architecture as an LLVM triple names it (x86_64, aarch64, ...)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
