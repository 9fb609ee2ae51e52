"""Multi-output elementwise fusion (graphad/lowering/output_fusion.py) and the loop nest its
kernels share (schedule.py `shared_loop_groups`): an elementwise value that is also a graph output
and is read by a later elementwise kernel of the same shape (an optimizer's new moments, which
the new weight reads) is computed in the reader's kernel and loop. Compiled results are checked
against the NumPy interpreter, with inf, NaN and -0.0 among the inputs."""
from __future__ import annotations

import numpy as np
import pytest

from graphad.ir.builder import GraphBuilder
from graphad.ir.core import TensorType
from graphad.ir.interpret import interpret
from graphad.prims import PRIMITIVES as P

pytestmark = pytest.mark.tvm

# as tests/test_lowering.py: LLVM contracts a * b + c into one FMA, which rounds once
TOL = {"float32": (2e-5, 2e-6), "float64": (1e-11, 1e-13)}


def _compare(got, want, what):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    rtol, atol = TOL[got.dtype.name]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
    # signed zeros too (assert_allclose lets -0.0 equal 0.0)
    both = (got == 0) & (want == 0)
    np.testing.assert_array_equal(np.signbit(got[both]), np.signbit(want[both]), err_msg=what)


def _compare_product(got, want, a, b, what):
    """`got` = a @ b compiled against `want`, the interpreter's, where `a` is itself a computed
    value (the interpreter's, the compiled one within `_compare`'s tolerance of it): `_compare`'s
    tolerance, widened by what that input difference and two summation orders of k products may
    add, (rtol |a| + atol) @ |b| + 2 gamma_k (|a| @ |b|) (gamma_k = k u / (1 - k u)). The
    interpreter's NumPy matmul sums in the order its BLAS kernel for this CPU picks (OpenBLAS's
    Haswell/Zen and SkylakeX kernels differ), the compiled kernel in k order: where the terms
    cancel, `_compare`'s bound relative to the result failed on one CPU and not on another. A
    wrong or missing term (order |a_i b_i|) still fails."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    rtol, atol = TOL[got.dtype.name]
    k = a.shape[-1]
    ku = k * np.finfo(got.dtype).eps / 2
    a, b = np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))
    slack = (rtol * a + atol) @ b + 2 * ku / (1 - ku) * (a @ b)
    assert np.isfinite(slack).all(), what
    g, w = got.astype(np.float64), want.astype(np.float64)
    bad = ~(np.abs(g - w) <= atol + rtol * np.abs(w) + slack)
    assert not bad.any(), (f"{what}: {np.count_nonzero(bad)} of {g.size} differ beyond the bound: got {g[bad][:4]}, "
                           f"want {w[bad][:4]}")


def _scalar(b, value, dt):
    (c,) = b.emit(P["constant"], [], {"value": np.array(value, dt), "dtype": dt})
    return c


def _adam(shape, dt="float32"):
    """One Adam update (nn.Adam's arithmetic) of a weight: outputs m', v', p'. (Shapes above
    lowering.PACK_MAX_BYTES in all: smaller results are packed into one buffer, which makes them
    one kernel anyway.)"""
    b = GraphBuilder("adam")
    g, m, v, p = (b.add_input(TensorType(shape, dt), n) for n in ("g", "m", "v", "p"))
    c2, step = (b.add_input(TensorType((), dt), n) for n in ("c2", "step"))
    (m1,) = b.emit(P["mul"], [_scalar(b, 0.9, dt), m])
    (m2,) = b.emit(P["mul"], [_scalar(b, 0.1, dt), g])
    (m_new,) = b.emit(P["add"], [m1, m2])
    (v1,) = b.emit(P["mul"], [_scalar(b, 0.999, dt), v])
    (g2,) = b.emit(P["square"], [g])
    (v2,) = b.emit(P["mul"], [_scalar(b, 0.001, dt), g2])
    (v_new,) = b.emit(P["add"], [v1, v2])
    (s,) = b.emit(P["sqrt"], [v_new])
    (sc,) = b.emit(P["sqrt"], [c2])
    (d,) = b.emit(P["div"], [s, sc])
    (d,) = b.emit(P["add"], [d, _scalar(b, 1e-8, dt)])
    (q,) = b.emit(P["div"], [m_new, d])
    (q,) = b.emit(P["mul"], [step, q])
    (p_new,) = b.emit(P["sub"], [p, q])
    return b.finish([m_new, v_new, p_new])


def _bits(a):
    """The bytes of `a` with every NaN made the same NaN: no operation promises a NaN's sign or
    payload (x86's sqrt of a negative number is -NaN, a NaN literal +NaN), and fused and unfused
    code may meet a NaN on different instructions; -0.0 and every other value keep their bits."""
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
    return a.tobytes()


def _run(g, args, what, products=None):
    """Compile `g`; its results against the interpreter's and, bit for bit but for NaNs' signs
    and payloads (`_bits`), against the same graph compiled without the fusion (each output's
    arithmetic is unchanged: only loops are shared). `products` maps the index of an output that
    is a matrix product to its two operands' NumPy values: compared with `_compare_product`. The
    schedule report."""
    from graphad.lowering import output_fusion
    from graphad.runtime.executable import build_executable
    exe = build_executable(g)
    got = [t._data for t in exe(args)]
    with np.errstate(all="ignore"):
        want = interpret(g, args)
    for i, (a, ref) in enumerate(zip(got, want)):
        if products and i in products:
            _compare_product(a, ref, *products[i], what)
        else:
            _compare(a, ref, what)
    fuse = output_fusion.fuse_outputs
    output_fusion.fuse_outputs = lambda mod: mod
    try:
        apart = [t._data for t in build_executable(g)(args)]
    finally:
        output_fusion.fuse_outputs = fuse
    for a, b in zip(got, apart):
        assert _bits(a) == _bits(b), f"{what}: fused and unfused kernels differ"
    rep = exe.report["schedule"]
    assert rep and all(r.status == "scheduled" for r in rep), [str(r) for r in rep]
    return rep


@pytest.mark.parametrize("shape,dt", [((64, 48), "float32"), ((37, 50), "float64"), ((3000,), "float32"),
                                      ((2, 3, 256), "float32")])
def test_adam_update_is_one_kernel_and_one_loop(shape, dt):
    """m', v' and p' of one weight: one kernel (not three), whose three blocks share one loop
    nest, equal to the interpreter's values."""
    g = _adam(shape, dt)
    rng = np.random.default_rng(7)
    args = [rng.normal(size=shape).astype(dt) for _ in range(4)] + [np.array(0.3, dt), np.array(1e-3, dt)]
    args[2] = np.abs(args[2])  # v is a running mean of squares
    args[0].flat[:3] = [np.inf, np.nan, -0.0]
    args[3].flat[-2:] = [-0.0, np.inf]
    rep = _run(g, args, f"adam {shape} {dt}")
    # one kernel walks the weight (the others are 0-d: the scalars' square root)
    walks = [r for r in rep if any(not b.endswith(":scalar") for b in r.blocks)]
    assert len(walks) == 1 and walks[0].name.endswith("_multi"), [str(r) for r in rep]
    rules = " ".join(walks[0].blocks)
    assert rules.count("shares(") == 2, rules


def test_a_value_read_before_its_consumer_is_not_moved():
    """A producer whose value another kernel (a matmul) reads between it and its elementwise
    consumer is not merged into the consumer, whose call would come too late for that reader;
    the consumer still merges the producer no one else reads early."""
    b = GraphBuilder("between")
    x = b.add_input(TensorType((64, 64), "float32"), "x")
    w = b.add_input(TensorType((64, 64), "float32"), "w")
    (t,) = b.emit(P["tanh"], [x])  # read by the matmul before `u` reads it
    (e,) = b.emit(P["exp"], [w])  # read only by `u`
    (h,) = b.emit(P["matmul"], [t, w])
    (u,) = b.emit(P["mul"], [t, e])
    g = b.finish([t, e, u, h])
    rng = np.random.default_rng(1)
    args = [rng.normal(size=(64, 64)).astype(np.float32) for _ in range(2)]
    # h = tanh(x) @ w sums 64 products: compared up to summation order (`_compare_product`)
    rep = _run(g, args, "between", products={3: (np.tanh(args[0]), args[1])})
    multi = [r for r in rep if r.name.endswith("_multi")]
    assert len(multi) == 1 and "exp_nan:shares(" in " ".join(multi[0].blocks), [str(r) for r in rep]
    assert any(r.name == "tanh" for r in rep), [str(r) for r in rep]


def _random_graph(rng):
    """A random elementwise program over one shape (some inputs broadcast vectors or scalars)
    whose intermediate values are often outputs too."""
    dt = str(rng.choice(["float32", "float64"]))
    # above lowering.PACK_MAX_BYTES: smaller results are packed into one buffer (one kernel anyway)
    shape = [(64, 80), (130, 33), (3, 40, 32), (5000,), (67, 129)][int(rng.integers(5))]
    b = GraphBuilder("chain")
    vals = [b.add_input(TensorType(shape, dt), "x0")]
    outs = []
    for i in range(int(rng.integers(2, 7))):
        op = str(rng.choice(["add", "mul", "sub", "maximum", "div", "exp", "tanh", "square", "sqrt",
                             "neg", "scalar", "vector"]))
        a = vals[int(rng.integers(len(vals)))]
        if op in ("exp", "tanh", "square", "sqrt", "neg"):
            (h,) = b.emit(P[op], [a])
        elif op == "scalar":
            (h,) = b.emit(P["mul"], [a, _scalar(b, float(rng.normal()), dt)])
        elif op == "vector":
            c = b.add_input(TensorType(shape[-1:], dt), f"c{i}")
            (h,) = b.emit(P["add"], [a, c])
        else:
            other = vals[int(rng.integers(len(vals)))]
            if rng.random() < 0.3:
                other = b.add_input(TensorType(shape, dt), f"z{i}")
            (h,) = b.emit(P[op], [a, other])
        vals.append(h)
        if rng.random() < 0.5:
            outs.append(h)
    if vals[-1] not in outs:
        outs.append(vals[-1])
    return b.finish(outs)


def test_random_multi_output_chains_match_the_interpreter():
    """Random elementwise programs whose intermediates are outputs too, compiled against the
    interpreter (inf, NaN, -0.0 among the inputs); some of them must share loops."""
    rng = np.random.default_rng(20261201)
    shared = 0
    for trial in range(16):
        g = _random_graph(rng)
        args = [rng.normal(size=v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
        if args[0].size >= 3:
            args[0].flat[rng.choice(args[0].size, 3, replace=False)] = [np.inf, np.nan, -0.0]
        rep = _run(g, args, f"trial {trial}: {g}")
        shared += "shares(" in " ".join(" ".join(r.blocks) for r in rep)
    assert shared >= 4, shared
