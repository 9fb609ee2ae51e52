"""Checkpoints: `save_checkpoint(cell, path)` and `load_checkpoint(path, cell)`.

The file is safetensors (never pickle: loading one runs no code): one tensor per Parameter, keyed
by its path name from `cell.parameters_and_names()` ("0.weight", "bn.moving_mean"), raw
little-endian bytes with the dtype and shape in the JSON header (bfloat16 as safetensors' BF16).
The header's metadata holds the format name and version (`graphad_checkpoint_format`), the
graphad version that wrote it, and a SHA-256 of every tensor's bytes ("sha256:<name>"), so a
file whose data bytes were changed is refused, naming the Parameter. safetensors has no complex
dtype: a complex64 (complex128) Parameter is stored as its float32 (float64) real and imaginary
parts along a last axis of 2, named in the metadata ("complex:<name>": its dtype), and such a
file is format version 2 (version 1, without complex Parameters, is what older graphad reads).

Writes are atomic: the bytes go to a temporary file in the target's directory, which is flushed,
fsynced and renamed over the target (os.replace); a crash leaves the old file or the new one.

Loading validates everything before changing anything: the file must parse (a truncated file or
a corrupted header is refused), the format version must be known, every checksum must match, the
names must be exactly the cell's (none missing, none extra), and every shape and dtype must equal
the Parameter's. Any failure raises a GraphadError (ArtifactError for the file's integrity and
names, ShapeError / DTypeError for a mismatch) naming the file and the Parameter, and leaves the
cell unchanged. Then every Parameter is set (`set_data`) with the stored values, bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np

from .. import dtypes as dt
from ..runtime.cache import atomic_write
from ..errors import ArtifactError, DTypeError, GraphadError, ShapeError
from ..tensor import Tensor
from .cell import Cell

FORMAT_NAME = "graphad-checkpoint"
FORMAT_VERSION = 2  # the newest written; 1 = no complex Parameters (written when none is complex)
_READS = (1, 2)
_COMPLEX_PARTS = {"complex64": "float32", "complex128": "float64"}

# graphad dtype <-> safetensors dtype code
_CODES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int32": "I32", "int64": "I64",
          "bool": "BOOL"}
_DTYPES = {v: k for k, v in _CODES.items()}


def _named_params(cell, fn: str):
    if not isinstance(cell, Cell):
        raise GraphadError(f"{fn}: expected a Cell, got a {type(cell).__name__}")
    out = OrderedDict()
    for name, p in cell.parameters_and_names():
        if name in out:
            raise GraphadError(f"{fn}: two Parameters of {type(cell).__name__} are both named {name!r}; "
                               f"give them distinct names")
        out[name] = p
    return out


def _le_bytes(a: np.ndarray) -> np.ndarray:
    a = np.array(a, order="C")  # a copy; not ascontiguousarray, which makes 0-d arrays 1-d
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a


def save_checkpoint(cell, path) -> None:
    """Write every Parameter of `cell` to the safetensors file `path`: keys are the Parameters'
    path names, values their current contents, with a SHA-256 of each tensor in the header (a
    complex Parameter as its real and imaginary parts along a last axis of 2, marked as complex).

    The write is atomic (a temporary file in the same directory, fsync, rename): a crash leaves
    the old file or the new one. Nothing is pickled, so loading the file runs no code."""
    import safetensors

    from .._version import __version__
    path = os.fspath(path)
    params = _named_params(cell, "save_checkpoint")
    arrays = OrderedDict()
    has_complex = any(p.dtype.name in _COMPLEX_PARTS for p in params.values())
    metadata = {"format": FORMAT_NAME, "graphad_checkpoint_format": str(FORMAT_VERSION if has_complex else 1),
                "graphad_version": str(__version__)}
    stored = {}  # name -> the dtype of the stored array
    for name, p in params.items():
        a = np.asarray(p.asnumpy(), dtype=p.dtype.np)
        stored[name] = p.dtype.name
        if p.dtype.name in _COMPLEX_PARTS:  # its parts along a last axis of 2 (the array's own layout)
            stored[name] = _COMPLEX_PARTS[p.dtype.name]
            a = np.ascontiguousarray(a).view(stored[name]).reshape(a.shape + (2,))
            metadata["complex:" + name] = p.dtype.name
        if stored[name] not in _CODES:  # pragma: no cover - every graphad dtype has a code
            raise DTypeError(f"save_checkpoint({path}): Parameter {name!r} has dtype {p.dtype.name}, which "
                             f"safetensors cannot store")
        a = _le_bytes(a)
        arrays[name] = a
        metadata["sha256:" + name] = hashlib.sha256(a.tobytes()).hexdigest()
    specs = {name: safetensors.TensorSpec(dtype=stored[name], shape=list(a.shape),
                                          data_ptr=a.ctypes.data, data_len=a.nbytes)
             for name, a in arrays.items()}
    data = bytes(safetensors.serialize(specs, metadata=metadata))  # `arrays` keeps the buffers alive
    directory = os.path.dirname(os.path.abspath(path))
    atomic_write(directory, os.path.basename(path), data)  # temp file in the same directory, fsync, rename
    try:  # make the rename itself durable (best effort: not every platform opens directories)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover
        pass


def _read(path: str) -> "OrderedDict[str, np.ndarray]":
    """The file's tensors as NumPy arrays (copies), after checking its integrity."""
    import safetensors
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ArtifactError(f"load_checkpoint: cannot read {path}: {e}") from None
    try:
        entries = safetensors.deserialize(blob)
    except Exception as e:  # SafetensorError: truncated, bad header, offsets out of range...
        raise ArtifactError(f"load_checkpoint: {path} is not a valid checkpoint (truncated or corrupted "
                            f"safetensors data): {e}") from None
    try:
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + n])
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError) as e:
        raise ArtifactError(f"load_checkpoint: {path}: unreadable header: {e}") from None
    if meta.get("format") != FORMAT_NAME or "graphad_checkpoint_format" not in meta:
        raise ArtifactError(f"load_checkpoint: {path} is a safetensors file but not a graphad checkpoint (its "
                            f"metadata has no graphad format entry)")
    try:
        version = int(meta["graphad_checkpoint_format"])
    except ValueError:
        raise ArtifactError(f"load_checkpoint: {path}: bad format version {meta['graphad_checkpoint_format']!r}") \
            from None
    if version not in _READS:
        raise ArtifactError(f"load_checkpoint: {path} has checkpoint format version {version}; this graphad "
                            f"reads versions {', '.join(map(str, _READS))}")
    out = OrderedDict()
    for name, e in sorted(entries, key=lambda kv: kv[0]):
        code = e["dtype"]
        if code not in _DTYPES:
            raise ArtifactError(f"load_checkpoint: {path}: Parameter {name!r} has dtype {code}, which graphad "
                                f"does not have")
        data = bytes(e["data"])
        digest = meta.get("sha256:" + name)
        if digest is None:
            raise ArtifactError(f"load_checkpoint: {path}: Parameter {name!r} has no checksum in the metadata "
                                f"(the file was altered)")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"load_checkpoint: {path}: the bytes of Parameter {name!r} do not match their "
                                f"checksum (the file is corrupted or was tampered with)")
        np_dtype = dt.as_dtype(_DTYPES[code]).np.newbyteorder("<")
        a = np.frombuffer(data, dtype=np_dtype).reshape(tuple(e["shape"]))
        a = np.array(a, dtype=dt.as_dtype(_DTYPES[code]).np)  # native order, owned
        cplx = meta.get("complex:" + name)
        if cplx is not None:
            if _COMPLEX_PARTS.get(cplx) != _DTYPES[code] or a.ndim < 1 or a.shape[-1] != 2:
                raise ArtifactError(f"load_checkpoint: {path}: Parameter {name!r} is marked {cplx} but is stored "
                                    f"as {_DTYPES[code]} of shape {tuple(a.shape)} (the file was altered)")
            a = a.view(dt.as_dtype(cplx).np).reshape(a.shape[:-1])
        out[name] = a
    extra = sorted(set(k.split(":", 1)[1] for k in meta if k.startswith(("sha256:", "complex:"))) - set(out))
    if extra:
        raise ArtifactError(f"load_checkpoint: {path}: the metadata lists Parameter {extra[0]!r}, which the file "
                            f"does not hold (the file was altered)")
    return out


def load_checkpoint(path, cell=None) -> "OrderedDict[str, Tensor]":
    """Read the checkpoint `path`; with a `cell`, load it into the cell's Parameters.

    Returns the stored tensors as an ordered dict name -> Tensor. With `cell`, the file must hold
    exactly the cell's Parameter names with their shapes and dtypes; everything is checked before
    any Parameter changes (the file parses, its format version is known, every tensor's SHA-256
    matches), then each Parameter takes its stored value, bit for bit. Otherwise it raises a
    GraphadError naming the file and the Parameter (ArtifactError for a damaged file or
    mismatched names, ShapeError or DTypeError for a mismatch), and the cell is unchanged.
    """
    path = os.fspath(path)
    params = _named_params(cell, "load_checkpoint") if cell is not None else None
    arrays = _read(path)
    if params is not None:
        missing = [n for n in params if n not in arrays]
        if missing:
            raise ArtifactError(f"load_checkpoint: {path} has no Parameter {_names(missing)} of the "
                                f"{type(cell).__name__}")
        extra = [n for n in arrays if n not in params]
        if extra:
            raise ArtifactError(f"load_checkpoint: {path} holds Parameter {_names(extra)}, which the "
                                f"{type(cell).__name__} does not have")
        for name, p in params.items():
            a = arrays[name]
            if tuple(a.shape) != tuple(p.shape):
                raise ShapeError(f"load_checkpoint: {path}: Parameter {name!r} has shape {tuple(a.shape)} in the "
                                 f"file, {tuple(p.shape)} in the {type(cell).__name__}")
            if a.dtype != p.dtype.np:
                raise DTypeError(f"load_checkpoint: {path}: Parameter {name!r} has dtype "
                                 f"{_dtype_name(a)} in the file, {p.dtype.name} in the "
                                 f"{type(cell).__name__}")
        for name, p in params.items():
            p.set_data(Tensor(arrays[name], p.dtype))
    return OrderedDict((n, Tensor(a, dt.as_dtype(_dtype_name(a)))) for n, a in arrays.items())


def _dtype_name(a: np.ndarray) -> str:
    return "bfloat16" if a.dtype == dt.bfloat16.np else a.dtype.name


def _names(names, limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
