"""The table of bad inputs in docs/errors.md: each input is run here, and the table shows
what it really gets (the exception's type and message, or the IEEE value and gradient),
so the page never drifts from the code (tests/test_docs.py checks that it has not).

    python tools/bad_input_table.py                        prints the table
    python tools/bad_input_table.py --write docs/errors.md  rewrites the table in place

--write replaces what lies between the lines <!-- bad-input-table --> and
<!-- /bad-input-table --> in the file, and nothing else. Run it in a fresh process:
the memory rows show how many nodes are live.
"""

import argparse
import decimal
import fractions
import math
import sys
from pathlib import Path

import pyautograd
from pyautograd import arena, functional, losses, nn
from pyautograd.engine import Value

NAN, INF = math.nan, math.inf


def numpy():
    import numpy  # in the [test] extra; imported only for its row

    return numpy


def grad_of(make, *leaves):
    """make(*Values) -> (value, grads of the leaves after backward)."""
    xs = [Value(x) for x in leaves]
    y = make(*xs)
    y.backward()
    return y.data, [x.grad for x in xs]


def limited(make, headroom=0):
    base = arena.stats()["live_nodes"]
    arena.set_node_limit(base + headroom)
    try:
        return make()
    finally:
        arena.set_node_limit(0)


def with_anomaly(make):
    with pyautograd.detect_anomaly():
        return make()


def replay_nan():
    x = Value(-1.0)
    y = (x + 2.0).log()
    x.data = -3.0
    return with_anomaly(y.forward)


def backward_inf():
    x = Value(0.0)
    y = x**0.5
    return with_anomaly(y.backward)


CASES = [
    # ---- not numbers ----
    ("`Value('x')`", lambda: Value("x")),
    ("`Value(None)`", lambda: Value(None)),
    ("`Value(1j)`", lambda: Value(1j)),
    ("`Value([1.0])`", lambda: Value([1.0])),
    ("`Value(Decimal(1))`", lambda: Value(decimal.Decimal(1))),
    ("`Value(10**400)`", lambda: Value(10**400)),
    ("`Value(1) + 'x'`", lambda: Value(1) + "x"),
    ("`'x' + Value(1)`", lambda: "x" + Value(1)),
    ("`Value(2) ** 'x'`", lambda: Value(2) ** "x"),
    ("`Value(1) * None`", lambda: Value(1) * None),
    ("`Value(1) < Value(2)`", lambda: Value(1) < Value(2)),
    ("`v.data = 'x'`", lambda: setattr(Value(1.0), "data", "x")),
    ("`v.grad = None`", lambda: setattr(Value(1.0), "grad", None)),
    ("`Value(1.0, (Value(2.0), 3.0), 'op')`", lambda: Value(1.0, (Value(2.0), 3.0), "op")),
    ("`Value(1, 2)`", lambda: Value(1, 2)),
    ("`Value(1, (x,), local_grads=3.0)`", lambda: Value(1, (Value(2.0),), local_grads=3.0)),
    ("`Value(6.0, (x,), 3.0)` (micrograd: `_op` '3.0', no gradient)", lambda: Value(6.0, (Value(2.0),), 3.0)),
    ("`pyautograd.sum(3)`", lambda: functional.sum(3)),
    ("`pyautograd.dot([a, b], [c])`", lambda: functional.dot([Value(1.0), Value(2.0)], [Value(3.0)])),
    ("`softmax([])`", lambda: functional.softmax([])),
    ("`arena.set_node_limit(-1)`", lambda: arena.set_node_limit(-1)),
    ("`arena.set_node_limit('a')`", lambda: arena.set_node_limit("a")),
    ("`arena.set_node_limit(True)`", lambda: arena.set_node_limit(True)),
    # ---- models and losses ----
    ("`MLP(2, [3, 1])([[1, 2]])` (a batch as one input)", lambda: nn.MLP(2, [3, 1])([[1, 2]])),
    ("`MLP(2, [3, 1])([[1, 2], [3, 4]])`", lambda: nn.MLP(2, [3, 1])([[1, 2], [3, 4]])),
    ("`Neuron(2)([[1, 2], [3, 4]])`", lambda: nn.Neuron(2)([[1, 2], [3, 4]])),
    ("`MLP(2, [3, 1])([1.0])` (micrograd: computes on the one input)", lambda: nn.MLP(2, [3, 1])([1.0])),
    ("`MLP(2, [3, 1])([])`", lambda: nn.MLP(2, [3, 1])([])),
    ("`MLP(-1, [1])`", lambda: nn.MLP(-1, [1])),
    ("`MLP(2, [3, -1])`", lambda: nn.MLP(2, [3, -1])),
    ("`losses.hinge([s], [0])`", lambda: losses.hinge([Value(1.0)], [0])),
    (
        "`losses.binary_cross_entropy_with_logits([x], [2.0])`",
        lambda: losses.binary_cross_entropy_with_logits([Value(1.0)], [2.0]),
    ),
    # ---- accepted numbers ----
    ("`Value(True)`, `Value(Fraction(1, 4))`", lambda: (Value(True).data, Value(fractions.Fraction(1, 4)).data)),
    (
        "`Value(np.True_)`, `Value(np.int64(3))` (numpy's bool is no `numbers.Real`: taken as bool)",
        lambda: (Value(numpy().True_).data, Value(numpy().int64(3)).data),
    ),
    # ---- IEEE domain edges: value, and gradient of each input ----
    ("`log(-1)`", lambda: grad_of(lambda x: x.log(), -1.0)),
    ("`log(0)`", lambda: grad_of(lambda x: x.log(), 0.0)),
    ("`1 / 0`", lambda: grad_of(lambda x, y: x / y, 1.0, 0.0)),
    ("`0 / 0`", lambda: grad_of(lambda x, y: x / y, 0.0, 0.0)),
    ("`0 ** -1`", lambda: grad_of(lambda x, y: x**y, 0.0, -1.0)),
    ("`0 ** 0`", lambda: grad_of(lambda x, y: x**y, 0.0, 0.0)),
    ("`0 ** 0.5`", lambda: grad_of(lambda x: x**0.5, 0.0)),
    ("`(-8) ** (1/3)`", lambda: grad_of(lambda x, y: x**y, -8.0, 1 / 3)),
    ("`(-2) ** 3` (Value exponent)", lambda: grad_of(lambda x, y: x**y, -2.0, 3.0)),
    ("`exp(1000)`", lambda: grad_of(lambda x: x.exp(), 1000.0)),
    ("`tanh(inf)`", lambda: grad_of(lambda x: x.tanh(), INF)),
    ("`sigmoid(-inf)`", lambda: grad_of(lambda x: x.sigmoid(), -INF)),
    ("`relu(0)`", lambda: grad_of(lambda x: x.relu(), 0.0)),
    ("`relu(nan)`", lambda: grad_of(lambda x: x.relu(), NAN)),
    ("`relu(-x)` under a gradient of inf: `log(relu(-x))` at x = 0", lambda: grad_of(lambda x: (-x).relu().log(), 0.0)),
    ("`inf - inf`", lambda: grad_of(lambda x, y: x - y, INF, INF)),
    ("`1e308 * 10`", lambda: grad_of(lambda x: x * 10, 1e308)),
    ("`1e308 / 1e308`", lambda: grad_of(lambda x, y: x / y, 1e308, 1e308)),
    ("`log(1e-320)` (subnormal)", lambda: grad_of(lambda x: x.log(), 1e-320)),
    ("`log(x) * 1e-300` at x = 1e-320 (torch: grad 1e20)", lambda: grad_of(lambda x: x.log() * 1e-300, 1e-320)),
    # ---- memory ----
    ("an op past `arena.set_node_limit(n)`", lambda: limited(lambda: Value(1.0) * 2.0, 1)),
    ("a model past the node limit", lambda: limited(lambda: nn.MLP(2, [2, 1])([1.0, 2.0]), 9)),
    # ---- detect_anomaly ----
    ("`log(-1)` in `detect_anomaly()`", lambda: with_anomaly(lambda: Value(-1.0).log())),
    ("`1 / 0` in `detect_anomaly()`", lambda: with_anomaly(lambda: Value(1.0) / 0)),
    (
        "`sum([1e308, 1e308])` in `detect_anomaly()`",
        lambda: with_anomaly(lambda: functional.sum([Value(1e308), Value(1e308)])),
    ),
    ("`(x ** 0.5).backward()` at x = 0 in `detect_anomaly()`", backward_inf),
    ("`y.forward()` replaying `log` of a negative in `detect_anomaly()`", replay_nan),
]


def outcome(make):
    try:
        result = make()
    except Exception as error:  # the point is to show it
        return f"{type(error).__name__}: {error}".replace("|", "\\|")
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
        value, grads = result
        return f"value {value!r}, grad {', '.join(repr(g) for g in grads)}"
    return f"accepted: {result!r}"


START, END = "<!-- bad-input-table -->", "<!-- /bad-input-table -->"


def table():
    """The markdown table, one line per case, ending in a newline."""
    lines = ["| input | what it gets |", "| --- | --- |"]
    lines += [f"| {text} | {outcome(make)} |" for text, make in CASES]
    return "\n".join(lines) + "\n"


def write_into(path, text):
    """Replaces the lines between START and END in the file at path with text. Returns
    False (and changes nothing) when the markers are missing or out of order."""
    page = Path(path).read_text(encoding="utf-8")
    start, end = page.find(START + "\n"), page.find(END)
    if start < 0 or end < start:
        return False
    start += len(START) + 1
    Path(path).write_text(page[:start] + text + page[end:], encoding="utf-8")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description="The table of bad inputs and what they get.")
    parser.add_argument("--write", metavar="FILE", help=f"rewrite the table between {START} and {END} in FILE")
    args = parser.parse_args(argv)
    text = table()
    if args.write is None:
        sys.stdout.write(text)
        return 0
    if not write_into(args.write, text):
        print(f"{args.write}: no lines {START} and {END} to write the table between", file=sys.stderr)
        return 1
    print(f"wrote the table ({len(CASES)} inputs) into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
