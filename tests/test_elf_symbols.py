"""elf_symbols.py against binutils: the symbols an object leaves undefined and defines, the names
a shared library, an archive and a linker script define, and None (keep the library) for what it
cannot read."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from graphad.lowering import elf_symbols as es

NM = shutil.which("nm")


def _nm(*args):
    out = subprocess.run([NM, *args], capture_output=True, text=True, check=True).stdout
    return {ln.split()[-1].split("@")[0] for ln in out.splitlines() if ln.strip() and not ln.endswith(":")}


def _system_library(name):
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64"):
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    pytest.skip(f"no {name} here")


@pytest.mark.skipif(NM is None, reason="no nm")
@pytest.mark.parametrize("name", ["libc.so.6", "libm.so.6"])
def test_shared_library_lookups_agree_with_nm(name):
    path = _system_library(name)
    defined = _nm("-D", "--defined-only", path)
    undefined = _nm("-D", "--undefined-only", path) - defined
    assert defined and len(defined) > 100
    for sym in sorted(defined):
        assert es.library_resolves(path, [sym]) == "shared", sym
    for sym in sorted(undefined) + ["TVMFFIGraphadProbe", "graphad_no_such_symbol", ""]:
        assert es.library_resolves(path, [sym]) is False, sym


@pytest.mark.skipif(NM is None or shutil.which("cc") is None, reason="no nm or cc")
def test_object_symbols_agree_with_nm(tmp_path):
    src = tmp_path / "f.c"
    src.write_text("extern int a_strong(void); __attribute__((weak)) extern int a_weak(void);\n"
                   "static int hidden(void) { return 1; }\nint defined_here(void) { return a_strong() + hidden()"
                   " + (a_weak ? a_weak() : 0); }\nint common_var;\n")
    obj = str(tmp_path / "f.o")
    subprocess.run(["cc", "-c", "-fPIC", "-fcommon", "-o", obj, str(src)], check=True)
    undefined, weak, defined = es.object_symbols(obj)
    # a COMMON symbol (common_var) is a tentative definition a library's replaces: needed
    assert {"a_strong", "common_var"} <= undefined and weak == {"a_weak"}
    assert undefined | weak == _nm("--undefined-only", obj) | {"common_var"}
    assert defined == _nm("--defined-only", "--extern-only", obj) - {"common_var"} == {"defined_here"}
    assert es.object_symbols(obj, keep=True) == (undefined, weak, defined)


def test_an_object_with_extended_section_numbering_is_not_read(tmp_path):
    """e_shnum 0 with a section table: more than 65,279 sections, counted in section 0 (found by
    a review: it read as an object without symbols, and every library was left out)."""
    if shutil.which("cc") is None:
        pytest.skip("no cc")
    (tmp_path / "f.c").write_text("float sinf(float);\nfloat graphad_f(float x) { return sinf(x); }\n")
    obj = tmp_path / "f.o"
    subprocess.run(["cc", "-c", "-fPIC", "-o", str(obj), str(tmp_path / "f.c")], check=True)
    assert es.object_symbols(str(obj))[0] == {"sinf"}
    data = bytearray(obj.read_bytes())
    data[0x3C:0x3E] = b"\0\0"  # e_shnum = 0
    obj.write_bytes(bytes(data))
    assert es.object_symbols(str(obj)) is None


def test_what_is_not_read_is_none(tmp_path):
    text = tmp_path / "x.o"
    text.write_text("hello\n")
    assert es.object_symbols(str(text)) is None
    assert es.object_symbols(str(tmp_path / "missing.o")) is None
    assert es.library_resolves(str(tmp_path / "missing.so"), ["sinf"]) is None
    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"\x7fELF\x01\x01" + bytes(60))  # 32-bit
    assert es.library_resolves(str(bad), ["sinf"]) is None
    tiny = tmp_path / "libtiny.so"
    tiny.write_bytes(b"\x7fELF\x02")  # a truncated header (an IndexError, once)
    assert es.library_resolves(str(tiny), ["sinf"]) is None and es.object_symbols(str(tiny)) is None
    short = tmp_path / "libshort.a"
    short.write_bytes(b"!<arch>\n")  # an archive without a symbol index
    assert es.library_resolves(str(short), ["sinf"]) is None


def test_linker_scripts(tmp_path):
    assert es._script_files("/* GNU ld script */\nOUTPUT_FORMAT(elf64-x86-64)\n"
                            "GROUP ( /lib/libc.so.6 /usr/lib/libc_nonshared.a  AS_NEEDED ( /lib64/ld.so.2 ) )\n") \
        == ["/lib/libc.so.6", "/usr/lib/libc_nonshared.a", "/lib64/ld.so.2"]
    assert es._script_files("GROUP ( libgcc_s.so.1 -lgcc )") == ["libgcc_s.so.1", "-lgcc"]
    assert es._script_files("INPUT(a.so, b.so)") == ["a.so", "b.so"]
    for text in ("SEARCH_DIR(/x) GROUP(a.so)", "GROUP(a.so", "GROUP(AS_NEEDED(AS_NEEDED(a.so)))", "a.so",
                 "GROUP(a.so))", "OUTPUT_FORMAT(x(y))"):
        assert es._script_files(text) is None, text
    # a script's libraries: the union of what each may define; a part not found makes it None
    m = _system_library("libm.so.6")
    script = tmp_path / "libmine.so"
    script.write_text(f"GROUP ( {m} AS_NEEDED ( libnothere.so.1 ) )\n")
    assert es.library_resolves(str(script), ["sinf"]) is None
    script.write_text(f"GROUP ( {m} )\n")
    assert es.library_resolves(str(script), ["memcpy", "sinf"]) == "shared"
    assert es.library_resolves(str(script), ["memcpy"]) is False
    loop = tmp_path / "libloop.so"
    loop.write_text(f"GROUP ( {loop} )\n")
    assert es.library_resolves(str(loop), ["sinf"]) is None  # a script naming itself


@pytest.mark.skipif(NM is None or shutil.which("ar") is None or shutil.which("cc") is None, reason="no binutils or cc")
def test_archive_index(tmp_path):
    (tmp_path / "a.c").write_text("int in_archive(void) { return 2; }\n")
    subprocess.run(["cc", "-c", "-o", str(tmp_path / "a.o"), str(tmp_path / "a.c")], check=True)
    lib = str(tmp_path / "libx.a")
    subprocess.run(["ar", "rcs", lib, str(tmp_path / "a.o")], check=True)
    assert es.library_resolves(lib, ["in_archive"]) == "archive"
    assert es.library_resolves(lib, ["in_archive", "sinf"]) == "archive"
    assert es.library_resolves(lib, ["sinf"]) is False
    assert es.find_library("x", [str(tmp_path / "none"), str(tmp_path)]) == lib
    assert es.find_library("y", [str(tmp_path)]) is None
