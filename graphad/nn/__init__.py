"""graphad.nn: Cell, Parameter, ParameterTuple, the usual layers and losses, optimizers, train-step
cells, and checkpoints (save_checkpoint / load_checkpoint, safetensors files)."""
from .cell import Cell  # noqa: F401
from .layers import (AvgPool2d, BatchNorm2d, BCEWithLogitsLoss, CellList, Conv2d, CrossEntropyLoss, Dense,  # noqa: F401
                     Dropout, Embedding, Flatten, GELU, L1Loss, LayerNorm, MaxPool2d, MSELoss, ReLU, SequentialCell,
                     Sigmoid, Softmax, Tanh)
from .parameter import Parameter, ParameterTuple  # noqa: F401
from .optim import SGD, Adam, AdamW, CosineDecayLR, ExponentialDecayLR, Optimizer  # noqa: F401
from .train import TrainOneStepCell, WithLossCell  # noqa: F401
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
