"""Start-up of a warm fresh process: from `import graphad` to the first result.

Prepares, in a private temporary directory, a disk-cache entry and an AOT artifact of
`jacrev(forecast)` at 2048x32 (the seed workload), then starts fresh Python processes that each
time, from just before `import graphad` to the first result:
* "disk-cache hit": the first call of `gd.jacrev(forecast, grad_position=2)` with the entry on disk;
* "AOT load": `gd.load(artifact)` and its first call, after `import graphad` alone (a service that
  loads an artifact imports no model code; the disk-cache case imports `graphad.ops` for its model);
and report whether the TVM compiler library was mapped (/proc/self/maps) and `tvm` imported. The
inputs are read from .npy files (a service receives its inputs; generating them with numpy.random
would add its import, 11-15 ms, to the figure). The figure printed per case is the median over
the processes (the machine is shared: single runs vary). graphad is byte-compiled first
(compileall), as an installed package is. `--jax` adds JAX's first jit call of the same Jacobian
(its import included) for context.

    python benchmarks/startup.py [--runs 9] [--jax] [--root DIR ...]

--root measures another checkout's graphad (a `git worktree` of an older commit: before / after);
given several times, the checkouts' processes alternate (one of each in turn), so that a busy
spell of a shared machine falls on all of them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
import graphad as gd
from graphad import ops
def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()
rng = np.random.default_rng(0)
w, b, x = (rng.standard_normal(s).astype(np.float32) for s in ((2048, 32), (2048,), (32,)))
np.savez({inputs!r}, w=w, b=b, x=x)
f = gd.jacrev(forecast, grad_position=2)
ref = f(gd.Tensor(w), gd.Tensor(b), gd.Tensor(x)).asnumpy()
specs = (gd.TensorSpec((2048, 32)), gd.TensorSpec((2048,)), gd.TensorSpec((32,)))
gd.jit(f).lower(*specs).compile().save({artifact!r})
np.save({ref!r}, ref)
"""

CHILD = r"""
import time
t0 = time.perf_counter()
import sys
sys.path.insert(0, {root!r})
import numpy as np
import graphad as gd
if {case!r} != "aot":  # a service that loads an artifact has no model code to import
    from graphad import ops
t_imp = time.perf_counter()
with np.load({inputs!r}) as z:
    w, b, x = z["w"], z["b"], z["x"]
if {case!r} == "aot":
    out = gd.load({artifact!r})(w, b, x)
else:
    def forecast(weight, bias, x):
        return ops.dense(x, weight, bias).tanh()
    out = gd.jacrev(forecast, grad_position=2)(gd.Tensor(w), gd.Tensor(b), gd.Tensor(x))
res = out.asnumpy()
t1 = time.perf_counter()
maps = open("/proc/self/maps").read()
import json
print(json.dumps({{"seconds": t1 - t0, "import": t_imp - t0, "equal": bool(np.array_equal(res, np.load({ref!r}))),
                  "compiler_mapped": "libtvm_compiler" in maps, "tvm_imported": "tvm" in sys.modules,
                  "source": gd.cache_info().disk_hits}}))
"""

JAX_CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np, jax, jax.numpy as jnp
rng = np.random.default_rng(0)
w, b, x = (jnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((2048, 32), (2048,), (32,)))
f = jax.jit(jax.jacrev(lambda w, b, x: jnp.tanh(x @ w.T + b), argnums=2))
jax.block_until_ready(f(w, b, x))
print('{"seconds": %r}' % (time.perf_counter() - t0))
"""


def run_child(code: str, env: dict) -> dict:
    """Run `code` in a fresh interpreter; its last stdout line parsed as JSON."""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepare(root: str, d: str, env: dict) -> tuple[dict, dict]:
    """Byte-compile `root`'s graphad and fill its private disk cache and artifact under `d`:
    (the child's environment, its format fields)."""
    os.makedirs(d)
    env = dict(env, GRAPHAD_CACHE_DIR=os.path.join(d, "cache"))
    # graphad as installed: byte-compiled (pip compiles a package it installs; an editable
    # checkout compiles on first import unless PYTHONDONTWRITEBYTECODE is set, as on the
    # machines this project runs on, where every import then compiled graphad's sources anew:
    # about 170 ms of a fresh process's start-up)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "graphad")], env=env, check=True)
    fmt = dict(root=root, artifact=os.path.join(d, "jac.gdx"), ref=os.path.join(d, "ref.npy"),
               inputs=os.path.join(d, "inputs.npz"))
    subprocess.run([sys.executable, "-c", SETUP.format(**fmt)], env=env, check=True)
    return env, fmt


def main(argv=None) -> dict:
    """Measure and print the start-up figures; returns {(case, root): (median seconds, sample)}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="fresh processes per case (and checkout)")
    ap.add_argument("--jax", action="store_true", help="also time JAX's first jit call")
    ap.add_argument("--root", action="append", help="a checkout whose graphad is measured (repeatable; "
                                                    "default: this one)")
    args = ap.parse_args(argv)
    roots = args.root or [ROOT]
    results = {}
    with tempfile.TemporaryDirectory(prefix="graphad-startup-") as d:
        prepared = [_prepare(r, os.path.join(d, str(i)), dict(os.environ)) for i, r in enumerate(roots)]
        cases = [("disk-cache hit", "cache"), ("AOT load", "aot")]
        for label, case in cases:
            samples = [[] for _ in roots]
            for _ in range(args.runs):
                for (env, fmt), sample in zip(prepared, samples):
                    sample.append(run_child(CHILD.format(case=case, **fmt), env))
            for root, sample in zip(roots, samples):
                secs = [s["seconds"] for s in sample]
                results[(label, root)] = (statistics.median(secs), sample)
                imp = statistics.median(s["import"] for s in sample)
                where = f"  [{root}]" if len(roots) > 1 else ""
                print(f"{label:<38} median {1000 * results[(label, root)][0]:7.1f} ms  "
                      f"(min {1000 * min(secs):.1f}, max {1000 * max(secs):.1f}, {len(secs)} processes)"
                      f"  [imports {1000 * imp:.0f} ms, load + first call "
                      f"{1000 * statistics.median(s['seconds'] - s['import'] for s in sample):.0f} ms]"
                      f"  identical={all(s['equal'] for s in sample)}"
                      f"  compiler mapped={any(s['compiler_mapped'] for s in sample)}"
                      f"  tvm imported={any(s['tvm_imported'] for s in sample)}{where}", flush=True)
        if args.jax:
            label = "JAX jit first call (import included)"
            secs = [run_child(JAX_CHILD, dict(os.environ))["seconds"] for _ in range(args.runs)]
            results[(label, None)] = (statistics.median(secs), secs)
            print(f"{label:<38} median {1000 * statistics.median(secs):7.1f} ms  "
                  f"(min {1000 * min(secs):.1f}, max {1000 * max(secs):.1f}, {len(secs)} processes)", flush=True)
    return results


if __name__ == "__main__":
    main()
