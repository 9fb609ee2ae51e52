"""simplify: algebraic rewriting and basis-structure propagation, to a fixed point.

One round replays the graph through `RULES`, a table with one `Rule` row per rule (its name, the
primitives it matches, whether it is commutative, its replacement function; the statistics and
the fixtures name rules by the row's name); each rule looks at a node and the already-rewritten
definitions of its operands and returns replacement values, or nothing. Then the round
runs the basis-structure rewrite of `graphad.passes.structure` (identity / diagonal-embedding
values entering matmul, mul, sum, reshape, transpose, slice or take become the broadcast
products they really are), then CSE and DCE. Rounds repeat until the printed graph stops changing
(at most `MAX_ROUNDS`, the `rounds` option; stopping there short of the fixed point warns).

Rules (name: before -> after; `bcast(x)` is x broadcast to the node's result shape, a no-op when
the shapes agree; a *fill* is a `full` node or a `constant` whose elements are all equal):
  mul-one            x * 1, 1 * x                       -> bcast(x)
  mul-zero           x * 0, 0 * x, x provably finite    -> zeros of the result's shape (as `full`)
  add-zero           x + (-0.0), (-0.0) + x             -> bcast(x)  (integers: x + 0)
  sub-zero           x - (+0.0) -> bcast(x);  (-0.0) - x -> bcast(neg(x))  (integers: 0)
  div-one            x / 1                              -> bcast(x)
  where-fill         where(c, a, b), c a fill              -> bcast(a) if c is true, else bcast(b)
  pow-small          x ** 2 -> x * x;  x ** 1 -> bcast(x);  x ** 0 -> 1;  x ** -1 -> 1 / x (floats),
                     the exponent a fill, x of the result's dtype (NumPy's fast paths, bit for bit)
  neg-neg            neg(neg(x))                        -> x
  transpose-compose  transpose(transpose(x, p), q)      -> transpose(x, p[q]); identity perms vanish;
                     a transpose that keeps the order of the non-unit axes -> reshape
  transpose-elementwise  transpose(x op y) -> transpose(x) op transpose(y) when each operand is
                     smaller than the result, or a full-size one the transpose sinks through too
  transpose-reshape  transpose(reshape(Y)) -> reshape(transpose(Y)) when the reshape only merges
                     runs of Y's axes and Y is a broadcasting product of smaller operands
  transpose-matmul   transpose(A @ B) over the last two axes -> B^T @ A^T when fewer elements
                     move that way (a transpose of a transpose cancels)
  reshape-compose    reshape(reshape(x)) -> reshape(x);  reshape(x) to x's own shape -> x
  broadcast-compose  broadcast_to(broadcast_to(x)) -> broadcast_to(x);  to x's own shape -> x;
                     a broadcast that only adds size-1 axes -> reshape
  astype-same        astype(x) to x's dtype -> x;  astype(eye) -> eye of the new dtype
  sum-unit           sum over size-1 axes only          -> reshape
  slice-identity     a slice taking every element; pad by nothing -> x
  slice-pad          slice(pad(x)) inside x's region -> slice(x) (or x); wholly in the padding -> fill
  canonical-fill     constant with equal elements (rank >= 1) -> full;  full of rank 0 -> constant
  fold-fill          an elementwise, shape, sum/max/min or matmul node whose operands are all
                     fills -> the fill of its result (any size: large fills stay `full`)
  fold-constant      a node whose operands all come from constant/full/arange nodes and whose
                     result has at most FOLD_MAX_ELEMENTS elements -> constant (`eye` is not folded:
                     it is the basis marker the structure rewrite keys on)
Semantics: IEEE 754, as NumPy and JAX: no rule changes a NaN, an infinity or the sign of a zero.
`mul-zero` needs an x that cannot be inf or NaN (a finite fill or constant, an eye, an arange, an
integer), since inf * 0 is NaN; the zero rules of add and sub use only the signed zero that is an
identity (x + (-0.0) = x, but -0.0 + 0.0 = +0.0). The zeros autodiff itself introduces are
symbolic (no node) and the Jacobian bases are `eye`s marked `basis` (see structure.py), so these
restrictions cost derivative graphs nothing. A folded sum of fills is value * count rounded once
(the value itself for one term; +0.0 for no terms or several zero terms, as a reduction whose
accumulator starts at +0.0 gives).

Structure rewrites (graphad.passes.structure) are counted in `stats` as `structure-<prim>` where a
form is materialised at a matmul, sum, einsum, take, index_add, slice, ... node, and
`structure-settle` where a structured value is materialised before an opaque use. Every name here
has an IR-in / IR-out fixture in tests/simplify_fixtures/.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.interpret import run_impl
from ..ir.core import Graph, TensorType, Value
from ..ir.printer import prints_equal
from ..prims import creation as _cr
from ..prims import elementwise as _ew
from ..prims import linalg as _la
from ..prims import reduce as _rd
from ..prims import shape as _sh
from ..prims.registry import Primitive
from .cleanup import cse, dce
from .fills import KERNEL_DATA_ERRORS, fill_value
from .fills import uniform as _uniform
from .manager import Option, register_pass
from .rewrite import PassTrace, copy_inputs, finish, replay
from .structure import structure_round

MAX_ROUNDS = 32
FOLD_MAX_ELEMENTS = 64
FOLD_MAX_INPUT_ELEMENTS = 4096


# ---------------------------------------------------------------- fills


def _emit_fill(t: TensorType, value):
    """The canonical fill: a 0-d `constant`, else `full`."""
    d = t.dtype
    if not t.shape or (d.is_complex and complex(value).imag != 0):
        # a fill's attribute is a real number: a complex fill with an imaginary part stays a constant
        return _cr.constant.bind(value=np.full(tuple(t.shape), value, d.np), dtype=d.name)
    if d.is_complex:
        value = complex(value).real
    elif d.is_float:
        value = float(value)
    elif d.is_bool:
        value = int(bool(value))
    else:
        value = int(value)
    return _cr.full.bind(shape=tuple(t.shape), value=value, dtype=d.name)


def _emit_constant(t: TensorType, arr: np.ndarray):
    arr = np.asarray(arr, t.dtype.np).reshape(t.shape)
    if _uniform(arr):
        return _emit_fill(t, arr.reshape(-1)[0].item())
    return _cr.constant.bind(value=arr, dtype=t.dtype.name)


# ---------------------------------------------------------------- helpers


def _def(x):
    """The node (of the graph being built) that defines tracer x, or None for an input."""
    return x.value.node


def _bcast(x, shape):
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    if x.size == int(np.prod(shape)) and [s for s in x.shape if s != 1] == [s for s in shape if s != 1]:
        return _sh.reshape.bind(x, shape=shape)
    return _sh.broadcast_to.bind(x, shape=shape)


def _is(x, value) -> bool:
    f = fill_value(x.value)
    return f is not None and f == value


def _out(node) -> TensorType:
    return node.outputs[0].type


# ---------------------------------------------------------------- rules


def _complex_arith(node) -> bool:
    """A complex result: NumPy's complex product and quotient are the textbook formulas, so
    x * 1, x * 0, x + 0 and x / 1 are not x (or 0) for infinite or signed-zero parts
    ((inf + 1j) * 1 = inf + nan j): the arithmetic rules leave complex nodes alone."""
    return _out(node).dtype.is_complex


def r_mul_one(node, ins):
    x, y = ins  # commutative: tried with the operands in both orders
    if _complex_arith(node):
        return None
    if _is(y, 1):
        return [_bcast(x, _out(node).shape)]
    return None


def _finite(x) -> bool:
    """x is provably free of inf and NaN: an integer or bool value, a finite fill or constant, an
    eye or an arange. User inputs never are (they may hold inf or NaN)."""
    if not x.dtype.is_float:
        return True
    f = fill_value(x.value)
    if f is not None:
        return bool(np.isfinite(f))
    d = _def(x)
    if d is None:
        return False
    if d.prim is _cr.constant:
        return bool(np.isfinite(np.asarray(d.attrs["value"], np.float64)).all())
    return d.prim is _cr.eye or d.prim is _cr.arange


def _zero_bits(x, negative: bool) -> bool:
    """x is a fill of exactly +0.0 (negative=False) or -0.0 (True); for integers, of 0."""
    f = fill_value(x.value)
    if f is None or f != 0:
        return False
    return not x.dtype.is_float or bool(np.signbit(f)) == negative


def _signbits(x):
    """For a provably finite float x (_finite): whether all its elements have the sign bit set
    (True: negative numbers and -0.0), none has (False), or it varies or is unknown (None)."""
    f = fill_value(x.value)
    if f is not None:
        return bool(np.signbit(f))
    d = _def(x)
    if d is not None and d.prim is _cr.constant:
        bits = np.signbit(np.asarray(d.attrs["value"], np.float64))
        return bool(bits.flat[0]) if bits.size and (bits == bits.flat[0]).all() else None
    if d is not None and d.prim is _cr.eye:
        return False  # zeros and ones
    if d is not None and d.prim is _cr.arange and not np.signbit(d.attrs["start"]) and d.attrs["step"] > 0:
        return False  # (arange(-0.0, n) starts with -0.0)
    return None


def r_mul_zero(node, ins):
    # IEEE: inf * 0 and NaN * 0 are NaN, so x * 0 -> 0 only for an x that cannot be either;
    # autodiff's own zeros are symbolic (None) and never reach the graph as fills. The zero's
    # sign is the product's: the signs' exclusive or (eye * -0.0 is -0.0 throughout; it was
    # +0.0, and a Jacobian of `x * -0.0` lost its signs); an x of mixed signs is left alone
    x, y = ins  # commutative
    if _complex_arith(node):
        return None
    if _is(y, 0) and _finite(x):
        if not _out(node).dtype.is_float:
            return [_emit_fill(_out(node), 0)]
        bits = _signbits(x)
        if bits is None:
            return None
        negative = bits != bool(np.signbit(fill_value(y.value)))
        return [_emit_fill(_out(node), -0.0 if negative else 0.0)]
    return None


def r_add_zero(node, ins):
    # x + (-0.0) is x for every x; x + (+0.0) is not (-0.0 + 0.0 = +0.0)
    x, y = ins  # commutative
    if _complex_arith(node):
        return None
    if _out(node).dtype.is_bool:
        return None
    if _zero_bits(y, negative=True) or (not x.dtype.is_float and _is(y, 0)):
        return [_bcast(x, _out(node).shape)]
    return None


def r_sub_zero(node, ins):
    # x - (+0.0) is x, and (-0.0) - x is -x, for every x (signed zeros included)
    a, b = ins
    if _complex_arith(node):
        return None
    if _out(node).dtype.is_bool:
        return None
    if _zero_bits(b, negative=False):
        return [_bcast(a, _out(node).shape)]
    if _zero_bits(a, negative=True):
        return [_bcast(_ew.neg.bind(b), _out(node).shape)]
    return None


def r_div_one(node, ins):
    a, b = ins
    if _complex_arith(node):
        return None
    if _is(b, 1):
        return [_bcast(a, _out(node).shape)]
    return None


def r_pow_small(node, ins):
    # NumPy's power takes these exponents by a fast path: x ** 2 is x * x, x ** 1 is x, x ** -1
    # is 1 / x (floats) and x ** 0 is 1, bit for bit, NaN, infinities and signed zeros included
    # (pow(-0.0, 2) = +0.0 = -0.0 * -0.0, pow(NaN, 0) = 1). Compiled, pow is the C library's powf
    # per element, which keeps the kernel from vectorizing: a layer norm's (x - m) ** 2 ran 8% of
    # a transformer block's gradient in powf. Not 0.5 (pow(-0.0, 0.5) is +0.0, sqrt(-0.0) -0.0;
    # pow(-inf, 0.5) is inf) nor 3 (x * x * x rounds twice).
    x, y = ins
    t = _out(node)
    if _complex_arith(node) or x.dtype != t.dtype or t.dtype.is_bool:
        return None
    f = fill_value(y.value)
    if f is None:
        return None
    if f == 0:
        return [_emit_fill(t, 1)]
    if f == 1:
        return [_bcast(x, t.shape)]
    if f == 2:
        return [_bcast(_ew.mul.bind(x, x), t.shape)]
    if f == -1 and t.dtype.is_float:
        return [_bcast(_ew.div.bind(_emit_fill(TensorType((), t.dtype), 1.0), x), t.shape)]
    return None


def r_where_fill(node, ins):
    # the condition all true or all false: that branch, every bit of it (autodiff's masks for a
    # constant exponent or bound come out as such fills)
    c, a, b = ins
    f = fill_value(c.value)
    if f is None:
        return None
    pick = a if bool(f) else b
    if pick.dtype != _out(node).dtype:
        return None
    return [_bcast(pick, _out(node).shape)]


def r_neg_neg(node, ins):
    d = _def(ins[0])
    if d is not None and d.prim is _ew.neg:
        return [_wrap(d.inputs[0], ins[0])]
    return None


def _wrap(value: Value, like):
    """A tracer of the current trace for a value of the graph being built."""
    from ..prims.trace import Tracer
    return Tracer(value, like._trace)


def r_transpose(node, ins):
    x = ins[0]
    perm = tuple(node.attrs["perm"])
    d = _def(x)
    if d is not None and d.prim is _sh.transpose:
        inner = tuple(d.attrs["perm"])
        perm = tuple(inner[p] for p in perm)
        x = _wrap(d.inputs[0], x)
    elif perm == tuple(range(len(perm))):
        return [x]
    if perm == tuple(range(len(perm))):
        return [x]
    kept = [p for p in perm if x.shape[p] != 1]
    if kept == sorted(kept):  # only unit axes move: a reshape
        return [_sh.reshape.bind(x, shape=_out(node).shape)]
    if x is ins[0]:
        return None
    return [_sh.transpose.bind(x, perm=perm)]


_BROADCASTING_BINARY = frozenset({_ew.add, _ew.sub, _ew.mul, _ew.div, _ew.maximum, _ew.minimum, _ew.pow_})


def r_transpose_elementwise(node, ins):
    """transpose(x op y) -> transpose(x) op transpose(y) when both operands are smaller than the
    result (broadcast): the permuted layout is produced directly instead of being copied afterwards
    (a Hessian's (n, m, n) product transposed to (m, n, n) costs a full extra pass otherwise)."""
    x = ins[0]
    d = _def(x)
    if d is None or d.prim not in _BROADCASTING_BINARY:
        return None
    operands = [_wrap(v, x) for v in d.inputs]
    perm = tuple(node.attrs["perm"])
    # a full-size operand is fine when the transpose sinks through it too (transpose-reshape)
    if not all(o.size < x.size or (tuple(o.shape) == tuple(x.shape) and _sinkable_reshape(o, perm))
               for o in operands):
        return None
    n = len(perm)
    moved = []
    for o in operands:
        if len(o.shape) < n:
            o = _sh.reshape.bind(o, shape=(1,) * (n - len(o.shape)) + tuple(o.shape))
        moved.append(_sh.transpose.bind(o, perm=perm))
    return [d.prim.bind(*moved, **d.attrs)]


def _merge_groups(in_shape, out_shape):
    """For a reshape that only merges runs of adjacent axes: groups[i] lists the input axes that
    make up output axis i (size-1 input axes join a neighbouring run); None if it splits an axis."""
    groups, j = [], 0
    for s in out_shape:
        g, p = [], 1
        while j < len(in_shape) and p < s:
            g.append(j)
            p *= in_shape[j]
            j += 1
        if p != s:
            return None
        groups.append(g)
    if any(in_shape[k] != 1 for k in range(j, len(in_shape))):
        return None
    if j < len(in_shape):  # trailing unit axes
        if not groups:
            return None
        groups[-1].extend(range(j, len(in_shape)))
    return groups


def _product_of_smaller(v) -> bool:
    """v is a broadcasting elementwise op all of whose operands are smaller than v."""
    d = _def(v)
    return (d is not None and d.prim in _BROADCASTING_BINARY
            and all(o.type.size < v.size for o in d.inputs))


def _sinkable_reshape(v, perm):
    """(Y, perm on Y's axes) when v = reshape(Y) merges runs of Y's axes, Y is a broadcasting
    product of smaller operands, and transpose(v, perm) can be taken as a transpose of Y."""
    d = _def(v)
    if d is None or d.prim is not _sh.reshape:
        return None
    y = _wrap(d.inputs[0], v)
    if not _product_of_smaller(y):
        return None
    groups = _merge_groups(tuple(y.shape), tuple(v.shape))
    if groups is None:
        return None
    return y, tuple(a for p in perm for a in groups[p])


def r_transpose_reshape(node, ins):
    """transpose(reshape(Y)) -> reshape(transpose(Y)) when the reshape only merges axes and Y is a
    broadcasting product of smaller operands, so that transpose-elementwise can then write the
    permuted layout directly (forward-mode Jacobians w.r.t. a matrix end in such a transpose)."""
    sink = _sinkable_reshape(ins[0], tuple(node.attrs["perm"]))
    if sink is None:
        return None
    y, perm = sink
    return [_sh.reshape.bind(_sh.transpose.bind(y, perm=perm), shape=_out(node).shape)]


def _swaps_last_two(perm) -> bool:
    n = len(perm)
    return n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)


def _mT(v):
    return _sh.transpose.bind(v, perm=tuple(range(v.ndim - 2)) + (v.ndim - 1, v.ndim - 2))


def r_transpose_matmul(node, ins):
    """transpose(A @ B) over the last two axes -> B^T @ A^T when that moves fewer elements (a
    transpose of a transpose costs nothing: it cancels). The VJP of dense(x, W) leaves
    dW = transpose(transpose(x) @ g); this turns it into transpose(g) @ x, so neither x nor dW is
    copied into the other layout."""
    x = ins[0]
    d = _def(x)
    if d is None or d.prim is not _la.matmul or not _swaps_last_two(node.attrs["perm"]):
        return None
    a, b = (_wrap(v, x) for v in d.inputs)

    def cost(v):
        dv = _def(v)
        return 0 if dv is not None and dv.prim is _sh.transpose and _swaps_last_two(dv.attrs["perm"]) else v.size
    if cost(a) + cost(b) >= x.size:
        return None
    return [_la.matmul.bind(_mT(b), _mT(a))]


def r_reshape(node, ins):
    x = ins[0]
    shape = tuple(_out(node).shape)
    d = _def(x)
    if d is not None and d.prim is _sh.reshape:
        x = _wrap(d.inputs[0], x)
        return [x if tuple(x.shape) == shape else _sh.reshape.bind(x, shape=shape)]
    if tuple(x.shape) == shape:
        return [x]
    return None


def r_broadcast(node, ins):
    x = ins[0]
    shape = tuple(_out(node).shape)
    if tuple(x.shape) == shape:
        return [x]
    d = _def(x)
    if d is not None and d.prim is _sh.broadcast_to:
        return [_bcast(_wrap(d.inputs[0], x), shape)]
    if x.size == _out(node).size:
        return [_sh.reshape.bind(x, shape=shape)]
    return None


def r_astype(node, ins):
    x = ins[0]
    to = _out(node).dtype
    if x.dtype is to:
        return [x]
    d = _def(x)
    if d is not None and d.prim is _cr.eye:
        a = dict(d.attrs)
        a["dtype"] = to.name
        return [_cr.eye.bind(**a)]
    return None


def r_sum_unit(node, ins):
    x = ins[0]
    axes = node.attrs["axes"]
    if all(x.shape[a] == 1 for a in axes):
        return [_bcast(x, _out(node).shape) if tuple(x.shape) != _out(node).shape else x]
    return None


def r_slice_identity(node, ins):
    """A slice taking every element, or a pad by nothing: its operand."""
    x = ins[0]
    a = node.attrs
    if node.prim is _sh.pad:
        return [x] if not any(a["lo"]) and not any(a["hi"]) and not any(a["interior"]) else None
    if tuple(a["starts"]) == (0,) * len(x.shape) and tuple(a["stops"]) == tuple(x.shape) and \
            all(s == 1 for s in a["steps"]):
        return [x]
    return None


def r_slice_pad(node, ins):
    """slice(pad(x)) reading only x's region -> a slice of x; reading only padding -> the pad value."""
    d = _def(ins[0])
    if d is None or d.prim is not _sh.pad or any(d.attrs["interior"]):
        return None
    x = _wrap(d.inputs[0], ins[0])
    a = node.attrs
    lo = d.attrs["lo"]
    inside, outside = True, False
    for st, sp, s, l, n in zip(a["starts"], a["stops"], a["steps"], lo, x.shape):
        idx = range(st, sp, s)
        if len(idx) == 0:
            return None
        first, last = idx[0], idx[-1]
        if not (l <= first and last < l + n):
            inside = False
        if last < l or first >= l + n:
            outside = True
    if outside:
        return [_emit_fill(_out(node), np.asarray(d.attrs["value"], x.dtype.np).item())]
    if not inside:
        return None
    starts = tuple(st - l for st, l in zip(a["starts"], lo))
    stops = tuple(sp - l for sp, l in zip(a["stops"], lo))
    stops = tuple(min(sp, n) for sp, n in zip(stops, x.shape))
    if starts == (0,) * len(starts) and stops == tuple(x.shape) and all(s == 1 for s in a["steps"]):
        return [x]
    return [_sh.slice_.bind(x, starts=starts, stops=stops, steps=tuple(a["steps"]))]


def r_canonical_fill(node, ins):
    t = _out(node)
    if node.prim is _cr.constant:
        arr = np.asarray(node.attrs["value"])
        if arr.ndim >= 1 and _uniform(arr):
            return [_emit_fill(t, arr.reshape(-1)[0].item())]
        return None
    if node.prim is _cr.full and not t.shape:
        return [_emit_fill(t, fill_value(node.outputs[0]))]
    return None


_FILL_SHAPE_OPS = frozenset({_sh.reshape, _sh.broadcast_to, _sh.transpose, _sh.flip, _sh.slice_, _ew.stop_gradient})


def r_fold_fill(node, ins):
    if not ins or len(node.outputs) != 1:
        return None
    vals = [fill_value(x.value) for x in ins]
    if any(v is None for v in vals):
        return None
    t = _out(node)
    prim = node.prim
    if "elementwise" in node.prim.traits:
        arrs = [np.asarray(v, x.dtype.np) for v, x in zip(vals, ins)]
        try:
            r = run_impl(node.prim, arrs, node.attrs, [TensorType((), t.dtype)])[0]
        except KERNEL_DATA_ERRORS:  # the kernel refuses these values: left for the run to report
            return None
        return [_emit_fill(t, r.item())]
    in_t = ins[0].dtype
    v0 = np.asarray(vals[0], in_t.np)
    if in_t.is_complex and prim not in _FILL_SHAPE_OPS:
        # a complex sum or product of fills is not v0 * count (inf parts give NaN in the product)
        return None
    if prim in _FILL_SHAPE_OPS:
        return [_emit_fill(t, v0.item())] if t.size else None
    if prim is _sh.concat:
        if all(np.asarray(v, in_t.np).tobytes() == v0.tobytes() for v in vals):
            return [_emit_fill(t, v0.item())]
        return None
    if prim is _sh.pad:
        if np.asarray(node.attrs["value"], in_t.np).tobytes() == v0.tobytes():
            return [_emit_fill(t, v0.item())]
        return None
    if prim in (_rd.reduce_sum, _rd.reduce_max, _rd.reduce_min):
        count = int(np.prod([ins[0].shape[a] for a in node.attrs["axes"]]))
        if prim is _rd.reduce_sum:
            r = _sum_of_copies(v0, count, in_t)
            return None if r is None else [_emit_fill(t, r)]
        return [_emit_fill(t, v0.item())] if count else None
    if prim is _la.matmul:
        if in_t.is_bool:
            return None
        if in_t.is_inexact:
            with np.errstate(all="ignore"):
                term = v0 * np.asarray(vals[1], in_t.np)  # (each product rounded in the dtype, as the kernel's)
        else:
            term = int(v0) * int(vals[1])
        r = _sum_of_copies(term, ins[0].shape[-1], in_t)
        return None if r is None else [_emit_fill(t, r)]
    return None


def _sum_of_copies(term, count: int, dtype):
    """The sum of `count` copies of the number `term` of `dtype`, as a reduction gives it: one term
    is itself; otherwise the accumulator starts at +0.0, so no terms, or zeros of either sign, sum
    to +0.0 (the product 0 * inf gave NaN for an empty sum of an inf fill, and -0.0 * 3 gave -0.0);
    other terms are their exact total rounded once, computed in float64 or Python ints (a float16
    count past 65504 was inf); integers wrap as the kernel's adds do. None for a bool."""
    if dtype.is_bool:
        return None
    if count == 1:  # a one-term sum is its term (-0.0 too: docs/user_guide.md "Numerics")
        return np.asarray(term).astype(dtype.np).item()
    if dtype.is_inexact:
        if count == 0 or term == 0:
            return 0.0
        with np.errstate(all="ignore"):
            return np.asarray(np.float64(term) * count).astype(dtype.np).item()
    bits = 8 * np.dtype(dtype.np).itemsize
    total = (int(term) * count) % (1 << bits)  # (wrapped, as the kernel's integer adds wrap)
    if np.issubdtype(dtype.np, np.signedinteger) and total >= 1 << (bits - 1):
        total -= 1 << bits
    return total


_FOLDABLE_SOURCES = frozenset({_cr.constant, _cr.full, _cr.arange})


def r_fold_constant(node, ins):
    if not ins or len(node.outputs) != 1 or "creation" in node.prim.traits:
        return None
    t = _out(node)
    if t.size > FOLD_MAX_ELEMENTS:
        return None
    if any(isinstance(v, Graph) for v in node.attrs.values()):
        return None
    arrs = []
    for x in ins:
        d = _def(x)
        if d is None or d.prim not in _FOLDABLE_SOURCES or x.size > FOLD_MAX_INPUT_ELEMENTS:
            return None
        arrs.append(run_impl(d.prim, [], d.attrs, [x.type])[0])
    try:
        r = run_impl(node.prim, arrs, node.attrs, [t])[0]
    except KERNEL_DATA_ERRORS:  # e.g. an index out of range: left for the run to report
        return None
    return [_emit_constant(t, r)]


@dataclass(frozen=True)
class Rule:
    """One rewrite rule, one row of RULES: `name` (what statistics and fixtures call it), `prims`
    (the primitives it matches; empty: every node), `commutative` (a two-operand rule tried on
    (a, b) and then on (b, a), so it is written for one order), `fn(node, operands)` returning the
    replacement values of the node's outputs or None, and a one-line `doc` (before -> after)."""
    name: str
    prims: tuple[Primitive, ...]
    fn: Callable
    commutative: bool = False
    doc: str = ""

    def apply(self, node, ins):
        """The rule's replacement for `node` with operands `ins`, or None."""
        res = self.fn(node, ins)
        if res is None and self.commutative:
            res = self.fn(node, ins[::-1])
        return res


# Tried in this order on every node (generic rows first); the first that returns wins.
RULES: tuple[Rule, ...] = (
    Rule("canonical-fill", (), r_canonical_fill, doc="uniform constant -> full; full of rank 0 -> constant"),
    Rule("fold-fill", (), r_fold_fill, doc="a node whose operands are all fills -> the fill of its result"),
    Rule("fold-constant", (), r_fold_constant, doc="a small node of constant operands -> constant"),
    Rule("mul-zero", (_ew.mul,), r_mul_zero, commutative=True, doc="x * 0, x provably finite -> 0"),
    Rule("mul-one", (_ew.mul,), r_mul_one, commutative=True, doc="x * 1 -> bcast(x)"),
    Rule("add-zero", (_ew.add,), r_add_zero, commutative=True, doc="x + (-0.0) -> bcast(x)"),
    Rule("sub-zero", (_ew.sub,), r_sub_zero, doc="x - (+0.0) -> bcast(x); (-0.0) - x -> neg(x)"),
    Rule("div-one", (_ew.div,), r_div_one, doc="x / 1 -> bcast(x)"),
    Rule("neg-neg", (_ew.neg,), r_neg_neg, doc="neg(neg(x)) -> x"),
    Rule("where-fill", (_ew.where,), r_where_fill, doc="where(all true, a, b) -> bcast(a); all false -> bcast(b)"),
    Rule("pow-small", (_ew.pow_,), r_pow_small, doc="x ** 2 -> x * x; x ** 1 -> x; x ** 0 -> 1; x ** -1 -> 1 / x"),
    Rule("transpose-compose", (_sh.transpose,), r_transpose, doc="transpose(transpose(x, p), q) -> transpose(x, p[q])"),
    Rule("transpose-elementwise", (_sh.transpose,), r_transpose_elementwise,
         doc="transpose(x op y) -> transpose(x) op transpose(y)"),
    Rule("transpose-reshape", (_sh.transpose,), r_transpose_reshape,
         doc="transpose(reshape(Y)) -> reshape(transpose(Y))"),
    Rule("transpose-matmul", (_sh.transpose,), r_transpose_matmul, doc="transpose(A @ B) -> B^T @ A^T"),
    Rule("reshape-compose", (_sh.reshape,), r_reshape, doc="reshape(reshape(x)) -> reshape(x)"),
    Rule("broadcast-compose", (_sh.broadcast_to,), r_broadcast, doc="broadcast_to(broadcast_to(x)) -> broadcast_to(x)"),
    Rule("astype-same", (_ew.astype,), r_astype, doc="astype(x) to x's dtype -> x"),
    Rule("sum-unit", (_rd.reduce_sum,), r_sum_unit, doc="sum over size-1 axes -> reshape"),
    Rule("slice-identity", (_sh.slice_, _sh.pad), r_slice_identity, doc="slice of everything, pad by nothing -> x"),
    Rule("slice-pad", (_sh.slice_,), r_slice_pad, doc="slice(pad(x)) -> slice(x), or the pad value"),
)
RULE_NAMES = sorted({r.name for r in RULES})
if len(RULE_NAMES) != len(RULES):
    raise AssertionError("simplify: two rows of RULES share a name")


def _rules_by_prim() -> tuple[tuple[Rule, ...], dict[Primitive, tuple[Rule, ...]]]:
    """(rules matching every node, primitive -> the rules matching it after those), in table order."""
    generic = tuple(r for r in RULES if not r.prims)
    table: dict[Primitive, list[Rule]] = {}
    for r in RULES:
        for p in r.prims:
            table.setdefault(p, []).append(r)
    return generic, {p: generic + tuple(rs) for p, rs in table.items()}


_GENERIC, _BY_PRIM = _rules_by_prim()


def algebra_round(graph: Graph, stats: Counter | None = None) -> Graph:
    """One replay of `graph` through RULES."""
    tr = PassTrace(graph.name)
    with tr:
        env = copy_inputs(tr, graph)
        for node in graph.nodes:
            if not node.outputs:  # (a loop or cond of an empty carry): nothing a rule could rewrite
                replay(node, env)
                continue
            ins = [env[v] for v in node.inputs]
            res = None
            with tr.at(node):
                for rule in _BY_PRIM.get(node.prim, _GENERIC):
                    res = rule.apply(node, ins)
                    if res is not None:
                        if stats is not None:
                            stats[rule.name] += 1
                        break
            if res is None:
                replay(node, env)
                continue
            for o, r in zip(node.outputs, res):
                if r.value.type != o.type:
                    raise AssertionError(f"simplify rule {rule.name} turned {o.type} into {r.value.type} "
                                         f"at {node.describe()}")
                env[o] = r
        return finish(tr, [env[v] for v in graph.outputs])


def simplify(graph: Graph, structure: bool = True, max_rounds: int = MAX_ROUNDS,
             stats: Counter | None = None) -> Graph:
    """Rewrite `graph` with the algebraic rules and (unless structure=False) the basis-structure rewrite,
    with cse and dce after each round, until the printed graph stops changing.

    `stats`, a Counter, receives how often each rule fired, `rounds` (rounds that changed the graph)
    and `fixed-point` (1 when a round left the graph unchanged). Stopping after `max_rounds` rounds
    that all changed the graph warns (RuntimeWarning): the result is correct but not fully simplified.
    """
    for _ in range(max_rounds):
        g = algebra_round(graph, stats)
        if structure:
            g = structure_round(g, stats)
        g = dce(cse(g))
        if prints_equal(g, graph):
            if stats is not None:  # a flag: stays 0 if an earlier graph of these stats missed it
                stats["fixed-point"] = min(stats.get("fixed-point", 1), 1)
            return g
        if stats is not None:
            stats["rounds"] += 1
        graph = g
    if stats is not None:
        stats["fixed-point"] = 0
    warnings.warn(f"simplify stopped after {max_rounds} round(s) of @{graph.name} without reaching its fixed "
                  f"point (every round changed the graph); the result is correct but may not be fully "
                  f"simplified", RuntimeWarning, stacklevel=2)
    return graph


@register_pass("simplify", "algebraic identities, fill/constant folding and basis-structure (identity and "
                           "diagonal Jacobian) rewriting to a fixed point, with cse and dce after each round",
               "no rule of the table applies; no contraction reads a delta-structured operand it could "
               "index directly; every node reaches an output",
               options=(Option("structure", "bool", True, "also run the basis-structure rewrite"),
                        Option("rounds", "int", MAX_ROUNDS, "the most rounds before stopping (with a warning) "
                                                            "short of the fixed point", minimum=1)), regions=True)
def _simplify_pass(graph: Graph, *, structure: bool, rounds: int, stats: Counter) -> Graph:
    return simplify(graph, structure=structure, max_rounds=rounds, stats=stats)
