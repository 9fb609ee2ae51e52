"""Linking a compiled graph's object files into a shared library without the compiler driver.

TVM links through the C++ compiler driver (`tvm.support.cc.create_shared`: `g++ -shared -fPIC
-o lib.so ... objects`). On this project's machine that took 16-17 ms for a small library, of
which the linker's own work is a few ms. The driver's link command does not depend on the
objects, so it is asked for once per process (`g++ -shared -fPIC -o OUT IN -###`, which prints
the command and runs nothing) and then run directly for every library, with the objects and the
options in the place the driver gives them: the same linker, the same start and end files (crti,
crtbeginS, ...), the same search paths and libraries in the same order, less three things:
GCC's LTO plugin arguments (graphad's objects hold machine code, never LTO bitcode), collect2
(GCC's wrapper that runs the real linker, `-print-prog-name=ld`, with those arguments) and the
C++ library (-lstdc++: the C driver's command, in effect; generated host code calls C functions
only, and a library linked with `-z now` that lacked a symbol would fail to load, loudly). The
same small library: 7.7 ms (13 with -lstdc++).

Of the C libraries the command names (-lm -lgcc_s -lc -lgcc_s), linked `--as-needed`, the
linker reads every one in full, though only those defining a symbol the objects use are
recorded: `without_unused_libraries` leaves out the others (elf_symbols.py reads the objects'
undefined symbols and looks them up in the libraries' hash tables), which makes the same
library, byte for byte; hvp's 11.7-14.8 ms link took 7.5-9 ms with -lm alone, and a library
calling no C function links in about 4.5 ms.

The direct command is used where the driver is GCC or Clang on Linux and the options are all
linker options (`-Wl,...`, which is all graphad passes); otherwise, and for every later link
once a direct link has failed where the driver's then succeeded (a warning, once: the library
is the same, only slower to make), `create_shared` calls TVM's.

Where object files and libraries may be written at all (`export_workspace`: LLVM ends the
process when a write fails) and the object code of one module (`object_code`, for the groups
of a split build, each in its own thread) are here too.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache

from .compile_log import note

_OUT = "/graphad-link-output.so"
_IN = "/graphad-link-input.o"
_COLLECT2 = ("collect2",)
_LINKERS = ("ld", "ld.bfd", "ld.gold", "ld.lld", "lld", "mold", "ld.mold")
_CXX_LIBS = ("-lstdc++", "-lc++")
_LOCK = threading.Lock()
_BROKEN: list[str] = []  # why the direct link was given up in this process (at most one entry)


def _driver() -> list[str] | None:
    """The C++ compiler TVM would link with (its get_cc: $CXX, $CC, then g++, gcc, clang++, ...),
    as an argument list; None where TVM finds none."""
    from ._tvm import load_tvm
    load_tvm()
    from tvm.support import cc
    found = cc.get_cc()
    return shlex.split(found) if found else None


@lru_cache(maxsize=1)
def recipe() -> tuple[str, ...] | None:
    """The driver's link command for `-shared -fPIC -o _OUT _IN`, its linker resolved and LTO
    plugin arguments dropped; None where it cannot be run directly (see the module docstring),
    or where finding out failed in any way (the driver's link is used then)."""
    try:
        return _recipe()
    except Exception:  # noqa: BLE001 - an odd $CXX, a driver that hangs or prints something else
        return None


def _recipe() -> tuple[str, ...] | None:
    if not sys.platform.startswith("linux"):
        return None
    driver = _driver()
    if not driver or shutil.which(driver[0]) is None:
        return None
    p = subprocess.run(driver + ["-shared", "-fPIC", "-o", _OUT, _IN, "-###"], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        return None
    lines = [ln for ln in p.stderr.splitlines() if _OUT in ln and _IN in ln and not ln.startswith("COLLECT_")]
    if len(lines) != 1:
        return None
    cmd = shlex.split(lines[0])
    tool = os.path.basename(cmd[0])
    if tool in _COLLECT2:
        ld = subprocess.run(driver + ["-print-prog-name=ld"], capture_output=True, text=True, timeout=60).stdout.strip()
        ld = shutil.which(ld) if ld else None
        if ld is None:
            return None
        cmd[0] = ld
    elif tool not in _LINKERS:
        return None
    if any(a.startswith("-fuse-ld") for a in cmd):
        return None  # the driver picks another linker, which collect2 would run: not ours to guess
    out, skip = [], False
    for arg in cmd:
        if skip:
            skip = False
            continue
        if arg == "-plugin":
            skip = True
            continue
        if arg.startswith("-plugin-opt=") or arg.startswith("-plugin="):
            continue
        out.append(arg)
    if out.count(_IN) != 1 or out.count(_OUT) != 1:
        return None
    # the C++ library: scanning it is most of the linker's time (7 of 13 ms for a small library),
    # and graphad's objects never call into it (--as-needed already kept it out of every library)
    return tuple(a for a in out if a not in _CXX_LIBS)


def _linker_options(options) -> list[str] | None:
    """`-Wl,a,b` options as the linker's own arguments `a b`; None if any is not a linker option."""
    args = []
    for opt in options or ():
        if not opt.startswith("-Wl,"):
            return None
        args += opt[len("-Wl,"):].split(",")
    return args


def available() -> bool:
    """Whether libraries are linked directly here (not through the compiler driver)."""
    return not _BROKEN and recipe() is not None


def create_shared(output: str, objects, options=None, **kwargs) -> None:
    """Link `objects` (paths) with `options` into the shared library `output`, directly where the
    recipe allows, else through TVM's `create_shared` (the compiler driver). Raises what TVM's
    raises when the driver's link fails too."""
    from tvm.support import cc
    objects = [objects] if isinstance(objects, str) else list(objects)
    cmd = recipe() if not _BROKEN and not kwargs else None
    extra = _linker_options(options) if cmd is not None else None
    why = None
    if cmd is not None and extra is not None:
        i = cmd.index(_IN)
        argv = [output if a == _OUT else a for a in (*cmd[:i], *objects, *extra, *cmd[i + 1:])]
        argv = without_unused_libraries(argv, objects, extra)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            ok, why = p.returncode == 0, (p.stderr or p.stdout).strip()
        except (OSError, subprocess.SubprocessError) as e:
            ok, why = False, str(e)
        if ok:
            note("linker", os.path.basename(argv[0]))
            return
    # the driver's link; after a failed direct one: should it fail too, the objects or options are
    # at fault (raised as TVM raises it); should it succeed, the direct command was wrong here
    cc.create_shared(output, objects, options=options, **kwargs)
    note("linker", "driver")
    if why is not None:
        _give_up(why)


# Options of the linker that take the next argument, and options known not to change how
# libraries are found or recorded; a command holding any other option is left whole.
_OPTION_ARGS = ("-o", "-m", "-z", "-L", "--defsym", "-soname", "-h", "-rpath", "-rpath-link")
_OPTIONS_KEPT = ("-shared", "--build-id", "--eh-frame-hdr", "--as-needed", "--no-as-needed", "-EL", "-X",
                 "--no-add-needed", "--no-copy-dt-needed-entries", "--enable-new-dtags", "--disable-new-dtags")
_OPTION_PREFIXES_KEPT = ("--hash-style=", "--build-id=", "-L", "--defsym=", "-soname=", "-rpath=", "-z")


def without_unused_libraries(argv: list[str], objects, options=()) -> list[str]:
    """`argv` (a direct link command) less the `-lNAME` libraries, linked `--as-needed`, that
    define none of the symbols the inputs leave undefined: such a library is read in full by the
    linker (libc.so.6's and libm.so.6's symbol tables took 3.5-6 ms each of a small link's 12-15
    ms) and then neither recorded nor bound, so the library made is the same, byte for byte.
    `objects` are graphad's inputs, whose weak references count too (the linker's start and end
    files' weak references, which do not make a library needed, are left out). `argv` is
    returned whole where anything in it, or in a file it names, is not understood
    (elf_symbols.py reads the files); where a needed symbol may come from an archive (its
    members may need other libraries; libgcc.a's __eprintf needs libc); where a name is
    versioned (`memcpy@GLIBC_2.2.5`); and where the caller's `options` (linker arguments) name a
    library or an input of their own (a library whose own dependencies are not recorded makes
    the linker need more: only the driver's libraries are left out)."""
    from . import elf_symbols
    if any(not o.startswith("-") or o.startswith(("-l", "-L", "--library")) for o in options
           if o not in ("now", "relro", "norelro", "lazy", "defs")):
        return argv
    search, inputs, libraries = [], [], []
    as_needed, i = False, 1
    while i < len(argv):
        a = argv[i]
        if a in _OPTION_ARGS:
            if i + 1 >= len(argv):
                return argv
            if a == "-L":
                search.append(argv[i + 1])
            elif a == "--defsym":
                inputs.append(("defsym", argv[i + 1]))
            i += 2
            continue
        if a.startswith("-l") and len(a) > 2:
            libraries.append((i, a[2:], as_needed))
        elif a.startswith("-L"):
            search.append(a[2:])
        elif a.startswith("--defsym="):
            inputs.append(("defsym", a[len("--defsym="):]))
        elif a in ("--as-needed", "--no-as-needed"):
            as_needed = a == "--as-needed"
        elif a.startswith("-"):
            if a not in _OPTIONS_KEPT and not a.startswith(_OPTION_PREFIXES_KEPT):
                return argv
        else:
            inputs.append(("object", a))
        i += 1
    if any(f"-l{name}" not in (recipe() or ()) for _, name, _ in libraries):
        return argv  # a library of the caller's, not the driver's
    prunable = [(k, name) for k, name, on in libraries if on]
    if not prunable:
        return argv
    ours = set(objects)
    needed, defined = set(), set()
    for kind, value in inputs:
        if kind == "defsym":
            defined.add(value.split("=", 1)[0])
            continue
        symbols = elf_symbols.object_symbols(value, keep=value not in ours)
        if symbols is None:
            return argv
        strong, weak, names = symbols
        needed |= strong | (weak if value in ours else set())
        defined |= names
    needed -= defined
    if any("@" in n for n in needed):
        return argv
    drop = set()
    for k, name in prunable:
        if needed:
            path = elf_symbols.find_library(name, search)
            found = None if path is None else elf_symbols.library_resolves(path, needed, search)
            if found == "archive":
                return argv
            if found is not False:
                continue
        drop.add(k)
    return [a for k, a in enumerate(argv) if k not in drop]


def _target_triple():
    """TVM's default link step's answer, which export_library asks of its link step when no module
    names an LLVM target (to pack the VM's bytecode into an object rather than C source)."""
    from tvm.support import cc
    return cc.create_shared.get_target_triple()


create_shared.get_target_triple = _target_triple


def _give_up(why: str) -> None:
    """Stop linking directly in this process, and say so once: the driver linked what the direct
    command could not, which is a graphad bug to report."""
    with _LOCK:
        if _BROKEN:
            return
        _BROKEN.append(why)
    from ..errors import warn_at_user_line
    last = [ln for ln in why.splitlines() if ln.strip()][-1:] or [""]
    warn_at_user_line(f"graphad: the linker run directly failed where the C compiler's link succeeded "
                      f"({last[0][:300]}); libraries are linked through the C compiler from now on (the same "
                      "libraries, slower to make). Please report this with your compiler and linker versions.")


# Exporting a library makes LLVM write object files; on a write error (full disk, file size
# limit) LLVM ends the whole process (report_fatal_error -> exit(1)), and its message goes to the
# stderr that quiet_scope_logs redirected. So an export runs only where this much room is
# certain; otherwise the graph is JIT-compiled in memory (which writes nothing).
EXPORT_MIN_FREE_BYTES = 64 << 20


def export_workspace() -> tuple[str | None, str]:
    """(a directory where an export has room to write, None) and why not when None.

    The temporary directory first ($TMPDIR), then /dev/shm (memory, unaffected by a full disk).
    """
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and soft < EXPORT_MIN_FREE_BYTES:
            return None, f"the file size limit (ulimit -f) is {soft} bytes"
    except (ImportError, OSError, ValueError):  # no rlimits on this platform: space checks only
        pass
    reasons = []
    candidates = []
    try:
        candidates.append(tempfile.gettempdir())
    except OSError as e:  # gettempdir found no writable directory at all
        reasons.append(str(e))
    candidates.append("/dev/shm")
    for d in candidates:
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if not os.access(d, os.W_OK | os.X_OK):
            reasons.append(f"{d} is not writable")
        elif free < EXPORT_MIN_FREE_BYTES:
            reasons.append(f"{d} has {free >> 20} MiB free")
        else:
            return d, ""
    return None, "; ".join(reasons) or "no temporary directory"


def object_code(module) -> bytes:
    """The object file of the LLVM runtime module `module` (its machine code: LLVM's code
    generation runs here, in the calling thread), written where `export_workspace` finds room.
    A CompileError marked `export_unavailable` when there is none."""
    workspace, why = export_workspace()
    if workspace is None:
        from ..errors import CompileError
        e = CompileError(f"cannot export the compiled library: no room to write it ({why})")
        e.export_unavailable = True  # as the export's own check (runtime/executable.py) marks it
        raise e
    with tempfile.TemporaryDirectory(prefix="graphad-obj-", dir=workspace, ignore_cleanup_errors=True) as d:
        path = os.path.join(d, "group.o")
        module.write_to_file(path)
        with open(path, "rb") as f:
            return f.read()
