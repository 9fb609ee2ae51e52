"""The pass manager: named Graph -> Graph passes, pipelines as strings, and instruments.

Each pass has a kebab-case name, a one-line summary and a post-condition. A pipeline is a
comma-separated string ("reverse-ad,cse,dce"); options follow a colon ("reverse-ad:wrt=0|2").
Instruments observe every pass: print before/after/on change, verify after each, time each and
dump DOT per pass. The API and the CLI both run passes through `PassManager`.
"""
from __future__ import annotations

import inspect
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import GraphadError
from ..ir.core import Graph


@dataclass
class PassInfo:
    """A registered pass: kebab-case name, one-line summary, post-condition and Graph -> Graph fn."""
    name: str
    summary: str
    fn: Callable[..., Graph]
    postcondition: str = ""

    @property
    def options(self) -> list[str]:
        """The option names the pass takes (keyword parameters of `fn` after the graph)."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


PASSES: dict[str, PassInfo] = {}


class PassFailed(GraphadError):
    """A pass rejected its input graph or options; the message starts with the pass name."""

    def __init__(self, pass_name: str, message: str):
        self.pass_name = pass_name
        super().__init__(f"pass {pass_name}: {message}")


def register_pass(name: str, summary: str, postcondition: str = ""):
    def deco(fn):
        PASSES[name] = PassInfo(name, summary, fn, postcondition)
        return fn
    return deco


def _parse_options(text: str, info: PassInfo | None = None) -> dict:
    """'k=1|2;m=x' -> {'k': [1, 2], 'm': ['x']}; names checked against the pass's options."""
    opts = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise GraphadError(f"pass option {part!r} must be key=value"
                               + (f" (pass {info.name})" if info is not None else ""))
        k, v = part.split("=", 1)
        key = k.strip().replace("-", "_")
        if info is not None and key not in info.options:
            takes = (f"it takes {', '.join(info.options)}" if info.options else "it takes no options")
            raise GraphadError(f"pass {info.name} has no option {k.strip()!r}; {takes}")
        vals = [int(x) if x.strip().lstrip("-").isdigit() else x.strip() for x in v.split("|")] if v else []
        opts[key] = vals
    return opts


def parse_pipeline(text: str) -> list[tuple[PassInfo, dict]]:
    """'a,b:k=1|2' -> [(PassInfo a, {}), (PassInfo b, {'k': [1, 2]})]; GraphadError on unknown names.

    Passes are separated by commas; a pass's options follow a colon as `key=value`, several
    separated by semicolons, a value listing several items with `|` (`reverse-ad:wrt=0|2;outputs=0`).
    """
    out = []
    for item in [s.strip() for s in text.split(",") if s.strip()]:
        name, _, opt = item.partition(":")
        name = name.strip()
        info = PASSES.get(name)
        if info is None:
            load_pass_modules()
            info = PASSES.get(name)
        if info is None:
            import difflib
            close = difflib.get_close_matches(name, PASSES, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GraphadError(f"unknown pass {name!r}{hint}; `graphad passes` lists them")
        out.append((info, _parse_options(opt, info)))
    return out


def format_pipeline(pipeline: list[tuple[PassInfo, dict]]) -> str:
    """The pipeline string of a parsed pipeline (inverse of `parse_pipeline`)."""
    items = []
    for info, opts in pipeline:
        o = ";".join(f"{k.replace('_', '-')}={'|'.join(str(x) for x in v)}" for k, v in opts.items())
        items.append(f"{info.name}:{o}" if o else info.name)
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
    """Import every module of graphad.passes once, so that passes registered outside this file
    (by `register_pass` in their own module) are known to pipelines and listings. Thread-safe:
    it returns only when every pass module has been imported (by this call or another thread's)."""
    global _LOADED, _LOADING
    if _LOADED:
        return
    with _LOAD_LOCK:
        # _LOADING: a pass module that calls back here while it is being imported (same thread,
        # the lock is re-entrant) must not start a second round of imports
        if _LOADED or _LOADING:
            return
        _LOADING = True
        try:
            import importlib
            import pkgutil
            from .. import passes as _pkg
            for m in pkgutil.iter_modules(_pkg.__path__):
                try:
                    importlib.import_module(f"{_pkg.__name__}.{m.name}")
                except ImportError:  # a module being written that does not import yet
                    pass
        finally:
            _LOADING = False
        _LOADED = True  # only now: other threads skip the lock from here on


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
    """Runs a pipeline of passes over a graph with instruments."""

    def __init__(self, pipeline: str | list, instruments: list[Instrument] | None = None):
        self.pipeline = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self.instruments = list(instruments or [])

    def run(self, graph: Graph) -> Graph:
        """Apply every pass in order; a GraphadError inside a pass becomes PassFailed naming it."""
        for info, opts in self.pipeline:
            for ins in self.instruments:
                ins.before(info, graph)
            t0 = time.perf_counter()
            try:
                out = info.fn(graph, **opts)
            except PassFailed:
                raise
            except GraphadError as e:
                raise PassFailed(info.name, str(e)) from e
            dt = time.perf_counter() - t0
            for ins in self.instruments:
                ins.after(info, graph, out, dt)
            graph = out
        return graph


DEFAULT_PIPELINE = "simplify,cse,dce"


def run_default_pipeline(graph: Graph) -> Graph:
    return PassManager(DEFAULT_PIPELINE).run(graph)


# ---------------------------------------------------------------- registered passes

def _ints(v, what, bound: int | None = None, noun: str = "inputs"):
    """An option's values as distinct ints (indices < bound when given); GraphadError naming the
    option. Without a bound the values are not indices (vmap's size) and only parsed."""
    if v is None:
        return None
    out = []
    for x in v:
        try:
            i = int(x)
        except (TypeError, ValueError):
            raise GraphadError(f"option {what}={'|'.join(str(y) for y in v)}: {x!r} is not an integer") from None
        if bound is not None and not 0 <= i < bound:
            raise GraphadError(f"option {what}: index {i} is out of range: the graph has {bound} "
                              f"{noun if bound != 1 else noun[:-1]}")
        if bound is not None and i in out:  # wrt=0|0 would give two gradient outputs for one input
            raise GraphadError(f"option {what}={'|'.join(str(y) for y in v)}: index {i} is repeated")
        out.append(i)
    return out


def _float_inputs(graph: Graph, wrt) -> list[int]:
    if wrt is None:
        return [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_float]
    w = _ints(wrt, "wrt", len(graph.inputs))
    for i in w:
        t = graph.inputs[i].type
        if not t.dtype.is_float:
            raise GraphadError(f"option wrt: input {i} has type {t}; only floating-point inputs have derivatives")
    return w


@register_pass("cse", "merge nodes applying the same primitive to the same operands and attributes",
               "no two nodes have equal (primitive, operands, attributes)")
def _cse(graph: Graph) -> Graph:
    from .cleanup import cse
    return cse(graph)


@register_pass("dce", "drop nodes whose results reach no output", "every node reaches an output")
def _dce(graph: Graph) -> Graph:
    from .cleanup import dce
    return dce(graph)


@register_pass("reverse-ad", "vector-Jacobian product: inputs + one cotangent per output -> outputs + gradients "
                             "(wrt: inputs, default the float ones; outputs: the seeded outputs, default all)",
               "gradient outputs have their inputs' types")
def _reverse_ad(graph: Graph, wrt=None, outputs=None) -> Graph:
    from .reverse_ad import vjp_graph
    return vjp_graph(graph, _float_inputs(graph, wrt), _ints(outputs, "outputs", len(graph.outputs), "outputs"))


@register_pass("forward-ad", "Jacobian-vector product: inputs + one tangent per input -> outputs + tangents "
                             "(wrt: inputs, default the float ones)", "tangent outputs have their outputs' types")
def _forward_ad(graph: Graph, wrt=None) -> Graph:
    from .forward_ad import jvp_graph
    return jvp_graph(graph, _float_inputs(graph, wrt))


@register_pass("vmap", "batch along a new leading axis of length size=N (batched: inputs, default all)",
               "batched values have the batch axis at 0")
def _vmap(graph: Graph, size=None, batched=None) -> Graph:
    from .vmap import batch_graph
    if not size:
        raise GraphadError("vmap needs the batch size: vmap:size=N")
    if len(size) != 1:
        raise GraphadError(f"option size takes one integer, got {'|'.join(str(x) for x in size)}")
    n = _ints(size, "size")[0]
    if n < 1:
        raise GraphadError(f"option size must be at least 1, got {n}")
    b = _ints(batched, "batched", len(graph.inputs))
    flags = [True] * len(graph.inputs) if b is None else [i in b for i in range(len(graph.inputs))]
    return batch_graph(graph, flags, n)[0]
