"""graphad.Tensor: a concrete CPU tensor, and the operator/method surface it shares with tracers.

`TensorMethods` gives both `Tensor` and the tracer (graphad.prims.trace) the same operators and
methods, all delegating to the op functions (graphad.prims.lax, re-exported as `graphad.ops`), so
user code runs unchanged eagerly and under tracing.
A Tensor owns a C-contiguous, 64-byte-aligned NumPy buffer (so DLPack hand-off to TVM is
zero-copy and AVX-512 kernels never see a misaligned pointer).
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from . import dtypes as _dt
from .errors import DTypeError, GraphadError, IntegerOverflowError, ShapeError
from .ir.core import MAX_RANK

_ALIGN = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is 64-byte aligned."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + _ALIGN, dtype=np.uint8)
    off = (-buf.ctypes.data) % _ALIGN
    return buf[off:off + n].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def ensure_aligned(a: np.ndarray) -> np.ndarray:
    """`a` itself when C-contiguous and 64-byte aligned, else an aligned copy (never a view of bad memory)."""
    if a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0:
        return a
    return aligned_copy(a)


def _ops():
    # the op functions live in graphad.prims.lax (graphad.ops re-exports them): Tensor belongs to
    # the prims layer (the eager value type `bind` returns), so it may not import graphad.ops
    from .prims import lax
    return lax


class TensorMethods:
    """Operators and methods common to Tensor and Tracer; subclasses provide shape/dtype."""

    __slots__ = ()
    __array_priority__ = 100  # NumPy defers to our reflected operators

    @property
    def ndim(self) -> int:
        """The number of dimensions, `len(shape)` (0 for a scalar)."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements: the product of `shape` (1 for a scalar)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # arithmetic
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().sub(self, o)
    def __rsub__(self, o): return _ops().sub(o, self)
    def __mul__(self, o): return _ops().mul(self, o)
    def __rmul__(self, o): return _ops().mul(o, self)
    def __truediv__(self, o): return _ops().div(self, o)
    def __rtruediv__(self, o): return _ops().div(o, self)
    def __floordiv__(self, o): return _ops().floor_divide(self, o)
    def __rfloordiv__(self, o): return _ops().floor_divide(o, self)
    def __mod__(self, o): return _ops().remainder(self, o)
    def __rmod__(self, o): return _ops().remainder(o, self)
    def __divmod__(self, o): return self // o, self % o
    def __rdivmod__(self, o): return o // self, o % self
    def __pow__(self, o): return _ops().pow(self, o)
    def __rpow__(self, o): return _ops().pow(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().neg(self)
    def __pos__(self): return _ops().positive(self)  # (a Parameter's +p is a copy, as np's)
    def __abs__(self): return _ops().abs(self)
    # bitwise (integers) and logical (bools) operators
    def __and__(self, o): return _ops().bitwise_and(self, o)
    def __rand__(self, o): return _ops().bitwise_and(o, self)
    def __or__(self, o): return _ops().bitwise_or(self, o)
    def __ror__(self, o): return _ops().bitwise_or(o, self)
    def __xor__(self, o): return _ops().bitwise_xor(self, o)
    def __rxor__(self, o): return _ops().bitwise_xor(o, self)
    def __invert__(self): return _ops().bitwise_not(self)
    def __lshift__(self, o): return _ops().left_shift(self, o)
    def __rlshift__(self, o): return _ops().left_shift(o, self)
    def __rshift__(self, o): return _ops().right_shift(self, o)
    def __rrshift__(self, o): return _ops().right_shift(o, self)
    # comparisons (elementwise, bool result)
    def __lt__(self, o): return _ops().less(self, o)
    def __le__(self, o): return _ops().less_equal(self, o)
    def __gt__(self, o): return _ops().greater(self, o)
    def __ge__(self, o): return _ops().greater_equal(self, o)
    def __eq__(self, o): return _ops().equal(self, o)
    def __ne__(self, o): return _ops().not_equal(self, o)
    __hash__ = object.__hash__

    def __getitem__(self, idx): return _ops().getitem(self, idx)

    def __setitem__(self, idx, value):
        # (without it, Python tried the sequence protocol: "only integer tensors can be used as an
        # index" for x[x > 1] = 0, a mutation trial)
        from .errors import ArgumentError
        from .prims.trace import user_loc
        loc = user_loc()
        raise ArgumentError(
            f"x[...] = value on a tensor ({self.dtype.name}{list(self.shape)}): graphad's tensors are values, "
            f"as JAX's arrays, and have no item assignment; make the new tensor instead: ops.where(mask, value, "
            f"x) for a mask, ops.put_along_axis(x, indices, values, axis) for indices, ops.concat of slices for "
            f"a range; a Parameter takes its new value with ops.assign(p, new)" + (f" (at {loc})" if loc else ""))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # methods (NumPy / MindSpore names)
    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops().min(self, axis, keepdims)
    def any(self, axis=None, keepdims=False): return _ops().any(self, axis, keepdims)
    def all(self, axis=None, keepdims=False): return _ops().all(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return _ops().prod(self, axis, keepdims)
    def argmax(self, axis=None, keepdims=False): return _ops().argmax(self, axis, keepdims)
    def argmin(self, axis=None, keepdims=False): return _ops().argmin(self, axis, keepdims)
    def logsumexp(self, axis=None, keepdims=False): return _ops().logsumexp(self, axis, keepdims)
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, shape)
    def view(self, *shape): return self.reshape(*shape)
    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return _ops().transpose(self, axes or None)
    def permute(self, *axes): return self.transpose(*axes)
    @property
    def T(self): return _ops().transpose(self)
    def movedim(self, source, destination): return _ops().movedim(self, source, destination)
    def swapaxes(self, a, b): return _ops().swapaxes(self, a, b)
    def squeeze(self, axis=None): return _ops().squeeze(self, axis)
    def expand_dims(self, axis): return _ops().expand_dims(self, axis)
    def unsqueeze(self, axis): return _ops().expand_dims(self, axis)
    def flatten(self): return _ops().reshape(self, (-1,))
    def broadcast_to(self, shape): return _ops().broadcast_to(self, shape)
    def astype(self, dtype): return _ops().astype(self, dtype)
    def to(self, dtype): return _ops().astype(self, dtype)
    def float(self): return _ops().astype(self, _dt.float32)
    def double(self): return _ops().astype(self, _dt.float64)
    def copy(self): return _ops().copy(self)
    def clone(self): return _ops().copy(self)
    def abs(self): return _ops().abs(self)
    def neg(self): return _ops().neg(self)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def sqrt(self): return _ops().sqrt(self)
    def square(self): return _ops().square(self)
    def sin(self): return _ops().sin(self)
    def cos(self): return _ops().cos(self)
    def tan(self): return _ops().tan(self)
    def tanh(self): return _ops().tanh(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def relu(self): return _ops().relu(self)
    def pow(self, o): return _ops().pow(self, o)
    def matmul(self, o): return _ops().matmul(self, o)
    def dot(self, o): return _ops().dot(self, o)
    def softmax(self, axis=-1): return _ops().softmax(self, axis)
    def log_softmax(self, axis=-1): return _ops().log_softmax(self, axis)
    def clip(self, lo=None, hi=None): return _ops().clip(self, lo, hi)
    def trace(self, offset=0, axis1=0, axis2=1): return _ops().trace(self, offset, axis1, axis2)
    def diagonal(self, offset=0, axis1=0, axis2=1): return _ops().diagonal(self, offset, axis1, axis2)
    # complex numbers: NumPy's and torch's properties and methods
    @property
    def real(self): return _ops().real(self)
    @property
    def imag(self): return _ops().imag(self)
    def conj(self): return _ops().conj(self)
    def conjugate(self): return _ops().conj(self)
    def angle(self): return _ops().angle(self)


# Held while a Tensor's (_data, _dl) pair is replaced or its view is stored: a view made of the
# old buffer, stored after another thread's set_data, was used by every later compiled call (the
# Parameter's new value ignored until its next set_data: a threads trial)
DATA_LOCK = threading.Lock()


class Tensor(TensorMethods):
    """A concrete tensor on the CPU: `Tensor(data, dtype=None)`, holding its own copy of `data`.

    `data`: a Python number or nested list, a NumPy array, another Tensor, or any object with
    `__dlpack__` (a torch or JAX tensor...). Without `dtype`, Python floats give float32, Python
    ints int64 and Python complex numbers complex64; NumPy data keeps its dtype, except the
    integers graphad has no dtype for (int8, int16, uint8 and uint16 become int32, uint32 and
    uint64 int64). With `dtype` the data is converted as NumPy's astype does, except that an
    integer outside the dtype's range raises IntegerOverflowError and complex data for a real
    dtype DTypeError. NumPy reads a Tensor with `np.asarray(t)` or `np.from_dlpack(t)`; the
    operators and the methods below call the `graphad.ops` functions."""

    # _dl caches the DLPack view the compiled runtime made of _data (valid while _data's buffer
    # lives, which it does as long as this Tensor: in-place updates keep the buffer). Where _data
    # is replaced (a Parameter's set_data), _data and _dl change together under DATA_LOCK
    __slots__ = ("_data", "_dtype", "_dl", "__weakref__")

    def __init__(self, data=None, dtype=None, *, _raw: np.ndarray | None = None, _dtype=None):
        self._dl = None
        if _raw is not None:  # internal fast path: an aligned array already of the right dtype
            self._data = _raw
            self._dtype = _dtype if _dtype is not None else _dt.as_dtype(_raw.dtype)
            return
        if isinstance(data, Tensor):
            arr = data._data
            src_dtype = data._dtype
        elif isinstance(data, TensorMethods):
            from .errors import TraceError
            raise TraceError("cannot make a concrete Tensor from a traced value inside a transformation")
        elif hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray):
            arr = _from_dlpack(data)
            src_dtype = _natural_dtype(arr.dtype)
        else:
            if data is None:
                raise GraphadError("Tensor() needs data")
            arr = _asarray(data)
            # Python floats (and lists of them) default to float32; NumPy arrays and NumPy
            # scalars keep their own dtype
            python_data = not isinstance(data, (np.ndarray, np.generic))
            if python_data and arr.dtype.kind in "uOf" and _all_python_ints(data):
                # NumPy stores Python ints beyond int64 as uint64, float64 or objects: never
                # wrap or round them into an integer Tensor
                arr = _big_python_ints(data, arr, dtype)
            if arr.dtype == object:
                raise DTypeError(f"cannot build a Tensor from {type(data).__name__} with object elements")
            if python_data and arr.dtype.kind == "f":
                src_dtype = _dt.default_float
            elif python_data and arr.dtype.kind == "c":  # Python complex, as JAX: complex64
                src_dtype = _dt.default_complex
            elif python_data and arr.dtype.kind in "iu":
                src_dtype = _dt.default_int
            else:
                src_dtype = _natural_dtype(arr.dtype)
        d = _dt.as_dtype(dtype) if dtype is not None else src_dtype
        if arr.dtype.kind == "c" and not d.is_complex and arr.size:
            # NumPy's cast would drop the imaginary parts with only a warning
            raise DTypeError(f"Tensor: complex data cannot become a {d.name} Tensor (the imaginary parts "
                             f"would be dropped); take ops.real or ops.abs of it, or ask for a complex dtype")
        if d.is_int and arr.size and not np.can_cast(arr.dtype, d.np, "safe"):
            _check_int_range(arr, d)
        self._dtype = d
        if d.name == "bfloat16" and arr.dtype == np.float64:
            from .prims._util import round_from_f64  # (ml_dtypes rounds float64 -> float32 -> bfloat16)
            arr = round_from_f64(arr, d.np)
        out = aligned_empty(arr.shape, d.np)  # always a private copy, as MindSpore does
        out[...] = arr
        self._data = out

    @classmethod
    def _wrap(cls, arr: np.ndarray, dtype=None) -> "Tensor":
        """Wrap a freshly computed array (converted to `dtype` and aligned; no extra copy if already so)."""
        d = _dt.as_dtype(dtype) if dtype is not None else _dt.as_dtype(arr.dtype)
        arr = np.asarray(arr)
        if arr.dtype != d.np:
            arr = arr.astype(d.np)
        return cls(_raw=ensure_aligned(arr), _dtype=d)

    @property
    def shape(self) -> tuple:
        """The shape: a tuple of ints (() for a scalar)."""
        return self._data.shape

    @property
    def dtype(self):
        """The element type: a graphad dtype object (`graphad.float32`, ...)."""
        return self._dtype

    def asnumpy(self) -> np.ndarray:
        """A NumPy copy of the data; a TraceError on a traced value inside a transformation."""
        return self._data.copy()

    numpy = asnumpy

    def item(self):
        """The value of a one-element tensor as a Python scalar (float, int, bool or complex); a
        TraceError on a traced value inside a transformation, which has no value yet.

        A tensor of another size is a ShapeError (NumPy's `item` raises ValueError)."""
        if self._data.size != 1:
            from .errors import ShapeError
            raise ShapeError(f"item(): only a tensor of one element has a Python scalar value, got shape "
                             f"{tuple(self._data.shape)} ({self._data.size} elements)")
        return self._data.item()

    def tolist(self):
        """The data as nested Python lists of Python scalars (a scalar for a 0-d tensor), as
        NumPy's `tolist`; concrete tensors only (a traced value has no data and no tolist)."""
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        if dtype is not None:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __dlpack__(self, *args, **kwargs):
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def __float__(self):
        return float(self._data)

    def __complex__(self):
        return complex(self._data)

    def __int__(self):
        return int(self._data)

    def __index__(self):
        if not self._dtype.is_int:
            raise TypeError("only integer tensors can be used as an index")
        return int(self._data)

    def __bool__(self):
        return bool(self._data)

    def __repr__(self):
        return f"Tensor(shape={list(self.shape)}, dtype={self._dtype!r}, value={_format_value(self._data)})"

    def __str__(self):
        # NumPy's text, with MindSpore's spelling of integral floats ("5.0", not "5.")
        a = self._data
        if self._dtype is _dt.bfloat16:  # NumPy prints ml_dtypes' bfloat16 like integers ("67")
            a = a.astype(np.float32)  # exact
        if self._dtype.is_float and a.size and a.size <= 1000 and np.all(np.isfinite(a)) and \
                np.all(a == np.round(a)) and float(np.abs(a).max()) < 1e16:  # (1e16 is inf in float16)
            return np.array2string(a, formatter={"float_kind": lambda v: f"{v:.1f}"})
        return np.array2string(a)

    def __reduce__(self):
        return (Tensor, (self._data, self._dtype.name))


def _asarray(data) -> np.ndarray:
    """np.asarray(data), with NumPy's ValueErrors for ragged or too deeply nested sequences as
    ShapeErrors that say what is wrong with the data."""
    try:
        return np.asarray(data)
    except ValueError as e:
        msg = " ".join(str(e).split())
        if "inhomogeneous" in msg:
            detected = msg[msg.find("The detected shape"):] if "The detected shape" in msg else ""
            raise ShapeError(f"Tensor: the nested sequence is ragged (its rows have different lengths, or mix "
                             f"numbers and sequences), so it is not a tensor. {detected}".rstrip()) from None
        if "maximum" in msg and "dimension" in msg:
            raise ShapeError(f"Tensor: the nested sequence is more than {MAX_RANK} levels deep; a tensor's rank "
                             f"is at most {MAX_RANK}") from None
        raise ShapeError(f"Tensor: cannot make a tensor from this {type(data).__name__}: {msg}") from None


def _from_dlpack(data) -> np.ndarray:
    """A NumPy view of a DLPack-exporting object (torch, JAX, TVM, CuPy tensors...).

    NumPy's DLPack import has no bfloat16: a bfloat16 tensor is imported as the uint16 bits of its
    elements (the same memory, relabelled; see `_Uint16Bits`) and viewed back as bfloat16. Anything
    else NumPy refuses (another device, an unknown dtype) is a GraphadError naming the object."""
    try:
        return np.from_dlpack(data)
    except (RuntimeError, BufferError, TypeError, ValueError) as e:
        why = " ".join(str(e).split()) or type(e).__name__
    if "bfloat16" in str(getattr(data, "dtype", "")):
        try:
            return np.from_dlpack(_Uint16Bits(data)).view(_dt.numpy_bfloat16())
        except (RuntimeError, BufferError, TypeError, ValueError) as e:
            why = f"{why}; as uint16 bits: {' '.join(str(e).split()) or type(e).__name__}"
    raise DTypeError(f"Tensor: cannot import {type(data).__name__} (dtype {getattr(data, 'dtype', '?')}) through "
                     f"DLPack: {why}. Convert it to a NumPy array on the CPU first") from None


class _Uint16Bits:
    """A DLPack exporter re-exporting a bfloat16 tensor as uint16 (the same bits and memory).

    The legacy capsule (no `max_version` asked, which every exporter supports) holds a
    DLManagedTensor whose DLTensor.dtype is relabelled in place from {kDLBfloat, 16, 1} to
    {kDLUInt, 16, 1} before NumPy reads it; NumPy then owns the capsule and calls the exporter's
    deleter as usual. Nothing is touched unless the dtype is exactly bfloat16."""

    _KDL_UINT, _KDL_BFLOAT = 1, 4

    def __init__(self, obj):
        self.obj = obj

    def __dlpack_device__(self):
        return self.obj.__dlpack_device__()

    def __dlpack__(self, *args, **kwargs):
        import ctypes
        capsule = self.obj.__dlpack__()
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        name = api.PyCapsule_GetName(capsule)
        ptr = ctypes.sizeof(ctypes.c_void_p)
        if name == b"dltensor":  # DLManagedTensor: the DLTensor first
            tensor_at = 0
        elif name == b"dltensor_versioned":  # version, manager_ctx, deleter, flags, then the DLTensor
            tensor_at = 16 + 2 * ptr
        else:
            raise BufferError(f"unexpected DLPack capsule {name!r}")
        base = api.PyCapsule_GetPointer(capsule, name)
        # DLTensor: void *data; DLDevice device (2 x int32); int32 ndim; DLDataType dtype
        dtype = _dl_datatype().from_address(base + tensor_at + ptr + 8 + 4)
        if (dtype.code, dtype.bits, dtype.lanes) != (self._KDL_BFLOAT, 16, 1):
            raise BufferError(f"not a bfloat16 DLPack tensor (dtype code {dtype.code}, {dtype.bits} bits)")
        dtype.code = self._KDL_UINT
        return capsule


@functools.lru_cache(maxsize=None)
def _dl_datatype():
    """ctypes' layout of DLPack's DLDataType (ctypes is imported only for a bfloat16 import)."""
    import ctypes

    class DLDataType(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]
    return DLDataType


def _natural_dtype(npd: np.dtype):
    """The graphad dtype for NumPy (or DLPack) data of dtype `npd` that holds every value of it:
    graphad has no unsigned types, so uint32 and uint64 go to int64 (as_dtype's same-width int32
    would turn 4e9 negative); a uint64 value beyond int64 is refused by _check_int_range."""
    if npd.kind == "u" and npd.itemsize >= 4:
        return _dt.int64
    return _dt.as_dtype(npd)


def _all_python_ints(data) -> bool:
    """Whether `data` (a Python scalar or nested list/tuple) holds only Python ints (not bools)."""
    if isinstance(data, (list, tuple)):
        return all(_all_python_ints(x) for x in data)
    return isinstance(data, int) and not isinstance(data, bool)


def _big_python_ints(data, arr: np.ndarray, dtype) -> np.ndarray:
    """Python ints that NumPy did not store as int64: as float64 when a float dtype was asked for,
    as uint64 when they fit (then range-checked against the target), else refused."""
    if dtype is not None and _dt.as_dtype(dtype).is_float:
        return np.array(data, dtype=np.float64)
    if arr.dtype.kind == "u":
        return arr
    try:
        return np.array(data, dtype=np.int64)
    except OverflowError:
        pass
    flat = list(_leaves(data))
    bad = max(flat, key=lambda v: abs(v))
    raise IntegerOverflowError(f"Tensor: the Python int {bad} is out of the range of int64 "
                               f"[{np.iinfo(np.int64).min}, {np.iinfo(np.int64).max}]; graphad has no wider "
                               f"integer type (pass dtype=gd.float64 for a float Tensor)")


def _leaves(data):
    if isinstance(data, (list, tuple)):
        for x in data:
            yield from _leaves(x)
    else:
        yield data


def _check_int_range(arr: np.ndarray, d, who: str = "Tensor: ") -> None:
    """Refuse converting `arr` to the integer dtype `d` when a value does not fit (NumPy's cast
    would wrap it, or give INT_MIN for a NaN/inf/huge float) instead of silently changing it."""
    info = np.iinfo(d.np)
    if arr.dtype.kind == "f" or _dt.is_bfloat16(arr.dtype):
        a = np.asarray(arr, dtype=np.float64)
        bad = ~np.isfinite(a) | (a < info.min) | (a >= -float(info.min))  # -min = 2**(bits-1), exact
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u":
            bad = arr > np.uint64(info.max)
        else:
            bad = (arr < info.min) | (arr > info.max)
    else:
        return
    if np.any(bad):
        v = np.asarray(arr)[bad].flat[0].item()
        raise IntegerOverflowError(f"{who}the value {v!r} (from {arr.dtype} data) does not fit in {d.name} "
                                   f"[{info.min}, {info.max}]; converting it would silently change it")


def _format_value(a: np.ndarray) -> str:
    """MindSpore's repr style: `value= [ 3.00000000e+01]`."""
    if a.dtype.kind == "f" or a.dtype == _dt.bfloat16.np:
        body = np.array2string(np.asarray(a, dtype=np.float64), formatter={"float_kind": lambda v: f"{v: .8e}"},
                               separator=" ", threshold=1000)
    elif a.dtype.kind == "c":  # each part as a float element is printed: `1.00000000e+00-2.00000000e+00j`
        body = np.array2string(a, formatter={"complex_kind": lambda v: f"{v.real: .8e}{v.imag:+.8e}j"},
                               separator=" ", threshold=1000)
    else:
        body = np.array2string(a, separator=" ", threshold=1000)
    if a.ndim == 0:
        return " " + body.strip()
    return " " + body


def is_tensor_like(x) -> bool:
    return isinstance(x, TensorMethods)
