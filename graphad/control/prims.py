"""The structured control-flow primitives: cond, while_loop and scan, with all of their rules.

Each carries closed nested graphs (regions) as attributes; its operands are everything the regions
read. Output counts vary per node, so binding one always returns a tuple.

    cond(index: i32[], *operands) {branches=[g0, g1, ...]}
        runs branches[clamp(index, 0, n-1)](*operands). `gd.cond(pred, t, f)` is index = pred
        with branches [f, t]; `gd.switch` is the n-way form.
    while_loop(*cond_consts, *body_consts, *init) {cond=g, body=g, n_cond=k, n_body=m, max_steps=N|none}
        carry = init; while cond(*cond_consts, *carry): carry = body(*body_consts, *carry), at most
        max_steps times when max_steps is given (then the loop stops there, as TensorFlow's
        maximum_iterations). Reverse mode needs max_steps: it bounds the tape.
    scan(*consts, *init, *xs) {body=g, n_consts=k, n_carry=m, length=L, reverse=b}
        for each i (from the end when reverse): carry, y_i = body(*consts, *carry, *xs[i]);
        returns the final carry and the ys stacked along a new leading axis of L.

Rules:
- jvp: the same primitive over jvp regions (tangents ride along in the carry / operands).
- vjp: cond: the branch's vjp region under the same index (the branch is recomputed). scan: a
  forward scan that also stacks the carry entering every step (the residuals), then a scan in the
  other direction over the body's vjp region. while_loop: a forward loop that writes every
  entering carry into a tape of max_steps rows, then a loop that walks the tape backwards.
- batch: an unbatched index/predicate keeps the control flow; a batched cond runs every branch and
  selects per lane; a batched while_loop runs until every lane is done and freezes finished lanes;
  carries become batched where the body makes them so (a fixed point).
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..errors import GraphadError, ShapeError
from ..ir.core import Graph, TensorType
from ..ir.interpret import interpret
from ..prims import lax as ops
from ..prims._util import bdim_size, materialize_batched, moveaxis_to_front
from ..prims.registry import Primitive, register
from . import regions as R

_I32 = TensorType((), dt.int32)
_BOOL = TensorType((), dt.bool_)


def _types_str(ts) -> str:
    return "(" + ", ".join(str(t) for t in ts) + ")"


def _check_region(g, name: str, want_in, want_out=None):
    if not isinstance(g, Graph):
        raise ShapeError(f"{name} must be a graph, got {type(g).__name__}")
    if list(g.in_types) != list(want_in):
        raise ShapeError(f"{name} takes {_types_str(g.in_types)}, but is given {_types_str(want_in)}")
    if want_out is not None and list(g.out_types) != list(want_out):
        raise ShapeError(f"{name} returns {_types_str(g.out_types)}, expected {_types_str(want_out)}")


def _zeros(t):
    return ops.zeros(t.shape, dtype=t.dtype)


def _and(a, b):
    """Elementwise logical and of two bool tensors (a where: the primitive set has no and)."""
    return ops.where(a, b, ops.zeros(tuple(b.shape), dtype=dt.bool_))


def _tangent_or_zero(t, like):
    return t if t is not None else _zeros(like.type if hasattr(like, "type") else like)


# ---------------------------------------------------------------- cond


def _cond_shape(index, *operands, branches):
    if index != _I32:
        raise ShapeError(f"the branch index must be an i32[] scalar, got {index}")
    if not isinstance(branches, tuple) or not branches:
        raise ShapeError("cond needs at least one branch")
    for k, b in enumerate(branches):
        _check_region(b, f"branch {k}", operands, branches[0].out_types)
    return list(branches[0].out_types)


def _cond_impl(index, *operands, branches):
    k = int(np.clip(int(index), 0, len(branches) - 1))
    return tuple(interpret(branches[k], list(operands)))


def _cond_jvp(primals, tangents, outs, branches):
    index, xs = primals[0], primals[1:]
    ts = tangents[1:]
    wrt = [i for i, t in enumerate(ts) if t is not None]
    if not wrt:
        return [None] * len(outs)
    jb = tuple(R.jvp_region(b, wrt) for b in branches)
    res = cond.bind(index, *xs, *[ts[i] for i in wrt], branches=jb)
    n = len(outs)
    return [res[n + j] if outs[j].dtype.is_inexact else None for j in range(n)]


def _cond_vjp(cts, primals, outs, branches):
    index, xs = primals[0], primals[1:]
    seeds = [j for j, (c, o) in enumerate(zip(cts, outs)) if c is not None and o.dtype.is_inexact]
    wrt = [i for i, x in enumerate(xs) if x.dtype.is_inexact]
    res = [None] * len(primals)
    if not seeds or not wrt:
        return res
    vb = tuple(R.vjp_region(b, wrt, seeds) for b in branches)
    grads = cond.bind(index, *xs, *[cts[j] for j in seeds], branches=vb)
    for i, g in zip(wrt, grads):
        res[1 + i] = g
    return res


def _lanes(x, size: int):
    """x (unbatched) broadcast along a new leading batch axis of `size`."""
    return ops.broadcast_to(ops.expand_dims(x, 0), (size,) + tuple(x.shape))


def _lane_select(mask, a, b):
    """Per lane (the leading axis), `a` where the bool vector `mask` holds, else `b`."""
    m = ops.broadcast_to(ops.reshape(mask, (tuple(a.shape)[0],) + (1,) * (len(a.shape) - 1)), tuple(a.shape))
    return ops.where(m, a, b)


def _cond_batch(args, dims, branches):
    size = bdim_size(args, dims)
    xs = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args[1:], dims[1:])]
    flags = [d is not None for d in dims[1:]]
    if dims[0] is None:
        first = [R.batch_region(b, flags, size) for b in branches]
        want = [any(f[1][j] for f in first) for j in range(len(branches[0].outputs))]
        bb = tuple(R.batch_region(b, flags, size, force=want)[0] for b in branches)
        res = cond.bind(args[0], *xs, branches=bb)
        return list(res), [0 if w else None for w in want]
    # a batched index: every lane may take another branch, so run them all and select per lane.
    # JAX's where-trick (its cond batching rule): branch k reads the inexact operands of the lanes
    # that do not take it through stop_gradient, so what it computes there (a NaN derivative out of
    # its domain: sqrt of a negative) cannot reach their gradients through 0 * NaN. Those operands
    # are made batched for it (an unbatched one too: its gradient sums over the lanes)
    index = moveaxis_to_front(args[0], dims[0])
    index = ops.clip(index, 0, len(branches) - 1)
    every = [True] * len(branches[0].outputs)
    inexact = [x.dtype.is_inexact for x in xs]
    bflags = [f or i for f, i in zip(flags, inexact)]
    full = [_lanes(x, size) if i and not f else x for x, f, i in zip(xs, flags, inexact)]
    results = []
    for k, b in enumerate(branches):
        hit = ops.equal(index, k)
        ins = [_lane_select(hit, x, ops.stop_gradient(x)) if i else x for x, i in zip(full, inexact)]
        results.append(R.call(R.batch_region(b, bflags, size, force=every)[0], ins))
    out = list(results[-1])
    for k in range(len(branches) - 2, -1, -1):
        hit = ops.equal(index, k)
        for j, r in enumerate(results[k]):
            h = ops.reshape(hit, (size,) + (1,) * (len(r.shape) - 1))
            out[j] = ops.where(ops.broadcast_to(h, tuple(r.shape)), r, out[j])
    dims_out = [0] * len(out)
    # an output every branch returns as one of its operands unchanged is that operand, whichever
    # branch a lane takes: forwarded as it is (unbatched where it is; JAX's forwarding), exactly
    for j, i in _forwarded(branches, [0] * len(branches), len(out)).items():
        out[j], dims_out[j] = xs[i], (0 if flags[i] else None)
    return out, dims_out


def _forwarded(regions, offsets, n_out: int) -> dict:
    """{output j: operand i} for the outputs every region returns as its own input
    `offsets[r] + i` (the same operand i in each), unchanged."""
    out = {}
    for j in range(n_out):
        picks = set()
        for g, off in zip(regions, offsets):
            v = g.outputs[j]
            k = next((k for k, x in enumerate(g.inputs) if x is v), None)
            picks.add(None if k is None or k < off else k - off)
        if len(picks) == 1 and None not in picks:
            out[j] = picks.pop()
    return out


cond = register(Primitive(
    "cond", shape_rule=_cond_shape, impl=_cond_impl, num_outputs=None, jvp=_cond_jvp, vjp=_cond_vjp,
    batch=_cond_batch, nondiff_inputs=(0,), traits=("control",),
    formula="branches[clamp(index)](*operands)"))


# ---------------------------------------------------------------- while_loop


def _while_parts(args, n_cond, n_body):
    return args[:n_cond], args[n_cond:n_cond + n_body], args[n_cond + n_body:]


def _while_shape(*types, cond, body, n_cond, n_body, max_steps):
    cc, bc, carry = _while_parts(types, n_cond, n_body)
    _check_region(cond, "the loop condition", list(cc) + list(carry), [_BOOL])
    _check_region(body, "the loop body", list(bc) + list(carry), carry)
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0):
        raise ShapeError(f"max_steps must be a non-negative int or none, got {max_steps!r}")
    return list(carry)


def _while_impl(*args, cond, body, n_cond, n_body, max_steps):
    cc, bc, carry = _while_parts(list(args), n_cond, n_body)
    steps = 0
    while (max_steps is None or steps < max_steps) and bool(interpret(cond, cc + carry)[0]):
        carry = interpret(body, bc + carry)
        steps += 1
    return tuple(carry)


def _while_jvp(primals, tangents, outs, cond, body, n_cond, n_body, max_steps):
    cc, bc, carry = _while_parts(list(primals), n_cond, n_body)
    _, tbc, tcarry = _while_parts(list(tangents), n_cond, n_body)
    cw = [i for i, t in enumerate(tbc) if t is not None]
    if not cw and all(t is None for t in tcarry):
        return [None] * len(outs)
    fc = [i for i, x in enumerate(carry) if x.dtype.is_inexact]
    nb, nc = len(bc), len(carry)
    jb = R.jvp_region(body, cw + [nb + i for i in fc])
    # the new loop's body consts: consts + const tangents; carry: carry + float-carry tangents
    bc_types = [x.type for x in bc] + [bc[i].type for i in cw]
    c_types = [x.type for x in carry] + [carry[i].type for i in fc]

    def new_body(*a):
        consts, tconsts = a[:nb], a[nb:nb + len(cw)]
        car, tcar = a[nb + len(cw):nb + len(cw) + nc], a[nb + len(cw) + nc:]
        r = R.call(jb, list(consts) + list(car) + list(tconsts) + list(tcar))
        return list(r[:nc]) + [r[nc + i] for i in fc]

    def new_cond(*a):
        return R.call(cond, list(a[:len(cc)]) + list(a[len(cc):len(cc) + nc]))

    gb = R.make_region(f"{body.name}_jvp", bc_types + c_types, new_body)
    gc = R.make_region(f"{cond.name}_jvp", [x.type for x in cc] + c_types, new_cond)
    init = list(carry) + [_tangent_or_zero(tcarry[i], carry[i]) for i in fc]
    res = while_loop.bind(*cc, *bc, *[tbc[i] for i in cw], *init, cond=gc, body=gb, n_cond=len(cc),
                          n_body=nb + len(cw), max_steps=max_steps)
    out = [None] * nc
    for k, i in enumerate(fc):
        out[i] = res[nc + k]
    return out


def _tape_dtype(t: TensorType):
    return dt.int32 if t.dtype.is_bool else t.dtype


def _i32(v: int):
    """An int32 constant, made in the trace that uses it (a region may not capture one)."""
    return ops.constant(v, dt.int32)


def _empty_tapes(types) -> list:
    """Tapes of `types` filled with -0.0 (0 for integers): adding a value to a row stores it
    exactly (-0.0 + x is x for every x, -0.0 included)."""
    return [ops.full(t.shape, -0.0 if t.dtype.is_inexact else 0, dtype=t.dtype) for t in types]


def _tape_write(tapes, row, car, keep=None) -> list:
    """`tapes` with the carry `car` added into row `row` (where the bool `keep` holds, if given).
    A tape of no rows (max_steps=0: the loop body never runs) is returned as it is: there is no row
    to address, and an index into an axis of length 0 is an error when the region is traced."""
    out = []
    for x, tp in zip(car, tapes):
        if tp.shape[0] == 0:
            out.append(tp)
            continue
        v = ops.astype(x, tp.dtype) if x.dtype is not tp.dtype else x
        if keep is not None:
            v = ops.where(keep, v, ops.full(tuple(v.shape), -0.0 if tp.dtype.is_inexact else 0, dtype=tp.dtype))
        out.append(ops.index_add(tp, row, v, 0))
    return out


def _tape_read(tapes, row, carry) -> list:
    """Row `row` of each tape, in the dtype of the carry it holds (of a tape of no rows, which no
    step reads, zeros of the row's shape: see `_tape_write`)."""
    out = []
    for x, tp in zip(carry, tapes):
        if tp.shape[0] == 0:
            v = ops.full(tuple(tp.shape[1:]), 0, dtype=tp.dtype)
        else:
            v = ops.take_prim(tp, row, 0)
        out.append(ops.astype(v, x.dtype) if v.dtype is not x.dtype else v)
    return out


def _taped_cond(cond, cc, ctypes, tape_types, name: str) -> Graph:
    """The region (cond consts, carry, i, tapes) -> cond(carry): the condition of a loop that runs
    the primal loop's steps with a counter and tapes carried after its own carries. The counter
    needs no test: the taped loop has the primal loop's max_steps, which stops both alike."""
    nc = len(ctypes)

    def fn(*a):
        return R.call(cond, list(a[:len(cc)]) + list(a[len(cc):len(cc) + nc]))
    return R.make_region(name, [x.type for x in cc] + list(ctypes) + [_I32] + list(tape_types), fn)


def _counting_down(types, name: str) -> Graph:
    """The region (i, ...) -> i >= 0: the condition of a backward walk."""
    return R.make_region(name, [_I32] + list(types), lambda *a: [ops.greater_equal(a[0], _i32(0))])


def _vjp_step(vb, consts, car, ct, acc, n_fb: int) -> list:
    """One backward step: the body's vjp at carry `car` -> cotangents of the float carries, then the
    consts' gradient accumulators plus this step's."""
    g = R.call(vb, list(consts) + list(car) + list(ct))
    return list(g[n_fb:]) + [ops.add(a_, b_) for a_, b_ in zip(acc, g[:n_fb])]


def _place_grads(res, n_cond, nb, fb, fc, g_carry, g_consts) -> list:
    for k, i in enumerate(fb):
        res[n_cond + i] = g_consts[k]
    for k, i in enumerate(fc):
        res[n_cond + nb + i] = g_carry[k]
    return res


def _while_vjp(cts, primals, outs, cond, body, n_cond, n_body, max_steps):
    if max_steps is None:
        raise GraphadError("reverse-mode differentiation of while_loop needs a bound on its trip count: pass "
                           "max_steps=N to gd.while_loop (the tape holds at most N carries); for a Python `while` "
                           "(or a `for` over a traced range) that graph mode converted, call "
                           "gd.set_loop_options(max_steps=N) in its body, or give gd.jit(..., max_steps=N); "
                           "forward mode (jvp, jacfwd) needs none")
    cc, bc, carry = _while_parts(list(primals), n_cond, n_body)
    nb, nc = len(bc), len(carry)
    fc = [i for i, x in enumerate(carry) if x.dtype.is_inexact]
    fb = [i for i, x in enumerate(bc) if x.dtype.is_inexact]
    res = [None] * len(primals)
    if not fc or all(cts[i] is None for i in fc):
        return res
    ctypes = [x.type for x in carry]
    if max_steps > TAPE_ALL_MAX:
        return _while_vjp_segments(cts, cc, bc, carry, cond, body, n_cond, max_steps, fc, fb, res)
    tape_types = [TensorType((max_steps,) + t.shape, _tape_dtype(t)) for t in ctypes]

    # forward again, writing the carry that enters step i into row i of each tape. The counter and
    # the tapes are carried after the primal carries, so that this loop's operands and outputs
    # begin with the primal loop's and merge_loops (control/merge.py) lets it stand for that loop:
    # the forward pass runs once, and a second reverse pass sees one copy of it
    def fwd_body(*a):
        consts, car, i, tapes = a[:nb], a[nb:nb + nc], a[nb + nc], a[nb + nc + 1:]
        nxt = R.call(body, list(consts) + list(car))
        return list(nxt) + [ops.add(i, _i32(1))] + _tape_write(tapes, i, car)

    gfb = R.make_region(f"{body.name}_taped", [x.type for x in bc] + ctypes + [_I32] + tape_types, fwd_body)
    gfc = _taped_cond(cond, cc, ctypes, tape_types, f"{cond.name}_taped")
    # (max_steps is also this loop's bound: a second reverse pass differentiates it in turn)
    fwd = while_loop.bind(*cc, *bc, *carry, _i32(0), *_empty_tapes(tape_types), cond=gfc, body=gfb,
                          n_cond=len(cc), n_body=nb, max_steps=max_steps)
    steps, tapes = fwd[nc], fwd[nc + 1:]

    # backward: i from steps-1 down to 0; carry (i, ct of float carries, ct accumulators of consts)
    vb = R.vjp_region(body, fb + [nb + i for i in fc], fc)
    ct_types = [ctypes[i] for i in fc]
    acc_types = [bc[i].type for i in fb]

    def bwd_body(*a):
        consts, tapes_, i = a[:nb], a[nb:nb + nc], a[nb + nc]
        ct, acc = a[nb + nc + 1:nb + nc + 1 + len(fc)], a[nb + nc + 1 + len(fc):]
        return [ops.sub(i, _i32(1))] + _vjp_step(vb, consts, _tape_read(tapes_, i, carry), ct, acc, len(fb))

    gbb = R.make_region(f"{body.name}_bwd", [x.type for x in bc] + tape_types + [_I32] + ct_types + acc_types,
                        bwd_body)
    gbc = _counting_down(ct_types + acc_types, f"{cond.name}_bwd")
    ct0 = [cts[i] if cts[i] is not None else _zeros(ctypes[i]) for i in fc]
    acc0 = [_zeros(t) for t in acc_types]
    bwd = while_loop.bind(*bc, *tapes, ops.sub(steps, _i32(1)), *ct0, *acc0, cond=gbc, body=gbb, n_cond=0,
                          n_body=nb + nc, max_steps=max_steps)
    return _place_grads(res, n_cond, nb, fb, fc, bwd[1:1 + len(fc)], bwd[1 + len(fc):])


# Up to this many steps the reverse pass of a while_loop tapes every carry; beyond it, the carry
# entering every K-th step (K about sqrt(max_steps)) and recomputes each segment of K steps from
# its checkpoint during the backward pass: memory 2 sqrt(max_steps) carries instead of max_steps,
# for one more forward pass (the classic two-level checkpointing; Griewank's binomial scheme is the
# many-level form).
TAPE_ALL_MAX = 64


def _seg_len(max_steps: int) -> int:
    return max(1, math.isqrt(max_steps - 1) + 1)


def _while_vjp_segments(cts, cc, bc, carry, cond, body, n_cond, max_steps, fc, fb, res):
    """`_while_vjp` with a checkpointed tape (TAPE_ALL_MAX): checkpoints every K steps forward;
    backward, per segment (last first), the K carries recomputed from its checkpoint into a local
    tape, then walked back with the body's vjp."""
    nb, nc = len(bc), len(carry)
    K = _seg_len(max_steps)
    S = -(-max_steps // K)
    ctypes = [x.type for x in carry]
    ck_types = [TensorType((S,) + t.shape, _tape_dtype(t)) for t in ctypes]
    seg_types = [TensorType((K,) + t.shape, _tape_dtype(t)) for t in ctypes]

    # (carry, i, checkpoints): the primal loop's operands and outputs first, as in _while_vjp
    def fwd_body(*a):
        consts, car, i, tapes = a[:nb], a[nb:nb + nc], a[nb + nc], a[nb + nc + 1:]
        at_ck = ops.equal(ops.remainder(i, _i32(K)), _i32(0))
        new_tapes = _tape_write(tapes, ops.floor_divide(i, _i32(K)), car, at_ck)
        nxt = R.call(body, list(consts) + list(car))
        return list(nxt) + [ops.add(i, _i32(1))] + new_tapes

    gfb = R.make_region(f"{body.name}_ckpt", [x.type for x in bc] + ctypes + [_I32] + ck_types, fwd_body)
    gfc = _taped_cond(cond, cc, ctypes, ck_types, f"{cond.name}_ckpt")
    fwd = while_loop.bind(*cc, *bc, *carry, _i32(0), *_empty_tapes(ck_types), cond=gfc, body=gfb,
                          n_cond=len(cc), n_body=nb, max_steps=max_steps)
    steps, cks = fwd[nc], fwd[nc + 1:]

    vb = R.vjp_region(body, fb + [nb + i for i in fc], fc)
    ct_types = [ctypes[i] for i in fc]
    acc_types = [bc[i].type for i in fb]

    # the inner loops of a segment: recompute (j, carry, local tapes) for j < n, then walk back
    def seg_fwd_body(*a):
        consts, j, car, tapes = a[:nb], a[nb], a[nb + 1:nb + 1 + nc], a[nb + 1 + nc:]
        return [ops.add(j, _i32(1))] + list(R.call(body, list(consts) + list(car))) + _tape_write(tapes, j, car)

    def seg_fwd_cond(*a):
        return [ops.less(a[1], a[0])]  # (n, j, ...): j < n

    g_sfb = R.make_region(f"{body.name}_seg", [x.type for x in bc] + [_I32] + ctypes + seg_types, seg_fwd_body)
    g_sfc = R.make_region(f"{cond.name}_seg", [_I32, _I32] + ctypes + seg_types, seg_fwd_cond)

    def seg_bwd_body(*a):
        consts, tapes_, j = a[:nb], a[nb:nb + nc], a[nb + nc]
        ct, acc = a[nb + nc + 1:nb + nc + 1 + len(fc)], a[nb + nc + 1 + len(fc):]
        return [ops.sub(j, _i32(1))] + _vjp_step(vb, consts, _tape_read(tapes_, j, carry), ct, acc, len(fb))

    g_sbb = R.make_region(f"{body.name}_segbwd", [x.type for x in bc] + seg_types + [_I32] + ct_types + acc_types,
                          seg_bwd_body)
    g_sbc = _counting_down(ct_types + acc_types, f"{cond.name}_segbwd")

    def bwd_body(*a):
        consts, cks_, nsteps, s = a[:nb], a[nb:nb + nc], a[nb + nc], a[nb + nc + 1]
        ct, acc = a[nb + nc + 2:nb + nc + 2 + len(fc)], a[nb + nc + 2 + len(fc):]
        n = ops.minimum(_i32(K), ops.sub(nsteps, ops.mul(s, _i32(K))))
        f = while_loop.bind(n, *consts, _i32(0), *_tape_read(cks_, s, carry), *_empty_tapes(seg_types),
                            cond=g_sfc, body=g_sfb, n_cond=1, n_body=nb, max_steps=K)
        b = while_loop.bind(*consts, *f[1 + nc:], ops.sub(n, _i32(1)), *ct, *acc, cond=g_sbc, body=g_sbb,
                            n_cond=0, n_body=nb + nc, max_steps=K)
        return [ops.sub(s, _i32(1))] + list(b[1:])

    gbb = R.make_region(f"{body.name}_ckbwd", [x.type for x in bc] + ck_types + [_I32, _I32] + ct_types + acc_types,
                        bwd_body)
    gbc = _counting_down(ct_types + acc_types, f"{cond.name}_ckbwd")
    ct0 = [cts[i] if cts[i] is not None else _zeros(ctypes[i]) for i in fc]
    acc0 = [_zeros(t) for t in acc_types]
    last = ops.floor_divide(ops.sub(steps, _i32(1)), _i32(K))  # -1 when no step ran: no segment
    bwd = while_loop.bind(*bc, *cks, steps, last, *ct0, *acc0, cond=gbc, body=gbb, n_cond=0, n_body=nb + nc + 1,
                          max_steps=S)
    return _place_grads(res, n_cond, nb, fb, fc, bwd[1:1 + len(fc)], bwd[1 + len(fc):])


def _batched_carry(body, before: list, carry: list, after: list, size: int) -> list:
    """Which carries are batched inside the loop: those batched on entry, and those the body makes
    batched (then they must be batched on entry too); a fixed point, at most len(carry) rounds.
    `before`/`after`: the batch flags of the body's other inputs (consts; scanned slices)."""
    while True:
        _, out_f = R.batch_region(body, before + carry + after, size)
        new = [a or b for a, b in zip(carry, out_f[:len(carry)])]
        if new == carry:
            return carry
        carry = new


def _while_batch(args, dims, cond, body, n_cond, n_body, max_steps):
    size = bdim_size(args, dims)
    flags = [d is not None for d in dims]
    cf, bf, carf = _while_parts(flags, n_cond, n_body)
    cf, bf, carf = list(cf), list(bf), list(carf)
    carf = _batched_carry(body, bf, carf, [], size)
    _, pf = R.batch_region(cond, cf + carf, size)
    lanewise = pf[0]
    if lanewise:
        carf = [True] * len(carf)
    moved = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    cc, bc, carry = _while_parts(moved, n_cond, n_body)
    carry = [materialize_batched(x, None if d is None else 0, size) if f else x  # (moved to axis 0 already)
             for x, d, f in zip(carry, _while_parts(list(dims), n_cond, n_body)[2], carf)]
    gb, _ = R.batch_region(body, bf + carf, size, force=carf)
    gc, _ = R.batch_region(cond, cf + carf, size, force=[lanewise])
    if not lanewise:
        res = while_loop.bind(*cc, *bc, *carry, cond=gc, body=gb, n_cond=n_cond, n_body=n_body,
                              max_steps=max_steps)
        return list(res), [0 if f else None for f in carf]
    # a batched predicate: run while any lane goes on; a finished lane keeps its carry, and with
    # max_steps each lane counts its own steps (a lane that stopped never runs again)
    ctypes = [TensorType(x.shape, x.dtype) for x in carry]
    steps_t = TensorType((size,), dt.int32)

    def lanes(consts_c, car, steps):
        go = R.call(gc, list(consts_c) + list(car))[0]
        if max_steps is not None:
            go = _and(go, ops.less(steps, ops.constant(max_steps, dt.int32)))
        return go

    def sel_body(*a):
        consts_c, consts_b = a[:n_cond], a[n_cond:n_cond + n_body]
        steps, car = a[n_cond + n_body], a[n_cond + n_body + 1:]
        go = lanes(consts_c, car, steps)
        # the where-trick (as _cond_batch's): the body reads a finished lane's inexact carries and
        # batched consts through stop_gradient, so a derivative it computes there (NaN: the
        # carry left the body's domain, as the loop's test said) cannot reach the gradients
        # through 0 * NaN when the loop is differentiated in reverse mode
        sel = [_lane_select(go, x, ops.stop_gradient(x)) if x.dtype.is_inexact else x for x in car]
        cb = [_lane_select(go, x, ops.stop_gradient(x)) if f and x.dtype.is_inexact else x
              for x, f in zip(consts_b, bf)]
        nxt = R.call(gb, cb + sel)
        out = []
        for old, new in zip(car, nxt):
            m = ops.broadcast_to(ops.reshape(go, (size,) + (1,) * (len(old.shape) - 1)), tuple(old.shape))
            out.append(ops.where(m, new, old))
        return [ops.add(steps, ops.astype(go, dt.int32))] + out

    def any_cond(*a):
        consts_c, steps, car = a[:n_cond], a[n_cond], a[n_cond + 1:]
        go = lanes(consts_c, car, steps)
        # (any lane going: a count, so that a batch of no lanes stops at once; max has no identity)
        return [ops.greater(ops.sum(ops.astype(go, dt.int32)), ops.constant(0, dt.int32))]

    cc_t = [x.type for x in cc]
    gsb = R.make_region(f"{body.name}_lanes", cc_t + [x.type for x in bc] + [steps_t] + ctypes, sel_body)
    gsc = R.make_region(f"{cond.name}_lanes", cc_t + [steps_t] + ctypes, any_cond)
    res = while_loop.bind(*cc, *cc, *bc, ops.zeros((size,), dtype=dt.int32), *carry, cond=gsc, body=gsb,
                          n_cond=n_cond, n_body=n_cond + n_body, max_steps=max_steps)
    out, out_dims = list(res[1:]), [0] * len(carry)
    # a carry the body returns unchanged is its initial value in every lane, however many steps
    # each lane runs: forwarded as given (unbatched where it was), exactly
    init = _while_parts(moved, n_cond, n_body)[2]
    init_dims = _while_parts(list(dims), n_cond, n_body)[2]
    for k, i in _forwarded([body], [n_body], len(carry)).items():
        if i == k:
            out[k], out_dims[k] = init[k], (None if init_dims[k] is None else 0)
    return out, out_dims


while_loop = register(Primitive(
    "while_loop", shape_rule=_while_shape, impl=_while_impl, num_outputs=None, jvp=_while_jvp,
    vjp=_while_vjp, batch=_while_batch, traits=("control",),
    formula="while cond(carry): carry = body(carry)"))


# ---------------------------------------------------------------- scan


def _scan_parts(args, n_consts, n_carry):
    return args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]


def _scan_shape(*types, body, n_consts, n_carry, length, reverse):
    consts, carry, xs = _scan_parts(types, n_consts, n_carry)
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ShapeError(f"length must be a non-negative int, got {length!r}")
    for k, x in enumerate(xs):
        if not x.shape or x.shape[0] != length:
            raise ShapeError(f"scanned input {k} ({x}) does not have the leading axis of length {length}")
    slices = [TensorType(x.shape[1:], x.dtype) for x in xs]
    _check_region(body, "the scan body", list(consts) + list(carry) + slices)
    outs = body.out_types
    if list(outs[:n_carry]) != list(carry):
        raise ShapeError(f"the scan body returns the carry {_types_str(outs[:n_carry])}, expected "
                         f"{_types_str(carry)}")
    return list(carry) + [TensorType((length,) + y.shape, y.dtype) for y in outs[n_carry:]]


def _scan_impl(*args, body, n_consts, n_carry, length, reverse):
    consts, carry, xs = _scan_parts(list(args), n_consts, n_carry)
    ys_types = body.out_types[n_carry:]
    ys = [np.empty((length,) + t.shape, t.dtype.np) for t in ys_types]
    for step in range(length):
        i = length - 1 - step if reverse else step
        out = interpret(body, consts + carry + [x[i] for x in xs])
        carry = out[:n_carry]
        for y, o in zip(ys, out[n_carry:]):
            y[i] = o
    return tuple(carry) + tuple(ys)


def _scan_jvp(primals, tangents, outs, body, n_consts, n_carry, length, reverse):
    consts, carry, xs = _scan_parts(list(primals), n_consts, n_carry)
    tc, tcar, txs = _scan_parts(list(tangents), n_consts, n_carry)
    cw = [i for i, t in enumerate(tc) if t is not None]
    xw = [i for i, t in enumerate(txs) if t is not None]
    if not cw and not xw and all(t is None for t in tcar):
        return [None] * len(outs)
    nk, nc, nx = len(consts), len(carry), len(xs)
    fc = [i for i, x in enumerate(carry) if x.dtype.is_inexact]
    ny = len(body.outputs) - nc
    fy = [j for j in range(ny) if body.out_types[nc + j].dtype.is_inexact]
    jb = R.jvp_region(body, cw + [nk + i for i in fc] + [nk + nc + i for i in xw])
    slices = [TensorType(x.shape[1:], x.dtype) for x in xs]
    in_types = ([x.type for x in consts] + [consts[i].type for i in cw] + [x.type for x in carry]
                + [carry[i].type for i in fc] + slices + [slices[i] for i in xw])

    def new_body(*a):
        k = 0
        c = a[k:k + nk]; k += nk
        tcs = a[k:k + len(cw)]; k += len(cw)
        car = a[k:k + nc]; k += nc
        tcr = a[k:k + len(fc)]; k += len(fc)
        x = a[k:k + nx]; k += nx
        tx = a[k:]
        r = R.call(jb, list(c) + list(car) + list(x) + list(tcs) + list(tcr) + list(tx))
        prim, tan = r[:nc + ny], r[nc + ny:]
        return (list(prim[:nc]) + [tan[i] for i in fc] + list(prim[nc:]) + [tan[nc + j] for j in fy])

    g = R.make_region(f"{body.name}_jvp", in_types, new_body)
    init = list(carry) + [_tangent_or_zero(tcar[i], carry[i]) for i in fc]
    res = scan.bind(*consts, *[tc[i] for i in cw], *init, *xs, *[txs[i] for i in xw], body=g,
                    n_consts=nk + len(cw), n_carry=nc + len(fc), length=length, reverse=reverse)
    out = [None] * len(outs)
    for k, i in enumerate(fc):
        out[i] = res[nc + k]
    base = nc + len(fc) + ny
    for k, j in enumerate(fy):
        out[nc + j] = res[base + k]
    return out


def _scan_vjp(cts, primals, outs, body, n_consts, n_carry, length, reverse):
    consts, carry, xs = _scan_parts(list(primals), n_consts, n_carry)
    nk, nc, nx = len(consts), len(carry), len(xs)
    ny = len(body.outputs) - nc
    res = [None] * len(primals)
    fc = [i for i, x in enumerate(carry) if x.dtype.is_inexact]
    fy = [j for j in range(ny) if body.out_types[nc + j].dtype.is_inexact]
    seeds_c = [i for i in fc if cts[i] is not None]
    seeds_y = [j for j in fy if cts[nc + j] is not None]
    if not seeds_c and not seeds_y:
        return res
    fk = [i for i, x in enumerate(consts) if x.dtype.is_inexact]
    fx = [i for i, x in enumerate(xs) if x.dtype.is_inexact]
    slices = [TensorType(x.shape[1:], x.dtype) for x in xs]
    ctypes = [x.type for x in carry]

    # forward again, stacking the carry that enters each step (the residuals). Its outputs start
    # with the primal scan's own (carry, ys), so that merge_loops (control/merge.py) can let this
    # scan stand for the primal one: the forward pass then runs once
    def fwd_body(*a):
        c, car, x = a[:nk], a[nk:nk + nc], a[nk + nc:]
        r = R.call(body, list(c) + list(car) + list(x))
        return list(r) + list(car)

    gf = R.make_region(f"{body.name}_res", [x.type for x in consts] + ctypes + slices, fwd_body)
    fwd = scan.bind(*consts, *carry, *xs, body=gf, n_consts=nk, n_carry=nc, length=length, reverse=reverse)
    stacked = fwd[nc + ny:]

    # backward: the other direction; carry = (ct of float carries, accumulators of float consts)
    vb = R.vjp_region(body, fk + [nk + i for i in fc] + [nk + nc + i for i in fx], fc + [nc + j for j in fy])
    ct_types = [ctypes[i] for i in fc]
    acc_types = [consts[i].type for i in fk]
    y_types = [body.out_types[nc + j] for j in fy]

    def bwd_body(*a):
        k = 0
        c = a[k:k + nk]; k += nk
        ct = a[k:k + len(fc)]; k += len(fc)
        acc = a[k:k + len(fk)]; k += len(fk)
        car = a[k:k + nc]; k += nc
        x = a[k:k + nx]; k += nx
        cty = a[k:]
        g = R.call(vb, list(c) + list(car) + list(x) + list(ct) + list(cty))
        gk, gc, gx = g[:len(fk)], g[len(fk):len(fk) + len(fc)], g[len(fk) + len(fc):]
        return list(gc) + [ops.add(p, q) for p, q in zip(acc, gk)] + list(gx)

    gb = R.make_region(f"{body.name}_bwd", [x.type for x in consts] + ct_types + acc_types + ctypes + slices
                       + y_types, bwd_body)
    ct0 = [cts[i] if cts[i] is not None else _zeros(ctypes[i]) for i in fc]
    acc0 = [_zeros(t) for t in acc_types]
    cty = [cts[nc + j] if cts[nc + j] is not None else _zeros(outs[nc + j].type if hasattr(outs[nc + j], "type")
                                                              else outs[nc + j]) for j in fy]
    bwd = scan.bind(*consts, *ct0, *acc0, *stacked, *xs, *cty, body=gb, n_consts=nk,
                    n_carry=len(fc) + len(fk), length=length, reverse=not reverse)
    g_carry, g_consts, g_xs = bwd[:len(fc)], bwd[len(fc):len(fc) + len(fk)], bwd[len(fc) + len(fk):]
    for k, i in enumerate(fk):
        res[i] = g_consts[k]
    for k, i in enumerate(fc):
        res[nk + i] = g_carry[k]
    for k, i in enumerate(fx):
        res[nk + nc + i] = g_xs[k]
    return res


def _scan_batch(args, dims, body, n_consts, n_carry, length, reverse):
    size = bdim_size(args, dims)
    flags = [d is not None for d in dims]
    kf, carf, xf = _scan_parts(flags, n_consts, n_carry)
    nc = n_carry
    carf = _batched_carry(body, list(kf), list(carf), list(xf), size)
    consts, carry, xs = _scan_parts(list(args), n_consts, n_carry)
    kd, cd, xd = _scan_parts(list(dims), n_consts, n_carry)
    consts = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(consts, kd)]
    carry = [moveaxis_to_front(a, d) if d is not None else
             (ops.broadcast_to(ops.expand_dims(a, 0), (size,) + tuple(a.shape)) if f else a)
             for a, d, f in zip(carry, cd, carf)]
    # a scanned input keeps the scan axis first: its batch axis goes to position 1
    xs2 = []
    for a, d in zip(xs, xd):
        if d is None:
            xs2.append(a)
        else:
            a = moveaxis_to_front(a, d)  # (B, L, ...)
            perm = (1, 0) + tuple(range(2, len(a.shape)))
            xs2.append(ops.transpose(a, perm))
    _, out_f = R.batch_region(body, list(kf) + carf + list(xf), size)
    force = carf + list(out_f[nc:])
    g, out_f = R.batch_region(body, list(kf) + carf + list(xf), size, force=force)
    res = scan.bind(*consts, *carry, *xs2, body=g, n_consts=n_consts, n_carry=nc, length=length, reverse=reverse)
    out_dims = [0 if f else None for f in out_f[:nc]] + [1 if f else None for f in out_f[nc:]]
    return list(res), out_dims


scan = register(Primitive(
    "scan", shape_rule=_scan_shape, impl=_scan_impl, num_outputs=None, jvp=_scan_jvp, vjp=_scan_vjp,
    batch=_scan_batch, traits=("control",),
    formula="carry, ys[i] = body(consts, carry, xs[i]) for each i"))

CONTROL_PRIMITIVES = (cond, while_loop, scan)
