"""Reads the textual IR written by `graphad.ir.printer` back into graphs.

`parse_graph(text)` reads one func, `parse_module(text)` any number. Each node is rebuilt from
its primitive (looked up in the registry) and its output types are checked against the shape
rule, so a parsed graph is well typed. Whitespace and line breaks are free, `//` starts a
comment, and result names may be any identifier (`%h = tanh(%x) : f32[3]`); the canonical form
renumbers them. Every error is an `IRParseError` with the 1-based line and column of the
offending token. The canonical round trip `print_graph(parse_graph(print_graph(g)))` is
identical to `print_graph(g)`.
"""
from __future__ import annotations

import contextlib
import re
import struct
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..errors import GraphadError, IRParseError
from .core import MAX_DIM, MAX_RANK, Graph, Loc, Node, TensorType, Value
from .registry import get_primitive

_DTYPES = {d.short: d for d in dt.ALL}
# how deeply attribute values (lists, nested funcs) may nest (the parser is recursive: 5,000
# levels of '[' were a RecursionError); types are limited by MAX_RANK and MAX_DIM (ir/core.py)
MAX_NESTING = 64
_UINT_OF_BITS = {16: np.uint16, 32: np.uint32, 64: np.uint64}

# token kinds
_EOF, _IDENT, _VALUE, _FUNC_NAME, _INT, _FLOAT, _STRING, _PUNCT = (
    "end of input", "identifier", "value name", "function name", "integer", "float", "string", "punctuation")

_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<value>%[A-Za-z0-9_.?]+)
  | (?P<nanbits>nan:0x[0-9a-fA-F]+)
  | (?P<float>-?(?:[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)|-inf\b|-nan\b)
  | (?P<int>-?[0-9]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<at>@)
  | (?P<string>")
  | (?P<punct>->|[(){}\[\]<>,=:])
""", re.VERBOSE)


class _Tok:
    __slots__ = ("kind", "text", "value", "line", "col")

    def __init__(self, kind, text, value, line, col):
        self.kind = kind
        self.text = text
        self.value = value
        self.line = line
        self.col = col

    def describe(self) -> str:
        if self.kind == _EOF:
            return "end of input"
        return repr(self.text)


def _tokenize(text: str, source_name: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    line = 1
    line_start = 0
    n = len(text)

    def err(msg, at):
        raise IRParseError(msg, line, at - line_start + 1, source_name)

    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            err(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup
        start = pos
        col = start - line_start + 1
        if kind == "ws":
            s = m.group()
            nl = s.count("\n")
            if nl:
                line += nl
                line_start = start + s.rindex("\n") + 1
            pos = m.end()
            continue
        if kind == "string":
            value, pos = _lex_string(text, start, lambda msg, at: err(msg, at))
            toks.append(_Tok(_STRING, text[start:pos], value, line, col))
            continue
        if kind == "at":
            # @ident or @"string"
            if pos + 1 < n and text[pos + 1] == '"':
                value, end = _lex_string(text, pos + 1, lambda msg, at: err(msg, at))
            else:
                m2 = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*").match(text, pos + 1)
                if m2 is None:
                    err("expected a function name after '@'", pos)
                value, end = m2.group(), m2.end()
            toks.append(_Tok(_FUNC_NAME, text[start:end], value, line, col))
            pos = end
            continue
        s = m.group()
        pos = m.end()
        if kind == "value":
            toks.append(_Tok(_VALUE, s, s[1:], line, col))
        elif kind == "nanbits":
            toks.append(_Tok(_FLOAT, s, ("nanbits", int(s.split(":0x")[1], 16)), line, col))
        elif kind == "float":
            if s == "-nan":
                err("write a negative NaN by its bits (nan:0x...)", start)
            toks.append(_Tok(_FLOAT, s, float(s), line, col))
        elif kind == "int":
            if pos < n and (text[pos].isalpha() or text[pos] == "_"):
                err(f"bad number {text[start:pos + 1]!r}...", start)
            toks.append(_Tok(_INT, s, int(s), line, col))
        elif kind == "ident":
            toks.append(_Tok(_IDENT, s, s, line, col))
        else:
            toks.append(_Tok(_PUNCT, s, s, line, col))
    toks.append(_Tok(_EOF, "", None, line, n - line_start + 1))
    return toks


_SIMPLE_ESC = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _lex_string(text: str, start: int, err) -> tuple[str, int]:
    """Read the string literal starting at text[start] == '"'; returns (value, end)."""
    out = []
    i = start + 1
    n = len(text)
    while True:
        if i >= n or text[i] == "\n":
            err("unterminated string", start)
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                err("unterminated string", start)
            e = text[i + 1]
            if e in _SIMPLE_ESC:
                out.append(_SIMPLE_ESC[e])
                i += 2
                continue
            if e == "u" and i + 2 < n and text[i + 2] == "{":
                close = text.find("}", i + 3)
                hexpart = text[i + 3:close] if close != -1 else ""
                if close == -1 or not re.fullmatch(r"[0-9a-fA-F]{1,6}", hexpart) or int(hexpart, 16) > 0x10FFFF:
                    err("bad \\u{...} escape in string", i)
                out.append(chr(int(hexpart, 16)))
                i = close + 1
                continue
            err(f"unknown escape \\{e} in string", i)
        out.append(ch)
        i += 1




class _Parser:
    def __init__(self, text: str, source_name: str):
        self.source_name = source_name
        self.toks = _tokenize(text, source_name)
        self.i = 0
        self.depth = 0  # attribute lists and nested funcs being parsed

    # ---- token helpers

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, msg: str, tok: _Tok | None = None):
        tok = tok or self.tok
        raise IRParseError(msg, tok.line, tok.col, self.source_name)

    def advance(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != _EOF:
            self.i += 1
        return t

    def at(self, punct: str) -> bool:
        t = self.tok
        return t.kind == _PUNCT and t.text == punct

    def at_keyword(self, word: str) -> bool:
        t = self.tok
        return t.kind == _IDENT and t.text == word

    def expect(self, punct: str, context: str = "") -> _Tok:
        if not self.at(punct):
            where = f" {context}" if context else ""
            self.error(f"expected '{punct}'{where}, got {self.tok.describe()}")
        return self.advance()

    def expect_kind(self, kind: str, context: str = "") -> _Tok:
        if self.tok.kind != kind:
            where = f" {context}" if context else ""
            self.error(f"expected {kind}{where}, got {self.tok.describe()}")
        return self.advance()

    def expect_keyword(self, word: str, context: str = "") -> _Tok:
        if not self.at_keyword(word):
            where = f" {context}" if context else ""
            self.error(f"expected '{word}'{where}, got {self.tok.describe()}")
        return self.advance()

    # ---- module / func

    def parse_module(self) -> list[Graph]:
        graphs = []
        seen: dict[str, _Tok] = {}
        while self.tok.kind != _EOF:
            if not self.at_keyword("func"):
                self.error(f"expected 'func', got {self.tok.describe()}")
            name_tok = self.toks[self.i + 1]
            g = self.parse_func()
            # funcs are chosen by name (--func NAME): a second one of the same name is ambiguous
            first = seen.get(g.name)
            if first is not None:
                self.error(f"func @{g.name} is defined twice (first at line {first.line})", name_tok)
            seen[g.name] = name_tok
            graphs.append(g)
        return graphs

    def parse_type(self) -> TensorType:
        t = self.tok
        if t.kind != _IDENT:
            self.error(f"expected a type such as f32[2,3], got {t.describe()}")
        d = _DTYPES.get(t.text)
        if d is None:
            self.error(f"unknown dtype {t.text!r} (expected one of {', '.join(_DTYPES)})")
        self.advance()
        self.expect("[", "after the dtype")
        dims = []
        if not self.at("]"):
            while True:
                dt_tok = self.tok
                if dt_tok.kind != _INT or dt_tok.value < 0:
                    self.error(f"expected a non-negative dimension, got {dt_tok.describe()}")
                if dt_tok.value > MAX_DIM:
                    self.error(f"dimension {dt_tok.value} does not fit in int64")
                if len(dims) == MAX_RANK:
                    self.error(f"a type has at most {MAX_RANK} dimensions")
                dims.append(self.advance().value)
                if self.at(","):
                    self.advance()
                    continue
                break
        self.expect("]", "to close the shape")
        size = 1
        for n in dims:
            size *= n
        if size > MAX_DIM:
            self.error(f"{d.short}{dims} has {size} elements, more than int64 can count", t)
        return TensorType(dims, d)

    def parse_func(self) -> Graph:
        self.expect_keyword("func")
        name = self.expect_kind(_FUNC_NAME, "after 'func'").value
        env: dict[str, Value] = {}
        inputs: list[Value] = []
        input_names: list[str] = []
        self.expect("(", "to open the parameter list")
        if not self.at(")"):
            while True:
                vt = self.tok
                if vt.kind != _VALUE:
                    self.error(f"expected a parameter name such as %x, got {vt.describe()}")
                self.advance()
                if vt.value in env:
                    self.error(f"parameter %{vt.value} is defined twice", vt)
                self.expect(":", "after the parameter name")
                typ = self.parse_type()
                v = Value(typ, None, len(inputs), vt.value)
                env[vt.value] = v
                inputs.append(v)
                input_names.append(vt.value)
                if self.at(","):
                    self.advance()
                    continue
                break
        self.expect(")", "to close the parameter list")
        self.expect("->", "before the result types")
        self.expect("(", "to open the result types")
        out_types: list[tuple[TensorType, _Tok]] = []
        if not self.at(")"):
            while True:
                tt = self.tok
                out_types.append((self.parse_type(), tt))
                if self.at(","):
                    self.advance()
                    continue
                break
        self.expect(")", "to close the result types")
        self.expect("{", "to open the function body")
        nodes: list[Node] = []
        while True:
            t = self.tok
            if self.at_keyword("return"):
                break
            if self.at("}") or t.kind == _EOF:
                self.error(f"missing 'return' at the end of @{name}")
            if t.kind == _VALUE or t.kind == _IDENT:
                nodes.append(self.parse_node(env))
            else:
                self.error(f"expected a node (%x = op(...) : type) or 'return', got {t.describe()}")
        self.advance()  # return
        outputs: list[Value] = []
        out_toks: list[_Tok] = []
        if self.tok.kind == _VALUE:
            while True:
                vt = self.advance()
                outputs.append(self.lookup(env, vt))
                out_toks.append(vt)
                if self.at(","):
                    self.advance()
                    if self.tok.kind != _VALUE:
                        self.error(f"expected a value after ',' in return, got {self.tok.describe()}")
                    continue
                break
        end = self.tok
        if not self.at("}"):
            self.error(f"expected '}}' after the return statement, got {end.describe()}")
        if len(outputs) != len(out_types):
            self.error(f"@{name} declares {len(out_types)} result(s) but returns {len(outputs)}",
                       out_toks[len(out_types)] if len(outputs) > len(out_types) else end)
        for v, vt, (typ, tt) in zip(outputs, out_toks, out_types):
            if v.type != typ:
                self.error(f"returned value %{vt.value} has type {v.type} but @{name} declares {typ}", vt)
        self.advance()  # }
        return Graph(name, inputs, nodes, outputs, input_names)

    def lookup(self, env: dict[str, Value], tok: _Tok) -> Value:
        v = env.get(tok.value)
        if v is None:
            self.error(f"use of undefined value %{tok.value}", tok)
        return v

    # ---- nodes

    def parse_node(self, env: dict[str, Value]) -> Node:
        result_toks: list[_Tok] = []
        if self.tok.kind == _VALUE:
            while True:
                rt = self.advance()
                result_toks.append(rt)
                if self.at(","):
                    self.advance()
                    if self.tok.kind != _VALUE:
                        self.error(f"expected a result name after ',', got {self.tok.describe()}")
                    continue
                break
            self.expect("=", "after the result names")
        seen = set()
        for rt in result_toks:
            if rt.value in env or rt.value in seen:
                self.error(f"value %{rt.value} is defined twice", rt)
            seen.add(rt.value)
        op_tok = self.tok
        if op_tok.kind != _IDENT:
            self.error(f"expected an op name, got {op_tok.describe()}")
        self.advance()
        try:
            prim = get_primitive(op_tok.text)
        except GraphadError as e:
            self.error(str(e), op_tok)
        self.expect("(", f"after the op name {op_tok.text!r}")
        inputs: list[Value] = []
        if not self.at(")"):
            while True:
                vt = self.tok
                if vt.kind != _VALUE:
                    self.error(f"expected an operand such as %0, got {vt.describe()}")
                self.advance()
                inputs.append(self.lookup(env, vt))
                if self.at(","):
                    self.advance()
                    continue
                break
        self.expect(")", "to close the operand list")
        attrs: dict[str, Any] = {}
        if self.at("{"):
            attrs = self.parse_attr_dict()
        colon = self.tok
        self.expect(":", "before the result types")
        type_toks: list[tuple[TensorType, _Tok]] = []
        if self.at("("):
            self.advance()
            self.expect(")", "(a node without results is written ': ()')")
        else:
            while True:
                tt = self.tok
                type_toks.append((self.parse_type(), tt))
                if self.at(","):
                    self.advance()
                    continue
                break
        loc = None
        if self.at_keyword("loc"):
            loc = self.parse_loc()
        if len(type_toks) != len(result_toks):
            self.error(f"{len(result_toks)} result name(s) but {len(type_toks)} result type(s)",
                       type_toks[0][1] if type_toks else colon)
        in_types = [v.type for v in inputs]
        try:
            inferred = prim.infer(in_types, attrs, loc)
        except GraphadError as e:
            self.error(f"invalid {op_tok.text}: {e}", op_tok)
        except Exception as e:  # a shape rule choking on a malformed attribute value
            self.error(f"invalid {op_tok.text}: shape rule failed on these operands/attributes "
                       f"({type(e).__name__}: {e})", op_tok)
        if len(inferred) != len(type_toks):
            self.error(f"wrong arity: {op_tok.text} produces {len(inferred)} result(s), "
                       f"{len(type_toks)} declared", result_toks[0] if result_toks else op_tok)
        for i, ((typ, tt), want) in enumerate(zip(type_toks, inferred)):
            if typ != want:
                ins = ", ".join(str(t) for t in in_types)
                self.error(f"type mismatch: result {i} of {op_tok.text}({ins}) is declared {typ} "
                           f"but the shape rule gives {want}", tt)
        node = Node(prim, inputs, attrs, [t for t, _ in type_toks], loc)
        for rt, v in zip(result_toks, node.outputs):
            env[rt.value] = v
        return node

    def parse_loc(self) -> Loc:
        self.expect_keyword("loc")
        self.expect("(", "after 'loc'")
        f = self.expect_kind(_STRING, "(the file name of the location)").value
        self.expect(":", "between the file and the line of the location")
        lt = self.tok
        if lt.kind != _INT or lt.value < 0:
            self.error(f"expected a line number, got {lt.describe()}")
        self.advance()
        self.expect(")", "to close the location")
        return Loc(f, lt.value)

    # ---- attributes

    def parse_attr_dict(self) -> dict[str, Any]:
        self.expect("{")
        attrs: dict[str, Any] = {}
        if self.at("}"):
            self.advance()
            return attrs
        while True:
            kt = self.tok
            if kt.kind not in (_IDENT, _STRING):
                self.error(f"expected an attribute name, got {kt.describe()}")
            self.advance()
            if kt.value in attrs:
                self.error(f"attribute {kt.value!r} is given twice", kt)
            self.expect("=", f"after the attribute name {kt.value!r}")
            attrs[kt.value] = self.parse_attr_value()
            if self.at(","):
                self.advance()
                continue
            break
        self.expect("}", "to close the attributes")
        return attrs

    def parse_attr_value(self) -> Any:
        t = self.tok
        if t.kind == _INT:
            self.advance()
            return t.value
        if t.kind == _FLOAT:
            if isinstance(t.value, tuple):  # nan:0x<64 bits>
                bits = t.value[1]
                x = struct.unpack("<d", struct.pack("<Q", bits))[0] if bits < 1 << 64 else 0.0
                if x == x:
                    self.error(f"{t.text} is not the bit pattern of a float64 NaN")
                self.advance()
                return x
            self.advance()
            return t.value
        if t.kind == _STRING:
            self.advance()
            return t.value
        if self.at("["):
            with self.nested():
                return self.parse_attr_list()
        if t.kind == _IDENT:
            w = t.text
            if w in ("true", "false"):
                self.advance()
                return w == "true"
            if w == "none":
                self.advance()
                return None
            if w == "inf":
                self.advance()
                return float("inf")
            if w == "nan":
                self.advance()
                return float("nan")
            if w == "array":
                return self.parse_array()
            if w == "func":
                with self.nested():
                    return self.parse_func()  # a nested graph: its own scope
            if w == "opaque":
                self.error("an opaque attribute value (a Python object the printer could not spell) cannot be parsed")
        self.error(f"expected an attribute value, got {t.describe()}")

    @contextlib.contextmanager
    def nested(self):
        """One more level of attribute nesting (a list, a nested func); an IRParseError beyond
        MAX_NESTING levels, before the recursion could exhaust Python's stack."""
        if self.depth >= MAX_NESTING:
            self.error(f"attribute values are nested more than {MAX_NESTING} levels deep")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def parse_attr_list(self) -> tuple:
        self.expect("[")
        items = []
        if not self.at("]"):
            while True:
                items.append(self.parse_attr_value())
                if self.at(","):
                    self.advance()
                    continue
                break
        self.expect("]", "to close the list")
        return tuple(items)

    def parse_array(self) -> np.ndarray:
        self.expect_keyword("array")
        self.expect("<", "after 'array'")
        typ = self.parse_type()
        self.expect(">", "after the array type")
        d = typ.dtype
        elems: list[Any] = []
        nan_bits: list[tuple[int, int]] = []
        if d.is_complex:  # (real, imag) pairs in the parts' type (graphad.ir.printer.format_array)
            parts = TensorType(tuple(typ.shape) + (2,), dt.real_dtype(d))
            self._array_level(parts.shape, 0, parts.dtype, elems, nan_bits)
            arr = _build_array(parts, elems, nan_bits, self)
            return np.ascontiguousarray(arr).view(d.np).reshape(typ.shape)
        if typ.ndim == 0:
            self._array_elem(d, elems, nan_bits)
        else:
            self._array_level(typ.shape, 0, d, elems, nan_bits)
        return _build_array(typ, elems, nan_bits, self)

    def _array_level(self, shape, axis, d, elems, nan_bits):
        open_tok = self.expect("[", f"(array axis {axis} of shape {list(shape)})")
        n = 0
        if not self.at("]"):
            while True:
                if axis == len(shape) - 1:
                    self._array_elem(d, elems, nan_bits)
                else:
                    self._array_level(shape, axis + 1, d, elems, nan_bits)
                n += 1
                if self.at(","):
                    self.advance()
                    continue
                break
        if n != shape[axis]:
            self.error(f"array axis {axis} has {n} entries, its type {TensorType(shape, d)} says {shape[axis]}",
                       open_tok)
        self.expect("]", "to close the array row")

    def _array_elem(self, d: dt.DType, elems: list, nan_bits: list):
        t = self.tok
        if d.is_bool:
            if not (t.kind == _IDENT and t.text in ("true", "false")):
                self.error(f"expected true or false in a {d.short} array, got {t.describe()}")
            elems.append(t.text == "true")
        elif d.is_int:
            if t.kind != _INT:
                self.error(f"expected an integer in a {d.short} array, got {t.describe()}")
            info = np.iinfo(d.np)
            if not info.min <= t.value <= info.max:
                self.error(f"integer {t.value} does not fit in {d.short}")
            elems.append(t.value)
        else:
            if t.kind == _INT:
                elems.append(float(t.value))
            elif t.kind == _FLOAT:
                if isinstance(t.value, tuple):
                    bits = t.value[1]
                    if bits >> d.bits or not _is_nan_bits(bits, d):
                        self.error(f"{t.text} is not the bit pattern of a {d.short} NaN")
                    nan_bits.append((len(elems), bits))
                    elems.append(float("nan"))
                else:
                    elems.append(t.value)
            elif t.kind == _IDENT and t.text in ("inf", "nan"):
                elems.append(float(t.text))
            else:
                self.error(f"expected a number in a {d.short} array, got {t.describe()}")
        self.advance()


def _is_nan_bits(bits: int, d: dt.DType) -> bool:
    u = np.array([bits], _UINT_OF_BITS[d.bits])
    return bool(np.isnan(u.view(d.np).astype(np.float64))[0])


def _build_array(typ: TensorType, elems: list, nan_bits: list, parser: _Parser) -> np.ndarray:
    d = typ.dtype
    if d.is_bool:
        arr = np.array(elems, dtype=np.bool_)
    elif d.is_int:
        arr = np.array(elems, dtype=d.np)
    else:
        with np.errstate(all="ignore"):
            arr = np.array(elems, dtype=np.float64).astype(d.np)
        if nan_bits:
            u = arr.view(_UINT_OF_BITS[d.bits])
            for i, bits in nan_bits:
                u[i] = bits
    return arr.reshape(typ.shape)


def parse_module(text: str, source_name: str = "<ir>") -> list[Graph]:
    """Parse any number of funcs."""
    return _Parser(text, source_name).parse_module()


def parse_graph(text: str, source_name: str = "<ir>") -> Graph:
    """Parse exactly one func."""
    p = _Parser(text, source_name)
    if p.tok.kind == _EOF:
        p.error("expected 'func', got end of input")
    if not p.at_keyword("func"):
        p.error(f"expected 'func', got {p.tok.describe()}")
    g = p.parse_func()
    if p.tok.kind != _EOF:
        extra = " (use parse_module for several funcs)" if p.at_keyword("func") else ""
        p.error(f"unexpected {p.tok.describe()} after the end of @{g.name}{extra}")
    return g
