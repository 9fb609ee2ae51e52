"""The scheduler's inlining (lowering/schedule.py `_Rules.inline`) walks a kernel's blocks once,
going back only to the producers of a block it inlined; it must inline the same blocks in the
same order as the plain rule it replaced (rescan from the first block after every inline, which
took 1.8 s on a 400-operation kernel). Checked against that plain rule, kept here as the oracle,
on kernels of several kinds: a chain, broadcasts, a block with several readers, reductions, a
pool's gradient, a small CNN's, a forward-mode Jacobian's and let-bound float32 bodies. (The
same comparison over 344 fuzzer fixture, random and derived graphs and the compile-time
benchmark's 147 kernels, made when the walk was written, found no difference either; in 2 of
their kernels a block is inlined only after a later one was, which the walk finds by going
back: one is tests/schedule_fixtures/inline_after_consumer.tir, a fuzzer's derived program's
kernel, checked here too.) The walk also remembers the blocks it turned down, asking again only
where the answer can have changed; the scheduled modules of 18 compile-time workloads were the
same with and without that memory when it was added."""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from graphad import ops

pytestmark = pytest.mark.tvm


def _rescan_inline(rules, sch, root):
    """The plain rule: inline the first block in program order that should_inline takes, then
    start again from the first block."""
    done = []
    changed = True
    while changed:
        changed = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        for blk in sch.get_child_blocks(root):
            b = sch.get(blk)
            if b.name_hint in outputs or not b.iter_vars or not rules.is_spatial(b):
                continue
            cons = sch.get_consumers(blk)
            if not cons or not rules.should_inline(sch, b, cons):
                continue
            try:
                sch.compute_inline(blk)
            except Exception:  # noqa: BLE001 - as the rule: keep the block
                continue
            done.append(b.name_hint)
            changed = True
            break
    return done


def _chain(x):
    for i in range(40):
        x = ops.tanh(x) * 0.5 + float(i) if i % 7 == 0 else x * 1.01 - float(i)
    return x


def _readers(x):
    a = ops.exp(x)
    b = a * a + ops.sin(a)        # a read twice: kept, or copied when cheap
    c = ops.broadcast_to(ops.sum(b, axis=1, keepdims=True), x.shape) * x
    return ops.softmax(c + b, axis=-1) @ ops.transpose(x)


def _pool_grad(x):
    def f(x):
        y = ops.max_pool2d(ops.relu(x * 2.0 - 1.0), 2, 2)
        return ops.sum(ops.sqrt(y * y + 1.0))
    return gd.grad(f)(x)


def _cnn_grad(x, w):
    def loss(w):
        y = ops.relu(ops.conv2d(x, w, padding=1))
        return ops.sum(ops.log_softmax(ops.reshape(y, (x.shape[0], -1)), axis=-1))
    return gd.grad(loss)(w)


def _jacfwd(x):
    # forward mode: many blocks read by several consumers, revisited after each inline
    return gd.jacfwd(lambda v: ops.sin(v) * ops.exp(v) / (v + 3.0) + v ** 3 + ops.tanh(v * v))(x)


def _let_bound(x):
    # float32 pow, log, erfc: let-bound bodies, kept apart when two would nest
    return ops.log(ops.pow(ops.abs(x) + 1.0, 3.0) + 1.0) * ops.erfc(x) + ops.pow(ops.exp(x), 0.5)


CASES = {
    "jacfwd": (_jacfwd, [np.linspace(-1, 1, 7)]),
    "let-bound": (_let_bound, [np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)]),
    "chain": (_chain, [np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)]),
    "readers": (_readers, [np.linspace(-1, 1, 96, dtype=np.float32).reshape(8, 12)]),
    "pool gradient": (_pool_grad, [np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)]),
    "cnn gradient": (_cnn_grad, [np.linspace(-1, 1, 2 * 1 * 6 * 6, dtype=np.float32).reshape(2, 1, 6, 6),
                                 np.linspace(-1, 1, 4 * 1 * 3 * 3, dtype=np.float32).reshape(4, 1, 3, 3)]),
}


def _compare(tvm, func) -> int:
    """Both inlinings of `func` give the same names and the same TIR; returns how many."""
    from graphad.lowering.schedule import _Rules, _Unchecked
    runs = []
    for inline in (_Rules.inline, _rescan_inline):
        sch = _Unchecked(tvm.s_tir.Schedule(func))
        done = inline(_Rules(512), sch, sch.get_sblock("root"))
        runs.append((done, sch.mod["main"].script()))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    return len(runs[0][0])


def test_a_block_taken_only_after_its_consumer_was():
    """T_reshape and T_reshape1 (index divisions) are kept while a block reads them at an index
    with a subtraction (should_inline's guard against TVM's descending-index bug), here the pads;
    once the pads and their sum are inlined into the slice, which reads them plainly, they are
    taken: the walk, past them by then, has to go back."""
    import os
    from graphad.lowering._tvm import load_tvm
    tvm = load_tvm()
    path = os.path.join(os.path.dirname(__file__), "schedule_fixtures", "inline_after_consumer.tir")
    with open(path, encoding="utf-8") as f:
        func = tvm.script.from_source(f.read())
    assert _compare(tvm, func) > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_inlining_walk_matches_the_rescan(name):
    from graphad.lowering import lower_graph
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    tvm = load_tvm()
    fn, args = CASES[name]
    graph = gd.jit(fn).lower(*[gd.Tensor(a) for a in args]).graph
    mod = fuse_module(lower_graph(graph), resolve_target(None))
    inlined = sum(_compare(tvm, func) for _, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc))
    assert inlined > 0  # the case exercises inlining
