"""Inlining by substitution (graphad/lowering/inline_tir.py) against TVM's compute_inline: the
same inlining walk (schedule._Rules.inline) run over graphad's block model and over a TVM
Schedule must take the same blocks and leave the same TIR, block for block, on every kernel the
model covers, and the whole scheduled kernel (schedule_primfunc) must come out the same either
way. The kernels: those of tests/test_schedule_inline.py (a chain, several readers, reductions,
a pool's gradient, a small CNN's, a forward-mode Jacobian's, let-bound float32 bodies, a block
taken only after its consumer was), a complex-valued gradient (0-d blocks, which TVM's primitive
maps to their iterators' start), a gather, a flip of a reshape and every fuzz fixture's program
with its derived graph (forward and reverse derivatives and the vmapped program). When the model
was written, the 204 kernels of 14 seed workloads, both train steps and complex-valued grad and
jacfwd, the 294 kernels of the fuzz fixtures it covers, and the 8,208 kernels it covered of
1,300 random fuzzer programs and their derived graphs (22,490 blocks inlined) came out the same
too."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.lowering.index_check import CHECK_ATTR
from test_schedule_inline import CASES as WALK_CASES

pytestmark = pytest.mark.tvm


def _tvm():
    from graphad.lowering._tvm import load_tvm
    return load_tvm()


def _kernels(graph):
    """The fused PrimFuncs of `graph` as the scheduler receives them (complex values as
    real/imaginary pairs, as the compiled path has them)."""
    from graphad.lowering import lower_graph
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    from graphad.passes.complex_split import split_complex
    from graphad.runtime.executable import graph_for_lowering
    tvm = _tvm()
    graph = split_complex(graph_for_lowering(graph)).graph
    mod = fuse_module(lower_graph(graph), resolve_target(None))
    # (native loops and index checks are not scheduled: schedule_module passes them by)
    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
            and not (f.attrs is not None and ("graphad.native_loop" in f.attrs or CHECK_ATTR in f.attrs))]


def _walks(func):
    """(names, PrimFunc) of the inlining walk over the model and over TVM's Schedule, or None
    where the model does not cover `func`."""
    from graphad.lowering.inline_tir import BlockGraph, Unsupported
    from graphad.lowering.schedule import _Rules, _Unchecked
    tvm = _tvm()
    try:
        graph = BlockGraph(tvm, func)
        model = _Rules(512).inline(graph, graph.get_sblock("root"))
    except Unsupported:
        return None
    sch = _Unchecked(tvm.s_tir.Schedule(func))
    theirs = _Rules(512).inline(sch, sch.get_sblock("root"))
    return (model, graph.result()), (theirs, sch.mod["main"])


def _scheduled_both_ways(func, monkeypatch):
    """schedule_primfunc's (PrimFunc, inlined, rules) with the model (for any kernel size) and
    with TVM's primitive."""
    from graphad.lowering import schedule
    out = []
    for model in (True, False):
        monkeypatch.setattr(schedule, "INLINE_BY_SUBSTITUTION", model)
        monkeypatch.setattr(schedule, "SUBSTITUTION_MIN_BLOCKS", 0)
        new, inlined, desc = schedule.schedule_primfunc(func)
        out.append((new, list(inlined), list(desc)))
    return out


def _same(a, b) -> bool:
    """Structurally equal PrimFuncs with the same TVMScript text, where it prints (TVM's printer
    fails on a division by a literal zero, which a fuzz fixture has)."""
    import tvm_ffi
    if not tvm_ffi.structural_equal(a, b):
        return False
    try:
        text = a.script()
    except Exception:  # noqa: BLE001 - not printable: structural equality stands alone
        return True
    return text == b.script()


def _check(kernels, monkeypatch) -> tuple[int, int]:
    """Every kernel the same both ways; returns (kernels the model covered, blocks inlined)."""
    covered = inlined = 0
    for name, func in kernels:
        walks = _walks(func)
        if walks is not None:
            (names, ours), (names_tvm, theirs) = walks
            assert names == names_tvm, name
            assert _same(ours, theirs), name
            covered += 1
            inlined += len(names)
        ours, theirs = _scheduled_both_ways(func, monkeypatch)
        assert ours[1:] == theirs[1:] and _same(ours[0], theirs[0]), name
    return covered, inlined


def _complex_grad(x):
    def loss(x):
        z = ops.complex(x, 2 * x)
        w = ops.sin(z) * ops.exp(z) / (z + 3) + z ** 3
        return ops.sum(ops.real(w * ops.conj(w)))
    return gd.grad(loss)(x)


def _gather(x, i):
    return ops.take(ops.exp(x) * 2.0, i, axis=1) + 1.0


def _flip_reshape(x):
    return ops.flip(ops.reshape(ops.tanh(x), (4, 6)), axis=1) * 3.0


CASES = {**WALK_CASES,
         "complex gradient": (_complex_grad, [np.linspace(0.1, 0.5, 5)]),
         "gather": (_gather, [np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6), np.array([5, 0, 2, 2])]),
         "flip of a reshape": (_flip_reshape, [np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)])}


@pytest.mark.parametrize("name", sorted(CASES))
def test_substitution_matches_tvms_compute_inline(name, monkeypatch):
    fn, args = CASES[name]
    graph = gd.jit(fn).lower(*[gd.Tensor(a) for a in args]).graph
    covered, inlined = _check(_kernels(graph), monkeypatch)
    assert covered > 0 and inlined > 0  # the case exercises the model


def test_a_block_taken_only_after_its_consumer_was(monkeypatch):
    path = os.path.join(os.path.dirname(__file__), "schedule_fixtures", "inline_after_consumer.tir")
    with open(path, encoding="utf-8") as f:
        func = _tvm().script.from_source(f.read())
    assert _check([("inline_after_consumer", func)], monkeypatch)[1] > 0


def test_fuzz_fixtures_and_their_derivatives(monkeypatch):
    from fuzzing import fixtures as fx
    from fuzzing.check import derived_graph
    rng = np.random.default_rng(0)
    covered = graphs = 0
    for d in (fx.ROOT, fx.PENDING, fx.DEVIATIONS, fx.NEW):
        for stem in fx.stems(d):
            prog, _ = fx.load(stem)
            derived = derived_graph(prog, rng)
            for graph in [prog.graph] + ([derived.graph] if derived is not None else []):
                try:
                    kernels = _kernels(graph)
                except Exception:  # noqa: BLE001 - graphs that lower only through the whole pipeline
                    continue
                graphs += 1
                covered += _check(kernels, monkeypatch)[0]
    assert graphs > 40 and covered > 200, (graphs, covered)


def test_kernels_it_does_not_model_are_left_to_tvm(monkeypatch):
    """A TVMScript kernel (integer power: a loop holding its own blocks) is not modelled; the
    schedule still comes out, through TVM's primitive."""
    from graphad.lowering.inline_tir import BlockGraph, Unsupported
    graph = gd.jit(lambda x: (x * 2) ** 7 + 1).lower(gd.Tensor(np.arange(12, dtype=np.int32))).graph
    unmodelled = 0
    for name, func in _kernels(graph):
        try:
            BlockGraph(_tvm(), func)
        except Unsupported:
            unmodelled += 1
            ours, theirs = _scheduled_both_ways(func, monkeypatch)
            assert ours[1:] == theirs[1:] and _same(ours[0], theirs[0]), name
    assert unmodelled > 0
