"""Is a custom rule linear where graphad transposes it?

graphad transposes the user's tangent map of a `custom_jvp` (for grad/vjp) and the user's `bwd` of
a `custom_vjp` (for jvp/jacfwd) by differentiating them with respect to their tangent (cotangent)
inputs at zero: that is the transpose exactly when the map is linear (affine) in those inputs, as
the docs require, and a made-up number otherwise (`t * t` gave a gradient of 0, `sin(t)` 1). JAX
refuses such rules when it transposes them (no transpose rule for `sin`). `nonlinear_use` finds,
in a rule's graph, the first node that uses a tangent nonlinearly on the way to the outputs the
transpose reads; only uses that are certainly nonlinear count (a primitive this module does not
know, and control flow, pass the tangent on), so a linear rule is never refused.
"""
from __future__ import annotations

from ..ir.core import Graph, Node

# linear in one operand when the others do not depend on the tangents
_PRODUCTS = frozenset({"mul", "matmul", "conv2d", "einsum"})
# linear in their last operand only (x = a^-1 b)
_SOLVES = frozenset({"solve", "triangular_solve"})
# decompositions and orderings of a tangent: nonlinear
_NONLINEAR = frozenset({"cholesky", "eigh", "qr", "slogdet", "svd", "det", "argsort"})


def _nonlinear(node: Node, linear: list[bool]) -> bool:
    """Whether `node` uses the inputs flagged in `linear` (tangent-dependent, linearly so far)
    nonlinearly."""
    p = node.prim
    name, traits = p.name, p.traits
    if name in _PRODUCTS:
        return sum(linear) > 1
    if name == "div":
        return linear[1]
    if name == "where":
        return linear[0]
    if name in _SOLVES:
        return any(linear[:-1])
    if name == "astype":
        return not node.outputs[0].type.dtype.is_inexact  # rounding to an int or a bool
    if name in _NONLINEAR:
        return True
    if "linear" in traits or name == "complex":
        return False
    # (stop_gradient is the identity going forward, but the transpose, taken from its derivative,
    # would be 0: nonlinear here, as every elementwise primitive not marked linear)
    return "elementwise" in traits or "comparison" in traits or "reduction" in traits


def nonlinear_use(region: Graph, tangent_inputs, outputs) -> Node | None:
    """The first node of `region` that uses a value depending on the inputs at `tangent_inputs`
    nonlinearly and whose result reaches an output at `outputs`; None if there is none."""
    state: dict = {}  # value -> None (independent), "lin" or the offending node
    for k in tangent_inputs:
        state[region.inputs[k]] = "lin"
    for node in region.nodes:
        ins = [state.get(v) for v in node.inputs]
        if all(s is None for s in ins):
            continue
        bad = next((s for s in ins if isinstance(s, Node)), None)
        if bad is None and _nonlinear(node, [s == "lin" for s in ins]):
            bad = node
        for o in node.outputs:
            state[o] = bad if bad is not None else "lin"
    for k in outputs:
        s = state.get(region.outputs[k])
        if isinstance(s, Node):
            return s
    return None
