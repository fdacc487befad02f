"""Benchmark: pyautograd as a drop-in micrograd, on the paths micrograd-style programs run.

Six figures, each a ratio of two things measured side by side in this process:
  attributes    `v.data`, `v.grad` reads, `v.grad = 0.0`, `p.data -= x` on pyautograd Values,
                against the same four on a plain object with __slots__ = ('data', 'grad')
  Value(x)      a leaf made and dropped, against `a + b` made and dropped
  layer code    `[sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]`, 64 x 16, on Values,
                against the same code on floats
  backward      per node of a fresh ~10^6-node graph (bench_core.build_graph), against
                micrograd 0.1.0 with the GC off; only backward is timed
  nn replay     a pyautograd.nn moons training step (examples/moons.py), eager against replay
  microgpt      examples/microgpt.py training steps per second on pyautograd's Value against
                its pure-Python PyValue, GC on as users run it; forward, backward, the Adam
                loop and freeing the graph are also reported apart
and prints them as a markdown table with their targets and the machine.

    python bench/bench_dropin.py [--quick]

The machine may be shared and busy: the compared variants run interleaved in one loop
(their order alternating), each is repeated, and the minimum counts. Not a test: it
asserts nothing.
"""

import argparse
import gc
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import microgpt  # noqa: E402  (examples/microgpt.py: the model, PyValue, Trainer)
import moons  # noqa: E402  (examples/moons.py: the data and the nn training loop)
from bench_core import build_graph, count_nodes, machine  # noqa: E402
from micrograd.engine import Value as MgValue  # noqa: E402

from pyautograd.engine import Value  # noqa: E402
from pyautograd.nn import MLP  # noqa: E402

clock = time.perf_counter


def interleaved(variants, repeats):
    """{name: smallest result} of each run(), the variants taking turns (in alternating
    order) so that a slow spell of the machine hits all of them alike."""
    results = {name: [] for name in variants}
    order = list(variants.items())
    for r in range(repeats):
        for name, run in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            results[name].append(run())
    return {name: min(times) for name, times in results.items()}


# ---- 1. data/grad reads and writes ----


class Slotted:
    """The cheapest Python object with a data and a grad: what a Value's attributes cost
    at best in CPython."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = 0.0


def attribute_loops(objs, passes):
    """Each loop does `passes` passes over objs and returns seconds per object visit."""

    def together():
        t0 = clock()
        for _ in range(passes):
            for p in objs:
                p.data
                p.grad
                p.grad = 0.0
                p.data -= 1e-9
        return (clock() - t0) / (passes * len(objs))

    def data_read():
        t0 = clock()
        for _ in range(passes):
            for p in objs:
                p.data
        return (clock() - t0) / (passes * len(objs))

    def grad_read():
        t0 = clock()
        for _ in range(passes):
            for p in objs:
                p.grad
        return (clock() - t0) / (passes * len(objs))

    def grad_write():
        t0 = clock()
        for _ in range(passes):
            for p in objs:
                p.grad = 0.0
        return (clock() - t0) / (passes * len(objs))

    def data_isub():
        t0 = clock()
        for _ in range(passes):
            for p in objs:
                p.data -= 1e-9
        return (clock() - t0) / (passes * len(objs))

    return {
        "together": together,
        "`v.data`": data_read,
        "`v.grad`": grad_read,
        "`v.grad = 0.0`": grad_write,
        "`p.data -= x`": data_isub,
    }


def bench_attributes(n_objs, passes, repeats):
    """ns per object of the four together, and of each alone: (Values, slotted objects)."""
    values = [Value(random.random()) for _ in range(n_objs)]
    plain = [Slotted(random.random()) for _ in range(n_objs)]
    ag_loops, plain_loops = attribute_loops(values, passes), attribute_loops(plain, passes)
    out = {}
    for what in ag_loops:
        best = interleaved({"ag": ag_loops[what], "plain": plain_loops[what]}, repeats)
        out[what] = (best["ag"] * 1e9, best["plain"] * 1e9)
    return out


# ---- 2. a leaf against an op, made and dropped ----


def bench_leaf(n, repeats):
    """ns per `Value(x)` and per `a + b`, each made and dropped; ten per loop turn."""
    a, b, x = Value(1.5), Value(2.5), 0.25
    V = Value  # a closure variable, as a and b are: the two loops look up alike
    turns = n // 10

    def leaf():
        t0 = clock()
        for _ in range(turns):
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)
            V(x)  # noqa: E702
        return (clock() - t0) / (turns * 10)

    def add():
        t0 = clock()
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
        return (clock() - t0) / (turns * 10)

    best = interleaved({"leaf": leaf, "add": add}, repeats)
    return best["leaf"] * 1e9, best["add"] * 1e9


# ---- 3. micrograd-style layer code ----


def layer(w, x):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def bench_layer(nout, nin, calls, repeats):
    """us per layer call (results dropped) on Values and on floats: the same numbers."""
    rng = random.Random(0)
    w_f = [[rng.gauss(0, 1) for _ in range(nin)] for _ in range(nout)]
    x_f = [rng.gauss(0, 1) for _ in range(nin)]
    w_v = [[Value(wi) for wi in row] for row in w_f]
    x_v = [Value(xi) for xi in x_f]

    def run(w, x):
        def timed():
            t0 = clock()
            for _ in range(calls):
                layer(w, x)
            return (clock() - t0) / calls

        return timed

    best = interleaved({"ag": run(w_v, x_v), "float": run(w_f, x_f)}, repeats)
    return best["ag"] * 1e6, best["float"] * 1e6


# ---- 4. backward of a fresh big graph ----


def bench_backward(n_terms, repeats):
    """ns per node of backward alone, each repeat on a freshly built graph, GC off while
    building and sweeping (micrograd's fastest setting). Returns (ag, micrograd, nodes)."""
    nodes = {}

    def run(V):
        def timed():
            gc.disable()
            try:
                root, ws, xs = build_graph(V, n_terms)
                t0 = clock()
                root.backward()
                elapsed = clock() - t0
            finally:
                gc.enable()
            nodes[V] = count_nodes(root)
            del root, ws, xs
            gc.collect()  # frees micrograd's cycles before the next variant runs
            return elapsed / nodes[V]

        return timed

    best = interleaved({"ag": run(Value), "mg": run(MgValue)}, repeats)
    return best["ag"] * 1e9, best["mg"] * 1e9, nodes[Value]


# ---- 5. pyautograd.nn: an eager step against a replayed one ----


def bench_nn_replay(steps, repeats):
    """ms per moons training step (examples/moons.train), rebuilding the graph each step
    against replaying it. Step 0 (where replay records its graph) is left out."""
    X, y = moons.make_moons(100, noise=0.1, seed=1337)

    def run(replay):
        def timed():
            random.seed(1337)
            model = MLP(2, [16, 16, 1])
            stamps = []
            moons.train(model, X, y, steps, replay, lambda k, loss, acc: stamps.append(clock()))
            return (stamps[-1] - stamps[0]) / (steps - 1)

        return timed

    best = interleaved({"eager": run(False), "replay": run(True)}, repeats)
    return best["eager"] * 1e3, best["replay"] * 1e3


# ---- 6. the microgpt-shaped program ----

PHASES = ("forward", "backward", "adam", "free")


def bench_microgpt(steps, repeats):
    """Per engine: seconds of each phase of each step, the minimum over repeats (each
    repeat trains a fresh model from the same start, so step k is the same work every
    time). The engines take turns step by step. GC stays on. Returns ({engine: {phase:
    [s per step]}}, {engine: [s per step total]}, {engine: [losses of the first repeat]})."""
    engines = {"pyautograd": Value, "python": microgpt.PyValue}
    phase_best = {e: {ph: [float("inf")] * steps for ph in PHASES} for e in engines}
    total_best = {e: [float("inf")] * steps for e in engines}
    losses = {e: [] for e in engines}
    for r in range(repeats):
        gc.collect()
        trainers = {e: microgpt.Trainer(V, num_steps=1000) for e, V in engines.items()}
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for k in range(steps):
            for e in order:
                trainer = trainers[e]
                t0 = clock()
                loss = trainer.loss(k)
                t1 = clock()
                loss.backward()
                t2 = clock()
                trainer.update(k)
                t3 = clock()
                value = loss.data  # every run reads it, as a training loop does (~0.1 us)
                del loss
                t4 = clock()
                for ph, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    phase_best[e][ph][k] = min(phase_best[e][ph][k], dt)
                total_best[e][k] = min(total_best[e][k], t4 - t0)
                if r == 0:
                    losses[e].append(value)
        del trainers
    return phase_best, total_best, losses


# ---- report ----


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, fewer steps")
    args = parser.parse_args(argv)
    quick = args.quick

    # Many short runs rather than a few long ones: a noisy spell of a shared machine
    # then spoils a few runs, and the minimum skips them.
    repeats = 5 if quick else 11
    attr_objs, attr_passes = 4192, 10  # microgpt's parameter count
    leaf_ops = 200_000
    layer_calls = 100
    graph_terms, graph_repeats = 250_000, (1 if quick else 5)  # ~10^6 nodes; steal hits single runs
    moons_steps, moons_repeats = (11 if quick else 21), (3 if quick else 7)
    gpt_steps, gpt_repeats = (6 if quick else 20), (2 if quick else 3)

    print(f"machine: {machine()}")
    print(
        f"best of {repeats} (backward: {graph_repeats}, moons: {moons_repeats} runs of "
        f"{moons_steps} steps, microgpt: {gpt_repeats} runs of {gpt_steps} steps)"
        f"{'; quick' if quick else ''}\n",
        flush=True,
    )
    started = clock()

    def note(what):
        print(f"  measured: {what} ({clock() - started:.0f} s)", file=sys.stderr, flush=True)

    rows = []  # (figure, pyautograd, baseline, ratio, target, met)

    def row(figure, ours, base, ratio, target):
        bound = float(target.split()[-1].rstrip("x"))
        met = ratio <= bound if target.startswith("<=") else ratio >= bound
        rows.append((figure, ours, base, f"{ratio:.2f}x", target, "yes" if met else "no"))

    attrs = bench_attributes(attr_objs, attr_passes, repeats)
    ag, plain = attrs["together"]
    row(
        "data/grad: `v.data`, `v.grad`, `v.grad = 0.0`, `p.data -= x` (Value vs __slots__ object)",
        f"{ag:.0f} ns",
        f"{plain:.0f} ns",
        ag / plain,
        "<= 1.5x",
    )
    note("attributes")

    leaf, add = bench_leaf(leaf_ops, repeats)
    row(
        "`Value(x)` made and dropped vs `a + b` made and dropped",
        f"{leaf:.0f} ns",
        f"{add:.0f} ns",
        leaf / add,
        "<= 1.5x",
    )
    note("Value(x)")

    ag_layer, float_layer = bench_layer(64, 16, layer_calls, repeats)
    row(
        "layer code `[sum(wi * xi ...) for wo in w]`, 64 x 16 (Values vs floats)",
        f"{ag_layer:.1f} us",
        f"{float_layer:.1f} us",
        ag_layer / float_layer,
        "<= 1.6x",
    )
    note("layer code")

    ag_back, mg_back, nodes = bench_backward(graph_terms, graph_repeats)
    row(
        f"backward of a fresh {nodes:,}-node graph (micrograd 0.1.0, GC off, vs pyautograd)",
        f"{ag_back:.1f} ns/node",
        f"{mg_back:.0f} ns/node",
        mg_back / ag_back,
        ">= 45x",
    )
    note("backward")

    eager, replay = bench_nn_replay(moons_steps, moons_repeats)
    row("`pyautograd.nn` moons step: eager vs replay", f"{eager:.3f} ms", f"{replay:.3f} ms", eager / replay, "<= 5x")
    note("nn eager vs replay")

    phases, totals, losses = bench_microgpt(gpt_steps, gpt_repeats)
    ag_rate = gpt_steps / sum(totals["pyautograd"])
    py_rate = gpt_steps / sum(totals["python"])
    row(
        "microgpt training steps/s (PyValue, GC on, vs pyautograd)",
        f"{ag_rate:.1f} steps/s",
        f"{py_rate:.2f} steps/s",
        ag_rate / py_rate,
        ">= 12x",
    )
    note("microgpt")

    print("| figure | pyautograd | baseline | ratio | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for figure, ours, base, ratio, target, met in rows:
        print(f"| {figure} | {ours} | {base} | {ratio} | {target} | {met} |")

    print("\nThe data/grad figure, op by op (ns per op, Value vs __slots__ object):")
    for what, (ag, plain) in attrs.items():
        if what != "together":
            print(f"  {what:<16} {ag:6.1f} vs {plain:5.1f}  ({ag / plain:.2f}x)")

    print(
        f"\nmicrogpt, ms per step summed over phases (minimum over {gpt_repeats} runs of the same {gpt_steps} steps):"
    )
    print(f"  {'':<12}" + "".join(f"{ph:>10}" for ph in PHASES) + f"{'step':>10}")
    sums = {e: {ph: sum(phases[e][ph]) / gpt_steps * 1e3 for ph in PHASES} for e in phases}
    for e in phases:
        print(
            f"  {e:<12}"
            + "".join(f"{sums[e][ph]:10.2f}" for ph in PHASES)
            + f"{sum(totals[e]) / gpt_steps * 1e3:10.2f}"
        )
    print(
        f"  {'ratio':<12}"
        + "".join(f"{sums['python'][ph] / sums['pyautograd'][ph]:9.1f}x" for ph in PHASES)
        + f"{sum(totals['python']) / sum(totals['pyautograd']):9.1f}x"
    )
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses["pyautograd"], losses["python"]))
    print(
        f"  losses of the two engines agree to {worst:.1e} relative over {gpt_steps} steps"
        f"{'' if worst <= 1e-9 else '  WARNING: they should agree to 1e-9'}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal {clock() - started:.0f} s; load average at the end {load:.2f}")


if __name__ == "__main__":
    main()
