"""Cell: the base class of models (define `construct`; calling a cell calls it).

Parameters assigned as attributes (or inside child cells) are registered in definition order and
named by their attribute path ("fc1.weight"), unless they were given a name explicitly.
"""
from __future__ import annotations

from collections import OrderedDict

from .parameter import Parameter


class Cell:
    """Base class of layers and models."""

    def __init__(self, auto_prefix: bool = True):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_cells", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            # subclasses that forget super().__init__() still work
            Cell.__init__(self)
        params, cells = self.__dict__["_params"], self.__dict__["_cells"]
        params.pop(name, None)
        cells.pop(name, None)
        if isinstance(value, Parameter):
            if value.name in ("Parameter", None):
                value.name = name
            params[name] = value
        elif isinstance(value, Cell):
            cells[name] = value
        object.__setattr__(self, name, value)

    def construct(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define construct()")

    def __call__(self, *args, **kwargs):
        return self.construct(*args, **kwargs)

    def parameters_and_names(self, prefix: str = ""):
        """(qualified name, Parameter) pairs, depth first, each Parameter once."""
        seen = set()
        for name, p in self.__dict__.get("_params", {}).items():
            if id(p) not in seen:
                seen.add(id(p))
                yield (prefix + name, p)
        for cname, c in self.__dict__.get("_cells", {}).items():
            for n, p in c.parameters_and_names(prefix + cname + "."):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (n, p)

    def get_parameters(self):
        for _, p in self.parameters_and_names():
            yield p

    def trainable_params(self) -> list[Parameter]:
        """Parameters with requires_grad, in registration order."""
        return [p for p in self.get_parameters() if p.requires_grad]

    def untrainable_params(self) -> list[Parameter]:
        return [p for p in self.get_parameters() if not p.requires_grad]

    def parameters_dict(self) -> "OrderedDict[str, Parameter]":
        return OrderedDict(self.parameters_and_names())

    def cells_and_names(self, prefix: str = ""):
        yield (prefix.rstrip("."), self)
        for name, c in self.__dict__.get("_cells", {}).items():
            yield from c.cells_and_names(prefix + name + ".")

    def set_train(self, mode: bool = True) -> "Cell":
        for _, c in self.cells_and_names():
            object.__setattr__(c, "training", mode)
        return self

    def __repr__(self):
        kids = "".join(f"\n  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in self.__dict__.get("_cells", {}).items())
        return f"{type(self).__name__}<{self.extend_repr()}>{kids}"

    def extend_repr(self) -> str:
        return ""
