"""graphad.prims.lax: the op functions the primitives' rules are written with (JAX's `lax`).

Operand conversion (weakly typed Python scalars, dtype promotion), axis normalisation and the
NumPy conveniences, then a primitive's `bind`: the code of graphad.ops' elementwise, reduction,
linear-algebra, shape, creation and softmax functions, kept here in the prims layer so that the
jvp/vjp/batch rules (through `registry.ops`), Tensor's operators, the passes and the eager path
use them without importing graphad.ops, a higher layer that re-exports them unchanged.

Every public function is wrapped once, here, by `_errors.with_context` (argument errors name the
op, its operands and the user's line), so the rules, the operators and graphad.ops call the very
same wrapped objects as before the move.
"""
from .core import *  # noqa: F401,F403
from .core import _float_operand, _operands, as_tensor, asarray_in_trace, constant, is_scalar  # noqa: F401
from .shape import *  # noqa: F401,F403
from .creation import *  # noqa: F401,F403
from .creation import basis_eye  # noqa: F401
from .nn import clip_by_global_norm, log_softmax, one_hot, softmax  # noqa: F401
from .sort import argsort, median, quantile, sort, top_k, topk  # noqa: F401
from .numpy_more import *  # noqa: F401,F403

import sys as _sys  # noqa: E402

from . import _errors as _err, core as _core_mod, creation as _creation_mod  # noqa: E402
from . import nn as _nn_mod, numpy_more as _numpy_more_mod, shape as _shape_mod  # noqa: E402

# the submodule itself: the package attribute `sort` is the function imported above
_sort_mod = _sys.modules[__name__ + ".sort"]

for _m in (_core_mod, _shape_mod, _creation_mod, _nn_mod, _sort_mod, _numpy_more_mod):
    _err.wrap_module(_m, globals())
del _m, _sys
