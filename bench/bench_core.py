"""Benchmark: the core engine against micrograd==0.1.0, side by side, in one run.

Measures (each for pyautograd, micrograd with its default GC, micrograd with GC off):
  lifecycle     create and free one `a + b`, one `a * 2.0` (ns per op; micrograd with GC
                off frees nothing in the loop: the gc.collect() that would is reported apart)
  graph         build and backward of a ~10^6-node graph (ns per node)
  chain         10^5 steps of x = x * 1.0001 + 0.001, build plus backward (ms); micrograd's
                recursive sort runs in a thread with a big stack and a raised recursion limit
  memory        bytes per node with every Value alive, and kept only by the graph (only the
                root alive); each engine in a fresh subprocess so the arena starts empty
  busy thread   `a + b` lifecycle beside a CPU-bound Python thread (the cffi GIL "convoy")
and prints a markdown table, the targets from the issue, and the machine.

    python bench/bench_core.py [--quick]

Timings are the best of several repeats (the machine may be shared). Not a test: nothing
here asserts; the tests check correctness, this only measures.
"""

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import tracemalloc

from micrograd.engine import Value as MgValue

from pyautograd.arena import graph_size, stats
from pyautograd.engine import Value as AgValue

ENGINES = {"pyautograd": AgValue, "micrograd": MgValue}


# ---- timing helpers ----


class gc_mode:
    """Runs a block with the cyclic GC on (default thresholds) or off, then restores it."""

    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        gc.collect()
        self.was = gc.isenabled()
        (gc.enable if self.enabled else gc.disable)()

    def __exit__(self, *exc):
        (gc.enable if self.was else gc.disable)()
        gc.collect()
        return False


def best(repeats, run):
    """The smallest of `repeats` results of run() (seconds)."""
    return min(run() for _ in range(repeats))


# ---- lifecycle of one op ----


def lifecycle_loop(a, b, n, kind):
    """n ops whose results are dropped at once: each is made and freed. Ten per loop turn
    so the loop itself weighs little."""
    turns = n // 10
    t0 = time.perf_counter()
    if kind == "add":
        for _ in range(turns):
            a + b
            a + b
            a + b
            a + b
            a + b
            a + b
            a + b
            a + b
            a + b
            a + b  # noqa: E702
    else:
        for _ in range(turns):
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0
            a * 2.0  # noqa
    return time.perf_counter() - t0, turns * 10


def lifecycle(V, kind, n, repeats, gc_on):
    """ns per op. With the GC off, micrograd's results (cycles) are not freed in the loop:
    the gc.collect() that frees them is timed apart (see lifecycle_collect)."""
    a, b = V(1.5), V(2.5)

    def run():
        with gc_mode(gc_on):
            elapsed, ops = lifecycle_loop(a, b, n, kind)
        return elapsed / ops

    return best(repeats, run) * 1e9


def lifecycle_collect(V, kind, n, repeats):
    """ns per op of the gc.collect() that frees n ops made with the GC off."""
    a, b = V(1.5), V(2.5)

    def run():
        with gc_mode(False):
            _, ops = lifecycle_loop(a, b, n, kind)
            t0 = time.perf_counter()
            gc.collect()
            return (time.perf_counter() - t0) / ops

    return best(repeats, run) * 1e9


# ---- a big graph: build and backward ----


def build_graph(V, n_terms, n_leaves=1000, keep=None):
    """sum over k of relu(w[k] * x[k'] + b), summed pairwise (depth ~log2 n_terms, so
    micrograd's recursive sort copes). About 4 nodes per term, all made by Value ops."""
    ws = [V(math.sin(i)) for i in range(n_leaves)]
    xs = [V(math.cos(i)) for i in range(n_leaves)]
    b = V(0.1)
    level = []
    for k in range(n_terms):
        prod = ws[k % n_leaves] * xs[(7 * k) % n_leaves]
        pre = prod + b
        term = pre.relu()
        level.append(term)
        if keep is not None:
            keep.extend((prod, pre, term))
    while len(level) > 1:
        pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
        if keep is not None:
            keep.extend(pairs)
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    if keep is not None:
        keep.extend(ws + xs + [b])
    return level[0], ws, xs


def count_nodes(root):
    if isinstance(root, AgValue):
        return graph_size(root)
    seen, stack = {id(root)}, [root]
    while stack:
        for child in stack.pop()._prev:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return len(seen)


def graph_bench(V, n_terms, repeats, gc_on):
    """(build ns/node, backward ns/node, nodes)."""
    builds, backwards, nodes = [], [], 0
    for _ in range(repeats):
        with gc_mode(gc_on):
            t0 = time.perf_counter()
            root, ws, xs = build_graph(V, n_terms)
            t1 = time.perf_counter()
            root.backward()
            t2 = time.perf_counter()
        nodes = count_nodes(root)
        builds.append(t1 - t0)
        backwards.append(t2 - t1)
        del root, ws, xs
        gc.collect()
    return min(builds) / nodes * 1e9, min(backwards) / nodes * 1e9, nodes


# ---- a deep chain: build plus backward ----


def in_big_thread(fn):
    """Runs fn in a thread with a 512 MB stack (micrograd's sort recurses once per level)."""
    result = []
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 10_000_000))
    old_size = threading.stack_size(512 * 1024 * 1024)
    try:
        t = threading.Thread(target=lambda: result.append(fn()))
        t.start()
        t.join()
    finally:
        threading.stack_size(old_size)
        sys.setrecursionlimit(old_limit)
    if not result:
        raise RuntimeError("the chain benchmark's thread failed")
    return result[0]


def chain_bench(V, steps, repeats, gc_on):
    """Seconds for: x = x * 1.0001 + 0.001, `steps` times, then backward."""

    def run():
        with gc_mode(gc_on):
            t0 = time.perf_counter()
            x0 = V(1.0)
            x = x0
            for _ in range(steps):
                x = x * 1.0001 + 0.001
            x.backward()
            elapsed = time.perf_counter() - t0
        del x, x0
        return elapsed

    if V is MgValue:
        return in_big_thread(lambda: best(repeats, run))
    return best(repeats, run)


# ---- memory per node (in a fresh subprocess) ----


def memory_child(engine, n_terms):
    """Runs in a subprocess: prints JSON with bytes per node, alive and graph-only."""
    V = ENGINES[engine]
    gc.disable()  # nothing freed behind our back while counting
    arena0 = stats()["bytes"]
    tracemalloc.start()
    py0 = tracemalloc.get_traced_memory()[0]
    keep = []
    root = build_graph(V, n_terms, keep=keep)[0]  # the leaf lists die: only keep holds leaves
    py_alive = tracemalloc.get_traced_memory()[0] - py0 - sys.getsizeof(keep)
    arena_alive = stats()["bytes"] - arena0
    keep.clear()
    del keep
    py_graph = tracemalloc.get_traced_memory()[0] - py0
    arena_graph = stats()["bytes"] - arena0
    tracemalloc.stop()
    nodes = count_nodes(root)  # after measuring: the count's sort grows scratch buffers
    root.backward()
    arena_after_backward = stats()["bytes"] - arena0  # the sort's and the sweep's scratch
    print(
        json.dumps(
            {
                "nodes": nodes,
                "alive": (py_alive + arena_alive) / nodes,
                "alive_python": py_alive / nodes,
                "alive_arena": arena_alive / nodes,
                "graph_only": (py_graph + arena_graph) / nodes,
                "scratch_after_backward": (arena_after_backward - arena_graph) / nodes,
                "node_size": stats()["node_size"],
            }
        )
    )


def memory(engine, n_terms):
    here = os.path.abspath(__file__)
    done = subprocess.run(
        [sys.executable, here, "--memory-child", engine, str(n_terms)],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(here),
    )
    return json.loads(done.stdout)


# ---- beside a busy Python thread ----


def beside_busy_thread(V, n, repeats):
    """ns per `a + b` (made and freed) while another thread spins in pure Python."""
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1

    busy = threading.Thread(target=spin)
    busy.start()
    try:
        return lifecycle(V, "add", n, repeats, gc_on=True)
    finally:
        stop.set()
        busy.join()


# ---- report ----


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
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{platform.platform()}; CPU: {cpu} ({os.cpu_count()} logical); "
        f"Python {platform.python_version()} ({platform.python_implementation()}); "
        f"load average at start {load[0]:.2f}"
        if load != ("?",)
        else ""
    )


def ratio(slow, fast):
    return f"{slow / fast:.1f}x" if fast > 0 else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return

    quick = args.quick
    ops_n = 100_000 if quick else 1_000_000
    graph_terms = 25_000 if quick else 250_000  # ~10^5 / ~10^6 nodes
    chain_steps = 10_000 if quick else 100_000
    memory_terms = 25_000 if quick else 100_000
    repeats = 3 if quick else 5
    big_repeats = 1 if quick else 3

    print(f"machine: {machine()}")
    print(
        f"sizes: {ops_n:,} ops per lifecycle run, graph of {graph_terms:,} terms, "
        f"chain of {chain_steps:,} steps; best of {repeats} (big: {big_repeats})\n",
        flush=True,
    )

    rows = []

    def row(what, ours, mg_on, mg_off, unit, target=""):
        rows.append((what, ours, mg_on, mg_off, unit, target))
        print(f"  measured: {what}", file=sys.stderr, flush=True)

    collect_ns = {}
    for kind, label in (("add", "`a + b` lifecycle"), ("mul", "`a * 2.0` lifecycle")):
        collect_ns[kind] = lifecycle_collect(MgValue, kind, ops_n, repeats)
        row(
            label,
            lifecycle(AgValue, kind, ops_n, repeats, gc_on=True),
            lifecycle(MgValue, kind, ops_n, repeats, gc_on=True),
            lifecycle(MgValue, kind, ops_n, repeats, gc_on=False),
            "ns/op",
            ">= 2.7x vs GC off" if kind == "add" else "",
        )

    ag_build, ag_back, nodes = graph_bench(AgValue, graph_terms, big_repeats, gc_on=True)
    mg_build_on, mg_back_on, mg_nodes = graph_bench(MgValue, graph_terms, big_repeats, gc_on=True)
    mg_build_off, mg_back_off, _ = graph_bench(MgValue, graph_terms, big_repeats, gc_on=False)
    row(f"build, {nodes:,}-node graph", ag_build, mg_build_on, mg_build_off, "ns/node")
    row(f"backward, {nodes:,}-node graph", ag_back, mg_back_on, mg_back_off, "ns/node", ">= 45x vs GC off")

    row(
        f"chain of {chain_steps:,}: build + backward",
        chain_bench(AgValue, chain_steps, big_repeats, gc_on=True) * 1e3,
        chain_bench(MgValue, chain_steps, big_repeats, gc_on=True) * 1e3,
        chain_bench(MgValue, chain_steps, big_repeats, gc_on=False) * 1e3,
        "ms",
        ">= 20x vs GC on",
    )

    ag_mem, mg_mem = memory("pyautograd", memory_terms), memory("micrograd", memory_terms)
    row(
        f"memory, every Value alive ({ag_mem['nodes']:,} nodes)",
        ag_mem["alive"],
        mg_mem["alive"],
        mg_mem["alive"],
        "bytes/node",
        "<= 100",
    )
    row(
        "memory, only the root alive",
        ag_mem["graph_only"],
        mg_mem["graph_only"],
        mg_mem["graph_only"],
        "bytes/node",
        "<= 64",
    )

    quiet_ag = lifecycle(AgValue, "add", ops_n, repeats, gc_on=True)
    quiet_mg = lifecycle(MgValue, "add", ops_n, repeats, gc_on=True)
    busy_ag = beside_busy_thread(AgValue, ops_n, repeats)
    busy_mg = beside_busy_thread(MgValue, ops_n, repeats)
    row("`a + b` lifecycle, quiet", quiet_ag, quiet_mg, math.nan, "ns/op")
    row(
        "`a + b` lifecycle, beside a busy thread",
        busy_ag,
        busy_mg,
        math.nan,
        "ns/op",
        "~2x quiet (time-sliced GIL), not 100x",
    )

    print("| measurement | pyautograd | micrograd, GC on | micrograd, GC off | vs GC on | vs GC off | unit | target |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for what, ours, on, off, unit, target in rows:
        off_cell = "-" if math.isnan(off) else f"{off:,.1f}"
        off_ratio = "-" if math.isnan(off) else ratio(off, ours)
        print(
            f"| {what} | {ours:,.1f} | {on:,.1f} | {off_cell} | {ratio(on, ours)} | {off_ratio} | {unit} | {target} |"
        )
    print()
    print(
        f"micrograd with GC off leaves its ops' cycles for gc.collect(), which then costs "
        f"{collect_ns['add']:.0f} ns per `a + b` and {collect_ns['mul']:.0f} ns per `a * 2.0` "
        f"(not in the table's GC-off column)."
    )
    print(
        f"pyautograd memory with every Value alive: {ag_mem['alive_python']:.1f} bytes/node of "
        f"Python objects (the 56-byte Value, its GC header included) + {ag_mem['alive_arena']:.1f} "
        f"in the arena."
    )
    print(
        f"pyautograd node size: {ag_mem['node_size']} bytes; backward's scratch buffers, "
        f"kept for reuse after it: {ag_mem['scratch_after_backward']:.1f} bytes/node; "
        f"busy-thread slowdown: pyautograd {busy_ag / quiet_ag:.1f}x, "
        f"micrograd {busy_mg / quiet_mg:.1f}x"
    )
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
