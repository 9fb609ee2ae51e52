"""graphad: a graph-mode automatic differentiation compiler (MindSpore functional AD API).

`import graphad` imports what a process that only runs compiled code needs: the dtypes, `Tensor`,
`GraphadError` and `load` (an AOT artifact, run with TVM's runtime alone). The rest of the
namespace (the ops, the transformations, jit, control flow, the primitives) is imported the first
time one of its names is read (PEP 562 `__getattr__`), all of it at once, exactly what `import
graphad` imported before, so `gd.grad`, `gd.ops` and `from graphad import vmap` behave as always.
The primitive registry completes itself the same way (`ir.registry.set_loader`): a look-up of a
primitive by name always sees every primitive.
"""
from . import dtypes
from .dtypes import bfloat16, bool_, complex64, complex128, float16, float32, float64, int32, int64  # noqa: F401
from .errors import GraphadError  # noqa: F401
from .tensor import Tensor  # noqa: F401
from ._version import __version__  # noqa: F401
from .frontend.compiled import load  # noqa: F401
from .ir import registry as _registry

# Imported on first use, each on its own: a process that compiles does not pay for the model
# layers, optimizers, checkpoints and cache tools either. None of these modules registers a
# primitive or a pass, so nothing a graph needs is missing before.
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

# The rest of the namespace, bound by `_complete` (module -> its names bound here).
_FULL = {
    "graphad.ops": ("set_seed",),
    "graphad.control": ("cond", "switch", "while_loop", "fori_loop", "scan", "checkpoint",
                        "checkpoint_policies", "remat"),
    "graphad.control.custom": ("custom_jvp", "custom_vjp"),
    "graphad.parameter": ("Parameter", "ParameterTuple"),
    "graphad.api": ("grad", "value_and_grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                    "vmap", "jit", "make_graph", "set_loop_options", "stop_gradient"),
    "graphad.frontend.function": ("set_backend", "get_backend", "set_target", "get_target"),
    "graphad.frontend.jit": ("TensorSpec",),
}
_FULL_NAMES = {name for names in _FULL.values() for name in names} | {"prims", "ops", "control"}
_SUBMODULES = ("api", "control", "dtypes", "errors", "frontend", "ir", "ops", "parameter", "passes", "prims",
               "pytree", "tensor")
# what `from graphad import *` binds: the names a full import bound (submodules included), each
# resolved through __getattr__ (so the star import completes the namespace)
__all__ = sorted(_FULL_NAMES | set(_SUBMODULES) | {
    "GraphadError", "Tensor", "load", "bfloat16", "bool_", "complex64", "complex128", "float16", "float32",
    "float64", "int32", "int64"})
_completed = False


def _complete() -> None:
    """Import the whole namespace (the primitives, ops, control flow, transformations, jit) and
    bind its names in this module: the primitive registry's loader, which runs it once, under its
    lock, at the first read of the registry or of a name here that is not bound yet; a failure
    propagates and the next read tries again, as an import would."""
    global _completed
    import importlib
    g = globals()
    for module, names in _FULL.items():
        m = importlib.import_module(module)
        for name in names:
            g[name] = getattr(m, name)
    # the submodules a full import bound here: the import system binds a submodule to its package
    # only when it first imports it, not in a `graphad` imported again (importlib.reload, or removed
    # from sys.modules) while they stay imported
    for short in _SUBMODULES:
        g[short] = importlib.import_module(f"graphad.{short}")
    _completed = True


_registry.set_loader(_complete)


def __getattr__(name: str):
    """Resolve the names imported on first use (module-level __getattr__, PEP 562)."""
    import importlib
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        if attr is not None:
            value = getattr(value, attr)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        # a name of the whole namespace, or a submodule it imports (gd.api, gd.passes...): the
        # registry's loader (`_complete`, run once under the registry's lock) binds them
        _registry._complete()
        if not _completed and not _registry._state["loading"]:
            # this module imported again (importlib.reload, or removed from sys.modules) after the
            # registry was complete: bind the names here again
            with _registry._lock:
                if not _completed:
                    _complete()
        try:
            return globals()[name]
        except KeyError:
            if _registry._state["loading"] and not _completed:  # read while the namespace is imported
                raise AttributeError(f"module 'graphad' has no attribute {name!r} (yet: graphad is being "
                                     f"imported)") from None
    raise AttributeError(f"module 'graphad' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_FULL_NAMES))
