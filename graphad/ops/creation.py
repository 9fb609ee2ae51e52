"""graphad.ops.creation: re-exports graphad.prims.lax.creation, where this code lives since the layers were drawn.

The primitives' rules are written with these functions and must not import graphad.ops (a layer
above them), so the code moved down to the prims layer unchanged; this module keeps the old import
path. The functions are the same (already wrapped) objects as graphad.prims.lax's.
"""
from ..prims import lax as _lax  # noqa: F401  (wraps the functions before they are re-exported)
from ..prims.lax.creation import *  # noqa: F401,F403
from ..prims.lax.creation import _shape  # noqa: F401
# not `_rng`: set_seed rebinds it in graphad.prims.lax.creation, read it there
