"""MindSpore's train-step cells: `WithLossCell(backbone, loss_fn)` and
`TrainOneStepCell(network, optimizer)`, whose call runs forward, backward and the optimizer's
update as one compiled executable (gd.jit of its construct) and returns the loss.

Neither adds a prefix to the names of the Parameters it holds (MindSpore's auto_prefix=False):
the model's Parameters keep names like "0.weight", the optimizer's state "moment1.0.weight".
"""
from __future__ import annotations

from .. import api
from ..errors import GraphadError
from ..prims.trace import is_tracing
from .cell import Cell, _mark_staged
from .optim import Optimizer


class WithLossCell(Cell):
    """loss_fn(backbone(data), label): a Cell returning the loss, for TrainOneStepCell.

    Calling it as `cell(data, label)` returns the loss. It adds no prefix to the backbone's
    Parameter names (MindSpore's auto_prefix=False)."""

    def __init__(self, backbone: Cell, loss_fn):
        super().__init__(auto_prefix=False)
        self._backbone = backbone
        self._loss_fn = loss_fn

    @property
    def backbone_network(self) -> Cell:
        """The backbone Cell given to the constructor (the model, without the loss)."""
        return self._backbone

    def construct(self, data, label):
        return self._loss_fn(self._backbone(data), label)


class TrainOneStepCell(Cell):
    """One training step: loss and gradients of `network` (a Cell returning the loss, e.g. a
    WithLossCell) w.r.t. the optimizer's Parameters, then the optimizer's update.

    `step(*inputs)` passes its inputs to `network` and returns the loss (before the update).
    Calling it compiles the whole step once per input signature (`jit=False` runs it eagerly,
    through the reference kernels); `sens` scales the gradients (MindSpore's loss scaling).
    `optimizer` must be an `nn.Optimizer` (GraphadError otherwise)."""

    def __init__(self, network: Cell, optimizer: Optimizer, sens: float = 1.0, jit: bool = True):
        super().__init__(auto_prefix=False)
        if not isinstance(optimizer, Optimizer):
            raise GraphadError(f"TrainOneStepCell: optimizer must be an nn optimizer (SGD, Adam, AdamW), got "
                               f"a {type(optimizer).__name__}")
        self.network = network
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.sens = float(sens)
        self._grad = api.value_and_grad(network, None, weights=list(self.weights))
        object.__setattr__(self, "_step", api.jit(self.construct) if jit else None)

    def loss_and_grads(self, *inputs):
        """(loss, gradients): `network(*inputs)` and its gradients with respect to the optimizer's
        Parameters (a list in their order), scaled by `sens`; the step's first half, for a
        subclass's `construct` that changes the gradients before `self.optimizer(grads)`."""
        if is_tracing():
            _mark_staged(self)  # (its call runs construct directly: sens and the cells it holds are read)
        loss, grads = self._grad(*inputs)
        if self.sens != 1.0:
            grads = [g * self.sens for g in grads]
        return loss, list(grads)

    def construct(self, *inputs):
        loss, grads = self.loss_and_grads(*inputs)
        self.optimizer(grads)
        return loss

    def __call__(self, *inputs):
        step = self.__dict__.get("_step")
        if step is not None:
            return step(*inputs)
        return self.construct(*inputs)
