"""The errors of a compiled or loaded function (`gd.jit(f).lower(...).compile()`, `gd.load`), from a
new user's trial of the AOT path: each names the function (and the artifact a loaded one came
from), the argument by position and name, what it got and what it expects, and what to do.

1. vmap/grad/jit/jacrev of a compiled function: opaque, transform the Python function first
   (not the tracer's "use gd.cond" advice, which does not apply).
2. pickle: an ArgumentError (a TypeError, as pickle's own refusals) saying to send the artifact's
   path and gd.load it there (not an error deep inside tvm-ffi).
3. a Python list where a tensor goes: said in words, not as a tree of stars.
4. save() into a directory that does not exist: the path given, not the temporary file's name.
5. a str argument: the message names the function.
"""
from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest

import graphad as gd
from graphad import ops
from graphad.errors import ArgumentError, ArtifactError, GraphadError, TraceError

pytestmark = pytest.mark.tvm


def scale_add(x, b):
    return ops.sin(x) * 2.0 + b


def with_params(p, x):
    return p["w"] * x + p["b"][0]


@pytest.fixture(scope="module")
def fns(tmp_path_factory):
    """The compiled scale_add, the same loaded from an artifact, and the artifact's path."""
    prev = gd.get_backend()
    gd.set_backend("tvm")
    try:
        compiled = gd.jit(scale_add).lower(gd.TensorSpec((3,)), gd.TensorSpec((3,))).compile()
    finally:
        gd.set_backend(prev)
    path = str(tmp_path_factory.mktemp("artifacts") / "scale_add.gdx")
    compiled.save(path)
    return {"compiled": compiled, "loaded": gd.load(path), "path": path}


def _args():
    return gd.Tensor(np.linspace(-1, 1, 3, dtype=np.float32)), gd.Tensor(np.ones(3, np.float32))


TRANSFORMS = {
    "vmap": lambda fn, x, b: gd.vmap(fn)(gd.Tensor(np.ones((2, 3), np.float32)), gd.Tensor(np.ones((2, 3), np.float32))),
    "grad": lambda fn, x, b: gd.grad(lambda x, b: fn(x, b).sum())(x, b),
    "jit": lambda fn, x, b: gd.jit(fn)(x, b),
    "jacrev": lambda fn, x, b: gd.jacrev(fn)(x, b),
}


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_a_transformation_of_a_compiled_function_says_it_is_opaque_and_to_transform_first(fns, kind, transform):
    fn = fns[kind]
    with pytest.raises(TraceError) as e:
        TRANSFORMS[transform](fn, *_args())
    msg = str(e.value)
    assert msg.startswith("scale_add")
    assert f"a {kind} function is opaque to gd.vmap, gd.grad, gd.jit, gd.jacrev" in msg
    assert "argument 0 (x) is a traced f32[3]" in msg
    assert "transform the Python function scale_add" in msg and "gd.jit(gd.vmap(scale_add)).lower(...).compile()" in msg
    assert "gd.cond" not in msg  # the tracer's advice for Python control flow does not apply
    if kind == "loaded":
        assert f"(loaded from {fns['path']!r})" in msg
        assert ".save(path)) and gd.load the new artifact" in msg


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
def test_pickling_a_compiled_function_says_to_send_the_path_and_gd_load_it(fns, kind):
    fn = fns[kind]
    for attempt in (pickle.dumps, copy.deepcopy):
        with pytest.raises(ArgumentError) as e:
            attempt(fn)
        assert isinstance(e.value, TypeError)  # what pickle raises for what it cannot pickle
        msg = str(e.value)
        assert msg.startswith("scale_add")
        assert f"a {kind} function cannot be pickled" in msg
        assert "call gd.load(path) in that process" in msg
        if kind == "loaded":
            assert f"send the artifact's path {fns['path']!r}" in msg
        else:
            assert "save it first (compiled.save(path))" in msg
    # a shallow copy still works (it shares the compiled code)
    x, b = _args()
    np.testing.assert_array_equal(copy.copy(fn)(x, b).asnumpy(), fn(x, b).asnumpy())


def test_the_advice_for_another_process_works_with_the_artifacts_bytes(fns, tmp_path):
    """What the pickling error says: the artifact's bytes, written to a file there, gd.load them."""
    with open(fns["path"], "rb") as f:
        blob = f.read()
    there = tmp_path / "received.gdx"
    there.write_bytes(blob)
    x, b = _args()
    np.testing.assert_array_equal(gd.load(str(there))(x, b).asnumpy(), fns["compiled"](x, b).asnumpy())


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
def test_a_list_argument_is_refused_in_words_not_as_a_tree(fns, kind):
    fn = fns[kind]
    x, b = _args()
    with pytest.raises(GraphadError) as e:
        fn([1.0, 2.0, 3.0], b)
    msg = str(e.value)
    assert msg.startswith("scale_add")
    assert ("argument 0 (x): got a list of 3 elements; expected a Tensor or array of shape (3,) float32"
            in msg)
    assert "convert it first, e.g. gd.Tensor(value, gd.float32)" in msg
    assert "*" not in msg
    with pytest.raises(GraphadError) as e:
        fn(x, None)
    assert "argument 1 (b): got None; expected a Tensor or array of shape (3,) float32" in str(e.value)
    # the advice works
    np.testing.assert_array_equal(fn(gd.Tensor([1.0, 2.0, 3.0], gd.float32), b).asnumpy(),
                                  fn(gd.Tensor(np.array([1.0, 2.0, 3.0], np.float32)), b).asnumpy())


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
def test_a_wrong_number_of_arguments_shows_the_signature_not_a_tree(fns, kind):
    with pytest.raises(GraphadError) as e:
        fns[kind](_args()[0])
    msg = str(e.value)
    assert "takes 2 positional argument(s), got 1; it was compiled as scale_add(x: f32[3], b: f32[3])" in msg
    assert "*" not in msg


def test_a_structured_argument_names_the_place_inside_it(tmp_path):
    gd.set_backend("tvm")
    w = gd.Tensor(np.ones(3, np.float32))
    compiled = gd.jit(with_params).lower({"w": w, "b": (w,)}, w).compile()
    path = str(tmp_path / "with_params.gdx")
    compiled.save(path)
    for fn in (compiled, gd.load(path)):
        with pytest.raises(GraphadError) as e:
            fn({"w": w, "b": [w]}, w)
        msg = str(e.value)
        assert "with_params" in msg
        assert ("argument 0 (p)['b']: got a list of 1 element; expected a tuple of 1 element; it was compiled "
                "as with_params(p: {'b': (f32[3],), 'w': f32[3]}, x: f32[3])") in msg
        with pytest.raises(GraphadError, match=r"argument 0 \(p\)\['w'\]: got a list of 3 elements; expected a "
                                               r"Tensor or array of shape \(3,\) float32"):
            fn({"w": [1.0, 2.0, 3.0], "b": (w,)}, w)
        with pytest.raises(GraphadError, match=r"argument 0 \(p\): got a dict with keys \['w'\]; expected a dict "
                                               r"with keys \['b', 'w'\]"):
            fn({"w": w}, w)


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
def test_save_into_a_missing_directory_names_the_path_given(fns, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError) as e:
        fns[kind].save("missing_dir/f.gdx")
    msg = str(e.value)
    assert msg.startswith("scale_add: cannot save the artifact 'missing_dir/f.gdx'")
    assert f"the directory {str(tmp_path / 'missing_dir')!r} does not exist; create it first" in msg
    assert ".tmp" not in msg
    assert os.listdir(tmp_path) == []


def test_save_that_cannot_write_names_the_path_and_leaves_no_temporary_file(fns, tmp_path):
    target = tmp_path / "a_directory"
    target.mkdir()
    with pytest.raises(ArtifactError) as e:
        fns["compiled"].save(str(target))
    msg = str(e.value)
    assert msg.startswith(f"scale_add: cannot save the artifact {str(target)!r}: ")
    assert ".tmp" not in msg
    assert sorted(os.listdir(tmp_path)) == ["a_directory"]
    assert os.listdir(target) == []


@pytest.mark.parametrize("kind", ["compiled", "loaded"])
def test_a_str_argument_names_the_function_and_the_argument(fns, kind):
    fn = fns[kind]
    x, b = _args()
    with pytest.raises(GraphadError) as e:
        fn(x, "abc")
    msg = str(e.value)
    assert msg.startswith("scale_add")
    assert "argument 1 (b): got a str ('abc'); expected a Tensor or array of shape (3,) float32" in msg


def test_without_argument_names_the_errors_name_positions(tmp_path):
    """A function whose parameters are `*args`, or an artifact saved before the names were
    recorded (no names in its manifest): the errors give positions."""
    gd.set_backend("tvm")
    w = gd.Tensor(np.ones(3, np.float32))
    compiled = gd.jit(lambda *xs: xs[0] + xs[1]).lower(w, w).compile()
    assert compiled.arg_names == [None, None]
    with pytest.raises(GraphadError, match=r"<lambda>: argument 1: got a str \('abc'\); expected a Tensor"):
        compiled(w, "abc")
    named = gd.jit(scale_add).lower(w, w).compile()
    named.arg_names = None  # as an artifact of an earlier graphad
    named.save(str(tmp_path / "old.gdx"))
    loaded = gd.load(str(tmp_path / "old.gdx"))
    assert loaded.arg_names is None
    with pytest.raises(GraphadError, match=r"\.gdx'\): argument 1: got a list of 3 elements; expected a Tensor"):
        loaded(w, [1.0, 2.0, 3.0])
