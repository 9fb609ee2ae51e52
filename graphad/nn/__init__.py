"""graphad.nn: Cell, Parameter, ParameterTuple and the usual layers and losses."""
from .cell import Cell  # noqa: F401
from .layers import (Conv2d, CrossEntropyLoss, Dense, Flatten, L1Loss, MSELoss, ReLU, SequentialCell, Sigmoid,  # noqa: F401
                     Softmax, Tanh)
from .parameter import Parameter, ParameterTuple  # noqa: F401
from .optim import SGD, Adam, AdamW, CosineDecayLR, ExponentialDecayLR, Optimizer  # noqa: F401
from .train import TrainOneStepCell, WithLossCell  # noqa: F401
