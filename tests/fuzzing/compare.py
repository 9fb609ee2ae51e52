"""Array comparison for the differential fuzzer: IEEE kinds exactly, values within a tolerance.

Semantics (IEEE 754, as NumPy and JAX): an element's *kind* (NaN, +inf, -inf, +0.0, -0.0,
finite non-zero) must agree exactly; finite values must agree within

    |got - want| <= rtol(dtype) * max(|got|, |want|) + atol + 2 * sens

where `sens` is how much the reference itself moves when every inexact operation's result is
moved by a few ulps (check.noisy_interpret, summarised by `sensitivity`): ill-conditioned
elements (cancellation, exp of a large number) get the slack their conditioning needs,
well-conditioned ones none. Elements whose kind or integer/bool value changes under that noise
("unstable": an overflow threshold, a comparison of nearly equal values) are not compared at all.
Integers and bools compare exactly.
"""
from __future__ import annotations

import numpy as np

# relative tolerance per dtype: a few ulps of every op in a short chain (TVM's float32 sin/cos are
# SLEEF polynomials with <= 2.4 ulp, its reductions sum in a different order than NumPy)
RTOL = {"float16": 5e-3, "bfloat16": 2e-2, "float32": 2e-5, "float64": 1e-11}
# the default relative perturbation of `perturb`, in ulps of the array's dtype
PERTURB_ULPS = 32


def rtol_for(dtype) -> float:
    """The relative tolerance of `dtype` (0 for integers and bools: they compare exactly)."""
    return RTOL.get(getattr(dtype, "name", str(dtype)), 0.0)


def kinds(a: np.ndarray) -> np.ndarray:
    """Per element: 0 finite non-zero, 1 NaN, 2 +inf, 3 -inf, 4 +0.0, 5 -0.0 (floats only).

    Subnormal numbers count as a zero of their sign: flushing them to zero (FTZ/DAZ, as XLA's CPU
    code and many vectorized math libraries do) is not an error this fuzzer reports.
    """
    a = np.asarray(a)
    k = np.zeros(a.shape, np.int8)
    with np.errstate(invalid="ignore"):
        k[np.isnan(a)] = 1
        k[a == np.inf] = 2
        k[a == -np.inf] = 3
        zero = np.abs(a) < np.finfo(a.dtype).smallest_normal if a.dtype.kind == "f" else a == 0
        k[zero & ~np.signbit(a)] = 4
        k[zero & np.signbit(a)] = 5
    return k


KIND_NAMES = {0: "finite", 1: "NaN", 2: "+inf", 3: "-inf", 4: "+0.0", 5: "-0.0"}


def perturb(arrays: list, rng: np.random.Generator, ulps: int = PERTURB_ULPS) -> list:
    """The float arrays scaled elementwise by 1 + u*eps, |u| uniform in [ulps/2, ulps] with a random
    sign (random magnitudes: the moves of two chained operations rarely cancel exactly); others
    unchanged."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f" and a.size:
            eps = np.finfo(a.dtype).eps
            f = 1 + ulps * eps * rng.uniform(0.5, 1.0, size=a.shape) * rng.choice([-1.0, 1.0], size=a.shape)
            with np.errstate(all="ignore"):
                a = (a.astype(np.float64) * f).astype(a.dtype)
        out.append(a)
    return out


def sensitivity(ref: np.ndarray, perturbed: list) -> tuple[np.ndarray, np.ndarray]:
    """(sens, unstable) of one output: the largest finite move under the perturbed runs, and the
    mask of elements whose kind (or int/bool value) changed under any of them."""
    ref = np.asarray(ref)
    sens = np.zeros(ref.shape, np.float64)
    unstable = np.zeros(ref.shape, bool)
    for p in perturbed:
        p = np.asarray(p)
        if p.shape != ref.shape:
            unstable[...] = True
            continue
        if ref.dtype.kind == "f":
            unstable |= kinds(p) != kinds(ref)
            with np.errstate(all="ignore"):
                d = np.abs(p.astype(np.float64) - ref.astype(np.float64))
            sens = np.maximum(sens, np.where(np.isfinite(d), d, 0.0))
        else:
            unstable |= p != ref
    if ref.dtype.kind == "f" and perturbed:
        # chaotic elements: where a few ulps of noise moved the result by a quarter of its size or
        # more, the noisy runs are a handful of samples of a value a correct implementation may
        # put anywhere in that range (cos(exp(h)) with exp(h) = 359321: a few ulps of h move its
        # argument by radians; fixture chaotic_cos_of_amplified_argument). There the tolerance is
        # the range's size, the largest finite magnitude seen, not the largest move seen.
        mags = [np.abs(np.asarray(p, np.float64)) for p in perturbed if np.shape(p) == ref.shape]
        with np.errstate(all="ignore"):
            top = np.abs(ref.astype(np.float64))
            for m in mags:
                top = np.fmax(top, np.where(np.isfinite(m), m, np.nan))
            top = np.where(np.isfinite(top), top, 0.0)
            chaotic = (top > 0) & (sens >= CHAOTIC_FRACTION * top)
        sens = np.where(chaotic, np.maximum(sens, top), sens)
    return sens, unstable


# the move under noise, as a fraction of an element's magnitude, from which the element counts
# as chaotic (see `sensitivity`)
CHAOTIC_FRACTION = 0.25


def bad_elements(got, want, *, sens=None, unstable=None, rtol=None, atol=0.0, zero_sign=True):
    """(kind_bad, value_bad, err, allowed): the elements of `got` (same shape and dtype as `want`)
    that differ from `want` in kind, and the finite ones that differ by more than allowed; what
    `mismatch` reports the first of."""
    got, want = np.asarray(got), np.asarray(want)
    skip = np.zeros(want.shape, bool) if unstable is None else np.asarray(unstable, bool)
    if want.dtype.kind != "f":
        return np.zeros(want.shape, bool), (got != want) & ~skip, None, None
    kg, kw = kinds(got), kinds(want)
    if not zero_sign:
        kg, kw = np.where(kg == 5, 4, kg), np.where(kw == 5, 4, kw)
    # NaN and the infinities must agree exactly, and so must the signs of two zeros; a zero
    # against a finite non-zero value is a matter of tolerance (log(1 +- 1 ulp) is either)
    zero_g, zero_w = kg >= 4, kw >= 4
    soft = (zero_g & (kw == 0)) | (zero_w & (kg == 0))
    # a finite non-zero value that both sides agree is non-zero but one side computes as a zero
    # of the other sign is a kind error too; that is covered by the kinds table above
    badk = (kg != kw) & ~skip & ~soft
    r = rtol_for(want.dtype) if rtol is None else rtol
    atol = atol + float(np.finfo(want.dtype).smallest_normal)  # subnormals: see kinds()
    fin = ((kw == 0) | soft) & ~skip
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    s = 0.0 if sens is None else np.asarray(sens, np.float64)
    with np.errstate(all="ignore"):
        err = np.abs(g - w)
        allowed = np.broadcast_to(r * np.maximum(np.abs(g), np.abs(w)) + atol + 2 * s, err.shape)
    return badk, fin & ~(err <= allowed), err, allowed


def mismatch(got, want, *, sens=None, unstable=None, rtol=None, atol=0.0, zero_sign=True,
             what="") -> str | None:
    """None when `got` agrees with `want`, else a short description of the first disagreement.
    zero_sign=False treats -0.0 and +0.0 as one kind (derivatives: autodiff's zeros have no sign)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape} != expected {want.shape}"
    if got.dtype != want.dtype:
        return f"{what}: dtype {got.dtype} != expected {want.dtype}"
    if got.size == 0:
        return None
    badk, bad, err, allowed = bad_elements(got, want, sens=sens, unstable=unstable, rtol=rtol, atol=atol,
                                           zero_sign=zero_sign)
    if want.dtype.kind != "f":
        if bad.any():
            i = _first(bad)
            return f"{what}: {int(bad.sum())} of {bad.size} elements differ; at {i} got {got[i]!r}, expected {want[i]!r}"
        return None
    if badk.any():
        kg, kw = kinds(got), kinds(want)
        i = _first(badk)
        return (f"{what}: {int(badk.sum())} of {badk.size} elements differ in kind; at {i} got {got[i]!r} "
                f"({KIND_NAMES[int(kg[i])]}), expected {want[i]!r} ({KIND_NAMES[int(kw[i])]})")
    if bad.any():
        i = _first(bad)
        return (f"{what}: {int(bad.sum())} of {bad.size} elements differ; at {i} got {got[i]!r}, expected "
                f"{want[i]!r} (|err| {err[i]:.3g} > allowed {allowed[i]:.3g})")
    return None


def bitwise_equal(a, b) -> bool:
    """Same shape, dtype and bytes (NaN payloads included): two runs of one executable."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == \
        np.ascontiguousarray(b).tobytes()


def _first(mask: np.ndarray):
    idx = np.argwhere(mask)[0]
    return tuple(int(i) for i in idx)
