"""The checks of one program, each against an oracle that shares no code path with what it checks.

(a) compile: the program after graphad's default passes, compiled by the TVM backend, against the
    NumPy reference interpreter on the *raw* program (so simplify bugs show too); run twice on
    fresh inputs, each placed between guard zones of NaN/sentinel memory (an out-of-bounds read
    comes back as poison), with poisoned outputs and workspaces (lowering/poison.py) for most
    programs. Both runs must agree bitwise; compile time, scheduled-TIR size and LLVM-IR size must
    stay within a budget per node. The derivative/vmap graph below is compiled and compared the
    same way.
(b) fd: for smooth programs (float64), J v from forward mode against central differences of the
    interpreted program (two step sizes; where they disagree the point is too curved to judge).
(c) adjoint: <u, J v> from forward mode == <J^T u, v> from reverse mode.
(d) vmap: the batched program against a loop over the examples.
With GRAPHAD_FUZZ_ORACLE=jax the raw program is also evaluated by JAX (jax_oracle.py).

A disagreement names the check and a suspected cause. For a compile mismatch the program is
recompiled unscheduled and interpreted after the passes, which separates graph passes (simplify),
graphad's CPU schedules, and the Relax lowering / TVM.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from graphad.dtypes import is_bfloat16
from graphad.errors import GraphadError
from graphad.frontend.function import default_pipeline
from graphad.frontend.trace import inline_graph, trace_to_graph
from graphad.ir.core import Graph, TensorType
from graphad.ir.interpret import interpret

from . import compare as C
from .gen import Program
from .sandbox import run_in_child, warm_up


@dataclass
class Disagreement:
    """One failed check: which (a..d), the suspected cause, and what was seen."""

    check: str
    cause: str
    detail: str

    def __str__(self):
        return f"[{self.check}] {self.cause}: {self.detail}"


@dataclass
class Budget:
    """Per-program budgets, in CPU seconds (a loaded machine stretches wall time, not CPU time).
    `cpu_hard_s` kills the compiling child (a hang is a failure; `wall_hard_s` is the backstop);
    the compile of each graph must stay under base + per_node * nodes CPU seconds. Size: the
    scheduled TIR (TVMScript characters) and the generated LLVM IR (bytes), likewise."""

    cpu_hard_s: float = float(os.environ.get("GRAPHAD_FUZZ_TIMEOUT", "30"))
    wall_hard_s: float = 240.0
    compile_base_s: float = 5.0
    compile_per_node_s: float = 0.25
    tir_base: int = 60_000
    tir_per_node: int = 40_000
    llvm_base: int = 600_000
    llvm_per_node: int = 200_000
    mem_bytes: int = 6 << 30

    def limit(self, base, per_node, nodes: int):
        """The budget of a graph with `nodes` nodes."""
        return base + per_node * max(nodes, 1)


@dataclass
class Stats:
    """Counters of a fuzzing session (printed by `make fuzz`)."""

    programs: int = 0
    compiled: int = 0
    fd_checked: int = 0
    adjoint_checked: int = 0
    vmap_checked: int = 0
    jax_checked: int = 0
    disagreements: int = 0
    seconds: float = 0.0
    fallbacks: int = 0
    subnormals_flushed: int = 0  # compiled outputs that are the reference's on subnormal-flushed inputs
    prims: dict = field(default_factory=dict)


STATS = Stats()


# ---------------------------------------------------------------- helpers

# the adjoint identity's relative tolerance by the least precise float type a derived graph uses
ADJOINT_RTOL = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 6e-2}

def _guard_fill(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or is_bfloat16(dtype):  # (ml_dtypes' bfloat16 is of kind "V")
        return np.nan
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).min + 0x5A  # an implausible value, not a common sentinel such as -1


def guarded(a: np.ndarray) -> np.ndarray:
    """A fresh 64-byte aligned copy of `a` with 128 bytes of NaN/sentinel before and after it."""
    from graphad.tensor import aligned_empty
    a = np.asarray(a)
    g = max(1, 128 // a.dtype.itemsize)
    buf = aligned_empty((a.size + 2 * g,), a.dtype)
    buf[...] = _guard_fill(a.dtype)
    view = buf[g:g + a.size].reshape(a.shape)
    view[...] = a
    return view


class _TooBig(Exception):
    """The scheduled TIR is over the code-size budget: the compile stops before codegen."""


REDONE_BUILD_WARNINGS = ("could not be linked from kernel objects", "rejected a scheduled kernel", "a build split over")
FALLBACKS_SAVED_PER_PROCESS = 5  # programs whose build was redone, saved under new/fallbacks/ for triage
_fallbacks_saved = 0


def _save_fallback(p: Program, name: str, reason: str) -> None:
    """Keep a program whose build was redone another way (not a disagreement: the results agree)."""
    global _fallbacks_saved
    if _fallbacks_saved >= FALLBACKS_SAVED_PER_PROCESS:
        return
    _fallbacks_saved += 1
    from . import fixtures
    stem = fixtures.save(p, [Disagreement("fallback", f"the {name} graph's build was redone", reason)],
                         directory=os.path.join(fixtures.NEW, "fallbacks"))
    print(f"  build redone for the {name} graph ({reason[:160]}) -> {os.path.relpath(stem)}", flush=True)


def _compile_and_run(graph: Graph, inputs: list, poison: bool, runs: int = 2, schedule: bool = True,
                     tir_limit: int | None = None) -> dict:
    """(In the child.) Compile `graph` and run it `runs` times on fresh guarded inputs."""
    from graphad.lowering import parallel_build, pipeline
    from graphad.lowering.poison import inspect_tir, set_poison
    from graphad.runtime import executable
    # a redone build is seen by its warning, which graphad gives once per process: say it again for
    # this graph (the program's and the derived graph's builds share a child; a reviewer's finding)
    pipeline._SCHEDULE_REJECTED_WARNED = False
    parallel_build._FAILED_WARNED = False
    executable._KERNEL_LINK_WARNED = False
    from graphad.runtime.executable import build_executable, graph_for_lowering
    from graphad.frontend.function import _complex_runner, complex_value
    from graphad.runtime.host import HostProgram, has_control_flow
    sizes: list[int] = []

    def measure(mod, stage):
        try:
            text = mod.script()
        except Exception:  # noqa: BLE001 - only the printer: the build guards the literals first
            # TVM's TIR printer folds literal arithmetic as it prints and aborts on a float 1.0 / 0.0
            # (the reciprocal of an empty sum, folded to literals: fixture
            # reciprocal_of_empty_sum_printer), which codegen never sees: the IEEE guard
            # (lowering/ieee.py) turns float literals into opaque bit patterns before it
            from graphad.lowering.ieee import guard_module
            text = guard_module(mod).script()
        sizes.append(len(text))
        if tir_limit is not None and sizes[-1] > tir_limit:
            raise _TooBig(f"scheduled TIR of {sizes[-1]} characters")

    # the LLVM IR of every module a build makes: one for a build in one piece, the main's and each
    # group's for a split one (lowering/kernel_objects.py), whose library keeps no IR to read later
    import importlib
    tb = importlib.import_module("tvm.tirx.build")
    ir_sizes: list[int] = []
    real_codegen = tb.codegen_build

    def codegen_measured(mod, target):
        lib = real_codegen(mod, target)
        try:
            ir_sizes.append(len(lib.inspect_source("ll")))
        except Exception:  # noqa: BLE001 - the size is informative, its absence is not a failure
            ir_sizes.append(-(1 << 60))
        return lib

    t0 = time.process_time()  # CPU seconds: what the compile costs, however loaded the machine is
    import warnings
    tb.codegen_build = codegen_measured
    try:
        with set_poison(poison), inspect_tir(measure), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # what the runtime does: custom calls and checkpoints inlined; control flow runs on the host
            # over its compiled segments and regions (always scheduled: each is an ordinary build)
            graph = graph_for_lowering(graph)
            if complex_value(graph) is not None:
                # as the runtime does it: compiled as real/imaginary pairs (passes/complex_split.py), or
                # interpreted where a primitive has no real-pair rule; the pairs built as below
                exe = _complex_runner(graph, None, lambda g: HostProgram(g) if has_control_flow(g)
                                      else build_executable(g, None, schedule=schedule))
            elif has_control_flow(graph):
                exe = HostProgram(graph)
            else:
                exe = build_executable(graph, None, schedule=schedule)
    finally:
        tb.codegen_build = real_codegen
    seconds = time.process_time() - t0
    # a build that failed and was redone another way (kernel objects not linked, a schedule TVM
    # rejected): correct results, but a compiler bug to triage
    redone = [str(w.message) for w in caught if any(k in str(w.message) for k in REDONE_BUILD_WARNINGS)]
    # several libraries (control flow on the host) or a build redone: no single figure
    llvm = -1 if isinstance(exe, HostProgram) or redone else max(-1, sum(ir_sizes))
    outs = []
    for _ in range(runs):
        res = exe([guarded(a) for a in inputs])
        outs.append([np.array(np.asarray(t), copy=True) for t in res])
    return {"outs": outs, "seconds": seconds, "tir": max(sizes, default=0), "llvm": llvm,
            "fallback": (getattr(exe, "report", None) or {}).get("fallback") or (redone[0] if redone else None)}


def count_nodes(g: Graph) -> int:
    """Nodes of g and of every region nested in its nodes (what the compile budgets scale with)."""
    n = 0
    for node in g.nodes:
        n += 1
        for v in node.attrs.values():
            for sub in (v if isinstance(v, tuple) else (v,)):
                if isinstance(sub, Graph):
                    n += count_nodes(sub)
    return n


def _float_inputs(g: Graph) -> list[int]:
    return [i for i, v in enumerate(g.inputs) if v.type.dtype.is_float]


def _float_outputs(g: Graph) -> list[int]:
    return [i for i, v in enumerate(g.outputs) if v.type.dtype.is_float]


@dataclass
class Derived:
    """The derivative + vmap graph of a program and the values to run it on."""

    graph: Graph
    inputs: list
    wrt: list
    cts_for: list
    n_out: int
    tangents: list
    cotangents: list
    batched_inputs: list
    batched_flags: list


def derived_graph(p: Program, rng: np.random.Generator) -> Derived | None:
    """One graph computing J v (forward mode), J^T u (reverse mode) and the vmapped program."""
    from graphad.passes.forward_ad import jvp_graph
    from graphad.passes.reverse_ad import vjp_graph
    from graphad.passes.vmap import batch_graph
    g = p.graph
    n = len(g.inputs)
    wrt, cts_for = _float_inputs(g), _float_outputs(g)
    do_ad = bool(wrt and cts_for)
    if not do_ad:
        wrt, cts_for = [], []
    J = jvp_graph(g, wrt) if do_ad else None
    V = vjp_graph(g, wrt, cts_for) if do_ad else None
    B = p.batch_size
    Bg, flags = batch_graph(g, p.batched, B) if n else (None, [])
    tangents = [rng.standard_normal(g.inputs[i].type.shape).astype(g.inputs[i].type.dtype.np) for i in wrt] \
        if do_ad else []
    cotangents = [rng.standard_normal(g.outputs[k].type.shape).astype(g.outputs[k].type.dtype.np)
                  for k in cts_for] if do_ad else []
    batched = []
    for i, b in enumerate(p.batched):
        if b:
            ex = [p.inputs[i]] + [p.domains[i].sample(rng, g.inputs[i].type.shape, g.inputs[i].type.dtype.name)
                                  for _ in range(B - 1)]
            batched.append(np.stack(ex[:B]).astype(p.inputs[i].dtype))
    n_out = len(g.outputs)
    types = [v.type for v in g.inputs] + [g.inputs[i].type for i in wrt] + [g.outputs[k].type for k in cts_for] + \
        [TensorType((B,) + g.inputs[i].type.shape, g.inputs[i].type.dtype) for i, b in enumerate(p.batched) if b]

    def fn(*args):
        xs = list(args[:n])
        ts = list(args[n:n + len(wrt)])
        us = list(args[n + len(wrt):n + len(wrt) + len(cts_for)])
        xb = list(args[n + len(wrt) + len(cts_for):])
        outs = []
        if do_ad:
            outs += inline_graph(J, xs + ts)[n_out:]
            outs += inline_graph(V, xs + us)[n_out:]
        if Bg is not None:
            it = iter(xb)
            outs += inline_graph(Bg, [next(it) if b else x for x, b in zip(xs, p.batched)])
        return tuple(outs)

    D, _, captures = trace_to_graph(fn, types, name="fuzz_derived")
    if captures:
        raise GraphadError("internal: the derived graph captured values")
    return Derived(D, list(p.inputs) + tangents + cotangents + batched, wrt, cts_for, n_out, tangents, cotangents,
                   batched, flags)


# primitives whose float results are exact (correctly rounded or pure data movement) in any
# correct implementation: no noise on them in the conditioning runs below
EXACT = frozenset({"neg", "abs", "sign", "relu", "maximum", "minimum", "max", "min", "where", "reshape",
                   "broadcast_to", "transpose", "slice", "pad", "flip", "concat", "take", "stop_gradient",
                   "floor", "full", "constant", "eye", "arange", "astype", "equal", "not_equal", "less",
                   "less_equal", "greater", "greater_equal", "argmax", "argmin", "logical_not", "signbit"})
NOISE_ULPS = 8
# matrix decompositions and solves are accurate to a few ulps of the matrix's norm, not of each
# element: a small entry of a singular vector can be off by eps * |A| in any correct implementation
NORMWISE = frozenset({"svd", "eigh", "qr", "cholesky", "solve", "slogdet", "triangular_solve"})


def _perturb_normwise(arrays: list, rng: np.random.Generator, ulps: int) -> list:
    """Float arrays moved elementwise by up to `ulps` ulps of their largest finite magnitude."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f" and a.size:
            fin = np.abs(a[np.isfinite(a)])
            scale = float(fin.max()) if fin.size else 0.0
            with np.errstate(all="ignore"):
                a = (a.astype(np.float64) + ulps * np.finfo(a.dtype).eps * scale
                     * rng.uniform(-1.0, 1.0, size=a.shape)).astype(a.dtype)
        out.append(a)
    return out


# Sums whose order is unspecified (and, for products, whether each product is fused with the
# running sum into an FMA), in graphad as in BLAS and XLA: linear in each float operand
# (contractions) or in all float operands together (sums, scatter-adds).
MULTILINEAR = frozenset({"matmul", "einsum", "conv2d"})
LINEAR = frozenset({"sum", "index_add"})
# with complex operands each part of these is a sum of products of parts, which cancels like a
# real sum: (x + iy)^2 has real part x^2 - y^2, 0 exactly for y = x, and an FMA keeps one
# product's rounding error (NumPy's complex loops and the compiled real pairs contract
# different products). Their complex results get the termwise tolerance, from the moduli
# (the primitive on |operands|: |a||b|, |z|^2, |a|/|b|, ...).
COMPLEX_TERMWISE = MULTILINEAR | LINEAR | frozenset({"mul", "square", "div", "reciprocal", "prod", "cumprod",
                                                    "cumsum"})
# what an order-dependent overflow may give instead, one per noisy run (docs/user_guide.md);
# EXACT_SUM: the exact P - N rounded once, which an order that keeps every partial sum in range
# gives (a product contracted into an FMA with a sum of the other sign is never rounded alone)
EXACT_SUM = "exact"
OVERFLOW_OUTCOMES = (np.nan, np.inf, -np.inf, EXACT_SUM)
_HUGE = np.longdouble("1e1200")  # stands for an infinite operand: beyond every float's range, and
# four of them multiplied stay inside the x87 extended range (1.2e4932)


def _finfo(dtype):
    """np.finfo, or ml_dtypes' own for bfloat16 (NumPy's raises ValueError for it)."""
    try:
        return np.finfo(dtype)
    except ValueError:
        import ml_dtypes
        return ml_dtypes.finfo(dtype)


def overflow_ambiguous(prim, arrays: list, attrs: dict, in_types: list, out_type,
                       exact: bool = False):
    """For a sum-like primitive (MULTILINEAR, LINEAR), the mask of output elements whose IEEE result
    depends on the order of the sum or on FMA fusion: some exact partial sum leaves the float range
    in one order and not in another. With P and N the exact sums of the positive and of the negative
    terms and M the largest float, that is (P > M and N > M) (+inf, -inf or NaN), or P > M with
    P - N <= M (+inf or the finite P - N), or the same with N. Computed in extended precision
    (products of floats cannot overflow there); None where no element can be ambiguous. With
    `exact`, (mask, P - N in extended precision) instead of the mask."""
    name = prim.name
    if name not in MULTILINEAR | LINEAR or not out_type.dtype.is_float:
        return None
    fl = [i for i, t in enumerate(in_types) if t.dtype.is_float]
    if not fl:
        return None
    big = float(_finfo(out_type.dtype.np).max)
    with np.errstate(all="ignore"):
        xs = [np.asarray(arrays[i]).astype(np.longdouble) for i in fl]
        # cheap exit: every float operand finite and small enough that no sum of terms can overflow
        n_terms = max(max(x.size for x in xs), 1)
        mags = [float(np.abs(x).max(initial=0.0)) for x in xs]
        bound = (np.prod(mags) if name in MULTILINEAR else max(mags)) * n_terms
        if all(np.isfinite(x).all() for x in xs) and bound <= big / 4:
            return None
        parts = []
        for x in xs:
            x = np.where(np.isnan(x), 0, np.where(np.isinf(x), np.sign(x) * _HUGE, x))
            parts.append((np.maximum(x, 0), np.maximum(-x, 0)))

        def call(signs):
            args = list(arrays)
            for i, s, (pos, neg) in zip(fl, signs, parts):
                args[i] = neg if s else pos
            return np.asarray(prim.impl(*args, **attrs), np.longdouble)

        if name in LINEAR:
            P, N = call([0] * len(fl)), call([1] * len(fl))
        else:
            import itertools
            P = N = 0
            for signs in itertools.product((0, 1), repeat=len(fl)):
                if sum(signs) % 2:
                    N = N + call(signs)
                else:
                    P = P + call(signs)
        M = np.longdouble(big)
        mask = ((P > M) & (N > M)) | ((P > M) & (P - N <= M)) | ((N > M) & (N - P <= M))
    if not mask.any():
        return None
    return (mask, P - N) if exact else mask


def _perturb_termwise(prim, args: list, attrs: dict, outs: list, rng: np.random.Generator, ulps: int) -> list:
    """A sum's float output moved by up to `ulps` ulps of the sum of its terms' magnitudes (the
    primitive on the absolute values of its float operands): how far another summation order, or
    FMA contraction of the products, may land when the terms cancel (a sum of +3.8e37 and
    -3.8e37 is 0 in one order and the rounding error of a product, about 4e30, with an FMA).

    The magnitudes are summed in the operands' dtype (so that a sum of products below its
    smallest subnormal moves nothing, and the sign of such a zero stays checked: the deviation
    conv_fma_tiny_product_signed_zero); where that overflows, in float64, and where even that
    overflows, with the terms scaled down by 2**-_TERM_SHIFT (exact): a float32 sum of +FLT_MAX,
    -FLT_MAX and a few ones neither overflows nor is exact in any order (0 in NumPy's, -0.079 in
    a compiled lane order; fuzz run 21, fixture einsum_cancelling_float_max), and its magnitudes'
    sum overflowing float32 must not make its tolerance zero. Moved values stay finite: overflow
    outcomes are overflow_ambiguous's."""
    out = np.asarray(outs[0])
    if out.dtype.kind not in "fc" or not out.size:
        return outs
    eps = float(np.finfo(out.dtype).eps)

    def magnitudes(shift: int | None):
        def mag(a):
            a = np.abs(np.asarray(a))  # of a complex operand: its modulus
            return a if shift is None else np.ldexp(a.astype(np.float64), -shift)
        absargs = [mag(a) if np.asarray(a).dtype.kind in "fc" else a for a in args]
        return np.asarray(prim.impl(*absargs, **attrs), np.float64)
    with np.errstate(all="ignore"):
        unit = eps * magnitudes(None)
        for shift in (0, _TERM_SHIFT):
            if np.all(np.isfinite(unit)):
                break
            n_scaled = 1 if prim.name in LINEAR else sum(np.asarray(a).dtype.kind == "f" for a in args)
            wider = np.ldexp(eps, shift * n_scaled) * magnitudes(shift)
            unit = np.where(np.isfinite(unit), unit, wider)
        unit = np.where(np.isfinite(unit), unit, 0.0)
        top = float(np.finfo(out.dtype).max)

        def move(part):
            moved = np.clip(part.astype(np.float64) + ulps * unit * rng.uniform(-1.0, 1.0, part.shape), -top, top)
            return np.where(np.isfinite(part), moved.astype(part.dtype), part)
        if out.dtype.kind == "c":  # each part: a sum of products of parts, bounded by the moduli's
            moved = np.empty_like(out)
            moved.real, moved.imag = move(out.real), move(out.imag)
        else:
            moved = move(out)
    return [moved] + list(outs[1:])


_TERM_SHIFT = 512  # 2**-512: float64 magnitudes up to 1.8e308 each, summed without overflow


# sin, cos and tan of an argument whose last NOISE_ULPS ulps span a radian or more: another
# correct implementation (whose argument differs by a few ulps) may give any value in [-1, 1]
# (sin, cos) or any finite value at all (tan, whose period is pi and which passes a pole); the noisy
# runs pin such elements to these values, one per run, so the reference's sensitivity spans the
# whole range (a random sample of a few runs did not: fuzz run 17, fixture sin_of_huge_argument;
# for tan, fuzz run 22, fixture tan_of_huge_argument: tan(exp(exp(exp(e)))) = tan(3.8e6), one
# float32 ulp of which is 0.25 rad). "max" stands for the output dtype's largest finite value.
PERIODIC = frozenset({"sin", "cos", "tan"})
_PERIODIC_PINS = {"sin": (-1.0, 1.0, 0.0, -0.5), "cos": (-1.0, 1.0, 0.0, -0.5),
                  "tan": ("-max", "max", 0.0, -0.5)}


def _unconstrained_periodic(name: str, x, outs: list, variant: int) -> list:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        return outs
    eps = float(_finfo(x.dtype).eps)
    with np.errstate(all="ignore"):
        span = np.abs(x.astype(np.float64)) * eps * NOISE_ULPS
        mask = np.isfinite(span) & (span >= 1.0)
    if not mask.any():
        return outs
    pins = _PERIODIC_PINS[name]
    pin = pins[variant % len(pins)]
    if isinstance(pin, str):  # "max" / "-max": the output dtype's largest finite value
        top = float(_finfo(outs[0].dtype).max)
        pin = -top if pin.startswith("-") else top
    pin = np.asarray(pin, outs[0].dtype)
    return [np.where(mask, pin, outs[0])] + list(outs[1:])


# Compiled elementwise code may contract a product and the add or subtract that consumes it, or
# the running sum of a reduction over it, into one FMA: TVM's LLVM code generator emits
# llvm.fmuladd for a*b + c, as clang does by default (-ffp-contract=on) and XLA does on CPU. The
# product is then not rounded on its own: one that overflows is not +-inf (69.7 * -2.2e38 + inf is
# +inf, not NaN), one that underflows keeps its sign (-0.28 * 1.4e-45 + 0.0 is -0.0) and a
# cancelling sum keeps the product's low bits ((1/3) * 3 - 1 is 2.98e-8 in float32). The noisy runs
# of odd variant contract every product that reaches an add or a subtract (through data movement),
# so the reference covers both outcomes (fuzz run 18, job 0, program 3140: a jvp of a scan, fixture
# fma_contraction_overflow); the overflow model of a sum sees its terms unrounded in every variant.
PRODUCT_CARRIERS = frozenset({"reshape", "broadcast_to", "transpose", "expand_dims", "squeeze", "flip"})
CONTRACTING = frozenset({"add", "sub"})


def _unrounded_product(node, args: list, unrounded: dict):
    """The exact (extended-precision) value of `node`'s float output when it is a product of two
    floats (a mul, or an einsum that is one once its private indices are summed out), or data
    movement of one; None otherwise."""
    name = node.prim.name
    if not node.outputs[0].type.dtype.is_float:
        return None
    with np.errstate(all="ignore"):
        if name == "mul" and all(np.asarray(a).dtype.kind == "f" for a in args):
            return np.multiply(np.asarray(args[0], np.longdouble), np.asarray(args[1], np.longdouble))
        if name == "einsum" and len(args) == 2 and all(np.asarray(a).dtype.kind == "f" for a in args):
            return _einsum_product(node.attrs["spec"], [np.asarray(a) for a in args])
        if name in PRODUCT_CARRIERS and node.inputs[0] in unrounded:
            return np.asarray(node.prim.impl(unrounded[node.inputs[0]], *args[1:], **node.attrs))
    return None


# graphad's einsum sums an index that only one operand has (and the result has not) out of that
# operand before multiplying (docs/user_guide.md, as JAX's einsum does). A two-operand einsum with
# no index that both operands share and the result drops is then one product per element, which
# compiled code contracts into an add that consumes it like any product: einsum('ab,aec->abc',
# g, x) + y is g * sum_e(x) + y, rounded once (fuzz run of 2026-12-27, seed 20261227: +inf where
# rounding the product first gives -inf + inf = NaN; fixture einsum_product_overflow_beside_inf).
def _einsum_product(spec: str, xs: list):
    """The exact products of a two-operand einsum that is a product once each operand's private
    indices are summed out (those sums rounded, in the operands' dtype); None otherwise."""
    if "->" not in spec or "." in spec:
        return None
    ins, out = spec.split("->")
    subs = ins.split(",")
    if len(subs) != 2 or (set(subs[0]) & set(subs[1])) - set(out):
        return None  # a contraction over a shared index: a sum of products
    kept = []
    for k, (sub, x) in enumerate(zip(subs, xs)):
        other = subs[1 - k]
        keep = "".join(c for i, c in enumerate(sub) if (c in out or c in other) and c not in sub[:i])
        if keep != sub:
            x = np.einsum(f"{sub}->{keep}", x)
        kept.append((keep, np.asarray(x, np.longdouble)))
    (ka, a), (kb, b) = kept
    return np.einsum(f"{ka},{kb}->{out}", a, b)


def _contracted(name: str, args: list, unrounded: list, out, pick: int):
    """`out` (= args[0] +- args[1]) with the product operand `pick` (or the other, if only that
    one is a product) fused into the add: computed unrounded, rounded once."""
    ks = [k for k in (0, 1) if unrounded[k] is not None]
    if not ks:
        return out
    k = ks[pick % len(ks)]
    e = unrounded[k]
    other = np.asarray(args[1 - k], np.longdouble)
    with np.errstate(all="ignore"):
        fused = e + other if name == "add" else (e - other if k == 0 else other - e)
        fused = fused.astype(np.float64).astype(out.dtype)
    return np.where(np.isfinite(e), fused, out)


# A product's order is unspecified like a sum's (the compiled kernel multiplies in lanes). In the
# normal range the orders differ by ulps, covered by the noise; once a partial product is
# subnormal each multiply rounds to a multiple of the smallest subnormal, so the order decides much
# more: [-2.04, 1.4e-45, 1.69, -2.77, -2.57, -1.91, 0.48, 1.38] multiplies to 3.6e-44 in NumPy's
# order, 4.2e-44 compiled, 4.34e-44 exactly (fuzz run 20, job 0, program 1450, fixture
# prod_through_subnormal). The noisy runs of odd variant round the exact product once.
ORDERLESS_PRODUCTS = frozenset({"prod"})


def product_order_ambiguous(x, attrs: dict, out_dtype):
    """For a product reduction of `x` (prod: `axes`, `keepdims`), the mask of output elements whose
    kind or precision depends on the order of the multiplies; None where none does. With B the
    product of the factors' magnitudes above 1 and S that of those below 1 (every partial product
    lies between S and B), some order overflows when B exceeds the largest float, some takes a
    partial product below the normal range (fewer bits) when S is below it, and some rounds one
    to zero when S is below twice the smallest subnormal. So a finite product is +-inf in one
    order and itself in another where B overflows ([0.19, -FLT_MAX, 1.44, -1.99, -0.22, 2.23,
    2.23, -0.22] is 4.35e37 exactly and in NumPy's order, +inf in the compiled kernel's lanes:
    fuzz run of 2026-12-02, fixture prod_overflow_order), and a normal product may lose bits or
    be 0 where S is below the normal range; a zero factor with an overflowing order gives 0 or
    NaN (inf * 0), and an infinite one with an order rounding to zero +-inf or NaN. Computed in the log domain (no range limit). As for sums,
    an ambiguous element is not compared at all (the outcomes allowed are not narrowed to those
    of the product's sign)."""
    x = np.asarray(x)
    if x.dtype.kind != "f" or not x.size:
        return None
    info = _finfo(out_dtype.np)
    axes = attrs.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(axes)
    keep = bool(attrs.get("keepdims", False))
    with np.errstate(all="ignore"):
        a = np.abs(x.astype(np.float64))
        logs = np.log2(np.where(np.isfinite(a) & (a > 0), a, 1.0))
        big = np.sum(np.where(logs > 0, logs, 0.0), axis=axes, keepdims=keep)
        small = np.sum(np.where(logs < 0, logs, 0.0), axis=axes, keepdims=keep)
        has_nan = np.any(np.isnan(x), axis=axes, keepdims=keep)
        has_inf = np.any(np.isinf(x), axis=axes, keepdims=keep)
        has_zero = np.any(x == 0, axis=axes, keepdims=keep)
        top = np.log2(float(info.max))
        # a partial product below twice the smallest subnormal may round to zero: each multiply
        # in the subnormal range rounds to a multiple of it ([3m, 0.4, 0.5, 1e30], m the
        # smallest subnormal, is 0 in one order though S is 0.6 m; a review's case)
        bottom = np.log2(float(info.smallest_subnormal)) + 1
        normal = np.log2(float(info.smallest_normal))
    over, to_zero = big > top, small < bottom
    # below the normal range a partial product keeps fewer bits, so a normal product that some
    # order takes through it may lose far more than ulps without reaching zero (a review's case:
    # factors 2^-75, 1.25 * 2^-73 and 2^100 among ones, 3.55e-15 compiled, 4.44e-15 exactly)
    subnormal = small < normal
    exact = big + small
    # a product below the normal range is zero or subnormal in every order, which the comparison
    # takes as a matter of tolerance (compare.bad_elements): only a normal one is ambiguous
    mask = ~has_nan & np.where(has_inf, ~has_zero & to_zero,
                               np.where(has_zero, over, (over & (exact <= top)) | (subnormal & (exact >= normal))))
    mask = np.asarray(mask)
    return mask if mask.any() else None


def _exact_product(x, attrs: dict, outs: list) -> list:
    x = np.asarray(x)
    if x.dtype.kind != "f" or not x.size:
        return outs
    with np.errstate(all="ignore"):
        axes = attrs.get("axes")
        p = np.prod(x.astype(np.float64).astype(np.longdouble), axis=None if axes is None else tuple(axes),
                    keepdims=bool(attrs.get("keepdims", False)))
        p = np.asarray(p).astype(np.float64).astype(outs[0].dtype)
    return [p.reshape(np.shape(outs[0]))] + list(outs[1:])


def noisy_interpret(graph: Graph, inputs: list, rng: np.random.Generator, ulps: int = NOISE_ULPS,
                    variant: int | None = None) -> list:
    """The interpreter, with every inexact float result moved by up to `ulps` ulps (random sign per
    element): a model of another correct implementation (different libm, summation order, FMA).
    With `variant` (0-3) the elements of a sum whose overflow depends on its order
    (overflow_ambiguous) are OVERFLOW_OUTCOMES[variant]: one of the results another order gives;
    odd variants also contract products into the adds that consume them (CONTRACTING)."""
    from graphad.frontend.trace import run_impl
    env = dict(zip(graph.inputs, [np.asarray(a) for a in inputs]))
    unrounded: dict = {}  # value -> its exact value, for products (and data movement of them)
    for n in graph.nodes:
        args = [env[v] for v in n.inputs]
        with _noisy_regions(rng, ulps, variant):  # a loop's body rounds at every step, not once per loop
            outs = run_impl(n.prim, args, n.attrs, [o.type for o in n.outputs])
        if variant is not None:
            e = _unrounded_product(n, args, unrounded)
            if e is not None:
                unrounded[n.outputs[0]] = e
            if variant % 2 and n.prim.name in CONTRACTING and n.outputs[0].type.dtype.is_float:
                outs = [_contracted(n.prim.name, args, [unrounded.get(v) for v in n.inputs], outs[0],
                                    variant // 2)] + list(outs[1:])
        if n.prim.name not in EXACT:
            outs = C.perturb(outs, rng, ulps)
        if n.prim.name in NORMWISE:
            outs = _perturb_normwise(outs, rng, ulps)
        if n.prim.name in MULTILINEAR | LINEAR or (n.prim.name in COMPLEX_TERMWISE and n.outputs[0].type.dtype.is_complex):
            outs = _perturb_termwise(n.prim, args, n.attrs, outs, rng, ulps)
        if variant is not None and variant % 2 and n.prim.name in ORDERLESS_PRODUCTS:
            outs = _exact_product(args[0], n.attrs, outs)
        if variant is not None and n.prim.name in ORDERLESS_PRODUCTS:
            amb = product_order_ambiguous(args[0], n.attrs, n.outputs[0].type.dtype)
            if amb is not None:
                outs = _order_outcome(amb, lambda: _exact_product(args[0], n.attrs, outs)[0], outs, variant)
        if variant is not None and n.prim.name in PERIODIC:
            outs = _unconstrained_periodic(n.prim.name, args[0], outs, variant)
        if variant is not None:
            terms = [unrounded.get(v, a) for v, a in zip(n.inputs, args)] if n.prim.name in LINEAR else args
            amb = overflow_ambiguous(n.prim, terms, n.attrs, [v.type for v in n.inputs], n.outputs[0].type,
                                     exact=True)
            if amb is not None:
                mask, diff = amb
                outs = _order_outcome(mask, lambda: diff.astype(np.float64).astype(outs[0].dtype), outs, variant)
        env.update(zip(n.outputs, outs))
    return [env[v] for v in graph.outputs]


def _order_outcome(mask, exact, outs: list, variant: int) -> list:
    """`outs` with the elements of `mask` (whose value depends on an unspecified order) replaced
    by OVERFLOW_OUTCOMES[variant]: NaN, +inf, -inf, or `exact()` (the exact value rounded once)."""
    outcome = OVERFLOW_OUTCOMES[variant]
    with np.errstate(over="ignore", invalid="ignore"):
        alt = exact() if outcome is EXACT_SUM else np.asarray(outcome, outs[0].dtype)
    return [np.where(mask, alt, outs[0])] + list(outs[1:])


class _noisy_regions:
    """While active, the region-running primitives (graphad/control) interpret their regions
    noisily too (they call their module's `interpret`)."""

    def __init__(self, rng, ulps, variant=None):
        self.rng, self.ulps, self.variant = rng, ulps, variant

    def __enter__(self):
        import importlib
        mods = [importlib.import_module(f"graphad.control.{n}") for n in ("prims", "remat", "custom")]
        self.mods = [(m, m.interpret) for m in mods]
        for m, _ in self.mods:
            m.interpret = lambda g, args: noisy_interpret(g, args, self.rng, self.ulps, self.variant)

    def __exit__(self, *exc):
        for m, f in self.mods:
            m.interpret = f


def _ref_with_sensitivity(graph: Graph, inputs: list, rng) -> tuple[list, list, list]:
    """The reference outputs, and per output how far a correct implementation may be from them
    (`sens`) and where it may legitimately differ in kind or integer value (`unstable`)."""
    ref = interpret(graph, inputs)
    noisy = []
    for variant in range(len(OVERFLOW_OUTCOMES)):
        try:
            noisy.append(noisy_interpret(graph, inputs, rng, variant=variant))
        except GraphadError:  # noise that breaks the interpreter (an index) says nothing
            pass
    sens, unstable = [], []
    for k, r in enumerate(ref):
        s, u = C.sensitivity(r, [pp[k] for pp in noisy])
        sens.append(s)
        unstable.append(u)
    return ref, sens, unstable


def _compare_outputs(got: list, ref: list, sens: list, unstable: list, what: str,
                     signless: int = 0) -> str | None:
    """The first mismatch between output lists; the first `signless` outputs (derivatives) may
    differ in the sign of a zero."""
    if len(got) != len(ref):
        return f"{what}: {len(got)} outputs, expected {len(ref)}"
    for k, (a, b) in enumerate(zip(got, ref)):
        m = C.mismatch(a, b, sens=sens[k], unstable=unstable[k], zero_sign=k >= signless, what=f"{what} output {k}")
        if m:
            return m
    return None


# ---------------------------------------------------------------- the checks

def check_program(p: Program, budget: Budget | None = None, oracle: str | None = None,
                  compiled: bool = True) -> list[Disagreement]:
    """Run every check of program `p`; the disagreements found (empty: all agree)."""
    budget = budget or Budget()
    t_start = time.perf_counter()
    STATS.programs += 1
    for node in p.graph.nodes:
        STATS.prims[node.prim.name] = STATS.prims.get(node.prim.name, 0) + 1
    out: list[Disagreement] = []
    try:
        _check(p, budget, oracle, compiled, out)
    finally:
        STATS.disagreements += bool(out)
        STATS.seconds += time.perf_counter() - t_start
    return out


def _check(p: Program, budget: Budget, oracle, compiled: bool, out: list) -> None:
    rng = np.random.default_rng(p.seed ^ 0x5EED)
    g = p.graph
    nodes = count_nodes(g)
    try:
        ref, sens, unstable = _ref_with_sensitivity(g, p.inputs, rng)
    except GraphadError as e:
        out.append(Disagreement("interpret", "NumPy reference kernel rejected a well-typed program", str(e)))
        return
    try:
        g_opt = default_pipeline(g)
    except GraphadError as e:
        out.append(Disagreement("passes", "default pipeline (simplify/cse/dce) raised", str(e)))
        return
    try:
        D = derived_graph(p, rng)
    except GraphadError as e:
        out.append(Disagreement("transform", "jvp/vjp/vmap pass raised on a well-typed program", str(e)))
        D = None
    d_ref = d_sens = d_unstable = None
    d_opt = None
    if D is not None:
        try:
            d_ref, d_sens, d_unstable = _ref_with_sensitivity(D.graph, D.inputs, rng)
        except GraphadError as e:
            out.append(Disagreement("interpret", "the derivative/vmap graph does not interpret", str(e)))
            D = None
    if D is not None:
        try:
            d_opt = default_pipeline(D.graph)
        except GraphadError as e:
            out.append(Disagreement("passes", "default pipeline raised on the derivative/vmap graph", str(e)))

    if compiled:
        _check_compiled(p, g, g_opt, ref, sens, unstable, budget, nodes, out, D, d_opt, d_ref, d_sens, d_unstable)
    if D is not None and d_ref is not None:
        _check_ad(p, D, d_ref, out, d_sens)
        _check_vmap(p, D, d_ref, out, d_unstable)
    if oracle == "jax":
        from .jax_oracle import check_with_jax, flush_subnormals
        # XLA's CPU code treats subnormal inputs as zero (DAZ): compare both on flushed inputs
        j_inputs = flush_subnormals(p.inputs)
        j_ref, j_sens, j_unst = (ref, sens, unstable) if all(a is b for a, b in zip(j_inputs, p.inputs)) else \
            _ref_with_sensitivity(g, j_inputs, rng)
        m = check_with_jax(g, j_inputs, j_ref, j_sens, j_unst)
        STATS.jax_checked += m is not False
        if m:
            out.append(Disagreement("jax", "graphad's reference interpreter and JAX disagree", m))


def _check_compiled(p, g, g_opt, ref, sens, unstable, budget, nodes, out, D, d_opt, d_ref, d_sens, d_unstable):
    warm_up()
    jobs = [("program", g_opt, p.inputs, count_nodes(g_opt))]
    if D is not None and d_opt is not None and p.compile_derived:
        jobs.append(("derived", d_opt, D.inputs, count_nodes(d_opt)))

    def child():
        res = []
        for name, graph, inputs, n_nodes in jobs:
            limit = budget.limit(budget.tir_base, budget.tir_per_node, n_nodes)
            try:
                res.append(_compile_and_run(graph, inputs, p.poison, tir_limit=limit))
            except Exception as e:  # noqa: BLE001 - reported per graph
                too_big = "_TooBig" in f"{type(e).__name__}: {e}"
                res.append({"too_big" if too_big else "error": f"{type(e).__name__}: {_last_line(e)}"})
        return res

    r = run_in_child(child, budget.wall_hard_s, budget.mem_bytes, int(budget.cpu_hard_s))
    STATS.compiled += 1
    if r.status == "timeout":
        out.append(Disagreement("budget", "compile-time budget: compiling did not finish",
                                f"{r.error} ({nodes} nodes; e.g. exponential code growth)"))
        return
    if r.status != "ok":
        out.append(Disagreement("crash", "the compiled code or the compiler crashed the process", r.error))
        return
    for (name, graph, inputs, n_nodes), res in zip(jobs, r.value):
        want, w_sens, w_unst = (ref, sens, unstable) if name == "program" else (d_ref, d_sens, d_unstable)
        # the derived graph starts with the tangents and gradients: their zeros carry no sign
        signless = 0 if name == "program" or not D.cts_for else len(p.graph.outputs) + len(D.wrt)
        if "error" in res:
            out.append(Disagreement("compile", f"the {name} graph failed to compile or run", res["error"]))
            continue
        if "too_big" in res:
            lim_tir = budget.limit(budget.tir_base, budget.tir_per_node, n_nodes)
            out.append(Disagreement("budget", "code-size budget (scheduled TIR)",
                                    f"the {name} graph ({n_nodes} nodes): compile stopped, over {lim_tir} "
                                    f"characters ({res['too_big'][-120:]})"))
            continue
        if res.get("fallback"):
            STATS.fallbacks += 1
            _save_fallback(p, name, res["fallback"])
        lim_t = budget.limit(budget.compile_base_s, budget.compile_per_node_s, n_nodes)
        if res["seconds"] > lim_t:
            out.append(Disagreement("budget", "compile-time budget", f"the {name} graph ({n_nodes} nodes) took "
                                    f"{res['seconds']:.1f} CPU s > {lim_t:.1f} s"))
        lim_tir = budget.limit(budget.tir_base, budget.tir_per_node, n_nodes)
        if res["tir"] > lim_tir:
            out.append(Disagreement("budget", "code-size budget (scheduled TIR)",
                                    f"the {name} graph ({n_nodes} nodes): {res['tir']} chars > {lim_tir}"))
        lim_ll = budget.limit(budget.llvm_base, budget.llvm_per_node, n_nodes)
        if res["llvm"] > lim_ll:
            out.append(Disagreement("budget", "code-size budget (LLVM IR)",
                                    f"the {name} graph ({n_nodes} nodes): {res['llvm']} bytes > {lim_ll}"))
        run1, run2 = res["outs"]
        diff = [k for k, (a, b) in enumerate(zip(run1, run2)) if not C.bitwise_equal(a, b)]
        if diff:
            k = diff[0]
            out.append(Disagreement("nondeterminism", "two runs on fresh buffers differ: the kernel reads memory "
                                    "nothing wrote (or out of bounds)",
                                    f"{name} output {k}: run 1 {_brief(run1[k])} vs run 2 {_brief(run2[k])}"))
        for run_no, got in enumerate((run1, run2), 1):
            m = _compare_outputs(got, want, w_sens, w_unst, f"{name} (compiled, run {run_no})", signless)
            if m and _explained_by_flushing(graph, inputs, got, want, w_sens, w_unst, signless):
                STATS.subnormals_flushed += 1
                break
            if m:
                cause = _classify(graph, inputs, want, w_sens, w_unst, p.poison, budget, signless)
                out.append(Disagreement("compile", cause, m))
                break


def flushed_interpret(graph: Graph, inputs: list) -> list:
    """The interpreter with every subnormal float, in the inputs and in every result (inside
    control-flow regions too), replaced by a zero of its sign: a model of code that runs with
    flush-to-zero and denormals-are-zero throughout, as XLA on CPU does."""
    from graphad.frontend.trace import run_impl
    from .jax_oracle import flush_subnormals
    env = dict(zip(graph.inputs, flush_subnormals(inputs)))
    for n in graph.nodes:
        with _flushed_regions():
            outs = run_impl(n.prim, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs])
        env.update(zip(n.outputs, flush_subnormals(list(outs))))
    return [env[v] for v in graph.outputs]


class _flushed_regions:
    """While active, the region-running primitives interpret their regions with flushing too."""

    def __enter__(self):
        import importlib
        mods = [importlib.import_module(f"graphad.control.{n}") for n in ("prims", "remat", "custom")]
        self.mods = [(m, m.interpret) for m in mods]
        for m, _ in self.mods:
            m.interpret = flushed_interpret

    def __exit__(self, *exc):
        for m, f in self.mods:
            m.interpret = f


def _explained_by_flushing(graph: Graph, inputs, got, want, sens, unstable, signless: int) -> bool:
    """Whether each compiled output is the reference's (`want`), the reference's on the inputs
    with subnormals flushed to zero, or the reference's with every subnormal result flushed too
    (`flushed_interpret`: sin(x) = 1.4e-39 is 0 in a kernel that flushes, and log of it -inf):
    documented semantics (docs/user_guide.md, as XLA on CPU), not a defect. Per output, because
    whether a kernel sees a subnormal as zero depends on the kernel (a graph's outputs can each
    match a different one), and element by element the output may also lie between those (a
    graph can flush some intermediates and not others). Each comparison is the usual one."""
    from .jax_oracle import flush_subnormals
    alts = []
    flushed = flush_subnormals(inputs)
    for run in ((lambda: interpret(graph, flushed)) if any(a is not b for a, b in zip(flushed, inputs)) else None,
                lambda: flushed_interpret(graph, inputs)):
        if run is None:
            continue
        try:
            alts.append(run())
        except GraphadError:
            continue
    alts = [a for a in alts if len(a) == len(got)]
    if not alts or len(got) != len(want):
        return False
    for k, (g, w) in enumerate(zip(got, want)):
        kw = dict(sens=sens[k], unstable=unstable[k], zero_sign=k >= signless, what=f"output {k}")
        if not C.mismatch(g, w, **kw) or any(not C.mismatch(g, a[k], **kw) for a in alts):
            continue
        cands = [w] + [a[k] for a in alts]
        if any(np.asarray(c).shape != np.asarray(g).shape or np.asarray(c).dtype != np.asarray(g).dtype
               for c in cands):
            return False
        kw.pop("what")
        per_cand = [C.bad_elements(g, c, **kw) for c in cands]
        bad = np.logical_and.reduce([badk | badv for badk, badv, _, _ in per_cand])  # an element may match any one...
        allowed = per_cand[0][3]  # the reference's tolerance
        if bad.any() and np.asarray(g).dtype.kind == "f":
            # ...or lie between them: whether a kernel flushes a subnormal result depends on the
            # kernel (erf's polynomial does, a multiply does not), so a graph can flush some of
            # its subnormal intermediates and not others (fuzz run 19, job 1, program 4039:
            # fixture subnormal_flushed_partly)
            F = np.stack([np.asarray(c, np.float64) for c in cands])
            x = np.asarray(g, np.float64)
            with np.errstate(invalid="ignore"):
                # finite non-zero values only: a zero's sign is no matter of range
                inside = np.isfinite(F).all(0) & (C.kinds(np.asarray(g)) == 0) & (x >= F.min(0) - allowed) & \
                    (x <= F.max(0) + allowed)
            bad &= ~inside
        if bad.any():
            return False
    return True


def _classify(opt: Graph, inputs, want, sens, unstable, poison, budget, signless: int = 0) -> str:
    """Which stage is wrong: graph passes, graphad's CPU schedule, or the Relax lowering / TVM."""
    try:
        if _compare_outputs(interpret(opt, inputs), want, sens, unstable, "passes", signless):
            return "graph passes (simplify/cse/dce) change the value"
    except GraphadError:
        return "graph passes produce a graph the interpreter rejects"

    def child():
        res = _compile_and_run(opt, inputs, poison, runs=1, schedule=False)
        return res["outs"][0]
    r = run_in_child(child, budget.wall_hard_s, budget.mem_bytes, int(budget.cpu_hard_s))
    if r.status == "ok" and not _compare_outputs(r.value, want, sens, unstable, "unscheduled", signless):
        return "graphad's CPU schedule (lowering/schedule.py): the unscheduled build is right"
    return "Relax lowering (lowering/relax_ops.py) or TVM: the unscheduled build is wrong too"


def _smallest_subnormal(g: Graph) -> float:
    """The largest of the smallest subnormals of the float types `g` uses (float16's, if any)."""
    tiny = 0.0
    for v in list(g.inputs) + [o for n in g.nodes for o in n.outputs]:
        if v.type.dtype.is_float:
            tiny = max(tiny, float(_finfo(v.type.dtype.np).smallest_subnormal))
    return tiny


def _check_ad(p: Program, D: Derived, d_ref: list, out: list, d_sens: list | None = None) -> None:
    """(b) finite differences (smooth programs) and (c) the adjoint identity. `d_sens`: how far a
    correct implementation's J v and J^T u may be from d_ref, element by element (the noisy
    reference runs): intermediate cancellation (exp(exp(x)) + y - exp(exp(x))) makes both
    products ill-conditioned in ways their own magnitudes do not show."""
    if not D.wrt:
        return
    n_out = len(p.graph.outputs)
    if not D.cts_for:
        return
    tang = d_ref[:n_out]   # the derived graph returns J v for every output, then J^T u per input
    grads = d_ref[n_out:n_out + len(D.wrt)]
    tang_f = [tang[k] for k in D.cts_for]
    finite = all(np.isfinite(a).all() for a in tang_f + grads + D.tangents + D.cotangents)
    # (c) <u, J v> == <J^T u, v>
    if finite:
        lhs_terms = [np.asarray(u, np.float64) * np.asarray(t, np.float64) for u, t in zip(D.cotangents, tang_f)]
        rhs_terms = [np.asarray(gr, np.float64) * np.asarray(v, np.float64) for gr, v in zip(grads, D.tangents)]
        lhs = sum(float(x.sum()) for x in lhs_terms)
        rhs = sum(float(x.sum()) for x in rhs_terms)
        scale = sum(float(np.abs(x).sum()) for x in lhs_terms + rhs_terms)
        # the least precise float type anywhere (an intermediate cast included) limits the
        # precision of both sides: J v and J^T u are rounded to it (bfloat16's 2^-8 is 4e-3 of
        # each product: abs's <u, J v> and <J^T u, v> came out 0.8310 and 0.8297, both right)
        floats = {v.type.dtype.name for v in list(D.graph.inputs) + [o for n in D.graph.nodes for o in n.outputs]
                  if v.type.dtype.is_float}
        tol = max([ADJOINT_RTOL.get(d, 1e-4) for d in floats] or [1e-9]) * scale + 1e-300
        # an underflowing product rounds to the subnormal grid, an absolute error the relative
        # tolerance misses when both sides are that small (cos'(x) * v for a subnormal x: 0.0 one
        # way, -5e-47 the other): up to the coarsest grid of any float type used, per unit of u, v
        tol += _smallest_subnormal(D.graph) * sum(float(np.abs(np.asarray(a, np.float64)).sum())
                                                  for a in list(D.cotangents) + list(D.tangents))
        if d_sens is not None:
            s_tang = [np.asarray(d_sens[k], np.float64) for k in D.cts_for]
            s_grad = [np.asarray(d_sens[n_out + j], np.float64) for j in range(len(D.wrt))]
            moved = sum(float((np.abs(np.asarray(u, np.float64)) * st).sum()) for u, st in zip(D.cotangents, s_tang))
            moved += sum(float((np.abs(np.asarray(v, np.float64)) * sg).sum()) for v, sg in zip(D.tangents, s_grad))
            tol += 2 * moved
        if np.isfinite(scale):
            STATS.adjoint_checked += 1
            if not abs(lhs - rhs) <= tol:
                out.append(Disagreement("adjoint", "forward and reverse mode disagree (jvp/vjp rules)",
                                        f"<u, J v> = {lhs!r} but <J^T u, v> = {rhs!r} (scale {scale:.3g})"))
    # (b) central differences along v, for smooth float64 programs (stop_gradient is the identity
    # to a finite difference but a constant to autodiff: such programs are not compared)
    if p.smooth and n_out and not any(n.prim.name == "stop_gradient" for n in p.graph.nodes):
        _check_fd(p, D, tang, out)


def _check_fd(p: Program, D: Derived, tang: list, out: list) -> None:
    g = p.graph

    def at(h):
        xs = [np.asarray(a) for a in p.inputs]
        for i, v in zip(D.wrt, D.tangents):
            xs[i] = (xs[i] + h * v).astype(xs[i].dtype)
        return interpret(g, xs)

    h1, h2 = 1e-5, 2e-5
    try:
        fp1, fm1, fp2, fm2 = at(h1), at(-h1), at(h2), at(-h2)
    except GraphadError:
        return
    checked = False
    for k in D.cts_for:
        if g.outputs[k].type.dtype.name != "float64":
            continue
        jv = np.asarray(tang[k], np.float64)
        with np.errstate(all="ignore"):  # inf - inf at overflowing points: those are not compared
            fd1 = (fp1[k] - fm1[k]) / (2 * h1)
            fd2 = (fp2[k] - fm2[k]) / (2 * h2)
            f0 = np.maximum(np.abs(fp1[k]), np.abs(fm1[k]))
            ok_pt = np.isfinite(fd1) & np.isfinite(fd2) & np.isfinite(jv)
            allowed = 1e-6 * (1 + np.abs(jv)) + 3 * np.abs(fd1 - fd2) + 1e-9 * f0 / h1
            bad = ok_pt & ~(np.abs(fd1 - jv) <= allowed)
            # where the two step sizes disagree badly the function is not smooth enough there
            bad &= np.abs(fd1 - fd2) <= 0.1 * (1 + np.abs(fd1))
            # nor where one step moves the output by more than a tenth of its size: no longer a
            # local measurement (y sin y at y = 3e6 turns 160 radians within h = 1e-5, and the
            # two step sizes can still agree by chance: fd_sin_of_huge_power)
            bad &= np.abs(jv) * h2 <= 0.1 * (1 + f0)
        checked = checked or bool(ok_pt.any())
        if bad.any():
            i = tuple(int(x) for x in np.argwhere(bad)[0])
            out.append(Disagreement("fd", "forward-mode derivative disagrees with central differences (jvp rule)",
                                    f"output {k} at {i}: J v = {jv[i]!r}, finite difference {fd1[i]!r} "
                                    f"(h={h1}; {fd2[i]!r} with h={h2})"))
            break
    STATS.fd_checked += checked


def _check_vmap(p: Program, D: Derived, d_ref: list, out: list, d_unstable: list | None = None) -> None:
    """(d) the vmapped program against a loop over the examples.

    Both sides are the reference interpreter; an element that may legitimately differ in kind
    on either side (a sum whose overflow depends on its order: the batched and the per-example
    kernels may sum, or contract into FMAs, differently) is not compared by kind."""
    g = p.graph
    n_out = len(g.outputs)
    if not any(p.batched):
        return
    start = (n_out + len(D.wrt)) if D.wrt and D.cts_for else 0
    vm = d_ref[start:start + n_out]
    vm_unstable = d_unstable[start:start + n_out] if d_unstable is not None else [None] * n_out
    rng = np.random.default_rng(p.seed ^ 0x7A11)
    B = p.batch_size
    per, per_unstable = [], []
    for b in range(B):
        it = iter(D.batched_inputs)
        xs = [next(it)[b] if flag else x for x, flag in zip(p.inputs, p.batched)]
        try:
            r, _, u = _ref_with_sensitivity(g, xs, rng)
        except GraphadError as e:
            out.append(Disagreement("vmap", "an example of the batch does not interpret", str(e)))
            return
        per.append(r)
        per_unstable.append(u)
    STATS.vmap_checked += 1
    for k in range(n_out):
        want = np.stack([r[k] for r in per]) if per else None
        skip = np.stack([u[k] for u in per_unstable]) if per else None
        got = vm[k]
        if not D.batched_flags[k]:  # an unbatched output: every example must give it
            want = want[0] if want is not None else None
            skip = skip.any(axis=0) if skip is not None else None
        if skip is not None and vm_unstable[k] is not None and np.shape(vm_unstable[k]) == skip.shape:
            skip = skip | np.asarray(vm_unstable[k], bool)
        finite = want[np.isfinite(want)] if want.dtype.kind == "f" else np.zeros(0)
        atol = 1e-6 * float(np.abs(finite).max()) if finite.size else 0.0
        m = C.mismatch(got, want, unstable=skip, atol=atol, rtol=1e-5 if want.dtype == np.float32 else 1e-9,
                       what=f"vmap output {k}")
        if m:
            out.append(Disagreement("vmap", "the batched program differs from the per-example loop (batch rule)", m))
            return


def _brief(a) -> str:
    with np.printoptions(threshold=12, precision=5):
        return np.array2string(np.asarray(a), separator=", ")


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:400] if lines else ""
