"""Python's cyclic garbage collector held back while a function is traced and compiled.

A compile makes many short-lived reference cycles: every IR node and its output values point at
each other, and each pass replays the graph into a new one. CPython collects its youngest
generation every 700 net allocations, so the graphs still alive at that moment (most of a compile's
objects live for a pass or two) are promoted, and those that survive a second collection reach the
oldest generation. There they count towards the next full collection, which walks every tracked
object of the process: with TVM's compiler imported that is over 100,000 objects and 55-61 ms
here (more in a process that has imported SciPy and the like), once in every one or two first
calls of a 64-layer MLP's gradient. The compile's own garbage, once it reached that generation,
is freed only by such a full collection.

`deferred_collection()` raises the youngest generation's threshold for the duration of a compile
(`COMPILE_THRESHOLD0` net allocations instead of 700), so a compile's cycles die young: they are
freed by the first young collection after it, or by one during it when a large compile passes the
threshold (which bounds the garbage a compile can hold). `GraphFunction.stage` (trace, passes
and compile of a first call) and `executable.compile_graph` (every compile) hold it; nested, the
outermost counts. The other thresholds, `gc.disable()` by the user, and `gc.collect()` are left
alone. The threshold is process-wide while any compile runs
(compiles on other threads share one deferral; the last to finish restores the value it found,
unless someone else has changed it meanwhile). `GRAPHAD_GC_DEFER=0` turns it off.
"""
from __future__ import annotations

import contextlib
import gc
import os
import threading

# net allocations between young collections while compiling; at about 100-200 bytes an object,
# this bounds the garbage a compile holds between collections to some tens of MB
COMPILE_THRESHOLD0 = 200_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] | None = None  # the thresholds found by the outermost compile


def enabled() -> bool:
    """Whether compiles defer collections (`GRAPHAD_GC_DEFER`, default on)."""
    return os.environ.get("GRAPHAD_GC_DEFER", "1") not in ("0", "false", "off", "no")


@contextlib.contextmanager
def deferred_collection():
    """Within: young collections every `COMPILE_THRESHOLD0` net allocations (see the module)."""
    global _depth, _saved
    if not enabled():
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _saved = gc.get_threshold()
            if _saved[0] and _saved[0] < COMPILE_THRESHOLD0:  # 0 means "collect never": leave it
                gc.set_threshold(COMPILE_THRESHOLD0, *_saved[1:])
            else:
                _saved = None
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                if gc.get_threshold() == (COMPILE_THRESHOLD0, *_saved[1:]):  # nobody else changed it
                    gc.set_threshold(*_saved)
                _saved = None
