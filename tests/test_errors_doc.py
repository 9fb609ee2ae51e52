"""docs/errors.md lists every error kind a user can meet, each with a snippet that raises exactly it.

The kinds are GraphadError and every subclass of it defined anywhere in graphad (all modules are
imported first, so a new subclass in any module is found), plus the Python exceptions graphad
raises on purpose (Python's own protocols). Each must have a row in the table of docs/errors.md
and a ```python raises=<Kind> block; the block is run by the docs runner of tests/test_docs.py
(the file's blocks in order, in one namespace, once per process) and must raise exactly that
class, not a subclass or a parent.
"""
from __future__ import annotations

import re

import pytest

from test_docs import ROOT, all_graphad_errors, check_block, exception_class, parse_blocks

ERRORS_MD = "docs/errors.md"
# Python's own exceptions that graphad raises deliberately, where it implements a Python protocol
PYTHON_PROTOCOL_ERRORS = ("TypeError", "NotImplementedError")


def _kinds() -> list[str]:
    return [c.__name__ for c in all_graphad_errors()] + list(PYTHON_PROTOCOL_ERRORS)


def _table_rows() -> set[str]:
    with open(f"{ROOT}/{ERRORS_MD}", encoding="utf-8") as f:
        text = f.read()
    return set(re.findall(r"^\|\s*`(\w+)`", text, flags=re.M))


def _raising_blocks() -> dict[str, list]:
    out: dict[str, list] = {}
    for b in parse_blocks(ERRORS_MD):
        if b.raises:
            out.setdefault(b.raises, []).append(b)
    return out


def test_every_error_kind_has_a_row_and_a_snippet():
    """No error class exists without documentation, and the docs name no class that does not exist."""
    kinds, rows, blocks = set(_kinds()), _table_rows(), _raising_blocks()
    assert kinds - rows == set(), f"error kinds missing from the table of {ERRORS_MD}: {sorted(kinds - rows)}"
    assert rows - kinds == set(), f"{ERRORS_MD} lists kinds graphad does not raise: {sorted(rows - kinds)}"
    assert kinds - set(blocks) == set(), f"no ```python raises=KIND snippet for {sorted(kinds - set(blocks))}"
    assert set(blocks) - kinds == set(), f"snippets expect unknown kinds {sorted(set(blocks) - kinds)}"


@pytest.mark.parametrize("kind", _kinds())
def test_snippet_raises_exactly_its_kind(kind):
    """Each documented kind's snippet(s) raise exactly that class (and print what the doc shows)."""
    cls = exception_class(kind)
    assert cls.__name__ == kind
    blocks = _raising_blocks().get(kind)
    if not blocks:
        pytest.fail(f"{ERRORS_MD} has no ```python raises={kind} snippet")
    for b in blocks:
        assert not b.xfail, f"{b.id}: an error snippet may not be an expected failure"
        check_block(b)
