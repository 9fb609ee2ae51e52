"""Docs that cannot lie: every ```python block of README.md and docs/*.md runs, and the docs' claims
about the code are checked against the code.

The runner (no plugin: pytest-markdown-docs runs each fence as its own test and shares names only
through a per-fence `continuation` flag that re-runs the earlier fences, and it has no notion of an
expected exception or of an output block) executes the blocks of one file in order, in one
namespace, once per test process, as a user pasting them into one session would: with the default
compiled backend (TVM), in a scratch working directory, each block compiled under the file's name
with its real line numbers (so a traceback or a `loc(...)` names the doc's line). Each block is
then reported as its own test, `test_doc_block[<file>:<line>]`.

Fence syntax (the first word of the info string is the language, the rest are flags):
  ```python                  runs
  ```python no-run           is not run (shell fragments, pseudo-code): to be rare
  ```python raises=KindError runs and must raise exactly that exception class (not a subclass)
  ```text output             right after a python block: that block's expected stdout (after a
                             raises= block: stdout, then the exception's last traceback line),
                             compared line by line; trailing spaces are ignored, a line `...`
                             matches any lines and `...` within a line any text
  <!-- xfail: REASON -->     on the line before a fence: the block is expected to fail (a known bug
                             elsewhere); reported as a strict xfail, so the fix flips it
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass, field

import pytest

import graphad as gd
from graphad.errors import GraphadError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                                   if f.endswith(".md"))
PYTHON = ("python", "py", "python3")

_FENCE = re.compile(r"^(`{3,})\s*(.*)$")
_XFAIL = re.compile(r"^<!--\s*xfail:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block of a markdown file."""
    path: str                 # relative to the repository root
    line: int                 # 1-based line of the block's first code line
    lang: str
    flags: dict
    code: str
    xfail: str | None = None
    output: str | None = None  # the expected stdout (a following ```text output block)
    output_line: int = 0

    @property
    def runs(self) -> bool:
        return self.lang in PYTHON and "no-run" not in self.flags

    @property
    def raises(self) -> str | None:
        return self.flags.get("raises")

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def parse_blocks(path: str) -> list[Block]:
    """The fenced blocks of a markdown file, output blocks attached to the python block before them."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks: list[Block] = []
    i, prev_text = 0, ""
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev_text = lines[i]
            i += 1
            continue
        ticks, info = m.group(1), m.group(2).split()
        j = i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: unclosed code fence")
        lang = info[0].lower() if info else ""
        flags = {}
        for w in info[1:]:
            k, _, v = w.partition("=")
            flags[k] = v or True
        x = _XFAIL.match(prev_text)
        b = Block(path, i + 2, lang, flags, "\n".join(lines[i + 1:j]) + "\n", xfail=x.group(1) if x else None)
        between_blank = blocks and all(not s.strip() for s in lines[blocks[-1].line + blocks[-1].code.count("\n"):i])
        if "output" in flags and lang not in PYTHON:
            prior = blocks[-1] if blocks else None
            if prior is None or prior.lang not in PYTHON or prior.output is not None or not between_blank:
                raise AssertionError(f"{path}:{i + 1}: an output block must follow a python block directly")
            prior.output, prior.output_line = b.code, b.line
        else:
            blocks.append(b)
        prev_text = ""
        i = j + 1
    return blocks


def _python_blocks(path: str) -> list[Block]:
    return [b for b in parse_blocks(path) if b.lang in PYTHON]


# ---------------------------------------------------------------- running a file's blocks once

@dataclass
class Outcome:
    """What running one block did: the exception it raised (with its traceback text) and its stdout."""
    error: BaseException | None = None
    tb: str = ""
    stdout: str = ""
    extra: list = field(default_factory=list)


_RESULTS: dict[str, dict[int, Outcome]] = {}


def _exec_block(b: Block, ns: dict) -> Outcome:
    code = compile("\n" * (b.line - 1) + b.code, b.path, "exec")
    out = io.StringIO()
    res = Outcome()
    try:
        with contextlib.redirect_stdout(out):
            exec(code, ns)
    except Exception as e:  # noqa: BLE001  (recorded: the block's test reports it)
        res.error = e
        res.tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
    res.stdout = out.getvalue()
    return res


def run_file(path: str) -> dict[int, Outcome]:
    """Run every runnable python block of `path` in order in one namespace (once per process)."""
    if path in _RESULTS:
        return _RESULTS[path]
    results: dict[int, Outcome] = {}
    ns: dict = {"__name__": "__docs__", "__file__": os.path.join(ROOT, path)}
    scratch = tempfile.mkdtemp(prefix="graphad-docs-")
    cwd, backend = os.getcwd(), gd.get_backend()
    try:
        os.chdir(scratch)
        gd.set_backend("tvm")  # what a user gets: the compiled path
        for b in _python_blocks(path):
            if b.runs:
                results[b.line] = _exec_block(b, ns)
    finally:
        os.chdir(cwd)
        gd.set_backend(backend)
        shutil.rmtree(scratch, ignore_errors=True)
    _RESULTS[path] = results
    return results


def _output_matches(got: str, want: str) -> bool:
    """Line-by-line equality (trailing spaces and blank lines ignored): a line `...` matches any number
    of lines, and `...` inside a line matches any text there."""
    g = [s.rstrip() for s in got.rstrip().split("\n")]
    w = [s.rstrip() for s in want.rstrip().split("\n")]

    def same(line: str, pattern: str) -> bool:
        return re.fullmatch(".*".join(map(re.escape, pattern.split("..."))), line) is not None

    def match(i, j):
        if j == len(w):
            return i == len(g)
        if w[j] == "...":
            return any(match(k, j + 1) for k in range(i, len(g) + 1))
        return i < len(g) and same(g[i], w[j]) and match(i + 1, j + 1)
    return match(0, 0)


def exception_class(name: str) -> type:
    """The exception class a `raises=` flag names: a GraphadError subclass anywhere in graphad, or a builtin."""
    for cls in all_graphad_errors():
        if cls.__name__ == name:
            return cls
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    raise AssertionError(f"raises={name}: no such exception class in graphad or builtins")


def all_graphad_errors() -> list[type]:
    """GraphadError and every subclass of it defined in graphad (all graphad modules imported first)."""
    import pkgutil
    import importlib
    for m in pkgutil.walk_packages(gd.__path__, "graphad."):
        if m.name.startswith("graphad.cli.__main__"):
            continue
        importlib.import_module(m.name)
    out, todo = [], [GraphadError]
    while todo:
        c = todo.pop()
        if c.__module__.startswith("graphad"):
            out.append(c)
        todo.extend(c.__subclasses__())
    return sorted(set(out), key=lambda c: c.__name__)


def check_block(b: Block) -> None:
    """Assert that block `b` behaved as its fence says (ran cleanly, raised its kind, printed its output)."""
    res = run_file(b.path)[b.line]
    if b.raises:
        want = exception_class(b.raises)
        assert res.error is not None, f"{b.id}: expected {b.raises}, nothing was raised"
        assert type(res.error) is want, (f"{b.id}: expected exactly {b.raises}, got "
                                         f"{type(res.error).__module__}.{type(res.error).__name__}:\n{res.tb}")
    elif res.error is not None:
        raise AssertionError(f"{b.id}: the block raised\n{res.tb}")
    if b.output is not None:
        shown = res.stdout
        if b.raises:  # the output block shows what the user sees: stdout, then the exception's line
            shown += "".join(traceback.format_exception_only(type(res.error), res.error))
        assert _output_matches(shown, b.output), (
            f"{b.id}: the block printed\n{shown}\nbut the doc shows (line {b.output_line})\n{b.output}")


def _block_params():
    for path in DOC_FILES:
        for b in _python_blocks(path):
            if not b.runs:
                continue
            marks = [pytest.mark.tvm]
            if b.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=b.xfail))
            yield pytest.param(b, id=b.id, marks=marks)


@pytest.mark.parametrize("block", list(_block_params()))
def test_doc_block(block):
    """The block runs (in order, after the file's earlier blocks) and does what its fence says."""
    check_block(block)


def test_docs_have_python_blocks_and_few_no_run():
    """The runner sees the blocks (a parse slip would silently test nothing); no-run stays rare."""
    blocks = [b for p in DOC_FILES for b in _python_blocks(p)]
    assert sum(b.runs for b in blocks) >= 8, [b.id for b in blocks]
    no_run = [b.id for b in blocks if not b.runs]
    assert len(no_run) <= 2, f"too many python blocks marked no-run: {no_run}"
    for b in blocks:
        if b.xfail:
            assert len(b.xfail) > 15, f"{b.id}: an xfail marker needs a reason"


# ---------------------------------------------------------------- claims about the code

def test_cli_md_is_regenerated_from_its_template():
    """docs/cli.md is docs/cli.md.in with the ```run blocks replaced by transcripts (tools/gen_cli_doc.py)."""
    with open(os.path.join(ROOT, "docs", "cli.md.in"), encoding="utf-8") as f:
        src = re.sub(r"```run\n.*?```", "<RUN>", f.read(), flags=re.S)
    with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as f:
        doc = re.sub(r"```console\n.*?```", "<RUN>", f.read(), flags=re.S)
    assert src == doc, "docs/cli.md is stale: edit docs/cli.md.in and run .venv/bin/python tools/gen_cli_doc.py"


def _documented_layers() -> list[set[str]]:
    """The rows of docs/architecture.md's layer table, lowest first, as sets of module names."""
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Layers", 1)[1]
    rows = re.findall(r"^\|\s*(\w+)\s*\|\s*([^|]*?)\s*\|\s*$", section, flags=re.M)
    layers = []
    for _, right in rows:
        names = re.findall(r"`([\w./]+?)`", right)
        if not names:  # the header row
            continue
        layers.append({"graphad." + n.rstrip("/").removesuffix(".py").replace("/", ".") for n in names})
    assert layers, "docs/architecture.md: no layer table under ## Layers"
    return layers


def _contract_layers() -> list[set[str]]:
    """The `layers` import-linter contract of pyproject.toml, lowest first."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    return [set(re.split(r"\s*[|:]\s*", layer.strip())) for layer in reversed(contract["layers"])]


def test_ops_md_is_generated_from_the_registry():
    """docs/ops.md is exactly what graphad/ops/table.py writes from the registry, the lowering table
    and graphad.ops (so the op table cannot drift from the code)."""
    from graphad.ops.table import render
    with open(os.path.join(ROOT, "docs", "ops.md"), encoding="utf-8") as f:
        doc = f.read()
    assert doc == render(), "docs/ops.md is stale: run .venv/bin/python -m graphad.ops.table"


def test_architecture_layers_are_the_real_imports():
    """docs/architecture.md's layer table is the import-linter contract that tests/test_layers.py
    holds the real imports to (lazy ones included): the same layers, in the same order."""
    doc, contract = _documented_layers(), _contract_layers()
    assert doc == contract, (f"docs/architecture.md ## Layers lists {doc}, lowest first; the contract in "
                             f"pyproject.toml lists {contract}")


def _tvm_imports() -> list[tuple[str, bool]]:
    """(file, at module level?) for every `import tvm...` / `from tvm...` in graphad."""
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "graphad")):
        for fn in files:
            if fn.endswith(".py"):
                path = os.path.join(dirpath, fn)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                top = {id(n) for n in tree.body}
                for n in ast.walk(tree):
                    names = ([a.name for a in n.names] if isinstance(n, ast.Import)
                             else [n.module or ""] if isinstance(n, ast.ImportFrom) and not n.level else [])
                    if any(x == "tvm" or x.startswith(("tvm.", "tvm_ffi")) for x in names):
                        found.append((os.path.relpath(path, ROOT), id(n) in top))
    return found


def test_tvm_is_imported_only_where_the_docs_say():
    """TVM is imported only by lowering/, runtime/ and cli/, always inside functions (when compiling)."""
    for path, top in _tvm_imports():
        assert path.startswith(("graphad/lowering/", "graphad/runtime/", "graphad/cli/")), path
        assert not top, f"{path} imports TVM at module level"
    import subprocess
    r = subprocess.run([sys.executable, "-c", "import sys, graphad as gd; from graphad import ops;"
                        "gd.set_backend('numpy'); gd.grad(lambda x: ops.sin(x).sum())(gd.Tensor([1.0]));"
                        "print(any(m == 'tvm' or m.startswith('tvm.') for m in sys.modules))"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.strip() == "False", f"importing graphad and running the NumPy backend imported TVM: {r.stderr}"


GENERIC_PASSES = ("reverse_ad.py", "forward_ad.py", "vmap.py", "stop_gradient.py", "cleanup.py", "rewrite.py")


def test_transformation_passes_never_name_a_primitive():
    """docs/architecture.md: the AD, vmap, activity and cse/dce passes ask the primitive's record (rules,
    traits, nondiff) and never name a primitive (only simplify's rule tables do)."""
    from graphad.prims import PRIMITIVES
    for fn in GENERIC_PASSES:
        path = os.path.join(ROOT, "graphad", "passes", fn)
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and "prims" in n.module:
                # the registry, the helpers, the trace stack and the op functions (prims.lax, what
                # graphad.ops re-exports) are generic; a family module (elementwise...) is a primitive
                generic = ("registry", "_util", "trace", "lax")
                ok = n.module.endswith(generic) or all(a.name in generic for a in n.names)
                assert ok, f"{fn} imports {[a.name for a in n.names]} from {n.module}"
            if isinstance(n, ast.Compare) and isinstance(n.left, ast.Attribute) and n.left.attr == "name":
                lits = [c for c in ast.walk(n) if isinstance(c, ast.Constant) and c.value in PRIMITIVES]
                assert not lits, f"{fn}:{n.lineno} compares a primitive's name with {lits[0].value!r}"
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and n.slice.value in PRIMITIVES:
                raise AssertionError(f"{fn}:{n.lineno} looks up primitive {n.slice.value!r} by name")


def test_documented_passes_exist_and_every_pass_is_documented():
    """The pass table of docs/passes.md is exactly the registered passes (`graphad passes`)."""
    from graphad.passes.manager import PASSES, load_pass_modules
    load_pass_modules()
    with open(os.path.join(ROOT, "docs", "passes.md"), encoding="utf-8") as f:
        text = f.read()
    table = set(re.findall(r"^\|\s*`([a-z][a-z-]*)`\s*\|", text, flags=re.M))
    assert table == set(PASSES), (f"docs/passes.md lists {sorted(table - set(PASSES))} that do not exist and "
                                  f"misses {sorted(set(PASSES) - table)}")
    for path in DOC_FILES + ["docs/cli.md.in"]:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            for name in re.findall(r"`([a-z]+(?:-[a-z]+)+)` pass", f.read()):
                assert name in PASSES, f"{path} mentions a pass {name!r} that does not exist"


def test_paths_named_in_the_docs_exist():
    """Every repository path the docs name in backticks (graphad/..., tests/..., docs/...) exists."""
    pat = re.compile(r"`((?:graphad|tests|examples|benchmarks|tools|docs)/[\w./-]*?)(?::\w+)?`")
    for path in DOC_FILES:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        for p in pat.findall(text):
            if "<" in p or "*" in p:
                continue
            assert os.path.exists(os.path.join(ROOT, p.rstrip("/"))), f"{path} names {p}, which does not exist"


def test_ir_examples_in_the_docs_parse_and_verify():
    """Every fenced block of textual IR (one that starts with `func @`) parses and passes the verifier."""
    from graphad.ir import parse_graph, print_graph, verify
    seen = 0
    for path in DOC_FILES:
        for b in parse_blocks(path):
            if b.code.lstrip().startswith("func @") and "..." not in b.code:
                g = parse_graph(b.code, source_name=b.path)
                verify(g)
                assert print_graph(parse_graph(print_graph(g))) == print_graph(g), b.id
                seen += 1
    assert seen, "no IR example found in the docs"
