"""Elementwise kernels and a transformer block's gradient, graphad against JAX jit, torch and NumPy.

Per call, in one process and one run, float32 over 256 x 1024 = 2^18 elements (inputs from a
standard normal, a NaN-free range): the functions whose compiled kernels pass NaN through by a
select on isnan (tanh, sigmoid, exp, erf, softmax; log, log2, log1p and expm1, graphad's own
polynomials since the eighteenth session), erfc and gelu (computed by graphad in
float64 arithmetic), the derivatives of tanh and gelu, and a layer norm's gradient (its
`(x - m) ** 2`; the loss sums its output times fixed weights). Then the gradient of a 2-layer transformer block (8 sequences of 32 tokens,
width 64, 4 heads, exact gelu, layer norms), first call (compile, disk cache off) and per call.
Every graphad result is checked against NumPy (float64 where NumPy has the function, SciPy for
erf and erfc when installed) or against JAX before it is timed.

Usage: python benchmarks/elementwise.py [--write]   (--write replaces the BENCH:elementwise block
of docs/performance.md)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("GRAPHAD_NO_DISK_CACHE", "1")  # the transformer's first call compiles
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import graphad as gd  # noqa: E402
from graphad import ops  # noqa: E402
import seed_workloads as sw  # noqa: E402  (timing loop, machine line and docs writer)

SHAPE = (256, 1024)
SQRT1_2 = 1 / math.sqrt(2)


def _np_erf():
    try:
        from scipy import special
        return special.erf, special.erfc
    except ImportError:
        return np.vectorize(math.erf), np.vectorize(math.erfc)


def workloads():
    """{name: (graphad fn, jax fn builder, torch fn builder, float64 NumPy reference)}."""
    erf, erfc = _np_erf()

    def np_softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def np_gelu(x):
        return 0.5 * x * erfc(-x * SQRT1_2)

    def np_gelu_grad(x):
        return 0.5 * erfc(-x * SQRT1_2) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    w_ln = np.cos(np.arange(SHAPE[-1]) * 0.01)  # the loss's weights over the normalised axis

    def np_ln_grad(x):  # d/dx sum(layer_norm(x) * w) over the last axis, eps 1e-5
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        y = (x - m) / np.sqrt(v + 1e-5)
        return (w_ln - w_ln.mean() - y * (w_ln * y).mean(-1, keepdims=True)) / np.sqrt(v + 1e-5)

    gw = gd.Tensor(w_ln.astype(np.float32))

    def gd_ln(u):
        m = ops.mean(u, axis=-1, keepdims=True)
        v = ops.mean((u - m) ** 2, axis=-1, keepdims=True)
        return ops.sum((u - m) / ops.sqrt(v + 1e-5) * gw)

    def jax_ln(jnp):
        jw = jnp.asarray(w_ln.astype(np.float32))

        def f(u):
            m = jnp.mean(u, axis=-1, keepdims=True)
            v = jnp.mean((u - m) ** 2, axis=-1, keepdims=True)
            return jnp.sum((u - m) / jnp.sqrt(v + 1e-5) * jw)
        return f

    return {
        "tanh": (ops.tanh, lambda jax, jnp: jnp.tanh, lambda torch: torch.tanh, np.tanh),
        "exp(x) * x": (lambda t: ops.exp(t) * t, lambda jax, jnp: (lambda t: jnp.exp(t) * t),
                       lambda torch: (lambda t: torch.exp(t) * t), lambda x: np.exp(x) * x),
        "sigmoid(x) * x": (lambda t: ops.sigmoid(t) * t, lambda jax, jnp: (lambda t: jax.nn.sigmoid(t) * t),
                           lambda torch: (lambda t: torch.sigmoid(t) * t), lambda x: x / (1 + np.exp(-x))),
        "log(|x|)": (lambda t: ops.log(ops.abs(t)), lambda jax, jnp: (lambda t: jnp.log(jnp.abs(t))),
                     lambda torch: (lambda t: torch.log(torch.abs(t))), lambda x: np.log(np.abs(x))),
        "log1p(|x|)": (lambda t: ops.log1p(ops.abs(t)), lambda jax, jnp: (lambda t: jnp.log1p(jnp.abs(t))),
                       lambda torch: (lambda t: torch.log1p(torch.abs(t))), lambda x: np.log1p(np.abs(x))),
        "expm1": (ops.expm1, lambda jax, jnp: jnp.expm1, lambda torch: torch.expm1, np.expm1),
        "log2(|x|)": (lambda t: ops.log2(ops.abs(t)), lambda jax, jnp: (lambda t: jnp.log2(jnp.abs(t))),
                      lambda torch: (lambda t: torch.log2(torch.abs(t))), lambda x: np.log2(np.abs(x))),
        "softplus": (ops.softplus, lambda jax, jnp: jax.nn.softplus, lambda torch: torch.nn.functional.softplus,
                     lambda x: np.logaddexp(x, 0.0)),
        "log_softmax (rows)": (lambda t: ops.log_softmax(t, axis=-1),
                               lambda jax, jnp: (lambda t: jax.nn.log_softmax(t, axis=-1)),
                               lambda torch: (lambda t: torch.log_softmax(t, -1)),
                               lambda x: x - x.max(-1, keepdims=True)
                               - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))),
        "softmax (rows)": (lambda t: ops.softmax(t, axis=-1), lambda jax, jnp: (lambda t: jax.nn.softmax(t, axis=-1)),
                           lambda torch: (lambda t: torch.softmax(t, -1)), np_softmax),
        "erf": (ops.erf, lambda jax, jnp: jax.scipy.special.erf, lambda torch: torch.erf, erf),
        "erfc": (ops.erfc, lambda jax, jnp: jax.scipy.special.erfc, lambda torch: torch.erfc, erfc),
        "gelu (exact)": (ops.gelu, lambda jax, jnp: (lambda t: jax.nn.gelu(t, approximate=False)),
                         lambda torch: torch.nn.functional.gelu, np_gelu),
        "sinh": (ops.sinh, lambda jax, jnp: jnp.sinh, lambda torch: torch.sinh, np.sinh),
        "arctan": (ops.arctan, lambda jax, jnp: jnp.arctan, lambda torch: torch.atan, np.arctan),
        "|x| ** 1.5": (lambda t: ops.abs(t) ** 1.5, lambda jax, jnp: (lambda t: jnp.abs(t) ** 1.5),
                       lambda torch: (lambda t: torch.abs(t) ** 1.5), lambda x: np.abs(x) ** 1.5),
        "hypot(x, 2x + 1)": (lambda t: ops.hypot(t, t * 2.0 + 1.0), lambda jax, jnp: (lambda t: jnp.hypot(t, t * 2.0 + 1.0)),
                             lambda torch: (lambda t: torch.hypot(t, t * 2.0 + 1.0)), lambda x: np.hypot(x, 2 * x + 1)),
        "gradient of tanh": (lambda t: gd.grad(lambda u: ops.sum(ops.tanh(u)))(t),
                             lambda jax, jnp: jax.grad(lambda u: jnp.sum(jnp.tanh(u))), None,
                             lambda x: 1 - np.tanh(x) ** 2),
        "gradient of gelu": (lambda t: gd.grad(lambda u: ops.sum(ops.gelu(u)))(t),
                             lambda jax, jnp: jax.grad(lambda u: jnp.sum(jax.nn.gelu(u, approximate=False))), None,
                             np_gelu_grad),
        "gradient of a layer norm": (lambda t: gd.grad(gd_ln)(t), lambda jax, jnp: jax.grad(jax_ln(jnp)), None,
                                     np_ln_grad),
    }


# ---------------------------------------------------------------- the transformer block

L, D, T, B, H = 2, 64, 32, 8, 4


def block_params(rng):
    ps = []
    for _ in range(L):
        ps += [rng.standard_normal((D, 3 * D)) * 0.1, rng.standard_normal((D, D)) * 0.1,
               rng.standard_normal((D, 4 * D)) * 0.1, rng.standard_normal((4 * D, D)) * 0.1,
               np.ones(D), np.zeros(D)]
    return [p.astype(np.float32) for p in ps], rng.standard_normal((B, T, D)).astype(np.float32)


def block_loss(np_, softmax, gelu):
    """The loss of the 2-layer block written once for both frameworks (np_: ops or jax.numpy)."""
    def ln(v, g, b):
        m = np_.mean(v, axis=-1, keepdims=True)
        s = np_.mean((v - m) ** 2, axis=-1, keepdims=True)
        return (v - m) / np_.sqrt(s + 1e-5) * g + b

    def heads(a):
        return np_.transpose(np_.reshape(a, (B, T, H, D // H)), (0, 2, 1, 3))

    def loss(ps, x):
        h = x
        for layer in range(L):
            wqkv, wo, w1, w2, g, b = ps[6 * layer:6 * layer + 6]
            qkv = h @ wqkv
            q, k, v = heads(qkv[..., :D]), heads(qkv[..., D:2 * D]), heads(qkv[..., 2 * D:])
            a = softmax(q @ np_.swapaxes(k, -1, -2) / math.sqrt(D // H)) @ v
            a = np_.reshape(np_.transpose(a, (0, 2, 1, 3)), (B, T, D))
            h = ln(h + a @ wo, g, b)
            h = ln(h + gelu(h @ w1) @ w2, g, b)
        return np_.mean(h ** 2)
    return loss


def transformer_rows(rng, have_jax):
    ps, x = block_params(rng)
    loss = block_loss(ops, lambda v: ops.softmax(v, axis=-1), ops.gelu)
    f = gd.jit(gd.value_and_grad(loss))
    gps, gx = [gd.Tensor(p) for p in ps], gd.Tensor(x)
    t0 = time.perf_counter()
    out = f(gps, gx)
    first = time.perf_counter() - t0
    per = sw.timeit(lambda: f(gps, gx), min_time=1.0)
    rows = [("graphad", first, per, float(out[0].asnumpy()))]
    if have_jax:
        import jax
        import jax.numpy as jnp
        jl = block_loss(jnp, lambda v: jax.nn.softmax(v, axis=-1), lambda v: jax.nn.gelu(v, approximate=False))
        jf = jax.jit(jax.value_and_grad(jl))
        jps, jx = [jnp.asarray(p) for p in ps], jnp.asarray(x)
        t0 = time.perf_counter()
        jout = jax.block_until_ready(jf(jps, jx))
        jfirst = time.perf_counter() - t0
        jper = sw.timeit(lambda: jax.block_until_ready(jf(jps, jx)), min_time=1.0)
        rows.append(("JAX jit", jfirst, jper, float(jout[0])))
        g_grads = [np.asarray(t.asnumpy(), np.float64) for t in out[1]]
        for a, b in zip(g_grads, jout[1]):
            np.testing.assert_allclose(a, np.asarray(b, np.float64), rtol=2e-3, atol=2e-6)
        assert abs(rows[0][3] - rows[1][3]) <= 1e-5 * abs(rows[1][3]), (rows[0][3], rows[1][3])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the tables into docs/performance.md")
    a = ap.parse_args(argv)
    load = sw.load_line()
    gd.set_backend("tvm")
    gd.jit(lambda v: v * 2.0)(gd.Tensor(np.ones(4, np.float32)))  # TVM's one-time start-up
    rng = np.random.default_rng(0)
    xs = rng.standard_normal(SHAPE).astype(np.float32)
    x64 = xs.astype(np.float64)
    try:
        import jax
        jax.config.update("jax_platforms", "cpu")
        import jax.numpy as jnp
        jx = jnp.asarray(xs)
    except ImportError:
        jax = None
    try:
        import torch
        torch.set_num_threads(int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)))
        tx = torch.from_numpy(xs)
    except ImportError:
        torch = None
    rows = []
    for name, (gfn, jmake, tmake, ref) in workloads().items():
        f = gd.jit(gfn)
        gx = gd.Tensor(xs)
        got = np.asarray(f(gx).asnumpy(), np.float64)
        want = ref(x64)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=name)
        g_t = sw.timeit(lambda: f(gx))
        j_t = t_t = float("nan")
        if jax is not None:
            jf = jax.jit(jmake(jax, jnp))
            np.testing.assert_allclose(np.asarray(jf(jx), np.float64), want, rtol=2e-5, atol=2e-6, err_msg=name)
            j_t = sw.timeit(lambda: jax.block_until_ready(jf(jx)))
        if torch is not None and tmake is not None:
            tf = tmake(torch)
            t_t = sw.timeit(lambda: tf(tx))
        n_t = sw.timeit(lambda: ref(xs)) if name not in ("erf", "erfc", "gelu (exact)", "gradient of gelu") \
            or "scipy" in sys.modules else float("nan")
        rows.append((name, g_t, j_t, t_t, n_t))
    lines = [f"Machine: {sw.machine()}; TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', 'unset')}; {load}. "
             "Float32, 256 x 1024 elements; median microseconds per call; ratios graphad / peer (below 1: graphad "
             "faster). NumPy computes in float32 but for the SciPy erf/erfc rows; torch is eager.", "",
             "| workload | graphad | JAX jit | torch | NumPy | /JAX | /torch | /NumPy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def us(t):
        return "" if t != t else f"{t * 1e6:.1f}"

    def ratio(g, p):
        return "" if p != p else f"{g / p:.2f}"
    for name, g, j, t, n in rows:
        lines.append(f"| {name} | {us(g)} | {us(j)} | {us(t)} | {us(n)} | {ratio(g, j)} | {ratio(g, t)} | {ratio(g, n)} |")
    lines += ["", "Gradient of a 2-layer transformer block (value_and_grad of the mean square of its output; "
              f"{B} x {T} tokens, width {D}, {H} heads, exact gelu; graphad's disk cache off; gradients checked "
              "against JAX's):", "", "| framework | first call (s) | per call (ms) | loss |", "|---|---:|---:|---:|"]
    for fw, first, per, val in transformer_rows(rng, jax is not None):
        lines.append(f"| {fw} | {first:.3f} | {per * 1e3:.3f} | {val:.7f} |")
    table = "\n".join(lines)
    print(table)
    if a.write:
        sw.write_doc(table, marker="elementwise", how="`python benchmarks/elementwise.py --write`")


if __name__ == "__main__":
    main()
