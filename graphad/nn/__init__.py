"""graphad.nn: Cell, Parameter, ParameterTuple and the usual layers and losses."""
from .cell import Cell  # noqa: F401
from .layers import (Conv2d, CrossEntropyLoss, Dense, Flatten, L1Loss, MSELoss, ReLU, SequentialCell, Sigmoid,  # noqa: F401
                     Softmax, Tanh)
from .parameter import Parameter, ParameterTuple  # noqa: F401
