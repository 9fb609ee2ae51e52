"""gd.jit: per-signature compilation of a Python function, and the AOT path lower -> compile -> save/load.

`jit(fn)(*args)` stages fn like every transformation (GraphFunction). `jit(fn).lower(*specs)`
traces at `TensorSpec`s (or example tensors) and returns a `Lowered` holding the optimised graph;
`.compile()` gives a `Compiled` callable; `.save(path)` writes one artifact (shared library +
manifest + the values of captured Parameters/tensors) that `gd.load(path)` turns back into a
callable in a process that has neither fn's source nor a compiler step to run.
It is front-end code (it stages through GraphFunction) over the runtime's artifacts, so it lives in
the front end (it was graphad/runtime/jit.py, which made the runtime import the front end).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtypes as dt
from .. import pytree
from ..errors import GraphadError, ShapeError, TransformError
from ..prims.trace import at_user
from .compiled import Compiled, OutSpec, leaf_to_tensor, load  # noqa: F401  (this module's names before)
from .function import (GraphFunction, fn_key, get_target, make_runner, no_statics,
                       param_names, static_key)
from .autograph import convert, loop_defaults
from ..ir.core import MAX_DIM, MAX_RANK, Graph, TensorType


class TensorSpec(TensorType):
    """Shape and dtype of an argument, for ahead-of-time lowering: an abstract value, so tracing at
    a TensorSpec allocates nothing however large its shape.

    `TensorSpec(shape, dtype=float32)`: `shape` a tuple of non-negative ints (an int n is (n,)),
    `dtype` a graphad dtype or its name ("bfloat16"). A dimension that is not an int (2.0,
    True) or is negative, or a rank above the maximum, is a ShapeError. The attributes `shape`
    (a tuple of ints) and `dtype` (a dtype object) hold them."""

    __slots__ = ()

    def __init__(self, shape, dtype=dt.float32):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            dims = list(shape)
        except TypeError:
            raise ShapeError(f"TensorSpec: shape must be a tuple of ints, got {shape!r}") from None
        for s in dims:
            # operator.index semantics: 2.0 or True is not a dimension (int(2.5) would truncate)
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise ShapeError(f"TensorSpec: shape {tuple(dims)!r} has a dimension that is not an int: {s!r}")
            if s < 0:
                raise ShapeError(f"TensorSpec: shape {tuple(dims)!r} has a negative dimension {s}")
            if s > MAX_DIM:
                raise ShapeError(f"TensorSpec: dimension {s} of shape {tuple(dims)!r} does not fit in int64")
        if len(dims) > MAX_RANK:
            raise ShapeError(f"TensorSpec: rank {len(dims)} is above the maximum rank {MAX_RANK}")
        super().__init__(dims, dtype)

    def __repr__(self):
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype.name})"

    __str__ = __repr__


def _check_static_argnums(static_argnums, fn=None) -> tuple:
    """static_argnums as a sorted tuple of distinct non-negative ints (TransformError otherwise). A
    negative position counts from the end of fn's positional parameters, as in JAX (an error
    where fn takes *args, whose count is not known until a call)."""
    items = (static_argnums,) if not isinstance(static_argnums, (tuple, list)) else tuple(static_argnums)
    resolved = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TransformError(f"jit: static_argnums must be an int or a tuple of ints, got {static_argnums!r}"
                                 f"{at_user()}")
        if i < 0:
            n = _fixed_positional_count(fn)
            if n is None or i < -n:
                why = ("it takes *args, so positions count from 0" if n is None else
                       f"it has {n} positional parameter(s)")
                raise TransformError(f"jit: negative static_argnums {i} cannot be resolved: {why}{at_user()}")
            i = n + i
        resolved.append(int(i))
    items = tuple(resolved)
    if len(set(items)) != len(items):
        raise TransformError(f"jit: repeated static_argnums in {tuple(items)}")
    return tuple(sorted(int(i) for i in items))


def _signature(fn):
    """inspect's signature of fn (of a Cell's construct), or None where it has none."""
    import inspect
    try:
        return inspect.signature(fn.construct if not inspect.isfunction(fn) and hasattr(fn, "construct") else fn)
    except (TypeError, ValueError):
        return None


def _fixed_positional_count(fn) -> int | None:
    """The number of fn's positional parameters, or None where it takes *args (or is unknown)."""
    sig = _signature(fn)
    if sig is None:
        return None
    ps = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in ps):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in ps)


def _warn_unknown_names(fn, names: tuple) -> None:
    """Warn (as JAX does) about static_argnames that name no parameter of fn, where fn takes no
    **kwargs that could receive them: a misspelt name would leave the argument traced."""
    import warnings
    sig = _signature(fn)
    if sig is None:
        return
    ps = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in ps.values()):
        return
    unknown = [n for n in names if n not in ps]
    if unknown:
        warnings.warn(f"jit({getattr(fn, '__name__', type(fn).__name__)}): static_argnames {unknown} name no "
                      f"parameter of the function (its parameters: {list(ps)}){at_user()}", UserWarning,
                      stacklevel=4)


def _split_static(args, static_argnums, name: str = "jit", by_name: tuple = ()):
    """(dynamic positional args, ((index, static value), ...)). A static position beyond the call's
    positional arguments is fine when it has a name (`by_name`: passed by keyword, or defaulted)."""
    static_argnums = tuple(i for i in static_argnums if i < len(args) or i not in by_name)
    if static_argnums and static_argnums[-1] >= len(args):
        raise TransformError(f"{name}: static_argnums {static_argnums[-1]} is out of range for a call with "
                             f"{len(args)} positional argument(s)")
    statics = tuple((i, args[i]) for i in static_argnums)
    dyn = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    return dyn, statics


def _check_static_argnames(static_argnames) -> tuple:
    """static_argnames as a tuple of distinct strings (TransformError otherwise)."""
    items = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    for n in items:
        if not isinstance(n, str):
            raise TransformError(f"jit: static_argnames must be a str or a tuple of strs, got {static_argnames!r}")
    if len(set(items)) != len(items):
        raise TransformError(f"jit: repeated static_argnames in {items}")
    return items


def _static_key(v):
    """A key for a static argument that keeps its type: 1, 1.0 and True (and 0.0 and -0.0) are
    equal in Python but stage different programs (frontend.function.static_key)."""
    return static_key(v)


def _hashable(v) -> bool:
    try:
        static_key(v)
        return True
    except TypeError:
        return False


def _merge(dyn, statics):
    args = list(dyn)
    for i, v in statics:
        args.insert(i, v)
    return tuple(args)


class JitFunction:
    """What `gd.jit` returns: fn compiled per input signature; static arguments' values are part
    of the signature.

    Call it as fn; `.lower(*specs)` traces it at one signature for ahead-of-time compilation.
    `static_argnums` and `static_argnames` hold the static parameters by position and by name
    (each completed from the other with fn's parameter names). It is not made directly."""

    def __init__(self, fn: Callable, static_argnums=(), backend: str | None = None, static_argnames=(),
                 max_steps: int | None = None):
        self.fn = fn
        nums = _check_static_argnums(static_argnums, fn)
        names = _check_static_argnames(static_argnames)
        _warn_unknown_names(fn, names)
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise TransformError(f"jit: max_steps must be a positive int or None, got {max_steps!r}")
        self.max_steps = max_steps
        # as JAX: a static parameter may be named either way, and is static however it is passed
        params = param_names(fn) or []
        nums = tuple(sorted(set(nums) | {params.index(n) for n in names if n in params}))
        names = tuple(dict.fromkeys(names + tuple(params[i] for i in nums if i < len(params))))
        self.static_argnums, self.static_argnames = nums, names
        self._named = tuple(i for i in nums if i < len(params))  # static positions that have a name
        if backend not in (None, "tvm", "numpy"):
            raise GraphadError(f"jit({getattr(fn, '__name__', type(fn).__name__)}): unknown backend {backend!r}; "
                               f"use 'tvm', 'numpy' or None (gd.get_backend())")
        self.backend = backend
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self._by_statics: dict = {}
        # without static arguments there is one GraphFunction: calls go straight to it
        self._plain = None if self.static_argnums else self._graph_function(())

    def _graph_function(self, statics, kw_statics=()) -> GraphFunction:
        try:
            key = tuple((i, _static_key(v)) for i, v in statics) + tuple((k, _static_key(v)) for k, v in kw_statics)
        except TypeError:
            bad = [f"argument {i}" for i, v in statics if not _hashable(v)] + \
                  [f"keyword argument {k!r}" for k, v in kw_statics if not _hashable(v)]
            raise GraphadError(f"jit({self.__name__}): static {', '.join(bad)} must be hashable, or a tuple, list or "
                               f"dict of such values (not a set or an array): a static value is part of the "
                               f"compiled function's signature") from None
        gf = self._by_statics.get(key)
        if gf is None:
            gf = self._by_statics[key] = self._make_graph_function(statics, key, dict(kw_statics))
        return gf

    def _make_graph_function(self, statics, key=(), kw_statics=None) -> GraphFunction:
        # graph mode: Python if/while/for on tensors become cond/while_loop/scan (frontend/autograph.py);
        # a Cell converts its construct when it is called under the trace
        fn = convert(self.fn)
        names = param_names(self.fn)
        if names is not None:
            names = [n for i, n in enumerate(names) if i not in self.static_argnums]
        kw_statics = kw_statics or {}
        bound = self.max_steps

        def impl(*dyn, **kwargs):
            with loop_defaults(bound):
                return fn(*_merge(dyn, statics), **kwargs, **kw_statics)
        # every leaf of the call is traced (a Python number becomes a weakly typed tensor, as JAX's
        # jit does):
        # what should stay a Python value is named in static_argnums / static_argnames
        return GraphFunction(impl, ("jit", fn_key(self.fn), key, bound), self.__name__, self.backend, params=names,
                             statics=no_statics, label=f"jit({self.__name__})", weak_numbers=True)

    def __call__(self, *args, **kwargs):
        plain = self._plain
        if plain is not None and not kwargs:
            return plain(*args)
        dyn, statics = _split_static(args, self.static_argnums, self.__name__, self._named)
        kw_statics = tuple(sorted((k, kwargs.pop(k)) for k in list(kwargs) if k in self.static_argnames))
        return self._graph_function(statics, kw_statics)(*dyn, **kwargs)

    def lower(self, *specs, **kwargs) -> "Lowered":
        """Trace at `specs` (TensorSpec or example tensors; static arguments given as values, static
        keyword arguments by name). A compiled function takes its tensors positionally. A Python
        number given here is an input of its kind's default dtype (float32, int64, complex64),
        strongly typed as every input of a compiled function is, not weakly typed as in a jit
        call: `lower(float64_spec, 0.1)` multiplies by a float32 input (0.1 rounded to float32
        where jit's call uses 0.1 itself); give `gd.TensorSpec((), gd.float64)` for a float64
        scalar, or make the number static (static_argnums)."""
        dyn, statics = _split_static(specs, self.static_argnums, self.__name__, self._named)
        kw_statics = tuple(sorted((k, kwargs.pop(k)) for k in list(kwargs) if k in self.static_argnames))
        if kwargs:
            raise TransformError(f"{self.__name__}.lower: keyword argument(s) {sorted(kwargs)} are not in "
                                 f"static_argnames; an AOT-compiled function takes its tensors positionally")
        leaves, in_tree = pytree.flatten(dyn)
        # tracing reads only the shape and dtype of a leaf: a TensorSpec stands for itself (an
        # array of zeros in its place cost the whole array, 549 MB for a (12000, 12000) spec)
        leaves = [s if isinstance(s, TensorSpec) else leaf_to_tensor(s) for s in leaves]
        gf = self._graph_function(statics, kw_statics)
        graph, spec, captures = gf.trace(leaves, in_tree)
        # the parameter names of the tensor arguments, for the compiled function's errors
        params = param_names(self.fn) or []
        names = [n for i, n in enumerate(params) if i not in self.static_argnums][:len(dyn)]
        names += [None] * (len(dyn) - len(names))  # *args
        return Lowered(graph, in_tree, spec, captures, self.__name__, self.backend, arg_names=names)


class Lowered:
    """The optimised graph of a jitted function at one signature: what `JitFunction.lower`
    returns (it is not made directly). `.compile()` turns it into a `Compiled`."""

    def __init__(self, graph: Graph, in_tree, out_spec: OutSpec, captures: list, name: str, backend,
                 arg_names=None):
        self.graph, self.in_tree, self.out_spec, self.captures = graph, in_tree, out_spec, captures
        self.name, self.backend, self.arg_names = name, backend, arg_names

    def as_text(self) -> str:
        """The optimised graph as text, in the IR's textual form (docs/ir.md)."""
        return str(self.graph)

    def compile(self, target=None) -> "Compiled":
        """Compile the graph and return a `Compiled` callable (nothing is traced again).

        `target`: as `gd.set_target` takes it ("llvm", "cuda", a TVM Target or a dict such as
        {"kind": "llvm", "mcpu": "haswell"}); None, the default, is `gd.get_target()`. The backend
        is the jit's `backend`, else `gd.get_backend()`: on "numpy" the result runs the reference
        interpreter and cannot be saved."""
        runner = make_runner(self.graph, self.backend, target)
        return Compiled(self.graph, self.in_tree, self.out_spec, self.captures, runner, self.name,
                        target if target is not None else get_target(), arg_names=self.arg_names)
