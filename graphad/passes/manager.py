"""The pass manager: named Graph -> Graph passes with typed options, pipelines, statistics, instruments.

Every pass is declared one way, with `register_pass` in its own module (cleanup.py, reverse_ad.py,
forward_ad.py, vmap.py, simplify.py): a kebab-case name, a one-line summary, a post-condition and
its typed options (`Option`: name, type, default, help). The manager parses a pipeline string once
into typed values and calls the pass with them, plus a `stats` Counter the pass fills (rewrites per
rule, ...); it adds the node counts before and after. Pipelines are written as mlir-opt writes them,

    reverse-ad{wrt=0,1 outputs=1},simplify{rounds=8},cse,dce

options inside braces as key=value separated by commas or spaces, a list option taking several
comma-separated values. The older spelling `reverse-ad:wrt=0|1;outputs=1` is still read (its `|`
and `;` are shell metacharacters, so it needs quotes). Instruments observe every pass: print
before/after/on change, verify after each, time each and dump DOT per pass. The API and the CLI
both run passes through `PassManager`.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GraphadError
from ..ir.core import Graph

# option types: how a value is written and read
OPTION_TYPES = ("int", "bool", "str", "int-list")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """A typed pass option: `name` (a Python identifier, written kebab-case), `type` (one of
    OPTION_TYPES), `default` (None: not given), `help`; `default_text` describes a default that
    depends on the graph (None's meaning); `minimum` bounds an int; `distinct` forbids repeated
    items in an int-list; `required` makes the pass refuse to run without it (`required_hint`
    says how to give it)."""
    name: str
    type: str
    default: Any = None
    help: str = ""
    default_text: str = ""
    minimum: int | None = None
    distinct: bool = False
    required_hint: str = ""

    def __post_init__(self):
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name}: unknown type {self.type!r} (one of {', '.join(OPTION_TYPES)})")

    @property
    def flag(self) -> str:
        """The name as written in a pipeline (kebab-case)."""
        return self.name.replace("_", "-")

    def describe_default(self) -> str:
        """The default as `graphad passes` shows it."""
        if self.required_hint:
            return "required"
        if self.default_text:
            return self.default_text
        if self.type == "bool":
            return "true" if self.default else "false"
        return str(self.default)

    def parse(self, pass_name: str, items: list[str], written: str) -> Any:
        """The typed value of the items given for this option (`written`: the value as the user
        wrote it, for messages); PassFailed naming the pass and option on a bad value."""
        def bad(msg):
            return PassFailed(pass_name, f"option {self.flag}={written}: {msg}")
        if self.type != "int-list" and len(items) != 1:
            what = "one integer" if self.type == "int" else "one value"
            raise PassFailed(pass_name, f"option {self.flag} takes {what}, got {written}")
        if self.type == "str":
            return items[0]
        if self.type == "bool":
            low = items[0].lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise bad(f"{items[0]!r} is not a boolean (true/false, 1/0)")
        out = []
        for x in items:
            try:
                i = int(x)
            except ValueError:
                raise bad(f"{x!r} is not an integer") from None
            if self.minimum is not None and i < self.minimum:
                raise PassFailed(pass_name, f"option {self.flag} must be at least {self.minimum}, got {i}")
            if self.distinct and i in out:  # wrt=0,0 would give two gradient outputs for one input
                raise bad(f"index {i} is repeated")
            out.append(i)
        return out if self.type == "int-list" else out[0]


@dataclass
class PassInfo:
    """A registered pass: kebab-case name, one-line summary, Graph -> Graph fn, post-condition and
    typed options. `fn(graph, **options)` gets every declared option (given or default) and, when
    `takes_stats`, a `stats` Counter to fill with what it did (rewrites per rule)."""
    name: str
    summary: str
    fn: Callable[..., Graph]
    postcondition: str = ""
    options: tuple[Option, ...] = ()
    takes_stats: bool = False
    # also run on the regions (nested graphs) of control-flow nodes, innermost first: for passes
    # that keep a graph's signature (simplify, cse, dce)
    regions: bool = False

    def option(self, name: str) -> Option | None:
        """The option called `name` (kebab- or snake-case), or None."""
        key = name.replace("-", "_")
        return next((o for o in self.options if o.name == key), None)


PASSES: dict[str, PassInfo] = {}


class PassFailed(GraphadError):
    """A pass rejected its input graph or options; the message starts with the pass name."""

    def __init__(self, pass_name: str, message: str):
        self.pass_name = pass_name
        super().__init__(f"pass {pass_name}: {message}")


def register_pass(name: str, summary: str, postcondition: str = "", options: tuple[Option, ...] = (),
                  regions: bool = False):
    """Decorator registering `fn(graph, *, <options>, stats) -> Graph` as the pass `name`: the one
    way passes are declared (in their own module, which `load_pass_modules` imports)."""
    def deco(fn):
        if name in PASSES and PASSES[name].fn is not fn:
            raise ValueError(f"pass {name!r} registered twice")
        PASSES[name] = PassInfo(name, summary, fn, postcondition, tuple(options), takes_stats=True,
                                regions=regions)
        return fn
    return deco


# ---------------------------------------------------------------- pipelines


def _split_top(text: str) -> list[str]:
    """Split a pipeline at the commas outside braces."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [s.strip() for s in items if s.strip()]


def _option_groups(text: str, braces: bool, info: PassInfo) -> list[tuple[str, list[str], str]]:
    """(key, value items, value as written) per option of one pass's option text.

    Braces (`k=1,2 m=x` or `k=1,2,m=x`): options separated by commas or spaces, a token without `=`
    continuing the list of the option before it. Colon form (`k=1|2;m=x`): options separated by
    `;`, list items by `|`."""
    groups: list[tuple[str, list[str], str]] = []
    if braces:
        for tok in [t for t in re.split(r"[,\s]+", text) if t]:
            if "=" in tok:
                k, v = tok.split("=", 1)
                groups.append((k.strip(), [v.strip()] if v.strip() else [], v.strip()))
            elif groups:
                k, items, written = groups[-1]
                groups[-1] = (k, items + [tok], f"{written},{tok}")
            else:
                raise GraphadError(f"pass option {tok!r} must be key=value (pass {info.name})")
        return groups
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise GraphadError(f"pass option {part!r} must be key=value (pass {info.name})")
        k, v = part.split("=", 1)
        groups.append((k.strip(), [x.strip() for x in v.split("|")] if v.strip() else [], v.strip()))
    return groups


def _parse_options(text: str, info: PassInfo, braces: bool = False) -> dict:
    """The typed values of the options given in `text` (only those given), checked against the
    pass's declared options."""
    opts: dict = {}
    for k, items, written in _option_groups(text, braces, info):
        opt = info.option(k)
        if opt is None:
            names = ", ".join(o.flag for o in info.options)
            takes = f"it takes {names}" if names else "it takes no options"
            raise GraphadError(f"pass {info.name} has no option {k!r}; {takes}")
        if opt.name in opts:
            raise PassFailed(info.name, f"option {opt.flag} is given twice")
        if not items:
            raise PassFailed(info.name, f"option {opt.flag} has no value")
        opts[opt.name] = opt.parse(info.name, items, written)
    return opts


def lookup_pass(name: str) -> PassInfo:
    """The registered pass `name`; GraphadError naming close matches if there is none."""
    load_pass_modules()
    info = PASSES.get(name)
    if info is None:
        import difflib
        close = difflib.get_close_matches(name, PASSES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise GraphadError(f"unknown pass {name!r}{hint}; `graphad passes` lists them")
    return info


def parse_pipeline(text: str) -> list[tuple[PassInfo, dict]]:
    """'a,b{k=1,2}' -> [(PassInfo a, {}), (PassInfo b, {'k': [1, 2]})], options typed as declared;
    GraphadError on unknown passes, options or bad values. The colon form `b:k=1|2;m=x` is read too.
    """
    out = []
    for item in _split_top(text):
        if "{" in item:
            name, _, rest = item.partition("{")
            if not rest.endswith("}") or "{" in rest[:-1] or "}" in rest[:-1]:
                raise GraphadError(f"pass {item!r}: options are written name{{key=value,...}} with one "
                                   f"closing brace at the end")
            info = lookup_pass(name.strip())
            out.append((info, _parse_options(rest[:-1], info, braces=True)))
        else:
            if "}" in item:
                raise GraphadError(f"pass {item!r}: unbalanced '}}'")
            name, _, opt = item.partition(":")
            info = lookup_pass(name.strip())
            out.append((info, _parse_options(opt, info)))
    return out


def _format_value(opt: Option | None, v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def format_pipeline(pipeline: list[tuple[PassInfo, dict]]) -> str:
    """The pipeline string of a parsed pipeline, in the brace syntax (inverse of `parse_pipeline`)."""
    items = []
    for info, opts in pipeline:
        o = " ".join(f"{k.replace('_', '-')}={_format_value(info.option(k), v)}" for k, v in opts.items())
        items.append(f"{info.name}{{{o}}}" if o else info.name)
    return ",".join(items)


_LOADED = False
_LOADING = False
# Held while the pass modules are imported: a second thread must wait for the registry to be
# complete, not find it half-filled (it saw "unknown pass 'simplify'" when _LOADED was set first).
_LOAD_LOCK = threading.RLock()


def _new_load_lock_in_child() -> None:
    # a child forked while another thread imported the passes must not wait for that thread
    global _LOAD_LOCK, _LOADING
    _LOAD_LOCK, _LOADING = threading.RLock(), False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_load_lock_in_child)


def load_pass_modules() -> None:
    """Import every module of graphad.passes once, so that the passes they register (with
    `register_pass`, each in its own module) are known to pipelines and listings. Thread-safe:
    it returns only when every pass module has been imported (by this call or another thread's)."""
    global _LOADED, _LOADING
    if _LOADED:
        return
    # a pass registered above this layer (control/merge.py's merge-loops): the namespace `import
    # graphad` completes on first use imports it with the primitives (before this lock is taken:
    # that loader imports pass modules, so its lock comes first in every thread)
    from ..ir import registry
    registry._complete()
    with _LOAD_LOCK:
        # _LOADING: a pass module that calls back here while it is being imported (same thread,
        # the lock is re-entrant) must not start a second round of imports
        if _LOADED or _LOADING:
            return
        _LOADING = True
        try:
            import importlib
            from .. import passes as _pkg
            # no `except ImportError`: a pass module that fails to import is a bug to see, not a
            # pass to drop silently (the user would only read "unknown pass")
            for name in _pass_module_names(_pkg.__path__):
                importlib.import_module(f"{_pkg.__name__}.{name}")
        finally:
            _LOADING = False
        _LOADED = True  # only now: other threads skip the lock from here on


def _pass_module_names(paths) -> list[str]:
    """The modules and subpackages in the directories `paths`, sorted: what pkgutil.iter_modules
    finds for a package of source files (pkgutil's import is about 0.6 ms of a fresh process)."""
    names = set()
    for d in paths:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            stem, dot, ext = e.name.partition(".")
            if not stem.isidentifier() or stem == "__init__":
                continue
            if e.is_dir() and not dot and os.path.isfile(os.path.join(e.path, "__init__.py")):
                names.add(stem)
            elif ext == "py" and e.is_file():
                names.add(stem)
    return sorted(names)


def describe_passes() -> list[PassInfo]:
    """Every registered pass, sorted by name."""
    load_pass_modules()
    return [PASSES[name] for name in sorted(PASSES)]


class Instrument:
    """Base instrument: hooks called around every pass."""

    def before(self, info: PassInfo, graph: Graph) -> None: ...
    def after(self, info: PassInfo, before: Graph, after: Graph, seconds: float) -> None: ...


@dataclass
class PrintIR(Instrument):
    """Print the IR before and/or after each pass, optionally only when it changed."""
    emit: Callable[[str], None]
    before_all: bool = False
    after_all: bool = False
    only_changed: bool = False
    diff: bool = False

    def before(self, info, graph):
        if self.before_all:
            self.emit(f"// -----// IR Dump Before {info.name} //----- //\n{graph}")

    def after(self, info, before, after, seconds):
        if not (self.after_all or self.only_changed or self.diff):
            return
        a, b = str(before), str(after)
        if (self.only_changed or self.diff) and a == b:
            if self.after_all:
                self.emit(f"// -----// IR Dump After {info.name} (no change) //----- //")
            return
        if self.diff:
            import difflib
            d = "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), f"before {info.name}",
                                               f"after {info.name}", lineterm=""))
            self.emit(d)
        else:
            self.emit(f"// -----// IR Dump After {info.name} //----- //\n{b}")


class VerifyEach(Instrument):
    """Run the verifier after every pass; the error names the pass that broke the graph."""

    def after(self, info, before, after, seconds):
        from ..ir.verify import verify
        from ..errors import VerifyError
        try:
            verify(after)
        except VerifyError as e:
            raise VerifyError(f"after pass {info.name}: {e}") from None


@dataclass
class TimePasses(Instrument):
    """Accumulate wall time per pass; `report()` renders a table."""
    times: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def after(self, info, before, after, seconds):
        self.times[info.name] = self.times.get(info.name, 0.0) + seconds
        self.counts[info.name] = self.counts.get(info.name, 0) + 1

    def report(self) -> str:
        total = sum(self.times.values()) or 1e-12
        lines = ["===-------------------------------------------------------------------------===",
                 "                          ... Pass execution timing report ...",
                 "===-------------------------------------------------------------------------===",
                 f"  Total Execution Time: {total * 1e3:.3f} ms", "",
                 "   ---Wall Time---  ---Name---"]
        for name, t in sorted(self.times.items(), key=lambda kv: -kv[1]):
            lines.append(f"   {t * 1e3:8.3f} ms ({100 * t / total:5.1f}%)  {name}")
        lines.append(f"   {total * 1e3:8.3f} ms (100.0%)  Total")
        return "\n".join(lines)


@dataclass
class DumpDot(Instrument):
    """Write `<prefix>00_input.dot` and `<prefix>NN_after_<pass>.dot` into a directory for every pass.

    `written` lists the paths, in order, so a caller can render them (graphad.ir.export.render_dot).
    """
    directory: str
    index: int = 0
    prefix: str = ""
    written: list = field(default_factory=list)

    def _write(self, name: str, graph: Graph) -> None:
        import os
        from ..ir.export import to_dot
        path = os.path.join(self.directory, f"{self.prefix}{name}.dot")
        with open(path, "w") as f:
            f.write(to_dot(graph))
        self.written.append(path)

    def after(self, info, before, after, seconds):
        import os
        os.makedirs(self.directory, exist_ok=True)
        if self.index == 0:
            self._write("00_input", before)
        self.index += 1
        self._write(f"{self.index:02d}_after_{info.name}", after)


class PassManager:
    """Runs a pipeline of passes over a graph with instruments, collecting statistics.

    `statistics[i]` is a Counter for the i-th pipeline entry, summed over every `run`: what the
    pass reported (rewrites per rule, ...) plus `nodes-before` and `nodes-after` (node counts of
    its input and output graphs).
    """

    def __init__(self, pipeline: str | list, instruments: list[Instrument] | None = None):
        self.pipeline = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self.instruments = list(instruments or [])
        self.statistics: list[Counter] = [Counter() for _ in self.pipeline]

    def run(self, graph: Graph) -> Graph:
        """Apply every pass in order; a GraphadError inside a pass becomes PassFailed naming it."""
        for (info, opts), stats in zip(self.pipeline, self.statistics):
            for ins in self.instruments:
                ins.before(info, graph)
            kwargs = {o.name: opts.get(o.name, o.default) for o in info.options}
            for o in info.options:
                if o.required_hint and kwargs[o.name] is None:
                    raise PassFailed(info.name, o.required_hint)
            if info.takes_stats:
                kwargs["stats"] = stats
            t0 = time.perf_counter()
            try:
                if info.regions:
                    from .rewrite import map_regions
                    graph_in = graph
                    out = info.fn(map_regions(graph, lambda g: info.fn(g, **kwargs)), **kwargs)
                    graph = graph_in
                else:
                    out = info.fn(graph, **kwargs)
            except PassFailed:
                raise
            except GraphadError as e:
                raise PassFailed(info.name, str(e)) from e
            dt = time.perf_counter() - t0
            stats["nodes-before"] += len(graph.nodes)
            stats["nodes-after"] += len(out.nodes)
            for ins in self.instruments:
                ins.after(info, graph, out, dt)
            graph = out
        return graph


# statistics that are flags (1 yes, 0 no) rather than counts: merged by `min` (all graphs reached it)
FLAG_STATISTICS = frozenset({"fixed-point"})


def merge_statistics(into: Counter, more: Counter) -> Counter:
    """Add the statistics `more` to `into` (in place; returned): counts add up, flags such as
    `fixed-point` hold only if they hold for both. (Counter's `+` would drop zero counts.)"""
    for k, v in more.items():
        into[k] = min(into.get(k, 1), v) if k in FLAG_STATISTICS else into.get(k, 0) + v
    return into


def format_statistics(pipeline: list[tuple[PassInfo, dict]], statistics: list[Counter]) -> str:
    """The `--pass-statistics` report: one block per pipeline entry, its counters sorted by name
    after the node counts (as mlir-opt's `-mlir-pass-statistics` lists them)."""
    bar = "===-------------------------------------------------------------------------==="
    lines = [bar, "                         ... Pass statistics report ...", bar]
    for (info, opts), stats in zip(pipeline, statistics):
        lines.append(format_pipeline([(info, opts)]))
        keys = ["nodes-before", "nodes-after"] + sorted(k for k in stats if k not in ("nodes-before", "nodes-after"))
        width = max(len(k) for k in keys)
        for k in keys:
            v = stats.get(k, 0)
            if k in FLAG_STATISTICS:  # a flag, not a count
                v = "yes" if v else "no"
            lines.append(f"  {k.ljust(width)}  {v}")
    return "\n".join(lines)


DEFAULT_PIPELINE = "simplify,cse,dce"


def run_default_pipeline(graph: Graph) -> Graph:
    """`graph` through DEFAULT_PIPELINE, the pipeline every staged or compiled graph gets."""
    return PassManager(DEFAULT_PIPELINE).run(graph)


def check_indices(values: list[int] | None, what: str, bound: int, noun: str = "inputs") -> list[int] | None:
    """Index option values checked against the graph (each < bound); GraphadError naming the option."""
    if values is None:
        return None
    for i in values:
        if not 0 <= i < bound:
            raise GraphadError(f"option {what}: index {i} is out of range: the graph has {bound} "
                               f"{noun if bound != 1 else noun[:-1]}")
    return list(values)


def float_inputs(graph: Graph, wrt: list[int] | None) -> list[int]:
    """The inputs to differentiate: `wrt` checked (in range, floating point), default every float input."""
    if wrt is None:
        return [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_inexact]
    w = check_indices(wrt, "wrt", len(graph.inputs))
    for i in w:
        t = graph.inputs[i].type
        if not t.dtype.is_inexact:
            raise GraphadError(f"option wrt: input {i} has type {t}; only floating-point inputs have derivatives")
    return w


WRT_OPTION = Option("wrt", "int-list", None, "the inputs to differentiate", default_text="every float input",
                    distinct=True)
