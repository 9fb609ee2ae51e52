"""Compilation caches: in memory (per process) and on disk (shared by processes).

Key: SHA-256 of the canonical printed graph (`graphad.ir.printer.print_graph`, source locations
stripped: they do not change the code) + the target + the graphad, TVM and lowering versions.

Disk layout, under $GRAPHAD_CACHE_DIR (default ~/.cache/graphad, created with mode 0700):
    v1/<key>.json              manifest: key, versions, target, signature, lib file name, lib SHA-256
    v1/<key>.<sha16>.so        the exported shared library (named by its own content hash)
    v1/<key>.lock              flock()ed while one process compiles that entry
Invariants:
* files are written to a temp file in the same directory and published with os.replace, the
  manifest last, so readers see either nothing or a complete entry;
* processes compiling the same cold entry serialise on the entry's lock: the first compiles and
  publishes, the others find the entry when they get the lock (and load it, or compile on their
  own if the lock cannot be taken, still publishing atomically);
* a library is loaded only after its bytes matched the manifest's SHA-256 and size, and only
  through a private hard link (or copy) of the verified file, so a concurrent replacement cannot
  slip in between check and load; a truncated, corrupted or foreign entry is discarded (under
  the lock) and rebuilt, never loaded.
Set GRAPHAD_NO_DISK_CACHE=1 to use the memory cache only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import NamedTuple

FORMAT = "graphad-cache"
FORMAT_VERSION = 1
MEMORY_ENTRIES = 512

_LOC_RE = re.compile(r'  loc\("(?:[^"\\]|\\.)*":\d+\)$', re.MULTILINE)


class CacheInfo(NamedTuple):
    memory_hits: int
    disk_hits: int
    misses: int
    memory_entries: int
    disk_entries: int
    disk_bytes: int
    compile_seconds: float
    directory: str | None


_lock = threading.RLock()
_key_locks: dict[str, threading.Lock] = {}
_memory: "OrderedDict[str, object]" = OrderedDict()
_stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0, "compile_seconds": 0.0}


# ---------------------------------------------------------------- keys

def _graphad_version() -> str:
    try:
        from .. import __version__
        return str(__version__)
    except ImportError:  # pragma: no cover - during package import
        return "unknown"


def key_text(graph, target) -> str:
    """Everything that determines the compiled code, as text."""
    from ..ir.printer import print_graph
    from ..lowering import lowering_revision
    from ..lowering._tvm import tvm_version
    from ..lowering.poison import cache_token
    text = _LOC_RE.sub("", print_graph(graph))
    # cache_token: poisoned-memory builds (lowering/poison.py) never stand in for normal ones
    return "\n".join([f"{FORMAT}/{FORMAT_VERSION}", f"graphad={_graphad_version()}", f"tvm={tvm_version()}",
                      f"lowering={lowering_revision()}", f"target={target}", cache_token(), text])


def cache_key(graph, target) -> str:
    """Hex SHA-256 of `key_text(graph, target)`."""
    return hashlib.sha256(key_text(graph, target).encode()).hexdigest()


# ---------------------------------------------------------------- the directory

def cache_dir(create: bool = True) -> str | None:
    """The disk cache directory (versioned subfolder), or None when the disk cache is disabled."""
    if os.environ.get("GRAPHAD_NO_DISK_CACHE", "") not in ("", "0"):
        return None
    base = os.environ.get("GRAPHAD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "graphad")
    path = os.path.join(base, f"v{FORMAT_VERSION}")
    if create:
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            warnings.warn(f"graphad: disk cache disabled, cannot create {path}: {e}", RuntimeWarning, stacklevel=3)
            return None
    return path


def atomic_write(directory: str, name: str, data: bytes) -> None:
    """Write `data` to directory/name all or nothing: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def _file_lock(directory: str, key: str, timeout: float = 600.0):
    """Exclusive flock on <key>.lock; yields True if held, False if locking is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: atomic publication still holds
        yield False
        return
    path = os.path.join(directory, f"{key}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    held = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            except OSError:
                break
        yield held
    finally:
        if held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- entries

def _read_manifest(directory: str, key: str) -> dict | None:
    try:
        with open(os.path.join(directory, f"{key}.json"), "rb") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class _BadEntry(Exception):
    pass


def _load_entry(directory: str, key: str):
    """(module, manifest) of a verified entry; None if absent; _BadEntry if present but invalid."""
    from .executable import load_library_file
    man = _read_manifest(directory, key)
    if man is None:
        if os.path.exists(os.path.join(directory, f"{key}.json")):
            raise _BadEntry("unreadable manifest")
        return None
    lib = man.get("lib") if isinstance(man, dict) else None
    if (not isinstance(man, dict) or man.get("format") != FORMAT or man.get("format_version") != FORMAT_VERSION
            or man.get("key") != key or not isinstance(lib, str) or os.sep in lib or not lib.startswith(key)
            or not isinstance(man.get("meta"), dict)):
        raise _BadEntry("foreign or malformed manifest")
    src = os.path.join(directory, lib)
    tmpdir = tempfile.mkdtemp(prefix=".load-", dir=directory)
    private = os.path.join(tmpdir, "lib.so")
    try:
        try:
            os.link(src, private)  # snapshot of the inode: a later os.replace cannot change it
        except FileNotFoundError:
            raise _BadEntry("library file missing") from None
        except OSError:  # no hard links on this file system: a private copy
            import shutil
            shutil.copyfile(src, private)
        with open(private, "rb") as f:
            data = f.read()
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        if digest != man.get("lib_sha256") or size != man.get("lib_size"):
            raise _BadEntry(f"library hash mismatch ({size} bytes, sha256 {digest[:12]}...)")
        module = load_library_file(private)  # the mapping outlives the file
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
    return module, man, data


def _discard_entry(directory: str, key: str) -> None:
    for name in os.listdir(directory):
        if name.startswith(key) and (name.endswith(".so") or name.endswith(".json")):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _publish(directory: str, key: str, exe, target) -> None:
    from ..lowering._tvm import tvm_version
    data = exe.library_bytes()
    digest = hashlib.sha256(data).hexdigest()
    lib = f"{key}.{digest[:16]}.so"
    atomic_write(directory, lib, data)
    man = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "lib": lib,
           "lib_sha256": digest, "lib_size": len(data), "meta": exe.meta, "target": str(target),
           "graphad_version": _graphad_version(), "tvm_version": tvm_version(),
           "compile_seconds": exe.compile_seconds, "created": time.time()}
    atomic_write(directory, f"{key}.json", json.dumps(man, sort_keys=True).encode())
    for name in os.listdir(directory):  # libraries of earlier builds of this entry
        if name.startswith(key + ".") and name.endswith(".so") and name != lib:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


# ---------------------------------------------------------------- lookup

def _remember(key: str, exe) -> None:
    with _lock:
        _memory[key] = exe
        _memory.move_to_end(key)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)


def _from_disk(directory, key):
    from .executable import make_executable
    got = _load_entry(directory, key)
    if got is None:
        return None
    module, man, data = got
    return make_executable(module, man["meta"], lib_bytes=data, report={"cache": "disk"},
                           compile_seconds=0.0, source="disk-cache")


def cached_compile(graph, target=None):
    """The Executable of `graph` for `target`: from memory, else disk, else compiled and stored."""
    from ..lowering.targets import resolve_target
    from .executable import device_present
    tgt = resolve_target(target)
    key = cache_key(graph, tgt)
    with _lock:
        exe = _memory.get(key)
        if exe is not None:
            _memory.move_to_end(key)
            _stats["memory_hits"] += 1
            return exe
        klock = _key_locks.setdefault(key, threading.Lock())
    with klock:  # one thread per key compiles; the others then hit memory
        with _lock:
            exe = _memory.get(key)
            if exe is not None:
                _stats["memory_hits"] += 1
                return exe
        directory = cache_dir()
        gpu_missing = "cuda" in str(tgt.kind.name) and not device_present({"device": "cuda"})
        if directory is None or gpu_missing:
            exe = _compile(graph, tgt)
            _remember(key, exe)
            return exe
        exe = _try_disk(directory, key, discard=False)
        if exe is None:
            with _file_lock(directory, key) as held:
                exe = _try_disk(directory, key, discard=held)
                if exe is None:
                    exe = _compile(graph, tgt, library=True)
                    try:
                        _publish(directory, key, exe, tgt)
                    except Exception as e:  # full disk, no C compiler...: keep it in memory only
                        warnings.warn(f"graphad: could not write the disk cache entry: {e}", RuntimeWarning,
                                      stacklevel=2)
        _remember(key, exe)
        return exe


def _try_disk(directory, key, discard: bool):
    try:
        exe = _from_disk(directory, key)
    except _BadEntry:
        if discard:
            _discard_entry(directory, key)
        return None
    except Exception:  # a library that fails to load is as good as absent
        if discard:
            _discard_entry(directory, key)
        return None
    if exe is not None:
        with _lock:
            _stats["disk_hits"] += 1
    return exe


def _compile(graph, tgt, library: bool = False):
    from .executable import build_executable, build_library
    t0 = time.perf_counter()
    exe = build_library(graph, tgt) if library else build_executable(graph, tgt)
    with _lock:
        _stats["misses"] += 1
        _stats["compile_seconds"] += time.perf_counter() - t0
    return exe


# ---------------------------------------------------------------- info / clear

def cache_info() -> CacheInfo:
    """Hits (memory and disk), misses, entries, bytes on disk and total compile seconds."""
    directory = cache_dir(create=False)
    n_disk = n_bytes = 0
    if directory is not None and os.path.isdir(directory):
        for name in os.listdir(directory):
            p = os.path.join(directory, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not os.path.isfile(p):
                continue
            n_bytes += st.st_size
            if name.endswith(".json") and not name.startswith("."):
                n_disk += 1
    with _lock:
        return CacheInfo(_stats["memory_hits"], _stats["disk_hits"], _stats["misses"], len(_memory),
                         n_disk, n_bytes, _stats["compile_seconds"], directory)


def cache_clear(disk: bool = True) -> None:
    """Forget every in-memory entry and reset the counters; with `disk`, delete the disk entries."""
    with _lock:
        _memory.clear()
        _key_locks.clear()
        for k in _stats:
            _stats[k] = 0.0 if k == "compile_seconds" else 0
    if disk:
        directory = cache_dir(create=False)
        if directory is not None and os.path.isdir(directory):
            import shutil
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                if name.startswith(".load-") and os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif name.endswith((".so", ".json", ".lock", ".tmp")):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
