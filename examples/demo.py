"""graphad's main demo (`make demo`): the job graphad is for, end to end.

1. Train a small CNN on scikit-learn's bundled handwritten digits in graph mode: each step
   (forward, backward, SGD update) is one compiled executable (examples/train_digits.py).
2. Per-example gradient norms of the trained model: `vmap(grad(loss, weights=...))`.
3. The trained model's input Jacobian (`jacrev` of its class probabilities w.r.t. one image),
   compiled ahead of time, saved as an AOT artifact, loaded in a fresh process and checked.
4. A table of times: graphad compiled vs graphad's NumPy reference interpreter, and JAX jit of
   the same functions when JAX is installed (`make bench` installs it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import graphad as gd
from graphad import nn, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_digits import load_digits, train  # noqa: E402

LOADER = """
import sys, time, numpy as np
t0 = time.perf_counter()
import graphad as gd
jac = gd.load(sys.argv[1])
x = gd.Tensor(np.load(sys.argv[2]))
j = jac(x).asnumpy()
t1 = time.perf_counter()
np.save(sys.argv[3], j)
print(f"{1e3 * (t1 - t0):.0f}")
"""


def banner(text):
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def timeit(fn, *args, repeat: int = 20) -> float:
    """Median seconds per call after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        if hasattr(out, "asnumpy"):
            out.asnumpy()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def per_example_grad_norms(net):
    """|grad of the loss of example i w.r.t. all weights|_2, for every i, by vmap(grad)."""
    loss = nn.WithLossCell(net, nn.CrossEntropyLoss())
    params = net.trainable_params()
    g = gd.grad(lambda xi, yi: loss(xi[None], yi[None]), None, weights=params)

    def norms(xb, yb):
        grads = gd.vmap(g)(xb, yb)
        return ops.sqrt(sum(ops.sum(ops.square(gi).reshape(xb.shape[0], -1), 1) for gi in grads))
    return norms, g


def main():
    t_start = time.perf_counter()
    banner("1. train the digits CNN in graph mode (one compiled executable per step)")
    net, losses, acc, ms = train(epochs=30)
    _, _, x_test, y_test = load_digits(0)

    banner("2. per-example gradient norms: vmap(grad(loss, weights))")
    xb, yb = gd.Tensor(x_test[:16]), gd.Tensor(y_test[:16])
    norms_fn, g = per_example_grad_norms(net)
    jitted_norms = gd.jit(norms_fn)
    norms = jitted_norms(xb, yb).asnumpy()
    loop = np.array([np.sqrt(sum(float(np.sum(gi.asnumpy() ** 2)) for gi in g(xb[i], yb[i]))) for i in range(3)])
    print("norms of the first 8 test images:", np.array2string(norms[:8], precision=4))
    print("max |vmap - per-example loop| over the first 3:", float(np.abs(norms[:3] - loop).max()))

    banner("3. input Jacobian d softmax(net(x)) / dx, saved as an AOT artifact, loaded in a fresh process")
    probs = lambda x: ops.softmax(net(x), -1)  # noqa: E731
    jac = gd.jacrev(probs)
    spec = gd.TensorSpec((1, 1, 8, 8))
    tmp = tempfile.mkdtemp(prefix="graphad-demo-")
    artifact = os.path.join(tmp, "digits_jacobian.gdx")
    t = time.perf_counter()
    compiled = gd.jit(jac).lower(spec).compile()
    compile_s = time.perf_counter() - t
    compiled.save(artifact)
    x1 = x_test[:1]
    np.save(os.path.join(tmp, "x.npy"), x1)
    out = subprocess.run([sys.executable, "-c", LOADER, artifact, os.path.join(tmp, "x.npy"),
                          os.path.join(tmp, "j.npy")], capture_output=True, text=True, check=True)
    j_loaded = np.load(os.path.join(tmp, "j.npy"))
    j_here = compiled(gd.Tensor(x1)).asnumpy()
    print(f"artifact {os.path.getsize(artifact) / 1024:.0f} KiB; Jacobian shape {j_loaded.shape}; "
          f"fresh process: import graphad, load, first result in {out.stdout.strip()} ms")
    print("loaded == in-process:", bool(np.array_equal(j_loaded, j_here)),
          f"(compiled in {compile_s:.2f} s)")
    # a float64 finite-difference check of one column of the Jacobian
    gd.set_backend("numpy")
    h, k = 1e-3, 27
    e = np.zeros_like(x1)
    e.reshape(-1)[k] = h
    fd = (probs(gd.Tensor(x1 + e)).asnumpy() - probs(gd.Tensor(x1 - e)).asnumpy()) / (2 * h)
    gd.set_backend("tvm")
    print("max |Jacobian column - central difference|:", float(np.abs(j_here.reshape(10, 64)[:, k] - fd[0]).max()))

    banner("4. times (median per call)")
    rows = []
    xb64 = gd.Tensor(x_test[:64])
    xj = gd.Tensor(x1)
    rows.append(("per-example grad norms, 16 images", timeit(jitted_norms, xb, yb), "norms"))
    rows.append(("input Jacobian (AOT compiled), 1 image", timeit(compiled, xj), "jac"))
    rows.append(("forward, 64 images", timeit(gd.jit(lambda x: net(x)), xb64), "fwd"))
    gd.set_backend("numpy")
    interp = {"norms": timeit(gd.jit(norms_fn), xb, yb, repeat=3), "jac": timeit(gd.jit(jac), xj, repeat=3),
              "fwd": timeit(gd.jit(lambda x: net(x)), xb64, repeat=3)}
    gd.set_backend("tvm")
    jax_times = _jax_times(net, x_test, y_test)
    print(f"{'function':42s} {'graphad':>10s} {'interpreter':>12s} {'JAX jit':>10s}")
    for name, t, key in rows:
        jt = jax_times.get(key)
        print(f"{name:42s} {1e3 * t:8.3f} ms {1e3 * interp[key]:9.2f} ms "
              f"{(f'{1e3 * jt:8.3f} ms' if jt is not None else '        --'):>10s}")
    print(f"train step (batch 64): {ms:.3f} ms; held-out accuracy {100 * acc:.2f}%")
    if not jax_times:
        print("(JAX is not installed: `make bench` installs the bench extras)")
    print(f"\ndemo finished in {time.perf_counter() - t_start:.0f} s")


def _jax_times(net, x_test, y_test) -> dict:
    """The same three functions in JAX with the trained weights ({} without JAX)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    w = {n: jnp.asarray(p.asnumpy()) for n, p in net.parameters_and_names()}

    def conv(x, k, b):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def fwd(w, x):
        x = pool(jax.nn.relu(conv(x, w["conv1.weight"], w["conv1.bias"])))
        x = pool(jax.nn.relu(conv(x, w["conv2.weight"], w["conv2.bias"])))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
        return x @ w["fc2.weight"].T + w["fc2.bias"]

    def loss(w, x, y):
        return -jnp.sum(jax.nn.log_softmax(fwd(w, x[None]))[0, y])

    def norms(w, x, y):
        g = jax.vmap(jax.grad(loss), (None, 0, 0))(w, x, y)
        return jnp.sqrt(sum(jnp.sum(v.reshape(x.shape[0], -1) ** 2, 1) for v in jax.tree_util.tree_leaves(g)))

    jac = jax.jit(jax.jacrev(lambda x: jax.nn.softmax(fwd(w, x), -1)))
    fn = jax.jit(norms)
    f = jax.jit(lambda x: fwd(w, x))
    x16, y16, x1, x64 = (jnp.asarray(x_test[:16]), jnp.asarray(y_test[:16]), jnp.asarray(x_test[:1]),
                         jnp.asarray(x_test[:64]))

    def t(fn, *a):
        return timeit(lambda *b: fn(*b).block_until_ready(), *a)
    return {"norms": t(fn, w, x16, y16), "jac": t(jac, x1), "fwd": t(f, x64)}


if __name__ == "__main__":
    main()
