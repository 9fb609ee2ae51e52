"""Basis-structure propagation: identity (Kronecker-delta) structure carried symbolically through a graph.

The Jacobian transformations feed `eye(n)` bases through vmapped derivative graphs, so a derivative
graph is full of values like `mul(eye(n), d)` (= diag(d)), reshaped to (n,1,n), batched to (B,n,n),
transposed, cast, then contracted by a matmul or a sum. Materialised as written these are n x n (or
larger) intermediates although the contraction only ever reads their diagonal. This module tracks,
for every value derived from an `eye`, a *form*

    value[axes] = scale * prod_f F_f[letters_f] * prod_d [a_d == b_d + k_d]

where every axis of the value is the row-major product of a tuple of *letters* (index variables of
size >= 2; a size-1 axis has none), the dense factors F_f are values of the graph being built,
indexed by tuples of distinct letters, and the deltas tie two letters (with an offset k, so a
column slice of the identity -- the one-hot basis of one output among several -- is a form too).
Every letter of a factor or delta appears in the axes: contractions are resolved as they happen.

Transfer rules (one per primitive) compute the form of a node's result from its operands' forms:
eye; mul, div (by an unstructured value), neg, add/sub (same delta structure); astype (float to
float); reshape (letters are split where an axis boundary cuts one, the split propagating through
the deltas), transpose, broadcast_to, slice and zero pad (offsets shift; letters of one axis are
merged back when a slice or pad needs them whole), take (a delta on the gathered letter becomes a
one-hot of the indices); and the contractions sum, matmul, einsum and index_add into zeros, which
*substitute* a delta-tied letter instead of summing over it (shifting and zero-padding factors for
offset deltas, taking a factor's diagonal when both tied letters meet in one factor), sum a letter
found in a single factor, and contract letters shared by several factors with one einsum over
just those factors.

The pass (`structure_round`) replays a graph: a node whose result form has no delta left is
replaced by the materialised form, a broadcasting product of its factors, every one indexed by
letters of the result, so no intermediate is larger than that result; so is a contraction whose
result still carries deltas (materialised with `eye` nodes on the result's own axes). Other nodes
are replayed unchanged and CSE/DCE drop what became dead. A structured value used by a node no rule
sees through, or returned, is materialised from its form when the chain computing it as written
holds a larger intermediate ("settling"). Forms exist only for floating-point values; a rule whose
precondition fails gives up (`_Bail`) and the node is replayed as written, so the pass never changes
a result beyond rounding (products are reassociated, x / y may become x * (1 / y)).
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import dtypes as dt
from ..ir.core import Graph, TensorType, Value
from ..prims import creation as _cr
from ..prims import elementwise as _ew
from ..prims import linalg as _la
from ..prims import reduce as _rd
from ..prims import shape as _sh
from .fills import fill_value
from .rewrite import PassTrace, copy_inputs, finish, replay


class _Bail(Exception):
    """A transfer rule's precondition does not hold: replay the node as written."""


class Letter:
    """An index variable of size >= 2; `parts` once it has been split (row-major) into finer letters."""

    __slots__ = ("size", "parts", "serial")
    _serials = itertools.count()

    def __init__(self, size: int):
        self.size = int(size)
        self.parts: list[Letter] | None = None
        self.serial = next(Letter._serials)  # for repr only; letters compare by identity

    def __repr__(self):
        return f"L{self.serial}:{self.size}"


def _leaves(letters) -> list[Letter]:
    out: list[Letter] = []
    for L in letters:
        if L.parts is None:
            out.append(L)
        else:
            out.extend(_leaves(L.parts))
    return out


class Form:
    """scale * prod(factors) * prod(deltas), laid out by `axes` (see the module docstring)."""

    __slots__ = ("axes", "factors", "deltas", "scale", "dtype")

    def __init__(self, axes, factors, deltas, scale, dtype):
        self.axes: list[tuple[Letter, ...]] = [tuple(a) for a in axes]
        self.factors: list[tuple[object, tuple[Letter, ...]]] = list(factors)  # (tracer, letters)
        self.deltas: list[tuple[Letter, Letter, int]] = list(deltas)           # [a == b + k]
        self.scale = float(scale)
        self.dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        out = []
        for ax in self.axes:
            n = 1
            for L in _leaves(ax):
                n *= L.size
            out.append(n)
        return tuple(out)

    def normalized(self) -> "Form":
        self.axes = [tuple(_leaves(ax)) for ax in self.axes]
        return self


# ---------------------------------------------------------------- emitting nodes (inside a PassTrace)


def _reshape(x, shape):
    shape = tuple(int(s) for s in shape)
    return x if tuple(x.shape) == shape else _sh.reshape.bind(x, shape=shape)


def _transpose(x, perm):
    perm = tuple(perm)
    return x if perm == tuple(range(len(perm))) else _sh.transpose.bind(x, perm=perm)


def _mul(a, b):
    return _ew.mul.bind(a, b)


def _const(value, dtype):
    return _cr.constant.bind(value=np.asarray(value, dtype.np), dtype=dtype.name)


def _full(shape, value, dtype):
    shape = tuple(int(s) for s in shape)
    if not shape:
        return _const(value, dtype)
    v = float(value) if dtype.is_float else int(value)
    return _cr.full.bind(shape=shape, value=v, dtype=dtype.name)


def _slice_axis(x, axis, start, stop, step=1):
    shape = tuple(x.shape)
    if (start, stop, step) == (0, shape[axis], 1):
        return x
    starts = tuple(start if i == axis else 0 for i in range(len(shape)))
    stops = tuple(stop if i == axis else s for i, s in enumerate(shape))
    steps = tuple(step if i == axis else 1 for i in range(len(shape)))
    return _sh.slice_.bind(x, starts=starts, stops=stops, steps=steps)


def _pad_axis(x, axis, lo, hi):
    if lo == 0 and hi == 0:
        return x
    r = len(x.shape)
    return _sh.pad.bind(x, lo=tuple(lo if i == axis else 0 for i in range(r)),
                        hi=tuple(hi if i == axis else 0 for i in range(r)), interior=(0,) * r, value=0.0)


def _sum_axes(x, axes):
    return _rd.reduce_sum.bind(x, axes=tuple(sorted(axes)), keepdims=False)


def _shift(t, axis, kk, new_size, dtype):
    """t'[.., m, ..] = t[.., m + kk, ..] for 0 <= m + kk < n, else 0; m in [0, new_size)."""
    n = t.shape[axis]
    lo = max(0, -kk)
    hi = min(new_size, n - kk)
    shape = list(t.shape)
    shape[axis] = new_size
    if hi <= lo:
        return _full(shape, 0.0, dtype)
    s = _slice_axis(t, axis, lo + kk, hi + kk)
    return _pad_axis(s, axis, lo, new_size - hi)


def _diag(t, letters, M):
    """Factor `t` whose letters hold M twice -> its diagonal, letters (others..., M)."""
    ps = [i for i, L in enumerate(letters) if L is M]
    p, q = ps
    others = [i for i in range(len(letters)) if i not in (p, q)]
    t = _transpose(t, others + [p, q])
    n = M.size
    t = _reshape(t, tuple(t.shape[:-2]) + (n * n,))
    t = _slice_axis(t, len(t.shape) - 1, 0, n * n, n + 1)
    return t, tuple(letters[i] for i in others) + (M,)


# ---------------------------------------------------------------- form algebra


def instantiate(F: Form) -> Form:
    """A copy of a (normalized) form with fresh letters, safe to mutate."""
    m: dict[Letter, Letter] = {}

    def f(L):
        n = m.get(L)
        if n is None:
            n = m[L] = Letter(L.size)
        return n
    return Form([tuple(f(L) for L in ax) for ax in F.axes],
                [(t, tuple(f(L) for L in lets)) for t, lets in F.factors],
                [(f(a), f(b), k) for a, b, k in F.deltas], F.scale, F.dtype)


def dense_form(x, fill=None) -> Form:
    """The form of an unstructured value: one factor over fresh letters (none for a uniform fill)."""
    d = x.dtype
    shape = tuple(x.shape)
    if any(s == 0 for s in shape):
        raise _Bail("empty")
    axes = [(Letter(s),) if s > 1 else () for s in shape]
    if fill is not None:
        return Form(axes, [], [], float(fill), d)
    lets = tuple(ax[0] for ax in axes if ax)
    t = _reshape(x, tuple(L.size for L in lets))
    return Form(axes, [(t, lets)], [], 1.0, d)


def _retie(F, L, M, kk: int) -> None:
    """Rewrite F's delta ties on letter L as ties on M, where L == M + kk."""
    ds = []
    for a, b, k in F.deltas:
        if a is L:
            ds.append((M, b, k - kk))
        elif b is L:
            ds.append((a, M, kk + k))
        else:
            ds.append((a, b, k))
    F.deltas = ds


def _normalize_deltas(F: Form):
    out, seen = [], set()
    for a, b, k in F.deltas:
        if a is b:
            if k == 0:
                continue
            raise _Bail("contradictory delta (identically zero)")
        key = (a, b, k)  # the letters themselves (identity), alive as long as F holds them
        if key in seen or (b, a, -k) in seen:
            continue
        seen.add(key)
        out.append((a, b, k))
    F.deltas = out


def split_letter(F: Form, L: Letter, sizes):
    """Split L into row-major parts of `sizes` everywhere in F (factors reshaped, delta partners split)."""
    sizes = [int(s) for s in sizes if s != 1]
    if L.parts is not None:
        if [p.size for p in L.parts] != sizes:
            raise _Bail("incompatible letter splits")
        return
    if len(sizes) <= 1:
        return
    L.parts = [Letter(s) for s in sizes]
    facs = []
    for t, lets in F.factors:
        if L in lets:
            i = lets.index(L)
            lets = lets[:i] + tuple(L.parts) + lets[i + 1:]
            t = _reshape(t, tuple(x.size for x in lets))
        facs.append((t, lets))
    F.factors = facs
    changed = True
    while changed:
        changed = False
        for idx, (a, b, k) in enumerate(F.deltas):
            if a.parts is None and b.parts is None:
                continue
            if k != 0 or a.size != b.size:
                raise _Bail("cannot split an offset or rectangular delta")
            if a.parts is None:
                split_letter(F, a, [p.size for p in b.parts])
            elif b.parts is None:
                split_letter(F, b, [p.size for p in a.parts])
            if [p.size for p in a.parts] != [p.size for p in b.parts]:
                raise _Bail("incompatible letter splits")
            F.deltas[idx:idx + 1] = [(pa, pb, 0) for pa, pb in zip(a.parts, b.parts)]
            changed = True
            break


def _relabel(F: Form, m: dict):
    g = lambda L: m.get(L, L)  # noqa: E731
    F.axes = [tuple(g(L) for L in ax) for ax in F.axes]
    F.factors = [(t, tuple(g(L) for L in lets)) for t, lets in F.factors]
    F.deltas = [(g(a), g(b), k) for a, b, k in F.deltas]


def _align_rank(F: Form, R: int):
    if len(F.axes) > R:
        raise _Bail("rank")
    F.axes = [()] * (R - len(F.axes)) + list(F.axes)


def _unify(A: Form, B: Form) -> list[tuple[Letter, ...]]:
    """Refine A's and B's letters axis by axis and rename B's onto A's; returns the broadcast axes."""
    R = len(A.axes)
    while True:
        restart = False
        for p in range(R):
            la, lb = _leaves(A.axes[p]), _leaves(B.axes[p])
            if not la or not lb:
                continue
            for x, y in zip(la, lb):
                if x.size == y.size:
                    continue
                if x.size > y.size and x.size % y.size == 0:
                    split_letter(A, x, [y.size, x.size // y.size])
                elif y.size > x.size and y.size % x.size == 0:
                    split_letter(B, y, [x.size, y.size // x.size])
                else:
                    raise _Bail("incompatible factorizations")
                restart = True
                break
            if restart:
                break
            if len(la) != len(lb):
                raise _Bail("incompatible factorizations")
        if not restart:
            break
    rename, axes = {}, []
    for p in range(R):
        la, lb = _leaves(A.axes[p]), _leaves(B.axes[p])
        if la and lb:
            rename.update(zip(lb, la))
            axes.append(tuple(la))
        else:
            axes.append(tuple(la or lb))
    A.axes = [tuple(_leaves(ax)) for ax in A.axes]
    B.axes = [tuple(_leaves(ax)) for ax in B.axes]
    _relabel(B, rename)
    return axes


def mul_forms(A: Form, B: Form) -> Form:
    R = max(len(A.axes), len(B.axes))
    _align_rank(A, R)
    _align_rank(B, R)
    axes = _unify(A, B)
    F = Form(axes, A.factors + B.factors, A.deltas + B.deltas, A.scale * B.scale, A.dtype)
    _normalize_deltas(F)
    return F


def _delta_key(d):
    """The same key for a delta and its mirror (a, b, k) ~ (b, a, -k)."""
    a, b, k = d
    return frozenset({(a, b, k), (b, a, -k)})


def _axis_order(F: Form) -> dict:
    return {L: i for i, L in enumerate(_leaves([L for ax in F.axes for L in ax]))}


def _product(factors, scale, letters, dtype):
    """Broadcasting product of `factors` (and scale) laid out over `letters` (a tracer)."""
    pos = {L: i for i, L in enumerate(letters)}
    terms = []
    for t, lets in factors:
        order = sorted(range(len(lets)), key=lambda i: pos[lets[i]])
        t = _transpose(t, order)
        where = sorted(pos[L] for L in lets)
        if where != list(range(len(letters) - len(lets), len(letters))):  # not a suffix: broadcasting
            shape = [1] * len(letters)                                     # needs the unit axes
            for L in lets:
                shape[pos[L]] = L.size
            t = _reshape(t, shape)
        terms.append(t)
    if not terms:
        return _full((1,) * len(letters), scale, dtype) if letters else _const(scale, dtype)
    # the scale goes on the smallest term; then the pair with the smallest product is multiplied
    # first, so the full-size product is formed once, at the end
    k = min(range(len(terms)), key=lambda i: int(np.prod(terms[i].shape)))
    if scale == -1.0:
        terms[k] = _ew.neg.bind(terms[k])
    elif scale != 1.0:
        terms[k] = _mul(terms[k], _const(scale, dtype))
    while len(terms) > 1:
        best = None
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                a, b = terms[i].shape, terms[j].shape
                r = max(len(a), len(b))
                a, b = (1,) * (r - len(a)) + tuple(a), (1,) * (r - len(b)) + tuple(b)
                size = int(np.prod([max(x, y) for x, y in zip(a, b)]))
                if best is None or size < best[0]:
                    best = (size, i, j)
        _, i, j = best
        t = _mul(terms[i], terms[j])
        terms = [x for n, x in enumerate(terms) if n not in (i, j)] + [t]
    return terms[0]


def merge_factors(F: Form):
    """Fold every dense factor (and the scale) of F into one factor."""
    if not F.factors:
        return
    pos = _axis_order(F)
    lets = sorted({L for _, ls in F.factors for L in ls}, key=lambda L: pos[L])
    t = _product(F.factors, F.scale, lets, F.dtype)
    F.factors = [(t, tuple(lets))]
    F.scale = 1.0


def add_forms(A: Form, B: Form) -> Form:
    """A + B when both carry the same deltas: deltas * (product_A + product_B)."""
    R = max(len(A.axes), len(B.axes))
    _align_rank(A, R)
    _align_rank(B, R)
    axes = _unify(A, B)
    _normalize_deltas(A)
    _normalize_deltas(B)
    if {_delta_key(d) for d in A.deltas} != {_delta_key(d) for d in B.deltas}:
        raise _Bail("sum of different structures")
    F = Form(axes, [], A.deltas, 1.0, A.dtype)
    pos = _axis_order(F)
    lets = sorted({L for _, ls in A.factors + B.factors for L in ls}, key=lambda L: pos[L])
    if not A.factors and not B.factors:
        F.scale = A.scale + B.scale
        return F
    pa = _product(A.factors, A.scale, lets, A.dtype)
    pb = _product(B.factors, B.scale, lets, A.dtype)
    pa = _reshape(pa, (1,) * (len(lets) - len(pa.shape)) + tuple(pa.shape))
    pb = _reshape(pb, (1,) * (len(lets) - len(pb.shape)) + tuple(pb.shape))
    F.factors = [(_ew.add.bind(pa, pb), tuple(lets))]
    return F


def _solve(d, L):
    """Delta d expressed as L == M + kk: (M, kk)."""
    a, b, k = d
    return (b, k) if a is L else (a, -k)


def substitute(F: Form, L: Letter, M: Letter, kk: int):
    """Eliminate L by L := M + kk (factors shifted, deltas rewritten, range kept as an indicator)."""
    has = False
    facs = []
    for t, lets in F.factors:
        if L in lets:
            has = True
            i = lets.index(L)
            t = _shift(t, i, kk, M.size, F.dtype)
            lets = lets[:i] + (M,) + lets[i + 1:]
            if lets.count(M) > 1:
                t, lets = _diag(t, lets, M)
        facs.append((t, lets))
    F.factors = facs
    _retie(F, L, M, kk)
    if not has and not (kk >= 0 and M.size + kk <= L.size):
        ind = _shift(_full((L.size,), 1.0, F.dtype), 0, kk, M.size, F.dtype)
        F.factors.append((ind, (M,)))
    _normalize_deltas(F)


_EINSUM_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def contract(F: Form, L: Letter):
    """Sum F over letter L (L is removed from F; the caller removes it from the axes)."""
    for d in F.deltas:
        if d[0] is L or d[1] is L:
            M, kk = _solve(d, L)
            F.deltas.remove(d)
            substitute(F, L, M, kk)
            return
    fs = [f for f in F.factors if L in f[1]]
    rest = [f for f in F.factors if L not in f[1]]
    if not fs:
        F.scale *= L.size
        return
    if len(fs) == 1:
        t, lets = fs[0]
        i = lets.index(L)
        F.factors = rest + [(_sum_axes(t, [i]), lets[:i] + lets[i + 1:])]
        return
    pos = _axis_order(F)
    letters = []
    for _, lets in fs:
        for x in lets:
            if x not in letters:
                letters.append(x)
    if len(letters) > len(_EINSUM_CHARS):
        raise _Bail("too many letters")
    ch = {x: _EINSUM_CHARS[i] for i, x in enumerate(letters)}
    out = sorted((x for x in letters if x is not L), key=lambda x: pos.get(x, 0))
    spec = ",".join("".join(ch[x] for x in lets) for _, lets in fs) + "->" + "".join(ch[x] for x in out)
    t = _la.einsum.bind(*[t for t, _ in fs], spec=spec)
    F.factors = rest + [(t, tuple(out))]


def contract_axes(F: Form, axes, keepdims: bool) -> Form:
    for a in axes:
        for L in _leaves(F.axes[a]):
            contract(F, L)
    F.axes = [(() if keepdims else None) if i in axes else ax for i, ax in enumerate(F.axes)]
    F.axes = [ax for ax in F.axes if ax is not None]
    return F


def reshape_form(F: Form, shape) -> Form:
    """Regroup the letters into the new axes (row-major), splitting a letter an axis boundary cuts."""
    flat = [L for ax in F.axes for L in ax]
    if any(int(d) == 0 for d in shape) or any(L.size == 0 for L in _leaves(flat)):
        raise _Bail("reshape of no elements")  # (a letter of size 0 divides nothing: no structure to keep)
    groups: list[list[Letter]] = []
    for d in shape:
        group: list[Letter] = []
        groups.append(group)
        need = int(d)
        while need > 1:
            # splits may refine letters already consumed (delta partners): recount the consumed prefix
            seq = _leaves(flat)
            pos = len(_leaves([L for g in groups for L in g]))
            if pos >= len(seq):
                raise _Bail("reshape")
            L = seq[pos]
            if need % L.size == 0:
                group.append(L)
                need //= L.size
            elif L.size % need == 0:
                split_letter(F, L, [need, L.size // need])
                group.append(L.parts[0])
                need = 1
            else:
                raise _Bail("reshape does not split letters evenly")
    if len(_leaves([L for g in groups for L in g])) != len(_leaves(flat)):
        raise _Bail("reshape")
    F.axes = [tuple(_leaves(g)) for g in groups]
    return F


def transpose_form(F: Form, perm) -> Form:
    F.axes = [F.axes[p] for p in perm]
    return F


def broadcast_form(F: Form, shape) -> Form:
    _align_rank(F, len(shape))
    F.axes = [ax if ax or s == 1 else (Letter(s),) for ax, s in zip(F.axes, shape)]
    return F


def _runs(F: Form):
    """Every axis's letters, the sequences a merged letter may come from."""
    return [tuple(_leaves(ax)) for ax in F.axes]


def merge_letters(F: Form, lets) -> Letter:
    """Merge the consecutive letters `lets` of one axis into a single letter (the inverse of a split):
    possible when each factor holds all or none of them, consecutive and in order, and their deltas
    tie them one to one (offset 0) to another such run, which is merged with them."""
    groups = [tuple(lets)]
    pairs = []  # (group index, group index)
    i = 0
    while i < len(groups):
        g = groups[i]
        for a, b, k in F.deltas:
            pos = next((p for p, L in enumerate(g) if L is a or L is b), None)
            if pos is None:
                continue
            if k != 0:
                raise _Bail("offset delta on merged letters")
            run = _run_through(F, b if g[pos] is a else a, pos, len(g))
            if any(x in g for x in run) or [x.size for x in run] != [x.size for x in g]:
                raise _Bail("deltas do not tie two runs")
            for p, q in zip(g, run):
                if not any(e[2] == 0 and ((e[0] is p and e[1] is q) or (e[0] is q and e[1] is p))
                           for e in F.deltas):
                    raise _Bail("deltas do not tie two runs")
            j = next((n for n, h in enumerate(groups) if h == run), None)
            if j is None:
                if any(x in h for h in groups for x in run):
                    raise _Bail("overlapping runs")
                groups.append(run)
                j = len(groups) - 1
            if (i, j) not in pairs and (j, i) not in pairs:
                pairs.append((i, j))
        i += 1
    for g in groups:
        for _, ls in F.factors:
            hit = [n for n, x in enumerate(ls) if x in g]
            if hit and (len(hit) != len(g) or ls[hit[0]:hit[0] + len(g)] != g):
                raise _Bail("a factor holds part of a run")
    merged = [Letter(int(np.prod([x.size for x in g]))) for g in groups]
    facs = []
    for t, ls in F.factors:
        for g, m in zip(groups, merged):
            if g[0] in ls:
                n = ls.index(g[0])
                ls = ls[:n] + (m,) + ls[n + len(g):]
                t = _reshape(t, tuple(x.size for x in ls))
        facs.append((t, ls))
    F.factors = facs
    members = {x for g in groups for x in g}
    F.deltas = [d for d in F.deltas if d[0] not in members and d[1] not in members] + \
        [(merged[a], merged[b], 0) for a, b in pairs]
    axes = []
    for ax in _runs(F):
        ax = list(ax)
        for g, m in zip(groups, merged):
            for n in range(len(ax) - len(g) + 1):
                if tuple(ax[n:n + len(g)]) == g:
                    ax[n:n + len(g)] = [m]
                    break
        axes.append(tuple(ax))
    F.axes = axes
    if any(x in members for ax in axes for x in ax):
        raise AssertionError("internal: merged letters left in the axes")
    _normalize_deltas(F)
    return merged[0]


def _run_through(F: Form, other: Letter, pos: int, n: int) -> tuple:
    """The n consecutive letters of an axis in which `other` is at position pos."""
    for ax in _runs(F):
        for k, x in enumerate(ax):
            if x is other:
                if k - pos >= 0 and k - pos + n <= len(ax):
                    return tuple(ax[k - pos:k - pos + n])
                raise _Bail("delta partner is not in a run")
    raise _Bail("delta partner is in no axis")


def _slice_letter(F: Form, L: Letter, a: int, b: int, s: int) -> tuple:
    """Restrict letter L to range(a, b, s) in F; returns the letters that replace it (none for one index)."""
    m = len(range(a, b, s))
    if m == 0:
        raise _Bail("empty slice")
    if (a, b, s) == (0, L.size, 1):
        return (L,)
    if s != 1 and any(d[0] is L or d[1] is L for d in F.deltas):
        raise _Bail("strided slice of a delta")
    facs = []
    if m == 1:  # a single index: the letter disappears
        for t, ls in F.factors:
            if L in ls:
                i = ls.index(L)
                t = _reshape(_slice_axis(t, i, a, a + 1), tuple(x.size for x in ls if x is not L))
                ls = tuple(x for x in ls if x is not L)
            facs.append((t, ls))
        F.factors = facs
        ds = []
        for d in F.deltas:
            if d[0] is L or d[1] is L:
                M, kk = _solve(d, L)  # a == M + kk: a one-hot over M at a - kk
                F.factors.append((_onehot(M.size, a - kk, F.dtype), (M,)))
            else:
                ds.append(d)
        F.deltas = ds
        return ()
    N = Letter(m)
    for t, ls in F.factors:
        if L in ls:
            i = ls.index(L)
            t = _slice_axis(t, i, a, a + (m - 1) * s + 1, s)
            ls = ls[:i] + (N,) + ls[i + 1:]
        facs.append((t, ls))
    F.factors = facs
    _retie(F, L, N, a)  # L = N + a
    return (N,)


def _slice_letters(F: Form, lets, a: int, b: int, s: int) -> tuple:
    """Restrict the row-major index over `lets` to range(a, b, s): a slice of the outer letter, or one
    index of it and a slice of the inner ones; anything else gives up."""
    n = int(np.prod([L.size for L in lets])) if lets else 1
    if (a, b, s) == (0, n, 1):
        return tuple(lets)
    if not lets:
        raise _Bail("slice")
    if len(lets) == 1:
        return _slice_letter(F, lets[0], a, b, s)
    if s != 1:
        raise _Bail("strided slice across letters")
    inner = n // lets[0].size
    if a % inner == 0 and b % inner == 0:
        return _slice_letter(F, lets[0], a // inner, b // inner, 1) + tuple(lets[1:])
    q = a // inner
    if q == (b - 1) // inner:
        return _slice_letter(F, lets[0], q, q + 1, 1) + _slice_letters(F, lets[1:], a - q * inner,
                                                                        b - q * inner, 1)
    return _slice_letter(F, merge_letters(F, lets), a, b, 1)


def slice_form(F: Form, starts, stops, steps) -> Form:
    for axis, (a, b, s) in enumerate(zip(starts, stops, steps)):
        F.axes[axis] = _slice_letters(F, _leaves(F.axes[axis]), a, b, s)
    _normalize_deltas(F)
    return F


def _wrap_indices(idx, n):
    """idx with negative entries wrapped (+n), as take and index_add read them, through a take of
    arange(n): a one-hot built from them holds no take or index_add, and an index out of range
    must still raise (IndexOutOfRangeError; it gave a zero Jacobian row)."""
    return _sh.take.bind(_cr.arange.bind(start=0, stop=n, step=1, dtype=idx.dtype.name), idx, axis=0)


def _onehot(n, pos, dtype):
    if not 0 <= pos < n:
        return _full((n,), 0.0, dtype)
    return _pad_axis(_full((1,), 1.0, dtype), 0, pos, n - pos - 1)


def take_form(F: Form, idx, axis: int) -> Form:
    lets = _leaves(F.axes[axis])
    if not lets or any(s == 0 for s in idx.shape):
        raise _Bail("take")
    if len(lets) > 1:
        lets = [merge_letters(F, lets)]
    L = lets[0]
    n = L.size
    new_axes = [(Letter(s),) if s > 1 else () for s in idx.shape]
    T = [ax[0] for ax in new_axes if ax]
    idx_r = _reshape(idx, tuple(x.size for x in T))
    wrapped = None

    def wrap():
        nonlocal wrapped
        if wrapped is None:
            wrapped = _wrap_indices(idx_r, n)
        return wrapped
    facs = []
    for t, ls in F.factors:
        if L in ls:
            i = ls.index(L)
            t = _sh.take.bind(t, idx_r, axis=i)
            ls = ls[:i] + tuple(T) + ls[i + 1:]
        facs.append((t, ls))
    F.factors = facs
    first = next((d for d in F.deltas if d[0] is L or d[1] is L), None)
    if first is not None:
        F.deltas.remove(first)
        M, kk = _solve(first, L)  # idx[T] == M + kk
        w = _reshape(wrap(), tuple(x.size for x in T) + (1,))
        ar = _cr.arange.bind(start=kk, stop=kk + M.size, step=1, dtype=idx.dtype.name)
        ar = _reshape(ar, (1,) * len(T) + (M.size,))
        onehot = _ew.astype.bind(_ew.equal.bind(w, ar), dtype=F.dtype.name)
        F.factors.append((onehot, tuple(T) + (M,)))
        # remaining deltas on L: L == M + kk
        _retie(F, L, M, kk)
        _normalize_deltas(F)
    F.axes = list(F.axes[:axis]) + new_axes + list(F.axes[axis + 1:])
    return F


def materialize(F: Form, out_type: TensorType):
    """Emit the value of F (shape out_type.shape): factors and deltas multiplied over the result's letters."""
    E = _leaves([L for ax in F.axes for L in ax])
    pos = {L: i for i, L in enumerate(E)}
    terms = []
    for t, lets in F.factors:
        terms.append((t, lets))
    for a, b, k in F.deltas:  # [a == b + k]
        if pos[a] < pos[b]:
            e = _cr.eye.bind(n=a.size, m=b.size, k=-k, dtype=F.dtype.name, basis=True)
            terms.append((e, (a, b)))
        else:
            e = _cr.eye.bind(n=b.size, m=a.size, k=k, dtype=F.dtype.name, basis=True)
            terms.append((e, (b, a)))
    acc = _product(terms, F.scale, E, F.dtype)
    eshape = tuple(L.size for L in E)
    if tuple(acc.shape) != eshape:
        acc = _reshape(acc, (1,) * (len(eshape) - len(acc.shape)) + tuple(acc.shape))
        if tuple(acc.shape) != eshape:
            acc = _sh.broadcast_to.bind(acc, shape=eshape)
    if acc.dtype is not out_type.dtype:
        raise _Bail("dtype")
    return _reshape(acc, out_type.shape)


# ---------------------------------------------------------------- transfer rules


def _fill_of(x):
    """The scalar of a uniform fill (full, or a constant with equal elements), else None."""
    return fill_value(x.value)


def _operand_form(v: Value, forms: dict, env: dict) -> Form:
    F = forms.get(v)
    if F is not None:
        return instantiate(F)
    if not v.type.dtype.is_float:
        raise _Bail("non-float operand")
    x = env[v]
    return dense_form(x, _fill_of(x))


def _t_eye(node, ins, forms, env):
    a = node.attrs
    d = dt.as_dtype(a["dtype"])
    # only a Jacobian basis has symbolic zeros; a user's eye multiplies as written (inf * 0 = NaN)
    if not a.get("basis") or a["n"] < 2 or a["m"] < 2 or not d.is_float:
        return None
    i, j = Letter(a["n"]), Letter(a["m"])
    return Form([(i,), (j,)], [], [(i, j, -int(a["k"]))], 1.0, d)


def _t_mul(node, ins, forms, env):
    A, B = (_operand_form(v, forms, env) for v in ins)
    return mul_forms(A, B)


def _t_div(node, ins, forms, env):
    a, b = ins
    if b in forms:
        return None
    A = _operand_form(a, forms, env)
    x = env[b]
    c = _fill_of(x)
    if c is not None:
        if c == 0 or c != c:
            return None
        B = dense_form(x, 1.0 / float(c))
    else:
        B = dense_form(_ew.reciprocal.bind(x))
    return mul_forms(A, B)


def _t_neg(node, ins, forms, env):
    F = _operand_form(ins[0], forms, env)
    F.scale = -F.scale
    return F


def _t_add(node, ins, forms, env):
    A, B = (_operand_form(v, forms, env) for v in ins)
    if node.prim is _ew.sub:
        B.scale = -B.scale
    return add_forms(A, B)


def _t_astype(node, ins, forms, env):
    d = dt.as_dtype(node.attrs["dtype"])
    F = _operand_form(ins[0], forms, env)
    if not (d.is_float and F.dtype.is_float):
        return None
    if d is F.dtype:
        return F
    merge_factors(F)
    F.factors = [(_ew.astype.bind(t, dtype=d.name), ls) for t, ls in F.factors]
    F.dtype = d
    return F


def _t_reshape(node, ins, forms, env):
    return reshape_form(_operand_form(ins[0], forms, env), node.attrs["shape"])


def _t_transpose(node, ins, forms, env):
    return transpose_form(_operand_form(ins[0], forms, env), node.attrs["perm"])


def _t_broadcast(node, ins, forms, env):
    return broadcast_form(_operand_form(ins[0], forms, env), node.attrs["shape"])


def _t_sum(node, ins, forms, env):
    F = _operand_form(ins[0], forms, env)
    return contract_axes(F, set(node.attrs["axes"]), bool(node.attrs["keepdims"]))


def _t_matmul(node, ins, forms, env):
    A, B = (_operand_form(v, forms, env) for v in ins)
    # A (.., m, K) -> (.., m, K, 1); B (.., K, n) -> (.., 1, K, n); product summed over K
    A.axes = list(A.axes) + [()]
    B.axes = list(B.axes[:-2]) + [()] + list(B.axes[-2:])
    F = mul_forms(A, B)
    return contract_axes(F, {len(F.axes) - 2}, False)


def _t_einsum(node, ins, forms, env):
    ins_spec, out = _la.parse_spec(node.attrs["spec"], len(ins))
    order = list(out) + sorted({c for s in ins_spec for c in s} - set(out))
    F = None
    for v, s in zip(ins, ins_spec):
        G = _operand_form(v, forms, env)
        present = [c for c in order if c in s]
        G = transpose_form(G, [s.index(c) for c in present])
        G.axes = [G.axes[present.index(c)] if c in present else () for c in order]
        F = G if F is None else mul_forms(F, G)
    return contract_axes(F, set(range(len(out), len(order))), False)


def pad_form(F: Form, lo, hi, interior, value) -> Form:
    """Zero padding: each padded letter L becomes N = L + lo, factors are padded, offsets shift, and
    when no factor carries L the value's support is kept by an indicator factor."""
    if value != 0 or any(interior):
        raise _Bail("pad with a value or interior padding")
    for axis, (a, b) in enumerate(zip(lo, hi)):
        if a == 0 and b == 0:
            continue
        lets = _leaves(F.axes[axis])
        if len(lets) > 1:
            lets = [merge_letters(F, lets)]
        n = lets[0].size if lets else 1
        N = Letter(n + a + b)
        if not lets:  # a size-1 axis: a one-hot at lo
            F.factors.append((_onehot(N.size, a, F.dtype), (N,)))
            F.axes[axis] = (N,)
            continue
        L = lets[0]
        has = False
        facs = []
        for t, ls in F.factors:
            if L in ls:
                has = True
                i = ls.index(L)
                t = _pad_axis(t, i, a, b)
                ls = ls[:i] + (N,) + ls[i + 1:]
            facs.append((t, ls))
        F.factors = facs
        ds = []
        for x, y, k in F.deltas:  # L = N - a
            if x is L:
                ds.append((N, y, k + a))
            elif y is L:
                ds.append((x, N, k - a))
            else:
                ds.append((x, y, k))
        F.deltas = ds
        if not has:
            F.factors.append((_pad_axis(_full((n,), 1.0, F.dtype), 0, a, b), (N,)))
        F.axes[axis] = (N,)
    _normalize_deltas(F)
    return F


def _t_pad(node, ins, forms, env):
    a = node.attrs
    return pad_form(_operand_form(ins[0], forms, env), a["lo"], a["hi"], a["interior"], a["value"])


def _t_take(node, ins, forms, env):
    x, idx = ins
    if idx in forms:
        return None
    return take_form(_operand_form(x, forms, env), env[idx], int(node.attrs["axis"]))


def _t_slice(node, ins, forms, env):
    a = node.attrs
    return slice_form(_operand_form(ins[0], forms, env), a["starts"], a["stops"], a["steps"])


def _t_index_add(node, ins, forms, env):
    x, idx, upd = ins
    if x in forms or idx in forms or upd not in forms:
        return None
    if _fill_of(env[x]) != 0:
        return None
    axis = int(node.attrs["axis"])
    idx_t = env[idx]
    if any(s == 0 for s in idx_t.shape):
        return None
    U = _operand_form(upd, forms, env)
    n = x.type.shape[axis]
    k = len(idx_t.shape)
    post = len(x.type.shape) - axis - 1
    # one-hot O[t.., j] = [wrap(idx)[t..] == j]; result = sum_t upd[.., t.., ..] O[t.., j]
    w = _reshape(_wrap_indices(idx_t, n), tuple(idx_t.shape) + (1,))
    ar = _reshape(_cr.arange.bind(start=0, stop=n, step=1, dtype=idx_t.dtype.name), (1,) * k + (n,))
    onehot = _ew.astype.bind(_ew.equal.bind(w, ar), dtype=U.dtype.name)
    O = dense_form(onehot)
    O.axes = [()] * axis + list(O.axes) + [()] * post
    U.axes = list(U.axes[:axis + k]) + [()] + list(U.axes[axis + k:])
    F = mul_forms(U, O)
    return contract_axes(F, set(range(axis, axis + k)), False)


# primitive record -> its transfer rule (keyed by the records, not by name strings)
TRANSFER = {
    _sh.index_add: _t_index_add,
    _cr.eye: _t_eye, _ew.mul: _t_mul, _ew.div: _t_div, _ew.neg: _t_neg, _ew.add: _t_add, _ew.sub: _t_add,
    _ew.astype: _t_astype, _sh.reshape: _t_reshape, _sh.transpose: _t_transpose, _sh.broadcast_to: _t_broadcast,
    _sh.pad: _t_pad, _rd.reduce_sum: _t_sum, _la.matmul: _t_matmul, _la.einsum: _t_einsum, _sh.take: _t_take,
    _sh.slice_: _t_slice,
}
# contractions: their result is materialised from its form even when deltas remain
CONTRACTIONS = frozenset({_rd.reduce_sum, _la.matmul, _la.einsum, _sh.take, _sh.index_add})


def _check(F: Form, t: TensorType):
    if F.shape != t.shape or F.dtype is not t.dtype:
        raise AssertionError(f"internal error in graphad.passes.structure: form {F.shape} {F.dtype} for a "
                             f"value of type {t}")
    return F.normalized()


def structure_round(graph: Graph, stats=None) -> Graph:
    """One replay of `graph` rewriting the uses of basis-structured values (see the module docstring).

    A value whose form has no delta left is *pending*: nothing is emitted for it until a use needs it
    as a tensor, so its only use (a reshape, transpose, mul... that has a rule) extends the form and
    the product is written once, in the layout of the last value of the chain. A pending value with
    several uses, or used by a node without a rule, is materialised where that use is.
    """
    tr = PassTrace(graph.name)
    uses: dict[Value, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            uses[v] = uses.get(v, 0) + 1
    for v in graph.outputs:
        uses[v] = uses.get(v, 0) + 1
    with tr:
        env = copy_inputs(tr, graph)
        forms: dict[Value, Form] = {}
        peak: dict[Value, int] = {}  # largest value in the structured chain that computes a value as written
        pending: set[Value] = set()   # delta-free forms not emitted yet

        def count(what):
            if stats is not None:
                stats[what] += 1

        def force(v: Value, node):
            """Emit a pending value (it is an ordinary tensor from then on), located at its definition."""
            if v in pending:
                with tr.at(v.node):
                    env[v] = materialize(instantiate(forms.pop(v)), v.type)
                pending.discard(v)

        def settle(v: Value, node):
            """Before an opaque use: materialise v when its chain as written has a larger intermediate."""
            if v in pending:
                force(v, node)
            elif v in forms and peak[v] > v.type.size:
                with tr.at(v.node):
                    env[v] = materialize(instantiate(forms[v]), v.type)
                peak[v] = v.type.size
                count("structure-settle")

        for node in graph.nodes:
            name = node.prim.name
            rule = TRANSFER.get(node.prim)
            out = node.outputs[0] if len(node.outputs) == 1 else None
            usable = rule is not None and out is not None and out.type.dtype.is_float
            for v in node.inputs:  # a pending value is extended only by its single use
                if v in pending and (not usable or uses[v] > 1):
                    force(v, node)
            s_ins = [v for v in node.inputs if v in forms]
            if not s_ins and node.prim is not _cr.eye:
                replay(node, env)
                continue
            F = None
            if usable:
                with tr.at(node):
                    try:
                        F = rule(node, node.inputs, forms, env)
                        if F is not None:
                            F = _check(F, out.type)
                            _normalize_deltas(F)
                    except _Bail:
                        F = None
            if F is None:  # an opaque use of structured operands
                for v in s_ins:
                    settle(v, node)
                replay(node, env)
                continue
            if not F.deltas:
                if any(v not in pending for v in s_ins):
                    count(f"structure-{name}")  # this node resolved the last delta
                forms[out] = F
                pending.add(out)
                continue
            if node.prim in CONTRACTIONS:
                with tr.at(node):
                    env[out] = materialize(F, out.type)
                count(f"structure-{name}")
                forms[out] = F
                peak[out] = out.type.size
                continue
            for v in s_ins:
                force(v, node)
            forms[out] = F
            peak[out] = max([out.type.size] + [peak.get(v, v.type.size) for v in s_ins])
            replay(node, env)
        for v in graph.outputs:
            settle(v, None)
        return finish(tr, [env[v] for v in graph.outputs])
