"""Benchmark: micrograd's moons training (MLP(2, [16, 16, 1]), hinge + L2, SGD), side by side.

Runs in one process, on the same data and the same initial weights:
  micrograd==0.1.0, default GC    the reference, as people run it
  micrograd==0.1.0, GC off        its fastest setting: GC off while a step runs, its garbage
                                  collected between steps, untimed (left uncollected for
                                  100 steps, the heap grows and steps get 2-3x slower)
  switched import                 micrograd's own nn.py, its import changed to pyautograd.engine
  pyautograd.nn                   fused nodes (one dot + one relu per neuron), C optimizer
  torch batched                   the same weights as a float64 torch nn.Sequential (1 thread),
                                  the 100 points as one (100, 2) tensor, optim.SGD (if torch)
  pyautograd.nn --replay          the loss graph built once, re-run in C each step
and prints ms per step and the ratios, and pyautograd.nn's step against torch's batched
one, alternated. The variants' losses are checked to agree.

    python bench/bench_moons.py [--steps 100] [--quick]

--quick runs the micrograd-engine variants for a few steps only (they take ~1 s a step
with GC on) and compares per-step times; pyautograd's variants always run --steps.
"""

import argparse
import gc
import inspect
import os
import random
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import moons  # noqa: E402  (examples/moons.py: the data, the fused training loop)

SEED = 1337
ALPHA = 1e-4


def micrograd_nn_with(engine_module):
    """micrograd's nn.py, its source run unchanged but for `from micrograd.engine import
    Value` becoming `from <engine_module> import Value`."""
    import micrograd.nn

    source = inspect.getsource(micrograd.nn)
    line = "from micrograd.engine import Value"
    assert line in source, "micrograd/nn.py no longer has the import this benchmark switches"
    module = types.ModuleType(f"micrograd_nn_on_{engine_module.replace('.', '_')}")
    exec(
        compile(
            source.replace(line, f"from {engine_module} import Value"),
            f"micrograd/nn.py (Value from {engine_module})",
            "exec",
        ),
        module.__dict__,
    )
    return module


def micrograd_demo(Value, MLP, X, y, steps, between_steps=None):
    """micrograd's demo.ipynb training loop, as written there (batch = all data).
    between_steps(), if given, runs after each step (the caller leaves it out of the time)."""
    random.seed(SEED)
    model = MLP(2, [16, 16, 1])
    history = []
    for k in range(steps):
        if k and between_steps:
            between_steps()
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = ALPHA * sum((p * p for p in model.parameters()))
        total_loss = data_loss + reg_loss
        accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        history.append((total_loss.data, sum(accuracy) / len(accuracy)))
    return history


def pyautograd_nn(X, y, steps, replay):
    from pyautograd.nn import MLP

    random.seed(SEED)
    model = MLP(2, [16, 16, 1])
    history = []
    moons.train(model, X, y, steps, replay, lambda k, loss, acc: history.append((loss, acc)))
    return history


def torch_batched(X, y, steps):
    """micrograd's demo loop as torch users write it: the whole batch as one tensor."""
    import torch
    from pyautograd.nn import MLP

    torch.set_num_threads(1)
    random.seed(SEED)
    net = MLP(2, [16, 16, 1]).to_torch()  # nn.Sequential, float64, the same initial weights
    x = torch.tensor(X, dtype=torch.float64)
    labels = torch.tensor(y, dtype=torch.float64)
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=moons.learning_rate(0))
    history = []
    for k in range(steps):
        scores = net(x).squeeze(-1)
        loss = torch.relu(1 - labels * scores).mean() + ALPHA * sum((p * p).sum() for p in params)
        acc = ((labels > 0) == (scores > 0)).sum().item() / len(y)
        opt.zero_grad()
        loss.backward()
        opt.param_groups[0]["lr"] = moons.learning_rate(k)
        opt.step()
        history.append((loss.item(), acc))
    return history


def timed(run, steps, gc_off=False):
    """(seconds per step, history) for one run, after a full collection. With gc_off,
    run(steps, collect) gets a collect() to call between steps; its time is left out."""
    gc.collect()
    untimed = [0.0]

    def collect():
        start = time.perf_counter()
        gc.collect()
        untimed[0] += time.perf_counter() - start

    if gc_off:
        gc.disable()
    try:
        start = time.perf_counter()
        history = run(steps, collect) if gc_off else run(steps)
        seconds = time.perf_counter() - start - untimed[0]
    finally:
        gc.enable()
    gc.collect()
    return seconds / steps, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument(
        "--quick", action="store_true", help="micrograd-engine variants run 3 steps (GC on) / 10 steps (others)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each pyautograd variant; the best counts (default 3)"
    )
    args = parser.parse_args(argv)

    import micrograd
    import micrograd.engine
    import micrograd.nn
    import pyautograd.engine

    X, y = moons.make_moons(100, noise=0.1, seed=SEED)
    slow_gc = min(args.steps, 3) if args.quick else args.steps
    slow = min(args.steps, 10) if args.quick else args.steps
    switched = micrograd_nn_with("pyautograd.engine")

    rows = []  # (name, steps run, s/step, history)

    def run(name, fn, steps, gc_off=False, repeat=1):
        best = None
        for _ in range(repeat):
            per_step, history = timed(fn, steps, gc_off)
            if best is None or per_step < best[0]:
                best = (per_step, history)
        rows.append((name, steps, best[0], best[1]))
        print(f"  {name:<42} {steps:>4} steps  {best[0] * 1e3:10.3f} ms/step", flush=True)

    print(
        f"micrograd's moons training, MLP(2, [16, 16, 1]), {args.steps} steps"
        f"{' (quick)' if args.quick else ''}; python {sys.version.split()[0]}"
    )
    run(
        "micrograd 0.1.0, default GC",
        lambda n: micrograd_demo(micrograd.engine.Value, micrograd.nn.MLP, X, y, n),
        slow_gc,
    )
    run(
        "micrograd 0.1.0, GC off",
        lambda n, collect: micrograd_demo(micrograd.engine.Value, micrograd.nn.MLP, X, y, n, collect),
        slow,
        gc_off=True,
    )
    run(
        "micrograd nn.py on pyautograd.engine",
        lambda n: micrograd_demo(pyautograd.engine.Value, switched.MLP, X, y, n),
        slow,
        repeat=args.repeat if not args.quick else 1,
    )

    def fused(n):
        return pyautograd_nn(X, y, n, replay=False)

    def batched(n):
        return torch_batched(X, y, n)

    run("pyautograd.nn (fused)", fused, args.steps, repeat=args.repeat)
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
        print(f"  {'torch batched':<42} skipped: torch is not installed", flush=True)
    if has_torch:
        run("torch batched (nn.Sequential, optim.SGD)", batched, args.steps, repeat=args.repeat)
    run("pyautograd.nn --replay", lambda n: pyautograd_nn(X, y, n, replay=True), args.steps, repeat=args.repeat)

    # Every variant trains the same model on the same data: their losses must agree.
    reference = rows[1][3]
    for name, _, _, history in rows:
        worst = max(abs(a[0] - b[0]) / max(1.0, abs(b[0])) for a, b in zip(history, reference))
        if worst > 1e-9:
            print(f"WARNING: {name}: losses differ from micrograd's by {worst:.3g}")

    gc_on, gc_off = rows[0][2], rows[1][2]
    print()
    print(f"  {'':<42} {'vs micrograd GC on':>18} {'vs micrograd GC off':>20}")
    targets = {
        "micrograd nn.py on pyautograd.engine": "target >= 10x vs GC off",
        "pyautograd.nn (fused)": "target >= 30x vs GC off",
        "pyautograd.nn --replay": "targets >= 1000x vs GC on, >= 100x vs GC off",
    }
    for name, _, per_step, _ in rows:
        print(f"  {name:<42} {gc_on / per_step:17.1f}x {gc_off / per_step:19.1f}x   {targets.get(name, '')}")
    final_loss, final_acc = rows[-1][3][-1]
    print(
        f"\nfinal loss {final_loss:.6f}, training accuracy {final_acc * 100:.0f}% (pyautograd after {args.steps} steps)"
    )
    if has_torch:
        # side by side: the machine is shared and noisy, so the two alternate; the best of each counts
        fused_times, torch_times = [], []
        for _ in range(args.repeat):
            fused_times.append(timed(fused, args.steps)[0])
            torch_times.append(timed(batched, args.steps)[0])
        ratio = min(fused_times) / min(torch_times)
        print(f"pyautograd.nn (fused) vs torch batched: {ratio:.2f}x torch's time (target: stays ahead, < 1)")


if __name__ == "__main__":
    main()
