"""Replay (Value.forward): re-running a recorded graph in C must give bitwise what
rebuilding the same graph from scratch with the same leaf values gives.

Covers random graphs over every op of the C table (hypothesis; operators, methods,
v.leaky_relu(slope) and pyautograd.maximum/minimum, fed inf, nan and exact ties), the
cache of topological orders (many replays, more roots than the cache holds, roots dying
and their ids being reused), and the limits, like torch.jit.trace's: Python control flow
that read .data is not re-run; branches inside ops (relu) are.
"""

import gc
import math
import operator
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyautograd
from pyautograd import arena
from pyautograd._ag import lib
from pyautograd.engine import OP_NAMES, OP_PYTHON, Value

CACHE_SIZE = 16  # AG_ORDER_CACHE_SIZE in csrc/sweep.c


def same(a, b):
    """Bitwise equal floats, any two nans counting as equal."""
    if math.isnan(a) and math.isnan(b):
        return True
    return struct.pack("<d", a) == struct.pack("<d", b)


nary_sum = pyautograd.sum
nary_dot = pyautograd.dot


# ---- random programs over every op of the table ----
# An instruction is (kind, name, picks, constant); picks index earlier nodes (mod their
# count), so subexpressions are shared freely, `a op a` included. The program is data,
# so the same graph can be built twice with different leaf values.

# Ops the engine makes only inside derivative graphs (OP_PYTHON "internal") are left out.
# Binary rows are operators (operator.add) or module functions (pyautograd.maximum), in
# their three forms; a method_slope row (v.leaky_relu(slope)) takes the instruction's
# number as its slope, or none (the default slope).
UNARY = [n for c, n in enumerate(OP_NAMES) if lib.ag_op_arity(c) == 1 and OP_PYTHON[c] != "internal"]
BINARY = [
    n for c, n in enumerate(OP_NAMES) if lib.ag_op_arity(c) == 2 and OP_PYTHON[c] not in ("internal", "method_slope")
]
FUNCTIONS = {n for c, n in enumerate(OP_NAMES) if OP_PYTHON[c] == "function"}
SLOPED = [n for c, n in enumerate(OP_NAMES) if OP_PYTHON[c] == "method_slope"]
KINDS = (
    [("unary", n) for n in UNARY]
    + [(form, n) for n in BINARY for form in ("binary", "value_op_number", "number_op_value")]
    + [(form, n) for n in SLOPED for form in ("slope", "default_slope")]
    + [("sum", ""), ("dot", ""), ("dot_bias", "")]
)
# Nodes made by hand have no forward to replay: forward() refuses them (tested below).
HAND_MADE = {"custom", "local"}
INTERNAL = {n for c, n in enumerate(OP_NAMES) if OP_PYTHON[c] == "internal"}


def test_every_op_of_the_table_is_in_the_random_programs():
    covered = set(UNARY) | set(BINARY) | set(SLOPED) | {"sum", "dot", "leaf", "const"}
    assert covered | HAND_MADE | INTERNAL == set(OP_NAMES)
    assert FUNCTIONS <= set(BINARY) and {"maximum", "minimum", "leaky_relu"} <= covered


def binary(name):
    """The Python spelling of a binary row: an operator, or a pyautograd function."""
    return getattr(pyautograd, name) if name in FUNCTIONS else getattr(operator, name)


def apply(kind, name, picks, constant, nodes):
    def pick(i):
        return nodes[picks[i % len(picks)] % len(nodes)]

    if kind == "unary":
        return -pick(0) if name == "neg" else getattr(pick(0), name)()
    if kind == "binary":
        return binary(name)(pick(0), pick(1))  # pow(Value, Value): a Value exponent
    if kind == "value_op_number":
        return binary(name)(pick(0), constant)
    if kind == "number_op_value":
        return binary(name)(constant, pick(0))
    if kind == "slope":
        return getattr(pick(0), name)(constant)
    if kind == "default_slope":
        return getattr(pick(0), name)()
    if kind == "sum":
        return nary_sum([pick(i) for i in range(len(picks))])
    if kind in ("dot", "dot_bias"):
        half = max(1, len(picks) // 2)
        ws = [pick(i) for i in range(half)]
        xs = [pick(half + i) for i in range(half)]
        return nary_dot(ws, xs, pick(2 * half) if kind == "dot_bias" else 0)
    raise AssertionError(kind)


def build(program, leaf_values):
    """Every node of the program, leaves first; the last one, the root, sums them all so
    that every node is under it."""
    nodes = [Value(x) for x in leaf_values]
    for kind, name, picks, constant in program:
        nodes.append(apply(kind, name, picks, constant, nodes))
    nodes.append(nary_sum(nodes))
    return nodes


def assert_same_graphs(replayed, rebuilt):
    for i, (r, b) in enumerate(zip(replayed, rebuilt)):
        assert same(r.data, b.data), f"node {i} ({r._op!r}): data {r.data!r} != {b.data!r}"
        assert same(r.grad, b.grad), f"node {i} ({r._op!r}): grad {r.grad!r} != {b.grad!r}"


def replay_with(nodes, n_leaves, new_values):
    for leaf, x in zip(nodes[:n_leaves], new_values):
        leaf.data = x
    root = nodes[-1]
    assert same(root.forward(), root.data)
    for v in nodes:
        v.grad = 0.0
    root.backward()


def rebuild_with(program, new_values):
    nodes = build(program, new_values)
    nodes[-1].backward()
    return nodes


numbers_ = st.one_of(
    st.floats(-4.0, 4.0),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5]),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e-300]),
)
instructions = st.tuples(
    st.sampled_from(KINDS),
    st.lists(st.integers(0, 1000), min_size=1, max_size=7),
    st.one_of(st.floats(-3.0, 3.0), st.sampled_from([0.0, 2.0, -1.0])),
).map(lambda t: (t[0][0], t[0][1], t[1], t[2]))
programs = st.integers(1, 5).flatmap(
    lambda n_leaves: st.tuples(
        st.lists(instructions, min_size=1, max_size=30),
        st.lists(numbers_, min_size=n_leaves, max_size=n_leaves),
        st.lists(numbers_, min_size=n_leaves, max_size=n_leaves),
    )
)


@settings(max_examples=300, deadline=None)
@given(programs)
def test_replay_is_bitwise_a_rebuild_for_random_graphs(case):
    program, old_values, new_values = case
    replayed = build(program, old_values)
    replayed[-1].backward()  # stale grads everywhere, which replay must not see
    replay_with(replayed, len(old_values), new_values)
    assert_same_graphs(replayed, rebuild_with(program, new_values))


@settings(max_examples=50, deadline=None)
@given(programs, st.lists(st.lists(numbers_, min_size=5, max_size=5), min_size=2, max_size=6))
def test_replaying_many_times_is_a_rebuild_each_time(case, later_values):
    program, old_values, _ = case
    n = len(old_values)
    replayed = build(program, old_values)
    for values in later_values:
        replay_with(replayed, n, values[:n])
        assert_same_graphs(replayed, rebuild_with(program, values[:n]))


grads_ = st.one_of(st.floats(-4.0, 4.0), st.sampled_from([0.0, -0.0, 1.0, math.inf, math.nan]))


@settings(max_examples=200, deadline=None)
@given(programs, st.lists(grads_, min_size=40, max_size=40))
def test_a_replayed_backward_adds_to_earlier_grads_as_the_sweep_does(case, earlier):
    # backward() on a root that replays runs its compiled tape (csrc/tape.c); on a
    # fresh graph, the sort and the sweep over the nodes. With any grads there before
    # (-0.0 included: the tape must keep a -0.0 adjoint and turn an untouched -0.0 into
    # +0.0, as the sweep's keep-aside and add-back do), both must end with the same bits.
    program, values, _ = case
    replayed, swept = build(program, values), build(program, values)
    replayed[-1].forward()  # compiles the tape; `swept` is never replayed
    for nodes in (replayed, swept):
        for v, g in zip(nodes, earlier * (len(nodes) // len(earlier) + 1)):
            v.grad = g
        nodes[-1].backward()
        nodes[-1].backward()  # twice: the second adds to the first
    assert_same_graphs(replayed, swept)


@pytest.mark.parametrize("how", ["setter", "optimizer", "interior", "other_root"])
def test_a_replayed_backward_reads_data_changed_since_the_last_forward(how):
    # The tape skips re-reading the nodes' data when nothing wrote any since its last
    # run (csrc/arena.h, ag_data_edits): every way of writing must be seen. Graph `a` is
    # replayed, `b` is the same graph swept over its nodes; both get the same writes.
    from pyautograd.optim import SGD

    def make():
        x, w = Value(0.5), Value(-1.5)
        h = (x * w).tanh()
        other = h * 3.0  # a second replayed root over h
        return x, w, h, other, (h * h + w).relu() + h

    graphs = [make(), make()]
    graphs[0][-1].forward()
    graphs[0][-1].backward()  # the tape has read its nodes: next time it may not
    for x, w, h, other, root in graphs:
        if how == "setter":
            w.data = 2.25
        elif how == "optimizer":
            w.grad = 1.0
            SGD([w], lr=0.5).step()
        elif how == "interior":
            h.data = 0.125
        elif how == "other_root" and other is graphs[0][3]:
            x.data = 3.0
            other.forward()  # rewrites h, shared with root
        elif how == "other_root":
            x.data = 3.0
            h.data = math.tanh(3.0 * w.data)
        for v in (x, w, h, root):
            v.grad = 0.0
        root.backward()
    (xa, wa, ha, _, ra), (xb, wb, hb, _, rb) = graphs
    for a, b in ((xa, xb), (wa, wb), (ha, hb), (ra, rb)):
        assert same(a.grad, b.grad) and same(a.data, b.data), how


def test_a_python_rule_given_after_the_tape_is_compiled_runs_in_its_place():
    x = Value(3.0)
    h = x * x
    root = h + 1.0
    root.forward()
    root.backward()
    assert x.grad == 6.0
    calls = []

    def rule():
        calls.append(h.grad)
        x.grad += 100.0 * h.grad

    h._backward = rule  # the tape cannot run this: backward() takes the node sweep
    x.grad = 0.0
    root.forward()
    root.backward()
    assert calls == [1.0] and x.grad == 100.0
    del h._backward  # back to the op's own rule, and to the tape
    x.grad = 0.0
    root.backward()
    assert x.grad == 6.0


def test_a_replayed_roots_backward_inside_a_rule_over_its_nodes_refuses():
    # A sweep running a Python rule owns its nodes (invariant 10): a replayed root whose
    # graph shares them must not mix its adjoints in, tape or no tape.
    x = Value(2.0)
    shared = x * 3.0
    inner = shared + 1.0
    inner.forward()  # inner replays: its backward would run its tape
    outer = shared * 2.0
    errors = []

    def rule():
        try:
            inner.backward()
        except RuntimeError as error:
            errors.append(error)

    outer._backward = rule
    outer.backward()
    assert len(errors) == 1 and x.grad == 0.0 and shared.grad == 0.0


# ---- what replay re-runs: branches inside ops ----


def test_relu_branches_are_re_run():
    x = Value(1.5)
    hidden = (x * 2.0 - 1.0).relu()
    out = hidden * 3.0 + x
    out.backward()
    assert hidden.data == 2.0 and x.grad == 7.0

    x.data = -1.5  # the relu now takes its other branch
    assert out.forward() == -1.5
    assert hidden.data == 0.0
    x.grad = hidden.grad = out.grad = 0.0
    out.backward()
    assert x.grad == 1.0 and hidden.grad == 3.0


def test_intermediate_values_show_their_recomputed_data():
    w, x = Value(0.5), Value(2.0)
    score = w * x
    loss = (1.0 - score).relu()
    w.data = -3.0
    loss.forward()
    assert score.data == -6.0
    assert loss.data == 7.0


def test_forward_on_an_interior_node_replays_only_what_is_under_it():
    x = Value(1.0)
    middle = x * 2.0
    top = middle + 1.0
    x.data = 5.0
    assert middle.forward() == 10.0
    assert top.data == 3.0  # above middle: not replayed
    assert top.forward() == 11.0


def test_a_leaf_replays_to_itself():
    x = Value(4.0)
    x.data = 7.0
    assert x.forward() == 7.0


# ---- the limit: Python control flow that read .data is recorded, not re-run ----


def test_python_control_flow_is_not_re_run():
    # Like torch.jit.trace: the `if` ran once, while recording; replay follows the
    # branch that was taken then. Rebuilding with the new value takes the other branch.
    def f(x):
        if x.data > 0:
            return x * 2.0
        return x * 3.0

    x = Value(1.0)
    y = f(x)
    x.data = -1.0
    assert y.forward() == -2.0  # the recorded branch: x * 2
    assert f(Value(-1.0)).data == -3.0  # what running the Python again gives

    # A number read from .data while recording is a constant of the graph.
    a = Value(3.0)
    b = a * a.data
    a.data = 4.0
    assert b.forward() == 12.0 and (Value(4.0) * 4.0).data == 16.0


# ---- the cache of topological orders ----


def test_more_roots_than_the_cache_holds_replayed_alternately():
    rng = random.Random(0)
    program = [(k, n, [rng.randrange(1000) for _ in range(4)], rng.uniform(-2, 2)) for k, n in rng.sample(KINDS, 20)]
    n_roots = CACHE_SIZE + 5
    graphs = [build(program, [rng.uniform(-2, 2) for _ in range(3)]) for _ in range(n_roots)]
    for _ in range(3):
        for i in rng.sample(range(n_roots), n_roots):
            values = [rng.uniform(-2, 2) for _ in range(3)]
            replay_with(graphs[i], 3, values)
            assert_same_graphs(graphs[i], rebuild_with(program, values))


def test_a_dead_roots_id_reused_by_another_graph_gets_its_own_order():
    # Ids are reused from a free list: a cached order must die with its root, or the
    # next graph to get that id would replay someone else's order.
    seen, reused = set(), 0
    for i in range(40):
        x = Value(float(i))
        root = x * 2.0 if i % 2 else (x + 1.0).exp().log() - x
        reused += root._id in seen
        seen.add(root._id)
        x.data = 0.25
        expected = 0.5 if i % 2 else math.log(math.exp(1.25)) - 0.25
        assert root.forward() == expected
        del x, root
    assert reused, "no root id was reused: the test proves nothing"


def _settled_stats():
    gc.collect()
    return arena.stats()


def test_dropping_a_replayed_root_frees_its_graph_and_its_order():
    before = _settled_stats()
    x = Value(1.0)
    loss = nary_sum([(x * float(i)).relu() for i in range(200)])
    loss.forward()
    loss.backward()
    del x, loss
    after = _settled_stats()
    assert after["live_nodes"] == before["live_nodes"]

    # Held bytes settle: replaying and dropping again and again leaks nothing.
    for _ in range(30):
        x = Value(1.0)
        loss = nary_sum([(x * float(i)).relu() for i in range(200)])
        loss.forward()
        loss.backward()
        del x, loss
    assert _settled_stats()["bytes"] <= after["bytes"]


def test_a_replayed_root_keeps_nothing_alive_once_dropped_while_leaves_live_on():
    before = _settled_stats()["live_nodes"]
    leaves = [Value(float(i)) for i in range(10)]
    root = nary_sum([a * b for a, b in zip(leaves, leaves[1:])])
    root.forward()
    assert _settled_stats()["live_nodes"] > before + len(leaves)
    del root
    assert _settled_stats()["live_nodes"] == before + len(leaves)


def test_replay_under_detect_anomaly_names_the_node_that_went_non_finite():
    x = Value(1.0)
    y = x.log()
    z = y * 2.0
    x.data = -1.0
    with pyautograd.detect_anomaly():
        with pytest.raises(FloatingPointError, match="log"):
            z.forward()
    x.data = 2.0
    assert z.forward() == 2.0 * math.log(2.0)


# ---- the moons model: 100 steps of training, replayed vs rebuilt ----


def _moons(n=100, seed=5):
    """Two noisy half circles (micrograd's demo data, without scikit-learn)."""
    rng = random.Random(seed)
    X, y = [], []
    for i in range(n):
        t = math.pi * (i // 2) / (n // 2 - 1)
        x0, x1, label = (math.cos(t), math.sin(t), -1) if i % 2 else (1 - math.cos(t), 1 - math.sin(t) - 0.5, 1)
        X.append([x0 + rng.gauss(0, 0.1), x1 + rng.gauss(0, 0.1)])
        y.append(label)
    return X, y


def _demo_loss(model, X, y):
    """micrograd's demo loss, word for word, on pyautograd Values."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    alpha = 1e-4
    reg_loss = alpha * sum((p * p for p in model.parameters()))
    return data_loss + reg_loss, scores


def _train_moons(replay, use_optimizer, steps=100):
    from pyautograd.nn import MLP
    from pyautograd.optim import SGD

    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    X, y = _moons()
    params = model.parameters()
    opt = SGD(params, lr=1.0)
    history, total_loss = [], None
    for k in range(steps):
        if replay and total_loss is not None:
            total_loss.forward()
        else:
            total_loss, scores = _demo_loss(model, X, y)
        history.append((total_loss.data, [s.data for s in scores]))
        learning_rate = 1.0 - 0.9 * k / 100
        if use_optimizer:
            opt.zero_grad()
            total_loss.backward()
            opt.lr = learning_rate
            opt.step()
        else:
            model.zero_grad()
            total_loss.backward()
            for p in params:
                p.data -= learning_rate * p.grad
    return history, [p.data for p in params]


@pytest.mark.parametrize("use_optimizer", [False, True], ids=["micrograd_update", "optim_SGD"])
def test_moons_training_replayed_is_bitwise_the_rebuilt_one(use_optimizer):
    rebuilt_history, rebuilt_params = _train_moons(replay=False, use_optimizer=use_optimizer)
    replayed_history, replayed_params = _train_moons(replay=True, use_optimizer=use_optimizer)
    assert len(replayed_history) == 100
    for k, ((loss_a, scores_a), (loss_b, scores_b)) in enumerate(zip(replayed_history, rebuilt_history)):
        assert same(loss_a, loss_b), f"step {k}: loss {loss_a!r} != {loss_b!r}"
        assert all(map(same, scores_a, scores_b)), f"step {k}: scores differ"
    assert all(map(same, replayed_params, rebuilt_params))
    assert replayed_history[-1][0] < replayed_history[0][0] / 10  # it did train


def test_a_replayed_roots_backward_under_detect_anomaly_restores_every_grad():
    x = Value(2.0)
    y = x.log() * 3.0
    root = y + x
    root.forward()  # root now has a cached order (and its tape)
    root.backward()
    grads = (x.grad, y.grad, root.grad)
    x.data = 0.0  # log(0) is -inf: the gradients through it are not finite
    root.forward()
    with pyautograd.detect_anomaly():
        with pytest.raises(FloatingPointError, match="non-finite gradient in backward"):
            root.backward()
    assert (x.grad, y.grad, root.grad) == grads


# ---- layers: the tape's row slots and its forward by level ----


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.tuples(st.lists(st.integers(2, 18), max_size=2), st.integers(1, 5)).map(lambda t: t[0] + [t[1]]),
    nin=st.integers(1, 6),
    batch=st.integers(1, 9),
    shared_input=st.booleans(),
    loss_form=st.sampled_from(["sum", "python_sum", "hinge", "dot_params"]),
    seed=st.integers(0, 2**16),
)
def test_layers_replayed_over_steps_are_bitwise_rebuilt_ones(sizes, nin, batch, shared_input, loss_form, seed):
    # A layer's dot nodes hold rows (consecutive slots on the tape). Forward runs a
    # sample's neurons side by side when there are four or more (a block: lanes over
    # neurons, 16 at a time, then 4), else four samples' dots over the same weights side
    # by side. An input list given to the model twice shares its row, a layer's output
    # feeds the next layer's row. Replayed steps must be the rebuilt ones bit for bit.
    from pyautograd.nn import MLP

    rng = random.Random(seed)
    xs = [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(batch)]
    ys = [rng.choice([-1.0, 1.0]) for _ in range(batch)]

    def new_model():
        random.seed(seed)
        return MLP(nin, sizes)

    def loss_over(model):
        rows = [list(map(Value, x)) for x in xs]
        if shared_input:
            rows = rows + rows[:2]  # the same Values through the model again
        outs = [model(r) for r in rows]
        scores = [o if isinstance(o, Value) else o[0] for o in outs]
        params = model.parameters()
        inputs = [x for r in rows for x in r]
        if loss_form == "sum":
            return nary_sum([s * s for s in scores]), inputs
        if loss_form == "python_sum":
            return sum((s.tanh() for s in scores), 0.5), inputs
        if loss_form == "hinge":
            return nary_sum([(1 + -y * s).relu() for y, s in zip(ys * 2, scores)]) * (1.0 / len(scores)), inputs
        return nary_sum(scores) + 1e-3 * nary_dot(params, params), inputs

    def step(params, loss_and_inputs, k):
        loss, inputs = loss_and_inputs
        for v in params + inputs:
            v.grad = 0.0
        loss.backward()
        for p in params:
            p.data -= (0.1 + 0.01 * k) * p.grad
        return [loss.data] + [v.grad for v in params + inputs] + [p.data for p in params]

    replay_model, rebuild_model = new_model(), new_model()
    replay_loss = loss_over(replay_model)
    for k in range(4):
        if k:
            replay_loss[0].forward()
        replayed = step(replay_model.parameters(), replay_loss, k)
        rebuilt = step(rebuild_model.parameters(), loss_over(rebuild_model), k)
        assert all(map(same, replayed, rebuilt)), f"step {k}: replayed {replayed[:3]} rebuilt {rebuilt[:3]}"


@settings(max_examples=40, deadline=None)
@given(
    nin=st.integers(1, 9),
    nout=st.integers(2, 9),
    nonlin=st.booleans(),
    reused=st.integers(0, 8),
    consumer=st.sampled_from(["input", "weight", "output"]),
    seed=st.integers(0, 2**16),
)
def test_layer_dots_between_other_users_of_their_inputs_replay_bitwise(nin, nout, nonlin, reused, consumer, seed):
    # Backward runs a sample's dots over one input row as one group, at the place of
    # the last of them, unless an instruction between them touches an adjoint they
    # touch: here each neuron's output is multiplied by an input, a weight or the
    # previous output, so the products come between the dots in backward and add to
    # the same adjoints. Replayed, every grad must be the rebuilt one bit for bit.
    from pyautograd.nn import Layer

    rng = random.Random(seed)
    x_data = [rng.uniform(-2, 2) for _ in range(nin)]

    def new_layer():
        random.seed(seed)
        return Layer(nin, nout, nonlin=nonlin)

    def build(layer, xs):
        outs = layer(xs)
        weight = layer.neurons[0].w[reused % nin]
        terms = []
        for j, o in enumerate(outs):
            other = {"input": xs[reused % nin], "weight": weight, "output": outs[j - 1]}[consumer]
            terms.append(o * other)
        return nary_sum(terms)

    replay_layer, rebuild_layer = new_layer(), new_layer()
    replay_xs = list(map(Value, x_data))
    replay_loss = build(replay_layer, replay_xs)
    for k in range(3):
        if k:
            replay_loss.forward()
        rebuild_xs = list(map(Value, x_data))
        rebuilt_loss = build(rebuild_layer, rebuild_xs)
        replay_vars, rebuilt_vars = replay_layer.parameters() + replay_xs, rebuild_layer.parameters() + rebuild_xs
        for v in replay_vars + rebuilt_vars:
            v.grad = 0.0
        replay_loss.backward()
        rebuilt_loss.backward()
        assert same(replay_loss.data, rebuilt_loss.data)
        assert all(same(a.grad, b.grad) for a, b in zip(replay_vars, rebuilt_vars))
        for v in replay_vars + rebuilt_vars:  # a step, the same on both sides
            v.data -= 0.05 * (k + 1) * v.grad
        x_data = [v.data for v in rebuild_xs]


# ---- bench/c_baseline/moons.c: the limit the benchmark measures replay against ----


def test_the_hand_written_c_baseline_trains_like_replay(tmp_path):
    # The benchmark's C loop must do the same arithmetic as pyautograd, or its speed
    # means nothing: same losses and parameters, to the rounding of gradient sums.
    import importlib.util
    import pathlib
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler")
    path = pathlib.Path(__file__).resolve().parent.parent / "bench" / "bench_replay.py"
    spec = importlib.util.spec_from_file_location("bench_replay", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    X, y = bench.make_moons(100, noise=0.1, seed=bench.SEED)
    steps = 30
    losses, params, *_ = bench.replay_run(X, y, steps)
    from pyautograd.nn import MLP

    random.seed(bench.SEED)
    start = [p.data for p in MLP(2, bench.SIZES).parameters()]
    assert losses[-1] < losses[0] / 2  # it trained
    for flags in bench.C_FLAGS.values():  # -O3 -march=native may contract to FMAs: rounding only
        exe = bench.compile_c_baseline(str(tmp_path), flags)
        c_losses, c_params, seconds = bench.c_run(exe, X, y, start, steps, repeats=1)
        assert len(c_losses) == steps and len(c_params) == len(params) and seconds > 0
        for a, b in zip(c_losses + c_params, losses + params):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_forward_with_every_cached_tape_in_use_replays_uncached():
    # 16 backward calls running Python rules over replayed roots hold every slot of the
    # cache of tapes; a forward() then raised "invalid arguments". It replays on a tape
    # of its own now.
    results = []

    def nest(depth):
        x = Value(0.5)
        y = (x * x).tanh()
        z = y * 2.0

        def rule():
            y.grad += z.grad * 2.0
            if depth < 16:
                nest(depth + 1)
                return
            a = Value(1.0)
            b = a * 3.0 + 1.0
            a.data = 2.0
            b.forward()
            results.append(b.data)
            a.data = -1.0
            b.forward()
            results.append(b.data)

        z._backward = rule
        z.forward()  # cached: its slot is in use while its backward runs
        z.backward()
        assert x.grad == 2.0 * (1 - y.data**2) * 2 * x.data

    nest(1)
    assert results == [7.0, -2.0]
