"""Fuzzer failures as regression fixtures: IR text + inputs + what was wrong, and their replay.

A fixture `NAME` is three files in one directory:
    NAME.gir   the program as graphad IR text (source locations stripped)
    NAME.npz   its input arrays, by input name
    NAME.json  how it was checked (mode, seed, poison, vmap flags, input domains) and what
               disagreed: check, suspected cause, detail, and the `match` signature that
               `known.py` uses to recognise the same defect in other programs
Directories under tests/fuzz_fixtures/:
    (top level)  fixed defects: every check must pass (the replay test fails otherwise);
    pending/     found and filed, not fixed yet: the replay test skips them, naming the defect,
                 and the CI profile tolerates programs showing the same defect;
    deviations/  documented semantics where graphad differs from NumPy on purpose (FMA in
                 contractions): the replay test pins the compiled answer, and the fuzzers count
                 programs that show only a deviation apart from disagreements;
    new/         what the last fuzzing session found: triage into pending/ (file it) or fix it
                 and move it to the top level. The replay test treats new/ like the top level.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re

import numpy as np

from graphad.ir.parser import parse_graph

from .check import Disagreement
from .gen import Domain, Program

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz_fixtures")
PENDING = os.path.join(ROOT, "pending")
DEVIATIONS = os.path.join(ROOT, "deviations")
NEW = os.path.join(ROOT, "new")

_LOC_RE = re.compile(r'  loc\("(?:[^"\\]|\\.)*":\d+\)$', re.MULTILINE)
_KIND_RE = re.compile(r"\((NaN|\+inf|-inf|\+0\.0|-0\.0|finite)\), expected .*?\((NaN|\+inf|-inf|\+0\.0|-0\.0|finite)\)")


def ir_text(program: Program) -> str:
    """The program's IR text without source locations (they name the generator's lines)."""
    return _LOC_RE.sub("", program.text())


def signature(d: Disagreement) -> str:
    """The part of a disagreement's detail that names the defect's shape (used to match it
    elsewhere): the kind pattern "(got-kind), expected (want-kind)" if any, else ""."""
    m = _KIND_RE.search(d.detail)
    return f"({m.group(1)}), expected" if m else ""


# Lowering constants a fuzz job may change (runner.py: GRAPHAD_FUZZ_IM2COL_ALL), with their defaults
_LOWERING_DEFAULTS: dict = {}


def set_lowering(overrides: dict) -> dict:
    """Set constants of graphad.lowering.relax_ops (e.g. IM2COL_MIN_TERMS); returns the values
    they had. A fixture found under overrides records them, and its replay sets them again."""
    from graphad.lowering import relax_ops
    old = {}
    for k, v in overrides.items():
        _LOWERING_DEFAULTS.setdefault(k, getattr(relax_ops, k))
        old[k] = getattr(relax_ops, k)
        setattr(relax_ops, k, v)
    return old


def lowering_overrides() -> dict:
    """The relax_ops constants that differ from their defaults now."""
    from graphad.lowering import relax_ops
    return {k: getattr(relax_ops, k) for k, d in _LOWERING_DEFAULTS.items() if getattr(relax_ops, k) != d}


def save(program: Program, disagreements: list[Disagreement], directory: str = NEW, name: str | None = None,
         note: str = "") -> str:
    """Write the fixture files; returns the path stem. The name defaults to check + a content hash."""
    os.makedirs(directory, exist_ok=True)
    text = ir_text(program)
    first = disagreements[0]
    if name is None:
        h = hashlib.sha256(text.encode() + repr([a.tobytes() for a in program.inputs]).encode()).hexdigest()[:10]
        name = f"{first.check}_{h}"
    stem = os.path.join(directory, name)
    with open(stem + ".gir", "w") as f:
        f.write(text + "\n")
    np.savez(stem + ".npz", **{n: np.asarray(a) for n, a in zip(program.graph.input_names, program.inputs)})
    meta = {
        "mode": program.mode, "seed": program.seed, "poison": program.poison, "batched": program.batched,
        "batch_size": program.batch_size, "compile_derived": program.compile_derived,
        "domains": [d.to_json() for d in program.domains],
        "disagreements": [{"check": d.check, "cause": d.cause, "detail": d.detail} for d in disagreements],
        "match": {"check": first.check, "cause": first.cause, "detail_contains": signature(first),
                  "prims": sorted({n.prim.name for n in program.graph.nodes})},
        "found": datetime.date.today().isoformat(),
        "note": note,
    }
    if lowering_overrides():
        meta["lowering"] = lowering_overrides()
    with open(stem + ".json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return stem


def load(stem: str) -> tuple[Program, dict]:
    """(Program, metadata) of the fixture at path stem (without extension)."""
    with open(stem + ".gir") as f:
        graph = parse_graph(f.read(), os.path.basename(stem) + ".gir")
    with open(stem + ".json") as f:
        meta = json.load(f)
    with np.load(stem + ".npz") as z:
        # (an .npz keeps bfloat16 as raw 2-byte records: read back as the graph's input type)
        inputs = [np.asarray(z[n]) if z[n].dtype.kind != "V" else np.asarray(z[n]).view(v.type.dtype.np)
                  for n, v in zip(graph.input_names, graph.inputs)]
    prog = Program(graph, inputs, [Domain.from_json(d) for d in meta["domains"]], meta["mode"], meta["seed"],
                   meta.get("poison", True), meta.get("batched", [False] * len(inputs)), meta.get("batch_size", 2),
                   meta.get("compile_derived", True))
    return prog, meta


def stems(directory: str) -> list[str]:
    """Fixture path stems in `directory` (not recursive), sorted."""
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, n[:-4]) for n in os.listdir(directory) if n.endswith(".gir"))
