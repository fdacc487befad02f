"""micrograd's own test programs (test_sanity_check and test_more_ops from micrograd's
test/test_engine.py), run on pyautograd: against PyTorch in float64 as micrograd runs them,
and against micrograd==0.1.0 itself (values and grads within 1e-12 relative).

The programs are written once, over whichever Value class runs them, in micrograd's
own text (`+=` included). PyTorch runs micrograd's torch text for the same program.
"""

import math

import micrograd.engine as mg
import pytest

from pyautograd.engine import Value

from conftest import require

REL = 1e-12


def sanity_check(V):
    x = V(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return {"x": x, "z": z, "q": q, "h": h, "y": y}


def more_ops(V):
    a = V(-4.0)
    b = V(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "g": g}


def sanity_check_torch(torch):
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return x, y


def more_ops_torch(torch):
    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return a, b, g


def test_sanity_check_against_torch():
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    ours = sanity_check(Value)
    xpt, ypt = sanity_check_torch(torch)
    # micrograd's own assertions are exact for this program
    assert ours["y"].data == ypt.data.item()
    assert ours["x"].grad == xpt.grad.item()


def test_more_ops_against_torch():
    torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")
    ours = more_ops(Value)
    apt, bpt, gpt = more_ops_torch(torch)
    # micrograd asserts within 1e-6; we hold to float64 rounding
    assert math.isclose(ours["g"].data, gpt.data.item(), rel_tol=REL)
    assert math.isclose(ours["a"].grad, apt.grad.item(), rel_tol=REL)
    assert math.isclose(ours["b"].grad, bpt.grad.item(), rel_tol=REL)


@pytest.mark.parametrize("program", [sanity_check, more_ops], ids=lambda p: p.__name__)
def test_same_numbers_as_micrograd(program):
    ours = program(Value)
    theirs = program(mg.Value)
    assert ours.keys() == theirs.keys()
    for name in ours:
        for field in ("data", "grad"):
            got, want = getattr(ours[name], field), getattr(theirs[name], field)
            assert math.isclose(got, want, rel_tol=REL, abs_tol=0.0), (name, field, got, want)


def test_programs_are_not_trivial():
    # the comparison above means something only if the numbers are not all zeros or ones
    ours = more_ops(Value)
    assert ours["a"].grad not in (0.0, 1.0) and ours["b"].grad not in (0.0, 1.0)
    assert sanity_check(Value)["x"].grad not in (0.0, 1.0)
