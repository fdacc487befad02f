"""Big graphs: a million nodes, ten million levels deep, a million-wide fan-in. Each builds,
differentiates (checked against a closed form) and frees (live nodes back to where they
were) without recursion anywhere. Run apart: pytest -m stress (a minute or so, ~1 GB).
"""

import math

import pytest

import pyautograd
from pyautograd.arena import stats
from pyautograd.engine import Value

pytestmark = pytest.mark.stress


def live():
    return stats()["live_nodes"]


def c_sum(values):
    """The C n-ary sum over many Values in one node (what a wide layer would use)."""
    return pyautograd.sum(values)


def test_million_node_graph_against_closed_form():
    base = live()
    n = 250_000  # 4 nodes a step: a constant, *, tanh, +
    x = Value(0.3)
    total = Value(0.0)
    cs = [math.sin(i) for i in range(n)]
    for c in cs:
        total = total + (x * c).tanh()
    assert live() - base >= 1_000_000
    total.backward()
    value = math.fsum(math.tanh(0.3 * c) for c in cs)
    grad = math.fsum(c * (1 - math.tanh(0.3 * c) ** 2) for c in cs)
    assert math.isclose(total.data, value, rel_tol=1e-9)
    assert math.isclose(x.grad, grad, rel_tol=1e-9)
    x.data = -0.2  # replay the same million nodes at a new point
    total.forward()
    assert math.isclose(total.data, math.fsum(math.tanh(-0.2 * c) for c in cs), rel_tol=1e-9)
    del total, x
    assert live() == base


def test_ten_million_deep_chain_builds_backwards_and_frees():
    base = live()
    n = 10_000_000
    start, step = Value(0.5), Value(0.25)
    y = start
    for _ in range(n):
        y = y + step  # depth n; `step` is also used n times
    assert live() == base + n + 2
    # every partial sum is a multiple of 0.25 below 2^53: exact
    assert y.data == 0.5 + 0.25 * n
    y.backward()
    assert start.grad == 1.0
    assert step.grad == float(n)
    start.data = 1.0
    assert y.forward() == 1.0 + 0.25 * n
    del y  # frees ten million nodes in one loop, no recursion
    assert live() == base + 2
    del start, step
    assert live() == base


def test_ten_million_deep_multiplicative_chain():
    """x = x * 1.0000001 + 1e-9, as the issue states it: 4 nodes a step."""
    base = live()
    n = 10_000_000
    x0 = Value(1.0)
    x = x0
    for _ in range(n):
        x = x * 1.0000001 + 1e-9
    r = 1.0000001
    growth = r**n
    assert math.isclose(x.data, growth + 1e-9 * (growth - 1) / (r - 1), rel_tol=1e-6)
    x.backward()
    assert math.isclose(x0.grad, growth, rel_tol=1e-6)
    del x
    assert live() == base + 1
    del x0


def test_wide_fan_in_one_leaf_used_a_million_times():
    base = live()
    n = 1_000_000
    x = Value(1.5)
    products = [x * float(i) for i in range(n)]  # x feeds a million nodes
    total = c_sum(products)  # and one node takes a million inputs
    del products
    total.backward()
    assert total.data == 1.5 * (n * (n - 1) // 2)
    assert x.grad == float(n * (n - 1) // 2)
    del total
    assert live() == base + 1


def test_wide_fan_in_through_python_additions():
    base = live()
    n = 1_000_000
    x = Value(2.0)
    total = x
    for _ in range(n - 1):
        total = total + x
    total.backward()
    assert total.data == 2.0 * n and x.grad == float(n)
    del total
    assert live() == base + 1


def test_backward_many_times_on_a_big_graph_does_not_grow_memory():
    x = Value(0.5)
    y = x
    for _ in range(200_000):
        y = (y * 0.999).tanh()
    for _ in range(2):  # from here on, the order is cached and scratch buffers are big
        y.backward()  # enough (the second backward keeps the grads the first left)
        y.forward()
    arena_bytes = stats()["bytes"]
    for _ in range(20):
        y.backward()
        y.forward()
    assert stats()["bytes"] == arena_bytes
