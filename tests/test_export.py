"""pyautograd.export: the same graph on PyTorch and JAX, batched (issue 20).

Every row of the op table has an export rule for both targets; values and gradients
match pyautograd's per sample (1e-12 relative, float64), at the edges of each op's
rules too; a layer exports as one matrix product and the exported graph's size follows
the structure, not the width or the batch. torch tests fail rather than skip when
PYAUTOGRAD_REQUIRE_TORCH is set, jax tests when PYAUTOGRAD_REQUIRE_JAX is set (CI sets
both); the onnx test is skipped exactly when onnx or onnxruntime is not installed.
"""

import gc
import math
import operator
import random
import subprocess
import sys

import pytest

import pyautograd
from pyautograd import Value, grad
from pyautograd import export, nn
from pyautograd.engine import OP_NAMES, OP_PYTHON
from pyautograd.nn import MLP, Layer, Neuron

from conftest import require


@pytest.fixture(scope="module", autouse=True)
def collect_after():
    """torch modules sit in reference cycles, and their pyautograd_leaves hold Values:
    freed here, not by a GC pass in the middle of a later test counting live nodes."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def torch():
    return require("torch", "PYAUTOGRAD_REQUIRE_TORCH")


@pytest.fixture(scope="module")
def jax():
    jax = require("jax", "PYAUTOGRAD_REQUIRE_JAX")
    jax.config.update("jax_enable_x64", True)
    return jax


def close(a, b, rel=1e-12, scale=0.0):
    """a == b to `rel` relative (of max(|a|, |b|, scale)); nan matches nan, inf its sign."""
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b), scale)


def assert_close(got, want, what, scale=0.0):
    got, want = list(got), list(want)
    assert len(got) == len(want), what
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if not close(g, w, scale=scale)]
    assert not bad, f"{what}: (sample, exported, pyautograd) {bad[:5]}"


# ---- the op table ----

NB = {
    "nb_add": operator.add,
    "nb_subtract": operator.sub,
    "nb_multiply": operator.mul,
    "nb_true_divide": operator.truediv,
    "nb_power": operator.pow,
    "nb_negative": operator.neg,
}


def elementwise_rows():
    """(name, python) for every elementwise row of the op table, read at run time."""
    return [(n, p) for n, p in zip(OP_NAMES, OP_PYTHON) if p]


def test_every_op_table_row_has_an_export_rule():
    from pyautograd._ag import lib

    rows = elementwise_rows()
    assert {"add", "relu", "gate"} <= {n for n, _ in rows}
    missing = [n for n, _ in rows if n not in export.OP_RULES]
    assert not missing, f"op table rows with no export rule: {missing}"
    assert export.elementwise_ops() == [n for n, _ in rows]
    for name, _ in rows:
        rule = export.OP_RULES[name]
        arity = lib.ag_op_arity(OP_NAMES.index(name))
        assert rule.arity == arity, name
        assert callable(rule.torch) and callable(rule.forward) and callable(rule.to_a), name
        assert (rule.to_b is not None) == (arity == 2), name


# Where each op is evaluated: ordinary points and the edges of its rules.
UNARY_POINTS = [-30.0, -3.0, -1.0, -0.5, -1e-300, 0.0, 1e-300, 0.5, 1.0, 2.5, 20.0, 700.0]
BINARY_POINTS = [(a, b) for a in (-2.0, -0.5, 0.0, 0.5, 1.5, 3.0) for b in (-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0)] + [
    (math.nan, 1.0),
    (1.0, math.nan),
]
CONSTANTS = [-2.0, 0.0, 0.5, 3.0]


# internal rows, and an op whose derivative graph holds each
DERIVATIVE_OF = {
    "gate": lambda x: x.relu(),
    "sign": lambda x: x.abs(),
    "leaky_slope": lambda x: x.leaky_relu(0.1),
    "softplus_d": lambda x: x.softplus(),
    "max_share": lambda x: pyautograd.maximum(x, 0.5),
}


def internal_op_graph(name):
    """A graph that holds a node of an internal row (made only by derivative graphs):
    a function of x whose value is computed through that node."""

    def make(x):
        if name in DERIVATIVE_OF:  # the derivative of an op whose graph holds the row
            (g,) = grad(DERIVATIVE_OF[name](x) * 3.0, [x], create_graph=True)
            return g * x + x
        raise KeyError(f"no graph holds an op {name!r}: add one here")

    return make


# Internal rows that no derivative graph makes today (ops.h has the row; higher.c never
# uses it): their rules are checked on their own, against ops.h's forward and derivative.
UNBUILDABLE = {"step": (lambda a: float(a > 0.0), lambda a: 0.0)}


def samples_for(name, python):
    """(label, build, points): build(*values) makes the graph, points are its inputs."""
    if name in UNBUILDABLE:
        return []
    if python == "internal":
        make = internal_op_graph(name)
        return [("x", make, [(p,) for p in UNARY_POINTS])]
    if name == "detach":  # beside a path that passes a gradient: torch refuses grad() of a detached output
        return [("x", lambda x: x.detach() * x, [(p,) for p in UNARY_POINTS])]
    if python == "method":
        return [("x", lambda x: getattr(x, name)(), [(p,) for p in UNARY_POINTS])]
    if python == "method_slope":
        return [
            (f"x,{c}", lambda x, c=c: getattr(x, name)(c), [(p,) for p in UNARY_POINTS]) for c in (0.01, 0.2, -0.5, 0.0)
        ]
    fn = getattr(pyautograd, name) if python == "function" else NB[python]
    if name == "neg":
        return [("x", fn, [(p,) for p in UNARY_POINTS])]
    out = [("x,y", fn, BINARY_POINTS)]
    for c in CONSTANTS:
        out.append((f"x,{c}", lambda x, c=c: fn(x, c), [(p,) for p in UNARY_POINTS]))
        out.append((f"{c},x", lambda x, c=c: fn(c, x), [(p,) for p in UNARY_POINTS]))
    return out


def reference(build, points):
    """pyautograd, one graph per sample: values and d value / d each input."""
    values, grads = [], []
    for point in points:
        xs = [Value(p) for p in point]
        y = build(*xs)
        y.backward()
        values.append(y.data)
        grads.append([x.grad for x in xs])
    return values, grads


def graph_of(build, n):
    xs = [Value(0.75 + 0.5 * i) for i in range(n)]
    return build(*xs), xs


def ops_present(root):
    from pyautograd.viz import summary

    return set(summary(root).ops)


@pytest.mark.parametrize("name,python", elementwise_rows(), ids=[n for n, _ in elementwise_rows()])
def test_each_op_exports_exactly_to_torch(torch, name, python):
    for label, build, points in samples_for(name, python):
        y, xs = graph_of(build, len(points[0]))
        module = export.to_torch(y, xs)
        want, want_grads = reference(build, points)
        args = [torch.tensor([p[k] for p in points], dtype=torch.float64, requires_grad=True) for k in range(len(xs))]
        out = module(*args)
        assert out.shape == (len(points),)
        assert_close(out.tolist(), want, f"{name}({label}) value")
        gs = torch.autograd.grad(out.sum(), args, allow_unused=True, materialize_grads=True)
        for k, g in enumerate(gs):
            assert_close(g.tolist(), [w[k] for w in want_grads], f"{name}({label}) d/dx{k}")


@pytest.mark.parametrize("name,python", elementwise_rows(), ids=[n for n, _ in elementwise_rows()])
def test_each_op_exports_exactly_to_jax(jax, name, python):
    import jax.numpy as jnp

    for label, build, points in samples_for(name, python):
        y, xs = graph_of(build, len(points[0]))
        fn, params = export.to_jax(y, xs)
        want, want_grads = reference(build, points)
        args = [jnp.asarray([p[k] for p in points], dtype=jnp.float64) for k in range(len(xs))]
        out = fn(params, *args)
        assert out.dtype == jnp.float64 and out.shape == (len(points),)
        assert_close(out.tolist(), want, f"{name}({label}) value")
        gs = jax.grad(lambda *a, fn=fn, params=params: jnp.sum(fn(params, *a)), argnums=tuple(range(len(xs))))(*args)
        for k, g in enumerate(gs):
            assert_close(g.tolist(), [w[k] for w in want_grads], f"{name}({label}) d/dx{k}")


@pytest.mark.parametrize("name", sorted(UNBUILDABLE))
def test_rules_of_rows_no_graph_makes(torch, jax, name):
    import jax.numpy as jnp

    forward, derivative = UNBUILDABLE[name]
    rule = export.OP_RULES[name]
    t = torch.tensor(UNARY_POINTS, dtype=torch.float64, requires_grad=True)
    out = rule.torch(t)
    assert_close(out.tolist(), [forward(a) for a in UNARY_POINTS], f"torch {name}")
    if out.requires_grad:
        (g,) = torch.autograd.grad(out.sum(), [t])
        assert_close(g.tolist(), [derivative(a) for a in UNARY_POINTS], f"torch d {name}")
    fn = export._jax_op(name)
    a = jnp.asarray(UNARY_POINTS)
    assert_close(fn(a).tolist(), [forward(a) for a in UNARY_POINTS], f"jax {name}")
    g = jax.grad(lambda a: jnp.sum(fn(a)))(a)
    assert_close(g.tolist(), [derivative(a) for a in UNARY_POINTS], f"jax d {name}")


def test_the_internal_rows_are_in_the_graphs_that_test_them():
    for name in [n for n, p in elementwise_rows() if p == "internal" and n not in UNBUILDABLE]:
        y, _ = graph_of(internal_op_graph(name), 1)
        assert name in ops_present(y)


def test_gradients_with_respect_to_parameters_at_the_edges(torch, jax):
    """Per sample (0-d inputs): d/d parameter equals pyautograd's, at the rules' edges."""
    import jax.numpy as jnp

    cases = [
        ("relu at 0", lambda x, w: (x * w).relu(), [(0.0, 2.0), (1.0, 0.0), (-1.0, 2.0)]),
        ("pow base 0", lambda x, w: x**w, [(0.0, 0.0), (0.0, 2.0), (0.0, -1.0), (-2.0, 0.5), (-2.0, 2.0), (1.5, 0.0)]),
        ("pow of a param", lambda x, w: w**x, [(0.0, 0.0), (2.0, 0.0), (-1.0, 0.0), (0.5, -2.0)]),
        ("tanh far out", lambda x, w: (x * w).tanh(), [(12.0, 1.0), (-19.0, 1.0), (0.3, 1.0)]),
        ("sigmoid far out", lambda x, w: (x * w).sigmoid(), [(-700.0, 1.0), (40.0, 1.0)]),
        ("div by huge", lambda x, w: x / w, [(1.0, 1e200), (3.0, -1e-200), (1.0, 0.0)]),
        ("log at 0", lambda x, w: (x * w).log(), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.5)]),
    ]
    for what, build, points in cases:
        for x0, w0 in points:
            x, w = Value(x0), Value(w0, label="w")
            y = build(x, w)
            y.backward()
            module = export.to_torch(y, [x])
            t = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
            out = module(t)
            gx, gw = torch.autograd.grad(out, [t, module.w], materialize_grads=True, allow_unused=True)
            assert_close([out.item(), gx.item(), gw.item()], [y.data, x.grad, w.grad], f"torch {what} at {(x0, w0)}")
            fn, params = export.to_jax(y, [x])
            value = fn(params, jnp.asarray(x0))
            jgx, jgp = jax.grad(fn, argnums=(1, 0))(params, jnp.asarray(x0))
            # XLA's tanh is not C's to the ulp: where tanh saturates (|x| > 10), 1 - out*out
            # is a few ulps of 1 and differs relatively; it agrees to 1e-12 of G there
            scale = 1.0 if what == "tanh far out" else 0.0
            assert_close([value, jgx, jgp["w"]], [y.data, x.grad, w.grad], f"jax {what} at {(x0, w0)}", scale=scale)


# ---- structure: layers, sums and dots ----


def mlp_graph(nin=3, nouts=(8, 8, 2), seed=0):
    random.seed(seed)
    model = MLP(nin, list(nouts))
    xs = [Value(0.1 * (i + 1), label=f"in{i}") for i in range(nin)]
    out = model(xs)
    return model, xs, out if isinstance(out, list) else [out]


def per_sample(model, batch):
    """pyautograd per sample: outputs, d sum(outputs)/d inputs, and the parameters'
    gradients summed over the batch (what a batched loss's gradient is)."""
    outs, in_grads = [], []
    model.zero_grad()
    for row in batch:
        xs = [Value(v) for v in row]
        ys = model(xs)
        ys = ys if isinstance(ys, list) else [ys]
        pyautograd.sum(ys).backward()
        outs.append([y.data for y in ys])
        in_grads.append([x.grad for x in xs])
    return outs, in_grads


def batch_of(n, nin, seed=1):
    rng = random.Random(seed)
    return [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(n)]


def test_an_mlp_exports_to_torch_as_matrix_products(torch):
    model, xs, outs = mlp_graph()
    module = export.to_torch(outs, xs)
    calls = [n.target for n in module.graph.nodes if n.op == "call_function"]
    linear = torch.nn.functional.linear
    assert sum(t is linear for t in calls) == 3
    assert sum(t is torch.relu for t in calls) == 2  # one per hidden layer, on the vector
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {
        "linear0_weight": (8, 3),
        "linear0_bias": (8,),
        "linear1_weight": (8, 8),
        "linear1_bias": (8,),
        "linear2_weight": (2, 8),
        "linear2_bias": (2,),
    }
    assert all(p.dtype == torch.float64 for p in module.parameters())
    leaves = module.pyautograd_leaves
    assert leaves["linear1_weight"][3][5] is model.layers[1].neurons[3].w[5]
    assert leaves["linear2_bias"][1] is model.layers[2].neurons[1].b
    # the graph's size follows the structure: not the width, not the batch
    wide_model, wide_xs, wide_outs = mlp_graph(nouts=(64, 64, 2))
    wide = export.to_torch(wide_outs, wide_xs)
    assert len(wide.graph.nodes) == len(module.graph.nodes)


def test_layers_that_read_another_layers_weights_in_another_order_export_them_so(torch, jax):
    # A second group of dot nodes over the same leaves (tied weights: a decoder over the
    # encoder's W transposed; biases repeated) once took the first group's parameter
    # whole: W where W^T belongs, b2 where b1 does. Every output and gradient must agree.
    x1, x2 = Value(1.0), Value(10.0)
    w = [Value(v) for v in (1.0, 2.0, 3.0, 4.0)]
    b1, b2 = Value(100.0), Value(200.0)
    outs = [
        pyautograd.dot([w[0], w[1]], [x1, x2], b1),
        pyautograd.dot([w[2], w[3]], [x1, x2], b2),
        pyautograd.dot([w[0], w[2]], [x2, x1], b1),  # W^T
        pyautograd.dot([w[1], w[3]], [x2, x1], b1),  # and the bias repeated
    ]
    weights = [0.5, -1.0, 2.0, 0.25]
    pyautograd.dot(weights, outs).backward()
    want = [o.data for o in outs]
    module = export.to_torch(outs, [x1, x2])
    args = [
        torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
        torch.tensor(10.0, dtype=torch.float64, requires_grad=True),
    ]
    got = module(*args)
    assert [t.item() for t in got] == want
    sum(c * t for c, t in zip(weights, got)).backward()
    assert [a.grad.item() for a in args] == [x1.grad, x2.grad]
    leaves = module.pyautograd_leaves
    for name, p in module.named_parameters():
        flat_leaves = [v for row in leaves[name] for v in row] if p.dim() == 2 else list(leaves[name])
        assert p.grad.reshape(-1).tolist() == [v.grad for v in flat_leaves], name
    fn, params = export.to_jax(outs, [x1, x2])
    assert [float(v) for v in fn(params, 1.0, 10.0)] == want


@pytest.mark.parametrize("tie", ["in a layer", "in plain dots"])
def test_a_weight_shared_by_two_rows_of_one_group_exports(torch, jax, tie):
    # The group's matrix is built at its first dot node, which can come before a later
    # row's leaves in the order: their places were still empty (a TypeError, no export).
    x = [Value(0.5, label="x"), Value(-1.0, label="y")]
    if tie == "in a layer":
        random.seed(0)
        layer = nn.Layer(2, 3, nonlin=False)
        layer.neurons[1].w[0] = layer.neurons[0].w[1]
        layer.neurons[2].b = layer.neurons[0].w[0]
        outs = layer(x)
    else:
        a, b, c = Value(1.0), Value(2.0), Value(3.0)
        outs = [pyautograd.dot([a, b], x), pyautograd.dot([b, c], x)]
    weights = [0.5, -2.0, 1.5][: len(outs)]
    pyautograd.dot(weights, outs).backward()
    module = export.to_torch(outs, x)
    args = [torch.tensor(v.data, dtype=torch.float64, requires_grad=True) for v in x]
    got = module(*args)
    assert [t.item() for t in got] == [o.data for o in outs]
    sum(c * t for c, t in zip(weights, got)).backward()
    assert [a.grad.item() for a in args] == [v.grad for v in x]
    fn, params = export.to_jax(outs, x)
    assert [float(v) for v in fn(params, *[v.data for v in x])] == [o.data for o in outs]


@pytest.mark.parametrize("name", ["named_parameters", "load_state_dict", "extra_repr", "self"])
def test_a_label_that_would_clash_in_the_module_falls_back(torch, name):
    # A parameter labelled with a GraphModule attribute the fixed list lacked made
    # to_torch raise KeyError; an input labelled self made forward multiply the module.
    x, w = Value(1.5, label="x"), Value(2.0, label=name)
    module = export.to_torch(x * w, [x])
    assert name not in dict(module.named_parameters())
    x_self, v = Value(1.5, label=name), Value(2.0, label="v")
    module = export.to_torch(x_self * v, [x_self])
    assert module(torch.tensor([1.0, 2.0], dtype=torch.float64)).tolist() == [2.0, 4.0]


def test_jax_forward_mode_leaves_out_a_constants_pass_back(jax):
    # jvp, jacfwd and hessian in JAX once got nan for (x - 0.5) ** 2 at x < 0: the
    # constant exponent's pass-back (out * log(a), nan) was multiplied by its zero
    # tangent and added in. x / 0.0 gave nan where the slope is inf.
    jnp = jax.numpy
    x = Value(-1.5, label="x")
    for y, slope in [((x - 0.5) ** 2, -4.0), (x / 0.0, math.inf), (2.0**x, math.log(2.0) * 2.0**-1.5)]:
        fn, params = export.to_jax(y, [x])
        assert grad(y, [x])[0].data == slope
        a = jnp.asarray(-1.5)
        tangent = jax.jvp(lambda t, fn=fn, params=params: fn(params, t), (a,), (jnp.asarray(1.0),))[1]
        assert float(tangent) == slope == float(jax.jacfwd(fn, argnums=1)(params, a))
    assert float(jax.hessian(fn, argnums=1)(params, jnp.asarray(-1.5))) == pytest.approx(math.log(2.0) ** 2 * 2.0**-1.5)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_an_exported_mlp_is_pyautograd_per_sample_in_torch(torch, shape):
    model, xs, outs = mlp_graph()
    module = export.to_torch(outs, xs)
    n = math.prod(shape)
    batch = batch_of(n, 3)
    want, want_in = per_sample(model, batch)
    args = [
        torch.tensor([row[k] for row in batch], dtype=torch.float64).reshape(shape).requires_grad_() for k in range(3)
    ]
    ys = module(*args)
    assert isinstance(ys, tuple) and len(ys) == 2 and all(y.shape == shape for y in ys)
    for j in range(2):
        assert_close(ys[j].reshape(-1).tolist(), [w[j] for w in want], f"output {j}", scale=1.0)
    total = sum(y.sum() for y in ys)
    gs = torch.autograd.grad(total, args + list(module.parameters()))
    for k in range(3):
        assert_close(gs[k].reshape(-1).tolist(), [g[k] for g in want_in], f"d/d input {k}", scale=1.0)
    for (name, p), g in zip(module.named_parameters(), gs[3:]):
        leaves = module.pyautograd_leaves[name]
        flat = [v for row in leaves for v in row] if p.dim() == 2 else leaves
        assert_close(g.reshape(-1).tolist(), [v.grad for v in flat], f"d/d {name}", scale=1.0)


def test_an_exported_mlp_is_pyautograd_per_sample_in_jax(jax):
    import jax.numpy as jnp

    model, xs, outs = mlp_graph()
    fn, params = export.to_jax(outs, xs)
    assert list(params) == [
        "linear0_weight",
        "linear0_bias",
        "linear1_weight",
        "linear1_bias",
        "linear2_weight",
        "linear2_bias",
    ]
    batch = batch_of(6, 3)
    want, want_in = per_sample(model, batch)
    args = [jnp.asarray([row[k] for row in batch]) for k in range(3)]
    jitted = jax.jit(fn)
    for ys in (fn(params, *args), jitted(params, *args), jax.vmap(fn, in_axes=(None, 0, 0, 0))(params, *args)):
        for j in range(2):
            assert_close(ys[j].tolist(), [w[j] for w in want], f"output {j}", scale=1.0)

    def loss(p, *a):
        y0, y1 = fn(p, *a)
        return jnp.sum(y0) + jnp.sum(y1)

    g_params, *g_in = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(params, *args)
    for k in range(3):
        assert_close(g_in[k].tolist(), [g[k] for g in want_in], f"d/d input {k}", scale=1.0)
    for name, g in g_params.items():
        leaves = fn.pyautograd_leaves[name]
        flat = [v for row in leaves for v in row] if g.ndim == 2 else leaves
        assert_close(g.reshape(-1).tolist(), [v.grad for v in flat], f"d/d {name}", scale=1.0)


def test_sum_and_dot_export_as_reductions(torch, jax):
    import jax.numpy as jnp

    def build(n):
        xs = [Value(0.1 * i - 0.3) for i in range(n)]
        ws = [Value(0.5 - 0.2 * i) for i in range(n)]
        y = pyautograd.sum(xs) * pyautograd.dot(ws, xs, start=0.25) + pyautograd.dot(xs, xs)
        return y, xs

    sizes = []
    for n in (4, 40):
        y, xs = build(n)
        module = export.to_torch(y, xs)
        sizes.append(len(module.graph.nodes) - n)  # placeholders aside
        batch = batch_of(3, n, seed=n)
        want = []
        for row in batch:
            for x, v in zip(xs, row):
                x.data = v
            want.append(y.forward())
        args = [torch.tensor([row[k] for row in batch], dtype=torch.float64) for k in range(n)]
        assert_close(module(*args).tolist(), want, f"torch n={n}", scale=10.0)
        fn, params = export.to_jax(y, xs)
        jargs = [jnp.asarray([row[k] for row in batch]) for k in range(n)]
        assert_close(fn(params, *jargs).tolist(), want, f"jax n={n}", scale=10.0)
    assert sizes[0] == sizes[1]


# ---- parameters, constants, names ----


def test_leaves_become_named_parameters_and_numbers_stay_constants(torch, jax):
    x = Value(1.0, label="x")
    w = Value(0.5, label="w")
    twin1, twin2 = Value(2.0, label="t"), Value(3.0, label="t")  # one label twice: by position
    odd = Value(-1.0, label="not a name")
    plain = Value(4.0)
    handmade_leaf = Value(0.25, (), "my op")  # no children: a leaf that shows an _op
    y = (x * w + twin1 * 2 - twin2 / 3 + odd * x + plain**2) * handmade_leaf
    module = export.to_torch(y, [x])
    names = [name for name, _ in module.named_parameters()]
    assert names == ["w", "p0", "p1", "p2", "p3", "p4"]
    assert [p.item() for p in module.parameters()] == [0.5, 2.0, 3.0, -1.0, 4.0, 0.25]
    assert module.pyautograd_leaves["p4"] is handmade_leaf
    assert list(module.buffers()) == []  # 2, 3 and the exponent 2 are constants in the code
    assert "2.0" in module.code and "3.0" in module.code
    assert list(export.to_jax(y, [x])[1]) == names
    assert_close([module(torch.tensor(1.0, dtype=torch.float64)).item()], [y.data], "value")


def test_outputs_that_do_not_depend_on_the_inputs_take_their_shape(torch, jax):
    import jax.numpy as jnp

    x, w = Value(1.0), Value(3.0)
    module = export.to_torch([x * 2, w * 2, w], [x])
    a, b, c = module(torch.ones(4, dtype=torch.float64))
    assert a.shape == b.shape == c.shape == (4,) and b.tolist() == [6.0] * 4
    fn, params = export.to_jax([x * 2, w * 2, w], [x])
    a, b, c = fn(params, jnp.ones(4))
    assert a.shape == b.shape == c.shape == (4,) and b.tolist() == [6.0] * 4


def test_one_output_gives_a_tensor_several_a_tuple(torch):
    x = Value(1.0)
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert isinstance(export.to_torch(x * 3, [x])(t), torch.Tensor)
    assert isinstance(export.to_torch([x * 3, x + 1], [x])(t), tuple)
    assert export.to_torch(x * 3, x)(t).tolist() == [3.0, 6.0]  # inputs: a Value is one input


# ---- what cannot be exported ----


def test_what_cannot_be_exported_is_named(torch):
    x = Value(2.0)
    handmade = Value(x.data**2, (x,), "square")
    handmade._backward = lambda: None
    with pytest.raises(export.ExportError, match="hand-made.*'square'"):
        export.to_torch(handmade * 2, [x])
    plain = Value(x.data**2, (x,), "sq")  # no _backward: its value is still Python's
    with pytest.raises(export.ExportError, match="'sq'"):
        export.to_torch(plain, [x])
    local = Value(x.data**2, (x,), [2 * x.data])
    with pytest.raises(export.ExportError, match="local derivatives"):
        export.to_torch(local + 1, [x])
    op_with_rule = x * 3
    op_with_rule._backward = lambda: None
    with pytest.raises(export.ExportError, match="Python _backward.*'\\*'"):
        export.to_torch(op_with_rule, [x])
    y = Value(2.0)
    f = Value(0.0) ** y
    (gy,) = grad(f, [y], create_graph=True)
    with pytest.raises(export.ExportError, match="picked a branch"):
        export.to_torch(gy, [y])
    with pytest.raises(ValueError, match="leaf"):
        export.to_torch(x * 3, [x * 1])
    with pytest.raises(ValueError, match="twice"):
        export.to_torch(x * 3, [x, x])
    with pytest.raises(TypeError):
        export.to_torch(3.0, [x])


def test_deep_graphs_export_without_recursion(torch):
    x = Value(0.5)
    y = x
    for i in range(4_000):  # past Python's recursion limit; fx takes 0.5 ms a node
        y = y * 0.999 + 0.001 if i % 2 else y.tanh()
    module = export.to_torch(y, [x])
    t = torch.tensor([0.5, -0.25], dtype=torch.float64, requires_grad=True)
    out = module(t)
    y.backward()
    assert_close([out[0].item()], [y.data], "value")
    (g,) = torch.autograd.grad(out.sum(), [t])
    assert_close([g[0].item()], [x.grad], "gradient", scale=1e-3)


# ---- torch.export, onnx, nn modules ----


def test_torch_export_of_an_exported_mlp(torch):
    model, xs, outs = mlp_graph()
    module = export.to_torch(outs, xs)
    args = tuple(torch.linspace(-1, 1, 5, dtype=torch.float64) * (k + 1) for k in range(3))
    program = torch.export.export(module, args)
    for a, b in zip(program.module()(*args), module(*args)):
        assert torch.equal(a, b)


def test_onnx_export_runs_in_onnxruntime(torch, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # torch.onnx's exporter needs it
    model, xs, outs = mlp_graph()
    module = export.to_torch(outs, xs)
    args = tuple(torch.linspace(-1, 1, 5, dtype=torch.float64) * (k + 1) for k in range(3))
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(module.eval(), args, str(path), dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    got = session.run(None, feeds)
    for a, b in zip(got, module(*args)):
        assert_close(a.tolist(), b.tolist(), "onnxruntime", scale=1.0)


def test_nn_modules_to_torch(torch):
    random.seed(3)
    model = MLP(3, [5, 4, 2])
    seq = model.to_torch()
    kinds = [type(m).__name__ for m in seq]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    batch = batch_of(7, 3)
    want, _ = per_sample(model, batch)
    got = seq(torch.tensor(batch, dtype=torch.float64))
    assert got.shape == (7, 2)
    assert_close(got.reshape(-1).tolist(), [v for w in want for v in w], "MLP", scale=1.0)
    layer = Layer(3, 4)
    seq = layer.to_torch()
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU"]
    row = batch[0]
    assert_close(seq(torch.tensor(row, dtype=torch.float64)).tolist(), [v.data for v in layer(row)], "Layer", scale=1.0)
    neuron = Neuron(3, nonlin=False)
    seq = neuron.to_torch()
    assert [type(m).__name__ for m in seq] == ["Linear"]
    assert_close(seq(torch.tensor(row, dtype=torch.float64)).tolist(), [neuron(row).data], "Neuron", scale=1.0)
    assert seq[0].weight.dtype == torch.float64


def test_modules_that_compute_something_else_are_not_exported_as_linear_and_relu(torch):
    class TanhNeuron(Neuron):
        def __call__(self, x):
            return sum((wi * xi for wi, xi in zip(self.w, x)), self.b).tanh()

    class Kept(Neuron):  # a subclass that keeps Neuron's __call__ exports as one
        pass

    assert [type(m).__name__ for m in Kept(2).to_torch()] == ["Linear", "ReLU"]
    with pytest.raises(TypeError, match="'TanhNeuron' where a Neuron belongs"):
        TanhNeuron(2).to_torch()
    layer = Layer(2, 3)
    layer.neurons[1] = TanhNeuron(2)
    with pytest.raises(TypeError, match="'TanhNeuron' where a Neuron belongs"):
        layer.to_torch()
    model = MLP(2, [3, 1])
    model.layers[0] = lambda x: x  # not a Layer
    with pytest.raises(TypeError, match="'function' where a Layer belongs"):
        model.to_torch()


def test_the_export_moons_example_trains_the_same_in_torch(torch, monkeypatch, capsys):
    import os
    import runpy

    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    monkeypatch.syspath_prepend(examples)  # the example imports moons.py beside it
    script = runpy.run_path(os.path.join(examples, "export_moons.py"), run_name="example")
    script["main"](["--steps", "15"])  # in this process: torch is imported already
    out = capsys.readouterr().out
    assert out.count("torch._C._nn.linear") == 3
    rows = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 15
    for step, scalar, batched, _ in rows:
        assert close(float(scalar), float(batched), rel=1e-12), (step, scalar, batched)


# ---- optional dependencies ----


def test_import_pyautograd_imports_neither_torch_nor_jax(tmp_path):
    code = (
        "import sys, pyautograd, pyautograd.export, pyautograd.nn\n"
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules, "
        "[m for m in sys.modules if m in ('torch', 'jax')]\n"
    )
    # from a temporary directory: from the repository root the source tree would shadow
    # the installed package
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize("target,extra", [("to_torch", "torch"), ("to_jax", "jax")])
def test_a_missing_target_raises_an_import_error_naming_the_extra(monkeypatch, target, extra):
    monkeypatch.setitem(sys.modules, extra, None)  # import torch / jax now fails
    x = Value(1.0)
    with pytest.raises(ImportError, match=rf"pyautograd-arena\[{extra}\]"):
        getattr(export, target)(x * 2, [x])
    if extra == "torch":
        with pytest.raises(ImportError, match=r"\[torch\]"):
            MLP(2, [2]).to_torch()


@pytest.mark.stress
def test_a_graph_a_million_deep_plans_without_recursion():
    x = Value(0.5)
    y = x
    for i in range(1_000_000):
        y = y.tanh() if i % 2 else y * 0.5
    plan = export._Plan(y, [x])
    assert len(plan.code) == 1_000_000


def test_an_exported_function_keeps_only_the_leaves_alive(torch, jax):
    from pyautograd import arena

    gc.collect()
    before = arena.stats()["live_nodes"]
    x, w = Value(1.0), Value(2.0)
    y = x
    for _ in range(100):
        y = (y * w).tanh()
    fn, params = export.to_jax(y, [x])
    module = export.to_torch(y, [x])
    del y
    gc.collect()
    assert arena.stats()["live_nodes"] == before + 2  # x and w, not the 200 op nodes
    assert module.pyautograd_leaves["p0"] is w and fn.pyautograd_leaves["p0"] is w


# ---- from a differential hunt of both exporters ----


@pytest.mark.parametrize("label", ["inf", "nan", "torch", "device", "pyautograd_export__torch_tanh"])
def test_a_label_that_names_one_of_fxs_globals_is_not_an_argument_name(torch, label):
    # fx's generated code reads torch, inf, nan...: an input of that name shadowed the
    # constant inf (x + inf gave 6.0), or torch (x.exp() raised when called)
    x = Value(3.0, label=label)
    for y in (x + math.inf, (x * math.nan) + 1.0, x.exp(), x.tanh()):
        out = export.to_torch(y, [x])(torch.tensor(3.0, dtype=torch.float64))
        assert close(out.item(), y.data)


@pytest.mark.parametrize("base", [-0.0, 0.0, -math.inf, math.inf, 4.0])
@pytest.mark.parametrize("exponent", [0.5, -0.5, 1.5, 2.0, -1.0])
def test_pow_by_a_constant_exports_c_pow_where_torch_would_use_sqrt(torch, base, exponent):
    # torch makes x ** 0.5 sqrt and x ** -0.5 rsqrt: -0.0 for 0.0, nan for inf
    x = Value(base)
    y = x**exponent
    y.backward()
    t = torch.tensor(base, dtype=torch.float64, requires_grad=True)
    out = export.to_torch(y, [x])(t)
    (g,) = torch.autograd.grad(out, [t])
    assert str(out.item()) == str(y.data)
    assert close(g.item(), x.grad)


@pytest.mark.parametrize("make", ["maximum", "relu", "abs", "leaky_relu"])
def test_zero_pass_backs_of_derivative_rows_are_exactly_zero_in_jax(jax, make):
    # the internal rows' ZERO pass-backs were t * 0.0 in JAX: nan from an inf gradient
    f = {
        "maximum": lambda x: pyautograd.maximum(x, 0.5),
        "relu": lambda x: x.relu(),
        "abs": lambda x: x.abs(),
        "leaky_relu": lambda x: x.leaky_relu(0.1),
    }[make]
    import jax.numpy as jnp

    x, w = Value(2.0, label="x"), Value(0.0, label="w")
    (g,) = grad(f(x) * 3.0, [x], create_graph=True)
    out = g / w  # d out / d g is inf
    out.backward()
    fn, params = export.to_jax(out, [x])
    assert float(jax.grad(fn, argnums=1)(params, jnp.asarray(2.0))) == x.grad == 0.0


def test_a_dot_of_nothing_and_a_stack_of_constants_export(torch, jax):
    import jax.numpy as jnp

    x, y = Value(1.5, label="x"), Value(2.0, label="y")
    g = (x * 3.0)._inputs[1]  # the constant 3
    for out in (pyautograd.dot([], []) + x, pyautograd.dot([g, g], [x, y], y)):
        t_out = export.to_torch(out, [x, y])(*(torch.tensor(v.data, dtype=torch.float64) for v in (x, y)))
        fn, params = export.to_jax(out, [x, y])
        assert t_out.item() == float(fn(params, jnp.asarray(1.5), jnp.asarray(2.0))) == out.data


def test_labels_like_the_buffers_the_exporters_name_do_not_clash(torch):
    x, y = Value(1.0, label="x"), Value(2.0, label="y")
    c1, c2 = (x * 2.0)._inputs[1], (x * 3.0)._inputs[1]
    out = pyautograd.dot([c1, c2], [x, y]) * Value(0.5, label="const0")
    args = (torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    assert export.to_torch(out, [x, y])(*args).item() == out.data
    outs = [Value(3.0, label="output_const1") * 2.0, c1]
    assert [t.item() for t in export.to_torch(outs, [])()] == [6.0, 2.0]
