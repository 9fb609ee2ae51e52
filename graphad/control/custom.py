"""Custom derivative rules: `custom_jvp`, `custom_vjp` (JAX's names) and their primitives.

The user's function and rules are traced once into closed regions (what they close over becomes
explicit operands, placed first) and one primitive is bound:

    custom_jvp_call(*caps, *args) {body=fun, jvp=g, n_caps=k}
        fun: (caps, args) -> outs
        jvp: (caps, args, one tangent per float arg) -> (outs, one tangent per float out)
    custom_vjp_call(*caps, *args) {body=fun, fwd=g, bwd=g, n_caps=k}
        fwd: (caps, args) -> (outs, residuals)
        bwd: (caps, residuals, one cotangent per float out) -> one cotangent per float arg

Both compute `fun(*operands)`; the rules only change how they are differentiated, so they carry
no runtime meaning once the transformations are done: the runtime's compile_graph replaces them
by their `body` region (`inline_custom_calls`, then the optimisation passes again); the trait
"inline" says so (graphad/lowering needs no lowering for them; graphad/passes/inline.py would
inline them too).

Rules (each inlines ordinary regions, so every derivative is itself differentiable):
- custom_jvp_call: jvp = the user's jvp region. vjp = its transpose: the user's tangent map is
  linear in the tangents, so the vjp of the jvp region w.r.t. the tangent inputs, seeded at the
  tangent outputs and evaluated at zero tangents, is J^T u. batch = the regions batched.
- custom_vjp_call: vjp = the fwd region's residuals, then the bwd region. jvp (JAX raises here):
  bwd is linear in the cotangent, u -> J^T u, so its vjp w.r.t. the cotangent inputs seeded with
  the tangent v is J v. batch = the regions batched; a cotangent the batched bwd computes per
  example for an operand shared by all examples is summed over the batch.
- Captured operands (tensors the function closes over, e.g. Parameters) are not covered by the
  user's rule, which speaks of the explicit arguments only: their derivatives come from ordinary
  AD through `fun` (never a silent zero).
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import Callable

import numpy as np

from .. import pytree
from ..errors import ShapeError, TraceError
from ..ir.core import Graph, TensorType
from ..ir.interpret import interpret
from ..passes.cleanup import dce
from ..prims import lax as ops
from ..prims._util import add_any, bdim_size, moveaxis_to_front
from ..prims.registry import Primitive, register
from ..prims.trace import WeakTracer, is_tracing, is_weak_number, trace_to_graph, weak_again, weak_again_at
from ..tensor import TensorMethods
from . import regions as R
from .api import _captures_first, _leaves, _types, _union, _with_extra_inputs, located
from .linearity import nonlinear_use
from .prims import _check_region, _types_str




def _check_n_caps(n_caps, n):
    if not isinstance(n_caps, int) or isinstance(n_caps, bool) or not 0 <= n_caps <= n:
        raise ShapeError(f"n_caps must be an int in [0, {n}], got {n_caps!r}")


def _float_pos(types) -> list[int]:
    return [i for i, t in enumerate(types) if t.dtype.is_inexact]


def _zeros(t):
    return ops.zeros(tuple(t.shape), dtype=t.dtype)


def _ttype(x) -> TensorType:
    return TensorType(tuple(x.shape), x.dtype)


def _impl(*args, body, n_caps, **_):
    return tuple(interpret(body, list(args)))


def _capture_jvp(body, primals, tangents, n_caps, n_out):
    """Output tangents from the captured operands' tangents, by ordinary AD through `body`."""
    cw = [i for i in range(n_caps) if tangents[i] is not None and primals[i].dtype.is_inexact]
    if not cw:
        return None
    r = R.call(R.jvp_region(body, cw), list(primals) + [tangents[i] for i in cw])
    return r[n_out:]


def _capture_vjp(body, primals, cts, outs, n_caps, res):
    """The captured operands' cotangents, by ordinary AD through `body`, written into `res`."""
    fc = [i for i in range(n_caps) if primals[i].dtype.is_inexact]
    seeds = [j for j, c in enumerate(cts) if c is not None and outs[j].dtype.is_inexact]
    if not fc or not seeds:
        return
    g = R.call(R.vjp_region(body, fc, seeds), list(primals) + [cts[j] for j in seeds])
    for i, gi in zip(fc, g):
        res[i] = gi


# ---------------------------------------------------------------- custom_jvp_call


def _require_linear(region, inputs, outputs, rule: str, what: str, why: str) -> None:
    """A GraphadError when `region` uses its inputs at `inputs` nonlinearly on the way to its
    outputs at `outputs` (linearity.py): the transpose graphad takes would be a made-up number."""
    node = nonlinear_use(region, inputs, outputs)
    if node is not None:
        where = f" at {node.loc}" if node.loc else ""
        raise located(f"the {rule} is not linear in the {what}: {node.prim.name}{where} uses them "
                      f"nonlinearly; {why}, which is only right for a map linear in the {what} "
                      f"(products with values of the primals, sums, ...), as JAX requires")


def _cj_shape(*types, body, jvp, n_caps):
    _check_n_caps(n_caps, len(types))
    _check_region(body, "the custom_jvp function", types)
    outs = list(body.out_types)
    fa = [types[n_caps + i] for i in _float_pos(types[n_caps:])]
    _check_region(jvp, "the custom_jvp rule", list(types) + fa,
                  outs + [outs[j] for j in _float_pos(outs)])
    return outs


def _cj_jvp(primals, tangents, outs, body, jvp, n_caps):
    n = len(outs)
    args, targs = primals[n_caps:], tangents[n_caps:]
    fa = [i for i, x in enumerate(args) if x.dtype.is_inexact]
    fo = [j for j, o in enumerate(outs) if o.dtype.is_inexact]
    res = [None] * n
    if any(targs[i] is not None for i in fa):
        t_in = [targs[i] if targs[i] is not None else _zeros(args[i]) for i in fa]
        r = R.call(jvp, list(primals) + t_in)
        for k, j in enumerate(fo):
            res[j] = r[n + k]
    tc = _capture_jvp(body, primals, tangents, n_caps, n)
    if tc is not None:
        for j in fo:
            res[j] = add_any(res[j], tc[j])
    return res


def _cj_vjp(cts, primals, outs, body, jvp, n_caps):
    n, m = len(outs), len(primals)
    args = primals[n_caps:]
    fa = [i for i, x in enumerate(args) if x.dtype.is_inexact]
    fo = [j for j, o in enumerate(outs) if o.dtype.is_inexact]
    res = [None] * m
    seeds = [j for j in fo if cts[j] is not None]
    if not seeds:
        return res
    if fa:
        # the jvp region's tangent inputs follow the operands; its tangent outputs follow the outputs
        tpos = [m + k for k in range(len(fa))]
        touts = [n + fo.index(j) for j in seeds]
        _require_linear(jvp, tpos, touts, "custom_jvp rule", "tangents", "grad, vjp and jacrev transpose it")
        vr = R.vjp_region(jvp, tpos, touts)
        g = R.call(vr, list(primals) + [_zeros(args[i]) for i in fa] + [cts[j] for j in seeds])
        for k, i in enumerate(fa):
            res[n_caps + i] = g[k]
    _capture_vjp(body, primals, cts, outs, n_caps, res)
    return res


def _cj_batch(args, dims, body, jvp, n_caps):
    size = bdim_size(args, dims)
    xs = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    flags = [d is not None for d in dims]
    fa = _float_pos(body.in_types[n_caps:])
    fo = _float_pos(body.out_types)
    n = len(body.outputs)
    # a tangent has its operand's type, so it is batched exactly when its operand is
    jflags = flags + [flags[n_caps + i] for i in fa]
    _, bf = R.batch_region(body, flags, size)
    _, jf = R.batch_region(jvp, jflags, size)
    want = [bf[j] or jf[j] or (j in fo and jf[n + fo.index(j)]) for j in range(n)]
    gb, _ = R.batch_region(body, flags, size, force=want)
    gj, _ = R.batch_region(jvp, jflags, size, force=want + [want[j] for j in fo])
    out = custom_jvp_call.bind(*xs, body=gb, jvp=gj, n_caps=n_caps)
    return list(out), [0 if w else None for w in want]


custom_jvp_call = register(Primitive(
    "custom_jvp_call", shape_rule=_cj_shape, impl=_impl, num_outputs=None, jvp=_cj_jvp, vjp=_cj_vjp,
    batch=_cj_batch, traits=("inline",),
    formula="body(*operands); tangents by the user's jvp region, cotangents by its transpose"))


# ---------------------------------------------------------------- custom_vjp_call


def _cv_shape(*types, body, fwd, bwd, n_caps):
    _check_n_caps(n_caps, len(types))
    _check_region(body, "the custom_vjp function", types)
    outs = list(body.out_types)
    _check_region(fwd, "the custom_vjp fwd rule", types)
    if list(fwd.out_types[:len(outs)]) != outs:
        raise ShapeError(f"the custom_vjp fwd rule returns {_types_str(fwd.out_types[:len(outs)])} as outputs, "
                         f"but the function returns {_types_str(outs)}")
    res_types = list(fwd.out_types[len(outs):])
    fa = [types[n_caps + i] for i in _float_pos(types[n_caps:])]
    _check_region(bwd, "the custom_vjp bwd rule", list(types[:n_caps]) + res_types + [outs[j] for j in _float_pos(outs)],
                  fa)
    return outs


def _residuals(fwd, primals, n_out):
    n_res = len(fwd.outputs) - n_out
    if n_res == 0:
        return []
    return R.call(R.outputs_subset(fwd, range(n_out, n_out + n_res)), list(primals))


def _cv_jvp(primals, tangents, outs, body, fwd, bwd, n_caps):
    n = len(outs)
    args, targs = primals[n_caps:], tangents[n_caps:]
    fa = [i for i, x in enumerate(args) if x.dtype.is_inexact]
    fo = [j for j, o in enumerate(outs) if o.dtype.is_inexact]
    res = [None] * n
    if fo and any(targs[i] is not None for i in fa):
        caps = list(primals[:n_caps])
        resid = _residuals(fwd, primals, n)
        # bwd: (caps, residuals, ct) -> J^T ct; its vjp w.r.t. ct seeded with v is J v
        base = n_caps + len(resid)
        _require_linear(bwd, [base + k for k in range(len(fo))], range(len(fa)), "custom_vjp bwd rule",
                        "cotangents", "jvp, jacfwd and linearize transpose it")
        tb = R.vjp_region(bwd, [base + k for k in range(len(fo))], list(range(len(fa))))
        v = [targs[i] if targs[i] is not None else _zeros(args[i]) for i in fa]
        jv = R.call(tb, caps + list(resid) + [_zeros(outs[j]) for j in fo] + v)
        for k, j in enumerate(fo):
            res[j] = jv[k]
    tc = _capture_jvp(body, primals, tangents, n_caps, n)
    if tc is not None:
        for j in fo:
            res[j] = add_any(res[j], tc[j])
    return res


def _cv_vjp(cts, primals, outs, body, fwd, bwd, n_caps):
    n, m = len(outs), len(primals)
    args = primals[n_caps:]
    fa = [i for i, x in enumerate(args) if x.dtype.is_inexact]
    fo = [j for j, o in enumerate(outs) if o.dtype.is_inexact]
    res = [None] * m
    if not any(cts[j] is not None for j in fo):
        return res
    if fa:
        resid = _residuals(fwd, primals, n)
        ct = [cts[j] if cts[j] is not None else _zeros(outs[j]) for j in fo]
        g = R.call(bwd, list(primals[:n_caps]) + list(resid) + ct)
        for k, i in enumerate(fa):
            res[n_caps + i] = g[k]
    _capture_vjp(body, primals, cts, outs, n_caps, res)
    return res


def _cv_batch(args, dims, body, fwd, bwd, n_caps):
    size = bdim_size(args, dims)
    xs = [moveaxis_to_front(a, d) if d is not None else a for a, d in zip(args, dims)]
    flags = [d is not None for d in dims]
    fa = _float_pos(body.in_types[n_caps:])
    fo = _float_pos(body.out_types)
    n = len(body.outputs)
    _, bf = R.batch_region(body, flags, size)
    _, ff = R.batch_region(fwd, flags, size)
    want = [bf[j] or ff[j] for j in range(n)]
    gb, _ = R.batch_region(body, flags, size, force=want)
    gf, ff = R.batch_region(fwd, flags, size, force=want + [False] * (len(fwd.outputs) - n))
    # a cotangent has its output's type: batched exactly when the (batched) output is
    bflags = flags[:n_caps] + list(ff[n:]) + [want[j] for j in fo]
    arg_b = [flags[n_caps + i] for i in fa]
    gw, wf = R.batch_region(bwd, bflags, size, force=arg_b)
    if any(w and not a for w, a in zip(wf, arg_b)):
        # an operand shared by every example gets the sum of the examples' cotangents
        inner = gw

        def summed(*a):
            return [ops.sum(o, axis=0) if w and not b else o for o, w, b in zip(R.call(inner, a), wf, arg_b)]
        gw = R.make_region(inner.name, inner.in_types, summed)
    out = custom_vjp_call.bind(*xs, body=gb, fwd=gf, bwd=gw, n_caps=n_caps)
    return list(out), [0 if w else None for w in want]


custom_vjp_call = register(Primitive(
    "custom_vjp_call", shape_rule=_cv_shape, impl=_impl, num_outputs=None, jvp=_cv_jvp, vjp=_cv_vjp,
    batch=_cv_batch, traits=("inline",),
    formula="body(*operands); cotangents by the user's fwd/bwd regions, tangents by bwd transposed"))


# ---------------------------------------------------------------- the user's API

# A rule that calls its own function (JAX's idiom: `ans = f(x)` inside f's jvp or fwd) would trace
# that rule again forever, as regions are traced when the function is called. Nested calls keep
# their rule for _MAX_NESTING levels (derivatives up to that order use the user's rules); deeper
# ones run the plain function, differentiated by ordinary AD.
_MAX_NESTING = 3


class _Nesting(threading.local):
    def __init__(self):
        self.depth: dict[int, int] = {}


_NESTING = _Nesting()


def _nest_key(obj) -> int:
    """What nesting is counted for: the custom function, or the Cell a bprop call was made for
    (each call of such a cell makes a new custom_vjp, and its bprop may call the cell again)."""
    owner = getattr(obj, "_nest_owner", None)
    return id(obj if owner is None else owner)


class _in_rule:
    """Context: the rules of `obj` are being traced (its nested calls count one level deeper)."""

    def __init__(self, obj):
        self.key = _nest_key(obj)

    def __enter__(self):
        _NESTING.depth[self.key] = _NESTING.depth.get(self.key, 0) + 1

    def __exit__(self, *exc):
        d = _NESTING.depth[self.key] - 1
        if d:
            _NESTING.depth[self.key] = d
        else:
            del _NESTING.depth[self.key]
        return False


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _check_arity(rule, n: int, who: str, label: str, spelled: str) -> None:
    """A rule that cannot take the `n` positional arguments it is called with: an error naming the
    rule, how it is called and where it is defined, not Python's TypeError from inside the call
    (a jvp rule or bwd that forgot a parameter, a custom trial)."""
    try:
        sig = inspect.signature(rule)
    except (TypeError, ValueError):  # (no signature to read: a builtin; its call says why)
        return
    try:
        sig.bind(*([None] * n))
    except TypeError as e:
        raise located(f"{who}: {label} is called as {spelled}, {n} positional argument(s), but its "
                      f"signature is {sig} ({e})", (label, rule)) from None


def _resolve_args(fun, args, kwargs, what):
    """Positional arguments of a call of `fun`: keyword arguments placed and defaults filled in by
    fun's signature, whichever way it was called (as JAX's resolve_kwargs: `f(x)` gave the rules
    (x,) and `f(x=x)` (x, c), a custom trial)."""
    try:
        sig = inspect.signature(fun)
    except (TypeError, ValueError) as e:  # (no signature to read: a builtin)
        if not kwargs:
            return tuple(args)
        raise located(f"{what} {_name(fun)}: cannot place the keyword arguments {sorted(kwargs)}: {e}") from None
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise located(f"{what} {_name(fun)}: cannot place the keyword arguments {sorted(kwargs)}: {e}") from None
    bound.apply_defaults()
    if bound.kwargs:
        raise located(f"{what} {_name(fun)}: keyword-only arguments {sorted(bound.kwargs)} are not supported; "
                           f"make them positional")
    return tuple(bound.args)


def _split(args, nondiff_argnums, what, name):
    """(nondiff values by position, positions of the differentiable arguments)."""
    nd = {}
    for p in nondiff_argnums:
        if p >= len(args):
            raise located(f"{what} {name}: nondiff_argnums has {p}, but the function was called with "
                               f"{len(args)} positional argument(s)")
        leaves, _ = pytree.flatten(args[p])
        if any(type(x) is WeakTracer for x in leaves):
            raise located(f"{what} {name}: argument {p} is in nondiff_argnums but is a Python number that "
                          f"gd.jit traces (an argument of the jit); nondiff arguments are static Python "
                          f"values: name that argument in the jit's static_argnums or static_argnames")
        if any(isinstance(x, TensorMethods) for x in leaves):
            raise located(f"{what} {name}: argument {p} is in nondiff_argnums but holds a tensor; nondiff "
                               f"arguments are static Python values (pass tensors as ordinary arguments, or "
                               f"close over them)")
        nd[p] = args[p]
    return nd, [i for i in range(len(args)) if i not in nd]


def _merge(nd, diff_pos, diff_args):
    full = [None] * (len(nd) + len(diff_pos))
    for p, v in nd.items():
        full[p] = v
    for p, v in zip(diff_pos, diff_args):
        full[p] = v
    return full


def _check_nondiff_argnums(nondiff_argnums, what):
    out = tuple(nondiff_argnums)
    for p in out:
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise located(f"{what}: nondiff_argnums must be non-negative ints, got {p!r}")
    if len(set(out)) != len(out):
        raise located(f"{what}: repeated entries in nondiff_argnums {out}")
    return out


def _regions_with_caps(traced):
    """[(graph, n_args, own captures)] -> (every capture, the graphs taking (captures, args)),
    dead nodes dropped (zeros the wrappers made for outputs that were given)."""
    caps = _union([c for _, _, c in traced])
    return caps, [dce(_captures_first(_with_extra_inputs(g, n, c, caps), n)) for g, n, c in traced]


def _as_cotangents(out, td, types, what, rule=None, loose=()):
    """The leaves of `out` against the structure `td` and leaf `types`; None (anywhere) is zero.
    `rule`: (name, function) of the user's rule that returned `out`, for the errors. `loose`: the
    leaves (jit's weak numbers) whose real floating-point value of another dtype is cast to the
    leaf's, as a Python number's is: the number is float32 to the user and float64 here."""
    leaves: list = []

    def rec(x, t, path):
        if x is None:
            leaves.extend([None] * t.num_leaves)
            return
        if t.kind == "leaf":
            if isinstance(x, (tuple, list, dict)):  # (as_tensor would stack a tuple of tensors into one)
                raise located(f"{what}: {path} should be a tensor, got a {type(x).__name__}", rule)
            leaves.append(x)
            return
        if t.kind == "none":
            return
        if t.kind == "dict":
            if not isinstance(x, dict) or sorted(x, key=repr) != sorted(t.meta, key=repr):
                raise located(f"{what}: {path} should be a dict with keys {list(t.meta)}, got {type(x).__name__}", rule)
            for k, c in zip(t.meta, t.children):
                rec(x[k], c, f"{path}[{k!r}]")
            return
        if not isinstance(x, (tuple, list)) or len(x) != len(t.children):
            raise located(f"{what}: {path} should have the structure {t!r}, got {type(x).__name__}"
                               f"{'' if not isinstance(x, (tuple, list)) else ' of length ' + str(len(x))}", rule)
        for k, (e, c) in enumerate(zip(x, t.children)):
            rec(e, c, f"{path}[{k}]")

    rec(out, td, "the result")
    res = []
    for k, (x, t) in enumerate(zip(leaves, types)):
        if t is None:  # a leaf that takes no cotangent (a Python number of the call)
            res.append(None)
            continue
        if x is None:
            res.append(_zeros(t))
            continue
        if (is_weak_number(x) and t.shape == ()
                and t.dtype.is_inexact and (t.dtype.is_complex or not isinstance(x, complex))):
            # a Python number is weakly typed, as in JAX: a `0.0` tangent or a `2.0` cotangent
            # of a scalar takes its primal's dtype (the number exactly)
            res.append(ops.as_tensor(x, t.dtype))
            continue
        try:
            x = ops.as_tensor(x)
        except Exception as e:  # noqa: BLE001 -- re-raised naming the leaf
            raise located(f"{what}: leaf {k} ({type(x).__name__}) is not a tensor: {e}", rule) from None
        if k in loose and x.dtype != t.dtype and tuple(x.shape) == t.shape and x.dtype.is_float and t.dtype.is_float:
            x = ops.astype(x, t.dtype)
        if _ttype(x) != t and t.dtype.is_inexact:
            raise located(f"{what}: leaf {k} has type {_ttype(x)}, but the primal it belongs to has type {t}", rule)
        res.append(x)
    return res


def _check_not_traced(obj, what):
    """Refuse to replace a rule that a traced call has used: staged graphs (keyed by the functions
    transformed, not by the rules inside them) would keep running the old rule, silently."""
    if obj._traced:
        raise located(f"{_name(obj.fun)}.{what}: the rule was already used by a traced call (staged graphs "
                           f"keep it); define a new {type(obj).__name__} function instead of replacing its rule")


def _run_plainly(rule_holder) -> bool:
    """Call the function itself: eagerly (nothing to differentiate), or too deep inside its own
    rule (see _MAX_NESTING)."""
    return not is_tracing() or _NESTING.depth.get(_nest_key(rule_holder), 0) >= _MAX_NESTING


def _trace_fun(rule_holder, nd, dpos, td, types, name: str, numbers: dict, weak: dict):
    """(graph, output treedef, captures) of the function itself on the differentiated leaves."""
    def flat_fun(*ls):
        return rule_holder.fun(*_merge(nd, dpos, pytree.unflatten(td, _with_numbers(weak_again_at(ls, weak),
                                                                                   numbers))))
    return trace_to_graph(flat_fun, types, name=f"{name}_fun")


def _split_call(rule_holder, args, kind: str, name: str):
    """(nondiff args by position, differentiated positions, their tensor leaves, treedef (of every
    leaf), the tensor leaves' types, nondiff values in position order, {leaf index: Python number},
    {tensor leaf index: jit's weak number}) of one call. A Python number among the differentiated
    arguments' leaves (a literal `0.1` at the call) stays a Python value, reaching the function
    and its rules as it is, with a zero tangent and no cotangent (nothing outside can
    differentiate a literal): made a tensor, it was a float32 one, so a float64 function got 0.1
    rounded to float32 under jit or grad. A number an enclosing jit traces weakly typed (a
    WeakTracer) is a leaf like a tensor, which may be differentiated, holding its exact value
    (float64 for a float), and weakly typed again inside the function and its rules (prims.trace.weak_again_at);
    a cotangent of another float dtype is cast to it (_as_cotangents' `loose`)."""
    nd, dpos = _split(args, rule_holder.nondiff_argnums, kind, name)
    every, td = pytree.flatten(tuple(args[p] for p in dpos))
    numbers = {k: x for k, x in enumerate(every)
               if is_weak_number(x)}
    leaves, _ = _leaves([x for k, x in enumerate(every) if k not in numbers], f"{kind} {name} arguments")
    weak = {k: x for k, x in enumerate(leaves) if type(x) is WeakTracer}
    for k, x in weak.items():
        leaves[k] = x.weak_src
    return nd, dpos, leaves, td, _types(leaves), [nd[p] for p in sorted(nd)], numbers, weak


def _with_numbers(ls, numbers: dict, zero: bool = False) -> list:
    """The tensor leaves `ls` with the call's Python numbers back in their places (`zero`: their
    tangents, zeros of their kind, in their places)."""
    if not numbers:
        return list(ls)
    it = iter(ls)
    return [(type(numbers[k])(0) if zero else numbers[k]) if k in numbers else next(it)
            for k in range(len(ls) + len(numbers))]


class custom_jvp:
    """A function with a user-defined forward-mode derivative (JAX's `jax.custom_jvp`).

        @gd.custom_jvp
        def f(x): ...
        @f.defjvp
        def f_jvp(primals, tangents):      # tuples of f's (differentiable) arguments
            (x,), (t,) = primals, tangents
            return f(x), tangent_out       # (f's output, its tangent: linear in the tangents)

    Every transformation uses the rule: jvp/jacfwd call it, grad/vjp/jacrev transpose it (so
    the tangent map must be linear in the tangents, as JAX requires), vmap batches it, and
    higher orders differentiate it. Arguments are pytrees of tensors; `nondiff_argnums` name
    static (non-tensor) arguments, passed first to the rule: `f_jvp(*nondiff, primals, tangents)`.
    Tensors the function closes over (Parameters...) are differentiated by ordinary AD through f.
    """

    def __init__(self, fun: Callable, nondiff_argnums=()):
        if not callable(fun):
            raise located(f"custom_jvp: expected a function, got {type(fun).__name__}")
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = _check_nondiff_argnums(nondiff_argnums, "custom_jvp")
        self.jvp = None
        self._traced = False

    def defjvp(self, jvp: Callable) -> Callable:
        """Set the rule `jvp(*nondiff_args, primals, tangents) -> (primal_out, tangent_out)`."""
        if not callable(jvp):
            raise located(f"custom_jvp {_name(self.fun)}: defjvp expects a function, got {type(jvp).__name__}")
        _check_not_traced(self, "defjvp")
        self.jvp = jvp
        return jvp

    def defjvps(self, *jvps) -> None:
        """One rule per differentiable argument, `jvp_i(tangent_i, primal_out, *primals) -> its
        contribution to the output tangent` (None: the output does not depend on it); the output
        tangent is their sum (JAX's defjvps, without nondiff_argnums)."""
        name = _name(self.fun)
        if self.nondiff_argnums:
            raise located(f"custom_jvp {name}: defjvps does not take nondiff_argnums; use defjvp")
        for k, j in enumerate(jvps):
            if j is not None and not callable(j):
                raise located(f"custom_jvp {name}: defjvps expects functions or None, got "
                                   f"{type(j).__name__} for argument {k}")

        def jvp(primals, tangents):
            if len(primals) != len(jvps):
                raise located(f"custom_jvp {name}: defjvps has {len(jvps)} rule(s), but {name} was called "
                                   f"with {len(primals)} argument(s)")
            out = self(*primals)
            total = None
            for j, t in zip(jvps, tangents):
                if j is None:
                    continue
                part = j(t, out, *primals)
                total = part if total is None else pytree.tree_map(ops.add, total, part)
            if total is None:
                total = pytree.tree_map(lambda o: _zeros(_ttype(o)), out)
            return out, total
        self.defjvp(jvp)

    def __call__(self, *args, **kwargs):
        name = _name(self.fun)
        if self.jvp is None:
            raise located(f"custom_jvp function {name} has no jvp rule: define one with @{name}.defjvp")
        args = _resolve_args(self.fun, args, kwargs, "custom_jvp")
        if _run_plainly(self):
            return self.fun(*args)
        nd, dpos, leaves, td, types, ndv, numbers, weak = _split_call(self, args, "custom_jvp", name)
        n = len(leaves)
        fl = _float_pos(types)
        g_f, otd, caps_f = _trace_fun(self, nd, dpos, td, types, name, numbers, weak)
        outs = list(g_f.out_types)

        def flat_jvp(*ls):
            # integer arguments get zero tangents of their dtype (JAX's float0)
            tl = [None if types[k].dtype.is_inexact else _zeros(types[k]) for k in range(n)]
            for k, t in zip(fl, ls[n:]):
                tl[k] = weak_again(t, weak[k]) if k in weak else t  # (a weak number's tangent: weak too)
            primals = pytree.unflatten(td, _with_numbers(weak_again_at(ls[:n], weak), numbers))
            tangents = pytree.unflatten(td, _with_numbers(tl, numbers, zero=True))
            _check_arity(self.jvp, len(ndv) + 2, f"custom_jvp {name}", "the jvp rule",
                         "jvp(*nondiff_args, primals, tangents)")
            out = self.jvp(*ndv, primals, tangents)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise located(f"custom_jvp {name}: the jvp rule must return a pair (primal_out, tangent_out), "
                              f"got {type(out).__name__}", ("the jvp rule", self.jvp))
            p_out, t_out = out
            p_leaves, p_td = pytree.flatten(p_out)
            if p_td != otd:
                raise located(f"custom_jvp {name}: the jvp rule's primal output has the structure {p_td!r}, "
                              f"but {name} returns {otd!r}", ("the jvp rule", self.jvp))
            return list(p_leaves) + _as_cotangents(t_out, otd, outs, f"custom_jvp {name}: the jvp rule's tangent output",
                                                 ("the jvp rule", self.jvp))

        with _in_rule(self):
            g_j, _, caps_j = trace_to_graph(flat_jvp, types + [types[k] for k in fl], name=f"{name}_jvp")
        m = len(outs)
        if list(g_j.out_types[:m]) != outs:
            raise located(f"custom_jvp {name}: the jvp rule's primal output has the types "
                          f"{_types_str(g_j.out_types[:m])}, but {name} returns {_types_str(outs)}", ("the jvp rule", self.jvp))
        fo = _float_pos(outs)
        g_j = R.outputs_subset(g_j, list(range(m)) + [m + j for j in fo])
        caps, (gf, gj) = _regions_with_caps([(g_f, n, caps_f), (g_j, n + len(fl), caps_j)])
        self._traced = True
        res = custom_jvp_call.bind(*caps, *leaves, body=gf, jvp=gj, n_caps=len(caps))
        return pytree.unflatten(otd, list(res))


class custom_vjp:
    """A function with a user-defined reverse-mode derivative (JAX's `jax.custom_vjp`).

        @gd.custom_vjp
        def f(x): ...
        def f_fwd(x): return f(x), residuals     # residuals: any pytree (tensors and Python values)
        def f_bwd(residuals, g):                 # g: a cotangent of f's output
            return (cotangent_x,)                # one per positional argument (None = zero)
        f.defvjp(f_fwd, f_bwd)

    Every transformation uses the rule: grad/vjp/jacrev call fwd and bwd, vmap batches them, and
    higher orders differentiate them. Unlike JAX, jvp/jacfwd work too: bwd is linear in the
    cotangent, and its transpose gives J v. `nondiff_argnums` name static (non-tensor) arguments:
    fwd gets every argument, bwd gets them first: `f_bwd(*nondiff, residuals, g)`, and returns
    cotangents for the other arguments only. Tensors the function closes over (Parameters...)
    are differentiated by ordinary AD through f.
    """

    def __init__(self, fun: Callable, nondiff_argnums=()):
        if not callable(fun):
            raise located(f"custom_vjp: expected a function, got {type(fun).__name__}")
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = _check_nondiff_argnums(nondiff_argnums, "custom_vjp")
        self.fwd = None
        self.bwd = None
        self._traced = False

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        """Set the rules `fwd(*args) -> (out, residuals)` and `bwd(*nondiff, residuals, g) -> cotangents`."""
        for what, f in (("fwd", fwd), ("bwd", bwd)):
            if not callable(f):
                raise located(f"custom_vjp {_name(self.fun)}: defvjp expects functions, got {type(f).__name__} "
                                   f"as {what}")
        _check_not_traced(self, "defvjp")
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args, **kwargs):
        name = _name(self.fun)
        if self.fwd is None:
            raise located(f"custom_vjp function {name} has no rule: define one with {name}.defvjp(fwd, bwd)")
        args = _resolve_args(self.fun, args, kwargs, "custom_vjp")
        if _run_plainly(self):
            return self.fun(*args)
        nd, dpos, leaves, td, types, ndv, numbers, weak = _split_call(self, args, "custom_vjp", name)
        n = len(leaves)
        g_f, otd, caps_f = _trace_fun(self, nd, dpos, td, types, name, numbers, weak)
        outs = list(g_f.out_types)
        m = len(outs)
        fo = _float_pos(outs)
        res_td = []

        def flat_fwd(*ls):
            args = _merge(nd, dpos, pytree.unflatten(td, _with_numbers(weak_again_at(ls, weak), numbers)))
            _check_arity(self.fwd, len(args), f"custom_vjp {name}", "fwd", "fwd(*args)")
            out = self.fwd(*args)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise located(f"custom_vjp {name}: fwd must return a pair (output, residuals), got "
                              f"{type(out).__name__}", ("fwd", self.fwd))
            p_leaves, p_td = pytree.flatten(out[0])
            if p_td != otd:
                raise located(f"custom_vjp {name}: fwd's output has the structure {p_td!r}, but {name} returns "
                              f"{otd!r}", ("fwd", self.fwd))
            # tensors (and arrays) are the residuals; other leaves (a shape, a flag) stay Python values
            r_all, r_td = pytree.flatten(out[1])
            static = {k: v for k, v in enumerate(r_all) if not isinstance(v, (TensorMethods, np.ndarray))}
            # a weak number (jit's) is kept as its exact value and is weak again in bwd
            r_weak = {k: v for k, v in enumerate(r_all) if type(v) is WeakTracer}
            r_leaves, _ = _leaves([v.weak_src if k in r_weak else v for k, v in enumerate(r_all) if k not in static],
                                  f"custom_vjp {name}: fwd's residuals", ("fwd", self.fwd))
            res_td.append((r_td, static, r_weak))
            return list(p_leaves) + r_leaves

        with _in_rule(self):
            g_w, _, caps_w = trace_to_graph(flat_fwd, types, name=f"{name}_fwd")
        if list(g_w.out_types[:m]) != outs:
            raise located(f"custom_vjp {name}: fwd's output has the types {_types_str(g_w.out_types[:m])}, but "
                          f"{name} returns {_types_str(outs)}", ("fwd", self.fwd))
        r_td, r_static, r_weak = res_td[0]
        r_types = list(g_w.out_types[m:])
        arg_tds = list(td.children)  # one per differentiable positional argument
        fl = _float_pos(types)
        every_at = [k for k in range(len(types) + len(numbers)) if k not in numbers]  # tensor leaf -> leaf
        loose = {every_at[k] for k in weak}

        def flat_bwd(*ls):
            tensors = iter(ls[:len(r_types)])
            resid = pytree.unflatten(r_td, [r_static[k] if k in r_static else
                                            weak_again(next(tensors), r_weak[k]) if k in r_weak else next(tensors)
                                            for k in range(r_td.num_leaves)])
            # integer outputs get zero cotangents of their dtype (JAX's float0)
            cl = [None if t.dtype.is_inexact else _zeros(t) for t in outs]
            for j, c in zip(fo, ls[len(r_types):]):
                cl[j] = c
            _check_arity(self.bwd, len(ndv) + 2, f"custom_vjp {name}", "bwd", "bwd(*nondiff_args, residuals, g)")
            try:
                out = self.bwd(*ndv, resid, pytree.unflatten(otd, cl))
            except TraceError as e:
                if "escaped" not in str(e) or not r_static:
                    raise
                # a residual that is not a tensor (a function gd.vjp returned, an object holding
                # tensors) carries fwd's traced values into bwd, which is traced on its own
                kinds = sorted({type(v).__name__ for v in r_static.values()})
                raise located(f"custom_vjp {name}: bwd used a traced value of fwd through a residual that "
                              f"is not a tensor ({', '.join(kinds)}): residuals reach bwd as tensors, while "
                              f"other values pass as they are, holding fwd's values (a function from gd.vjp "
                              f"does); return the tensors it needs as residuals instead ({e})",
                              ("bwd", self.bwd)) from None
            if isinstance(out, list):
                out = tuple(out)
            if not isinstance(out, tuple) or len(out) != len(arg_tds):
                got = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
                raise located(f"custom_vjp {name}: bwd must return a tuple with one cotangent per "
                                   f"differentiable positional argument ({len(arg_tds)}), got {got}", ("bwd", self.bwd))
            # (a Python number's cotangent, whatever bwd gives, goes nowhere: None in its place)
            cts = _as_cotangents(out, td, _with_numbers(types, {k: None for k in numbers}),
                                 f"custom_vjp {name}: bwd", ("bwd", self.bwd), loose)
            cts = [c for k, c in enumerate(cts) if k not in numbers]
            return [cts[k] for k in fl]

        with _in_rule(self):
            g_b, _, caps_b = trace_to_graph(flat_bwd, r_types + [outs[j] for j in fo], name=f"{name}_bwd")
        caps, (gf, gw, gb) = _regions_with_caps([(g_f, n, caps_f), (g_w, n, caps_w),
                                                 (g_b, len(r_types) + len(fo), caps_b)])
        self._traced = True
        res = custom_vjp_call.bind(*caps, *leaves, body=gf, fwd=gw, bwd=gb, n_caps=len(caps))
        return pytree.unflatten(otd, list(res))


def call_cell_with_bprop(cell, args, kwargs):
    """`cell(*args, **kwargs)` for a Cell whose class defines MindSpore's `bprop`.

    The call goes through custom_vjp: fwd = construct (residuals: the inputs and the output),
    bwd = `cell.bprop(*inputs, out, dout)`, which returns one gradient per input. Parameters the
    cell reads are not inputs: their gradients come from ordinary AD through construct.
    """
    if not is_tracing():
        return cell.construct(*args, **kwargs)
    label = f"{type(cell).__name__}.bprop"

    def fun(*a):
        return cell.construct(*a, **kwargs)
    fun.__name__ = type(cell).__name__

    def fwd(*a):
        out = cell.construct(*a, **kwargs)
        return out, (a, out)

    def bwd(res, dout):
        a, out = res
        try:
            inspect.signature(cell.bprop).bind(*a, out, dout)
        except TypeError as e:
            raise located(f"{label} takes the cell's {len(a)} input(s), then out and dout (MindSpore's "
                          f"bprop(self, *inputs, out, dout)): {e}", ("bprop", type(cell).bprop)) from None
        except ValueError:  # (a callable without a signature: let the call say)
            pass
        g = cell.bprop(*a, out, dout)
        if not isinstance(g, (tuple, list)):
            if len(a) != 1:
                raise located(f"{label} must return a tuple with one gradient per input ({len(a)}), got a "
                              f"{type(g).__name__}", ("bprop", type(cell).bprop))
            g = (g,)
        if len(g) != len(a):
            raise located(f"{label} returned {len(g)} gradient(s) for {len(a)} input(s); it must return one "
                          f"per input", ("bprop", type(cell).bprop))
        return tuple(g)

    f = custom_vjp(fun)
    f._nest_owner = cell
    f.defvjp(fwd, bwd)
    return f(*args)


# ---------------------------------------------------------------- before lowering


def inline_custom_calls(graph: Graph) -> Graph:
    """`graph` with every custom_jvp_call / custom_vjp_call node replaced by its function's region
    (recursively: custom calls inside it too); `graph` itself when it has none.

    Once the transformations are done the rules mean nothing more. The runtime inlines these
    before its optimisation passes (unlike checkpoint's regions, whose recomputation must stay),
    so that cse merges the function with the copy of it that a vjp rule recomputed for its
    residuals (value_and_grad computed the forward pass twice otherwise).
    """
    from ..passes.inline import inline_nodes
    kinds = (custom_jvp_call, custom_vjp_call)
    return inline_nodes(graph, lambda n: n.prim in kinds)
