"""Elementwise kernels with let-bound bodies (float32 sin and cos, erfinv, polygamma:
relax_ops._heavy) fuse with the elementwise ops around them in graphs without half-type values,
and stay kernels of their own where a graph holds bfloat16 or float16 values (TVM's bfloat16
legalization breaks such a body beside a cast); lgamma (a libm call per element) stays apart
everywhere, being slower fused. Fused results are checked bit for bit against the
same graph compiled with those kernels unfused, and against the NumPy interpreter, with inf, NaN,
-0.0 and arguments past the 2^16 threshold of sin's and cos's libm call among the inputs."""
from __future__ import annotations

import numpy as np
import pytest

from graphad.ir.builder import GraphBuilder
from graphad.ir.core import TensorType
from graphad.ir.interpret import interpret
from graphad.prims import PRIMITIVES as P

pytestmark = pytest.mark.tvm

# op -> (attributes, input range); results compared with the interpreter within these tolerances
# (the compiled float32 sin and cos are SLEEF polynomials, within 4 ulp; the rest are computed in
# float64 and rounded once, like the interpreter's)
OPS = {"sin": ({}, (-60.0, 60.0)), "cos": ({}, (-60.0, 60.0)), "lgamma": ({}, (0.05, 30.0)),
       "erfinv": ({}, (-0.99, 0.99)), "polygamma": ({"n": 1}, (0.1, 20.0))}
TOL = {"float32": (3e-6, 1e-6), "float64": (1e-12, 1e-14)}


def _graph(op, dt, shape=(3000,)):
    """op(x * 2) * y + 1 (all one shape)."""
    attrs, _ = OPS[op]
    b = GraphBuilder(f"{op}_chain")
    x = b.add_input(TensorType(shape, dt), "x")
    y = b.add_input(TensorType(shape, dt), "y")

    def scalar(v):
        (c,) = b.emit(P["constant"], [], {"value": np.array(v, dt), "dtype": dt})
        return c
    (x2,) = b.emit(P["mul"], [x, scalar(0.5 if op == "erfinv" else 2.0)])
    (f,) = b.emit(P[op], [x2], dict(attrs))
    (p,) = b.emit(P["mul"], [f, y])
    (out,) = b.emit(P["add"], [p, scalar(1.0)])
    return b.finish([out])


def _args(op, dt, shape=(3000,)):
    lo, hi = OPS[op][1]
    rng = np.random.default_rng(3)
    x = rng.uniform(lo, hi, size=shape).astype(dt)
    y = rng.normal(size=shape).astype(dt)
    x.flat[:4] = [np.nan, -0.0, 0.0, (lo + hi) / 2]
    if op in ("sin", "cos"):
        x.flat[4:9] = [np.inf, -np.inf, 40000.5, -1e30, 3e38 if dt == "float32" else 1e300]
    y.flat[-3:] = [np.inf, -0.0, np.nan]
    return [x, y]


def _kernels(exe):
    return [r.name for r in exe.report["schedule"]]


def _bits(a):
    """The bytes of `a` with every NaN made the same NaN (no operation promises a NaN's sign or
    payload); -0.0 and every other value keep their bits."""
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
    return a.tobytes()


def _apart(monkeypatch):
    """Compile the heavy kernels unfused, as before they were marked injective."""
    from graphad.lowering import relax_ops
    monkeypatch.setattr(relax_ops, "_heavy", lambda cx: relax_ops._OPAQUE_ATTRS)


FUSED = sorted(set(OPS) - {"lgamma"})


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("op", FUSED)
def test_heavy_kernel_fuses_with_its_neighbours(op, dt, monkeypatch):
    if op in ("sin", "cos") and dt == "float64":
        pytest.skip("float64 sin and cos are Relax's own (libm), fused as any elementwise op")
    from graphad.runtime.executable import build_executable
    g, args = _graph(op, dt), _args(op, dt)
    exe = build_executable(g)
    assert len(_kernels(exe)) == 1, _kernels(exe)
    got = exe(args)[0]._data
    with np.errstate(all="ignore"):
        want = interpret(g, args)[0]
    rtol, atol = TOL[dt]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{op} {dt}")
    with monkeypatch.context() as m:
        _apart(m)
        apart = build_executable(g)
        assert len(_kernels(apart)) == 3, _kernels(apart)
        ref = apart(args)[0]._data
    assert _bits(got) == _bits(ref), f"{op} {dt}: fused and unfused kernels differ"


# (not sin: half types compute it in float64, Relax's libm sin, no let-bound body; lowering/bf16.py)
@pytest.mark.parametrize("op", ["erfinv"])
def test_heavy_kernel_stays_apart_in_a_bfloat16_graph(op):
    """A graph with bfloat16 values keeps the heavy kernel unfused (the casts around every op of
    such a graph would sit beside its let-bound body)."""
    import ml_dtypes
    from graphad.runtime.executable import build_executable
    g = _graph(op, "bfloat16", shape=(256,))
    exe = build_executable(g)
    assert any(name == op or name.startswith(f"{op}") for name in _kernels(exe)), _kernels(exe)
    assert len(_kernels(exe)) > 1, _kernels(exe)
    bf = np.dtype(ml_dtypes.bfloat16)
    x = np.linspace(-0.9, 0.9, 256).astype(bf)
    y = np.linspace(1.0, 2.0, 256).astype(bf)
    got = exe([x, y])[0]._data.astype(np.float32)
    want = interpret(g, [x, y])[0].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_lgamma_stays_a_kernel_of_its_own(dt):
    from graphad.runtime.executable import build_executable
    g, args = _graph("lgamma", dt), _args("lgamma", dt)
    exe = build_executable(g)
    assert "lgamma" in _kernels(exe) and len(_kernels(exe)) == 3, _kernels(exe)
    got = exe(args)[0]._data
    with np.errstate(all="ignore"):
        want = interpret(g, args)[0]
    np.testing.assert_allclose(got, want, rtol=TOL[dt][0], atol=TOL[dt][1])


def test_an_unrolled_loop_of_heavy_steps_reuses_its_kernels():
    """Ten unrolled steps 0.1 y @ (w * sin(y) + 1) (a product between the steps, which nothing fuses
    across) make one fused kernel for the sin part, called ten times, not ten kernels: the
    pattern is set when the kernel is made, so the builder finds the same kernel again (set
    afterwards, every step's sin was a kernel of its own)."""
    from graphad.runtime.executable import build_executable
    b = GraphBuilder("steps")
    y = b.add_input(TensorType((8, 8), "float32"), "y")
    w = b.add_input(TensorType((8, 8), "float32"), "w")
    (one,) = b.emit(P["constant"], [], {"value": np.array(1.0, "float32"), "dtype": "float32"})
    (tenth,) = b.emit(P["constant"], [], {"value": np.array(0.1, "float32"), "dtype": "float32"})
    for _ in range(10):
        (s_,) = b.emit(P["sin"], [y])
        (m,) = b.emit(P["mul"], [w, s_])
        (m,) = b.emit(P["add"], [m, one])
        (y,) = b.emit(P["matmul"], [y, m])
        (y,) = b.emit(P["mul"], [y, tenth])  # (the values stay of the order of 1)
    g = b.finish([y])
    exe = build_executable(g)
    names = _kernels(exe)
    assert sum("sin" in n for n in names) == 1, names
    rng = np.random.default_rng(5)
    args = [rng.uniform(-0.3, 0.3, (8, 8)).astype(np.float32) for _ in range(2)]
    np.testing.assert_allclose(exe(args)[0]._data, interpret(g, args)[0], rtol=1e-4, atol=1e-6)
