"""Inlining a kernel's stages by substitution: what TVM's `compute_inline` does, in time that grows
with the blocks it touches rather than with the kernel.

TVM's schedule primitive rewrites the whole scope for every block it inlines and then analyses
the whole scope again (the blocks' bindings, the region cover of every consumer), so inlining the
n stages of a fused kernel one by one costs about n times its size: 148 inlines took 0.37 s of
the digits CNN train step's compile (2.5 ms each), 249 took 0.29 s of a complex-valued gradient's.

`BlockGraph` holds a kernel as TVM's TE and FuseTIR make it: a root block whose body is a
sequence of loop nests, each ending in one block, every buffer written by one block. It answers
the questions graphad's inlining walk (`schedule._Rules.inline`) asks a Schedule: the root's
blocks in order, a block, its producers and consumers (from the blocks' read and write
signatures, as TVM's dependence graph has them), the output blocks; and its `compute_inline`
substitutes the producer's stored value into the loads of its consumers only and removes the
producer's loop nest and buffer. `result()` is the kernel afterwards, the read and write regions
of the blocks that took values computed again by TVM's own analysis
(`get_sblock_read_write_region`, once per block: they depend on its final body only): the TIR
TVM's primitive makes (tests/test_inline_tir.py compares the two, block for block).

Where TVM's primitive would refuse a block (an `init`, several written buffers, store indices
other than the block's own iterators, a buffer its block also reads or another block writes, a
scope that is not a stage pipeline) or a kernel is built otherwise (nested blocks, loops holding
several blocks, block predicates, opaque buffer accesses, match_buffers), `Unsupported` is
raised and the caller schedules the kernel with TVM's primitive instead: the same result, the
old way. Below `schedule.SUBSTITUTION_MIN_BLOCKS` blocks the primitive is used too: on a small
kernel it costs less than making the model.
"""
from __future__ import annotations

__all__ = ["BlockGraph", "Unsupported"]


class Unsupported(Exception):
    """A kernel (or a block of it) this model does not cover: inline it with TVM's primitive."""


def _src(node):
    """The buffer of a read/write region or a load (TVM 0.27: TensorRegion.source,
    TensorLoad.source) or a store (BufferStore.buffer)."""
    return node.buffer if hasattr(node, "buffer") else node.source


def _k(obj) -> int:
    """A TVM object's identity (its handle's address) for dict keys: PrimExpr `==` builds an
    expression, and the objects keyed stay referenced, so an address is not reused meanwhile."""
    return hash(obj)


class BlockGraph:
    """A TE-made kernel's root scope (module doc), with the Schedule methods the inlining walk
    uses; block handles are block names. `schedule`: a TVM Schedule of `func` already made (its
    stage-pipeline flag is read), else one is made."""

    def __init__(self, tvm, func, schedule=None):
        import tvm_ffi
        from ._tvm import walk
        self.tvm = tvm
        self.tvm_ffi = tvm_ffi
        tirx, s_tir = tvm.tirx, tvm.s_tir
        self.func = func
        realize = func.body
        if not isinstance(realize, s_tir.SBlockRealize) or realize.block.name_hint != "root":
            raise Unsupported("the body is not a root block")
        root = realize.block
        if root.init is not None or list(root.match_buffers) or list(root.iter_vars) or list(root.reads) \
                or list(root.writes):
            raise Unsupported("an unusual root block")
        self.realize, self.root = realize, root
        body = root.body
        stmts = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
        self.order: list[str] = []
        self.element: dict = {}  # name -> its loop nest (a root-level statement)
        self.blocks: dict = {}  # name -> SBlock
        for st in stmts:
            node = st
            while isinstance(node, tirx.For):
                node = node.body
            if not isinstance(node, s_tir.SBlockRealize):
                raise Unsupported("a loop nest that is not a chain of loops around one block")
            b = node.block
            pred = node.predicate
            if (b.name_hint in self.blocks or list(b.match_buffers) or list(b.alloc_buffers)
                    or not (isinstance(pred, tirx.IntImm) and int(pred) == 1)):
                raise Unsupported(f"block {b.name_hint}: a name seen before, buffers of its own or a predicate")
            self.order.append(b.name_hint)
            self.element[b.name_hint] = st
            self.blocks[b.name_hint] = b
        # the root's allocations by identity, in order (an inline drops one: a list rebuilt per
        # inline was quadratic in a kernel's blocks, 504,032 identity keys for a 900-stage chain)
        self.alloc = {_k(buf): buf for buf in root.alloc_buffers}
        allocated = set(self.alloc)
        # the buffers by their variable, for the region analysis (TVM 0.27: a buffer is its own
        # variable)
        self.buffer_map: dict = {}
        for buf in [p for p in func.params if isinstance(p, tirx.Buffer)] + list(self.alloc.values()):
            self.buffer_map[buf] = buf
        self.writer: dict = {}  # buffer key -> the block writing it
        for name in self.order:
            b = self.blocks[name]
            for region in list(b.reads) + list(b.writes):
                self.buffer_map[_src(region)] = _src(region)
            for region in b.writes:
                key = _k(_src(region))
                if key in self.writer:
                    raise Unsupported("a buffer written by two blocks")
                self.writer[key] = name
        self.pos = {n: i for i, n in enumerate(self.order)}
        self.reads_of: dict = {}  # name -> keys of the buffers its signature reads
        self.readers: dict = {}  # buffer key -> names of the blocks reading it
        for name in self.order:
            self._note_reads(name)
        self.outputs = [n for n in self.order
                        if any(_k(_src(r)) not in allocated for r in self.blocks[n].writes)]
        # every load in a body is in its block's read signature (the dependences come from the
        # signatures), and no buffer is reached but by loads and stores (an opaque access)
        handle_vars = {_k(buf) for buf in self.buffer_map.values()}
        for name in self.order:
            b = self.blocks[name]
            # (a reduction reads the buffer it writes without listing it, as TE makes it)
            signed = {_k(_src(r)) for r in b.reads}
            loaded: list = []
            opaque: list = []
            nested: list = []
            walk(b.body if b.init is None else tirx.SeqStmt([b.init, b.body]),
                 [(tvm.ir.TensorLoad, lambda e: loaded.append(_src(e)) and None),
                  (tvm.ir.Call, lambda e: opaque.extend(a for a in e.args if isinstance(a, tirx.Var)
                                                      and _k(a) in handle_vars) or None),
                  (s_tir.SBlock, lambda e: nested.append(e) or None)])
            own = {_k(_src(r)) for r in b.writes}
            if nested or opaque or {_k(buf) for buf in loaded} - own != signed - own:
                raise Unsupported(f"block {name}: nested blocks, opaque access or reads other than signed")
        self._stage_pipeline(tvm.s_tir.Schedule(func) if schedule is None else schedule)
        self.inlined: list[str] = []
        self.changed: set = set()  # blocks whose bodies took an inlined value: signatures to redo

    @staticmethod
    def _stage_pipeline(sch):
        """TVM's compute_inline needs the scope to be a stage pipeline (every consumer's reads
        covered by its producers' writes): TVM's own flag, read once from a Schedule of the
        kernel (`sch`)."""
        flags = sch.state._get_cached_flags(sch.get_sref(sch.get_sblock("root")))
        if not bool(flags.stage_pipeline):
            raise Unsupported("not a stage pipeline")

    # ------------------------------------------------------------------ Schedule's questions
    def get_sblock(self, name: str) -> str:
        if name != "root" and name not in self.blocks:
            raise Unsupported(f"no block {name}")
        return name

    def get_child_blocks(self, root) -> list[str]:
        return list(self.order)

    def get_output_blocks(self, root) -> list[str]:
        return list(self.outputs)

    def get(self, name: str):
        return self.root if name == "root" else self.blocks[name]

    def _note_reads(self, name, keys=None):
        if keys is None:
            keys = {_k(_src(r)) for r in self.blocks[name].reads}
        for k in self.reads_of.get(name, ()):
            self.readers[k].discard(name)
        self.reads_of[name] = keys
        for k in keys:
            self.readers.setdefault(k, set()).add(name)

    def get_consumers(self, name: str) -> list[str]:
        """The later blocks reading what `name` writes (TVM's read-after-write dependences)."""
        at = self.pos[name]
        found = set()
        for r in self.blocks[name].writes:
            found |= self.readers.get(_k(_src(r)), set())
        return sorted((c for c in found if self.pos[c] > at), key=self.pos.__getitem__)

    def get_producers(self, name: str) -> list[str]:
        """The earlier blocks writing what `name` reads."""
        at = self.pos[name]
        found = {self.writer[k] for k in self.reads_of[name] if k in self.writer}
        return sorted((p for p in found if self.pos[p] < at), key=self.pos.__getitem__)

    # ------------------------------------------------------------------ the inlining
    def compute_inline(self, name: str) -> None:
        """Substitute block `name`'s stored value into its consumers' loads of its buffer and
        remove the block, as TVM's primitive does; `Unsupported` where that would refuse, and
        for any other failure too (the walk turns a failed inline into a block kept, which would
        part from what TVM's primitive does: the kernel is inlined with that instead)."""
        try:
            self._inline(name)
        except Unsupported:
            raise
        except Exception as e:
            raise Unsupported(f"block {name}: {type(e).__name__}: {e}") from e

    def _inline(self, name: str) -> None:
        tvm, tirx = self.tvm, self.tvm.tirx
        b = self.blocks[name]
        if name in self.outputs or b.init is not None or len(b.writes) != 1:
            raise Unsupported(f"block {name}: an output, a reduction or several writes")
        store = b.body
        if not isinstance(store, tirx.BufferStore):
            raise Unsupported(f"block {name}: its body is not one store")
        buf = store.buffer
        ivs = [iv.var for iv in b.iter_vars]
        structural_map = self.tvm_ffi.structural_map
        value = store.value
        if (_k(buf) != _k(_src(b.writes[0])) or any(int(iv.iter_type) != 0 for iv in b.iter_vars)
                or any(_k(_src(r)) == _k(buf) for r in b.reads)):
            raise Unsupported(f"block {name}: not a complete block")
        if not list(store.indices) and all(isinstance(iv.dom.min, tirx.IntImm) and isinstance(iv.dom.extent, tirx.IntImm)
                                           and int(iv.dom.extent) == 1 for iv in b.iter_vars):
            # a 0-d result (TE gives its block one iterator of extent 1): TVM's primitive maps
            # each such iterator to its start in the stored value
            start = {_k(iv.var): iv.dom.min for iv in b.iter_vars}
            value = structural_map(value, [(tirx.Var, lambda v: start.get(_k(v), v))], order="post")
            ivs = []
        elif len(store.indices) != len(ivs) or not all(i.same_as(v) for i, v in zip(store.indices, ivs)):
            raise Unsupported(f"block {name}: stores other than at its own iterators")
        iv_keys = [_k(v) for v in ivs]

        # (a structural_map callback returns the node itself to leave it as it is)
        def on_load(load):
            if _k(_src(load)) != _k(buf):
                return load
            sub = dict(zip(iv_keys, load.indices))
            return structural_map(value, [(tirx.Var, lambda v: sub.get(_k(v), v))], order="post")

        for c in self.get_consumers(name):
            new_elem = structural_map(self.element[c], [(tvm.ir.TensorLoad, on_load)], order="post")
            node = new_elem
            while isinstance(node, tirx.For):
                node = node.body
            self.element[c] = new_elem
            self.blocks[c] = node.block
            # the buffers its body now reads (its signature is redone once, in `result`: the
            # regions depend on the final body only, and their analysis was most of the cost)
            self._note_reads(c, (self.reads_of[c] - {_k(buf)}) | self.reads_of[name])
            self.changed.add(c)
        self.order.remove(name)
        for k in self.reads_of.pop(name):
            self.readers[k].discard(name)
        del self.element[name], self.blocks[name], self.writer[_k(buf)]
        self.alloc.pop(_k(buf), None)
        self.inlined.append(name)

    def result(self):
        """The kernel with the inlined blocks gone (the function given, when none was)."""
        if not self.inlined:
            return self.func
        tirx, s_tir = self.tvm.tirx, self.tvm.s_tir
        get_regions = s_tir.analysis.get_sblock_read_write_region

        def signed(blk):
            if blk.name_hint not in self.changed:
                return blk
            # TVM's primitive recomputes a consumer's regions from its body after each inline
            reads, writes = get_regions(blk, self.buffer_map)
            return s_tir.SBlock(blk.iter_vars, reads, writes, blk.name_hint, blk.body, blk.init,
                                blk.alloc_buffers, blk.match_buffers, blk.annotations, blk.span)
        stmts = [self.element[n] if n not in self.changed else
                 self.tvm_ffi.structural_map(self.element[n], [(s_tir.SBlock, signed)], order="post")
                 for n in self.order]
        body = stmts[0] if len(stmts) == 1 else tirx.SeqStmt(stmts)
        r = self.root
        root = s_tir.SBlock(r.iter_vars, r.reads, r.writes, r.name_hint, body, r.init, list(self.alloc.values()),
                            r.match_buffers, r.annotations, r.span)
        realize = s_tir.SBlockRealize(self.realize.iter_values, self.realize.predicate, root, self.realize.span)
        return self.func.with_body(realize)
