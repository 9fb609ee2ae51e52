"""vmap: batching a graph along a new leading axis, as a new graph.

`batch_graph(g, batched, size)` returns a graph whose inputs are g's inputs with a leading axis
of `size` added where `batched[i]` is true, and the list of output batch flags: batched outputs
carry the batch axis at 0, unbatched outputs keep their type (the caller broadcasts if asked).
Nodes whose operands are all unbatched are copied unchanged (creation ops, closed-over work);
every other node goes through its primitive's batch rule, which moves or introduces the batch
axis with primitives only (no per-example loop).
Post-condition: each batched value's type is its unbatched type with `size` at the batch axis.
"""
from __future__ import annotations

from ..errors import GraphadError
from ..ir.core import Graph, TensorType, Value
from .manager import Option, check_indices, register_pass
from .rewrite import PassTrace, finish, replay


def batch_graph(graph: Graph, batched: list[bool], size: int, name: str | None = None) -> tuple[Graph, list[bool]]:
    from ..prims._util import moveaxis_to_front
    with PassTrace(name or f"{graph.name}_vmap") as tr:
        env: dict[Value, object] = {}
        dims: dict[Value, int | None] = {}
        for v, n, b in zip(graph.inputs, graph.input_names, batched):
            t = TensorType((size,) + v.type.shape, v.type.dtype) if b else v.type
            env[v] = tr.new_arg(t, n)
            dims[v] = 0 if b else None
        for n in graph.nodes:
            in_dims = [dims[v] for v in n.inputs]
            if all(d is None for d in in_dims):
                replay(n, env)
                for o in n.outputs:
                    dims[o] = None
                continue
            with tr.at(n):
                outs, out_dims = n.prim.batch([env[v] for v in n.inputs], in_dims, **n.attrs)
            for o, x, d in zip(n.outputs, outs, out_dims):
                want = o.type.shape if d is None else o.type.shape[:d] + (size,) + o.type.shape[d:]
                if tuple(x.shape) != want or x.dtype is not o.type.dtype:
                    raise GraphadError(f"internal: batch rule of {n.describe()} gave {x.dtype.short}{list(x.shape)} "
                                       f"with batch axis {d}; expected {o.type.dtype.short}{list(want)}")
                env[o] = x
                dims[o] = d
        outs, flags = [], []
        for v in graph.outputs:
            d = dims[v]
            x = env[v]
            if d is not None and d != 0:
                with tr.at(v.node) if v.node is not None else _null():
                    x = moveaxis_to_front(x, d)
            outs.append(x)
            flags.append(d is not None)
    return finish(tr, outs), flags


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@register_pass("vmap", "batch along a new leading axis of length size",
               "batched values have the batch axis at 0",
               options=(Option("size", "int", None, "the batch size (length of the new leading axis)", minimum=1,
                               required_hint="vmap needs the batch size: vmap{size=N}"),
                        Option("batched", "int-list", None, "the inputs that get the batch axis",
                               default_text="every input", distinct=True)))
def _vmap_pass(graph: Graph, *, size, batched, stats) -> Graph:
    b = check_indices(batched, "batched", len(graph.inputs))
    flags = [True] * len(graph.inputs) if b is None else [i in b for i in range(len(graph.inputs))]
    stats["batched-inputs"] += sum(flags)
    return batch_graph(graph, flags, size)[0]
