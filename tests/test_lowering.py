"""Relax lowering of every primitive, checked against the NumPy reference interpreter.

`CASES[name]` lists example input types and attributes per primitive; `F` stands for the float
dtype under test (each such case runs in float32 and float64). The coverage test fails when a
registered primitive has no lowering or no case here. Composite graphs check that graphad's CPU
schedule rules apply (and stay correct) on fused kernels. Compiles bypass the caches.
"""
from __future__ import annotations

import os
import re
import subprocess
import zlib
import sys

import numpy as np
import pytest

from graphad import dtypes
from graphad.ir.builder import GraphBuilder
from graphad.ir.core import TensorType
from graphad.ir.interpret import interpret
from graphad.prims import PRIMITIVES

pytestmark = pytest.mark.tvm

F = "F"  # placeholder for the float dtype under test
FLOATS = ("float32", "float64", "bfloat16")
TOL = {"float32": (2e-5, 2e-6), "float64": (1e-11, 1e-13), "float16": (2e-3, 2e-3), "bfloat16": (1e-2, 1e-2)}


class C:
    """One example: input types [(shape, dtype, kind)], attributes (may name F) and dtypes to run."""

    def __init__(self, inputs, attrs=None, label=""):
        self.inputs = [(tuple(s), d, k) for s, d, k in (x if len(x) == 3 else (*x, "any") for x in inputs)]
        self.attrs = attrs or {}
        self.label = label

    @property
    def dtypes(self):
        uses_f = any(d == F for _, d, _ in self.inputs) or any(isinstance(v, str) and v == F
                                                                for v in self.attrs.values())
        return FLOATS if uses_f else (None,)


def _u(*shapes_kind):  # unary float example(s)
    return [C([(s, F, k)]) for s, k in shapes_kind]


def _red(axes, keepdims=False):
    return {"axes": axes, "keepdims": keepdims}


def _arg(axis, keepdims=False):
    return {"axis": axis, "keepdims": keepdims}


def _conv(stride, padding, dilation, groups):
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


UNARY_SHAPES = [((3, 5), "any"), ((), "any")]
CASES: dict[str, list[C]] = {
    "neg": _u(*UNARY_SHAPES) + [C([((4,), "int64")])],
    "abs": _u(*UNARY_SHAPES) + [C([((4,), "int32")])],
    "sign": _u(*UNARY_SHAPES, ((9,), "nan")) + [C([((4,), "int64")])],
    "exp": _u(*UNARY_SHAPES) + [C([((3, 5), "float16")]), C([((40,), F, "wide")])],
    "log": _u(((3, 5), "pos")),
    "log1p": _u(((3, 5), "gt-1"), ((6,), "tiny")),
    "expm1": _u(((3, 5), "any"), ((6,), "tiny")),
    "sqrt": _u(((3, 5), "pos")),
    "rsqrt": _u(((3, 5), "pos")),
    "square": _u(*UNARY_SHAPES) + [C([((4,), "int32")])],
    "reciprocal": _u(((3, 5), "pos")),
    "sin": _u(*UNARY_SHAPES),
    "cos": _u(*UNARY_SHAPES),
    "tan": _u(((3, 5), "unit")),
    "tanh": _u(*UNARY_SHAPES) + [C([((3, 5), "float16")]), C([((40,), F, "wide")]), C([((6,), F, "tiny")])],
    "sigmoid": _u(*UNARY_SHAPES) + [C([((3, 5), "float16")]), C([((40,), F, "wide")])],
    "relu": _u(*UNARY_SHAPES, ((9,), "nan")) + [C([((4,), "int64")])],
    "erf": _u(*UNARY_SHAPES) + [C([((40,), F, "wide")])],
    "floor": _u(*UNARY_SHAPES),
    "logical_not": [C([((5,), "bool")]), C([((5,), F, "zeros")])],
    "signbit": _u(((3, 5), "any"), ((9,), "nan"), ((40,), "wide")) + [C([((9,), "float16", "nan")]), C([((4,), "int64")]),
                                                                     C([((5,), "bool")])],
    "stop_gradient": _u(((3, 5), "any")),
    "add": [C([((3, 4), F), ((4,), F)]), C([((2, 1, 4), F), ((3, 1), F)]), C([((3,), "int32"), ((3,), "int32")]),
            C([((), F), ((2, 2), F)]), C([((3, 4), "float16"), ((4,), "float16")])],
    "sub": [C([((3, 4), F), ((3, 1), F)]), C([((3,), "int64"), ((3,), "int64")])],
    "mul": [C([((3, 4), F), ((4,), F)]), C([((3,), "int32"), ((1,), "int32")])],
    "div": [C([((3, 4), F), ((4,), F, "pos")]), C([((8,), "int32", "int"), ((8,), "int32", "divisor")]),
            C([((8,), "int64", "int"), ((8,), "int64", "divisor")])],
    "pow": [C([((3, 4), F, "pos"), ((4,), F)]), C([((6,), "int64", "small"), ((6,), "int64", "exp")])],
    "maximum": [C([((3, 4), F, "ties"), ((4,), F, "ties")]), C([((3,), "int32"), ((3,), "int32")]),
                C([((9,), F, "nan"), ((9,), F, "nan")])],
    "minimum": [C([((3, 4), F, "ties"), ((3, 1), F, "ties")]), C([((3,), "int64"), ((3,), "int64")]),
                C([((9,), F, "nan"), ((9,), F, "nan")])],
    "equal": [C([((3, 4), F, "ties"), ((4,), F, "ties")]), C([((5,), "int32", "small"), ((5,), "int32", "small")])],
    "not_equal": [C([((3, 4), F, "ties"), ((4,), F, "ties")])],
    **{n: [C([((3, 4), "int32", "bits"), ((4,), "int32", "bits")]), C([((2, 33), "int64", "bits"), ((2, 33), "int64", "bits")]),
           C([((5, 3), "bool"), ((1, 3), "bool")])] for n in ("bitwise_and", "bitwise_or", "bitwise_xor")},
    **{n: [C([((3, 40), "int32", "bits"), ((40,), "int32", "count")]), C([((2, 70), "int64", "bits"), ((2, 70), "int64", "count")]),
           C([((5, 1), "int64", "bits"), ((1, 9), "int64", "count")])] for n in ("left_shift", "right_shift")},
    "less": [C([((3, 4), F, "ties"), ((4,), F, "ties")])],
    "less_equal": [C([((3, 4), F, "ties"), ((3, 1), F, "ties")])],
    "greater": [C([((3, 4), F, "ties"), ((4,), F, "ties")]), C([((5,), "int64", "small"), ((5,), "int64", "small")])],
    "greater_equal": [C([((3, 4), F, "ties"), ((4,), F, "ties")])],
    "where": [C([((3, 1), "bool"), ((3, 4), F), ((4,), F)])],
    "astype": [C([((3, 4), F)], {"dtype": "int32"}), C([((5,), F, "zeros")], {"dtype": "bool"}),
               C([((3,), "int64")], {"dtype": F}), C([((4,), "bool")], {"dtype": F}),
               C([((3, 4), F)], {"dtype": "float16"}), C([((3,), F)], {"dtype": F})],
    "constant": [C([], {"value": np.array([[1.5, -2.25], [3.0, 1e-3]]), "dtype": F}),
                 C([], {"value": np.array([1, -7, 9]), "dtype": "int64"}),
                 C([], {"value": np.array([True, False]), "dtype": "bool"}),
                 C([], {"value": np.array(0.1), "dtype": F})],
    "full": [C([], {"shape": (2, 3), "value": 0.1, "dtype": F}), C([], {"shape": (4,), "value": 7, "dtype": "int32"}),
             C([], {"shape": (), "value": -1.5, "dtype": F}), C([], {"shape": (2,), "value": True, "dtype": "bool"})],
    "arange": [C([], {"start": 0, "stop": 5, "step": 1, "dtype": "int64"}),
               C([], {"start": 0.5, "stop": 3.0, "step": 0.1, "dtype": F}),
               C([], {"start": 5, "stop": -4, "step": -2, "dtype": "int32"}),
               C([], {"start": 1, "stop": 4, "step": 1, "dtype": F})],
    "eye": [C([], {"n": 3, "m": 4, "k": 1, "dtype": F}), C([], {"n": 4, "m": 3, "k": -1, "dtype": "int32"}),
            C([], {"n": 3, "m": 3, "k": 0, "dtype": "bool"})],
    "sum": [C([((3, 4, 5), F)], _red((0, 2))), C([((3, 4), F)], _red((1,), True)),
            C([((3, 4), F)], _red((0, 1))), C([((3, 4), F)], _red(())), C([((3, 4), "int32")], _red((0,))),
            C([((64, 48), F)], _red((0,))), C([((64, 48), F)], _red((1,))),
            C([((3, 5), "float16", "pos")], _red((1,)))],
    "max": [C([((3, 4, 5), F)], _red((1,))), C([((3, 4), "int64")], _red((0, 1), True)),
            C([((3, 9), F, "nan")], _red((1,))), C([((64, 48), F)], _red((1,)))],
    "min": [C([((3, 4, 5), F)], _red((0, 2), True)), C([((4, 3), "int32")], _red((1,))),
            C([((9, 3), F, "nan")], _red((0,), True))],
    "prod": [C([((3, 4), F, "pos")], _red((0,))), C([((2, 3), "int64", "small")], _red((1,)))],
    "argmax": [C([((3, 4), F, "ties")], _arg(1)), C([((3, 4, 2), F, "ties")], _arg(0, True)),
               C([((), F)], _arg(0)), C([((5,), "int32", "small")], _arg(0))],
    "argmin": [C([((3, 4), F, "ties")], _arg(0)), C([((2, 5), "int64", "small")], _arg(1, True))],
    "matmul": [C([((3, 4), F), ((4, 5), F)]), C([((2, 1, 3, 4), F), ((5, 4, 2), F)]),
               C([((3, 4), "int32"), ((4, 2), "int32")]), C([((64, 32), F), ((32, 48), F)]),
               C([((3, 4), "float16"), ((4, 5), "float16")])],
    "einsum": [C([((3, 4), F), ((4, 5), F)], {"spec": "ij,jk->ik"}),
               C([((2, 3, 4), F), ((2, 4, 5), F)], {"spec": "bij,bjk->bik"}),
               C([((3, 4), F)], {"spec": "ij->j"}), C([((3,), F), ((4,), F)], {"spec": "i,j->ij"}),
               C([((3, 4), F), ((4, 5), F), ((5, 2), F)], {"spec": "ij,jk,kl->li"})],
    "reshape": [C([((3, 4), F)], {"shape": (2, 6)}), C([((1, 1), F)], {"shape": ()}),
                C([((), F)], {"shape": (1, 1, 1)}), C([((2, 3), "int64")], {"shape": (3, 2)})],
    "broadcast_to": [C([((3, 1), F)], {"shape": (2, 3, 4)}), C([((), "int32")], {"shape": (2, 2)})],
    "transpose": [C([((2, 3, 4), F)], {"perm": (2, 0, 1)}), C([((3, 4), "bool")], {"perm": (1, 0)})],
    "slice": [C([((5, 6), F)], {"starts": (1, 0), "stops": (5, 6), "steps": (2, 3)}),
              C([((5, 6), F)], {"starts": (2, 1), "stops": (2, 4), "steps": (1, 1)}),
              C([((4, 6), "int64")], {"starts": (0, 5), "stops": (4, 6), "steps": (1, 1)})],
    "pad": [C([((2, 3), F)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 2), "value": -1.5}),
            C([((3, 2), F)], {"lo": (0, 2), "hi": (1, 0), "interior": (0, 0), "value": 0.0}),
            C([((4,), "int32")], {"lo": (2,), "hi": (1,), "interior": (3,), "value": 7.0}),
            C([((0, 2), F)], {"lo": (1, 1), "hi": (0, 0), "interior": (0, 1), "value": 2.0})],
    "flip": [C([((3, 4, 2), F)], {"axes": (0, 2)}), C([((5,), "int64")], {"axes": (0,)}),
             C([((2, 3), F)], {"axes": ()})],
    "concat": [C([((2, 3), F), ((1, 3), F), ((4, 3), F)], {"axis": 0}),
               C([((2, 1), "int32"), ((2, 2), "int32")], {"axis": 1})],
    "take": [C([((5, 3), F), ((4,), "int64", "idx:5")], {"axis": 0}),
             C([((2, 6), F), ((2, 3), "int32", "idx:6")], {"axis": 1}),
             C([((4, 3), F), ((), "int64", "idx:4")], {"axis": 0})],
    "index_add": [C([((5, 3), F), ((6,), "int64", "idx:5"), ((6, 3), F)], {"axis": 0}),
                  C([((2, 4), F), ((2, 3), "int32", "idx:4"), ((2, 2, 3), F)], {"axis": 1}),
                  C([((4,), "int64"), ((3,), "int64", "idx:4"), ((3,), "int64")], {"axis": 0})],
    "index_check": [C([((2, 3), "int64", "idx:5")], {"length": 5, "op": "take"}),
                    C([((7,), "int32", "idx:3")], {"length": 3, "op": "index_add"})],
    # issue 17: scans and sorting
    "cumsum": [C([((3, 5), F)], {"axis": 1}), C([((4, 2), "int64", "small")], {"axis": 0}),
               C([((3, 9), F, "nan")], {"axis": 1})],
    "argsort": [C([((3, 9), F, "nan")], {"axis": 1}), C([((6, 4), F, "ties")], {"axis": 0}),
                C([((5, 3), "int32", "small")], {"axis": 0}), C([((2, 7), "bool")], {"axis": 1}),
                C([((40,), F)], {"axis": 0})],
    "conv2d": [C([((1, 2, 5, 5), F), ((3, 2, 3, 3), F)], _conv((1, 1), (1, 1, 1, 1), (1, 1), 1)),
               C([((2, 4, 7, 6), F), ((4, 2, 2, 3), F)], _conv((2, 1), (0, 1, 2, 0), (2, 1), 2)),
               C([((2, 3, 9, 8), F), ((5, 3, 3, 3), F)], _conv((1, 1), (0, 0, 1, 1), (1, 1), 1))],
    # complex numbers: no lowering (TVM has no complex type); check_primitive asserts that the
    # runtime runs them on the NumPy interpreter (docs/complex.md)
    "real": [C([((3, 5), "complex128")]), C([((4,), "complex64")])],
    "imag": [C([((3, 5), "complex128")]), C([((4,), "complex64")])],
    "conj": [C([((3, 5), "complex128")]), C([((4,), "complex64")])],
    "complex": [C([((3, 5), "float64"), ((5,), "float64")]), C([((4,), "float32"), ((), "float32")])],
    "det": [C([((2, 3, 3), "complex128")]), C([((4, 4), "complex64")])],
}


def _control_cases() -> dict[str, list[C]]:
    """Examples of the control-flow primitives (run on the host over compiled regions) and of
    checkpoint (inlined before lowering), in float32 and float64; regions are typed, so each
    dtype gets its own example instead of the F placeholder."""
    from graphad import ops
    from graphad.control.regions import make_region
    out: dict[str, list[C]] = {"cond": [], "while_loop": [], "scan": [], "checkpoint": []}
    for d in ("float32", "float64"):
        t = TensorType((3, 4), d)
        s = TensorType((), d)
        br = (make_region("b0", [t, t], lambda x, y: [ops.sin(x) * y, ops.sum(x)]),
              make_region("b1", [t, t], lambda x, y: [x + ops.exp(y), ops.sum(y)]))
        for k in (0, 1, 5):
            out["cond"].append(C([((), "int32", f"fixed:{k}"), ((3, 4), d), ((3, 4), d)], {"branches": br}))
        gc = make_region("c", [s, t], lambda lim, x: [ops.less(ops.sum(x * x), lim)])
        gb = make_region("b", [t, t], lambda a, x: [x * 1.5 + a * 0.1])
        out["while_loop"].append(C([((), d, "fixed:30"), ((3, 4), d), ((3, 4), d)],
                                   {"cond": gc, "body": gb, "n_cond": 1, "n_body": 1, "max_steps": 50}))
        body = make_region("s", [t, t, TensorType((4,), d)], lambda w, c, x: [ops.sin(c) * w + x, ops.sum(c, 0)])
        for rev in (False, True):
            out["scan"].append(C([((3, 4), d), ((3, 4), d), ((6, 4), d)],
                                 {"body": body, "n_consts": 1, "n_carry": 1, "length": 6, "reverse": rev}))
        out["checkpoint"].append(C([((3, 4), d), ((3, 4), d)],
                                   {"body": make_region("k", [t, t], lambda x, y: [ops.tanh(x) * y]), "policy": None}))
    return out


CASES.update(_control_cases())

# issue 17's elementwise math: inside each function's domain, and at its edges ("nan": NaN, +-inf,
# signed zeros; "wide": overflow edges); integer operands where NumPy takes them
CASES.update({
    **{n: _u(((3, 5), "any"), ((9,), "nan"), ((13,), "wide")) for n in
       ("ceil", "round", "trunc", "exp2", "sinh", "cosh", "arctan", "arcsinh", "cbrt", "erfc")},
    **{n: _u(((3, 5), "pos"), ((9,), "nan")) for n in ("log2", "log10", "lgamma")},
    **{n: _u(((3, 5), "unit"), ((9,), "nan")) for n in ("arcsin", "arccos", "arctanh", "erfinv")},
    "arccosh": [C([((3, 5), F, "pos")]), C([((9,), F, "nan")])],
    "polygamma": [C([((3, 5), F, "pos")], {"n": 0}), C([((3, 5), F, "pos")], {"n": 1}),
                  C([((9,), F, "nan")], {"n": 0})],
    **{n: [C([((3, 4), F), ((4,), F)]), C([((9,), F, "nan"), ((9,), F, "nan")])] for n in
       ("arctan2", "hypot", "logaddexp")},
    **{n: [C([((3, 4), F), ((4,), F, "pos")]), C([((9,), F, "nan"), ((9,), F, "nan")]),
           C([((8,), "int32", "int"), ((8,), "int32", "divisor")])] for n in ("fmod", "remainder")},
})

# issue 17's linear algebra (float32 and float64 only: the primitives refuse other dtypes); "wellcond":
# a dominant diagonal, "spd": symmetric positive definite, "singular": a repeated row, "indef": not
# positive definite (cholesky's NaNs)
_LA = ("float32", "float64")
CASES.update({
    "solve": [C([((4, 4), d, "wellcond"), ((4, 3), d)]) for d in _LA]
    + [C([((2, 3, 5, 5), "float64", "wellcond"), ((2, 3, 5, 2), "float64")]),
       C([((3, 3), "float64", "singular"), ((3, 1), "float64")])],
    "slogdet": [C([((2, 4, 4), d, "wellcond")]) for d in _LA]
    + [C([((3, 3), "float64", "singular")]), C([((2, 0, 0), "float64")])],
    "cholesky": [C([((3, 4, 4), d, "spd")]) for d in _LA] + [C([((2, 3, 3), "float64", "indef")])],
    "triangular_solve": [C([((2, 4, 4), d, "wellcond"), ((2, 4, 3), d)],
                           {"lower": lo, "trans": tr, "unit_diagonal": u})
                         for d in _LA for lo in (True, False) for tr, u in ((False, False), (True, True))],
    "eigh": [C([((3, 4, 4), d, "spd")]) for d in _LA] + [C([((5, 5), "float64")]), C([((1, 1), "float64")])],
    "qr": [C([((2, 5, 3), d)]) for d in _LA] + [C([((4, 4), "float64", "wellcond")]), C([((3, 1), "float64")])],
    "svd": [C([((2, 5, 3), d)]) for d in _LA] + [C([((4, 4), "float64", "singular")]), C([((3, 1), "float64")])],
})

from custom_regions import lowering_cases  # noqa: E402  (custom_jvp_call / custom_vjp_call)
CASES.update(lowering_cases(C))


def _values(rng, shape, dtype, kind):
    # bfloat16 is ml_dtypes', which NumPy knows by name only once it is imported (graphad imports
    # it on first use)
    dt = dtypes.numpy_bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
    if kind.startswith("fixed:"):  # a given value (a branch index, a loop bound)
        return np.full(shape, float(kind[6:])).astype(dt)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind == "c":
        return (rng.uniform(-3, 3, shape) + 1j * rng.uniform(-3, 3, shape)).astype(dt)
    if kind.startswith("idx:"):
        n = int(kind[4:])
        return rng.integers(-n, n, size=shape).astype(dt)
    if dt.kind in "iu" and kind == "bits":  # every bit pattern
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
    if dt.kind in "iu" and kind == "count":  # shift counts: every one in [0, bits) and outside it
        bits = dt.itemsize * 8
        return rng.integers(-3, bits + 4, size=shape).astype(dt)
    if dt.kind in "iu":
        lo, hi = {"small": (-3, 4), "exp": (0, 5), "divisor": (-3, 4)}.get(kind, (-20, 21))
        v = rng.integers(lo, hi, size=shape).astype(dt)
        if kind == "divisor" and v.size:
            v.flat[0] = 0  # division by zero must not trap (INT_MIN, as the NumPy reference gives)
            v.flat[-1] = -1
        return v
    if kind in ("wellcond", "spd", "singular", "indef"):  # square matrices in the last two axes
        n = shape[-1]
        m = rng.uniform(-1, 1, shape)
        if kind == "wellcond":
            v = m + (n + 1.0) * np.eye(n)
        elif kind == "spd":
            v = m @ np.swapaxes(m, -1, -2) + n * np.eye(n)
        elif kind == "singular":
            v = m.copy()
            v[..., -1, :] = v[..., 0, :]
        else:
            v = m @ np.swapaxes(m, -1, -2) - n * np.eye(n)
        return v.astype(dt)
    if kind == "pos":
        v = rng.uniform(0.5, 2.0, shape)
    elif kind == "unit":
        v = rng.uniform(-0.9, 0.9, shape)
    elif kind == "gt-1":
        v = rng.uniform(-0.9, 3.0, shape)
    elif kind == "wide":  # overflow/underflow edges, signed zeros, infinities and NaN
        edges = [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 87.0, -87.0, 200.0, -200.0, np.inf, -np.inf, np.nan]
        v = np.concatenate([edges, rng.uniform(-12, 12, int(np.prod(shape)) - len(edges))])
    elif kind == "nan":  # NaN must propagate as in NumPy (and infinities, signed zeros, ties)
        v = rng.permutation(np.resize([np.nan, 1.0, -1.0, np.inf, -np.inf, 0.0, -0.0, 2.0, 2.0],
                                      int(np.prod(shape)))).reshape(shape)
    elif kind == "tiny":
        v = rng.choice([1e-12, -3e-9, 2e-6, -1e-4, 0.3, 0.0], size=shape)
    elif kind == "ties":
        v = np.round(rng.uniform(-2, 2, shape))
    elif kind == "zeros":
        v = np.where(rng.random(shape) < 0.4, 0.0, rng.normal(size=shape))
    else:
        v = rng.normal(size=shape) * 1.5
    return np.asarray(v).astype(dt)


def _resolve(c: C, fdt):
    ins = [(s, fdt if d == F else d, k) for s, d, k in c.inputs]
    attrs = {k: (fdt if isinstance(v, str) and v == F else v) for k, v in c.attrs.items()}
    return ins, attrs


def _one_node(name, ins, attrs):
    b = GraphBuilder("main")
    xs = [b.add_input(TensorType(s, d), f"x{i}") for i, (s, d, _) in enumerate(ins)]
    outs = b.emit(PRIMITIVES[name], xs, attrs)
    return b.finish(outs)


def _params():
    out = []
    for name in sorted(CASES):
        for i, c in enumerate(CASES[name]):
            for fdt in c.dtypes:
                out.append(pytest.param(name, i, fdt, id=f"{name}-{i}-{fdt or 'fixed'}"))
    return out


def _compare(got, want, dtype, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f" or got.dtype.name == "bfloat16":
        rtol, atol = TOL.get(got.dtype.name, TOL["float32"])
        if got.dtype.name == "bfloat16":  # NumPy's comparisons want a native float type
            got, want = got.astype(np.float32), want.astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_every_primitive_has_a_lowering_and_a_case():
    from graphad.lowering import missing_lowerings
    assert missing_lowerings() == [], f"primitives without a Relax lowering: {missing_lowerings()}"
    no_case = sorted(n for n in PRIMITIVES if n not in CASES or not CASES[n])
    assert no_case == [], f"primitives without an example in tests/test_lowering.py CASES: {no_case}"


def check_primitive(name, idx, fdt, target=None):
    """Compile example `idx` of primitive `name` for `target` and compare with the interpreter."""
    from graphad.runtime.executable import build_executable
    c = CASES[name][idx]
    ins, attrs = _resolve(c, fdt)
    g = _one_node(name, ins, attrs)
    rng = np.random.default_rng(zlib.crc32(f"{name}:{idx}".encode()))
    args = [_values(rng, s, d, k) for s, d, k in ins]
    want = interpret(g, args)
    if "complex" in PRIMITIVES[name].traits:  # no TVM type: compiled as real/imaginary pairs, or interpreted
        from graphad.frontend.function import make_runner
        from graphad.passes.complex_split import unsupported
        from graphad.runtime.complex_io import ComplexPairRunner
        exe = make_runner(g, "tvm", target)
        if unsupported(g) is None:
            assert isinstance(exe, ComplexPairRunner), f"{name}: {exe!r} is not compiled"
        else:
            assert exe.host_reason and "complex" in exe.host_reason, f"{name}: {exe!r} is not the interpreter"
    elif {"control", "inline"} & PRIMITIVES[name].traits:  # host-run / inlined: the runtime's entry
        from graphad.runtime.executable import compile_graph
        exe = compile_graph(g, target, cache=False)
    else:
        exe = build_executable(g, target)
        # a schedule TVM rejects is compiled unscheduled: correct, but a scheduler bug
        assert not (exe.report or {}).get("fallback"), f"{name} case {idx} ({fdt}): {exe.report['fallback']}"
    got = exe(args)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        _compare(a._data, b, fdt, f"{name} case {idx} ({fdt}) on {target or 'cpu'} output {i}: {attrs}")
        assert a._data.size == 0 or a._data.ctypes.data % 64 == 0  # an empty array has no data to align


@pytest.mark.parametrize("name,idx,fdt", _params())
def test_primitive_matches_interpreter(name, idx, fdt):
    check_primitive(name, idx, fdt)


def test_missing_lowering_is_reported(monkeypatch):
    from graphad.errors import CompileError
    from graphad.lowering import lower_graph, relax_ops
    monkeypatch.delitem(relax_ops.LOWERINGS, "tanh")
    b = GraphBuilder("main")
    x = b.add_input(TensorType((3,), "float32"), "x")
    (y,) = b.emit(PRIMITIVES["tanh"], [x])
    with pytest.raises(CompileError, match="'tanh' has no TVM lowering"):
        lower_graph(b.finish([y]))
    assert "tanh" in relax_ops.missing_lowerings()


@pytest.mark.parametrize("rows", [3, 300], ids=["packed", "tuple"])
def test_lower_graph_outputs_inputs_constants_and_duplicates(rows):
    """One Relax function; outputs may be inputs, constants or repeated, and come back as private
    buffers: small ones packed into one buffer (copied by the packing), larger ones as a tuple with
    the aliasing outputs marked for copying."""
    from graphad.lowering import PACK_MAX_BYTES, lower_graph_info
    from graphad.runtime.executable import build_executable
    b = GraphBuilder("main")
    x = b.add_input(TensorType((rows, 4), "float32"), "x")
    (c,) = b.emit(PRIMITIVES["full"], [], {"shape": (2,), "value": 3.0, "dtype": "float32"})
    (s,) = b.emit(PRIMITIVES["stop_gradient"], [x])
    (y,) = b.emit(PRIMITIVES["exp"], [x])
    g = b.finish([x, c, s, y, y])
    lowered = lower_graph_info(g)
    import tvm
    relax_funcs = [gv.name_hint for gv, f in lowered.module.functions_items() if isinstance(f, tvm.relax.Function)]
    assert relax_funcs == ["main"]
    if rows * 4 * 4 * 4 < PACK_MAX_BYTES:
        assert lowered.packed == [0, 16, 32, 48, 64] and lowered.copy_outputs == [False] * 5
    else:
        assert lowered.packed is None
        assert lowered.copy_outputs == [True, True, True, False, True]
    exe = build_executable(g)
    xv = np.linspace(-3, 3, rows * 4, dtype=np.float32).reshape(rows, 4)
    outs = exe([xv])
    np.testing.assert_array_equal(outs[0]._data, xv)
    np.testing.assert_array_equal(outs[1]._data, [3.0, 3.0])
    np.testing.assert_array_equal(outs[2]._data, xv)
    np.testing.assert_allclose(outs[3]._data, np.exp(xv), rtol=1e-6)
    np.testing.assert_allclose(outs[4]._data, np.exp(xv), rtol=1e-6)
    for o in outs:
        assert o._data.ctypes.data % 64 == 0 and o.shape == o._data.shape
    assert not np.shares_memory(outs[0]._data, xv) and not np.shares_memory(outs[3]._data, outs[4]._data)
    again = exe([xv])
    assert not np.shares_memory(again[1]._data, outs[1]._data)  # a folded constant is not handed out twice
    # a graph whose only output is its input, and one with no inputs
    b = GraphBuilder("ident")
    x = b.add_input(TensorType((2,), "float64"), "x")
    np.testing.assert_array_equal(build_executable(b.finish([x]))([np.array([1.0, 2.0])])[0]._data, [1.0, 2.0])


def test_inputs_unaligned_noncontiguous_and_bad_signature():
    from graphad.errors import GraphadError
    from graphad.runtime.executable import build_executable
    from graphad.tensor import Tensor
    b = GraphBuilder("main")
    x = b.add_input(TensorType((64, 31), "float32"), "x")
    (y,) = b.emit(PRIMITIVES["exp"], [x])
    (z,) = b.emit(PRIMITIVES["add"], [y, x])
    exe = build_executable(b.finish([z]))
    base = np.random.default_rng(0).normal(size=64 * 31 + 1).astype(np.float32)
    off = base[1:].reshape(64, 31)  # 4-byte offset: would crash an AVX-512 kernel if passed as is
    for arr in (off, np.asfortranarray(off), Tensor(off)):
        (r,) = exe([arr])
        np.testing.assert_allclose(r._data, np.exp(off) + off, rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphadError, match=r"input 0 \(x\) expects f32\[64,31\], got f64\[64,31\]"):
        exe([off.astype(np.float64)])
    with pytest.raises(GraphadError, match="takes 1 inputs, got 2"):
        exe([off, off])


def test_import_graphad_does_not_import_tvm():
    code = ("import sys, graphad, graphad.lowering, graphad.runtime, graphad.runtime.executable, "
            "graphad.runtime.cache, graphad.runtime.aot, graphad.lowering.relax_ops, graphad.lowering.schedule; "
            "assert 'tvm' not in sys.modules, 'tvm imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------- fused composites and the scheduler

def _composite(kind):
    b = GraphBuilder(kind)
    P = PRIMITIVES
    if kind == "dense_tanh":
        x = b.add_input(TensorType((128, 32), "float32"), "x")
        w = b.add_input(TensorType((32, 64), "float32"), "w")
        bias = b.add_input(TensorType((64,), "float32"), "b")
        (h,) = b.emit(P["matmul"], [x, w])
        (h,) = b.emit(P["add"], [h, bias])
        (y,) = b.emit(P["tanh"], [h])
        return b.finish([y])
    if kind == "softmax":
        x = b.add_input(TensorType((64, 256), "float32"), "x")
        (m,) = b.emit(P["max"], [x], {"axes": (1,), "keepdims": True})
        (d,) = b.emit(P["sub"], [x, m])
        (e,) = b.emit(P["exp"], [d])
        (s,) = b.emit(P["sum"], [e], {"axes": (1,), "keepdims": True})
        (y,) = b.emit(P["div"], [e, s])
        return b.finish([y])
    if kind == "sums":
        x = b.add_input(TensorType((512, 64), "float64"), "x")
        (c,) = b.emit(P["sum"], [x], {"axes": (0,), "keepdims": False})
        (r,) = b.emit(P["sum"], [x], {"axes": (1,), "keepdims": False})
        (sq,) = b.emit(P["square"], [x])
        (t,) = b.emit(P["sum"], [sq], {"axes": (0, 1), "keepdims": False})
        return b.finish([c, r, t])
    raise ValueError(kind)


def _scheduled_and_correct(g, args, what):
    """Build `g` (caches bypassed), check its results against the interpreter and that every
    PrimFunc was scheduled; (executable, the rules applied, as one string)."""
    from graphad.runtime.executable import build_executable
    exe = build_executable(g)
    for got, want in zip(exe(args), interpret(g, args)):
        _compare(got._data, want, None, what)
    rep = exe.report["schedule"]
    assert rep and all(r.status == "scheduled" for r in rep), [str(r) for r in rep]
    return exe, " ".join(" ".join(r.blocks) for r in rep)


@pytest.mark.parametrize("kind,expect", [
    ("dense_tanh", ["reduceA", "epilogue"]),
    ("softmax", ["reduceB"]),
    ("sums", ["reduceA", "reduceB"]),
])
def test_fused_composites_scheduled_and_correct(kind, expect):
    g = _composite(kind)
    rng = np.random.default_rng(1)
    args = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
    exe, rules = _scheduled_and_correct(g, args, kind)
    rep = exe.report["schedule"]
    for e in expect:
        assert e in rules, rules
    assert exe.report["pipeline"] == "cpu-fused-scheduled"
    if kind == "dense_tanh":  # matmul, bias and tanh in one kernel
        assert len(rep) == 1 and "matmul" in rep[0].name


def _matmul_epilogue(kind):
    """A matmul (case-A reduction) and elementwise consumers, for the epilogue rule."""
    b = GraphBuilder(kind)
    P = PRIMITIVES
    f32 = "float32"
    if kind == "batched_bias_relu":  # 3-d tiles, a broadcast bias
        x = b.add_input(TensorType((3, 24, 16), f32), "x")
        w = b.add_input(TensorType((3, 16, 64), f32), "w")
        c = b.add_input(TensorType((64,), f32), "c")
        (h,) = b.emit(P["matmul"], [x, w])
        (h,) = b.emit(P["add"], [h, c])
        (y,) = b.emit(P["relu"], [h])
        return b.finish([y])
    if kind == "mask_from_input":  # the epilogue reads another argument; rows not a multiple of 8
        x = b.add_input(TensorType((13, 32), f32), "x")
        w = b.add_input(TensorType((32, 48), f32), "w")
        z = b.add_input(TensorType((13, 48), f32), "z")
        (h,) = b.emit(P["matmul"], [x, w])
        (zero,) = b.emit(P["constant"], [], {"value": np.array(0.0, np.float32), "dtype": f32})
        (m,) = b.emit(P["greater"], [z, zero])
        (m,) = b.emit(P["astype"], [m], {"dtype": "float32"})
        (y,) = b.emit(P["mul"], [h, m])
        return b.finish([y])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["batched_bias_relu", "mask_from_input"])
def test_matmul_epilogue_computed_per_tile(kind):
    """An elementwise consumer of a matmul runs inside the matmul's tile loop (one parallel
    launch, one pass over memory); compiled results equal the interpreter's, with inf, NaN and
    -0.0 in the inputs."""
    g = _matmul_epilogue(kind)
    rng = np.random.default_rng(3)
    args = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
    args[0].flat[[0, 5, 9]] = [np.inf, np.nan, -0.0]
    _, rules = _scheduled_and_correct(g, args, kind)
    assert "reduceA" in rules and "epilogue" in rules, rules


def _random_epilogue_graph(rng):
    """A matmul of tile-sized shapes (rows multiples of 8 or not, columns up to 96, batched or
    not, float32 or float64) and a random chain of elementwise consumers, some reading another
    argument or broadcasting a vector, with the product itself sometimes an output too."""
    P = PRIMITIVES
    dt = str(rng.choice(["float32", "float64"]))
    b = GraphBuilder("epi")
    batch = (int(rng.integers(1, 4)),) if rng.random() < 0.3 else ()
    m, k, n = int(rng.choice([8, 13, 16, 24, 40])), int(rng.integers(1, 40)), int(rng.choice([4, 8, 32, 48, 64, 96]))
    x = b.add_input(TensorType(batch + (m, k), dt), "x")
    w = b.add_input(TensorType(batch + (k, n), dt), "w")
    (h,) = b.emit(P["matmul"], [x, w])
    outs = [h] if rng.random() < 0.25 else []
    for i in range(int(rng.integers(1, 5))):
        op = str(rng.choice(["bias", "other", "relu", "tanh", "exp", "square", "where", "neg"]))
        if op == "bias":
            c = b.add_input(TensorType((n,), dt), f"c{i}")
            (h,) = b.emit(P["add"], [h, c])
        elif op == "other":
            z = b.add_input(TensorType(batch + (m, n), dt), f"z{i}")
            (h,) = b.emit(P[str(rng.choice(["mul", "sub", "maximum"]))], [h, z])
        elif op == "where":
            z = b.add_input(TensorType(batch + (m, n), dt), f"z{i}")
            (zero,) = b.emit(P["constant"], [], {"value": np.array(0.0, dt), "dtype": dt})
            (c,) = b.emit(P["greater"], [z, zero])
            (h,) = b.emit(P["where"], [c, h, z])
        else:
            (h,) = b.emit(P[op], [h])
    return b.finish(outs + [h])


def test_random_matmul_epilogues_match_the_interpreter():
    """Random epilogue chains on tile-sized matmuls (the fuzzer's shapes are too small for 8-row
    tiles), compiled against the NumPy interpreter, with inf, NaN and -0.0 among the inputs; most
    of them must take the epilogue rule."""
    from graphad.runtime.executable import build_executable
    rng = np.random.default_rng(20261201)
    fused = 0
    for trial in range(14):
        g = _random_epilogue_graph(rng)
        args = [np.clip(rng.normal(size=v.type.shape), -3, 3).astype(v.type.dtype.np) for v in g.inputs]
        if args[0].size >= 3:
            args[0].flat[rng.choice(args[0].size, 3, replace=False)] = [np.inf, np.nan, -0.0]
        exe = build_executable(g)
        with np.errstate(all="ignore"):
            want = interpret(g, args)
        for got, ref in zip(exe(args), want):
            _compare(got._data, ref, None, f"trial {trial}: {g}")
        rules = " ".join(" ".join(r.blocks) for r in exe.report["schedule"])
        fused += "epilogue" in rules
    assert fused >= 7, fused


def test_matmul_epilogue_only_at_the_products_own_point():
    """In one kernel, a consumer that reads the product transposed stays its own loop (its tile
    would need other tiles' results) while one reading it at its own point joins the tile."""
    import tvm
    from tvm.script import tirx as T

    from graphad.lowering.schedule import schedule_primfunc
    from graphad.lowering.targets import host_target
    n = T.int64(64)

    @T.prim_func(private=True, s_tir=True)
    def main(A: T.Buffer((n, n), "float32"), B: T.Buffer((n, n), "float32"),
             D: T.Buffer((n, n), "float32"), E: T.Buffer((n, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        C = T.sblock_alloc_buffer((n, n))
        for i0, i1, k in T.grid(n, n, n):
            with T.sblock("matmul"):
                v_i0, v_i1, v_k = T.axis.remap("SSR", [i0, i1, k])
                T.reads(A[v_i0, v_k], B[v_k, v_i1])
                T.writes(C[v_i0, v_i1])
                with T.init():
                    C[v_i0, v_i1] = T.float32(0.0)
                C[v_i0, v_i1] = C[v_i0, v_i1] + A[v_i0, v_k] * B[v_k, v_i1]
        for i, j in T.grid(n, n):
            with T.sblock("transposed"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(C[vj, vi])
                T.writes(D[vi, vj])
                D[vi, vj] = C[vj, vi] * T.float32(2.0)
        for i, j in T.grid(n, n):
            with T.sblock("same_point"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(C[vi, vj])
                T.writes(E[vi, vj])
                E[vi, vj] = T.max(C[vi, vj], T.float32(0.0))

    func, _, desc = schedule_primfunc(main)
    assert desc[0].startswith("matmul:reduceA"), desc
    assert desc[1].startswith("transposed:injective"), desc
    assert desc[2].startswith("same_point:epilogue"), desc
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=host_target())
    rng = np.random.default_rng(5)
    a, b = (rng.normal(size=(64, 64)).astype(np.float32) for _ in range(2))
    d, e = (tvm.runtime.tensor(np.zeros((64, 64), np.float32)) for _ in range(2))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), d, e)
    c = a.astype(np.float64) @ b
    np.testing.assert_allclose(d.numpy(), 2 * c.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.numpy(), np.maximum(c, 0), rtol=1e-5, atol=1e-5)


def _host_lanes(dt) -> int:
    """V, the SIMD lanes the schedule rules use for `dt` on this machine: the host target's vector
    width (graphad.lowering.targets.vector_bits, what schedule_module reads) over the dtype's
    bits, as `_Rules.lanes` computes it: 8 float32 lanes with AVX2, 16 with AVX-512."""
    from graphad.lowering.schedule import MAX_LANES
    from graphad.lowering.targets import host_target, vector_bits
    return max(1, min(MAX_LANES, vector_bits(host_target()) // (8 * np.dtype(dt).itemsize)))


def _compare_product(got, want, a, b, what):
    """`got` = a @ b compiled against `want`, the interpreter's: `_compare`'s tolerance, widened by
    what two summation orders of k products may differ by, 2 gamma_k (|a| @ |b|) (each is within
    gamma_k = k u / (1 - k u) of the exact sum, FMA or not). The interpreter's NumPy matmul sums in
    the order its BLAS kernel for this CPU picks (OpenBLAS's Haswell/Zen and SkylakeX kernels
    differ), the compiled kernel in k order: where the terms cancel, `_compare`'s bound relative to
    the result failed on one CPU and not on another. A wrong or missing term (order |a_i b_i|)
    still fails. Non-finite results (inf/NaN inputs) must be equal."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    rtol, atol = TOL[got.dtype.name]
    k = a.shape[-1]
    ku = k * np.finfo(got.dtype).eps / 2
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    fin = np.isfinite(scale)
    np.testing.assert_array_equal(got[~fin], want[~fin], err_msg=what)
    g, w = got[fin].astype(np.float64), want[fin].astype(np.float64)
    bound = atol + rtol * np.abs(w) + 2 * ku / (1 - ku) * scale[fin]
    bad = ~(np.abs(g - w) <= bound)
    assert not bad.any(), (f"{what}: {np.count_nonzero(bad)} of {g.size} differ beyond the bound: got {g[bad][:4]}, "
                           f"want {w[bad][:4]}, bound {bound[bad][:4]}")


def _column_parts(m, n, lanes):
    """The tiles `column_tail` makes for an m x n product (the rule, written out): rows x 2V over
    the columns 2V tiles fill, then one part of what is left, or one vector and the remainder
    when that is wider than a vector and no power of two; rows 8 or m's largest divisor below."""
    vt = 2 * lanes
    rows = next((d for d in range(8, 1, -1) if m % d == 0), 1)
    main, rest = n - n % vt, n % vt
    widths = [vt] if main >= vt else []
    left = rest if widths else n
    widths += [lanes, left - lanes] if left > lanes and left & (left - 1) else [left] if left else []
    return None if len(widths) < 2 or rows == 1 else "tile=" + "+".join(f"{rows}x{w}" for w in widths)


# The parts in the comments are AVX-512's (V = 16 float32 lanes, 2V = 32) / AVX2's (V = 8,
# 2V = 16); `_column_parts` computes them for the host's V (`_host_lanes`). Where a product has no
# rest at one width (784 = 49 x 16 with AVX2), it must be one loop of rows x 2V tiles instead.
@pytest.mark.parametrize("m,k,n,dt,tn", [
    (256, 128, 784, "float32", True),  # the MLP's weight gradient: 24 x 32 columns + 16 / 49 x 16, no rest
    (128, 64, 100, "float32", False),  # + 4 / 6 x 16 + 4
    (64, 256, 200, "float32", True),  # + 8 / 12 x 16 + 8
    (16, 7, 48, "float64", False),  # float64: 8 / 4 lanes, 2V = 16 / 8 columns: 3 x 16 / 6 x 8, no rest
    (40, 33, 80, "float64", True),  # 80 = 5 x 16 / 10 x 8: no rest
    (24, 9, 36, "float32", False),  # + 4 / 2 x 16 + 4
    (8, 20, 50, "float32", False),  # + 18: wider than a vector, no power of two: + 16 + 2 / 3 x 16 + 2
    (12, 5, 40, "float32", False),  # 6-row tiles; + 8 / 2 x 16 + 8
    (64, 33, 87, "float32", True),  # + 16 + 7 / 5 x 16 + 7
    (30, 40, 17, "float32", False),  # no 2V tile: 16 + 1 / one 2V tile + 1; 6-row tiles
    (13, 10, 37, "float32", False),  # 13 rows: no tile rows, left to the other rules
])
def test_product_columns_cut_into_loops(m, k, n, dt, tn):
    """A product whose columns are not a multiple of two vectors is computed as several loops
    (TVM's loop_partition): rows x 2V tiles over the columns that fill them, rows x (the rest)
    in one vector after them (`_column_parts`, for the host's vector width); results equal the
    interpreter's up to summation order (`_compare_product`; the old narrower tiles' bit for bit:
    each element is the same k-ordered sum)."""
    from graphad.runtime.executable import build_executable
    b = GraphBuilder("cols")
    x = b.add_input(TensorType((k, m) if tn else (m, k), dt), "x")
    w = b.add_input(TensorType((k, n), dt), "w")
    if tn:
        (x,) = b.emit(PRIMITIVES["transpose"], [x], {"perm": (1, 0)})
    (y,) = b.emit(PRIMITIVES["matmul"], [x, w])
    g = b.finish([y])
    rng = np.random.default_rng(m * n + k)
    args = [rng.normal(size=v.type.shape).astype(dt) for v in g.inputs]
    args[0].flat[:3] = [np.inf, np.nan, -0.0]
    exe = build_executable(g)
    lhs = args[0].T if tn else args[0]
    _compare_product(exe(args)[0]._data, interpret(g, args)[0], lhs, args[1], f"{m}x{k}x{n} {dt}")
    rules = " ".join(" ".join(r.blocks) for r in exe.report["schedule"])
    lanes = _host_lanes(dt)
    want = _column_parts(m, n, lanes)
    if want is None:
        assert not re.search(r"tile=[^,)]*\+", rules), rules  # not cut into parts
        rows = next((d for d in range(8, 1, -1) if m % d == 0), 1)
        if rows > 1 and n % (2 * lanes) == 0:  # no rest: rows x 2V tiles over the whole product
            assert re.search(rf"tile={rows}x{2 * lanes}[,)]", rules), rules
    else:
        assert want in rules, rules


@pytest.mark.parametrize("n,tn,bias", [(10, False, True), (10, True, False), (12, False, False), (6, True, True),
                                        (14, False, True), (16, False, False), (20, False, False)])
def test_few_columns_take_whole_rows(n, tn, bias):
    """A product with fewer columns than one vector, not a power of two (a classifier's 10
    classes), is tiled 8 rows x the whole row, vectorized as it is (case B's partial sums gathered
    the transposed weight's strided column), a bias joining the tile; equal to the interpreter.
    16 keeps its vector tiles; 20 (a row wider than a vector came out scalar from LLVM) is
    one vector and 4 columns (`column_tail`).

    Which of these a width is depends on V (`_host_lanes`): with AVX-512 (V = 16) 6, 10, 12 and
    14 are fewer than one vector; with AVX2 (V = 8) only 6 is, and 10, 12 and 14 are wider than a
    vector, no power of two, so they are cut like 20: one vector and the rest (8x8+8x2, ...), and
    a bias is then a second pass over the product (`column_tail`: its several loops take no
    epilogue), not in the tile."""
    from graphad.runtime.executable import build_executable
    m, k = 64, 96
    b = GraphBuilder("few")
    x = b.add_input(TensorType((m, k), "float32"), "x")
    w = b.add_input(TensorType((n, k) if tn else (k, n), "float32"), "w")
    if tn:  # x @ w.T with w (n, k), as Dense stores its weight
        (w,) = b.emit(PRIMITIVES["transpose"], [w], {"perm": (1, 0)})
    (y,) = b.emit(PRIMITIVES["matmul"], [x, w])
    if bias:
        c = b.add_input(TensorType((n,), "float32"), "c")
        (y,) = b.emit(PRIMITIVES["add"], [y, c])
    g = b.finish([y])
    rng = np.random.default_rng(n)
    args = [rng.normal(size=v.type.shape).astype(np.float32) for v in g.inputs]
    args[0].flat[:3] = [np.inf, np.nan, -0.0]
    exe = build_executable(g)
    _compare(exe(args)[0]._data, interpret(g, args)[0], None, f"n={n}")
    rules = " ".join(" ".join(r.blocks) for r in exe.report["schedule"])
    lanes = _host_lanes("float32")
    if n < lanes and n & (n - 1):  # fewer columns than one vector, no power of two: whole rows
        want = f"tile=8xrow{n}"
    else:  # cut into a vector and the rest (20; 10, 12, 14 with V = 8), else one-vector tiles (16)
        want = _column_parts(m, n, lanes) or f"x{n},"
    assert want in rules, rules
    if bias:  # the bias joins the tile, unless the product is cut into several loops
        cut = "+" in want
        assert ("epilogue" in rules) != cut and ("T_add:injective" in rules) == cut, rules


def test_schedule_falls_back_per_primfunc():
    """A PrimFunc the rules cannot handle (symbolic extent) is left unscheduled, and still correct."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax import op as R

    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.schedule import schedule_module
    from graphad.lowering.targets import host_target
    bb = relax.BlockBuilder()
    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 64), "float32"))
    y = relax.Var("y", relax.TensorType((64, 64), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            a = bb.emit(R.tanh(R.add(x, x)))
            o = bb.emit_output((a, R.tanh(R.add(y, y))))
        bb.emit_func_output(o)
    tgt = host_target()
    fused = fuse_module(bb.finalize(), tgt)
    sched, rep = schedule_module(fused, tgt)
    status = sorted(r.status for r in rep)
    assert status == ["fallback", "scheduled"], [str(r) for r in rep]
    ex = tvm.compile(sched, tgt, relax_pipeline=relax.get_pipeline("default_build"))
    f = relax.VirtualMachine(ex, tvm.cpu())["main"]
    xs = np.random.rand(5, 64).astype("float32")
    ys = np.random.rand(64, 64).astype("float32")
    a, b2 = f(tvm.runtime.tensor(xs), tvm.runtime.tensor(ys))
    np.testing.assert_allclose(a.numpy(), np.tanh(2 * xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b2.numpy(), np.tanh(2 * ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["remainder", "fmod"])
def test_float_mod_after_a_folded_nan(op):
    """A float remainder whose operand LLVM can fold to NaN in one lane (0/0 from a pad) writes its
    output: with libm's fmodf inside remainder's select chain, LLVM dropped every store unless the
    divisor was zero (fuzz run 19; now LLVM frem)."""
    from graphad.ir.parser import parse_graph
    from graphad.runtime.executable import build_executable
    for divisor in ("1.0", "2.0", "-3.0", "0.0"):
        g = parse_graph(f"""func @f(%x0: i32[1]) -> (f32[2]) {{
  %0 = pad(%x0) {{hi=[0], interior=[0], lo=[1], value=0.0}} : i32[2]
  %1 = astype(%0) {{dtype="float32"}} : f32[2]
  %2 = div(%1, %1) : f32[2]
  %3 = constant() {{dtype="float32", value=array<f32[]>{divisor}}} : f32[]
  %4 = {op}(%2, %3) : f32[2]
  return %4
}}""")
        x = np.array([3], np.int32)
        want = interpret(g, [x])[0]
        got = np.asarray(build_executable(g, None)([x])[0]._data)
        np.testing.assert_array_equal(got, want, err_msg=f"{op} by {divisor}")


def test_scalar_kernels_are_scheduled():
    """A 0-d kernel (an optimizer's bias correction, a loss's mean) takes the scalar rule, not the
    fallback: TE gives its block one iterator of extent 1 and no loop."""
    import tvm
    from tvm import relax
    from tvm.relax import op as R

    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.schedule import schedule_module
    from graphad.lowering.targets import host_target
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            o = bb.emit_output(R.divide(R.add(x, x), R.sqrt(x)))
        bb.emit_func_output(o)
    tgt = host_target()
    sched, rep = schedule_module(fuse_module(bb.finalize(), tgt), tgt)
    assert [r.status for r in rep] == ["scheduled"] and "scalar" in str(rep[0]), [str(r) for r in rep]
    ex = tvm.compile(sched, tgt, relax_pipeline=relax.get_pipeline("default_build"))
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(np.float32(2.25)))
    assert out.numpy() == np.float32(4.5) / np.sqrt(np.float32(2.25))


def test_rejected_schedule_compiles_unscheduled_and_says_so(monkeypatch):
    """A scheduled module that TVM's build rejects is compiled with TVM's default schedules: the
    results are right, the report holds the reason, and a warning at the user's line says so (a
    scheduler bug must not pass silently as slower code)."""
    import warnings
    from graphad.lowering import lower_graph_info, pipeline
    monkeypatch.setattr(pipeline, "_SCHEDULE_REJECTED_WARNED", False)
    real = pipeline._cpu_build
    calls = []

    def reject_first(mod, target, *rest):
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("InternalError: Check failed: buffer_idx == buffers.size() (1 vs. 2)")
        return real(mod, target, *rest)
    monkeypatch.setattr(pipeline, "_cpu_build", reject_first)
    b = GraphBuilder("f")
    x = b.add_input(TensorType((4, 8), __import__("graphad").dtypes.float32))
    (t,) = b.emit(PRIMITIVES["tanh"], [x])
    g = b.finish([t])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ex, rep = pipeline.build(lower_graph_info(g).module, "llvm", schedule=True)
    assert calls == [0, 1] and "buffer_idx" in rep["fallback"] and rep["pipeline"] == "cpu-fused"
    msgs = [str(m.message) for m in w if "rejected a scheduled kernel" in str(m.message)]
    assert len(msgs) == 1 and "buffer_idx" in msgs[0], [str(m.message) for m in w]
    assert w[[str(m.message) for m in w].index(msgs[0])].filename == __file__
    import tvm
    xs = np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8)
    out = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xs))
    np.testing.assert_allclose(out.numpy(), np.tanh(xs), rtol=1e-6)


# ---------------------------------------------------------------- CUDA

def test_cuda_compiles_without_a_gpu(tmp_path):
    """Compiling for CUDA works on a GPU-less machine (dlight schedules, CUDA source kernels)."""
    from graphad.lowering.targets import resolve_target
    from graphad.runtime.executable import build_executable
    g = _composite("dense_tanh")
    exe = build_executable(g, "cuda")
    assert exe.report["pipeline"] == "cuda-default-dlight"
    assert resolve_target("cuda").kind.name == "cuda"

    def kinds(m):
        yield m.kind
        for c in m.imports:
            yield from kinds(c)
    assert "cuda" in set(kinds(exe._module.mod)), "no CUDA device module was generated"
    import tvm
    if not tvm.cuda(0).exist:
        from graphad.errors import ArtifactError, GraphadError
        from graphad.runtime.aot import load_executable, save_executable
        with pytest.raises(GraphadError, match="no such device"):
            exe([np.zeros((128, 32), np.float32), np.zeros((32, 64), np.float32), np.zeros(64, np.float32)])
        path = save_executable(exe, tmp_path / "cuda.gdx", {"k": 1})  # saved here, runs on a GPU machine
        with pytest.raises(ArtifactError, match="no CUDA GPU"):
            load_executable(path)


def test_failing_gpu_schedule_rule_passes_the_kernel_on():
    """A dlight rule that raises inside (TVM 0.27's GEMV asserts on some fused mat-vecs on an
    H200) is treated as not applying, and the failure is recorded for the build report."""
    from graphad.lowering._tvm import load_tvm
    from graphad.lowering.pipeline import _guarded
    load_tvm()
    from tvm.s_tir import dlight as dl

    class Asserts(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            assert False, "extent != 1"

    class Applies(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            return "scheduled"
    failures = []
    assert _guarded(Asserts(), failures).apply(None, None, False) is None
    assert _guarded(Applies(), failures).apply(None, None, False) == "scheduled"
    assert len(failures) == 1 and failures[0].startswith("Asserts: AssertionError")


def test_device_staging_path_on_the_cpu():
    """The CUDA call path (reused device input buffers, outputs copied into fresh aligned host
    arrays) run with the CPU as the "device": results match, and a second call neither changes the
    first call's outputs nor shares memory with them."""
    from graphad.runtime.executable import build_executable
    for kind in ("sums", "dense_tanh"):
        g = _composite(kind)
        rng = np.random.default_rng(5)
        exe = build_executable(g)
        exe._device_kind = "staged"  # route __call__ through _call_device; the device stays tvm.cpu()
        if exe._tvm is None:  # a linked library, run by the TVM runtime alone: give it the tvm package
            from graphad.lowering._tvm import load_tvm
            exe._tvm = load_tvm()
            exe._device = exe._tvm.cpu(0)
        a1 = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
        a2 = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
        r1 = exe(a1)
        snapshot = [t._data.copy() for t in r1]
        r2 = exe(a2)
        for got, want, snap in zip(r1, interpret(g, a1), snapshot):
            np.testing.assert_allclose(got._data, want, rtol=2e-5, atol=2e-6)
            np.testing.assert_array_equal(got._data, snap)
            assert got._data.ctypes.data % 64 == 0
        for got, want, first in zip(r2, interpret(g, a2), r1):
            np.testing.assert_allclose(got._data, want, rtol=2e-5, atol=2e-6)
            assert not np.shares_memory(got._data, first._data)


@pytest.mark.cuda
def test_cuda_runs_on_gpu():
    import tvm
    if not tvm.cuda(0).exist:
        pytest.skip("no CUDA GPU")
    from graphad.runtime.executable import build_executable
    for kind in ("dense_tanh", "softmax"):
        g = _composite(kind)
        rng = np.random.default_rng(2)
        args = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
        exe = build_executable(g, "cuda")
        for got, want in zip(exe(args), interpret(g, args)):
            np.testing.assert_allclose(got._data, want, rtol=1e-4, atol=1e-5)


if os.environ.get("GRAPHAD_TEST_PRINT_SCHEDULES"):  # pragma: no cover - debugging aid
    def test_print_schedules():
        from graphad.runtime.executable import build_executable
        for k in ("dense_tanh", "softmax", "sums"):
            for r in build_executable(_composite(k)).report["schedule"]:
                print(r)


def test_a_lowering_error_leaves_no_open_relax_block(capfd):
    """A lowering that raises inside the Relax function (here: a scan whose body branches, which
    has no native loop) leaves TVM's BlockBuilder without open blocks: TVM printed "BlockBuilder
    destroyed with remaining blocks!" on stderr when it was collected. The next lowering works."""
    import gc

    import graphad as gd
    from graphad.lowering import lower_graph_info, native_loop
    from graphad.lowering.native_loop import NativeLoopError

    def body(c, x):
        return gd.cond(x > 0, lambda c, x: c + x, lambda c, x: c - x, c, x), c
    g = gd.make_graph(lambda xs: gd.scan(body, gd.Tensor(0.0), xs))(gd.Tensor([1.0, -2.0]))
    native_loop.register()
    with pytest.raises(NativeLoopError):
        lower_graph_info(g)
    gc.collect()
    ok = gd.make_graph(lambda x: x * 2.0)(gd.Tensor(np.ones(3, np.float32)))
    assert lower_graph_info(ok).module is not None
    gc.collect()
    assert "remaining blocks" not in capfd.readouterr().err


def test_schedules_skip_tvms_python_type_checks_and_come_out_the_same(monkeypatch):
    """The rules call the Schedule's primitives without TVM's per-call Python type checks
    (schedule._Unchecked: a third of scheduling time), and schedule exactly as through them:
    the same module and report for a graph with a matmul epilogue, a reduction, a transpose and
    elementwise chains (tried on a copy too: the register tile's trial)."""
    import inspect

    import tvm
    import tvm_ffi
    from tvm.s_tir.schedule import _type_checker

    import graphad as gd
    from graphad import ops
    from graphad.lowering import lower_graph
    from graphad.lowering import schedule as sched_mod
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target

    def f(a, b, c):
        h = ops.tanh(a @ b + c)
        return ops.sum(h * h, axis=1), ops.transpose(h) * 2.0
    graph = gd.jit(f).lower(gd.TensorSpec((64, 48)), gd.TensorSpec((48, 40)), gd.TensorSpec((40,))).graph
    fused = fuse_module(lower_graph(graph), resolve_target(None))
    checks = []
    real = _type_checker._type_check
    monkeypatch.setattr(_type_checker, "_type_check", lambda *a: checks.append(a[1]) or real(*a))
    fast, fast_rep = sched_mod.schedule_module(fused)
    made = set(inspect.signature(tvm.s_tir.Schedule.__init__).parameters) - {"self"}
    assert checks and set(checks) <= made  # only the Schedules' construction, once per PrimFunc
    n_made = len(checks)
    assert all(r.status == "scheduled" for r in fast_rep), [str(r) for r in fast_rep]
    assert any("reduceA" in b for r in fast_rep for b in r.blocks)
    monkeypatch.setattr(sched_mod, "_Unchecked", lambda s: s)
    slow, slow_rep = sched_mod.schedule_module(fused)
    assert len(checks) > 2 * n_made  # the Schedule's own methods check every argument
    assert [str(r) for r in fast_rep] == [str(r) for r in slow_rep]
    assert tvm_ffi.structural_equal(fast, slow)


def test_walk_visits_what_tvm_ffis_structural_walk_visits():
    """_tvm.walk (the callbacks' type indices looked up once per process) calls back on the same
    nodes in the same order as tvm_ffi.structural_walk, in every callback form and order, and
    honours SKIP and VisitInterrupt."""
    import tvm
    import tvm_ffi

    import graphad as gd
    from graphad import ops
    from graphad.lowering import lower_graph
    from graphad.lowering._tvm import walk
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    graph = gd.jit(lambda a, b: ops.tanh(a @ b) * 2.0 + ops.sum(b)).lower(gd.TensorSpec((8, 8)),
                                                                         gd.TensorSpec((8, 4))).graph
    mod = fuse_module(lower_graph(graph), resolve_target(None))
    bodies = [f.body for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert bodies
    tir = tvm.tirx

    def forms(seen):
        def note(tag):
            return lambda e: seen.append((tag, e))
        return [note("any"),
                ((tir.Add, tir.Mul), note("arith")),
                [((tir.Add, tir.Mul), note("arith")), (tvm.ir.TensorLoad, note("load")), (tir.For, note("loop"))],
                [(tir.For, lambda e: seen.append(("loop", e)) or tvm_ffi.WalkResult.SKIP)]]
    for body in bodies:
        for k in range(4):
            for order in ("pre", "post"):
                ours, theirs = [], []
                walk(body, forms(ours)[k], order=order)
                tvm_ffi.structural_walk(body, forms(theirs)[k], order=order)
                assert len(ours) == len(theirs) > 0
                assert all(a[0] == b[0] and a[1].same_as(b[1]) for a, b in zip(ours, theirs))
        got = walk(body, (tvm.ir.TensorLoad, lambda e: tvm_ffi.VisitInterrupt(e)))
        want = tvm_ffi.structural_walk(body, (tvm.ir.TensorLoad, lambda e: tvm_ffi.VisitInterrupt(e)))
        assert got is not None and got.value.same_as(want.value)


@pytest.mark.parametrize("n", [4, 4096])
@pytest.mark.parametrize("case", ["erfinv(tanh) f64", "cos(rsqrt) pad", "sin(arccosh) f32", "cos(cbrt) f32"])
def test_kernels_tvms_vectorizer_rejected_build_as_scheduled(n, case):
    """TVM 0.27's VectorizeLoop, scalarizing a statement (an operation without a vector form on
    lane-dependent values: float64 tanh is libm's, rsqrt, an if_then_else), met the Let-bound
    polynomial of erfinv or sin/cos again and stopped the build ("Let cannot bind the same var
    to two different values"): graphad compiled the whole graph with TVM's default schedules,
    with a warning. vectorize_guard.py makes those loops serial and vectorizes again: no
    warning, the interpreter's values, first and derivative alike."""
    import warnings

    import graphad as gd
    from graphad import ops
    rng = np.random.default_rng(n)
    dt = np.float64 if case.endswith("f64") else np.float32
    x = (rng.random(n) * 1.8 - 0.9).astype(dt)
    y = (rng.random(n) * 8 + 1.5).astype(dt)

    def f(x, y):
        if case == "erfinv(tanh) f64":
            a = ops.tanh(x)
            return ops.erfinv(a) * a
        if case == "cos(rsqrt) pad":
            return ops.pad(ops.cos(ops.rsqrt(y)), [(1, 0)], constant_values=-2.0)[1:] * x
        a = ops.arccosh(y) if case.startswith("sin") else ops.cbrt(x * y)
        return (ops.sin(a) if case.startswith("sin") else ops.cos(a)) * a

    def loss(x, y):
        return ops.sum(f(x, y) * y)
    gd.set_backend("tvm")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = gd.jit(lambda x, y: f(x, y))(gd.Tensor(x), gd.Tensor(y)).asnumpy()
            dgot = gd.jit(gd.grad(lambda x, y: loss(x, y), grad_position=1))(gd.Tensor(x), gd.Tensor(y)).asnumpy()
    finally:
        gd.set_backend("numpy")
    want = f(gd.Tensor(x), gd.Tensor(y)).asnumpy()
    dwant = gd.grad(loss, grad_position=1)(gd.Tensor(x), gd.Tensor(y)).asnumpy()
    tol = 1e-12 if dt == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(dgot, dwant, rtol=tol * 10, atol=tol * 10)


def test_the_vectorize_guard_changes_only_loops_tvm_rejects():
    """serial_where_vectorize_fails leaves a module VectorizeLoop takes as it is (sin's kernel,
    its rare path and Lets included), and makes serial the loops of one it rejects."""
    import tvm

    import graphad as gd
    from graphad import ops
    from graphad.lowering import lower_graph
    from graphad.lowering._tvm import walk
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.rare_path import _s_tir_passes, split_rare_paths, vector_isnan
    from graphad.lowering.schedule import schedule_module
    from graphad.lowering.targets import resolve_target
    from graphad.lowering.vectorize_guard import serial_where_vectorize_fails

    def before_vectorize(fn, dtype=gd.float32):
        graph = gd.jit(fn).lower(gd.TensorSpec((4096,), dtype), gd.TensorSpec((4096,), dtype)).graph
        mod, _ = schedule_module(fuse_module(lower_graph(graph), resolve_target(None)))
        before, after = _s_tir_passes(tvm)
        at = next(k for k, p in enumerate(after) if p.info.name == "tirx.VectorizeLoop")
        mod = tvm.transform.Sequential(before)(vector_isnan(tvm, mod))  # as tir_lowering.lower_tir
        mod = split_rare_paths(tvm, mod)
        return tvm.transform.Sequential(after[:at])(mod)

    def vectorized(mod) -> int:
        loops = []
        for f in mod.functions.values():
            if isinstance(f, tvm.tirx.PrimFunc):
                walk(f.body, [(tvm.tirx.For, lambda s: loops.append(s) if s.kind == tvm.tirx.ForKind.VECTORIZED else None)])
        return len(loops)
    plain = before_vectorize(lambda x, y: ops.sin(x) * y + 1.0)
    assert vectorized(plain) > 0
    assert serial_where_vectorize_fails(tvm, plain).same_as(plain)
    mixed = before_vectorize(lambda x, y: (lambda a: ops.erfinv(a) * a + y)(ops.tanh(x)), gd.float64)
    with pytest.raises(Exception, match="Let cannot bind"):
        tvm.tirx.transform.VectorizeLoop(True)(mixed)
    guarded = serial_where_vectorize_fails(tvm, mixed)
    assert vectorized(guarded) < vectorized(mixed)
    tvm.tirx.transform.VectorizeLoop(True)(guarded)  # takes it now


def test_libm_kernels_stay_apart():
    """A kernel calling libm per element (float64 arctan2; float32 arctan2 is computed without a
    call since relax_ops' _arctan2_f32, and fuses) is opaque: fused with float32 sin its call made
    TVM run the sin polynomial one element at a time too."""
    import graphad as gd
    from graphad import ops
    from graphad.lowering import lower_graph
    from graphad.lowering.pipeline import fuse_module
    from graphad.lowering.targets import resolve_target
    import tvm
    graph = gd.jit(lambda x, y: ops.sin(ops.astype(ops.arctan2(y, x), "float32")) * ops.astype(x, "float32")).lower(
        gd.TensorSpec((64,), "float64"), gd.TensorSpec((64,), "float64")).graph
    fused = fuse_module(lower_graph(graph), resolve_target(None))
    names = sorted(gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    assert any(n == "atan2" or n.startswith("atan2") and "sin" not in n for n in names), names
    assert any("sin" in n and "atan2" not in n for n in names), names


def test_a_cheap_bool_producer_of_a_broadcast_is_recomputed_not_a_stage():
    """isclose of (3, 1) and (4,): isfinite of the broadcast operand was a stage of its own, whose
    bool buffer TVM's LLVM code generator loaded as a vector of i8 and and-ed with a vector of i1
    (`and <4 x i1>, <4 x i8>`): the build fell back to TVM's schedules with the scheduler-bug
    warning (an npops trial). Now it is recomputed in its consumer: no warning, NumPy's values."""
    import warnings
    import graphad as gd
    from graphad import ops
    a, b = np.array([[0.0], [1.0], [np.inf]]), np.array([0.0, 1.0 + 1e-9, np.inf, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f, want in [(ops.isclose, np.isclose(a, b)),
                        (lambda x, y: ops.logical_and(ops.logical_and(ops.isfinite(x), ops.isfinite(y)), x < y),
                         np.isfinite(a) & np.isfinite(b) & (a < b))]:
            got = gd.jit(f, backend="tvm")(gd.Tensor(a), gd.Tensor(b)).numpy()
            np.testing.assert_array_equal(got, want)
