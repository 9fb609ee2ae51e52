"""Function transformations built on the graph passes: `linearize` and `print_saved_residuals`.

`linearize(fn, *primals)` partially evaluates fn's jvp graph: the part that does not depend on
the tangents (the primal computation and every coefficient of the linear map) runs once, at
linearize time; what it hands to the tangent part (the residuals) is kept, and the returned
jvp function runs only the tangent part, compiled once, on those residuals.

`saved_residuals(fn, *args)` lists what a reverse pass of fn keeps from its forward pass: the
values of fn's vjp graph that the backward part reads although the forward part computed them
(or that are fn's arguments). `print_saved_residuals` prints that list with its bytes; a
`gd.checkpoint` shows up as fewer saved bytes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import pytree
from .errors import GraphadError, TransformError
from .api import _flat_args, _trace, jvp
from .frontend.function import get_backend, is_weak_number, make_runner, param_names
from .frontend.trace import inline_graph, is_tracing
from .ir.core import Graph, TensorType
from .passes.cleanup import dce
from .passes.forward_ad import jvp_graph
from .passes.manager import run_default_pipeline
from .passes.reverse_ad import vjp_graph
from .passes.rewrite import extract_subgraph as _subgraph
from .tensor import Tensor


# ---------------------------------------------------------------- linearize


def linearize(fn: Callable, *primals):
    """(fn(*primals), jvp_fn) where jvp_fn(*tangents) = the jvp of fn at primals along tangents.

    The linearization is computed once: jvp_fn evaluates only the part of the jvp that depends
    on the tangents (compiled at its first call), reusing the primal values and the coefficients
    computed here. Tangents have the primals' structure, shapes and dtypes. jvp_fn composes with
    the other transformations (`vmap(jvp_fn)` gives a Jacobian's columns), which then trace its
    tangent part with the residuals as constants.
    """
    if not callable(fn):
        raise TransformError(f"linearize: expected a function, got {type(fn).__name__}")
    leaves, tree = _flat_args(primals)
    numbers = any(is_weak_number(x) for x in pytree.flatten(primals)[0])
    if is_tracing() or numbers or not all(isinstance(x, Tensor) for x in leaves):
        # inside another transformation: no evaluation now, so no partial evaluation either (nor
        # with a Python-number primal: jvp keeps it weakly typed, exact next to a float64 tensor)
        out = fn(*primals)
        return out, lambda *t: jvp(fn, primals, t)[1]
    graph, out_tree, captures = _trace(lambda *a: fn(*a), leaves, tree, "linearize", what="linearize")
    n_in = len(leaves)
    for i, v in enumerate(graph.outputs):
        if not v.type.dtype.is_inexact:
            raise TransformError(f"linearize: output {i} has dtype {v.type.dtype.name}; only floating-point "
                                 f"outputs have derivatives")
    wrt = [i for i in range(n_in) if graph.inputs[i].type.dtype.is_inexact]
    jg = run_default_pipeline(jvp_graph(graph, wrt))
    n_all = len(graph.inputs)
    tan_inputs = jg.inputs[n_all:]
    n_out = len(graph.outputs)
    tang_vals = set(tan_inputs)  # what depends on a tangent at all (not only differentiably)
    for nd in jg.nodes:
        if any(v in tang_vals for v in nd.inputs):
            tang_vals.update(nd.outputs)
    known = [nd for nd in jg.nodes if not any(o in tang_vals for o in nd.outputs)]
    unknown = [nd for nd in jg.nodes if any(o in tang_vals for o in nd.outputs)]
    known_defined = set(jg.inputs[:n_all]) | {o for nd in known for o in nd.outputs}
    residuals, seen = [], set()
    for nd in unknown:
        for v in nd.inputs:
            if v in known_defined and v not in seen:
                seen.add(v)
                residuals.append(v)
    touts = jg.outputs[n_out:]
    for v in touts:  # a tangent that does not depend on the tangents (zeros): a residual too
        if v in known_defined and v not in seen:
            seen.add(v)
            residuals.append(v)
    kg = dce(_subgraph("linearize_primal", known, list(jg.inputs[:n_all]), list(jg.outputs[:n_out]) + residuals))
    ug = _subgraph("linearize_tangent", unknown, residuals + list(tan_inputs), list(touts))
    backend = get_backend()
    res = make_runner(kg, backend)(leaves + list(captures))
    outs, kept = res[:n_out], res[n_out:]
    out = pytree.unflatten(out_tree, outs)
    runner = []
    want = [(tuple(graph.inputs[i].type.shape), graph.inputs[i].type.dtype) for i in wrt]

    def jvp_fn(*tangents):
        t_leaves, t_tree = _flat_args(tangents)
        if t_tree != tree:
            raise TransformError(f"linearize: the tangents have structure {t_tree}, the primals {tree}")
        raw = pytree.flatten(tangents)[0]
        ts = [t_leaves[i] for i in wrt]
        for k, (shape, d) in enumerate(want):
            r = raw[wrt[k]]
            if is_weak_number(r) and shape == () and (d.is_complex or not isinstance(r, complex)):
                ts[k] = Tensor(r, d)  # a Python-number tangent is weakly typed, as jvp's
        for k, (t, (shape, d)) in enumerate(zip(ts, want)):
            if tuple(t.shape) != shape or t.dtype is not d:
                raise TransformError(f"linearize: tangent {wrt[k]} is {t.dtype.name}{list(t.shape)}, its primal "
                                     f"{d.name}{list(shape)}")
        if is_tracing():  # under vmap, jit, grad...: the tangent part joins that trace
            return pytree.unflatten(out_tree, inline_graph(ug, list(kept) + ts))
        if not runner:
            runner.append(make_runner(ug, backend))
        return pytree.unflatten(out_tree, runner[0](list(kept) + ts))
    jvp_fn.residual_bytes = sum(int(np.asarray(t._data).nbytes) for t in kept)
    return out, jvp_fn


# ---------------------------------------------------------------- saved residuals


def saved_residuals(fn: Callable, *args) -> list[tuple[TensorType, str, int]]:
    """(type, description, bytes) of every value a reverse pass of fn keeps from its forward pass."""
    if not callable(fn):
        raise TransformError(f"saved_residuals: expected a function, got {type(fn).__name__}")
    leaves, tree = _flat_args(args)
    # the graph inputs take fn's parameter names (x, or x[0], x[1] for a pytree), as the listing shows
    params, names = param_names(fn) or [], []
    for i, a in enumerate(args):
        base, n = params[i] if i < len(params) else f"arg{i}", pytree.flatten(a)[1].num_leaves
        names += [base] if n == 1 else [f"{base}[{k}]" for k in range(n)]
    graph, _, _ = _trace(lambda *a: fn(*a), leaves, tree, getattr(fn, "__name__", "fn"), arg_names=names)
    for i, v in enumerate(graph.outputs):
        if not v.type.dtype.is_inexact:
            raise TransformError(f"saved_residuals: output {i} has dtype {v.type.dtype.name}; only "
                                 f"floating-point outputs have derivatives")
    graph = run_default_pipeline(graph)
    wrt = [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_inexact]
    # merge-loops as at lowering: a checkpoint saving values under a policy (or a rerun scan) then
    # stands in the forward part, and what it saves counts as residuals
    from .control.merge import merge_loops
    vg = vjp_graph(graph, wrt)
    # vjp_graph replays the forward nodes first, then adds the backward ones; merge-loops puts a
    # merged loop where the forward one it covers was, and may move backward nodes before it (a
    # while_loop's counter and empty tapes): `origin` tells which part each node came from
    backward = set(vg.nodes[len(graph.nodes):])
    origin: dict = {}
    vg = merge_loops(vg, origin)
    bwd_nodes = [nd for nd in vg.nodes if origin.get(nd, nd) in backward]
    fwd_nodes = [nd for nd in vg.nodes if origin.get(nd, nd) not in backward]
    grads_only = dce(Graph(vg.name, vg.inputs, vg.nodes, vg.outputs[len(graph.outputs):], vg.input_names))
    live = set(grads_only.nodes)
    fwd_vals = {o: nd for nd in fwd_nodes for o in nd.outputs}
    names = list(vg.input_names)
    arg_pos = {v: i for i, v in enumerate(vg.inputs[:len(graph.inputs)])}
    out, seen = [], set()
    for nd in bwd_nodes:
        if nd not in live:
            continue
        for v in nd.inputs:
            if v in seen:
                continue
            if v in fwd_vals:
                src = fwd_vals[v]
                if src.prim.name in ("constant", "full", "eye", "arange"):
                    continue  # a constant is part of the program, not a saved value
                where = f" from {src.loc}" if src.loc else ""
                desc = f"output of {src.prim.name}{where}"
            elif v in arg_pos:
                i = arg_pos[v]
                desc = f"from the argument {names[i]}" if i < len(leaves) else f"from the captured value {names[i]}"
            else:
                continue
            seen.add(v)
            out.append((v.type, desc, v.type.size * np.dtype(v.type.dtype.np).itemsize))
    return out


def print_saved_residuals(fn: Callable, *args) -> int:
    """Print what a reverse pass of fn at args keeps from the forward pass (type, where it comes
    from, bytes) and the total; returns the total bytes."""
    rows = saved_residuals(fn, *args)
    total = sum(b for _, _, b in rows)
    for t, desc, b in rows:
        print(f"{str(t):<16} {b:>10} B  {desc}")
    print(f"{'total':<16} {total:>10} B  in {len(rows)} residuals")
    return total


__all__ = ["linearize", "saved_residuals", "print_saved_residuals", "GraphadError"]
