"""Newton's method on a small nonlinear system, compiled: the Jacobian by forward mode
(`gd.jacfwd`), the step by `ops.linalg.solve` (issue 17), the whole solve one `gd.jit` graph.

    F(x) = [x0^2 + x1^2 + x2^2 - 3,  x0 x1 + x1 x2 - 2,  exp(x0 - 1) + x2^3 - 2],  root (1, 1, 1)

`newton_step(x)` is one step x - J(x)^-1 F(x); `newton_solve(x)` runs STEPS of them (unrolled into
one graph; Newton converges quadratically, so a handful reach full precision); `gd.vmap` of it
solves from many starting points at once. `numpy_newton` is the reference: the same iteration
with the Jacobian written out by hand and NumPy's LAPACK solve. Run it:

    .venv/bin/python examples/newton_solve.py
"""
from __future__ import annotations

import time

import numpy as np

import graphad as gd
from graphad import ops

STEPS = 8


def residual(x):
    """F(x) for x of shape (3,)."""
    x0, x1, x2 = x[0], x[1], x[2]
    return ops.stack([x0 * x0 + x1 * x1 + x2 * x2 - 3.0,
                      x0 * x1 + x1 * x2 - 2.0,
                      ops.exp(x0 - 1.0) + x2 * x2 * x2 - 2.0])


def newton_step(x):
    """One Newton step: x - solve(J(x), F(x)), J by forward mode."""
    jac = gd.jacfwd(residual)(x)
    return x - ops.linalg.solve(jac, residual(x))


def newton_solve(x):
    """STEPS Newton steps from x (one graph: the loop is unrolled while tracing)."""
    for _ in range(STEPS):
        x = newton_step(x)
    return x


def numpy_residual(x):
    """F(x) in NumPy."""
    return np.array([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 - 3.0, x[0] * x[1] + x[1] * x[2] - 2.0,
                     np.exp(x[0] - 1.0) + x[2] ** 3 - 2.0])


def numpy_jacobian(x):
    """J(x) written out by hand."""
    return np.array([[2 * x[0], 2 * x[1], 2 * x[2]],
                     [x[1], x[0] + x[2], x[1]],
                     [np.exp(x[0] - 1.0), 0.0, 3 * x[2] ** 2]])


def numpy_newton(x, steps=STEPS):
    """The reference: the same iteration in NumPy (LAPACK's solve)."""
    x = np.array(x, np.float64)
    for _ in range(steps):
        x = x - np.linalg.solve(numpy_jacobian(x), numpy_residual(x))
    return x


def starts(n=16, seed=0):
    """n starting points around (1, 1, 1) (most converge to it, a few to another root)."""
    return 1.0 + np.random.default_rng(seed).uniform(-0.4, 0.4, size=(n, 3))


def run(backend="tvm"):
    """Solve from one and from many starting points with `backend`; returns the results, the
    NumPy references and the timings (seconds)."""
    prev = gd.get_backend()
    gd.set_backend(backend)
    try:
        x0 = np.array([1.3, 0.7, 1.2])
        step = gd.jit(newton_step)
        solve = gd.jit(newton_solve)
        solve_many = gd.jit(gd.vmap(newton_solve))
        t0 = time.perf_counter()
        one = solve(gd.Tensor(x0)).asnumpy()
        t_first = time.perf_counter() - t0
        first_step = step(gd.Tensor(x0)).asnumpy()
        xs = starts()
        many = solve_many(gd.Tensor(xs)).asnumpy()
        t0 = time.perf_counter()
        for _ in range(20):
            solve_many(gd.Tensor(xs))
        t_many = (time.perf_counter() - t0) / 20
    finally:
        gd.set_backend(prev)
    return {"one": one, "one_ref": numpy_newton(x0), "step": first_step, "step_ref": numpy_newton(x0, 1),
            "many": many, "many_ref": np.stack([numpy_newton(x) for x in xs]), "t_first": t_first,
            "t_many": t_many}


def main():
    """Print the solve from one and from 16 starting points beside NumPy's."""
    r = run("tvm")
    print(f"root from (1.3, 0.7, 1.2): {r['one']}  (NumPy: {r['one_ref']})")
    print(f"|F(root)| = {np.abs(numpy_residual(r['one'])).max():.2e}; the 16 roots reached: "
          f"max |F| = {max(np.abs(numpy_residual(x)).max() for x in r['many']):.2e}")
    print(f"16 starting points under vmap: max |x - NumPy's| = {np.abs(r['many'] - r['many_ref']).max():.2e}")
    print(f"first call (trace + compile + run) {r['t_first']:.2f} s; vmap of 16 solves {r['t_many'] * 1e6:.0f} us")


if __name__ == "__main__":
    main()
