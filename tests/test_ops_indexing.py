"""Issue 17's shape and indexing ops: tile, repeat (repeat_interleave), roll, diagonal, trace,
tril/triu, take_along_axis (gather_elements), and boolean-mask indexing's error.

All are compositions (reshape / broadcast_to / slice / concat / take / where), so their rules
are those primitives'. Oracles: NumPy's functions of the same names; derivatives against float64
central differences in both modes; vmap against a loop; compiled (TVM) against interpreted.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError
from graphad.tensor import Tensor

from backends import both_backends
from op_checks import check_derivatives, check_vmap

RNG = np.random.default_rng(23)
X = RNG.normal(size=(3, 4, 5))


def _same(got, want):
    got = got.asnumpy()
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype or (want.dtype.kind == got.dtype.kind == "i"), (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("reps", [2, (2,), (1, 3), (2, 1, 1), (1, 2, 1, 2), (0, 2), (3, 1, 1, 1, 1)])
def test_tile(reps):
    _same(ops.tile(Tensor(X), reps), np.tile(X, reps))
    _same(ops.tile(Tensor(np.float64(2.5)), reps), np.tile(np.float64(2.5), reps))


@pytest.mark.parametrize("repeats,axis", [(2, None), (3, 0), (2, -1), (0, 1), ([1, 0, 2], 0), ([2, 1, 0, 3], 1),
                                           ([0, 0, 0, 0, 0], 2), ([4], 1), (np.array([1, 2, 0]), 0)])
def test_repeat(repeats, axis):
    _same(ops.repeat(Tensor(X), repeats, axis), np.repeat(X, repeats, axis))
    assert inspect.unwrap(ops.repeat_interleave) is inspect.unwrap(ops.repeat)


def test_repeat_errors():
    with pytest.raises(GraphadError):
        ops.repeat(Tensor(X), [1, 2], 0)  # two repeats for an axis of 3
    with pytest.raises(GraphadError):
        ops.repeat(Tensor(X), -1, 0)
    with pytest.raises(GraphadError):
        gd.jit(lambda t, r: ops.repeat(t, r, 0))(Tensor(X), Tensor(np.array([1, 1, 1])))  # traced repeats


@pytest.mark.parametrize("shift,axis", [(1, 0), (-1, 2), (7, 1), (-13, -1), (0, 0), (2, None), (-59, None),
                                         ((1, 2), (0, 2)), ((1, -3), (1, 1)), (3, (0, 1))])
def test_roll(shift, axis):
    _same(ops.roll(Tensor(X), shift, axis), np.roll(X, shift, axis))


def test_roll_keywords():
    """MindSpore's and torch's spellings shifts= and dims=."""
    _same(ops.roll(Tensor(X), shifts=(1, -2), dims=(0, 2)), np.roll(X, (1, -2), (0, 2)))
    _same(ops.roll(Tensor(X), shifts=3), np.roll(X, 3))
    with pytest.raises(GraphadError):
        ops.roll(Tensor(X), 1, shifts=1)
    with pytest.raises(GraphadError):
        ops.roll(Tensor(X))


@pytest.mark.parametrize("offset", [-5, -3, -1, 0, 1, 2, 4, 6])
@pytest.mark.parametrize("axes", [(0, 1), (1, 0), (0, 2), (2, 1), (-1, -3)])
def test_diagonal_and_trace(offset, axes):
    _same(ops.diagonal(Tensor(X), offset, *axes), np.diagonal(X, offset, *axes))
    got = ops.trace(Tensor(X), offset, *axes).asnumpy()
    np.testing.assert_allclose(got, np.trace(X, offset, *axes), rtol=1e-14, atol=1e-15)


def test_diagonal_trace_of_matrices_and_ints():
    m = np.arange(12).reshape(3, 4)
    for k in (-3, -1, 0, 2, 3, 5):
        _same(ops.diagonal(Tensor(m), k), np.diagonal(m, k))
        _same(ops.trace(Tensor(m), k), np.trace(m, k))
    b = m % 3 == 0
    _same(ops.trace(Tensor(b)), np.trace(b))
    with pytest.raises(GraphadError):
        ops.diagonal(Tensor(np.ones(3)))
    with pytest.raises(GraphadError):
        ops.diagonal(Tensor(m), 0, 1, 1)


@pytest.mark.parametrize("k", [-4, -1, 0, 1, 3, 6])
def test_tril_triu(k):
    _same(ops.tril(Tensor(X), k), np.tril(X, k))
    _same(ops.triu(Tensor(X), k), np.triu(X, k))
    m = np.arange(12, dtype=np.int32).reshape(4, 3)
    _same(ops.tril(Tensor(m), k), np.tril(m, k))
    _same(ops.triu(Tensor(m), diagonal=k), np.triu(m, k))
    b = m % 2 == 0
    _same(ops.tril(Tensor(b), k), np.tril(b, k))


@pytest.mark.parametrize("axis,ishape", [(0, (2, 4, 5)), (1, (3, 7, 5)), (2, (3, 4, 1)), (-1, (3, 4, 6)),
                                          (1, (1, 3, 5)), (2, (3, 1, 2)), (0, (0, 4, 5))])
def test_take_along_axis(axis, ishape):
    n = X.shape[axis]
    idx = RNG.integers(-n, n, ishape)
    _same(ops.take_along_axis(Tensor(X), Tensor(idx), axis), np.take_along_axis(X, idx, axis))
    _same(ops.gather_elements(Tensor(X), axis, Tensor(idx.astype(np.int32))), np.take_along_axis(X, idx, axis))


def test_take_along_axis_flat_and_errors():
    idx = np.array([0, 59, -1, 7])
    _same(ops.take_along_axis(Tensor(X), Tensor(idx), None), np.take_along_axis(X, idx, None))
    with pytest.raises(GraphadError):
        ops.take_along_axis(Tensor(X), Tensor(np.zeros((3, 4), np.int64)), 1)  # rank differs
    with pytest.raises(GraphadError):
        ops.take_along_axis(Tensor(X), Tensor(np.zeros((2, 4, 5), np.int64)), 1)  # 2 vs 3 in axis 0
    with pytest.raises(GraphadError):
        ops.take_along_axis(Tensor(X), Tensor(np.zeros((3, 4, 5))), 1)  # float indices


@pytest.mark.parametrize("axis,ishape", [(0, (2, 4, 5)), (1, (3, 9, 5)), (2, (3, 4, 12)), (1, (1, 3, 5)),
                                          (2, (3, 1, 2)), (-1, (1, 1, 6)), (0, (0, 4, 5))])
def test_put_along_axis(axis, ishape):
    """A new tensor equal to NumPy's in-place result; repeated indices: the last write wins."""
    n = X.shape[axis]
    idx = RNG.integers(-n, n, ishape)  # many repeats
    v = RNG.normal(size=ishape)
    want = X.copy()
    np.put_along_axis(want, idx, v, axis)
    _same(ops.put_along_axis(Tensor(X), Tensor(idx), Tensor(v), axis), want)
    want = X.copy()
    np.put_along_axis(want, idx, 2.5, axis)
    _same(ops.put_along_axis(Tensor(X), Tensor(idx.astype(np.int32)), 2.5, axis), want)


def test_put_along_axis_flat_dtypes_and_errors():
    idx = np.array([0, 59, -1, 7, 59])
    want = X.copy()
    np.put_along_axis(want, idx, np.arange(5.0), None)
    _same(ops.put_along_axis(Tensor(X), Tensor(idx), Tensor(np.arange(5.0)), None), want)
    for arr in (np.arange(12, dtype=np.int32).reshape(3, 4), np.arange(12).reshape(3, 4) % 3 == 0):
        i = np.array([[1, 1], [0, 3], [2, 2]])
        v = np.array([[1, 0], [1, 1], [0, 1]]).astype(arr.dtype)
        want = arr.copy()
        np.put_along_axis(want, i, v, 1)
        got = ops.put_along_axis(Tensor(arr), Tensor(i), Tensor(v), 1)
        assert got.dtype.name == arr.dtype.name
        _same(got, want)
    with pytest.raises(GraphadError):
        ops.put_along_axis(Tensor(X), Tensor(np.zeros((2, 4, 5), np.int64)), 1.0, 1)


@pytest.mark.parametrize("index", ["mask", "mask_list", "true", "false_in_tuple", "traced"])
def test_boolean_mask_indexing_points_to_where(index):
    """x[x > 0] has a data-dependent shape: a GraphadError naming ops.where, eager and traced (a
    scalar bool is NumPy's 0-d mask, not the index 1)."""
    x = Tensor(X)
    idx = {"mask": lambda t: t > 0, "mask_list": lambda t: [True, False, True], "true": lambda t: True,
           "false_in_tuple": lambda t: (0, False), "traced": lambda t: t > 0}[index]
    with pytest.raises(GraphadError, match="ops.where"):
        if index == "traced":
            gd.jit(lambda t: t[idx(t)])(x)
        else:
            x[idx(x)]


def _mixed_index(rng, shape):
    """A random index of ints, slices, None, ... and exactly one integer array (as a list or an
    array, up to 2-D, negative and repeated entries)."""
    items = []
    for n in shape:
        kind = rng.choice(["int", "slice", "all", "array"])
        if kind == "int":
            items.append(int(rng.integers(-n, n)))
        elif kind == "slice":
            items.append(slice(int(rng.integers(-n, n)), None, int(rng.choice([1, 2, -1]))))
        else:
            items.append(slice(None))
    k = int(rng.integers(0, len(shape)))
    arr = rng.integers(-shape[k], shape[k], size=tuple(rng.integers(1, 3, size=rng.integers(1, 3))))
    items[k] = arr.tolist() if rng.random() < 0.5 else arr
    if rng.random() < 0.4:
        items.insert(int(rng.integers(0, len(items) + 1)), None)
    if rng.random() < 0.3:  # ... standing for one or more trailing slices
        cut = int(rng.integers(k + 1, len(items) + 1))
        items = items[:cut] + [Ellipsis] if cut < len(items) and all(
            i == slice(None) for i in items[cut:]) else items
    return tuple(items)


def test_int_and_array_indices_place_axes_as_numpy():
    """Ints beside an integer array are advanced indices too: where a slice, None or ... separates
    them, NumPy puts the array's axes first (x[0, :, [1, 2]] of a (2, 3, 4) tensor is (2, 3)); next
    to each other, in the array's place. Values and the gradient (a scatter-add of the cotangent),
    eager; a sample compiled."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4, 5))
    compiled = 0
    for trial in range(120):
        idx = _mixed_index(rng, x.shape)
        np_idx = tuple(np.asarray(i) if isinstance(i, list) else i for i in idx)
        want = x[np_idx]
        got = Tensor(x)[idx].asnumpy()
        assert got.shape == want.shape, (idx, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=str(idx))
        w = rng.normal(size=want.shape)
        g = gd.grad(lambda t: ops.sum(t[idx] * Tensor(w)))(Tensor(x)).asnumpy()
        gw = np.zeros_like(x)
        np.add.at(gw, np_idx, w)
        np.testing.assert_allclose(g, gw, rtol=1e-12, atol=1e-12, err_msg=str(idx))
        if trial % 30 == 0:
            compiled += 1
            np.testing.assert_array_equal(gd.jit(lambda t: t[idx])(Tensor(x)).asnumpy(), want, err_msg=str(idx))
    assert compiled == 4
    x3 = np.arange(24.0).reshape(2, 3, 4)
    assert Tensor(x3)[0, :, [1, 2]].shape == (2, 3)
    assert Tensor(x3)[:, 0, [1, 2]].shape == (2, 2)  # adjacent: the array's place
    # an array index before ... (finding the ... compared the array with == and raised)
    np.testing.assert_array_equal(Tensor(x3)[np.array([1, 0]), ..., 1].asnumpy(), x3[np.array([1, 0]), ..., 1])


# ---------------------------------------------------------------- derivatives, vmap, compiled

FNS = {
    "tile": lambda t: ops.tile(t, (2, 1, 2)),
    "repeat": lambda t: ops.repeat(t, [2, 0, 1], 0),
    "repeat_int": lambda t: ops.repeat(t, 2, -1),
    "roll": lambda t: ops.roll(t, (1, -2), (0, 1)),
    "diagonal": lambda t: ops.diagonal(t, 1, 1, 0),
    "trace": lambda t: ops.trace(t, -1),
    "tril": lambda t: ops.tril(t, -1),
    "triu": lambda t: ops.triu(t, 1),
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_derivatives_match_finite_differences(name):
    check_derivatives(FNS[name], RNG.normal(size=(3, 4)))


def test_take_along_axis_derivative_accumulates_repeated_indices():
    idx = np.array([[0, 0, 2, -1], [1, 1, 1, 3], [3, 2, 1, 0]])
    x = RNG.normal(size=(3, 4))
    check_derivatives(lambda t: ops.take_along_axis(t, Tensor(idx), 1), x)
    g = gd.grad(lambda t: ops.sum(ops.take_along_axis(t, Tensor(idx), 1)))(Tensor(x)).asnumpy()
    want = np.zeros_like(x)
    for r in range(3):
        for c in idx[r]:
            want[r, c] += 1
    np.testing.assert_array_equal(g, want)


def test_put_along_axis_derivatives_and_vmap():
    """d/d arr: 1 where not written; d/d values: 1 for the last write to each target, 0 for the
    overwritten ones."""
    idx = np.array([[0, 2, 0], [3, 3, 1], [1, 2, 3]])
    x, v = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 3))
    put = lambda a, b: ops.put_along_axis(a, Tensor(idx), b, 1)  # noqa: E731
    check_derivatives(put, x, v, argnum=0)
    check_derivatives(put, x, v, argnum=1)
    gv = gd.grad(lambda a, b: ops.sum(put(a, b)), 1)(Tensor(x), Tensor(v)).asnumpy()
    np.testing.assert_array_equal(gv, [[0, 1, 1], [0, 1, 1], [1, 1, 1]])
    ga = gd.grad(lambda a, b: ops.sum(put(a, b)), 0)(Tensor(x), Tensor(v)).asnumpy()
    np.testing.assert_array_equal(ga, [[0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 0, 0]])
    xs, vs = RNG.normal(size=(4, 3, 4)), RNG.normal(size=(4, 3, 3))
    ids = RNG.integers(-4, 4, (4, 3, 3))
    f = lambda a, i, b: ops.put_along_axis(a, i, b, 1)  # noqa: E731
    check_vmap(f, xs, ids, vs)
    check_vmap(f, xs, ids[0], vs, in_axes=(0, None, 0))
    check_vmap(f, xs[0], ids, vs[0], in_axes=(None, 0, None))


@pytest.mark.parametrize("name", sorted(FNS))
def test_vmap_is_the_loop(name):
    check_vmap(FNS[name], RNG.normal(size=(2, 3, 4)))


def test_take_along_axis_vmap():
    x = RNG.normal(size=(4, 3, 5))
    idx = RNG.integers(-5, 5, (4, 3, 2))
    check_vmap(lambda t, i: ops.take_along_axis(t, i, 1), x, idx)
    check_vmap(lambda t, i: ops.take_along_axis(t, i, 1), x, idx[0], in_axes=(0, None))
    check_vmap(lambda t, i: ops.take_along_axis(t, i, 1), x[0], idx, in_axes=(None, 0))


@pytest.mark.tvm
def test_compiled_matches_interpreted():
    x = RNG.normal(size=(3, 4))
    idx = RNG.integers(-4, 4, (3, 6))

    def f(t, i):
        return tuple(fn(t) for _, fn in sorted(FNS.items())) + (ops.take_along_axis(t, i, 1),)

    both_backends(gd.jit(f), Tensor(x), Tensor(idx))
    put = gd.jit(lambda t, i, v: ops.put_along_axis(t, i, v, 1))
    vals = RNG.normal(size=(3, 6))
    got = both_backends(put, Tensor(x), Tensor(idx), Tensor(vals))[0]
    want = x.copy()
    np.put_along_axis(want, idx, vals, 1)
    np.testing.assert_array_equal(got, want)
    g = gd.grad(lambda t, i: ops.sum(ops.add(ops.sum(ops.take_along_axis(t, i, 1)),
                                             ops.sum(ops.mul(ops.roll(t, 1, 1), ops.tril(t))))))
    both_backends(gd.jit(g), Tensor(x), Tensor(idx))
    m = RNG.integers(-9, 9, (4, 3)).astype(np.int32)
    both_backends(gd.jit(lambda t: (ops.trace(t, 1), ops.triu(t), ops.tile(t, 2), ops.repeat(t, [1, 0, 2], 1))),
                  Tensor(m))


def test_an_alias_is_the_same_wrapped_function():
    """prims/lax/_errors.wrap_module wraps a function once however many names it has."""
    import inspect
    from graphad.prims.lax import shape as lax_shape
    assert ops.permute is ops.transpose
    names: dict[int, list[str]] = {}
    for name, obj in vars(lax_shape).items():
        if not name.startswith("_") and inspect.isfunction(obj):
            names.setdefault(id(getattr(obj, "__wrapped__", obj)), []).append(name)
    for group in names.values():
        assert len({id(getattr(ops, n, getattr(lax_shape, n))) for n in group}) == 1, group


@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def test_traced_integer_scalars_index_as_ints(backend_name):
    """Under jit, grad or vmap a traced 0-d integer (a jit's int argument, a value the graph
    computed) is an int index read by the graph, as NumPy and JAX take a 0-d array: x[i, j],
    x[i, :, idx] and x[i, idx] were refused as "more than one integer array" (a port of JAX's
    indexing tests found it). A 0-d NumPy int array is an int too; `[]` is an empty index."""
    gd.set_backend(backend_name)
    try:
        xn = np.arange(60.0).reshape(3, 4, 5)
        x = gd.Tensor(xn)
        np.testing.assert_array_equal(gd.jit(lambda x, i, j: x[i, j])(x, 1, 2).numpy(), xn[1, 2])
        np.testing.assert_array_equal(gd.jit(lambda x, i: x[i, :, np.arange(3)])(x, 2).numpy(),
                                      xn[2, :, np.arange(3)])
        np.testing.assert_array_equal(gd.jit(lambda x, i: x[i, gd.Tensor(np.array([0, 3]))])(x, -1).numpy(),
                                      xn[-1, [0, 3]])
        g = gd.jit(gd.grad(lambda x, i, j: ops.sum(ops.sin(x[i, :, j]))))(x, 1, 3).numpy()
        want = np.zeros_like(xn)
        want[1, :, 3] = np.cos(xn[1, :, 3])
        np.testing.assert_allclose(g, want, rtol=1e-15)
        np.testing.assert_array_equal(gd.vmap(lambda i: x[i, 2])(gd.Tensor(np.array([0, 2, 1]))).numpy(),
                                      xn[[0, 2, 1], 2])
        np.testing.assert_array_equal(x[np.array(2), :, np.arange(3)].numpy(), xn[np.array(2), :, np.arange(3)])
        assert x[([],)].shape == (0, 4, 5)
        with pytest.raises(gd.GraphadError, match="out of range"):
            gd.jit(lambda x, i: x[i, 0])(x, 3)
        with pytest.raises(gd.GraphadError, match=r"x.reshape\(-1\)\[a \* x.shape\[1\] \+ b\]"):
            x[np.array([0, 1]), np.array([1, 2])]
    finally:
        gd.set_backend("numpy")
