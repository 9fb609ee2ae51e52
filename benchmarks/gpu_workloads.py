"""The seed workloads on a CUDA GPU: graphad (target "cuda") beside JAX jit and torch.func on the GPU.

graphad's Tensors live in host memory, so a graphad call copies its inputs to the GPU, runs the
kernels and copies the outputs back; the "graphad" column is that whole round trip. The
"graphad kernels" column calls the same compiled executable on inputs already on the GPU and
waits for it (what JAX's device-resident figure measures). JAX is timed both ways: on
device-resident inputs (`block_until_ready`) and host to host (`device_put` of NumPy inputs,
`np.asarray` of the outputs). Every graphad result is checked against the NumPy closed form first.

Run it on a GPU machine: `python benchmarks/gpu_workloads.py --out gpu_table.md`. Back on the
development machine, `python benchmarks/gpu_workloads.py --insert gpu_table.md` writes that table
into docs/performance.md between the BENCH:gpu markers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_workloads as sw  # noqa: E402

gd = sw.gd


def gpu_name() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0]
    except Exception:
        return "unknown GPU"


def graphad_kernels(fn, args):
    """Time the compiled CUDA executable on device-resident inputs (no host copies), synchronised."""
    compiled = gd.jit(fn).lower(*args).compile("cuda")
    exe = compiled.runner
    tvm = exe._tvm
    dargs = []
    for a in args:
        t = tvm.runtime.empty(tuple(a.shape), str(a.asnumpy().dtype), device=exe._device)
        t.copyfrom(a.asnumpy())
        dargs.append(t)
    dev = exe._device

    def run():
        exe._fn(*dargs)
        dev.sync()
    return run


def jax_host(kind, args):
    """JAX jit with NumPy inputs and outputs: device_put in, np.asarray out."""
    import jax
    jf = sw.jax_jitted(kind)

    def run():
        out = jf(*[jax.device_put(a) for a in args])
        return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the markdown table to this file")
    ap.add_argument("--insert", help="write a table produced on a GPU machine into docs/performance.md")
    ap.add_argument("--only", default="")
    ap.add_argument("--min-time", type=float, default=0.3)
    args = ap.parse_args(argv)
    if args.insert:
        sw.write_doc(open(args.insert).read().strip(), marker="gpu", how="`benchmarks/gpu_workloads.py` on a GPU machine")
        return
    gd.set_backend("tvm")
    gd.set_target("cuda")
    have = {}
    for mod in ("jax", "torch"):
        try:
            __import__(mod)
            have[mod] = True
        except ImportError:
            have[mod] = False
    if have["torch"]:
        import torch
    works = sw.make_workloads(np.random.default_rng(0))
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        works = [w for w in works if any(k in w["name"] for k in keys)]
    rows = []
    for w in works:
        kind, a = w["kind"], w["args"]
        ref = w["closed"]()
        f = sw.graphad_fn(kind)
        targs = [gd.Tensor(x) for x in a]
        res = f(*targs)
        got = [r.asnumpy() for r in res] if isinstance(res, tuple) else [res.asnumpy()]
        refs = list(ref) if isinstance(ref, tuple) else [ref]
        ok = all(np.allclose(g, r, rtol=2e-3, atol=2e-5) for g, r in zip(got, refs))
        row = dict(name=w["name"], ok=ok, gd=sw.timeit(lambda: f(*targs), args.min_time))
        try:
            row["gdk"] = sw.timeit(graphad_kernels(f, targs), args.min_time)
        except Exception as e:  # noqa: BLE001 - report, keep the other columns
            print(f"{w['name']}: kernel-only timing failed: {e}")
            row["gdk"] = None
        row["jax"] = sw.timeit(sw.jax_impl(kind, a), args.min_time) if have["jax"] else None
        row["jaxh"] = sw.timeit(jax_host(kind, a), args.min_time) if have["jax"] else None
        if have["torch"]:
            tf = sw.torch_impl(kind, a, device="cuda")

            def tsync(tf=tf):
                tf()
                torch.cuda.synchronize()
            row["torch"] = sw.timeit(tsync, args.min_time)
        else:
            row["torch"] = None
        rows.append(row)
        print(f"{w['name']:<26} " + "  ".join(f"{k} {sw.fmt_us(row[k]):>8}" for k in ("gd", "gdk", "jax", "jaxh", "torch"))
              + ("  ok" if ok else "  WRONG"), flush=True)
    lines = [f"GPU: {gpu_name()}. Host: {sw.machine()}. Median time per call in microseconds; ratios below 1 "
             f"mean graphad is faster.", "",
             "| workload | graphad (host to host) | graphad kernels (on device) | JAX jit (on device) | "
             "JAX jit (host to host) | torch.func (on device) | host to host: graphad/JAX | "
             "on device: graphad/JAX | correct |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        def ratio(x, y):
            return "n/a" if x is None or y is None else f"{x / y:.2f}"
        lines.append(f"| {r['name']} | {sw.fmt_us(r['gd'])} | {sw.fmt_us(r['gdk'])} | {sw.fmt_us(r['jax'])} | "
                     f"{sw.fmt_us(r['jaxh'])} | {sw.fmt_us(r['torch'])} | {ratio(r['gd'], r['jaxh'])} | "
                     f"{ratio(r['gdk'], r['jax'])} | {'yes' if r['ok'] else 'NO'} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
