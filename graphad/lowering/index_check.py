"""Index checks in compiled code: an out-of-range index raises, as it does in the interpreter.

`take` (gathers, `x[idx]`) and `index_add` (scatters, the gradient of a gather) read or write at
indices the caller gives. The interpreter refuses an index outside [-n, n); the compiled kernels
used to clip it silently (Relax take's mode="clip", scatter_elements behind a clamp), so a wrong
index gave a plausible wrong number, and an index_add added its update to the last element.

Each such lowering now passes its indices through a check kernel first (`checked_indices`): a
serial loop that wraps negative indices (NumPy's idx + n) and asserts the range with TVM's
AssertStmt of kind IndexError, whose message names the op, its operand types and the axis
length. The kernel returns the wrapped indices, which the gather or scatter reads, so it cannot
be dropped as dead code, and it is opaque (`op_pattern` 8), so FuseOps never fuses the assert
into a parallel loop: TVM's thread pool drops the error a parallel task returns (measured: a
failing assert in a `T.parallel` loop returned wrong values and no error). The schedule rules
leave these kernels alone (`CHECK_ATTR`). The runtime turns the IndexError into
`graphad.errors.IndexOutOfRangeError` (runtime/executable.py), and a staged function adds the
user's line from its graph (frontend/function.py), since one compiled library serves every graph
of the same text whatever its source lines.

Indices known to lie in range are not checked (`index_range`: an interval for each value, from
argsort, argmax and argmin of an axis, constants, arange, and the sums, products, clips and
selects of those): sort, median, quantile, top_k and take_along_axis (which clips, as documented)
make their indices so, and keep their fused gathers without an extra kernel.

GPU targets get the same kernel without its assert (`without_checks`): a CUDA kernel cannot
raise, and their gathers keep clipping (docs/ops.md).
"""
from __future__ import annotations

# the PrimFunc attribute that marks a check kernel (schedule.py skips it; GPU builds strip it)
CHECK_ATTR = "graphad.index_check"
# how a check's message starts: the runtime recognises its errors by it
MESSAGE_PREFIX = "graphad index check: "


# ---------------------------------------------------------------- indices known to be in range

_INF = float("inf")
# primitives whose result holds only values of their (first) operand: the interval passes through
_SAME = frozenset({"reshape", "broadcast_to", "transpose", "slice", "flip"})


_ANY = (-_INF, _INF)


def index_range(value, _memo=None):
    """(lo, hi), bounds of the integer values `value` (a graph Value) can hold, from what made it
    (argsort, argmax and argmin of an axis; constants; arange; sums, products, clips and selects
    of those); a bound nothing limits is infinite (a graph input: (-inf, inf)). A result whose
    bounds leave its dtype's range, where the kernel's arithmetic could wrap, is (-inf, inf)."""
    memo = {} if _memo is None else _memo
    key = id(value)
    r = memo.get(key)
    if r is None:
        r = _range_of(value, memo)
        dtype = value.type.dtype
        if dtype.is_int:
            import numpy as np
            info = np.iinfo(dtype.np)
            if (-_INF < r[0] < info.min) or (info.max < r[1] < _INF):  # finite, and past the dtype
                r = _ANY
        elif not dtype.is_bool:
            r = _ANY
        memo[key] = r
    return r


def _range_of(value, memo):
    node = value.node
    if node is None:
        return _ANY
    name, a = node.prim.name, node.attrs
    ins = node.inputs
    if name in ("argsort", "argmax", "argmin"):
        x = ins[0].type
        axis = a.get("axis")
        m = x.shape[axis] if x.ndim and axis is not None else max(x.size, 1)
        return (0, m - 1) if m > 0 else _ANY
    if name == "index_check":  # wrapped, and checked (CPU) or clipped (GPU) into [0, length)
        n = a["length"]
        return (0, n - 1) if n > 0 else _ANY
    if name in ("constant", "full"):
        import numpy as np
        v = np.asarray(a.get("value"))
        if v.size == 0 or v.dtype.kind not in "iub":
            return _ANY
        return int(v.min()), int(v.max())
    if name == "arange":
        count = value.type.shape[0]
        first, last = a["start"], a["start"] + a["step"] * (count - 1)
        if count == 0 or not all(float(t).is_integer() for t in (first, last)):
            return _ANY
        return int(min(first, last)), int(max(first, last))
    if name in _SAME:
        return index_range(ins[0], memo)
    if name == "astype" and (ins[0].type.dtype.is_int or ins[0].type.dtype.is_bool):
        r = index_range(ins[0], memo)
        # a narrowing cast wraps what it cannot hold: only a finite interval passes (index_range
        # then checks it against the new dtype)
        return r if _finite(r) or ins[0].type.dtype.np.itemsize <= value.type.dtype.np.itemsize else _ANY
    if name == "where":
        return _union(index_range(ins[1], memo), index_range(ins[2], memo))
    if name == "concat":
        r = index_range(ins[0], memo)
        for v in ins[1:]:
            r = _union(r, index_range(v, memo))
        return r
    if name in ("minimum", "maximum", "add", "sub", "mul"):
        (lo0, hi0), (lo1, hi1) = index_range(ins[0], memo), index_range(ins[1], memo)
        if name == "minimum":
            return min(lo0, lo1), min(hi0, hi1)
        if name == "maximum":
            return max(lo0, lo1), max(hi0, hi1)
        if not (_finite((lo0, hi0)) and _finite((lo1, hi1))):
            return _ANY  # an operand that may be anything may also wrap the result around
        if name == "add":
            return lo0 + lo1, hi0 + hi1
        if name == "sub":
            return lo0 - hi1, hi0 - lo1
        products = [u * w for u in (lo0, hi0) for w in (lo1, hi1)]
        return min(products), max(products)
    if name == "neg":
        lo, hi = index_range(ins[0], memo)
        return (-hi, -lo) if _finite((lo, hi)) else _ANY  # (-min wraps)
    return _ANY


def _finite(r) -> bool:
    return -_INF < r[0] and r[1] < _INF


def _union(p, q):
    return min(p[0], q[0]), max(p[1], q[1])


def in_range(value, n: int) -> bool:
    """Whether every value `value` can hold lies in [-n, n): its index check can be left out."""
    lo, hi = index_range(value)
    return -n <= lo and hi < n


def _check_func(tvm, k: int, dtype: str, n: int, message: str):
    """The PrimFunc `checked[i] = idx[i] + n if idx[i] < 0 else idx[i]`, asserting -n <= idx[i] < n."""
    te, tir = tvm.te, tvm.tirx
    import tvm_ffi
    idx = te.placeholder((k,), dtype, "idx")
    zero, size = tir.const(0, dtype), tir.const(n, dtype)
    out = te.compute((k,), lambda i: tir.Select(idx[i] < zero, idx[i] + size, idx[i]), "checked")
    func = te.create_prim_func([idx, out])
    kind, text = tvm.ir.StringImm("IndexError"), [tvm.ir.StringImm(MESSAGE_PREFIX + message)]

    def guard(store):
        if store.buffer.name != "checked":
            return store
        v = store.value.false_value  # idx[i]
        ok = tir.And(v >= tir.const(-n, dtype), v < size)
        # (the Python constructor's parameter order differs from the C++ one it calls)
        return tir.SeqStmt([tir.AssertStmt(ok, kind, text), store])

    body = tvm_ffi.structural_map(func.body, [(tir.BufferStore, guard)], order="post")
    return func.with_body(body).without_attr("global_symbol").with_attr("op_pattern", 8) \
        .with_attr(CHECK_ATTR, True)


def checked_indices(cx, idx, k: int, dtype: str, n: int, message: str, value=None):
    """The Relax value of the 1-D (length k) indices `idx` with negative ones wrapped, checked to
    lie in [-n, n) at run time (an IndexError naming `message` otherwise). `value`, the graph
    Value of the indices: where it is known to lie in range (`in_range`), only the wrap."""
    if value is not None and in_range(value, n):
        R = cx.R
        zero = cx.const(0, dtype)
        return cx.emit(R.where(R.less(idx, zero), R.add(idx, cx.const(n, dtype)), idx))
    key = ("index_check", k, dtype, n, message)
    gv = cx._te_memo.get(key)
    if gv is None:
        gv = cx.bb.add_func(_check_func(cx.tvm, k, dtype, n, message), "index_check")
        cx._te_memo[key] = gv
    return cx.emit(cx.relax.call_tir(gv, cx.relax.Tuple([idx]), cx.relax.TensorType((k,), dtype)))


def without_checks(tvm, mod):
    """`mod` with every check kernel's assert removed (GPU targets: the kernels only wrap)."""
    import tvm_ffi
    out = None
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and CHECK_ATTR in func.attrs:
            body = tvm_ffi.structural_map(func.body, [(tvm.tirx.AssertStmt, lambda s: tvm.tirx.Evaluate(0))],
                                          order="post")
            if out is None:
                out = mod.clone()
            out[gv] = func.with_body(body)
    return mod if out is None else out


def is_check_error(e: BaseException) -> bool:
    """Whether `e` is a failed index check raised by a compiled kernel."""
    return isinstance(e, IndexError) and str(e).startswith(MESSAGE_PREFIX)


def check_message(e: BaseException) -> str:
    """The check's own message (the op, its operand types, the axis length)."""
    return str(e)[len(MESSAGE_PREFIX):].strip()
