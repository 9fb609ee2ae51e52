"""Where a second TVM thread starts to pay: one compiled call with 1 thread and with all of them.

Batch Jacobians (vmap of jacrev of tanh(W x + b), W 33x31) and Jacobians (jacrev, W n x 32) of
growing size are compiled, then each executable's VM function is timed directly (no thread policy
in the way) with its pool set to 1 thread and to `threads.max_threads()`, alternately, the
fastest of several timed loops each. The machine is shared: read ratios near 1 as a tie.

    python benchmarks/thread_crossover.py
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import graphad as gd  # noqa: E402
from graphad import ops  # noqa: E402
from graphad.runtime import cache, threads  # noqa: E402


def forecast(w, b, x):
    """The seed model: tanh(W x + b)."""
    return ops.dense(x, w, b).tanh()


def best_us(fn, args, n: int, loops: int = 7) -> float:
    """Fastest of `loops` timed loops of n calls, microseconds per call."""
    best = float("inf")
    for _ in range(loops):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*args)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    """Print one line per size: elements in and out, us with 1 and with all threads, the ratio."""
    gd.set_backend("tvm")
    rng = np.random.default_rng(0)
    top = threads.max_threads()
    cases = [("batch jacobian", (b, 33, 31)) for b in (4, 8, 16, 32, 64, 128, 256)]
    cases += [("jacobian", (n, 32)) for n in (256, 1024, 2048, 8192)]
    print(f"threads: 1 vs {top}")
    for kind, dims in cases:
        if kind == "batch jacobian":
            b, o, i = dims
            f = gd.vmap(gd.jacrev(forecast, grad_position=2), in_axes=(None, None, 0))
            arrays = (rng.standard_normal((o, i)), rng.standard_normal(o), rng.standard_normal((b, i)))
        else:
            o, i = dims
            f = gd.jacrev(forecast, grad_position=2)
            arrays = (rng.standard_normal((o, i)), rng.standard_normal(o), rng.standard_normal(i))
        args = [gd.Tensor(a.astype(np.float32)) for a in arrays]
        f(*args)
        exe = list(cache._memory.values())[-1]
        dls = [a._dl if a._dl is not None else exe._tensor_arg(a) for a in args]
        one = best_us(exe._fn, dls, 50)
        n = max(20, int(20000 / (one + 5)))
        res = {}
        for k in (1, top, 1, top):
            threads.use(k)
            res[k] = min(res.get(k, float("inf")), best_us(exe._fn, dls, n))
        work = threads._work_elements(exe.meta)
        print(f"{kind} {'x'.join(map(str, dims))}: {work} elements, parallel loop: "
              f"{exe._threads.threads != 0}; 1 thread {res[1]:.1f} us, {top} threads {res[top]:.1f} us, "
              f"ratio {res[top] / res[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
