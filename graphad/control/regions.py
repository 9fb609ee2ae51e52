"""Building and rewriting the nested graphs (regions) that control-flow primitives carry.

A region is an ordinary closed `Graph`: everything it reads is one of its inputs (the user's
closures were turned into explicit operands when it was traced). The helpers here trace new
regions from Python callables over tracers, inline regions into the trace being built, and apply
the graph transformations (jvp, vjp, vmap) to a region with the input and output order a
control-flow rule needs.
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..ir.core import Graph, TensorType
from ..passes.cleanup import dce
from ..passes.rewrite import PassTrace
from ..prims.trace import Tracer, inline_graph


def make_region(name: str, in_types: Sequence[TensorType], fn: Callable) -> Graph:
    """A closed graph of `in_types` whose outputs are `fn(*input_tracers)` (a list of tracers).

    Traced in a PassTrace: `fn` may not capture anything from outside (a region is closed).
    """
    with PassTrace(name) as tr:
        args = [tr.new_arg(t, f"a{i}") for i, t in enumerate(in_types)]
        outs = list(fn(*args))
        vals = [tr.to_value(o) for o in outs]
    return dce(tr.builder.finish(vals))


def call(region: Graph, args: Sequence) -> list[Tracer]:
    """Inline `region` into the innermost trace with `args` bound to its inputs."""
    return inline_graph(region, list(args))


def outputs_subset(region: Graph, keep: Sequence[int], name: str | None = None) -> Graph:
    """`region` returning only the outputs at positions `keep` (dead nodes dropped)."""
    g = Graph(name or region.name, region.inputs, region.nodes, [region.outputs[i] for i in keep],
              region.input_names)
    return dce(g)


def jvp_region(region: Graph, wrt: Sequence[int]) -> Graph:
    """The jvp graph of `region`: inputs + one tangent per `wrt` input -> outputs + one tangent per output."""
    from ..passes.forward_ad import jvp_graph
    return jvp_graph(region, list(wrt), name=f"{region.name}_jvp")


def vjp_region(region: Graph, wrt: Sequence[int], cts_for: Sequence[int]) -> Graph:
    """The cotangent-only vjp graph of `region`: inputs + one cotangent per `cts_for` output ->
    one gradient per `wrt` input (the primal outputs are not returned)."""
    from .merge import vjp_merged  # (merge imports this module)
    g = vjp_merged(region, list(wrt), list(cts_for), name=f"{region.name}_vjp")
    n = len(region.outputs)
    return outputs_subset(g, range(n, len(g.outputs)))


def batch_region(region: Graph, batched: Sequence[bool], size: int, force: Sequence[bool] | None = None):
    """(graph, out_batched) of `region` batched along a new leading axis of `size` for the inputs
    flagged in `batched`. Outputs flagged in `force` are made batched (broadcast) when the batch
    rule left them unbatched, so several regions can agree on one output layout."""
    from ..passes.vmap import batch_graph
    g, flags = batch_graph(region, list(batched), size, name=f"{region.name}_vmap")
    if force is None or not any(f and not b for f, b in zip(force, flags)):
        return g, flags
    from ..prims import lax as ops

    def body(*args):
        outs = call(g, args)
        res = []
        for o, b, f in zip(outs, flags, force):
            res.append(ops.broadcast_to(ops.expand_dims(o, 0), (size,) + tuple(o.shape)) if f and not b else o)
        return res
    return make_region(g.name, g.in_types, body), [b or f for b, f in zip(flags, force)]
