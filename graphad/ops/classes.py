"""MindSpore-style primitive classes: `ops.Sin()(x)`, `ops.ReduceSum(keep_dims=True)(x, axis)`.

Each class is a thin callable over the graphad.ops function of the same meaning.
"""
from __future__ import annotations

from . import core, nn, shape


class _OpClass:
    """Base of the callable op classes; instances are stateless except for constructor options."""

    _fn = None

    def __call__(self, *args, **kwargs):
        return type(self)._fn(*args, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}()"


def _make(name, fn):
    return type(name, (_OpClass,), {"_fn": staticmethod(fn), "__doc__": f"Callable form of ops.{fn.__name__}."})


Sin = _make("Sin", core.sin)
Cos = _make("Cos", core.cos)
Tan = _make("Tan", core.tan)
Exp = _make("Exp", core.exp)
Log = _make("Log", core.log)
Log1p = _make("Log1p", core.log1p)
Expm1 = _make("Expm1", core.expm1)
Sqrt = _make("Sqrt", core.sqrt)
Rsqrt = _make("Rsqrt", core.rsqrt)
Square = _make("Square", core.square)
Reciprocal = _make("Reciprocal", core.reciprocal)
Tanh = _make("Tanh", core.tanh)
Sigmoid = _make("Sigmoid", core.sigmoid)
ReLU = _make("ReLU", core.relu)
Erf = _make("Erf", core.erf)
Abs = _make("Abs", core.abs)
Neg = _make("Neg", core.neg)
Sign = _make("Sign", core.sign)
Add = _make("Add", core.add)
Sub = _make("Sub", core.sub)
Mul = _make("Mul", core.mul)
Div = _make("Div", core.div)
Pow = _make("Pow", core.pow)
Maximum = _make("Maximum", core.maximum)
Minimum = _make("Minimum", core.minimum)
MatMul = _make("MatMul", core.matmul)
Transpose = _make("Transpose", shape.transpose)
Reshape = _make("Reshape", shape.reshape)
Softmax = _make("Softmax", nn.softmax)
LogSoftmax = _make("LogSoftmax", nn.log_softmax)
StopGradient = _make("StopGradient", core.stop_gradient)


class _Reduce(_OpClass):
    _red = None

    def __init__(self, keep_dims: bool = False):
        self.keep_dims = keep_dims

    def __call__(self, x, axis=()):
        axis = None if axis == () else axis
        return type(self)._red(x, axis, self.keep_dims)


class ReduceSum(_Reduce):
    """ops.ReduceSum(keep_dims)(x, axis)."""
    _red = staticmethod(core.sum)


class ReduceMean(_Reduce):
    """ops.ReduceMean(keep_dims)(x, axis)."""
    _red = staticmethod(core.mean)


class ReduceMax(_Reduce):
    """ops.ReduceMax(keep_dims)(x, axis)."""
    _red = staticmethod(core.max)


class ReduceMin(_Reduce):
    """ops.ReduceMin(keep_dims)(x, axis)."""
    _red = staticmethod(core.min)
