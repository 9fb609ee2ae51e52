"""The pass manager: named Graph -> Graph passes, pipelines as strings, and instruments.

Each pass has a kebab-case name, a one-line summary and a post-condition. A pipeline is a
comma-separated string ("reverse-ad,cse,dce"); options follow a colon ("reverse-ad:wrt=0|2").
Instruments observe every pass: print before/after/on change, verify after each, time each and
dump DOT per pass. The API and the CLI both run passes through `PassManager`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import GraphadError
from ..ir.core import Graph


@dataclass
class PassInfo:
    name: str
    summary: str
    fn: Callable[..., Graph]
    postcondition: str = ""


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, summary: str, postcondition: str = ""):
    def deco(fn):
        PASSES[name] = PassInfo(name, summary, fn, postcondition)
        return fn
    return deco


def _parse_options(text: str) -> dict:
    opts = {}
    for part in text.split(";"):
        if not part:
            continue
        if "=" not in part:
            raise GraphadError(f"pass option {part!r} must be key=value")
        k, v = part.split("=", 1)
        vals = [int(x) if x.lstrip("-").isdigit() else x for x in v.split("|")] if v else []
        opts[k.strip().replace("-", "_")] = vals
    return opts


def parse_pipeline(text: str) -> list[tuple[PassInfo, dict]]:
    """'a,b:k=1|2' -> [(PassInfo a, {}), (PassInfo b, {'k': [1, 2]})]; GraphadError on unknown names."""
    out = []
    for item in [s.strip() for s in text.split(",") if s.strip()]:
        name, _, opt = item.partition(":")
        info = PASSES.get(name)
        if info is None:
            import difflib
            close = difflib.get_close_matches(name, PASSES, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GraphadError(f"unknown pass {name!r}{hint}; `graphad passes` lists them")
        out.append((info, _parse_options(opt)))
    return out


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
    """Write `NN_after_<pass>.dot` into a directory for every pass."""
    directory: str
    index: int = 0

    def after(self, info, before, after, seconds):
        import os
        from ..ir.export import to_dot
        os.makedirs(self.directory, exist_ok=True)
        if self.index == 0:
            with open(os.path.join(self.directory, "00_input.dot"), "w") as f:
                f.write(to_dot(before))
        self.index += 1
        with open(os.path.join(self.directory, f"{self.index:02d}_after_{info.name}.dot"), "w") as f:
            f.write(to_dot(after))


class PassManager:
    """Runs a pipeline of passes over a graph with instruments."""

    def __init__(self, pipeline: str | list, instruments: list[Instrument] | None = None):
        self.pipeline = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self.instruments = list(instruments or [])

    def run(self, graph: Graph) -> Graph:
        for info, opts in self.pipeline:
            for ins in self.instruments:
                ins.before(info, graph)
            t0 = time.perf_counter()
            out = info.fn(graph, **opts)
            dt = time.perf_counter() - t0
            for ins in self.instruments:
                ins.after(info, graph, out, dt)
            graph = out
        return graph


DEFAULT_PIPELINE = "cse,dce"


def run_default_pipeline(graph: Graph) -> Graph:
    return PassManager(DEFAULT_PIPELINE).run(graph)


# ---------------------------------------------------------------- registered passes

def _ints(v, what):
    if v is None:
        return None
    return [int(x) for x in v]


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
                             "(options: wrt=i|j, outputs=k)", "gradient outputs have their inputs' types")
def _reverse_ad(graph: Graph, wrt=None, outputs=None) -> Graph:
    from .reverse_ad import vjp_graph
    w = _ints(wrt, "wrt") if wrt is not None else [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_float]
    return vjp_graph(graph, w, _ints(outputs, "outputs"))


@register_pass("forward-ad", "Jacobian-vector product: inputs + one tangent per input -> outputs + tangents "
                             "(option: wrt=i|j)", "tangent outputs have their outputs' types")
def _forward_ad(graph: Graph, wrt=None) -> Graph:
    from .forward_ad import jvp_graph
    w = _ints(wrt, "wrt") if wrt is not None else [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_float]
    return jvp_graph(graph, w)


@register_pass("vmap", "batch along a new leading axis (options: size=N, batched=i|j; default all inputs)",
               "batched values have the batch axis at 0")
def _vmap(graph: Graph, size=None, batched=None) -> Graph:
    from .vmap import batch_graph
    if not size:
        raise GraphadError("vmap needs the batch size: vmap:size=N")
    b = _ints(batched, "batched")
    flags = [True] * len(graph.inputs) if b is None else [i in b for i in range(len(graph.inputs))]
    return batch_graph(graph, flags, int(size[0]))[0]
