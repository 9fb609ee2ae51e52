"""How many TVM threads each compiled call uses, chosen per executable and per machine state.

TVM's pool (one per calling thread) starts `max_threads()` workers: TVM_NUM_THREADS, else
OMP_NUM_THREADS, else one per CPU of the process's affinity mask, and never more than that mask
allows (more threads than CPUs is the spin-wait collapse below). Each Executable gets a
`ThreadPolicy`:
* an executable with no parallel loop (none of its kernels has one, as its build recorded: the
  scheduler parallelises only loop nests of 16384 iterations and more) runs as it is: the
  count cannot matter and the call pays nothing;
* one whose outputs and inputs hold fewer than SMALL_ELEMENTS elements runs single-threaded:
  waking a worker costs more than it saves;
* any other is timed on its first calls with one thread and with all of them, alternately
  (PROBE_CALLS), and keeps the faster; it probes again every REPROBE_CALLS calls.
The count is applied with `runtime.config_threadpool` (mode 1, TVM's default, about 3 us) only when
the calling thread's pool is set to another count.

Why not always all threads: the waiting thread spins (sched_yield) until every worker has
finished its part. When another process keeps a core busy, a worker may wait a whole scheduler
slice for its core, and a 21 us call took 1.3-2.9 ms. So a multi-threaded call is timed (two
clock reads); a call that takes STALL_FACTOR times the executable's best plus STALL_SECONDS is a
stall, and two stalls in a row switch the whole process (contention is a property of the machine)
to one thread for a back-off period that doubles while stalls recur (BACKOFF_START to
BACKOFF_MAX seconds), then all threads are tried again.

graphad starts the pool with TVM_THREAD_POOL_SPIN_COUNT=300 unless the user set it
(lowering/_tvm.py says why: TVM's 300,000 costs exit time and CPU on shared machines; 0 makes
every parallel loop pay a futex wake-up, 0.4 ms of a 1.7 ms MLP train step with 18 of them), so a
worker watches for the next task for about 55 us before it sleeps. Measured with a spin count of
0 on a quiet 2-CPU slice of a Xeon (docs/performance.md): the probe kept two threads for hessian
32x512 (8.4M elements) and one for batch hessian 64x33x31 (2M); with spinning workers two
threads paid from about 65k elements (batch jacobian 64x33x31) on. Loop steps of compiled
control flow (runtime/host.py) go through the same policy.
"""
from __future__ import annotations

import math
import os
import threading
import time

from ..lowering._tvm import default_num_threads, env_threads

SMALL_ELEMENTS = 4096
PROBE_CALLS = 6  # alternately all threads and one thread
REPROBE_CALLS = 4096
STALL_FACTOR = 4.0
STALL_SECONDS = 100e-6
BACKOFF_START = 0.25
BACKOFF_MAX = 16.0
_PARALLEL_SYMBOL = b"TVMBackendParallelLaunch"


def max_threads() -> int:
    """The most threads one call may use: TVM_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs
    of the affinity mask; capped by the affinity mask."""
    cpus = default_num_threads()  # the affinity mask's CPUs
    env = env_threads()
    return max(1, min(env, cpus) if env is not None else cpus)


def _work_elements(meta: dict) -> int:
    """Elements an executable reads and writes (its inputs and outputs): the work it scales with."""
    total = 0
    for d in list(meta.get("inputs", [])) + list(meta.get("outputs", [])):
        total += math.prod(int(s) for s in d.get("shape", []))
    return total


class ThreadPolicy:
    """The thread count of one executable. `threads`: 0 = it has no parallel loop (the count does
    not matter), 1 = single-threaded, n > 1 = up to n threads (probed and stall-checked)."""

    __slots__ = ("threads", "reason", "best", "best1", "calls", "stalls", "choice")

    def __init__(self, threads: int, reason: str):
        self.threads = threads
        self.reason = reason
        self.best = math.inf  # fastest call with `threads` threads (seconds)
        self.best1 = math.inf  # fastest call with one thread
        self.calls = 0
        self.stalls = 0  # stalls in a row
        self.choice = threads  # what the probe chose: `threads` or 1

    def __repr__(self):
        return f"<ThreadPolicy threads={self.threads} choice={self.choice} ({self.reason})>"


def choose(meta: dict, library: bytes | None) -> ThreadPolicy:
    """The ThreadPolicy of an executable described by `meta`, whose library bytes are `library`.
    Whether it has parallel loops is meta's `parallel_loops`, recorded by the build. A library
    stored before that record existed is scanned for TVMBackendParallelLaunch (reliable there:
    such a library was built at opt level 3, which drops the declaration every TVM module starts
    with when nothing uses it; a module at level 0, such as a split build's main, keeps it).
    With neither, parallel loops are assumed."""
    if meta.get("device", "cpu") != "cpu":
        return ThreadPolicy(0, "not a CPU executable")
    n = max_threads()
    if n <= 1:
        return ThreadPolicy(0, "one thread available")
    parallel = meta.get("parallel_loops")  # recorded by the build (older entries lack it)
    if parallel is False or (parallel is None and library is not None and _PARALLEL_SYMBOL not in library):
        return ThreadPolicy(0, "no parallel loop")
    work = _work_elements(meta)
    if work < SMALL_ELEMENTS:
        return ThreadPolicy(1, f"small ({work} elements)")
    return ThreadPolicy(n, f"{work} elements")


# ---------------------------------------------------------------- applying a count

_tls = threading.local()  # `n`: the count this thread's TVM pool is set to
_config = None
# set in a child forked by a thread whose TVM pool had started: that pool's workers did not
# survive the fork (TVM's pool is per calling thread, with no fork handler), and a parallel loop
# launched on it waits for them forever. The child then runs every loop inline (TVM_NUM_THREADS=1
# makes TVMBackendParallelLaunch call the loop body itself) and never reconfigures the dead pool.
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    if getattr(_tls, "n", None) is None:
        return  # this thread never started a pool: the child's first call starts a fresh one
    _forked = True
    os.environ["TVM_NUM_THREADS"] = "1"


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> int | None:
    """The count graphad last set for this thread's TVM pool (None: never set)."""
    return getattr(_tls, "n", None)


def use(n: int) -> None:
    """Set this thread's TVM pool to `n` threads (a no-op when it already is, or in a child forked
    after its pool started: see `_forked`)."""
    if getattr(_tls, "n", None) != n and not _forked:
        _set(n)


def _set(n: int) -> None:
    global _config
    if _config is None:
        from ..lowering._tvm import load_runtime
        _config = load_runtime().get_global_func("runtime.config_threadpool")
    # mode 1 (big cores) with n threads is TVM's own start-up configuration with a count; the
    # workers stay where the scheduler puts them (TVM_BIND_THREADS=0, lowering/_tvm.py)
    _config(1, n)
    _tls.n = n


# ---------------------------------------------------------------- contention

class _Contention:
    """Process-wide: until when every executable runs single-threaded, and the next back-off."""
    until = 0.0
    backoff = BACKOFF_START
    last = -math.inf  # when the last switch happened
    switches = 0


def contended() -> bool:
    """Whether calls currently run single-threaded because stalls were seen."""
    return time.monotonic() < _Contention.until


def _contention_seen() -> None:
    now = time.monotonic()
    if now - _Contention.last > 60.0:  # a quiet minute: start the back-off over
        _Contention.backoff = BACKOFF_START
    _Contention.until = now + _Contention.backoff
    _Contention.backoff = min(2 * _Contention.backoff, BACKOFF_MAX)
    _Contention.last = now
    _Contention.switches += 1


def reset_contention() -> None:
    """Forget stalls seen so far (tests; a service that knows its machine is now quiet)."""
    _Contention.until, _Contention.backoff, _Contention.last = 0.0, BACKOFF_START, -math.inf


_clock = time.perf_counter


def call(policy: ThreadPolicy, fn, args):
    """`fn(*args)` with the thread count `policy` gives for this call (see the module docstring)."""
    n = policy.threads
    if n == 0 or _forked:
        return fn(*args)
    if n == 1:
        if getattr(_tls, "n", None) != 1:
            _set(1)
        return fn(*args)
    if time.monotonic() < _Contention.until:  # stalls were seen: one thread, and no probing
        if getattr(_tls, "n", None) != 1:
            _set(1)
        return fn(*args)
    k = policy.calls
    policy.calls = k + 1
    probing = k % REPROBE_CALLS < PROBE_CALLS
    if probing:
        want = n if k % 2 == 0 else 1
        if k % REPROBE_CALLS == 0:
            policy.best = policy.best1 = math.inf  # a new probe: the machine may have changed
    elif policy.choice == 1:
        if getattr(_tls, "n", None) != 1:
            _set(1)
        return fn(*args)
    else:
        want = n
    if getattr(_tls, "n", None) != want:
        _set(want)
    t0 = _clock()
    res = fn(*args)
    d = _clock() - t0
    if want == 1:
        if d < policy.best1:
            policy.best1 = d
    else:
        base = min(policy.best, policy.best1)
        if d > STALL_FACTOR * base + STALL_SECONDS:
            policy.stalls += 1
            if policy.stalls >= 2:
                policy.stalls = 0
                _contention_seen()
        else:
            policy.stalls = 0
        if d < policy.best:
            policy.best = d
    if probing and k % REPROBE_CALLS == PROBE_CALLS - 1:
        # all threads unless one thread was as fast: a worker's wake-up is not free
        policy.choice = n if policy.best < 0.9 * policy.best1 else 1
    return res


def bind(policy: ThreadPolicy, fn):
    """`fn` as a function that runs each call under `policy` (see `call`)."""
    def run(*args):
        return call(policy, fn, args)
    return run
