from common import *
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(12)
a = rng.standard_normal((2, 3, 4, 5)); bm = rng.standard_normal((5, 1, 6)); c = rng.standard_normal((4,))
def f(x, y, z):
    xt = ops.transpose(x, (0, 2, 1, 3))          # (2,4,3,5)
    u = ops.einsum("...ij,jk...->...ik", xt, ops.transpose(y, (0, 2, 1)))  # y^T: (5,6,1) -> k=6, ell (1,)
    v = ops.einsum("...i,i->...", ops.swapaxes(u, -1, -2)[..., :4, :] if False else u[..., :4], z)
    return ops.sum(ops.tanh(v) ** 2)
def fj(x, y, z):
    xt = jnp.transpose(x, (0, 2, 1, 3))
    u = jnp.einsum("...ij,jk...->...ik", xt, jnp.transpose(y, (0, 2, 1)))
    v = jnp.einsum("...i,i->...", u[..., :4], z)
    return jnp.sum(jnp.tanh(v) ** 2)
try:
    print("np check", np.allclose(float(fj(a, bm, c)), float(np.sum(np.tanh(np.einsum("...i,i->...", np.einsum("...ij,jk...->...ik", a.transpose(0,2,1,3), bm.transpose(0,2,1))[..., :4], c))**2))))
except Exception as e: print("np/jax", e)
for b in ("tvm", "numpy"):
    v = gd.jit(f, backend=b)(Tensor(a), Tensor(bm), Tensor(c)).asnumpy()
    report("fused value " + b, np.allclose(v, float(fj(a, bm, c)), rtol=1e-12), f"{v} {fj(a, bm, c)}")
    g = gd.jit(gd.grad(f, (0, 1, 2)), backend=b)(Tensor(a), Tensor(bm), Tensor(c))
    gj = jax.grad(fj, (0, 1, 2))(a, bm, c)
    for i, (p, q) in enumerate(zip(g, gj)):
        report(f"fused grad{i} {b}", np.allclose(p.asnumpy(), np.asarray(q), rtol=1e-11, atol=1e-12), str(np.abs(p.asnumpy() - np.asarray(q)).max()))
# hessian wrt z
H = gd.jit(gd.hessian(f, 2), backend="tvm")(Tensor(a), Tensor(bm), Tensor(c)).asnumpy()
Hj = np.asarray(jax.hessian(fj, 2)(a, bm, c))
report("fused hessian", np.allclose(H, Hj, rtol=1e-10, atol=1e-10), str(np.abs(H - Hj).max()))
# vmap over a batch of a (axis 1) of the grad
A = rng.standard_normal((2, 7, 3, 4, 5))
gv = gd.jit(gd.vmap(gd.grad(f), in_axes=(1, None, None)), backend="tvm")(Tensor(A), Tensor(bm), Tensor(c)).asnumpy()
gl = np.stack([np.asarray(jax.grad(fj)(A[:, i], bm, c)) for i in range(7)])
report("vmap grad fused", np.allclose(gv, gl, rtol=1e-11, atol=1e-12))
# vmap where the vmapped operand is the one with a length-1 ellipsis dim
Bs = rng.standard_normal((3, 5, 1, 6))
got = gd.jit(gd.vmap(lambda y: ops.einsum("...ij,jk...->...ik", Tensor(a.transpose(0, 2, 1, 3)), ops.transpose(y, (0, 2, 1)))), backend="tvm")(Tensor(Bs)).asnumpy()
want = np.stack([np.einsum("...ij,jk...->...ik", a.transpose(0, 2, 1, 3), y.transpose(0, 2, 1)) for y in Bs])
report("vmap broadcast-1 operand", got.shape == want.shape and np.allclose(got, want, rtol=1e-12))
# vmap where the batched size-1 batch axis: vmap over an axis of size 1
got = gd.vmap(lambda x, y: ops.einsum("i,i", x, y))(Tensor(rng.standard_normal((4, 1))), Tensor(rng.standard_normal((4, 3))))
print("vmap i,i (1 vs 3):", got.shape)
# jacfwd of einsum with broadcasting 1 -> compare jacrev
for spec, shapes in [("i,i->i", [(1,), (3,)]), ("...ij,...jk", [(1, 2, 3), (4, 3, 2)]), ("ij,jk", [(2, 1), (3, 2)])]:
    xs = [rng.standard_normal(s) for s in shapes]
    jf = gd.jacfwd(lambda *t: ops.einsum(spec, *t), (0, 1))(*[Tensor(x) for x in xs])
    jr = gd.jacrev(lambda *t: ops.einsum(spec, *t), (0, 1))(*[Tensor(x) for x in xs])
    report(f"jac {spec}", all(np.allclose(p.asnumpy(), q.asnumpy()) for p, q in zip(jf, jr)))
    # compare with explicit broadcast via jax
    bxs = np.broadcast_arrays(*xs) if spec == "i,i->i" else None
print("fails", len(FAILS))
