"""TVM thread counts per executable (graphad/runtime/threads.py): what is chosen, the environment
and the affinity mask respected, the fall-back to one thread when calls stall, and identical
results whatever the count. No timing is asserted: stalls are simulated with a fake clock."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tvm_backend(tmp_path, monkeypatch):
    import graphad as gd
    from graphad.runtime import threads
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    cache_clear(disk=False)
    threads.reset_contention()
    gd.set_backend("tvm")
    yield gd
    gd.set_backend("numpy")
    threads.reset_contention()
    cache_clear(disk=False)


def _meta(*shapes, device="cpu"):
    return {"device": device, "inputs": [{"shape": list(s), "dtype": "float32"} for s in shapes[:-1]],
            "outputs": [{"shape": list(shapes[-1]), "dtype": "float32"}]}


def _executable(gd, fn, *arrays):
    """(the Executable a transformed function compiled to, its Tensor arguments)."""
    from graphad.runtime import cache
    args = [gd.Tensor(a) for a in arrays]
    fn(*args)
    return list(cache._memory.values())[-1], args


# ---------------------------------------------------------------- how many threads at most

def test_max_threads_respects_the_environment_and_the_affinity_mask(monkeypatch):
    from graphad.runtime import threads
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.max_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.max_threads() == 3
    monkeypatch.setenv("TVM_NUM_THREADS", "2")  # TVM's own variable first, as TVM reads them
    assert threads.max_threads() == 2
    monkeypatch.setenv("TVM_NUM_THREADS", "16")  # never more threads than CPUs to run them
    assert threads.max_threads() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5})
    assert threads.max_threads() == 1


def test_choice_by_the_work_an_executable_does(monkeypatch):
    from graphad.runtime import threads
    monkeypatch.setattr(threads, "max_threads", lambda: 4)
    par = b"...TVMBackendParallelLaunch..."
    assert threads.choose(_meta((2048, 32), (2048, 32)), par).threads == 4
    assert threads.choose(_meta((16,), (16, 16)), par).threads == 1  # small: one thread
    assert threads.choose(_meta((2048, 32), (2048, 32)), b"no parallel loop").threads == 0
    assert threads.choose(_meta((2048, 32), (2048, 32)), None).threads == 4  # unknown: assume parallel
    assert threads.choose(_meta((2048, 32), (2048, 32), device="cuda"), par).threads == 0
    # the build's record wins over the bytes: a module at opt level 0 keeps the unused declaration
    assert threads.choose({**_meta((2048, 32), (2048, 32)), "parallel_loops": False}, par).threads == 0
    assert threads.choose({**_meta((2048, 32), (2048, 32)), "parallel_loops": True}, None).threads == 4
    monkeypatch.setattr(threads, "max_threads", lambda: 1)
    assert threads.choose(_meta((2048, 32), (2048, 32)), par).threads == 0


def test_runtime_defaults_leave_user_settings_alone():
    code = ("import json, os\nfrom graphad.lowering._tvm import load_runtime\nload_runtime()\n"
            "print(json.dumps({k: os.environ.get(k) for k in ('TVM_NUM_THREADS', 'OMP_NUM_THREADS', "
            "'TVM_BIND_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT')}))")
    base = {k: v for k, v in os.environ.items()
            if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT")}

    def run(**extra):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env={**base, **extra})
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])
    got = run()
    assert got["TVM_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))
    assert got["TVM_BIND_THREADS"] == "0" and got["TVM_THREAD_POOL_SPIN_COUNT"] == "300"
    got = run(OMP_NUM_THREADS="1", TVM_BIND_THREADS="1", TVM_THREAD_POOL_SPIN_COUNT="1000")
    assert got == {"TVM_NUM_THREADS": None, "OMP_NUM_THREADS": "1", "TVM_BIND_THREADS": "1",
                   "TVM_THREAD_POOL_SPIN_COUNT": "1000"}


def _run_script(code: str, timeout: float = 240, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**base, "GRAPHAD_NO_DISK_CACHE": "1", **env})


_TANH = ("import numpy as np, graphad as gd\nfrom graphad import ops\ngd.set_backend('tvm')\n"
         "print(gd.jit(lambda a: ops.tanh(a) * 2.0)(np.ones((256, 256), np.float32)).asnumpy()[0, 0])\n")


@pytest.mark.parametrize("var", ["TVM_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_thread_count_above_the_cpus_is_lowered_to_them(var):
    """TVM_NUM_THREADS=100000 (or OMP_NUM_THREADS) made TVM's pool start that many workers and
    abort the process (std::terminate, rc 134) on the first parallel call: a reviewer's find."""
    r = _run_script(_TANH + "import os\nprint(os.environ['TVM_NUM_THREADS'])\n", **{var: "100000"})
    assert r.returncode == 0, r.stderr[-2000:]
    value, count = r.stdout.split()[-2:]
    assert abs(float(value) - 2 * np.tanh(1.0)) < 1e-6
    assert count == str(len(os.sched_getaffinity(0)))


def test_a_child_forked_after_parallel_calls_runs_compiled_code():
    """A child forked by a thread whose TVM pool had started waited forever for the pool's
    workers (TVM's pool has no fork handler; they do not exist in the child): a reviewer's find.
    Such a child now runs its parallel loops inline, with the parent's results."""
    code = """
import faulthandler, os
import numpy as np, graphad as gd
from graphad import ops
from graphad.runtime import threads
gd.set_backend("tvm")
a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
f = gd.jit(lambda a, b: ops.tanh(ops.matmul(a, b)))
want = f(a, a).asnumpy()
for _ in range(20):
    f(a, a)                                      # past the probe of one and all threads
assert threads.current() is not None             # this thread's pool has started
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(100, exit=True)
    g = gd.jit(lambda x: ops.exp(x) * 3.0)(a).asnumpy()      # compiled in the child
    ok = all(np.array_equal(f(a, a).asnumpy(), want) for _ in range(20))
    ok = ok and np.allclose(g, np.exp(a) * 3.0, rtol=1e-6)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
assert np.array_equal(f(a, a).asnumpy(), want)   # the parent keeps its pool
"""
    r = _run_script(code, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "0", r.stdout + r.stderr[-3000:]


# ---------------------------------------------------------------- real executables

def _forecast():
    from graphad import ops

    def forecast(w, b, x):
        return ops.dense(x, w, b).tanh()
    return forecast


def test_small_graph_has_no_parallel_loop_and_a_large_one_uses_all_threads(tvm_backend):
    from graphad.runtime import threads
    gd = tvm_backend
    rng = np.random.default_rng(0)
    small, _ = _executable(gd, gd.jacrev(_forecast(), grad_position=2),
                           *(rng.standard_normal(s).astype(np.float32) for s in ((16, 16), (16,), (16,))))
    assert small._threads.threads == 0 and small.threads == 1
    assert small.meta["parallel_loops"] is False
    big, _ = _executable(gd, gd.vmap(gd.hessian(_forecast(), grad_position=2), in_axes=(None, None, 0)),
                         *(rng.standard_normal(s).astype(np.float32) for s in ((33, 31), (33,), (64, 31))))
    if threads.max_threads() == 1:
        assert big.threads == 1
    else:
        assert big._threads.threads == big.threads == threads.max_threads()
    assert big.meta["parallel_loops"] is True


def test_results_are_identical_with_one_thread_and_with_all(tvm_backend):
    from graphad.runtime import threads
    gd = tvm_backend
    rng = np.random.default_rng(1)
    f = gd.vmap(gd.hessian(_forecast(), grad_position=2), in_axes=(None, None, 0))
    exe, args = _executable(gd, f, *(rng.standard_normal(s).astype(np.float32) for s in ((33, 31), (33,), (64, 31))))
    outs = {}
    for n in (1, max(2, threads.max_threads())):
        threads.use(n)
        outs[n] = exe._fn(*[a._dl if a._dl is not None else exe._tensor_arg(a) for a in args])
        outs[n] = np.array(np.from_dlpack(outs[n]))
    a, b = outs.values()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(f(*args).asnumpy(), a)  # and through the policy


def test_use_sets_this_threads_pool(tvm_backend):
    from graphad.lowering._tvm import load_runtime
    from graphad.runtime import threads
    if threads.max_threads() < 2:
        pytest.skip("one CPU")
    num = load_runtime().get_global_func("runtime.NumThreads")
    threads.use(1)
    assert threads.current() == 1 and num() == 1
    threads.use(2)
    assert threads.current() == 2 and num() == 2


# ---------------------------------------------------------------- probing and stalls (fake clock)

class _Clock:
    """perf_counter stand-in: each call of the function under test takes `cost(n)` seconds, n the
    thread count the calling thread's pool is set to."""

    def __init__(self, cost):
        self.t, self.cost, self.pending = 0.0, cost, False

    def __call__(self):
        from graphad.runtime import threads
        if self.pending:
            self.t += self.cost(threads.current())
        self.pending = not self.pending
        return self.t


def _policy(monkeypatch, cost, n=2):
    from graphad.runtime import threads
    monkeypatch.setattr(threads, "_clock", _Clock(cost))
    monkeypatch.setattr(threads, "_set", lambda k: setattr(threads._tls, "n", k))  # no TVM needed
    return threads.ThreadPolicy(n, "test"), []


def test_probe_keeps_all_threads_when_they_are_faster(monkeypatch):
    from graphad.runtime import threads
    threads.reset_contention()
    pol, seen = _policy(monkeypatch, lambda n: 20e-6 if n == 2 else 33e-6)
    for _ in range(threads.PROBE_CALLS + 20):
        threads.call(pol, lambda: seen.append(threads.current()), ())
    assert seen[:threads.PROBE_CALLS] == [2, 1] * (threads.PROBE_CALLS // 2)
    assert pol.choice == 2 and set(seen[threads.PROBE_CALLS:]) == {2}


def test_probe_chooses_one_thread_when_it_is_as_fast(monkeypatch):
    from graphad.runtime import threads
    threads.reset_contention()
    pol, seen = _policy(monkeypatch, lambda n: 30e-6)
    for _ in range(threads.PROBE_CALLS + 20):
        threads.call(pol, lambda: seen.append(threads.current()), ())
    assert pol.choice == 1 and set(seen[threads.PROBE_CALLS:]) == {1}


def test_stalls_switch_the_process_to_one_thread_then_it_tries_again(monkeypatch):
    from graphad.runtime import threads
    threads.reset_contention()
    busy = {"on": False}
    # 20 us with two threads, 33 us with one; a stalled two-thread call takes 2 ms
    pol, seen = _policy(monkeypatch, lambda n: (2e-3 if busy["on"] else 20e-6) if n == 2 else 33e-6)
    for _ in range(threads.PROBE_CALLS + 5):
        threads.call(pol, lambda: seen.append(threads.current()), ())
    assert pol.choice == 2 and not threads.contended()
    busy["on"] = True
    seen.clear()
    for _ in range(10):
        threads.call(pol, lambda: seen.append(threads.current()), ())
    assert seen[:2] == [2, 2] and set(seen[2:]) == {1}  # two stalls in a row, then one thread
    assert threads.contended()
    other = threads.ThreadPolicy(2, "another executable")  # contention is the machine's: all switch
    other.calls, other.choice = threads.PROBE_CALLS, 2
    threads.call(other, lambda: seen.append(threads.current()), ())
    assert seen[-1] == 1
    busy["on"] = False
    threads._Contention.until = 0.0  # the back-off is over
    seen.clear()
    for _ in range(5):
        threads.call(pol, lambda: seen.append(threads.current()), ())
    assert set(seen) == {2} and not threads.contended()
    assert threads._Contention.backoff == 2 * threads.BACKOFF_START  # doubles while stalls recur
    threads.reset_contention()


def test_a_parallel_loop_the_vm_lowering_makes_counts(tvm_backend):
    """cumsum is legalized by the VM's own lowering (topi's scan, a parallel loop), after
    graphad's schedules: the record of parallel loops is read from the TIR compiled."""
    from graphad import ops
    gd = tvm_backend
    exe, _ = _executable(gd, gd.jit(lambda a: ops.cumsum(a, axis=1)), np.ones((64, 1024), np.float32))
    assert exe.meta["parallel_loops"] is True


def test_calls_that_assign_parameters_from_several_threads_lose_no_update(tvm_backend):
    """A compiled function that assigns a Parameter read its old value outside the executable's
    lock and wrote the new one back after it: 4 threads x 50 calls counted 51 (a helper's trial).
    Reading, running and writing back are now one step per call; the same for a compiled
    (lowered) function and for the eager fallback path of a staged one."""
    import threading
    import graphad as gd
    from graphad import ops
    n = gd.Parameter(np.array(0, np.int32), name="n", requires_grad=False)
    a = gd.Tensor(np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32) * 0.1)

    def body(t):
        ops.assign_add(n, 1)
        return ops.matmul(ops.tanh(ops.matmul(t, t)), t)  # long enough for the calls to overlap
    for f in (gd.jit(body), gd.jit(body).lower(a).compile()):
        n.set_data(np.array(0, np.int32))
        f(a)
        threads = [threading.Thread(target=lambda: [f(a) for _ in range(40)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert int(n.asnumpy()) == 1 + 4 * 40
