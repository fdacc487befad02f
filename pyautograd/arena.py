"""What the C arena holds right now: for tests that prove nothing leaks, and for the curious."""

import numbers

from . import _ag
from ._ag import lib
from .engine import Value

__all__ = ["stats", "set_node_limit", "graph_size"]


def stats() -> dict[str, int]:
    """Live nodes, node slots allocated, bytes held, and the size of one node."""
    return {
        "live_nodes": lib.ag_live_nodes(),
        "capacity": lib.ag_capacity(),
        "bytes": lib.ag_arena_bytes(),
        "node_size": lib.ag_node_size(),
    }


def set_node_limit(max_nodes: int) -> None:
    """Caps live nodes (0: no cap). Past it, ops raise MemoryError as if memory ran out."""
    # bool is an int, but set_node_limit(True) is a slip, not a limit of one node
    if not isinstance(max_nodes, numbers.Integral) or isinstance(max_nodes, bool):
        raise TypeError(f"set_node_limit() max_nodes must be an int, not {type(max_nodes).__name__!r}")
    if max_nodes < 0:
        raise ValueError(f"max_nodes must be an int >= 0, not {max_nodes!r}")
    lib.ag_set_node_limit(int(max_nodes))


def graph_size(root: Value) -> int:
    """How many nodes root's graph has (root and everything it was computed from), in one
    C call."""
    return _ag.graph_size(root)
