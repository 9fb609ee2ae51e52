"""The IR verifier: well-formed graphs pass; each broken invariant gives a precise VerifyError."""
from __future__ import annotations

import pytest

import graphad  # noqa: F401  (registers every primitive)
from graphad.errors import VerifyError
from graphad.ir.builder import GraphBuilder
from graphad.ir.core import Graph, Loc, Node, TensorType, Value
from graphad.ir.parser import parse_graph
from graphad.ir.verify import verify
from graphad.prims import PRIMITIVES
from graphad.prims.registry import Primitive


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


def chain() -> Graph:
    """x: f32[3] -> %0 = tanh(x) -> %1 = add(%0, y) -> %2 = sum(%1)."""
    b = GraphBuilder("chain")
    x = b.add_input(T(3), "x")
    y = b.add_input(T(3), "y")
    (t,) = b.emit(PRIMITIVES["tanh"], [x], {}, Loc("model.py", 7))
    (a,) = b.emit(PRIMITIVES["add"], [t, y], {}, Loc("model.py", 8))
    (s,) = b.emit(PRIMITIVES["sum"], [a], {"axes": (0,), "keepdims": False}, Loc("model.py", 9))
    return b.finish([s, a])


def verify_error(g: Graph) -> str:
    with pytest.raises(VerifyError) as ei:
        verify(g)
    return str(ei.value)


def test_well_formed_graphs_pass():
    verify(chain())
    verify(GraphBuilder("empty").finish([]))
    b = GraphBuilder("identity")
    x = b.add_input(T(2, 2), "x")
    verify(b.finish([x, x]))  # an input may be returned (twice)


def test_parsed_graph_passes():
    verify(parse_graph("""func @f(%x: f32[4,3]) -> (f32[3]) {
      %0 = exp(%x) : f32[4,3]
      %1 = max(%0) {axes=[0], keepdims=false} : f32[3]
      return %1
    }"""))


def test_use_before_definition():
    g = chain()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    msg = verify_error(g)
    # values are named as the printer would name them in the (broken) node order
    assert msg.startswith("verify @chain: node #0 (%0 = add(f32[3], f32[3]) at model.py:8): ")
    assert "operand 0 (%1: f32[3]) is used before its definition by node #1 (tanh)" in msg
    assert "topological order" in msg


def test_operand_from_another_graph():
    other = chain()
    g = chain()
    g.nodes[1].inputs[1] = other.inputs[0]
    msg = verify_error(g)
    assert "node #1 (%1 = add(f32[3], f32[3]) at model.py:8)" in msg
    assert "operand 1 (a value of type f32[3]) is not defined in this graph" in msg


def test_type_mismatch_after_tampering_with_output_type():
    g = chain()
    g.nodes[0].outputs[0].type = T(4)
    msg = verify_error(g)
    # tanh's declared output no longer matches its shape rule
    assert "node #0 (%0 = tanh(f32[3]) at model.py:7)" in msg
    assert "output 0 (%0) has type f32[4] but the shape rule gives f32[3]" in msg


def test_type_mismatch_after_tampering_with_input_type():
    g = chain()
    g.inputs[1].type = T(2)
    msg = verify_error(g)
    assert "node #1 (%1 = add(f32[3], f32[2]) at model.py:8)" in msg
    assert "the shape rule rejects the node" in msg and "cannot be broadcast" in msg


def test_dtype_tampering_is_caught():
    g = chain()
    g.inputs[0].type = T(3, dtype="float64")
    msg = verify_error(g)
    assert "node #0 (%0 = tanh(f64[3]) at model.py:7)" in msg
    assert "has type f32[3] but the shape rule gives f64[3]" in msg


def test_attribute_tampering_is_caught():
    g = chain()
    g.nodes[2].attrs["axes"] = (3,)
    msg = verify_error(g)
    assert "node #2 (%2 = sum(f32[3]) at model.py:9)" in msg and "axis 3 is out of range" in msg


def test_duplicate_definition_node_listed_twice():
    g = chain()
    g.nodes.insert(2, g.nodes[1])
    msg = verify_error(g)
    assert "node #2" in msg and "output 0 (%1) is defined twice (also output 0 of node #1)" in msg


def test_duplicate_input():
    g = chain()
    g.inputs.append(g.inputs[0])
    g.input_names.append("x_again")
    msg = verify_error(g)
    assert "input 2 (%x) is defined twice (also input 0)" in msg


def test_input_that_is_a_node_output():
    g = chain()
    g.inputs.append(g.nodes[0].outputs[0])
    g.input_names.append("z")
    assert "input 2 (%z) is also the output of a node (tanh(f32[3]) at model.py:7)" in verify_error(g)


def test_inconsistent_back_pointers():
    g = chain()
    g.nodes[1].outputs[0].index = 1
    msg = verify_error(g)
    assert "node #1" in msg and "output 0 (%1) has inconsistent back-pointers: it says it is output 1" in msg

    g = chain()
    g.nodes[1].outputs[0].node = g.nodes[0]
    assert "inconsistent back-pointers" in verify_error(g)


def test_wrong_number_of_outputs():
    g = chain()
    n = g.nodes[0]
    n.outputs.append(Value(T(3), n, 1))
    msg = verify_error(g)
    assert "node #0 (%0, %1 = tanh(f32[3]) at model.py:7)" in msg
    assert "has 2 output(s) but tanh produces 1" in msg


def test_undefined_graph_output():
    g = chain()
    other = chain()
    g.outputs.append(other.nodes[0].outputs[0])
    assert "verify @chain: output 2 (a value of type f32[3]) is not defined in this graph" in verify_error(g)


def test_graph_output_of_dropped_node():
    g = chain()
    del g.nodes[2]
    assert "output 0 (a value of type f32[]) is not defined in this graph" in verify_error(g)


def test_input_names_length():
    g = chain()
    g.input_names.pop()
    assert "2 inputs but 1 input names" in verify_error(g)


def test_non_value_operand():
    g = chain()
    g.nodes[1].inputs[0] = "oops"
    msg = verify_error(g)
    assert "node #1" in msg and "operand 0 is a str, not a Value" in msg


@pytest.fixture
def call_prim():
    def rule(*xs, body, **other_graphs):
        return body.out_types
    p = Primitive("test_verify_call", shape_rule=rule, impl=None)
    PRIMITIVES[p.name] = p
    try:
        yield p
    finally:
        PRIMITIVES.pop(p.name, None)


def test_nested_graphs_are_verified(call_prim):
    body = chain()
    b = GraphBuilder("outer")
    x = b.add_input(T(3), "x")
    y = b.add_input(T(3), "y")
    outs = b.emit(call_prim, [x, y], {"body": body}, Loc("outer.py", 3))
    g = b.finish(outs[:1])
    verify(g)
    body.nodes[0].outputs[0].type = T(4)
    msg = verify_error(g)
    assert msg.startswith("verify @outer: node #0 (%0, %1 = test_verify_call(f32[3], f32[3]) at outer.py:3): "
                          "in attribute body: verify @chain: node #0 (%0 = tanh(f32[3]) at model.py:7): ")
    assert "has type f32[4] but the shape rule gives f32[3]" in msg


def test_nested_graphs_inside_lists_are_verified(call_prim):
    body = chain()
    bad = chain()
    bad.nodes.reverse()
    b = GraphBuilder("outer")
    x = b.add_input(T(3), "x")
    node = Node(call_prim, [x], {"body": body, "branches": (body, [bad])}, body.out_types)
    g = Graph("outer", [x], [node], node.outputs[:1], ["x"])
    msg = verify_error(g)
    assert "in attribute branches[1][0]: verify @chain: node #0" in msg


def test_non_node_in_node_list():
    g = chain()
    g.nodes.insert(1, "not a node")
    assert "verify @chain: node #1 is a str, not a Node" in verify_error(g)
