"""Compile pipelines: Relax module -> Relax VM executable, for the host CPU or CUDA.

CPU:  LegalizeOps, AnnotateTIROpPattern, FuseOps, FuseTIR (the Relax "zero" pipeline without
      FoldConstant, which would bake creation primitives such as eye(4096) into the library as
      constants), then graphad's schedule rules per PrimFunc (schedule.py), then TVM's
      "default_build" pipeline (VM lowering, memory planning) and LLVM codegen for the host's
      real ISA. Should the scheduled module fail to compile, the unscheduled one is compiled.
CUDA: TVM's default GPU pipeline (legalize, fuse, dlight default schedules: Matmul, GEMV,
      Reduction, GeneralReduction, Fallback, then VM lowering), rebuilt here with two changes:
      no FoldConstant (as on the CPU), and each dlight rule guarded, so that a rule that fails
      inside (TVM 0.27's GEMV rule asserts on some fused mat-vec epilogues) counts as "does not
      apply" and the next rule schedules the kernel. Compiling needs no GPU; running needs one.

`prepare_module(mod, target)` runs everything up to the build step (CPU: fuse, schedule, poison,
IEEE guard; CUDA: library dispatch, legalize, fuse, dlight, IEEE guard) and returns the final TIR
module; `build` compiles exactly that module, and `graphad lower --emit tir` prints exactly that
module, so what the CLI shows is what compiles (tests/test_cli.py compares the two).
"""
from __future__ import annotations

import time

from ..errors import CompileError
from ._tvm import load_tvm
from .ieee import guard_module
from .targets import is_gpu, resolve_target


def fuse_module(mod, target):
    """Legalize and fuse a Relax module (no constant folding)."""
    tvm = load_tvm()
    relax = tvm.relax
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ], name="graphad_fuse")
    with target:
        return seq(mod)


def _guarded(rule, failures: list):
    """A dlight rule whose internal errors mean "does not apply" (recorded in `failures`)."""
    from tvm.s_tir import dlight as dl

    class Guarded(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            try:
                return rule.apply(func, target, tunable)
            except Exception as e:  # noqa: BLE001 - the next rule (at worst Fallback) takes the kernel
                failures.append(f"{type(rule).__name__}: {_short(e)}")
                return None

        def is_target_available(self, target):
            return rule.is_target_available(target)
    return Guarded()


def _cuda_prepare(mod, target, failures: list, schedule: bool = True):
    """The first half of TVM's default CUDA pipeline, rebuilt (module doc): library dispatch,
    legalize and fuse (no FoldConstant), guarded dlight schedules, the IEEE guard. With
    schedule=False the dlight step is left out (for `graphad lower --no-schedule` only: an
    unscheduled module does not compile for a GPU)."""
    tvm = load_tvm()
    relax = tvm.relax
    from tvm.relax.backend.cuda import pipeline as cp
    from tvm.s_tir import dlight as dl
    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]
    passes = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FuseOps(), relax.transform.FuseTIR()]
    if schedule:
        passes.append(dl.ApplyDefaultSchedule(*[_guarded(r, failures) for r in rules], dl.gpu.Fallback()))
    passes.append(tvm.transform.module_pass(lambda m, _ctx: guard_module(m), opt_level=0, name="graphad_ieee"))
    with target:
        return tvm.transform.Sequential(cp.library_dispatch_passes(target) + passes)(mod)


def _cuda_build(mod, target):
    """The second half of TVM's default CUDA pipeline (VM lowering, finalization) and codegen, on a
    module `_cuda_prepare` returned."""
    tvm = load_tvm()
    from tvm.relax.backend.cuda import pipeline as cp

    @tvm.transform.module_pass(opt_level=0, name="graphad_cuda_lower")
    def _lower(m, _ctx):
        with target:
            return tvm.transform.Sequential(cp.dataflow_lower_passes(target) + cp.finalize_passes(target))(m)
    return tvm.compile(mod, target, relax_pipeline=_lower)


def prepare_module(mod, target=None, *, schedule: bool = True, poison: bool | None = None,
                   report: dict | None = None):
    """The final TIR module the build step compiles for `target` (module doc): what `build` hands to
    codegen and what `graphad lower --emit tir` prints. `report` (a dict) receives the CPU schedule
    report (`schedule`) or the dlight rules that failed inside (`rule_failures`)."""
    from . import poison as _poison
    target = resolve_target(target)
    report = report if report is not None else {}
    if poison is None:
        poison = _poison.poison_enabled()
    if is_gpu(target):
        if poison:
            report["poison"] = "not supported on GPU targets: built without it"
        failures: list = []
        out = _cuda_prepare(mod, target, failures, schedule)
        report["rule_failures"] = failures
        return out
    fused = fuse_module(mod, target)
    if not schedule:
        return guard_module(_poison.before_codegen(fused, target, "unscheduled", report, poison))
    from .schedule import schedule_module
    sched, rep = schedule_module(fused, target)
    report["schedule"] = rep
    sched = _poison.before_codegen(sched, target, "scheduled", report, poison)
    return guard_module(sched)  # TVM's simplifier must not see real-number algebra


def _cpu_build(mod, target):
    """Relax VM lowering and LLVM codegen of a fused (scheduled) module for the CPU.

    exec_mode="compiled" turns the Relax function itself into native code instead of VM bytecode
    for the interpreter: a call of a small cached graph spends about 0.35 us less in the VM.
    """
    tvm = load_tvm()
    return tvm.relax.build(mod, target, relax_pipeline=tvm.relax.get_pipeline("default_build"),
                           exec_mode="compiled")


def _short(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"


def build(mod, target=None, *, schedule: bool = True, poison: bool | None = None):
    """Compile `mod`; returns (tvm.relax VMExecutable, report dict).

    The report holds the target, the seconds spent, and for the CPU the schedule rule applied to
    every PrimFunc (`graphad.lowering.schedule.FuncReport`). `poison` (default: the poison
    switch, `graphad.lowering.poison.poison_enabled()`) pre-fills every buffer a kernel writes
    with NaN or a sentinel (CPU only; see lowering/poison.py).
    """
    target = resolve_target(target)
    t0 = time.perf_counter()
    report: dict = {"target": str(target), "schedule": [], "fallback": None}
    try:
        if is_gpu(target):
            ex = _cuda_build(prepare_module(mod, target, poison=poison, report=report), target)
            report["pipeline"] = "cuda-default-dlight"
        else:
            ex = None
            if schedule:
                # prepare_module is outside the try below: a poison or inspection failure is an
                # error, not a reason to fall back to the unscheduled module
                sched = prepare_module(mod, target, schedule=True, poison=poison, report=report)
                try:
                    ex = _cpu_build(sched, target)
                    report["pipeline"] = "cpu-fused-scheduled"
                except Exception as e:  # a rule produced something codegen rejects: compile unscheduled
                    report["fallback"] = _short(e)
            if ex is None:
                ex = _cpu_build(prepare_module(mod, target, schedule=False, poison=poison, report=report), target)
                report["pipeline"] = "cpu-fused"
    except CompileError:
        raise
    except Exception as e:
        raise CompileError(f"TVM failed to compile for {target.kind.name}: {_short(e)}") from e
    report["seconds"] = time.perf_counter() - t0
    return ex, report
