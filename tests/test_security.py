"""Probes of issue 12 kept as tests: the compile cache, AOT artifacts, faults, and threads.

Each test plays a hostile or careless user (a planted entry, a one-character edit, a symlink, a
full or read-only disk, a killed writer, many threads) and checks that graphad neither runs
foreign code nor gives a wrong result nor dies. Every test gets a private GRAPHAD_CACHE_DIR and
empty in-memory caches. The whole module runs in well under 30 s.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest
from cache_probe import graph_src, load

pytestmark = pytest.mark.tvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRAPH_SRC = graph_src(16, "probe")
make_graph, make_inputs = load(GRAPH_SRC)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    from graphad.runtime.cache import cache_clear
    d = tmp_path / "graphad-cache"
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(d))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    cache_clear(disk=False)
    yield d
    cache_clear(disk=False)


def _check(exe, n=16):
    from graphad.ir.interpret import interpret
    args = make_inputs(n)
    for o, r in zip(exe(args), interpret(make_graph(n), args)):
        np.testing.assert_allclose(o._data, r, rtol=1e-5, atol=1e-5)


def _key(n=16):
    from graphad.lowering.targets import host_target
    from graphad.runtime.cache import cache_key
    return cache_key(make_graph(n), host_target())


def _info():
    from graphad.runtime.cache import cache_info
    return cache_info()


def _canonical_sha(man: dict) -> str:
    """What anyone (an attacker too) can compute: the SHA-256 of a manifest's canonical JSON."""
    body = {k: v for k, v in man.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
                          .encode()).hexdigest()


@pytest.fixture(scope="module")
def _planted_build(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("planted")
    marker = d / "constructor-ran"
    src = d / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {\n'
                   f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n}}\n')
    so = d / "evil.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True)
    return so.read_bytes(), marker


@pytest.fixture
def planted_lib(_planted_build):
    """(bytes of a shared library whose constructor creates the file `marker`, marker path);
    the marker is absent when the test starts."""
    lib, marker = _planted_build
    marker.unlink(missing_ok=True)
    return lib, marker


def _plant(v1, key, lib: bytes, *, checksum: bool, meta=None):
    """Write an entry for `key` as a careless tool or an attacker would: the library plus a
    manifest carrying that library's own hash (and, with `checksum`, a matching manifest hash)."""
    from graphad.lowering import pack_layout
    from graphad.lowering.targets import host_target
    from graphad.runtime.executable import graph_meta
    g = make_graph()
    meta = meta or graph_meta(g, [False] * len(g.outputs), host_target(), pack_layout([v.type for v in g.outputs]))
    digest = hashlib.sha256(lib).hexdigest()
    name = f"{key}.{digest[:16]}.so"
    (v1 / name).write_bytes(lib)
    man = {"format": "graphad-cache", "format_version": 1, "key": key, "lib": name, "lib_sha256": digest,
           "lib_size": len(lib), "meta": meta, "target": meta["target"], "created": time.time()}
    if checksum:
        man["manifest_sha256"] = _canonical_sha(man)
    (v1 / f"{key}.json").write_text(json.dumps(man, sort_keys=True))
    for p in v1.iterdir():
        os.chmod(p, 0o600)


# ================================================================ the cache: trust

def test_cache_directories_are_created_private(cache_dir):
    from graphad.runtime.executable import compile_graph
    _check(compile_graph(make_graph()))
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache_dir / "v1").st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in (cache_dir / "v1").iterdir())


@pytest.mark.parametrize("where,mode", [("base", 0o777), ("base", 0o1777), ("v1", 0o775)])
def test_writable_by_others_cache_is_refused_and_its_planted_entry_never_runs(cache_dir, planted_lib, where,
                                                                               mode):
    from graphad.runtime.executable import compile_graph
    lib, marker = planted_lib
    v1 = cache_dir / "v1"
    v1.mkdir(parents=True, mode=0o700)
    _plant(v1, _key(), lib, checksum=True)
    os.chmod(cache_dir if where == "base" else v1, mode)
    before = sorted(p.name for p in v1.iterdir())
    with pytest.warns(RuntimeWarning, match="not used .*writable by") as rec:
        _check(compile_graph(make_graph()))
        _check(compile_graph(make_graph(8)), 8)  # a second compile: no second warning
    assert len([w for w in rec if "compile cache" in str(w.message)]) == 1
    assert not marker.exists(), "the planted library's constructor ran"
    info = _info()
    assert (info.disk_hits, info.misses) == (0, 2) and info.directory is None
    assert sorted(p.name for p in v1.iterdir()) == before  # nothing written, nothing removed


def test_nothing_is_made_in_an_untrusted_base_and_stats_says_why(cache_dir):
    """A world-writable cache directory without its v1: `graphad cache stats` (status without
    create) called it usable, and a compile made v1 inside it before refusing it (a cli trial)."""
    from graphad.runtime.cache import disk_cache_status
    from graphad.runtime.executable import compile_graph
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o777)
    path, why = disk_cache_status(create=False)
    assert why is not None and "writable by" in why
    with pytest.warns(RuntimeWarning, match="writable by"):
        _check(compile_graph(make_graph()))
    assert not (cache_dir / "v1").exists()


def test_cache_owned_by_another_user_is_refused(cache_dir, planted_lib, monkeypatch):
    from graphad.runtime.executable import compile_graph
    lib, marker = planted_lib
    v1 = cache_dir / "v1"
    v1.mkdir(parents=True, mode=0o700)
    _plant(v1, _key(), lib, checksum=True)
    if os.geteuid() == 0:
        os.chown(cache_dir, 65534, 65534)  # root can give it away: another user's directory
    else:  # the same situation seen from a process of another uid
        other = os.geteuid() + 4242
        monkeypatch.setattr(os, "geteuid", lambda: other)
    with pytest.warns(RuntimeWarning, match="belongs to uid"):
        _check(compile_graph(make_graph()))
    assert not marker.exists(), "the planted library's constructor ran"
    assert _info().disk_hits == 0


@pytest.mark.parametrize("checksum", [False, True])
def test_planted_entry_in_a_private_cache_is_not_loaded_unless_graphad_wrote_it(cache_dir, planted_lib,
                                                                                 checksum):
    """A .so plus a manifest carrying the file's own hash (and even a matching manifest hash) is
    not what graphad writes for this graph: its library cannot load as graphad's, and without the
    checksum it is not even opened. Either way the entry is replaced by a good one."""
    from graphad.runtime.executable import compile_graph
    lib, marker = planted_lib
    v1 = cache_dir / "v1"
    v1.mkdir(parents=True, mode=0o700)
    key = _key()
    _plant(v1, key, lib, checksum=checksum)
    _check(compile_graph(make_graph()))
    if not checksum:
        assert not marker.exists(), "a manifest without graphad's checksum was trusted"
    # with a consistent checksum the library is opened: in a directory only this user can write,
    # its content is this user's own (docs/security.md); graphad still refuses to run it as a graph
    info = _info()
    assert (info.disk_hits, info.misses) == (0, 1)
    man = json.loads((v1 / f"{key}.json").read_text())
    assert man["lib_sha256"] != hashlib.sha256(lib).hexdigest() and "manifest_sha256" in man


_TEMPLATES: dict = {}  # n -> {file name: bytes} of a good entry, compiled once per session


def _entry(cache_dir, n=16):
    """(key, manifest path, manifest) of a good disk entry for make_graph(n) in `cache_dir`."""
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    key = _key(n)
    v1 = cache_dir / "v1"
    if n not in _TEMPLATES:
        _check(compile_graph(make_graph(n)), n)
        cache_clear(disk=False)
        _TEMPLATES[n] = {p.name: p.read_bytes() for p in v1.glob(f"{key}*") if not p.name.endswith(".lock")}
    else:  # copying a compiled entry costs nothing; compiling it ~0.5 s
        v1.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(cache_dir, 0o700)
        for name, data in _TEMPLATES[n].items():
            (v1 / name).write_bytes(data)
            os.chmod(v1 / name, 0o600)
    path = v1 / f"{key}.json"
    return key, path, json.loads(path.read_text())


@pytest.mark.parametrize("edit,rehash", [("packed", False), ("output-shape", False), ("packed", True),
                                         ("output-shape", True), ("input-shape", True), ("output-dtype", True),
                                         ("lib-size", True), ("copy-flag", True)])
def test_one_character_manifest_edit_is_refused(cache_dir, edit, rehash):
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    key, path, man = _entry(cache_dir)
    assert man["meta"]["packed"] == [0, 128]  # this graph's two outputs come back in one buffer
    meta = man["meta"]
    if edit == "packed":
        meta["packed"] = [0, 129]
    elif edit == "output-shape":
        meta["outputs"][1]["shape"] = [9]
    elif edit == "input-shape":
        meta["inputs"][0]["shape"] = [17, 16]
    elif edit == "output-dtype":
        meta["outputs"][1]["dtype"] = "int32"
    elif edit == "lib-size":
        man["lib_size"] += 1
    elif edit == "copy-flag":
        meta["outputs"][0]["copy"] = "yes"
    if rehash:  # a tool that "fixes up" the checksum after its edit
        man["manifest_sha256"] = _canonical_sha(man)
    path.write_text(json.dumps(man, sort_keys=True))
    cache_clear(disk=False)
    _check(compile_graph(make_graph()))  # the right results: rebuilt, not served from the edited entry
    info = _info()
    assert (info.disk_hits, info.misses) == (0, 1)
    fresh = json.loads(path.read_text())
    assert fresh["meta"]["packed"] == [0, 128] and fresh["meta"]["outputs"][1]["shape"] == [8]


def test_manifest_of_another_graph_under_this_key_is_refused(cache_dir):
    """A valid, checksummed manifest and library of graph A renamed to graph B's key."""
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    key_a, path_a, man_a = _entry(cache_dir, 24)
    key_b, path_b, _ = _entry(cache_dir, 16)
    v1 = cache_dir / "v1"
    for p in v1.glob(f"{key_b}*"):
        p.unlink()
    lib_b = f"{key_b}.{man_a['lib_sha256'][:16]}.so"
    shutil.copy(v1 / man_a["lib"], v1 / lib_b)
    man_a.update(key=key_b, lib=lib_b)
    man_a["manifest_sha256"] = _canonical_sha(man_a)
    path_b.write_text(json.dumps(man_a, sort_keys=True))
    cache_clear(disk=False)
    _check(compile_graph(make_graph(16)))
    assert (_info().disk_hits, _info().misses) == (0, 1)


def test_symlinked_files_are_never_followed(cache_dir, tmp_path):
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    key, path, man = _entry(cache_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the manifest is a link to a perfectly valid copy: still not used
    (elsewhere / "m.json").write_text(path.read_text())
    path.unlink()
    path.symlink_to(elsewhere / "m.json")
    # the lock is a link to a file that does not exist yet: O_CREAT must not create it
    other = _key(8)
    (cache_dir / "v1" / f"{other}.lock").symlink_to(elsewhere / "created-through-the-lock")
    cache_clear(disk=False)
    _check(compile_graph(make_graph()))
    _check(compile_graph(make_graph(8)), 8)
    assert (_info().disk_hits, _info().misses) == (0, 2)
    assert not (elsewhere / "created-through-the-lock").exists()
    assert (elsewhere / "m.json").read_text() != ""  # the link's target is untouched


# ================================================================ the cache: clear

def test_clear_removes_only_graphads_own_entries(cache_dir):
    from graphad.runtime.cache import cache_clear
    key, path, man = _entry(cache_dir)
    v1 = cache_dir / "v1"
    user = {"notes.json": "{}", "lib.so": "user library", "my.lock": "", "data.tmp": "draft",
            f"{'0' * 64}.json": json.dumps({"mine": True}), f"{'1' * 64}.{'2' * 16}.so": "not a graphad library"}
    for name, text in user.items():
        (v1 / name).write_text(text)
    cache_clear()
    left = {p.name for p in v1.iterdir()}
    assert left == set(user), left
    assert _info().disk_entries == 1  # the foreign key-named manifest is counted, never removed


def test_clear_never_follows_a_v1_symlink(cache_dir, tmp_path):
    from graphad.runtime.cache import cache_clear
    precious = tmp_path / "precious"
    precious.mkdir()
    names = ["a.json", "b.so", "c.lock", "d.tmp", f"{'3' * 64}.json"]
    for n in names:
        (precious / n).write_text("{}")
    cache_dir.mkdir(mode=0o700)
    (cache_dir / "v1").symlink_to(precious, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cache_clear()
    assert sorted(p.name for p in precious.iterdir()) == sorted(names)


def test_cli_cache_clear_keeps_user_files_and_says_so(cache_dir, capsys):
    from graphad.cli.main import main
    _entry(cache_dir)
    (cache_dir / "v1" / "notes.json").write_text("{}")
    out, err = io.StringIO(), io.StringIO()
    assert main(["cache", "clear"], stdout=out, stderr=err) == 0, err.getvalue()
    assert out.getvalue().startswith("removed 1 entry") and "kept 1 file" in out.getvalue()
    assert (cache_dir / "v1" / "notes.json").exists()
    os.chmod(cache_dir, 0o777)
    out = io.StringIO()
    assert main(["cache", "ls"], stdout=out, stderr=io.StringIO()) == 0
    assert "not used" in out.getvalue() and "writable by everyone" in out.getvalue()


# ================================================================ the cache: faults

def test_stale_temp_files_of_dead_writers_are_swept_on_the_next_write(cache_dir):
    from graphad.runtime.executable import compile_graph
    key, _, man = _entry(cache_dir)
    v1 = cache_dir / "v1"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - 600
    temps = {"dead": f".{key}.json.{dead}.abcd1234.tmp",
             "dead-lib": f".{man['lib']}.{dead}.zz99_x1y.tmp",
             "live": f".{key}.json.{os.getppid()}.abcd1234.tmp",  # our parent is alive
             "fresh-dead": f".{key}.json.{dead}.new00000.tmp",
             "ancient-legacy": f".{key}.json.abc_1234.tmp"}
    for what, name in temps.items():
        (v1 / name).write_bytes(b"half-written")
        if what != "fresh-dead":
            os.utime(v1 / name, (old, old) if what != "ancient-legacy" else (old - 2 * 86400, old - 2 * 86400))
    _check(compile_graph(make_graph(8)), 8)  # a write of another entry
    left = {p.name for p in v1.iterdir()}
    assert temps["dead"] not in left and temps["dead-lib"] not in left and temps["ancient-legacy"] not in left
    assert temps["live"] in left and temps["fresh-dead"] in left


class _ReadOnly:
    """Makes every write under `root` fail with EROFS, as a read-only mount does (even for root,
    whom chmod does not stop)."""

    def __init__(self, root, monkeypatch):
        self.root = os.path.realpath(root)
        real_open, real_mkdir = os.open, os.mkdir

        def under(p, dir_fd=None):
            return dir_fd is None and os.path.realpath(os.fspath(p)).startswith(self.root)

        def ro_open(p, flags, mode=0o777, *, dir_fd=None):
            if under(p, dir_fd) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(p))
            return real_open(p, flags, mode, dir_fd=dir_fd)

        def ro_mkdir(p, mode=0o777, *, dir_fd=None):
            if under(p, dir_fd):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(p))
            return real_mkdir(p, mode, dir_fd=dir_fd)

        def ro_path(fn):
            def wrapped(*a, **k):
                if any(isinstance(x, (str, os.PathLike)) and under(x) for x in a[:2]):
                    raise OSError(errno.EROFS, "Read-only file system", os.fspath(a[0]))
                return fn(*a, **k)
            return wrapped

        monkeypatch.setattr(os, "open", ro_open)
        monkeypatch.setattr(os, "mkdir", ro_mkdir)
        for name in ("link", "replace", "rename", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, ro_path(getattr(os, name)))
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **k: False if m & os.W_OK and under(p) else real_access(p, m, **k))


def test_read_only_prepopulated_cache_is_used_and_a_miss_is_kept_in_memory(cache_dir, monkeypatch):
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    _entry(cache_dir)
    files = sorted(p.name for p in (cache_dir / "v1").iterdir())
    cache_clear(disk=False)
    os.chmod(cache_dir / "v1", 0o500)
    try:
        _ReadOnly(cache_dir, monkeypatch)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            _check(compile_graph(make_graph()))  # loaded: nothing is written to load
            assert not [w for w in rec if "graphad" in str(w.message)], [str(w.message) for w in rec]
            assert (_info().disk_hits, _info().misses) == (1, 0)
            _check(compile_graph(make_graph(8)), 8)  # a miss: compiled, kept in memory, one warning
            _check(compile_graph(make_graph(4)), 4)
        msgs = [str(w.message) for w in rec if "graphad" in str(w.message)]
        assert len(msgs) == 1 and "cannot write the disk compile cache" in msgs[0], msgs
        assert (_info().disk_hits, _info().misses) == (1, 2)
    finally:
        monkeypatch.undo()
        os.chmod(cache_dir / "v1", 0o700)
    assert sorted(p.name for p in (cache_dir / "v1").iterdir()) == files


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_for_real(cache_dir):
    from graphad.runtime.cache import cache_clear
    from graphad.runtime.executable import compile_graph
    _entry(cache_dir)
    cache_clear(disk=False)
    os.chmod(cache_dir / "v1", 0o500)
    try:
        _check(compile_graph(make_graph()))
        with pytest.warns(RuntimeWarning, match="cannot write"):
            _check(compile_graph(make_graph(8)), 8)
        assert (_info().disk_hits, _info().misses) == (1, 1)
    finally:
        os.chmod(cache_dir / "v1", 0o700)


def test_full_disk_on_write_keeps_results_and_warns_once(cache_dir, monkeypatch):
    from graphad.runtime import cache
    from graphad.runtime.executable import compile_graph

    def enospc(directory, name, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache, "atomic_write", enospc)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for n in (16, 8, 4):
            _check(compile_graph(make_graph(n)), n)
    msgs = [str(w.message) for w in rec if "graphad" in str(w.message)]
    assert len(msgs) == 1 and "No space left on device" in msgs[0], msgs
    assert _info().misses == 3 and _info().memory_entries == 3
    assert not [p for p in (cache_dir / "v1").iterdir() if not p.name.endswith(".lock")]


def test_no_room_to_export_the_library_compiles_in_memory(cache_dir, monkeypatch):
    """LLVM ends the process when it cannot write an object file: so no export is tried when the
    temporary directories lack room (here: reported full)."""
    from graphad.runtime import executable
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 10

    monkeypatch.setattr(executable.os, "statvfs", lambda p: Full(real(p)))
    with pytest.warns(RuntimeWarning, match="no room to write"):
        _check(executable.compile_graph(make_graph()))
    assert _info().misses == 1 and not list((cache_dir / "v1").glob("*.json"))


def test_one_graph_that_cannot_be_exported_does_not_stop_the_disk_cache(cache_dir, monkeypatch):
    """A graph whose library cannot be exported or loaded (a TVM bug, say) is kept in memory;
    the next graph is still stored (only a lack of room stops writing for a while)."""
    from graphad.errors import CompileError
    from graphad.runtime import executable
    # the ordinary export (a failing kernel-cache link is tests/test_kernel_cache.py's)
    monkeypatch.setenv("GRAPHAD_NO_KERNEL_CACHE", "1")
    real = executable.exported_library
    calls = []

    def first_fails(module):
        calls.append(1)
        if len(calls) == 1:
            raise CompileError("cannot export the compiled library: simulated")
        return real(module)
    monkeypatch.setattr(executable, "exported_library", first_fails)
    with pytest.warns(RuntimeWarning, match="kept in memory only.*simulated"):
        _check(executable.compile_graph(make_graph()))
    _check(executable.compile_graph(make_graph(8)), 8)
    names = [p.name for p in (cache_dir / "v1").glob("*.json")]
    assert names == [f"{_key(8)}.json"]


FSIZE_CHILD = GRAPH_SRC + textwrap.dedent('''
    import json, resource, signal, sys, warnings
    from graphad.lowering._tvm import load_tvm
    load_tvm()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
    from graphad.ir.interpret import interpret
    from graphad.runtime.executable import compile_graph
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        outs = compile_graph(make_graph())(make_inputs())
    ok = all(np.allclose(o._data, r, rtol=1e-5, atol=1e-5) for o, r in zip(outs, interpret(make_graph(), make_inputs())))
    print(json.dumps({"ok": bool(ok), "warnings": [str(w.message) for w in rec]}))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics are Linux's")
def test_file_size_limit_does_not_kill_the_process(cache_dir):
    """The probe that found it: with writes failing (a 20 kB file size limit, as good as a full
    disk) the process exited with status 1 and no message while LLVM exported the library."""
    r = subprocess.run([sys.executable, "-c", FSIZE_CHILD], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, f"the process died ({r.returncode}): {r.stderr[-2000:]}"
    child = json.loads(r.stdout.strip().splitlines()[-1])
    assert child["ok"]
    assert len(child["warnings"]) == 1 and "file size limit" in child["warnings"][0], child


# ================================================================ artifacts

@pytest.fixture
def compiled():
    import graphad as gd
    from graphad import ops

    def f(x, w):
        return ops.tanh(ops.matmul(x, w)).sum(0)
    return gd.jit(f, backend="tvm").lower(gd.TensorSpec((16, 16)), gd.TensorSpec((16, 8))).compile()


def _no_mapping(monkeypatch):
    """Any attempt to map a library fails the test loudly."""
    from graphad.runtime import executable

    def refuse(*a, **k):
        raise AssertionError("the library was mapped")
    monkeypatch.setattr(executable, "load_library_bytes", refuse)
    monkeypatch.setattr(executable, "load_library_file", refuse)


def test_signed_artifact_round_trip(compiled, tmp_path):
    import graphad as gd
    x, w = make_inputs()
    path = tmp_path / "f.gdx"
    compiled.save(path, key=b"k" * 32)
    for key in (b"k" * 32, "k" * 32, None):  # str keys are UTF-8; without a key: integrity only
        np.testing.assert_allclose(gd.load(path, key=key)(x, w)._data, compiled(x, w)._data, rtol=1e-6)


def _resign_manifest(path, edit=None, lib=None):
    """Rewrite an artifact keeping its manifest hash consistent (what anyone can do), and its
    signature member as it was."""
    from graphad.runtime import aot
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    rec = json.loads(members[aot.MANIFEST])
    if lib is not None:
        members[aot.LIBRARY] = lib
        rec.update(lib_sha256=hashlib.sha256(lib).hexdigest(), lib_size=len(lib))
    if edit is not None:
        edit(rec)
    rec.pop("manifest_sha256")
    rec["manifest_sha256"] = hashlib.sha256(aot._canonical(rec)).hexdigest()
    members[aot.MANIFEST] = json.dumps(rec, sort_keys=True, indent=1).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("case", ["unsigned", "wrong-key", "planted-library", "edited-manifest",
                                  "signature-removed"])
def test_key_refuses_before_the_library_is_mapped(compiled, tmp_path, monkeypatch, planted_lib, case):
    import graphad as gd
    from graphad.errors import ArtifactError
    lib, marker = planted_lib
    key = b"a secret of thirty-two bytes...!"
    path = tmp_path / "f.gdx"
    compiled.save(path, key=None if case == "unsigned" else key)
    if case == "planted-library":
        _resign_manifest(path, lib=lib)
    elif case == "edited-manifest":
        _resign_manifest(path, edit=lambda r: r["manifest"].update(name="evil"))
    elif case == "signature-removed":
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist() if n != "graphad-signature.json"}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
        path.write_bytes(buf.getvalue())
    _no_mapping(monkeypatch)
    match = "not signed" if case in ("unsigned", "signature-removed") else "does not match this key"
    with pytest.raises(ArtifactError, match=match):
        gd.load(path, key=b"another key" if case == "wrong-key" else key)
    assert not marker.exists()


def test_bad_keys_are_graphad_errors(compiled, tmp_path):
    from graphad.errors import GraphadError
    for bad in (b"", "", 123):
        with pytest.raises(GraphadError, match="key"):
            compiled.save(tmp_path / "f.gdx", key=bad)


def test_artifact_signature_data_is_checked(compiled, tmp_path):
    """Without a key an artifact is only as good as its content: a consistent re-hash cannot make
    a malformed signature (packed offsets that do not fit the outputs) load."""
    import graphad as gd
    from graphad.errors import ArtifactError
    path = tmp_path / "f.gdx"
    compiled.save(path)

    def edit(r):
        r["signature"]["packed"] = [0, 3]
    _resign_manifest(path, edit=edit)
    with pytest.raises(ArtifactError, match="malformed signature"):
        gd.load(path)


# ================================================================ threads

DISCOVERY_CHILD = textwrap.dedent('''
    import importlib, json, threading, time
    real = importlib.import_module
    def slow(name, *a, **k):  # widen the window in which discovery is half done
        if name.startswith("graphad.passes."):
            time.sleep(0.02)
        return real(name, *a, **k)
    importlib.import_module = slow
    from graphad.passes.manager import parse_pipeline
    barrier, errors = threading.Barrier(8), []
    def work():
        barrier.wait()
        try:
            parse_pipeline("simplify,cse,dce")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    ts = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps(errors))
''')


def test_pass_discovery_is_atomic():
    r = subprocess.run([sys.executable, "-c", DISCOVERY_CHILD], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_another_thread_compiles_can_compile():
    """The fuzzer and process pools fork; a lock held by a thread that the child does not have
    must not hang the child's first compile."""
    from graphad.runtime import cache, executable
    held, release = threading.Event(), threading.Event()

    def hold():
        with executable.COMPILE_LOCK, cache._lock:
            held.set()
            release.wait(30)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: compile, report by exit status only
            code = 1
            try:
                _check(executable.compile_graph(make_graph(4)), 4)
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung on a lock held by a thread it does not have")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        t.join()


def test_first_calls_from_many_threads(monkeypatch):
    """8 threads x 3 functions x first calls, 3 rounds (new shapes each round, so every round
    compiles three graphs at once). Lowering is slowed a little inside TVM's BlockBuilder scope
    (a sleep per node, which lets other threads run there) so that a missing compile lock shows
    every time; without the lock, 18-41 of 48 such calls failed even unslowed."""
    import graphad as gd
    from graphad import lowering, ops
    real = lowering._check_lowered_type

    def slow(*a, **k):
        time.sleep(0.002)
        return real(*a, **k)
    monkeypatch.setattr(lowering, "_check_lowered_type", slow)
    failures, calls = [], 0
    for r in range(3):
        n = 3 + r
        fns = [gd.jit(lambda x: (x * 2.0).tanh().sum(), backend="tvm"),
               gd.jit(lambda x: x.sin() * x + x, backend="tvm"),
               gd.jit(lambda x: ops.exp(x) + 1.0, backend="tvm")]
        refs = [lambda x: np.tanh(x * 2).sum(), lambda x: np.sin(x) * x + x, lambda x: np.exp(x) + 1]
        x = np.linspace(0.1, 1.0, n).astype(np.float32)
        barrier = threading.Barrier(8)

        def work(tid):
            barrier.wait()
            for k in range(3):
                i = (k + tid) % 3
                try:
                    out = fns[i](gd.Tensor(x))
                    if not np.allclose(np.asarray(out._data), refs[i](x), rtol=1e-4, atol=1e-5):
                        failures.append(f"round {r} fn {i}: wrong result")
                except Exception as e:  # noqa: BLE001 - every failure is collected and reported
                    failures.append(f"round {r} fn {i}: {type(e).__name__}: {e}")
        ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        calls += 24
    assert not failures, f"{len(failures)} of {calls} first calls failed: {failures[:5]}"
