"""CPU kernel modules without what their machine code does not need: TVM's debug information and
its unused half-precision conversion helpers.

TVM 0.27 gives every LLVM module it builds DWARF debug information (`CodeGenCPU::Init` makes it
unconditionally: half the IR lines of a kernel carry a `!dbg` location, with a `#dbg_value` record
per argument) and, on x86, definitions of `__truncsfhf2` and `__extendhfsf2` (weak, for the
half-precision conversions LLVM lowers to calls). Neither can be turned off from outside, and
LLVM's code generation (the JIT's, or the object file's of an export) works through both: for the
matmul 2048x32x512 kernel 13-15 ms with them, 9-10 ms without (docs/performance.md).

`without_debug_info(tvm, module)` takes the optimised IR of a CPU runtime module (`inspect_source("ll")`,
printed after TVM's `-O` pipeline), removes the debug information and, where no instruction left
uses a `half` value, the two helpers (they serve only conversions of such values), and loads the
text back as an LLVM module (TVM's `.ll` loader, JIT-compiled on its first call like the one it
replaces). The instructions are not touched, so the machine code does the same arithmetic
(tests/test_llvm_strip.py compares results bit for bit). `strip_ir(text)` is the text rewrite
alone: None where the text holds something it does not handle (a debug node reachable from code
that stays), and then the module is kept as TVM built it, with a note in the compile log.
"""
from __future__ import annotations

import os
import re
import tempfile

from .compile_log import note

__all__ = ["strip_ir", "without_debug_info", "FP16_HELPERS"]

FP16_HELPERS = ("__truncsfhf2", "__extendhfsf2")

# LLVM prints a module's metadata after its code: named (`!llvm.dbg.cu = ...`), then numbered
_META_DEF = re.compile(r"^!(\d+) = (.*)$", re.M)
_META_REF = re.compile(r"!(\d+)\b")
# a debug location attached to an instruction (`, !dbg !N`, printed before the other attachments)
# or to a function definition (`define ... #0 !dbg !N {`)
_DBG_ATTACHMENT = re.compile(r", !dbg !\d+")
_DBG_ON_DEFINE = re.compile(r" !dbg !\d+")
_DBG_RECORD = re.compile(r"^[ \t]*#dbg_\w+\(.*\n", re.M)  # `#dbg_value(...)` lines (LLVM 19+)
_DBG_INTRINSIC = re.compile(r"^.*@llvm\.dbg\..*\n", re.M)  # their older spelling, as calls
_DBG_IN_STRING = re.compile(r'c"[^"\n]*!dbg')
_DECLARE = re.compile(r"\ndeclare [^\n@]*@([\w.$]+)\(.*")
_HALF = re.compile(r"half(?![\w.$])")  # the type; a name ending so is told apart in _uses_half


def _definition(code: str, name: str) -> tuple[int, int] | None:
    """Where the definition of function `name` lies in `code` (start, end), if it does."""
    at = code.find(f"@{name}(")
    start = code.rfind("\n", 0, at) + 1
    if at < 0 or not code.startswith("define ", start):
        return None
    end = code.find("\n}\n", at)
    return (start, end + 3) if end >= 0 else None


def _without_helpers(code: str) -> str:
    """`code` (a module's IR before its metadata) without the half-precision helpers and the
    declarations nothing left uses, when nothing else uses a `half` value (LLVM lowers conversions
    of such values to calls of these); `code` itself otherwise."""
    spans = sorted(filter(None, (_definition(code, h) for h in FP16_HELPERS)))
    if len(spans) != len(FP16_HELPERS):
        return code
    rest = code[:spans[0][0]] + code[spans[0][1]:spans[1][0]] + code[spans[1][1]:]

    def unused(m):
        return len(re.findall(f"@{re.escape(m.group(1))}(?![\\w.$])", rest)) == 1
    rest = _DECLARE.sub(lambda m: "" if unused(m) else m.group(0), rest)  # (keeps its line's end)
    return code if _uses_half(rest) else rest


def _uses_half(code: str) -> bool:
    """Whether `code` names the `half` type (not a value or function whose name ends so)."""
    return any(m.start() == 0 or not (code[m.start() - 1].isalnum() or code[m.start() - 1] in "_.$%@\"")
               for m in _HALF.finditer(code))


def strip_ir(text: str, helpers: bool = True) -> str | None:
    """`text` (a module's LLVM IR) without debug information and, with `helpers`, without TVM's
    half-precision conversion helpers where no `half` value is left to convert. None when a debug
    node stays reachable from the code (not a form this rewrite knows) or a string constant
    mentions `!dbg` (a text rewrite could not tell it from an attachment)."""
    at = text.find("\n!") + 1
    code, meta_text = (text[:at], text[at:]) if at else (text, "")
    if _DBG_IN_STRING.search(code):
        return None
    if helpers:
        code = _without_helpers(code)
    if "#dbg_" in code:
        code = _DBG_RECORD.sub("", code)
    if "@llvm.dbg." in code:
        code = _DBG_INTRINSIC.sub("", code)
    code = _DBG_ON_DEFINE.sub("", _DBG_ATTACHMENT.sub("", code))
    if "!dbg" in code:
        return None
    meta = dict(_META_DEF.findall(meta_text))
    named = [ln for ln in meta_text.splitlines() if ln.startswith("!") and not _META_DEF.match(ln)
             and not ln.startswith("!llvm.dbg.")]
    # the metadata the code and the remaining named metadata name, and what that names in turn
    keep, todo = set(), _META_REF.findall(code) + _META_REF.findall("\n".join(named))
    while todo:
        n = todo.pop()
        if n in keep or n not in meta:
            continue
        keep.add(n)
        todo += _META_REF.findall(meta[n])
    if any("!DI" in meta[n] for n in keep):
        return None
    return code + "\n".join(named + [f"!{n} = {meta[n]}" for n in sorted(keep, key=int)]) + "\n"


def without_debug_info(tvm, module):
    """`module` (a CPU LLVM runtime module not yet called, without imports) made again from its
    IR by `strip_ir`; `module` itself where that does not apply or its IR could not be loaded
    back (said in the compile log's notes)."""
    if module.kind != "llvm" or list(module.imports):
        return module
    text = strip_ir(module.inspect_source("ll"))
    if text is None:
        note("debug_info", "kept (IR the strip does not handle)")
        return module
    fd, path = tempfile.mkstemp(prefix="graphad-", suffix=".ll")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return tvm.runtime.load_module(path)  # parsed now; JIT-compiled on the first call
    except OSError as e:  # no room to write it: the module as TVM built it
        note("debug_info", f"kept ({type(e).__name__}: {e})")
        return module
    except RuntimeError as e:  # LLVM would not parse the rewrite (TVM's InternalError): a bug here
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        note("debug_info", f"kept ({last})")
        _warn_once(last)
        return module
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


_WARNED = False


def _warn_once(reason: str) -> None:
    """Say once per process that a rewritten module did not parse (its results are right: the
    module TVM built runs instead; a graphad bug to report)."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        from ..errors import warn_at_user_line
        warn_at_user_line(f"graphad: a kernel module rewritten without debug information did not parse "
                          f"({reason}); the module as TVM built it runs instead (same results, slower to "
                          f"compile). This is a graphad bug: please report it with the function that led here.")
