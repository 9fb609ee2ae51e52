"""Native loops: a `scan` or `while_loop` node compiled into one TIR PrimFunc that runs every step.

The host path (runtime/host.py) calls a compiled region once per loop step (or per 16 steps): a
trip through Python and the Relax VM per call, which dominates loops with small bodies. A loop
whose regions are straight-line graphs (no nested control flow) is lowered here instead, as the
Relax lowering of its node (`register()` adds it to `relax_ops.LOWERINGS`; the runtime calls it
before compiling such a graph):

1. each region (the scan body; the while_loop's cond and body) is lowered and prepared exactly as
   a segment would be (`lower_graph_info`, then `pipeline.prepare_module`: fuse, graphad's
   schedules, the IEEE guard; then TVM's DispatchSortScan, which the build would run later, so
   that sorts and cumulative sums are kernels too), giving a Relax `main` of `call_tir`s of
   scheduled PrimFuncs;
2. every kernel is lowered to plain loops by TVM's block passes, run on the kernel alone
   (`_block_free`: those passes reason about the buffers each block touches, and must see the
   kernel as it was written);
3. `main` is translated into TIR statements (`_Region.instantiate`): each kernel call becomes a
   fresh copy of the kernel's body (`s_tir.renew_defs`, so two call sites never share a
   variable) in which the kernel's buffer parameters are replaced by the caller's buffers
   (`_inline`, through TVM's `specialize`): every buffer of the loop function has one name, which
   TVM's LLVM code generator relies on (it gives each name its own alias type);
4. one PrimFunc holds the loop around those statements: a serial `For` over the steps of a scan
   (slice t of each xs copied into the body's input buffer, the ys copied into row t of their
   outputs), a `While` for a while_loop (its condition: the cond region's flag, and a step
   counter against max_steps); the carry lives in the function's output buffers, and the body's
   new carry is copied back at the end of each step (through a temporary when the body returns
   one of its inputs, so a permuted carry stays right);
5. the region's intermediate buffers are not allocated inside that function but passed in as
   extra outputs (`_primfunc`), so the Relax VM's memory plan provides them once per call, not
   once per step, and no TIR pass rewrites them;
6. the node lowers to one `call_tir` of that PrimFunc (the regions' constants are passed as
   extra arguments), marked `graphad.native_loop` so that the CPU schedule rules leave it alone
   (its kernels are already scheduled) and `op_pattern` opaque so that FuseOps never fuses it.

Parallel loops of the inlined kernels stay parallel: each launches the thread pool inside the
serial step loop, as a separately called kernel would. Anything the translation does not know
(a Relax binding other than call_tir, tuples, variables and constants; a kernel with symbolic
shapes or offsets it cannot bind) raises `NativeLoopError`, and the runtime runs that loop on the
host path, and so does a loop function over NATIVE_MAX_TIR_CHARS (every kernel call is inlined,
so its size is the body's kernel calls, not its distinct kernels: compile time). `native_reason(node)`
is the static part of the decision (checked before anything is compiled): nested control flow,
bfloat16, empty tensors, a zero-length scan, a region of over NATIVE_MAX_NODES nodes.
"""
from __future__ import annotations

from ..errors import CompileError
from ._tvm import walk

# The most nodes the regions of one native loop may hold together: the loop function is one
# LLVM function, whose compile time grows faster than linearly with its size (pipeline.py).
NATIVE_MAX_NODES = 2000
# The most TIR (characters of its printed form) one loop function may hold: every kernel call of
# the body is a copy of that kernel's code, so a body that calls many kernels (or one kernel many
# times) makes one large LLVM function, where the host path compiles each distinct kernel once.
# Measured on this project's 2-CPU machine under load (the gradient of a 50-step fori_loop over L
# dense+tanh layers of width 32; first call native vs host path, per call native vs host): L=4,
# 32.5k characters, 2.15 vs 1.02 s, 0.32 vs 2.27 ms; L=8, 64k, 4.7 vs 1.0 s, 0.75 vs 2.9 ms.
# Above the budget the loop runs on the host path, whose compile time stays flat.
NATIVE_MAX_TIR_CHARS = 36_000
# The attribute that marks a native loop's PrimFunc (schedule.py skips such functions).
NATIVE_ATTR = "graphad.native_loop"
_OPAQUE = 8  # TVM's OpPatternKind kOpaque: FuseOps never fuses the loop into a neighbour

__all__ = ["NativeLoopError", "native_reason", "register", "NATIVE_ATTR", "NATIVE_MAX_NODES",
           "NATIVE_MAX_TIR_CHARS"]


class NativeLoopError(CompileError):
    """A loop that cannot be compiled natively (the message says why; `node`, when set, is the
    loop node): the runtime runs it on the host path instead."""

    node = None

    # build_library's kernel-object attempt then leaves the error to the ordinary build (which
    # raises it again) instead of warning that a link failed: nothing was linked
    export_unavailable = True


def _regions(node) -> list:
    a = node.attrs
    return [a["body"]] if node.prim.name == "scan" else [a["cond"], a["body"]]


def _has_region(graph) -> bool:
    from ..ir.core import Graph
    for n in graph.nodes:
        for v in n.attrs.values():
            if isinstance(v, Graph) or (isinstance(v, tuple) and any(isinstance(s, Graph) for s in v)):
                return True
    return False


def native_reason(node) -> str | None:
    """Why loop `node` cannot be compiled natively, checked without compiling; None when it may
    be (its regions can still turn out to hold a kernel the translation does not know:
    NativeLoopError at compile time)."""
    name = node.prim.name
    if name not in ("scan", "while_loop"):
        return f"{name} runs on the host"
    regions = _regions(node)
    if any(_has_region(r) for r in regions):
        return "nested control flow in its body"
    if sum(len(r.nodes) for r in regions) > NATIVE_MAX_NODES:
        return f"a body of more than {NATIVE_MAX_NODES} nodes"
    if name == "scan" and node.attrs["length"] < 1:
        return "a scan of length 0"
    types = [v.type for v in list(node.inputs) + list(node.outputs)]
    for r in regions:
        types += [v.type for v in r.inputs] + [v.type for v in r.outputs]
        types += [o.type for n in r.nodes for o in n.outputs]
    if any(t.dtype.name == "bfloat16" for t in types):
        return "bfloat16 values (stored as bfloat16, computed in float32 by separate kernels)"
    if any(t.size == 0 for t in types):
        return "an empty tensor"
    return None


# ---------------------------------------------------------------- TIR helpers


def _i64(v):
    from ._tvm import load_tvm
    return load_tvm().tirx.IntImm("int64", int(v))


def _buffer(name: str, shape, dtype: str):
    """A buffer variable of `shape` (int64 extents, as legalized kernels declare theirs)."""
    from ._tvm import load_tvm
    return load_tvm().tirx.decl_buffer(tuple(_i64(d) for d in shape), dtype, name)


def _shape(buf) -> tuple[int, ...]:
    return tuple(int(d) for d in buf.shape)


def _index(ref, ivs, shape):
    """The indices of element `ivs` (loop variables over `shape`) in access `ref`:
    ("full", buf) the buffer itself; ("row", buf, i) row i of a stacked buffer; ("flat", buf, off)
    a 1-d (packed) buffer from element off on, in row-major order."""
    kind, buf = ref[0], ref[1]
    if kind == "full":
        return list(ivs)
    if kind == "row":
        return [ref[2]] + list(ivs)
    flat = _i64(ref[2])
    stride = 1
    for iv, d in zip(reversed(ivs), reversed(shape)):
        flat = flat + iv * _i64(stride)
        stride *= d
    return [flat]


def _copy(dst, src, shape, name: str):
    """Statement copying `shape` elements from access `src` to access `dst` (see `_index`)."""
    from ._tvm import load_tvm
    tirx = load_tvm().tirx
    ivs = [tirx.Var(f"{name}_i{k}", "int64") for k in range(len(shape))]
    stmt = tirx.BufferStore(dst[1], tirx.BufferLoad(src[1], _index(src, ivs, shape)), _index(dst, ivs, shape))
    for iv, d in reversed(list(zip(ivs, shape))):
        stmt = tirx.For(iv, _i64(0), _i64(d), tirx.ForKind.SERIAL, stmt)
    return stmt


# ---------------------------------------------------------------- a region as TIR


class _Region:
    """A region lowered and prepared like a segment, ready to be inlined as TIR statements."""

    def __init__(self, graph, target, consts: dict):
        from . import lower_graph_info
        from ._tvm import load_tvm
        from .pipeline import prepare_module
        tvm = self.tvm = load_tvm()
        self.graph = graph
        self.target = target
        self._kernels: dict = {}
        from .targets import is_gpu
        lowered = lower_graph_info(graph, gpu=is_gpu(target))
        self.packed = lowered.packed
        self.mod = _dispatch_sort_scan(tvm, prepare_module(lowered.module, target), target)
        self.consts = consts  # shared by the loop's regions: [(buffer, relax.Constant)]
        main = None
        for gv, f in self.mod.functions_items():
            if gv.name_hint == "main" and isinstance(f, tvm.relax.Function):
                main = f
        if main is None:
            raise NativeLoopError("internal: the region's module has no main function")
        self.main = main
        self.call_tir = tvm.ir.Op.get("relax.call_tir")

    def _kernel(self, gv):
        """The block-free form of kernel `gv` (`_block_free`, once per kernel)."""
        name = gv.name_hint
        hit = self._kernels.get(name)
        if hit is None:
            func = self.mod[gv]
            if not isinstance(func, self.tvm.tirx.PrimFunc):
                raise NativeLoopError("a call of something that is not a TIR kernel")
            hit = self._kernels[name] = _block_free(self.tvm, func, self.target)
        return hit

    def _const(self, c):
        for buf, known in self.consts:  # a region's constant used twice is passed once
            if known.same_as(c):
                return buf
        shape = tuple(int(d) for d in c.ty.shape)
        buf = _buffer(f"const{len(self.consts)}", shape, str(c.ty.dtype))
        self.consts.append((buf, c))
        return buf

    def instantiate(self, params: list, tag: str):
        """(statements, output accesses, allocated buffers) of one run of the region with its
        inputs in buffers `params`; the accesses are ("full", buf) or ("flat", buf, offset)."""
        tvm = self.tvm
        relax, tirx, s_tir = tvm.relax, tvm.tirx, tvm.s_tir
        main = self.main
        if len(main.params) != len(params):
            raise NativeLoopError("internal: region parameters do not match")
        env = _Env()
        for p, b in zip(main.params, params):
            env[p] = b
        stmts, allocs = [], []

        def ref(e):
            if isinstance(e, tvm.ir.expr.Constant):
                return self._const(e)
            if isinstance(e, relax.Var) and env.get(e) is not None:
                return env.get(e)
            if isinstance(e, relax.Tuple):
                return tuple(ref(f) for f in e.fields)
            raise NativeLoopError(f"a region value of kind {type(e).__name__}")

        body = main.body
        for block in body.blocks:
            for b in block.bindings:
                if not isinstance(b, relax.VarBinding):
                    raise NativeLoopError(f"a {type(b).__name__} in the region")
                v = b.value
                if isinstance(v, relax.Call) and v.op.same_as(self.call_tir):
                    if len(v.args) != 2:
                        raise NativeLoopError("a kernel call with symbolic shape arguments")
                    gv = v.args[0]
                    args = [ref(a) for a in v.args[1].fields]
                    if any(isinstance(a, tuple) for a in args):
                        raise NativeLoopError("a kernel call with a tuple argument")
                    out_tys = list(v.ty.fields) if isinstance(v.ty, relax.TupleType) else [v.ty]
                    outs = []
                    for k, ty in enumerate(out_tys):
                        try:
                            shape = tuple(int(d) for d in ty.shape)
                        except Exception:
                            raise NativeLoopError("a kernel with a symbolic output shape") from None
                        outs.append(_buffer(f"{tag}_{gv.name_hint}_o{k}", shape, str(ty.dtype)))
                    allocs += outs
                    s, own = _inline(tvm, self._kernel(gv), args, outs, f"{tag}_{gv.name_hint}")
                    stmts += s
                    allocs += own
                    env[b.var] = outs[0] if not isinstance(v.ty, relax.TupleType) else tuple(outs)
                elif isinstance(v, relax.TupleGetItem):
                    t = ref(v.tuple_value)
                    if not isinstance(t, tuple):
                        raise NativeLoopError("a tuple access of a tensor")
                    env[b.var] = t[v.index]
                elif isinstance(v, (relax.Var, relax.Tuple, tvm.ir.expr.Constant)):
                    env[b.var] = ref(v)
                else:
                    op = getattr(getattr(v, "op", None), "name", type(v).__name__)
                    raise NativeLoopError(f"a region operation TVM does not run as a kernel ({op})")
        result = ref(body.body)
        n_out = len(self.graph.outputs)
        if self.packed is not None:
            if isinstance(result, tuple):
                raise NativeLoopError("internal: a packed result that is a tuple")
            outs = [("flat", result, off) for off in self.packed]
        else:
            flat = list(result) if isinstance(result, tuple) else [result]
            if any(isinstance(r, tuple) for r in flat):
                raise NativeLoopError("a nested tuple result")
            outs = [("full", r) for r in flat]
        if len(outs) != n_out:
            raise NativeLoopError("internal: region results do not match its outputs")
        return stmts, outs, allocs


def _dispatch_sort_scan(tvm, mod, target):
    """`mod` with sort, argsort, topk, cumsum and cumprod as kernels: TVM keeps them Relax
    operators until its build (the default_build pipeline's DispatchSortScan, which the build
    of a segment runs too); run here, so that the loop can inline them like any kernel."""
    try:
        from tvm.relax.backend import DispatchSortScan
    except ImportError:  # another TVM layout: such a region is refused (NativeLoopError) later
        return mod
    with target:
        return DispatchSortScan()(mod)


class _Env:
    """Relax variable -> buffer (or tuple of buffers), by object identity."""

    def __init__(self):
        self._items: list = []

    def __setitem__(self, var, value):
        self._items.append((var, value))

    def get(self, var):
        for k, v in reversed(self._items):
            if k.same_as(var):
                return v
        return None


def _block_free(tvm, func, target):
    """`func` with its blocks lowered away: TVM's own block passes (the start of the s_tir
    pipeline, up to LowerOpaqueBlock, before buffers are flattened), run on the kernel alone.

    Why before inlining: those passes reason about the buffers each block accesses (allocation
    placement, CompactBufferAllocation shrinking a buffer to the region its blocks touch). A
    caller's buffer that kernels reach only through views declared on its data pointer looks
    untouched to them, and was compacted to one element (wrong results, seen in testing). Run
    on the kernel alone, they see exactly the function they were written for."""
    s_tir = tvm.s_tir
    passes = tvm.transform.Sequential([
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.LowerOpaqueBlock(),
    ])
    with target:
        mod = passes(tvm.IRModule({"kernel": func}))
    return mod["kernel"]


def _binds(tvm, p, b) -> bool:
    """Whether `specialize` can put buffer `b` in the place of kernel parameter `p`: the same
    extents with the same integer types, no strides, the same alignment and offset factor, and
    an element offset that is free in `p` or equal in both."""
    tirx = tvm.tirx
    if len(p.shape) != len(b.shape) or len(p.strides) or len(b.strides):
        return False
    for x, y in zip(p.shape, b.shape):
        if not (isinstance(x, tirx.IntImm) and isinstance(y, tirx.IntImm)) or str(x.ty) != str(y.ty) \
                or int(x) != int(y):
            return False
    if p.data_alignment != b.data_alignment or p.offset_factor != b.offset_factor:
        return False
    off, mine = p.elem_offset, b.elem_offset
    if isinstance(off, tirx.Var):
        return True
    return isinstance(off, tirx.IntImm) and isinstance(mine, tirx.IntImm) and str(off.ty) == str(mine.ty) \
        and int(off) == int(mine)


def _inline(tvm, func, args: list, outs: list, tag: str):
    """(statements, buffers to add to the workspace) running the block-free PrimFunc `func` on
    input buffers `args` and output buffers `outs` (its parameters, in order): a fresh copy of
    its body in which every parameter is replaced by the caller's buffer.

    The replacement is TVM's `specialize`, which substitutes a buffer parameter by another
    parameter of the same function: so the copy gets the caller's buffers as extra parameters
    first. No buffer of the loop function is then reached under two names (declaring the
    parameters as views of the caller's buffers would do it, and TVM's code generator gives each
    name its own LLVM alias type: views of one buffer would be declared never to alias). A
    parameter declared otherwise than the caller's buffers (TVM's sort kernels ask for 8-byte
    alignment, graphad's linear algebra for int32 extents) gets a buffer of its own declaration,
    which the caller's buffer is copied into (an input) or from (an output)."""
    tirx, s_tir = tvm.tirx, tvm.s_tir
    f = s_tir.renew_defs(func)  # fresh variables (loops, allocations) per call site
    buffers = list(args) + list(outs)
    if len(f.params) != len(buffers):
        raise NativeLoopError("internal: kernel parameters do not match its call")
    before, after, own = [], [], []
    actual = []
    for k, (p, b) in enumerate(zip(f.params, buffers)):
        if not tirx.is_buffer_var(p):
            raise NativeLoopError("a kernel with a scalar parameter")
        try:
            same = tuple(int(d) for d in p.shape) == _shape(b) and str(p.dtype) == str(b.dtype)
        except TypeError:
            raise NativeLoopError("a kernel with a symbolic shape") from None
        if not same:
            raise NativeLoopError("internal: a kernel parameter's shape differs from its argument's")
        if not _binds(tvm, p, b):
            off = p.elem_offset
            if not isinstance(off, tirx.IntImm):
                off = tirx.IntImm(str(off.ty), 0)
            mine = tirx.decl_buffer(tuple(p.shape), str(p.dtype), f"{tag}_p{k}", elem_offset=off,
                                    data_alignment=p.data_alignment, offset_factor=p.offset_factor)
            if not _binds(tvm, p, mine):
                raise NativeLoopError("a kernel parameter the loop cannot declare a buffer for")
            own.append(mine)
            copy = (("full", mine), ("full", b)) if k < len(args) else (("full", b), ("full", mine))
            (before if k < len(args) else after).append(_copy(*copy, _shape(b), f"{tag}_x{k}"))
            b = mine
        actual.append(b)
    extra = []
    for b in actual:
        if not any(b.same_as(e) for e in extra):
            extra.append(b)
    wide = tirx.PrimFunc(list(f.params) + extra, f.body, attrs=f.attrs)
    try:
        bound = wide.specialize({p: b for p, b in zip(f.params, actual)})
    except Exception as e:  # noqa: BLE001 - a declaration _binds did not foresee
        lines = str(e).strip().splitlines()
        raise NativeLoopError(f"a kernel parameter that does not bind to the loop's buffer "
                              f"({lines[-1][:200] if lines else type(e).__name__})") from None
    if len(bound.params) != len(extra) or not all(a.same_as(b) for a, b in zip(bound.params, extra)):
        raise NativeLoopError("internal: a kernel's parameters were not all replaced")
    body = bound.body
    if _uses_any(tvm, body, f.params):
        raise NativeLoopError("internal: a kernel's body still names one of its parameters")
    if _has_blocks(tvm, body):
        raise NativeLoopError("a kernel whose blocks TVM's block passes did not lower")
    return before + [body] + after, own


def _uses_any(tvm, stmt, variables) -> bool:
    """Whether `stmt` refers to one of `variables`."""
    found = []

    def visit(v):
        if any(v.same_as(x) for x in variables):
            found.append(v)
    walk(stmt, [(tvm.ir.Var, visit)], order="post")
    return bool(found)


def _has_blocks(tvm, stmt) -> bool:
    """Whether `stmt` still holds a schedulable block (the loop function has none: it is not
    built as block TIR)."""
    found = []
    walk(stmt, [(tvm.s_tir.SBlock, lambda b: found.append(b))], order="post")
    return bool(found)


def _carry_update(state: list, outs: list, params: set, tag: str):
    """(statements, temporaries) copying the body's new carry `outs` (accesses) into the carry
    buffers `state`: an output that is one of the body's input buffers (the carry returned
    unchanged, permuted, or a const) goes through a temporary first, so no copy reads a carry
    buffer another copy already overwrote."""
    early, late, temps = [], [], []
    for j, (dst, src) in enumerate(zip(state, outs)):
        shape = _shape(dst)
        if any(src[1].same_as(p) for p in params):
            tmp = _buffer(f"{tag}_carry{j}", shape, str(dst.dtype))
            temps.append(tmp)
            early.append(_copy(("full", tmp), src, shape, f"{tag}_t{j}"))
            src = ("full", tmp)
        late.append(_copy(("full", dst), src, shape, f"{tag}_c{j}"))
    return early + late, temps


def _primfunc(tvm, params: list, body_stmts: list, allocs: list):
    """(the loop PrimFunc, [(shape, dtype)] of its workspace): `params`, then one more output
    parameter per buffer of `allocs` (the workspace), then `body_stmts`.

    The workspace (the region's intermediate buffers, the carry temporaries, the while flag) is
    passed in by the caller (extra call_tir outputs, which the Relax VM's memory plan reuses),
    never allocated inside: parameters are never rewritten by TIR passes. (An earlier version
    allocated them inside and let the kernels reach them through views declared on their data
    pointers; TVM's StorageRewrite does not count such uses and gave an intermediate's memory to
    another one while it was still read: wrong results, seen in testing.)

    The function is marked `tirx.noalias`, as kernels are: its parameters are distinct tensors
    (or read-only inputs passed twice), and every buffer in it has exactly one name (`_inline`),
    so the per-name alias types TVM's LLVM code generator emits are true."""
    tirx = tvm.tirx
    uniq = []
    for a in allocs:
        if not any(a.same_as(u) for u in uniq):
            uniq.append(a)
    attrs = tvm.ir.make_node("ir.DictAttrs", **{"tirx.noalias": True, NATIVE_ATTR: True, "op_pattern": _OPAQUE})
    # under a root block, as every PrimFunc TE makes: Relax's RewriteDataflowReshape asks whether
    # a one-input kernel is a reshape and requires one there (a scan whose body returns a constant,
    # one input and an output of its size, failed to build and ran on the host path)
    s_tir = tvm.s_tir
    root = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", tirx.SeqStmt(list(body_stmts))))
    fn = tirx.PrimFunc(list(params) + uniq, root, attrs=attrs)
    return fn, [(_shape(a), str(a.dtype)) for a in uniq]


# ---------------------------------------------------------------- scan and while_loop


def scan_primfunc(node, target):
    """(PrimFunc, [relax.Constant], workspace) running scan `node` natively: parameters are the
    node's inputs, then the regions' constants, then its outputs (destination-passing style),
    then the workspace buffers (`_primfunc`)."""
    from ._tvm import load_tvm
    tvm = load_tvm()
    tirx = tvm.tirx
    a = node.attrs
    nk, nc, length, reverse = a["n_consts"], a["n_carry"], a["length"], a["reverse"]
    consts: list = []
    body = _Region(a["body"], target, consts)
    ins = [_buffer(f"in{i}", v.type.shape, v.type.dtype.name) for i, v in enumerate(node.inputs)]
    outs = [_buffer(f"out{i}", v.type.shape, v.type.dtype.name) for i, v in enumerate(node.outputs)]
    k_in, init, xs = ins[:nk], ins[nk:nk + nc], ins[nk + nc:]
    state, ys = outs[:nc], outs[nc:]
    slices = [_buffer(f"x{j}", _shape(x)[1:], str(x.dtype)) for j, x in enumerate(xs)]
    t = tirx.Var("step", "int64")
    row = (_i64(length - 1) - t) if reverse else t
    step = [_copy(("full", s), ("row", x, row), _shape(s), f"xs{j}") for j, (s, x) in enumerate(zip(slices, xs))]
    params = k_in + state + slices
    stmts, res, allocs = body.instantiate(params, "body")
    step += stmts
    # the ys first: they may read a carry buffer the carry update then overwrites
    for j, (y, r) in enumerate(zip(ys, res[nc:])):
        step.append(_copy(("row", y, row), r, _shape(y)[1:], f"ys{j}"))
    upd, temps = _carry_update(state, res[:nc], params, "body")
    step += upd
    pre = [_copy(("full", s), ("full", i), _shape(s), f"init{j}") for j, (s, i) in enumerate(zip(state, init))]
    loop = tirx.For(t, _i64(0), _i64(length), tirx.ForKind.SERIAL, tirx.SeqStmt(step))
    const_bufs = [b for b, _ in consts]
    fn, work = _primfunc(tvm, ins + const_bufs + outs, pre + [loop], slices + allocs + temps)
    return fn, [c for _, c in consts], work


def while_primfunc(node, target):
    """(PrimFunc, [relax.Constant], workspace) running while_loop `node` natively (see scan_primfunc): the
    cond region before the loop and after every step, a step counter when max_steps is set."""
    from ._tvm import load_tvm
    tvm = load_tvm()
    tirx = tvm.tirx
    a = node.attrs
    ncc, nb, cap = a["n_cond"], a["n_body"], a["max_steps"]
    consts: list = []
    cond = _Region(a["cond"], target, consts)
    body = _Region(a["body"], target, consts)
    ins = [_buffer(f"in{i}", v.type.shape, v.type.dtype.name) for i, v in enumerate(node.inputs)]
    state = [_buffer(f"out{i}", v.type.shape, v.type.dtype.name) for i, v in enumerate(node.outputs)]
    cc, bc, init = ins[:ncc], ins[ncc:ncc + nb], ins[ncc + nb:]
    flag = _buffer("go", (), "bool")
    allocs = [flag]

    def test(tag):
        s, res, al = cond.instantiate(cc + state, tag)
        allocs.extend(al)
        return s + [_copy(("full", flag), res[0], (), f"{tag}_flag")]

    pre = [_copy(("full", s), ("full", i), _shape(s), f"init{j}") for j, (s, i) in enumerate(zip(state, init))]
    pre += test("cond0")
    params = bc + state
    stmts, res, al = body.instantiate(params, "body")
    allocs += al
    upd, temps = _carry_update(state, res, params, "body")
    step = stmts + upd + test("cond1")
    go = tirx.BufferLoad(flag, [])
    if cap is not None:
        count = _buffer("steps", (), "int64")
        allocs.append(count)
        pre.append(tirx.BufferStore(count, _i64(0), []))
        step.append(tirx.BufferStore(count, tirx.BufferLoad(count, []) + _i64(1), []))
        go = tirx.And(go, tirx.BufferLoad(count, []) < _i64(cap))
    loop = tirx.While(go, tirx.SeqStmt(step))
    const_bufs = [b for b, _ in consts]
    fn, work = _primfunc(tvm, ins + const_bufs + state, pre + [loop], allocs + temps)
    return fn, [c for _, c in consts], work


def _lower_loop(cx, node, *args):
    """The Relax lowering of a native loop node: one call_tir of its loop PrimFunc. A refusal is
    a NativeLoopError whose `node` is this node (the runtime then runs it on the host path)."""
    try:
        return _lower_loop_node(cx, node, *args)
    except NativeLoopError as e:
        e.node = node
        raise


def _lower_loop_node(cx, node, *args):
    from .targets import host_target
    reason = native_reason(node)
    if reason is not None:
        raise NativeLoopError(f"{node.prim.name} is not compiled natively: {reason}")
    relax = cx.relax
    target = host_target()  # the runtime asks for native loops on the host CPU only
    make = scan_primfunc if node.prim.name == "scan" else while_primfunc
    try:
        fn, consts, work = make(node, target)
    except CompileError:
        raise
    except Exception as e:  # TVM refused a construct: the loop runs on the host
        lines = str(e).strip().splitlines()
        raise NativeLoopError(f"{node.prim.name} could not be composed natively: {type(e).__name__}: "
                              f"{lines[-1][:300] if lines else ''}") from e
    size = len(fn.script())
    if size > NATIVE_MAX_TIR_CHARS:
        raise NativeLoopError(f"{node.prim.name} is not compiled natively: a body too big to inline "
                              f"({size} characters of TIR, over NATIVE_MAX_TIR_CHARS={NATIVE_MAX_TIR_CHARS})")
    gv = cx.bb.add_func(fn, f"native_{node.prim.name}")
    tys = [relax.TensorType(v.type.shape, v.type.dtype.name) for v in node.outputs]
    tys += [relax.TensorType(shape, dtype) for shape, dtype in work]  # the workspace (_primfunc)
    call = relax.call_tir(gv, list(args) + list(consts), tys if len(tys) > 1 else tys[0])
    res = cx.bb.emit(call)
    if len(tys) == 1:
        return [res]
    return [cx.bb.emit(relax.TupleGetItem(res, i)) for i in range(len(node.outputs))]


_REGISTERED = False


def register() -> None:
    """Make scan and while_loop lowerable (as native loops); idempotent. The runtime calls it
    before it compiles a graph whose loops it chose to run natively."""
    global _REGISTERED
    if _REGISTERED:
        return
    from .relax_ops import LOWERINGS
    for name in ("scan", "while_loop"):
        LOWERINGS.setdefault(name, _lower_loop)
    _REGISTERED = True
