"""Compile pipelines: Relax module -> Relax VM executable, for the host CPU or CUDA.

CPU:  LegalizeOps, AnnotateTIROpPattern, FuseOps, FuseTIR (the Relax "zero" pipeline without
      FoldConstant, which would bake creation primitives such as eye(4096) into the library as
      constants), then graphad's schedule rules per PrimFunc (schedule.py), then TVM's
      "default_build" pipeline (VM lowering, memory planning) and LLVM codegen for the host's
      real ISA. Should the scheduled module fail to compile, the unscheduled one is compiled.
CUDA: TVM's default GPU pipeline (legalize, fuse, dlight default schedules: Matmul, GEMV,
      Reduction, GeneralReduction, Fallback, then VM lowering), rebuilt here with two changes:
      no FoldConstant (as on the CPU), and each dlight rule guarded, so that a rule that fails
      inside (TVM 0.27's GEMV rule asserts on some fused mat-vec epilogues) counts as "does not
      apply" and the next rule schedules the kernel. Compiling needs no GPU; running needs one.

`prepare_module(mod, target)` runs everything up to the build step (CPU: fuse, schedule, poison,
IEEE guard; CUDA: library dispatch, legalize, fuse, dlight, IEEE guard) and returns the final TIR
module; `build` compiles exactly that module, and `graphad lower --emit tir` prints exactly that
module, so what the CLI shows is what compiles (tests/test_cli.py compares the two).

The CPU build is TVM's `relax.build`, run step by step (Relax VM lowering, VM code generation,
TIR passes, LLVM) so that each step is timed (`compile_log`, `GRAPHAD_LOG_COMPILE=1`). Its exec
mode is chosen by the size of the Relax main function and the work of its kernels
(`choose_exec_mode`): "compiled" turns main into one native function, which saves about 0.1 us
per kernel call at run time but costs compile time that grows faster than the function (LLVM on
one huge function: 0.03 s more than bytecode at 6 calls, 0.34 s at 81, 3.4 s at 321) and, for a
small graph, a module of its own and a link (15-20 ms); "bytecode" runs main in the VM's
interpreter and compiles in time linear in the graph. So small graphs are compiled unless their
kernels do so much work per call that the interpreter's cost is lost in it, or main is a single
kernel call (`COMPILED_MIN_BINDINGS`); large graphs are bytecode (with a release function the runtime calls after main: `with_release_function`). Both
run the same kernels: results are identical.
"""
from __future__ import annotations

import math
import time

from ..errors import CompileError
from ._tvm import load_tvm, map_prim_funcs, walk
from .compile_log import note, phase
from .ieee import cuda_literals, guard_module
from . import parallel_build
from .index_check import without_checks
from .index_fence import fenced_indices
from .llvm_strip import without_debug_info
from .rare_path import stripped
from .tir_lowering import fenced_pipeline_name, lower_tir
from .output_fusion import fuse_outputs, fusing_functions, static_shape, with_blocks
from .targets import codegen_target, is_gpu, resolve_target, with_guarded_loops


def _memo_legalize_map(mod) -> dict:
    """For every operator `mod` calls, its TVM legalization wrapped in a memo: calls of one
    operator with the same attributes, argument types and result type get the PrimFunc the first
    one was legalized into (`call_tir` of the same GlobalVar) instead of legalizing again.

    LegalizeOps builds a TE function and a PrimFunc per call, only to find the PrimFunc equal to
    one it made before: 0.21 of 0.25 s of fusing a 64-layer MLP gradient (577 calls, 11 distinct
    kernels). Only results that are `call_tir(gv, (the call's own arguments, in order))` are
    reused, so a legalization that rewrites its arguments or emits more is always rerun; the
    memo lives for one LegalizeOps run (its GlobalVars belong to that module)."""
    tvm = load_tvm()
    relax = tvm.relax
    call_tir = tvm.ir.Op.get("relax.call_tir")
    names: set = set()

    def visit(e):
        if isinstance(e.op, tvm.ir.Op):
            names.add(e.op.name)
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            walk(func, [(relax.Call, visit)], order="post")
    table = {}
    for name in names:
        legalize = tvm.ir.Op.get(name).get_attr("FLegalize")
        if legalize is not None:
            table[name] = _memoized(legalize, relax, call_tir)
    return table


def _memoized(legalize, relax, call_tir):
    """`legalize` (bb, call) -> Expr with a per-pass memo of call_tir results (see above)."""
    import tvm_ffi
    memo: dict = {}
    tensor_info = relax.TensorType
    shape_vars = relax.analysis.tir_vars_in_type
    shash, sequal = tvm_ffi.structural_hash, tvm_ffi.structural_equal

    def static(ty):
        # a tensor of known shape that names no shape variable (one call into TVM, where reading
        # the dimensions one by one took several; printing the types for a key took more)
        return isinstance(ty, tensor_info) and ty.shape is not None and not shape_vars(ty)

    def key(call):
        # constants, shapes, tuples and symbolic shapes (whose PrimFunc binds the call's own
        # shape variables): legalized each time
        if not all(isinstance(a, relax.Var) and static(a.ty) for a in call.args) or not static(call.ty):
            return None
        return (shash(call.attrs) if call.attrs is not None else 0,
                tuple(shash(a.ty) for a in call.args), shash(call.ty))

    def run(bb, call):
        k = key(call)
        hit = memo.get(k) if k is not None else None
        if hit is not None:
            attrs0, ty0, arg_tys, (gv, attrs, sinfo) = hit
            # the key's hashes agreed; a collision is a miss
            if (sequal(attrs0, call.attrs) and sequal(ty0, call.ty)
                    and all(sequal(t, a.ty) for t, a in zip(arg_tys, call.args))):
                return relax.Call(call_tir, [gv, relax.Tuple(list(call.args))], attrs, sinfo)
        out = legalize(bb, call)
        if (k is not None and isinstance(out, relax.Call) and out.op.same_as(call_tir) and len(out.args) == 2
                and isinstance(out.args[1], relax.Tuple) and len(out.args[1].fields) == len(call.args)
                and all(f.same_as(a) for f, a in zip(out.args[1].fields, call.args))):
            memo[k] = (call.attrs, call.ty, [a.ty for a in call.args], (out.args[0], out.attrs, list(out.ty_args)))
        return out
    return run


_KOPAQUE = 8  # TVM's OpPatternKind::kOpaque


class _TupleReads:
    """Works around a defect of TVM's FuseOps (0.27, and apache/tvm main at 5d4dc87): each read
    `t[i]` of a tuple `t` that FuseOps fuses into a group makes `t` a parameter of the group's
    function, and `FunctionCreator::CreateFunction` then replaces every such tuple parameter by
    one parameter per field read, iterating an unordered_map keyed by the tuples' addresses with
    parameter positions it computed before any replacement. A tuple with two reads in the group
    adds a parameter, so a tuple visited after it whose parameter comes later replaces the wrong
    parameter: the function gets a free variable and a tuple-typed parameter, and FuseTIR fails
    with `Check failed: buffer_idx == buffers.size() (1 vs. 2)` (MapArgsToBuffer). The iteration
    order follows memory layout, so the same program failed in about 1 process in 8 (with three
    such tuples in one group; with a dozen, nearly always).

    `split` gives every read of a tuple after its first its own alias of the tuple (`t' = t`, a
    dataflow var of the same name and type) just before FuseOps, so that each tuple FuseOps sees
    is read once and its parameter expands to exactly one: positions never shift. `join` puts the
    tuple back in place of the aliases in what FuseOps returns. Only tuples whose producer FuseOps
    never fuses are split (a native loop or another opaque kernel, a parameter): an alias is an
    opaque node on an edge out of a node that is opaque already, so the fusion groups, and the
    fused functions with their parameter order and names, are those FuseOps makes when its map
    happens to be visited in a harmless order. A fusible tuple producer (none in graphad's
    lowerings today) is left alone; should it meet the defect, FuseTIR fails loudly."""

    def __init__(self, tvm):
        self.tvm = tvm
        self.aliases: dict = {}  # alias var -> the tuple it stands for

    def split(self, mod):
        tvm = self.tvm
        relax = tvm.relax
        call_tirs = (tvm.ir.Op.get("relax.call_tir"), tvm.ir.Op.get("relax.call_tir_inplace"))

        def fusible(value):
            if not (isinstance(value, relax.Call) and any(value.op.same_as(o) for o in call_tirs)):
                return False  # FuseOps makes every other producer an opaque node
            kernel = mod[value.args[0]]
            if kernel.attrs is None or "op_pattern" not in kernel.attrs:
                return False
            return int(kernel.attrs["op_pattern"]) < _KOPAQUE

        updates = {}
        for gv, func in fusing_functions(self.tvm, mod):
            blocks = list(func.body.blocks)
            bound = {}
            changed = False
            for bi, block in enumerate(blocks):
                bindings = list(block.bindings)
                for b in bindings:
                    if isinstance(b, relax.VarBinding):
                        bound[b.var] = b.value
                if not isinstance(block, relax.DataflowBlock):
                    continue
                read: set = set()
                out = []
                for b in bindings:
                    v = b.value if isinstance(b, relax.VarBinding) else None
                    if isinstance(v, relax.TupleGetItem) and isinstance(v.tuple_value, relax.Var):
                        t = v.tuple_value
                        if t in read and not fusible(bound.get(t)):
                            alias = relax.DataflowVar(t.name, t.ty)
                            self.aliases[alias] = t
                            out.append(relax.VarBinding(alias, t))
                            b = relax.VarBinding(b.var, relax.TupleGetItem(alias, v.index))
                            changed = True
                        read.add(t)
                    out.append(b)
                if changed:
                    blocks[bi] = relax.DataflowBlock(out, block.span)
            if changed:
                updates[gv] = with_blocks(self.tvm, func, blocks)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    def join(self, mod):
        if not self.aliases:
            return mod
        relax = self.tvm.relax
        aliases = self.aliases
        updates = {}
        for gv, func in fusing_functions(self.tvm, mod):
            blocks = list(func.body.blocks)
            changed = False
            for bi, block in enumerate(blocks):
                out = []
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding):
                        if b.var in aliases:
                            changed = True
                            continue
                        v = b.value
                        if isinstance(v, relax.TupleGetItem) and v.tuple_value in aliases:
                            b = relax.VarBinding(b.var, relax.TupleGetItem(aliases[v.tuple_value], v.index))
                            changed = True
                    out.append(b)
                if changed:
                    blocks[bi] = type(block)(out, block.span)
            if changed:
                func = with_blocks(self.tvm, func, blocks)
                if any(v in aliases for v in relax.analysis.free_vars(func)):
                    raise CompileError(f"internal: FuseOps used a tuple alias in {gv.name_hint} other than "
                                       f"in a tuple read (pipeline._TupleReads)")
                updates[gv] = func
        for gv, func in updates.items():
            mod[gv] = func
        self.aliases = {}
        return mod


# a concatenate whose operands are slices of tensors at least this many bytes together (and 4
# times its own size) is kept from fusing with them (`_concats_apart`)
CONCAT_SLICED_BYTES = 1 << 24


def _static_bytes(ty) -> int | None:
    """The bytes of a Relax tensor type of static shape, else None."""
    shape = static_shape(ty)
    if shape is None or getattr(ty, "dtype", None) is None:
        return None
    import numpy as np
    name = str(ty.dtype)
    return math.prod(shape) * ({"bool": 1, "bfloat16": 2}.get(name) or np.dtype(name).itemsize)


def _concats_apart(tvm, mod):
    """`mod` with each concatenate that joins slices of much larger tensors made opaque, so that
    FuseOps does not fuse the slices into it. Fused, one kernel at the end read every sliced
    tensor, and all of them stayed alive until it ran: a chunked jacrev through a padded conv2d
    (whose gradient is a conv cut back to the input's size) held every chunk's full conv output
    (4 chunks of 42.6 MB each for a 2 MB result). Apart, each slice is a kernel of its own run
    where its input is made, which can then be freed."""
    relax = tvm.relax
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def kernel_name(value, prefix):
        return (isinstance(value, relax.Call) and value.op.same_as(call_tir)
                and value.args[0].name_hint.startswith(prefix))
    bb, updates = None, {}
    for gv, func in list(fusing_functions(tvm, mod)):
        bound, blocks, changed = {}, [], False
        for block in func.body.blocks:
            bindings = []
            for b in block.bindings:
                v = b.value if isinstance(b, relax.VarBinding) else None
                if v is not None:
                    bound[b.var] = v
                if (isinstance(block, relax.DataflowBlock) and kernel_name(v, "concatenate")
                        and len(v.ty_args) == 1 and isinstance(v.args[1], relax.Tuple)):
                    sliced = 0
                    for a in v.args[1].fields:
                        p = bound.get(a)
                        if kernel_name(p, "strided_slice") and isinstance(p.args[1], relax.Tuple):
                            sliced += _static_bytes(p.args[1].fields[0].ty) or 0
                    out = _static_bytes(v.ty_args[0])
                    if out is not None and sliced >= max(CONCAT_SLICED_BYTES, 4 * out):
                        if bb is None:
                            bb = relax.BlockBuilder(mod)
                        kernel = mod[v.args[0]].with_attr("op_pattern", _KOPAQUE)
                        apart = bb.add_func(kernel, v.args[0].name_hint + "_apart")
                        call = relax.Call(call_tir, [apart, v.args[1]], v.attrs, v.ty_args)
                        b = relax.VarBinding(b.var, call)
                        changed = True
                bindings.append(b)
            blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                          else relax.BindingBlock(bindings))
        if changed:
            updates[gv] = with_blocks(tvm, func, blocks)
    if bb is None:
        return mod
    out_mod = bb.get()
    for gv, func in updates.items():
        out_mod[gv] = func
    return out_mod


def _fusion_passes(tvm, merge_outputs: bool = False) -> list:
    """FuseOps and FuseTIR, around FuseOps' tuple-parameter defect (`_TupleReads`); with
    `merge_outputs`, graphad's multi-output elementwise fusion between them (output_fusion.py:
    the CPU schedule rules know its kernels, the CUDA dlight rules are not asked to). Before
    FuseOps, a concatenate of slices of large tensors is kept apart from them (`_concats_apart`)."""
    relax = tvm.relax
    reads = _TupleReads(tvm)
    passes = [tvm.transform.module_pass(lambda m, _ctx: _concats_apart(tvm, m), opt_level=0,
                                        name="graphad_concats_apart"),
              tvm.transform.module_pass(lambda m, _ctx: reads.split(m), opt_level=0, name="graphad_split_tuple_reads"),
              relax.transform.FuseOps(),
              tvm.transform.module_pass(lambda m, _ctx: reads.join(m), opt_level=0, name="graphad_join_tuple_reads")]
    if merge_outputs:
        passes.append(tvm.transform.module_pass(lambda m, _ctx: fuse_outputs(m), opt_level=0,
                                                name="graphad_fuse_outputs"))
    return [*passes, relax.transform.FuseTIR()]


def fuse_module(mod, target):
    """Legalize and fuse a Relax module (no constant folding); legalization is memoized per
    operator signature (`_memo_legalize_map`), and FuseOps' tuple-parameter defect is avoided
    (`_TupleReads`)."""
    tvm = load_tvm()
    relax = tvm.relax
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(_memo_legalize_map(mod)),
        relax.transform.AnnotateTIROpPattern(),
        *_fusion_passes(tvm, merge_outputs=True),
    ], name="graphad_fuse")
    with target:
        return seq(mod)


def _guarded(rule, failures: list):
    """A dlight rule whose internal errors mean "does not apply" (recorded in `failures`)."""
    from tvm.s_tir import dlight as dl
    tvm = load_tvm()
    lower_ctr = tvm.s_tir.transform.LowerCrossThreadReduction()

    class Guarded(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            try:
                sch = rule.apply(func, target, tunable)
                for s in (sch if isinstance(sch, list) else [sch] if sch is not None else []):
                    # a cross-thread reduction whose combiner TVM cannot match (argmax's NaN-aware
                    # one) fails only in the build: try its lowering here
                    mod = getattr(s, "mod", None)
                    if mod is not None:
                        lower_ctr(tvm.IRModule({"main": mod["main"]}))
                return sch
            except Exception as e:  # noqa: BLE001 - the next rule (at worst Fallback) takes the kernel
                failures.append(f"{type(rule).__name__}: {_short(e)}")
                return None

        def is_target_available(self, target):
            return rule.is_target_available(target)
    return Guarded()


def _cuda_prepare(mod, target, failures: list, schedule: bool = True):
    """The first half of TVM's default CUDA pipeline, rebuilt (module doc): library dispatch,
    legalize and fuse (no FoldConstant), guarded dlight schedules, the IEEE guard. With
    schedule=False the dlight step is left out (for `graphad lower --no-schedule` only: an
    unscheduled module does not compile for a GPU)."""
    tvm = load_tvm()
    relax = tvm.relax
    from tvm.relax.backend.cuda import pipeline as cp
    from tvm.s_tir import dlight as dl
    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]
    passes = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              # a GPU kernel cannot raise: the index checks only wrap (index_check.py)
              tvm.transform.module_pass(lambda m, _ctx: without_checks(tvm, m), opt_level=0,
                                        name="graphad_index_checks_off"),
              *_fusion_passes(tvm),
              # the rare-path markers out (rare_path.py splits them off on the CPU only)
              tvm.transform.module_pass(lambda m, _ctx: stripped(tvm, m), opt_level=0, name="graphad_rare_strip"),
              # the IEEE guard before the schedules, so a rule's cross-thread reduction is checked
              # (in _guarded) on the combiner that is built: the guarded argmax one does not lower
              # as a cross-thread reduction and goes to the next rule
              tvm.transform.module_pass(lambda m, _ctx: guard_module(m), opt_level=0, name="graphad_ieee")]
    if schedule:
        # the index fence before the schedules: dlight's rules normalise each block's layout
        # (transform_block_layout), whose simplification of the indices already goes wrong
        # (index_fence.py); TVM's TIR passes then meet the fence still there (_cuda_build)
        passes.append(tvm.transform.module_pass(lambda m, _ctx: fenced_indices(tvm, m), opt_level=0,
                                                name="graphad_index_fence"))
        passes.append(dl.ApplyDefaultSchedule(*[_guarded(r, failures) for r in rules], dl.gpu.Fallback()))
    # the guard's opaque literals spelled as CUDA bit-cast intrinsics (ieee.cuda_literals)
    passes.append(tvm.transform.module_pass(lambda m, _ctx: cuda_literals(m), opt_level=0,
                                            name="graphad_cuda_literals"))
    with target:
        return tvm.transform.Sequential(cp.library_dispatch_passes(target) + passes)(mod)


def _cuda_build(mod, target):
    """The second half of TVM's default CUDA pipeline (VM lowering, finalization) and codegen, on a
    module `_cuda_prepare` returned; TVM's TIR pipeline with graphad's fences
    (tir_lowering.fenced_pipeline_name)."""
    tvm = load_tvm()
    from tvm.relax.backend.cuda import pipeline as cp

    @tvm.transform.module_pass(opt_level=0, name="graphad_cuda_lower")
    def _lower(m, _ctx):
        with target:
            return tvm.transform.Sequential(cp.dataflow_lower_passes(target) + cp.finalize_passes(target))(m)
    return tvm.compile(mod, target, relax_pipeline=_lower, tir_pipeline=fenced_pipeline_name(tvm))


def without_seq_scopes(mod):
    """`mod` without `pragma_scope` attributes (TVM's IR builder wraps statement sequences in
    `pragma_scope "seq"`: topi's scatter kernels, which index_add legalizes to): they mean nothing
    to the CPU code generator, which printed "Warning: Unknown pragma pragma_scope" on stderr for
    each, at every compile of such a graph. (CPU builds only.)"""
    tvm = load_tvm()

    def drop(stmt):
        return stmt.body if stmt.attr_key == "pragma_scope" else stmt
    return map_prim_funcs(mod, [(tvm.tirx.AttrStmt, drop)])


def prepare_module(mod, target=None, *, schedule: bool = True, poison: bool | None = None,
                   report: dict | None = None):
    """The final TIR module the build step compiles for `target` (module doc): what `build` hands to
    codegen and what `graphad lower --emit tir` prints. `report` (a dict) receives the CPU schedule
    report (`schedule`) or the dlight rules that failed inside (`rule_failures`)."""
    from . import poison as _poison
    target = resolve_target(target)
    report = report if report is not None else {}
    if poison is None:
        poison = _poison.poison_enabled()
    if is_gpu(target):
        if poison:
            report["poison"] = "not supported on GPU targets: built without it"
        failures: list = []
        out = _cuda_prepare(mod, target, failures, schedule)
        report["rule_failures"] = failures
        return out
    with phase("fuse"):
        fused = without_seq_scopes(fuse_module(mod, target))
    if not schedule:
        with phase("ieee"):
            return guard_module(_poison.before_codegen(fused, target, "unscheduled", report, poison))
    from .schedule import schedule_module
    with phase("schedule"):
        sched, rep = schedule_module(fused, target)
    report["schedule"] = rep
    with phase("ieee"):
        sched = _poison.before_codegen(sched, target, "scheduled", report, poison)
        return guard_module(sched)  # TVM's simplifier must not see real-number algebra


# The largest Relax main function (in bindings: one per kernel call, allocation or tuple access)
# built in the "compiled" exec mode; bigger ones run as bytecode (module doc). Measured on this
# project's 2-vCPU machine (process CPU time, 1 thread, MLP gradients of width 4): compiled saves
# 0.7 us per call at 6 bindings, 2.2 us at 21, 4.1 us at 41, 6.1 us at 81 (of 4-30 us calls), and
# costs 0.03, 0.04, 0.16, 0.34 s more to build. At 40 bindings the extra build time stays near
# 0.15 s, so a graph that small keeps the faster calls; above, compile time grows linearly.
COMPILED_MAX_BINDINGS = 40
# The smallest main built compiled. A main of one binding (a single kernel call: hvp, an
# elementwise chain, a fused multi-output kernel) saves little compiled and pays the whole cost of
# its own module and link: measured in one process, the same graph built both ways, calls
# interleaved (1 thread, pinned, this project's AMD machine): hvp n=2048 3.80 / 4.01 us compiled
# against 4.14 / 4.07 as bytecode, `sin(x * v) + 1` over 256 elements 2.94 / 5.32 against 3.15 /
# 5.42 us; first calls 103-107 against 68-73 ms and 122-152 against 85-108 ms (disk cache off).
COMPILED_MIN_BINDINGS = 2
EXEC_MODES = ("compiled", "bytecode")


def main_bindings(mod, name: str = "main") -> int:
    """How many bindings the Relax function `name` of `mod` has (0 when there is none)."""
    tvm = load_tvm()
    for gv, func in mod.functions_items():
        if gv.name_hint == name and isinstance(func, tvm.relax.Function):
            return sum(len(b.bindings) for b in getattr(func.body, "blocks", []))
    return 0


def has_parallel_loop(mod) -> bool:
    """Whether a PrimFunc of `mod` (the TIR a build compiles, before TVM's TIR passes turn
    parallel loops into calls of its thread pool) has a parallel loop (runtime/threads.py runs an
    executable without one as it is)."""
    tvm = load_tvm()
    parallel = tvm.tirx.ForKind.PARALLEL
    found = []

    def visit(loop):
        if loop.kind == parallel:
            found.append(loop)
    for func in mod.functions.values():
        if isinstance(func, tvm.tirx.PrimFunc):
            walk(func.body, [(tvm.tirx.For, visit)], order="post")
            if found:
                return True
    return False


def has_guarded_inner_loop(mod) -> bool:
    """Whether a PrimFunc of `mod` has an innermost loop (one without a loop inside) whose body
    holds a conditional: an `if_then_else` expression or an if statement (targets.py says why
    LLVM's loop vectorizer is kept off such builds)."""
    import tvm_ffi
    tvm = load_tvm()
    tir = tvm.tirx
    ite = tvm.ir.Op.get("prim.if_then_else")
    skip = tvm_ffi.WalkResult.SKIP
    found = []

    def conditional(stmt) -> bool:
        hit = []

        def on_call(call):
            if call.op.same_as(ite):
                hit.append(call)
        walk(stmt, [(tir.IfThenElse, hit.append), (tvm.ir.Call, on_call)], order="post")
        return bool(hit)

    def on_loop(loop):
        inner = []
        walk(loop.body, [(tir.For, inner.append)], order="post")
        if not inner and conditional(loop.body):
            found.append(loop)
        return None if inner else skip
    for func in mod.functions.values():
        if isinstance(func, tir.PrimFunc):
            walk(func.body, [(tir.For, on_loop)], order="pre")
            if found:
                return True
    return False


def choose_exec_mode(mod) -> str:
    """The Relax VM exec mode for a fused CPU module: "bytecode" when its main function has more
    than COMPILED_MAX_BINDINGS bindings or fewer than COMPILED_MIN_BINDINGS, or when its kernels
    do so much work per call that the compiled main's saving is small beside it
    (BYTECODE_WORK_PER_BINDING); else "compiled"."""
    bindings = main_bindings(mod)
    if bindings > COMPILED_MAX_BINDINGS or bindings < COMPILED_MIN_BINDINGS:
        return "bytecode"
    return "bytecode" if kernel_work(mod) >= BYTECODE_WORK_PER_BINDING * max(bindings, 1) else "compiled"


# A compiled main saves 0.1-0.3 us per binding per call, and costs a module of its own and a link
# into a shared library (lowering/linker.py), 15-20 ms of the first call: measured on this
# project's 2-vCPU machine, the first call of a 2048x32x512 matmul took 59 ms compiled and 39 ms
# as bytecode. Per call, 1 thread, pinned (with the runtime calling RELEASE_FUNCTION after main
# when the outputs are large): hvp n=2048 (2 bindings) 10.5-10.7 us compiled, 10.9-11.2 as
# bytecode; batch jacobian 64x33x31 (3) 12.8 and 13.7-14.0; jacrev 2 heads (7) 16.7-17.5 and
# 18.8-19.9; hessian 32x512 (3) 1,358-1,360 and 1,340-1,352; matmul 420-423 and 401-416. The
# seed workloads' kernels ran at up to 300,000 units of `kernel_work` per microsecond, so from
# 3,000,000 units per binding on, the VM's extra 0.1-0.3 us per binding is at most about 3% of a
# call (hessian 32x512: 81 million units per binding, matmul 770 million; hvp 0.4 million and
# batch jacobian 1.3 million stay compiled).
BYTECODE_WORK_PER_BINDING = 3_000_000
DYNAMIC_EXTENT = 1024  # the iterations `kernel_work` counts for a loop whose extent is not a constant


# A Relax function of no arguments returning an empty tuple, added to every bytecode build: the
# bytecode VM keeps the value its last call returned (VirtualMachineImpl::return_value_) until the
# next call returns, so `main`'s outputs stayed alive into the next call of main even where the
# caller had dropped them (20 calls of hessian 32x512, 32 MiB out, results dropped: peak RSS 313
# MiB, 280 with the release), and that call allocated its outputs beside them (calls alternating
# between two buffers ran slower). Calling this function after main (runtime/executable.py does,
# for outputs of at least RELEASE_FROM_BYTES) replaces that value with an empty tuple.
RELEASE_FUNCTION = "__graphad_release"


def with_release_function(mod):
    """`mod` with RELEASE_FUNCTION added (a public Relax function: `() -> ()`)."""
    tvm = load_tvm()
    relax = tvm.relax
    if any(gv.name_hint == RELEASE_FUNCTION for gv in mod.get_global_vars()):
        return mod
    bb = relax.BlockBuilder(mod)
    with bb.function(RELEASE_FUNCTION, []):
        bb.emit_func_output(relax.Tuple([]))
    return bb.get()


def kernel_work(mod) -> int:
    """An estimate of the work one call of `mod` does in its kernels: over the stores of each
    PrimFunc, the iterations of the loops around the store times the nodes of the value stored."""
    import tvm_ffi
    tvm = load_tvm()
    skip = tvm_ffi.WalkResult.SKIP

    def nodes(expr) -> int:
        n = [0]

        def count(_):
            n[0] += 1
        walk(expr, [(tvm.ir.Expr, count)], order="post")
        return n[0]

    def work(stmt, times: int) -> int:
        total = [0]

        def on_loop(loop):
            ext = loop.extent
            n = int(ext.value) if isinstance(ext, tvm.tirx.IntImm) else DYNAMIC_EXTENT
            total[0] += work(loop.body, times * n)
            return skip

        def on_store(store):
            total[0] += times * nodes(store.value)
            return skip
        walk(stmt, [(tvm.tirx.For, on_loop), (tvm.tirx.BufferStore, on_store)], order="pre")
        return total[0]
    return sum(work(f.body, 1) for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def _cpu_build(mod, target, exec_mode: str | None = None, kernels=None):
    """Relax VM lowering and LLVM codegen of a fused (scheduled) module for the CPU, in
    `exec_mode` (None: `choose_exec_mode`). Returns (VMExecutable, exec mode).

    With `kernels` (a kernel_objects.KernelStore) the kernels are compiled one object each
    through the store, and the executable's library holds only the rest: its attribute
    `graphad_link_plan` (kernel_objects.LinkPlan) says what the export must link in."""
    mode = exec_mode or choose_exec_mode(mod)
    if mode not in EXEC_MODES:
        raise CompileError(f"unknown Relax VM exec mode {mode!r} (one of {', '.join(EXEC_MODES)})")
    note("exec_mode", mode)
    if mode == "bytecode":
        mod = with_release_function(mod)
    try:
        steps = _relax_build_steps()
    except (ImportError, AttributeError):  # another TVM than 0.27's layout: one untimed step
        steps = None
    if steps is None:
        if kernels is not None:
            raise CompileError("kernel objects need TVM 0.27's relax.build layout")
        tvm = load_tvm()
        with phase("build"):
            return tvm.relax.build(stripped(tvm, mod), target, relax_pipeline=tvm.relax.get_pipeline("default_build"),
                                   exec_mode=mode), mode
    return steps(mod, target, mode, kernels), mode


def _relax_build_steps():
    """TVM 0.27's `relax.build` for a CPU target (relax/vm_build.py build, _vmlink and
    tirx/build.py build), written out step by step so each is timed; same calls, same order."""
    tvm = load_tvm()
    relax = tvm.relax
    import importlib
    vb = importlib.import_module("tvm.relax.vm_build")
    tb = importlib.import_module("tvm.tirx.build")  # the module: tvm.tirx.build is also its function
    parts = (vb._vmcodegen, vb._filter_tir, vb._auto_attach_system_lib_prefix, vb._ffi_api.VMLink,
             vb.VMExecutable, tb.split_host_device_mods, tb.tir_to_runtime, tvm.tirx.get_tir_pipeline)
    del parts  # looked up here, so a TVM without them falls back before anything is built

    def run(mod, target, mode, kernels=None):
        with phase("relax"):
            with target:
                mod = relax.get_pipeline("default_build")(mod)
        attrs = dict(mod.attrs) if mod.attrs else {}
        ext_libs = list(attrs.get("external_mods", []))
        params = dict(attrs.get("const_name_to_constant", {}))
        with phase("vmcodegen"):
            builder = relax.ExecBuilder()
            mod = vb._vmcodegen(builder, mod, mode)
        tir_mod = vb._filter_tir(mod)
        # whether a kernel has a parallel loop (runtime/threads.py), read from the TIR compiled:
        # the VM lowering legalizes some operators only now (topi's cumsum has a parallel loop)
        parallel = tir_mod is not None and has_parallel_loop(tir_mod)
        lib = plan = None
        if tir_mod is not None and len(tir_mod.get_global_vars()) > 0:
            tir_mod = vb._auto_attach_system_lib_prefix(tir_mod, target, None)
            host = target.host if target.host is not None else target
            tir_mod = tvm.tirx.transform.BindTarget(target.with_host(host))(tir_mod)
            # the opt level LLVM compiles the kernels at (targets.py); kernel objects decide per
            # kernel whether LLVM's loop vectorizer stays off (a guarded inner loop, which it
            # miscompiled), a build in one module for all its kernels (`whole`)
            base = host = codegen_target(host)
            from .linker import available as direct_link
            jobs = parallel_build.compile_jobs()
            store, split_only = kernels, False
            if store is None and parallel_build.SPLIT_JIT.get() and (jobs > 1 or direct_link()):
                # built in parallel and linked as a library where that pays (parallel_build.py),
                # else (None, None) and the ordinary build below, JIT-compiled
                from .kernel_objects import NullStore
                store, split_only = NullStore(), True
            if store is not None:
                from .kernel_objects import build_split
                try:
                    lib, plan = build_split(tvm, tir_mod, host, store, jobs, split_only=split_only)
                except Exception as e:
                    if not split_only:
                        raise  # the kernel-cache build: its caller builds the graph the ordinary way
                    parallel_build.split_failed(e)
                    lib = plan = None
        if lib is None and tir_mod is not None and len(tir_mod.get_global_vars()) > 0:
            whole = with_guarded_loops(base) if has_guarded_inner_loop(tir_mod) else base
            with phase("tir"):
                host_mod, device_mods = lower_tir(tvm, tir_mod)
            with phase("llvm"):
                lib = without_debug_info(tvm, tb.tir_to_runtime(host_mod, device_mods, whole))
        with phase("link"):
            lib = vb._ffi_api.VMLink(builder, target, lib, ext_libs, params)
        ex = vb.VMExecutable(lib)
        ex.graphad_link_plan = plan
        ex.graphad_parallel_loops = parallel
        return ex
    return run


_SCHEDULE_REJECTED_WARNED = False


def _schedule_rejected(reason: str) -> None:
    """Say (once per process) that a scheduled build failed and the graph was compiled without
    graphad's schedules: the results are right but slower, and it is a scheduler bug to report."""
    global _SCHEDULE_REJECTED_WARNED
    note("fallback", reason)
    if not _SCHEDULE_REJECTED_WARNED:
        _SCHEDULE_REJECTED_WARNED = True
        from ..errors import warn_at_user_line
        warn_at_user_line(f"graphad: TVM rejected a scheduled kernel ({reason}); the graph was compiled "
                          f"with TVM's default schedules instead (correct results, slower code). This is a "
                          f"graphad scheduler bug: please report it with the function that led here.")


def _short(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"


def build(mod, target=None, *, schedule: bool = True, poison: bool | None = None,
          exec_mode: str | None = None, kernels=None):
    """Compile `mod`; returns (tvm.relax VMExecutable, report dict).

    The report holds the target, the seconds spent, for the CPU the Relax VM exec mode
    (`exec_mode`: given, or chosen by `choose_exec_mode`) and the schedule rule applied to
    every PrimFunc (`graphad.lowering.schedule.FuncReport`). `poison` (default: the poison
    switch, `graphad.lowering.poison.poison_enabled()`) pre-fills every buffer a kernel writes
    with NaN or a sentinel (CPU only; see lowering/poison.py). `kernels` (CPU only: a
    kernel_objects.KernelStore) compiles the kernels one object each through that store; the
    report's `link_plan` then holds what exporting the executable must link in (its in-memory
    library lacks the kernels: it can only be exported, never run as it is).
    """
    target = resolve_target(target)
    t0 = time.perf_counter()
    report: dict = {"target": str(target), "schedule": [], "fallback": None}
    try:
        if is_gpu(target):
            prepared = prepare_module(mod, target, poison=poison, report=report)
            with phase("build"):
                ex = _cuda_build(prepared, target)
            report["pipeline"] = "cuda-default-dlight"
        else:
            ex = None
            if schedule:
                # prepare_module is outside the try below: a poison or inspection failure is an
                # error, not a reason to fall back to the unscheduled module
                sched = prepare_module(mod, target, schedule=True, poison=poison, report=report)
                # two arguments unless a mode or a kernel store is given: tests spy on _cpu_build
                args = (sched, target) if exec_mode is None and kernels is None else (sched, target, exec_mode)
                args += (kernels,) if kernels is not None else ()
                try:
                    ex, report["exec_mode"] = _cpu_build(*args)
                    report["pipeline"] = "cpu-fused-scheduled"
                except CompileError:
                    raise
                except Exception as e:  # a rule produced something codegen rejects: compile unscheduled
                    if kernels is not None:  # the caller builds it again the ordinary way
                        raise
                    report["fallback"] = _short(e)
                    _schedule_rejected(report["fallback"])
            if ex is None:
                plain = prepare_module(mod, target, schedule=False, poison=poison, report=report)
                args = (plain, target) if exec_mode is None and kernels is None else (plain, target, exec_mode)
                args += (kernels,) if kernels is not None else ()
                ex, report["exec_mode"] = _cpu_build(*args)
                report["pipeline"] = "cpu-fused"
            if getattr(ex, "graphad_parallel_loops", None) is not None:  # (not from TVM's one-step build)
                report["parallel_loops"] = ex.graphad_parallel_loops
    except CompileError:
        raise
    except Exception as e:
        raise CompileError(f"TVM failed to compile for {target.kind.name}: {_short(e)}") from e
    report["seconds"] = time.perf_counter() - t0
    plan = getattr(ex, "graphad_link_plan", None)
    if plan is not None:
        report["link_plan"] = plan
        report["kernels"] = {"cached": plan.cached, "built": plan.built}
    return ex, report
