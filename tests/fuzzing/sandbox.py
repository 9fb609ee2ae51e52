"""Run a function in a forked child with a wall-clock and memory budget.

The fuzzer compiles and runs every program in a child process: a compile that never finishes
(the exponential code growth of `x.sin().sin().sin()` once took minutes and gigabytes), a
`std::bad_alloc`, or a kernel that segfaults then ends that child, and the parent reports it as a
failure of that program instead of hanging or dying. The child is forked from a parent that has
already imported and warmed up TVM (`warm_up`), so it starts in milliseconds.

POSIX only (os.fork). The child works in a fresh thread (see `_in_fresh_thread`), so a parent
that already ran parallel TVM kernels (another test in the same pytest worker) is fine.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

_WARM = False


@dataclass
class ChildResult:
    """What came back: status "ok" (value set), "error" (error set: a traceback), "timeout",
    or "crash" (the child died, e.g. by a signal, without answering)."""

    status: str
    value: Any = None
    error: str = ""
    seconds: float = 0.0


def warm_up() -> None:
    """Import TVM and compile one tiny graph in this process, so forked children inherit a loaded
    compiler (a child that had to import TVM itself would spend about 2 s on it)."""
    global _WARM
    if _WARM:
        return
    import numpy as np

    import graphad as gd
    from graphad.runtime.executable import build_executable
    g = gd.make_graph(lambda x: (x * 2.0).sum())(gd.Tensor(np.ones(3)))
    build_executable(g)([np.ones(3)])
    _WARM = True


def run_in_child(fn: Callable[[], Any], timeout: float, mem_bytes: int | None = None,
                 cpu_seconds: int | None = None) -> ChildResult:
    """fn() in a forked child; its (picklable) return value, or why there is none.

    `cpu_seconds` caps the child's CPU time (RLIMIT_CPU: it dies of SIGXCPU), which unlike the
    wall-clock `timeout` does not fire early when other processes load the machine."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack (pytest, hypothesis)
        code = 0
        try:
            os.close(r)
            # a crash is reported by the parent from the exit status; the default disposition keeps
            # TVM's and faulthandler's crash dumps of the child out of the parent's log
            for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            if mem_bytes:
                _limit_memory(mem_bytes)
            if cpu_seconds:
                import resource
                used = int(time.process_time())  # inherited from the parent
                resource.setrlimit(resource.RLIMIT_CPU, (used + cpu_seconds, used + cpu_seconds + 5))
            payload = _in_fresh_thread(fn)
            try:
                data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an unpicklable value is an error report too
                data = pickle.dumps(("error", traceback.format_exc(limit=5)))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:  # noqa: BLE001 - the parent sees a crash
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = t0 + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                timed_out = True
                break
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    cpu = usage.ru_utime + usage.ru_stime
    rss = f"{usage.ru_maxrss / 1024:.0f} MB"
    if timed_out:
        return ChildResult("timeout", seconds=seconds,
                           error=f"no answer after {timeout:.1f} s ({cpu:.1f} CPU s, max RSS {rss})")
    data = b"".join(chunks)
    if not data:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_seconds and cpu >= cpu_seconds):
            return ChildResult("timeout", seconds=seconds, error=f"more than {cpu_seconds} s of CPU time "
                               f"({cpu:.1f} CPU s in {seconds:.1f} s, max RSS {rss})")
        why = f"signal {sig}" if sig is not None else f"exit status {os.WEXITSTATUS(status)}"
        return ChildResult("crash", seconds=seconds, error=f"the child died without an answer ({why}; "
                           f"{cpu:.1f} CPU s, max RSS {rss})")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return ChildResult("ok", value=value, seconds=seconds)
    return ChildResult("error", error=value, seconds=seconds)


def _in_fresh_thread(fn: Callable[[], Any]) -> tuple:
    """("ok", fn()) or ("error", traceback), fn run in a new thread of this (forked) process.

    TVM's CPU thread pool is thread-local to the thread that launches parallel kernels: a child
    forked from a process that already ran one inherits that pool without its worker threads, and
    its first parallel kernel spins forever waiting for them. A fresh thread gets a fresh pool.
    """
    import threading
    box: dict = {}

    def run():
        try:
            box["payload"] = ("ok", fn())
        except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
            box["payload"] = ("error", traceback.format_exc(limit=20))

    t = threading.Thread(target=run, name="fuzz-child")
    t.start()
    t.join()
    return box.get("payload", ("error", "the child's worker thread ended without a result"))


def _limit_memory(mem_bytes: int) -> None:
    """Cap the child's address space (a runaway compile then fails with bad_alloc, not the OOM killer)."""
    import resource
    try:
        with open("/proc/self/statm") as f:
            vm_pages = int(f.read().split()[0])
        current = vm_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        current = 0
    limit = current + mem_bytes
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass
