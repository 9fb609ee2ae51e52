"""Out-of-range gather and scatter indices raise in compiled code, as in the interpreter.

`take`, `x[idx]` and `index_add` used to clip a bad index silently when compiled (an index_add
added its update to the last element); the compiled kernels now check the caller's indices
(lowering/index_check.py) and raise IndexOutOfRangeError naming the op, its operand types, the
axis length and the user's line. Indices the graph makes itself in range (argsort, clips) are
not checked: `index_range` must be sound, which the last tests check against the values run.
"""
import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError, IndexOutOfRangeError

X = np.arange(5.0)


def T(a):
    return gd.Tensor(np.asarray(a))


@pytest.fixture
def compiled(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path))
    gd.set_backend("tvm")
    yield
    gd.set_backend("numpy")
    gd.cache_clear(disk=False)


CASES = {
    "take": lambda x, i: ops.take(x, i),
    "getitem": lambda x, i: x[i],
    "index_add": lambda x, i: ops.index_add(x, i, ops.ones_like(i).astype(x.dtype)),
    "take 2-D indices": lambda x, i: ops.take(x, ops.reshape(i, (1, -1)), axis=0) * 2.0,
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("bad", [5, 7, -6, 2**40])
def test_out_of_range_raises_with_op_types_and_line(compiled, name, bad):
    f = gd.jit(CASES[name])
    good = T(np.array([1, -1, 4, -5], np.int64))
    want = gd.jit(CASES[name], backend="numpy")(T(X), good)
    np.testing.assert_array_equal(f(T(X), good).asnumpy(), want.asnumpy())   # in range: as interpreted
    for _ in range(2):  # the first call and the cached (fast) path
        with pytest.raises(IndexOutOfRangeError) as e:
            f(T(X), T(np.array([1, bad, 2, 0], np.int64)))
        msg = str(e.value)
        op = "index_add" if name == "index_add" else "take"
        assert msg.startswith(f"{op}(f64[5], i64[") and "out of range for an axis of length 5" in msg, msg
        assert "test_index_checks.py" in msg, msg
        assert isinstance(e.value, GraphadError) and isinstance(e.value, IndexError)
    # the interpreter refuses the same call (naming the index and the line)
    with pytest.raises(IndexOutOfRangeError, match=rf"index {bad} is out of range.*test_index_checks.py"):
        gd.jit(CASES[name], backend="numpy")(T(X), T(np.array([1, bad, 2, 0], np.int64)))


def test_int32_indices_and_other_axes(compiled):
    x = np.arange(12.0).reshape(3, 4)
    f = gd.jit(lambda x, i: ops.take(x, i, axis=1))
    np.testing.assert_array_equal(f(T(x), T(np.array([3, -4], np.int32))).asnumpy(), x[:, [3, 0]])
    with pytest.raises(IndexOutOfRangeError, match=r"take\(f64\[3,4\], i32\[2\], axis=1\).*length 4"):
        f(T(x), T(np.array([0, 4], np.int32)))


def test_gradient_and_vmap_of_a_gather(compiled):
    g = gd.jit(gd.grad(lambda x, i: ops.sum(ops.take(x, i) ** 2)))
    np.testing.assert_array_equal(g(T(X), T(np.array([1, 1, -1]))).asnumpy(), [0, 4, 0, 0, 8])
    with pytest.raises(IndexOutOfRangeError):
        g(T(X), T(np.array([1, 9, 0])))
    v = gd.jit(gd.vmap(lambda x, i: ops.take(x, i), in_axes=(None, 0)))
    np.testing.assert_array_equal(v(T(X), T(np.array([[0, 4], [-1, 2]]))).asnumpy(), [[0, 4], [4, 2]])
    with pytest.raises(IndexOutOfRangeError):
        v(T(X), T(np.array([[0, 4], [5, 2]])))


def test_inside_a_native_loop_and_a_host_program(compiled):
    def loop(x, i):
        return gd.fori_loop(0, 3, lambda k, acc: acc + ops.take(x, i), ops.zeros_like(x[:2]))

    def branch(x, i):
        return gd.cond(ops.sum(x) > 0, lambda x: ops.take(x, i), lambda x: -x[:2], x)
    for fn in (loop, branch):
        f = gd.jit(fn)
        np.testing.assert_allclose(f(T(X), T(np.array([4, -5]))).asnumpy(),
                                   gd.jit(fn, backend="numpy")(T(X), T(np.array([4, -5]))).asnumpy())
        with pytest.raises(IndexOutOfRangeError, match="out of range for an axis of length 5"):
            f(T(X), T(np.array([4, 5])))


def test_disk_cache_hit_and_aot_artifact_raise(compiled, tmp_path):
    fn = lambda x, i: ops.take(x, i) + 1.0  # noqa: E731
    gd.jit(fn)(T(X), T(np.array([0])))
    gd.cache_clear(disk=False)  # the next call loads the library from the disk cache
    with pytest.raises(IndexOutOfRangeError, match="test_index_checks.py"):
        gd.jit(fn)(T(X), T(np.array([6])))
    path = str(tmp_path / "take.gdx")
    gd.jit(fn).lower(T(X), T(np.array([0]))).compile().save(path)
    loaded = gd.load(path)
    np.testing.assert_array_equal(loaded(T(X), T(np.array([-2]))).asnumpy(), [4.0])
    with pytest.raises(IndexOutOfRangeError, match=r"take\(f64\[5\], i64\[1\], axis=0\).*in the compiled graph"):
        loaded(T(X), T(np.array([-6])))


def _check_kernels(fn, *args) -> int:
    from graphad.lowering import lower_graph
    from graphad.runtime.executable import graph_for_lowering
    g = graph_for_lowering(gd.jit(fn).lower(*args).graph)
    import re
    return len(re.findall(r"def index_check\d*\(", lower_graph(g).script()))


def test_indices_the_graph_makes_in_range_are_not_checked():
    x, i = T(np.arange(12.0).reshape(3, 4)), T(np.zeros((3, 2), np.int64))
    assert _check_kernels(lambda x: ops.sort(x, 1), x) == 0
    assert _check_kernels(lambda x: ops.median(x, 1), x) == 0
    assert _check_kernels(lambda x: ops.top_k(x, 2)[0], x) == 0
    assert _check_kernels(lambda x, i: ops.take_along_axis(x, i, 1), x, i) == 0  # it clips (documented)
    assert _check_kernels(lambda x: ops.take(x, ops.argmax(x, 1), axis=1), x) == 0
    assert _check_kernels(lambda x, i: ops.take(x, i, axis=1), x, i) == 1
    # argmax of a longer axis, or an index moved past the clip, is checked
    assert _check_kernels(lambda x: ops.take(x, ops.argmax(x, 0) + 2, axis=0), x) == 1
    assert _check_kernels(lambda x, i: ops.take(x, ops.clip(i, 0, 2) + 1, axis=0), x, i) == 1
    assert _check_kernels(lambda x, i: ops.take(x, ops.clip(i, 0, 2), axis=0), x, i) == 0


def test_index_range_is_sound_under_wrapping():
    """A clip of an index that an addition may have wrapped around (int64 near its maximum) is
    not taken on trust: the sum's range is unknown, so the take keeps its check."""
    big = np.iinfo(np.int64).max - 1
    fn = lambda x, i: ops.take(x, ops.minimum(ops.maximum(i, 0) + 5, 4))  # noqa: E731
    assert _check_kernels(fn, T(X), T(np.array([0]))) == 1
    gd.set_backend("tvm")
    try:
        with pytest.raises(IndexOutOfRangeError):
            gd.jit(fn)(T(X), T(np.array([big])))
    finally:
        gd.set_backend("numpy")
    with pytest.raises(IndexOutOfRangeError):
        gd.jit(fn)(T(X), T(np.array([big])))


def test_index_range_bounds_every_value_computed():
    """Each value's interval holds the values the interpreter computes, over random integer
    programs of the operations index_range reads."""
    from graphad.lowering.index_check import index_range
    rng = np.random.default_rng(3)
    ops_ = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, ops.minimum, ops.maximum,
            lambda a, b: ops.where(a > b, a, b), lambda a, b: -a, lambda a, b: ops.clip(a, -3, 7),
            lambda a, b: ops.argmax(ops.reshape(ops.concatenate([a, b]), (2, -1)), 0),
            lambda a, b: ops.argsort(a), lambda a, b: a.astype("int32").astype("int64")]
    for trial in range(60):
        picks = rng.integers(0, len(ops_), 4)

        def prog(a, b, picks=picks):
            vals = [a, b, ops.arange(-2, 4, 1, dtype="int64"), ops.full((6,), 3, "int64")]
            for p in picks:
                u, w = vals[rng.integers(0, len(vals))], vals[rng.integers(0, len(vals))]
                vals.append(ops_[p](u, w))
            return vals[-1]
        a = rng.integers(-20, 20, 6)
        b = rng.integers(-20, 20, 6)
        g = gd.make_graph(prog)(T(a), T(b))
        env = dict(zip(g.inputs, [a, b]))
        for n in g.nodes:
            outs = interpret_node(n, env)
            for o, val in zip(n.outputs, outs):
                env[o] = val
                if o.type.dtype.is_int and val.size:
                    lo, hi = index_range(o)
                    assert lo <= val.min() and val.max() <= hi, (n.prim.name, (lo, hi), val)


def interpret_node(n, env):
    from graphad.ir.interpret import run_impl
    return run_impl(n.prim, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs])


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_vmap_of_a_gather_never_reaches_into_another_example(backend):
    """Batched operand and indices fold the batch into the gathered axis; an index out of one
    example's range read (or wrote) the next example's row, silently, on both backends."""
    xb = T(np.arange(10.0).reshape(2, 5))
    take = gd.vmap(lambda t, i: ops.take(t, i))
    add = gd.vmap(lambda t, i: ops.index_add(t, i, ops.ones((2,), dtype=gd.float64)))
    gd.set_backend(backend)
    try:
        np.testing.assert_array_equal(gd.jit(take)(xb, T(np.array([[4, -1], [-5, 0]]))).asnumpy(),
                                      [[4.0, 4.0], [5.0, 5.0]])
        for bad in ([[5, 1], [0, 1]], [[0, 1], [-6, 1]]):
            with pytest.raises(IndexOutOfRangeError):
                gd.jit(take)(xb, T(np.array(bad)))
            with pytest.raises(IndexOutOfRangeError):
                gd.jit(add)(T(np.zeros((2, 5))), T(np.array(bad)))
    finally:
        gd.set_backend("numpy")


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_vmap_of_a_gather_names_the_examples_index_and_axis(backend):
    """The folded gather's check named the folded axis and a stand-in index ("index 15 is out of
    range for an axis of length 15" for index 7 of an axis of 5, batch 3): each example's indices
    are now checked against its own axis (the index_check primitive), before the fold."""
    xb = T(np.arange(15.0).reshape(3, 5))
    gd.set_backend(backend)
    try:
        for fn in (gd.vmap(lambda t, i: ops.take(t, i)), gd.vmap(lambda t, i: t[i])):
            with pytest.raises(IndexOutOfRangeError) as e:
                gd.jit(fn)(xb, T(np.array([0, 7, 1], np.int32)))
            msg = str(e.value)
            assert "take (under vmap, per example)" in msg and "axis of length 5" in msg, msg
            assert "index 7" in msg if backend == "numpy" else "index_check(i32[3" in msg, msg
            assert "test_index_checks.py" in msg and "15" not in msg.split("(at")[0], msg
        add = gd.vmap(lambda t, i: ops.index_add(t, i, ops.ones((2,), dtype=gd.float64)))
        with pytest.raises(IndexOutOfRangeError, match=r"index_add \(under vmap, per example\).*length 5"):
            gd.jit(add)(xb, T(np.array([[0, 1], [5, 1], [0, 0]])))
    finally:
        gd.set_backend("numpy")


def test_a_folded_gather_is_checked_once():
    """The per-example check leaves the folded indices in range of the folded axis (index_range
    knows index_check's interval), so the gather itself needs no second check kernel."""
    xb, i = T(np.arange(15.0).reshape(3, 5)), T(np.zeros((3, 2), np.int64))
    assert _check_kernels(gd.vmap(lambda t, k: ops.take(t, k)), xb, i) == 1
    assert _check_kernels(gd.vmap(lambda t, k: ops.index_add(t, k, ops.ones((2,), dtype=gd.float64))), xb, i) == 1


@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_jacobians_of_a_gather_check_the_indices(backend):
    """jacrev/jacfwd of a gather become a one-hot of the indices (passes/structure.py): an index
    out of range gave a zero row; a negative one its wrapped row."""
    gd.set_backend(backend)
    try:
        for jac in (gd.jacrev, gd.jacfwd):
            j = jac(lambda t: ops.take(t, T(np.array([1, -1]))))(T(X))
            np.testing.assert_array_equal(j.asnumpy(), np.eye(5)[[1, 4]])
            with pytest.raises(IndexOutOfRangeError):
                jac(lambda t: ops.take(t, T(np.array([1, 5]))))(T(X))
            with pytest.raises(IndexOutOfRangeError):
                jac(lambda u: ops.index_add(ops.zeros((5,), dtype=gd.float64), T(np.array([0, 5])), u))(T(np.ones(2)))
    finally:
        gd.set_backend("numpy")


def test_an_empty_axis_has_no_index_in_range():
    """A gather or scatter of indices into an axis of length 0 is refused when traced (compiled,
    it returned zeros); no indices into it are fine."""
    for backend in ("numpy", "tvm"):
        gd.set_backend(backend)
        try:
            with pytest.raises(IndexOutOfRangeError, match="axis of length 0"):
                gd.jit(lambda x, i: ops.take(x, i))(T(np.zeros(0)), T(np.array([0])))
            with pytest.raises(IndexOutOfRangeError, match="axis of length 0"):
                gd.jit(lambda x, i: ops.index_add(x, i, ops.ones((1, 2))))(T(np.zeros((0, 2))), T(np.array([0])))
            assert gd.jit(lambda x, i: ops.take(x, i))(T(np.zeros(0)), T(np.zeros(0, np.int64))).shape == (0,)
        finally:
            gd.set_backend("numpy")


def test_host_loop_path_raises_the_same_error(compiled):
    from graphad.runtime.host import native_loops
    with native_loops(False):
        f = gd.jit(lambda x, idx: gd.scan(lambda c, i: (c + ops.take(x, i), None), T(np.float64(0.0)), idx)[0])
        assert float(f(T(X), T(np.array([1, -1, 2]))).asnumpy()) == 7.0
        with pytest.raises(IndexOutOfRangeError, match="length 5.*test_index_checks.py"):
            f(T(X), T(np.array([1, 7, 2])))
