"""The shared table of example cases for every registered primitive (oracle tests' input).

`CASES[name]` is a list of case factories for primitive `name`; `factory(ad)` returns a
hypothesis strategy of `Case`s. With `ad=True` the differentiable operands are float64 and the
sampled points avoid the primitive's non-differentiable set (kinks, ties, poles, log of
negatives); with `ad=False` other dtypes (float32, ints, bools) and edge points may appear.

A `Case` fixes shapes and canonical attributes (what graphad.ops hands the primitive) and
carries a value sampler, so the vmap tests can draw further examples of the same shapes:
  * `args`   the drawn operand values (NumPy arrays),
  * `sample` rng -> a fresh list of operand values with the same shapes, dtypes and domain,
  * `ref`    an independent oracle: NumPy, or a naive loop where NumPy would be the kernel itself,
  * `op`     the eager user-level call through graphad.ops (Tensors in), None for prim.bind.
Every primitive registered in graphad.prims.PRIMITIVES must have an entry here; the tests
walk the registry and fail on a missing one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphad import ops
from graphad.ir.builder import GraphBuilder
from graphad.ir.core import Graph, TensorType
from graphad.ir.interpret import interpret
from graphad.prims import PRIMITIVES
from graphad.tensor import Tensor

F64 = "float64"
# GRAPHAD_HYPOTHESIS_SCALE=10 multiplies every oracle test's example count (a longer bug hunt)
_SCALE = float(os.environ.get("GRAPHAD_HYPOTHESIS_SCALE", "1"))


def hsettings(max_examples: int):
    """Hypothesis settings of the oracle tests: no deadline (first calls build graphs), no health checks."""
    from hypothesis import HealthCheck, settings
    return settings(max_examples=max(1, int(max_examples * _SCALE)), deadline=None,
                    suppress_health_check=list(HealthCheck))


@dataclass
class Case:
    prim: str
    attrs: dict
    sample: Callable[[np.random.Generator], list]
    ref: Callable[..., np.ndarray]
    op: Callable | None = None
    fd: bool = True            # central differences are valid at the sampled points
    zero_grad: bool = False    # the rules define the derivative as zero (stop_gradient)
    rtol: float = 1e-5         # derivative tolerance (float64 default)
    eps: float = 1e-6          # finite-difference step
    args: list = field(default_factory=list)

    @property
    def primitive(self):
        return PRIMITIVES[self.prim]

    @property
    def diff_inputs(self) -> list[int]:
        """Float and complex operands through which derivatives flow."""
        p = self.primitive
        return [i for i, a in enumerate(self.args) if a.dtype.kind in "fc" and i not in p.nondiff_inputs]

    def in_types(self, args=None) -> list[TensorType]:
        return [TensorType(a.shape, a.dtype) for a in (self.args if args is None else args)]

    def graph(self, args=None) -> Graph:
        """A one-node graph applying the primitive to inputs typed like `args`."""
        return one_node_graph(self.primitive, self.in_types(args), self.attrs)

    def apply(self, *xs):
        """The user-level op (or prim.bind) on Tensors or tracers."""
        if self.op is not None:
            return self.op(*xs)
        return self.primitive.bind(*xs, **self.attrs)

    def eager(self, *arrays):
        """Run the user-level op (or prim.bind) eagerly on Tensors made from arrays."""
        return self.apply(*[Tensor(a) for a in arrays])

    def __repr__(self):
        shown = {k: (f"array{list(np.shape(v))}" if isinstance(v, np.ndarray) else v) for k, v in self.attrs.items()}
        ins = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.args)
        return f"Case({self.prim}({ins}), {shown}, fd={self.fd})"


def one_node_graph(prim, in_types: list[TensorType], attrs: dict) -> Graph:
    b = GraphBuilder(f"one_{prim.name}")
    vals = [b.add_input(t, f"x{i}") for i, t in enumerate(in_types)]
    outs = b.emit(prim, vals, attrs)
    return b.finish(outs)


def run(graph: Graph, args: list) -> list[np.ndarray]:
    return interpret(graph, list(args))


# ---------------------------------------------------------------- strategies of shapes and values

def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def side0(draw) -> int:
    """min_side for a shape strategy: now and then 0, so that zero-size tensors are exercised."""
    return 0 if draw(st.integers(0, 4)) == 0 else 1


def seeds():
    return st.integers(0, 2**32 - 1)


def float_dtype(draw, ad):
    return F64 if ad else draw(st.sampled_from([F64, F64, "float32"]))


def numeric_dtype(draw, ad, ints=("int64", "int32")):
    return F64 if ad else draw(st.sampled_from([F64, "float32"] + list(ints)))


def uniform(rng, shape, lo, hi, dtype=F64):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def away_from_zero(rng, shape, lo, hi, dtype=F64):
    """|x| in [lo, hi] with a random sign."""
    return (rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)


def ints(rng, shape, lo, hi, dtype="int64"):
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def distinct(rng, shapes_, dtype=F64, spacing=0.25):
    """Arrays whose elements are pairwise at least 0.8*spacing apart (no ties anywhere)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes_]
    n = sum(sizes)
    vals = (rng.permutation(n) - n / 2) * spacing + rng.uniform(0, 0.2 * spacing, size=n)
    out, off = [], 0
    for s, k in zip(shapes_, sizes):
        out.append(vals[off:off + k].reshape(s).astype(dtype))
        off += k
    return out


def make(draw, prim, attrs, sample, ref, **kw) -> Case:
    def arrays(rng):  # 0-d draws come back as NumPy scalars: keep them arrays of their dtype
        return [np.asarray(a) for a in sample(rng)]
    c = Case(prim, attrs, arrays, ref, **kw)
    c.args = arrays(np.random.default_rng(draw(seeds())))
    return c


def factory(fn):
    """Decorate `fn(draw, ad) -> Case` into `ad -> strategy of Case`."""
    def f(ad: bool):
        return st.composite(lambda draw: fn(draw, ad))()
    f.__name__ = fn.__name__
    return f


# ---------------------------------------------------------------- unary elementwise

def _erf_ref(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


_UNARY_FLOAT = {
    # name: (domain sampler(rng, shape, dtype), reference)
    "exp": (lambda r, s, d: uniform(r, s, -2, 2, d), np.exp),
    "log": (lambda r, s, d: uniform(r, s, 0.2, 3, d), np.log),
    "log1p": (lambda r, s, d: uniform(r, s, -0.5, 2, d), np.log1p),
    "expm1": (lambda r, s, d: uniform(r, s, -2, 2, d), np.expm1),
    "sqrt": (lambda r, s, d: uniform(r, s, 0.2, 3, d), np.sqrt),
    "rsqrt": (lambda r, s, d: uniform(r, s, 0.2, 3, d), lambda x: 1 / np.sqrt(x)),
    "reciprocal": (lambda r, s, d: away_from_zero(r, s, 0.3, 2, d), lambda x: 1 / x),
    "sin": (lambda r, s, d: uniform(r, s, -3, 3, d), np.sin),
    "cos": (lambda r, s, d: uniform(r, s, -3, 3, d), np.cos),
    "tan": (lambda r, s, d: uniform(r, s, -1.2, 1.2, d), np.tan),
    "tanh": (lambda r, s, d: uniform(r, s, -3, 3, d), np.tanh),
    "sigmoid": (lambda r, s, d: uniform(r, s, -4, 4, d), lambda x: 1 / (1 + np.exp(-x))),
    "erf": (lambda r, s, d: uniform(r, s, -2, 2, d), _erf_ref),
    # away from the integers, where floor jumps
    "floor": (lambda r, s, d: (r.integers(-3, 4, size=s) + r.uniform(0.1, 0.9, size=s)).astype(d), np.floor),
}


def _unary_factory(name, table=None, dtypes=None, prefix="unary"):
    """A case of unary primitive `name` from `table` (name -> (sampler, reference)), its dtype
    drawn by `dtypes` (float_dtype unless given)."""
    sampler, ref = (table if table is not None else _UNARY_FLOAT)[name]
    dtypes = dtypes or float_dtype

    @factory
    def f(draw, ad):
        shape = draw(shapes(min_side=side0(draw)))
        dtype = dtypes(draw, ad)
        return make(draw, name, {}, lambda rng: [sampler(rng, shape, dtype)], ref, op=getattr(ops, name))
    f.__name__ = f"{prefix}_{name}"
    return f


def _relu_ref(x):
    return np.where(x > 0, x, np.zeros_like(x))


_UNARY_ANY = {
    # name: (reference, kink at 0)
    "neg": (lambda x: -x, False),
    "abs": (lambda x: np.where(x < 0, -x, x), True),
    "sign": (lambda x: (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype), True),
    "square": (lambda x: x * x, False),
    "relu": (_relu_ref, True),
}


def _unary_any_factory(name):
    ref, kink = _UNARY_ANY[name]

    @factory
    def f(draw, ad):
        shape = draw(shapes(min_side=side0(draw)))
        dtype = numeric_dtype(draw, ad)
        if dtype.startswith("int"):
            sample = lambda rng: [ints(rng, shape, -5, 5, dtype)]  # noqa: E731
        elif kink and ad:
            sample = lambda rng: [away_from_zero(rng, shape, 0.1, 2, dtype)]  # noqa: E731
        else:  # exact zeros included
            sample = lambda rng: [np.where(rng.random(shape) < 0.2, 0.0, rng.uniform(-2, 2, shape)).astype(dtype)]  # noqa: E731
        return make(draw, name, {}, sample, ref, op=getattr(ops, name))
    f.__name__ = f"unary_{name}"
    return f


@factory
def logical_not_case(draw, ad):
    shape = draw(shapes())
    return make(draw, "logical_not", {}, lambda rng: [rng.random(shape) < 0.5], np.logical_not, op=ops.logical_not)


@factory
def signbit_case(draw, ad):
    shape = draw(shapes())
    dtype = numeric_dtype(draw, ad)

    def sample(rng):  # signed zeros, infinities and NaN of both signs among the floats
        if dtype.startswith("int"):
            return [ints(rng, shape, -5, 5, dtype)]
        v = rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.5, -2.0], size=shape)
        return [np.where(rng.random(shape) < 0.5, v, rng.uniform(-2, 2, shape)).astype(dtype)]
    return make(draw, "signbit", {}, sample, np.signbit, op=ops.signbit)


@factory
def stop_gradient_case(draw, ad):
    shape = draw(shapes())
    dtype = numeric_dtype(draw, ad)
    return make(draw, "stop_gradient", {}, lambda rng: [uniform(rng, shape, -2, 2, dtype)], lambda x: x.copy(),
                op=ops.stop_gradient, zero_grad=True)


_CASTS = [(F64, "float32"), ("float32", F64), (F64, F64), (F64, "int32"), ("int64", F64), ("bool", "float32"),
          (F64, "bool"), ("int32", "int64")]


@factory
def astype_case(draw, ad):
    shape = draw(shapes())
    src, dst = draw(st.sampled_from([c for c in _CASTS if not ad or (c[0] in (F64, "float32") and c[1] in (F64, "float32"))]))
    if src == "bool":
        sample = lambda rng: [rng.random(shape) < 0.5]  # noqa: E731
    elif src.startswith("int"):
        sample = lambda rng: [ints(rng, shape, -9, 9, src)]  # noqa: E731
    else:  # zeros included for the bool cast; away from integers for the int cast in AD
        sample = lambda rng: [np.where(rng.random(shape) < 0.2, 0.0, rng.uniform(-3, 3, shape)).astype(src)]  # noqa: E731
    f32 = "float32" in (src, dst)
    # astype is linear: central differences are exact for any step, so take a large one in float32
    return make(draw, "astype", {"dtype": dst}, sample, lambda x: x.astype(dst), op=lambda x: ops.astype(x, dst),
                eps=1.0 if f32 else 1e-6, rtol=1e-4 if f32 else 1e-5)


# ---------------------------------------------------------------- binary elementwise

def bshapes(n=2, max_dims=3, min_side=1):
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=max_dims, min_side=min_side,
                                             max_side=4)


def _int_div_ref(a, b):
    q = np.abs(a) // np.abs(b)
    return (np.sign(a) * np.sign(b) * q).astype(a.dtype)


_BINARY = {
    # name: (reference, ops function, int dtypes allowed)
    "add": (lambda a, b: a + b, ops.add, True),
    "sub": (lambda a, b: a - b, ops.sub, True),
    "mul": (lambda a, b: a * b, ops.mul, True),
    "div": (None, None, True),
    "pow": (lambda a, b: np.power(a, b), ops.pow, True),
    "maximum": (lambda a, b: np.where(a >= b, a, b), ops.maximum, True),
    "minimum": (lambda a, b: np.where(a <= b, a, b), ops.minimum, True),
}


def _binary_factory(name):
    ref, op, allow_int = _BINARY[name]

    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = numeric_dtype(draw, ad) if allow_int else float_dtype(draw, ad)
        isint = dtype.startswith("int")
        r, o = ref, op
        if name == "div":
            if isint:
                r, o = _int_div_ref, None  # ops.div promotes ints to float: bind the primitive
                sample = lambda rng: [ints(rng, sa, -9, 9, dtype), ints(rng, sb, 1, 4, dtype) * np.where(  # noqa: E731
                    rng.random(sb) < 0.5, -1, 1).astype(dtype)]
            else:
                r, o = (lambda a, b: a / b), ops.div
                sample = lambda rng: [uniform(rng, sa, -2, 2, dtype), away_from_zero(rng, sb, 0.3, 2, dtype)]  # noqa: E731
        elif name == "pow":
            if isint:
                sample = lambda rng: [ints(rng, sa, -3, 3, dtype), ints(rng, sb, 0, 3, dtype)]  # noqa: E731
            else:
                sample = lambda rng: [uniform(rng, sa, 0.3, 2, dtype), uniform(rng, sb, -2, 2, dtype)]  # noqa: E731
        elif name in ("maximum", "minimum"):
            if isint:
                sample = lambda rng: [ints(rng, sa, -3, 3, dtype), ints(rng, sb, -3, 3, dtype)]  # noqa: E731
            else:  # no ties: every element of a differs from every element of b
                sample = lambda rng: distinct(rng, [sa, sb], dtype)  # noqa: E731
        elif isint:
            sample = lambda rng: [ints(rng, sa, -9, 9, dtype), ints(rng, sb, -9, 9, dtype)]  # noqa: E731
        else:
            sample = lambda rng: [uniform(rng, sa, -2, 2, dtype), uniform(rng, sb, -2, 2, dtype)]  # noqa: E731
        return make(draw, name, {}, sample, r, op=o)
    f.__name__ = f"binary_{name}"
    return f


def _ties_factory(name):
    """maximum/minimum at ties: finite differences do not apply, <u, J v> = <J^T u, v> still must."""
    ref, op, _ = _BINARY[name]

    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes()).input_shapes
        sample = lambda rng: [ints(rng, sa, 0, 2).astype(F64), ints(rng, sb, 0, 2).astype(F64)]  # noqa: E731
        return make(draw, name, {}, sample, ref, op=op, fd=False)
    f.__name__ = f"ties_{name}"
    return f


_COMPARE = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
            "greater": np.greater, "greater_equal": np.greater_equal}


def _compare_factory(name):
    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = draw(st.sampled_from([F64, "float32", "int64", "int32"]))
        # small integers, so that equal elements occur
        sample = lambda rng: [ints(rng, sa, -2, 2).astype(dtype), ints(rng, sb, -2, 2).astype(dtype)]  # noqa: E731
        return make(draw, name, {}, sample, _COMPARE[name], op=getattr(ops, name))
    f.__name__ = f"compare_{name}"
    return f


_BITWISE = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor}


def _bitwise_factory(name):
    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = draw(st.sampled_from(["int64", "int32", "bool"]))
        if dtype == "bool":
            sample = lambda rng: [rng.random(sa) < 0.5, rng.random(sb) < 0.5]  # noqa: E731
        else:  # every bit pattern: negatives and the extremes included
            info = np.iinfo(dtype)
            sample = lambda rng: [ints(rng, sa, info.min, info.max, dtype), ints(rng, sb, info.min, info.max, dtype)]  # noqa: E731
        return make(draw, name, {}, sample, _BITWISE[name], op=getattr(ops, name))
    f.__name__ = f"bitwise_{name}"
    return f


_SHIFT = {"left_shift": np.left_shift, "right_shift": np.right_shift}


def _shift_factory(name):
    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = draw(st.sampled_from(["int64", "int32"]))
        info = np.iinfo(dtype)
        # every bit pattern shifted by every count, those outside [0, bits) included
        sample = lambda rng: [ints(rng, sa, info.min, info.max, dtype), ints(rng, sb, -3, info.bits + 3, dtype)]  # noqa: E731
        return make(draw, name, {}, sample, _SHIFT[name], op=getattr(ops, name))
    f.__name__ = f"shift_{name}"
    return f


@factory
def where_case(draw, ad):
    sc, sa, sb = draw(bshapes(3, min_side=side0(draw))).input_shapes
    dtype = numeric_dtype(draw, ad)

    def sample(rng):
        return [rng.random(sc) < 0.5, uniform(rng, sa, -2, 2, F64).astype(dtype),
                uniform(rng, sb, -2, 2, F64).astype(dtype)]

    def ref(c, a, b):
        c, a, b = np.broadcast_arrays(c, a, b)
        out = b.copy()
        out[c] = a[c]
        return out
    return make(draw, "where", {}, sample, ref, op=ops.where)


# ---------------------------------------------------------------- reductions

@st.composite
def axes_of(draw, ndim, min_size=0):
    return tuple(sorted(draw(st.sets(st.integers(0, max(ndim - 1, 0)), min_size=min_size, max_size=ndim))
                        if ndim else ()))


def _reduction_factory(name, ties=False):
    np_fn = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}[name]
    op = getattr(ops, name)

    @factory
    def f(draw, ad):
        # max and min have no identity: no empty axes for them
        shape = draw(shapes(0, 4, min_side=side0(draw) if name in ("sum", "prod") else 1))
        axes = draw(axes_of(len(shape)))
        keepdims = draw(st.booleans())
        dtype = F64 if (ad or ties) else numeric_dtype(draw, ad)
        if dtype.startswith("int"):
            sample = lambda rng: [ints(rng, shape, -3, 3, dtype)]  # noqa: E731
        elif ties:  # repeated extrema
            sample = lambda rng: [ints(rng, shape, 0, 2).astype(F64)]  # noqa: E731
        elif name in ("max", "min"):
            sample = lambda rng: distinct(rng, [shape], dtype)  # noqa: E731
        elif name == "prod":  # exact zeros included: the partials are exact there
            sample = lambda rng: [np.where(rng.random(shape) < 0.15, 0.0, away_from_zero(rng, shape, 0.5, 1.5)).astype(dtype)]  # noqa: E731
        else:
            sample = lambda rng: [uniform(rng, shape, -2, 2, dtype)]  # noqa: E731

        def ref(x):
            if x.ndim == 0 or not axes:
                return x.copy()
            # naive: move the reduced axes to the end, flatten them, reduce the last axis
            keep = [i for i in range(x.ndim) if i not in axes]
            n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
            y = np.transpose(x, keep + list(axes)).reshape([x.shape[i] for i in keep] + [n])
            r = np_fn(y, axis=-1).astype(x.dtype)
            if keepdims:
                r = r.reshape([1 if i in axes else n for i, n in enumerate(x.shape)])
            return r
        return make(draw, name, {"axes": axes, "keepdims": keepdims}, sample, ref,
                    op=lambda x: op(x, axes, keepdims), fd=not ties)
    f.__name__ = f"reduce_{name}{'_ties' if ties else ''}"
    return f


def _argreduction_factory(name):
    np_fn = {"argmax": np.argmax, "argmin": np.argmin}[name]
    op = getattr(ops, name)

    @factory
    def f(draw, ad):
        shape = draw(shapes(1, 3))
        axis = draw(st.integers(0, len(shape) - 1))
        keepdims = draw(st.booleans())
        dtype = numeric_dtype(draw, False)
        ties = draw(st.booleans())
        if ties or dtype.startswith("int"):
            sample = lambda rng: [ints(rng, shape, 0, 2).astype(dtype)]  # noqa: E731
        else:
            sample = lambda rng: distinct(rng, [shape], dtype)  # noqa: E731

        def ref(x):  # first occurrence of the extremum, as NumPy
            r = np_fn(x, axis=axis)
            return np.expand_dims(r, axis).astype(np.int64) if keepdims else np.asarray(r, np.int64)
        return make(draw, name, {"axis": axis, "keepdims": keepdims}, sample, ref,
                    op=lambda x: op(x, axis, keepdims))
    f.__name__ = f"argreduce_{name}"
    return f


# ---------------------------------------------------------------- linear algebra

def _matmul_shapes(draw):
    """The operand shapes of a (batched, broadcasting) matmul case: (..., m, k) and (..., k, n)."""
    ba, bb = draw(bshapes(2, max_dims=2)).input_shapes
    lo = side0(draw)
    m, k, n = (draw(st.integers(lo, 4)) for _ in range(3))
    return ba + (m, k), bb + (k, n)


@factory
def matmul_case(draw, ad):
    sa, sb = _matmul_shapes(draw)
    dtype = numeric_dtype(draw, ad)
    if dtype.startswith("int"):
        sample = lambda rng: [ints(rng, sa, -3, 3, dtype), ints(rng, sb, -3, 3, dtype)]  # noqa: E731
    else:
        sample = lambda rng: [uniform(rng, sa, -2, 2, dtype), uniform(rng, sb, -2, 2, dtype)]  # noqa: E731
    return make(draw, "matmul", {}, sample, lambda a, b: (a[..., :, :, None] * b[..., None, :, :]).sum(-2).astype(a.dtype),
                op=ops.matmul)


def einsum_ref(spec, *xs):
    """Naive einsum: broadcast every operand to the full index space, multiply, sum."""
    lhs, out = spec.split("->")
    ins = lhs.split(",")
    letters = sorted(set("".join(ins)))
    size = {c: n for s, x in zip(ins, xs) for c, n in zip(s, x.shape)}
    full = np.ones([size[c] for c in letters], dtype=xs[0].dtype)
    for s, x in zip(ins, xs):
        order = sorted(range(len(s)), key=lambda k: letters.index(s[k]))
        full = full * np.transpose(x, order).reshape([size[c] if c in s else 1 for c in letters])
    r = full.sum(axis=tuple(i for i, c in enumerate(letters) if c not in out)) if len(letters) > len(out) else full
    rest = [c for c in letters if c in out]
    return np.transpose(r, [rest.index(c) for c in out]).astype(xs[0].dtype)


@factory
def einsum_case(draw, ad):
    pool = "abcde"
    size = {c: draw(st.integers(1, 3)) for c in pool}
    n_ops = draw(st.integers(1, 3))
    ins = []
    for _ in range(n_ops):
        perm = draw(st.permutations(pool))
        ins.append("".join(perm[:draw(st.integers(0, 3))]))
    used = sorted(set("".join(ins)))
    perm = draw(st.permutations(used)) if used else []
    out = "".join(perm[:draw(st.integers(0, len(used)))])
    spec = ",".join(ins) + "->" + out
    shapes_ = [tuple(size[c] for c in s) for s in ins]
    dtype = numeric_dtype(draw, ad, ints=("int64",))
    if dtype.startswith("int"):
        sample = lambda rng: [ints(rng, s, -3, 3, dtype) for s in shapes_]  # noqa: E731
    else:
        sample = lambda rng: [uniform(rng, s, -2, 2, dtype) for s in shapes_]  # noqa: E731
    return make(draw, "einsum", {"spec": spec}, sample, lambda *xs: einsum_ref(spec, *xs),
                op=lambda *xs: ops.einsum(spec, *xs))


# ---------------------------------------------------------------- nn

def conv2d_ref(x, w, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.zeros((n, c, h + padding[0] + padding[1], wd + padding[2] + padding[3]), x.dtype)
    xp[:, :, padding[0]:padding[0] + h, padding[2]:padding[2] + wd] = x
    oh = (xp.shape[2] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (xp.shape[3] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, oh, ow), x.dtype)
    for oc in range(o):
        g = oc // og
        for p in range(oh):
            for q in range(ow):
                for i in range(kh):
                    for j in range(kw):
                        patch = xp[:, g * cg:(g + 1) * cg, p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]]
                        y[:, oc, p, q] += patch @ w[oc, :, i, j]
    return y


@factory
def conv2d_case(draw, ad):
    g = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = max(1, dilation[0] * (kh - 1) + 1 - padding[0] - padding[1]) + draw(st.integers(0, 3))
    w = max(1, dilation[1] * (kw - 1) + 1 - padding[2] - padding[3]) + draw(st.integers(0, 3))
    n = draw(st.integers(1, 2))
    sx, sw = (n, g * cg, h, w), (g * og, cg, kh, kw)
    dtype = float_dtype(draw, ad)
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": g}
    return make(draw, "conv2d", attrs, lambda rng: [uniform(rng, sx, -1, 1, dtype), uniform(rng, sw, -1, 1, dtype)],
                lambda x, wt: conv2d_ref(x, wt, stride, padding, dilation, g),
                op=lambda x, wt: ops.conv2d(x, wt, stride=stride, padding=padding, dilation=dilation, groups=g))


# ---------------------------------------------------------------- shape primitives

def _values(draw, ad, shape_list):
    dtype = numeric_dtype(draw, ad)
    if dtype.startswith("int"):
        return lambda rng: [ints(rng, s, -9, 9, dtype) for s in shape_list]
    return lambda rng: [uniform(rng, s, -2, 2, dtype) for s in shape_list]


def _factorizations(draw, n):
    """A random shape with n elements (size-1 axes sprinkled in)."""
    f, p, factors = n, 2, []
    while f > 1:
        while f % p == 0:
            factors.append(p)
            f //= p
        p += 1
    factors = list(draw(st.permutations(factors)))
    cuts = sorted(draw(st.lists(st.integers(0, len(factors)), max_size=3)))
    dims, prev = [], 0
    for c in cuts + [len(factors)]:
        dims.append(int(np.prod(factors[prev:c], dtype=np.int64)))
        prev = c
    dims = [d for d in dims if d != 1] if n else [0]
    for _ in range(draw(st.integers(0, 2))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    return tuple(dims)


@factory
def reshape_case(draw, ad):
    shape = draw(shapes(0, 4, min_side=side0(draw)))
    n = int(np.prod(shape, dtype=np.int64))
    new = _factorizations(draw, n) if n else tuple(draw(st.permutations(list(shape) + [1])))
    return make(draw, "reshape", {"shape": new}, _values(draw, ad, [shape]), lambda x: x.reshape(new),
                op=lambda x: ops.reshape(x, new))


@factory
def broadcast_to_case(draw, ad):
    target = draw(shapes(0, 4, min_side=side0(draw)))
    k = draw(st.integers(0, len(target)))
    src = tuple(1 if draw(st.booleans()) else s for s in target[len(target) - k:])
    return make(draw, "broadcast_to", {"shape": target}, _values(draw, ad, [src]),
                lambda x: x * np.ones(target, x.dtype), op=lambda x: ops.broadcast_to(x, target))


@factory
def transpose_case(draw, ad):
    shape = draw(shapes(0, 4, min_side=side0(draw)))
    perm = tuple(draw(st.permutations(range(len(shape)))))

    def ref(x):
        out = np.empty([x.shape[p] for p in perm], x.dtype)
        for idx in np.ndindex(*x.shape):
            out[tuple(idx[p] for p in perm)] = x[idx]
        return out
    return make(draw, "transpose", {"perm": perm}, _values(draw, ad, [shape]), ref,
                op=lambda x: ops.transpose(x, perm))


@factory
def slice_case(draw, ad):
    shape = draw(shapes(0, 3, min_side=side0(draw)))
    starts, stops, steps = [], [], []
    for n in shape:
        a = draw(st.integers(0, n))
        starts.append(a)
        stops.append(draw(st.integers(0, n)))
        steps.append(draw(st.integers(1, 3)))
    attrs = {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}
    sl = tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))
    return make(draw, "slice", attrs, _values(draw, ad, [shape]), lambda x: x[sl].copy(),
                op=lambda x: ops.slice_prim(x, starts, stops, steps))


@factory
def pad_case(draw, ad):
    shape = draw(shapes(0, 3, min_side=side0(draw)))
    lo = tuple(draw(st.integers(0, 2)) for _ in shape)
    hi = tuple(draw(st.integers(0, 2)) for _ in shape)
    interior = tuple(draw(st.integers(0, 2)) for _ in shape)
    value = draw(st.sampled_from([0.0, 1.5, -2.0]))
    dtype = numeric_dtype(draw, ad)
    if dtype.startswith("int"):
        value = float(int(value))

    def ref(x):
        out = np.full([l + h + n + max(n - 1, 0) * k for l, h, n, k in zip(lo, hi, x.shape, interior)], value, x.dtype)
        for idx in np.ndindex(*x.shape):
            out[tuple(l + i * (k + 1) for i, l, k in zip(idx, lo, interior))] = x[idx]
        return out
    sample = (lambda rng: [ints(rng, shape, -9, 9, dtype)]) if dtype.startswith("int") else \
        (lambda rng: [uniform(rng, shape, -2, 2, dtype)])
    return make(draw, "pad", {"lo": lo, "hi": hi, "interior": interior, "value": value}, sample, ref,
                op=lambda x: ops.pad_prim(x, lo, hi, interior, value))


@factory
def flip_case(draw, ad):
    shape = draw(shapes(0, 4, min_side=side0(draw)))
    axes = draw(axes_of(len(shape)))

    def ref(x):
        sl = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(x.ndim))
        return x[sl].copy()
    return make(draw, "flip", {"axes": axes}, _values(draw, ad, [shape]), ref, op=lambda x: ops.flip(x, axes))


@factory
def concat_case(draw, ad):
    base = list(draw(shapes(1, 3)))
    axis = draw(st.integers(0, len(base) - 1))
    k = draw(st.integers(1, 3))
    shape_list = []
    for _ in range(k):
        s = list(base)
        s[axis] = draw(st.integers(0, 3))
        shape_list.append(tuple(s))

    def ref(*xs):
        out = np.empty([sum(x.shape[axis] for x in xs) if i == axis else n for i, n in enumerate(xs[0].shape)],
                       xs[0].dtype)
        off = 0
        for x in xs:
            sl = tuple(slice(off, off + x.shape[axis]) if i == axis else slice(None) for i in range(x.ndim))
            out[sl] = x
            off += x.shape[axis]
        return out
    return make(draw, "concat", {"axis": axis}, _values(draw, ad, shape_list), ref,
                op=lambda *xs: ops.concat(list(xs), axis))


def _indices(draw, n, idx_shape):
    """Sampler of int indices in [-n, n): negative and repeated ones included."""
    itype = draw(st.sampled_from(["int64", "int32"]))
    return lambda rng: rng.integers(-n, n, size=idx_shape).astype(itype)


def take_ref(x, idx, axis):
    n = x.shape[axis]
    g = np.moveaxis(x, axis, 0)[np.where(idx < 0, idx + n, idx)]
    return np.moveaxis(g, tuple(range(idx.ndim)), tuple(range(axis, axis + idx.ndim))).copy()


@factory
def take_case(draw, ad):
    shape = draw(shapes(1, 3))
    axis = draw(st.integers(0, len(shape) - 1))
    idx_shape = draw(shapes(0, 2, min_side=side0(draw), max_side=5))
    vals = _values(draw, ad, [shape])
    idx = _indices(draw, shape[axis], idx_shape)
    return make(draw, "take", {"axis": axis}, lambda rng: vals(rng) + [idx(rng)], lambda x, i: take_ref(x, i, axis),
                op=lambda x, i: ops.take(x, i, axis))


@factory
def index_check_case(draw, ad):
    n = draw(st.integers(1, 6))
    idx = _indices(draw, n, draw(shapes(0, 3, min_side=side0(draw), max_side=5)))
    op = draw(st.sampled_from(["take", "index_add"]))
    return make(draw, "index_check", {"length": n, "op": op}, lambda rng: [idx(rng)],
                lambda i: np.where(i < 0, i + n, i))


def index_add_ref(x, idx, upd, axis):
    out = x.copy()
    n = x.shape[axis]
    xm = np.moveaxis(out, axis, 0)
    um = np.moveaxis(upd, tuple(range(axis, axis + idx.ndim)), tuple(range(idx.ndim)))
    for j in np.ndindex(*idx.shape):
        xm[int(idx[j]) % n] += um[j]
    return out


@factory
def index_add_case(draw, ad):
    shape = draw(shapes(1, 3))
    axis = draw(st.integers(0, len(shape) - 1))
    idx_shape = draw(shapes(0, 2, min_side=side0(draw), max_side=5))
    upd_shape = shape[:axis] + idx_shape + shape[axis + 1:]
    vals = _values(draw, ad, [shape, upd_shape])
    idx = _indices(draw, shape[axis], idx_shape)

    def sample(rng):
        x, u = vals(rng)
        return [x, idx(rng), u]
    return make(draw, "index_add", {"axis": axis}, sample, lambda x, i, u: index_add_ref(x, i, u, axis),
                op=lambda x, i, u: ops.index_add(x, i, u, axis))


# ---------------------------------------------------------------- creation (no operands)

@factory
def constant_case(draw, ad):
    shape = draw(shapes(0, 3))
    dtype = draw(st.sampled_from([F64, "float32", "int64", "int32", "bool"]))
    value = np.random.default_rng(draw(seeds())).uniform(-3, 3, shape).astype(dtype)
    return make(draw, "constant", {"value": value, "dtype": dtype}, lambda rng: [], lambda: value.copy(),
                op=lambda: ops.constant(value, dtype))


@factory
def full_case(draw, ad):
    shape = draw(shapes(0, 3, min_side=0))
    dtype = draw(st.sampled_from([F64, "float32", "int64", "int32"]))
    value = draw(st.sampled_from([0, 1, -2, 3])) if dtype.startswith("int") else draw(st.sampled_from([0.0, 1.0, -2.5]))
    return make(draw, "full", {"shape": shape, "value": value, "dtype": dtype}, lambda rng: [],
                lambda: np.array([value] * int(np.prod(shape, dtype=np.int64)), dtype).reshape(shape),
                op=lambda: ops.full(shape, value, dtype))


@factory
def arange_case(draw, ad):
    if draw(st.booleans()):
        start, stop = draw(st.integers(-5, 5)), draw(st.integers(-5, 5))
        step = draw(st.sampled_from([1, 2, 3, -1, -2]))
        dtype = draw(st.sampled_from(["int64", "int32", F64, "float32"]))
    else:
        start, stop = draw(st.sampled_from([0.0, -1.5, 2.25])), draw(st.sampled_from([3.0, -2.0, 0.5]))
        step = draw(st.sampled_from([0.5, 0.75, -0.5, -1.25]))
        dtype = draw(st.sampled_from([F64, "float32"]))
    n = max(0, math.ceil((stop - start) / step))
    return make(draw, "arange", {"start": start, "stop": stop, "step": step, "dtype": dtype}, lambda rng: [],
                lambda: np.array([start + i * step for i in range(n)], np.float64).astype(dtype),
                op=lambda: ops.arange(start, stop, step, dtype))


@factory
def eye_case(draw, ad):
    n, m, k = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(-3, 3))
    dtype = draw(st.sampled_from([F64, "float32", "int64"]))
    return make(draw, "eye", {"n": n, "m": m, "k": k, "dtype": dtype}, lambda rng: [],
                lambda: np.array([[1 if j - i == k else 0 for j in range(m)] for i in range(n)], dtype).reshape(n, m),
                op=lambda: ops.eye(n, m, k, dtype))


# ---------------------------------------------------------------- issue 17: more elementwise math
#
# References share no code with the kernels: Python's math module per element, mpmath for the
# special functions (erfc, erfinv, lgamma, polygamma), Python's % and math.fmod for the remainders.

def _per_element(fn):
    """Elementwise reference from a Python float function, computed in float64, cast back."""
    def ref(x):
        out = np.array([fn(float(v)) for v in x.ravel()], np.float64).reshape(x.shape)
        return out.astype(x.dtype)
    return ref


def _mp_float(fn):
    import mpmath

    def f(v):
        with mpmath.workprec(100):
            return float(fn(mpmath.mpf(v)))
    return f


def _off_integers(lo_k, hi_k, lo=0.1, hi=0.9):
    """Values k + u, k an integer in [lo_k, hi_k], u in [lo, hi]: away from integers (jumps, poles)."""
    return lambda r, s, d: (r.integers(lo_k, hi_k + 1, size=s) + r.uniform(lo, hi, size=s)).astype(d)


def _off_halves(r, s, d):
    """Away from the integers and the half-integers (round's jumps)."""
    u = np.where(r.random(s) < 0.5, r.uniform(0.1, 0.4, size=s), r.uniform(0.6, 0.9, size=s))
    return (r.integers(-3, 4, size=s) + u).astype(d)


def _lgamma_mp(v):
    import mpmath
    with mpmath.workprec(100):
        return float(mpmath.re(mpmath.loggamma(mpmath.mpf(v))))


_UNARY_FLOAT.update({
    "ceil": (_off_integers(-3, 3), _per_element(lambda v: float(math.ceil(v)))),
    "trunc": (_off_integers(-3, 3), _per_element(lambda v: float(math.trunc(v)))),
    "round": (_off_halves, _per_element(lambda v: float(round(v)))),  # Python's round: half to even
    "exp2": (lambda r, s, d: uniform(r, s, -3, 3, d), _per_element(lambda v: 2.0 ** v)),
    "log2": (lambda r, s, d: uniform(r, s, 0.2, 3, d), _per_element(math.log2)),
    "log10": (lambda r, s, d: uniform(r, s, 0.2, 3, d), _per_element(math.log10)),
    "sinh": (lambda r, s, d: uniform(r, s, -3, 3, d), _per_element(math.sinh)),
    "cosh": (lambda r, s, d: uniform(r, s, -3, 3, d), _per_element(math.cosh)),
    "arcsin": (lambda r, s, d: uniform(r, s, -0.9, 0.9, d), _per_element(math.asin)),
    "arccos": (lambda r, s, d: uniform(r, s, -0.9, 0.9, d), _per_element(math.acos)),
    "arctan": (lambda r, s, d: uniform(r, s, -3, 3, d), _per_element(math.atan)),
    "arcsinh": (lambda r, s, d: uniform(r, s, -3, 3, d), _per_element(math.asinh)),
    "arccosh": (lambda r, s, d: uniform(r, s, 1.2, 4, d), _per_element(math.acosh)),
    "arctanh": (lambda r, s, d: uniform(r, s, -0.9, 0.9, d), _per_element(math.atanh)),
    "cbrt": (lambda r, s, d: away_from_zero(r, s, 0.3, 3, d), _per_element(lambda v: math.copysign(abs(v) ** (1 / 3), v))),
    "erfc": (lambda r, s, d: uniform(r, s, -2, 3, d), _per_element(_mp_float(lambda v: __import__("mpmath").erfc(v)))),
    "erfinv": (lambda r, s, d: uniform(r, s, -0.95, 0.95, d), _per_element(_mp_float(lambda v: __import__("mpmath").erfinv(v)))),
    # positive arguments and negative ones between the poles
    "lgamma": (lambda r, s, d: np.where(r.random(s) < 0.6, r.uniform(0.2, 6, size=s),
                                        r.integers(-3, 0, size=s) + r.uniform(0.15, 0.85, size=s)).astype(d),
               _per_element(_lgamma_mp)),
})


def _polygamma_ref(n):
    import mpmath

    def f(v):
        with mpmath.workprec(100):
            return float(mpmath.polygamma(n, mpmath.mpf(v)))
    return _per_element(f)


@factory
def polygamma_case(draw, ad):
    shape = draw(shapes(min_side=side0(draw)))
    dtype = float_dtype(draw, ad)
    n = draw(st.integers(0, 3))

    def sample(rng):  # positive arguments, and negative ones away from the poles
        x = np.where(rng.random(shape) < 0.6, rng.uniform(0.3, 12, size=shape),
                     rng.integers(-4, 0, size=shape) + rng.uniform(0.15, 0.85, size=shape))
        return [x.astype(dtype)]
    # polygamma's derivatives grow fast near the poles: a relative step and tolerance that fit
    return make(draw, "polygamma", {"n": n}, sample, _polygamma_ref(n), op=lambda x: ops.polygamma(n, x),
                rtol=1e-4, eps=1e-7)


def _fmod_ref(a, b):
    def one(u, v):
        if isinstance(u, float):
            return math.fmod(u, v) if v != 0 else math.nan
        return 0 if v == 0 else int(math.copysign(abs(u) % abs(v), u))
    return _pairwise(one, a, b)


def _remainder_ref(a, b):
    def one(u, v):
        if isinstance(u, float):
            return u % v if v != 0 else math.nan
        return 0 if v == 0 else u % v
    return _pairwise(one, a, b)


def _pairwise(fn, a, b):
    """Elementwise fn over broadcast a, b as Python numbers (ints stay Python ints)."""
    a, b = np.broadcast_arrays(a, b)
    kind = float if a.dtype.kind == "f" else int
    out = [fn(kind(u), kind(v)) for u, v in zip(a.ravel().tolist(), b.ravel().tolist())]
    return np.array(out, np.float64 if kind is float else np.int64).reshape(a.shape).astype(a.dtype)


def _logaddexp_mp(a, b):
    import mpmath

    def one(u, v):
        with mpmath.workprec(100):
            return float(mpmath.log(mpmath.exp(mpmath.mpf(u)) + mpmath.exp(mpmath.mpf(v))))
    return _pairwise(one, a, b)


_MORE_BINARY = {
    # name: (reference, ops function, int dtypes allowed)
    "arctan2": (lambda a, b: _pairwise(math.atan2, a, b), ops.arctan2, False),
    "hypot": (lambda a, b: _pairwise(math.hypot, a, b), ops.hypot, False),
    "logaddexp": (_logaddexp_mp, ops.logaddexp, False),
    "fmod": (_fmod_ref, ops.fmod, True),
    "remainder": (_remainder_ref, ops.remainder, True),
}


def _more_binary_factory(name):
    ref, op, allow_int = _MORE_BINARY[name]

    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = numeric_dtype(draw, ad) if allow_int else float_dtype(draw, ad)
        if dtype.startswith("int"):  # zero divisors included: NumPy's x % 0 is 0
            sample = lambda rng: [ints(rng, sa, -9, 9, dtype), ints(rng, sb, -4, 4, dtype)]  # noqa: E731
        elif name in ("fmod", "remainder"):
            def sample(rng):  # x / y away from the integers, where the result jumps: |y| = c everywhere
                c = rng.uniform(0.5, 2)
                y = c * rng.choice([-1.0, 1.0], size=sb)
                x = _off_integers(-3, 2)(rng, sa, F64) * c
                return [np.asarray(x).astype(dtype), np.asarray(y).astype(dtype)]
        elif name == "hypot":
            sample = lambda rng: [away_from_zero(rng, sa, 0.3, 2, dtype), away_from_zero(rng, sb, 0.3, 2, dtype)]  # noqa: E731
        elif name == "arctan2":  # away from the branch cut (x < 0, y = 0) and the origin
            sample = lambda rng: [away_from_zero(rng, sa, 0.3, 2, dtype), uniform(rng, sb, 0.2, 2, dtype)]  # noqa: E731
        else:
            sample = lambda rng: [uniform(rng, sa, -3, 3, dtype), uniform(rng, sb, -3, 3, dtype)]  # noqa: E731
        return make(draw, name, {}, sample, ref, op=op)
    f.__name__ = f"binary_{name}"
    return f


# ---------------------------------------------------------------- the table

CASES: dict[str, list] = {}
for _n in _UNARY_FLOAT:
    CASES[_n] = [_unary_factory(_n)]
for _n in _UNARY_ANY:
    CASES[_n] = [_unary_any_factory(_n)]
for _n in _BINARY:
    CASES[_n] = [_binary_factory(_n)]
for _n in ("maximum", "minimum"):
    CASES[_n].append(_ties_factory(_n))
for _n in _MORE_BINARY:
    CASES[_n] = [_more_binary_factory(_n)]
CASES["polygamma"] = [polygamma_case]
for _n in _COMPARE:
    CASES[_n] = [_compare_factory(_n)]
for _n in _BITWISE:
    CASES[_n] = [_bitwise_factory(_n)]
for _n in _SHIFT:
    CASES[_n] = [_shift_factory(_n)]
for _n in ("sum", "prod", "max", "min"):
    CASES[_n] = [_reduction_factory(_n)]
for _n in ("max", "min"):
    CASES[_n].append(_reduction_factory(_n, ties=True))
for _n in ("argmax", "argmin"):
    CASES[_n] = [_argreduction_factory(_n)]
CASES.update({
    "logical_not": [logical_not_case], "signbit": [signbit_case], "stop_gradient": [stop_gradient_case], "astype": [astype_case],
    "where": [where_case], "matmul": [matmul_case], "einsum": [einsum_case],
    "reshape": [reshape_case], "broadcast_to": [broadcast_to_case], "transpose": [transpose_case],
    "slice": [slice_case], "pad": [pad_case], "flip": [flip_case], "concat": [concat_case],
    "take": [take_case], "index_add": [index_add_case], "index_check": [index_check_case],
    "constant": [constant_case], "full": [full_case], "arange": [arange_case], "eye": [eye_case],
})
if "conv2d" in PRIMITIVES:  # written concurrently (tests/test_conv.py); covered here once it exists
    CASES["conv2d"] = [conv2d_case]


# ---------------------------------------------------------------- scans and sorting (issue 17)

@factory
def cumsum_case(draw, ad):
    shape = draw(shapes(1, 3, min_side=side0(draw), max_side=6))
    axis = draw(st.integers(0, len(shape) - 1))
    dtype = numeric_dtype(draw, ad)
    sample = (lambda rng: [ints(rng, shape, -3, 3, dtype)]) if dtype.startswith("int") else \
        (lambda rng: [uniform(rng, shape, -2, 2, dtype)])

    def ref(x):  # naive running sum along the axis
        out = np.zeros_like(x)
        acc = np.zeros_like(np.take(x, 0, axis)) if x.shape[axis] else None
        for i in range(x.shape[axis]):
            acc = acc + np.take(x, i, axis)
            sl = tuple(i if a == axis else slice(None) for a in range(x.ndim))
            out[sl] = acc
        return out
    return make(draw, "cumsum", {"axis": axis}, sample, ref, op=lambda x: ops.cumsum(x, axis))


@factory
def argsort_case(draw, ad):
    shape = draw(shapes(1, 3, min_side=side0(draw), max_side=6))
    axis = draw(st.integers(0, len(shape) - 1))
    dtype = draw(st.sampled_from([F64, "float32", "int64", "int32", "bool"]))
    ties = draw(st.booleans())

    def sample(rng):
        if dtype == "bool":
            return [rng.random(shape) < 0.5]
        if dtype.startswith("int") or ties:
            x = ints(rng, shape, -2, 2).astype(dtype)
        else:
            x = distinct(rng, [shape], dtype)[0]
        if dtype.startswith("float"):  # NaNs (last) and signed zeros (equal)
            x = np.where(rng.random(shape) < 0.15, np.nan, x).astype(dtype)
            x = np.where(rng.random(shape) < 0.15, -0.0, x).astype(dtype)
        return [x]

    def ref(x):  # stable ascending order, NaNs last, -0.0 == 0.0: by (is NaN, value, index)
        x64 = x.astype(np.float64)
        moved = np.moveaxis(x64, axis, -1)
        out = np.empty(moved.shape, np.int64)
        for pos in np.ndindex(*moved.shape[:-1]):
            row = moved[pos]
            out[pos] = sorted(range(len(row)), key=lambda i: (bool(np.isnan(row[i])),
                                                              0.0 if np.isnan(row[i]) else row[i], i))
        return np.moveaxis(out, -1, axis)
    return make(draw, "argsort", {"axis": axis}, sample, ref, op=lambda x: ops.argsort(x, axis))


CASES["cumsum"] = [cumsum_case]
CASES["argsort"] = [argsort_case]


# ---------------------------------------------------------------- dense linear algebra (issue 17)
# Oracles in mpmath (50 digits, one matrix at a time): a shared LAPACK call would be the reference
# kernel itself. Inputs are well conditioned (diagonally dominant; SPD as m m^T + n I for cholesky).

def _mp_each(fn, *arrays):
    """Apply fn (mpmath matrices -> list of float arrays) per matrix of the batch axes."""
    import mpmath
    batch = arrays[0].shape[:-2]
    outs = None
    with mpmath.workdps(50):
        for pos in np.ndindex(*batch):
            res = fn(*[mpmath.matrix(a[pos].astype(np.float64).tolist()) for a in arrays])
            if outs is None:
                outs = [np.empty(batch + np.shape(r), np.float64) for r in res]
            for o, r in zip(outs, res):
                o[pos] = r
    dt = arrays[0].dtype
    if outs is None:  # an empty batch
        return None
    return outs[0].astype(dt)


def _mp_to_np(m):
    return np.array([[float(m[i, j]) for j in range(m.cols)] for i in range(m.rows)])


def _mp_solve_ref(a, b):
    import mpmath
    if a.shape[-1] == 0 or b.shape[-1] == 0 or not b.size:
        return np.zeros(b.shape, b.dtype)
    def one(x, y):  # mpmath's lu_solve takes one right-hand side at a time
        cols = [mpmath.lu_solve(x, y.column(j)) for j in range(y.cols)]
        return [np.array([[float(c[i]) for c in cols] for i in range(y.rows)])]
    r = _mp_each(one, a, b)
    return np.zeros(b.shape, b.dtype) if r is None else r


def _well_conditioned(rng, shape, dtype):
    """Random matrices with a dominant diagonal of random sign (condition number below ~10)."""
    n = shape[-1]
    a = rng.uniform(-1, 1, shape)
    d = rng.uniform(n + 1.0, n + 2.0, shape[:-1]) * rng.choice([-1.0, 1.0], shape[:-1])
    return (a + d[..., None] * np.eye(n)).astype(dtype)


def _spd(rng, shape, dtype):
    m = rng.uniform(-1, 1, shape)
    n = shape[-1]
    return (m @ np.swapaxes(m, -1, -2) + n * np.eye(n)).astype(dtype)


def _la_shapes(draw, rhs=True):
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    return batch + (n, n), batch + (n, k)


def _float_la_dtype(draw, ad):
    return F64 if ad else draw(st.sampled_from([F64, "float32"]))


@factory
def solve_case(draw, ad):
    sa, sb = _la_shapes(draw)
    dtype = _float_la_dtype(draw, ad)
    sample = lambda rng: [_well_conditioned(rng, sa, dtype), uniform(rng, sb, -2, 2, dtype)]  # noqa: E731
    return make(draw, "solve", {}, sample, _mp_solve_ref, op=ops.linalg.solve)


def _mp_slogdet_ref(a):
    import mpmath

    def one(x):
        d = mpmath.det(x)
        return [np.array([float(mpmath.sign(d)), float(mpmath.log(abs(d))) if d != 0 else -np.inf])]
    return _mp_each(one, a)


@factory
def slogdet_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = _float_la_dtype(draw, ad)
    return make(draw, "slogdet", {}, lambda rng: [_well_conditioned(rng, sa, dtype)], _mp_slogdet_ref)


def _mp_cholesky_ref(a):
    import mpmath

    def one(x):  # the symmetric matrix the lower triangle stands for
        n = x.rows
        s = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                s[i, j] = x[max(i, j), min(i, j)]
        return [_mp_to_np(mpmath.cholesky(s))]
    return _mp_each(one, a)


@factory
def cholesky_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = _float_la_dtype(draw, ad)
    asym = draw(st.booleans())  # the upper triangle is never read: junk there must not matter

    def sample(rng):
        s = _spd(rng, sa, dtype)
        if asym:
            s = (s + np.triu(rng.uniform(-1, 1, sa), 1)).astype(dtype)
        return [s]
    return make(draw, "cholesky", {}, sample, _mp_cholesky_ref, op=ops.linalg.cholesky)


def _trisolve_ref(lower, trans, unit, solve=None):
    """The reference of triangular_solve: `solve` (default mpmath's real LU, _mp_solve_ref) of the
    triangle read (unit diagonal if asked), op = plain transpose."""
    def ref(a, b):
        n = a.shape[-1]
        t = np.tril(a) if lower else np.triu(a)
        if unit:
            t = t * (1 - np.eye(n)) + np.eye(n)
        if trans:
            t = np.swapaxes(t, -1, -2)
        return (solve or _mp_solve_ref)(t.astype(a.dtype), b)
    return ref


@factory
def triangular_solve_case(draw, ad):
    sa, sb = _la_shapes(draw)
    dtype = _float_la_dtype(draw, ad)
    lower, trans, unit = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    sample = lambda rng: [_well_conditioned(rng, sa, dtype), uniform(rng, sb, -2, 2, dtype)]  # noqa: E731
    return make(draw, "triangular_solve", {"lower": lower, "trans": trans, "unit_diagonal": unit}, sample,
                _trisolve_ref(lower, trans, unit),
                op=lambda a, b: ops.linalg.solve_triangular(a, b, trans=int(trans), lower=lower, unit_diagonal=unit))


def _sym_separated(rng, shape, dtype, junk):
    """Symmetric matrices q diag(d) q^T with eigenvalues at least 0.7 apart (eigenvectors well
    defined); junk: random entries in the strict upper triangle, which eigh never reads."""
    n = shape[-1]
    q, _ = np.linalg.qr(rng.normal(size=shape))
    d = np.cumsum(rng.uniform(0.7, 1.5, shape[:-1]), -1) - n * rng.uniform(0, 1, shape[:-2] + (1,))
    s = (q * d[..., None, :]) @ np.swapaxes(q, -1, -2)
    if junk:
        s = s + np.triu(rng.uniform(-1, 1, shape), 1)
    return s.astype(dtype)


def _first_big_positive(v):
    """The sign rule of graphad's eigh, written out: per column, the first entry with magnitude
    >= 0.5 / sqrt(n) made positive."""
    v = v.copy()
    n = v.shape[0]
    for j in range(v.shape[1]):
        for i in range(n):
            if abs(v[i, j]) >= 0.5 / math.sqrt(n):
                if v[i, j] < 0:
                    v[:, j] = -v[:, j]
                break
    return v


def _mp_eigh_ref(a):
    import mpmath

    def one(x):
        n = x.rows
        s = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                s[i, j] = x[max(i, j), min(i, j)]
        e, q = mpmath.eigsy(s)
        w = np.array([float(e[i]) for i in range(n)])
        v = _mp_to_np(q)
        order = np.argsort(w, kind="stable")
        return [np.concatenate([_first_big_positive(v[:, order]), w[order][None, :]], 0)]
    return _mp_each(one, a)


@factory
def eigh_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = _float_la_dtype(draw, ad)
    junk = draw(st.booleans())
    return make(draw, "eigh", {}, lambda rng: [_sym_separated(rng, sa, dtype, junk)], _mp_eigh_ref)


def _mp_qr_ref(a):
    """Gram-Schmidt in mpmath (50 digits), with the signs of r's diagonal LAPACK's (from NumPy)."""
    import mpmath
    signs = np.sign(np.diagonal(np.linalg.qr(a.astype(np.float64))[1], 0, -2, -1))

    def one(x, sg):
        m, n = x.rows, x.cols
        q = mpmath.matrix(m, n)
        r = mpmath.matrix(n, n)
        for j in range(n):
            col = x.column(j)
            for i in range(j):
                r[i, j] = sum(q[k, i] * x[k, j] for k in range(m))
                col = col - r[i, j] * q.column(i)
            r[j, j] = mpmath.norm(col)
            for k in range(m):
                q[k, j] = col[k] / r[j, j]
        qn, rn = _mp_to_np(q), _mp_to_np(r)
        sgn = np.array([float(sg[0, j]) for j in range(n)])
        return [np.concatenate([qn * sgn, rn * sgn[:, None]], 0)]
    return _mp_each(one, a, signs[..., None, :])


@factory
def qr_case(draw, ad):
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = draw(st.integers(1, 3))
    m = n + draw(st.integers(0, 2))
    dtype = _float_la_dtype(draw, ad)

    def sample(rng):  # a dominant diagonal on top: full column rank, well conditioned
        a = rng.uniform(-1, 1, batch + (m, n))
        a[..., :n, :] += (n + 1.0) * np.eye(n) * rng.choice([-1.0, 1.0], batch + (1, n))
        return [a.astype(dtype)]
    return make(draw, "qr", {}, sample, _mp_qr_ref)


def _mp_svd_ref(a):
    """mpmath's svd_r (50 digits), packed as the svd primitive's result with graphad's signs."""
    import mpmath

    def one(x):
        uu, ss, vv = mpmath.svd_r(x, full_matrices=False)
        u, v = _mp_to_np(uu), _mp_to_np(vv).T
        sv = np.array([float(ss[i]) for i in range(ss.rows)])
        vs = _first_big_positive(v)
        flip = np.where(np.sum(vs * v, 0) < 0, -1.0, 1.0)
        return [np.concatenate([u * flip, sv[None, :], vs], 0)]
    return _mp_each(one, a)


@factory
def svd_case(draw, ad):
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = draw(st.integers(1, 3))
    m = n + draw(st.integers(0, 2))
    dtype = _float_la_dtype(draw, ad)

    def sample(rng):  # singular values at least 0.5 apart and >= 0.5: every derivative defined
        u, _ = np.linalg.qr(rng.normal(size=batch + (m, n)))
        v, _ = np.linalg.qr(rng.normal(size=batch + (n, n)))
        sv = 0.5 + np.cumsum(rng.uniform(0.5, 1.0, batch + (n,)), -1)
        return [((u * sv[..., None, :]) @ np.swapaxes(v, -1, -2)).astype(dtype)]
    return make(draw, "svd", {}, sample, _mp_svd_ref)


CASES.update({"solve": [solve_case], "slogdet": [slogdet_case], "cholesky": [cholesky_case],
              "triangular_solve": [triangular_solve_case]})
CASES.update({"eigh": [eigh_case], "qr": [qr_case], "svd": [svd_case]})


# ---------------------------------------------------------------- complex numbers (docs/complex.md)
#
# complex64/complex128 cases of the primitives that take them, with references written from the
# real formulas (not NumPy's complex kernels): exp(x + iy) = e^x (cos y + i sin y), and so on.
# With ad=True the operands are complex128 (the derivative tests then check JAX's convention:
# <u, J v> = <J^T u, v> under the pairing Re(sum(u * v)), docs/complex.md).

C128 = "complex128"


def complex_dtype(draw, ad):
    return C128 if ad else draw(st.sampled_from([C128, C128, "complex64"]))


def cuniform(rng, shape, lo, hi, dtype=C128, im=(-2.0, 2.0)):
    """Real parts in [lo, hi], imaginary parts in `im`."""
    return (rng.uniform(lo, hi, shape) + 1j * rng.uniform(im[0], im[1], shape)).astype(dtype)


def _c(re, im, like):
    out = np.empty(np.shape(re), like.dtype)
    out.real, out.imag = re, im
    return out


def _ref_exp(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.exp(x) * np.cos(y), np.exp(x) * np.sin(y), z)


def _ref_log(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.log(np.hypot(x, y)), np.arctan2(y, x), z)


def _ref_sqrt(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    r, a = np.sqrt(np.hypot(x, y)), np.arctan2(y, x) / 2
    return _c(r * np.cos(a), r * np.sin(a), z)


def _ref_sin(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.sin(x) * np.cosh(y), np.cos(x) * np.sinh(y), z)


def _ref_cos(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.cos(x) * np.cosh(y), -np.sin(x) * np.sinh(y), z)


def _ref_tanh(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    d = np.cosh(2 * x) + np.cos(2 * y)
    return _c(np.sinh(2 * x) / d, np.sin(2 * y) / d, z)


def _ref_mul(a, b):
    a, b = np.broadcast_arrays(a, b)
    x, y, u, v = (t.astype(np.float64) for t in (a.real, a.imag, b.real, b.imag))
    return _c(x * u - y * v, x * v + y * u, a)


def _ref_div(a, b):
    a, b = np.broadcast_arrays(a, b)
    x, y, u, v = (t.astype(np.float64) for t in (a.real, a.imag, b.real, b.imag))
    d = u * u + v * v
    return _c((x * u + y * v) / d, (y * u - x * v) / d, a)


def _ref_pow(a, b):
    return _ref_exp(_ref_mul(b.astype(np.complex128), _ref_log(a.astype(np.complex128)))).astype(a.dtype)


def _right(r, s, d):  # the right half-plane: away from log's and sqrt's branch cut
    return cuniform(r, s, 0.3, 2.5, d)


_COMPLEX_UNARY = {
    # name: (sampler(rng, shape, dtype), reference)
    "exp": (lambda r, s, d: cuniform(r, s, -2, 2, d), _ref_exp),
    "log": (_right, _ref_log),
    "sqrt": (_right, _ref_sqrt),
    "rsqrt": (_right, lambda z: _ref_div(np.ones_like(z), _ref_sqrt(z))),
    "sin": (lambda r, s, d: cuniform(r, s, -2, 2, d), _ref_sin),
    "cos": (lambda r, s, d: cuniform(r, s, -2, 2, d), _ref_cos),
    "tanh": (lambda r, s, d: cuniform(r, s, -1, 1, d, im=(-0.6, 0.6)), _ref_tanh),
    "square": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: _ref_mul(z, z)),
    "reciprocal": (_right, lambda z: _ref_div(np.ones_like(z), z)),
    "neg": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: _c(-z.real, -z.imag, z)),
    "abs": (_right, lambda z: np.hypot(z.real.astype(np.float64), z.imag.astype(np.float64)).astype(z.real.dtype)),
    "real": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: z.real.copy()),
    "imag": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: z.imag.copy()),
    "conj": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: _c(z.real, -z.imag, z)),
}


# the functions that gained complex operands later (issue 17), with references from the real
# formulas as above: the inverse functions are the principal logarithm and square root of the
# textbook identities (arcsinh z = log(z + sqrt(z^2 + 1)), arccosh z = log(z + sqrt(z + 1)
# sqrt(z - 1)), arctanh z = (log(1 + z) - log(1 - z)) / 2, arcsin z = -i arcsinh(iz),
# arccos z = pi/2 - arcsin z, arctan z = -i arctanh(iz)), evaluated with _ref_log and _ref_sqrt
# (the polar form), not NumPy's complex kernels. Samples keep 0.3 away from the branch cuts and
# poles (central differences straddle neither).

def _w(z):
    return z.astype(np.complex128)


def _ref_add(a, b):
    a, b = np.broadcast_arrays(_w(a), _w(b))
    return _c(a.real + b.real, a.imag + b.imag, a)


def _times_i(z, k=1):
    """i^k z by swapping parts (k = 1: i z = -y + i x; k = -1: -i z = y - i x)."""
    return _c(-z.imag, z.real, z) if k == 1 else _c(z.imag, -z.real, z)


def _ref_scale(z, s):
    return _c(z.real * s, z.imag * s, z)


def _ref_tan(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    d = np.cos(2 * x) + np.cosh(2 * y)
    return _c(np.sin(2 * x) / d, np.sinh(2 * y) / d, z)


def _ref_sinh(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.sinh(x) * np.cos(y), np.cosh(x) * np.sin(y), z)


def _ref_cosh(z):
    x, y = z.real.astype(np.float64), z.imag.astype(np.float64)
    return _c(np.cosh(x) * np.cos(y), np.sinh(x) * np.sin(y), z)


def _ref_arcsinh_w(z):
    z = _w(z)
    return _ref_log(_ref_add(z, _ref_sqrt(_ref_add(_ref_mul(z, z), np.ones_like(z)))))


def _ref_arctanh_w(z):
    z, one = _w(z), np.ones_like(_w(z))
    diff = _ref_add(_ref_log(_ref_add(one, z)), _ref_scale(_ref_log(_ref_add(one, _ref_scale(z, -1.0))), -1.0))
    return _ref_scale(diff, 0.5)


def _ref_arcsin_w(z):
    return _times_i(_ref_arcsinh_w(_times_i(_w(z))), -1)


def _ref_arccosh(z):
    w, one = _w(z), np.ones_like(_w(z))
    root = _ref_mul(_ref_sqrt(_ref_add(w, one)), _ref_sqrt(_ref_add(w, _ref_scale(one, -1.0))))
    return _ref_log(_ref_add(w, root)).astype(z.dtype)


def _ref_sigmoid(z):
    w = _w(z)
    return _ref_div(np.ones_like(w), _ref_add(np.ones_like(w), _ref_exp(_ref_scale(w, -1.0)))).astype(z.dtype)


def _off_real_axis(r, s, d):
    """Imaginary parts at least 0.3 from 0 (cuts on the real axis: arcsin, arccos, arctanh, arccosh)."""
    return (r.uniform(-2, 2, s) + 1j * away_from_zero(r, s, 0.3, 1.5)).astype(d)


def _off_imag_axis(r, s, d):
    """Real parts at least 0.3 from 0 (cuts on the imaginary axis: arctan, arcsinh)."""
    return (away_from_zero(r, s, 0.3, 2) + 1j * r.uniform(-2, 2, s)).astype(d)


_LN2, _LN10 = math.log(2.0), math.log(10.0)
_COMPLEX_UNARY.update({
    # tan's poles are on the real axis at pi/2 + k pi; sigmoid's at i pi (2k + 1)
    "tan": (lambda r, s, d: cuniform(r, s, -1.2, 1.2, d, im=(-1.0, 1.0)), _ref_tan),
    "sinh": (lambda r, s, d: cuniform(r, s, -2, 2, d), _ref_sinh),
    "cosh": (lambda r, s, d: cuniform(r, s, -2, 2, d), _ref_cosh),
    "sigmoid": (lambda r, s, d: cuniform(r, s, -3, 3, d, im=(-2.5, 2.5)), _ref_sigmoid),
    "arcsinh": (_off_imag_axis, lambda z: _ref_arcsinh_w(z).astype(z.dtype)),
    "arcsin": (_off_real_axis, lambda z: _ref_arcsin_w(z).astype(z.dtype)),
    "arccos": (_off_real_axis, lambda z: _ref_add(np.full(z.shape, math.pi / 2, np.complex128),
                                                  _ref_scale(_ref_arcsin_w(z), -1.0)).astype(z.dtype)),
    "arctanh": (_off_real_axis, lambda z: _ref_arctanh_w(z).astype(z.dtype)),
    "arctan": (_off_imag_axis, lambda z: _times_i(_ref_arctanh_w(_times_i(_w(z))), -1).astype(z.dtype)),
    "arccosh": (_off_real_axis, _ref_arccosh),
    "log2": (_right, lambda z: _ref_scale(_ref_log(_w(z)), 1 / _LN2).astype(z.dtype)),
    "log10": (_right, lambda z: _ref_scale(_ref_log(_w(z)), 1 / _LN10).astype(z.dtype)),
    "exp2": (lambda r, s, d: cuniform(r, s, -2, 2, d), lambda z: _ref_exp(_ref_scale(_w(z), _LN2)).astype(z.dtype)),
    "expm1": (lambda r, s, d: cuniform(r, s, -2, 2, d),
              lambda z: _ref_add(_ref_exp(_w(z)), np.full(z.shape, -1.0, np.complex128)).astype(z.dtype)),
    # log1p's cut: 1 + z on the negative real axis, so Re z > -0.7
    "log1p": (lambda r, s, d: cuniform(r, s, -0.7, 2, d),
              lambda z: _ref_log(_ref_add(np.ones(z.shape, np.complex128), z)).astype(z.dtype)),
})


_COMPLEX_BINARY = {
    "add": (lambda a, b: _c(*np.broadcast_arrays(a.real + b.real, a.imag + b.imag), a), ops.add),
    "sub": (lambda a, b: _c(*np.broadcast_arrays(a.real - b.real, a.imag - b.imag), a), ops.sub),
    "mul": (_ref_mul, ops.mul),
    "div": (_ref_div, ops.div),
    "pow": (_ref_pow, ops.pow),
}


def _complex_binary_factory(name):
    ref, op = _COMPLEX_BINARY[name]

    @factory
    def f(draw, ad):
        sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
        dtype = complex_dtype(draw, ad)
        if name in ("div", "pow"):  # a divisor away from 0, a base away from the branch cut
            sample = lambda rng: [_right(rng, sa, dtype) if name == "pow" else cuniform(rng, sa, -2, 2, dtype),  # noqa: E731
                                  _right(rng, sb, dtype) if name == "div" else cuniform(rng, sb, -1, 1, dtype)]
        else:
            sample = lambda rng: [cuniform(rng, sa, -2, 2, dtype), cuniform(rng, sb, -2, 2, dtype)]  # noqa: E731
        return make(draw, name, {}, sample, ref, op=op)
    f.__name__ = f"complex_binary_{name}"
    return f


@factory
def complex_case(draw, ad):
    sa, sb = draw(bshapes(min_side=side0(draw))).input_shapes
    dtype = float_dtype(draw, ad)
    return make(draw, "complex", {}, lambda rng: [uniform(rng, sa, -2, 2, dtype), uniform(rng, sb, -2, 2, dtype)],
                lambda a, b: _c(*np.broadcast_arrays(a, b), np.empty(0, np.complex128 if a.dtype == np.float64
                                                                     else np.complex64)),
                op=ops.complex)


def _complex_reduction(draw, ad):
    """(shape, axes, keepdims, complex dtype) of a complex reduction case."""
    shape = draw(shapes(0, 4, min_side=side0(draw)))
    return shape, draw(axes_of(len(shape))), draw(st.booleans()), complex_dtype(draw, ad)


@factory
def complex_sum_case(draw, ad):
    shape, axes, keepdims, dtype = _complex_reduction(draw, ad)

    def ref(z):
        if z.ndim == 0 or not axes:
            return z.copy()
        x, y = (np.sum(p.astype(np.float64), axis=axes, keepdims=keepdims) for p in (z.real, z.imag))
        return _c(x, y, z)
    return make(draw, "sum", {"axes": axes, "keepdims": keepdims}, lambda rng: [cuniform(rng, shape, -2, 2, dtype)],
                ref)


@factory
def complex_matmul_case(draw, ad):
    sa, sb = _matmul_shapes(draw)
    dtype = complex_dtype(draw, ad)
    return make(draw, "matmul", {}, lambda rng: [cuniform(rng, sa, -2, 2, dtype), cuniform(rng, sb, -2, 2, dtype)],
                lambda a, b: _ref_mul(a[..., :, :, None], b[..., None, :, :]).sum(-2).astype(a.dtype), op=ops.matmul)


@factory
def complex_einsum_case(draw, ad):
    spec = draw(st.sampled_from(["ab,bc->ac", "ab,ab->", "a,b->ab", "abc,cb->a"]))
    ins = spec.split("->")[0].split(",")
    size = {c: draw(st.integers(1, 3)) for c in "abc"}
    shapes_ = [tuple(size[c] for c in s) for s in ins]
    dtype = complex_dtype(draw, ad)
    return make(draw, "einsum", {"spec": spec}, lambda rng: [cuniform(rng, s, -2, 2, dtype) for s in shapes_],
                lambda *xs: einsum_ref(spec, *xs))


def _mp_complex_solve_ref(a, b):
    """solve by mpmath's LU in complex arithmetic, per matrix of the batch axes."""
    import mpmath
    out = np.empty(b.shape, np.complex128)
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            x = mpmath.matrix([[mpmath.mpc(complex(v)) for v in row] for row in a[pos]])
            for j in range(b.shape[-1]):
                y = mpmath.matrix([mpmath.mpc(complex(v)) for v in b[pos][:, j]])
                col = mpmath.lu_solve(x, y)
                out[pos + (slice(None), j)] = [complex(col[i]) for i in range(b.shape[-2])]
    return out.astype(b.dtype)


@factory
def complex_solve_case(draw, ad):
    sa, sb = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    sample = lambda rng: [(_well_conditioned(rng, sa, np.float64) + 1j * rng.uniform(-1, 1, sa)).astype(dtype),  # noqa: E731
                          cuniform(rng, sb, -2, 2, dtype)]
    return make(draw, "solve", {}, sample, _mp_complex_solve_ref, op=ops.linalg.solve)


def _complexified(base):
    """The cases of `base` (a primitive indifferent to its dtype: shapes, selections, cumsum) with
    every float operand made complex (an imaginary part drawn like the real one); its reference
    works on complex arrays as they are (it indexes, fills and adds)."""
    @factory
    def f(draw, ad):
        case = draw(base(ad))

        def sample(rng):
            re, im = case.sample(rng), case.sample(rng)
            return [a + 1j * b if a.dtype.kind == "f" and a.dtype.itemsize >= 4 else a for a, b in zip(re, im)]
        return make(draw, case.prim, case.attrs, sample, case.ref, op=case.op, fd=case.fd, zero_grad=case.zero_grad,
                    rtol=case.rtol, eps=case.eps)
    f.__name__ = f"complex_{base.__name__}"
    return f


# the primitives that take complex operands through their dtype-indifferent rules
_COMPLEXIFIED = ("reshape", "broadcast_to", "transpose", "slice", "pad", "flip", "concat", "take", "index_add",
                 "where", "stop_gradient", "cumsum")
for _n in _COMPLEXIFIED:
    CASES[_n].append(_complexified(CASES[_n][0]))
def _mp_complex_dets(a, of, tail: tuple = ()):
    """of(d) (an entry of shape `tail`) for d the det of each matrix of `a`'s batch axes, by
    mpmath in complex arithmetic (50 digits, `of` evaluated at that precision too)."""
    import mpmath
    out = np.empty(a.shape[:-2] + tail, np.complex128)
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            out[pos] = of(mpmath.det(mpmath.matrix([[mpmath.mpc(complex(v)) for v in row] for row in a[pos]])))
    return out


def _mp_complex_det_ref(a):
    """det by mpmath in complex arithmetic (50 digits), per matrix of the batch axes."""
    return _mp_complex_dets(a, complex).astype(a.dtype)


@factory
def complex_det_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    sample = lambda rng: [(_well_conditioned(rng, sa, np.float64) + 1j * rng.uniform(-1, 1, sa)).astype(dtype)]  # noqa: E731
    return make(draw, "det", {}, sample, _mp_complex_det_ref, op=ops.linalg.det)


@factory
def complex_prod_case(draw, ad):
    shape, axes, keepdims, dtype = _complex_reduction(draw, ad)

    def sample(rng):  # exact zeros included: the partials are products, exact there too
        z = cuniform(rng, shape, -1.3, 1.3, dtype, im=(-1.0, 1.0))
        return [np.where(rng.random(shape) < 0.15, 0, z).astype(dtype)]

    def ref(z):
        if z.ndim == 0 or not axes:
            return z.copy()
        # a running product of the reduced elements, one _ref_mul (x u - y v, x v + y u) at a time
        keep = [i for i in range(z.ndim) if i not in axes]
        n = int(np.prod([z.shape[a] for a in axes], dtype=np.int64))
        y = np.transpose(_w(z), keep + list(axes)).reshape([z.shape[i] for i in keep] + [n])
        acc = np.ones(y.shape[:-1], np.complex128)
        for k in range(n):
            acc = _ref_mul(acc, y[..., k])
        if keepdims:
            acc = acc.reshape([1 if i in axes else m for i, m in enumerate(z.shape)])
        return acc.astype(z.dtype)
    return make(draw, "prod", {"axes": axes, "keepdims": keepdims}, sample, ref,
                op=lambda x: ops.prod(x, axes, keepdims))


def _mp_complex_slogdet_ref(a):
    """(det / |det|, log|det| + 0i) by mpmath's complex det (50 digits), packed as the primitive's
    last axis of 2."""
    import mpmath

    def sign_logabs(d):
        r = abs(d)
        return [complex(d / r) if r else 0j, complex(mpmath.log(r)) if r else complex(-np.inf)]
    return _mp_complex_dets(a, sign_logabs, (2,)).astype(a.dtype)


@factory
def complex_slogdet_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    sample = lambda rng: [(_well_conditioned(rng, sa, np.float64) + 1j * rng.uniform(-1, 1, sa)).astype(dtype)]  # noqa: E731
    return make(draw, "slogdet", {}, sample, _mp_complex_slogdet_ref)


def _mp_complex_matrix(x):
    import mpmath
    return mpmath.matrix([[mpmath.mpc(complex(v)) for v in row] for row in x])


def _mp_complex_cholesky_ref(a):
    """mpmath's cholesky (50 digits, complex arithmetic: l l^H) of the Hermitian matrix the lower
    triangle stands for, per matrix of the batch axes: strict lower triangle, its conjugate
    transpose, and the real part of the diagonal (LAPACK's zpotrf ignores the imaginary part)."""
    import mpmath
    out = np.empty(a.shape, np.complex128)
    n = a.shape[-1]
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            x = a[pos].astype(np.complex128)
            h = np.tril(x, -1) + np.conj(np.tril(x, -1)).T + np.diag(x.diagonal().real)
            low = mpmath.cholesky(_mp_complex_matrix(h))
            out[pos] = [[complex(low[i, j]) for j in range(n)] for i in range(n)]
    return out.astype(a.dtype)


def _hpd(rng, shape, dtype):
    """Hermitian positive definite matrices m m^H + n I (complex m)."""
    m = rng.uniform(-1, 1, shape) + 1j * rng.uniform(-1, 1, shape)
    n = shape[-1]
    return (m @ np.conj(np.swapaxes(m, -1, -2)) + n * np.eye(n)).astype(dtype)


@factory
def complex_cholesky_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    junk = draw(st.booleans())  # the upper triangle and the diagonal's imaginary part are never read

    def sample(rng):
        s = _hpd(rng, sa, dtype)
        if junk:
            n = sa[-1]
            s = s + np.triu(rng.uniform(-1, 1, sa) + 1j * rng.uniform(-1, 1, sa), 1) \
                + 1j * rng.uniform(-1, 1, sa[:-1])[..., None] * np.eye(n)
        return [s.astype(dtype)]
    return make(draw, "cholesky", {}, sample, _mp_complex_cholesky_ref, op=ops.linalg.cholesky)


@factory
def complex_triangular_solve_case(draw, ad):
    sa, sb = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    lower, trans, unit = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())

    def sample(rng):
        a = _well_conditioned(rng, sa, np.float64) + 1j * rng.uniform(-1, 1, sa)
        return [a.astype(dtype), cuniform(rng, sb, -2, 2, dtype)]

    ref = _trisolve_ref(lower, trans, unit, _mp_complex_solve_ref)  # mpmath's complex LU
    return make(draw, "triangular_solve", {"lower": lower, "trans": trans, "unit_diagonal": unit}, sample, ref,
                op=lambda a, b: ops.linalg.solve_triangular(a, b, trans=int(trans), lower=lower, unit_diagonal=unit))


def _mp_complex_qr_ref(a):
    """Gram-Schmidt in mpmath's complex arithmetic (50 digits; r_ij = q_i^H a_j), with the signs of
    r's real diagonal LAPACK's (from NumPy: the only thing taken from it), packed as qr's result."""
    import mpmath
    signs = np.sign(np.diagonal(np.linalg.qr(a.astype(np.complex128))[1], 0, -2, -1).real)
    m, n = a.shape[-2:]
    out = np.empty(a.shape[:-2] + (m + n, n), np.complex128)
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            x = _mp_complex_matrix(a[pos])
            q, r = mpmath.matrix(m, n), mpmath.matrix(n, n)
            for j in range(n):
                col = x.column(j)
                for i in range(j):
                    r[i, j] = sum(mpmath.conj(q[k, i]) * x[k, j] for k in range(m))
                    col = col - r[i, j] * q.column(i)
                r[j, j] = mpmath.sqrt(sum(abs(col[k]) ** 2 for k in range(m)))
                for k in range(m):
                    q[k, j] = col[k] / r[j, j]
            sg = signs[pos]
            out[pos] = [[complex(q[i, j]) * sg[j] for j in range(n)] for i in range(m)] + \
                       [[complex(r[i, j]) * sg[i] for j in range(n)] for i in range(n)]
    return out.astype(a.dtype)


def _tall_complex(draw, ad):
    """(batch axes, m, n, complex dtype) of a tall (m >= n) complex matrix case."""
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = draw(st.integers(1, 3))
    return batch, n + draw(st.integers(0, 2)), n, complex_dtype(draw, ad)


@factory
def complex_qr_case(draw, ad):
    batch, m, n, dtype = _tall_complex(draw, ad)

    def sample(rng):  # a dominant diagonal of random sign on top: full column rank, well conditioned
        a = rng.uniform(-1, 1, batch + (m, n)) + 1j * rng.uniform(-1, 1, batch + (m, n))
        a[..., :n, :] += (n + 1.0) * np.eye(n) * rng.choice([-1.0, 1.0], batch + (1, n))
        return [a.astype(dtype)]
    return make(draw, "qr", {}, sample, _mp_complex_qr_ref)


def _first_big_real_positive(v):
    """The phase rule of graphad's complex eigh, written out: per column, the first entry with
    magnitude >= 0.5 / sqrt(n) made real and positive (the column times conj(entry) / |entry|)."""
    v = v.copy()
    n = v.shape[0]
    for j in range(v.shape[1]):
        for i in range(n):
            if abs(v[i, j]) >= 0.5 / math.sqrt(n):
                v[:, j] = v[:, j] * (np.conj(v[i, j]) / abs(v[i, j]))
                break
    return v


def _mp_complex_eigh_ref(a):
    """mpmath's eighe (50 digits, complex Hermitian) of the matrix the lower triangle and the real
    part of the diagonal stand for, ascending, with graphad's phases; packed as eigh's result
    (the eigenvalues + 0i in the last row)."""
    import mpmath
    n = a.shape[-1]
    out = np.empty(a.shape[:-2] + (n + 1, n), np.complex128)
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            x = a[pos].astype(np.complex128)
            h = np.tril(x, -1) + np.conj(np.tril(x, -1)).T + np.diag(x.diagonal().real)
            e, q = mpmath.eighe(_mp_complex_matrix(h))
            w = np.array([float(mpmath.re(e[i])) for i in range(n)])
            v = np.array([[complex(q[i, j]) for j in range(n)] for i in range(n)])
            order = np.argsort(w, kind="stable")
            out[pos] = np.concatenate([_first_big_real_positive(v[:, order]), w[order][None, :]], 0)
    return out.astype(a.dtype)


@factory
def complex_eigh_case(draw, ad):
    sa, _ = _la_shapes(draw)
    dtype = complex_dtype(draw, ad)
    junk = draw(st.booleans())  # the strict upper triangle and the diagonal's imaginary part: not read

    def sample(rng):  # u diag(d) u^H, u unitary, eigenvalues at least 0.7 apart
        n = sa[-1]
        u, _ = np.linalg.qr(rng.normal(size=sa) + 1j * rng.normal(size=sa))
        d = np.cumsum(rng.uniform(0.7, 1.5, sa[:-1]), -1) - n * rng.uniform(0, 1, sa[:-2] + (1,))
        h = (u * d[..., None, :]) @ np.conj(np.swapaxes(u, -1, -2))
        if junk:
            h = h + np.triu(rng.uniform(-1, 1, sa) + 1j * rng.uniform(-1, 1, sa), 1) \
                + 1j * rng.uniform(-1, 1, sa[:-1])[..., None] * np.eye(n)
        return [h.astype(dtype)]
    return make(draw, "eigh", {}, sample, _mp_complex_eigh_ref)


def _mp_complex_svd_ref(a):
    """mpmath's svd_c (50 digits, complex arithmetic), packed as the svd primitive's result with
    graphad's phases written out: v_j's pivot real and positive, u_j turned by the same phase."""
    import mpmath
    m, n = a.shape[-2:]
    out = np.empty(a.shape[:-2] + (m + 1 + n, n), np.complex128)
    with mpmath.workdps(50):
        for pos in np.ndindex(*a.shape[:-2]):
            uu, ss, vv = mpmath.svd_c(_mp_complex_matrix(a[pos]), full_matrices=False)
            u = np.array([[complex(uu[i, j]) for j in range(n)] for i in range(m)])
            v = np.conj(np.array([[complex(vv[i, j]) for j in range(n)] for i in range(n)])).T  # a = u s v^H
            sv = np.array([float(mpmath.re(ss[i])) for i in range(n)])
            vs = _first_big_real_positive(v)
            ph = np.array([vs[np.argmax(np.abs(v[:, j]) >= 0.5 / math.sqrt(n)), j] /
                           v[np.argmax(np.abs(v[:, j]) >= 0.5 / math.sqrt(n)), j] for j in range(n)])
            out[pos] = np.concatenate([u * ph, sv[None, :], vs], 0)
    return out.astype(a.dtype)


@factory
def complex_svd_case(draw, ad):
    batch, m, n, dtype = _tall_complex(draw, ad)

    def sample(rng):  # u diag(s) v^H, singular values at least 0.5 apart and >= 0.5
        u, _ = np.linalg.qr(rng.normal(size=batch + (m, n)) + 1j * rng.normal(size=batch + (m, n)))
        v, _ = np.linalg.qr(rng.normal(size=batch + (n, n)) + 1j * rng.normal(size=batch + (n, n)))
        sv = 0.5 + np.cumsum(rng.uniform(0.5, 1.0, batch + (n,)), -1)
        return [((u * sv[..., None, :]) @ np.conj(np.swapaxes(v, -1, -2))).astype(dtype)]
    return make(draw, "svd", {}, sample, _mp_complex_svd_ref)


CASES["det"] = [complex_det_case]
CASES["prod"].append(complex_prod_case)
CASES["slogdet"].append(complex_slogdet_case)
for _n in _COMPLEX_UNARY:
    CASES.setdefault(_n, []).append(_unary_factory(_n, _COMPLEX_UNARY, complex_dtype, "complex_unary"))
for _n in _COMPLEX_BINARY:
    CASES[_n].append(_complex_binary_factory(_n))
CASES["complex"] = [complex_case]
CASES["sum"].append(complex_sum_case)
CASES["matmul"].append(complex_matmul_case)
CASES["einsum"].append(complex_einsum_case)
CASES["solve"].append(complex_solve_case)
CASES["cholesky"].append(complex_cholesky_case)
CASES["triangular_solve"].append(complex_triangular_solve_case)
CASES["qr"].append(complex_qr_case)
CASES["eigh"].append(complex_eigh_case)
CASES["svd"].append(complex_svd_case)


def cases_for(name: str) -> list:
    """The case factories of primitive `name`; the calling test fails when there are none."""
    import pytest
    fs = CASES.get(name)
    if not fs:
        pytest.fail(f"primitive {name!r} is registered in graphad.prims.PRIMITIVES but has no entry in "
                    f"tests/prim_cases.py CASES: add example inputs for it (DESIGN principle 3)")
    return fs


ALL_PRIMS = sorted(PRIMITIVES)


def is_differentiable(name: str) -> bool:
    return PRIMITIVES[name].nondiff is None


def assert_close(got, want, rtol=None, atol=None, what=""):
    """Compare with a tolerance set by the dtype (exact for ints and bools)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    if got.dtype.kind in "biu" and want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    if rtol is None:
        rtol = 1e-5 if {np.dtype(np.float32), np.dtype(np.complex64)} & {got.dtype, want.dtype} else 1e-10
    if atol is None:
        atol = rtol
    wide = np.complex128 if "c" in (got.dtype.kind, want.dtype.kind) else np.float64
    np.testing.assert_allclose(got.astype(wide), want.astype(wide), rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture(scope="module")
def numpy_backend_for_module():
    """The NumPy reference backend for a whole module (hypothesis tests may not use function fixtures)."""
    import graphad
    prev = graphad.get_backend()
    graphad.set_backend("numpy")
    yield
    graphad.set_backend(prev)
from prim_cases_control import CONTROL_CASES  # noqa: E402  (imports this module's helpers)
CASES.update(CONTROL_CASES)
from prim_cases_custom import CUSTOM_CASES  # noqa: E402
CASES.update(CUSTOM_CASES)
