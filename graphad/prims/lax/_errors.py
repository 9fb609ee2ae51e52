"""Error context for graphad.ops: argument errors name the op, its operands and the user's line.

Every public function of graphad.ops is wrapped by `with_context`: a GraphadError raised while the
function normalises its arguments (before any primitive's shape rule, which locates its own
errors) is re-raised as `op(f32[3,4], axis=5): message (at file:line)`.

It lives in the prims layer (graphad.prims.lax) because the primitives' rules and Tensor's operators
are written with it; graphad.ops re-exports it unchanged (docs/architecture.md ## Layers).
"""
from __future__ import annotations

import functools

from ... import dtypes as dt
from ...errors import GraphadError
from ..registry import located


def _describe(x) -> str:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is not None and dtype is not None and hasattr(dtype, "short"):
        return f"{dtype.short}[{','.join(str(s) for s in shape)}]"
    if isinstance(x, (list, tuple)) and len(x) <= 8:
        inner = ", ".join(_describe(e) for e in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, (int, float, bool, str, type(None), slice)):
        return repr(x)
    if isinstance(x, dt.DType):
        return repr(x.name)
    return type(x).__name__


def with_context(fn, name: str | None = None):
    """Wrap a graphad.ops function so its argument errors carry op, operands and location."""
    op = name or fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GraphadError as e:
            if getattr(e, "graphad_located", False):
                raise
            from ..trace import user_loc
            loc = user_loc()
            desc = ", ".join([_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()])
            where = f" (at {loc})" if loc else ""
            err = type(e).__new__(type(e))
            Exception.__init__(err, f"{op}({desc}): {e}{where}")
            raise located(err) from None
    wrapper.__wrapped_op__ = True
    return wrapper


def wrap_module(mod, namespace: dict) -> None:
    """Wrap every public function defined in `mod`, in `mod` and in `namespace` (the ops package)."""
    import inspect
    wrapped: dict[int, object] = {}  # an alias (permute = transpose) gets the same wrapper
    for name, obj in list(vars(mod).items()):
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != mod.__name__ \
                or getattr(obj, "__wrapped_op__", False):
            continue
        w = wrapped.get(id(obj))
        if w is None:
            w = wrapped[id(obj)] = with_context(obj)
        setattr(mod, name, w)
        for k, v in list(namespace.items()):
            if v is obj:
                namespace[k] = w
