"""Primitive registry and the primitive families (each primitive declared once with all its rules)."""
from .registry import PRIMITIVES, Primitive, get_primitive, register  # noqa: F401
from . import creation, elementwise, linalg, reduce, shape  # noqa: F401  (registers the primitives)
from . import nn  # noqa: F401,E402
from . import sort  # noqa: F401,E402
from . import decomp  # noqa: F401,E402  (solve, slogdet, cholesky, triangular_solve)
from . import trace, lax  # noqa: F401,E402  (bind and the op functions the rules are written with)
