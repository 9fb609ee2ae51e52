"""Parameter and ParameterTuple: named, trainable tensors that traced functions lift as graph inputs."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor, aligned_empty


class Parameter(Tensor):
    """A Tensor with a `name` and `requires_grad`; read inside a traced function it becomes an input.

    A Parameter registered in a Cell is named by its path from the outermost Cell it was assigned
    into ("fc1.weight", "0.bias"), as MindSpore does: the last part is the name it was given (or,
    without one, its attribute name); the Cells prefix the rest (see `Cell`).
    """

    # _given: the name the user gave (constructor or `p.name = ...`), None if none; _name: the
    # full name, which Cells rewrite when the Parameter or a Cell holding it is assigned
    __slots__ = ("_name", "_given", "requires_grad")

    def __init__(self, default_input, name: str | None = None, requires_grad: bool = True):
        t = default_input if isinstance(default_input, Tensor) else Tensor(default_input)
        super().__init__(_raw=t._data.copy() if t._data.base is None else np.array(t._data), _dtype=t.dtype)
        self._data = _aligned(self._data)
        self._dl = None
        self._given = name or None
        self._name = name or "Parameter"
        self.requires_grad = requires_grad

    @property
    def name(self) -> str:
        """The Parameter's name: its path in the Cell that holds it ("layer1.weight")."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._given = value
        self._name = value

    def set_data(self, data) -> "Parameter":
        """Replace the value in place (shape and dtype must match); staged graphs see the new value."""
        t = data if isinstance(data, Tensor) else Tensor(data, self.dtype)
        if tuple(t.shape) != tuple(self.shape):
            from ..errors import ShapeError
            raise ShapeError(f"Parameter {self.name}: set_data with shape {tuple(t.shape)} for shape {tuple(self.shape)}")
        np.copyto(self._data, np.asarray(t._data, dtype=self._data.dtype))
        return self

    def __repr__(self):
        return f"Parameter (name={self.name}, shape={tuple(self.shape)}, dtype={self.dtype!r}, requires_grad={self.requires_grad})"

    def __reduce__(self):
        return (Parameter, (Tensor(self._data, self.dtype.name), self.name, self.requires_grad))


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
                from ..errors import GraphadError
                raise GraphadError(f"ParameterTuple takes Parameters, got a {type(p).__name__}")
        return super().__new__(cls, params)
