"""Issue 12, finding 6: memory is bounded.

* A graph that cannot fit (its outputs together, or its largest intermediate, from the IR's static
  shapes) is refused with a ResourceError naming the sizes and suggesting chunk_size, before it is
  compiled or run (a 40 GB jacrev was compiled, then died in TVM with a raw std::bad_alloc).
* `chunk_size` bounds the peak: a chunked Jacobian called on concrete tensors runs chunk by chunk
  into the preallocated result (it concatenated every chunk inside one graph: 2x the Jacobian).
* Tracing at a TensorSpec allocates nothing (it made an array of zeros of the spec's shape).

Peak memory is measured in child processes, as the RSS high-water mark (VmHWM) after resetting it
through /proc/self/clear_refs: TVM's allocations are native, invisible to tracemalloc; a pooled
allocator keeps what one call freed, so only a fresh process shows a call's own peak; and a
child's ru_maxrss also counts the RSS its parent (this test process) had when it forked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError, ResourceError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_compile(monkeypatch):
    """Make compiling a test failure: a refused graph must be refused before TVM sees it."""
    import graphad.runtime.executable as executable

    def refuse(*args, **kwargs):
        raise AssertionError("the graph was compiled before its size was checked")
    monkeypatch.setattr(executable, "compile_graph", refuse)


def _elementwise(v):
    return ops.tanh(v) * 2.0


# ================================================================ the size check

@pytest.mark.parametrize("backend", ["tvm", "numpy"])
def test_a_40_gb_jacobian_is_refused_before_compiling(monkeypatch, no_compile, backend):
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "16G")
    gd.set_backend(backend)
    x = gd.Tensor(np.zeros(100_000, np.float32))  # the Jacobian: 1e10 float32 = 40 GB
    with pytest.raises(ResourceError) as e:
        gd.jacrev(_elementwise)(x)
    msg = str(e.value)
    assert "37.3 GiB = 40000000000 bytes" in msg and "outputs need 37.3 GiB" in msg, msg
    assert "memory limit of 16.0 GiB (GRAPHAD_MAX_BYTES=16G)" in msg and "chunk_size" in msg, msg
    assert isinstance(e.value, GraphadError) and isinstance(e.value, MemoryError)
    # chunk_size does not make the Jacobian itself smaller: refused before its chunks are compiled
    with pytest.raises(ResourceError, match="outputs need 37.3 GiB"):
        gd.jacrev(_elementwise, chunk_size=1000)(x)


def test_the_default_limit_is_a_fraction_of_physical_memory(monkeypatch, no_compile):
    from graphad.frontend.memory import memory_limit
    monkeypatch.delenv("GRAPHAD_MAX_BYTES", raising=False)
    limit, why = memory_limit()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < limit <= 0.8 * total + 1 and "of memory" in why, (limit, why)
    gd.set_backend("tvm")
    with pytest.raises(ResourceError, match="GRAPHAD_MAX_BYTES"):  # 4 TB: more than any machine here
        gd.jacrev(_elementwise)(gd.Tensor(np.zeros(1_000_000, np.float32)))


def test_an_oversized_intermediate_suggests_chunk_size(monkeypatch, no_compile):
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "1G")
    gd.set_backend("tvm")
    n = 2000
    w = gd.Tensor(np.full((n, n), 0.5, np.float32))

    def outer(v):  # jacfwd batches an (n, n) intermediate over n basis vectors: n^3 floats
        return (ops.tanh(ops.matmul(w, v))[:, None] * ops.sin(v)[None, :] * ops.cos(w)).sum(1)
    x = gd.Tensor(np.zeros(n, np.float32))
    with pytest.raises(ResourceError) as e:
        gd.jacfwd(outer)(x)
    msg = str(e.value)
    assert "outputs need 15.3 MiB" in msg and "largest intermediate, f32[2000,2000,2000]" in msg, msg
    assert "Pass chunk_size=K to jacrev/jacfwd" in msg, msg
    # a chunk of 500 basis vectors still holds 500 x n x n floats: refused, asking for fewer
    with pytest.raises(ResourceError, match="Pass a smaller chunk_size than 500"):
        gd.jacfwd(outer, chunk_size=500)(x)


def test_jit_lower_compile_and_the_limit_setting(monkeypatch, no_compile):
    gd.set_backend("tvm")
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "1M")
    lowered = gd.jit(lambda a: a * 2).lower(gd.TensorSpec((1000, 1000)))  # lowering is free
    with pytest.raises(ResourceError, match=r"needs at least 3.8 MiB .*limit of 1.0 MiB \(GRAPHAD_MAX_BYTES=1M\)"):
        lowered.compile()
    with pytest.raises(ResourceError):
        gd.jit(lambda a: a * 2)(gd.Tensor(np.zeros((1000, 1000), np.float32)))
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "lots")
    with pytest.raises(GraphadError, match="GRAPHAD_MAX_BYTES='lots': expected a number of bytes"):
        lowered.compile()


def test_unlimited_and_suffixes(monkeypatch):
    from graphad.frontend.memory import memory_limit
    for text, want in [("unlimited", None), ("123", 123), ("2K", 2048), ("1.5G", 3 << 29), ("4GiB", 4 << 30),
                       ("1t", 1 << 40)]:
        monkeypatch.setenv("GRAPHAD_MAX_BYTES", text)
        assert memory_limit()[0] == want, text
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "unlimited")
    gd.set_backend("numpy")
    out = gd.jit(lambda a: a * 2)(gd.Tensor(np.ones(3, np.float32)))  # no limit: runs
    np.testing.assert_array_equal(out.asnumpy(), [2, 2, 2])


@pytest.mark.tvm
def test_a_loaded_artifact_is_checked_before_it_runs(monkeypatch, tmp_path):
    gd.set_backend("tvm")
    compiled = gd.jit(lambda a: a * 2.0, backend="tvm").lower(gd.TensorSpec((64, 64))).compile()
    path = str(tmp_path / "double.gdx")
    compiled.save(path)
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "1K")
    with pytest.raises(ResourceError, match=r"double.gdx \(@.*\): running it needs at least 16.0 KiB"):
        gd.load(path)


# ================================================================ chunked Jacobians: streamed

def _forecast(w, b):
    return lambda x: ops.tanh(ops.dense(x, w, b))


@pytest.mark.parametrize("kind", ["jacrev", "jacfwd"])
def test_streamed_chunks_give_the_one_graph_result(kind):
    gd.set_backend("numpy")
    gd.set_seed(3)
    w, w2 = ops.randn(7, 5), ops.randn(5, 5)

    def f(x, y):
        h = ops.tanh(ops.matmul(w, ops.sin(ops.matmul(w2, x))) + y[0])
        return h, (h * y[1]).sum(), ops.sin(x) * y[1], ops.reshape(ops.softmax(x), (5, 1))

    def g(x, y):
        return ops.tanh(ops.matmul(w, x) * y[1]), (x * 2.0, ops.exp(y[0]))
    x, y = ops.randn(5), (ops.randn(7), ops.randn(()))
    for fun, aux, pos in ((f, False, 0), (f, False, (0, 1)), (g, True, 0), (g, True, (0, 1))):
        want = getattr(gd, kind)(fun, grad_position=pos, has_aux=aux)(x, y)
        for chunk in (1, 2, 3, 6):  # 7 and 5 rows: chunks that divide them or leave a remainder
            got = getattr(gd, kind)(fun, grad_position=pos, has_aux=aux, chunk_size=chunk)(x, y)
            a, ta = gd.pytree.flatten(want)
            b, tb = gd.pytree.flatten(got)
            assert ta == tb
            for p, q in zip(a, b):
                assert p.shape == q.shape and p.dtype is q.dtype
                np.testing.assert_allclose(q.asnumpy(), p.asnumpy(), rtol=1e-6, atol=1e-6)


def test_a_streamed_chunk_graph_computes_only_its_rows():
    """The rows graph of a dense layer gathers rows of the weight (c x n work), not a (c, n) @ (n, n)
    matmul of a one-hot basis, nor the whole Jacobian per chunk."""
    from graphad.frontend import function
    gd.set_backend("numpy")
    n, c = 300, 50
    gd.set_seed(0)
    w, b = ops.randn(n, n), ops.randn(n)
    jac = gd.jacrev(_forecast(w, b), chunk_size=c)
    np.testing.assert_allclose(jac(ops.randn(n)).asnumpy().shape, (n, n))
    streamed = [s for s in function._STAGED.values() if type(s).__name__ == "_Streamed"][-1]
    (staged, total, size), = streamed.chunks
    assert (total, size) == (n, c)
    sizes = [v.type.size for node in staged.graph.nodes for v in node.outputs]
    assert max(sizes) <= c * n, staged.graph
    assert not any(node.prim.name == "matmul" and node.outputs[0].type.shape == (c, n) for node in staged.graph.nodes)


@pytest.mark.parametrize("kind", ["jacfwd", "jacrev"])
def test_chunks_the_rows_rewrite_cannot_take_get_only_their_basis_rows(monkeypatch, kind):
    """The rows rewrite does not pass conv2d, so such a chunked Jacobian takes the one-graph form;
    its chunks were slices of the whole n x n identity, which the graph then held (jacfwd of a
    conv2d over 72,000 inputs with chunk_size=1000 was refused: 19.3 GiB, 'pass chunk_size').
    Each chunk now gets its own rows of the basis: 12,960 or 10,000 basis rows (an identity of 672
    or 400 MB) under a 200 MB limit, the result the other mode's unchunked Jacobian."""
    monkeypatch.setenv("GRAPHAD_MAX_BYTES", "200M")
    gd.set_backend("numpy")
    gd.set_seed(2)
    if kind == "jacfwd":  # 12,960 inputs, 250 outputs
        x, w = ops.randn(1, 40, 27, 12), ops.randn(1, 40, 3, 3)
    else:  # 1,296 inputs, 10,000 outputs
        x, w = ops.randn(1, 4, 27, 12), ops.randn(40, 4, 3, 3)

    def f(x):
        return ops.reshape(ops.conv2d(x, w), (-1,))
    got = getattr(gd, kind)(f, chunk_size=500)(x)
    want = (gd.jacrev if kind == "jacfwd" else gd.jacfwd)(f)(x)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_chunks_keep_the_basis_structure(backend):
    """A chunk's rows of the basis are marked as a basis, as the whole identity is, so simplify
    keeps their zeros symbolic: an unmarked chunk multiplied as written, so an inf in W gave NaN
    beside it (inf * 0) where the unchunked Jacobian has W itself, and a dense layer's chunk
    became a (c, n) @ (n, n) product (30x slower, a trial). A one-row chunk (chunk_size=1, or a
    last chunk of one row) is computed as two rows and cut: a one-row eye has no such structure."""
    gd.set_backend(backend)
    w = gd.Tensor(np.array([[np.inf, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    x = gd.Tensor(np.array([1.0, 2.0, 3.0]))

    def f(x):
        return ops.matmul(w, x)
    want = np.array([[np.inf, 1.0, 2.0], [3.0, 4.0, 5.0]])
    for kind in (gd.jacfwd, gd.jacrev):
        np.testing.assert_array_equal(kind(f)(x).asnumpy(), want)
        for chunk in (1, 2):
            np.testing.assert_array_equal(gd.jit(kind(f, chunk_size=chunk))(x).asnumpy(), want)
            np.testing.assert_array_equal(kind(f, chunk_size=chunk)(x).asnumpy(), want)
    n, c = 300, 50
    gd.set_seed(0)
    big = ops.randn(n, n)
    graph = gd.make_graph(gd.jacrev(lambda v: ops.tanh(ops.matmul(big, v)), chunk_size=c))(ops.randn(n))
    sizes = [v.type.size for node in graph.nodes for v in node.outputs]
    assert max(sizes) <= n * n and not any(node.prim.name == "eye" for node in graph.nodes), graph


def _kernel_names(fn, *args):
    from graphad.runtime.executable import compile_graph, graph_for_lowering
    exe = compile_graph(graph_for_lowering(gd.make_graph(fn)(*args)), cache=False)
    return [str(r).split(":")[0] for r in exe.report["schedule"]], exe


def test_a_concat_of_slices_of_large_tensors_is_not_fused_with_them():
    """FuseOps fused the slices into the concatenate: one kernel at the end read every sliced
    tensor, so all stayed alive until it ran (a chunked jacrev through a padded conv2d, whose
    gradient is a conv cut back to the input's size, peaked at 1.44 GB for a 22 MB Jacobian; 400 MB
    now, a trial's repro). Such a concatenate is now a kernel of its own, the slices too; a
    concatenate of small slices still fuses."""
    gd.set_backend("tvm")
    w = gd.Tensor(np.full((1, 1, 3, 3), 0.5, np.float32))
    d = gd.Tensor(np.random.default_rng(0).standard_normal((1, 1, 148, 148)).astype(np.float32))

    def chunks(d, c=500):  # four chunks of 42.6 MB conv outputs, each cut to 16 x 16
        parts = []
        for k in range(4):
            e = ops.reshape(ops.eye(c, 148 * 148, k * c, dtype=gd.float32), (c, 1, 148, 148))
            parts.append(ops.conv2d(e * d, w)[:, :, 65:81, 65:81])
        return ops.concat(parts, 0)
    names, exe = _kernel_names(chunks, d)
    assert "concatenate_apart" in names and not any("slice" in n and "concatenate" in n for n in names), names
    got = np.asarray(gd.jit(chunks)(d))
    want = np.asarray(gd.jit(chunks, backend="numpy")(d))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    small, _ = _kernel_names(lambda a: ops.concat([a[:2] * 2.0, a[3:5] + 1.0], 0), gd.Tensor(np.ones((8, 4), np.float32)))
    assert not any("apart" in n for n in small) and any("concatenate" in n and "slice" in n for n in small), small


def test_chunked_jacobians_inside_a_trace_keep_the_one_graph_form():
    gd.set_backend("numpy")
    gd.set_seed(1)
    x = ops.randn(4, 6)
    want = gd.vmap(gd.jacrev(_elementwise))(x)
    got = gd.vmap(gd.jacrev(_elementwise, chunk_size=4))(x)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-6)
    got = gd.jit(gd.jacfwd(_elementwise, chunk_size=5))(x[0])
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy()[0], rtol=1e-6)


_PEAK_CHILD = textwrap.dedent("""
    import json, sys
    import graphad as gd
    from graphad import ops
    gd.set_backend("tvm")
    n, chunk = int(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))
    gd.set_seed(0)
    w, b, x = ops.randn(n, n) * (1.0 / n ** 0.5), ops.randn(n), ops.randn(n)
    jac = gd.jacrev(lambda x: ops.tanh(ops.dense(x, w, b)), chunk_size=chunk)
    import tvm  # noqa: F401  (what the call would import: not part of its peak)
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current RSS
    base = status("VmRSS")
    out = jac(x)
    peak = status("VmHWM") - base
    print(json.dumps({"peak": peak, "result": out.shape[0] * out.shape[1] * 4}))
""")


def _child(script: str, *args, env=None) -> dict:
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env=env)
    if r.returncode != 0 and "clear_refs" in r.stderr:
        pytest.skip(f"cannot reset the peak RSS counter here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.tvm
@pytest.mark.skipif(not _can_reset_peak(), reason="needs /proc/self/clear_refs (Linux) to measure a call's peak")
def test_chunk_size_bounds_the_peak_memory(tmp_path):
    """jacrev(chunk_size=100) of a dense layer at n=4000 (a 64 MB Jacobian): the call's peak RSS stays
    below 1.3x the Jacobian (it was 2.1x: every chunk plus their concatenation). The first child
    compiles into a private disk cache; the second loads from it, so its peak is the call's alone."""
    env = {**os.environ, "GRAPHAD_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("GRAPHAD_NO_DISK_CACHE", None)
    _child(_PEAK_CHILD, 4000, 100, env=env)
    r = _child(_PEAK_CHILD, 4000, 100, env=env)
    assert r["result"] == 64_000_000
    assert r["peak"] < 1.3 * r["result"], f"peak {r['peak'] / 1e6:.0f} MB for a {r['result'] / 1e6:.0f} MB Jacobian"


_SPEC_CHILD = textwrap.dedent("""
    import json
    import graphad as gd
    from graphad import ops
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
    fn = gd.jit(lambda a: ops.tanh(a) * 2.0)
    fn.lower(gd.TensorSpec((4, 4)))  # imports and first-use costs, outside the measurement
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    fn.lower(gd.TensorSpec((12000, 12000)))
    gd.jit(gd.jacrev(ops.sin)).lower(gd.TensorSpec((100000,)))  # a 40 GB Jacobian's graph
    print(json.dumps({"peak": status("VmHWM") - base}))
""")


@pytest.mark.skipif(not _can_reset_peak(), reason="needs /proc/self/clear_refs (Linux) to measure a call's peak")
def test_tracing_at_a_tensorspec_allocates_nothing():
    r = _child(_SPEC_CHILD)
    assert r["peak"] < 32e6, f"lowering at TensorSpec((12000, 12000)) took {r['peak'] / 1e6:.0f} MB (was 549 MB)"
