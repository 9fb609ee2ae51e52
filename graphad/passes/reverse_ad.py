"""reverse-ad: the vector-Jacobian product of a graph, as a new graph.

`vjp_graph(g, wrt, cts_for)` returns a graph whose inputs are g's inputs followed by one
cotangent per output listed in `cts_for`, and whose outputs are g's outputs followed by one
gradient per input listed in `wrt`. Cotangents accumulate on fan-out; a missing cotangent is a
symbolic zero (no dense zeros are materialised except for an input that gets no gradient at
all); only nodes found active by the stop_gradient analysis get derivative work.
Post-condition: the result verifies, and its gradient outputs have their inputs' types.
"""
from __future__ import annotations

from ..errors import GraphadError
from ..ir.core import Graph, Value
from .manager import WRT_OPTION, Option, check_indices, float_inputs, register_pass
from .rewrite import PassTrace, check_rule_result, copy_inputs, finish, replay, zeros_for
from .stop_gradient import active_nodes


def vjp_graph(graph: Graph, wrt: list[int], cts_for: list[int] | None = None, name: str | None = None,
              known: list[Value] | None = None) -> Graph:
    """Build the VJP graph of `graph` w.r.t. inputs `wrt`, seeded at outputs `cts_for` (default all).

    `known`: values of `graph` (every output of a node, or none of them) that the VJP graph takes
    as further inputs, after the cotangents, instead of recomputing them: a rematerialisation
    policy's saved residuals. Derivatives still flow through the nodes that computed them."""
    from ..prims import lax as ops
    if cts_for is None:
        cts_for = list(range(len(graph.outputs)))
    with PassTrace(name or f"{graph.name}_vjp") as tr:
        env = copy_inputs(tr, graph)
        ct_inputs = [tr.new_arg(graph.outputs[i].type, f"ct{k}") for k, i in enumerate(cts_for)]
        given = {v: tr.new_arg(v.type, f"saved{k}") for k, v in enumerate(known or ())}
        for n in graph.nodes:
            if given and all(o in given for o in n.outputs):
                env.update((o, given[o]) for o in n.outputs)
            else:
                replay(n, env)
        active = active_nodes(graph, wrt, [i for i in cts_for if graph.outputs[i].type.dtype.is_inexact])
        ct: dict[Value, object] = {}

        def accumulate(v: Value, c):
            prev = ct.get(v)
            ct[v] = c if prev is None else ops.add(prev, c)

        for k, i in enumerate(cts_for):
            if graph.outputs[i].type.dtype.is_inexact:
                accumulate(graph.outputs[i], ct_inputs[k])
        for n in reversed(graph.nodes):
            if n not in active or n.prim.vjp is None:
                continue
            out_cts = [ct.get(o) for o in n.outputs]
            if all(c is None for c in out_cts):
                continue
            with tr.at(n):
                in_cts = n.prim.vjp(out_cts, [env[v] for v in n.inputs], [env[o] for o in n.outputs], **n.attrs)
            if len(in_cts) != len(n.inputs):
                raise GraphadError(f"internal: vjp rule of {n.prim.name} returned {len(in_cts)} cotangents "
                                   f"for {len(n.inputs)} inputs")
            for v, c in zip(n.inputs, in_cts):
                if c is None or not v.type.dtype.is_inexact:
                    continue
                check_rule_result(n, "vjp", "a cotangent", c, v.type)
                accumulate(v, c)
        grads = []
        for i in wrt:
            v = graph.inputs[i]
            g = ct.get(v)
            grads.append(g if g is not None else zeros_for(v.type))
        outs = [env[v] for v in graph.outputs] + grads
    return finish(tr, outs)


@register_pass("reverse-ad", "vector-Jacobian product: inputs + one cotangent per output -> outputs + gradients",
               "gradient outputs have their inputs' types",
               options=(WRT_OPTION,
                        Option("outputs", "int-list", None, "the outputs that get a cotangent input",
                               default_text="every output", distinct=True)))
def _reverse_ad_pass(graph: Graph, *, wrt, outputs, stats) -> Graph:
    out = vjp_graph(graph, float_inputs(graph, wrt), check_indices(outputs, "outputs", len(graph.outputs), "outputs"))
    stats["gradients"] += len(out.outputs) - len(graph.outputs)
    return out
