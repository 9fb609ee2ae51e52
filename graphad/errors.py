"""Exception hierarchy of graphad.

Every error a user can provoke is a `GraphadError`. Messages name the op, the shapes and dtypes
involved and, where a node or a traced call is at fault, the user's source line (`file:line`).
"""
from __future__ import annotations


class GraphadError(Exception):
    """Base class of every error graphad raises on bad input."""


class ShapeError(GraphadError, ValueError):
    """A shape rule rejected its operands (mismatched, non-broadcastable, bad axis...)."""


class DTypeError(GraphadError, TypeError):
    """An operand has a dtype the op cannot take."""


class IntegerOverflowError(DTypeError, OverflowError):
    """A value does not fit the integer dtype it is converted to (an int32 tensor plus the integer
    2**40, uint64 data above int64's range), where a cast would wrap it silently; an OverflowError
    too, as NumPy 2 and JAX raise for a Python integer in arithmetic."""


class IndexOutOfRangeError(GraphadError, IndexError):
    """A gather or scatter index (`take`, `x[idx]`, `index_add`, their gradients) outside [-n, n)
    for an axis of length n: raised by the interpreter and, at run time, by compiled kernels on
    the CPU (lowering/index_check.py); an IndexError too, as NumPy raises."""


class TraceError(GraphadError):
    """Tracing a Python function failed (data-dependent control flow, escaped tracer...)."""


class TransformError(GraphadError, ValueError):
    """A transformation was called with arguments it cannot honour (bad grad_position...)."""


class ArgumentError(GraphadError, TypeError, ValueError):
    """An op's argument is of a kind or value the op cannot take, found by Python or NumPy while
    the op read it (an axis given as a tensor, a string where a number goes). The message names
    the op, its operands, Python's own error and the user's line; it is still a TypeError and a
    ValueError, so code catching what Python raised before catches it."""


class VerifyError(GraphadError):
    """The IR verifier found a malformed graph."""


class IRParseError(GraphadError):
    """Textual IR could not be parsed; carries the 1-based line and column."""

    def __init__(self, message: str, line: int, column: int, source_name: str = "<ir>"):
        self.line = line
        self.column = column
        self.source_name = source_name
        self.bare_message = message
        super().__init__(f"{source_name}:{line}:{column}: {message}")


class CompileError(GraphadError):
    """Lowering or compiling a graph for a target failed."""


class ArtifactError(GraphadError):
    """An AOT artifact or cache entry is truncated, tampered with or incompatible."""


class ResourceError(GraphadError, MemoryError):
    """A graph needs more memory than graphad's limit allows (GRAPHAD_MAX_BYTES, by default a
    fraction of the physical memory); raised before compiling or running it, naming the sizes."""


def retold(e: GraphadError, message: str) -> GraphadError | None:
    """An error of `e`'s class saying `message` instead (a location or context added on the way
    out), or None when that class takes other arguments than a message: then re-raise `e`."""
    try:
        return type(e)(message)
    except TypeError:
        return None


def warn_at_user_line(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Issue a warning attributed to the innermost stack frame outside the graphad package (the
    user's line that led here, however deep inside graphad the cause is), as errors name it."""
    import os
    import sys
    import warnings
    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith((pkg, "<frozen")):
        f = f.f_back
    if f is None:  # called from graphad's own threads with no user frame: the caller's line
        warnings.warn(message, category, stacklevel=2)
        return
    g = f.f_globals
    # no module_globals: for `python -c` code, warn_explicit would ask __main__'s loader (the
    # builtin importer) for its source and raise ImportError
    warnings.warn_explicit(message, category, f.f_code.co_filename, f.f_lineno, module=g.get("__name__"),
                           registry=g.setdefault("__warningregistry__", {}))
