"""Lazy access to Apache TVM: the only place graphad imports it.

`import graphad` never imports TVM (it takes about 2 s and pulls in torch when installed).
`load_tvm()` imports it on first use, after giving the TVM thread pool one worker per CPU this
process may run on, unless the user already chose with TVM_NUM_THREADS (the pool otherwise
starts half the hardware threads on x86, i.e. a single thread on a 2-vCPU machine).
"""
from __future__ import annotations

import os
import sys

_tvm = None


def default_num_threads() -> int:
    """CPUs this process may run on (the affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def load_tvm():
    """Import and return the `tvm` module (sets TVM_NUM_THREADS first when unset)."""
    global _tvm
    if _tvm is not None:
        return _tvm
    # The pool reads the variable when it starts (first parallel kernel), so setting it here
    # still takes effect when the user imported tvm earlier but has run nothing yet.
    os.environ.setdefault("TVM_NUM_THREADS", str(default_num_threads()))
    # tvm_ffi imports torch eagerly when it is installed (about 1.5 s here) only to convert torch
    # tensors, which graphad never hands to TVM (it passes NumPy buffers through DLPack). Unless
    # the user has imported torch already, hide it while tvm imports; `import torch` works later.
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None
    try:
        import tvm  # also imports tvm.relax and tvm.runtime.vm
    except ImportError as e:  # pragma: no cover - apache-tvm is a declared dependency
        from ..errors import CompileError
        raise CompileError(f"the TVM backend needs apache-tvm 0.27 ({e}); use backend='numpy' instead") from e
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    _tvm = tvm
    return _tvm


def tvm_version() -> str:
    """The installed TVM version string (from the package metadata: no TVM import needed)."""
    try:
        from importlib.metadata import version
        return version("apache-tvm")
    except Exception:  # pragma: no cover
        return str(load_tvm().__version__)
