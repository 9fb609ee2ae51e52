"""Rare paths taken out of the common one: a kernel's expensive branch that almost no element
takes runs only for the vectors of elements where some element takes it, and there only for
those elements.

graphad's float32 sin and cos (relax_ops.py) take arguments of |x| >= 2^16 to the C library's
sinf / cosf. Written branch-free, as a Select between that and the Cody-Waite reduction, every
element would pay for both; and TVM's VectorizeLoop cannot vectorize a loop that calls an
external function, so the common path would be scalar too. (Until 2026-12-02 the rare value was
an exact reduction of graphad's own, a float64 Payne-Hanek with table reads, vectorized: split
this way, `cos` over 2^18 float32 elements went from 0.95 to 0.09 ms per call, 1 thread, pinned;
it was also 45 of the hvp kernel's 80 ms of TIR passes and LLVM, which the call does not cost.)

The lowering marks such a condition with `rare(cond)` (an operator of graphad's own: a pure
identity on bool), as the condition of a `Select(rare(cond), rare_value, common_value)`. After
TVM has lowered the schedule's blocks to plain loops (`tir_pipeline` runs TVM's own TIR pipeline
with this pass at that point), the "chunk" loop of each statement holding such Selects (the
deepest vectorized loop holding every marked store, else the deepest loop that does) becomes:

    flag[lanes] = 0
    <a copy of the chunk loop>: flag[lane] |= cond_1 | cond_2 | ...   (vectorized as the chunk)
    flag[0] |= flag[1] | ... | flag[lanes - 1]
    if flag[0] == 0:
        <the chunk, every marked Select replaced by its common value>
    else:
        <the chunk as written, every marked Select an if_then_else>

so a vector of ordinary elements computes only the cheap value, vectorized, and a vector holding
a huge one runs the chunk as written (scalar, where the rare value is a call), the rare value
evaluated only for the elements whose condition holds (an if_then_else: a Select would make the
call for every element). The check runs where the chunk would, after whatever the enclosing
loops computed before it; it is made only when nothing it reads is written by the chunk itself
(a condition, a guard, a Bind value or a loop bound reading such a buffer leaves the statement
whole, as written), and when no condition sits under an if_then_else's guard (the check would
read what the guard protects). Loops inside the check's copy are serial but for the vectorized
chunk, whose lanes each have a flag. Each element's result is the one the unsplit kernel gives,
bit for bit (tests/test_rare_path.py).

That is the form "in turn". A call anywhere in a loop costs its ordinary vectors too: all vector
registers are the callee's to clobber, so LLVM reloads the polynomial's constants from memory in
every iteration instead of keeping them in registers (cos over 2^20 float32 elements, 1 thread:
0.43 -> up to 0.55 ms; a helper's review found it). So where the vectors of a nest may run again
after the whole nest (`_deferrable`: every store of the nest is in the chunk, which reads
nothing the nest writes, and writes each element from one iteration alone, its indices a
one-to-one map of the nest's loop variables; and the function declares no view of one buffer's
memory under another), the statement becomes instead

    needed = 0
    <the nest; its chunk: the check above; if flag[0] != 0: needed = 1;
                          the chunk, every marked Select at its common value>
    if needed != 0:
        <the nest again; its chunk: the check; if flag[0] != 0: the chunk as written>

whose first nest holds no call. A vector holding a huge element is computed twice (first at the
common values, then as written, over the first result) and every vector checked twice: slower
than in turn when huge elements are many (cos over 2^18 with every 64th element huge: 0.35 ->
0.52 ms), as fast as before the call when there are none. The threads of a parallel nest only
ever store 1 into `needed`.

A condition inside another marked computation (sin(sin(x))) is evaluated with the inner marked
Selects at their common value: if an inner condition holds, the flag is set by it anyway; if none
holds, the common value is the value.

TVM 0.27's VectorizeLoop scalarizes a loop whose body calls an operator without the
TVectorizable attribute, and `tirx.isnan` has none: sin and cos pass NaN through, so their loops
came to LLVM scalar (LLVM vectorized some of them again, at 8 lanes). `isnan` is therefore
renamed `graphad.isnan` (vectorizable) for TVM's passes, in every kernel (`vector_isnan`, which
tir_lowering.lower_tir runs before the pipeline, so also in the kernels split here) and named back
after them (`with_tvm_isnan`): LLVM's code generator emits it as `fcmp uno`, defined on vectors.
Not in a kernel that reads a bool buffer: TVM's code generator then combined vectors of loaded
bools (i8 lanes) with vectors of isnan (i1 lanes) into IR LLVM rejects (marking `tirx.isnan`
vectorizable for every kernel showed it in a complex64 graph). Measured, 1 thread, pinned: cos
over 2^18 float32 elements 0.27 -> 0.09 ms.

The GPU path removes the markers (`stripped`) before its schedules: the computation as written
(CUDA's sinf / cosf, an if_then_else: only the elements that need them make the call).
"""
from __future__ import annotations

from ._tvm import map_prim_funcs, walk
from .let_fence import register_op

OP_NAME = "graphad.rare"
ISNAN_NAME = "graphad.isnan"
FLAG_NAME = "graphad_rare_flag"
NEED_NAME = "graphad_rare_needed"


def rare_op(tvm):
    """The marker: a pure, vectorizable identity on a bool condition."""
    return register_op(tvm, OP_NAME, "Pure", "graphad_rare")


def _isnan_op(tvm):
    """`tirx.isnan` under a name of graphad's own that TVM counts as vectorizable (module doc)."""
    return register_op(tvm, ISNAN_NAME, "Pure", "graphad_isnan")


def rare(tvm, cond):
    """`cond` marked as rarely true (the condition of a Select whose true value is expensive)."""
    return tvm.ir.Call(rare_op(tvm), [cond], ret_ty=cond.ty)


def _is_marker(tvm, e) -> bool:
    return isinstance(e, tvm.ir.Call) and isinstance(e.op, tvm.ir.Op) and e.op.same_as(rare_op(tvm))


def has_markers(tvm, node) -> bool:
    """Whether `node` (a statement, expression or module) holds a marker."""
    import tvm_ffi
    if isinstance(node, tvm.IRModule):
        return any(isinstance(f, tvm.tirx.PrimFunc) and has_markers(tvm, f.body) for f in node.functions.values())
    found = [False]
    skip = tvm_ffi.WalkResult.SKIP

    def on_call(call):
        if found[0]:
            return skip
        if _is_marker(tvm, call):
            found[0] = True
            return skip
        return None
    walk(node, [(tvm.ir.Call, on_call)], order="pre")
    return found[0]


def _lazy(tvm):
    """The structural_map entry that turns a marked Select into an if_then_else of its
    condition: the rare value is evaluated only where the condition holds (sin's is a call of
    the C library's sinf, which a Select would make for every element)."""
    lazy = tvm.ir.Op.get("prim.if_then_else")

    def select(s):
        if not _is_marker(tvm, s.condition):
            return s
        return tvm.ir.Call(lazy, [s.condition.args[0], s.true_value, s.false_value], ret_ty=s.true_value.ty)
    return [(tvm.tirx.Select, select)]


def _unmarked(tvm):
    """The structural_map entry that replaces a marker by its condition."""
    return [(tvm.ir.Call, lambda c: c.args[0] if _is_marker(tvm, c) else c)]


def _strip(tvm, node):
    """`node` with every marked Select an if_then_else (`_lazy`) and every other marker replaced
    by its condition: the computation as written."""
    import tvm_ffi
    lazy = tvm_ffi.structural_map(node, _lazy(tvm), order="post")
    return tvm_ffi.structural_map(lazy, _unmarked(tvm), order="post")


def stripped(tvm, mod):
    """`mod` with its markers removed as `_strip` removes them (the computation as written)."""
    if not has_markers(tvm, mod):
        return mod
    return map_prim_funcs(map_prim_funcs(mod, _lazy(tvm)), _unmarked(tvm))


def _common(tvm, node):
    """`node` with every marked Select replaced by its common (false) value, and the Let bindings
    that only the rare values used dropped (innermost first, so a chain of them goes)."""
    import tvm_ffi
    def select(s):
        return s.false_value if _is_marker(tvm, s.condition) else s

    def let(e):
        return e if _uses(tvm, e.body, e.var) else e.body
    picked = tvm_ffi.structural_map(node, [(tvm.tirx.Select, select)], order="post")
    if picked.same_as(node):
        return node
    return tvm_ffi.structural_map(picked, [(tvm.tirx.Let, let)], order="post")


def _uses(tvm, node, var) -> bool:
    """Whether `node` reads the variable `var`."""
    import tvm_ffi
    found = [False]
    skip = tvm_ffi.WalkResult.SKIP

    def on_var(v):
        if v.same_as(var):
            found[0] = True
        return skip if found[0] else None
    walk(node, [(tvm.tirx.Var, on_var)], order="pre")
    return found[0]


def _fresh(tvm, stmt):
    """`stmt` with every variable it defines (loops, Lets, Binds) replaced by a new one: the
    copies of a nest each define their own (TVM's LLVM codegen refuses a Let variable bound
    to two values)."""
    import tvm_ffi
    defs = {}

    def collect(v, kind):
        if kind == tvm_ffi.DefRegionKind.DEF_SIMPLE and v not in defs:
            defs[v] = tvm.tirx.Var(v.name, v.ty)
        return v
    tvm_ffi.structural_map(stmt, with_def_region_kind=[(tvm.tirx.Var, collect)])
    if not defs:
        return stmt
    return tvm_ffi.structural_map(stmt, [(tvm.tirx.Var, lambda v: defs.get(v, v))])


def _lets(tvm, node) -> dict:
    """{variable: value} of every Let expression in `node`."""
    out = {}

    def on_let(let):
        out[let.var] = let.value
    walk(node, [(tvm.tirx.Let, on_let)], order="pre")
    return out


def _resolved(tvm, expr, lets: dict):
    """`expr` with its free Let variables (bound around it, in `lets`) replaced by their values,
    recursively; variables bound inside an expression stay bound (their Lets stay, so no value
    is copied to each of its uses)."""
    import tvm_ffi
    memo: dict = {}
    use = tvm_ffi.DefRegionKind.NONE

    def subst(e):
        inner = set(_lets(tvm, e))

        def on_var(v, kind):
            if kind != use or v not in lets or v in inner:
                return v
            if v not in memo:
                memo[v] = subst(lets[v])
            return memo[v]
        return tvm_ffi.structural_map(e, with_def_region_kind=[(tvm.tirx.Var, on_var)])
    return subst(expr)


def _buffers(tvm, node, kind, field: str) -> set:
    """The buffers of the `kind` nodes in `node` (their attribute `field`)."""
    out = set()
    walk(node, [(kind, lambda n: out.add(getattr(n, field)))], order="pre")
    return out


def _loads(tvm, node) -> set:
    """The buffers `node` reads."""
    return _buffers(tvm, node, tvm.ir.TensorLoad, "source")


def _stores(tvm, node) -> set:
    """The buffers `node` writes."""
    return _buffers(tvm, node, tvm.tirx.BufferStore, "buffer")


def _marked_conditions(tvm, value) -> list:
    """The conditions of the marked Selects in the stored value `value`, each in terms of the
    loop's variables and buffer loads (its Let variables resolved), the marked Selects inside
    them at their common value."""
    conds = []

    def on_call(c):
        if _is_marker(tvm, c):
            conds.append(c.args[0])
    walk(value, [(tvm.ir.Call, on_call)], order="pre")
    if not conds:
        return []
    lets = _lets(tvm, value)
    return _dedup(tvm, [_common(tvm, _resolved(tvm, c, lets)) for c in conds])


def _marked_stores(tvm, node) -> int:
    """How many stores in `node` hold a marker."""
    n = [0]

    def on_store(store):
        if has_markers(tvm, store.value):
            n[0] += 1
    walk(node, [(tvm.tirx.BufferStore, on_store)], order="pre")
    return n[0]


def _chunk_loop(tvm, nest):
    """The loop whose iterations one check covers (module docstring): the deepest vectorized loop
    of `nest` (constant extent) that holds every marked store, else the deepest loop that does;
    None when no loop holds them all."""
    tir = tvm.tirx
    total = _marked_stores(tvm, nest)
    chain = []  # the loops holding every marked store, outermost first (they nest)

    def on_for(loop):
        if _marked_stores(tvm, loop) == total:
            chain.append(loop)
    walk(nest, [(tir.For, on_for)], order="pre")
    vector = [f for f in chain if f.kind == tir.ForKind.VECTORIZED and isinstance(f.extent, tir.IntImm)]
    return vector[-1] if vector else (chain[-1] if chain else None)


def _reads_any(tvm, node, buffers: set) -> bool:
    return bool(_loads(tvm, node) & buffers)


def _check(tvm, chunk):
    """(flag buffer, statements that set its element 0 to nonzero when a marked condition holds
    for some iteration of the loop `chunk`), or None when the check could not be made before the
    loop runs: a condition, a guard, a Bind value or a loop bound inside it reads a buffer the
    loop itself writes, or a condition sits under an if_then_else's guard (the check would read
    what the guard protects). The statements are a copy of the loop's stores of marked values, each
    replaced by an OR into the flag (other stores and evaluations dropped, guards kept); a
    vectorized `chunk` keeps a flag per lane (a vector OR per iteration, no horizontal reduction
    inside the loop), ORed into element 0 after it; every other loop of the copy is serial."""
    import tvm_ffi
    tir = tvm.tirx
    zero = tir.const(0, "int32")
    written = _stores(tvm, chunk)
    ok = [True]

    def stale(node):
        if _reads_any(tvm, node, written):
            ok[0] = False

    def on_stmt(stmt):
        if isinstance(stmt, tir.IfThenElse):
            stale(stmt.condition)
        elif isinstance(stmt, tir.For):
            stale(stmt.min)
            stale(stmt.extent)
        elif isinstance(stmt, tir.Bind):
            stale(stmt.value)
    walk(chunk, [((tir.IfThenElse, tir.For, tir.Bind), on_stmt)], order="pre")
    vec = chunk.kind == tir.ForKind.VECTORIZED
    lanes = int(chunk.extent.value) if vec else 1
    flag = tir.decl_buffer((lanes,), "int32", name=FLAG_NAME)
    lane = [tir.Cast("int32", chunk.loop_var - chunk.min)] if vec else [zero]

    lazy = tvm.ir.Op.get("prim.if_then_else")

    def guarded(call):  # a condition under if_then_else's guard: the check would read unguarded
        if call.op.same_as(lazy) and any(has_markers(tvm, a) for a in call.args[1:]):
            ok[0] = False

    def on_store(store):
        conds = _marked_conditions(tvm, store.value)
        if not conds:
            return tir.Evaluate(zero)
        walk(store.value, [(tvm.ir.Call, guarded)], order="pre")
        for c in conds:
            stale(c)
        any_cond = conds[0]
        for c in conds[1:]:
            any_cond = tir.Or(any_cond, c)
        hit = tir.Select(any_cond, tir.const(1, "int32"), zero)
        return tir.BufferStore(flag, tir.bitwise_or(tir.BufferLoad(flag, lane), hit), lane)

    def on_for(loop):  # (a parallel loop would race on the flag; other vectorized loops share a lane)
        if loop.kind == tir.ForKind.SERIAL or (vec and loop.loop_var.same_as(chunk.loop_var)):
            return loop
        return tir.For(loop.loop_var, loop.min, loop.extent, tir.ForKind.SERIAL, loop.body, loop.thread_binding,
                       loop.annotations, loop.step, loop.span)
    check = tvm_ffi.structural_map(chunk, [(tir.BufferStore, on_store), (tir.Evaluate, lambda e: tir.Evaluate(zero)),
                                           (tir.For, on_for)], order="post")
    if not ok[0]:
        return None
    j = tir.Var("lane", "int32")
    stmts = [tir.AllocBuffer(flag),
             tir.For(j, zero, tir.const(lanes, "int32"), tir.ForKind.SERIAL, tir.BufferStore(flag, zero, [j])),
             _fresh(tvm, check)]
    if lanes > 1:
        k = tir.Var("lane", "int32")
        stmts.append(tir.For(k, tir.const(1, "int32"), tir.const(lanes - 1, "int32"), tir.ForKind.SERIAL,
                             tir.BufferStore(flag, tir.bitwise_or(tir.BufferLoad(flag, [zero]),
                                                                  tir.BufferLoad(flag, [k])), [zero])))
    return flag, stmts


def _seq(tvm, stmts: list):
    """`stmts` as one statement (TVM refuses a SeqStmt of one)."""
    return tvm.tirx.SeqStmt(stmts) if len(stmts) > 1 else stmts[0]


def _dedup(tvm, exprs: list) -> list:
    """`exprs` without structural repeats (sin marks the same condition twice)."""
    import tvm_ffi
    out: list = []
    for e in exprs:
        if not any(tvm_ffi.structural_equal(e, o, map_free_vars=False) for o in out):
            out.append(e)
    return out


def _deferrable(tvm, nest, chunk) -> bool:
    """Whether the rare chunks of `nest` may run after the whole nest instead of in turn: every
    store of the nest is in `chunk`, the chunk reads nothing the nest writes, each buffer is
    stored once in it, at indices that map the nest's iterations one to one (TVM's iter-map
    detection, bijective, of the loop variables alone), and the nest allocates and declares no
    buffer and evaluates nothing outside the chunk. Each element is then written by one
    iteration alone, from values no iteration changes, so running an iteration again later gives
    what it gave in turn. (The first nest computes the common value for every element, rare or
    not: sin's and cos's are float arithmetic alone, safe for any input.)"""
    from tvm.sym import detect_iter_map
    tir = tvm.tirx
    stores, loops, other = [], [], []
    # (a buffer declared in the nest may view a written buffer's memory under another Buffer,
    # which the reads below would not see: the caller checks the whole function for those; an
    # Evaluate outside the chunk would run twice)
    outer_evals, inner, evals = [], [], []
    walk(nest, [(tir.BufferStore, stores.append), (tir.For, loops.append),
                ((tir.AllocBuffer, tir.DeclBuffer), other.append),
                (tir.Evaluate, outer_evals.append)], order="pre")
    walk(chunk, [(tir.BufferStore, inner.append), (tir.Evaluate, evals.append)], order="pre")
    written = {st.buffer for st in stores}
    if other or len(outer_evals) != len(evals) or len(inner) != len(stores) or len(written) != len(stores) \
            or _reads_any(tvm, nest, written):
        return False
    dom = {f.loop_var: tvm.ir.Range.from_min_extent(f.min, f.extent) for f in loops}
    if len(dom) != len(loops) or any(f.step is not None and not (isinstance(f.step, tir.IntImm) and f.step.value == 1)
                                      for f in loops):
        return False

    def one_to_one(st) -> bool:
        # every index a function of the nest's loop variables alone (a Bind's or Let's variable,
        # a load, looked constant to the detection); none for a 0-d buffer, which every
        # iteration writes
        seen = []
        walk(list(st.indices), [(tvm.ir.Var, seen.append)], order="pre")
        if not st.indices or any(v not in dom for v in seen):
            return False
        found = detect_iter_map(list(st.indices), dom, check_level="bijective")
        return len(found.indices) == len(st.indices) and not list(found.errors)
    return all(one_to_one(st) for st in stores)


def _split_nest(tvm, nest, views: bool = False):
    """`nest` (a statement holding markers) with its chunk loop split (module docstring), or with
    its markers removed where it cannot be. `views`: the function declares buffers over other
    buffers' memory (DeclBuffer), whose reads `_deferrable` could not tell from its writes: the
    chunk is then split in turn."""
    import tvm_ffi
    tir = tvm.tirx
    chunk = _chunk_loop(tvm, nest)
    common = None if chunk is None else _common(tvm, chunk)
    if chunk is None or has_markers(tvm, common) or _marked_stores(tvm, chunk) == 0:
        return _strip(tvm, nest)  # a marker that is not a Select's condition, or outside any loop
    checked = _check(tvm, chunk)
    if checked is None:
        return _strip(tvm, nest)
    flag, check = checked
    zero, one = tir.const(0, "int32"), tir.const(1, "int32")

    def with_chunk(stmt):
        return tvm_ffi.structural_map(nest, [(tir.For, lambda f: stmt if f.same_as(chunk) else f)], order="pre")
    if not views and _deferrable(tvm, nest, chunk):
        # the nest at the common values, noting whether a vector needs the rare path; then, only
        # if one did, the nest again running just those vectors as written. The loop that runs
        # the common vectors then holds no call of the rare value (a call there made LLVM reload
        # the polynomial's constants from memory in every iteration: all vector registers are
        # the callee's to clobber). (A parallel nest's threads only ever store 1 into `need`.)
        need = tir.decl_buffer((1,), "int32", name=NEED_NAME)
        noted = tir.IfThenElse(tir.NE(tir.BufferLoad(flag, [zero]), zero), tir.BufferStore(need, one, [zero]), None)
        flag2, check2 = _check(tvm, chunk)
        again = tir.IfThenElse(tir.NE(tir.BufferLoad(flag2, [zero]), zero), _fresh(tvm, _strip(tvm, chunk)), None)
        return _seq(tvm, [tir.AllocBuffer(need), tir.BufferStore(need, zero, [zero]),
                          with_chunk(_seq(tvm, [*check, noted, _fresh(tvm, common)])),
                          tir.IfThenElse(tir.NE(tir.BufferLoad(need, [zero]), zero),
                                         _fresh(tvm, _strip(tvm, with_chunk(_seq(tvm, [*check2, again])))), None)])
    split = _seq(tvm, [*check, tir.IfThenElse(tir.EQ(tir.BufferLoad(flag, [zero]), zero),
                                              _fresh(tvm, common), _fresh(tvm, _strip(tvm, chunk)))])
    return _strip(tvm, with_chunk(split))  # (markers outside the chunk: none; kept whole)


def _split_body(tvm, body):
    """The PrimFunc body `body` (blocks lowered) with each top-level statement holding markers
    split (`_split_nest`)."""
    tir = tvm.tirx
    stmts = list(body.seq) if isinstance(body, tir.SeqStmt) else [body]
    decls: list = []
    walk(body, [(tir.DeclBuffer, decls.append)], order="pre")
    return _seq(tvm, [_split_nest(tvm, s, bool(decls)) if has_markers(tvm, s) else s for s in stmts])


def _isnan_renamed(tvm, to_ours: bool):
    """The structural_map entry that renames `tirx.isnan` calls to `graphad.isnan` (`to_ours`) or
    back."""
    isnan, ours = tvm.ir.Op.get("tirx.isnan"), _isnan_op(tvm)
    src, dst = (isnan, ours) if to_ours else (ours, isnan)
    return [(tvm.ir.Call, lambda c: tvm.ir.Call(dst, list(c.args), ret_ty=c.ty) if c.op.same_as(src) else c)]


def _with_vector_isnan(tvm, func):
    """`func` with its `tirx.isnan` calls as `graphad.isnan` (TVectorizable), unless it reads a
    bool buffer: TVM's LLVM code generator then combined a vector of loaded bools (i8 lanes) with
    a vector isnan (i1 lanes) into IR LLVM rejects."""
    import tvm_ffi
    if any(str(b.dtype) == "bool" for b in _loads(tvm, func.body)):
        return func
    return func.with_body(tvm_ffi.structural_map(func.body, _isnan_renamed(tvm, True), order="post"))


def vector_isnan(tvm, mod):
    """`mod` with the `tirx.isnan` calls of every PrimFunc as `graphad.isnan` (`_with_vector_isnan`:
    not in one that reads a bool buffer), `mod` itself when none changed. Not only the split
    kernels need it: a float32 exp, tanh, sigmoid or erf passes NaN through by a Select on isnan,
    and each statement holding one came to LLVM scalar (the float64 erfc beside a float32 exp in
    a gelu's gradient: 2.7 ms for 2^18 elements, where the erfc alone took 0.6)."""
    out = None
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        new = _with_vector_isnan(tvm, func)
        if not new.body.same_as(func.body):
            if out is None:
                out = mod.clone()
            out[gv] = new
    return mod if out is None else out


def with_tvm_isnan(tvm, mod):
    """`mod` with every `graphad.isnan` call back as TVM's `tirx.isnan` (after the TIR pipeline:
    LLVM's code generator emits it as an unordered self-comparison, `fcmp uno`, defined on
    vectors as on scalars)."""
    return map_prim_funcs(mod, _isnan_renamed(tvm, False))


def split_rare_paths(tvm, mod):
    """`mod` (TIR whose blocks are lowered: TVM's pipeline up to LowerOpaqueBlock) with the nests
    holding markers split into a common and a rare path, and every marker removed."""
    out = None
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or not has_markers(tvm, func.body):
            continue
        if out is None:
            out = mod.clone()
        out[gv] = func.with_body(_split_body(tvm, func.body))  # (isnan: vector_isnan, before)
    return mod if out is None else out


def _s_tir_passes(tvm) -> tuple[list, list]:
    """TVM 0.27's "s_tir" TIR pipeline (tvm/s_tir/pipeline.py, `default_s_tir_pipeline`; the
    "default" pipeline) as two lists of passes: up to and including LowerOpaqueBlock (the
    scheduled blocks become plain loops, as `split_rare_paths` needs), and the rest, with the
    same configuration switches. tests/test_rare_path.py checks that both halves together build
    what TVM's own pipeline builds."""
    s, t = tvm.s_tir.transform, tvm.tirx.transform
    config = tvm.transform.PassContext.current().config
    before = [s.CanonicalizeLoop(), s.LowerCrossThreadReduction(), s.LowerInitBlock(),
              s.PlanAndUpdateBufferAllocationLocation(), s.ConvertBlocksToOpaque(), s.LiftThreadBinding(),
              s.ManifestSharedMemoryLocalStage(), s.CompactBufferAllocation(), s.LowerAutoCopy(),
              s.UnifyThreadBinding(), s.LowerMatchBuffer(), s.StmtSimplify(), s.InjectPermutedLayout(),
              s.AnnotateIrregularLoop(), s.InjectSoftwarePipeline(), s.TransformMmaBufferLayout(),
              s.LowerOpaqueBlock()]
    after = [t.FlattenBuffer(), t.BF16ComputeLegalize(), t.NarrowDataType(32), s.LoopPartition(),
             t.VectorizeLoop(not bool(config.get("tirx.disable_vectorize", False))),
             s.InjectVirtualThread(), s.InjectDoubleBuffer()]
    if not bool(config.get("tirx.disable_storage_rewrite", False)):
        after.append(t.StorageRewrite())
    if config.get("tirx.use_async_copy", False):
        after.append(s.LowerAsyncDMA())
    after += [s.HoistIfThenElse(), t.UnrollLoop(), s.RenormalizeSplitPattern(), t.StmtSimplify(), t.RemoveNoOp(),
              s.RewriteUnsafeSelect()]
    if bool(config.get("tirx.instrument_bound_checkers", False)):
        after.append(s.InstrumentBoundCheckers())
    if bool(config.get("tirx.s_tir.ldg32", False)):
        after.append(s.InjectPTXLDG32(True))
    if not bool(config.get("tirx.disable_cse_tir", False)):
        after.append(t.CommonSubexprElim())
    if bool(config.get("tirx.instrument_lwp", False)):
        after.append(s.InstrumentProfileIntrinsics())
    after += [t.FP8ComputeLegalize(), s.VerifyVTCMLimit(), s.LowerVtcmAlloc(), t.VerifyMemory(),
              t.AnnotateEntryFunc(), s.ThreadSync("shared"), s.ThreadSync("shared.dyn"), s.ThreadSync("warp"),
              s.InferFragment(), s.LowerThreadAllreduce()]
    if bool(config.get("tirx.use_async_copy", False)):
        after.append(s.InjectPTXAsyncCopy())
    if bool(config.get("tirx.s_tir.ldg32", False)):
        after.append(s.InjectPTXLDG32())
    after += [s.MergeSharedMemoryAllocations(), t.SplitHostDevice(), t.MakePackedAPI(), t.FP8StorageLegalize(),
              t.BF16StorageLegalize()]
    return before, after


def tir_pipeline(tvm, mod, default):
    """The TIR pipeline for `mod` (scheduled TIR, the CPU's): TVM's default passes with
    VectorizeLoop guarded (vectorize_guard.py), and `split_rare_paths` run where the blocks are
    lowered when `mod` holds markers. (`default`, TVM's own pipeline, is what `_s_tir_passes`
    reproduces; tests/test_rare_path.py compares the two.)"""
    from .vectorize_guard import guarded_vectorize_loop
    before, after = _s_tir_passes(tvm)
    at = next(k for k, p in enumerate(after) if p.info.name == "tirx.VectorizeLoop")
    after = [*after[:at], guarded_vectorize_loop(tvm), *after[at + 1:]]
    if not has_markers(tvm, mod):
        return tvm.transform.Sequential([*before, *after])
    split = tvm.transform.module_pass(lambda m, _ctx: split_rare_paths(tvm, m), opt_level=0,
                                      name="graphad_split_rare_paths")
    return tvm.transform.Sequential([*before, split, *after])
