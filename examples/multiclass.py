"""A multi-class classifier on pyautograd: an MLP learns three interleaved spirals.

Three arms of 40 points each (made here in pure Python, no numpy), MLP(2, [16, 16, 3])
giving one logit per class, softmax cross-entropy (pyautograd.losses.cross_entropy) and
Adam (pyautograd.optim). Writes the decision regions to a PNG.

    python examples/multiclass.py [--steps N] [--out PATH] [--no-plot] [--verbose]

The PNG goes to --out, by default spirals.png in the system's temporary directory (never
into the checkout); the path is printed.

The progress bar (tqdm) and the plot (matplotlib) are the [examples] extra:
pip install "pyautograd-arena[examples]".
"""

import argparse
import os
import tempfile
import math
import random
import sys

import pyautograd
from pyautograd import losses
from pyautograd.nn import MLP
from pyautograd.optim import Adam
from progress import train_with_progress  # examples/progress.py, beside this script

CLASSES = 3


def make_spirals(points_per_class=40, classes=CLASSES, noise=0.2, seed=0):
    """classes spiral arms around the origin, radius 0..1. Returns (X, y): X a list of
    [x0, x1], y class indices."""
    rng = random.Random(seed)
    X, y = [], []
    for c in range(classes):
        for i in range(points_per_class):
            r = i / (points_per_class - 1)
            t = c * 2 * math.pi / classes + 4.0 * r + rng.gauss(0.0, noise)
            X.append([r * math.sin(t), r * math.cos(t)])
            y.append(c)
    return X, y


def argmax(row):
    return max(range(len(row)), key=lambda i: row[i].data)


def train(model, X, y, steps, lr=0.02, on_step=None):
    """Full-batch Adam on the mean cross-entropy; calls on_step(k, loss, accuracy)."""
    opt = Adam(model.parameters(), lr=lr)
    for k in range(steps):
        logits = [model(x) for x in X]
        loss = losses.cross_entropy(logits, y)
        acc = sum(argmax(row) == c for row, c in zip(logits, y)) / len(y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step:
            on_step(k, loss.data, acc)
    return model


def plot_regions(model, X, y, path):
    """The predicted class over a grid, with the data on top, written to path (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = 0.02
    lo, hi = -1.2, 1.2
    grid = [lo + h * i for i in range(int((hi - lo) / h) + 1)]
    with pyautograd.no_grad():
        Z = [[argmax(model([gx, gy])) for gx in grid] for gy in grid]
    fig, ax = plt.subplots(figsize=(6, 6))
    colors = ["#d7191c", "#2c7bb6", "#1a9641"]  # one per class, regions and points alike
    ax.contourf(grid, grid, Z, levels=[c - 0.5 for c in range(CLASSES + 1)], colors=colors, alpha=0.35)
    ax.scatter([p[0] for p in X], [p[1] for p in X], c=[colors[c] for c in y], s=30, edgecolors="k", linewidths=0.5)
    ax.set_title("pyautograd: MLP(2, [16, 16, 3]), softmax cross-entropy, Adam")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="Adam steps (default 200)")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam's learning rate (default 0.02)")
    default_out = os.path.join(tempfile.gettempdir(), "spirals.png")
    parser.add_argument("--out", default=default_out, help=f"decision regions PNG (default {default_out})")
    parser.add_argument("--no-plot", action="store_true", help="skip the plot (no matplotlib needed)")
    parser.add_argument("--verbose", action="store_true", help="print every step's loss and accuracy")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the weights")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    random.seed(args.seed)
    X, y = make_spirals(seed=args.seed)
    model = MLP(2, [16, 16, CLASSES])
    print(f"MLP(2, [16, 16, {CLASSES}]): {len(model.parameters())} parameters, {len(X)} points in {CLASSES} classes")

    train_with_progress(
        lambda on_step: train(model, X, y, args.steps, args.lr, on_step),
        args.steps,
        args.verbose,
        desc="spirals",
        every=25,
    )

    if not args.no_plot:
        try:
            plot_regions(model, X, y, args.out)
        except ImportError:
            print(
                "the plot needs matplotlib: pip install 'pyautograd-arena[examples]', or pass --no-plot",
                file=sys.stderr,
            )
            return 2
        print(f"decision regions written to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
