"""Vectorized loops that TVM's VectorizeLoop cannot take, made serial just before it runs.

Where a vectorized loop's statement holds an operation TVM does not vectorize on lane-dependent
values (a call to a C function such as acoshf, a tirx intrinsic without a vector form such as
rsqrt, an if_then_else on a lane-dependent condition), its VectorizeLoop gives up on the
statement and runs it as a serial loop over the lanes instead ("scalarize"). Half-way through
that, TVM 0.27 meets the float Let bindings of graphad's polynomials (float32 sin and cos bind
theirs, erfinv and polygamma theirs: relax_ops.py) again and stops the whole build with "Let
cannot bind the same var to two different values"; graphad then rebuilt the whole graph with
TVM's default schedules, slower, with a warning. The fuzzer found it in float32 `a = arccosh(x);
sin(a) * a` (seed 20261219), in the derivatives of `pad(cos(rsqrt(x)))` (seed 20261221), and in
float64 `erfinv(tanh(x)) * tanh(x)` (tanh is libm's there).

Which statements TVM scalarizes and where that fails is TVM's business, so this asks TVM: the
pipeline's VectorizeLoop is `guarded_vectorize_loop`, which runs TVM's pass and, only where it
fails with exactly that error, puts each PrimFunc holding a Let and a vectorized loop through it
alone, tries each of that function's vectorized loops alone where the function fails, and makes
serial those that fail (the loop TVM's scalarization would have made of them), then runs the
pass again. Every other error is TVM's to raise. (A loop of several statements is made
serial whole, where TVM would have vectorized the statements it could.)
"""
from __future__ import annotations

from ._tvm import walk

LET_REBOUND = "Let cannot bind the same var to two different values"


def _vectorized_loops(tvm, stmt) -> list:
    loops = []
    walk(stmt, [(tvm.tirx.For, lambda f: loops.append(f) if f.kind == tvm.tirx.ForKind.VECTORIZED else None)],
         order="pre")
    return loops


def _has_let(tvm, stmt) -> bool:
    import tvm_ffi
    found = []

    def on_let(let):
        found.append(let)
        return tvm_ffi.VisitInterrupt(None)
    walk(stmt, [(tvm.tirx.Let, on_let)])
    return bool(found)


def _vectorizes(tvm, gv, func, enable: bool) -> bool:
    """Whether TVM's VectorizeLoop takes `func`; False only for the Let error (module docstring)."""
    try:
        tvm.tirx.transform.VectorizeLoop(enable)(tvm.IRModule({gv: func}))
    except Exception as e:  # noqa: BLE001 - only the one error is ours to handle; the rest re-raised
        if LET_REBOUND in str(e):
            return False
        raise
    return True


def _serial(tvm, func, loops):
    """`func` with `loops` (For nodes of its body) made serial."""
    import tvm_ffi
    tir = tvm.tirx

    def on_loop(loop):
        if not any(loop.same_as(b) for b in loops):
            return loop
        return tir.For(loop.loop_var, loop.min, loop.extent, tir.ForKind.SERIAL, loop.body,
                       loop.thread_binding, loop.annotations, loop.step)
    return func.with_body(tvm_ffi.structural_map(func.body, [(tir.For, on_loop)], order="pre"))


def serial_where_vectorize_fails(tvm, mod, enable: bool = True):
    """`mod` (TIR as VectorizeLoop receives it) with the vectorized loops VectorizeLoop(`enable`)
    fails on with the Let error made serial; `mod` itself when there are none."""
    tir = tvm.tirx
    out = None
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tir.PrimFunc):
            continue
        loops = _vectorized_loops(tvm, func.body)
        if not loops or not _has_let(tvm, func.body) or _vectorizes(tvm, gv, func, enable):
            continue
        # each loop alone (the others serial): those that fail alone
        failing = [k for k, loop in enumerate(loops)
                   if not _vectorizes(tvm, gv, _serial(tvm, func, loops[:k] + loops[k + 1:]), enable)]
        if not failing:  # they fail only together: all of them serial
            failing = list(range(len(loops)))
        if out is None:
            out = mod.clone()
        out[gv] = _serial(tvm, func, [loops[k] for k in failing])
    return mod if out is None else out


def guarded_vectorize_loop(tvm):
    """TVM's VectorizeLoop pass (with the pass context's `tirx.disable_vectorize` switch), run
    again after `serial_where_vectorize_fails` where it fails with the Let error: the loops are
    tried one by one only then, and a module it takes is vectorized once."""
    def run(mod, ctx):
        enable = not bool(ctx.config.get("tirx.disable_vectorize", False))
        vectorize = tvm.tirx.transform.VectorizeLoop(enable)
        try:
            return vectorize(mod)
        except Exception as e:  # noqa: BLE001 - only the one error is ours to handle; the rest re-raised
            if LET_REBOUND not in str(e):
                raise
        return vectorize(serial_where_vectorize_fails(tvm, mod, enable))
    return tvm.transform.module_pass(run, opt_level=0, name="graphad_guarded_vectorize_loop")
