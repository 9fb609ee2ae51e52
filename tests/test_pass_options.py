"""Passes declared one way: typed options, both pipeline syntaxes, statistics, rules as data, and
the global state the pass manager and the runtime keep (issue 16, second part).

The CLI side (listing, --help, fixtures of the brace syntax and of --pass-statistics) is in
tests/test_cli.py and tests/ir_fixtures/; this file tests the manager and simplify directly.
"""
from __future__ import annotations

import ast
import io
import re
import threading
import warnings
from collections import Counter
from pathlib import Path

import pytest

from graphad.cli.main import main
from graphad.errors import GraphadError
from graphad.ir.parser import parse_graph
from graphad.ir.printer import print_graph
from graphad.passes import manager
from graphad.passes.manager import (PASSES, Option, PassManager, describe_passes, format_pipeline,
                                    format_statistics, parse_pipeline)

ROOT = Path(__file__).resolve().parent.parent
PASSES_DIR = ROOT / "graphad" / "passes"

ALGEBRA = """\
func @alg(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3]) {
  %0 = constant() {dtype="float32", value=array<f32[]>1.0} : f32[]
  %1 = mul(%0, %x) : f32[2,3]
  %2 = neg(%1) : f32[2,3]
  %3 = neg(%2) : f32[2,3]
  %4 = add(%3, %y) : f32[2,3]
  return %4
}
"""


def _opts(text):
    return [(info.name, opts) for info, opts in parse_pipeline(text)]


# ---------------------------------------------------------------- syntax and types


@pytest.mark.parametrize("braces,colon", [
    ("reverse-ad{wrt=0,1 outputs=1},dce", "reverse-ad:wrt=0|1;outputs=1,dce"),
    ("reverse-ad{wrt=0,1,outputs=1},dce", "reverse-ad:wrt=0|1;outputs=1,dce"),
    ("vmap{size=8,batched=0}", "vmap:size=8;batched=0"),
    ("simplify{structure=false rounds=4},cse", "simplify:structure=0;rounds=4,cse"),
    ("forward-ad{wrt=2}", "forward-ad:wrt=2"),
])
def test_brace_and_colon_syntax_parse_to_the_same_typed_options(braces, colon):
    assert _opts(braces) == _opts(colon)


def test_options_are_typed_once_by_the_manager():
    (_, rev), (_, vm), (_, simp) = _opts("reverse-ad{wrt=0,2},vmap{size=3},simplify{structure=off rounds=5}")
    assert rev == {"wrt": [0, 2]}
    assert vm == {"size": 3}
    assert simp == {"structure": False, "rounds": 5}


def test_format_pipeline_round_trips():
    text = "reverse-ad{wrt=0,1 outputs=1},simplify{structure=false},vmap{size=2},cse,dce"
    parsed = parse_pipeline(text)
    assert format_pipeline(parsed) == text
    assert _opts(format_pipeline(parse_pipeline("reverse-ad:wrt=0|1;outputs=1"))) == _opts(
        "reverse-ad:wrt=0|1;outputs=1")


@pytest.mark.parametrize("pipeline,fragment", [
    ("vmap{size=four}", "pass vmap: option size=four: 'four' is not an integer"),
    ("vmap{size=0}", "pass vmap: option size must be at least 1, got 0"),
    ("vmap{size=2,3}", "pass vmap: option size takes one integer, got 2,3"),
    ("reverse-ad{wrt=1,1}", "pass reverse-ad: option wrt=1,1: index 1 is repeated"),
    ("simplify{structure=maybe}", "option structure=maybe: 'maybe' is not a boolean"),
    ("simplify{rounds=1 rounds=2}", "option rounds is given twice"),
    ("simplify{depth=1}", "pass simplify has no option 'depth'; it takes structure, rounds"),
    ("cse{x=1}", "pass cse has no option 'x'; it takes no options"),
    ("simplify{rounds=2", "one closing brace at the end"),
    ("simplify}", "unbalanced"),
    ("simplfy{rounds=2}", "unknown pass 'simplfy' (did you mean simplify?)"),
    ("reverse-ad{0}", "pass option '0' must be key=value"),
])
def test_bad_options_are_refused_before_any_pass_runs(pipeline, fragment):
    with pytest.raises(GraphadError) as ei:
        parse_pipeline(pipeline)
    assert fragment in str(ei.value)


def test_a_required_option_is_named_when_missing():
    g = parse_graph(ALGEBRA)
    with pytest.raises(GraphadError, match=r"pass vmap: vmap needs the batch size: vmap\{size=N\}"):
        PassManager("vmap").run(g)


def test_every_pass_is_declared_with_register_pass_and_typed_options():
    for info in describe_passes():
        assert info.takes_stats, f"{info.name} was not registered with register_pass"
        for o in info.options:
            assert isinstance(o, Option) and o.type in manager.OPTION_TYPES and o.help, (info.name, o)
    # one way only: no module but manager.py builds PassInfo records or fills PASSES itself
    for path in PASSES_DIR.glob("*.py"):
        if path.name == "manager.py":
            continue
        text = path.read_text()
        assert "PassInfo(" not in text and "PASSES[" not in text, path.name


def test_a_pass_module_that_fails_to_import_is_an_error_not_a_missing_pass(monkeypatch):
    """Pass discovery no longer swallows ImportError: a broken pass module surfaces."""
    import importlib
    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "graphad.passes.vmap":
            raise ImportError("broken on purpose")
        return real(name, *a, **k)
    monkeypatch.setattr(manager, "_LOADED", False)
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ImportError, match="broken on purpose"):
        manager.load_pass_modules()


# ---------------------------------------------------------------- statistics


def _tiny_graph_for(name: str):
    """A graph every pass accepts, and its pipeline entry."""
    g = parse_graph(ALGEBRA)
    return g, {"vmap": "vmap{size=2}"}.get(name, name)


@pytest.mark.parametrize("name", sorted(PASSES) or ["cse", "dce", "forward-ad", "reverse-ad", "simplify", "vmap"])
def test_pass_statistics_work_on_every_pass(name, tmp_path):
    g, entry = _tiny_graph_for(name)
    path = tmp_path / "g.gir"
    path.write_text(ALGEBRA)
    out, err = io.StringIO(), io.StringIO()
    status = main(["opt", str(path), "--passes", entry, "--pass-statistics"], stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    report = err.getvalue()
    assert "Pass statistics report" in report and f"\n{entry}\n" in report
    pm = PassManager(entry)
    res = pm.run(g)
    (stats,) = pm.statistics
    assert stats["nodes-before"] == len(g.nodes) and stats["nodes-after"] == len(res.nodes)
    assert len(stats) > 2, f"{name} reports nothing of its own: {dict(stats)}"


def test_simplify_counts_rules_by_name_and_reports_its_fixed_point():
    pm = PassManager("simplify")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the fixed point warns nothing
        pm.run(parse_graph(ALGEBRA))
    (stats,) = pm.statistics
    assert stats["mul-one"] == 1 and stats["neg-neg"] == 1 and stats["fixed-point"] == 1
    text = format_statistics(pm.pipeline, pm.statistics)
    assert re.search(r"^  fixed-point +yes$", text, re.M) and re.search(r"^  mul-one +1$", text, re.M)


def test_simplify_warns_when_it_stops_short_of_its_fixed_point():
    """It stopped silently after MAX_ROUNDS rounds; now the statistics say so and it warns."""
    from graphad.passes.simplify import simplify
    stats = Counter()
    with pytest.warns(RuntimeWarning, match="stopped after 1 round"):
        simplify(parse_graph(ALGEBRA), max_rounds=1, stats=stats)
    assert stats["fixed-point"] == 0 and stats["rounds"] == 1


def test_an_unchanged_graph_reaches_the_fixed_point_in_one_round():
    from graphad.passes.simplify import simplify
    g = parse_graph("func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = tanh(%x) : f32[3]\n  return %0\n}\n")
    stats = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = simplify(g, max_rounds=1, stats=stats)
    assert stats["fixed-point"] == 1 and stats["rounds"] == 0
    assert print_graph(out) == print_graph(g)


# ---------------------------------------------------------------- rules as data


def test_rules_are_rows_and_commutative_rows_match_both_operand_orders():
    from graphad.passes import simplify as s
    names = [r.name for r in s.RULES]
    assert len(names) == len(set(names)) and s.RULE_NAMES == sorted(names)
    by = {r.name: r for r in s.RULES}
    assert by["mul-one"].commutative and by["mul-zero"].commutative and by["add-zero"].commutative
    assert not by["sub-zero"].commutative and not by["div-one"].commutative
    for r in s.RULES:  # matched by primitive records, not by name strings
        assert all(not isinstance(p, str) for p in r.prims), r.name
    for src in ("mul(%0, %x)", "mul(%x, %0)"):
        g = parse_graph(ALGEBRA.replace("mul(%0, %x)", src))
        stats = Counter()
        s.simplify(g, stats=stats)
        assert stats["mul-one"] == 1, src


def test_every_rule_row_has_a_fixture_naming_it():
    from graphad.passes.simplify import RULES
    text = "\n".join(p.read_text() for p in (ROOT / "tests" / "simplify_fixtures").glob("*.gir"))
    for r in RULES:
        assert f"// RULE: {r.name}" in text, r.name


def test_no_blanket_except_in_the_passes():
    """No `except Exception` (or bare except) around kernels in graphad/passes: real errors surface."""
    for path in PASSES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler):
                assert node.type is not None, f"{path.name}:{node.lineno}: bare except"
                names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)]
                assert "Exception" not in names and "BaseException" not in names, f"{path.name}:{node.lineno}"


def test_a_kernel_bug_while_folding_surfaces(monkeypatch):
    """Folding skips a kernel that refuses its data (left for the run), but a bug in a kernel is
    not hidden as "no rewrite" any more."""
    from graphad.passes import simplify as s

    def buggy(*a, **k):
        raise RuntimeError("kernel bug")
    monkeypatch.setattr(s, "run_impl", buggy)
    g = parse_graph("func @f() -> (f32[2]) {\n"
                    "  %0 = constant() {dtype=\"float32\", value=array<f32[2]>[1.0, 2.0]} : f32[2]\n"
                    "  %1 = tanh(%0) : f32[2]\n  return %1\n}\n")
    with pytest.raises(RuntimeError, match="kernel bug"):
        s.simplify(g)


def test_simplify_and_structure_do_not_import_each_other():
    for name, other in (("structure.py", "simplify"), ("fills.py", "simplify"), ("fills.py", "structure")):
        tree = ast.parse((PASSES_DIR / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in (other, f"graphad.passes.{other}"), f"{name} imports {other}"
    assert "RewriteTrace" not in (PASSES_DIR / "simplify.py").read_text()
    assert "RewriteTrace" not in (PASSES_DIR / "structure.py").read_text()


# ---------------------------------------------------------------- global state


def test_key_locks_are_dropped_when_no_thread_uses_them():
    from graphad.runtime import cache
    before = dict(cache._key_locks)
    with cache._key_lock("k1"):
        assert "k1" in cache._key_locks
    assert cache._key_locks == before

    order = []
    inside = threading.Event()
    release = threading.Event()

    def first():
        with cache._key_lock("k2"):
            inside.set()
            release.wait(5)
            order.append("first")

    def second():
        inside.wait(5)
        with cache._key_lock("k2"):
            order.append("second")
    t1, t2 = threading.Thread(target=first), threading.Thread(target=second)
    t1.start()
    t2.start()
    inside.wait(5)
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first", "second"]  # one thread per key at a time
    assert cache._key_locks == before


def test_registered_primitives_are_immutable():
    from graphad.prims.registry import PRIMITIVES
    for prim in PRIMITIVES.values():
        with pytest.raises(AttributeError, match="registered and immutable"):
            prim.shape_rule = None
    # the records that were patched after registration are complete from the start
    assert PRIMITIVES["logical_not"].shape_rule is not None
    assert PRIMITIVES["max"].shape_rule is PRIMITIVES["min"].shape_rule


def test_pass_keys_do_not_use_object_ids():
    """cse keyed nodes by id() of their operands; an id is reused once its object is freed."""
    for path in PASSES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "id", f"{path.name}:{node.lineno} calls id()"


def test_staging_keys_hold_objects_not_ids():
    """Cache keys of transformed functions name an unhashable function or the weights by identity,
    holding them, so a freed object's id reused by a new one cannot find the old staged graph."""
    import gc

    import graphad as gd
    from graphad import api
    from graphad.frontend.function import IdentityKey, fn_key

    class Unhashable:
        __hash__ = None

        def __call__(self, x):
            return x * 2.0

    f, g = Unhashable(), Unhashable()
    assert isinstance(fn_key(f), IdentityKey)
    assert fn_key(f) == fn_key(f) and fn_key(f) != fn_key(g) and hash(fn_key(f)) == hash(fn_key(f))
    w = [gd.ops.ones((2,)), gd.ops.ones((2,))]
    key = api._wkey(w)  # ("ws", the container's kind, one IdentityKey per weight)
    assert all(isinstance(k, IdentityKey) for k in key[2:]) and key == api._wkey(w)
    assert key != api._wkey([gd.ops.ones((2,)), gd.ops.ones((2,))]) and key != api._wkey(tuple(w))
    probe = key[2].obj
    del w
    gc.collect()
    assert key[2].obj is probe  # the key keeps its object: its id cannot be taken by another


def test_staging_cache_is_read_under_its_lock():
    """Every access to _STAGED in frontend/function.py happens inside `with _lock:`."""
    path = ROOT / "graphad" / "frontend" / "function.py"
    tree = ast.parse(path.read_text())
    locked: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(isinstance(i.context_expr, ast.Name) and i.context_expr.id == "_lock"
                                              for i in node.items):
            locked |= {n.lineno for b in node.body for n in ast.walk(b) if hasattr(n, "lineno")}
    uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "_STAGED"
            and not isinstance(n.ctx, ast.Store)]
    unlocked = [ln for ln in uses if ln not in locked]
    assert uses and not unlocked, f"_STAGED read outside its lock at lines {unlocked}"


def test_statistics_of_several_funcs_add_up_and_the_fixed_point_must_hold_for_all(tmp_path):
    """`graphad opt` on a file of several funcs reports one block per pass, summed over the funcs;
    zero counts stay listed and `fixed-point` is yes only if every func reached it."""
    from graphad.passes.manager import merge_statistics
    assert merge_statistics(Counter({"a": 1, "fixed-point": 1}), Counter({"a": 0, "b": 0, "fixed-point": 0})) == \
        Counter({"a": 1, "b": 0, "fixed-point": 0})
    still = "func @g(%x: f32[3]) -> (f32[3]) {\n  %0 = tanh(%x) : f32[3]\n  return %0\n}\n"
    path = tmp_path / "two.gir"
    path.write_text(ALGEBRA + still)
    out, err = io.StringIO(), io.StringIO()
    assert main(["opt", str(path), "--passes", "simplify{rounds=1},cse", "--pass-statistics"],
                stdout=out, stderr=err) == 0
    report = err.getvalue()
    assert re.search(r"^  fixed-point +no$", report, re.M), report
    assert re.search(r"^  nodes-merged +0$", report, re.M), report
    assert report.count("warning: simplify stopped after 1 round(s) of @alg") == 1
    out, err = io.StringIO(), io.StringIO()
    assert main(["opt", str(path), "--passes", "simplify", "--pass-statistics"], stdout=out, stderr=err) == 0
    assert re.search(r"^  fixed-point +yes$", err.getvalue(), re.M) and "warning" not in err.getvalue()
    assert re.search(r"^  nodes-before +6$", err.getvalue(), re.M)  # 5 + 1 nodes


def test_the_options_table_of_docs_passes_md_is_the_declared_options():
    """docs/passes.md's option table lists exactly the declared options, with their types and defaults."""
    text = (ROOT / "docs" / "passes.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| `([a-z-]+)` \| ([^|]+?) \| ([^|]+?) \|", text, re.M)
    documented = {(p, o): (t.split(" ")[0], d) for p, o, t, d in rows}
    declared = {(info.name, o.flag): (o.type, "required" if o.required_hint else o.describe_default())
                for info in describe_passes() for o in info.options}
    assert documented == declared
