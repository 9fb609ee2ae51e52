"""graphad.distributed.map on a local Dask cluster of worker processes: results identical to a
local call (batch Jacobians, Hessians, per-example gradients; a last chunk shorter than the
others; broadcast arguments), the artifact loaded once per worker, and a worker killed in the
middle of a task (a worker plugin exits its process) without losing or changing a result."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.tvm

W = np.random.default_rng(0).standard_normal((3, 4))


def f(x):
    return ops.tanh(ops.matmul(gd.Tensor(W), x))


def loss(w, x):
    return ops.sum(ops.tanh(ops.matmul(w, x)) ** 2)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def _tvm():
    gd.set_backend("tvm")
    yield
    gd.set_backend("numpy")


def test_batch_jacobians_hessians_and_per_example_gradients_equal_a_local_call(client):
    from graphad.distributed import map as dmap
    xs = np.random.default_rng(1).standard_normal((203, 4))   # 203 = 6 chunks of 32 and one of 11
    jac = dmap(gd.vmap(gd.jacrev(f)), xs, client=client, chunk=32)
    np.testing.assert_array_equal(jac, gd.vmap(gd.jacrev(f))(gd.Tensor(xs)).asnumpy())
    hess = dmap(gd.vmap(gd.hessian(lambda x: ops.sum(f(x)))), xs, client=client, chunk=64)
    np.testing.assert_array_equal(hess, gd.vmap(gd.hessian(lambda x: ops.sum(f(x))))(gd.Tensor(xs)).asnumpy())
    w = np.random.default_rng(2).standard_normal((3, 4))
    per = gd.vmap(gd.grad(loss), in_axes=(None, 0))
    got = dmap(per, w, xs, in_axes=(None, 0), client=client, chunk=50)
    np.testing.assert_array_equal(got, per(gd.Tensor(w), gd.Tensor(xs)).asnumpy())
    # every worker loaded the artifact of the last call once, whatever the number of its tasks
    loaded = client.run(lambda: len(__import__("graphad.distributed", fromlist=["_LOADED"])._LOADED))
    assert all(1 <= k <= 3 for k in loaded.values())


class _DieOnce(distributed.diagnostics.plugin.WorkerPlugin):
    """Ends its worker process (as a crash would) when a graphad chunk starts executing, once
    per marker file."""

    def __init__(self, marker):
        self.marker = marker

    def transition(self, key, start, finish, **kw):
        name = key[0] if isinstance(key, tuple) else str(key)
        if finish == "executing" and "_run_chunk" in name and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


def test_a_chunk_whose_worker_died_is_recomputed(client, tmp_path):
    from graphad.distributed import map as dmap
    marker = str(tmp_path / "died")
    client.register_plugin(_DieOnce(marker), name="graphad-die-once")
    try:
        xs = np.random.default_rng(3).standard_normal((97, 4))
        jac = dmap(gd.vmap(gd.jacrev(f)), xs, client=client, chunk=10)
    finally:
        client.unregister_worker_plugin("graphad-die-once")
    assert os.path.exists(marker)  # a worker did die in the middle of a chunk
    np.testing.assert_array_equal(jac, gd.vmap(gd.jacrev(f))(gd.Tensor(xs)).asnumpy())


def test_bad_arguments_name_the_problem(client):
    from graphad.distributed import map as dmap
    xs = np.zeros((8, 4))
    with pytest.raises(GraphadError, match="in_axes"):
        dmap(gd.vmap(f), xs, in_axes=1, client=client)
    with pytest.raises(GraphadError, match="leading batch axis"):
        dmap(gd.vmap(lambda a, b: a + b), xs, np.zeros((7, 4)), client=client)
    with pytest.raises(GraphadError, match="chunk"):
        dmap(gd.vmap(f), xs, client=client, chunk=0)
    # an empty batch: the local call's empty results (it was refused)
    empty = dmap(gd.vmap(f), np.zeros((0, 4)), client=client)
    assert empty.shape == (0, 3) and empty.dtype == np.float64
    with pytest.raises(GraphadError, match="argument 0 is a dict"):
        dmap(gd.vmap(f), {"x": xs}, client=client)
    with pytest.raises(GraphadError, match="returns no arrays"):
        dmap(gd.vmap(lambda x: ()), xs, client=client, retries=0)
    got = dmap(gd.vmap(f), xs, client=client, chunk=np.int64(3))  # a NumPy int is an int
    np.testing.assert_array_equal(got, gd.vmap(f)(gd.Tensor(xs)).asnumpy())


def test_an_artifacts_dtypes_are_checked_before_anything_runs(client, tmp_path):
    """A float32 artifact given float64 arrays failed in every worker (each task retried), naming
    a temporary file; it is refused at once, naming the user's file and both types (a helper's
    trial)."""
    from graphad.distributed import map as dmap
    path = str(tmp_path / "f32.gdx")
    gd.jit(gd.vmap(f)).lower(gd.TensorSpec((4, 4), gd.float32)).compile().save(path)
    with pytest.raises(GraphadError, match=r"f32\.gdx.*takes \(f(loat)?32\[4, 4\]\).*chunks are \(f(loat)?64"):
        dmap(path, np.zeros((8, 4)), client=client)


def test_a_task_cancelled_as_forgotten_is_submitted_again(client):
    """The scheduler sometimes drops a task whose worker died ("cancelled for reason: already
    forgotten", once in a clean-clone run of the test above): map submits that chunk again. A
    client that cancels the second chunk's first submission stands in for the scheduler."""
    from graphad.distributed import map as dmap

    class Cancelled:
        def result(self):
            raise distributed.client.FutureCancelledError("_run_chunk-x", reason="already forgotten")

    class Forgetful:
        """`client`, but the second submit returns a cancelled future."""

        def __init__(self, real):
            self.real, self.submits, self.scatters = real, 0, 0

        def scatter(self, *a, **k):
            self.scatters += 1
            return self.real.scatter(*a, **k)

        def submit(self, *a, **k):
            self.submits += 1
            return Cancelled() if self.submits == 2 else self.real.submit(*a, **k)

        def scheduler_info(self):
            return self.real.scheduler_info()
    xs = np.random.default_rng(5).standard_normal((40, 4))
    forgetful = Forgetful(client)
    jac = dmap(gd.vmap(gd.jacrev(f)), xs, client=forgetful, chunk=10)
    assert forgetful.submits == 5 and forgetful.scatters == 2  # 4 chunks, one again; the bytes again
    np.testing.assert_array_equal(jac, gd.vmap(gd.jacrev(f))(gd.Tensor(xs)).asnumpy())


def test_results_not_batched_along_axis_0_are_refused_not_garbled(client):
    """A function whose results are batched along another axis (vmap's out_axes=1) gave a result
    of the wrong shape whose rows were uninitialised memory: map joins chunks along axis 0. It is
    now refused, naming the result's shape (a reviewer's find)."""
    from graphad.distributed import map as dmap
    xs = np.arange(120, dtype=np.float32).reshape(40, 3)
    with pytest.raises(GraphadError, match=r"result 0 .* shape \(3, 10\).*leading axis.*out_axes=0"):
        dmap(gd.vmap(lambda x: x * 2.0, out_axes=1), xs, client=client, chunk=10, retries=0)
    # a chunk as long as the other axis: each chunk's (3, 3) result looked batched, and the joined
    # (6, 3) was neither the local (3, 6) nor its transpose (a helper's trial)
    with pytest.raises(GraphadError, match=r"result 0 .* shape \(3, 3\).*out_axes=0"):
        dmap(gd.vmap(lambda x: x * 2.0, out_axes=1), xs[:6], client=client, chunk=3, retries=0)


def test_an_artifact_whose_first_argument_is_broadcast_takes_its_batch_from_a_split_one(client, tmp_path):
    """The chunk size of an artifact was read from its first argument, which is broadcast here
    (w, 3 rows): every task then failed on the 25-row x (a reviewer's find)."""
    from graphad.distributed import map as dmap
    w = np.random.default_rng(2).standard_normal((3, 4))
    xs = np.random.default_rng(4).standard_normal((103, 4))
    per = gd.vmap(gd.grad(loss), in_axes=(None, 0))
    path = str(tmp_path / "pe.gdx")
    gd.jit(per).lower(gd.Tensor(w), gd.TensorSpec((25, 4), gd.float64)).compile().save(path)
    got = dmap(path, w, xs, in_axes=(None, 0), client=client)
    np.testing.assert_array_equal(got, per(gd.Tensor(w), gd.Tensor(xs)).asnumpy())


def test_structured_results_and_compiled_functions_take_their_own_chunk(client, tmp_path):
    """A dict result comes back as a dict (its leaves came back as a tuple in sorted-key order); a
    Compiled without chunk= takes its own batch size (it was refused, suggesting a recompile); a
    chunk= other than a Compiled's or an artifact's own is refused before anything runs, naming the
    file (every task failed in the workers and was retried). A helper's trial."""
    from graphad.distributed import map as dmap
    xs = np.arange(12.0).reshape(4, 3)
    fn = gd.vmap(lambda x: {"s": ops.sum(x), "d": x * 2.0})
    got, want = dmap(fn, xs, client=client, chunk=2), fn(gd.Tensor(xs))
    assert isinstance(got, dict) and sorted(got) == ["d", "s"]
    for k in got:
        np.testing.assert_array_equal(got[k], want[k].asnumpy())
    xs = np.random.default_rng(6).standard_normal((23, 4))
    jac = gd.vmap(gd.jacrev(f))
    comp = gd.jit(jac).lower(gd.TensorSpec((10, 4), gd.float64)).compile()
    np.testing.assert_array_equal(dmap(comp, xs, client=client), jac(gd.Tensor(xs)).asnumpy())
    path = str(tmp_path / "b10.gdx")
    comp.save(path)
    for fn_ in (comp, path):
        with pytest.raises(GraphadError, match=r"compiled for chunks of 10 rows, not chunk=5"):
            dmap(fn_, xs, client=client, chunk=5)
    with pytest.raises(GraphadError, match=r"b10.gdx' takes \(float64\[10, 4\]\), but the chunks are \(float64\[10, 3\]\)"):
        dmap(path, xs[:, :3], client=client)


def test_arguments_a_local_call_types_otherwise_are_refused_before_anything_runs(client):
    """A Python number with in_axes None became a float64 (int64) array: 3.0 beside float32 data
    gave float64 results where the local call gives float32 (a distrib trial). It is refused with
    the way out; so are a bad retries or client, before any task runs."""
    from graphad.distributed import map as dmap
    xs = np.ones((4, 3), np.float32)
    g = gd.vmap(lambda s, x: x / s, in_axes=(None, 0))
    with pytest.raises(GraphadError, match=r"argument 0 is the number 3.0; map takes arrays"):
        dmap(g, 3.0, xs, in_axes=(None, 0), client=client)
    with pytest.raises(GraphadError, match=r"argument 0 is the number np.float32\(3.0\)"):
        dmap(g, np.float32(3.0), xs, in_axes=(None, 0), client=client)
    three = np.asarray(3.0, np.float32)  # a 0-d array: typed as the local call types it
    got = dmap(g, three, xs, in_axes=(None, 0), client=client)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, g(gd.Tensor(three), gd.Tensor(xs)).asnumpy())
    for bad in (-1, "2", 1.0, True):
        with pytest.raises(GraphadError, match="retries must be an int >= 0"):
            dmap(gd.vmap(f), np.zeros((2, 4)), client=client, retries=bad)
    with pytest.raises(GraphadError, match="client must be a distributed.Client, got str"):
        dmap(gd.vmap(f), np.zeros((2, 4)), client="tcp://nowhere:1")


def test_the_functions_own_error_reaches_the_caller_once_with_its_rows(client):
    """An error fn raises on a worker is its own, not a worker's death: it was retried `retries`
    times before the caller saw it, without saying which rows failed."""
    from graphad.distributed import map as dmap
    xs = np.zeros((6, 4))
    xs[4, 0] = 7.0
    idx = gd.Tensor(np.array([0, 1], np.int64))

    def g(x):  # an index out of range where x's first entry is large: a runtime check
        return ops.take(x, idx + ops.astype(x[0], gd.int64))
    with pytest.raises(GraphadError, match=r"distributed.map: in the chunk of rows 4 to 5 of 6"):
        dmap(gd.vmap(g), xs, client=client, chunk=2)


def test_workers_run_one_tvm_thread_and_keep_few_artifacts(client):
    """Workers inherited the TVM_NUM_THREADS graphad sets in a process that compiles (the CPU
    count), so `setdefault` left them at 2 threads; and every artifact a worker loaded stayed
    loaded (a model whose weights change is a new artifact per call)."""
    from graphad import distributed as gdist

    def probe():
        from graphad import distributed as d
        from graphad.runtime import threads
        return os.environ.get("TVM_NUM_THREADS"), threads.max_threads(), len(d._LOADED)
    for k in range(gdist.KEEP_LOADED + 2):
        w = gd.Tensor(np.full((3, 4), float(k)))
        gdist.map(gd.vmap(lambda x: ops.matmul(w, x)), np.ones((4, 4)), client=client, chunk=2)
    for env, n_threads, loaded in client.run(probe).values():
        assert env == "1" and n_threads == 1 and loaded <= gdist.KEEP_LOADED


class _Recording:
    """A client that records what each task was given, and otherwise is the real one."""

    def __init__(self, client):
        self._client, self.calls = client, []

    def submit(self, fn, *args, **kw):
        self.calls.append(args)
        return self._client.submit(fn, *args, **kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_arrays_every_chunk_takes_whole_go_to_each_worker_once(client):
    """An in_axes None array went with every task (a distrib trial): 40 tasks of a (300, 300)
    weight sent it 40 times. It is scattered to the workers once, as the artifact is, and the
    tasks carry a reference; the results are the local call's."""
    from graphad.distributed import map as dmap
    w = np.random.default_rng(5).standard_normal((300, 4))
    xs = np.random.default_rng(6).standard_normal((40, 4))
    per = gd.vmap(lambda w, x: ops.tanh(ops.matmul(w, x)), in_axes=(None, 0))
    rec = _Recording(client)
    got = dmap(per, w, xs, in_axes=(None, 0), client=rec, chunk=5)
    np.testing.assert_array_equal(got, per(gd.Tensor(w), gd.Tensor(xs)).asnumpy())
    assert len(rec.calls) == 8
    for args in rec.calls:
        assert isinstance(args[1], distributed.Future) and isinstance(args[4], distributed.Future)
        assert not any(isinstance(a, np.ndarray) and a.shape == w.shape for a in args)


def test_a_cluster_without_workers_is_an_error_not_a_hang():
    """A client of a scheduler with no workers hung in scatter for ever (Dask waits for one)."""
    from graphad.distributed import map as dmap
    cluster = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        with pytest.raises(GraphadError, match=r"no workers \(waited 0.5 s.*worker_timeout="):
            dmap(gd.vmap(f), np.ones((4, 4)), client=c, chunk=2, worker_timeout=0.5)
        with pytest.raises(GraphadError, match="worker_timeout must be"):
            dmap(gd.vmap(f), np.ones((4, 4)), client=c, worker_timeout=0)
    finally:
        c.close()
        cluster.close()
