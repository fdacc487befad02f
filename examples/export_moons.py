"""Prototype on scalars, then train batched in PyTorch: micrograd's moons, exported.

The moons classifier of examples/moons.py (MLP(2, [16, 16, 1]), hinge loss + 1e-4 L2,
100 SGD steps at lr = 1 - 0.9*k/100) is built on pyautograd's scalars, then exported
with pyautograd.export.to_torch from one sample's graph (its three layers become three
nn.functional.linear calls) and trained again, from the same initial weights, batched
in torch. Both loss curves print side by side: the same model, the same numbers, to
float64 rounding.

    python examples/export_moons.py [--steps N]

Needs torch: pip install "pyautograd-arena[torch]".
"""

import argparse
import random
import sys

from pyautograd.engine import Value
from pyautograd.export import to_torch
from pyautograd.nn import MLP

import moons  # examples/moons.py, beside this script: the data, the scalar training loop


def train_exported(module, X, y, steps):
    """The exported module trained batched in torch: the same loss and schedule as
    moons.train. Returns the loss of each step."""
    import torch

    x0 = torch.tensor([row[0] for row in X], dtype=torch.float64)
    x1 = torch.tensor([row[1] for row in X], dtype=torch.float64)
    labels = torch.tensor(y, dtype=torch.float64)
    opt = torch.optim.SGD(module.parameters(), lr=moons.learning_rate(0))
    history = []
    for k in range(steps):
        scores = module(x0, x1)  # all 100 samples at once
        data_loss = torch.relu(1 - labels * scores).mean()
        reg_loss = moons.ALPHA * sum((p * p).sum() for p in module.parameters())
        loss = data_loss + reg_loss
        opt.zero_grad()
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = moons.learning_rate(k)
        opt.step()
        history.append(loss.item())
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit('this example needs torch: pip install "pyautograd-arena[torch]"')

    X, y = moons.make_moons()
    random.seed(1337)
    model = MLP(2, [16, 16, 1])

    # Export first, so that both trainings start from the same weights.
    inputs = [Value(0.0, label="x0"), Value(0.0, label="x1")]
    module = to_torch(model(inputs), inputs)  # traced from one sample's graph
    print(module.code.strip())
    print()

    scalar_losses = []
    moons.train(model, X, y, steps=args.steps, on_step=lambda k, loss, acc: scalar_losses.append(loss))
    torch_losses = train_exported(module, X, y, args.steps)

    print(f"{'step':>4}  {'pyautograd (scalars)':>22}  {'torch (batched)':>22}  {'difference':>10}")
    for k, (a, b) in enumerate(zip(scalar_losses, torch_losses)):
        print(f"{k:>4}  {a:>22.15f}  {b:>22.15f}  {abs(a - b):>10.1e}")
    worst = max(abs(a - b) / max(abs(a), 1e-300) for a, b in zip(scalar_losses, torch_losses))
    print(f"largest relative difference: {worst:.1e}")


if __name__ == "__main__":
    main()
