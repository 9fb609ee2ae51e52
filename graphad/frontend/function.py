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
import types
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .. import pytree
from .._switches import NATIVE_LOOPS as _NATIVE_VAR
from .._switches import POISON as _POISON_VAR
from .._switches import compile_settings
from ..errors import GraphadError, IndexOutOfRangeError
from ..ir.core import Graph, TensorType
from ..parameter import Parameter
from ..tensor import Tensor, TensorMethods
# (they live there: a loaded artifact converts its arguments and rebuilds its results with them)
from .compiled import STATE_LOCK, OutSpec, is_array_leaf, leaf_to_tensor  # noqa: F401
from ..runtime.gc_defer import deferred_collection
from ..prims.trace import _STATE as _TRACE_STATE
from ..prims.trace import (Tracer, WeakTracer, check_weak_value, exact_dtype, is_weak_number, set_origin,
                           trace_to_graph, weak_number, weak_view_dtype)

_CONFIG = {"backend": "tvm", "target": None, "key": ("tvm", "None")}
_lock = threading.Lock()
_STAGED: "OrderedDict[tuple, Staged]" = OrderedDict()
_STAGED_MAX = 1024


def set_backend(name: str) -> None:
    """Choose how staged graphs run: "tvm" (compiled, default) or "numpy" (reference interpreter).

    Process-wide; a function given its own `backend` (gd.jit(fn, backend=...)) keeps it. Any other
    name raises GraphadError."""
    if name not in ("tvm", "numpy"):
        raise GraphadError(f"unknown backend {name!r}; use 'tvm' or 'numpy'")
    _CONFIG["backend"] = name
    _CONFIG["key"] = (name, str(_CONFIG["target"]))


def get_backend() -> str:
    """The backend staged graphs run on: "tvm" (compiled, the default) or "numpy" (the reference
    interpreter), as `set_backend` last set it."""
    return _CONFIG["backend"]


def set_target(target) -> None:
    """Set the default compilation target ("llvm", "cuda", a TVM Target or None for the host CPU).

    A dict of TVM target options is taken too ({"kind": "llvm", "mcpu": "haswell"}). It applies
    to graphs compiled after the call; `Lowered.compile(target=...)` overrides it for one function.
    An unknown target string is a CompileError here (a dict's options are checked when compiling)."""
    from ..lowering.targets import check_target_spec
    check_target_spec(target)
    _CONFIG["target"] = target
    _CONFIG["key"] = (_CONFIG["backend"], str(target))


def get_target():
    """The default compilation target as `set_target` last set it (a string, dict or TVM Target),
    or None, the default: the host CPU."""
    return _CONFIG["target"]


def static_key(v):
    """A cache-key form of a static value (an option, a static argument) that keeps its type and
    its exact value: 0, 0.0, -0.0 and False are equal in Python (and hash alike) but stage
    different programs, and NaN is unequal to itself but stages one program. Raises TypeError for
    an unhashable value."""
    if isinstance(v, (tuple, list)):
        return (type(v),) + tuple(static_key(e) for e in v)
    if isinstance(v, dict):
        # in the dict's own order: a function may read it in that order (list(d.values())[0]), and
        # two dicts equal but for their order shared a compiled function
        return (dict,) + tuple((static_key(k), static_key(x)) for k, x in v.items())
    if v is None:
        return None
    if isinstance(v, float):
        return (type(v), v.hex())  # by bits: -0.0 is not 0.0, and every NaN is the same key
    if isinstance(v, complex):
        return (type(v), v.real.hex(), v.imag.hex())
    hash(v)  # TypeError for an unhashable value: the caller names the argument
    return (type(v), v)


class CallTree:
    """The structure of one call `fn(*args, **kwargs)` whose arguments are split into dynamic
    leaves (the graph's inputs) and static leaves (Python values the function receives as they
    are, part of the cache key). Stands in for the plain argument treedef wherever a call has
    keyword arguments or static leaves; hashable and comparable, by exact static values."""

    kind = "call"
    __slots__ = ("tree", "statics", "counts", "nargs", "_key", "_hash")

    def __init__(self, tree, statics: dict, counts: tuple, nargs: int, keys: tuple):
        self.tree = tree          # treedef of (args tuple, kwargs dict)
        self.statics = statics    # flat leaf index -> Python value
        self.counts = counts      # leaves per positional argument, then per keyword (sorted)
        self.nargs = nargs        # number of positional arguments
        self._key = (tree, keys)
        self._hash = hash(self._key)

    @property
    def num_leaves(self) -> int:
        """The number of dynamic leaves (the graph's argument inputs), as a treedef's num_leaves."""
        return self.tree.num_leaves - len(self.statics)

    def __eq__(self, other):
        return isinstance(other, CallTree) and self._hash == other._hash and self._key == other._key

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"CallTree({self.tree!r}, statics={sorted(self.statics)})"

    def rebuild(self, dyn: list):
        """(args, kwargs) with `dyn` in the dynamic leaves' places."""
        it = iter(dyn)
        leaves = [self.statics[i] if i in self.statics else next(it) for i in range(self.tree.num_leaves)]
        args, kwargs = pytree.unflatten(self.tree, leaves)
        return args, kwargs

    def positions(self) -> list[list[int]]:
        """For each positional argument, the indices of its dynamic leaves among all dynamic leaves."""
        out, flat, k = [], 0, 0
        for n in self.counts[:self.nargs]:
            mine = []
            for i in range(flat, flat + n):
                if i not in self.statics:
                    mine.append(k)
                    k += 1
            out.append(mine)
            flat += n
        return out

    def names(self, params: list[str] | None) -> list[str]:
        """IR names of the dynamic leaves: a positional tensor argument's parameter name, a
        keyword argument's keyword."""
        (_, kw_td) = self.tree.children
        labels = [(params[p] if params and p < len(params) and n == 1 else None) for p, n in
                  enumerate(self.counts[:self.nargs])]
        labels += [(k if isinstance(k, str) and n == 1 else None) for k, n in zip(kw_td.meta, self.counts[self.nargs:])]
        out, flat = [], 0
        for label, n in zip(labels, self.counts):
            for i in range(flat, flat + n):
                if i not in self.statics:
                    out.append(label or f"arg{len(out)}")
            flat += n
        return out


def describe_arg(args, kwargs, leaf: int, params: list[str] | None = None) -> str:
    """Which argument flat leaf `leaf` of (args, kwargs) belongs to: "argument 1 ('y')",
    "keyword argument 'mode'" (with ", leaf k" inside a pytree)."""
    flat = 0
    for p, a in enumerate(args):
        n = pytree.flatten(a)[1].num_leaves
        if leaf < flat + n:
            name = f" ({params[p]!r})" if params and p < len(params) else ""
            inner = f", leaf {leaf - flat} of the pytree" if n > 1 else ""
            return f"argument {p}{name}{inner}"
        flat += n
    for k in sorted(kwargs, key=repr):
        n = pytree.flatten(kwargs[k])[1].num_leaves
        if leaf < flat + n:
            inner = f", leaf {leaf - flat} of the pytree" if n > 1 else ""
            return f"keyword argument {k!r}{inner}"
        flat += n
    return f"argument leaf {leaf}"


def flatten_call(args, kwargs):
    """(leaves, treedef) of the call's (args tuple, kwargs dict): what a static-mask policy and
    split_call read (flattened once per call)."""
    return pytree.flatten((tuple(args), dict(kwargs)))


# A static-mask policy is `policy(args, kwargs, leaves, tree) -> [bool per leaf]`, with (leaves,
# tree) = flatten_call(args, kwargs): True where the leaf reaches the function as a Python value.


def keyword_statics(args, kwargs, leaves, tree) -> list[bool]:
    """The default static mask of a call: keyword arguments' non-array leaves (and jit's weakly
    typed numbers, see passes_through) are static (passed through as they are); positional leaves
    are all dynamic (Python numbers become tensors)."""
    npos = tree.children[0].num_leaves
    return [False] * npos + [passes_through(x) for x in leaves[npos:]]


def passes_through(x) -> bool:
    """Whether an argument leaf that a transformation neither differentiates nor maps reaches the
    function as it is: a non-array value (a Python number, a string), or a Python number that an
    enclosing jit traces weakly typed (prims.trace.WeakTracer). The inner trace reads that one by
    closure, so it stays weakly typed there (exact where it meets a float64 tensor, checked where
    it meets an int32 one); as the inner trace's input it was a float32 (int64) tensor, and
    `gd.jit(gd.grad(f))(x64, 0.1)` computed with 0.1 rounded to float32."""
    return not is_array_leaf(x) or type(x) is WeakTracer


def no_statics(args, kwargs, leaves, tree) -> list[bool]:
    """A static mask with every leaf dynamic (gd.jit: JAX's jit traces Python numbers too)."""
    return [False] * len(leaves)


def split_call(args, kwargs, mask: list[bool], fname: str, params: list[str] | None = None, flat=None,
               weak: bool = False):
    """(dynamic leaves as tensors, CallTree) of the call `fn(*args, **kwargs)` under the static
    `mask` (one flag per leaf of (args, kwargs); `flat`: flatten_call's result, when at hand). An
    unhashable static value, or a dynamic leaf that is not a tensor, is a GraphadError naming
    `fname` and the argument. With `weak`, a dynamic Python number becomes a WeakNumber (jit)."""
    args, kwargs = tuple(args), dict(kwargs)
    leaves, tree = flat if flat is not None else flatten_call(args, kwargs)
    counts = tuple(c.num_leaves for c in tree.children[0].children) + \
        tuple(c.num_leaves for c in tree.children[1].children)
    statics, keys, dyn = {}, [], []
    for i, (x, m) in enumerate(zip(leaves, mask)):
        if m:
            try:
                keys.append((i, static_key(x)))
            except TypeError:
                raise GraphadError(f"{fname}: {describe_arg(args, kwargs, i, params)} is a {type(x).__name__}, "
                                   f"which is neither a tensor nor a hashable value; a value that is not "
                                   f"traced is part of the compiled function's signature, so it must be "
                                   f"hashable (a set's elements can go in a tuple)") from None
            statics[i] = x
        else:
            dyn.append(x if isinstance(x, TensorMethods) else
                       _dyn_leaf(x, f"{fname}: {describe_arg(args, kwargs, i, params)}", weak))
    return dyn, CallTree(tree, statics, counts, len(args), tuple(keys))


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
        if self.fast is not None and out_tree.state:  # reading, running and writing back at once
            unlocked = self.fast

            def fast(args):
                with STATE_LOCK:
                    return unlocked(args)
            self.fast = fast

    def __call__(self, leaves: list) -> Any:
        try:
            if self.out_tree.state:
                with STATE_LOCK:
                    return self.out_tree.rebuild(self.runner(leaves + self.captures))
            return self.out_tree.rebuild(self.runner(leaves + self.captures))
        except IndexOutOfRangeError as e:
            raise self.located(e) from None

    def located(self, e: IndexOutOfRangeError) -> IndexOutOfRangeError:
        """`e`, a failed index check of a compiled kernel, with the user's line of the node it
        names (op and operand types; every such node when several match): one compiled library
        serves every graph of the same text, so the kernel's message cannot hold the line."""
        msg = str(e)
        if " (at " in msg:
            return e
        locs = []
        for n in _all_nodes(self.graph):
            head = f"{n.prim.name}({', '.join(str(v.type) for v in n.inputs)}"
            if n.loc is not None and msg.startswith(head) and str(n.loc) not in locs:
                locs.append(str(n.loc))
        return IndexOutOfRangeError(f"{msg} (at {' or '.join(locs)})") if locs else e


def _all_nodes(graph: Graph):
    """The nodes of `graph` and of its regions (control-flow bodies), depth first."""
    for n in graph.nodes:
        yield n
        for a in n.attrs.values():
            for sub in (a if isinstance(a, tuple) else (a,)):
                if isinstance(sub, Graph):
                    yield from _all_nodes(sub)


def signature(leaves) -> tuple:
    """The shapes and dtypes of the leaves, and which are jit's weakly typed Python numbers."""
    return tuple((x.shape, x.dtype, "weak") if type(x) is WeakNumber else (x.shape, x.dtype) for x in leaves)


class WeakNumber(Tensor):
    """A Python int, float or complex passed to `gd.jit` as an ordinary argument: a tensor of the
    widest dtype of its kind (int64, float64, complex128), so that it holds the number exactly,
    traced weakly typed (prims.trace.WeakTracer): next to a tensor it takes that tensor's dtype,
    as a literal does, and alone it is a tensor of its kind's default dtype, as JAX's jit has it."""

    __slots__ = ()

    @staticmethod
    def of(x):
        """`x` as a WeakNumber (a GraphadError for an int beyond int64, as Tensor(x) gives)."""
        return WeakNumber(x, exact_dtype(x))


def _dyn_leaf(x, what: str, weak: bool):
    """A dynamic argument leaf as a tensor (leaf_to_tensor), a Python number as a WeakNumber
    where `weak` (jit); `what` names the argument in an error."""
    if not (weak and is_weak_number(x)):
        return leaf_to_tensor(x, what)
    try:
        return WeakNumber.of(x)
    except GraphadError as e:
        raise GraphadError(f"{what}: {e}") from None


def check_weak_numbers(staged: "Staged", leaves: list, label: str, names: list | None) -> None:
    """Refuse a call whose weakly typed number argument does not fit the integer dtype the compiled
    graph casts it to (an int32 tensor's: `x + n`; a float stored in an int Parameter), as eager
    arithmetic refuses it (an IntegerOverflowError naming the argument and where it meets the
    tensor), where the cast would wrap it or give INT_MIN."""
    for i, uses in staged.out_tree.weak_checks.items():
        who = f"argument {names[i]!r}" if names and i < len(names) and names[i] else f"argument leaf {i}"
        check_weak_value(leaves[i]._data.item(), uses, f"{label}: {who}", "meets")


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


def complex_value(graph: Graph):
    """The type of the first complex value of `graph` (inputs, results, regions included), or None."""
    for v in graph.inputs:
        if v.type.dtype.is_complex:
            return v.type
    for n in graph.nodes:
        for o in n.outputs:
            if o.type.dtype.is_complex:
                return o.type
        for a in n.attrs.values():
            for sub in (a if isinstance(a, tuple) else (a,)):  # a region, or a tuple of them (switch)
                if isinstance(sub, Graph):
                    t = complex_value(sub)
                    if t is not None:
                        return t
    return None


class InterpretedRunner:
    """Runs `graph` with the NumPy reference interpreter; `host_reason` says why when it stands in
    for a compiled executable (then the graph cannot be saved as an AOT artifact)."""

    def __init__(self, graph: Graph, host_reason: str | None = None):
        self.graph = graph
        self.host_reason = host_reason

    def __call__(self, inputs):
        from ..ir.interpret import interpret
        graph = self.graph
        arrays = [t._data if isinstance(t, Tensor) else np.asarray(t) for t in inputs]
        return [Tensor._wrap(a, v.type.dtype) for a, v in zip(interpret(graph, arrays), graph.outputs)]


def make_runner(graph: Graph, backend: str | None = None, target=None) -> Callable[[list], list]:
    """A callable running `graph` on a flat list of Tensors, returning Tensors.

    A graph that cannot fit in memory (graphad.frontend.memory) is refused here, before it is
    compiled or interpreted: compiling it would take long and then fail in the allocator. A graph
    with a complex value is compiled with each complex value as a pair of real tensors; one with a
    complex primitive that the rewrite does not cover runs on the NumPy interpreter (docs/complex.md),
    said on the compile log (GRAPHAD_LOG_COMPILE=1)."""
    from .memory import check_graph
    check_graph(graph)
    backend = backend or _CONFIG["backend"]
    if backend == "numpy":
        return InterpretedRunner(graph)
    from ..runtime.executable import compile_graph
    target = target if target is not None else _CONFIG["target"]
    if complex_value(graph) is not None:
        return _complex_runner(graph, target)
    exe = compile_graph(graph, target)
    return exe


def _complex_runner(graph: Graph, target, compile=None):
    """A graph with complex values: compiled as real/imaginary pairs (passes/complex_split.py) with
    the split and merge at the boundary (runtime/complex_io.py), or, when a primitive has no
    real-pair rule, the whole graph on the interpreter with the reason on the compile log.
    `compile(real graph)` makes the compiled runner (default: compile_graph for `target`)."""
    from ..lowering import compile_log
    from ..passes.complex_split import ComplexSplitUnsupported, split_complex
    from ..runtime.complex_io import ComplexPairRunner
    from ..runtime.executable import compile_graph, graph_for_lowering
    flat = graph_for_lowering(graph)  # custom calls and checkpoints inlined, as compile_graph does
    try:
        split = split_complex(flat)
    except ComplexSplitUnsupported as e:
        ct = complex_value(graph)
        reason = (f"it has {ct.dtype.name} values ({ct}) and TVM has no complex type; its {e} "
                  f"(docs/complex.md)")
        compile_log.message(f"@{graph.name} runs on the NumPy interpreter, not compiled: {reason}")
        return InterpretedRunner(graph, reason)
    compile_log.message(f"@{graph.name} compiled with its complex values as real/imaginary pairs "
                        f"({sum(d is not None for d in split.inputs)} complex inputs, "
                        f"{sum(d is not None for d in split.outputs)} complex outputs)")
    inner = compile(split.graph) if compile is not None else compile_graph(split.graph, target)
    return ComplexPairRunner(inner, split.inputs, split.outputs)


class GraphFunction:
    """A callable that is inlined when traced and staged (traced, optimised, compiled) when concrete.

    What the transformations return (grad, vmap, jacrev, ...): call it with the arguments of the
    function it transforms, or pass it to another transformation. Inside a trace its graph becomes
    part of the enclosing one; called on concrete tensors it is traced once per input signature
    (shapes, dtypes, pytree structure, the values of Python arguments), compiled for the current
    backend and target, cached, and run. It is not made directly."""

    def __init__(self, impl: Callable, key: tuple, name: str = "fn", backend: str | None = None,
                 params: list[str] | None = None, statics: Callable | None = None, label: str | None = None,
                 check: Callable | None = None, weak_numbers: bool = False):
        # weak_numbers: dynamic Python numbers are traced weakly typed (WeakNumber; gd.jit)
        self.weak_numbers = weak_numbers
        # check(args, kwargs): run at every call before anything else, traced calls too (a refusal
        # that depends on which objects are passed, not on their signature: grad's weights; under
        # a trace the arguments may be tracers, prims.trace.origin_of says what they stand for)
        self.check = check
        self.param_names = params
        self.label = label or name  # how errors name the function: "grad(loss)"
        # statics(args, kwargs, leaves, tree) -> one flag per leaf of (args, kwargs): which leaves
        # reach `impl` as Python values (part of the cache key) rather than as tensors (a policy,
        # see flatten_call); keyword_statics when None
        self.statics = statics
        self.impl = impl
        self.key = key
        self.__name__ = name
        self.backend = backend
        # (_CONFIG["key"] when set, Staged.fast of the last signature called with positional
        # Tensors): tried first, so a repeated call skips building and hashing its cache key
        self._hot = None

    def __call__(self, *args, **kwargs):
        if _TRACE_STATE.stack:  # is_tracing(), inlined
            if self.check is not None:
                self.check(args, kwargs)
            return self.impl(*args, **kwargs)
        if self.check is not None:
            self.check(args, kwargs)
        if kwargs:
            return self._call_split(args, kwargs)
        hot = self._hot
        # the context switches (poison, native loops) are compared by their variables, None or
        # a bool (singletons); their environment variables are read when a signature is staged
        if (hot is not None and hot[0] is _CONFIG["key"] and hot[2] is _POISON_VAR.get()
                and hot[3] is _NATIVE_VAR.get()):
            try:
                out = hot[1](args)
            except IndexOutOfRangeError as e:
                raise hot[4].located(e) from None
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
            switches = (_POISON_VAR.get(), _NATIVE_VAR.get())
            with _lock:
                staged = _STAGED.get((self.key, _flat_tree(len(args)), sig, self.backend, cfg,
                                      compile_settings()))
            if staged is None:
                staged = self.stage(leaves, _flat_tree(len(args)))
            if staged.fast is not None:
                self._hot = (cfg, staged.fast) + switches + (staged,)
            return staged(leaves)
        leaves, in_tree = pytree.flatten(args)
        if any(isinstance(x, Tracer) for x in leaves):
            return self.impl(*args)
        if not all(is_array_leaf(x) for x in leaves):
            return self._call_split(args, {})
        leaves = [leaf_to_tensor(x) for x in leaves]
        staged = self.stage(leaves, in_tree)
        return staged(leaves)

    def _call_split(self, args: tuple, kwargs: dict):
        """A concrete call with keyword arguments or non-array leaves: the static leaves (by the
        `statics` policy) are part of the signature and reach `impl` as Python values. Never
        sets the hot entry: the lean positional caller cannot tell such signatures apart."""
        flat = flatten_call(args, kwargs)
        mask = (self.statics or keyword_statics)(args, kwargs, *flat)
        weak = self.weak_numbers
        if not kwargs and not any(mask):
            leaves, in_tree = pytree.flatten(args)
            leaves = [_dyn_leaf(x, f"{self.label}: {describe_arg(args, {}, i, self.param_names)}", weak)
                      for i, x in enumerate(leaves)]
            return self._run(self.stage(leaves, in_tree), leaves)
        dyn, call = split_call(args, kwargs, mask, self.label, self.param_names, flat, weak=weak)
        if any(isinstance(x, Tracer) for x in dyn):
            return self.impl(*args, **kwargs)
        return self._run(self.stage(dyn, call), dyn)

    def _run(self, staged, leaves: list):
        """`staged(leaves)`, after the check that jit's weakly typed integer arguments fit the
        dtypes the graph casts them to."""
        spec = getattr(staged, "out_tree", None)
        if spec is not None and spec.weak_checks:
            check_weak_numbers(staged, leaves, self.label, getattr(staged.graph, "input_names", None))
        return staged(leaves)

    def stage(self, leaves: list, in_tree) -> Staged:
        # the configuration read once: its key names the backend built for (set_backend in another
        # thread between two reads cached the interpreter under the compiled backend's key)
        cfg = _CONFIG["key"]
        backend = self.backend or cfg[0]
        key = (self.key, in_tree, signature(leaves), self.backend, cfg, compile_settings())
        with _lock:  # another thread may be inserting or evicting (popitem) at the same time
            staged = _STAGED.get(key)
            if staged is not None:
                _STAGED.move_to_end(key)
                return staged
        with deferred_collection():  # a compile's reference cycles die young (gc_defer.py)
            staged = self.build_staged(leaves, in_tree, backend)
        with _lock:
            # kept only if nothing cleared the staged graphs meanwhile (a Cell's attribute assigned
            # while this one traced: its graph read the old value, and kept under a key equal to the
            # new one it was used by every later call; clear_staging_cache makes a new key object)
            if _CONFIG["key"] is cfg:
                _STAGED[key] = staged
                if len(_STAGED) > _STAGED_MAX:
                    _STAGED.popitem(last=False)
        return staged

    def build_staged(self, leaves: list, in_tree, backend: str):
        """The staged form of this function at the leaves' signature: traced, optimised and compiled
        (or interpreted). Subclasses may return any object with `fast` and `__call__(leaves)`."""
        _mark_owners(self.key)
        graph, out_tree, captures = self.trace(leaves, in_tree)
        return Staged(graph, out_tree, captures, make_runner(graph, backend), len(leaves))

    def trace(self, leaves: list, in_tree, optimize: bool = True):
        """Trace `impl` at the leaves' types: (graph, output spec, captured tensors).

        Non-tensor output leaves (positions and names from return_ids, Python values) are static:
        kept out of the graph and put back by `OutSpec.rebuild`.
        """
        types = [TensorType(x.shape, x.dtype) for x in leaves]
        spec = OutSpec()
        weak_at = [i for i, x in enumerate(leaves) if type(x) is WeakNumber]
        made: dict[int, Any] = {}

        params_at = [i for i, x in enumerate(leaves) if isinstance(x, Parameter)]

        def weaken(tracers):
            if weak_at:
                tracers = list(tracers)
                for i in weak_at:
                    tracers[i] = made[i] = weak_number(tracers[i], weak_view_dtype(tracers[i].dtype))
            for i in params_at:  # a Parameter passed as an argument: what its tracer stands for
                set_origin(tracers[i], leaves[i])
            return tracers

        def split_static(*args, **kwargs):
            out_leaves, spec.tree = pytree.flatten(self.impl(*args, **kwargs))
            tensors = []
            for i, leaf in enumerate(out_leaves):
                if isinstance(leaf, TensorMethods):
                    tensors.append(leaf)
                elif getattr(type(leaf), "graphad_undefined", False):  # graph mode's unbound variable
                    leaf._fail()  # (it raises, naming the variable: never a result)
                else:
                    spec.statics[i] = leaf
            return tensors

        if isinstance(in_tree, CallTree):
            def fn(call):
                return split_static(*call[0], **call[1])
            names = in_tree.names(self.param_names)
            wrap = lambda tracers: (in_tree.rebuild(weaken(tracers)),)  # noqa: E731
        else:
            fn, names = split_static, _arg_names(in_tree, leaves, self.param_names)
            wrap = lambda tracers: pytree.unflatten(in_tree, weaken(tracers))  # noqa: E731
        graph, _, captures = trace_to_graph(fn, types, name=_ir_name(self.__name__), arg_names=names,
                                            wrap_args=wrap, state=spec.state)
        spec.weak_checks = {i: w.narrowed for i, w in made.items() if w.narrowed}
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


class MethodKey:
    """A bound method in a cache key: its function, and the object it is bound to by identity (two
    equal objects, e.g. frozen dataclasses Scale(1) and Scale(1.0), shared a staged graph)."""

    __slots__ = ("func", "obj")

    def __init__(self, method):
        self.func, self.obj = method.__func__, method.__self__

    def __hash__(self):
        return hash((self.func, id(self.obj)))  # stable: the key holds the object

    def __eq__(self, other):
        return isinstance(other, MethodKey) and other.func is self.func and other.obj is self.obj


def fn_key(fn) -> Any:
    """A hashable identity for a user function or graph function (used in staging cache keys): a
    plain function itself (its equality is identity), a bound method by its function and its
    object's identity, any other callable by identity (a callable object's __eq__ may call two
    objects equal that compute different things)."""
    if isinstance(fn, GraphFunction):
        return fn.key
    if isinstance(fn, types.FunctionType):
        return fn
    if isinstance(fn, types.MethodType):
        return MethodKey(fn)
    return IdentityKey(fn)


def _mark_owners(key) -> None:
    """Tell each object a staged function's key holds as a bound method's owner (a Cell whose
    method is transformed: `gd.jit(net.scaled)`) that it is being read into a staged graph, so
    that assigning one of its attributes later forgets the graph (nn.Cell's attribute rule)."""
    if isinstance(key, tuple):
        for k in key:
            _mark_owners(k)
    elif isinstance(key, MethodKey):
        mark = getattr(key.obj, "_graphad_mark_staged", None)
        if mark is not None:
            mark()


def clear_staging_cache() -> None:
    """Forget every staged graph (the next call of each transformed function traces again)."""
    with _lock:
        _STAGED.clear()
        # a new (equal) key object: GraphFunctions compare their hot entry's key by identity, so
        # every one of them goes back to the (now empty) cache; and a build under way when this
        # ran does not keep its graph (stage() compares the key it started with, under _lock)
        _CONFIG["key"] = (_CONFIG["backend"], str(_CONFIG["target"]))


def _register_clear_hook() -> None:
    # gd.cache_clear forgets the staged graphs too: they hold executables the runtime's cache no
    # longer lists (a call after cache_clear ran without a look-up; a helper's trial)
    from ..runtime import cache
    if clear_staging_cache not in cache.CLEAR_HOOKS:
        cache.CLEAR_HOOKS.append(clear_staging_cache)


_register_clear_hook()
