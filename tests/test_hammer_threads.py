"""Hammer test: 8 threads at once on one arena, sharing leaves, building, differentiating
and dropping graphs, replaying their own, switching no_grad on and off, and freeing graphs
that other threads built (handed over through a queue, sometimes differentiated there).
Every value is checked against closed forms; at the end each shared leaf's grad is the sum
of every backward's contribution, whichever thread ran it, and live nodes are back to
where they started. A few seconds.
"""

import math
import queue
import random
import threading

import pytest

from pyautograd import functional, no_grad
from pyautograd.arena import stats
from pyautograd.engine import Value

THREADS = 8
ROUNDS = 3000
N_SHARED = 6


pytestmark = pytest.mark.usefixtures("switch_often")  # tests/conftest.py


def live():
    return stats()["live_nodes"]


class Built:
    """A graph and what its backward must add to each shared leaf's grad."""

    def __init__(self, root, value, contributions):
        self.root, self.value, self.contributions = root, value, contributions


def build(shared, data, rng):
    """One of a few graph shapes over the shared leaves, with its value and d root / d
    shared leaf in closed form. data holds the shared leaves' values (never written)."""
    shape = rng.randrange(4)
    i, j = rng.randrange(N_SHARED), rng.randrange(N_SHARED)
    c = rng.uniform(-1, 1)
    grads = [0.0] * N_SHARED
    if shape == 0:  # tanh(xi * xj + c), i == j included
        y = math.tanh(data[i] * data[j] + c)
        grads[i] += (1 - y * y) * data[j]
        grads[j] += (1 - y * y) * data[i]
        return Built((shared[i] * shared[j] + c).tanh(), y, grads)
    if shape == 1:  # dot(w, shared) with private weights
        ws = [rng.uniform(-1, 1) for _ in range(N_SHARED)]
        root = functional.dot([Value(w) for w in ws], shared, c)
        return Built(root, c + sum(w * x for w, x in zip(ws, data)), ws)
    if shape == 2:  # exp(xi / (xj^2 + 1)) + sigmoid(xi) reusing a subexpression
        d = data[j] ** 2 + 1
        e = math.exp(data[i] / d)
        s = 1 / (1 + math.exp(-data[i]))
        grads[i] += e / d + s * (1 - s)
        grads[j] += -e * data[i] * 2 * data[j] / (d * d)
        q = shared[i] / (shared[j] ** 2 + 1)
        return Built(q.exp() + shared[i].sigmoid(), e + s, grads)
    # sum of relu(xk - c) over every shared leaf: a wide fan-in
    root = functional.sum([(x - c).relu() for x in shared])
    value = sum(max(x - c, 0.0) for x in data)
    return Built(root, value, [1.0 if x - c > 0 else 0.0 for x in data])


def close(a, b):
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


def test_eight_threads_hammer_one_arena():
    base = live()
    data = [0.3, -0.7, 1.1, 0.05, -1.4, 0.9]
    shared = [Value(x) for x in data]
    handoff = queue.Queue()
    totals = [[0.0] * N_SHARED for _ in range(THREADS)]  # each thread's backward contributions
    errors = []
    start = threading.Barrier(THREADS)

    def differentiate(built, k):
        built.root.backward()
        for n in range(N_SHARED):
            totals[k][n] += built.contributions[n]

    def worker(k):
        rng = random.Random(k)
        start.wait()
        for r in range(ROUNDS):
            built = build(shared, data, rng)
            assert close(built.root.data, built.value), (built.root.data, built.value)
            action = rng.randrange(5)
            if action == 0:
                differentiate(built, k)
            elif action == 1:
                handoff.put(built)  # someone else drops it (maybe after backward)
            elif action == 2:  # replay a private graph with new leaf data
                p = Value(rng.uniform(-2, 2))
                y = (p * p + shared[r % N_SHARED]).tanh()
                p.data = 0.5
                assert close(y.forward(), math.tanh(0.25 + data[r % N_SHARED]))
            elif action == 3:  # no_grad in this thread only
                with no_grad():
                    detached = build(shared, data, rng).root
                assert not detached._prev
            try:  # take over another thread's graph
                theirs = handoff.get_nowait()
            except queue.Empty:
                continue
            if rng.random() < 0.5:
                differentiate(theirs, k)
            del theirs
            del built

    def guarded(k):
        try:
            worker(k)
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    while not handoff.empty():
        handoff.get_nowait()
    assert live() == base + N_SHARED  # every graph, whoever built or dropped it, is gone
    for n, leaf in enumerate(shared):
        expected = sum(t[n] for t in totals)
        assert abs(leaf.grad - expected) <= 1e-9 * max(1.0, abs(expected)), (n, leaf.grad, expected)
    shared.clear()
    del leaf
    assert live() == base
