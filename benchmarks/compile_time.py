"""First-call (compile) time: graphad beside JAX, per workload.

For each workload the first call of a fresh function is timed (trace + transform + compile + run;
graphad with the disk cache off, so it compiles), after each framework's one-time start-up (a
trivial jitted call, paid before any workload). Workloads: the seed workloads of
benchmarks/seed_workloads.py, the digits CNN train step of benchmarks/training.py (forward,
gradient and SGD update), value_and_grad of a width-128 tanh MLP of depth 1, 16 and 64 (batch
32), and the gradient of the 16-state Euler integrator of benchmarks/control_flow.py unrolled by a
Python loop over 10 and 100 steps.

Each framework runs in its own worker process (`--worker`), all workloads one after the other
(graphad's memory cache is cleared between them); the whole set is run `--repeats` times and the
medians are reported, as wall-clock seconds and as CPU seconds (the process and its children:
graphad links each library with the C compiler). The machine this project runs on is a shared
2-vCPU VM, so wall-clock figures vary with its load; CPU seconds vary less.

Usage: python benchmarks/compile_time.py [--repeats N] [--only NAME,...] [--json OUT]
                                         [--baseline BEFORE.json] [--write]
`--json` saves the medians; `--baseline` adds a "before" column from such a file (e.g. a run of
an older checkout); `--write` puts the table into docs/performance.md between the
BENCH:compile_time markers.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
MLP_DEPTHS = (1, 16, 64)
EULER_STEPS = (10, 100)
WORKER_TIMEOUT_S = 1800


def workload_names() -> list[str]:
    """Every workload, in table order."""
    import numpy as np
    sys.path.insert(0, HERE)
    import seed_workloads as sw
    names = [w["name"] for w in sw.make_workloads(np.random.default_rng(0))]
    names.append("CNN train step (digits 8x8, b64)")
    names += [f"MLP value_and_grad width 128 depth {d}" for d in MLP_DEPTHS]
    names += [f"Euler gradient unrolled {n} steps" for n in EULER_STEPS]
    return names


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the C compiler graphad runs)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _mlp_data(depth):
    import numpy as np
    rng = np.random.default_rng(depth)
    ws = [(rng.standard_normal((128, 128)) * 0.1).astype(np.float32) for _ in range(depth)]
    return ws, rng.standard_normal((32, 128)).astype(np.float32)


def graphad_calls(names):
    """{name: a zero-argument callable making the first call} for graphad (fresh functions)."""
    import numpy as np
    import graphad as gd
    from graphad import ops
    import control_flow as cf
    import seed_workloads as sw
    import training as tr
    calls = {}
    for w in sw.make_workloads(np.random.default_rng(0)):
        if w["name"] in names:
            calls[w["name"]] = (lambda w=w: sw.graphad_fn(w["kind"])(*[gd.Tensor(a) for a in w["args"]]))

    def cnn():
        x, y = tr.data("cnn")
        step, _, _ = tr.graphad_train_step("cnn")
        return step(gd.Tensor(x), gd.Tensor(y)).asnumpy()
    calls["CNN train step (digits 8x8, b64)"] = cnn
    for d in MLP_DEPTHS:
        def mlp(d=d):
            ws, x = _mlp_data(d)

            def loss(ws, x):
                h = x
                for w in ws:
                    h = ops.tanh(h @ w)
                return ops.sum(h * h)
            return gd.value_and_grad(loss)([gd.Tensor(w) for w in ws], gd.Tensor(x))
        calls[f"MLP value_and_grad width 128 depth {d}"] = mlp
    for n in EULER_STEPS:
        calls[f"Euler gradient unrolled {n} steps"] = (
            lambda n=n: cf.graphad_unrolled(n)(gd.Tensor(cf.Y0), gd.Tensor(cf.K)))
    return calls


def jax_calls(names):
    """{name: a zero-argument callable making the first call} for JAX jit (fresh functions)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import control_flow as cf
    import seed_workloads as sw
    import training as tr
    calls = {}
    for w in sw.make_workloads(np.random.default_rng(0)):
        if w["name"] in names:
            calls[w["name"]] = (lambda w=w: sw.jax_impl(w["kind"], w["args"])())

    def cnn():
        x, y = tr.data("cnn")
        step, _, init = tr.graphad_train_step("cnn")  # the same initial weights as graphad's
        jstep, init_state = tr.jax_train_step("cnn")
        p = {k: jnp.asarray(v) for k, v in init.items()}
        return jax.block_until_ready(jstep(p, init_state(p), jnp.asarray(x), jnp.asarray(y)))
    calls["CNN train step (digits 8x8, b64)"] = cnn
    for d in MLP_DEPTHS:
        def mlp(d=d):
            ws, x = _mlp_data(d)

            def loss(ws, x):
                h = x
                for w in ws:
                    h = jnp.tanh(h @ w)
                return jnp.sum(h * h)
            return jax.block_until_ready(jax.jit(jax.value_and_grad(loss))([jnp.asarray(w) for w in ws],
                                                                           jnp.asarray(x)))
        calls[f"MLP value_and_grad width 128 depth {d}"] = mlp
    for n in EULER_STEPS:
        def euler(n=n):
            def f(y, k):
                for _ in range(n):
                    y = y + cf.DT * (-k * y + jnp.sin(y))
                return jnp.sum(y ** 2)
            g = jax.jit(jax.grad(f, argnums=(0, 1)))
            return jax.block_until_ready(g(jnp.asarray(cf.Y0), jnp.asarray(cf.K)))
        calls[f"Euler gradient unrolled {n} steps"] = euler
    return calls


def worker(fw: str, names: list[str], cache: str = "off") -> dict:
    """In this process: the first call of each workload, {name: [wall s, CPU s]}. graphad's disk
    cache: `cache` "off" (GRAPHAD_NO_DISK_CACHE, set by `run`), or "fresh": on, as a user has it,
    in a new empty directory for each workload (so that no row finds another row's kernels in the
    kernel cache: each first call compiles, exports, links and stores its library)."""
    import shutil
    import tempfile
    import numpy as np
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    out = {}
    scratch = tempfile.mkdtemp(prefix="graphad-compile-time-") if cache == "fresh" else None
    if scratch:
        os.environ["GRAPHAD_CACHE_DIR"] = os.path.join(scratch, "warm-up")
    if fw == "graphad":
        import graphad as gd
        gd.set_backend("tvm")
        gd.jit(lambda a: a * 2.0)(gd.Tensor(np.ones(4, np.float32)))  # TVM's one-time start-up
        calls = graphad_calls(names)
    else:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_platforms", "cpu")
        jax.block_until_ready(jax.jit(lambda a: a * 2.0)(jnp.ones(4)))
        calls = jax_calls(names)
    for name in names:
        if fw == "graphad":
            gd.cache_clear(disk=False)
            if scratch:
                os.environ["GRAPHAD_CACHE_DIR"] = os.path.join(scratch, str(len(out)))
        c0, t0 = _cpu(), time.perf_counter()
        calls[name]()
        out[name] = [time.perf_counter() - t0, _cpu() - c0]
        print(f"{fw} {name}: {out[name][0]:.3f} s (CPU {out[name][1]:.3f} s)", file=sys.stderr, flush=True)
    if scratch:
        shutil.rmtree(scratch)
    return out


def run(fw: str, names: list[str], cache: str = "off") -> dict:
    """`worker(fw, names, cache)` in a fresh process (graphad's disk cache off, or "fresh": on, in
    an empty directory per workload; either way every workload compiles)."""
    env = dict(os.environ)
    env.pop("GRAPHAD_NO_DISK_CACHE", None)
    if cache == "off":
        env["GRAPHAD_NO_DISK_CACHE"] = "1"
    env.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", fw, "--only", json.dumps(names),
                        "--cache", cache],
                       env=env, stdout=subprocess.PIPE, timeout=WORKER_TIMEOUT_S, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def render(med: dict, names: list[str], baseline: dict | None) -> str:
    """The markdown table: graphad's and JAX's first call (wall, CPU), their ratio, and the
    baseline's graphad figures when given."""
    head = "| workload | graphad (s) | graphad CPU (s) | JAX jit (s) | JAX CPU (s) | graphad/JAX (wall) | graphad/JAX (CPU) |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if baseline:
        head += " graphad before (s) | before CPU (s) | before/JAX (CPU) |"
        sep += "---:|---:|---:|"
    lines = [head, sep]
    for n in names:
        g, j = med["graphad"].get(n), med.get("jax", {}).get(n)
        cells = [n, f"{g[0]:.3f}", f"{g[1]:.3f}"]
        cells += [f"{j[0]:.3f}", f"{j[1]:.3f}", f"{g[0] / j[0]:.1f}", f"{g[1] / j[1]:.1f}"] if j else ["-"] * 4
        if baseline:
            b = baseline.get("graphad", {}).get(n)
            cells += ([f"{b[0]:.3f}", f"{b[1]:.3f}", f"{b[1] / j[1]:.1f}" if j else "-"] if b else ["-"] * 3)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Measure every framework `--repeats` times in worker processes and print (or write) the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=("graphad", "jax"), help=argparse.SUPPRESS)
    ap.add_argument("--only", default="", help="comma-separated substrings of workload names (whole words)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="OUT", help="save the medians to OUT")
    ap.add_argument("--baseline", metavar="BEFORE.json", help="add the graphad columns of an earlier --json run")
    ap.add_argument("--no-jax", action="store_true", help="graphad only")
    ap.add_argument("--cache", choices=("off", "fresh"), default="off",
                    help="graphad's disk cache: off (default), or fresh: on, as a user has it, in an "
                         "empty directory for each workload")
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, json.loads(a.only), a.cache)))
        return
    sys.path.insert(0, ROOT)
    names = workload_names()
    if a.only:
        keys = a.only.split(",")
        names = [n for n in names if any(f" {k} " in f" {n} " for k in keys)]
    fws = ["graphad"] + ([] if a.no_jax else ["jax"])
    runs: dict = {fw: [] for fw in fws}
    for _ in range(a.repeats):
        for fw in fws:
            runs[fw].append(run(fw, names, a.cache))
    med = {fw: {n: [statistics.median(r[n][k] for r in runs[fw]) for k in (0, 1)] for n in names} for fw in fws}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(med, f, indent=1)
    baseline = None
    if a.baseline:
        with open(a.baseline) as f:
            baseline = json.load(f)
    table = render(med, names, baseline)
    table += (f"\n\nMedians of {a.repeats} runs, each framework in its own process per run; first call = "
              f"trace + transform + compile + run after the framework's start-up; graphad's disk cache "
              f"{'off' if a.cache == 'off' else 'on, in an empty directory for each workload'}. "
              f"CPU = process + child processes. Machine: {os.cpu_count()} logical CPUs, "
              f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', os.cpu_count())}.")
    print(table)
    if a.write:
        sys.path.insert(0, HERE)
        import seed_workloads as sw
        sw.write_doc(table, marker="compile_time", how="`python benchmarks/compile_time.py --write`")


if __name__ == "__main__":
    main()
