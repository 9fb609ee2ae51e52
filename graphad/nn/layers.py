"""Layers and losses a user trains an MLP, CNN or small transformer with (MindSpore's names and
signatures, NCHW images, float32 by default):

* Dense, Conv2d, Embedding; MaxPool2d, AvgPool2d; Flatten;
* activations ReLU, Tanh, Sigmoid, Softmax, GELU; Dropout (counter-based, keyed: see its docstring);
* normalisation LayerNorm, BatchNorm2d (moving statistics updated with `Parameter.set_data`, which
  gd.jit and the gradient transformations functionalize);
* containers SequentialCell, CellList (children named "0", "1", ... so Parameter names are paths);
* losses MSELoss, L1Loss, CrossEntropyLoss, BCEWithLogitsLoss (the last two stable for any logits).

Initialisation draws from graphad's global generator (ops.set_seed), with MindSpore's defaults:
Dense and Conv2d use He-uniform style bounds 1/sqrt(fan_in) for weight and bias; Embedding draws
N(0, 0.01^2); normalisation scales start at one and shifts at zero.

Python-level state (`cell.training`, set by `set_train`) is read while tracing; `set_train`
therefore forgets the staged graphs (Cell.set_train), and the next call of a `gd.jit` of the cell
traces again in the new mode.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from .. import ops
from ..errors import GraphadError, ShapeError
from ..tensor import Tensor
from ..prims.trace import is_tracing
from .cell import Cell, _mark_staged
from .parameter import Parameter


def _uniform(shape, bound, dtype):
    from ..prims.lax import creation  # its `_generator()`: the generator set_seed rebinds
    return Tensor(creation._generator().uniform(-bound, bound, size=shape), dtype)


class Dense(Cell):
    """y = x @ weight.T + bias, weight (out, in), bias (out,).

    x has shape (..., in_channels) (a ShapeError otherwise). `weight_init` and `bias_init`: the
    initial values (an array or Tensor of those shapes); by default both are drawn uniformly from
    [-1/sqrt(in_channels), 1/sqrt(in_channels)] with graphad's generator (gd.set_seed).
    `has_bias=False`: no bias. `activation`: a callable (a Cell such as nn.ReLU(), or an op)
    applied to the result."""

    def __init__(self, in_channels: int, out_channels: int, weight_init=None, bias_init=None, has_bias: bool = True,
                 activation=None, dtype=dt.float32):
        super().__init__()
        _positive_ints("Dense", in_channels=in_channels, out_channels=out_channels)
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
            raise ShapeError(f"Dense({self.in_channels}, {self.out_channels}) got an input {_typed(x)}, whose last "
                             f"axis is not in_channels ({self.in_channels})")
        y = ops.dense(x, self.weight, self.bias if self.has_bias else None)
        return self.activation(y) if self.activation is not None else y

    def extend_repr(self):
        return f"input_channels={self.in_channels}, output_channels={self.out_channels}, has_bias={self.has_bias}"


def _init_value(v, shape, bound, dtype, layer, what):
    """A layer's initial weight: `v` (an array or Tensor of `shape`) or a uniform draw in [-bound, bound]."""
    if v is None:
        return _uniform(shape, bound, dtype)
    a = v.asnumpy() if isinstance(v, Tensor) else np.asarray(v)
    if tuple(a.shape) != tuple(shape):
        raise ShapeError(f"{layer}: {what} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return Tensor(a, dtype)


def _positive_ints(layer, **sizes) -> None:
    """Refuse a layer's size argument that is not a positive int (a float, a bool, zero, a
    negative): each is a GraphadError naming the layer and the argument, where the layer's
    initialisation would otherwise fail inside NumPy or `math` (Dense(0, 2) divided by zero) or
    truncate it (Embedding(4.5, 2) had 4 rows). A tuple value (a kernel's (h, w)) is checked
    entry by entry."""
    for what, v in sizes.items():
        for e in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)) or e < 1:
                raise GraphadError(f"{layer}: {what} must be a positive int, got {v!r}")


def _conv_group(layer, in_channels, out_channels, group):
    """Checks the channel counts and `group` of a convolution layer (MindSpore's argument name)."""
    _positive_ints(layer, in_channels=in_channels, out_channels=out_channels, group=group)
    if in_channels % group or out_channels % group:
        raise ShapeError(f"{layer}: in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                         f"divisible by group={group}")
    return int(group)


def _pad_mode(layer, pad_mode, padding, zero):
    if not isinstance(pad_mode, str) or pad_mode.lower() not in ("same", "valid", "pad"):
        raise ShapeError(f"{layer}: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")
    pad_mode = pad_mode.lower()  # (as the pooling layers take it)
    if pad_mode != "pad" and padding not in zero:
        raise ShapeError(f"{layer}: padding must be 0 with pad_mode={pad_mode!r} (use pad_mode='pad'), "
                         f"got {padding!r}")
    return pad_mode


class Conv2d(Cell):
    """2-D convolution over NCHW input with weight (out, in / group, kh, kw) (MindSpore's nn.Conv2d).

    A cross-correlation, as in MindSpore and torch; a (C, H, W) input is a batch of one.
    `kernel_size`, `stride` and `dilation`: an int or a pair. `pad_mode`: "same" (the default:
    output size ceil(H / stride), the extra padding at the high end), "valid" (no padding) or
    "pad" with `padding` (an int, (ph, pw) or (top, bottom, left, right)). `group`: grouped
    convolution (torch's `groups`): the channels split into `group` groups convolved separately
    (group = in_channels = out_channels is a depthwise convolution); in_channels and out_channels
    must be multiples of it (a ShapeError otherwise). `has_bias` is False by default, as in
    MindSpore. `weight_init`, `bias_init`: initial values (arrays or Tensors of the weight's and
    bias's shapes); by default both are drawn uniformly from [-1/sqrt(fan_in), 1/sqrt(fan_in)],
    fan_in = in_channels / group * kh * kw (gd.set_seed)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode="same", padding=0,
                 dilation=1, group: int = 1, has_bias: bool = False, weight_init=None, bias_init=None,
                 dtype=dt.float32):
        super().__init__()
        group = _conv_group("Conv2d", in_channels, out_channels, group)
        _positive_ints("Conv2d", kernel_size=kernel_size, stride=stride, dilation=dilation)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, (int, np.integer)) else tuple(kernel_size)
        if isinstance(kernel_size, (tuple, list)) and len(kernel_size) != 2:
            raise GraphadError(f"Conv2d: kernel_size must be an int or (height, width), got {kernel_size!r}")
        self.stride, self.dilation, self.group = stride, dilation, group
        pad_mode = _pad_mode("Conv2d", pad_mode, padding, (0, (0, 0), (0, 0, 0, 0)))
        self.padding = pad_mode if pad_mode in ("same", "valid") else padding
        bound = 1.0 / math.sqrt(in_channels // group * kh * kw)
        self.weight = Parameter(_init_value(weight_init, (out_channels, in_channels // group, kh, kw), bound, dtype,
                                            "Conv2d", "weight_init"), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(_init_value(bias_init, (out_channels,), bound, dtype, "Conv2d", "bias_init"),
                                  name="bias")

    def construct(self, x):
        from ..ops.conv import conv2d
        return conv2d(x, self.weight, self.bias if self.has_bias else None, stride=self.stride,
                      padding=self.padding, dilation=self.dilation, groups=self.group)

    def extend_repr(self):
        return f"weight={tuple(self.weight.shape)}, group={self.group}, has_bias={self.has_bias}"


class Conv1d(Cell):
    """1-D convolution over (N, C, L) input with weight (out, in / group, kernel_size) (MindSpore's
    nn.Conv1d; torch's layout too), computed by conv2d on a unit height axis.

    A (C, L) input is a batch of one. `kernel_size`, `stride`, `dilation`: ints. `pad_mode`: "same"
    (the default: output length ceil(L / stride), the extra padding at the end), "valid" or "pad"
    with `padding` (an int, or (left, right)). `group`, `has_bias` (False by default),
    `weight_init`, `bias_init`: as Conv2d's, fan_in = in_channels / group * kernel_size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, pad_mode="same",
                 padding=0, dilation: int = 1, group: int = 1, has_bias: bool = False, weight_init=None,
                 bias_init=None, dtype=dt.float32):
        super().__init__()
        group = _conv_group("Conv1d", in_channels, out_channels, group)
        _positive_ints("Conv1d", kernel_size=kernel_size, stride=stride, dilation=dilation)
        pad_mode = _pad_mode("Conv1d", pad_mode, padding, (0, (0, 0)))
        if pad_mode == "pad":
            pads = (padding, padding) if isinstance(padding, (int, np.integer)) else tuple(padding)
            if len(pads) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                                     or v < 0 for v in pads):
                raise ShapeError(f"Conv1d: padding must be an int >= 0 or (left, right), got {padding!r}")
            self.padding = (0, 0, int(pads[0]), int(pads[1]))
        else:
            self.padding = pad_mode
        self.kernel_size, self.stride, self.dilation, self.group = int(kernel_size), int(stride), int(dilation), group
        bound = 1.0 / math.sqrt(in_channels // group * kernel_size)
        self.weight = Parameter(_init_value(weight_init, (out_channels, in_channels // group, kernel_size), bound,
                                            dtype, "Conv1d", "weight_init"), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(_init_value(bias_init, (out_channels,), bound, dtype, "Conv1d", "bias_init"),
                                  name="bias")

    def construct(self, x):
        from ..ops.conv import conv2d
        if x.ndim not in (2, 3):
            raise ShapeError(f"Conv1d: input must be (N, C, L) or (C, L), got shape {tuple(x.shape)}")
        x4 = ops.expand_dims(x, -2)  # (N, C, 1, L)
        w = ops.expand_dims(self.weight, 2)  # (O, C/group, 1, K)
        y = conv2d(x4, w, self.bias if self.has_bias else None, stride=(1, self.stride), padding=self.padding,
                   dilation=(1, self.dilation), groups=self.group)
        return ops.squeeze(y, -2)

    def extend_repr(self):
        return f"weight={tuple(self.weight.shape)}, stride={self.stride}, group={self.group}, has_bias={self.has_bias}"


class _Act(Cell):
    _fn = None

    def construct(self, x):
        return type(self)._fn(x)


class ReLU(_Act):
    """max(x, 0) elementwise (`ops.relu`)."""

    _fn = staticmethod(ops.relu)


class Tanh(_Act):
    """tanh(x) elementwise (`ops.tanh`)."""

    _fn = staticmethod(ops.tanh)


class Sigmoid(_Act):
    """1 / (1 + exp(-x)) elementwise (`ops.sigmoid`)."""

    _fn = staticmethod(ops.sigmoid)


class SiLU(_Act):
    """x * sigmoid(x) elementwise (swish; `ops.silu`)."""

    _fn = staticmethod(ops.silu)


def _typed(x) -> str:
    """x's dtype and shape as errors write them (f32[4,5])."""
    d = getattr(x, "dtype", None)
    return f"{getattr(d, 'short', d)}[{','.join(str(n) for n in x.shape)}]"


def _real_arg(layer, name, v, positive=False):
    """float(v) for a finite real argument (> 0 with positive); a GraphadError naming the layer otherwise."""
    ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating)) \
        and math.isfinite(float(v)) and (float(v) > 0 or not positive)
    if not ok:
        raise GraphadError(f"{layer}: {name} must be a finite {'positive ' if positive else ''}float, got {v!r}")
    return float(v)


class Softplus(Cell):
    """log(1 + exp(beta x)) / beta elementwise, and x itself where beta x > threshold (MindSpore's
    and torch's nn.Softplus, defaults beta=1, threshold=20; `ops.softplus`, exact in both tails).
    beta must be a finite float > 0 and threshold a finite float (GraphadError otherwise)."""

    def __init__(self, beta=1, threshold=20):
        super().__init__()
        self.beta = _real_arg("Softplus", "beta", beta, positive=True)
        self.threshold = _real_arg("Softplus", "threshold", threshold)

    def construct(self, x):
        return ops.softplus(x, self.beta, self.threshold)

    def extend_repr(self):
        return f"beta={self.beta:g}, threshold={self.threshold:g}"


class LeakyReLU(Cell):
    """x where x > 0, alpha * x elsewhere (MindSpore's nn.LeakyReLU: `alpha`, default 0.2; torch's
    negative_slope defaults to 0.01). alpha must be a finite float (GraphadError otherwise)."""

    def __init__(self, alpha=0.2):
        super().__init__()
        self.alpha = _real_arg("LeakyReLU", "alpha", alpha)

    def construct(self, x):
        return ops.leaky_relu(x, self.alpha)

    def extend_repr(self):
        return f"alpha={self.alpha:g}"


class ELU(Cell):
    """x where x > 0, alpha * (exp(x) - 1) elsewhere (expm1: exact near 0; MindSpore's and torch's
    nn.ELU, alpha default 1.0: MindSpore accepts only 1.0, any finite float works here)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = _real_arg("ELU", "alpha", alpha)

    def construct(self, x):
        return ops.elu(x, self.alpha)

    def extend_repr(self):
        return f"alpha={self.alpha:g}"


class Softmax(Cell):
    """exp(x) / sum(exp(x)) along `axis` (default the last; `ops.softmax`)."""

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
    """Applies its cells in order (MindSpore's nn.SequentialCell). The children are registered
    under "0", "1", ... and are what runs: `seq[2] = layer` (or `setattr(seq, "2", layer)`)
    replaces the third cell, and a staged function traces again (Cell's attribute rule). Supports
    len, indexing (a slice gives a plain list: a new container would rename their Parameters),
    item assignment, del, append and insert (which renumber the children and rename their
    Parameters); a value that is not a Cell is a GraphadError."""

    def __init__(self, *cells):
        super().__init__()
        if len(cells) == 1 and isinstance(cells[0], (list, tuple)):
            cells = tuple(cells[0])
        for c in cells:
            self.append(c)

    def _in_order(self) -> list:
        cells = self.__dict__["_cells"]
        out = []
        while str(len(out)) in cells:
            out.append(cells[str(len(out))])
        return out

    def _renumber(self, items) -> None:
        for name in [n for n in self.__dict__["_cells"] if n.isdigit()]:
            delattr(self, name)
        for i, c in enumerate(items):
            setattr(self, str(i), c)  # registers it and renames the Parameters by path

    def construct(self, x):
        for c in self._in_order():
            x = c(x)
        return x

    def append(self, cell) -> "SequentialCell":
        """Add `cell` at the end; returns the SequentialCell."""
        setattr(self, str(len(self)), CellList._check(cell, "SequentialCell"))
        return self

    def insert(self, index: int, cell) -> None:
        """Insert `cell` before position `index` (as list.insert); the cells after it are
        renumbered and their Parameters renamed."""
        items = self._in_order()
        items.insert(index, CellList._check(cell, "SequentialCell"))
        self._renumber(items)

    def __len__(self):
        return len(self._in_order())

    def __getitem__(self, i):
        items = self._in_order()
        return list(items[i]) if isinstance(i, slice) else items[i]

    def __setitem__(self, i, cell):
        items = self._in_order()
        items[i] = CellList._check(cell, "SequentialCell")  # (an IndexError out of range, as a list's)
        self._renumber(items)

    def __delitem__(self, i):
        items = self._in_order()
        del items[i]
        self._renumber(items)

    def __iter__(self):
        return iter(self._in_order())


class _Loss(Cell):
    _reductions = ("mean", "sum", "none")

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if not isinstance(reduction, str) or reduction not in self._reductions:
            allowed = ", ".join(repr(r) for r in self._reductions)
            raise GraphadError(f"{type(self).__name__}: reduction must be one of {allowed}, got {reduction!r}")
        self.reduction = reduction

    def _reduce(self, x):
        if self.reduction == "mean":
            return ops.mean(x)
        if self.reduction == "sum":
            return ops.sum(x)
        return x


def _class_weight(loss, weight):
    """A loss's per-class `weight`: None or a 1-D float Tensor (C,) (GraphadError otherwise)."""
    if weight is None:
        return None
    if isinstance(weight, str) or isinstance(weight, (bool, np.bool_)):
        raise GraphadError(f"{loss}: weight must be None or a 1-D Tensor of per-class weights, got {weight!r} "
                           f"(the first argument is weight, as in MindSpore and torch: pass reduction= by keyword)")
    a = weight.asnumpy() if isinstance(weight, Tensor) else np.asarray(weight)
    if a.ndim != 1 or a.dtype.kind not in "iuf":
        raise GraphadError(f"{loss}: weight must be a 1-D real Tensor of per-class weights, got "
                           f"{a.dtype} of shape {tuple(a.shape)}")
    return Tensor(a, weight.dtype if isinstance(weight, Tensor) and weight.dtype.is_float else dt.default_float)


def _ignore_index(loss, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise GraphadError(f"{loss}: ignore_index must be an int, got {v!r}")
    return int(v)


def _classes_last(loss, x, labels):
    """Checks the shapes of class scores x ((C,), (N, C) or (N, C, d1, ...)) against integer labels
    or class probabilities, and moves the classes to the last axis (of both, for probabilities)."""
    if not x.dtype.is_float:
        x = ops.astype(x, dt.default_float)
    if x.ndim < 1:
        raise ShapeError(f"{loss}: input must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    want = tuple(x.shape) if not labels.dtype.is_int else \
        tuple(x.shape[:1] + x.shape[2:]) if x.ndim >= 2 else ()
    if tuple(labels.shape) != want:
        kind = "class probabilities" if not labels.dtype.is_int else "integer labels"
        raise ShapeError(f"{loss}: input of shape {tuple(x.shape)} (classes along axis "
                         f"{1 if x.ndim >= 2 else 0}) takes {kind} of shape {want}, got {tuple(labels.shape)}")
    if x.ndim >= 3:
        # the classes along axis 1 (MindSpore's and torch's (N, C, d1, ...)): moved last
        perm = (0,) + tuple(range(2, x.ndim)) + (1,)
        x = ops.transpose(x, perm)
        if not labels.dtype.is_int:
            labels = ops.transpose(labels, perm)
    return x, labels


def _picked(loss, logp, labels, weight, ignore_index):
    """(rows, w): rows the weighted negative log-likelihood -w[y] logp[y] of each target (0 where
    y == ignore_index, NaN where y has no class inside a trace), w the weight w[y] of each target
    (0 where ignored): a weighted mean is sum(rows) / sum(w), as torch's and MindSpore's."""
    n = logp.shape[-1]
    if weight is not None and tuple(weight.shape) != (n,):
        raise ShapeError(f"{loss}: weight of shape {tuple(weight.shape)} for {n} classes (input of shape "
                         f"{tuple(logp.shape)}, classes last)")
    if isinstance(labels, Tensor):
        lab = labels.asnumpy()
        bad = lab[((lab < 0) | (lab >= n)) & (lab != ignore_index)]
        if bad.size:
            raise GraphadError(f"{loss}: {bad.size} label(s) outside [0, {n}) for input of shape "
                               f"{tuple(logp.shape)}, e.g. {int(bad[0])} (ignore_index={ignore_index})")
    ignored = ops.equal(labels, ignore_index)
    valid = ops.logical_or(ignored, ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, n)))
    zero = ops.zeros((), dtype=logp.dtype)
    # the target's log-probability picked by a where (a one-hot product made 0 * -inf = NaN
    # where another class's logit is -inf, a masked class; a gather cost the CNN train step six
    # more kernels and 0.2 s of compiling)
    hit = ops.equal(ops.expand_dims(labels, -1), ops.arange(n, dtype=labels.dtype))
    picked = ops.sum(ops.where(hit, logp, zero), -1)
    if weight is None:
        w = ops.where(ignored, zero, ops.ones((), dtype=logp.dtype))
        rows = ops.where(ignored, zero, ops.neg(picked))
    else:
        wc = ops.astype(weight, logp.dtype)
        w = ops.where(ignored, zero, ops.sum(ops.where(hit, wc, zero), -1))
        rows = ops.where(ignored, zero, ops.neg(ops.mul(w, picked)))
    rows = ops.where(valid, rows, ops.full((), float("nan"), rows.dtype))
    return rows, w


def _log_softmax_last(x):
    """(x - m) - log(sum(exp(x - m))) along the last axis, m the row's maximum held constant."""
    shifted = ops.sub(x, ops.stop_gradient(ops.max(x, -1, True)))
    return ops.sub(shifted, ops.log(ops.sum(ops.exp(shifted), -1, True)))


class MSELoss(_Loss):
    """Squared error |logits - labels|^2 per element, reduced: `loss(logits, labels)`.

    labels broadcast against logits. `reduction`: "mean" (the default) or "sum" of the elements,
    or "none" (the elementwise losses); any other value is a GraphadError. For complex values
    the error is the squared modulus (real, as torch's MSELoss), not the complex square, whose
    mean can be negative."""

    def construct(self, logits, labels):
        d = ops.sub(logits, labels)
        if d.dtype.is_complex:
            return self._reduce(ops.add(ops.square(ops.real(d)), ops.square(ops.imag(d))))
        return self._reduce(ops.square(d))


class L1Loss(_Loss):
    """Absolute error |logits - labels| per element, reduced: `loss(logits, labels)`.

    labels broadcast against logits. `reduction`: "mean" (the default) or "sum" of the elements,
    or "none" (the elementwise losses); any other value is a GraphadError."""

    def construct(self, logits, labels):
        return self._reduce(ops.abs(ops.sub(logits, labels)))


class CrossEntropyLoss(_Loss):
    """Softmax cross entropy of logits (N, C) with integer class labels (N,) or class probabilities
    (N, C) (MindSpore's and torch's nn.CrossEntropyLoss(weight=None, ignore_index=-100,
    reduction='mean', label_smoothing=0.0)).

    `loss(logits, labels)`: one loss per row, reduced by `reduction`: "mean" (the default) or
    "sum" over the rows, or "none" (the (N,) row losses); any other value is a GraphadError.
    Integer logits are taken as float32. As in MindSpore and torch, logits may also be (C,)
    (labels () or (C,)) or (N, C, d1, ..., dK), the classes along axis 1 (labels (N, d1, ..., dK)
    or (N, C, d1, ..., dK); "none" gives (N, d1, ..., dK), "mean" the mean over all of them).
    Labels of another shape are a ShapeError (they are not broadcast).

    With integer labels y, torch's exact semantics: a row's loss is -weight[y] * logp[y]
    (`weight`: a 1-D Tensor of C per-class weights, all ones without it); a row whose label is
    `ignore_index` (default -100; it may also be a class) counts for nothing, and "mean" is the
    sum of the row losses divided by the sum of weight[y] over the rows not ignored (NaN when
    all are ignored). `label_smoothing` e in [0, 1] mixes the one-hot target with the uniform
    distribution: a row's loss is (1 - e) * (-weight[y] logp[y]) + e / C * sum_c(-weight[c] logp[c]),
    "mean" dividing both terms by the same sum of weight[y]. With class probabilities p: a row's
    loss is -sum_c weight[c] * q[c] * logp[c], q = (1 - e) p + e / C, and "mean" divides by the
    number of rows (not by the weights), as torch's; ignore_index does not apply.

    The log-probabilities are (x - m) - log(sum(exp(x - m))) with m the row's maximum (held
    constant for the derivative, which softmax's shift invariance leaves unchanged): nothing
    overflows, and no large number is added back and subtracted again, so logits of 1e4 keep
    their float32 accuracy (x - logsumexp(x) would round log 2 to 0.69336 there).

    An integer label outside [0, C) other than ignore_index has no class: a GraphadError when the
    labels are concrete, a NaN loss for its row inside a traced function (so a NaN mean or sum,
    never a silent zero). A string as the first argument is taken as the reduction (graphad's
    earlier signature CrossEntropyLoss(reduction)), since a weight is never a string.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        if isinstance(weight, str) and reduction == "mean":
            # graphad's earlier signature CrossEntropyLoss(reduction): a string is no weight
            weight, reduction = None, weight
        w = _class_weight("CrossEntropyLoss", weight)
        super().__init__(reduction)
        self.weight = w
        self.ignore_index = _ignore_index("CrossEntropyLoss", ignore_index)
        ls = label_smoothing
        if isinstance(ls, (bool, np.bool_)) or not isinstance(ls, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(ls) <= 1.0:
            raise GraphadError(f"CrossEntropyLoss: label_smoothing must be a float in [0, 1], got {ls!r}")
        self.label_smoothing = float(ls)

    def construct(self, logits, labels):
        logits, labels = _classes_last("CrossEntropyLoss", logits, labels)
        logp = _log_softmax_last(logits)
        n, e = logits.shape[-1], self.label_smoothing
        w = None if self.weight is None else ops.astype(self.weight, logp.dtype)
        if w is not None and tuple(w.shape) != (n,):
            raise ShapeError(f"CrossEntropyLoss: weight of shape {tuple(w.shape)} for {n} classes (logits of "
                             f"shape {tuple(logits.shape)}, classes last)")
        if not labels.dtype.is_int:
            q = labels if e == 0 else ops.add(ops.mul(labels, 1.0 - e), e / n)
            if w is not None:
                q = ops.mul(q, w)
            return self._reduce(ops.neg(ops.sum(ops.mul(q, logp), -1)))
        rows, wy = _picked("CrossEntropyLoss", logp, labels, w, self.ignore_index)
        if e:
            smooth = ops.neg(ops.sum(logp if w is None else ops.mul(logp, w), -1))
            smooth = ops.where(ops.equal(labels, self.ignore_index), ops.zeros((), dtype=smooth.dtype), smooth)
            rows = ops.add(ops.mul(rows, 1.0 - e), ops.mul(smooth, e / n))
        if self.reduction == "mean":
            return ops.div(ops.sum(rows), ops.sum(wy))
        return self._reduce(rows)

    def extend_repr(self):
        return (f"weight={None if self.weight is None else tuple(self.weight.shape)}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing:g}")


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) with integer class labels (N,)
    (MindSpore's and torch's nn.NLLLoss(weight=None, ignore_index=-100, reduction='mean')).

    A row's loss is -weight[y] * input[y]; shapes, `weight`, `ignore_index` and the reductions
    as CrossEntropyLoss's with integer labels ("mean" divides by the sum of weight[y] over the rows
    not ignored), which is NLLLoss of log_softmax of the logits. input is not normalised here: pass
    log-probabilities (e.g. ops.log_softmax's output)."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        w = _class_weight("NLLLoss", weight)
        super().__init__(reduction)
        self.weight = w
        self.ignore_index = _ignore_index("NLLLoss", ignore_index)

    def construct(self, logits, labels):
        if not labels.dtype.is_int:
            raise GraphadError(f"NLLLoss: labels must be integer class indices, got {labels.dtype.name}")
        logp, labels = _classes_last("NLLLoss", logits, labels)
        w = None if self.weight is None else ops.astype(self.weight, logp.dtype)
        rows, wy = _picked("NLLLoss", logp, labels, w, self.ignore_index)
        if self.reduction == "mean":
            return ops.div(ops.sum(rows), ops.sum(wy))
        return self._reduce(rows)

    def extend_repr(self):
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of logits x with targets y in [0, 1] (MindSpore's BCEWithLogitsLoss).

    loss = (1 - y) x + (1 + (p - 1) y) softplus(-x), PyTorch's formula, with softplus(-x) =
    log(1 + e^-x) computed as logaddexp(-x, 0): exact and finite for any finite logit, and smooth
    at 0 (written as max(x, 0) - x y + log1p(exp(-|x|)), its derivative at x = 0 came out as -y
    instead of 1/2 - y: the kinks of max and abs there do not cancel in their chosen
    derivatives). `weight` rescales each element's loss; `pos_weight` p (1 without it) weighs the
    positive term. Both broadcast against the logits. reduction: "mean" (default), "sum" or "none".
    """

    def __init__(self, reduction: str = "mean", weight=None, pos_weight=None):
        super().__init__(reduction)
        self.weight = weight
        self.pos_weight = pos_weight

    def construct(self, logits, labels):
        x = logits
        y = ops.astype(labels, x.dtype) if labels.dtype is not x.dtype else labels
        soft = ops.softplus(ops.neg(x))  # log(1 + e^-x)
        if self.pos_weight is not None:
            soft = ops.mul(ops.add(ops.mul(ops.sub(self.pos_weight, 1.0), y), 1.0), soft)
        loss = ops.add(ops.mul(ops.sub(1.0, y), x), soft)
        if self.weight is not None:
            loss = ops.mul(loss, self.weight)
        return self._reduce(loss)


def _xlogy_self(t):
    """t * log(t), 0 where t == 0 (torch's xlogy(t, t)); its derivative log(t) + 1 is finite there
    through the where (the log sees 1), NaN for t < 0."""
    zero = ops.equal(t, 0)
    safe = ops.where(zero, ops.ones((), dtype=t.dtype), t)
    return ops.where(zero, ops.zeros((), dtype=t.dtype), ops.mul(t, ops.log(safe)))


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence of a target distribution from log-probabilities:
    `loss(logits, labels)`, logits the log-probabilities x, labels the target probabilities t
    (MindSpore's and torch's nn.KLDivLoss; torch's `log_target` too).

    Elementwise t * (log t - x), 0 where t = 0 (torch's xlogy, so its derivative with respect to t
    is finite there; NaN for t < 0), or with log_target=True exp(t) * (t - x) for log-probability
    targets. `reduction`: "mean" (the default, over all elements, as MindSpore's and torch's; not
    the divergence: torch warns about it), "batchmean" (the sum divided by the batch size, x's first
    axis: the divergence, use this), "sum" or "none". t broadcasts against x."""

    _reductions = ("mean", "batchmean", "sum", "none")

    def __init__(self, reduction: str = "mean", log_target: bool = False):
        super().__init__(reduction)
        if not isinstance(log_target, (bool, np.bool_)):
            raise GraphadError(f"KLDivLoss: log_target must be a bool, got {log_target!r}")
        self.log_target = bool(log_target)

    def construct(self, logits, labels):
        x = logits if logits.dtype.is_float else ops.astype(logits, dt.default_float)
        t = labels if labels.dtype is x.dtype else ops.astype(labels, x.dtype)
        if self.log_target:
            loss = ops.mul(ops.exp(t), ops.sub(t, x))
        else:
            loss = ops.sub(_xlogy_self(t), ops.mul(t, x))
        if self.reduction == "batchmean":
            return ops.div(ops.sum(loss), float(x.shape[0]) if x.ndim else 1.0)
        return self._reduce(loss)

    def extend_repr(self):
        return f"reduction={self.reduction!r}, log_target={self.log_target}"


def _clamped_log(u, log1p_of_neg=False):
    """max(log(u), -100) (or of log1p(-u)), as torch's and MindSpore's BCELoss clamp it; where the
    log is below -100 (-inf at 0) the value is -100 and the derivative 0: the log sees the neutral
    argument there, since its derivative (1/0, or 1/u overflowing for a float64 subnormal u such
    as 1e-320) times the clamp's zero would be NaN. An argument < 0 gives NaN."""
    def log_of(v):
        return ops.log1p(ops.neg(v)) if log1p_of_neg else ops.log(v)
    neutral = ops.full((), 0.0 if log1p_of_neg else 1.0, u.dtype)
    clamped = ops.less(log_of(u), -100.0)  # (a comparison: no derivative flows through this log)
    lg = log_of(ops.where(clamped, neutral, u))
    return ops.where(clamped, ops.full((), -100.0, u.dtype), lg)


class BCELoss(_Loss):
    """Binary cross entropy of probabilities x in [0, 1] with targets y (MindSpore's and torch's
    nn.BCELoss(weight=None, reduction='mean')): `loss(logits, labels)` with logits the
    probabilities (a sigmoid's output).

    Elementwise -weight * (y * max(log x, -100) + (1 - y) * max(log1p(-x), -100)): the logs are
    clamped at -100, as torch and MindSpore clamp them, so x = 0 or 1 gives a finite loss (100
    per element at most); where a log is clamped its derivative is 0 (torch's backward instead
    divides by max(x (1 - x), 1e-12)). x outside [0, 1] gives NaN. `weight` (broadcast against x)
    rescales each element. reduction: "mean" (default), "sum" or "none". BCEWithLogitsLoss on the
    logits is more accurate: use it where the logits are at hand."""

    def __init__(self, weight=None, reduction: str = "mean"):
        super().__init__(reduction)
        if weight is not None and not isinstance(weight, Tensor):
            a = np.asarray(weight)
            if a.dtype.kind not in "iuf":
                raise GraphadError(f"BCELoss: weight must be None or a real Tensor, got {weight!r}")
            weight = Tensor(a, dt.default_float)
        self.weight = weight

    def construct(self, logits, labels):
        x = logits if logits.dtype.is_float else ops.astype(logits, dt.default_float)
        y = labels if labels.dtype is x.dtype else ops.astype(labels, x.dtype)
        loss = ops.neg(ops.add(ops.mul(y, _clamped_log(x)), ops.mul(ops.sub(1.0, y), _clamped_log(x, True))))
        if self.weight is not None:
            loss = ops.mul(loss, ops.astype(self.weight, x.dtype))
        return self._reduce(loss)


class SmoothL1Loss(_Loss):
    """Smooth L1 loss of logits x and labels y (MindSpore's nn.SmoothL1Loss(beta=1.0,
    reduction='none')): elementwise 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere,
    d = x - y. Note MindSpore's default reduction, "none" (the elementwise losses), where torch's
    SmoothL1Loss defaults to "mean"; "sum" too. `beta` must be a finite float > 0 (GraphadError
    otherwise; torch's beta = 0 is L1Loss). labels broadcast against logits."""

    def __init__(self, beta: float = 1.0, reduction: str = "none"):
        super().__init__(reduction)
        self.beta = _real_arg("SmoothL1Loss", "beta", beta, positive=True)

    def construct(self, logits, labels):
        d = ops.sub(logits, labels)
        a = ops.abs(d)
        quad = ops.mul(ops.square(d), 0.5 / self.beta)
        return self._reduce(ops.where(ops.less(a, self.beta), quad, ops.sub(a, 0.5 * self.beta)))

    def extend_repr(self):
        return f"beta={self.beta:g}, reduction={self.reduction!r}"


class HuberLoss(_Loss):
    """Huber loss of logits x and labels y (MindSpore's and torch's nn.HuberLoss(reduction='mean',
    delta=1.0)): elementwise 0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere,
    d = x - y (SmoothL1Loss times delta). `delta` must be a finite float > 0 (GraphadError
    otherwise). reduction "mean" (default), "sum" or "none"; labels broadcast against logits."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        self.delta = _real_arg("HuberLoss", "delta", delta, positive=True)

    def construct(self, logits, labels):
        d = ops.sub(logits, labels)
        a = ops.abs(d)
        quad = ops.mul(ops.square(d), 0.5)
        lin = ops.mul(ops.sub(a, 0.5 * self.delta), self.delta)
        return self._reduce(ops.where(ops.less(a, self.delta), quad, lin))

    def extend_repr(self):
        return f"reduction={self.reduction!r}, delta={self.delta:g}"


class GELU(Cell):
    """Gaussian error linear unit, x * Phi(x).

    approximate=False (default here) uses the exact erf form x/2 * erfc(-x/sqrt 2);
    approximate=True the tanh form x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))). (MindSpore's own
    default is approximate=True: pass it to match a MindSpore model exactly.)
    """

    def __init__(self, approximate: bool = False):
        super().__init__()
        self.approximate = bool(approximate)

    def construct(self, x):
        return ops.gelu(x, approximate="tanh" if self.approximate else "none")

    def extend_repr(self):
        return f"approximate={self.approximate}"


def _pool_pads(x, kernel_size, stride, pad_mode, padding, name):
    """Explicit (ph_lo, ph_hi, pw_lo, pw_hi) for a pooling layer's pad_mode/padding."""
    from ..ops.conv import _pair, _pads4, _same_pads
    mode = pad_mode.lower() if isinstance(pad_mode, str) else pad_mode
    if mode == "same":
        if padding not in (0, (0, 0), (0, 0, 0, 0)):
            raise ShapeError(f"{name}: padding must be 0 with pad_mode='same', got {padding!r}")
        k, s = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
        if x.ndim < 2:
            raise ShapeError(f"{name}: input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2], x.shape[-1]
        if min(k + s) < 1:
            raise ShapeError(f"{name}: kernel_size and stride must be positive, got {k}, {s}")
        return _same_pads(h, k[0], s[0], 1) + _same_pads(w, k[1], s[1], 1)
    if mode in ("valid", "pad"):
        return _pads4(padding)
    raise ShapeError(f"{name}: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")


class _Pool2d(Cell):
    def __init__(self, kernel_size=1, stride=1, pad_mode="valid", padding=0):
        super().__init__()
        if not isinstance(pad_mode, str) or pad_mode.lower() not in ("valid", "same", "pad"):
            raise ShapeError(f"{type(self).__name__}: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")
        _positive_ints(type(self).__name__, kernel_size=kernel_size, stride=stride)
        self.kernel_size, self.stride, self.pad_mode, self.padding = kernel_size, stride, pad_mode.lower(), padding

    def extend_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad_mode={self.pad_mode}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over kernel_size windows of an NCHW (or CHW) input (MindSpore's nn.MaxPool2d).

    stride defaults to 1 as in MindSpore. pad_mode: "valid" (no padding, the default), "same"
    (output size ceil(H / stride), the extra padding at the high end, filled with -inf) or "pad"
    with `padding` (an int, (ph, pw) or (top, bottom, left, right); a nonzero `padding` with
    "valid" is taken as "pad"). Padding may not exceed half the window.

    The gradient of a window goes to its maximum; tied maxima share it equally (ops.max_pool2d),
    where torch, MindSpore and JAX give it all to one of them. So a
    window whose maximum is -inf shares it with the -inf padding, and a window holding a NaN
    sends NaN to each of its elements.
    """

    def construct(self, x):
        pads = _pool_pads(x, self.kernel_size, self.stride, self.pad_mode, self.padding, "MaxPool2d")
        return ops.max_pool2d(x, self.kernel_size, self.stride, pads)


class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows of an NCHW (or CHW) input (MindSpore's nn.AvgPool2d).

    stride defaults to 1 as in MindSpore. pad_mode "valid" (default), "same" (output size
    ceil(H / stride); as in MindSpore and TensorFlow each window is divided by the number of real,
    unpadded elements in it) or "pad" with `padding` (zeros, counted in the divisor when
    count_include_pad=True, the default).
    """

    def __init__(self, kernel_size=1, stride=1, pad_mode="valid", padding=0, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, pad_mode, padding)
        self.count_include_pad = bool(count_include_pad)

    def construct(self, x):
        pads = _pool_pads(x, self.kernel_size, self.stride, self.pad_mode, self.padding, "AvgPool2d")
        include = self.count_include_pad and self.pad_mode != "same"
        return ops.avg_pool2d(x, self.kernel_size, self.stride, pads, count_include_pad=include)


_M31 = 1 << 31           # the hash works on 31-bit words in int64: products stay below 2^62
_WEYL = 0x1E3779B9       # round-key increment (the golden ratio's bits, < 2^31)
_ROUNDS = 10          # rounds over the counters
_KEY_ROUNDS = 3       # rounds scrambling the key (two scalars)
_KEY_SALT = 0x2545F491   # the round key that scrambles the user's key


def _key_words(key):
    """(k0, k1): two int64 scalars in [0, 2^31) from an integer key (a scalar, or a pair as a JAX
    PRNGKey is)."""
    from ..errors import DTypeError
    k = key if isinstance(key, Tensor) or (hasattr(key, "shape") and hasattr(key, "dtype")) else None
    if k is None:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise DTypeError(f"Dropout: the key must be an integer tensor or int, got {type(key).__name__}")
        k = Tensor(np.array(int(key) % (1 << 62), np.int64))
    if not k.dtype.is_int:
        raise DTypeError(f"Dropout: the key must have an integer dtype, got {k.dtype.name}")
    k = ops.astype(k, dt.int64) if k.dtype is not dt.int64 else k
    if tuple(k.shape) == ():
        return ops.remainder(k, _M31), ops.remainder(ops.floor_divide(k, _M31), _M31)
    if tuple(k.shape) == (2,):
        return ops.remainder(k[0], _M31), ops.remainder(k[1], _M31)
    raise ShapeError(f"Dropout: the key must be a scalar or have shape (2,), got shape {tuple(k.shape)}")


def _feistel(left, right, k, rounds: int, split: bool):
    """Feistel rounds on 31-bit words, (L, R) -> (R, L + F(R + k_r)) mod 2^31, with the nonlinear
    F(v) = the middle 31 bits of v^2 (v^2 < 2^62 fits int64) and round keys k_r = k + r W: a
    bijection of (L, R) for each key.

    split=True writes L + F as a sum over a stacked pair: a reduction per round keeps the compiler
    from fusing (and inlining) the rounds into one kernel, whose expression grows exponentially
    with them (each value is read twice): TVM took over five minutes on six fused rounds."""
    for _ in range(rounds):
        v = ops.remainder(ops.add(right, k), _M31)
        f = ops.remainder(ops.floor_divide(ops.mul(v, v), 1 << 15), _M31)
        new = ops.sum(ops.stack([left, f]), 0) if split else ops.add(left, f)
        left, right = right, ops.remainder(new, _M31)
        k = ops.remainder(ops.add(k, _WEYL), _M31)
    return left, right


def random_bits(shape, key):
    """Uniform 31-bit integers (int64 in [0, 2^31)) of `shape`, a pure function of `key` and each
    element's position (counter-based, as JAX's threefry): the element's index and the key go
    through a 10-round Feistel network whose round function is a middle-square (the key itself is
    scrambled first by three rounds of it, so neighbouring keys give unrelated streams). Made of
    integer graphad ops only, so it traces, compiles and batches like any other computation."""
    shape = tuple(int(d) for d in shape)
    k0, k1 = _key_words(key)
    k0, k1 = _feistel(k0, k1, _KEY_SALT, _KEY_ROUNDS, True)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    c = ops.arange(n, dtype=dt.int64)
    left = ops.remainder(c, _M31)
    right = ops.remainder(ops.add(ops.floor_divide(c, _M31), k1), _M31)
    _, right = _feistel(left, right, k0, _ROUNDS, True)
    return ops.reshape(right, shape)


class Dropout(Cell):
    """Zero each element with probability 1 - keep_prob in training mode and scale the kept ones
    by 1/keep_prob; the identity in eval mode (`set_train(False)`) or with keep_prob=1.

    `Dropout(keep_prob=0.5)` or `Dropout(p=0.1)` (p is the drop probability, MindSpore 2's
    spelling; give one of them). The mask is a pure function of a key, as in JAX:

    * `dropout(x, key)`: `key` is an integer tensor (or int): a scalar, or a pair like a JAX
      PRNGKey (its words are taken modulo 2^31). The same key gives the same mask; split keys
      yourself (e.g. key = step * n_layers + layer). Nothing is updated.
    * `dropout(x)` (inside SequentialCell, TrainOneStepCell...): the key is the Parameter
      `seed` (an int64 counter, requires_grad=False, drawn from graphad's generator, which
      gd.set_seed seeds, at construction unless `seed=` is given; saved in checkpoints),
      advanced by one with `set_data` at each training call, which gd.jit and the gradient
      transformations functionalize: each compiled step draws a fresh mask and reruns
      reproduce it.

    The bits come from a counter-based integer hash of the key (integer ops only), so the mask
    is traced, compiled and differentiated like the rest of the graph: the gradient of
    dropout(x) is mask / keep_prob.
    """

    def __init__(self, keep_prob=None, p=None, seed=None, dtype=dt.float32):
        super().__init__()
        from ..errors import GraphadError
        if keep_prob is not None and p is not None:
            raise GraphadError("Dropout: give keep_prob or p (the drop probability), not both")
        keep = 0.5 if keep_prob is None and p is None else (1.0 - float(p) if p is not None else float(keep_prob))
        if not 0.0 < keep <= 1.0:
            raise GraphadError(f"Dropout: keep_prob must be in (0, 1] (p in [0, 1)), got keep_prob={keep}")
        self.keep_prob = keep
        self.p = 1.0 - keep
        if seed is None:
            from ..prims.lax import creation
            seed = int(creation._generator().integers(0, 1 << 62))
        self.seed = Parameter(Tensor(np.array(int(seed), np.int64)), name="seed", requires_grad=False)

    def construct(self, x, key=None):
        if not self.training or self.keep_prob == 1.0:
            return x
        if key is None:
            key = ops.add(self.seed, 0)  # this step's key (a value, read before the update)
            self.seed.set_data(ops.add(self.seed, 1))
        threshold = int(round(self.keep_prob * _M31))
        keep = ops.less(random_bits(x.shape, key), threshold)
        scale = ops.mul(ops.astype(keep, x.dtype), 1.0 / self.keep_prob)
        return ops.mul(x, scale)

    def extend_repr(self):
        return f"keep_prob={self.keep_prob}"


class LayerNorm(Cell):
    """Normalise over the last len(normalized_shape) axes: (x - mean) / sqrt(var + epsilon) * gamma
    + beta, with the biased variance; gamma (ones) and beta (zeros) have shape normalized_shape.
    `normalized_shape` is an int or a tuple (MindSpore's begin_norm_axis is its length from the end);
    epsilon must be a finite float > 0 (GraphadError otherwise)."""

    def __init__(self, normalized_shape, epsilon: float = 1e-5, dtype=dt.float32):
        super().__init__()
        _positive_ints("LayerNorm", normalized_shape=normalized_shape)
        shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else \
            tuple(int(d) for d in normalized_shape)
        self.normalized_shape, self.epsilon = shape, _real_arg("LayerNorm", "epsilon", epsilon, positive=True)
        self.gamma = Parameter(Tensor(np.ones(shape), dtype), name="gamma")
        self.beta = Parameter(Tensor(np.zeros(shape), dtype), name="beta")

    def construct(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ShapeError(f"LayerNorm({self.normalized_shape}) got an input {_typed(x)}, whose last axes are "
                             f"not normalized_shape")
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = ops.mean(x, axes, True)
        xc = ops.sub(x, mean)
        var = ops.mean(ops.square(xc), axes, True)
        y = ops.mul(xc, ops.rsqrt(ops.add(var, self.epsilon)))
        return ops.add(ops.mul(y, self.gamma), self.beta)

    def extend_repr(self):
        return f"normalized_shape={self.normalized_shape}, epsilon={self.epsilon}"


class GroupNorm(Cell):
    """Group normalisation (Wu & He) of (N, C, ...) input (MindSpore's nn.GroupNorm(num_groups,
    num_channels, eps=1e-05, affine=True); torch's too).

    The C channels are split into `num_groups` groups of C / num_groups consecutive channels; each
    sample's group is normalised over its channels and spatial positions with its mean and biased
    variance, (x - mean) / sqrt(var + eps), then scaled by gamma and shifted by beta per channel
    (shape (num_channels,), ones and zeros; MindSpore's names, torch's weight and bias). With
    affine=False they stay ones and zeros and are not trained (requires_grad=False, as MindSpore's).
    num_channels must be a multiple of num_groups and eps a finite float > 0 (GraphadError
    otherwise); an input whose axis 1 is not num_channels is a ShapeError."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, dtype=dt.float32):
        super().__init__()
        _positive_ints("GroupNorm", num_groups=num_groups, num_channels=num_channels)
        if num_channels % num_groups:
            raise GraphadError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                               f"({num_groups})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps = _real_arg("GroupNorm", "eps", eps, positive=True)
        self.affine = bool(affine)
        self.gamma = Parameter(Tensor(np.ones(num_channels), dtype), name="gamma", requires_grad=self.affine)
        self.beta = Parameter(Tensor(np.zeros(num_channels), dtype), name="beta", requires_grad=self.affine)

    def construct(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(f"GroupNorm({self.num_groups}, {self.num_channels}): input must be (N, "
                             f"{self.num_channels}, ...), got shape {tuple(x.shape)}")
        n, g = x.shape[0], self.num_groups
        xg = ops.reshape(x, (n, g, -1))
        mean = ops.mean(xg, -1, True)
        xc = ops.sub(xg, mean)
        var = ops.mean(ops.square(xc), -1, True)
        y = ops.reshape(ops.mul(xc, ops.rsqrt(ops.add(var, self.eps))), tuple(x.shape))
        cshape = (1, self.num_channels) + (1,) * (x.ndim - 2)
        return ops.add(ops.mul(y, ops.reshape(self.gamma, cshape)), ops.reshape(self.beta, cshape))

    def extend_repr(self):
        return f"num_groups={self.num_groups}, num_channels={self.num_channels}, eps={self.eps:g}, affine={self.affine}"


class BatchNorm2d(Cell):
    """Batch normalisation of NCHW input per channel (MindSpore's nn.BatchNorm2d).

    Training mode (the default): normalise with the batch's mean and biased variance over
    (N, H, W), and update the running statistics with MindSpore's momentum convention
        moving_mean = momentum * moving_mean + (1 - momentum) * batch_mean
        moving_variance = momentum * moving_variance + (1 - momentum) * unbiased_batch_variance
    through `Parameter.set_data` (at once eagerly; under gd.jit / grad / value_and_grad the
    compiled step returns the new values and the runtime writes them after the call). Eval mode
    (`set_train(False)`) normalises with the moving statistics. Parameters: gamma (ones), beta
    (zeros) when affine, moving_mean (zeros), moving_variance (ones), the last two with
    requires_grad=False. `use_batch_statistics` True/False forces either behaviour whatever the
    mode, as in MindSpore: True normalises with the batch's statistics and updates the moving ones
    (in eval mode too), False normalises with the moving statistics and leaves them unchanged.
    Normalising with batch statistics needs more than one value per channel (N * H * W > 1; a
    ShapeError otherwise, as torch refuses such a batch in training). eps must be a finite float > 0
    (GraphadError otherwise).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, affine: bool = True,
                 use_batch_statistics=None, dtype=dt.float32):
        super().__init__()
        _positive_ints("BatchNorm2d", num_features=num_features)
        if not 0.0 <= momentum <= 1.0:
            raise GraphadError(f"BatchNorm2d: momentum must be in [0, 1], got {momentum}")
        self.num_features, self.momentum = int(num_features), float(momentum)
        self.eps = _real_arg("BatchNorm2d", "eps", eps, positive=True)
        self.affine, self.use_batch_statistics = affine, use_batch_statistics
        c = (self.num_features,)
        if affine:
            self.gamma = Parameter(Tensor(np.ones(c), dtype), name="gamma")
            self.beta = Parameter(Tensor(np.zeros(c), dtype), name="beta")
        self.moving_mean = Parameter(Tensor(np.zeros(c), dtype), name="moving_mean", requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(c), dtype), name="moving_variance", requires_grad=False)

    def construct(self, x):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ShapeError(f"BatchNorm2d({self.num_features}) takes (N, {self.num_features}, H, W), got "
                             f"{_typed(x)}")
        c = self.num_features
        batch = self.training if self.use_batch_statistics is None else bool(self.use_batch_statistics)
        if batch:
            axes = (0, 2, 3)
            mean = ops.mean(x, axes, True)
            xc = ops.sub(x, mean)
            var = ops.mean(ops.square(xc), axes, True)
            m = x.shape[0] * x.shape[2] * x.shape[3]
            if m < 2:
                # one value per channel: its variance is 0 and the unbiased one undefined
                # (torch refuses such a batch in training too)
                raise ShapeError(f"BatchNorm2d({self.num_features}) normalises with batch statistics and needs "
                                 f"more than one value per channel, got an input of shape {tuple(x.shape)}")
            # the moving statistics track the batch's whenever they are used, eval mode with
            # use_batch_statistics=True included (MindSpore's bn_train)
            bm = ops.reshape(ops.stop_gradient(mean), (c,))
            bv = ops.mul(ops.reshape(ops.stop_gradient(var), (c,)), m / (m - 1))
            mom = self.momentum
            new_mean = ops.add(ops.mul(self.moving_mean, mom), ops.mul(bm, 1.0 - mom))
            new_var = ops.add(ops.mul(self.moving_variance, mom), ops.mul(bv, 1.0 - mom))
            self.moving_mean.set_data(new_mean)
            self.moving_variance.set_data(new_var)
        else:
            mean = ops.reshape(self.moving_mean, (1, c, 1, 1))
            xc = ops.sub(x, mean)
            var = ops.reshape(self.moving_variance, (1, c, 1, 1))
        y = ops.mul(xc, ops.rsqrt(ops.add(var, self.eps)))
        if self.affine:
            y = ops.add(ops.mul(y, ops.reshape(self.gamma, (1, c, 1, 1))), ops.reshape(self.beta, (1, c, 1, 1)))
        return y

    def extend_repr(self):
        return f"num_features={self.num_features}, eps={self.eps}, momentum={self.momentum}"


class Embedding(Cell):
    """Look up rows of `embedding_table` (vocab_size, embedding_size) by integer indices of any
    shape: the result has shape indices.shape + (embedding_size,). The table starts N(0, 0.01^2)
    (MindSpore's 'normal' initializer) unless `embedding_table` (an array or Tensor) is given.
    `padding_idx` (an int in [-vocab_size, vocab_size); a ShapeError otherwise): that row starts at
    zeros (MindSpore's meaning: it is trained like the others, unlike torch's). An index outside
    [-vocab_size, vocab_size) raises IndexOutOfRangeError, eagerly and when compiled (on the
    CPU); a negative one wraps, as in NumPy's take (torch refuses it)."""

    def __init__(self, vocab_size: int, embedding_size: int, embedding_table=None, padding_idx=None,
                 dtype=dt.float32):
        super().__init__()
        _positive_ints("Embedding", vocab_size=vocab_size, embedding_size=embedding_size)
        if padding_idx is not None:
            if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)) or \
                    not -int(vocab_size) <= padding_idx < int(vocab_size):
                raise ShapeError(f"Embedding({vocab_size}, {embedding_size}): padding_idx must be an int in "
                                 f"[-{vocab_size}, {vocab_size}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % int(vocab_size)  # (torch's: a negative one counts from the end)
        self.vocab_size, self.embedding_size, self.padding_idx = int(vocab_size), int(embedding_size), padding_idx
        if embedding_table is None:
            from ..prims.lax import creation
            table = creation._generator().normal(0.0, 0.01, size=(self.vocab_size, self.embedding_size))
            if padding_idx is not None:
                table[padding_idx] = 0.0
            embedding_table = Tensor(table, dtype)
        self.embedding_table = Parameter(embedding_table, name="embedding_table")
        if tuple(self.embedding_table.shape) != (self.vocab_size, self.embedding_size):
            raise ShapeError(f"Embedding({vocab_size}, {embedding_size}): embedding_table has shape "
                             f"{tuple(self.embedding_table.shape)}")

    def construct(self, indices):
        from ..errors import DTypeError
        if not indices.dtype.is_int:
            raise DTypeError(f"Embedding: indices must be integers, got {indices.dtype.name}")
        return ops.take(self.embedding_table, indices, 0)

    def extend_repr(self):
        return f"vocab_size={self.vocab_size}, embedding_size={self.embedding_size}"


class CellList(Cell):
    """A list of Cells (MindSpore's nn.CellList): children are registered under "0", "1", ... so
    their Parameters are named "0.weight", "1.bias" (prefixed by the list's own path). Supports
    len, iteration, indexing (ints and slices), item assignment, del, append, extend and insert
    (which renumber the children and rename their Parameters). It is a container: call its
    items, not the list."""

    def __init__(self, cells=None):
        super().__init__()
        object.__setattr__(self, "_items", [])
        if cells is not None:
            self.extend(cells)

    def _renumber(self) -> None:
        for name in [n for n in self.__dict__["_cells"] if n.isdigit()]:
            del self.__dict__["_cells"][name]
            object.__delattr__(self, name)
        for i, c in enumerate(self._items):
            setattr(self, str(i), c)  # registers it and renames the Parameters by path

    @staticmethod
    def _check(cell, owner: str = "CellList"):
        if not isinstance(cell, Cell):
            from ..errors import GraphadError
            raise GraphadError(f"{owner} takes Cells, got a {type(cell).__name__}")
        return cell

    def append(self, cell) -> "CellList":
        """Add `cell` at the end (its child name is its index); returns the list. A value that
        is not a Cell is a GraphadError."""
        self._items.append(self._check(cell))
        setattr(self, str(len(self._items) - 1), cell)
        return self

    def extend(self, cells) -> "CellList":
        """Append each cell of the iterable `cells` in order; returns the list. A value that is
        not a Cell is a GraphadError, and then none of them is appended."""
        cells = [self._check(c) for c in cells]
        for c in cells:
            self.append(c)
        return self

    def insert(self, index: int, cell) -> None:
        """Insert `cell` before position `index` (as list.insert, negative indices included); the
        cells after it are renumbered and their Parameters renamed. A value that is not a Cell
        is a GraphadError."""
        self._items.insert(index, self._check(cell))
        self._renumber()

    def __getitem__(self, i):
        self._read()
        if isinstance(i, slice):
            return list(self._items[i])  # a plain list: a new CellList would rename their Parameters
        return self._items[i]

    def __setitem__(self, i, cell):
        self._items[i] = self._check(cell)
        self._renumber()

    def __delitem__(self, i):
        del self._items[i]
        self._renumber()

    def __len__(self):
        self._read()
        return len(self._items)

    def __iter__(self):
        self._read()
        return iter(list(self._items))

    def _read(self) -> None:
        # the list is read while a function is traced (`for layer in self.layers`): changing it
        # later (append, item assignment) must make the staged functions trace again, as a
        # SequentialCell's changes do; the list is never called, so it is marked here
        if is_tracing():
            _mark_staged(self)

    def construct(self, *args, **kwargs):
        from ..errors import GraphadError
        raise GraphadError("CellList is a container: call its cells (for cell in cells: x = cell(x))")
