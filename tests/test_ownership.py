"""Ownership at the C boundary (invariant 7 in csrc/arena.h): every node id held outside a Value
owns its node, and nothing Python can call hands out or takes a raw reference.

One test (or a few) per way the public API could once be made to read freed nodes,
crash, or compute silently wrong values: generators of temporaries, sequences whose
length lies, optimizers holding raw ids, anomaly mode on constants, constructors and
pickles that forged references, sub-interpreters, memory never given back, private
entry points trusting any id. The random mixes and the signal injection are in
test_stateful.py and test_signals.py.
"""

import gc
import importlib
import numbers
import pickle
import subprocess
import sys
import tempfile
import textwrap

import pytest

import pyautograd
from pyautograd import arena, losses, nn, optim, viz
from pyautograd._ag import ffi, lib
from pyautograd.engine import Value


def live():
    return arena.stats()["live_nodes"]


# ---- 1. generators of temporaries ----


def test_sum_of_a_generator_of_temporaries():
    base = live()
    xs = [Value(float(i)) for i in range(1, 6)]
    total = pyautograd.sum(x * 2 for x in xs)
    assert total.data == 30.0
    total.backward()
    assert [x.grad for x in xs] == [2.0] * 5
    # the temporaries live on as the sum's inputs, each with its one Value
    products = total._inputs
    assert [p.data for p in products] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert len({id(p) for p in products}) == 5 and all(p._id != x._id for p in products for x in xs)
    del total, products
    assert live() == base + 5


@pytest.mark.parametrize(
    "make",
    [
        lambda xs: pyautograd.dot((x * 1.0 for x in xs), (x + 0.0 for x in xs)),
        lambda xs: pyautograd.dot(xs, (x * 1.0 for x in xs), start=sum(x for x in xs)),
        lambda xs: pyautograd.sum((x * 2 for x in xs), start=xs[0] * 3),
        lambda xs: losses.mse((x * 1.0 for x in xs), (0.5 for _ in xs)),
        lambda xs: pyautograd.sum(pyautograd.softmax(x * 1.0 for x in xs)),
    ],
    ids=["dot", "dot-start", "sum-start", "mse", "softmax"],
)
def test_fused_ops_over_generators_equal_the_same_over_lists(make):
    xs = [Value(0.1 * i - 0.2) for i in range(5)]
    from_generator = make(xs)
    from_generator.backward()
    grads = [x.grad for x in xs]
    for x in xs:
        x.grad = 0.0
    listed = make(list(xs))  # the same function of the same Values: the generators are listed
    listed.backward()
    assert from_generator.data == listed.data
    assert grads == [x.grad / 1.0 for x in xs] or all(
        abs(g - x.grad) <= 1e-12 * max(1.0, abs(g)) for g, x in zip(grads, xs)
    )


def test_neuron_layer_and_mlp_take_generators():
    for model in (nn.Neuron(5), nn.Layer(5, 3), nn.MLP(5, [4, 1])):
        xs = [Value(0.1 * i) for i in range(5)]
        from_generator = model(x * 1.0 for x in xs)
        from_list = model([x * 1.0 for x in xs])
        values = lambda out: [o.data for o in (out if isinstance(out, list) else [out])]
        assert values(from_generator) == values(from_list)


def test_summary_and_forward_after_generators_stay_right():
    base = live()
    for _ in range(50):
        xs = [Value(float(i)) for i in range(1, 6)]
        total = pyautograd.sum(x * 2 for x in xs)
        s = viz.summary(total)
        assert (s.nodes, s.ops["sum"], s.ops["*"]) == (16, 1, 5)  # 5 leaves, 5 consts, 5 *, 1 sum
        xs[0].data = 10.0
        assert total.forward() == 48.0
    del xs, total
    assert live() == base


# ---- 2. a sequence whose len() disagrees with its iteration ----


class LyingSequence:
    """len() says 16; iterating yields only 2 items."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return 16

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, i):
        return self.items[i]


class ShrinkingReal(numbers.Real):
    """A real number whose __float__ empties the list it sits in."""

    def __init__(self, victim):
        self.victim = victim

    def __float__(self):
        self.victim.clear()
        return 0.5

    # the rest of numbers.Real, never used here
    __abs__ = __add__ = __ceil__ = __eq__ = __floor__ = __floordiv__ = __le__ = __lt__ = __mod__ = __mul__ = __neg__ = (
        __pos__
    ) = __pow__ = __radd__ = __rfloordiv__ = __rmod__ = __rmul__ = __round__ = __rpow__ = __rtruediv__ = __truediv__ = (
        __trunc__
    ) = lambda *a: NotImplemented
    __hash__ = object.__hash__


@pytest.mark.parametrize("model", [nn.Layer(16, 4), nn.MLP(16, [4, 1])], ids=["Layer", "MLP"])
def test_a_lying_length_gets_a_clear_error(model):
    with pytest.raises(ValueError, match="takes 16 inputs, got 2"):
        model(LyingSequence([Value(1.0), Value(2.0)]))


def test_a_number_that_shrinks_its_list_changes_nothing_here():
    layer = nn.Layer(3, 2)
    xs = [Value(1.0), None, Value(2.0)]
    xs[1] = ShrinkingReal(xs)
    out = layer(xs)
    expected = layer([Value(1.0), 0.5, Value(2.0)])
    assert [o.data for o in out] == [e.data for e in expected]


# ---- 3. optimizers own their parameters' nodes ----


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=1.0), lambda p: optim.Adam(p, lr=1.0)])
def test_an_optimizer_keeps_its_parameters_whatever_happens_to_its_list(make):
    w = Value(3.0)
    opt = make([w])
    w.grad = 1.0
    opt.params.clear()
    del w
    gc.collect()
    v = Value(100.0)  # may reuse a freed slot: it must not be the parameter's
    v.grad = 7.0
    opt.step()
    opt.zero_grad()
    assert (v.data, v.grad) == (100.0, 7.0)
    assert opt._nodes[0].data != 3.0  # the parameter itself took the step


# ---- 4. detect_anomaly and the gradients of constants ----


def test_anomaly_mode_does_not_compute_the_gradient_of_a_constant_exponent():
    x = Value(1.0)
    with pyautograd.detect_anomaly():
        y = (x - 3.0) ** 2  # d/d exponent would be out * log(-2): nan, but nobody needs it
        y.backward()
    assert x.grad == -4.0
    exponent = [c for c in y._prev if c.data == 2.0][0]
    assert exponent.grad == 0.0  # constants get no gradient


# ---- 5. constructors that fail make nothing ----


def test_new_with_a_foreign_class_makes_no_node():
    base = live()
    for _ in range(100):
        with pytest.raises(TypeError):
            Value.__new__(int, 1.0)
        with pytest.raises(TypeError):
            Value("x")
        with pytest.raises(TypeError):
            Value(1.0, (Value(2.0), 3.0))
    assert live() == base


# ---- 6. no reference can be forged ----


def test_no_python_callable_makes_a_value_from_an_id():
    v = Value(1.0)
    assert type(v).__mro__ == (Value, object)
    assert not hasattr(Value, "_from_node")
    for forge in (lambda: Value.__new__(Value, v._id), lambda: pyautograd._ag.NodeList([v._id])):
        made = forge()
        node = made[0] if isinstance(made, pyautograd._ag.NodeList) else made
        assert node is not v and node._id != v._id  # a new leaf holding the number, not v's node


def test_the_cffi_library_has_no_reference_counting_or_node_making_functions():
    names = set(dir(lib))
    for forbidden in (
        "ag_incref",
        "ag_decref",
        "ag_decref_many",
        "ag_leaf",
        "ag_apply",
        "ag_apply1",
        "ag_apply2",
        "ag_sum",
        "ag_dot",
        "ag_custom",
        "ag_layer",
        "ag_backward",
        "ag_forward",
        "ag_data",
        "ag_set_data",
        "ag_input",
    ):
        assert forbidden not in names, forbidden


def test_a_crafted_pickle_cannot_reach_a_node():
    v = Value(2.0)
    crafted = pickle.dumps(v).replace(b"_restore", b"_restore")  # the real loader, any data
    assert pickle.loads(crafted)._id != v._id
    # _restore with another class, or NodeList with v's id, makes nothing of v's
    from pyautograd.engine import _restore

    with pytest.raises(TypeError):
        _restore(int, 1.0, 0.0, "")
    assert pickle.loads(pickle.dumps(pyautograd._ag.NodeList)) is pyautograd._ag.NodeList


# ---- 7. sub-interpreters and reloads ----


@pytest.mark.parametrize("main_first", [False, True], ids=["sub first", "main first"])
def test_a_sub_interpreter_gets_an_import_error_and_the_main_one_still_imports(main_first):
    # main first: the sub-interpreter once got a copy of the cffi module without the
    # Value type, and an AttributeError instead of the ImportError
    script = textwrap.dedent("""
        import _xxsubinterpreters as interpreters
        if MAIN_FIRST:
            import pyautograd
        sub = interpreters.create()
        try:  # up to 3.12 run_string raises the sub-interpreter's exception; 3.13 returns it
            failure = interpreters.run_string(sub, "import pyautograd")
        except Exception as error:
            failure = error
        if failure is None:
            raise AssertionError("the sub-interpreter imported pyautograd")
        message = str(getattr(failure, "msg", failure))
        # ours on 3.11; from 3.12 cffi's own module refuses first, as clearly
        assert "sub-interpreter" in message or "subinterpreters" in message, message
        kind = getattr(getattr(failure, "type", None), "__name__", None) or str(failure)
        assert "ImportError" in kind, kind
        interpreters.destroy(sub)
        import pyautograd
        from pyautograd.engine import Value
        x = Value(2.0); y = x * x; y.backward()
        assert x.grad == 4.0
        print("ok")
    """)
    script = script.replace("MAIN_FIRST", str(main_first))
    if sys.version_info >= (3, 13):
        script = script.replace("_xxsubinterpreters", "_interpreters")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=60
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_reloading_the_engine_keeps_one_value_class():
    from pyautograd import engine, functional

    x = Value(1.0)
    importlib.reload(engine)
    assert engine.Value is Value
    y = engine.Value(2.0) * x
    assert isinstance(y, Value)
    assert functional.sum([x, y]).data == 3.0
    assert nn.Neuron(2)([x, y]).data >= 0.0


# ---- 8. memory goes back ----


@pytest.mark.stress
def test_a_big_graph_gives_its_memory_back_when_it_dies():
    script = textwrap.dedent("""
        from pyautograd import arena
        from pyautograd.engine import Value

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        x = Value(0.5)
        warm = x * 2  # the first blocks and buffers exist
        del warm
        start, start_bytes = rss(), arena.stats()["bytes"]
        y = x
        for _ in range(2_000_000):
            y = y * 1.0000001 + 0.001   # 3 nodes a step: 6M nodes
        y.backward()
        peak = arena.stats()["bytes"]
        del y
        after = rss()
        assert peak - start_bytes > 200e6, peak
        assert arena.stats()["bytes"] - start_bytes < 2 * 21e6 + 4e6, arena.stats()  # 2x the reserve
        with open("/proc/self/maps") as maps:
            sanitized = "libasan" in maps.read()  # AddressSanitizer keeps freed memory a while
        assert sanitized or after - start < 80e6, (start, after)
        print("ok", (after - start) / 1e6)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir()
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_a_training_loop_keeps_its_blocks():
    model = nn.MLP(2, [8, 1])
    capacities = []
    for _ in range(20):
        loss = sum((model([0.1 * i, 0.2]) - 1.0) ** 2 for i in range(10))
        loss.backward()
        del loss
        capacities.append(arena.stats()["capacity"])
    assert len(set(capacities[1:])) == 1


# ---- 9. entry points that take ids check them ----


@pytest.mark.parametrize("bad", [0, 10**9, 2**31 - 1, 2**32 - 1])
def test_entry_points_that_take_ids_refuse_ids_that_are_not_live_nodes(bad):
    ids = ffi.new("ag_id[]", [bad])
    assert lib.ag_zero_grads(ids, 1) == lib.AG_EINVALID
    assert lib.ag_sgd_step(ids, 1, 0.1, 0.0, 0.0, ffi.NULL, 1) == lib.AG_EINVALID
    buffers = [ffi.new("double[]", 1) for _ in range(2)]
    steps = ffi.new("long long[1]")
    assert lib.ag_adam_step(ids, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0, steps, *buffers) == lib.AG_EINVALID
    assert steps[0] == 0  # counted only by a step taken


def test_a_freed_id_is_refused_too():
    v = Value(1.0)
    stale = v._id
    del v
    gc.collect()
    ids = ffi.new("ag_id[]", [stale])
    if all(w._id != stale for w in [Value(2.0)]):  # nothing reused the slot
        assert lib.ag_zero_grads(ids, 1) == lib.AG_EINVALID
