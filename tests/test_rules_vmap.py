"""Batching rules of every primitive against a loop over examples, on drawn shapes and axes.

For every primitive (a registered primitive without a table entry in tests/prim_cases.py fails):
  * vmap's batch_graph over a random non-empty subset of a one-node graph's inputs equals stacking
    the interpreter's per-example results (unbatched outputs equal every example's result);
  * the batch rule called directly with the batch axis of each operand at a random position;
  * the public graphad.vmap(f, in_axes, out_axes) with negative axes and None for some arguments.
Then the public API on composites: nested vmap, take/index_add with batched indices, pytrees.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphad
from graphad import ops
from graphad.ir.core import TensorType
from graphad.passes.rewrite import PassTrace, finish
from graphad.passes.vmap import batch_graph
from graphad.tensor import Tensor

from prim_cases import ALL_PRIMS, numpy_backend_for_module, assert_close, cases_for, hsettings, run

SETTINGS = hsettings(12)



@pytest.fixture(scope="module", autouse=True)
def _numpy_backend(numpy_backend_for_module):
    """Shadows conftest's function-scoped fixture, which hypothesis tests may not use."""


def _batched_examples(data, case):
    """(flags, size, per-example argument lists, stacked arguments with the batch axis at 0)."""
    n = len(case.args)
    flags = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any), label="batched")
    size = data.draw(st.integers(1, 3), label="size")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    examples = [case.sample(rng) for _ in range(size)]
    per_ex = [[examples[b][i] if f else case.args[i] for i, f in enumerate(flags)] for b in range(size)]
    stacked = [np.stack([examples[b][i] for b in range(size)]) if f else case.args[i] for i, f in enumerate(flags)]
    return flags, size, per_ex, stacked


def _loop(case, per_ex):
    """Per-example results of the one-node graph: a list over outputs of lists over examples."""
    g = case.graph()
    res = [run(g, a) for a in per_ex]
    return [[r[k] for r in res] for k in range(len(g.outputs))]


def _creation_batch_rule(case):
    """Creation primitives have no operands: the rule leaves the result unbatched."""
    with PassTrace("batch_rule") as tr:
        outs, dims = case.primitive.batch([], [], **case.attrs)
    assert dims == [None] * len(outs)
    for got, want in zip(run(finish(tr, outs), []), [case.ref()]):
        assert_close(got, want, what=f"batch rule of {case}")


@pytest.mark.parametrize("name", ALL_PRIMS)
@SETTINGS
@given(data=st.data())
def test_batch_graph_matches_loop(name, data):
    for make_case in cases_for(name):
        case = data.draw(make_case(False), label=make_case.__name__)
        if not case.args:
            _creation_batch_rule(case)
            continue
        flags, size, per_ex, stacked = _batched_examples(data, case)
        bg, out_flags = batch_graph(case.graph(), flags, size)
        got = run(bg, stacked)
        for k, (g_k, f_k, want) in enumerate(zip(got, out_flags, _loop(case, per_ex))):
            assert f_k, f"{case}: output {k} of a node with a batched operand should be batched"
            assert_close(g_k, np.stack(want), what=f"batch_graph of {case}, batched {flags}")


@pytest.mark.parametrize("name", ALL_PRIMS)
@SETTINGS
@given(data=st.data())
def test_batch_rule_with_batch_axis_anywhere(name, data):
    """prim.batch with each batched operand's batch axis at a random position (not only 0)."""
    for make_case in cases_for(name):
        case = data.draw(make_case(False), label=make_case.__name__)
        if not case.args:
            continue
        flags, size, per_ex, stacked = _batched_examples(data, case)
        dims = [data.draw(st.integers(0, case.args[i].ndim), label=f"dim{i}") if f else None
                for i, f in enumerate(flags)]
        moved = [np.moveaxis(a, 0, d) if d is not None else a for a, d in zip(stacked, dims)]
        with PassTrace("batch_rule") as tr:
            xs = [tr.new_arg(TensorType(a.shape, a.dtype), f"x{i}") for i, a in enumerate(moved)]
            outs, out_dims = case.primitive.batch(xs, dims, **case.attrs)
        got = run(finish(tr, outs), moved)
        for g_k, d_k, want in zip(got, out_dims, _loop(case, per_ex)):
            assert d_k is not None, f"{case}: rule left an output unbatched"
            assert_close(np.moveaxis(g_k, d_k, 0), np.stack(want), what=f"batch rule of {case}, dims {dims}")


@pytest.mark.parametrize("name", ALL_PRIMS)
@hsettings(6)
@given(data=st.data())
def test_public_vmap_negative_axes_and_none(name, data):
    """graphad.vmap(op, in_axes, out_axes) with negative axes and None for unbatched arguments."""
    for make_case in cases_for(name):
        case = data.draw(make_case(False), label=make_case.__name__)
        if not case.args:
            continue
        flags, size, per_ex, stacked = _batched_examples(data, case)
        in_axes, args = [], []
        for a, f, x in zip(case.args, flags, stacked):
            if not f:
                in_axes.append(None)
                args.append(Tensor(x))
                continue
            ax = data.draw(st.integers(-(a.ndim + 1), a.ndim), label="in_axis")
            in_axes.append(ax)
            args.append(Tensor(np.moveaxis(x, 0, ax)))
        want = np.stack([case.ref(*a) for a in per_ex])
        out_axis = data.draw(st.integers(-want.ndim, want.ndim - 1), label="out_axis")
        f = graphad.vmap(lambda *xs: case.apply(*xs), tuple(in_axes), out_axis)
        got = f(*args)
        assert_close(got.asnumpy(), np.moveaxis(want, 0, out_axis), what=f"vmap of {case}, in_axes {in_axes}")


# ---------------------------------------------------------------- the public API on composites

def _t(a):
    return Tensor(np.asarray(a))


def test_nested_vmap_outer_loop_order():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))

    def f(a, b):
        return ops.sum(ops.mul(ops.sin(a), b)) + ops.max(a)
    inner = graphad.vmap(f, in_axes=(None, 0))             # over the rows of y
    outer = graphad.vmap(inner, in_axes=(0, None), out_axes=-1)  # over the rows of x, result (5, 3)
    want = np.array([[np.sum(np.sin(x[i]) * y[j]) + x[i].max() for i in range(3)] for j in range(5)])
    assert_close(outer(_t(x), _t(y)).asnumpy(), want)


def test_nested_vmap_both_batched_axes_moved():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2, 3))  # vmap over axis -1 outside, axis 0 inside

    def f(a):  # a: (2,)
        return ops.concat([a, ops.mul(a, 2.0)], 0)
    g = graphad.vmap(graphad.vmap(f, in_axes=0, out_axes=1), in_axes=-1, out_axes=0)
    got = g(_t(x)).asnumpy()  # (3, 4, 4): [k, j, i] = f(x[i, :, k])[j]
    want = np.stack([np.stack([np.concatenate([x[i, :, k], 2 * x[i, :, k]]) for i in range(4)], 1)
                     for k in range(3)])
    assert_close(got, want)


@pytest.mark.parametrize("in_axes", [(0, 0), (None, 0), (0, None), (1, -1)])
def test_vmap_take_batched_indices(in_axes):
    rng = np.random.default_rng(3)
    B = 3
    xs = rng.normal(size=(B, 5, 2))
    idx = rng.integers(-5, 5, size=(B, 4))
    ax_x, ax_i = in_axes
    x_arg = xs if ax_x is not None else xs[0]
    i_arg = idx if ax_i is not None else idx[0]
    if ax_x not in (None, 0):
        x_arg = np.moveaxis(x_arg, 0, ax_x)
    if ax_i not in (None, 0):
        i_arg = np.moveaxis(i_arg, 0, ax_i)
    f = graphad.vmap(lambda x, i: ops.take(x, i, 0), in_axes=in_axes)
    got = f(_t(x_arg), _t(i_arg)).asnumpy()
    want = np.stack([np.take(xs[b] if ax_x is not None else xs[0], (idx[b] if ax_i is not None else idx[0]) % 5, 0)
                     for b in range(B)])
    assert_close(got, want)


@pytest.mark.parametrize("in_axes", [(0, 0, 0), (None, 0, None), (None, 0, 0), (0, None, 0), (-1, 0, None)])
def test_vmap_index_add_batched_indices(in_axes):
    rng = np.random.default_rng(4)
    B, n = 3, 4
    xs = rng.normal(size=(B, 2, n))
    idx = rng.integers(-n, n, size=(B, 5))  # repeated and negative indices
    upd = rng.normal(size=(B, 2, 5))
    bat = [a if ax is not None else a[0] for a, ax in zip((xs, idx, upd), in_axes)]
    bat = [np.moveaxis(a, 0, ax) if ax not in (None, 0) else a for a, ax in zip(bat, in_axes)]
    f = graphad.vmap(lambda x, i, u: ops.index_add(x, i, u, 1), in_axes=in_axes)
    got = f(*[_t(a) for a in bat]).asnumpy()
    want = []
    for b in range(B):
        x, i, u = [a[b] if ax is not None else a[0] for a, ax in zip((xs, idx, upd), in_axes)]
        out = x.copy()
        for k in range(i.shape[0]):
            out[:, i[k] % n] += u[:, k]
        want.append(out)
    assert_close(got, np.stack(want))


def test_vmap_of_grad_and_grad_of_vmap_agree():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3))

    def f(a):
        return ops.sum(ops.tanh(a) * ops.exp(ops.mul(a, 0.5)))
    per_ex = graphad.vmap(graphad.grad(f))(_t(x)).asnumpy()
    total = graphad.grad(lambda a: ops.sum(graphad.vmap(f)(a)))(_t(x)).asnumpy()
    d = (1 - np.tanh(x) ** 2) * np.exp(0.5 * x) + np.tanh(x) * 0.5 * np.exp(0.5 * x)
    assert_close(per_ex, d)
    assert_close(total, d)


def test_vmap_pytree_in_axes_and_unbatched_output():
    rng = np.random.default_rng(6)
    w, xs = rng.normal(size=(3, 2)), rng.normal(size=(5, 3))

    def f(params, x):
        return {"y": ops.matmul(x, params["w"]), "c": ops.sum(params["w"])}
    out = graphad.vmap(f, in_axes=({"w": None}, 0), out_axes={"y": 0, "c": None})({"w": _t(w)}, _t(xs))
    assert_close(out["y"].asnumpy(), xs @ w)
    assert_close(out["c"].asnumpy(), np.asarray(w.sum()))


def test_vmap_creation_inside_is_broadcast():
    xs = np.arange(6.0).reshape(3, 2)
    f = graphad.vmap(lambda x: ops.add(x, ops.full((2,), 1.5, "float64")) + ops.eye(2, dtype="float64")[0])
    assert_close(f(_t(xs)).asnumpy(), xs + 1.5 + np.eye(2)[0])


def test_full_takes_a_tensor_fill_eagerly_as_under_vmap():
    """`ops.full(shape, t)` with a concrete tensor t (a slice of what vmap batches) raised
    "unsupported scalar type Tensor", while vmap and jit took the traced one (a vmapx trial):
    a function that runs batched must run on one slice too."""
    v = np.array([1.0, 2.0, 3.0])
    batched = graphad.vmap(lambda s: ops.full((2,), s))(_t(v)).asnumpy()
    for k in range(3):
        assert_close(ops.full((2,), _t(v)[k]).asnumpy(), batched[k])
    assert_close(ops.full((2, 3), _t(v)).asnumpy(), np.broadcast_to(v, (2, 3)))
    assert ops.full((2,), graphad.Tensor(np.int32(3)), "float32").dtype == graphad.float32
