"""Ahead-of-time artifacts: one file holding a compiled graph, loadable in a fresh process.

A self-contained file rather than a directory: it is published atomically (a reader sees the old
artifact or the new one, never a library beside another build's manifest) and copied as one.
`load_executable` also reads an artifact unpacked into a directory holding the same members
(`unzip model.gdx -d model/`), with the same checks. Loading needs only the TVM runtime, never
the compiler (runtime/tvmrt.py): the CPU checks read /proc/cpuinfo.

An artifact is a zip archive (stored, CRC-checked) with two or three members:
    graphad-manifest.json  format, versions, target (+ the CPU features its code may use), the
                           call signature, the caller's manifest, the library's SHA-256/size
                           and `manifest_sha256`, a SHA-256 over all of the above
    lib.so                 the exported shared library (Relax VM bytecode + kernels)
    lib-K.so               (format version 2 only) the other libraries of a graph with control
                           flow: the manifest's `host_program` holds the graph text and, per
                           segment or region in construction order, its role and library index
                           (runtime/host.HostProgram.export_tree); `libs` their SHA-256/size
    graphad-signature.json with a key only: HMAC-SHA256 under that key of the manifest's exact
                           bytes (which hold the library's SHA-256, so the library is covered)
`load_executable` compiles nothing: it checks everything, writes the library to a private temp
file, dlopens it and builds the VM. It raises ArtifactError, with the reason, for a file that is
not an artifact, truncated, altered (either member), of another format version, built by a
graphad or TVM release of another major.minor, or compiled for a device or CPU features this
machine lacks.

Trust model (docs/security.md): the library is native code that runs when it is loaded. Without
a key the checks give integrity only (accidental damage, a version mismatch): anyone can write a
consistent artifact. With `key=`, `load_executable` first checks the HMAC (constant-time), before
parsing the manifest and long before the library is mapped, and refuses an unsigned artifact or
one signed with another key: only a holder of the key can make an artifact that loads.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import zipfile

from ..errors import ArtifactError
from .cache import atomic_write

FORMAT = "graphad-aot"
FORMAT_VERSION = 1       # one library
HOST_FORMAT_VERSION = 2  # a graph with control flow: several libraries and the graph
MANIFEST = "graphad-manifest.json"
LIBRARY = "lib.so"
SIGNATURE = "graphad-signature.json"
_MAC_CONTEXT = b"graphad-aot-signature/1\0"  # domain separation: this key's MACs mean only this


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _major_minor(v: str) -> str:
    parts = str(v).split(".")
    return ".".join(parts[:2])


def _versions() -> tuple[str, str]:
    from .._version import __version__
    from ..lowering._tvm import tvm_version
    return str(__version__), tvm_version()


def _key_bytes(key) -> bytes:
    """The HMAC key as bytes (str is UTF-8 encoded); ArtifactError for an empty or non-key value."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ArtifactError(f"an artifact key must be bytes or str, got {type(key).__name__}")
    key = bytes(key)
    if not key:
        raise ArtifactError("an artifact key must not be empty")
    return key


def _mac(key: bytes, raw_manifest: bytes) -> str:
    return hmac.new(key, _MAC_CONTEXT + raw_manifest, hashlib.sha256).hexdigest()


def check_destination(path, who: str | None = None) -> str:
    """The directory the artifact `path` will be written into; ArtifactError, naming `path` as
    given (and `who`, the function, if given), when that directory does not exist or is not one."""
    given = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(given))
    if not os.path.isdir(directory):
        prefix = f"{who}: " if who else ""
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ArtifactError(f"{prefix}cannot save the artifact {given!r}: the directory {directory!r} {what}; "
                            f"create it first (os.makedirs) or give a path in an existing directory")
    return directory


def save_executable(exe, path, manifest: dict | None = None, *, key=None, who: str | None = None) -> str:
    """Write `exe` and the caller's JSON-able `manifest` to the artifact file `path` (atomically).

    With `key` (bytes or str), the artifact is signed with HMAC-SHA256 under it; `load_executable`
    given the same key then refuses anything else (see the module docstring). A path whose
    directory does not exist, or that cannot be written, raises ArtifactError naming `path` (and
    `who`, the function saved, if given), not the temporary file the write goes through.
    """
    from ..lowering.targets import cpu_features, resolve_target
    directory = check_destination(path, who)
    mac_key = _key_bytes(key) if key is not None else None
    manifest = dict(manifest or {})
    try:
        _canonical(manifest)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"the artifact manifest must be JSON-serialisable: {e}") from None
    from .host import HostProgram
    libs: list = []
    tree = exe.export_tree(libs) if isinstance(exe, HostProgram) else None
    if tree is None:
        libs = [exe.library_bytes()]
    elif not libs:
        raise ArtifactError("this program has no compiled piece to save")
    lib = libs[0]
    gv, tv = _versions()
    meta = exe.meta
    features = []
    if meta.get("device", "cpu") == "cpu":
        from ..lowering._tvm import load_tvm
        tvm = load_tvm()
        features = cpu_features(resolve_target(tvm.target.Target(meta["target"])))
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION if tree is None else HOST_FORMAT_VERSION,
        "graphad_version": gv, "tvm_version": tv,
        "target": meta["target"], "device": meta.get("device", "cpu"), "cpu_features": features,
        "signature": meta, "manifest": manifest,
        "lib_sha256": hashlib.sha256(lib).hexdigest(), "lib_size": len(lib),
    }
    if tree is not None:
        record["host_program"] = tree
        record["libs"] = [{"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for b in libs[1:]]
    record["manifest_sha256"] = hashlib.sha256(_canonical(record)).hexdigest()
    path = os.fspath(path)
    raw = json.dumps(record, sort_keys=True, indent=1).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(MANIFEST, raw)
        z.writestr(LIBRARY, lib)
        for k, b in enumerate(libs[1:], 1):
            z.writestr(f"lib-{k}.so", b)
        if mac_key is not None:
            z.writestr(SIGNATURE, json.dumps({"alg": "HMAC-SHA256", "mac": _mac(mac_key, raw)}))
    try:
        atomic_write(directory, os.path.basename(path), buf.getvalue())
    except OSError as e:  # (the temporary file's name would say nothing to the user)
        prefix = f"{who}: " if who else ""
        raise ArtifactError(f"{prefix}cannot save the artifact {path!r}: {e.strerror or e}") from None
    return path


def read_artifact_manifest(path, *, key=None) -> dict:
    """The full, verified manifest record of an artifact (without loading its library); with
    `key`, only if the artifact is signed with it."""
    record, _ = _read(path, key)
    return record


def _check_mac(path, names, z, raw: bytes, key) -> None:
    """ArtifactError unless the artifact carries a valid HMAC of `raw` (its manifest) under `key`."""
    mac_key = _key_bytes(key)
    if SIGNATURE not in names:
        raise ArtifactError(f"{path!r} is not signed (it was saved without a key); refusing to load it "
                            f"when a key is given (key=...)")
    try:
        sig = json.loads(z.read(SIGNATURE).decode())
        claimed = sig["mac"] if isinstance(sig, dict) and sig.get("alg") == "HMAC-SHA256" else None
    except (ValueError, UnicodeDecodeError, KeyError, zipfile.BadZipFile, OSError):
        claimed = None
    if not isinstance(claimed, str) or not hmac.compare_digest(claimed.encode("ascii", "replace"),
                                                               _mac(mac_key, raw).encode()):
        raise ArtifactError(f"{path!r}: the signature does not match this key (the artifact was altered "
                            f"or signed with another key); refusing to load it")


_EXTRA_LIB = re.compile(r"lib-[0-9]+\.so")


class _UnpackedArtifact:
    """An artifact unpacked into a directory (`unzip model.gdx -d model/`), read like the archive:
    the same members and the same checks (the manifest's hashes cover the library)."""

    def __init__(self, path: str):
        self.path = path

    def namelist(self) -> list[str]:
        """The artifact members present in the directory."""
        names = [n for n in (MANIFEST, LIBRARY, SIGNATURE) if os.path.isfile(os.path.join(self.path, n))]
        return names + sorted(n for n in os.listdir(self.path) if _EXTRA_LIB.fullmatch(n))

    def read(self, name: str) -> bytes:
        """The bytes of member `name`."""
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read()


def _members(path: str, key) -> tuple[bytes, bytes, dict]:
    """(manifest bytes, library bytes, {name: bytes} of the other libraries) of the artifact file
    or unpacked directory `path`; with `key`, only after its signature checked out (before any
    library is even read)."""
    if os.path.isdir(path):
        z = _UnpackedArtifact(path)
        names = set(z.namelist())
        if MANIFEST not in names or LIBRARY not in names:
            raise ArtifactError(f"{path!r} is a directory without the members of a graphad artifact "
                                f"({MANIFEST}, {LIBRARY})")
        try:
            raw = z.read(MANIFEST)
            if key is not None:
                _check_mac(path, names, z, raw, key)
            return raw, z.read(LIBRARY), {n: z.read(n) for n in names if _EXTRA_LIB.fullmatch(n)}
        except OSError as e:
            raise ArtifactError(f"cannot read artifact {path!r}: {e.strerror or e}") from None
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ArtifactError(f"cannot read artifact {path!r}: {e.strerror or e}") from None
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            names = set(z.namelist())
            if MANIFEST not in names or LIBRARY not in names:
                raise ArtifactError(f"{path!r} is not a graphad artifact (members: {sorted(names)[:5]})")
            raw = z.read(MANIFEST)
            if key is not None:  # authenticity first: nothing unauthenticated is even parsed
                _check_mac(path, names, z, raw, key)
            # z.read verifies the CRC-32
            return raw, z.read(LIBRARY), {n: z.read(n) for n in names if _EXTRA_LIB.fullmatch(n)}
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise ArtifactError(f"{path!r} is truncated, corrupted or not a graphad artifact ({e})") from None


def _read(path, key=None) -> tuple[dict, bytes]:
    """(verified manifest record, library bytes) of an artifact; ArtifactError with the reason."""
    record, libs = _read_all(path, key)
    return record, libs[0]


def _read_all(path, key=None) -> tuple[dict, list]:
    """(verified manifest record, [library bytes, ...]) of an artifact (several libraries in
    format version 2); ArtifactError with the reason."""
    path = os.fspath(path)
    raw, lib, extra = _members(path, key)
    try:
        record = json.loads(raw.decode())
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path!r}: unreadable manifest ({e})") from None
    if record.get("format") != FORMAT:
        raise ArtifactError(f"{path!r} is not a graphad artifact (format {record.get('format')!r})")
    if record.get("format_version") not in (FORMAT_VERSION, HOST_FORMAT_VERSION):
        raise ArtifactError(f"{path!r} has artifact format version {record.get('format_version')!r}; "
                            f"this graphad reads versions {FORMAT_VERSION} and {HOST_FORMAT_VERSION}")
    claimed = record.pop("manifest_sha256", None)
    if claimed != hashlib.sha256(_canonical(record)).hexdigest():
        raise ArtifactError(f"{path!r}: the manifest was modified after the artifact was written "
                            f"(manifest hash mismatch)")
    record["manifest_sha256"] = claimed
    if len(lib) != record.get("lib_size") or hashlib.sha256(lib).hexdigest() != record.get("lib_sha256"):
        raise ArtifactError(f"{path!r}: the compiled library was modified or truncated (content hash mismatch)")
    libs = [lib]
    want = record.get("libs", []) if record["format_version"] == HOST_FORMAT_VERSION else []
    if not isinstance(want, list) or (record["format_version"] == HOST_FORMAT_VERSION
                                      and not isinstance(record.get("host_program"), dict)):
        raise ArtifactError(f"{path!r}: a control-flow artifact without its program description")
    for k, w in enumerate(want, 1):
        b = extra.get(f"lib-{k}.so")
        if b is None or not isinstance(w, dict) or len(b) != w.get("size") or \
                hashlib.sha256(b).hexdigest() != w.get("sha256"):
            raise ArtifactError(f"{path!r}: library lib-{k}.so is missing, modified or truncated")
        libs.append(b)
    if len(extra) != len(want):
        raise ArtifactError(f"{path!r}: the artifact holds libraries its manifest does not list")
    return record, libs


# the CPU features whose absence makes compiled code fault (illegal instruction): LLVM's names of
# the instruction-set extensions its code generator may select for ordinary code (by family and
# by name). The rest of LLVM's feature list is tuning ("fast-lzcnt", "macrofusion", ...), which
# changes no instruction's legality, or system instructions (mwaitx, rdpru, xsave, ...) that only
# intrinsics reach, which kernels never call and which a virtual machine's /proc/cpuinfo may hide
_ISA_PREFIXES = ("avx", "sse", "fma", "amx", "bmi", "f16c")
_ISA_NAMES = frozenset({"ssse3", "popcnt", "lzcnt", "movbe", "adx", "cx16", "sahf", "crc32", "gfni", "aes",
                        "vaes", "pclmul", "vpclmulqdq", "sha", "prfchw", "tbm", "xop"})


def _is_isa(feature) -> bool:
    f = str(feature)
    return f.startswith(_ISA_PREFIXES) or f in _ISA_NAMES


def _check_compatible(path, record) -> None:
    """ArtifactError unless this process can run the artifact: same TVM and graphad major.minor, a
    well-formed signature, and its device here (for the CPU: the architecture and the ISA
    features its code may use). The CPU checks read /proc/cpuinfo, not LLVM, so that loading
    never imports the TVM compiler; LLVM is asked only when the flags cannot confirm them."""
    gv, tv = _versions()
    if _major_minor(record.get("tvm_version", "")) != _major_minor(tv):
        raise ArtifactError(f"{path!r} was built with TVM {record.get('tvm_version')}; this process has TVM {tv} "
                            f"(recompile the artifact)")
    if _major_minor(record.get("graphad_version", "")) != _major_minor(gv):
        raise ArtifactError(f"{path!r} was built with graphad {record.get('graphad_version')}; this is graphad {gv} "
                            f"(recompile the artifact)")
    from .cache import check_signature
    why = check_signature(record.get("signature"))
    if why:
        raise ArtifactError(f"{path!r}: malformed signature in the manifest ({why})")
    device = record.get("device", "cpu")
    if device == "cuda":
        from ..lowering._tvm import load_tvm
        if not load_tvm().cuda(0).exist:
            raise ArtifactError(f"{path!r} was compiled for CUDA ({record.get('target')}); this machine has no "
                                f"CUDA GPU")
        return
    if not _cpu_confirmed(path, record):
        _check_cpu_with_llvm(path, record)


def _cpu_confirmed(path, record) -> bool:
    """True when the host's architecture and /proc/cpuinfo flags show everything the artifact's
    code may use; ArtifactError for another architecture; False when that cannot be told
    without LLVM (no /proc/cpuinfo, a target text that is not JSON, a feature the flags name
    differently)."""
    from .tvmrt import host_arch, target_arch, unconfirmed_features
    arch = target_arch(str(record.get("target", "")))
    if arch is None:
        return False
    if arch != host_arch():
        raise ArtifactError(f"{path!r} was compiled for {arch}; this machine is {host_arch()}")
    need = [f for f in record.get("cpu_features") or [] if _is_isa(f)]
    missing = unconfirmed_features(need)
    return missing == []


def _check_cpu_with_llvm(path, record) -> None:
    """The CPU checks of `_check_compatible` with LLVM's view of this host (imports the compiler)."""
    from ..lowering._tvm import load_tvm
    tvm = load_tvm()
    try:
        target = tvm.target.Target(record["target"])
        arch = str(target.attrs.get("mtriple", "")).split("-")[0]
    except Exception:
        raise ArtifactError(f"{path!r}: unknown target {record.get('target')!r}") from None
    from ..lowering.targets import cpu_features, host_target
    host = host_target()
    host_arch = str(host.attrs.get("mtriple", "")).split("-")[0]
    if arch and host_arch and arch != host_arch:
        raise ArtifactError(f"{path!r} was compiled for {arch}; this machine is {host_arch}")
    need = set(record.get("cpu_features") or [])
    have = set(cpu_features(host))
    if need and have:
        lacking = sorted(f for f in need - have if _is_isa(f))
        if lacking:
            raise ArtifactError(f"{path!r} was compiled for a CPU with {', '.join(lacking[:6])}, which this CPU "
                                f"({host.attrs.get('mcpu')}) lacks; recompile it here")


def load_executable(path, *, key=None):
    """(Executable, caller's manifest) from an artifact written by `save_executable`. Compiles nothing.

    With `key`, an artifact that is not signed with it is refused before its library is mapped.
    """
    from .executable import load_library_bytes, make_executable
    record, libs = _read_all(path, key)
    _check_compatible(path, record)

    def load(index: int, signature: dict):
        lib = libs[index]
        try:
            module = load_library_bytes(lib, device=record.get("device", "cpu"))
        except Exception as e:
            lines = str(e).strip().splitlines()
            raise ArtifactError(f"{os.fspath(path)!r}: the library does not load "
                                f"({lines[-1] if lines else type(e).__name__})") from None
        return make_executable(module, signature, lib_bytes=lib, report={"artifact": os.fspath(path)},
                               source="artifact")

    if "host_program" in record:
        from ..errors import GraphadError
        from .host import HostProgram
        try:
            exe = HostProgram.from_tree(record["host_program"], load)
        except ArtifactError:
            raise
        except (GraphadError, KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{os.fspath(path)!r}: its control-flow program does not load ({e})") from None
    else:
        exe = load(0, record["signature"])
    return exe, record.get("manifest", {})
