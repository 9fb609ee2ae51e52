"""graphad.ops: the user-facing functions (NumPy names, MindSpore spellings) and op classes.

The top layer's face of the ops: the functions themselves live in graphad.prims.lax (the rules
are written with them; see docs/architecture.md ## Layers) and are re-exported here; conv2d, the
pools and the op classes are defined here.
"""
from .core import *  # noqa: F401,F403
from .core import (abs, add, amax, amin, argmax, argmin, as_tensor, asarray_in_trace, astype, cast, clamp, clip,  # noqa: F401
                   constant, copy, cos, dense, div, divide, einsum, einsum_prim, equal, erf, exp, expm1,
                   floor, floor_divide, greater, greater_equal, less, less_equal, linear, log, log1p,
                   logical_not, logsumexp, matmul, matmul_prim, max, maximum, mean, min, minimum, mul, multiply,
                   neg, negative, not_equal, outer, pow, power, prod, reciprocal, relu, rsqrt, sigmoid, sign, sin,
                   sqrt, square, stop_gradient, sub, subtract, sum, tan, tanh, true_divide, where)
from .shape import (broadcast_to, cat, concat, concat_prim, concatenate, expand_dims, flip, gather, getitem,  # noqa: F401
                    index_add, movedim, moveaxis, pad, pad_prim, permute, reshape, slice_prim, split, squeeze, stack,
                    swapaxes, take, take_prim, transpose, unsqueeze)
from .creation import (arange, eye, full, full_like, ones, ones_like, rand, randint, randn, set_seed, zeros,  # noqa: F401
                       zeros_like)
from .nn import clip_by_global_norm, log_softmax, one_hot, softmax  # noqa: F401
from ..prims.lax import argsort, median, quantile, sort, top_k, topk  # noqa: F401
from ..prims.lax.numpy_more import *  # noqa: F401,F403  (NumPy conveniences composed of the ops above)
from .shape import (diagonal, gather_elements, put_along_axis, repeat, repeat_interleave, roll,  # noqa: F401
                    take_along_axis, tile, trace, tril, triu)
from .classes import *  # noqa: F401,F403
from .classes import (Abs, Add, Cos, Div, Erf, Exp, Expm1, Log, Log1p, LogSoftmax, MatMul, Maximum, Minimum,  # noqa: F401
                      Mul, Neg, Pow, Reciprocal, ReduceMax, ReduceMean, ReduceMin, ReduceSum, ReLU, Reshape, Rsqrt,
                      Sigmoid, Sign, Sin, Softmax, Sqrt, Square, StopGradient, Sub, Tan, Tanh, Transpose)
from .conv import avg_pool2d, conv2d, conv2d_prim, max_pool2d  # noqa: F401,E402
from .state import assign, assign_add, assign_sub  # noqa: F401,E402
from . import linalg  # noqa: F401,E402  (ops.linalg: solve, inv, det, slogdet, cholesky, ...)

from ..prims.lax import _errors as _err  # noqa: E402
from . import conv as _conv_mod, state as _state_mod  # noqa: E402

# graphad.prims.lax wrapped its own functions; conv's and the state ops are wrapped here
_err.wrap_module(_conv_mod, globals())
_err.wrap_module(_state_mod, globals(), returns_operand=True)  # (assign returns its Parameter)
