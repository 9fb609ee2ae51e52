"""graphad's rule-based CPU schedules for the fused PrimFuncs of a Relax module.

TVM 0.27 on CPU neither fuses nor schedules by default (LegalizeOps emits serial scalar loops and
dlight's CPU rules take tens of seconds to compile). After the Relax "zero" passes (LegalizeOps,
AnnotateTIROpPattern, FuseOps, FuseTIR) every PrimFunc goes through these rules (TVM_NOTES §9):

1. inline: spatial, non-output producers are `compute_inline`d into their consumers when that
   recomputes nothing costly (see `should_inline`): pure data movement always, any elementwise
   producer into a single consumer of the same iteration count that reads it at one site (code
   size stays linear in the graph);
2. classify each remaining block by its iteration kinds and schedule it:
   * injective (all spatial): fuse the loops, split off vector lanes that stay inside the
     innermost axis, vectorize them, parallelise the outer loop when the nest is large; a
     transpose (no input read along the innermost axis, one read contiguously along another)
     is tiled instead and walked along that input's contiguous axis: vector loads, strided
     stores (`_transposed_axis`);
   * blocks that share a loop nest (`shared_loop_groups`): an output block that later blocks of
     the same iteration domain read at their own point only (a multi-output elementwise kernel,
     output_fusion.py) is merged into its readers' loop nest, which is then scheduled as one;
   * reduction case A (the innermost spatial var walks the last axis of some input with stride 1:
     matmul, column sums, stride-1 convolutions): an 8 x 2V register tile with the reduction
     loops in between, parallel outer loop, unrolled rows, vectorized lanes,
     `decompose_reduction` with a vectorized init; columns that do not fill 2V lanes are cut off
     into a second loop of one vector (`column_tail`); an elementwise consumer that reads the
     result at its own point (a bias, an activation, a gradient's mask) is then computed per
     tile inside the same parallel loop (`epilogue`), not as a second pass over the output;
   * reduction case B (the innermost reduction var is contiguous: mat-vec, row max/sum):
     `rfactor` V partial results, vectorized, written back per output point, parallel rows;
   * case C (anything else, and multi-output reductions such as argmax): parallel over the
     fused spatial loops.
   V is the number of lanes of the target's SIMD registers for the block's dtype.
3. Any exception while scheduling a PrimFunc leaves that PrimFunc unscheduled (still correct)
   and is reported as a fallback. `schedule_module` returns the report with the rule applied to
   every block, so tests and `graphad` tools can show what happened.
"""
from __future__ import annotations

# A TE stage whose name starts with this is never inlined into its consumers (it may still be
# computed a vector at a time inside its consumer's loop, `compute_at_consumers`): a lowering uses
# it for a value whose expression must stay apart from its consumer's (float32 pow's log, whose
# Let chain followed by the exponential's made the code generator's analyzer take 0.8 s).
KEEP_PREFIX = "keep_"

from dataclasses import dataclass, field

from ._tvm import load_tvm, walk
from .index_check import CHECK_ATTR
from .inline_tir import BlockGraph, Unsupported

# Inline with graphad's substitution (inline_tir.py) where it models the kernel, else with TVM's
# compute_inline: the same TIR (tests/test_inline_tir.py); False only to compare the two.
INLINE_BY_SUBSTITUTION = True
# ... for kernels of at least this many blocks: below, TVM's primitive on its small scope cost
# less than the model's set-up (302 kernels of the fuzz fixtures and their derived graphs: those
# of 1-16 blocks took 1.12 s to schedule with TVM's primitive, against 1.39 s with the model made
# for each; those of 17 or more 1.51 s against 1.42 s)
SUBSTITUTION_MIN_BLOCKS = 17

PAR_MIN = 1 << 14  # loop nests with fewer iterations are not worth a parallel launch
# A producer body of at most this many expression nodes may be copied into every read site of its
# consumers: index arithmetic of a reshape or transpose, one cheap operation. A bigger one (an
# integer chain whose bodies read their input several times grew as 8**depth: ten rounds of a
# multiply-floor_divide-remainder hash never finished compiling) is inlined only where it is
# read once.
COPY_MAX_NODES = 48

# A bool producer read by a consumer that iterates more (a broadcast) is recomputed in it when it
# does at most this many value operations (see `should_inline`)
BOOL_RECOMPUTE_OPS = 4
MAX_LANES = 32


@dataclass
class FuncReport:
    """What happened to one PrimFunc."""

    name: str
    status: str  # "scheduled" | "fallback" | "skipped"
    op_pattern: int | None = None
    blocks: list[str] = field(default_factory=list)  # "block:rule(...)" per scheduled block
    inlined: list[str] = field(default_factory=list)
    error: str | None = None

    def __str__(self):
        if self.status == "fallback":
            return f"{self.name}: FALLBACK ({self.error})"
        inl = f" inlined={self.inlined}" if self.inlined else ""
        return f"{self.name}: {', '.join(self.blocks) or self.status}{inl}"


def _region_buffer(region):
    """The buffer of a block's read/write region (TVM 0.27 names it TensorRegion.source)."""
    return region.buffer if hasattr(region, "buffer") else region.source


class _Rules:
    def __init__(self, vector_bits: int):
        tvm = load_tvm()
        self.tvm = tvm
        self.tir = tvm.tirx
        self.DP = tvm.tirx.IterVar.DataPar
        self.RED = tvm.tirx.IterVar.CommReduce
        self.vector_bits = vector_bits
        # case-A reductions scheduled so far, by update block name: the parallel (outer) loop of
        # its tiles and the names of the blocks computed in it, its own included (`epilogue`)
        self.tiles: dict = {}

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _ext(sch, loop) -> int:
        """Static loop extent (raises for symbolic extents: the caller falls back)."""
        return int(sch.get(loop).extent)

    @staticmethod
    def _pow2_div(n: int, cap: int) -> int:
        """Largest power of two <= cap dividing n."""
        v = max(cap, 1)
        while v > 1 and n % v:
            v //= 2
        return v

    def bits(self, block) -> int:
        """Bits per element of the dtype the block writes (at least 8; 32 when unknown)."""
        try:
            buf = _region_buffer(block.writes[0])
            return max(8, int(self.tvm.DataType(str(buf.dtype)).bits))
        except Exception:
            return 32

    def lanes(self, block) -> int:
        """SIMD lanes for the dtype the block writes."""
        return max(1, min(MAX_LANES, self.vector_bits // self.bits(block)))

    @staticmethod
    def count(stmt, kinds, keep=lambda e: True, limit: int | None = None) -> int:
        """How many nodes of the given kinds in a block body (or expression) satisfy `keep`; with
        `limit`, the walk stops there (min(count, limit)): the rules mostly ask "none?", "at most
        one?", and a body's walk calls back into Python per node."""
        import tvm_ffi
        n = [0]

        def visit(e):
            if keep(e):
                n[0] += 1
                if limit is not None and n[0] >= limit:
                    return tvm_ffi.VisitInterrupt(None)
            return None
        if limit is not None and limit <= 0:
            return 0
        walk(stmt, [(kinds, visit)], order="post")
        return n[0]

    def n_value_ops(self, stmt, limit: int | None = None) -> int:
        """Arithmetic on values (+, -, *, /, div/mod, min, max, select, calls) in a block body
        (with `limit`: min(that, limit), found with less walking).

        Index arithmetic (what the indices of a buffer read compute) is not counted, so reshapes
        and broadcasts count as 0. Integer arithmetic on values counts like float arithmetic: an
        integer hash (Dropout's Feistel rounds: multiply, floor_divide, remainder, each guarded
        by selects) copied into every read site nests each round's expression inside the next
        one's select conditions, and TVM's simplifier, which simplifies a select's branches under
        its condition, took about ten minutes on the result (exponential in the rounds).
        """
        tirx = self.tvm.tirx

        def on_values(e):
            ty = getattr(e, "ty", None)  # TVM 0.27: PrimExpr types live in .ty (no .dtype)
            return not str(getattr(ty, "dtype", ty)).startswith("bool")
        kinds = (tirx.Add, tirx.Sub, tirx.Mul, tirx.Div, tirx.Mod, tirx.FloorDiv, tirx.FloorMod,
                 tirx.Min, tirx.Max, tirx.Select, self.tvm.ir.Call)
        loads: list = []
        self.count(stmt, self.tvm.ir.TensorLoad, lambda e: loads.append(e) or False)
        # a gather's load inside another load's index is subtracted twice: at worst the block
        # counts as cheaper than it is, which is what every load counted as before
        index = sum(self.count(i, kinds, on_values) for ld in loads for i in ld.indices)
        # max(0, total - index) capped at limit is the same with total counted up to index + limit
        total = self.count(stmt, kinds, on_values, None if limit is None else index + limit)
        value_ops = max(0, total - index)
        return value_ops if limit is None else min(value_ops, limit)

    def should_inline(self, sch, b, cons) -> bool:
        """Inline a producer when that recomputes nothing costly.

        A consumer iterating more than the producer (a broadcast) would recompute the producer's
        value per extra iteration: only pure data movement (no value arithmetic) is inlined then,
        otherwise e.g. tanh over 32 values is recomputed 65536 times inside a Jacobian's multiply.
        With equal iteration counts one consumer may take any producer (elementwise fusion), and
        several consumers only cheap ones (at most one operation each).
        """
        if b.name_hint.startswith(KEEP_PREFIX):  # the lowering asked for this stage to stay a loop
            return False
        buf = _region_buffer(b.writes[0])
        divmod_ = (self.tir.FloorDiv, self.tir.FloorMod)  # the index arithmetic of reshapes
        if self.count(b.body, divmod_, limit=1) and any(self.reads_reversed(sch.get(c), buf) for c in cons):
            # TVM 0.27 lowers floordiv/floormod of a descending index wrongly: a reshape inlined
            # into a flip ((7 - i) % 8 // 4) read the wrong elements, vectorized or not
            return False
        let_bound = any(self.count(sch.get(c).body, self.tir.Let, limit=1) for c in cons)
        if let_bound and self.count(b.body, self.tir.Let, limit=1):
            # two let-bound bodies (graphad's float32 pow, log, erfc...) nested in one: TVM's LLVM
            # code generator binds each Let in its analyzer, whose simplifier substitutes the
            # earlier bindings into every later one, and a chain of two such bodies took it minutes
            # ((x ** 3.0) ** 0.5, found by a reviewer and the fuzzer). The producer stays a stage,
            # computed a vector at a time in its consumer's loop (`compute_at_consumers`).
            return False
        if let_bound and self.count(b.body, (self.tir.Cast,), lambda e: str(e.value.ty) == "bool", limit=1):
            # a bool cast to a number (a mask, (a > b).astype(float)) inside a let-bound body
            # (float32 sinh, arcsin... computed in float64): TVM's vectorizer then made an integer
            # constant of a bool vector type and the build failed ("IntImm can only take scalar,
            # but boolx8"), falling back to TVM's schedules. The cast stays a stage of its own.
            return False
        ops = self.n_value_ops(b.body, limit=2)  # 0, 1 or "more"
        p_iters = self.n_iters(b)
        c_iters = [self.n_iters(sch.get(c)) for c in cons]
        if any(ci > p_iters for ci in c_iters):
            if str(buf.dtype) == "bool":
                # a cheap bool producer (isfinite(x) of a broadcast x) is recomputed: as a stage of
                # its own its buffer is read as a vector of i8 that TVM's LLVM code generator and-ed
                # with a vector of i1 ("and <4 x i1>, <4 x i8>": isclose of (3, 1) and (4,) fell
                # back to TVM's schedules, an npops trial)
                return ops <= 1 or self.n_value_ops(b.body, limit=BOOL_RECOMPUTE_OPS + 1) <= BOOL_RECOMPUTE_OPS
            # fewer than twice the iterations (a staged sum's last block, padded past the end,
            # relax_ops._staged_sum): one operation recomputed on at most as many points again
            return ops == 0 or (ops == 1 and all(ci < 2 * p_iters for ci in c_iters))
        # A producer read at k sites is copied k times: a chain of such inlines (sin(sin(sin(x))),
        # whose bodies read their input several times) grows the code as k**depth (82 MB of TIR
        # for three sins). One read site keeps the code linear in the graph.
        if ops <= 1 and self.count(b.body, (self.tvm.ir.Expr,), limit=COPY_MAX_NODES + 1) <= COPY_MAX_NODES:
            return True  # small enough to copy
        loads = sum(self.count(sch.get(c).body, self.tvm.ir.TensorLoad,  # 0.27's BufferLoad
                               lambda e: _region_buffer(e).same_as(buf), limit=2) for c in cons)
        return loads == 1

    def reads_reversed(self, block, buf) -> bool:
        """Whether `block` reads `buf` at an index that descends along one of its iterators."""
        from tvm.sym.pattern import detect_linear_equation
        ivs = [iv.var for iv in block.iter_vars]

        def descends(e):  # a descending index is a difference: n - 1 - i
            coefs = [detect_linear_equation(e, [v]) for v in ivs]
            # not affine (no coefficient) counts too: it cannot be vouched for
            return any(len(c) != 2 or not isinstance(c[0], self.tir.IntImm) or int(c[0]) < 0 for c in coefs)

        def reversed_read(e):
            return _region_buffer(e).same_as(buf) and any(self.count(i, self.tir.Sub, descends) for i in e.indices)
        return self.count(block.body, self.tvm.ir.TensorLoad, reversed_read) > 0

    @staticmethod
    def n_iters(block) -> int:
        p = 1
        for iv in block.iter_vars:
            p *= int(iv.dom.extent)
        return p

    def is_spatial(self, block) -> bool:
        return all(iv.iter_type == self.DP for iv in block.iter_vars)

    # ------------------------------------------------------------ rule 1: inlining
    def inline(self, sch, root) -> list[str]:
        """Inline, again and again, the first block in program order that `should_inline` takes;
        returns the inlined blocks' names in the order inlined.

        Done in one walk over the blocks rather than a rescan from the first block after each
        inline, each rescan asking TVM for the scope's output and child blocks again (about 3 ms
        for a scope of 800 blocks): a chain of 400 elementwise operations fused into one kernel
        spent 1.8 s here. The same blocks are inlined in the same order: whether a block is
        taken depends on its own body, which inlining elsewhere leaves alone (its consumers come
        after it), and on how its consumers read it, which changes only for the producers of the
        block just inlined (they gain its consumers); the walk goes back to the first of those.
        The output blocks (writing a buffer the scope does not allocate) stay the same.
        """
        done = []
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        blocks = list(sch.get_child_blocks(root))
        names = [sch.get(b).name_hint for b in blocks]
        # Blocks turned down (or whose inlining TVM refused), with their consumers' names then.
        # A walk back meets them again, but the answer can change only for the producers of the
        # block just inlined (they gain its consumers) and for blocks read by one of its
        # consumers (that consumer's body now holds the inlined one's); the others are skipped
        # without asking again: a forward-mode Jacobian's kernels (28 kernels, 233 inlines)
        # asked `should_inline` 1,964 times (1.5 s under a profiler), now 629.
        refused: dict[str, set] = {}
        i = 0
        while i < len(blocks):
            blk = blocks[i]
            b = sch.get(blk)
            if b.name_hint in outputs or not b.iter_vars or not self.is_spatial(b) or b.name_hint in refused:
                i += 1
                continue
            cons = sch.get_consumers(blk)
            cons_names = {sch.get(c).name_hint for c in cons}
            if not cons or not self.should_inline(sch, b, cons):
                refused[b.name_hint] = cons_names
                i += 1
                continue
            producers = {sch.get(p).name_hint for p in sch.get_producers(blk)}
            try:
                sch.compute_inline(blk)
            except Unsupported:
                raise  # (BlockGraph: the walk starts again with TVM's primitive)
            except Exception:  # non-invertible index, reduction-consumer quirks: keep the block
                refused[b.name_hint] = cons_names
                i += 1
                continue
            done.append(b.name_hint)
            for name in [n for n, c in refused.items() if n in producers or c & cons_names]:
                del refused[name]
            del blocks[i], names[i]
            i = next((k for k in range(i) if names[k] in producers), i)
        return done

    # ------------------------------------------------------------ rule 2: per-block schedules
    def check_nest(self, sch, blk):
        b = sch.get(blk)
        loops = sch.get_loops(blk)
        if not loops and all(int(iv.dom.extent) == 1 for iv in b.iter_vars):
            return b, []  # a 0-d result: TE gives its block one iterator of extent 1 and no loop
        if len(loops) != len(b.iter_vars):
            raise ValueError(f"block {b.name_hint}: {len(loops)} loops for {len(b.iter_vars)} iterators")
        for lp, iv in zip(loops, b.iter_vars):
            if self._ext(sch, lp) != int(iv.dom.extent):
                raise ValueError(f"block {b.name_hint}: loop nest does not follow the block iterators")
        return b, loops

    def injective(self, sch, blk) -> str:
        b, loops = self.check_nest(sch, blk)
        if not loops:
            return "scalar"
        # TVM's bfloat16 legalisation rejects a vector store of one broadcast value (a uint16
        # buffer, a bfloat16x4 value): the whole build failed and fell back to no schedule
        scalar_only = self._broadcasts_bfloat16(b)
        lanes = self.lanes(b)
        inner = self._ext(sch, loops[-1])
        k = None if scalar_only else self._transposed_axis(b)
        if (not scalar_only and len(loops) > 1 and 4 <= inner <= 4 * lanes and self._pow2_div(inner, lanes) < 4
                and k is None):
            # an odd innermost extent (31, 33...): vectorize the whole row (LLVM splits it into
            # legal vectors plus a tail) and parallelise over the fused outer loops. Not for a
            # transpose, whose row would be one gather of that many lanes: LLVM took 44 ms to
            # compile a 33x31 float32 transpose so, its scalar loop runs as fast
            outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
            n = self._ext(sch, outer) * inner
            sch.vectorize(loops[-1])
            par = n >= PAR_MIN
            if par:
                sch.parallel(outer)
            return f"injective(vec=row{inner}{',par' if par else ''})"
        if k is not None:
            tu = self._pow2_div(self._ext(sch, loops[k]), min(lanes, 16))
            tv = self._pow2_div(inner, 8)
            if tu >= 4 and tv >= 4:
                # a transpose: tiles of tv output rows x tu columns, walked along the input's
                # contiguous axis (vector loads, strided stores: 245 -> 32 us for a 784x256
                # float32 transpose at one thread, against vectors along the output row, whose
                # lanes each load from another input row)
                uo, ui = sch.split(loops[k], [None, tu])
                vo, vi = sch.split(loops[-1], [None, tv])
                outer = [*loops[:k], *loops[k + 1:-1]]
                sch.reorder(*outer, uo, vo, vi, ui)
                f = sch.fuse(*outer, uo, vo)
                n = self._ext(sch, f) * tu * tv
                sch.unroll(vi)
                sch.vectorize(ui)
                par = n >= PAR_MIN
                if par:
                    sch.parallel(f)
                return f"injective(transpose={tv}x{tu}{',par' if par else ''})"
        f = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        n = self._ext(sch, f)
        # lanes stay inside the innermost (contiguous) axis: straddling rows turns loads into gathers
        if scalar_only:
            v = 1
        elif inner >= 4:
            v = self._pow2_div(inner, lanes)
        else:
            v = self._pow2_div(n, lanes) if len(loops) == 1 else 1
        if v > 1:
            f, vi = sch.split(f, [None, v])
            sch.vectorize(vi)
        par = n >= PAR_MIN
        if par:
            sch.parallel(f)
        return f"injective(vec={v}{',par' if par else ''})"

    def _broadcasts_bfloat16(self, b) -> bool:
        """Whether the block writes bfloat16 and reads nothing that varies along its innermost
        iterator (a constant, or a broadcast along the last axis)."""
        try:
            if str(_region_buffer(b.writes[0]).dtype) != "bfloat16" or not b.iter_vars:
                return False
        except Exception:  # noqa: BLE001 - no single written buffer: not this case
            return False
        last = b.iter_vars[-1].var
        return not any(self.count(rg.min, self.tir.Var, lambda e: e.same_as(last)) for r in b.reads for rg in r.region)

    def _transposed_axis(self, b) -> int | None:
        """The loop to vectorize instead of the innermost one when the block is a transpose: no
        input is read contiguously along the innermost iterator, and some input that the
        innermost iterator indexes (in an outer axis) is read contiguously along another one
        (the innermost such). None otherwise (broadcasts, gathers, plain copies)."""
        vs = [iv.var for iv in b.iter_vars]
        if len(vs) < 2:
            return None
        last, found = vs[-1], None
        for r in b.reads:
            cont = self._contiguous_vars(r)
            if any(v.same_as(last) for v in cont):
                return None
            if not any(self.count(rg.min, self.tir.Var, lambda e: e.same_as(last)) for rg in r.region[:-1]):
                continue
            for k, v in enumerate(vs[:-1]):
                if any(c.same_as(v) for c in cont):
                    found = k if found is None else max(found, k)
        return found

    def _unit_vars(self, e) -> list:
        """Variables with coefficient 1 in an index expression that is a sum of terms (x, x + r, ...)."""
        if isinstance(e, self.tir.Var):
            return [e]
        if isinstance(e, self.tir.Add):
            return self._unit_vars(e.a) + self._unit_vars(e.b)
        return []

    def _contiguous_vars(self, region) -> list:
        """Variables that walk the contiguous (last) axis of an access region with stride 1."""
        if not region.region:
            return []
        return self._unit_vars(region.region[-1].min)

    def epilogue(self, sch, blk) -> str | None:
        """Compute an elementwise consumer of a case-A reduction tile by tile, inside the
        reduction's parallel loop, while the tile is in registers or L1 (a matmul's bias and
        activation): one parallel launch and one pass over memory instead of two. Applies when
        every producer of the block is that tile (its update and init blocks) or a block already
        moved into it, and the block reads each of their results at its own iterators (same
        shape, same order); TVM must accept the move (tried on a copy first). Other consumers of
        the reduction may stay outside: its whole result is still written. None when this does
        not apply: the block is then scheduled on its own."""
        b = sch.get(blk)
        prods = sch.get_producers(blk)
        names = {sch.get(p).name_hint for p in prods}
        tile = next((t for update, t in self.tiles.items() if update in names), None)
        if tile is None or names - tile["members"]:
            return None
        extents = [int(iv.dom.extent) for iv in b.iter_vars]
        bufs = [_region_buffer(w) for p in prods for w in sch.get(p).writes]
        if any([int(d) for d in buf.shape] != extents for buf in bufs) or not self._reads_at_own_point(b, bufs):
            return None
        try:
            sch.copy().reverse_compute_at(blk, tile["loop"])
        except Exception:  # noqa: BLE001 - TVM refuses the move: schedule the block on its own
            return None
        sch.reverse_compute_at(blk, tile["loop"])
        tile["members"].add(b.name_hint)
        inner = sch.get_loops(blk)[-1]
        n = self._ext(sch, inner)
        v = n if n >= 4 and n & (n - 1) == 0 and n <= 2 * MAX_LANES else 1
        if v > 1:
            sch.vectorize(inner)
        return f"epilogue(tile,vec={v})"

    def _reads_at_own_point(self, block, bufs) -> bool:
        """Whether `block` reads each buffer of `bufs` only at its own iterators (same order)."""
        ivs = [iv.var for iv in block.iter_vars]

        def other_read(e):
            return any(_region_buffer(e).same_as(buf) for buf in bufs) and (
                len(e.indices) != len(ivs) or not all(i.same_as(v) for i, v in zip(e.indices, ivs)))
        return self.count(block.body, self.tvm.ir.TensorLoad, other_read) == 0

    def shared_loop_groups(self, sch, root) -> list[list[str]]:
        """Runs of blocks to compute in one loop nest (`share_loops`): output blocks whose result
        the function also returns and only later blocks of the run read, each at its own point,
        then the block that ends the run; all spatial over one iteration domain (a multi-output
        elementwise kernel, output_fusion.py: Adam's new moments, which its new weight reads).
        Blocks in between that read nothing of the run (a 0-d scalar) stay outside it. Block
        names in order, the run's end last."""
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        groups, run = [], []  # run: (name, names of its readers)
        extents = None
        for blk in sch.get_child_blocks(root):
            b = sch.get(blk)
            ext = [int(iv.dom.extent) for iv in b.iter_vars]
            spatial = bool(b.iter_vars) and self.is_spatial(b)
            readers = [sch.get(c) for c in sch.get_consumers(blk)] if spatial else []
            bufs = [_region_buffer(w) for w in b.writes]
            if (spatial and b.name_hint in outputs and readers
                    and all([int(d) for d in buf.shape] == ext for buf in bufs)
                    and all(self.is_spatial(r) and [int(iv.dom.extent) for iv in r.iter_vars] == ext
                            and self._reads_at_own_point(r, bufs) for r in readers)):
                if run and ext != extents:
                    run = []
                run.append((b.name_hint, {r.name_hint for r in readers}))
                extents = ext
                continue
            if not run:
                continue
            members = {name for name, _ in run} | {b.name_hint}
            if spatial and ext == extents and all(r <= members for _, r in run):
                groups.append([*[name for name, _ in run], b.name_hint])
                run = []
            elif any(b.name_hint in r for _, r in run):
                run = []  # it reads the run but cannot end it
        return groups

    def compute_at_consumers(self, sch, root, desc: dict) -> list[str]:
        """Move each intermediate elementwise stage that inlining kept (it has two or more
        operations and is read at several sites: tanh's clamp read by its polynomial, tanh read
        twice by a square) into its consumer's loop nest, at the loop above the consumer's
        vectorized loop (`compute_at`): the stage is computed a vector at a time just before it is
        read, and its buffer shrinks to that vector, where it had been a whole-size buffer written
        out and read back (the gradient of tanh over 2^18 float32 elements: 176-208 -> 117 us, one
        thread).

        Only a stage whose one consumer is a spatial block over the same iteration domain,
        reading it at its own point, scheduled by `injective` as fused loops plus a vectorized
        (or no) inner loop; the stages are taken last first, so a chain ends up in one nest. Not
        `merge` of the two innermost loops: with the stage's buffer allocated inside a vectorized
        loop, TVM 0.27 kept one element of it for all the lanes (every lane of exp(x) came out
        as the last lane's). Returns the moved stages' names."""
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        moved = []
        for blk in reversed(list(sch.get_child_blocks(root))):
            b = sch.get(blk)
            name = b.name_hint
            if name in outputs or not b.iter_vars or not self.is_spatial(b) \
                    or not desc.get(name, "").startswith("injective(vec="):
                continue
            cons = sch.get_consumers(blk)
            if len(cons) != 1:
                continue
            c = sch.get(cons[0])
            ext = [int(iv.dom.extent) for iv in b.iter_vars]
            bufs = [_region_buffer(w) for w in b.writes]
            if (not self.is_spatial(c) or [int(iv.dom.extent) for iv in c.iter_vars] != ext
                    or any([int(d) for d in buf.shape] != ext for buf in bufs)
                    or not self._reads_at_own_point(c, bufs)
                    or not (desc.get(c.name_hint, "").startswith("injective(vec=") or c.name_hint in moved)):
                continue
            if _has_rare_marker(c):
                # the rare path (lowering/rare_path.py) runs a marked consumer's vectors again: a
                # stage moved in would run again with them, and TVM's CSE then bound a value the
                # stage and the consumer share (pow's 0-d base, read in both) in one copy of the
                # nest and used it in the other ("cse_v1 has been used before definition": the
                # build failed and fell back to TVM's schedules)
                continue
            loops = sch.get_loops(cons[0])
            if not loops:
                continue
            vectorized = len(loops) >= 2 and int(sch.get(loops[-1]).kind) == 2  # ForKind.VECTORIZED
            at = len(loops) - 2 if vectorized else len(loops) - 1  # the index of the loop to compute at
            try:
                trial = sch.copy()
                trial.compute_at(trial.get_sblock(name), trial.get_loops(trial.get_sblock(c.name_hint))[at])
            except Exception:  # noqa: BLE001 - TVM refuses the move: the stage keeps its own nest
                continue
            sch.compute_at(blk, loops[at])
            own = sch.get_loops(sch.get_sblock(name))[at + 1:]  # the stage's loops over one vector
            if vectorized and own:
                f = sch.fuse(*own) if len(own) > 1 else own[0]
                if self._ext(sch, f) == self._ext(sch, loops[-1]):
                    sch.vectorize(f)
            moved.append(name)
        return moved

    def share_loops(self, sch, names) -> bool:
        """Merge the loop nests of blocks `names` (a `shared_loop_groups` run) into one nest, in
        their order; False (nothing changed) when TVM refuses (tried on a copy first). TVM puts
        the merged nest where the last one was: the blocks that stood between, which read
        nothing of the run, then run before all of it (checked)."""
        def innermost(s):
            return [s.get_loops(s.get_sblock(n))[-1] for n in names]
        root = sch.get_sblock("root")
        before = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
        between = before[before.index(names[0]):before.index(names[-1])]
        try:
            trial = sch.copy()
            trial.merge(*innermost(trial))
            after = [trial.get(b).name_hint for b in trial.get_child_blocks(trial.get_sblock("root"))]
        except Exception:  # noqa: BLE001 - the blocks keep their own nests
            return False
        if any(after.index(n) > after.index(names[0]) for n in between if n not in names):
            return False
        sch.merge(*innermost(sch))
        return True

    @staticmethod
    def tile_nest(s, blk, outer, R, rows, lanes, par, vectorize=True):
        """The register tile's loop nest: `outer` loops fused (parallel when `par`), then the
        reduction loops, the unrolled `rows` loops and the `lanes` loop (vectorized), the init
        split off by decompose_reduction with its lanes vectorized too. (parallel loop, init)."""
        s.reorder(*outer, *R, *rows, lanes)
        po = s.fuse(*outer) if len(outer) > 1 else outer[0]
        if par:
            s.parallel(po)
        for t in rows:
            s.unroll(t)
        if vectorize:
            s.vectorize(lanes)
        init = s.decompose_reduction(blk, R[0])
        if vectorize:
            s.vectorize(s.get_loops(init)[-1])
        return po, init

    def register_tile(self, sch, blk, po, init) -> None:
        """Record a case-A tile for `epilogue`, under its update block's name (decompose_reduction
        renamed the block: matmul -> matmul_update, matmul_init)."""
        upd = sch.get(blk).name_hint
        self.tiles[upd] = {"loop": po, "members": {upd, sch.get(init).name_hint}}

    def tile_rows(self, sch, S) -> int:
        """Rows of a register tile over loop S[-2]: 8 when they divide it, else its largest divisor
        from 7 down to 2, else 1."""
        m = self._ext(sch, S[-2])
        return next((d for d in range(8, 1, -1) if m % d == 0), 1)

    def column_tail(self, sch, blk, S, R, lanes, par, readers_ok: bool = False) -> str | None:
        """A case-A product whose column count is not a multiple of two vectors (784 = 24 x 32 +
        16, 99 = 3 x 32 + 3): its columns are cut into loops (TVM's loop_partition), the first
        tiled rows x 2V as usual, the rest rows x (its width) in one vector, or in one vector and
        the remainder after it when the rest is wider than a vector and no power of two (87 =
        2 x 32 + 16 + 7), instead of the whole product in the narrower tiles that divide it (16 x
        16 for 784: one B vector load per 16 FMAs left the loads the bottleneck, 430 -> 355 us for
        a 256x784 weight gradient from 128 rows; 1 column for 99: case C's serial sums, 394 ->
        12 us for 128x99 from 64 rows). The column tiles are the outer loop of the first part: a
        B panel stays in L1 across the row tiles. Rows as `tile_rows`, at least 2. A product read
        by another block of the function keeps its tiles unless `readers_ok` (the caller's
        narrower tile is slower than a second pass for the readers): its tiles are several loops,
        so no epilogue can join them. TVM must accept the moves (tried on a copy first). None
        when this does not apply."""
        vt = 2 * lanes
        ext = self._ext(sch, S[-1])
        main, rest = ext - ext % vt, ext % vt
        if len(S) < 2 or (sch.get_consumers(blk) and not readers_ok):
            return None
        widths = [vt] if main >= vt else []  # the part in 2V tiles, then what is left
        left = rest if widths else ext
        if left > lanes and left & (left - 1):
            # a row wider than a vector and no power of two came out scalar from LLVM: one vector,
            # then the remainder
            widths += [lanes, left - lanes]
        elif left:
            widths.append(left)
        rows = self.tile_rows(sch, S)
        if len(widths) < 2 or rows == 1:
            return None
        # loop_partition's sizes: every part's but the last
        sizes = [main if w == vt and i == 0 else w for i, w in enumerate(widths)][:-1]

        def apply(s, loops):
            S_, R_ = loops[:len(S)], loops[len(S):]
            s.reorder(S_[-1], *S_[:-1], *R_)
            parts = s.loop_partition(S_[-1], sizes)
            for part, width in zip(parts, widths):
                (b,) = [c for c in s.get_child_blocks(part) if s.get(c).iter_vars]
                col, *others = s.get_loops(b)[-len(loops):]
                sp, rp = others[:len(S) - 1], others[len(S) - 1:]
                ro, ri = s.split(sp[-1], [None, rows])
                if width == vt and part.same_as(parts[0]) and main >= vt:
                    co, ci = s.split(col, [None, vt])
                    outer = [co, *sp[:-1], ro]
                else:  # one vector: the loop starts past 0 (split wants 0), vectorized as it is
                    outer, ci = [*sp[:-1], ro], col
                self.tile_nest(s, b, outer, rp, [ri], ci, par, vectorize=width > 1)

        name = sch.get(blk).name_hint
        try:
            trial = sch.copy()
            tb = trial.get_sblock(name)
            apply(trial, trial.get_loops(tb))
        except Exception:  # noqa: BLE001 - TVM refuses a move: the narrower tiles take it
            return None
        apply(sch, [*S, *R])
        return f"reduceA(tile={'+'.join(f'{rows}x{w}' for w in widths)}{',par' if par else ''})"

    def reduction(self, sch, blk) -> str:
        b, loops = self.check_nest(sch, blk)
        S = [lp for lp, iv in zip(loops, b.iter_vars) if iv.iter_type == self.DP]
        R = [lp for lp, iv in zip(loops, b.iter_vars) if iv.iter_type == self.RED]
        if len(S) + len(R) != len(loops):
            raise ValueError(f"block {b.name_hint}: iterators other than spatial/reduction")
        s_vars = [iv.var for iv in b.iter_vars if iv.iter_type == self.DP]
        r_vars = [iv.var for iv in b.iter_vars if iv.iter_type == self.RED]
        work = self.n_iters(b)
        par = work >= PAR_MIN
        lanes = self.lanes(b)
        contiguous = [v for r in b.reads for v in self._contiguous_vars(r)]
        simple = len(b.writes) == 1  # argmax/argmin reduce (index, value) pairs: no rfactor/tiling

        # Case A: innermost spatial axis contiguous in some input -> vectorize across outputs
        if simple and s_vars and R and any(v.same_as(s_vars[-1]) for v in contiguous):
            ext = self._ext(sch, S[-1])
            vt = 2 * lanes if ext % (2 * lanes) == 0 else self._pow2_div(ext, lanes)
            if vt < 2 * lanes:
                done = self.column_tail(sch, blk, S, R, lanes, par, readers_ok=vt < lanes)
                if done is not None:
                    return done
            if 1 < ext < lanes and (vt < 4 or vt < ext) and len(S) >= 2:
                # fewer columns than one vector, not a power of two (a classifier's 10): 8 rows x
                # the whole row, vectorized as it is (one masked vector to LLVM), rather than
                # 8 x 2 tiles or case B's partial sums along the reduction, which gather a
                # transposed operand's strided column (128x256 @ 256x10: 98 -> 9 us at one
                # thread; 12 columns 19 -> 9 us). Wider rows (20, 24) came out scalar: not them
                rows = self.tile_rows(sch, S)
                to, ti = sch.split(S[-2], [None, rows])
                self.register_tile(sch, blk, *self.tile_nest(sch, blk, S[:-2] + [to], R, [ti], S[-1], par))
                return f"reduceA(tile={rows}xrow{ext}{',par' if par else ''})"
            # 8 x vt register tile; 16 x vt when vt is one vector (784 = 49 x 16 columns), the
            # target has 32 vector registers and 16 rows of the left operand's panel fit in half
            # of L1: 8 accumulators left the FMA units idle (a 256x784 weight gradient from 128
            # rows: 522 -> 424 us at one thread; a tile of 4 x 7 unrolled vectors took 442 us, one
            # 112-lane vector 13.8 ms), but a (32x1024) @ (1024x144) product, whose 16-row panel
            # is 64 KB, went from 72 to 115 us
            k_total = 1
            for r in R:
                k_total *= self._ext(sch, r)
            panel = 16 * k_total * self.bits(b) // 8
            rows = 16 if vt == lanes and self.vector_bits >= 512 and panel <= 16384 else 8
            if len(S) >= 2 and self._ext(sch, S[-2]) % rows:
                # 8, else fewer rows than 8 per tile, not 1: the 10x256 weight gradient of a
                # 10-class layer 10 -> 4.4 us in 5-row tiles, a 6x256 product from 784 rows 43 ->
                # 16 us; 1 (no divisor): no row tile
                rows = self.tile_rows(sch, S)
            if vt >= 4:
                so, si = sch.split(S[-1], [None, vt])
                outer, tile = S[:-1] + [so], []
                if len(S) >= 2 and rows > 1:  # rows x vt register tile
                    to, ti = sch.split(S[-2], [None, rows])
                    outer, tile = S[:-2] + [to, so], [ti]
                self.register_tile(sch, blk, *self.tile_nest(sch, blk, outer, R, tile, si, par))
                return f"reduceA(tile={f'{rows}x' if tile else ''}{vt}{',par' if par else ''})"

        # Case B: innermost reduction axis contiguous -> rfactor V partial results
        if simple and R and any(v.same_as(r_vars[-1]) for v in contiguous):
            v = self._pow2_div(self._ext(sch, R[-1]), lanes)
            if v >= 4:
                _, ri = sch.split(R[-1], [None, v])
                rf = sch.rfactor(ri, factor_axis=len(S))  # rf buffer [spatial..., v]; ri becomes spatial
                ns = len(S)
                rl = sch.get_loops(rf)
                po = (sch.fuse(*rl[:ns]) if ns > 1 else rl[0]) if ns else None
                sch.vectorize(sch.get_loops(rf)[-1])
                if po is not None:
                    sch.reverse_compute_at(blk, po)  # the v-lane write-back runs per output point
                    if par:
                        sch.parallel(po)
                init = sch.decompose_reduction(rf, sch.get_loops(rf)[1 if ns else 0])
                sch.vectorize(sch.get_loops(init)[-1])
                return f"reduceB(rfactor={v}{',par' if par and ns else ''})"

        # Case C: parallel over the fused spatial loops, serial reduction inside
        if S and R:
            if not all(a.same_as(c) for a, c in zip(loops[:len(S)], S)):
                sch.reorder(*S, *R)
            po = sch.fuse(*S) if len(S) > 1 else S[0]
            if par:
                sch.parallel(po)
            return f"reduceC({'par' if par else 'serial'})"
        return "reduceC(serial)"


class _Unchecked:
    """A TVM Schedule whose primitives are called without TVM's Python-side argument checks.

    Each Schedule method is wrapped in `s_tir.schedule._type_checker.type_checked`, which binds
    the call to the method's signature and walks the type hints of every argument on every call.
    graphad's rules make thousands of such calls per graph (about 3,500 for the digits CNN train
    step, of which 144 compute_inlines), and the checks were about a third of scheduling there
    (0.75-0.84 -> 0.51-0.56 s). This calls the function each wrapper wraps (its `__wrapped__`)
    instead; the FFI still converts, and so checks, every argument it passes to C++. Anything
    that is not such a method (`mod`, a property) is the Schedule's own; `copy` stays unchecked.
    """

    __slots__ = ("schedule", "_methods")

    def __init__(self, schedule):
        self.schedule = schedule
        self._methods = {}

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        method = self._methods.get(name)
        if method is not None:
            return method
        raw = getattr(getattr(type(self.schedule), name, None), "__wrapped__", None)
        if raw is None:
            return getattr(self.schedule, name)
        method = self._methods[name] = raw.__get__(self.schedule)
        return method

    def copy(self) -> "_Unchecked":
        """An unchecked copy (the Schedule's own copy: its state forked)."""
        return _Unchecked(self.schedule.copy())


def schedule_primfunc(func, vector_bits: int = 512):
    """Schedule one PrimFunc; returns (new PrimFunc, inlined block names, per-block rules). Raises on failure."""
    tvm = load_tvm()
    rules = _Rules(vector_bits)
    sch = _Unchecked(tvm.s_tir.Schedule(func))
    root = sch.get_sblock("root")
    inlined = None
    if INLINE_BY_SUBSTITUTION and len(sch.get_child_blocks(root)) >= SUBSTITUTION_MIN_BLOCKS:
        try:  # the walk over graphad's own model of the kernel (inline_tir.py): the same result
            graph = BlockGraph(tvm, func, sch.schedule)
            inlined = rules.inline(graph, graph.get_sblock("root"))
        except Unsupported:
            inlined = None  # TVM's primitive, on the kernel as it came
        else:
            if inlined:
                sch = _Unchecked(tvm.s_tir.Schedule(graph.result()))
                root = sch.get_sblock("root")
    if inlined is None:
        inlined = rules.inline(sch, root)
    shared = {}  # block -> the block whose loop nest computes it too
    for names in rules.shared_loop_groups(sch, root):
        if rules.share_loops(sch, names):
            shared.update({n: names[-1] for n in names[:-1]})
    desc = []
    for blk in sch.get_child_blocks(root):
        b = sch.get(blk)
        if not b.iter_vars:
            desc.append(f"{b.name_hint}:opaque")
        elif b.name_hint in shared:
            desc.append(f"{b.name_hint}:shares({shared[b.name_hint]})")
        elif rules.is_spatial(b):
            done = rules.epilogue(sch, blk)
            desc.append(f"{b.name_hint}:{done or rules.injective(sch, blk)}")
        else:
            desc.append(f"{b.name_hint}:{rules.reduction(sch, blk)}")
    index = {d.split(":", 1)[0]: k for k, d in enumerate(desc)}
    for name in rules.compute_at_consumers(sch, root, {n: desc[k].split(":", 1)[1] for n, k in index.items()}):
        desc[index[name]] += ",at-consumer"
    return sch.mod["main"], inlined, desc


def _has_rare_marker(block) -> bool:
    from .rare_path import has_markers
    return has_markers(load_tvm(), block.body)


def schedule_module(mod, target=None):
    """Apply the rules to every PrimFunc of a fused module; unscheduled fallback per PrimFunc.

    Returns (module, [FuncReport]). The input module is not modified.
    """
    tvm = load_tvm()
    from .targets import host_target, vector_bits
    target = target if target is not None else host_target()
    vb = vector_bits(target)
    out = mod.clone()  # the caller may still compile the unscheduled module
    report: list[FuncReport] = []
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        pattern = None
        if func.attrs is not None and "op_pattern" in func.attrs:  # absent after FuseTIR
            pattern = int(func.attrs["op_pattern"])
        if func.attrs is not None and "graphad.native_loop" in func.attrs:
            # a native loop (native_loop.py): its kernels were scheduled before they were inlined
            report.append(FuncReport(gv.name_hint, "skipped", pattern))
            continue
        if func.attrs is not None and CHECK_ATTR in func.attrs:
            # an index check (index_check.py): a serial loop, since a parallel task's failed
            # assert is lost in TVM's thread pool
            report.append(FuncReport(gv.name_hint, "skipped", pattern))
            continue
        try:
            new_func, inlined, desc = schedule_primfunc(func, vb)
        except Exception as e:  # leave it unscheduled: still correct
            msg = str(e).strip().splitlines()
            report.append(FuncReport(gv.name_hint, "fallback", pattern,
                                     error=f"{type(e).__name__}: {msg[-1][:200] if msg else ''}"))
            continue
        out[gv] = new_func
        report.append(FuncReport(gv.name_hint, "scheduled", pattern, desc, inlined))
    return out, report
