"""Ops over many Values at once: sum and dot as single fused C nodes, softmax, log_softmax.

A fused node has every term as an input, so a 16-input neuron is one node, not a
chain of 32 binary ones, and its gradient is exact. The order of evaluation is
micrograd's (Python's sum: start first, then each term left to right), so the results
are bitwise those of the unfused expressions.
"""
import math
import numbers

from ._ag import lib
from .engine import Value, _raise_failure, _wrap

__all__ = ["sum", "dot", "softmax", "log_softmax"]

_FAST_NUMBERS = (float, int, bool)


def _node_ids(items, what, temporaries):
    """Node ids of items (Values or real numbers). A number becomes a new leaf, as
    micrograd's Value(x) would; its id is also put in temporaries, whose reference the
    caller drops once the fused node holds its own."""
    ids = []
    append = ids.append
    for item in items:
        if isinstance(item, Value):
            append(item._id)
        elif type(item) in _FAST_NUMBERS or isinstance(item, numbers.Real):
            node = lib.ag_leaf(item)
            if not node:
                _raise_failure(what)
            temporaries.append(node)
            append(node)
        else:
            raise TypeError(f"{what}() takes Values or real numbers, not {type(item).__name__!r}")
    return ids


def _start_id(start, what, temporaries):
    """The id of start, or 0 when start is the number 0 (adding it changes nothing)."""
    if isinstance(start, Value):
        return start._id
    if type(start) in _FAST_NUMBERS or isinstance(start, numbers.Real):
        if start == 0:
            return 0
        return _node_ids((start,), what, temporaries)[0]
    raise TypeError(f"{what}() start must be a Value or a real number, not {type(start).__name__!r}")


def sum(values, start=0):  # noqa: A001 - shadows builtins.sum on purpose: pyautograd.sum
    """start + values[0] + values[1] + ... as one node (Python's sum, fused).

    values may hold Values and real numbers; the result is always a Value. Bitwise
    equal to Python's sum(values, start) over micrograd-style Values.
    """
    if not hasattr(values, "__iter__"):
        raise TypeError(f"sum() values must be an iterable, not {type(values).__name__!r}")
    temporaries = []
    try:
        ids = _node_ids(values, "sum", temporaries)
        first = _start_id(start, "sum", temporaries)
        if not ids:  # Python's sum([], start) is start
            return start if isinstance(start, Value) else Value(start)
        if first:
            ids.insert(0, first)
        node = lib.ag_sum(ids, len(ids))
        if not node:
            _raise_failure("sum", [lib.ag_data(i) for i in ids])
        return _wrap(node)
    finally:
        if temporaries:
            lib.ag_decref_many(temporaries, len(temporaries))


def dot(ws, xs, start=0):
    """start + ws[0]*xs[0] + ws[1]*xs[1] + ... as one node.

    Bitwise equal to micrograd's sum((w*x for w, x in zip(ws, xs)), start). ws and xs
    hold Values or real numbers and must have the same length.
    """
    for name, seq in (("ws", ws), ("xs", xs)):
        if not hasattr(seq, "__iter__"):
            raise TypeError(f"dot() {name} must be an iterable, not {type(seq).__name__!r}")
    temporaries = []
    try:
        w_ids = _node_ids(ws, "dot", temporaries)
        x_ids = _node_ids(xs, "dot", temporaries)
        if len(w_ids) != len(x_ids):
            raise ValueError(f"dot() needs as many ws as xs, got {len(w_ids)} and {len(x_ids)}")
        bias = _start_id(start, "dot", temporaries)
        node = lib.ag_dot(w_ids, x_ids, len(w_ids), bias)
        if not node:
            pairs = [i for pair in zip(w_ids, x_ids) for i in pair] + ([bias] if bias else [])
            _raise_failure("dot", [lib.ag_data(i) for i in pairs])  # the node's inputs, in order
        return _wrap(node)
    finally:
        if temporaries:
            lib.ag_decref_many(temporaries, len(temporaries))


def _as_values(values, what):
    """values as a non-empty list of Values (numbers become leaves)."""
    if not hasattr(values, "__iter__"):
        raise TypeError(f"{what}() values must be an iterable, not {type(values).__name__!r}")
    out = []
    for v in values:
        if isinstance(v, Value):
            out.append(v)
        elif type(v) in _FAST_NUMBERS or isinstance(v, numbers.Real):
            out.append(Value(v))
        else:
            raise TypeError(f"{what}() takes Values or real numbers, not {type(v).__name__!r}")
    if not out:
        raise ValueError(f"{what}() needs at least one value")
    return out


def _shifted(values):
    """Each value minus the largest one. The max is a constant, not a node: softmax
    does not change when every input moves by the same amount, so its gradient is
    exact without it, and exp never overflows."""
    top = max(v.data for v in values)
    if not math.isfinite(top):
        top = 0.0  # inf - inf would turn every input into nan: leave them as IEEE has them
    return [v - top for v in values]


def softmax(values):
    """exp(v_i) / sum_j exp(v_j) for each value, as a list of Values (stable for large v)."""
    exps = [s.exp() for s in _shifted(_as_values(values, "softmax"))]
    total = sum(exps)
    return [e / total for e in exps]


def log_softmax(values):
    """v_i - log(sum_j exp(v_j)) for each value, as a list of Values (stable for large v)."""
    shifted = _shifted(_as_values(values, "log_softmax"))
    log_total = sum([s.exp() for s in shifted]).log()
    return [s - log_total for s in shifted]
