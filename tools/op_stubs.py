"""Writes the op table's part of the type stubs from the table itself (csrc/ops.h, read
through pyautograd.engine.OP_NAMES / OP_PYTHON), so that a new row needs no hand edit of
a stub: Value's methods in pyautograd/engine.pyi, the module functions (maximum, ...) in
pyautograd/engine.pyi and pyautograd/__init__.pyi. Each block sits between two marker
lines. tests/test_types.py runs `--check`, which fails when a block is stale.

    python tools/op_stubs.py [--check]
"""

import argparse
import pathlib
import re
import sys

from pyautograd.engine import OP_NAMES, OP_PYTHON

HERE = pathlib.Path(__file__).resolve().parent.parent / "pyautograd"
BEGIN, END = "# ---- begin: the op table's {} (tools/op_stubs.py) ----", "# ---- end: the op table's {} ----"


def rows(kind):
    return [name for name, how in zip(OP_NAMES, OP_PYTHON) if how == kind]


def methods_block(indent="    "):
    lines = [f"{indent}def {name}(self) -> Value: ..." for name in rows("method")]
    lines += [f"{indent}def {name}(self, slope: float = 0.01) -> Value: ..." for name in rows("method_slope")]
    return lines


def extend_all(names):
    """`__all__ += [...]` as `ruff format` writes it (CI checks the format)."""
    return ["", "__all__ += [" + ", ".join(f'"{name}"' for name in names) + "]"]


def functions_block():
    names = rows("function")
    return [f"def {name}(a: Value | float, b: Value | float, /) -> Value: ..." for name in names] + extend_all(names)


def imports_block():
    names = rows("function")
    return [f"from .engine import {name} as {name}" for name in names] + extend_all(names)


BLOCKS = {  # file -> [(what the markers name, the lines, their indentation)]
    "engine.pyi": [("methods", methods_block, "    "), ("functions", functions_block, "")],
    "__init__.pyi": [("functions", imports_block, "")],
}


def rewrite(text, what, lines, indent):
    begin, end = indent + BEGIN.format(what), indent + END.format(what)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"op_stubs: no '{BEGIN.format(what)}' block")
    return pattern.sub(lambda _: "\n".join([begin, *lines, end]), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a block is stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for file, blocks in BLOCKS.items():
        path = HERE / file
        text = new = path.read_text()
        for what, make, indent in blocks:
            new = rewrite(new, what, make(), indent)
        if new != text:
            stale.append(file)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"op_stubs: stale blocks in {', '.join(stale)}: run python tools/op_stubs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
