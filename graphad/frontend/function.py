"""Graph functions: Python callables that trace themselves into graphs.

A `GraphFunction` wraps an implementation written over tensors (`impl`). Under an active trace
(or with tracer arguments) it simply runs `impl`, so its graph is inlined into the enclosing
graph. On concrete arguments it is staged: traced once per input signature into a graph, the
default pipeline runs, the result is compiled for the current target (or interpreted with
backend="numpy"), cached, and executed with the arguments plus the captured tensors (closed-over
Tensors and Parameters, re-read at every call).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .. import pytree
from ..errors import GraphadError
from ..ir.core import Graph, TensorType
from ..tensor import Tensor, TensorMethods
from ..prims.trace import _STATE as _TRACE_STATE
from ..prims.trace import Tracer, trace_to_graph

_CONFIG = {"backend": "tvm", "target": None, "key": ("tvm", "None")}
_lock = threading.Lock()
_STAGED: "OrderedDict[tuple, Staged]" = OrderedDict()
_STAGED_MAX = 1024


def set_backend(name: str) -> None:
    """Choose how staged graphs run: "tvm" (compiled, default) or "numpy" (reference interpreter)."""
    if name not in ("tvm", "numpy"):
        raise GraphadError(f"unknown backend {name!r}; use 'tvm' or 'numpy'")
    _CONFIG["backend"] = name
    _CONFIG["key"] = (name, str(_CONFIG["target"]))


def get_backend() -> str:
    return _CONFIG["backend"]


def set_target(target) -> None:
    """Set the default compilation target ("llvm", "cuda", a TVM Target or None for the host CPU)."""
    _CONFIG["target"] = target
    _CONFIG["key"] = (_CONFIG["backend"], str(target))


def get_target():
    return _CONFIG["target"]


def leaf_to_tensor(x):
    """Concrete argument leaf -> Tensor (NumPy arrays, scalars and DLPack objects are converted)."""
    if isinstance(x, (Tensor, Tracer)):
        return x
    if isinstance(x, TensorMethods):
        return x
    try:
        return Tensor(x)
    except GraphadError:
        raise
    except Exception as e:  # any failure of a foreign object's conversion: say which, and why
        why = " ".join(str(e).split()) or type(e).__name__
        raise GraphadError(f"argument of type {type(x).__name__} is not a tensor ({why})") from None


class OutSpec:
    """Output structure of a staged function: treedef, the static (non-tensor) leaves, and the
    Parameters the function assigned (their new values are the graph's last outputs)."""

    __slots__ = ("tree", "statics", "state")

    def __init__(self):
        self.tree = None
        self.statics: dict[int, Any] = {}
        self.state: list = []

    def rebuild(self, tensors: list) -> Any:
        if self.state:
            # functionalized assignments: write the new values into the Parameters, then build
            # the result from the function's own outputs
            n = len(tensors) - len(self.state)
            for p, t in zip(self.state, tensors[n:]):
                p._swap(t)
            tensors = tensors[:n]
        if not self.statics:
            kind = self.tree.kind
            if kind == "leaf":
                return tensors[0]
            if kind == "tuple" and all(c.kind == "leaf" for c in self.tree.children):
                return tuple(tensors)  # the common result shapes, without the generic walk
            return pytree.unflatten(self.tree, tensors)
        it = iter(tensors)
        leaves = [self.statics[i] if i in self.statics else next(it) for i in range(self.tree.num_leaves)]
        return pytree.unflatten(self.tree, leaves)

    def packer(self):
        """How `Executable.caller` should assemble the output Tensors into this structure."""
        if not self.statics and not self.state:
            if self.tree.kind == "leaf":
                return "leaf"
            if self.tree.kind == "tuple" and all(c.kind == "leaf" for c in self.tree.children):
                return None  # a tuple of the outputs
        return self.rebuild


class Staged:
    """A traced, optimised graph for one signature, with its output structure, captures and runner."""

    __slots__ = ("graph", "out_tree", "captures", "runner", "n_args", "fast")

    def __init__(self, graph: Graph, out_tree, captures: list, runner, n_args: int):
        self.graph = graph
        self.out_tree = out_tree
        self.captures = captures
        self.runner = runner
        self.n_args = n_args
        # fast(args) -> result, or None when `args` (a tuple of positional Tensors) does not fit
        # this signature; only compiled CPU runners have one, and not for a None result (which
        # would read as a miss)
        caller = getattr(runner, "caller", None)
        self.fast = caller(n_args, captures, out_tree.packer()) \
            if caller is not None and out_tree.tree.kind != "none" else None

    def __call__(self, leaves: list) -> Any:
        return self.out_tree.rebuild(self.runner(leaves + self.captures))


def signature(leaves) -> tuple:
    return tuple((x.shape, x.dtype) for x in leaves)


_FLAT_TREES: dict[int, Any] = {}


def _flat_tree(n: int):
    """The treedef of a tuple of n tensors (cached: built once per arity)."""
    td = _FLAT_TREES.get(n)
    if td is None:
        td = _FLAT_TREES[n] = pytree.flatten(tuple(range(n)))[1]
    return td


def default_pipeline(graph: Graph) -> Graph:
    """The pipeline every staged graph goes through (see docs/passes.md)."""
    from ..passes.manager import run_default_pipeline
    return run_default_pipeline(graph)


def make_runner(graph: Graph, backend: str | None = None, target=None) -> Callable[[list], list]:
    """A callable running `graph` on a flat list of Tensors, returning Tensors.

    A graph that cannot fit in memory (graphad.frontend.memory) is refused here, before it is
    compiled or interpreted: compiling it would take long and then fail in the allocator."""
    from .memory import check_graph
    check_graph(graph)
    backend = backend or _CONFIG["backend"]
    if backend == "numpy":
        from ..ir.interpret import interpret

        def run(inputs):
            return [Tensor._wrap(a, v.type.dtype) for a, v in zip(interpret(graph, [t._data for t in inputs]),
                                                                     graph.outputs)]
        return run
    from ..runtime.executable import compile_graph
    exe = compile_graph(graph, target if target is not None else _CONFIG["target"])
    return exe


class GraphFunction:
    """A callable that is inlined when traced and staged (traced, optimised, compiled) when concrete."""

    def __init__(self, impl: Callable, key: tuple, name: str = "fn", backend: str | None = None,
                 params: list[str] | None = None):
        self.param_names = params
        self.impl = impl
        self.key = key
        self.__name__ = name
        self.backend = backend
        # (_CONFIG["key"] when set, Staged.fast of the last signature called with positional
        # Tensors): tried first, so a repeated call skips building and hashing its cache key
        self._hot = None

    def __call__(self, *args):
        if _TRACE_STATE.stack:  # is_tracing(), inlined
            return self.impl(*args)
        hot = self._hot
        if hot is not None and hot[0] is _CONFIG["key"]:
            out = hot[1](args)
            if out is not None:
                return out
        # positional Tensors only: look the signature up directly
        for a in args:
            if not isinstance(a, Tensor):
                break
        else:
            leaves = list(args)
            sig = tuple([(a._data.shape, a._dtype) for a in args])  # == signature(leaves), inlined
            cfg = _CONFIG["key"]
            with _lock:
                staged = _STAGED.get((self.key, _flat_tree(len(args)), sig, self.backend, cfg))
            if staged is None:
                staged = self.stage(leaves, _flat_tree(len(args)))
            if staged.fast is not None:
                self._hot = (cfg, staged.fast)
            return staged(leaves)
        leaves, in_tree = pytree.flatten(args)
        if any(isinstance(x, Tracer) for x in leaves):
            return self.impl(*args)
        leaves = [leaf_to_tensor(x) for x in leaves]
        staged = self.stage(leaves, in_tree)
        return staged(leaves)

    def stage(self, leaves: list, in_tree) -> Staged:
        backend = self.backend or _CONFIG["backend"]
        key = (self.key, in_tree, signature(leaves), self.backend, _CONFIG["key"])
        with _lock:  # another thread may be inserting or evicting (popitem) at the same time
            staged = _STAGED.get(key)
            if staged is not None:
                _STAGED.move_to_end(key)
                return staged
        staged = self.build_staged(leaves, in_tree, backend)
        with _lock:
            _STAGED[key] = staged
            if len(_STAGED) > _STAGED_MAX:
                _STAGED.popitem(last=False)
        return staged

    def build_staged(self, leaves: list, in_tree, backend: str):
        """The staged form of this function at the leaves' signature: traced, optimised and compiled
        (or interpreted). Subclasses may return any object with `fast` and `__call__(leaves)`."""
        graph, out_tree, captures = self.trace(leaves, in_tree)
        return Staged(graph, out_tree, captures, make_runner(graph, backend), len(leaves))

    def trace(self, leaves: list, in_tree, optimize: bool = True):
        """Trace `impl` at the leaves' types: (graph, output spec, captured tensors).

        Non-tensor output leaves (positions and names from return_ids, Python values) are static:
        kept out of the graph and put back by `OutSpec.rebuild`.
        """
        types = [TensorType(x.shape, x.dtype) for x in leaves]
        spec = OutSpec()

        def split_static(*args):
            out_leaves, spec.tree = pytree.flatten(self.impl(*args))
            tensors = []
            for i, leaf in enumerate(out_leaves):
                if isinstance(leaf, TensorMethods):
                    tensors.append(leaf)
                else:
                    spec.statics[i] = leaf
            return tensors

        graph, _, captures = trace_to_graph(
            split_static, types, name=_ir_name(self.__name__), arg_names=_arg_names(in_tree, leaves, self.param_names),
            wrap_args=lambda tracers: pytree.unflatten(in_tree, tracers), state=spec.state)
        if optimize:
            graph = default_pipeline(graph)
        return graph, spec, captures

    def __repr__(self):
        return f"<graphad function {self.__name__}>"


def _ir_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"f_{out}"


def _arg_names(in_tree, leaves, params: list[str] | None = None) -> list[str]:
    """IR names of the argument leaves: the Python parameter name for a positional tensor argument."""
    names = [f"arg{i}" for i in range(len(leaves))]
    if params and in_tree.kind == "tuple":
        i = 0
        for k, child in enumerate(in_tree.children):
            if child.kind == "leaf" and k < len(params):
                names[i] = params[k]
            i += child.num_leaves
    return names


def param_names(fn) -> list[str] | None:
    """Positional parameter names of a Python function or Cell.construct (None when unknown)."""
    import inspect
    target = fn
    if isinstance(fn, GraphFunction):
        return fn.param_names
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and hasattr(fn, "construct"):
        target = fn.construct
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class IdentityKey:
    """An object in a cache key, by identity: equal only to the key of the same object, and holding
    it, so that no other object can take its place while the key lives (a bare id() can be reused
    by a new object once the first is freed, and would then find the old object's staged graph)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)  # stable: the key holds the object

    def __eq__(self, other):
        return isinstance(other, IdentityKey) and other.obj is self.obj

    def __repr__(self):
        return f"IdentityKey({type(self.obj).__name__})"


def fn_key(fn) -> Any:
    """A hashable identity for a user function or graph function (used in staging cache keys)."""
    if isinstance(fn, GraphFunction):
        return fn.key
    try:
        hash(fn)
        return fn
    except TypeError:
        return IdentityKey(fn)


def clear_staging_cache() -> None:
    """Forget every staged graph (the next call of each transformed function traces again)."""
    with _lock:
        _STAGED.clear()
    # a new (equal) key object: GraphFunctions compare their hot entry's key by identity, so
    # every one of them goes back to the (now empty) cache
    _CONFIG["key"] = (_CONFIG["backend"], str(_CONFIG["target"]))
