"""Every op of the C table (csrc/ops.h), one at a time: its value against Python's `math`,
its gradient against central differences, over each op's valid range (hypothesis), in
every form Python can spell it (Value op Value, Value op number, number op Value).

Tolerances (float64):
- values: relative 1e-15 (a few ulp; C and `math` call the same libm, so in practice exact);
- gradients: central difference with step h = 1e-6 * max(1, |x|); allowed error
  1e-6 relative, plus the rounding the difference itself can make, 8 * eps * max(1, |f|) / h.
The ranges keep third derivatives small enough that truncation (h^2 f''' / 6) stays well
inside that.
"""
import math
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require

from pyautograd._ag import lib
from pyautograd.engine import OP_NAMES, OP_PYTHON, Value

VALUE_REL_TOL = 1e-15
GRAD_REL_TOL = 1e-6
EPS = 2.0 ** -52


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


# name in the C table -> (how Python calls it, the math reference, domain)
UNARY = {
    "neg": (operator.neg, operator.neg, reals(-1e3, 1e3)),
    "relu": (Value.relu, lambda a: max(a, 0.0), away_from_zero(1e-3, 1e3)),  # kink at 0: see below
    "tanh": (Value.tanh, math.tanh, reals(-5.0, 5.0)),
    "exp": (Value.exp, math.exp, reals(-20.0, 20.0)),
    "log": (Value.log, math.log, reals(1e-2, 1e3)),
    "sigmoid": (Value.sigmoid, _sigmoid, reals(-20.0, 20.0)),
}


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
    elementwise = {name for code, name in enumerate(OP_NAMES)
                   if lib.ag_op_arity(code) in (1, 2) and OP_PYTHON[code] != "internal"}
    assert elementwise == set(BINARY) | set(UNARY)
    for code, name in enumerate(OP_NAMES):
        if name in BINARY:
            assert lib.ag_op_arity(code) == 2, name
        if name in UNARY:
            assert lib.ag_op_arity(code) == 1, name


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
    z = x ** n
    assert_value(z.data, math.pow(a, n))
    z.backward()
    assert_grad(x.grad, lambda t: math.pow(t, n), a)
    assert z._op == f"**{n}"


@settings(max_examples=200, deadline=None)
@given(reals(0.1, 10.0), reals(-3.0, 3.0))
def test_pow_value_exponent_closed_form(a, b):
    x, y = Value(a), Value(b)
    z = x ** y
    z.backward()
    assert math.isclose(x.grad, b * a ** (b - 1), rel_tol=1e-13)
    assert math.isclose(y.grad, a ** b * math.log(a), rel_tol=1e-13, abs_tol=1e-15)


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
    z = x ** x  # d/dx x^x = x^x (ln x + 1)
    z.backward()
    assert math.isclose(x.grad, 1.7 ** 1.7 * (math.log(1.7) + 1), rel_tol=1e-14)


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
    z = base ** exponent
    z.backward()
    assert z.data == 0.0 and exponent.grad == 0.0 and base.grad == 0.0
    y = Value(3.0)
    w = 0.0 ** y
    w.backward()
    assert y.grad == 0.0


def test_zero_to_the_zero_has_zero_base_gradient():
    # x ** 0 is the constant 1, so its derivative is 0 everywhere, x = 0 included (PyTorch agrees).
    for exponent in (0, 0.0, Value(0.0)):
        x = Value(0.0)
        z = x ** exponent
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
        ("0**-1", lambda x, y: x ** y, 0.0, -1.0),
        ("0**0", lambda x, y: x ** y, 0.0, 0.0),
        ("0**2", lambda x, y: x ** y, 0.0, 2.0),
        ("0**0.5", lambda x, y: x ** y, 0.0, 0.5),
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
