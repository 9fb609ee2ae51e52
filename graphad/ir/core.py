"""The graph IR: typed SSA values, nodes (primitive applications) and graphs.

Invariants (checked by `ir.verify`): every value is defined once, either as a graph input or as
an output of exactly one node; `Graph.nodes` is in topological order; each node's output types
are what its primitive's shape rule gives for its input types and attributes. Nested graphs may
appear as attribute values (room for control flow). Values are compared by identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..dtypes import DType, as_dtype


# what a value may hold: 64 axes (NumPy's and DLPack's limit) of int64 extents, an int64 count
MAX_RANK = 64
MAX_DIM = (1 << 63) - 1


def type_problem(shape) -> str | None:
    """Why a value of this shape cannot exist (rank, extents, element count), or None."""
    if len(shape) > MAX_RANK:
        return f"rank {len(shape)} is above the maximum rank {MAX_RANK}"
    size = 1
    for s in shape:
        if not 0 <= s <= MAX_DIM:
            return f"dimension {s} is not in [0, 2^63 - 1]"
        size *= s
    if size > MAX_DIM:
        return f"it has {size} elements, more than int64 can count"
    return None


class TensorType:
    """Shape (tuple of non-negative ints) and dtype of a value. Hashable, printed `f32[16,16]`."""

    __slots__ = ("shape", "dtype", "_hash")

    def __init__(self, shape: Iterable[int], dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype: DType = as_dtype(dtype)
        self._hash = hash((self.shape, self.dtype.name))

    @property
    def ndim(self) -> int:
        """The number of dimensions, `len(shape)` (0 for a scalar)."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements: the product of `shape` (1 for a scalar)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __eq__(self, other):
        return isinstance(other, TensorType) and self.shape == other.shape and self.dtype is other.dtype

    def __hash__(self):
        return self._hash

    def __str__(self):
        return f"{self.dtype.short}[{','.join(str(s) for s in self.shape)}]"

    __repr__ = __str__


@dataclass(frozen=True)
class Loc:
    """A user source location: the file and line of the call that created a node."""

    file: str
    line: int

    def __str__(self):
        return f"{self.file}:{self.line}"


class Value:
    """An SSA value: produced by `node` (output `index`), or a graph input when `node` is None."""

    __slots__ = ("type", "node", "index", "name", "__weakref__")

    def __init__(self, type: TensorType, node: "Node | None" = None, index: int = 0, name: str | None = None):
        self.type = type
        self.node = node
        self.index = index
        self.name = name

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self):
        return f"Value({self.name or hex(id(self))}: {self.type})"


class Node:
    """One application of a primitive: inputs, sorted attributes, typed outputs, source location."""

    __slots__ = ("prim", "inputs", "attrs", "outputs", "loc")

    def __init__(self, prim, inputs: list[Value], attrs: dict[str, Any], out_types: list[TensorType],
                 loc: Loc | None = None):
        self.prim = prim
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.outputs = [Value(t, self, i) for i, t in enumerate(out_types)]
        self.loc = loc

    @property
    def name(self) -> str:
        return self.prim.name

    def describe(self) -> str:
        """`op(f32[3,4], f32[4]) at file:line` for error messages."""
        ins = ", ".join(str(v.type) for v in self.inputs)
        where = f" at {self.loc}" if self.loc else ""
        return f"{self.prim.name}({ins}){where}"

    def __repr__(self):
        return f"Node({self.describe()})"


class Graph:
    """A function: typed inputs, nodes in topological order, outputs (values, possibly inputs)."""

    __slots__ = ("name", "inputs", "nodes", "outputs", "input_names")

    def __init__(self, name: str, inputs: list[Value], nodes: list[Node], outputs: list[Value],
                 input_names: list[str] | None = None):
        self.name = name
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)
        self.input_names = list(input_names) if input_names is not None else [v.name for v in self.inputs]

    @property
    def in_types(self) -> list[TensorType]:
        return [v.type for v in self.inputs]

    @property
    def out_types(self) -> list[TensorType]:
        return [v.type for v in self.outputs]

    def users(self) -> dict[Value, list[Node]]:
        """Map each value to the nodes that read it (in node order)."""
        u: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                u.setdefault(v, []).append(n)
        return u

    def __str__(self):
        from .printer import print_graph
        return print_graph(self)

    def __repr__(self):
        return f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))
