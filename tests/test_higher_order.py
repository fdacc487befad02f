"""pyautograd.grad to higher orders (issue 12): derivatives as Values, differentiated again.

- closed forms: polynomials, x ** y in both arguments, tanh/exp/log/sigmoid and chains of
  them, to the third order and beyond, against the derivatives worked out by hand;
- every op's second derivatives against the math, and the edge rules (x ** 0, pow at
  base 0, relu's second derivative 0);
- sum, dot, the losses, softmax and log_softmax: Hessians (and some third derivatives)
  against torch float64 double backward;
- differential fuzzing against torch float64 over every op of the C table: random
  graphs, their gradients, full Hessians and third derivatives (see the fuzzing section
  for the comparison);
- the contract: no .grad changes, 0.0 for an unused input, d x / d x = 1, TypeErrors
  naming the bad argument, Python _backward nodes, memory of derivative graphs freed;
- gradcheck and gradgradcheck: True on correct functions, GradcheckError naming the
  worst entry on wrong ones.

Closed forms compare with relative 1e-12 (the formula and the engine round differently,
by a few ulp) plus 1e-14 absolute for entries that are 0 by the math.
"""

import gc
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap

import pytest

import pyautograd
from pyautograd import GradcheckError, Value, grad, gradcheck, gradgradcheck, losses
from pyautograd import functional as F
from pyautograd.arena import stats
from pyautograd.engine import OP_NAMES, OP_PYTHON

from conftest import require

REL = 1e-12
ABS = 1e-14


@pytest.fixture(scope="module")
def torch():
    """torch, for the tests that compare with it (skipped without it, unless CI says so)."""
    return require("torch", "PYAUTOGRAD_REQUIRE_TORCH")


def close(q, r, rel=REL, abs_=ABS):
    return q == r or abs(q - r) <= rel * abs(r) + abs_


def assert_close(q, r, what="", rel=REL, abs_=ABS):
    assert close(q, r, rel, abs_), f"{what}: pyautograd {q!r}, expected {r!r}"


def derivatives(f, x0, order):
    """[f(x0), f'(x0), ..., f^(order)(x0)], each by grad() of the one before."""
    x = Value(x0)
    y = f(x)
    out = [y.data]
    for _ in range(order):
        (y,) = grad(y, x, create_graph=True)
        out.append(y.data)
    return out


def hessian(f, point):
    """(f, gradient, Hessian) of f at point, by grad() twice."""
    xs = [Value(v) for v in point]
    y = f(*xs)
    first = grad(y, xs, create_graph=True)
    return y.data, [g.data for g in first], [[h.data for h in grad(g, xs)] for g in first]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---- closed forms ----


@pytest.mark.parametrize("x0", [-1.5, -0.0, 0.0, 0.3, 2.0, 7.25])
def test_polynomial_to_the_fifth_derivative(x0):
    got = derivatives(lambda x: 3 * x**4 - 2 * x**3 + x - 5, x0, 5)
    expected = [
        3 * x0**4 - 2 * x0**3 + x0 - 5,
        12 * x0**3 - 6 * x0**2 + 1,
        36 * x0**2 - 12 * x0,
        72 * x0 - 12,
        72.0,
        0.0,
    ]
    for k, (q, r) in enumerate(zip(got, expected)):
        assert_close(q, r, f"derivative {k} at {x0}")
    assert got[5] == 0.0  # x ** 0 is constant: exactly 0, however it was reached


def test_polynomial_in_two_variables_to_the_third_order():
    # f = x^2 y^3 + x y - 4 y: every third derivative
    x0, y0 = 1.3, -0.7
    x, y = Value(x0), Value(y0)
    f = x * x * y**3 + x * y - 4 * y
    fx, fy = grad(f, [x, y], create_graph=True)
    assert_close(fx.data, 2 * x0 * y0**3 + y0)
    assert_close(fy.data, 3 * x0**2 * y0**2 + x0 - 4)
    (fxx, fxy), (fyx, fyy) = [grad(g, [x, y], create_graph=True) for g in (fx, fy)]
    for q, r in [(fxx, 2 * y0**3), (fxy, 6 * x0 * y0**2 + 1), (fyx, 6 * x0 * y0**2 + 1), (fyy, 6 * x0**2 * y0)]:
        assert_close(q.data, r)
    third = {
        name: [t.data for t in grad(g, [x, y])] for name, g in [("xx", fxx), ("xy", fxy), ("yx", fyx), ("yy", fyy)]
    }
    assert_close(third["xx"][0], 0.0)
    assert_close(third["xx"][1], 6 * y0**2)
    for name in ("xy", "yx"):
        assert_close(third[name][0], 6 * y0**2)
        assert_close(third[name][1], 12 * x0 * y0)
    assert_close(third["yy"][0], 12 * x0 * y0)
    assert_close(third["yy"][1], 6 * x0**2)


@pytest.mark.parametrize("x0, y0", [(1.7, 2.3), (0.4, -1.5), (2.0, 0.5), (3.0, 3.0), (0.9, 0.0)])
def test_pow_in_both_arguments_to_the_third_order(x0, y0):
    x, y = Value(x0), Value(y0)
    f = x**y
    fx, fy = grad(f, [x, y], create_graph=True)
    ln = math.log(x0)
    assert_close(fx.data, 0.0 if y0 == 0 else y0 * x0 ** (y0 - 1))
    assert_close(fy.data, x0**y0 * ln)
    (fxx, fxy), (fyx, fyy) = [grad(g, [x, y], create_graph=True) for g in (fx, fy)]
    assert_close(fxx.data, y0 * (y0 - 1) * x0 ** (y0 - 2))
    if y0 != 0:  # at y == 0, d/dx is 0 by PyTorch's rule: a constant, see the edge tests
        assert_close(fxy.data, x0 ** (y0 - 1) * (1 + y0 * ln))
    assert_close(fyx.data, x0 ** (y0 - 1) * (1 + y0 * ln))
    assert_close(fyy.data, x0**y0 * ln**2)
    fxxx, fxxy = [t.data for t in grad(fxx, [x, y])]
    fyyx, fyyy = [t.data for t in grad(fyy, [x, y])]
    fyxx, fyxy = [t.data for t in grad(fyx, [x, y])]
    assert_close(fxxx, y0 * (y0 - 1) * (y0 - 2) * x0 ** (y0 - 3))
    if y0 != 0:
        assert_close(fxxy, x0 ** (y0 - 2) * ((2 * y0 - 1) + y0 * (y0 - 1) * ln))
    assert_close(fyxx, x0 ** (y0 - 2) * ((2 * y0 - 1) + y0 * (y0 - 1) * ln))
    assert_close(fyyy, x0**y0 * ln**3)
    assert_close(fyyx, x0 ** (y0 - 1) * ln * (2 + y0 * ln))
    if y0 != 0:  # d/dy of the rule's constant 0 inside d/dx is 0 (torch's too)
        assert_close(fyxy, x0 ** (y0 - 1) * ln * (2 + y0 * ln))


def tanh_derivatives(x):
    t = math.tanh(x)
    u = 1 - t * t
    return [t, u, -2 * t * u, u * (6 * t * t - 2)]


def sigmoid_derivatives(x):
    s = sigmoid(x)
    return [s, s * (1 - s), s * (1 - s) * (1 - 2 * s), s * (1 - s) * (1 - 6 * s + 6 * s * s)]


UNIVARIATE = {
    "tanh": (lambda x: x.tanh(), tanh_derivatives),
    "exp(2x)": (lambda x: (2 * x).exp(), lambda x: [math.exp(2 * x) * 2**k for k in range(4)]),
    "log": (lambda x: x.log(), lambda x: [math.log(x), 1 / x, -1 / x**2, 2 / x**3]),
    "sigmoid": (lambda x: x.sigmoid(), sigmoid_derivatives),
    "1/x": (lambda x: 1 / x, lambda x: [1 / x, -1 / x**2, 2 / x**3, -6 / x**4]),
    "log(sigmoid)": (
        lambda x: x.sigmoid().log(),  # -softplus(-x)
        lambda x: [math.log(sigmoid(x)), 1 - sigmoid(x)] + [-d for d in sigmoid_derivatives(x)[1:3]],
    ),
    "exp(tanh)": (lambda x: x.tanh().exp(), lambda x: _exp_tanh(x)),
    "log(1 + x^2)": (
        lambda x: (1 + x * x).log(),
        lambda x: [
            math.log(1 + x * x),
            2 * x / (1 + x * x),
            2 * (1 - x * x) / (1 + x * x) ** 2,
            4 * x * (x * x - 3) / (1 + x * x) ** 3,
        ],
    ),
    "tanh(exp)": (lambda x: x.exp().tanh(), lambda x: _tanh_exp(x)),
}


def _exp_tanh(x):
    t = math.tanh(x)
    u = 1 - t * t
    e = math.exp(t)
    return [e, e * u, e * (u * u - 2 * t * u), e * u * (u * u - 6 * t * u - 2 * u + 4 * t * t)]


def _tanh_exp(x):
    # f = tanh(e) with e = exp(x): f' = T1 e, f'' = T2 e^2 + T1 e, f''' = T3 e^3 + 3 T2 e^2 + T1 e
    # where T1, T2, T3 are tanh's derivatives at e
    e = math.exp(x)
    t0, t1, t2, t3 = tanh_derivatives(e)
    return [t0, t1 * e, t2 * e * e + t1 * e, t3 * e**3 + 3 * t2 * e * e + t1 * e]


@pytest.mark.parametrize("name", sorted(UNIVARIATE))
@pytest.mark.parametrize("x0", [0.35, 1.2, 2.5])
def test_chains_to_the_third_order(name, x0):
    f, expected = UNIVARIATE[name]
    for k, (q, r) in enumerate(zip(derivatives(f, x0, 3), expected(x0))):
        assert_close(q, r, f"{name}: derivative {k} at {x0}", rel=1e-11)


@pytest.mark.parametrize("x0", [-2.0, -0.3, 0.0, 0.7, 3.0])
def test_identities_have_the_same_derivatives(x0):
    # sigmoid(x) = (1 + tanh(x/2)) / 2, exp(log(x)) = x, log(exp(x)) = x, x / x = 1
    a = derivatives(lambda x: x.sigmoid(), x0, 4)
    b = derivatives(lambda x: (1 + (x / 2).tanh()) / 2, x0, 4)
    for k, (q, r) in enumerate(zip(a, b)):
        assert_close(q, r, f"sigmoid vs tanh, derivative {k}", rel=1e-12, abs_=1e-15)
    assert derivatives(lambda x: x.exp().log(), x0, 3)[1:] == pytest.approx([1, 0, 0], abs=1e-14)
    if x0 > 0:
        assert derivatives(lambda x: x.log().exp(), x0, 3)[1:] == pytest.approx([1, 0, 0], abs=1e-14)
    if x0 != 0:
        assert derivatives(lambda x: x / x, x0, 3)[1:] == pytest.approx([0, 0, 0], abs=1e-14)


def test_tenth_derivative_of_exp():
    # exp's derivative is the exp node itself, so its derivative graphs stay tiny
    got = derivatives(lambda x: (0.5 * x).exp(), 1.1, 10)
    for k, q in enumerate(got):
        assert_close(q, math.exp(0.55) * 0.5**k, f"derivative {k}")


# ---- every op's second derivatives against the math ----


# name -> (f, point, Hessian at the point)
def _pow_hessian(a, b):
    ln = math.log(a)
    cross = a ** (b - 1) * (1 + b * ln)
    return [[b * (b - 1) * a ** (b - 2), cross], [cross, a**b * ln * ln]]


def gelu_derivatives(a):
    """gelu(approximate='tanh') and its first two derivatives: with u = beta (a + kappa a^3)
    and t = tanh(u), s = 1 - t^2: gelu' = (1 + t) / 2 + a s u' / 2, and
    gelu'' = s u' + a s (u'' - 2 t u'^2) / 2."""
    beta, kappa = math.sqrt(2 / math.pi), 0.044715
    u1, u2 = beta * (1 + 3 * kappa * a * a), 6 * beta * kappa * a
    t = math.tanh(beta * (a + kappa * a**3))
    s = 1 - t * t
    return [0.5 * a * (1 + t), 0.5 * (1 + t) + 0.5 * a * s * u1, s * u1 + 0.5 * a * s * (u2 - 2 * t * u1 * u1)]


PER_OP = {
    "add": (lambda a, b: a + b, (0.3, -1.7), lambda a, b: [[0, 0], [0, 0]]),
    "sub": (lambda a, b: a - b, (0.3, -1.7), lambda a, b: [[0, 0], [0, 0]]),
    "mul": (lambda a, b: a * b, (0.3, -1.7), lambda a, b: [[0, 1], [1, 0]]),
    "truediv": (lambda a, b: a / b, (0.3, -1.7), lambda a, b: [[0, -1 / b**2], [-1 / b**2, 2 * a / b**3]]),
    "pow": (lambda a, b: a**b, (1.4, 2.6), _pow_hessian),
    "neg": (lambda a: -a, (0.8,), lambda a: [[0]]),
    "relu": (lambda a: a.relu(), (0.8,), lambda a: [[0]]),
    "tanh": (lambda a: a.tanh(), (0.8,), lambda a: [[tanh_derivatives(a)[2]]]),
    "exp": (lambda a: a.exp(), (0.8,), lambda a: [[math.exp(a)]]),
    "log": (lambda a: a.log(), (0.8,), lambda a: [[-1 / a**2]]),
    "sigmoid": (lambda a: a.sigmoid(), (0.8,), lambda a: [[sigmoid_derivatives(a)[2]]]),
    "sin": (lambda a: a.sin(), (0.8,), lambda a: [[-math.sin(a)]]),
    "cos": (lambda a: a.cos(), (0.8,), lambda a: [[-math.cos(a)]]),
    "sqrt": (lambda a: a.sqrt(), (0.8,), lambda a: [[-0.25 * a**-1.5]]),
    "abs": (lambda a: a.abs(), (-0.8,), lambda a: [[0]]),
    "gelu": (lambda a: a.gelu(), (0.8,), lambda a: [[gelu_derivatives(a)[2]]]),
    "softplus": (lambda a: a.softplus(), (0.8,), lambda a: [[sigmoid_derivatives(a)[1]]]),
    "detach": (lambda a: a.detach() * a * a, (0.8,), lambda a: [[2 * a]]),  # a constant times a^2
    "leaky_relu": (lambda a: a.leaky_relu(), (-0.8,), lambda a: [[0]]),
    "maximum": (pyautograd.maximum, (0.3, -1.7), lambda a, b: [[0, 0], [0, 0]]),
    "minimum": (pyautograd.minimum, (0.3, -1.7), lambda a, b: [[0, 0], [0, 0]]),
    # the new rows composed, so their derivatives pass a nonzero second derivative on
    "abs(x^3)": (lambda a: (a**3).abs(), (-0.8,), lambda a: [[-6 * a]]),
    "leaky_relu(x^3, c)": (lambda a: (a**3).leaky_relu(0.3), (-0.8,), lambda a: [[0.3 * 6 * a]]),
    "leaky_relu(x^3) > 0": (lambda a: (a**3).leaky_relu(0.3), (0.8,), lambda a: [[6 * a]]),
    "maximum(x * x, c)": (lambda a: pyautograd.maximum(a * a, 0.5), (0.8,), lambda a: [[2]]),
    "maximum(c, x * y)": (lambda a, b: pyautograd.maximum(-5.0, a * b), (0.3, -1.7), lambda a, b: [[0, 1], [1, 0]]),
    "minimum(c, x * x)": (lambda a: pyautograd.minimum(2.0, a * a), (0.8,), lambda a: [[2]]),
    "minimum(x ** 3, y)": (lambda a, b: pyautograd.minimum(a**3, b), (0.8, 1.7), lambda a, b: [[6 * a, 0], [0, 0]]),
    "sqrt(x * y)": (
        lambda a, b: (a * b).sqrt(),
        (0.8, 1.7),
        lambda a, b: [
            [-0.25 * b * b * (a * b) ** -1.5, 0.25 * (a * b) ** -0.5],
            [0.25 * (a * b) ** -0.5, -0.25 * a * a * (a * b) ** -1.5],
        ],
    ),
    "softplus(2x)": (lambda a: (2 * a).softplus(), (-1.3,), lambda a: [[4 * sigmoid_derivatives(2 * a)[1]]]),
    "sin(x) cos(y)": (
        lambda a, b: a.sin() * b.cos(),
        (0.8, 1.7),
        lambda a, b: [
            [-math.sin(a) * math.cos(b), -math.cos(a) * math.sin(b)],
            [-math.cos(a) * math.sin(b), -math.sin(a) * math.cos(b)],
        ],
    ),
    # with a number on one side (a constant: only the Value's derivatives)
    "x + c": (lambda a: a + 2.5, (0.8,), lambda a: [[0]]),
    "c - x": (lambda a: 2.5 - a, (0.8,), lambda a: [[0]]),
    "x * c": (lambda a: a * 2.5, (0.8,), lambda a: [[0]]),
    "c / x": (lambda a: 2.5 / a, (0.8,), lambda a: [[2 * 2.5 / a**3]]),
    "x / c": (lambda a: a / 2.5, (0.8,), lambda a: [[0]]),
    "x ** c": (lambda a: a**2.5, (0.8,), lambda a: [[2.5 * 1.5 * a**0.5]]),
    "c ** x": (lambda a: 2.5**a, (0.8,), lambda a: [[2.5**a * math.log(2.5) ** 2]]),
    "x ** -1": (lambda a: a**-1, (0.8,), lambda a: [[2 / a**3]]),
    "x * x": (lambda a: a * a, (0.8,), lambda a: [[2]]),
    "a + a": (lambda a: a + a, (0.8,), lambda a: [[0]]),
}


@pytest.mark.parametrize("name", sorted(PER_OP))
def test_second_derivatives_of_each_op(name):
    f, point, expected = PER_OP[name]
    _, _, h = hessian(f, point)
    for i, row in enumerate(expected(*point)):
        for j, r in enumerate(row):
            assert_close(h[i][j], r, f"{name}: d2/(d{i} d{j})")


# the internal rows: the op whose derivative graph they are made for (tested below)
INTERNAL_ROWS = {
    "step": "relu",
    "gate": "relu",
    "sign": "abs",
    "leaky_slope": "leaky_relu",
    "softplus_d": "softplus",
    "max_share": "maximum",
}


def test_every_op_of_the_c_table_has_a_second_derivative_test():
    tested = set(PER_OP) | {"sum", "dot"} | set(INTERNAL_ROWS)  # sum, dot: below
    assert set(OP_NAMES) - {"leaf", "const", "custom", "local"} <= tested
    assert set(INTERNAL_ROWS) == {n for c, n in enumerate(OP_NAMES) if OP_PYTHON[c] == "internal"}


def test_gelu_derivatives_closed_form_to_the_third_order():
    for x0 in (-3.0, -0.7, 0.0, 0.4, 1.9, 4.0):
        got = derivatives(lambda x: x.gelu(), x0, 3)
        for k, r in enumerate(gelu_derivatives(x0)):
            assert_close(got[k], r, f"gelu derivative {k} at {x0}", rel=1e-12, abs_=1e-15)
        # the third by a central difference of the closed-form second
        h = 1e-5
        third = (gelu_derivatives(x0 + h)[2] - gelu_derivatives(x0 - h)[2]) / (2 * h)
        assert abs(got[3] - third) <= 1e-8 * max(1.0, abs(third)), (x0, got[3], third)


@pytest.mark.parametrize("x0", [-2.0, 0.3, 1.9])
def test_sin_cos_softplus_sqrt_to_the_fourth_order(x0):
    s, c = math.sin(x0), math.cos(x0)
    for q, r in zip(derivatives(lambda x: x.sin(), x0, 4), [s, c, -s, -c, s]):
        assert_close(q, r, f"sin at {x0}")
    for q, r in zip(derivatives(lambda x: x.cos(), x0, 4), [c, -s, -c, s, c]):
        assert_close(q, r, f"cos at {x0}")
    sp = derivatives(lambda x: x.softplus(), x0, 3)
    assert_close(sp[0], math.log1p(math.exp(x0)))
    for q, r in zip(sp[1:], sigmoid_derivatives(x0)):
        assert_close(q, r, f"softplus at {x0}", rel=1e-11)
    if x0 > 0:
        for q, r in zip(
            derivatives(lambda x: x.sqrt(), x0, 3), [x0**0.5, 0.5 * x0**-0.5, -0.25 * x0**-1.5, 0.375 * x0**-2.5]
        ):
            assert_close(q, r, f"sqrt at {x0}")


def all_ops_of(value):
    return {n._op for n in all_nodes(value)}


@pytest.mark.parametrize(
    "row, make, x0, slope, second",
    [
        ("sign", lambda x: x.abs(), -1.5, -1.0, 0.0),
        ("sign", lambda x: x.abs(), 0.0, 0.0, 0.0),
        ("leaky_slope", lambda x: x.leaky_relu(0.25), -1.5, 0.25, 0.0),
        ("leaky_slope", lambda x: x.leaky_relu(0.25), 0.0, 0.25, 0.0),
        ("leaky_slope", lambda x: x.leaky_relu(0.25), 2.0, 1.0, 0.0),
        ("softplus_d", lambda x: x.softplus(), 0.5, sigmoid(0.5), sigmoid_derivatives(0.5)[1]),
        ("softplus_d", lambda x: x.softplus(), 30.0, 1.0, 0.0),
        ("max_share", lambda x: pyautograd.maximum(x, 0.5), 1.5, 1.0, 0.0),
        ("max_share", lambda x: pyautograd.maximum(x, 0.5), 0.5, 0.5, 0.0),
        ("max_share", lambda x: pyautograd.minimum(x, 0.5), 0.5, 0.5, 0.0),
        ("max_share", lambda x: pyautograd.minimum(x, 0.5), 1.5, 0.0, 0.0),
    ],
)
def test_the_new_rows_derivative_graphs_are_built_of_their_internal_rows(row, make, x0, slope, second):
    # abs passes back G * sign(a), leaky_relu G * leaky_slope(a, slope), softplus
    # G * softplus_d(a), maximum and minimum G times max_share (gated): the internal rows
    # are in the derivative graph, and their own derivatives give the second derivative
    x, w = Value(x0), Value(3.0)
    (g,) = grad(make(x) * w, x, create_graph=True)
    assert row in all_ops_of(g), all_ops_of(g)
    assert g.data == 3.0 * slope or close(g.data, 3.0 * slope)
    hx, hw = grad(g, [x, w], create_graph=True)
    assert_close(hx.data, 3.0 * second, f"{row}: d2/dx2")
    assert hw.data == slope or close(hw.data, slope)  # d/dw of w * f'(x)
    assert_close(grad(hw, x)[0].data, second, f"{row}: d/dx of d/dw")


def test_relu_derivative_graph_is_built_of_gate_and_step():
    # relu passes GATE(G, out) back: G where out > 0, else exactly 0; GATE passes back
    # GATE(G, s) to its first input, so relu's higher derivatives are built of gate nodes,
    # and step (GATE with a number G) shows up once the incoming gradient is a constant
    for x0, slope in ((1.5, 1.0), (-1.5, 0.0), (0.0, 0.0)):
        x = Value(x0)
        (g,) = grad(x.relu(), x, create_graph=True)
        assert g.data == slope and g._op == "gate"
        (h,) = grad(g, x, create_graph=True)
        assert h.data == 0.0  # relu's second derivative
        w = Value(2.0)
        (gw,) = grad(x.relu() * w, x, create_graph=True)  # G is w: gate(w, out)
        assert gw.data == 2.0 * slope and [p is w for p in gw._inputs][0]
        assert grad(gw, w)[0].data == slope  # d/dw of gate(w, out): step(out)


# ---- edge rules ----


@pytest.mark.parametrize("x0", [0.0, -0.0, 2.0, -3.0])
def test_x_to_the_0_has_exactly_0_derivatives(x0):
    x = Value(x0)
    (g,) = grad(x**0, x, create_graph=True)
    (h,) = grad(g, x, create_graph=True)
    (t,) = grad(h, x)
    assert (g.data, h.data, t.data) == (0.0, 0.0, 0.0)
    # with a Value exponent that is 0: d/dx is 0 by the rule, d/dy is 0 at base 0 (y >= 0)
    x, y = Value(x0), Value(0.0)
    gx, gy = grad(x**y, [x, y], create_graph=True)
    assert gx.data == 0.0
    hx = [h.data for h in grad(gx, [x, y])]
    assert hx == [0.0, 0.0]  # the rule makes d/dx a constant, so its derivatives are 0
    if x0 == 0:
        assert gy.data == 0.0 and [h.data for h in grad(gy, [x, y])] == [0.0, 0.0]


@pytest.mark.parametrize("x0", [-2.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 3.0, 1e300])
def test_relu_second_derivative_is_0_everywhere(x0):
    x = Value(x0)
    (g,) = grad(x.relu(), x, create_graph=True)
    assert g.data == (1.0 if x0 > 0 else 0.0)
    (h,) = grad(g, x, create_graph=True)
    assert h.data == 0.0
    assert grad(h, x)[0].data == 0.0
    # through relu: relu(x) * relu(x) is x^2 for x > 0, 0 below
    x = Value(x0)
    (g,) = grad(x.relu() * x.relu(), x, create_graph=True)
    assert grad(g, x)[0].data == (2.0 if x0 > 0 else 0.0)


@pytest.mark.parametrize("g_out", [math.inf, -math.inf, math.nan])
def test_relu_flat_side_passes_exactly_0_from_a_non_finite_gradient(g_out):
    # ops.h: where relu is flat the input gets exactly 0 even from an inf or nan gradient,
    # as backward() and PyTorch (where, not 0 * inf) have it: create_graph too
    x = Value(-1.0)
    y = x.relu() * g_out
    y.backward()
    assert x.grad == 0.0
    assert grad(y, x)[0].data == 0.0
    assert grad(y, x, create_graph=True)[0].data == 0.0


def test_pow_exponent_at_base_0_from_a_non_finite_gradient(torch):
    # d/db is 0 at base 0 by the rule, and an inf gradient times it is nan in backward(),
    # in grad() and in torch (grad * where(...)): create_graph=True must give the same
    x, y = Value(0.0), Value(2.0)
    z = (x**y) * math.inf
    tx = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    theirs = [t.item() for t in torch.autograd.grad(tx**ty * math.inf, [tx, ty])]
    plain = [g.data for g in grad(z, [x, y])]
    created = [g.data for g in grad(z, [x, y], create_graph=True)]
    assert all(math.isnan(v) for v in theirs + plain)
    assert all(math.isnan(v) for v in created), created


def test_a_gradient_that_cancels_to_0_still_multiplies_inf(torch):
    # u = a * w is used twice with opposite signs, so d f/d u is exactly 0; 0 * inf is nan
    # in backward(), in grad() and in torch, and create_graph=True must not skip it
    a, w = Value(1.0), Value(math.inf)
    u = a * w
    f = u - u
    ta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(math.inf, dtype=torch.float64, requires_grad=True)
    tu = ta * tw
    assert math.isnan(torch.autograd.grad(tu - tu, [ta])[0].item())
    assert math.isnan(grad(f, a)[0].data)
    assert math.isnan(grad(f, a, create_graph=True)[0].data)


@pytest.mark.parametrize("b0", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_pow_at_base_0(torch, b0):
    # PyTorch's rules: d/da is 0 where b == 0, d/db is 0 where a == 0 and b >= 0
    a, b = Value(0.0), Value(b0)
    ga, gb = grad(a**b, [a, b], create_graph=True)
    ta = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    tga, tgb = torch.autograd.grad(ta**tb, [ta, tb], create_graph=True)
    assert ga.data == tga.item()
    assert gb.data == 0.0 and tgb.item() == 0.0
    # d/da's own derivatives follow torch's
    ours = [h.data for h in grad(ga, [a, b])]
    theirs = [0.0 if t is None else t.item() for t in torch.autograd.grad(tga, [ta, tb], allow_unused=True)]
    for q, r in zip(ours, theirs):  # torch's is nan at b == 0 (0 * inf in the untaken branch)
        assert q == r or math.isnan(q) and math.isnan(r) or math.isnan(r) and math.isfinite(q), (ours, theirs)
    # d/db is 0 by the rule there: a constant, so its derivatives are exactly 0 (torch's
    # where() gives nan here, from 0 * log(0) in the branch it did not take)
    assert [h.data for h in grad(gb, [a, b])] == [0.0, 0.0]
    # and the second derivative in a alone against the math, where it is finite
    expected = {0.0: 0.0, 1.0: 0.0, 2.0: 2.0, 3.0: 0.0, 0.5: -math.inf}[b0]
    x = Value(0.0)
    (g,) = grad(x**b0, x, create_graph=True)
    assert grad(g, x)[0].data == expected


def test_pow_mixed_derivative_at_exponent_0_follows_torch(torch):
    # d/dx x**y = y x**(y-1) has d/dy = 1/x at y == 0 in the math; the x ** 0 rule (torch's
    # where) makes d/dx the constant 0 there, so both engines give 0
    x, y = Value(2.0), Value(0.0)
    gx, _ = grad(x**y, [x, y], create_graph=True)
    tx = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (tgx,) = torch.autograd.grad(tx**ty, [tx], create_graph=True)
    theirs = [0.0 if t is None else t.item() for t in torch.autograd.grad(tgx, [tx, ty], allow_unused=True)]
    assert [h.data for h in grad(gx, [x, y])] == theirs == [0.0, 0.0]


def test_second_derivatives_in_a_quotient_node_follow_torch(torch):
    # d/db of a / b is -G (a/b)/b, with a/b computed again as torch computes it: read from
    # the node t = a / b, the derivative graph went through t, and d/dt of d f/db for
    # f = t * t was -24 where torch gives -12.
    a, b = Value(1.5), Value(0.5)
    t = a / b
    f = t * t
    gb, _ = grad(f, [b, t], create_graph=True)
    ta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    tt = ta / tb
    tgb, _ = torch.autograd.grad(tt * tt, [tb, tt], create_graph=True)
    assert grad(gb, [t])[0].data == torch.autograd.grad(tgb, [tt])[0].item() == -12.0
    assert pyautograd.hvp(f, [b, t], [0.0, 1.0])[0].data == -12.0


def _tf(torch):
    return torch.nn.functional


# name -> (ours, torch's, point): the new rows at their kinks, ties and thresholds, where
# PyTorch's rules (abs'(0) = 0, leaky_relu'(0) = slope, G / 2 to each side of a tie,
# softplus exactly linear past 20) make every derivative a number; to the third order
KINKS = {
    "abs at 0": (lambda x: x.abs(), lambda t, x: x.abs(), (0.0,)),
    "abs at -0": (lambda x: x.abs(), lambda t, x: x.abs(), (-0.0,)),
    "abs(x) * abs(x) at 0": (lambda x: x.abs() * x.abs(), lambda t, x: x.abs() * x.abs(), (0.0,)),
    "abs(x * y) at 0": (lambda x, y: (x * y).abs(), lambda t, x, y: (x * y).abs(), (0.0, 1.5)),
    "leaky_relu at 0": (lambda x: x.leaky_relu(), lambda t, x: _tf(t).leaky_relu(x), (0.0,)),
    "leaky_relu(0.3) * x at 0": (lambda x: x.leaky_relu(0.3) * x, lambda t, x: _tf(t).leaky_relu(x, 0.3) * x, (0.0,)),
    "leaky_relu(-2) of x * y at 0": (
        lambda x, y: (x * y).leaky_relu(-2.0),
        lambda t, x, y: _tf(t).leaky_relu(x * y, -2.0),
        (0.0, 0.7),
    ),
    "relu * relu at 0": (lambda x: x.relu() * x.relu(), lambda t, x: x.relu() * x.relu(), (0.0,)),
    "maximum tie": (pyautograd.maximum, lambda t, x, y: t.maximum(x, y), (1.0, 1.0)),
    "minimum tie": (pyautograd.minimum, lambda t, x, y: t.minimum(x, y), (1.0, 1.0)),
    "maximum tie of 0 and -0": (pyautograd.maximum, lambda t, x, y: t.maximum(x, y), (0.0, -0.0)),
    "maximum(x * x, y) tie": (
        lambda x, y: pyautograd.maximum(x * x, y),
        lambda t, x, y: t.maximum(x * x, y),
        (1.0, 1.0),
    ),
    "minimum(x * y, x) tie": (
        lambda x, y: pyautograd.minimum(x * y, x) * y,
        lambda t, x, y: t.minimum(x * y, x) * y,
        (2.0, 1.0),
    ),
    "maximum(x, 2) tie": (
        lambda x: pyautograd.maximum(x, 2.0) ** 3,
        lambda t, x: t.maximum(x, t.tensor(2.0, dtype=t.float64)) ** 3,
        (2.0,),
    ),
    "minimum(2, x) tie": (
        lambda x: pyautograd.minimum(2.0, x).exp(),
        lambda t, x: t.minimum(t.tensor(2.0, dtype=t.float64), x).exp(),
        (2.0,),
    ),
    "maximum(x, x)": (lambda x: pyautograd.maximum(x, x) * x, lambda t, x: t.maximum(x, x) * x, (0.5,)),
    "softplus past 20": (lambda x: x.softplus(), lambda t, x: _tf(t).softplus(x), (20.5,)),
    "softplus(x * y) past 20": (lambda x, y: (x * y).softplus(), lambda t, x, y: _tf(t).softplus(x * y), (5.0, 6.0)),
    "softplus at 800": (lambda x: x.softplus(), lambda t, x: _tf(t).softplus(x), (800.0,)),
    "softplus at -800": (lambda x: x.softplus(), lambda t, x: _tf(t).softplus(x), (-800.0,)),
    "gelu at 0": (lambda x: x.gelu(), lambda t, x: _tf(t).gelu(x, approximate="tanh"), (0.0,)),
    "sqrt at 0": (lambda x: x.sqrt(), lambda t, x: x.sqrt(), (0.0,)),
    "sqrt at 4": (lambda x: x.sqrt(), lambda t, x: x.sqrt(), (4.0,)),
    "sin cos at 0": (lambda x: x.sin() * x.cos(), lambda t, x: x.sin() * x.cos(), (0.0,)),
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_kinks_ties_and_thresholds_to_the_third_order_follow_torch(torch, name):
    ours_f, theirs_f, point = KINKS[name]
    ours = our_hessian(ours_f, point, third=True)
    theirs = torch_hessian(torch, lambda *x: theirs_f(torch, *x), point, third=True)

    def flat(x):
        return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]

    for k, (q, r) in enumerate(zip(flat(ours), flat(theirs))):
        assert q == r or math.isnan(q) and math.isnan(r) or close(q, r, 1e-13, 0.0), (
            f"{name}: entry {k}: pyautograd {q!r}, torch {r!r}\n  ours {ours}\n  torch {theirs}"
        )


def test_the_kink_rules_are_the_numbers_pytorch_documents():
    # the same rules, written out: a changed rule fails here even if torch changed too
    x = Value(0.0)
    assert derivatives(lambda v: v.abs(), 0.0, 3)[1:] == [0.0, 0.0, 0.0]
    assert derivatives(lambda v: v.leaky_relu(), 0.0, 3)[1:] == [0.01, 0.0, 0.0]
    assert derivatives(lambda v: v.leaky_relu(0.3), -0.0, 3)[1:] == [0.3, 0.0, 0.0]
    assert derivatives(lambda v: v.relu(), 0.0, 3)[1:] == [0.0, 0.0, 0.0]
    assert derivatives(lambda v: v.softplus(), 20.5, 3)[1:] == [1.0, 0.0, 0.0]
    assert derivatives(lambda v: pyautograd.maximum(v, 1.0), 1.0, 3)[1:] == [0.5, 0.0, 0.0]
    assert derivatives(lambda v: pyautograd.minimum(1.0, v), 1.0, 3)[1:] == [0.5, 0.0, 0.0]
    assert derivatives(lambda v: pyautograd.maximum(v * v, 1.0), 1.0, 2)[1:] == [1.0, 1.0]
    assert derivatives(lambda v: v.sqrt(), 0.0, 1)[1] == math.inf
    x, y = Value(1.0), Value(1.0)
    gx, gy = grad(pyautograd.maximum(x, y) * 3.0, [x, y], create_graph=True)
    assert (gx.data, gy.data) == (1.5, 1.5)
    assert [h.data for h in grad(gx, [x, y])] == [0.0, 0.0]


def test_negative_base_to_a_constant_power_under_detect_anomaly():
    # x ** 3 at x < 0 is a polynomial: nothing in it or its derivatives is nan or inf.
    # Its derivative graph must not make the log of a negative base for the constant
    # exponent (nothing needs a constant's gradient), so anomaly mode stays quiet.
    x = Value(-2.0)
    (g,) = grad(x**3, x, create_graph=True)
    with pyautograd.detect_anomaly():
        (h,) = grad(g, x, create_graph=True)
        assert h.data == -12.0
        assert grad(g, x)[0].data == -12.0
        assert grad(h, x)[0].data == 6.0


# ---- sum, dot, losses, softmax, log_softmax: against torch float64 ----


def torch_hessian(torch, f, point, third=False):
    """(value, gradient, Hessian[, d/dx of every Hessian entry]) of f at point in torch."""
    xs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in point]
    y = f(*xs)

    def d(out, create):
        if not out.requires_grad:
            return [torch.zeros((), dtype=torch.float64) for _ in xs]
        return [
            torch.zeros((), dtype=torch.float64) if t is None else t
            for t in torch.autograd.grad(out, xs, create_graph=create, retain_graph=True, allow_unused=True)
        ]

    first = d(y, True)
    second = [d(g, third) for g in first]
    out = [y.item(), [g.item() for g in first], [[h.item() for h in row] for row in second]]
    if third:
        out.append([[[t.item() for t in d(h, False)] for h in row] for row in second])
    return out


def our_hessian(f, point, third=False):
    xs = [Value(v) for v in point]
    y = f(*xs)
    first = grad(y, xs, create_graph=True)
    second = [grad(g, xs, create_graph=True) for g in first]
    out = [y.data, [g.data for g in first], [[h.data for h in row] for row in second]]
    if third:
        out.append([[[t.data for t in grad(h, xs)] for h in row] for row in second])
    return out


def assert_matches_torch(ours, theirs, what):
    """Every entry within 1e-10 relative, plus 1e-13 of the largest entry of its kind
    (a Hessian entry that cancels to ~0 carries the rounding of the large ones)."""

    def flat(x):
        return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]

    for kind, (q_all, r_all) in enumerate(zip(ours, theirs)):
        q_all, r_all = flat(q_all), flat(r_all)
        scale = max(abs(r) for r in r_all)
        for k, (q, r) in enumerate(zip(q_all, r_all)):
            assert close(q, r, 1e-10, 1e-13 * scale), (
                f"{what}, derivative order {kind} entry {k}: pyautograd {q!r}, torch {r!r}"
            )


def _nonlinear_terms(xs):
    return [xs[0].tanh(), xs[1] * xs[2], xs[0] ** 3, xs[2].exp(), 0.5]


SUM_DOT_LOSS_CASES = {
    "sum": (lambda *x: F.sum(_nonlinear_terms(x), x[1]), lambda t, *x: x[1] + sum(_nonlinear_terms(x))),
    "dot": (
        lambda *x: F.dot([x[0].tanh(), x[1], 2.0], [x[1], x[2].exp(), x[0]], x[0] * x[2]),
        lambda t, *x: x[0] * x[2] + x[0].tanh() * x[1] + x[1] * x[2].exp() + 2.0 * x[0],
    ),
    "dot of squares": (
        lambda *x: F.dot(x, x).sigmoid(),
        lambda t, *x: (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sigmoid(),
    ),
    "mse": (
        lambda *x: losses.mse([x[0] * x[1], x[1].tanh(), x[2] ** 2], [0.5, -1.0, 2.0]),
        lambda t, *x: t.nn.functional.mse_loss(
            t.stack([x[0] * x[1], x[1].tanh(), x[2] ** 2]), t.tensor([0.5, -1.0, 2.0], dtype=t.float64)
        ),
    ),
    "hinge": (
        lambda *x: losses.hinge([x[0] * x[1], x[2] * x[0], x[1] - 3], [1, -1, -1]),
        lambda t, *x: ((1 - x[0] * x[1]).relu() + (1 + x[2] * x[0]).relu() + (1 + (x[1] - 3)).relu()) * (1.0 / 3),
    ),
    "binary_cross_entropy_with_logits": (
        lambda *x: losses.binary_cross_entropy_with_logits([x[0] * x[1], x[2], x[1] - x[0]], [1.0, 0.0, 0.3]),
        lambda t, *x: t.nn.functional.binary_cross_entropy_with_logits(
            t.stack([x[0] * x[1], x[2], x[1] - x[0]]), t.tensor([1.0, 0.0, 0.3], dtype=t.float64)
        ),
    ),
    "cross_entropy": (
        lambda *x: losses.cross_entropy([[x[0], x[1] * x[2], x[2]], [x[1], x[0] ** 2, -x[2]]], [1, 2]),
        lambda t, *x: t.nn.functional.cross_entropy(
            t.stack([t.stack([x[0], x[1] * x[2], x[2]]), t.stack([x[1], x[0] ** 2, -x[2]])]), t.tensor([1, 2])
        ),
    ),
    "softmax": (
        lambda *x: F.dot(F.softmax([x[0], x[1] * 2, x[2], x[0] * x[1]]), [1.0, -2.0, 0.5, 3.0]),
        lambda t, *x: (
            t.softmax(t.stack([x[0], x[1] * 2, x[2], x[0] * x[1]]), 0)
            * t.tensor([1.0, -2.0, 0.5, 3.0], dtype=t.float64)
        ).sum(),
    ),
    "log_softmax": (
        lambda *x: F.dot(F.log_softmax([x[0], x[1].tanh(), x[2] * 3]), [0.2, -1.0, 0.7]),
        lambda t, *x: (
            t.log_softmax(t.stack([x[0], x[1].tanh(), x[2] * 3]), 0) * t.tensor([0.2, -1.0, 0.7], dtype=t.float64)
        ).sum(),
    ),
    "softmax of large logits": (
        lambda *x: F.softmax([x[0] * 400, x[1] * 400, x[2]])[0],
        lambda t, *x: t.softmax(t.stack([x[0] * 400, x[1] * 400, x[2]]), 0)[0],
    ),
}


@pytest.mark.parametrize("name", sorted(SUM_DOT_LOSS_CASES))
@pytest.mark.parametrize("point", [(0.3, -0.8, 1.1), (-1.2, 0.45, 0.05)])
def test_second_and_third_derivatives_match_torch(torch, name, point):
    ours_f, theirs_f = SUM_DOT_LOSS_CASES[name]
    ours = our_hessian(ours_f, point, third=True)
    theirs = torch_hessian(torch, lambda *x: theirs_f(torch, *x), point, third=True)
    assert_matches_torch(ours, theirs, f"{name} at {point}")


# ---- the contract of grad() ----


def test_an_input_the_output_does_not_depend_on_gets_0():
    x, y, z = Value(1.5), Value(-2.0), Value(3.0)
    f = x * x
    for create_graph in (False, True):
        gx, gy, gz = grad(f, [x, y, z], create_graph=create_graph)
        assert (gx.data, gy.data, gz.data) == (3.0, 0.0, 0.0)
        assert gy._prev == set() and gz._prev == set()
    # and at second order: d/dy of d f/dx, with y somewhere else in the arena
    (gx,) = grad(f, x, create_graph=True)
    assert [h.data for h in grad(gx, [y, x])] == [0.0, 2.0]
    # an input whose one path is multiplied by 0: the chain rule's 0, not a missing path
    assert grad(x * 0, x)[0].data == 0.0
    # and an interior node of another graph
    other = y.exp()
    assert grad(f, other)[0].data == 0.0


def test_grad_of_a_leaf_with_respect_to_itself_is_1():
    x = Value(-4.25)
    for create_graph in (False, True):
        (g,) = grad(x, x, create_graph=create_graph)
        assert g.data == 1.0
        assert grad(g, x)[0].data == 0.0
    y = x * 3
    assert grad(y, y)[0].data == 1.0  # an interior node too


def test_grad_with_respect_to_an_interior_node():
    x = Value(0.6)
    u = x.tanh()
    y = u * u + x
    gu, gx = grad(y, [u, x])
    assert_close(gu.data, 2 * math.tanh(0.6))
    assert_close(gx.data, 2 * math.tanh(0.6) * (1 - math.tanh(0.6) ** 2) + 1)


def test_inputs_may_repeat_and_be_any_iterable():
    x, y = Value(2.0), Value(5.0)
    f = x * y
    got = grad(f, (v for v in [x, y, x]), create_graph=True)
    assert [g.data for g in got] == [5.0, 2.0, 5.0]
    assert grad(f, []) == []
    assert [g.data for g in grad(f, x)] == [5.0]  # one Value: a list of one


def all_nodes(root):
    """Every Value under root (by _prev), each once."""
    seen, stack, out = {id(root)}, [root], [root]
    while stack:
        for child in stack.pop()._prev:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
                out.append(child)
    return out


def scribble(nodes, rng):
    """Sets every node's grad to an arbitrary number (a nan and an inf among them);
    returns them."""
    for n in nodes:
        n.grad = rng.uniform(-100, 100)
    nodes[0].grad, nodes[-1].grad = math.nan, -math.inf
    return [n.grad for n in nodes]


def same_grads(nodes, before):
    return all(n.grad == g or math.isnan(n.grad) and math.isnan(g) for n, g in zip(nodes, before))


@pytest.mark.parametrize("create_graph", [False, True])
def test_no_grad_is_touched(create_graph):
    rng = random.Random(12)
    x, y = Value(0.7), Value(-1.3)
    a = x * y
    b = a.tanh() + x**2
    f = F.dot([b, a], [x.exp(), y.sigmoid()], b.relu()) / (1 + y * y)
    nodes = all_nodes(f)
    before = scribble(nodes, rng)
    gs = grad(f, [x, y, a], create_graph=create_graph)
    assert same_grads(nodes, before)
    assert all(g.grad == 0.0 for g in gs)
    if create_graph:  # and the derivative graphs' own nodes, at the next order
        derivative_nodes = list({id(n): n for g in gs for n in all_nodes(g)}.values())
        before_d = scribble(derivative_nodes, rng)
        before = [n.grad for n in nodes]
        hs = [grad(g, [x, y], create_graph=True) for g in gs]
        third = grad(hs[0][1], [x, y])
        assert same_grads(derivative_nodes, before_d) and same_grads(nodes, before)
        assert all(h.grad == 0.0 for row in hs + [third] for h in row)
    # and the numbers are those backward() gives
    for n in nodes:
        n.grad = 0.0
    f.backward()
    assert [g.data for g in gs] == [x.grad, y.grad, a.grad]


def test_backward_and_grad_are_unchanged():
    # backward() still accumulates into .grad, grad() does not, in any order
    x = Value(3.0)
    y = x * x
    y.backward()
    (g,) = grad(y, x, create_graph=True)
    y.backward()
    assert x.grad == 12.0 and g.data == 6.0
    g.backward()  # a derivative graph is an ordinary graph: backward works on it
    assert x.grad == 14.0


def test_bad_arguments_raise_type_errors_naming_them():
    x = Value(1.0)
    y = x * 2
    with pytest.raises(TypeError, match=r"grad\(\) output must be a Value, not 'float'"):
        grad(2.0, [x])
    with pytest.raises(TypeError, match=r"grad\(\) output must be a Value, not 'list'"):
        grad([y], [x])
    with pytest.raises(TypeError, match=r"grad\(\).*inputs.*'str'"):
        grad(y, [x, "x"])
    with pytest.raises(TypeError, match=r"grad\(\).*inputs.*'int'"):
        grad(y, 3)
    with pytest.raises(TypeError, match=r"grad\(\).*inputs.*'NoneType'"):
        grad(y, None)
    with pytest.raises(TypeError):
        grad(y, [x], True)  # create_graph is keyword-only


def python_square(x, factor=2.0, op="square"):
    """x * x as a micrograd-style node with a Python _backward (factor 2 is right)."""
    out = Value(x.data * x.data, (x,), op)

    def _backward():
        x.grad += factor * x.data * out.grad

    out._backward = _backward
    return out


def test_python_backward_works_without_create_graph():
    x = Value(1.5)
    y = python_square(x.tanh()) * 3
    for n in all_nodes(y):
        n.grad = 7.0
    (g,) = grad(y, x)
    t = math.tanh(1.5)
    assert_close(g.data, 6 * t * (1 - t * t))
    assert all(n.grad == 7.0 for n in all_nodes(y))


def test_python_backward_with_create_graph_raises_naming_the_node():
    x = Value(1.5)
    y = python_square(x.tanh(), op="my_square") * 3
    nodes = all_nodes(y)
    before = scribble(nodes, random.Random(3))
    gc.collect()
    live = stats()["live_nodes"]
    with pytest.raises(RuntimeError, match=r"_backward.*Python.*'my_square'.*0\.8"):
        grad(y, x, create_graph=True)
    gc.collect()
    assert stats()["live_nodes"] == live  # the derivative graph made so far is freed
    assert same_grads(nodes, before)  # and every grad is put back on the error path too


def test_hand_made_nodes_with_numbers_for_derivatives():
    # Value(data, children, local_grads): its derivatives are numbers, constant to grad()
    x = Value(0.5)
    y = Value(x.data**2, (x,), (2 * x.data,)) * x
    (g,) = grad(y, x, create_graph=True)
    assert g.data == 0.75  # 2x * x + x^2
    # the local gradient 2x is the number 1.0 to grad(): d/dx (x * 1.0 + h) = 1 + 1, not
    # x^3's 6x = 3
    assert grad(g, x)[0].data == 2.0
    # a Value(data, children, op) with no _backward passes nothing
    z = Value(3.0, (x,), "opaque")
    assert grad(z * x, x, create_graph=True)[0].data == 3.0


def test_results_keep_one_python_object_per_node():
    # d(a*b)/da is b's node and d exp(x)/dx is exp(x)'s: the Values the user holds must
    # stay their nodes' Values (invariant 8)
    a, b = Value(2.0), Value(3.0)
    c = a * b
    (g,) = grad(c, a, create_graph=True)
    assert g.data == 3.0
    assert any(p is b for p in c._prev)
    x = Value(0.5)
    y = x.exp()
    (g,) = grad(y, x, create_graph=True)
    del g
    assert [p for p in (y + 1)._prev if p is y] == [y]


def test_results_and_python_state_survive_their_graph():
    # a node the user gave attributes pins its Value while the node has users; a grad()
    # result for that node must not unbalance that (this crashed: run apart)
    script = textwrap.dedent("""
        import gc
        from pyautograd import Value, grad
        a, b = Value(2.0), Value(3.0)
        b.tag = "state"
        c = a * b
        (g,) = grad(c, a, create_graph=True)
        del c
        print(g.data, b.data, b.tag)
        del g
        gc.collect()
        print(b, b.tag)
        keep = [Value(float(i)) for i in range(1000)]
        gc.collect()
        print("done")
    """)
    # run from elsewhere: from the repository root, `import pyautograd` finds the source tree
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir()
    )
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.splitlines()[-1] == "done"


def test_derivative_graphs_are_freed():
    gc.collect()
    baseline = stats()["live_nodes"]
    peak = baseline
    for k in range(30):
        x, y = Value(0.1 * k), Value(1.3)
        f = F.dot([x.tanh(), y], [y**x, x.sigmoid()], (x * y).exp()).log()
        first = grad(f, [x, y], create_graph=True)
        second = [grad(g, [x, y], create_graph=True) for g in first]
        third = [grad(h, [x, y]) for row in second for h in row]
        peak = max(peak, stats()["live_nodes"])
        plain = grad(f, [x, y])
        del x, y, f, first, second, third, plain
    gc.collect()
    assert peak > baseline + 100  # the derivative graphs were really there
    assert stats()["live_nodes"] == baseline


def test_a_derivative_outlives_its_graph():
    # the result keeps what it needs alive; the rest of the graph goes
    gc.collect()
    baseline = stats()["live_nodes"]
    x = Value(0.9)
    f = (x * x).tanh() * x.exp()
    (g,) = grad(f, x, create_graph=True)
    del f
    (h,) = grad(g, x)
    t = math.tanh(0.81)
    dg = math.exp(0.9) * (t + 2 * 0.9 * (1 - t * t))
    assert_close(g.data, dg)
    del g, h, x
    gc.collect()
    assert stats()["live_nodes"] == baseline


# ---- gradcheck and gradgradcheck ----

GOOD_FUNCTIONS = {
    "polynomial": (lambda x, y: 3 * x**3 * y - x * y * y + 2, (0.7, -1.1)),
    "pow both": (lambda x, y: x**y, (1.3, 0.6)),
    "chains": (lambda x, y: (x.tanh() * y.sigmoid()).exp() + (1 + x * x).log() / y, (0.4, 1.7)),
    "softmax": (lambda x, y, z: F.dot(F.softmax([x, y * z, z]), [1.0, 2.0, -1.0]), (0.2, -0.4, 0.9)),
    "cross_entropy": (lambda x, y, z: losses.cross_entropy([x, y, z * x], 1), (0.5, -0.3, 1.2)),
    "dot": (lambda x, y, z: F.dot([x, y], [y.exp(), z], x * z), (0.3, 0.8, -0.5)),
    "python _backward, right": (lambda x: python_square(x.tanh()) * x, (0.8,)),
}


@pytest.mark.parametrize("name", sorted(GOOD_FUNCTIONS))
def test_gradcheck_passes_correct_functions(name):
    fn, point = GOOD_FUNCTIONS[name]
    assert gradcheck(fn, [Value(v) for v in point]) is True
    if "python" in name:  # a Python _backward has no second derivative to check
        with pytest.raises(RuntimeError, match="_backward"):
            gradgradcheck(fn, [Value(v) for v in point])
    else:
        assert gradgradcheck(fn, [Value(v) for v in point]) is True


def test_gradcheck_names_the_worst_input():
    def fn(x, y, z):  # y's derivative is 5% off, z's 25%: z is the worst
        return python_square(x) + python_square(y, factor=2.1) + python_square(z, factor=2.5)

    xs = [Value(0.5), Value(-1.0), Value(0.75)]
    with pytest.raises(GradcheckError, match=r"gradcheck: the derivative in input 2 \(data 0\.75\)"):
        gradcheck(fn, xs)
    assert [x.data for x in xs] == [0.5, -1.0, 0.75]  # the inputs are put back


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
@pytest.mark.parametrize("fails_at", ["up", "down"])
def test_a_gradcheck_whose_fn_raises_puts_every_input_back(check, fails_at):
    # fn works at the point (the analytical pass) and raises at a perturbed one: on the
    # way up (data + eps) or on the way down (data - eps) of the second input
    def fn(x, y):
        if (fails_at == "up" and y.data > 2.0) or (fails_at == "down" and y.data < 2.0):
            raise ArithmeticError("fn fails away from the point")
        return x * y * y

    xs = [Value(1.0), Value(2.0)]
    with pytest.raises(ArithmeticError, match="away from the point"):
        check(fn, xs)
    assert [x.data for x in xs] == [1.0, 2.0]


def test_gradgradcheck_names_the_worst_entry():
    # hand-made nodes with numbers for derivatives have the right first derivatives, but
    # grad() treats those numbers as constants, so the second derivatives are 0
    def fn(x, y):
        return Value(x.data**2 + y.data**3, (x, y), (2 * x.data, 3 * y.data**2))

    xs = [Value(0.5), Value(2.0)]
    assert gradcheck(fn, xs) is True
    with pytest.raises(GradcheckError, match=r"gradgradcheck: the derivative in d2/\(d input 1 d input 1\)"):
        gradgradcheck(fn, xs)


def test_gradcheck_bad_arguments():
    x = Value(1.0)
    with pytest.raises(TypeError, match="gradcheck"):
        gradcheck(lambda v: v, [1.0])
    with pytest.raises(TypeError, match="gradgradcheck"):
        gradgradcheck(lambda v: v, ["x"])
    with pytest.raises(TypeError, match="gradcheck"):
        gradcheck(lambda v: 2.0, [x])
    with pytest.raises(ValueError, match="at least one input"):
        gradcheck(lambda: Value(1.0), [])
    for check in (gradcheck, gradgradcheck):  # eps=0 once divided by zero, atol=-1 passed
        for kwargs, error in [
            ({"eps": 0}, ValueError),
            ({"eps": float("nan")}, ValueError),
            ({"atol": -1.0}, ValueError),
            ({"rtol": "a"}, TypeError),
            ({"eps": True}, TypeError),
        ]:
            with pytest.raises(error, match=f"{check.__name__}\\(\\) {next(iter(kwargs))}"):
                check(lambda v: v * v, [x], **kwargs)


def test_gradcheck_catches_a_nan_derivative():
    x = Value(2.0)

    def bad(x):
        out = Value(x.data, (x,), "nan_rule")

        def _backward():
            x.grad += math.nan * out.grad

        out._backward = _backward
        return out

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(bad, [x])


# ---- differential fuzzing against torch float64: second and third derivatives ----
#
# Random graphs over every differentiable op of the C table (the first-order fuzzer's
# shapes: random DAGs with shared subexpressions, numbers on either side and Value
# exponents; deep chains; wide n-ary sum/dot with every node used by the root), built
# node by node in both engines. For each graph: every node's value, the gradient of the
# root in every leaf, the full Hessian (grad of each gradient) and third derivatives (grad
# of Hessian entry (i, i+1) for each i), all by grad(create_graph=True) here and by
# torch.autograd.grad(create_graph=True) there. Also, in our engine alone: the same
# derivatives with create_graph=False are bitwise those with create_graph=True (one
# sweep, read two ways).
#
# The new rows' domains: kinks and ties stay in (abs, relu and leaky_relu at 0, maximum and
# minimum at a tie: both engines follow PyTorch's rules there, so their derivatives of
# every order are numbers both give; where rounding decides the side, the perturbed runs
# take both sides and D says so). Left out, by swapping the op as below:
# - gelu outside [-4, 4], where tanh is within 1e-4 of +-1: our derivative graph computes
#   sech^2 as 1 - tanh^2 (ops.h), torch's double backward as 1 / cosh^2, and the
#   cancellation rounds them apart by more than 1e-10 (past |x| ~ 5.5, 1 - tanh^2 is
#   exactly 0 where torch's is ~1e-19), and 1 + tanh cancels in the first derivative
#   below -4.5;
# - softplus in [12, 20], where 1 - softplus' cancels in the second derivative (the
#   engines round it apart by ~1e-10), and at 20 exactly torch's second derivative
#   switches off (x < 20) while its first still takes the smooth branch (x > 20 is false);
# - maximum and minimum at a nan, where torch passes the gradient to both inputs and
#   we pass 0 to both.
# Not left out, and rare at the default seed: abs, maximum and minimum of a node whose own
# derivative is inf or nan (x * inf, x / 0, a nan). Their internal rows pass the number 0
# back, which the sweep passes on (0 * inf = nan), where torch differentiates nothing
# through sgn or its masks and gives 0; PYAUTOGRAD_FUZZ_EXAMPLES runs can show it.
#
# Leaves are mostly in [-3, 3], sometimes exact edges (0, -0, +-1, 0.5, 2, 1e-3, +-8, 15:
# pow at base 0, tanh and sigmoid near saturation), rarely inf or nan (nothing may crash).
# Ops are swapped where the engines differ on purpose, as in test_fuzz_torch.py.
#
# What agreement means, for our q against torch's r:
#     |q - r| <= 1e-10 |r| + 8 D      where both are finite
# D is how far rounding can move r, measured: torch builds the graph twice more, with
# every computed node multiplied by its own random factor 1 + d and the gradient along
# every edge multiplied by another (|d| in [2^-41, 2^-40], 2,000-4,000 ulp), and D is the
# largest change of r. tanh and sigmoid take their factor inside, on the output their
# derivative formulas read (1 - out^2 is where an ulp of tanh is amplified near
# saturation); the edge factors stand for the sums of gradient contributions, which the
# engines add in different orders. Well-conditioned results move by ~1e-12 |r|, far
# below the 1e-10 |r| term, so there the check is plain relative error; D only matters
# where the result really depends on rounding (cancellation, saturation, a relu of a
# difference of nearly equal numbers), which is where the engines' ulp differences
# (torch's tanh/exp/log are not the C library's) can legitimately show.
# Non-finite results: where torch's r is inf or nan, nothing is claimed (pow at base 0 is
# such a place on purpose: torch differentiates the branch its where() did not take into
# 0 * inf = nan, we give the rule's exact 0). Where r is finite and stays finite in both
# perturbed runs, q must be finite too; where a perturbed run is not finite, rounding may
# decide the category and nothing is claimed.
# Each test asserts that most entries were compared, nearly all strictly (the slack
# cannot make it vacuous), and that derivatives of every order were compared nonzero;
# test_the_fuzz_check_catches_a_wrong_second_derivative shows the check fails when a
# second or third derivative is off by one part in 10^9.
#
# PYAUTOGRAD_FUZZ_EXAMPLES=N runs N/2000 times the default number of graphs of each shape
# (600 random, 40 deep, 150 wide) with a fresh seed each run (failures print it); by
# default a fixed seed, ~8 s here.

FUZZ_UNARY = ["neg", "relu", "tanh", "exp", "log", "sigmoid", "sin", "cos", "sqrt", "abs", "gelu", "softplus"]
FUZZ_SLOPED = ["leaky_relu"]  # v.leaky_relu(slope): the slope is a number, one of FUZZ_SLOPES
FUZZ_BINARY = ["add", "sub", "mul", "truediv", "pow", "maximum", "minimum"]
FUZZ_NARY = ["sum", "dot"]
FUZZ_OPS = FUZZ_UNARY + FUZZ_SLOPED + FUZZ_BINARY + FUZZ_NARY
FUZZ_SLOPES = [0.01, 0.2, -0.5, 1.5, 0.0]  # 0.01: v.leaky_relu() (the default)
FUZZ_CONSTANTS = [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, -0.5, 2.5, 0.1, 1e-3]
FUZZ_EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-3, 8.0, -8.0, 15.0]
FUZZ_RARE_EDGES = [math.inf, -math.inf, math.nan]
SLACK = 8
PERTURBATION = 2.0**-40
PERTURBED_RUNS = 2

_EXTRA = int(os.environ.get("PYAUTOGRAD_FUZZ_EXAMPLES", "0"))


def fuzz_count(default):
    """How many graphs: the default (a fixed seed), or PYAUTOGRAD_FUZZ_EXAMPLES scaled as
    test_fuzz_torch.py scales it (a fresh seed each run)."""
    return max(1, _EXTRA * default // 2000) if _EXTRA else default


def fuzz_seed(name):
    return random.randrange(1 << 32) if _EXTRA else sum(map(ord, name))


def random_leaf(rng):
    roll = rng.random()
    if roll < 0.7:
        return rng.uniform(-3.0, 3.0)
    if roll < 0.97:
        return rng.choice(FUZZ_EDGES)
    return rng.choice(FUZZ_RARE_EDGES)


def random_instruction(rng, pool, width, recent=4, ops=FUZZ_OPS):
    """(op, refs, constant, constant_first): op applied to nodes refs (and a number)."""
    op = rng.choice(ops)
    first = pool - 1 - rng.randrange(min(recent, pool))
    if op in FUZZ_NARY:
        return op, [first] + [rng.randrange(pool) for _ in range(width - 1)], None, False
    if op in FUZZ_UNARY:
        return op, [first], None, False
    if op in FUZZ_SLOPED:
        return op, [first], rng.choice(FUZZ_SLOPES), False
    form = rng.choice(["vv", "vc", "cv"])
    if form == "vv":
        return op, [first, rng.randrange(pool)], None, False
    return op, [first], rng.choice(FUZZ_CONSTANTS), form == "cv"


def subnormal(x):
    return 0 < abs(x) < sys.float_info.min


class FuzzGraph:
    """A program (leaves, then instructions), built in our engine at once; torch builds
    it on demand, plain or perturbed. Ops are swapped where the engines differ on purpose,
    as in test_fuzz_torch.py: relu at nan, log at a subnormal and division by one; and
    where the new rows leave the domain this fuzz can judge (see the comment above
    FUZZ_UNARY): gelu outside [-4, 4], softplus in [12, 20], maximum and minimum at a
    nan."""

    def __init__(self, leaves):
        self.leaves = list(leaves)
        self.ours = [Value(x) for x in self.leaves]
        self.program = []
        self.trace = [f"n{i} = leaf({x!r})" for i, x in enumerate(self.leaves)]

    def add(self, op, refs, constant=None, constant_first=False):
        value = self.ours[refs[0]].data
        if op == "relu" and math.isnan(value):
            op = "neg"
        if op == "log" and subnormal(value):
            op = "neg"
        divisor = constant if constant is not None and not constant_first else self.ours[refs[-1]].data
        if op == "truediv" and subnormal(divisor):
            op = "mul"
        if op == "gelu" and not -4.0 <= value <= 4.0:
            op = "neg"
        if op == "softplus" and 12.0 <= value <= 20.0:
            op = "neg"
        if op in ("maximum", "minimum") and any(
            math.isnan(x) for x in [self.ours[r].data for r in refs] + [constant or 0.0]
        ):
            op = "add"
        args = [self.ours[i] for i in refs]
        self.ours.append(apply_op(op, args, constant, constant_first, _OURS))
        self.program.append((op, list(refs), constant, constant_first))
        shown = [f"n{r}" for r in refs]
        if constant is not None:
            shown.insert(0 if constant_first else 1, repr(constant))
        self.trace.append(f"n{len(self.ours) - 1} = {op}({', '.join(shown)})")
        return len(self.ours) - 1

    def build_torch(self, torch, rng=None):
        """The graph in torch: (leaves, nodes). With rng, every computed node is
        multiplied by its own 1 + d (see above)."""
        leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in self.leaves]
        nodes = list(leaves)
        kit = _torch_kit(torch)
        for op, refs, constant, constant_first in self.program:
            factor, args = None, [nodes[i] for i in refs]
            if rng is not None:
                factor = perturbation(rng)
                args = [kit["perturbed edge"](a, perturbation(rng)) for a in args]
            if constant is not None:
                constant = torch.tensor(constant, dtype=torch.float64)
            nodes.append(apply_op(op, args, constant, constant_first, kit, factor))
        return leaves, nodes


def perturbation(rng):
    return 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * PERTURBATION


_OURS = {
    "sum": lambda args: F.sum(args),
    "dot": lambda args: F.dot(
        args[0 : len(args) - 1 : 2] if len(args) % 2 else args[0::2],
        args[1 : len(args) - 1 : 2] if len(args) % 2 else args[1::2],
        args[-1] if len(args) % 2 else 0,
    ),
    "tanh": lambda a: a.tanh(),
    "sigmoid": lambda a: a.sigmoid(),
    "gelu": lambda a: a.gelu(),
    "softplus": lambda a: a.softplus(),
    "leaky_relu": lambda a, slope: a.leaky_relu() if slope == 0.01 else a.leaky_relu(slope),
    "maximum": pyautograd.maximum,
    "minimum": pyautograd.minimum,
}

# ops each engine spells its own way (kit[op](*args)); the rest are methods or operators
_KIT_OPS = {"gelu", "softplus", "leaky_relu", "maximum", "minimum"}

_BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}


def apply_op(op, args, constant, constant_first, kit, factor=None):
    """op on args (Values or tensors; kit holds the engine's sum, dot, tanh, sigmoid)."""
    if constant is not None:
        args = [constant, args[0]] if constant_first else [args[0], constant]
    if op in ("tanh", "sigmoid"):
        return kit[op](args[0]) if factor is None else kit["perturbed " + op](args[0], factor)
    if op in ("sum", "dot"):
        out = kit[op](args)
    elif op in _KIT_OPS:
        out = kit[op](*args)
    elif op == "neg":
        out = -args[0]
    elif op in ("relu", "exp", "log", "sin", "cos", "sqrt", "abs"):
        out = getattr(args[0], op)()
    else:
        out = _BINARY_OPS[op](*args)
    return out if factor is None else out * factor


_TORCH_KITS = {}


def _torch_kit(torch):
    """sum and dot as our engine evaluates them (left to right, the bias first), and tanh
    and sigmoid with a factor applied to the output their derivatives are computed from."""
    if torch in _TORCH_KITS:
        return _TORCH_KITS[torch]

    def t_sum(args):
        acc = args[0]
        for a in args[1:]:
            acc = acc + a
        return acc

    def t_dot(args):
        pairs = len(args) // 2
        acc = args[-1] if len(args) % 2 else torch.zeros((), dtype=torch.float64)
        for k in range(pairs):
            acc = acc + args[2 * k] * args[2 * k + 1]
        return acc

    class PerturbedTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, factor):
            out = torch.tanh(a) * factor
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * (1 - out * out), None

    class PerturbedSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, factor):
            out = torch.sigmoid(a) * factor
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * ((1 - out) * out), None

    class PerturbedEdge(torch.autograd.Function):
        """The identity, whose backward multiplies the gradient by a factor."""

        @staticmethod
        def forward(ctx, a, factor):
            ctx.factor = factor
            return a.clone()

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None

    tf = torch.nn.functional
    kit = {
        "sum": t_sum,
        "dot": t_dot,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "perturbed tanh": PerturbedTanh.apply,
        "perturbed sigmoid": PerturbedSigmoid.apply,
        "perturbed edge": PerturbedEdge.apply,
        "gelu": lambda a: tf.gelu(a, approximate="tanh"),
        "softplus": tf.softplus,
        "leaky_relu": lambda a, slope: tf.leaky_relu(a, float(slope)),
        "maximum": torch.maximum,
        "minimum": torch.minimum,
    }
    _TORCH_KITS[torch] = kit
    return kit


def third_order_pairs(n):
    return [(i, (i + 1) % n) for i in range(n)]


def our_derivatives(graph, root):
    """{name: number} for every value and derivative compared, and the same derivatives
    with create_graph=False."""
    xs, y = graph.ours[: len(graph.leaves)], graph.ours[root]
    out = {f"value of n{k}": v.data for k, v in enumerate(graph.ours[: root + 1])}
    first = grad(y, xs, create_graph=True)
    second = [grad(g, xs, create_graph=True) for g in first]
    plain = {}
    for i, g in enumerate(first):
        out[f"d/dn{i}"] = g.data
    for i, (g, row) in enumerate(zip(first, second)):
        for j, h in enumerate(row):
            out[f"d2/dn{i}dn{j}"] = h.data
        for j, h in enumerate(grad(g, xs)):
            plain[f"d2/dn{i}dn{j}"] = h.data
    for j, g in enumerate(grad(y, xs)):
        plain[f"d/dn{j}"] = g.data
    for i, j in third_order_pairs(len(xs)):
        for k, t in enumerate(grad(second[i][j], xs)):
            out[f"d3/dn{i}dn{j}dn{k}"] = t.data
    return out, plain


def torch_derivatives(torch, graph, root, rng=None):
    leaves, nodes = graph.build_torch(torch, rng)
    y = nodes[root]
    zero = torch.zeros((), dtype=torch.float64)

    def d(out, create=True):
        if not out.requires_grad:
            return [zero for _ in leaves]
        got = torch.autograd.grad(out, leaves, create_graph=create, retain_graph=True, allow_unused=True)
        return [zero if t is None else t for t in got]

    out = {f"value of n{k}": t.item() for k, t in enumerate(nodes[: root + 1])}
    first = d(y)
    second = [d(g) for g in first]
    for i, g in enumerate(first):
        out[f"d/dn{i}"] = g.item()
        for j, h in enumerate(second[i]):
            out[f"d2/dn{i}dn{j}"] = h.item()
    for i, j in third_order_pairs(len(leaves)):
        for k, t in enumerate(d(second[i][j], create=False)):
            out[f"d3/dn{i}dn{j}dn{k}"] = t.item()
    return out


class FuzzTally:
    """What the checks compared, to prove they are not vacuous."""

    def __init__(self):
        self.strict = self.loosened = self.skipped = 0
        self.ops = set()
        self.nonzero_orders = {1: 0, 2: 0, 3: 0}

    def summary(self):
        total = self.strict + self.loosened + self.skipped
        return (
            f"{self.strict} entries compared strictly, {self.loosened} with rounding slack, "
            f"{self.skipped} not both finite, of {total}"
        )


def fuzz_agree(q, r, perturbed):
    """'strict', 'loosened' or 'skipped' if q agrees with torch's r (perturbed: r in the
    perturbed runs); False if not."""
    if not math.isfinite(r):
        return "skipped"
    stable = all(math.isfinite(p) for p in perturbed)
    if not math.isfinite(q):
        return "skipped" if not stable else False
    if not stable:
        return "skipped"
    deviation = max((abs(p - r) for p in perturbed), default=0.0)
    error = abs(q - r)
    if error <= 1e-10 * abs(r) + SLACK * deviation:
        return "strict" if SLACK * deviation <= 1e-10 * abs(r) or error <= 1e-10 * abs(r) else "loosened"
    return False


def check_graph(torch, graph, tally, seed, root=None):
    root = len(graph.ours) - 1 if root is None else root
    ours, plain = our_derivatives(graph, root)
    theirs = torch_derivatives(torch, graph, root)
    rng = random.Random(seed)
    perturbed = [torch_derivatives(torch, graph, root, rng) for _ in range(PERTURBED_RUNS)]
    program = "\n  ".join(graph.trace[: len(graph.leaves) + root + 1])
    for name, q in ours.items():
        r = theirs[name]
        verdict = fuzz_agree(q, r, [p[name] for p in perturbed])
        if not verdict:
            raise AssertionError(
                f"{name}: pyautograd {q!r}, torch {r!r}, perturbed torch "
                f"{[p[name] for p in perturbed]!r} (seed {seed})\n  {program}"
            )
        setattr(tally, verdict, getattr(tally, verdict) + 1)
        if verdict != "skipped" and r != 0 and not name.startswith("value"):
            tally.nonzero_orders[name.count("dn")] += 1
    for name, q in plain.items():  # the same sweep read two ways: the same numbers
        assert q == ours[name] or math.isnan(q) and math.isnan(ours[name]), (
            f"{name}: create_graph=False gives {q!r}, create_graph=True {ours[name]!r}\n  {program}"
        )
    tally.ops.update(op for op, _, _, _ in graph.program[: root + 1 - len(graph.leaves)])


def assert_not_vacuous(tally, compared_share):
    """At least compared_share of the entries were compared (both finite), 95% of those
    strictly, and some nonzero derivatives of each order. Only for full-size runs: a few
    graphs (PYAUTOGRAD_FUZZ_EXAMPLES small) prove nothing either way."""
    compared = tally.strict + tally.loosened
    assert compared >= compared_share * (compared + tally.skipped), tally.summary()
    assert tally.strict >= 0.95 * compared, tally.summary()
    assert all(tally.nonzero_orders.values()), tally.nonzero_orders


def test_higher_order_fuzz_random_graphs(torch):
    seed = fuzz_seed("random")
    rng = random.Random(seed)
    tally = FuzzTally()
    count = fuzz_count(600)
    for k in range(count):
        graph = FuzzGraph([random_leaf(rng) for _ in range(rng.randint(1, 4))])
        for _ in range(rng.randint(3, 30)):
            op, refs, constant, first = random_instruction(rng, len(graph.ours), rng.randint(2, 6))
            graph.add(op, refs, constant, first)
        check_graph(torch, graph, tally, seed * 1000 + k)
    if count >= 600:
        assert tally.ops == set(FUZZ_OPS), tally.ops
        assert_not_vacuous(tally, 0.7)


def test_higher_order_fuzz_deep_graphs(torch):
    # a block of ops repeated on the newest node, each time squashed by tanh or sigmoid so
    # the chain stays finite deep down (most of the first-order fuzzer's chains overflow)
    seed = fuzz_seed("deep")
    rng = random.Random(seed)
    tally = FuzzTally()
    count = fuzz_count(40)
    for k in range(count):
        graph = FuzzGraph([random_leaf(rng) for _ in range(rng.randint(1, 3))])
        block = [random_instruction(rng, 1 << 20, 3, recent=1) for _ in range(rng.randint(1, 3))]
        squash = rng.choice(["tanh", "sigmoid", "sigmoid"])  # sigmoid: log and pow stay defined
        for _ in range(rng.randint(10, 60)):
            for op, refs, constant, first in block:  # always on the newest node: a chain
                pool = len(graph.ours)
                graph.add(op, [pool - 1] + [r % pool for r in refs[1:]], constant, first)
            graph.add(squash, [len(graph.ours) - 1])
        check_graph(torch, graph, tally, seed * 1000 + k)
    if count >= 40:
        assert_not_vacuous(tally, 0.7)


def test_higher_order_fuzz_wide_graphs(torch):
    seed = fuzz_seed("wide")
    rng = random.Random(seed)
    tally = FuzzTally()
    count = fuzz_count(150)
    for k in range(count):
        graph = FuzzGraph([random_leaf(rng) for _ in range(rng.randint(2, 5))])
        for _ in range(rng.randint(1, 5)):
            op, refs, constant, first = random_instruction(rng, len(graph.ours), rng.randint(10, 40))
            graph.add(op, refs, constant, first)
        graph.add("sum", list(range(len(graph.ours))))  # the root uses every node
        check_graph(torch, graph, tally, seed * 1000 + k)
    if count >= 150:
        assert_not_vacuous(tally, 0.8)


def test_higher_order_fuzz_covers_every_op_of_the_c_table():
    # custom passes nothing, local's derivatives are numbers the program gives (both
    # tested above); the internal rows (step, gate, sign, leaky_slope, softplus_d,
    # max_share) are made by the derivative graphs of relu, abs, leaky_relu, softplus,
    # maximum and minimum, so the fuzz differentiates them too
    # (test_the_new_rows_derivative_graphs_are_built_of_their_internal_rows)
    # detach (no derivative to take) is checked in PER_OP above and by the first-order
    # fuzz against torch; out of this one's op list, whose fixed-seed stream it would change
    assert set(OP_NAMES) - {"leaf", "const", "custom", "local"} - set(INTERNAL_ROWS) == set(FUZZ_OPS) | {"detach"}


def test_the_fuzz_check_catches_a_wrong_second_derivative(torch):
    graph = FuzzGraph([0.7, -1.3])
    graph.add("tanh", [graph.add("mul", [0, 1])])
    graph.add("pow", [0, 3])
    tally = FuzzTally()
    check_graph(torch, graph, tally, 1)  # agrees
    ours, _ = our_derivatives(graph, 4)
    theirs = torch_derivatives(torch, graph, 4)
    perturbed = [torch_derivatives(torch, graph, 4, random.Random(2)) for _ in range(2)]
    for name in ("d2/dn0dn1", "d3/dn0dn1dn1"):
        q, r = ours[name], theirs[name]
        assert fuzz_agree(q, r, [p[name] for p in perturbed]) == "strict"
        assert fuzz_agree(q * (1 + 1e-9), r, [p[name] for p in perturbed]) is False
