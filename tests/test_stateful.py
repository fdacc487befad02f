"""A stateful model of a whole program: hypothesis mixes everything a program can do with
Values, and after every step checks values, gradients, identity, attributes and the
number of live nodes.

Every Value the machine makes has a twin in tests/pure_value.py's PureValue, built by the
same op sequence, so the pure-Python engine is the reference for every value and every
gradient. Rules:

- leaves (plain, labelled, a Value subclass, a hand-made node with no children);
- binary ops between held Values and numbers, in both operand orders (+ - * / and
  Value ** number, Value ** Value, number ** Value), unary ops (neg relu tanh exp log
  sigmoid);
- pyautograd.sum / pyautograd.dot over lists and over generators of temporaries;
- hand-made nodes: micrograd-style `Value(data, children, op)` with a Python `_backward`
  closure that refers to its own `out` (a reference cycle), a hand-made node with no
  rule (passes no gradient), and microgpt-style local-grad nodes;
- attributes (one sometimes referring to the Value itself, another cycle) and labels;
- `del` of held Values, gc.collect() now and then, and now and then dropping everything
  (live nodes must come back to the baseline);
- nn.Neuron / Layer / MLP made, applied to held Values and numbers, their parameters
  held, models dropped;
- optim.SGD / Adam made over some leaves and parameters, after which the user's list is
  cleared (sometimes the optimizer's own `params` list too: its NodeList must still own
  the nodes), steps checked against the update written out in Python, zero_grad;
- backward() on a held root: grads are zeroed on both sides first, or left as they are
  to check that pyautograd adds d(root)/d(node) once per call like torch;
- forward() replay after changing leaf data (compared with the pure graph recomputed
  from the new leaves), and forward() refused with RuntimeError on a graph holding a
  hand-made node, nothing changed;
- pickle / copy / deepcopy round trips (a leaf with the same data, grad, label and
  attributes); viz.summary and viz.to_dot on held roots (against a walk of `_inputs`).

Checked after every step:
- every held Value, model parameter and optimizer parameter has its twin's data (1e-12
  relative) and grad (1e-12 relative, plus 1e-12 times the sum over paths of |products of
  local derivatives|, the scale of rounding in a gradient's sum: the two engines add a
  node's contributions in different orders, so where they cancel, relative error alone
  would be meaningless);
- walking `_inputs` from everything the machine holds meets each node as one Python object
  (a held Value comes back as itself, `_prev` holds the same objects as `_inputs`), and
  attributes come back on the objects met;
- stats()["live_nodes"] - baseline equals the number of distinct nodes that walk reaches
  (after gc.collect() where the machine made Python reference cycles).

Values stay within +-1e6 (an op whose result would not is skipped), so no graph comes near
overflow and every op stays in its domain.

By default a fixed, derandomized set of 300 programs of 50 steps (~30 s);
PYAUTOGRAD_FUZZ_EXAMPLES=N runs N * 300 / 2000 programs with a fresh seed each run, in
proportion with test_fuzz_torch.py (N=20000: 3,000 programs, about 8 minutes).
"""

import copy
import gc
import math
import os
import pickle
import random
import weakref
from fractions import Fraction

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyautograd
from pyautograd import arena, nn, optim, viz
from pyautograd.engine import Value

from pure_value import PureValue

_EXTRA = int(os.environ.get("PYAUTOGRAD_FUZZ_EXAMPLES", "0"))
DEFAULT_EXAMPLES = 300
STEPS = 50

REL = 1e-12
PATH_TOL = 1e-12  # grads: times the sum over paths of |products of local derivatives|
LIMIT = 1e6  # results past this are not made (keeps every graph far from overflow)
MAX_HELD = 60


class Tagged(Value):
    """A Value subclass: Python state in itself (pinned while other nodes use it)."""


def live():
    return arena.stats()["live_nodes"]


# ---- numbers the way C computes them (IEEE, no exceptions), for the pure replay ----


class _Domain(Exception):
    """The pure replay met a value the rule does not want (domain error, overflow)."""


def _safe(x):
    if not isinstance(x, float) or not math.isfinite(x) or abs(x) > LIMIT:
        raise _Domain
    return x


def _pure_forward(op, c):
    """A pure node's value from its children's data, by the op its twin records."""
    a = c[0].data
    b = c[1].data if len(c) > 1 else None
    try:
        if op == "+":
            return _safe(a + b)
        if op == "-":
            return _safe(a - b)
        if op == "*":
            return _safe(a * b)
        if op == "/":
            if abs(b) < 1e-2:
                raise _Domain
            return _safe(a / b)
        if op.startswith("**"):
            e = float(op[2:])
            if (not e.is_integer() and a <= 1e-2) or (e < 0 and abs(a) < 1e-2):
                raise _Domain
            return _safe(a**e)
        if op == "pow":
            if a <= 1e-2:
                raise _Domain
            return _safe(a**b)
        if op == "neg":
            return -a
        if op == "sum1":
            return a
        if op == "ReLU":
            return 0.0 if a < 0 else a
        if op == "tanh":
            return math.tanh(a)
        if op == "exp":
            return _safe(math.exp(a))
        if op == "log":
            if a < 1e-2:
                raise _Domain
            return math.log(a)
        if op == "sigmoid":
            return 1.0 / (1.0 + math.exp(-a))
    except (OverflowError, ValueError, ZeroDivisionError):
        raise _Domain from None
    raise AssertionError(f"pure replay of a graph holding {op!r}")


def pure_replay(root):
    """Recomputes every pure node under root from its leaves (what forward() does)."""
    for node in root._topo():
        if node._children:
            node.data = _pure_forward(node._op, node._children)


# ---- pure twins of the ops PureValue does not have ----


def pure_sigmoid(pa, data):
    out = PureValue(data, (pa,), "sigmoid")

    def _backward():
        pa.grad += out.data * (1.0 - out.data) * out.grad

    out._backward = _backward
    return out


def pure_pow(pa, pb):
    """a ** b with a Value exponent: d/da = b a^(b-1) (0 at b == 0), d/db = out log a
    (0 at a == 0, b >= 0), pyautograd's (and torch's) rules; a > 0 here."""
    out = PureValue(pa.data**pb.data, (pa, pb), "pow")

    def _backward():
        a, b = pa.data, pb.data
        pa.grad += (0.0 if b == 0 else b * a ** (b - 1)) * out.grad
        pb.grad += (0.0 if a == 0 and b >= 0 else out.data * math.log(a)) * out.grad

    out._backward = _backward
    return out


def pure_sum(items, start=0):
    """pyautograd.sum's twin: Python's sum, start first (no node for a number start 0)."""
    items = [x if isinstance(x, PureValue) else PureValue(x) for x in items]
    if isinstance(start, PureValue):
        total = start
    elif start != 0:
        total = PureValue(start)
    else:
        total, items = items[0], items[1:]
        if not items:  # a sum of one Value is a node of its own
            return pure_identity(total)
    for x in items:
        total = total + x
    return total


def pure_identity(pa):
    out = PureValue(pa.data, (pa,), "sum1")

    def _backward():
        pa.grad += out.grad

    out._backward = _backward
    return out


def pure_dot(ws, xs, start=0):
    lift = lambda x: x if isinstance(x, PureValue) else PureValue(x)  # noqa: E731
    return pure_sum([lift(w) * lift(x) for w, x in zip(ws, xs)], start)


# ---- the reference's gradient scale ----


def edge_locals(node):
    """|local derivative| along each edge of a binary node, from its op: for a node that
    uses one input twice (a / a), whose local derivatives probing can only see summed
    (1/a - 1/a = 0, while each edge carries rounding of its own)."""
    a, b = (c.data for c in node._children)
    op = node._op
    try:
        if op in ("+", "-"):
            return [1.0, 1.0]
        if op == "*":  # the op and the micrograd-style hand-made node
            return [abs(b), abs(a)]
        if op == "/":
            return [abs(1.0 / b), abs(node.data / b)]
        if op == "pow":
            return [abs(b * a ** (b - 1)) if b else 0.0, abs(node.data * math.log(a)) if a else 0.0]
        if op == "stop":
            return [0.0, 0.0]
        return [abs(x) for x in node.local_grads]  # microgpt-style nodes keep them here
    except (ArithmeticError, ValueError):
        return [math.inf, math.inf]


def path_bounds(root):
    """For each pure node under root, the sum over paths to root of |product of local
    derivatives| (root: 1): a node's local derivatives by probing its own _backward, or
    from its op when it uses an input twice. Leaves grads at 0."""
    order = root._topo()
    bound = {id(root): 1.0}
    for node in reversed(order):
        b = bound.get(id(node), 0.0)
        children = node._children
        if not children or b == 0.0:
            continue
        if len({id(c) for c in children}) < len(children):
            for child, local in zip(children, edge_locals(node)):
                bound[id(child)] = bound.get(id(child), 0.0) + local * b
            continue
        for child in children:
            child.grad = 0.0
        node.grad = 1.0
        node._backward()
        for child in children:
            bound[id(child)] = bound.get(id(child), 0.0) + abs(child.grad) * b
    for node in order:
        node.grad = 0.0
    return order, bound


# ---- comparisons ----


def same_value(q, r):
    if math.isnan(r):
        return math.isnan(q)
    if q == r:
        return True
    return abs(q - r) <= REL * abs(r) + 1e-300


def same_grad(q, r, tol):
    if math.isnan(r) or math.isnan(q) or not math.isfinite(tol):
        return math.isnan(r) == math.isnan(q) or not math.isfinite(tol)
    if q == r:
        return True
    return abs(q - r) <= REL * abs(r) + tol


def walk(roots):
    """Every node reachable from roots through _inputs, keyed by node id, checking
    identity on the way: a node met twice is met as the same object, a held root comes
    back as itself, and _prev holds the objects _inputs gives."""
    seen = {}
    stack = []

    def meet(v):
        i = v._id
        if i in seen:
            assert seen[i] is v, f"node {i} has two Python objects"
        else:
            seen[i] = v
            stack.append(v)

    for r in roots:
        meet(r)
    while stack:
        v = stack.pop()
        inputs = v._inputs
        assert {id(x) for x in v._prev} == {id(x) for x in inputs}, "_prev is not _inputs"
        for u in inputs:
            meet(u)
    return seen


def depth_of(root):
    """Longest path from root to a source, in edges (viz.summary's depth)."""
    depth = {}
    stack = [(root, False)]
    while stack:
        v, expanded = stack.pop()
        i = v._id
        if i in depth:
            continue
        inputs = v._inputs
        if expanded or not inputs:
            depth[i] = 1 + max(depth[u._id] for u in inputs) if inputs else 0
            continue
        stack.append((v, True))
        stack.extend((u, False) for u in inputs if u._id not in depth)
    return depth[root._id]


_garbage_possible = [True]


class Held:
    """A Value the program holds and its PureValue twin. replayable: nothing hand-made
    with children under it (forward() can recompute it)."""

    __slots__ = ("v", "p", "replayable")

    def __init__(self, v, p, replayable):
        self.v, self.p, self.replayable = v, p, replayable


SELF = object()  # an expected attribute: the Value itself
ATTRIBUTES = [("tag", 7), ("tag", "seven"), ("note", (1, 2.5)), ("m", 0.25), ("v", -3), ("_vis_color", "red")]
NUMBERS = st.one_of(
    st.sampled_from([2, -1, 0.5, 3.0, 1e-3, -2.5, 0, 7, True, Fraction(1, 3)]), st.floats(-4, 4, allow_nan=False)
)
LEAF_DATA = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -0.0]), st.floats(-3, 3, allow_nan=False, allow_subnormal=False)
)
INDEX = st.integers(0, 10**6)


class ProgramMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        if _garbage_possible[0]:  # the last program may have left cycles for the GC
            gc.collect()
            _garbage_possible[0] = False
        self.baseline = live()
        self.held = []  # Held
        self.models = []  # (module, [(param Value, twin)], structure of twins, kind)
        self.optimizers = []  # dicts: opt, twins, kind, mirror state
        self.attrs = []  # (weakref to a Value, {name: expected})
        self.cycles = False  # Python reference cycles holding Values were made

    @initialize(xs=st.lists(LEAF_DATA, min_size=1, max_size=4))
    def some_leaves(self, xs):
        for x in xs:
            self.hold(Value(x), PureValue(x), True)

    # ---- picking ----

    def pick(self, i, among=None):
        among = self.held if among is None else among
        return among[i % len(among)]

    def pick_root(self, i, recent):
        """A held Value, often one of the last made (the deepest graphs)."""
        if recent:
            return self.held[-1 - i % min(4, len(self.held))]
        return self.pick(i)

    def hold(self, v, p, replayable):
        assert isinstance(v, Value)
        self.held.append(Held(v, p, replayable))
        return v

    def room(self):
        return len(self.held) < MAX_HELD

    def operand(self, i, number, use_number):
        """A held Value (and its twin) or a number."""
        if use_number or not self.held:
            return number, number, True
        h = self.pick(i)
        return h.v, h.p, h.replayable

    # ---- leaves ----

    @rule(x=LEAF_DATA, kind=st.sampled_from(["plain", "label", "subclass", "childless", "kw"]))
    def leaf(self, x, kind):
        if not self.room():
            return
        if kind == "plain":
            v, p = Value(x), PureValue(x)
        elif kind == "label":
            v, p = Value(x, label=f"leaf {x:.3g}"), PureValue(x, label=f"leaf {x:.3g}")
        elif kind == "subclass":
            v, p = Tagged(x), PureValue(x)
            assert type(v) is Tagged and v.data == float(x)
        elif kind == "childless":  # a hand-made node with no children is a source
            v, p = Value(x, (), "input"), PureValue(x, (), "input")
            assert v._op == "input"
        else:
            v, p = Value(data=x, _children=(), _op="", label="kw"), PureValue(x, label="kw")
        self.hold(v, p, True)

    # ---- ops ----

    @rule(
        i=INDEX,
        j=INDEX,
        number=NUMBERS,
        use_number=st.booleans(),
        swap=st.booleans(),
        op=st.sampled_from(["+", "-", "*", "/", "**"]),
    )
    def binary(self, i, j, number, use_number, swap, op):
        if not self.held or not self.room():
            return
        a = self.pick(i)
        bv, bp, b_rep = self.operand(j, number, use_number)
        av, ap = a.v, a.p
        if swap:
            av, ap, bv, bp = bv, bp, av, ap
        a_data = av.data if isinstance(av, Value) else float(av)
        b_data = bv.data if isinstance(bv, Value) else float(bv)
        if op == "/" and abs(b_data) < 1e-2:
            return
        if op == "**":
            if isinstance(bv, Value):  # a Value exponent: Value ** Value or number ** Value
                if a_data <= 1e-2 or abs(b_data) > 3:
                    return
            else:  # Value ** number: a number PureValue takes (an int or a float)
                bv = bp = random.Random(b_data).choice([2, 3, -1, 0.5, 1.5, 0, 2.0])
                b_data = float(bv)
                if (not b_data.is_integer() and a_data <= 1e-2) or (b_data <= 0 and abs(a_data) < 1e-2):
                    return
        try:
            expected = _safe(
                {
                    "+": lambda: a_data + b_data,
                    "-": lambda: a_data - b_data,
                    "*": lambda: a_data * b_data,
                    "/": lambda: a_data / b_data,
                    "**": lambda: a_data**b_data,
                }[op]()
            )
        except (_Domain, OverflowError, ZeroDivisionError):
            return
        python_op = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y,
            "**": lambda x, y: x**y,
        }[op]
        out = python_op(av, bv)
        if op == "**" and isinstance(bv, Value):
            base = ap if isinstance(ap, PureValue) else PureValue(ap)
            pout = pure_pow(base, bp)
        elif isinstance(ap, PureValue):
            pout = python_op(ap, bp)
        else:
            pout = python_op(PureValue(ap), bp)
        assert type(out) is Value
        assert same_value(out.data, expected) and same_value(pout.data, expected)
        self.hold(out, pout, a.replayable and b_rep)

    @rule(i=INDEX, op=st.sampled_from(["neg", "relu", "tanh", "exp", "log", "sigmoid"]))
    def unary(self, i, op):
        if not self.held or not self.room():
            return
        a = self.pick(i)
        x = a.v.data
        if (op == "exp" and x > 12) or (op == "log" and x < 1e-2) or (op == "sigmoid" and x < -700):
            return
        if op == "neg":
            out, pout = -a.v, -a.p
        elif op == "sigmoid":
            out = a.v.sigmoid()
            assert same_value(out.data, 1.0 / (1.0 + math.exp(-x)))
            pout = pure_sigmoid(a.p, out.data)
        else:
            out, pout = getattr(a.v, op)(), getattr(a.p, op)()
        self.hold(out, pout, a.replayable)

    # ---- fused ops: lists and generators of temporaries ----

    @rule(
        picks=st.lists(st.tuples(INDEX, NUMBERS, st.booleans()), min_size=0, max_size=6),
        start=st.sampled_from(["zero", "number", "value"]),
        start_i=INDEX,
        form=st.sampled_from(["list", "tuple", "generator", "scaled generator"]),
        scale=NUMBERS,
    )
    def fused_sum(self, picks, start, start_i, form, scale):
        if not self.room() or not self.held:
            return
        items = [self.operand(i, n, use) for i, n, use in picks]
        if start == "value":
            s = self.pick(start_i)
            sv, sp, s_rep = s.v, s.p, s.replayable
        else:
            sv = sp = 0 if start == "zero" else 1.5
            s_rep = True
        if not items and start == "zero":
            items = [self.operand(start_i, 0.5, False)]
        rep = s_rep and all(r for _, _, r in items)
        values = [v for v, _, _ in items]
        twins = [p for _, p, _ in items]
        if form == "scaled generator":
            if not all(isinstance(v, Value) for v in values):
                values = [v for v in values if isinstance(v, Value)]
                twins = [p for p in twins if isinstance(p, PureValue)]
            if not values:
                return
            out = pyautograd.sum((v * scale for v in values), sv)  # temporaries only
            pout = pure_sum([p * scale for p in twins], sp)
        else:
            arg = {"list": list, "tuple": tuple, "generator": iter}[form](values)
            out = pyautograd.sum(arg, sv)
            pout = pure_sum(twins, sp) if twins else (sp if isinstance(sp, PureValue) else PureValue(sp))
        if not values and start == "value":
            assert out is sv  # Python's sum([], start) is start
        if abs(out.data) > LIMIT:
            return
        self.hold(out, pout, rep)

    @rule(
        picks=st.lists(st.tuples(INDEX, NUMBERS, st.booleans(), INDEX), min_size=1, max_size=5),
        start=st.sampled_from(["zero", "number", "value"]),
        start_i=INDEX,
        form=st.sampled_from(["lists", "generator of tanh", "generators"]),
    )
    def fused_dot(self, picks, start, start_i, form):
        if not self.room() or not self.held:
            return
        ws = [self.operand(i, n, use) for i, n, use, _ in picks]
        xs = [self.operand(k, 1.0, False) for _, _, _, k in picks]
        if start == "value":
            s = self.pick(start_i)
            sv, sp, s_rep = s.v, s.p, s.replayable
        else:
            sv = sp = 0 if start == "zero" else -0.75
            s_rep = True
        rep = s_rep and all(r for _, _, r in ws + xs)
        if form == "generator of tanh":  # the xs are temporaries made while the dot gathers
            out = pyautograd.dot([w for w, _, _ in ws], (x.tanh() for x, _, _ in xs), sv)
            pout = pure_dot([p for _, p, _ in ws], [p.tanh() for _, p, _ in xs], sp)
        elif form == "generators":
            out = pyautograd.dot((w for w, _, _ in ws), (x for x, _, _ in xs), sv)
            pout = pure_dot([p for _, p, _ in ws], [p for _, p, _ in xs], sp)
        else:
            out = pyautograd.dot([w for w, _, _ in ws], [x for x, _, _ in xs], sv)
            pout = pure_dot([p for _, p, _ in ws], [p for _, p, _ in xs], sp)
        if abs(out.data) > LIMIT:
            return
        self.hold(out, pout, rep)

    # ---- hand-made nodes ----

    @rule(
        i=INDEX,
        j=INDEX,
        kind=st.sampled_from(["mul closure", "sin closure", "no rule", "local grads", "local grads kw"]),
    )
    def hand_made(self, i, j, kind):
        if not self.held or not self.room():
            return
        a, b = self.pick(i), self.pick(j)
        av, bv, ap, bp = a.v, b.v, a.p, b.p
        if kind == "mul closure":  # micrograd's way: the closure refers to its own out
            if abs(av.data * bv.data) > LIMIT:
                return
            out = Value(av.data * bv.data, (av, bv), "*")

            def _backward():
                av.grad += bv.data * out.grad
                bv.grad += av.data * out.grad

            out._backward = _backward
            pout = PureValue(ap.data * bp.data, (ap, bp), "*")

            def _pure_backward():
                ap.grad += bp.data * pout.grad
                bp.grad += ap.data * pout.grad

            pout._backward = _pure_backward
            self.cycles = True
        elif kind == "sin closure":
            out = Value(math.sin(av.data), (av,), "sin")

            def _backward():
                av.grad += math.cos(av.data) * out.grad

            out._backward = _backward
            pout = PureValue(math.sin(ap.data), (ap,), "sin")

            def _pure_backward():
                ap.grad += math.cos(ap.data) * pout.grad

            pout._backward = _pure_backward
            self.cycles = True
        elif kind == "no rule":  # keeps its inputs alive, passes no gradient
            out = Value(av.data + 1.0, (av, bv), "stop")
            pout = PureValue(ap.data + 1.0, (ap, bp), "stop")
        else:  # microgpt: Value(data, children, local_grads)
            data = math.sin(av.data) * bv.data
            grads = (math.cos(av.data) * bv.data, math.sin(av.data))
            if kind == "local grads":
                out = Value(data, (av, bv), grads)
            else:
                out = Value(data, (av, bv), local_grads=list(grads))
            pout = PureValue(data, (ap, bp), grads)
            pout.local_grads = grads
        children = (av, bv)[: len(pout._children)]
        assert {id(x) for x in out._prev} == {id(x) for x in children}
        assert len(out._inputs) == len(children)
        assert all(x is y for x, y in zip(out._inputs, children))
        self.hold(out, pout, False)

    # ---- attributes and labels ----

    @rule(i=INDEX, which=st.integers(0, len(ATTRIBUTES)), label=st.booleans())
    def set_attribute(self, i, which, label):
        if not self.held:
            return
        h = self.pick(i)
        v = h.v
        if label:
            text = f"node {len(self.held)} ω"
            v.label = text
            h.p.label = text
            return
        record = next((r for r in self.attrs if r[0]() is v), None)
        if record is None:
            record = (weakref.ref(v), {})
            self.attrs.append(record)
        if which == len(ATTRIBUTES):  # a cycle through the Value's own dict
            v.me = v
            record[1]["me"] = SELF
            self.cycles = True
        else:
            name, value = ATTRIBUTES[which]
            setattr(v, name, value)
            record[1][name] = value

    # ---- dropping ----

    @rule(i=INDEX, collect=st.sampled_from([None, None, None, 0, 1, None, None, None, 2]))
    def delete(self, i, collect):
        if not self.held:
            return
        del self.held[i % len(self.held)]
        if collect is not None:
            gc.collect(collect)  # a full collection costs ~50 ms in a pytest process

    @rule(i=INDEX, n=st.integers(1, 8))
    def delete_many(self, i, n):
        for k in range(min(n, len(self.held))):
            del self.held[(i + k) % len(self.held)]

    # ---- nn ----

    @rule(
        kind=st.sampled_from(["neuron", "layer", "mlp"]),
        seed=st.integers(0, 1000),
        nin=st.integers(1, 3),
        nout=st.integers(1, 3),
        hidden=st.integers(2, 3),
        nonlin=st.booleans(),
    )
    def make_model(self, kind, seed, nin, nout, hidden, nonlin):
        if len(self.models) >= 3:
            return
        random.seed(seed)
        if kind == "neuron":
            module = nn.Neuron(nin, nonlin=nonlin)
            layers = [[module]]
        elif kind == "layer":
            module = nn.Layer(nin, nout, nonlin=nonlin)
            layers = [module.neurons]
        else:
            module = nn.MLP(nin, [hidden, nout])
            layers = [layer.neurons for layer in module.layers]
        twins = [
            [([PureValue(w.data) for w in n.w], PureValue(n.b.data), n.nonlin) for n in neurons] for neurons in layers
        ]
        pairs = []
        for neurons, layer_twins in zip(layers, twins):
            for n, (pw, pb, _) in zip(neurons, layer_twins):
                pairs += list(zip(n.w, pw)) + [(n.b, pb)]
        assert [p for p, _ in pairs] == module.parameters()
        self.models.append((module, pairs, twins, kind))

    @precondition(lambda self: self.models)
    @rule(
        m=INDEX,
        picks=st.lists(st.tuples(INDEX, NUMBERS, st.booleans()), min_size=4, max_size=4),
        extra=st.booleans(),
        as_tuple=st.booleans(),
    )
    def apply_model(self, m, picks, extra, as_tuple):
        if not self.room():
            return
        module, _, twins, kind = self.pick(m, self.models)
        nin = len(twins[0][0][0])
        small = [h for h in self.held if abs(h.v.data) <= 1e3]
        xs = []
        for i, n, use in picks[: nin + (kind == "neuron" and extra)]:
            if use or not small:
                xs.append((n, n, True))
            else:
                h = self.pick(i, small)
                xs.append((h.v, h.p, h.replayable))
        arg = [v for v, _, _ in xs]
        out = module(tuple(arg) if as_tuple else arg)
        ps = [p for _, p, _ in xs]
        for layer in twins:
            ps = [pure_dot(pw, ps, pb) for pw, pb, _ in layer]
            ps = [p.relu() if nonlin else p for p, (_, _, nonlin) in zip(ps, layer)]
        outs = out if isinstance(out, list) else [out]
        assert len(outs) == len(ps)
        rep = all(r for _, _, r in xs[:nin])  # a Neuron ignores an extra input, as zip does
        for v, p in zip(outs, ps):
            self.hold(v, p, rep)

    @precondition(lambda self: self.models)
    @rule(m=INDEX, k=INDEX)
    def hold_parameter(self, m, k):
        if not self.room():
            return
        _, pairs, _, _ = self.pick(m, self.models)
        v, p = self.pick(k, pairs)
        self.hold(v, p, True)

    @precondition(lambda self: self.models)
    @rule(m=INDEX, zero=st.booleans())
    def model_zero_grad_or_drop(self, m, zero):
        i = m % len(self.models)
        if zero:
            module, pairs, _, _ = self.models[i]
            module.zero_grad()
            for _, p in pairs:
                p.grad, p.gtol = 0.0, 0.0
        else:
            del self.models[i]

    # ---- optimizers ----

    @rule(
        picks=st.lists(INDEX, min_size=1, max_size=6),
        from_models=st.booleans(),
        kind=st.sampled_from(["sgd", "sgd momentum", "adam", "adamw"]),
        lr=st.sampled_from([0.01, 0.1, 0.5]),
        clear_own=st.booleans(),
        forget=st.booleans(),
    )
    def make_optimizer(self, picks, from_models, kind, lr, clear_own, forget):
        if len(self.optimizers) >= 2:
            return
        candidates = [(h.v, h.p) for h in self.held if not h.v._inputs]
        if from_models:
            candidates += [pair for _, pairs, _, _ in self.models for pair in pairs]
        chosen = {}
        for i in picks:
            if candidates:
                v, p = self.pick(i, candidates)
                chosen.setdefault(v._id, (v, p))
        if not chosen:
            return
        params = [v for v, _ in chosen.values()]
        twins = [p for _, p in chosen.values()]
        if kind.startswith("sgd"):
            momentum = 0.9 if kind == "sgd momentum" else 0
            weight_decay = 0.01 if momentum else 0
            opt = optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
            mirror = {"buf": [0.0] * len(params)}
        else:
            opt = optim.Adam(params, lr=lr, weight_decay=0.01 if kind == "adamw" else 0, decoupled=kind == "adamw")
            mirror = {"m": [0.0] * len(params), "v": [0.0] * len(params)}
        params.clear()  # the user's list: the optimizer owns its parameters
        if clear_own:
            opt.params.clear()  # even its own list: the NodeList still owns the nodes
        del chosen
        if forget:  # the program lets go of the parameters it held
            ids = {p._id for p in opt._nodes.values()}
            self.held = [h for h in self.held if h.v._id not in ids]
        self.optimizers.append({"opt": opt, "twins": twins, "kind": kind, "steps": 0, **mirror})

    @precondition(lambda self: self.optimizers)
    @rule(o=INDEX, action=st.sampled_from(["step", "step", "zero_grad", "drop"]))
    def use_optimizer(self, o, action):
        i = o % len(self.optimizers)
        rec = self.optimizers[i]
        opt = rec["opt"]
        if action == "drop":
            del self.optimizers[i]
            return
        params = opt._nodes.values()
        if action == "zero_grad":
            opt.zero_grad()
            for v, p in zip(params, rec["twins"]):
                assert v.grad == 0.0
                p.grad, p.gtol = 0.0, 0.0
            return
        steps = [self._mirror_step(rec, k, v.data, v.grad) for k, v in enumerate(params)]
        if not all(math.isfinite(x) and abs(x) <= LIMIT for x, _ in steps):
            return
        opt.step()
        rec["steps"] += 1
        event(f"optimizer step: {rec['kind']}{', own list cleared' if not opt.params else ''}")
        for k, (v, p, (x, state)) in enumerate(zip(params, rec["twins"], steps)):
            assert same_value(v.data, x), (rec["kind"], v.data, x)
            p.data = v.data  # the update is checked; the twins follow it exactly
            for name, value in state.items():
                rec[name][k] = value

    @staticmethod
    def _mirror_step(rec, k, data, grad):
        """The update csrc/optim.c makes (torch's, term by term) for parameter k: its new
        data and state buffers."""
        opt = rec["opt"]
        lr = opt.lr
        if rec["kind"].startswith("sgd"):
            d = grad
            state = {}
            if opt.weight_decay:
                d = d + opt.weight_decay * data
            if opt.momentum:
                d = d if rec["steps"] == 0 else rec["buf"][k] * opt.momentum + d
                state["buf"] = d
            return data + (-lr) * d, state
        beta1, beta2 = opt.betas
        step = rec["steps"] + 1
        step_size = lr / (1.0 - beta1**step)
        bc2 = math.sqrt(1.0 - beta2**step)
        g = grad
        if opt.weight_decay:
            if opt.decoupled:
                data = data * (1.0 - lr * opt.weight_decay)
            else:
                g = g + opt.weight_decay * data
        m, weight = rec["m"][k], 1.0 - beta1
        m = m + weight * (g - m) if abs(weight) < 0.5 else g - (g - m) * (1.0 - weight)
        v = rec["v"][k] * beta2 + (1.0 - beta2) * g * g
        denom = math.sqrt(v) / bc2 + opt.eps
        return data + (-step_size) * m / denom, {"m": m, "v": v}

    # ---- backward ----

    @precondition(lambda self: self.held)
    @rule(i=INDEX, recent=st.booleans(), zero=st.booleans())
    def backward(self, i, recent, zero):
        root = self.pick_root(i, recent)
        order, bound = path_bounds(root.p)
        old = {}
        if not zero:  # pyautograd adds once per call: expect the old grads plus the new
            old = {id(n): (n.grad_before, getattr(n, "gtol_before", 0.0)) for n in order if hasattr(n, "grad_before")}
        if zero:
            for node in walk([root.v]).values():
                node.grad = 0.0
        root.v.backward()
        root.p.backward()
        for node in order:
            tol = PATH_TOL * bound.get(id(node), 0.0)
            if id(node) in old:
                before, before_tol = old[id(node)]
                node.grad += before
                tol += before_tol + REL * abs(before)
            node.gtol = tol
        event(
            f"backward: {'zeroed first' if zero else 'adding to old grads'}, "
            f"{'with' if not root.replayable else 'no'} hand-made nodes"
        )

    # ---- replay ----

    @precondition(lambda self: self.held)
    @rule(i=INDEX, recent=st.booleans(), factors=st.lists(st.floats(0.5, 1.5), min_size=1, max_size=4))
    def forward(self, i, recent, factors):
        root = self.pick_root(i, recent)
        under = walk([root.v])
        twins = {v._id: p for v, p in self.everything()}
        # in the machine's order (node ids depend on what the arena freed before)
        leaves = [k for k in twins if k in under and not under[k]._inputs]
        changes = [(leaves[k % len(leaves)], f) for k, f in enumerate(factors)] if leaves else []
        if not root.replayable:
            for node_id, f in changes:  # refused before anything is recomputed
                under[node_id].data = twins[node_id].data = under[node_id].data * f
            try:
                root.v.forward()
            except RuntimeError as error:
                assert "cannot replay" in str(error)
            else:
                raise AssertionError("forward() replayed a graph holding a hand-made node")
            event("forward: refused (hand-made node)")
            return
        order = root.p._topo()
        saved = [(n, n.data) for n in order]
        for node_id, f in changes:
            twins[node_id].data = twins[node_id].data * f
        try:
            pure_replay(root.p)
        except _Domain:
            for n, data in saved:
                n.data = data
            event("forward: skipped (new leaves leave the domain)")
            return
        for node_id, _ in changes:
            under[node_id].data = twins[node_id].data
        result = root.v.forward()
        assert result == root.v.data
        assert same_value(result, root.p.data)
        event(f"forward: replayed ({'leaves changed' if changes else 'no leaf changed'})")

    # ---- pickle and copy ----

    @precondition(lambda self: self.held)
    @rule(i=INDEX, how=st.sampled_from(["copy", "deepcopy", "pickle 0", "pickle 2", "pickle 5"]))
    def round_trip(self, i, how):
        if not self.room():
            return
        h = self.pick(i)
        v = h.v
        if how == "copy":
            w = copy.copy(v)
        elif how == "deepcopy":
            w = copy.deepcopy(v)
        else:
            w = pickle.loads(pickle.dumps(v, protocol=int(how[-1])))
        assert w is not v and w._id != v._id
        assert type(w) is type(v)
        assert w._inputs == () and w._op == ""
        assert same_value(w.data, v.data) and (w.grad == v.grad or math.isnan(v.grad))
        assert w.label == v.label
        assert type(w._backward).__name__ == "builtin_function_or_method"  # no Python rule
        record = next((r for r in self.attrs if r[0]() is v), None)
        if record is not None:
            expected = dict(record[1])
            if "me" in expected:
                if how == "copy":  # a shallow copy shares the attribute: the original
                    assert w.me is v
                    del w.me
                    del expected["me"]
                else:
                    assert w.me is w
                    self.cycles = True
            for name, value in expected.items():
                assert getattr(w, name) is w if value is SELF else getattr(w, name) == value
            if expected:
                self.attrs.append((weakref.ref(w), expected))
        p = PureValue(h.p.data, label=h.p.label)
        p.grad, p.gtol = h.p.grad, getattr(h.p, "gtol", 0.0)
        self.hold(w, p, True)

    # ---- viz ----

    @precondition(lambda self: self.held)
    @rule(i=INDEX, recent=st.booleans())
    def visualise(self, i, recent):
        v = self.pick_root(i, recent).v
        nodes = len(walk([v]))
        s = viz.summary(v)
        assert s.nodes == nodes == arena.graph_size(v)
        assert s.depth == depth_of(v)
        assert sum(s.ops.values()) == nodes
        dot = viz.to_dot(v)
        assert dot.startswith("digraph {") and dot.count("shape=record") == min(nodes, 500)
        assert f"v{v._id} [" in dot

    # ---- checks after every step ----

    def everything(self):
        """(Value, twin) for everything the machine holds."""
        pairs = [(h.v, h.p) for h in self.held]
        for _, model_pairs, _, _ in self.models:
            pairs += model_pairs
        for rec in self.optimizers:
            pairs += list(zip(rec["opt"]._nodes.values(), rec["twins"]))
        return pairs

    @invariant()
    def values_and_grads_match_the_pure_engine(self):
        for v, p in self.everything():
            assert same_value(v.data, p.data), (v, p, v._op)
            assert same_grad(v.grad, p.grad, getattr(p, "gtol", 0.0)), (v.grad, p.grad, getattr(p, "gtol", 0.0), v._op)
            assert v.label == p.label or not p.label, (v.label, p.label)
        for h in self.held:  # what backward(zero=False) adds to
            h.p.grad_before, h.p.gtol_before = h.p.grad, getattr(h.p, "gtol", 0.0)
        for _, pairs, _, _ in self.models:
            for _, p in pairs:
                p.grad_before, p.gtol_before = p.grad, getattr(p, "gtol", 0.0)
        for rec in self.optimizers:
            for p in rec["twins"]:
                p.grad_before, p.gtol_before = p.grad, getattr(p, "gtol", 0.0)

    @invariant()
    def live_nodes_are_what_the_program_holds(self):
        pairs = self.everything()
        seen = walk([v for v, _ in pairs])
        extra = live() - self.baseline - len(seen)
        if self.cycles:
            _garbage_possible[0] = True
        if extra and self.cycles:
            gc.collect()  # garbage cycles through closures and attributes
            extra = live() - self.baseline - len(seen)
            event("live nodes: cyclic garbage collected")
        assert extra == 0, f"{extra} live nodes the program does not hold ({len(seen)} held)"
        # attributes come back on the one object each node has
        kept = []
        direct = {id(v) for v, _ in pairs}
        for ref, expected in self.attrs:
            v = ref()
            if v is None:
                continue  # the Value died: so did its node (it was pinned while used)
            assert v._id in seen, "a Value with attributes outlived everything holding it"
            assert seen[v._id] is v
            if id(v) not in direct:
                event("attributes: a Value held only by the graph comes back through _prev")
            for name, value in expected.items():
                assert (getattr(v, name) is v) if value is SELF else getattr(v, name) == value
            kept.append((ref, expected))
        self.attrs = kept

    @precondition(lambda self: len(self.held) >= 12)
    @rule(now=st.integers(0, 5))
    def drop_everything(self, now):
        """The invariant then checks that every node is gone."""
        if now != 3:  # rarely: the program is worth growing
            return
        self.held.clear()
        self.models.clear()
        self.optimizers.clear()
        if self.cycles:
            gc.collect()
        assert live() == self.baseline, f"{live() - self.baseline} nodes left after the program"

    def teardown(self):
        self.held.clear()
        self.models.clear()
        self.optimizers.clear()


def _settings():
    examples = max(1, _EXTRA * DEFAULT_EXAMPLES // 2000) if _EXTRA else DEFAULT_EXAMPLES
    return settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not _EXTRA,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


TestProgram = ProgramMachine.TestCase
TestProgram.settings = _settings()
