"""Random well-typed graphad programs (hypothesis strategies) over the whole primitive set.

A program is built by *tracing*: `programs()` opens a graphad `Trace`, and every move draws an
operation and its attributes with hypothesis, then binds it (`PRIMITIVES[name].bind`, or a
user-level op such as `ops.max_pool2d` that expands into several primitives) on tracers whose
shapes and dtypes are known. The primitives' shape rules reject anything ill-typed, so a program
that comes out is well typed by construction; hypothesis shrinks it by shrinking the draws.

Moves cover every registered primitive, biased to what fuses badly: slices with steps and offsets
(also through `x[::-2]`-style indexing), pads with interior widths, pools with every
stride/window/padding/dilation, take/index_add, concat, reductions over several axes, argmax,
long elementwise and broadcasting chains, matmul/einsum/conv2d, every dtype (float16, bfloat16,
float32/64, int32/64, bool), 0-size dimensions, and inputs holding inf, -inf, NaN and -0.0.

Modes: "float" (IEEE special values allowed), "mixed" (ints and bools too), "int", "half"
(float16 and bfloat16 values beside float32, ints and bools: every op rounded to its 16-bit type,
casts between them) and "smooth" (float64 only, no kinks, operands of log/sqrt/reciprocal/...
mapped into their domains by graph nodes, finite inputs): only smooth programs are checked
against finite differences.

Integer values carry a static interval; an operation whose result could leave the safe range of
its dtype first clamps its operands (minimum/maximum nodes), so no program depends on division
by zero or a float -> int cast of NaN/inf (undefined in C, and graphad does not promise a result
for them). Integer overflow is defined (it wraps, as NumPy's): a quarter of the integer sums,
differences and products first scatter an operand over the dtype's whole range, overflowing,
and clamp the result back (`wrapping`). Indices of take/index_add are in range by construction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes  # noqa: F401 -- registers the name "bfloat16" with NumPy (the half mode's dtype names:
import numpy as np  # run alone, test_generator_covers_every_primitive failed before anything imported it)
from hypothesis import strategies as st

from graphad import ops
from graphad.errors import GraphadError, ShapeError
from graphad.frontend.trace import Trace
from graphad.ir.core import Graph, TensorType
from graphad.passes.cleanup import dce
from graphad.prims import PRIMITIVES
from graphad.prims._util import broadcast_shapes

FLOATS = ("float32", "float64")
HALF = ("float16", "bfloat16")  # the "half" mode's floats (beside float32): stored in 16 bits
ANY_FLOAT = FLOATS + HALF
INTS = ("int32", "int64")
# integer results stay within these magnitudes (float64 holds them exactly, no overflow anywhere)
LIMIT = {"int32": 2 ** 30, "int64": 2 ** 52}
MAX_ELEMS = 400     # no intermediate larger than this: programs stay fast to interpret and compile
MAX_RANK = 4


# ---------------------------------------------------------------- input domains

_SPECIALS = ["nan", "inf", "-inf", "-0.0", "0.0", "max", "-max", "tiny", "1.0", "-1.0"]


@dataclass
class Domain:
    """How the values of one input are drawn (also for more examples: vmap, fixtures).

    kind: "float" (uniform in [lo, hi], a fraction `specials` replaced by IEEE special values),
    "smooth" (uniform in [lo, hi], nothing special), "int" (integers in [lo, hi]), "bool".
    """

    kind: str
    lo: float = -3.0
    hi: float = 3.0
    specials: float = 0.0

    def sample(self, rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
        """An array of `shape` and `dtype` drawn from this domain."""
        shape = tuple(shape)
        if self.kind == "bool":
            return rng.random(shape) < 0.5
        if self.kind == "int":
            return rng.integers(int(self.lo), int(self.hi), size=shape, endpoint=True).astype(dtype)
        x = rng.uniform(self.lo, self.hi, size=shape).astype(dtype)
        if self.kind == "float" and self.specials > 0 and x.size:
            fi = np.finfo(dtype)
            table = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "-0.0": -0.0, "0.0": 0.0,
                     "max": fi.max, "-max": -fi.max, "tiny": fi.smallest_subnormal, "1.0": 1.0, "-1.0": -1.0}
            mask = rng.random(shape) < self.specials
            picks = rng.choice(len(_SPECIALS), size=shape)
            special = np.array([table[s] for s in _SPECIALS], dtype)[picks]
            x = np.where(mask, special, x).astype(dtype)
        return np.asarray(x)

    def to_json(self) -> dict:
        """The domain as a JSON-able dict (fixtures)."""
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi, "specials": self.specials}

    @staticmethod
    def from_json(d: dict) -> "Domain":
        """The domain described by `to_json`'s dict."""
        return Domain(d["kind"], d["lo"], d["hi"], d.get("specials", 0.0))


@dataclass
class Program:
    """A random program: the graph, its inputs and what the checks need to draw more values."""

    graph: Graph
    inputs: list
    domains: list
    mode: str
    seed: int
    poison: bool = True
    batched: list = field(default_factory=list)   # which inputs vmap maps over (axis 0)
    batch_size: int = 2
    compile_derived: bool = True                  # also compile the derivative/vmap graph
    skipped: int = 0                              # moves the shape rules rejected (generator slack)

    @property
    def smooth(self) -> bool:
        """Whether finite differences apply (float64, no kinks, inputs inside the domains)."""
        return self.mode == "smooth"

    def text(self) -> str:
        """The program as IR text (graphad's printer)."""
        return str(self.graph)

    def describe(self) -> str:
        """IR text, inputs and check settings, for failure messages."""
        ins = "\n".join(f"  {n} = {_show_array(a)}" for n, a in zip(self.graph.input_names, self.inputs))
        return f"{self.text()}\ninputs:\n{ins}\nmode={self.mode} poison={self.poison} batched={self.batched}"


def _show_array(a: np.ndarray) -> str:
    a = np.asarray(a)
    with np.printoptions(threshold=24, edgeitems=3, precision=6, linewidth=1000):
        body = np.array2string(a.ravel(), separator=", ") if a.ndim > 1 else np.array2string(a, separator=", ")
    return f"{a.dtype}{list(a.shape)} {body}" + (" (flattened)" if a.ndim > 1 else "")


# ---------------------------------------------------------------- the builder

class _Skip(Exception):
    """A move that does not apply to the current pool (or a shape rule said no): draw another."""


@dataclass
class _V:
    """A value of the program under construction: its tracer and, for ints, a static interval."""

    t: object
    lo: float | None = None
    hi: float | None = None

    @property
    def shape(self) -> tuple:
        return tuple(self.t.shape)

    @property
    def dtype(self) -> str:
        return self.t.dtype.name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_float(self) -> bool:
        return self.dtype in ANY_FLOAT

    @property
    def is_int(self) -> bool:
        return self.dtype in INTS

    @property
    def is_bool(self) -> bool:
        return self.dtype == "bool"

    @property
    def bound(self) -> float:
        return max(abs(self.lo), abs(self.hi)) if self.lo is not None else 0


def _bshape_ok(*shapes) -> tuple | None:
    """The broadcast shape of `shapes`, or None when they do not broadcast."""
    try:
        return broadcast_shapes(*shapes)
    except ShapeError:
        return None


class _Gen:
    """Draws moves and binds them inside the active trace."""

    def __init__(self, draw, trace: Trace, mode: str, rng: np.random.Generator, max_inputs: int, zero_ok: bool,
                 specials: float):
        self.draw = draw
        self.tr = trace
        self.mode = mode
        self.rng = rng
        self.max_inputs = max_inputs
        self.zero_ok = zero_ok
        self.specials = specials
        self.pool: list[_V] = []
        self.inputs: list = []
        self.domains: list[Domain] = []
        self.skipped = 0
        self.force: str | None = None
        if mode == "smooth":
            self.dtypes = ("float64",)
        elif mode == "float":
            self.dtypes = FLOATS
        elif mode == "half":
            self.dtypes = HALF + ("float32",) + INTS + ("bool",)
        elif mode == "int":
            self.dtypes = INTS + ("bool",)
        else:
            self.dtypes = FLOATS + INTS + ("bool",)

    # ------------------------------------------------------------ draws
    def choice(self, seq):
        """One element of seq (the forced focus primitive when it is one of them)."""
        seq = list(seq)
        if self.force is not None and self.force in seq:  # the program's focus primitive (see programs())
            f, self.force = self.force, None
            return f
        return self.draw(st.sampled_from(seq))

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return self.draw(st.integers(lo, hi))

    def maybe(self, percent: int) -> bool:
        """True with about `percent`% probability; shrinks to False."""
        return self.draw(st.integers(0, 99)) >= 100 - percent

    def side(self, lo: int = 1, hi: int = 4) -> int:
        """An axis length (0 now and then when 0-size dimensions are on)."""
        if self.zero_ok and self.maybe(20):
            return 0
        return self.integer(lo, hi)

    def shape(self, min_rank: int = 0, max_rank: int = 3) -> tuple:
        """A shape of rank in [min_rank, max_rank]."""
        return tuple(self.side() for _ in range(self.integer(min_rank, max_rank)))

    def pick(self, pred=lambda v: True) -> _V | None:
        """A pool value satisfying pred, preferring recent ones (shrinks towards chains)."""
        cands = [v for v in reversed(self.pool) if pred(v)]
        if not cands:
            return None
        if len(cands) == 1 or not self.maybe(40):
            return cands[0]
        return cands[self.integer(1, len(cands) - 1)]

    # ------------------------------------------------------------ values
    def new_input(self, shape, dtype: str) -> _V:
        """A fresh graph input with values drawn from the mode's domain."""
        if len(self.inputs) >= self.max_inputs:
            raise _Skip("input budget used")
        if dtype == "bool":
            dom = Domain("bool", 0, 1)
        elif dtype in INTS:
            dom = Domain("int", -4, 4)
        elif self.mode == "smooth":
            dom = Domain("smooth", -2.0, 2.0)
        else:
            dom = Domain("float", -3.0, 3.0, self.specials)
        t = self.tr.new_arg(TensorType(shape, dtype), f"x{len(self.inputs)}")
        self.inputs.append(dom.sample(self.rng, shape, dtype))
        self.domains.append(dom)
        v = _V(t, *((0, 1) if dtype == "bool" else (dom.lo, dom.hi) if dtype in INTS else (None, None)))
        self.pool.append(v)
        return v

    def emit(self, name: str, *vals: _V, lo=None, hi=None, **attrs) -> _V:
        """Bind primitive `name`; a rejected application becomes _Skip."""
        try:
            t = PRIMITIVES[name].bind(*[v.t for v in vals], **attrs)
        except GraphadError as e:
            raise _Skip(f"{name}: {e}") from None
        if isinstance(t, (list, tuple)):
            t = t[0]
        if t.dtype.name in INTS and lo is None:
            raise AssertionError(f"internal: integer result of {name} without an interval")
        if t.dtype.name == "bool":
            lo, hi = 0, 1
        if int(np.prod(t.shape, dtype=np.int64)) > MAX_ELEMS:
            raise _Skip("too large")
        return _V(t, lo, hi)

    def user_op(self, fn, *vals: _V, lo=None, hi=None) -> _V:
        """Apply a user-level graphad op (several primitives) on the values' tracers."""
        try:
            t = fn(*[v.t for v in vals])
        except GraphadError as e:
            raise _Skip(str(e)) from None
        if int(np.prod(t.shape, dtype=np.int64)) > MAX_ELEMS:
            raise _Skip("too large")
        if t.dtype.name == "bool":
            lo, hi = 0, 1
        return _V(t, lo, hi)

    def scalar(self, value, dtype: str) -> _V:
        """A 0-d `full` constant."""
        if dtype in INTS:
            value = int(value)
            return self.emit("full", shape=(), value=value, dtype=dtype, lo=value, hi=value)
        if dtype == "bool":
            return self.emit("full", shape=(), value=bool(value), dtype=dtype)
        return self.emit("full", shape=(), value=float(value), dtype=dtype)

    def clamp_int(self, v: _V, m: int) -> _V:
        """v limited to [-m, m] (a no-op when its interval already is)."""
        if not v.is_int or v.bound <= m:
            return v
        a = self.emit("maximum", v, self.scalar(-m, v.dtype), lo=max(v.lo, -m), hi=max(v.hi, -m))
        return self.emit("minimum", a, self.scalar(m, v.dtype), lo=min(a.lo, m), hi=min(a.hi, m))

    def cast(self, v: _V, dtype: str) -> _V:
        """v as `dtype`; float -> int goes through a NaN-safe clamp (the cast of NaN/inf/huge is undefined)."""
        if v.dtype == dtype:
            return v
        if dtype in INTS:
            if v.is_float:
                m = 1000.0
                c = self.emit("minimum", self.emit("maximum", v, self.scalar(-m, v.dtype)), self.scalar(m, v.dtype))
                ok = self.emit("equal", v, v)  # False exactly at NaN
                v = self.emit("where", ok, c, self.scalar(0.0, v.dtype))
                return self.emit("astype", v, dtype=dtype, lo=-m, hi=m)
            if v.is_bool:
                return self.emit("astype", v, dtype=dtype, lo=0, hi=1)
            v = self.clamp_int(v, LIMIT[dtype])
            return self.emit("astype", v, dtype=dtype, lo=v.lo, hi=v.hi)
        return self.emit("astype", v, dtype=dtype)

    def numeric(self, pred=lambda v: True, min_rank: int = 0) -> _V:
        """A non-bool pool value of rank >= min_rank satisfying pred (or a fresh input)."""
        v = self.pick(lambda v: not v.is_bool and v.ndim >= min_rank and pred(v))
        if v is None:
            dtype = self.choice([d for d in self.dtypes if d != "bool"])
            v = self.new_input(self.shape(min_rank, max(min_rank, 3)), dtype)
        return v

    def floating(self) -> _V:
        """A float pool value (an int one cast, or a fresh input)."""
        v = self.pick(lambda v: v.is_float)
        if v is None:
            v = self.numeric()
            if not v.is_float:
                v = self.cast(v, self.choice([d for d in self.dtypes if d in ANY_FLOAT] or ["float64"]))
        return v

    def boolean(self, want: tuple | None = None) -> _V:
        """A bool value that broadcasts to shape `want`: from the pool, a comparison, or an input."""
        v = self.pick(lambda v: v.is_bool and (want is None or _bshape_ok(v.shape, want) == want))
        if v is not None and not self.maybe(30):
            return v
        if self.mode != "smooth" and self.maybe(60):
            a = self.numeric(lambda v: want is None or _bshape_ok(v.shape, want) == want)
            if want is None or _bshape_ok(a.shape, want) == want:
                b = self.partner(a, limit_to=want)
                return self.emit(self.choice(["less", "greater", "equal", "not_equal", "less_equal",
                                              "greater_equal"]), a, b)
        return self.new_input(self.sub_shape(want) if want is not None else self.shape(), "bool")

    def sub_shape(self, shape: tuple) -> tuple:
        """A shape that broadcasts to `shape` (dims kept or set to 1, leading ones dropped)."""
        k = self.integer(0, len(shape))
        return tuple(1 if self.maybe(30) else s for s in shape[len(shape) - k:])

    def partner(self, a: _V, limit_to: tuple | None = None) -> _V:
        """A second operand for a broadcasting op with `a`, of a's dtype."""
        kind = self.integer(0, 4)
        target = a.shape if limit_to is None else limit_to
        if kind == 0:
            if a.is_bool:
                return self.scalar(self.maybe(50), "bool")
            v = self.choice([0.0, 1.0, -1.0, 2.0, 0.5, -3.0]) if a.is_float else self.choice([0, 1, -1, 2, 3])
            if a.is_float and self.mode == "float" and self.maybe(20):
                v = self.choice([math.inf, -math.inf, math.nan, -0.0])
            return self.scalar(v, a.dtype)
        if kind == 1:
            return a  # x op x: what the algebraic simplifier likes to rewrite
        if kind == 2:
            def fits(v):
                s = _bshape_ok(v.shape, a.shape)
                return v is not a and s is not None and (limit_to is None or _bshape_ok(s, limit_to) == limit_to) \
                    and len(s) <= MAX_RANK and int(np.prod(s, dtype=np.int64)) <= MAX_ELEMS and \
                    (v.is_bool == a.is_bool)
            v = self.pick(fits)
            if v is not None:
                return self.cast(v, a.dtype)
        shape = self.sub_shape(target)
        if kind == 4 and len(target) < MAX_RANK and limit_to is None:
            shape = (self.side(),) + tuple(target)  # broadcasting makes the result larger
        if len(self.inputs) < self.max_inputs:
            return self.new_input(shape, a.dtype)
        return self.creation_like(shape, a.dtype)

    def creation_like(self, shape: tuple, dtype: str) -> _V:
        """A creation primitive of `shape` (full, or constant data)."""
        if self.maybe(50) or dtype == "bool":
            val = self.choice([0, 1, 2, -1]) if dtype in INTS else (bool(self.maybe(50)) if dtype == "bool"
                                                                     else self.choice([0.0, 1.5, -2.0]))
            return self.emit("full", shape=shape, value=val, dtype=dtype,
                             **({"lo": val, "hi": val} if dtype in INTS else {}))
        data = Domain("int", -3, 3).sample(self.rng, shape, dtype) if dtype in INTS else \
            Domain("smooth", -2, 2).sample(self.rng, shape, dtype)
        return self.emit("constant", value=data, dtype=dtype, **({"lo": -3, "hi": 3} if dtype in INTS else {}))

    # ------------------------------------------------------------ moves
    def move_unary(self):
        """A unary elementwise primitive (in smooth programs on a domain-mapped operand)."""
        smooth = self.mode == "smooth"
        names = ["exp", "log", "sin", "cos", "tanh", "sqrt", "rsqrt", "reciprocal", "log1p", "expm1", "tan",
                 "sigmoid", "erf", "neg", "square", "stop_gradient"] + list(self.SMOOTH_MATH)
        if not smooth:
            names += ["floor", "abs", "sign", "relu", "logical_not", "ceil", "round", "trunc", "signbit"]
        name = self.choice(names)
        if name == "logical_not":
            return self.emit("logical_not", self.boolean())
        if name == "signbit":  # (bool result, any real operand)
            return self.emit("signbit", self.pick(lambda v: not v.is_bool) or self.numeric())
        if name in ("neg", "abs", "sign", "square", "relu", "stop_gradient"):
            v = self.numeric()
            if v.is_int:
                if name == "square":
                    v = self.clamp_int(v, int(math.isqrt(LIMIT[v.dtype])))
                    return self.emit(name, v, lo=0, hi=v.bound ** 2)
                lo, hi = {"neg": (-v.hi, -v.lo), "abs": (0, v.bound), "sign": (-1, 1),
                          "relu": (0, max(v.hi, 0)), "stop_gradient": (v.lo, v.hi)}[name]
                return self.emit(name, v, lo=lo, hi=hi)
            return self.emit(name, v)
        v = self.floating()
        if smooth:  # map the operand into the op's domain with ordinary graph nodes
            if name in ("log", "sqrt", "rsqrt", "reciprocal", "log2", "log10", "cbrt", "lgamma", "polygamma"):
                v = self.emit("add", self.emit("square", v), self.scalar(0.5, v.dtype))
            elif name == "log1p":
                v = self.emit("square", v)
            elif name == "tan":
                v = self.emit("tanh", v)
            elif name in ("arcsin", "arccos", "arctanh", "erfinv"):  # into (-0.9, 0.9)
                v = self.emit("mul", self.emit("tanh", v), self.scalar(0.9, v.dtype))
            elif name == "arccosh":
                v = self.emit("add", self.emit("square", v), self.scalar(1.5, v.dtype))
        if name == "polygamma":  # digamma and the next two orders (their derivatives are n + 1, n + 2)
            return self.emit(name, v, n=self.integer(0, 2))
        return self.emit(name, v)

    # issue 17's unary math, smooth on the domains move_unary maps their operands into
    SMOOTH_MATH = ("exp2", "log2", "log10", "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh",
                   "arctanh", "cbrt", "erfc", "erfinv", "lgamma", "polygamma")

    def move_binary(self):
        """A broadcasting binary arithmetic primitive (integer operands kept in range)."""
        smooth = self.mode == "smooth"
        name = self.choice(["add", "mul", "sub", "div", "maximum", "minimum", "pow", "arctan2", "hypot", "logaddexp",
                            "fmod", "remainder"] if not smooth
                           else ["add", "mul", "sub", "div", "pow", "arctan2", "hypot", "logaddexp"])
        if name in ("arctan2", "hypot", "logaddexp"):  # float operands only
            a = self.floating()
        else:
            a = self.numeric()
        b = self.partner(a)
        if a.is_float:
            if smooth and name == "div":
                b = self.emit("add", self.emit("square", b), self.scalar(0.5, b.dtype))
            if smooth and name in ("pow", "hypot"):  # away from 0 (pow's log x, hypot's kink)
                a = self.emit("add", self.emit("square", a), self.scalar(0.5, a.dtype))
            if smooth and name == "arctan2":  # x > 0: away from the branch cut and the origin
                b = self.emit("add", self.emit("square", b), self.scalar(0.5, b.dtype))
            return self.emit(name, a, b)
        lim = LIMIT[a.dtype]
        if name in ("add", "sub", "mul") and self.maybe(25):
            return self.wrapping(name, a, b)
        if name in ("add", "sub"):
            a, b = self.clamp_int(a, lim // 2), self.clamp_int(b, lim // 2)
            lo, hi = (a.lo + b.lo, a.hi + b.hi) if name == "add" else (a.lo - b.hi, a.hi - b.lo)
            return self.emit(name, a, b, lo=lo, hi=hi)
        if name in ("maximum", "minimum"):
            f = max if name == "maximum" else min
            return self.emit(name, a, b, lo=f(a.lo, b.lo), hi=f(a.hi, b.hi))
        if name == "mul":
            m = int(math.isqrt(lim))
            a, b = self.clamp_int(a, m), self.clamp_int(b, m)
            return self.emit(name, a, b, lo=-a.bound * b.bound, hi=a.bound * b.bound)
        if name in ("fmod", "remainder"):  # |result| < |divisor| (x mod 0 is 0; divisors kept nonzero as for div)
            b = self.clamp_int(b, lim // 2)
            d = self.emit("add", self.emit("abs", b, lo=0, hi=b.bound), self.scalar(1, b.dtype), lo=1, hi=b.bound + 1)
            if self.maybe(50):
                d = self.emit("neg", d, lo=-d.hi, hi=-1)
            m = max(abs(d.lo), abs(d.hi))
            return self.emit(name, a, d, lo=-m, hi=m)
        if name == "div":  # a nonzero divisor: 1 + |b|, maybe negated
            b = self.clamp_int(b, lim // 2)
            d = self.emit("add", self.emit("abs", b, lo=0, hi=b.bound), self.scalar(1, b.dtype), lo=1, hi=b.bound + 1)
            if self.maybe(50):
                d = self.emit("neg", d, lo=-d.hi, hi=-1)
            return self.emit("div", a, d, lo=-a.bound, hi=a.bound)
        # pow: a small base and an exponent in [0, 3]
        a = self.clamp_int(a, 64)
        e = self.emit("minimum", self.emit("abs", b, lo=0, hi=b.bound), self.scalar(3, b.dtype), lo=0,
                      hi=min(b.bound, 3))
        return self.emit("pow", a, e, lo=-a.bound ** 3, hi=a.bound ** 3)

    # odd multipliers that scatter small integers over the whole range (golden-ratio hashing)
    _SCATTER = {"int32": -1640531535, "int64": -7046029254386353131}

    def wrapping(self, name: str, a: _V, b: _V) -> _V:
        """`a` scattered over its dtype's range (a product that overflows for |a| >= 1), `name`
        applied with `b` (which may overflow again), then clamped back into the safe range: the
        integer overflow that compiled code and NumPy both wrap, followed by the min/max the
        simplifier reasons about (TVM's made `b - max(a * b, b)` `min(b - a * b, 0)`)."""
        info = np.iinfo(a.dtype)
        big = self.emit("mul", a, self.scalar(self._SCATTER[a.dtype], a.dtype), lo=int(info.min), hi=int(info.max))
        operands = (big, b) if self.maybe(50) else (b, big)
        r = self.emit(name, *operands, lo=int(info.min), hi=int(info.max))
        return self.clamp_int(r, LIMIT[a.dtype])

    def move_complex(self):
        """complex(re, im) of two float values, some complex arithmetic on it, and back to a real
        value (real, imag, or abs outside smooth programs): a program with a complex value is
        compiled as the runtime compiles it (real/imaginary pairs, or the NumPy interpreter where a
        primitive has no pair rule: docs/complex.md), and its derivatives and batching are checked
        like any other's: now and then one of COMPLEX_FNS first (on parts
        mapped off its branch cuts), then arithmetic (add, sub, mul, neg, square, conj, prod of
        the last axis). The parts are cleaned of NaN (0) and clipped to [-3, 3] outside smooth programs,
        as move_linalg's matrices: NumPy's and XLA's complex special values differ (NumPy's
        |nan + inf j| is hypot's inf, XLA's is NaN) and are no contract of graphad's."""
        if self.force == "det" or self.maybe(15):
            return self.complex_det()
        a = self.finite_part(self.floating())
        b = self.finite_part(self.partner(a))
        if self.maybe(35):
            z = self.complex_function(a, b)
        else:
            z = self.emit("complex", a, b)
        for _ in range(self.integer(1 if self.force == "conj" else 0, 2)):
            op = self.choice(["conj", "mul", "add", "sub", "neg", "square", "prod"])
            if op in ("conj", "neg", "square"):
                z = self.emit(op, z)
                continue
            if op == "prod":  # over the last axis (at most 4 factors), kept for the broadcasts after it
                if z.ndim == 0:
                    raise _Skip("prod of a scalar")
                z = self.emit("prod", z, axes=(z.ndim - 1,), keepdims=True)
                continue
            w = z
            if self.maybe(50):
                u = self.finite_part(self.floating())
                w = self.emit("complex", u, self.finite_part(self.partner(u)))
            if _bshape_ok(z.shape, w.shape) is None:
                raise _Skip("shapes do not broadcast")
            z = self.emit(op, z, w)
        return self.emit(self.choice(["real", "imag"] if self.mode == "smooth" else ["real", "imag", "abs"]), z)

    # the complex functions with their operand's region: parts (tanh a, tanh b) in the unit square
    # (entire functions, and tan and sigmoid, whose poles lie outside it), the upper half plane
    # Im z >= 0.5 (cuts on the real axis), the right half plane Re z >= 0.5 (cuts on the imaginary
    # axis or the negative real axis): always off the branch cuts, as move_unary maps real operands
    COMPLEX_FNS = {**{n: "square" for n in ("tan", "sinh", "cosh", "exp2", "expm1", "sigmoid")},
                   **{n: "upper" for n in ("arcsin", "arccos", "arctanh", "arccosh")},
                   **{n: "right" for n in ("arctan", "arcsinh", "log2", "log10", "log1p")}}

    def complex_function(self, a: _V, b: _V) -> _V:
        """f(complex(re, im)), f one of COMPLEX_FNS, with (re, im) from (a, b) mapped into f's region."""
        name = self.choice(sorted(self.COMPLEX_FNS))
        region = self.COMPLEX_FNS[name]
        half = self.scalar(0.5, a.dtype)
        re = self.emit("add", self.emit("square", a), half) if region == "right" else self.emit("tanh", a)
        im = self.emit("add", self.emit("square", b), half) if region == "upper" else self.emit("tanh", b)
        if _bshape_ok(re.shape, im.shape) is None:
            raise _Skip("shapes do not broadcast")
        return self.emit(name, self.emit("complex", re, im))

    def finite_part(self, v: _V) -> _V:
        """v with NaN as 0 and clipped to [-3, 3] (as is in smooth programs, whose values are finite)."""
        if self.mode == "smooth":
            return v
        return self.user_op(lambda x: ops.clip(ops.where(ops.equal(x, x), x, ops.zeros_like(x)), -3.0, 3.0), v)

    def complex_det(self):
        """The real or imaginary part of det(a), a = (n + 1) I + complex(tanh(t), sin(t))[:, None] c
        (c a constant row in [-1, 1]: diagonally dominant), t a pool value cleaned of NaN and clipped
        outside smooth programs, as move_linalg builds its matrices."""
        v = self.pick(lambda w: w.is_float and 1 <= w.ndim <= 3 and w.shape[-1] >= 1) or self.new_input(
            self.shape(1, 3), self.choice([d for d in self.dtypes if d in ANY_FLOAT] or ["float64"]))
        if not v.is_float or v.ndim < 1 or v.shape[-1] < 1:
            raise _Skip("det needs a float vector")
        n = min(v.shape[-1], 4)
        smooth = self.mode == "smooth"
        c = self.rng.uniform(-1, 1, n).astype(v.dtype)
        part = self.choice([ops.real, ops.imag])
        # det, or slogdet's complex sign (its real or imaginary part) or its real log|det|
        which = self.choice(["det", "sign", "logabsdet"])  # (a forced "det" is drawn here)

        def build(x):
            x = x[..., :n]
            if not smooth:
                x = ops.clip(ops.where(ops.equal(x, x), x, ops.zeros_like(x)), -3.0, 3.0)
            z = ops.complex(ops.tanh(x), ops.sin(x))
            a = ops.constant((n + 1.0) * np.eye(n, dtype=c.dtype)) + ops.expand_dims(z, -1) * ops.constant(c)
            if which == "det":
                return part(ops.linalg.det(a))
            sign, lad = ops.linalg.slogdet(a)
            return lad if which == "logabsdet" else part(sign)
        return self.user_op(build, v)

    def move_compare(self):
        """A comparison (bool result), bools included for equal/not_equal."""
        if self.mode == "smooth":
            raise _Skip("no comparisons in smooth programs")
        name = self.choice(["less", "equal", "greater", "not_equal", "less_equal", "greater_equal"])
        pred = (lambda v: True) if name in ("equal", "not_equal") else (lambda v: not v.is_bool)
        a = self.pick(pred) or self.numeric()
        return self.emit(name, a, self.partner(a))

    def move_bitwise(self):
        """bitwise and/or/xor of integer or bool values (ints: the result stays within the powers of
        two bounding both operands' intervals, two's complement)."""
        if self.mode in ("smooth", "float"):
            raise _Skip("no integers or bools in this mode")
        name = self.choice(["bitwise_and", "bitwise_or", "bitwise_xor"])
        a = self.pick(lambda v: v.is_int or v.is_bool)
        if a is None:
            a = self.new_input(self.shape(), self.choice([d for d in self.dtypes if d in INTS or d == "bool"]))
        b = self.partner(a)
        if a.is_bool:
            return self.emit(name, a, b)
        k = max(1, int(max(a.bound, b.bound))).bit_length()
        return self.emit(name, a, b, lo=-(2 ** k), hi=2 ** k - 1)

    def move_shift(self):
        """x << n or x >> n of integers; the count is the partner's values (negative ones and ones
        past the width included: NumPy's 0 / sign fill), or a small constant."""
        if self.mode in ("smooth", "float"):
            raise _Skip("no integers in this mode")
        name = self.choice(["left_shift", "right_shift"])
        a = self.pick(lambda v: v.is_int)
        if a is None:
            a = self.new_input(self.shape(), self.choice([d for d in self.dtypes if d in INTS]))
        n = self.partner(a) if self.integer(0, 9) < 7 else self.scalar(self.choice([0, 1, 3, 31]), a.dtype)
        if name == "right_shift":  # between the sign fill and the operand
            return self.emit(name, a, n, lo=min(a.lo, 0), hi=max(a.hi, 0))
        info = np.iinfo(a.dtype)
        return self.emit(name, a, n, lo=int(info.min), hi=int(info.max))

    def move_where(self):
        """where(cond, a, b) with broadcasting."""
        if self.mode == "smooth":
            c = self.new_input(self.shape(), "bool")  # data-independent condition: still smooth
            a = self.numeric()
            b = self.partner(a)
            out = _bshape_ok(a.shape, b.shape, c.shape)
            if out is None:
                raise _Skip("where shapes")
        else:
            a = self.pick() or self.numeric()
            b = self.partner(a)
            c = self.boolean(_bshape_ok(a.shape, b.shape))
        lo = hi = None
        if a.is_int:
            lo, hi = min(a.lo, b.lo), max(a.hi, b.hi)
        return self.emit("where", c, a, b, lo=lo, hi=hi)

    def move_astype(self):
        """A cast to another dtype (float -> int through a NaN-safe clamp)."""
        v = self.pick() or self.numeric()
        choices = [d for d in (FLOATS + INTS + ("bool",) + (HALF if self.mode == "half" else ())) if d != v.dtype]
        if self.mode == "smooth":
            # a float32 round trip would quantise the function below the finite-difference step
            raise _Skip("no casts in smooth programs")
        return self.cast(v, self.choice(choices))

    def move_reduce(self):
        """sum/prod/max/min over any subset of axes, or argmax/argmin along one."""
        smooth = self.mode == "smooth"
        name = self.choice(["sum", "max", "prod", "min", "argmax", "argmin"] if not smooth else ["sum", "prod"])
        v = self.numeric(min_rank=1 if name.startswith("arg") else 0)
        keep = self.maybe(40)
        if name.startswith("arg"):
            axis = self.integer(0, v.ndim - 1)
            return self.emit(name, v, axis=axis, keepdims=keep, lo=0, hi=max(v.shape[axis] - 1, 0))
        axes = tuple(sorted(self.draw(st.sets(st.integers(0, max(v.ndim - 1, 0)), max_size=v.ndim))
                            if v.ndim else ()))
        n = int(np.prod([v.shape[a] for a in axes], dtype=np.int64))
        lo = hi = None
        if v.is_int:
            lim = LIMIT[v.dtype]
            if name == "sum":
                v = self.clamp_int(v, max(1, lim // max(n, 1)))
                lo, hi = -v.bound * n, v.bound * n
            elif name == "prod":
                # the largest |element| whose n-th power still fits the dtype's safe range
                m = max(1, min(2, int(lim ** (1.0 / max(n, 1)))))
                v = self.clamp_int(v, m)
                lo, hi = -v.bound ** n, v.bound ** n
            else:
                lo, hi = v.lo, v.hi
        return self.emit(name, v, axes=axes, keepdims=keep, lo=lo, hi=hi)

    def move_slice(self):
        """A strided slice with offsets, or user-level indexing (negative steps, ints, None)."""
        v = self.pick(lambda v: v.ndim >= 1) or self.new_input(self.shape(1, 3), self.choice(self.dtypes))
        if self.maybe(35):  # user-level indexing: negative steps (flip + slice), int indices, None
            idx = []
            for n in v.shape:
                k = self.integer(0, 3)
                if k == 0 or n == 0:
                    idx.append(slice(None))
                elif k == 1 and self.maybe(50):
                    idx.append(self.integer(-n, n - 1))
                else:
                    step = self.choice([1, 2, -1, 3, -2])
                    a = self.integer(-n, n)
                    b = self.integer(-n, n) if self.maybe(60) else None
                    idx.append(slice(a, b, step))
            if self.maybe(15):
                idx.insert(self.integer(0, len(idx)), None)
            return self.user_op(lambda t: t[tuple(idx)], v, lo=v.lo, hi=v.hi)
        starts, stops, steps = [], [], []
        for n in v.shape:
            a = self.integer(0, n)
            starts.append(a)
            stops.append(self.integer(a, n) if self.maybe(80) else self.integer(0, n))
            steps.append(self.choice([1, 2, 3]))
        return self.emit("slice", v, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps), lo=v.lo, hi=v.hi)

    def move_pad(self):
        """A pad with edge and interior widths and a constant (NaN/-inf/-0.0 in float programs)."""
        v = self.pick() or self.numeric()
        lo_ = tuple(self.integer(0, 2) for _ in v.shape)
        hi_ = tuple(self.integer(0, 2) for _ in v.shape)
        interior = tuple(self.integer(0, 2) if self.maybe(40) else 0 for _ in v.shape)
        if v.is_float:
            value = self.choice([0.0, 1.5, -2.0] + ([math.nan, -math.inf, -0.0] if self.mode == "float" else []))
            lo = hi = None
        elif v.is_int:
            value = float(self.choice([0, 1, -2]))
            lo, hi = min(v.lo, value), max(v.hi, value)
        else:
            value = float(self.choice([0, 1]))
            lo = hi = None
        return self._pad(v, lo_, hi_, interior, value, lo, hi)

    def _pad(self, v, lo_, hi_, interior, value, lo, hi):
        try:
            t = PRIMITIVES["pad"].bind(v.t, lo=lo_, hi=hi_, interior=interior, value=value)
        except GraphadError as e:
            raise _Skip(str(e)) from None
        if int(np.prod(t.shape, dtype=np.int64)) > MAX_ELEMS:
            raise _Skip("too large")
        return _V(t, lo, hi) if not v.is_bool else _V(t, 0, 1)

    def move_reshape(self):
        """A reshape to a random factorisation of the size."""
        v = self.pick() or self.numeric()
        n = v.size
        if n == 0:
            dims = list(v.shape) + [1] * self.integer(0, 1)
            dims = [d for d in self.draw(st.permutations(dims))][:MAX_RANK]
            if 0 not in dims:
                dims[0] = 0
            new = tuple(dims)
        else:
            factors, f, p = [], n, 2
            while f > 1:
                while f % p == 0:
                    factors.append(p)
                    f //= p
                p += 1
            factors = list(self.draw(st.permutations(factors)))
            k = self.integer(1, min(MAX_RANK, max(len(factors), 1)))
            dims = [1] * k
            for i, fac in enumerate(factors):
                dims[self.integer(0, k - 1) if i >= k else i] *= fac
            new = tuple(dims)
        return self.emit("reshape", v, shape=new, lo=v.lo, hi=v.hi)

    def move_transpose(self):
        """A random axis permutation."""
        v = self.pick(lambda v: v.ndim >= 2) or self.pick() or self.numeric()
        perm = tuple(self.draw(st.permutations(range(v.ndim))))
        return self.emit("transpose", v, perm=perm, lo=v.lo, hi=v.hi)

    def move_broadcast(self):
        """broadcast_to: size-1 axes expanded, leading axes added."""
        v = self.pick(lambda v: v.ndim < MAX_RANK) or self.numeric(lambda v: v.ndim < MAX_RANK)
        if v.ndim >= MAX_RANK:
            raise _Skip("rank")
        target = tuple(self.side() if s == 1 and self.maybe(60) else s for s in v.shape)
        for _ in range(self.integer(0, MAX_RANK - v.ndim)):
            target = (self.side(),) + target
        return self.emit("broadcast_to", v, shape=target, lo=v.lo, hi=v.hi)

    def move_flip(self):
        """A flip along any subset of axes."""
        v = self.pick(lambda v: v.ndim >= 1) or self.numeric()
        axes = tuple(sorted(self.draw(st.sets(st.integers(0, max(v.ndim - 1, 0)), max_size=v.ndim)))) if v.ndim else ()
        return self.emit("flip", v, axes=axes, lo=v.lo, hi=v.hi)

    def move_concat(self):
        """concat of 2-3 operands along one axis (0-size pieces included)."""
        v = self.pick(lambda v: v.ndim >= 1) or self.new_input(self.shape(1, 3), self.choice(self.dtypes))
        axis = self.integer(0, v.ndim - 1)
        parts = [v]
        for _ in range(self.integer(1, 2)):
            def fits(w):
                return w.dtype == v.dtype and w.ndim == v.ndim and all(
                    i == axis or a == b for i, (a, b) in enumerate(zip(w.shape, v.shape)))
            w = self.pick(fits) if self.maybe(50) else None
            if w is None:
                shape = tuple(self.side(0, 3) if i == axis else s for i, s in enumerate(v.shape))
                w = self.new_input(shape, v.dtype) if len(self.inputs) < self.max_inputs and self.maybe(60) \
                    else self.creation_like(shape, v.dtype)
            parts.append(w)
        lo = hi = None
        if v.is_int:
            lo, hi = min(p.lo for p in parts), max(p.hi for p in parts)
        return self.emit("concat", *parts, axis=axis, lo=lo, hi=hi)

    def indices(self, n: int) -> _V:
        """An int tensor of valid indices into an axis of length n (negative ones included)."""
        itype = self.choice(INTS)
        ishape = tuple(self.side(0 if n == 0 else 1, 4) for _ in range(self.integer(0, 2))) if n else (0,)
        v = self.pick(lambda v: v.is_int and v.lo >= -n and v.hi < n and v.ndim <= 2) if n else None
        if v is not None and self.maybe(40):
            return v
        if n and len(self.inputs) < self.max_inputs and self.maybe(30):
            t = self.tr.new_arg(TensorType(ishape, itype), f"x{len(self.inputs)}")
            dom = Domain("int", -n, n - 1)
            self.inputs.append(dom.sample(self.rng, ishape, itype))
            self.domains.append(dom)
            v = _V(t, -n, n - 1)
            self.pool.append(v)
            return v
        data = self.rng.integers(-n, n, size=ishape).astype(itype) if n else np.zeros(ishape, itype)
        return self.emit("constant", value=data, dtype=itype, lo=-max(n, 1), hi=max(n - 1, 0))

    def move_take(self):
        """take (gather) with in-range indices, negative and repeated ones included."""
        v = self.pick(lambda v: v.ndim >= 1) or self.new_input(self.shape(1, 3), self.choice(self.dtypes))
        axis = self.integer(0, v.ndim - 1)
        n = v.shape[axis]
        if n == 0:
            raise _Skip("take from an empty axis")
        idx = self.indices(n)
        if self.force == "index_check" or self.maybe(15):
            # the per-example check vmap puts before a folded gather: wrapped into [0, n)
            idx = self.emit("index_check", idx, length=n, op="take", lo=0, hi=n - 1)
        return self.emit("take", v, idx, axis=axis, lo=v.lo, hi=v.hi)

    def move_index_add(self):
        """index_add (scatter-add) with in-range, possibly repeated indices."""
        v = self.pick(lambda v: v.ndim >= 1 and not v.is_bool) or self.new_input(
            self.shape(1, 3), self.choice([d for d in self.dtypes if d != "bool"]))
        axis = self.integer(0, v.ndim - 1)
        n = v.shape[axis]
        if n == 0:
            raise _Skip("index_add into an empty axis")
        idx = self.indices(n)
        ushape = v.shape[:axis] + idx.shape + v.shape[axis + 1:]
        u = self.pick(lambda w: w.shape == ushape and w.dtype == v.dtype)
        if u is None:
            u = self.new_input(ushape, v.dtype) if len(self.inputs) < self.max_inputs else \
                self.creation_like(ushape, v.dtype)
        lo = hi = None
        if v.is_int:
            k = max(idx.size, 1)
            v = self.clamp_int(v, LIMIT[v.dtype] // (2 * k))
            u = self.clamp_int(u, LIMIT[v.dtype] // (2 * k))
            lo, hi = v.lo - k * u.bound, v.hi + k * u.bound
        return self.emit("index_add", v, idx, u, axis=axis, lo=lo, hi=hi)

    def move_cumulative(self):
        """cumsum (the primitive) or cumprod / cummax / cummin / logcumsumexp (doubling scans)
        along one axis (issue 17)."""
        smooth = self.mode == "smooth"
        name = self.choice(["cumsum", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"] if not smooth
                           else ["cumsum", "cumprod", "logcumsumexp"])
        v = self.numeric(min_rank=1)
        axis = self.integer(0, v.ndim - 1)
        n = max(v.shape[axis], 1)
        lo = hi = None
        if name == "cumsum":
            if v.is_int:
                v = self.clamp_int(v, max(1, LIMIT[v.dtype] // n))
                lo, hi = -v.bound * n, v.bound * n
            return self.emit("cumsum", v, axis=axis, lo=lo, hi=hi)
        if v.is_int:
            if name == "cumprod":
                v = self.clamp_int(v, max(1, min(2, int(LIMIT[v.dtype] ** (1.0 / n)))))
                lo, hi = -v.bound ** n, v.bound ** n
            else:
                lo, hi = v.lo, v.hi
        return self.user_op(lambda t: getattr(ops, name)(t, axis=axis), v, lo=lo, hi=hi)

    def move_sorting(self):
        """argsort (the primitive), or sort / top_k / median / quantile (built on it) along one
        axis (issue 17); not in smooth programs (sorting has kinks at ties, which broadcasts make)."""
        name = self.choice(["argsort", "sort", "top_k", "median"])
        if self.mode == "smooth" and name != "argsort":
            raise _Skip("sorting is not smooth at ties")
        v = self.pick(lambda v: v.ndim >= 1) or self.new_input(self.shape(1, 3), self.choice(self.dtypes))
        axis = self.integer(0, v.ndim - 1)
        n = v.shape[axis]
        if name == "argsort":
            return self.emit("argsort", v, axis=axis, lo=0, hi=max(n - 1, 0))
        if name == "sort":
            return self.user_op(lambda t: ops.sort(t, axis), v, lo=v.lo, hi=v.hi)
        if name == "median":
            q = self.choice([None, 0.0, 0.3, 0.5, 1.0])
            if v.is_bool:
                raise _Skip("median of bool")
            fn = (lambda t: ops.median(t, axis)) if q is None else (lambda t: ops.quantile(t, q, axis))  # noqa: E731
            return self.user_op(fn, v)
        k = self.integer(0, n)
        return self.user_op(lambda t: ops.top_k(t, k, axis)[0], v, lo=v.lo, hi=v.hi)

    def move_rearrange(self):
        """roll / tile / repeat / tril / triu / diagonal / trace / take_along_axis / put_along_axis:
        compositions of slice, concat, broadcast, take, index_add, argsort and where (issue 17)."""
        name = self.choice(["roll", "tile", "repeat", "tril", "diagonal", "trace", "take_along", "put_along"])
        v = self.pick(lambda v: v.ndim >= (2 if name in ("tril", "diagonal", "trace") else 1)) or self.new_input(
            self.shape(2, 3), self.choice(self.dtypes))
        if v.ndim < 2 and name in ("tril", "diagonal", "trace"):
            raise _Skip("needs a matrix")
        lo, hi = v.lo, v.hi
        if name in ("take_along", "put_along"):
            axis = self.integer(0, v.ndim - 1)
            n = v.shape[axis]
            if n == 0:
                raise _Skip("an empty axis")
            ishape = tuple(self.side(1, 4) if i == axis else (1 if self.maybe(30) else s)
                           for i, s in enumerate(v.shape))
            data = self.rng.integers(-n, n, size=ishape).astype(self.choice(INTS))
            idx = self.emit("constant", value=data, dtype=data.dtype.name, lo=-n, hi=n - 1)
            if name == "take_along":
                return self.user_op(lambda t, i: ops.take_along_axis(t, i, axis), v, idx, lo=lo, hi=hi)
            full = tuple(s if i != axis else k for i, (s, k) in enumerate(zip(v.shape, ishape)))
            u = self.pick(lambda w: w.shape == full and w.dtype == v.dtype) or self.creation_like(full, v.dtype)
            if v.is_int:
                lo, hi = min(v.lo, u.lo), max(v.hi, u.hi)
            return self.user_op(lambda t, i, w: ops.put_along_axis(t, i, w, axis), v, idx, u, lo=lo, hi=hi)
        if name == "roll":
            shift, axis = self.integer(-5, 5), self.integer(0, v.ndim - 1)
            fn = lambda t: ops.roll(t, shift, axis)  # noqa: E731
        elif name == "tile":
            reps = tuple(self.integer(1, 2) for _ in range(self.integer(1, 2)))
            fn = lambda t: ops.tile(t, reps)  # noqa: E731
        elif name == "repeat":
            axis = self.integer(0, v.ndim - 1)
            reps = [self.integer(0, 2) for _ in range(v.shape[axis])] if self.maybe(50) else self.integer(0, 2)
            fn = lambda t: ops.repeat(t, reps, axis)  # noqa: E731
        elif name == "tril":
            k, upper = self.integer(-2, 2), self.maybe(50)
            fn = (lambda t: ops.triu(t, k)) if upper else (lambda t: ops.tril(t, k))  # noqa: E731
            if v.is_int:
                lo, hi = min(v.lo, 0), max(v.hi, 0)
        else:
            off = self.integer(-2, 2)
            a1 = self.integer(0, v.ndim - 1)
            a2 = self.choice([a for a in range(v.ndim) if a != a1])
            if name == "diagonal":
                fn = lambda t: ops.diagonal(t, off, a1, a2)  # noqa: E731
            else:
                if v.is_bool:
                    raise _Skip("trace of bool")
                m = max(min(v.shape[a1], v.shape[a2]), 1)
                if v.is_int:
                    v = self.clamp_int(v, max(1, LIMIT[v.dtype] // m))
                    lo, hi = min(-v.bound * m, 0), max(v.bound * m, 0)
                fn = lambda t: ops.trace(t, off, a1, a2)  # noqa: E731
        return self.user_op(fn, v, lo=lo, hi=hi)

    def move_linalg(self):
        """A graphad.ops.linalg op (issue 17) on a well-conditioned matrix made from a pool value t
        (eigh: eigenvalues only; svd: singular values only; norm by any ord):
        a = (n + 1) I + tanh(t)[:, None] c (c a constant row, entries in [-1, 1]: diagonally
        dominant) or, for cholesky, the SPD (n + 1) I + tanh(t) tanh(t)^T / n; the right-hand side
        is tanh(t) itself. Outside smooth programs t is first cleaned of NaN (0) and clipped to
        [-3, 3]: the ops' NaN patterns are LAPACK's, not a contract of the compiled kernels."""
        name = self.choice(["solve", "inv", "det", "slogdet", "cholesky", "triangular_solve", "eigh", "qr", "svd",
                            "lstsq", "norm"])
        v = self.pick(lambda w: w.is_float and 1 <= w.ndim <= 3 and w.shape[-1] >= 1) or self.new_input(
            self.shape(1, 3), self.choice(self.dtypes))
        if not v.is_float or v.ndim < 1 or v.shape[-1] < 1:
            raise _Skip("linalg needs a float vector")
        n = min(v.shape[-1], 4)
        smooth = self.mode == "smooth"
        c = self.rng.uniform(-1, 1, n).astype(v.dtype)
        flags = (self.integer(0, 1), self.maybe(50), self.maybe(30))
        self_ord = self.choice([None, "fro", "nuc", 2, 1, np.inf])
        la = ops.linalg

        def build(x):
            x = x[..., :n]
            if not smooth:
                x = ops.clip(ops.where(ops.equal(x, x), x, ops.zeros_like(x)), -3.0, 3.0)
            t = ops.tanh(x)
            eye = ops.constant((n + 1.0) * np.eye(n, dtype=c.dtype))
            col = ops.expand_dims(t, -1)
            if name == "cholesky":
                return la.cholesky(eye + col * ops.expand_dims(t, -2) * (1.0 / n))
            a = eye + col * ops.constant(c)
            if name == "solve":
                return la.solve(a, col)
            if name == "triangular_solve":
                return la.solve_triangular(a, col, trans=flags[0], lower=flags[1], unit_diagonal=flags[2])
            if name == "slogdet":
                return la.slogdet(a)[1]
            if name == "eigh":  # eigenvalues only: a's lower triangle has distinct ones generically,
                return la.eigvalsh(a)  # but nearly equal ones make eigenvectors ill-conditioned
            if name == "qr":
                return la.qr(a)[flags[0]]
            if name == "svd":
                return la.svdvals(a)
            if name == "lstsq":
                return la.lstsq(a, col)[0]
            if name == "norm":
                return la.norm(a, self_ord)
            return getattr(la, name)(a)
        return self.user_op(build, v)

    def move_matmul(self):
        """A (batched, broadcasting) matmul."""
        a = self.numeric(min_rank=1)
        if a.ndim < 2:
            a = self.emit("reshape", a, shape=(1, a.size) if self.maybe(50) else (a.size, 1), lo=a.lo, hi=a.hi)
        k = a.shape[-1]
        n = self.side()
        batch = self.sub_shape(a.shape[:-2]) if a.ndim > 2 else ()
        bshape = batch + (k, n)
        b = self.pick(lambda w: w.dtype == a.dtype and w.ndim >= 2 and w.shape[-2] == k and
                      _bshape_ok(w.shape[:-2], a.shape[:-2]) is not None)
        if b is None:
            b = self.new_input(bshape, a.dtype) if len(self.inputs) < self.max_inputs else \
                self.creation_like(bshape, a.dtype)
        lo = hi = None
        if a.is_int:
            m = int(math.isqrt(LIMIT[a.dtype] // max(k, 1)))
            a, b = self.clamp_int(a, m), self.clamp_int(b, m)
            hi = a.bound * b.bound * max(k, 1)
            lo = -hi
        return self.emit("matmul", a, b, lo=lo, hi=hi)

    def move_einsum(self):
        """An einsum of one or two operands with contractions, transposes and outer products."""
        a = self.numeric(lambda v: v.ndim <= 3, min_rank=1)
        if a.ndim > 3:
            raise _Skip("einsum rank")
        letters = "abcdef"
        sa = letters[:a.ndim]
        size = dict(zip(sa, a.shape))
        ops_ = [a]
        specs = [sa]
        if self.maybe(70):
            sb = "".join(c for c in sa if self.maybe(60)) + ("e" if self.maybe(40) else "")
            sb = "".join(self.draw(st.permutations(sb)))
            size.setdefault("e", self.side())
            shape = tuple(size[c] for c in sb)
            b = self.pick(lambda w: w.shape == shape and w.dtype == a.dtype)
            if b is None:
                b = self.new_input(shape, a.dtype) if len(self.inputs) < self.max_inputs else \
                    self.creation_like(shape, a.dtype)
            ops_.append(b)
            specs.append(sb)
        used = sorted(set("".join(specs)))
        out = "".join(self.draw(st.permutations(used)))[:self.integer(0, len(used))]
        spec = ",".join(specs) + "->" + out
        lo = hi = None
        if a.is_int:
            contracted = int(np.prod([size[c] for c in used if c not in out], dtype=np.int64))
            m = int((LIMIT[a.dtype] // max(contracted, 1)) ** (1 / len(ops_)))
            ops_ = [self.clamp_int(o, max(m, 1)) for o in ops_]
            hi = int(np.prod([o.bound for o in ops_])) * max(contracted, 1)
            lo = -hi
        return self.emit("einsum", *ops_, spec=spec, lo=lo, hi=hi)

    def spatial(self, min_hw: int = 1) -> _V:
        """A 4-D float value (N, C, H, W): from the pool, or a fresh input."""
        v = self.pick(lambda v: v.ndim == 4 and v.is_float and v.shape[2] >= min_hw and v.shape[3] >= min_hw)
        if v is None:
            dtype = self.choice([d for d in self.dtypes if d in ANY_FLOAT] or ["float64"])
            v = self.new_input((self.side(1, 2), self.integer(1, 3), self.integer(min_hw, 7), self.integer(min_hw, 7)),
                               dtype)
        return v

    def move_conv(self):
        """conv2d with any stride, dilation, padding and groups."""
        x = self.spatial()
        n, c, h, w = x.shape
        groups = self.choice([g for g in (1, 2, 3) if c % g == 0])
        cg = c // groups
        o = groups * self.integer(1, 2)
        kh, kw = self.integer(1, 3), self.integer(1, 3)
        wt = self.pick(lambda v: v.shape == (o, cg, kh, kw) and v.dtype == x.dtype)
        if wt is None:
            wt = self.new_input((o, cg, kh, kw), x.dtype) if len(self.inputs) < self.max_inputs else \
                self.creation_like((o, cg, kh, kw), x.dtype)
        stride = (self.integer(1, 3), self.integer(1, 3))
        dilation = (self.integer(1, 2), self.integer(1, 2))
        padding = tuple(self.integer(0, 2) for _ in range(4))
        return self.emit("conv2d", x, wt, stride=stride, padding=padding, dilation=dilation, groups=groups)

    def move_pool(self):
        """max_pool2d/avg_pool2d with any window, stride, padding (<= half window) and dilation."""
        x = self.spatial(min_hw=2)
        kind = self.choice(["max", "avg"] if self.mode != "smooth" else ["avg"])  # max has kinks (ties)
        k = (self.integer(1, 3), self.integer(1, 3))
        s = (self.integer(1, 3), self.integer(1, 3))
        d = (self.integer(1, 2), self.integer(1, 2)) if kind == "max" else (1, 1)
        pads = []
        for kk, dd in ((k[0], d[0]), (k[0], d[0]), (k[1], d[1]), (k[1], d[1])):
            pads.append(self.integer(0, (dd * (kk - 1) + 1) // 2))
        if kind == "max":
            return self.user_op(lambda t: ops.max_pool2d(t, k, s, tuple(pads), d), x)
        cip = self.maybe(50)
        return self.user_op(lambda t: ops.avg_pool2d(t, k, s, tuple(pads), count_include_pad=cip), x)

    def move_creation(self):
        """full, arange, eye or constant data."""
        kind = self.choice(["full", "arange", "eye", "constant"])
        dtype = self.choice(self.dtypes if kind != "eye" else [d for d in self.dtypes if d != "bool"] or ["float64"])
        if kind == "full" or (kind == "arange" and dtype == "bool"):
            return self.creation_like(self.shape(), dtype)
        if kind == "constant":
            return self.creation_like(self.shape(), dtype) if dtype != "bool" else self.emit(
                "constant", value=self.rng.random(self.shape()) < 0.5, dtype="bool")
        if kind == "eye":
            n, m, k = self.side(0, 4), self.side(0, 4), self.integer(-2, 2)
            return self.emit("eye", n=n, m=m, k=k, dtype=dtype, lo=0, hi=1)
        if dtype in INTS:
            start, stop, step = self.integer(-4, 4), self.integer(-4, 8), self.choice([1, 2, -1, 3])
            vals = list(range(start, stop, step)) or [0]
            return self.emit("arange", start=start, stop=stop, step=step, dtype=dtype, lo=min(vals), hi=max(vals))
        start, stop = self.choice([0.0, -1.5, 2.25]), self.choice([3.0, -2.0, 0.5, 4.0])
        step = self.choice([0.5, 0.75, -0.5, -1.25, 1.0])
        return self.emit("arange", start=start, stop=stop, step=step, dtype=dtype)

    def move_pattern(self):
        """shape op -> elementwise op(s) -> shape op on one value: the shapes that fuse badly
        (index arithmetic of one op inlined into the next, vectorized across the seams)."""
        first = self.choice(["slice", "pad", "slice", "flip", "pad", "transpose", "broadcast", "concat", "slice",
                             "take", "reshape"])
        self.pool.append(getattr(self, f"move_{first}")())
        for _ in range(self.integer(1, 2)):
            self.pool.append(self.choice([self.move_unary, self.move_binary])())
        last = self.choice(["pad", "slice", "pad", "concat", "reduce", "pad", "pool", "slice", "index_add", "reduce",
                            "flip", "transpose"])
        return getattr(self, f"move_{last}")()

    # the move that can produce each primitive (programs() starts with its focus primitive's move)
    MOVE_OF = {**{n: "unary" for n in ("exp", "log", "sin", "cos", "tanh", "sqrt", "rsqrt", "reciprocal", "log1p",
                                      "expm1", "tan", "sigmoid", "erf", "neg", "square", "stop_gradient", "floor",
                                      "abs", "sign", "relu", "logical_not", "ceil", "round", "trunc", "signbit") + SMOOTH_MATH},
               **{n: "binary" for n in ("add", "mul", "sub", "div", "maximum", "minimum", "pow", "arctan2", "hypot",
                                        "logaddexp", "fmod", "remainder")},
               **{n: "compare" for n in ("less", "equal", "greater", "not_equal", "less_equal", "greater_equal")},
               **{n: "reduce" for n in ("sum", "max", "prod", "min", "argmax", "argmin")},
               **{n: "creation" for n in ("full", "arange", "eye", "constant")},
               "where": "where", "astype": "astype", "slice": "slice", "pad": "pad", "reshape": "reshape",
               "broadcast_to": "broadcast", "transpose": "transpose", "flip": "flip", "concat": "concat",
               "take": "take", "index_check": "take", "index_add": "index_add", "matmul": "matmul", "einsum": "einsum", "conv2d": "conv",
               "cumsum": "cumulative", "argsort": "sorting",
               **{n: "bitwise" for n in ("bitwise_and", "bitwise_or", "bitwise_xor")},
               **{n: "shift" for n in ("left_shift", "right_shift")},
               **{n: "complex" for n in ("complex", "real", "imag", "conj", "det")},
               **{n: "linalg" for n in ("solve", "slogdet", "cholesky", "triangular_solve", "eigh", "qr", "svd")}}

    MOVES = ["unary", "binary", "pattern", "slice", "reduce", "pad", "reshape", "broadcast", "transpose", "concat", "where",
             "compare", "astype", "flip", "take", "index_add", "matmul", "einsum", "conv", "pool", "creation",
             "cumulative", "sorting", "rearrange", "linalg", "complex", "bitwise", "shift"]
    # the draw order (what shrinking prefers) with weights: fusion patterns, elementwise chains,
    # slices, pads and reductions are where fused kernels go wrong
    WEIGHTED = ["unary", "pattern", "binary", "pattern", "slice", "pad", "reduce", "pattern", "unary", "binary",
                "slice", "pad", "pattern"] + MOVES[6:]

    def step(self, chain: bool):
        """One move; `chain` favours elementwise ops on the newest value (long chains)."""
        if chain:
            name = self.choice(["unary", "binary", "pattern", "unary", "binary", "slice", "pad"])
        else:
            name = self.choice(self.WEIGHTED)
        v = getattr(self, f"move_{name}")()
        self.pool.append(v)
        return v


@st.composite
def programs(draw, max_steps: int = 8, max_inputs: int = 3, modes=("float", "smooth", "mixed", "smooth", "int", "half"),
             derived_percent: int = 100, focus: str | None = None) -> Program:
    """A strategy of random well-typed programs (see the module doc). `derived_percent`: how
    often the derivative/vmap graph is compiled too (it is always interpreted and checked);
    `focus`: the primitive every program starts with (default: drawn)."""
    mode = draw(st.sampled_from(list(modes)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    zero_ok = draw(st.integers(0, 99)) >= 85
    specials = draw(st.sampled_from([0.0, 0.1, 0.3])) if mode in ("float", "mixed") else 0.0
    rng = np.random.default_rng(seed)
    with Trace("fuzz") as tr:
        g = _Gen(draw, tr, mode, rng, max_inputs, zero_ok, specials)
        # every program starts with a move that makes its focus primitive: all primitives get
        # the same attention, however rare their move is among the others
        if focus is None:
            focus = draw(st.sampled_from(sorted(PRIMITIVES)))
        made = attempts = 0
        focus_value = None
        if focus in _Gen.MOVE_OF:
            g.force = focus
            try:
                focus_value = getattr(g, f"move_{_Gen.MOVE_OF[focus]}")()
                g.pool.append(focus_value)
                made = 1
            except _Skip:
                g.skipped += 1
            g.force = None
        n_steps = draw(st.integers(1, max_steps))
        chain = draw(st.integers(0, 99)) >= 70
        while made < n_steps and attempts < 3 * n_steps + 3:
            attempts += 1
            try:
                g.step(chain)
                made += 1
            except _Skip:
                g.skipped += 1
        if not g.pool:
            g.new_input(g.shape(), g.choice(g.dtypes))
        outs = [g.pool[-1]]
        if focus_value is not None and focus_value is not g.pool[-1]:
            outs.append(focus_value)  # the focus primitive stays in the program, consumed or not
        for _ in range(draw(st.integers(0, 2))):
            outs.append(g.pick())
        out_vals = [tr.to_value(v.t) for v in outs]
    graph = dce(tr.builder.finish(out_vals))
    poison = draw(st.integers(0, 99)) < 80  # mostly poisoned; sometimes the normal build
    n_in = len(graph.inputs)
    batched = [False] * n_in
    if n_in:
        mapped = draw(st.sets(st.integers(0, n_in - 1), min_size=1, max_size=n_in))
        batched = [i in mapped for i in range(n_in)]
    batch_size = draw(st.sampled_from([2, 3, 1]))
    compile_derived = draw(st.integers(0, 99)) < derived_percent
    return Program(graph, list(g.inputs), list(g.domains), mode, seed, poison, batched, batch_size, compile_derived,
                   g.skipped)
