"""Index arithmetic kept out of TVM's IterMapSimplify where that rewrites it wrongly.

TVM 0.27's IterMapSimplify (`tvm.sym.iter_map_simplify`, which FlattenBuffer and other TIR passes
run on buffer indices) mishandles a floor division or remainder of the iterators shifted by a
constant. Measured over small cases (v in [0, n), divisors 2..8, offsets k in -3..3):

* alone: `(v % c1 + k) // c2` wrong in 102 of 288 cases (`(v % 4 - 1) // 2` became
  `(v + 1) % 4 // 2 - 1`, -1 at v = 3 where it is 1), `(k - v % c1) // c2` in 106,
  `(v + k) // c1 % c2` in 85; `(v + k) // c1` and `(v + k) % c1` alone were right;
* in a sum of two such terms, as flattening a multi-axis index makes (`i0 * stride + i1`):
  every pairing where a term divides an offset sum was wrong somewhere (`v // c * m +
  (v + k) // c` in 9 of 60 random cases, `(v + k) % c * m + v % c` in 14), and no pairing
  without an offset was (`v // c * m + v % c // c2`, every reshape's: 0 of 60).

Such indices come from slices, pads and concatenations fused with reshapes: `concat(r[3:4],
r[0:3])` of a reshaped broadcast read `(v % 4 - 1) // 2`, FlattenBuffer turned the row index
`v // 4 * 2 + (v % 4 - 1) // 2` into `(v + 1) // 2 - 3`, and the kernel read before its input
and left NaN-poisoned rows (fuzz fixture `slice_concat_of_broadcast_rows`).

`fenced_indices` wraps each floor division and remainder by a constant, in a buffer index, whose
dividend holds an offset (an addition of a constant, a subtraction, or a block iterator bound to
one) in graphad's index fence (let_fence.py `index_op`: an identity call, pure and vectorizable,
which the analyzer takes as an atom), so IterMapSimplify leaves it alone; `let_fence.unfenced`
removes the fence after the TIR pipeline, before LLVM, which then compiles the index as written.
A division or remainder by a negative constant is fenced whatever its dividend, and its dividend
is fenced as well: TVM's simplifier rewrote `v % 2 // -2` (as dlight's layout normalisation
writes `(-3 - v % 2) // 2 + 2`, itself wrongly) into `v // -2 % -1`, which is 0, inside the
fence's argument; graphad's CPU schedules write no such division, dlight's do.

The GPU builds (pipeline.py `_cuda_prepare`) fence the indices before dlight's schedules, whose
`transform_block_layout` simplifies every index of a block and got `(k - v % c1) // c2` wrong
there already (10 of its 36 gathers in tests/test_index_fence.py); their TIR pipeline
(tir_lowering.fenced_pipeline_name) takes the fences off and puts them back on the scheduled
kernels, and off again after finalisation. Without any fence, 62 of the 324 gathers of the
measured forms indexed wrongly in the final device TIR.

Divisions without an offset (every reshape's `v % 8 // 4`) stay visible: the vectorizer needs
them, and IterMapSimplify gets them right. Conditions and values are not touched (they never
reach FlattenBuffer). The digits CNN train step, whose pooling and convolution gradients hold
384 such divisions, gives the same bits and runs as fast within this machine's noise; with an
opaque fence (the Let fence's kind) its calls were 6-10% slower.
"""
from __future__ import annotations

from ._tvm import walk
from .let_fence import index_op


def fenced_indices(tvm, mod):
    """`mod` with the divisions and remainders IterMapSimplify would rewrite wrongly wrapped in
    the fence (`mod` itself when it has none)."""
    import tvm_ffi
    import tvm.s_tir  # noqa: F401  (the schedulable blocks' node types)
    tir = tvm.tirx
    op = index_op(tvm)

    def has(expr, kinds, pred=None) -> bool:
        found = []

        def visit(e):
            if not found and (pred is None or pred(e)):
                found.append(e)
        walk(expr, [(k, visit) for k in kinds], order="post")
        return bool(found)

    def offset(e) -> bool:
        if isinstance(e, tir.Sub):
            return True
        return isinstance(e, tir.Add) and any(isinstance(x, tir.IntImm) and int(x.value) != 0 for x in (e.a, e.b))

    out = mod
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tir.PrimFunc):
            continue
        # block iterators bound to an offset sum: the dividend holds one once ConvertBlocksToOpaque
        # substitutes the binding
        shifted = []

        def on_realize(realize):
            for iv, value in zip(realize.block.iter_vars, realize.iter_values):
                if has(value, (tir.Add, tir.Sub), offset):
                    shifted.append(iv.var)
        walk(func.body, [(tvm.s_tir.SBlockRealize, on_realize)], order="post")

        def shifted_var(e) -> bool:
            return any(e.same_as(s) for s in shifted)

        def fence(node):
            a = node.a
            if not isinstance(node.b, tir.IntImm):
                return node
            if int(node.b.value) < 0:  # the dividend an atom too: the rewrites happen inside
                node = type(node)(tvm.ir.Call(op, [a], ret_ty=a.ty), node.b)
                return tvm.ir.Call(op, [node], ret_ty=node.ty)
            if has(a, (tir.Add, tir.Sub), offset) or (shifted and has(a, (tir.Var,), shifted_var)):
                return tvm.ir.Call(op, [node], ret_ty=node.ty)
            return node
        divisions = [(tir.FloorDiv, fence), (tir.FloorMod, fence)]

        def indices(node):
            new = [tvm_ffi.structural_map(i, divisions, order="post") for i in node.indices]
            return None if all(n.same_as(i) for n, i in zip(new, node.indices)) else new

        def on_load(load):
            new = indices(load)
            return load if new is None else tir.BufferLoad(load.source, new)

        def on_store(store):
            new = indices(store)
            return store if new is None else tir.BufferStore(store.buffer, store.value, new)
        # buffer indices only: conditions and values never reach FlattenBuffer's IterMapSimplify,
        # and a fenced condition (a pool's stride test, (h + 1) % 2 == 0) hides it from the
        # simplifier that proves or hoists it
        body = tvm_ffi.structural_map(func.body, [(tvm.ir.TensorLoad, on_load), (tir.BufferStore, on_store)],
                                      order="post")
        if not body.same_as(func.body):
            if out is mod:
                out = mod.clone()
            out[gv] = func.with_body(body)
    return out
