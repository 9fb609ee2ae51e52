"""graphad's TVMScript kernels (lowering/linalg_tir.py, lowering/int_pow.py) parse through
`_tvm.TS.prim_func` into the PrimFunc TVMScript's own `T.prim_func` makes of the same text, and
are parsed once per process for each set of arguments."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.tvm

# (builder name, arguments after `tvm`): every kernel, a batch, odd sizes, both float dtypes,
# every triangular-solve variant
CASES = [("solve", (3, 4, 2, "float32")), ("slogdet", (2, 3, "float64")), ("cholesky", (1, 5, "float32")),
         ("trisolve", (2, 3, 2, "float64", True, False)), ("trisolve", (2, 3, 1, "float32", False, True)),
         ("trisolve", (1, 4, 3, "float64", False, False)), ("trisolve", (1, 2, 2, "float32", True, True)),
         ("eigh", (2, 3, "float64")), ("qr", (1, 4, 3, "float32")), ("svd", (2, 3, 2, "float64"))]


def _builder(name):
    from graphad.lowering import linalg_tir
    return getattr(linalg_tir, f"{name}_kernel")


@pytest.mark.parametrize("name,args", CASES + [("int_pow", (5, "int32")), ("int_pow", (3, "int64"))],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)))
def test_kernels_parse_as_tvmscripts_own_decorator(monkeypatch, name, args):
    import tvm_ffi
    from tvm.script import tirx as T

    from graphad.lowering import _tvm, int_pow
    tvm = _tvm.load_tvm()
    build = int_pow.int_pow_kernel if name == "int_pow" else _builder(name)
    call = (lambda: build.__wrapped__(*args)) if name == "int_pow" else (lambda: build.__wrapped__(tvm, *args))
    ours = call()
    monkeypatch.setattr(_tvm.TS, "prim_func", staticmethod(T.prim_func))  # TVM's decorator, same text
    theirs = call()
    assert isinstance(ours, tvm.tirx.PrimFunc)
    assert tvm_ffi.structural_equal(ours, theirs, map_free_vars=False)
    assert ours.script() == theirs.script()  # the names too
    assert bool(ours.attrs["s_tir"]) and "global_symbol" not in ours.attrs  # s_tir, private


def test_each_kernel_is_parsed_once_per_arguments():
    from graphad.lowering import _tvm
    tvm = _tvm.load_tvm()
    build = _builder("solve")
    build.cache_clear()
    a = build(tvm, 2, 3, 1, "float32")
    assert build(tvm, 2, 3, 1, "float32") is a
    b = build(tvm, 2, 3, 1, "float64")
    assert b is not a and '"float64"' in b.script() and '"float64"' not in a.script()
    assert build.cache_info().misses == 2 and build.cache_info().hits == 1
