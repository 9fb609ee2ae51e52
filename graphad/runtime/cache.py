"""Compilation caches: in memory (per process) and on disk (shared by one user's processes).

Key: SHA-256 of the canonical printed graph (`graphad.ir.printer.print_graph`, source locations
stripped: they do not change the code) + the target + the graphad, TVM and lowering versions.

Disk layout, under $GRAPHAD_CACHE_DIR (default ~/.cache/graphad, created with mode 0700):
    v1/<key>.json              manifest: key, versions, target, signature, lib file name, lib SHA-256
                               and size, and `manifest_sha256` (SHA-256 of all the rest, canonical JSON)
    v1/<key>.<sha16>.so        the exported shared library (named by its own content hash)
    v1/<key>.lock              flock()ed while one process compiles that entry
    v1/.<name>.<pid>.<rnd>.tmp a file being written by process <pid>

Trust (docs/security.md): an entry is native code that runs when it is loaded, so the cache
trusts only what this user (or root) could have written:
* the cache directory and v1 must be directories owned by this user (or root) that neither group
  nor others may write, and v1 must not be a symbolic link; otherwise the disk cache is not used
  (a warning, once, names the reason; compiled code is kept in memory);
* every file is opened with O_NOFOLLOW (and O_NONBLOCK: a planted FIFO cannot hang a reader) and
  used only if it is a regular file owned by this user (or root) and not group/other-writable;
* a manifest is used only if its `manifest_sha256` matches, its key is its file name AND the key
  of the graph being compiled, its library name is `<key>.<first 16 hex of lib_sha256>.so`, and its
  signature (inputs, outputs, dtypes, shapes, packed offsets, target) is that of the graph;
* a library is loaded only after its bytes matched the manifest's SHA-256 and size, and only if
  the path still names the inode that was hashed (only this user can rename in the directory).
A truncated, corrupted, foreign or planted entry is discarded (under the entry's lock) and
rebuilt, never loaded.
Invariants of writing:
* files are written to a temp file in the same directory and published with os.replace, the
  manifest last, so readers see either nothing or a complete entry; temp files of writers that
  died (kill -9) are swept by the next write;
* processes compiling the same cold entry serialise on the entry's lock: the first compiles and
  publishes, the others find the entry when they get the lock;
* nothing is written when loading: a read-only, pre-populated cache serves its entries;
* a write that fails (read-only or full disk, permission denied, no room to export the library)
  never loses the result: it is kept in memory, one warning per directory says why, and writing
  is retried only after WRITE_RETRY_SECONDS.
Set GRAPHAD_NO_DISK_CACHE=1 to use the memory cache only.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import warn_at_user_line

FORMAT = "graphad-cache"
FORMAT_VERSION = 1
MEMORY_ENTRIES = 512
MANIFEST_MAX_BYTES = 16 << 20
WRITE_RETRY_SECONDS = 300.0
# a temp file is stale when its writer (the pid in its name) is dead and it is older than this;
# or, whoever wrote it, when it is older than STALE_ANY_SECONDS (pids of another host or namespace)
STALE_DEAD_SECONDS = 60.0
STALE_ANY_SECONDS = 86400.0


class _Pattern:
    """A regular expression compiled on first use: a disk-cache hit needs only `_LOC_RE`, and
    compiling all of them cost every fresh process about 1.5 ms of its start-up."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, *args):
        self._args, self._compiled = args, None

    def __getattr__(self, name):  # match, sub, ...: the compiled pattern's
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


_LOC_RE = _Pattern(r'  loc\("(?:[^"\\]|\\.)*":\d+\)$', re.MULTILINE)
_KEY = r"[0-9a-f]{64}"
_MANIFEST_RE = _Pattern(rf"^({_KEY})\.json$")
_LIB_RE = _Pattern(rf"^({_KEY})\.([0-9a-f]{{16}})\.so$")
_LOCK_RE = _Pattern(rf"^({_KEY})\.lock$")
# (p.<sha>.o and <key>.<sha>.k: a kernel pack and its index entry, in kernels/: runtime/kernel_cache.py)
_TMP_RE = _Pattern(rf"^\.({_KEY}\.(?:json|[0-9a-f]{{16}}\.so|{_KEY}\.k)|p\.{_KEY}\.o)\.(?:(\d+)\.)?[a-z0-9_]+\.tmp$")
_LOAD_DIR_RE = _Pattern(r"^\.load-[a-z0-9_]+$")  # private load copies of graphad before 0700 checks
_DIGEST_RE = _Pattern(r"[0-9a-f]{64}")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class CacheInfo(NamedTuple):
    """What `gd.cache_info()` returns: the compile cache's counters (this process's, since it
    started or since `gd.cache_clear()`) and the disk cache's contents, a named tuple.

    The counters count look-ups of a compiled graph, made when a function is staged for a new
    signature, not calls: `memory_hits` found it compiled or loaded earlier in this process,
    `disk_hits` loaded it from the cache directory, `misses` compiled it. `memory_entries`: the
    compiled graphs held in memory; `disk_entries` and `disk_bytes`: the compiled graphs stored
    in `directory` and the bytes of graphad's files there; `compile_seconds`: the time spent in
    the misses' builds. `directory` is the disk cache's directory ($GRAPHAD_CACHE_DIR/v1, by
    default ~/.cache/graphad/v1), None when the disk cache is off (GRAPHAD_NO_DISK_CACHE=1) or
    not trusted (docs/security.md)."""
    memory_hits: int
    disk_hits: int
    misses: int
    memory_entries: int
    disk_entries: int
    disk_bytes: int
    compile_seconds: float
    directory: str | None


class ClearResult(NamedTuple):
    """What `clear_disk_cache` did: entries and their bytes removed, names it left alone, why it
    did nothing at all (None when it ran), the kernel cache's packs and bytes removed, and
    graphad's own files it could not remove, as (name, reason) (a read-only directory)."""
    entries: int
    bytes: int
    kept: list
    refused: str | None
    kernel_packs: int = 0
    kernel_bytes: int = 0
    failed: list = []


_lock = threading.RLock()
# key -> [lock, threads holding or waiting for it]: an entry lives only while some thread compiles
# that key (or waits for it), so the table stays as small as the number of concurrent compiles
_key_locks: dict[str, list] = {}
_memory: "OrderedDict[str, object]" = OrderedDict()
_stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0, "compile_seconds": 0.0}
_warned: set = set()
_write_failed: dict[str, float] = {}  # directory -> time.monotonic() of its last failed write


def _new_locks_in_child() -> None:
    # a child forked while another thread held one of these locks would wait forever for it
    global _lock, _key_locks
    _lock = threading.RLock()
    _key_locks = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)


def _warn_once(tag, message: str) -> None:
    """One RuntimeWarning per `tag` per process (until cache_clear): a service compiling
    thousands of graphs must not log the same full disk thousands of times."""
    with _lock:
        if tag in _warned:
            return
        _warned.add(tag)
    warn_at_user_line(message)


# ---------------------------------------------------------------- keys

def _graphad_version() -> str:
    # graphad._version is a core module: importing it cannot fail half-way through `import graphad`
    # (the old `from .. import __version__` could, and an `except ImportError` hid it as "unknown")
    from .._version import __version__
    return str(__version__)


_HOST_SPECS = ("cpu", "llvm", "host")


def is_host_spec(target) -> bool:
    """Whether `target` names the host CPU without details (None, "cpu", "llvm", "host")."""
    return target is None or (isinstance(target, str) and target.strip().lower() in _HOST_SPECS)


def target_token(target) -> str:
    """The target's part of a cache key.

    For the host CPU it is its fingerprint (runtime/tvmrt.host_fingerprint: architecture, CPU
    model and feature flags, TVM release), which needs no LLVM: a fresh process finds its entry
    without importing the compiler. Any other target (a dict, "cuda", a tvm Target that is not
    the host's) is the resolved target's text, as TVM prints it.
    """
    from .tvmrt import host_fingerprint
    fp = host_fingerprint()
    if is_host_spec(target):
        if fp is not None:
            return f"host-cpu:{fp}"
    elif fp is not None and type(target).__name__ == "Target" and "tvm" in type(target).__module__:
        from ..lowering.targets import host_target
        if str(target) == str(host_target()):  # the host target spelled out: the same code
            return f"host-cpu:{fp}"
    if type(target).__name__ == "Target" and "tvm" in type(target).__module__:
        return str(target)
    from ..errors import CompileError
    from ..lowering.targets import resolve_target
    try:
        return str(resolve_target(target))
    except CompileError:
        # a text no compile accepts: a key of its own (compiling it raises that error anyway)
        return str(target)


def key_text(graph, target) -> str:
    """Everything that determines the compiled code, as text (`target`: a spec or tvm Target)."""
    from ..ir.printer import print_graph
    from ..lowering import lowering_revision
    from ..lowering._tvm import tvm_version
    from ..lowering.poison import cache_token
    text = _LOC_RE.sub("", print_graph(graph))
    # cache_token: poisoned-memory builds (lowering/poison.py) never stand in for normal ones
    return "\n".join([f"{FORMAT}/{FORMAT_VERSION}", f"graphad={_graphad_version()}", f"tvm={tvm_version()}",
                      f"lowering={lowering_revision()}", f"target={target_token(target)}", cache_token(), text])


def cache_key(graph, target) -> str:
    """Hex SHA-256 of `key_text(graph, target)`."""
    return hashlib.sha256(key_text(graph, target).encode()).hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of the canonical JSON of `manifest` without its `manifest_sha256` field."""
    return hashlib.sha256(_canonical({k: v for k, v in manifest.items() if k != "manifest_sha256"})).hexdigest()


# ---------------------------------------------------------------- trust checks

def _trusted_uids() -> tuple[int, ...]:
    # root can replace anything of ours anyway; trusting its files lets an administrator
    # provision a read-only cache
    return (os.geteuid(), 0) if hasattr(os, "geteuid") else ()


def _untrusted_dir(st: os.stat_result, path: str) -> str | None:
    """Why the directory `path` (stat `st`) may hold code written by someone else, or None."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    uids = _trusted_uids()
    if uids and st.st_uid not in uids:
        return f"{path} belongs to uid {st.st_uid}, not to this user (uid {uids[0]})"
    if st.st_mode & 0o022:
        who = "everyone" if st.st_mode & 0o002 else "its group"
        return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _untrusted_file(st: os.stat_result) -> str | None:
    """Why a file (fstat `st`) may not be one graphad wrote for this user, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    uids = _trusted_uids()
    if uids and st.st_uid not in uids:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


class _BadEntry(Exception):
    """A cache file that exists but must not be used (the message says why)."""


def _open_private(path: str) -> tuple[int, os.stat_result]:
    """(fd, fstat) of `path` opened read-only without following a symbolic link.

    FileNotFoundError when absent; _BadEntry when it is a link, not a regular file we own, or
    unreadable. The checks are made on the opened file, so they hold for the bytes read from fd.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            raise _BadEntry(f"{os.path.basename(path)} is a symbolic link") from None
        raise _BadEntry(f"cannot open {os.path.basename(path)}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        why = _untrusted_file(st)
    except OSError as e:
        why = str(e)
    if why:
        os.close(fd)
        raise _BadEntry(f"{os.path.basename(path)}: {why}")
    return fd, st


def _read_fd(fd: int, limit: int | None = None) -> bytes:
    """All bytes of the open file `fd` (at most `limit`, else _BadEntry)."""
    chunks, n = [], 0
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        n += len(b)
        if limit is not None and n > limit:
            raise _BadEntry(f"larger than {limit} bytes")
        chunks.append(b)


# ---------------------------------------------------------------- the directory

def _base_dir() -> str | None:
    if os.environ.get("GRAPHAD_NO_DISK_CACHE", "") not in ("", "0"):
        return None
    # ~ expanded, as a shell would have (a quoted '~/x' made a directory named "~" in the working one)
    given = os.environ.get("GRAPHAD_CACHE_DIR")
    return os.path.expanduser(given) if given else os.path.join(os.path.expanduser("~"), ".cache", "graphad")


def disk_cache_status(create: bool = False) -> tuple[str | None, str | None]:
    """(the versioned cache directory, why it must not be used or None).

    (None, reason) when the disk cache is disabled; (path, None) when it is usable (or, with
    `create` False, does not exist yet). With `create`, missing directories are made 0700.
    """
    base = _base_dir()
    if base is None:
        return None, "GRAPHAD_NO_DISK_CACHE is set"
    path = os.path.join(base, f"v{FORMAT_VERSION}")
    if create and not os.path.isdir(base):
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
        except OSError as e:
            return path, f"cannot create {base}: {e.strerror or e}"
    # the base first: nothing is made in an untrusted one, and `cache stats` says so before its v1
    # exists (a world-writable GRAPHAD_CACHE_DIR was "usable" there, and compile made v1 in it
    # before refusing it: a cli trial)
    try:
        bst = os.stat(base)  # followed: a symlinked GRAPHAD_CACHE_DIR is the user's own choice
    except FileNotFoundError:
        return path, None
    except OSError as e:
        return path, f"cannot inspect {base}: {e.strerror or e}"
    why = _untrusted_dir(bst, base)
    if why is not None:
        return path, why
    if create:
        if not os.path.lexists(path):  # no mkdir at all otherwise: a read-only mount may say EROFS
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:  # another process made it meanwhile
                pass
            except OSError as e:
                return path, f"cannot create {path}: {e.strerror or e}"
    try:
        vst = os.lstat(path)  # not followed: v1 is graphad's, a link there was planted
    except FileNotFoundError:
        return path, None
    except OSError as e:
        return path, f"cannot inspect {path}: {e.strerror or e}"
    return path, _untrusted_dir(vst, path)


def cache_dir(create: bool = True) -> str | None:
    """The disk cache directory (versioned subfolder), or None when the disk cache is disabled or
    untrusted (then a warning, once, says why; compiled code is kept in memory)."""
    path, why = disk_cache_status(create)
    if why is None:
        return path
    if path is not None:
        _warn_once(("untrusted", path),
                   f"graphad: the disk compile cache is not used ({why}); compiled code is kept in "
                   f"memory. Point GRAPHAD_CACHE_DIR at a directory only you can write "
                   f"(mkdir -m 700 DIR), see docs/security.md")
    return None


def atomic_write(directory: str, name: str, data: bytes) -> None:
    """Write `data` to directory/name all or nothing: temp file in the same directory (named with
    this process's pid, so that a later writer can tell it is stale), fsync, rename."""
    import tempfile  # (on first use: it imports shutil, bz2 and lzma, about 4 ms)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=directory)
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate it elsewhere
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _stale_temp(name: str, st: os.stat_result, now: float) -> bool:
    """Whether the temp file `name` (lstat `st`) was left by a writer that died."""
    m = _TMP_RE.match(name)
    if m is None or not stat.S_ISREG(st.st_mode) or st.st_uid not in _trusted_uids():
        return False
    age = now - st.st_mtime
    if age > STALE_ANY_SECONDS:
        return True
    pid = m.group(2)
    return pid is not None and age > STALE_DEAD_SECONDS and not _pid_alive(int(pid))


def _remove_load_dir(path: str, st: os.stat_result, now: float) -> bool:
    """Remove a private load directory left by an older graphad killed while loading."""
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in _trusted_uids() or now - st.st_mtime < 3600:
        return False
    try:
        for n in os.listdir(path):
            p = os.path.join(path, n)
            if n != "lib.so" or not stat.S_ISREG(os.lstat(p).st_mode):
                return False
            os.unlink(p)
        os.rmdir(path)
        return True
    except OSError:
        return False


def sweep_stale(directory: str) -> int:
    """Delete temp files (and old private load directories) of dead writers; returns how many."""
    now, n = time.time(), 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not name.startswith("."):
            continue
        p = os.path.join(directory, name)
        try:
            st = os.lstat(p)
            if _stale_temp(name, st, now):
                os.unlink(p)
                n += 1
            elif _LOAD_DIR_RE.match(name) and _remove_load_dir(p, st, now):
                n += 1
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return n


@contextmanager
def _file_lock(directory: str, key: str, timeout: float = 600.0):
    """Exclusive flock on <key>.lock; yields True if held, False if locking is unavailable
    (no fcntl, a read-only directory, or a lock file that is a link or not ours: never followed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: atomic publication still holds
        yield False
        return
    path = os.path.join(directory, f"{key}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK, 0o600)
    except OSError:
        yield False
        return
    held = False
    try:
        if _untrusted_file(os.fstat(fd)) is None:
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


# ---------------------------------------------------------------- signatures

def check_signature(meta) -> str | None:
    """Why `meta` (an Executable's signature: inputs, outputs, packed offsets, target, device) is
    malformed, or None. Used for cache manifests and AOT artifacts: a wrong shape or offset there
    would make the runtime read the wrong memory."""
    from .. import dtypes as dt
    from ..errors import GraphadError
    if not isinstance(meta, dict):
        return "the signature is not an object"
    ins, outs = meta.get("inputs"), meta.get("outputs")
    if not isinstance(ins, list) or not isinstance(outs, list):
        return "inputs/outputs are not lists"
    for what, items in (("input", ins), ("output", outs)):
        for i, d in enumerate(items):
            if not isinstance(d, dict):
                return f"{what} {i} is not an object"
            shape = d.get("shape")
            if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
                return f"{what} {i} has a malformed shape {shape!r}"
            try:
                dt.as_dtype(d.get("dtype"))
            except (GraphadError, TypeError, ValueError, KeyError):
                return f"{what} {i} has an unknown dtype {d.get('dtype')!r}"
            if what == "input" and d.get("name") is not None and not isinstance(d.get("name"), str):
                return f"input {i} has a malformed name"
            if what == "output" and not isinstance(d.get("copy", False), bool):
                return f"output {i} has a malformed copy flag"
    packed = meta.get("packed")
    if packed is not None:
        from ..ir.core import TensorType
        from ..lowering import pack_layout
        try:
            want = pack_layout([TensorType(tuple(d["shape"]), d["dtype"]) for d in outs])
        except (GraphadError, TypeError, ValueError, OverflowError) as e:
            return f"outputs that cannot be packed ({e})"
        if packed != want:
            return f"packed offsets {packed!r} do not match the outputs' layout {want!r}"
    if not isinstance(meta.get("target"), str) or meta.get("device", "cpu") not in ("cpu", "cuda"):
        return "malformed target or device"
    return None


def _graph_signature(graph, target) -> dict:
    """What a manifest's signature must say for `graph` (compared with `_signature_differs`).
    `target` None: the host CPU, named in the key by its fingerprint (the manifest must then
    describe a CPU executable; its exact target text is what LLVM said when it was compiled)."""
    from ..lowering import pack_layout
    return {"name": graph.name,
            "inputs": [{"name": n, "shape": [int(s) for s in v.type.shape], "dtype": v.type.dtype.name}
                       for n, v in zip(graph.input_names, graph.inputs)],
            "outputs": [[[int(s) for s in v.type.shape], v.type.dtype.name] for v in graph.outputs],
            "packed": pack_layout([v.type for v in graph.outputs]),
            "target": None if target is None else str(target)}


def _signature_differs(meta: dict, sig: dict) -> str | None:
    if meta.get("name") != sig["name"] or meta.get("inputs") != sig["inputs"]:
        return "its inputs are not the graph's"
    if [[d.get("shape"), d.get("dtype")] for d in meta["outputs"]] != sig["outputs"]:
        return "its outputs are not the graph's"
    if meta.get("packed") not in (None, sig["packed"]):
        return "its packed offsets are not the graph's"
    if sig["target"] is None:
        if meta.get("device", "cpu") != "cpu":
            return "it was compiled for another target"
    elif meta.get("target") != sig["target"]:
        return "it was compiled for another target"
    return None


# ---------------------------------------------------------------- entries

def parse_manifest(raw: bytes, key: str) -> dict:
    """The manifest `raw` of the entry `key`, verified (checksum, names, signature); _BadEntry if not."""
    try:
        man = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError):
        raise _BadEntry("unreadable manifest") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("format_version") != FORMAT_VERSION:
        raise _BadEntry("not a graphad cache manifest of this version")
    if man.get("manifest_sha256") != manifest_checksum(man):
        raise _BadEntry("manifest checksum mismatch (edited, damaged or written by another program)")
    digest = man.get("lib_sha256")
    if (man.get("key") != key or not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest)
            or man.get("lib") != f"{key}.{digest[:16]}.so" or type(man.get("lib_size")) is not int):
        raise _BadEntry("foreign or malformed manifest")
    why = check_signature(man.get("meta"))
    if why:
        raise _BadEntry(f"malformed signature: {why}")
    return man


def _read_manifest(directory: str, key: str) -> dict | None:
    """The verified manifest of `key`; None if absent; _BadEntry if present but not usable."""
    try:
        fd, _ = _open_private(os.path.join(directory, f"{key}.json"))
    except FileNotFoundError:
        return None
    try:
        raw = _read_fd(fd, MANIFEST_MAX_BYTES)
    except OSError as e:
        raise _BadEntry(f"cannot read the manifest: {e}") from None
    finally:
        os.close(fd)
    return parse_manifest(raw, key)


def _load_entry(directory: str, key: str, sig: dict | None = None):
    """(module, manifest, library bytes) of a verified entry; None if absent; _BadEntry if present
    but invalid. Writes nothing (a read-only cache works)."""
    from .executable import load_library_file
    man = _read_manifest(directory, key)
    if man is None:
        return None
    if sig is not None:
        why = _signature_differs(man["meta"], sig)
        if why:
            raise _BadEntry(f"the manifest does not describe this graph: {why}")
    path = os.path.join(directory, man["lib"])
    try:
        fd, st = _open_private(path)
    except FileNotFoundError:
        raise _BadEntry("library file missing") from None
    try:
        data = _read_fd(fd)
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        if digest != man["lib_sha256"] or size != man["lib_size"]:
            raise _BadEntry(f"library hash mismatch ({size} bytes, sha256 {digest[:12]}...)")
        # loaded by path, which must still name the inode just hashed: only this user can rename
        # in the directory, and graphad never rewrites a published library in place
        now = os.stat(path, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _BadEntry("library replaced while it was read")
        module = load_library_file(path, man["meta"].get("device", "cpu"))  # the mapping outlives the file
    finally:
        os.close(fd)
    return module, man, data


def _discard_entry(directory: str, key: str) -> None:
    """Remove the manifest and libraries of `key` (graphad's names only; links are removed, not followed)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = _LIB_RE.match(name)
        if name == f"{key}.json" or (m and m.group(1) == key):
            try:
                st = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _publish(directory: str, key: str, data: bytes, exe, target) -> None:
    """Write the library and then the manifest of `key` (each atomically)."""
    from ..lowering._tvm import tvm_version
    sweep_stale(directory)  # a killed writer's temp files go at the next write
    digest = hashlib.sha256(data).hexdigest()
    lib = f"{key}.{digest[:16]}.so"
    atomic_write(directory, lib, data)
    man = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "lib": lib,
           "lib_sha256": digest, "lib_size": len(data), "meta": exe.meta, "target": str(target),
           "graphad_version": _graphad_version(), "tvm_version": tvm_version(),
           "compile_seconds": exe.compile_seconds, "created": time.time()}
    man["manifest_sha256"] = manifest_checksum(man)
    atomic_write(directory, f"{key}.json", json.dumps(man, sort_keys=True).encode())
    for name in os.listdir(directory):  # libraries of earlier builds of this entry
        m = _LIB_RE.match(name)
        if m and m.group(1) == key and name != lib:
            try:
                if stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode):
                    os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _writable(directory: str) -> bool:
    """Whether to try writing entries into `directory` now (read-only, or failed recently: no)."""
    with _lock:
        failed = _write_failed.get(directory)
    if failed is not None and time.monotonic() - failed < WRITE_RETRY_SECONDS:
        return False
    if not os.access(directory, os.W_OK | os.X_OK):
        _write_failure(directory, "the directory is read-only")
        return False
    return True


def _write_failure(directory: str, why: str) -> None:
    with _lock:
        _write_failed[directory] = time.monotonic()
    _warn_once(("write", directory),
               f"graphad: cannot write the disk compile cache {directory} ({why}); compiled code is kept in "
               f"memory and existing entries are still loaded")


def _store(directory: str, key: str, exe, target) -> None:
    """Publish `exe` (compiled with build_library) as the entry `key`; a failure only warns."""
    data = getattr(exe, "_lib_bytes", None)
    if data is None:  # the library could not be exported or loaded: nothing to store
        from ..lowering.linker import export_workspace
        reason = str(exe.report.get("library", "no library was exported"))
        if export_workspace()[0] is None:  # no room: every export would fail, stop trying for a while
            _write_failure(directory, reason)
        else:  # this graph's library (a TVM export/load bug, no C compiler): the next may be stored
            _warn_once(("export", directory), f"graphad: a compiled graph is kept in memory only, not in the "
                                              f"disk compile cache ({reason})")
        return
    try:
        _publish(directory, key, data, exe, target)
    except OSError as e:  # full or read-only disk, permission denied
        _write_failure(directory, e.strerror or str(e))
    except (TypeError, ValueError) as e:  # a signature that is not JSON: keep it in memory
        _write_failure(directory, f"unserialisable signature: {e}")


# ---------------------------------------------------------------- lookup

def _remember(key: str, exe) -> None:
    with _lock:
        _memory[key] = exe
        _memory.move_to_end(key)
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)


def _from_disk(directory, key, sig=None):
    from .executable import make_executable
    got = _load_entry(directory, key, sig)
    if got is None:
        return None
    module, man, data = got
    return make_executable(module, man["meta"], lib_bytes=data, report={"cache": "disk"},
                           compile_seconds=0.0, source="disk-cache")


def cached_compile(graph, target=None):
    """The Executable of `graph` for `target`: from memory, else disk, else compiled and stored.

    For the host CPU (target None, "cpu", ...) a hit, in memory or on disk, never imports the
    TVM compiler: the key names the CPU by its fingerprint and the library is loaded with the
    TVM runtime alone. The target is resolved (LLVM asked) only to compile, or for other targets.
    """
    from .executable import device_present
    token = target_token(target)
    key = cache_key(graph, target)
    with _lock:
        exe = _memory.get(key)
        if exe is not None:
            _memory.move_to_end(key)
            _stats["memory_hits"] += 1
            return exe
    with _key_lock(key):  # one thread per key compiles; the others then hit memory
        with _lock:
            exe = _memory.get(key)
            if exe is not None:
                _memory.move_to_end(key)
                _stats["memory_hits"] += 1
                return exe
        directory = cache_dir()
        resolved = []

        def tgt():  # the tvm Target, resolved once and only when needed
            if not resolved:
                from ..lowering.targets import resolve_target
                resolved.append(resolve_target(target))
            return resolved[0]
        gpu_missing = "cuda" in token and not device_present({"device": "cuda"})
        if directory is None or gpu_missing:
            exe = _compile(graph, tgt())
            _remember(key, exe)
            return exe
        sig = _graph_signature(graph, None if token.startswith("host-cpu:") else token)
        exe = _try_disk(directory, key, sig, discard=False)
        if exe is None and not _writable(directory):
            exe = _compile(graph, tgt())  # nothing will be stored: no library to export
        elif exe is None:
            with _file_lock(directory, key) as held:
                exe = _try_disk(directory, key, sig, discard=held)
                if exe is None:
                    exe = _compile(graph, tgt(), library=True, directory=directory)
                    _store(directory, key, exe, tgt())
        _remember(key, exe)
        return exe


@contextmanager
def _key_lock(key: str):
    """Hold the lock of `key` (one compile per key at a time); its table entry is dropped when the
    last thread using it leaves, so `_key_locks` does not grow with every graph ever compiled."""
    with _lock:
        entry = _key_locks.get(key)
        if entry is None:
            entry = _key_locks[key] = [threading.Lock(), 0]
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _lock:
            entry[1] -= 1
            # `is entry`: after a fork the child starts a fresh table that this entry is not in
            if entry[1] == 0 and _key_locks.get(key) is entry:
                del _key_locks[key]


def _try_disk(directory, key, sig, discard: bool):
    try:
        exe = _from_disk(directory, key, sig)
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
        from ..lowering.compile_log import note
        note("from", "the disk cache")  # GRAPHAD_LOG_COMPILE=1 says "loaded", not "compiled"
    return exe


def _compile(graph, tgt, library: bool = False, directory: str | None = None):
    from .executable import build_executable, build_library
    t0 = time.perf_counter()
    if library:
        from .kernel_cache import store_for  # kernels compiled before are linked, not rebuilt
        exe = build_library(graph, tgt, kernels=store_for(directory))
    else:
        exe = build_executable(graph, tgt)
    with _lock:
        _stats["misses"] += 1
        _stats["compile_seconds"] += time.perf_counter() - t0
    return exe


# ---------------------------------------------------------------- info / ls / clear

def _scan(directory: str) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of every entry of `directory` (nothing followed)."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in sorted(names):
        try:
            out.append((name, os.lstat(os.path.join(directory, name))))
        except OSError:
            continue
    return out


def _graphad_file(name: str) -> bool:
    return bool(_MANIFEST_RE.match(name) or _LIB_RE.match(name) or _LOCK_RE.match(name) or _TMP_RE.match(name))


def cache_info() -> CacheInfo:
    """Hits (memory and disk), misses, entries, bytes on disk and total compile seconds, as a
    `CacheInfo`."""
    directory = cache_dir(create=False)
    n_disk = n_bytes = 0
    if directory is not None:
        for name, st in _scan(directory):
            if stat.S_ISREG(st.st_mode) and _graphad_file(name):
                n_bytes += st.st_size
                n_disk += bool(_MANIFEST_RE.match(name))
    with _lock:
        return CacheInfo(_stats["memory_hits"], _stats["disk_hits"], _stats["misses"], len(_memory),
                         n_disk, n_bytes, _stats["compile_seconds"], directory)


def list_entries() -> list[tuple[str, dict | None, str | None]]:
    """(key, verified manifest or None, why it is not usable or None) per manifest on disk."""
    path, why = disk_cache_status(create=False)
    if path is None or why is not None:
        return []
    rows = []
    for name, st in _scan(path):
        m = _MANIFEST_RE.match(name)
        if m is None:
            continue
        try:
            man = _read_manifest(path, m.group(1))
            rows.append((m.group(1), man, None if man is not None else "vanished"))
        except _BadEntry as e:
            rows.append((m.group(1), None, str(e)))
    return rows


@dataclass
class EntrySummary:
    """One disk-cache entry as `graphad cache ls` shows it: its key; the graph's name, input and
    output types as (dtype name, shape) pairs; device; creation time (seconds since the epoch, None
    if unreadable) and library size; `problem` says why an entry is unusable (the rest is then empty)."""
    key: str
    name: str = "?"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    device: str = "?"
    created: float | None = None
    lib_size: int | None = None
    problem: str | None = None


def describe_entries() -> list[EntrySummary]:
    """An `EntrySummary` per manifest in the disk cache (read only, links not followed; a manifest
    that fails its checks is listed with the reason), from the verified manifests of `list_entries`."""
    out = []
    for key, man, problem in list_entries():
        if man is None:
            out.append(EntrySummary(key, problem=problem))
            continue
        meta = man["meta"]
        try:
            created = float(man.get("created", 0))
        except (TypeError, ValueError):
            created = None
        out.append(EntrySummary(
            key, name=str(meta.get("name", "?")),
            inputs=[(d["dtype"], tuple(d["shape"])) for d in meta["inputs"]],
            outputs=[(d["dtype"], tuple(d["shape"])) for d in meta["outputs"]],
            device=str(meta.get("device", "cpu")), created=created, lib_size=int(man["lib_size"])))
    return out


def _own_manifest(directory: str, key: str) -> dict | None:
    """The manifest of `key` if it parses as graphad's own (verified, or a graphad manifest that
    was damaged or written before manifests had checksums), else None."""
    try:
        return _read_manifest(directory, key)
    except _BadEntry:
        pass
    try:
        fd, _ = _open_private(os.path.join(directory, f"{key}.json"))
    except (FileNotFoundError, _BadEntry):
        return None
    try:
        man = json.loads(_read_fd(fd, MANIFEST_MAX_BYTES).decode())
    except (OSError, ValueError, UnicodeDecodeError, _BadEntry):
        return None
    finally:
        os.close(fd)
    if isinstance(man, dict) and man.get("format") == FORMAT and man.get("key") == key:
        return man
    return None


def _lib_is_own(path: str, name: str) -> bool:
    """Whether the library file `name` holds what its name says (its hash starts with the name's)."""
    try:
        fd, _ = _open_private(path)
    except (FileNotFoundError, _BadEntry):
        return False
    try:
        return hashlib.sha256(_read_fd(fd)).hexdigest().startswith(_LIB_RE.match(name).group(2))
    except OSError:
        return False
    finally:
        os.close(fd)


def clear_disk_cache() -> ClearResult:
    """Delete graphad's own entries from the disk cache: key-named manifests that parse as
    graphad's, their libraries and lock files, libraries named by their own hash, temp files
    of dead writers, and the kernel cache's packs and index entries (runtime/kernel_cache.py). Anything else (a user's file, a symbolic link, a live writer's temp file) is
    kept and listed; an untrusted or symlinked directory is not touched at all."""
    path, why = disk_cache_status(create=False)
    if path is None or why is not None:
        return ClearResult(0, 0, [], why)
    if not os.path.lexists(path):
        return ClearResult(0, 0, [], None)
    entries = n_bytes = 0
    removed: set[str] = set()
    failed: dict[str, str] = {}  # graphad's own files that stay: name -> why

    def remove(name, st):
        nonlocal n_bytes
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:  # (another process removed it meanwhile)
            removed.add(name)
            return False
        except OSError as e:
            failed[name] = e.strerror or str(e)
            return False
        n_bytes += st.st_size
        removed.add(name)
        return True

    scan = _scan(path)
    stats = dict(scan)
    now = time.time()
    for name, st in scan:  # complete entries first
        m = _MANIFEST_RE.match(name)
        if m is None or not stat.S_ISREG(st.st_mode):
            continue
        man = _own_manifest(path, m.group(1))
        if man is None:
            continue
        lib = man.get("lib")
        if isinstance(lib, str) and _LIB_RE.match(lib) and lib.startswith(m.group(1)) and lib in stats \
                and stat.S_ISREG(stats[lib].st_mode):
            remove(lib, stats[lib])
        entries += remove(name, st)
    for name, st in scan:  # then what graphad leaves around entries
        if name in removed or not stat.S_ISREG(st.st_mode) or st.st_uid not in _trusted_uids():
            continue
        if _LIB_RE.match(name) and _lib_is_own(os.path.join(path, name), name):
            remove(name, st)
        elif _LOCK_RE.match(name) and st.st_size == 0:
            remove(name, st)
        elif _stale_temp(name, st, now):
            remove(name, st)
    for name, st in scan:
        if _LOAD_DIR_RE.match(name) and _remove_load_dir(os.path.join(path, name), st, now):
            removed.add(name)
    from . import kernel_cache
    k_packs, k_bytes, k_failed = kernel_cache.clear(path)
    kdir = os.path.join(path, kernel_cache.SUBDIR)
    if not os.path.lexists(kdir):
        removed.add(kernel_cache.SUBDIR)
    if k_failed:  # graphad's own packs stayed: not "files that are not graphad's"
        failed.update(k_failed)
        removed.add(kernel_cache.SUBDIR)
    kept = [name for name, _ in scan if name not in removed and name not in failed]
    if kernel_cache.SUBDIR in kept:
        try:
            why = _untrusted_dir(os.lstat(kdir), kdir)
        except OSError as e:
            why = str(e)
        kept[kept.index(kernel_cache.SUBDIR)] = (f"{kernel_cache.SUBDIR}/ (not used: {why})" if why else
                                                 f"{kernel_cache.SUBDIR}/ (holds files that are not graphad's)")
    return ClearResult(entries, n_bytes, kept, None, k_packs, k_bytes, sorted(failed.items()))


# run by cache_clear: the layers above forget what they hold of compiled code (the frontend's
# staged graphs, registered there; the runtime cannot import the frontend)
CLEAR_HOOKS: list = []


def cache_clear(disk: bool = True) -> None:
    """Forget every in-memory entry, the counters and the warnings given, and the staged
    (traced and compiled) forms of transformed functions, so that the next call of any of them
    looks its executable up (or compiles) again; with `disk`, delete graphad's entries from the
    disk cache directory as well (compiled functions and kernels; any other file there is kept,
    and a directory that is not trusted is not touched)."""
    for hook in list(CLEAR_HOOKS):
        hook()
    with _lock:
        _memory.clear()
        _key_locks.clear()
        _warned.clear()
        _write_failed.clear()
        for k in _stats:
            _stats[k] = 0.0 if k == "compile_seconds" else 0
    if disk:
        clear_disk_cache()
