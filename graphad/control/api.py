"""The user's control-flow functions: cond, switch, while_loop, fori_loop and scan (JAX's names).

Each traces the user's Python functions once into closed regions (the values they close over
become explicit operands) and binds one control-flow primitive (graphad/control/prims.py), so a
loop is one node whatever its trip count, and every transformation (grad, jacfwd, vmap, jit)
goes through it. Operands and carries are pytrees of tensors; Python numbers become tensors.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .. import dtypes as dt
from .. import pytree
from ..errors import GraphadError
from ..ir.core import Graph, TensorType
from ..prims import lax as ops
from ..prims.lax.core import _cast_operand
from ..prims.trace import check_numbers, exact_numbers, is_weak_number, trace_to_graph, user_loc, weak_again_at
from ..tensor import TensorMethods
from . import prims as P


def located(msg: str, rule=None) -> GraphadError:
    """A GraphadError whose message ends with the user's `file:line` (the innermost frame outside
    graphad: the call of gd.scan, gd.cond... or of a custom function) and, for a mistake in a
    user's rule (`rule` = (its name, the function)), where that rule is defined."""
    loc = user_loc()
    where = [str(loc)] if loc and f"(at {loc})" not in msg else []  # (not twice: a wrapped op's error)
    code = getattr(rule[1], "__code__", None) if rule is not None else None
    from ..prims.trace import _PKG_DIR
    if code is not None and not code.co_filename.startswith(_PKG_DIR):  # (not defjvps' own wrapper)
        from ..ir.core import Loc
        where.append(f"{rule[0]} at {Loc(_short_path(code.co_filename), code.co_firstlineno)}")
    return GraphadError(f"{msg} (at {'; '.join(where)})" if where else msg)


def _short_path(path: str) -> str:
    from ..prims.trace import _short_path as short
    return short(path)


def _leaves(tree, what: str, rule=None):
    leaves, td = pytree.flatten(tree)
    out = []
    for i, x in enumerate(leaves):
        try:
            out.append(ops.as_tensor(x))
        except Exception as e:  # noqa: BLE001 -- re-raised with the position named
            raise located(f"{what}: leaf {i} ({type(x).__name__}) is not a tensor or number: {e}", rule) from None
    return out, td


def _is_weak(x) -> bool:
    """Whether `x` is a weakly typed number (JAX's weak types): a Python int, float or complex
    (not a bool), or one that an enclosing jit traces weakly typed (prims.trace.WeakTracer)."""
    return is_weak_number(x) or getattr(x, "weak_src", None) is not None


def _weak_kind(x):
    """The dtype holding the weak number `x` exactly (int64, float64, complex128), for _weak_to."""
    return x.weak_src.dtype if isinstance(x, TensorMethods) else dt.scalar_dtype(x)


def _weak_as(x, d):
    """The weak number `x` as a tensor of dtype `d`, from its exact value: 0.1 as a float64 carry
    is 0.1 itself, not 0.1 rounded to float32 and widened."""
    if isinstance(x, TensorMethods):
        return _cast_operand(x, d)  # (a cast to a narrower int is checked at the jit's call)
    return ops.as_tensor(x, d)


def _weak(tree) -> list[bool]:
    """Which leaves of `tree` are weakly typed numbers (_is_weak). As a loop's initial carry or a
    branch's result, such a value takes the dtype the loop body or the other branch gives it
    (`scan(f, 0.0, float64_xs)` carries float64), as in JAX."""
    return [_is_weak(x) for x in pytree.flatten(tree)[0]]


def _promoted(leaves, originals, weak, want):
    """`leaves` (the tensors of the leaves `originals`) with each weak leaf whose dtype differs
    from its counterpart's in the TensorTypes `want` (same shape; a float scalar only to a float,
    an int to an int or float) made that dtype from its exact value; None when none changes."""
    out, changed = list(leaves), False
    for k, (x, o, w, t) in enumerate(zip(leaves, originals, weak, want)):
        if _promotes(x, o, w, t):
            out[k] = _weak_as(o, t.dtype)
            changed = True
    return out if changed else None


def _promotes(x, original, weak: bool, t: TensorType) -> bool:
    """Whether _promoted changes the leaf `x` (made from `original`, weak or not) to the type `t`."""
    return weak and tuple(x.shape) == t.shape and x.dtype != t.dtype and _weak_to(_weak_kind(original), t.dtype)


def _numbers_as_carry(out, carry):
    """A loop body's new carry `out` with each weakly typed number (_is_weak) in the place of a
    scalar carry leaf made a tensor of that leaf's dtype, where the dtype can take it (a float for
    a float carry, an int for an int or float one): JAX's weak typing of a body's results
    (`scan(lambda c, _: (0.0, None), float64_c, length=2)` carries float64). The numbers were
    float32 / int64 constants, refused as not the carry's type."""
    leaves, otd = pytree.flatten(out)
    if not any(_is_weak(x) for x in leaves):
        return out
    cleaves, ctd = pytree.flatten(carry)
    if otd != ctd:
        return out  # the structure check says what is wrong
    new = []
    for x, c in zip(leaves, cleaves):
        if (_is_weak(x) and isinstance(c, TensorMethods) and tuple(c.shape) == ()
                and _weak_to(_weak_kind(x), c.dtype)):
            x = _weak_as(x, c.dtype)
        new.append(x)
    return pytree.unflatten(otd, new)


def _weak_to(src, dst) -> bool:
    """Whether a weak number of dtype `src`'s kind takes the dtype `dst` (a float a float or
    complex one, an int any number type, a complex only a complex one), as JAX's weak types."""
    if dst.is_bool:
        return False
    if src.is_complex:
        return dst.is_complex
    return dst.is_inexact if src.is_float else (dst.is_int or dst.is_inexact)


def _types(xs) -> list[TensorType]:
    return [TensorType(tuple(x.shape), x.dtype) for x in xs]


def _types_str(ts) -> str:
    return "(" + ", ".join(str(t) for t in ts) + ")"


def _trace(fn: Callable, in_types, wrap, name: str):
    """Trace fn into a graph: (graph with inputs = the arguments then the captures, out treedef,
    capture objects). `wrap(leaf_tracers)` rebuilds fn's positional arguments."""
    if not callable(fn):
        raise located(f"{name}: expected a function, got {type(fn).__name__}")
    return trace_to_graph(lambda *leaves: fn(*wrap(list(leaves))), list(in_types), name=name)


def _captures_first(g: Graph, n_args: int) -> Graph:
    """The same graph with its captured inputs moved in front of its n_args arguments."""
    return Graph(g.name, g.inputs[n_args:] + g.inputs[:n_args], g.nodes, g.outputs,
                 g.input_names[n_args:] + g.input_names[:n_args])


def _with_extra_inputs(g: Graph, n_args: int, own: list, all_caps: list) -> Graph:
    """g (inputs: arguments, then its own captures) taking the arguments followed by every
    capture in all_caps (objects, by identity); the ones it does not read are unused inputs."""
    from ..ir.core import Value
    pos = {id(c): i for i, c in enumerate(own)}
    inputs = list(g.inputs[:n_args])
    names = list(g.input_names[:n_args])
    for k, c in enumerate(all_caps):
        i = pos.get(id(c))
        if i is not None:
            inputs.append(g.inputs[n_args + i])
            names.append(g.input_names[n_args + i])
        else:
            inputs.append(Value(TensorType(tuple(c.shape), c.dtype), None, 0, f"unused{k}"))
            names.append(f"unused{k}")
    return Graph(g.name, inputs, g.nodes, g.outputs, names)


def _union(lists) -> list:
    seen, out = set(), []
    for lst in lists:
        for c in lst:
            if id(c) not in seen:
                seen.add(id(c))
                out.append(c)
    return out


# ---------------------------------------------------------------- cond / switch


def switch(index, branches: Sequence[Callable], *operands):
    """Apply `branches[index](*operands)`; index is clamped to [0, len(branches) - 1] (as JAX).

    Only the chosen branch runs (under vmap with a batched index every branch runs and the
    results are selected per example). All branches must return the same structure and types.
    """
    if not isinstance(branches, (list, tuple)) or not branches:
        raise located(f"switch: branches must be a non-empty list of functions, got {type(branches).__name__}")
    return _switch(index, list(branches), operands, "switch")


def cond(pred, true_fn: Callable, false_fn: Callable, *operands):
    """`true_fn(*operands)` if the scalar `pred` is true, else `false_fn(*operands)`; only that
    branch runs. Both must return the same structure and types. An integer `pred` is true when it
    is nonzero (as Python's `if` and JAX's `cond`: -1 is true)."""
    p = ops.as_tensor(pred)
    if tuple(p.shape) == () and p.dtype.is_int:
        # (not the switch's clamp: clip(-1, 0, 1) would choose false_fn)
        pred = ops.not_equal(p, ops.constant(0, p.dtype))
    return _switch(pred, [false_fn, true_fn], operands, "cond")


def _switch(index, branches, operands, what):
    idx = ops.as_tensor(index)
    if tuple(idx.shape) != ():
        raise located(f"{what}: the {'predicate' if what == 'cond' else 'index'} must be a scalar, got shape "
                           f"{tuple(idx.shape)}; for one decision per element use ops.where, or gd.vmap over "
                           f"the {what}")
    if idx.dtype.is_float:
        raise located(f"{what}: the {'predicate' if what == 'cond' else 'index'} must be a bool or integer "
                           f"scalar, got {idx.dtype.name}")
    idx = ops.astype(idx, dt.int32) if idx.dtype is not dt.int32 else idx
    # a Python number operand (a jit's too) is its exact value, weakly typed in the branches (as a
    # closure's): it was a float32 tensor, and `t * s` of a float64 t got 0.1 rounded
    raw, rtd = pytree.flatten(list(operands))
    outer = exact_numbers(raw)
    leaves, td = _leaves(pytree.unflatten(rtd, raw), f"{what} operands")
    in_types = _types(leaves)
    traced, weak = [], []
    for k, b in enumerate(branches):
        label = (["false_fn", "true_fn"][k] if what == "cond" else f"branch {k}")
        g, otd, caps, w = _trace_branch(b, in_types, td, f"{what}_{k}", outer=outer)
        traced.append((label, g, otd, caps))
        weak.append(w)
    if len({otd for _, _, otd, _ in traced}) == 1:
        # a branch's Python number takes the dtype the other branches give that result (JAX's
        # weak types): `cond(p, lambda x: 1.0, lambda x: x, float64_x)`
        n_out = len(traced[0][1].out_types)
        want = []
        for j in range(n_out):
            strong = {g.out_types[j] for (_, g, _, _), w in zip(traced, weak) if not w[j]}
            want.append(strong.pop() if len(strong) == 1 else None)
        for k, ((label, g, otd, caps), w) in enumerate(zip(traced, weak)):
            cast = {j: t.dtype for j, t in enumerate(want) if t is not None and w[j] and g.out_types[j] != t
                    and g.out_types[j].shape == t.shape and _weak_to(g.out_types[j].dtype, t.dtype)}
            if cast:
                g, otd, caps, _ = _trace_branch(branches[k], in_types, td, f"{what}_{k}", cast, outer)
                traced[k] = (label, g, otd, caps)
    check_numbers(leaves, outer, f"{what}: an operand")
    label0, g0, td0, _ = traced[0]
    for label, g, otd, _ in traced[1:]:
        if otd != td0 or g.out_types != g0.out_types:
            raise located(f"{what}: {label} returns {otd} of {_types_str(g.out_types)}, but {label0} returns "
                               f"{td0} of {_types_str(g0.out_types)}; every branch must return the same "
                               f"structure, shapes and dtypes")
    caps = _union([c for _, _, _, c in traced])
    n = len(leaves)
    gs = tuple(_with_extra_inputs(g, n, c, caps) for _, g, _, c in traced)
    outs = P.cond.bind(idx, *leaves, *caps, branches=gs)
    return pytree.unflatten(td0, list(outs))


def _trace_branch(b, in_types, td, name, cast=None, outer=None):
    """(graph, out treedef, captures, which results were Python numbers) of a branch traced at
    `in_types`; `cast`: {result leaf: dtype} to cast those results to (weak-type promotion);
    `outer`: the operands that are weak numbers (prims.trace.exact_numbers)."""
    weak: list[bool] = []

    def run(*args):
        out = b(*args)
        weak[:] = _weak(out)
        if cast:
            leaves, otd = pytree.flatten(out)
            out = pytree.unflatten(otd, [_weak_as(x, cast[j]) if j in cast else x for j, x in enumerate(leaves)])
        return out
    def wrap(ls):
        return pytree.unflatten(td, weak_again_at(ls, outer or {}))
    g, otd, caps = _trace(run, in_types, wrap, name) if callable(b) else _trace(b, in_types, wrap, name)
    return g, otd, caps, weak


# ---------------------------------------------------------------- while_loop / fori_loop


def while_loop(cond_fun: Callable, body_fun: Callable, init_val, max_steps: int | None = None):
    """`val = init_val; while cond_fun(val): val = body_fun(val); return val` as one loop node.

    cond_fun returns a bool scalar; body_fun returns a value of init_val's structure and types.
    `max_steps` bounds the trip count: the loop stops after that many steps even if cond_fun is
    still true (TensorFlow's maximum_iterations), and reverse-mode differentiation needs it (the
    tape that holds every step's carry has max_steps rows). Forward mode and vmap need no bound.
    """
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0):
        raise located(f"while_loop: max_steps must be a non-negative int or None, got {max_steps!r}")
    return bounded_while(cond_fun, body_fun, init_val, lambda: max_steps)


def bounded_while(cond_fun: Callable, body_fun: Callable, init_val, bound: Callable[[], int | None]):
    """while_loop whose max_steps is `bound()`, asked after cond_fun and body_fun are traced: graph
    mode's converted loops (frontend/autograph.py) learn their bound from a
    `gd.set_loop_options(max_steps=...)` call inside the body, which runs while the body is traced."""
    leaves, td = _leaves(init_val, "while_loop init_val")
    originals, weak = pytree.flatten(init_val)[0], _weak(init_val)
    n = len(leaves)
    for _ in range(2):  # a second time with weakly typed carries promoted to the body's dtypes
        types = _types(leaves)
        gc, ctd, ccaps = _trace(cond_fun, types, lambda ls: (pytree.unflatten(td, ls),), "while_cond")
        if len(gc.outputs) != 1 or gc.out_types[0] != TensorType((), dt.bool_) or ctd.kind != "leaf":
            got = _types_str(gc.out_types) if ctd.kind == "leaf" else f"{ctd} of {_types_str(gc.out_types)}"
            raise located(f"while_loop: cond_fun must return one bool scalar, got {got}")
        gb, btd, bcaps = _trace(lambda v: _numbers_as_carry(body_fun(v), v), types,
                                lambda ls: (pytree.unflatten(td, ls),), "while_body")
        promoted = _promoted(leaves, originals, weak, gb.out_types) if btd == td else None
        if promoted is None:
            break
        leaves = promoted
    _check_carry("while_loop: body_fun", td, types, btd, gb.out_types)
    max_steps = bound()
    outs = P.while_loop.bind(*ccaps, *bcaps, *leaves, cond=_captures_first(gc, n), body=_captures_first(gb, n),
                             n_cond=len(ccaps), n_body=len(bcaps), max_steps=max_steps)
    return pytree.unflatten(td, list(outs))


def loop_bound(b, what: str):
    """A loop bound (a Python int, an integer scalar tensor, jit's int) as an int32 scalar, or an
    int64 one for an int64 (or unsigned 32/64-bit) tensor; the counter takes the bounds' dtype. A
    jit int beyond int32 is refused when the jit is called (IntegerOverflowError, as eagerly). A
    float or a bool is refused, as Python's range refuses it (a jit float bound of 2.5 ran 2 steps,
    1e300 or NaN none)."""
    src = getattr(b, "weak_src", None)
    t = src if src is not None else ops.as_tensor(b)
    if isinstance(b, bool) or not t.dtype.is_int or tuple(t.shape) != ():
        got = (f"a {'float' if src.dtype.kind == 'f' else 'number'} that gd.jit traces (a Python number passed "
               f"to it; a static_argnums argument stays a Python value)" if src is not None else
               repr(b) if not isinstance(b, TensorMethods) else f"a {t.dtype.name} tensor of shape {tuple(t.shape)}")
        raise located(f"{what} must be an integer (a Python int or an integer scalar tensor), got {got}")
    if src is not None:
        # a Python int (jit's): int32, checked when the jit is called, as eager arithmetic refuses it
        return _cast_operand(b, dt.int32)
    if t.dtype is dt.int64 or t.dtype.np.kind == "u" and t.dtype.np.itemsize >= 4:
        # an int64 bound keeps its dtype, and the counter takes it (as JAX's fori_loop follows its
        # bounds): cast to int32 it wrapped (2**32 + 2 ran 2 steps), clamped two bounds beyond
        # int32 became equal (a loop of no steps)
        return ops.astype(ops.clip(t, 0, 2 ** 63 - 1), dt.int64) if t.dtype.np.kind == "u" else t
    return ops.astype(t, dt.int32) if t.dtype is not dt.int32 else t


def loop_bounds(lower, upper, what: str):
    """(lower, upper) as loop_bound makes them, of one dtype: int64 if either is int64."""
    lo, hi = loop_bound(lower, f"{what} lower bound"), loop_bound(upper, f"{what} upper bound")
    if lo.dtype is not hi.dtype:
        lo, hi = (x if x.dtype is dt.int64 else ops.astype(x, dt.int64) for x in (lo, hi))
    return lo, hi


def _check_carry(what, td, types, out_td, out_types):
    if out_td != td or list(out_types) != list(types):
        raise located(f"{what} must return the carry's structure and types {td} of {_types_str(types)}, "
                           f"got {out_td} of {_types_str(out_types)}")


def _check_unroll(unroll, what: str) -> None:
    if unroll is None or isinstance(unroll, bool):
        return
    if not isinstance(unroll, int) or unroll < 0:  # (JAX takes 0, as no unrolling)
        raise located(f"{what}: unroll must be a bool or a non-negative int, got {unroll!r}")


def fori_loop(lower, upper, body_fun: Callable, init_val, max_steps: int | None = None, *, unroll=None):
    """`val = init_val; for i in range(lower, upper): val = body_fun(i, val); return val`.

    With Python int bounds the loop is a `scan` of upper - lower steps (reverse mode needs no
    bound); with tensor bounds it is a `while_loop` (pass max_steps for reverse mode). `i` is an
    int32 scalar tensor, or int64 when a bound is an int64 tensor (as JAX's follows its bounds); a
    float bound is refused, as Python's range refuses it. `unroll` (JAX's) is accepted and checked,
    and changes nothing: how a loop is unrolled is the compiler's choice, and the results are the same.
    """
    _check_unroll(unroll, "fori_loop")
    init_leaves, init_td = _leaves(init_val, "fori_loop init_val")
    init_originals, init_weak = pytree.flatten(init_val)[0], _weak(init_val)

    def checked(i, val):
        # the carry's own structure, named as the user wrote it (not the scan's (i, val) pair);
        # a weakly typed carry the body changes the dtype of is left to the loop to promote
        new = _numbers_as_carry(body_fun(i, val), val)
        new_leaves, new_td = _leaves(new, "fori_loop: body_fun's result")
        val_leaves = _leaves(val, "fori_loop carry")[0]
        want, got = _types(val_leaves), _types(new_leaves)
        if new_td == init_td:
            want = [t if _promotes(x, o, w, t) else v
                    for x, o, w, t, v in zip(val_leaves, init_originals, init_weak, got, want)]
        _check_carry("fori_loop: body_fun", init_td, want, new_td, got)
        return new
    static = all(isinstance(b, int) and not isinstance(b, bool) for b in (lower, upper))
    if static:
        length = max(0, upper - lower)

        def step(carry, _):
            i, val = carry
            new = checked(i, val)
            return (ops.add(i, ops.constant(1, dt.int32)), new), None

        (_, val), _ = scan(step, (ops.constant(lower, dt.int32), init_val), None, length=length)
        return val
    lo, hi = loop_bounds(lower, upper, "fori_loop: the")  # (a bool or float bound refused here)

    def c(carry):
        return ops.less(carry[0], hi)

    def b(carry):
        i, val = carry
        return ops.add(i, ops.constant(1, lo.dtype)), checked(i, val)

    return while_loop(c, b, (lo, init_val), max_steps=max_steps)[1]


# ---------------------------------------------------------------- scan


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False, unroll=1):
    """`carry = init; for x in xs: carry, y = f(carry, x)`; returns (carry, ys stacked).

    xs is a pytree of tensors sharing a leading axis (or None with `length`); y may be any
    pytree of tensors (or None). With reverse=True the steps run from the last slice to the
    first and ys keep xs's order. One node whatever the length. `unroll` (JAX's) is accepted
    and checked, and changes nothing: how a loop is unrolled is the compiler's choice.
    """
    _check_unroll(unroll, "scan")
    cleaves, ctd = _leaves(init, "scan init")
    xleaves, xtd = _leaves(xs, "scan xs") if xs is not None else ([], pytree.flatten(None)[1])
    lens = {int(x.shape[0]) for x in xleaves if len(x.shape)}
    if any(len(x.shape) == 0 for x in xleaves):
        raise located("scan: every leaf of xs needs a leading axis to scan over (got a scalar)")
    if length is not None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise located(f"scan: length must be a non-negative int, got {length!r}")
        lens.add(length)
    if len(lens) != 1:
        raise located(f"scan: the leaves of xs must share their leading axis{' with length' if length is not None else ''}; "
                           f"got lengths {sorted(lens)}" if lens else "scan: give xs or length")
    n_steps = lens.pop()
    if not isinstance(reverse, bool):
        raise located(f"scan: reverse must be a bool, got {reverse!r}")
    ctypes = _types(cleaves)
    stypes = [TensorType(tuple(x.shape[1:]), x.dtype) for x in xleaves]
    nc = len(cleaves)

    def wrap(ls):
        return (pytree.unflatten(ctd, ls[:nc]), pytree.unflatten(xtd, ls[nc:]) if xs is not None else None)

    originals, weak = pytree.flatten(init)[0], _weak(init)
    for _ in range(2):  # a second time with weakly typed carries promoted to the body's dtypes
        g, otd, caps = _trace(_pair(f), ctypes + stypes, wrap, "scan_body")
        if otd.kind != "tuple" or len(otd.children) != 2:
            raise located(f"scan: f must return a pair (carry, y), got {otd}")
        carry_td, y_td = otd.children
        promoted = _promoted(cleaves, originals, weak, g.out_types[:nc]) if carry_td == ctd else None
        if promoted is None:
            break
        cleaves = promoted
        ctypes = _types(cleaves)
    _check_carry("scan: f", ctd, ctypes, carry_td, g.out_types[:nc])
    outs = P.scan.bind(*caps, *cleaves, *xleaves, body=_captures_first(g, nc + len(xleaves)), n_consts=len(caps),
                       n_carry=nc, length=n_steps, reverse=bool(reverse))
    return pytree.unflatten(ctd, list(outs[:nc])), pytree.unflatten(y_td, list(outs[nc:]))


def _pair(f):
    def g(carry, x):
        out = f(carry, x)
        if not isinstance(out, tuple) or len(out) != 2:
            raise located(f"scan: f must return a pair (carry, y), got {type(out).__name__}")
        out = (_numbers_as_carry(out[0], carry), out[1])
        _leaves(out[1], "scan: f's y")  # (a leaf that is not a tensor, named here)
        return out
    return g
