"""The functional transformations (MindSpore's functional AD API, with torch.func's spellings as
aliases): grad, value_and_grad, vjp, jvp, jacrev, jacfwd, hessian, vmap, jit and make_graph.

Every transformation is a GraphFunction whose implementation traces the user's function into a
graph, applies a Graph -> Graph pass (reverse-ad, forward-ad, vmap) and inlines the result into
the enclosing trace. Nesting therefore needs no special case: grad(grad(f)) is the reverse pass
applied to a graph that already contains the output of the reverse pass.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from . import dtypes as dt
from . import pytree
from .errors import GraphadError, TransformError
from .frontend.function import (GraphFunction, IdentityKey, describe_arg, flatten_call, fn_key, is_array_leaf,
                                WeakNumber, keyword_statics, leaf_to_tensor, param_names, passes_through,
                                split_call, static_key)
from .frontend.trace import inline_graph, trace_to_graph
from .frontend import autograph as _autograph
from .ir.core import Graph, TensorType
from .passes.forward_ad import jvp_graph
from .control.merge import vjp_merged
from .passes.vmap import batch_graph
from .prims.trace import NumberView, WeakTracer, check_numbers, weak_again_at
from .tensor import Tensor, TensorMethods



# gd.set_loop_options: the bound of a Python loop graph mode converts (frontend/autograph.py)
set_loop_options = _autograph.set_loop_options


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


# default of the torch-style aliases (argnums, in_dims, out_dims): None is a meaningful value for
# them (no input gradients, an unmapped input/output), so "not given" needs its own marker
_UNSET = object()


class _DefaultZero(int):
    """The default 0 of grad_position, in_axes and out_axes: an int 0 that `_alias` can tell from
    an explicit 0 (`grad(f, 0, argnums=1)` gives both names; it used argnums silently)."""

    def __repr__(self):  # (the signature in help() and docs/api.md reads `grad_position=0`)
        return "0"


_ZERO = _DefaultZero(0)


def _where() -> str:
    """` (at file:line)` of the user's frame that called into graphad, or ""."""
    from .prims.trace import at_user
    return at_user()


def _check_callable(fn, fname: str) -> None:
    """Refuse a non-callable `fn` when the transformation is made, not at its first call."""
    if not callable(fn):
        raise TransformError(f"{fname}: expected a callable function to transform, got {fn!r} "
                             f"(of type {type(fn).__name__}){_where()}")


def _alias(fname: str, value, alias, names: str):
    """The value of an option given under its MindSpore name (default `_ZERO`) or its torch alias
    (not both)."""
    if alias is _UNSET:
        return 0 if value is _ZERO else value
    if value is not _ZERO:
        raise TransformError(f"{fname}: {names} are aliases; give one of them{_where()}")
    return alias


def _exact(x):
    """A cache-key form of an option value that keeps its type: 0, 0.0 and True hash and compare
    equal in Python, but they are different options (two are invalid), so a transformation made
    with one must never find the staged graph of another (frontend.function.static_key)."""
    return static_key(x)


def _pos_set(grad_position) -> set:
    if grad_position is None:
        return set()
    if isinstance(grad_position, int):
        return {grad_position}
    return set(grad_position)


def _weights_not_passed(weights, fname: str):
    """A GraphFunction `check` refusing a call that passes one of `weights` as an argument (None
    without weights): weights' gradients are taken through the Parameters the function reads (by
    closure, as a Cell's attributes), so one that reaches it as an argument got zeros, silently,
    where torch gives its gradient (a helper's trial)."""
    from .parameter import Parameter
    from .prims.trace import origin_of
    ws = [weights] if isinstance(weights, Parameter) else list(weights) if isinstance(weights, (list, tuple)) else []
    if not ws:
        return None

    def check(args, kwargs):
        leaves = flatten_call(args, kwargs)[0]
        for i, leaf in enumerate(leaves):
            # under an enclosing trace (gd.jit) the argument is the tracer of the Parameter
            # passed to that function: origin_of says which Parameter it stands for
            if not isinstance(leaf, Parameter):
                leaf = origin_of(leaf)
            if isinstance(leaf, Parameter) and any(leaf is w for w in ws):
                raise TransformError(f"{fname}: the weight {leaf.name!r} is also passed to the function as "
                                     f"{describe_arg(args, kwargs, i)}; weights are differentiated where the "
                                     f"function reads them (by closure, or as a Cell's attribute), so its "
                                     f"gradient would leave that argument out: read it there instead, or "
                                     f"differentiate the argument with grad_position{_where()}")
    return check


def _diff_statics(grad_position):
    """The static-leaf policy of the differentiating transformations (JAX's argnums_partial):
    Python numbers and other non-array values at the positions not differentiated, and in the
    keyword arguments, reach the function as they are (and are part of the cache key); the
    differentiated positions' leaves are tensors (a Python float there becomes one)."""
    pos = _pos_set(grad_position)

    def mask(args, kwargs, leaves, tree):
        out, k = [], 0
        for p, child in enumerate(tree.children[0].children):
            n = child.num_leaves
            if p in pos:
                out.extend([False] * n)
            else:
                out.extend(passes_through(x) for x in leaves[k:k + n])
            k += n
        out.extend(passes_through(x) for x in leaves[k:])
        return out
    return mask


def _call_name(fname: str, fn) -> str:
    return f"{fname}({_name(fn)})"


def _types(leaves) -> list[TensorType]:
    return [TensorType(x.shape, x.dtype) for x in leaves]


def _flat_args(args):
    leaves, tree = pytree.flatten(args)
    return [leaf_to_tensor(x) for x in leaves], tree


def _trace(fn, leaves, tree, name, state: list | None = None, what: str | None = None,
           arg_names: list[str] | None = None):
    """Trace fn on tracers shaped like `leaves` (rebuilt into `tree`); with a `state` list the
    values fn assigns to Parameters are extra outputs (prims/trace.trace_to_graph)."""
    return trace_to_graph(fn, _types(leaves), name=name, arg_names=arg_names,
                          wrap_args=lambda ts: pytree.unflatten(tree, ts), state=state, what=what)


def _leaf_ranges(args) -> list[range]:
    """For each positional argument, the range of its leaves in the flattened argument list."""
    out, start = [], 0
    for a in args:
        n = pytree.flatten(a)[1].num_leaves
        out.append(range(start, start + n))
        start += n
    return out


def _positions(grad_position, nargs: int, fname: str, allow_none: bool = True):
    """Normalise grad_position to (tuple of positions or None, was_int)."""
    if grad_position is None:
        if not allow_none:
            raise TransformError(f"{fname}: grad_position=None is not allowed here{_where()}")
        return None, False
    if isinstance(grad_position, bool) or not isinstance(grad_position, (int, tuple, list)):
        raise TransformError(f"{fname}: grad_position must be an int, a tuple of ints or None, got {grad_position!r} "
                             f"(of type {type(grad_position).__name__}){_where()}")
    single = isinstance(grad_position, int)
    pos = (grad_position,) if single else tuple(grad_position)
    if not pos:
        raise TransformError(f"{fname}: grad_position is an empty tuple{_where()}")
    for p in pos:
        if not isinstance(p, int) or isinstance(p, bool):
            raise TransformError(f"{fname}: grad_position entries must be ints, got {p!r} (of type {type(p).__name__})"
                                 f"{_where()}")
        if p < 0:
            raise TransformError(f"{fname}: negative grad_position {p} (positions count from 0){_where()}")
        if p >= nargs:
            raise TransformError(f"{fname}: grad_position {p} is out of range for a function called with "
                                 f"{nargs} positional argument(s){_where()}")
    if len(set(pos)) != len(pos):
        raise TransformError(f"{fname}: repeated grad_position in {pos}{_where()}")
    return pos, single


def _check_float_inputs(leaves, idxs, fname, position: int, params: list[str] | None = None):
    """Refuse integer or bool inputs among `leaves[idxs]` (argument `position`): as in JAX, a gradient
    is defined for floating-point inputs only (integer zeros would look like an answer)."""
    for k, i in enumerate(idxs):
        if not leaves[i].dtype.is_inexact:
            name = f" ({params[position]!r})" if params and position < len(params) else ""
            leaf = f", leaf {k} of the pytree" if len(idxs) > 1 else ""
            raise TransformError(f"{fname}: cannot differentiate with respect to argument {position}{name}{leaf} "
                                 f"of dtype {leaves[i].dtype.name} (shape {tuple(leaves[i].shape)}); only "
                                 f"floating-point and complex inputs have gradients{_where()}")


def _check_float_weights(ws, fname):
    """Refuse integer or bool Parameters among the weights (their gradient would be integer zeros)."""
    for w in ws or ():
        if not w.dtype.is_inexact:
            raise TransformError(f"{fname}: cannot differentiate with respect to Parameter {w.name!r} of dtype "
                                 f"{w.dtype.name} (shape {tuple(w.shape)}); only floating-point Parameters "
                                 f"have gradients{_where()}")


def _weights_list(weights, fname):
    from .parameter import Parameter, ParameterTuple
    if weights is None:
        return None, None
    if isinstance(weights, Parameter):
        return [weights], "single"
    if isinstance(weights, (list, tuple, ParameterTuple)):
        ws = list(weights)
        for w in ws:
            if not isinstance(w, Parameter):
                raise TransformError(f"{fname}: weights must be Parameters (or a list/ParameterTuple of them); "
                                     f"got a {type(w).__name__}{_where()}")
        return ws, ("tuple" if not isinstance(weights, list) else "list")
    raise TransformError(f"{fname}: weights must be a Parameter, a list or a ParameterTuple, got {type(weights).__name__}{_where()}")


def _split_outputs(raw, has_aux: bool, fname: str):
    """(differentiated part, aux tuple or None) following MindSpore's has_aux rules."""
    if not has_aux:
        return raw, None
    if not isinstance(raw, (tuple, list)) or len(raw) < 2:
        n = len(raw) if isinstance(raw, (tuple, list)) else 1
        raise TransformError(f"{fname}: has_aux=True needs a function returning at least two outputs; "
                             f"it returned {n}{_where()}")
    return raw[0], tuple(raw[1:])


class _Traced:
    """A traced function: graph, argument leaves, output split into differentiated/aux leaves.

    Parameters the function assigns (functionalized state, prims/trace.py) are the graph's last
    outputs, never differentiated: with state=True the transformation passes them on with
    `commit_state(values)`, which assigns them in the enclosing trace; without, an assignment is
    a TraceError naming the transformation."""

    def __init__(self, fn, args, has_aux: bool, fname: str, state: bool = False, kwargs=None, statics=None,
                 weak_inputs: bool = False):
        # keyword arguments are passed through, never differentiated; `statics` (a policy, see
        # _diff_statics) says which leaves stay Python values: neither is a graph input
        kwargs = kwargs or {}
        flat = flatten_call(args, kwargs)
        mask = (statics or keyword_statics)(args, kwargs, *flat)
        self.leaves, self.call = split_call(args, kwargs, mask, _call_name(fname, fn), param_names(fn), flat,
                                            weak=weak_inputs)
        # weak_inputs: a Python number that is a graph input (differentiated, or a primal of
        # vjp/jvp; jit's WeakTracer, or a number given here, a WeakNumber) is the input of its
        # exact value, weakly typed again inside, so that fn computes with 0.1 itself where it
        # meets a float64 tensor; `views` holds its kind's default dtype, the dtype of its
        # gradient (view_grads)
        self.views: dict = {}
        if weak_inputs:
            for i, x in enumerate(self.leaves):
                if type(x) is WeakTracer:
                    self.views[i] = x
                    self.leaves[i] = x.weak_src
                elif type(x) is WeakNumber:
                    self.views[i] = NumberView(x.dtype)
        self.ranges = self.call.positions()
        self.nargs = len(self.leaves)
        self.state: list = []
        call, views = self.call, self.views

        graph, out_tree, captures = trace_to_graph(lambda c: fn(*c[0], **c[1]), _types(self.leaves), name=_name(fn),
                                                   wrap_args=lambda ts: (call.rebuild(weak_again_at(ts, views)),),
                                                   state=self.state if state else None, what=fname)
        check_numbers(self.leaves, views, f"{_call_name(fname, fn)}: an argument")  # (their values are known)
        self.views = {i: x.dtype for i, x in views.items()}
        self.graph, self.captures, self.out_tree = graph, captures, out_tree
        raw_struct = pytree.unflatten(out_tree, list(range(out_tree.num_leaves)))
        diff, aux = _split_outputs(raw_struct, has_aux, fname)
        self.diff_idx, self.diff_tree = pytree.flatten(diff)
        self.aux_struct = aux
        for i in self.diff_idx:
            t = graph.outputs[i].type
            if not t.dtype.is_inexact:
                raise TransformError(f"{fname}: cannot differentiate an output of dtype {t.dtype.name} "
                                     f"(shape {t.shape}); only floating-point and complex outputs have derivatives{_where()}")

    @property
    def inputs(self):
        return self.leaves + self.captures

    def view_grads(self, wrt: list[int], grads: list) -> list:
        """`grads` (one per input leaf index in `wrt`) with a weakly typed number's cast to its
        kind's default dtype (float32 for a Python float), as the number alone is."""
        if not self.views:
            return grads
        from .prims.lax import astype
        return [astype(g, self.views[i]) if i in self.views and g.dtype is not self.views[i] else g
                for i, g in zip(wrt, grads)]

    def commit_state(self, values) -> None:
        """Assign the function's new Parameter values (the graph's last outputs, in `values`) in
        the enclosing trace, or eagerly when there is none."""
        n = len(self.graph.outputs) - len(self.state)
        for p, v in zip(self.state, values[n:]):
            p.set_data(v)

    def capture_index(self, obj) -> int | None:
        for k, c in enumerate(self.captures):
            if c is obj:
                return self.nargs + k
        return None

    def add_weights(self, ws, wrt: list[int]) -> list:
        """Graph input indices of the weights `ws` (None for one the function never reads), each
        found one appended to `wrt`; [] when ws is None."""
        wcap = []
        for w in ws or ():
            k = self.capture_index(w)
            wcap.append(k)
            if k is not None:
                wrt.append(k)
        return wcap

    def outputs_struct(self, values):
        return pytree.unflatten(self.out_tree, values[:self.out_tree.num_leaves])

    def aux(self, values):
        if self.aux_struct is None:
            return None
        return pytree.tree_map(lambda i: values[i], self.aux_struct)


def _check_holomorphic(tr, wrt, holomorphic: bool, fname: str, fn, real_outputs: bool, real_inputs: bool):
    """JAX's rules for complex numbers in grad, jacrev and jacfwd (docs/complex.md). Without
    `holomorphic`, a complex output (grad, jacrev: `real_outputs`) or input (jacfwd:
    `real_inputs`) is refused: the derivative of a complex function of a complex variable is a
    2x2 real matrix per element, which one complex number holds only when the function is
    holomorphic. With it, the inputs differentiated and the outputs must all be complex, and the
    result is f'(z)."""
    outs = [(k, tr.graph.outputs[i].type) for k, i in enumerate(tr.diff_idx)]
    ins = [(k, tr.leaves[j]) for k, j in enumerate(wrt)]
    name = _name(fn)
    if holomorphic:
        for k, x in ins:
            if not x.dtype.is_complex:
                raise TransformError(f"{fname}(holomorphic=True) of {name}: differentiated input leaf {k} has dtype "
                                     f"{x.dtype.name} (shape {tuple(x.shape)}); holomorphic differentiation needs "
                                     f"complex inputs (as JAX: cast with ops.astype(x, complex64)){_where()}")
        for k, t in outs:
            if not t.dtype.is_complex:
                raise TransformError(f"{fname}(holomorphic=True) of {name}: output leaf {k} has dtype {t.dtype.name} "
                                     f"(shape {tuple(t.shape)}); holomorphic differentiation needs complex outputs "
                                     f"(as JAX){_where()}")
        return
    if real_outputs:
        for k, t in outs:
            if t.dtype.is_complex:
                raise TransformError(f"{fname} of {name}: output leaf {k} is {t.dtype.name} (shape {tuple(t.shape)}); "
                                     f"{fname} needs real outputs, as JAX: pass holomorphic=True for f'(z) of a "
                                     f"holomorphic function, or use vjp for a non-holomorphic one{_where()}")
    if real_inputs:
        for k, x in ins:
            if x.dtype.is_complex:
                raise TransformError(f"{fname} of {name}: differentiated input leaf {k} is {x.dtype.name} (shape "
                                     f"{tuple(x.shape)}); {fname} needs real inputs, as JAX: pass holomorphic=True "
                                     f"for f'(z) of a holomorphic function, or use jvp for a non-holomorphic "
                                     f"one{_where()}")


def _ones_like(t: TensorType):
    from . import ops
    return ops.ones(t.shape, dtype=t.dtype)


def _zeros_like(x):
    from . import ops
    return ops.zeros(tuple(x.shape), dtype=x.dtype)


# ---------------------------------------------------------------- grad / value_and_grad


def _check_keyword_positions(grad_position, args, kwargs, fname, fn):
    """A differentiated position beyond the positional arguments when keywords were given: say that
    keyword arguments are never differentiated (as in JAX), naming the function and the keyword."""
    if not kwargs:
        return
    for p in sorted(_pos_set(grad_position)):
        if isinstance(p, int) and not isinstance(p, bool) and p >= len(args):
            params = param_names(fn) or []
            name = params[p] if p < len(params) else None
            which = f"argument {p} ({name!r})" if name else f"argument {p}"
            passed = f"; {name!r} was passed by keyword" if name in kwargs else ""
            raise TransformError(f"{_call_name(fname, fn)}: grad_position {p} asks for the gradient of {which}, but "
                                 f"the call has {len(args)} positional argument(s){passed}; keyword arguments are "
                                 f"passed through and never differentiated (as in JAX): pass the argument "
                                 f"positionally{_where()}")


def _grad_core(fn, args, grad_position, weights, has_aux, fname, kwargs=None, holomorphic=False):
    """(value structure, input grads, weight grads, aux, positions info) for one call."""
    _check_keyword_positions(grad_position, args, kwargs, fname, fn)
    pos, single = _positions(grad_position, len(args), fname)
    ws, wkind = _weights_list(weights, fname)
    if pos is None and ws is None:
        raise TransformError(f"{fname}: grad_position=None needs `weights`; with both None there is nothing "
                             f"to differentiate{_where()}")
    _check_float_weights(ws, fname)
    tr = _Traced(fn, args, has_aux, fname, state=True, kwargs=kwargs, statics=_diff_statics(grad_position),
                 weak_inputs=True)
    if not tr.diff_idx:
        # a sum over no outputs is 0, so the gradient would come back as zeros: JAX refuses too
        what = "its first output is None" if has_aux else f"it returned {tr.diff_tree!r}"
        raise TransformError(f"{fname}: {_name(fn)} has no tensor output to differentiate ({what}); return "
                             f"the value to differentiate{_where()}")
    ranges = tr.ranges
    params = param_names(fn)
    wrt: list[int] = []
    if pos is not None:
        for p in pos:
            _check_float_inputs(tr.leaves, ranges[p], fname, p, params)
            wrt.extend(ranges[p])
    _check_holomorphic(tr, wrt, holomorphic, fname, fn, real_outputs=True, real_inputs=False)
    wcap = tr.add_weights(ws, wrt)
    dg = vjp_merged(tr.graph, wrt, tr.diff_idx)
    cts = [_ones_like(tr.graph.outputs[i].type) for i in tr.diff_idx]
    res = inline_graph(dg, tr.inputs + cts)
    nout = len(tr.graph.outputs)
    values, grads = res[:nout], res[nout:]
    tr.commit_state(values)
    grads = tr.view_grads(wrt, grads)
    gi = 0
    in_grads = None
    if pos is not None:
        per_pos = []
        for p in pos:
            n = len(ranges[p])
            per_pos.append(pytree.unflatten(pytree.flatten(args[p])[1], grads[gi:gi + n]))
            gi += n
        in_grads = per_pos[0] if single else tuple(per_pos)
    w_grads = None
    if ws is not None:
        wl = []
        for w, k in zip(ws, wcap):
            if k is None:
                wl.append(_zeros_like(w))
            else:
                wl.append(grads[gi])
                gi += 1
        w_grads = wl[0] if wkind == "single" else (wl if wkind == "list" else tuple(wl))
    return tr, values, in_grads, w_grads, pos, ws


def _assemble_grads(in_grads, w_grads, pos, ws, return_ids, single_pos):
    if return_ids:
        if in_grads is not None:
            in_grads = (pos[0], in_grads) if single_pos else tuple(zip(pos, in_grads))
        if w_grads is not None:
            names = [w.name for w in ws]
            wl = [w_grads] if not isinstance(w_grads, (list, tuple)) else list(w_grads)
            w_grads = tuple(zip(names, wl)) if len(wl) > 1 or isinstance(w_grads, (list, tuple)) else (names[0], wl[0])
    if in_grads is not None and w_grads is not None:
        return in_grads, w_grads
    return in_grads if in_grads is not None else w_grads


def grad(fn: Callable, grad_position=_ZERO, weights=None, has_aux: bool = False, return_ids: bool = False,
         *, argnums=_UNSET, holomorphic: bool = False):
    """Gradient of fn's (summed) output w.r.t. positional inputs and/or Parameters.

    `grad(fn, ...)` returns a function taking fn's arguments. Several outputs, and every element
    of a non-scalar output, are summed before differentiating (MindSpore's sensitivity of ones).
    `grad_position` (or its alias `argnums`, torch.func's name; give one of them): an int gives
    that argument's gradient; a tuple a tuple of gradients in its order (a 1-tuple too); None no
    input gradient, and then `weights` must be given. A negative, repeated or out-of-range
    position is a TransformError. `weights`: a Parameter, a list or a ParameterTuple; their
    gradients come in the same form, after the input gradients: `(input_grads, weight_grads)`, or
    the weight gradients alone with grad_position=None. `has_aux=True`: fn returns at least two
    outputs, only the first is differentiated, and the call returns `(grads, aux)` with aux the
    tuple of the others. `return_ids=True` pairs each gradient with its position or its
    Parameter's name: `(0, g)`, `("fc.weight", g)`. The differentiated inputs and the output must
    be floating-point or complex.

    Complex numbers follow JAX (docs/complex.md): a real output's gradient w.r.t. a complex z is
    df/dx - i df/dy; a complex output needs holomorphic=True (complex inputs), which gives f'(z).
    Keyword arguments are passed through and never differentiated (as in JAX); Python values at
    the positions not differentiated and in keywords reach fn as they are (docs/user_guide.md,
    "Calling conventions")."""
    _check_callable(fn, "grad")
    grad_position = _alias("grad", grad_position, argnums, "grad_position and argnums")
    _validate_static(grad_position, weights, "grad")

    def impl(*args, **kwargs):
        tr, values, in_grads, w_grads, pos, ws = _grad_core(fn, args, grad_position, weights, has_aux, "grad",
                                                            kwargs, holomorphic)
        out = _assemble_grads(in_grads, w_grads, pos, ws, return_ids, isinstance(grad_position, int))
        if has_aux:
            return out, tr.aux(values)
        return out

    return GraphFunction(impl, ("grad", fn_key(fn), _exact(grad_position), _wkey(weights), bool(has_aux),
                                bool(return_ids), bool(holomorphic)), f"grad_{_name(fn)}", params=param_names(fn),
                         statics=_diff_statics(grad_position), label=_call_name("grad", fn),
                         check=_weights_not_passed(weights, "grad"), weak_numbers=True)


def value_and_grad(fn: Callable, grad_position=_ZERO, weights=None, has_aux: bool = False, return_ids: bool = False,
                   *, argnums=_UNSET, holomorphic: bool = False):
    """`(value, gradients)` in one pass: value is fn's whole output (its aux outputs included
    with has_aux=True), gradients what `grad` with the same arguments returns (`grad_position`
    or its alias `argnums`, `weights`, `has_aux`, `return_ids`, `holomorphic`)."""
    _check_callable(fn, "value_and_grad")
    grad_position = _alias("value_and_grad", grad_position, argnums, "grad_position and argnums")
    _validate_static(grad_position, weights, "value_and_grad")

    def impl(*args, **kwargs):
        tr, values, in_grads, w_grads, pos, ws = _grad_core(fn, args, grad_position, weights, has_aux,
                                                            "value_and_grad", kwargs, holomorphic)
        out = _assemble_grads(in_grads, w_grads, pos, ws, return_ids, isinstance(grad_position, int))
        return tr.outputs_struct(values), out

    return GraphFunction(impl, ("value_and_grad", fn_key(fn), _exact(grad_position), _wkey(weights),
                                bool(has_aux), bool(return_ids), bool(holomorphic)), f"value_and_grad_{_name(fn)}",
                         params=param_names(fn), statics=_diff_statics(grad_position),
                         label=_call_name("value_and_grad", fn), check=_weights_not_passed(weights, "value_and_grad"),
                         weak_numbers=True)


def grad_and_value(fn: Callable, argnums=0, has_aux: bool = False):
    """torch.func.grad_and_value: `(gradients, value)`, torch's order (value_and_grad's reversed).

    `argnums`: an int or a tuple of positions, as grad's grad_position; with has_aux=True fn
    returns (value, *aux), only the value is differentiated, and the second item is fn's whole
    output."""
    _check_callable(fn, "grad_and_value")
    vg = value_and_grad(fn, argnums, has_aux=has_aux)

    def impl(*args, **kwargs):
        v, g = vg(*args, **kwargs)
        return g, v
    return GraphFunction(impl, ("grad_and_value", vg.key), f"grad_and_value_{_name(fn)}", params=param_names(fn),
                         statics=_diff_statics(argnums), label=_call_name("grad_and_value", fn), weak_numbers=True)


def _validate_static(grad_position, weights, fname):
    _positions_static(grad_position, fname)
    if grad_position is None and weights is None:
        raise TransformError(f"{fname}: grad_position=None needs `weights`; with both None there is nothing "
                             f"to differentiate{_where()}")
    ws, _ = _weights_list(weights, fname)
    _check_float_weights(ws, fname)


def _positions_static(grad_position, fname, allow_none: bool = True):
    """Every check of grad_position that needs no call arguments (type, sign, repeats), done when the
    transformation is made: a staged call may never run the per-call checks again."""
    if grad_position is None:
        if not allow_none:
            raise TransformError(f"{fname}: grad_position=None is not allowed here{_where()}")
        return
    # the positions' range needs the call's arguments: _positions checks it per call
    _positions(grad_position, 1 << 62, fname)


def _check_chunk_size(chunk_size, fname):
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise TransformError(f"{fname}: chunk_size must be a positive int or None, got {chunk_size!r}{_where()}")


def _wkey(weights):
    if weights is None:
        return None
    # by identity, holding the weights (an id() could be reused by other weights once these are freed)
    if isinstance(weights, TensorMethods):
        return ("w", IdentityKey(weights))
    # the container's kind too: the gradients come back in the weights' own form (a list, a tuple),
    # and a list and a tuple of the same Parameters shared the first one's (a helper's trial)
    return ("ws", "list" if isinstance(weights, list) else "tuple") + tuple(IdentityKey(w) for w in weights)


# ---------------------------------------------------------------- vjp / jvp


def vjp(fn: Callable, *inputs, weights=None, has_aux: bool = False):
    """(outputs, vjp_fn) or (outputs, vjp_fn, aux); vjp_fn(cotangent) -> one gradient per input.

    fn is evaluated at `inputs` (positional only). `vjp_fn` takes a cotangent of the outputs'
    structure (one that broadcasts to an output's shape is accepted) and returns a tuple with one
    gradient per input; with `weights` (a Parameter, a list or a ParameterTuple) it returns
    `(input_grads, weight_grads)`. `has_aux=True`: only fn's first output is differentiated, the
    others come back as the aux tuple. vjp_fn is a transformed function like the others
    (`gd.vmap(vjp_fn)` gives a Jacobian's rows). It is the derivative at the point the forward
    evaluated: fn is traced once, and what it read then (Parameters, captured tensors, closed-over
    numbers, its random draws) stays vjp_fn's, whatever changes afterwards (as JAX's vjp)."""
    _check_callable(fn, "vjp")
    ws, wkind = _weights_list(weights, "vjp")
    _check_float_weights(ws, "vjp")
    _flat_args(inputs)  # (the arguments' checks)
    ranges = _leaf_ranges(inputs)
    # One trace for the forward and the pullback, and the point it evaluated kept: vjp_fn is the
    # derivative where the forward was computed. vjp_fn traced fn again when first called, which
    # read each Parameter, captured tensor and closed-over number as they were then and drew its
    # random values again (a Parameter the forward assigned, Dropout's mask, a set_data between
    # the two: another point's gradient, a mutation trial), as JAX's and torch.func's vjp do not.
    tr = _Traced(fn, inputs, has_aux, "vjp", state=True, weak_inputs=True)
    from . import ops
    from .frontend.trace import is_tracing
    # the point: copies of the arguments and of what fn reads (in a trace: their values now, before
    # the forward's assignments are committed)
    point = [ops.copy(x) if isinstance(x, TensorMethods) else x for x in tr.inputs]
    if is_tracing():
        values = inline_graph(tr.graph, point)
    else:
        from .frontend.function import get_backend, make_runner
        from .passes.manager import run_default_pipeline
        values = make_runner(run_default_pipeline(tr.graph), get_backend())(point)
    tr.commit_state(values)
    primal = pytree.unflatten(tr.diff_tree, [values[i] for i in tr.diff_idx])
    aux = tr.aux(values) if has_aux else None
    primal_leaves, primal_tree = pytree.flatten(primal)
    wrt = [i for i in range(tr.nargs) if tr.leaves[i].dtype.is_inexact]
    wcap = tr.add_weights(ws, wrt)  # (by identity, among what fn read: before the point replaces it)
    token = object()

    def vjp_impl(*cts):
        ct = cts[0] if len(cts) == 1 else cts
        ct_leaves, ct_tree = pytree.flatten(ct)
        if ct_tree != primal_tree and not (len(ct_leaves) == len(primal_leaves) == 1):
            raise TransformError(f"vjp_fn: cotangent structure {ct_tree!r} does not match the outputs' {primal_tree!r}{_where()}")
        from .prims._util import broadcast_shapes
        ct_leaves = list(ct_leaves)
        for k, (c, i) in enumerate(zip(ct_leaves, tr.diff_idx)):
            t = tr.graph.outputs[i].type
            c_dtype = getattr(c, "dtype", None) or ops.as_tensor(c).dtype
            if c_dtype.is_complex and not t.dtype.is_complex:
                # as JAX: the cast below would drop the imaginary part of the sensitivity
                raise TransformError(f"vjp_fn: a {c_dtype.name} cotangent for the {t.dtype.name} output {k} "
                                     f"(shape {t.shape}): a real output takes a real cotangent{_where()}")
            if tuple(c.shape) != t.shape:
                # MindSpore broadcasts a sensitivity to the output's shape (a scalar ct scales all outputs)
                try:
                    ok = broadcast_shapes(tuple(c.shape), t.shape) == t.shape
                except GraphadError:
                    ok = False
                if not ok:
                    raise TransformError(f"vjp_fn: cotangent of shape {tuple(c.shape)} does not broadcast to the "
                                         f"output's shape {t.shape}{_where()}")
                ct_leaves[k] = ops.broadcast_to(ops.as_tensor(c), t.shape)
        dg = vjp_merged(tr.graph, wrt, tr.diff_idx)
        ct_vals = [ops.astype(c, tr.graph.outputs[i].type.dtype) for c, i in zip(ct_leaves, tr.diff_idx)]
        res = inline_graph(dg, point + ct_vals)
        grads = tr.view_grads(wrt, res[len(tr.graph.outputs):])
        full, gi = [], 0
        for i in range(tr.nargs):
            if tr.leaves[i].dtype.is_inexact:
                full.append(grads[gi])
                gi += 1
            else:
                full.append(_zeros_like(tr.leaves[i]))
        per_input = tuple(pytree.unflatten(pytree.flatten(inputs[p])[1], [full[j] for j in ranges[p]])
                          for p in range(len(inputs)))
        if ws is None:
            return per_input
        wl = []
        for w, k in zip(ws, wcap):
            if k is None:
                wl.append(_zeros_like(w))
            else:
                wl.append(grads[gi])
                gi += 1
        return per_input, (wl[0] if wkind == "single" else tuple(wl))

    vjp_fn = GraphFunction(vjp_impl, ("vjp_fn", token), f"vjp_{_name(fn)}")
    if has_aux:
        return primal, vjp_fn, aux
    return primal, vjp_fn


def jvp(fn: Callable, inputs, v, has_aux: bool = False):
    """(outputs, jvp_out) (+ aux): forward-mode derivative of fn at `inputs` along `v`.

    `inputs` and `v` are a tensor or a tuple of tensors of the same shapes (torch.func's primals
    and tangents); jvp_out has the outputs' structure. `has_aux=True`: only fn's first output is
    differentiated and the result is (outputs, jvp_out, aux)."""
    _check_callable(fn, "jvp")
    single = not isinstance(inputs, (tuple, list))
    primals = (inputs,) if single else tuple(inputs)
    tangents = (v,) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(primals) != len(tangents):
        raise TransformError(f"jvp: {len(primals)} inputs but {len(tangents)} tangents{_where()}")

    def impl(primals, tangents):
        tr = _Traced(fn, primals, has_aux, "jvp", state=True, weak_inputs=True)
        from . import ops
        raw, _ = pytree.flatten(tangents)
        # (under a trace a Python-number tangent reaches here as it is: a number, exact below)
        t_leaves = [t if isinstance(t, TensorMethods) else ops.as_tensor(t) for t in raw]
        if len(t_leaves) != tr.nargs:
            raise TransformError(f"jvp: the tangents have {len(t_leaves)} tensors for {tr.nargs} input tensors{_where()}")
        for i, (x, t) in enumerate(zip(tr.leaves, t_leaves)):
            if tuple(x.shape) != tuple(t.shape):
                raise TransformError(f"jvp: tangent {i} has shape {tuple(t.shape)} but its input has shape "
                                     f"{tuple(x.shape)}{_where()}")
            if t.dtype.is_complex and x.dtype.is_inexact and not x.dtype.is_complex:
                # as JAX (and vjp_fn's cotangents): the cast below would drop the imaginary part
                raise TransformError(f"jvp: tangent {i} is {t.dtype.name} for a {x.dtype.name} input (shape "
                                     f"{tuple(x.shape)}): a real input takes a real tangent{_where()}")
        wrt = [i for i in range(tr.nargs) if tr.leaves[i].dtype.is_inexact]
        fg = jvp_graph(tr.graph, wrt)
        # (a Python-number tangent is weakly typed: cast from its exact value, not from float32)
        from .prims.lax.core import _cast_operand
        t_vals = [ops.as_tensor(raw[i], tr.leaves[i].dtype) if ops.is_scalar(raw[i]) else
                  _cast_operand(t_leaves[i], tr.leaves[i].dtype) for i in wrt]
        res = inline_graph(fg, tr.inputs + t_vals)
        n = len(tr.graph.outputs)
        values, touts = res[:n], res[n:]
        tr.commit_state(values)
        primal_out = pytree.unflatten(tr.diff_tree, [values[i] for i in tr.diff_idx])
        tangent_out = pytree.unflatten(tr.diff_tree, [touts[i] for i in tr.diff_idx])
        if has_aux:
            return primal_out, tangent_out, tr.aux(values)
        return primal_out, tangent_out

    return GraphFunction(impl, ("jvp", fn_key(fn), bool(has_aux)), f"jvp_{_name(fn)}",
                         weak_numbers=True)(primals, tangents)


# ---------------------------------------------------------------- Jacobians


def _jac_assemble(blocks, diff_tree, in_struct_trees, single_pos):
    """blocks[k][j]: Jacobian of output leaf k w.r.t. input leaf j -> the API's nested structure."""
    n_out = len(blocks)
    per_out = []
    for k in range(n_out):
        per_pos, j = [], 0
        for tree in in_struct_trees:
            n = tree.num_leaves
            per_pos.append(pytree.unflatten(tree, blocks[k][j:j + n]))
            j += n
        per_out.append(per_pos[0] if single_pos else tuple(per_pos))
    return pytree.unflatten(diff_tree, per_out)


def _jacobian_setup(fn, args, grad_position, has_aux, fname, kwargs=None):
    """(positions, single position?, traced function, flat input indices to differentiate)."""
    _check_keyword_positions(grad_position, args, kwargs, fname, fn)
    pos, single = _positions(grad_position, len(args), fname, allow_none=False)
    tr = _Traced(fn, args, has_aux, fname, kwargs=kwargs, statics=_diff_statics(grad_position), weak_inputs=True)
    ranges = tr.ranges
    params = param_names(fn)
    wrt = []
    for p in pos:
        _check_float_inputs(tr.leaves, ranges[p], fname, p, params)
        wrt.extend(ranges[p])
    return pos, single, tr, wrt


def _basis_rows(t: TensorType, start: int, size: int):
    """Rows start .. start + size of the identity basis over the elements of a `t`, shaped
    (size, *t.shape): the whole basis is `basis_eye`, a chunk the offset eye of its own rows, both
    marked as a basis (their zeros stay symbolic to simplify). A chunk sliced from the whole
    identity made every chunked Jacobian of a graph the rows rewrite cannot take hold the n x n
    identity (jacfwd of a conv2d over 72,000 inputs with chunk_size=1000 needed 19.3 GiB)."""
    from . import ops
    n = t.size
    rows = ops.creation.basis_eye(n, dtype=t.dtype) if (start, size) == (0, n) else \
        ops.creation.basis_rows(n, start, size, dtype=t.dtype)
    return ops.reshape(rows, (size,) + tuple(t.shape))


def _map_over_basis(graph, fixed, basis, total, nout, chunk_size, fname, first: int = 0):
    """Batch `graph` over the identity bases of the types `basis` (its last inputs; their rows
    first .. first + total): one vmap'd graph, or one per chunk, each fed only its chunk's rows.

    Returns (unbatched primal outputs, derivative outputs each with the basis axis first).
    """
    from . import ops
    _check_chunk_size(chunk_size, fname)
    n_fixed = len(fixed)
    if total == 0:
        # an empty basis (a 0-size output for jacrev, a 0-size input for jacfwd): the Jacobian is
        # empty, and only the primal outputs need computing, at any (here zero) basis vector
        res = inline_graph(graph, list(fixed) + [ops.zeros(tuple(t.shape), dtype=t.dtype) for t in basis])
        return res[:nout], [ops.zeros((0,) + tuple(r.shape), dtype=r.dtype) for r in res[nout:]]
    step = total if chunk_size is None or chunk_size >= total else chunk_size
    graphs = {}
    values, parts = None, []
    shortest = min(t.size for t in basis)
    for start in range(0, total, step):
        size = min(step, total - start)
        # a one-row chunk of a longer basis is computed as two rows, and its row cut from them:
        # a one-row eye has no symbolic zeros (a length-1 axis carries no index in simplify's
        # forms), so it multiplied as written, inf * 0 = NaN where the whole basis gives inf and
        # finite entries beside it (chunk_size=1, or a last chunk of one row)
        row, rows = first + start, size
        if size == 1 and shortest >= 2:
            row, rows = min(row, shortest - 2), 2
        if rows not in graphs:
            graphs[rows] = batch_graph(graph, [False] * n_fixed + [True] * len(basis), rows)
        bg, flags = graphs[rows]
        chunk = [_basis_rows(t, row, rows) for t in basis]
        res = inline_graph(bg, list(fixed) + chunk)
        values = res[:nout]
        outs = [r if f else ops.broadcast_to(ops.expand_dims(r, 0), (rows,) + tuple(r.shape))
                for r, f in zip(res[nout:], flags[nout:])]
        if rows != size:
            cut = first + start - row
            outs = [ops.slice_prim(o, (cut,) + (0,) * (o.ndim - 1), (cut + 1,) + tuple(o.shape[1:]), (1,) * o.ndim)
                    for o in outs]
        parts.append(outs)
    derivs = parts[0] if len(parts) == 1 else [ops.concat(list(p), 0) for p in zip(*parts)]
    return values, derivs


def _jacobian(kind: str, fn: Callable, grad_position, has_aux: bool, chunk_size, argnums, blocks_of,
              holomorphic: bool = False):
    """The GraphFunction of jacrev/jacfwd: `blocks_of(tr, wrt)` gives (primal output values,
    blocks[k][j] = Jacobian of differentiated output leaf k w.r.t. input leaf wrt[j])."""
    _check_callable(fn, kind)
    grad_position = _alias(kind, grad_position, argnums, "grad_position and argnums")
    _positions_static(grad_position, kind, allow_none=False)
    _check_chunk_size(chunk_size, kind)

    def impl(*args, **kwargs):
        pos, single, tr, wrt = _jacobian_setup(fn, args, grad_position, has_aux, kind, kwargs)
        _check_holomorphic(tr, wrt, holomorphic, kind, fn, real_outputs=kind == "jacrev", real_inputs=kind == "jacfwd")
        values, blocks = blocks_of(tr, wrt)
        if values is None:  # nothing differentiated: the outputs still come from the function
            values = inline_graph(tr.graph, tr.inputs)
        jac = _jac_assemble(blocks, tr.diff_tree, [pytree.flatten(args[p])[1] for p in pos], single)
        return (jac, tr.aux(values)) if has_aux else jac

    key = (kind, fn_key(fn), _exact(grad_position), bool(has_aux), chunk_size, bool(holomorphic))
    if chunk_size is None:
        return GraphFunction(impl, key, f"{kind}_{_name(fn)}", params=param_names(fn),
                             statics=_diff_statics(grad_position), label=_call_name(kind, fn), weak_numbers=True)
    return _ChunkedJacobian(impl, key, f"{kind}_{_name(fn)}", param_names(fn),
                            (kind, fn, grad_position, has_aux, chunk_size))


# ---------------------------------------------------------------- chunked Jacobians, streamed
#
# Inside a trace (jit, vmap, grad of a jacrev) a chunked Jacobian is one graph whose chunks are
# concatenated (_map_over_basis): every chunk's part and the concatenated result are alive at
# once, twice the Jacobian. Called on concrete tensors, it is instead run chunk by chunk, each
# chunk copied into the preallocated result, so the peak is the Jacobian plus one chunk's
# intermediates.
#
# One compiled graph serves every chunk: it computes the Jacobian rows `idx` (an i64[c] input).
# It is made from the optimised graph of the whole Jacobian (where simplify has used the identity
# basis' structure) by asking for `take(J, idx, 0)` and pushing that gather towards the inputs
# (_RowsRewrite): through elementwise ops, reshapes, transposes, broadcasts, reductions over other
# axes, matmul, einsum, full slices and the identity, so that each chunk computes only its rows.
# (A basis built as `take(eye, idx)` instead turns the identity into a dense one-hot and loses
# that structure: a dense layer's chunk became a (c, n) @ (n, n) matmul.) Where the gather cannot
# move, it stays, computing that value in full per chunk; if that makes the chunk graph much more
# work than a static chunk of the one-graph form, the one-graph form is used instead.


class _ChunkedJacobian(GraphFunction):
    """jacrev/jacfwd with chunk_size: staged as `_Streamed` when called on concrete tensors."""

    def __init__(self, impl, key, name, params, spec):
        # with keyword arguments or static leaves the call has a CallTree, and _streamed_plan
        # falls back to the one-graph form
        super().__init__(impl, key, name, params=params, statics=_diff_statics(spec[2]),
                         label=_call_name(spec[0], spec[1]))
        self.spec = spec  # (kind, fn, grad_position, has_aux, chunk_size)

    def build_staged(self, leaves, in_tree, backend):
        plan = _streamed_plan(self, leaves, in_tree, backend)
        return plan if plan is not None else super().build_staged(leaves, in_tree, backend)


def _basis_impl(kind, fn, grad_position, has_aux, k: int, rows=None):
    """(primal output values, derivative parts) of output leaf k (jacrev) or input leaf k (jacfwd)
    over its whole identity basis, or over the static `rows` range(start, stop) of it. The parts
    have the basis axis first: one per differentiated input leaf (jacrev) or output leaf (jacfwd)."""
    def impl(*args):
        _, _, tr, wrt = _jacobian_setup(fn, args, grad_position, has_aux, kind)
        nout = len(tr.graph.outputs)
        if kind == "jacrev":
            t = tr.graph.outputs[tr.diff_idx[k]].type
            g = vjp_merged(tr.graph, wrt, [tr.diff_idx[k]])
        else:
            t = TensorType(tr.leaves[wrt[k]].shape, tr.leaves[wrt[k]].dtype)
            g = jvp_graph(tr.graph, [wrt[k]])
        start, m = (0, t.size) if rows is None else (rows[0], rows[1] - rows[0])
        values, derivs = _map_over_basis(g, tr.inputs, [t], m, nout, None, kind, first=start)
        if kind == "jacfwd":
            derivs = [derivs[i] for i in tr.diff_idx]
        return tuple(values), tuple(derivs)
    return impl


def _rows(start: int, c: int) -> Tensor:
    """The basis rows start..start+c of a chunk, as the i64[c] `rows` input of its graph."""
    return Tensor(np.arange(start, start + c, dtype=np.int64), dtype=dt.int64)


def _work(graph: Graph) -> int:
    """A rough count of the element operations of `graph` (contractions count their products)."""
    total = 0
    for n in graph.nodes:
        out = sum(v.type.size for v in n.outputs)
        if n.prim.name == "matmul":
            total += out * n.inputs[0].type.shape[-1]
        elif n.prim.name == "einsum":
            from .prims.linalg import parse_spec
            ins, _ = parse_spec(n.attrs["spec"], len(n.inputs))
            size = {c: d for s, v in zip(ins, n.inputs) for c, d in zip(s, v.type.shape)}
            prod = 1
            for d in size.values():
                prod *= d
            total += prod
        else:
            total += max([out] + [v.type.size for v in n.inputs])
    return total


def _streamed_plan(gf: _ChunkedJacobian, leaves, in_tree, backend):
    """A `_Streamed` for this signature, or None when the one-graph form is as good: no leaf needs
    more than one chunk, one is empty, or the rows graph would be much more work. Checks memory
    before compiling anything."""
    from .frontend.function import Staged, make_runner
    from .frontend.memory import Need, check_need, graph_need, type_bytes
    kind, fn, grad_position, has_aux, chunk = gf.spec
    if in_tree.kind != "tuple":
        return None
    args = pytree.unflatten(in_tree, leaves)
    pos, single, tr, wrt = _jacobian_setup(fn, args, grad_position, has_aux, kind)
    outs = [tr.graph.outputs[i].type for i in tr.diff_idx]
    ins = [TensorType(tr.leaves[j].shape, tr.leaves[j].dtype) for j in wrt]
    basis = outs if kind == "jacrev" else ins
    if any(t.dtype.is_complex for t in outs + ins):
        return None  # the one-graph form applies JAX's complex rules (holomorphic) and its checks
    if not outs or not ins or min(t.size for t in outs + ins) == 0 or max(t.size for t in basis) <= chunk:
        return None
    # blocks[o][i]: d out o / d in i; jacrev's derivatives take the input's dtype, jacfwd's the output's
    shapes = [[(o.shape + i.shape, i.dtype if kind == "jacrev" else o.dtype) for i in ins] for o in outs]
    result_bytes = sum(type_bytes(TensorType(sh, d)) for row in shapes for sh, d in row)
    check_need(gf.__name__, Need(result_bytes, 0))  # the Jacobian itself: before compiling anything
    graphs = []
    for k, t in enumerate(basis):
        c = min(chunk, t.size)
        whole = GraphFunction(_basis_impl(kind, fn, grad_position, has_aux, k), (f"{kind}-basis", gf.key, k),
                              f"{gf.__name__}_rows")
        graph, out_spec, captures = whole.trace(leaves, in_tree)
        n_values = len(tr.graph.outputs)
        rows_graph = _RowsRewrite(graph, len(leaves), c, t.size).run(range(n_values, len(graph.outputs)))
        static = GraphFunction(_basis_impl(kind, fn, grad_position, has_aux, k, (0, c)),
                               (f"{kind}-static", gf.key, k), f"{gf.__name__}_static").trace(leaves, in_tree)[0]
        # the rows graph should cost what a static chunk costs; where a gather got stuck on a big
        # value it costs up to total/c times more: then the one-graph form is the better deal
        if _work(rows_graph) > 2 * _work(static) + 4096:
            return None
        graphs.append((rows_graph, out_spec, captures, t.size, c))
    worst = max((graph_need(g) for g, *_ in graphs), key=lambda n: n.total)
    check_need(gf.__name__, worst, result_bytes, "the Jacobian",
               hint=f"Pass a smaller chunk_size than {chunk}: one chunk's intermediates scale with it.")
    chunks = [(Staged(g, spec, caps, make_runner(g, backend), len(leaves) + 1), total, c)
              for g, spec, caps, total, c in graphs]
    trees = [pytree.flatten(args[p])[1] for p in pos]
    return _Streamed(kind, chunks, shapes, trees, single, tr.diff_tree, tr.aux_struct if has_aux else None)


class _RowsRewrite:
    """`graph` with an i64[c] input `rows` added after its first `n_args` inputs, and each output
    named in `run(outputs)` (axis 0 of length n) replaced by its rows `take(out, rows, 0)`, the
    gather pushed towards the inputs through every node that computes its rows from rows of its
    operands (see the comment above _ChunkedJacobian). Values are visited with explicit stacks, so a
    deep graph cannot exhaust Python's recursion limit."""

    def __init__(self, graph: Graph, n_args: int, c: int, n: int):
        self.graph, self.n_args, self.c, self.n = graph, n_args, c, n

    def run(self, outputs) -> Graph:
        from .passes.cleanup import cse, dce
        from .passes.rewrite import PassTrace, finish, replay
        g = self.graph
        with PassTrace(g.name) as tr:
            # the rows input sits after the arguments, before the captured tensors (Staged's order)
            env, idx = {}, None
            for i, (v, name) in enumerate(zip(g.inputs, g.input_names)):
                if i == self.n_args:
                    idx = tr.new_arg(TensorType((self.c,), dt.int64), "rows")
                env[v] = tr.new_arg(v.type, name)
            if idx is None:
                idx = tr.new_arg(TensorType((self.c,), dt.int64), "rows")
            for node in g.nodes:
                replay(node, env)
            self.tr, self.env, self.idx = tr, env, idx
            plan = self._plan([(g.outputs[i], 0) for i in outputs])
            order = {n: i for i, n in enumerate(g.nodes)}
            done: dict = {}
            for (v, axis) in sorted(plan, key=lambda va: order.get(va[0].node, -1)):
                done[(v, axis)] = self._emit(v, axis, plan[(v, axis)], done)
            wanted = set(outputs)
            outs = [done[(v, 0)] if i in wanted else env[v] for i, v in enumerate(g.outputs)]
            new = finish(tr, outs)
        return dce(cse(new))

    def _plan(self, targets) -> dict:
        """(value, axis) -> its rule (specs per operand: None = whole, int = rows at that axis), or
        None where the gather stays on the value; for every (value, axis) whose rows are needed."""
        plan: dict = {}
        stack = list(targets)
        while stack:
            v, axis = stack.pop()
            if (v, axis) in plan:
                continue
            rule = _row_rule(v, axis, self.n) if v.node is not None and len(v.node.outputs) == 1 else None
            plan[(v, axis)] = rule
            if rule is not None:
                stack.extend((u, a) for u, a in zip(v.node.inputs, rule) if a is not None)
        return plan

    def _emit(self, v, axis, rule, done):
        from . import ops
        node = v.node
        with self.tr.at(node) if node is not None else contextlib.nullcontext():
            if rule is None:
                return ops.take_prim(self.env[v], self.idx, axis)
            if node.prim.name == "eye":  # rows of an identity: a one-hot of the row numbers
                return _eye_rows(node.attrs, axis, self.idx, self.c)
            operands = [self.env[u] if a is None else done[(u, a)] for u, a in zip(node.inputs, rule)]
            attrs = dict(node.attrs)
            c = self.c
            if "shape" in attrs:  # reshape, broadcast_to, full: the row axis now has c entries
                attrs["shape"] = tuple(c if i == axis else s for i, s in enumerate(attrs["shape"]))
            if node.prim.name == "slice":
                attrs["stops"] = tuple(c if i == axis else s for i, s in enumerate(attrs["stops"]))
            return node.prim.bind(*operands, **attrs)


def _eye_rows(attrs, axis: int, idx, c: int):
    """Rows (axis 0) or columns (axis 1) `idx` of eye(n, m, k): [j - i == k] as a one-hot."""
    from . import ops
    d = dt.as_dtype(attrs["dtype"])
    k = int(attrs.get("k", 0))
    if axis == 0:
        i = ops.reshape(ops.add(idx, k), (c, 1))
        j = ops.reshape(ops.arange(0, int(attrs["m"]), dtype=dt.int64), (1, int(attrs["m"])))
    else:
        i = ops.reshape(ops.add(ops.arange(0, int(attrs["n"]), dtype=dt.int64), k), (int(attrs["n"]), 1))
        j = ops.reshape(idx, (1, c))
    return ops.astype(ops.equal(i, j), d)


def _row_rule(v, axis: int, n: int):
    """How the rows (`axis`, of length n) of value `v` follow from rows of its node's operands: per
    operand the axis whose rows are needed, or None for the whole operand; None if they do not."""
    node = v.node
    name = node.prim.name
    r = len(v.type.shape)
    ins = [u.type.shape for u in node.inputs]

    def aligned(shape, out_axis, out_rank):  # broadcasting: operands align on the right
        a = out_axis - (out_rank - len(shape))
        return a if a >= 0 and shape[a] == n else None

    if "elementwise" in node.prim.traits:
        return [aligned(s, axis, r) for s in ins]
    if name == "eye":
        return [] if axis in (0, 1) and "n" in node.attrs else None
    if name == "full":
        return []
    if name == "reshape":
        (shape,) = ins
        before = 1
        for s in v.type.shape[:axis]:
            before *= s
        acc = 1
        for a, s in enumerate(shape):
            if acc == before and s == n:
                return [a]
            acc *= s
        return None
    if name == "transpose":
        return [node.attrs["perm"][axis]]
    if name == "broadcast_to":
        return [aligned(ins[0], axis, r)]
    if name in ("sum", "max", "min", "prod"):
        axes = set(node.attrs["axes"])
        if node.attrs.get("keepdims"):
            return None if axis in axes else [axis]
        kept = [i for i in range(len(ins[0])) if i not in axes]
        return [kept[axis]]
    if name == "matmul":
        ra, rb = len(ins[0]), len(ins[1])
        if axis == r - 2:
            return [ra - 2, None]
        if axis == r - 1:
            return [None, rb - 1]
        return [aligned(ins[0][:-2], axis, r - 2), aligned(ins[1][:-2], axis, r - 2)]
    if name == "einsum":
        from .prims.linalg import parse_spec
        specs, out = parse_spec(node.attrs["spec"], len(ins))
        letter = out[axis]
        if out.count(letter) != 1 or any(s.count(letter) > 1 for s in specs):
            return None
        return [s.index(letter) if letter in s else None for s in specs]
    if name == "slice":
        st, sp, step = node.attrs["starts"][axis], node.attrs["stops"][axis], node.attrs["steps"][axis]
        return [axis] if (st, sp, step) == (0, n, 1) and ins[0][axis] == n else None
    return None


class _Streamed:
    """A chunked Jacobian at one signature: its chunk graphs, run one chunk at a time into the
    preallocated Jacobian. Holds types and trees only, never the arguments of a call."""

    fast = None  # no lean per-call entry: GraphFunction takes the checked path

    def __init__(self, kind, chunks, shapes, trees, single, diff_tree, aux_struct):
        self.kind, self.chunks, self.shapes = kind, chunks, shapes
        self.trees, self.single, self.diff_tree, self.aux_struct = trees, single, diff_tree, aux_struct

    def __call__(self, leaves: list):
        from .tensor import aligned_empty
        n_out, n_in = len(self.shapes), len(self.shapes[0])
        blocks = [[None] * n_in for _ in range(n_out)]
        values = None
        for k, (staged, total, c) in enumerate(self.chunks):
            for start in range(0, total, c):
                # the last chunk is moved back to end at `total` (recomputing a few rows) rather
                # than compiling a second graph for the remainder
                s = min(start, total - c)
                values, parts = staged(list(leaves) + [_rows(s, c)])
                for m, part in enumerate(parts):
                    o, i = (k, m) if self.kind == "jacrev" else (m, k)
                    if blocks[o][i] is None:
                        blocks[o][i] = Tensor(_raw=aligned_empty(self.shapes[o][i][0], part._data.dtype),
                                              _dtype=part.dtype)
                    data = part._data.reshape(c, -1)
                    if self.kind == "jacrev":  # rows s..s+c of (out size, in size)
                        blocks[o][i]._data.reshape(total, data.shape[1])[s:s + c] = data
                    else:  # columns s..s+c of (out size, in size)
                        blocks[o][i]._data.reshape(data.shape[1], total)[:, s:s + c] = data.T
                del parts  # this chunk's buffers go before the next chunk runs
        jac = _jac_assemble(blocks, self.diff_tree, self.trees, self.single)
        if self.aux_struct is None:
            return jac
        return jac, pytree.tree_map(lambda i: values[i], self.aux_struct)


def jacrev(fn: Callable, grad_position=_ZERO, has_aux: bool = False, chunk_size=None, *, argnums=_UNSET,
           holomorphic: bool = False):
    """Jacobian by reverse mode: vmap of the VJP over the output basis, one graph. Real outputs,
    or complex ones with holomorphic=True (then f'(z)), as JAX (docs/complex.md).

    The Jacobian of an output w.r.t. an input has shape out.shape + in.shape. `grad_position` (or
    its alias `argnums`): an int or a tuple (then a tuple of Jacobians); several outputs give one
    entry per output, jac[i][j] for output i and position j. `has_aux=True`: fn returns
    (value, *aux) and the result is (jacobian, aux). `chunk_size` bounds memory: the basis is
    processed that many rows at a time instead of all at once."""
    def blocks_of(tr, wrt):
        from . import ops
        nout = len(tr.graph.outputs)
        values, blocks = None, []
        # one VJP over its own identity basis per output leaf: a basis spanning all the outputs
        # would be a slice of a larger identity, whose structure simplify cannot see through, and
        # every block would be cut from a stacked Jacobian of all the outputs
        for i in tr.diff_idx:
            t = tr.graph.outputs[i].type
            dg = vjp_merged(tr.graph, wrt, [i])
            values, grads = _map_over_basis(dg, tr.inputs, [t], t.size, nout, chunk_size, "jacrev")
            blocks.append([ops.reshape(g, t.shape + tuple(tr.leaves[j].shape))
                           for g, j in zip(tr.view_grads(wrt, grads), wrt)])
        return values, blocks
    return _jacobian("jacrev", fn, grad_position, has_aux, chunk_size, argnums, blocks_of, holomorphic)


def jacfwd(fn: Callable, grad_position=_ZERO, has_aux: bool = False, chunk_size=None, *, argnums=_UNSET,
           holomorphic: bool = False):
    """Jacobian by forward mode: vmap of the JVP over the input basis, one graph. Real inputs, or
    complex ones with holomorphic=True (then f'(z)), as JAX (docs/complex.md).

    Arguments and result as `jacrev`'s (`argnums` is grad_position's alias; `chunk_size` bounds
    how many basis columns are processed at a time)."""
    def blocks_of(tr, wrt):
        from . import ops
        nout = len(tr.graph.outputs)
        values, cols = None, []
        # one JVP over its own identity basis per input leaf (as jacrev does per output leaf)
        for j in wrt:
            it = TensorType(tr.leaves[j].shape, tr.leaves[j].dtype)
            fg = jvp_graph(tr.graph, [j])
            values, touts = _map_over_basis(fg, tr.inputs, [it], it.size, nout, chunk_size, "jacfwd")
            # (n_j, *out) -> (*out, n_j) -> (*out, *in_j)
            cols.append([ops.reshape(ops.movedim(touts[i], 0, -1), tr.graph.outputs[i].type.shape + it.shape)
                         for i in tr.diff_idx])
        return values, [[col[k] for col in cols] for k in range(len(tr.diff_idx))]
    return _jacobian("jacfwd", fn, grad_position, has_aux, chunk_size, argnums, blocks_of, holomorphic)


def hessian(fn: Callable, grad_position=_ZERO, has_aux: bool = False, *, argnums=_UNSET, holomorphic: bool = False):
    """jacfwd(jacrev(fn)): the Hessian of a scalar (or each output element) w.r.t. the positions.

    `grad_position` (or its alias `argnums`): an int or a tuple, not None.

    With has_aux=True fn returns (value, *aux) and the result is (hessian, aux), aux being the
    tuple jacrev(fn, has_aux=True) gives (JAX's hessian(has_aux=True))."""
    _check_callable(fn, "hessian")
    grad_position = _alias("hessian", grad_position, argnums, "grad_position and argnums")
    _positions_static(grad_position, "hessian", allow_none=False)
    if not has_aux:
        return jacfwd(jacrev(fn, grad_position, holomorphic=holomorphic), grad_position, holomorphic=holomorphic)
    inner = jacrev(fn, grad_position, has_aux=True, holomorphic=holomorphic)

    def jac_then_aux(*args, **kwargs):
        # jacfwd(has_aux) splits off everything after the first output as aux: hand it the
        # aux tuple's entries, so that the Hessian's aux is the same tuple, not a 1-tuple of it
        jac, aux = inner(*args, **kwargs)
        return (jac,) + tuple(aux)
    flat = GraphFunction(jac_then_aux, ("hessian_aux", inner.key), f"jacrev_{_name(fn)}", params=param_names(fn),
                         statics=_diff_statics(grad_position), weak_numbers=True)
    return jacfwd(flat, grad_position, has_aux=True, holomorphic=holomorphic)


# ---------------------------------------------------------------- vmap


def _norm_axis(ax, ndim, what):
    if ax is None:
        return None
    if not isinstance(ax, int) or isinstance(ax, bool):
        raise TransformError(f"vmap: {what} must be an int or None, got {ax!r}")
    if not -ndim <= ax < ndim:
        raise TransformError(f"vmap: {what} = {ax} is out of range for a value of rank {ndim}")
    return ax % ndim


def _check_axes_spec(spec, what: str) -> None:
    """vmap's in_axes/out_axes: an int or None, or a tuple/list/dict of them (nested); anything else
    (a set, a float, a bool, a string) is refused when vmap is called, naming the bad entry."""
    def rec(x, path):
        if x is None or (isinstance(x, int) and not isinstance(x, bool)):
            return
        if isinstance(x, (tuple, list)):
            for i, e in enumerate(x):
                rec(e, f"{path}[{i}]")
            return
        if isinstance(x, dict):
            for k, e in x.items():
                rec(e, f"{path}[{k!r}]")
            return
        at = f" (entry {what}{path})" if path else ""
        raise TransformError(f"vmap: {what} must be an int, None, or a tuple/list/dict of them; got {x!r} "
                             f"(of type {type(x).__name__}){at}{_where()}")
    rec(spec, "")


def _vmap_axes(fn, in_axes, args, kwargs, leaves=None, tree=None):
    """(the in_axes entry of each leaf of (args, kwargs), which leaves are static).

    Positional arguments follow in_axes (a pytree prefix of them). Keyword arguments never
    correspond to in_axes entries: as in JAX their tensor leaves are mapped along axis 0; their
    non-array leaves (Python numbers, strings), which JAX would refuse, reach the function as they
    are. A non-array positional leaf is static where its in_axes entry is None (a Python int stays
    an int) and an error where it is mapped."""
    if leaves is None:
        leaves, tree = flatten_call(args, kwargs)
    npos = tree.children[0].num_leaves
    kw_leaves, leaves = leaves[npos:], leaves[:npos]
    prefix = tuple(in_axes) if isinstance(in_axes, list) else in_axes
    note = (f" (the keyword arguments {sorted(kwargs)} have no in_axes entries: their tensors are mapped along "
            f"axis 0, as in JAX; pass an unmapped one positionally with in_axes None, or bind it with "
            f"functools.partial)") if kwargs else ""
    try:
        axes = pytree.broadcast_prefix(prefix, tuple(args), what="in_axes") if isinstance(prefix, (tuple, dict)) \
            else [prefix] * len(leaves)
    except ValueError as e:
        raise TransformError(f"vmap: in_axes does not match the arguments: {e}{note}{_where()}") from None
    if isinstance(prefix, tuple) and len(prefix) != len(args):
        raise TransformError(f"vmap: in_axes has {len(prefix)} entries for {len(args)} positional arguments{note}"
                             f"{_where()}")
    mask = []
    for i, (a, x) in enumerate(zip(axes, leaves)):
        static = passes_through(x) if a is None else not is_array_leaf(x)
        if static and a is not None:
            kind = type(x).__name__
            raise TransformError(f"{_call_name('vmap', fn)}: {describe_arg(args, kwargs, i, param_names(fn))} is "
                                 f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind} ({x!r}), which has no axis to map along axis {a}: give it "
                                 f"in_axes None (it then reaches the function as it is), or pass a tensor"
                                 f"{_where()}")
        mask.append(static)
    for x in kw_leaves:
        array = not passes_through(x)
        axes.append(0 if array else None)
        mask.append(not array)
    return axes, mask


def vmap(fn: Callable, in_axes=_ZERO, out_axes=_ZERO, *, in_dims=_UNSET, out_dims=_UNSET):
    """Vectorise fn over a batch axis of its inputs; no per-example loop.

    `vmap(fn, in_axes, out_axes)(*args)` is fn applied to each slice of the mapped arguments,
    the results stacked along `out_axes`, computed as one batched graph. `in_axes` (or its alias
    `in_dims`, torch.func's name; give one of them): an int or None for every positional
    argument, or a tuple (list, dict) of ints and Nones matching a prefix of the arguments'
    structure; None leaves an argument unmapped. `out_axes` (alias `out_dims`) likewise for the
    outputs: an output that does not depend on a mapped input is broadcast along its axis. Axes
    may be negative. At least one argument must be mapped and every mapped axis must have the
    same size (TransformError otherwise). Parameters and tensors fn closes over are unmapped.

    `out_axes=None` (MindSpore, JAX) means an unbatched output: one that depends on a mapped input
    is an error. An output a `cond` (all its branches) or a `while_loop` (its body) only passes
    through unchanged depends on that operand alone, as in JAX, even under a mapped predicate. Keyword arguments have no in_axes entries: their tensors are mapped along axis 0
    (as in JAX) and their Python values passed through; a positional Python value whose in_axes
    entry is None reaches fn as it is.
    """
    _check_callable(fn, "vmap")
    in_axes = _alias("vmap", in_axes, in_dims, "in_axes and in_dims")
    out_axes = _alias("vmap", out_axes, out_dims, "out_axes and out_dims")
    _check_axes_spec(in_axes, "in_axes")
    _check_axes_spec(out_axes, "out_axes")

    def impl(*args, **kwargs):
        from . import ops
        flat = flatten_call(args, kwargs)
        all_axes, mask = _vmap_axes(fn, in_axes, args, kwargs, *flat)
        leaves, call = split_call(args, kwargs, mask, _call_name("vmap", fn), param_names(fn), flat)
        axes = [a for a, m in zip(all_axes, mask) if not m]
        full = [j for j, m in enumerate(mask) if not m]  # each traced leaf's index among all leaves

        def arg(i):  # "argument 1 ('y') (f32[3,4])"
            x = leaves[i]
            return (f"{describe_arg(args, kwargs, full[i], param_names(fn))} "
                    f"({x.dtype.short}[{','.join(map(str, x.shape))}])")
        try:
            axes = [_norm_axis(a, len(x.shape), f"in_axes for {arg(i)}") for i, (a, x) in
                    enumerate(zip(axes, leaves))]
        except TransformError as e:
            raise TransformError(f"{e}{_where()}") from None
        sizes = {}
        for i, (a, x) in enumerate(zip(axes, leaves)):
            if a is not None:
                sizes.setdefault(x.shape[a], []).append(i)
        if not sizes:
            raise TransformError(f"vmap: at least one argument must be mapped (all in_axes are None){_where()}")
        if len(sizes) > 1:
            desc = "; ".join(f"size {s} for " + ", ".join(f"{arg(i)} along axis {axes[i]}" for i in v)
                             for s, v in sorted(sizes.items()))
            raise TransformError(f"vmap: inconsistent sizes of the mapped axes: {desc}{_where()}")
        size = next(iter(sizes))
        ex_types = [TensorType(tuple(s for k, s in enumerate(x.shape) if k != a) if a is not None else x.shape,
                               x.dtype) for x, a in zip(leaves, axes)]
        graph, out_tree, captures = trace_to_graph(lambda c: fn(*c[0], **c[1]), ex_types, name=_name(fn),
                                                   wrap_args=lambda ts: (call.rebuild(ts),), what="vmap")
        moved = [ops.movedim(x, a, 0) if a not in (None, 0) else x for x, a in zip(leaves, axes)]
        bg, flags = batch_graph(graph, [a is not None for a in axes] + [False] * len(captures), size)
        outs = inline_graph(bg, moved + captures)
        out_struct = pytree.unflatten(out_tree, list(outs))  # (tensors: an error says "one tensor")
        oprefix = tuple(out_axes) if isinstance(out_axes, list) else out_axes
        try:
            oaxes = pytree.broadcast_prefix(oprefix, out_struct, what="out_axes") \
                if isinstance(oprefix, (tuple, dict)) else [oprefix] * len(outs)
        except ValueError as e:
            raise TransformError(f"vmap: out_axes does not match the outputs: {e}{_where()}") from None
        res = []
        for i, (o, f, oa) in enumerate(zip(outs, flags, oaxes)):
            if oa is None:
                if f:
                    raise TransformError(f"vmap: out_axes is None for output {i} "
                                         f"({o.dtype.short}{list(o.shape[1:])}), but it depends on the mapped "
                                         f"inputs, so it is batched{_where()}")
                res.append(o)
                continue
            try:
                oa = _norm_axis(oa, len(o.shape) + (0 if f else 1),
                                f"out_axes for output {i} (stacked: "
                                f"{o.dtype.short}[{','.join(map(str, o.shape if f else (size,) + tuple(o.shape)))}])")
            except TransformError as e:
                raise TransformError(f"{e}{_where()}") from None
            if not f:
                o = ops.broadcast_to(ops.expand_dims(o, 0), (size,) + tuple(o.shape))
            res.append(ops.movedim(o, 0, oa) if oa != 0 else o)
        return pytree.unflatten(out_tree, res)

    return GraphFunction(impl, ("vmap", fn_key(fn), _exact(in_axes), _exact(out_axes)),
                         f"vmap_{_name(fn)}", params=param_names(fn),
                         statics=lambda args, kwargs, leaves, tree: _vmap_axes(fn, in_axes, args, kwargs, leaves,
                                                                               tree)[1],
                         label=_call_name("vmap", fn))


# ---------------------------------------------------------------- jit / make_graph


def jit(fn: Callable = None, static_argnums=(), backend: str | None = None, *, static_argnames=(),
        max_steps: int | None = None):
    """Compile fn per input signature (static_argnums / static_argnames are part of the signature,
    not graph inputs; other keyword arguments are traced like positional ones, as in JAX).

    `gd.jit(fn, ...)` returns a `JitFunction`; as a decorator, `@gd.jit` and, with options,
    `@gd.jit(static_argnums=1)` work too (without fn, jit returns the decorator). The signature is
    the shapes, dtypes and pytree structure of the traced arguments plus the values of the
    static ones: a new one traces and compiles fn again, a known one runs the compiled code. A
    Python number passed as an ordinary argument is traced weakly typed, as in JAX's jit: next to
    a tensor it takes that tensor's dtype as a literal would (docs/user_guide.md, "Calling
    conventions").
    `static_argnums` (an int or a tuple of positions; a negative one counts from the end of fn's
    positional parameters, as in JAX) and `static_argnames` (a name or a tuple of
    names; one that names no parameter of a fn without **kwargs warns, as in JAX) mark
    arguments that reach fn as Python values, compared by type and exact value; a
    parameter marked either way is static however it is passed. A static value must be hashable
    or a tuple, list or dict of such values (GraphadError otherwise). `backend`: "tvm" or "numpy"
    for this function (default: `gd.get_backend()` at each compilation).

    `max_steps` bounds every Python `while` (and `for` over a traced range) that graph mode
    converts into a loop node while tracing fn and has no `gd.set_loop_options` of its own: the
    bound reverse-mode differentiation needs (docs/control_flow.md)."""
    if fn is None:
        return lambda f: jit(f, static_argnums, backend, static_argnames=static_argnames, max_steps=max_steps)
    _check_callable(fn, "jit")
    from .frontend.jit import JitFunction
    return JitFunction(fn, static_argnums, backend, static_argnames=static_argnames, max_steps=max_steps)


def make_graph(fn: Callable, optimize: bool = True):
    """make_graph(fn)(*args) -> the optimised graph IR of fn at those arguments' types.

    The result is the IR graph (print it for its text, docs/ir.md). `optimize=False` gives the graph
    as traced, before the pass pipeline (docs/passes.md)."""
    _check_callable(fn, "make_graph")

    def build(*args, **kwargs) -> Graph:
        g = GraphFunction(lambda *a, **k: fn(*a, **k), ("make_graph", fn_key(fn)), _name(fn), params=param_names(fn))
        if kwargs:
            flat = flatten_call(args, kwargs)
            leaves, tree = split_call(args, kwargs, keyword_statics(args, kwargs, *flat), _call_name("make_graph", fn),
                                      param_names(fn), flat)
        else:
            leaves, tree = _flat_args(args)
        graph, _, _ = g.trace(leaves, tree, optimize=optimize)
        return graph
    return build


def stop_gradient(x):
    """Identity whose derivative is zero in every mode; on a pytree (tuple, list, dict of tensors)
    it applies to every leaf and keeps the structure (as JAX's)."""
    from . import ops
    if isinstance(x, (tuple, list, dict)):
        return pytree.tree_map(ops.stop_gradient, x)
    return ops.stop_gradient(x)
