"""The kernel cache (runtime/kernel_cache.py): first-call time with the disk cache on, by what the
kernel cache already holds.

Per workload (the compile-time workloads of benchmarks/compile_time.py), in a worker process
after TVM's one-time start-up and one compile of the workload with the disk cache off (so that no
scenario pays the imports and initialisation of a first compile), the first call of a fresh
function with the disk cache on and:
* "whole": the kernel cache off (GRAPHAD_NO_KERNEL_CACHE=1): the graph is compiled as before;
* "cold": an empty cache: every kernel compiled, and kept as object code;
* "warm": the cache of "cold" with its executable entries deleted: every kernel is linked from
  the kept object code (a graph made only of kernels seen before, e.g. the same model in a new
  version of its training script);
* "related": an empty cache into which a related workload was compiled first (RELATED: the
  64-layer MLP after the 16-layer one).
Each scenario's result is checked bit for bit against "whole". Medians over `--repeats` worker
processes; wall-clock seconds and process CPU seconds (with the C compiler's children).

Usage: python benchmarks/kernel_cache.py [--repeats N] [--only NAME,...] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compile_time as ct  # noqa: E402

WORKLOADS = ["jacrev 2048x32", "hessian 32x512", "MLP train step 784-256-10 b128",
             "CNN train step (digits 8x8, b64)", "MLP value_and_grad width 128 depth 16",
             "MLP value_and_grad width 128 depth 64"]
RELATED = {"MLP value_and_grad width 128 depth 64": "MLP value_and_grad width 128 depth 16"}
SCENARIOS = ["whole", "cold", "warm", "related"]


def _leaves(x) -> list:
    import numpy as np
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in _leaves(v)]
    if isinstance(x, dict):
        return [a for k in sorted(x) for a in _leaves(x[k])]
    return [np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x)]


def worker(names: list[str]) -> dict:
    """{name: {scenario: [wall s, CPU s]}} measured in this process."""
    import numpy as np
    sys.path.insert(0, ROOT)
    import graphad as gd
    from graphad.frontend.function import clear_staging_cache
    gd.set_backend("tvm")
    gd.jit(lambda a: a * 2.0)(gd.Tensor(np.ones(4, np.float32)))  # TVM's one-time start-up
    calls = ct.graphad_calls(set(names) | {RELATED[n] for n in names if n in RELATED})
    out: dict = {}
    root = tempfile.mkdtemp(prefix="graphad-kcache-")

    def first_call(name, cache_dir, kernels=True):
        os.environ.pop("GRAPHAD_NO_DISK_CACHE", None)  # benchmarks/control_flow.py sets it on import
        os.environ["GRAPHAD_CACHE_DIR"] = cache_dir
        os.environ["GRAPHAD_NO_KERNEL_CACHE"] = "" if kernels else "1"
        gd.cache_clear(disk=False)
        clear_staging_cache()  # a transformed function's staged graph holds its executable too
        c0, t0 = ct._cpu(), time.perf_counter()
        res = calls[name]()
        return [time.perf_counter() - t0, ct._cpu() - c0], _leaves(res)

    try:
        for name in names:
            # the first compile of a kind of graph imports and initialises what it needs: paid
            # here, with the disk cache off, so that no scenario below carries it
            os.environ["GRAPHAD_NO_DISK_CACHE"] = "1"
            gd.cache_clear(disk=False)
            clear_staging_cache()
            calls[name]()
            row = out[name] = {}
            d = os.path.join(root, str(len(out)))
            row["whole"], ref = first_call(name, d + "w", kernels=False)
            row["cold"], got = first_call(name, d + "c")
            checks = [got]
            for f in os.listdir(os.path.join(d + "c", "v1")):  # keep kernels/, drop the executables
                if f != "kernels":
                    os.unlink(os.path.join(d + "c", "v1", f))
            row["warm"], got = first_call(name, d + "c")
            checks.append(got)
            if name in RELATED:
                first_call(RELATED[name], d + "r")
                row["related"], got = first_call(name, d + "r")
                checks.append(got)
            for c in checks:
                if len(c) != len(ref) or not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(c, ref)):
                    raise SystemExit(f"{name}: the kernel-cache build differs from the whole build")
            print(f"{name}: " + ", ".join(f"{k} {v[0]:.3f} s" for k, v in row.items()), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def render(med: dict, names: list[str]) -> str:
    """The markdown table of medians: seconds (wall, and CPU in brackets) per scenario, and each
    kernel-cache scenario's CPU time over "whole"'s (CPU time varies less on a shared machine)."""
    lines = ["| workload | whole (s) | cold (s) | warm (s) | related (s) | cold/whole (CPU) | warm/whole (CPU) "
             "| related/whole (CPU) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        r = med[n]
        cells = [n + (f" (related: after depth {RELATED[n].split()[-1]})" if n in RELATED else "")]
        cells += [f"{r[s][0]:.3f} ({r[s][1]:.3f})" if s in r else "-" for s in ("whole", "cold", "warm", "related")]
        cells += [f"{r[s][1] / r['whole'][1]:.2f}" if s in r else "-" for s in ("cold", "warm", "related")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated workload names (or JSON list)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="put the table into docs/performance.md")
    args = ap.parse_args(argv)
    names = WORKLOADS
    if args.only:
        names = json.loads(args.only) if args.only.startswith("[") else args.only.split(",")
    if args.worker:
        print(json.dumps(worker(names)))
        return
    env = dict(os.environ)
    env.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    runs = []
    for _ in range(args.repeats):
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--only", json.dumps(names)],
                           env=env, stdout=subprocess.PIPE, text=True, check=True, timeout=ct.WORKER_TIMEOUT_S)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    med = {n: {s: [statistics.median(r[n][s][i] for r in runs) for i in (0, 1)] for s in runs[0][n]} for n in names}
    table = render(med, names)
    note = (f"Medians of {args.repeats} worker processes; first call = trace + compile + run after TVM's "
            f"start-up, disk cache on, every result bit-identical to \"whole\". Machine: {os.cpu_count()} "
            f"logical CPUs, TVM_NUM_THREADS={env['TVM_NUM_THREADS']}.")
    text = f"Run of {time.strftime('%Y-%m-%d')} (`python benchmarks/kernel_cache.py --write`):\n\n{table}\n\n{note}\n"
    print(text)
    if args.write:
        path = os.path.join(ROOT, "docs", "performance.md")
        doc = open(path).read()
        begin, end = "<!-- BENCH:kernel_cache BEGIN -->", "<!-- BENCH:kernel_cache END -->"
        if begin not in doc:
            raise SystemExit(f"{path} has no {begin} marker")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        open(path, "w").write(f"{head}{begin}\n{text}{end}{tail}")


if __name__ == "__main__":
    main()
