"""CPU kernel modules rebuilt from their IR without debug information (lowering/llvm_strip.py):
the text rewrite on hand-written IR, and real builds: nothing of the debug information left, the
half-precision helpers kept exactly where a `half` value needs them, and results bit for bit those
of the module TVM built."""
import numpy as np
import pytest

import graphad as gd
from graphad.lowering import compile_log, kernel_objects, llvm_strip, pipeline
from graphad.lowering.llvm_strip import FP16_HELPERS, strip_ir

pytestmark = pytest.mark.tvm

HELPER = """define weak dso_local half @{name}(float %a0) local_unnamed_addr #5 section ".text.tvm.fp16.conv" {{
  %v0 = call half @llvm.fabs.f16(half %a0)
  ret half %v0
}}
"""

IR = """; ModuleID = 'TVMMod'
source_filename = "TVMMod"

@.str = private constant [6 x i8] c"a!dbg\\00", align 1

define dllexport i32 @__tvm_ffi_k(ptr %args, i32 %n) local_unnamed_addr #0 !dbg !5 {{
entry:
    #dbg_value(ptr %args, !11, !DIExpression(), !15)
  %0 = load float, ptr %args, align 4, !dbg !15, !tbaa !20
  %1 = {body}
  br label %exit, !dbg !15, !llvm.loop !22
exit:
  ret i32 0, !dbg !15
}}

declare float @llvm.fabs.f32(float) #6
declare half @llvm.fabs.f16(half) #6

{helpers}
attributes #0 = {{ "target-cpu"="znver4" }}

!llvm.dbg.cu = !{{!0}}
!llvm.module.flags = !{{!2}}

!0 = distinct !DICompileUnit(language: DW_LANG_C, file: !1, producer: "TVM", isOptimized: false, runtimeVersion: 0, emissionKind: FullDebug)
!1 = !DIFile(filename: "IRModule.CodeGenLLVM", directory: ".")
!2 = !{{i32 2, !"tvm_target", !"llvm"}}
!5 = distinct !DISubprogram(name: "k", scope: !1, file: !1, unit: !0)
!11 = !DILocalVariable(name: "args", arg: 1, scope: !5, file: !1)
!15 = !DILocation(line: 0, scope: !5)
!20 = !{{!21, !21, i64 0}}
!21 = !{{!"float", !23}}
!22 = distinct !{{!22, !{loop}}}
!23 = !{{!"tvm-tbaa"}}
!24 = !{{!"llvm.loop.mustprogress"}}
"""


def _ir(body="fadd float %0, 1.0", loop="24", string=False):
    text = IR.format(body=body, loop=loop,
                     helpers="".join(HELPER.format(name=n) for n in FP16_HELPERS))
    return text if string else text.replace('@.str = private constant [6 x i8] c"a!dbg\\00", align 1\n', "")


def test_strip_removes_debug_information_and_keeps_other_metadata():
    out = strip_ir(_ir())
    assert "dbg" not in out and "!DI" not in out and "!llvm.dbg.cu" not in out
    assert "!tbaa !20" in out and "!llvm.loop !22" in out and "!llvm.module.flags = !{!2}" in out
    for kept in ("!2 = ", "!20 = ", "!21 = ", "!22 = ", "!23 = ", "!24 = "):
        assert kept in out
    assert "#0 {\n" in out  # the definition line keeps its attributes, loses its !dbg
    assert "%0 = load float, ptr %args, align 4, !tbaa !20\n" in out


def test_half_helpers_go_only_where_no_half_value_is_left():
    out = strip_ir(_ir())
    assert not any(f"@{h}(" in out for h in FP16_HELPERS)
    assert "llvm.fabs.f16" not in out  # used only by the helpers
    assert "llvm.fabs.f32" not in out  # declared, used by nothing left
    # a half value in the kernel: its conversions may become calls of the helpers
    kept = strip_ir(_ir(body="fptrunc float %0 to half"))
    assert all(f"define weak dso_local half @{h}(" in kept for h in FP16_HELPERS)
    assert "declare half @llvm.fabs.f16" in kept
    # names that merely end in "half" are no half values
    assert "@__truncsfhf2(" not in strip_ir(_ir(body="fadd float %0, 1.0 ; %my_half @to_half"))
    assert all(f"@{h}(" in strip_ir(_ir(), helpers=False) for h in FP16_HELPERS)


def test_strip_refuses_what_it_cannot_tell_apart():
    assert strip_ir(_ir(string=True)) is None  # "!dbg" inside a string constant
    assert strip_ir(_ir(loop="15")) is None  # loop metadata naming a debug location


def _llvm_modules(ex):
    return [m for m in ex.mod._collect_dso_modules() if m.kind == "llvm"]


def _build(fn, *args, strip=True, monkeypatch=None):
    from graphad.api import make_graph
    from graphad.runtime.executable import _lower_and_build, graph_for_lowering, make_executable
    if not strip:
        monkeypatch.setattr(pipeline, "without_debug_info", lambda tvm, m: m)
        monkeypatch.setattr(kernel_objects, "without_debug_info", lambda tvm, m: m)
    graph = graph_for_lowering(make_graph(fn)(*args))
    with compile_log.record("strip", log=False) as rec:
        ex, meta, report = _lower_and_build(graph, None, True)
    if not strip:
        monkeypatch.undo()
    return ex, rec.info, [np.asarray(o) for o in make_executable(ex, meta)(list(args))]


def _programs():
    rng = np.random.default_rng(0)
    f32 = lambda *s: gd.Tensor(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    f16 = lambda *s: gd.Tensor(rng.standard_normal(s).astype(np.float16))  # noqa: E731
    return {
        "matmul": (lambda x, y: x @ y, (f32(64, 32), f32(32, 48))),
        "fused chain": (lambda x: gd.ops.tanh(x * 2.0 + 1.0).sum(axis=0), (f32(37, 129),)),
        "gradient": (gd.grad(lambda w, x: gd.ops.tanh(x @ w).sum()), (f32(16, 8), f32(4, 16))),
        "float16": (lambda x, y: gd.ops.exp(x * y).astype(gd.float32).sum(), (f16(33, 7), f16(33, 7))),
        "float16 out": (lambda x: (x.astype(gd.float16) * 3.0), (f32(100),)),
        "bfloat16": (lambda x: gd.ops.sin(x.astype(gd.bfloat16)).astype(gd.float32), (f32(50),)),
        "int and where": (lambda x: gd.ops.where(x > 0, (x * 7).astype(gd.int32) % 5, -1), (f32(9, 11),)),
    }


@pytest.mark.parametrize("name", list(_programs()))
def test_stripped_builds_compute_the_same_bits(name, monkeypatch):
    fn, args = _programs()[name]
    ex, info, got = _build(fn, *args)
    assert "debug_info" not in info  # stripped, not kept
    for m in _llvm_modules(ex):
        text = m.inspect_source("ll")
        assert "!dbg" not in text and "!DI" not in text
        # the helpers stay exactly where a half value may need them
        assert llvm_strip._uses_half(text) == all(f"@{h}(" in text for h in FP16_HELPERS)
    _, _, want = _build(fn, *args, strip=False, monkeypatch=monkeypatch)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


def test_a_module_that_cannot_be_stripped_is_kept_and_noted(monkeypatch):
    monkeypatch.setattr(llvm_strip, "strip_ir", lambda text: None)
    x = gd.Tensor(np.arange(6, dtype=np.float32))
    ex, info, got = _build(lambda x: x * 2.0 + 1.0, x)
    assert info["debug_info"].startswith("kept")
    assert any("!dbg" in m.inspect_source("ll") for m in _llvm_modules(ex))
    np.testing.assert_array_equal(got[0], np.arange(6, dtype=np.float32) * 2 + 1)


def test_a_rewrite_that_does_not_parse_warns_and_keeps_the_module(monkeypatch):
    monkeypatch.setattr(llvm_strip, "strip_ir", lambda text: text + "this is not LLVM IR\n")
    monkeypatch.setattr(llvm_strip, "_WARNED", False)
    x = gd.Tensor(np.arange(6, dtype=np.float32))
    with pytest.warns(RuntimeWarning, match="did not parse"):
        ex, info, got = _build(lambda x: x * 3.0 - 1.0, x)
    assert info["debug_info"].startswith("kept")
    np.testing.assert_array_equal(got[0], np.arange(6, dtype=np.float32) * 3 - 1)
