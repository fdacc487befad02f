"""pickle, copy.copy and copy.deepcopy of Values and nn models.

A Value travels as a leaf with its data, grad and label: the graph that made it does not
travel (a non-leaf arrives as a leaf, _prev empty). Within one pickle, one Python object
stays one object (pickle's memo). Models arrive with the same parameters, independent of
the original's (deepcopy, pickle) or shared with it (copy.copy, as for any Python object).
"""

import copy
import gc
import math
import pickle

import pytest

from pyautograd import arena, nn
from pyautograd.engine import Value


def live():
    return arena.stats()["live_nodes"]


def by_pickle(protocol):
    return lambda v: pickle.loads(pickle.dumps(v, protocol=protocol))


ROUND_TRIPS = {f"pickle-{p}": by_pickle(p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
ROUND_TRIPS.update({"copy": copy.copy, "deepcopy": copy.deepcopy})
trips = pytest.mark.parametrize("trip", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))


@trips
def test_a_leaf_keeps_data_grad_and_label(trip):
    v = Value(-2.5, label="weight ω")
    v.grad = 0.125
    w = trip(v)
    assert (w.data, w.grad, w.label) == (-2.5, 0.125, "weight ω")
    assert w != v  # a new node: changing one leaves the other alone
    w.data, w.grad = 7.0, 1.0
    assert (v.data, v.grad) == (-2.5, 0.125)


@trips
def test_a_non_leaf_becomes_a_leaf_with_its_data_and_grad(trip):
    x = Value(0.5)
    y = (x * 3).tanh() + x
    y.label = "y"
    y.backward()
    z = trip(y)
    assert (z.data, z.grad, z.label) == (y.data, y.grad, "y")
    assert z._prev == set() and z._op == ""
    z.backward()  # differentiates only itself
    assert z.grad == y.grad + 1 and x.grad == 1 + 3 * (1 - math.tanh(1.5) ** 2)


@trips
def test_ieee_values_survive(trip):
    for x in (math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308):
        assert trip(Value(x)).data == x
        assert math.copysign(1.0, trip(Value(x)).data) == math.copysign(1.0, x)
    assert math.isnan(trip(Value(math.nan)).data)
    v = Value(1.0)
    v.grad = math.nan
    assert math.isnan(trip(v).grad)


def test_one_object_twice_in_a_pickle_stays_one_object():
    v = Value(1.0)
    a, b = pickle.loads(pickle.dumps([v, v]))
    assert a is b
    a2, b2 = copy.deepcopy([v, v])
    assert a2 is b2


def test_the_graph_does_not_travel():
    x = Value(1.0)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    assert len(pickle.dumps(y)) < 200


def test_copies_leak_nothing():
    gc.collect()  # earlier tests' cycles, which a GC pass here would free mid-count
    base = live()
    values = [Value(float(i), label=f"v{i}") for i in range(100)]
    for trip in ROUND_TRIPS.values():
        copies = [trip(v) for v in values]
        assert live() == base + 200
        del copies
    del values
    assert live() == base


# ---- nn models ----


def same_parameters(a, b):
    pa, pb = a.parameters(), b.parameters()
    return len(pa) == len(pb) and [(p.data, p.grad, p.label) for p in pa] == [(p.data, p.grad, p.label) for p in pb]


def trained_model():
    model = nn.MLP(3, [4, 4, 1])
    out = model([0.5, -1.0, 2.0])
    out.backward()  # grads travel too
    model.parameters()[0].label = "first weight"
    return model


@pytest.mark.parametrize(
    "trip", [by_pickle(pickle.HIGHEST_PROTOCOL), by_pickle(0), copy.deepcopy], ids=["pickle", "pickle-0", "deepcopy"]
)
def test_a_model_round_trips_with_the_same_independent_parameters(trip):
    model = trained_model()
    clone = trip(model)
    assert type(clone) is nn.MLP and repr(clone) == repr(model)
    assert same_parameters(clone, model)
    assert not set(clone.parameters()) & set(model.parameters())  # new nodes
    x = [0.25, 0.5, -0.75]
    assert clone(x).data == model(x).data
    for p in clone.parameters():  # training the clone leaves the original alone
        p.data += 1.0
    assert clone(x).data != model(x).data
    assert [p.data + 1.0 for p in model.parameters()] == [p.data for p in clone.parameters()]


def test_a_shallow_copy_of_a_model_shares_its_parameters():
    model = trained_model()
    twin = copy.copy(model)
    assert twin.parameters() == model.parameters()
    x = [0.1, 0.2, 0.3]
    assert twin(x).data == model(x).data


@pytest.mark.parametrize(
    "module",
    [
        lambda: nn.Neuron(3),
        lambda: nn.Neuron(3, nonlin=False),
        lambda: nn.Layer(3, 2),
        lambda: nn.Layer(3, 2, nonlin=False),
    ],
    ids=["relu-neuron", "linear-neuron", "relu-layer", "linear-layer"],
)
def test_neurons_and_layers_round_trip(module):
    m = module()
    clone = pickle.loads(pickle.dumps(m))
    assert repr(clone) == repr(m) and same_parameters(clone, m)
    x = [Value(-0.5), Value(1.5), Value(0.25)]
    out, out_clone = m(x), clone(x)
    if isinstance(out, list):
        assert [o.data for o in out] == [o.data for o in out_clone]
    else:
        assert out.data == out_clone.data


def test_models_leak_nothing_when_copied():
    base = live()
    model = trained_model()
    after_model = live()
    clones = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    assert live() == after_model + 2 * len(model.parameters())
    del clones, model
    assert live() == base
