# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP_BASE := $(VENV)/.installed-base
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench
STAMP_EXAMPLES := $(VENV)/.installed-examples

.PHONY: demo test fuzz bench bench-gpu clean

# The bytecode of graphad's own sources (an editable install, so pip compiles none of it), as an
# installed package has it: where the environment sets PYTHONDONTWRITEBYTECODE (this project's
# machines do), every Python process would otherwise compile graphad from source again, about
# 0.5 s of CPU each (the suite starts many: workers, fresh-process and start-up tests). Files
# already compiled are skipped; an edited source is newer than its bytecode and is read instead.
PYC = $(BIN)/python -m compileall -q graphad tests/fuzzing examples benchmarks > /dev/null

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_BASE): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP_TEST): $(STAMP_BASE)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

$(STAMP_EXAMPLES): $(STAMP_BASE)
	$(BIN)/python -m pip install -q -e ".[examples]"
	touch $@

$(STAMP_BENCH): $(STAMP_BASE)
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

# the main job end to end: train the digits CNN in graph mode, per-example gradient norms, the
# input Jacobian saved as an AOT artifact and loaded in a fresh process, a table of times
demo: $(STAMP_EXAMPLES)
	$(PYC)
	$(BIN)/python examples/demo.py

# tests marked slow (a compile of many minutes) run with `.venv/bin/python -m pytest -m slow tests`
test: $(STAMP_TEST)
	$(PYC)
	$(BIN)/python -m pytest -n 2 -m "not slow" tests

# the differential fuzzer's long profile (tests/fuzzing/runner.py): GRAPHAD_FUZZ_EXAMPLES programs
# (default 10000), GRAPHAD_FUZZ_SEED, GRAPHAD_FUZZ_ORACLE=jax (needs the bench extras); prints how
# many programs it checked and how many disagreed; new minimal repros go to tests/fuzz_fixtures/new/;
# GRAPHAD_FUZZ_JOBS processes (default: one per CPU) share the programs; GRAPHAD_FUZZ_TIME_LIMIT (seconds) stops each job starting programs after that long
fuzz: $(STAMP_TEST)
	GRAPHAD_FUZZ_JOBS=$${GRAPHAD_FUZZ_JOBS:-$$(nproc)} GRAPHAD_FUZZ_EXAMPLES=$${GRAPHAD_FUZZ_EXAMPLES:-10000} PYTHONPATH=tests$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m fuzzing.runner

bench: $(STAMP_BENCH)
	$(BIN)/python benchmarks/seed_workloads.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/peak_memory.py
	$(BIN)/python benchmarks/elementwise.py --write

# on a machine with a CUDA GPU: writes the table to gpu_table.md (insert it into the docs with
# `python benchmarks/gpu_workloads.py --insert gpu_table.md`)
bench-gpu: $(STAMP_BENCH)
	$(BIN)/python benchmarks/gpu_workloads.py --out gpu_table.md

clean:
	rm -rf $(VENV) .pytest_cache
