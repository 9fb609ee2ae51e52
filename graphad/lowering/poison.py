"""Poisoned-memory check mode: every buffer a compiled kernel writes starts out as garbage it can see.

A kernel that reads memory nothing wrote (an unwritten corner of its output, a workspace element
it never computed, a speculative load the vectorizer hoisted) returns whatever the allocator left
there: usually a plausible value, different from call to call, so the bug shows up one call in
hundreds. In poison mode every PrimFunc of the scheduled module is prefixed with loops that fill

* each parameter buffer the function stores to (its outputs: Relax calls PrimFuncs in
  destination-passing style, so inputs are never stored to), and
* each buffer it allocates itself (`alloc_buffers` of any block: the intermediates of a fused
  kernel, rfactor partials, ...)

with a poison value: NaN for floating point, the byte pattern 0xA5A5... for integers, True for
bool (a bool has no third value; its check is weaker). A read of an unwritten element then
yields that value on every call. The fills are ordinary stores, so the code that follows is
compiled as usual (LLVM may drop a fill it can prove is overwritten, which is exactly the case
where nothing reads it).

Switch it on with GRAPHAD_POISON=1 in the environment or `with graphad.testing.poisoned():`
(a context variable, so per thread/task). The switch is part of the compile-cache key
(`cache_token`), so poisoned and normal executables never mix in the memory or disk cache. It
applies to the CPU pipeline; CUDA builds ignore it (the report says so).

`inspect_tir(callback)` (a context manager) lets test tools see the TIR module just before the
IEEE guard (lowering/ieee.py) and code generation (the fuzzer measures code size there); it costs
nothing when unused. TVM's printer may fail on such a module where the guard has not yet hidden
float literals from its constant folding (1.0 / 0.0): print the guarded module then.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from .._switches import POISON as _FLAG
from .._switches import poison_enabled  # noqa: F401  (re-exported: the pipeline asks here)
from ._tvm import walk

_INSPECTORS: list[Callable] = []

# 0xA5 in every byte: not a small integer, not a plausible index or count, easy to spot in a dump
_INT_PATTERN = {8: 0xA5, 16: 0xA5A5, 32: 0xA5A5A5A5, 64: 0xA5A5A5A5A5A5A5A5}


@contextlib.contextmanager
def set_poison(enabled: bool = True) -> Iterator[None]:
    """Compile with (or, with enabled=False, without) poisoned memory inside the block."""
    token = _FLAG.set(bool(enabled))
    try:
        yield
    finally:
        _FLAG.reset(token)


def cache_token() -> str:
    """The compile-cache key component of this switch ("poison=0" or "poison=1")."""
    return f"poison={int(poison_enabled())}"


@contextlib.contextmanager
def inspect_tir(callback: Callable) -> Iterator[None]:
    """Call `callback(module, stage)` with each TIR module about to be code-generated (stage is
    "scheduled" or "unscheduled") while the block runs. An exception from the callback aborts
    the compile (it surfaces as a CompileError), which is how a size budget stops a build."""
    _INSPECTORS.append(callback)
    try:
        yield
    finally:
        _INSPECTORS.remove(callback)


def before_codegen(mod, target, stage: str, report: dict | None = None, poison: bool | None = None):
    """The hook `pipeline.build` runs on the fused (scheduled) module before VM lowering and
    codegen: poison it when the mode is on, then show it to the registered inspectors."""
    if poison is None:
        poison = poison_enabled()
    if poison:
        mod = poison_module(mod)
        if report is not None:
            report["poison"] = True
    for cb in list(_INSPECTORS):
        cb(mod, stage)
    return mod


# ---------------------------------------------------------------- the TIR rewrite

def poison_value(dtype: str):
    """The TIR constant written into unwritten memory of `dtype`."""
    from ._tvm import load_tvm
    tirx = load_tvm().tirx
    d = str(dtype)
    if d.startswith(("float", "bfloat")):
        return tirx.const(float("nan"), d)
    if d == "bool":
        return tirx.const(True, "bool")
    signed = d.startswith("int")
    bits = int(d[3:] if signed else d[4:])
    pat = _INT_PATTERN[bits]
    if signed and pat >= 1 << (bits - 1):
        pat -= 1 << bits  # the same bits as a negative number
    return tirx.const(pat, d)


def _fill(buf):
    """A loop nest of one block per element storing the poison value into every element of buf."""
    from ._tvm import load_tvm
    tvm = load_tvm()
    tirx = tvm.tirx
    from tvm import s_tir
    shape = list(buf.shape)
    idx = "int64"  # graphad's shapes are int64 throughout (relax.TensorType of Python ints)
    zero, one = tirx.const(0, idx), tirx.const(1, idx)
    loops = [tirx.Var(f"poison_i{k}", idx) for k in range(len(shape))]
    ivars = [tirx.IterVar(tvm.ir.Range.from_min_extent(zero, _as_index(n, idx)), tirx.Var(f"poison_v{k}", idx),
                          tirx.IterVar.DataPar) for k, n in enumerate(shape)]
    store = tirx.BufferStore(buf, poison_value(buf.dtype), [iv.var for iv in ivars])
    region = tirx.BufferRegion(buf, [tvm.ir.Range.from_min_extent(iv.var, one) for iv in ivars])
    block = s_tir.SBlock(ivars, [], [region], f"poison_{buf.name}", store)
    stmt = s_tir.SBlockRealize(loops, True, block)
    for var, n in reversed(list(zip(loops, shape))):
        stmt = tirx.For(var, zero, _as_index(n, idx), tirx.ForKind.SERIAL, stmt)
    return stmt


def _as_index(n, idx):
    from ._tvm import load_tvm
    tirx = load_tvm().tirx
    try:
        return tirx.const(int(n), idx)
    except TypeError:  # a symbolic extent stays as it is
        return n


def poison_func(func):
    """`func` (a block-form PrimFunc) with its stored-to parameters and all allocated buffers
    filled with poison before its body runs; returned unchanged when it has no root block."""
    from ._tvm import load_tvm
    tvm = load_tvm()
    tirx = tvm.tirx
    from tvm import s_tir
    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize):
        return func
    stored: list = []
    allocated: list = []

    def on_store(st):
        stored.append(st.buffer)

    def on_block(b):
        allocated.extend(b.alloc_buffers)

    walk(func.body, [(tirx.BufferStore, on_store), (s_tir.SBlock, on_block)])
    outs = [p for p in func.params if any(p.same_as(s) for s in stored)]
    root = realize.block
    # Buffers allocated in the root block are in scope for the whole body: fill them first.
    # Nested blocks' allocations are filled at the top of their own block (see _fill_nested).
    root_allocs = list(root.alloc_buffers)
    fills = [_fill(b) for b in outs + root_allocs if _size(b) != 0]
    body = root.body
    if len(allocated) > len(root_allocs):
        body = _fill_nested(body)
    if not fills and body is root.body:
        return func
    new_root = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint,
                            tirx.SeqStmt(fills + [body]) if fills else body, root.init, root.alloc_buffers,
                            root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, new_root))


def _size(buf) -> int | None:
    n = 1
    for s in buf.shape:
        try:
            n *= int(s)
        except TypeError:
            return None
    return n


def _fill_nested(stmt):
    """Prefix the body of every non-root block that allocates buffers with their poison fills."""
    import tvm_ffi
    from ._tvm import load_tvm
    tirx = load_tvm().tirx
    from tvm import s_tir

    def on_block(b, mutator):
        b = mutator.default_mutate(b)
        fills = [_fill(buf) for buf in b.alloc_buffers if _size(buf) != 0]
        if not fills:
            return b
        return s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint, tirx.SeqStmt(fills + [b.body]), b.init,
                            b.alloc_buffers, b.match_buffers, b.annotations)

    return tvm_ffi.structural_mutate(stmt, [(s_tir.SBlock, on_block)])


def poison_module(mod):
    """A copy of IRModule `mod` whose PrimFuncs are all poisoned (`poison_func`)."""
    from ._tvm import load_tvm
    tvm = load_tvm()
    out = mod.clone()  # the caller's module stays as it was (it may be built unpoisoned later)
    for gv, f in list(out.functions.items()):
        if isinstance(f, tvm.tirx.PrimFunc):
            out[gv] = poison_func(f)
    return out
