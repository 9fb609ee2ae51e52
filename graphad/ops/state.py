"""MindSpore's state ops: `assign`, `assign_add`, `assign_sub` on Parameters.

Eagerly they write the Parameter's value; inside gd.jit, grad, value_and_grad, vjp (and Cells
called in them) they are functionalized like `Parameter.set_data`: the graph returns the new value
and the runtime writes it into the Parameter after the call (graphad/prims/trace.py, `assign`).
Each returns the Parameter, whose later reads see the new value.
"""
from __future__ import annotations

from ..errors import GraphadError
from ..parameter import Parameter
from ..prims import lax


def _check(variable) -> Parameter:
    if not isinstance(variable, Parameter):
        raise GraphadError(f"the variable must be a Parameter, got a {type(variable).__name__} "
                           f"(tensors are values: compute a new one instead)")
    return variable


def assign(variable, value):
    """variable := value (value broadcast to the Parameter's shape, cast to its dtype)."""
    p = _check(variable)
    if hasattr(value, "shape"):
        v = value
    else:
        # a Python number made the Parameter's dtype at once (0.1 itself for a float64 one, not
        # 0.1 rounded to float32 and widened), but a complex one for a real Parameter stays
        # complex, for set_data's refusal
        complex_into_real = isinstance(value, complex) and not p.dtype.is_complex
        v = lax.as_tensor(value, None if complex_into_real or not lax.is_scalar(value) else p.dtype)
    src = getattr(v, "weak_src", None)
    if src is not None and not (src.dtype.is_complex and not p.dtype.is_complex):
        from ..prims.lax.core import _cast_operand
        v = _cast_operand(v, p.dtype)  # a jit's weak number: its exact value, cast once
    if tuple(v.shape) != tuple(p.shape):
        v = lax.broadcast_to(v, tuple(p.shape))
    return p.set_data(v)


def assign_add(variable, value):
    """variable := variable + value."""
    p = _check(variable)
    return assign(p, lax.add(p, value))


def assign_sub(variable, value):
    """variable := variable - value."""
    p = _check(variable)
    return assign(p, lax.sub(p, value))
