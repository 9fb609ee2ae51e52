"""The `graphad` command: trace, transform, optimise, lower, compile and run graphs from the shell.

    graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' --transform jacrev:2
    graphad opt jac.gir --passes cse,dce --print-ir-after-all --time-passes
    graphad lower jac.gir --target llvm --emit tir
    graphad compile jac.gir --target llvm -o jac.gad && graphad run jac.gad --inputs w.npy b.npy x.npy

The CLI only wires flags to the library (DESIGN.md principle 6): passes and their instruments
come from `graphad.passes.manager`, tracing from the API, lowering from `graphad.lowering`,
compiling and artifacts from `graphad.runtime`. `main(argv)` returns the exit status instead of
exiting, so tests run it in-process: 0 success, 1 a user error (one line on stderr, IR errors
as FILE:LINE:COLUMN), 2 an internal error (one line; `--traceback` or GRAPHAD_TRACEBACK=1 shows
the traceback). IR dumps, timing reports and notes go to stderr; the resulting IR to stdout or
`-o FILE`. Colours only on a terminal. TVM is imported only by lower, compile, run and cache.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback

from ..errors import GraphadError, IRParseError, VerifyError
from .specs import CLIError
from .term import Console

EXIT_OK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2
PROG = "graphad"


class UsageError(Exception):
    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.message, self.prog = message, prog


class InternalError(Exception):
    """A bug in graphad found by a check (a pass that breaks the verifier): exit status 2."""


class _Exit(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that writes to the command's console and raises instead of exiting."""

    def __init__(self, *args, console: Console | None = None, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)
        self.console = console

    list_passes = False  # the pipeline commands' --help ends with the passes and their options

    def error(self, message):
        raise UsageError(message, self.prog)

    def format_help(self):
        text = super().format_help()
        if self.list_passes:
            # built on demand from the registry, so the help always shows the passes as declared
            text += "\npasses (`graphad passes -v` adds post-conditions):\n" + pass_listing() + "\n"
        return text

    def exit(self, status=0, message=None):
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)

    def _print_message(self, message, file=None):
        if not message or self.console is None:
            return super()._print_message(message, file)
        if file is sys.stderr:
            self.console.write_err(message)
        else:
            self.console.write(message)


# ---------------------------------------------------------------- helpers


def _read_text(path: str, con: Console, stdin=None) -> tuple[str, str]:
    """(text, source name) of an input file, or of standard input for '-'."""
    if path == "-":
        return (stdin or sys.stdin).read(), "<stdin>"
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not an IR file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not a text file (textual IR is UTF-8)") from None
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None


def read_ir(path: str, con: Console, stdin=None):
    """The funcs of an IR file, parsed and verified (IRParseError / VerifyError on bad input)."""
    from ..ir.parser import parse_module
    from ..ir.verify import verify
    text, name = _read_text(path, con, stdin)
    graphs = parse_module(text, name)
    if not graphs:
        raise CLIError(f"{name}: no func in the input")
    for g in graphs:
        try:
            verify(g)
        except VerifyError as e:
            raise CLIError(f"{name}: {e}") from None
    return graphs


def write_output(path: str | None, text: str, con: Console, what: str = "") -> None:
    if path is None or path == "-":
        con.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None
    if what:
        con.note(f"wrote {what} to {path}")


def _signature(graph) -> str:
    ins = ", ".join(str(v.type) for v in graph.inputs)
    outs = ", ".join(str(v.type) for v in graph.outputs)
    return f"@{graph.name}({ins}) -> ({outs})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------- the pass pipeline and its instruments


def run_pipeline(ns, con: Console, graphs: list, default: str = "") -> list:
    """Run --passes (or `default`) over every graph with the instruments the flags ask for."""
    import warnings
    from collections import Counter
    from ..passes.manager import (DumpDot, PassManager, PrintIR, TimePasses, VerifyEach, format_statistics,
                                  merge_statistics, parse_pipeline)
    from .specs import launcher_files
    text = ns.passes if ns.passes is not None else default
    pipeline = parse_pipeline(text)
    statistics = [Counter() for _ in pipeline]  # per pipeline entry, summed over the funcs
    scrub = _ScrubLocs(launcher_files())
    timer = TimePasses() if ns.time_passes else None
    dots: list = []
    out = []
    printing = ns.print_ir_before_all or ns.print_ir_after_all or ns.print_changed or ns.diff
    for g in graphs:
        instruments = [scrub]  # first, so that the other instruments see the cleaned graph
        if printing:
            instruments.append(PrintIR(emit=con.dump, before_all=ns.print_ir_before_all,
                                       after_all=ns.print_ir_after_all, only_changed=ns.print_changed,
                                       diff=ns.diff))
        if ns.verify_each:
            instruments.append(VerifyEach())
        if timer is not None:
            instruments.append(timer)
        dot = None
        if ns.dot:
            try:
                os.makedirs(ns.dot, exist_ok=True)
            except OSError as e:
                raise CLIError(f"--dot: cannot create directory {ns.dot}: {e.strerror or e}") from None
            dot = DumpDot(ns.dot, prefix=f"{g.name}." if len(graphs) > 1 else "")
            instruments.append(dot)
            dots.append(dot)
        pm = PassManager(pipeline, instruments)
        try:
            # a pass's warnings (simplify short of its fixed point) become `warning:` lines on stderr,
            # not Python's FILE:LINE: RuntimeWarning form
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = pm.run(g)
        except VerifyError as e:  # VerifyEach: a pass produced a malformed graph, a graphad bug
            raise InternalError(f"{e} (found by --verify-each)") from None
        for w in caught:
            con.warn(str(w.message))
        for total, s in zip(statistics, pm.statistics):
            merge_statistics(total, s)
        if dot is not None and dot.index == 0:  # empty pipeline: still show the input
            dot._write("00_input", g)
        out.append(result)
    if timer is not None:
        con.write_err(timer.report() + "\n")
    if getattr(ns, "pass_statistics", False) and pipeline:
        con.write_err(format_statistics(pipeline, statistics) + "\n")
    if dots:
        _render_dots(ns.dot, [p for d in dots for p in d.written], con)
    return out


class _ScrubLocs:
    """Instrument removing, after every pass, node locations that point at the CLI's launcher
    (see `specs.scrub_launcher_locs`)."""

    def __init__(self, files):
        self.files = files

    def before(self, info, graph):
        pass

    def after(self, info, before, after, seconds):
        from .specs import scrub_launcher_locs
        scrub_launcher_locs(after, self.files)


def _render_dots(directory: str, paths: list[str], con: Console) -> None:
    from ..ir.export import render_dot
    if shutil.which("dot") is None:
        con.note(f"wrote {len(paths)} DOT file(s) to {directory}; Graphviz is not installed (no `dot` on PATH), "
                 f"so they were not rendered: install graphviz (apt-get install graphviz) and run "
                 f"dot -Tsvg FILE.dot -o FILE.svg")
        return
    for p in paths:
        render_dot(open(p).read(), os.path.splitext(p)[0] + ".svg", "svg")
    con.note(f"wrote {len(paths)} DOT file(s) and their SVG renderings to {directory}")


# ---------------------------------------------------------------- sources: IR files or FILE:FUNC


class Source:
    """What lower/compile work on: a graph, and for FILE:FUNC the trace's output tree and captures."""

    def __init__(self, graph, traced=None):
        self.graph = graph
        self.traced = traced


def _is_function_target(spec: str) -> bool:
    if spec == "-" or os.path.exists(spec):
        return False
    return ":" in spec


def resolve_source(ns, con: Console, stdin=None) -> Source:
    from .specs import load_target, parse_arg_types, parse_transforms, trace_target
    spec = ns.source
    if _is_function_target(spec):
        if getattr(ns, "func_name", None):  # (it was ignored: a cli trial)
            raise CLIError(f"--func is for IR files holding several funcs; {spec} names its function after "
                           f"the colon")
        types = parse_arg_types(ns.args)
        transforms = parse_transforms(ns.transform)
        fn, name = load_target(spec)
        traced = trace_target(fn, name, types, transforms)
        return Source(traced.graph, traced)
    if spec.endswith(".py") and os.path.exists(spec):
        raise CLIError(f"{spec}: name the function to trace, as in {spec}:FUNC")
    if ns.args:
        raise CLIError(f"--args is for FILE.py:FUNC sources; {spec} is textual IR, whose types are written in it")
    if ns.transform:
        raise CLIError("--transform is for FILE.py:FUNC sources; for IR use passes, e.g. --passes reverse-ad")
    graphs = read_ir(spec, con, stdin)
    names = ", ".join("@" + g.name for g in graphs)
    if ns.func_name:
        pick = [g for g in graphs if g.name == ns.func_name]
        if not pick:
            raise CLIError(f"{spec} has no func @{ns.func_name}; it has {names}")
        return Source(pick[0])
    if len(graphs) > 1:
        raise CLIError(f"{spec} holds {len(graphs)} funcs ({names}); choose one with --func NAME")
    return Source(graphs[0])


# ---------------------------------------------------------------- commands


def cmd_trace(ns, con: Console, stdin=None) -> int:
    from ..ir.printer import print_module
    from .specs import load_target, parse_arg_types, parse_transforms, trace_target
    types = parse_arg_types(ns.args)
    transforms = parse_transforms(ns.transform)
    fn, name = load_target(ns.target)
    traced = trace_target(fn, name, types, transforms)
    if traced.captures:
        k = len(traced.captures)
        con.note(f"{name} uses {k} captured tensor(s) (Parameters or closed-over tensors); they are the last "
                 f"{k} input(s) of @{traced.graph.name}")
    graphs = run_pipeline(ns, con, [traced.graph])
    write_output(ns.output, print_module(graphs), con, f"@{graphs[0].name}")
    return EXIT_OK


def cmd_opt(ns, con: Console, stdin=None) -> int:
    from ..ir.printer import print_module
    graphs = read_ir(ns.input, con, stdin)
    graphs = run_pipeline(ns, con, graphs)
    write_output(ns.output, print_module(graphs), con, f"{len(graphs)} func(s)")
    return EXIT_OK


def pass_listing(verbose: bool = False, style=None) -> str:
    """Every registered pass with its summary and typed options (name=TYPE, default, help), as
    `graphad passes` and the --help of the pipeline commands show them; -v adds post-conditions."""
    from ..passes.manager import describe_passes
    st = style or (lambda text, *styles: text)
    infos = describe_passes()
    width = max((len(i.name) for i in infos), default=0)
    lines = []
    for info in infos:
        lines.append(f"  {st(info.name.ljust(width), 'bold')}  {info.summary}")
        pad = " " * (width + 4)
        if info.options:
            specs = [f"{o.flag}={o.type}" for o in info.options]
            w = max(len(x) for x in specs)
            for o, spec in zip(info.options, specs):
                default = "required" if o.required_hint else f"default: {o.describe_default()}"
                lines.append(f"{pad}{spec.ljust(w)}  {o.help} ({default})")
        if verbose and info.postcondition:
            lines.append(f"{pad}post-condition: {info.postcondition}")
    return "\n".join(lines)


def cmd_passes(ns, con: Console, stdin=None) -> int:
    con.write("Passes (run with `graphad opt FILE --passes 'a,b{key=value,key2=value}'`):\n"
              + pass_listing(ns.verbose, con.out_style) + "\n")
    return EXIT_OK


def _pipeline_defaults(ns) -> str:
    """lower and compile run what every compiled graph gets unless --passes says otherwise."""
    from ..passes.manager import DEFAULT_PIPELINE
    return DEFAULT_PIPELINE


def cmd_lower(ns, con: Console, stdin=None) -> int:
    src = resolve_source(ns, con, stdin)
    graph = run_pipeline(ns, con, [src.graph], default=_pipeline_defaults(ns))[0]
    from ..lowering import lower_graph_info
    from ..runtime.executable import graph_for_lowering
    from ..runtime.host import has_control_flow
    graph = graph_for_lowering(graph)
    if has_control_flow(graph):
        raise GraphadError(f"@{graph.name} has control flow (cond, while_loop, scan): its straight-line "
                           f"segments and regions are compiled separately, so there is no one module to "
                           f"show; `graphad opt` prints the regions")
    from ..lowering.targets import is_gpu, resolve_target
    target = resolve_target(ns.target)
    header = [f"# graphad lower: {_signature(graph)}", f"# target: {target}"]
    from ..frontend.function import complex_value
    if complex_value(graph) is not None:
        # as `graphad compile` builds it (frontend.function._complex_runner): real/imaginary pairs;
        # TVM has no complex type ("unknown dtype complex64", a cli trial)
        from ..passes.complex_split import ComplexSplitUnsupported, split_complex
        try:
            graph = split_complex(graph).graph
        except ComplexSplitUnsupported as e:
            raise GraphadError(f"@{graph.name} has complex values and its {e}: it runs on the NumPy "
                               f"interpreter, so there is no module to show (docs/complex.md)") from None
        header.append("# complex values as real/imaginary pairs (docs/complex.md)")
    mod = lower_graph_info(graph, gpu=is_gpu(target)).module
    if ns.emit == "relax":
        header.append("# emit relax: the Relax module graphad hands to TVM (before legalization and fusion)")
    else:
        mod, notes = _to_tir(mod, target, is_gpu(target), ns.schedule)
        header += notes
    text = "\n".join(header) + "\n" + mod.script().rstrip("\n") + "\n"
    write_output(ns.output, text, con, f"the {ns.emit} of @{graph.name}")
    return EXIT_OK


def _to_tir(mod, target, gpu: bool, schedule: bool):
    """The module the build step compiles for `target` (lowering.pipeline.prepare_module, the
    function the runtime's build calls) and the header lines describing it."""
    from ..lowering.pipeline import prepare_module
    report: dict = {}
    out = prepare_module(mod, target, schedule=schedule, report=report)
    if gpu:
        notes = ["# emit tir: legalized, fused and scheduled by dlight, as compiled for CUDA" if schedule else
                 "# emit tir: legalized and fused, unscheduled (--no-schedule; a CUDA build needs dlight's schedules)"]
        notes += [f"#   dlight rule failed inside (the next rule took the kernel): {f}"
                  for f in report.get("rule_failures", [])]
        from ..lowering._tvm import load_tvm
        from ..lowering.let_fence import unfenced
        if schedule and not unfenced(load_tvm(), out).same_as(out):  # (the module holds a fence)
            notes.append("#   graphad_index_fence(e) is e, hidden from TVM's index simplifier until code "
                         "generation (lowering/index_fence.py)")
        return out, notes
    if not schedule:
        notes = ["# emit tir: legalized and fused, unscheduled (--no-schedule)"]
    else:
        notes = ["# emit tir: legalized, fused and scheduled by graphad's CPU rules, as compiled"]
        notes += [f"#   {r}" for r in report.get("schedule", [])]
    from ..lowering._tvm import load_tvm
    from ..lowering.rare_path import has_markers
    if has_markers(load_tvm(), out):
        notes.append("#   graphad_rare(c) is c, marking a rarely true condition: TVM's TIR lowering then runs "
                     "the loop over a vector's lanes holding one as a check of the conditions and the vector at "
                     "their common values, and only for a vector where one holds, the vector as written "
                     "(after the whole nest where it may run again, else in turn: lowering/rare_path.py)")
    return out, notes


def cmd_compile(ns, con: Console, stdin=None) -> int:
    from ..lowering import compile_log
    # --time: one record from the trace to the loaded library, printed after the summary; without
    # it GRAPHAD_LOG_COMPILE=1 still prints the runtime's own record (from the lowering on)
    if not getattr(ns, "time", False):
        return _compile(ns, con, stdin)
    with compile_log.record(_source_name(ns), log=False) as rec:
        status = _compile(ns, con, stdin)
    con.write(rec.format() + "\n")
    return status


def _source_name(ns) -> str:
    spec = str(ns.source)
    return spec.rsplit(":", 1)[-1] if _is_function_target(spec) else os.path.basename(spec)


def _compile(ns, con: Console, stdin=None) -> int:
    from .. import pytree
    from ..frontend.function import OutSpec, make_runner
    from ..frontend.jit import Compiled
    from ..lowering.compile_log import phase
    with phase("trace"):  # parse an IR file, or trace FILE:FUNC with its --transform steps
        src = resolve_source(ns, con, stdin)
    before = (src.graph.in_types, src.graph.out_types)
    with phase("passes"):
        graph = run_pipeline(ns, con, [src.graph], default=_pipeline_defaults(ns))[0]
    spec = OutSpec()
    captures: list = []
    if src.traced is not None and (graph.in_types, graph.out_types) == before:
        in_tree = pytree.flatten(tuple(range(src.traced.n_args)))[1]
        spec.tree = src.traced.out_tree
        captures = src.traced.captures
    else:
        if src.traced is not None and src.traced.captures:
            raise CLIError(f"--passes changed the signature of @{graph.name}, which has captured tensors as its "
                           f"last inputs; compile the function without such passes")
        in_tree = pytree.flatten(tuple(range(len(graph.inputs))))[1]
        n_out = len(graph.outputs)
        spec.tree = pytree.flatten(0 if n_out == 1 else tuple(range(n_out)))[1]
    t0 = time.perf_counter()
    runner = make_runner(graph, "tvm", ns.target)
    seconds = time.perf_counter() - t0
    compiled = Compiled(graph, in_tree, spec, captures, runner, graph.name, ns.target)
    out = ns.output
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CLIError(f"cannot write {out}: no such directory {parent}")
    compiled.save(out)
    size = os.path.getsize(out)
    target = getattr(runner, "target", ns.target)
    source = getattr(runner, "source", "compiled")
    how = "from the compile cache" if source == "disk-cache" else f"in {seconds:.2f} s"
    con.write(f"compiled {_signature(graph)}\n  target: {target}\n  {how}; wrote {out} ({_size(size)})\n")
    return EXIT_OK


def _load_array(path: str):
    import numpy as np
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CLIError(f"{path}: not a NumPy .npy/.npz file ({' '.join(str(e).split())})") from None
    if isinstance(data, np.ndarray):
        return [data]
    with data:
        return [data[k] for k in data.files]


def _check_inputs_against_manifest(path: str, arrays: list) -> None:
    """CLIError when the inputs do not match the artifact's signature (read from its manifest
    without loading the library); silent when the manifest cannot tell."""
    from .. import dtypes as dt
    from ..runtime.aot import read_artifact_manifest
    record = read_artifact_manifest(path)  # ArtifactError for a file that is not an artifact
    try:
        man = record["manifest"]
        name = man.get("name", "main")
        types = [(tuple(int(s) for s in shape), dt.as_dtype(d)) for shape, d in man["in_types"]]
    except (KeyError, TypeError, ValueError, AttributeError, GraphadError):
        return
    spell = [f"{d.short}[{','.join(str(s) for s in shape)}]" for shape, d in types]
    try:  # which argument each input is (a structured argument's leaves in its flattened order)
        from .. import pytree
        from ..frontend.compiled import _leaf_path
        tree = pytree.treedef_from_json(man["in_tree"])
        names = man.get("arg_names") or []
        for i in range(len(spell)):
            pos, sub = _leaf_path(tree, i)
            if pos is not None and (sub or len(names) > pos and names[pos]):
                spell[i] += f" ({names[pos] if len(names) > pos and names[pos] else f'argument {pos}'}{sub})"
    except (KeyError, TypeError, ValueError, AttributeError, GraphadError):
        pass
    if len(arrays) != len(types):
        raise CLIError(f"@{name} takes {len(types)} input(s) ({', '.join(spell)}); --inputs gives {len(arrays)}")
    for i, (a, (shape, d), s) in enumerate(zip(arrays, types, spell)):
        if d.name == "bfloat16" and a.dtype.kind == "V" and a.dtype.itemsize == 2:
            # .npy stores bfloat16 (ml_dtypes') as 2-byte void: those bytes are its bits (the
            # input could not be given at all, a cli trial)
            arrays[i] = a = a.view(dt.numpy_bfloat16())
        try:
            got_d = dt.as_dtype(a.dtype)
        except GraphadError:
            got_d = None
        if tuple(a.shape) != shape or got_d is not d:
            got = f"{got_d.short if got_d else a.dtype}[{','.join(str(x) for x in a.shape)}]"
            raise CLIError(f"@{name} input {i} is {s}, but --inputs gives {got} (graphad run does not cast; "
                           f"save the array as {d.name})")


def cmd_run(ns, con: Console, stdin=None) -> int:
    import numpy as np
    from .. import pytree
    from ..frontend.jit import load
    if not os.path.exists(ns.artifact):
        raise CLIError(f"no such file: {ns.artifact}")
    arrays = [a for p in (ns.inputs or []) for a in _load_array(p)]
    _check_inputs_against_manifest(ns.artifact, arrays)  # before TVM is imported and the library loaded
    compiled = load(ns.artifact)
    want = ", ".join(f"{d.short}[{','.join(str(s) for s in shape)}]" for shape, d in compiled.in_types)
    if len(arrays) != len(compiled.in_types):
        raise CLIError(f"@{compiled.name} takes {len(compiled.in_types)} input(s) ({want}); --inputs gives "
                       f"{len(arrays)}")
    # the flat inputs put back into the arguments' structure (a dict argument's leaves are its
    # values in sorted-key order, as the manifest lists them)
    args = pytree.unflatten(compiled.in_tree, arrays)
    t0 = time.perf_counter()
    result = compiled(*args)
    seconds = time.perf_counter() - t0
    leaves = [np.asarray(x) for x in pytree.flatten(result)[0]]
    st = con.out_style
    lines = [f"@{compiled.name}({want}): {len(leaves)} output(s) in {seconds * 1e3:.2f} ms"]
    with np.printoptions(threshold=64, edgeitems=3, precision=5, suppress=True, linewidth=100):
        for i, a in enumerate(leaves):
            from .. import dtypes as dt
            lines.append(st(f"out{i}: {dt.as_dtype(a.dtype).short}[{','.join(str(s) for s in a.shape)}]", "bold"))
            lines.append(np.array2string(a))
    con.write("\n".join(lines) + "\n")
    if ns.out:
        if os.path.isdir(ns.out):  # (np.savez would write a hidden "..npz" into it for ".")
            raise CLIError(f"--out {ns.out} is a directory; give a file name, e.g. {os.path.join(ns.out, 'out.npz')}")
        try:
            np.savez(ns.out, **{f"out{i}": a for i, a in enumerate(leaves)})
        except OSError as e:
            raise CLIError(f"cannot write {ns.out}: {e.strerror or e}") from None
        con.note(f"wrote {len(leaves)} output(s) to {ns.out if ns.out.endswith('.npz') else ns.out + '.npz'}")
    return EXIT_OK


def cmd_cache(ns, con: Console, stdin=None) -> int:
    """graphad cache stats|ls|clear: the disk cache as graphad sees it (its own, verified entries)."""
    import warnings
    from ..runtime import cache
    directory, problem = cache.disk_cache_status(create=False)
    if directory is None:
        con.write(f"disk cache: disabled ({problem})\n")
        return EXIT_OK
    if problem is not None:  # an untrusted directory is neither read nor cleared
        con.write(f"disk cache: not used ({problem}); see docs/security.md\n")
        return EXIT_OK
    if ns.action == "stats":
        with warnings.catch_warnings():  # the problem, if any, was reported above
            warnings.simplefilter("ignore", RuntimeWarning)
            info = cache.cache_info()
        from ..runtime.kernel_cache import summary
        n_kernels, n_packs, k_bytes, refused = summary(directory)
        kernels = (f"not used ({refused})" if refused else
                   f"{n_kernels} in {n_packs} pack{'' if n_packs == 1 else 's'} ({_size(k_bytes)})")
        con.write(f"directory:     {directory}\n"
                  f"entries:       {info.disk_entries} ({_size(info.disk_bytes)})\n"
                  f"kernels:       {kernels}\n")
        return EXIT_OK
    if ns.action == "ls":
        rows = _cache_entries(directory)
        if not rows:
            con.write(f"no entries in {directory}\n")
            return EXIT_OK
        for r in rows:
            con.write(f"{r['key'][:16]}  {r['created']}  {r['size']:>10}  {r['device']:<4}  {r['signature']}\n")
        return EXIT_OK
    # clear: only graphad's own entries; a user's file or a symbolic link there is kept
    res = cache.clear_disk_cache()
    cache.cache_clear(disk=False)
    packs = (f" and {res.kernel_packs} kernel pack{'' if res.kernel_packs == 1 else 's'} ({_size(res.kernel_bytes)})"
             if res.kernel_packs else "")
    con.write(f"removed {res.entries} entr{'y' if res.entries == 1 else 'ies'} ({_size(res.bytes)}){packs} "
              f"from {directory}\n")
    if res.kept:
        shown = ", ".join(res.kept[:5]) + (", ..." if len(res.kept) > 5 else "")
        con.write(f"kept {len(res.kept)} file(s) that are not graphad cache entries: {shown}\n")
    if res.failed:
        reasons = sorted({why for _, why in res.failed})
        shown = ", ".join(name for name, _ in res.failed[:5]) + (", ..." if len(res.failed) > 5 else "")
        raise CLIError(f"could not remove {len(res.failed)} of graphad's cache file(s) in {directory} "
                       f"({'; '.join(reasons)}): {shown}")
    return EXIT_OK


def _cache_entries(directory: str | None) -> list[dict]:
    """One row per manifest in the disk cache, formatted from the runtime's own reading of it
    (`runtime.cache.describe_entries`: read only, links not followed, invalid ones with the reason)."""
    from ..runtime import cache
    rows = []
    for e in cache.describe_entries():
        if e.problem is not None:
            rows.append({"key": e.key, "created": "?" * 16, "size": "?", "device": "?",
                         "signature": f"(invalid: {e.problem})"})
            continue
        types = [", ".join(f"{_short(d)}[{','.join(str(s) for s in shape)}]" for d, shape in ts)
                 for ts in (e.inputs, e.outputs)]
        try:
            created = "?" * 16 if e.created is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created))
        except (OSError, ValueError, TypeError, OverflowError):  # e.g. a year beyond the platform's range
            created = "?" * 16
        rows.append({"key": e.key, "created": created, "size": _size(e.lib_size), "device": e.device,
                     "signature": f"@{e.name}({types[0]}) -> ({types[1]})"})
    return rows


def _short(dtype: str) -> str:
    from .. import dtypes as dt
    try:
        return dt.as_dtype(dtype).short
    except GraphadError:
        return dtype


# ---------------------------------------------------------------- the parser

_TRACE_EXAMPLES = """\
examples:
  graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]'
  graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' \\
      --transform jacrev:2 --passes cse,dce -o jac.gir
  graphad trace mypkg.model:loss --args 'f32[8,3] f32[8]' --transform 'grad:0|1'
  graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[4,16]' \\
      --transform 'jacrev:2,vmap:none|none|0'

--args takes the argument types in the IR spelling, space-separated: DTYPE[DIMS] with DTYPE one of
f16 bf16 f32 f64 i32 i64 bool, and f32[] for a scalar.
--transform takes a chain of grad[:POS], value_and_grad[:POS], jacrev[:POS], jacfwd[:POS],
hessian[:POS] and vmap[:AXES] (POS: an argument position or several joined by '|'; AXES: one axis,
or one per argument joined by '|', 'none' for an unmapped argument). The chain is applied
inside-out as written: `--transform jacrev:2,vmap:0` (or `--transform jacrev:2 --transform vmap:0`)
traces vmap(jacrev(f, 2), 0).
"""

_PIPELINE_SYNTAX = """\
A pipeline is a comma-separated list of passes; a pass's options follow in braces as key=value,
separated by commas or spaces, a list option taking comma-separated values:
'reverse-ad{wrt=0,1 outputs=0},simplify{structure=false},cse,dce' (quote the braces in the shell).
The older spelling 'reverse-ad:wrt=0|1;outputs=0' is still accepted."""

_OPT_EXAMPLES = """\
examples:
  graphad opt f.gir --passes reverse-ad,cse,dce
  graphad opt f.gir --passes 'reverse-ad{wrt=2},cse,dce' --print-ir-after-all
  graphad opt jac.gir --passes cse,dce --print-changed --diff
  graphad opt f.gir --passes 'vmap{size=8,batched=0}' --verify-each --time-passes -o batched.gir
  graphad opt jac.gir --passes 'simplify{rounds=4},cse,dce' --pass-statistics -o /dev/null
  graphad opt f.gir --passes cse,dce --dot dots/
  graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' | graphad opt - --passes reverse-ad

{PIPELINE_SYNTAX}
Without --passes the IR is read, verified and printed back in canonical form.
IR dumps, diffs, the timing report and the statistics go to stderr; the resulting IR to stdout (or -o FILE).
""".replace("{PIPELINE_SYNTAX}", _PIPELINE_SYNTAX)

_LOWER_EXAMPLES = """\
examples:
  graphad lower jac.gir --target llvm --emit relax
  graphad lower jac.gir --target llvm --emit tir
  graphad lower examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' --emit tir --no-schedule
  graphad lower jac.gir --target cuda --emit tir

The source is a textual IR file (or '-') or FILE.py:FUNC with --args/--transform. The graph
first goes through --passes (default: the pipeline every compiled graph gets, {DEFAULT_PIPELINE}).
--emit relax shows the Relax module graphad builds, i.e. what TVM receives; --emit tir shows the
legalized, fused and scheduled TIR it compiles (CPU: graphad's schedule rules, with a report
of the rule applied to every kernel; CUDA: dlight).
"""

_COMPILE_EXAMPLES = """\
examples:
  graphad compile jac.gir --target llvm -o jac.gad
  graphad compile examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' \\
      --transform jacrev:2 --target llvm -o jac.gad
  graphad run jac.gad --inputs weight.npy bias.npy x.npy --out jac.npz

Writes an AOT artifact: one file holding the compiled library and its signature, which
`graphad run` or graphad.load() run in a fresh process without compiling. Captured tensors
(Parameters) of FILE:FUNC are stored in the artifact. Compiling goes through the on-disk cache
(graphad cache stats). The graph first goes through --passes (default: the pipeline every
compiled graph gets, {DEFAULT_PIPELINE}). --time prints the seconds of each phase (wall and
CPU); GRAPHAD_LOG_COMPILE=1 prints the same for every graph a program compiles.
"""

_RUN_EXAMPLES = """\
examples:
  graphad run jac.gad --inputs weight.npy bias.npy x.npy
  graphad run jac.gad --inputs inputs.npz --out result.npz

--inputs takes one .npy file per argument, in order (an .npz file contributes all its arrays in
order; a structured argument takes one per leaf, a dict's values by sorted key, as the artifact
lists them). The dtypes and shapes must be the artifact's: `graphad run` does not cast. The outputs
are printed, and with --out saved as out0, out1, ... in an .npz file. NumPy has no bfloat16: .npy
and .npz files hold one as 2-byte void, which --inputs reads as bfloat16 and --out writes; read
such an output with `np.load(...)["out0"].view(ml_dtypes.bfloat16)`.
"""

_CACHE_EXAMPLES = """\
examples:
  graphad cache stats
  graphad cache ls
  graphad cache clear
  GRAPHAD_CACHE_DIR=/tmp/gcache graphad cache ls

The disk cache holds one compiled library per (graph, target, versions), under $GRAPHAD_CACHE_DIR
(default ~/.cache/graphad), and in kernels/ the object code of every kernel compiled, which a new
graph links instead of compiling again (GRAPHAD_NO_KERNEL_CACHE=1 turns that part off).
"""

_PASSES_EXAMPLES = """\
examples:
  graphad passes
  graphad passes -v
"""

_MAIN_EXAMPLES = """\
examples:
  graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' --transform jacrev:2 -o jac.gir
  graphad opt jac.gir --passes cse,dce --print-changed --time-passes
  graphad lower jac.gir --target llvm --emit tir
  graphad compile jac.gir --target llvm -o jac.gad
  graphad run jac.gad --inputs weight.npy bias.npy x.npy

Exit status: 0 success, 1 user error (bad input, flag, file), 2 internal error.
`graphad COMMAND --help` describes each command with examples.
"""


def _add_common(p) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS,
                   help="colour the output: auto (on a terminal, the default), always, never")
    g.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show the Python traceback of an error (also GRAPHAD_TRACEBACK=1)")


def _add_pipeline(p, default_help: str) -> None:
    g = p.add_argument_group("passes and instruments")
    g.add_argument("--passes", metavar="PIPELINE", default=None,
                   help=f"comma-separated passes with options, e.g. 'reverse-ad{{wrt=2}},cse,dce' ({default_help})")
    g.add_argument("--print-ir-before-all", action="store_true", help="print the IR before every pass (stderr)")
    g.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (stderr)")
    g.add_argument("--print-changed", action="store_true", help="print the IR after a pass only if it changed it")
    g.add_argument("--diff", action="store_true", help="print a unified diff of the IR for every pass that changes it")
    g.add_argument("--verify-each", action="store_true", help="run the IR verifier after every pass")
    g.add_argument("--time-passes", action="store_true", help="print the wall time of every pass (stderr)")
    g.add_argument("--pass-statistics", action="store_true",
                   help="print what every pass did (stderr): nodes before/after, rewrites per rule, and whether "
                        "simplify reached its fixed point")
    g.add_argument("--dot", metavar="DIR", default=None,
                   help="write a Graphviz DOT file of the input and of the IR after every pass into DIR "
                        "(rendered to SVG when Graphviz is installed)")


def _add_function_source(p) -> None:
    p.add_argument("--args", metavar="TYPES", nargs="+", action="extend", default=None,
                   help="argument types of FUNC, e.g. 'f32[16,16] f32[16] f32[16]'")
    p.add_argument("--transform", metavar="CHAIN", action="append", default=None,
                   help="transformations applied to FUNC, innermost first, e.g. jacrev:2 or grad:0,vmap:0")


def _add_graph_source(p) -> None:
    """The graph to lower or compile: an IR file or a Python function, and the target."""
    p.add_argument("source", metavar="SOURCE", help="IN.gir, - (stdin) or FILE.py:FUNC")
    _add_function_source(p)
    p.add_argument("--func", dest="func_name", metavar="NAME", default=None,
                   help="the func to use when the IR file holds several")
    p.add_argument("--target", default="llvm", help="llvm (the host CPU, default), cuda or sm_XX")


def build_parser(con: Console) -> _Parser:
    from .. import __version__
    from ..passes.manager import DEFAULT_PIPELINE
    parser = _Parser(prog=PROG, console=con,
                     description="graphad: trace Python functions into graph IR, differentiate and transform\n"
                                 "them with named passes, lower them through TVM, compile and run them.",
                     epilog=_MAIN_EXAMPLES)
    parser.add_argument("--version", action="version", version=f"graphad {__version__}")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the output: auto (on a terminal, the default), always, never")
    parser.add_argument("--traceback", action="store_true", default=False,
                        help="show the Python traceback of an error (also GRAPHAD_TRACEBACK=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help_, epilog, fn, passes: bool = False):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           epilog=epilog.replace("{DEFAULT_PIPELINE}", DEFAULT_PIPELINE), console=con)
        p.list_passes = passes
        p.set_defaults(func=fn)
        return p

    p = add("trace", "trace a Python function (optionally transformed) into textual IR", _TRACE_EXAMPLES, cmd_trace, True)
    p.add_argument("target", metavar="FILE.py:FUNC", help="the function: path/to/file.py:FUNC or package.module:FUNC")
    _add_function_source(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the IR to FILE instead of stdout")
    _add_pipeline(p, "default: none")
    _add_common(p)

    p = add("opt", "run a pass pipeline on textual IR", _OPT_EXAMPLES, cmd_opt, True)
    p.add_argument("input", metavar="IN.gir", help="textual IR file, or - for standard input")
    p.add_argument("-o", "--output", metavar="FILE", help="write the IR to FILE instead of stdout")
    _add_pipeline(p, "default: none")
    _add_common(p)

    p = add("passes", "list the registered passes with their one-line docs", _PASSES_EXAMPLES, cmd_passes)
    p.add_argument("-v", "--verbose", action="store_true", help="also show options and post-conditions")
    _add_common(p)

    p = add("lower", "show the Relax or TIR that TVM receives and produces for a graph", _LOWER_EXAMPLES, cmd_lower, True)
    _add_graph_source(p)
    p.add_argument("--emit", choices=("relax", "tir"), default="relax", help="what to print (default: relax)")
    p.add_argument("--no-schedule", dest="schedule", action="store_false",
                   help="with --emit tir: show the fused TIR before scheduling")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    _add_pipeline(p, f"default: {DEFAULT_PIPELINE}")
    _add_common(p)

    p = add("compile", "compile a graph for a target into an AOT artifact", _COMPILE_EXAMPLES, cmd_compile, True)
    _add_graph_source(p)
    p.add_argument("-o", "--output", metavar="ARTIFACT", required=True, help="the artifact file to write")
    p.add_argument("--time", action="store_true",
                   help="print where the time went: trace, passes, lowering, TVM's build phases, export, load")
    _add_pipeline(p, f"default: {DEFAULT_PIPELINE}")
    _add_common(p)

    p = add("run", "run an AOT artifact on inputs from .npy files", _RUN_EXAMPLES, cmd_run)
    p.add_argument("artifact", metavar="ARTIFACT", help="a file written by `graphad compile` or Compiled.save")
    p.add_argument("--inputs", metavar="FILE", nargs="+", action="extend", default=None,
                   help="one .npy per argument, in order (or .npz files)")
    p.add_argument("--out", metavar="OUT.npz", default=None, help="save the outputs to this .npz file")
    _add_common(p)

    p = add("cache", "inspect or clear the on-disk compile cache", _CACHE_EXAMPLES, cmd_cache)
    p.add_argument("action", choices=("stats", "ls", "clear"), help="stats, ls or clear")
    _add_common(p)
    return parser


# ---------------------------------------------------------------- entry point


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None, *, stdout=None, stderr=None, stdin=None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status (0, 1 or 2)."""
    con = Console(stdout, stderr)
    show_tb = os.environ.get("GRAPHAD_TRACEBACK", "") not in ("", "0")
    try:
        parser = build_parser(con)
        ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        if extra:  # reported against the subcommand, whose --help lists its flags
            prog = f"{PROG} {ns.command}" if getattr(ns, "command", None) else PROG
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}", prog)
        con.set_color(ns.color)
        show_tb = show_tb or ns.traceback
        if getattr(ns, "func", None) is None:
            con.write_err(parser.format_usage())
            con.error("choose a command (`graphad --help` lists them)")
            return EXIT_USER
        return int(ns.func(ns, con, stdin) or 0)
    except _Exit as e:
        return e.status
    except UsageError as e:
        con.error(f"{_one_line(e.message)} (see `{e.prog} --help`)", prefix=e.prog)
        return EXIT_USER
    except IRParseError as e:
        if show_tb:
            con.write_err(traceback.format_exc())
        st = con.err_style
        con.write_err(f"{e.source_name}:{e.line}:{e.column}: {st('error:', 'red', 'bold')} "
                      f"{_one_line(e.bare_message)}\n")
        return EXIT_USER
    except InternalError as e:
        if show_tb:
            con.write_err(traceback.format_exc())
        con.error(f"internal error: {_one_line(str(e))}")
        return EXIT_INTERNAL
    except GraphadError as e:
        if show_tb:
            con.write_err(traceback.format_exc())
        con.error(_one_line(str(e)))
        return EXIT_USER
    except KeyboardInterrupt:
        con.error("interrupted")
        return 130
    except BrokenPipeError:  # `graphad ... | head`
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK
    except Exception as e:
        if show_tb:
            con.write_err(traceback.format_exc())
        con.error(f"internal error: {type(e).__name__}: {_one_line(str(e))} (this is a bug in graphad; rerun "
                  f"with --traceback for details)")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
