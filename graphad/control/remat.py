"""Rematerialisation: `gd.checkpoint(fn)` and its primitive.

    checkpoint(*operands) {body=g, policy=none}

computes `body(*operands)`. Its vjp rule does not read any value computed inside the body: it
binds another checkpoint whose region is the body's vjp, which runs the body forward again
from the operands (the recomputation) and then backward. So a vjp of a checkpointed function
keeps only the operands as residuals, at the cost of running the body twice. The region stays a
node through the optimisation passes (cse cannot merge the recomputation into the forward pass)
and is inlined before lowering (passes/inline.py; trait "inline").
"""
from __future__ import annotations

from typing import Callable

from .. import pytree
from ..errors import GraphadError, ShapeError
from ..ir.core import Graph
from ..ir.interpret import interpret
from ..prims._util import bdim_size, moveaxis_to_front
from ..prims.registry import Primitive, register
from . import regions as R


def _shape(*types, body, policy):
    if not isinstance(body, Graph):
        raise ShapeError(f"the checkpointed body must be a graph, got {type(body).__name__}")
    if list(body.in_types) != list(types):
        raise ShapeError("the checkpointed body takes (" + ", ".join(map(str, body.in_types)) + "), but is given ("
                         + ", ".join(map(str, types)) + ")")
    if policy is not None:
        raise ShapeError(f"unknown checkpoint policy {policy!r} (only none: recompute everything)")
    return list(body.out_types)


def _impl(*args, body, policy):
    return tuple(interpret(body, list(args)))


def _jvp(primals, tangents, outs, body, policy):
    wrt = [i for i, t in enumerate(tangents) if t is not None]
    if not wrt:
        return [None] * len(outs)
    res = checkpoint_p.bind(*primals, *[tangents[i] for i in wrt], body=R.jvp_region(body, wrt), policy=policy)
    n = len(outs)
    return [res[n + j] if outs[j].dtype.is_float else None for j in range(n)]


def _vjp(cts, primals, outs, body, policy):
    seeds = [j for j, (c, o) in enumerate(zip(cts, outs)) if c is not None and o.dtype.is_float]
    wrt = [i for i, x in enumerate(primals) if x.dtype.is_float]
    res = [None] * len(primals)
    if not seeds or not wrt:
        return res
    grads = checkpoint_p.bind(*primals, *[cts[j] for j in seeds], body=R.vjp_region(body, wrt, seeds),
                              policy=policy)
    for i, g in zip(wrt, grads):
        res[i] = g
    return res


def _batch(args, dims, body, policy):
    size = bdim_size(args, dims)
    xs = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    g, flags = R.batch_region(body, [d is not None for d in dims], size)
    res = checkpoint_p.bind(*xs, body=g, policy=policy)
    return list(res), [0 if f else None for f in flags]


checkpoint_p = register(Primitive(
    "checkpoint", shape_rule=_shape, impl=_impl, num_outputs=None, jvp=_jvp, vjp=_vjp, batch=_batch,
    traits=("inline",), formula="body(*operands), recomputed in the vjp instead of stored"))


def checkpoint(fn: Callable, policy=None) -> Callable:
    """`fn` whose vjp recomputes its inside instead of storing it (JAX's jax.checkpoint / remat).

    The results and every derivative are the same as fn's; a reverse pass keeps only fn's
    arguments (and what fn closes over) instead of fn's intermediate values, and runs fn's
    forward pass again. `policy=None` recomputes everything (the only policy so far).
    """
    if not callable(fn):
        raise GraphadError(f"checkpoint: expected a function, got {type(fn).__name__}")
    if policy is not None:
        raise GraphadError(f"checkpoint: policy={policy!r} is not supported (only None: recompute everything)")
    from .api import _captures_first, _leaves, _trace, _types

    def wrapped(*args):
        leaves, td = _leaves(list(args), "checkpoint arguments")
        g, otd, caps = _trace(fn, _types(leaves), lambda ls: pytree.unflatten(td, ls), "checkpoint_body")
        outs = checkpoint_p.bind(*caps, *leaves, body=_captures_first(g, len(leaves)), policy=None)
        return pytree.unflatten(otd, list(outs))
    wrapped.__name__ = getattr(fn, "__name__", "checkpointed")
    wrapped.__wrapped__ = fn
    return wrapped


remat = checkpoint
