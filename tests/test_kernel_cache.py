"""The kernel cache (runtime/kernel_cache.py, lowering/kernel_objects.py): kernels compiled once
are linked into later graphs, bit-identical to an ordinary build, and a damaged, planted or
unlinkable pack is never used.

Every test gets its own GRAPHAD_CACHE_DIR and starts with empty in-memory caches.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRAPHS = textwrap.dedent('''
    import numpy as np
    import graphad as gd
    from graphad import ops

    def mlp_graph(depth, width=32, batch=8):
        """value_and_grad of a tanh MLP: its kernels do not depend on the depth."""
        def loss(ws, x):
            h = x
            for w in ws:
                h = ops.tanh(h @ w)
            return ops.sum(h * h)
        specs = ([gd.TensorSpec((width, width))] * depth, gd.TensorSpec((batch, width)))
        return gd.jit(gd.value_and_grad(loss)).lower(*specs).graph

    def inputs(graph, seed=0):
        rng = np.random.default_rng(seed)
        return [(rng.standard_normal(v.type.shape) * 0.3).astype(v.type.dtype.np) for v in graph.inputs]
''')
_ns: dict = {}
exec(GRAPHS, _ns)
mlp_graph, inputs = _ns["mlp_graph"], _ns["inputs"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    from graphad.runtime.cache import cache_clear
    d = tmp_path / "graphad-cache"
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(d))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    monkeypatch.delenv("GRAPHAD_NO_KERNEL_CACHE", raising=False)
    # one module (one pack) per build, whatever the CPUs: builds split over threads, which write
    # a pack per group, are tests/test_parallel_build.py's
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "1")
    cache_clear(disk=False)
    yield d
    cache_clear(disk=False)


def _kdir(cache_dir):
    return cache_dir / "v1" / "kernels"


def _compile(graph):
    from graphad.runtime.executable import compile_graph
    return compile_graph(graph)


def _same_as_ordinary_build(exe, graph, seed=0):
    """`exe`'s outputs equal, bit for bit, those of the graph built whole without any cache."""
    from graphad.runtime.executable import compile_graph
    args = inputs(graph, seed)
    ref = compile_graph(graph, cache=False)(args)
    got = exe(args)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(np.asarray(a._data), np.asarray(b._data))


def test_a_related_graph_links_the_kernels_it_shares(cache_dir):
    g2, g3, g12 = mlp_graph(2), mlp_graph(3), mlp_graph(12)
    e2 = _compile(g2)
    assert e2.report["kernels"]["cached"] == 0 and e2.report["kernels"]["built"] > 0
    assert e2.report["library"] == "exported from kernel objects"
    e3 = _compile(g3)  # a deeper model: its kernels are g2's under other names, but for the one
    # that packs the gradients into one output buffer, whose size grows with the depth
    assert e3.report["kernels"]["built"] == 1 and e3.report["kernels"]["cached"] == e2.report["kernels"]["built"] - 1
    e12 = _compile(g12)
    assert e12.report["kernels"]["built"] <= 1 and e12.report["kernels"]["cached"] >= e2.report["kernels"]["built"] - 1
    assert {e2.report["exec_mode"], e12.report["exec_mode"]} == {"compiled", "bytecode"}  # both VM modes
    for e, g in ((e2, g2), (e3, g3), (e12, g12)):
        _same_as_ordinary_build(e, g)
    packs = [p for p in os.listdir(_kdir(cache_dir)) if p.startswith("p.")]
    assert len(packs) == 2 + e12.report["kernels"]["built"]  # one per build that compiled a kernel


def test_a_fresh_process_finds_the_kernels(cache_dir):
    _compile(mlp_graph(2))
    child = GRAPHS + textwrap.dedent('''
        import json
        from graphad.runtime.executable import compile_graph
        exe = compile_graph(mlp_graph(4))
        print(json.dumps(exe.report["kernels"]))
    ''')
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["cached"] > 1 and got["built"] <= 1  # at most the gradient-packing kernel is new


def _the_pack(cache_dir):
    (pack,) = [p for p in _kdir(cache_dir).iterdir() if p.name.startswith("p.")]
    return pack


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "group-writable", "symlink"])
def test_a_damaged_or_planted_pack_is_removed_and_the_kernels_rebuilt(cache_dir, tmp_path, damage):
    _compile(mlp_graph(2))
    pack = _the_pack(cache_dir)
    data = pack.read_bytes()
    if damage == "flip-byte":
        pack.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x40]) + data[len(data) // 2 + 1:])
    elif damage == "truncate":
        pack.write_bytes(data[:len(data) // 3])
    elif damage == "group-writable":
        os.chmod(pack, 0o664)
    else:
        elsewhere = tmp_path / "planted.o"
        elsewhere.write_bytes(data)
        pack.unlink()
        pack.symlink_to(elsewhere)
    g = mlp_graph(3)
    exe = _compile(g)
    assert exe.report["kernels"]["cached"] == 0
    _same_as_ordinary_build(exe, g)
    assert not os.path.lexists(pack)  # discarded; the rebuild made a new pack
    assert any(p.name.startswith("p.") for p in _kdir(cache_dir).iterdir())


def _drop_executables(cache_dir):
    """Remove the executable entries (not the kernels), and forget everything in memory."""
    from graphad.runtime.cache import cache_clear
    for p in (cache_dir / "v1").iterdir():
        if p.is_file():
            p.unlink()
    cache_clear(disk=False)


def test_packs_holding_the_same_kernel_link_together(cache_dir):
    """Two processes compiling the same kernels at once leave two packs that both hold them."""
    g = mlp_graph(3)
    _compile(g)
    first = _the_pack(cache_dir).name
    index = sorted(p for p in _kdir(cache_dir).iterdir() if p.name.endswith(".k"))
    hidden = index[: len(index) // 2]
    for p in hidden:  # as if another process had not seen these kernels yet
        p.rename(p.with_suffix(".hidden"))
    _drop_executables(cache_dir)
    e = _compile(g)
    assert e.report["kernels"]["built"] == len(hidden)
    for p in hidden:
        p.with_suffix(".hidden").rename(p)
    packs = sorted(p.name for p in _kdir(cache_dir).iterdir() if p.name.startswith("p."))
    assert len(packs) == 2 and first in packs
    _drop_executables(cache_dir)
    exe = _compile(g)  # links both packs: the hidden kernels are defined in each
    assert exe.report["kernels"] == {"cached": len(index), "built": 0}
    assert exe.report["library"] == "exported from kernel objects"
    _same_as_ordinary_build(exe, g)


def test_a_library_that_does_not_link_is_built_whole(cache_dir, monkeypatch):
    from graphad.lowering import kernel_objects
    from graphad.runtime import executable
    real = kernel_objects.build_split

    def broken(*a, **kw):
        lib, plan = real(*a, **kw)
        plan.options.append("-Wl,--defsym=__graphad_test_alias=__graphad_no_such_symbol")
        return lib, plan
    monkeypatch.setattr(kernel_objects, "build_split", broken)
    monkeypatch.setattr(executable, "_KERNEL_LINK_WARNED", False)
    g = mlp_graph(2)
    with pytest.warns(RuntimeWarning, match="could not be linked from kernel objects") as caught:
        exe = _compile(g)
    assert caught[0].filename == __file__  # the user's line, not graphad's (errors.warn_at_user_line)
    assert "kernels" not in exe.report and exe.report["library"] == "exported"
    _same_as_ordinary_build(exe, g)


def test_switched_off(cache_dir, monkeypatch):
    monkeypatch.setenv("GRAPHAD_NO_KERNEL_CACHE", "1")
    exe = _compile(mlp_graph(2))
    assert "kernels" not in exe.report
    assert not _kdir(cache_dir).exists()


def test_an_untrusted_kernel_directory_is_not_used(cache_dir, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir(mode=0o700)
    (cache_dir / "v1").mkdir(parents=True, mode=0o700)
    os.symlink(other, _kdir(cache_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = _compile(mlp_graph(2))
    assert "kernels" not in exe.report
    assert any("kernel cache is not used" in str(w.message) and w.filename == __file__ for w in caught)
    assert os.listdir(other) == []


def test_clear_removes_the_kernels(cache_dir):
    from graphad.runtime.cache import clear_disk_cache
    from graphad.runtime.kernel_cache import summary
    _compile(mlp_graph(2))
    n_kernels, n_packs, n_bytes, refused = summary(str(cache_dir / "v1"))
    assert n_kernels > 0 and n_packs == 1 and n_bytes > 0 and refused is None
    res = clear_disk_cache()
    assert res.kept == [] and not _kdir(cache_dir).exists()
    assert res.entries == 1 and res.kernel_packs == 1 and res.kernel_bytes == n_bytes


def test_clear_of_a_read_only_cache_says_what_stayed(cache_dir, monkeypatch):
    """Files graphad cannot delete (a read-only mount, docs/security.md's root-provisioned cache)
    are reported as its own that stayed, and `graphad cache clear` exits 1 saying why; they were
    listed among "files that are not graphad cache entries", exit 0 (a helper's trial)."""
    import errno
    import io
    from graphad.cli.main import main
    from graphad.runtime.cache import clear_disk_cache
    _compile(mlp_graph(2))
    real_unlink = os.unlink

    def read_only(p, *a, **k):
        if str(p).startswith(str(cache_dir)):
            raise OSError(errno.EROFS, "Read-only file system", str(p))
        return real_unlink(p, *a, **k)
    monkeypatch.setattr(os, "unlink", read_only)
    res = clear_disk_cache()
    assert res.entries == 0 and res.kept == []
    names = [n for n, _ in res.failed]
    assert any(n.endswith(".json") for n in names) and any(n.startswith("kernels/p.") for n in names)
    assert {why for _, why in res.failed} == {"Read-only file system"}
    out, err = io.StringIO(), io.StringIO()
    assert main(["cache", "clear"], stdout=out, stderr=err) == 1
    assert "could not remove" in err.getvalue() and "Read-only file system" in err.getvalue()
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert clear_disk_cache().failed == [] and not _kdir(cache_dir).exists()


def test_stats_and_clear_do_not_look_into_a_refused_kernel_directory(cache_dir):
    from graphad.runtime.cache import clear_disk_cache
    from graphad.runtime.kernel_cache import summary
    _compile(mlp_graph(2))
    os.chmod(_kdir(cache_dir), 0o770)
    n_kernels, n_packs, _, refused = summary(str(cache_dir / "v1"))
    assert (n_kernels, n_packs) == (0, 0) and "writable by its group" in refused
    res = clear_disk_cache()
    assert res.kernel_packs == 0 and len(res.kept) == 1 and "not used" in res.kept[0]
    assert any(p.name.startswith("p.") for p in _kdir(cache_dir).iterdir())  # left alone


def test_kernel_keys_ignore_names_and_nothing_else():
    from graphad.lowering.kernel_objects import _alpha_normal
    a = ('def gk(lv13: T.Buffer((T.int64(4),), "float32"), o: T.Buffer((4,), "float32")):\n'
         '    for i in range(4):\n        with T.sblock("lv13_red"):\n            o[i] = lv13[i] * T.float32(0.5)')
    renamed = a.replace("lv13", "lv15").replace("o:", "out:").replace("o[i]", "out[i]")
    assert _alpha_normal(a) == _alpha_normal(renamed)
    for other in (a.replace('"float32"), o', '"float64"), o'), a.replace("0.5", "0.25"),
                  a.replace("range(4)", "range(3)"), a.replace("lv13[i] *", "o[i] *")):
        assert _alpha_normal(other) != _alpha_normal(a)


def test_an_index_entry_whose_library_fails_to_link_is_forgotten(cache_dir, monkeypatch):
    """A kernel's index entry pointing at another (intact) pack: the library linked from it fails,
    and the graph is built whole, correctly. The entry was kept, so every later process warned
    and built whole again (a helper's trial); the entries that build used are now removed, and
    the next build compiles and indexes those kernels again."""
    from graphad.runtime import executable
    _compile(mlp_graph(2, width=32))
    (first,) = [p for p in _kdir(cache_dir).iterdir() if p.name.startswith("p.")]
    _compile(mlp_graph(2, width=24, batch=5))  # other kernels, another pack
    other = next(p for p in _kdir(cache_dir).iterdir() if p.name.startswith("p.") and p != first)
    digest_first, digest_other = first.name[2:-2], other.name[2:-2]
    renamed = set()
    for entry in list(_kdir(cache_dir).iterdir()):  # the first pack's kernels "in" the other pack
        if entry.name.endswith(f".{digest_first}.k"):
            entry.rename(entry.with_name(entry.name.replace(digest_first, digest_other)))
            renamed.add(entry.name.replace(digest_first, digest_other))
    first.unlink()
    assert renamed
    _drop_executables(cache_dir)
    monkeypatch.setattr(executable, "_KERNEL_LINK_WARNED", False)
    g = mlp_graph(3, width=32)
    with pytest.warns(RuntimeWarning, match="could not be linked from kernel objects"):
        exe = _compile(g)
    _same_as_ordinary_build(exe, g)
    left = {p.name for p in _kdir(cache_dir).iterdir()}
    assert len(renamed & left) < len(renamed)  # the entries that build used are gone
    assert any(n.endswith(f".{digest_other}.k") for n in left)  # the other pack's own entries stay
    _drop_executables(cache_dir)
    monkeypatch.setattr(executable, "_KERNEL_LINK_WARNED", False)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning now: nothing points at the wrong pack
        exe = _compile(mlp_graph(4, width=32))
    assert "kernels" in exe.report
