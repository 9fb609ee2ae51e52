"""graphad: a graph-mode automatic differentiation compiler (MindSpore functional AD API)."""
from . import dtypes
from .dtypes import bfloat16, bool_, float16, float32, float64, int32, int64  # noqa: F401
from .errors import GraphadError  # noqa: F401
from .tensor import Tensor  # noqa: F401
from . import prims  # noqa: F401
from . import ops  # noqa: F401
from .control import cond, switch, while_loop, fori_loop, scan, checkpoint, checkpoint_policies, remat  # noqa: F401
from .control.custom import custom_jvp, custom_vjp  # noqa: F401
from .ops import set_seed  # noqa: F401

from ._version import __version__  # noqa: F401,E402
from . import nn  # noqa: F401,E402
from .nn import Parameter, ParameterTuple, load_checkpoint, save_checkpoint  # noqa: F401,E402
from .api import (grad, value_and_grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian, vmap, jit,  # noqa: F401,E402
                  make_graph, set_loop_options, stop_gradient)
from .frontend.function import set_backend, get_backend, set_target, get_target  # noqa: F401,E402
from .frontend.jit import TensorSpec, load  # noqa: F401,E402
from .runtime.cache import cache_clear, cache_info  # noqa: F401,E402
from .transforms import linearize, print_saved_residuals, saved_residuals  # noqa: F401,E402
