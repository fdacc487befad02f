"""Bad input raises the right Python exception and never crashes: TypeError naming the
operation and the type for non-numbers, MemoryError when the arena is full (simulated
with pyautograd.arena.set_node_limit), and the arena stays usable afterwards.
"""

import decimal
import fractions
import gc
import math
import operator

import pytest

import pyautograd
from pyautograd import arena, nn
from pyautograd.engine import Value

NOT_NUMBERS = ["abc", None, 1j, [1.0], (1.0,), {}, object(), decimal.Decimal(1), b"1"]
BINARY = [
    (operator.add, "+"),
    (operator.sub, "-"),
    (operator.mul, "*"),
    (operator.truediv, "/"),
    (operator.pow, "**"),
]


def type_name(x):
    return type(x).__name__


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=type_name)
def test_constructor_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match=f"Value\\(\\) data must be a real number, not '{type_name(bad)}'"):
        Value(bad)


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=type_name)
@pytest.mark.parametrize("op, symbol", BINARY, ids=[s for _, s in BINARY])
def test_binary_op_with_a_non_number_on_the_right(op, symbol, bad):
    with pytest.raises(TypeError) as caught:
        op(Value(2.0), bad)
    message = str(caught.value)
    assert "Value" in message
    if not (symbol == "*" and isinstance(bad, (str, list, tuple, bytes))):
        # (sequences answer `*` with their own words: "can't multiply sequence by ... 'Value'")
        assert symbol in message and type_name(bad) in message


@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=type_name)
@pytest.mark.parametrize("op, symbol", BINARY, ids=[s for _, s in BINARY])
def test_binary_op_with_a_non_number_on_the_left(op, symbol, bad):
    with pytest.raises(TypeError) as caught:
        op(bad, Value(2.0))
    assert "Value" in str(caught.value)


def test_the_classic_examples():
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+: 'Value' and 'str'"):
        Value(1) + "x"
    with pytest.raises(TypeError, match="Value"):
        "x" + Value(1)  # str's own message: can only concatenate str (not "Value") to str
    with pytest.raises(TypeError, match=r"for \*\* or pow\(\): 'Value' and 'str'"):
        Value(2) ** "x"
    with pytest.raises(TypeError, match=r"for \*\* or pow\(\): 'str' and 'Value'"):
        "x" ** Value(2)
    with pytest.raises(TypeError, match=r"leaky_relu\(\) slope must be a real number, not 'str'"):
        Value(-1.0).leaky_relu("a")  # once "must be real number, not str", no op named
    with pytest.raises(TypeError, match="leaky_relu"):
        Value(-1.0).leaky_relu(slope=None)
    assert Value(-2.0).leaky_relu(fractions.Fraction(1, 4)).data == -0.5


@pytest.mark.parametrize("field", ["data", "grad"])
@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=type_name)
def test_setters_reject_non_numbers(field, bad):
    v = Value(1.5)
    with pytest.raises(TypeError, match=f"Value.{field} must be a real number, not '{type_name(bad)}'"):
        setattr(v, field, bad)
    assert getattr(v, field) == (1.5 if field == "data" else 0.0)  # unchanged


def test_children_must_be_values():
    with pytest.raises(TypeError, match="_children must be Values, not 'float'"):
        Value(1.0, (Value(2.0), 3.0), "op")


def test_comparisons_are_not_defined():
    # micrograd defines no ordering either; a silent identity-based answer would mislead
    with pytest.raises(TypeError):
        Value(1.0) < Value(2.0)
    with pytest.raises(TypeError):
        Value(1.0) >= 0


def test_other_real_numbers_are_accepted():
    assert Value(fractions.Fraction(1, 4)).data == 0.25
    assert (Value(1.0) + fractions.Fraction(1, 2)).data == 1.5
    assert (fractions.Fraction(1, 2) * Value(4.0)).data == 2.0
    assert math.isnan(Value(math.nan).data) and Value(-math.inf).data == -math.inf


def test_int_too_big_for_a_double_overflows_like_float():
    with pytest.raises(OverflowError):
        float(10**400)
    with pytest.raises(OverflowError):
        Value(10**400)
    with pytest.raises(OverflowError):
        Value(1.0) + 10**400


def test_set_node_limit_validates_its_argument():
    with pytest.raises(ValueError, match="max_nodes must be an int >= 0, not -1"):
        arena.set_node_limit(-1)
    for bad in (1.5, "10", None, True, False):  # not ints: TypeError, naming the type
        with pytest.raises(TypeError, match=f"max_nodes must be an int, not '{type_name(bad)}'"):
            arena.set_node_limit(bad)
    np = pytest.importorskip("numpy")
    keep = Value(1.0)
    arena.set_node_limit(np.int64(live()))  # an integer of another type is an int
    try:
        with pytest.raises(MemoryError):
            keep + 1.0
    finally:
        arena.set_node_limit(0)


# ---- constructor arguments in the wrong places ----


def test_children_that_are_not_iterable_are_named():
    with pytest.raises(TypeError, match=r"^Value\(\) _children must be an iterable of Values, not 'int'$"):
        Value(1, 2)


def test_local_grads_that_are_not_a_sequence_are_named():
    x = Value(1.0)
    with pytest.raises(
        TypeError,
        match=r"^Value\(\) local_grads must be a sequence of real numbers, "
        r"one per child, not 'float'$",
    ):
        Value(1, (x,), local_grads=3.0)
    assert Value(1, (x,), local_grads=(3.0,))._op == ""  # the sequence form works


@pytest.mark.parametrize("number", [3.0, 2, True, fractions.Fraction(1, 2)], ids=type_name)
def test_a_number_where_op_goes_points_at_the_local_grads_form(number):
    # micrograd would show it as _op ('3.0') and pass no gradient: microgpt's one-child
    # local-gradient node written without its tuple
    x = Value(2.0)
    with pytest.raises(TypeError) as caught:
        Value(6.0, (x,), number)
    message = str(caught.value)
    assert message.startswith(f"Value() _op must be a string, not the number {number!r}")
    assert f"Value(data, children, ({number!r},))" in message and "local_grads=" in message
    y = Value(6.0, (x,), (number,))  # the form it points at
    y.backward()
    assert x.grad == float(number)


def test_numpy_bools_are_taken_like_bools():
    # numpy does not register its bool with numbers.Real (its ints and floats it does);
    # Value(True) works, so Value(np.True_) does too, and an op takes it the same way
    np = pytest.importorskip("numpy")
    assert (Value(np.True_).data, Value(np.False_).data) == (1.0, 0.0)
    assert type(Value(np.True_).data) is float
    assert (Value(2.0) * np.True_).data == 2.0 and (np.True_ + Value(2.0)).data == 3.0
    v = Value(0.0)
    v.data = np.True_
    assert v.data == 1.0
    x = Value(1.0)
    assert Value(1.0, (x,), [np.True_])._op == ""  # a local gradient of 1
    with pytest.raises(TypeError, match="Value\\(\\) data must be a real number, not 'ndarray'"):
        Value(np.array([True]))  # an array is not a scalar


# ---- MemoryError when the arena is full ----


def live():
    return arena.stats()["live_nodes"]


def c_sum(values):
    """The C n-ary sum, one node."""
    return pyautograd.sum(values)


def test_memory_error_past_the_node_limit(node_limit):
    base = live()
    x = Value(1.0)
    node_limit(base + 10)
    chain = [x]
    with pytest.raises(MemoryError, match="out of memory"):
        for _ in range(100):
            chain.append(chain[-1] * chain[-1])
    assert live() == base + 10 and len(chain) == 10
    # what exists still works: read, backward, forward
    chain[-1].backward()
    assert chain[-1].data == 1.0 and x.grad == 2.0**9
    assert chain[-1].forward() == 1.0
    node_limit(0)
    y = chain[-1] + 1  # the arena is usable again
    assert y.data == 2.0
    del chain, x, y
    assert live() == base


@pytest.mark.parametrize(
    "make",
    [
        lambda v: Value(2.0),
        lambda v: v + v,
        lambda v: v + 2.0,  # needs a constant node and the result: both or neither
        lambda v: 2.0**v,
        lambda v: v.tanh(),
        lambda v: -v,
        lambda v: Value(1.0, (v,), "custom"),
        lambda v: c_sum([v, v]),
    ],
    ids=["leaf", "add", "add-const", "rpow-const", "tanh", "neg", "custom", "sum"],
)
def test_every_way_of_making_a_node_fails_cleanly_when_full(node_limit, make):
    base = live()
    v = Value(3.0)
    node_limit(base + 1)
    with pytest.raises(MemoryError):
        make(v)
    assert live() == base + 1  # no half-made node, no orphaned constant
    node_limit(0)
    assert make(v) is not None
    del v
    assert live() == base


MANY_LEAVES = {
    "sum": lambda v: pyautograd.sum([v, 2.0, 3.0], start=5.0),
    "dot": lambda v: pyautograd.dot([v, 2.0], [3.0, v], start=4.0),
    "Layer": lambda v: nn.Layer(3, 2)([v, 2.0, 3.0]),
    "MLP": lambda v: nn.MLP(3, [2, 1])([v, 2.0, 3.0]),
    "grad": lambda v: pyautograd.grad(v * v + 1.0, [v, v], create_graph=True),
    "local": lambda v: Value(1.0, (v, v), (2.0, 3.0)),
}


@pytest.mark.parametrize("name", sorted(MANY_LEAVES))
def test_ops_that_make_several_nodes_leave_none_behind_wherever_memory_runs_out(node_limit, name):
    # each call makes leaves for its numbers, then the result: the limit is hit at every
    # point in turn, and whatever was made before it must go
    make = MANY_LEAVES[name]
    v = Value(3.0)
    keep = make(v)  # models and their parameters are made outside the limit
    del keep
    gc.collect()  # cycles left by earlier tests (tracebacks) must not go mid-loop
    base = live()
    for headroom in range(12):
        node_limit(base + headroom)
        try:
            result = make(v)
        except MemoryError:
            pass
        else:
            del result
        node_limit(0)
        assert live() == base, (name, headroom)


def test_constant_is_released_when_the_result_cannot_be_made(node_limit):
    base = live()
    v = Value(3.0)
    node_limit(base + 2)  # room for the constant, not for the result
    with pytest.raises(MemoryError):
        v * 5.0
    assert live() == base + 1
    node_limit(0)
    assert (v * 5.0).data == 15.0


def test_many_failures_in_a_row_leak_nothing(node_limit):
    base = live()
    v = Value(1.0)
    node_limit(base + 1)
    for _ in range(1000):
        with pytest.raises(MemoryError):
            v + 1.0
    node_limit(0)
    del v
    assert live() == base
