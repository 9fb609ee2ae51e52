"""Structured control flow: the cond, while_loop and scan primitives and the user's functions.

A layer of its own above the passes: the primitives' derivative and batching rules transform
their nested graphs (regions) with the passes' jvp, vjp and vmap graph transformations, which
the primitive layer below cannot import. `import graphad` imports it, so the parser knows these
primitives by name.
"""
from . import prims  # noqa: F401  (registers cond, while_loop, scan)
from .api import cond, fori_loop, scan, switch, while_loop  # noqa: F401
from .remat import checkpoint, checkpoint_policies, remat  # noqa: F401
from . import merge  # noqa: F401  (registers the merge-loops pass)
