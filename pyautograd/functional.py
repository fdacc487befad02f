"""Ops over many Values at once: sum and dot as single fused C nodes, softmax, log_softmax.

A fused node has every term as an input, so a 16-input neuron is one node, not a
chain of 32 binary ones, and its gradient is exact. The order of evaluation is
micrograd's (Python's sum: start first, then each term left to right), so the results
are bitwise those of the unfused expressions.
"""

import numbers
from collections.abc import Iterable

from . import _ag
from .engine import Value

__all__ = ["sum", "dot", "softmax", "log_softmax"]

_FAST_NUMBERS = (float, int, bool)


# Shadows builtins.sum on purpose: pyautograd.sum.
def sum(values: Iterable[Value | float], start: Value | float = 0) -> Value:  # noqa: A001
    """start + values[0] + values[1] + ... as one node (Python's sum, fused).

    values may hold Values and real numbers (any iterable, a generator of temporaries
    included); the result is always a Value. Bitwise equal to Python's
    sum(values, start) over micrograd-style Values, but for one sign: where every
    term is -0.0 and start is 0, Python's 0 + -0.0 gives +0.0 and this gives -0.0.
    """
    return _ag.sum(values, start)


def dot(ws: Iterable[Value | float], xs: Iterable[Value | float], start: Value | float = 0) -> Value:
    """start + ws[0]*xs[0] + ws[1]*xs[1] + ... as one node.

    Bitwise equal to micrograd's sum((w*x for w, x in zip(ws, xs)), start). ws and xs
    hold Values or real numbers and must have the same length.
    """
    return _ag.dot(ws, xs, start)


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
    """Each value minus the largest one, so exp never overflows. The largest is a node,
    detached (softmax does not change when every input moves by the same amount, so no
    gradient goes through it, as in PyTorch): replay (forward()) shifts by the largest
    of the new values, bitwise as rebuilding does."""
    top = values[0]
    for v in values[1:]:
        top = _ag.maximum(top, v)
    top = top.detach()  # an infinite largest one makes every input nan (inf - inf), as in PyTorch
    return [v - top for v in values]


def softmax(values: Iterable[Value | float]) -> list[Value]:
    """exp(v_i) / sum_j exp(v_j) for each value, as a list of Values (stable for large v)."""
    exps = [s.exp() for s in _shifted(_as_values(values, "softmax"))]
    total = sum(exps)
    return [e / total for e in exps]


def log_softmax(values: Iterable[Value | float]) -> list[Value]:
    """v_i - log(sum_j exp(v_j)) for each value, as a list of Values (stable for large v)."""
    shifted = _shifted(_as_values(values, "log_softmax"))
    log_total = sum([s.exp() for s in shifted]).log()
    return [s - log_total for s in shifted]
