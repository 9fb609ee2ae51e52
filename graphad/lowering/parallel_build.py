"""Kernels compiled on several CPUs at once: the kernels of a CPU build split into groups, each
group one LLVM module compiled (TIR passes, LLVM, machine code) in its own thread.

TVM's TIR pipeline and LLVM run outside the GIL, and each build has its own LLVM context, so two
threads building two modules take about half the wall time of one thread building both (measured
on this project's 2 vCPUs: 20 builds of a small kernel took 660 ms in one thread, 342 ms in two).
A module has a fixed cost (about 17 ms here: LLVM's pipelines and the object file's set-up,
whatever its size), so a build is split only where its kernels are estimated to cost more than
that per extra group (`partition`), into at most as many groups as the process may use CPUs
(`compile_jobs`).

The groups are linked into one shared library by the kernel-object build
(kernel_objects.build_split): the VM's compiled main function (none in bytecode mode: then an
empty module) is the library's own module, compiled at opt level 0 in the calling thread; each
group of kernels is compiled, to object code, in a thread of its own and linked in, and main
reaches their kernels through the linker aliases that build gives every kernel. Each kernel is
compiled exactly as in a one-module build (the same TIR pipeline, codegen and target): results
are bit-identical (tests/test_parallel_build.py).
"""
from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

from ._tvm import walk

# The cost of a kernel, in TIR nodes (statements and expressions): its own nodes plus
# KERNEL_NODES; a module costs MODULE_NODES whatever it holds. From 30 kernels of the seed
# workloads, each built alone into an object file on this project's 2-vCPU machine (without
# argument checks): 22.6 ms + 0.075 ms per node (least squares), so a module's fixed cost is
# about 230 nodes' worth and a kernel's own about 50 beside its nodes.
KERNEL_NODES = 50
MODULE_NODES = 230
MAX_JOBS = 4
# A build that would otherwise be JIT-compiled (no disk cache) is split only when the groups
# other than the largest, built beside it, hold at least this much: the split build is linked as
# a library, which costs the extra module, the link and the library's loading (about 50 ms of CPU
# here, about 650 nodes' worth) that the JIT does not. Measured on 2 vCPUs (benchmarks/
# compile_time.py rows, medians of 3, whole -> split): the depth-1 MLP gradient, groups of 788
# and 813, 0.178 -> 0.163 s; batch hessian, 866 and 968, 0.261 -> 0.199 s; hvp n=2048, 383 and
# 654, 0.192 -> 0.245 s (before the argument checks were dropped, arg_checks.py).
JIT_MIN_COST = 700

# Set (to True) by a build whose library would otherwise be JIT-compiled in one thread
# (runtime/executable.build_executable): it may then be split and linked as a library instead.
SPLIT_JIT = contextvars.ContextVar("graphad_split_jit", default=False)


def split_failed(e: Exception) -> None:
    """Say, once per process, that a split build failed and the graph is built in one piece (the
    results are the same; a failure here is a bug to report)."""
    global _FAILED_WARNED
    if not _FAILED_WARNED:
        _FAILED_WARNED = True
        import warnings
        lines = str(e).strip().splitlines()
        warnings.warn(f"graphad: a build split over {compile_jobs()} threads failed ({type(e).__name__}: "
                      f"{lines[-1] if lines else ''}); building in one thread instead", RuntimeWarning,
                      stacklevel=2)


_FAILED_WARNED = False


def compile_jobs() -> int:
    """How many threads a build may use: GRAPHAD_COMPILE_JOBS if set (1: one thread, its kernels in
    one group; a compiled main is still a module of its own where libraries are linked directly), else
    the CPUs this process may run on (its affinity mask), no more than TVM_NUM_THREADS (else
    OMP_NUM_THREADS) asks for and at most MAX_JOBS."""
    env = os.environ.get("GRAPHAD_COMPILE_JOBS", "").strip()
    if env:
        try:
            jobs = int(env)
        except ValueError:
            jobs = 0
        if jobs < 1:
            from ..errors import CompileError
            raise CompileError(f"GRAPHAD_COMPILE_JOBS must be a whole number >= 1, not {env!r}")
        return jobs
    from ._tvm import default_num_threads, env_threads
    cpus = default_num_threads()
    asked = env_threads()  # a process told to use n threads compiles with no more
    return max(1, min(cpus, MAX_JOBS, asked if asked is not None else cpus))


def node_count(tvm, func) -> int:
    """Statements and expressions in `func`'s body: the size estimate of a kernel."""
    n = [0]

    def count(_):
        n[0] += 1
    walk(func.body, [(tvm.ir.Expr, count), (tvm.tirx.Stmt, count)], order="post")
    return n[0]


def partition(costs: dict, jobs: int) -> list[list]:
    """The keys of `costs` (a cost each) in groups of about equal total cost: largest first, each
    to the cheapest group. At most `jobs` groups, and only as many as pay for their module: one
    per MODULE_NODES of the total cost. Never an empty group; a single group means "do not split"."""
    total = sum(costs.values())
    n = max(1, min(jobs, len(costs), int(total // MODULE_NODES)))
    groups: list[list] = [[] for _ in range(n)]
    load = [0] * n
    for k in sorted(costs, key=lambda k: -costs[k]):
        i = min(range(n), key=lambda j: load[j])
        groups[i].append(k)
        load[i] += costs[k]
    return [g for g in groups if g]


def costs(tvm, funcs: dict) -> dict:
    """{GlobalVar: estimated cost} of `funcs` ({GlobalVar: PrimFunc}) for `partition`."""
    return {gv: KERNEL_NODES + node_count(tvm, f) for gv, f in funcs.items()}


def kernel_groups(cost: dict, kernels: dict, mains: dict, jobs: int) -> list[dict]:
    """`kernels` and `mains` ({GlobalVar: PrimFunc}, their costs in `cost`) as groups for
    `build_groups`: the kernels in at most `jobs` groups where splitting them pays (`partition`),
    and in front of them, wherever there is more than one group, the mains alone (the VM's
    compiled main function; none in bytecode mode): the library's own module, compiled at opt
    level 0 (kernel_objects.main_target), while each kernel group's object code is made in its
    build thread. A single group: the mains alone (every kernel cached) or the kernels alone."""
    if jobs < 2 or len(kernels) < 2:
        parts = [list(kernels)]
    else:
        parts = partition({gv: cost[gv] for gv in kernels}, jobs)
    groups = [{gv: kernels[gv] for gv in g} for g in parts if g]
    if mains or len(groups) != 1:  # (no group at all: an empty module, the library's own)
        groups.insert(0, dict(mains))
    return groups


def pays_off_jit(cost: dict, groups: list[dict], mains: dict, direct_link: bool) -> bool:
    """Whether building `groups` (`kernel_groups`) apart and linking them beats JIT-compiling them
    as one module. With a compiled main and the direct link (linker.py) always: the JIT compiles
    the main function's code at LLVM's highest level, 12-18 ms even for a graph of one kernel,
    where its own module at level 0 costs 3-5 ms, more than the link (7-8 ms) and the library's
    loading (under 1 ms) take. Otherwise when the kernels beside the largest group, built in
    parallel, are worth at least JIT_MIN_COST."""
    if len(groups) < 2:
        return False
    if mains and direct_link:
        return True
    if len(groups) < 3:  # (group 0 is the main's, or empty) one group of kernels: nothing in parallel
        return False
    loads = [sum(cost[gv] for gv in g) for g in groups[1:]]
    return sum(loads) - max(loads) >= JIT_MIN_COST


def build_groups(build_one, items: list, jobs: int = 2) -> list:
    """[build_one(item) for item in items], the first in this thread and each other in a thread of
    its own (TVM releases the GIL while it compiles), or all in this thread when `jobs` < 2. A
    failure in any is raised here, once all have finished."""
    if len(items) < 2 or jobs < 2:
        return [build_one(x) for x in items]
    with ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="graphad-build") as pool:
        futures = [pool.submit(build_one, x) for x in items[1:]]
        first = build_one(items[0])  # should it raise, leaving the pool waits for the others
        rest = [f.result() for f in futures]
    return [first] + rest
