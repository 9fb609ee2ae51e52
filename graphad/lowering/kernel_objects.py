"""Kernel objects: a CPU build whose kernels are compiled and kept by kernel, so that kernels
compiled once are linked, not compiled again, into every later graph that has them.

The TIR of a Relax VM build (what `vm_build._filter_tir` separates from the VM's main function)
is a set of kernels and, in the "compiled" exec mode, the main function `__vmtir__main`. Each
kernel gets a key: SHA-256 of its TVMScript text (symbol blanked, names normalised: the same
kernel is `fused_matmul_add1(lv13, ...)` in one graph and `fused_matmul_add3(lv15, ...)` in
another) and structural hash, the exact codegen target, the TVM release, the pass configuration
and the lowering revision. Its code is emitted under the canonical symbol `__tvm_ffi_gk_<key>`.
The kernels a `KernelStore` (the disk cache's, runtime/kernel_cache.py) already holds are not
compiled at all; the others are compiled together, as one LLVM module and one object file (a
module per kernel cost 40-80% more; with several compile threads, one module per group of
parallel_build.py), and that object, the "pack", is kept by the store under the key of every
kernel in it. The VM's compiled main function is a module of its own, at opt level 0
(`main_target`), never kept: it belongs to one graph. (Packs stored before that hold a main too;
their keys name the older codegen target, so no build links them now.) A pack linked into a later
graph has its symbols made weak (objcopy --weaken), so that two packs that both hold a kernel (two
processes compiled it at once) link together.

The returned `LinkPlan` carries the packs and the linker options that finish the library:
`--defsym=__tvm_ffi_<name>=__tvm_ffi_gk_<key>` for every kernel, so the VM finds each kernel
under the name this graph gave it; the compiled main calls the kernels directly (its
`call_cpacked` names are rewritten, see `_rename_cpacked`). Linking needs a GNU-compatible
linker (GNU ld, gold, lld), so the plan is used on Linux only (`supported`); the library is
linked with `-z now`, so a symbol left undefined fails its load, and any failure makes the
caller build the graph the ordinary way. The packs hold exactly the code an ordinary build
compiles (the same TIR pipeline and codegen): results are bit-identical (tests/test_kernel_cache.py).
"""
from __future__ import annotations

import builtins
import hashlib
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Protocol

from .compile_log import note, phase
from .llvm_strip import without_debug_info

FORMAT = "graphad-kernel/1"
MAIN_PREFIX = "__vmtir__"  # the Relax VM's compiled main function(s): built with every graph
SYMBOL_PREFIX = "__tvm_ffi_"  # TVM's symbol for a PrimFunc's packed entry point


class KernelStore(Protocol):
    """Where kernel packs live between builds (runtime/kernel_cache.py: the disk cache)."""

    def get(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """{key: (pack id, verified pack bytes)} for those of `keys` it holds."""

    def put(self, keys: list[str], data: bytes) -> None:
        """Keep the pack `data`, which holds the kernels `keys` (failures are the store's to
        report, never raised)."""

    def contents(self, pack: str) -> set[str]:
        """The keys of the kernels the pack `pack` holds, as far as the store knows."""


@dataclass
class LinkPlan:
    """What the export must add to finish the library: kernel packs and linker aliases."""
    objects: list[tuple[str, bytes]] = field(default_factory=list)  # (pack id, object bytes)
    options: list[str] = field(default_factory=list)
    cached: int = 0
    built: int = 0
    # the kernels compiled into the executable's own library: its object, once exported, is the
    # new pack (`store.put(new_keys, object)`: the export's object code is kept, not made twice)
    new_keys: list[str] = field(default_factory=list)
    store: object = None
    # kernels compiled in groups of their own (parallel_build.py): [(object code, its kernels'
    # keys)], each made in its build thread, linked in by the export and kept by the store as a
    # pack of its own
    modules: list = field(default_factory=list)


def supported() -> bool:
    """Whether builds may go through kernel objects here: Linux (a GNU-compatible linker for
    --defsym) and not switched off with GRAPHAD_NO_KERNEL_CACHE=1."""
    return sys.platform.startswith("linux") and os.environ.get("GRAPHAD_NO_KERNEL_CACHE", "") in ("", "0")


def _context_text(tvm) -> str:
    """The pass configuration in force (options such as tirx.disable_assert change the code)."""
    ctx = tvm.transform.PassContext.current()
    cfg = sorted((str(k), str(v)) for k, v in dict(ctx.config).items())
    return f"opt_level={ctx.opt_level} required={sorted(map(str, ctx.required_pass))} " \
           f"disabled={sorted(map(str, ctx.disabled_pass))} config={cfg}"


_NAME_OR_STRING = re.compile(r'("(?:[^"\\]|\\.)*")|(\.\s*)?\b([A-Za-z_][A-Za-z0-9_]*)\b')
_KEEP = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"T", "I", "R"}


def _alpha_normal(text: str) -> str:
    """TVMScript `text` with its names replaced in order of first appearance (`v0`, `v1`, ...), and
    its block names (`T.sblock("...")`) likewise: alpha-equivalent kernels give equal texts.

    Relax names a kernel's buffers, loops and blocks after the graph's variables (`lv13` in one
    graph, `lv15` in a deeper one). Renamed: names that are not keywords, builtins (`range`,
    `min`, `True`), the TVMScript modules (`T`, `I`, `R`) or attributes (`T.float32`); other
    string literals (dtypes, attributes) are kept as they are."""
    names: dict[str, str] = {}
    blocks: dict[str, str] = {}

    def sub(m):
        string, dot, name = m.group(1), m.group(2), m.group(3)
        if string is not None:
            if text.endswith("T.sblock(", 0, m.start()):
                return blocks.setdefault(string, f'"b{len(blocks)}"')
            return string
        if dot is not None or name in _KEEP:
            return m.group(0)
        return names.setdefault(name, f"v{len(names)}")

    return _NAME_OR_STRING.sub(sub, text)


def kernel_key(tvm, func, target_text: str, context_text: str) -> str:
    """Hex SHA-256 of everything that determines `func`'s object code, up to names.

    The structural hash (which ignores names) and the TVMScript text with the symbol blanked and
    the names normalised (`_alpha_normal`): two kernels share a key only if they are the same
    computation. Names reach the object code only in the messages of argument checks, which the
    VM's own checks of the same arguments precede."""
    import tvm_ffi
    from . import lowering_revision
    from ._tvm import tvm_version
    blank = func.with_attr("global_symbol", "gk")
    parts = [FORMAT, f"tvm={tvm_version()}", f"lowering={lowering_revision()}", f"target={target_text}",
             context_text, f"shash={tvm_ffi.structural_hash(blank)}", _alpha_normal(blank.script())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def canonical_name(key: str) -> str:
    """The symbol a kernel's code is emitted under (32 hex digits of its key: no two kernels of
    one library share it short of a SHA-256 collision)."""
    return f"gk_{key[:32]}"


def _rename_cpacked(tvm, func, names: dict[str, str], options: list[str]):
    """`func` (the compiled main) with its direct kernel calls pointed at the canonical symbols:
    each call site its own name (`gk_<key>_c<n>`), aliased by the linker to the kernel's entry.

    One name per call site, because TVM's LLVM codegen declares an external callee anew at every
    call, and LLVM renames the second declaration of a name (`gk_<key>.19`) to a symbol nobody
    defines; inside one module TVM finds the callee defined and never meets this."""
    import tvm_ffi
    ir = tvm.ir
    # T.call_cpacked(name, ...) and T.anylist_setitem_call_cpacked(list, index, name, ...)
    cpacked = [tvm.ir.Op.get(n) for n in ("tirx.tvm_call_cpacked", "tirx.anylist_setitem_call_cpacked")]
    sites = [0]

    def site(name: str) -> str:
        sites[0] += 1
        alias = f"{names[name]}_c{sites[0]}"
        options.append(f"-Wl,--defsym={alias}={SYMBOL_PREFIX}{names[name]}")
        return alias

    def call(e):
        if not any(e.op.same_as(op) for op in cpacked):
            return e
        args = [ir.StringImm(site(a.value)) if isinstance(a, ir.StringImm) and a.value in names else a
                for a in e.args]
        return ir.Call(e.op, args, e.attrs, e.ty_args, e.span, ret_ty=e.ty)

    return func.with_body(tvm_ffi.structural_map(func.body, [(ir.Call, call)], order="post"))


def _weakened(data: bytes) -> bytes:
    """The pack `data` with its global symbols made weak (objcopy --weaken), so that it links
    beside another pack holding some of the same kernels. Without binutils, the bytes as they
    are: such a link then fails and the caller builds the graph whole."""
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        return data
    with tempfile.TemporaryDirectory(prefix="graphad-kernels-") as d:
        path = os.path.join(d, "pack.o")
        with open(path, "wb") as f:
            f.write(data)
        subprocess.run([objcopy, "--weaken", path], check=True, capture_output=True, timeout=120)
        with open(path, "rb") as f:
            return f.read()


def main_target(host):
    """`host` at LLVM opt level 0, for a module holding only the VM's compiled main function: a
    straight sequence of calls into the VM's builtins and the kernels, which LLVM's level 3
    (instruction selection, scheduling, register allocation) took 12-18 ms to compile for a
    graph of one kernel, against 3-5 ms at level 0. Calls of a trivial graph took as long either
    way (2.41-2.48 us per call, 1 thread, against 2.40-2.47 at level 3 and 2.74-2.77 with the
    bytecode interpreter)."""
    from .targets import at_opt_level
    return at_opt_level(host, 0)


def build_split(tvm, tir_mod, host, store: KernelStore, jobs: int = 1, split_only: bool = False):
    """Compile `tir_mod` (a VM build's TIR, target bound) through `store`: the kernels it lacks
    into new packs (stored), the rest linked from the packs that hold them. The VM's compiled
    main function is a module of its own, compiled at opt level 0 (`main_target`); with `jobs` > 1
    the kernels to compile are split into groups built in parallel (parallel_build.py). The first
    module (the main's, else the first group's) is the returned module; the others are in the
    plan's `modules`. `split_only`: return (None, None) when a JIT build would not gain by being
    split (`parallel_build.pays_off_jit`).

    Returns (the runtime module of whatever is not a kernel, LinkPlan).
    """
    import importlib

    from . import parallel_build
    from .linker import available as direct_link
    from .linker import export_workspace
    from .tir_lowering import lower_tir
    tb = importlib.import_module("tvm.tirx.build")
    funcs = dict(tir_mod.functions_items())
    cost = parallel_build.costs(tvm, funcs) if jobs > 1 else {}
    if split_only:  # decided before the keys are made: hashing every kernel's TIR is not free
        mains = {gv: f for gv, f in funcs.items() if gv.name_hint.startswith(MAIN_PREFIX)}
        rest = {gv: f for gv, f in funcs.items() if gv not in mains}
        groups = parallel_build.kernel_groups(cost, rest, mains, jobs)
        if not parallel_build.pays_off_jit(cost, groups, mains, direct_link()) or export_workspace()[0] is None:
            return None, None
    ctx = f"{_context_text(tvm)} module_attrs={tir_mod.attrs}"  # (empty today; codegen reads them)
    # LLVM's loop vectorizer off for a kernel with a guarded inner loop (targets.py), decided by
    # the kernel alone, so that its key does not depend on its graph
    from .pipeline import has_guarded_inner_loop
    from .targets import with_guarded_loops
    guarded_host = with_guarded_loops(host)
    guarded = {gv: not gv.name_hint.startswith(MAIN_PREFIX) and isinstance(f, tvm.tirx.PrimFunc)
               and has_guarded_inner_loop(tvm.IRModule({gv: f})) for gv, f in funcs.items()}
    target_text = {False: str(host), True: str(guarded_host)}
    # -z now: every symbol is bound when the library is loaded, so a symbol left undefined fails
    # the load (an exception; the caller then builds the graph whole), never a later call
    plan = LinkPlan(options=["-Wl,-z,now"], store=store)
    names: dict[str, str] = {}  # kernel name in this graph -> canonical name
    kernels: dict[str, tuple] = {}  # key -> (GlobalVar, PrimFunc with the canonical symbol)
    mains: dict = {}
    with phase("kernels"):
        for gv, func in funcs.items():
            if gv.name_hint.startswith(MAIN_PREFIX) or not isinstance(func, tvm.tirx.PrimFunc):
                mains[gv] = func
                continue
            key = kernel_key(tvm, func, target_text[guarded[gv]], ctx)
            canon = canonical_name(key)
            names[gv.name_hint] = canon
            plan.options.append(f"-Wl,--defsym={SYMBOL_PREFIX}{gv.name_hint}={SYMBOL_PREFIX}{canon}")
            kernels.setdefault(key, (gv, func.with_attr("global_symbol", canon)))  # twice in a graph: once
        found = store.get(list(kernels))
    packs: dict[str, bytes] = {}
    for pack, data in found.values():
        packs.setdefault(pack, data)
    # weak definitions: a pack may hold a kernel another pack holds too (two processes compiled
    # it at once)
    plan.objects = sorted((pack, _weakened(data)) for pack, data in packs.items())
    plan.cached = len(found)
    misses = {gv: f for key, (gv, f) in kernels.items() if key not in found}
    mains = {gv: _rename_cpacked(tvm, f, names, plan.options) if gv.name_hint.startswith(MAIN_PREFIX) else f
             for gv, f in mains.items()}
    canon_keys = {canonical_name(k): k for k in kernels if k not in found}

    def lower(group: dict):
        host_mod, device_mods = lower_tir(tvm, tvm.IRModule(group, attrs=tir_mod.attrs))
        if any(len(m.functions) for m in device_mods.values()):
            raise RuntimeError("kernel objects are for host code only")
        built = []
        for func in host_mod.functions.values():
            symbol = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else ""
            symbol = symbol[len(SYMBOL_PREFIX):] if symbol.startswith(SYMBOL_PREFIX) else symbol  # MakePackedAPI's
            if symbol in canon_keys:
                built.append(canon_keys[symbol])
        want = sum(1 for gv in group if gv in misses)
        if len(built) != want:  # the pipeline renamed or merged kernels: not ours to link
            raise RuntimeError(f"kernel objects: {want} kernels to compile, {len(built)} after the TIR pipeline")
        return host_mod, built

    groups = parallel_build.kernel_groups(cost, misses, mains, jobs)
    # a build with a kernel that has a guarded inner loop compiles every module with the loop
    # vectorizer off: LLVM's options are process-wide, and the groups compile at once in threads;
    # the other kernels' objects are correct either way (cached so, and reused as they are)
    if any(guarded.get(gv) for gv in misses):
        host = guarded_host
    low = main_target(host)
    if len(groups) == 1:  # the main alone (every kernel cached), or the kernels alone (bytecode mode)
        only_main = all(gv in mains for gv in groups[0])
        with phase("tir"):
            host_mod, plan.new_keys = lower(groups[0])
        with phase("llvm"):
            lib = without_debug_info(tvm, tb.codegen_build(host_mod, low if only_main else host))
    else:
        from .linker import object_code

        def build(item):
            i, group = item
            host_mod, built = lower(group)
            if i == 0:  # the main (or nothing, in bytecode mode): the library's own module
                return without_debug_info(tvm, tb.codegen_build(host_mod, low)), built
            return object_code(without_debug_info(tvm, tb.codegen_build(host_mod, host))), built
        with phase("codegen"):
            note("compile_jobs", len(groups) if jobs > 1 else 1)  # (the main's module among them)
            (lib, plan.new_keys), *plan.modules = parallel_build.build_groups(build, list(enumerate(groups)), jobs)
    plan.built = len(plan.new_keys) + sum(len(keys) for _, keys in plan.modules)
    note("kernels", f"{len(kernels)} ({plan.cached} cached)")
    return lib, plan


class NullStore:
    """A KernelStore that holds nothing and keeps nothing: a split build (parallel_build.py)
    linked through kernel objects without a disk cache."""

    def get(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        return {}

    def put(self, keys: list[str], data: bytes) -> None:
        pass

    def contents(self, pack: str) -> set[str]:
        return set()
