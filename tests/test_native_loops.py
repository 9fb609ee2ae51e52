"""Native loops (lowering/native_loop.py): a scan or while_loop whose regions are straight-line
graphs compiles into one TIR function that runs every step.

Oracles that are not the code under test: the NumPy reference interpreter (the graph run node by
node), the host path (the same graph compiled with native loops off: one compiled call per step),
float64 central finite differences of a NumPy loop, forward vs reverse mode, and vmap vs a
per-example loop. Every check runs in float64 unless it says otherwise.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphad as gd
from backends import both_backends, fd_grad
from graphad import ops
from graphad.ir.interpret import interpret
from graphad.runtime.executable import Executable, compile_graph, graph_for_lowering
from graphad.runtime.host import HostProgram, native_loops

RNG = np.random.default_rng(7)


def T(a):
    return gd.Tensor(np.asarray(a, np.float64))


def build(fn, *args, native=True):
    """(graph as the runtime lowers it, what compile_graph made of it, the graph's inputs) for
    fn at args (closed-over tensors are inputs after the arguments)."""
    lowered = gd.jit(fn).lower(*args)
    g = graph_for_lowering(lowered.graph)
    with native_loops(native):
        exe = compile_graph(g, cache=False)
    return g, exe, list(args) + list(lowered.captures)


def run(exe, args) -> list[np.ndarray]:
    return [np.array(np.asarray(t._data), copy=True) for t in exe([a if isinstance(a, gd.Tensor) else T(a)
                                                                    for a in args])]


def check_native(fn, *args, rtol=1e-12, atol=1e-13, expect_native=True):
    """Compile fn natively and on the host path; both must agree with the interpreter. Returns
    the native results."""
    g, exe, inputs = build(fn, *args)
    if expect_native:
        assert isinstance(exe, Executable), f"expected one native executable, got {exe.report.get('loops')}"
        assert "host" not in exe.report["loops"] and "native" in exe.report["loops"]
    _, host, _ = build(fn, *args, native=False)
    assert isinstance(host, HostProgram)
    want = interpret(g, [np.asarray(a._data) for a in inputs])
    got = run(exe, inputs)
    via_host = run(host, inputs)
    assert len(got) == len(want)
    for a, b, h in zip(got, want, via_host):
        assert a.shape == np.shape(b) and a.dtype == np.asarray(b).dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
        np.testing.assert_allclose(a, h, rtol=rtol, atol=atol)
    return got


def euler(y, k, n):
    return gd.fori_loop(0, n, lambda i, y: y + 0.01 * (-k * y + ops.sin(y)), y)


def euler_np(y, k, n):
    for _ in range(n):
        y = y + 0.01 * (-k * y + np.sin(y))
    return y


# ---------------------------------------------------------------- fori_loop and scan


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_fori_loop_runs_natively_and_matches_the_interpreter(n):
    y, k = T(np.linspace(0.1, 1.0, 16)), T(0.5)
    got = check_native(lambda y, k: euler(y, k, n), y, k)
    np.testing.assert_allclose(got[0], euler_np(np.linspace(0.1, 1.0, 16), 0.5, n), rtol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 5, 37])
def test_scan_with_per_step_outputs_and_a_permuted_carry(length, reverse):
    """Several carries (one swapped with another every step, one returned unchanged, an int
    counter) and several ys, forwards and backwards: the carry update must never read a carry
    another copy already overwrote, and ys keep xs's order."""
    xs = RNG.standard_normal((length, 3))
    zs = RNG.standard_normal((length, 2, 2))

    def f(a, b, c, xs, zs):
        def step(carry, x):
            a, b, c, n = carry
            xv, z = x
            new_a = ops.sin(b) * 0.9 + xv          # the swap: a <- f(b), b <- a
            return (new_a, a, c, n + 1), (new_a * 2.0 + ops.sum(z), ops.matmul(z, z), n)
        return gd.scan(step, (a, b, c, gd.Tensor(np.int32(0))), (xs, zs), reverse=reverse)

    a, b, c = RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(4)
    got = check_native(f, T(a), T(b), T(c), T(xs), T(zs))
    # a NumPy loop over the same steps
    ys0, ys1, ys2 = np.zeros((length, 3)), np.zeros((length, 2, 2)), np.zeros(length, np.int32)
    n = 0
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        new_a = np.sin(b) * 0.9 + xs[t]
        ys0[t], ys1[t], ys2[t] = new_a * 2.0 + zs[t].sum(), zs[t] @ zs[t], n
        a, b, n = new_a, a, n + 1
    for g, w in zip(got, [a, b, c, np.int32(length), ys0, ys1, ys2]):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_rnn_scan_gradients_both_modes_and_finite_differences():
    """A recurrent cell (mat-vec kernels with reductions) differentiated in reverse mode (a
    forward scan with a tape, then a reverse scan: both native) and in forward mode."""
    H, D, L = 5, 3, 20
    W, U, xs = RNG.standard_normal((H, H)) * 0.4, RNG.standard_normal((H, D)) * 0.4, RNG.standard_normal((L, D))

    def rnn(W, U, xs):
        def cell(h, x):
            h = ops.tanh(ops.matmul(W, h) + ops.matmul(U, x))
            return h, ops.sum(h)
        h, ys = gd.scan(cell, T(np.zeros(H)), xs)
        return ops.sum(h ** 2) + ops.sum(ys) * 0.1

    def rnn_np(W, U, xs):
        h, tot = np.zeros(H), 0.0
        for x in xs:
            h = np.tanh(W @ h + U @ x)
            tot += h.sum()
        return float(np.sum(h ** 2) + 0.1 * tot)

    grad = gd.grad(rnn, grad_position=(0, 1, 2))
    gW, gU, gx = check_native(grad, T(W), T(U), T(xs))
    np.testing.assert_allclose(gW, fd_grad(lambda a: rnn_np(a, U, xs), W), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gU, fd_grad(lambda a: rnn_np(W, a, xs), U), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gx, fd_grad(lambda a: rnn_np(W, U, a), xs), rtol=1e-6, atol=1e-9)
    # forward mode: <J v> against the reverse-mode gradient
    vW = RNG.standard_normal((H, H))
    jv = check_native(lambda W: gd.jvp(lambda W: rnn(W, U, xs), (W,), (T(vW),))[1], T(W))[0]
    np.testing.assert_allclose(jv, np.sum(gW * vW), rtol=1e-10)


def test_euler_gradient_native_equals_host_and_finite_differences():
    y0, k0 = np.linspace(0.1, 1.0, 16), 0.5

    def loss(y, k):
        return ops.sum(euler(y, k, 300) ** 2)

    gy, gk = check_native(gd.grad(loss, grad_position=(0, 1)), T(y0), T(k0))
    f = lambda y, k: float(np.sum(euler_np(y, k, 300) ** 2))  # noqa: E731
    np.testing.assert_allclose(gy, fd_grad(lambda y: f(y, k0), y0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gk, fd_grad(lambda k: f(y0, float(k)), np.float64(k0)), rtol=1e-7)
    # forward mode over the same loop
    jac = check_native(gd.jacfwd(lambda y: euler(y, T(k0), 50)), T(y0))[0]
    eps = 1e-6
    fd = np.stack([(euler_np(y0 + eps * e, k0, 50) - euler_np(y0 - eps * e, k0, 50)) / (2 * eps)
                   for e in np.eye(16)], 1)
    np.testing.assert_allclose(jac, fd, rtol=1e-7, atol=1e-9)


def test_float32_euler_gradient_is_close_to_the_host_path():
    """float32: native and host kernels may differ in the last bits (fusion differs), not more."""
    y, k = gd.Tensor(np.linspace(0.1, 1.0, 16).astype(np.float32)), gd.Tensor(np.float32(0.5))
    loss = gd.grad(lambda y, k: ops.sum(euler(y, k, 100) ** 2), grad_position=(0, 1))
    check_native(loss, y, k, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------- while_loop



def test_a_one_input_loop_of_its_inputs_size_builds_natively():
    """A scan whose body returns a constant under vmap is one kernel of one input and an output of
    that input's size: Relax's RewriteDataflowReshape asked whether it is a reshape, which requires
    a root block the native loop's PrimFunc lacked ('TVM rejected a scheduled kernel', then the
    host path); it now has one, as TE's PrimFuncs do."""
    import warnings
    scan = lambda c: gd.scan(lambda c, _: (0.1, None), c, None, length=2)[0]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = check_native(gd.vmap(scan), T([1.0, 2.0]))
    np.testing.assert_array_equal(got[0], [0.1, 0.1])

@pytest.mark.parametrize("start,trips", [(10.0, 0), (0.6, 1), (1e-3, 10)])
def test_while_loop_trip_counts_zero_one_many(start, trips):
    def f(x):
        return gd.while_loop(lambda c: ops.sum(c[0]) < 1.0, lambda c: (c[0] * 2.0, c[1] + 1),
                             (x, gd.Tensor(np.int32(0))))
    x = T([start * 0.5, start * 0.5])
    got = check_native(f, x)
    assert int(got[1]) == trips


def test_while_loop_max_steps_caps_the_loop_natively():
    def f(x):
        return gd.while_loop(lambda c: ops.sum(c) < 1e30, lambda c: c * 1.5 + 0.1, x, max_steps=7)
    got = check_native(f, T([0.1, 0.2]))
    want = np.array([0.1, 0.2])
    for _ in range(7):
        want = want * 1.5 + 0.1
    np.testing.assert_allclose(got[0], want, rtol=1e-15)
    got0 = check_native(lambda x: gd.while_loop(lambda c: ops.sum(c) < 5.0, lambda c: c + 1.0, x, max_steps=0),
                        T([0.1, 0.2]))
    np.testing.assert_array_equal(got0[0], [0.1, 0.2])


def test_newton_while_loop_gradients_reverse_and_second_order():
    def newton(a):
        def body(c):
            x, k = c
            return 0.5 * (x + a / x), k + 1
        return gd.while_loop(lambda c: ops.abs(c[0] * c[0] - a) > 1e-12 * a, body,
                             (a + 1.0, gd.Tensor(np.int32(0))), max_steps=60)

    a = T(2.0)
    root, steps = check_native(newton, a)
    np.testing.assert_allclose(root, np.sqrt(2.0), rtol=1e-12)  # its stopping test
    g = check_native(gd.grad(lambda a: newton(a)[0]), a)[0]
    np.testing.assert_allclose(g, 0.5 / np.sqrt(2.0), rtol=1e-12)
    h = check_native(gd.grad(gd.grad(lambda a: newton(a)[0])), a)[0]   # tapes of tapes: native too
    np.testing.assert_allclose(h, -0.25 * 2.0 ** -1.5, rtol=1e-10)
    t = check_native(lambda a: gd.jvp(lambda a: newton(a)[0], (a,), (T(1.0),))[1], a)[0]
    np.testing.assert_allclose(t, 0.5 / np.sqrt(2.0), rtol=1e-12)


def test_fori_loop_with_traced_bounds_is_a_native_while_loop():
    def f(y, n):
        return gd.fori_loop(gd.Tensor(np.int32(0)), n, lambda i, y: y * 0.5 + ops.astype(i, y.dtype), y)
    got = check_native(f, T([1.0, 2.0]), gd.Tensor(np.int32(6)))
    want = np.array([1.0, 2.0])
    for i in range(6):
        want = want * 0.5 + i
    np.testing.assert_allclose(got[0], want, rtol=1e-15)


# ---------------------------------------------------------------- vmap, parallel kernels


def test_vmap_of_loops_matches_a_per_example_loop():
    ys = RNG.standard_normal((6, 4))
    ks = np.abs(RNG.standard_normal(6))
    got = check_native(gd.vmap(lambda y, k: euler(y, k, 40)), T(ys), T(ks))[0]
    for i in range(6):
        np.testing.assert_allclose(got[i], euler_np(ys[i], ks[i], 40), rtol=1e-12)

    # a batched predicate: each lane stops at its own step, finished lanes keep their carry
    def grow(x):
        return gd.while_loop(lambda c: ops.sum(c[0]) < 10.0, lambda c: (c[0] * 1.7, c[1] + 1),
                             (x, gd.Tensor(np.int32(0))))
    xs = np.abs(RNG.standard_normal((5, 2))) + 0.01
    vals, counts = check_native(gd.vmap(grow), T(xs))
    for i in range(5):
        x, n = xs[i], 0
        while x.sum() < 10.0:
            x, n = x * 1.7, n + 1
        np.testing.assert_allclose(vals[i], x, rtol=1e-14)
        assert counts[i] == n


def test_a_body_with_a_parallel_kernel():
    """A body big enough for the schedule to parallelise its kernels (schedule.PAR_MIN): the
    parallel loop runs inside the serial step loop, and the results stay exact."""
    from graphad.lowering import poison
    n = 1 << 15
    x0 = RNG.standard_normal(n)
    w = RNG.standard_normal(n)
    seen = []

    def f(x, w):
        return gd.fori_loop(0, 9, lambda i, x: ops.tanh(x * w + 0.1) + x * 0.5, x)

    with poison.inspect_tir(lambda mod, stage: seen.append(mod)):
        got = check_native(f, T(x0), T(w))[0]
    want = x0
    for _ in range(9):
        want = np.tanh(want * w + 0.1) + want * 0.5
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    loops = [fn for mod in seen for gv, fn in mod.functions_items() if gv.name_hint.startswith("native_")]
    assert loops and any("T.parallel" in fn.script() for fn in loops)


def test_poisoned_memory_check_mode_on_a_native_loop():
    """Every buffer the loop function writes (outputs, workspace) starts as NaN in poison mode:
    a step that read an element no step wrote would show it."""
    from graphad.testing import poisoned
    xs = RNG.standard_normal((9, 3))

    def f(c, xs):
        return gd.scan(lambda c, x: (ops.sin(c) + x, ops.sum(c * x)), c, xs)
    with poisoned():
        check_native(f, T(RNG.standard_normal(3)), T(xs))
        check_native(gd.grad(lambda c, xs: ops.sum(f(c, xs)[1] ** 2), grad_position=(0, 1)),
                     T(RNG.standard_normal(3)), T(xs))


# ---------------------------------------------------------------- what stays on the host


def test_a_loop_with_nested_control_flow_runs_on_the_host_path_and_says_so():
    def f(y):
        return gd.fori_loop(0, 5, lambda i, y: gd.cond(ops.sum(y) > 0, lambda y: y * 0.5, lambda y: y - 1.0, y), y)
    y = T([0.4, 0.3])
    g, exe, inputs = build(f, y)
    assert isinstance(exe, HostProgram)
    assert "host (nested control flow" in exe.report["loops"]
    np.testing.assert_allclose(run(exe, inputs)[0], interpret(g, [t.asnumpy() for t in inputs])[0], rtol=1e-15)


def test_a_cond_keeps_the_host_program_and_its_segments_hold_native_loops():
    def f(y, k):
        y = euler(y, k, 20)
        y = gd.cond(ops.sum(y) > 0, lambda y: y * 2.0, lambda y: ops.exp(y), y)
        return euler(y, k, 30)
    y, k = T([0.3, -0.2, 0.5]), T(0.7)
    g, exe, inputs = build(f, y, k)
    assert isinstance(exe, HostProgram) and exe.report["native_loops"] == 2
    assert exe.report["control_nodes"] == 1   # only the cond is driven by the host
    np.testing.assert_allclose(run(exe, inputs)[0], interpret(g, [t.asnumpy() for t in inputs])[0], rtol=1e-13)
    both_backends(gd.grad(lambda y, k: ops.sum(f(y, k) ** 2), grad_position=(0, 1)), y, k)


def test_native_loops_off_runs_every_loop_on_the_host(monkeypatch):
    monkeypatch.setenv("GRAPHAD_NATIVE_LOOPS", "0")
    g = graph_for_lowering(gd.jit(lambda y: euler(y, T(0.5), 10)).lower(T([1.0])).graph)
    exe = compile_graph(g, cache=False)
    assert isinstance(exe, HostProgram) and "native loops are off" in exe.report["loops"]


def test_compile_log_names_the_choice(monkeypatch, capsys):
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    build(lambda y: euler(y, T(0.25), 10), T([1.0, 2.0]))
    build(lambda y: gd.fori_loop(0, 3, lambda i, y: gd.cond(ops.sum(y) > 0, lambda y: -y, lambda y: y, y), y),
          T([1.0]))
    err = capsys.readouterr().err
    assert "loops scan native" in err
    assert "loops scan host (nested control flow in its body)" in err


# ---------------------------------------------------------------- caches and AOT artifacts


def test_native_loops_through_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHAD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHAD_NO_DISK_CACHE", raising=False)
    y, k = T(np.linspace(0.1, 1.0, 8)), T(0.5)
    fn = gd.grad(lambda y, k: ops.sum(euler(y, k, 50) ** 2), grad_position=(0, 1))
    g = graph_for_lowering(gd.jit(fn).lower(y, k).graph)
    gd.cache_clear(disk=False)
    first = compile_graph(g)
    assert isinstance(first, Executable) and first.source == "compiled"
    gd.cache_clear(disk=False)
    again = compile_graph(g)
    assert again.source == "disk-cache"
    np.testing.assert_array_equal(run(again, [y, k])[0], run(first, [y, k])[0])
    gd.cache_clear(disk=False)


def test_aot_artifacts_of_native_loops_load_and_agree(tmp_path):
    """An all-native graph saves as one library; one with a cond as a host program (format 2)
    whose segments hold native loops: both load and give identical results."""
    import json
    import zipfile
    y, k = T([0.3, -0.2, 0.5]), T(0.7)

    def with_cond(y, k):
        y = euler(y, k, 20)
        return gd.cond(ops.sum(y) > 0, lambda y: euler(y, k, 5) * 2.0, lambda y: ops.exp(y), y)

    for fn, version in ((lambda y, k: euler(y, k, 40), 1), (with_cond, 2)):
        g = gd.grad(lambda y, k: ops.sum(fn(y, k) ** 2), grad_position=(0, 1))
        gd.set_backend("tvm")
        try:
            compiled = gd.jit(g).lower(y, k).compile()
            ref = [t.asnumpy() for t in compiled(y, k)]
            path = tmp_path / f"v{version}.gdx"
            compiled.save(str(path))
            loaded = gd.load(str(path))
            got = [t.asnumpy() for t in loaded(y, k)]
        finally:
            gd.set_backend("numpy")
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("graphad-manifest.json"))
        assert manifest["format_version"] == version
        if version == 2:
            assert manifest["host_program"].get("native")
        for a, b, w in zip(got, ref, g(y, k)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, w.asnumpy(), rtol=1e-12)


def test_kernel_kinds_inside_a_native_loop(monkeypatch):
    """Kernels of the families the lowering emits, inlined into one loop: reductions, sort and
    argmax, cumulative sums (TVM dispatches these late: native_loop._dispatch_sort_scan),
    gathers, linear algebra (graphad's own TIR), softmax, conv2d. Each step feeds the next, so
    an error anywhere shows in the end."""
    A = RNG.standard_normal((4, 4)) + 4.0 * np.eye(4)
    img = RNG.standard_normal((1, 2, 5, 5))
    wts = RNG.standard_normal((2, 2, 3, 3)) * 0.2
    idx = gd.Tensor(np.array([3, 0, 2, 1], np.int32))

    def f(x, A, img, wts):
        def step(carry, _):
            x, im = carry
            y = ops.linalg.solve(A, ops.sort(x)) + ops.cumsum(x, 0) * 0.1
            y = y + ops.softmax(x, -1) + ops.take(x, idx, 0) * 0.01
            y = y + ops.astype(ops.argmax(x, 0), y.dtype) * 0.001
            im = ops.tanh(ops.conv2d(im, wts, padding=1))
            return (ops.tanh(y) + ops.mean(im), im), ops.max(y)
        return gd.scan(step, (x, img), None, length=6)

    check_native(f, T(RNG.standard_normal(4)), T(A), T(img), T(wts), rtol=1e-11, atol=1e-12)
    from graphad.lowering import native_loop
    monkeypatch.setattr(native_loop, "NATIVE_MAX_TIR_CHARS", 400_000)  # the backward body is big: inline it
    check_native(gd.grad(lambda x, A, img, wts: ops.sum(f(x, A, img, wts)[1]), grad_position=(0, 1, 3)),
                 T(RNG.standard_normal(4)), T(A), T(img), T(wts), rtol=1e-10, atol=1e-11)



def test_a_bfloat16_loop_stays_on_the_host_path():
    def f(y):
        return gd.fori_loop(0, 3, lambda i, y: y * 0.5 + 1.0, y)
    y = gd.Tensor(np.array([1.0, 2.0], np.float32)).astype(gd.bfloat16)
    g, exe, inputs = build(f, y)
    assert isinstance(exe, HostProgram) and "bfloat16" in exe.report["loops"]
    np.testing.assert_array_equal(np.asarray(run(exe, inputs)[0], np.float32),
                                  np.asarray(interpret(g, [y._data])[0], np.float32))


def test_a_region_the_native_lowering_refuses_falls_back_to_the_host(monkeypatch):
    """A refusal found only while composing (here forced: every region refused) is not an
    error: the graph runs as a host program, and its report names the reason."""
    from graphad.lowering import native_loop

    def refuse(self, params, tag):
        raise native_loop.NativeLoopError("refused for the test")
    monkeypatch.setattr(native_loop._Region, "instantiate", refuse)
    y, k = T([0.2, 0.4]), T(0.5)
    g, exe, inputs = build(lambda y, k: euler(y, k, 12), y, k)
    assert isinstance(exe, HostProgram) and "refused for the test" in exe.report["loops"]
    np.testing.assert_allclose(run(exe, inputs)[0], euler_np(np.array([0.2, 0.4]), 0.5, 12), rtol=1e-13)
    # inside a segment of a host program (a cond beside it): that segment runs as a host program
    g, exe, inputs = build(lambda y, k: gd.cond(ops.sum(y) > 0, lambda y: -y, lambda y: y, euler(y, k, 12)), y, k)
    assert isinstance(exe, HostProgram) and "its segment runs as a host program" in exe.report["loops"]
    assert any(isinstance(step[1], HostProgram) for step in exe.steps if step[0] == "run")
    np.testing.assert_allclose(run(exe, inputs)[0], interpret(g, [t.asnumpy() for t in inputs])[0], rtol=1e-13)


def test_a_native_build_tvm_refuses_warns_and_runs_on_the_host(monkeypatch):
    """A loop graphad meant to compile natively whose build fails (not a refusal of the native
    lowering: a CompileError from the build) runs on the host path, with a warning at the user's
    line, never silently."""
    from graphad.errors import CompileError
    from graphad.runtime import executable
    real, calls = executable.build_executable, []

    def fail_first(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise CompileError("forced for the test")
        return real(*a, **k)
    monkeypatch.setattr(executable, "build_executable", fail_first)
    y, k = T([0.2, 0.4]), T(0.5)
    with pytest.warns(RuntimeWarning, match="native build of .* failed .*forced for the test") as rec:
        g, exe, inputs = build(lambda y, k: euler(y, k, 12), y, k)
    assert rec[0].filename == __file__
    assert isinstance(exe, HostProgram) and "forced for the test" in exe.report["loops"]
    np.testing.assert_allclose(run(exe, inputs)[0], euler_np(np.array([0.2, 0.4]), 0.5, 12), rtol=1e-13)


def test_an_artifact_with_a_refused_segment_loads(monkeypatch, tmp_path):
    """A host program whose segment fell back to a nested host program saves and loads (the
    nested program and its loops recorded as they ran)."""
    from graphad.lowering import native_loop

    def refuse(self, params, tag):
        raise native_loop.NativeLoopError("refused for the test")
    y, k = T([0.2, 0.4]), T(0.5)
    fn = gd.grad(lambda y, k: ops.sum(gd.cond(ops.sum(y) > 0, lambda y: -y, lambda y: y, euler(y, k, 12)) ** 2),
                 grad_position=(0, 1))
    gd.set_backend("tvm")
    try:
        with monkeypatch.context() as m:
            m.setattr(native_loop._Region, "instantiate", refuse)
            m.setenv("GRAPHAD_NO_DISK_CACHE", "1")  # no native build of an earlier test stands in
            gd.cache_clear(disk=False)
            compiled = gd.jit(fn).lower(y, k).compile()
        prog = compiled.runner
        assert isinstance(prog, HostProgram)
        assert any(isinstance(step[1], HostProgram) for step in prog.steps if step[0] == "run")
        ref = [t.asnumpy() for t in compiled(y, k)]
        compiled.save(str(tmp_path / "f.gdx"))
        got = [t.asnumpy() for t in gd.load(str(tmp_path / "f.gdx"))(y, k)]
    finally:
        gd.set_backend("numpy")
        gd.cache_clear(disk=False)
    for a, b, w in zip(got, ref, fn(y, k)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, w.asnumpy(), rtol=1e-12)


def test_bool_int_and_float32_carries_and_outputs():
    """Carries and per-step outputs of every storage kind: bool (TVM stores it as a byte), int32,
    int64, float32 scalars and matrices."""
    xs = RNG.standard_normal((11, 2, 3)).astype(np.float32)

    def f(m, xs):
        def step(c, x):
            flag, n, big, m = c
            m = ops.where(flag, m * 0.5 + x, m - x)
            flag = ops.logical_not(flag)
            return (flag, n + 3, big * 2, m), (flag, ops.sum(m) > 0.0, n)
        init = (gd.Tensor(np.bool_(True)), gd.Tensor(np.int32(1)), gd.Tensor(np.int64(1)), m)
        return gd.scan(step, init, xs)

    m0 = gd.Tensor(RNG.standard_normal((2, 3)).astype(np.float32))
    got = check_native(f, m0, gd.Tensor(xs), rtol=1e-6, atol=1e-6)
    assert got[0].dtype == np.bool_ and bool(got[0]) is False    # 11 toggles
    assert int(got[1]) == 34 and int(got[2]) == 2 ** 11
    np.testing.assert_array_equal(got[4], [i % 2 == 1 for i in range(11)])  # the flag after each step

    def g(x):
        return gd.while_loop(lambda c: ops.logical_and(c[0], c[1] < 5),
                             lambda c: (ops.sum(c[2]) < 100.0, c[1] + 1, c[2] * 3.0), (gd.Tensor(np.bool_(True)),
                                                                                         gd.Tensor(np.int32(0)), x))
    check_native(g, gd.Tensor(np.array([1.0, 2.0], np.float32)), rtol=0, atol=0)


def test_a_body_too_big_to_inline_runs_on_the_host_and_the_other_loop_stays_native(monkeypatch):
    """Every kernel call of a native body is a copy of the kernel, so a body over the TIR budget
    (native_loop.NATIVE_MAX_TIR_CHARS, here lowered to fit the test) runs on the host path; the
    loop beside it in the same graph stays native."""
    from graphad.lowering import native_loop
    monkeypatch.setattr(native_loop, "NATIVE_MAX_TIR_CHARS", 6_000)  # the Euler loop: 2.5k, the deep one: 11.6k
    ws = [T(RNG.standard_normal((8, 8)) * 0.3) for _ in range(6)]

    def deep(i, h):
        for w in ws:
            h = ops.tanh(ops.matmul(w, h)) + h * 0.5
        return h

    def f(y, k):
        y = euler(y, k, 9)
        return gd.fori_loop(0, 4, deep, y)
    y, k = T(RNG.standard_normal(8)), T(0.3)
    g, exe, inputs = build(f, y, k)
    assert isinstance(exe, HostProgram)
    assert exe.report["native_loops"] == 1 and exe.report["control_nodes"] == 1
    assert "scan native" in exe.report["loops"] and "a body too big to inline" in exe.report["loops"]
    np.testing.assert_allclose(run(exe, inputs)[0], interpret(g, [t.asnumpy() for t in inputs])[0], rtol=1e-13)


def test_switches_stage_a_function_already_called_again(monkeypatch, capsys):
    """`native_loops(False)` and `poisoned()` are part of a transformed function's staging key: a
    function called outside the block is traced and compiled again inside it (host loops,
    poisoned memory), and each build serves only calls under its own setting."""
    from graphad.testing import poisoned
    monkeypatch.setenv("GRAPHAD_LOG_COMPILE", "1")
    monkeypatch.setenv("GRAPHAD_NO_DISK_CACHE", "1")
    monkeypatch.delenv("GRAPHAD_POISON", raising=False)
    monkeypatch.delenv("GRAPHAD_NATIVE_LOOPS", raising=False)
    traces = []

    def f(y):
        traces.append(1)
        return euler(y, T(0.5), 7)

    y = T([0.25, -1.0])
    want = euler_np(np.array([0.25, -1.0]), 0.5, 7)
    jf = gd.jit(f)
    gd.set_backend("tvm")
    try:
        outs = [jf(y)]
        assert len(traces) == 1 and "loops scan native" in capsys.readouterr().err
        with native_loops(False):
            outs += [jf(y), jf(y)]
        assert len(traces) == 2 and "loops scan host" in capsys.readouterr().err
        outs.append(jf(y))                      # outside again: the first build, not traced again
        with native_loops(True):                # the same setting as the environment's: the same build
            outs.append(jf(y))
        assert len(traces) == 2
        with poisoned():
            outs += [jf(y), jf(y)]
        # compiled again: the executable cache keys poisoned builds apart (lowering/poison.py)
        assert len(traces) == 3 and "compiled @f" in capsys.readouterr().err
        outs.append(jf(y))
        assert len(traces) == 3
    finally:
        gd.set_backend("numpy")
        gd.cache_clear(disk=False)
    for o in outs:
        np.testing.assert_allclose(np.asarray(o), want, rtol=1e-14)
