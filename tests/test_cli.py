"""The `graphad` command line: IR fixtures for every pass, subcommands, bad input, the console script.

IR fixtures (tests/ir_fixtures/<dir>/<case>.gir) hold IR text with a `// RUN: graphad ...` line
(`%s` stands for the fixture's path) and optionally `// EXIT: N`; `<case>.expected` holds what
the command prints, stdout and stderr interleaved as a terminal shows them (`2>&1`), with the
fixture's path written `%s`. The comparison is exact. To accept new output deliberately:

    pytest tests/test_cli.py --update-fixtures        (or GRAPHAD_UPDATE_FIXTURES=1 pytest ...)

Every registered pass must have a directory tests/ir_fixtures/<pass>/ with a fixture that runs
it: adding a pass without fixtures fails test_every_pass_has_a_fixture.

The commands run in-process through `graphad.cli.main.main(argv, stdout=..., stderr=...)`; one
test runs the installed console script. Tests marked `tvm` lower, compile and run through TVM.
"""
from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphad as gd
from graphad.cli.main import main
from graphad.ir.interpret import interpret
from graphad.ir.parser import parse_graph, parse_module
from graphad.ir.printer import print_module
from graphad.passes.manager import PASSES, describe_passes, parse_pipeline

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "ir_fixtures"
FORECAST = ROOT / "examples" / "forecast.py"
FORECAST_ARGS = "f32[16,16] f32[16] f32[16]"
ANSI = re.compile(r"\x1b\[")


def run_cli(*argv, stdin: str | None = None) -> tuple[int, str, str]:
    """(status, stdout, stderr) of `graphad argv...` run in-process."""
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], stdout=out, stderr=err,
                  stdin=io.StringIO(stdin) if stdin is not None else None)
    return status, out.getvalue(), err.getvalue()


def assert_user_error(status: int, out: str, err: str, *fragments: str) -> None:
    """Exit 1, nothing on stdout, exactly one line on stderr containing the fragments, no traceback."""
    assert status == 1, (status, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    for f in fragments:
        assert f in err, (f, err)


# ---------------------------------------------------------------- IR fixtures


def _fixture_cases() -> list[Path]:
    return sorted(FIXTURES.rglob("*.gir"))


def _directives(path: Path) -> tuple[list[str], int]:
    """(argv after `graphad`, expected exit status) from the fixture's RUN and EXIT lines."""
    runs, status = [], 0
    for line in path.read_text().splitlines():
        m = re.match(r"\s*//\s*RUN:\s*(.*)$", line)
        if m:
            runs.append(m.group(1))
        m = re.match(r"\s*//\s*EXIT:\s*(\d+)\s*$", line)
        if m:
            status = int(m.group(1))
    assert len(runs) == 1, f"{path}: needs exactly one `// RUN: graphad ...` line, found {len(runs)}"
    argv = shlex.split(runs[0])
    assert argv and argv[0] == "graphad", f"{path}: the RUN line must start with `graphad`"
    return [str(path) if a == "%s" else a for a in argv[1:]], status


def _run_fixture(path: Path) -> tuple[int, str]:
    argv, _ = _directives(path)
    buf = io.StringIO()  # one buffer for both streams: the order a terminal shows
    status = main(argv, stdout=buf, stderr=buf)
    return status, buf.getvalue().replace(str(path), "%s")


def _pipeline_of(path: Path) -> list[str]:
    argv, _ = _directives(path)
    if "--passes" not in argv:
        return []
    return [info.name for info, _ in parse_pipeline(argv[argv.index("--passes") + 1])]


@pytest.fixture
def update_fixtures(request) -> bool:
    return bool(request.config.getoption("--update-fixtures", default=False)
                or os.environ.get("GRAPHAD_UPDATE_FIXTURES", "") not in ("", "0"))


@pytest.mark.parametrize("case", _fixture_cases(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_ir_fixture(case: Path, update_fixtures: bool):
    _, want_status = _directives(case)
    status, output = _run_fixture(case)
    assert status == want_status, f"{case.relative_to(FIXTURES)}: exit {status}, expected {want_status}:\n{output}"
    expected = case.with_suffix(".expected")
    if update_fixtures:
        expected.write_text(output)
        return
    assert expected.exists(), (f"{expected.relative_to(ROOT)} is missing; review the output and create it with "
                               f"`pytest tests/test_cli.py --update-fixtures`")
    want = expected.read_text()
    if output != want:
        import difflib
        diff = "\n".join(difflib.unified_diff(want.splitlines(), output.splitlines(), "expected", "actual",
                                              lineterm=""))
        pytest.fail(f"{case.relative_to(FIXTURES)}: the output differs from {expected.name} (if the change is "
                    f"intended, run `pytest tests/test_cli.py --update-fixtures`):\n{diff}")


def test_every_pass_has_a_fixture():
    """Each registered pass has tests/ir_fixtures/<pass>/ with a successful fixture running it."""
    missing = []
    for info in describe_passes():
        d = FIXTURES / info.name
        runs = [c for c in sorted(d.glob("*.gir")) if _directives(c)[1] == 0 and info.name in _pipeline_of(c)] \
            if d.is_dir() else []
        if not runs:
            missing.append(info.name)
    assert not missing, (f"passes without IR fixtures: {', '.join(missing)}. Add tests/ir_fixtures/<pass>/<case>.gir "
                         f"with a `// RUN: graphad opt %s --passes <pass>` line, then run "
                         f"`pytest tests/test_cli.py --update-fixtures` and review the .expected files")


def test_fixture_outputs_round_trip():
    """Plain opt output (no instruments) is canonical IR: it parses, verifies and prints the same."""
    checked = 0
    for case in _fixture_cases():
        argv, status = _directives(case)
        if status != 0 or any(a.startswith("--print") or a in ("--diff", "--time-passes", "--pass-statistics") for a in argv):
            continue
        code, output = _run_fixture(case)
        assert code == 0
        assert print_module(parse_module(output)) == output, case
        checked += 1
    assert checked >= 10


def _random_inputs(graph, rng):
    out = []
    for t in graph.in_types:
        if t.dtype.is_float:
            out.append(rng.standard_normal(t.shape).astype(t.dtype.np))
        elif t.dtype.is_int:
            out.append(rng.integers(-3, 4, t.shape).astype(t.dtype.np))
        else:
            out.append(rng.integers(0, 2, t.shape).astype(bool))
    return out


def test_fixture_outputs_compute_what_their_inputs_compute():
    """Passes keep the primal: the outputs of the result that correspond to the input graph's
    outputs (all of them for cse/dce/simplify, the leading ones for reverse-ad/forward-ad) agree
    on random inputs under the reference interpreter."""
    rng = np.random.default_rng(0)
    checked = 0
    for case in _fixture_cases():
        argv, status = _directives(case)
        if status != 0 or any(a.startswith("--print") or a in ("--diff", "--time-passes", "--pass-statistics") for a in argv):
            continue
        before = parse_module(case.read_text())
        after = parse_module(_run_fixture(case)[1])
        for g0, g1 in zip(before, after):
            n_in, n_out = len(g0.inputs), len(g0.outputs)
            if g1.in_types[:n_in] != g0.in_types or g1.out_types[:n_out] != g0.out_types:
                continue  # vmap changes the types
            xs = _random_inputs(g1, rng)
            want = interpret(g0, xs[:n_in])
            got = interpret(g1, xs)[:n_out]
            for a, b in zip(want, got):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=str(case))
            checked += 1
    assert checked >= 15


def test_no_stale_expected_files():
    stale = [p for p in FIXTURES.rglob("*.expected") if not p.with_suffix(".gir").exists()]
    assert not stale, f"expected-output files without a fixture: {stale}"


# ---------------------------------------------------------------- help, passes


@pytest.mark.parametrize("cmd", ["trace", "opt", "passes", "lower", "compile", "run", "cache"])
def test_every_subcommand_has_help_with_examples(cmd):
    status, out, err = run_cli(cmd, "--help")
    assert status == 0 and err == ""
    assert out.startswith(f"usage: graphad {cmd}")
    assert "examples:" in out and f"graphad {cmd}" in out.split("examples:")[1]


def test_main_help_and_version():
    status, out, _ = run_cli("--help")
    assert status == 0 and "examples:" in out and "Exit status" in out
    for cmd in ("trace", "opt", "passes", "lower", "compile", "run", "cache"):
        assert cmd in out
    status, out, _ = run_cli("--version")
    assert status == 0 and out.strip() == f"graphad {gd.__version__}"


def test_no_command_is_a_user_error():
    status, out, err = run_cli()
    assert status == 1 and "choose a command" in err


def test_passes_lists_every_registered_pass_with_its_summary():
    status, out, err = run_cli("passes")
    assert status == 0 and err == ""
    for name, info in PASSES.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(info.summary)}$", out, re.M), name
    # every declared option is listed with its type and default (or "required")
    for name, info in PASSES.items():
        for o in info.options:
            default = "required" if o.required_hint else f"default: {o.describe_default()}"
            assert re.search(rf"^\s+{re.escape(o.flag)}={re.escape(o.type)}\s+{re.escape(o.help)} "
                             rf"\({re.escape(default)}\)$", out, re.M), (name, o.name)
    assert re.search(r"^\s+rounds=int\s+.*\(default: 32\)$", out, re.M)
    assert re.search(r"^\s+structure=bool\s+.*\(default: true\)$", out, re.M)
    assert re.search(r"^\s+size=int\s+.*\(required\)$", out, re.M)
    assert "post-condition:" not in out
    status, out, _ = run_cli("passes", "-v")
    assert "post-condition:" in out and "wrt=int-list" in out


@pytest.mark.parametrize("cmd", ["trace", "opt", "lower", "compile"])
def test_pipeline_help_lists_passes_options_and_the_real_default_pipeline(cmd):
    """--help of the commands that run passes lists the passes with their typed options, and the
    default pipeline it names is DEFAULT_PIPELINE itself (it once said cse,dce)."""
    from graphad.passes.manager import DEFAULT_PIPELINE
    status, out, err = run_cli(cmd, "--help")
    assert status == 0 and err == ""
    assert "--pass-statistics" in out
    passes = out.split("passes (`graphad passes -v`")[1]
    for name in PASSES:
        assert re.search(rf"^\s+{re.escape(name)}\s", passes, re.M), name
    assert "rounds=int" in passes and "wrt=int-list" in passes
    if cmd in ("lower", "compile"):
        flat = " ".join(out.split())
        assert f"default: {DEFAULT_PIPELINE}" in flat and "default: cse,dce)" not in flat


# ---------------------------------------------------------------- trace


FORECAST_IR = """\
func @forecast(%weight: f32[16,16], %bias: f32[16], %x: f32[16]) -> (f32[16]) {
  %0 = reshape(%x) {shape=[16, 1]} : f32[16,1]  loc("{path}":{line})
  %1 = matmul(%weight, %0) : f32[16,1]  loc("{path}":{line})
  %2 = reshape(%1) {shape=[16]} : f32[16]  loc("{path}":{line})
  %3 = add(%2, %bias) : f32[16]  loc("{path}":{line})
  %4 = tanh(%3) : f32[16]  loc("{path}":{line})
  return %4
}
"""


def _loc_path(p: Path) -> str:
    rel = os.path.relpath(p)
    return p.as_posix() if rel.startswith("..") else rel


def test_trace_forecast():
    status, out, err = run_cli("trace", f"{FORECAST}:forecast", "--args", FORECAST_ARGS)
    assert status == 0 and err == ""
    line = 1 + FORECAST.read_text().splitlines().index("    return ops.dense(x, weight, bias).tanh()")
    assert out == FORECAST_IR.replace("{path}", _loc_path(FORECAST)).replace("{line}", str(line))


def _forecast_data(dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((16, 16)).astype(dtype), rng.standard_normal(16).astype(dtype),
            rng.standard_normal(16).astype(dtype))


def test_trace_jacrev_matches_the_api(tmp_path):
    out_file = tmp_path / "jac.gir"
    status, out, err = run_cli("trace", f"{FORECAST}:forecast", "--args", FORECAST_ARGS, "--transform", "jacrev:2",
                               "--passes", "cse,dce", "-o", out_file)
    assert status == 0 and out == ""
    assert f"wrote @jacrev_forecast to {out_file}" in err
    g = parse_graph(out_file.read_text())
    assert g.name == "jacrev_forecast" and [str(t) for t in g.out_types] == ["f32[16,16]"]
    assert g.input_names == ["weight", "bias", "x"]
    assert all(n.loc is None or n.loc.file.endswith("forecast.py") for n in g.nodes)
    w, b, x = _forecast_data()
    from forecast import forecast
    want = gd.jacrev(forecast, 2)(w, b, x).asnumpy()
    np.testing.assert_allclose(interpret(g, [w, b, x])[0], want, rtol=1e-5, atol=1e-6)
    # closed form: diag(1 - tanh^2) @ W
    y = np.tanh(w @ x + b)
    np.testing.assert_allclose(want, (1 - y ** 2)[:, None] * w, rtol=1e-5, atol=1e-6)


def test_trace_module_colon_function_and_dotted_attr(tmp_path):
    # tests/conftest.py puts examples/ on sys.path
    status, out, err = run_cli("trace", "forecast:forecast", "--args", FORECAST_ARGS)
    assert status == 0 and out.startswith("func @forecast(%weight: f32[16,16]")
    (tmp_path / "mod_ns.py").write_text(textwrap.dedent("""\
        from graphad import ops
        class Funcs:
            @staticmethod
            def square(x):
                return x * x
    """))
    status, out, err = run_cli("trace", f"{tmp_path / 'mod_ns.py'}:Funcs.square", "--args", "f64[3]")
    assert status == 0, err
    assert "mul(%x, %x) : f64[3]" in out


def test_transform_chain_is_applied_inside_out():
    src = f"{FORECAST}:forecast"
    # vmap(jacrev(f, 2)) over a batch of x: per-example Jacobians (5, 16, 16)
    status, out, err = run_cli("trace", src, "--args", "f32[16,16] f32[16] f32[5,16]",
                               "--transform", "jacrev:2,vmap:none|none|0")
    assert status == 0, err
    g = parse_graph(out)
    assert g.name == "vmap_jacrev_forecast" and [str(t) for t in g.out_types] == ["f32[5,16,16]"]
    # the same chain as two flags
    status, out2, _ = run_cli("trace", src, "--args", "f32[16,16] f32[16] f32[5,16]",
                              "--transform", "jacrev:2", "--transform", "vmap:none|none|0")
    assert status == 0 and out2 == out
    # jacfwd(jacrev(f)) == hessian: the same output type as `hessian`
    status, out3, _ = run_cli("trace", src, "--args", FORECAST_ARGS, "--transform", "jacrev:2,jacfwd:2")
    status4, out4, _ = run_cli("trace", src, "--args", FORECAST_ARGS, "--transform", "hessian:2")
    assert status == status4 == 0
    assert parse_graph(out3).out_types == parse_graph(out4).out_types
    assert [str(t) for t in parse_graph(out4).out_types] == ["f32[16,16,16]"]


def test_trace_grad_of_several_positions_and_value_and_grad(tmp_path):
    f = tmp_path / "loss.py"
    f.write_text("def loss(w, x):\n    return ((x @ w) ** 2).sum()\n")
    status, out, err = run_cli("trace", f"{f}:loss", "--args", "f64[3,2] f64[4,3]", "--transform", "grad:0|1")
    assert status == 0, err
    g = parse_graph(out)
    assert [str(t) for t in g.out_types] == ["f64[3,2]", "f64[4,3]"]
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    gw, gx = interpret(g, [w, x])
    np.testing.assert_allclose(gw, 2 * x.T @ (x @ w))
    np.testing.assert_allclose(gx, 2 * (x @ w) @ w.T)
    status, out, err = run_cli("trace", f"{f}:loss", "--args", "f64[3,2] f64[4,3]", "--transform", "value_and_grad")
    assert status == 0 and [str(t) for t in parse_graph(out).out_types] == ["f64[]", "f64[3,2]"]


def test_trace_cell_and_captured_parameters(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(textwrap.dedent("""\
        import numpy as np
        import graphad as ms
        from graphad import nn

        class Net(nn.Cell):
            def __init__(self):
                super().__init__()
                self.z = ms.Parameter(ms.Tensor(np.array([1.0], np.float32)), name='z')

            def construct(self, x, y):
                return x * x * y * self.z
    """))
    status, out, err = run_cli("trace", f"{f}:Net", "--args", "f32[1] f32[1]")
    assert status == 0, err
    assert "note: Net uses 1 captured tensor(s)" in err
    g = parse_graph(out)
    assert g.input_names == ["x", "y", "z"]


def test_trace_and_opt_through_stdin():
    status, ir, _ = run_cli("trace", f"{FORECAST}:forecast", "--args", FORECAST_ARGS)
    status, out, err = run_cli("opt", "-", "--passes", "reverse-ad:wrt=2,cse,dce", stdin=ir)
    assert status == 0, err
    assert parse_graph(out).name == "forecast_vjp"


# ---------------------------------------------------------------- instruments


def test_time_passes_table():
    status, out, err = run_cli("opt", FIXTURES / "reverse-ad" / "forecast.gir", "--passes",
                               "reverse-ad,cse,dce,cse", "--time-passes")
    assert status == 0
    assert "Pass execution timing report" in err
    for name in ("reverse-ad", "cse", "dce", "Total"):
        assert re.search(rf"^\s+\d+\.\d{{3}} ms \(\s*\d+\.\d%\)\s+{re.escape(name)}$", err, re.M), name
    assert parse_graph(out).name == "forecast_vjp"


def test_dot_dumps_and_graphviz_note(tmp_path, monkeypatch):
    import graphad.cli.main as cli_main
    monkeypatch.setattr(cli_main.shutil, "which", lambda name: None)
    d = tmp_path / "dots"
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "cse,dce", "--dot", d)
    assert status == 0
    assert sorted(p.name for p in d.iterdir()) == ["00_input.dot", "01_after_cse.dot", "02_after_dce.dot"]
    assert (d / "01_after_cse.dot").read_text().startswith('digraph "f" {')
    assert "Graphviz is not installed" in err and err.count("\n") == 1


@pytest.mark.skipif(not __import__("shutil").which("dot"), reason="Graphviz `dot` is not installed")
def test_dot_renders_svg_with_graphviz(tmp_path):
    d = tmp_path / "dots"
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "cse", "--dot", d)
    assert status == 0 and (d / "01_after_cse.svg").exists()


def test_verify_each_names_the_pass_that_breaks_the_graph(monkeypatch):
    from graphad.ir.core import Graph
    from graphad.passes.manager import PassInfo

    def broken(graph):  # drops the nodes but keeps the outputs: an undefined value
        return Graph(graph.name, graph.inputs, [], graph.outputs, graph.input_names)

    monkeypatch.setitem(PASSES, "break-it", PassInfo("break-it", "a broken pass for the test", broken))
    status, out, err = run_cli("opt", FIXTURES / "dce" / "basic.gir", "--passes", "cse,break-it", "--verify-each")
    assert status == 2 and out == ""
    assert "internal error" in err and "after pass break-it" in err and err.count("\n") == 1


def test_no_colour_when_not_a_tty_and_colour_when_forced():
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "cse", "--print-ir-after-all")
    assert status == 0 and not ANSI.search(out + err)
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "cse", "--print-ir-after-all",
                               "--color", "always")
    assert ANSI.search(err)
    status, out, err = run_cli("--color", "always", "opt", "missing.gir")
    assert status == 1 and ANSI.search(err)


# ---------------------------------------------------------------- bad input: one line, exit 1


def test_malformed_ir_reports_line_and_column():
    path = FIXTURES / "errors" / "syntax.gir"
    status, out, err = run_cli("opt", path)
    assert_user_error(status, out, err, f"{path}:5:16: error: expected ')'")


def test_malformed_ir_on_stdin():
    status, out, err = run_cli("opt", "-", stdin="func @f(%x: f32[3]) -> (f32[3]) {\n  return %y\n}\n")
    assert_user_error(status, out, err, "<stdin>:2:10: error:")


@pytest.mark.parametrize("pipeline,fragment", [
    ("cse,frobnicate", "unknown pass 'frobnicate'"),
    ("reverse_ad", "unknown pass 'reverse_ad' (did you mean reverse-ad?)"),
    ("vmap", "vmap needs the batch size"),
    ("vmap:size=2|3", "option size takes one integer"),
    ("dce:x=1", "pass dce has no option 'x'; it takes no options"),
    ("reverse-ad:wrt", "pass option 'wrt' must be key=value"),
])
def test_bad_pipeline(pipeline, fragment):
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", pipeline)
    assert_user_error(status, out, err, fragment)


@pytest.mark.parametrize("spec,fragment", [
    ("f32[16,16] f33[16] f32[16]", "bad type 'f33[16]': unknown dtype 'f33'"),
    ("f32[16,16] f32 f32[16]", "bad type 'f32': missing the shape in brackets"),
    ("f32[16,a] f32[16] f32[16]", "bad type 'f32[16,a]': dimension 'a'"),
    ("f32[16,16] f32[16] f32[16", "bad type 'f32[16'"),
    ("f32[16,16] f32[16]", "--args gives 2 type(s) but forecast(weight, bias, x) takes 3"),
    ("f32[16,16] f32[17] f32[16]", "dense(f32[16], f32[16,16], f32[17]): add: shapes (16,) and (17,)"),
])
def test_bad_args_spec(spec, fragment):
    status, out, err = run_cli("trace", f"{FORECAST}:forecast", "--args", spec)
    assert_user_error(status, out, err, fragment)


@pytest.mark.parametrize("chain,fragment", [
    ("jacrevv:2", "unknown transformation 'jacrevv' (did you mean jacrev?)"),
    ("jacrev:x", "bad position 'x'"),
    ("jacrev:", "empty argument"),
    ("vmap:zero", "bad axis 'zero'"),
    ("jacrev:7", "grad_position 7 is out of range"),
])
def test_bad_transform(chain, fragment):
    status, out, err = run_cli("trace", f"{FORECAST}:forecast", "--args", FORECAST_ARGS, "--transform", chain)
    assert_user_error(status, out, err, fragment)


def test_missing_files_and_targets(tmp_path):
    cases = [
        (("opt", tmp_path / "nope.gir"), f"no such file: {tmp_path / 'nope.gir'}"),
        (("opt", tmp_path), "is a directory"),
        (("trace", f"{tmp_path / 'nope.py'}:f", "--args", "f32[2]"), "no such file"),
        (("trace", f"{FORECAST}:nope", "--args", "f32[2]"), "has no attribute 'nope'; it defines forecast"),
        (("trace", "no_such_module_xyz:f", "--args", "f32[2]"), "no such file or module: 'no_such_module_xyz'"),
        (("trace", str(FORECAST), "--args", "f32[2]"), "name the function as FILE.py:FUNC"),
        (("lower", tmp_path / "nope.gir"), "no such file"),
        (("compile", tmp_path / "nope.gir", "-o", tmp_path / "a.gad"), "no such file"),
        (("run", tmp_path / "nope.gad"), "no such file"),
        (("opt", FIXTURES / "cse" / "basic.gir", "-o", tmp_path / "no" / "dir" / "out.gir"), "cannot write"),
    ]
    for argv, fragment in cases:
        status, out, err = run_cli(*argv)
        assert_user_error(status, out, err, fragment)


def test_usage_errors_exit_1():
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--no-such-flag")
    assert_user_error(status, out, err, "unrecognized arguments: --no-such-flag", "graphad opt --help")
    status, out, err = run_cli("frobnicate")
    assert_user_error(status, out, err, "invalid choice: 'frobnicate'")
    status, out, err = run_cli("trace")
    assert_user_error(status, out, err, "the following arguments are required")


def test_ir_source_rejects_function_flags():
    status, out, err = run_cli("lower", FIXTURES / "cse" / "basic.gir", "--args", "f32[2]")
    assert_user_error(status, out, err, "--args is for FILE.py:FUNC sources")
    status, out, err = run_cli("lower", FIXTURES / "instruments" / "multi_func.gir")
    assert_user_error(status, out, err, "holds 2 funcs (@a, @b); choose one with --func NAME")


def test_errors_in_user_code_name_the_user_line(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("def f(x):\n    y = x + 1\n    raise ValueError('no good')\n")
    status, out, err = run_cli("trace", f"{f}:f", "--args", "f32[2]")
    assert_user_error(status, out, err, f"{_loc_path(f)}:3: tracing f failed: ValueError: no good")
    g = tmp_path / "syn.py"
    g.write_text("def f(x):\n    return x +\n")
    status, out, err = run_cli("trace", f"{g}:f", "--args", "f32[2]")
    assert_user_error(status, out, err, f"{_loc_path(g)}:2:", "SyntaxError")
    h = tmp_path / "branch.py"
    h.write_text("def f(x):\n    if x.sum() > 0:\n        return x\n    return -x\n")
    status, out, err = run_cli("trace", f"{h}:f", "--args", "f32[2]")
    assert_user_error(status, out, err, "bool() of a traced value")


def test_internal_errors_exit_2_and_traceback_on_request(monkeypatch):
    from graphad.passes.manager import PassInfo

    def crash(graph):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(PASSES, "crash", PassInfo("crash", "crashes", crash))
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "crash")
    assert status == 2 and err.count("\n") == 1
    assert "internal error: RuntimeError: boom second line" in err and "Traceback" not in err
    status, out, err = run_cli("opt", FIXTURES / "cse" / "basic.gir", "--passes", "crash", "--traceback")
    assert status == 2 and "Traceback (most recent call last)" in err


# ---------------------------------------------------------------- the installed console script


def test_console_script_subprocess(tmp_path):
    exe = Path(sys.executable).parent / "graphad"
    if not exe.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable} (pip install -e .)")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: graphad" in r.stdout and "\x1b[" not in r.stdout
    r = subprocess.run([str(exe), "opt", str(FIXTURES / "errors" / "syntax.gir")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"{FIXTURES / 'errors' / 'syntax.gir'}:5:16: error: expected ')' to close the " \
                               f"operand list, got ':'"


# ---------------------------------------------------------------- TVM: lower, compile, run, cache


@pytest.fixture
def tvm_runtime():
    try:
        import graphad.runtime.executable  # noqa: F401
        import graphad.runtime.aot  # noqa: F401
        import graphad.lowering  # noqa: F401
    except ImportError as e:  # pragma: no cover - the runtime is part of graphad
        pytest.skip(f"the TVM runtime of graphad is not importable yet ({e})")


@pytest.fixture
def forecast_gir(tmp_path) -> Path:
    p = tmp_path / "forecast.gir"
    status, _, err = run_cli("trace", f"{FORECAST}:forecast", "--args", FORECAST_ARGS, "-o", p)
    assert status == 0, err
    return p


@pytest.mark.tvm
def test_lower_relax_and_tir(tvm_runtime, forecast_gir):
    status, out, err = run_cli("lower", forecast_gir, "--target", "llvm", "--emit", "relax")
    assert status == 0, err
    assert out.startswith("# graphad lower: @forecast(f32[16,16], f32[16], f32[16]) -> (f32[16])")
    assert "@R.function" in out and "def main(weight: R.Tensor((16, 16), dtype=\"float32\")" in out
    status, out, err = run_cli("lower", forecast_gir, "--emit", "tir")
    assert status == 0, err
    assert "@T.prim_func" in out and "# emit tir: legalized, fused and scheduled" in out
    status, out2, err = run_cli("lower", f"{FORECAST}:forecast", "--args", FORECAST_ARGS, "--emit", "tir",
                                "--no-schedule")
    assert status == 0 and "unscheduled" in out2 and "T.vectorized" not in out2
    status, out, err = run_cli("lower", forecast_gir, "--target", "tpu")
    assert_user_error(status, out, err, "unknown target 'tpu'")


def _tir_body(cli_out: str) -> str:
    """The module `graphad lower --emit tir` printed, without graphad's header lines (the script
    itself starts with TVM's `# from tvm.script import ...` comments)."""
    lines = cli_out.split("\n")
    k = next(i for i, ln in enumerate(lines) if ln.startswith("# from tvm.script"))
    assert all(ln.startswith("# ") for ln in lines[:k]), lines[:k]
    return "\n".join(lines[k:]).rstrip("\n")


@pytest.mark.tvm
@pytest.mark.parametrize("schedule", [True, False])
def test_lower_emit_tir_is_the_module_the_runtime_compiles(tvm_runtime, forecast_gir, tmp_path, monkeypatch,
                                                           schedule):
    """One pipeline: the TIR `graphad lower --emit tir` prints is the module the runtime's build step
    hands to codegen when `graphad compile` (through the runtime's cache) compiles the same graph."""
    from graphad.lowering import pipeline
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    cache_clear(disk=False)
    seen = []
    real = pipeline._cpu_build

    def spy(mod, target, *rest):  # rest: exec mode and kernel store, with the kernel cache on
        seen.append(mod.script().rstrip("\n"))
        return real(mod, target, *rest)
    monkeypatch.setattr(pipeline, "_cpu_build", spy)
    flags = [] if schedule else ["--no-schedule"]
    status, out, err = run_cli("lower", forecast_gir, "--target", "llvm", "--emit", "tir", *flags)
    assert status == 0, err
    assert not seen  # lowering prints the module, it builds nothing
    if schedule:
        status, _, err = run_cli("compile", forecast_gir, "--target", "llvm", "-o", tmp_path / "f.gad")
        assert status == 0, err
    else:  # the runtime compiles unscheduled when the scheduled module fails codegen
        from graphad.lowering import lower_graph_info
        graph = parse_graph((forecast_gir).read_text())
        pipeline.build(lower_graph_info(graph).module, "llvm", schedule=False)
    assert seen and seen[0] == _tir_body(out)


@pytest.mark.tvm
def test_lower_emit_tir_for_cuda_is_the_module_the_build_compiles(tvm_runtime, forecast_gir, monkeypatch):
    """The CUDA path too: `graphad lower --target cuda --emit tir` shows what `pipeline.build` (the
    runtime's build step) compiles for CUDA; it once showed a diverging copy (with FoldConstant).
    Capturing the module before codegen needs no GPU."""
    from graphad.lowering import lower_graph_info, pipeline
    from graphad.passes.manager import run_default_pipeline
    seen = []

    def spy(mod, target):
        seen.append(mod.script().rstrip("\n"))
        return "built"
    monkeypatch.setattr(pipeline, "_cuda_build", spy)
    status, out, err = run_cli("lower", forecast_gir, "--target", "cuda", "--emit", "tir")
    assert status == 0, err
    graph = run_default_pipeline(parse_graph(forecast_gir.read_text()))
    ex, report = pipeline.build(lower_graph_info(graph).module, "cuda")
    assert ex == "built" and seen == [_tir_body(out)]


@pytest.mark.tvm
def test_lower_cuda_tir_says_what_the_index_fence_is(tmp_path):
    """A CUDA module holding index fences (lowering/index_fence.py) is headed by a line saying what
    `graphad_index_fence(...)` means; one without, as a plain pad's, is not."""
    import graphad as gd
    from graphad import ops

    def f(v):
        r = ops.reshape(ops.broadcast_to(ops.reshape(v, (3, 1)), (3, 2)), (6,))
        return ops.cumsum(ops.pad(ops.concatenate([r[4:], r[:4]], 0), ((1, 2),)), 0)
    g = gd.make_graph(gd.vmap(f))(gd.Tensor(np.ones((2, 3), np.float32)))
    fenced, plain = tmp_path / "rot.gir", tmp_path / "pad.gir"
    fenced.write_text(str(getattr(g, "graph", g)))
    plain.write_text(textwrap.dedent("""\
        func @p(%x0: f32[2,6]) -> (f32[2,9]) {
          %0 = pad(%x0) {hi=[0, 2], interior=[0, 0], lo=[0, 1], value=0.0} : f32[2,9]
          return %0
        }
        """))
    note = "graphad_index_fence(e) is e"
    status, out, err = run_cli("lower", str(fenced), "--target", "cuda", "--emit", "tir")
    assert status == 0, err
    header = "\n".join(line for line in out.splitlines() if line.startswith("#   "))
    assert note in header and "T.graphad_index_fence(" in out
    status, out, err = run_cli("lower", str(plain), "--target", "cuda", "--emit", "tir")
    assert status == 0, err
    assert note not in out and "graphad_index_fence" not in out


@pytest.mark.tvm
def test_compile_and_run_artifacts(tvm_runtime, forecast_gir, tmp_path, monkeypatch):
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    cache_clear(disk=False)  # graphs compiled by earlier tests must not be served from memory
    w, b, x = _forecast_data()
    names = []
    for name, a in (("w", w), ("b", b), ("x", x)):
        np.save(tmp_path / f"{name}.npy", a)
        names.append(tmp_path / f"{name}.npy")
    # from IR
    art = tmp_path / "forecast.gad"
    status, out, err = run_cli("compile", forecast_gir, "--target", "llvm", "-o", art)
    assert status == 0, err
    assert out.startswith("compiled @forecast(f32[16,16], f32[16], f32[16]) -> (f32[16])") and art.exists()
    status, out, err = run_cli("run", art, "--inputs", *names, "--out", tmp_path / "y.npz")
    assert status == 0, err
    assert "out0: f32[16]" in out
    with np.load(tmp_path / "y.npz") as z:
        np.testing.assert_allclose(z["out0"], np.tanh(w @ x + b), rtol=1e-5, atol=1e-6)
    # from FILE:FUNC with a transform: the Jacobian
    jac = tmp_path / "jac.gad"
    status, out, err = run_cli("compile", f"{FORECAST}:forecast", "--args", FORECAST_ARGS, "--transform",
                               "jacrev:2", "-o", jac)
    assert status == 0, err
    status, out, err = run_cli("run", jac, "--inputs", *names, "--out", tmp_path / "j.npz")
    assert status == 0, err
    with np.load(tmp_path / "j.npz") as z:
        y = np.tanh(w @ x + b)
        np.testing.assert_allclose(z["out0"], (1 - y ** 2)[:, None] * w, rtol=1e-4, atol=1e-5)
    # bad inputs: wrong count, wrong dtype, not an artifact
    status, out, err = run_cli("run", jac, "--inputs", names[0])
    assert_user_error(status, out, err, "@jacrev_forecast takes 3 input(s) (f32[16,16] (weight), f32[16] (bias), "
                                        "f32[16] (x)); --inputs gives 1")
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    status, out, err = run_cli("run", jac, "--inputs", names[0], names[1], tmp_path / "x64.npy")
    assert_user_error(status, out, err, "f64[16]", "f32[16]")
    status, out, err = run_cli("run", forecast_gir, "--inputs", *names)
    assert_user_error(status, out, err, "not a graphad artifact")
    (tmp_path / "junk.npy").write_text("junk")
    status, out, err = run_cli("run", jac, "--inputs", names[0], names[1], tmp_path / "junk.npy")
    assert_user_error(status, out, err, "junk.npy: not a NumPy .npy/.npz file")
    # the disk cache now holds both graphs
    status, out, err = run_cli("cache", "stats")
    assert status == 0 and f"directory:     {tmp_path / 'cache'}" in out and "entries:       2" in out
    status, out, err = run_cli("cache", "ls")
    assert status == 0 and "@jacrev_forecast(f32[16,16], f32[16], f32[16]) -> (f32[16,16])" in out
    status, out, err = run_cli("cache", "clear")
    assert status == 0 and out.startswith("removed 2 entries")
    status, out, err = run_cli("cache", "ls")
    assert status == 0 and out.startswith("no entries")


@pytest.mark.tvm
def test_artifact_runs_in_a_fresh_process(tvm_runtime, forecast_gir, tmp_path):
    exe = Path(sys.executable).parent / "graphad"
    if not exe.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable} (pip install -e .)")
    art = tmp_path / "f.gad"
    status, out, err = run_cli("compile", forecast_gir, "-o", art)
    assert status == 0, err
    w, b, x = _forecast_data()
    for name, a in (("w", w), ("b", b), ("x", x)):
        np.save(tmp_path / f"{name}.npy", a)
    r = subprocess.run([str(exe), "run", str(art), "--inputs", *(str(tmp_path / f"{n}.npy") for n in "wbx"),
                        "--out", str(tmp_path / "y.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "y.npz") as z:
        np.testing.assert_allclose(z["out0"], np.tanh(w @ x + b), rtol=1e-5, atol=1e-6)


def test_run_an_artifact_with_structured_arguments(tvm_runtime, tmp_path, monkeypatch):
    """`graphad run` of an artifact whose argument is a dict: one .npy per leaf, a dict's values by
    sorted key, as the artifact lists them (it passed the flat leaves as arguments and failed in
    any order); a wrong order names the leaf; --out naming a directory is refused (np.savez wrote a
    hidden '..npz' there). A helper's trial."""
    import graphad as gd
    from graphad import ops
    from graphad.runtime.cache import cache_clear
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    cache_clear(disk=False)
    S = gd.TensorSpec

    def f(params, x):
        return ops.tanh(ops.matmul(params["w"], x) + params["b"])
    art = tmp_path / "tree.gdx"
    gd.jit(f, backend="tvm").lower({"w": S((3, 4)), "b": S((3,))}, S((4,))).compile().save(str(art))
    rng = np.random.default_rng(0)
    w, b, x = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (3,), (4,)))
    for name, a in (("w", w), ("b", b), ("x", x)):
        np.save(tmp_path / f"{name}.npy", a)
    status, out, err = run_cli("run", art, "--inputs", tmp_path / "b.npy", tmp_path / "w.npy", tmp_path / "x.npy",
                               "--out", tmp_path / "y.npz")
    assert status == 0, err
    with np.load(tmp_path / "y.npz") as z:
        np.testing.assert_allclose(z["out0"], np.tanh(w @ x + b), rtol=1e-5, atol=1e-6)
    status, out, err = run_cli("run", art, "--inputs", tmp_path / "w.npy", tmp_path / "b.npy", tmp_path / "x.npy")
    assert_user_error(status, out, err, "input 0 is f32[3] (params['b']), but --inputs gives f32[3,4]")
    status, out, err = run_cli("run", art, "--inputs", tmp_path / "b.npy", tmp_path / "w.npy", tmp_path / "x.npy",
                               "--out", tmp_path)
    assert_user_error(status, out, err, "is a directory")


def test_lower_a_complex_graph_as_compile_builds_it(tvm_runtime, tmp_path):
    """`graphad lower` of a graph with complex values stopped with an internal error (exit 2,
    "unknown dtype complex64") where `graphad compile` builds it as real/imaginary pairs; the
    short type names c64/c128 were refused in --args (a cli trial)."""
    src = tmp_path / "cx.py"
    src.write_text("from graphad import ops\n\ndef f(z):\n    return ops.exp(z) * z\n")
    for spelling in ("c64[3]", "complex64[3]"):
        status, out, err = run_cli("lower", f"{src}:f", "--args", spelling, "--emit", "tir")
        assert status == 0, err
        assert "# complex values as real/imaginary pairs" in out and "complex64" not in out.split("\n", 3)[3]


def test_python_dash_m_graphad_cli_runs_the_command():
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "graphad.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("graphad "), res


def test_a_package_in_the_working_directory_is_imported(tmp_path, monkeypatch):
    """`graphad trace pkg:f` with a package directory pkg in the working directory said "pkg is a
    directory; name a Python file", though `import pkg` works (a cli trial)."""
    (tmp_path / "clipkg").mkdir()
    (tmp_path / "clipkg" / "__init__.py").write_text("from graphad import ops\n\ndef f(x):\n    return ops.sin(x)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    status, out, err = run_cli("trace", "clipkg:f", "--args", "f32[3]")
    assert status == 0, err
    assert "sin(%x)" in out


def test_func_with_a_python_source_is_refused(tmp_path):
    """--func (which func of an IR file) was silently ignored for FILE.py:FUNC (a cli trial)."""
    src = tmp_path / "two.py"
    src.write_text("from graphad import ops\n\ndef f(x):\n    return ops.sin(x)\n\ndef g(x):\n    return x\n")
    assert_user_error(*run_cli("lower", f"{src}:f", "--args", "f32[3]", "--func", "g"), "--func is for IR files")


def test_run_takes_bfloat16_inputs_saved_as_npy(tvm_runtime, tmp_path):
    """np.save of a bfloat16 array reads back as 2-byte void (`|V2`): `graphad run` refused every
    bf16 input, its advice "save the array as bfloat16" impossible to follow (a cli trial)."""
    import ml_dtypes
    ir = tmp_path / "bf.gir"
    ir.write_text("func @f(%x: bf16[2]) -> (bf16[2]) {\n  %0 = add(%x, %x) : bf16[2]\n  return %0\n}\n")
    np.save(tmp_path / "x.npy", np.array([1.5, -2.0], ml_dtypes.bfloat16))
    assert run_cli("compile", ir, "-o", tmp_path / "bf.gad")[0] == 0
    status, out, err = run_cli("run", tmp_path / "bf.gad", "--inputs", tmp_path / "x.npy")
    assert status == 0, err
    assert "[3 -4]" in out
    # --out writes the bfloat16 output the same way (as run --help says): its bits, which read
    # back as bfloat16 and go in again as an input
    assert run_cli("run", tmp_path / "bf.gad", "--inputs", tmp_path / "x.npy", "--out", tmp_path / "o.npz")[0] == 0
    got = np.load(tmp_path / "o.npz")["out0"]
    assert got.dtype == np.dtype("V2")
    np.testing.assert_array_equal(got.view(ml_dtypes.bfloat16).astype(np.float32), [3.0, -4.0])
    status, out, err = run_cli("run", tmp_path / "bf.gad", "--inputs", tmp_path / "o.npz")
    assert status == 0 and "[6 -8]" in out, err
