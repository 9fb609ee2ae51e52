"""graphad's differential fuzzer: random well-typed programs, checked against independent oracles.

* `gen`       hypothesis strategies of `Program`s (an IR graph, its inputs, how to draw more);
* `gen_control` the moves that make control flow and regions (cond, scan, while_loop,
              checkpoint, custom_jvp/vjp), registered on `gen`'s generator;
* `compare`   array comparison with dtype-aware tolerances and IEEE kinds (NaN, +-inf, -0.0);
* `sandbox`   runs compiled code in a forked child with CPU-time, wall-time and memory budgets,
              so a compile that never finishes or a kernel that crashes is a failure, not a hang;
* `check`     the four checks of a program: (a) compiled vs the NumPy interpreter, twice, with
              poisoned memory and guarded inputs, within compile-time and code-size budgets;
              (b) derivatives vs central differences; (c) forward vs reverse mode
              (<u, J v> == <J^T u, v>); (d) vmap vs a per-example loop;
* `fixtures`  failures saved as IR text + inputs under tests/fuzz_fixtures/ and replayed;
* `known`     disagreements already filed (pending fixtures) that the CI profile tolerates;
* `jax_oracle` the same graphs evaluated with JAX (GRAPHAD_FUZZ_ORACLE=jax);
* `runner`    the CI profile's session and `make fuzz`: a long run that counts programs and
              disagreements;
* `handmade`  a hand-written half-writing kernel, the unit test of poison mode.
"""

from . import gen_control  # noqa: E402,F401  (registers the control-flow moves on the generator)
