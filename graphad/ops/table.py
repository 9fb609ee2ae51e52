"""docs/ops.md, generated: the op table (every graphad.ops function) and the primitive table.

`python -m graphad.ops.table` writes docs/ops.md; `render()` returns its text, which
tests/test_docs.py compares with the file, so the table cannot drift from the code. Everything in
it is read from the code:
* the ops are the public functions of `graphad.ops`; names bound to the same function are one
  row (the first name in alphabetical order of the function's own name, the others as aliases:
  NumPy's, MindSpore's, torch's other spellings);
* the primitives an op binds are found by tracing it on a small example (`EXAMPLES`, or f(x),
  f(x, y) on float32 tensors): a new op without a usable example makes `render` fail;
* differentiable: whether the traced graph's forward-mode tangent depends on its inputs'
  tangents (`forward_ad.jvp_graph`), "zero" where the derivative is defined as zero (floor,
  round, stop_gradient...), "no" for integer and bool results;
* batching: every primitive bound has a batching rule (the vmap pass uses them);
* lowering: the first line of the docstring of the primitive's entry in the lowering table
  (graphad/lowering/relax_ops.py), "host runtime" for control-flow primitives, "inlined" for the
  ones that only mark a region (checkpoint, custom_jvp/vjp calls).
"""
from __future__ import annotations

import inspect
import os

import numpy as np

from ..ir.core import TensorType
from ..prims import PRIMITIVES

# names in graphad.ops that are helpers, not operations on tensors
# not array ops: helpers, and the state ops on Parameters (assign: docs/training.md)
HELPERS = frozenset({"as_tensor", "asarray_in_trace", "is_scalar", "norm_axes", "norm_axis", "set_seed",
                     "assign", "assign_add", "assign_sub"})


def _examples():
    """op name -> (in_types, fn of the traced tensors) for ops that f(x) / f(x, y) cannot call."""
    from .. import ops

    f = "float32"
    x23, x4, b23 = TensorType((2, 3), f), TensorType((4,), f), TensorType((2, 3), "bool")
    i2 = TensorType((2,), "int64")
    img, ker = TensorType((1, 2, 5, 5), f), TensorType((3, 2, 3, 3), f)
    m33 = TensorType((3, 3), f)
    c23 = TensorType((2, 3), "complex64")
    return {
        # the complex-number ops on complex operands (on real ones they bind nothing)
        "real": ([c23], lambda a: ops.real(a)),
        "imag": ([c23], lambda a: ops.imag(a)),
        "conj": ([c23], lambda a: ops.conj(a)),
        "angle": ([c23], lambda a: ops.angle(a)),
        "reshape": ([x23], lambda a: ops.reshape(a, (3, 2))),
        "broadcast_to": ([x4], lambda a: ops.broadcast_to(a, (2, 4))),
        "expand_dims": ([x23], lambda a: ops.expand_dims(a, 0)),
        "unsqueeze": ([x23], lambda a: ops.unsqueeze(a, 0)),
        "squeeze": ([TensorType((1, 3), f)], lambda a: ops.squeeze(a, 0)),
        "permute": ([x23], lambda a: ops.permute(a, (1, 0))),
        "movedim": ([x23], lambda a: ops.movedim(a, 0, 1)),
        "moveaxis": ([x23], lambda a: ops.moveaxis(a, 0, 1)),
        "swapaxes": ([x23], lambda a: ops.swapaxes(a, 0, 1)),
        "split": ([x23], lambda a: ops.split(a, 3, 1)[0]),
        "array_split": ([x23], lambda a: ops.array_split(a, 2, 1)[0]),
        "stack": ([x23, x23], lambda a, b: ops.stack([a, b])),
        "cat": ([x23, x23], lambda a, b: ops.cat([a, b])),
        "concat": ([x23, x23], lambda a, b: ops.concat([a, b])),
        "concatenate": ([x23, x23], lambda a, b: ops.concatenate([a, b])),
        "concat_prim": ([x23, x23], lambda a, b: ops.concat_prim([a, b], 0)),
        "pad": ([x23], lambda a: ops.pad(a, ((1, 0), (0, 2)))),
        "pad_prim": ([x23], lambda a: ops.pad_prim(a, (1, 0), (0, 2), (0, 1), 0.0)),
        "slice_prim": ([x23], lambda a: ops.slice_prim(a, (0, 1), (2, 3), (1, 1))),
        "getitem": ([x23], lambda a: ops.getitem(a, (slice(None), 1))),
        "take": ([x23, i2], lambda a, i: ops.take(a, i, 1)),
        "take_prim": ([x23, i2], lambda a, i: ops.take_prim(a, i, 1)),
        "gather": ([x23, i2], lambda a, i: ops.gather(a, i, 1)),
        "index_add": ([x23, i2, TensorType((2, 2), f)], lambda a, i, u: ops.index_add(a, i, u, 1)),
        "one_hot": ([i2], lambda i: ops.one_hot(i, 3)),
        "where": ([b23, x23, x23], ops.where),
        "astype": ([x23], lambda a: ops.astype(a, "float64")),
        "cast": ([x23], lambda a: ops.cast(a, "float64")),
        "clip": ([x23], lambda a: ops.clip(a, -1.0, 1.0)),
        "clamp": ([x23], lambda a: ops.clamp(a, -1.0, 1.0)),
        "polygamma": ([x23], lambda a: ops.polygamma(1, a)),
        "matmul": ([x23, TensorType((3, 4), f)], ops.matmul),
        "matmul_prim": ([x23, TensorType((3, 4), f)], ops.matmul_prim),
        "dot": ([x23, TensorType((3, 4), f)], ops.dot),
        "dense": ([x23, TensorType((4, 3), f), x4], ops.dense),
        "linear": ([x23, TensorType((4, 3), f), x4], ops.linear),
        "inner": ([x23, x23], ops.inner),
        "outer": ([x4, x4], ops.outer),
        "einsum": ([x23, TensorType((3, 4), f)], lambda a, b: ops.einsum("ij,jk->ik", a, b)),
        "einsum_prim": ([x23, TensorType((3, 4), f)], lambda a, b: ops.einsum_prim("ij,jk->ik", a, b)),
        "conv2d": ([img, ker], ops.conv2d),
        "conv2d_prim": ([img, ker], lambda a, w: ops.conv2d_prim(a, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)),
        "max_pool2d": ([img], lambda a: ops.max_pool2d(a, 2)),
        "avg_pool2d": ([img], lambda a: ops.avg_pool2d(a, 2)),
        "full": ([], lambda: ops.full((2, 3), 1.5)),
        "zeros": ([], lambda: ops.zeros(2, 3)),
        "ones": ([], lambda: ops.ones(2, 3)),
        "eye": ([], lambda: ops.eye(3)),
        "arange": ([], lambda: ops.arange(5)),
        "constant": ([], lambda: ops.constant(np.ones((2, 3), np.float32))),
        "rand": ([], lambda: ops.rand(2, 3)),
        "randn": ([], lambda: ops.randn(2, 3)),
        "randint": ([], lambda: ops.randint(0, 5, (2, 3))),
        "full_like": ([x23], lambda a: ops.full_like(a, 2.0)),
        # bitwise ops take integers (or bools)
        **{n: ([TensorType((2, 3), "int32")] * 2, getattr(ops, n)) for n in ("bitwise_and", "bitwise_or", "bitwise_xor",
                                                                                    "left_shift", "right_shift",
                                                                                    "bitwise_left_shift", "bitwise_right_shift")},
        "bitwise_not": ([TensorType((2, 3), "int32")], ops.bitwise_not),
        # NumPy conveniences (prims/lax/numpy_more.py) that need particular operands
        "digitize": ([x23, TensorType((4,), f)], ops.digitize),
        "searchsorted": ([TensorType((4,), f), x23], ops.searchsorted),
        "interp": ([x23, TensorType((4,), f), TensorType((4,), f)], ops.interp),
        **{n: ([x23, x23], lambda a, b, n=n: getattr(ops, n)([a, b])) for n in ("hstack", "vstack", "dstack", "column_stack")},
        **{n: ([TensorType((2, 4, 2), f)], lambda a, n=n: getattr(ops, n)(a, 2)[0]) for n in ("hsplit", "vsplit", "dsplit")},
        "ldexp": ([x23, TensorType((2, 3), "int32")], ops.ldexp),
        "cross": ([x23, x23], ops.cross),
        "heaviside": ([x23], lambda a: ops.heaviside(a, 0.5)),
        "select": ([x23], lambda a: ops.select([a > 0], [a])),
        "polyval": ([x23], lambda a: ops.polyval([1.0, 2.0], a)),
        "vdot": ([x23, x23], ops.vdot),
        "percentile": ([x23], lambda a: ops.percentile(a, 50.0)),
        "linspace": ([x23], lambda a: ops.linspace(a[0, 0], a[1, 0], 4)),
        "vander": ([x4], ops.vander),
        "logspace": ([x23], lambda a: ops.logspace(a[0, 0], a[1, 0], 4)),
        "tri": ([], lambda: ops.tri(3)),
        "identity": ([], lambda: ops.identity(3)),
        "meshgrid": ([TensorType((3,), f), TensorType((2,), f)], lambda a, b: ops.meshgrid(a, b)[0]),
        "broadcast_arrays": ([x23, TensorType((3,), f)], lambda a, b: ops.broadcast_arrays(a, b)[1]),
        # issue 17: shape, indexing and sorting
        "tile": ([x23], lambda a: ops.tile(a, (2, 1))),
        "repeat": ([x23], lambda a: ops.repeat(a, 2, 1)),
        "repeat_interleave": ([x23], lambda a: ops.repeat_interleave(a, 2, 1)),
        "roll": ([x23], lambda a: ops.roll(a, 1, 1)),
        "take_along_axis": ([x23, TensorType((2, 2), "int64")], lambda a, i: ops.take_along_axis(a, i, 1)),
        "gather_elements": ([x23, TensorType((2, 2), "int64")], lambda a, i: ops.gather_elements(a, 1, i)),
        "top_k": ([x23], lambda a: ops.top_k(a, 2)[0]),
        "topk": ([x23], lambda a: ops.topk(a, 2)[0]),
        "quantile": ([x23], lambda a: ops.quantile(a, 0.3, 1)),
        "put_along_axis": ([x23, TensorType((2, 2), "int64"), TensorType((2, 2), f)],
                           lambda a, i, v: ops.put_along_axis(a, i, v, 1)),
        # issue 17: graphad.ops.linalg (square matrices; the rows are named linalg.<name>)
        **{f"linalg.{n}": ([m33], getattr(ops.linalg, n)) for n in ("inv", "det", "cholesky")},
        "linalg.slogdet": ([m33], lambda a: ops.linalg.slogdet(a)[1]),
        "linalg.solve": ([m33, TensorType((3,), f)], ops.linalg.solve),
        "linalg.solve_triangular": ([m33, TensorType((3, 2), f)], ops.linalg.solve_triangular),
        "linalg.triangular_solve": ([m33, TensorType((2, 3), f)], ops.linalg.triangular_solve),
        **{f"linalg.{n}": ([m33], lambda a, n=n: getattr(ops.linalg, n)(a)[0]) for n in ("eigh", "qr", "svd")},
        **{f"linalg.{n}": ([m33], getattr(ops.linalg, n)) for n in ("eigvalsh", "svdvals", "pinv", "matrix_norm")},
        "linalg.lstsq": ([m33, TensorType((3,), f)], lambda a, b: ops.linalg.lstsq(a, b)[0]),
        "linalg.norm": ([x23], ops.linalg.norm),
        "linalg.vector_norm": ([x23], ops.linalg.vector_norm),
    }


def _ops_functions() -> dict[object, list[str]]:
    """Underlying function -> the public graphad.ops names bound to it (sorted)."""
    from .. import ops
    groups: dict[object, list[str]] = {}
    for name in sorted(dir(ops)):
        obj = getattr(ops, name)
        if name.startswith("_") or name in HELPERS or inspect.isclass(obj) or inspect.ismodule(obj) \
                or not callable(obj):
            continue
        groups.setdefault(inspect.unwrap(obj), []).append(name)
    for name in sorted(ops.linalg.__all__):  # the graphad.ops.linalg namespace, as linalg.<name>
        groups.setdefault(inspect.unwrap(getattr(ops.linalg, name)), []).append(f"linalg.{name}")
    return groups


def _resolve(ops, name: str):
    """graphad.ops.<name>, where a name may be dotted (linalg.solve)."""
    obj = ops
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _trace(name: str, fn, examples: dict):
    """The graph of op `fn` traced on its example (or f(x), f(x, y) on float32 tensors)."""
    from ..errors import GraphadError
    from ..prims.trace import trace_to_graph
    x = TensorType((2, 3), "float32")
    tries = [examples[name]] if name in examples else [([x], fn), ([x, x], fn)]
    errors = []
    for in_types, f in tries:
        try:
            g, _, _ = trace_to_graph(f, list(in_types))
            return g
        except (GraphadError, TypeError, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
    raise RuntimeError(f"graphad.ops.{name} could not be traced on f(x) or f(x, y) ({'; '.join(errors)}): give it "
                       f"an example in graphad/ops/table.py EXAMPLES")


def _differentiable(g) -> str:
    """'yes', 'zero' (float or complex result, derivative defined as zero) or 'no (<dtype> result)'."""
    from ..passes.forward_ad import jvp_graph
    outs = [v for v in g.outputs if v.type.dtype.is_inexact]
    if not outs:
        return f"no ({g.outputs[0].type.dtype.name} result)"
    if not g.inputs:
        return "n/a (no tensor operand)"
    wrt = [i for i, v in enumerate(g.inputs) if v.type.dtype.is_inexact]
    if not wrt:
        return "no (integer or bool operands)"
    jg = jvp_graph(g, wrt)
    tangent_ins = {id(v) for v in jg.inputs[len(g.inputs):]}
    n_out = len(g.outputs)
    seen, stack = set(), list(jg.outputs[n_out:])
    while stack:  # does any output tangent depend on an input tangent?
        v = stack.pop()
        if id(v) in tangent_ins:
            return "yes"
        if id(v) in seen or v.node is None:
            continue
        seen.add(id(v))
        stack.extend(v.node.inputs)
    return "zero"


def _lowering(prim) -> str:
    from ..lowering.relax_ops import LOWERINGS
    if "control" in prim.traits:
        return "host runtime (regions compiled separately)"
    if "inline" in prim.traits:
        return "inlined before lowering (its region's primitives are lowered)"
    if "complex" in prim.traits:  # TVM has no complex type
        from ..passes.complex_split import _RULES
        if prim.name in _RULES:
            return "real/imaginary pairs (passes/complex_split.py), whose real primitives are lowered"
        return "none: a graph holding it runs on the NumPy interpreter"
    fn = LOWERINGS.get(prim.name)
    if fn is None:
        raise RuntimeError(f"primitive {prim.name!r} has no lowering")
    doc = (fn.__doc__ or "").strip().splitlines()
    if not doc:
        raise RuntimeError(f"the lowering of {prim.name!r} ({fn.__name__}) has no docstring: its first line is "
                           f"the table's lowering column")
    return doc[0].rstrip(".")


def _prim_differentiable(p) -> str:
    if p.nondiff is not None:
        return f"no ({p.nondiff})"
    return "yes"


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def render() -> str:
    """The text of docs/ops.md."""
    from .. import ops
    examples = _examples()
    rows = []
    zero_prims: set[str] = set()  # primitives whose derivative rules give zero (floor, round...)
    used: dict[str, list[str]] = {}
    for fn, names in _ops_functions().items():
        own = getattr(fn, "__name__", names[0])
        main = own if own in names else f"linalg.{own}" if f"linalg.{own}" in names else names[0]
        aliases = [n for n in names if n != main]
        g = _trace(main, _resolve(ops, main), examples)
        prims = []
        for n in g.nodes:
            if n.prim.name not in prims:
                prims.append(n.prim.name)
        for p in prims:
            used.setdefault(p, []).append(main)
        batch = "yes" if all(callable(PRIMITIVES[p].batch) for p in prims) else "no"
        if len(prims) == 1:
            lowering = _lowering(PRIMITIVES[prims[0]])
        elif prims:
            lowering = "composition: " + ", ".join(f"`{p}`" for p in prims)
        else:
            lowering = "no primitive (returns its operand)"
        diff = _differentiable(g) if g.nodes else "yes"
        if len(prims) == 1 and diff == "zero":
            zero_prims.add(prims[0])
        rows.append((main, ", ".join(f"`{a}`" for a in aliases), ", ".join(f"`{p}`" for p in prims),
                     diff, batch, lowering))
    out = [
        "# Operations",
        "",
        "<!-- Generated by `python -m graphad.ops.table` (graphad/ops/table.py) from the code: do not edit;",
        "     tests/test_docs.py fails when this file is not what the generator writes. -->",
        "",
        "Every function of `graphad.ops`, with its other names (NumPy's, MindSpore's and torch's spellings",
        "are aliases of one function), the primitives it binds (traced on a small example; a composition",
        "binds several), whether it is differentiable (`zero`: the derivative is defined as zero, as for",
        "floor; `no`: an integer or bool result), whether `vmap` batches it (every primitive has a batching",
        "rule), and how it is compiled (the TVM lowering of its primitive, see the primitive table below).",
        "Eager random functions (`rand`, `randn`, `randint`) trace as constants. Complex numbers",
        "(complex64, complex128: which ops take them, JAX's derivative conventions, and how a graph with",
        "complex values compiles, as pairs of real tensors) are in [complex.md](complex.md).",
        "",
        "| op | other names | primitives | differentiable | batching | lowering |",
        "|---|---|---|---|---|---|",
    ]
    for main, aliases, prims, diff, batch, lowering in sorted(rows):
        out.append(f"| `{main}` | {aliases} | {prims} | {diff} | {batch} | {_cell(lowering)} |")
    out += [
        "",
        "## Primitives",
        "",
        "Each primitive with its one-line formula, its derivative rules (`zero`: defined as zero; `no`",
        "names the reason the primitive declares), its batching rule and its lowering (graphad/lowering/relax_ops.py: a Relax",
        "operator, or a TE compute graphad writes; `libm` functions are C's, called from the compiled code).",
        "",
        "| primitive | formula | differentiable | batching | lowering | ops |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(PRIMITIVES):
        p = PRIMITIVES[name]
        ops_of = ", ".join(f"`{o}`" for o in sorted(set(used.get(name, []))))
        diff = "zero" if name in zero_prims else _prim_differentiable(p)
        out.append(f"| `{name}` | {_cell(p.formula)} | {_cell(diff)} | "
                   f"{'yes' if callable(p.batch) else 'no'} | {_cell(_lowering(p))} | {ops_of} |")
    return "\n".join(out) + "\n"


def docs_path(name: str = "ops.md") -> str:
    """Where a page of docs/ lives (the repository's docs/, beside the graphad package)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", name)


def doc_path() -> str:
    """Where docs/ops.md lives."""
    return docs_path("ops.md")


def write_generated(name: str, text: str) -> None:
    """Write a generated page of docs/ (`name`: ops.md, api.md) and print its path and length."""
    with open(docs_path(name), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {docs_path(name)} ({text.count(chr(10))} lines)")


def main() -> None:
    """Write docs/ops.md."""
    write_generated("ops.md", render())


if __name__ == "__main__":
    main()
