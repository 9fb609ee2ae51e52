"""Scale-out over Dask: `graphad.distributed.map` runs a batched compiled function on shards of
the batch axis across the workers of a `dask.distributed` cluster.

    jac = graphad.distributed.map(gd.vmap(gd.jacrev(f)), xs)          # a LocalCluster of 2 processes
    jac = graphad.distributed.map("model.gdx", xs, client=client, chunk=4096)

How it works, and why:
* The function is compiled once, here, for one chunk shape (an AOT artifact is specialised to its
  shapes), unless it already is an artifact or a `Compiled`. The last, shorter chunk is padded
  with copies of its first row and its results cut back: a batched function treats rows
  independently, so every result is the one a local call gives.
* The artifact's bytes and the arrays with in_axes None go to each worker once
  (`Client.scatter(..., broadcast=True)`: the tasks carry references, not the bytes), and each
  worker process loads the artifact once (`gd.load`, which needs only the TVM runtime: no
  compiler in the workers) and keeps it for later tasks.
* A worker runs the artifact with one TVM thread per Dask worker thread (TVM_NUM_THREADS=1 in
  the worker before graphad loads there), so the cluster's parallelism is Dask's, and a busy core
  cannot stall a thread pool.
* Results are gathered chunk by chunk in batch order into the output arrays while later chunks
  still run. A chunk whose worker died is recomputed on another worker (Dask reschedules tasks
  lost with a worker; `retries` covers a task that raised, and a task the scheduler cancelled
  as forgotten when its worker died is submitted again, up to `retries` times).

Needs the `distributed` package (`pip install graphad[distributed]`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np

from . import pytree
from .errors import GraphadError

# artifacts loaded in this (worker) process, by the SHA-256 of their bytes, the most recently
# used last; at most KEEP_LOADED: a model whose weights change between calls is a new artifact
# each call, and every one kept held its library and weights in every worker (+7.8 MiB per call
# with 1000x1000 weights, a distrib trial)
_LOADED: dict = {}
KEEP_LOADED = 4


def _load_in_worker(key: str, blob) -> object:
    """The Compiled for artifact bytes `blob` in this process, loaded once per process."""
    fn = _LOADED.pop(key, None)
    if fn is None:
        # Dask's threads are the parallelism: one TVM thread each, whatever this process inherited
        # (graphad sets TVM_NUM_THREADS in a process that compiles, and workers started after
        # that inherited the machine's core count)
        os.environ["TVM_NUM_THREADS"] = "1"
        from .frontend.compiled import load  # not the tracer: a worker only runs the artifact
        fd, path = tempfile.mkstemp(prefix="graphad-dist-", suffix=".gdx")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            fn = load(path)
        finally:
            os.unlink(path)
        while len(_LOADED) >= KEEP_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = fn
    return fn


def _run_chunk(key: str, blob, n_real: int, rows: int, *args) -> list:
    """Run the artifact on one chunk's arguments (`rows` rows, padded); the first `n_real` rows
    of each result, which must be batched along its leading axis."""
    from .tensor import Tensor
    fn = _load_in_worker(key, blob)
    try:
        out = fn(*[Tensor(a) for a in args])
    except GraphadError as e:  # the function's own error: returned, not raised, so that Dask does
        return e, None          # not run the same chunk again `retries` times before the caller sees it
    leaves, tree = pytree.flatten(out)
    res = [np.asarray(t.asnumpy()) for t in leaves]
    for i, r in enumerate(res):
        if r.ndim == 0 or r.shape[0] != rows:
            # cutting and joining chunks along axis 0 would mix rows of other axes, silently
            raise GraphadError(f"distributed.map: result {i} of a chunk of {rows} rows has shape {r.shape}: "
                               f"map joins results along their leading axis, which must be the batch axis "
                               f"(vmap's out_axes=0)")
    # the results' structure (a dict, a tuple...) as JSON, so the caller rebuilds it
    return [r[:n_real] for r in res], pytree.treedef_to_json(tree)


def _check_axes(in_axes, n: int) -> list:
    axes = list(in_axes) if isinstance(in_axes, (list, tuple)) else [in_axes] * n
    if len(axes) != n:
        raise GraphadError(f"distributed.map: in_axes has {len(axes)} entries for {n} arrays")
    for i, a in enumerate(axes):
        if a not in (0, None) or isinstance(a, bool):
            raise GraphadError(f"distributed.map: in_axes[{i}] is {a!r}; only 0 (split along the batch axis) "
                               f"and None (the same array for every chunk) are supported")
    return axes


def _artifact(fn, specs: list, tmpdir: str, split: list) -> bytes:
    """The AOT artifact bytes of `fn` compiled for the chunk argument specs `specs` (`split`: which
    arguments are split along the batch axis)."""
    from .api import jit
    from .frontend.compiled import Compiled
    want = [(tuple(s.shape), s.dtype.name) for s in specs]
    if isinstance(fn, (str, os.PathLike)):
        # checked here, naming the user's file: in the workers every task would fail (and be retried)
        got = _in_types(fn)
        if got != want:
            raise GraphadError(f"distributed.map: the artifact {os.fspath(fn)!r} takes {_types_text(got)}, but "
                               f"the chunks are {_types_text(want)}")
        with open(fn, "rb") as f:
            return f.read()
    if isinstance(fn, Compiled):
        compiled = fn
    else:
        lowered = jit(fn).lower(*specs)
        _check_batched_outputs(fn, specs, split, lowered)
        compiled = lowered.compile()
    got = _in_types(compiled)
    if got != want:
        raise GraphadError(f"distributed.map: the compiled function takes {_types_text(got)}, but the chunks are "
                           f"{_types_text(want)}")
    path = os.path.join(tmpdir, "fn.gdx")
    compiled.save(path)
    with open(path, "rb") as f:
        return f.read()


def _check_batched_outputs(fn, specs: list, split: list, lowered) -> None:
    """Refuse a function whose results are not batched along their leading axis (a vmap with
    out_axes=1): traced again at one row more, each result's leading axis must grow by one and
    nothing else change. The per-chunk check (a leading axis of `rows`) cannot see it when another
    axis happens to have the chunk's length, and joining the chunks then mixed their rows."""
    from .api import jit
    from .tensor import Tensor
    rows = next(tuple(s.shape)[0] for s, sp in zip(specs, split) if sp)
    more = [Tensor(np.zeros((rows + 1,) + tuple(s.shape)[1:], s.dtype.np)) if sp else s for s, sp in zip(specs, split)]
    try:
        b = jit(fn).lower(*more).graph.out_types
    except GraphadError as e:
        raise type(e)(f"distributed.map: checking that the results are batched, the function traced at "
                      f"{rows + 1} rows (one more than a chunk) failed: {e}") from e
    a = lowered.graph.out_types
    for i, (t, u) in enumerate(zip(a, b)):
        if not t.shape or t.shape[0] != rows or u.shape != (rows + 1,) + t.shape[1:]:
            raise GraphadError(f"distributed.map: result {i} has shape {t.shape} for a chunk of {rows} rows and "
                               f"{u.shape} for {rows + 1}: map joins results along their leading axis, which "
                               f"must be the batch axis (vmap's out_axes=0)")


def _types_text(types) -> str:
    return "(" + ", ".join(f"{d}{list(s)}" for s, d in types) + ")"


def _in_types(fn) -> list | None:
    """The argument (shape, dtype name) pairs a `Compiled` or a saved artifact (its manifest, read
    without loading the library) was compiled for; None for a function still to compile."""
    from .frontend.compiled import Compiled
    if isinstance(fn, Compiled):
        return [(tuple(s), d.name) for s, d in fn.in_types]
    if isinstance(fn, (str, os.PathLike)):
        from .runtime.aot import read_artifact_manifest
        return [(tuple(t[0]), t[1]) for t in
                read_artifact_manifest(os.fspath(fn)).get("manifest", {}).get("in_types", [])]
    return None


def _own_chunk(fn, axes: list) -> int | None:
    """The batch size a `Compiled` or a saved artifact was compiled for: the leading axis of its
    first argument that is split (in_axes 0; a broadcast one says nothing about the batch); None
    for a function still to compile."""
    types = _in_types(fn)
    if types is None:
        return None
    for (shape, _), ax in zip(types, axes):
        if ax == 0:
            return shape[0] if shape else None
    return None


def _wait_for_a_worker(client, timeout: float) -> None:
    """Return once the cluster has a worker; a GraphadError after `timeout` seconds. Without a
    worker, Dask's scatter and every task wait for one for ever (a client of a scheduler whose
    workers had not started, or had all left, hung the call)."""
    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise GraphadError(f"distributed.map: the cluster has no workers (waited {timeout:g} s for one): start "
                           f"workers for the scheduler at {getattr(client.scheduler, 'address', '?')}, or pass "
                           f"worker_timeout= to wait longer") from None


def map(fn, *arrays, in_axes=0, client=None, chunk: int | None = None, retries: int = 2,  # noqa: A001
        worker_timeout: float = 60.0):
    """`fn` applied to `arrays` sharded along their batch axis over a Dask cluster; the results
    have the structure of one local call's (a NumPy array, or a tuple, list or dict of them) and
    its values (see docs/distributed.md on rounding).

    `fn`: a batched function of Tensors (e.g. `gd.vmap(gd.jacrev(f))`), a `Compiled` for one chunk
    shape, or the path of an AOT artifact. `in_axes`: 0 (split) or None (broadcast) per array.
    `client`: a `distributed.Client`; without one a LocalCluster of two worker processes (one
    thread each) is started and closed. `chunk`: rows per task (default: the batch split into
    four tasks per worker, at most 65,536 rows; a Compiled's or an artifact's own batch size,
    which is also the only chunk it takes). `worker_timeout`: seconds to wait for the cluster to
    have a worker before a GraphadError (Dask itself would wait for ever).
    """
    try:
        import distributed
    except ImportError:
        raise GraphadError("graphad.distributed needs the `distributed` package "
                           "(pip install 'graphad[distributed]')") from None
    if not arrays:
        raise GraphadError("distributed.map: no arrays to map over")
    for i, a in enumerate(arrays):
        if isinstance(a, (dict, list, tuple, set, str)):
            raise GraphadError(f"distributed.map: argument {i} is a {type(a).__name__}; map takes arrays (NumPy "
                               f"arrays or Tensors), one per argument of the function")
        if isinstance(a, (bool, int, float, complex, np.generic)):
            # a local call types a Python (or NumPy) number weakly, by the tensors beside it; an
            # array made of it here would be a float64 or int64 tensor (3.0 / float32 data gave
            # float64 results): the number belongs in fn, or give a 0-d array of its dtype
            raise GraphadError(f"distributed.map: argument {i} is the number {a!r}; map takes arrays: close "
                               f"over the number in the function, or pass a 0-d array of the dtype meant "
                               f"(np.asarray(number, dtype))")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise GraphadError(f"distributed.map: retries must be an int >= 0, got {retries!r}")
    if (not isinstance(worker_timeout, (int, float)) or isinstance(worker_timeout, bool)
            or not worker_timeout > 0):
        raise GraphadError(f"distributed.map: worker_timeout must be a number of seconds > 0, got {worker_timeout!r}")
    if client is not None:
        if not all(callable(getattr(client, m, None)) for m in ("submit", "scatter", "scheduler_info")):
            raise GraphadError(f"distributed.map: client must be a distributed.Client, got {type(client).__name__}")
        if getattr(client, "status", None) in ("closing", "closed"):
            raise GraphadError("distributed.map: the client is closed")
    arrays = [np.asarray(a.asnumpy() if hasattr(a, "asnumpy") else a) for a in arrays]
    axes = _check_axes(in_axes, len(arrays))
    split = [a for a, ax in zip(arrays, axes) if ax == 0]
    if not split:
        raise GraphadError("distributed.map: at least one array must be split (in_axes 0)")
    n = split[0].shape[0] if split[0].ndim else None
    if n is None or any(a.ndim == 0 or a.shape[0] != n for a in split):
        raise GraphadError("distributed.map: the split arrays must share a leading batch axis; got shapes "
                           + ", ".join(str(a.shape) for a in split))
    if n == 0:
        if isinstance(fn, (str, os.PathLike)) or _in_types(fn) is not None:
            raise GraphadError("distributed.map: the batch is empty, and a compiled function or artifact takes "
                               "only its own chunk's rows")
        from .tensor import Tensor  # no rows to spread: the local call's (empty) results
        out = fn(*[Tensor(a) for a in arrays])
        leaves, tree = pytree.flatten(out)
        return pytree.unflatten(tree, [np.asarray(t.asnumpy()) for t in leaves])
    own = None
    if client is None:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = own = distributed.Client(cluster)
    try:
        own_chunk = _own_chunk(fn, axes)
        if chunk is None:
            chunk = own_chunk
        elif own_chunk is not None and chunk != own_chunk:
            what = f"the artifact {os.fspath(fn)!r}" if isinstance(fn, (str, os.PathLike)) else "the Compiled function"
            raise GraphadError(f"distributed.map: {what} was compiled for chunks of {own_chunk} rows, not "
                               f"chunk={chunk!r}: leave chunk out (its own batch size is the chunk) or compile "
                               f"it for {chunk!r} rows")
        if chunk is None:
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            chunk = min(max(1, -(-n // (4 * workers))), 65536)
        if isinstance(chunk, np.integer):
            chunk = int(chunk)
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise GraphadError(f"distributed.map: chunk must be a positive int, got {chunk!r}")
        chunk = min(chunk, n) if own_chunk is None else chunk  # (a compiled one's last chunk is padded)
        from .tensor import Tensor
        specs = [Tensor(np.zeros((chunk,) + a.shape[1:], a.dtype)) if ax == 0 else Tensor(a)
                 for a, ax in zip(arrays, axes)]
        with tempfile.TemporaryDirectory(prefix="graphad-dist-") as tmp:
            blob = _artifact(fn, specs, tmp, [ax == 0 for ax in axes])
        key = hashlib.sha256(blob).hexdigest()
        _wait_for_a_worker(client, worker_timeout)
        # the artifact and the arrays every chunk takes whole (in_axes None) go to each worker
        # once; the tasks carry references (before, each task carried its own copy of them)
        shared = [blob] + [a for a, ax in zip(arrays, axes) if ax is None]
        refs = client.scatter(shared, broadcast=True)
        def submit(real, args):
            full = iter(refs[1:])
            args = [next(full) if a is None else a for a in args]
            return client.submit(_run_chunk, key, refs[0], real, chunk, *args, pure=False, retries=retries)
        futures, jobs = [], []
        for start in range(0, n, chunk):
            real = min(chunk, n - start)
            args = []
            for a, ax in zip(arrays, axes):
                if ax is None:
                    args.append(None)  # the scattered copy, filled in by submit
                    continue
                part = a[start:start + real]
                if real < chunk:  # pad with copies of the chunk's first row; cut from the results
                    part = np.concatenate([part, np.repeat(part[:1], chunk - real, axis=0)])
                args.append(np.ascontiguousarray(part))
            jobs.append((real, args))
            futures.append(submit(real, args))
        outs = tree = None
        pos = 0
        for fut, (real, args) in zip(futures, jobs):  # in batch order, while later chunks still run
            rows = f"rows {pos} to {pos + real - 1} of {n}"
            for attempt in range(retries + 1):
                try:
                    res, tree = fut.result()
                    break
                except distributed.client.FutureCancelledError:
                    # the scheduler dropped the task ("already forgotten") while a worker died
                    # under it: submitted again, with the artifact's bytes sent again in case they
                    # went with that worker (seen once in a clean-clone run of the suite)
                    if attempt == retries:
                        raise GraphadError(f"distributed.map: the chunk of {rows} was lost {retries + 1} "
                                           f"time(s) (cancelled as its worker died; retries={retries})") from None
                    refs = client.scatter(shared, broadcast=True)
                    fut = submit(real, args)
            if isinstance(res, GraphadError):
                raise type(res)(f"{res} (distributed.map: in the chunk of {rows})") from res
            if not res:
                raise GraphadError("distributed.map: the function returns no arrays; map gathers its results "
                                   "along the batch axis, so it must return at least one")
            if outs is None:
                outs = [np.empty((n,) + r.shape[1:], r.dtype) for r in res]
            for o, r in zip(outs, res):
                o[pos:pos + len(r)] = r
            pos += len(res[0])
        return pytree.unflatten(pytree.treedef_from_json(tree), outs)
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            cluster.close()


__all__ = ["map"]
