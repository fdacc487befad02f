"""Draws the README's example graph as seed_graph.svg and seed_graph.png.

The seed example, labelled, after backward(), drawn as in the micrograd lecture: one box
per Value (label | data | grad), one oval per op. Needs pip install 'pyautograd-arena[viz]'
and Graphviz's dot program. Run: python examples/draw_graph.py [--out DIR]

The pictures go to --out, by default the system's temporary directory, never the
checkout; the paths are printed. The docs' copies are rewritten with --out docs.
"""

import argparse
import tempfile
from pathlib import Path

from pyautograd.engine import Value
from pyautograd.viz import draw_dot, summary


def seed_example():
    x = Value(2.0, label="x")
    y = Value(3.0, label="y")
    z = x * y + y + x.tanh()
    z.label = "z"
    z.backward()
    return z


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(tempfile.gettempdir())
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help=f"directory for the pictures (default {default_out}; --out docs rewrites the docs' copies)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    z = seed_example()
    graph = draw_dot(z)
    for fmt in ("svg", "png"):
        path = args.out / f"seed_graph.{fmt}"
        path.write_bytes(graph.pipe(format=fmt))
        print(f"wrote {path.resolve()}")
    print(summary(z))


if __name__ == "__main__":
    main()
