"""The functional API of shared/API.md: grad/value_and_grad/vjp/jvp/jacrev/jacfwd/hessian/vmap behaviours and errors."""
import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import GraphadError, TransformError


def T(a, dtype=gd.float64):
    return gd.Tensor(np.asarray(a, dtype=np.float64), dtype)


rng = np.random.default_rng(0)


def test_grad_positions_int_tuple_and_one_tuple():
    f = lambda x, y: ops.sum(x * ops.sin(y))  # noqa: E731
    x, y = T(rng.normal(size=3)), T(rng.normal(size=3))
    gx = gd.grad(f)(x, y)
    np.testing.assert_allclose(gx.asnumpy(), np.sin(y.asnumpy()))
    (gy,) = gd.grad(f, grad_position=(1,))(x, y)
    np.testing.assert_allclose(gy.asnumpy(), x.asnumpy() * np.cos(y.asnumpy()))
    gx2, gy2 = gd.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx2.asnumpy(), gx.asnumpy())
    np.testing.assert_allclose(gy2.asnumpy(), gy.asnumpy())


def test_both_spellings_of_an_option_are_refused_even_at_the_default_value():
    """`grad(f, 0, argnums=1)` names the positions twice: refused, as `grad(f, 1, argnums=1)` is (an
    explicit 0 looked like the default, and argnums was used silently: a torch.func trial). The
    default itself is a plain 0 (help() shows `grad_position=0`)."""
    import inspect
    f = lambda x, y: ops.sum(x * y)  # noqa: E731
    x, y = T([1.0, 2.0]), T([3.0, 4.0])
    for make in (lambda: gd.grad(f, 0, argnums=1), lambda: gd.value_and_grad(f, 0, argnums=1),
                 lambda: gd.jacrev(f, 0, argnums=1), lambda: gd.jacfwd(f, 0, argnums=1),
                 lambda: gd.hessian(f, 0, argnums=1), lambda: gd.vmap(f, 0, in_dims=1),
                 lambda: gd.vmap(f, 0, 0, out_dims=0), lambda: gd.grad(f, 1, argnums=1)):
        with pytest.raises(TransformError, match="are aliases; give one of them"):
            make()
    np.testing.assert_allclose(gd.grad(f, argnums=1)(x, y).asnumpy(), [1.0, 2.0])
    np.testing.assert_allclose(gd.grad(f, 0)(x, y).asnumpy(), [3.0, 4.0])
    np.testing.assert_allclose(gd.vmap(lambda a: a * 2, in_dims=0, out_dims=0)(x).asnumpy(), [2.0, 4.0])
    assert "grad_position=0," in str(inspect.signature(gd.grad))
    assert "in_axes=0, out_axes=0" in str(inspect.signature(gd.vmap))


def test_grad_sums_nonscalar_and_multiple_outputs():
    x = T([0.3, -1.2])
    g = gd.grad(lambda x: (x * x, ops.exp(x)))(x)
    np.testing.assert_allclose(g.asnumpy(), 2 * x.asnumpy() + np.exp(x.asnumpy()))


def test_grad_pytree_argument():
    def f(p, x):
        return ops.sum(ops.tanh(x @ p["w"] + p["b"]))
    p = {"w": T(rng.normal(size=(3, 2))), "b": T(rng.normal(size=2))}
    x = T(rng.normal(size=(4, 3)))
    g = gd.grad(f)(p, x)
    t = np.tanh(x.asnumpy() @ p["w"].asnumpy() + p["b"].asnumpy())
    np.testing.assert_allclose(g["b"].asnumpy(), (1 - t ** 2).sum(0))
    np.testing.assert_allclose(g["w"].asnumpy(), x.asnumpy().T @ (1 - t ** 2))


class _Lin(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = gd.Parameter(T([[1.0, 2.0], [3.0, 4.0]]), name="w")
        self.b = gd.Parameter(T([0.5, -0.5]), name="b")
        self.unused = gd.Parameter(T([7.0]), name="unused")

    def construct(self, x):
        return ops.sum(ops.square(ops.matmul(self.w, x) + self.b))


def test_weights_with_and_without_positions_and_return_ids():
    net = _Lin()
    x = T([1.0, -1.0])
    w, b = net.w.asnumpy(), net.b.asnumpy()
    r = w @ x.asnumpy() + b
    gw_closed, gb_closed = 2 * np.outer(r, x.asnumpy()), 2 * r
    gx, (gw, gb, gu) = gd.grad(net, 0, weights=net.trainable_params())(x)
    np.testing.assert_allclose(gx.asnumpy(), 2 * w.T @ r)
    np.testing.assert_allclose(gw.asnumpy(), gw_closed)
    np.testing.assert_allclose(gb.asnumpy(), gb_closed)
    np.testing.assert_allclose(gu.asnumpy(), [0.0])
    ws = gd.grad(net, None, weights=gd.ParameterTuple([net.w, net.b]))(x)
    assert isinstance(ws, tuple) and len(ws) == 2
    single = gd.grad(net, None, weights=net.b)(x)
    np.testing.assert_allclose(single.asnumpy(), gb_closed)
    ids = gd.grad(net, 0, weights=gd.ParameterTuple([net.b]), return_ids=True)(x)
    assert ids[0][0] == 0 and ids[1][0][0] == "b"


def test_parameter_update_is_seen_by_staged_function():
    net = _Lin()
    x = T([1.0, -1.0])
    f = gd.grad(net, None, weights=net.b)
    g1 = f(x).asnumpy()
    net.b.set_data(T([10.0, 10.0]))
    g2 = f(x).asnumpy()
    assert not np.allclose(g1, g2)
    np.testing.assert_allclose(g2, 2 * (net.w.asnumpy() @ x.asnumpy() + 10.0))


def test_value_and_grad_and_has_aux():
    def f(x):
        return ops.sum(x ** 3), x * 2
    x = T([1.0, 2.0])
    (v, aux), g = gd.value_and_grad(f, has_aux=True)(x)
    assert float(v) == 9.0
    np.testing.assert_allclose(aux.asnumpy(), [2.0, 4.0])
    np.testing.assert_allclose(g.asnumpy(), [3.0, 12.0])
    g2, (aux2,) = gd.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g2.asnumpy(), [3.0, 12.0])
    gg, vv = gd.grad_and_value(lambda x: ops.sum(x * x))(x)
    assert float(vv) == 5.0


def test_vjp_and_jvp_agree_inner_product():
    def f(x, y):
        return ops.tanh(x @ y), ops.sum(ops.sin(x), 1)
    x, y = T(rng.normal(size=(3, 4))), T(rng.normal(size=(4, 2)))
    (o1, o2), vjp_fn = gd.vjp(f, x, y)
    u1, u2 = T(rng.normal(size=o1.shape)), T(rng.normal(size=o2.shape))
    gx, gy = vjp_fn((u1, u2))
    vx, vy = T(rng.normal(size=x.shape)), T(rng.normal(size=y.shape))
    _, (t1, t2) = gd.jvp(f, (x, y), (vx, vy))
    lhs = np.sum(u1.asnumpy() * t1.asnumpy()) + np.sum(u2.asnumpy() * t2.asnumpy())
    rhs = np.sum(gx.asnumpy() * vx.asnumpy()) + np.sum(gy.asnumpy() * vy.asnumpy())
    assert abs(lhs - rhs) < 1e-10


def test_higher_orders_closed_forms():
    x = T([0.7, -0.3])
    f = lambda x: ops.sum(ops.sin(x) * x)  # noqa: E731
    d1 = gd.grad(f)
    d2 = gd.grad(lambda x: ops.sum(d1(x)))
    d3 = gd.grad(lambda x: ops.sum(d2(x)))
    a = x.asnumpy()
    np.testing.assert_allclose(d1(x).asnumpy(), np.cos(a) * a + np.sin(a))
    np.testing.assert_allclose(d2(x).asnumpy(), 2 * np.cos(a) - a * np.sin(a))
    np.testing.assert_allclose(d3(x).asnumpy(), -3 * np.sin(a) - a * np.cos(a))
    # third order mixing modes: jvp of grad of grad
    _, t = gd.jvp(d2, x, T([1.0, 1.0]))
    np.testing.assert_allclose(t.asnumpy(), -3 * np.sin(a) - a * np.cos(a))


def test_hessian_compositions_agree_and_symmetric():
    def f(x):
        return ops.sum(ops.exp(x[0] * x) * ops.tanh(x))
    x = T(rng.normal(size=4) * 0.5)
    hs = [gd.hessian(f)(x), gd.jacfwd(gd.jacrev(f))(x), gd.jacrev(gd.jacrev(f))(x),
          gd.jacfwd(gd.jacfwd(f))(x), gd.jacrev(gd.jacfwd(f))(x)]
    for h in hs[1:]:
        np.testing.assert_allclose(h.asnumpy(), hs[0].asnumpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hs[0].asnumpy(), hs[0].asnumpy().T, atol=1e-12)


def test_jacobian_several_outputs_and_positions_and_aux():
    def f(x, y):
        return x * y, ops.sum(x), y * 3
    x, y = T([1.0, 2.0]), T([3.0, 4.0])
    for jac in (gd.jacrev, gd.jacfwd):
        (jx, jy), aux = jac(f, grad_position=(0, 1), has_aux=True)(x, y)
        np.testing.assert_allclose(jx.asnumpy(), np.diag([3.0, 4.0]))
        np.testing.assert_allclose(jy.asnumpy(), np.diag([1.0, 2.0]))
        np.testing.assert_allclose(aux[0].asnumpy(), 3.0)
        np.testing.assert_allclose(aux[1].asnumpy(), [9.0, 12.0])
        j = jac(f, grad_position=(0, 1))(x, y)  # several outputs: j[out_i][in_j]
        np.testing.assert_allclose(j[0][1].asnumpy(), np.diag([1.0, 2.0]))
        np.testing.assert_allclose(j[1][0].asnumpy(), [1.0, 1.0])
        np.testing.assert_allclose(j[1][1].asnumpy(), [0.0, 0.0])
        np.testing.assert_allclose(j[2][1].asnumpy(), 3 * np.eye(2))


def test_jacrev_graph_size_independent_of_output_size():
    def build(n):
        w = T(rng.normal(size=(n, 8)))
        b = T(rng.normal(size=n))
        x = T(rng.normal(size=8))
        return len(gd.make_graph(gd.jacrev(lambda w, b, x: ops.tanh(ops.dense(x, w, b)), 2))(w, b, x).nodes)
    assert build(4) == build(64) == build(512)


def test_stop_gradient_pass_removes_work():
    def with_sg(x, y):
        side = ops.stop_gradient(ops.exp(ops.sin(x) * ops.cos(y)) * ops.tanh(x))
        return ops.sum(x * y + side)

    def without_sg(x, y):
        side = ops.exp(ops.sin(x) * ops.cos(y)) * ops.tanh(x)
        return ops.sum(x * y + side)
    x, y = T(rng.normal(size=5)), T(rng.normal(size=5))
    n_sg = len(gd.make_graph(gd.grad(with_sg))(x, y).nodes)
    n_no = len(gd.make_graph(gd.grad(without_sg))(x, y).nodes)
    assert n_sg < n_no
    # derivative work of the stopped branch is absent: no cos(x)/derivative of exp or tanh in the graph
    g = gd.make_graph(gd.grad(with_sg))(x, y)
    names = [n.prim.name for n in g.nodes]
    assert "exp" not in names and "tanh" not in names and "sin" not in names
    np.testing.assert_allclose(gd.grad(with_sg)(x, y).asnumpy(), y.asnumpy())


def test_derivative_graph_has_no_dead_nodes():
    x = T(rng.normal(size=3))
    g = gd.make_graph(gd.grad(lambda x: ops.sum(ops.tanh(x) * x)))(x)
    used = {v for n in g.nodes for v in n.inputs} | set(g.outputs)
    for n in g.nodes:
        assert any(o in used for o in n.outputs), n
    text = str(g)
    assert text.startswith("func @") and "tanh" in text


# ---------------------------------------------------------------- errors


def test_grad_errors():
    x = T([1.0])
    i = gd.Tensor(np.array([1], np.int32))
    with pytest.raises(TransformError, match="integer|int32"):
        gd.grad(lambda a: ops.sum(a * 2))(i)
    with pytest.raises(TransformError, match="dtype int"):
        gd.grad(lambda a: ops.argmax(a))(x)
    with pytest.raises(TransformError, match="out of range"):
        gd.grad(lambda a: ops.sum(a), grad_position=3)(x)
    with pytest.raises(TransformError, match="negative"):
        gd.grad(lambda a: ops.sum(a), grad_position=-1)
    with pytest.raises(TransformError, match="repeated"):
        gd.grad(lambda a, b: ops.sum(a), grad_position=(0, 0))
    with pytest.raises(TransformError, match="nothing to differentiate"):
        gd.grad(lambda a: ops.sum(a), grad_position=None)
    with pytest.raises(TransformError, match="Parameter"):
        gd.grad(lambda a: ops.sum(a), weights=[x])
    with pytest.raises(TransformError, match="at least two outputs"):
        gd.grad(lambda a: ops.sum(a), has_aux=True)(x)


def test_vmap_errors_name_arguments_and_sizes():
    a, b = T(np.ones((3, 2))), T(np.ones((4, 2)))
    with pytest.raises(TransformError, match="size 3.*size 4|sizes"):
        gd.vmap(lambda x, y: x + y)(a, b)
    with pytest.raises(TransformError, match="out of range"):
        gd.vmap(lambda x: x, in_axes=2)(a)
    with pytest.raises(TransformError, match="in_axes"):
        gd.vmap(lambda x, y: x, in_axes=(0, 0, 0))(a, a)
    with pytest.raises(TransformError, match="at least one"):
        gd.vmap(lambda x: x, in_axes=None)(a)


def test_vmap_axes_and_nesting():
    x = T(rng.normal(size=(3, 4, 5)))
    y = gd.vmap(lambda r: ops.sum(r * r), in_axes=-1)(x)
    np.testing.assert_allclose(y.asnumpy(), (x.asnumpy() ** 2).sum(axis=(0, 1)))
    z = gd.vmap(gd.vmap(lambda v: ops.sum(ops.sin(v)), in_axes=1), in_axes=0, out_axes=1)(x)
    np.testing.assert_allclose(z.asnumpy(), np.sin(x.asnumpy()).sum(1).T)
    w = gd.vmap(lambda v, c: v * c, in_axes=(1, None), out_axes=2)
    c = T(rng.normal(size=5))
    out = w(x, c)
    np.testing.assert_allclose(out.asnumpy(), np.moveaxis(x.asnumpy() * c.asnumpy(), 1, 2))
    # unbatched output broadcast along out_axes
    u = gd.vmap(lambda v: (v, c), in_axes=0)(x)
    assert u[1].shape == (3, 5)


def test_vmap_of_grad_and_grad_of_vmap():
    x = T(rng.normal(size=(6, 3)))
    f = lambda v: ops.sum(ops.sin(v) * v)  # noqa: E731
    per_ex = gd.vmap(gd.grad(f))(x)
    a = x.asnumpy()
    np.testing.assert_allclose(per_ex.asnumpy(), np.cos(a) * a + np.sin(a))
    g = gd.grad(lambda m: ops.sum(gd.vmap(f)(m)))(x)
    np.testing.assert_allclose(g.asnumpy(), np.cos(a) * a + np.sin(a))


def test_closure_over_outer_tracer_is_not_confused():
    # d/dx [ x * d/dy (x*y) ] = d/dx x^2 = 2x  (perturbation confusion check)
    def f(x):
        inner = gd.grad(lambda y: ops.sum(x * y))(x)
        return ops.sum(x * inner)
    x = T([3.0])
    np.testing.assert_allclose(gd.grad(f)(x).asnumpy(), [6.0])


def test_shape_error_names_op_shapes_and_line():
    with pytest.raises(GraphadError) as e:
        ops.add(T(np.ones((3, 4))), T(np.ones(5)))
    msg = str(e.value)
    assert "add" in msg and "(3, 4)" in msg and "(5,)" in msg and "f64" in msg and "test_api.py" in msg


def test_shape_error_inside_transformation_points_at_user_line():
    def f(x):
        return ops.sum(x @ T(np.ones((2, 2))))
    with pytest.raises(GraphadError) as e:
        gd.grad(f)(T(np.ones(3)))
    assert "matmul" in str(e.value) and "test_api.py" in str(e.value)


def test_chunk_size_gives_the_same_jacobian():
    def f(x):
        return ops.tanh(x[:, None] * x[None, :])
    x = T(rng.normal(size=5))
    full = gd.jacrev(f)(x).asnumpy()
    for c in (1, 2, 5, 7):
        np.testing.assert_allclose(gd.jacrev(f, chunk_size=c)(x).asnumpy(), full, rtol=1e-12)
        np.testing.assert_allclose(gd.jacfwd(f, chunk_size=c)(x).asnumpy(), full, rtol=1e-12)
    with pytest.raises(TransformError, match="chunk_size"):
        gd.jacrev(f, chunk_size=0)(x)


def test_vmap_argument_errors_name_the_arguments_and_the_line():
    """vmap's refusals of its axes say which argument (name, dtype, shape) and the user's line
    (five of them named neither: "argument leaves [0]" and no file:line; a helper's trial)."""
    T = lambda *s: gd.Tensor(np.zeros(s))  # noqa: E731
    cases = [
        (lambda: gd.vmap(lambda a, b: a + b)(T(3, 2), T(4, 2)),
         r"size 3 for argument 0 \('a'\) \(f64\[3,2\]\) along axis 0; size 4 for argument 1 \('b'\) \(f64\[4,2\]\)"),
        (lambda: gd.vmap(lambda a: a, in_axes=2)(T(3, 2)), r"in_axes for argument 0 \('a'\) \(f64\[3,2\]\) = 2"),
        (lambda: gd.vmap(lambda a: a, in_axes=None)(T(3, 2)), "at least one argument must be mapped"),
        (lambda: gd.vmap(lambda a, b: a, in_axes=(0, 0, 0))(T(3), T(3)), "in_axes does not match the arguments"),
        (lambda: gd.vmap(lambda a: a.sum(), out_axes=1)(T(3, 2)), r"out_axes for output 0 \(stacked: f64\[3\]\) = 1"),
    ]
    for call, what in cases:
        with pytest.raises(TransformError, match=what + r".*test_api.py:\d+\)"):
            call()


def test_a_weight_passed_as_an_argument_is_refused():
    """grad(f, weights=[w])(w, x) gave w a zero gradient, silently (weights are differentiated
    where f reads them, by closure or as a Cell's attribute; torch gives the gradient): refused,
    naming the argument (a helper's trial). Read by closure, it is right."""
    w = gd.Parameter(gd.Tensor(np.array([1.0, 2.0, 3.0])), name="w")
    x = gd.Tensor(np.array([0.5, -1.0, 2.0]))
    for make in (gd.grad, gd.value_and_grad):
        with pytest.raises(TransformError, match=r"the weight 'w' is also passed to the function as argument 0"):
            make(lambda p, t: ops.sum(ops.sin(p * t)), None, weights=[w])(w, x)
    g = gd.grad(lambda t: ops.sum(ops.sin(w * t)), None, weights=[w])(x)
    np.testing.assert_allclose(g[0].asnumpy(), np.cos(np.array([0.5, -2.0, 6.0])) * [0.5, -1.0, 2.0], rtol=1e-12)


def test_a_weight_passed_through_jit_as_an_argument_is_refused_too():
    """Under an enclosing gd.jit the weight reaches grad as jit's argument tracer, not as the
    Parameter: the check could not see it and w's gradient left the argument out (x's share of
    it), silently. jit records which Parameter each argument tracer stands for."""
    w = gd.Parameter(gd.Tensor(np.array([1.0, 2.0])), name="w")
    x = gd.Tensor(np.array([3.0, 4.0]))

    def loss(p, t):
        return ops.sum(p * t) + ops.sum(w * w)
    for make in (gd.grad, gd.value_and_grad):
        step = gd.jit(lambda p, t: make(loss, None, weights=[w])(p, t))
        with pytest.raises(TransformError, match=r"the weight 'w' is also passed to the function as argument 0"
                                                 r".*test_api.py:\d+\)"):
            step(w, x)
    # the argument's own value (another Parameter, or a tensor) is not the weight: taken
    v = gd.Parameter(gd.Tensor(np.array([1.0, 2.0])), name="v")
    g = gd.jit(lambda p, t: gd.grad(loss, None, weights=[w])(p, t))(v, x)
    np.testing.assert_array_equal(g[0].numpy(), [2.0, 4.0])


def test_weights_as_a_list_or_a_tuple_keep_their_form():
    """The same function differentiated with the same Parameters as a tuple, then as a list, gave
    the list's gradients as a tuple (the cache key did not tell the containers apart)."""
    w = gd.Parameter(gd.Tensor(np.array([1.0, 2.0])), name="w")
    f = lambda t: ops.sum(w * t)  # noqa: E731
    x = gd.Tensor(np.array([3.0, 4.0]))
    assert isinstance(gd.grad(f, None, weights=(w,))(x), tuple)
    assert isinstance(gd.grad(f, None, weights=[w])(x), list)


# ---- vjp_fn is the derivative at the forward's point (a mutation trial) ----

@pytest.mark.parametrize("backend", ["numpy", "tvm"])
def test_vjp_fn_differentiates_at_the_point_the_forward_evaluated(backend):
    """vjp_fn traced fn again when first called: a Parameter the forward assigned (c: 1 -> 3, so
    d(x c)/dx = 3) gave 9, a set_data or a closed-over number changed after vjp moved the point,
    a random draw was drawn again; JAX's and torch.func's vjp keep the forward's values."""
    gd.set_backend(backend)
    try:
        c = gd.Parameter(np.array(1.0), name="c")

        def f(x):
            ops.assign(c, c * 3.0)
            return x * c
        x = gd.Tensor(np.array([2.0]))
        out, vjp_fn = gd.vjp(f, x)
        np.testing.assert_allclose(out.asnumpy(), [6.0])
        np.testing.assert_allclose(vjp_fn(gd.Tensor(np.array([1.0])))[0].asnumpy(), [3.0])
        assert float(c.asnumpy()) == 3.0  # the forward's assignment, once
        jitted = gd.jit(lambda x: gd.vjp(f, x)[1](gd.Tensor(np.array([1.0])))[0])
        np.testing.assert_allclose(jitted(x).asnumpy(), [9.0])  # c is 3 now: d(x * 9)/dx
        # a change after vjp: the forward's point stays
        w = gd.Parameter(np.array([2.0, 3.0]), name="w")
        s = {"k": 2.0}
        out, vjp_fn = gd.vjp(lambda x: x * w * s["k"], gd.Tensor(np.ones(2)))
        w.set_data(np.array([5.0, 7.0]))
        s["k"] = 10.0
        np.testing.assert_allclose(vjp_fn(gd.Tensor(np.ones(2)))[0].asnumpy(), [4.0, 6.0])
        # a random draw: the gradient's mask is the forward's
        gd.set_seed(0)
        drop = nn.Dropout(keep_prob=0.5)
        ones = gd.Tensor(np.ones(64, np.float32))
        out, vjp_fn = gd.vjp(drop, ones)
        np.testing.assert_array_equal(vjp_fn(ones)[0].asnumpy(), out.asnumpy())
    finally:
        gd.set_backend("numpy")
