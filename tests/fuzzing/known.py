"""Defects that are found and filed but not fixed (the pending fixtures), and documented
deviations from NumPy (the deviations fixtures: decided semantics, not defects).

Each fixture in tests/fuzz_fixtures/pending/ carries a `match` signature (check, cause, a detail
pattern such as "(-0.0), expected", and the set of primitives of its minimal program). A
disagreement in another program is the *same* known defect when check and cause are equal, the
detail contains the pattern, and the program uses every primitive of the minimal repro. The CI
profile reports those as known instead of failing, so a filed defect does not block the suite,
while anything new still does. Moving a fixture out of pending/ (the defect is fixed) ends the
tolerance automatically.

A deviation fixture (tests/fuzz_fixtures/deviations/) may match more precisely: `detail_regex`
(a regular expression the detail must match) and `prims_any` (alternative primitive sets; the
program must use every primitive of one of them). Programs that show only deviations are counted
apart from disagreements.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np

from .check import Disagreement
from .fixtures import DEVIATIONS, PENDING, stems
from .gen import Program


@dataclass(frozen=True)
class Known:
    """One filed defect's signature."""

    name: str
    check: str
    cause: str
    detail_contains: str
    prims: frozenset
    deviation: bool = False
    detail_regex: str = ""
    prims_any: tuple = ()
    needs_subnormal_input: bool = False

    def matches(self, program: Program, d: Disagreement) -> bool:
        """Whether disagreement `d` on `program` is this filed defect (or documented deviation)."""
        used = {n.prim.name for n in program.graph.nodes}
        if self.prims_any:
            prims_ok = any(frozenset(alt) <= used for alt in self.prims_any)
        else:
            prims_ok = self.prims <= used
        if self.needs_subnormal_input and not any(_has_subnormal(a) for a in program.inputs):
            return False
        return (d.check == self.check and d.cause == self.cause and self.detail_contains in d.detail
                and (not self.detail_regex or re.search(self.detail_regex, d.detail) is not None) and prims_ok)


def _has_subnormal(a) -> bool:
    a = np.asarray(a)
    if a.dtype.kind != "f" or not a.size:
        return False
    tiny = np.abs(a) < np.finfo(a.dtype).smallest_normal
    return bool((tiny & (a != 0)).any())


def load_known(directories: tuple = (PENDING, DEVIATIONS)) -> list[Known]:
    """The signatures of the pending and deviation fixtures."""
    out = []
    for directory in directories:
        for stem in stems(directory):
            with open(stem + ".json") as f:
                meta = json.load(f)
            m = meta["match"]
            out.append(Known(os.path.basename(stem), m["check"], m["cause"], m.get("detail_contains", ""),
                             frozenset(m.get("prims", ())), deviation="deviation" in meta,
                             detail_regex=m.get("detail_regex", ""),
                             prims_any=tuple(tuple(a) for a in m.get("prims_any", ())),
                             needs_subnormal_input=bool(m.get("needs_subnormal_input", False))))
    return out


def split_known(program: Program, ds: list[Disagreement], known: list[Known]) -> tuple[list, list]:
    """(new disagreements, [(known name, disagreement)])."""
    new, old = [], []
    for d in ds:
        k = next((k for k in known if k.matches(program, d)), None)
        if k is None:
            new.append(d)
        else:
            old.append((k.name, d))
    return new, old
