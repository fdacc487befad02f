"""Memory faults: when the arena cannot grow, ops raise MemoryError and everything else
keeps working. Real allocation failure comes from a low address-space limit
(RLIMIT_AS) in a subprocess; the deterministic path from pyautograd.arena.set_node_limit.
Also: 10,000 training-like iterations leak no node and no byte (pyautograd.arena.stats).
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest

from pyautograd import arena, losses, nn
from pyautograd.engine import Value


def live():
    return arena.stats()["live_nodes"]


def sanitized():
    """AddressSanitizer reserves terabytes of address space: no RLIMIT_AS under it."""
    with open("/proc/self/maps") as maps:
        return os.environ.get("PYAUTOGRAD_SANITIZED") or "libasan" in maps.read()


# ---- real allocation failure, in a subprocess with little address space ----

ADDRESS_SPACE_SCRIPT = textwrap.dedent("""
    import math, resource
    from pyautograd import arena
    from pyautograd.engine import Value

    # a small graph made before memory runs out, with known gradients
    a, b = Value(2.0), Value(-3.0)
    small = (a * b + a.tanh()).exp()
    small.backward()          # once now, so its sweep's scratch buffers exist before the limit
    for v in (a, b):
        v.grad = 0.0
    base = arena.stats()["live_nodes"]

    def vm_bytes():
        with open("/proc/self/status") as status:
            kb = next(int(l.split()[1]) for l in status if l.startswith("VmSize:"))
        return kb * 1024

    unlimited = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + {headroom}, unlimited[1]))
    chain, n = b, 0
    try:
        while True:            # only the arena grows: one Python Value alive at a time
            chain = chain + b
            n += 1
    except MemoryError as error:
        message = str(error)
    assert "out of memory" in message and "+" in message, message
    assert n > 100_000, n     # it really grew before failing
    assert arena.stats()["live_nodes"] == base + n

    # what exists still works: its values, and backward (or a clean MemoryError when
    # the sort's scratch space cannot be had, leaving every grad as it was)
    assert chain.data == -3.0 * (n + 1)
    try:
        chain.backward()
        assert b.grad == n + 1, (b.grad, n)
    except MemoryError:
        assert b.grad == 0.0 and chain.grad == 0.0
    b.grad = 0.0

    del chain
    assert arena.stats()["live_nodes"] == base, arena.stats()
    small.backward()          # still under the limit: it needs no new memory
    expected_a = math.exp(-6 + math.tanh(2)) * (-3 + 1 - math.tanh(2) ** 2)
    expected_b = math.exp(-6 + math.tanh(2)) * 2
    assert math.isclose(a.grad, expected_a, rel_tol=1e-12), a.grad
    assert math.isclose(b.grad, expected_b, rel_tol=1e-12), b.grad

    # the dead chain's blocks went back to the system, beyond a reserve of 2^19 nodes
    assert arena.stats()["capacity"] < (1 << 19) + 3 * 4096, arena.stats()

    # with the limit lifted, a new deep graph differentiates right
    resource.setrlimit(resource.RLIMIT_AS, unlimited)
    x = Value(1.0)
    y = x
    for _ in range(n // 2):
        y = y + x
    y.backward()
    assert x.grad == n // 2 + 1
    del x, y
    assert arena.stats()["live_nodes"] == base
    print("ok", n)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_running_out_of_address_space_raises_memory_error_and_recovers(tmp_path):
    if sanitized():
        pytest.skip("AddressSanitizer needs more address space than the limit leaves")
    script = ADDRESS_SPACE_SCRIPT.replace("{headroom}", str(96 << 20))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    # run from elsewhere: from the repository root, `import pyautograd` finds the source tree
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.startswith("ok ")


# ---- the deterministic path: a cap on live nodes ----


def test_graph_built_up_to_the_limit_keeps_working(node_limit):
    base = live()
    xs = [Value(0.1 * i) for i in range(10)]
    node_limit(base + 10 + 500)
    terms = []
    with pytest.raises(MemoryError, match="out of memory"):
        for i in range(1000):
            terms.append((xs[i % 10] * xs[(i + 1) % 10]).tanh())
    assert live() == base + 10 + 500
    built = len(terms)
    assert built == 250  # two nodes per term
    node_limit(0)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    total.backward()
    # d total / d x_j in closed form: each term tanh(p q) adds (1 - tanh(p q)^2) q to p's
    for j, x in enumerate(xs):
        expected = 0.0
        for i in range(built):
            p, q = xs[i % 10].data, xs[(i + 1) % 10].data
            d = 1 - math.tanh(p * q) ** 2
            expected += d * ((q if i % 10 == j else 0.0) + (p if (i + 1) % 10 == j else 0.0))
        assert abs(x.grad - expected) <= 1e-12 * max(1.0, abs(expected)), (j, x.grad, expected)
    del terms, total, t
    assert live() == base + 10


def test_a_model_that_hits_the_limit_mid_forward_recovers(node_limit):
    model = nn.MLP(3, [16, 16, 1])
    base = live()
    x = [0.5, -1.0, 2.0]
    node_limit(base + 40)  # far fewer than one forward pass needs
    with pytest.raises(MemoryError):
        model(x)
    assert live() == base  # the half-made pass left nothing behind
    node_limit(0)
    out = model(x)
    out.backward()
    assert any(p.grad != 0.0 for p in model.parameters())
    del out
    assert live() == base


# ---- no leak over many training-like iterations ----


def test_ten_thousand_training_iterations_leak_nothing():
    base = live()
    model = nn.MLP(2, [4, 1])
    data = [([1.0, -1.0], 1.0), ([-0.5, 0.25], -1.0), ([0.3, 0.8], 1.0)]

    def step(i):
        x, y = data[i % len(data)]
        score = model(x)
        loss = (1 + -y * score).relu() + 1e-4 * sum((p * p for p in model.parameters()), Value(0.0))
        loss.label = f"loss {i}"  # labels live in a side table: freed with the node
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.01 * p.grad
        if i % 7 == 0:
            loss.forward()  # cached order and tape, dropped with the root
        return loss.data

    for i in range(100):  # warm up: the arena and scratch buffers reach size
        step(i)
    before = arena.stats()
    for i in range(10_000):
        step(i)
    after = arena.stats()
    assert after["live_nodes"] == before["live_nodes"] == base + len(model.parameters())
    assert after["capacity"] == before["capacity"]
    assert after["bytes"] == before["bytes"]


def test_loss_functions_in_a_loop_leak_nothing():
    base = live()
    model = nn.MLP(2, [3, 2])
    batch = [[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6]]
    for i in range(200):
        scores = [model(x) for x in batch]
        loss = losses.cross_entropy(scores, [0, 1, 0]) + losses.mse([s[0] for s in scores], [0.0, 1.0, 0.5])
        model.zero_grad()
        loss.backward()
        if i == 50:
            before = arena.stats()
    del scores, loss
    assert live() == base + len(model.parameters())
    assert arena.stats()["capacity"] == before["capacity"]
