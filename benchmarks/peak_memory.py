"""Peak memory of a compiled train step: graphad beside JAX jit (issue 14).

Each framework runs in a fresh process with one thread: it builds the step (benchmarks/training.py's
digits CNN, batch 64, SGD with momentum; and the MLP with Adam), compiles it and runs 3 warm-up
steps. Then the kernel's high-water mark of resident memory is reset (`/proc/self/clear_refs`,
value 5: VmHWM := VmRSS), 20 more steps run, and the growth is VmHWM minus the resident size
before those steps: the memory a step takes beyond what the process already holds (parameters,
optimizer state, workspaces of earlier steps, compiled code, the framework itself). Also printed:
the resident size after the warm-up and the process's peak up to then (compile included), for
graphad once compiling (GRAPHAD_NO_DISK_CACHE=1) and once loading the step from its disk cache
(runtime only: no compiler in the process). Linux only.

Usage: python benchmarks/peak_memory.py [--write]   (--write replaces the BENCH:peak_memory block
of docs/performance.md)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, os, sys
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import numpy as np
import training as T

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {key} in /proc/self/status")

fw, kind = sys.argv[1], sys.argv[2]
x, y = T.data(kind)
if fw == "graphad":
    import graphad as gd
    step, net, init = T.graphad_train_step(kind)
    gx, gy = gd.Tensor(x), gd.Tensor(y)
    run = lambda: step(gx, gy).asnumpy()
else:
    import jax, jax.numpy as jnp
    _, _, init = T.graphad_train_step(kind)   # the same initial weights
    jstep, init_state = T.jax_train_step(kind)
    st = [{k: jnp.asarray(v) for k, v in init.items()}]
    st.append(init_state(st[0]))
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    def run():
        st[0], st[1], loss = jax.block_until_ready(jstep(st[0], st[1], jx, jy))
        return np.asarray(loss)
for _ in range(3):
    run()
first_hwm = status("VmHWM")  # the process's peak so far: import, build, compile, 3 steps
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
for _ in range(20):
    run()
peak = status("VmHWM")
print(json.dumps({"peak_extra": peak - base, "rss": base, "hwm": first_hwm}))
"""


def measure(fw: str, kind: str, **extra_env) -> dict:
    """{peak_extra, rss, hwm} in bytes, from a fresh one-thread process."""
    env = dict(os.environ, **extra_env, TVM_NUM_THREADS="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    out = subprocess.run([sys.executable, "-c", CHILD, fw, kind, HERE, ROOT], capture_output=True, text=True,
                         env=env, timeout=900)
    if out.returncode:
        raise SystemExit(f"{fw} {kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    args = ap.parse_args()
    rows = []
    for kind, name in (("cnn", "digits CNN step (batch 64, SGD momentum)"), ("mlp", "MLP step (784-256-256-10, batch 128, Adam)")):
        j = measure("jax", kind)
        rows.append((name + ", graphad compiling", measure("graphad", kind, GRAPHAD_NO_DISK_CACHE="1"), j))
        measure("graphad", kind)  # fills the disk cache
        rows.append((name + ", graphad from its disk cache", measure("graphad", kind), j))
    kib = lambda b: f"{b / 1024:.0f} KiB"  # noqa: E731
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    lines = ["| train step | resident after 3 steps: graphad / JAX (ratio) | process peak so far: graphad / JAX "
             "(ratio) | growth during 20 more steps: graphad / JAX |",
             "|---|---|---|---|"]
    for name, g, j in rows:
        lines.append(f"| {name} | {mib(g['rss'])} / {mib(j['rss'])} ({g['rss'] / j['rss']:.2f}) | "
                     f"{mib(g['hwm'])} / {mib(j['hwm'])} ({g['hwm'] / j['hwm']:.2f}) | "
                     f"{kib(g['peak_extra'])} / {kib(j['peak_extra'])} |")
    lines.append("")
    lines.append(f"One thread each, fresh processes, {platform.machine()}, Python {platform.python_version()}. The "
                 f"process peak includes import, model building and compiling; the growth is VmHWM after 20 steps "
                 f"minus VmRSS before them, the high-water mark reset first (graphad's steps reuse the memory "
                 f"pool of the first call and swap the new Parameter buffers in; JAX allocates new parameter "
                 f"buffers each step, as nothing is donated here).")
    table = "\n".join(lines)
    print(table)
    if args.write:
        sys.path.insert(0, HERE)
        import seed_workloads as sw
        sw.write_doc(table, "peak_memory", "`python benchmarks/peak_memory.py --write`")


if __name__ == "__main__":
    main()
