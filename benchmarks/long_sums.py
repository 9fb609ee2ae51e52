"""Long float32 sums and contractions: accuracy and per-call time of graphad's compiled code (whose
long sums are taken in stages, lowering/relax_ops.py `_staged_sum`), the same graphad function
built with one running sum per output (the stages switched off, for comparison), JAX jit and
NumPy, in one process.

The error is the largest relative difference from the float64 result of the same float32 terms,
for two kinds of data: every term 0.1 (or 0.1 * 0.3 for products), whose rounding errors do not
cancel (the worst case of a running sum), and uniform random terms in [0.5, 1.5). Times are
medians of `--calls` calls each, the four alternated.

    python benchmarks/long_sums.py [--calls 20] [--write]   (--write: into docs/performance.md)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (name, shapes of the float32 operands, the function of an array module: graphad.ops, NumPy or
# jax.numpy)
CASES = [
    ("sum over axis 0 of (2^23, 4)", [(1 << 23, 4)], lambda o: lambda x: o.sum(x, 0)),
    ("sum over axis 1 of (4, 2^23)", [(4, 1 << 23)], lambda o: lambda x: o.sum(x, 1)),
    ("sum of all of (2048, 2048)", [(2048, 2048)], lambda o: lambda x: o.sum(x)),
    ("sum over axis 0 of (65536, 64)", [(65536, 64)], lambda o: lambda x: o.sum(x, 0)),
    ("sum of squares over axis 1 of (256, 65537)", [(256, 65537)], lambda o: lambda x: o.sum(x * x, 1)),
    ("sum of squares of (1000003,)", [(1000003,)], lambda o: lambda x: o.sum(x * x)),
    ("sum of exp of (2^22 + 1,)", [((1 << 22) + 1,)], lambda o: lambda x: o.sum(o.exp(x))),
    ("dot of two 2^22 vectors", [(1 << 22,), (1 << 22,)], lambda o: lambda a, b: a @ b),
    ("(64, 65536) @ (65536, 64)", [(64, 65536), (65536, 64)], lambda o: lambda a, b: a @ b),
    ("(8192, 4097) @ a vector", [(8192, 4097), (4097,)], lambda o: lambda a, b: a @ b),
    ("x.T @ y, x (65536, 256), y (65536, 128)", [(65536, 256), (65536, 128)],
     lambda o: lambda a, b: o.transpose(a) @ b),
    ("einsum ij,jk->ik of (8, 50001), (50001, 4)", [(8, 50001), (50001, 4)],
     lambda o: lambda a, b: o.einsum("ij,jk->ik", a, b)),
    ("conv2d weight gradient, x (256, 16, 32, 32), 3x3, 32 channels", [(256, 16, 32, 32), (256, 32, 32, 32)],
     lambda o: _weight_gradient(o)),
]


def _weight_gradient(o):
    """The weight gradient of a 3x3 conv2d with padding 1, as its vjp computes it: the input's
    channels correlated with the cotangent's over the batch and the map (262,144 terms a weight);
    NumPy: an einsum per tap."""
    import numpy as np
    if o is np:
        def wg(x, g):
            xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            h, w = g.shape[2:]
            return np.stack([np.stack([np.einsum("nchw,nohw->oc", xp[:, :, i:i + h, j:j + w], g)
                                       for j in range(3)], -1) for i in range(3)], -2)
        return wg
    if o.__name__ == "jax.numpy":
        import jax
        return lambda x, g: jax.lax.conv_general_dilated(
            o.transpose(x, (1, 0, 2, 3)), o.transpose(g, (1, 0, 2, 3)), (1, 1), ((1, 1), (1, 1))).transpose(1, 0, 2, 3)
    return lambda x, g: o.transpose(o.conv2d(o.transpose(x, (1, 0, 2, 3)), o.transpose(g, (1, 0, 2, 3)), padding=1),
                                    (1, 0, 2, 3))


def _data(shapes, kind, rng):
    import numpy as np
    if kind == "0.1":
        return [np.full(s, 0.1 if i == 0 else 0.3, np.float32) for i, s in enumerate(shapes)]
    return [(rng.random(s) + 0.5).astype(np.float32) for s in shapes]


def _one_sum(f, one: bool):
    """A call of compiled function `f` returning NumPy: with `one`, built and run with the stages
    switched off and under another lowering revision, so that its executable has a cache key of
    its own (the same graph under the stages would otherwise find the other one's)."""
    import graphad.lowering as lowering
    from graphad.lowering import relax_ops

    def call(*a):
        if not one:
            return f(*a).asnumpy()
        real, limits = lowering.lowering_revision, (relax_ops.SUM_STAGED_ABOVE, relax_ops.MATMUL_TERMS_MAX)
        lowering.lowering_revision = lambda: real() + "-one-running-sum"
        relax_ops.SUM_STAGED_ABOVE = relax_ops.MATMUL_TERMS_MAX = 1 << 62
        try:
            return f(*a).asnumpy()
        finally:
            lowering.lowering_revision = real
            relax_ops.SUM_STAGED_ABOVE, relax_ops.MATMUL_TERMS_MAX = limits
    return call


def _median_us(fn, args, calls):
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def run(calls: int) -> str:
    """The markdown table of every case."""
    import numpy as np
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_platforms", "cpu")
    import graphad as gd
    from graphad import ops
    rng = np.random.default_rng(0)
    rows = ["| case | error graphad | one running sum | JAX jit | NumPy | error, random terms: graphad / one sum / JAX / NumPy "
            "| graphad (us) | one running sum (us) | JAX jit (us) | NumPy (us) |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, shapes, make in CASES:
        fns = {"graphad": _one_sum(gd.jit(make(ops), backend="tvm"), False),
               "one": _one_sum(gd.jit(make(ops), backend="tvm"), True)}
        jf = jax.jit(make(jnp))
        fns["jax"] = lambda *a, jf=jf: np.asarray(jax.block_until_ready(jf(*a)))
        fns["numpy"] = make(np)
        errs = {}
        for kind in ("0.1", "random"):
            data = _data(shapes, kind, rng)
            want = np.asarray(make(np)(*[d.astype(np.float64) for d in data]), np.float64)
            ins = {"graphad": [gd.Tensor(d) for d in data], "one": [gd.Tensor(d) for d in data],
                   "jax": [jnp.asarray(d) for d in data], "numpy": data}
            for tag, fn in fns.items():
                got = np.asarray(fn(*ins[tag]), np.float64)
                errs[tag, kind] = float(np.max(np.abs(got - want) / np.abs(want)))
        times = {tag: [] for tag in fns}
        for i in range(calls):
            for tag in (list(fns) if i % 2 else list(fns)[::-1]):
                times[tag].append(_median_us(fns[tag], ins[tag], 1))
        med = {tag: statistics.median(v) for tag, v in times.items()}
        tags = ("graphad", "one", "jax", "numpy")
        rows.append(f"| {name} | " + " | ".join(f"{errs[t, '0.1']:.1e}" for t in tags) + " | "
                    + " / ".join(f"{errs[t, 'random']:.1e}" for t in tags) + " | "
                    + " | ".join(f"{med[t]:.0f}" for t in tags) + " |")
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    os.environ.setdefault("GRAPHAD_NO_DISK_CACHE", "1")
    table = run(a.calls)
    table += (f"\n\nfloat32 terms; error: the largest relative difference from the float64 result of the same "
              f"terms; times: medians of {a.calls} calls, the four alternated. Machine: {os.cpu_count()} logical "
              f"CPUs, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', os.cpu_count())}.")
    print(table)
    if a.write:
        import seed_workloads as sw
        sw.write_doc(table, marker="long_sums", how="`python benchmarks/long_sums.py --write`")


if __name__ == "__main__":
    main()
