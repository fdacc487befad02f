"""Every op of the C table (csrc/ops.h), one at a time: its value against Python's `math`,
its gradient against central differences, over each op's valid range (hypothesis), in
every form Python can spell it (Value op Value, Value op number, number op Value; a
method; v.leaky_relu() and v.leaky_relu(slope); pyautograd.maximum(a, b) and minimum with
two Values, a Value and a number, a number and a Value). gelu and softplus are written out
again here from PyTorch's formulas (gelu(approximate='tanh'), softplus's threshold 20).
The ranges keep a step h away from the kinks (abs, relu and leaky_relu at 0, maximum and
minimum at a tie, softplus at 20); what happens at them, and at IEEE edges, is tested
against torch float64 below.

Tolerances (float64):
- values: relative 1e-15 (a few ulp; C and `math` call the same libm, so in practice exact);
- gradients: central difference with step h = 1e-6 * max(1, |x|); allowed error
  1e-6 relative, plus the rounding the difference itself can make, 8 * eps * max(1, |f|) / h.
The ranges keep third derivatives small enough that truncation (h^2 f''' / 6) stays well
inside that.
"""

import math
import operator
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require

import pyautograd
from pyautograd._ag import lib
from pyautograd.engine import OP_NAMES, OP_PYTHON, Value

VALUE_REL_TOL = 1e-15
GRAD_REL_TOL = 1e-6
EPS = 2.0**-52


def reals(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def away_from_zero(lo, hi):
    """Floats with lo <= |x| <= hi, either sign."""
    return st.builds(operator.mul, reals(lo, hi), st.sampled_from([-1.0, 1.0]))


# name in the C table -> (the Python operator, the math reference, domain of a, domain of b)
BINARY = {
    "add": (operator.add, lambda a, b: a + b, reals(-1e3, 1e3), reals(-1e3, 1e3)),
    "sub": (operator.sub, lambda a, b: a - b, reals(-1e3, 1e3), reals(-1e3, 1e3)),
    "mul": (operator.mul, lambda a, b: a * b, reals(-1e3, 1e3), reals(-1e3, 1e3)),
    "truediv": (operator.truediv, lambda a, b: a / b, reals(-1e3, 1e3), away_from_zero(0.1, 1e3)),
    "pow": (operator.pow, math.pow, reals(0.1, 10.0), reals(-3.0, 3.0)),
}


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


# PyTorch's gelu(approximate='tanh') (aten's GeluKernel), operation for operation
GELU_BETA = 1.41421356237309504880 * 1.12837916709551257390 * 0.5  # M_SQRT2 * M_2_SQRTPI * 0.5
GELU_KAPPA = 0.044715


def _gelu(a):
    inner = GELU_BETA * (a + GELU_KAPPA * (a * a * a))
    return 0.5 * a * (1.0 + math.tanh(inner))


def _softplus(a):  # torch.nn.functional.softplus, beta 1, threshold 20
    return a if a > 20.0 else math.log1p(math.exp(a))


# name in the C table -> (how Python calls it, the math reference, domain)
UNARY = {
    "neg": (operator.neg, operator.neg, reals(-1e3, 1e3)),
    "relu": (Value.relu, lambda a: max(a, 0.0), away_from_zero(1e-3, 1e3)),  # kink at 0: see below
    "tanh": (Value.tanh, math.tanh, reals(-5.0, 5.0)),
    "exp": (Value.exp, math.exp, reals(-20.0, 20.0)),
    "log": (Value.log, math.log, reals(1e-2, 1e3)),
    "sigmoid": (Value.sigmoid, _sigmoid, reals(-20.0, 20.0)),
    "sin": (Value.sin, math.sin, reals(-10.0, 10.0)),
    "cos": (Value.cos, math.cos, reals(-10.0, 10.0)),
    "sqrt": (Value.sqrt, math.sqrt, reals(1e-2, 1e3)),
    "abs": (Value.abs, abs, away_from_zero(1e-3, 1e3)),  # kink at 0: see below
    "gelu": (Value.gelu, _gelu, reals(-8.0, 8.0)),
    # softplus jumps by log1p(exp(-20)) ~ 2e-9 at its threshold 20: no differences across it
    "softplus": (Value.softplus, _softplus, st.one_of(reals(-30.0, 19.9), reals(20.1, 40.0))),
}


def _leaky_relu(a, slope=0.01):  # torch.nn.functional.leaky_relu(a, negative_slope)
    return a if a > 0.0 else a * slope


# v.leaky_relu(slope=0.01): the slope is a number (the row's constant second input)
SLOPED = {"leaky_relu": (_leaky_relu, away_from_zero(1e-3, 1e3), reals(-2.0, 2.0))}

# pyautograd.maximum(a, b), minimum: (the function, the math reference, domain of a and b)
FUNCTIONS = {
    "maximum": (pyautograd.maximum, max, reals(-1e3, 1e3)),
    "minimum": (pyautograd.minimum, min, reals(-1e3, 1e3)),
}


# v.detach(): the value as it is, and no gradient back (not a function with a derivative
# to check by differences: tested on its own below)
DETACHED = {"detach": Value.detach}


def test_detach_passes_the_value_and_no_gradient():
    for a in [2.5, -0.0, 0.0, 1e-310, -1e308, math.inf, -math.inf, math.nan]:
        x = Value(a)
        d = x.detach()
        assert struct.pack("<d", d.data) == struct.pack("<d", a) and d._op == "detach"
        y = d * x + x  # to x: d + 1 (its own two paths), and nothing through d
        y.backward()
        assert (d.grad, x.grad) == (a, a + 1.0) or math.isnan(a)
        assert math.isnan(a) == math.isnan(x.grad)
    x = Value(3.0)
    d = x.detach()
    x.data = 5.0
    assert d.forward() == 5.0  # a node: replay recomputes it from x


def apart(dom):
    """Pairs (a, b) from dom at least 1e-3 (relative) apart: no tie within a step h."""
    return st.tuples(dom, dom).filter(lambda p: abs(p[0] - p[1]) > 1e-3 * max(1.0, abs(p[0]), abs(p[1])))


def central_difference(f, x):
    h = 1e-6 * max(1.0, abs(x))
    return (f(x + h) - f(x - h)) / (2 * h), h


def assert_value(got, expected):
    assert math.isclose(got, expected, rel_tol=VALUE_REL_TOL, abs_tol=0.0), (got, expected)


def assert_grad(got, f, x):
    """got is df/dx at x; f is the math reference as a function of x alone."""
    fd, h = central_difference(f, x)
    allowed = GRAD_REL_TOL * abs(fd) + 8 * EPS * max(1.0, abs(f(x))) / h
    assert abs(got - fd) <= allowed, f"grad {got!r}, central difference {fd!r} at x={x!r}"


def test_every_op_in_the_c_table_is_tested_here():
    # Internal ops (relu's step) appear only in derivative graphs: tested in test_higher_order.py.
    elementwise = {
        name for code, name in enumerate(OP_NAMES) if lib.ag_op_arity(code) in (1, 2) and OP_PYTHON[code] != "internal"
    }
    assert elementwise == set(BINARY) | set(UNARY) | set(SLOPED) | set(FUNCTIONS) | set(DETACHED)
    for code, name in enumerate(OP_NAMES):
        if name in BINARY:
            assert lib.ag_op_arity(code) == 2, name
        if name in UNARY:
            assert lib.ag_op_arity(code) == 1, name
        if name in SLOPED:
            assert (lib.ag_op_arity(code), OP_PYTHON[code]) == (2, "method_slope"), name
        if name in FUNCTIONS:
            assert (lib.ag_op_arity(code), OP_PYTHON[code]) == (2, "function"), name
            assert getattr(pyautograd, name) is FUNCTIONS[name][0]


# ---- binary ops, each in its three forms ----


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_value_value(name):
    op, ref, dom_a, dom_b = BINARY[name]

    @settings(max_examples=150, deadline=None)
    @given(dom_a, dom_b)
    def check(a, b):
        x, y = Value(a), Value(b)
        z = op(x, y)
        assert isinstance(z, Value)
        assert_value(z.data, ref(a, b))
        z.backward()
        assert z.grad == 1.0
        assert_grad(x.grad, lambda t: ref(t, b), a)
        assert_grad(y.grad, lambda t: ref(a, t), b)

    check()


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_value_number(name):
    op, ref, dom_a, dom_b = BINARY[name]

    @settings(max_examples=150, deadline=None)
    @given(dom_a, dom_b)
    def check(a, b):
        x = Value(a)
        z = op(x, b)
        assert_value(z.data, ref(a, b))
        z.backward()
        assert_grad(x.grad, lambda t: ref(t, b), a)

    check()


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_number_value_reflected(name):
    op, ref, dom_a, dom_b = BINARY[name]

    @settings(max_examples=150, deadline=None)
    @given(dom_a, dom_b)
    def check(a, b):
        y = Value(b)
        z = op(a, y)  # float.__op__ declines, so Python calls Value.__rop__
        assert_value(z.data, ref(a, b))
        z.backward()
        assert_grad(y.grad, lambda t: ref(a, t), b)

    check()


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_int_operands_act_as_floats(name):
    op, ref, _, _ = BINARY[name]
    assert_value(op(Value(3), 2).data, ref(3.0, 2.0))
    assert_value(op(3, Value(2)).data, ref(3.0, 2.0))
    assert_value(op(Value(3), True).data, ref(3.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(away_from_zero(0.1, 10.0), st.integers(-4, 4))
def test_pow_negative_base_integer_exponent(a, n):
    x = Value(a)
    z = x**n
    assert_value(z.data, math.pow(a, n))
    z.backward()
    assert_grad(x.grad, lambda t: math.pow(t, n), a)
    assert z._op == f"**{n}"


@settings(max_examples=200, deadline=None)
@given(reals(0.1, 10.0), reals(-3.0, 3.0))
def test_pow_value_exponent_closed_form(a, b):
    x, y = Value(a), Value(b)
    z = x**y
    z.backward()
    assert math.isclose(x.grad, b * a ** (b - 1), rel_tol=1e-13)
    assert math.isclose(y.grad, a**b * math.log(a), rel_tol=1e-13, abs_tol=1e-15)


# ---- unary ops ----


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    call, ref, dom = UNARY[name]

    @settings(max_examples=200, deadline=None)
    @given(dom)
    def check(a):
        x = Value(a)
        z = call(x)
        assert isinstance(z, Value)
        assert_value(z.data, ref(a))
        z.backward()
        assert_grad(x.grad, ref, a)

    check()


# ---- leaky_relu: with the default slope and with a slope given ----


@pytest.mark.parametrize("spelling", ["default", "positional", "keyword"])
def test_leaky_relu(spelling):
    ref, dom, slopes = SLOPED["leaky_relu"]

    @settings(max_examples=150, deadline=None)
    @given(dom, slopes)
    def check(a, slope):
        x = Value(a)
        if spelling == "default":
            z, slope = x.leaky_relu(), 0.01  # torch's default negative_slope
        elif spelling == "positional":
            z = x.leaky_relu(slope)
        else:
            z = x.leaky_relu(slope=slope)
        assert isinstance(z, Value)
        assert_value(z.data, ref(a, slope))
        z.backward()
        assert_grad(x.grad, lambda t: ref(t, slope), a)
        assert x.grad == (1.0 if a > 0 else slope)  # exactly: one branch or the other

    check()


def test_leaky_relu_takes_a_real_number_for_its_slope():
    assert Value(-2.0).leaky_relu(1).data == -2.0  # an int
    assert Value(-2.0).leaky_relu(np.float32(0.5)).data == -1.0
    for bad in ("0.1", Value(0.1), None):
        with pytest.raises(TypeError):
            Value(-2.0).leaky_relu(bad)
    with pytest.raises(TypeError):
        Value(-2.0).leaky_relu(0.1, 0.2)
    with pytest.raises(TypeError):
        Value(-2.0).leaky_relu(negative_slope=0.1)


# ---- maximum and minimum: pyautograd functions, in their three forms ----


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_value_value(name):
    fn, ref, dom = FUNCTIONS[name]

    @settings(max_examples=150, deadline=None)
    @given(apart(dom))
    def check(pair):
        a, b = pair
        x, y = Value(a), Value(b)
        z = fn(x, y)
        assert isinstance(z, Value)
        assert_value(z.data, ref(a, b))
        z.backward()
        assert_grad(x.grad, lambda t: ref(t, b), a)
        assert_grad(y.grad, lambda t: ref(a, t), b)
        assert {x.grad, y.grad} == {0.0, 1.0}  # all to the chosen input, exactly

    check()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_value_number(name):
    fn, ref, dom = FUNCTIONS[name]

    @settings(max_examples=150, deadline=None)
    @given(apart(dom))
    def check(pair):
        a, b = pair
        x = Value(a)
        z = fn(x, b)
        assert_value(z.data, ref(a, b))
        z.backward()
        assert_grad(x.grad, lambda t: ref(t, b), a)

    check()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_number_value(name):
    fn, ref, dom = FUNCTIONS[name]

    @settings(max_examples=150, deadline=None)
    @given(apart(dom))
    def check(pair):
        a, b = pair
        y = Value(b)
        z = fn(a, y)
        assert_value(z.data, ref(a, b))
        z.backward()
        assert_grad(y.grad, lambda t: ref(a, t), b)

    check()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_operands(name):
    fn, ref, _ = FUNCTIONS[name]
    for a, b in (
        (Value(3), 2),
        (3, Value(2)),
        (Value(3), True),
        (np.float64(2.5), Value(1.5)),
        (Value(1.5), np.int64(3)),
        (Value(1.5), np.float32(2.5)),
    ):
        z = fn(a, b)
        assert isinstance(z, Value)
        assert_value(
            z.data, ref(float(a.data if isinstance(a, Value) else a), float(b.data if isinstance(b, Value) else b))
        )
    x = Value(1.0)
    z = fn(x, x)  # the same Value twice: a tie with itself, G / 2 + G / 2
    z.backward()
    assert z.data == 1.0 and x.grad == 1.0
    with pytest.raises(TypeError, match=name):
        fn(1.0, 2.0)  # no Value: nothing to differentiate
    with pytest.raises(TypeError, match=name):
        fn(Value(1.0), "2")
    with pytest.raises(TypeError):
        fn(Value(1.0))
    with pytest.raises(TypeError):
        fn(Value(1.0), Value(2.0), Value(3.0))


def test_relu_at_zero_is_zero_with_zero_gradient():
    # micrograd's and PyTorch's convention: the derivative at the kink is 0.
    for zero in (0.0, -0.0, 0):
        x = Value(zero)
        y = x.relu()
        assert y.data == 0.0
        y.backward()
        assert x.grad == 0.0


def test_tanh_and_sigmoid_saturate_without_nan():
    for big in (800.0, -800.0, 1e308, -1e308):
        x = Value(big)
        t, s = x.tanh(), x.sigmoid()
        assert t.data == math.copysign(1.0, big)
        assert s.data == (1.0 if big > 0 else 0.0)  # exp(800) is inf, 1 / inf is 0
        (t + s).backward()
        assert x.grad == 0.0


# ---- accumulation: a node used more than once ----


def test_a_plus_a():
    a = Value(3.0)
    b = a + a
    b.backward()
    assert b.data == 6.0
    assert a.grad == 2.0


def test_a_times_a():
    a = Value(-3.0)
    b = a * a
    b.backward()
    assert a.grad == -6.0


@settings(max_examples=100, deadline=None)
@given(reals(-10, 10), reals(-10, 10))
def test_intermediate_used_twice(p, q):
    a, b = Value(p), Value(q)
    t = a * b
    y = t * t + t  # y = t^2 + t, dy/dt = 2t + 1
    y.backward()
    assert math.isclose(t.grad, 2 * p * q + 1, rel_tol=1e-14, abs_tol=1e-12)
    assert math.isclose(a.grad, (2 * p * q + 1) * q, rel_tol=1e-13, abs_tol=1e-10)
    assert math.isclose(b.grad, (2 * p * q + 1) * p, rel_tol=1e-13, abs_tol=1e-10)


def test_same_value_as_base_and_exponent():
    x = Value(1.7)
    z = x**x  # d/dx x^x = x^x (ln x + 1)
    z.backward()
    assert math.isclose(x.grad, 1.7**1.7 * (math.log(1.7) + 1), rel_tol=1e-14)


# ---- IEEE domain behaviour: nothing raises, results are what IEEE (and PyTorch) give ----


def test_log_of_negative_is_nan_and_of_zero_is_minus_inf():
    assert math.isnan(Value(-1.0).log().data)
    assert Value(0.0).log().data == -math.inf
    x = Value(0.0)
    x.log().backward()
    assert x.grad == math.inf


def test_division_by_zero_is_inf():
    assert (Value(1.0) / 0).data == math.inf
    assert (Value(-1.0) / Value(0.0)).data == -math.inf
    assert (1 / Value(0.0)).data == math.inf
    assert math.isnan((Value(0.0) / 0.0).data)
    a, b = Value(1.0), Value(0.0)
    (a / b).backward()
    assert a.grad == math.inf and b.grad == -math.inf


def test_zero_to_negative_power_is_inf():
    assert (Value(0.0) ** -1).data == math.inf
    assert (Value(0.0) ** Value(-2.0)).data == math.inf
    assert (0.0 ** Value(-1.0)).data == math.inf


def test_negative_base_fractional_power_is_nan():
    assert math.isnan((Value(-8.0) ** (1 / 3)).data)
    assert math.isnan((Value(-2.0) ** Value(0.5)).data)


def test_micrograd_raises_or_goes_complex_where_we_follow_ieee():
    import micrograd.engine as mg

    with pytest.raises(ZeroDivisionError):
        mg.Value(1.0) / mg.Value(0.0)  # micrograd: 1.0 * 0.0 ** -1
    assert (Value(1.0) / Value(0.0)).data == math.inf
    assert isinstance((mg.Value(-8.0) ** (1 / 3)).data, complex)
    assert math.isnan((Value(-8.0) ** (1 / 3)).data)


def test_exp_overflow_is_inf():
    assert Value(1000.0).exp().data == math.inf
    assert Value(-1000.0).exp().data == 0.0


def test_zero_base_gives_no_nan_exponent_gradient():
    # PyTorch's rule: d(a^b)/db is 0 where a == 0 and b >= 0 (not 0 * log 0 = nan).
    base, exponent = Value(0.0), Value(2.0)
    z = base**exponent
    z.backward()
    assert z.data == 0.0 and exponent.grad == 0.0 and base.grad == 0.0
    y = Value(3.0)
    w = 0.0**y
    w.backward()
    assert y.grad == 0.0


def test_zero_to_the_zero_has_zero_base_gradient():
    # x ** 0 is the constant 1, so its derivative is 0 everywhere, x = 0 included (PyTorch agrees).
    for exponent in (0, 0.0, Value(0.0)):
        x = Value(0.0)
        z = x**exponent
        z.backward()
        assert z.data == 1.0
        assert x.grad == 0.0


def test_ieee_edges_match_torch():
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    cases = [
        ("log(-1)", lambda x, y: x.log(), -1.0, 1.0),
        ("log(0)", lambda x, y: x.log(), 0.0, 1.0),
        ("1/0", lambda x, y: x / y, 1.0, 0.0),
        ("0/0", lambda x, y: x / y, 0.0, 0.0),
        ("0**-1", lambda x, y: x**y, 0.0, -1.0),
        ("0**0", lambda x, y: x**y, 0.0, 0.0),
        ("0**2", lambda x, y: x**y, 0.0, 2.0),
        ("0**0.5", lambda x, y: x**y, 0.0, 0.5),
        ("relu(0)", lambda x, y: x.relu() * y, 0.0, 1.0),
        ("exp(1000)", lambda x, y: x.exp() * y, 1000.0, 1.0),
    ]
    for label, f, a, b in cases:
        x, y = Value(a), Value(b)
        z = f(x, y)
        z.backward()
        tx = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        ty = torch.tensor(b, dtype=torch.float64, requires_grad=True)
        tz = f(tx, ty)
        tz.backward()
        # torch leaves .grad None on a leaf the result does not use; ours stays 0
        tgrads = [0.0 if t.grad is None else t.grad.item() for t in (tx, ty)]
        for ours, theirs in ((z.data, tz.item()), (x.grad, tgrads[0]), (y.grad, tgrads[1])):
            assert ours == theirs or (math.isnan(ours) and math.isnan(theirs)), (label, ours, theirs)


def _edge_ops(torch):
    """The new rows as Values spell them and as torch float64 does."""
    tf = torch.nn.functional
    ours = {
        "abs": Value.abs,
        "sqrt": Value.sqrt,
        "sin": Value.sin,
        "cos": Value.cos,
        "relu": Value.relu,
        "gelu": Value.gelu,
        "softplus": Value.softplus,
        "leaky_relu": lambda x: x.leaky_relu(),
        "leaky_relu(0.3)": lambda x: x.leaky_relu(0.3),
        "leaky_relu(-2)": lambda x: x.leaky_relu(slope=-2.0),
    }
    theirs = {
        "abs": torch.abs,
        "sqrt": torch.sqrt,
        "sin": torch.sin,
        "cos": torch.cos,
        "relu": torch.relu,
        "gelu": lambda t: tf.gelu(t, approximate="tanh"),
        "softplus": tf.softplus,
        "leaky_relu": tf.leaky_relu,
        "leaky_relu(0.3)": lambda t: tf.leaky_relu(t, 0.3),
        "leaky_relu(-2)": lambda t: tf.leaky_relu(t, -2.0),
    }
    return ours, theirs


def same_float(ours, theirs):
    """Equal (0.0 == -0.0: the sign of a zero is not claimed; a .grad that sums its
    contributions onto 0.0 turns -0.0 into 0.0), or both nan."""
    if math.isnan(ours) or math.isnan(theirs):
        return math.isnan(ours) and math.isnan(theirs)
    return ours == theirs


# (op, x, incoming gradient G, our value, our d/dx): PyTorch's rules at the kinks and
# IEEE edges, written out, and each checked against torch float64 too
UNARY_EDGES = [
    ("abs", 0.0, 1.0, 0.0, 0.0),  # abs'(0) = sign(0) = 0
    ("abs", -0.0, 1.0, 0.0, 0.0),
    ("abs", -3.0, 1.0, 3.0, -1.0),
    ("abs", -math.inf, 1.0, math.inf, -1.0),
    ("abs", 0.0, math.inf, 0.0, math.nan),  # G * 0 with G = inf (torch: grad * sgn)
    ("leaky_relu", 0.0, 1.0, 0.0, 0.01),  # the slope at 0, not 1, not 0
    ("leaky_relu", -0.0, 1.0, -0.0, 0.01),
    ("leaky_relu(0.3)", 0.0, 1.0, 0.0, 0.3),
    ("leaky_relu(-2)", 0.0, 1.0, 0.0, -2.0),
    ("leaky_relu(0.3)", -math.inf, 1.0, -math.inf, 0.3),
    ("leaky_relu(0.3)", math.nan, 1.0, math.nan, 0.3),  # nan > 0 is false: the slope side
    ("leaky_relu(0.3)", 0.0, math.inf, 0.0, math.inf),
    ("relu", 0.0, 1.0, 0.0, 0.0),  # relu'(0) = 0
    ("relu", -0.0, 1.0, 0.0, 0.0),
    ("relu", -1.0, math.inf, 0.0, 0.0),  # the flat side: exactly 0 even from inf
    ("softplus", 20.0, 1.0, math.log1p(math.exp(20.0)), math.exp(20.0) / (math.exp(20.0) + 1)),
    ("softplus", 20.5, 1.0, 20.5, 1.0),  # past the threshold: x itself, slope 1
    ("softplus", 700.0, 1.0, 700.0, 1.0),  # exp(700) is finite, but the threshold wins
    ("softplus", 800.0, 1.0, 800.0, 1.0),  # exp(800) is inf: no inf / inf = nan
    ("softplus", -40.0, 1.0, math.log1p(math.exp(-40.0)), math.exp(-40.0) / (math.exp(-40.0) + 1)),
    ("softplus", -800.0, 1.0, 0.0, 0.0),
    ("softplus", math.inf, 1.0, math.inf, 1.0),
    ("softplus", -math.inf, 1.0, 0.0, 0.0),
    ("softplus", math.nan, 1.0, math.nan, math.nan),
    ("sqrt", 0.0, 1.0, 0.0, math.inf),  # sqrt'(0) = 1 / (2 * 0) = inf
    ("sqrt", -0.0, 1.0, -0.0, -math.inf),
    ("sqrt", -1.0, 1.0, math.nan, math.nan),
    ("sqrt", math.inf, 1.0, math.inf, 0.0),
    ("sqrt", 4.0, 1.0, 2.0, 0.25),
    ("sin", math.inf, 1.0, math.nan, math.nan),
    ("cos", -math.inf, 1.0, math.nan, math.nan),
    ("sin", 0.0, 1.0, 0.0, 1.0),
    ("cos", 0.0, 1.0, 1.0, -0.0),
    ("sin", 1e300, 1.0, math.sin(1e300), math.cos(1e300)),
    ("gelu", 0.0, 1.0, 0.0, 0.5),
    ("gelu", math.inf, 1.0, math.inf, math.nan),  # 0.5 inf (1 - 1) in the derivative
    ("gelu", -math.inf, 1.0, math.nan, math.nan),  # 0.5 (-inf) (1 + tanh(-inf)) = -inf * 0
    ("gelu", 1e200, 1.0, 1e200, math.nan),  # the cube overflows; torch's formula too
    ("gelu", math.nan, 1.0, math.nan, math.nan),
]


@pytest.mark.parametrize(
    "op, x0, g, value, slope", UNARY_EDGES, ids=[f"{e[0]}({e[1]!r})*{e[2]!r}" for e in UNARY_EDGES]
)
def test_kinks_and_edges_of_the_new_unary_ops_match_torch(op, x0, g, value, slope):
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    ours_ops, theirs_ops = _edge_ops(torch)
    x = Value(x0)
    y = ours_ops[op](x)
    (y * g).backward()
    t = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    ty = theirs_ops[op](t)
    (ty * g).backward()
    assert same_float(y.data, ty.item()), (y.data, ty.item())
    assert same_float(x.grad, t.grad.item()), (x.grad, t.grad.item())
    assert same_float(y.data, value) and same_float(x.grad, slope), (y.data, x.grad)
    # grad() reads the same rules, with create_graph too
    for create_graph in (False, True):
        x = Value(x0)
        (d,) = pyautograd.grad(ours_ops[op](x) * g, x, create_graph=create_graph)
        assert same_float(d.data, slope), (create_graph, d.data)


# (a, b, G, our value, d/da, d/db) for maximum; minimum is checked on (-a, -b)
MAXIMUM_EDGES = [
    (1.0, 1.0, 1.0, 1.0, 0.5, 0.5),  # a tie: G / 2 to each side
    (0.0, -0.0, 1.0, 0.0, 0.5, 0.5),  # 0 == -0: a tie
    (-2.5, -2.5, 3.0, -2.5, 1.5, 1.5),
    (math.inf, math.inf, 1.0, math.inf, 0.5, 0.5),
    (-math.inf, -math.inf, 1.0, -math.inf, 0.5, 0.5),
    (2.0, 1.0, 1.0, 2.0, 1.0, 0.0),
    (-math.inf, 1.0, 1.0, 1.0, 0.0, 1.0),
    (2.0, 1.0, math.inf, 2.0, math.inf, 0.0),  # exactly 0 to the other side, even from inf
    (1.0, 1.0, math.inf, 1.0, math.inf, math.inf),
    (2.0, 1.0, math.nan, 2.0, math.nan, 0.0),
]


def _flip(case):
    a, b, g, value, da, db = case
    return (-a, -b, g, -value, da, db)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@pytest.mark.parametrize("case", MAXIMUM_EDGES, ids=[f"{c[0]!r},{c[1]!r}*{c[2]!r}" for c in MAXIMUM_EDGES])
def test_maximum_and_minimum_ties_and_edges_match_torch(name, case):
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    a0, b0, g, value, da, db = case if name == "maximum" else _flip(case)
    fn, theirs = getattr(pyautograd, name), getattr(torch, name)
    tensor = lambda v, grad: torch.tensor(v, dtype=torch.float64, requires_grad=grad)
    for form in ("vv", "vc", "cv"):
        x, y = Value(a0), Value(b0)
        z = fn(x, y if form == "vv" else b0) if form != "cv" else fn(a0, y)
        (z * g).backward()
        ta, tb = tensor(a0, form != "cv"), tensor(b0, form != "vc")
        tz = theirs(ta, tb)
        (tz * g).backward()
        assert same_float(z.data, tz.item()) and same_float(z.data, value), (form, z.data, tz.item())
        if form != "cv":
            assert same_float(x.grad, ta.grad.item()) and same_float(x.grad, da), (form, x.grad)
        if form != "vc":
            assert same_float(y.grad, tb.grad.item()) and same_float(y.grad, db), (form, y.grad)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_and_minimum_propagate_nan_like_torch(name):
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    fn, theirs = getattr(pyautograd, name), getattr(torch, name)
    for a0, b0 in ((math.nan, 1.0), (1.0, math.nan), (math.nan, math.inf), (-math.inf, math.nan), (math.nan, math.nan)):
        t = theirs(torch.tensor(a0, dtype=torch.float64), torch.tensor(b0, dtype=torch.float64))
        assert math.isnan(t.item())
        assert math.isnan(fn(Value(a0), Value(b0)).data)
        assert math.isnan(fn(Value(a0), b0).data) and math.isnan(fn(a0, Value(b0)).data)


# ---- numpy scalars on either side ----

NUMPY_SCALARS = [np.float64(2.5), np.float32(2.5), np.int64(3)]


@pytest.mark.parametrize("scalar", NUMPY_SCALARS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_numpy_scalars_either_side(name, scalar):
    op, ref, _, _ = BINARY[name]
    s = float(scalar)
    x = Value(1.5)
    right = op(x, scalar)
    assert isinstance(right, Value)
    assert_value(right.data, ref(1.5, s))
    right.backward()
    assert_grad(x.grad, lambda t: ref(t, s), 1.5)

    y = Value(1.5)
    left = op(scalar, y)
    assert isinstance(left, Value), type(left)
    assert_value(left.data, ref(s, 1.5))
    left.backward()
    assert_grad(y.grad, lambda t: ref(s, t), 1.5)


@pytest.mark.parametrize("scalar", NUMPY_SCALARS, ids=lambda s: type(s).__name__)
def test_numpy_scalar_as_data(scalar):
    v = Value(scalar)
    assert v.data == float(scalar) and type(v.data) is float
    v.data = scalar
    v.grad = scalar
    assert v.grad == float(scalar)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_and_minimum_gradients_at_a_nan_follow_torch(name):
    # torch (derivatives.yaml): self gets where(self == other, grad / 2, grad) with 0 where
    # self < other (self > other for minimum); a comparison with nan is false, so both
    # inputs get the whole gradient, as csrc/ops.h's MAX_SHARE does.
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    for a0, b0 in ((math.nan, 1.0), (1.0, math.nan), (math.nan, math.nan)):
        x, y = Value(a0), Value(b0)
        getattr(pyautograd, name)(x, y).backward()
        ta = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
        getattr(torch, name)(ta, tb).backward()
        theirs = (ta.grad.item(), tb.grad.item())
        assert theirs == (1.0, 1.0)
        assert (x.grad, y.grad) == theirs, f"{name}({a0}, {b0}): pyautograd {(x.grad, y.grad)}, torch {theirs}"
