"""Control flow side by side: graphad's loops (compiled once) against JAX's fori_loop and unrolling.

Measured in one process, one run:
  * compile time (first call, fresh process state, no disk cache) of the gradient of an Euler
    integrator written with gd.fori_loop for 10, 100 and 1000 steps: graphad's compile does not
    grow with the trip count (the issue's goal: 1000 steps within 2x of 10 steps);
  * the Euler gradients: graphad fori_loop with native loops (lowering/native_loop.py: one
    compiled call runs every step) and on the host path (GRAPHAD_NATIVE_LOOPS=0: a compiled call
    per 10 steps, what graphad did before native loops) vs JAX jit(grad(fori_loop)), first call
    and per call; and graphad with the Python loop unrolled (what users had to write before);
  * results checked against float64 finite differences of a NumPy loop first.
Prints a markdown table; with --write replaces the block between the BENCH:control_flow markers
in docs/performance.md (seed_workloads.write_doc, as `make bench` does for its table).

Usage: python benchmarks/control_flow.py [--write]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("GRAPHAD_NO_DISK_CACHE", "1")  # every first call compiles
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import graphad as gd  # noqa: E402
from graphad import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_workloads as sw  # noqa: E402  (timing loop and docs writer shared with make bench)

DT = 0.01
Y0 = np.linspace(0.1, 1.0, 16).astype(np.float32)
K = np.float32(0.5)


def euler_np(y, k, n):
    for _ in range(n):
        y = y + DT * (-k * y + np.sin(y))
    return float(np.sum(y ** 2))


def fd_grad(n):
    y, k = Y0.astype(np.float64), float(K)
    eps = 1e-6
    gy = np.array([(euler_np(y + eps * e, k, n) - euler_np(y - eps * e, k, n)) / (2 * eps) for e in np.eye(16)])
    gk = (euler_np(y, k + eps, n) - euler_np(y, k - eps, n)) / (2 * eps)
    return gy, gk


def graphad_fori(n):
    def f(y, k):
        return ops.sum(gd.fori_loop(0, n, lambda i, y: y + DT * (-k * y + ops.sin(y)), y) ** 2)
    return gd.jit(gd.grad(f, grad_position=(0, 1)))


def graphad_unrolled(n):
    def f(y, k):
        for _ in range(n):
            y = y + DT * (-k * y + ops.sin(y))
        return ops.sum(y ** 2)
    return gd.jit(gd.grad(f, grad_position=(0, 1)))


def jax_fori(n):
    import jax
    import jax.numpy as jnp

    def f(y, k):
        return jnp.sum(jax.lax.fori_loop(0, n, lambda i, y: y + DT * (-k * y + jnp.sin(y)), y) ** 2)
    g = jax.jit(jax.grad(f, argnums=(0, 1)))
    return lambda y, k: jax.block_until_ready(g(y, k))


def measure(make, args, n, check=None, native=None):
    """(first call s, per call s) of make(n) on args; `native` (True/False) compiles graphad's
    loops natively or on the host path (runtime/host.native_loops), None leaves the default."""
    import contextlib
    from graphad.runtime.host import native_loops
    gd.cache_clear(disk=False)  # no region compiled for an earlier row is reused: every first call compiles all
    fn = make(n)
    with native_loops(native) if native is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        out = fn(*args)
        first = time.perf_counter() - t0
    if check is not None:
        check(out, n)
    return first, sw.timeit(lambda: fn(*args))


def check_grads(out, n):
    gy, gk = fd_grad(n)
    got_y, got_k = (np.asarray(o.asnumpy() if hasattr(o, "asnumpy") else o, np.float64) for o in out)
    np.testing.assert_allclose(got_y, gy, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(got_k, gk, rtol=2e-3, atol=1e-4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    a = ap.parse_args()
    load = sw.load_line()
    gd.set_backend("tvm")
    gd.jit(lambda x: x * 2.0)(gd.Tensor(Y0))  # TVM's one-time start-up is not any workload's compile
    ga = (gd.Tensor(Y0), gd.Tensor(K))
    rows = []
    compile_fori = {}
    for n in (10, 100, 1000):
        first, pc = measure(graphad_fori, ga, n, check_grads, native=False)
        rows.append((f"graphad fori_loop, {n} steps, host path (before)", first, pc))
    for n in (10, 100, 1000):
        first, pc = measure(graphad_fori, ga, n, check_grads, native=True)
        compile_fori[n] = first
        rows.append((f"graphad fori_loop, {n} steps, native loop (after)", first, pc))
    try:
        import jax
        jax.config.update("jax_platforms", "cpu")
        import jax.numpy as jnp
        ja = (jnp.asarray(Y0), jnp.asarray(K))
        for n in (10, 100, 1000):
            first, pc = measure(jax_fori, ja, n, check_grads)
            rows.append((f"JAX jit(grad(fori_loop)), {n} steps", first, pc))
    except ImportError:
        rows.append(("JAX (not installed: make bench installs it)", float("nan"), float("nan")))
    first, pc = measure(graphad_unrolled, ga, 10, check_grads)
    rows.append(("graphad, Python loop unrolled, 10 steps", first, pc))
    lines = ["| workload (gradient of a 16-state Euler integrator) | first call (s) | per call (ms) |",
             "|---|---:|---:|"]
    for name, first, pc in rows:
        lines.append(f"| {name} | {first:.3f} | {pc * 1e3:.3f} |")
    ratio = compile_fori[1000] / compile_fori[10]
    lines.append("")
    lines.append(f"graphad compile time (native loops), 1000 steps / 10 steps: {ratio:.2f}x (goal: within 2x). "
                 f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, TVM_NUM_THREADS="
                 f"{os.environ.get('TVM_NUM_THREADS', 'default')}, {load}.")
    table = "\n".join(lines)
    print(table)
    if a.write:
        sw.write_doc(table, marker="control_flow", how="`python benchmarks/control_flow.py --write`")

if __name__ == "__main__":
    main()
