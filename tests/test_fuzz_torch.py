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
gradient 0 at 0) are compared like everything else. One deliberate difference is kept
out: relu's gradient at a nan input is 0 (micrograd's `out > 0`), torch passes the
gradient through; the generator never feeds nan to relu (it negates instead). Another is
avoided: log and division at a subnormal input (|x| < 2.2e-308), where the local derivative
1/x overflows to inf and g * inf is inf or nan; torch divides (g / x) and may stay finite.
The generator negates instead of log and multiplies instead of dividing there.

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

from pyautograd import functional as F
from pyautograd.engine import OP_NAMES, Value

from conftest import require

torch = require("torch", "PYAUTOGRAD_REQUIRE_TORCH")

U = 2.0 ** -52
TINY = 2.0 ** -1074 / U  # below 2**-1022 rounding is absolute: one subnormal step, in units of u
REL = 1e-12
ROUNDING_SLACK = 32

UNARY = ["neg", "relu", "tanh", "exp", "log", "sigmoid"]
BINARY = ["add", "sub", "mul", "truediv", "pow"]
NARY = ["sum", "dot"]
ALL_OPS = UNARY + BINARY + NARY
# custom passes no gradient; local's derivatives are numbers the program gives; step
# and gate are internal (relu's derivatives in derivative graphs: test_higher_order.py)
NOT_DIFFERENTIABLE_AGAINST_TORCH = {"leaf", "const", "custom", "local", "step", "gate"}

CONSTANTS = [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, -0.5, 2.5, 0.1, 1e-3, 100.0]
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-200, -1e-200, 1e200, 750.0, -750.0,
         math.inf, -math.inf, math.nan]

_EXTRA = int(os.environ.get("PYAUTOGRAD_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default_examples):
    examples = max(1, _EXTRA * default_examples // 2000) if _EXTRA else default_examples
    return settings(max_examples=examples, deadline=None, derandomize=not _EXTRA,
                    database=None, suppress_health_check=list(HealthCheck))


# ---- the two engines, op by op ----

_BINARY_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                     "truediv": operator.truediv, "pow": operator.pow}


def ours(op, args):
    """args: Values, or one real number beside a Value for binary ops (a constant)."""
    if op == "neg":
        return -args[0]
    if op in UNARY:
        return getattr(args[0], op)()
    if op == "sum":
        return F.sum(args)
    if op == "dot":
        ws, xs, bias = args
        return F.dot(ws, xs, bias if bias is not None else 0)
    return _BINARY_OPERATORS[op](*args)


def theirs(op, args):
    """The same op in torch; constants arrive as tensors without grad (so `2 / x` is a
    tensor division, not torch's reciprocal-times-scalar, which makes 0/1e-300 nan)."""
    if op == "neg":
        return -args[0]
    if op in UNARY:
        return getattr(torch, op)(args[0])
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
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b, "pow": lambda a, b: np.power(a, b), "neg": lambda a: -a,
    "relu": lambda a: np.float64(0.0) if a < 0 else a, "tanh": np.tanh, "exp": np.exp,
    "log": np.log, "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
}
SLACK = 32 * U  # how far rounding may move a quantity, relative to its bound S


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
    if op == "sub":
        return [(1.0, 0.0), (-1.0, 0.0)]
    if op == "mul":
        return [(b, sb), (a, sa)]
    if op == "truediv":
        da, db = 1.0 / b, -out / b
        return [(da, abs(da) + _scaled(da * da, sb)),
                (db, abs(db) + _scaled(1.0 / b, sout) + _scaled(out / (b * b), sb))]
    if op == "pow":
        da = 0.0 if b == 0 else b * a ** (b - 1.0)
        db = 0.0 if (a == 0 and b >= 0) else out * np.log(a)
        log_a = np.log(abs(a))
        sda = (3 * abs(da) + _scaled(b * (b - 1.0) * a ** (b - 2.0), sa)
               + _scaled(a ** (b - 1.0) * (1.0 + b * log_a), sb)) if da != 0 else 0.0
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
    raise AssertionError(op)


class Graph:
    """One graph in both engines. nodes[i] is a dict: op, refs (indices of input nodes,
    or None for a constant), derivs [(d, S)] per ref, ours (Value), theirs (tensor), S."""

    def __init__(self, leaves):
        self.nodes = []
        self.trace = []  # readable program, for failure messages
        for x in leaves:
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            self.nodes.append(dict(op="leaf", refs=[], derivs=[], ours=Value(x), theirs=t, S=0.0,
                                   unsure=False))
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
        if op == "truediv" and subnormal(constant if constant is not None and not constant_first
                                         else self.value(refs[-1])):
            op = "mul"
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
        own = {"sigmoid": 3 * abs(out) + TINY, "tanh": abs(out) + TINY, "exp": abs(out) + TINY,
               "log": abs(out) + TINY, "pow": abs(out) + TINY}.get(op, 0.0)
        if op == "relu":
            s_out = own + sa  # either branch moves the value by at most a's error
        else:
            derivs0 = local_derivatives(op, a, b, out, sa, sb, 0.0)
            s_out = own + sum(_scaled(d, s) for (d, _), s in zip(derivs0, scales))
        unsure = (any(nodes[i]["unsure"] for i in refs)
                  or flips(_NP_FORWARD[op], values, scales))
        if not math.isfinite(out) and not unsure:
            s_out = 0.0  # an inf or nan both engines must produce: no rounding to carry on
        derivs = local_derivatives(op, a, b, out, sa, sb, s_out)
        self._append(op, all_refs, derivs, out_ours, out_theirs, s_out, unsure)
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
            ws, xs = refs[0:2 * pairs:2], refs[1:2 * pairs:2]
            bias = refs[-1] if len(refs) % 2 else None
            out_ours = ours("dot", ([nodes[i]["ours"] for i in ws], [nodes[i]["ours"] for i in xs],
                                    nodes[bias]["ours"] if bias is not None else None))
            out_theirs = theirs("dot", ([nodes[i]["theirs"] for i in ws],
                                        [nodes[i]["theirs"] for i in xs],
                                        nodes[bias]["theirs"] if bias is not None else None))
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
        self.nodes.append(dict(op=op, refs=refs, derivs=derivs, ours=out_ours,
                               theirs=out_theirs, S=float(s_out), unsure=unsure))
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
            for j, (d, s_d) in zip(refs, nodes[k]["derivs"]):
                if j is None:
                    continue  # a constant: no gradient to compare
                sg[j] += _scaled(d, sg[k]) + _scaled(s_d, g) + _scaled(d, g) + TINY
                term_mass[j] += _scaled(d, g) + TINY
                finite_mass[j] += finite_abs(_scaled(d, g))
                uses[j] += 1
                unsure[j] = (unsure[j] or unsure[k] or inputs_unsure
                             or flips(operator.mul, [g, d], [sg[k], s_d]))
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
    st.integers(0, 1 << 16),              # first operand: one of the newest few nodes
    st.integers(0, 1 << 16),              # second operand / n-ary operands: anywhere
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
    if form == "vv":
        return graph.add(op, [first, j % pool])
    return graph.add(op, [first], constant=constant, constant_first=form == "cv")


@given(leaves=st.lists(leaf_values, min_size=1, max_size=5),
       program=st.lists(st.tuples(instruction, st.integers(2, 12)), min_size=3, max_size=60))
@fuzz_settings(2000)
def test_random_graphs_match_torch(leaves, program):
    graph = Graph(leaves)
    for instr, width in program:
        run_instruction(graph, instr, width)
    graph.check()


@given(leaves=st.lists(leaf_values, min_size=1, max_size=3),
       block=st.lists(instruction, min_size=1, max_size=4),
       repeats=st.integers(20, 400))
@fuzz_settings(40)
def test_deep_graphs_match_torch(leaves, block, repeats):
    graph = Graph(leaves)
    for _ in range(repeats):
        for instr in block:
            run_instruction(graph, instr, width=3, recent=1)  # always the newest: a chain
    graph.check()


@given(leaves=st.lists(leaf_values, min_size=1, max_size=20),
       program=st.lists(st.tuples(instruction, st.integers(20, 300)), min_size=1, max_size=8))
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
        for op in BINARY:
            for c in CONSTANTS:
                for first in (False, True):
                    graph = Graph([x])
                    graph.add(op, [0], constant=c, constant_first=first)
                    graph.check()
