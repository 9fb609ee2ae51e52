"""Optimizers as Cells whose state is Parameters: SGD, Adam, AdamW, RMSProp, Adagrad, and
learning-rate schedules.

An optimizer holds the Parameters it trains (`optimizer.parameters`, not re-registered: they keep
their model's names) and its own state as Parameters (moments, a step counter `global_step`), so
calling it inside gd.jit updates everything in the same compiled step (the assignments are
functionalized: graphad/prims/trace.py). Eagerly, calling it updates the Parameters in place.

Update rules (MindSpore's; PyTorch's too, except SGD with dampening, whose buffer PyTorch starts at g):
* SGD: g += weight_decay * p; with momentum, v = momentum * v + (1 - dampening) * g and
  g = g + momentum * v (nesterov) or v; p -= lr * g.
* Adam: g += weight_decay * p (L2); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t the step (from 1), evaluated in
  PyTorch's order: p -= (lr / (1 - b1^t)) * (m / (sqrt(v) / sqrt(1 - b2^t) + eps)).
  amsgrad=True (PyTorch's): the denominator uses vhat = max(vhat, v) instead of v.
* AdamW (decoupled weight decay, Loshchilov & Hutter): p *= 1 - lr * weight_decay, then the Adam
  step without the L2 term.
* RMSProp (MindSpore's, not PyTorch's: epsilon inside the square root, the mean square starting
  at ones, lr inside the momentum buffer): s = d s + (1 - d) g^2; mom = momentum mom +
  lr g / sqrt(s + eps) (centered: sqrt(s - gm^2 + eps)); p -= mom.
* Adagrad (MindSpore's): accum += g^2 (accum starting at 0.1); p -= lr g / sqrt(accum).
A Parameter with requires_grad=False is frozen: left as it is, its state too (PyTorch skips a
Parameter without a gradient).
A complex Parameter is trained as PyTorch's torch.optim does, as a pair of real Parameters (its
real and imaginary parts, torch.view_as_real): each rule above runs on each part with that part's
own state (Adam's second moment holds dL/dx^2 and dL/dy^2 in the real and imaginary parts of a
complex state, not |g|^2). graphad's gradient of a real loss L is JAX's dL/dx - i dL/dy
(docs/complex.md), so the step descends along its conjugate dL/dx + i dL/dy: the trajectory is
the one of optimizing x and y as two real Parameters.
`learning_rate` is a float, a scalar Tensor (its value when the optimizer is made), a scalar
Parameter (read at every step: `set_data` changes the rate), or a schedule: a callable (a Cell such as
`ExponentialDecayLR`) taking the int32 step counter and returning the rate; as in MindSpore, the
schedule sees the counter before the step's increment (0, 1, 2, ...), Adam's bias correction the
step number after it (1, 2, 3, ...).
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from .. import ops
from ..errors import DTypeError, GraphadError
from ..parameter import REQUIRES_GRAD_HOOKS, Parameter, ParameterTuple
from ..prims.trace import is_tracing
from ..tensor import Tensor
from .cell import Cell


def _forget_staged_on_freeze(p) -> None:
    """A Parameter's requires_grad changed: the optimizers read it while tracing (a frozen
    Parameter is not updated), so the staged train steps must trace again (not while tracing)."""
    if not is_tracing():
        from ..frontend.function import clear_staging_cache
        clear_staging_cache()


if _forget_staged_on_freeze not in REQUIRES_GRAD_HOOKS:
    REQUIRES_GRAD_HOOKS.append(_forget_staged_on_freeze)


def _is_real(v) -> bool:
    """A real number (a Python or NumPy int or float, or a 0-d real array), not a bool."""
    if isinstance(v, (bool, np.bool_)):
        return False
    a = np.asarray(v) if isinstance(v, np.ndarray) else v
    if isinstance(a, np.ndarray):
        return a.dtype.kind in "iuf"
    return isinstance(v, (int, float, np.integer, np.floating))


def _check_hyper(opt: str, name: str, v, low: float, high: float = math.inf, high_open: bool = False) -> float:
    """float(v) for a hyperparameter in [low, high] ([low, high) with high_open); a GraphadError
    naming the optimizer and the argument for anything else (NaN, inf, a string...)."""
    ok = _is_real(v) and math.isfinite(float(v)) and low <= float(v) and (
        float(v) < high if high_open else float(v) <= high)
    if not ok:
        hi = "" if high == math.inf else f", {'<' if high_open else '<='} {high:g}"
        raise GraphadError(f"{opt}: {name} must be a finite float >= {low:g}{hi}, got {v!r}")
    return float(v)


class Optimizer(Cell):
    """Base class of the optimizers: a Cell that `optimizer(gradients)` calls with one gradient
    per Parameter, in the order of `parameters`, and that updates them in place.

    `params`: the Parameters to train, e.g. `net.trainable_params()` (not the Cell; each once,
    floating-point or complex). `learning_rate`: a float >= 0, a scalar Tensor (its value when
    the optimizer is made), a scalar float Parameter (read at every step, so `set_data` changes
    the rate) or a schedule, a callable of the step counter such as ExponentialDecayLR.
    `weight_decay`: a float >= 0, used by the subclasses' rules. A bad argument (NaN and inf
    included) is a GraphadError. A Parameter whose `requires_grad` is False when the step is
    traced is frozen: it is not updated (no weight decay either) and its state stays as it is,
    as torch.optim skips a Parameter without a gradient (Adam's bias correction counts
    global_step, MindSpore's one counter, not the Parameter's own steps as torch does: see
    docs/training.md); reassigning `requires_grad` makes the compiled steps trace again. Attributes: `parameters` (a ParameterTuple, held but not registered, so the
    Parameters keep their model's names), `learning_rate`, `weight_decay` and `global_step`, an
    int32 Parameter counting the steps (requires_grad=False). The optimizers' state (moments,
    global_step) is Parameters: a call inside gd.jit or TrainOneStepCell updates it in the same
    compiled step, and save_checkpoint saves it.

    A new optimizer subclasses Optimizer and defines `construct(self, gradients)`, as a
    MindSpore one does: it reads the rate with `self.get_lr(self.global_step)`, advances the
    counter (`ops.assign_add(self.global_step, 1)`) and writes each new value with
    `ops.assign(p, new)` or `p.set_data(new)`. State Parameters assigned as attributes in its
    `__init__` are registered, so checkpoints hold them."""

    def __init__(self, params, learning_rate, weight_decay: float = 0.0):
        super().__init__(auto_prefix=False)
        if isinstance(params, Cell):
            raise GraphadError(f"{type(self).__name__}: pass the Parameters (net.trainable_params()), not the Cell")
        params = list(params)
        if not params:
            raise GraphadError(f"{type(self).__name__}: an empty parameter list")
        for p in params:
            if not isinstance(p, Parameter):
                raise GraphadError(f"{type(self).__name__}: parameters must be Parameters, got a {type(p).__name__}")
            if not p.dtype.is_inexact:
                raise GraphadError(f"{type(self).__name__}: Parameter {p.name!r} is {p.dtype.name}; only "
                                   f"floating-point and complex Parameters can be trained")
        if len({id(p) for p in params}) != len(params):
            raise GraphadError(f"{type(self).__name__}: a Parameter is listed twice")
        if not _is_real(weight_decay) or not weight_decay >= 0 or not math.isfinite(weight_decay):
            raise GraphadError(f"{type(self).__name__}: weight_decay must be a finite float >= 0, got "
                               f"{weight_decay!r}")
        # the trained Parameters belong to the model: held, not registered (they keep their names)
        object.__setattr__(self, "parameters", ParameterTuple(params))
        if callable(learning_rate) and not isinstance(learning_rate, Tensor):
            self.learning_rate = learning_rate
        elif isinstance(learning_rate, Parameter):
            # kept as the Parameter (MindSpore's learning rates are Parameters): read at every
            # call, compiled steps included, so `lr.set_data(...)` changes the rate
            lr = learning_rate.asnumpy()
            if lr.ndim != 0 or not learning_rate.dtype.is_float or not np.isfinite(lr) or lr < 0:
                raise GraphadError(f"{type(self).__name__}: a learning-rate Parameter must be a float scalar "
                                   f">= 0, got {learning_rate!r}")
            object.__setattr__(self, "learning_rate", learning_rate)  # held, not registered: the user's
        else:
            lr = learning_rate.asnumpy() if isinstance(learning_rate, Tensor) else learning_rate
            if np.ndim(lr) != 0 or not _is_real(lr) or not np.isfinite(float(lr)) or float(lr) < 0:
                raise GraphadError(f"{type(self).__name__}: learning_rate must be a float >= 0, a scalar "
                                   f"Tensor or a schedule, got {learning_rate!r}")
            self.learning_rate = float(lr)
        self.weight_decay = float(weight_decay)
        self.global_step = Parameter(np.array(0, np.int32), name="global_step", requires_grad=False)

    def _state(self, kind: str, like: Parameter, fill: float = 0.0) -> Parameter:
        """A state Parameter named "<kind>.<parameter name>" (MindSpore's moment names), every
        element `fill` (0 by default; a complex Parameter's state is fill + fill*1j: each real part,
        trained as a real Parameter, starts at fill)."""
        if like.dtype.is_complex:
            fill = complex(fill, fill)
        i = len([k for k in self.__dict__["_params"] if k.startswith(kind + "_")])
        p = Parameter(np.full(like.shape, fill, like.dtype.np), name=f"{kind}.{like.name}", requires_grad=False)
        setattr(self, f"{kind}_{i}", p)
        return p

    def get_lr(self, step):
        """The learning rate at `step`: the counter before this call's increment (0 at the first
        step), as MindSpore's Optimizer.get_lr evaluates the schedule before its assignadd."""
        lr = self.learning_rate
        return lr(step) if callable(lr) else lr

    def construct(self, gradients):
        grads = list(gradients) if isinstance(gradients, (list, tuple)) else [gradients]
        if len(grads) != len(self.parameters):
            raise GraphadError(f"{type(self).__name__}: {len(grads)} gradients for {len(self.parameters)} Parameters")
        for p, g in zip(self.parameters, grads):
            if tuple(g.shape) != tuple(p.shape):
                raise GraphadError(f"{type(self).__name__}: gradient of shape {tuple(g.shape)} for Parameter "
                                   f"{p.name!r} of shape {tuple(p.shape)}")
            if g.dtype.is_complex and not p.dtype.is_complex:
                # the update would drop the gradient's imaginary parts (as set_data refuses to; torch
                # refuses such a gradient too): most often gradients passed in another order
                raise DTypeError(f"{type(self).__name__}: a {g.dtype.name} gradient of shape {tuple(g.shape)} for "
                                 f"the {p.dtype.name} Parameter {p.name!r}: its imaginary parts would be dropped "
                                 f"(are the gradients in the Parameters' order?)")
        lr = self.get_lr(self.global_step)  # read before the increment below
        step = ops.add(self.global_step, 1)
        ops.assign(self.global_step, step)
        for i, (p, g) in enumerate(zip(self.parameters, grads)):
            if not p.requires_grad:
                # frozen (requires_grad=False, set before or after the optimizer was made): no
                # update, no weight decay, its state unchanged, as torch.optim skips a Parameter
                # without a gradient (read while tracing; reassigning it makes steps trace again)
                continue
            g = ops.astype(g, p.dtype)
            states = self._states(i)
            # a rate that is a tensor (a schedule's, computed in float64) in the Parameter's real
            # type, rounded once: it must not promote a float32 update to float64
            lr_p = lr
            if hasattr(lr, "dtype") and lr.dtype is not dt.real_dtype(p.dtype):
                lr_p = ops.astype(lr, dt.real_dtype(p.dtype))
            if p.dtype.is_complex:
                # the real pair (x, y) with gradients (dL/dx, dL/dy) = (Re g, -Im g), each part
                # with the matching part of each state (PyTorch's view_as_real)
                px, sx = self._rule(ops.real(p), ops.real(g), [ops.real(v) for v in states], lr_p, step)
                py, sy = self._rule(ops.imag(p), ops.neg(ops.imag(g)), [ops.imag(v) for v in states], lr_p, step)
                new_p, new_states = ops.complex(px, py), [ops.complex(a, b) for a, b in zip(sx, sy)]
            else:
                new_p, new_states = self._rule(p, g, list(states), lr_p, step)
            for v, new in zip(states, new_states):
                ops.assign(v, new)
            ops.assign(p, new_p)

    def _states(self, i) -> list:
        """The state Parameters of parameter i (moments), in the order `_rule` takes them."""
        return []

    def _rule(self, p, g, states, lr, step):
        """(new p, [new states]) of a real p from its gradient g and the values of its states."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (heavy ball or Nesterov) and L2 decay.

    Per step, with gradient g: g += weight_decay * p; with momentum > 0, v = momentum * v +
    (1 - dampening) * g and g = g + momentum * v (nesterov=True) or g = v; then p -= lr * g
    (MindSpore's rule; PyTorch's too, except that PyTorch starts a dampened buffer at g).
    nesterov needs momentum > 0 and dampening 0 (GraphadError otherwise)."""

    def __init__(self, params, learning_rate=0.1, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, learning_rate, weight_decay)
        momentum = _check_hyper("SGD", "momentum", momentum, 0.0)
        dampening = _check_hyper("SGD", "dampening", dampening, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise GraphadError("SGD: nesterov needs momentum > 0 and dampening 0")
        self.momentum, self.dampening, self.nesterov = float(momentum), float(dampening), bool(nesterov)
        self._moments = [self._state("moments", p) for p in self.parameters] if momentum > 0 else None

    def _states(self, i):
        return [] if self._moments is None else [self._moments[i]]

    def _rule(self, p, g, states, lr, step):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not states:
            return p - lr * g, []
        (v,) = states
        v_new = self.momentum * v + (1.0 - self.dampening) * g
        g = g + self.momentum * v_new if self.nesterov else v_new
        return p - lr * g, [v_new]


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; `weight_decay` adds an L2 term to the gradient.

    Per step t (from 1), with gradient g: g += weight_decay * p; m = beta1 m + (1 - beta1) g;
    v = beta2 v + (1 - beta2) g^2; p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps),
    as PyTorch's Adam, whose float64 bias corrections 1 - beta^t it computes too (rounded once
    to the Parameter's type). beta1 and beta2 must be in [0, 1) and eps > 0 (GraphadError
    otherwise). `amsgrad=True` (Reddi et al., PyTorch's amsgrad, MindSpore's use_amsgrad) divides
    by the running maximum of v instead: vhat = max(vhat, v), p -= lr * (m / (1 - beta1^t)) /
    (sqrt(vhat / (1 - beta2^t)) + eps), vhat a state Parameter "vhat.<name>" (PyTorch's
    max_exp_avg_sq), saved with the others."""

    decoupled = False

    def __init__(self, params, learning_rate=1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(params, learning_rate, weight_decay)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise GraphadError(f"{type(self).__name__}: amsgrad must be a bool, got {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        beta1 = _check_hyper(type(self).__name__, "beta1", beta1, 0.0, 1.0, high_open=True)
        beta2 = _check_hyper(type(self).__name__, "beta2", beta2, 0.0, 1.0, high_open=True)
        if not (_is_real(eps) and math.isfinite(float(eps)) and float(eps) > 0):
            raise GraphadError(f"{type(self).__name__}: eps must be a finite float > 0, got {eps!r}")
        self.beta1, self.beta2, self.eps = beta1, beta2, float(eps)
        self._m = [self._state("moment1", p) for p in self.parameters]
        self._v = [self._state("moment2", p) for p in self.parameters]
        self._vhat = [self._state("vhat", p) for p in self.parameters] if self.amsgrad else None

    def _states(self, i):
        return [self._m[i], self._v[i]] + ([self._vhat[i]] if self._vhat is not None else [])

    def _rule(self, p, g, states, lr, step):
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p
        m, v = states[:2]
        m_new = self.beta1 * m + (1.0 - self.beta1) * g
        v_new = self.beta2 * v + (1.0 - self.beta2) * ops.square(g)
        new_states = [m_new, v_new]
        v_den = v_new
        if self.amsgrad:  # PyTorch's: the running maximum of the second moment in the denominator
            v_den = ops.maximum(states[2], v_new)
            new_states.append(v_den)
        # the bias corrections in float64, as PyTorch's (Python floats), each rounded once to the
        # Parameter's type: 1 - beta2^t in the Parameter's own type cancelled the rounding error of
        # beta2 (float32's 0.999 is off by 1.3e-8, so 1 - 0.999 by 1.3e-5, and every step by 6e-6;
        # bfloat16's 0.999 is 1.0, so 1 - beta2^t was 0 and the Parameters never moved)
        t = ops.astype(step, dt.float64)
        c1 = 1.0 - ops.pow(ops.full((), self.beta1, dtype=dt.float64), t)
        c2 = 1.0 - ops.pow(ops.full((), self.beta2, dtype=dt.float64), t)
        lr64 = ops.astype(lr, dt.float64) if hasattr(lr, "dtype") else lr
        # PyTorch's order of operations (torch.optim.Adam, single-tensor): the bias corrections
        # are folded into scalars, so an element costs one sqrt and two divisions, not three
        step_size = ops.astype(lr64 / c1, p.dtype)
        denom = ops.sqrt(v_den) / ops.astype(ops.sqrt(c2), p.dtype) + self.eps
        if self.weight_decay and self.decoupled:
            p = p * (1.0 - lr * self.weight_decay)
        return p - step_size * (m_new / denom), new_states


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2, as PyTorch's AdamW): each step first
    scales p by 1 - lr * weight_decay, then takes Adam's step without the L2 term."""

    decoupled = True

    def __init__(self, params, learning_rate=1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, learning_rate, beta1, beta2, eps, weight_decay, amsgrad)


def _check_bool(opt: str, name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise GraphadError(f"{opt}: {name} must be a bool, got {v!r}")
    return bool(v)


def _check_loss_scale(opt: str, v) -> float:
    if not (_is_real(v) and math.isfinite(float(v)) and float(v) > 0):
        raise GraphadError(f"{opt}: loss_scale must be a finite float > 0, got {v!r}")
    return float(v)


class RMSProp(Optimizer):
    """RMSProp with MindSpore's update rule (nn.RMSProp, Hinton's lecture 6e; TensorFlow's too).

    Per step, with gradient g: g = (g + weight_decay * p) / loss_scale (MindSpore's order: the
    decay, then the loss scale); s = decay * s + (1 - decay) g^2;
    centered=True: gm = decay * gm + (1 - decay) g and the denominator is sqrt(s - gm^2 + epsilon),
    otherwise sqrt(s + epsilon); mom = momentum * mom + lr * g / denominator; p -= mom.

    It differs from PyTorch's RMSprop, so a port must not just copy the hyperparameters:
    * epsilon is added *inside* the square root, sqrt(s + epsilon); PyTorch adds its eps outside,
      sqrt(s) + eps (so MindSpore's epsilon=1e-10 acts like PyTorch's eps=1e-5 where s is ~0);
    * the mean square s starts at ones (MindSpore's and TensorFlow's "mean_square" init), PyTorch's
      square_avg at zeros, so the first steps here are much smaller than PyTorch's;
    * the learning rate is inside the momentum buffer (mom accumulates lr * g / denominator);
      PyTorch's buffer accumulates g / denominator and multiplies by lr afterwards (the same with
      a constant rate, not with a schedule);
    * the defaults: learning_rate 0.1, decay 0.9, epsilon 1e-10 (PyTorch: lr 0.01, alpha 0.99, eps 1e-8).
    State Parameters (checkpointed): "mean_square.<name>", "moment.<name>" and, centered,
    "mean_grad.<name>". decay in [0, 1], momentum >= 0, epsilon > 0, loss_scale > 0 (GraphadError
    otherwise). `use_locking` (MindSpore's, for concurrent updates) is accepted and has no
    effect: a step's updates are one graph."""

    def __init__(self, params, learning_rate=0.1, decay: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-10,
                 use_locking: bool = False, centered: bool = False, loss_scale: float = 1.0,
                 weight_decay: float = 0.0):
        super().__init__(params, learning_rate, weight_decay)
        self.decay = _check_hyper("RMSProp", "decay", decay, 0.0, 1.0)
        self.momentum = _check_hyper("RMSProp", "momentum", momentum, 0.0)
        if not (_is_real(epsilon) and math.isfinite(float(epsilon)) and float(epsilon) > 0):
            raise GraphadError(f"RMSProp: epsilon must be a finite float > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.use_locking = _check_bool("RMSProp", "use_locking", use_locking)
        self.centered = _check_bool("RMSProp", "centered", centered)
        self.loss_scale = _check_loss_scale("RMSProp", loss_scale)
        self._ms = [self._state("mean_square", p, 1.0) for p in self.parameters]
        self._mom = [self._state("moment", p) for p in self.parameters]
        self._mg = [self._state("mean_grad", p) for p in self.parameters] if self.centered else None

    def _states(self, i):
        return [self._ms[i], self._mom[i]] + ([self._mg[i]] if self._mg is not None else [])

    def _rule(self, p, g, states, lr, step):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.loss_scale != 1.0:
            g = g / self.loss_scale
        ms, mom = states[:2]
        ms_new = self.decay * ms + (1.0 - self.decay) * ops.square(g)
        new = [ms_new]
        if self.centered:
            mg_new = self.decay * states[2] + (1.0 - self.decay) * g
            denom = ops.sqrt(ms_new - ops.square(mg_new) + self.epsilon)
        else:
            denom = ops.sqrt(ms_new + self.epsilon)
        mom_new = self.momentum * mom + lr * g / denom
        new.append(mom_new)
        if self.centered:
            new.append(mg_new)
        return p - mom_new, new


class Adagrad(Optimizer):
    """Adagrad with MindSpore's update rule (nn.Adagrad: its ApplyAdagrad).

    Per step, with gradient g: g = (g + weight_decay * p) / loss_scale; with update_slots=True (the
    default) accum += g^2; p -= lr * g / sqrt(accum). The accumulator starts at `accum` (default
    0.1, >= 0) and is the state Parameter "accum.<name>" (checkpointed); update_slots=False keeps
    it at that value. Unlike PyTorch's Adagrad there is no eps (PyTorch: / (sqrt(sum) + 1e-10)),
    its accumulator starts at initial_accumulator_value (default 0) and it has lr_decay; accum=0
    with a zero first gradient divides 0 by 0 (NaN), as MindSpore's. Defaults as MindSpore's:
    learning_rate 0.001. loss_scale > 0 (GraphadError otherwise)."""

    def __init__(self, params, accum: float = 0.1, learning_rate=0.001, update_slots: bool = True,
                 loss_scale: float = 1.0, weight_decay: float = 0.0):
        super().__init__(params, learning_rate, weight_decay)
        self.accum = _check_hyper("Adagrad", "accum", accum, 0.0)
        self.update_slots = _check_bool("Adagrad", "update_slots", update_slots)
        self.loss_scale = _check_loss_scale("Adagrad", loss_scale)
        self._acc = [self._state("accum", p, self.accum) for p in self.parameters]

    def _states(self, i):
        return [self._acc[i]]

    def _rule(self, p, g, states, lr, step):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.loss_scale != 1.0:
            g = g / self.loss_scale
        (acc,) = states
        if self.update_slots:
            acc = acc + ops.square(g)
        return p - lr * g / ops.sqrt(acc), [acc]


class ExponentialDecayLR(Cell):
    """lr(step) = learning_rate * decay_rate ** (step / decay_steps) (floored with is_stair)."""

    def __init__(self, learning_rate: float, decay_rate: float, decay_steps: int, is_stair: bool = False):
        super().__init__()
        if decay_steps <= 0:
            raise GraphadError(f"ExponentialDecayLR: decay_steps must be > 0, got {decay_steps}")
        self.lr, self.rate, self.steps, self.stair = float(learning_rate), float(decay_rate), int(decay_steps), is_stair

    def construct(self, step):
        # in float64, as PyTorch's schedules (Python floats); the optimizer rounds the rate to
        # each Parameter's type once (computed in float32, a float64 model's rate drifted by 1e-8)
        p = ops.astype(step, "float64") / float(self.steps)
        if self.stair:
            p = ops.floor(p)
        return self.lr * ops.pow(ops.full((), self.rate, dtype="float64"), p)


class CosineDecayLR(Cell):
    """lr(step) = min_lr + (max_lr - min_lr) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2."""

    def __init__(self, min_lr: float, max_lr: float, decay_steps: int):
        super().__init__()
        if decay_steps <= 0:
            raise GraphadError(f"CosineDecayLR: decay_steps must be > 0, got {decay_steps}")
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), int(decay_steps)

    def construct(self, step):
        t = ops.minimum(ops.astype(step, "float64"), float(self.steps)) / float(self.steps)  # (float64: above)
        return self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * t))
