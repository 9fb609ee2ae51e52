"""docs/api.md, the API reference, is generated from the code (graphad/cli/api_doc.py) and cannot
go stale: the file is what the generator writes, every public name is placed in a section, and
every name on the page has a docstring of its own."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import graphad as gd
from graphad.cli import api_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The names on the page without a docstring of their own today (graphad/cli/api_doc.py
# `undocumented()`). A ratchet: a new undocumented name fails the test, and so does a name here
# that has gained a docstring (remove it from this list). Each one is a docstring to write.
# The two left are __slots__ attributes: a slot's member descriptor has no writable __doc__, and
# api_doc reads `__doc__` (a dict __slots__ gives a docstring that only inspect.getdoc finds); the
# class's docstring (TensorSpec) describes them.
KNOWN_UNDOCUMENTED = frozenset({
    "graphad.TensorSpec.dtype", "graphad.TensorSpec.shape",
})


def test_api_md_is_generated_from_the_code():
    """docs/api.md is exactly what `python -m graphad.cli.api_doc` writes."""
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        doc = f.read()
    assert doc == api_doc.render(), "docs/api.md is stale: run .venv/bin/python -m graphad.cli.api_doc"


def test_render_is_the_same_in_another_process():
    """No memory address, hash order or import order leaks into the page: a fresh process (another
    hash seed) renders the same bytes."""
    env = dict(os.environ, PYTHONHASHSEED="12345")
    r = subprocess.run([sys.executable, "-c", "import sys; from graphad.cli.api_doc import render; "
                        "sys.stdout.write(render())"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == api_doc.render()
    assert "0x" not in r.stdout and "object at" not in r.stdout


def test_every_name_on_the_page_has_a_docstring():
    """Every documented function, class and member has a docstring of its own (not one inherited
    from a base class); KNOWN_UNDOCUMENTED lists today's gaps and may only shrink."""
    missing = set(api_doc.undocumented())
    new = sorted(missing - KNOWN_UNDOCUMENTED)
    assert not new, f"names on docs/api.md without a docstring: {new} (write one; KNOWN_UNDOCUMENTED may only shrink)"
    fixed = sorted(KNOWN_UNDOCUMENTED - missing)
    assert not fixed, f"these now have a docstring (or left the page): remove them from KNOWN_UNDOCUMENTED: {fixed}"


def test_render_raises_for_a_public_name_in_no_section(monkeypatch):
    """A new public top-level function that no section places makes render() fail, naming it."""
    def shiny_new_transform(fn):
        """A public function nobody placed in docs/api.md."""
        return fn
    shiny_new_transform.__module__ = "graphad.api"
    monkeypatch.setattr(gd, "shiny_new_transform", shiny_new_transform, raising=False)
    with pytest.raises(RuntimeError, match="graphad.shiny_new_transform"):
        api_doc.render()


def test_render_raises_for_a_public_nn_name_in_no_section(monkeypatch):
    """The same for graphad.nn (a new layer)."""
    import graphad.nn as nn

    class ShinyLayer(nn.Cell):
        """A layer nobody placed in docs/api.md."""
    ShinyLayer.__module__ = "graphad.nn.layers"
    monkeypatch.setattr(nn, "ShinyLayer", ShinyLayer, raising=False)
    with pytest.raises(RuntimeError, match="graphad.nn.ShinyLayer"):
        api_doc.render()


def test_every_public_top_level_name_is_on_the_page():
    """The sections place every public callable and class of graphad (the converse of the check in
    render(), read from the page itself); the dtypes and the error classes are tables."""
    text = api_doc.render()
    for name in dir(gd):
        obj = getattr(gd, name)
        if name.startswith("_") or isinstance(obj, type(gd)) or not callable(obj):
            continue
        assert f"`graphad.{name}`" in text or f"| `{name}` |" in text, f"graphad.{name} is not on docs/api.md"


def test_the_page_runs_no_code():
    """docs/api.md holds no ```python block (tests/test_docs.py would run it): docstrings and
    signatures are ```text blocks and inline code."""
    from test_docs import parse_blocks
    blocks = parse_blocks(os.path.join("docs", "api.md"))
    assert blocks, "no blocks parsed from docs/api.md"
    assert {b.lang for b in blocks} == {"text"}, sorted({b.lang for b in blocks})
