"""Element types of graphad tensors and their promotion lattice.

A `DType` is an interned record (compare with `is` or `==`). Promotion follows JAX and
MindSpore rather than NumPy: integer with float gives the float, never float64; Python scalars
are weakly typed and take the tensor operand's dtype (a Python int next to a bool tensor gives
the default int, as a float gives the default float: a bool cannot hold the number). Complex types join as JAX's: a complex
type with a real one gives the complex type wide enough for both (float32 + complex64 ->
complex64, float64 + complex64 -> complex128); a Python complex scalar next to a real tensor gives
the complex type of the tensor's width (docs/complex.md).
"""
from __future__ import annotations

import sys

import numpy as np

from .errors import DTypeError

_BF16 = None  # NumPy's bfloat16 dtype once ml_dtypes is imported (`numpy_bfloat16`)


def numpy_bfloat16(load: bool = True):
    """NumPy's bfloat16 dtype: ml_dtypes', imported on first use (it is a dependency of graphad;
    importing it registers its NumPy loops, 5-6 ms that every `import graphad` paid before). With
    `load=False`, None until something has imported ml_dtypes: no array can be bfloat16 before."""
    global _BF16
    if _BF16 is None and (load or "ml_dtypes" in sys.modules):
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes is a declared dependency
            if load:
                raise DTypeError("bfloat16 arrays need the ml_dtypes package") from None
            return None
        _BF16 = np.dtype(ml_dtypes.bfloat16)
    return _BF16


def is_bfloat16(npd) -> bool:
    """Whether the NumPy dtype `npd` is bfloat16 (never imports ml_dtypes)."""
    if npd.kind != "V":  # (bfloat16's kind; every float, int, bool and complex dtype is rejected here)
        return False
    b = numpy_bfloat16(load=False)
    return b is not None and npd == b


class DType:
    """An element type: `name` (NumPy spelling), `short` (IR spelling), kind and width."""

    __slots__ = ("name", "short", "kind", "bits", "ms_name")

    def __init__(self, name: str, short: str, kind: str, bits: int, ms_name: str):
        self.name = name
        self.short = short
        self.kind = kind  # "f" float, "c" complex, "i" signed int, "b" bool
        self.bits = bits
        self.ms_name = ms_name

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_complex(self) -> bool:
        return self.kind == "c"

    @property
    def is_inexact(self) -> bool:
        """Float or complex: the types that carry derivatives."""
        return self.kind in "fc"

    @property
    def is_int(self) -> bool:
        return self.kind == "i"

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def np(self) -> np.dtype:
        """The NumPy dtype that stores this type."""
        if self.name == "bfloat16":
            return numpy_bfloat16()
        return np.dtype(self.name)

    def __repr__(self) -> str:
        return self.ms_name

    def __str__(self) -> str:
        return self.name

    def __reduce__(self):
        return (as_dtype, (self.name,))


float16 = DType("float16", "f16", "f", 16, "Float16")
bfloat16 = DType("bfloat16", "bf16", "f", 16, "BFloat16")
float32 = DType("float32", "f32", "f", 32, "Float32")
float64 = DType("float64", "f64", "f", 64, "Float64")
int32 = DType("int32", "i32", "i", 32, "Int32")
int64 = DType("int64", "i64", "i", 64, "Int64")
bool_ = DType("bool", "bool", "b", 8, "Bool")
complex64 = DType("complex64", "c64", "c", 64, "Complex64")
complex128 = DType("complex128", "c128", "c", 128, "Complex128")

ALL = (float16, bfloat16, float32, float64, int32, int64, bool_, complex64, complex128)
FLOATS = (float16, bfloat16, float32, float64)
COMPLEX = (complex64, complex128)
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update({d.short: d for d in ALL})
_BY_NAME.update({"bool_": bool_, "float": float32, "int": int64, "half": float16, "double": float64,
                 "complex": complex64, "cfloat": complex64, "cdouble": complex128})

default_float = float32
default_int = int64
default_complex = complex64


def real_dtype(d: DType) -> DType:
    """The real type of a complex type's parts (complex64 -> float32); other types unchanged."""
    if d is complex64:
        return float32
    if d is complex128:
        return float64
    return d


def complex_dtype(d: DType) -> DType:
    """The complex type whose parts hold `d` (float64 -> complex128, any narrower real type ->
    complex64, as JAX); complex types unchanged."""
    if d.is_complex:
        return d
    return complex128 if d is float64 else complex64


def as_dtype(obj) -> DType:
    """Convert a DType, NumPy dtype, type or name to a graphad DType (GraphadError if impossible)."""
    if isinstance(obj, DType):
        return obj
    if obj is float:
        return float32
    if obj is int:
        return int64
    if obj is bool:
        return bool_
    if obj is complex:
        return complex64
    if isinstance(obj, str):
        d = _BY_NAME.get(obj)
        if d is None:
            raise DTypeError(f"unknown dtype {obj!r}; graphad has {', '.join(d.name for d in ALL)}")
        return d
    try:
        npd = np.dtype(obj)
    except TypeError:
        raise DTypeError(f"cannot interpret {obj!r} as a dtype") from None
    if is_bfloat16(npd):
        return bfloat16
    d = _BY_NAME.get(npd.name)
    if d is None:
        # other NumPy widths map to the nearest graphad type of the same kind
        if npd.kind in "iu":
            return int64 if npd.itemsize > 4 else int32
        if npd.kind == "f":
            return float64 if npd.itemsize > 4 else float32
        if npd.kind == "c":  # complex256 (long double parts) has no graphad equivalent: nearest is complex128
            return complex128
        raise DTypeError(f"NumPy dtype {npd} has no graphad equivalent")
    return d


_RANK = {bool_: 0, int32: 1, int64: 2, float16: 3, bfloat16: 3, float32: 4, float64: 5}


def promote_types(a: DType, b: DType) -> DType:
    """Result type of a binary op on tensors of dtypes a and b (JAX-style lattice)."""
    if a is b:
        return a
    if a.is_complex or b.is_complex:
        # the complex type wide enough for both: its parts are the promotion of the real parts
        return complex_dtype(promote_types(real_dtype(a), real_dtype(b)))
    if {a, b} == {float16, bfloat16}:
        return float32
    return a if _RANK[a] >= _RANK[b] else b


def scalar_dtype(value) -> DType:
    """The dtype a Python scalar takes when it stands alone (no tensor to adapt to)."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return default_int if isinstance(value, int) else as_dtype(np.asarray(value).dtype)
    if isinstance(value, (float, np.floating)):
        return default_float if isinstance(value, float) else as_dtype(np.asarray(value).dtype)
    if isinstance(value, (complex, np.complexfloating)):
        return default_complex if isinstance(value, complex) else as_dtype(np.asarray(value).dtype)
    raise DTypeError(f"unsupported scalar type {type(value).__name__}")


def weak_scalar_dtype(value, other: DType) -> DType:
    """The dtype a Python scalar takes next to a tensor of dtype `other` (weak typing)."""
    if isinstance(value, (bool, np.bool_)):
        return other
    if isinstance(value, (int, np.integer)):
        # a bool tensor would truncate the number (True * 2 == True): the default int, as NumPy
        # and JAX give an integer result
        return default_int if other.is_bool else other
    if isinstance(value, (float, np.floating)):
        return other if other.is_inexact else default_float
    if isinstance(value, (complex, np.complexfloating)):
        return complex_dtype(other) if other.is_inexact else default_complex
    raise DTypeError(f"unsupported scalar type {type(value).__name__}")
