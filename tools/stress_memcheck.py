"""A workload for memory checkers: touches every C entry point pyautograd has, on small
graphs, then checks that every node was freed. CI runs it under valgrind memcheck (the
normal build) and under AddressSanitizer + LeakSanitizer (the sanitized build), where
any invalid read or write, use of uninitialised memory or leaked block of ours fails.

Deliberately small (valgrind runs Python ~50x slower) and free of numpy/torch, whose own
noise would drown ours. Exits non-zero when live nodes do not return to zero.
Usage: python tools/stress_memcheck.py [rounds]
"""

import copy
import math
import pickle
import sys
import threading

import pyautograd
import gc
import weakref

from pyautograd import arena, functional, losses, nn, optim, viz
from pyautograd.engine import OP_NAMES, Value

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
BINARY = ["__add__", "__sub__", "__mul__", "__truediv__", "__pow__"]
REFLECTED = ["__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__rpow__"]
UNARY = ["__neg__", "relu", "tanh", "exp", "log", "sigmoid"]


def every_op(x, y):
    """One node per op and operand form, sharing inputs; returns the list of results."""
    out = []
    for name in BINARY:
        out.append(getattr(x, name)(y))
        out.append(getattr(x, name)(1.5))
    for name in REFLECTED:
        out.append(getattr(y, name)(0.5))
    for name in UNARY:
        out.append(getattr(x, name)())
    out.append(x + x)  # one input twice
    out.append(x**x)  # Value exponent, same node as base
    return out


def graphs_and_sweeps():
    x, y = Value(0.7, label="x"), Value(-1.2, label="y")
    nodes = every_op(x, y)
    nodes += [functional.sum(nodes), functional.dot(nodes, list(reversed(nodes)), x)]
    wide = functional.dot([Value(i * 0.01) for i in range(100)], [x] * 100, 1.0)  # > 64: heap scratch
    total = functional.sum(nodes + [wide], y)
    total.label = "total"
    total.label = "renamed"  # replaces a label
    nodes[0].label = ""  # removes one
    hand_made = Value(3.0, (x, y, total), "custom-op")
    hand_made.backward()  # passes no gradient; the graph stays alive through it
    total.backward()
    total.backward()  # grads add once per call
    for v in (x, y):
        v.data += 0.1
    total.forward()  # compiles and caches the order and tape
    total.backward()  # through the tape
    size = arena.graph_size(total)
    assert viz.summary(total).nodes == size and len(viz.to_dot(total, max_nodes=None)) > size
    _ = [v._prev for v in nodes] + [v._op for v in nodes] + [repr(total), hand_made._op]
    nn.Module.zero_grad(type("Params", (nn.Module,), {"parameters": lambda self: nodes})())
    softmax = functional.softmax([x, y, total])
    log_softmax = functional.log_softmax([x, y, 2.0])
    (softmax[0] + log_softmax[1]).backward()
    assert math.isfinite(total.data)


def order_cache_eviction():
    x = Value(1.0)
    roots = [(x * i).tanh() + i for i in range(40)]  # more roots than the cache holds
    for _ in range(2):
        for r in roots:
            r.forward()
            r.backward()
    del roots[::2]  # cached roots die: their orders and tapes are freed


def deep_chain(n=20_000):
    x = Value(0.5)
    y = x
    for _ in range(n):
        y = (y * 0.999).tanh()
    y.backward()
    y.forward()
    assert 0 < x.grad < 1


def training():
    model = nn.MLP(3, [8, 8, 1])
    data = [([0.1 * i, -0.2 * i, 0.3], 1.0 if i % 2 else -1.0) for i in range(8)]
    for opt in (
        optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4),
        optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4),
    ):
        for _ in range(3):
            scores = [model(x) for x, _ in data]
            loss = losses.hinge(scores, [t for _, t in data])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clone = pickle.loads(pickle.dumps(model))
    twin = copy.deepcopy(model)
    assert [p.data for p in clone.parameters()] == [p.data for p in twin.parameters()]
    replayed = model([0.5, 0.5, 0.5])
    replayed.forward()


def expect(error, action):
    try:
        action()
    except error:
        return
    raise AssertionError(f"{error.__name__} not raised")


def modes_and_failures():
    x = Value(2.0)
    with pyautograd.no_grad():
        detached = (x * 3).tanh() + x
    assert not detached._prev
    with pyautograd.detect_anomaly():
        expect(FloatingPointError, lambda: Value(0.0).log())
        expect(FloatingPointError, lambda: x / 0)
        expect(FloatingPointError, lambda: Value(1000.0).exp())
        expect(FloatingPointError, ((Value(0.0) ** 0.5) * 1.0).backward)  # sqrt'(0) is inf
        leaf = Value(-1.0)
        replay = (leaf + 2.0).log()
        leaf.data = -3.0
        expect(FloatingPointError, replay.forward)  # nan on replay
    base = arena.stats()["live_nodes"]
    makers = [
        lambda: Value(1.0),
        lambda: x + x,
        lambda: x + 2.0,
        lambda: 2.0**x,
        lambda: x.tanh(),
        lambda: functional.sum([x, x]),
        lambda: functional.dot([x, 1.0], [x, x], 3.0),
        lambda: Value(1.0, (x,), "c"),
        lambda: nn.Layer(2, 2)([x, x]),
    ]
    for make in makers:
        for headroom in range(4):
            arena.set_node_limit(base + headroom)
            try:
                make()
            except MemoryError:
                pass
            arena.set_node_limit(0)
    assert arena.stats()["live_nodes"] == base


def threads():
    shared = [Value(0.1 * i) for i in range(8)]
    handoff = []

    def work(k):
        for i in range(50):
            y = sum((w * shared[(i + j) % 8]).tanh() for j, w in enumerate(shared))
            y.backward()
            handoff.append(y)  # dropped by whichever thread pops it
            if len(handoff) > 4:
                handoff.pop(0)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    handoff.clear()


def python_side():
    """Identity, attributes, weak references, Python-written ops, local-grad nodes,
    subclasses: the Values that carry Python state, pinned by their nodes."""

    class Sub(Value):
        def __init__(self, data, name=""):
            super().__init__(data, label=name)
            self.name = name

        def square(self):
            out = Value(self.data**2, (self,), "square")

            def _backward():
                self.grad += 2 * self.data * out.grad

            out._backward = _backward  # a cycle: out -> dict -> closure -> cell -> out
            return out

    x = Sub(0.5, "x")
    h = x.square() * 3.0
    h.tag = "h"
    ref = weakref.ref(h)
    local = Value(h.data + x.data, (h, x), (1.0, 1.0))
    out = (local * x).tanh() + functional.sum(y for y in [h * 2, x * 1.0])  # a generator of temporaries
    del h
    assert [c.tag for c in local._prev if getattr(c, "tag", None)] == ["h"] and ref() is not None
    out.backward()
    out._backward()
    local._backward()
    nodes = optim.SGD([x], lr=0.1)
    nodes.step()
    del out, local, nodes
    gc.collect()
    assert ref() is None


def pickling():
    v = Value(1.5, label="v")
    w = (v * 2).exp()
    w.backward()
    for clone in (pickle.loads(pickle.dumps(w)), copy.copy(w), copy.deepcopy(w)):
        assert clone.data == w.data and clone.grad == w.grad and not clone._prev


def main():
    base = arena.stats()["live_nodes"]
    for _ in range(ROUNDS):
        graphs_and_sweeps()
        order_cache_eviction()
        deep_chain()
        training()
        modes_and_failures()
        threads()
        python_side()
        pickling()
    live = arena.stats()["live_nodes"]
    print(f"stress_memcheck: {ROUNDS} rounds over {len(OP_NAMES)} ops, live nodes {base} -> {live}")
    if live != base:
        sys.exit(f"stress_memcheck: {live - base} nodes leaked")


if __name__ == "__main__":
    main()
