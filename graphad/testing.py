"""Tools for testing compiled code: the poisoned-memory check mode.

`with graphad.testing.poisoned(): ...` compiles every graph first compiled inside the block with
its outputs and workspaces pre-filled with NaN (floats) or a sentinel (ints; True for bools), so a
kernel that reads memory nothing wrote returns that value on every call instead of stale memory
one call in hundreds (see graphad/lowering/poison.py). GRAPHAD_POISON=1 in the environment does
the same for a whole process.

The switch belongs to the compile-cache key and to the staging key of every transformed
function, so poisoned executables never serve normal calls and vice versa: a function already
called outside the block is staged (and compiled) again when it is called inside it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["poisoned", "poison_enabled"]


@contextlib.contextmanager
def poisoned(enabled: bool = True) -> Iterator[None]:
    """Compile with poisoned memory (or, with enabled=False, without it) inside the block."""
    from .lowering.poison import set_poison
    with set_poison(enabled):
        yield


def poison_enabled() -> bool:
    """Whether graphs compiled now get poisoned memory (context manager, else GRAPHAD_POISON)."""
    from .lowering.poison import poison_enabled as _enabled
    return _enabled()
