"""Benchmark: the exported moons MLP against the same model written by hand.

One process; the variants alternate every --steps steps, --repeats rounds, and each
keeps its best round (a shared machine's load comes and goes); ratios are exported / by
hand (issue 20's target: within 1.2x).

  torch  a training step on the full batch (forward, hinge + L2 loss, backward, SGD):
         pyautograd.export.to_torch's GraphModule (one tensor per input) against
         nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) on an (N, 2) tensor.
  jax    jax.jit of the exported function (forward, and value_and_grad of the loss)
         against the same function written in jax.numpy.

    python bench/bench_export.py [--samples 100,10000] [--steps 5] [--repeats 60]
"""

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import moons  # noqa: E402  (examples/moons.py: the data)

from pyautograd.engine import Value  # noqa: E402
from pyautograd.export import to_jax, to_torch  # noqa: E402
from pyautograd.nn import MLP  # noqa: E402


def data(n):
    X, y = moons.make_moons(n_samples=n)
    return X, y


def exported_model():
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    xs = [Value(0.0), Value(0.0)]
    return model, to_torch(model(xs), xs), to_jax(model(xs), xs)


def best(fn, repeats):
    return min(fn() for _ in range(repeats))


def bench_torch(model, module, X, y, steps, repeats):
    import torch

    torch.set_num_threads(1)
    hand = model.to_torch()  # the same weights, written as torch users write it
    x = torch.tensor(X, dtype=torch.float64)
    x0, x1 = x[:, 0].contiguous(), x[:, 1].contiguous()
    labels = torch.tensor(y, dtype=torch.float64)

    def run(net, call):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        params = list(net.parameters())

        def timed():
            t = time.perf_counter()
            for _ in range(steps):
                scores = call()
                loss = torch.relu(1 - labels * scores).mean() + 1e-4 * sum((p * p).sum() for p in params)
                opt.zero_grad()
                loss.backward()
                opt.step()
            return (time.perf_counter() - t) / steps

        return timed

    exported = run(module, lambda: module(x0, x1))
    by_hand = run(hand, lambda: hand(x).squeeze(-1))
    times = {"exported": [], "by hand": []}
    for _ in range(repeats):  # interleaved
        times["exported"].append(exported())
        times["by hand"].append(by_hand())
    return {k: min(v) for k, v in times.items()}


def bench_jax(fn, params, X, y, steps, repeats):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(X)
    x0, x1 = x[:, 0], x[:, 1]
    labels = jnp.asarray(y, dtype=jnp.float64)
    hand_params = dict(params)

    def by_hand(p, x0, x1):
        h = jnp.stack([x0, x1], -1)
        h = jax.nn.relu(h @ p["linear0_weight"].T + p["linear0_bias"])
        h = jax.nn.relu(h @ p["linear1_weight"].T + p["linear1_bias"])
        return (h @ p["linear2_weight"].T + p["linear2_bias"])[..., 0]

    def loss_of(f):
        def loss(p, x0, x1):
            scores = f(p, x0, x1)
            reg = sum(jnp.sum(v * v) for v in p.values())
            return jnp.mean(jax.nn.relu(1 - labels * scores)) + 1e-4 * reg

        return loss

    cases = {}
    for name, f in (("exported", fn), ("by hand", by_hand)):
        forward = jax.jit(f)
        grad = jax.jit(jax.value_and_grad(loss_of(f)))
        forward(params, x0, x1).block_until_ready()
        jax.block_until_ready(grad(hand_params, x0, x1))
        cases[name] = (forward, grad)
    diff = float(jnp.max(jnp.abs(cases["exported"][0](params, x0, x1) - by_hand(params, x0, x1))))
    assert diff < 1e-12, diff

    def timed(call):
        def run():
            t = time.perf_counter()
            for _ in range(steps):
                out = call()
            jax.block_until_ready(out)
            return (time.perf_counter() - t) / steps

        return run

    times = {}
    for _ in range(repeats):
        for name, (forward, grad) in cases.items():
            for what, call in (
                ("forward", lambda f=forward: f(params, x0, x1)),
                ("value_and_grad", lambda g=grad: g(params, x0, x1)),
            ):
                times.setdefault((what, name), []).append(timed(call)())
    return {k: min(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="100,10000")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args(argv)
    model, module, (fn, params) = exported_model()
    for n in map(int, args.samples.split(",")):
        X, y = data(n)
        t = bench_torch(model, module, X, y, args.steps, args.repeats)
        print(
            f"torch, {n} samples, training step: exported {t['exported'] * 1e6:8.1f} us, "
            f"by hand {t['by hand'] * 1e6:8.1f} us, ratio {t['exported'] / t['by hand']:.3f}"
        )
        try:
            import jax  # noqa: F401
        except ImportError:
            print("jax: not installed (pip install 'pyautograd-arena[jax]')")
            continue
        j = bench_jax(fn, params, X, y, args.steps, args.repeats)
        for what in ("forward", "value_and_grad"):
            e, h = j[(what, "exported")], j[(what, "by hand")]
            print(
                f"jax.jit, {n} samples, {what}: exported {e * 1e6:8.1f} us, "
                f"by hand {h * 1e6:8.1f} us, ratio {e / h:.3f}"
            )


if __name__ == "__main__":
    main()
