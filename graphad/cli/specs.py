"""What the `graphad` command reads from its arguments: `--args` types, `--transform` chains,
`FILE.py:FUNC` / `package.module:FUNC` targets, and the traced graph they give.

Every mistake is a `CLIError` (a GraphadError) whose one-line message names the bad token, so
the command can print it and exit with status 1. Nothing here imports TVM.

--args     space-separated types in the IR spelling: `f32[16,16] f32[16] i64[] bool[3]`
           (dtypes f16 bf16 f32 f64 i32 i64 bool c64 c128; `[]` is a scalar).
--transform  `grad[:POS]`, `value_and_grad[:POS]`, `jacrev[:POS]`, `jacfwd[:POS]`,
           `hessian[:POS]`, `vmap[:AXES]`; POS is an argument position or several joined by `|`
           (`0|2`), AXES one axis for every argument or one per argument joined by `|` (`0|none`).
           A chain is comma-separated and/or given by repeating the flag; it is applied inside-out
           as written: `--transform jacrev:2,vmap:0` means vmap(jacrev(f, 2), 0).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .. import dtypes as dt
from ..errors import GraphadError
from ..ir.core import Graph, TensorType


class CLIError(GraphadError):
    """A user mistake on the command line (bad flag value, missing file...): exit status 1."""


# ---------------------------------------------------------------- --args

IR_DTYPES = ("f16", "bf16", "f32", "f64", "i32", "i64", "bool", "c64", "c128")
_LONG_DTYPES = {d.name: d.short for d in dt.ALL}
_TYPE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[([^\]]*)\]\Z")


def _split_type_tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; a space inside brackets (`f32[16, 16]`) does not split."""
    tokens, cur, depth = [], [], 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch.isspace() and depth == 0:
            if cur:
                tokens.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens


def parse_type(token: str) -> TensorType:
    """`f32[16,16]` -> TensorType; CLIError naming the token otherwise."""
    m = _TYPE_RE.match(token)
    if m is None:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):
            hint = f"; write {token}[] for a scalar" if token in IR_DTYPES else ""
            raise CLIError(f"--args: bad type {token!r}: missing the shape in brackets, as in f32[16,16]{hint}")
        raise CLIError(f"--args: bad type {token!r}: expected DTYPE[DIMS] such as f32[16,16] "
                       f"(dtypes {' '.join(IR_DTYPES)})")
    name, dims = m.group(1), m.group(2)
    short = name if name in IR_DTYPES else _LONG_DTYPES.get(name)
    if short is None:
        raise CLIError(f"--args: bad type {token!r}: unknown dtype {name!r} (use one of {' '.join(IR_DTYPES)})")
    shape = []
    if dims.strip():
        for d in dims.split(","):
            d = d.strip()
            if not d.isdigit():
                raise CLIError(f"--args: bad type {token!r}: dimension {d!r} is not a non-negative integer")
            shape.append(int(d))
    return TensorType(tuple(shape), short)


def parse_arg_types(texts: list[str] | None) -> list[TensorType]:
    """The types of every `--args` value (each may hold several space-separated types)."""
    out = []
    for text in texts or []:
        for tok in _split_type_tokens(text):
            out.append(parse_type(tok))
    return out


# ---------------------------------------------------------------- --transform


@dataclass
class Transform:
    """One step of a --transform chain: the API function and its position/axes argument."""
    name: str
    arg: Any
    text: str

    def apply(self, fn: Callable) -> Callable:
        from .. import api
        if self.name == "vmap":
            return api.vmap(fn, self.arg)
        return getattr(api, self.name)(fn, self.arg)


TRANSFORMS = ("grad", "value_and_grad", "jacrev", "jacfwd", "hessian", "vmap")


def _positions(text: str, item: str):
    parts = [p.strip() for p in text.split("|")]
    out = []
    for p in parts:
        if not p.isdigit():
            raise CLIError(f"--transform: bad position {p!r} in {item!r}: positions are argument indices "
                           f"(0, 1, ...) joined by '|', as in jacrev:0|2")
        out.append(int(p))
    if len(set(out)) != len(out):
        raise CLIError(f"--transform: repeated position in {item!r}")
    return out[0] if len(out) == 1 else tuple(out)


def _axes(text: str, item: str):
    out = []
    for p in [p.strip() for p in text.split("|")]:
        if p.lower() in ("none", "_", "-"):
            out.append(None)
        elif re.fullmatch(r"-?[0-9]+", p):
            out.append(int(p))
        else:
            raise CLIError(f"--transform: bad axis {p!r} in {item!r}: an axis is an integer or 'none', several "
                           f"joined by '|' (one per argument), as in vmap:0|none")
    return out[0] if len(out) == 1 else tuple(out)


def parse_transforms(texts: list[str] | None) -> list[Transform]:
    """The chain given by one or more `--transform` values, innermost first."""
    out = []
    for text in texts or []:
        for item in [s.strip() for s in text.split(",")]:
            if not item:
                continue
            name, colon, arg = item.partition(":")
            name = name.strip().replace("-", "_")
            if name not in TRANSFORMS:
                import difflib
                close = difflib.get_close_matches(name, TRANSFORMS, n=2)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise CLIError(f"--transform: unknown transformation {item.partition(':')[0]!r}{hint}; "
                               f"use {', '.join(TRANSFORMS)}")
            if colon and not arg.strip():
                raise CLIError(f"--transform: {item!r} has an empty argument after ':'")
            if name == "vmap":
                value = _axes(arg, item) if arg.strip() else 0
            else:
                value = _positions(arg, item) if arg.strip() else 0
            out.append(Transform(name, value, item))
    return out


# ---------------------------------------------------------------- FILE:FUNC


def split_target(spec: str) -> tuple[str, str]:
    """'path/model.py:fn' or 'pkg.mod:Cls.method' -> (module part, attribute path)."""
    mod, colon, attr = spec.rpartition(":")
    if not colon or not mod or not attr:
        raise CLIError(f"{spec!r}: name the function as FILE.py:FUNC or package.module:FUNC")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in attr.split(".")):
        raise CLIError(f"{spec!r}: {attr!r} is not a Python name (FUNC may be dotted, as in Model.forward)")
    return mod, attr


def _user_error_from(e: BaseException, what: str) -> CLIError:
    """A one-line CLIError for an exception raised by the user's code (innermost user frame); raised
    `from e`, so that --traceback shows the user's own frames (with `from None` it ended in
    graphad's re-raise, a cli trial)."""
    tb = traceback.extract_tb(e.__traceback__)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = ""
    for fr in reversed(tb):
        if not os.path.abspath(fr.filename).startswith(pkg) and not fr.filename.startswith("<frozen"):
            where = f"{_rel(fr.filename)}:{fr.lineno}: "
            break
    if isinstance(e, SyntaxError) and e.filename:
        where = f"{_rel(e.filename)}:{e.lineno}:{e.offset or 0}: "
        return CLIError(f"{where}{what}: SyntaxError: {e.msg}")
    msg = str(e).strip().splitlines()
    return CLIError(f"{where}{what}: {type(e).__name__}: {msg[0] if msg else ''}".rstrip(": "))


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def load_target(spec: str) -> tuple[Callable, str]:
    """The Python object named by FILE.py:FUNC or package.module:FUNC, and a display name.

    A file is executed as a module (not as __main__; its directory goes on sys.path so that its
    sibling imports work). A class deriving from graphad.nn.Cell is instantiated without arguments.
    """
    mod_part, attr = split_target(spec)
    # (a directory named alone is a package to import: `pkg:FUNC` said "is a directory", a cli trial)
    if mod_part.endswith(".py") or os.sep in mod_part or "/" in mod_part or os.path.isfile(mod_part):
        path = mod_part
        if not os.path.exists(path):
            raise CLIError(f"no such file: {path}")
        if os.path.isdir(path):
            raise CLIError(f"{path} is a directory; name a Python file: FILE.py:FUNC")
        modname = "_graphad_cli_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        spec_ = importlib.util.spec_from_file_location(modname, path)
        if spec_ is None or spec_.loader is None:
            raise CLIError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec_)
        directory = os.path.dirname(os.path.abspath(path))
        sys.path.insert(0, directory)
        sys.modules[modname] = module
        try:
            spec_.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            sys.modules.pop(modname, None)
            raise _user_error_from(e, f"importing {path} failed") from e
        finally:
            try:
                sys.path.remove(directory)
            except ValueError:
                pass
        source = path
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_part)
        except ModuleNotFoundError as e:
            if e.name and (mod_part == e.name or mod_part.startswith(e.name + ".")):
                raise CLIError(f"no such file or module: {mod_part!r} (a file needs its .py suffix)") from None
            raise _user_error_from(e, f"importing {mod_part} failed") from e
        except (Exception, SystemExit) as e:
            raise _user_error_from(e, f"importing {mod_part} failed") from e
        source = mod_part
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            have = sorted(n for n, v in vars(obj).items() if not n.startswith("_") and callable(v)) \
                if hasattr(obj, "__dict__") else []
            where = source if i == 0 else f"{source}:{'.'.join(attr.split('.')[:i])}"
            listing = f"; it defines {', '.join(have[:12])}" if have else ""
            raise CLIError(f"{where} has no attribute {part!r}{listing}")
        obj = getattr(obj, part)
    from ..nn.cell import Cell
    if inspect.isclass(obj):
        if issubclass(obj, Cell):
            try:
                obj = obj()
            except Exception as e:
                raise _user_error_from(e, f"instantiating {attr}() failed") from e
        else:
            raise CLIError(f"{spec}: {attr} is a class; name a function or an nn.Cell subclass")
    if not callable(obj):
        raise CLIError(f"{spec}: {attr} is a {type(obj).__name__}, not a function")
    return obj, attr.split(".")[-1]


def _signature_names(fn, n: int) -> list[str] | None:
    """Names of fn's first n positional parameters, or None when they cannot be told."""
    from ..nn.cell import Cell
    target = fn.construct if isinstance(fn, Cell) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) < n or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return None
    return [p.name for p in params[:n]]


def check_arity(fn, name: str, n: int) -> None:
    """CLIError when fn cannot be called with n positional arguments."""
    from ..nn.cell import Cell
    target = fn.construct if isinstance(fn, Cell) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(n))
    except TypeError:
        params = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    and p.default is p.empty]
        want = f"{len(required)}" if len(required) == len(params) else f"{len(required)} to {len(params)}"
        raise CLIError(f"--args gives {n} type(s) but {name}({', '.join(params)}) takes {want} positional "
                       f"argument(s)") from None


def ir_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"f_{out}"


@dataclass
class Traced:
    graph: Graph
    out_tree: Any
    captures: list
    n_args: int


def trace_target(fn: Callable, name: str, types: list[TensorType], transforms: list[Transform]) -> Traced:
    """Trace fn (after the transforms, innermost first) at `types` into a graph.

    Graph inputs are named after fn's parameters; captured tensors (Parameters, closed-over
    tensors) become the last inputs. The graph is named after the chain (`jacrev_forecast`).
    """
    from ..frontend.trace import trace_to_graph
    check_arity(fn, name, len(types))
    f = fn
    gname = name
    for t in transforms:
        f = t.apply(f)
        gname = f"{t.name}_{gname}"
    arg_names = _signature_names(fn, len(types))  # every transformation keeps the positions
    try:
        graph, out_tree, captures = trace_to_graph(f, list(types), name=ir_name(gname), arg_names=arg_names)
    except GraphadError:
        raise
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if tb and not os.path.abspath(tb[-1].filename).startswith(pkg):
            raise _user_error_from(e, f"tracing {name} failed") from e
        raise
    _drop_launcher_locs(graph)
    return Traced(graph, out_tree, list(captures), len(types))


def launcher_files() -> set[str]:
    """Files of the frames that called into graphad (the console script, runpy, a test), both as
    written and relative to the working directory: the frames `user_loc` falls back to."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = set()
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not os.path.abspath(fn).startswith(pkg):
            files.update((fn, _rel(fn)))
        f = f.f_back
    return files


def scrub_launcher_locs(graph: Graph, files: set[str]) -> None:
    """Remove node locations that point at the command's launcher.

    Nodes graphad creates on its own (the identity basis of jacrev, the derivative of a node
    that has no location) get the innermost frame outside the package as their location, which
    under the CLI is its launcher: such locations say nothing to the user, and would make the
    printed IR depend on how the command was started.
    """
    for n in graph.nodes:
        if n.loc is not None and n.loc.file in files:
            n.loc = None


def _drop_launcher_locs(graph: Graph) -> None:
    scrub_launcher_locs(graph, launcher_files())
