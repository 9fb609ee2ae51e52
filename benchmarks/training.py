"""Training steps side by side: graphad (compiled through TVM) vs JAX jit vs torch eager.

Three workloads, each from the same initial weights in all frameworks (graphad's, copied out):
  * CNN train step: the small digits CNN (input (64, 1, 8, 8), 10 classes, integer labels),
    Conv2d(1,16,3,'same') ReLU MaxPool2 Conv2d(16,32,3,'same') ReLU MaxPool2 Flatten Dense(128,64)
    ReLU Dense(64,10), softmax cross-entropy, SGD momentum 0.9 lr 0.05: forward, backward and
    update in one call (graphad: nn.TrainOneStepCell; JAX: one jit of the whole step; torch:
    zero_grad, backward, optimizer.step);
  * MLP train step: 784-256-256-10 with ReLU, batch 128, cross-entropy, Adam lr 1e-3;
  * transformer block forward+backward: value_and_grad of sum(block(x)^2) w.r.t. all 16 weights,
    pre-LayerNorm (written from mean/rsqrt), 4-head self-attention with softmax, MLP 128-512-128
    with tanh-GELU, residuals; batch 8, seq 128, d_model 128.
Before timing, each framework's first call is checked against graphad's: the losses (rtol 1e-4)
and the parameters after one step (train steps) or the gradients (transformer block).

Measured per workload and framework: the first call of a fresh function in the same process
(trace + compile + run; graphad with an empty GRAPHAD_CACHE_DIR and its memory cache cleared, so
nothing compiled earlier is reused; TVM's, XLA's and torch's one-time start-up is paid before by a
trivial call), and the median time per call after warm-up (seed_workloads.timeit). Each thread
count runs in its own subprocess: 1 thread (TVM_NUM_THREADS=1, XLA_FLAGS
--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1, torch.set_num_threads(1)) and
2 threads (TVM_NUM_THREADS=2, intra_op_parallelism_threads=2, torch.set_num_threads(2)); the
process is also pinned to that many CPUs (`pin_to_cpus`), since XLA's thread flags do not bound
its threads.

torch.compile is left out: see TORCH_COMPILE_NOTE. Peak memory is not measured:
benchmarks/seed_workloads.py has no memory measurement to share.

The table is printed and written into docs/performance.md between the BENCH:training markers
(seed_workloads.write_doc).

Usage: python benchmarks/training.py [--quick] [--no-write] [--threads 1,2] [--only cnn,mlp,transformer]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

WORKLOADS = ("cnn", "mlp", "transformer")
TITLES = {"cnn": "CNN train step (digits 8x8, b64, SGD momentum)",
          "mlp": "MLP train step (784-256-256-10, b128, Adam)",
          "transformer": "transformer block fwd+bwd (b8, seq 128, d 128, 4 heads)"}
FRAMEWORKS = ("graphad", "jax", "torch")
COMPILE_LIMIT_S = 120.0  # a graphad first call beyond this is reported as a failure
TORCH_COMPILE_NOTE = ("torch.compile is left out: it works on this CPU (inductor, C++ codegen), but its first "
                      "call of the MLP Adam step alone took 33 s (torch 2.13, 2 loaded vCPUs), too slow to "
                      "run for every row; the torch column is eager PyTorch.")

# workload sizes
CNN_B, MLP_B = 64, 128
TB, TS, TD, TH, TF = 8, 128, 128, 4, 512
LN_EPS = 1e-5


def thread_env(n: int) -> dict:
    """The environment of a worker running every framework on `n` threads."""
    env = dict(os.environ)
    env["TVM_NUM_THREADS"] = str(n)
    env["OMP_NUM_THREADS"] = str(n)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads"))]
    flags += [f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}", f"intra_op_parallelism_threads={n}"]
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("GRAPHAD_NO_DISK_CACHE", None)
    return env


# ---------------------------------------------------------------- data and graphad models

def data(kind):
    rng = np.random.default_rng({"cnn": 1, "mlp": 2, "transformer": 3}[kind])
    if kind == "cnn":
        return rng.standard_normal((CNN_B, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, CNN_B).astype(np.int32)
    if kind == "mlp":
        return rng.standard_normal((MLP_B, 784)).astype(np.float32), rng.integers(0, 10, MLP_B).astype(np.int32)
    return rng.standard_normal((TB, TS, TD)).astype(np.float32), None


def graphad_train_step(kind):
    """(TrainOneStepCell, {name: initial weight}) for the cnn or mlp workload."""
    import graphad as gd
    from graphad import nn, ops
    gd.set_seed(0)
    if kind == "cnn":
        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731  (MindSpore's stride defaults to 1)
        net = nn.SequentialCell(nn.Conv2d(1, 16, 3, pad_mode="same"), nn.ReLU(), pool(),
                                nn.Conv2d(16, 32, 3, pad_mode="same"), nn.ReLU(), pool(), nn.Flatten(),
                                nn.Dense(32 * 2 * 2, 64), nn.ReLU(), nn.Dense(64, 10))
        opt = nn.SGD(net.trainable_params(), 0.05, momentum=0.9)
    else:
        net = nn.SequentialCell(nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 256), nn.ReLU(), nn.Dense(256, 10))
        opt = nn.Adam(net.trainable_params(), 1e-3)
    init = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt)
    return step, net, init


TF_NAMES = ("g1", "be1", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "g2", "be2", "w1", "c1", "w2", "c2")


def transformer_init():
    """The block's 16 weights (x @ W layout), drawn once; every framework gets these arrays."""
    rng = np.random.default_rng(4)

    def lin(i, o):
        b = 1.0 / math.sqrt(i)
        return rng.uniform(-b, b, (i, o)).astype(np.float32), rng.uniform(-b, b, o).astype(np.float32)
    w = {"g1": (1.0 + 0.1 * rng.standard_normal(TD)).astype(np.float32),
         "be1": (0.1 * rng.standard_normal(TD)).astype(np.float32)}
    for n in "qkvo":
        w["w" + n], w["b" + n] = lin(TD, TD)
    w["g2"] = (1.0 + 0.1 * rng.standard_normal(TD)).astype(np.float32)
    w["be2"] = (0.1 * rng.standard_normal(TD)).astype(np.float32)
    w["w1"], w["c1"] = lin(TD, TF)
    w["w2"], w["c2"] = lin(TF, TD)
    return w


def block_fn(lib):
    """The transformer block's loss written once over a tiny op table (graphad ops, jnp, torch)."""
    mean, rsqrt, matmul, softmax, gelu, reshape, swap = (lib[k] for k in
                                                         ("mean", "rsqrt", "matmul", "softmax", "gelu", "reshape",
                                                          "swap"))

    def layer_norm(x, g, b):
        mu = mean(x, -1)
        xc = x - mu
        return xc * rsqrt(mean(xc * xc, -1) + LN_EPS) * g + b

    def heads(t):  # (B, S, D) -> (B, H, S, D/H)
        return swap(reshape(t, (TB, TS, TH, TD // TH)), 1, 2)

    def loss(g1, be1, wq, bq, wk, bk, wv, bv, wo, bo, g2, be2, w1, c1, w2, c2, x):
        h = layer_norm(x, g1, be1)
        q, k, v = heads(matmul(h, wq) + bq), heads(matmul(h, wk) + bk), heads(matmul(h, wv) + bv)
        a = softmax(matmul(q, swap(k, 2, 3)) * (1.0 / math.sqrt(TD // TH)))
        o = reshape(swap(matmul(a, v), 1, 2), (TB, TS, TD))
        x = x + matmul(o, wo) + bo
        h = layer_norm(x, g2, be2)
        x = x + matmul(gelu(matmul(h, w1) + c1), w2) + c2
        return lib["sum"](x * x)
    return loss


def graphad_block():
    import graphad as gd
    from graphad import ops
    lib = dict(mean=lambda x, a: ops.mean(x, a, keepdims=True), rsqrt=ops.rsqrt, matmul=ops.matmul,
               softmax=lambda x: ops.softmax(x, -1), gelu=lambda x: ops.gelu(x, approximate="tanh"),
               reshape=ops.reshape, swap=ops.swapaxes, sum=ops.sum)
    return gd.value_and_grad(block_fn(lib), grad_position=tuple(range(len(TF_NAMES))))


# ---------------------------------------------------------------- JAX

def jax_cnn_apply(p, x):
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv(h, w):
        return lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = pool(jax.nn.relu(conv(x, p["0.weight"])))
    h = pool(jax.nn.relu(conv(h, p["3.weight"])))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ p["7.weight"].T + p["7.bias"])
    return h @ p["9.weight"].T + p["9.bias"]


def jax_mlp_apply(p, x):
    import jax
    h = jax.nn.relu(x @ p["0.weight"].T + p["0.bias"])
    h = jax.nn.relu(h @ p["2.weight"].T + p["2.bias"])
    return h @ p["4.weight"].T + p["4.bias"]


def jax_train_step(kind):
    """A jitted (params, state, x, y) -> (params, state, loss) and the initial optimizer state maker."""
    import jax
    import jax.numpy as jnp
    apply = jax_cnn_apply if kind == "cnn" else jax_mlp_apply

    def loss_fn(p, x, y):
        logp = jax.nn.log_softmax(apply(p, x), -1)
        return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 10, dtype=logp.dtype) * logp, -1))

    tm = jax.tree_util.tree_map
    if kind == "cnn":
        def step(p, s, x, y):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            v = tm(lambda v, g: 0.9 * v + g, s, g)
            return tm(lambda p, v: p - 0.05 * v, p, v), v, loss

        def init_state(p):
            return tm(jnp.zeros_like, p)
    else:
        b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

        def step(p, s, x, y):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            m, v, t = s
            t = t + 1
            m = tm(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = tm(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            tf = t.astype(jnp.float32)
            c1, c2 = 1 - b1 ** tf, 1 - b2 ** tf
            p = tm(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
            return p, (m, v, t), loss

        def init_state(p):
            return tm(jnp.zeros_like, p), tm(jnp.zeros_like, p), jnp.zeros((), jnp.int32)
    return jax.jit(step), init_state


def jax_block():
    import jax
    import jax.numpy as jnp
    lib = dict(mean=lambda x, a: jnp.mean(x, a, keepdims=True), rsqrt=jax.lax.rsqrt, matmul=jnp.matmul,
               softmax=lambda x: jax.nn.softmax(x, -1), gelu=lambda x: jax.nn.gelu(x, approximate=True),
               reshape=jnp.reshape, swap=jnp.swapaxes, sum=jnp.sum)
    return jax.jit(jax.value_and_grad(block_fn(lib), argnums=tuple(range(len(TF_NAMES)))))


# ---------------------------------------------------------------- torch (eager)

def torch_train_step(kind, init):
    import torch
    import torch.nn.functional as F
    tn = torch.nn
    if kind == "cnn":
        class Pool(tn.Module):
            def forward(self, x):
                return F.max_pool2d(x, 2)
        net = tn.Sequential(tn.Conv2d(1, 16, 3, padding="same", bias=False), tn.ReLU(), Pool(),
                            tn.Conv2d(16, 32, 3, padding="same", bias=False), tn.ReLU(), Pool(), tn.Flatten(),
                            tn.Linear(128, 64), tn.ReLU(), tn.Linear(64, 10))
    else:
        net = tn.Sequential(tn.Linear(784, 256), tn.ReLU(), tn.Linear(256, 256), tn.ReLU(), tn.Linear(256, 10))
    sd = net.state_dict()
    assert set(sd) == set(init), (sorted(sd), sorted(init))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()})
    opt = (torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) if kind == "cnn"
           else torch.optim.Adam(net.parameters(), lr=1e-3))

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss
    return step, net


def torch_block():
    import torch
    import torch.nn.functional as F
    lib = dict(mean=lambda x, a: x.mean(a, keepdim=True), rsqrt=torch.rsqrt, matmul=torch.matmul,
               softmax=lambda x: torch.softmax(x, -1), gelu=lambda x: F.gelu(x, approximate="tanh"),
               reshape=torch.reshape, swap=torch.swapaxes, sum=torch.sum)
    f = block_fn(lib)

    def vg(*args):
        ws = args[:-1]
        loss = f(*args)
        return loss, torch.autograd.grad(loss, ws)
    return vg


# ---------------------------------------------------------------- one worker: one thread count

def close(name, got, want, rtol=1e-4, atol=0.0):
    """Max |got - want| / (atol + rtol |want|) over all arrays; <= 1 passes."""
    worst = 0.0
    for g, w in zip(got, want):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            raise AssertionError(f"{name}: shape {g.shape} vs {w.shape}")
        worst = max(worst, float(np.max(np.abs(g - w) / (atol + rtol * np.abs(w) + 1e-300))))
    return worst


def params_check(after, ref, lr):
    """Parameters after one step against graphad's; <= 1 passes. Every entry within rtol 1e-4 with
    an absolute floor of 1e-4 x lr, except at most 0.1% of the entries, which must be within 0.05 x lr:
    Adam's first step moves a weight by lr * g / (|g| + eps), so where |g| is rounding noise
    (~1e-9, comparable to eps = 1e-8) the step is noise too; JAX and torch differ from each other
    there by up to 0.02 x lr."""
    n_bad = total = 0
    loose = 0.0
    for a, b in zip(after, ref):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"parameter shape {a.shape} vs {b.shape}")
        d = np.abs(a - b)
        n_bad += int(np.sum(d > 1e-4 * lr + 1e-4 * np.abs(b)))
        total += a.size
        loose = max(loose, float(np.max(d)) / (0.05 * lr))
    return max(loose, n_bad / (1e-3 * total))


def run_workload(kind, fws, min_time, repeats, timeit, log):
    """{framework: {first, per_call, loss, check}} for one workload."""
    import graphad as gd
    res = {}
    x, y = data(kind)
    ref_loss = ref_after = None
    lr_scale = {"cnn": 0.05, "mlp": 1e-3}.get(kind)
    for fw in fws:
        r = res[fw] = {}
        try:
            if kind in ("cnn", "mlp"):
                if fw == "graphad":
                    gd.cache_clear(disk=False)
                    step, net, init = graphad_train_step(kind)
                    names = list(init)
                    gx, gy = gd.Tensor(x), gd.Tensor(y)
                    call = lambda: step(gx, gy)  # noqa: E731
                    t0 = time.perf_counter()
                    loss = float(call().asnumpy())
                    r["first"] = time.perf_counter() - t0
                    after = [p.asnumpy().copy() for p in net.trainable_params()]
                    ref_loss, ref_after, ref_init = loss, after, init
                    per = lambda: call()  # noqa: E731
                elif fw == "jax":
                    import jax
                    import jax.numpy as jnp
                    jstep, init_state = jax_train_step(kind)
                    p = {k: jnp.asarray(v) for k, v in ref_init.items()}
                    s = init_state(p)
                    jx, jy = jnp.asarray(x), jnp.asarray(y)
                    t0 = time.perf_counter()
                    p1, s1, loss = jax.block_until_ready(jstep(p, s, jx, jy))
                    r["first"] = time.perf_counter() - t0
                    loss = float(loss)
                    after = [np.asarray(p1[k]) for k in names]
                    st = [p1, s1]

                    def per():
                        st[0], st[1], lo = jax.block_until_ready(jstep(st[0], st[1], jx, jy))
                else:
                    import torch
                    tstep, tnet = torch_train_step(kind, ref_init)
                    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
                    t0 = time.perf_counter()
                    loss = float(tstep(tx, ty).detach())
                    r["first"] = time.perf_counter() - t0
                    sd = tnet.state_dict()
                    after = [sd[k].detach().numpy().copy() for k in names]
                    per = lambda: tstep(tx, ty)  # noqa: E731
                r["loss"] = loss
                r["loss_check"] = close("loss", [loss], [ref_loss])
                r["param_check"] = params_check(after, ref_after, lr_scale)
            else:
                w = transformer_init()
                if fw == "graphad":
                    gd.cache_clear(disk=False)
                    f = graphad_block()
                    args = [gd.Tensor(w[n]) for n in TF_NAMES] + [gd.Tensor(x)]
                    t0 = time.perf_counter()
                    loss, grads = f(*args)
                    r["first"] = time.perf_counter() - t0
                    loss, grads = float(loss.asnumpy()), [g.asnumpy() for g in grads]
                    ref_loss, ref_after = loss, grads
                    per = lambda: f(*args)  # noqa: E731
                elif fw == "jax":
                    import jax
                    import jax.numpy as jnp
                    f = jax_block()
                    args = [jnp.asarray(w[n]) for n in TF_NAMES] + [jnp.asarray(x)]
                    t0 = time.perf_counter()
                    loss, grads = jax.block_until_ready(f(*args))
                    r["first"] = time.perf_counter() - t0
                    loss, grads = float(loss), [np.asarray(g) for g in grads]
                    per = lambda: jax.block_until_ready(f(*args))  # noqa: E731
                else:
                    import torch
                    f = torch_block()
                    args = [torch.from_numpy(w[n].copy()).requires_grad_() for n in TF_NAMES] + [torch.from_numpy(x)]
                    t0 = time.perf_counter()
                    loss, grads = f(*args)
                    r["first"] = time.perf_counter() - t0
                    loss, grads = float(loss.detach()), [g.numpy() for g in grads]
                    per = lambda: f(*args)  # noqa: E731
                r["loss"] = loss
                r["loss_check"] = close("loss", [loss], [ref_loss])
                # gradients: max|g - ref| within 1e-4 of each gradient's largest entry, and at least
                # 1e-6 of the largest entry of all (the rounding noise of bk's gradient, which is zero
                # in exact arithmetic: a key bias shifts every score of a row alike)
                top = max(float(np.max(np.abs(rg))) for rg in ref_after)
                r["param_check"] = max(float(np.max(np.abs(np.asarray(g, np.float64) - rg)))
                                       / max(1e-4 * float(np.max(np.abs(rg))), 1e-6 * top)
                                       for g, rg in zip(grads, ref_after))
            r["per_call"] = timeit(per, min_time, repeats)
            log(f"  {kind:<11} {fw:<7} first {r['first']:8.3f} s  per call {r['per_call'] * 1e3:9.3f} ms  "
                f"loss {r['loss']:.6g}  loss check {r['loss_check']:.2g}  params/grads check {r['param_check']:.2g}")
        except Exception as e:  # reported in the table and on stderr, never hidden
            traceback.print_exc()
            r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"  {kind:<11} {fw:<7} FAILED {r['error']}")
            if fw == "graphad" and ref_loss is None:
                log(f"  {kind}: no graphad reference; skipping the other frameworks")
                break
    return res


def pin_to_cpus(n: int) -> None:
    """Keep this process on `n` of the CPUs it may use (all frameworks alike): XLA runs a large
    dot on more threads than intra_op_parallelism_threads=1 asks for (a 1024x128x512 product's
    process CPU time was 1.28x its wall time, measured), so the thread flags alone do not make a
    one-thread comparison."""
    cpus = sorted(os.sched_getaffinity(0))
    if n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])


def worker(args):
    pin_to_cpus(args.worker)
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    import seed_workloads as sw  # timing loop shared with make bench

    import graphad as gd
    gd.set_backend("tvm")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    fws = list(FRAMEWORKS)
    # one-time start-ups, paid before any workload's first call
    gd.jit(lambda a: a * 2.0)(gd.Tensor(np.ones(4, np.float32)))
    try:
        import jax
        import jax.numpy as jnp
        jax.block_until_ready(jax.jit(lambda a: a * 2.0)(jnp.ones(4)))
    except ImportError:
        fws.remove("jax")
    try:
        import torch
        torch.set_num_threads(args.worker)
        torch.ones(4) * 2.0
    except ImportError:
        fws.remove("torch")
    min_time, repeats = (0.05, 3) if args.quick else (1.0, 7)
    out = {}
    for kind in args.only:
        out[kind] = run_workload(kind, fws, min_time, repeats, sw.timeit, log)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------- driver

def fmt_ms(r):
    return "n/a" if r is None or "per_call" not in r else f"{r['per_call'] * 1e3:.2f}"


def fmt_s(r):
    return "n/a" if r is None or "first" not in r else f"{r['first']:.2f}"


def ratio(a, b):
    if a is None or b is None or "per_call" not in a or "per_call" not in b:
        return "n/a"
    return f"{a['per_call'] / b['per_call']:.2f}"


def render(results, threads, quick):
    sys.path.insert(0, HERE)
    import seed_workloads as sw
    lines = [f"Machine: {sw.machine()}. Per call: median milliseconds after warm-up (lower is better); "
             f"ratios are graphad / peer (below 1: graphad is faster). First call: seconds for the first "
             f"call of a fresh function in the same process (trace + compile + run; torch eager has no "
             f"compile).{' QUICK RUN (few repeats): not for comparison.' if quick else ''}", "",
             "| workload | threads | graphad (ms) | JAX jit (ms) | torch eager (ms) | graphad/JAX | graphad/torch | "
             "first call graphad (s) | JAX (s) | torch (s) | agree |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    problems = []
    for kind in WORKLOADS:
        for n in threads:
            res = results.get(n, {}).get(kind)
            if res is None:
                continue
            g, j, t = (res.get(fw) for fw in FRAMEWORKS)
            agree = "yes"
            for fw, r in res.items():
                if r.get("error"):
                    agree = "NO"
                    problems.append(f"{TITLES[kind]}, {n} thread(s), {fw}: failed: {r['error']}")
                elif fw != "graphad" and (r["loss_check"] > 1 or r["param_check"] > 1):
                    agree = "NO"
                    problems.append(f"{TITLES[kind]}, {n} thread(s): {fw} disagrees with graphad (loss "
                                    f"{r['loss_check']:.2g}, parameters/gradients {r['param_check']:.2g} of the "
                                    f"tolerance)")
            if g and g.get("first", 0) > COMPILE_LIMIT_S:
                problems.append(f"{TITLES[kind]}, {n} thread(s): graphad's first call took {g['first']:.0f} s "
                                f"(over {COMPILE_LIMIT_S:.0f} s)")
            lines.append(f"| {TITLES[kind]} | {n} | {fmt_ms(g)} | {fmt_ms(j)} | {fmt_ms(t)} | {ratio(g, j)} | "
                         f"{ratio(g, t)} | {fmt_s(g)} | {fmt_s(j)} | {fmt_s(t)} | {agree} |")
    lines += ["", "Agree: losses within rtol 1e-4 of graphad's, and the parameters after one step (train steps: "
              "rtol 1e-4 with an absolute floor of 1e-4 x lr, except at most 0.1% of the entries within 0.05 x lr, "
              "where Adam's first step divides a gradient of rounding-noise size by itself plus eps) or the "
              "gradients (transformer block: max abs difference within 1e-4 of each gradient's largest entry, "
              "at least 1e-6 of the largest of all, as the key bias's gradient is zero up to rounding), all "
              "from graphad's initial weights. " + TORCH_COMPILE_NOTE]
    for p in problems:
        lines.append("")
        lines.append(f"**Problem:** {p}")
    return "\n".join(lines), problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (a smoke run; numbers are not comparable)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/performance.md")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, one subprocess each")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads: cnn, mlp, transformer")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in args.only if k not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose from {WORKLOADS}")
    if args.worker is not None:
        return worker(args)
    threads = [int(n) for n in args.threads.split(",")]
    results = {}
    for n in threads:
        print(f"--- {n} thread(s)", flush=True)
        with tempfile.TemporaryDirectory(prefix="graphad-bench-cache-") as cache:
            env = thread_env(n)
            env["GRAPHAD_CACHE_DIR"] = cache  # empty: every graphad first call compiles
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--only", ",".join(args.only)]
            if args.quick:
                cmd.append("--quick")
            proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"worker for {n} thread(s) failed (exit {proc.returncode})", file=sys.stderr)
            results[n] = {k: {"graphad": {"error": f"worker exited {proc.returncode}"}} for k in args.only}
            continue
        results[n] = json.loads(line[-1][len("RESULT "):])
    table, problems = render(results, threads, args.quick)
    print(table)
    if not args.no_write:
        sys.path.insert(0, HERE)
        import seed_workloads as sw
        sw.write_doc(table, marker="training", how="`python benchmarks/training.py`")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
