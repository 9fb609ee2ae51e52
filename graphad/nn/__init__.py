"""graphad.nn: Cell, Parameter, ParameterTuple, the usual layers and losses, optimizers, train-step
cells, and checkpoints (save_checkpoint / load_checkpoint, safetensors files)."""
from .cell import Cell  # noqa: F401
from .layers import (AvgPool2d, BatchNorm2d, BCELoss, BCEWithLogitsLoss, CellList, Conv1d, Conv2d,  # noqa: F401
                     CrossEntropyLoss, Dense, Dropout, ELU, Embedding, Flatten, GELU, GroupNorm, HuberLoss, KLDivLoss,
                     L1Loss, LayerNorm, LeakyReLU, MaxPool2d, MSELoss, NLLLoss, ReLU, SequentialCell, Sigmoid, SiLU,
                     SmoothL1Loss, Softmax, Softplus, Tanh)
from .parameter import Parameter, ParameterTuple  # noqa: F401
from .optim import SGD, Adagrad, Adam, AdamW, CosineDecayLR, ExponentialDecayLR, Optimizer, RMSProp  # noqa: F401
from .train import TrainOneStepCell, WithLossCell  # noqa: F401
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
