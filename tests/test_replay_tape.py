"""Replay's compiled tape (csrc/tape_make.c compiles it, csrc/tape.c runs it): every node's
value and grad after root.forward() and root.backward() on a replayed root must be
bitwise what rebuilding the same graph from scratch with the same leaf values gives
(-0.0 vs +0.0, inf and nan included), with grads left by earlier backwards added as the
plain sweep adds them.

Covers the tape's recent paths that tests/test_replay.py reaches only lightly:
- forward blocks (a sample's neurons over one input row side by side, lanes over
  neurons 16, then 4 at a time, then the rest) for every layer width around those
  counts, and the rows that may not form blocks (computed weights, fewer than 4 dots);
- backward groups (a sample's row dots over one input row as one group) between other
  users of the row, the weights and the outputs, with outputs left unused, an input row
  that is a weight row or the biases, one row under two layers, prefixes of a row;
- the node passes around a run (the read skipped when ag_data_edits/ag_rule_edits say
  nothing changed): roots sharing layers, forwards and backwards interleaved, data
  written by the setter, the optimizers and by hand on interior nodes, checked against
  an unreplayed twin graph given the same node data;
- the cache of tapes: more replayed roots than it holds, roots dying and ids reused;
- the compiler's radix sort (csrc/key_sort.c) on graphs whose ids, slots and levels
  need more than 16 bits (stress).
Every node under a root is compared: walk() lists them in one canonical order (inputs
in their order), so a replayed graph and its rebuild line up node by node.
"""

import gc
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replay import KINDS, same
from test_replay import build as build_program

import pyautograd
from pyautograd.engine import Value
from pyautograd.nn import MLP, Layer
from pyautograd.optim import SGD, Adam

CACHE_SIZE = 16  # AG_ORDER_CACHE_SIZE in csrc/sweep.c

# Earlier grads given to every node before a backward, by position in walk(): -0.0 (the
# tape must keep a -0.0 adjoint and turn an untouched -0.0 into +0.0), inf and nan too.
EARLIER = [0.0, -0.0, 1.5, -0.0, math.inf, 0.0, -2.0, math.nan, 0.25]


def walk(*roots):
    """Every node under the roots, inputs before users, in the order of each node's
    inputs: the same list, node for node, for two graphs built by the same code."""
    seen, out = set(), []
    for root in roots:
        stack = [(root, False)]
        while stack:
            v, done = stack.pop()
            if done:
                out.append(v)
                continue
            if v._id in seen:
                continue
            seen.add(v._id)
            stack.append((v, True))
            stack.extend((c, False) for c in reversed(v._inputs) if c._id not in seen)
    return out


def assert_bitwise(replayed, rebuilt, what=""):
    assert len(replayed) == len(rebuilt), what
    for i, (a, b) in enumerate(zip(replayed, rebuilt)):
        assert a._op == b._op, f"{what} node {i}: op {a._op!r} != {b._op!r}"
        assert same(a.data, b.data), f"{what} node {i} ({a._op!r}): data {a.data!r} != {b.data!r}"
        assert same(a.grad, b.grad), f"{what} node {i} ({a._op!r}): grad {a.grad!r} != {b.grad!r}"


def give_earlier_grads(nodes, shift=0):
    for i, v in enumerate(nodes):
        v.grad = EARLIER[(i + shift) % len(EARLIER)]


def layer_from(W, B, nonlin=True):
    """A Layer whose neurons hold the given weight Values (rows of W) and biases."""
    layer = Layer(len(W[0]), len(W), nonlin=nonlin)
    for neuron, row, b in zip(layer.neurons, W, B):
        for k, w in enumerate(row):
            neuron.w[k] = w
        neuron.b = b
    return layer


def as_list(out):
    return out if isinstance(out, list) else [out]


def replay_against_rebuilds(build, n_leaves, seed, steps=3, backwards=2):
    """build(values) -> (root, leaves). One graph is built once and replayed over
    `steps` sets of leaf values (the last with inf, nan, -0.0 and 0.0), each followed by
    `backwards` backwards from the same earlier grads; each step is checked node by node
    against a graph rebuilt from the same values, given the same earlier grads."""
    rng = random.Random(seed)
    root, leaves = build([rng.uniform(-2, 2) for _ in range(n_leaves)])
    assert len(leaves) == n_leaves
    root.backward()  # grads everywhere before the first replay
    for step in range(steps):
        values = [rng.uniform(-2, 2) for _ in range(n_leaves)]
        if step == steps - 1:
            for k, special in enumerate([math.inf, -0.0, 0.0, math.nan][: max(1, n_leaves - 1)]):
                values[(k * 7919) % n_leaves] = special
        for leaf, x in zip(leaves, values):
            leaf.data = x
        assert same(root.forward(), root.data)
        replayed = walk(root)
        give_earlier_grads(replayed, step)
        for _ in range(backwards):
            root.backward()
        rebuilt_root, _ = build(values)
        rebuilt = walk(rebuilt_root)
        give_earlier_grads(rebuilt, step)
        for _ in range(backwards):
            rebuilt_root.backward()
        assert_bitwise(replayed, rebuilt, f"step {step}")


# ---- every layer width around the block lanes (16, 4, rest), every usage ----

NINS = [1, 2, 3, 16, 17]
NOUTS = [1, 3, 4, 5, 15, 16, 17, 31, 33]


def _flat(rows):
    return [v for row in rows for v in row]


def _params(it, nin, nout):
    W = [[Value(next(it)) for _ in range(nin)] for _ in range(nout)]
    B = [Value(next(it)) for _ in range(nout)]
    return W, B


def _samples_over_one_layer(nin, nout):
    """Four samples through one layer; outputs used by tanh, by products with the
    samples' inputs and a weight, every third output unused."""

    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        rows = [[Value(next(it)) for _ in range(nin)] for _ in range(4)]
        layer = layer_from(W, B, nonlin=nout % 2 == 1)
        terms = []
        for s, row in enumerate(rows):
            for j, o in enumerate(as_list(layer(row))):
                if j % 3 == 2 and nout > 1:
                    continue
                terms.append(o * row[j % nin] if s % 2 else o.tanh())
        terms.append(terms[0] * W[0][0])
        return pyautograd.sum(terms), _flat(W) + B + _flat(rows)

    return build, nin * nout + nout + 4 * nin


def _input_row_is_a_weight_row(nin, nout):
    """The layer applied to one neuron's own weight row (dot(p, p) for that neuron),
    and to its biases' prefix when there are enough of them, then to fresh inputs."""

    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        xs = [Value(next(it)) for _ in range(nin)]
        layer = layer_from(W, B)
        own = as_list(layer(W[nout // 2]))
        biases = as_list(layer(B)) if nout >= nin else []
        fresh = as_list(layer(xs))
        terms = own + [a * b for a, b in zip(own, fresh)] + [b.exp() for b in biases]
        return pyautograd.sum(terms), _flat(W) + B + xs

    return build, nin * nout + nout + nin


def _one_row_under_two_layers(nin, nout):
    """Two layers over the same input row (one block/group over both layers' neurons),
    the first again over the doubled row; the row is used by other ops too."""

    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        W2, B2 = _params(it, nin, nout)
        xs = [Value(next(it)) for _ in range(nin)]
        first, second = layer_from(W, B), layer_from(W2, B2, nonlin=False)
        a, b = as_list(first(xs)), as_list(second(xs))
        c = as_list(first([x * 2.0 for x in xs]))
        terms = [p * q for p, q in zip(a, b)] + [o * xs[0] for o in c] + [xs[-1].relu()]
        return pyautograd.sum(terms), _flat(W) + B + _flat(W2) + B2 + xs

    return build, 2 * (nin * nout + nout) + nin


def _computed_weights(nin, nout):
    """Weights computed from parameters (no blocks: four samples side by side over the
    same weights instead), five samples."""

    def build(values):
        it = iter(values)
        P, B = _params(it, nin, nout)
        W = [[p * 1.5 for p in row] for row in P]
        rows = [[Value(next(it)) for _ in range(nin)] for _ in range(5)]
        layer = layer_from(W, B, nonlin=False)
        terms = [o.relu() for row in rows for o in as_list(layer(row))] + [W[0][0] * rows[0][0]]
        return pyautograd.sum(terms), _flat(P) + B + _flat(rows)

    return build, nin * nout + nout + 5 * nin


def _two_layers_with_hidden_users(nin, nout):
    """A layer of nout into a layer of 3, hidden outputs also multiplied together,
    the last output unused; three samples."""

    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        W2, B2 = _params(it, nout, 3)
        rows = [[Value(next(it)) for _ in range(nin)] for _ in range(3)]
        first, second = layer_from(W, B), layer_from(W2, B2, nonlin=False)
        terms = []
        for row in rows:
            hidden = as_list(first(row))
            terms += as_list(second(hidden))[:2] + [h * hidden[0] for h in hidden[::2]]
        return pyautograd.sum(terms), _flat(W) + B + _flat(W2) + B2 + _flat(rows)

    return build, nin * nout + nout + 3 * nout + 3 + 3 * nin


USAGES = [
    _samples_over_one_layer,
    _input_row_is_a_weight_row,
    _one_row_under_two_layers,
    _computed_weights,
    _two_layers_with_hidden_users,
]


@pytest.mark.parametrize("usage", USAGES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("nout", NOUTS)
@pytest.mark.parametrize("nin", NINS)
def test_layer_widths_around_the_lanes_replay_bitwise(nin, nout, usage):
    build, n_leaves = usage(nin, nout)
    replay_against_rebuilds(build, n_leaves, seed=1000 * nin + nout)


# ---- random wirings of layers (hypothesis) ----

# A wiring is a list of applications (layer, row); a row is drawn from what exists:
# fresh leaves, a layer's outputs, a weight row, the biases, a computed row, or a longer
# row (a layer takes its first nin: a prefix). Then some outputs meet other nodes.
applications = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["fresh", "outputs", "weights", "biases", "computed", "any"]),
        st.integers(0, 10**6),
    ),
    min_size=1,
    max_size=7,
)
layer_shapes = st.lists(
    st.tuples(st.sampled_from(NINS[:4]), st.sampled_from(NOUTS[:8]), st.booleans(), st.booleans()),
    min_size=3,
    max_size=3,
)


def wired_builder(shapes, wiring, uses, n_fresh=3):
    """(build, n_leaves) for a random wiring. Every layer has nin + nout * (nin + 1)
    leaves (its weights, biases and one fresh input row); extra fresh rows come from a
    fixed pool of n_fresh rows per layer."""
    n_leaves = sum(nout * nin + nout + n_fresh * nin for nin, nout, _, _ in shapes)

    def build(values):
        it = iter(values)
        leaves, layers, rows, fresh = [], [], [], []
        for nin, nout, nonlin, computed in shapes:
            W, B = _params(it, nin, nout)
            leaves += _flat(W) + B
            used = [[w * 0.5 for w in row] for row in W] if computed else W
            layers.append((layer_from(used, B, nonlin), W, B))
            pool = [[Value(next(it)) for _ in range(nin)] for _ in range(n_fresh)]
            leaves += _flat(pool)
            fresh.append(pool)
            rows += pool
        outputs = []
        for which, source, pick in wiring:
            layer, W, B = layers[which]
            nin = shapes[which][0]
            wide = [r for r in rows if len(r) >= nin]
            if source == "fresh":
                row = fresh[which][pick % n_fresh]
            elif source == "weights":
                row = W[pick % len(W)]
            elif source == "biases" and len(B) >= nin:
                row = B
            elif source == "computed":
                row = [x.tanh() for x in wide[pick % len(wide)]] if wide else fresh[which][0]
            elif source == "outputs" and [o for o in outputs if len(o) >= nin]:
                candidates = [o for o in outputs if len(o) >= nin]
                row = candidates[pick % len(candidates)]
            else:
                row = wide[pick % len(wide)] if wide else fresh[which][0]
            out = as_list(layer(row))
            outputs.append(out)
            rows.append(out)
        every = [v for out in outputs for v in out]
        terms = []
        for k, (a, b, op) in enumerate(uses):
            x = every[a % len(every)]
            y = every[b % len(every)] if k % 2 else leaves[b % len(leaves)]  # an output, or a leaf
            if op == "mul":
                terms.append(x * y)
            elif op == "add":
                terms.append(x + y)
            elif op == "relu":
                terms.append((x - y).relu())
            else:
                terms.append(x)
        return pyautograd.sum(terms + every[:: 3 + len(uses) % 3]), leaves

    return build, n_leaves


@settings(max_examples=60, deadline=None)
@given(
    shapes=layer_shapes,
    wiring=applications,
    uses=st.lists(
        st.tuples(st.integers(0, 999), st.integers(0, 999), st.sampled_from(["mul", "add", "relu", "self"])),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**16),
)
def test_random_wirings_of_layers_replay_bitwise(shapes, wiring, uses, seed):
    build, n_leaves = wired_builder(shapes, wiring, uses)
    replay_against_rebuilds(build, n_leaves, seed, steps=2)


# ---- values against pure Python arithmetic ----


@pytest.mark.parametrize("nout", [4, 5, 16, 17, 33])
def test_block_values_are_micrograds_arithmetic(nout):
    # A block's lanes must each compute bias + w0*x0 + w1*x1 + ... left to right, as
    # micrograd's sum((wi*xi for ...), b) does; each weight's grad is the one product
    # g * x (one contribution), so it too is exact.
    nin, batch = 17, 3
    rng = random.Random(nout)
    W = [[Value(rng.uniform(-1, 1)) for _ in range(nin)] for _ in range(nout)]
    B = [Value(rng.uniform(-1, 1)) for _ in range(nout)]
    rows = [[Value(rng.uniform(-1, 1)) for _ in range(nin)] for _ in range(batch)]
    layer = layer_from(W, B, nonlin=False)
    outs = [layer(row) for row in rows]
    root = pyautograd.sum([o * float(j + 1) for out in outs for j, o in enumerate(out)])
    for _ in range(3):
        for v in _flat(W) + B + _flat(rows):
            v.data = rng.uniform(-3, 3)
            v.grad = 0.0
        root.forward()
        root.backward()
        for s, row in enumerate(rows):
            for j in range(nout):
                expected = B[j].data  # left to right, one rounding per step (CPython >= 3.12's
                for k in range(nin):  # sum() of floats compensates its rounding: not this)
                    expected = expected + W[j][k].data * row[k].data
                assert same(outs[s][j].data, expected), (s, j)
        for j in range(nout):
            for k in range(nin):
                expected = 0.0
                for row in rows:  # the samples in the order the sweep reaches them
                    expected += float(j + 1) * row[k].data
                assert W[j][k].grad == pytest.approx(expected, rel=1e-12, abs=1e-300)
            assert B[j].grad == float((j + 1) * batch)


# ---- relu at exactly zero, signed zeros through the blocks ----


def test_relu_at_exactly_zero_and_signed_zero_dots_replay_bitwise():
    # Dots whose value is exactly +0.0 or -0.0 (zero weights, -0.0 bias) feed relus at
    # their branch point; the sum in the block's lanes must keep the zero's sign.
    nin, nout = 3, 17

    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        rows = [[Value(next(it)) for _ in range(nin)] for _ in range(2)]
        layer = layer_from(W, B)
        outs = [as_list(layer(row)) for row in rows]
        dots = [o._inputs[0] for out in outs for o in out]
        terms = [o * 3.0 for out in outs for o in out] + [d * -1.0 for d in dots] + [(d * d).sqrt() for d in dots]
        return pyautograd.sum(terms), _flat(W) + B + _flat(rows)

    n = nin * nout + nout + 2 * nin
    root, leaves = build([1.0] * n)
    for pattern in ([0.0, -0.0], [-0.0, -0.0], [-0.0, 0.0, 1e-320, -1e-320], [0.0]):
        values = [pattern[i % len(pattern)] for i in range(n)]
        for leaf, x in zip(leaves, values):
            leaf.data = x
        root.forward()
        replayed = walk(root)
        give_earlier_grads(replayed)
        root.backward()
        rebuilt_root, _ = build(values)
        rebuilt = walk(rebuilt_root)
        give_earlier_grads(rebuilt)
        rebuilt_root.backward()
        assert_bitwise(replayed, rebuilt, str(pattern))


# ---- roots sharing layers: forwards, backwards and data writes interleaved ----


def _model_roots(model, rows):
    """Root A over every sample, root B over the first layer of the first sample and
    the first sample's score: they share the first layer's dots."""
    scores = [model(row) for row in rows]
    scores = [s if isinstance(s, Value) else s[-1] for s in scores]
    hidden = as_list(model.layers[0](rows[0]))
    return [pyautograd.sum([s * s for s in scores]), pyautograd.sum([h.tanh() for h in hidden]) + scores[0]]


def _backward_against_twin(roots, twin_roots, which):
    # The twin is never replayed: its backward is the plain sweep, over whatever data
    # its nodes hold, and it is given every node's data and grad first.
    nodes, twins = walk(*roots), walk(*twin_roots)
    assert len(nodes) == len(twins)
    for a, b in zip(nodes, twins):
        b.data = a.data
        b.grad = a.grad
    roots[which].backward()
    twin_roots[which].backward()
    assert_bitwise(nodes, twins, f"backward of root {which}")


@settings(max_examples=60, deadline=None)
@given(
    nin=st.sampled_from(NINS),
    sizes=st.lists(st.sampled_from(NOUTS), min_size=1, max_size=3),
    events=st.lists(
        st.sampled_from(
            ["forward A", "forward B", "backward A", "backward B", "optimizer", "setter", "inputs", "interior", "zero"]
        ),
        min_size=3,
        max_size=14,
    ),
    adam=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_roots_sharing_layers_interleaved_back_like_an_unreplayed_twin(nin, sizes, events, adam, seed):
    # The tape skips reading the nodes before a backward when ag_data_edits says nothing
    # wrote data since its last run: a forward of the other root, an optimizer's step, the
    # setter on a parameter, an input or an interior node must all be seen.
    sizes = [s if s > 1 or i == len(sizes) - 1 else 2 for i, s in enumerate(sizes)]
    rng = random.Random(seed)
    random.seed(seed)
    model = MLP(nin, sizes)
    random.seed(seed)
    twin = MLP(nin, sizes)
    data = [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(4)]
    rows = [[Value(x) for x in row] for row in data]
    roots = _model_roots(model, rows)
    twin_roots = _model_roots(twin, [[Value(x) for x in row] for row in data])
    params = model.parameters()
    optimizer = Adam(params, lr=0.05) if adam else SGD(params, lr=0.1, momentum=0.9)
    roots[0].forward()  # a tape for A before anything else
    for event in events + ["backward A", "forward B", "backward B", "backward A"]:
        if event.startswith("forward"):
            root = roots[event.endswith("B")]
            assert same(root.forward(), root.data)
        elif event.startswith("backward"):
            _backward_against_twin(roots, twin_roots, int(event.endswith("B")))
        elif event == "optimizer":
            optimizer.step()
        elif event == "setter":
            for p in params[:: rng.randint(1, 4)]:
                p.data = rng.choice([rng.uniform(-1, 1), -0.0, 0.0])
        elif event == "inputs":
            for row in rows:
                row[0].data = rng.uniform(-2, 2)
        elif event == "interior":
            roots[1]._inputs[0].data = -0.0  # the sum of tanh's, by hand
            roots[0]._inputs[0]._inputs[0].data = math.inf  # a score's square
        else:
            model.zero_grad()


def test_a_backward_right_after_an_optimizer_step_reads_the_new_weights():
    # forward, backward, step, backward (no forward): the second backward runs at the
    # stepped weights (the tape must not reuse the values of its forward), as the sweep
    # over a graph holding the same data does.
    for make_optimizer in (lambda p: SGD(p, lr=0.5), lambda p: Adam(p, lr=0.5)):
        random.seed(3)
        model = MLP(3, [17, 5, 1])
        random.seed(3)
        twin = MLP(3, [17, 5, 1])
        rows = [[Value(0.5 * k - i) for k in range(3)] for i in range(5)]
        twin_rows = [[Value(0.5 * k - i) for k in range(3)] for i in range(5)]
        root = pyautograd.sum([model(r) * model(r) for r in rows])
        twin_root = pyautograd.sum([twin(r) * twin(r) for r in twin_rows])
        root.forward()
        root.backward()
        make_optimizer(model.parameters()).step()
        _backward_against_twin([root], [twin_root], 0)


# ---- the cache of tapes: more roots than it holds, dead roots' ids reused ----


def _hinge_over_mlp(nin, sizes, batch, seed):
    """(build, n_leaves): build(values) makes an MLP (its parameters given values, then a
    batch of input rows) and the sum of its hinge losses; returns (root, leaves)."""

    def build(values):
        it = iter(values)
        random.seed(seed)
        model = MLP(nin, sizes)
        params = model.parameters()
        for p in params:
            p.data = next(it)
        rows = [[Value(next(it)) for _ in range(nin)] for _ in range(batch)]
        return pyautograd.sum([(1.0 + -model(r)).relu() for r in rows]), params + _flat(rows)

    return build, len(MLP(nin, sizes).parameters()) + batch * nin


def test_more_replayed_layer_roots_than_the_cache_holds_alternating_with_deaths():
    rng = random.Random(7)
    build, n_leaves = _hinge_over_mlp(3, [17, 4, 1], batch=3, seed=11)
    graphs = [build([rng.uniform(-1, 1) for _ in range(n_leaves)]) for _ in range(CACHE_SIZE + 4)]
    seen_ids, reused = {g[0]._id for g in graphs}, 0
    for _ in range(6):
        for i in rng.sample(range(len(graphs)), len(graphs)):
            root, leaves = graphs[i]
            values = [rng.uniform(-1, 1) for _ in range(n_leaves)]
            for leaf, x in zip(leaves, values):
                leaf.data = x
            root.forward()
            replayed = walk(root)
            give_earlier_grads(replayed, i)
            root.backward()
            rebuilt_root, _ = build(values)
            rebuilt = walk(rebuilt_root)
            give_earlier_grads(rebuilt, i)
            rebuilt_root.backward()
            assert_bitwise(replayed, rebuilt, f"graph {i}")
        for i in rng.sample(range(len(graphs)), 3):  # three roots die, three new ones
            graphs[i] = None
            gc.collect()
            graphs[i] = build([rng.uniform(-1, 1) for _ in range(n_leaves)])
            reused += graphs[i][0]._id in seen_ids
            seen_ids.add(graphs[i][0]._id)
    assert reused, "no root id was reused: the deaths prove nothing"


# ---- big graphs: keys past 16 bits in the compiler's radix sort ----


def _chain(values):
    x = Value(values[0])
    v = x
    for k in range(100_000):
        v = (v * 0.5 + x).tanh() if k % 3 == 0 else v + (x if k % 3 == 1 else 0.25)
    return v, [x]


@pytest.mark.stress
def test_a_chain_of_100k_levels_replays_bitwise():
    replay_against_rebuilds(_chain, 1, seed=5, steps=2, backwards=1)


@pytest.mark.stress
def test_a_random_program_of_200k_nodes_replays_bitwise():
    # test_replay's random programs, at a size where ids, slots and positions pass 2^16
    rng = random.Random(9)
    program = [
        (*rng.choice(KINDS), [rng.randrange(10**6) for _ in range(4)], rng.uniform(-2, 2)) for _ in range(140_000)
    ]
    n = 50

    def build(values):
        nodes = build_program(program, values)
        return nodes[-1], nodes[:n]

    replay_against_rebuilds(build, n, seed=9, steps=2, backwards=1)


def test_a_batch_of_2000_samples_through_an_mlp_replays_bitwise():
    # ~130k nodes, 66k row dots over 6k input rows: the blocks' and groups' sorts by
    # input row slot and level need all their key bytes.
    build, n_leaves = _hinge_over_mlp(2, [16, 16, 1], batch=2000, seed=2)
    replay_against_rebuilds(build, n_leaves, seed=2, steps=2, backwards=1)


# ---- row dots that are not layers: pyautograd.dot over stretches of consecutive leaves ----

stretches = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.integers(0, 40),
        st.integers(1, 9),
        st.integers(-1, 45),
        st.sampled_from(["plain", "relu", "times_a_leaf"]),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=150, deadline=None)
@given(stretches, st.integers(0, 2**16), st.booleans())
def test_dots_over_overlapping_stretches_of_leaves_replay_bitwise(dots, seed, reversed_leaves):
    # Leaves made one after another get consecutive slots, so pyautograd.dot over two
    # stretches of them is a row dot too: weights and xs that are the same stretch
    # (dot(p, p)), overlap (refused: the adjoints would alias), or lie apart; a bias
    # inside a stretch or shared by dots over one row (no group may hold both); many
    # dots over one row (blocks, groups), weights overlapping between dots.
    n = 50

    def build(values):
        leaves = [Value(x) for x in values]
        order = leaves[::-1] if reversed_leaves else leaves
        terms = [leaves[0]]
        for a, b, length, c, use in dots:
            m = min(length, n - a, n - b)
            d = pyautograd.dot(order[a : a + m], order[b : b + m], order[c] if c >= 0 else 0)
            terms.append(d.relu() if use == "relu" else d * order[(a + b) % n] if use == "times_a_leaf" else d)
        return pyautograd.sum(terms), leaves

    replay_against_rebuilds(build, n, seed, steps=2)


@pytest.mark.parametrize("nout", [4, 5, 16, 17, 33])
@pytest.mark.parametrize("nin", [2, 3, 16, 17])
def test_tied_weights_shared_biases_and_repeated_inputs_replay_bitwise(nin, nout):
    # A weight shared by several neurons, a bias used as another neuron's weight, two
    # neurons with one bias: their rows cannot all get consecutive slots, and the dots
    # that lose theirs go the generic way beside the others' block. Inputs with a
    # repeated Value, a number among them, and the same row twice through the layer.
    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        xs = [Value(next(it)) for _ in range(nin)]
        tied = [row[:] for row in W]
        for j in range(1, nout, 3):
            tied[j][j % nin] = W[0][0]
        tied[2][0] = B[1]
        biases = B[:]
        biases[3] = B[0]
        layer = layer_from(tied, biases)
        repeated = [xs[0]] + xs[: nin - 1]
        with_number = [1.5] + xs[1:]
        outs = [o for row in (xs, repeated, with_number, xs) for o in as_list(layer(row))]
        return pyautograd.sum([o * o for o in outs] + [o * xs[0] for o in outs[::5]]), _flat(W) + B + xs

    replay_against_rebuilds(build, nin * nout + nout + nin, seed=nin + nout)


@pytest.mark.parametrize("nout", [2, 4, 5, 16])
@pytest.mark.parametrize("nin", [2, 3, 16, 17])
def test_a_bias_that_is_also_a_weight_of_its_neuron_replays_bitwise(nin, nout):
    # A group of dots adds their biases' shares first and the weights' after, where the
    # sweep adds a dot's bias last; a bias that is also one of the dot's own weights once
    # got its sums in the other order, a bit off in about a third of seeds.
    def build(values):
        it = iter(values)
        W, B = _params(it, nin, nout)
        samples = [[Value(next(it)) for _ in range(nin)] for _ in range(3)]
        biases = B[:]
        biases[0] = W[0][nin - 1]
        biases[nout - 1] = W[nout - 1][0]
        layer = layer_from(W, biases, nonlin=False)
        outs = [o for xs in samples for o in as_list(layer(xs))]
        return pyautograd.sum([o * o for o in outs]), _flat(W) + B + [x for xs in samples for x in xs]

    for seed in range(4):
        replay_against_rebuilds(build, nin * nout + nout + 3 * nin, seed=seed)
