"""Differential fuzzing against PyTorch in float64: random graphs over every op, built
node by node in pyautograd and in torch, must agree on every value and every gradient.

Graphs come from hypothesis in three shapes: random DAGs (shared subexpressions, `a + a`,
numbers on either side, Value exponents), deep chains (a block of ops repeated up to a
few hundred times) and wide ones (n-ary sum/dot over up to 300 inputs, every node used
by the root). Leaves are mostly moderate numbers, sometimes IEEE edges (0, -0, 1e200,
1e-200, +-750, +-inf, nan), so domain errors and overflow are fuzzed too.

What agreement means, for a value or gradient q against torch's r:
- r is nan: q is nan. r is +-inf: q is the same inf.
- r is finite: |q - r| <= 1e-12 |r| + 32 u S, where u = 2**-52 and u S is the first-order
  bound on the rounding error one float64 evaluation can have (S is propagated beside
  the graph: each op's own rounding plus its inputs' bounds times |local derivative|;
  + - * / neg relu and the fused sum/dot are the same IEEE operations in both engines
  and add nothing of their own, gradients add the order of their sums).
  Where the result is well conditioned, 32 u S is far below 1e-12 |r| and the check is
  plain relative error; it only loosens where rounding genuinely moves the result
  (cancellation, tanh near saturation), because torch's tanh/exp/log can differ from
  the C library's by an ulp and such differences are then amplified, not because of a
  bug. test_the_check_catches_a_wrong_gradient proves the check is not vacuous.
- Where moving an op's inputs by their bounds could flip its result between finite, inf
  and nan (log or / of a value that may be 0 or a subnormal, exp at its overflow
  threshold, sums of finite terms past 1e308 whose order differs), that result and what
  depends on it are compared only when both are finite. Exact inputs never flip:
  test_edge_leaves_are_fuzzed_and_follow_torch compares every edge strictly.

Edges where we follow torch on purpose (pow's exponent gradient at base 0, relu's
gradient 0 at 0, abs' 0 at 0, leaky_relu's slope at 0, half the gradient to each side of
a maximum or minimum tie, softplus linear past 20) are compared like everything else.
Branches whose side rounding may decide (relu, abs, leaky_relu at a value within its
bound of 0, maximum and minimum of two values within their bounds of each other,
softplus within its bound of 20) allow the jump of the derivative there.

One deliberate difference is kept out: relu's gradient at a nan input is 0 (micrograd's
`out > 0`), torch passes the gradient through; the generator never feeds nan to relu (it
negates instead). Another is avoided: log and division at a subnormal input (|x| <
2.2e-308), where the local derivative 1/x overflows to inf and g * inf is inf or nan;
torch divides (g / x) and may stay finite. The generator negates instead of log and
multiplies instead of dividing there. A third: maximum and minimum at a nan input pass
the gradient to both inputs in torch and 0 to both here (a disagreement with torch's
rule); the generator adds instead. And where torch's softplus backward overflows (it
computes grad * exp(x) before dividing by exp(x) + 1; ours grad * (exp(x) / (exp(x) + 1))
stays finite for grads past ~1e300), nothing is claimed unless both are finite.

v.leaky_relu(slope) takes the instruction's number as its slope (none, the default 0.01,
for the Value-Value form); pyautograd.maximum and minimum take the three forms.

PYAUTOGRAD_FUZZ_EXAMPLES=N runs N random graphs (and proportionally more deep and wide
ones) with a fresh random seed each run; by default a fixed, derandomized few thousand.
"""

import functools
import itertools
import math
import operator
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyautograd
from pyautograd import functional as F
from pyautograd.engine import OP_NAMES, OP_PYTHON, Value

from conftest import require

torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")

U = 2.0**-52
TINY = 2.0**-1074 / U  # below 2**-1022 rounding is absolute: one subnormal step, in units of u
REL = 1e-12
ROUNDING_SLACK = 32

UNARY = ["neg", "relu", "tanh", "exp", "log", "sigmoid", "sin", "cos", "sqrt", "abs", "gelu", "softplus", "detach"]
SLOPED = ["leaky_relu"]  # v.leaky_relu(slope): a number for its second input
BINARY = ["add", "sub", "mul", "truediv", "pow", "maximum", "minimum"]
FUNCTIONS = {"maximum", "minimum"}  # pyautograd.maximum(a, b), not an operator
NARY = ["sum", "dot"]
ALL_OPS = UNARY + SLOPED + BINARY + NARY
DEFAULT_SLOPE = 0.01  # v.leaky_relu()'s, and torch's
# custom passes no gradient; local's derivatives are numbers the program gives; the
# internal rows (step, gate, sign, leaky_slope, softplus_d, max_share) are made only by
# derivative graphs (test_higher_order.py)
INTERNAL = {n for c, n in enumerate(OP_NAMES) if OP_PYTHON[c] == "internal"}
NOT_DIFFERENTIABLE_AGAINST_TORCH = {"leaf", "const", "custom", "local"} | INTERNAL

CONSTANTS = [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, -0.5, 2.5, 0.1, 1e-3, 100.0]
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-200, -1e-200, 1e200, 750.0, -750.0, math.inf, -math.inf, math.nan]

_EXTRA = int(os.environ.get("PYAUTOGRAD_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default_examples):
    examples = max(1, _EXTRA * default_examples // 2000) if _EXTRA else default_examples
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not _EXTRA,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# ---- the two engines, op by op ----

_BINARY_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "pow": operator.pow,
}


def ours(op, args):
    """args: Values, or one real number beside a Value for binary ops (a constant)."""
    if op == "neg":
        return -args[0]
    if op in UNARY:
        return getattr(args[0], op)()
    if op == "leaky_relu":
        x, slope = args
        return x.leaky_relu() if slope == DEFAULT_SLOPE else x.leaky_relu(slope)
    if op in FUNCTIONS:
        return getattr(pyautograd, op)(*args)
    if op == "sum":
        return F.sum(args)
    if op == "dot":
        ws, xs, bias = args
        return F.dot(ws, xs, bias if bias is not None else 0)
    return _BINARY_OPERATORS[op](*args)


class _PassesZero(torch.autograd.Function):
    """ops.h's detach row in torch: the value, and exactly 0 back to the input (which
    then goes on through the graph below, 0 * inf = nan included, as every zero does in
    pyautograd's sweep; torch's own detach cuts the graph there)."""

    @staticmethod
    def forward(ctx, a):
        return a.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


def theirs(op, args):
    """The same op in torch; constants arrive as tensors without grad (so `2 / x` is a
    tensor division, not torch's reciprocal-times-scalar, which makes 0/1e-300 nan)."""
    if op == "neg":
        return -args[0]
    if op == "gelu":
        return torch.nn.functional.gelu(args[0], approximate="tanh")
    if op == "softplus":
        return torch.nn.functional.softplus(args[0])
    if op == "detach":  # its value, and exactly 0 back (not torch's detach, which cuts)
        return _PassesZero.apply(args[0])
    if op in UNARY:
        return getattr(torch, op)(args[0])
    if op == "leaky_relu":
        return torch.nn.functional.leaky_relu(args[0], float(args[1]))
    if op in FUNCTIONS:
        return getattr(torch, op)(*args)
    if op == "sum":
        return functools.reduce(operator.add, args)  # left to right, like ag_sum
    if op == "dot":
        ws, xs, bias = args
        acc = bias if bias is not None else torch.zeros((), dtype=torch.float64)
        for w, x in zip(ws, xs):
            acc = acc + w * x  # bias first, then each product in order, like ag_dot
        return acc
    return _BINARY_OPERATORS[op](*args)


# ---- first-order rounding bounds, propagated beside the graph ----
# S for a value: |its own rounding| + sum |d out / d input| * S(input), in units of u.
# For a local derivative, the same for the formula that computes it. numpy floats give
# IEEE results without Python's exceptions; a zero derivative times anything is 0.

_NP_FORWARD = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b,
    "pow": lambda a, b: np.power(a, b),
    "neg": lambda a: -a,
    "relu": lambda a: np.float64(0.0) if a < 0 else a,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "sin": np.sin,
    "cos": np.cos,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "gelu": lambda a: 0.5 * a * (1.0 + np.tanh(GELU_BETA * (a + GELU_KAPPA * (a * a * a)))),
    "softplus": lambda a: a if a > 20.0 else np.log1p(np.exp(a)),
    "detach": lambda a: a,
    "leaky_relu": lambda a, b: a if a > 0 else a * b,
    "maximum": np.maximum,
    "minimum": np.minimum,
}
SLACK = 32 * U  # how far rounding may move a quantity, relative to its bound S
SOFTPLUS_JUMP = math.log1p(math.exp(-20.0)) / U  # softplus's step at its threshold 20, in u
GELU_BETA = 1.41421356237309504880 * 1.12837916709551257390 * 0.5
GELU_KAPPA = 0.044715


def _gelu_parts(a):
    """gelu's pieces as both engines compute them, and rounding bounds (in u) of its value
    (own) and derivative (own_d), and its second derivative (for the inputs' share)."""
    with np.errstate(all="ignore"):
        return _gelu_parts_ieee(np.float64(a))


def _gelu_parts_ieee(a):
    cube = a * a * a
    inner = GELU_BETA * (a + GELU_KAPPA * cube)
    t = np.tanh(inner)
    s = 1.0 - t * t
    u1 = GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * (a * a))
    e_inner = 3 * GELU_BETA * abs(GELU_KAPPA * cube) + 2 * abs(inner)
    e_t = abs(t) + _scaled(s, e_inner)  # tanh's own ulp (the engines' tanh differ) + inner's
    out = 0.5 * a * (1.0 + t)
    own = _scaled(0.5 * a, e_t + abs(1.0 + t)) + abs(out)
    left, right = 0.5 * (1.0 + t), _scaled(_scaled(0.5 * a, s), u1) if s != 0 else 0.0
    d = left + (0.5 * a * s * u1 if s != 0 else 0.0)
    own_d = (
        0.5 * (e_t + abs(1.0 + t))
        + abs(left)
        + 4 * right
        + _scaled(_scaled(0.5 * a, u1), 2 * abs(t) * e_t + t * t + abs(s))
        + abs(d)
    )
    second = _scaled(s, u1) + _scaled(
        _scaled(0.5 * a, s), abs(6 * GELU_BETA * GELU_KAPPA * a) + 2 * _scaled(t, u1 * u1)
    )
    return out, d, own, own_d, second


def category(x):
    return "nan" if math.isnan(x) else ("finite" if math.isfinite(x) else math.copysign(1, x))


def flips(f, args, scales):
    """Whether moving args by their rounding bounds can change f's result between finite,
    +inf, -inf and nan (near 0 under log or /, near an overflow threshold). There the two
    engines may legitimately land on different sides, and only finite results compare."""
    with np.errstate(all="ignore"):
        args = [np.float64(a) for a in args]
        base = category(float(f(*args)))
        deltas = [SLACK * s if math.isfinite(s) else math.inf for s in scales]
        if not any(deltas):
            return False
        for signs in itertools.product((-1.0, 0.0, 1.0), repeat=len(args)):
            moved = [a + sign * d if sign else a for a, sign, d in zip(args, signs, deltas)]
            if category(float(f(*moved))) != base:
                return True
    return False


def finite_abs(x):
    return abs(x) if math.isfinite(x) else 0.0


def past_max(magnitude):
    """Whether finite terms of this total magnitude can overflow a partial sum."""
    return not magnitude < sys.float_info.max / 2


def subnormal(x):
    return 0 < abs(x) < sys.float_info.min


def _scaled(d, s):
    if d == 0 or s == 0:
        return 0.0
    with np.errstate(all="ignore"):
        return float(abs(np.float64(d)) * abs(s))


def local_derivatives(op, a, b, out, sa, sb, sout):
    """[(d out/d input, S of that derivative)] per input, as csrc/ops.h computes them."""
    with np.errstate(all="ignore"):
        result = []
        for i, (d, s_d) in enumerate(_local_derivatives(op, a, b, out, sa, sb, sout)):
            if not math.isfinite(d):  # inf or nan in both engines, unless rounding can flip it
                formula = lambda a_, b_, out_: _local_derivatives(op, a_, b_, out_, 0, 0, 0)[i][0]  # noqa: B023
                s_d = math.inf if flips(formula, [a, b, out], [sa, sb, sout]) else 0.0
            result.append((d, s_d + TINY))
        return result


def _local_derivatives(op, a, b, out, sa, sb, sout):
    a, b, out = np.float64(a), np.float64(b), np.float64(out)
    if op == "add":
        return [(1.0, 0.0), (1.0, 0.0)]
    if op == "detach":  # its value is its input's, but it passes back exactly 0
        return [(0.0, 0.0)]
    if op == "sub":
        return [(1.0, 0.0), (-1.0, 0.0)]
    if op == "mul":
        return [(b, sb), (a, sa)]
    if op == "truediv":
        da, db = 1.0 / b, -out / b
        return [
            (da, abs(da) + _scaled(da * da, sb)),
            (db, abs(db) + _scaled(1.0 / b, sout) + _scaled(out / (b * b), sb)),
        ]
    if op == "pow":
        da = 0.0 if b == 0 else b * a ** (b - 1.0)
        db = 0.0 if (a == 0 and b >= 0) else out * np.log(a)
        log_a = np.log(abs(a))
        sda = (
            (
                3 * abs(da)
                + _scaled(b * (b - 1.0) * a ** (b - 2.0), sa)
                + _scaled(a ** (b - 1.0) * (1.0 + b * log_a), sb)
            )
            if da != 0
            else 0.0
        )
        sdb = (2 * abs(db) + _scaled(log_a, sout) + _scaled(out / a, sa)) if db != 0 else 0.0
        return [(da, sda), (db, sdb)]
    if op == "neg":
        return [(-1.0, 0.0)]
    if op == "relu":
        d = 1.0 if out > 0 else 0.0
        sign_unsure = sa > 0 and abs(a) <= 8 * U * sa  # rounding may put a on either side of 0
        return [(d, 2.0 / U if sign_unsure else 0.0)]
    if op == "tanh":
        d = 1.0 - out * out
        return [(d, _scaled(2 * out, sout) + out * out + abs(d))]
    if op == "exp":
        return [(out, sout)]
    if op == "log":
        d = 1.0 / a
        return [(d, abs(d) + _scaled(d * d, sa))]
    if op == "sigmoid":
        d = out * (1.0 - out)
        return [(d, _scaled(1.0 - 2 * out, sout) + 3 * abs(d) + abs(out))]
    if op == "sin":
        d = np.cos(a)
        return [(d, abs(d) + _scaled(np.sin(a), sa))]
    if op == "cos":
        d = -np.sin(a)
        return [(d, abs(d) + _scaled(np.cos(a), sa))]
    if op == "sqrt":  # G / (2 out) in both engines: one division, the product's rounding
        d = 0.5 / out
        return [(d, _scaled(d / out, sout))]
    if op == "abs":
        d = 1.0 if a > 0 else -1.0 if a < 0 else 0.0  # sign(nan) is 0, as torch's sgn
        return [(d, 2.0 / U if _side_unsure(a, sa) else 0.0)]
    if op == "leaky_relu":
        d = 1.0 if a > 0 else b
        return [(d, 2.0 * abs(1.0 - b) / U if _side_unsure(a, sa) else 0.0), (0.0 if a > 0 else a, 0.0)]
    if op == "gelu":
        _, d, _, own_d, second = _gelu_parts(a)
        return [(d, own_d + _scaled(second, sa))]
    if op == "softplus":
        if a > 20.0:
            d, s_d = 1.0, 0.0
        else:
            e = np.exp(a)
            d = e / (e + 1.0)
            s_d = 3 * abs(d) + _scaled(d * (1.0 - d), sa)
        return [(d, s_d + (1.0 / U if _side_unsure(a - 20.0, sa) else 0.0))]
    if op in ("maximum", "minimum"):
        first, second = (a, b) if op == "maximum" else (b, a)
        da = 0.5 if a == b else 1.0 if first > second else 0.0
        jump = 2.0 / U if _side_unsure(a - b, sa + sb) else 0.0
        return [(da, jump), (0.5 if a == b else 1.0 - da, jump)]
    raise AssertionError(op)


def _side_unsure(x, s):
    """Whether rounding (bound s) may put x on either side of 0, so a branch on its sign
    may go either way."""
    return s > 0 and abs(x) <= 8 * U * s


class Graph:
    """One graph in both engines. nodes[i] is a dict: op, refs (indices of input nodes,
    or None for a constant), derivs [(d, S)] per ref, ours (Value), theirs (tensor), S."""

    def __init__(self, leaves):
        self.nodes = []
        self.trace = []  # readable program, for failure messages
        for x in leaves:
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            self.nodes.append(dict(op="leaf", refs=[], derivs=[], ours=Value(x), theirs=t, S=0.0, unsure=False))
            self.trace.append(f"n{len(self.nodes) - 1} = leaf({x!r})")

    def value(self, i):
        return self.nodes[i]["ours"].data

    def add(self, op, refs, constant=None, constant_first=False):
        """Applies op to nodes refs (and a constant for a binary op with one ref)."""
        nodes = self.nodes
        if op == "relu" and math.isnan(self.value(refs[0])):
            op = "neg"  # see the module docstring: relu's gradient at nan differs on purpose
        if op == "log" and subnormal(self.value(refs[0])):
            op = "neg"  # see the module docstring: 1/x overflows
        if op == "truediv" and subnormal(
            constant if constant is not None and not constant_first else self.value(refs[-1])
        ):
            op = "mul"
        if op in FUNCTIONS and any(
            math.isnan(x) for x in [self.value(r) for r in refs] + ([constant] if constant is not None else [])
        ):
            op = "add"  # see the module docstring: the gradient at a nan differs
        if op in NARY:
            return self._add_nary(op, refs)
        args_ours = [nodes[i]["ours"] for i in refs]
        args_theirs = [nodes[i]["theirs"] for i in refs]
        values = [nodes[i]["ours"].data for i in refs]
        scales = [nodes[i]["S"] for i in refs]
        all_refs = list(refs)
        if constant is not None:
            position = 0 if constant_first else 1
            args_ours.insert(position, constant)
            args_theirs.insert(position, torch.tensor(constant, dtype=torch.float64))
            values.insert(position, constant)
            scales.insert(position, 0.0)
            all_refs.insert(position, None)
        out_ours = ours(op, args_ours)
        out_theirs = theirs(op, args_theirs)
        out = out_ours.data
        a = values[0]
        b = values[1] if len(values) > 1 else 0.0
        sa = scales[0]
        sb = scales[1] if len(scales) > 1 else 0.0
        # S of the value: its own rounding plus the inputs'. + - * / neg relu are single IEEE
        # operations, bitwise the same in both engines; the library functions may differ by
        # an ulp (torch's tanh/exp/log are not the C library's), sigmoid rounds three times.
        own = {
            "sigmoid": 3 * abs(out) + TINY,
            "tanh": abs(out) + TINY,
            "exp": abs(out) + TINY,
            "log": abs(out) + TINY,
            "pow": abs(out) + TINY,
            "sin": abs(out) + TINY,
            "cos": abs(out) + TINY,
        }.get(op, 0.0)
        if op in ("relu", "abs"):
            s_out = own + sa  # either branch moves the value by at most a's error
        elif op == "detach":
            s_out = sa  # a's value, and so a's error, though no derivative carries it
        elif op == "leaky_relu":
            s_out = max(1.0, abs(b)) * sa
        elif op in ("maximum", "minimum"):
            s_out = sa + sb  # the chosen input's, or the other's if rounding may swap them
        elif op == "gelu":
            _, d, own, _, _ = _gelu_parts(a)
            s_out = own + TINY + _scaled(d, sa)
        elif op == "softplus":
            d = local_derivatives(op, a, b, out, sa, sb, 0.0)[0][0]
            s_out = (0.0 if a > 20 else 2 * abs(out) + TINY) + _scaled(d, sa)
            s_out += SOFTPLUS_JUMP if _side_unsure(a - 20.0, sa) else 0.0
        else:
            derivs0 = local_derivatives(op, a, b, out, sa, sb, 0.0)
            s_out = own + sum(_scaled(d, s) for (d, _), s in zip(derivs0, scales))
        unsure = any(nodes[i]["unsure"] for i in refs) or flips(_NP_FORWARD[op], values, scales)
        if not math.isfinite(out) and not unsure:
            s_out = 0.0  # an inf or nan both engines must produce: no rounding to carry on
        derivs = local_derivatives(op, a, b, out, sa, sb, s_out)
        self._append(op, all_refs, derivs, out_ours, out_theirs, s_out, unsure)
        nodes[-1]["a"] = a
        shown = [f"n{r}" if r is not None else repr(constant) for r in all_refs]
        self.trace[-1] = f"n{len(nodes) - 1} = {op}({', '.join(shown)})"
        return len(nodes) - 1

    def _add_nary(self, op, refs):
        nodes = self.nodes
        if op == "sum":
            terms = [nodes[i]["ours"] for i in refs]
            out_ours = ours("sum", terms)
            out_theirs = theirs("sum", [nodes[i]["theirs"] for i in refs])
            magnitude = sum(finite_abs(nodes[i]["ours"].data) for i in refs)
            s_out = sum(nodes[i]["S"] for i in refs)  # the same additions in the same order
            derivs = [(1.0, 0.0) for _ in refs]
            all_refs = list(refs)
        else:  # dot: refs are w0, x0, w1, x1, ..., and a bias when odd
            pairs = len(refs) // 2
            ws, xs = refs[0 : 2 * pairs : 2], refs[1 : 2 * pairs : 2]
            bias = refs[-1] if len(refs) % 2 else None
            out_ours = ours(
                "dot",
                (
                    [nodes[i]["ours"] for i in ws],
                    [nodes[i]["ours"] for i in xs],
                    nodes[bias]["ours"] if bias is not None else None,
                ),
            )
            out_theirs = theirs(
                "dot",
                (
                    [nodes[i]["theirs"] for i in ws],
                    [nodes[i]["theirs"] for i in xs],
                    nodes[bias]["theirs"] if bias is not None else None,
                ),
            )
            v = lambda i: nodes[i]["ours"].data
            s = lambda i: nodes[i]["S"]
            magnitude = sum(finite_abs(v(w) * v(x)) for w, x in zip(ws, xs))
            magnitude += finite_abs(v(bias)) if bias is not None else 0.0
            s_out = 0.0  # the same products and additions in the same order
            derivs, all_refs = [], []
            for w, x in zip(ws, xs):
                s_out += _scaled(v(x), s(w)) + _scaled(v(w), s(x))
                derivs += [(v(x), s(x)), (v(w), s(w))]
                all_refs += [w, x]
            if bias is not None:
                s_out += s(bias)
                derivs.append((1.0, 0.0))
                all_refs.append(bias)
        unsure = past_max(magnitude) or any(nodes[i]["unsure"] for i in all_refs)
        if not math.isfinite(out_ours.data) and not unsure:
            s_out = 0.0
        self._append(op, all_refs, derivs, out_ours, out_theirs, s_out, unsure)
        self.trace[-1] = f"n{len(nodes) - 1} = {op}({', '.join(f'n{r}' for r in all_refs)})"
        return len(nodes) - 1

    def _append(self, op, refs, derivs, out_ours, out_theirs, s_out, unsure):
        out_theirs.retain_grad()
        self.nodes.append(
            dict(op=op, refs=refs, derivs=derivs, ours=out_ours, theirs=out_theirs, S=float(s_out), unsure=unsure)
        )
        self.trace.append(None)

    def check(self, root=None):
        """Backward from root (default: the last node) in both engines, then compares
        every value and every gradient."""
        nodes = self.nodes
        root = len(nodes) - 1 if root is None else root
        nodes[root]["ours"].backward()
        nodes[root]["theirs"].backward()
        grads = [n["ours"].grad for n in nodes]
        # S of each gradient, from the root down (creation order is a topological order)
        sg = [0.0] * len(nodes)
        term_mass = [0.0] * len(nodes)
        finite_mass = [0.0] * len(nodes)
        uses = [0] * len(nodes)
        unsure = [False] * len(nodes)  # the gradient's category may differ by rounding
        for k in range(root, -1, -1):
            sg[k] += uses[k] * term_mass[k]  # the order of a sum's terms differs between engines
            unsure[k] = unsure[k] or past_max(finite_mass[k])
            g = grads[k]
            if not math.isfinite(g) and not unsure[k]:
                sg[k] = 0.0  # an inf or nan both engines must produce
            refs = nodes[k]["refs"]
            inputs_unsure = nodes[k]["unsure"] or any(nodes[j]["unsure"] for j in refs if j is not None)
            if nodes[k]["op"] == "softplus" and nodes[k]["a"] <= 20.0 and math.isfinite(g):
                # torch's backward makes grad * exp(x) first: past ~1e300 it overflows
                inputs_unsure = inputs_unsure or not math.isfinite(abs(g) * math.exp(nodes[k]["a"]))
            for j, (d, s_d) in zip(refs, nodes[k]["derivs"]):
                if j is None:
                    continue  # a constant: no gradient to compare
                sg[j] += _scaled(d, sg[k]) + _scaled(s_d, g) + _scaled(d, g) + TINY
                term_mass[j] += _scaled(d, g) + TINY
                finite_mass[j] += finite_abs(_scaled(d, g))
                uses[j] += 1
                unsure[j] = unsure[j] or unsure[k] or inputs_unsure or flips(operator.mul, [g, d], [sg[k], s_d])
        for i, n in enumerate(nodes):
            g_theirs = n["theirs"].grad
            g_theirs = 0.0 if g_theirs is None else g_theirs.item()
            agree(n["ours"].data, n["theirs"].item(), n["S"], f"value of n{i}", self, n["unsure"])
            agree(grads[i], g_theirs, sg[i], f"grad of n{i}", self, unsure[i])


def agree(q, r, s, what, graph, unsure=False):
    """unsure: rounding may flip the result between finite, inf and nan (see flips(), and
    sums whose finite terms add up past 1e308, where the order of the terms decides)."""
    if unsure and not (math.isfinite(q) and math.isfinite(r)):
        ok = True
    elif math.isnan(r):
        ok = math.isnan(q)
    elif math.isinf(r):
        ok = q == r
    elif not math.isfinite(s):
        ok = True  # the rounding bound itself overflowed (terms past 1e154, squared): no claim
    else:
        ok = math.isfinite(q) and abs(q - r) <= REL * abs(r) + ROUNDING_SLACK * U * s
    if not ok:
        program = "\n  ".join(graph.trace)
        raise AssertionError(f"{what}: pyautograd {q!r}, torch {r!r} (rounding scale {s!r})\n  {program}")


# ---- graph shapes ----

moderate = st.floats(-4.0, 4.0, allow_nan=False)
leaf_values = st.one_of(moderate, moderate, moderate, st.sampled_from(EDGES))

instruction = st.tuples(
    st.sampled_from(ALL_OPS),
    st.integers(0, 1 << 16),  # first operand: one of the newest few nodes
    st.integers(0, 1 << 16),  # second operand / n-ary operands: anywhere
    st.sampled_from(["vv", "vc", "cv"]),  # Value op Value, Value op number, number op Value
    st.sampled_from(CONSTANTS),
)


def run_instruction(graph, instr, width, recent=4):
    op, i, j, form, constant = instr
    pool = len(graph.nodes)
    first = pool - 1 - i % min(recent, pool)
    if op in NARY:
        # width operands picked from everywhere, with repeats (shared inputs, x*x in a dot)
        refs = [first] + [(j * 7919 + k * 104729 + i) % pool for k in range(width - 1)]
        return graph.add(op, refs)
    if op in UNARY:
        return graph.add(op, [first])
    if op in SLOPED:  # the number is the slope; the Value-Value form: the default slope
        return graph.add(op, [first], constant=DEFAULT_SLOPE if form == "vv" else constant)
    if form == "vv":
        return graph.add(op, [first, j % pool])
    return graph.add(op, [first], constant=constant, constant_first=form == "cv")


@given(
    leaves=st.lists(leaf_values, min_size=1, max_size=5),
    program=st.lists(st.tuples(instruction, st.integers(2, 12)), min_size=3, max_size=60),
)
@fuzz_settings(2000)
def test_random_graphs_match_torch(leaves, program):
    graph = Graph(leaves)
    for instr, width in program:
        run_instruction(graph, instr, width)
    graph.check()


@given(
    leaves=st.lists(leaf_values, min_size=1, max_size=3),
    block=st.lists(instruction, min_size=1, max_size=4),
    repeats=st.integers(20, 400),
)
@fuzz_settings(40)
def test_deep_graphs_match_torch(leaves, block, repeats):
    graph = Graph(leaves)
    for _ in range(repeats):
        for instr in block:
            run_instruction(graph, instr, width=3, recent=1)  # always the newest: a chain
    graph.check()


@given(
    leaves=st.lists(leaf_values, min_size=1, max_size=20),
    program=st.lists(st.tuples(instruction, st.integers(20, 300)), min_size=1, max_size=8),
)
@fuzz_settings(150)
def test_wide_graphs_match_torch(leaves, program):
    graph = Graph(leaves)
    for instr, width in program:
        run_instruction(graph, instr, width)
    graph.add("sum", list(range(len(graph.nodes))))  # the root uses every node: wide fan-out
    graph.check()


# ---- the fuzzer covers every op, and its check can fail ----


def test_fuzz_covers_every_op_in_the_c_table():
    differentiable = set(OP_NAMES) - NOT_DIFFERENTIABLE_AGAINST_TORCH
    assert differentiable == set(ALL_OPS)


def test_the_check_catches_a_wrong_gradient():
    graph = Graph([0.7, -1.3])
    graph.add("tanh", [graph.add("mul", [0, 1])])
    graph.add("add", [2, 0])
    graph.check()  # agrees
    leaf = graph.nodes[0]["theirs"]
    wrong = leaf.grad.item() * (1 + 1e-10)
    with pytest.raises(AssertionError, match="grad of n0"):
        agree(graph.nodes[0]["ours"].grad, wrong, 1.0, "grad of n0", graph)


def test_edge_leaves_are_fuzzed_and_follow_torch():
    # every edge value through every unary op and with every constant on both sides
    for x in EDGES:
        for op in UNARY:
            graph = Graph([x])
            graph.add(op, [0])
            graph.check()
        for slope in [DEFAULT_SLOPE] + CONSTANTS:
            graph = Graph([x])
            graph.add("leaky_relu", [0], constant=slope)
            graph.check()
        for op in BINARY:
            for c in CONSTANTS:
                for first in (False, True):
                    graph = Graph([x])
                    graph.add(op, [0], constant=c, constant_first=first)
                    graph.check()
