"""Hostile Python: tests/test_stateful.py's program machine, with Python code that runs
while C is in the middle of something, and that does random engine work when it runs.

Every place where the C core calls back into Python is a hook here:

- Python `_backward` rules run by backward() and grad() (set as `out._backward = f`, or
  straight into the instance dict, `vars(out)['_backward'] = f`);
- numbers with a `__float__` of their own (registered with numbers.Real), given to ops,
  to `Value(data, ...)`, as local grads and inside pyautograd.sum's items;
- `__str__` of a label or of a hand-made node's `_op`;
- weakref callbacks on dying Values, `__del__` of a dying Value's attributes, and a
  finalizer that resurrects a micrograd-style op;
- `gc.callbacks`, which run during GC passes that happen inside allocations (the
  machine also lowers the GC thresholds for a while, so passes happen everywhere).

When a hook fires it runs a few actions drawn from a script the hypothesis rule generated
(each action is an index and a seed). The actions never change what the machine checks
in ways it cannot follow: they build and check graphs of their own (scratch graphs, each
with a pure twin from tests/pure_value.py), re-initialise subclass Values (must be a no-op
after the first __init__), set attributes and labels, walk held graphs through `_inputs`
and `_prev` (identity), call grad() on held graphs (no .grad changes; checked against the
twins with their grads saved and put back), forward() and backward() on their own
graphs, gradcheck with a function that raises, gc.collect(), gc.get_objects() pokes, and
chains of Python-written ops that die at once. A sweep started while another sweep that
runs Python rules is running over an overlapping graph must raise RuntimeError (issue
17, item 2); over a disjoint graph it must give exactly the right numbers. Anything a
hook finds wrong is recorded (hooks run where exceptions are swallowed) and asserted by
an invariant after the step; the machine's own invariants (values, grads, identity,
live nodes) run after every step as in test_stateful.py, and at the end of each program
everything is dropped and live nodes must be back at the baseline after gc.collect().

test_threads_share_nodes_with_rules_that_release_the_gil is the threaded variant: two
threads back-propagate graphs that share leaves and interior nodes, through Python rules
that release the GIL (time.sleep(0), a wait on the other thread), beside private graphs;
each call gives exactly the right numbers or RuntimeError, never a mix.

By default 40 programs of 40 steps and 25 threaded examples (~12 s together, ~30 s on
the ASan+UBSan build);
PYAUTOGRAD_FUZZ_EXAMPLES=N scales both like test_stateful.py (N * 40 / 2000 programs
and N * 25 / 2000 threaded examples, a fresh seed each run).

Finding one bug behind another: PYAUTOGRAD_HOSTILE_OFF (below) leaves actions, rules
and checks out; PYAUTOGRAD_HOSTILE_TRACE=1 prints each action before it runs (run
pytest with --capture=sys to see what ran last before a crash). An action can be run
by hand: `act_scratch_grad(CTL, random.Random(seed))`.
"""

import gc
import math
import numbers
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import weakref

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import invariant, rule

import pyautograd
from pyautograd.engine import Value

import test_stateful as base
from pure_value import PureValue
from test_stateful import PATH_TOL, REL, ProgramMachine, Tagged, live, path_bounds, same_grad, same_value

_EXTRA = int(os.environ.get("PYAUTOGRAD_FUZZ_EXAMPLES", "0"))
# For finding one bug behind another: names of actions (ACTIONS) and of the machine's
# hostile rules to leave out, comma-separated; "negzero" leaves -0.0 out of grad()'s
# leftover grads, "leak" the final live-node check, "dictrule" rules set through vars(),
# "shrink" hypothesis's shrinking.
OFF = set(filter(None, os.environ.get("PYAUTOGRAD_HOSTILE_OFF", "").split(",")))
# PYAUTOGRAD_HOSTILE_TRACE=1: each action's name and seed to stderr before it runs (what
# ran last when the process crashed).
TRACE = bool(os.environ.get("PYAUTOGRAD_HOSTILE_TRACE"))
DEFAULT_PROGRAMS = 40
DEFAULT_THREADED = 25
STEPS = 40
MAX_DEPTH = 3  # hooks inside hooks inside hooks, no deeper
ACTIONS_PER_FIRE = 2
BUDGET_PER_STEP = 12  # actions a step's hooks may run in all


# ---- the hooks' controller ----


class Control:
    """What the hooks share: the script, a budget, what they found, what they keep."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.script = []
        self.pos = 0
        self.budget = 0
        self.depth = 0
        self.errors = []  # (where, text) of everything a hook found wrong
        self.kept = []  # Values hooks met: identity-checked by the next invariant
        self.resurrected = []  # Values a finalizer brought back
        self.weakrefs = []  # weak references with callbacks, kept so the callbacks run
        self.sweeps = []  # (node ids, runs Python rules, root) of sweeps test code runs
        self.running_rules = []  # node ids whose hostile Python rule is running
        self.held = lambda: []  # the machine's Held records
        self.gc_armed = False

    def load(self, script, budget=BUDGET_PER_STEP):
        self.script = list(script)
        self.pos = 0
        self.budget = budget if script else 0

    def fail(self, where, text):
        self.errors.append((where, text))

    def fire(self, where):
        """A hook: run the next actions of the script (never raises)."""
        if self.depth >= MAX_DEPTH or self.budget <= 0 or not self.script:
            return
        self.depth += 1
        note(f"hook ran: {where}")
        try:
            for _ in range(ACTIONS_PER_FIRE):
                if self.budget <= 0:
                    break
                self.budget -= 1
                index, seed = self.script[self.pos % len(self.script)]
                self.pos += 1
                name, action = ACTIONS[index % len(ACTIONS)]
                if name in OFF:
                    continue
                if TRACE:
                    print(f"hostile: {where} -> {name} {seed} (depth {self.depth})", file=sys.__stderr__, flush=True)
                note(f"action ran: {name}")
                try:
                    action(self, random.Random(seed))
                except BaseException:  # noqa: B902 - recorded, asserted after the step
                    self.fail(f"{where} -> {name}", traceback.format_exc())
        finally:
            self.depth -= 1

    def inside_rule_of(self, ids):
        """Whether a running sweep that meets ids is, right now, in one of its Python
        rules (the only place where test code runs in the middle of a sweep for sure)."""
        running = set(self.running_rules)
        return any(runs and nodes & ids and nodes & running for nodes, runs, _ in self.sweeps)


CTL = Control()


def note(text):
    """hypothesis's event(), and nothing outside a test (an action run by hand)."""
    try:
        event(text)
    except InvalidArgument:
        pass


def describe(errors):
    """The first failure's traceback, and one line for each of the others."""
    lines = [f"{len(errors)} hook failures; the first, in {errors[0][0]}:", errors[0][1]]
    for where, text in errors[1:]:
        lines.append(f"also, in {where}: {text.strip().splitlines()[-1]}")
    return "\n".join(lines)


def is_python_rule(v):
    return type(v._backward).__name__ != "builtin_function_or_method"


def _gc_hook(phase, info):
    if phase == "start" and CTL.gc_armed:
        CTL.fire("gc pass")


# ---- objects whose methods are hooks ----


class HostileNumber:
    """A real number whose __float__ runs the hooks (and may empty a list C was given)."""

    def __init__(self, x, victim=None):
        self.x = float(x)
        self.victim = victim

    def __float__(self):
        CTL.fire("__float__")
        if self.victim is not None:
            self.victim.clear()
        return self.x


numbers.Real.register(HostileNumber)


class HostileText:
    """A label or _op whose __str__ runs the hooks."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        CTL.fire("__str__")
        return self.text


class Finalizer:
    """An attribute whose __del__ runs the hooks when its Value dies."""

    def __del__(self):
        CTL.fire("__del__")


class Resurrector:
    """An attribute of a micrograd-style op whose __del__ brings the op back (the op
    held strongly, one more object in its cycle, or through a weak reference)."""

    def __init__(self, target, weak):
        self.target = weakref.ref(target) if weak else target
        self.weak = weak

    def __del__(self):
        CTL.fire("__del__ resurrecting")
        v = self.target() if self.weak else self.target
        if v is not None:
            CTL.resurrected.append(v)


class Hooked(Value):
    """A Value subclass (pinned, tracked) the hooks make and re-initialise."""


def hostile_mul(a, b, via_dict=False, where="_backward"):
    """micrograd's a * b, written in Python; its rule runs the hooks before it reads
    out.grad (so a nested sweep that broke the running one shows in the numbers)."""
    out = Value(a.data * b.data, (a, b), "hmul")

    oid = out._id

    def _backward():
        CTL.running_rules.append(oid)
        try:
            CTL.fire(where)
            a.grad += b.data * out.grad
            b.grad += a.data * out.grad
        finally:
            CTL.running_rules.pop()

    if via_dict:
        vars(out)["_backward"] = _backward
    else:
        out._backward = _backward
    return out


def pure_mul(pa, pb):
    return pa * pb  # op "*": edge_locals knows it


# ---- scratch graphs: one recipe, built as Values and as PureValues ----

UNARY = ["tanh", "sigmoid", "neg", "relu", "sq", "exp"]
BINARY = ["+", "-", "*", "/", "+c", "*c", "c-", "rule", "dict rule", "local", "pow"]
CONSTANTS = [2.0, -1.5, 0.5, 3.0, 0.0, -0.25]


def draw_recipe(rnd, n_leaves=None, steps=None, smooth=False, plain=False):
    n_leaves = n_leaves or rnd.randint(1, 3)
    ops = []
    for _ in range(steps if steps is not None else rnd.randint(1, 7)):
        kinds = [
            k
            for k in UNARY + BINARY
            if k.replace(" ", "") not in OFF
            and not (plain and k in ("rule", "dict rule", "local"))
            and not (smooth and k in ("relu", "pow"))
        ]
        ops.append(
            (rnd.choice(kinds), rnd.randrange(10**6), rnd.randrange(10**6), rnd.choice(CONSTANTS), rnd.random() < 0.5)
        )
    leaves = [round(rnd.uniform(-2, 2), 3) for _ in range(n_leaves)]
    return leaves, ops


def build(recipe, engine, leaves_data=None, resolved=None):
    """Builds recipe with Value or PureValue. The first build (resolved a list to fill)
    decides each step's op from the data (guards against domain errors and overflow);
    later builds follow the decisions. Returns (leaves, nodes)."""
    leaf_data, ops = recipe
    data = leaves_data if leaves_data is not None else leaf_data
    hostile = engine is Value
    leaves = [engine(x) for x in data]
    nodes = list(leaves)
    for k, (kind, i, j, c, flip) in enumerate(ops):
        a, b = nodes[-1 - i % min(3, len(nodes))], nodes[j % len(nodes)]
        if resolved is not None and len(resolved) > k:
            kind = resolved[k]
        else:
            x, y = a.data, b.data
            if kind == "/" and abs(y) < 0.1:
                kind = "+"
            if kind == "exp" and x > 4:
                kind = "tanh"
            if kind == "pow" and not (x > 0.1 and abs(y) <= 3):
                kind = "*"
            if kind in ("*", "rule", "dict rule", "local", "sq", "*c") and abs(x * y) > 1e3 or abs(x) > 1e3:
                kind = "tanh"
            if resolved is not None:
                resolved.append(kind)
        num = HostileNumber(c) if hostile and flip else c
        if kind == "tanh":
            out = a.tanh()
        elif kind == "sigmoid":
            out = a.sigmoid() if hostile else base.pure_sigmoid(a, 1.0 / (1.0 + math.exp(-a.data)))
        elif kind == "neg":
            out = -a
        elif kind == "relu":
            out = a.relu()
        elif kind == "sq":
            out = a**2
        elif kind == "exp":
            out = a.exp()
        elif kind == "+":
            out = a + b
        elif kind == "-":
            out = a - b
        elif kind == "*":
            out = a * b
        elif kind == "/":
            out = a / b
        elif kind == "+c":
            out = a + num
        elif kind == "*c":
            out = num * a
        elif kind == "c-":
            out = num - a
        elif kind in ("rule", "dict rule"):
            out = hostile_mul(a, b, kind == "dict rule") if hostile else pure_mul(a, b)
        elif kind == "local":
            d = math.sin(a.data) * b.data
            grads = (math.cos(a.data) * b.data, math.sin(a.data))
            if hostile:
                out = Value(
                    HostileNumber(d) if flip else d, (a, b), [HostileNumber(g) for g in grads] if flip else grads
                )
            else:
                out = PureValue(d, (a, b), grads)
                out.local_grads = grads
        elif kind == "pow":
            out = a**b if hostile else base.pure_pow(a, b)
        else:
            raise AssertionError(kind)
        nodes.append(out)
    return leaves, nodes


def check_values(where, nodes, twins):
    for k, (v, p) in enumerate(zip(nodes, twins)):
        if not same_value(v.data, p.data):
            raise AssertionError(f"{where}: node {k} ({v._op}) data {v.data!r}, pure {p.data!r}")


def pure_adjoints(root, inputs):
    """d root / d input for each pure input, and each one's tolerance, with every pure
    grad under root saved and put back (the twins may be held by the machine)."""
    order = root._topo()
    saved = [(n, n.grad) for n in order]
    saved += [(n, n.grad) for n in inputs]
    try:
        _, bound = path_bounds(root)
        for n in order:
            n.grad = 0.0
        for n in inputs:
            n.grad = 0.0
        root.backward()
        return [(n.grad, PATH_TOL * bound.get(id(n), 0.0)) for n in inputs]
    finally:
        for n, g in saved:
            n.grad = g


def check_grads(where, got, expected):
    for k, (q, (r, tol)) in enumerate(zip(got, expected)):
        if not same_grad(q, r, tol):
            raise AssertionError(f"{where}: input {k}: {q!r}, pure {r!r} (tol {tol:.3g})")


def same_bits(a, b):
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b) or (a != a and b != b)


def nested(ctl, root, call, what):
    """Runs call(), a sweep over root's graph that test code starts, maybe from inside
    another sweep. Over a graph that meets a running sweep while that sweep is in one of
    its Python rules, it must raise RuntimeError (issue 17, item 2); over a graph no
    running sweep meets, it must not. Returns call()'s result when its numbers are to be
    checked (no overlap), else None."""
    nodes = base.walk([root])
    ids = set(nodes)
    runs_python = any(is_python_rule(v) for v in nodes.values())
    must_raise = ctl.inside_rule_of(ids)
    overlapping = any(ids & other for other, _, _ in ctl.sweeps)
    entry = (ids, runs_python, root)
    ctl.sweeps.append(entry)
    try:
        result = call()
    except RuntimeError as error:
        if not overlapping:
            raise AssertionError(f"{what} over a graph no running sweep meets raised RuntimeError: {error}") from None
        note(f"hostile: nested {what} refused")
        return None
    finally:
        assert ctl.sweeps.pop() is entry
    if must_raise:
        raise AssertionError(f"{what} ran over nodes of a sweep that is running a Python rule")
    if overlapping:
        note(f"hostile: nested {what} beside a sweep not in a rule")
        return None
    return result


# ---- the actions a hook runs ----


def act_scratch_backward(ctl, rnd):
    """A scratch graph built (its ops' numbers and rules are hooks too), backward on
    its root, grads checked; sometimes a second backward on the same root from inside
    one of its own rules (must raise: its running sweep owns the nodes)."""
    recipe = draw_recipe(rnd)
    resolved = []
    leaves, nodes = build(recipe, Value, resolved=resolved)
    pleaves, pnodes = build(recipe, PureValue, resolved=resolved)
    check_values("scratch build", nodes, pnodes)
    root, proot = nodes[-1], pnodes[-1]
    expected = pure_adjoints(proot, pleaves)
    got = nested(ctl, root, lambda: (root.backward(), [x.grad for x in leaves])[1], "backward")
    if got is not None:
        check_grads("scratch backward", got, expected)


def act_scratch_grad(ctl, rnd):
    """grad() on a scratch graph whose .grad fields hold leftovers (-0.0 among them):
    right numbers, no .grad changed; create_graph=True (sometimes inside no_grad())
    builds a graph whose own derivatives agree with finite differences."""
    smooth = rnd.random() < 0.6
    recipe = draw_recipe(rnd, smooth=smooth, plain=smooth)
    resolved = []
    leaves, nodes = build(recipe, Value, resolved=resolved)
    pleaves, pnodes = build(recipe, PureValue, resolved=resolved)
    check_values("scratch build", nodes, pnodes)
    for v in nodes:
        v.grad = rnd.choice([0.0, 1.5, -2.0] if "negzero" in OFF else [0.0, -0.0, -0.0, 1.5, -2.0])
    before = [v.grad for v in nodes]
    root, proot = nodes[-1], pnodes[-1]
    expected = pure_adjoints(proot, pleaves)
    has_rules = any(is_python_rule(v) for v in nodes)
    create = not has_rules and rnd.random() < 0.6
    quiet = create and rnd.random() < 0.4 and "nograd" not in OFF

    def call():
        if quiet:
            with pyautograd.no_grad():
                return pyautograd.grad(root, leaves, create_graph=True)
        return pyautograd.grad(root, leaves, create_graph=create)

    got = nested(ctl, root, call, "grad(create_graph=True)" if create else "grad")
    changed = [k for k, (v, g) in enumerate(zip(nodes, before)) if not same_bits(v.grad, g)]
    if changed:
        k = changed[0]
        raise AssertionError(f"grad() changed .grad of node {k} ({nodes[k]._op}): {before[k]!r} -> {nodes[k].grad!r}")
    if got is None:
        return
    check_grads("grad()" + (" in no_grad()" if quiet else ""), [g.data for g in got], expected)
    if not create or not smooth:
        return
    # second derivatives: d/dx_j of each first derivative, against central differences of
    # the pure first derivatives (smooth ops only: no relu, no pow branches)
    h = 1e-5
    for i, g in enumerate(got):
        second = pyautograd.grad(g, leaves)
        for j in range(len(leaves)):
            fd = []
            for sign in (1, -1):
                data = list(recipe[0])
                data[j] += sign * h
                pl, pn = build(recipe, PureValue, data, list(resolved))
                fd.append(pure_adjoints(pn[-1], pl)[i][0])
            estimate = (fd[0] - fd[1]) / (2 * h)
            if abs(second[j].data - estimate) > 1e-4 * (1 + abs(estimate)):
                raise AssertionError(
                    f"d2/dx{i}dx{j} from grad(create_graph=True){' in no_grad()' if quiet else ''}"
                    f": {second[j].data!r}, finite differences {estimate!r}"
                )
    if quiet:
        note("hostile: grad(create_graph=True) in no_grad() checked")


def act_scratch_forward(ctl, rnd):
    """forward() on a replayable scratch graph after its leaves change, against a pure
    rebuild; and a derivative graph of x ** b replayed after b changes: right, or
    refused with RuntimeError."""
    recipe = draw_recipe(rnd, plain=True)
    resolved = []
    leaves, nodes = build(recipe, Value, resolved=resolved)
    new = [x * rnd.choice([1.0, 0.9, 1.1]) for x in recipe[0]]
    try:
        _, pnodes = build(recipe, PureValue, new, list(resolved))
        base._safe(pnodes[-1].data)
        fresh = build(recipe, Value, new, list(resolved))[1][-1].data
    except (ArithmeticError, ValueError, base._Domain):
        return
    for v, x in zip(leaves, new):
        v.data = x
    result = nested(ctl, nodes[-1], nodes[-1].forward, "forward")
    if result is None:
        return
    if not same_value(result, pnodes[-1].data) or result != fresh:
        raise AssertionError(f"forward(): {result!r}, rebuilt {fresh!r}, pure {pnodes[-1].data!r}")
    # pow's derivative picks a branch at b == 0: replaying it after b moves
    if "powreplay" in OFF:
        return
    x, b = Value(rnd.choice([0.5, 1.5, 2.0])), Value(rnd.choice([0.0, 0.0, 1.0, 2.0]))
    y = x**b
    (g,) = pyautograd.grad(y, [x], create_graph=True)
    b.data = rnd.choice([0.0, 1.0, 3.0])
    try:
        replayed = g.forward()
    except RuntimeError:
        note("hostile: a derivative graph's replay refused")
        return
    want = b.data * x.data ** (b.data - 1) if b.data else 0.0
    if not same_value(replayed, want):
        raise AssertionError(f"replayed d(x ** b)/dx at x={x.data}, b={b.data}: {replayed!r}, expected {want!r}")


def act_gc(ctl, rnd):
    gc.collect(rnd.choice([0, 0, 0, 1, 2]))


def act_walk_held(ctl, rnd):
    """Walks what the machine holds through _inputs and _prev (one object per node),
    keeping the objects met (a Value made here for a node must be the one the node
    names from now on, even if this runs inside the allocation of another Value for
    it): the next invariant's walk starts from them too."""
    held = ctl.held()
    if not held:
        return
    roots = [held[rnd.randrange(len(held))].v for _ in range(rnd.randint(1, 3))]
    seen = base.walk(roots + ctl.kept)
    for v in seen.values():
        (v.data, v.grad, v.label, v._op)
    if len(ctl.kept) < 400:
        ctl.kept.extend(seen.values())


def act_reinit(ctl, rnd):
    """__init__ again on a held subclass instance, or on a held Value whose class was
    changed to a subclass: nothing may change (issue 17, item 4)."""
    held = ctl.held()
    targets = [h.v for h in held]
    fresh = Hooked(rnd.uniform(-1, 1))
    targets.append(fresh)
    v = targets[rnd.randrange(len(targets))]
    if type(v) is Value and rnd.random() < 0.3:
        v.__class__ = Tagged
        note("hostile: a held Value became a Tagged")
    if type(v) is Value:
        v = fresh
    before = (v._id, v.data, v.grad, v.label, v._op, v._inputs)
    kind = rnd.choice(["data", "children", "label", "local grads"])
    x = HostileNumber(rnd.uniform(-5, 5))
    if kind == "data":
        v.__init__(x)
    elif kind == "children":
        v.__init__(x, (fresh,), "again")
    elif kind == "label":
        v.__init__(x, label="renamed")
    else:
        v.__init__(x, (fresh,), [HostileNumber(2.0)])
    after = (v._id, v.data, v.grad, v.label, v._op, v._inputs)
    if before != after:
        raise AssertionError(f"a second __init__ ({kind}) changed {type(v).__name__}: {before!r} -> {after!r}")


def act_attributes(ctl, rnd):
    """Attributes on held Values that the machine does not check: a number, a finalizer
    (its __del__ is a hook when the Value dies), a Value made from the Value itself
    (`w.reg = w * w`, a cycle through the node); and a label through a __str__ hook."""
    held = ctl.held()
    if not held:
        return
    h = held[rnd.randrange(len(held))]
    kind = rnd.choice(["number", "label", "vars", "reg", "finalizer"])
    if kind == "number":
        h.v.hostile_n = rnd.random()
    elif kind == "finalizer":
        h.v.hostile_fin = Finalizer()
    elif kind == "reg":
        h.v.reg = h.v * h.v
    elif kind == "vars":
        vars(h.v)  # counts as Python state from now on
    else:
        text = f"hostile {rnd.randrange(100)}"
        h.v.label = HostileText(text)
        if h.v.label != text:
            raise AssertionError(f"label {h.v.label!r}, set {text!r}")
        h.p.label = text


def act_text(ctl, rnd):
    """Labels and _op text: a __str__ hook, and NUL characters (ValueError, or the text
    kept whole: never cut short)."""
    a = Value(rnd.uniform(-1, 1))
    out = Value(a.data * 2, (a,), HostileText("twice"), label=HostileText("out"))
    if (out._op, out.label) != ("twice", "out"):
        raise AssertionError(f"_op {out._op!r}, label {out.label!r}")
    for text in ["a\x00b", "\x00", "ω\x00"]:
        try:
            a.label = text
        except ValueError:
            if a.label != "":
                raise AssertionError(f"a refused label changed the label to {a.label!r}") from None
        else:
            if a.label != text:
                raise AssertionError(f"label {text!r} came back as {a.label!r}")
        try:
            w = Value(1.0, (a,), text)
        except ValueError:
            pass
        else:
            if w._op != text:
                raise AssertionError(f"_op {text!r} came back as {w._op!r}")


def act_weakref_dies(ctl, rnd):
    """A weak reference whose callback reads out._inputs (and runs hooks) while the
    input's Value dies (issue 17, item 3)."""
    x = (Hooked if rnd.random() < 0.3 else Value)(rnd.uniform(-2, 2))
    data = x.data
    out = x * 2.0 if rnd.random() < 0.5 else hostile_mul(x, x, where="_backward of a weakref test")
    met = []

    def callback(ref):
        ctl.fire("weakref callback")
        first = out._inputs[0]
        met.append(first)
        if first.data != data:
            ctl.fail("weakref callback", f"out._inputs[0].data {first.data!r}, was {data!r}")

    ref = weakref.ref(x, callback)
    del x
    gc.collect(0)
    if ref() is not None:
        return  # a subclass instance is kept by its node while out uses it
    if not met:
        raise AssertionError("the weak reference's callback did not run")
    again = out._inputs[0]
    if again is not met[0]:
        raise AssertionError("the node has two Python objects after the callback")
    if again.data != data:
        raise AssertionError(f"input data {again.data!r}, was {data!r}")
    out.grad = 0.0
    again.grad = 0.0
    done = nested(ctl, out, lambda: out.backward() or True, "backward")
    want = 2.0 if out._op == "*" else 2 * data
    if done and not same_value(again.grad, want):
        raise AssertionError(f"grad through a Value made in a weakref callback {again.grad!r}, expected {want!r}")


def act_resurrect(ctl, rnd):
    """A micrograd-style op whose attribute's finalizer brings it back when it dies:
    it must come back whole, its Python _backward included (issue 17, item 8)."""
    a, b = Value(rnd.uniform(-2, 2)), Value(rnd.uniform(-2, 2))
    out = hostile_mul(a, b, via_dict=rnd.random() < 0.3, where="_backward of a resurrected op")
    token = rnd.random()  # marks the rule, which the test must not hold (the cycle
    vars(out)["_backward"].token = token  # has to be garbage)
    out.keeper = Resurrector(out, weak=rnd.random() < 0.5)
    target = id(out)
    first = len(ctl.resurrected)
    if rnd.random() < 0.5:
        z = out * 3.0  # out pinned while z uses it; dies when z does
        del out
        del z
    else:
        del out
    gc.collect()
    found = [v for v in ctl.resurrected[first:] if id(v) == target]
    if not found:
        return  # a weak reference cleared before the finalizer ran: nothing came back
    v = found[-1]
    if getattr(vars(v).get("_backward"), "token", None) != token:
        raise AssertionError(f"a resurrected op lost its _backward (dict {sorted(vars(v))})")
    a.grad = b.grad = 0.0
    done = nested(ctl, v, lambda: v.backward() or True, "backward")
    if done and (a.grad, b.grad) != (b.data, a.data):
        raise AssertionError(f"resurrected op's grads {(a.grad, b.grad)}, expected {(b.data, a.data)}")
    note("hostile: an op came back from its finalizer")


def act_python_chain(ctl, rnd):
    """A chain of Python-written ops that dies at once (more than the Value free list
    holds, issue 17 item 7), sometimes after a backward through it."""
    x = Value(0.5)
    y = x
    n = rnd.choice([10, 300, 600])
    for k in range(n):
        y = hostile_mul(y, Value(1.0), where="_backward in a long chain") if k % 2 else y + 0.0
    if rnd.random() < 0.3:
        done = nested(ctl, y, lambda root=y: root.backward() or True, "backward")
        if done and x.grad != 1.0:
            raise AssertionError(f"grad through a chain of {n} ops {x.grad!r}")
    del y


def act_poke_gc_objects(ctl, rnd):
    """Everything the GC can see is whole (issue 17, items 5 and 6): each Value, and each
    tuple or list that holds Values (one made while a GC pass runs here must have no
    empty slots)."""
    for o in gc.get_objects():
        if isinstance(o, Value):
            (o._id, o.data, o.grad, o.label, o._op, o._inputs, repr(o))
        elif type(o) in (tuple, list):
            for x in o:
                if isinstance(x, Value):
                    (x._id, x.data)


def act_grad_held(ctl, rnd):
    """grad() of a held root with respect to held Values under it, against the twins;
    from inside a sweep over an overlapping graph it must raise RuntimeError."""
    held = ctl.held()
    if not held:
        return
    root = held[rnd.randrange(len(held))]
    under = base.walk([root.v])
    inputs = [h for h in held if h.v._id in under][:4]
    if not inputs:
        return
    create = rnd.random() < 0.3
    runs_python = any(is_python_rule(v) for v in under.values())
    expected = pure_adjoints(root.p, [h.p for h in inputs])
    got = nested(
        ctl,
        root.v,
        lambda: pyautograd.grad(root.v, [h.v for h in inputs], create_graph=create and not runs_python),
        "grad of a held root",
    )
    if got is not None:
        check_grads("grad of a held root", [g.data for g in got], expected)


def act_sweep_running(ctl, rnd):
    """backward() or grad() again on the root of a sweep that is in one of its Python
    rules right now: RuntimeError, and the running sweep's numbers stay right."""
    running = set(ctl.running_rules)
    roots = [root for nodes, runs, root in ctl.sweeps if runs and nodes & running]
    if not roots:
        return
    root = roots[rnd.randrange(len(roots))]
    under = list(base.walk([root]).values())
    how = rnd.choice(["backward", "grad", "grad of an interior node"])
    if how == "backward":
        nested(ctl, root, root.backward, "backward on a running sweep's root")
    elif how == "grad":
        nested(ctl, root, lambda: pyautograd.grad(root, under[:3]), "grad on a running sweep's root")
    else:
        inner = under[rnd.randrange(len(under))]
        nested(ctl, inner, lambda: pyautograd.grad(inner, under[:3]), "grad of an interior node of a running sweep")
    note("hostile: a sweep started from inside a running one")


def act_gradcheck_raises(ctl, rnd):
    """gradcheck over a function that raises part way: its inputs come back as they were."""
    xs = [Value(rnd.uniform(-1, 1)) for _ in range(2)]
    before = [x.data for x in xs]
    calls = [0]
    limit = rnd.randint(1, 4)

    def fn(a, b):
        calls[0] += 1
        if calls[0] > limit:
            raise KeyError("fn fails")
        return (a * b).tanh()

    try:
        pyautograd.gradcheck(fn, xs)
    except KeyError:
        pass
    after = [x.data for x in xs]
    if after != before:
        raise AssertionError(f"gradcheck left its inputs at {after}, were {before}")


def act_hostile_sum(ctl, rnd):
    """pyautograd.sum over a list a __float__ empties while C converts it."""
    xs = [Value(rnd.uniform(-1, 1)) for _ in range(3)]
    items = list(xs)
    items.insert(rnd.randrange(4), HostileNumber(0.5, victim=items))
    want = 0.0
    for it in list(items):
        want = want + (it.x if isinstance(it, HostileNumber) else it.data)
    out = pyautograd.sum(items)
    if not same_value(out.data, want):
        raise AssertionError(f"sum over a list its __float__ emptied: {out.data!r}, {want!r}")


ACTIONS = [
    ("scratch backward", act_scratch_backward),
    ("scratch grad", act_scratch_grad),
    ("scratch forward", act_scratch_forward),
    ("gc", act_gc),
    ("walk held", act_walk_held),
    ("reinit", act_reinit),
    ("attributes", act_attributes),
    ("text", act_text),
    ("weakref dies", act_weakref_dies),
    ("resurrect", act_resurrect),
    ("python chain", act_python_chain),
    ("poke gc objects", act_poke_gc_objects),
    ("grad held", act_grad_held),
    ("gradcheck raises", act_gradcheck_raises),
    ("hostile sum", act_hostile_sum),
    ("sweep running", act_sweep_running),
    # the cheap ones again, so scripts draw them more often
    ("scratch backward", act_scratch_backward),
    ("walk held", act_walk_held),
    ("grad held", act_grad_held),
    ("reinit", act_reinit),
    ("sweep running", act_sweep_running),
    ("sweep running", act_sweep_running),
]
SCRIPT = st.lists(st.tuples(st.integers(0, len(ACTIONS) - 1), st.integers(0, 2**32)), min_size=1, max_size=6)


# ---- the machine ----


class HostileMachine(ProgramMachine):
    def __init__(self):
        super().__init__()
        for _ in range(5):  # garbage of the last program that needs more than one pass
            CTL.resurrected.clear()  # (finalizers that bring Values back)
            gc.collect()
            if live() == self.baseline and not CTL.resurrected:
                break
            self.baseline = live()
        # Everything alive now (pytest's, hypothesis's) goes to the GC's permanent
        # generation for the program's length, so the program's many full collections
        # cost what its own objects cost (teardown unfreezes).
        gc.freeze()
        CTL.reset()
        CTL.held = lambda: self.held
        self.cycles = True  # hooks make closures and attribute cycles
        self.saved_threshold = gc.get_threshold()
        if _gc_hook not in gc.callbacks:
            gc.callbacks.append(_gc_hook)

    def armed(self, script, gc_too=True):
        CTL.load(script)
        CTL.gc_armed = gc_too
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        CTL.gc_armed = False
        CTL.budget = 0
        gc.set_threshold(*self.saved_threshold)

    # ---- rules that install hooks ----

    @rule(i=base.INDEX, j=base.INDEX, via_dict=st.booleans(), script=SCRIPT)
    def hostile_node(self, i, j, via_dict, script):
        """A micrograd-style op whose rule is a hook (held: the machine's backward runs
        it, with every other rule it holds)."""
        if "hostile_node" in OFF:
            return
        if not self.held or not self.room():
            return
        a, b = self.pick(i), self.pick(j)
        if abs(a.v.data * b.v.data) > base.LIMIT:
            return
        with self.armed(script):
            out = hostile_mul(a.v, b.v, via_dict and "dictrule" not in OFF)
        pout = pure_mul(a.p, b.p)
        self.hold(out, pout, False)

    @rule(
        i=base.INDEX,
        x=st.floats(-3, 3, allow_nan=False),
        kind=st.sampled_from(["operand", "reflected", "leaf", "local grads", "data", "sum"]),
        script=SCRIPT,
    )
    def hostile_number(self, i, x, kind, script):
        """An op given a number whose __float__ is a hook."""
        if "hostile_number" in OFF:
            return
        if not self.held or not self.room():
            return
        h = self.pick(i)
        if abs(h.v.data * x) > base.LIMIT or abs(h.v.data) + abs(x) > base.LIMIT:
            return
        n = HostileNumber(x)
        with self.armed(script):
            if kind == "operand":
                out, pout, rep = h.v * n, h.p * x, h.replayable
            elif kind == "reflected":
                out, pout, rep = n - h.v, x - h.p, h.replayable
            elif kind == "leaf":
                out, pout, rep = Value(n), PureValue(x), True
            elif kind == "local grads":
                out = Value(HostileNumber(h.v.data * 2), (h.v,), [n])
                pout = PureValue(h.p.data * 2, (h.p,), [x])
                pout.local_grads = (x,)
                rep = False
            elif kind == "data":  # the same number again: nothing changes
                h.v.data = HostileNumber(h.v.data)
                return
            else:
                out = pyautograd.sum([h.v, n, h.v])
                pout, rep = base.pure_sum([h.p, x, h.p]), h.replayable
        self.hold(out, pout, rep)

    @rule(i=base.INDEX, script=SCRIPT, op=st.booleans())
    def hostile_label(self, i, script, op):
        """A label (or a hand-made node's _op) whose __str__ is a hook."""
        if "hostile_label" in OFF:
            return
        if not self.held or not self.room():
            return
        h = self.pick(i)
        text = f"hostile label {len(self.held)}"
        with self.armed(script):
            if op:
                out = Value(h.v.data, (h.v,), HostileText("hop"), label=HostileText(text))
                assert out._op == "hop" and out.label == text, (out._op, out.label)
                pout = PureValue(h.p.data, (h.p,), "hop", label=text)
                self.hold(out, pout, False)
            else:
                h.v.label = HostileText(text)
                h.p.label = text

    @rule(i=base.INDEX, script=SCRIPT, how=st.sampled_from(["weakref", "finalizer", "both"]), collect=st.booleans())
    def hostile_death(self, i, script, how, collect):
        """A held Value dropped with a weakref callback and/or a finalizing attribute."""
        if "hostile_death" in OFF:
            return
        if not self.held:
            return
        k = i % len(self.held)
        v = self.held[k].v
        with self.armed(script):
            if how in ("weakref", "both"):
                CTL.weakrefs.append(weakref.ref(v, lambda ref: CTL.fire("weakref callback")))
            if how in ("finalizer", "both"):
                v.hostile_fin = Finalizer()
            del v
            del self.held[k]
            if collect:
                gc.collect()

    @rule(script=SCRIPT, pressure=st.booleans())
    def hostile_gc(self, script, pressure):
        """GC passes everywhere (threshold 1) while walking and extending held graphs;
        each pass runs hooks. The Value free list is drained first, so the Values the
        walk makes are allocated (and may start a GC pass)."""
        if "hostile_gc" in OFF:
            return
        drain = [Value(0.0) for _ in range(300)]
        with self.armed(script, gc_too=False):
            if pressure:
                gc.set_threshold(1, 1, 1)
            CTL.gc_armed = True
            if self.held:
                CTL.kept.extend(base.walk([h.v for h in self.held]).values())
                h = self.held[-1]
                if self.room() and abs(h.v.data) < 1e3:
                    self.hold(h.v.tanh(), h.p.tanh(), h.replayable)
        del drain

    @rule(script=SCRIPT)
    def hostile_actions(self, script):
        """The script's actions run straight from the step (no hook needed)."""
        if "hostile_actions" in OFF:
            return
        with self.armed(script, gc_too=False):
            CTL.fire("step")

    @rule(i=base.INDEX, x=st.floats(-3, 3, allow_nan=False), swap=st.booleans())
    def reinitialise(self, i, x, swap):
        """A second __init__ on a held subclass instance (or a held Value made one by
        __class__ assignment) changes nothing."""
        if "reinitialise" in OFF:
            return
        if not self.held:
            return
        v = self.pick(i).v
        if type(v) is Value:
            if not swap:
                return
            v.__class__ = Tagged
        before = (v._id, v.data, v.grad, v.label, v._inputs)
        v.__init__(x)
        after = (v._id, v.data, v.grad, v.label, v._inputs)
        assert before == after, f"a second __init__ changed {type(v).__name__}: {before} -> {after}"

    # ---- the machine's backward, as a sweep the hooks know of ----

    @rule(i=base.INDEX, recent=st.booleans(), zero=st.booleans(), script=SCRIPT)
    def backward(self, i, recent, zero, script):
        """test_stateful's backward rule, with hooks armed and the C sweep made known to
        nested sweeps."""
        if not self.held:
            return
        root = self.pick_root(i, recent)
        order, bound = path_bounds(root.p)
        old = {}
        if not zero:
            old = {id(n): (n.grad_before, getattr(n, "gtol_before", 0.0)) for n in order if hasattr(n, "grad_before")}
        if zero:
            for node in base.walk([root.v]).values():
                node.grad = 0.0
        nodes = base.walk([root.v])
        entry = (set(nodes), any(is_python_rule(v) for v in nodes.values()), root.v)
        del nodes
        with self.armed(script):
            CTL.sweeps.append(entry)
            try:
                root.v.backward()
            finally:
                assert CTL.sweeps.pop() is entry
        root.p.backward()
        for node in order:
            tol = PATH_TOL * bound.get(id(node), 0.0)
            if id(node) in old:
                before, before_tol = old[id(node)]
                node.grad += before
                tol += before_tol + REL * abs(before)
            node.gtol = tol
        note(f"backward: {'with' if entry[1] else 'no'} Python rules")

    # ---- checks ----

    @invariant()
    def hooks_found_nothing_wrong(self):
        errors, CTL.errors = CTL.errors, []
        for where, _ in errors:
            note(f"hostile failure in {where.split(' -> ')[0]}")
        assert not errors, describe(errors)

    def roots(self):
        """Everything that holds nodes: what the machine holds, what hooks kept, and
        Values held by attributes (`w.reg = w * w`)."""
        roots = [v for v, _ in self.everything()] + CTL.kept + CTL.resurrected
        seen = base.walk(roots)
        while True:
            extra = [
                r
                for v in seen.values()
                for r in [getattr(v, "reg", None)]
                if isinstance(r, Value) and r._id not in seen
            ]
            if not extra:
                return roots, seen
            roots += extra
            seen = base.walk(roots)

    @invariant()
    def live_nodes_are_what_the_program_holds(self):
        _, seen = self.roots()
        extra = live() - self.baseline - len(seen)
        if extra:
            gc.collect()
            _, seen = self.roots()
            extra = live() - self.baseline - len(seen)
        assert extra == 0, f"{extra} live nodes the program does not hold ({len(seen)} held)"
        kept = []
        for ref, expected in self.attrs:
            v = ref()
            if v is None:
                continue
            assert v._id in seen and seen[v._id] is v
            for name, value in expected.items():
                assert (getattr(v, name) is v) if value is base.SELF else getattr(v, name) == value
            kept.append((ref, expected))
        self.attrs = kept
        CTL.kept.clear()  # identity across them was checked by the walk
        CTL.resurrected.clear()
        CTL.weakrefs = [r for r in CTL.weakrefs if r() is not None]

    def teardown(self):
        try:
            CTL.gc_armed = False
            CTL.budget = 0
            gc.set_threshold(*self.saved_threshold)
            super().teardown()
            CTL.kept.clear()
            CTL.weakrefs.clear()
            gc.unfreeze()  # the final collections see everything
            for _ in range(5):  # finalizers run by a pass may bring more back
                CTL.resurrected.clear()
                gc.collect()
                if not CTL.resurrected:
                    break
            errors = CTL.errors
            assert not errors, "while the program was dropped: " + describe(errors)
            assert "leak" in OFF or live() == self.baseline, (
                f"{live() - self.baseline} nodes left after the program and gc.collect(); "
                f"Values the GC still sees: {left_over()}"
            )
        finally:
            CTL.reset()
            gc.unfreeze()  # (again, if the clean-up above raised first)
            if _gc_hook in gc.callbacks:
                gc.callbacks.remove(_gc_hook)
            base._garbage_possible[0] = True


def left_over():
    """What is left of the Values the GC can see, for a leak's message."""
    found = []
    for o in gc.get_objects():
        if isinstance(o, Value) and len(found) < 10:
            holders = sorted({type(r).__name__ for r in gc.get_referrers(o)} - {"list"})
            found.append(
                f"{type(o).__name__}(_op {o._op!r}, data {o.data!r}, attributes "
                f"{sorted(getattr(o, '__dict__', None) or {})}, held by {holders})"
            )
    return found or "none"


def _scaled(default):
    return max(1, _EXTRA * default // 2000) if _EXTRA else default


# The program machine runs in an interpreter of its own (test_hostile_program below):
# what it checks at the end, every node freed, depends on when the cyclic GC runs, which
# depends on everything the process did before. In a suite that imported torch and jax
# first, a cycle of a Python-rule op and a Value with a finalizer attribute was once left
# uncollected (issue 17, still open); run this file alone to reproduce that state-free.
_IN_CHILD = os.environ.get("PYAUTOGRAD_HOSTILE_CHILD") == "1"


def test_hostile_program(tmp_path):
    """The machine below, in a fresh interpreter: its verdict is this test's."""
    if _IN_CHILD:
        pytest.skip("this is the child run: TestHostileProgram below is the test")
    env = dict(os.environ, PYAUTOGRAD_HOSTILE_CHILD="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{os.path.abspath(__file__)}::TestHostileProgram",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout, done.stdout[-2000:]


TestHostileProgram = HostileMachine.TestCase if _IN_CHILD else None
if TestHostileProgram is None:
    del TestHostileProgram
else:
    TestHostileProgram.settings = settings(
        max_examples=_scaled(DEFAULT_PROGRAMS),
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not _EXTRA,
        database=None,
        suppress_health_check=list(HealthCheck),
        **({"phases": [Phase.explicit, Phase.reuse, Phase.generate]} if "shrink" in OFF else {}),
    )


# ---- the threaded variant ----


def gil_mul(a, b, log):
    """micrograd's a * b with a rule that lets the other thread run in the middle of the
    sweep: it sleeps (releasing the GIL) before it reads out.grad and after it adds."""
    out = Value(a.data * b.data, (a, b), "gmul")

    def _backward():
        log.append(threading.get_ident())
        time.sleep(0)
        g = out.grad
        time.sleep(0)
        a.grad += b.data * g
        b.grad += a.data * g
        time.sleep(0)

    out._backward = _backward
    return out


THREAD_OPS = ["gil", "gil", "*", "+", "tanh", "sum"]


def build_thread_graph(steps, pool, own, log):
    """A root over pool (shared nodes) and own (this thread's leaves), with the ops of
    steps (each a kind and two picks); returns the root and every node made."""
    nodes = []
    cur = pool[0]
    for kind, i, j in steps:
        a = (pool + own + nodes)[i % (len(pool) + len(own) + len(nodes))]
        b = (pool + own + nodes)[j % (len(pool) + len(own) + len(nodes))]
        if abs(a.data) > 10 or abs(b.data) > 10:
            a, b = a.tanh(), b.tanh()
        if kind == "gil":
            cur = gil_mul(a, b, log) + cur
        elif kind == "*":
            cur = a * b + cur
        elif kind == "+":
            cur = cur + a + b
        elif kind == "tanh":
            cur = (cur + a).tanh()
        else:
            cur = pyautograd.sum([cur, a, b, own[0]])
        nodes.append(cur)
    return cur, nodes


CALLS = st.sampled_from(["backward", "grad", "backward", "private backward", "private grad"])
INDEX_T = st.integers(0, 10**6)
STEPS_T = st.lists(st.tuples(st.sampled_from(THREAD_OPS), INDEX_T, st.integers(0, 10**6)), min_size=1, max_size=5)


@pytest.mark.usefixtures("switch_often")
@settings(
    max_examples=_scaled(DEFAULT_THREADED),
    deadline=None,
    derandomize=not _EXTRA,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    shared=st.lists(st.tuples(st.sampled_from(["gil", "*", "tanh", "+"]), INDEX_T, INDEX_T), min_size=1, max_size=4),
    steps=st.tuples(STEPS_T, STEPS_T),
    calls=st.tuples(st.lists(CALLS, min_size=1, max_size=6), st.lists(CALLS, min_size=1, max_size=6)),
    leaves=st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=3, max_size=3),
)
def test_threads_share_nodes_with_rules_that_release_the_gil(shared, steps, calls, leaves):
    """Two threads back-propagate graphs that share leaves and interior nodes (rules that
    release the GIL among them), and graphs of their own. A call over shared nodes may
    meet the other thread's running sweep: then it raises RuntimeError and changes
    nothing; otherwise, and always over a thread's own graph, it gives exactly the
    numbers it gives alone. Never a mix: each node's grad at the end is the sum of what
    the calls that succeeded added. Every node dies with the graphs."""
    gc.collect()
    baseline = live()
    two_threads(shared, steps, calls, leaves)
    gc.collect()
    assert live() == baseline, f"{live() - baseline} nodes left after the threads"


def two_threads(shared, steps, calls, leaves):
    log = []
    xs = [Value(x) for x in leaves]
    pool = list(xs)
    for kind, i, j in shared:  # interior nodes both threads' graphs use
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        pool.append(
            gil_mul(a, b, log)
            if kind == "gil"
            else a * b
            if kind == "*"
            else (a + b).tanh()
            if kind == "tanh"
            else a + b
        )
    owns = [[Value(0.3 + k), Value(-0.7 * k)] for k in range(2)]
    roots, privates, nodes = [], [], []
    for k in range(2):
        root, made = build_thread_graph(steps[k], pool, owns[k], log)
        private, made_p = build_thread_graph(steps[1 - k], owns[k][:1], owns[k][1:], log)
        roots.append(root)
        privates.append(private)
        nodes += made + made_p
    watched = list({id(v): v for v in pool + owns[0] + owns[1] + nodes + roots + privates}.values())

    # each call alone: what backward() adds to every watched node, and what grad() gives
    def alone(root, inputs):
        for v in watched:
            v.grad = 0.0
        root.backward()
        added = [v.grad for v in watched]
        for v in watched:
            v.grad = 0.0
        return added, [g.data for g in pyautograd.grad(root, inputs)]

    expected = {(k, False): alone(roots[k], pool) for k in range(2)}
    expected.update({(k, True): alone(privates[k], owns[k]) for k in range(2)})

    done = {key: 0 for key in expected}
    refused = []
    errors = []
    started = threading.Barrier(2)

    def worker(k):
        try:
            started.wait(5)
            for call in calls[k] * 3:
                private = call.startswith("private")
                root = privates[k] if private else roots[k]
                try:
                    if call.endswith("backward"):
                        root.backward()
                        done[(k, private)] += 1
                    else:
                        got = [g.data for g in pyautograd.grad(root, owns[k] if private else pool)]
                        want = expected[(k, private)][1]
                        if got != want:
                            errors.append(f"thread {k} {call}: {got} != alone {want}")
                except RuntimeError as error:
                    if private:
                        errors.append(f"thread {k} {call} over its own graph refused: {error}")
                    elif "another" not in str(error):
                        errors.append(f"thread {k} {call}: an unclear RuntimeError: {error}")
                    refused.append(call)
                time.sleep(0)
        except BaseException:  # noqa: B902 - reported by the main thread
            errors.append(traceback.format_exc())

    for v in watched:
        v.grad = 0.0
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors[:5])
    for n, v in enumerate(watched):
        terms = [count * expected[key][0][n] for key, count in done.items()]
        want = math.fsum(terms)
        scale = math.fsum(abs(t) for t in terms)
        assert abs(v.grad - want) <= 1e-12 * scale + 1e-300, (
            f"node {n} ({v._op}): grad {v.grad!r} is not the sum of the successful calls' "
            f"{want!r} ({done}, {len(refused)} refused)"
        )
    if refused:
        event("threads: a call met the other thread's sweep and was refused")
    if len(set(log)) > 2:  # the main thread's single runs, then both workers
        event("threads: both threads ran rules")
