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
from ..errors import ShapeError
from ..tensor import Tensor
from .cell import Cell
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
    """2-D convolution over NCHW input with weight (out, in, kh, kw) (MindSpore's nn.Conv2d).

    A cross-correlation, as in MindSpore and torch; a (C, H, W) input is a batch of one.
    `kernel_size`, `stride` and `dilation`: an int or a pair. `pad_mode`: "same" (the default:
    output size ceil(H / stride), the extra padding at the high end), "valid" (no padding) or
    "pad" with `padding` (an int, (ph, pw) or (top, bottom, left, right)). `has_bias` is False by
    default, as in MindSpore. weight and bias are drawn uniformly from
    [-1/sqrt(in_channels * kh * kw), 1/sqrt(in_channels * kh * kw)] (gd.set_seed)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode="same", padding=0,
                 dilation=1, has_bias: bool = False, dtype=dt.float32):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.dilation = stride, dilation
        if not isinstance(pad_mode, str) or pad_mode.lower() not in ("same", "valid", "pad"):
            raise ShapeError(f"Conv2d: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")
        pad_mode = pad_mode.lower()  # (as the pooling layers take it)
        if pad_mode != "pad" and padding not in (0, (0, 0), (0, 0, 0, 0)):
            raise ShapeError(f"Conv2d: padding must be 0 with pad_mode={pad_mode!r} (use pad_mode='pad'), "
                             f"got {padding!r}")
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
    """max(x, 0) elementwise (`ops.relu`)."""

    _fn = staticmethod(ops.relu)


class Tanh(_Act):
    """tanh(x) elementwise (`ops.tanh`)."""

    _fn = staticmethod(ops.tanh)


class Sigmoid(_Act):
    """1 / (1 + exp(-x)) elementwise (`ops.sigmoid`)."""

    _fn = staticmethod(ops.sigmoid)


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
    """Softmax cross entropy of logits (N, C) with integer class labels (N,) or class probabilities (N, C).

    `loss(logits, labels)`: one loss per row, reduced by `reduction`: "mean" (the default) or
    "sum" over the rows, or "none" (the (N,) row losses); any other value is a GraphadError.
    Integer logits are taken as float32. As in MindSpore and torch, logits may also be (C,)
    (labels () or (C,)) or (N, C, d1, ..., dK), the classes along axis 1 (labels (N, d1, ..., dK)
    or (N, C, d1, ..., dK); "none" gives (N, d1, ..., dK), "mean" the mean over all of them).
    Labels of another shape are a ShapeError (they are not broadcast).

    The log-probabilities are (x - m) - log(sum(exp(x - m))) with m the row's maximum (held
    constant for the derivative, which softmax's shift invariance leaves unchanged): nothing
    overflows, and no large number is added back and subtracted again, so logits of 1e4 keep
    their float32 accuracy (x - logsumexp(x) would round log 2 to 0.69336 there).

    An integer label outside [0, C) has no class: a GraphadError when the labels are concrete,
    a NaN loss for its row inside a traced function (so a NaN mean or sum, never a silent zero).
    There is no `ignore_index`: mask such rows out before the loss.
    """

    def construct(self, logits, labels):
        if not logits.dtype.is_float:
            logits = ops.astype(logits, dt.default_float)
        if logits.ndim < 1:
            raise ShapeError(f"CrossEntropyLoss: logits must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
        want = tuple(logits.shape) if not labels.dtype.is_int else \
            tuple(logits.shape[:1] + logits.shape[2:]) if logits.ndim >= 2 else ()
        if tuple(labels.shape) != want:
            kind = "class probabilities" if not labels.dtype.is_int else "integer labels"
            raise ShapeError(f"CrossEntropyLoss: logits of shape {tuple(logits.shape)} (classes along axis "
                             f"{1 if logits.ndim >= 2 else 0}) take {kind} of shape {want}, got {tuple(labels.shape)}")
        if logits.ndim >= 3:
            # the classes along axis 1 (MindSpore's and torch's (N, C, d1, ...)): moved last
            perm = (0,) + tuple(range(2, logits.ndim)) + (1,)
            logits = ops.transpose(logits, perm)
            if not labels.dtype.is_int:
                labels = ops.transpose(labels, perm)
        shifted = ops.sub(logits, ops.stop_gradient(ops.max(logits, -1, True)))
        logp = ops.sub(shifted, ops.log(ops.sum(ops.exp(shifted), -1, True)))
        if not labels.dtype.is_int:
            return self._reduce(ops.neg(ops.sum(ops.mul(labels, logp), -1)))
        n = logits.shape[-1]
        if isinstance(labels, Tensor):
            lab = labels.asnumpy()
            bad = lab[(lab < 0) | (lab >= n)]
            if bad.size:
                from ..errors import GraphadError
                raise GraphadError(f"CrossEntropyLoss: {bad.size} label(s) outside [0, {n}) for logits of shape "
                                   f"{tuple(logits.shape)}, e.g. {int(bad[0])}")
        valid = ops.logical_and(ops.greater_equal(labels, 0), ops.less(labels, n))
        # the target's log-probability picked by a where (a one-hot product made 0 * -inf = NaN
        # where another class's logit is -inf, a masked class; a gather cost the CNN train step six
        # more kernels and 0.2 s of compiling)
        hit = ops.equal(ops.expand_dims(labels, -1), ops.arange(n, dtype=labels.dtype))
        rows = ops.neg(ops.sum(ops.where(hit, logp, ops.zeros((), dtype=logp.dtype)), -1))
        return self._reduce(ops.where(valid, rows, ops.full((), float("nan"), rows.dtype)))


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
        return _same_pads(h, k[0], s[0], 1) + _same_pads(w, k[1], s[1], 1)
    if mode in ("valid", "pad"):
        return _pads4(padding)
    raise ShapeError(f"{name}: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")


class _Pool2d(Cell):
    def __init__(self, kernel_size=1, stride=1, pad_mode="valid", padding=0):
        super().__init__()
        if not isinstance(pad_mode, str) or pad_mode.lower() not in ("valid", "same", "pad"):
            raise ShapeError(f"{type(self).__name__}: pad_mode must be 'valid', 'same' or 'pad', got {pad_mode!r}")
        self.kernel_size, self.stride, self.pad_mode, self.padding = kernel_size, stride, pad_mode.lower(), padding

    def extend_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad_mode={self.pad_mode}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over kernel_size windows of an NCHW (or CHW) input (MindSpore's nn.MaxPool2d).

    stride defaults to 1 as in MindSpore. pad_mode: "valid" (no padding, the default), "same"
    (output size ceil(H / stride), the extra padding at the high end, filled with -inf) or "pad"
    with `padding` (an int, (ph, pw) or (top, bottom, left, right); a nonzero `padding` with
    "valid" is taken as "pad"). Padding may not exceed half the window.
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
    `normalized_shape` is an int or a tuple (MindSpore's begin_norm_axis is its length from the end)."""

    def __init__(self, normalized_shape, epsilon: float = 1e-5, dtype=dt.float32):
        super().__init__()
        shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else \
            tuple(int(d) for d in normalized_shape)
        self.normalized_shape, self.epsilon = shape, float(epsilon)
        self.gamma = Parameter(Tensor(np.ones(shape), dtype), name="gamma")
        self.beta = Parameter(Tensor(np.zeros(shape), dtype), name="beta")

    def construct(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ShapeError(f"LayerNorm({self.normalized_shape}) got an input of shape {tuple(x.shape)}")
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = ops.mean(x, axes, True)
        xc = ops.sub(x, mean)
        var = ops.mean(ops.square(xc), axes, True)
        y = ops.mul(xc, ops.rsqrt(ops.add(var, self.epsilon)))
        return ops.add(ops.mul(y, self.gamma), self.beta)

    def extend_repr(self):
        return f"normalized_shape={self.normalized_shape}, epsilon={self.epsilon}"


class BatchNorm2d(Cell):
    """Batch normalisation of NCHW input per channel (MindSpore's nn.BatchNorm2d).

    Training mode (the default): normalise with the batch's mean and biased variance over
    (N, H, W), and update the running statistics with MindSpore's momentum convention
        moving_mean = momentum * moving_mean + (1 - momentum) * batch_mean
        moving_variance = momentum * moving_variance + (1 - momentum) * unbiased_batch_variance
    through `Parameter.set_data` (in place eagerly; under gd.jit / grad / value_and_grad the
    compiled step returns the new values and the runtime writes them after the call). Eval mode
    (`set_train(False)`) normalises with the moving statistics. Parameters: gamma (ones), beta
    (zeros) when affine, moving_mean (zeros), moving_variance (ones), the last two with
    requires_grad=False. `use_batch_statistics` True/False forces either behaviour whatever the
    mode, as in MindSpore: True normalises with the batch's statistics and updates the moving ones
    (in eval mode too), False normalises with the moving statistics and leaves them unchanged.
    Normalising with batch statistics needs more than one value per channel (N * H * W > 1; a
    ShapeError otherwise, as torch refuses such a batch in training).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, affine: bool = True,
                 use_batch_statistics=None, dtype=dt.float32):
        super().__init__()
        from ..errors import GraphadError
        if not 0.0 <= momentum <= 1.0:
            raise GraphadError(f"BatchNorm2d: momentum must be in [0, 1], got {momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.affine, self.use_batch_statistics = affine, use_batch_statistics
        c = (self.num_features,)
        if affine:
            self.gamma = Parameter(Tensor(np.ones(c), dtype), name="gamma")
            self.beta = Parameter(Tensor(np.zeros(c), dtype), name="beta")
        self.moving_mean = Parameter(Tensor(np.zeros(c), dtype), name="moving_mean", requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(c), dtype), name="moving_variance", requires_grad=False)

    def construct(self, x):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ShapeError(f"BatchNorm2d({self.num_features}) takes (N, {self.num_features}, H, W), got shape "
                             f"{tuple(x.shape)}")
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
    zeros (MindSpore's meaning: it is trained like the others, unlike torch's). Indices outside
    [0, vocab_size) are an error eagerly; negative ones wrap as in NumPy's take."""

    def __init__(self, vocab_size: int, embedding_size: int, embedding_table=None, padding_idx=None,
                 dtype=dt.float32):
        super().__init__()
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
    def _check(cell):
        if not isinstance(cell, Cell):
            from ..errors import GraphadError
            raise GraphadError(f"CellList takes Cells, got a {type(cell).__name__}")
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
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def construct(self, *args, **kwargs):
        from ..errors import GraphadError
        raise GraphadError("CellList is a container: call its cells (for cell in cells: x = cell(x))")
