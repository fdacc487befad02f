"""A/B of two (or more) builds of pyautograd on micrograd-style code, each in its own process.

    python bench/ab_builds.py DIR_A DIR_B [DIR_C ...] [--rounds N]

Each DIR holds a built copy of the package, selected with PYTHONPATH: e.g. build with
`PYAUTOGRAD_CFLAGS=-D... python build_ext.py`, then `cp -r pyautograd DIR/`. The builds
take turns, one fresh process each, for N rounds (the order rotating); every workload
keeps its minimum CPU time (time.process_time) per build, and the table gives each
build's minimum, its ratio to the first build's minimum, and in brackets the range of that
ratio taken round by round. Workloads:
  layer      bench_dropin.py's `[sum(wi * xi ...) for wo in w]`, 64 x 16, us per call
  mg nn      micrograd's own nn.MLP(2, [16, 16, 1]) built on this Value, its demo's moons step:
             SVM loss over 100 points (`.relu()` per neuron), backward, `p.data -= lr * p.grad`
  microgpt   examples/microgpt.py: loss, backward and Adam update, ms per step (40 steps);
             `update` is the Adam loop alone (`p.grad` reads, `p.data -= ...`, `p.grad = 0`)
  micro      ns per `v.data`, `v.grad`, `v.relu()`, `v.tanh()`, `p.data -= lr * p.grad`
"""

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
clock = time.process_time


def best(run, repeats):
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(run())
    return min(times)


def worker():
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    import microgpt
    from bench_dropin import layer

    import pyautograd
    from pyautograd.engine import Value

    out = {"_file": pyautograd.__file__}
    w = [[Value((i * 16 + j) % 7 - 3.0) for j in range(16)] for i in range(64)]
    x = [Value(j / 16) for j in range(16)]

    def layers():
        t0 = clock()
        for _ in range(100):
            layer(w, x)
        return (clock() - t0) / 100 * 1e6

    out["layer (us/call)"] = best(layers, 5)

    import micrograd.nn
    import moons

    micrograd.nn.Value = Value  # micrograd's nn code, unchanged, on this Value
    X, y = moons.make_moons(100, noise=0.1, seed=1337)

    def mg_nn():
        random.seed(1337)
        model = micrograd.nn.MLP(2, [16, 16, 1])
        params = model.parameters()
        t0 = clock()
        for k in range(10):
            scores = [model([Value(a), Value(b)]) for a, b in X]
            losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
            loss = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in params)
            model.zero_grad()
            loss.backward()
            lr = 1.0 - 0.9 * k / 100
            for p in params:
                p.data -= lr * p.grad
        return (clock() - t0) / 10 * 1e3

    out["mg nn step (ms)"] = best(mg_nn, 3)

    steps = 40
    totals, updates = [], []
    for _ in range(3):
        gc.collect()
        trainer, total, update = microgpt.Trainer(Value, num_steps=1000), 0.0, 0.0
        for k in range(steps):
            t0 = clock()
            loss = trainer.loss(k)
            loss.backward()
            t1 = clock()
            trainer.update(k)
            del loss
            t2 = clock()
            total, update = total + t2 - t0, update + t2 - t1
        totals.append(total / steps * 1e3)
        updates.append(update / steps * 1e3)
    out["microgpt step (ms)"] = min(totals)
    out["microgpt loss+backward (ms)"] = min(t - u for t, u in zip(totals, updates))
    out["microgpt update (ms)"] = min(updates)

    vs, passes = [Value(i / 4192 - 0.5) for i in range(4192)], 20
    n = passes * len(vs)

    def data():
        t0 = clock()
        for _ in range(passes):
            for v in vs:
                v.data
        return (clock() - t0) / n * 1e9

    def grad():
        t0 = clock()
        for _ in range(passes):
            for v in vs:
                v.grad
        return (clock() - t0) / n * 1e9

    def relu():
        t0 = clock()
        for _ in range(passes):
            for v in vs:
                v.relu()
        return (clock() - t0) / n * 1e9

    def tanh():
        t0 = clock()
        for _ in range(passes):
            for v in vs:
                v.tanh()
        return (clock() - t0) / n * 1e9

    def isub():
        lr = 1e-12
        t0 = clock()
        for _ in range(passes):
            for p in vs:
                p.data -= lr * p.grad
        return (clock() - t0) / n * 1e9

    for name, run in (("v.data", data), ("v.grad", grad), ("v.relu()", relu), ("v.tanh()", tanh)):
        out[f"{name} (ns)"] = best(run, 7)
    out["p.data -= lr * p.grad (ns)"] = best(isub, 7)
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dirs = [os.path.abspath(d) for d in args.dirs]
    runs = {d: [] for d in dirs}
    for r in range(args.rounds):
        order = dirs[r % len(dirs) :] + dirs[: r % len(dirs)]
        for d in order:
            env = dict(os.environ, PYTHONPATH=d)
            text = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker"],
                env=env,
                cwd="/",
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(text)
            assert result.pop("_file").startswith(d), f"{d}: imported another pyautograd"
            runs[d].append(result)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    names = [os.path.basename(d) for d in dirs]
    base = dirs[0]
    print(
        "| workload | "
        + " | ".join(f"{n} min" for n in names)
        + " | "
        + " | ".join(f"{n}/{names[0]}" for n in names[1:])
        + " |"
    )
    print("|---|" + "---:|" * (2 * len(dirs) - 1))
    for key in runs[base][0]:
        mins = {d: min(run[key] for run in runs[d]) for d in dirs}
        cells = [f"{mins[d]:.4g}" for d in dirs]
        for d in dirs[1:]:
            per_round = sorted(b[key] / a[key] for a, b in zip(runs[base], runs[d]))
            cells.append(f"{mins[d] / mins[base]:.3f} ({per_round[0]:.2f}-{per_round[-1]:.2f})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    load = os.getloadavg()[0]
    print(f"\n{args.rounds} rounds, load average at the end {load:.2f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main()
