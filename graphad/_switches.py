"""The context switches that change what a graph compiles to, kept free of dependencies.

Poisoned memory (`graphad.testing.poisoned`, lowering/poison.py) and native loops
(`graphad.runtime.host.native_loops`) are context variables, per thread and task; None
means the environment variable (GRAPHAD_POISON, GRAPHAD_NATIVE_LOOPS) decides. They live here,
at the bottom of the layers, so that the staging cache (frontend/function.py) can key a staged
function on them without importing the compiler or the runtime: a function called before
`with poisoned():` or `with native_loops(False):` is staged again inside the block instead of
serving the executable it built outside.
"""
from __future__ import annotations

import contextvars
import os

POISON: contextvars.ContextVar[bool | None] = contextvars.ContextVar("graphad_poison", default=None)
NATIVE_LOOPS: contextvars.ContextVar[bool | None] = contextvars.ContextVar("graphad_native_loops", default=None)

_OFF = ("", "0", "false", "no", "off")


def poison_enabled() -> bool:
    """The innermost poison setting, else GRAPHAD_POISON (anything but "", "0", "false", "no", "off")."""
    v = POISON.get()
    if v is not None:
        return v
    return os.environ.get("GRAPHAD_POISON", "").strip().lower() not in _OFF


def native_loops_enabled() -> bool:
    """The innermost native-loops setting, else GRAPHAD_NATIVE_LOOPS (on unless "0", "false",
    "no" or "off")."""
    v = NATIVE_LOOPS.get()
    if v is not None:
        return v
    return os.environ.get("GRAPHAD_NATIVE_LOOPS", "1").strip().lower() not in _OFF[1:]


def compile_settings() -> tuple[bool, bool]:
    """(poison, native loops) as a graph compiled now would see them: part of the staging key."""
    return poison_enabled(), native_loops_enabled()
