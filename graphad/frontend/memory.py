"""Memory limits: what a graph needs at least, known from its static shapes, checked before it is
compiled or run.

A graph whose outputs, or whose largest intermediate, cannot fit in memory would otherwise be
compiled (seconds to minutes) and then die in the allocator (a raw `std::bad_alloc` from TVM, or
the kernel's OOM killer). `check_graph(graph)` refuses it first with a `ResourceError` naming the
sizes and what to do. The estimate is a lower bound, so the check refuses only graphs that cannot
fit: all outputs live together at the end of a run, and an intermediate may be fused away by the
compiler, so the need is the larger of (all outputs together) and (the largest single value).

The limit is GRAPHAD_MAX_BYTES when set (bytes, optionally with a K/M/G/T suffix of powers of
1024, or `unlimited`), else 80% of the memory this process can have: the physical memory, or the
cgroup limit of its container when that is smaller.
"""
from __future__ import annotations

import os
import re

from ..errors import GraphadError, ResourceError

ENV_VAR = "GRAPHAD_MAX_BYTES"
DEFAULT_FRACTION = 0.8

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def format_bytes(n: int) -> str:
    """`n` bytes in the largest binary unit that keeps the number at least 1 (`40.0 GiB`)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _parse_limit(text: str) -> int | None:
    """GRAPHAD_MAX_BYTES's value as bytes; None for `unlimited`; GraphadError if malformed."""
    t = text.strip()
    if t.lower() in ("unlimited", "none", "inf"):
        return None
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:i?B)?", t, re.IGNORECASE)
    if m is None:
        raise GraphadError(f"{ENV_VAR}={text!r}: expected a number of bytes with an optional K, M, G or T "
                           f"suffix (e.g. 8G), or 'unlimited'")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def _process_memory() -> int | None:
    """Bytes of memory this process can use: physical memory, capped by a cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf names on this platform
        total = None
    for path in _CGROUP_FILES:
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit():  # "max" (v2) means no limit; v1 reports a huge number instead
            cg = int(raw)
            total = cg if total is None else min(total, cg)
        break
    return total


def memory_limit() -> tuple[int | None, str]:
    """(the limit in bytes or None for none, where it comes from, for messages)."""
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return _parse_limit(env), f"{ENV_VAR}={env.strip()}"
    total = _process_memory()
    if total is None:
        return None, "no limit: the physical memory is unknown"
    return int(total * DEFAULT_FRACTION), (f"{DEFAULT_FRACTION:.0%} of the {format_bytes(total)} of memory; "
                                           f"set {ENV_VAR} to change it")


def type_bytes(t) -> int:
    """Bytes of a value of TensorType `t` (Python ints: no overflow however large)."""
    return t.size * t.dtype.np.itemsize


class Need:
    """What running a graph needs at least: its outputs together and its largest intermediate."""

    __slots__ = ("outputs", "largest", "largest_node", "largest_type")

    def __init__(self, outputs: int, largest: int, largest_node=None, largest_type=None):
        self.outputs = outputs
        self.largest = largest
        self.largest_node = largest_node
        self.largest_type = largest_type

    @property
    def total(self) -> int:
        return max(self.outputs, self.largest)

    def describe(self) -> str:
        out = f"its outputs need {format_bytes(self.outputs)}"
        if self.largest_node is not None:
            n = self.largest_node
            where = f" at {n.loc}" if n.loc else ""
            out += (f"; its largest intermediate, {self.largest_type} from {n.prim.name}{where}, needs "
                    f"{format_bytes(self.largest)}")
        return out


def graph_need(graph) -> Need:
    """The lower bound of the memory a run of `graph` needs (see the module docstring)."""
    outputs = graph.outputs
    out_bytes = sum(type_bytes(v.type) for v in outputs)
    out_ids = {id(v) for v in outputs}
    largest, node_of, type_of = 0, None, None
    for n in graph.nodes:
        for v in n.outputs:
            if id(v) in out_ids:
                continue
            b = type_bytes(v.type)
            if b > largest:
                largest, node_of, type_of = b, n, v.type
    return Need(out_bytes, largest, node_of, type_of)


def advice(need: Need, limit: int) -> str:
    """What the user can do about a graph that does not fit."""
    if need.outputs > limit:
        return ("The outputs alone exceed the limit, and chunk_size= (jacrev/jacfwd) bounds only the "
                "intermediates of a Jacobian, not the Jacobian itself: compute products with it instead "
                "(gd.vjp, gd.jvp), or differentiate with respect to fewer inputs.")
    return ("Pass chunk_size=K to jacrev/jacfwd (a smaller K where one is given) to compute a Jacobian K "
            "rows (columns) at a time, which bounds its intermediates, or split the computation into "
            "smaller pieces.")


def check_need(name: str, need: Need, extra: int = 0, extra_what: str = "", hint: str | None = None) -> None:
    """ResourceError when `need` (plus `extra` bytes held meanwhile, `extra_what`) exceeds the
    memory limit; `hint` replaces the advice of `advice()`."""
    limit, why = memory_limit()
    if limit is None or need.total + extra <= limit:
        return
    total = need.total + extra
    held = f"{extra_what} ({format_bytes(extra)}) plus " if extra else ""
    raise ResourceError(f"{name}: running it needs at least {format_bytes(total)} = {total} bytes "
                        f"({held}{need.describe()}), "
                        f"more than graphad's memory limit of {format_bytes(limit)} ({why}). "
                        f"{hint or advice(need, max(limit - extra, 0))}")


def check_graph(graph, name: str | None = None) -> None:
    """ResourceError, before anything is compiled or allocated, when `graph` cannot fit in memory."""
    check_need(name or f"@{graph.name}", graph_need(graph))


def check_types(name: str, out_types) -> None:
    """ResourceError when outputs of these (shape, dtype) pairs cannot fit (a loaded artifact: its
    intermediates are unknown)."""
    from ..dtypes import as_dtype
    total = 0
    for shape, d in out_types:
        n = 1
        for s in shape:
            n *= int(s)
        total += n * as_dtype(d).np.itemsize
    check_need(name, Need(total, 0))
