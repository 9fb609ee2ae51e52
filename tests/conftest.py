"""Test-session defaults: derivative tests run on the NumPy reference interpreter (the oracle);
TVM tests select the compiled backend explicitly. A private on-disk cache directory per session
keeps compiled artifacts away from the user's ~/.cache/graphad."""
import os
import sys
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="graphad-test-cache-")
os.environ.setdefault("GRAPHAD_CACHE_DIR", _CACHE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import graphad as gd  # noqa: E402

gd.set_backend("numpy")


@pytest.fixture(autouse=True)
def _numpy_backend():
    prev = gd.get_backend()
    gd.set_backend("numpy")
    yield
    gd.set_backend(prev)


@pytest.fixture
def tvm():
    """The compiled backend for one test (the session's default is the interpreter)."""
    gd.set_backend("tvm")
    yield
    gd.set_backend("numpy")


@pytest.fixture(params=["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def backend(request):
    """Each backend in turn: the reference interpreter and compiled code (TVM)."""
    gd.set_backend(request.param)
    yield request.param
    gd.set_backend("numpy")


@pytest.fixture(autouse=True)
def _build_fallback_latches():
    """The process-wide latches a failed export or link sets (builds stay whole, libraries are
    linked through the compiler driver from then on) are per test: a test that simulates such a
    failure must not change how later tests in the same worker build."""
    from graphad.lowering import linker
    from graphad.runtime import executable
    no_linker, broken = executable._NO_LINKER, list(linker._BROKEN)
    yield
    executable._NO_LINKER = no_linker
    linker._BROKEN[:] = broken


def pytest_addoption(parser):
    parser.addoption("--update-fixtures", action="store_true", default=False,
                     help="rewrite tests/ir_fixtures/**/*.expected from the current output (review the diff first)")
