"""Loss functions over Values, each returning one Value (the mean over the batch).

mse, micrograd's max-margin hinge, and the two cross-entropies, computed from logits
in their numerically stable forms (like torch's BCEWithLogitsLoss and cross_entropy).
Each takes a batch (a sequence) or a single prediction.
"""

import numbers
from collections.abc import Iterable
from typing import overload

from . import functional
from .engine import Value

__all__ = ["mse", "hinge", "binary_cross_entropy_with_logits", "cross_entropy"]

# A batch, or one prediction (or target) on its own.
_Batch = Value | float | Iterable[Value | float]


# The types a batch holds nearly always, checked before the numbers.Real ABC, whose
# isinstance costs ten times more (a hinge over 100 int labels spent more on checking
# them than on its arithmetic).
_COMMON_SCALARS = (Value, float, int)


def _is_scalar(x):
    return isinstance(x, _COMMON_SCALARS) or isinstance(x, numbers.Real)


def _batch(predictions, targets, what):
    """predictions and targets as two lists of the same, non-zero length."""
    if _is_scalar(predictions):
        predictions = [predictions]
    if _is_scalar(targets):
        targets = [targets]
    for name, seq in (("predictions", predictions), ("targets", targets)):
        if not hasattr(seq, "__iter__"):
            raise TypeError(f"{what}() {name} must be a Value, a number or a sequence, not {type(seq).__name__!r}")
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"{what}() needs as many targets as predictions, got {len(targets)} and {len(predictions)}")
    if not predictions:
        raise ValueError(f"{what}() needs at least one prediction")
    for name, seq in (("predictions", predictions), ("targets", targets)):
        # one check per distinct type, not per element: a batch has one or two types
        if not all(issubclass(t, _COMMON_SCALARS) or issubclass(t, numbers.Real) for t in set(map(type, seq))):
            x = next(x for x in seq if not _is_scalar(x))
            raise TypeError(f"{what}() {name} must be Values or real numbers, not {type(x).__name__!r}")
    return predictions, targets


def mse(predictions: _Batch, targets: _Batch) -> Value:
    """mean((prediction - target)**2), as torch's mse_loss."""
    predictions, targets = _batch(predictions, targets, "mse")
    diffs = [p - t for p, t in zip(predictions, targets)]
    return functional.dot(diffs, diffs) / len(diffs)


def hinge(scores: _Batch, labels: _Batch) -> Value:
    """micrograd's max-margin loss: mean of relu(1 - label*score), labels in {-1, +1}.

    Written as micrograd's demo writes it, (1 + -yi*scorei).relu() and
    sum(losses) * (1.0 / len(losses)), so the value is bitwise the demo's.
    """
    scores, labels = _batch(scores, labels, "hinge")
    # a label of 0 would make its example count for nothing, silently
    odd = [t for t in set(labels) if not isinstance(t, Value) and t != 1 and t != -1]
    if odd:
        raise ValueError(f"hinge() labels must be -1 or +1, got {odd[0]!r}")
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(labels, scores)]
    return functional.sum(losses) * (1.0 / len(losses))


def binary_cross_entropy_with_logits(logits: _Batch, targets: _Batch) -> Value:
    """mean of -[t*log(sigmoid(x)) + (1-t)*log(1-sigmoid(x))] for logits x, targets t in [0, 1].

    Stable form (torch's): relu(x) - x*t + log(1 + exp(-|x|)), with -|x| = x - 2*relu(x),
    so exp never overflows. Its gradient is sigmoid(x) - t, at 0 too.
    """
    logits, targets = _batch(logits, targets, "binary_cross_entropy_with_logits")
    odd = [t for t in set(targets) if not isinstance(t, Value) and not 0 <= t <= 1]  # nan too
    if odd:
        raise ValueError(f"binary_cross_entropy_with_logits() targets must be in [0, 1], got {odd[0]!r}")
    losses = []
    for x, t in zip(logits, targets):
        if not isinstance(x, Value):
            x = Value(x)
        positive = x.relu()
        losses.append(positive - x * t + (1 + (x - 2 * positive).exp()).log())
    return functional.sum(losses) / len(losses)


@overload
def cross_entropy(logits: Iterable[Iterable[Value | float]], targets: Iterable[int]) -> Value: ...
@overload
def cross_entropy(logits: Iterable[Value | float], targets: int) -> Value: ...


def cross_entropy(
    logits: Iterable[Iterable[Value | float]] | Iterable[Value | float], targets: Iterable[int] | int
) -> Value:
    """mean of -log_softmax(row)[target] over the batch, as torch's cross_entropy.

    logits is one row (a sequence of Values, one per class) with one int target, or a
    sequence of rows with a sequence of int targets.
    """
    if not hasattr(logits, "__iter__"):
        raise TypeError(f"cross_entropy() logits must be a sequence, not {type(logits).__name__!r}")
    rows = list(logits)
    if rows and _is_scalar(rows[0]):  # one row of class logits, one target
        rows, targets = [rows], [targets]
    if not hasattr(targets, "__iter__"):
        raise TypeError(f"cross_entropy() targets must be a sequence of class indices, not {type(targets).__name__!r}")
    targets = list(targets)
    if len(rows) != len(targets):
        raise ValueError(f"cross_entropy() needs as many targets as rows of logits, got {len(targets)} and {len(rows)}")
    if not rows:
        raise ValueError("cross_entropy() needs at least one row of logits")
    losses = []
    for row, target in zip(rows, targets):
        if not isinstance(target, numbers.Integral) or isinstance(target, bool):
            raise TypeError(f"cross_entropy() targets must be class indices (int), not {type(target).__name__!r}")
        shifted = functional._shifted(functional._as_values(row, "cross_entropy"))
        if not 0 <= target < len(shifted):
            raise IndexError(f"cross_entropy() target {target} is out of range for {len(shifted)} classes")
        # -log_softmax(row)[target], without making the other classes' log-probabilities
        log_total = functional.sum([s.exp() for s in shifted]).log()
        losses.append(log_total - shifted[target])
    return functional.sum(losses) / len(losses)
