"""Random DAGs over every op, built with pyautograd and with the pure-Python reference
engine (tests/reference_engine.py): values, grads and forward() replays must agree.

Graphs come from hypothesis as a list of instructions over a growing pool of nodes, so
nodes get reused (shared subexpressions, `a + a`), numbers join on either side
(constants), and `**` takes Value exponents. An instruction whose result would leave the
op's domain or grow past 1e8 becomes tanh of its first operand instead, in both engines,
so the graphs stay well conditioned and identical (IEEE edges are test_ops.py's job).
v.leaky_relu(slope) takes the instruction's number as its slope; pyautograd.maximum and
minimum take the three forms like the operators (ties, from shared nodes, are exact in
both engines: half the gradient to each side).

Tolerances: values are compared exactly (the same IEEE operations in the same order,
with the same libm). Grads are sums whose order differs between the engines; each may
differ by at most 1e-12 times the sum of |contributions| that made it (`mass`).
"""

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

import reference_engine as ref
import pyautograd
from pyautograd._ag import lib
from pyautograd.engine import OP_NAMES, OP_PYTHON, Value

GRAD_TOL = 1e-12
BOUND = 1e8
CONSTANTS = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 0.1, -3]
OPS = sorted(ref.OPS)


def call(engine, op, a, b=None):
    """Applies op to operands in pyautograd (engine 'ag') or the reference ('ref').
    a or b may be a plain number (a constant), at most one of them."""
    if engine == "ref":
        wrap = lambda x: x if isinstance(x, ref.Node) else ref.leaf(x)
        return ref.apply(op, *[wrap(x) for x in ((a,) if b is None else (a, b))])
    if b is None:
        return -a if op == "neg" else getattr(a, op)()
    return {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "truediv": lambda: a / b,
        "pow": lambda: a**b,
        "leaky_relu": lambda: a.leaky_relu(b),  # b: the slope, a number
        "maximum": lambda: pyautograd.maximum(a, b),
        "minimum": lambda: pyautograd.minimum(a, b),
    }[op]()


def acceptable(op, node, exponent_is_value):
    """Whether the reference's result of op keeps the graph well conditioned."""
    out = node.data
    if not math.isfinite(out) or abs(out) > BOUND:
        return False
    a = node.inputs[0].data
    if op in ("log", "sqrt"):
        return a > 1e-3
    if op == "truediv":
        return abs(node.inputs[1].data) > 1e-3
    if op == "pow":
        b = node.inputs[1].data
        if abs(b) > 4:
            return False
        if exponent_is_value:  # d/db = out * log(a) is nan for a < 0
            return a > 1e-3
        return a > 1e-3 or (a != 0 and float(b).is_integer())
    return True


instructions = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.integers(0, 1 << 20),  # first operand: which of the newest 4 nodes
        st.integers(0, 1 << 20),  # second operand: an index into the pool
        st.sampled_from(["vv", "vc", "cv"]),  # Value op Value, Value op number, number op Value
        st.sampled_from(CONSTANTS),
    ),
    min_size=1,
    max_size=40,
)
leaf_data = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=5)


def build(leaves, program):
    """The same graph in both engines: lists of (pyautograd Value, reference Node) pairs."""
    pool = [(Value(x), ref.leaf(x)) for x in leaves]
    for op, i, j, form, constant in program:
        # the first operand is one of the newest nodes, so graphs grow deep, not just wide
        (va, ra), (vb, rb) = pool[-1 - i % min(len(pool), 4)], pool[j % len(pool)]
        if ref.OPS[op][0] == 1:
            args_ag, args_ref = (va,), (ra,)
        elif op in ref.NUMBER_SECOND:  # v.leaky_relu(slope): the number is the slope
            args_ag, args_ref = (va, constant), (ra, constant)
        elif form == "vv":
            args_ag, args_ref = (va, vb), (ra, rb)
        elif form == "vc":
            args_ag, args_ref = (va, constant), (ra, constant)
        else:
            args_ag, args_ref = (constant, va), (constant, ra)
        node = call("ref", op, *args_ref)
        if not acceptable(op, node, exponent_is_value=form != "vc"):
            op, args_ag, args_ref = "tanh", (va,), (ra,)
            node = call("ref", op, *args_ref)
        pool.append((call("ag", op, *args_ag), node))
    return pool


def same_value(x, y):
    return x == y or (math.isnan(x) and math.isnan(y))


def check_backward(pool, root_index):
    root, ref_root = pool[root_index]
    root.backward()
    reached = {id(n) for n in ref.backward(ref_root)}
    for value, node in pool:
        if id(node) not in reached:
            assert value.grad == 0.0
            continue
        assert abs(value.grad - node.grad) <= GRAD_TOL * node.mass, (value.grad, node.grad, node.mass)


def test_reference_engine_covers_every_op_in_the_c_table():
    elementwise = {
        n for code, n in enumerate(OP_NAMES) if lib.ag_op_arity(code) in (1, 2) and OP_PYTHON[code] != "internal"
    }
    assert elementwise == set(ref.OPS)


@settings(max_examples=300, deadline=None)
@given(leaf_data, instructions, st.integers(0, 1 << 20))
def test_random_graph_values_and_grads_agree(leaves, program, pick):
    pool = build(leaves, program)
    for value, node in pool:
        assert value.data == node.data
    check_backward(pool, len(pool) - 1)
    # a second backward from another node of the same graph, on fresh grads
    for value, _ in pool:
        value.grad = 0.0
    check_backward(pool, pick % len(pool))


@settings(max_examples=150, deadline=None)
@given(leaf_data, instructions, st.floats(0.5, 1.5))
def test_random_graph_forward_replay_agrees(leaves, program, scale):
    pool = build(leaves, program)
    root, ref_root = pool[-1]
    for value, node in pool[: len(leaves)]:
        value.data = node.data = value.data * scale + 0.25
    replayed = root.forward()
    expected = ref.recompute(ref_root)
    assert same_value(replayed, expected)
    reached = {id(n) for n in ref.topological_order(ref_root)}
    for value, node in pool:
        if id(node) in reached:
            assert same_value(value.data, node.data)


def test_a_large_seeded_random_graph():
    rng = random.Random(20240607)
    leaves = [rng.uniform(-3, 3) for _ in range(50)]
    program = [
        (
            rng.choice(OPS),
            rng.randrange(1 << 20),
            rng.randrange(1 << 20),
            rng.choice(["vv", "vc", "cv"]),
            rng.choice(CONSTANTS),
        )
        for _ in range(5000)
    ]
    pool = build(leaves, program)
    assert len({op for op, *_ in program}) == len(OPS)
    assert len(ref.topological_order(pool[-1][1])) > 1000  # the root reaches most of it
    for value, node in pool:
        assert value.data == node.data
    check_backward(pool, len(pool) - 1)
