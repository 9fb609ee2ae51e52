"""Python control flow in graph mode: `if` / `while` / `for` on tensors become gd.cond / gd.while_loop / gd.scan.

`gd.jit` and Cells called under a trace run a *converted* copy of the user's function (as
MindSpore's graph-mode parser and TensorFlow's AutoGraph do). `convert(fn)` reads fn's source
(as `inspect.getsource` would, without its walk over sys.modules: `_code_source`), rewrites each
`if`, `while` and `for` statement of its body into a call of a runtime helper of this module, and
compiles the result with fn's own globals, closure cells and defaults (the converted code keeps
the user's file name and line numbers). The helpers decide *when the statement runs*:

    if t: A else: B      -> if_stmt(t, true_fn, false_fn, ...)    t a tracer: gd.cond, else Python
    while t: A           -> while_stmt(test_fn, body_fn, ...)     t a tracer: gd.while_loop, else Python
    for i in range(a, b) -> for_range(range, (a, b), body_fn, ...) a bound a tracer: a while_loop
    for x in xs          -> for_iter(xs, body_fn, ...)            xs a tracer: gd.scan (see below)

The branches and bodies become local functions that take and return the statement's *live
variables* (the names it assigns): a Python int range or a Python bool test therefore runs as
plain Python (a `for` over `range(3)` is unrolled, exactly as without conversion). `and`, `or`
and `not` in a test become element-wise logic when an operand is a tracer. Values may be
tensors, Python numbers (typed like the other branch, or like what the loop body makes of them)
and tuples/lists/dicts of them; other values pass through when every path leaves them equal.
`return`s under `if`s become one return variable (`_lift_returns`: what follows an `if` that
returns moves into its other branch, as MindSpore's parser does). Every call in converted code
goes through `fn(f)`, which converts the user's own functions and methods too (not graphad's,
the standard library's or installed packages'), as AutoGraph's converted_call does; a lambda
is read from the columns of its own instructions (`_lambda_from_positions`, checked against its
code object), else found in its file's AST by line and parameters (`_lambda_def`), and converted
as a `def`.

Refused (a TraceError naming the user's file:line and the reason) when the test turns out to be a
tracer: `return` inside a loop or mid-block, `yield` / `global` / `nonlocal` inside the statement,
a loop's `else:`, `break` / `continue` inside `try` (elsewhere they become flags: _LowerJumps), a
variable assigned in one branch only (or only inside a loop) and read after it, a loop-carried
value whose shape or dtype changes, a non-tensor value that differs between branches, a
non-scalar condition. Statements that cannot be converted stay Python (their test is checked, so
a tracer there gets the reason rather than the generic `bool()` error). A function
whose source is unavailable (built in, defined in a plain REPL) or that cannot be compiled again
(a generator, name-mangled `__private` names) is returned unchanged.

`for x in xs` over a traced tensor becomes a gd.scan only when its body has no statement with a
side effect on Python objects (a bare call such as `ys.append(y)`, an assignment to an attribute
or a subscript): those loops keep unrolling over the leading axis, as they did before conversion.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import contextvars
import inspect
import itertools
import operator
import os
import re
import textwrap
import threading
import types
import warnings
from collections import Counter

import numpy as np

from .. import dtypes as dt
from .. import pytree
from ..control import api as _cf
from ..errors import GraphadError, TraceError
from ..ir.core import TensorType
from ..prims import lax as ops
from ..prims.trace import Tracer, _short_path, current_trace
from ..tensor import Tensor, TensorMethods

__all__ = ["convert", "if_stmt", "while_stmt", "for_range", "for_iter", "set_loop_options", "loop_defaults"]

_NUMBERS = (bool, int, float, np.bool_, np.integer, np.floating)


# ---------------------------------------------------------------- runtime values


class UnboundVariableError(TraceError, UnboundLocalError):
    """A variable read where the converted code has no value for it: Python's UnboundLocalError,
    and a TraceError naming the variable and the user's line."""


class Undefined:
    """The value of a variable that is not bound at this point (assigned only later, or only on
    another path). Using it raises, as Python's UnboundLocalError would."""

    __slots__ = ("name",)
    graphad_undefined = True  # (read on the type: what a function returns must not be one of these)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"<undefined {self.name}>"

    def _fail(self, *a, **k):
        from ..prims.trace import at_user
        raise UnboundVariableError(f"local variable {self.name!r} is not defined on this path (it is assigned "
                                   f"only in a branch or a loop step that did not assign it: graph mode traces "
                                   f"both branches of a tensor `if` and one step of a tensor loop; assign it "
                                   f"before){at_user()}")

    __bool__ = __call__ = __iter__ = __len__ = __index__ = __float__ = __int__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _fail
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __invert__ = _fail
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _fail
    __getitem__ = __neg__ = __pow__ = __matmul__ = __lt__ = __le__ = __gt__ = __ge__ = _fail

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._fail()


def _traced(x):
    """x as a tracer when it stands for a value of the graph being traced, else None: a tracer,
    or a concrete Tensor (a closed-over tensor, a Parameter) under a trace, which the graph reads
    as an input at every call (deciding on its value now would freeze it into the graph)."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, Tensor):
        tr = current_trace()
        if tr is not None:
            return Tracer(tr.to_value(x), tr)
    return None


def ld(thunk, name: str):
    """The current value of a local variable, or Undefined(name) when it is unbound."""
    try:
        return thunk()
    except NameError:
        return Undefined(name)


# A converted statement whose body raised kept what it had assigned until then only if it ran as
# Python (a tensor `if` traces both branches: then no such values exist). The body function records
# its variables on the exception (`keep`), the runner of a Python-mode statement marks it
# (`_ran_as_python`), and the statement's call site assigns them back before the exception goes on
# (`left`): `while True: acc = acc + next(it)` in a try ended by StopIteration gave the `acc` from
# before the loop, as did every step of a Python `for` whose later step raised (autograph3 trial).

def keep(exc: BaseException, vals: tuple) -> None:
    """Record on `exc` the values a converted statement's variables had when its body raised it."""
    try:
        exc._ag_vals = vals
    except Exception:  # noqa: BLE001 -- an exception object that refuses attributes: none kept
        pass


def _ran_as_python(exc: BaseException, vals: tuple | None = None) -> None:
    """Mark `exc` as raised while a statement ran as Python (with its variables' `vals` when no
    body function recorded them: a loop's test or its iterator raised)."""
    if vals is not None:
        keep(exc, vals)
    try:
        exc._ag_py = True
    except Exception:  # noqa: BLE001 -- (as in keep)
        pass


def _ran_traced(exc: BaseException) -> None:
    """Unmark `exc` as it leaves a statement that was being traced: an inner Python statement's
    mark must not make the traced one's call site assign its branch's values."""
    d = getattr(exc, "__dict__", None)
    if d:
        d.pop("_ag_py", None)


def left(exc: BaseException) -> tuple | None:
    """The values to assign to a statement's variables as `exc` leaves it (None: keep them as they
    were, the statement was traced); each statement's call site takes them once."""
    d = getattr(exc, "__dict__", None)
    if not d:
        return None
    vals, py = d.pop("_ag_vals", None), d.pop("_ag_py", False)
    return vals if py else None


def _is_number(v) -> bool:
    return isinstance(v, _NUMBERS) and not isinstance(v, TensorMethods)


def _ty(v) -> TensorType:
    return TensorType(tuple(v.shape), v.dtype)


def _what(v) -> str:
    if isinstance(v, TensorMethods):
        return f"a tensor {_ty(v)}"
    return f"a {type(v).__name__} ({v!r})" if _is_number(v) else f"a {type(v).__name__}"


def _predicate(t, what: str, where: str):
    """The scalar bool tensor a tensor-dependent test stands for (Python truthiness: x != 0)."""
    if not isinstance(t, TensorMethods):
        return ops.constant(bool(t), dt.bool_)
    if tuple(t.shape) != ():
        raise TraceError(f"{where}: the condition of this `{what}` is a tensor of shape {tuple(t.shape)}; a "
                         f"tensor-dependent `{what}` needs a scalar (reduce it with ops.any / ops.all, or choose "
                         f"per element with ops.where)")
    if t.dtype is not dt.bool_:
        t = ops.not_equal(t, ops.constant(0, t.dtype))
    return t


def _bool(t):
    return t if t.dtype is dt.bool_ else ops.not_equal(t, ops.constant(0, t.dtype))


def _pred(v):
    """A test's operand (a tensor, or a Python value beside a tracer) as a bool tensor."""
    return _bool(v) if isinstance(v, TensorMethods) else ops.constant(bool(v), dt.bool_)


def and_(a_fn, b_fn):
    """`a and b` in a converted test: element-wise when an operand is a tracer."""
    a = a_fn()
    if isinstance(a, Tracer):
        b = b_fn()
        return ops.logical_and(_bool(a), _pred(b))
    if not a:
        return a
    return b_fn()


def or_(a_fn, b_fn):
    """`a or b` in a converted test: element-wise when an operand is a tracer."""
    a = a_fn()
    if isinstance(a, Tracer):
        b = b_fn()
        return ops.logical_or(_bool(a), _pred(b))
    if a:
        return a
    return b_fn()


def not_(a):
    """`not a` in a converted test."""
    if isinstance(a, Tracer):
        return ops.logical_not(_bool(a))
    return not a


def py_test(t, what: str, reason: str, where: str):
    """The test of a statement (or conditional expression) left as Python: a tracer there gets the
    reason it was not converted."""
    if isinstance(t, Tracer):
        how = ("move it out of the branches, or call gd.cond yourself" if what == _IFEXP_WHAT else
               "restructure it (e.g. assign a result variable in both branches) or call gd.cond / gd.while_loop "
               "yourself")
        raise TraceError(f"{where}: this `{what}` depends on a traced value ({_ty(t)}) and cannot be converted to "
                         f"{'gd.while_loop' if what == 'while' else 'gd.cond'} because {reason}; {how}")
    return t


_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_COMPARE_NAMES = {k.__name__: f for k, f in _COMPARE.items()}


def compare(left_fn, ops_: tuple, right_fns: tuple):
    """A chained comparison `a < b < c` in a converted test: `a < b and b < c` with b evaluated
    once, element-wise (logical_and) where a comparison gives a tracer; Python's short circuit
    otherwise (the first false comparison is the result, the operands after it unevaluated)."""
    left = left_fn()
    acc = None
    for name, right_fn in zip(ops_, right_fns):
        right = right_fn()
        r = _COMPARE_NAMES[name](left, right)
        if acc is None:
            acc = r
        elif isinstance(acc, Tracer) or isinstance(r, Tracer):
            acc = ops.logical_and(_pred(acc), _pred(r))
        else:
            acc = r
        if not isinstance(acc, Tracer) and not acc:
            return acc
        left = right
    return acc


def py_range(rng, args, reason: str, where: str):
    if rng is builtins.range:
        for a in args:
            if isinstance(a, Tracer):
                raise TraceError(f"{where}: this `for` loop's range depends on a traced value ({_ty(a)}) and cannot "
                                 f"be converted to a loop node because {reason}; restructure it or call "
                                 f"gd.fori_loop yourself")
    return rng(*args)


# ---------------------------------------------------------------- if


def _refuse_effect(effect: str | None, where: str, what: str, node: str) -> None:
    """A TraceError when a statement that is about to become a graph node changes a Python object
    (`effect`, from _python_effect): tracing runs it whatever the tensors hold."""
    if effect is not None:
        runs = "both branches" if node == "gd.cond" else "its body once"
        raise TraceError(f"{where}: this tensor-dependent `{what}` (converted to {node}) {effect}: graph mode "
                         f"traces {runs} to build the node, so that change to a Python object would happen "
                         f"whatever the tensors hold; assign the value to a variable the `{what}` sets in "
                         f"every path and use it after the `{what}` instead")


def if_stmt(test, true_fn, false_fn, init: tuple, names: tuple, used: tuple, where: str, what: str = "if",
            effect: str | None = None):
    """`if test: true_fn else: false_fn` over the statement's variables (init: their values before).

    A Python value runs one branch as Python; a tracer (or, under a trace, a concrete Tensor such
    as a Parameter, which the graph reads at every call) binds gd.cond. `what` names the
    statement in errors; `effect` says what in the branches changes a Python object (refused
    with a tracer). `used[i]` 2 (a jump guard's variable, read after it only where no break or
    continue was taken): a branch that leaves it unassigned gives it zeros of the other
    branch's type, which nothing reads.
    """
    traced = _traced(test)
    if traced is None:
        try:
            return true_fn(*init) if test else false_fn(*init)
        except BaseException as e:
            _ran_as_python(e)
            raise
    try:
        return _if_traced(traced, true_fn, false_fn, init, names, used, where, what, effect)
    except BaseException as e:
        _ran_traced(e)
        raise


def _if_traced(traced, true_fn, false_fn, init, names, used, where, what, effect):
    """if_stmt with a traced test: gd.cond over the statement's variables."""
    _refuse_effect(effect, where, what, "gd.cond")
    pred = _predicate(traced, what, where)
    # kept: what may be read after the if (a variable bound before and dead after, such as a
    # placeholder `y = None` that one branch sets and reads, is a temporary of the branches too)
    keep = [i for i, n in enumerate(names) if used[i]]
    plan: dict = {}  # index -> ("static", value) | ("data", treedef, [TensorType per leaf])

    def make(fn, label, rec):
        def branch():
            outs = fn(*init)
            rec.clear()
            leaves = []
            for i in keep:
                v = outs[i]
                if isinstance(v, Undefined) and used[i] == 2:
                    rec[i] = v
                    p = plan.get(i)
                    if p is not None and p[0] == "data":  # (the path of a jump: never read)
                        leaves.extend(ops.zeros(t.shape, t.dtype) for t in p[2])
                    continue
                if isinstance(v, Undefined):
                    raise TraceError(
                        f"{where}: {_name(names[i])} is assigned only in the other branch of this "
                        f"tensor-dependent `{what}` (converted to gd.cond) and is used after it; assign it before "
                        f"the `{what}` or in both branches")
                rec[i] = v
                p = plan.get(i)
                if p is None:
                    data = _data(v)
                    if data is not None:
                        leaves.extend(x if isinstance(x, TensorMethods) else ops.as_tensor(x) for x in data[1])
                elif p[0] == "data":
                    leaves.extend(_coerce(x, t) for x, t in zip(_data(v)[1], p[2]))
            # one more output, so that the cond has one even when every variable is static
            leaves.append(ops.constant(True, dt.bool_))
            return tuple(leaves)
        branch.__name__ = label
        return branch

    for attempt in range(2):
        rt, rf = {}, {}
        err = None
        try:
            outs = _cf.cond(pred, make(true_fn, "true_branch", rt), make(false_fn, "false_branch", rf))
        except GraphadError as e:
            if len(rt) != len(keep) or len(rf) != len(keep):
                raise  # raised while tracing a branch: the user's error (or one of ours, with its line)
            err, outs = e, None
        if attempt == 0:
            changed = _plan_if(rt, rf, keep, names, where, plan, what)
            if not changed and err is None:
                break
            if err is not None and not changed:
                raise err
        elif err is not None:
            raise err
    it = iter(outs)
    result = []
    for i, n in enumerate(names):
        if i not in keep:
            result.append(Undefined(n))
            continue
        p = plan.get(i)
        if p is not None and p[0] == "static":
            result.append(p[1])
        else:
            td = p[1] if p is not None else _data(rt[i])[0]
            result.append(pytree.unflatten(td, [next(it) for _ in range(td.num_leaves)]))
    return tuple(result)


def _name(n: str) -> str:
    if n == _IFEXP:
        return "the value"
    return "the return value" if n == _RETVAL else f"variable {n!r}"


def if_exp(test, true_fn, false_fn, where: str):
    """`true_fn() if test else false_fn()` (a conditional expression; the branches as thunks, so a
    Python test still evaluates one of them only). A tracer test binds gd.cond, as an `if`
    statement assigning one variable in both branches would: the branches' values may be tensors
    of one type, numbers (typed as an `if` types them), or the same structure of those."""
    if _traced(test) is None:
        return true_fn() if test else false_fn()
    out = if_stmt(test, lambda _v: (true_fn(),), lambda _v: (false_fn(),), (Undefined(_IFEXP),), (_IFEXP,),
                  (True,), where, what=_IFEXP_WHAT)
    return out[0]


def _data(v):
    """(treedef, leaves) when v is a tensor, a number or a pytree of them; else None (static)."""
    if isinstance(v, TensorMethods) or _is_number(v):
        return pytree.LEAF, [v]
    try:
        leaves, td = pytree.flatten(v)
    except Exception:  # noqa: BLE001 -- not a pytree: a static value
        return None
    if td == pytree.LEAF or not all(isinstance(x, TensorMethods) or _is_number(x) for x in leaves):
        return None
    return td, leaves


def _plan_if(rt, rf, keep, names, where, plan, what: str = "if") -> bool:
    """Decide how each kept variable leaves the cond from what both branches gave it; True when
    the branches must be traced again with that plan (numbers to type, statics to leave out)."""
    changed = False
    stmt = f"this tensor-dependent `{what}` (converted to gd.cond)"
    for i in keep:
        a, b = rt[i], rf[i]
        if isinstance(a, Undefined) or isinstance(b, Undefined):  # (a jump guard's: see if_stmt)
            defined = b if isinstance(a, Undefined) else a
            d = _data(defined)
            if d is None or not any(isinstance(x, TensorMethods) for x in d[1]):
                plan[i] = ("static", defined)  # (an Undefined when neither branch assigns it)
            else:
                plan[i] = ("data", d[0], [_ty(x) if isinstance(x, TensorMethods) else
                                          TensorType((), dt.scalar_dtype(x)) for x in d[1]])
            changed = True
            continue
        da, db = _data(a), _data(b)
        if da is None and db is None:
            if a is b or _same(a, b):
                plan[i], changed = ("static", a), True
                continue
        elif _is_number(a) and _is_number(b) and type(a) is type(b) and a == b:
            plan[i], changed = ("static", a), True
            continue
        elif da is not None and db is not None and da[0] == db[0]:
            types = []
            for x, y in zip(da[1], db[1]):
                tx, ty = isinstance(x, TensorMethods), isinstance(y, TensorMethods)
                if tx and ty and _ty(x) != _ty(y) and _cf._is_weak(x) != _cf._is_weak(y):
                    tx, ty = not _cf._is_weak(x), not _cf._is_weak(y)  # jit's weak number: as a number
                if tx and ty:
                    if _ty(x) != _ty(y):
                        retype = _weak_carry_retype(x, y)
                        if retype is not None:
                            raise retype
                        what = _name(names[i]) + (" (a leaf of it)" if da[0] != pytree.LEAF else "")
                        raise TraceError(f"{where}: {what} is {_ty(x)} in the true branch and {_ty(y)} in the false "
                                         f"branch of {stmt}; both branches must give it the same shape and dtype")
                    types.append(_ty(x))
                    continue
                changed = True
                if not (tx or ty):
                    types.append(TensorType((), dt.promote_types(dt.scalar_dtype(x), dt.scalar_dtype(y))))
                else:
                    t, n = (x, y) if tx else (y, x)
                    if tuple(t.shape) != ():
                        # a number is a scalar: it takes the tensor's dtype, not its shape (it was
                        # broadcast, and sum(y) after the `if` gave 3.0 where Python gives 1.0)
                        what = _name(names[i]) + (" (a leaf of it)" if da[0] != pytree.LEAF else "")
                        raise TraceError(f"{where}: {what} is {_what(x)} in the true branch and {_what(y)} in the "
                                         f"false branch of {stmt}; a Python number is a scalar, so both branches "
                                         f"must give it the same shape (broadcast the number with "
                                         f"ops.full_like or ops.broadcast_to if that is meant)")
                    d = dt.promote_types(t.dtype, dt.weak_scalar_dtype(_number_sample(n), t.dtype))
                    types.append(TensorType(tuple(t.shape), d))
            plan[i] = ("data", da[0], types)
            continue
        raise TraceError(f"{where}: {_name(names[i])} is {_what(a)} in the true branch and {_what(b)} in the "
                         f"false branch of {stmt}; only tensors and numbers (or the same structure of them) can "
                         f"differ between the branches")
    return changed


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- an object whose == is not a plain bool: not the same
        return False


def _number_sample(n):
    """A Python number of the kind of the number `n` (a Python number, or jit's weak number)."""
    return n if _is_number(n) else {"i": 0, "f": 0.0, "c": 0j}[n.weak_src.dtype.kind]


def _coerce(v, t: TensorType):
    """v (a tensor or a number) as a tensor of type t (numbers broadcast, dtypes cast; jit's weak
    numbers from their exact values)."""
    x = ops.as_tensor(v, t.dtype) if _is_number(v) else _cf._weak_as(v, t.dtype) if _cf._is_weak(v) else v
    if x.dtype is not t.dtype:
        x = ops.astype(x, t.dtype)
    if tuple(x.shape) != tuple(t.shape):
        x = ops.broadcast_to(x, tuple(t.shape))
    return x


# ---------------------------------------------------------------- loops


class _Retype(Exception):
    """A carry that started as a Python number became a tensor of another type: trace again
    (`token`: the loop whose carry it is, when raised from deeper in its body; None: the loop
    whose body just returned)."""

    def __init__(self, i, t, token=None):
        super().__init__(i, t)
        self.i, self.t, self.token = i, t, token


# The weakly typed carries (Python numbers before the loop) of the loops whose bodies are being
# traced, innermost last: (loop token, {id(carry tracer): (variable, leaf)}; the tracers are the
# body's arguments, alive while it is traced, so their ids stay theirs). A
# tensor-dependent `if` in such a body (a `break` makes one of the whole body) that gives the
# carry another dtype in one branch and passes it through in the other asks that loop to trace
# again with the carry widened, as the body's own result does (JAX's weak types, which graphad
# does not track through operations: the carry itself is recognized, not values computed from it)
_WEAK_CARRIES: contextvars.ContextVar = contextvars.ContextVar("graphad_weak_carries", default=())


def _is_weak_carry(x) -> bool:
    """Whether `x` is the carry of an enclosing loop being traced that started as a Python number."""
    return any(id(x) in ids for _, ids in _WEAK_CARRIES.get())


def _weak_carry_retype(x, y):
    """The _Retype that widens a loop's weakly typed carry, when x or y is one and the other has
    its shape and a dtype it widens to; else None."""
    for token, ids in reversed(_WEAK_CARRIES.get()):
        for a, b in ((x, y), (y, x)):
            at = ids.get(id(a))
            if at is not None and tuple(a.shape) == tuple(b.shape) and _cf._weak_to(a.dtype, b.dtype):
                return _Retype(at, _ty(b), token)
    return None


# ---------------------------------------------------------------- loop options (the reverse-mode bound)
#
# Reverse mode through a while_loop node needs max_steps (the tape's length). A converted Python
# loop cannot take a keyword, so its bound comes from a `gd.set_loop_options(max_steps=N)` call in
# its body (TensorFlow AutoGraph's spelling, set_loop_options(maximum_iterations=N)), else from
# the innermost `gd.jit(..., max_steps=N)` being traced. The loop statements push a frame for the
# time they run, so a call in a body reaches its own loop, never an enclosing one; the frame is
# read when the loop node is bound, after its body has been traced.

_LOOPS = threading.local()  # .frames: the loop statements running; .default: the jit's bound


class _LoopFrame:
    __slots__ = ("max_steps",)

    def __init__(self):
        self.max_steps = None


def _frames() -> list:
    frames = getattr(_LOOPS, "frames", None)
    if frames is None:
        frames = _LOOPS.frames = []
    return frames


@contextlib.contextmanager
def _loop_frame():
    frame = _LoopFrame()
    frames = _frames()
    frames.append(frame)
    try:
        yield frame
    finally:
        frames.pop()


def _bound(frame: _LoopFrame):
    """The max_steps of the loop node of `frame`'s statement, asked when the node is bound."""
    return lambda: frame.max_steps if frame.max_steps is not None else getattr(_LOOPS, "default", None)


@contextlib.contextmanager
def loop_defaults(max_steps: int | None):
    """While tracing a gd.jit function made with max_steps=N, N bounds its converted loops that set
    none of their own (None keeps the enclosing jit's bound, if any)."""
    prev = getattr(_LOOPS, "default", None)
    if max_steps is not None:
        _LOOPS.default = max_steps
    try:
        yield
    finally:
        _LOOPS.default = prev


def set_loop_options(max_steps: int | None = None) -> None:
    """Options of the Python loop whose body calls this (TensorFlow AutoGraph's set_loop_options).

    `max_steps`: a bound on the trip count of a `while` (or a `for` over a traced range) that graph
    mode converts into a loop node: reverse-mode differentiation needs one (it is the length of the
    tape of carries), and the loop stops after max_steps steps, as gd.while_loop(max_steps=) does.
    Called where the loop runs as plain Python (eagerly, or with a Python test) it does nothing.
    """
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 1):
        raise GraphadError(f"set_loop_options: max_steps must be a positive int or None, got {max_steps!r}")
    frames = _frames()
    if frames:
        frames[-1].max_steps = None if max_steps is None else int(max_steps)


def while_stmt(test_fn, body_fn, init: tuple, names: tuple, used: tuple, where: str, effect: str | None = None):
    """`while test_fn(*vals): vals = body_fn(*vals)`: Python while the test is a Python value,
    gd.while_loop from the first time it is a tracer (refused when the body changes a Python
    object: `effect`)."""
    with _loop_frame() as frame:
        return _while_stmt(frame, test_fn, body_fn, init, names, used, where, effect)


def _while_stmt(frame, test_fn, body_fn, init: tuple, names: tuple, used: tuple, where: str, effect=None):
    vals = tuple(init)
    while True:
        try:
            t = test_fn(*vals)
        except BaseException as e:
            _ran_as_python(e, vals)
            raise
        if _traced(t) is not None:
            _refuse_effect(effect, where, "while", "gd.while_loop")
            break
        if not t:
            return vals
        try:
            vals = body_fn(*vals)
        except BaseException as e:
            _ran_as_python(e)
            raise

    def launch(carry, cond, body):
        return _cf.bounded_while(lambda c: cond((), c), lambda c: body((), c)[1], carry, _bound(frame))

    def test(extra, full):
        t = test_fn(*full)
        return _predicate(_traced(t) if isinstance(t, Tensor) else t, "while", where)

    def body(extra, full):
        return (), body_fn(*full)

    return _tensor_loop("while", launch, test, body, vals, names, used, where)


def for_range(rng, args: tuple, body_fn, init: tuple, names: tuple, used: tuple, where: str,
              brk: int | None = None, effect: str | None = None):
    """`for i in range(*args): vals = body_fn(i, *vals)`: Python with Python (or concrete) bounds,
    a loop node (a gd.while_loop over the index) when a bound is a tracer (refused when the body
    changes a Python object: `effect`). `brk`: the position of the loop's break flag among the
    variables (the loop stops once it is true)."""
    with _loop_frame() as frame:
        return _for_range(frame, rng, args, body_fn, init, names, used, where, brk, effect)


def _for_range(frame, rng, args, body_fn, init, names, used, where, brk, effect=None):
    if rng is not builtins.range or not any(_traced(a) is not None for a in args):
        return _py_for(rng(*args), body_fn, init, brk)
    _refuse_effect(effect, where, "for", "a loop node")
    if len(args) == 1:
        lo, hi, step = 0, args[0], 1
    elif len(args) == 2:
        (lo, hi), step = args, 1
    elif len(args) == 3:
        lo, hi, step = args
    else:
        raise TraceError(f"{where}: range expected 1 to 3 arguments, got {len(args)}")
    if isinstance(step, TensorMethods) or not isinstance(step, (int, np.integer)) or step == 0:
        raise TraceError(f"{where}: a `for` loop over a range with traced bounds needs a nonzero Python int step, got "
                         f"{_what(step)}")
    lo, hi = _cf.loop_bounds(lo, hi, f"{where}: range's")
    step = int(step)
    vals = tuple(init)

    def launch(carry, cond, body):
        out = _cf.bounded_while(lambda c: cond((c[0],), c[1]), lambda c: _pack(body((c[0],), c[1])), (lo, carry),
                                _bound(frame))
        return out[1]

    def test(extra, full):
        more = ops.less(extra[0], hi) if step > 0 else ops.greater(extra[0], hi)
        if brk is not None:
            more = ops.logical_and(more, not_(ops.as_tensor(full[brk])))
        return more

    def body(extra, full):
        i = extra[0]
        return (ops.add(i, ops.constant(step, lo.dtype)),), body_fn(i, *full)

    return _tensor_loop("for", launch, test, body, vals, names, used, where)


def _pack(r):
    (extra, carry) = r
    return (extra[0], carry)


def _py_for(iterable, body_fn, init, brk):
    vals = tuple(init)
    try:
        items = iter(iterable)
    except BaseException as e:
        _ran_as_python(e, vals)
        raise
    while True:
        try:
            x = next(items)
        except StopIteration:
            return vals
        except BaseException as e:  # (the iterable raised: the steps before it stand)
            _ran_as_python(e, vals)
            raise
        try:
            vals = body_fn(x, *vals)
        except BaseException as e:
            _ran_as_python(e)
            raise
        if brk is not None and vals[brk] is True:
            return vals


def for_iter(iterable, body_fn, init: tuple, names: tuple, used: tuple, where: str, scan_ok: bool = True,
             brk: int | None = None):
    """`for x in iterable: vals = body_fn(x, *vals)`: a gd.scan over the leading axis of a tracer
    (when scan_ok: the body has no side effects on Python objects), else Python iteration. After
    a traced `break` the scan runs its remaining steps with the body switched off."""
    with _loop_frame():  # a set_loop_options in this body is this loop's (a scan needs no bound)
        return _for_iter(iterable, body_fn, init, names, used, where, scan_ok, brk)


def _for_iter(iterable, body_fn, init, names, used, where, scan_ok, brk):
    traced = _traced(iterable) if scan_ok and isinstance(iterable, TensorMethods) and len(iterable.shape) else None
    if traced is None:
        return _py_for(iterable, body_fn, init, brk)

    def launch(carry, cond, body):
        return _cf.scan(lambda c, x: (body((x,), c)[1], None), carry, traced)[0]

    def body(extra, full):
        return (), body_fn(extra[0], *full)

    return _tensor_loop("for", launch, None, body, tuple(init), names, used, where)


def _tensor_loop(what, launch, test, body, vals, names, used, where):
    """Run a loop node over the tensor variables of `vals` (`_loop_node`); an exception leaving it
    is unmarked as the traced statement's (`_ran_traced`)."""
    try:
        return _loop_node(what, launch, test, body, vals, names, used, where)
    except BaseException as e:
        _ran_traced(e)
        raise


def _loop_node(what, launch, test, body, vals, names, used, where):
    """Run a loop node over the tensor variables of `vals`.

    The carry is every bound variable whose value is a tensor, a number or a pytree of them
    (numbers become tensors: a number that the body turns into a tensor of another dtype or shape
    takes that type, and the body is traced again). Other bound values (a Cell, a list of
    strings...) are constants of the loop and the body must leave them as they are; unbound ones
    are the body's temporaries, and an error when read after the loop.
    """
    stmt = f"tensor-dependent `{what}` loop"
    spec, statics = {}, {}  # spec: i -> [treedef, [TensorType per leaf], [whether the leaf was a number]]
    for i, v in enumerate(vals):
        if isinstance(v, Undefined) or not used[i]:  # (a value on entry that no one reads: a temporary)
            if isinstance(v, Undefined) and used[i] == 2:
                raise TraceError(f"{where}: variable {names[i]!r} is first assigned inside this {stmt} and used after "
                                 f"it; a loop node cannot define a new variable: assign it before the loop")
            continue
        d = _data(v)
        if d is None:
            statics[i] = v
        else:
            # weak: a number (a jit's too), or an enclosing loop's weakly typed carry (a `tot = 0.0`
            # carried by two nested loops: the inner one widens it too, and the outer one then follows)
            spec[i] = [d[0], [_ty(x) if isinstance(x, TensorMethods) else _ty(ops.as_tensor(x)) for x in d[1]],
                       [_is_number(x) or _is_weak_carry(x) or _cf._is_weak(x) for x in d[1]]]
    order = sorted(spec)

    def full_of(c):
        full, k = list(vals), 0
        for i in order:
            n = len(spec[i][1])
            full[i] = pytree.unflatten(spec[i][0], list(c[k:k + n]))
            k += n
        return full

    def wrap_test(extra, c):
        return test(extra, full_of(c))

    token = object()

    def wrap_body(extra, c):
        ids, k = {}, 0
        for i in order:
            for j, was_number in enumerate(spec[i][2]):
                if was_number:
                    ids[id(c[k])] = (i, j)
                k += 1
        scope = _WEAK_CARRIES.set(_WEAK_CARRIES.get() + ((token, ids),))
        try:
            new_extra, out = body(extra, full_of(c))
        finally:
            _WEAK_CARRIES.reset(scope)
        leaves = []
        for i, v in enumerate(out):
            if i in statics:
                if v is not statics[i] and not _same(v, statics[i]):
                    raise TraceError(f"{where}: variable {names[i]!r} is {_what(statics[i])} before this {stmt} and "
                                     f"the body assigns it {_what(v)}; a loop node carries only tensors (and "
                                     f"numbers, and tuples, lists and dicts of them)")
                continue
            if i not in spec:
                continue  # a temporary of the body
            td, types, weak = spec[i]
            if isinstance(v, Undefined):
                raise TraceError(f"{where}: the body of this {stmt} leaves variable {names[i]!r} unbound")
            d = _data(v)
            if d is None or d[0] != td:
                raise TraceError(f"{where}: variable {names[i]!r} is carried by this {stmt} as "
                                 f"{_what(pytree.unflatten(td, [0] * len(types))) if td != pytree.LEAF else 'a tensor'}"
                                 f" but the body assigns it {_what(v)}; a loop-carried value must keep its structure")
            for j, (x, t) in enumerate(zip(d[1], types)):
                if _is_number(x):
                    leaves.append(_coerce(x, t))
                    continue
                if _ty(x) != t:
                    if weak[j]:
                        raise _Retype((i, j), _ty(x))
                    what_ = f"variable {names[i]!r}" + (" (a leaf of it)" if td != pytree.LEAF else "")
                    raise TraceError(f"{where}: {what_} is {t} before this {stmt} and {_ty(x)} after one step of "
                                     f"its body; a loop-carried value must keep its shape and dtype (converted to a "
                                     f"loop node: gd.while_loop / gd.scan)")
                leaves.append(x)
        return new_extra, tuple(leaves)

    for _ in range(8):
        carry = tuple(_coerce(x, t) for i in order for x, t in zip(_data(vals[i])[1], spec[i][1]))
        try:
            out = launch(carry, wrap_test, wrap_body)
            break
        except _Retype as r:
            if r.token is not None and r.token is not token:
                raise  # an enclosing loop's carry
            (i, j) = r.i
            if r.t == spec[i][1][j]:
                raise TraceError(f"{where}: variable {names[i]!r} does not settle on one type in this {stmt}") \
                    from None
            spec[i][1][j] = r.t
    else:
        raise TraceError(f"{where}: the carried variables of this {stmt} do not settle on fixed types")
    result = full_of(out)
    for i, v in enumerate(vals):
        if isinstance(v, Undefined) or not used[i]:
            result[i] = Undefined(names[i])
    return tuple(result)


# ---------------------------------------------------------------- the source transformation


# builtins that read their caller's frame: calling them through a wrapper would change what they see
_FRAME_BUILTINS = frozenset({"super", "locals", "globals", "vars", "eval", "exec", "dir"})
# those of them that may read the function's local variables (super() reads only its class and
# first argument, globals() the module's)
_READS_LOCALS = frozenset({"locals", "vars", "eval", "exec", "dir"})
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_PREFIX = "__ag"
_RETVAL = "__ag_retval"  # the return value, when `return`s under an `if` are made one (see _lift_returns)
_IFEXP = "__ag_ifexp"  # the value of a conditional expression (if_exp)
_IFEXP_WHAT = "... if ... else ..."
_GENERATED = (_PREFIX + "_if_", _PREFIX + "_while_", _PREFIX + "_for_", _PREFIX + "_factory", _PREFIX + "_item")


def _internal(name: str) -> bool:
    """A name of the generated code that is no variable of the user's program (the helpers, the
    branch and body functions); the return value and the break/continue flags are variables."""
    return name == _PREFIX or name.startswith(_GENERATED)


def _walk_scope(nodes):
    """ast.walk over nodes without entering nested scopes (their bodies; a def's name is kept)."""
    todo = list(nodes)
    while todo:
        n = todo.pop()
        yield n
        if isinstance(n, _SCOPES):
            continue
        todo.extend(ast.iter_child_nodes(n))


def _assigned(stmts) -> list[str]:
    """Names the statements bind in the current scope, in first-binding order."""
    found = []

    def add(name):
        if not _internal(name) and name not in found:
            found.append(name)

    for n in _walk_in_order(stmts):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            add(n.id)
        elif isinstance(n, ast.pattern):  # `case (v, *rest):` binds v and rest
            for t in _captures(n):
                add(t.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                add((a.asname or a.name).split(".")[0])
    return found


def _walk_in_order(nodes):
    for node in nodes:
        yield node
        if not isinstance(node, _SCOPES):
            yield from _walk_in_order(list(ast.iter_child_nodes(node)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _walk_in_order(node.decorator_list)


def _loads(nodes) -> Counter:
    """How often each name is read under nodes (nested scopes included: closures read too), less
    the reads that cannot be of the enclosing variable: a nested function's or lambda's reads of
    its own parameters, a comprehension's of its own targets, and a `for` loop body's of the
    loop's own target (`for x in xs` twice in a row: the second loop's x is its own, and the first
    loop's was refused as "used after it")."""
    c = Counter()

    def walk(n, hidden: frozenset):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            if n.id not in hidden:
                c[n.id] += 1
            return
        if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and n.target.id not in hidden:
            c[n.target.id] += 1
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            every = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
            params = {p.arg for p in every}
            # (evaluated where the function is defined: defaults, decorators, annotations)
            outside = a.defaults + [d for d in a.kw_defaults if d is not None] + list(getattr(n, "decorator_list", ()))
            outside += [p.annotation for p in every if p.annotation is not None]
            if getattr(n, "returns", None) is not None:
                outside.append(n.returns)
            for d in outside:
                walk(d, hidden)
            body = n.body if isinstance(n.body, list) else [n.body]
            # (a name the function assigns is its own local throughout it, unless declared otherwise)
            declared = {x for b in body for d in _walk_scope([b]) if isinstance(d, (ast.Global, ast.Nonlocal))
                        for x in d.names}
            own = set(_assigned(body)) - declared
            for b in body:
                walk(b, hidden | params | own)
            return
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            targets = {t.id for g in n.generators for t in ast.walk(g.target)
                       if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
            walk(n.generators[0].iter, hidden)  # (the first iterable is read in the enclosing scope)
            inner = hidden | targets
            for g in n.generators:
                if g is not n.generators[0]:
                    walk(g.iter, inner)
                for cond in g.ifs:
                    walk(cond, inner)
            for e in ((n.key, n.value) if isinstance(n, ast.DictComp) else (n.elt,)):
                walk(e, inner)
            return
        if isinstance(n, (ast.For, ast.AsyncFor)):
            walk(n.iter, hidden)
            walk(n.target, hidden)  # (only names the target binds: `for buf[k] in ...` reads buf and k)
            own = {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
            for b in n.body:
                walk(b, hidden | own)
            for b in n.orelse:
                walk(b, hidden)
            return
        for child in ast.iter_child_nodes(n):
            walk(child, hidden)

    for nd in nodes:
        walk(nd, frozenset())
    return c


def _names_bound(targets) -> set:
    """The names an assignment to `targets` certainly binds (`a, (b, *c) = ...`; not `x[i]`, `o.a`)."""
    out = set()
    todo = list(targets)
    while todo:
        t = todo.pop()
        if isinstance(t, ast.Name):
            out.add(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            todo.extend(t.elts)
        elif isinstance(t, ast.Starred):
            todo.append(t.value)
    return out


def _kills(st) -> set:
    """The names a simple statement certainly rebinds (their earlier values are dead after it)."""
    if isinstance(st, ast.Assign):
        return _names_bound(st.targets)
    if isinstance(st, ast.AnnAssign) and st.value is not None:
        return _names_bound([st.target])
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {st.name}
    if isinstance(st, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in st.names}
    if isinstance(st, ast.Delete):
        return _names_bound(st.targets)
    return set()


def _reads_after(body) -> tuple[dict, dict, dict]:
    """(after, heads, jumped): for each `if`, `while` and `for` statement under `body` (by id), the
    names that may be read after it finishes before they are assigned again; for each loop, those
    live at its head (read by a step before the step assigns them, or after the loop); for each
    `if not (flags):` guard that _LowerJumps put after a break or continue, those live where the
    jump goes (the loop's exit and head: every statement of the step after the guard is guarded
    too, so nothing else reads a variable on the path of the jump). A backward
    liveness over the statements: what is read later is the rest of the block and of the blocks
    around it and an enclosing loop's next steps, but not the other branch of an enclosing `if`,
    nor a read that follows a new assignment of the name (`t = 0` at the top of a loop body kills
    the previous step's t). Exceptions: at every point of a
    `try` body its handlers and `finally` may run next, and after every point of a `with` body the
    statements after the `with` (a context manager may swallow an exception), so what those read
    is live throughout (an assignment in between may not happen). A read inside a nested function,
    a lambda or a generator expression counts everywhere (it may run at any later point)."""
    late = set()
    for n in (x for st in body for x in ast.walk(st)):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.GeneratorExp)):
            late |= set(_loads([n]))
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _READS_LOCALS:
            late |= set(_assigned(body))  # (locals(), vars(), eval(...) may read any variable)
    out: dict = {}
    heads: dict = {}  # loop id -> what is live at its head (read by a step before it assigns it)
    jumped: dict = {}  # jump guard id -> what is live where its loop's break / continue go
    loops: list = []  # (live at the exit, live at the head) of each enclosing loop, innermost last

    def reads(nodes) -> set:
        return set(_loads(nodes))

    def block(stmts, live: set, exc: set) -> set:
        """Live before `stmts`, given `live` after them and `exc` live at every point of them."""
        for st in reversed(stmts):
            live = stmt(st, live, exc) | exc
        return live

    def stmt(st, live: set, exc: set) -> set:
        if isinstance(st, (ast.If, ast.While, ast.For, ast.AsyncFor)):
            out[id(st)] = out.get(id(st), set()) | live | late | exc
        if isinstance(st, ast.If):
            other = block(st.orelse, live, exc)
            if getattr(st, "ag_jump_guard", False) and loops:
                # the other branch is the path of a break or continue, on which the rest of the
                # step is guarded off: what is live there is what is live where the jump goes
                other = loops[-1][0] | loops[-1][1] | exc
                jumped[id(st)] = jumped.get(id(st), set()) | other | late
            return reads([st.test]) | block(st.body, live, exc) | other
        if isinstance(st, (ast.While, ast.For, ast.AsyncFor)):
            exit_ = block(st.orelse, live, exc) | live  # (the loop may end by a break or after no step)
            is_for = not isinstance(st, ast.While)
            head = exit_ | reads([st.test] if not is_for else [])
            while True:  # the head's liveness to a fixed point (one more pass after it records)
                loops.append((exit_, head))
                inner = block(st.body, head, exc)
                loops.pop()
                if is_for:
                    inner = (inner - _names_bound([st.target])) | reads([st.target])
                new = head | inner
                if new == head:
                    break
                head = new
            heads[id(st)] = heads.get(id(st), set()) | head | late | exc
            return head | (reads([st.iter]) if is_for else set())
        if isinstance(st, (ast.With, ast.AsyncWith)):
            inner = block(st.body, live, exc | live)
            return reads([i.context_expr for i in st.items]) | (inner - _names_bound(
                [i.optional_vars for i in st.items if i.optional_vars is not None])) | live
        if isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            fin = block(st.finalbody, live, exc)  # (every way out of the try runs finally first)
            # an exception leaving the try runs finally and goes on outward; a break or continue
            # runs it and goes to the loop's exit or head; `out` joins what each path needs
            F = block(st.finalbody, exc, exc) if st.finalbody else set()
            if st.finalbody and loops:
                F |= block(st.finalbody, loops[-1][0] | loops[-1][1], exc)
            handlers = set()
            for h in st.handlers:
                bound = {h.name} if h.name else set()
                handlers |= (block(h.body, fin, exc | F) - bound) | (reads([h.type]) if h.type else set())
            inner_exc = exc | F | handlers
            rest = block(st.orelse, fin, exc | F)
            return block(st.body, rest, inner_exc) | inner_exc
        if isinstance(st, ast.Match):
            cases = set()
            for c in st.cases:
                cases |= (block(c.body, live, exc) - _names_bound(_captures(c.pattern))) | reads(
                    [c.pattern] + ([c.guard] if c.guard else []))
            # (no case may match, unless the last is `case _:` or `case name:` without a guard)
            last = st.cases[-1] if st.cases else None
            catch_all = (last is not None and last.guard is None and isinstance(last.pattern, ast.MatchAs)
                         and last.pattern.pattern is None)
            return reads([st.subject]) | cases | (set() if catch_all else live)
        if isinstance(st, ast.Break):
            return set(loops[-1][0]) if loops else set()
        if isinstance(st, ast.Continue):
            return set(loops[-1][1]) if loops else set()
        if isinstance(st, (ast.Return, ast.Raise)):
            return reads([st])
        return (live - _kills(st)) | reads([st])
    block(body, set(), set())
    return out, heads, jumped


def _captures(pattern) -> list:
    """The names a `match` pattern binds, as ast.Name targets (`case (v, *rest):`, `case {**kw}`)."""
    out = []
    for n in ast.walk(pattern):
        for name in ((n.name,) if isinstance(n, (ast.MatchAs, ast.MatchStar)) else
                     (n.rest,) if isinstance(n, ast.MatchMapping) else ()):
            if name:
                out.append(ast.Name(name, ast.Store()))
    return out


def _why_not(stmt, loop: bool) -> str | None:
    """Why a statement cannot become a function of its variables (None when it can)."""
    if loop and stmt.orelse:
        return "the loop has an `else:` clause"

    if isinstance(stmt, ast.While) and any(isinstance(n, ast.NamedExpr) for n in ast.walk(stmt.test)):
        return "its test contains an assignment expression (`:=`)"  # (the test becomes a function)

    def scan(nodes, in_loop):
        for n in nodes:
            if isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)) and \
                    any(isinstance(m, ast.NamedExpr) for m in ast.walk(n)):
                # (its `:=` binds in the enclosing function, which the branch function would be)
                return "a comprehension in it contains an assignment expression (`:=`)"
            if isinstance(n, _SCOPES):
                continue
            if isinstance(n, ast.Return):
                return "it contains `return`"
            if isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await)):
                return "it contains `yield`/`await`"
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                return "it contains a `global`/`nonlocal` statement"
            if isinstance(n, ast.Delete) and any(isinstance(t, ast.Name) for t in n.targets):
                # a branch function that deletes a variable cannot return it (UnboundLocalError)
                return "it deletes a variable (`del`)"
            if isinstance(n, (ast.Break, ast.Continue)) and not in_loop:
                return f"it contains `{'break' if isinstance(n, ast.Break) else 'continue'}`"
            inner = in_loop or isinstance(n, (ast.For, ast.While, ast.AsyncFor))
            if isinstance(n, (ast.For, ast.While)):
                # break/continue in an inner loop's body are its own; in its else, they are ours
                r = scan(n.body, True) or scan(n.orelse, in_loop) or scan([n.test if isinstance(n, ast.While)
                                                                        else n.iter], in_loop)
            else:
                r = scan(list(ast.iter_child_nodes(n)), inner)
            if r:
                return r
        return None

    body = stmt.body if loop else stmt.body + stmt.orelse
    return scan(body, False)


def _blocks_thunks(expr) -> str | None:
    """Why `expr` cannot be evaluated in a thunk (`lambda: expr`) as it would be in place (None
    when it can): an assignment expression would bind in the thunk, and the builtins that read
    their caller's frame (`locals()`, `super()`...) would read the thunk's. (`yield` and `await`
    cannot occur: generators and coroutines are not converted.)"""
    for n in ast.walk(expr):
        if isinstance(n, ast.NamedExpr):
            return "it contains an assignment expression (`:=`)"
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FRAME_BUILTINS:
            return f"it calls `{n.func.id}()`"
    return None


def _side_effects(stmts) -> bool:
    """Whether a loop body acts on Python objects (bare calls, attribute/subscript assignments)."""
    for n in _walk_scope(stmts):
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call):
            return True
        if isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            return True
    return False


# methods that change the Python container they are called on
_MUTATORS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "add",
                       "discard", "popitem", "sort", "reverse"})


def _python_effect(stmts, declared: set) -> str | None:
    """What in `stmts` (a converted statement's bodies) changes a Python object, as the words of
    an error ("calls `ys.append` (line 7)"), or None. A tensor `if` traces both branches and a
    traced loop its body once: such a change then happens at trace time whatever the tensors hold
    (ys.append ran in both branches, d[k] = v kept the false branch's value; a helper's trial).
    `declared`: the names the function declares global or nonlocal."""
    found = []
    for n in _walk_scope(stmts):
        line = getattr(n, "lineno", None)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _MUTATORS \
                and isinstance(n.func.value, (ast.Name, ast.Attribute, ast.Subscript)):
            found.append((line, f"calls `{ast.unparse(n.func)}`"))
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            found.append((line, f"assigns `{ast.unparse(n)}`"))
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)) and n.id in declared:
            found.append((line, f"assigns the global or nonlocal `{n.id}`"))
    if not found:
        return None
    line, what = min(found, key=lambda f: f[0] or 0)
    return f"{what} (line {line})" if line else what


_CLOSURES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.GeneratorExp)


def _free_names(fn) -> set:
    """The names nested scope `fn` (a def, lambda or generator expression, with what it nests)
    reads from outside: read, and neither its parameter nor its own variable (a name it assigns
    under `nonlocal` is the enclosing function's)."""
    if isinstance(fn, ast.GeneratorExp):
        bound = {x.id for g in fn.generators for x in ast.walk(g.target) if isinstance(x, ast.Name)}
        body = [fn]
    else:
        a = fn.args
        bound = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
        body = fn.body if isinstance(fn.body, list) else [fn.body]
    outer = {name for b in body for x in ast.walk(b) if isinstance(x, ast.Nonlocal) for name in x.names}
    stored = {x.id for b in body for x in ast.walk(b) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Store)}
    loads = {x.id for b in body for x in ast.walk(b) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)}
    return (loads | outer) - bound - (stored - outer)


# builtins whose result keeps nothing of their arguments (a generator expression given to sum is
# used up there)
_CONSUMING = frozenset({"sum", "min", "max", "any", "all", "len", "list", "tuple", "set", "frozenset", "dict",
                        "sorted", "bool", "int", "float", "complex", "str", "repr", "print", "next"})


def _holds(value, node, names: set) -> bool:
    """Whether the expression `value` may hold the closure `node` (it is there, or a name bound
    to it). A call's result holds what its arguments may hold (`functools.partial(g)`, `gd.grad(
    g)`), not its callee (`z = g(x)`, `gd.grad(g)(x)` hold results), nor anything given to one of
    `_CONSUMING`."""
    todo = [value]
    while todo:
        e = todo.pop()
        if e is node or isinstance(e, ast.Name) and e.id in names:
            return True
        if isinstance(e, ast.Call):
            if not (isinstance(e.func, ast.Name) and e.func.id in _CONSUMING):
                todo += list(e.args) + [k.value for k in e.keywords]
            continue
        todo += list(ast.iter_child_nodes(e))
    return False


def _closures(root) -> list:
    """(names, line, the names it reads from outside, node) for each function, lambda and
    generator expression made directly in `root`'s body (nested ones of those are theirs): the
    names it is bound to, its own (a def's) and those of every variable assigned from an
    expression that holds it or another of its names (`get = (lambda: y,)`, `h = g`)."""
    out = []
    # the function's own variables (its parameters, what it assigns): a method call on one may
    # store its argument there (`fs.append(lambda: y)`: fs holds it); one on a global (`gd.grad(
    # lambda w: ...)`, a module) is a call, not a container
    a = root.args
    local = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
    local |= {x.id for x in _walk_scope(root.body) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Store)}
    # (value, targets) of the assignments, and of those method calls
    assigns = [(n.value, n.targets if isinstance(n, ast.Assign) else [n.target]) for n in _walk_scope(root.body)
               if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr))
               and getattr(n, "value", None) is not None]
    assigns += [(ast.Tuple(n.args + [k.value for k in n.keywords], ast.Load()), [n.func.value])
                for n in _walk_scope(root.body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and isinstance(n.func.value, ast.Name) and n.func.value.id in local]
    for n in _walk_scope(root.body):
        if not isinstance(n, _CLOSURES):
            continue
        names = {n.name} if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) else set()
        grown = True
        while grown:  # the variables that hold it, directly or through another of them
            grown = False
            for value, targets in assigns:
                if not _holds(value, n, names):
                    continue
                new = {x.id for t in targets for x in ast.walk(t) if isinstance(x, ast.Name)} - names
                if new:
                    names |= new
                    grown = True
        out.append((names, n.lineno, _free_names(n), n))
    return out


def _closure_reason(stmt, closures: list) -> str | None:
    """Why `stmt` stays Python: its body makes a nested function, lambda or generator expression
    that reads a variable the statement assigns, or reads one (by any name it is bound to) that
    does. Converted, the statement's body is a function of its own, with its own copy of the
    variable: the nested function would read the value from before the statement (`g` read `k`'s
    value from before the `if`, a helper's trial), or one made in a step keeps that step's copy
    (`lambda: x * i` made in a loop saw its own step's i, where Python's late binding reads the
    last; a generator expression consumed after the loop saw the first step's value) -- with a
    Python test as much as with a tensor one."""
    if not closures:
        return None
    body = stmt.body + stmt.orelse
    assigned = set(_assigned(body + ([ast.Assign([stmt.target], ast.Constant(None))] if isinstance(stmt, ast.For)
                                      else [])))
    inside = {id(x) for x in ast.walk(ast.Module(body=body, type_ignores=[]))}
    read = {x.id for x in _walk_scope(body) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)}
    for names, line, free, node in closures:
        shared = sorted(free & assigned)
        if not shared:
            continue
        if id(node) in inside and names:  # (one used where it is made, `sum(x * k for k in ks)`, is not kept)
            what = ("generator expression" if isinstance(node, ast.GeneratorExp) else "lambda"
                    if isinstance(node, ast.Lambda) else f"nested function `{node.name}`")
            return (f"it makes a {what} (line {line}) that reads `{shared[0]}`, which the statement assigns: "
                    f"converted, it would keep the copy of `{shared[0]}` that one run of the statement's body "
                    f"had, not the variable; pass `{shared[0]}` to it as an argument")
        called = sorted(names & read)
        if called:
            return (f"it assigns `{shared[0]}`, which the nested function `{called[0]}` (line {line}) reads and its "
                    f"body calls: converted, `{called[0]}` would see the value `{shared[0]}` had before the "
                    f"statement; pass it to `{called[0]}` as an argument")
    return None


def _at(tree, line: int):
    """The generated nodes all at the user's line (tracebacks and IR locations name it)."""
    for n in ast.walk(tree):
        if "lineno" in n._attributes:
            n.lineno = n.end_lineno = line
            n.col_offset = n.end_col_offset = 0
    return tree


def _expr(src: str, line: int) -> ast.expr:
    return _at(ast.parse(src, mode="eval"), line).body


def _stmts(src: str, line: int) -> list:
    return _at(ast.parse(src), line).body


class _Converter(ast.NodeTransformer):
    def __init__(self, root: ast.FunctionDef, where_file: str):
        self.root = root
        self.file = where_file
        self.count = itertools.count()
        self.after, self.heads, self.jumped = _reads_after(root.body)
        # what the original statements read and do, before their children are rewritten (the
        # rewritten ones read their variables in the generated code too)
        self.effects: dict = {}
        self.py_effect: dict = {}  # statement -> what in it changes a Python object (_python_effect)
        self.closures = _closures(root)
        declared = {name for n in _walk_scope(root.body) if isinstance(n, (ast.Global, ast.Nonlocal))
                    for name in n.names}
        for n in ast.walk(root):
            if isinstance(n, (ast.If, ast.While, ast.For)):
                # (a `for` target that is a subscript or attribute, `for buf[k] in xs`, stores too)
                target = [n.target] if isinstance(n, ast.For) else []
                self.py_effect[id(n)] = _python_effect(target + n.body + n.orelse, declared)
                if isinstance(n, ast.For):
                    self.effects[id(n)] = _side_effects(target + n.body)

    # nested functions, lambdas and classes keep their Python semantics
    def visit_FunctionDef(self, node):
        if node is self.root:
            self.generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node):
        return node

    def visit_ClassDef(self, node):
        return node

    def visit_Lambda(self, node):
        return node

    def visit_Call(self, node):
        # f(x) -> __ag.fn(f)(x): a user function called from converted code is converted too
        self.generic_visit(node)
        if not (isinstance(node.func, ast.Name) and node.func.id in _FRAME_BUILTINS):
            node.func = ast.copy_location(ast.Call(ast.Attribute(ast.Name(_PREFIX, ast.Load()), "fn", ast.Load()),
                                                   [node.func], []), node.func)
        return node

    def _where(self, node) -> str:
        return f"{self.file}:{node.lineno}"

    def _used(self, node, names) -> tuple:
        """Per variable of a statement: whether it may be read after the statement (an `if`; 2 for
        a jump guard's variable read after it only where no jump was taken); for a loop 2 if so, 1
        if only a step reads it before assigning it, 0 if its value on entry is dead (a
        placeholder `t = None` that every step assigns first is then no carry)."""
        after = self.after[id(node)]
        if isinstance(node, ast.If):
            jumped = self.jumped.get(id(node))
            if jumped is not None:
                return tuple((2 if n not in jumped else True) if n in after else False for n in names)
            return tuple(n in after for n in names)
        head = self.heads[id(node)]
        return tuple(2 if n in after else 1 if n in head else 0 for n in names)

    def _test(self, e):
        """`and` / `or` / `not` and chained comparisons at the top of a test, made tracer-aware."""
        if isinstance(e, ast.Compare) and len(e.ops) > 1 and all(type(o) in _COMPARE for o in e.ops) \
                and not _blocks_thunks(e):
            call = _expr(f"{_PREFIX}.compare(None, {tuple(type(o).__name__ for o in e.ops)!r}, None)", e.lineno)
            call.args[0] = ast.Lambda(_noargs(), e.left)
            call.args[2] = ast.Tuple([ast.Lambda(_noargs(), c) for c in e.comparators], ast.Load())
            return ast.copy_location(call, e)
        if isinstance(e, ast.BoolOp) and not _blocks_thunks(e):  # (else left to Python, evaluated in place)
            fn = "and_" if isinstance(e.op, ast.And) else "or_"
            acc = self._test(e.values[-1])
            for v in reversed(e.values[:-1]):
                acc = ast.Call(ast.Attribute(ast.Name(_PREFIX, ast.Load()), fn, ast.Load()),
                               [ast.Lambda(_noargs(), self._test(v)), ast.Lambda(_noargs(), acc)], [])
            return acc
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            return ast.Call(ast.Attribute(ast.Name(_PREFIX, ast.Load()), "not_", ast.Load()),
                            [self._test(e.operand)], [])
        return e

    def _vars(self, names):
        init = "(" + "".join(f"{_PREFIX}.ld(lambda: {n}, {n!r}), " for n in names) + ")"
        tup = "(" + "".join(f"{n}, " for n in names) + ")"
        return init, tup

    def _fn(self, name, params, body, ret_names, line):
        # (an exception leaving the body records the variables' values on it: see `keep`)
        kept, _ = self._vars(ret_names)
        f = _stmts(f"def {name}({', '.join(params)}):\n"
                   f"    try:\n        pass\n"
                   f"    except BaseException as {_PREFIX}_exc:\n"
                   f"        {_PREFIX}.keep({_PREFIX}_exc, {kept})\n        raise\n"
                   f"    return ({''.join(n + ', ' for n in ret_names)})", line)[0]
        f.body[0].body = list(body)
        return f

    def _assign(self, names, call_src, call_args, line):
        call = _expr(call_src, line)
        call.args[:len(call_args)] = call_args  # the user's expressions, spliced in as AST
        if names:
            tup = "(" + "".join(f"{n}, " for n in names) + ")"
            target = _expr(tup, line)
            target.ctx = ast.Store()
            for e in target.elts:
                e.ctx = ast.Store()
            # an exception leaving a statement that ran as Python assigns what its body had
            # assigned until then (`left`), as the statement itself would have
            guard = _stmts(f"try:\n    pass\nexcept BaseException as {_PREFIX}_exc:\n"
                           f"    {_PREFIX}_left = {_PREFIX}.left({_PREFIX}_exc)\n"
                           f"    if {_PREFIX}_left is not None:\n        {tup} = {_PREFIX}_left\n"
                           f"    raise", line)[0]
            guard.body = [_at(ast.Assign([target], call), line)]
            return guard
        # no variables to assign, but the exception's mark is this statement's to take: left on
        # it, an enclosing traced `if` assigned its branch's values (an autograph4 trial)
        guard = _stmts(f"try:\n    pass\nexcept BaseException as {_PREFIX}_exc:\n"
                       f"    {_PREFIX}.left({_PREFIX}_exc)\n    raise", line)[0]
        guard.body = [_at(ast.Expr(call), line)]
        return guard

    def visit_IfExp(self, node):
        """`a if t else b` -> __ag.if_exp(t, lambda: a, lambda: b, where)."""
        self.generic_visit(node)
        reason = _blocks_thunks(node.body) or _blocks_thunks(node.orelse)
        if reason:  # left as Python: a traced test gets the reason
            node.test = self._guard(node.test, _IFEXP_WHAT, reason, self._where(node))
            return node
        call = _expr(f"{_PREFIX}.if_exp(None, None, None, {self._where(node)!r})", node.lineno)
        call.args[0] = self._test(node.test)
        call.args[1] = ast.copy_location(ast.Lambda(_noargs(), node.body), node.body)
        call.args[2] = ast.copy_location(ast.Lambda(_noargs(), node.orelse), node.orelse)
        return ast.copy_location(call, node)

    def visit_If(self, node):
        self.generic_visit(node)
        where = self._where(node)
        reason = _why_not(node, loop=False) or _closure_reason(node, self.closures)
        if reason:
            node.test = self._guard(node.test, "if", reason, where)
            return node
        k = next(self.count)
        names = _assigned(node.body + node.orelse)
        init, _ = self._vars(names)
        tf = self._fn(f"{_PREFIX}_if_true_{k}", names, node.body, names, node.lineno)
        ff = self._fn(f"{_PREFIX}_if_false_{k}", names, node.orelse or [_at(ast.Pass(), node.lineno)], names,
                      node.lineno)
        call = self._assign(names, f"{_PREFIX}.if_stmt(None, {tf.name}, {ff.name}, {init}, {tuple(names)!r}, "
                                   f"{self._used(node, names)!r}, {where!r}, "
                                   f"effect={self.py_effect.get(id(node))!r})", [self._test(node.test)], node.lineno)
        return [tf, ff, call]

    def visit_While(self, node):
        self.generic_visit(node)
        where = self._where(node)
        reason = _why_not(node, loop=True) or _closure_reason(node, self.closures)
        if reason:
            node.test = self._guard(node.test, "while", reason, where)
            return node
        k = next(self.count)
        names = _assigned(node.body)
        init, _ = self._vars(names)
        tf = _stmts(f"def {_PREFIX}_while_test_{k}({', '.join(names)}):\n    return None", node.lineno)[0]
        tf.body[0].value = self._test(node.test)
        bf = self._fn(f"{_PREFIX}_while_body_{k}", names, node.body, names, node.lineno)
        call = self._assign(names, f"{_PREFIX}.while_stmt({tf.name}, {bf.name}, {init}, {tuple(names)!r}, "
                                   f"{self._used(node, names)!r}, {where!r}, "
                                   f"effect={self.py_effect.get(id(node))!r})", [], node.lineno)
        return [tf, bf, call]

    def visit_For(self, node):
        it = node.iter
        is_range = (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                    and not it.keywords and 1 <= len(it.args) <= 3
                    and not any(isinstance(a, ast.Starred) for a in it.args))
        rng = it.func if is_range else None
        self.generic_visit(node)
        if is_range:
            it.func = rng  # `range` itself, not wrapped for conversion: for_range checks it is the builtin
        where = self._where(node)
        reason = _why_not(node, loop=True) or _closure_reason(node, self.closures)
        if reason:
            if is_range:
                node.iter = _expr(f"{_PREFIX}.py_range(range, (), {reason!r}, {where!r})", node.lineno)
                node.iter.args[0] = it.func
                node.iter.args[1] = ast.copy_location(ast.Tuple(list(it.args), ast.Load()), it)
            return node
        k = next(self.count)
        item = f"{_PREFIX}_item"
        bind = ast.copy_location(ast.Assign([node.target], _at(ast.Name(item, ast.Load()), node.lineno)), node)
        stmts = [bind] + node.body
        names = _assigned(stmts)
        init, _ = self._vars(names)
        bf = self._fn(f"{_PREFIX}_for_body_{k}", [item] + names, stmts, names, node.lineno)
        used = self._used(node, names)
        brk = getattr(node, "ag_break", None)
        brk = names.index(brk) if brk in names else None
        if is_range:
            call = self._assign(names, f"{_PREFIX}.for_range(None, None, {bf.name}, {init}, {tuple(names)!r}, "
                                       f"{used!r}, {where!r}, {brk!r}, effect={self.py_effect.get(id(node))!r})",
                                [it.func, ast.copy_location(ast.Tuple(list(it.args), ast.Load()), it)],
                              node.lineno)
        else:
            call = self._assign(names, f"{_PREFIX}.for_iter(None, {bf.name}, {init}, {tuple(names)!r}, {used!r}, "
                                       f"{where!r}, {not self.effects[id(node)]!r}, {brk!r})", [it],
                              node.lineno)
        return [bf, call]

    def _guard(self, test, what, reason, where):
        call = _expr(f"{_PREFIX}.py_test(None, {what!r}, {reason!r}, {where!r})", test.lineno)
        call.args[0] = test
        return call


def _returns(nodes, in_loop=False):
    """The `return` statements under nodes (not in nested scopes), with whether each is in a loop."""
    for n in nodes:
        if isinstance(n, _SCOPES):
            continue
        if isinstance(n, ast.Return):
            yield n, in_loop
        yield from _returns(list(ast.iter_child_nodes(n)), in_loop or isinstance(n, (ast.For, ast.While)))


def _always_returns(stmts) -> bool:
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return):
        return True
    return isinstance(last, ast.If) and _always_returns(last.body) and _always_returns(last.orelse)


def _fold(stmts) -> list:
    """`if c: ...; return a` followed by more statements: those move into the `else` (and the
    other way round), so that every `return` ends its branch (MindSpore's parser does the same)."""
    out = []
    for k, st in enumerate(stmts):
        if isinstance(st, ast.If) and any(True for _ in _returns([st])):
            rest = stmts[k + 1:]
            if rest and _always_returns(st.body) and not _always_returns(st.orelse):
                st.orelse, rest = st.orelse + rest, []
            elif rest and _always_returns(st.orelse) and not _always_returns(st.body):
                st.body, rest = st.body + rest, []
            st.body, st.orelse = _fold(st.body), _fold(st.orelse)
            out.append(st)
            return out + _fold(rest)
        out.append(st)
    return out


def _tail_returns(stmts) -> bool:
    """Whether every `return` under stmts ends the statement list it is in, through `if`s only."""
    for k, st in enumerate(stmts):
        last = k == len(stmts) - 1
        if isinstance(st, ast.Return):
            if not last:
                return False
        elif isinstance(st, ast.If):
            if any(True for _ in _returns([st])) and not (last and _tail_returns(st.body)
                                                          and _tail_returns(st.orelse)):
                return False
        elif any(True for _ in _returns([st])):
            return False
    return True


def _lift_returns(fdef: ast.FunctionDef) -> None:
    """Turn the `return`s under `if`s into assignments of one variable returned at the end, so
    that such an `if` can become a gd.cond. Left as they are when a `return` is in a loop or in
    the middle of a block (those `if`s then stay Python)."""
    rets = list(_returns(fdef.body))
    if not any(isinstance(n, ast.If) and any(True for _ in _returns([n])) for n in fdef.body) \
            or any(loop for _, loop in rets):
        return
    body = _fold(fdef.body)
    if not _tail_returns(body):
        return

    def rewrite(stmts):
        for k, st in enumerate(stmts):
            if isinstance(st, ast.Return):
                value = st.value if st.value is not None else ast.Constant(None)
                stmts[k] = ast.copy_location(ast.Assign([ast.Name(_RETVAL, ast.Store())], value), st)
            elif isinstance(st, ast.If):
                rewrite(st.body)
                rewrite(st.orelse)
    rewrite(body)
    line = fdef.body[0].lineno
    first = [] if _always_returns(body) else _stmts(f"{_RETVAL} = None", line)
    end = body[-1].end_lineno or line
    fdef.body = first + body + _stmts(f"return {_RETVAL}", end)


def _jumps(stmts) -> set:
    """The kinds of `break` / `continue` under stmts that belong to the enclosing loop (not to a
    loop nested in it); "other" when one sits in a statement other than `if` / `with`."""
    found = set()

    def walk(nodes, plain):
        for n in nodes:
            if isinstance(n, _SCOPES) or isinstance(n, (ast.For, ast.While, ast.AsyncFor)):
                continue
            if isinstance(n, (ast.Break, ast.Continue)):
                found.add("break" if isinstance(n, ast.Break) else "continue")
                if not plain:
                    found.add("other")
                continue
            walk(list(ast.iter_child_nodes(n)), plain and (isinstance(n, (ast.If, ast.With)) or
                                                          not isinstance(n, ast.stmt)))
    walk(stmts, True)
    return found


def _flag(name: str, value: bool, line: int):
    return _stmts(f"{name} = {value}", line)[0]


def _lower(stmts, brk, cont, line):
    """stmts with `break` / `continue` made assignments of the flags, and what follows one under
    `if not flags:`."""
    out = []
    for k, st in enumerate(stmts):
        if isinstance(st, ast.Break):
            return out + [_flag(brk, True, st.lineno)]
        if isinstance(st, ast.Continue):
            return out + [_flag(cont, True, st.lineno)]
        if not _jumps([st]):
            out.append(st)
            continue
        if isinstance(st, ast.If):
            st.body, st.orelse = _lower(st.body, brk, cont, line), _lower(st.orelse, brk, cont, line)
        else:  # with
            st.body = _lower(st.body, brk, cont, line)
        out.append(st)
        rest = stmts[k + 1:]
        if rest:
            flags = " or ".join(f for f in (brk, cont) if f)
            guard = _stmts(f"if not ({flags}):\n    pass", rest[0].lineno)[0]
            guard.body = _lower(rest, brk, cont, line)
            guard.ag_jump_guard = True  # (its other branch is the path of a jump: _reads_after)
            out.append(guard)
        return out
    return out


class _LowerJumps(ast.NodeTransformer):
    """`break` and `continue` of a loop become flags (as AutoGraph does): a `while` tests
    `not brk and (test)`, a `for` body runs under `if not brk:` (and its helper stops a Python
    loop once the flag is True), the statements after a jump run under `if not (brk or cont):`.
    Loops with an `else:` or a jump inside `try` / `match` keep theirs (and stay Python)."""

    def __init__(self):
        self.count = itertools.count()

    def visit_FunctionDef(self, node):
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def _loop(self, node):
        self.generic_visit(node)
        kinds = _jumps(node.body)
        if not kinds or "other" in kinds or node.orelse:
            return node
        k = next(self.count)
        brk = f"{_PREFIX}_brk_{k}" if "break" in kinds else None
        cont = f"{_PREFIX}_cont_{k}" if "continue" in kinds else None
        body = _lower(node.body, brk, cont, node.lineno)
        if cont:
            body = [_flag(cont, False, node.lineno)] + body
        pre = []
        if brk:
            pre = [_flag(brk, False, node.lineno)]
            if isinstance(node, ast.While):
                test = _expr(f"not {brk} and None", node.lineno)
                test.values[1] = node.test
                node.test = test
            else:
                guard = _stmts(f"if not {brk}:\n    pass", node.lineno)[0]
                # the target is bound under the guard too: the steps after the break leave it at
                # the item it broke at (`for r in xs: ... break` then `return r`)
                item = f"{_PREFIX}_item_{k}"  # (an internal name: not carried)
                bind = ast.copy_location(ast.Assign([node.target], _at(ast.Name(item, ast.Load()), node.lineno)),
                                         node.target)
                guard.body = [bind] + body
                node.target = ast.copy_location(ast.Name(item, ast.Store()), node.target)
                body = [guard]
                node.ag_break = brk
        node.body = body
        return pre + [node]

    visit_While = visit_For = _loop


def _noargs():
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                         defaults=[])




# ---------------------------------------------------------------- convert


_NOT_CONVERTED = object()
_CODE_CACHE: dict = {}  # (fn.__code__, its file) -> converted code object, or _NOT_CONVERTED
_lock = threading.Lock()


_FILE_LAMBDAS: dict = {}  # filename -> {line: [the ast.Lambda nodes starting there]} (None: no source)
_LAMBDA_DEF = _PREFIX + "_lambda"


def _file_lambdas(fname: str, module_globals: dict | None = None):
    """The lambdas of file `fname` by their first line: the file is parsed and walked once per
    process, not once per lambda converted (a walk of a 500-line file took 4-5 ms)."""
    if fname not in _FILE_LAMBDAS:
        try:
            tree = ast.parse("".join(_source_lines(fname, module_globals)) or "\x00")
        except (SyntaxError, ValueError):
            _FILE_LAMBDAS[fname] = None
        else:
            by_line: dict = {}
            for n in ast.walk(tree):
                if isinstance(n, ast.Lambda):
                    by_line.setdefault(n.lineno, []).append(n)
            _FILE_LAMBDAS[fname] = by_line
    return _FILE_LAMBDAS[fname]


def _lambda_params(code) -> tuple[list, list, str | None, list, str | None]:
    """(positional-only, positional, *name, keyword-only, **name) parameter names of `code`
    (co_varnames holds the positional ones, then the keyword-only ones, then *args, then **kw)."""
    v, npos, nkw = code.co_varnames, code.co_argcount, code.co_kwonlyargcount
    rest = list(v[npos + nkw:])
    star = rest.pop(0) if code.co_flags & inspect.CO_VARARGS else None
    dstar = rest.pop(0) if code.co_flags & inspect.CO_VARKEYWORDS else None
    return list(v[:code.co_posonlyargcount]), list(v[code.co_posonlyargcount:npos]), star, list(v[npos:npos + nkw]), dstar


# instructions that two compilations of one expression may place differently (3.11)
_LAYOUT_OPS = frozenset({"CACHE", "RESUME", "COPY_FREE_VARS", "NOP", "PUSH_NULL", "PRECALL", "EXTENDED_ARG",
                         "MAKE_CELL"})


def _code_shape(code) -> tuple:
    """What two compilations of the same lambda share: its names, variables, free and cell
    variables, constants (nested code by its name and shape) and instructions with their
    arguments, jumps by the instruction they reach. Not the bytecode itself: Python 3.11 calls a
    method of a name its module imported without LOAD_METHOD (LOAD_ATTR after a LOAD_GLOBAL that
    pushes NULL), which a lambda compiled apart cannot know."""
    import bisect
    import dis
    consts = tuple(("code", c.co_name, _code_shape(c)) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c))
                   for c in code.co_consts)
    kept = [i for i in dis.get_instructions(code) if i.opname not in _LAYOUT_OPS]
    offsets = [i.offset for i in kept]
    jumps = set(dis.hasjrel) | set(dis.hasjabs)
    ops = []
    for ins in kept:
        val = ins.argval
        if ins.opcode in jumps:
            val = ("to", bisect.bisect_left(offsets, val))
        elif isinstance(val, types.CodeType):
            val = ("code", val.co_name)
        ops.append(("LOAD_ATTR" if ins.opname == "LOAD_METHOD" else ins.opname, repr(val)))
    return code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, consts, tuple(ops)


def _is_body_of(code, text: str) -> bool:
    """Whether `text`, compiled as the body of a lambda with `code`'s parameters and free
    variables, gives a code object of `code`'s shape (`_code_shape`)."""
    posonly, pos, star, kwonly, dstar = _lambda_params(code)
    params = ", ".join(posonly + (["/"] if posonly else []) + pos + ([f"*{star}"] if star else ["*"] if kwonly else [])
                       + kwonly + ([f"**{dstar}"] if dstar else []))
    free = "".join(f"    {n} = None\n" for n in code.co_freevars)
    check = f"def {_PREFIX}_check():\n{free}    return lambda {params}: (\n{text}\n)\n"
    try:
        outer = next(c for c in compile(check, "<lambda check>", "exec", dont_inherit=True).co_consts
                     if isinstance(c, types.CodeType))
    except (SyntaxError, ValueError, StopIteration):
        return False
    twin = next((c for c in outer.co_consts if isinstance(c, types.CodeType) and c.co_name == "<lambda>"), None)
    return twin is not None and _code_shape(twin) == _code_shape(code)


def _lambda_from_positions(code, module_globals: dict | None = None):
    """`def __ag_lambda(params): return body` for the lambda of `code`, its body read from the
    file at the columns the code's instructions come from (co_positions), or None. Checked: the
    body, compiled as a lambda of the same parameters and free variables, must give a code object
    of the same shape (`_code_shape`); anything else (no positions, source that does not match,
    as for code compiled from a string under a file's name) is None."""
    spans = [p for p in code.co_positions() if None not in p and p[2:] != (0, 0)]  # (0, 0): RESUME
    lines = _source_lines(code.co_filename, module_globals)
    if not spans or not lines:
        return None
    l0, c0 = min((p[0], p[2]) for p in spans)
    l1, c1 = max((p[1], p[3]) for p in spans)
    if l1 > len(lines):
        return None
    raw = [ln.encode("utf-8") for ln in lines[l0 - 1:l1]]  # the columns count UTF-8 bytes
    raw[-1] = raw[-1][:c1]
    raw[0] = raw[0][c0:]
    try:
        text = b"".join(raw).decode("utf-8")
        body = ast.parse("(" + text + "\n)", mode="eval").body
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None
    if not _is_body_of(code, text):
        return None
    posonly, pos, star, kwonly, dstar = _lambda_params(code)
    # the body's nodes at the lines and columns of the file
    ast.increment_lineno(body, l0 - 1)
    for n in ast.walk(body):
        for attr, at in (("col_offset", "lineno"), ("end_col_offset", "end_lineno")):
            if getattr(n, attr, None) is not None and getattr(n, at, None) == l0:
                setattr(n, attr, getattr(n, attr) + c0 - 1)  # (less the "(" put in front)
    arg = ast.arg
    args = ast.arguments(posonlyargs=[arg(n) for n in posonly], args=[arg(n) for n in pos],
                         vararg=arg(star) if star else None, kwonlyargs=[arg(n) for n in kwonly],
                         kw_defaults=[None] * len(kwonly), kwarg=arg(dstar) if dstar else None, defaults=[])
    ret = ast.copy_location(ast.Return(body), body)
    fdef = ast.copy_location(ast.FunctionDef(name=_LAMBDA_DEF, args=args, body=[ret], decorator_list=[],
                                             returns=None), body)
    fdef.lineno = code.co_firstlineno  # the `lambda` keyword's line (the body may start below it)
    ast.fix_missing_locations(fdef)
    return ast.Module([fdef], type_ignores=[])


def _lambda_def(code, module_globals: dict | None = None):
    """A module holding `def __ag_lambda(args): return body` for the lambda of code (file lines
    kept), or None when its source is not found or several lambdas on its line could be it. Read
    from the columns of its own instructions where it can be (`_lambda_from_positions`: no parse
    of the whole file, 5-8 ms for a 500-line file), else found in the file's parsed lambdas (on
    its line, of its parameters, and of its code's shape: `_is_body_of`)."""
    tree = _lambda_from_positions(code, module_globals)
    if tree is not None:
        return tree
    lambdas = _file_lambdas(code.co_filename, module_globals)
    if lambdas is None:
        return None
    posonly, pos, star, kwonly, dstar = _lambda_params(code)
    names = posonly + pos + kwonly + [n for n in (star, dstar) if n]
    found = []
    for n in lambdas.get(code.co_firstlineno, ()):
        a = n.args
        params = [x.arg for x in a.posonlyargs + a.args] + ([a.vararg.arg] if a.vararg else []) \
            + [x.arg for x in a.kwonlyargs] + ([a.kwarg.arg] if a.kwarg else [])
        if sorted(params) == sorted(names) and _is_body_of(code, ast.unparse(n.body)):
            found.append(n)
    if len(found) != 1:
        return None
    import copy
    lam = copy.deepcopy(found[0])  # the file's tree is shared by its lambdas: convert a copy
    fdef = ast.FunctionDef(name=_LAMBDA_DEF, args=lam.args, body=[ast.copy_location(ast.Return(lam.body), lam)],
                           decorator_list=[], returns=None)
    ast.copy_location(fdef, lam)
    return ast.Module([fdef], type_ignores=[])


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _mangled(tree) -> bool:
    for n in ast.walk(tree):
        name = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else None
        if name and name.startswith("__") and not name.endswith("__") and not name.startswith(_PREFIX):
            return True
    return False


# a line that starts a function's source (inspect.findsource's pattern for code objects)
_DEF_LINE = re.compile(r"^(\s*def\s)|(\s*async\s+def\s)|(.*(?<!\w)lambda(:|\s))|^(\s*@)")


def _source_lines(filename: str, module_globals: dict | None) -> list[str]:
    """The lines of the source file `filename` of code whose module's globals are `module_globals`,
    or [] where inspect.getsourcefile would find none: a file that is not there counts only when
    linecache has it (an interactive cell) or it is the module's own file, whose loader then gives
    the text (a zip import). linecache alone would also look a missing name up along sys.path (a
    block of a markdown page compiled under the page's relative path found the page), or take the
    source of the module of `module_globals` for code compiled from some other text under a name
    of its own."""
    import linecache
    own = (module_globals or {}).get("__file__")
    if not (os.path.exists(filename) or filename in linecache.cache
            or (own is not None and os.path.abspath(own) == os.path.abspath(filename))):
        return []
    linecache.checkcache(filename)
    return linecache.getlines(filename, module_globals)


def _code_source(fn) -> str:
    """The source of `fn.__code__`, as `inspect.getsource(fn.__code__)` finds it (CPython 3.11's
    findsource for a code object: back from co_firstlineno to a def, lambda or decorator line, then
    the indented block), without `inspect.getmodule`: given a code object, that walks every module
    in sys.modules (a realpath per module file, once per process and again for modules imported
    since), 8 ms with graphad and TVM imported and 40-70 ms in a process that has imported SciPy
    and scikit-learn, all of it on the first call of the first jitted function. The module's
    globals, which linecache needs for sources only a loader can give, are fn's own."""
    code = fn.__code__
    lines = _source_lines(code.co_filename, fn.__globals__)
    if not lines:
        raise OSError("could not get source code")
    lnum = code.co_firstlineno - 1
    while lnum > 0:
        if lnum >= len(lines):
            raise OSError("lineno is out of bounds")
        if _DEF_LINE.match(lines[lnum]):
            break
        lnum -= 1
    return "".join(inspect.getblock(lines[lnum:]))


def _source_matches(code, src: str) -> bool | None:
    """Whether the def `src` (dedented) compiles to code of `code`'s shape (`_code_shape`, as a
    lambda's source is checked), compiled as a function nested where `code`'s free variables are
    locals; None where that cannot tell (a method's implicit __class__ cell, which only a class
    body gives). A file edited after its import gives source that does not match: converting it
    ran the edited text (a * 3.0 where the function computes a * 2.0; a helper's trial)."""
    if "__class__" in code.co_freevars:
        return None
    if code.co_freevars:
        free = "".join(f"    {n} = None\n" for n in code.co_freevars)
        check = f"def {_PREFIX}_check():\n{free}{textwrap.indent(src, '    ')}\n"
    else:
        # at module level, as the function's own names are globals (a recursive function's call
        # of itself: nested in the check it was a free variable, and every recursive function
        # was taken for an edited one)
        check = src
    try:
        module = compile(check, "<def check>", "exec", dont_inherit=True)
        outer = next(c for c in module.co_consts if isinstance(c, types.CodeType)) if code.co_freevars else module
    except (SyntaxError, ValueError, StopIteration):
        return None
    twin = next((c for c in outer.co_consts if isinstance(c, types.CodeType) and c.co_name == code.co_name), None)
    return None if twin is None else _code_shape(twin) == _code_shape(code)


def _convert_code(fn):
    """The code object of fn's converted body, or _NOT_CONVERTED."""
    code = fn.__code__
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return _NOT_CONVERTED
    if code.co_name == "<lambda>":
        tree = _lambda_def(code, fn.__globals__)
        if tree is None:
            return _NOT_CONVERTED
    else:
        try:
            # the code object's source: getsource(fn) would follow a functools.wraps __wrapped__
            # to another function's source
            src = textwrap.dedent(_code_source(fn))
            tree = ast.parse(src)
        except (OSError, TypeError, SyntaxError, IndentationError):
            return _NOT_CONVERTED
        if not tree.body or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].name != code.co_name:
            return _NOT_CONVERTED
        if _source_matches(code, src) is False:
            # the file changed since the function was compiled (edited after its import): the
            # text now there is not what the function computes, so it is not converted from it
            from ..errors import warn_at_user_line
            warn_at_user_line(f"graphad: the source of {fn.__qualname__} in {_short_path(code.co_filename)} is not "
                              f"the code it was compiled from (the file changed since it was imported); it runs "
                              f"unconverted (reload the module for graph-mode if/while/for on tensors)")
            return _NOT_CONVERTED
        ast.increment_lineno(tree, code.co_firstlineno - 1)  # the source starts at co_firstlineno
    fdef = tree.body[0]
    if not any(isinstance(n, (ast.If, ast.IfExp, ast.While, ast.For, ast.Call)) for n in _walk_scope(fdef.body)) \
            or _mangled(fdef):
        return _NOT_CONVERTED
    # the function object already exists: its decorators were applied to it, its defaults and
    # annotations evaluated; the new code needs none of them
    fdef.decorator_list = []
    fdef.returns = None
    a = fdef.args
    a.defaults, a.kw_defaults = [], [None] * len(a.kwonlyargs)
    for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
        if arg is not None:
            arg.annotation = None
    _lift_returns(fdef)
    fdef.body = [x for st in fdef.body for x in _as_list(_LowerJumps().visit(st))]
    conv = _Converter(fdef, _short_path(code.co_filename))
    conv.visit(fdef)
    # a factory whose parameters are fn's free variables (and the helper module): the converted
    # function closes over them, and gets fn's own cells in their place
    free = list(code.co_freevars)
    # under a name of its own: a recursive function's call of itself then reads its global (or
    # its enclosing function's variable), the function as written, which __ag.fn converts at the
    # call; under its own name it read the factory's local and was never converted
    fdef.name = f"{_PREFIX}_converted"
    factory = ast.FunctionDef(name=f"{_PREFIX}_factory", args=ast.arguments(
        posonlyargs=[], args=[ast.arg(_PREFIX)] + [ast.arg(n) for n in free], vararg=None, kwonlyargs=[],
        kw_defaults=[], kwarg=None, defaults=[]), body=[fdef, ast.Return(ast.Name(fdef.name, ast.Load()))],
        decorator_list=[], returns=None)
    module = ast.Module([factory], type_ignores=[])
    ast.fix_missing_locations(module)
    try:
        compiled = compile(module, code.co_filename, "exec", dont_inherit=True)
    except SyntaxError:
        return _NOT_CONVERTED
    fcode = next(c for c in compiled.co_consts if isinstance(c, types.CodeType))
    inner = next(c for c in fcode.co_consts if isinstance(c, types.CodeType) and c.co_name == fdef.name)
    inner = inner.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    if any(n != _PREFIX and n not in free for n in inner.co_freevars):
        return _NOT_CONVERTED
    return inner


def convert(fn):
    """The converted form of fn (a function or a bound method); fn itself when there is nothing
    to convert or its source is unavailable."""
    if isinstance(fn, types.MethodType):
        f = convert(fn.__func__)
        return fn if f is fn.__func__ else types.MethodType(f, fn.__self__)
    if not isinstance(fn, types.FunctionType) or getattr(fn, "__graphad_converted__", False):
        return fn
    code = fn.__code__
    if not _is_user_code(code):
        return fn  # graphad's own functions, the standard library's, installed packages'

    # by the code object and its file: code objects compare equal by content, not by file, and a
    # converted body compiles under its function's file name
    new = _CODE_CACHE.get((code, code.co_filename))
    if new is None:
        try:
            new = _convert_code(fn)
        except Exception as e:  # noqa: BLE001 -- a converter bug: run the function as written, and say so
            warnings.warn(f"graphad could not convert {fn.__qualname__} for graph mode ({type(e).__name__}: {e}); "
                          f"it runs unconverted (tensor-dependent if/while/for in it raise a TraceError)",
                          RuntimeWarning, stacklevel=2)
            new = _NOT_CONVERTED
        with _lock:
            _CODE_CACHE[(code, code.co_filename)] = new
    if new is _NOT_CONVERTED:
        return fn
    cells = dict(zip(code.co_freevars, fn.__closure__ or ()))
    closure = tuple(types.CellType(_HELPERS) if n == _PREFIX else cells[n] for n in new.co_freevars)
    out = types.FunctionType(new, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    out.__kwdefaults__ = fn.__kwdefaults__
    out.__qualname__ = fn.__qualname__
    out.__doc__ = fn.__doc__
    out.__module__ = fn.__module__
    out.__wrapped__ = fn
    out.__graphad_converted__ = True
    return out


_LIBRARY_DIRS = tuple(os.path.join(os.path.realpath(d), "") for d in {
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # graphad itself
    os.path.dirname(os.__file__),                                  # the standard library
    *(p for p in __import__("site").getsitepackages() if os.path.isdir(p))})


_USER_FILES: dict = {}  # co_filename -> whether it is the user's code


def _is_user_code(code) -> bool:
    f = code.co_filename
    hit = _USER_FILES.get(f)
    if hit is None:
        try:
            hit = not f.startswith("<") and not os.path.realpath(f).startswith(_LIBRARY_DIRS)
        except (OSError, ValueError):
            hit = False
        _USER_FILES[f] = hit
    return hit


def fn(f):
    """A callee of converted code: the user's Python functions and methods are converted as
    well (graphad's own, the standard library's and installed packages' are called as they are)."""
    try:
        target = f.__func__ if isinstance(f, types.MethodType) else f
        if isinstance(target, types.FunctionType) and not getattr(target, "__graphad_converted__", False) \
                and _is_user_code(target.__code__):
            return convert(f)
    except Exception:  # noqa: BLE001 -- never worse than calling f itself
        pass
    return f


_HELPERS = types.SimpleNamespace(fn=fn, ld=ld, if_stmt=if_stmt, if_exp=if_exp, while_stmt=while_stmt,
                                 for_range=for_range, for_iter=for_iter, and_=and_, or_=or_, not_=not_,
                                 compare=compare, py_test=py_test, py_range=py_range, keep=keep, left=left)
