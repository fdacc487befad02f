"""pyautograd.viz: DOT structure, escaping, the max_nodes cap, summary numbers, the notebook
fallback, and pictures rendered by the real `dot` program (required in CI)."""

import os
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pyautograd
from pyautograd import viz
from pyautograd.engine import Value

from conftest import require

REPO = Path(__file__).resolve().parent.parent


# ---- helpers: the seed graph, a reference walk over _prev, a tiny DOT reader ----


def seed_graph():
    """The README's example, labelled, after backward()."""
    x = Value(2.0, label="x")
    y = Value(3.0, label="y")
    z = x * y + y + x.tanh()
    z.label = "z"
    z.backward()
    return x, y, z


def reachable(root):
    """Every Value under root, breadth-first through the public _prev."""
    order, seen = [root], {root}
    for v in order:
        for child in v._prev:
            if child not in seen:
                seen.add(child)
                order.append(child)
    return order


def longest_path(root):
    """Edges on the longest path from root to a leaf, with an explicit stack."""
    height, stack = {}, [root]
    while stack:
        v = stack[-1]
        if v in height:
            stack.pop()
            continue
        pending = [c for c in v._prev if c not in height]
        if pending:
            stack.extend(pending)
            continue
        height[v] = max((height[c] + 1 for c in v._prev), default=0)
        stack.pop()
    return height[root]


def record_text(v):
    """The record the lecture's draw_dot shows for v."""
    return f"{{ {v.label} | data {v.data:.4f} | grad {v.grad:.4f} }}"


ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
NODE = re.compile(r"^\t(\w+) \[(.*)\]$")
EDGE = re.compile(r"^\t(\w+) -> (\w+)(?: \[(.*)\])?$")


def parse_dot(source):
    """{name: attrs} and [(tail, head, attrs)] from to_dot's one-statement-a-line output."""
    assert source.startswith("digraph {\n") and source.endswith("}\n")
    nodes, edges = {}, []
    for line in source.splitlines()[1:-1]:
        edge = EDGE.match(line)
        if edge:
            edges.append((edge[1], edge[2], dict(ATTR.findall(edge[3] or ""))))
            continue
        node = NODE.match(line)
        assert node, f"unexpected DOT line {line!r}"
        attrs = {k: v[1:-1] if v.startswith('"') else v for k, v in ATTR.findall(node[2])}
        if node[1] != "graph":
            nodes[node[1]] = attrs
    return nodes, edges


def records(nodes):
    return {name: a["label"] for name, a in nodes.items() if a.get("shape") == "record"}


def name(v):
    return f"v{v._id}"


def require_dot():
    """graphviz and its dot program: skipped locally when missing, a failure in CI."""
    graphviz = require("graphviz", "PYAUTOGRAD_REQUIRE_DOT")
    if shutil.which("dot") is None:
        if os.environ.get("PYAUTOGRAD_REQUIRE_DOT"):
            pytest.fail("PYAUTOGRAD_REQUIRE_DOT is set but Graphviz's `dot` is not on PATH")
        pytest.skip("Graphviz's `dot` program is not installed")
    return graphviz


def svg_texts(svg):
    """The text of every <text> element of an SVG, as the picture shows it."""
    root = ET.fromstring(svg.encode() if isinstance(svg, str) else svg)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


# ---- to_dot: structure ----


def test_seed_graph_has_a_record_per_value_and_a_node_per_op():
    x, y, z = seed_graph()
    values = reachable(z)
    nodes, _ = parse_dot(viz.to_dot(z))
    assert records(nodes) == {name(v): record_text(v) for v in values}
    ops = {n: a["label"] for n, a in nodes.items() if n.endswith("_op")}
    assert ops == {f"{name(v)}_op": v._op for v in values if v._op}
    assert sorted(ops.values()) == sorted(["+", "+", "*", "tanh"])
    assert "{ x | data 2.0000 | grad " in records(nodes)[name(x)]


def test_edges_run_from_inputs_through_the_op_to_the_result():
    _, _, z = seed_graph()
    _, edges = parse_dot(viz.to_dot(z))
    expected = set()
    for v in reachable(z):
        if v._op:
            expected.add((f"{name(v)}_op", name(v)))
            expected |= {(name(child), f"{name(v)}_op") for child in v._prev}
    assert {(tail, head) for tail, head, _ in edges} == expected


def test_rankdir_and_lecture_style_header():
    _, _, z = seed_graph()
    assert viz.to_dot(z).splitlines()[1] == "\tgraph [rankdir=LR]"
    assert viz.to_dot(z, rankdir="TB").splitlines()[1] == "\tgraph [rankdir=TB]"


def test_a_leaf_alone_is_one_record_and_no_edges():
    x = Value(-1.5, label="lonely")
    nodes, edges = parse_dot(viz.to_dot(x))
    assert records(nodes) == {name(x): record_text(x)} and edges == []


def test_an_input_used_twice_is_one_edge_marked_with_the_count():
    x = Value(1.25, label="x")
    y = x * x
    _, edges = parse_dot(viz.to_dot(y))
    into_op = [(t, a) for t, h, a in edges if h == f"{name(y)}_op"]
    assert into_op == [(name(x), {"label": '"×2"'})]


def test_op_text_is_what__op_shows():
    x = Value(3.0, label="x")
    e = Value(2.0, label="e")
    graphs = [
        x**2,
        x**0.5,
        x**e,
        -x,
        x.relu(),
        x.exp(),
        x.log(),
        x.sigmoid(),
        x / e,
        x - e,
        pyautograd.sum([x, e, 1.0]),
        Value(1.0, (x, e), "my op"),
    ]
    for g in graphs:
        nodes, _ = parse_dot(viz.to_dot(g))
        assert nodes[f"{name(g)}_op"]["label"] == g._op.replace('"', '\\"')


def test_a_hand_built_node_without_op_text_gets_its_edges_directly():
    x, y = Value(1.0, label="x"), Value(2.0, label="y")
    g = Value(5.0, (x, y), label="g")
    nodes, edges = parse_dot(viz.to_dot(g))
    assert f"{name(g)}_op" not in nodes
    assert {(t, h) for t, h, _ in edges} == {(name(x), name(g)), (name(y), name(g))}


def test_numbers_keep_the_lecture_format_and_stay_short():
    def shown(v):
        (label,) = records(parse_dot(viz.to_dot(v))[0]).values()
        data = label.split("|")[1].strip()
        assert data.startswith("data ") and len(data) < 20
        return float(data[len("data ") :])

    for x in (1.5e12, -3.25e200, 0.5, -2.5e-7):
        assert shown(Value(x)) == pytest.approx(x, rel=1e-4, abs=1e-4)
    assert shown(Value(float("inf"))) == float("inf")
    assert shown(Value(float("nan"))) != shown(Value(float("nan")))  # nan
    tiny = Value(-2.5e-7, label="tiny")
    assert records(parse_dot(viz.to_dot(tiny))[0])[name(tiny)] == record_text(tiny)


@pytest.mark.parametrize(
    "label, escaped",
    [
        ('say "hi"', 'say \\"hi\\"'),
        ("{a|b}", "\\{a\\|b\\}"),
        ("<port>", "\\<port\\>"),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ("bell\x07", "bell\\\\x07"),
        ("αβ ∂z/∂x", "&#945;&#946; &#8706;z/&#8706;x"),
        ("a&b &lt;", "a&#38;b &#38;lt;"),
        ("\U0001f600 é", "\U0001f600 &#233;"),  # past U+FFFF: as it is (Graphviz garbles its reference)
    ],
)
def test_labels_are_escaped_for_dot(label, escaped):
    v = Value(1.0, label=label)
    line = next(l for l in viz.to_dot(v).splitlines() if l.startswith(f"\t{name(v)} "))
    assert line == f'\t{name(v)} [label="{{ {escaped} | data 1.0000 | grad 0.0000 }}" shape=record]'


def test_arguments_are_checked():
    x = Value(1.0)
    with pytest.raises(TypeError, match="Value"):
        viz.to_dot(1.0)
    with pytest.raises(TypeError, match="Value"):
        viz.summary("x")
    with pytest.raises(ValueError, match="rankdir"):
        viz.to_dot(x, rankdir="sideways")
    with pytest.raises(TypeError, match="rankdir"):
        viz.to_dot(x, rankdir=5)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_nodes"):
            viz.to_dot(x, max_nodes=bad)
    for bad in (2.5, True, "10"):  # a wrong type is a TypeError (docs/errors.md)
        with pytest.raises(TypeError, match="max_nodes"):
            viz.to_dot(x, max_nodes=bad)


def test_viz_imports_without_graphviz(tmp_path):
    code = "import sys, pyautograd.viz; print('graphviz' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )  # not the repo root, whose pyautograd/ has no _ag
    assert out.stdout.strip() == "False"


# ---- random graphs: to_dot and summary against the reference walk ----


def random_graph(seed, size=60):
    """A random DAG over binary and unary ops, with garbage made in between so that
    freed ids are reused and ids stop following creation order."""
    rng = random.Random(seed)
    pool = [Value(rng.uniform(0.5, 2.0), label=f"x{i}") for i in range(4)]
    for _ in range(size):
        garbage = [pool[-1] * 1.0 for _ in range(rng.randrange(3))]
        del garbage
        a, b = rng.choice(pool[-8:]), rng.choice(pool)
        op = rng.choice(["+", "*", "-", "tanh", "relu", "sigmoid", "neg", "sum"])
        if op == "+":
            pool.append(a + b)
        elif op == "*":
            pool.append(a * b)
        elif op == "-":
            pool.append(a - b)
        elif op == "sum":
            pool.append(pyautograd.sum(rng.sample(pool, min(len(pool), 5))))
        else:
            pool.append(-a if op == "neg" else getattr(a, op)())
    root = pool[-1]
    root.backward()
    return root


@pytest.mark.parametrize("seed", range(8))
def test_to_dot_draws_exactly_the_reachable_graph(seed):
    root = random_graph(seed)
    values = reachable(root)
    nodes, edges = parse_dot(viz.to_dot(root, max_nodes=None))
    assert records(nodes) == {name(v): record_text(v) for v in values}
    into = {(t, h) for t, h, _ in edges}
    for v in values:
        head = f"{name(v)}_op" if v._op else name(v)
        assert {t for t, h in into if h == head and t != f"{name(v)}_op"} == {name(c) for c in v._prev}
    assert "left_out" not in nodes


@pytest.mark.parametrize("seed", range(8))
def test_summary_matches_the_reference_walk(seed):
    root = random_graph(seed)
    values = reachable(root)
    s = viz.summary(root)
    assert s.nodes == len(values)
    assert s.depth == longest_path(root)
    expected = {}
    for v in values:
        key = v._op or "leaf"
        expected[key] = expected.get(key, 0) + 1
    assert s.ops == expected
    assert list(s.ops.values()) == sorted(s.ops.values(), reverse=True)


# ---- summary on known graphs ----


def test_summary_of_the_seed_graph():
    _, _, z = seed_graph()
    s = viz.summary(z)
    assert (s.nodes, s.depth) == (6, 3)  # z = ((x*y) + y) + tanh(x): z -> + -> * -> x
    assert s.ops == {"leaf": 2, "+": 2, "*": 1, "tanh": 1}
    text = str(s)
    assert text.splitlines()[0] == "6 nodes, depth 3"
    assert all(re.search(rf"{re.escape(op)}\s+{n}$", text, re.M) for op, n in s.ops.items())


def test_summary_depth_is_the_longest_path_not_the_nearest_leaf():
    x = Value(0.3)
    chain = x
    for _ in range(10):
        chain = chain.tanh()
    root = chain + x  # x is one edge from root, and also eleven
    assert viz.summary(root).depth == 11


def test_summary_of_a_leaf_and_of_a_repeated_input():
    x = Value(2.0)
    assert (viz.summary(x).nodes, viz.summary(x).depth, viz.summary(x).ops) == (1, 0, {"leaf": 1})
    y = (x + x) * (x + x)
    assert (viz.summary(y).nodes, viz.summary(y).depth) == (4, 2)  # the two x + x are two nodes


def test_summary_of_a_deep_chain_with_promoted_constants():
    n = 100_000
    z = Value(1.0)
    for _ in range(n):
        z = z * 1.0
    s = viz.summary(z)
    assert (s.nodes, s.depth) == (2 * n + 1, n)
    assert s.ops == {"*": n, "const": n, "leaf": 1}
    assert f"{2 * n + 1:,} nodes, depth {n:,}" in str(s)


# ---- max_nodes: the part nearest the root, and a note on what was left out ----


def test_max_nodes_keeps_the_nodes_nearest_the_root_and_counts_the_rest():
    n, cap = 50, 10
    leaf = Value(0.1, label="leaf")
    chain = [leaf]
    for _ in range(n):
        chain.append(chain[-1].tanh())
    root = chain[-1]
    nodes, edges = parse_dot(viz.to_dot(root, max_nodes=cap))
    assert set(records(nodes)) == {name(v) for v in chain[-cap:]}
    note = nodes["left_out"]["label"]
    assert note.startswith(f"{n + 1 - cap:,} of {n + 1:,} nodes not drawn")
    assert f"max_nodes={cap}" in note
    dashed = [(t, h) for t, h, a in edges if t == "left_out"]
    assert dashed == [("left_out", f"{name(chain[-cap])}_op")]  # the last drawn lost its input


def test_max_nodes_on_a_wide_node_draws_its_first_inputs():
    leaves = [Value(float(i), label=f"w{i}") for i in range(1000)]
    root = pyautograd.sum(leaves)
    nodes, edges = parse_dot(viz.to_dot(root, max_nodes=20))
    assert set(records(nodes)) == {name(root)} | {name(v) for v in leaves[:19]}
    assert nodes["left_out"]["label"].startswith(f"{1001 - 20:,} of {1001:,} nodes")
    assert ("left_out", f"{name(root)}_op") in {(t, h) for t, h, _ in edges}


def test_no_note_when_everything_fits():
    _, _, z = seed_graph()
    for cap in (6, 7, viz.DEFAULT_MAX_NODES, None):
        nodes, _ = parse_dot(viz.to_dot(z, max_nodes=cap))
        assert "left_out" not in nodes and len(records(nodes)) == 6
    nodes, _ = parse_dot(viz.to_dot(z, max_nodes=5))
    assert len(records(nodes)) == 5 and nodes["left_out"]["label"].startswith("1 of 6 ")


def test_a_million_node_graph_draws_only_max_nodes():
    n = 10**6
    root = pyautograd.sum(map(float, range(n)))  # one sum over a million fresh leaves
    nodes, _ = parse_dot(viz.to_dot(root))
    assert len(records(nodes)) == viz.DEFAULT_MAX_NODES
    assert nodes["left_out"]["label"].startswith(f"{n + 1 - viz.DEFAULT_MAX_NODES:,} of {n + 1:,}")
    assert viz.summary(root).ops == {"leaf": n, "sum": 1}


@pytest.mark.stress
def test_a_million_deep_chain_draws_and_summarises():
    n = 10**6
    z = Value(0.5)
    for _ in range(n):
        z = z.tanh()
    nodes, _ = parse_dot(viz.to_dot(z))
    assert len(records(nodes)) == viz.DEFAULT_MAX_NODES
    assert nodes["left_out"]["label"].startswith(f"{n + 1 - viz.DEFAULT_MAX_NODES:,} of {n + 1:,}")
    s = viz.summary(z)
    assert (s.nodes, s.depth, s.ops) == (n + 1, n, {"tanh": n, "leaf": 1})


# ---- the notebook hook ----


@pytest.fixture
def graphs_in_notebooks():
    """viz.display_graphs() for one test, then the default (the repr) again."""
    viz.display_graphs()
    yield
    viz.display_graphs(False)


def test_a_value_shows_its_repr_in_notebooks_unless_told_otherwise():
    x = Value(2.0)
    assert getattr(x, "_repr_mimebundle_", None) is None  # Jupyter falls back to repr
    viz.display_graphs()
    try:
        assert callable(x._repr_mimebundle_)
    finally:
        viz.display_graphs(False)
    assert getattr(x, "_repr_mimebundle_", None) is None
    viz.display_graphs(False)  # twice is fine


def test_mimebundle_falls_back_to_text_without_graphviz(monkeypatch, graphs_in_notebooks):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` now fails
    _, _, z = seed_graph()
    assert viz.mimebundle(z) == {"text/plain": repr(z)}
    assert z._repr_mimebundle_() == {"text/plain": repr(z)}
    with pytest.raises(ImportError, match=r"pip install 'pyautograd-arena\[viz\]'"):
        viz.draw_dot(z)


def test_mimebundle_falls_back_to_text_without_the_dot_program(monkeypatch, tmp_path):
    require("graphviz", "PYAUTOGRAD_REQUIRE_DOT")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` to run
    _, _, z = seed_graph()
    assert viz.mimebundle(z) == {"text/plain": repr(z)}


def test_mimebundle_shows_the_graph_as_svg(graphs_in_notebooks):
    require_dot()
    x, y, z = seed_graph()
    bundle = z._repr_mimebundle_()
    assert bundle["text/plain"] == repr(z)
    texts = svg_texts(bundle["image/svg+xml"])
    assert f"data {z.data:.4f}" in texts and f"grad {x.grad:.4f}" in texts


# ---- pictures through the real dot program ----


def test_draw_dot_returns_a_digraph_that_renders_the_values():
    graphviz = require_dot()
    x, y, z = seed_graph()
    g = viz.draw_dot(z)
    assert isinstance(g, graphviz.Digraph) and g.format == "svg"
    assert g.graph_attr["rankdir"] == "LR"
    assert set(viz.to_dot(z).splitlines()[2:-1]) <= set(g.source.splitlines())
    texts = svg_texts(g.pipe(encoding="utf-8"))
    for v in reachable(z):
        assert f"data {v.data:.4f}" in texts and f"grad {v.grad:.4f}" in texts
        if v.label:
            assert v.label in texts
        if v._op:
            assert v._op in texts
    assert {f"grad {x.grad:.4f}", f"grad {y.grad:.4f}"} <= set(texts)


def test_render_writes_a_file_like_the_lecture(tmp_path):
    require_dot()
    _, _, z = seed_graph()
    path = viz.draw_dot(z, format="png").render(tmp_path / "graph")
    assert Path(path).read_bytes().startswith(b"\x89PNG")


def test_to_dot_is_valid_for_the_dot_program_including_escapes_and_the_note():
    require_dot()
    strange = ['say "hi"', "{a|b}", "<port>", "back\\slash", "αβ ∂z/∂x", "end\\", "a&b &lt;", "\U0001f600"]
    leaves = [Value(float(i), label=text) for i, text in enumerate(strange)]
    root = pyautograd.sum(leaves)
    root.label = "two\nlines"
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=viz.to_dot(root, max_nodes=4), text=True, capture_output=True, check=True
    ).stdout
    texts = svg_texts(svg)
    for text in strange[:3]:
        assert text in texts
    assert "two" in texts and "lines" in texts
    assert any(t.startswith(f"{len(strange) + 1 - 4:,} of {len(strange) + 1:,} nodes") for t in texts)

    svg = subprocess.run(["dot", "-Tsvg"], input=viz.to_dot(root), text=True, capture_output=True, check=True).stdout
    assert set(strange) <= set(svg_texts(svg))


def test_the_readme_command_draws_the_seed_graph(tmp_path):
    require_dot()
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "draw_graph.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    x, y, z = seed_graph()
    texts = svg_texts((tmp_path / "seed_graph.svg").read_text())
    for v in (x, y, z):
        assert v.label in texts and f"grad {v.grad:.4f}" in texts
    assert (tmp_path / "seed_graph.png").read_bytes().startswith(b"\x89PNG")


# ---- the lecture's pictures: micrograd's trace_graph.ipynb cells, node for node ----


def micrograd_picture(root):
    """What micrograd's draw_dot (trace_graph.ipynb, the lecture) draws for root: its
    trace over _prev, then a record per Value and an op node per Value with an _op, an
    edge from each op node to its Value and from each input to the op node of its user.
    Returns (record texts, op labels, number of graphviz nodes, number of edges)."""
    nodes, edges = set(), set()

    def build(v):  # the notebook's recursive trace (these graphs are small)
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)

    build(root)
    texts = sorted(f"data {n.data:.4f} | grad {n.grad:.4f}" for n in nodes)
    ops = sorted(n._op for n in nodes if n._op)
    return texts, ops, len(nodes) + len(ops), len(edges) + len(ops)


def our_picture(root, **options):
    """The same four things, read from to_dot's output."""
    nodes, edges = parse_dot(viz.to_dot(root, **options))
    texts = sorted(re.sub(r"^\{ [^|]*\| (.*) \}$", r"\1", label) for label in records(nodes).values())
    ops = sorted(a["label"] for a in nodes.values() if a.get("shape") != "record")
    return texts, ops, len(nodes), len(edges)


def trace_graph_cells(engine, nn):
    """The two cells of micrograd's trace_graph.ipynb, on the given engine."""
    x = engine.Value(1.0)
    first = (x * 2 + 1).relu()
    first.backward()
    random.seed(1337)
    n = nn.Neuron(2)
    x = [engine.Value(1.0), engine.Value(-2.0)]
    second = n(x)
    second.backward()
    return first, second


def test_expand_dot_draws_the_lectures_neuron_as_micrograd_does():
    mg_engine, mg_nn = pytest.importorskip("micrograd.engine"), pytest.importorskip("micrograd.nn")
    from pyautograd import nn

    theirs = [micrograd_picture(v) for v in trace_graph_cells(mg_engine, mg_nn)]
    ours = trace_graph_cells(pyautograd.engine, nn)

    # the Neuron(2) cell: 10 Values (*, *, +, +, ReLU) in micrograd; 7 (dot, ReLU) here,
    # unless the dot is expanded, which gives micrograd's picture: the same records (data
    # and grad), the same ops, the same numbers of nodes and edges
    texts, ops, n_nodes, n_edges = theirs[1]
    assert (len(texts), ops, n_nodes, n_edges) == (10, ["*", "*", "+", "+", "ReLU"], 15, 14)
    assert our_picture(ours[1], expand_dot=True) == theirs[1]
    fused = our_picture(ours[1])
    assert (len(fused[0]), fused[1], fused[2], fused[3]) == (7, ["ReLU", "dot"], 9, 8)

    # the first cell has no dot: expanding changes nothing, and the structure is
    # micrograd's (the constants 2 and 1 are Values there too; only their grads differ,
    # as differences.md says: a constant gets no gradient here)
    for options in ({}, {"expand_dot": True}):
        texts, ops, n_nodes, n_edges = our_picture(ours[0], **options)
        assert (ops, n_nodes, n_edges) == (theirs[0][1], theirs[0][2], theirs[0][3]) == (["*", "+", "ReLU"], 9, 8)
        assert [t.split(" | ")[0] for t in texts] == [t.split(" | ")[0] for t in theirs[0][0]]


@pytest.mark.parametrize("nin", [1, 3, 5])
def test_expand_dot_matches_micrograd_for_neurons_of_any_size_and_in_a_layer(nin):
    mg_engine, mg_nn = pytest.importorskip("micrograd.engine"), pytest.importorskip("micrograd.nn")
    from pyautograd import nn

    pictures = []
    for engine, module in ((mg_engine, mg_nn), (pyautograd.engine, nn)):
        random.seed(nin)
        layer = module.Layer(nin, 2)
        outs = layer([engine.Value(0.5 * i - 1) for i in range(nin)])
        loss = outs[0] * outs[1] + outs[0]
        loss.backward()
        pictures.append(loss)
    assert our_picture(pictures[1], expand_dot=True) == micrograd_picture(pictures[0])


def test_expand_dot_on_fused_dots_without_a_bias_and_with_repeated_inputs():
    x, y = Value(1.5, label="x"), Value(-2.0, label="y")
    single = pyautograd.dot([x], [y])  # one product: the node is that product
    texts, ops, n_nodes, n_edges = our_picture(single, expand_dot=True)
    assert (ops, n_nodes, n_edges) == (["*"], 4, 3)
    square_sum = pyautograd.dot([x, y], [x, y])  # x*x + y*y: no bias, each input twice
    square_sum.backward()
    nodes, edges = parse_dot(viz.to_dot(square_sum, expand_dot=True))
    assert sorted(a["label"] for a in nodes.values() if a.get("shape") != "record") == ["*", "*", "+"]
    assert sorted(a["label"] for _, _, a in edges if a) == ['"×2"', '"×2"']  # x*x, y*y
    assert f"data {x.data * x.data + y.data * y.data:.4f}" in records(nodes)[name(square_sum)]
    assert len(records(nodes)) == 5  # x, y, x*x, y*y, the sum


@pytest.mark.parametrize("n, bias", [(1, False), (1, True), (2, False), (2, True), (7, True), (7, False)])
def test_expand_dot_stays_under_max_nodes_with_the_expanded_records(n, bias):
    # The expansion once came on top of the cap: a dot over 200,000 inputs drawn with
    # max_nodes=10 wrote 400,005 records, which Graphviz did not finish in minutes.
    xs = [Value(0.5 + k) for k in range(2 * n)]
    d = pyautograd.dot(xs[:n], xs[n:], Value(0.25)) if bias else pyautograd.dot(xs[:n], xs[n:])
    y = d.relu()
    whole = len(records(parse_dot(viz.to_dot(y, max_nodes=None, expand_dot=True))[0]))
    fused = len(records(parse_dot(viz.to_dot(y, max_nodes=None))[0]))
    for cap in range(1, whole + 2):
        got = records(parse_dot(viz.to_dot(y, max_nodes=cap, expand_dot=True))[0])
        assert len(got) <= cap
        if cap >= whole:
            assert len(got) == whole  # expanded whole once it fits
    assert whole - fused == viz._expansion_size(d)


def test_expand_dot_respects_max_nodes_and_renders(tmp_path):
    random.seed(3)
    from pyautograd import nn

    out = nn.MLP(3, [4, 1])([1.0, -2.0, 0.5])
    source = viz.to_dot(out, max_nodes=3, expand_dot=True)
    nodes, edges = parse_dot(source)
    assert "left_out" in nodes
    drawn = set(nodes)
    assert all(tail in drawn and head in drawn for tail, head, _ in edges)
    if shutil.which("dot"):
        subprocess.run(
            ["dot", "-Tsvg"], input=viz.to_dot(out, expand_dot=True), text=True, capture_output=True, check=True
        )
