"""The kernel cache: compiled kernels (object files) on disk, shared by every graph.

A graph that misses the executable cache (runtime/cache.py) is compiled through this store
(lowering/kernel_objects.py): each kernel has a key (SHA-256 of its TIR up to names, target, TVM
release and lowering revision); the kernels the store holds are linked from their packs, the
others compiled into one new pack kept here. So a new graph that contains kernels of shapes seen
before (a deeper model, a train step after its gradient, the same layer in another network)
links their code instead of compiling it again.

Layout, inside the disk cache's versioned directory:
    kernels/p.<sha256>.o               a pack: the object code of the kernels one build compiled,
                                       named by its content hash
    kernels/<key>.<sha256>.k           an index entry (empty): kernel <key> is in pack p.<sha256>.o
    kernels/.<name>.<pid>.<rnd>.tmp    a file being written by process <pid>

Trust is the executable cache's (docs/security.md): the directory must be this user's and not
writable by group or others, and not a symbolic link; a pack is read through O_NOFOLLOW, only if
it is a regular file of this user (or root) not writable by others, and used only if its SHA-256
is its name; a pack that fails is removed (its kernels are compiled again). The bytes checked are
the bytes linked (copied into the build's private directory), so a file replaced after the check
is never linked. A pack is written atomically (temp file, fsync, rename) before its index entries
(empty files, created exclusively).
Set GRAPHAD_NO_KERNEL_CACHE=1 to compile every kernel of every graph (the executable cache still
works); GRAPHAD_NO_DISK_CACHE=1 turns both off.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat

from . import cache

SUBDIR = "kernels"
PACK_MAX_BYTES = 1 << 30
_PACK_RE = re.compile(r"^p\.([0-9a-f]{64})\.o$")
_INDEX_RE = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{64})\.k$")


def kernel_dir(directory: str, create: bool = True) -> str | None:
    """The kernel directory inside the disk cache `directory`, or None when it is absent (and not
    `create`d) or must not be used (a link, or other people's: then a warning, once, says why).
    OSError when it cannot be created."""
    path = os.path.join(directory, SUBDIR)
    if create and not os.path.lexists(path):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        why = cache._untrusted_dir(os.lstat(path), path)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = f"cannot inspect {path}: {e.strerror or e}"
    if why:
        cache._warn_once(("kernels", path), f"graphad: the kernel cache is not used ({why})")
        return None
    return path


class DiskKernelStore:
    """kernel_objects.KernelStore over one kernel directory; counts the kernels it served and
    the packs it kept."""

    def __init__(self, path: str):
        self.path = path
        self.hits = self.stored = 0
        self._index: dict[str, set[str]] = {}  # kernel key -> hashes of the packs said to hold it
        self._served: list[tuple[str, str]] = []  # (key, pack hash) that get() answered
        try:
            for name in os.listdir(path):
                m = _INDEX_RE.match(name)
                if m:
                    self._index.setdefault(m.group(1), set()).add(m.group(2))
        except OSError:
            pass

    def get(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """{key: (pack hash, verified pack bytes)} for the keys some intact pack holds."""
        loaded: dict[str, bytes | None] = {}
        out = {}
        for key in keys:
            for digest in sorted(self._index.get(key, ())):
                if digest not in loaded:
                    loaded[digest] = self._read_pack(digest)
                if loaded[digest] is not None:
                    out[key] = (digest, loaded[digest])
                    self._served.append((key, digest))
                    break
        self.hits += len(out)
        return out

    def forget_served(self) -> None:
        """Remove the index entries get() answered with: the library linked from them failed (an
        entry pointing at a wrong pack, say), and kept they would fail every later build the same
        way; their kernels are compiled and indexed again the next time."""
        for key, digest in self._served:
            self._discard(f"{key}.{digest}.k")
            self._index.get(key, set()).discard(digest)
        self._served.clear()

    def contents(self, pack: str) -> set[str]:
        """The keys whose index entries name the pack `pack` (every kernel it holds, unless an
        entry was lost in a crash)."""
        return {key for key, packs in self._index.items() if pack in packs}

    def _read_pack(self, digest: str) -> bytes | None:
        name = f"p.{digest}.o"
        try:
            fd, _ = cache._open_private(os.path.join(self.path, name))
        except FileNotFoundError:
            return None
        except cache._BadEntry:
            self._discard(name)
            return None
        try:
            data = cache._read_fd(fd, PACK_MAX_BYTES)
        except (OSError, cache._BadEntry):
            data = None
        finally:
            os.close(fd)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            self._discard(name)
            return None
        return data

    def put(self, keys: list[str], data: bytes) -> None:
        """Keep the pack `data` and index it under `keys`. A failed write warns as the disk
        cache's do (once per directory, and no writes there for a while: runtime/cache.py)."""
        digest = hashlib.sha256(data).hexdigest()
        parent = os.path.dirname(self.path)
        made = False
        try:
            if not os.path.lexists(self.path):
                made = True
                if kernel_dir(parent, create=True) is None:
                    return  # made meanwhile by someone else: not ours to write into
            cache.sweep_stale(self.path)
            cache.atomic_write(self.path, f"p.{digest}.o", data)
            for key in keys:
                if digest not in self._index.get(key, ()):
                    self._touch(f"{key}.{digest}.k")
                    self._index.setdefault(key, set()).add(digest)
        except OSError as e:  # full or read-only disk: one warning for the whole disk cache
            cache._write_failure(parent, e.strerror or str(e))
            if made:  # leave nothing behind
                try:
                    os.rmdir(self.path)
                except OSError:
                    pass
            return
        self.stored += 1

    def _touch(self, name: str) -> None:
        # an empty file is complete the moment it exists: no temp file, no fsync (an entry lost
        # in a crash is a kernel compiled again, never a wrong one)
        try:
            os.close(os.open(os.path.join(self.path, name),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | cache._NOFOLLOW | cache._CLOEXEC, 0o600))
        except FileExistsError:
            pass

    def _discard(self, name: str) -> None:
        try:
            mode = os.lstat(os.path.join(self.path, name)).st_mode
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):  # a link is removed, never followed
                os.unlink(os.path.join(self.path, name))
        except OSError:  # gone already, or not ours to remove
            pass


def store_for(directory: str | None) -> DiskKernelStore | None:
    """The kernel store of the disk cache `directory` (None: no disk cache, switched off, or a
    platform where kernel objects are not linked)."""
    from ..lowering.kernel_objects import supported
    if directory is None or not supported():
        return None
    path = os.path.join(directory, SUBDIR)
    if os.path.lexists(path) and kernel_dir(directory, create=False) is None:
        return None  # untrusted: warned
    return DiskKernelStore(path)  # (created when the first pack is stored)


def clear(directory: str) -> tuple[int, int, list]:
    """Remove this cache's packs and index entries (and stale temp files) from `directory`'s
    kernel directory, then the directory if it is left empty; returns (packs removed, bytes,
    [(name, why)] of its own files it could not remove: a read-only directory). A link or a
    directory others can write is left alone."""
    path = os.path.join(directory, SUBDIR)
    try:
        if cache._untrusted_dir(os.lstat(path), path):
            return 0, 0, []
        names = os.listdir(path)
    except OSError:
        return 0, 0, []
    n = n_bytes = 0
    failed = []
    for name in names:
        p = os.path.join(path, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (_PACK_RE.match(name) or _INDEX_RE.match(name)) and stat.S_ISREG(st.st_mode) and st.st_uid in cache._trusted_uids():
            try:
                os.unlink(p)
            except FileNotFoundError:  # (another process cleared it meanwhile)
                continue
            except OSError as e:
                failed.append((f"{SUBDIR}/{name}", e.strerror or str(e)))
                continue
            n += bool(_PACK_RE.match(name))
            n_bytes += st.st_size
    cache.sweep_stale(path)
    try:
        os.rmdir(path)
    except OSError:  # something else is in there: kept
        pass
    return n, n_bytes, failed


def summary(directory: str) -> tuple[int, int, int, str | None]:
    """(kernels whose pack is present, packs, bytes of the packs, why the kernel cache is not used
    or None) for `directory`'s kernel directory (read only; a link or a directory others can
    write is not looked into)."""
    path = os.path.join(directory, SUBDIR)
    try:
        why = cache._untrusted_dir(os.lstat(path), path)
    except FileNotFoundError:
        return 0, 0, 0, None
    except OSError as e:
        why = f"cannot inspect {path}: {e.strerror or e}"
    if why:
        return 0, 0, 0, why
    index: dict[str, set] = {}
    packs: dict[str, int] = {}
    try:
        names = os.listdir(path)
    except OSError as e:
        return 0, 0, 0, f"cannot list {path}: {e.strerror or e}"
    for name in names:
        m = _INDEX_RE.match(name)
        if m:
            index.setdefault(m.group(1), set()).add(m.group(2))
        elif _PACK_RE.match(name):
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                packs[_PACK_RE.match(name).group(1)] = st.st_size
    kernels = sum(1 for digests in index.values() if digests & packs.keys())
    return kernels, len(packs), sum(packs.values()), None
