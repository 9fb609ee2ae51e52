"""Where a compile's time goes: phase timers and the `GRAPHAD_LOG_COMPILE=1` report.

A compile (one `runtime.executable.compile_graph`, or `graphad compile`) opens a `record`; every
step of the lowering and the build inside it runs under `phase(name)`, which adds its wall-clock
and process-CPU seconds to the record of the current thread (nothing is recorded, and `phase` costs
two clock reads, when no record is open). The phases, in order:

    inline      runtime.executable.graph_for_lowering (custom calls, checkpoints, merged scans)
    lower       graph -> Relax (lowering.lower_graph_info)
    fuse        LegalizeOps, AnnotateTIROpPattern, FuseOps, FuseTIR (pipeline.fuse_module)
    schedule    graphad's CPU schedule rules (schedule.py)
    ieee        the IEEE guard (ieee.py) and, in check mode, the poison pass
    relax       TVM's "default_build" Relax pipeline (VM lowering, memory planning)
    vmcodegen   the Relax function -> VM bytecode, or -> TIR in the "compiled" exec mode
    kernels     the kernels' keys and the kernel cache's look-ups (kernel_objects.build_split)
    tir         TVM's TIR lowering passes (every kernel, and the main function when compiled)
    llvm        LLVM: TIR -> LLVM IR, optimised (target.build.llvm)
    codegen     tir and llvm of a build split over threads (parallel_build.py; CPU of all threads)
    export      object code emitted and linked into a shared library (for the disk cache)
    load        the library loaded and the Relax VM made (or JIT-compiled, without a library)
    tvm         importing TVM's compiler (`_tvm.load_tvm`: the `tvm` package, its 260 MB library,
                the rest of tvm-ffi), once per process, in whichever phase first needs it

A phase that runs inside another counts in its own line only: the enclosing phase's line is its
time less the nested one's.

With GRAPHAD_LOG_COMPILE set (to anything but "" or "0"), the finished record is printed to
stderr, one line per phase with its share of the total; the rest of the total (cache look-ups,
hashing) is shown as "other". On a terminal a compile that is still running after
PROGRESS_AFTER seconds prints the phase it enters, so a long compile shows progress.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

__all__ = ["record", "phase", "note", "message", "enabled", "current", "CompileRecord"]

PROGRESS_AFTER = 2.0  # seconds: below this a compile prints nothing until it is done

_local = threading.local()


def enabled() -> bool:
    """Whether GRAPHAD_LOG_COMPILE asks for the per-compile report."""
    return os.environ.get("GRAPHAD_LOG_COMPILE", "") not in ("", "0")


class CompileRecord:
    """The phases of one compile: [(name, wall seconds, CPU seconds)] in the order they ended,
    and facts the build reports (`info`: exec mode, kernel count...)."""

    def __init__(self, name: str):
        self.name = name
        self.phases: list[tuple[str, float, float]] = []
        self.info: dict = {}
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.wall = 0.0
        self.cpu = 0.0
        self._progress = False
        self.active: list[list] = []  # [name, nested wall, nested CPU] of the phases running now

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Add seconds to phase `name` (phases run more than once, e.g. per segment, are summed)."""
        for i, (n, w, c) in enumerate(self.phases):
            if n == name:
                self.phases[i] = (n, w + wall, c + cpu)
                return
        self.phases.append((name, wall, cpu))

    def seconds(self, name: str) -> float:
        """Wall seconds of phase `name` (0 when it did not run)."""
        return sum(w for n, w, _ in self.phases if n == name)

    def format(self) -> str:
        """The report: a header with the total, then one line per phase (wall s, CPU s, share)."""
        facts = ", ".join(f"{k} {v}" for k, v in self.info.items())
        verb = "loaded" if "from" in self.info else "compiled"  # a disk-cache hit compiles nothing
        lines = [f"graphad: {verb} @{self.name} in {self.wall:.3f} s (CPU {self.cpu:.3f} s)"
                 + (f" [{facts}]" if facts else "")]
        total = max(self.wall, 1e-9)
        rows = list(self.phases)
        other = self.wall - sum(w for _, w, _ in rows)
        if other > 0.0005:
            rows.append(("other", other, max(0.0, self.cpu - sum(c for _, _, c in rows))))
        for n, w, c in rows:
            lines.append(f"  {n:<10} {w:8.3f} s  CPU {c:7.3f} s  {100 * w / total:5.1f}%")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """JSON-able form: {"total": s, "cpu": s, "phases": {name: wall s}, **info}."""
        return {"total": self.wall, "cpu": self.cpu, "phases": {n: w for n, w, _ in self.phases}, **self.info}


def current() -> CompileRecord | None:
    """The record open in this thread, if any."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def record(name: str, *, log: bool | None = None):
    """Open a record for a compile named `name` and yield it. Nested inside another record (a
    host program compiling its segments) it yields the outer one, so phases add up there. On
    exit the outermost record is printed to stderr when `log` (default: `enabled()`)."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    if stack:
        yield stack[-1]
        return
    rec = CompileRecord(name)
    stack.append(rec)
    try:
        yield rec
    finally:
        stack.pop()
        rec.wall = time.perf_counter() - rec.t0
        rec.cpu = time.process_time() - rec.cpu0
        if log if log is not None else enabled():
            _write(rec.format() + "\n")


@contextlib.contextmanager
def phase(name: str):
    """Time the enclosed step as phase `name` of the current record (no-op without one)."""
    rec = current()
    if rec is None:
        yield
        return
    _progress(rec, name)
    frame = [name, 0.0, 0.0]
    rec.active.append(frame)
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rec.active.pop()
        rec.add(name, wall - frame[1], cpu - frame[2])  # (its own time: nested phases apart)
        if rec.active:
            rec.active[-1][1] += wall
            rec.active[-1][2] += cpu


def note(key: str, value) -> None:
    """Attach a fact (exec mode, kernel count) to the current record, if any."""
    rec = current()
    if rec is not None:
        rec.info[key] = value


def message(text: str) -> None:
    """Print one line of the report (when `enabled()`): a decision that replaces a compile, such as
    a graph with complex values running on the NumPy interpreter (docs/complex.md)."""
    if enabled():
        _write(f"graphad: {text}\n")


def _progress(rec: CompileRecord, name: str) -> None:
    # only on a terminal, and only once the compile has run long enough that a user waits for it
    if time.perf_counter() - rec.t0 < PROGRESS_AFTER:
        return
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        tty = False
    if tty:
        _write(f"graphad: compiling @{rec.name}: {name} ({time.perf_counter() - rec.t0:.1f} s)\n")


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):  # no usable stderr: the report is optional
        pass
