"""Parameter and ParameterTuple: named, trainable tensors that traced functions lift as graph inputs."""
from __future__ import annotations

import numpy as np

from .tensor import DATA_LOCK, Tensor, aligned_empty


# callables run with the Parameter when its requires_grad changes: graphad.nn registers one that
# forgets the staged graphs (its optimizers read the flag while tracing; nn is layers above this)
REQUIRES_GRAD_HOOKS: list = []


class Parameter(Tensor):
    """A Tensor with a `name` and `requires_grad`; read inside a traced function it becomes an input.

    `Parameter(default_input, name=None, requires_grad=True)` copies `default_input` (a Tensor or
    anything `Tensor` takes). A Parameter registered in a Cell is named by its path from the
    outermost Cell it was assigned into ("fc1.weight", "0.bias"), as MindSpore does: the last part
    is the name it was given (or, without one, its attribute name); the Cells prefix the rest (see
    `Cell`). `requires_grad`, which may be reassigned, says whether `Cell.trainable_params()`
    lists it and the nn optimizers update it (False: `untrainable_params()`, e.g. BatchNorm2d's
    moving statistics); gradient transformations given the Parameter in `weights` differentiate it
    either way.
    """

    # _given: the name the user gave (constructor or `p.name = ...`), None if none; _name: the
    # full name, which Cells rewrite when the Parameter or a Cell holding it is assigned
    # _staged: read into a staged graph (set by the tracer, prims/trace.py), so that a Cell that
    # replaces this Parameter by another forgets the staged graphs (nn/cell.py)
    __slots__ = ("_name", "_given", "_requires_grad", "_staged")

    def __init__(self, default_input, name: str | None = None, requires_grad: bool = True):
        t = default_input if isinstance(default_input, Tensor) else Tensor(default_input)
        super().__init__(_raw=t._data.copy() if t._data.base is None else np.array(t._data), _dtype=t.dtype)
        self._data = _aligned(self._data)
        self._dl = None
        self._given = name or None
        self._name = name or "Parameter"
        self._requires_grad = bool(requires_grad)
        self._staged = False

    def _mark_captured(self) -> None:
        """A traced function read this Parameter into its graph (called by the tracer)."""
        self._staged = True

    @property
    def requires_grad(self) -> bool:
        """Whether the Parameter is trained: `Cell.trainable_params()` lists it and the nn
        optimizers update it (False: frozen, as BatchNorm2d's moving statistics are). Reassigning
        it makes staged functions trace again at their next call (an optimizer reads it while
        tracing, so a compiled train step then leaves a frozen Parameter alone)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value) -> None:
        value = bool(value)
        if value != self._requires_grad:
            self._requires_grad = value
            for hook in REQUIRES_GRAD_HOOKS:
                hook(self)

    @property
    def name(self) -> str:
        """The Parameter's name: its path in the Cell that holds it ("layer1.weight")."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._given = value
        self._name = value

    def set_data(self, data) -> "Parameter":
        """Replace the value (shape must match; the dtype is converted as NumPy's astype does).

        Eagerly the Parameter takes a new buffer holding the value (a view of the old one, such as
        `np.asarray(p)` taken before, keeps the old values). Inside a traced function (gd.jit, grad, value_and_grad,
        vjp, a Cell called in one) it is functionalized: the graph returns the new value and the
        runtime writes it into this Parameter after the call; reads of the Parameter later in
        the same function see the new value (as `ops.assign(param, data)` does; docs/training.md,
        "Parameter updates inside compiled code"). Returns this Parameter."""
        from .errors import GraphadError, retold
        try:
            return self._set_data(data)
        except GraphadError as e:
            # named and located as the user called it ("Tensor: the value 2**40 does not fit in
            # int32" named neither set_data nor the Parameter nor the line: a mutation trial)
            from .prims.trace import user_loc
            msg = str(e) if str(e).startswith(f"Parameter {self.name}") else f"Parameter {self.name}: set_data: {e}"
            loc = user_loc()
            if loc is not None and "(at " not in msg:
                msg += f" (at {loc})"
            again = retold(e, msg) if msg != str(e) else None
            if again is None:
                raise
            raise again from e.__cause__

    def _set_data(self, data) -> "Parameter":
        from .prims.trace import _STATE, Tracer, assign
        dtype = getattr(data, "dtype", None)
        if getattr(dtype, "is_complex", False) and not self.dtype.is_complex:
            # as Tensor(complex data, dtype=float) refuses: the imaginary parts would be lost
            from .errors import DTypeError
            raise DTypeError(f"Parameter {self.name}: set_data with {dtype.name} data for a {self.dtype.name} "
                             f"Parameter would drop the imaginary parts: take ops.real or ops.abs first")
        if _STATE.stack:
            if data is self:
                return self
            if not isinstance(data, (Tensor, Tracer)):
                data = Tensor(data, self.dtype)
            if tuple(data.shape) != tuple(self.shape):
                from .errors import ShapeError
                raise ShapeError(f"Parameter {self.name}: set_data with shape {tuple(data.shape)} for shape "
                                 f"{tuple(self.shape)}")
            if data.dtype is not self.dtype or getattr(data, "weak_src", None) is not None:
                from .prims.lax.core import _cast_operand
                data = _cast_operand(data, self.dtype)  # (a jit's weak number from its exact value)
            assign(self, data)
            return self
        if isinstance(data, Tracer):
            from .errors import TraceError
            raise TraceError(f"Parameter {self.name}: set_data with a traced value after its transformation ended")
        t = data if isinstance(data, Tensor) else Tensor(data, self.dtype)
        if tuple(t.shape) != tuple(self.shape):
            from .errors import ShapeError
            raise ShapeError(f"Parameter {self.name}: set_data with shape {tuple(t.shape)} for shape {tuple(self.shape)}")
        # a fresh buffer, not a copy into the old one: after a compiled step the old buffer may be
        # a result the caller also holds (a state output returned as a value too)
        data = _aligned(np.asarray(t._data, dtype=self._data.dtype))
        with DATA_LOCK:
            self._data = data
            self._dl = None
        return self

    def _swap(self, t: Tensor) -> None:
        """Take the runtime's result `t` as the new value (after a call whose graph assigned this
        Parameter): the buffer itself when the compiled runtime made it (zero copy), else a copy.
        Nothing writes into a Parameter's buffer in place (set_data allocates), so sharing the
        buffer with a result the caller also holds is safe."""
        a = t._data
        # a Tensor's _dl is a TVM tensor over its buffer, and TVM holds only 64-byte aligned,
        # C-contiguous buffers (its own allocations, or views it made with that requirement:
        # Executable._view_of), so the buffer needs no alignment check (`a.ctypes.data`, the
        # costly part of a train step's Python overhead: 0.9 us per Parameter)
        if t._dl is not None and a.dtype == self._data.dtype and a.shape == self._data.shape:
            with DATA_LOCK:
                self._data = a
                self._dl = t._dl
        else:  # the interpreter's results may be views of other arrays: own a copy
            data = _aligned(np.asarray(a, dtype=self._data.dtype))
            with DATA_LOCK:
                self._data = data
                self._dl = None

    def __repr__(self):
        return f"Parameter (name={self.name}, shape={tuple(self.shape)}, dtype={self.dtype!r}, requires_grad={self.requires_grad})"

    def __reduce__(self):
        # the given name and the path apart: a copied or unpickled model names its Parameters as
        # the original does (the path given as the name made "m.a.m.a.weight" once a Cell renamed it)
        return (_rebuild, (Tensor(self._data, self.dtype.name), self._given, self._name, self.requires_grad))


def _rebuild(data: Tensor, given: str | None, name: str, requires_grad: bool) -> Parameter:
    """A Parameter from `Parameter.__reduce__`'s parts (pickle, copy.copy, copy.deepcopy)."""
    p = Parameter(data, name=given, requires_grad=requires_grad)
    p._name = name
    return p


def _aligned(a: np.ndarray) -> np.ndarray:
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


class ParameterTuple(tuple):
    """An immutable tuple of Parameters (MindSpore's ParameterTuple)."""

    def __new__(cls, params=()):
        params = tuple(params)
        for p in params:
            if not isinstance(p, Parameter):
                from .errors import GraphadError
                raise GraphadError(f"ParameterTuple takes Parameters, got a {type(p).__name__}")
        return super().__new__(cls, params)
