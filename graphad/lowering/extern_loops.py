"""Vectorized loops that call a C function per element, made serial before TVM's VectorizeLoop.

TVM vectorizes no `call_pure_extern` / `call_extern` (a libm function: acoshf, atan2f, ...): where
such a call's arguments depend on the vectorized loop, its VectorizeLoop gives up on the
statement and runs it as a serial loop over the lanes instead ("scalarize"). Half-way through
that, TVM 0.27 meets the float Let bindings of graphad's polynomials again (sin and cos bind
theirs, relax_ops.py) and stops the whole build: "Let cannot bind the same var to two different
values". A kernel computing `a = arctan2(y, x)` or `a = arccosh(x)` and then `sin(a) * a` was
rejected that way (those libm kernels are opaque now, relax_ops.py; float64 `tanh`, libm's, still
fuses: `erfinv(tanh(x)) * tanh(x)` in float64 was rejected the same way), and graphad rebuilt the whole graph with TVM's default schedules, slower,
with a warning (found by the fuzzer, seed 20261219; tests/test_lowering.py
`test_a_c_function_per_lane_beside_a_let_bound_polynomial_builds_as_scheduled`).

So such a loop is made serial here, before TVM's pipeline: the loop TVM would have made of it
when scalarizing, without the pass that fails. Only a loop whose body stores one value is
changed (a loop with several statements keeps its vectorized ones), and a call in the rare
branch of a marked Select (rare_path.py: sinf / cosf for huge arguments) does not count: the
rare path's common copy holds no call, and the rare copy is scalar by design.
"""
from __future__ import annotations

from ._tvm import map_prim_funcs, walk
from .rare_path import _common

_EXTERN_OPS = ("tirx.call_pure_extern", "tirx.call_extern")


def calls_extern_per_lane(tvm, loop) -> bool:
    """Whether the body of `loop` (marked Selects' rare values left out) calls an extern function
    on a value that depends on the loop variable (directly, through a Let, a Bind or a block's
    iterator bound to it, or through a load indexed by one of those)."""
    import tvm_ffi
    tir = tvm.tirx
    ops = [tvm.ir.Op.get(n) for n in _EXTERN_OPS]
    dependent = {loop.loop_var}
    found = []

    def depends(expr) -> bool:
        hit = []

        def on_var(v):
            if v in dependent:
                hit.append(v)
                return tvm_ffi.VisitInterrupt(None)
            return None
        walk(expr, [(tir.Var, on_var)])
        return bool(hit)

    def on_let(let):
        if depends(let.value):
            dependent.add(let.var)

    def on_bind(bind):
        if depends(bind.value):
            dependent.add(bind.var)

    def on_realize(realize):
        for iv, value in zip(realize.block.iter_vars, realize.iter_values):
            if depends(value):
                dependent.add(iv.var)

    def on_call(call):
        if any(call.op.same_as(op) for op in ops) and any(depends(a) for a in call.args[1:]):
            found.append(call)
            return tvm_ffi.VisitInterrupt(None)
        return None
    # pre-order: a Let's value, a Bind and a block's bindings are seen before the expressions
    # that use their variables
    walk(_common(tvm, loop.body), [(tir.Let, on_let), (tir.Bind, on_bind), (tvm.s_tir.SBlockRealize, on_realize),
                                   (tvm.ir.Call, on_call)], order="pre")
    return bool(found)


def _stores(tvm, stmt) -> int:
    n = [0]

    def on_store(_):
        n[0] += 1
    walk(stmt, [(tvm.tirx.BufferStore, on_store)])
    return n[0]


def serial_extern_loops(tvm, mod):
    """`mod` (scheduled TIR, the CPU's) with every vectorized loop of one store that calls an
    extern function per lane made serial (module docstring); `mod` itself when there is none."""
    tir = tvm.tirx

    def on_loop(loop):
        if loop.kind != tir.ForKind.VECTORIZED or _stores(tvm, loop.body) != 1 \
                or not calls_extern_per_lane(tvm, loop):
            return loop
        return tir.For(loop.loop_var, loop.min, loop.extent, tir.ForKind.SERIAL, loop.body,
                       loop.thread_binding, loop.annotations, loop.step)
    return map_prim_funcs(mod, [(tir.For, on_loop)])
