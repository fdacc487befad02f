"""Seeing a graph: DOT source, a graphviz drawing, the notebook picture and a text summary.

to_dot() and summary() need nothing beyond pyautograd; draw_dot() and the notebook picture
need the `graphviz` package (pip install 'pyautograd-arena[viz]') and Graphviz's `dot`
program.
The walks run in C (csrc/walks.c, csrc/stats.c) and never recurse, and a drawing makes
Values only for the nodes it draws: a graph can be millions of nodes wide or deep.

In a notebook a Value shows its repr, like micrograd's; display_graphs() makes every Value
show its graph instead.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _ag
from .engine import _SYMBOLS, OP_NAMES, Value

if TYPE_CHECKING:
    import graphviz

__all__ = ["to_dot", "draw_dot", "summary", "GraphSummary", "mimebundle", "display_graphs", "DEFAULT_MAX_NODES"]

DEFAULT_MAX_NODES = 500
"""How many Values a drawing shows unless told otherwise: enough for a lecture-sized
graph or a small MLP neuron by neuron, few enough for `dot` to lay out in a second."""

RANKDIRS = ("LR", "RL", "TB", "BT")

# summary() keys: the symbol `_op` shows, or the op's name where that symbol is empty
_HISTOGRAM_KEYS = tuple(symbol or name for name, symbol in zip(OP_NAMES, _SYMBOLS))

# ---- arguments ----


def _check_root(root, what):
    if not isinstance(root, Value):
        raise TypeError(f"{what}() needs a Value, not {type(root).__name__!r}")


def _check_options(rankdir, max_nodes):
    """A wrong type is a TypeError, a value out of range a ValueError (docs/errors.md)."""
    if not isinstance(rankdir, str):
        raise TypeError(f"rankdir must be a str (one of {', '.join(RANKDIRS)}), not {type(rankdir).__name__!r}")
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    if max_nodes is not None and (not isinstance(max_nodes, int) or isinstance(max_nodes, bool)):
        raise TypeError(f"max_nodes must be an int >= 1 or None (no cap), not {type(max_nodes).__name__!r}")
    if max_nodes is not None and max_nodes < 1:
        raise ValueError(f"max_nodes must be an int >= 1 or None (no cap), not {max_nodes!r}")


# ---- DOT text ----

_RECORD_SPECIALS = {c: "\\" + c for c in '\\"{}|<>'}
_PLAIN_SPECIALS = {c: "\\" + c for c in '\\"'}


def _escape(text, specials):
    """text for a quoted DOT label: specials backslashed, a newline as DOT's \\n, other
    control characters shown as \\xNN instead of breaking the file, & and non-ASCII as
    character references (Graphviz 2.43's record parser drops a space after a UTF-8
    character: "αβ cd" shows as "αβcd", "&#945;&#946; cd" as "αβ cd"), but for those
    beyond U+FFFF (emoji), which Graphviz garbles as references: those stay UTF-8."""
    out = []
    for c in text:
        if c in specials:
            out.append(specials[c])
        elif c == "\n":
            out.append("\\n")
        elif c < " " or c == "\x7f":
            out.append(f"\\\\x{ord(c):02x}")
        elif c == "&" or "\x7f" < c <= "\uffff":
            out.append(f"&#{ord(c)};")
        else:
            out.append(c)
    return "".join(out)


def _number(x):
    """The lecture's %.4f, switching to %.4e where %.4f would print dozens of digits."""
    if math.isfinite(x) and abs(x) >= 1e9:
        return f"{x:.4e}"
    return f"{x:.4f}"


def _record(name, label, data, grad):
    record = f"{{ {_escape(label, _RECORD_SPECIALS)} | data {_number(data)} | grad {_number(grad)} }}"
    return f'\t{name} [label="{record}" shape=record]\n'


def _expanded_dot(name, value, drawn):
    """micrograd's picture of a fused dot node (a Neuron's): the products w_i*x_i and
    the running sums b + w0*x0 + w1*x1 + ..., in micrograd's order, each a record with
    its op, the last sum being the dot node itself. Their data is computed here as
    micrograd computes it (the last equals the node's, bitwise); their grad is the
    node's, as each feeds it with a derivative of 1. Edges come from the inputs that
    are drawn (names in drawn)."""
    inputs = value._inputs
    n = len(inputs) // 2
    bias = inputs[-1] if len(inputs) % 2 else None
    lines = []

    def step(node, symbol, operands, data):
        """node (a new record, or the dot's own when node is name) made by symbol from
        operands, (node name, is an input Value) pairs."""
        if node != name:
            lines.append(_record(node, "", data, value.grad))
        lines.append(f'\t{node}_op [label="{symbol}"]\n')
        lines.append(f"\t{node}_op -> {node}\n")
        counts = {}
        for source in operands:
            counts[source] = counts.get(source, 0) + 1
        for source, times in counts.items():
            if source in drawn or source.startswith(name + "_"):
                extra = f' [label="×{times}"]' if times > 1 else ""
                lines.append(f"\t{source} -> {node}_op{extra}\n")

    if n == 1 and bias is None:  # one product: the node is that product
        step(name, "*", [f"v{inputs[0]._id}", f"v{inputs[1]._id}"], value.data)
        return lines
    terms = []
    for i in range(n):
        w, x = inputs[2 * i], inputs[2 * i + 1]
        product = f"{name}_p{i}"
        step(product, "*", [f"v{w._id}", f"v{x._id}"], w.data * x.data)
        terms.append((product, w.data * x.data))
    total = (f"v{bias._id}", bias.data) if bias is not None else terms.pop(0)
    for k, (term, data) in enumerate(terms):
        node = name if k == len(terms) - 1 else f"{name}_s{k}"
        step(node, "+", [total[0], term], total[1] + data)
        total = (node, total[1] + data)
    return lines


def _expansion_size(value):
    """The records _expanded_dot adds for dot node value: its products, and its running
    sums but the last (the node's own record)."""
    n, bias = len(value._inputs) // 2, len(value._inputs) % 2
    return 0 if n == 1 and not bias else n + n - (1 if bias else 2)


def _fits(value, room):
    """Whether dot node value's expansion fits in room more records (None: no cap)."""
    return room is None or _expansion_size(value) <= room


def _statements(root, max_nodes, expand_dot=False):
    """The body of the DOT graph, one statement a line, in the lecture's shapes:
    a record { label | data | grad } per Value, a small node per op, edges from
    inputs to the op they feed to its result. The max_nodes Values nearest the root
    are drawn (breadth-first, csrc/walks.c); a note says how many were not. With
    expand_dot, a dot node is drawn as micrograd draws a neuron (_expanded_dot) while
    its records fit under max_nodes with the rest; one that does not stays one node."""
    values, edges, cut, left_out = _ag.nearest(root, 0 if max_nodes is None else max_nodes)
    lines = []
    target = []  # where edges into a Value arrive: its op node, or its record
    names = [f"v{value._id}" for value in values]  # node ids: unique while the root lives
    drawn, expanded = set(names), set()
    room = None if max_nodes is None else max_nodes - len(values)  # records an expansion may add
    for i, (name, value) in enumerate(zip(names, values)):
        lines.append(_record(name, value.label, value.data, value.grad))
        op = value._op  # "" for leaves, as for micrograd's Value(2)
        if expand_dot and op == "dot" and len(value._inputs) >= 2 and _fits(value, room):
            room = None if room is None else room - _expansion_size(value)
            lines += _expanded_dot(name, value, drawn)
            target.append(f"{name}_op")
            expanded.add(i)  # its inputs' edges are drawn by the expansion
        elif op:
            lines.append(f'\t{name}_op [label="{_escape(op, _PLAIN_SPECIALS)}"]\n')
            lines.append(f"\t{name}_op -> {name}\n")
            target.append(f"{name}_op")
        else:
            target.append(name)
    for child, user, times in edges:
        if user in expanded:
            continue
        extra = f' [label="×{times}"]' if times > 1 else ""  # a + a: one edge, ×2
        lines.append(f"\t{names[child]} -> {target[user]}{extra}\n")
    if cut:
        total = left_out + len(values)
        note = f"{left_out:,} of {total:,} nodes not drawn\\n(max_nodes={max_nodes})"
        lines.append(f'\tleft_out [label="{note}" shape=note style=dashed]\n')
        for i in cut:
            lines.append(f"\tleft_out -> {target[i]} [style=dashed]\n")
    return lines


def to_dot(
    root: Value, rankdir: str = "LR", max_nodes: int | None = DEFAULT_MAX_NODES, expand_dot: bool = False
) -> str:
    """The graph under root as DOT source (a str), needing no graphviz install.

    Nodes nearest the root come first; past max_nodes (None: no cap) a note node says
    how many were left out and dashed edges show which nodes lost inputs.
    expand_dot=True draws each fused dot node (a Neuron's) as micrograd draws a neuron:
    its products and running sums as records of their own, `*` and `+` ops (they count
    toward max_nodes: a dot node whose records would pass it stays one node).
    Render it with `dot -Tsvg`, or use draw_dot() for a graphviz.Digraph.
    """
    _check_root(root, "to_dot")
    _check_options(rankdir, max_nodes)
    body = "".join(_statements(root, max_nodes, bool(expand_dot)))
    return f"digraph {{\n\tgraph [rankdir={rankdir}]\n{body}}}\n"


def draw_dot(
    root: Value,
    format: str = "svg",
    rankdir: str = "LR",
    max_nodes: int | None = DEFAULT_MAX_NODES,
    expand_dot: bool = False,
) -> "graphviz.Digraph":
    """The graph under root as a graphviz.Digraph, as in the micrograd lecture:
    .render() writes a file, and a notebook shows it inline. Needs `graphviz`.
    expand_dot=True: a neuron's dot node as micrograd's products and sums (to_dot)."""
    _check_root(root, "draw_dot")
    _check_options(rankdir, max_nodes)
    try:
        import graphviz
    except ImportError as error:
        raise ImportError(
            "pyautograd.viz.draw_dot needs the graphviz package: "
            "pip install 'pyautograd-arena[viz]' (and Graphviz's dot program, "
            "e.g. apt install graphviz)"
        ) from error
    return graphviz.Digraph(
        format=format, graph_attr={"rankdir": rankdir}, body=_statements(root, max_nodes, bool(expand_dot))
    )


def mimebundle(value: Value, max_nodes: int | None = DEFAULT_MAX_NODES) -> dict[str, str]:
    """A Value's graph for a notebook: SVG when graphviz and `dot` are installed, its repr
    otherwise. A display hook, so it never raises."""
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    try:
        svg = draw_dot(value, max_nodes=max_nodes).pipe(format="svg", encoding="utf-8")
    except Exception:  # no graphviz, no dot, or dot failed: the text is still worth showing
        return {"text/plain": text}
    return {"image/svg+xml": svg, "text/plain": text}


def _repr_mimebundle_(self, include=None, exclude=None):
    return mimebundle(self)


def display_graphs(enabled: bool = True) -> None:
    """Makes every Value show its graph in a notebook (enabled=False: its repr again,
    the default, as micrograd's Value shows)."""
    if enabled:
        Value._repr_mimebundle_ = _repr_mimebundle_
    elif "_repr_mimebundle_" in Value.__dict__:
        del Value._repr_mimebundle_


# ---- a text summary ----


@dataclass(frozen=True)
class GraphSummary:
    """The shape of the graph under a root. str() gives a small table."""

    nodes: int  # reachable from the root, root included
    depth: int  # longest path from the root to a leaf, in edges (a leaf alone: 0)
    ops: dict[str, int]  # op ('+', 'tanh', 'leaf', ...) -> how many nodes it made, most first

    def __str__(self) -> str:
        lines = [f"{self.nodes:,} nodes, depth {self.depth:,}"]
        width = max(map(len, self.ops), default=0)
        lines += [f"  {op:<{width}}  {count:,}" for op, count in self.ops.items()]
        return "\n".join(lines)


def summary(root: Value) -> GraphSummary:
    """Node count, depth and op histogram of the graph under root, in one C pass
    (milliseconds for a million nodes)."""
    _check_root(root, "summary")
    counts, depth = _ag.graph_stats(root)
    histogram = {}
    for op, key in enumerate(_HISTOGRAM_KEYS):
        if counts[op]:
            histogram[key] = histogram.get(key, 0) + counts[op]
    ops = dict(sorted(histogram.items(), key=lambda item: -item[1]))  # stable: table order on ties
    return GraphSummary(nodes=sum(ops.values()), depth=depth, ops=ops)
