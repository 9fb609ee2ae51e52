"""The direct link (lowering/linker.py): the compiler driver's own link command, asked for once
and run without the driver, makes libraries that load and run as the driver's do; anything it
cannot take goes to the driver; a direct link that fails where the driver's succeeds turns the
direct link off for the process, with one warning; a genuine link error is raised, not blamed on
the recipe; and graphad's libraries are never TVM "system libraries"."""
from __future__ import annotations

import os
import subprocess
import warnings

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.lowering import linker

pytestmark = pytest.mark.tvm


@pytest.fixture
def direct(monkeypatch):
    """The direct link available and on, with a fresh process state."""
    monkeypatch.setattr(linker, "_BROKEN", [])
    if linker.recipe() is None:
        pytest.skip("no direct link on this machine (needs GCC or Clang on Linux)")
    return linker


def _objects(tmp_path):
    """(graph, its VMExecutable built in one piece, the object files of that executable's
    library modules)."""
    from graphad.runtime.executable import _lower_and_build
    graph = gd.jit(lambda a, b: ops.sin(a) @ b + 1.0).lower(gd.TensorSpec((8, 8)), gd.TensorSpec((8, 4))).graph
    ex, meta, report = _lower_and_build(graph, None, True)
    paths = []
    for i, m in enumerate(ex.mod._collect_dso_modules()):
        paths.append(str(tmp_path / f"m{i}.o"))
        m.write_to_file(paths[-1])
    return graph, (ex, meta, report), paths


def test_the_recipe_is_the_drivers_link_without_the_driver(direct):
    cmd = direct.recipe()
    assert os.path.basename(cmd[0]) in linker._LINKERS  # the linker itself, not collect2 or g++
    assert cmd.count(linker._IN) == 1 and cmd.count(linker._OUT) == 1
    assert "-shared" in cmd
    assert not [a for a in cmd if a.startswith("-plugin")]
    assert "-lstdc++" not in cmd


def test_a_direct_link_makes_the_drivers_library(direct, tmp_path):
    """The same exported symbols, needed libraries and flags as the driver's link of the same
    objects; and a whole export through it runs with the bits of the in-memory build."""
    import shutil

    from tvm.support import cc

    from graphad.runtime.executable import build_executable, exported_library, load_library_file, make_executable
    graph, (ex, meta, report), paths = _objects(tmp_path)
    a, b = str(tmp_path / "direct.so"), str(tmp_path / "driver.so")
    direct.create_shared(a, paths, options=["-Wl,-z,now"])
    cc.create_shared(b, paths, options=["-Wl,-z,now"])
    if shutil.which("readelf"):
        def readelf(path, what):
            return subprocess.run(["readelf", "--wide", what, path], capture_output=True, text=True, check=True).stdout

        def defined(path):
            return sorted({ln.split()[-1] for ln in readelf(path, "--dyn-syms").splitlines()
                           if ln.split() and ln.split()[0].rstrip(":").isdigit() and " UND " not in ln})

        def flags(path):
            return sorted(ln.split(None, 1)[1] for ln in readelf(path, "--dynamic").splitlines()
                          if "(NEEDED)" in ln or "(FLAGS" in ln)
        assert defined(a) == defined(b) and any("__tvm_ffi_" in s for s in defined(a))
        assert flags(a) == flags(b) and any("NOW" in f for f in flags(a))
    rng = np.random.default_rng(0)
    args = [gd.Tensor(rng.standard_normal(s).astype(np.float32)) for s in ((8, 8), (8, 4))]
    want = build_executable(graph)(args)[0].asnumpy()
    with exported_library(ex) as path:
        module = load_library_file(path)
    got = make_executable(module, meta, report=report)(args)[0].asnumpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_what_the_recipe_cannot_take_goes_to_the_driver(direct, tmp_path, monkeypatch):
    from tvm.support import cc
    calls = []
    real = cc.create_shared

    def spy(*a, **kw):
        calls.append(kw.get("options"))
        return real(*a, **kw)
    monkeypatch.setattr(cc, "create_shared", spy)
    _, _, paths = _objects(tmp_path)
    direct.create_shared(str(tmp_path / "a.so"), paths, options=["-Wl,-z,now"])
    assert calls == []  # the direct link
    direct.create_shared(str(tmp_path / "b.so"), paths, options=["-O2"])  # not a linker option
    assert calls == [["-O2"]] and not linker._BROKEN


def test_a_genuine_link_error_is_raised_and_the_direct_link_stays(direct, tmp_path):
    _, _, paths = _objects(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the recipe is not at fault
        with pytest.raises(RuntimeError, match="no_such_symbol"):
            direct.create_shared(str(tmp_path / "a.so"), paths,
                                 options=["-Wl,-z,now", "-Wl,--defsym=graphad_alias=graphad_no_such_symbol"])
    assert not linker._BROKEN and linker.available()


def test_a_recipe_that_fails_where_the_driver_links_is_dropped_once(direct, tmp_path, monkeypatch):
    _, _, paths = _objects(tmp_path)
    bad = ("false",) + direct.recipe()[1:]
    monkeypatch.setattr(linker, "recipe", lambda: bad)
    with pytest.warns(RuntimeWarning, match="linker run directly failed") as caught:
        direct.create_shared(str(tmp_path / "a.so"), paths, options=["-Wl,-z,now"])
    assert caught[0].filename == __file__  # the user's line (errors.warn_at_user_line)
    assert os.path.exists(tmp_path / "a.so") and not linker.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the driver links from now on, silently
        direct.create_shared(str(tmp_path / "b.so"), paths, options=["-Wl,-z,now"])
    assert os.path.exists(tmp_path / "b.so")


def test_libraries_are_not_system_libraries(direct, monkeypatch):
    """A module compiled at opt level 0 (the compiled main of a split build) keeps an empty
    start-up function, from which TVM guessed "system library": its bytecode blob then registered
    itself process-wide and every later library replaced it with a warning on stderr. graphad
    packs the blob as an ordinary library's."""
    from graphad.runtime.executable import build_executable
    monkeypatch.setenv("GRAPHAD_COMPILE_JOBS", "1")
    graph = gd.jit(lambda a, b: ops.sin(a) @ b + 1.0).lower(gd.TensorSpec((8, 8)), gd.TensorSpec((8, 4))).graph
    exe = build_executable(graph)
    assert exe.report["library"] == "split over threads"
    data = exe.library_bytes()
    assert b"__tvm_ffi__library_bin" in data
    assert b"TVMFFIEnvModRegisterSystemLibSymbol" not in data


def test_the_recipe_is_none_where_it_cannot_be_found_out(monkeypatch):
    """An odd $CXX (unparsable, failing, or choosing its own linker with -fuse-ld) leaves the link
    to the driver: recipe() is None, never an exception out of a build."""
    monkeypatch.setattr(linker, "_BROKEN", [])
    try:
        for driver in (lambda: ["g++", "-fuse-ld=gold"], lambda: (_ for _ in ()).throw(ValueError("No closing quotation"))):
            monkeypatch.setattr(linker, "_driver", driver)
            linker.recipe.cache_clear()
            assert linker.recipe() is None and not linker.available()
    finally:
        monkeypatch.undo()
        linker.recipe.cache_clear()


# Sources of objects leaving different symbols undefined, and the libraries of GCC's link on
# Linux (-lm -lgcc_s -lc -lgcc_s) each one needs: none; libm's sinf; libc's memcpy (its size
# unknown, so the call stays a call); libgcc's complex division; a TVM runtime function, which
# no library defines.
_SOURCES = {
    "none": ("int graphad_f(int x) { return x + 1; }", set()),
    "libm": ("float sinf(float);\nfloat graphad_f(float x) { return sinf(x); }", {"m"}),
    "libc": ("#include <string.h>\nvoid graphad_f(char *a, const char *b, unsigned long n) { memcpy(a, b, n); }",
             {"c"}),
    # (libgcc.a defines __divsc3 too: an archive may, so every library stays)
    "libgcc": ("_Complex float graphad_f(_Complex float a, _Complex float b) { return a / b; }",
               {"m", "gcc_s", "c"}),
    "runtime": ("int TVMFFIGraphadProbe(void);\nint graphad_f(void) { return TVMFFIGraphadProbe(); }", set()),
    # a weak reference of graphad's own objects keeps the library that defines it (the linker
    # would not record it; keeping it changes nothing either)
    "weak": ("__attribute__((weak)) void *malloc(unsigned long);\nint graphad_f(void) { return malloc != 0; }",
             {"c"}),
    "mixed": ("#include <string.h>\nfloat sinf(float);\n"
              "float graphad_f(float *a, const float *b, unsigned long n) { memcpy(a, b, n); return sinf(a[0]); }",
              {"m", "c"}),
    # found by a review: a COMMON symbol is a tentative definition that libc's optind replaces;
    # a symbol only libgcc.a defines (an archive member, which calls fprintf and abort: every
    # library stays); a versioned reference (every library stays)
    "common": ("int optind;\nint graphad_f(void) { return optind; }", {"c"}, ["-fcommon"]),
    "archive": ("void __eprintf(const char *, const char *, unsigned, const char *);\n"
                "void graphad_f(void) { __eprintf(\"%s:%u: %s\\n\", \"f\", 1, \"x\"); }", {"m", "gcc_s", "c"}),
    "versioned": ("__asm__(\".symver memcpy_old, memcpy@GLIBC_2.2.5\");\n"
                  "void *memcpy_old(void *, const void *, unsigned long);\n"
                  "void graphad_f(char *a, const char *b, unsigned long n) { memcpy_old(a, b, n); }",
                  {"m", "gcc_s", "c"}),
}


@pytest.mark.parametrize("case", sorted(_SOURCES))
def test_libraries_that_define_nothing_needed_are_left_out_and_the_library_is_the_same(direct, tmp_path, case):
    """The direct link leaves out the -l libraries (linked --as-needed) that define none of the
    symbols its inputs need; the library it makes is the full command's, byte for byte (the
    full command is the oracle: a library left out that was needed changes the NEEDED list or a
    symbol's version)."""
    import shutil
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    source, wanted, *flags = _SOURCES[case]
    (tmp_path / "f.c").write_text(source + "\n")
    obj = str(tmp_path / "f.o")
    subprocess.run([cc, "-c", "-fPIC", "-O1", "-fno-builtin", *(flags[0] if flags else ()), "-o", obj,
                    str(tmp_path / "f.c")], check=True)
    cmd = direct.recipe()
    if "--as-needed" not in cmd or "-lc" not in cmd:
        pytest.skip("not a GCC-style link command (--as-needed ... -lc)")
    i = cmd.index(linker._IN)

    def argv(out):
        return [out if a == linker._OUT else a for a in (*cmd[:i], obj, "-z", "now", *cmd[i + 1:])]
    full, pruned = str(tmp_path / "full.so"), str(tmp_path / "pruned.so")
    if subprocess.run(argv(full), capture_output=True).returncode != 0:
        pytest.skip(f"this toolchain does not link the {case!r} case at all")
    short = direct.without_unused_libraries(argv(pruned), [obj])
    subprocess.run(short, check=True, capture_output=True)
    with open(full, "rb") as f, open(pruned, "rb") as g:
        assert f.read() == g.read()
    libraries = [a for a in argv(pruned) if a.startswith("-l")]
    kept = {a[2:] for a in short if a.startswith("-l")}
    assert kept == {a[2:] for a in libraries if a[2:] in wanted}


def test_a_link_command_not_understood_keeps_its_libraries(direct, tmp_path):
    """Whatever the pruning does not understand leaves the command whole: an option it does not
    know, a static search, an input it cannot read, a library not linked --as-needed."""
    cmd = list(direct.recipe())
    if "--as-needed" not in cmd or "-lc" not in cmd:
        pytest.skip("not a GCC-style link command (--as-needed ... -lc)")
    i = cmd.index(linker._IN)
    text = tmp_path / "not-an-object.o"
    text.write_text("not ELF\n")
    _, _, paths = _objects(tmp_path)
    base = [*cmd[:i], *paths, *cmd[i + 1:]]
    assert len(direct.without_unused_libraries(base, paths)) < len(base)  # the graphad objects prune
    for argv in ([*base[:1], "-Bstatic", *base[1:]],
                 [*base[:1], "--whole-archive", *base[1:]],
                 [*base[:i], str(text), *base[i:]]):
        assert direct.without_unused_libraries(argv, paths) == argv
    off = [a for a in base if a != "--as-needed"]
    assert direct.without_unused_libraries(off, paths) == off
    # a library of the caller's (its own dependencies may be unrecorded), in argv or in its options
    theirs = [*base[:i], *paths, "-L/nonexistent", "-lgraphadnothere", *base[i + len(paths):]]
    assert direct.without_unused_libraries(theirs, paths) == theirs
    assert direct.without_unused_libraries(base, paths, ["-lgraphadnothere"]) == base
