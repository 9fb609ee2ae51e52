"""Defects that are found and filed but not fixed: the pending fixtures are the list.

Each fixture in tests/fuzz_fixtures/pending/ carries a `match` signature (check, cause, a detail
pattern such as "(-0.0), expected", and the set of primitives of its minimal program). A
disagreement in another program is the *same* known defect when check and cause are equal, the
detail contains the pattern, and the program uses every primitive of the minimal repro. The CI
profile reports those as known instead of failing, so a filed defect does not block the suite,
while anything new still does. Moving a fixture out of pending/ (the defect is fixed) ends the
tolerance automatically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .check import Disagreement
from .fixtures import PENDING, stems
from .gen import Program


@dataclass(frozen=True)
class Known:
    """One filed defect's signature."""

    name: str
    check: str
    cause: str
    detail_contains: str
    prims: frozenset

    def matches(self, program: Program, d: Disagreement) -> bool:
        """Whether disagreement `d` on `program` is this filed defect."""
        return (d.check == self.check and d.cause == self.cause and self.detail_contains in d.detail
                and self.prims <= {n.prim.name for n in program.graph.nodes})


def load_known(directory: str = PENDING) -> list[Known]:
    """The signatures of the pending fixtures in `directory`."""
    out = []
    for stem in stems(directory):
        with open(stem + ".json") as f:
            m = json.load(f)["match"]
        out.append(Known(os.path.basename(stem), m["check"], m["cause"], m.get("detail_contains", ""),
                         frozenset(m.get("prims", ()))))
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
