"""Error context for graphad.ops: argument errors name the op, its operands and the user's line.

Every public function of graphad.ops is wrapped by `with_context`: a GraphadError raised while the
function normalises its arguments (before any primitive's shape rule, which locates its own
errors) is re-raised as `op(f32[3,4], axis=5): message (at file:line)`.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from ... import dtypes as dt
from ...errors import ArgumentError, GraphadError
from ..registry import located


def _describe(x) -> str:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is not None and dtype is not None and hasattr(dtype, "short"):
        return f"{dtype.short}[{','.join(str(s) for s in shape)}]"
    if isinstance(x, np.ndarray):  # as the tensor it becomes, where graphad has its dtype
        try:
            short = dt.as_dtype(x.dtype).short
        except (GraphadError, TypeError, ValueError, KeyError):
            short = str(x.dtype)
        return f"ndarray {short}[{','.join(str(s) for s in x.shape)}]"
    if isinstance(x, (list, tuple)) and len(x) <= 8:
        inner = ", ".join(_describe(e) for e in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, slice):  # (its bounds may be tensors: described as operands are)
        parts = [_describe(p) if p is not None else "" for p in (x.start, x.stop, x.step)]
        return ":".join(parts[:2] if x.step is None else parts)
    if isinstance(x, (int, float, bool, str, type(None))):
        return repr(x)
    if isinstance(x, dt.DType):
        return repr(x.name)
    return type(x).__name__


# How many wrapped op calls are under way in this thread: an op written with others (softmax with
# max, clip with maximum, assign with broadcast_to) names itself and its own operands in an error,
# not the inner op the user never called.
_ACTIVE = threading.local()


def _not_a_parameter(result, args):
    """`result` of an eager op call, with a Parameter operand that came back as it is (a no-op:
    `p.astype(p.dtype)`, `p[:]`, `concat([p])`, `reshape(p, p.shape)`) replaced by a copy of its
    values: a result must not follow the Parameter's later updates (`old = w.astype(w.dtype);
    step(); w - old` gave 0 eagerly, its value under jit, as NumPy's copies give; a mutation
    trial). Traced, the operand is the Parameter's value at that point already (no copy: a copy
    would be a constant of the graph). Checked on every outermost eager op call: the trace is asked
    only about a Parameter that came back."""
    from ...parameter import Parameter
    from ...tensor import Tensor
    if isinstance(result, (tuple, list)):
        fixed = [_not_a_parameter(r, args) for r in result]
        return result if all(a is b for a, b in zip(fixed, result)) else type(result)(fixed)
    if isinstance(result, Parameter) and any(result is a or isinstance(a, (list, tuple)) and any(result is x for x in a)
                                             for a in args):
        from ..trace import is_tracing
        if not is_tracing():
            return Tensor(_raw=result._data.copy(), _dtype=result._dtype)
    return result


def with_context(fn, name: str | None = None, *, returns_operand: bool = False):
    """Wrap a graphad.ops function so its argument errors carry op, operands and location (the
    outermost wrapped op under way names the error: see _ACTIVE); eagerly, a Parameter operand
    it returns as it is comes back as a copy (`_not_a_parameter`), unless `returns_operand` (the
    state ops, which return the Parameter they assign)."""
    op = name or fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        depth = getattr(_ACTIVE, "depth", 0)
        _ACTIVE.depth = depth + 1
        try:
            result = fn(*args, **kwargs)
            return result if depth or returns_operand else _not_a_parameter(result, args)
        except GraphadError as e:
            prim = getattr(e, "graphad_primitive", None)
            if depth or (getattr(e, "graphad_located", False) and (prim is None or prim[0] == op)):
                raise
            if prim is not None:  # a primitive the op is written with: the op, then the step that failed
                name, detail, loc = prim
                raise _located(type(e), op, args, kwargs, f"{name}: {detail}", loc) from None
            raise _located(type(e), op, args, kwargs, str(e)) from None
        except (TypeError, ValueError) as e:  # (an IndexError or KeyError is a bug of graphad's own)
            if depth:
                raise
            # Python or NumPy refused an argument while the op read it (an axis given as a tensor,
            # a string for a number): still an error naming the op, its operands and the line
            raise _located(ArgumentError, op, args, kwargs, f"{type(e).__name__}: {e}") from e
        finally:
            _ACTIVE.depth = depth
    wrapper.__wrapped_op__ = True
    return wrapper


def _located(cls, op: str, args, kwargs, msg: str, loc=None) -> GraphadError:
    """A `cls` error `op(operands): msg (at the user's line)`, marked located."""
    if loc is None:
        from ..trace import user_loc
        loc = user_loc()
    desc = ", ".join([_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()])
    where = f" (at {loc})" if loc else ""
    err = cls.__new__(cls)
    Exception.__init__(err, f"{op}({desc}): {msg}{where}")
    return located(err)


def wrap_module(mod, namespace: dict, *, returns_operand: bool = False) -> None:
    """Wrap every public function defined in `mod`, in `mod` and in `namespace` (the ops package);
    `returns_operand`: see `with_context`."""
    import inspect
    wrapped: dict[int, object] = {}  # an alias (permute = transpose) gets the same wrapper
    names: dict[int, list[str]] = {}  # id -> the namespace's names for it (one pass, not one per function)
    for k, v in namespace.items():
        names.setdefault(id(v), []).append(k)
    for name, obj in list(vars(mod).items()):
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != mod.__name__ \
                or getattr(obj, "__wrapped_op__", False):
            continue
        w = wrapped.get(id(obj))
        if w is None:
            w = wrapped[id(obj)] = with_context(obj, returns_operand=returns_operand)
        setattr(mod, name, w)
        for k in names.get(id(obj), ()):
            if namespace[k] is obj:
                namespace[k] = w
