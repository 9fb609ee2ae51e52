"""conv2d primitive (kernel, shape rule, jvp, vjp, second derivative, batching) and ops.conv pools.

Oracles: naive loop implementations, central finite differences in float64, the inner-product
identity <u, J v> = <J^T u, v>, and loops over examples for batching. Derivative graphs are built
from the primitives' rules by the small graph walkers below (independent of graphad.passes), so
the rules are tested on their own; the derivative graphs are evaluated by the NumPy interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest

from graphad import ops
from graphad.errors import DTypeError, ShapeError
from graphad.frontend.trace import Trace, trace_to_graph
from graphad.ir.core import TensorType
from graphad.ir.interpret import interpret
from graphad.ops import conv as C
from prim_cases import conv2d_ref
from graphad.prims import nn as nnp
from graphad.prims._util import materialize_batched, moveaxis_to_front
from graphad.tensor import Tensor

conv2d = nnp.conv2d
F64 = "float64"


# ---------------------------------------------------------------- naive oracles

def naive_conv(x, w, stride, padding, dilation, groups):
    """The loop oracle of tests/prim_cases.py, always in float64."""
    return conv2d_ref(np.asarray(x, np.float64), np.asarray(w, np.float64), stride, padding, dilation, groups)


def naive_pool(x, k, s, p, reduce, fill, dilation=(1, 1), counts=False):
    n, c, h, w = x.shape
    xp = np.full((n, c, h + p[0] + p[1], w + p[2] + p[3]), fill)
    xp[:, :, p[0]:p[0] + h, p[2]:p[2] + w] = x
    real = np.zeros(xp.shape[2:])
    real[p[0]:p[0] + h, p[2]:p[2] + w] = 1
    oh = (xp.shape[2] - (dilation[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (xp.shape[3] - (dilation[1] * (k[1] - 1) + 1)) // s[1] + 1
    y = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for b in range(ow):
            rows = [a * s[0] + i * dilation[0] for i in range(k[0])]
            cols = [b * s[1] + j * dilation[1] for j in range(k[1])]
            win = xp[:, :, rows][:, :, :, cols]
            y[:, :, a, b] = reduce(win.reshape(n, c, -1), axis=-1)
            if counts:
                y[:, :, a, b] *= win[0, 0].size / real[np.ix_(rows, cols)].sum()
    return y


# ---------------------------------------------------------------- configurations

def _config(rng):
    g = int(rng.choice([1, 1, 2]))
    cg, og = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = tuple(int(v) for v in rng.integers(0, 4, size=4))
    h = max(1, dilation[0] * (kh - 1) + 1 - padding[0] - padding[1] + int(rng.integers(0, 5)))
    w = max(1, dilation[1] * (kw - 1) + 1 - padding[2] - padding[3] + int(rng.integers(0, 5)))
    n = int(rng.integers(1, 3))
    return dict(x=(n, g * cg, h, w), w=(g * og, cg, kh, kw),
                attrs=dict(stride=stride, padding=padding, dilation=dilation, groups=g))


FIXED = [
    # plain, untouched rows (H - K not divisible by stride), padding beyond the dilated kernel
    dict(x=(2, 3, 6, 5), w=(4, 3, 3, 2), attrs=dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)),
    dict(x=(2, 2, 7, 6), w=(3, 2, 2, 3), attrs=dict(stride=(3, 2), padding=(0, 0, 1, 0), dilation=(1, 1), groups=1)),
    dict(x=(1, 2, 5, 5), w=(2, 2, 1, 2), attrs=dict(stride=(2, 3), padding=(3, 1, 0, 4), dilation=(1, 2), groups=1)),
    dict(x=(2, 4, 9, 8), w=(6, 2, 3, 3), attrs=dict(stride=(2, 2), padding=(1, 2, 2, 0), dilation=(2, 1), groups=2)),
    dict(x=(1, 3, 4, 4), w=(3, 1, 2, 2), attrs=dict(stride=(1, 2), padding=(1, 1, 1, 1), dilation=(3, 1), groups=3)),
]
_rng = np.random.default_rng(1234)
RANDOM = [_config(_rng) for _ in range(14)]
CONFIGS = FIXED + RANDOM


def _ids(cfgs):
    return [f"{c['x']}*{c['w']}-s{c['attrs']['stride']}p{c['attrs']['padding']}d{c['attrs']['dilation']}"
            f"g{c['attrs']['groups']}" for c in cfgs]


def _arrays(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(cfg["x"]), rng.standard_normal(cfg["w"])


def _out_shape(cfg):
    return conv2d.infer([TensorType(cfg["x"], F64), TensorType(cfg["w"], F64)], cfg["attrs"])[0].shape


# ---------------------------------------------------------------- graph walkers over the rules

def _replay(n, env):
    outs = n.prim.bind(*[env[v] for v in n.inputs], **n.attrs)
    outs = list(outs) if n.prim.num_outputs > 1 else [outs]
    for v, o in zip(n.outputs, outs):
        env[v] = o
    return outs


def reverse(graph):
    """graph(inputs) -> outputs  ==>  graph(inputs, cts) -> one gradient per input (vjp rules)."""
    with Trace("vjp") as tr:
        env = {v: tr.new_arg(v.type) for v in graph.inputs}
        cts_in = [tr.new_arg(v.type) for v in graph.outputs]
        for n in graph.nodes:
            _replay(n, env)
        ct = {}

        def acc(v, c):
            ct[v] = c if v not in ct else ops.add(ct[v], c)

        for v, c in zip(graph.outputs, cts_in):
            acc(v, c)
        for n in reversed(graph.nodes):
            cs = [ct.get(v) for v in n.outputs]
            if not n.inputs or all(c is None for c in cs):
                continue
            assert n.prim.vjp is not None, n.prim.name
            gs = n.prim.vjp(cs, [env[v] for v in n.inputs], [env[v] for v in n.outputs], **n.attrs)
            for i, (v, gr) in enumerate(zip(n.inputs, gs)):
                if gr is not None and i not in n.prim.nondiff_inputs and v.type.dtype.is_float:
                    assert gr.shape == v.type.shape, (n.prim.name, gr.shape, v.type.shape)
                    acc(v, gr)
        outs = [ct[v] if v in ct else ops.zeros_like(env[v]) for v in graph.inputs]
    return tr.builder.finish([o.value for o in outs])


def vmap(graph, batched, size):
    """Batch `graph` over axis 0 of the inputs flagged in `batched` (batch rules); outputs batched at 0."""
    with Trace("vmap") as tr:
        env, dims = {}, {}
        for v, b in zip(graph.inputs, batched):
            env[v] = tr.new_arg(TensorType((size,) + v.type.shape, v.type.dtype) if b else v.type)
            dims[v] = 0 if b else None
        for n in graph.nodes:
            ds = [dims[v] for v in n.inputs]
            if all(d is None for d in ds):
                outs, od = _replay(n, env), [None] * len(n.outputs)
            else:
                outs, od = n.prim.batch([env[v] for v in n.inputs], ds, **n.attrs)
            for v, o, d in zip(n.outputs, outs, od):
                env[v], dims[v] = o, d
        outs = [materialize_batched(env[v], dims[v], size) for v in graph.outputs]
    return tr.builder.finish([o.value for o in outs])


def rule_graph(fn, types):
    """Trace fn(*tracers) -> list of tracers inside a raw Trace (rules may be called in fn)."""
    with Trace("rules") as tr:
        args = [tr.new_arg(TensorType(s, F64)) for s in types]
        outs = fn(*args)
    return tr.builder.finish([o.value for o in outs])


def conv_graph(cfg):
    return rule_graph(lambda x, w: [conv2d.bind(x, w, **cfg["attrs"])], [cfg["x"], cfg["w"]])


def conv_vjp_graph(cfg):
    """(x, w, ct) -> (gx, gw) from the conv2d vjp rule."""
    def fn(x, w, ct):
        y = conv2d.bind(x, w, **cfg["attrs"])
        return conv2d.vjp([ct], [x, w], [y], **cfg["attrs"])
    return rule_graph(fn, [cfg["x"], cfg["w"], _out_shape(cfg)])


def run(graph, *arrays):
    return interpret(graph, [np.asarray(a, np.float64) for a in arrays])


def vdot(a, b):
    return float(sum(np.vdot(x, y) for x, y in zip(a, b)))


# ---------------------------------------------------------------- reference kernel and shape rule

@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids(CONFIGS))
def test_kernel_matches_naive_loops(cfg):
    x, w = _arrays(cfg)
    y = conv2d.impl(x, w, **cfg["attrs"])
    assert y.shape == _out_shape(cfg)
    np.testing.assert_allclose(y, naive_conv(x, w, **cfg["attrs"]), rtol=1e-12, atol=1e-12)


def test_kernel_float32_and_eager_bind():
    cfg = FIXED[3]
    x, w = _arrays(cfg)
    y = conv2d.bind(Tensor(x.astype(np.float32)), Tensor(w.astype(np.float32)), **cfg["attrs"])
    assert y.dtype.name == "float32"
    np.testing.assert_allclose(y.asnumpy(), naive_conv(x, w, **cfg["attrs"]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xs, ws, attrs, err, match", [
    ((1, 3, 5, 5), (2, 2, 3, 3), {}, ShapeError, "channel mismatch: input has 3 channels"),
    ((1, 4, 5, 5), (3, 2, 3, 3), dict(groups=2), ShapeError, "output channels 3 are not divisible by groups=2"),
    ((1, 1, 3, 5), (1, 1, 4, 1), {}, ShapeError, r"kernel H extent 4 .* larger than the padded input H 3"),
    ((1, 1, 3, 5), (1, 1, 3, 3), dict(dilation=(1, 3)), ShapeError, r"kernel W extent 7 .*dilation 3"),
    ((1, 5, 5), (1, 1, 3, 3), {}, ShapeError, r"input must be 4-D \(N, C, H, W\)"),
    ((1, 1, 5, 5), (1, 1, 3), {}, ShapeError, "weight must be 4-D"),
    ((1, 1, 5, 5), (1, 1, 3, 3), dict(stride=(0, 1)), ShapeError, "stride entries must be >= 1"),
    ((1, 1, 5, 5), (1, 1, 3, 3), dict(padding=(1, 1)), ShapeError, "padding .* must be a tuple of 4 ints"),
])
def test_shape_errors(xs, ws, attrs, err, match):
    a = dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    a.update(attrs)
    with pytest.raises(err, match=match) as info:
        conv2d.infer([TensorType(xs, F64), TensorType(ws, F64)], a)
    assert str(info.value).startswith("conv2d(")


def test_dtype_errors():
    a = dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    with pytest.raises(DTypeError, match="floating-point operands, got input int32"):
        conv2d.infer([TensorType((1, 1, 3, 3), "int32"), TensorType((1, 1, 2, 2), "int32")], a)
    with pytest.raises(DTypeError, match="dtypes differ"):
        conv2d.infer([TensorType((1, 1, 3, 3), "float32"), TensorType((1, 1, 2, 2), F64)], a)


# ---------------------------------------------------------------- jvp / vjp

@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids(CONFIGS))
def test_jvp_vs_finite_differences_and_vjp_inner_product(cfg):
    attrs = cfg["attrs"]
    oshape = _out_shape(cfg)
    x, w = _arrays(cfg, 1)
    vx, vw = _arrays(cfg, 2)
    u = np.random.default_rng(3).standard_normal(oshape)

    def jvp_fn(x, w, tx, tw):
        y = conv2d.bind(x, w, **attrs)
        return [y, conv2d.jvp([x, w], [tx, tw], [y], **attrs)[0]]
    gj = rule_graph(jvp_fn, [cfg["x"], cfg["w"], cfg["x"], cfg["w"]])
    y, ty = run(gj, x, w, vx, vw)
    eps = 1e-6
    fd = (conv2d.impl(x + eps * vx, w + eps * vw, **attrs) - conv2d.impl(x - eps * vx, w - eps * vw, **attrs)) / (2 * eps)
    np.testing.assert_allclose(ty, fd, rtol=1e-6, atol=1e-6)

    # one tangent a symbolic zero
    gx_only = rule_graph(lambda x, w, tx: [conv2d.jvp([x, w], [tx, None], [None], **attrs)[0]],
                         [cfg["x"], cfg["w"], cfg["x"]])
    np.testing.assert_allclose(run(gx_only, x, w, vx)[0], conv2d.impl(vx, w, **attrs), rtol=1e-12, atol=1e-12)

    gx, gw = run(conv_vjp_graph(cfg), x, w, u)
    assert gx.shape == x.shape and gw.shape == w.shape
    lhs = float(np.vdot(u, ty))
    rhs = vdot([gx, gw], [vx, vw])
    assert abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs))


@pytest.mark.parametrize("cfg", FIXED[:3], ids=_ids(FIXED[:3]))
def test_vjp_matches_elementwise_finite_differences(cfg):
    attrs = cfg["attrs"]
    x, w = _arrays(cfg, 4)
    u = np.random.default_rng(5).standard_normal(_out_shape(cfg))
    gx, gw = run(conv_vjp_graph(cfg), x, w, u)
    eps = 1e-6

    def fd(arr, f):
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            e = np.zeros_like(arr)
            e[idx] = eps
            g[idx] = (np.vdot(u, f(arr + e)) - np.vdot(u, f(arr - e))) / (2 * eps)
        return g
    np.testing.assert_allclose(gx, fd(x, lambda a: conv2d.impl(a, w, **attrs)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd(w, lambda a: conv2d.impl(x, a, **attrs)), rtol=1e-6, atol=1e-7)


def test_rows_never_read_get_zero_gradient():
    # H = 7, K = 2, stride 3: windows read rows 0,1 and 3,4; rows 2, 5, 6 are never read
    attrs = dict(stride=(3, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    cfg = dict(x=(1, 1, 7, 3), w=(1, 1, 2, 1), attrs=attrs)
    x, w = _arrays(cfg)
    gx, _ = run(conv_vjp_graph(cfg), x, w, np.ones(_out_shape(cfg)))
    assert np.all(gx[0, 0, [2, 5, 6]] == 0) and np.all(gx[0, 0, [0, 1, 3, 4]] != 0)


def test_vjp_graph_is_made_of_primitives_only():
    g = conv_vjp_graph(FIXED[3])
    names = {n.prim.name for n in g.nodes}
    assert names <= {"conv2d", "pad", "flip", "transpose", "reshape", "slice"}, names
    assert all(n.prim.vjp is not None for n in g.nodes)


@pytest.mark.parametrize("cfg", [FIXED[1], FIXED[2], FIXED[3], FIXED[4]], ids=_ids([FIXED[1], FIXED[2], FIXED[3], FIXED[4]]))
def test_second_derivative_vjp_of_vjp_graph(cfg):
    """Reverse mode over the vjp graph (its conv2d nodes carry swapped stride/dilation, crops, flips)."""
    g1 = conv_vjp_graph(cfg)
    g2 = reverse(g1)
    oshape = _out_shape(cfg)
    rng = np.random.default_rng(7)
    p = [rng.standard_normal(s) for s in (cfg["x"], cfg["w"], oshape)]
    v = [rng.standard_normal(s) for s in (cfg["x"], cfg["w"], oshape)]
    u = [rng.standard_normal(s) for s in (cfg["x"], cfg["w"])]
    eps = 1e-5
    plus = run(g1, *[a + eps * b for a, b in zip(p, v)])
    minus = run(g1, *[a - eps * b for a, b in zip(p, v)])
    lhs = vdot(u, [(a - b) / (2 * eps) for a, b in zip(plus, minus)])
    grads = run(g2, *p, *u)
    assert [gr.shape for gr in grads] == [a.shape for a in p]
    rhs = vdot(grads, v)
    assert abs(lhs - rhs) <= 1e-7 * (1 + abs(lhs))
    # third order: the vjp-of-vjp graph is itself differentiable
    g3 = reverse(g2)
    assert len(g3.outputs) == len(g2.inputs)


# ---------------------------------------------------------------- batching

BATCH_CFGS = [FIXED[1], FIXED[3], FIXED[4], RANDOM[0], RANDOM[5]]


@pytest.mark.parametrize("cfg", BATCH_CFGS, ids=_ids(BATCH_CFGS))
@pytest.mark.parametrize("dx, dw", [(0, None), (2, None), (None, 0), (None, 3), (0, 0), (4, 1)])
def test_batch_rule_vs_loop(cfg, dx, dw):
    b = 3
    attrs = cfg["attrs"]
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((b,) + cfg["x"]) if dx is not None else rng.standard_normal(cfg["x"])
    ws = rng.standard_normal((b,) + cfg["w"]) if dw is not None else rng.standard_normal(cfg["w"])
    xa = np.moveaxis(xs, 0, dx) if dx is not None else xs
    wa = np.moveaxis(ws, 0, dw) if dw is not None else ws

    def fn(x, w):
        outs, od = conv2d.batch([x, w], [dx, dw], **attrs)
        return [moveaxis_to_front(outs[0], od[0])]
    with Trace("batch") as tr:
        ta = tr.new_arg(TensorType(xa.shape, F64))
        tb = tr.new_arg(TensorType(wa.shape, F64))
        out = fn(ta, tb)
    got = interpret(tr.builder.finish([o.value for o in out]), [xa, wa])[0]
    want = np.stack([conv2d.impl(xs[i] if dx is not None else xs, ws[i] if dw is not None else ws, **attrs)
                     for i in range(b)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", [FIXED[2], FIXED[3]], ids=_ids([FIXED[2], FIXED[3]]))
def test_batched_vjp_graph_vs_loop(cfg):
    """vmap of the vjp graph: batch rules of conv2d with swapped attrs, pad, flip, slice..."""
    g1 = conv_vjp_graph(cfg)
    b = 2
    rng = np.random.default_rng(13)
    shapes = [cfg["x"], cfg["w"], _out_shape(cfg)]
    for batched in ([True, False, True], [False, True, True], [True, True, False]):
        gb = vmap(g1, batched, b)
        args = [rng.standard_normal((b,) + s) if f else rng.standard_normal(s) for s, f in zip(shapes, batched)]
        got = run(gb, *args)
        for i in range(b):
            want = run(g1, *[a[i] if f else a for a, f in zip(args, batched)])
            for gi, wi in zip(got, want):
                np.testing.assert_allclose(gi[i], wi, rtol=1e-11, atol=1e-11)


# ---------------------------------------------------------------- ops.conv2d

def test_ops_conv2d_arguments():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    bias = rng.standard_normal(4)
    y = C.conv2d(Tensor(x), Tensor(w), Tensor(bias), stride=2, padding=(1, 0), dilation=(1, 2))
    want = naive_conv(x, w, (2, 2), (1, 1, 0, 0), (1, 2), 1) + bias[None, :, None, None]
    np.testing.assert_allclose(y.asnumpy(), want, rtol=1e-12, atol=1e-12)
    y4 = C.conv2d(Tensor(x), Tensor(w), padding=((2, 0), (1, 3)))
    np.testing.assert_allclose(y4.asnumpy(), naive_conv(x, w, (1, 1), (2, 0, 1, 3), (1, 1), 1), atol=1e-12)
    y3 = C.conv2d(Tensor(x[0]), Tensor(w), padding=1)  # unbatched CHW
    np.testing.assert_allclose(y3.asnumpy(), naive_conv(x[:1], w, (1, 1), (1,) * 4, (1, 1), 1)[0], atol=1e-12)
    assert C.conv2d(Tensor(x), Tensor(w), padding="VALID").shape == (2, 4, 5, 5)
    for s in (1, 2, 3):
        for d in (1, 2):
            ys = C.conv2d(Tensor(x), Tensor(w), stride=s, padding="same", dilation=d)
            assert ys.shape == (2, 4, -(-7 // s), -(-6 // s))
    yi = C.conv2d(Tensor(np.ones((1, 1, 3, 3), np.int32)), Tensor(np.ones((1, 1, 2, 2), np.int32)))
    assert yi.dtype.name == "float32" and np.all(yi.asnumpy() == 4)
    yg = C.conv2d(Tensor(x[:, :2]), Tensor(w[:, :1]), groups=2)
    np.testing.assert_allclose(yg.asnumpy(), naive_conv(x[:, :2], w[:, :1], (1, 1), (0,) * 4, (1, 1), 2), atol=1e-12)


def test_ops_conv2d_errors():
    x, w = Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((2, 3, 3, 3)))
    with pytest.raises(ShapeError, match="padding string must be 'same' or 'valid'"):
        C.conv2d(x, w, padding="full")
    with pytest.raises(ShapeError, match="padding must be non-negative"):
        C.conv2d(x, w, padding=-1)
    with pytest.raises(ShapeError, match=r"bias must have shape \(2,\)"):
        C.conv2d(x, w, Tensor(np.zeros(3)))
    with pytest.raises(ShapeError, match="stride must be an int or a pair"):
        C.conv2d(x, w, stride=(1, 2, 3))
    with pytest.raises(ShapeError, match="channel mismatch"):
        C.conv2d(x, Tensor(np.zeros((2, 2, 3, 3))))


def test_ops_conv2d_traced_and_differentiated():
    """ops.conv2d with bias inside a traced function, gradient by the reverse walker vs FD."""
    rng = np.random.default_rng(19)
    x, w, b = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)

    def f(x, w, b):
        return ops.tanh(C.conv2d(x, w, b, stride=2, padding="same"))
    g, _, caps = trace_to_graph(f, [TensorType(a.shape, F64) for a in (x, w, b)])
    assert not caps
    y = run(g, x, w, b)[0]
    u = rng.standard_normal(y.shape)
    grads = run(reverse(g), x, w, b, u)
    v = [rng.standard_normal(a.shape) for a in (x, w, b)]
    eps = 1e-6
    fd = (run(g, *[a + eps * d for a, d in zip((x, w, b), v)])[0] -
          run(g, *[a - eps * d for a, d in zip((x, w, b), v)])[0]) / (2 * eps)
    assert abs(np.vdot(u, fd) - vdot(grads, v)) < 1e-7


# ---------------------------------------------------------------- pools

POOLS = [  # kernel, stride, padding (4-tuple), dilation, input shape
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (2, 3, 6, 7)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 2, 7, 6)),
    ((3, 2), (1, 3), (1, 0, 1, 1), (1, 1), (2, 1, 5, 8)),
    ((2, 3), (3, 2), (1, 1, 0, 1), (2, 1), (1, 2, 8, 7)),
]


@pytest.mark.parametrize("k, s, p, d, shape", POOLS)
def test_max_pool_values_and_gradient(k, s, p, d, shape):
    rng = np.random.default_rng(23)
    x = rng.standard_normal(shape)
    y = C.max_pool2d(Tensor(x), k, s, p, dilation=d).asnumpy()
    np.testing.assert_array_equal(y, naive_pool(x, k, s, p, np.max, -np.inf, d))
    g, _, _ = trace_to_graph(lambda t: C.max_pool2d(t, k, s, p, dilation=d), [TensorType(shape, F64)])
    u = rng.standard_normal(y.shape)
    (gx,) = run(reverse(g), x, u)
    eps = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        fd[idx] = (np.vdot(u, naive_pool(x + e, k, s, p, np.max, -np.inf, d)) -
                   np.vdot(u, naive_pool(x - e, k, s, p, np.max, -np.inf, d))) / (2 * eps)
    np.testing.assert_allclose(gx, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("k, s, p, d, shape", [c for c in POOLS if c[3] == (1, 1)])
def test_avg_pool_values_and_gradient(k, s, p, d, shape, include):
    rng = np.random.default_rng(29)
    x = rng.standard_normal(shape)
    y = C.avg_pool2d(Tensor(x), k, s, p, count_include_pad=include).asnumpy()
    want = naive_pool(x, k, s, p, np.mean, 0.0, counts=not include)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    g, _, _ = trace_to_graph(lambda t: C.avg_pool2d(t, k, s, p, count_include_pad=include), [TensorType(shape, F64)])
    u = rng.standard_normal(y.shape)
    v = rng.standard_normal(shape)
    (gx,) = run(reverse(g), x, u)
    # avg_pool is linear: <u, pool(v)> = <pool^T u, v>
    assert abs(np.vdot(u, naive_pool(v, k, s, p, np.mean, 0.0, counts=not include)) - np.vdot(gx, v)) < 1e-10


def test_pool_defaults_unbatched_and_int_inputs():
    x = np.arange(2 * 4 * 6, dtype=np.float64).reshape(2, 4, 6)
    y = C.max_pool2d(Tensor(x), 2).asnumpy()        # CHW, stride = kernel
    np.testing.assert_array_equal(y, naive_pool(x[None], (2, 2), (2, 2), (0,) * 4, np.max, -np.inf)[0])
    yi = C.max_pool2d(Tensor(x.astype(np.int32)[None]), 3, 1, 1)
    assert yi.dtype.name == "int32"
    np.testing.assert_array_equal(yi.asnumpy(), naive_pool(x[None], (3, 3), (1, 1), (1,) * 4, np.max, -np.inf))
    ya = C.avg_pool2d(Tensor(x.astype(np.int32)[None]), (2, 3), divisor_override=2)
    assert ya.dtype.name == "float32"
    np.testing.assert_allclose(ya.asnumpy(), naive_pool(x[None], (2, 3), (2, 3), (0,) * 4, np.sum, 0.0) / 2)
    with pytest.raises(ShapeError, match="exceeds half the"):
        C.max_pool2d(Tensor(x), 2, padding=2)
    with pytest.raises(ShapeError, match="does not fit the padded input"):
        C.avg_pool2d(Tensor(x), (5, 1))


def test_pools_batched_vs_loop():
    rng = np.random.default_rng(31)
    xs = rng.standard_normal((3, 2, 2, 7, 6))
    for fn in (lambda t: C.max_pool2d(t, 3, 2, 1), lambda t: C.avg_pool2d(t, 3, 2, 1, count_include_pad=False)):
        g, _, _ = trace_to_graph(fn, [TensorType(xs.shape[1:], F64)])
        got = run(vmap(g, [True], 3), xs)[0]
        for i in range(3):
            np.testing.assert_allclose(got[i], run(g, xs[i])[0], rtol=1e-12, atol=1e-12)
        # and the batched gradient (vmap of the reverse graph)
        us = rng.standard_normal((3,) + got.shape[1:])
        gg = run(vmap(reverse(g), [True, True], 3), xs, us)[0]
        for i in range(3):
            np.testing.assert_allclose(gg[i], run(reverse(g), xs[i], us[i])[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- through the public transformations

@pytest.fixture
def numpy_backend():
    from graphad.frontend.function import get_backend, set_backend
    prev = get_backend()
    set_backend("numpy")
    yield
    set_backend(prev)


def test_api_grad_grad_and_vmap(numpy_backend):
    import graphad as ga
    rng = np.random.default_rng(37)
    x, w = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((3, 2, 3, 2))
    kw = dict(stride=2, padding=(1, 0, 2, 1), dilation=(2, 1))

    def f(x, w):
        return ops.sum(ops.tanh(C.conv2d(x, w, **kw)))

    def f_np(x, w):
        return float(np.sum(np.tanh(naive_conv(x, w, (2, 2), (1, 0, 2, 1), (2, 1), 1))))
    gx, gw = (t.asnumpy() for t in ga.grad(f, grad_position=(0, 1))(Tensor(x), Tensor(w)))
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    eps = 1e-6
    fd = (f_np(x + eps * vx, w + eps * vw) - f_np(x - eps * vx, w - eps * vw)) / (2 * eps)
    assert abs(fd - vdot([gx, gw], [vx, vw])) < 1e-7

    # second order: d/dx <grad_x f, v> against central differences of grad_x f
    def gdot(x, w):
        return ops.sum(ops.mul(ga.grad(f)(x, w), Tensor(vx)))
    hx, hw = (t.asnumpy() for t in ga.grad(gdot, grad_position=(0, 1))(Tensor(x), Tensor(w)))
    gfx = ga.grad(f, grad_position=(0, 1))
    ups = [t.asnumpy() for t in gfx(Tensor(x + eps * vx), Tensor(w + eps * vw))]
    dns = [t.asnumpy() for t in gfx(Tensor(x - eps * vx), Tensor(w - eps * vw))]
    # symmetric Hessian: <H (vx, vw), (vx, 0)> both ways
    fd2 = float(np.vdot((ups[0] - dns[0]) / (2 * eps), vx))
    assert abs(fd2 - vdot([hx, hw], [vx, vw])) < 1e-5 * (1 + abs(fd2))

    # vmap of the gradient over both operands vs a loop
    xs, ws = rng.standard_normal((3,) + x.shape), rng.standard_normal((3,) + w.shape)
    bx, bw = ga.vmap(ga.grad(f, grad_position=(0, 1)))(Tensor(xs), Tensor(ws))
    for i in range(3):
        lx, lw = gfx(Tensor(xs[i]), Tensor(ws[i]))
        np.testing.assert_allclose(bx.asnumpy()[i], lx.asnumpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bw.asnumpy()[i], lw.asnumpy(), rtol=1e-10, atol=1e-12)


def test_textual_ir_round_trip_of_conv_vjp_graph():
    from graphad.ir.parser import parse_graph
    from graphad.ir.printer import print_graph
    from graphad.ir.verify import verify
    cfg = FIXED[3]
    g = conv_vjp_graph(cfg)
    text = print_graph(g)
    g2 = parse_graph(text)
    verify(g2)
    assert print_graph(g2) == text
    args = [np.random.default_rng(41).standard_normal(s) for s in (cfg["x"], cfg["w"], _out_shape(cfg))]
    for a, b in zip(run(g, *args), run(g2, *args)):
        np.testing.assert_array_equal(a, b)
