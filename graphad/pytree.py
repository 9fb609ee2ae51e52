"""Pytrees: nested tuples, lists and dicts whose leaves are tensors (or anything else).

`flatten(tree) -> (leaves, treedef)` and `unflatten(treedef, leaves)`. A treedef is hashable
and comparable, so it can be part of a cache signature. `None` is an empty node (no leaf), as in
JAX.
"""
from __future__ import annotations

from typing import Any, Callable


class TreeDef:
    """The structure of a pytree: a node kind, its metadata and its children's treedefs."""

    __slots__ = ("kind", "meta", "children", "num_leaves", "_hash")

    def __init__(self, kind: str, meta, children: tuple):
        self.kind = kind  # "leaf", "none", "tuple", "list", "dict", "namedtuple"
        self.meta = meta
        self.children = children
        self.num_leaves = 1 if kind == "leaf" else sum(c.num_leaves for c in children)
        self._hash = hash((kind, meta, children))

    def __eq__(self, other):
        return (isinstance(other, TreeDef) and self._hash == other._hash and self.kind == other.kind
                and self.meta == other.meta and self.children == other.children)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind == "tuple":
            return f"({inner}{',' if len(self.children) == 1 else ''})"
        if self.kind == "list":
            return f"[{inner}]"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children)) + "}"
        return f"{self.meta[0].__name__}({inner})"


LEAF = TreeDef("leaf", None, ())


def is_namedtuple(x) -> bool:
    """Whether `x` is a namedtuple (a pytree node of its own kind, keeping its type)."""
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten(tree, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list, TreeDef]:
    """Flatten a pytree into its leaves (depth-first, dict keys sorted) and its structure."""
    leaves: list = []

    def rec(x) -> TreeDef:
        if is_leaf is not None and is_leaf(x):
            leaves.append(x)
            return LEAF
        if x is None:
            return TreeDef("none", None, ())
        if is_namedtuple(x):
            return TreeDef("namedtuple", (type(x),), tuple(rec(c) for c in x))
        if isinstance(x, tuple):
            return TreeDef("tuple", None, tuple(rec(c) for c in x))
        if isinstance(x, list):
            return TreeDef("list", None, tuple(rec(c) for c in x))
        if isinstance(x, dict):
            keys = tuple(sorted(x.keys(), key=repr))
            return TreeDef("dict", keys, tuple(rec(x[k]) for k in keys))
        leaves.append(x)
        return LEAF

    td = rec(tree)
    return leaves, td


def unflatten(treedef: TreeDef, leaves) -> Any:
    """Rebuild a pytree of structure `treedef` from `leaves` (in flatten order)."""
    it = iter(leaves)

    def rec(td: TreeDef):
        if td.kind == "leaf":
            return next(it)
        if td.kind == "none":
            return None
        kids = [rec(c) for c in td.children]
        if td.kind == "tuple":
            return tuple(kids)
        if td.kind == "list":
            return kids
        if td.kind == "dict":
            return dict(zip(td.meta, kids))
        return td.meta[0](*kids)

    out = rec(treedef)
    rest = list(it)
    if rest:
        raise ValueError(f"unflatten: {len(rest)} leaves left over for treedef {treedef!r}")
    return out


def tree_map(fn: Callable, tree, *rest, is_leaf=None):
    """Apply fn leaf-wise over one or more pytrees of the same structure."""
    leaves, td = flatten(tree, is_leaf)
    others = [flatten(r, is_leaf)[0] for r in rest]
    return unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])


def broadcast_prefix(prefix, tree, is_leaf=None, what: str = "in_axes") -> list:
    """Expand a pytree prefix (e.g. vmap's in_axes) to one entry per leaf of `tree`.

    Raises ValueError naming the mismatch when `prefix` is not a prefix of `tree`'s structure
    (`tree` is the arguments, or with `what` "out_axes" the outputs).
    """
    out: list = []
    where = "output" if what.startswith("out_axes") else "argument"

    def rec(p, t, path):
        if not isinstance(p, (tuple, list, dict)) or (is_leaf is not None and is_leaf(t)):
            n = flatten(t, is_leaf)[1].num_leaves
            out.extend([p] * n)
            return
        if isinstance(p, dict):
            if not isinstance(t, dict) or set(p.keys()) != set(t.keys()):
                raise ValueError(f"{what}{path} is a dict with keys {sorted(p, key=repr)} but the "
                                 f"{where} there is {_describe(t)}")
            for k in sorted(p.keys(), key=repr):
                rec(p[k], t[k], f"{path}[{k!r}]")
            return
        if not isinstance(t, (tuple, list)) or len(p) != len(t):
            raise ValueError(f"{what}{path} has {len(p)} entries but the {where} there is {_describe(t)}")
        for i, (pc, tc) in enumerate(zip(p, t)):
            rec(pc, tc, f"{path}[{i}]")

    rec(prefix, tree, "")
    return out


def _describe(t) -> str:
    if isinstance(t, (tuple, list)):
        return f"a {type(t).__name__} of {len(t)}"
    if isinstance(t, dict):
        return f"a dict with keys {sorted(t, key=repr)}"
    if hasattr(t, "shape") and hasattr(t, "dtype"):  # a tensor, a tracer or an array: one leaf
        return "one tensor"
    name = type(t).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def treedef_to_json(td: TreeDef):
    """A JSON-able description of a treedef (namedtuples are not serialisable)."""
    if td.kind == "namedtuple":
        raise ValueError("namedtuple outputs cannot be saved in an artifact; return a tuple or dict")
    out = {"k": td.kind}
    if td.kind == "dict":
        for key in td.meta:
            if not isinstance(key, (str, int)):
                raise ValueError(f"dict key {key!r} cannot be saved in an artifact")
        out["m"] = [[type(k).__name__, k] for k in td.meta]
    if td.children:
        out["c"] = [treedef_to_json(c) for c in td.children]
    return out


def treedef_from_json(obj) -> TreeDef:
    kind = obj["k"]
    if kind == "leaf":
        return LEAF
    children = tuple(treedef_from_json(c) for c in obj.get("c", []))
    meta = tuple(int(v) if t == "int" else v for t, v in obj["m"]) if kind == "dict" else None
    return TreeDef(kind, meta, children)
