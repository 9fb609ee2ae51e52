"""forward-ad: the Jacobian-vector product of a graph, as a new graph.

`jvp_graph(g, wrt)` returns a graph whose inputs are g's inputs followed by one tangent per input
in `wrt`, and whose outputs are g's outputs followed by one tangent per output (zeros where the
output does not depend on the tangents). Tangents are symbolic zeros (None) until a varying
value appears, so no work is emitted outside the active region.
Post-condition: the result verifies; each tangent output has its primal output's type.
"""
from __future__ import annotations

from ..ir.core import Graph, Value
from .manager import WRT_OPTION, float_inputs, register_pass
from .rewrite import PassTrace, check_rule_result, copy_inputs, finish, replay, zeros_for
from .stop_gradient import active_nodes


def jvp_graph(graph: Graph, wrt: list[int], name: str | None = None) -> Graph:
    """Build the JVP graph of `graph` with tangents for inputs `wrt`."""
    with PassTrace(name or f"{graph.name}_jvp") as tr:
        env = copy_inputs(tr, graph)
        tan: dict[Value, object] = {}
        for k, i in enumerate(wrt):
            t = tr.new_arg(graph.inputs[i].type, f"t{k}")
            if graph.inputs[i].type.dtype.is_inexact:
                tan[graph.inputs[i]] = t
        float_outs = [i for i, v in enumerate(graph.outputs) if v.type.dtype.is_inexact]
        active = active_nodes(graph, wrt, float_outs)
        for n in graph.nodes:
            outs = replay(n, env)
            if n not in active or n.prim.jvp is None:
                continue
            ts = [tan.get(v) if v.type.dtype.is_inexact and i not in n.prim.nondiff_inputs else None
                  for i, v in enumerate(n.inputs)]
            if all(t is None for t in ts):
                continue
            with tr.at(n):
                out_t = n.prim.jvp([env[v] for v in n.inputs], ts, outs, **n.attrs)
            for o, t in zip(n.outputs, out_t):
                if t is None or not o.type.dtype.is_inexact:
                    continue
                check_rule_result(n, "jvp", "a tangent", t, o.type)
                tan[o] = t
        touts = [tan.get(v) if tan.get(v) is not None else zeros_for(v.type) for v in graph.outputs]
        outs = [env[v] for v in graph.outputs] + touts
    return finish(tr, outs)


@register_pass("forward-ad", "Jacobian-vector product: inputs + one tangent per input -> outputs + tangents", "tangent outputs have their outputs' types",
               options=(WRT_OPTION,))
def _forward_ad_pass(graph: Graph, *, wrt, stats) -> Graph:
    w = float_inputs(graph, wrt)
    stats["tangents"] += len(w)
    return jvp_graph(graph, w)
