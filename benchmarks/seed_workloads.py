"""Seed workloads side by side: graphad (compiled), JAX jit, torch.func and hand-derived NumPy.

`make bench` runs this. Each workload is timed per call (median of several timed loops after a
warm-up) for every implementation available, all in one process and one run; results are checked
against the closed form first. The table (with ratios) is printed and written into
docs/performance.md between the BENCH markers, with the machine it ran on. Also measured: cold
compile time and warm (disk-cache) load time of graphad against JAX's first jit call, and the
machine's memory-write floor for the 33.5 MB Hessian output.

Usage: python benchmarks/seed_workloads.py [--quick] [--no-write] [--only NAME[,NAME]]
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import graphad as gd  # noqa: E402
from graphad import ops  # noqa: E402


def timeit(fn, min_time=0.2, repeats=5):
    """Median seconds per call: warm up, then `repeats` loops of ~min_time/repeats each."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(min_time / repeats / one))
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n)
    return statistics.median(per)


# ---------------------------------------------------------------- workload definitions

def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()


def two_heads(weight, bias, x):
    h = ops.dense(x, weight, bias)
    return h.tanh(), h.sin()


def np_forecast_parts(w, b, x):
    t = np.tanh(w @ x + b)
    return t, 1.0 - t * t


def make_workloads(rng):
    W = []

    def data(dout, din, batch=None):
        w = rng.standard_normal((dout, din)).astype(np.float32)
        b = rng.standard_normal(dout).astype(np.float32)
        x = rng.standard_normal((batch, din) if batch else din).astype(np.float32)
        return w, b, x

    for name, (dout, din), kind in [("jacrev D=16", (16, 16), "jacrev"),
                                    ("jacrev 2048x32", (2048, 32), "jacrev"),
                                    ("jacfwd 2048x32", (2048, 32), "jacfwd"),
                                    ("jacrev 32x2048", (32, 2048), "jacrev"),
                                    ("jacfwd 32x2048", (32, 2048), "jacfwd")]:
        w, b, x = data(dout, din)

        def closed(w=w, b=b, x=x):
            t, d = np_forecast_parts(w, b, x)
            return d[:, None] * w
        W.append(dict(name=name, kind=kind, args=(w, b, x), closed=closed, out_bytes=dout * din * 4))

    w, b, x = data(32, 512)

    def hess_closed(w=w, b=b, x=x):
        t, d = np_forecast_parts(w, b, x)
        return (-2.0 * t * d)[:, None, None] * w[:, :, None] * w[:, None, :]
    W.append(dict(name="hessian 32x512", kind="hessian", args=(w, b, x), closed=hess_closed,
                  out_bytes=32 * 512 * 512 * 4))

    w, b, x = data(33, 31, batch=64)

    def bjac_closed(w=w, b=b, x=x):
        t = np.tanh(x @ w.T + b)
        return (1.0 - t * t)[:, :, None] * w[None]

    def bhess_closed(w=w, b=b, x=x):
        t = np.tanh(x @ w.T + b)
        s = -2.0 * t * (1.0 - t * t)
        return s[:, :, None, None] * w[None, :, :, None] * w[None, :, None, :]
    W.append(dict(name="batch jacobian 64x33x31", kind="batch_jac", args=(w, b, x), closed=bjac_closed,
                  out_bytes=64 * 33 * 31 * 4))
    W.append(dict(name="batch hessian 64x33x31", kind="batch_hess", args=(w, b, x), closed=bhess_closed,
                  out_bytes=64 * 33 * 31 * 31 * 4))

    xv = rng.standard_normal(2048).astype(np.float32)
    vv = rng.standard_normal(2048).astype(np.float32)
    W.append(dict(name="hvp n=2048", kind="hvp", args=(xv, vv), closed=lambda x=xv, v=vv: -np.sin(x) * v,
                  out_bytes=2048 * 4))

    xs = np.array([3.0], np.float32)
    ys = np.array([5.0], np.float32)
    zs = np.array([1.0], np.float32)
    W.append(dict(name="grad seed Net", kind="net", args=(xs, ys, zs),
                  closed=lambda x=xs, y=ys, z=zs: (2 * x * y * z, x * x * z), out_bytes=8))

    # two outputs (jacrev: one Jacobian block per output) and a matrix input (jacfwd w.r.t. W)
    w, b, x = data(512, 64)

    def heads_closed(w=w, b=b, x=x):
        h = w @ x + b
        return (1 - np.tanh(h) ** 2)[:, None] * w, np.cos(h)[:, None] * w
    W.append(dict(name="jacrev 2 heads 512x64", kind="heads_jacrev", args=(w, b, x), closed=heads_closed,
                  out_bytes=2 * 512 * 64 * 4))
    w, b, x = data(128, 32)

    def heads_w_closed(w=w, b=b, x=x):
        h = w @ x + b
        eye = np.eye(128, dtype=np.float32)
        return tuple(d[:, None, None] * eye[:, :, None] * x[None, None, :]
                     for d in (1 - np.tanh(h) ** 2, np.cos(h)))
    W.append(dict(name="jacfwd 2 heads wrt W 128x32", kind="heads_jacfwd_w", args=(w, b, x),
                  closed=heads_w_closed, out_bytes=2 * 128 * 128 * 32 * 4))

    # a training step: value_and_grad of an MLP 784-256-10 (relu, log-softmax cross-entropy) w.r.t.
    # its four parameters, batch 128
    m = dict(W1=(rng.standard_normal((256, 784)) * 0.05).astype(np.float32), b1=np.zeros(256, np.float32),
             W2=(rng.standard_normal((10, 256)) * 0.05).astype(np.float32), b2=np.zeros(10, np.float32),
             x=rng.standard_normal((128, 784)).astype(np.float32),
             t=np.eye(10, dtype=np.float32)[rng.integers(0, 10, 128)])

    def mlp_closed(W1=m["W1"], b1=m["b1"], W2=m["W2"], b2=m["b2"], x=m["x"], t=m["t"]):
        z = x @ W1.T + b1
        h = np.maximum(z, 0)
        logits = h @ W2.T + b2
        e = np.exp(logits - logits.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        loss = -np.mean(np.sum(np.log(p) * t, -1))
        dl = (p - t) / x.shape[0]
        dh = (dl @ W2) * (z > 0)
        return loss, dh.T @ x, dh.sum(0), dl.T @ h, dl.sum(0)
    W.append(dict(name="MLP train step 784-256-10 b128", kind="mlp", args=tuple(m.values()), closed=mlp_closed,
                  out_bytes=4 * (256 * 784 + 256 + 10 * 256 + 10), flops=4 * 128 * 784 * 256 + 6 * 128 * 256 * 10))  # no gradient for x

    a = rng.standard_normal((2048, 32)).astype(np.float32)
    bm = rng.standard_normal((32, 512)).astype(np.float32)
    W.append(dict(name="matmul 2048x32x512", kind="matmul", args=(a, bm), closed=lambda a=a, b=bm: a @ b,
                  out_bytes=2048 * 512 * 4, flops=2 * 2048 * 32 * 512))
    return W


# ---------------------------------------------------------------- implementations

def graphad_fn(kind):
    from graphad import nn
    if kind == "jacrev":
        return gd.jacrev(forecast, grad_position=2)
    if kind == "jacfwd":
        return gd.jacfwd(forecast, grad_position=2)
    if kind == "hessian":
        return gd.hessian(forecast, grad_position=2)
    if kind == "batch_jac":
        return gd.vmap(gd.jacrev(forecast, grad_position=2), in_axes=(None, None, 0))
    if kind == "batch_hess":
        return gd.vmap(gd.hessian(forecast, grad_position=2), in_axes=(None, None, 0))
    if kind == "hvp":
        def hvp(x, v):
            return gd.jvp(gd.grad(lambda x: x.sin().sum()), x, v)[1]
        return gd.jit(hvp)
    if kind == "net":
        class Net(nn.Cell):
            def construct(self, x, y, z):
                return x * x * y * z
        return gd.grad(Net(), grad_position=(0, 1))
    if kind == "heads_jacrev":
        return gd.jacrev(two_heads, grad_position=2)
    if kind == "heads_jacfwd_w":
        return gd.jacfwd(two_heads, grad_position=0)
    if kind == "mlp":
        def loss(W1, b1, W2, b2, x, t):
            h = ops.relu(ops.dense(x, W1, b1))
            return -ops.mean(ops.sum(ops.log_softmax(ops.dense(h, W2, b2), -1) * t, -1))
        vg = gd.value_and_grad(loss, grad_position=(0, 1, 2, 3))
        return lambda *a: (lambda v, g: (v,) + tuple(g))(*vg(*a))
    if kind == "matmul":
        return gd.jit(lambda a, b: a @ b)
    raise KeyError(kind)


def jax_jitted(kind):
    """The workload as a jax.jit function (float32)."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", False)

    def fc(w, b, x):
        return jnp.tanh(x @ w.T + b)
    if kind == "jacrev":
        return jax.jit(jax.jacrev(fc, argnums=2))
    if kind == "jacfwd":
        return jax.jit(jax.jacfwd(fc, argnums=2))
    if kind == "hessian":
        return jax.jit(jax.hessian(fc, argnums=2))
    if kind == "batch_jac":
        return jax.jit(jax.vmap(jax.jacrev(fc, argnums=2), in_axes=(None, None, 0)))
    if kind == "batch_hess":
        return jax.jit(jax.vmap(jax.hessian(fc, argnums=2), in_axes=(None, None, 0)))
    if kind == "hvp":
        return jax.jit(lambda x, v: jax.jvp(jax.grad(lambda x: jnp.sin(x).sum()), (x,), (v,))[1])
    if kind == "net":
        return jax.jit(jax.grad(lambda x, y, z: (x * x * y * z).sum(), argnums=(0, 1)))
    if kind in ("heads_jacrev", "heads_jacfwd_w"):
        def heads(w, b, x):
            h = x @ w.T + b
            return jnp.tanh(h), jnp.sin(h)
        return jax.jit(jax.jacrev(heads, argnums=2) if kind == "heads_jacrev" else jax.jacfwd(heads, argnums=0))
    if kind == "mlp":
        def loss(W1, b1, W2, b2, x, t):
            h = jax.nn.relu(x @ W1.T + b1)
            return -jnp.mean(jnp.sum(jax.nn.log_softmax(h @ W2.T + b2, -1) * t, -1))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    if kind == "matmul":
        return jax.jit(lambda a, b: a @ b)
    raise KeyError(kind)


def jax_impl(kind, args):
    """A call of the jitted workload on device-resident inputs, waited for."""
    import jax
    import jax.numpy as jnp
    f = jax_jitted(kind)
    jargs = [jnp.asarray(a) for a in args]
    return lambda: jax.block_until_ready(f(*jargs))


def torch_impl(kind, args, device="cpu"):
    import torch
    import torch.nn.functional as F
    from torch.func import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, vmap
    torch.set_num_threads(os.cpu_count() or 1)

    def predict(w, b, x):
        return F.linear(x, w, b).tanh()
    targs = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in args]
    if kind == "jacrev":
        return lambda: jacrev(predict, argnums=2)(*targs)
    if kind == "jacfwd":
        return lambda: jacfwd(predict, argnums=2)(*targs)
    if kind == "hessian":
        return lambda: hessian(predict, argnums=2)(*targs)
    if kind == "batch_jac":
        return lambda: vmap(jacrev(predict, argnums=2), in_dims=(None, None, 0))(*targs)
    if kind == "batch_hess":
        return lambda: vmap(hessian(predict, argnums=2), in_dims=(None, None, 0))(*targs)
    if kind == "hvp":
        return lambda: jvp(grad(lambda x: x.sin().sum()), (targs[0],), (targs[1],))[1]
    if kind == "net":
        return lambda: grad(lambda x, y, z: (x * x * y * z).sum(), argnums=(0, 1))(*targs)
    if kind in ("heads_jacrev", "heads_jacfwd_w"):
        def heads(w, b, x):
            h = F.linear(x, w, b)
            return h.tanh(), h.sin()
        if kind == "heads_jacrev":
            return lambda: jacrev(heads, argnums=2)(*targs)
        return lambda: jacfwd(heads, argnums=0)(*targs)
    if kind == "mlp":
        def loss(W1, b1, W2, b2, x, t):
            h = F.linear(x, W1, b1).relu()
            return -(F.log_softmax(F.linear(h, W2, b2), -1) * t).sum(-1).mean()
        return lambda: grad_and_value(loss, argnums=(0, 1, 2, 3))(*targs)
    if kind == "matmul":
        return lambda: targs[0] @ targs[1]


# ---------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def write_floor(nbytes):
    out = np.empty(nbytes // 4, np.float32)
    return timeit(lambda: out.fill(1.0))


@functools.lru_cache(maxsize=None)
def fma_peak():
    """GFLOP/s of benchmarks/fma_peak.c on all CPUs (None where it cannot be built: no cc, not x86)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    src = os.path.join(ROOT, "benchmarks", "fma_peak.c")
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "fma_peak")
        build = subprocess.run(["cc", "-O3", "-funroll-all-loops", "-mavx2", "-mfma", "-fopenmp", src, "-o", exe],
                               capture_output=True, text=True)
        if build.returncode:
            return None
        out = subprocess.run([exe, "200000000"], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 1)))
        return float(out.stdout.strip()) * 1e9 if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def gemm_ceiling(n=2048, repeats=9):
    """FLOP/s of NumPy's BLAS on an n^3 float32 product, fastest of `repeats` (a capability, so
    the best run, not the median, on a shared machine): the machine's practical matmul ceiling."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def fmt_us(t):
    return "n/a" if t is None else (f"{t * 1e6:.1f}" if t < 1e-3 else f"{t * 1e6:.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing loops")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    ap.add_argument("--only", default="", help="comma-separated workload names (substring match)")
    args = ap.parse_args(argv)
    min_time = 0.1 if args.quick else 0.4
    rng = np.random.default_rng(0)
    works = make_workloads(rng)
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        works = [w for w in works if any(k in w["name"] for k in keys)]
    have_jax = have_torch = True
    try:
        import jax  # noqa: F401
    except ImportError:
        have_jax = False
    try:
        import torch  # noqa: F401
    except ImportError:
        have_torch = False
    # graphad's rows first, then the peers': each framework is timed while no other one's thread
    # pool lingers. OpenBLAS, XLA and torch keep their workers spinning for a while after a call,
    # and graphad takes a stalled parallel call as a busy machine and runs single-threaded for a
    # back-off period (runtime/threads.py): timed right after NumPy's product, graphad's matmul
    # 2048x32x512 took 360 us instead of 180 (2 threads, this project's 2-vCPU machine).
    gd_rows = []
    for w in works:
        kind, a = w["kind"], w["args"]
        ref = w["closed"]()
        f = graphad_fn(kind)
        targs = [gd.Tensor(x) for x in a]
        res = f(*targs)
        got = [r.asnumpy() for r in res] if isinstance(res, tuple) else res.asnumpy()
        refs = list(ref) if isinstance(ref, tuple) else ref
        ok = all(np.allclose(g, r, rtol=2e-3, atol=2e-5) for g, r in zip(got, refs)) if isinstance(ref, tuple) \
            else np.allclose(got, ref, rtol=2e-3, atol=2e-5)
        gd_rows.append((ok, timeit(lambda: f(*targs), min_time)))
    rows = []
    for w, (ok, t_gd) in zip(works, gd_rows):
        kind, a = w["kind"], w["args"]
        closed = w["closed"]
        t_np = timeit(closed, min_time)
        t_jax = timeit(jax_impl(kind, a), min_time) if have_jax else None
        t_torch = timeit(torch_impl(kind, a), min_time) if have_torch else None
        floor = write_floor(w["out_bytes"]) if kind == "hessian" else None
        rows.append(dict(name=w["name"], ok=ok, gd=t_gd, np=t_np, jax=t_jax, torch=t_torch, floor=floor,
                         flops=w.get("flops"), ceiling=gemm_ceiling() if w.get("flops") else None,
                         peak=fma_peak() if w.get("flops") else None))
        print(f"{w['name']:<26} graphad {fmt_us(t_gd):>8} us  numpy {fmt_us(t_np):>8} us  jax {fmt_us(t_jax):>8} us  "
              f"torch {fmt_us(t_torch):>8} us  {'ok' if ok else 'WRONG'}", flush=True)
    compile_rows = measure_compile(have_jax)
    table = render(rows, compile_rows)
    print(table)
    if not args.no_write:
        write_doc(table)


def measure_compile(have_jax):
    """Cold compile (empty disk cache, fresh process) and warm load (disk cache) vs JAX's first call."""
    code = r"""
import os, sys, time, numpy as np
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import graphad as gd
from graphad import ops
def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()
rng = np.random.default_rng(0)
w = gd.Tensor(rng.standard_normal((2048, 32)).astype(np.float32)); b = gd.Tensor(rng.standard_normal(2048).astype(np.float32)); x = gd.Tensor(rng.standard_normal(32).astype(np.float32))
t1 = time.perf_counter()
gd.jacrev(forecast, grad_position=2)(w, b, x)
t2 = time.perf_counter()
print(f"{{t2 - t1:.4f}} {{t1 - t0:.4f}}")
"""
    jcode = r"""
import time, numpy as np
t0 = time.perf_counter()
import jax, jax.numpy as jnp
rng = np.random.default_rng(0)
w = jnp.asarray(rng.standard_normal((2048, 32)).astype(np.float32)); b = jnp.asarray(rng.standard_normal(2048).astype(np.float32)); x = jnp.asarray(rng.standard_normal(32).astype(np.float32))
f = jax.jit(jax.jacrev(lambda w, b, x: jnp.tanh(x @ w.T + b), argnums=2))
t1 = time.perf_counter()
jax.block_until_ready(f(w, b, x))
t2 = time.perf_counter()
print(f"{{t2 - t1:.4f}} {{t1 - t0:.4f}}")
"""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, GRAPHAD_CACHE_DIR=d)
        for label in ("graphad cold (empty cache)", "graphad warm (disk cache)"):
            out = subprocess.run([sys.executable, "-c", code.format(root=ROOT)], env=env, capture_output=True,
                                 text=True)
            if out.returncode:
                rows.append((label, None, None))
                print(out.stderr[-2000:])
                continue
            first, imp = (float(v) for v in out.stdout.split()[-2:])
            rows.append((label, first, imp))
    if have_jax:
        out = subprocess.run([sys.executable, "-c", jcode.format()], capture_output=True, text=True)
        if out.returncode == 0:
            first, imp = (float(v) for v in out.stdout.split()[-2:])
            rows.append(("JAX jit first call", first, imp))
    return rows


def render(rows, compile_rows) -> str:
    lines = [f"Machine: {machine()}. TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}. "
             f"Median time per call in microseconds (lower is better); ratios are graphad / peer "
             f"(below 1 means graphad is faster).", "",
             "| workload | graphad | JAX jit | torch.func | NumPy closed form | graphad/JAX | graphad/torch | "
             "graphad/closed form | correct |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        def ratio(p):
            return "n/a" if p is None else f"{r['gd'] / p:.2f}"
        lines.append(f"| {r['name']} | {fmt_us(r['gd'])} | {fmt_us(r['jax'])} | {fmt_us(r['torch'])} | "
                     f"{fmt_us(r['np'])} | {ratio(r['jax'])} | {ratio(r['torch'])} | {ratio(r['np'])} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    floors = [r for r in rows if r["floor"] is not None]
    for r in floors:
        lines.append("")
        lines.append(f"Memory-write floor for the {r['name']} output (fill of 33.5 MB, same run): "
                     f"{fmt_us(r['floor'])} us; graphad / floor = {r['gd'] / r['floor']:.2f}.")
    for r in rows:
        if r.get("flops"):
            def gf(t):
                return "n/a" if t is None else f"{r['flops'] / t / 1e9:.0f}"
            lines.append("")
            lines.append(f"FLOP rate of {r['name']} (GFLOP/s): graphad {gf(r['gd'])}, JAX jit {gf(r['jax'])}, "
                         f"torch {gf(r['torch'])}, NumPy {gf(r['np'])} (medians); NumPy's BLAS on a 2048^3 float32 "
                         f"product in the same run, fastest of 9: {r['ceiling'] / 1e9:.0f}; the CPUs' peak FMA "
                         f"rate (benchmarks/fma_peak.c, all threads): {'n/a' if r['peak'] is None else round(r['peak'] / 1e9)}.")
    lines += ["", "| first call of jacrev 2048x32 in a fresh process | seconds | import seconds |", "|---|---:|---:|"]
    for label, first, imp in compile_rows:
        lines.append(f"| {label} | {'failed' if first is None else f'{first:.3f}'} | "
                     f"{'' if imp is None else f'{imp:.2f}'} |")
    return "\n".join(lines)


def load_line() -> str:
    """The machine's state, stated beside the figures (a shared machine slows every row)."""
    try:
        return "load average %.2f, %.2f, %.2f before the run" % os.getloadavg()
    except OSError:
        return "load average unknown"


def write_doc(table: str, marker: str = "seed_workloads", how: str = "`make bench`"):
    """Replace the text between docs/performance.md's BENCH:<marker> comments with `table`."""
    path = os.path.join(ROOT, "docs", "performance.md")
    begin, end = f"<!-- BENCH:{marker} BEGIN -->", f"<!-- BENCH:{marker} END -->"
    text = open(path).read() if os.path.exists(path) else "# Performance\n\n" + begin + "\n" + end + "\n"
    if begin not in text:
        text += "\n" + begin + "\n" + end + "\n"
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    stamp = time.strftime("%Y-%m-%d")
    text = pre + begin + f"\nRun of {stamp} ({how}):\n\n" + table + "\n" + end + post
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
