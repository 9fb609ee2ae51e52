"""complex-split: every complex value as a pair of real tensors, so that TVM can compile it.

TVM 0.27 has no complex dtype. `split_complex(graph)` rewrites an already-transformed graph (the
autodiff passes ran before, unchanged) into a real graph: a complex64 value becomes two float32
tensors of its shape (real part, imaginary part), a complex128 value two float64 tensors, and
each complex primitive becomes real primitives on the pairs. A complex graph input becomes two
inputs (`name.re`, `name.im`), a complex output two outputs; `ComplexSplit.inputs/outputs` say
which, and the runner splits and merges at the boundary (runtime/complex_io.py).

The formulas are NumPy's (and, for exp, sin, cos and tanh, glibc's, which NumPy calls), so that
for the same real kernels the results are NumPy's: `a * b` is (ar br - ai bi, ar bi + ai br),
division and reciprocal are Smith's algorithm with NumPy's branch on |br| >= |bi|, `abs` is hypot,
`pow` by a constant integer exponent repeats NumPy's products, other powers are
exp(b log a) as C's cpow; sinh, cosh, tan, exp2, log2, log10, log1p, expm1, sigmoid and prod
are NumPy's formulas over these (complex64 in complex128, rounded once, as the interpreter's
kernels). Special values (inf, NaN, -0.0 parts) follow C99 Annex G where NumPy's
libm does; docs/complex.md lists where the compiled results differ from the interpreter's.

Invariant: the result graph holds no complex value; it computes, for every output, the parts of
the original output. A primitive without a rule here (or a complex value inside a control-flow
region) raises `ComplexSplitUnsupported` naming it, before anything is built: the caller then runs
the original graph on the interpreter, never a partial rewrite.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import GraphadError
from ..ir.core import Graph, Node, TensorType, Value
from ..ir.registry import PRIMITIVES
from .rewrite import PassTrace, finish, replay


class ComplexSplitUnsupported(Exception):
    """The graph holds a complex value that the rewrite has no rule for (the message says which).
    Never a user's error: the runtime catches it and runs the graph on the interpreter."""


class ComplexSplit:
    """The real graph and its boundary: per original input and output, None (a real value, one
    tensor) or the complex dtype's name (two tensors of its part type: real part, imaginary part)."""

    def __init__(self, graph: Graph, inputs: list, outputs: list):
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs


class _Pair:
    """A complex value as (re, im) tracers of one real dtype and one shape."""

    __slots__ = ("re", "im")

    def __init__(self, re, im):
        self.re, self.im = re, im


def _p(name, *args, **attrs):
    return PRIMITIVES[name].bind(*args, **attrs)


def has_complex(graph: Graph) -> bool:
    """Whether `graph` (its regions included) holds a complex value."""
    if any(v.type.dtype.is_complex for v in graph.inputs):
        return True
    for n in graph.nodes:
        if any(o.type.dtype.is_complex for o in n.outputs):
            return True
        if any(has_complex(r) for r in _regions(n)):
            return True
    return False


def _regions(n: Node):
    for a in n.attrs.values():
        for sub in (a if isinstance(a, tuple) else (a,)):
            if isinstance(sub, Graph):
                yield sub


def _touches_complex(n: Node) -> bool:
    return any(v.type.dtype.is_complex for v in n.inputs) or any(o.type.dtype.is_complex for o in n.outputs)


def unsupported(graph: Graph) -> str | None:
    """Why `graph` cannot be split (naming the primitive and its operand types), or None."""
    for n in graph.nodes:
        if any(has_complex(r) for r in _regions(n)):
            return f"{n.prim.name} holds complex values inside its region"
        if not _touches_complex(n):
            continue
        rule = _RULES.get(n.prim.name)
        why = "no real-pair rule" if rule is None else _check(n)
        if why:
            ins = ", ".join(str(v.type) for v in n.inputs)
            return f"{n.prim.name}({ins}) -> {', '.join(str(o.type) for o in n.outputs)}: {why}"
    return None


def _check(n: Node) -> str | None:
    """A reason a node with a rule still cannot be rewritten (mixed real and complex data)."""
    if n.prim.name in ("complex", "astype", "real", "imag", "abs", "equal", "not_equal"):
        return None
    if n.prim.name == "prod":
        size = int(np.prod([n.inputs[0].type.shape[a] for a in n.attrs["axes"]], dtype=np.int64))
        if size > _PROD_MAX:
            return f"a product of {size} elements (the rule unrolls NumPy's sequential products up to {_PROD_MAX})"
    if n.prim.name == "where":
        data = n.inputs[1:]
    elif n.prim.name in ("take",):
        data = n.inputs[:1]
    elif n.prim.name == "index_add":
        data = [n.inputs[0], n.inputs[2]]
    else:
        data = n.inputs
    if not all(v.type.dtype.is_complex for v in data):
        return "mixes real and complex operands"
    return None


def split_complex(graph: Graph) -> ComplexSplit:
    """The real-pair form of `graph` (see the module docstring); raises ComplexSplitUnsupported."""
    why = unsupported(graph)
    if why is not None:
        raise ComplexSplitUnsupported(why)
    in_layout, out_layout = [], []
    with PassTrace(graph.name) as tr:
        env: dict[Value, object] = {}
        for v, name in zip(graph.inputs, graph.input_names):
            d = v.type.dtype
            if d.is_complex:
                pt = TensorType(v.type.shape, dt.real_dtype(d))
                env[v] = _Pair(tr.new_arg(pt, f"{name}.re"), tr.new_arg(pt, f"{name}.im"))
                in_layout.append(d.name)
            else:
                env[v] = tr.new_arg(v.type, name)
                in_layout.append(None)
        for n in graph.nodes:
            if not _touches_complex(n):
                replay(n, env)
                continue
            with tr.at(n):
                outs = _RULES[n.prim.name](n, [env[v] for v in n.inputs])
            for o, r in zip(n.outputs, outs):
                _expect(n, o, r)
                env[o] = r
        flat = []
        for v in graph.outputs:
            r = env[v]
            if isinstance(r, _Pair):
                flat += [r.re, r.im]
                out_layout.append(v.type.dtype.name)
            else:
                flat.append(r)
                out_layout.append(None)
    from .cleanup import cse, dce
    return ComplexSplit(dce(cse(finish(tr, flat))), in_layout, out_layout)


def _expect(n: Node, o: Value, r) -> None:
    t = o.type
    if t.dtype.is_complex:
        want = TensorType(t.shape, dt.real_dtype(t.dtype))
        got = [r.re, r.im] if isinstance(r, _Pair) else [r]
    else:
        want, got = t, [r]
    for x in got:
        if isinstance(x, _Pair) or tuple(x.shape) != want.shape or x.dtype is not want.dtype:
            raise GraphadError(f"internal: the complex-split rule of {n.describe()} gave "
                               f"{'a pair' if isinstance(x, _Pair) else f'{x.dtype.short}{list(x.shape)}'} for {t}")


# ---------------------------------------------------------------- real arithmetic helpers

def _c(value, like):
    """A scalar constant of `like`'s dtype."""
    d = like.dtype
    return _p("constant", value=np.asarray(value, d.np), dtype=d.name)


def add(a, b): return _p("add", a, b)
def sub(a, b): return _p("sub", a, b)
def mul(a, b): return _p("mul", a, b)
def div(a, b): return _p("div", a, b)
def neg(a): return _p("neg", a)
def where(c, a, b): return _p("where", c, a, b)
def _abs(a): return _p("abs", a)
def lt(a, b): return _p("less", a, b)
def gt(a, b): return _p("greater", a, b)
def ge(a, b): return _p("greater_equal", a, b)
def eq(a, b): return _p("equal", a, b)
def ne(a, b): return _p("not_equal", a, b)
def f_and(a, b): return _p("mul", a, b)   # bool * bool: and (ops.logical_and's spelling)
def f_or(a, b): return _p("add", a, b)    # bool + bool: or
def f_not(a): return _p("logical_not", a)
def isnan(a): return ne(a, a)
def isinf(a): return eq(_abs(a), _c(np.inf, a))
def isfinite(a): return lt(_abs(a), _c(np.inf, a))


def copysign(mag, sign):
    """|mag| with the sign bit of `sign` (NaN's sign bit included): where(signbit(sign), -|m|, |m|)."""
    m = _abs(mag)
    return where(_signbit(sign), neg(m), m)


def _signbit(x):
    # the sign bit without a bit cast: negative, or a zero whose reciprocal is -inf; NaN: its sign
    # bit is not observable this way, so a NaN counts as positive (the rules pass NaN through)
    zero = _c(0.0, x)
    return f_or(lt(x, zero), f_and(eq(x, zero), lt(div(_c(1.0, x), x), zero)))


def _zeros_like(x):
    return _p("full", shape=tuple(x.shape), value=0.0, dtype=x.dtype.name)


def _bcast(x, shape):
    return x if tuple(x.shape) == tuple(shape) else _p("broadcast_to", x, shape=tuple(shape))


def _consts(x):
    d = x.dtype
    fi = np.finfo(d.np)
    return fi, float(fi.tiny), float(fi.max)


# ---------------------------------------------------------------- complex arithmetic (NumPy's formulas)

def cmul(a: _Pair, b: _Pair) -> _Pair:
    # NumPy's product: (ar br - ai bi) + (ar bi + ai br) j. NumPy's SIMD loop rounds once in
    # fma(ar, br, -(ai bi)) and fma(ar, bi, ai br); the compiled code contracts the second operand
    # of an add and the first of a subtraction, hence this order (tests/test_complex_compiled.py)
    return _Pair(sub(mul(a.re, b.re), mul(a.im, b.im)), add(mul(a.im, b.re), mul(a.re, b.im)))


def csquare(a: _Pair) -> _Pair:
    # NumPy's square: (ar ar - ai ai) + 2 (ar ai) j (its imaginary part is the doubled product)
    return _Pair(sub(mul(a.re, a.re), mul(a.im, a.im)), mul(mul(a.re, a.im), _c(2.0, a.re)))


def cdiv(a: _Pair, b: _Pair) -> _Pair:
    """NumPy's complex division (Smith's algorithm), branch for branch, with one set of divisions:

        |br| >= |bi| (not both 0): rat = bi / br, scl = 1 / (br + bi rat),
                                   ((ar + ai rat) scl, (ai - ar rat) scl)
        |br| >= |bi|, both 0:      (ar / |br|, ai / |br|) = (ar inf, ai inf) exactly
        else (NaN included):       rat = br / bi, scl = 1 / (bi + br rat),
                                   ((ar rat + ai) scl, (ai rat - ar) scl)

    The two general branches are one formula on operands swapped by `where`: with (p, q) = (br, bi)
    or (bi, br) and (u, v) = (ar, ai) or (ai, ar), rat = q / p, scl = 1 / (p + q rat), the real
    part is (u + v rat) scl and the imaginary part (v - u rat) scl or (u rat - v) scl."""
    br_abs, bi_abs = _abs(b.re), _abs(b.im)
    first = ge(br_abs, bi_abs)                   # false when either is NaN: the second branch
    zero = _c(0.0, br_abs)
    both_zero = f_and(eq(br_abs, zero), eq(bi_abs, zero))
    p, q = where(first, b.re, b.im), where(first, b.im, b.re)
    u, v = where(first, a.re, a.im), where(first, a.im, a.re)
    rat = div(q, p)
    scl = div(_c(1.0, br_abs), add(p, mul(q, rat)))
    re = mul(add(u, mul(v, rat)), scl)
    ur = mul(u, rat)
    im = mul(where(first, sub(v, ur), sub(ur, v)), scl)  # not -(v - u rat): x - y is +0 when y - x is
    inf = _c(np.inf, br_abs)
    return _Pair(where(both_zero, mul(a.re, inf), re), where(both_zero, mul(a.im, inf), im))


def _one_pair(like: _Pair) -> _Pair:
    return _Pair(_bcast(_c(1.0, like.re), like.re.shape), _bcast(_c(0.0, like.re), like.re.shape))


def cexp(z: _Pair) -> _Pair:
    """glibc's cexp (which NumPy calls), case for case: e^x (cos y + i sin y), scaled past exp's
    overflow threshold, with C99's special values for infinite and NaN parts."""
    x, y = z.re, z.im
    fi, tiny, big = _consts(x)
    t = float(int((fi.maxexp - 1) * np.log(2.0)))  # 709 (float64), 88 (float32), as glibc
    ay = _abs(y)
    small_y = _p("less_equal", ay, _c(tiny, y))  # false for NaN
    s = where(small_y, y, _p("sin", y))
    c = where(small_y, _bcast(_c(1.0, y), y.shape), _p("cos", y))
    exp_t = _p("exp", _c(t, x))
    tc = _c(t, x)
    over1 = gt(x, tc)
    x1 = where(over1, sub(x, tc), x)
    s = where(over1, mul(s, exp_t), s)
    c = where(over1, mul(c, exp_t), c)
    over2 = gt(x1, tc)
    x2 = where(over2, sub(x1, tc), x1)
    s = where(over2, mul(s, exp_t), s)
    c = where(over2, mul(c, exp_t), c)
    over3 = gt(x2, tc)
    ev = _p("exp", x2)
    re = where(over3, mul(_c(big, x), c), mul(ev, c))
    im = where(over3, mul(_c(big, x), s), mul(ev, s))
    # x = +-inf: e^x is +inf or 0, signed like cos y, sin y; y = 0 keeps y
    inf = _c(np.inf, x)
    value = where(lt(x, _c(0.0, x)), _bcast(_c(0.0, x), x.shape), _bcast(inf, x.shape))
    fin_y = isfinite(y)
    zero_y = eq(y, _c(0.0, y))
    sy, cy = _p("sin", y), _p("cos", y)
    re_inf = where(zero_y, value, copysign(value, cy))
    im_inf = where(zero_y, y, copysign(value, sy))
    # x = +inf, y inf or NaN: (inf, NaN); x = -inf, y inf or NaN: (0, +-0)
    nan = _bcast(_c(np.nan, x), x.shape)
    re_inf = where(fin_y, re_inf, value)
    im_inf = where(fin_y, im_inf, where(lt(x, _c(0.0, x)), copysign(_c(0.0, y), y), nan))
    x_inf = isinf(x)
    re = where(x_inf, re_inf, re)
    im = where(x_inf, im_inf, im)
    # x NaN: (NaN, y) when y = 0, else (NaN, NaN); x finite, y not: (NaN, NaN) (the formula's)
    im = where(f_and(isnan(x), zero_y), y, im)
    re = where(isnan(x), nan, re)
    return _Pair(re, im)


def clog(z: _Pair) -> _Pair:
    """log|z| + i atan2(y, x); near |z| = 1 the real part is log1p((m - 1)(m + 1) + n^2) / 2
    (m = max(|x|, |y|), n the other), which keeps it accurate where log|z| cancels."""
    x, y = z.re, z.im
    h = _p("hypot", x, y)
    ax, ay = _abs(x), _abs(y)
    m = _p("maximum", ax, ay)
    n = _p("minimum", ax, ay)
    one = _c(1.0, x)
    near = f_and(ge(m, _c(0.5, x)), f_and(lt(h, _c(1.5, x)), gt(h, _c(0.75, x))))
    near = f_and(near, f_and(isfinite(x), isfinite(y)))
    q = add(mul(sub(m, one), add(m, one)), mul(n, n))
    re = where(near, mul(_p("log1p", q), _c(0.5, x)), _p("log", h))
    return _Pair(re, _p("arctan2", y, x))


def csqrt(z: _Pair) -> _Pair:
    """glibc's csqrt (which NumPy calls): the stable halving formula, with its scaling of huge
    operands and C99's special values."""
    x, y = z.re, z.im
    fi, tiny, big = _consts(x)
    zero, half = _c(0.0, x), _c(0.5, x)
    ax, ay = _abs(x), _abs(y)
    huge = f_or(gt(ax, _c(big / 4, x)), gt(ay, _c(big / 4, x)))
    k = where(huge, _bcast(_c(0.25, x), x.shape), _bcast(_c(1.0, x), x.shape))
    xs, ys = mul(x, k), mul(y, k)
    d = _p("hypot", xs, ys)
    pos = gt(xs, zero)
    r_pos = _p("sqrt", mul(half, add(d, xs)))
    s_pos = mul(half, div(ys, r_pos))
    s_neg = _p("sqrt", mul(half, sub(d, xs)))
    r_neg = _abs(mul(half, div(ys, s_neg)))
    r = where(pos, r_pos, r_neg)
    s = where(pos, s_pos, s_neg)
    back = where(huge, _bcast(_c(2.0, x), x.shape), _bcast(_c(1.0, x), x.shape))
    r, s = mul(r, back), mul(s, back)
    re, im = r, copysign(s, y)
    # y = 0: sqrt of a real number
    y0 = eq(y, zero)
    re_y0 = where(lt(x, zero), _bcast(zero, x.shape), _abs(_p("sqrt", x)))
    im_y0 = where(lt(x, zero), copysign(_p("sqrt", neg(x)), y), copysign(zero, y))
    # x = 0, y != 0: r = sqrt(|y| / 2) for both parts
    r0 = _p("sqrt", mul(half, ay))
    x0 = f_and(eq(x, zero), f_not(y0))
    re = where(x0, r0, where(y0, re_y0, re))
    im = where(x0, copysign(r0, y), where(y0, im_y0, im))
    # non-finite parts (C99 Annex G, as glibc)
    inf, nan = _bcast(_c(np.inf, x), x.shape), _bcast(_c(np.nan, x), x.shape)
    y_inf, x_inf, y_nan = isinf(y), isinf(x), isnan(y)
    neg_x = lt(x, zero)
    re_xinf = where(neg_x, where(y_nan, nan, _bcast(zero, x.shape)), x)
    im_xinf = where(neg_x, copysign(inf, y), where(y_nan, nan, copysign(zero, y)))
    any_nan = f_or(isnan(x), y_nan)
    re = where(y_inf, inf, where(x_inf, re_xinf, where(any_nan, nan, re)))
    im = where(y_inf, y, where(x_inf, im_xinf, where(any_nan, nan, im)))
    return _Pair(re, im)


def _small_sincos(x):
    """glibc's (sin x, cos x) with |x| <= the smallest normal taken as (x, 1)."""
    fi, tiny, big = _consts(x)
    small = _p("less_equal", _abs(x), _c(tiny, x))  # false for NaN
    return where(small, x, _p("sin", x)), where(small, _bcast(_c(1.0, x), x.shape), _p("cos", x))


def _scaled_exp(u, p, q):
    """glibc's csin/ccosh past cosh's overflow (u = |y| > t): (e^u / 2) p and (e^u / 2) q, with
    e^u taken as e^t factors so that a finite result stays finite. Returns (big, P, Q)."""
    fi, tiny, big = _consts(u)
    t = float(int((fi.maxexp - 1) * np.log(2.0)))
    tc = _c(t, u)
    exp_t = _p("exp", tc)
    half_t = mul(exp_t, _c(0.5, u))
    is_big = gt(u, tc)
    u1 = sub(u, tc)
    p, q = mul(p, half_t), mul(q, half_t)
    two = gt(u1, tc)
    u2 = where(two, sub(u1, tc), u1)
    p, q = where(two, mul(p, exp_t), p), where(two, mul(q, exp_t), q)
    over = gt(u2, tc)
    ev = _p("exp", u2)
    mx = _c(big, u)
    return is_big, where(over, mul(mx, p), mul(ev, p)), where(over, mul(mx, q), mul(ev, q))


def _cosh_sinh_times(t, u, v):
    """(cosh(t) u, sinh(t) v), as glibc's csin/ccos compute them: through a scaled exp where
    cosh t overflows but the products need not (`_scaled_exp`)."""
    re = mul(_p("cosh", t), u)
    im = mul(_p("sinh", t), v)
    is_big, re_b, im_b = _scaled_exp(_abs(t), u, where(lt(t, _c(0.0, t)), neg(v), v))
    return where(is_big, re_b, re), where(is_big, im_b, im)


def csin(z: _Pair) -> _Pair:
    """glibc's csin: sin x cosh y + i cos x sinh y, with C99's special values."""
    x, y = z.re, z.im
    zero = _c(0.0, x)
    inf, nan = _bcast(_c(np.inf, x), x.shape), _bcast(_c(np.nan, x), x.shape)
    s, c = _small_sincos(x)
    re, im = _cosh_sinh_times(y, s, c)
    fx, fy = isfinite(x), isfinite(y)
    y0 = eq(y, zero)
    x0 = eq(x, zero)
    # x inf or NaN, y finite: (NaN, y) when y = 0, else (NaN, NaN)
    re = where(fy, where(fx, re, nan), re)
    im = where(fy, where(fx, im, where(y0, y, nan)), im)
    # y infinite: x = 0 -> (x, y); x finite -> (inf sign(sin x), inf sign(cos x) sign(y)); else (NaN, inf)
    re_yinf = where(x0, x, where(fx, copysign(inf, s), nan))
    im_yinf = where(x0, y, where(fx, copysign(inf, mul(c, y)), inf))
    # y NaN: x = 0 -> (x, NaN), else (NaN, NaN)
    re_ynan = where(x0, x, nan)
    yi = isinf(y)
    re = where(yi, re_yinf, where(isnan(y), re_ynan, re))
    im = where(yi, im_yinf, where(isnan(y), nan, im))
    return _Pair(re, im)


def ccos(z: _Pair) -> _Pair:
    """glibc's ccos(z) = ccosh(-y + i x): cosh(-y) cos x + i sinh(-y) sin x, special values included."""
    x, y = z.re, z.im
    a, b = neg(y), x  # ccosh(a + i b)
    zero = _c(0.0, x)
    inf, nan = _bcast(_c(np.inf, x), x.shape), _bcast(_c(np.nan, x), x.shape)
    s, c = _small_sincos(b)
    re, im = _cosh_sinh_times(a, c, s)
    fa, fb = isfinite(a), isfinite(b)
    a0, b0 = eq(a, zero), eq(b, zero)
    # ccosh: a finite, b inf/NaN: (NaN, 0 with a's sign... ) when a = 0 -> (NaN, 0), else (NaN, NaN)
    re = where(fa, where(fb, re, nan), re)
    im = where(fa, where(fb, im, where(a0, _bcast(zero, x.shape), nan)), im)
    # a infinite: b = 0 -> (inf, b * copysign(1, a)); b finite -> (inf sign(cos b), inf sign(sin b) sign(a));
    # b inf/NaN -> (inf, NaN)
    ai = isinf(a)
    re_ainf = where(fb, where(b0, inf, copysign(inf, c)), inf)
    im_ainf = where(fb, where(b0, mul(b, copysign(_c(1.0, x), a)), copysign(inf, mul(s, a))), nan)
    # a NaN: b = 0 -> (NaN, b), else (NaN, NaN)
    an = isnan(a)
    re = where(ai, re_ainf, where(an, nan, re))
    im = where(ai, im_ainf, where(an, where(b0, b, nan), im))
    return _Pair(re, im)


def ctanh(z: _Pair) -> _Pair:
    """glibc's ctanh: (sinh x cosh x + i sin y cos y) / (sinh^2 x + cos^2 y), its large-|x| form
    and C99's special values."""
    x, y = z.re, z.im
    fi, tiny, big = _consts(x)
    zero, one = _c(0.0, x), _c(1.0, x)
    nan = _bcast(_c(np.nan, x), x.shape)
    t = float(int((fi.maxexp - 1) * np.log(2.0) / 2))  # 354 (float64), 44 (float32)
    s, c = _small_sincos(y)
    ax = _abs(x)
    small_x = _p("less_equal", ax, _c(tiny, x))
    sh = where(small_x, x, _p("sinh", x))
    ch = where(small_x, _bcast(one, x.shape), _p("cosh", x))
    den = where(gt(_abs(sh), mul(_abs(c), _c(float(fi.eps), x))), add(mul(sh, sh), mul(c, c)), mul(c, c))
    re = div(mul(sh, ch), den)
    im = div(mul(s, c), den)
    # |x| > t: re = sign(x), im = 4 sin y cos y / e^(2|x|) (in two steps past 2t)
    tc = _c(t, x)
    exp_2t = _p("exp", _c(2 * t, x))
    big_x = gt(ax, tc)
    xr = sub(ax, tc)
    im_big = div(mul(mul(_c(4.0, x), s), c), exp_2t)
    im_big = where(gt(xr, tc), div(im_big, exp_2t), div(im_big, _p("exp", mul(_c(2.0, x), xr))))
    re = where(big_x, copysign(one, x), re)
    im = where(big_x, im_big, im)
    # non-finite: x inf -> (sign(x), 0 signed like sin y cos y when y finite and |y| > 1, else like y)
    fy = isfinite(y)
    x_inf = isinf(x)
    sgn_src = where(f_and(fy, gt(_abs(y), one)), mul(_p("sin", y), _p("cos", y)), y)
    re = where(x_inf, copysign(one, x), re)
    im = where(x_inf, copysign(zero, sgn_src), im)
    # x finite or NaN with y inf/NaN, or x NaN: (x, y) when y = 0, (x, NaN) when x = 0 (C11's
    # ctanh(0 + i inf) = 0 + i NaN), else (NaN, NaN)
    other = f_and(f_not(x_inf), f_or(f_not(fy), isnan(x)))
    y0 = eq(y, zero)
    re = where(other, where(f_or(y0, eq(x, zero)), x, nan), re)
    im = where(other, where(y0, y, nan), im)
    return _Pair(re, im)


def cpow_general(a: _Pair, b: _Pair) -> _Pair:
    """C's cpow: exp(b log a)."""
    return cexp(cmul(b, clog(a)))


def _const_scalar(v: Value):
    """The value of a scalar complex constant node, else None."""
    n = v.node
    if n is None or n.prim.name != "constant" or v.type.shape != ():
        return None
    return complex(np.asarray(n.attrs["value"]).item())


def cpow(node: Node, a: _Pair, b: _Pair) -> _Pair:
    """NumPy's nc_pow: b = 0 -> 1; a = 0 -> 0 for Re b > 0, else NaN; an integer b of |b| < 100
    known when compiling -> NumPy's products (b = 1, 2, 3 unrolled, else by squaring, then 1 / r for
    b < 0); every other b -> exp(b log a)."""
    bv = _const_scalar(node.inputs[1])
    one = _one_pair(a)
    if bv is not None and bv.imag == 0 and bv.real == int(bv.real) and -100 < bv.real < 100 and bv.real != 0:
        n = int(bv.real)
        if n == 1:
            r = a
        elif n == 2:
            r = cmul(a, a)
        elif n == 3:
            r = cmul(a, cmul(a, a))
        else:
            m, aa, p, mask = abs(n), one, a, 1
            while True:
                if m & mask:
                    aa = cmul(aa, p)
                mask <<= 1
                if m < mask:
                    break
                p = cmul(p, p)
            r = cdiv(one, aa) if n < 0 else aa
    else:
        r = cpow_general(a, b)
    shape = r.re.shape
    zero, nan = _c(0.0, a.re), _c(np.nan, a.re)
    a0 = f_and(eq(a.re, zero), eq(a.im, zero))
    b0 = f_and(eq(b.re, zero), eq(b.im, zero))
    bpos = gt(b.re, zero)  # NumPy 2: 0 ** b is 0 for Re b > 0, else NaN
    a0_re = where(bpos, _bcast(zero, shape), _bcast(nan, shape))
    re = where(b0, _bcast(_c(1.0, a.re), shape), where(a0, a0_re, r.re))
    im = where(b0, _bcast(zero, shape), where(a0, a0_re, r.im))
    return _Pair(_bcast(re, shape), _bcast(im, shape))


# ---------------------------------------------------------------- the functions NumPy builds from these

def _in_complex128(fn):
    """A rule for a function whose interpreter kernel computes complex64 in complex128 and rounds
    once (prims/elementwise.py: _wide_c64, _native, _sigmoid): float32 parts are widened to float64,
    `fn` runs on the float64 pair, and each part is rounded to float32 once, as the interpreter."""
    def rule(n: Node, ins):
        (z,) = ins
        if z.re.dtype.name == "float64":
            return [fn(z)]
        w = fn(_Pair(_p("astype", z.re, dtype="float64"), _p("astype", z.im, dtype="float64")))
        part = z.re.dtype.name
        return [_Pair(_p("astype", w.re, dtype=part), _p("astype", w.im, dtype=part))]
    return rule


def csign(z: _Pair) -> _Pair:
    """sign z = z / |z|, 0 at 0: the interpreter's steps (prims/elementwise.py `_complex_sign128`)
    on the pair: infinite parts as +-1 beside +-0, the parts divided by the larger magnitude, then
    by their hypot."""
    x, y = z.re, z.im
    zero, one = _c(0.0, x), _c(1.0, x)
    ix, iy = isinf(x), isinf(y)
    big = f_or(ix, iy)
    x = where(big, where(ix, _p("sign", x), mul(zero, x)), x)
    y = where(big, where(iy, _p("sign", y), mul(zero, y)), y)
    m = _p("maximum", _abs(x), _abs(y))
    m = where(eq(m, zero), one, m)
    xs, ys = div(x, m), div(y, m)
    h = _p("hypot", xs, ys)
    nz = ne(h, zero)  # (True at NaN)
    hs = where(nz, h, one)
    return _Pair(where(nz, div(xs, hs), zero), where(nz, div(ys, hs), zero))


def csinh(z: _Pair) -> _Pair:
    """sinh z = -i sin(iz): glibc's csinh is its csin with the parts exchanged (bit for bit in
    NumPy, special values included, tests/test_complex_compiled.py)."""
    s = csin(_Pair(neg(z.im), z.re))
    return _Pair(s.im, neg(s.re))


def ccosh(z: _Pair) -> _Pair:
    """cosh(x + iy) = ccos(y - ix): glibc's ccos(w) is ccosh(-Im w + i Re w)."""
    return ccos(_Pair(z.im, neg(z.re)))


def ctan(z: _Pair) -> _Pair:
    """tan z = -i tanh(iz): glibc's ctan is its ctanh with the parts exchanged."""
    t = ctanh(_Pair(neg(z.im), z.re))
    return _Pair(t.im, neg(t.re))


_LOGE2, _LOG2E, _LOG10E = 0.6931471805599453, 1.4426950408889634, 0.4342944819032518  # NumPy's NPY_*


def cexp2(z: _Pair) -> _Pair:
    """NumPy's nc_exp2: cexp(x log 2 + i y log 2)."""
    return cexp(_Pair(mul(z.re, _c(_LOGE2, z.re)), mul(z.im, _c(_LOGE2, z.re))))


def _clog_scaled(k: float):
    """NumPy's nc_log2 / nc_log10: clog, then each part times log2(e) or log10(e)."""
    def f(z: _Pair) -> _Pair:
        r = clog(z)
        return _Pair(mul(r.re, _c(k, z.re)), mul(r.im, _c(k, z.re)))
    return f


def clog1p(z: _Pair) -> _Pair:
    """NumPy's nc_log1p: log(hypot(x + 1, y)) + i atan2(y, x + 1) (NumPy's formula, and its
    accuracy: the real part is absolute, not relative, for small |z|)."""
    x1 = add(z.re, _c(1.0, z.re))
    return _Pair(_p("log", _p("hypot", x1, z.im)), _p("arctan2", z.im, x1))


def cexpm1(z: _Pair) -> _Pair:
    """NumPy's nc_expm1: (expm1(x) cos y - 2 sin^2(y / 2)) + i e^x sin y."""
    x, y = z.re, z.im
    a = _p("sin", div(y, _c(2.0, y)))
    re = sub(mul(_p("expm1", x), _p("cos", y)), mul(mul(_c(2.0, y), a), a))
    return _Pair(re, mul(_p("exp", x), _p("sin", y)))


def csigmoid(z: _Pair) -> _Pair:
    """The interpreter's complex sigmoid (prims/elementwise.py: _sigmoid): 1 / (1 + e^-z) where
    Re z >= 0 or NaN, e^z / (1 + e^z) where Re z < 0; NumPy's 1.0 + e is (1 + Re e) + (0 + Im e) j
    and 1.0 / d is complex division of 1 + 0j."""
    x, y = z.re, z.im
    pos = f_not(lt(x, _c(0.0, x)))
    e = cexp(_Pair(where(pos, neg(x), x), where(pos, neg(y), y)))
    d = _Pair(add(_c(1.0, x), e.re), add(_c(0.0, x), e.im))
    one = _one_pair(e)
    return cdiv(_Pair(where(pos, one.re, e.re), where(pos, one.im, e.im)), d)


# ---------------------------------------------------------------- the rules: node, mapped inputs -> outputs

def _partwise(n: Node, ins):
    """Apply the primitive to the real parts and to the imaginary parts alike (structural and
    R-linear primitives: shape ops, where, sum, cumsum, add, sub, neg, index_add, take)."""
    attrs = dict(n.attrs)
    re_in = [x.re if isinstance(x, _Pair) else x for x in ins]
    im_in = [x.im if isinstance(x, _Pair) else x for x in ins]
    attrs_re, attrs_im = attrs, attrs
    if n.prim.name == "pad":
        v = complex(attrs["value"])
        attrs_re, attrs_im = {**attrs, "value": v.real}, {**attrs, "value": v.imag}
    return [_Pair(n.prim.bind(*re_in, **attrs_re), n.prim.bind(*im_in, **attrs_im))]


def _matmul_like(n: Node, ins):
    """Four real products: (Ar Br - Ai Bi) + (Ar Bi + Ai Br) j."""
    a, b = ins
    attrs = dict(n.attrs)

    def prod(x, y):
        return n.prim.bind(x, y, **attrs)
    return [_Pair(sub(prod(a.re, b.re), prod(a.im, b.im)), add(prod(a.re, b.im), prod(a.im, b.re)))]


def _einsum(n: Node, ins):
    """A complex einsum of any number of operands: it is linear in each, so one operand is split
    part by part, two are `_matmul_like`'s four products, and k operands are the 2^k products of
    their parts, the real part the terms with an even count of imaginary parts (sign (-1)^(c/2)),
    the imaginary part those with an odd count (sign (-1)^((c-1)/2)). (The rule took two operands
    only: a trace or a transpose of one complex matrix, or a chain of three, raised ValueError.)"""
    if len(ins) == 1:
        return _partwise(n, ins)
    if len(ins) == 2:
        return _matmul_like(n, ins)
    import itertools
    attrs = dict(n.attrs)
    parts: dict = {0: [], 1: []}  # 0: real, 1: imaginary; (negative, product) each
    for picks in itertools.product((0, 1), repeat=len(ins)):
        c = sum(picks)
        term = n.prim.bind(*[x.im if p else x.re for x, p in zip(ins, picks)], **attrs)
        parts[c % 2].append(((c // 2) % 2 == 1, term))

    def total(terms):
        first_negative, acc = terms[0]
        acc = neg(acc) if first_negative else acc
        for negative, t in terms[1:]:
            acc = sub(acc, t) if negative else add(acc, t)
        return acc
    return [_Pair(total(parts[0]), total(parts[1]))]


def _creation(n: Node, ins):
    o = n.outputs[0].type
    part = dt.real_dtype(o.dtype).name
    if n.prim.name == "constant":
        v = np.asarray(n.attrs["value"])
        pnp = dt.as_dtype(part).np
        return [_Pair(_p("constant", value=np.array(v.real, pnp), dtype=part),
                      _p("constant", value=np.array(v.imag, pnp), dtype=part))]
    if n.prim.name == "full":
        v = complex(n.attrs["value"])
        return [_Pair(_p("full", shape=o.shape, value=v.real, dtype=part),
                      _p("full", shape=o.shape, value=v.imag, dtype=part))]
    # eye, arange: real values; the imaginary part is zero
    re = n.prim.bind(**{**n.attrs, "dtype": part})
    return [_Pair(re, _zeros_like(re))]


def _astype(n: Node, ins):
    (x,) = ins
    src, d = n.inputs[0].type.dtype, dt.as_dtype(n.attrs["dtype"])
    if src.is_complex and d.is_complex:
        part = dt.real_dtype(d).name
        return [_Pair(_p("astype", x.re, dtype=part), _p("astype", x.im, dtype=part))]
    if src.is_complex:  # to a real type: the real part; to bool: either part nonzero
        if d.is_bool:
            zero = _c(0.0, x.re)
            return [f_or(ne(x.re, zero), ne(x.im, zero))]
        return [_p("astype", x.re, dtype=d.name)]
    part = dt.real_dtype(d).name
    re = _p("astype", x, dtype=part) if x.dtype.name != part else x
    return [_Pair(re, _zeros_like(re))]


def _complex(n: Node, ins):
    re, im = ins
    shape = n.outputs[0].type.shape
    return [_Pair(_bcast(re, shape), _bcast(im, shape))]


def _equal(n: Node, ins):
    a, b = ins
    if n.prim.name == "equal":
        return [f_and(eq(a.re, b.re), eq(a.im, b.im))]
    return [f_or(ne(a.re, b.re), ne(a.im, b.im))]


def _reciprocal(n: Node, ins):
    (x,) = ins
    return [cdiv(_one_pair(x), x)]


_PROD_MAX = 24  # a complex prod over more elements stays on the interpreter (one product per element: 64 compiled in 8.7 s)


def _prod(n: Node, ins):
    """NumPy's complex prod: ((1 x0) x1) x2 ..., from the identity 1 + 0j, over the reduced elements
    in the C order of the reduced axes, one cmul per element (unrolled; at most _PROD_MAX)."""
    (x,) = ins
    axes, keepdims = tuple(n.attrs["axes"]), bool(n.attrs["keepdims"])
    shape = tuple(x.re.shape)
    kept = [i for i in range(len(shape)) if i not in axes]
    kshape = tuple(shape[i] for i in kept)
    m = int(np.prod([shape[i] for i in axes], dtype=np.int64))
    out_shape = tuple(n.outputs[0].type.shape)

    def flat(t):
        perm = tuple(kept) + axes
        if perm != tuple(range(len(shape))):
            t = _p("transpose", t, perm=perm)
        return _p("reshape", t, shape=kshape + (m,))

    re, im = flat(x.re), flat(x.im)

    def elem(t, j):
        s = _p("slice", t, starts=(0,) * len(kshape) + (j,), stops=kshape + (j + 1,), steps=(1,) * (len(kshape) + 1))
        return _p("reshape", s, shape=kshape)
    r = _Pair(_p("full", shape=kshape, value=1.0, dtype=x.re.dtype.name),
              _p("full", shape=kshape, value=0.0, dtype=x.re.dtype.name))
    for j in range(m):  # from the identity, as NumPy: 1 * (0 - 0j) is 0 + 0j
        r = cmul(r, _Pair(elem(re, j), elem(im, j)))
    return [_Pair(_p("reshape", r.re, shape=out_shape), _p("reshape", r.im, shape=out_shape))]


_RULES = {
    **{k: _partwise for k in ("add", "sub", "neg", "reshape", "transpose", "broadcast_to", "slice", "flip",
                             "concat", "pad", "take", "index_add", "where", "stop_gradient", "sum", "cumsum")},
    "mul": lambda n, i: [cmul(i[0], i[1])],
    "div": lambda n, i: [cdiv(i[0], i[1])],
    "square": lambda n, i: [csquare(i[0])],
    "reciprocal": _reciprocal,
    "conj": lambda n, i: [_Pair(i[0].re, neg(i[0].im))],
    "real": lambda n, i: [i[0].re],
    "imag": lambda n, i: [i[0].im],
    "complex": _complex,
    "abs": lambda n, i: [_p("hypot", i[0].re, i[0].im)],
    "exp": lambda n, i: [cexp(i[0])],
    "log": lambda n, i: [clog(i[0])],
    "sqrt": lambda n, i: [csqrt(i[0])],
    "sin": lambda n, i: [csin(i[0])],
    "cos": lambda n, i: [ccos(i[0])],
    "tanh": lambda n, i: [ctanh(i[0])],
    "sign": _in_complex128(csign),
    "sinh": _in_complex128(csinh),
    "cosh": _in_complex128(ccosh),
    "tan": _in_complex128(ctan),
    "exp2": _in_complex128(cexp2),
    "log2": _in_complex128(_clog_scaled(_LOG2E)),
    "log10": _in_complex128(_clog_scaled(_LOG10E)),
    "log1p": _in_complex128(clog1p),
    "expm1": _in_complex128(cexpm1),
    "sigmoid": _in_complex128(csigmoid),
    "pow": lambda n, i: [cpow(n, i[0], i[1])],
    "prod": _prod,
    "matmul": _matmul_like,
    "einsum": _einsum,
    "equal": _equal,
    "not_equal": _equal,
    "astype": _astype,
    "constant": _creation,
    "full": _creation,
    "eye": _creation,
    "arange": _creation,
}
