"""Linear-algebra primitives: matmul (rank >= 2, broadcasting batch axes) and einsum.

graphad.ops.matmul handles 1-D operands (NumPy semantics) by reshaping around this primitive,
and ops.dense is x @ w.T + b built from it. einsum takes an explicit `a,b->c` spec without
repeated letters inside one operand (ops rewrites the rest); its vjp is another einsum.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.core import TensorType
from ._util import (add_any, bf16_in_f32, f16_in_f32, batch_broadcasting, broadcast_shapes, moveaxis_to_front,
                    same_dtype, unbroadcast)
from .registry import Primitive, ops, register


def _matmul_shape(a: TensorType, b: TensorType):
    d = same_dtype(a, b)
    if a.dtype.is_bool:
        from ..errors import DTypeError
        raise DTypeError("matmul of bool tensors")
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError("the matmul primitive takes operands of rank >= 2 (ops.matmul handles vectors)")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"contracting dimensions differ: {a.shape} @ {b.shape} ({a.shape[-1]} vs {b.shape[-2]})")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), d)


def _mT(x):
    n = len(x.shape)
    return ops.transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _matmul_jvp(p, t, o):
    a = None if t[0] is None else ops.matmul_prim(t[0], p[1])
    b = None if t[1] is None else ops.matmul_prim(p[0], t[1])
    s = o[0].shape
    if a is not None and tuple(a.shape) != s:
        a = ops.broadcast_to(a, s)
    if b is not None and tuple(b.shape) != s:
        b = ops.broadcast_to(b, s)
    return [add_any(a, b)]


def _matmul_vjp(c, p, o):
    a, b = p
    da = unbroadcast(ops.matmul_prim(c[0], _mT(b)), a.shape)
    if len(b.shape) == 2 and len(a.shape) > 2:
        # a matrix shared by a batch (x @ W in a sequence model): one product over all rows,
        # (rows, K).T @ (rows, N), instead of a batch of products and a sum of their results
        rows = int(np.prod(a.shape[:-1], dtype=np.int64))
        a2 = ops.reshape(a, (rows, a.shape[-1]))
        c2 = ops.reshape(c[0], (rows, c[0].shape[-1]))
        return [da, ops.matmul_prim(_mT(a2), c2)]
    return [da, unbroadcast(ops.matmul_prim(_mT(a), c[0]), b.shape)]


def _matmul_batch(args, dims):
    a, b = args
    da, db = dims
    if db is None and len(b.shape) == 2:
        # (B.., m, k) @ (k, n): the batch axis is just another leading axis of a
        return [ops.matmul_prim(moveaxis_to_front(a, da), b)], [0]
    if da is None and db is not None and len(a.shape) == 2:
        b = moveaxis_to_front(b, db)
        if len(b.shape) == 3 and b.shape[2] == 1:
            # a batch of mat-vecs a @ b[i] is one matrix product (B, k) @ a.T: no batched mat-vec kernel
            bsz, k = b.shape[0], b.shape[1]
            y = ops.matmul_prim(ops.reshape(b, (bsz, k)), ops.transpose(a, (1, 0)))
            return [ops.reshape(y, (bsz, a.shape[0], 1))], [0]
        return [ops.matmul_prim(a, b)], [0]
    # rank alignment for the broadcasting batch axes; matrices keep their last two axes
    out_batch_rank = max(len(x.shape) - (d is not None) for x, d in zip(args, dims)) - 2
    res = []
    for x, d in zip(args, dims):
        if d is None:
            res.append(x)
            continue
        x = moveaxis_to_front(x, d)
        r = len(x.shape) - 3
        if r < out_batch_rank:
            x = ops.reshape(x, (x.shape[0],) + (1,) * (out_batch_rank - r) + tuple(x.shape[1:]))
        res.append(x)
    return [ops.matmul_prim(*res)], [0]


matmul = register(Primitive(
    "matmul", shape_rule=_matmul_shape, impl=bf16_in_f32(lambda a, b: np.matmul(a, b)), jvp=_matmul_jvp, vjp=_matmul_vjp,
    batch=_matmul_batch, traits=("bilinear",), formula="d(a @ b) = da @ b + a @ db"))

# ---------------------------------------------------------------- einsum


def parse_spec(spec: str, n: int):
    """Split 'ab,bc->ac' into ([in letters], out letters); ShapeError on a malformed spec."""
    if "->" not in spec:
        raise ShapeError(f"einsum spec {spec!r} must be explicit ('...->...')")
    lhs, out = spec.split("->")
    ins = lhs.split(",")
    if len(ins) != n:
        raise ShapeError(f"einsum spec {spec!r} names {len(ins)} operands, got {n}")
    for s in ins + [out]:
        if not s.isalpha() and s != "":
            raise ShapeError(f"einsum spec {spec!r}: only letters are allowed (no ellipsis in the primitive)")
        if len(set(s)) != len(s):
            raise ShapeError(f"einsum spec {spec!r}: repeated letter in {s!r} (ops.einsum takes diagonals first)")
    allin = set("".join(ins))
    for c in out:
        if c not in allin:
            raise ShapeError(f"einsum spec {spec!r}: output letter {c!r} is in no operand")
    return ins, out


def _einsum_shape(*xs: TensorType, spec):
    d = same_dtype(*xs)
    ins, out = parse_spec(spec, len(xs))
    size: dict[str, int] = {}
    for s, x in zip(ins, xs):
        if len(s) != x.ndim:
            raise ShapeError(f"einsum spec {spec!r}: operand {s!r} has rank {x.ndim}")
        for c, n in zip(s, x.shape):
            if size.setdefault(c, n) != n:
                raise ShapeError(f"einsum spec {spec!r}: letter {c!r} is {size[c]} in one operand and {n} in another")
    return TensorType(tuple(size[c] for c in out), d)


def _einsum_jvp(p, t, o, spec):
    res = None
    for i, ti in enumerate(t):
        if ti is None:
            continue
        args = list(p)
        args[i] = ti
        res = add_any(res, ops.einsum_prim(spec, *args))
    return [res]


def _einsum_vjp(c, p, o, spec):
    ins, out = parse_spec(spec, len(p))
    grads = []
    for i, x in enumerate(p):
        others = "".join(s for j, s in enumerate(ins) if j != i) + out
        keep = "".join(ch for ch in ins[i] if ch in others)
        sub = ",".join([out] + [s for j, s in enumerate(ins) if j != i]) + "->" + keep
        g = ops.einsum_prim(sub, c[0], *[q for j, q in enumerate(p) if j != i])
        if keep != ins[i]:  # letters summed only inside operand i: the gradient is constant along them
            g = ops.reshape(g, tuple(x.shape[k] if ch in keep else 1 for k, ch in enumerate(ins[i])))
            g = ops.broadcast_to(g, x.shape)
        grads.append(g)
    return grads


def _einsum_batch(args, dims, spec):
    ins, out = parse_spec(spec, len(args))
    used = set("".join(ins))
    letter = next(ch for ch in "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba" if ch not in used)
    new_ins, new_args = [], []
    for s, a, d in zip(ins, args, dims):
        if d is None:
            new_ins.append(s)
            new_args.append(a)
        else:
            new_ins.append(letter + s)
            new_args.append(moveaxis_to_front(a, d))
    return [ops.einsum_prim(",".join(new_ins) + "->" + letter + out, *new_args)], [0]


def lone_axes(ins: list[str], out: str) -> list[list[int]]:
    """Per operand, the axes whose letter occurs in no other operand and not in the result.

    einsum sums them out of their operand first (JAX's einsum does, `sum_uniques`): sum(x) * y
    for "ab,->", not sum(x * y), so inf * 1.3 + inf * -0.7 is inf (not NaN), and an overflow
    of a product that the sum would not reach does not happen. The reference kernel and the
    lowering (lowering/relax_ops.py) both follow this, with a one-term sum being its term."""
    res = []
    for k, sub in enumerate(ins):
        others = "".join(ins[:k] + ins[k + 1:]) + out
        res.append([i for i, ch in enumerate(sub) if ch not in others])
    return res


def _sum_axes(x, axes):
    """Sum over `axes`; a sum of one term is that term (-0.0 stays -0.0, as `sum` does)."""
    if all(x.shape[ax] == 1 for ax in axes):
        return x.reshape([n for i, n in enumerate(x.shape) if i not in axes])
    return np.sum(x, axis=tuple(axes), dtype=x.dtype)


def _np_einsum(*a, spec):
    ins, out = parse_spec(spec, len(a))
    if len(a) > 1:
        a, ins = list(a), list(ins)
        for k, lone in enumerate(lone_axes(ins, out)):
            if lone and a[k].size:
                a[k] = _sum_axes(a[k], lone)
                ins[k] = "".join(ch for i, ch in enumerate(ins[k]) if i not in lone)
    if set("".join(ins)) == set(out):
        # nothing is summed: a product of terms, not a sum of products. np.einsum still adds its
        # products to +0.0 (0.0 * -3 gave +0.0); the compiled product and IEEE give -0.0
        size = {c: n for sub, x in zip(ins, a) for c, n in zip(sub, x.shape)}
        res = None
        for sub, x in zip(ins, a):
            x = np.transpose(x, sorted(range(len(sub)), key=lambda k: out.index(sub[k])))
            x = x.reshape([size[c] if c in sub else 1 for c in out])
            res = x if res is None else res * x
        return np.broadcast_to(res, tuple(size[c] for c in out)).copy()
    return np.einsum(",".join(ins) + "->" + out, *a, optimize=len(a) > 2)


einsum = register(Primitive(
    "einsum", shape_rule=_einsum_shape, impl=bf16_in_f32(f16_in_f32(_np_einsum)),
    jvp=_einsum_jvp, vjp=_einsum_vjp, batch=_einsum_batch, traits=("multilinear",),
    formula="d einsum(a, b) = einsum(da, b) + einsum(a, db)"))
