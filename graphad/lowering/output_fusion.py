"""Multi-output elementwise fusion: what Relax FuseOps leaves apart, one kernel.

FuseOps (TVM 0.27) fuses a producer into its consumers only through the producer's post-dominator,
and a value that is also a function output has none: an optimizer's update (Adam's new moments
m and v are outputs, and the new weight reads both) stays three kernels per parameter, each a
full pass over the weight's memory. This pass runs after FuseOps, before FuseTIR: a fused
elementwise function P whose result an elementwise function C of the same shape reads is merged
into C, as one fused function returning P's result beside C's, so FuseTIR makes one PrimFunc
with several output buffers; the schedule (schedule.py, `shared_loop_groups`) then computes P's
values inside C's loop nest, one pass over the data. P and C may also be single kernels FuseOps
left alone (a call_tir), and C may be a merged function already (three kernels become one).

Merged only when the result stays the same computation: every call inside P and C is an
elementwise or broadcast kernel (op pattern at most kBroadcast: each reads its inputs at its own
point, so C reads P's result where it writes), all their outputs have one shape and no other
binding reads P's result before C (the merged call stands where C stood). Values are those of the
separate kernels: the arithmetic of each output is unchanged, only its loop is shared.
"""
from __future__ import annotations

_KBROADCAST = 1  # TVM's OpPatternKind: kElemWise 0, kBroadcast 1


def fusing_functions(tvm, mod):
    """(GlobalVar, function) for each Relax function of `mod` that FuseOps fuses within (main and
    the like: not a fused function itself, nor one for an external codegen)."""
    relax = tvm.relax
    for gv, func in mod.functions_items():
        if (isinstance(func, relax.Function) and func.attrs is not None
                and ("Primitive" in func.attrs or "Codegen" in func.attrs)):
            continue  # FuseOps leaves these alone
        if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
            yield gv, func


def static_shape(ty):
    """The static shape of a Relax tensor type, or None."""
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    try:
        return tuple(int(s) for s in shape.values)
    except (TypeError, ValueError):
        return None


def with_blocks(tvm, func, blocks):
    """Relax function `func` with its body's binding blocks replaced by `blocks`, normalized."""
    relax = tvm.relax
    body = relax.SeqExpr(blocks, func.body.body, func.body.span)
    new = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span)
    return relax.BlockBuilder().normalize(new)


class OutputFusion:
    """One run over a fused module (`run`); `merged` counts the functions merged."""

    def __init__(self, tvm):
        self.tvm = tvm
        self.relax = tvm.relax
        self.call_tir = tvm.ir.Op.get("relax.call_tir")
        self.merged = 0

    # ------------------------------------------------------------------ what may merge
    def _elementwise(self, mod, func) -> bool:
        """Whether fused function `func` is a dataflow of elementwise/broadcast call_tir only."""
        relax = self.relax
        if not (isinstance(func.body, relax.SeqExpr) and len(func.body.blocks) == 1):
            return False
        for b in func.body.blocks[0].bindings:
            v = b.value if isinstance(b, relax.VarBinding) else None
            if not (isinstance(v, relax.Call) and v.op.same_as(self.call_tir)):
                return False
            kernel = mod[v.args[0]]
            if kernel.attrs is None or "op_pattern" not in kernel.attrs:
                return False
            if int(kernel.attrs["op_pattern"]) > _KBROADCAST:
                return False
        return True

    def _out_shapes(self, func):
        ty = func.ret_ty
        fields = getattr(ty, "fields", None)
        tys = list(fields) if fields is not None else [ty]
        shapes = [static_shape(t) for t in tys]
        return None if any(s is None for s in shapes) else shapes

    # ------------------------------------------------------------------ the merge
    def _group(self, c_func, c_args):
        """A merge group growing from consumer C (`_Group`), or None where C's outputs are not
        plain variables."""
        relax = self.relax
        c = relax.utils.copy_with_new_vars(c_func)
        out = c.body.body
        fields = list(out.fields) if isinstance(out, relax.Tuple) else [out]
        if not all(isinstance(f, relax.Var) for f in fields):
            return None
        return _Group(relax, c, c_args, fields)

    def _substituted(self, func, sub):
        """`func`'s bindings, their arguments substituted by `sub` (followed to its end: a
        parameter may stand for another that later stood for a producer's result)."""
        relax = self.relax

        def resolved(a):
            while a in sub:
                a = sub[a]
            return a
        out = []
        for b in func.body.blocks[0].bindings:
            value = b.value
            if sub:
                new_args = [resolved(a) if isinstance(a, relax.Var) else a for a in value.args[1].fields]
                value = relax.Call(value.op, [value.args[0], relax.Tuple(new_args), *value.args[2:]],
                                   value.attrs, value.ty_args, value.span)
            out.append(relax.VarBinding(b.var, value))
        return out

    def _built(self, group):
        """The fused function of a finished `_Group` and its argument list: P's result (for each
        producer merged, the last merged first) beside C's."""
        relax = self.relax
        bindings = [b for func in group.parts for b in self._substituted(func, group.sub)]
        out = relax.Tuple(group.outs)
        body = relax.SeqExpr([relax.DataflowBlock(bindings)], out)
        ret = relax.TupleType([f.ty for f in group.outs])
        new = relax.Function([q for q, _ in group.params], body, ret, True, group.attrs)
        return relax.BlockBuilder().normalize(new), group.args()

    # ------------------------------------------------------------------ one function
    def _function(self, mod, func):
        """Merge within `func` (a function FuseOps fused, e.g. main); the new function or None."""
        relax = self.relax
        blocks = list(func.body.blocks)
        changed = False
        for bi, block in enumerate(blocks):
            if not isinstance(block, relax.DataflowBlock):
                continue
            new = self._block(mod, block, func)
            if new is not None:
                blocks[bi] = new
                changed = True
        return with_blocks(self.tvm, func, blocks) if changed else None

    def _callee(self, mod, value):
        """(fused elementwise function, its arguments) of a call in main: a call of a function
        FuseOps made, or a kernel FuseOps left alone (call_tir), wrapped as a function of its
        own; None for anything else."""
        relax = self.relax
        if not isinstance(value, relax.Call):
            return None
        if value.op.same_as(self.call_tir):
            kernel = mod[value.args[0]]
            if (len(value.args) != 2 or not isinstance(value.args[1], relax.Tuple)
                    or kernel.attrs is None or "op_pattern" not in kernel.attrs
                    or int(kernel.attrs["op_pattern"]) > _KBROADCAST or len(value.ty_args) != 1
                    or isinstance(value.ty_args[0], relax.TupleType)):
                return None
            args = list(value.args[1].fields)
            params = [relax.Var(f"p{i}", a.ty) for i, a in enumerate(args)]
            out = relax.Var("gv", value.ty_args[0])
            call = relax.Call(self.call_tir, [value.args[0], relax.Tuple(params)], value.attrs, value.ty_args)
            body = relax.SeqExpr([relax.DataflowBlock([relax.VarBinding(out, call)])], out)
            func = relax.Function(params, body, value.ty_args[0], True).with_attr("Primitive", True)
            return relax.BlockBuilder().normalize(func), args
        if not isinstance(value.op, self.tvm.ir.GlobalVar):
            return None
        f = mod[value.op]
        if not (isinstance(f, relax.Function) and f.attrs is not None and "Primitive" in f.attrs):
            return None
        return (f, list(value.args)) if self._elementwise(mod, f) else None

    def _block(self, mod, block, func):
        relax = self.relax
        bindings = list(block.bindings)
        uses: dict = {}  # var -> binding positions reading it (len(bindings): after the block)

        def note_uses(e, at):
            for v in relax.analysis.free_vars(e) if not isinstance(e, relax.Var) else [e]:
                uses.setdefault(v, []).append(at)
        for i, b in enumerate(bindings):
            note_uses(b.value, i)
        note_uses(func.body.body, len(bindings))
        for later in func.body.blocks:
            if later is not block:
                for b in later.bindings:
                    note_uses(b.value, len(bindings))
        where = {b.var: i for i, b in enumerate(bindings)}
        # a merged group: binding position -> (function, args, [vars it defines, in order])
        groups: dict = {}
        dropped: set = set()
        for ci, b in enumerate(bindings):
            c = self._callee(mod, b.value)
            if c is None:
                continue
            (c_func, c_args), c_vars = c, [b.var]
            if self._out_shapes(c_func) is None or isinstance(c_func.ret_ty, relax.TupleType):
                continue  # a tuple result FuseOps made: its readers are not this pass's to rewrite
            mine: set = set()  # positions merged into this group (their reads now happen at ci)
            shapes = self._out_shapes(c_func)
            if shapes is None or len(set(shapes)) != 1:
                continue
            group = None
            progress = True
            while progress:
                progress = False
                for a in (group.args() if group is not None else c_args):
                    pi = where.get(a) if isinstance(a, relax.Var) else None
                    if pi is None or pi in dropped or pi in groups:
                        continue
                    p = self._callee(mod, bindings[pi].value)
                    if p is None or self._out_shapes(p[0]) != [shapes[0]]:
                        continue
                    if any(pi < u < ci and u not in mine for u in uses.get(a, [])):
                        continue  # read before C: the merged call would come too late
                    if group is None:
                        group = self._group(c_func, c_args)
                        if group is None:
                            break
                    if not group.take(*p, a):
                        continue
                    c_vars = [a, *c_vars]
                    dropped.add(pi)
                    mine.add(pi)
                    self.merged += 1
                    progress = True
                    break
            if len(c_vars) > 1:
                groups[ci] = (*self._built(group), c_vars)
        if not groups:
            return None
        out = []
        for i, b in enumerate(bindings):
            if i in dropped:
                continue
            if i not in groups:
                out.append(b)
                continue
            g_func, g_args, g_vars = groups[i]
            op = b.value.op if isinstance(b.value.op, self.tvm.ir.GlobalVar) else b.value.args[0]
            name = op.name_hint
            g_gv = self.bb.add_func(g_func, f"{name}_multi")
            t = relax.DataflowVar(f"{g_vars[-1].name}_multi",
                                  relax.TupleType([v.ty for v in g_vars]))
            out.append(relax.VarBinding(t, relax.Call(g_gv, g_args)))
            for k, v in enumerate(g_vars):
                out.append(relax.VarBinding(v, relax.TupleGetItem(t, k)))
        return relax.DataflowBlock(out, block.span)

    def run(self, mod):
        relax = self.relax
        self.bb = relax.BlockBuilder(mod)  # adds the merged functions under fresh names
        updates = {}
        for gv, func in list(fusing_functions(self.tvm, mod)):
            new = self._function(mod, func)
            if new is not None:
                updates[gv] = new
        for gv, func in updates.items():
            self.bb.update_func(gv, func)
        out = self.bb.get()
        self.bb = None
        return out


class _Group:
    """A merged function being grown, built once when complete (`OutputFusion._built`): merging
    producer after producer into a function rebuilt at every step cost time quadratic in the
    group (a complex-valued gradient's last kernel took in 20 producers: 0.41 of its 1.7 s
    compile). Its parts, each a function (copied with fresh variables) and the substitution of
    its parameters by other parts' results, in block order; its parameters, each (variable,
    argument), in the merged function's order: C's first, then each producer's new ones; `sub`,
    the parameters that now read something else (a producer's result, another parameter)."""

    def __init__(self, relax, c, c_args, fields):
        self.relax = relax
        self.attrs = c.attrs
        self.parts = [c]
        self.sub: dict = {}
        self.params = list(zip(c.params, c_args))
        self.outs = list(fields)

    def args(self) -> list:
        return [a for _, a in self.params]

    def take(self, p_func, p_args, p_var) -> bool:
        """Merge producer P, whose result `p_var` some parameters read (they read P's result
        instead); P's parameters fed by an argument the group already receives read that
        parameter (one buffer per distinct argument). False (nothing changed) where P's result
        is not a plain variable."""
        relax = self.relax
        p = relax.utils.copy_with_new_vars(p_func)
        p_out = p.body.body
        if not isinstance(p_out, relax.Var):
            return False
        kept = []
        for q, a in self.params:
            if a.same_as(p_var):
                self.sub[q] = p_out
            else:
                kept.append((q, a))
        for q, a in zip(p.params, p_args):
            same = next((pq for pq, pa in kept if isinstance(a, relax.Var) and pa.same_as(a)), None)
            if same is not None:
                self.sub[q] = same
                continue
            kept.append((q, a))
        self.params = kept
        self.parts.insert(0, p)
        self.outs.insert(0, p_out)
        return True


def fuse_outputs(mod):
    """`mod` (after FuseOps) with elementwise producers merged into their consumers (module doc)."""
    from ._tvm import load_tvm
    from .compile_log import note
    fusion = OutputFusion(load_tvm())
    out = fusion.run(mod)
    if fusion.merged:
        note("outputs_merged", fusion.merged)
    return out
