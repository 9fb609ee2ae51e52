"""Every public op refuses bad arguments with a GraphadError that names the op the user called.

A sweep calls each function of graphad.ops and graphad.ops.linalg with combinations of ordinary
and wrong arguments (a tensor where an axis goes, a string where a number goes, None, negative
and too large integers): whatever it raises must be a GraphadError naming that op and the line
of the call. Before, 70 functions let Python's or NumPy's own error escape (`len() of a 0-d
tensor`, `The truth value of an array ... is ambiguous`, pinv's IndexError on a vector), sort,
argsort, top_k, topk, median and quantile were never wrapped (their errors had no op and no
line), and an op written with others named the inner op (clip said `maximum`, assign said
`broadcast_to`, dense said `matmul`).
"""
from __future__ import annotations

import inspect
import itertools
import warnings

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import ArgumentError, GraphadError, ShapeError

THIS_FILE = __file__.rsplit("/", 1)[-1]


def _values():
    return {
        "t23": gd.Tensor(np.ones((2, 3), np.float32)),
        "t4": gd.Tensor(np.arange(4, dtype=np.float32)),
        "i3": gd.Tensor(np.arange(3, dtype=np.int32)),
        "s": gd.Tensor(np.float32(2.0)),
        "str": "abc", "none": None, "neg": -1, "big": 7, "f": 0.5, "tup": (1, 5), "b": True,
    }


def _public_ops():
    for prefix, mod in (("", ops), ("linalg.", ops.linalg)):
        for name, f in sorted(vars(mod).items()):
            if name.startswith("_") or not inspect.isfunction(f) or name == "set_seed":
                continue
            yield prefix + name, f


def test_every_public_op_is_wrapped():
    """Each public function of graphad.ops (and ops.linalg) names itself in its errors; a helper
    that is not an op (axis normalisation for user code; ops.linalg's import of the shape helper)
    is listed here."""
    helpers = {"norm_axes", "norm_axis", "linalg.broadcast_shapes"}
    unwrapped = [n for n, f in _public_ops() if not getattr(f, "__wrapped_op__", False) and n not in helpers]
    assert unwrapped == []


def test_bad_arguments_raise_located_graphad_errors():
    values = _values()
    swept, raised, bad = 0, 0, []
    for name, f in _public_ops():
        if not getattr(f, "__wrapped_op__", False):
            continue
        sig = inspect.signature(f.__wrapped__)
        params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:3]
        if not params:
            continue
        swept += 1
        op = name.rsplit(".", 1)[-1]
        for combo in itertools.product(values, repeat=len(params)):
            if combo[0] not in ("t23", "t4", "i3", "s"):
                continue
            args = [values[c] for c in combo]
            try:
                sig.bind(*args)
            except TypeError:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    f(*args)
            except GraphadError as e:
                raised += 1
                msg = str(e)
                if not (msg.startswith(f"{op}(") or msg.startswith(f"{f.__wrapped__.__name__}(")) \
                        or f"{THIS_FILE}:" not in msg:
                    bad.append(f"{name}{combo}: {msg[:160]}")
            except Exception as e:  # noqa: BLE001 - what the test is looking for
                bad.append(f"{name}{combo}: {type(e).__name__}: {str(e)[:160]}")
    assert swept > 150 and raised > 1000, (swept, raised)
    assert bad == [], "\n".join(bad[:40])


def test_python_errors_become_argument_errors():
    """Python's refusal, under the op's name and the user's line; still a TypeError/ValueError."""
    x = gd.Tensor(np.ones((2, 3), np.float32))
    with pytest.raises(ArgumentError, match=r"^sum\(f32\[2,3\], axis=i64\[\]\): TypeError: len\(\) of a 0-d tensor "
                                            rf"\(at .*{THIS_FILE}:\d+\)$") as info:
        ops.sum(x, axis=gd.Tensor(1))
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, TypeError)  # Python's own error, chained
    with pytest.raises(ArgumentError, match=r"^softplus\(f32\[2,3\], f32\[2,3\]\): ValueError: The truth value"):
        ops.softplus(x, x)


@pytest.mark.parametrize("call, prefix", [
    (lambda x: ops.sort(x, axis=5), "sort(f32[2,3], axis=5): axis 5 is out of range"),
    (lambda x: ops.argsort(x, axis=-3), "argsort(f32[2,3], axis=-3): axis -3 is out of range"),
    (lambda x: ops.top_k(x, 7), "top_k(f32[2,3], 7): "),
    (lambda x: ops.topk(x, 7), "topk(f32[2,3], 7): "),
    (lambda x: ops.median(x, axis=4), "median(f32[2,3], axis=4): axis 4 is out of range"),
    (lambda x: ops.quantile(x, 1.5), "quantile(f32[2,3], 1.5): "),
    (lambda x: ops.clip(x, gd.Tensor(np.zeros(4, np.float32))), "clip(f32[2,3], f32[4]): maximum: shapes (2, 3) and (4,)"),
    (lambda x: ops.dense(x, gd.Tensor(np.ones((4, 5), np.float32))), "dense(f32[2,3], f32[4,5]): matmul: "),
    (lambda x: ops.softmax(x, axis=5), "softmax(f32[2,3], axis=5): axis 5 is out of range"),
    (lambda x: ops.linalg.pinv(x[0]), "pinv(f32[3]): a must have at least 2 axes"),
    (lambda x: ops.stack([]), "stack([]): stack of an empty sequence"),  # they raised IndexError
    (lambda x: ops.concatenate([]), "concat([]): concat of an empty sequence"),
    (lambda x: ops.einsum("ij"), "einsum('ij'): einsum: 'ij' names no operands"),
    (lambda x: ops.assign(gd.Parameter(np.ones(3, np.float32), name="w"), np.ones(4)),
     "assign(f32[3], ndarray f64[4]): broadcast_to: shapes (4,) and (3,)"),
])
def test_an_error_names_the_op_called(call, prefix):
    x = gd.Tensor(np.ones((2, 3), np.float32))
    with pytest.raises(GraphadError) as info:
        call(x)
    msg = str(info.value)
    assert msg.startswith(prefix) and f"{THIS_FILE}:" in msg, msg


def test_an_op_called_inside_an_op_is_named_when_called_itself():
    """The inner op keeps its own name where the user calls it, eagerly and inside a trace."""
    x = gd.Tensor(np.ones(3, np.float32))
    with pytest.raises(ShapeError, match=r"^maximum\(f32\[3\], f32\[4\]\): shapes"):
        ops.maximum(x, gd.Tensor(np.ones(4, np.float32)))
    with pytest.raises(ShapeError, match=r"^clip\(f32\[3\], f32\[4\]\): maximum: "):
        gd.jit(lambda a, b: ops.clip(a, b))(x, gd.Tensor(np.ones(4, np.float32)))
    # a failed call leaves no op "under way": the next error is named by its own op again
    with pytest.raises(ShapeError, match=r"^maximum\("):
        ops.maximum(x, gd.Tensor(np.ones(4, np.float32)))


def test_the_line_names_the_file_relative_to_the_working_directory_of_the_moment(monkeypatch, tmp_path):
    """The user's file is named relative to the working directory when it lies below it (the
    paths are kept per directory: a program that changes directory gets the new one's)."""
    import os
    x = gd.Tensor(np.ones((2, 3), np.float32))
    here = os.path.abspath(__file__)
    msgs = []
    for where in (os.path.dirname(here), str(tmp_path), os.path.dirname(here)):
        monkeypatch.chdir(where)
        with pytest.raises(GraphadError) as info:
            ops.sum(x, axis=5)
        msgs.append(str(info.value))
    assert f"(at {THIS_FILE}:" in msgs[0] and f"(at {THIS_FILE}:" in msgs[2]
    assert f"(at {here}:" in msgs[1]
