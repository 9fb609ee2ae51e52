"""Layers and losses a user trains an MLP or CNN with: Dense, Conv2d, activations, SequentialCell,
Flatten, MSELoss, L1Loss, CrossEntropyLoss.

Initialisation draws from graphad's global generator (ops.set_seed), with MindSpore's defaults:
Dense and Conv2d use He-uniform style bounds 1/sqrt(fan_in) for weight and bias.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from .. import ops
from ..errors import ShapeError
from ..tensor import Tensor
from .cell import Cell
from .parameter import Parameter


def _uniform(shape, bound, dtype):
    from ..prims.lax import creation  # its `_rng`, the generator set_seed rebinds
    return Tensor(creation._rng.uniform(-bound, bound, size=shape), dtype)


class Dense(Cell):
    """y = x @ weight.T + bias, weight (out, in), bias (out,)."""

    def __init__(self, in_channels: int, out_channels: int, weight_init=None, bias_init=None, has_bias: bool = True,
                 activation=None, dtype=dt.float32):
        super().__init__()
        self.in_channels, self.out_channels, self.has_bias = in_channels, out_channels, has_bias
        bound = 1.0 / math.sqrt(in_channels)
        w = weight_init if weight_init is not None else _uniform((out_channels, in_channels), bound, dtype)
        self.weight = Parameter(w, name="weight")
        if has_bias:
            b = bias_init if bias_init is not None else _uniform((out_channels,), bound, dtype)
            self.bias = Parameter(b, name="bias")
        self.activation = activation

    def construct(self, x):
        if x.shape[-1] != self.in_channels:
            raise ShapeError(f"Dense({self.in_channels}, {self.out_channels}) got an input of shape {tuple(x.shape)}")
        y = ops.dense(x, self.weight, self.bias if self.has_bias else None)
        return self.activation(y) if self.activation is not None else y

    def extend_repr(self):
        return f"input_channels={self.in_channels}, output_channels={self.out_channels}, has_bias={self.has_bias}"


class Conv2d(Cell):
    """2-D convolution over NCHW input with weight (out, in, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode="same", padding=0,
                 dilation=1, has_bias: bool = False, dtype=dt.float32):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.dilation = stride, dilation
        self.padding = pad_mode if pad_mode in ("same", "valid") else padding
        bound = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = Parameter(_uniform((out_channels, in_channels, kh, kw), bound, dtype), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(_uniform((out_channels,), bound, dtype), name="bias")

    def construct(self, x):
        from ..ops.conv import conv2d
        return conv2d(x, self.weight, self.bias if self.has_bias else None, stride=self.stride,
                      padding=self.padding, dilation=self.dilation)


class _Act(Cell):
    _fn = None

    def construct(self, x):
        return type(self)._fn(x)


class ReLU(_Act):
    _fn = staticmethod(ops.relu)


class Tanh(_Act):
    _fn = staticmethod(ops.tanh)


class Sigmoid(_Act):
    _fn = staticmethod(ops.sigmoid)


class Softmax(Cell):
    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def construct(self, x):
        return ops.softmax(x, self.axis)


class Flatten(Cell):
    """(N, ...) -> (N, prod(...))."""

    def construct(self, x):
        return ops.reshape(x, (x.shape[0], -1))


class SequentialCell(Cell):
    """Applies its cells in order."""

    def __init__(self, *cells):
        super().__init__()
        if len(cells) == 1 and isinstance(cells[0], (list, tuple)):
            cells = tuple(cells[0])
        self._order = []
        for i, c in enumerate(cells):
            setattr(self, str(i), c)
            self._order.append(c)

    def construct(self, x):
        for c in self._order:
            x = c(x)
        return x

    def __len__(self):
        return len(self._order)

    def __getitem__(self, i):
        return self._order[i]


class _Loss(Cell):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            from ..errors import GraphadError
            raise GraphadError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def _reduce(self, x):
        if self.reduction == "mean":
            return ops.mean(x)
        if self.reduction == "sum":
            return ops.sum(x)
        return x


class MSELoss(_Loss):
    """mean((logits - labels)^2)."""

    def construct(self, logits, labels):
        return self._reduce(ops.square(ops.sub(logits, labels)))


class L1Loss(_Loss):
    def construct(self, logits, labels):
        return self._reduce(ops.abs(ops.sub(logits, labels)))


class CrossEntropyLoss(_Loss):
    """Softmax cross entropy of logits (N, C) with integer class labels (N,) or class probabilities (N, C)."""

    def construct(self, logits, labels):
        logp = ops.log_softmax(logits, -1)
        if labels.dtype.is_int:
            target = ops.one_hot(labels, logits.shape[-1], dtype=logp.dtype)
        else:
            target = labels
        return self._reduce(ops.neg(ops.sum(ops.mul(target, logp), -1)))
