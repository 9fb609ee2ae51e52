"""Fuzzing sessions: the short CI profile (tests/test_fuzz.py) and the long `make fuzz` run.

A session runs hypothesis over `gen.programs()` and checks each program (`check.check_program`).
A disagreement that matches a filed defect (`known.py`: the pending fixtures) is counted and
tolerated. A new one stops generation; hypothesis shrinks it to a minimal program, which is saved
as a fixture under tests/fuzz_fixtures/new/. The CI session then fails; the long session adds the
repro's signature to its known list (so the same defect is counted, not re-shrunk) and goes on
with a fresh seed until it has checked the requested number of programs.

`make fuzz` runs `python -m fuzzing.runner` (PYTHONPATH=tests):
    GRAPHAD_FUZZ_EXAMPLES   programs to check (default 10000)
    GRAPHAD_FUZZ_SEED       first hypothesis seed (default: random, printed)
    GRAPHAD_FUZZ_ORACLE=jax also compare the reference interpreter with JAX (skipped, with a
                            message, when JAX is not installed: it is in the bench extras)
    GRAPHAD_FUZZ_TIMEOUT    seconds before a compiling child counts as hung (default 25)
    GRAPHAD_FUZZ_JOBS       processes sharing the programs (default 1; `make fuzz` passes the
                            number of CPUs), each with its own seed (seed + job * 1000003); every
                            other job lowers every conv2d it can as im2col + matmul, which the
                            default thresholds keep for larger convolutions than the fuzzer makes
                            (GRAPHAD_FUZZ_IM2COL_ALL=1; recorded in its fixtures)
It prints how many programs it checked and how many disagreed, and exits 1 if any new defect
was found.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed

from . import fixtures
from .check import FALLBACKS_SAVED_PER_PROCESS, STATS, Budget, Disagreement, check_program
from .gen import Program, programs
from .known import Known, load_known, split_known

# The CI profile: reproducible (derandomized), small programs, the derivative graph compiled for a
# third of them (it is always interpreted and checked), a time cap as a safety net on a loaded box.
CI_EXAMPLES = int(os.environ.get("GRAPHAD_FUZZ_CI_EXAMPLES", "60"))
CI_TIME_CAP_S = float(os.environ.get("GRAPHAD_FUZZ_CI_TIME_CAP", "45"))
CI_SHRINK_BUDGET_S = 120.0


class FuzzFailure(AssertionError):
    """A program on which graphad and an oracle disagree (raised inside hypothesis to shrink it)."""


@dataclass
class Session:
    """State and counters of one session (several hypothesis runs in the long profile)."""

    known: list
    oracle: str | None = None
    budget: Budget = field(default_factory=Budget)
    time_cap_s: float | None = None
    shrink_budget_s: float = 600.0
    programs: int = 0              # generated programs checked (shrink attempts not counted)
    disagreeing: int = 0           # of those, programs with any disagreement
    known_hits: int = 0            # ... all of which matched a filed defect
    deviation_hits: int = 0        # programs whose only differences are documented deviations (not counted above)
    capped: int = 0                # programs generated after the time cap, not checked
    shrink_steps: int = 0
    saved: list = field(default_factory=list)
    known_seen: dict = field(default_factory=dict)
    collect: bool = False          # log every disagreement and go on (no shrinking): for measurements
    log: list = field(default_factory=list)
    progress_every: int = 0        # print a progress line every that many programs (0: never)
    first_found: tuple | None = None  # (programs, seconds) when the first new disagreement was seen
    t0: float = field(default_factory=time.perf_counter)
    _failing_since: float | None = None
    _fail_cache: dict = field(default_factory=dict)
    _last: tuple | None = None
    _target: tuple | None = None   # (check, cause) of the failure being shrunk

    def body(self, p: Program) -> None:
        """The hypothesis test body: check `p`; raise FuzzFailure on a new disagreement."""
        key = _key(p)
        if key in self._fail_cache:  # a replay (hypothesis re-runs the minimal example)
            self._last = self._fail_cache[key]
            self._fail()
        now = time.perf_counter()
        if self._failing_since is None:
            if self.time_cap_s is not None and now - self.t0 > self.time_cap_s:
                self.capped += 1
                return
            self.programs += 1
            if self.progress_every and self.programs % self.progress_every == 0:
                _progress(self)
        else:
            if now - self._failing_since > self.shrink_budget_s:
                return  # shrinking has had its time: keep the smallest failure found so far
            self.shrink_steps += 1
        ds = check_program(p, self.budget, self.oracle)
        new, old = split_known(p, ds, self.known)
        if self.collect:
            if ds:
                self.log.append((self.programs, time.perf_counter() - self.t0, p, ds, new))
                self.disagreeing += 1
            return
        if self._failing_since is None and ds and not new and all(_is_deviation(name, self.known) for name, _ in old):
            self.deviation_hits += 1
            for name, _ in old:
                self.known_seen[name] = self.known_seen.get(name, 0) + 1
        elif self._failing_since is None and ds:
            self.disagreeing += 1
            if not new:
                self.known_hits += 1
                for name, _ in old:
                    self.known_seen[name] = self.known_seen.get(name, 0) + 1
        if new and self._failing_since is not None:
            # shrink towards the same defect: a smaller program that fails differently (another
            # defect) would otherwise take over, and the repro would not show what was found
            new = [d for d in new if (d.check, d.cause) == self._target]
        if new:
            if self._failing_since is None:
                self._failing_since = now
                self._target = (new[0].check, new[0].cause)
                if self.first_found is None:
                    self.first_found = (self.programs, now - self.t0)
            self._last = (p, new)
            self._fail_cache[key] = self._last
            self._fail()

    def _fail(self):
        # one raise site: hypothesis tells failures apart by where they are raised, and a replay
        # that failed "elsewhere" would look like a different (flaky) bug
        raise FuzzFailure(_message(*self._last))

    def run(self, n: int, seed: int | None, derandomize: bool, max_steps: int, derived_percent: int):
        """One hypothesis run of up to n programs; (Program, disagreements) of a new defect or None."""
        self._failing_since = None
        self._last = None
        self._target = None

        @settings(max_examples=max(n, 1), derandomize=derandomize, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                  report_multiple_bugs=False, print_blob=False)
        @given(programs(max_steps=max_steps, derived_percent=derived_percent))
        def test(p):
            self.body(p)

        if not derandomize and seed is not None:
            test = hyp_seed(seed)(test)
        try:
            test()
        except FuzzFailure:
            return self._last
        return None

    def record(self, found, directory: str) -> str:
        """Save a new minimal repro and treat its defect as known from now on."""
        p, ds = found
        stem = fixtures.save(p, ds, directory)
        self.saved.append((stem, ds))
        d = ds[0]
        self.known.append(Known(os.path.basename(stem), d.check, d.cause, fixtures.signature(d),
                                frozenset(n.prim.name for n in p.graph.nodes)))
        return stem


def _is_deviation(name: str, known: list) -> bool:
    return any(k.name == name and k.deviation for k in known)


def _key(p: Program) -> str:
    h = hashlib.sha256(p.text().encode())
    for a in p.inputs:
        h.update(a.tobytes())
    h.update(repr((p.poison, p.batched, p.batch_size, p.seed, p.compile_derived)).encode())
    return h.hexdigest()


def _message(p: Program, ds: list[Disagreement]) -> str:
    return "graphad disagrees with an oracle on this program:\n" + p.describe() + "\n" + \
        "\n".join(f"  {d}" for d in ds)


def ci_session(save_dir: str = fixtures.NEW, collect: bool = False) -> tuple[Session, object]:
    """The CI profile: (session, None) when every program agrees, else (session, (program, ds))
    with the shrunk program saved under `save_dir` (best effort: a read-only tree is fine).
    collect=True checks the whole profile without stopping (Session.log has every disagreement)."""
    s = Session(load_known(), time_cap_s=None if collect else CI_TIME_CAP_S, shrink_budget_s=CI_SHRINK_BUDGET_S,
                collect=collect)
    found = s.run(CI_EXAMPLES, None, True, max_steps=6, derived_percent=30)
    if found is not None:
        try:
            s.record(found, save_dir)
        except OSError:
            pass
    return s, found


def long_session(n: int, seed: int, oracle: str | None, save_dir: str = fixtures.NEW) -> Session:
    """`make fuzz`: n programs in chunks of fresh seeds; every new defect saved once."""
    limit = os.environ.get("GRAPHAD_FUZZ_TIME_LIMIT")  # seconds: stop starting programs after it
    s = Session(load_known(), oracle=oracle, shrink_budget_s=600.0, progress_every=100,
                time_cap_s=float(limit) if limit else None)
    chunk = 0
    while s.programs < n and not s.capped:
        before = s.programs
        found = s.run(n - s.programs, seed + chunk, False, max_steps=10, derived_percent=100)
        chunk += 1
        if found is not None:
            stem = s.record(found, save_dir)
            print(f"  new defect after {s.programs} programs -> {os.path.relpath(stem)}", flush=True)
            for d in found[1]:
                print(f"    {d}", flush=True)
        elif s.programs == before:
            break  # hypothesis generated nothing more
    return s


def _progress(s: Session) -> None:
    print(f"  ... {s.programs} programs, {s.disagreeing} disagreeing, {time.perf_counter() - s.t0:.0f} s",
          flush=True)


def tally(s: Session) -> dict:
    """The session's counters as a JSON-able dict (what a job of a parallel run reports)."""
    return {"programs": s.programs, "seconds": time.perf_counter() - s.t0, "disagreeing": s.disagreeing,
            "known_hits": s.known_hits, "deviation_hits": s.deviation_hits, "shrink_steps": s.shrink_steps,
            "compiled": STATS.compiled, "fd_checked": STATS.fd_checked, "adjoint_checked": STATS.adjoint_checked,
            "vmap_checked": STATS.vmap_checked, "jax_checked": STATS.jax_checked,
            "subnormals_flushed": STATS.subnormals_flushed, "fallbacks": STATS.fallbacks,
            "first_found": s.first_found, "capped": s.capped,
            "known_seen": {name: [k, _is_deviation(name, s.known)] for name, k in s.known_seen.items()},
            "saved": [[os.path.relpath(stem), ds[0].check, ds[0].cause] for stem, ds in s.saved]}


def merge_tallies(parts: list[dict]) -> dict:
    """Sum the tallies of parallel jobs (wall time is the slowest job's)."""
    out = {k: 0 for k in ("programs", "disagreeing", "known_hits", "deviation_hits", "shrink_steps", "compiled",
                          "fd_checked", "adjoint_checked", "vmap_checked", "jax_checked", "subnormals_flushed", "fallbacks",
                          "capped")}
    out.update(seconds=0.0, first_found=None, known_seen={}, saved=[])
    for t in parts:
        for k in out:
            if isinstance(out[k], int):
                out[k] += t.get(k, 0)
        out["seconds"] = max(out["seconds"], t["seconds"])
        if t["first_found"] is not None and out["first_found"] is None:
            out["first_found"] = t["first_found"]
        for name, (k, dev) in t["known_seen"].items():
            out["known_seen"][name] = [out["known_seen"].get(name, [0, dev])[0] + k, dev]
        out["saved"] += t["saved"]
    return out


def summary(s: Session | dict) -> str:
    """The text `make fuzz` prints at the end (of a session or of merged job tallies)."""
    t = s if isinstance(s, dict) else tally(s)
    lines = [f"graphad fuzz: {t['programs']} programs checked in {t['seconds']:.0f} s; "
             f"{t['disagreeing']} disagreements ({t['known_hits']} of a filed defect, "
             f"{t['disagreeing'] - t['known_hits']} new; {len(t['saved'])} new minimal repros); "
             f"{t['deviation_hits']} programs differed from NumPy only by a documented deviation",
             f"  compiled {t['compiled']}, finite-difference checks {t['fd_checked']}, adjoint checks "
             f"{t['adjoint_checked']}, vmap checks {t['vmap_checked']}, JAX checks {t['jax_checked']}, "
             f"shrink attempts {t['shrink_steps']}; compiled results explained by subnormal flushing (documented) "
             f"{t['subnormals_flushed']}; builds redone another way (kernel objects not linked, or a "
             f"schedule TVM rejected: correct results, a compiler bug to triage; up to "
             f"{FALLBACKS_SAVED_PER_PROCESS} per job saved under "
             f"tests/fuzz_fixtures/new/fallbacks/) {t.get('fallbacks', 0)}"]
    if t.get("capped"):
        lines.append("  stopped by GRAPHAD_FUZZ_TIME_LIMIT: the count above is what was checked")
    if t["first_found"] is not None:
        lines.append(f"  first new disagreement at program {t['first_found'][0]}, {t['first_found'][1]:.1f} s into "
                     f"the session (the rest is shrinking and later programs)")
    for name, (k, dev) in sorted(t["known_seen"].items()):
        lines.append(f"  {'documented deviation' if dev else 'known defect'} {name}: {k} programs")
    for stem, check, cause in t["saved"]:
        lines.append(f"  NEW {stem}: {check}: {cause}")
    return "\n".join(lines)


def _run_jobs(n: int, seed: int, jobs: int) -> dict:
    """Split n programs over `jobs` child runners (own seeds, one TVM thread each); merged tallies."""
    procs, outs, pumps = [], [], []
    with tempfile.TemporaryDirectory(prefix="graphad-fuzz-") as tmp:
        for j in range(jobs):
            share = n // jobs + (j < n % jobs)
            out = os.path.join(tmp, f"job{j}.json")
            env = dict(os.environ, GRAPHAD_FUZZ_EXAMPLES=str(share), GRAPHAD_FUZZ_SEED=str(seed + j * 1000003),
                       GRAPHAD_FUZZ_JOBS="1", GRAPHAD_FUZZ_TALLY=out, TVM_NUM_THREADS="1")
            if j % 2:  # every other job lowers every eligible conv2d as im2col + matmul (its own cache)
                env.update(GRAPHAD_FUZZ_IM2COL_ALL="1", GRAPHAD_CACHE_DIR=os.path.join(tmp, f"cache{j}"))
            p = subprocess.Popen([sys.executable, "-m", "fuzzing.runner"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            pump = threading.Thread(target=_prefix_lines, args=(p.stdout, f"[job {j}] "), daemon=True)
            pump.start()
            procs.append(p)
            outs.append(out)
            pumps.append(pump)
        codes = [p.wait() for p in procs]
        for pump in pumps:
            pump.join()
        missing = [j for j, o in enumerate(outs) if not os.path.exists(o)]
        if missing:
            raise SystemExit(f"graphad fuzz: job(s) {missing} ended without a tally (exit codes {codes})")
        tallies = []
        for o in outs:
            with open(o) as f:
                tallies.append(json.load(f))
    return merge_tallies(tallies)


def _prefix_lines(stream, prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def main() -> int:
    """Entry point of `make fuzz`."""
    n = int(os.environ.get("GRAPHAD_FUZZ_EXAMPLES", "10000"))
    seed = int(os.environ.get("GRAPHAD_FUZZ_SEED") or int.from_bytes(os.urandom(4), "little"))
    oracle = os.environ.get("GRAPHAD_FUZZ_ORACLE") or None
    if oracle == "jax":
        from .jax_oracle import jax_available
        if not jax_available():
            print("GRAPHAD_FUZZ_ORACLE=jax: JAX is not installed (`make bench` installs the bench extras); "
                  "running without it")
            oracle = None
    elif oracle is not None:
        print(f"unknown GRAPHAD_FUZZ_ORACLE={oracle!r} (only 'jax'); running without it")
        oracle = None
    jobs = max(1, int(os.environ.get("GRAPHAD_FUZZ_JOBS") or 1))
    if os.environ.get("GRAPHAD_FUZZ_IM2COL_ALL") == "1":
        fixtures.set_lowering({"IM2COL_MIN_TERMS": 1})
        print("graphad fuzz: every conv2d with narrow outputs lowered as im2col + matmul", flush=True)
    print(f"graphad fuzz: {n} programs, seed {seed}, oracle {oracle or 'none'}, {jobs} job(s); new repros go to "
          f"{os.path.relpath(fixtures.NEW)}", flush=True)
    if jobs > 1:
        t = _run_jobs(n, seed, jobs)
        print(summary(t), flush=True)
        return 1 if t["saved"] else 0
    s = long_session(n, seed, oracle)
    if os.environ.get("GRAPHAD_FUZZ_TALLY"):
        with open(os.environ["GRAPHAD_FUZZ_TALLY"], "w") as f:
            json.dump(tally(s), f)
    print(summary(s), flush=True)
    return 1 if s.saved else 0


if __name__ == "__main__":
    sys.exit(main())
