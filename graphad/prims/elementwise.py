"""Elementwise primitives: unary math, broadcasting binary arithmetic, comparisons, where, casts.

Each unary primitive declares d(x, y) = dy/dx in one line; its jvp (t * d) and vjp (ct * d) are
built from it. Binary primitives broadcast like NumPy and take operands of equal dtype (graphad.ops
promotes first); their vjps sum cotangents back to each operand's shape.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..ir.core import TensorType
from ._util import (add_any, is_float_array, batch_broadcasting, bcast, broadcast_shapes, require_float, same_dtype,
                    unbroadcast)
from .registry import Primitive, ops, register

# ---------------------------------------------------------------- unary


def _unary_shape(float_only: bool):
    def rule(x: TensorType):
        if float_only:
            require_float(x)
        elif x.dtype.is_bool:
            from ..errors import DTypeError
            raise DTypeError("bool operand; cast it first")
        return TensorType(x.shape, x.dtype)
    return rule


def _unary_batch(prim_ref):
    def batch(args, dims, **attrs):
        return [prim_ref[0].bind(args[0], **attrs)], [dims[0]]
    return batch


def _unary(name: str, impl, deriv=None, *, float_only=True, formula: str = "", zero_deriv: bool = False,
           nondiff: str | None = None, shape_rule=None):
    """Register a unary elementwise primitive with derivative `deriv(x, y) -> dy/dx`."""
    ref: list = []
    jvp = vjp = None
    if deriv is not None:
        def jvp(primals, tangents, outs, **attrs):
            return [ops.mul(tangents[0], deriv(primals[0], outs[0]))]

        def vjp(cts, primals, outs, **attrs):
            return [ops.mul(cts[0], deriv(primals[0], outs[0]))]
    elif zero_deriv:
        def jvp(primals, tangents, outs, **attrs):
            return [None]

        def vjp(cts, primals, outs, **attrs):
            return [None]
    p = register(Primitive(name, shape_rule=shape_rule or _unary_shape(float_only), impl=impl, jvp=jvp, vjp=vjp,
                           batch=_unary_batch(ref), traits=("elementwise", "unary"), formula=formula,
                           nondiff=nondiff))
    ref.append(p)
    return p


def _erf(a):
    return np.vectorize(math.erf, otypes=[np.float64])(a).astype(a.dtype) if a.size else a.copy()


def _sigmoid(a):
    """1 / (1 + e^-x) with relative accuracy in both tails: e^x / (1 + e^x) for x < 0.

    (0.5 * (tanh(x / 2) + 1) cancels for negative x: sigmoid(-40) came out 0, not 4.2e-18.)
    Narrower floats are evaluated in float64 and rounded once.
    """
    x = a.astype(np.float64) if a.dtype.itemsize < 8 else a
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype)


_SQRT_PI_2 = 2.0 / math.sqrt(math.pi)

neg = register(Primitive(
    "neg", shape_rule=_unary_shape(False), impl=np.negative, formula="y = -x; dy = -dx",
    jvp=lambda p, t, o: [ops.neg(t[0])], vjp=lambda c, p, o: [ops.neg(c[0])],
    batch=lambda a, d: ([ops.neg(a[0])], [d[0]]), traits=("elementwise", "unary", "linear")))

abs_ = _unary("abs", np.abs, lambda x, y: ops.sign(x), float_only=False, formula="y = |x|; dy = sign(x) dx")
abs = abs_  # noqa: A001  (graphad.ops.abs binds elementwise.abs; no builtin abs is used in this module)
sign = _unary("sign", np.sign, None, float_only=False, zero_deriv=True, formula="y = sign(x); dy = 0")
exp = _unary("exp", np.exp, lambda x, y: y, formula="y = e^x; dy = y dx")
log = _unary("log", np.log, lambda x, y: ops.reciprocal(x), formula="y = log x; dy = dx / x")
log1p = _unary("log1p", np.log1p, lambda x, y: ops.reciprocal(ops.add(x, 1.0)), formula="dy = dx / (1 + x)")
expm1 = _unary("expm1", np.expm1, lambda x, y: ops.add(y, 1.0), formula="dy = (y + 1) dx")
sqrt = _unary("sqrt", np.sqrt, lambda x, y: ops.div(0.5, y), formula="dy = dx / (2 y)")
rsqrt = _unary("rsqrt", lambda a: 1.0 / np.sqrt(a), lambda x, y: ops.mul(ops.div(y, x), -0.5),
               formula="y = x^-1/2; dy = -y / (2x) dx")
square = _unary("square", np.square, lambda x, y: ops.mul(x, 2.0), float_only=False, formula="dy = 2x dx")
reciprocal = _unary("reciprocal", lambda a: 1.0 / a, lambda x, y: ops.neg(ops.square(y)), formula="dy = -y^2 dx")
sin = _unary("sin", np.sin, lambda x, y: ops.cos(x), formula="dy = cos(x) dx")
cos = _unary("cos", np.cos, lambda x, y: ops.neg(ops.sin(x)), formula="dy = -sin(x) dx")
tan = _unary("tan", np.tan, lambda x, y: ops.add(ops.square(y), 1.0), formula="dy = (1 + y^2) dx")
tanh = _unary("tanh", np.tanh, lambda x, y: ops.sub(1.0, ops.square(y)), formula="dy = (1 - y^2) dx")
sigmoid = _unary("sigmoid", _sigmoid, lambda x, y: ops.mul(y, ops.sub(1.0, y)), formula="dy = y (1 - y) dx")
relu = _unary("relu", lambda a: np.maximum(a, 0).astype(a.dtype),
              lambda x, y: ops.astype(ops.greater(x, 0.0), x.dtype), float_only=False,
              formula="y = max(x, 0); dy = [x > 0] dx")
erf = _unary("erf", _erf, lambda x, y: ops.mul(ops.exp(ops.neg(ops.square(x))), _SQRT_PI_2),
             formula="dy = 2/sqrt(pi) e^(-x^2) dx")
floor = _unary("floor", np.floor, None, zero_deriv=True, formula="dy = 0")
logical_not = _unary("logical_not", np.logical_not, None, float_only=False, nondiff="boolean output",
                     formula="y = not x (bool); no derivative", shape_rule=lambda x: TensorType(x.shape, dt.bool_))

# ---------------------------------------------------------------- binary


def _binary_shape(x: TensorType, y: TensorType):
    d = same_dtype(x, y)
    return TensorType(broadcast_shapes(x.shape, y.shape), d)


def _binary_batch(ref):
    def batch(args, dims, **attrs):
        a, b = batch_broadcasting(args, dims)
        return [ref[0].bind(a, b, **attrs)], [0]
    return batch


def _binary(name, impl, jvp, vjp, traits=(), formula=""):
    ref: list = []
    p = register(Primitive(name, shape_rule=_binary_shape, impl=impl, jvp=jvp, vjp=vjp, batch=_binary_batch(ref),
                           traits=("elementwise", "binary") + tuple(traits), formula=formula))
    ref.append(p)
    return p


def _out_tangent(t, shape):
    return None if t is None else bcast(t, shape)


def _add_jvp(p, t, o):
    s = o[0].shape
    return [add_any(_out_tangent(t[0], s), _out_tangent(t[1], s))]


def _sub_jvp(p, t, o):
    s = o[0].shape
    a = _out_tangent(t[0], s)
    b = _out_tangent(t[1], s)
    if b is None:
        return [a]
    return [ops.neg(b) if a is None else ops.sub(a, b)]


def _mul_jvp(p, t, o):
    s = o[0].shape
    a = None if t[0] is None else bcast(ops.mul(t[0], p[1]), s)
    b = None if t[1] is None else bcast(ops.mul(p[0], t[1]), s)
    return [add_any(a, b)]


def _div_jvp(p, t, o):
    s = o[0].shape
    a = None if t[0] is None else bcast(ops.div(t[0], p[1]), s)
    b = None if t[1] is None else ops.neg(ops.div(ops.mul(o[0], t[1]), p[1]))
    return [add_any(a, b)]


def _pow_partials(x, y, out):
    # d/dx x^y = y x^(y-1), with 0 * 0^-1 taken as 0 only at x == y == 0 (guarding on y == 0 alone
    # would cut the y-dependence of this partial: d/dy d/dx x^y at y = 0 is 1/x, not 0, which the
    # other order already gave; JAX issue 12033); d/dy x^y = x^y log x (0 where x == 0)
    both_zero = ops.equal(ops.where(ops.equal(y, 0.0), x, ops.ones_like(x)), 0.0)
    dx = ops.where(both_zero, ops.zeros_like(out), ops.mul(y, ops.pow(x, ops.sub(y, 1.0))))
    safe_x = ops.where(ops.equal(x, 0.0), ops.ones_like(x), x)
    dy = ops.mul(out, ops.log(safe_x))
    return dx, dy


def _pow_jvp(p, t, o):
    dx, dy = _pow_partials(p[0], p[1], o[0])
    a = None if t[0] is None else ops.mul(t[0], dx)
    b = None if t[1] is None else ops.mul(t[1], dy)
    s = o[0].shape
    return [add_any(None if a is None else bcast(a, s), None if b is None else bcast(b, s))]


def _pow_vjp(c, p, o):
    dx, dy = _pow_partials(p[0], p[1], o[0])
    return [unbroadcast(ops.mul(c[0], dx), p[0].shape), unbroadcast(ops.mul(c[0], dy), p[1].shape)]


def _minmax_weights(x, y, greater: bool):
    """Weights of x and y in max(x, y) (min when not greater); ties split evenly as in JAX."""
    wins = ops.greater(x, y) if greater else ops.less(x, y)
    d = x.dtype
    wx = ops.add(ops.astype(wins, d), ops.mul(ops.astype(ops.equal(x, y), d), 0.5))
    return wx, ops.sub(1.0, wx)


def _minmax(greater):
    def jvp(p, t, o):
        wx, wy = _minmax_weights(p[0], p[1], greater)
        s = o[0].shape
        a = None if t[0] is None else bcast(ops.mul(t[0], wx), s)
        b = None if t[1] is None else bcast(ops.mul(t[1], wy), s)
        return [add_any(a, b)]

    def vjp(c, p, o):
        wx, wy = _minmax_weights(p[0], p[1], greater)
        return [unbroadcast(ops.mul(c[0], wx), p[0].shape), unbroadcast(ops.mul(c[0], wy), p[1].shape)]
    return jvp, vjp


add = _binary("add", np.add, _add_jvp,
              lambda c, p, o: [unbroadcast(c[0], p[0].shape), unbroadcast(c[0], p[1].shape)],
              traits=("linear", "commutative"), formula="d(x + y) = dx + dy")
sub = _binary("sub", np.subtract, _sub_jvp,
              lambda c, p, o: [unbroadcast(c[0], p[0].shape), unbroadcast(ops.neg(c[0]), p[1].shape)],
              traits=("linear",), formula="d(x - y) = dx - dy")
mul = _binary("mul", np.multiply, _mul_jvp,
              lambda c, p, o: [unbroadcast(ops.mul(c[0], p[1]), p[0].shape),
                               unbroadcast(ops.mul(c[0], p[0]), p[1].shape)],
              traits=("commutative",), formula="d(x y) = dx y + x dy")
div = _binary("div", lambda a, b: np.true_divide(a, b) if is_float_array(a) else _int_div(a, b), _div_jvp,
              lambda c, p, o: [unbroadcast(ops.div(c[0], p[1]), p[0].shape),
                               unbroadcast(ops.neg(ops.div(ops.mul(c[0], o[0]), p[1])), p[1].shape)],
              formula="d(x / y) = dx / y - (x / y) dy / y")
pow_ = _binary("pow", lambda a, b: np.power(a, b), _pow_jvp, _pow_vjp,
               formula="d(x^y) = y x^(y-1) dx + x^y log(x) dy")
maximum = _binary("maximum", np.maximum, *_minmax(True), traits=("commutative",),
                  formula="d max(x, y) = [x > y] dx + [x < y] dy (ties split)")
minimum = _binary("minimum", np.minimum, *_minmax(False), traits=("commutative",),
                  formula="d min(x, y) = [x < y] dx + [x > y] dy (ties split)")


def _int_div(a, b):
    """Integer division truncating toward zero (C semantics, as TVM and MindSpore do)."""
    with np.errstate(all="ignore"):
        q = np.trunc(np.true_divide(a, b))
    return q.astype(a.dtype)


# ---------------------------------------------------------------- comparisons, where, casts


def _compare_shape(x, y):
    same_dtype(x, y)
    return TensorType(broadcast_shapes(x.shape, y.shape), dt.bool_)


def _compare(name, impl, formula):
    ref: list = []
    p = register(Primitive(name, shape_rule=_compare_shape, impl=impl, batch=_binary_batch(ref),
                           nondiff="boolean output", traits=("elementwise", "binary", "comparison"),
                           formula=f"{formula} (bool, broadcasting); no derivative"))
    ref.append(p)
    return p


equal = _compare("equal", np.equal, "y = [x == y]")
not_equal = _compare("not_equal", np.not_equal, "y = [x != y]")
less = _compare("less", np.less, "y = [x < y]")
less_equal = _compare("less_equal", np.less_equal, "y = [x <= y]")
greater = _compare("greater", np.greater, "y = [x > y]")
greater_equal = _compare("greater_equal", np.greater_equal, "y = [x >= y]")


def _where_shape(c, x, y):
    if not c.dtype.is_bool:
        from ..errors import DTypeError
        raise DTypeError(f"condition must be bool, got {c.dtype.name}")
    d = same_dtype(x, y)
    return TensorType(broadcast_shapes(c.shape, x.shape, y.shape), d)


def _where_jvp(p, t, o):
    if t[1] is None and t[2] is None:
        return [None]
    s = o[0].shape
    a = t[1] if t[1] is not None else ops.zeros_like(p[1])
    b = t[2] if t[2] is not None else ops.zeros_like(p[2])
    return [bcast(ops.where(p[0], a, b), s)]


def _where_vjp(c, p, o):
    z = ops.zeros_like(c[0])
    return [None, unbroadcast(ops.where(p[0], c[0], z), p[1].shape),
            unbroadcast(ops.where(p[0], z, c[0]), p[2].shape)]


def _where_batch(args, dims):
    a = batch_broadcasting(args, dims)
    return [where.bind(*a)], [0]


where = register(Primitive("where", shape_rule=_where_shape, impl=np.where, jvp=_where_jvp, vjp=_where_vjp,
                           batch=_where_batch, nondiff_inputs=(0,), traits=("elementwise",),
                           formula="d where(c, x, y) = where(c, dx, dy)"))


def _astype_shape(x, dtype):
    return TensorType(x.shape, dt.as_dtype(dtype))


def _astype_impl(a, dtype):
    return a.astype(dt.as_dtype(dtype).np)


def _astype_jvp(p, t, o, dtype):
    d = dt.as_dtype(dtype)
    if t[0] is None or not d.is_float or not p[0].dtype.is_float:
        return [None]
    return [ops.astype(t[0], d)]


def _astype_vjp(c, p, o, dtype):
    if not p[0].dtype.is_float or not dt.as_dtype(dtype).is_float:
        return [None]
    return [ops.astype(c[0], p[0].dtype)]


astype = register(Primitive("astype", shape_rule=_astype_shape, impl=_astype_impl, jvp=_astype_jvp,
                            vjp=_astype_vjp, batch=lambda a, d, dtype: ([astype.bind(a[0], dtype=dtype)], [d[0]]),
                            traits=("elementwise", "unary", "linear"),
                            formula="d astype(x) = astype(dx) (zero unless both types are float)"))

stop_gradient = register(Primitive(
    "stop_gradient", shape_rule=lambda x: TensorType(x.shape, x.dtype), impl=lambda a: a.copy(),
    jvp=lambda p, t, o: [None], vjp=lambda c, p, o: [None],
    batch=lambda a, d: ([stop_gradient.bind(a[0])], [d[0]]), traits=("elementwise", "unary", "stop_gradient"),
    formula="y = x; dy = 0"))
