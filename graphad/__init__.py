"""graphad: a graph-mode automatic differentiation compiler (MindSpore functional AD API)."""
from . import dtypes
from .dtypes import bfloat16, bool_, complex64, complex128, float16, float32, float64, int32, int64  # noqa: F401
from .errors import GraphadError  # noqa: F401
from .tensor import Tensor  # noqa: F401
from . import prims  # noqa: F401
from . import ops  # noqa: F401
from .control import cond, switch, while_loop, fori_loop, scan, checkpoint, checkpoint_policies, remat  # noqa: F401
from .control.custom import custom_jvp, custom_vjp  # noqa: F401
from .ops import set_seed  # noqa: F401

from ._version import __version__  # noqa: F401,E402
from .parameter import Parameter, ParameterTuple  # noqa: F401,E402
from .api import (grad, value_and_grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian, vmap, jit,  # noqa: F401,E402
                  make_graph, set_loop_options, stop_gradient)
from .frontend.function import set_backend, get_backend, set_target, get_target  # noqa: F401,E402
from .frontend.jit import TensorSpec, load  # noqa: F401,E402

# Imported on first use (PEP 562): a process that only runs a compiled function, or loads an AOT
# artifact, does not pay for the model layers, optimizers, checkpoints and cache tools. None of
# these modules registers a primitive or a pass, so nothing a graph needs is missing before.
_LAZY = {
    "nn": ("graphad.nn", None),
    "load_checkpoint": ("graphad.nn.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("graphad.nn.checkpoint", "save_checkpoint"),
    "cache_clear": ("graphad.runtime.cache", "cache_clear"),
    "cache_info": ("graphad.runtime.cache", "cache_info"),
    "linearize": ("graphad.transforms", "linearize"),
    "print_saved_residuals": ("graphad.transforms", "print_saved_residuals"),
    "saved_residuals": ("graphad.transforms", "saved_residuals"),
}


def __getattr__(name: str):
    """Resolve the lazily imported names of `_LAZY` (module-level __getattr__, PEP 562)."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'graphad' has no attribute {name!r}") from None
    import importlib
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
