"""ComplexPairRunner: a compiled real graph (passes/complex_split.py) called with complex tensors.

The compiled graph takes each complex input as two real inputs (real part, imaginary part) and
returns each complex output as two real outputs. The runner splits at the boundary (NumPy's
`.real`/`.imag` views copied into aligned contiguous buffers) and merges the outputs back into
complex arrays of the original dtype. `layout()` is the JSON-able record of the boundary that an
AOT artifact keeps in its manifest, and `from_layout` rebuilds the runner around a loaded
executable.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..errors import ArtifactError
from ..tensor import Tensor, aligned_copy, aligned_empty


class ComplexPairRunner:
    """Runs `inner` (an Executable or host program over the real-pair graph) on complex tensors."""

    def __init__(self, inner, inputs: list, outputs: list):
        self.inner = inner
        self.inputs = list(inputs)    # per original input: None or a complex dtype name
        self.outputs = list(outputs)  # per original output: likewise
        self._out_dtypes = [None if d is None else dt.as_dtype(d) for d in self.outputs]

    def __call__(self, flat_inputs) -> list:
        if len(flat_inputs) != len(self.inputs):
            from ..errors import GraphadError
            raise GraphadError(f"expected {len(self.inputs)} inputs, got {len(flat_inputs)}")
        args: list = []
        for x, d in zip(flat_inputs, self.inputs):
            if d is None:
                args.append(x)
                continue
            a = x._data if isinstance(x, Tensor) else np.asarray(x)
            if a.dtype != dt.as_dtype(d).np:
                from ..errors import GraphadError
                raise GraphadError(f"a complex input of this function is {d}, got an array of {a.dtype}")
            args.append(aligned_copy(a.real))
            args.append(aligned_copy(a.imag))
        flat = self.inner(args)
        out, k = [], 0
        for d in self._out_dtypes:
            if d is None:
                out.append(flat[k])
                k += 1
                continue
            re, im = flat[k], flat[k + 1]
            k += 2
            re = re._data if isinstance(re, Tensor) else np.asarray(re)
            im = im._data if isinstance(im, Tensor) else np.asarray(im)
            z = aligned_empty(re.shape, d.np)
            z.real = re
            z.imag = im
            out.append(Tensor._wrap(z, d))
        return out

    # what an AOT artifact records (frontend/jit.py: Compiled.save, gd.load)
    def layout(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs}

    @classmethod
    def from_layout(cls, inner, layout, path: str = "artifact") -> "ComplexPairRunner":
        try:
            ins, outs = list(layout["inputs"]), list(layout["outputs"])
            for d in ins + outs:
                if d is not None and not dt.as_dtype(d).is_complex:
                    raise ValueError(f"{d} is not a complex dtype")
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: malformed complex boundary in the manifest ({e})") from None
        return cls(inner, ins, outs)

    @property
    def report(self):
        return getattr(self.inner, "report", None)

    def __repr__(self):
        return f"<ComplexPairRunner over {self.inner!r}>"
