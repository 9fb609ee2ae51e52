"""The table of operations the IR knows by name: what the parser resolves an op name to.

The IR does not define operations: graphad.prims, graphad.control and its custom-derivative and
checkpoint modules register each Primitive record here (`prims.registry.register`) when they are
imported. Nodes hold those records, duck-typed (`name`, `infer`, `num_outputs`, `impl`), so the
IR never imports graphad.prims (a layer above it).

`import graphad` imports none of those modules (a process that only loads an AOT artifact needs
no primitive), so the table completes itself: `import graphad` installs a loader
(`set_loader`) that imports every module that registers primitives, and the first read of the
table (a look-up by name, `in`, iteration, its length) runs it once. A table read therefore always
sees every primitive, as if all had been imported first.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from ..errors import GraphadError

_lock = threading.RLock()
_loader: Callable[[], None] | None = None
_state: dict[str, Any] = {"complete": False, "loading": False, "error": None}


def _before_fork() -> None:
    # a fork waits for a load in progress: the child would inherit the lock and importlib's module
    # locks held by a thread it does not have, and hang at its first read
    _lock.acquire()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=lambda: _lock.release(),
                        after_in_child=_after_fork_in_child)


def _completing(read):
    """dict's method `read` as a method of the table that runs the loader first (`_complete`)."""
    def method(self, *args):
        _complete()
        return read(self, *args)
    method.__name__ = method.__qualname__ = read.__name__
    return method


class _Registry(dict):
    """A dict of primitives by name that runs the loader (`set_loader`) before its first read."""

    __slots__ = ()

    def add(self, name: str, prim: Any) -> None:
        """Register `prim` under `name` (ValueError if taken) without completing the table: the
        modules that register are the ones the loader imports."""
        if dict.__contains__(self, name):
            raise ValueError(f"primitive {name!r} registered twice")
        dict.__setitem__(self, name, prim)

    def __getitem__(self, name):
        try:
            return dict.__getitem__(self, name)
        except KeyError:
            if _state["complete"]:
                raise
        _complete()  # (or waits for another thread's loader) then the look-up again
        return dict.__getitem__(self, name)

    # every other read completes the table first
    get = _completing(dict.get)
    __contains__ = _completing(dict.__contains__)
    __iter__ = _completing(dict.__iter__)
    __len__ = _completing(dict.__len__)
    keys = _completing(dict.keys)
    values = _completing(dict.values)
    items = _completing(dict.items)


PRIMITIVES: dict[str, Any] = _Registry()


def set_loader(loader: Callable[[], None]) -> None:
    """Install the function that imports every module registering primitives (graphad/__init__)."""
    global _loader
    _loader = loader


def _complete() -> None:
    """Run the loader once. A read from inside the loader (a module that
    looks a primitive up while it is imported) sees the table as it is: the same thread holds the
    re-entrant lock and `loading` is set; another thread waits for the loader to finish. Should the
    loader fail, its exception propagates and the next read tries again, as an import would (with
    the first failure as the cause of a later one). A fork waits for a load in progress.""" 
    if _state["complete"] or _loader is None:
        return
    with _lock:
        if _state["complete"] or _state["loading"]:
            return
        _state["loading"] = True
        try:
            _loader()
        except BaseException as e:
            # a module that failed after registering primitives fails again differently when
            # imported again ("registered twice"): the first failure stays the cause shown
            first, _state["error"] = _state["error"], _state["error"] or e
            if first is not None and first is not e:
                raise e from first
            raise
        finally:
            _state["loading"] = False
        _state["complete"] = True  # only now: other threads skip the lock from here on


def get_primitive(name: str):
    """Look up a primitive by its IR name (GraphadError naming close matches if unknown)."""
    try:
        return PRIMITIVES[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, PRIMITIVES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise GraphadError(f"unknown primitive {name!r}{hint}") from None
