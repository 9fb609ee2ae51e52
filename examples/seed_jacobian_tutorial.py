"""Every code block of the seed Jacobian/Hessian tutorials (MindSpore's and torch.func's), on graphad.

MindSpore's blocks use `grad_position`, `in_axes`; the torch.func blocks use the aliases
`argnums`, `in_dims`. Random data comes from graphad's generator, so printed Jacobian entries
differ from the tutorials' (which depend on MindSpore's/torch's RNG); shapes, equalities and
closed forms are what the tests assert. Run: python examples/seed_jacobian_tutorial.py
"""
import time

import numpy as np

import graphad as mindspore
from graphad import grad, hessian, jacfwd, jacrev, jvp, ops, vjp, vmap


def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()


def perf_compution(func, run_times, *args, **kwargs):
    start_time = time.perf_counter()
    for _ in range(run_times):
        func(*args, **kwargs)
    end_time = time.perf_counter()
    return (end_time - start_time) * 1000000


def perf_cmp(first, first_descriptor, second, second_descriptor, verbose=True):
    faster, slower = second, first
    gain = (slower - faster) / slower
    if gain < 0:
        gain *= -1
    if verbose:
        print(f" Performance delta: {gain * 100:.4f} percent improvement with {second_descriptor}. ")
    return gain * 100


def run(verbose: bool = True, run_times: int = 500) -> dict:
    out = {}

    def show(key, *values):
        out[key] = values[0] if len(values) == 1 else values
        if verbose:
            print(*values)

    mindspore.set_seed(1)
    D = 16
    weight = ops.randn(D, D)
    bias = ops.randn(D)
    x = ops.randn(D)
    out["data16"] = (weight, bias, x)

    # ---- row by row with vjp and unit vectors
    def partial_forecast(x):
        return ops.dense(x, weight, bias).tanh()

    _, vjp_fn = vjp(partial_forecast, x)

    def compute_jac_matrix(unit_vectors):
        jacobian_rows = [vjp_fn(vec)[0] for vec in unit_vectors]
        return ops.stack(jacobian_rows)

    unit_vectors = ops.eye(D)
    jacobian = compute_jac_matrix(unit_vectors)
    show("jac_shape", jacobian.shape)
    show("jac_row0", jacobian[0])
    out["jacobian"] = jacobian

    jacrev_jacobian = jacrev(forecast, grad_position=2)(weight, bias, x)
    assert np.allclose(jacrev_jacobian.asnumpy(), jacobian.asnumpy())
    out["jacrev_jacobian"] = jacrev_jacobian

    # torch: vmap(vjp_fn)(unit_vectors) and jacrev(..., argnums=2)
    ft_jacobian, = vmap(vjp_fn)(unit_vectors)
    assert np.allclose(ft_jacobian.asnumpy(), jacobian.asnumpy())
    out["vmap_vjp_jacobian"] = ft_jacobian
    assert np.allclose(jacrev(forecast, argnums=2)(weight, bias, x).asnumpy(), jacobian.asnumpy())

    # ---- timing: loop of vjp rows vs jacrev
    xp = x.copy()
    loop_cost = perf_compution(compute_jac_matrix, run_times, xp)
    jac_fn = jacrev(forecast, grad_position=2)
    jacrev_cost = perf_compution(jac_fn, run_times, weight, bias, x)
    if verbose:
        print(f"compute_jac_matrix run {run_times} times, cost time {loop_cost} microseconds.")
        print(f"jacrev run {run_times} times, cost time {jacrev_cost} microseconds.")
    out["perf_gain"] = perf_cmp(loop_cost, "for loop", jacrev_cost, "jacrev", verbose)

    jacrev_weight, jacrev_bias = jacrev(forecast, grad_position=(0, 1))(weight, bias, x)
    show("jac_wb_shapes", jacrev_weight.shape, jacrev_bias.shape)
    out["jac_wb"] = (jacrev_weight, jacrev_bias)

    # ---- jacfwd vs jacrev on tall and wide problems (torch blocks, argnums)
    for din, dout in ((32, 2048), (2048, 32)):
        w = ops.randn(dout, din)
        b = ops.randn(dout)
        xx = ops.randn(din)
        if verbose:
            print(w.shape)
        t_fwd = perf_compution(jacfwd(forecast, argnums=2), 20, w, b, xx) / 20
        t_rev = perf_compution(jacrev(forecast, argnums=2), 20, w, b, xx) / 20
        if verbose:
            print(f"jacfwd time: {t_fwd:.1f} us\njacrev time: {t_rev:.1f} us")
        out[f"fwd_rev_{din}x{dout}"] = (w, b, xx)

    # ---- Hessians: all four compositions agree
    Din, Dout = 32, 16
    weight = ops.randn(Dout, Din)
    bias = ops.randn(Dout)
    x = ops.randn(Din)
    hess1 = jacfwd(jacfwd(forecast, grad_position=2), grad_position=2)(weight, bias, x)
    hess2 = jacfwd(jacrev(forecast, grad_position=2), grad_position=2)(weight, bias, x)
    hess3 = jacrev(jacfwd(forecast, grad_position=2), grad_position=2)(weight, bias, x)
    hess4 = jacrev(jacrev(forecast, grad_position=2), grad_position=2)(weight, bias, x)
    show("hess_allclose", np.allclose(hess1.asnumpy(), hess2.asnumpy()) and
         np.allclose(hess2.asnumpy(), hess3.asnumpy(), atol=1e-6) and
         np.allclose(hess3.asnumpy(), hess4.asnumpy(), atol=1e-6))
    out["hessians"] = (weight, bias, x, hess1, hess2, hess3, hess4)
    # torch: hessian(predict, argnums=2) on 32 x 512
    w = ops.randn(32, 512)
    b = ops.randn(32)
    xx = ops.randn(512)
    hess_api = hessian(forecast, argnums=2)(w, b, xx)
    hess_fwdfwd = jacfwd(jacfwd(forecast, argnums=2), argnums=2)(w, b, xx)
    show("hess_api_allclose", np.allclose(hess_api.asnumpy(), hess_fwdfwd.asnumpy(), atol=1e-6))

    # ---- batch Jacobian and batch Hessian
    batch_size, Din, Dout = 64, 31, 33
    weight = ops.randn(Dout, Din)
    bias = ops.randn(Dout)
    x = ops.randn(batch_size, Din)
    compute_batch_jacobian = vmap(jacrev(forecast, grad_position=2), in_axes=(None, None, 0))
    batch_jacobian = compute_batch_jacobian(weight, bias, x)
    show("batch_jacobian_shape", batch_jacobian.shape)

    def predict_with_output_summed(weight, bias, x):
        return forecast(weight, bias, x).sum(0)

    batch_jacobian1 = jacrev(predict_with_output_summed, argnums=2)(weight, bias, x).movedim(1, 0)
    assert np.allclose(batch_jacobian.asnumpy(), batch_jacobian1.asnumpy(), atol=1e-6)

    hess = jacrev(jacrev(forecast, grad_position=2), grad_position=2)
    compute_batch_hessian = vmap(hess, in_axes=(None, None, 0))
    batch_hessian = compute_batch_hessian(weight, bias, x)
    show("batch_hessian_shape", batch_hessian.shape)
    batch_hess_torch = vmap(hessian(forecast, argnums=2), in_dims=(None, None, 0))(weight, bias, x)
    assert np.allclose(batch_hess_torch.asnumpy(), batch_hessian.asnumpy(), atol=1e-6)
    out["batch"] = (weight, bias, x, batch_jacobian, batch_hessian)

    # ---- Hessian-vector products
    def hvp_revfwd(f, inputs, vector):
        return jvp(grad(f), inputs, vector)[1]

    def f(x):
        return x.sin().sum()

    inputs = ops.randn(128)
    vector = ops.randn(128)
    result_hvp_revfwd = hvp_revfwd(f, inputs, vector)
    show("hvp_shape", result_hvp_revfwd.shape)

    def hvp_revrev(f, inputs, vector):
        _, vjp_fn = vjp(grad(f), *inputs)
        return vjp_fn(*vector)

    result_hvp_revrev = hvp_revrev(f, (inputs,), (vector,))
    show("hvp_revrev_shape", result_hvp_revrev[0].shape)
    assert np.allclose(result_hvp_revfwd.asnumpy(), result_hvp_revrev[0].asnumpy())
    out["hvp"] = (inputs, vector, result_hvp_revfwd, result_hvp_revrev[0])
    return out


if __name__ == "__main__":
    run()
