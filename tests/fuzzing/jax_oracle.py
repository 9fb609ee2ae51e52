"""A second, independent reference: the raw program evaluated by JAX (GRAPHAD_FUZZ_ORACLE=jax).

graphad's NumPy interpreter is the fuzzer's main oracle, and its kernels are graphad code too.
With JAX installed (`make bench` installs the bench extras) every program is also evaluated op
by op with jax.numpy / jax.lax in float64-enabled mode, and compared with the interpreter under
the same rules as the compiled code (IEEE kinds exactly, values within the conditioning-aware
tolerance).

JAX runs in a separate *spawned* worker process (`JaxWorker`): the fuzzer forks a child per
compiled program, and forking a process in which JAX's runtime threads run can deadlock. The
worker receives the program as IR text plus its inputs and returns JAX's outputs.
"""
from __future__ import annotations

import numpy as np

from graphad.ir.core import Graph

from . import compare as C

_JAX = None


def jax_available() -> bool:
    """Whether JAX can be imported (checked without importing it into this process)."""
    import importlib.util
    return importlib.util.find_spec("jax") is not None


def _load_jax() -> bool:
    """(In the worker.) Import and configure JAX once."""
    global _JAX
    if _JAX is None:
        try:
            import jax
            jax.config.update("jax_enable_x64", True)
            jax.config.update("jax_platforms", "cpu")
            _JAX = jax
        except ImportError:
            _JAX = False
    return _JAX is not False


def _rules():
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy.special import digamma, erf, erfc, erfinv, polygamma
    highest = lax.Precision.HIGHEST

    def div(a, b):
        if jnp.issubdtype(a.dtype, jnp.floating):
            return a / b
        a, b = jnp.broadcast_arrays(a, b)  # lax.div does not broadcast
        return lax.div(a, b)  # C division: truncates

    def slice_(x, starts, stops, steps):
        return x[tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))]

    def pad(x, lo, hi, interior, value):
        return lax.pad(x, jnp.asarray(value, x.dtype), list(zip(lo, hi, interior)))

    def norm(idx, n):
        return jnp.where(idx < 0, idx + n, idx)

    def take(x, idx, axis):
        return jnp.take(x, norm(idx, x.shape[axis]), axis=axis)

    def index_add(x, idx, upd, axis):
        # float16/bfloat16 accumulated in float32 and rounded once, as graphad's sums are (user
        # guide): XLA's scatter-add rounds after every duplicate index's addition
        half = x.dtype in (jnp.float16, jnp.bfloat16)
        xs, us = (x.astype(jnp.float32), upd.astype(jnp.float32)) if half else (x, upd)
        out = xs.at[(slice(None),) * axis + (norm(idx, x.shape[axis]),)].add(us)
        return out.astype(x.dtype) if half else out

    def conv2d(x, w, stride, padding, dilation, groups):
        # padded explicitly: XLA's CPU convolution skips the padding's taps, so a padded zero
        # times an infinite weight gave no NaN (8.9e37 where graphad, NumPy and torch give NaN)
        x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), (padding[0], padding[1], 0),
                                                (padding[2], padding[3], 0)])
        out = lax.conv_general_dilated(x, w, tuple(stride), [(0, 0), (0, 0)],
                                       rhs_dilation=tuple(dilation), feature_group_count=groups,
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=highest)
        # graphad's (NumPy's, torch's) convolution adds its products to +0.0, so no output is -0.0;
        # XLA keeps a one-tap output's -0.0 (0 * -1.38 on the padding, fuzz6 seed 2512102)
        return out + jnp.zeros((), out.dtype)

    def arange(start, stop, step, dtype):
        n = max(0, int(np.ceil((stop - start) / step)))
        return jnp.asarray(np.arange(start, stop, step)[:n].astype(dtype))

    def einsum(*xs, spec):
        # an operand with no elements leaves every output element an empty sum: NumPy's (and
        # graphad's) +0.0, where jnp.einsum may first sum a lone index's operand and multiply the
        # +0.0 by a negative factor ("a,->" of an empty vector and -1.4 gives -0.0)
        out = jnp.einsum(spec, *xs, precision=highest)
        return jnp.zeros(out.shape, out.dtype) if any(x.size == 0 for x in xs) else out

    def cumsum(x, axis):
        # half types accumulated in float32 and rounded once, as graphad's cumsum. XLA's sums
        # start from +0.0, so a prefix of -0.0 terms gave +0.0 where the running sum of NumPy,
        # torch and graphad (y_0 = x_0) is -0.0 (fuzz seed 2512156): such prefixes are set back
        half = x.dtype in (jnp.float16, jnp.bfloat16)
        out = jnp.cumsum(x.astype(jnp.float32) if half else x, axis=axis).astype(x.dtype)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return out
        negative_zeros = jnp.cumprod(((x == 0) & jnp.signbit(x)).astype(jnp.int32), axis=axis) == 1
        return jnp.where(negative_zeros, -jnp.zeros((), x.dtype), out)

    def sign_fixed(v):
        # graphad's sign (or phase) convention for eigen and singular vectors, which LAPACK leaves
        # open: the first component of magnitude >= 0.5 / sqrt(n) real and positive
        from graphad.prims.decomp import sign_normalize
        return jnp.asarray(sign_normalize(np.asarray(v)))

    def eigh(a):
        w, v = jnp.linalg.eigh(a, UPLO="L", symmetrize_input=False)
        return jnp.concatenate([sign_fixed(v), w.astype(a.dtype)[..., None, :]], axis=-2)

    def qr(a):
        return jnp.concatenate(jnp.linalg.qr(a, mode="reduced"), axis=-2)

    def svd(a):
        u, s, vh = jnp.linalg.svd(a, full_matrices=False)
        from graphad.prims.decomp import svd_canonical
        v = np.asarray(jnp.conj(jnp.swapaxes(vh, -1, -2)))
        return jnp.asarray(svd_canonical(np.asarray(u), np.asarray(s).astype(a.dtype), v))

    def polygamma_(x, n):
        # JAX's digamma/polygamma at the poles and at -inf do not follow scipy's convention that
        # graphad keeps (digamma(+-0) = -+inf, NaN at negative integers; +inf for odd n): the
        # values there are taken from that convention, everything else is JAX's
        pole = (x <= 0) & (jnp.floor(x) == x)
        y = digamma(x) if n == 0 else polygamma(n, x)
        if n % 2:
            at_pole = jnp.inf
        else:
            at_pole = jnp.where(x == 0, jnp.where(jnp.signbit(x), jnp.inf, -jnp.inf), jnp.nan)
        y = jnp.where(pole, at_pole, y)
        if n >= 1:
            # at +inf the limit, zero from the side of (-1)^(n+1) (n - 1)! / x^n, as graphad and
            # mpmath give; JAX gives NaN there (fuzz seed 2512158: erfinv(1.0) = inf fed it)
            y = jnp.where(jnp.isposinf(x), -0.0 if n % 2 == 0 else 0.0, y)
        return jnp.where(jnp.isneginf(x), jnp.nan, y).astype(x.dtype)

    def in_f64(fn):
        # JAX's float32 special functions are polynomial fits a few ulp off (lgamma(2.0) is
        # 4.8e-7, not 0): evaluate them in float64 and round, as graphad's reference does
        return lambda x: fn(x.astype(jnp.float64)).astype(x.dtype)

    def half_f64(fn):
        # float16/bfloat16: evaluated in float64 and rounded once, as graphad's reference and its
        # compiled half paths are (lowering/bf16.py); several jnp functions are compositions
        # computed in the half type itself (hypot(10, 3) in bfloat16 is 10.5, not 10.4375;
        # arccosh's few-ulp error grew to 7% through exp(exp(.)))
        def f(*xs, **kw):
            half = [x.dtype for x in xs if x.dtype in (jnp.float16, jnp.bfloat16)]
            if not half:
                return fn(*xs, **kw)
            return fn(*[x.astype(jnp.float64) if x.dtype in half else x for x in xs], **kw).astype(half[0])
        return f

    def int_mod(fn):
        def f(a, b):
            if jnp.issubdtype(a.dtype, jnp.floating):
                return fn(a, b)
            safe = jnp.where(b == 0, 1, b)  # NumPy's x mod 0 is 0
            return jnp.where(b == 0, 0, fn(a, safe)).astype(a.dtype)
        return f

    def remainder(a, b):
        # NumPy's (and graphad's) zero result takes the divisor's sign: remainder(0.0, -2.4) is
        # -0.0; jnp.remainder gives +0.0 there
        r = jnp.remainder(a, b)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return r
        return jnp.where(r == 0, jnp.copysign(jnp.zeros_like(r), b), r)

    def reduce(fn):
        return lambda x, axes, keepdims: fn(x, axis=tuple(axes), keepdims=keepdims)

    rules = {
        "exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p, "expm1": jnp.expm1, "sqrt": jnp.sqrt,
        "rsqrt": lax.rsqrt, "reciprocal": lambda x: 1 / x, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan,
        "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "erf": erf, "floor": jnp.floor, "neg": jnp.negative,
        "abs": jnp.abs, "sign": jnp.sign, "square": jnp.square, "relu": lambda x: jnp.maximum(x, 0).astype(x.dtype),
        "logical_not": jnp.logical_not, "signbit": jnp.signbit, "stop_gradient": lax.stop_gradient,
        "ceil": jnp.ceil, "round": jnp.round, "trunc": jnp.trunc, "exp2": jnp.exp2, "log2": jnp.log2,
        "log10": jnp.log10, "sinh": jnp.sinh, "cosh": jnp.cosh, "arcsin": jnp.arcsin, "arccos": jnp.arccos,
        "arctan": jnp.arctan, "arcsinh": jnp.arcsinh, "arccosh": jnp.arccosh, "arctanh": jnp.arctanh,
        "cbrt": jnp.cbrt, "erfc": in_f64(erfc), "erfinv": in_f64(erfinv), "lgamma": in_f64(lax.lgamma),
        "polygamma": lambda x, n: in_f64(lambda v: polygamma_(v, n))(x),
        "arctan2": jnp.arctan2, "hypot": jnp.hypot, "logaddexp": jnp.logaddexp, "fmod": int_mod(jnp.fmod),
        "remainder": int_mod(remainder),
        "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": div, "pow": jnp.power,
        "maximum": jnp.maximum, "minimum": jnp.minimum,
        "equal": jnp.equal, "not_equal": jnp.not_equal, "less": jnp.less, "less_equal": jnp.less_equal,
        "greater": jnp.greater, "greater_equal": jnp.greater_equal, "where": jnp.where,
        "astype": lambda x, dtype: x.astype(dtype),
        "sum": reduce(jnp.sum), "prod": reduce(jnp.prod), "max": reduce(jnp.max), "min": reduce(jnp.min),
        "argmax": lambda x, axis, keepdims: jnp.argmax(x, axis=axis, keepdims=keepdims).astype(jnp.int64),
        "argmin": lambda x, axis, keepdims: jnp.argmin(x, axis=axis, keepdims=keepdims).astype(jnp.int64),
        "matmul": lambda a, b: jnp.matmul(a, b, precision=highest),
        "einsum": einsum,
        "conv2d": conv2d, "reshape": lambda x, shape: jnp.reshape(x, shape),
        "broadcast_to": lambda x, shape: jnp.broadcast_to(x, shape),
        "transpose": lambda x, perm: jnp.transpose(x, perm), "slice": slice_, "pad": pad,
        "flip": lambda x, axes: jnp.flip(x, tuple(axes)) if axes else x,
        "concat": lambda *xs, axis: jnp.concatenate(xs, axis=axis), "take": take, "index_add": index_add,
        "index_check": lambda idx, length, op: norm(idx, length),
        "constant": lambda value, dtype: jnp.asarray(np.asarray(value, dtype)),
        "full": lambda shape, value, dtype: jnp.full(shape, value, dtype),
        "arange": arange, "eye": lambda n, m, k, dtype, basis=False: jnp.eye(n, m, k, dtype=dtype),
        "real": jnp.real, "imag": jnp.imag, "conj": jnp.conj,
        "complex": lambda a, b: lax.complex(*jnp.broadcast_arrays(a, b)),
        # sorting, scans, bits (graphad's argsort is NumPy's stable one: NaNs last, ties by index,
        # as jnp.argsort's; its shifts are NumPy's and XLA's: a count outside [0, bits) gives 0,
        # or the sign fill right)
        "argsort": lambda x, axis: jnp.argsort(x, axis=axis, stable=True).astype(jnp.int64),
        "cumsum": cumsum,
        "bitwise_and": jnp.bitwise_and, "bitwise_or": jnp.bitwise_or, "bitwise_xor": jnp.bitwise_xor,
        "left_shift": jnp.left_shift, "right_shift": jnp.right_shift,
        # decompositions, packed as graphad's primitives pack them (graphad/prims/decomp.py)
        "solve": jnp.linalg.solve, "det": jnp.linalg.det,
        "slogdet": lambda a: jnp.stack(jnp.linalg.slogdet(a), axis=-1).astype(a.dtype),
        "cholesky": lambda a: lax.linalg.cholesky(a, symmetrize_input=False),
        "triangular_solve": lambda a, b, lower, trans, unit_diagonal: lax.linalg.triangular_solve(
            a, b, left_side=True, lower=bool(lower), transpose_a=bool(trans), unit_diagonal=bool(unit_diagonal)),
        "eigh": eigh, "qr": qr, "svd": svd,
    }
    for name in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh", "sigmoid", "erf",
                 "exp2", "log2", "log10", "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh",
                 "arctanh", "cbrt", "arctan2", "hypot", "logaddexp", "pow"):
        rules[name] = half_f64(rules[name])
    return rules


_RULES = None


def flush_subnormals(inputs: list) -> list:
    """The inputs with subnormal floats replaced by zeros of their sign (what XLA's CPU code sees:
    it runs with denormals-are-zero); arrays without subnormals are returned as they are."""
    out = []
    for a in inputs:
        a = np.asarray(a)
        if a.dtype.kind == "f" and a.size:
            tiny = np.abs(a) < np.finfo(a.dtype).smallest_normal
            sub = tiny & (a != 0)
            if sub.any():
                a = np.where(sub, np.copysign(np.zeros_like(a), a), a).astype(a.dtype)
        out.append(a)
    return out


def jax_eval(graph: Graph, inputs: list) -> list[np.ndarray] | None:
    """(In the worker.) The graph's outputs computed by JAX, or None when a primitive has no JAX
    rule here."""
    global _RULES
    if not _load_jax():
        return None
    import jax.numpy as jnp
    if _RULES is None:
        _RULES = _rules()
    env = {v: jnp.asarray(a) for v, a in zip(graph.inputs, inputs)}
    for n in graph.nodes:
        fn = _RULES.get(n.prim.name)
        if fn is None:
            return None
        out = fn(*[env[v] for v in n.inputs], **n.attrs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        for v, o in zip(n.outputs, outs):
            env[v] = o
    return [np.asarray(env[v]).astype(v.type.dtype.np) for v in graph.outputs]


def _serve(conn) -> None:
    """The worker's loop: (IR text, inputs) in, outputs (or None, or an error string) out."""
    from graphad.ir.parser import parse_graph
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        text, inputs = msg
        try:
            conn.send(("ok", jax_eval(parse_graph(text), inputs)))
        except Exception as e:  # noqa: BLE001 - reported to the fuzzer as a JAX failure
            conn.send(("error", f"{type(e).__name__}: {e}"))


class JaxWorker:
    """A spawned process evaluating graphs with JAX (started on first use)."""

    def __init__(self):
        self._proc = None
        self._conn = None

    def evaluate(self, graph: Graph, inputs: list):
        """("ok", outputs or None) or ("error", message) from the worker."""
        if self._proc is None or not self._proc.is_alive():
            import multiprocessing as mp
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
            self._proc.start()
        self._conn.send((str(graph), [np.asarray(a) for a in inputs]))
        return self._conn.recv()


_WORKER = JaxWorker()


def check_with_jax(graph: Graph, inputs: list, ref: list, sens: list, unstable: list):
    """None when JAX agrees with the interpreter's `ref`, a description when not, False when JAX
    (or a rule for one of the graph's primitives) is missing."""
    if not jax_available():
        return False
    status, got = _WORKER.evaluate(graph, inputs)
    if status != "ok":
        return f"JAX failed: {got}"
    if got is None:
        return False
    for k, (a, b) in enumerate(zip(got, ref)):
        m = C.mismatch(a, b, sens=sens[k], unstable=unstable[k], what=f"JAX output {k}")
        if m:
            return m
    return None
