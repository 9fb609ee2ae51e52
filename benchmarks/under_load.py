"""The batch-Jacobian and Hessian rows alone and with another process burning one core.

For each condition ("alone"; "one core busy": a second process runs `while True: pass`) a fresh
process times the seed workloads named by --only (benchmarks/seed_workloads.py, each checked
against its closed form first) for graphad and JAX jit, and reports how long it took to exit
after its last result (TVM's pool workers spin before they see the shutdown). The machine is
shared: figures are medians of several timed loops and still vary from run to run.

    python benchmarks/under_load.py [--only NAMES] [--root DIR] [--runs N]

--root runs another checkout's graphad (e.g. a `git worktree` of an older commit, for a before /
after comparison) with this script's measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_ONLY = "batch jacobian 64x33x31,batch hessian 64x33x31,hessian 32x512"


def child(root: str, only: str, min_time: float) -> None:
    """Time the workloads in this process; print one JSON line per workload, then `done`."""
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    import numpy as np
    import seed_workloads as sw
    import graphad as gd
    import importlib.util
    have_jax = importlib.util.find_spec("jax") is not None
    names = [n.strip() for n in only.split(",") if n.strip()]
    for w in sw.make_workloads(np.random.default_rng(0)):
        if w["name"] not in names:
            continue
        f = sw.graphad_fn(w["kind"])
        args = [gd.Tensor(a) for a in w["args"]]
        got = f(*args)
        ok = bool(np.allclose(got.asnumpy(), w["closed"](), rtol=2e-3, atol=2e-5))
        t_gd = sw.timeit(lambda: f(*args), min_time)
        t_jax = sw.timeit(sw.jax_impl(w["kind"], w["args"]), min_time) if have_jax else None
        print(json.dumps({"name": w["name"], "graphad": t_gd, "jax": t_jax, "ok": ok}), flush=True)
    print(json.dumps({"done": time.time()}), flush=True)


def run_condition(root: str, only: str, busy: bool, min_time: float) -> tuple[dict, float]:
    """({workload: row}, exit seconds) of one fresh measuring process, with a core kept busy or not."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if burner is not None:
            time.sleep(0.3)  # let the burner get its core
        proc = subprocess.Popen([sys.executable, __file__, "--child", "--root", root, "--only", only,
                                 "--min-time", str(min_time)], stdout=subprocess.PIPE, text=True)
        rows, done = {}, None
        for line in proc.stdout:
            rec = json.loads(line)
            if "done" in rec:
                done = rec["done"]
            else:
                rows[rec["name"]] = rec
        proc.wait()
        exited = time.time()
        if proc.returncode:
            raise RuntimeError(f"the measuring process failed ({proc.returncode})")
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return rows, exited - done


def main(argv=None) -> None:
    """Measure both conditions `--runs` times; print per-workload medians as a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=DEFAULT_ONLY, help="comma-separated seed workload names")
    ap.add_argument("--root", default=ROOT, help="the checkout whose graphad is measured")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per condition")
    ap.add_argument("--min-time", type=float, default=0.4, help="seconds of timed calls per figure")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.root, args.only, args.min_time)
        return
    table = ["| workload | condition | graphad (us) | JAX jit (us) | graphad/JAX | exit (s) | correct |",
             "|---|---|---:|---:|---:|---:|:---:|"]
    for busy in (False, True):
        cond = "one core busy" if busy else "alone"
        samples = [run_condition(args.root, args.only, busy, args.min_time) for _ in range(args.runs)]
        exit_s = statistics.median(s[1] for s in samples)
        for name in samples[0][0]:
            gd_us = statistics.median(1e6 * s[0][name]["graphad"] for s in samples)
            jx = [1e6 * s[0][name]["jax"] for s in samples if s[0][name]["jax"] is not None]
            jx_us = statistics.median(jx) if jx else None
            ok = all(s[0][name]["ok"] for s in samples)
            ratio = f"{gd_us / jx_us:.2f}" if jx_us else "-"
            jtxt = f"{jx_us:.1f}" if jx_us else "-"
            table.append(f"| {name} | {cond} | {gd_us:.1f} | {jtxt} | {ratio} | {exit_s:.2f} | "
                         f"{'yes' if ok else 'NO'} |")
            print(table[-1], flush=True)
    print("\n".join(table))


if __name__ == "__main__":
    main()
