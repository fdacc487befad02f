"""micrograd's demo on pyautograd: a 2-16-16-1 MLP learns to separate two moons.

As micrograd's demo.ipynb: 100 points with noise 0.1 (made here, without scikit-learn),
MLP(2, [16, 16, 1]), max-margin (hinge) loss + 1e-4 L2, 100 SGD steps at
lr = 1 - 0.9*k/100. It reaches 100% training accuracy and writes the decision boundary
to a PNG. With --replay the loss graph is built once and re-run in C every step.

    python examples/moons.py [--steps N] [--out PATH] [--no-plot] [--replay] [--verbose]

The PNG goes to --out, by default moons.png in the system's temporary directory (never
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
from pyautograd.engine import Value
from pyautograd.nn import MLP
from pyautograd.optim import SGD
from progress import train_with_progress  # examples/progress.py, beside this script

ALPHA = 1e-4  # L2 regularisation strength, micrograd's


def make_moons(n_samples=100, noise=0.1, seed=1337):
    """Two interleaving half circles, as scikit-learn's make_moons (shuffled, Gaussian
    noise), in pure Python. Returns (X, y): X a list of [x0, x1], y labels in {-1, +1}."""
    rng = random.Random(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out

    def angles(n):
        return [math.pi * i / (n - 1) if n > 1 else 0.0 for i in range(n)]

    points = [([math.cos(t), math.sin(t)], -1) for t in angles(n_out)]
    points += [([1 - math.cos(t), 1 - math.sin(t) - 0.5], 1) for t in angles(n_in)]
    rng.shuffle(points)
    X = [[x0 + rng.gauss(0.0, noise), x1 + rng.gauss(0.0, noise)] for (x0, x1), _ in points]
    y = [label for _, label in points]
    return X, y


def build_loss(model, X, y):
    """micrograd's demo loss: hinge over the batch + ALPHA * sum(p*p); also the scores."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    data_loss = losses.hinge(scores, y)
    params = model.parameters()
    reg_loss = ALPHA * pyautograd.dot(params, params)  # sum(p*p for p in params), fused
    return data_loss + reg_loss, scores


def accuracy(scores, y):
    return sum((yi > 0) == (s.data > 0) for yi, s in zip(y, scores)) / len(y)


def learning_rate(k):
    return 1.0 - 0.9 * k / 100


def train(model, X, y, steps=100, replay=False, on_step=None):
    """Trains model in place; calls on_step(k, loss, accuracy) after each step.

    Rebuilding (micrograd's way): each step makes the loss graph anew from the model.
    Replay: the graph is made once; each step re-runs it in C from the parameters'
    current data (the inputs are fixed), then backward and the update, as before.
    """
    opt = SGD(model.parameters(), lr=learning_rate(0))
    total_loss = scores = None
    for k in range(steps):
        if replay and total_loss is not None:
            total_loss.forward()
        else:
            total_loss, scores = build_loss(model, X, y)
        acc = accuracy(scores, y)
        opt.zero_grad()
        total_loss.backward()
        opt.lr = learning_rate(k)
        opt.step()
        if on_step:
            on_step(k, total_loss.data, acc)
    return model


def plot_decision_boundary(model, X, y, path):
    """The model's sign over a grid, with the data on top, written to path (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = 0.05
    x_min, x_max = min(p[0] for p in X) - 1, max(p[0] for p in X) + 1
    y_min, y_max = min(p[1] for p in X) - 1, max(p[1] for p in X) + 1
    xs = [x_min + h * i for i in range(int((x_max - x_min) / h) + 1)]
    ys = [y_min + h * j for j in range(int((y_max - y_min) / h) + 1)]
    with pyautograd.no_grad():
        Z = [[float(model([xv, yv]).data > 0) for xv in xs] for yv in ys]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xs, ys, Z, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter([p[0] for p in X], [p[1] for p in X], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k", linewidths=0.5)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_title("pyautograd: MLP(2, [16, 16, 1]) on two moons")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="SGD steps (default 100)")
    default_out = os.path.join(tempfile.gettempdir(), "moons.png")
    parser.add_argument("--out", default=default_out, help=f"decision boundary PNG (default {default_out})")
    parser.add_argument("--no-plot", action="store_true", help="skip the plot (no matplotlib needed)")
    parser.add_argument("--replay", action="store_true", help="build the loss graph once and re-run it in C each step")
    parser.add_argument("--verbose", action="store_true", help="print every step's loss and accuracy")
    parser.add_argument("--seed", type=int, default=1337, help="seed for the data and the weights")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    random.seed(args.seed)
    X, y = make_moons(100, noise=0.1, seed=args.seed)
    model = MLP(2, [16, 16, 1])
    print(
        f"{model.__class__.__name__}(2, [16, 16, 1]): {len(model.parameters())} parameters, "
        f"{'replaying one graph' if args.replay else 'rebuilding the graph each step'}"
    )

    train_with_progress(
        lambda on_step: train(model, X, y, args.steps, args.replay, on_step),
        args.steps,
        args.verbose,
        desc="moons",
        every=10,
    )

    if not args.no_plot:
        try:
            plot_decision_boundary(model, X, y, args.out)
        except ImportError:
            print(
                "the plot needs matplotlib: pip install 'pyautograd-arena[examples]', or pass --no-plot",
                file=sys.stderr,
            )
            return 2
        print(f"decision boundary written to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
