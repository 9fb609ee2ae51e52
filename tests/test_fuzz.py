"""The differential fuzzer's CI profile, the replay of its fixtures, and the poisoned-memory mode.

* `test_fuzz_ci_profile`: a reproducible (derandomized) hypothesis run over random programs
  (tests/fuzzing/), each checked compiled vs interpreted, against finite differences, forward vs
  reverse mode and vmap vs a loop. A new disagreement is shrunk, saved under
  tests/fuzz_fixtures/new/ and fails the test; filed defects (tests/fuzz_fixtures/pending/) are
  reported, not failed. `make fuzz` runs the long profile.
* `test_replay_fixture`: every fixed fixture (top level and new/) must pass every check again;
  pending ones are skipped with the defect they show.
* poison mode (graphad/lowering/poison.py): a kernel that leaves part of its output or workspace
  unwritten returns NaN / the 0xA5 sentinel there on every call; the switch is in the cache key.
* the budgets: a compile that hangs and a process that crashes are failures, not hangs.
"""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from fuzzing import check as fcheck
from fuzzing import fixtures
from fuzzing.gen import programs
from graphad.prims._util import is_float_array

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fuzzer runs compiled code in forked children")


# ---------------------------------------------------------------- the CI profile

def test_fuzz_ci_profile():
    """Random programs over every primitive: graphad agrees with its oracles (CI profile)."""
    from fuzzing.runner import CI_EXAMPLES, ci_session, summary
    t0 = time.perf_counter()
    session, found = ci_session()
    print(f"\n{summary(session)}\n  ({time.perf_counter() - t0:.1f} s; {session.capped} of {CI_EXAMPLES} "
          f"programs left unchecked by the time cap)")
    if found is not None:
        p, ds = found
        where = session.saved[-1][0] if session.saved else "(could not save)"
        pytest.fail(f"the fuzzer found a new disagreement; minimal program saved as {where}.*\n"
                    f"Fix it (then move the fixture to tests/fuzz_fixtures/) or file it (move it to "
                    f"tests/fuzz_fixtures/pending/ with a note).\n{p.describe()}\n" +
                    "\n".join(f"  {d}" for d in ds))
    assert session.programs >= 10, "the CI profile checked almost nothing (time cap hit early?)"


def test_half_precision_programs():
    """The "half" mode's programs (float16 and bfloat16 values beside float32, ints, bools)
    compiled and derived agree with the oracles, and their fixtures round-trip (an .npz keeps
    bfloat16 as raw records). 500 such programs (`modes=("half",)`, two seeds) showed no
    disagreement when the mode was added; this keeps a few in every run."""
    from hypothesis import HealthCheck, Phase, given, settings
    seen = set()

    @settings(max_examples=6, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs(max_steps=4, modes=("half",)))
    def check(p):
        seen.update(v.type.dtype.name for v in p.graph.inputs)
        seen.update(o.type.dtype.name for n in p.graph.nodes for o in n.outputs)
        found = fcheck.check_program(p)
        assert not found, f"{p.describe()}\n" + "\n".join(f"  {d}" for d in found)

    check()
    assert seen & {"float16", "bfloat16"}, seen


def test_generator_covers_every_primitive():
    """Every registered primitive can be generated (add a move for new ones in tests/fuzzing/gen.py)."""
    from hypothesis import HealthCheck, Phase, given, settings

    from graphad.prims import PRIMITIVES

    class Seen(Exception):
        pass

    missing = []
    for name in sorted(PRIMITIVES):
        @settings(max_examples=40, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(programs(max_steps=2, focus=name))
        def find(p):
            if any(n.prim.name == name for n in p.graph.nodes):
                raise Seen

        try:
            find()
            missing.append(name)
        except Seen:
            pass
    assert not missing, f"the fuzzer never generates {missing}: give them a move in tests/fuzzing/gen.py"


# ---------------------------------------------------------------- fixtures

_FIXED = fixtures.stems(fixtures.ROOT) + fixtures.stems(fixtures.NEW)
_PENDING = fixtures.stems(fixtures.PENDING)
_DEVIATIONS = fixtures.stems(fixtures.DEVIATIONS)


def _id(stem):
    return os.path.relpath(stem, fixtures.ROOT)


@pytest.mark.parametrize("stem", _FIXED, ids=[_id(s) for s in _FIXED])
def test_replay_fixture(stem):
    """A saved fuzzer failure, parsed back from its IR text: now every check agrees."""
    prog, meta = fixtures.load(stem)
    old = fixtures.set_lowering(meta.get("lowering", {}))  # as the fuzz job that found it lowered
    try:
        ds = fcheck.check_program(prog)
    finally:
        fixtures.set_lowering(old)
    assert not ds, f"{_id(stem)} ({meta['disagreements'][0]['cause']}) still disagrees:\n{prog.describe()}\n" + \
        "\n".join(f"  {d}" for d in ds)


@pytest.mark.parametrize("stem", _PENDING, ids=[_id(s) for s in _PENDING])
def test_pending_fixture(stem):
    """A filed, unfixed defect: skipped with its description (GRAPHAD_FUZZ_RECHECK_PENDING=1 reruns it
    and says whether it is fixed)."""
    prog, meta = fixtures.load(stem)
    d = meta["disagreements"][0]
    what = f"pending defect [{d['check']}] {d['cause']}: {d['detail'][:300]}" + (f" -- {meta['note']}" if meta.get(
        "note") else "")
    if os.environ.get("GRAPHAD_FUZZ_RECHECK_PENDING", "") not in ("", "0"):
        if not fcheck.check_program(prog):
            pytest.fail(f"{_id(stem)} passes now: move it to tests/fuzz_fixtures/ ({what})")
    pytest.skip(what)


@pytest.mark.parametrize("stem", _DEVIATIONS, ids=[_id(s) for s in _DEVIATIONS])
def test_deviation_fixture(stem):
    """A documented deviation from NumPy still happens exactly as documented: every disagreement of
    its program is the deviation itself (nothing else differs), the compiled output is the documented
    value, and JAX (when installed) computes the same value. If the deviation disappears, the docs
    that describe it are false: the test fails and says so."""
    import subprocess
    import sys
    from fuzzing.known import load_known
    prog, meta = fixtures.load(stem)
    name = os.path.basename(stem)
    ds = fcheck.check_program(prog)
    assert ds, f"{_id(stem)} no longer deviates from NumPy: update docs/user_guide.md and move it to the top level"
    mine = [k for k in load_known() if k.name == name]
    assert len(mine) == 1 and mine[0].deviation
    other = [d for d in ds if not mine[0].matches(prog, d)]
    assert not other, f"{_id(stem)} differs in more than its documented deviation: {other}"
    spec = meta["expected_compiled"]
    if isinstance(spec, str):
        spec = {"output": 0, "index": 0, "value": spec}
    want = float(spec["value"])
    got = float(np.asarray(gd_compiled(prog)[spec["output"]]).reshape(-1)[spec["index"]])
    assert got == want and np.signbit(got) == np.signbit(want), (got, spec)
    from fuzzing.jax_oracle import jax_available
    if jax_available():
        here = os.path.dirname(os.path.abspath(__file__))
        code = ("import sys, numpy as np; from fuzzing import fixtures; from fuzzing.jax_oracle import jax_eval; "
                "p, _ = fixtures.load(sys.argv[1]); print(repr(float(np.asarray(jax_eval(p.graph, p.inputs)["
                f"{spec['output']}]).reshape(-1)[{spec['index']}])))")
        out = subprocess.run([sys.executable, "-c", code, stem], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": here, "JAX_PLATFORMS": "cpu"}, check=True)
        jx = float(out.stdout.split()[-1])
        same = jx == got and np.signbit(jx) == np.signbit(got)
        # the fixture says whether XLA deviates the same way (documented either way)
        assert same == meta.get("jax_agrees", True), (jx, got, meta.get("jax_agrees", True))


def gd_compiled(prog):
    """The fixture's parsed graph compiled by the runtime and run on its inputs."""
    from graphad.runtime.cache import cached_compile
    return cached_compile(prog.graph)(list(prog.inputs))


def test_fixture_round_trip(tmp_path):
    """save -> load gives the same program text, inputs and check settings."""
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=15, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs())
    def rt(p):
        stem = fixtures.save(p, [fcheck.Disagreement("compile", "test", "detail")], str(tmp_path))
        q, meta = fixtures.load(stem)
        assert fixtures.ir_text(q) == fixtures.ir_text(p)
        assert all(np.array_equal(a, b, equal_nan=is_float_array(a))
                   and a.dtype == b.dtype for a, b in zip(p.inputs, q.inputs))
        assert (q.mode, q.seed, q.poison, q.batched, q.batch_size) == (p.mode, p.seed, p.poison, p.batched,
                                                                       p.batch_size)
        assert meta["match"]["prims"] == sorted({n.prim.name for n in p.graph.nodes})

    rt()


# ---------------------------------------------------------------- the comparison

def test_compare_ieee_kinds():
    """NaN positions, infinities and the sign of zero must agree exactly; values within tolerance."""
    from fuzzing.compare import mismatch
    a = np.array([1.0, np.nan, np.inf, -0.0], np.float32)
    assert mismatch(a, a.copy()) is None
    assert "kind" in mismatch(np.array([1.0, 1.0, np.inf, -0.0], np.float32), a)
    assert "kind" in mismatch(np.array([1.0, np.nan, -np.inf, -0.0], np.float32), a)
    assert "kind" in mismatch(np.array([1.0, np.nan, np.inf, 0.0], np.float32), a)
    assert mismatch(np.array([1.0 + 1e-6, np.nan, np.inf, -0.0], np.float32), a) is None
    assert mismatch(np.array([1.001, np.nan, np.inf, -0.0], np.float32), a) is not None
    assert mismatch(np.array([1, 2]), np.array([1, 3])) is not None


def test_overflow_order_model():
    """The reference's model of order-dependent overflow (docs/user_guide.md, 'IEEE semantics'):
    mixed-sign terms beyond the float range are ambiguous; a one-sided overflow, an infinity with
    only finite partners, and ordinary values are not, so a kernel that gets those wrong is caught."""
    from graphad.ir.core import TensorType
    from graphad.prims.registry import PRIMITIVES
    f32 = TensorType((1,), __import__("graphad").dtypes.float32).dtype
    big = np.float32(3.4e38)

    def matmul(a, b):
        a, b = np.array([a], np.float32), np.array(b, np.float32).reshape(-1, 1)
        return fcheck.overflow_ambiguous(PRIMITIVES["matmul"], [a, b], {},
                                         [TensorType(a.shape, f32), TensorType(b.shape, f32)], TensorType((1, 1), f32))

    def total(x):
        x = np.array(x, np.float32)
        return fcheck.overflow_ambiguous(PRIMITIVES["sum"], [x], {"axes": (0,), "keepdims": False},
                                         [TensorType(x.shape, f32)], TensorType((), f32))

    assert matmul([1.9, -2.8], [-np.inf, -big]).all()         # -inf + overflowing +9.5e38: NaN or -inf
    assert matmul([-0.2795, 1.2404], [-np.inf, -big]).all()   # +inf + -4.2e38: +inf or NaN
    assert matmul([1.0, 2.0], [np.inf, 1.0]) is None            # +inf whatever the order
    assert matmul([2.0, 3.0], [big, big]) is None               # both terms overflow upwards: +inf
    assert matmul([1.0, -1.0], [2.0, 3.0]) is None              # nothing near the range
    assert total([big, big, -big]).all()                        # 3.4e38 or +inf, by order
    assert total([big, big, 1.0]) is None                       # +inf in every order
    assert total([big, -big, 1.0]) is None                      # no partial sum leaves the range

def test_product_order_model():
    """The reference's model of order-dependent products: a finite product some order overflows
    on the way, or underflows to zero, and a zero or infinite factor beside such an order, are
    ambiguous; a product out of range in every order, and ordinary values, are not."""
    import graphad as gd
    big, tiny = np.float32(3.4e38), np.float32(1e-30)

    def amb(*rows):
        x = np.array(rows, np.float32)
        m = fcheck.product_order_ambiguous(x, {"axes": (1,), "keepdims": False}, gd.float32)
        return np.zeros(len(rows), bool) if m is None else m
    assert amb([0.19, -big, 1.44, -1.99, -0.22, 2.23, 2.23, -0.22]).all()  # 4.35e37 or +inf by order
    assert amb([tiny, tiny, 1e30, 1e30]).all()                            # 1 or 0 by order
    assert amb([0.0, 1e30, 1e30]).all()                                   # 0 or NaN (inf * 0)
    assert amb([np.inf, tiny, tiny]).all()                                # inf or NaN (0 * inf)
    assert not amb([big, 2.0, 3.0]).any()                                 # +inf in every order
    assert not amb([np.nan, big, big]).any()                              # NaN in every order
    assert not amb([np.inf, 0.0, 2.0]).any()                              # NaN in every order
    assert not amb([1.5, -2.0, 0.25, 3.0]).any()                          # nothing near the range
    m = np.float32(1.4e-45)                                               # the smallest subnormal
    assert amb([m, -np.inf, 0.5]).all()                                   # -inf or NaN: a tie rounds to 0
    assert amb([m, 0.5, big]).all()                                       # 2.4e-7 or 0
    assert amb([3 * m, 0.4, 0.5, 1e30]).all()                             # subnormal rounding reaches 0
    assert not amb([tiny, tiny, -2.0]).any()                              # -0.0 (or subnormal) in every order
    f = np.float32
    assert amb([f(2.0 ** -75), f(1.25 * 2.0 ** -73), f(2.0 ** 100), 1.0]).all()  # subnormal partials lose bits
    assert not amb([f(2.0 ** -60), f(2.0 ** -60), f(2.0 ** 100), 1.0]).any()     # partials stay normal
    assert list(amb([1.5, 2.0, 0.5], [big, 4.0, 0.125])) == [False, True]  # per output element
    assert fcheck.product_order_ambiguous(np.array([1, 2], np.int32), {"axes": (0,)}, gd.int32) is None


def test_fma_contraction_model():
    """The reference's model of FMA contraction (check.CONTRACTING): a product fused into the add
    that consumes it is rounded once, so an overflowing product beside an infinity of the other
    sign gives that infinity (not NaN) and an underflowing one keeps its sign. The compiled code
    does contract here (as JAX's jit does), and the reference accepts exactly the elements whose
    outcome contraction can change."""
    import graphad as gd
    from graphad.frontend.trace import trace_to_graph
    from graphad.ir.core import TensorType
    big, tiny = np.float32(-2.2e38), np.float32(1.4e-45)
    a = np.array([69.68, 69.68, -0.28, 1.5, 1 / 3], np.float32)
    b = np.array([big, big, tiny, 2.0, 3.0], np.float32)
    c = np.array([np.inf, 1.0, 0.0, 1.0, -1.0], np.float32)
    t = TensorType((5,), gd.dtypes.float32)
    g, _, _ = trace_to_graph(lambda x, y, z: x * y + z, [t, t, t], name="fma")
    ref, sens, unstable = fcheck._ref_with_sensitivity(g, [a, b, c], np.random.default_rng(0))
    assert np.isnan(ref[0][0]) and np.isneginf(ref[0][1]) and ref[0][2] == 0 and not np.signbit(ref[0][2])
    assert unstable[0][:4].tolist() == [True, False, True, False]    # NaN or +inf; +0.0 or -0.0
    # the last is 0 unfused and 2.98e-8 fused: a cancellation, in the noise already (a zero may move)
    got = np.asarray(gd.jit(lambda x, y, z: x * y + z)(gd.Tensor(a), gd.Tensor(b), gd.Tensor(c)))
    assert fcheck._compare_outputs([got], ref, sens, unstable, "compiled") is None
    wrong = got.copy()
    wrong[1] = np.nan                                                  # -inf in any order: caught
    assert fcheck._compare_outputs([wrong], ref, sens, unstable, "compiled") is not None


def test_chaotic_elements_get_their_range_as_tolerance():
    """compare.sensitivity: an element that a few ulps of noise moved by a quarter of its size or
    more may be anywhere in the range seen (fixture chaotic_cos_of_amplified_argument); the others
    keep the largest move seen, so a wrong well-conditioned element is still caught."""
    from fuzzing.compare import mismatch, sensitivity
    ref = np.array([-7.25e6, 2.0, 100.0], np.float32)
    noisy = [np.array([-4.03e6, 2.0000002, 100.00001], np.float32),
             np.array([1.2e6, 1.9999998, 99.99999], np.float32)]
    sens, unstable = sensitivity(ref, noisy)
    assert not unstable.any()
    assert sens[0] == pytest.approx(8.45e6) and sens[1] < 1e-6 and sens[2] < 2e-5  # (the move, here)
    ok = np.array([5.71e6, 2.0, 100.0], np.float32)    # another sample of the chaotic element
    assert mismatch(ok, ref, sens=sens, unstable=unstable) is None
    assert mismatch(np.array([5e7, 2.0, 100.0], np.float32), ref, sens=sens, unstable=unstable)  # beyond the range
    assert mismatch(np.array([5.71e6, 2.1, 100.0], np.float32), ref, sens=sens, unstable=unstable)


def test_redone_build_is_reported(monkeypatch, tmp_path):
    """A build that TVM rejects and graphad redoes another way gives correct results, so it is no
    disagreement, but the fuzzer reports it (and keeps the program) instead of letting it pass."""
    import graphad as gd
    from graphad.frontend.trace import trace_to_graph
    from graphad.ir.core import TensorType
    from graphad.lowering import pipeline
    from graphad.runtime.cache import cache_clear
    from graphad.runtime import executable
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path / "cache"))
    cache_clear(disk=False)
    monkeypatch.setattr(pipeline, "_SCHEDULE_REJECTED_WARNED", False)
    monkeypatch.setattr(executable, "_KERNEL_LINK_WARNED", False)
    real = pipeline._cpu_build
    calls = []

    def reject_first(mod, target, *rest):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("InternalError: Check failed: buffer_idx == buffers.size() (1 vs. 2)")
        return real(mod, target, *rest)
    monkeypatch.setattr(pipeline, "_cpu_build", reject_first)
    t = TensorType((3, 7), gd.dtypes.float32)
    g, _, _ = trace_to_graph(lambda x: (x * 1.5).tanh(), [t], name="redo")
    x = np.linspace(-1, 1, 21, dtype=np.float32).reshape(3, 7)
    res = fcheck._compile_and_run(g, [x], poison=False, runs=1)
    assert "buffer_idx" in (res["fallback"] or "")
    np.testing.assert_allclose(res["outs"][0][0], np.tanh(1.5 * x), rtol=1e-6)


# ---------------------------------------------------------------- the long profile and the JAX oracle

def test_make_fuzz_entry_without_jax(monkeypatch, capsys):
    """`make fuzz` with GRAPHAD_FUZZ_ORACLE=jax and no JAX says so and runs without it."""
    from fuzzing import jax_oracle, runner
    monkeypatch.setattr(jax_oracle, "jax_available", lambda: False)
    monkeypatch.setenv("GRAPHAD_FUZZ_ORACLE", "jax")
    monkeypatch.setenv("GRAPHAD_FUZZ_EXAMPLES", "0")
    monkeypatch.setenv("GRAPHAD_FUZZ_SEED", "1")
    assert runner.main() == 0
    out = capsys.readouterr().out
    assert "JAX is not installed" in out and "0 programs checked" in out


def test_jax_oracle_agrees_and_disagrees():
    """The JAX oracle (bench extras) agrees with the interpreter, and notices a wrong reference."""
    pytest.importorskip("jax")
    import graphad as gd
    from fuzzing.jax_oracle import check_with_jax
    from graphad.ir.interpret import interpret
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    g = gd.make_graph(lambda x: ((x * 2.0).exp().sum(0), x.argmax(1), x > 0.5))(gd.Tensor(x))
    ref = interpret(g, [x])
    none = [None] * len(ref)
    assert check_with_jax(g, [x], ref, none, none) is None
    ref[0] = ref[0] + 1.0
    assert "JAX output 0" in check_with_jax(g, [x], ref, none, none)


def test_jax_oracle_empty_einsum_is_numpys_plus_zero():
    """An einsum with an empty operand is an empty sum, +0.0 as NumPy's (found by the fuzzer: JAX's
    einsum summed the lone index first and multiplied +0.0 by -1.38, giving -0.0)."""
    pytest.importorskip("jax")
    import graphad as gd
    from graphad import ops
    from fuzzing.jax_oracle import check_with_jax, jax_eval
    from graphad.ir.interpret import interpret
    x, s = np.array([0.82], np.float32), np.array(-1.38, np.float32)
    g = gd.make_graph(lambda x, s: ops.einsum("a,->", x[0:0], s))(gd.Tensor(x), gd.Tensor(s))
    ref = interpret(g, [x, s])
    got = np.asarray(jax_eval(g, [x, s])[0])
    want = np.einsum("a,->", x[0:0], s)
    assert got == 0 and not np.signbit(got) and not np.signbit(want) and not np.signbit(ref[0])
    none = [None] * len(ref)
    assert check_with_jax(g, [x, s], ref, none, none) is None


def test_jax_oracle_half_index_add_accumulates_in_float32():
    """A bfloat16 index_add with a duplicate index is graphad's float32 sum rounded once (found by
    the fuzzer: XLA's scatter-add rounded after each addition, 0.640625 against 0.632812)."""
    pytest.importorskip("jax")
    import graphad as gd
    from graphad import ops
    from fuzzing.jax_oracle import check_with_jax
    from graphad.ir.interpret import interpret
    x = gd.Tensor(np.array([0.07080078125, 2.703125, -2.140625], np.float32).reshape(3, 1, 1)).astype("bfloat16")
    g = gd.make_graph(lambda v: ops.index_add(v, ops.constant(np.array([1, 2, -2], np.int32)), v, axis=0))(x)
    xs = [x.asnumpy()]
    ref = interpret(g, xs)
    none = [None] * len(ref)
    assert check_with_jax(g, xs, ref, none, none) is None


# ---------------------------------------------------------------- budgets and the sandbox

def _tiny_program():
    import graphad as gd
    from fuzzing.gen import Domain, Program
    g = gd.make_graph(lambda x: (x * 2.0).sin())(gd.Tensor(np.ones(4)))
    return Program(g, [np.linspace(-1, 1, 4)], [Domain("smooth", -1, 1)], "smooth", 1, True, [True], 2, False)


def test_compile_that_never_finishes_is_a_failure(monkeypatch):
    """A compile that hangs (the x.sin().sin().sin() code explosion did) is reported within the budget:
    by wall time when it sleeps, by CPU time when it spins."""
    def hang(*a, **k):
        time.sleep(60)
    monkeypatch.setattr(fcheck, "_compile_and_run", hang)
    t0 = time.perf_counter()
    ds = fcheck.check_program(_tiny_program(), fcheck.Budget(cpu_hard_s=60, wall_hard_s=2.0))
    assert time.perf_counter() - t0 < 30
    assert [d.check for d in ds] == ["budget"] and "did not finish" in ds[0].cause

    def spin(*a, **k):
        while True:
            pass
    monkeypatch.setattr(fcheck, "_compile_and_run", spin)
    ds = fcheck.check_program(_tiny_program(), fcheck.Budget(cpu_hard_s=2, wall_hard_s=60.0))
    assert [d.check for d in ds] == ["budget"] and "CPU" in ds[0].detail


def test_code_size_budget_is_enforced():
    """The scheduled-TIR size limit stops the compile before codegen; the LLVM-IR size is checked
    after it (both limits set absurdly low here)."""
    ds = fcheck.check_program(_tiny_program(), fcheck.Budget(tir_base=10, tir_per_node=10))
    assert [d.cause for d in ds] == ["code-size budget (scheduled TIR)"] and "stopped" in ds[0].detail
    ds = fcheck.check_program(_tiny_program(), fcheck.Budget(llvm_base=10, llvm_per_node=10))
    assert [d.cause for d in ds] == ["code-size budget (LLVM IR)"]


def test_crash_is_a_failure(monkeypatch):
    """A kernel that kills its process is a reported failure, not the end of the test run."""
    def crash(*a, **k):
        os.kill(os.getpid(), signal.SIGSEGV)
    monkeypatch.setattr(fcheck, "_compile_and_run", crash)
    ds = fcheck.check_program(_tiny_program())
    assert [d.check for d in ds] == ["crash"]


def test_child_after_parallel_kernels_in_the_parent():
    """A child forked from a process whose TVM thread pool is running (another test in this pytest
    worker ran a parallel kernel) can still run parallel kernels (it once spun until the CPU budget)."""
    import graphad as gd
    from fuzzing.sandbox import run_in_child
    from graphad.runtime.executable import build_executable
    big = np.random.default_rng(0).random((300, 300))
    build_executable(gd.make_graph(lambda x: (x * 2.0).exp())(gd.Tensor(big)))([big])

    def child():
        g = gd.make_graph(lambda x: (x * 3.0).sin() + 1.0)(gd.Tensor(big))
        return float(np.asarray(build_executable(g)([big])[0]).sum())

    r = run_in_child(child, 120.0, None, 20)
    assert r.status == "ok", r.error
    assert np.isclose(r.value, (np.sin(big * 3.0) + 1.0).sum())


def test_guarded_inputs():
    """Inputs are fresh aligned copies between NaN/sentinel guard zones."""
    for a in (np.arange(5.0), np.arange(6, dtype=np.int32).reshape(2, 3), np.zeros((0, 3)), np.array(True)):
        g = fcheck.guarded(a)
        assert g.ctypes.data % 64 == 0 and g.flags.c_contiguous and np.array_equal(g, a) and g.dtype == a.dtype
        assert not np.shares_memory(g, a)


# ---------------------------------------------------------------- poisoned memory

def test_poison_catches_unwritten_output_and_workspace():
    """A hand-written kernel reads a half-computed workspace and leaves half an output unwritten.
    Poisoned, those halves are NaN and 0xA5A5A5A5 on every call."""
    import tvm

    from fuzzing.handmade import half_written_module
    from graphad.lowering.pipeline import build
    mod = half_written_module()
    ex, report = build(mod, None, poison=True)
    assert report.get("poison") is True
    vm = tvm.runtime.vm.VirtualMachine(ex, tvm.cpu())
    sentinel = np.array(0xA5A5A5A5, np.uint32).view(np.int32)
    for _ in range(3):
        y, z = vm["main"](tvm.runtime.tensor(np.arange(8.0)))
        y, z = y.numpy(), z.numpy()
        np.testing.assert_array_equal(y[:4], [0.0, 2.0, 4.0, 6.0])
        assert np.isnan(y[4:]).all(), y
        np.testing.assert_array_equal(z[:4], 7)
        assert (z[4:] == sentinel).all(), z


def test_poison_leaves_correct_kernels_alone():
    """Poisoning changes no result of a kernel that writes everything it reads."""
    import graphad as gd
    from graphad import ops
    from graphad.runtime.executable import build_executable
    from graphad.testing import poisoned
    fs = [lambda x: ops.pad(x[:, 1:] * 2, ((0, 0), (1, 0))), lambda x: (x.sum(1), x.argmax(0), x > 1),
          lambda x: (x @ x.T).tanh(), lambda x: ops.max_pool2d(x.reshape(1, 1, 4, 5), 2, 1, 1)]
    x = np.arange(20.0).reshape(4, 5) / 7
    for f in fs:
        g = gd.make_graph(f)(gd.Tensor(x))
        want = [np.asarray(t) for t in build_executable(g)([x])]
        with poisoned():
            got = [np.asarray(t) for t in build_executable(g)([x])]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_poison_switch_and_cache_key(monkeypatch):
    """The context manager and GRAPHAD_POISON select the mode, and poisoned and normal builds have
    different cache keys (they never stand in for each other)."""
    import graphad as gd
    from graphad.lowering.targets import resolve_target
    from graphad.runtime.cache import cache_key
    from graphad.testing import poison_enabled, poisoned
    monkeypatch.delenv("GRAPHAD_POISON", raising=False)
    g = gd.make_graph(lambda x: x * 2.0)(gd.Tensor(np.ones(3)))
    t = resolve_target(None)
    assert not poison_enabled()
    normal = cache_key(g, t)
    with poisoned():
        assert poison_enabled()
        assert cache_key(g, t) != normal
        with poisoned(False):
            assert cache_key(g, t) == normal
    monkeypatch.setenv("GRAPHAD_POISON", "1")
    assert poison_enabled() and cache_key(g, t) != normal
    monkeypatch.setenv("GRAPHAD_POISON", "0")
    assert not poison_enabled() and cache_key(g, t) == normal


def test_poisoned_and_normal_executables_do_not_mix(monkeypatch):
    """Through the runtime cache: a poisoned compile of a graph is a different executable."""
    import graphad as gd
    from graphad.runtime.cache import cached_compile
    from graphad.testing import poisoned
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    g = gd.make_graph(lambda x: x * 3.0 + 1.0)(gd.Tensor(np.ones(5)))
    normal = cached_compile(g)
    with poisoned():
        p = cached_compile(g)
        assert p is not normal and p.report.get("poison") is True
        assert cached_compile(g) is p
    assert cached_compile(g) is normal and not normal.report.get("poison")


def test_fixture_directory_layout():
    """Every fixture has its three files and a readable description."""
    for stem in _FIXED + _PENDING + _DEVIATIONS:
        for ext in (".gir", ".npz", ".json"):
            assert os.path.exists(stem + ext), stem + ext
        with open(stem + ".json") as f:
            meta = json.load(f)
        assert meta["disagreements"] and meta["match"]["check"]
