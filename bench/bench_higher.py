"""Benchmark: Hessian-vector products against a first-order backward, on one ~10^5-node graph.

The graph is bench_core.py's big graph with tanh for relu, so second derivatives are not
all 0: sum over k of tanh(w[k] * x[k'] + b), summed pairwise (about 4 nodes per term).
Its parameters are every leaf (the w's, the x's and b). Measured, interleaved (one of
each per round, so a busy moment of the shared machine hits all of them alike), best of
the rounds:
  backward       root.backward()                                 (the yardstick)
  grad           grad(root, params): the same sweep, no .grad touched
  grad, graph    grad(root, params, create_graph=True): the gradient as Values
  hvp            pyautograd.hvp(root, params, v): forward over reverse on dual numbers,
                 two sweeps and no new nodes (csrc/tangents.c)
  jvp            pyautograd.jvp(root, params, v): one forward tangent sweep
  HVP            grad(create_graph=True), dot with a vector v, grad again: H v by double
                 backward, through a derivative graph
and prints each cost as a multiple of backward's, against the targets (hvp: at most 3x,
issue 19; double backward: at most 8x, issue 12); that the two H v agree; the size of the
derivative graph (nodes the gradient's graph adds to the arena, and
the nodes under v . gradient); that H v agrees with central differences of the gradient
(replayed with forward()); and that every node of the derivative graphs is freed once
the Values holding them go.

    python bench/bench_higher.py [--terms 25000] [--rounds 7] [--quick]

Not a test: nothing here asserts; tests/test_higher_order.py checks correctness.
"""

import argparse
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time

from pyautograd import dot, grad, hvp as hvp_dual, jvp
from pyautograd.arena import graph_size, stats
from pyautograd.engine import Value

TARGET = 8.0  # issue 12: an HVP by double backward costs at most 8x a first-order backward
TARGET_DUAL = 3.0  # issue 19: pyautograd.hvp costs at most 3x


def build_graph(n_terms, n_leaves=1000):
    """sum over k of tanh(w[k] * x[(7k) % n] + b), summed pairwise: ~4 nodes per term."""
    ws = [Value(math.sin(i)) for i in range(n_leaves)]
    xs = [Value(math.cos(i)) for i in range(n_leaves)]
    b = Value(0.1)
    level = [(ws[k % n_leaves] * xs[(7 * k) % n_leaves] + b).tanh() for k in range(n_terms)]
    while len(level) > 1:
        pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0], ws + xs + [b]


def direction(n):
    """A fixed vector v, entries in [-1, 1]."""
    return [math.sin(0.37 * i + 1.0) for i in range(n)]


def hvp(root, params, v):
    """H v by double backward: grad with create_graph, dot with v, grad again."""
    first = grad(root, params, create_graph=True)
    return grad(dot(first, v), params)


def hvp_parts(root, params, v):
    """Seconds of each part of one HVP: the gradient as Values, the dot with v, the grad
    of that, and freeing the derivative graph."""
    t0 = time.perf_counter()
    first = grad(root, params, create_graph=True)
    t1 = time.perf_counter()
    s = dot(first, v)
    t2 = time.perf_counter()
    result = grad(s, params)
    t3 = time.perf_counter()
    del first, s, result
    t4 = time.perf_counter()
    return {"grad, graph": t1 - t0, "dot with v": t2 - t1, "grad of that": t3 - t2, "free": t4 - t3, "HVP": t4 - t0}


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    del result  # the derivative graph's freeing is part of the cost
    return time.perf_counter() - t0


def measure(root, params, v, rounds):
    """Each measurement's times over interleaved rounds (seconds), with the cyclic GC
    off while timing (nothing here makes cycles) and run between measurements."""
    runs = {
        "backward": lambda: {"backward": timed(root.backward)},
        "grad": lambda: {"grad": timed(lambda: grad(root, params))},
        "hvp": lambda: {"hvp": timed(lambda: hvp_dual(root, params, v))},
        "jvp": lambda: {"jvp": timed(lambda: jvp(root, params, v))},
        "HVP": lambda: hvp_parts(root, params, v),
    }
    times = {}
    gc.disable()
    try:
        for _ in range(rounds):
            for run in runs.values():
                gc.collect()
                for name, t in run().items():
                    times.setdefault(name, []).append(t)
    finally:
        gc.enable()
    return times


def fresh_child(n_terms):
    """In a subprocess: the first HVP in a fresh arena (its nodes come in creation order)
    against the best of 5 backwards; prints the two times."""
    root, params = build_graph(n_terms)
    v = direction(len(params))
    back = min(timed(root.backward) for _ in range(5))
    gc.disable()
    print(back, hvp_parts(root, params, v)["HVP"])


def fresh(n_terms):
    here = os.path.abspath(__file__)
    done = subprocess.run(
        [sys.executable, here, "--fresh-child", str(n_terms)], capture_output=True, text=True, check=True
    )
    back, first_hvp = map(float, done.stdout.split())
    return back, first_hvp


def derivative_graph_size(root, params, v):
    """(nodes the gradient's graph adds to the arena, nodes under v . gradient)."""
    gc.collect()
    before = stats()["live_nodes"]
    first = grad(root, params, create_graph=True)
    added = stats()["live_nodes"] - before
    under = graph_size(dot(first, v))
    return added, under


def check_against_differences(root, params, v, eps=1e-6):
    """Largest |H v - central difference of the gradient along v|, relative to max |H v|."""
    got = [h.data for h in hvp(root, params, v)]
    saved = [p.data for p in params]
    slopes = []
    for sign in (1.0, -1.0):
        for p, p0, vi in zip(params, saved, v):
            p.data = p0 + sign * eps * vi
        root.forward()  # replays the graph from the moved leaves
        slopes.append([g.data for g in grad(root, params)])
    for p, p0 in zip(params, saved):
        p.data = p0
    root.forward()
    numeric = [(up - down) / (2 * eps) for up, down in zip(*slopes)]
    scale = max(abs(x) for x in got)
    return max(abs(a - b) for a, b in zip(got, numeric)) / scale


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = f"; load average at start {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{platform.platform()}; CPU: {cpu} ({os.cpu_count()} logical); "
        f"Python {platform.python_version()} ({platform.python_implementation()}){load}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=25_000, help="terms of the graph (~4 nodes each)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best counts")
    parser.add_argument("--quick", action="store_true", help="a ~10^4-node graph, 3 rounds")
    parser.add_argument("--fresh-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh_child:
        fresh_child(args.fresh_child)
        return
    if args.quick:
        args.terms, args.rounds = 2_500, 3

    print(f"machine: {machine()}")
    gc.collect()
    baseline = stats()["live_nodes"]
    root, params = build_graph(args.terms)
    v = direction(len(params))
    nodes = graph_size(root)
    print(f"graph: {nodes:,} nodes, {len(params):,} parameters; best of {args.rounds} interleaved rounds\n", flush=True)

    times = measure(root, params, v, args.rounds)
    best = {name: min(ts) for name, ts in times.items()}
    added, under = derivative_graph_size(root, params, v)
    error = check_against_differences(root, params, v)

    back = best["backward"]
    print("| measurement | best ms | median ms | ns/node (best) | vs backward (best) | target |")
    print("|---|---:|---:|---:|---:|---|")
    for name in ("backward", "grad", "jvp", "hvp", "grad, graph", "dot with v", "grad of that", "free", "HVP"):
        t, median = best[name], statistics.median(times[name])
        shown = f"HVP: {name}" if name in ("grad, graph", "dot with v", "grad of that", "free") else name
        target = f"<= {TARGET:g}x" if name == "HVP" else f"<= {TARGET_DUAL:g}x" if name == "hvp" else ""
        print(
            f"| {shown} | {t * 1e3:,.2f} | {median * 1e3:,.2f} | {t / nodes * 1e9:,.1f} | {t / back:.2f}x | {target} |"
        )
    ratio = best["HVP"] / back
    fresh_back, fresh_hvp = fresh(args.terms)
    print()
    dual_ratio = best["hvp"] / back
    by_dual = [h.data for h in hvp_dual(root, params, v)]
    by_graph = [h.data for h in hvp(root, params, v)]
    agree = max(abs(a - b) for a, b in zip(by_dual, by_graph)) / max(abs(b) for b in by_graph)
    print(
        f"hvp (dual numbers) / backward: {dual_ratio:.2f}x best, "
        f"{statistics.median(times['hvp']) / back:.2f}x median "
        f"({'within' if dual_ratio <= TARGET_DUAL else 'OVER'} the {TARGET_DUAL:g}x target); "
        f"it agrees with the double backward's H v to {agree:.1e} relative"
    )
    print(
        f"HVP / backward: {ratio:.1f}x best, {statistics.median(times['HVP']) / back:.1f}x median "
        f"({'within' if ratio <= TARGET else 'OVER'} the {TARGET:g}x target); the first HVP in a "
        f"fresh process: {fresh_hvp * 1e3:.2f} ms, {fresh_hvp / fresh_back:.1f}x its backward "
        f"({fresh_back * 1e3:.2f} ms)"
    )
    print(
        f"derivative graph: grad(create_graph=True) adds {added:,} nodes "
        f"({added / nodes:.2f} per node of the graph); v . gradient has {under:,} nodes "
        f"under it (the graph included)"
    )
    print(
        f"H v against central differences of the gradient: max error {error:.1e} "
        f"of max |H v| (step 1e-6: differences are good to ~1e-7 here)"
    )

    del root, params
    gc.collect()
    left = stats()["live_nodes"] - baseline
    print(
        f"memory: {left:,} nodes left after dropping the graph and its derivatives "
        f"({'all freed' if left == 0 else 'LEAK'}); live nodes now {stats()['live_nodes']:,}"
    )
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
