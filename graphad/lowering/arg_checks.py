"""The kernels' argument checks, left out of CPU builds: the largest single cost of compiling a kernel.

TVM's MakePackedAPI gives every PrimFunc a packed entry that checks each buffer argument it
receives (type index, null handle, ndim, dtype, device type and id, every dimension of the shape,
the strides, the byte offset, the data pointer), each check an assertion with its own error
message. LLVM then compiles a function with a branch and a message per check, and its time grows
faster than the number of buffers: measured on this project's 2-vCPU machine for an elementwise
kernel over 16 elements, LLVM (IR, optimisation, object code) took 68 ms with 8 buffers, 156 ms
with 16, 362 ms with 32 and 2.7 s with 128, against 29, 36, 60 and 251 ms without the checks.

graphad's kernels are private to the library they are compiled into: only that library's Relax
VM calls them, with buffers the VM allocated itself or the function's inputs, and those inputs
are checked before any kernel runs: the Executable passes only C-contiguous, 64-byte aligned
buffers of the signature's shapes and dtypes (runtime/executable.py), and the VM's main function
checks each input's shape and dtype again (Relax's `check_tensor_info`/`match_shape`). So the
kernels' checks can never fail, and `without_argument_checks` removes the assertions (TVM's
SkipAssert) from every kernel, never from the VM's compiled main function (`__vmtir__main`, which
keeps its own, cheap checks). The only other assertions in graphad's kernels are the index
checks (index_check.py), which check the caller's data, not the call: a kernel that holds one
keeps those and loses only its argument checks. The kernels' arithmetic is untouched: results
are bit-identical.
"""
from __future__ import annotations

from ._tvm import walk
from .index_check import CHECK_ATTR, MESSAGE_PREFIX
from .native_loop import NATIVE_ATTR
from .kernel_objects import MAIN_PREFIX  # the Relax VM's compiled main function(s) keep their checks


def without_argument_checks(tvm, host_mod):
    """`host_mod` (a CPU host module after TVM's TIR pipeline) with the assertions of its kernels
    removed; the VM's main functions are left as they are."""
    kernels = {gv: f for gv, f in host_mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and not gv.name_hint.startswith(MAIN_PREFIX)}
    if not kernels:
        return host_mod
    checking = {gv: f for gv, f in kernels.items() if _has_index_check(tvm, f)}
    plain = {gv: f for gv, f in kernels.items() if gv not in checking}
    funcs = dict(host_mod.functions_items())
    if plain:
        stripped = tvm.tirx.transform.SkipAssert()(tvm.IRModule(plain, attrs=host_mod.attrs))
        funcs.update(dict(stripped.functions_items()))
    if checking:
        import tvm_ffi
        nop = tvm.tirx.Evaluate(0)

        def keep_index_checks(a):
            return a if _is_index_check(a) else nop
        for gv, f in checking.items():
            funcs[gv] = f.with_body(tvm_ffi.structural_map(f.body, [(tvm.tirx.AssertStmt, keep_index_checks)],
                                                           order="post"))
    return tvm.IRModule(funcs, attrs=host_mod.attrs)


def _is_index_check(a) -> bool:
    parts = a.message_parts
    return len(parts) > 0 and str(parts[0].value).startswith(MESSAGE_PREFIX)


def _has_index_check(tvm, func) -> bool:
    """Whether `func` holds an index check: a check kernel, or a native loop (native_loop.py)
    into which one was inlined (only those are walked: no other kernel has one)."""
    attrs = func.attrs if func.attrs is not None else {}
    if CHECK_ATTR in attrs:
        return True
    if NATIVE_ATTR not in attrs:
        return False
    found = []
    walk(func.body, [(tvm.tirx.AssertStmt, lambda a: found.append(True) if _is_index_check(a) else None)])
    return bool(found)
