"""A compiled function for one signature (`Compiled`) and `gd.load`, which makes one from an AOT
artifact: the part of the front end a process that only runs compiled code needs.

It imports neither the tracer nor the primitives (`frontend.function`, `prims`), nor TVM's
compiler: `import graphad` and `gd.load(path)` followed by calls map the artifact's library with
TVM's runtime alone. `OutSpec`, the output structure a staged function rebuilds its result with,
lives here for the same reason, as do `leaf_to_tensor` and `is_array_leaf`, the conversion of
argument leaves (frontend/function.py and jit.py use them from here).

A bad call of a `Compiled` says which argument (position, parameter name, the path inside a
structured one), what it got and what it was compiled for; a traced argument (the function
called inside vmap, grad, jit...) is refused as opaque without importing the tracer: a tracer is
a TensorMethods that is not a Tensor.
"""
from __future__ import annotations

import base64
import os
import re
import threading
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import pytree
from ..errors import ArgumentError, ArtifactError, GraphadError, TraceError
from ..tensor import Tensor, TensorMethods


# Held around every call of a compiled function that assigns Parameters, from reading their
# values to writing the new ones back: two such calls in two threads read the same old values and
# the second write lost the first's update (4 threads x 50 train steps counted 52 steps; a
# helper's trial). Calls that assign nothing never take it.
STATE_LOCK = threading.RLock()


class OutSpec:
    """Output structure of a staged function: treedef, the static (non-tensor) leaves, and the
    Parameters the function assigned (their new values are the graph's last outputs)."""

    __slots__ = ("tree", "statics", "state", "weak_checks")

    def __init__(self):
        self.tree = None
        self.statics: dict[int, Any] = {}
        self.state: list = []
        # jit's weakly typed integer arguments cast to a narrower integer dtype: {leaf index:
        # [(dtype, user's line)]}, checked at each call (function.check_weak_numbers)
        self.weak_checks: dict[int, list] = {}

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


def leaf_to_tensor(x, what: str | None = None):
    """Concrete argument leaf -> Tensor (NumPy arrays, scalars and DLPack objects are converted).
    `what` ("grad(f): argument 1 ('y')") names the argument in the error for one that is not."""
    if isinstance(x, TensorMethods):  # a Tensor, or a tracer (prims.trace.Tracer)
        return x
    if not is_array_leaf(x) and not isinstance(x, (bool, int, float, complex)):
        # a string would become a NumPy string array, whose dtype error names neither
        who = f"{what} " if what else "argument "
        raise GraphadError(f"{who}of type {type(x).__name__} is not a tensor (nor a Python number)")
    try:
        return Tensor(x)
    except GraphadError as e:
        if what is None:
            raise
        raise GraphadError(f"{what}: {e}") from None
    except Exception as e:  # any failure of a foreign object's conversion: say which, and why
        why = " ".join(str(e).split()) or type(e).__name__
        who = f"{what} " if what else "argument "
        raise GraphadError(f"{who}of type {type(x).__name__} is not a tensor ({why})") from None


def is_array_leaf(x) -> bool:
    """Whether an argument leaf is an array (a tensor, a tracer, a NumPy array or scalar, anything
    with __dlpack__ or __array__): those are graph inputs. Python numbers, strings and other
    objects are not: where a transformation does not need a tensor (a keyword argument, an
    argument it does not differentiate or map) they reach the user's function as they are."""
    if isinstance(x, (TensorMethods, np.ndarray, np.generic)):  # TensorMethods: tracers too
        return True
    if isinstance(x, (bool, int, float, complex, str, bytes)):
        return False
    return hasattr(x, "__dlpack__") or hasattr(x, "__array__")


def _arg_names(graph, in_tree) -> list | None:
    """The parameter name of each positional argument that is one tensor, read from the graph's
    input names (a structured argument's leaves, and `*args`, have generic names: None)."""
    if graph is None or in_tree is None or in_tree.kind != "tuple":
        return None
    names, k = [], 0
    for c in in_tree.children:
        name = graph.inputs[k].name if c.kind == "leaf" and k < len(graph.inputs) else None
        names.append(name if name and not re.fullmatch(r"arg[0-9]+", name) else None)
        k += c.num_leaves
    return names


def _leaf_path(in_tree, index: int) -> tuple:
    """(position of the argument, "['w'][0]" inside it) of leaf `index` of the flattened arguments;
    (None, "") when the arguments are not a tuple."""
    if in_tree.kind != "tuple":
        return None, ""
    keys: list = []

    def find(td, i):
        if td.kind == "leaf":
            return True
        for j, c in enumerate(td.children):
            if i < c.num_leaves:
                keys.append(td.meta[j] if td.kind == "dict" else j)
                return find(c, i)
            i -= c.num_leaves
        return False

    if not find(in_tree, index) or not keys:
        return None, ""
    return keys[0], "".join(f"[{k!r}]" for k in keys[1:])


def _first_mismatch(value, td, path=(), leaf=0):
    """(path of keys, the value there, the expected treedef there, index of its first leaf) of the
    first place where `value`'s structure departs from `td`; None where none does."""
    # one level of `value` as pytree.flatten sees it: its node, its children as leaves
    children, node = pytree.flatten(value, is_leaf=lambda x: x is not value)
    kind, meta = node.kind, node.meta
    if kind == "leaf":
        children = []
    if kind != td.kind or len(children) != len(td.children) or meta != td.meta:
        return path, value, td, leaf
    for j, (v, c) in enumerate(zip(children, td.children)):
        found = _first_mismatch(v, c, path + ((td.meta[j] if kind == "dict" else j),), leaf)
        if found is not None:
            return found
        leaf += c.num_leaves
    return None


def _describe_value(x) -> str:
    """What a user passed, in words: 'a list of 3 elements', 'a str ('abc')', 'None'."""
    if x is None:
        return "None"
    if pytree.is_namedtuple(x):
        return f"a {type(x).__name__} (a namedtuple of {len(x)} elements)"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} element{'' if len(x) == 1 else 's'}"
    if isinstance(x, dict):
        return f"a dict with keys {sorted(x, key=repr)}"
    if isinstance(x, (str, bytes)):
        shown = repr(x[:40]) + ("..." if len(x) > 40 else "")
        return f"a {type(x).__name__} ({shown})"
    if isinstance(x, TensorMethods):
        return f"a {x.dtype.short}{list(x.shape)} tensor"
    return f"an object of type {type(x).__name__}"


def _describe_tree(td) -> str:
    """An expected argument structure in words."""
    if td.kind == "leaf":
        return "a tensor"
    if td.kind == "none":
        return "None"
    if td.kind == "dict":
        return f"a dict with keys {list(td.meta)}"
    n = len(td.children)
    if td.kind == "namedtuple":
        return f"a {td.meta[0].__name__} (a namedtuple of {n} elements)"
    return f"a {td.kind} of {n} element{'' if n == 1 else 's'}"


class Compiled:
    """A compiled function for one signature; callable; `.save(path)` writes an AOT artifact.

    What `Lowered.compile()` and `gd.load` return (it is not made directly). It takes its
    arguments by position, with the structure, shapes and dtypes it was compiled for (Tensors,
    NumPy arrays or DLPack objects; nothing is promoted): anything else is a GraphadError naming
    the argument. Opaque to the transformations (a traced argument is refused with a TraceError saying to
    transform the Python function before compiling it) and not picklable (it holds native code
    loaded into this process: send the artifact's path and `gd.load` it in the other process)."""

    def __init__(self, graph, in_tree, out_spec: OutSpec, captures: list, runner, name: str, target,
                 in_types=None, arg_names=None, path=None):
        self.graph, self.in_tree, self.out_spec, self.captures = graph, in_tree, out_spec, captures
        self.runner, self.name, self.target = runner, name, target
        self.in_types = in_types if in_types is not None else \
            [(v.type.shape, v.type.dtype) for v in graph.inputs[:len(graph.inputs) - len(captures)]]
        # the parameter name of each positional argument where known (None elsewhere), for errors;
        # `path`: the artifact a loaded function came from
        names, derived = (list(arg_names) if arg_names is not None else None), _arg_names(graph, in_tree)
        if derived is not None:
            names = derived if names is None else \
                [(names[i] if i < len(names) else None) or d for i, d in enumerate(derived)]
        self.arg_names = names
        self.path = path

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise GraphadError(f"{self._who()}: a compiled function takes its arguments by position, as it was "
                               f"compiled; got keyword argument(s) {', '.join(sorted(kwargs))}")
        leaves, tree = pytree.flatten(args)
        if tree != self.in_tree:
            raise GraphadError(self._structure_error(args))
        leaves = [x if isinstance(x, TensorMethods) else self._convert(i, x) for i, x in enumerate(leaves)]
        for i, (x, (shape, d)) in enumerate(zip(leaves, self.in_types)):
            if not isinstance(x, Tensor):  # a tracer (prims.trace.Tracer): called inside a transformation
                raise TraceError(self._traced_error(i, x))
            if tuple(x.shape) != tuple(shape) or x.dtype is not d:
                raise GraphadError(f"{self._who()}: {self._leaf_argument(i)} (counting from 0) is "
                                   f"{x.dtype.short}{list(x.shape)}, compiled for {d.short}{list(shape)}")
        if self.out_spec.state:
            with STATE_LOCK:
                return self.out_spec.rebuild(self.runner(leaves + list(self.captures)))
        return self.out_spec.rebuild(self.runner(leaves + list(self.captures)))

    # -- errors: they name the function, the argument, what was given and what was expected ----

    def _who(self) -> str:
        return self.name if self.path is None else f"{self.name} (loaded from {self.path!r})"

    def _argument(self, pos: int, sub: str = "") -> str:
        """'argument 1 (b)', with the path inside a structured argument ("argument 0 (p)['w']")."""
        names = self.arg_names or ()
        name = names[pos] if pos < len(names) and names[pos] else None
        return f"argument {pos}" + (f" ({name})" if name else "") + sub

    def _leaf_argument(self, index: int) -> str:
        """`_argument` of the `index`-th leaf of the flattened arguments."""
        pos, sub = _leaf_path(self.in_tree, index)
        return self._argument(pos, sub) if pos is not None else f"input {index} of the flattened arguments"

    def _expected(self, index: int) -> str:
        shape, d = self.in_types[index]
        return f"a Tensor or array of shape {tuple(shape)} {d.name}"

    def _convert(self, i: int, x):
        """Argument leaf `i` (not a Tensor) as a Tensor, or a GraphadError naming it."""
        if not is_array_leaf(x) and not isinstance(x, (bool, int, float, complex)):
            raise GraphadError(f"{self._who()}: {self._leaf_argument(i)}: got {_describe_value(x)}; expected "
                               f"{self._expected(i)}")
        return leaf_to_tensor(x, f"{self._who()}: {self._leaf_argument(i)}")

    def _traced_error(self, i: int, x) -> str:
        f = self.name
        if self.path is not None:
            fix = (f"transform the Python function {f} where it is defined, compile and save that (e.g. "
                   f"gd.jit(gd.vmap({f})).lower(...).compile().save(path)) and gd.load the new artifact")
        else:
            fix = f"transform the Python function {f}, then compile that (e.g. gd.jit(gd.vmap({f})).lower(...).compile())"
        return (f"{self._who()}: a {'loaded' if self.path is not None else 'compiled'} function is opaque to "
                f"gd.vmap, gd.grad, gd.jit, gd.jacrev and the other transformations, which cannot trace into its "
                f"compiled code (its {self._leaf_argument(i)} is a traced {x.dtype.short}{list(x.shape)} here); "
                f"{fix}, or call this one on concrete tensors outside the transformation")

    def _structure_error(self, args: tuple) -> str:
        """What is wrong with the structure of `args` (a wrong count, a list where a tensor goes...)."""
        want = self.in_tree.children if self.in_tree.kind == "tuple" else None
        if want is not None and len(want) != len(args):
            return (f"{self._who()}: takes {len(want)} positional argument(s), got {len(args)}; it was compiled "
                    f"as {self._signature()}")
        found = _first_mismatch(args, self.in_tree) if want is not None else None
        if found is None:  # (no walk finds it: say it with both structures)
            return (f"{self._who()}: compiled as {self._signature()}, called with arguments structured "
                    f"{pytree.flatten(args)[1]!r}")
        path, value, td, leaf = found
        where = self._argument(path[0], "".join(f"[{k!r}]" for k in path[1:]))
        if td.kind == "leaf":
            msg = f"{self._who()}: {where}: got {_describe_value(value)}; expected {self._expected(leaf)}"
            if isinstance(value, (list, tuple)) and not pytree.is_namedtuple(value):
                msg += (f" (a list or tuple is a structure of separate inputs to a compiled function, not an "
                        f"array: convert it first, e.g. gd.Tensor(value, gd.{self.in_types[leaf][1].name}))")
            return msg
        return (f"{self._who()}: {where}: got {_describe_value(value)}; expected {_describe_tree(td)}; it was "
                f"compiled as {self._signature()}")

    def _signature(self) -> str:
        """The compiled call signature in words: `f(w: f32[4,3], p: {'b': f32[3]})`."""
        leaves = iter(f"{d.short}{list(s)}" for s, d in self.in_types)

        def show(td) -> str:
            if td.kind == "leaf":
                return next(leaves)
            if td.kind == "none":
                return "None"
            inner = [show(c) for c in td.children]
            if td.kind == "dict":
                return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(td.meta, inner)) + "}"
            if td.kind == "list":
                return "[" + ", ".join(inner) + "]"
            body = ", ".join(inner) + ("," if len(inner) == 1 and td.kind == "tuple" else "")
            return f"({body})" if td.kind == "tuple" else f"{td.meta[0].__name__}({body})"

        if self.in_tree.kind != "tuple":
            return f"{self.name}{show(self.in_tree)}"
        parts = []
        for i, c in enumerate(self.in_tree.children):
            name = self.arg_names[i] if self.arg_names and i < len(self.arg_names) else None
            parts.append(f"{name}: {show(c)}" if name else show(c))
        return f"{self.name}({', '.join(parts)})"

    # -- not picklable ---------------------------------------------------------------------------

    def __reduce__(self):
        if self.path is not None:
            send = (f"send the artifact's path {self.path!r} (or the file's bytes, written to a file there) "
                    f"and call gd.load(path) in that process")
        else:
            send = ("save it first (compiled.save(path)), send the path (or the file's bytes, written to a "
                    "file there) and call gd.load(path) in that process")
        what = "loaded" if self.path is not None else "compiled"
        raise ArgumentError(f"{self._who()}: a {what} function cannot be pickled (nor deep-copied): it holds "
                            f"native code loaded into this process; to use it in another process, {send}")

    def __copy__(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def save(self, path: str, key=None) -> None:
        """Write this function as one AOT artifact file; with `key` (bytes or str) it is signed
        (HMAC-SHA256) so that `gd.load(path, key=key)` accepts it and nothing else.

        The file is written atomically, with mode 0600; its directory must exist. A function
        compiled for the "numpy" backend, or one that assigns Parameters, cannot be saved
        (GraphadError)."""
        from ..runtime.aot import save_executable
        host_reason = getattr(self.runner, "host_reason", None)
        if host_reason:
            raise GraphadError(f"{self.name}: cannot save: the function runs on the NumPy interpreter, not "
                               f"compiled: {host_reason}")
        from ..runtime.complex_io import ComplexPairRunner
        exe = self.runner
        pairs = None
        if isinstance(exe, ComplexPairRunner):  # complex values compiled as real pairs (docs/complex.md)
            exe, pairs = exe.inner, exe.layout()
        if not hasattr(exe, "export"):
            raise GraphadError("save() needs a TVM-compiled function (backend='tvm')")
        if self.out_spec.state:
            names = ", ".join(repr(p.name) for p in self.out_spec.state)
            raise GraphadError(f"{self.name}: cannot save a function that assigns Parameters ({names}): the "
                               f"artifact would have no Parameters to write them into; return the new values "
                               f"instead")
        try:
            manifest = {
                "name": self.name,
                "in_tree": pytree.treedef_to_json(self.in_tree),
                "out_tree": pytree.treedef_to_json(self.out_spec.tree),
                "out_statics": [[i, v] for i, v in sorted(self.out_spec.statics.items())],
                "in_types": [[list(s), d.name] for s, d in self.in_types],
                "arg_names": list(self.arg_names) if self.arg_names is not None else None,
                "captures": [_encode_array(c) for c in self.captures],
                "graph": str(self.graph),
            }
        except (ValueError, TypeError) as e:
            raise GraphadError(f"{self.name}: cannot save: {e}") from None
        if pairs is not None:  # the boundary split/merge that load must put back around the library
            manifest["complex_pairs"] = pairs
        save_executable(exe, path, manifest, key=key, who=self.name)


def _encode_array(t) -> dict:
    a = np.asarray(t._data, order="C")  # (ascontiguousarray would make a 0-d capture 1-d)
    return {"dtype": t.dtype.name, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode_array(d) -> Tensor:
    dtype = dt.as_dtype(d["dtype"])
    raw = base64.b64decode(d["data"])
    a = np.frombuffer(raw, dtype=dtype.np).reshape(d["shape"])
    return Tensor(a, dtype)


def load(path: str, key=None) -> Compiled:
    """Load an artifact written by `Compiled.save`: a callable that compiles nothing.

    The artifact's library is native code that runs when it is loaded. Without `key` the checks
    give integrity (damage, version mismatch) only; with `key`, an artifact not signed with that
    key is refused before its library is mapped (docs/security.md)."""
    from ..runtime.aot import load_executable
    exe, manifest = load_executable(path, key=key)
    try:
        in_tree = pytree.treedef_from_json(manifest["in_tree"])
        spec = OutSpec()
        spec.tree = pytree.treedef_from_json(manifest["out_tree"])
        spec.statics = {int(i): v for i, v in manifest["out_statics"]}
        captures = [_decode_array(c) for c in manifest["captures"]]
        in_types = [(tuple(s), dt.as_dtype(d)) for s, d in manifest["in_types"]]
        # (for errors only; an artifact saved before the names were recorded has none)
        arg_names = manifest.get("arg_names")
        if not isinstance(arg_names, list) or not all(n is None or isinstance(n, str) for n in arg_names):
            arg_names = None
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: malformed manifest ({e})") from None
    # built where memory sufficed, perhaps not here: refuse before the first run allocates outputs
    from .memory import check_types
    check_types(f"{path} (@{manifest.get('name', 'loaded')})",
                [(d["shape"], d["dtype"]) for d in exe.meta.get("outputs", [])])
    if "complex_pairs" in manifest:  # complex inputs and outputs travel as real/imaginary pairs
        from ..runtime.complex_io import ComplexPairRunner
        exe = ComplexPairRunner.from_layout(exe, manifest["complex_pairs"], str(path))
    return Compiled(None, in_tree, spec, captures, exe, manifest.get("name", "loaded"), manifest.get("target"),
                    in_types=in_types, arg_names=arg_names, path=os.fspath(path))
