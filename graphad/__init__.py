"""graphad: a graph-mode automatic differentiation compiler (MindSpore functional AD API)."""
from . import dtypes
from .dtypes import bfloat16, bool_, float16, float32, float64, int32, int64  # noqa: F401
from .errors import GraphadError  # noqa: F401
from .tensor import Tensor  # noqa: F401
from . import prims  # noqa: F401
from . import ops  # noqa: F401
from .ops import set_seed  # noqa: F401

__version__ = "0.1.0"
