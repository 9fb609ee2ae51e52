"""Cell: the base class of models (define `construct`; calling a cell calls it).

Parameters assigned as attributes (or inside child cells) are registered in definition order and
named by their path, as MindSpore does: the cells' attribute names, then the Parameter's own name
(the one it was given, else its attribute name): "fc1.weight", "0.bias" in a SequentialCell,
"block.fc.weight" deeper down. So the names of `trainable_params()` are unique, and `return_ids`
is unambiguous. A Parameter reachable along several paths (shared) is named by the first one.

A subclass may define MindSpore's custom derivative `bprop(self, *inputs, out, dout)`, returning
one gradient per input: calling such a cell goes through `gd.custom_vjp`, so every transformation
uses it (docs/custom_derivatives.md).
"""
from __future__ import annotations

import functools
import weakref
from collections import OrderedDict

from ..frontend.autograph import convert
from ..errors import GraphadError, retold
from ..prims.trace import is_tracing, user_loc
from .parameter import Parameter
from ..tensor import Tensor, TensorMethods

# cell -> a weak reference to the outermost cell it was last named from (`Cell._name_parameters`);
# kept outside the cells so that they pickle (Dask ships them) and deepcopy as before
_ROOTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _mark_staged(cell) -> None:
    """Record that `cell` was called inside a traced function: its attributes (child cells,
    Parameters, settings such as a loss's reduction or an optimizer's learning rate) were read
    into a staged graph."""
    if not cell.__dict__.get("_staged", False):
        object.__setattr__(cell, "_staged", True)


def _forget_staged(cell, old=None) -> None:
    """An attribute of `cell` is being assigned or deleted (`old`: its value until now): if the
    cell was read into a staged graph (called, a method of it transformed, a container of it
    iterated), or the old value was (a Parameter captured, a child cell read), forget the staged
    graphs (as set_train does), so the next call of a gd.jit or a TrainOneStepCell traces again
    with the new structure instead of silently running the old one. Assignments made while
    tracing change nothing staged yet and forget nothing."""
    if is_tracing():
        return
    if cell.__dict__.get("_staged", False) or _was_read(old):
        from ..frontend.function import clear_staging_cache
        object.__setattr__(cell, "_staged", False)
        clear_staging_cache()


def _was_read(value, seen: set | None = None) -> bool:
    """Whether `value` (an attribute's old value) was read into a staged graph: a Parameter that a
    trace captured (`construct` read `self.fc.weight` without calling `self.fc`), or a cell of
    which any part was."""
    if isinstance(value, Parameter):
        return getattr(value, "_staged", False)
    if isinstance(value, Cell):
        seen = set() if seen is None else seen
        if id(value) in seen:  # (a cell reachable twice, or a cycle)
            return False
        seen.add(id(value))
        if value.__dict__.get("_staged", False):
            return True
        return any(_was_read(v, seen) for v in list(value.__dict__.get("_params", {}).values())
                   + list(value.__dict__.get("_cells", {}).values()))
    return False


class Cell:
    """Base class of layers and models: subclass it, assign Parameters and child Cells as
    attributes in `__init__` (after `super().__init__()`), and define `construct`; calling the
    cell calls `construct`.

    Parameters are registered in assignment order and named by their path ("fc1.weight",
    "0.bias" in a SequentialCell). `auto_prefix=False` keeps this cell's attribute names out of
    the names of the Parameters below it (as TrainOneStepCell and the optimizers do, so a model
    keeps its names). A subclass may define MindSpore's custom derivative
    `bprop(self, *inputs, out, dout)`, returning one gradient per input, which every
    transformation then uses (docs/custom_derivatives.md).

    Attributes are read while a function is traced. Assigning or deleting an attribute of a cell
    that a traced function called (a child cell, a Parameter, a setting) therefore makes the
    staged functions trace again at their next call, as `set_train` does."""

    def __init_subclass__(cls, **kwargs):
        # graphad's own layers: a GraphadError of the constructor (a size, a padding) names the
        # user's line, as an op's does (it named none: `nn.Conv1d(3, 4, 3, padding=(1, 2, 3))`)
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or not cls.__module__.startswith("graphad."):
            return

        @functools.wraps(init)
        def located_init(self, *args, **kw):
            try:
                return init(self, *args, **kw)
            except GraphadError as e:
                loc = user_loc()
                if loc is None or " (at " in str(e):
                    raise
                again = retold(e, f"{e} (at {loc})")
                if again is None:
                    raise
                raise again.with_traceback(e.__traceback__) from e.__cause__
        cls.__init__ = located_init

    def __init__(self, auto_prefix: bool = True):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_cells", OrderedDict())
        object.__setattr__(self, "training", True)
        # the path of this cell in the outermost cell it was assigned into ("" at the top, "fc1."
        # below); its parameters' names start with it
        object.__setattr__(self, "_prefix", "")
        # False: this cell's children are not prefixed with their attribute names (MindSpore's
        # auto_prefix; train-step cells and optimizers use it so a model keeps its names)
        object.__setattr__(self, "_auto_prefix", bool(auto_prefix))

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            # subclasses that forget super().__init__() still work
            Cell.__init__(self)
        if isinstance(value, TensorMethods) and not isinstance(value, Tensor):
            # a traced value kept by the cell outlives its trace: `self.w = self.w + 1` in a
            # jitted construct left a tracer where the Parameter was (gone from the parameters,
            # later calls on the stale graph, then an escaped-tracer error: a mutation trial)
            from ..errors import TraceError
            loc = user_loc()
            how = (f"give the Parameter its new value with ops.assign(self.{name}, ...)"
                   if isinstance(self.__dict__["_params"].get(name), Parameter) else
                   "keep it in a local variable, or return it")
            raise TraceError(f"{type(self).__name__}.{name} = a traced value ({value.dtype.name}"
                             f"{list(value.shape)}) while tracing: the cell would keep it after the trace "
                             f"ends; {how}" + (f" (at {loc})" if loc else ""))
        _forget_staged(self, self.__dict__.get(name))
        params, cells = self.__dict__["_params"], self.__dict__["_cells"]
        # a Parameter replacing a Parameter (a Cell a Cell) keeps its place in the order, as in torch
        if not (isinstance(value, Parameter) and name in params):
            params.pop(name, None)
        if not (isinstance(value, Cell) and name in cells):
            cells.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Cell):
            cells[name] = value
        object.__setattr__(self, name, value)
        if isinstance(value, (Parameter, Cell)):
            # from the outermost cell this one was assigned into: a Parameter tied into a sibling
            # (`self.b.weight = self.a.weight`) keeps its first path, as parameters_and_names
            # (and so checkpoints) name it
            ref = _ROOTS.get(self)
            root = ref() if ref is not None else None
            if root is None or id(self) not in root._name_parameters():
                self._name_parameters()

    def __delattr__(self, name):
        _forget_staged(self, self.__dict__.get(name))
        self.__dict__.get("_params", {}).pop(name, None)
        self.__dict__.get("_cells", {}).pop(name, None)
        object.__delattr__(self, name)

    def _name_parameters(self) -> set[int]:
        """Name every Parameter under this cell by its path (from this cell's own prefix); the ids
        of the cells visited.

        Recomputed from the structure at each assignment, never by prepending to the current
        names, so re-assigning a cell cannot stack prefixes; a parent that assigns this cell
        later renames the whole subtree again with the longer prefix.
        """
        seen_params: set[int] = set()
        seen_cells: set[int] = set()
        root = weakref.ref(self)

        def walk(cell, prefix):
            seen_cells.add(id(cell))
            object.__setattr__(cell, "_prefix", prefix)
            if cell is not self:
                _ROOTS[cell] = root
            for attr, p in cell.__dict__.get("_params", {}).items():
                if id(p) not in seen_params:
                    seen_params.add(id(p))
                    p._name = prefix + (p._given or attr)
            auto = cell.__dict__.get("_auto_prefix", True)
            for cname, c in cell.__dict__.get("_cells", {}).items():
                if id(c) not in seen_cells:
                    walk(c, prefix + cname + "." if auto else prefix)

        walk(self, self.__dict__.get("_prefix", ""))
        return seen_cells

    def construct(self, *args, **kwargs):
        """The cell's computation, which every subclass defines: `cell(*args)` calls it. Inside a
        traced function (jit, grad, vmap...) Python `if`/`while`/`for` on tensors in it become
        graph control flow (docs/control_flow.md). Cell's own raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} must define construct()")

    def __call__(self, *args, **kwargs):
        tracing = is_tracing()
        if tracing:
            _mark_staged(self)
        try:
            if getattr(type(self), "bprop", None) is not None:
                # MindSpore's custom derivative rule: bprop(*inputs, out, dout) -> one gradient per
                # input; the call goes through custom_vjp (graphad/control/custom.py)
                from ..control.custom import call_cell_with_bprop
                return call_cell_with_bprop(self, args, kwargs)
            if tracing:
                # graph mode (traced by jit, grad, vmap...): Python if/while/for on tensors in
                # construct become cond/while_loop/scan (graphad/frontend/autograph.py); eagerly
                # they run as Python
                return convert(self.construct)(*args, **kwargs)
            return self.construct(*args, **kwargs)
        except GraphadError as e:
            # a layer's own refusal (Dense of an input whose last axis is not in_channels) names
            # the user's line, as an op's does; the innermost cell call adds it
            if "(at " not in str(e) and len(e.args) == 1 and isinstance(e.args[0], str):
                loc = user_loc()
                if loc is not None:
                    e.args = (f"{e.args[0]} (at {loc})",)
            raise

    def _graphad_mark_staged(self) -> None:
        """A transformed function is a method of this cell (`gd.jit(net.scaled)`): its attributes
        are read into the staged graph (frontend/function.py calls this when it traces)."""
        _mark_staged(self)

    def parameters_and_names(self, prefix: str = ""):
        """(qualified name, Parameter) pairs, depth first, each Parameter once."""
        seen = set()
        for name, p in self.__dict__.get("_params", {}).items():
            if id(p) not in seen:
                seen.add(id(p))
                yield (prefix + (p._given or name), p)  # the name Cells give it (p.name at the top)
        auto = self.__dict__.get("_auto_prefix", True)
        for cname, c in self.__dict__.get("_cells", {}).items():
            for n, p in c.parameters_and_names(prefix + cname + "." if auto else prefix):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (n, p)

    def get_parameters(self):
        """Every Parameter of this cell and the cells below it, trainable or not, depth first,
        each once: a generator (parameters_and_names without the names)."""
        for _, p in self.parameters_and_names():
            yield p

    def trainable_params(self) -> list[Parameter]:
        """Parameters with requires_grad, in registration order."""
        return [p for p in self.get_parameters() if p.requires_grad]

    def untrainable_params(self) -> list[Parameter]:
        """Parameters with requires_grad=False (BatchNorm2d's moving statistics, Dropout's seed),
        in registration order."""
        return [p for p in self.get_parameters() if not p.requires_grad]

    def parameters_dict(self) -> "OrderedDict[str, Parameter]":
        """An ordered dict qualified name -> Parameter of every Parameter, as parameters_and_names
        yields them."""
        return OrderedDict(self.parameters_and_names())

    def cells_and_names(self, prefix: str = ""):
        """(name, cell) pairs of this cell and every cell below it, depth first: this cell first,
        named `prefix` without its trailing "." ("" by default), then each child by its path
        ("0", "fc1", "block.fc"). `prefix` is put before the children's paths as it is, so end
        it with ".". A cell held under several names is listed under each."""
        yield (prefix.rstrip("."), self)
        for name, c in self.__dict__.get("_cells", {}).items():
            yield from c.cells_and_names(prefix + name + ".")

    def set_train(self, mode: bool = True) -> "Cell":
        """Training (True) or evaluation mode for this cell and every cell below it; returns the cell.

        The mode (`cell.training`) is a Python value, read when a function is traced. So a change
        of mode makes every staged function trace again at its next call: a gd.jit of the cell
        then runs in the new mode (compiled code is reused from the compile cache when the graph
        is one compiled before). Dropout and BatchNorm2d behave differently in the two modes."""
        changed = False
        for _, c in self.cells_and_names():
            changed |= c.__dict__.get("training") != bool(mode)
            object.__setattr__(c, "training", bool(mode))
        if changed:
            from ..frontend.function import clear_staging_cache
            clear_staging_cache()
        return self

    def __repr__(self):
        kids = "".join(f"\n  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in self.__dict__.get("_cells", {}).items())
        return f"{type(self).__name__}<{self.extend_repr()}>{kids}"

    def extend_repr(self) -> str:
        """The text the cell's repr shows between its "<>" (its settings, e.g. Dense's channels):
        override it in a subclass; Cell's is empty."""
        return ""
