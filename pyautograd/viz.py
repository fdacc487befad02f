"""Seeing a graph: DOT source, a graphviz drawing, the notebook picture and a text summary.

to_dot() and summary() need nothing beyond pyautograd; draw_dot() and the notebook picture
need the `graphviz` package (pip install 'pyautograd[viz]') and Graphviz's `dot` program.
The walks read the C arena by node id, never make a Value per node and never recurse:
a graph can be millions of nodes wide or deep.
"""
import math
from dataclasses import dataclass, field

from ._ag import ffi, lib
from .engine import Value

__all__ = ["to_dot", "draw_dot", "summary", "GraphSummary", "mimebundle", "DEFAULT_MAX_NODES"]

DEFAULT_MAX_NODES = 500
"""How many Values a drawing shows unless told otherwise: enough for a lecture-sized
graph or a small MLP neuron by neuron, few enough for `dot` to lay out in a second."""

RANKDIRS = ("LR", "RL", "TB", "BT")


def _op_table():
    names, symbols = [], []
    for code in range(lib.ag_op_count()):
        names.append(ffi.string(lib.ag_op_name(code)).decode())
        symbols.append(ffi.string(lib.ag_op_symbol(code)).decode())
    return tuple(names), tuple(symbols)


_OP_NAMES, _OP_SYMBOLS = _op_table()
_CONST, _POW, _CUSTOM = (_OP_NAMES.index(name) for name in ("const", "pow", "custom"))
# summary() keys: the symbol `_op` shows, or the op's name where that symbol is empty
_HISTOGRAM_KEYS = tuple(symbol or name for name, symbol in zip(_OP_NAMES, _OP_SYMBOLS))


# ---- reading nodes straight from C ----

def _op_text(node):
    """What Value._op shows for this node: '+', 'tanh', '**2', or a custom op's text."""
    op = lib.ag_op(node)
    if op == _CUSTOM:
        return ffi.string(lib.ag_custom_op(node)).decode("utf-8", "replace")
    if op == _POW:
        exponent = lib.ag_input(node, 1)
        if lib.ag_op(exponent) == _CONST:
            e = lib.ag_data(exponent)
            return f"**{int(e) if e.is_integer() else e}"
    return _OP_SYMBOLS[op]


def _label(node):
    return ffi.string(lib.ag_label(node)).decode("utf-8", "replace")


def _graph_size(node):
    size = lib.ag_graph_size(node)
    if not size:  # every graph holds its root: 0 means the sort ran out of memory
        raise MemoryError("pyautograd: out of memory measuring the graph")
    return size


# ---- arguments ----

def _root_id(root, what):
    if not isinstance(root, Value):
        raise TypeError(f"{what}() needs a Value, not {type(root).__name__!r}")
    return root._id


def _check_options(rankdir, max_nodes):
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    if max_nodes is not None and (not isinstance(max_nodes, int) or isinstance(max_nodes, bool)
                                  or max_nodes < 1):
        raise ValueError(f"max_nodes must be an int >= 1 or None (no cap), not {max_nodes!r}")


# ---- the part of the graph to draw ----

@dataclass
class _Drawing:
    nodes: list                                # node ids, breadth-first from the root
    edges: dict = field(default_factory=dict)  # (input, user) -> how many input slots
    cut: list = field(default_factory=list)    # drawn nodes with inputs left out
    left_out: int = 0                          # reachable nodes not drawn


def _nearest(root, max_nodes):
    """The max_nodes nodes nearest the root, breadth-first, and the edges among them.

    A node's input slots are scanned up to max_nodes of them: a sum of a million
    leaves costs max_nodes calls, not a million. What is not drawn is counted with
    ag_graph_size, one C call.
    """
    input_count, input_of = lib.ag_input_count, lib.ag_input
    cap = math.inf if max_nodes is None else max_nodes
    drawing = _Drawing(nodes=[root])
    drawn = {root}
    edges = drawing.edges
    for node in drawing.nodes:  # grows while it is walked: a breadth-first queue
        slots = input_count(node)
        scanned = slots if slots <= cap else cap
        incomplete = scanned < slots
        for i in range(scanned):
            child = input_of(node, i)
            if child not in drawn:
                if len(drawing.nodes) >= cap:
                    incomplete = True
                    continue
                drawn.add(child)
                drawing.nodes.append(child)
            edges[child, node] = edges.get((child, node), 0) + 1
        if incomplete:
            drawing.cut.append(node)
    if drawing.cut:
        drawing.left_out = _graph_size(root) - len(drawing.nodes)
    return drawing


# ---- DOT text ----

_RECORD_SPECIALS = {c: "\\" + c for c in '\\"{}|<>'}
_PLAIN_SPECIALS = {c: "\\" + c for c in '\\"'}


def _escape(text, specials):
    """text for a quoted DOT label: specials backslashed, a newline as DOT's \\n, other
    control characters shown as \\xNN instead of breaking the file, & and non-ASCII as
    character references (Graphviz 2.43's record parser drops a space after a UTF-8
    character: "αβ cd" shows as "αβcd", "&#945;&#946; cd" as "αβ cd")."""
    out = []
    for c in text:
        if c in specials:
            out.append(specials[c])
        elif c == "\n":
            out.append("\\n")
        elif c < " " or c == "\x7f":
            out.append(f"\\\\x{ord(c):02x}")
        elif c == "&" or c > "\x7f":
            out.append(f"&#{ord(c)};")
        else:
            out.append(c)
    return "".join(out)


def _number(x):
    """The lecture's %.4f, switching to %.4e where %.4f would print dozens of digits."""
    if math.isfinite(x) and abs(x) >= 1e9:
        return f"{x:.4e}"
    return f"{x:.4f}"


def _statements(root, max_nodes):
    """The body of the DOT graph, one statement a line, in the lecture's shapes:
    a record { label | data | grad } per Value, a small node per op, edges from
    inputs to the op they feed to its result."""
    drawing = _nearest(root, max_nodes)
    lines = []
    target = {}  # where edges into a node arrive: its op node, or the record itself
    for node in drawing.nodes:
        name = f"v{node}"
        record = (f"{{ {_escape(_label(node), _RECORD_SPECIALS)} | data {_number(lib.ag_data(node))}"
                  f" | grad {_number(lib.ag_grad(node))} }}")
        lines.append(f'\t{name} [label="{record}" shape=record]\n')
        op = _op_text(node)  # "" for leaves, as for micrograd's Value(2)
        if op:
            lines.append(f'\t{name}_op [label="{_escape(op, _PLAIN_SPECIALS)}"]\n')
            lines.append(f"\t{name}_op -> {name}\n")
            target[node] = f"{name}_op"
        else:
            target[node] = name
    for (child, user), times in drawing.edges.items():
        extra = f' [label="×{times}"]' if times > 1 else ""  # a + a: one edge, ×2
        lines.append(f"\tv{child} -> {target[user]}{extra}\n")
    if drawing.cut:
        total = drawing.left_out + len(drawing.nodes)
        note = (f"{drawing.left_out:,} of {total:,} nodes not drawn\\n"
                f"(max_nodes={max_nodes})")
        lines.append(f'\tleft_out [label="{note}" shape=note style=dashed]\n')
        for node in drawing.cut:
            lines.append(f"\tleft_out -> {target[node]} [style=dashed]\n")
    return lines


def to_dot(root, rankdir="LR", max_nodes=DEFAULT_MAX_NODES):
    """The graph under root as DOT source (a str), needing no graphviz install.

    Nodes nearest the root come first; past max_nodes (None: no cap) a note node says
    how many were left out and dashed edges show which nodes lost inputs.
    Render it with `dot -Tsvg`, or use draw_dot() for a graphviz.Digraph.
    """
    node = _root_id(root, "to_dot")
    _check_options(rankdir, max_nodes)
    body = "".join(_statements(node, max_nodes))
    return f"digraph {{\n\tgraph [rankdir={rankdir}]\n{body}}}\n"


def draw_dot(root, format="svg", rankdir="LR", max_nodes=DEFAULT_MAX_NODES):
    """The graph under root as a graphviz.Digraph, as in the micrograd lecture:
    .render() writes a file, and a notebook shows it inline. Needs `graphviz`."""
    node = _root_id(root, "draw_dot")
    _check_options(rankdir, max_nodes)
    try:
        import graphviz
    except ImportError as error:
        raise ImportError("pyautograd.viz.draw_dot needs the graphviz package: "
                          "pip install 'pyautograd[viz]' (and Graphviz's dot program, "
                          "e.g. apt install graphviz)") from error
    return graphviz.Digraph(format=format, graph_attr={"rankdir": rankdir},
                            body=_statements(node, max_nodes))


def mimebundle(value, max_nodes=DEFAULT_MAX_NODES):
    """What a notebook shows for a Value: its graph as SVG when graphviz and `dot` are
    installed, its repr otherwise. A display hook, so it never raises."""
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    try:
        svg = draw_dot(value, max_nodes=max_nodes).pipe(format="svg", encoding="utf-8")
    except Exception:  # no graphviz, no dot, or dot failed: the text is still worth showing
        return {"text/plain": text}
    return {"image/svg+xml": svg, "text/plain": text}


# ---- a text summary ----

@dataclass(frozen=True)
class GraphSummary:
    """The shape of the graph under a root. str() gives a small table."""
    nodes: int   # reachable from the root, root included
    depth: int   # longest path from the root to a leaf, in edges (a leaf alone: 0)
    ops: dict    # op ('+', 'tanh', 'leaf', 'const', ...) -> how many nodes it made, most first

    def __str__(self):
        lines = [f"{self.nodes:,} nodes, depth {self.depth:,}"]
        width = max(map(len, self.ops), default=0)
        lines += [f"  {op:<{width}}  {count:,}" for op, count in self.ops.items()]
        return "\n".join(lines)


def summary(root):
    """Node count, depth and op histogram of the graph under root, in one C pass
    (milliseconds for a million nodes)."""
    node = _root_id(root, "summary")
    counts = ffi.new("size_t[]", len(_OP_NAMES))
    depth = ffi.new("size_t *")
    if lib.ag_graph_stats(node, counts, depth):
        raise MemoryError("pyautograd: out of memory summarising the graph")
    histogram = {}
    for op, key in enumerate(_HISTOGRAM_KEYS):
        if counts[op]:
            histogram[key] = histogram.get(key, 0) + counts[op]
    ops = dict(sorted(histogram.items(), key=lambda item: -item[1]))  # stable: table order on ties
    return GraphSummary(nodes=sum(ops.values()), depth=depth[0], ops=ops)
