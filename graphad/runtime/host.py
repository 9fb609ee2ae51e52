"""Compiled graphs with control flow: native loops where they qualify, the host elsewhere.

A loop (`scan`, or `fori_loop` and `while_loop` built on scan and while_loop) whose regions are
straight-line graphs compiles natively (lowering/native_loop.py): one TIR PrimFunc runs every step
around the region's scheduled kernels, so a call costs one trip into native code whatever the
trip count. Such a loop is an ordinary node of the graph being compiled: a graph whose control
nodes are all native loops compiles as one executable (`compile_control_flow`), like any
straight-line graph, through the same memory, disk and kernel caches.

Everything else (`cond`, a loop with nested control flow or a body over
native_loop.NATIVE_MAX_NODES nodes, bfloat16, a target other than the host CPU, a region the
native lowering refuses, or `GRAPHAD_NATIVE_LOOPS=0`) runs on the host: the graph is split at
those nodes. Every maximal run of other nodes (native loops included) becomes one segment graph,
and every region of a host control node is a graph of its own; each is compiled once, through the
executable caches, so the program compiles once whatever the trip counts, and a region seen
before (another call site, a later model) is a cache hit. At call time the host runs the segments
in order and, at a control node, decides which branch runs or whether the loop goes on (one
scalar read per decision) and calls the region's executable: one compiled call per loop step (a
scan call runs up to 16 body copies, `unroll_plan`). A segment whose native loop the lowering
refuses is itself run as a host program (its loops on the host). GRAPHAD_LOG_COMPILE=1 shows the
choice per loop (`loops ...` in the compile's header).

Why loops are not Relax: TVM 0.27's Relax has no loop; a loop written as a recursive Relax
function overflows the C++ stack after about 2,000 steps (a segfault, measured), and its calls
cost about 10 us per step. TIR has `For` and `While`, which is what the native loops use.
"""
from __future__ import annotations

import numpy as np

from ..errors import CompileError, GraphadError, warn_at_user_line
from ..ir.core import Graph, Node, Value
from ..passes.rewrite import extract_subgraph as _subgraph
from ..tensor import Tensor

CONTROL = "control"


def has_control_flow(graph: Graph) -> bool:
    """Whether any node of `graph` is a control-flow primitive."""
    return any(CONTROL in n.prim.traits for n in graph.nodes)


def _compile_region(graph: Graph, target):
    from ..passes.manager import run_default_pipeline
    from .executable import compile_graph
    return compile_graph(run_default_pipeline(graph), target)


# ---------------------------------------------------------------- native loops

# the innermost `native_loops(...)` setting, per thread and task (None: the environment decides)
from .._switches import NATIVE_LOOPS as _NATIVE_OVERRIDE
from .._switches import native_loops_enabled  # noqa: F401  (re-exported)


class native_loops:
    """`with native_loops(False):` compiles every loop on the host path inside the block (to
    compare the two paths, or to measure the host path); `native_loops(True)` the other way.
    The setting is part of every transformed function's staging key: a function called outside
    the block is staged again inside it, and a build serves only calls under the setting it was
    made with."""

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._tokens: list = []

    def __enter__(self):
        self._tokens.append(_NATIVE_OVERRIDE.set(self.enabled))
        return self

    def __exit__(self, *exc):
        _NATIVE_OVERRIDE.reset(self._tokens.pop())
        return False


def loop_choices(graph: Graph, target=None) -> dict[int, str | None]:
    """For each control node of `graph` (by position): None when it may compile natively, else
    why it runs on the host. Decided without compiling (lowering/native_loop.native_reason)."""
    from .cache import is_host_spec
    out: dict[int, str | None] = {}
    for k, n in enumerate(graph.nodes):
        if CONTROL not in n.prim.traits:
            continue
        if not native_loops_enabled():
            out[k] = "native loops are off (GRAPHAD_NATIVE_LOOPS=0 or native_loops(False))"
        elif not is_host_spec(target):
            out[k] = "native loops are compiled for the host CPU only"
        else:
            from ..lowering.native_loop import native_reason
            out[k] = native_reason(n)
    return out


def _describe(graph: Graph, choices: dict) -> str:
    return ", ".join(f"{graph.nodes[k].prim.name} " + ("native" if why is None else f"host ({why})")
                     for k, why in choices.items())


def compile_control_flow(graph: Graph, target=None, cache: bool = True):
    """What `executable.compile_graph` returns for a graph with control-flow nodes: one
    Executable when every control node is a loop that compiles natively, else a HostProgram
    (whose segments may hold native loops)."""
    from ..lowering import compile_log
    choices = loop_choices(graph, target)
    if choices and all(why is None for why in choices.values()):
        from ..lowering.native_loop import NativeLoopError, register
        register()
        try:
            if cache:
                from .cache import cached_compile
                exe = cached_compile(graph, target)
            else:
                from .executable import build_executable
                exe = build_executable(graph, target)
            compile_log.note("loops", _describe(graph, choices))
            if isinstance(getattr(exe, "report", None), dict):
                exe.report.setdefault("loops", _describe(graph, choices))
            return exe
        except CompileError as e:  # NativeLoopError, or a build TVM refused: the host path
            why = str(e) if isinstance(e, NativeLoopError) else f"the native build failed: {e}"
            why = why.splitlines()[0][:300] if why else type(e).__name__
            if not isinstance(e, NativeLoopError):
                # a loop graphad meant to compile natively did not build: results stay right (the
                # host path), but each step now pays a host round trip; that is a bug to report
                warn_at_user_line(f"graphad: the native build of {graph.name}'s loops failed ({why}); they "
                                  f"run on the host path instead (correct results, slower calls). Please "
                                  f"report it with the function that led here.")
            at = [k for k in choices if graph.nodes[k] is getattr(e, "node", None)]
            if at:  # that loop on the host; the others stay native in the segments around it
                prog = HostProgram(graph, target, native=set(choices) - set(at), reasons={at[0]: why})
            else:  # not one loop's fault: every loop on the host path
                prog = HostProgram(graph, target, native=set(), reasons={k: why for k in choices})
            compile_log.note("loops", prog.report["loops"])
            return prog
    prog = HostProgram(graph, target)
    compile_log.note("loops", prog.report["loops"])
    return prog


class HostProgram:
    """A graph with control-flow nodes, compiled as segments and regions; `prog(flat_inputs) ->
    list[Tensor]` like an Executable."""

    source = "compiled"

    def __init__(self, graph: Graph, target=None, *, provider=None, meta: dict | None = None,
                 native: set | None = None, reasons: dict | None = None):
        """Compile `graph`'s segments and regions for `target`; with `provider` (role -> an
        executable loaded from an AOT artifact, `from_tree`) and `meta`, compile nothing.
        `native`: positions of the loop nodes that stay in their segment as native loops
        (default: those `loop_choices` allows; with a provider, those the artifact says);
        `reasons`: why some loops run on the host after all (for the report)."""
        self.graph = graph
        self.target = target
        self._provider = provider
        choices = loop_choices(graph, target) if provider is None else {}
        choices.update(reasons or {})
        if native is None:
            native = {k for k, why in choices.items() if why is None} if provider is None else set()
        self.native = set(native)
        if self.native:
            from ..lowering.native_loop import register
            register()
        self.pieces: list = []  # (role, executable) in construction order: what an artifact stores
        self.steps: list = []  # ("run", exe, in_values, out_values) | ("control", node, executables)
        later_use: dict[Value, int] = {}
        for k, n in enumerate(graph.nodes):
            for v in n.inputs:
                later_use[v] = k
        for v in graph.outputs:
            later_use[v] = len(graph.nodes)
        run: list[Node] = []
        run_at: list[int] = []  # the positions of `run`'s nodes in graph.nodes
        fell_back: dict[int, str] = {}  # native loop -> why its segment became a host program

        def close(end: int):
            if not run:
                return
            defined = {o for n in run for o in n.outputs}
            ins, seen = [], set()
            for n in run:
                for v in n.inputs:
                    if v not in defined and v not in seen:
                        seen.add(v)
                        ins.append(v)
            outs = [o for n in run for o in n.outputs if later_use.get(o, -1) >= end]
            if outs:
                g = _subgraph(f"{graph.name}_seg{len(self.steps)}", list(run), ins, outs)
                exe = self._piece("segment", g)
                self.steps.append(("run", exe, ins, outs))
                if isinstance(exe, HostProgram):  # the native lowering refused one of its loops
                    for k in run_at:
                        if k in self.native:
                            fell_back[k] = f"its segment runs as a host program: {exe.report.get('loops')}"
            run.clear()
            run_at.clear()

        for k, n in enumerate(graph.nodes):
            if CONTROL in n.prim.traits and k not in self.native:
                close(k)
                self.steps.append(("control", n, self._regions(n)))
            else:
                run.append(n)
                run_at.append(k)
        close(len(graph.nodes))
        if meta is not None:
            self.meta = dict(meta)
        else:
            from ..lowering.targets import resolve_target
            from .executable import graph_meta
            # the description an Executable has (the outputs are fresh buffers: nothing to copy)
            self.meta = {**graph_meta(graph, [False] * len(graph.outputs), resolve_target(target)),
                         "host_program": True}
        self.report = {"host_program": True, "segments": sum(1 for s in self.steps if s[0] == "run"),
                       "control_nodes": sum(1 for s in self.steps if s[0] == "control"),
                       "native_loops": len(self.native)}
        for k in self.native:
            choices[k] = fell_back.get(k)
        for k in choices:
            if k not in self.native and choices[k] is None:
                choices[k] = "not chosen"
        self.report["loops"] = _describe(graph, choices)

    def _piece(self, role: str, g: Graph):
        """The executable of segment or region `g`: compiled, or the next one of a loaded artifact
        (whose recorded role must be this one: the same graph gives the same sequence)."""
        exe = self._provider(role) if self._provider is not None else _compile_region(g, self.target)
        self.pieces.append((role, exe))
        return exe

    def export_tree(self, libs: list) -> dict:
        """This program as JSON (graph text, meta, and per piece its role and either the index of
        its library, appended to `libs`, or a nested program): what an AOT artifact stores."""
        from ..ir.printer import print_graph
        pieces = []
        for role, exe in self.pieces:
            if isinstance(exe, HostProgram):
                pieces.append({"role": role, "host": exe.export_tree(libs)})
            else:
                libs.append(exe.library_bytes())
                pieces.append({"role": role, "lib": len(libs) - 1, "signature": exe.meta})
        tree = {"graph": print_graph(self.graph), "meta": self.meta, "pieces": pieces}
        if self.native:  # loops compiled inside segments (absent in artifacts older than native loops)
            tree["native"] = sorted(self.native)
        return tree

    @classmethod
    def from_tree(cls, tree: dict, load_lib) -> "HostProgram":
        """The program `export_tree` wrote, its pieces made by `load_lib(index, signature)` (no
        compiling); GraphadError when the recorded pieces do not fit the graph."""
        from ..ir.parser import parse_graph
        graph = parse_graph(tree["graph"])
        pieces = iter(tree["pieces"])

        def provide(role):
            p = next(pieces, None)
            if p is None or p.get("role") != role:
                raise GraphadError(f"the artifact's program pieces do not fit its graph (expected a {role}, "
                                   f"found {None if p is None else p.get('role')})")
            if "host" in p:
                return cls.from_tree(p["host"], load_lib)
            return load_lib(p["lib"], p["signature"])
        native = tree.get("native", [])
        if not isinstance(native, list) or not all(isinstance(k, int) and 0 <= k < len(graph.nodes)
                                                   and CONTROL in graph.nodes[k].prim.traits for k in native):
            raise GraphadError("the artifact's native loops do not fit its graph")
        prog = cls(graph, None, provider=provide, meta=tree["meta"], native=set(native))
        if next(pieces, None) is not None:
            raise GraphadError("the artifact holds more program pieces than its graph uses")
        return prog

    def _regions(self, node: Node) -> dict:
        """The compiled regions a control node runs. Loops get one region per step: a while
        step computes the body and the next decision in one call; a scan step slices its xs by
        a counter it carries itself, so the host neither slices nor counts."""
        from ..control import regions as R
        from ..prims import lax as ops
        a = node.attrs
        if node.prim.name == "cond":
            return {"branches": [self._piece(f"cond.branch{k}", b) for k, b in enumerate(a["branches"])]}
        if node.prim.name == "while_loop":
            cond, body, nc, nb = a["cond"], a["body"], a["n_cond"], a["n_body"]
            ctypes = list(cond.in_types[:nc])
            btypes = list(body.in_types[:nb])
            cartypes = list(body.in_types[nb:])

            def step(*x):
                cc, bc, car = x[:nc], x[nc:nc + nb], x[nc + nb:]
                new = R.call(body, list(bc) + list(car))
                return list(new) + list(R.call(cond, list(cc) + list(new)))
            w = R.make_region(f"{body.name}_step", ctypes + btypes + cartypes, step)
            return {"cond": self._piece("while.cond", cond), "step": self._piece("while.step", w)}
        if node.prim.name == "scan":
            body, nk, ncar, reverse = a["body"], a["n_consts"], a["n_carry"], a["reverse"]
            ktypes = list(body.in_types[:nk])
            cartypes = list(body.in_types[nk:nk + ncar])
            xtypes = [v.type for v in node.inputs[nk + ncar:]]
            from ..ir.core import TensorType
            from .. import dtypes as dt
            i32 = TensorType((), dt.int32)
            nx = len(xtypes)

            def make_step(k_steps: int):
                # k_steps copies of the body in one region: one host call (and, for an elementwise
                # body, one fused kernel) per k_steps steps; the ys of its steps come out stacked
                def step(*x):
                    k, xs, i, car = x[:nk], x[nk:nk + nx], x[nk + nx], list(x[nk + nx + 1:])
                    ys = []
                    for _ in range(k_steps):
                        out = R.call(body, list(k) + car + [ops.take_prim(v, i, 0) for v in xs])
                        car = list(out[:ncar])
                        ys.append(out[ncar:])
                        one = ops.constant(1, dt.int32)
                        i = ops.sub(i, one) if reverse else ops.add(i, one)
                    return [i] + car + [ops.stack([row[j] for row in ys], 0) for j in range(len(body.outputs) - ncar)]
                return R.make_region(f"{body.name}_step{k_steps}", ktypes + xtypes + [i32] + cartypes, step)

            if a["length"] == 0:
                # no step runs (_run_scan makes no call): none is built, since a step region
                # reads row i of each scanned input, and an axis of length 0 has no row to read
                return {"k": 1, "step": None}
            k_steps, rest = unroll_plan(body, a["length"])
            out = {"k": k_steps, "step": self._piece(f"scan.step{k_steps}", make_step(k_steps))}
            if rest:
                out["one"] = self._piece("scan.step1", make_step(1))
            return out
        raise GraphadError(f"internal: no host execution for control primitive {node.prim.name}")

    # ------------------------------------------------------------ calling
    def caller(self, n_args, captures, pack=None):
        return None  # the checked path (__call__) only

    def __call__(self, flat_inputs) -> list[Tensor]:
        g = self.graph
        if len(flat_inputs) != len(g.inputs):
            raise GraphadError(f"@{g.name} takes {len(g.inputs)} inputs, got {len(flat_inputs)}")
        env: dict[Value, Tensor] = {}
        for i, (v, a) in enumerate(zip(g.inputs, flat_inputs)):
            t = a if isinstance(a, Tensor) else Tensor(np.asarray(a), v.type.dtype)
            if t.shape != v.type.shape or t.dtype is not v.type.dtype:
                raise GraphadError(f"@{g.name} input {i} expects {v.type}, got {t.dtype.short}{list(t.shape)}")
            env[v] = t
        for step in self.steps:
            if step[0] == "run":
                _, exe, ins, outs = step
                for v, r in zip(outs, exe([env[v] for v in ins])):
                    env[v] = r
            else:
                _, node, exes = step
                res = _RUN[node.prim.name](node, exes, [env[v] for v in node.inputs])
                for v, r in zip(node.outputs, res):
                    env[v] = r
        return [env[v] for v in g.outputs]

    def export(self, path: str) -> str:
        raise GraphadError("a graph with control flow (cond, while_loop, scan) has no single library: save it "
                           "as an AOT artifact (gd.jit(f).lower(...).compile().save(path)), which holds one "
                           "library per segment and region")

    def library_bytes(self) -> bytes:
        raise GraphadError("a graph with control flow (cond, while_loop, scan) has no single library: save it "
                           "as an AOT artifact, which holds one library per segment and region")


class _Lean:
    """Calls of one compiled region with TVM tensors in and out (no Tensor wrapping, no checks):
    what a loop step costs besides the kernels themselves. None of these for an executable that
    is not a plain CPU one with unpacked, non-bfloat16 outputs (a nested host program, CUDA):
    the loops then call it the checked way."""

    __slots__ = ("fn", "get", "n", "single", "acquire", "release", "exe")

    @staticmethod
    def of(exe):
        from .. import dtypes as _dt
        if isinstance(exe, HostProgram) or getattr(exe, "_device_kind", None) != "cpu" or exe._packed is not None:
            return None
        if any(d is _dt.bfloat16 for d, _ in exe._out):
            return None
        lean = _Lean()
        # _run: the executable's thread policy (runtime/threads.py) applies to loop steps too
        lean.exe, lean.fn, lean.get, lean.n = exe, exe._run, exe._array_get, len(exe._out)
        lean.single = exe._single
        lean.acquire, lean.release = exe._acquire, exe._release
        return lean

    def dl(self, t: Tensor):
        """The TVM tensor for Tensor t (its cached view, else a view or an aligned copy)."""
        d = t._dl
        return d if d is not None else self.exe._tensor_arg(t)

    def __call__(self, args):
        self.acquire()
        try:
            res = self.fn(*args)
        except IndexError as e:  # a failed index check (lowering/index_check.py)
            from .executable import _kernel_error
            raise _kernel_error(e, self.exe.meta) from None
        finally:
            self.release()
        if self.single:
            return [res]
        get = self.get
        return [get(res, i) for i in range(self.n)]


def _own(dl, dtype) -> Tensor:
    """A Tensor owning a copy of TVM tensor dl (a loop's result may be a buffer of its input)."""
    from .executable import _host
    return Tensor._wrap(np.array(_host(dl)), dtype)


def _truth(dl) -> bool:
    from .executable import _host
    return bool(_host(dl).reshape(()).item())


def _scalar(t: Tensor):
    return np.asarray(t._data).reshape(()).item()


def _run_cond(node, exes, args):
    branches = exes["branches"]
    k = min(max(int(_scalar(args[0])), 0), len(branches) - 1)
    return branches[k](args[1:])


def _run_while(node, exes, args):
    a = node.attrs
    nc, nb, cap = a["n_cond"], a["n_body"], a["max_steps"]
    cc, bc, carry = args[:nc], args[nc:nc + nb], list(args[nc + nb:])
    cond, step = exes["cond"], exes["step"]
    n = len(carry)
    if not bool(_scalar(cond(cc + carry)[0])) or cap == 0:
        return carry
    lean = _Lean.of(step)
    if lean is None:
        steps = 0
        while True:
            out = step(cc + bc + carry)
            carry, steps = out[:n], steps + 1
            if not bool(_scalar(out[n])) or (cap is not None and steps >= cap):
                return carry
    fixed = [lean.dl(t) for t in cc + bc]
    state = [lean.dl(t) for t in carry]
    steps = 0
    while True:
        out = lean(fixed + state)
        state, steps = out[:n], steps + 1
        if not _truth(out[n]) or (cap is not None and steps >= cap):
            break
    return [_own(d, v.type.dtype) for d, v in zip(state, node.outputs)]


# The body copies one scan region holds: as many as fit in this many body nodes (the compile grows
# with it, the per-step host call and kernel launches shrink by it), at most UNROLL_MAX.
UNROLL_NODES = 192
UNROLL_MAX = 16


def unroll_plan(body: Graph, length: int) -> tuple[int, bool]:
    """(steps per region call, whether a one-step region runs the remainder) for a scan of `length`
    steps over `body`: a divisor of the length when one is at least half of the budget, so most
    loops need a single compiled region."""
    budget = max(1, min(UNROLL_MAX, UNROLL_NODES // max(_count_nodes(body), 1), length))
    div = max(d for d in range(1, budget + 1) if length % d == 0) if length else 1
    if 2 * div >= budget:
        return div, False
    return budget, True


def _count_nodes(g: Graph) -> int:
    """Nodes of g, those of the regions nested in its nodes included."""
    n = len(g.nodes)
    for node in g.nodes:
        for v in node.attrs.values():
            for sub in (v if isinstance(v, tuple) else (v,)):
                if isinstance(sub, Graph):
                    n += _count_nodes(sub)
    return n


def _run_scan(node, exes, args):
    a = node.attrs
    nk, nc, length, reverse = a["n_consts"], a["n_carry"], a["length"], a["reverse"]
    consts, carry, xs = args[:nk], list(args[nk:nk + nc]), args[nk + nc:]
    y_types = a["body"].out_types[nc:]
    i0 = Tensor._wrap(np.asarray(length - 1 if reverse else 0, np.int32))
    k_steps = exes["k"]
    calls = [(exes["step"], k_steps)] * (length // k_steps) + [(exes.get("one"), 1)] * (length % k_steps)
    from .executable import _host
    blocks = []  # per region call, the ys of its steps stacked, in execution order
    state = [i0] + carry
    leans = {id(exe): _Lean.of(exe) for exe in (exes["step"], exes.get("one")) if exe is not None}
    if not calls:
        carry_out = carry
    elif all(lean is not None for lean in leans.values()):
        lean0 = leans[id(calls[0][0])]
        fixed = [lean0.dl(t) for t in consts + xs]
        state = [lean0.dl(t) for t in state]
        for exe, _ in calls:
            out = leans[id(exe)](fixed + state)
            state = out[:1 + nc]
            blocks.append(out[1 + nc:])
        carry_out = [_own(d, v.type.dtype) for d, v in zip(state[1:], node.outputs[:nc])]
        blocks = [[_host(d) for d in row] for row in blocks]
    else:
        for exe, _ in calls:
            out = exe(consts + xs + state)
            state = out[:1 + nc]
            blocks.append([t._data for t in out[1 + nc:]])
        carry_out = state[1:]
    ys = []
    for j, t in enumerate(y_types):
        arr = np.empty((length,) + t.shape, t.dtype.np)
        pos = length - 1 if reverse else 0
        for row in blocks:
            block = np.asarray(row[j])
            if reverse:  # the block's steps visit pos, pos - 1, ...
                arr[pos - len(block) + 1:pos + 1] = block[::-1]
                pos -= len(block)
            else:
                arr[pos:pos + len(block)] = block
                pos += len(block)
        ys.append(Tensor._wrap(arr, t.dtype))
    return list(carry_out) + ys


_RUN = {"cond": _run_cond, "while_loop": _run_while, "scan": _run_scan}
