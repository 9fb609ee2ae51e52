"""Graph export for inspection: a NetworkX MultiDiGraph, Graphviz DOT text, and rendering via `dot`.

Node keys are strings: `in<i>` for graph inputs, `n<i>` for the i-th node, `out<i>` for graph
outputs. Every edge carries the value it stands for (`value`, its printed `%name`), its type
(`type`, e.g. "f32[3,4]"), the producer's output index (`src_index`), the consumer's operand
index (`dst_index`) and its position in the graph's edge order (`order`). Both exports are deterministic (node and edge order follow the graph).
"""
from __future__ import annotations

import os

from ..errors import GraphadError
from .core import Graph, Value
from .printer import format_attr_value, input_labels, value_names

_MAX_ATTR_CHARS = 48


def _producers(graph: Graph) -> dict[Value, tuple[str, int]]:
    prod: dict[Value, tuple[str, int]] = {}
    for i, v in enumerate(graph.inputs):
        prod.setdefault(v, (f"in{i}", 0))
    for i, n in enumerate(graph.nodes):
        for k, o in enumerate(n.outputs):
            prod.setdefault(o, (f"n{i}", k))
    return prod


def to_networkx(graph: Graph):
    """The graph as a `networkx.MultiDiGraph` (inputs, ops and outputs as nodes; values as edges).

    Node attributes: `kind` ("input", "op" or "output"), `label`; inputs and outputs have `name`,
    `type` and `index`; ops have `op`, `in_types`, `out_types` (strings), `attrs` (the node's
    attribute dict), `loc` ("file:line" or None), `results` (printed names) and `index`.
    Graph attribute `name` is the graph's name. An op holding regions (the nested graphs of
    control flow) also has `regions`: {attribute name: [networkx graph of each region]}.
    """
    import networkx as nx
    names = value_names(graph)
    labels = input_labels(graph)
    prod = _producers(graph)
    g = nx.MultiDiGraph(name=graph.name)
    for i, v in enumerate(graph.inputs):
        g.add_node(f"in{i}", kind="input", name=labels[i], type=str(v.type), index=i,
                   label=f"%{labels[i]}: {v.type}")
    for i, n in enumerate(graph.nodes):
        g.add_node(f"n{i}", kind="op", op=n.prim.name, index=i,
                   in_types=[str(v.type) for v in n.inputs], out_types=[str(o.type) for o in n.outputs],
                   attrs=dict(n.attrs), loc=str(n.loc) if n.loc is not None else None,
                   results=[names.get(o, "%?") for o in n.outputs], label=_op_label(n, names))
        regions = _regions(n)
        if regions:
            g.nodes[f"n{i}"]["regions"] = {k: [to_networkx(r) for r in rs] for k, rs in regions.items()}
    for k, v in enumerate(graph.outputs):
        g.add_node(f"out{k}", kind="output", name=f"output {k}", type=str(v.type), index=k,
                   label=f"return {k}: {v.type}")
    for i, n in enumerate(graph.nodes):
        for j, v in enumerate(n.inputs):
            _add_edge(g, prod, names, v, f"n{i}", j)
    for k, v in enumerate(graph.outputs):
        _add_edge(g, prod, names, v, f"out{k}", 0)
    return g


def _regions(n) -> dict:
    """{attribute name: [Graph, ...]} of the regions a node holds."""
    out = {}
    for k in sorted(n.attrs):
        v = n.attrs[k]
        if isinstance(v, Graph):
            out[k] = [v]
        elif isinstance(v, tuple) and v and all(isinstance(x, Graph) for x in v):
            out[k] = list(v)
    return out


def _add_edge(g, prod, names, v: Value, dst: str, dst_index: int):
    src = prod.get(v)
    if src is None:  # a value defined nowhere (malformed graph): keep it visible
        src = (f"undef_{names.setdefault(v, f'%?{len(names)}')[1:]}", 0)
        if src[0] not in g:
            g.add_node(src[0], kind="undefined", type=str(v.type), label=f"undefined: {v.type}")
    g.add_edge(src[0], dst, value=names.get(v, "%?"), type=str(v.type), src_index=src[1],
               dst_index=dst_index, label=str(v.type), order=g.number_of_edges())


def _op_label(n, names) -> str:
    res = ", ".join(names.get(o, "%?") for o in n.outputs)
    lines = [f"{res} = {n.prim.name}" if res else n.prim.name]
    for k in sorted(n.attrs):
        s = format_attr_value(n.attrs[k])
        if len(s) > _MAX_ATTR_CHARS or "\n" in s:
            s = s.split("\n", 1)[0][:_MAX_ATTR_CHARS - 3] + "..."
        lines.append(f"{k}={s}")
    lines.append(" : " + ", ".join(str(o.type) for o in n.outputs))
    if n.loc is not None:
        lines.append(str(n.loc))
    return "\n".join(lines)


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of the graph (deterministic; inputs and outputs as ellipses, ops as boxes).
    Regions are drawn as clusters beside their op, joined to it by a dashed edge."""
    lines = [f"digraph {_dot_str(str(graph.name))} {{",
             "  rankdir=TB;",
             "  compound=true;",
             '  node [fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=9];']
    _dot_body(graph, "", lines, "  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_body(graph: Graph, prefix: str, lines: list, indent: str) -> None:
    g = to_networkx(graph)
    shapes = {"input": "ellipse", "op": "box", "output": "doubleoctagon", "undefined": "octagon"}
    for key, data in g.nodes(data=True):
        lines.append(f"{indent}{_dot_str(prefix + key)} [label={_dot_str(data['label'])}, shape={shapes[data['kind']]}];")
    for src, dst, data in sorted(g.edges(data=True), key=lambda e: e[2]["order"]):
        lines.append(f"{indent}{_dot_str(prefix + src)} -> {_dot_str(prefix + dst)} [label={_dot_str(data['label'])}];")
    for i, n in enumerate(graph.nodes):
        for k, rs in _regions(n).items():
            for j, r in enumerate(rs):
                sub = f"{prefix}n{i}/{k}{j}/"
                lines.append(f"{indent}subgraph {_dot_str('cluster_' + sub)} {{")
                lines.append(f"{indent}  label={_dot_str(f'{k}[{j}] @{r.name}' if len(rs) > 1 else f'{k} @{r.name}')};")
                lines.append(f"{indent}  style=dashed;")
                _dot_body(r, sub, lines, indent + "  ")
                lines.append(f"{indent}}}")
                anchor = f"{sub}in0" if r.inputs else (f"{sub}n0" if r.nodes else f"{sub}out0")
                lines.append(f"{indent}{_dot_str(prefix + f'n{i}')} -> {_dot_str(anchor)} "
                             f"[style=dashed, arrowhead=none, lhead={_dot_str('cluster_' + sub)}];")


def render_dot(dot_text: str, path, fmt: str = "svg") -> str:
    """Render DOT text to `path` with the Graphviz `dot` binary; returns the path.

    GraphadError when Graphviz is not installed or `dot` fails.
    """
    import shutil  # here, not at the top: subprocess costs every `import graphad` about 4 ms
    import subprocess
    exe = shutil.which("dot")
    if exe is None:
        raise GraphadError("cannot render the graph: Graphviz is not installed (no `dot` on PATH); "
                           "install the Debian package graphviz (apt-get install graphviz), or use "
                           "graphad.ir.export.to_dot and render the text elsewhere")
    path = os.fspath(path)
    try:
        r = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot_text.encode(), capture_output=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GraphadError(f"running Graphviz dot failed: {e}") from None
    if r.returncode != 0:
        raise GraphadError(f"Graphviz dot -T{fmt} failed (exit {r.returncode}): "
                           f"{r.stderr.decode(errors='replace').strip()}")
    return path
