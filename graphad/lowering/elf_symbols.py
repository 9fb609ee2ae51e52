"""The symbols ELF files define and leave undefined, read without any tool, for the direct link.

The compiler driver's link command (linker.py) names the C libraries (GCC on Linux: `-lm -lgcc_s
-lc -lgcc_s`), and the linker reads each in full although, under `--as-needed`, only a library
that defines a symbol the objects reference without `weak` is recorded in the output or binds
anything. Reading them was most of a small link's time (a one-kernel library: 11.7-14.8 ms with
them, 4.1-4.6 ms without; libc.so.6's and libm.so.6's symbol tables 3.5-6 ms each). linker.py
drops the libraries that define none of the symbols the objects need, which leaves the output
byte for byte what the full command makes; this module says which those are:
* `object_symbols`: the undefined and the defined symbols of a relocatable object (its `.symtab`);
* `library_resolves`: whether a library may define any of some names, and where: a shared
  object (its GNU hash table), an archive (its symbol index), or, for a linker script (`libc.so`,
  `libm.so`, `libgcc_s.so`: GROUP / INPUT / AS_NEEDED), any of the files it names;
* `find_library`: the file `-lNAME` names, searched as the linker does.

Every answer errs one way: where a file cannot be read as expected (another ELF class or byte
order, an unknown script command, a name not found), the answer is None, and the caller keeps
the library. Names a library might define are over-counted (a script's relative names are looked
up in every candidate place), never under-counted. Only 64-bit little-endian ELF is read (x86-64
and AArch64 Linux); anything else keeps the full command.
"""
from __future__ import annotations

import mmap
import os
import re
import struct
from functools import lru_cache

_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: name, info, other, shndx, value, size
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SHT_SYMTAB, _SHT_DYNSYM, _SHT_GNU_HASH = 2, 11, 0x6FFFFFF6
_SHN_UNDEF, _SHN_COMMON = 0, 0xFFF2  # a COMMON symbol: tentative, a library's definition wins
_STB_LOCAL, _STB_WEAK = 0, 2
_ET_REL, _ET_DYN = 1, 3


def _sections(data: bytes, elf_type: int):
    """The section headers of a 64-bit little-endian ELF file of type `elf_type`, or None."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    if struct.unpack_from("<H", data, 16)[0] != elf_type:
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shoff == 0 or shnum == 0 or shentsize != _SHDR.size or shoff + shnum * shentsize > len(data):
        return None  # (shnum 0 with sections: more than 65,279 of them, counted elsewhere: not read)
    return [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]


def _symbols(data: bytes, sections, kind: int):
    """(name, binding, defined) of every named symbol in the table of section type `kind` (none
    where the file has no such table); None where there are several or one runs past the file."""
    tables = [s for s in sections if s[1] == kind]
    if not tables:
        return []  # a file without symbols (crtn.o)
    if len(tables) != 1:
        return None
    _, _, _, _, off, size, link, _, _, entsize = tables[0]
    if entsize != _SYM.size or off + size > len(data) or link >= len(sections):
        return None
    str_off, str_size = sections[link][4], sections[link][5]
    if str_off + str_size > len(data):
        return None
    strtab = data[str_off:str_off + str_size]
    out = []
    for name, info, _, shndx, _, _ in _SYM.iter_unpack(data[off:off + size]):
        if name == 0:
            continue
        end = strtab.find(b"\0", name)
        if end < 0:
            return None
        out.append((strtab[name:end].decode("latin-1"), info >> 4, shndx not in (_SHN_UNDEF, _SHN_COMMON)))
    return out


def object_symbols(path: str, keep: bool = False):
    """(undefined, weak_undefined, defined) name sets of the relocatable ELF object `path`;
    None where it is not one this module reads. `keep`: the answer is kept for the file's
    version (the linker's start and end files, read for every link)."""
    if keep:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return _kept_object_symbols(path, st.st_mtime_ns, st.st_size, st.st_ino)
    return _object_symbols(path)


@lru_cache(maxsize=16)
def _kept_object_symbols(path: str, _mtime: int, _size: int, _ino: int):
    return _object_symbols(path)


def _object_symbols(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
        sections = _sections(data, _ET_REL)
        syms = _symbols(data, sections, _SHT_SYMTAB) if sections is not None else None
    except (OSError, struct.error, IndexError, ValueError):
        return None
    if syms is None:
        return None
    undefined, weak, defined = set(), set(), set()
    for name, binding, is_defined in syms:
        if binding == _STB_LOCAL:
            continue
        if is_defined:
            defined.add(name)
        else:
            (weak if binding == _STB_WEAK else undefined).add(name)
    return undefined, weak, defined


def _archive_index(data: bytes):
    """The names in a System V / GNU archive's symbol index (`/` or `/SYM64/`); None without one."""
    if data[:8] != b"!<arch>\n" or len(data) < 68:
        return None
    name, size = data[8:24].rstrip(), data[56:66].strip()
    try:
        size = int(size)
    except ValueError:
        return None
    body = data[68:68 + size]
    if name == b"/":
        width, fmt = 4, ">I"
    elif name == b"/SYM64/":
        width, fmt = 8, ">Q"
    else:
        return None
    if len(body) < width:
        return None
    count = struct.unpack_from(fmt, body, 0)[0]
    names = body[width + count * width:].split(b"\0")
    if len(names) < count:
        return None
    return frozenset(n.decode("latin-1") for n in names[:count])


_SCRIPT_IGNORED = ("OUTPUT_FORMAT", "OUTPUT_ARCH", "TARGET")


def _script_files(text: str):
    """The file names (and `-lNAME`s) a linker script's GROUP / INPUT commands list, AS_NEEDED
    lists inside them included; None where it holds any other command (SEARCH_DIR, SECTIONS, ...)
    or does not parse: not a script this module reads."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    tokens = re.findall(r"[(),]|[^\s(),]+", text)
    files: list[str] = []
    pos = 0

    def arguments(nested: bool) -> bool:
        """Read `( name, ... )` at pos into `files`; AS_NEEDED(...) inside when `nested`."""
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != "(":
            return False
        pos += 1
        while pos < len(tokens) and tokens[pos] != ")":
            t = tokens[pos]
            if t == "(":
                return False
            if pos + 1 < len(tokens) and tokens[pos + 1] == "(":
                if not (nested and t == "AS_NEEDED"):
                    return False
                pos += 1
                if not arguments(False):
                    return False
                continue
            if t != ",":
                files.append(t)
            pos += 1
        if pos >= len(tokens):
            return False
        pos += 1
        return True

    while pos < len(tokens):
        command = tokens[pos]
        pos += 1
        if command in ("GROUP", "INPUT"):
            if not arguments(True):
                return None
        elif command in _SCRIPT_IGNORED:
            end = tokens.index(")", pos) if ")" in tokens[pos:] else -1
            if end < 0 or tokens[pos] != "(" or "(" in tokens[pos + 1:end]:
                return None
            pos = end + 1
        else:
            return None
    return files


def find_library(name: str, search_dirs) -> str | None:
    """The file `-l<name>` names: the first of lib<name>.so, lib<name>.a in each directory in
    turn (the linker's dynamic search); None where none exists."""
    for d in search_dirs:
        for candidate in (f"lib{name}.so", f"lib{name}.a"):
            path = os.path.join(d, candidate)
            if os.path.isfile(path):
                return path
    return None


def _strongest(kinds) -> str | bool:
    """"archive" if any of `kinds` is, else "shared" if any is, else False."""
    return "archive" if "archive" in kinds else "shared" if "shared" in kinds else False


def _library_at(path: str, search_dirs: tuple, depth: int = 0):
    """`_library` of the file `path` as it is now (its version keys the cache)."""
    st = os.stat(path)
    return _library(os.path.realpath(path), st.st_mtime_ns, st.st_size, search_dirs, depth)


def library_resolves(path: str, names, search_dirs=()) -> str | bool | None:
    """Where the library file `path` may define any of `names`: "archive" where an archive (a
    static library, or one a linker script names) may define one of them (its members, linked
    in, may need other libraries: the caller cannot leave any out then), else "shared" where a
    shared object defines one, else False; None where some part of it cannot be read."""
    try:
        lib = _library_at(path, tuple(search_dirs))
        return None if lib is None else _strongest({lib(name) for name in names})
    except (OSError, struct.error, ValueError, IndexError):
        return None


def _gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def _shared_object(data: bytes):
    """A name -> defined? lookup over a shared object's dynamic symbols, through its GNU hash
    table (a few reads per name: its whole table is thousands of entries, libc.so.6's about
    3,000); where it has none, a set of all of them. None where it cannot be read."""
    sections = _sections(data, _ET_DYN)
    if sections is None:
        return None
    hashes = [s for s in sections if s[1] == _SHT_GNU_HASH]
    dynsym = [s for s in sections if s[1] == _SHT_DYNSYM]
    if len(hashes) != 1 or len(dynsym) != 1 or hashes[0][6] >= len(sections) or dynsym[0][6] >= len(sections):
        syms = _symbols(data, sections, _SHT_DYNSYM)
        if syms is None:
            return None
        defined = frozenset(name for name, _, is_defined in syms if is_defined)
        return defined.__contains__
    h_off, h_size = hashes[0][4], hashes[0][5]
    sym_off, sym_size, str_link = dynsym[0][4], dynsym[0][5], dynsym[0][6]
    str_off, str_size = sections[str_link][4], sections[str_link][5]
    if dynsym[0][9] != _SYM.size or h_off + h_size > len(data) or sym_off + sym_size > len(data) \
            or str_off + str_size > len(data):
        return None
    nbuckets, symoffset, bloom_size, _ = struct.unpack_from("<IIII", data, h_off)
    buckets_off = h_off + 16 + 8 * bloom_size
    chain_off = buckets_off + 4 * nbuckets
    nsyms = sym_size // _SYM.size
    if nbuckets == 0 or chain_off > h_off + h_size:
        return None

    def defines(name: str) -> bool:
        key = name.encode("latin-1")
        h = _gnu_hash(key)
        i = struct.unpack_from("<I", data, buckets_off + 4 * (h % nbuckets))[0]
        if i == 0:
            return False
        if i < symoffset:
            raise ValueError("bad GNU hash table")
        while i < nsyms:
            ch = struct.unpack_from("<I", data, chain_off + 4 * (i - symoffset))[0]
            if (ch | 1) == (h | 1):
                st_name, _, _, shndx, _, _ = _SYM.unpack_from(data, sym_off + i * _SYM.size)
                end = data.find(b"\0", str_off + st_name, str_off + str_size)
                if end < 0:
                    raise ValueError("bad string table")
                if data[str_off + st_name:end] == key and shndx != _SHN_UNDEF:
                    return True
            if ch & 1:
                return False
            i += 1
        raise ValueError("GNU hash chain runs past the symbol table")
    return defines


@lru_cache(maxsize=64)
def _library(path: str, _mtime: int, _size: int, search_dirs: tuple, depth: int):
    """A name -> "shared" / "archive" / False function for the library file `path` (where it may
    define the name; cached per file version); None where it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:4] == b"\x7fELF":
            f.seek(0)
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            defines = _shared_object(data)
            return None if defines is None else (lambda name: "shared" if defines(name) else False)
        if head == b"!<arch>\n":
            # the symbol index is the first member: read only it
            f.seek(0)
            data = f.read(68)
            try:
                data += f.read(int(data[56:66].strip() or b"0"))
            except ValueError:
                return None
            index = _archive_index(data)
            return None if index is None else (lambda name: "archive" if name in index else False)
        f.seek(0)
        data = f.read()
    if depth >= 4:
        return None
    try:
        files = _script_files(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    if files is None:
        return None
    here = os.path.dirname(path)
    parts = []
    for entry in files:
        if entry.startswith("-l"):
            found = [find_library(entry[2:], search_dirs)]
        elif os.path.isabs(entry):
            found = [entry]
        else:
            # the linker looks in the current directory, the script's directory and the search
            # path, in an order that changed between versions: every one that exists is counted
            found = [p for p in (entry, os.path.join(here, entry), *(os.path.join(d, entry) for d in search_dirs))
                     if os.path.isfile(p)] or [None]
        for p in found:
            part = None if p is None else _library_at(p, search_dirs, depth + 1)
            if part is None:
                return None
            parts.append(part)
    return lambda name: _strongest({part(name) for part in parts})
