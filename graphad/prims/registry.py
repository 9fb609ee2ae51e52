"""The primitive record and the registry of all primitives.

A `Primitive` is declared once with every rule beside it (DESIGN principle 2):
  shape_rule(*in_types, **attrs) -> TensorType | list[TensorType]
  impl(*arrays, **attrs)         -> ndarray | tuple[ndarray]   (NumPy reference kernel)
  jvp(primals, tangents, outs, **attrs) -> list of output tangents (None = zero)
  vjp(cts, primals, outs, **attrs)      -> list of input cotangents (None = zero)
  batch(args, dims, **attrs)     -> (outs, out_dims); dims[i] is the batch axis of args[i] or None
Rules are written with the op functions (graphad.prims.lax, alias `ops`) on tracers, so derivative
graphs are themselves differentiable.
A primitive that has no derivative says why in `nondiff`; the rule-coverage test accepts nothing else.
The Relax lowering lives in `graphad/lowering/` (TVM is imported only there).
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import DTypeError, GraphadError, ShapeError
from ..ir.core import Loc, TensorType, type_problem
# the table of primitives by name is the IR's (its parser resolves op names there); it is filled here
from ..ir.registry import PRIMITIVES, get_primitive  # noqa: F401


class _LazyOps:
    """`ops.X` resolved on first use: rules call graphad.prims.lax (the op functions graphad.ops
    re-exports), which itself imports the primitive families, so it cannot be imported here."""

    def __getattr__(self, name):
        from . import lax as _ops
        return getattr(_ops, name)


ops = _LazyOps()

def located(err: GraphadError, primitive: str | None = None, detail: str | None = None,
            loc: Loc | None = None) -> GraphadError:
    """Mark an error as already naming its op, operands and location (outer layers pass it on).
    A primitive's shape rule also records its name, its own message and the location, so that an
    op written with that primitive can name itself instead (prims/lax/_errors.py)."""
    err.graphad_located = True
    if primitive is not None:
        err.graphad_primitive = (primitive, detail, loc)
    return err


class Primitive:
    """A primitive operation and all of its rules, complete when constructed.

    Once `register`ed the record is frozen: setting an attribute raises AttributeError, so every
    rule is declared in the constructor call (a rule patched in afterwards was invisible to anything
    that had read the record before, and to the registry's readers in other threads)."""

    _frozen = False

    def __init__(self, name: str, *, shape_rule: Callable, impl: Callable, num_outputs: int = 1,
                 jvp: Callable | None = None, vjp: Callable | None = None, batch: Callable | None = None,
                 nondiff: str | None = None, traits: tuple[str, ...] = (), formula: str = "",
                 nondiff_inputs: tuple[int, ...] = ()):
        self.name = name
        self.shape_rule = shape_rule
        self.impl = impl
        self.num_outputs = num_outputs
        self.jvp = jvp
        self.vjp = vjp
        self.batch = batch
        self.nondiff = nondiff
        self.traits = frozenset(traits)
        self.formula = formula
        # inputs through which no derivative flows (indices, conditions); the rest are differentiable
        self.nondiff_inputs = frozenset(nondiff_inputs)

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError(f"primitive {self.name!r} is registered and immutable: declare its "
                                 f"{name} in its Primitive(...) call")
        object.__setattr__(self, name, value)

    def infer(self, in_types: list[TensorType], attrs: dict[str, Any], loc: Loc | None = None) -> list[TensorType]:
        """Run the shape rule; errors name the op, operand types, attributes and location."""
        try:
            out = self.shape_rule(*in_types, **attrs)
        except (ShapeError, DTypeError) as e:
            raise located(type(e)(self._context(str(e), in_types, attrs, loc)), self.name, str(e), loc) from None
        except GraphadError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as e:
            # malformed attributes (e.g. from hand-written IR): still an error naming the op and operands
            why = f"bad arguments ({type(e).__name__}: {e})"
            raise located(ShapeError(self._context(why, in_types, attrs, loc)), self.name, why, loc) from None
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        for t in out:
            # NumPy, DLPack and the compiled code hold at most 64 axes of int64 extents: a larger
            # result is refused here, naming the op, not by a kernel or TVM with a raw error
            what = type_problem(t.shape)
            if what is not None:
                why = f"the result: {what}"
                raise located(ShapeError(self._context(why, in_types, attrs, loc)), self.name, why, loc)
        return out

    def _context(self, msg: str, in_types, attrs, loc) -> str:
        parts = [str(t) for t in in_types] + [f"{k}={v!r}" for k, v in sorted(attrs.items()) if k != "value"]
        where = f" (at {loc})" if loc else ""
        return f"{self.name}({', '.join(parts)}): {msg}{where}"

    def bind(self, *args, **attrs):
        """Apply the primitive to tensors or tracers (eager, or recorded into the active trace)."""
        from .trace import bind
        return bind(self, args, attrs)

    def __repr__(self):
        return f"<Primitive {self.name}>"


def register(prim: Primitive) -> Primitive:
    PRIMITIVES.add(prim.name, prim)
    object.__setattr__(prim, "_frozen", True)
    return prim
