"""Forward mode and second order: pyautograd.jvp, hvp and hessian (csrc/tangents.c).

They read the op table's rows on tangents and dual numbers, so they are checked against
what reads the same rows in reverse (grad, and grad of grad through create_graph) and
against torch float64 (torch.func.jvp, double backward, torch.autograd.functional.hessian),
on random graphs over every op Python can reach.
"""

import gc
import math
import random

import pytest

import pyautograd
from conftest import require
from pyautograd import Value, detect_anomaly, grad, hessian, hvp, jvp, no_grad
from pyautograd.arena import stats
from pyautograd.engine import OP_NAMES, OP_PYTHON

torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")

REL = 1e-12


def close(a, b, rel=REL):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


# Each op Python reaches, on both engines, on domains away from kinks and ties (where
# derivatives of derivatives are not defined): (ours, torch's, arity).
F = torch.nn.functional
OPS = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, 2),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, 2),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, 2),
    "truediv": (lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1.0), 2),
    "pow": (lambda a, b: (a * a + 0.5) ** (b * 0.3), lambda a, b: (a * a + 0.5) ** (b * 0.3), 2),
    "neg": (lambda a: -a, lambda a: -a, 1),
    "relu": (lambda a: (a + 3.5).relu(), lambda a: torch.relu(a + 3.5), 1),
    "tanh": (lambda a: a.tanh(), torch.tanh, 1),
    "exp": (lambda a: (a * 0.3).exp(), lambda a: torch.exp(a * 0.3), 1),
    "log": (lambda a: (a * a + 1.0).log(), lambda a: torch.log(a * a + 1.0), 1),
    "sigmoid": (lambda a: a.sigmoid(), torch.sigmoid, 1),
    "sin": (lambda a: a.sin(), torch.sin, 1),
    "cos": (lambda a: a.cos(), torch.cos, 1),
    "sqrt": (lambda a: (a * a + 0.5).sqrt(), lambda a: torch.sqrt(a * a + 0.5), 1),
    "abs": (lambda a: (a + 3.5).abs(), lambda a: torch.abs(a + 3.5), 1),
    "leaky_relu": (lambda a: (a - 3.5).leaky_relu(0.2), lambda a: F.leaky_relu(a - 3.5, 0.2), 1),
    "gelu": (lambda a: a.gelu(), lambda a: F.gelu(a, approximate="tanh"), 1),
    "softplus": (lambda a: a.softplus(), F.softplus, 1),
    "detach": (lambda a: a.detach() * a, lambda a: a.detach() * a, 1),
    "maximum": (lambda a, b: pyautograd.maximum(a, b + 0.25), lambda a, b: torch.maximum(a, b + 0.25), 2),
    "minimum": (lambda a, b: pyautograd.minimum(a, b + 0.25), lambda a, b: torch.minimum(a, b + 0.25), 2),
}


def test_every_op_python_reaches_is_covered():
    reachable = {
        name for name, how in zip(OP_NAMES, OP_PYTHON) if how not in ("internal", "") and name not in ("sum", "dot")
    }
    assert reachable - {"leaf", "const", "custom", "local"} == set(OPS)


def random_program(rng, n_inputs, n_steps):
    """A list of (op, operand indices) over n_inputs inputs, every value usable later."""
    program = []
    for step in range(n_steps):
        name = rng.choice(sorted(OPS))
        arity = OPS[name][2]
        pool = n_inputs + step
        program.append((name, [rng.randrange(pool) for _ in range(arity)]))
    return program


def run(program, xs, engine):
    values = list(xs)
    for name, operands in program:
        f = OPS[name][0 if engine == "ours" else 1]
        values.append(f(*[values[i] for i in operands]))
    out = values[len(xs) :]
    total = out[-1]
    for v in out[-4:-1]:  # the output depends on several of the last steps
        total = total + v * 0.5
    return total


@pytest.mark.parametrize("seed", range(12))
def test_jvp_hvp_and_hessian_against_torch_on_random_graphs(seed):
    rng = random.Random(seed)
    n = 3
    data = [rng.uniform(-1.5, 1.5) for _ in range(n)]
    direction = [rng.uniform(-1, 1) for _ in range(n)]
    program = random_program(rng, n, 14)

    xs = [Value(d) for d in data]
    out = run(program, xs, "ours")
    ts = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data]
    out_t = run(program, ts, "torch")
    assert close(out.data, out_t.item())

    grads_t = [
        torch.zeros((), dtype=torch.float64) if g is None else g
        for g in torch.autograd.grad(out_t, ts, create_graph=True, allow_unused=True)
    ]
    jvp_t = sum(g * t for g, t in zip(grads_t, direction))
    (j,) = jvp(out, xs, direction)
    assert close(j.data, jvp_t.item()), (program, j.data, jvp_t.item())
    _, jvp_func = torch.func.jvp(
        lambda *a: run(program, list(a), "torch"),
        tuple(torch.tensor(d, dtype=torch.float64) for d in data),
        tuple(torch.tensor(t, dtype=torch.float64) for t in direction),
    )
    assert close(j.data, jvp_func.item())

    hv = hvp(out, xs, direction)
    hv_t = torch.autograd.grad(jvp_t, ts, allow_unused=True) if jvp_t.requires_grad else [None] * n
    for ours, theirs in zip(hv, hv_t):
        assert close(ours.data, 0.0 if theirs is None else theirs.item()), program

    # the same numbers through the reverse reading: grad of (grad . direction)
    first = grad(out, xs, create_graph=True)
    again = grad(sum(g * t for g, t in zip(first, direction)), xs)
    for ours, reverse in zip(hv, again):
        assert close(ours.data, reverse.data)

    h = hessian(out, xs)
    h_t = torch.autograd.functional.hessian(
        lambda *a: run(program, list(a), "torch"), tuple(torch.tensor(d, dtype=torch.float64) for d in data)
    )
    for i in range(n):
        for k in range(n):
            assert close(h[i][k].data, h_t[i][k].item()), (i, k)
            assert close(h[i][k].data, h[k][i].data, 1e-10)


def test_hessian_rows_where_the_hessian_is_not_symmetric():
    # hessian() gave the transpose: hvp with the j-th unit vector is column j. It shows
    # where the mixed derivatives differ: pow's at exponent 0 (torch's convention), and
    # an interior node given as an input.
    a, b = Value(2.0), Value(0.0)
    rows = [[h.data for h in row] for row in hessian(a**b, [a, b])]
    g = grad(a**b, [a, b], create_graph=True)
    assert rows == [[h.data for h in grad(gi, [a, b])] for gi in g]
    torch_rows = torch.autograd.functional.hessian(
        lambda t: t[0] ** t[1], torch.tensor([2.0, 0.0], dtype=torch.float64)
    )
    assert rows == torch_rows.tolist() and rows[0][1] != rows[1][0]
    column = hvp(a**b, [a, b], [1.0, 0.0])
    assert [h.data for h in column] == [rows[0][0], rows[1][0]]

    x = Value(0.5)
    t = x.exp()
    f = t * x
    rows = [[h.data for h in row] for row in hessian(f, [x, t])]
    g = grad(f, [x, t], create_graph=True)
    assert rows == [[h.data for h in grad(gi, [x, t])] for gi in g]
    assert rows[0][1] != rows[1][0]


def test_jvp_is_the_gradient_along_the_direction_bitwise_for_a_linear_chain():
    x, y = Value(1.25), Value(-0.5)
    out = (x * 3.0 + y * 2.0) * 1.5
    (j,) = jvp(out, [x, y], [1.0, 0.0])
    assert j.data == 4.5
    (j,) = jvp(out, [x, y], [0.0, 1.0])
    assert j.data == 3.0


def test_no_grad_is_touched_and_nothing_leaks():
    gc.collect()
    base = stats()["live_nodes"]
    x, y = Value(0.3), Value(0.7)
    x.grad, y.grad = 5.0, -0.0
    out = (x * y).tanh() + x.sin()
    out.grad = 2.0
    for _ in range(3):
        jvp(out, [x, y], [1.0, 2.0])
        jvp([out, x * y], [x, y], [1.0, 2.0], create_graph=True)
        hvp(out, [x, y], [1.0, 2.0])
        hessian(out, [x, y])
    assert (x.grad, str(y.grad), out.grad) == (5.0, "-0.0", 2.0)
    del x, y, out
    gc.collect()
    assert stats()["live_nodes"] == base


def test_jvp_create_graph_is_differentiable_and_matches_hvp():
    x, y = Value(0.4), Value(-1.1)
    out = (x * x * y).sin() + (x / (y * y + 1.0)).exp()
    (j,) = jvp(out, [x, y], [0.5, -2.0], create_graph=True)
    (plain,) = jvp(out, [x, y], [0.5, -2.0])
    assert close(j.data, plain.data)
    assert j._prev  # a graph, not a leaf
    by_grad = grad(j, [x, y])
    by_hvp = hvp(out, [x, y], [0.5, -2.0])
    for a, b in zip(by_grad, by_hvp):
        assert close(a.data, b.data)
    # replay of the tangent graph follows new leaf data
    x.data = 0.9
    out.forward()
    j.forward()
    assert close(j.data, jvp(out, [x, y], [0.5, -2.0])[0].data)


def test_several_outputs_inputs_twice_inputs_outside_and_constants():
    x, y, z = Value(2.0), Value(3.0), Value(7.0)
    a, b = x * y, x + 1.0
    got = [v.data for v in jvp([a, b, z], [x, y, z, x], [1.0, 10.0, 0.0, 1.0])]
    assert got == [2.0 * 3.0 + 10.0 * 2.0, 2.0, 0.0]  # x's tangent is 1 + 1
    outside = Value(1.0)
    assert [v.data for v in jvp(a, [outside, x], [5.0, 1.0])] == [3.0]
    assert [v.data for v in hvp(a, [outside, x, y], [1.0, 1.0, 1.0])] == [0.0, 1.0, 1.0]
    const = next(v for v in b._prev if v is not x)  # the 1.0 in x + 1.0
    assert jvp(b, [const], [1.0])[0].data == 0.0  # a constant has no tangent
    with no_grad():
        j, k = jvp([a, b], [x], [1.0], create_graph=True)
    assert (j.data, k.data) == (3.0, 1.0) and grad(j, [y])[0].data == 1.0


def test_interior_nodes_as_inputs_are_seeds():
    x = Value(0.5)
    h = x * x
    out = h.exp()
    (j,) = jvp(out, [h], [1.0])
    assert close(j.data, math.exp(0.25))


@pytest.mark.parametrize("left", [5e-324, 1.0, -2.5e300, float("nan")])
def test_an_input_outside_the_graph_with_a_grad_left_on_it(left):
    # The sweep keeps each node's place in the order in its grad field, set only under
    # the root: an input outside it kept its .grad there, read as a place (5e-324: the
    # place of x, so jvp 8.0; 1.0: an index far out, a segfault).
    x, y = Value(2.0), Value(3.0)
    f = x * x
    y.grad = left
    assert [v.data for v in jvp([f], [x, y], [1.0, 1.0])] == [4.0]
    assert [v.data for v in jvp([f], [x, y], [1.0, 1.0], create_graph=True)] == [4.0]
    assert [v.data for v in hvp(f, [x, y], [1.0, 1.0])] == [2.0, 0.0]
    assert [v.data for v in jvp([f, y], [x], [1.0])] == [4.0, 0.0]  # an output outside
    assert repr(y.grad) == repr(left) and x.grad == 0.0


def test_an_interior_input_moves_with_an_input_below_it():
    # t = x * y and x are both inputs: grad's d f / d x counts the path through t, so
    # along (1, 0.5) t moves by 1 + 0.5 y. jvp once gave t its seed alone (1.85 where
    # grad . v is 1.54), and hvp followed it.
    x, y = Value(0.7), Value(-0.3)
    t = x * y
    f = t.tanh() * x.exp() + t * t * t
    v = [1.0, 0.5]
    g = grad(f, [t, x], create_graph=True)
    along = g[0] * v[0] + g[1] * v[1]
    assert close(jvp(f, [t, x], v)[0].data, along.data)
    assert close(jvp(f, [t, x], v, create_graph=True)[0].data, along.data)
    for a, b in zip(hvp(f, [t, x], v), grad(along, [t, x])):
        assert close(a.data, b.data)


def test_python_rules_are_refused_and_bad_arguments_raise():
    x = Value(2.0)
    out = Value(4.0, (x,), "sq")

    def _backward():
        x.grad += 2.0 * x.data * out.grad

    out._backward = _backward
    for call in (
        lambda: jvp(out, [x], [1.0]),
        lambda: hvp(out, [x], [1.0]),
        lambda: jvp(out, [x], [1.0], create_graph=True),
    ):
        with pytest.raises(RuntimeError, match="Python"):
            call()
    y = x * 3.0
    with pytest.raises(ValueError, match="one number per input"):
        jvp(y, [x], [1.0, 2.0])
    with pytest.raises(TypeError, match="real numbers"):
        jvp(y, [x], ["a"])
    with pytest.raises(TypeError):
        jvp(y, [1.0], [1.0])
    with pytest.raises(TypeError):
        hvp(2.0, [x], [1.0])
    assert x.grad == 0.0


def test_the_curvature_example_of_the_docs_agrees_with_torch():
    """docs/higher-order.md's worked example: a small network's loss curvature along a direction."""
    rng = random.Random(0)
    w = [Value(rng.uniform(-1, 1)) for _ in range(6)]
    data = [(0.5, -1.0, 1.0), (-0.3, 0.8, -1.0), (1.2, 0.1, 1.0)]

    def loss_of(w, tanh, square):
        total = 0.0
        for a, b, label in data:
            h0 = tanh(w[0] * a + w[1] * b)
            h1 = tanh(w[2] * a + w[3] * b)
            total = total + square(w[4] * h0 + w[5] * h1 - label)
        return total

    loss = loss_of(w, lambda v: v.tanh(), lambda v: v * v)
    v = [1.0, -1.0, 0.5, 0.5, -0.25, 0.25]
    curvature = sum(h.data * vi for h, vi in zip(hvp(loss, w, v), v))
    wt = torch.tensor([p.data for p in w], dtype=torch.float64)
    vt = torch.tensor(v, dtype=torch.float64)
    f = lambda wt: loss_of(wt, torch.tanh, lambda t: t * t)
    _, hv = torch.autograd.functional.hvp(f, wt, vt)
    assert close(curvature, float(hv @ vt))


def test_a_constant_has_no_tangent_with_create_graph_too():
    x = Value(3.0)
    y = x * 2.5
    (c,) = [v for v in y._prev if v is not x]  # the constant 2.5
    for create_graph in (False, True):
        assert jvp(c, [c], [1.0], create_graph=create_graph)[0].data == 0.0
        assert [v.data for v in jvp([y, c], [c, x], [1.0, 0.0], create_graph=create_graph)] == [0.0, 0.0]


def test_jvp_of_several_outputs_under_detect_anomaly_looks_only_at_the_results():
    # the outputs are summed into one root for the sort; that sum's inf was reported as
    # jvp's anomaly, though each output alone (and every tangent) is finite
    x = Value(1.0)
    a, b = x * 2.0, Value(math.inf)
    with detect_anomaly():
        for create_graph in (False, True):
            assert [v.data for v in jvp([a, b], [x], [1.0], create_graph=create_graph)] == [2.0, 0.0]
