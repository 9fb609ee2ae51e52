"""Rule coverage: walks graphad.prims.PRIMITIVES and fails (never skips) on any missing rule.

DESIGN principle 3: every primitive has a shape rule, a NumPy reference kernel, a batching rule
and either a jvp and a vjp or a `nondiff` reason; a one-line formula (principle 8); an entry in
the oracle tests' case table (tests/prim_cases.py); and a Relax lowering (graphad/lowering).
"""
from __future__ import annotations

import importlib.util

import pytest

from graphad.prims import PRIMITIVES

from prim_cases import CASES

NAMES = sorted(PRIMITIVES)


def test_registry_is_not_empty():
    assert len(PRIMITIVES) > 40, f"only {len(PRIMITIVES)} primitives registered"


@pytest.mark.parametrize("name", NAMES)
def test_primitive_has_every_rule(name):
    p = PRIMITIVES[name]
    assert p.name == name, f"registered as {name!r} but named {p.name!r}"
    missing = [r for r in ("shape_rule", "impl", "batch") if not callable(getattr(p, r, None))]
    assert not missing, f"primitive {name!r} lacks {', '.join(missing)}"
    if p.nondiff is None:
        lacking = [r for r in ("jvp", "vjp") if not callable(getattr(p, r, None))]
        assert not lacking, (f"primitive {name!r} lacks {' and '.join(lacking)}; give it the rule(s), or a "
                             f"`nondiff` reason saying why it has no derivative")
    else:
        assert isinstance(p.nondiff, str) and p.nondiff.strip(), \
            f"primitive {name!r}: `nondiff` must be a non-empty reason, got {p.nondiff!r}"


@pytest.mark.parametrize("name", NAMES)
def test_primitive_states_its_formula(name):
    p = PRIMITIVES[name]
    assert isinstance(p.formula, str) and p.formula.strip() and "\n" not in p.formula.strip(), \
        f"primitive {name!r} must carry its forward/backward formula in one line (DESIGN principle 8)"


@pytest.mark.parametrize("name", NAMES)
def test_primitive_has_oracle_cases(name):
    assert CASES.get(name), (f"primitive {name!r} has no entry in tests/prim_cases.py CASES, so the reference, "
                             f"derivative and batching oracles do not cover it")


def test_case_table_has_no_stale_entries():
    stale = sorted(set(CASES) - set(PRIMITIVES))
    assert not stale, f"tests/prim_cases.py has cases for unregistered primitives: {stale}"


def test_every_primitive_has_a_lowering():
    if importlib.util.find_spec("graphad.lowering") is None:
        pytest.fail("graphad.lowering does not exist: every primitive needs a Relax lowering (DESIGN principle 2)")
    from graphad.lowering import missing_lowerings
    missing = missing_lowerings()
    assert missing == [], f"primitives without a Relax lowering in graphad/lowering/relax_ops.py: {missing}"


def test_lowering_table_has_no_stale_entries():
    from graphad.lowering.relax_ops import LOWERINGS
    stale = sorted(set(LOWERINGS) - set(PRIMITIVES))
    assert not stale, f"lowerings for unregistered primitives: {stale}"
