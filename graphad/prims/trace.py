"""The trace stack, tracer tensors and `bind`, the single entry point of every primitive application.

It lives in the prims layer (below the passes, which replay graphs through a `Trace`, and below
the front end, which re-exports it as graphad.frontend.trace): rules, passes and user code all bind
through it, and the eager path runs the reference kernels (`ir.interpret.run_impl`).

`bind(prim, args, attrs)` runs eagerly on concrete Tensors (NumPy reference kernels) when no trace
is active; otherwise it records a node into the innermost active trace. Operands that belong to
an outer trace, and concrete Tensors (closed-over values, Parameters), are lifted into the
innermost trace as extra inputs ("captures"), never baked in as constants. A tracer whose trace
has ended is rejected (escaped tracer).

State: `assign(param, value)` (what `Parameter.set_data` does under a trace) records the new
value in the innermost trace instead of writing it; later reads of the Parameter in that trace
(or in traces nested inside it) see the new value. `trace_to_graph(..., state=[])` returns the
assigned values as extra outputs after the function's own and lists the Parameters they belong
to, so the caller can apply them (the runtime writes them into the Parameters after a call; a
transformation re-assigns them in its enclosing trace). A trace whose caller does not take state
refuses an assignment with a TraceError rather than dropping it.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any

import numpy as np

from ..errors import GraphadError, TraceError
from ..ir.builder import GraphBuilder
from ..ir.core import Graph, Loc, TensorType, Value
from ..ir.interpret import run_impl  # noqa: F401  (bind's eager path; re-exported for the passes)
from ..tensor import Tensor, TensorMethods

# with the separator: a user's file named graphad_demo.py beside the package is not graphad's
_PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


class _TraceState(threading.local):
    """Per-thread trace stack: a function traced in one thread must not record the operations
    that another thread runs meanwhile (nor see its trace as active)."""

    def __init__(self):
        self.stack: list["Trace"] = []
        self.assigning = 0  # traces on the stack with pending assignments (reads check only then)


_STATE = _TraceState()


@functools.cache
def _scripts_dir() -> str:
    """Where console-script launchers live (the `graphad` command itself is not the user's code);
    looked up on first use: importing sysconfig's data costs every `import graphad` a few ms."""
    import sysconfig
    return os.path.join(sysconfig.get_path("scripts"), "")


def user_loc() -> Loc | None:
    """The innermost stack frame outside the graphad package (the user's file:line); a console
    script's launcher (a file without `.py` in the scripts directory, such as `graphad`'s own) is
    not the user's code either."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        # (a .py file or a pseudo-file such as "<stdin>" is the user's without looking the
        # scripts directory up: sysconfig's import is a few ms of a fresh process's first trace)
        if (not fn.startswith((_PKG_DIR, "<frozen"))
                and (fn.endswith(".py") or fn.startswith("<") or not fn.startswith(_scripts_dir()))):
            return Loc(_short_path(fn), f.f_lineno)
        f = f.f_back
    return None


def _short_path(path: str) -> str:
    # relative to the working directory as it is now (a program may change it)
    return _relative_to(path, os.getcwd())


@functools.lru_cache(maxsize=1024)
def _relative_to(path: str, cwd: str) -> str:
    """`path` relative to `cwd` where it lies below it, else as it is. Kept per (path, directory):
    every operation the user calls asks for its line, and relpath cost about 40 us of each."""
    try:
        rel = os.path.relpath(path, cwd)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


class Trace:
    """One level of tracing: a GraphBuilder plus the table of lifted (captured) operands."""

    def __init__(self, name: str = "main", allow_captures: bool = True):
        self.builder = GraphBuilder(name)
        self.level = len(_STATE.stack)
        self.capture_objs: list[Any] = []       # the outer objects, in input order
        self.capture_vals: list[Value] = []
        self._capture_index: dict[int, int] = {}
        self.allow_captures = allow_captures
        self.loc_override: Loc | None = None
        self.active = False
        # id(target) -> (target, new value, the user's line): Parameter assignments in this trace
        self.assigns: dict[int, tuple] = {}
        # id(tracer) -> (tracer, object): the argument tracers that stand for a Parameter passed
        # to the traced function (origin_of), so that a transformation traced inside it can tell
        # the Parameter's own value from a copy (grad's weights passed as arguments)
        self.origins: dict[int, tuple] = {}

    def __enter__(self) -> "Trace":
        self.level = len(_STATE.stack)
        _STATE.stack.append(self)
        self.active = True
        return self

    def __exit__(self, *exc):
        popped = _STATE.stack.pop()
        assert popped is self, "trace stack corrupted"
        self.active = False
        if self.assigns:
            _STATE.assigning -= 1

    def new_arg(self, type: TensorType, name: str | None = None) -> "Tracer":
        return Tracer(self.builder.add_input(type, name), self)

    def to_value(self, x) -> Value:
        """The Value standing for operand `x` in this trace, lifting it as a capture if needed."""
        if isinstance(x, Tracer):
            if x._trace is self:
                return x.value
            if not x._trace.active:
                raise TraceError(f"a traced value escaped the transformation that created it "
                                 f"({x.value.type}); return it instead of storing it")
        elif not isinstance(x, Tensor):
            raise TraceError(f"cannot use {type(x).__name__} as a tensor operand")
        elif _STATE.assigning:
            assigned = _assigned_value(x, self)
            if assigned is not None and assigned._trace is self:
                return assigned.value
            # assigned in an enclosing trace: captured below as the Parameter itself (the enclosing
            # trace reads the assigned value when it binds this graph's captures), so that a
            # gradient with weights=[param] finds it; captured as the assigned tracer, the
            # Parameter was never read here and its gradient came out as silent zeros
        key = id(x)
        idx = self._capture_index.get(key)
        if idx is not None:
            return self.capture_vals[idx]
        if not self.allow_captures:
            raise TraceError(f"internal: pass trace {self.builder.name} tried to capture {type(x).__name__}")
        name = getattr(x, "name", None) if isinstance(x, Tensor) else None
        v = self.builder.add_input(TensorType(x.shape, x.dtype), name if isinstance(name, str) else None)
        self._capture_index[key] = len(self.capture_objs)
        self.capture_objs.append(x)
        self.capture_vals.append(v)
        mark = getattr(x, "_mark_captured", None)  # a Parameter: its Cell's attribute rule (nn/cell.py)
        if mark is not None:
            mark()
        return v

    def loc(self) -> Loc | None:
        return self.loc_override if self.loc_override is not None else user_loc()


class Tracer(TensorMethods):
    """A symbolic tensor: a Value of the graph being built by `trace`."""

    __slots__ = ("value", "_trace")  # `_trace`: a tensor method is named trace

    def __init__(self, value: Value, trace: Trace):
        self.value = value
        self._trace = trace

    @property
    def shape(self) -> tuple:
        return self.value.type.shape

    @property
    def dtype(self):
        return self.value.type.dtype

    @property
    def type(self) -> TensorType:
        return self.value.type

    def _concrete_error(self, what: str):
        loc = user_loc()
        where = f" at {loc}" if loc else ""
        if not self._trace.active:  # kept past its transformation (a global, a list): no value ever
            raise TraceError(f"{what} of a traced value ({self.value.type}){where}: it was kept after its "
                             f"transformation ended (an escaped tracer, stored in a global or a container "
                             f"while tracing); return the value from the transformed function instead")
        raise TraceError(
            f"{what} of a traced value ({self.value.type}){where}: Python control flow or conversions "
            f"that depend on tensor values cannot be traced into a graph; branch with gd.cond / gd.switch "
            f"(or ops.where for one choice per element), loop with gd.while_loop / gd.fori_loop / gd.scan, "
            f"or pass the value as a static argument")

    def __bool__(self):
        self._concrete_error("bool()")

    def __float__(self):
        self._concrete_error("float()")

    def __int__(self):
        self._concrete_error("int()")

    def __index__(self):
        self._concrete_error("use as an int (a shape, a size, an axis or an index)")

    def __array__(self, *a, **k):
        self._concrete_error("conversion to NumPy")

    def asnumpy(self):
        self._concrete_error("asnumpy()")

    numpy = asnumpy

    def item(self):
        self._concrete_error("item()")

    def tolist(self):
        self._concrete_error("tolist()")

    def __repr__(self):
        return f"Tracer({self.value.type}, level={self._trace.level})"


class WeakTracer(Tracer):
    """A Python number passed to `gd.jit` as an ordinary argument, traced weakly typed (as JAX's
    jit does): the graph input `weak_src` holds it exactly (float64, complex128 or int64), while
    the tracer itself is its default-dtype view (float32, complex64 or int64), what it is where it
    meets no tensor. Next to a tensor operand the number takes that tensor's dtype as a literal
    would (`lax.core._operands` casts `weak_src` straight to it): `x * s` of a float64 `x` and
    `s = 0.1` multiplies by 0.1 in float64, not by 0.1 rounded to float32 first. An elementwise op
    of weak numbers and literals alone (`s * 2`, `-s`, `s + t`) computes on the exact values and
    its float or complex result is weak too (`bind`), as Python arithmetic on the numbers would
    be (an integer result is an ordinary int64 value); other ops (reductions, reshapes) take the
    view. `narrowed` records the integer dtypes narrower than int64 a weak integer was cast to,
    with the user's line, so that a call whose number does not fit is refused as eager
    arithmetic refuses it, not wrapped."""

    __slots__ = ("weak_src", "narrowed", "operand")

    def __init__(self, value: Value, trace: Trace, weak_src: Tracer):
        super().__init__(value, trace)
        self.weak_src = weak_src
        self.narrowed: list = []
        self.operand = False  # a Python number handed to cond, checkpoint, vjp... (not jit's argument)

    def __repr__(self):
        return f"WeakTracer({self.value.type}, level={self._trace.level})"

    def _concrete_error(self, what: str):
        if not self._trace.active:
            super()._concrete_error(what)
        loc = user_loc()
        where = f" at {loc}" if loc else ""
        kind = {"i": "an int", "f": "a float", "c": "a complex"}.get(self.weak_src.dtype.kind, "a number")
        if self.operand:
            raise TraceError(
                f"{what} of {kind} passed as an operand ({self.value.type}, a Python number given to a "
                f"transformation or a control-flow function as an argument){where}: such a number is traced "
                f"(weakly typed, as JAX does), so its value is not known inside; a number that sets a shape, "
                f"a size, an axis, a slice or Python control flow must be a constant there: close over it "
                f"(read it from the enclosing scope) instead of passing it")
        raise TraceError(
            f"{what} of {kind} that gd.jit traces ({self.value.type}, a Python number passed as an argument){where}: "
            f"jit traces its Python-number arguments (weakly typed, as JAX does), so their values are not "
            f"known while it traces; a number that sets a shape, a size, an axis, a slice or Python "
            f"control flow must be static: name it in gd.jit's static_argnums or static_argnames")

    def __len__(self):
        self._concrete_error("len()")


def weak_number(src: Tracer, dtype) -> WeakTracer:
    """The weakly typed view (of `dtype`, the number kind's default) of a traced Python number
    held exactly by the graph input `src`."""
    from .elementwise import astype
    view = src if src.dtype is dtype else astype.bind(src, dtype=dtype.name)
    return WeakTracer(view.value, view._trace, src)


def weak_again(src: Tracer, outer: WeakTracer) -> WeakTracer:
    """The number `outer` (a WeakTracer of an enclosing trace) inside an inner trace whose input
    `src` holds its exact value (outer.weak_src's type): weakly typed there too. A cast to a
    narrower integer is recorded on `outer`'s list, checked when the enclosing jit is called."""
    w = weak_number(src, outer.dtype)
    w.narrowed = outer.narrowed
    w.operand = outer.operand if isinstance(outer, WeakTracer) else True  # (a NumberView: not jit's)
    return w


def weak_again_at(tracers, outer: dict) -> list:
    """`tracers` with each one at a key of `outer` ({index: WeakTracer of an enclosing trace})
    weakly typed again (weak_again)."""
    if not outer:
        return list(tracers)
    return [weak_again(t, outer[k]) if k in outer else t for k, t in enumerate(tracers)]


def check_weak_value(v, uses, who: str, verb: str) -> None:
    """Refuse the weak number `v` (a Python int or float) that does not fit one of the integer
    dtypes in `uses` ([(dtype, user's line)], what it was cast to); `who` names it."""
    import numpy as np
    from ..errors import IntegerOverflowError
    for d, loc in uses:
        info = np.iinfo(d.np)
        if isinstance(v, float):
            fits = bool(np.isfinite(v)) and info.min <= v < -float(info.min)  # (its truncation fits)
            kind = "float"
        else:
            fits = info.min <= v <= info.max
            kind = "int"
        if not fits:
            where = f" at {loc}" if loc else ""
            fix = (f"pass it as an int64 tensor (gd.Tensor({v}, gd.int64)) or make it a static argument"
                   if kind == "int" else "storing it would silently change it")
            raise IntegerOverflowError(
                f"{who} is the Python {kind} {v!r}, which is traced weakly typed and {verb} an {d.name} "
                f"tensor{where}, but is out of bounds for {d.name} ([{info.min}, {info.max}]); {fix}")


class NumberView:
    """A Python number of a call (not jit's argument: its value is known) as `weak_again`'s
    `outer`: the dtype of its view, and the narrowings its uses record, checked against the
    number once the function is traced (check_weak_value)."""

    __slots__ = ("dtype", "narrowed")

    def __init__(self, exact_dtype):
        self.dtype = weak_view_dtype(exact_dtype)
        self.narrowed: list = []


def is_weak_number(x) -> bool:
    """Whether `x` is a Python number that is weakly typed where it meets a tensor (an int, float or
    complex; a bool is not: it is a bool)."""
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def exact_dtype(x):
    """The dtype holding the Python number `x` exactly: int64, float64 or complex128."""
    from .. import dtypes as dt
    return dt.complex128 if isinstance(x, complex) else dt.float64 if isinstance(x, float) else dt.int64


def exact_numbers(leaves: list) -> dict:
    """Replace, in `leaves`, each Python int, float or complex (not a bool) by a Tensor holding it
    exactly (int64, float64, complex128) and each jit's WeakTracer by its exact input; return
    {index: outer} for weak_again_at (the WeakTracer, or a NumberView)."""
    from ..tensor import Tensor
    outer = {}
    for i, x in enumerate(leaves):
        if type(x) is WeakTracer:
            outer[i], leaves[i] = x, x.weak_src
        elif is_weak_number(x):
            d = exact_dtype(x)
            leaves[i] = Tensor(x, d)
            outer[i] = NumberView(d)
    return outer


def check_numbers(leaves: list, outer: dict, who: str) -> None:
    """check_weak_value for the NumberViews of `outer` (exact_numbers), once traced."""
    for i, w in outer.items():
        if type(w) is NumberView and w.narrowed:
            check_weak_value(leaves[i]._data.item(), w.narrowed, who, "meets")


class ExactWeak(Tracer):
    """A weakly typed number's exact value as the operand of an elementwise op of such numbers
    and literals alone (`lax.core._weak_alone` makes it): `bind` makes that op's float or complex
    result weak too. Only operands made so count: the same value used as an ordinary tensor (a
    Parameter assigned the number) is not weak."""

    __slots__ = ()


# the view dtype of a weak result's exact dtype: its kind's default. Not for integers: a weak int
# computed in the graph (`n * 3`) could not be checked at the call against a narrower integer
# tensor it meets (an input's value can: narrowed), so it is an ordinary int64 value
_WEAK_VIEW = {"float64": "float32", "complex128": "complex64"}


def _weak_results(prim, args, vals: list) -> bool:
    """Whether `prim` applied to `args` computes a weakly typed result: an elementwise op (not a
    cast) of ExactWeak operands and constants only (and bool conditions), at least one ExactWeak."""
    if "elementwise" not in prim.traits or prim.name == "astype":
        return False
    seen = False
    for a, v in zip(args, vals):
        if type(a) is ExactWeak:
            seen = True
        elif v.type.dtype.is_bool:  # a select's condition: it takes no part in the result's dtype
            continue
        elif v.node is None or v.node.prim.name not in ("constant", "full"):
            return False
    return seen


def weak_view_dtype(d):
    """The default dtype of a weak number's kind (its view), from its exact dtype: float32 for
    float64, complex64 for complex128, int64 for int64."""
    from .. import dtypes as dt
    return dt.as_dtype(_WEAK_VIEW.get(d.name, d.name))


def _assigned_value(x, tr: Trace):
    """The value last assigned to `x` in `tr` or a trace enclosing it, or None."""
    stack = _STATE.stack
    for t in reversed(stack[:tr.level + 1] if tr.active else stack):
        hit = t.assigns.get(id(x))
        if hit is not None:
            return hit[1]
    return None


def assign(target, value) -> None:
    """Record `target := value` in the innermost trace (functionalized state, see the module
    docstring); `value` is a Tracer or Tensor of target's shape and dtype."""
    tr = _STATE.stack[-1]
    # a Tracer of this trace now: reading `value` later (another Parameter, assigned again
    # meanwhile) must not change what was assigned here
    value = Tracer(tr.to_value(value), tr)
    if not tr.assigns:
        _STATE.assigning += 1
    tr.assigns.pop(id(target), None)  # re-inserted last: outputs follow the order of last assignment
    tr.assigns[id(target)] = (target, value, tr.loc())


def set_origin(tracer: "Tracer", obj) -> None:
    """Record that the argument `tracer` of its trace stands for the object `obj` (a Parameter)."""
    tracer._trace.origins[id(tracer)] = (tracer, obj)


def origin_of(x):
    """The object (a Parameter) an argument tracer of a trace under way stands for, or None."""
    if not isinstance(x, Tracer):
        return None
    hit = x._trace.origins.get(id(x))
    return hit[1] if hit is not None and hit[0] is x else None


def current_trace() -> Trace | None:
    stack = _STATE.stack
    return stack[-1] if stack else None


def is_tracing() -> bool:
    return bool(_STATE.stack)


def bind(prim, args, attrs: dict[str, Any]):
    """Apply `prim` to `args` (Tensors/Tracers) with `attrs`; returns one result or a tuple."""
    stack = _STATE.stack
    if stack:
        tr = stack[-1]
        vals = [tr.to_value(a) for a in args]
        outs = tr.builder.emit(prim, vals, attrs, tr.loc())
        res = [Tracer(v, tr) for v in outs]
        if any(type(a) is ExactWeak for a in args) and _weak_results(prim, args, vals):
            res = [weak_number(t, weak_view_dtype(t.dtype)) if t.dtype.name in _WEAK_VIEW else t for t in res]
    else:
        for a in args:
            if isinstance(a, Tracer):
                raise TraceError(f"{prim.name}: a traced value ({a.value.type}) was used after its "
                                 f"transformation ended (escaped tracer)")
            if not isinstance(a, Tensor):
                raise TraceError(f"{prim.name}: operand of type {type(a).__name__} is not a Tensor")
        in_types = [TensorType(a.shape, a.dtype) for a in args]
        try:
            out_types = prim.infer(in_types, attrs, None)
        except GraphadError:  # locate the user's line only on the error path (a frame walk costs)
            out_types = prim.infer(in_types, attrs, user_loc())
        res = run_impl(prim, [a._data for a in args], attrs, out_types)
        res = [Tensor._wrap(r, t.dtype) for r, t in zip(res, out_types)]
    return res[0] if prim.num_outputs == 1 else tuple(res)


def trace_to_graph(fn, in_types: list[TensorType], name: str = "main", arg_names: list[str] | None = None,
                   wrap_args=None, state: list | None = None, what: str | None = None):
    """Trace `fn(*tracers)` where the tracers have `in_types`.

    `wrap_args(tracers) -> positional args` lets callers rebuild pytrees. Returns
    (graph, raw_output, captures): the graph's inputs are the tracers followed by the captured
    operands, its outputs the flattened tensor leaves of `raw_output` (see `flatten_outputs`).
    With a `state` list, the values fn assigned to Parameters follow those outputs and the
    Parameters are appended to `state`; without one an assignment is a TraceError (naming
    `what`, the transformation, and the user's line).
    """
    from .. import pytree
    outermost = not _STATE.stack
    with Trace(name) as tr:
        tracers = [tr.new_arg(t, (arg_names[i] if arg_names else None)) for i, t in enumerate(in_types)]
        args = wrap_args(tracers) if wrap_args is not None else tracers
        try:
            raw = fn(*args)
        except RecursionError as e:
            if not outermost:  # said once, by the outermost trace, where the stack has unwound
                raise
            raise TraceError(_recursion_message(e, what or name)) from None
        leaves, treedef = pytree.flatten(raw)
        out_vals = [_output_value(tr, leaf, i, what or name) for i, leaf in enumerate(leaves)]
        if tr.assigns:
            if state is None:
                target, _, loc = next(iter(tr.assigns.values()))
                where = f" at {loc}" if loc else ""
                raise TraceError(
                    f"{getattr(target, 'name', 'a Parameter')!r} is assigned (set_data/ops.assign){where} inside "
                    f"{what or name}, which cannot carry state out: assignments are functionalized in gd.jit, "
                    f"grad, value_and_grad and vjp (and Cells called in them); assign outside {what or 'it'}")
            for target, value, _ in tr.assigns.values():
                out_vals.append(tr.to_value(value))
                state.append(target)
    g = tr.builder.finish(out_vals)
    return g, treedef, list(tr.capture_objs)


def _recursion_message(e: RecursionError, what: str) -> str:
    """What a RecursionError while tracing means, with the user's line that recursed most (the
    recursive call): under graph mode both branches of an `if` on a traced value are traced, so
    a recursive function whose base case tests a tensor recurses without end."""
    counts: dict = {}
    tb = e.__traceback__
    while tb is not None:  # iteratively: the traceback is as deep as the recursion was
        fn = tb.tb_frame.f_code.co_filename
        if not fn.startswith((_PKG_DIR, "<frozen")):
            key = (fn, tb.tb_lineno)
            counts[key] = counts.get(key, 0) + 1
        tb = tb.tb_next
    where = ""
    if counts:
        (fn, line), _ = max(counts.items(), key=lambda kv: kv[1])
        where = f" at {_short_path(fn)}:{line}"
    return (f"{what}: maximum recursion depth exceeded while tracing{where}: a recursive function whose "
            f"base case tests a traced value cannot be traced (both branches of an `if` on a tensor are traced, "
            f"so the recursion never reaches its base case); loop with gd.while_loop / gd.fori_loop, or make "
            f"the test depend on Python values (a static argument)")


def _output_value(tr: Trace, leaf, i: int, what: str = "the traced function") -> Value:
    if isinstance(leaf, (Tracer, Tensor)):
        return tr.to_value(leaf)
    if isinstance(leaf, (int, float, complex, bool, np.number, np.ndarray)):
        from . import lax as ops
        with _Reenter(tr):
            return tr.to_value(ops.asarray_in_trace(leaf))
    kind = type(leaf).__name__
    raise TraceError(f"{what}: output {i} of the traced function is {'an' if kind[:1].lower() in 'aeiou' else 'a'} "
                     f"{kind} ({_short_repr(leaf)}), not a tensor or a Python number{at_user()}")


def at_user() -> str:
    """` (at file:line)` of the user's frame that called into graphad, or ""."""
    loc = user_loc()
    return f" (at {loc})" if loc else ""


def _short_repr(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class _Reenter:
    """Temporarily make `tr` the innermost trace again (to emit constants for outputs)."""

    def __init__(self, tr: Trace):
        self.tr = tr

    def __enter__(self):
        _STATE.stack.append(self.tr)
        self.tr.active = True

    def __exit__(self, *exc):
        _STATE.stack.pop()


def inline_graph(graph: Graph, args: list) -> list:
    """Emit `graph`'s nodes into the innermost trace with `args` bound to its inputs; returns output tracers."""
    tr = _STATE.stack[-1]
    if len(args) != len(graph.inputs):
        raise GraphadError(f"internal: inlining {graph.name} with {len(args)} arguments for {len(graph.inputs)} inputs")
    env: dict[Value, Value] = {}
    for v, a in zip(graph.inputs, args):
        val = tr.to_value(a)
        if val.type != v.type:
            raise GraphadError(f"internal: inlining {graph.name}: argument {val.type} for input {v.type}")
        env[v] = val
    emit = tr.builder.emit
    for n in graph.nodes:
        outs = emit(n.prim, [env[v] for v in n.inputs], n.attrs, n.loc)
        for old, new in zip(n.outputs, outs):
            env[old] = new
    return [Tracer(env[v], tr) for v in graph.outputs]
