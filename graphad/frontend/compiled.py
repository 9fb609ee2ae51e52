"""A compiled function for one signature (`Compiled`) and `gd.load`, which makes one from an AOT
artifact: the part of the front end a process that only runs compiled code needs.

It imports neither the tracer nor the primitives (`frontend.function`, `prims`), nor TVM's
compiler: `import graphad` and `gd.load(path)` followed by calls map the artifact's library with
TVM's runtime alone. `OutSpec`, the output structure a staged function rebuilds its result with,
lives here for the same reason, as do `leaf_to_tensor` and `is_array_leaf`, the conversion of
argument leaves (frontend/function.py and jit.py use them from here).
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import pytree
from ..errors import ArtifactError, GraphadError
from ..tensor import Tensor, TensorMethods


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


class Compiled:
    """A compiled function for one signature; callable; `.save(path)` writes an AOT artifact."""

    def __init__(self, graph, in_tree, out_spec: OutSpec, captures: list, runner, name: str, target,
                 in_types=None):
        self.graph, self.in_tree, self.out_spec, self.captures = graph, in_tree, out_spec, captures
        self.runner, self.name, self.target = runner, name, target
        self.in_types = in_types if in_types is not None else \
            [(v.type.shape, v.type.dtype) for v in graph.inputs[:len(graph.inputs) - len(captures)]]

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise GraphadError(f"{self.name}: a compiled function takes its arguments by position, as it was "
                               f"compiled; got keyword argument(s) {', '.join(sorted(kwargs))}")
        leaves, tree = pytree.flatten(args)
        if tree != self.in_tree:
            want = len(self.in_tree.children) if self.in_tree.kind == "tuple" else None
            if want is not None and want != len(args):
                raise GraphadError(f"{self.name}: takes {want} positional argument(s), got {len(args)} "
                                   f"(compiled for arguments structured {self.in_tree!r})")
            raise GraphadError(f"{self.name}: compiled for arguments structured {self.in_tree!r}, got {tree!r}")
        leaves = [leaf_to_tensor(x) for x in leaves]
        for i, (x, (shape, d)) in enumerate(zip(leaves, self.in_types)):
            if tuple(x.shape) != tuple(shape) or x.dtype is not d:
                flat = tree.kind == "tuple" and all(c.kind == "leaf" for c in tree.children)
                what = f"argument {i}" if flat else f"input {i} of the flattened arguments"
                raise GraphadError(f"{self.name}: {what} (counting from 0) is {x.dtype.short}{list(x.shape)}, "
                                   f"compiled for {d.short}{list(shape)}")
        return self.out_spec.rebuild(self.runner(leaves + list(self.captures)))

    def save(self, path: str, key=None) -> None:
        """Write this function as one AOT artifact file; with `key` (bytes or str) it is signed
        (HMAC-SHA256) so that `gd.load(path, key=key)` accepts it and nothing else."""
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
                "captures": [_encode_array(c) for c in self.captures],
                "graph": str(self.graph),
            }
        except (ValueError, TypeError) as e:
            raise GraphadError(f"{self.name}: cannot save: {e}") from None
        if pairs is not None:  # the boundary split/merge that load must put back around the library
            manifest["complex_pairs"] = pairs
        save_executable(exe, path, manifest, key=key)


def _encode_array(t) -> dict:
    a = np.ascontiguousarray(t._data)
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
                    in_types=in_types)
