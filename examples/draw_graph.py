"""Draws the README's example graph: docs/seed_graph.svg and docs/seed_graph.png.

The seed example, labelled, after backward(), drawn as in the micrograd lecture: one box
per Value (label | data | grad), one oval per op. Needs pip install 'pyautograd-arena[viz]'
and Graphviz's dot program. Run: python examples/draw_graph.py [--out DIR]
"""
import argparse
from pathlib import Path

from pyautograd.engine import Value
from pyautograd.viz import draw_dot, summary

DOCS = Path(__file__).resolve().parent.parent / "docs"


def seed_example():
    x = Value(2.0, label="x")
    y = Value(3.0, label="y")
    z = x * y + y + x.tanh()
    z.label = "z"
    z.backward()
    return z


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the pictures (default: docs/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    z = seed_example()
    graph = draw_dot(z)
    for fmt in ("svg", "png"):
        path = args.out / f"seed_graph.{fmt}"
        path.write_bytes(graph.pipe(format=fmt))
        print(f"wrote {path}")
    print(summary(z))


if __name__ == "__main__":
    main()
