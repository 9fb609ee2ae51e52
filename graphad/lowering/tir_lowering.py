"""TVM's TIR lowering as graphad's CPU builds run it, one function for the whole-module build
(pipeline.py) and the kernel-object build (kernel_objects.py).

TVM's "default" TIR pipeline, the host module split off and finalised (MakePackedAPI, ...), with
three changes that leave the kernels' arithmetic untouched: the kernels' argument checks removed
(arg_checks.py), the float Let values hidden from TVM's arithmetic analyzer while its passes run
(let_fence.py), and so are the index divisions its IterMapSimplify rewrites wrongly
(index_fence.py).
"""
from __future__ import annotations

import importlib

from .arg_checks import without_argument_checks
from .index_fence import fenced_indices
from .let_fence import fenced, unfenced


def lower_tir(tvm, tir_mod):
    """(host module, {target: device module}) of `tir_mod`, a target-bound TIR module, ready for
    LLVM (`tvm.tirx.build.codegen_build` / `tir_to_runtime`)."""
    tb = importlib.import_module("tvm.tirx.build")  # the module: tvm.tirx.build is also its function
    pipeline, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")
    fenced_mod = fenced_indices(tvm, fenced(tvm, tir_mod))
    strip = (lambda m: m) if fenced_mod.same_as(tir_mod) else (lambda m: unfenced(tvm, m))  # no fence
    host_mod, device_mods = tb.split_host_device_mods(pipeline(fenced_mod))
    host_mod = strip(without_argument_checks(tvm, finalize_host()(host_mod)))
    device_mods = {t: strip(finalize_device()(m)) for t, m in device_mods.items()}
    return host_mod, device_mods
