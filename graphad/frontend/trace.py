"""graphad.frontend.trace: the front end's name for the trace stack, tracers and `bind`.

They live in graphad.prims.trace (the prims layer: rules, the passes and the eager path bind
through them, and those layers sit below the front end); this module re-exports them so that
`graphad.frontend.trace.user_loc`, `Trace`, `trace_to_graph`... stay where users and tests find
them. A re-export from a lower layer, never the other way round.
"""
from ..prims.trace import (_STATE, Trace, Tracer, bind, current_trace, inline_graph, is_tracing,  # noqa: F401
                           run_impl, trace_to_graph, user_loc)
