"""Calling conventions of the transformations (issue 17): keyword arguments, Python numbers that
stay Python values, hessian(has_aux=True), stop_gradient on a pytree, and the cache keys that
must tell 0, 0.0, -0.0, False and True apart.

The rules (docs/user_guide.md, "Calling conventions"):
* grad, value_and_grad, jacrev, jacfwd, hessian: keyword arguments are passed through and never
  differentiated (JAX's rule); their tensors are graph inputs (a new value runs the same compiled
  function), their other leaves (Python numbers, strings) reach the function as they are and are
  part of the signature. So are the non-array leaves of the positions not differentiated.
* vmap: keyword arguments' tensors are mapped along axis 0 (as JAX); their Python values, and the
  positional Python values whose in_axes is None, reach the function as they are.
* jit: keyword arguments are traced like positional ones (a Python number becomes a weakly typed tensor, as in
  JAX) unless named in static_argnames.

Oracles: central finite differences in float64, NumPy float64 formulas, and a Python loop over the
batch for vmap; none of them uses graphad's derivatives.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import GraphadError, TransformError


@pytest.fixture(params=["numpy", pytest.param("tvm", marks=pytest.mark.tvm)])
def backend(request):
    """The reference interpreter (the session's default) and compiled code (TVM)."""
    gd.set_backend(request.param)
    yield request.param
    gd.set_backend("numpy")


def _t(a):
    return gd.Tensor(np.asarray(a, np.float64))


def _fd(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar NumPy function f at x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


X = np.array([0.3, -1.2, 0.8])
Y = np.array([1.5, 0.4, -0.7])


def loss(x, y, scale=1.0, mode="sum"):
    r = ops.sin(x * y) * scale
    return ops.sum(r) if mode == "sum" else ops.mean(r)


def np_loss(x, y, scale=1.0, mode="sum"):
    r = np.sin(x * y) * scale
    return r.sum() if mode == "sum" else r.mean()


# ---------------------------------------------------------------- keyword arguments


def test_grad_passes_keywords_through_without_differentiating_them(backend):
    x, y = _t(X), _t(Y)
    g = gd.grad(loss)(x, y=y, scale=2.5, mode="mean")
    np.testing.assert_allclose(g.asnumpy(), _fd(lambda a: np_loss(a, Y, 2.5, "mean"), X), rtol=1e-7)
    # a tensor keyword is a graph input, not a constant: a new value gives the new gradient
    g2 = gd.grad(loss)(x, y=_t(2 * Y), scale=2.5, mode="mean")
    np.testing.assert_allclose(g2.asnumpy(), _fd(lambda a: np_loss(a, 2 * Y, 2.5, "mean"), X), rtol=1e-7)
    # grad_position=(0, 1): both positional arguments; the keyword still is not differentiated
    gx, gy = gd.grad(loss, grad_position=(0, 1))(x, y, scale=_t(3.0))
    np.testing.assert_allclose(gx.asnumpy(), _fd(lambda a: np_loss(a, Y, 3.0), X), rtol=1e-7)
    np.testing.assert_allclose(gy.asnumpy(), _fd(lambda b: np_loss(X, b, 3.0), Y), rtol=1e-7)


def test_value_and_grad_jacobians_and_hessian_take_keywords(backend):
    x, y = _t(X), _t(Y)
    v, g = gd.value_and_grad(loss)(x, y, scale=2.0)
    assert abs(float(v.asnumpy()) - np_loss(X, Y, 2.0)) < 1e-12
    np.testing.assert_allclose(g.asnumpy(), _fd(lambda a: np_loss(a, Y, 2.0), X), rtol=1e-7)

    def vec(x, y, power=2):
        return ops.sin(x) ** power * y

    jr = gd.jacrev(vec)(x, y=y, power=3)
    jf = gd.jacfwd(vec)(x, y=y, power=3)
    want = np.diag(3 * np.sin(X) ** 2 * np.cos(X) * Y)
    np.testing.assert_allclose(jr.asnumpy(), want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(jf.asnumpy(), want, rtol=1e-10, atol=1e-14)
    h = gd.hessian(loss)(x, y=y, scale=2.0)
    np.testing.assert_allclose(h.asnumpy(), np.diag(-2.0 * np.sin(X * Y) * Y ** 2), rtol=1e-10, atol=1e-14)


def test_grad_and_value_and_make_graph_take_keywords():
    x, y = _t(X), _t(Y)
    g, v = gd.grad_and_value(loss)(x, y, scale=2.0)
    assert abs(float(v.asnumpy()) - np_loss(X, Y, 2.0)) < 1e-12
    graph = gd.make_graph(loss)(x, y=y, mode="mean")
    assert [v.name for v in graph.inputs][:2] == ["x", "y"]


def test_python_values_reach_the_function_as_python_values():
    seen = []

    def f(x, n, *, k=1, label=""):
        seen.append((type(n), type(k), label))
        y = x
        for _ in range(n):  # needs a Python int
            y = ops.sin(y) * k
        return ops.sum(y)

    x = _t(X)
    g = gd.grad(f)(x, 3, k=2, label="three")
    assert seen[-1] == (int, int, "three")

    def np_f(a):
        y = a
        for _ in range(3):
            y = np.sin(y) * 2
        return y.sum()
    np.testing.assert_allclose(g.asnumpy(), _fd(np_f, X), rtol=1e-7)
    # the differentiated position of a Python float is a tensor, as before
    assert float(gd.grad(lambda a, n: a ** n)(2.0, 3).asnumpy()) == 12.0


def test_static_python_values_are_part_of_the_signature():
    traces = []

    def f(x, c):
        traces.append(repr(c))
        tag = {"0": 1.0, "0.0": 2.0, "-0.0": 3.0, "False": 4.0, "True": 5.0, "nan": 6.0}[repr(c)]
        return ops.sum(x) * tag

    x = _t([1.0, 2.0])
    g = gd.grad(f)
    values = [0, 0.0, -0.0, False, True, math.nan]
    got = [float(g(x, c).asnumpy()[0]) for c in values]
    assert got == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    n = len(traces)
    # a second round finds every staged graph (NaN included: it is one signature)
    assert [float(g(x, c).asnumpy()[0]) for c in values] == got
    assert float(g(x, float("nan")).asnumpy()[0]) == 6.0
    assert len(traces) == n
    # the same for keywords, for vmap's unmapped values and for jit's static_argnames
    kw = gd.grad(lambda x, *, c: f(x, c))
    assert [float(kw(x, c=c).asnumpy()[0]) for c in values] == got
    vm = gd.vmap(f, in_axes=(0, None))
    assert [float(vm(gd.Tensor(np.ones((2, 2))), c).asnumpy()[0]) for c in values] == \
        [2 * v for v in got]
    jf = gd.jit(f, static_argnames="c")
    assert [float(jf(x, c=c).asnumpy()) for c in values] == [3 * v for v in got]


def test_tensor_keywords_do_not_retrace():
    traces = []

    def f(x, *, w):
        traces.append(1)
        return ops.sum(x * w)

    g = gd.grad(f)
    x = _t(X)
    for k in range(3):
        np.testing.assert_allclose(g(x, w=_t(Y * k)).asnumpy(), Y * k)
    assert len(traces) == 1


# ---------------------------------------------------------------- vmap


def test_vmap_maps_tensor_keywords_along_axis_0_and_passes_python_values(backend):
    rng = np.random.default_rng(0)
    xs, ws = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))

    def f(x, *, w, power=1):
        return ops.sum(x * w) ** power

    got = gd.vmap(f)(_t(xs), w=_t(ws), power=2).asnumpy()
    np.testing.assert_allclose(got, [(a * b).sum() ** 2 for a, b in zip(xs, ws)], rtol=1e-12)


def test_vmap_in_axes_none_keeps_python_ints(backend):
    x = gd.Tensor(np.arange(24.0).reshape(4, 6))
    out = gd.vmap(lambda row, n: ops.reshape(row, (n, -1)), in_axes=(0, None))(x, 2)
    assert out.shape == (4, 2, 3)
    np.testing.assert_array_equal(out.asnumpy(), np.arange(24.0).reshape(4, 2, 3))
    # per-example gradients with a Python int exponent, nested: vmap(grad)
    xs = np.array([[0.5, 1.0], [2.0, -1.0], [1.5, 0.25]])
    pe = gd.vmap(gd.grad(lambda x, n: ops.sum(x ** n)), in_axes=(0, None))(_t(xs), 3)
    np.testing.assert_allclose(pe.asnumpy(), 3 * xs ** 2, rtol=1e-12)


def test_vmap_errors_name_the_function_and_the_argument():
    x = _t(np.ones((2, 3)))

    def scale(x, n):
        return x * n

    with pytest.raises(TransformError, match=r"vmap\(scale\): argument 1 \('n'\) is an int .*in_axes None"):
        gd.vmap(scale)(x, 2)
    with pytest.raises(TransformError, match=r"keyword arguments \['w'\] have no in_axes entries"):
        gd.vmap(lambda x, w=None: x, in_axes=(0, None))(x, w=x)


# ---------------------------------------------------------------- jit


def test_jit_traces_keywords_and_static_argnames():
    traces = []

    def f(x, y, *, scale, mode="sum"):
        traces.append(mode)
        r = x * y * scale
        return ops.sum(r) if mode == "sum" else ops.mean(r)

    jf = gd.jit(f, static_argnames=("mode",))
    x, y = _t(X), _t(Y)
    assert abs(float(jf(x, y, scale=2.0).asnumpy()) - 2 * (X * Y).sum()) < 1e-12
    # scale is traced (a Python float becomes a tensor, as in JAX): a new value, no new trace
    assert abs(float(jf(x, y, scale=3.0).asnumpy()) - 3 * (X * Y).sum()) < 1e-12
    assert traces == ["sum"]
    assert abs(float(jf(x, y, scale=3.0, mode="mean").asnumpy()) - 3 * (X * Y).mean()) < 1e-12
    assert traces == ["sum", "mean"]
    # a parameter named in static_argnames is static when passed positionally too
    jg = gd.jit(lambda x, n: x * n, static_argnames="n")
    assert jg(x, 2).dtype == x.dtype


def test_jit_errors_name_the_function_and_the_argument():
    def f(x, *, mode):
        return x

    with pytest.raises(GraphadError, match=r"jit\(f\): keyword argument .mode. of type str is not a tensor"):
        gd.jit(f)(_t(X), mode="sum")
    with pytest.raises(GraphadError, match=r"jit\(g\): static keyword argument 'opts' must be hashable"):
        def g(x, opts):
            return x
        gd.jit(g, static_argnames="opts")(_t(X), opts={1, 2})
    with pytest.raises(TransformError, match="static_argnames must be a str"):
        gd.jit(f, static_argnames=(1,))
    with pytest.raises(GraphadError, match=r"jit\(f\): unknown backend 'foo'"):
        gd.jit(f, backend="foo")
    # lists and dicts are static values by content (the message names what is refused: sets)
    h = gd.jit(lambda x, n: x * len(n), static_argnums=1)
    assert h(_t(X), [1, 2]).shape == X.shape and h(_t(X), {"a": 1}).shape == X.shape


def test_compiled_jit_with_keywords(backend):
    def f(x, *, w, k=2):
        return ops.sum(ops.sin(x) * w) * k

    jf = gd.jit(f, static_argnames="k")
    got = jf(_t(X), w=_t(Y), k=3)
    assert abs(float(got.asnumpy()) - 3 * (np.sin(X) * Y).sum()) < 1e-12


# ---------------------------------------------------------------- errors


def test_keyword_arguments_are_never_differentiated():
    with pytest.raises(TransformError, match=r"grad\(loss\): grad_position 1 .*'y' was passed by keyword.*never "
                                             r"differentiated"):
        gd.grad(loss, grad_position=(0, 1))(_t(X), y=_t(Y))


def test_bad_arguments_name_the_function_and_the_argument():
    with pytest.raises(GraphadError, match=r"grad\(loss\): argument 0 \('x'\) of type str is not a tensor"):
        gd.grad(loss)("abc", _t(Y))
    with pytest.raises(GraphadError, match=r"grad\(loss\): keyword argument 'mode' is a set.*hashable"):
        gd.grad(loss)(_t(X), _t(Y), mode={"sum"})
    with pytest.raises(GraphadError, match=r"jacrev\(loss\): argument 1 \('y'\) is a set"):
        gd.jacrev(loss)(_t(X), {1})


# ---------------------------------------------------------------- hessian(has_aux), stop_gradient


def test_hessian_has_aux(backend):
    def f(x, y):
        return ops.sum(x ** 3 * y), x * 2.0, {"n": ops.sum(y)}

    h, aux = gd.hessian(f, has_aux=True)(_t(X), _t(Y))
    np.testing.assert_allclose(h.asnumpy(), np.diag(6 * X * Y), rtol=1e-12)
    assert isinstance(aux, tuple) and len(aux) == 2
    np.testing.assert_allclose(aux[0].asnumpy(), 2 * X)
    assert abs(float(aux[1]["n"].asnumpy()) - Y.sum()) < 1e-12
    # the same aux as jacrev(has_aux=True) gives
    _, aux_r = gd.jacrev(f, has_aux=True)(_t(X), _t(Y))
    assert len(aux_r) == 2
    # two positions: a nested tuple of blocks
    (hxx, hxy), (hyx, hyy) = gd.hessian(f, grad_position=(0, 1), has_aux=True)(_t(X), _t(Y))[0]
    np.testing.assert_allclose(hxy.asnumpy(), np.diag(3 * X ** 2), rtol=1e-12)
    np.testing.assert_allclose(hyy.asnumpy(), np.zeros((3, 3)))


def test_stop_gradient_on_a_pytree():
    def f(x, y):
        a, d = gd.stop_gradient((x * 2.0, {"y": y, "none": None}))
        assert set(d) == {"y", "none"} and d["none"] is None
        return ops.sum(a * x) + ops.sum(d["y"] * y) + ops.sum(x * y)

    gx, gy = gd.grad(f, grad_position=(0, 1))(_t(X), _t(Y))
    # only the unstopped uses count: d/dx (2x * x) with 2x stopped = 2x; d/dy (y * y) = y; + the product
    np.testing.assert_allclose(gx.asnumpy(), 2 * X + Y, rtol=1e-12)
    np.testing.assert_allclose(gy.asnumpy(), Y + X, rtol=1e-12)
    out = gd.stop_gradient([_t(X), _t(Y)])
    assert isinstance(out, list) and len(out) == 2


# ---------------------------------------------------------------- nesting


def test_keywords_through_nested_transformations(backend):
    """jit(grad), vmap(grad), grad(vmap) and jacfwd(grad) with keyword arguments, against finite
    differences and a loop over the batch."""
    x, y = _t(X), _t(Y)
    want = _fd(lambda a: np_loss(a, Y, 2.0, "mean"), X)
    np.testing.assert_allclose(gd.jit(gd.grad(loss))(x, y, scale=2.0).asnumpy(),
                               _fd(lambda a: np_loss(a, Y, 2.0), X), rtol=1e-7)
    np.testing.assert_allclose(gd.jit(gd.grad(loss), static_argnames="mode")(x, y, scale=_t(2.0), mode="mean")
                               .asnumpy(), want, rtol=1e-7)
    xs = np.stack([X, 2 * X, -X])
    per = gd.vmap(gd.grad(loss), in_axes=(0, None))(_t(xs), y, mode="mean")
    np.testing.assert_allclose(per.asnumpy(), [_fd(lambda a: np_loss(a, Y, 1.0, "mean"), r) for r in xs], rtol=1e-7)

    def batched_loss(x, *, w):
        return ops.sum(gd.vmap(lambda a, *, w: ops.sum(ops.sin(a * w)))(x, w=w))

    ws = np.stack([Y, Y * 0.5, -Y])
    g = gd.grad(batched_loss)(_t(xs), w=_t(ws))
    np.testing.assert_allclose(g.asnumpy(), np.cos(xs * ws) * ws, rtol=1e-12)
    h = gd.jacfwd(gd.grad(loss))(x, y, scale=3.0)
    np.testing.assert_allclose(h.asnumpy(), np.diag(-3.0 * np.sin(X * Y) * Y ** 2), rtol=1e-10, atol=1e-14)


def test_python_float_at_a_differentiated_position_and_numpy_scalars_stay_tensors():
    seen = []

    def f(x, c):
        seen.append(type(c).__name__)
        return x * c

    # a NumPy scalar is an array: a graph input, not a static value (no retrace for a new value)
    g = gd.grad(f)
    for c in (np.float64(2.0), np.float64(3.0)):
        assert float(g(_t(1.0), c).asnumpy()) == float(c)
    assert seen == ["Tracer"]
    # a Python float where grad differentiates is a tensor (float32, as gd.Tensor(2.0))
    gx, gc = gd.grad(f, grad_position=(0, 1))(2.0, 5.0)
    assert (float(gx.asnumpy()), float(gc.asnumpy())) == (5.0, 2.0) and gx.dtype == gd.float32


def test_creation_takes_the_dtype_positionally():
    """ops.zeros/ops.ones take a shape as torch does (2, 3) or NumPy/MindSpore do ((2, 3), with the
    dtype second and positional); `ops.ones((2, 3), gd.complex64)` was a raw TypeError."""
    from graphad import ops
    for got, shape, dtype in [(ops.ones((2, 3), gd.complex64), (2, 3), "complex64"),
                              (ops.zeros(3, gd.float64), (3,), "float64"),
                              (ops.ones(2, 2, "int32"), (2, 2), "int32"),
                              (ops.zeros(2, 3), (2, 3), "float32"),
                              (ops.ones([4], dtype=gd.float64), (4,), "float64")]:
        assert got.shape == shape and got.dtype.name == dtype


def test_a_python_int_next_to_a_bool_tensor_gives_an_int():
    """bool tensor * 2 was a bool (True * 2 == True: the number truncated); as NumPy and JAX it is
    an integer (graphad's default int64), eagerly and compiled; a float still gives float32."""
    import numpy as np
    b = gd.Tensor(np.array([True, False]))
    for got in (b * 2, gd.jit(lambda b: b * 2)(b)):
        assert got.dtype.name == "int64" and got.asnumpy().tolist() == [2, 0]
    assert (b - 1).asnumpy().tolist() == [0, -1] and (b * 1.5).dtype.name == "float32"
