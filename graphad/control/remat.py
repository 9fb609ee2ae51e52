"""Rematerialisation: `gd.checkpoint(fn)` and its primitive.

    checkpoint(*operands) {body=g, policy=none|"dots_saveable"|...}

computes `body(*operands)`. With no policy its vjp rule does not read any value computed inside
the body: it binds another checkpoint whose region is the body's vjp, which runs the body forward
again from the operands (the recomputation) and then backward. So a vjp of a checkpointed
function keeps only the operands as residuals, at the cost of running the body twice.
A policy (JAX's names, `POLICIES`) names the body values that are saved instead: the vjp binds a
forward checkpoint that also returns them (merge-loops lets it stand for the primal node, so the
forward pass runs once) and a backward region that takes them as inputs and recomputes only the
rest (`reverse_ad.vjp_graph(known=)`). The region stays a node through the optimisation passes
(cse cannot merge the recomputation into the forward pass) and is inlined before lowering
(passes/inline.py; trait "inline").
"""
from __future__ import annotations

from typing import Callable

from .. import pytree
from ..errors import ShapeError
from ..ir.core import Graph
from ..ir.interpret import interpret
from ..prims._util import bdim_size, moveaxis_to_front
from ..prims.registry import Primitive, register
from ..prims.trace import check_numbers, exact_numbers, weak_again_at
from . import regions as R
from .api import located


# The rematerialisation policies, by JAX's names (jax.checkpoint_policies): which values computed
# inside a checkpointed body its vjp saves rather than recomputes.
_CONTRACTIONS = ("matmul", "einsum", "conv2d")


def _dots_no_batch(node) -> bool:
    if node.prim.name == "matmul":
        return all(v.type.ndim <= 2 for v in node.inputs)
    if node.prim.name == "einsum":  # no index shared by every operand and the result
        lhs, out = node.attrs["spec"].split("->")
        ins = lhs.split(",")
        common = set(ins[0]).intersection(*map(set, ins[1:]))
        return not (common & set(out))
    return node.prim.name == "conv2d"


POLICIES = {
    "nothing_saveable": lambda node: False,
    "everything_saveable": lambda node: True,
    "dots_saveable": lambda node: node.prim.name in _CONTRACTIONS,
    "dots_with_no_batch_dims_saveable": lambda node: node.prim.name in _CONTRACTIONS and _dots_no_batch(node),
}


class _Policies:
    """`gd.checkpoint_policies`: the policy names as attributes (JAX's spelling), each the string
    `checkpoint(fn, policy=...)` takes; `checkpoint_dots` is JAX's alias of dots_saveable."""

    def __init__(self):
        for name in POLICIES:
            setattr(self, name, name)
        self.checkpoint_dots = "dots_saveable"
        self.checkpoint_dots_with_no_batch_dims = "dots_with_no_batch_dims_saveable"

    def __repr__(self):
        return "checkpoint_policies(" + ", ".join(POLICIES) + ")"


checkpoint_policies = _Policies()


def _saved_values(body: Graph, policy) -> list:
    """The values of `body` that `policy` saves: every output of each chosen node (constants and
    integer values are never worth storing: they are recomputed for free or not differentiated)."""
    if policy is None or policy == "nothing_saveable":
        return []
    rule = POLICIES[policy]
    return [o for n in body.nodes if n.prim.name not in ("constant", "full", "eye", "arange") and rule(n)
            for o in n.outputs if all(x.type.dtype.is_inexact for x in n.outputs)]


def _shape(*types, body, policy):
    if not isinstance(body, Graph):
        raise ShapeError(f"the checkpointed body must be a graph, got {type(body).__name__}")
    if list(body.in_types) != list(types):
        raise ShapeError("the checkpointed body takes (" + ", ".join(map(str, body.in_types)) + "), but is given ("
                         + ", ".join(map(str, types)) + ")")
    if policy is not None and policy not in POLICIES:
        raise ShapeError(f"unknown checkpoint policy {policy!r} (known: None, {', '.join(POLICIES)})")
    return list(body.out_types)


def _impl(*args, body, policy):
    return tuple(interpret(body, list(args)))


def _jvp(primals, tangents, outs, body, policy):
    wrt = [i for i, t in enumerate(tangents) if t is not None]
    if not wrt:
        return [None] * len(outs)
    res = checkpoint_p.bind(*primals, *[tangents[i] for i in wrt], body=R.jvp_region(body, wrt), policy=policy)
    n = len(outs)
    return [res[n + j] if outs[j].dtype.is_inexact else None for j in range(n)]


def _vjp(cts, primals, outs, body, policy):
    seeds = [j for j, (c, o) in enumerate(zip(cts, outs)) if c is not None and o.dtype.is_inexact]
    wrt = [i for i, x in enumerate(primals) if x.dtype.is_inexact]
    res = [None] * len(primals)
    if not seeds or not wrt:
        return res
    saved = _saved_values(body, policy)
    if not saved:
        grads = checkpoint_p.bind(*primals, *[cts[j] for j in seeds], body=R.vjp_region(body, wrt, seeds),
                                  policy=policy)
    else:
        # the forward pass again, returning the saved values too (merge-loops makes it the primal
        # node), then a backward region that takes them instead of recomputing them
        n = len(body.outputs)
        bwd_body, saved = _backward_region(body, wrt, seeds, saved)
        # a saved value that the body returns anyway is read from that output, not stored twice
        outs = list(body.outputs)
        extra = [v for v in saved if v not in outs]
        fwd_body = Graph(f"{body.name}_fwd", body.inputs, body.nodes, outs + extra, body.input_names)
        fwd = checkpoint_p.bind(*primals, body=fwd_body, policy=policy)
        fwd = list(fwd[:n]) + [fwd[outs.index(v)] if v in outs else fwd[n + extra.index(v)] for v in saved]
        grads = checkpoint_p.bind(*primals, *[cts[j] for j in seeds], *fwd[n:], body=bwd_body, policy=None)
    for i, g in zip(wrt, grads):
        res[i] = g
    return res


def _backward_region(body: Graph, wrt, seeds, saved):
    """(the backward region taking `saved` values of `body` instead of recomputing them, the saved
    values it reads). A policy names values by the node that computes them, not by whether the
    backward pass needs them (everything_saveable names every one); those it does not read are
    not kept, so no policy stores more than plain AD's vjp would (a helper's trial: 15 residuals
    against plain AD's 10, matmul operands reshaped for it among them)."""
    from .merge import vjp_merged
    n = len(body.outputs)
    while True:
        vg = vjp_merged(body, wrt, seeds, name=f"{body.name}_vjp", known=saved)
        bwd = R.outputs_subset(vg, range(n, len(vg.outputs)))
        first = len(body.inputs) + len(seeds)  # the saved values' inputs follow the primals and cotangents
        read = {v for node in bwd.nodes for v in node.inputs} | set(bwd.outputs)
        used = [v for v, arg in zip(saved, bwd.inputs[first:]) if arg in read]
        if len(used) == len(saved):
            return bwd, saved
        saved = used  # (without them, their producers are replayed, and dead: the rest reads the same)


def _batch(args, dims, body, policy):
    size = bdim_size(args, dims)
    xs = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    g, flags = R.batch_region(body, [d is not None for d in dims], size)
    res = checkpoint_p.bind(*xs, body=g, policy=policy)
    return list(res), [0 if f else None for f in flags]


checkpoint_p = register(Primitive(
    "checkpoint", shape_rule=_shape, impl=_impl, num_outputs=None, jvp=_jvp, vjp=_vjp, batch=_batch,
    traits=("inline",), formula="body(*operands), recomputed in the vjp instead of stored"))


def checkpoint(fn: Callable, policy=None, *, prevent_cse: bool = True, static_argnums=()) -> Callable:
    """`fn` whose vjp recomputes its inside instead of storing it (JAX's jax.checkpoint / remat).

    The results and every derivative are the same as fn's; a reverse pass keeps only fn's
    arguments (and what fn closes over) instead of fn's intermediate values, and runs fn's
    forward pass again. `policy=None` recomputes everything; a policy of `gd.checkpoint_policies`
    (JAX's names: nothing_saveable, everything_saveable, dots_saveable, dots_with_no_batch_dims_saveable)
    saves the values it names (e.g. the matrix products) and recomputes only the rest.
    As JAX's: `static_argnums` name positional arguments passed to fn as they are (Python values:
    a flag, a count, a function), not traced; `prevent_cse` is accepted (the checkpoint always
    stays apart from common-subexpression elimination until it is inlined before lowering).
    """
    if not callable(fn):
        raise located(f"checkpoint: expected a function, got {type(fn).__name__}")
    if policy is not None and policy not in POLICIES:
        raise located(f"checkpoint: unknown policy {policy!r}; use None or one of gd.checkpoint_policies "
                      f"({', '.join(POLICIES)})")
    if not isinstance(prevent_cse, bool):
        raise located(f"checkpoint: prevent_cse must be a bool, got {prevent_cse!r}")
    statics = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    if any(not isinstance(p, int) or isinstance(p, bool) for p in statics):
        raise located(f"checkpoint: static_argnums must be ints, got {static_argnums!r}")
    from .api import _captures_first, _leaves, _trace, _types

    def wrapped(*args, **kwargs):
        if kwargs:  # placed by fn's signature (defaults filled in), then as positional arguments
            from .custom import _resolve_args
            args = _resolve_args(fn, args, kwargs, "checkpoint")
        n = len(args)
        if any(not -n <= p < n for p in statics):
            raise located(f"checkpoint {wrapped.__name__}: static_argnums {statics} out of range for a call with "
                          f"{n} positional argument(s)")
        static = {p % n: args[p] for p in statics}
        # a Python number (and a jit's) is its exact value and weakly typed inside, as a closure's
        raw, td = pytree.flatten([a for i, a in enumerate(args) if i not in static])
        outer = exact_numbers(raw)
        leaves, _ = _leaves(pytree.unflatten(td, raw), "checkpoint arguments")

        def full(ls):
            dyn = iter(pytree.unflatten(td, weak_again_at(ls, outer)))
            return [static[i] if i in static else next(dyn) for i in range(n)]
        g, otd, caps = _trace(fn, _types(leaves), full, "checkpoint_body")
        check_numbers(leaves, outer, f"checkpoint {wrapped.__name__}: an argument")
        outs = checkpoint_p.bind(*caps, *leaves, body=_captures_first(g, len(leaves)), policy=policy)
        return pytree.unflatten(otd, list(outs))
    wrapped.__name__ = getattr(fn, "__name__", "checkpointed")
    wrapped.__wrapped__ = fn
    return wrapped


remat = checkpoint
