"""The canonical textual form of graphs (`print_graph`), read back by `graphad.ir.parser`.

    func @forecast(%weight: f32[16,16], %bias: f32[16], %x: f32[16]) -> (f32[16]) {
      %0 = transpose(%weight) {perm=[1, 0]} : f32[16,16]  loc("model.py":2)
      %1 = add(%0, %bias) : f32[16]
      return %1
    }

The text is a pure function of the graph: node results are numbered %0, %1, ... in definition
order, graph inputs print under their name when it is a unique identifier (else %argN),
attributes are sorted by key and every type is spelled out. Floats print with `repr` (shortest
round-tripping form; `inf`, `-inf`, `nan`; a NaN with a non-default bit pattern as
`nan:0x<bits>`), so parsing the text gives back bit-identical attribute values and the text can
be hashed as a cache key.

Attribute values: int, float, bool (`true`/`false`), None (`none`), str (double-quoted),
tuple/list (`[a, b]`, read back as tuples), NumPy arrays (`array<f32[2]>[1.0, 2.0]`; a complex
array as (real, imag) pairs, `array<c64[1]>[[1.0, -2.0]]`) and nested
graphs (`func @body(...) -> (...) { ... }`, printed inline and indented).
"""
from __future__ import annotations

import math
import re
import struct
from collections import Counter
from typing import Any, Iterable

import numpy as np

from .. import dtypes as dt
from .core import Graph, Loc, Node, TensorType, Value

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_ARGN_RE = re.compile(r"arg[0-9]+\Z")
INDENT = "  "

_UINT_OF_BITS = {16: np.uint16, 32: np.uint32, 64: np.uint64}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


# ---------------------------------------------------------------- names of values


def input_labels(graph: Graph) -> list[str]:
    """The names graph inputs print under (without `%`): their own name or `argN`.

    A name is kept when it is an identifier, unique among the inputs, and not of the form
    `argM` for an M other than the input's own position (so it cannot clash with a fallback).
    """
    names = list(graph.input_names) if len(graph.input_names) == len(graph.inputs) else \
        [v.name for v in graph.inputs]
    cands = [n if isinstance(n, str) and IDENT_RE.match(n) else None for n in names]
    counts = Counter(c for c in cands if c is not None)
    out = []
    for i, c in enumerate(cands):
        if c is None or counts[c] > 1 or (_ARGN_RE.match(c) and c != f"arg{i}"):
            out.append(f"arg{i}")
        else:
            out.append(c)
    return out


def value_ids(graph: Graph) -> dict[Value, str | int]:
    """What every value defined in `graph` prints as, without the `%`: an input's label, a node
    result's number (`prints_equal` compares these; `value_names` formats them)."""
    ids: dict[Value, str | int] = {}
    for v, label in zip(graph.inputs, input_labels(graph)):
        ids.setdefault(v, label)
    k = 0
    for n in graph.nodes:
        for o in getattr(n, "outputs", ()):  # tolerant of malformed graphs (the verifier names values)
            if isinstance(o, Value) and o not in ids:
                ids[o] = k
            k += 1
    return ids


def value_names(graph: Graph) -> dict[Value, str]:
    """`%name` of every value defined in `graph` (inputs by label, node results numbered)."""
    return {v: f"%{i}" for v, i in value_ids(graph).items()}


class _Namer:
    """Value names of one graph; values defined nowhere in it print as `%?N` (malformed graph)."""

    def __init__(self, graph: Graph):
        self.names = value_names(graph)
        self.unknown = 0

    def __call__(self, v: Value) -> str:
        name = self.names.get(v)
        if name is None:
            name = self.names[v] = f"%?{self.unknown}"
            self.unknown += 1
        return name


# ---------------------------------------------------------------- scalars and attributes


def format_str(s: str) -> str:
    """A double-quoted string literal (escapes: \\\\ \\" \\n \\t \\r and \\u{hex})."""
    if s.isprintable() and '"' not in s and "\\" not in s:  # nothing to escape (file names, mostly)
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        e = _ESCAPES.get(ch)
        if e is not None:
            out.append(e)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    out.append('"')
    return "".join(out)


_F64_NAN_BITS = struct.unpack("<Q", struct.pack("<d", float("nan")))[0]


def format_float(x: float) -> str:
    """repr() of a Python float, with `inf`, `-inf`, `nan` (or `nan:0x<64 bits>`)."""
    x = float(x)
    if math.isnan(x):
        bits = struct.unpack("<Q", struct.pack("<d", x))[0]
        return "nan" if bits == _F64_NAN_BITS else f"nan:0x{bits:016x}"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


def _canonical_nan_bits(npdtype: np.dtype, nbits: int) -> int:
    return int(np.array([np.nan], np.float64).astype(npdtype).view(_UINT_OF_BITS[nbits])[0])


def _array_element_strings(arr: np.ndarray, d: dt.DType) -> list[str]:
    flat = np.ascontiguousarray(arr).reshape(-1)
    if d.is_bool:
        return ["true" if b else "false" for b in flat.tolist()]
    if d.is_int:
        return [str(int(i)) for i in flat.tolist()]
    f64 = flat.astype(np.float64)
    out = []
    nan_mask = np.isnan(f64)
    bits = None
    if nan_mask.any():
        nbits = flat.dtype.itemsize * 8
        bits = flat.view(_UINT_OF_BITS[nbits])
        canon = _canonical_nan_bits(flat.dtype, nbits)
        width = nbits // 4
    for i, x in enumerate(f64.tolist()):
        if bits is not None and nan_mask[i]:
            b = int(bits[i])
            out.append("nan" if b == canon else f"nan:0x{b:0{width}x}")
        elif math.isinf(x):
            out.append("inf" if x > 0 else "-inf")
        else:
            out.append(repr(x))
    return out


def format_array(arr: np.ndarray) -> str:
    """`array<f32[2,2]>[[1.0, 2.0], [3.0, 4.0]]` (0-d: `array<f32[]>1.0`)."""
    arr = np.asarray(arr)
    d = dt.as_dtype(arr.dtype)
    if arr.dtype != d.np:  # a NumPy width graphad lacks (uint8, int16...): print its graphad type
        arr = arr.astype(d.np)
    head = f"array<{TensorType(arr.shape, d)}>"
    if d.is_complex:
        # a complex array prints as its (real, imag) pairs, a last axis of 2 in the parts' type
        # (`array<c64[2]>[[1.0, -0.0], [nan, inf]]`): each part keeps its bits, NaN payloads included
        parts = np.ascontiguousarray(arr).view(dt.real_dtype(d).np).reshape(arr.shape + (2,))
        arr, d = parts, dt.real_dtype(d)
    elems = _array_element_strings(arr, d)
    if arr.ndim == 0:
        return head + elems[0]
    pos = 0

    def nest(axis: int) -> str:
        nonlocal pos
        n = arr.shape[axis]
        if axis == arr.ndim - 1:
            s = "[" + ", ".join(elems[pos:pos + n]) + "]"
            pos += n
            return s
        return "[" + ", ".join(nest(axis + 1) for _ in range(n)) + "]"
    return head + nest(0)


def format_attr_value(v: Any, indent: str = "") -> str:
    """One attribute value; `indent` is the indentation of the line it appears on."""
    if v is None:
        return "none"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return format_float(float(v))
    if isinstance(v, str):
        return format_str(v)
    if isinstance(v, dt.DType):
        return format_str(v.name)
    if isinstance(v, np.ndarray):
        return format_array(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr_value(x, indent) for x in v) + "]"
    if isinstance(v, Graph):
        return _format_func(v, indent + INDENT)
    # unknown Python object: printed so that the parser rejects it with a clear message
    return f"opaque<{format_str(type(v).__name__ + ': ' + repr(v))}>"


def format_key(k: str) -> str:
    return k if IDENT_RE.match(k) else format_str(k)


def format_attrs(attrs: dict[str, Any], indent: str = "") -> str:
    """`{a=1, b=[2, 3]}` sorted by key, or "" when there are none."""
    if not attrs:
        return ""
    items = sorted(attrs.items(), key=lambda kv: kv[0])
    return "{" + ", ".join(f"{format_key(k)}={format_attr_value(v, indent)}" for k, v in items) + "}"


def format_loc(loc: Loc) -> str:
    return f"loc({format_str(str(loc.file))}:{int(loc.line)})"


def format_func_name(name: str) -> str:
    return "@" + (name if isinstance(name, str) and IDENT_RE.match(name) else format_str(str(name)))


# ---------------------------------------------------------------- nodes and graphs


def format_node(node: Node, name_of, indent: str = "") -> str:
    """One node line (without the leading indentation and newline)."""
    args = ", ".join(name_of(v) for v in node.inputs)
    parts = []
    if node.outputs:
        parts.append(", ".join(name_of(o) for o in node.outputs) + " = ")
    parts.append(f"{node.prim.name}({args})")
    attrs = format_attrs(node.attrs, indent)
    if attrs:
        parts.append(" " + attrs)
    types = ", ".join(str(o.type) for o in node.outputs) if node.outputs else "()"
    parts.append(" : " + types)
    if node.loc is not None:
        parts.append("  " + format_loc(node.loc))
    return "".join(parts)


def _format_func(graph: Graph, indent: str) -> str:
    """The func text; its first line is not indented, the following lines start with `indent`."""
    name_of = _Namer(graph)
    params = ", ".join(f"{name_of(v)}: {v.type}" for v in graph.inputs)
    results = ", ".join(str(v.type) for v in graph.outputs)
    lines = [f"func {format_func_name(graph.name)}({params}) -> ({results}) {{"]
    body = indent + INDENT
    for n in graph.nodes:
        lines.append(body + format_node(n, name_of, body))
    ret = ", ".join(name_of(v) for v in graph.outputs)
    lines.append(body + ("return " + ret if ret else "return"))
    lines.append(indent + "}")
    return "\n".join(lines)


def print_graph(graph: Graph) -> str:
    """The canonical text of `graph` (no trailing newline)."""
    return _format_func(graph, "")


def _same_attr_text(x: Any, y: Any, indent: str) -> bool:
    """format_attr_value(x) == format_attr_value(y), formatting only when the values differ."""
    if x is y:
        return True
    tx = type(x)
    if tx is type(y):
        if tx is int or tx is str or tx is bool:
            return x == y
        if (tx is tuple or tx is list) and len(x) == len(y) \
                and all(type(a) is int and type(b) is int and a == b for a, b in zip(x, y)):
            return True
    return format_attr_value(x, indent) == format_attr_value(y, indent)


def _same_loc_text(x: Loc | None, y: Loc | None) -> bool:
    if x is None or y is None:
        return x is y
    if type(x.file) is str and type(y.file) is str and type(x.line) is int and type(y.line) is int:
        return x.file == y.file and x.line == y.line
    return format_loc(x) == format_loc(y)


def _same_type_text(x: TensorType, y: TensorType) -> bool:
    return x is y or x == y or str(x) == str(y)


def prints_equal(a: Graph, b: Graph) -> bool:
    """`print_graph(a) == print_graph(b)`, decided line by line without printing the graphs
    (an attribute value is formatted only where the two differ and are not equal plain ints,
    strings, bools or tuples of ints). Simplify's fixed-point test on every round."""
    if a is b:
        return True
    if len(a.nodes) != len(b.nodes) or len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
        return False  # a different number of lines, or of names in the func's first and last line
    if format_func_name(a.name) != format_func_name(b.name):
        return False
    ids_a, ids_b = value_ids(a), value_ids(b)
    try:
        if any(ids_a[v] != ids_b[w] or not _same_type_text(v.type, w.type) for v, w in zip(a.inputs, b.inputs)):
            return False
        if any(not _same_type_text(v.type, w.type) for v, w in zip(a.outputs, b.outputs)):
            return False
        body = INDENT
        for n, m in zip(a.nodes, b.nodes):
            if n.prim.name != m.prim.name or len(n.inputs) != len(m.inputs) or len(n.outputs) != len(m.outputs):
                return False
            for v, w in zip(n.inputs, m.inputs):
                if ids_a[v] != ids_b[w]:
                    return False
            for v, w in zip(n.outputs, m.outputs):
                if ids_a[v] != ids_b[w] or not _same_type_text(v.type, w.type):
                    return False
            if n.attrs is not m.attrs:
                if sorted(n.attrs) != sorted(m.attrs):
                    return False
                for k, x in n.attrs.items():
                    if not _same_attr_text(x, m.attrs[k], body):
                        return False
            if n.loc is not m.loc and not _same_loc_text(n.loc, m.loc):
                return False
        return all(ids_a[v] == ids_b[w] for v, w in zip(a.outputs, b.outputs))
    except KeyError:  # a value defined nowhere in its graph (malformed; printed %?N): compare the texts
        return print_graph(a) == print_graph(b)


def print_module(graphs: Iterable[Graph]) -> str:
    """Several funcs, separated by blank lines (read back by `parse_module`)."""
    return "\n\n".join(print_graph(g) for g in graphs) + "\n"
