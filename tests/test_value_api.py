"""The Value API as micrograd users know it: constructor, data/grad, _prev/_op, repr,
identity, backward, forward replay and no_grad. Where pyautograd deliberately differs
from micrograd, the test runs micrograd itself beside it to show the difference.
"""

import math
import threading

import micrograd.engine as mg
import pytest

import pyautograd
from pyautograd.arena import stats
from pyautograd.engine import Value

from conftest import require


# ---- constructor ----


def test_constructor_takes_micrograd_signature():
    v = Value(2.5)
    assert v.data == 2.5 and v.grad == 0.0
    assert v._prev == set() and v._op == "" and v.label == ""
    w = Value(data=1.0, _children=(), _op="", label="w")
    assert w.label == "w"


def test_int_and_bool_data_are_stored_as_float():
    # micrograd keeps the Python object (Value(1).data is the int 1); the C node holds a double.
    assert Value(3).data == 3.0 and type(Value(3).data) is float
    assert Value(True).data == 1.0
    assert type(mg.Value(3).data) is int  # the difference, shown on micrograd itself


def test_label_round_trip_and_change():
    v = Value(1.0, label="weight")
    assert v.label == "weight"
    v.label = "w₁"  # non-ASCII survives the trip through C
    assert v.label == "w₁"
    v.label = ""
    assert v.label == ""
    v.label = "x"
    v.label = None  # as Value(1.0, label=None): no label, not the text "None"
    assert v.label == "" == Value(1.0, label=None).label


def test_label_belongs_to_the_node():
    v = Value(1.0, label="x")
    y = v * 2
    del v  # the node lives on under y; the label is the node's
    (again,) = [c for c in y._prev if c.label == "x"]
    again.label = "renamed"
    assert [c.label for c in y._prev if c.data == 1.0] == ["renamed"]


def test_hand_made_node_keeps_children_alive_and_passes_no_gradient():
    base = stats()["live_nodes"]
    a, b = Value(2.0), Value(3.0)
    c = Value(10.0, (a, b), "myop", label="c")
    assert c.data == 10.0 and c._op == "myop" and c.label == "c"
    assert {v.data for v in c._prev} == {2.0, 3.0}
    del a, b
    assert stats()["live_nodes"] == base + 3  # the children live on through c
    (y := c * 2).backward()
    assert y.data == 20.0 and c.grad == 2.0
    assert all(child.grad == 0.0 for child in c._prev)  # micrograd's default _backward does nothing
    del c, y
    assert stats()["live_nodes"] == base


def test_hand_made_node_matches_micrograd():
    ours = Value(5.0, (Value(1.0),), "custom")
    theirs = mg.Value(5.0, (mg.Value(1.0),), "custom")
    (ours * 3).backward()
    (theirs * 3).backward()
    assert ours._op == theirs._op
    assert ours.grad == theirs.grad
    assert [c.grad for c in ours._prev] == [c.grad for c in theirs._prev]


def test_hand_made_leaf_keeps_its_op():
    v = Value(2.0, (), "input")
    assert v._op == "input" and v._prev == set()
    (v * 4).backward()
    assert v.grad == 4.0


def test_a_bytes_op_is_an_op_not_local_gradients():
    # bytes are a sequence (of ints): Value(6.0, (a, b, c), b"mul") passed 109, 117 and
    # 108 back as local gradients, where micrograd keeps the op and passes nothing
    a, b, c = Value(1.0), Value(2.0), Value(3.0)
    for op in (b"mul", bytearray(b"mul"), memoryview(b"mul")):
        v = Value(6.0, (a, b, c), op)
        (v * 2).backward()
        assert (a.grad, b.grad, c.grad, v.grad) == (0.0, 0.0, 0.0, 2.0)


def test_hand_made_node_rejects_non_value_children():
    with pytest.raises(TypeError, match="_children"):
        Value(1.0, (1.0,), "op")


# ---- data and grad ----


def test_data_setter_is_seen_by_later_ops():
    x = Value(1.0)
    x.data = 4.0
    assert (x * x).data == 16.0
    x.data -= 0.5  # the optimizer step micrograd users write: p.data += -lr * p.grad
    assert x.data == 3.5


def test_grad_setter_and_zeroing():
    x = Value(1.0)
    (x * 3).backward()
    assert x.grad == 3.0
    x.grad = 0
    assert x.grad == 0.0
    x.grad = 1.25
    assert x.grad == 1.25


def test_data_of_an_existing_result_does_not_change_by_itself():
    x = Value(2.0)
    y = x * 3
    x.data = 10.0
    assert y.data == 6.0  # values were computed when the op ran, as in micrograd


# ---- _prev and _op ----


def test_prev_holds_the_inputs():
    a, b = Value(2.0), Value(3.0)
    c = a * b
    assert c._prev == {a, b}
    assert (a + a)._prev == {a}  # a set, like micrograd's set((self, other))
    assert (-a)._prev == {a}


def test_prev_includes_promoted_constants_like_micrograd():
    a = Value(2.0)
    ours = a + 5
    theirs = mg.Value(2.0) + 5
    assert sorted(v.data for v in ours._prev) == sorted(float(v.data) for v in theirs._prev)


@pytest.mark.parametrize(
    "build, symbol",
    [
        (lambda a, b: a + b, "+"),
        (lambda a, b: a * b, "*"),
        (lambda a, b: a**2, "**2"),
        (lambda a, b: a**0.5, "**0.5"),
        (lambda a, b: a**-1, "**-1"),
        (lambda a, b: a.relu(), "ReLU"),
        (lambda a, b: 2 + a, "+"),
        (lambda a, b: 2 * a, "*"),
    ],
)
def test_op_symbols_micrograd_shares(build, symbol):
    assert build(Value(2.0), Value(3.0))._op == symbol
    assert build(mg.Value(2.0), mg.Value(3.0))._op == symbol


@pytest.mark.parametrize(
    "build, symbol",
    [
        (lambda a, b: a - b, "-"),
        (lambda a, b: a / b, "/"),
        (lambda a, b: -a, "neg"),
        (lambda a, b: a**b, "**"),
        (lambda a, b: a.tanh(), "tanh"),
        (lambda a, b: a.exp(), "exp"),
        (lambda a, b: a.log(), "log"),
        (lambda a, b: a.sigmoid(), "sigmoid"),
    ],
)
def test_op_symbols_of_ops_micrograd_composes(build, symbol):
    # micrograd builds a - b as a + (-1 * b) and a / b as a * b**-1; here each is one node.
    assert build(Value(2.0), Value(3.0))._op == symbol


# ---- repr ----


def test_repr_matches_micrograd_format():
    v, m = Value(2.0), mg.Value(2.0)
    (v * 3.0).backward()
    (m * 3.0).backward()  # with * 3 micrograd's grad would be the int 3
    assert repr(v) == repr(m) == "Value(data=2.0, grad=3.0)"
    # A fresh micrograd Value shows grad=0 (an int); ours shows grad=0.0.
    assert repr(Value(1.0)) == "Value(data=1.0, grad=0.0)"
    assert repr(mg.Value(1.0)) == "Value(data=1.0, grad=0)"


# ---- identity: one Value per node, equality and hashing by identity, as micrograd ----


def test_prev_hands_back_the_very_objects():
    a = Value(1.0)
    (again,) = [c for c in (a * 2)._prev if c.data == 1.0]
    assert again is a and again == a and hash(again) == hash(a)
    assert hash(a) == object.__hash__(a)


def test_distinct_nodes_with_equal_data_are_not_equal():
    # == is identity of the graph node (as micrograd's default object identity), never data.
    assert Value(1.0) != Value(1.0)
    assert not (Value(1.0) == 1.0)
    assert (Value(1.0) == Value(1.0)) == (mg.Value(1.0) == mg.Value(1.0))


def test_values_usable_as_dict_keys():
    a, b = Value(1.0), Value(2.0)
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"


# ---- backward ----


def test_backward_root_gets_one():
    x = Value(3.0)
    y = x * x
    y.backward()
    assert y.grad == 1.0 and x.grad == 6.0


def test_backward_of_a_leaf():
    x = Value(3.0)
    x.backward()
    assert x.grad == 1.0


def test_backward_twice_adds_once_per_call_like_torch():
    x = Value(3.0)
    t = x * 2
    y = t * 5
    y.backward()
    y.backward()
    assert (x.grad, t.grad, y.grad) == (20.0, 10.0, 2.0)


def test_backward_twice_matches_torch_retain_graph():
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    x = Value(3.0)
    y = (x * 2).tanh() * 5 + x
    y.backward()
    y.backward()
    tx = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ty = (tx * 2).tanh() * 5 + tx
    ty.backward(retain_graph=True)
    ty.backward()
    assert math.isclose(x.grad, tx.grad.item(), rel_tol=1e-15)


def test_backward_twice_differs_from_micrograd_which_compounds():
    def program(V):
        x = V(3.0)
        t = x * 2
        y = t * 5
        return x, t, y

    x, t, y = program(Value)
    mx, mt, my = program(mg.Value)
    y.backward()
    my.backward()
    assert (x.grad, t.grad) == (mx.grad, mt.grad) == (10.0, 5.0)  # one call: the same
    y.backward()
    my.backward()
    assert (x.grad, t.grad, y.grad) == (20.0, 10.0, 2.0)  # ours: each call adds d y/d node
    # micrograd resets the root to 1 but keeps the interior grads, which flow on again:
    # t.grad = 5 + 5 = 10, x.grad = 10 + 2 * 10 = 30.
    assert (mx.grad, mt.grad, my.grad) == (30.0, 10.0, 1)


def test_stale_interior_grads_do_not_leak_into_the_chain_rule():
    x = Value(3.0)
    t = x * 2
    y = t * 5
    t.grad = 100.0  # left over from somewhere else
    y.backward()
    assert x.grad == 10.0 and t.grad == 105.0
    mx = mg.Value(3.0)
    mt = mx * 2
    my = mt * 5
    mt.grad = 100.0
    my.backward()
    assert mx.grad == 210.0  # micrograd pushes the stale grad on to x


def test_backward_only_touches_what_the_root_reaches():
    a, b = Value(1.0), Value(2.0)
    unrelated = b * 7
    y = a * 3
    y.backward()
    assert a.grad == 3.0 and b.grad == 0.0 and unrelated.grad == 0.0


def test_backward_on_an_interior_node():
    x = Value(2.0)
    t = x * x
    y = t * 3
    t.backward()
    assert x.grad == 4.0 and y.grad == 0.0


# ---- forward replay ----


def test_forward_replays_from_new_leaf_data():
    x, w = Value(1.0), Value(2.0)
    y = (x * w + 1).relu() + x.tanh()
    assert y.forward() == y.data == 3.0 + math.tanh(1.0)
    x.data = -3.0  # relu's branch flips: replay re-runs branches inside ops
    assert y.forward() == y.data == 0.0 + math.tanh(-3.0)
    fresh = (Value(-3.0) * Value(2.0) + 1).relu() + Value(-3.0).tanh()
    assert y.data == fresh.data


def test_backward_after_forward_gives_the_new_gradient():
    x = Value(1.0)
    y = x * x * x
    y.backward()
    assert x.grad == 3.0
    x.data, x.grad = 2.0, 0.0
    y.forward()
    y.backward()
    assert y.data == 8.0 and x.grad == 12.0


def test_forward_refuses_hand_made_nodes_and_changes_nothing():
    x = Value(2.0)
    c = Value(7.0, (x,), "custom")
    y = c + x * 3
    x.data = 4.0
    with pytest.raises(RuntimeError, match="made by hand.*'custom'"):
        y.forward()
    assert (y.data, c.data) == (13.0, 7.0)  # nothing was recomputed


def test_forward_keeps_constants_and_leaves_made_with_an_op_text():
    x = Value(2.0)
    c = Value(7.0, (), "a constant")  # no children: a leaf with an _op text
    y = c + x * 3
    x.data = 4.0
    assert y.forward() == 7.0 + 12.0


# ---- no_grad ----


def test_no_grad_records_nothing():
    base = stats()["live_nodes"]
    x = Value(3.0)
    with pyautograd.no_grad():
        assert not pyautograd.is_grad_enabled()
        y = (x * 2 + 1).tanh()
    assert pyautograd.is_grad_enabled()
    assert y.data == math.tanh(7.0)
    assert y._prev == set() and y._op == ""
    assert stats()["live_nodes"] == base + 2  # x and y; no intermediates, no constants
    y.backward()
    assert x.grad == 0.0


def test_no_grad_nests_and_restores():
    with pyautograd.no_grad():
        with pyautograd.no_grad():
            pass
        assert not pyautograd.is_grad_enabled()
    assert pyautograd.is_grad_enabled()


def test_no_grad_as_decorator_and_after_an_exception():
    @pyautograd.no_grad()
    def f(v):
        return v * 2

    assert f(Value(1.0))._prev == set()
    with pytest.raises(RuntimeError):
        with pyautograd.no_grad():
            raise RuntimeError
    assert pyautograd.is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = []
    with pyautograd.no_grad():
        t = threading.Thread(target=lambda: seen.append(len((Value(1.0) * 2)._prev)))
        t.start()
        t.join()
    assert seen == [2]
