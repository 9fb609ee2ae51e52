"""Compile targets: the host CPU with its real ISA, or CUDA.

`resolve_target(spec)` turns None / "cpu" / "llvm" / "cuda" / a dict / a tvm Target into a
`tvm.target.Target`. The CPU target comes from `Target.from_device(tvm.cpu())`, so LLVM gets
the host's `mcpu` (AVX-512 where present); the string CLI form `"llvm -mcpu=..."` is rejected by
TVM 0.27 and is not accepted here either. A CUDA target gets the architecture of the local GPU,
or sm_90 when there is none (compiling needs no GPU; running does), and the host CPU as host.
"""
from __future__ import annotations

from functools import lru_cache

from ..errors import CompileError
from ._tvm import load_tvm

DEFAULT_CUDA_ARCH = "sm_90"


@lru_cache(maxsize=None)
def host_target():
    """The host CPU as an LLVM target with its real `mcpu` (cached)."""
    tvm = load_tvm()
    return tvm.target.Target.from_device(tvm.cpu())


@lru_cache(maxsize=None)
def cuda_target(arch: str | None = None):
    """A CUDA target (local GPU's arch, else sm_90) with the host CPU as host."""
    tvm = load_tvm()
    if arch is None:
        dev = tvm.cuda(0)
        if dev.exist:
            try:
                t = tvm.target.Target.from_device(dev)
                return tvm.target.Target(t, host=host_target())
            except Exception:  # pragma: no cover - depends on the driver
                arch = "sm_" + str(dev.compute_version).replace(".", "")
        else:
            arch = DEFAULT_CUDA_ARCH
    # the limits every CUDA GPU since sm_20 has; dlight reads them (and warns when they are unset)
    return tvm.target.Target({"kind": "cuda", "arch": arch, "max_shared_memory_per_block": 49152,
                              "max_threads_per_block": 1024, "thread_warp_size": 32}, host=host_target())


_TARGET_WORDS = ("cpu", "llvm", "host", "cuda", "gpu")


def check_target_spec(spec) -> None:
    """Refuse (CompileError) a target `resolve_target` would refuse, where that can be told
    without loading TVM: an unknown target string, or a value of another type than a string, a
    dict, a TVM Target or None. `gd.set_target` checks it, so a typo is refused where it is
    made, not at the next compilation (a dict's options are checked by TVM then)."""
    if spec is None or isinstance(spec, dict) or hasattr(spec, "kind"):
        return
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in _TARGET_WORDS or s.startswith(("cuda:sm_", "sm_")):
            return
        raise CompileError(f"unknown target {spec!r}: use 'cpu', 'cuda', 'sm_XX', a dict such as "
                           f"{{'kind': 'llvm', 'mcpu': 'skylake-avx512'}} or a tvm.target.Target")
    raise CompileError(f"cannot use {spec!r} as a compile target")


def resolve_target(spec=None):
    """A `tvm.target.Target` for `spec` (None/"cpu"/"llvm" = host CPU, "cuda"/"gpu", dict, Target)."""
    check_target_spec(spec)  # (an unknown string, or a value of another type)
    tvm = load_tvm()
    if spec is None:
        return host_target()
    if isinstance(spec, tvm.target.Target):
        if spec.kind.name == "cuda" and spec.host is None:
            return tvm.target.Target(spec, host=host_target())
        return spec
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("cpu", "llvm", "host"):
            return host_target()
        if s in ("cuda", "gpu"):
            return cuda_target()
        return cuda_target(s.split(":")[-1])  # "sm_XX" / "cuda:sm_XX": check_target_spec took no other
    if isinstance(spec, dict):
        try:
            t = tvm.target.Target(spec)
        except Exception as e:
            raise CompileError(f"bad target {spec!r}: {e}") from None
        return resolve_target(t)
    raise CompileError(f"cannot use {spec!r} as a compile target")


def target_kind(target) -> str:
    """'llvm' or 'cuda' (the device kind a target runs kernels on)."""
    return str(target.kind.name)


def is_gpu(target) -> bool:
    return "gpu" in [str(k) for k in target.keys]


def target_device(target):
    """The TVM device that runs kernels compiled for `target`."""
    tvm = load_tvm()
    return tvm.cuda(0) if target_kind(target) == "cuda" else tvm.cpu(0)


def vector_bits(target) -> int:
    """SIMD register width of an LLVM target: 512 with AVX-512, 256 with AVX2, else 128."""
    tvm = load_tvm()
    try:
        cg = tvm.target.codegen
        if cg.target_has_features("avx512f", target):
            return 512
        if cg.target_has_features("avx2", target) or cg.target_has_features("avx", target):
            return 256
    except Exception:
        pass
    return 128


def cpu_features(target) -> list[str]:
    """Sorted LLVM feature names the target's code may use (empty when unknown)."""
    tvm = load_tvm()
    try:
        return sorted(str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target))
    except Exception:
        return []


# LLVM's optimisation level for CPU kernels. Level 2 against 3 (this project's 2-vCPU Xeon,
# 2026-12-01): first calls 3-13% faster on 16 of the 19 compile-time rows (the MLP gradient at
# depth 16 0.208 -> 0.181 s, at depth 64 0.362 -> 0.319 s, the CNN train step 1.55 -> 1.49 s), the
# others within 5% either way; calls as fast (matmul 2048x32x512 390-416 us both, the MLP and CNN
# train steps, the seed workloads); outputs bit-identical (the 14 seed workloads and three steps
# of both train steps: neither level changes floating-point semantics without fast-math flags).
KERNEL_OPT_LEVEL = 2

# LLVM options for CPU kernels that hold a conditional inside an innermost loop (a pad's or a
# concatenation's guarded read, `if_then_else(cond, x[i], 0)`, in a loop TVM left scalar): LLVM's
# own loop vectorizer off. In TVM 0.27's LLVM, at opt level 2 with AVX-512, it vectorized such a
# loop with masked loads at the wrong address: a pad's interior rows, `x[(i & 3) + 4 * b]` under
# `4 <= i <= 7`, were read from `x[i + 4 * b]` (the vmapped pad of fuzz fixture
# pad_interior_of_batched_rows came out shifted by a batch; opt level 3 happened to be right
# there). Only such builds: elsewhere the vectorizer does real work on the loops TVM leaves
# scalar (measured with it off everywhere, 1 thread: hvp n=2048 9.9 -> 24.2 us per call, batch
# jacobian 12.4 -> 16.7, jacrev 2 heads 16.8 -> 22.5), while the digits CNN train step, whose
# kernels hold 20 such conditionals, ran as fast with it off (1106 against 1109 us).
GUARDED_LOOP_LLVM_OPTIONS = ("-vectorize-loops:bool=false",)
DEFAULT_LLVM_OPTIONS = ("-vectorize-loops:bool=true",)  # LLVM's default, named for every other build


def codegen_target(target, guarded_loops: bool = False):
    """The LLVM target CPU kernels are compiled for: `target` at KERNEL_OPT_LEVEL, unless it names
    an `opt-level` of its own; with GUARDED_LOOP_LLVM_OPTIONS where `guarded_loops` (the kernels
    hold a conditional inside an innermost loop: pipeline.has_guarded_inner_loop), else
    DEFAULT_LLVM_OPTIONS, unless it names LLVM options (`cl-opt`) of its own."""
    if target.kind.name != "llvm":
        return target
    options = "cl-opt" not in target.attrs
    if "opt-level" in target.attrs and not options:
        return target
    spec = dict(target.export())
    spec.setdefault("opt-level", KERNEL_OPT_LEVEL)
    if options:
        # set either way: LLVM's options are process-wide, and TVM sets only those a target names
        # (a build with the vectorizer off must not leave it off for the next)
        spec["cl-opt"] = list(GUARDED_LOOP_LLVM_OPTIONS if guarded_loops else DEFAULT_LLVM_OPTIONS)
    return load_tvm().target.Target(spec)


def with_guarded_loops(target):
    """`target` (made by codegen_target) as codegen_target would make it for kernels with a
    guarded inner loop; a target that named LLVM options of its own is returned as it is."""
    if target.kind.name != "llvm" or list(target.attrs.get("cl-opt", [])) != list(DEFAULT_LLVM_OPTIONS):
        return target
    spec = dict(target.export())
    spec["cl-opt"] = list(GUARDED_LOOP_LLVM_OPTIONS)
    return load_tvm().target.Target(spec)


def at_opt_level(target, level: int):
    """The LLVM target `target` with its `opt-level` attribute set to `level`."""
    tvm = load_tvm()
    spec = dict(target.export())
    spec["opt-level"] = level
    return tvm.target.Target(spec)
