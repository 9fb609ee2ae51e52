"""TVM's TIR lowering as graphad's builds run it: one function for the CPU's whole-module build
(pipeline.py) and kernel-object build (kernel_objects.py), and a named TIR pipeline for the GPU
builds, which go through `tvm.compile`.

TVM's "default" TIR pipeline, the host module split off and finalised (MakePackedAPI, ...), with
integer arithmetic on the values a kernel reads made to wrap around on the CPU (int_wrap.py:
hidden from TVM's simplifier while its passes run, computed twice as wide and cast back after
them), and with changes that leave the kernels' arithmetic untouched: the float Let values
hidden from TVM's arithmetic analyzer while its passes run (let_fence.py), and so are the index
divisions its IterMapSimplify rewrites wrongly (index_fence.py); on the CPU the kernels' argument
checks are also removed (arg_checks.py: only the library's own VM calls them), and the
vectorized loops TVM's VectorizeLoop stops the build on are made serial and the pass run again
(vectorize_guard.py).
"""
from __future__ import annotations

import importlib
import threading

from .arg_checks import without_argument_checks
from .index_fence import fenced_indices
from .int_wrap import fenced_int_arith, plain_int_arith, wrapping_int_arith
from .let_fence import fenced, unfenced
from .rare_path import stripped, tir_pipeline, vector_isnan, with_tvm_isnan

# the name under which `fenced_pipeline_name` registers the GPU builds' TIR pipeline with TVM
FENCED_PIPELINE = "graphad_fenced"
_LOCK = threading.Lock()


def lower_tir(tvm, tir_mod):
    """(host module, {target: device module}) of `tir_mod`, a target-bound TIR module, ready for
    LLVM (`tvm.tirx.build.codegen_build` / `tir_to_runtime`)."""
    tb = importlib.import_module("tvm.tirx.build")  # the module: tvm.tirx.build is also its function
    pipeline, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")
    # integer arithmetic on values fenced (int_wrap.py) before the other fences
    wrapped, wraps = fenced_int_arith(tvm, tir_mod)
    fenced_mod = fenced_indices(tvm, fenced(tvm, wrapped))
    strip = (lambda m: m) if fenced_mod.same_as(wrapped) else (lambda m: unfenced(tvm, m))  # no fence
    # isnan as an operator TVM vectorizes (rare_path.vector_isnan), named back after the passes
    vec_mod = vector_isnan(tvm, fenced_mod)
    renamed = not vec_mod.same_as(fenced_mod)
    # (with rare paths to split, rare_path.py's pipeline)
    try:
        lowered = tir_pipeline(tvm, vec_mod, pipeline)(vec_mod)
    except Exception as e:  # noqa: BLE001 - only TVM's CSE defect is retried; anything else re-raised
        if not _cse_defect(e):
            raise
        lowered = _without_cse(tvm, lambda: tir_pipeline(tvm, vec_mod, pipeline)(vec_mod))
    host_mod, device_mods = tb.split_host_device_mods(lowered)
    host_mod = strip(without_argument_checks(tvm, finalize_host()(host_mod)))
    if wraps:
        host_mod = wrapping_int_arith(tvm, host_mod)
    if renamed:
        host_mod = with_tvm_isnan(tvm, host_mod)
    device_mods = {t: strip(finalize_device()(m)) for t, m in device_mods.items()}
    if renamed:
        device_mods = {t: with_tvm_isnan(tvm, m) for t, m in device_mods.items()}
    if wraps:
        device_mods = {t: wrapping_int_arith(tvm, m) for t, m in device_mods.items()}
    return host_mod, device_mods


def _cse_defect(e: BaseException) -> bool:
    """Whether `e` is TVM 0.27's TIR CommonSubexprElim defect: a value hoisted out of a Let chain
    inside a Select's branch above the Let that binds what it reads ("variable cse_v1 has been
    used before definition"; pow's float64 kernels under a float-to-int cast, found by the
    fuzzer, whose builds fell back to TVM's default schedules)."""
    text = str(e)
    return "used before definition" in text and "cse_v" in text


def _without_cse(tvm, run):
    """`run()` with TVM's TIR CommonSubexprElim off (the current PassContext's other settings
    kept): LLVM's own GVN and CSE still run on the kernel."""
    current = tvm.transform.PassContext.current()
    config = dict(current.config)
    config["tirx.disable_cse_tir"] = True
    with tvm.transform.PassContext(opt_level=current.opt_level, config=config,
                                   required_pass=list(current.required_pass),
                                   disabled_pass=list(current.disabled_pass)):
        return run()


def fenced_pipeline_name(tvm) -> str:
    """The name of TVM's default TIR pipeline with graphad's fences (registered with TVM on first
    use), for `tvm.compile(..., tir_pipeline=...)`: the GPU builds meet the same IterMapSimplify
    rewrites in FlattenBuffer. The fences go in before the pipeline and come out of the host and
    device modules after their finalisation, as in `lower_tir`; the argument checks stay."""
    from tvm.tirx import compilation_pipeline as cpl
    with _LOCK:
        if FENCED_PIPELINE not in cpl.PIPELINE_MAP:
            cpl.register_tir_pipeline(FENCED_PIPELINE, lambda **kw: _fenced_pipeline(tvm, cpl, **kw))
    return FENCED_PIPELINE


def _fenced_pipeline(tvm, cpl, **kw):
    """(pipeline pass, host finalisation factory, device finalisation factory) of TVM's default
    TIR pipeline, fenced."""
    pipeline, finalize_host, finalize_device = cpl.get_tir_pipeline("default", **kw)

    @tvm.transform.module_pass(opt_level=0, name="graphad_fence")
    def fence(mod, _ctx):
        # the index fence again, on the scheduled kernels (_cuda_prepare fenced them before the
        # schedules, which add indices of their own): taken off first, so none is fenced twice
        # (a kernel's own integer fence calls, int_wrap.wrapping, become plain operations)
        return fenced_indices(tvm, fenced(tvm, unfenced(tvm, stripped(tvm, plain_int_arith(tvm, mod)))))

    @tvm.transform.module_pass(opt_level=0, name="graphad_unfence")
    def unfence(mod, _ctx):
        return unfenced(tvm, mod)

    def finalize(passes):
        return lambda: tvm.transform.Sequential([passes(), unfence])
    return tvm.transform.Sequential([fence, pipeline]), finalize(finalize_host), finalize(finalize_device)
