"""graphad.ops.shape: re-exports graphad.prims.lax.shape, where this code lives since the layers were drawn.

The primitives' rules are written with these functions and must not import graphad.ops (a layer
above them), so the code moved down to the prims layer unchanged; this module keeps the old import
path. The functions are the same (already wrapped) objects as graphad.prims.lax's.
"""
from ..prims import lax as _lax  # noqa: F401  (wraps the functions before they are re-exported)
from ..prims.lax.shape import *  # noqa: F401,F403
from ..prims.lax.shape import _index_tensor, _t  # noqa: F401
