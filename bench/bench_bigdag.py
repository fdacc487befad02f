"""Benchmark: backward of a fresh big graph whose nodes use inputs scattered in memory.

Two graphs of about the same size, built with Value ops, each fresh for every timing:
  dag   a layered random DAG: layers of width W; node i of a layer is an op (+, *, tanh,
        relu, alternating) over node perm[i] of the layer below (a random permutation,
        so every node is used) and, for the binary ops, a random node of that layer (with
        --far: of any earlier layer); the last layer summed pairwise. The sort walks it
        depth first, down and across the layers, so its visits (and the sweep's, in the
        sort's order) jump around the arena and miss the caches and the TLB.
  tree  bench_core.py's graph (build_graph): terms over 1000 leaves summed pairwise,
        each node's inputs made just before it, close by in memory.
For each: ns per node of root.backward() (sort and sweep), and of the sort alone
(graph_size, on another fresh graph; the sweep is the difference); then the ratio dag / tree.

    python bench/bench_bigdag.py [--sizes 1e3,1e5,1e6] [--repeats 5] [--far] [--huge]

--huge adds 10^7 nodes (about 1.2 GB at its peak, 20 s a repeat). The two graphs are
timed interleaved, and the best of the repeats is kept (the machine may be shared).
Not a test: nothing here asserts.
"""

import argparse
import gc
import math
import random
import time

from bench_core import build_graph, gc_mode, machine

from pyautograd.arena import graph_size
from pyautograd.engine import Value

WIDTH = 1000


def build_dag(n_nodes, far=False, width=WIDTH, seed=1):
    """A layered random DAG of about n_nodes nodes (see the docstring); returns its root."""
    rng = random.Random(seed)
    width = min(width, max(2, n_nodes // 4))
    layer = [Value(math.sin(i)) for i in range(width)]
    earlier = list(layer)  # every node made so far
    while len(earlier) + width < n_nodes - width:
        perm = list(range(width))
        rng.shuffle(perm)
        pool = earlier if far else layer  # where the second input comes from
        nxt = []
        for i in range(width):
            a = layer[perm[i]]
            kind = i & 3
            if kind == 0:
                v = a + pool[rng.randrange(len(pool))]
            elif kind == 1:
                v = a * pool[rng.randrange(len(pool))]
            elif kind == 2:
                v = a.tanh()
            else:
                v = a.relu()
            nxt.append(v)
        earlier.extend(nxt)
        layer = nxt
    while len(layer) > 1:
        pairs = [layer[i] + layer[i + 1] for i in range(0, len(layer) - 1, 2)]
        if len(layer) % 2:
            pairs.append(layer[-1])
        layer = pairs
    return layer[0]


def build_tree(n_nodes, far=False):
    """bench_core's graph, about 4 nodes per term (far: unused)."""
    return build_graph(Value, max(1, n_nodes // 4))[0]


GRAPHS = {"dag": build_dag, "tree": build_tree}


def time_once(build, n_nodes, what, far=False):
    """(seconds, nodes) for one backward ("backward") or one sort ("sort") of a fresh graph."""
    with gc_mode(False):
        root = build(n_nodes, far)
        gc.collect()
        t0 = time.perf_counter()
        if what == "backward":
            root.backward()
        else:
            graph_size(root)
        elapsed = time.perf_counter() - t0
        nodes = graph_size(root)
        del root
    return elapsed, nodes


def measure(n_nodes, repeats, far=False):
    """{(graph, what): best ns/node}, the graphs and kinds interleaved in each repeat."""
    best = {}
    for _ in range(repeats):
        for what in ("backward", "sort"):
            for name, build in GRAPHS.items():
                elapsed, nodes = time_once(build, n_nodes, what, far)
                ns = elapsed / nodes * 1e9
                best[name, what] = min(best.get((name, what), math.inf), ns)
                best[name, "nodes"] = nodes
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6", help="node counts, comma-separated (default 1e6)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--far", action="store_true", help="second inputs from any earlier layer")
    parser.add_argument("--huge", action="store_true", help="also 10^7 nodes (about 1.2 GB)")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")] + ([10**7] if args.huge else [])

    print(f"machine: {machine()}")
    where = "any earlier layer" if args.far else "the layer below"
    print(
        f"best of {args.repeats} (small graphs: up to 20x more), dag width {WIDTH}, "
        f"second inputs from {where}, each graph fresh\n"
    )
    print("| nodes (dag / tree) | dag backward | tree backward | dag / tree | dag sort | tree sort | unit |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        small = min(20, max(1, 10**5 // n))  # small graphs: more repeats, their times are short
        r = measure(n, args.repeats * small, args.far)
        print(
            f"| {r['dag', 'nodes']:,} / {r['tree', 'nodes']:,} | {r['dag', 'backward']:.1f} | "
            f"{r['tree', 'backward']:.1f} | {r['dag', 'backward'] / r['tree', 'backward']:.2f}x | "
            f"{r['dag', 'sort']:.1f} | {r['tree', 'sort']:.1f} | ns/node |",
            flush=True,
        )


if __name__ == "__main__":
    main()
