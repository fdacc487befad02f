"""Gradients as Values: pyautograd.grad, to any order, and numerical checks of them.

grad(output, inputs) returns d output / d input for each input without touching any
.grad. With create_graph=True each result is a Value whose graph depends on the inputs,
built from the op table's derivative formulas (csrc/ops.h, read as graph ops by
csrc/higher.c), so it can be differentiated again: Hessians, Hessian-vector products,
Newton's method, gradient penalties.

gradcheck and gradgradcheck compare first and second derivatives with central finite
differences, as torch.autograd's do.
"""

import math
import numbers

from . import _ag
from .engine import Value

__all__ = ["grad", "jvp", "hvp", "hessian", "gradcheck", "gradgradcheck", "GradcheckError"]


def grad(output, inputs, *, create_graph=False):
    """d output / d input for each of inputs (a Value or an iterable of Values), as a list
    of Values; 0.0 for an input output does not depend on.

    No .grad changes. With create_graph=True the results are Values computed by graphs
    of the inputs, so grad() can be applied to them again (to any order); otherwise they
    are leaves holding the numbers. Like backward(), a Python-written _backward runs in
    its node's place; with create_graph=True it cannot (a Python function is no graph to
    differentiate) and grad() raises RuntimeError naming the node.
    """
    if isinstance(inputs, Value):
        inputs = [inputs]
    return _ag.grad(output, inputs, create_graph)


def jvp(outputs, inputs, tangents, *, create_graph=False):
    """Forward mode: the directional derivative of each output (a Value or an iterable of
    Values) along `tangents`, one number per input, as a list of Values: for output y,
    sum over k of d y / d inputs[k] * tangents[k]. Over the graph that already exists,
    in one forward sweep; no .grad changes.

    Each op's tangent rule is its row of the op table read with the incoming gradient set
    to an input's tangent (csrc/tangents.c). With create_graph=True the results are Values
    computed by graphs of the inputs, differentiable again. A graph holding a Python
    _backward is refused with RuntimeError (there is no formula to read).
    """
    if isinstance(outputs, Value):
        outputs = [outputs]
    if isinstance(inputs, Value):
        inputs = [inputs]
    return _ag.jvp(outputs, inputs, tangents, create_graph)


def hvp(output, inputs, vector):
    """The Hessian of output in inputs times vector (one number per input), as a list of
    Values: entry k is the derivative of d output / d inputs[k] along vector, as
    torch.autograd.functional.hvp. Forward over reverse on dual numbers, in two sweeps
    and no new nodes (csrc/tangents.c); no .grad changes."""
    if isinstance(inputs, Value):
        inputs = [inputs]
    return _ag.hvp(output, inputs, vector)


def hessian(output, inputs):
    """The Hessian of output in inputs, as a list of rows of Values (row i: d/d inputs of
    d output / d inputs[i], as torch.autograd.functional.hessian); one Hessian-vector
    product per input. The product with the j-th unit vector is column j (entry i:
    d/d inputs[j] of d output / d inputs[i]), which differs from row j where the Hessian
    is not symmetric (pow's d/d exponent at exponent 0, interior nodes as inputs)."""
    inputs = [inputs] if isinstance(inputs, Value) else list(inputs)
    n = len(inputs)
    columns = [hvp(output, inputs, [1.0 if i == j else 0.0 for i in range(n)]) for j in range(n)]
    return [[column[i] for column in columns] for i in range(n)]


class GradcheckError(RuntimeError):
    """A derivative disagrees with finite differences (as torch.autograd's)."""


def _as_values(inputs, what):
    inputs = [inputs] if isinstance(inputs, Value) else list(inputs)
    for x in inputs:
        if not isinstance(x, Value):
            raise TypeError(f"{what}() inputs must be Values, not {type(x).__name__!r}")
    if not inputs:
        raise ValueError(f"{what}() needs at least one input")
    return inputs


def _output_of(fn, inputs, what):
    out = fn(*inputs)
    if not isinstance(out, Value):
        raise TypeError(f"{what}() needs fn to return a Value, not {type(out).__name__!r}")
    return out


def _numerical(fn, inputs, eps):
    """Central differences of fn's output data in each input's data. Each input's data
    is put back whatever happens, an exception from fn included: a failed check must
    not leave the caller's parameters moved by eps."""
    slopes = []
    for x in inputs:
        saved = x.data
        try:
            x.data = saved + eps
            up = fn(*inputs).data
            x.data = saved - eps
            down = fn(*inputs).data
        finally:
            x.data = saved
        slopes.append((up - down) / (2 * eps))
    return slopes


def _compare(analytical, numerical, atol, rtol, what, names):
    worst, worst_i = -1.0, None
    for i, (a, n) in enumerate(zip(analytical, numerical)):
        if math.isnan(a) and math.isnan(n):
            continue
        excess = abs(a - n) - (atol + rtol * abs(n))
        if not excess <= 0 and (worst_i is None or not excess <= worst):  # nan counts as worst
            worst, worst_i = excess, i
    if worst_i is not None:
        a, n = analytical[worst_i], numerical[worst_i]
        raise GradcheckError(
            f"{what}: the derivative in {names[worst_i]} is {a!r}, finite differences give "
            f"{n!r} (off by {abs(a - n)!r}; allowed {atol} + {rtol} * |numerical|)"
        )
    return True


def _check_tolerances(what, eps, atol, rtol):
    """eps > 0, atol and rtol >= 0, all real numbers (finite)."""
    for name, value, low_ok in (("eps", eps, False), ("atol", atol, True), ("rtol", rtol, True)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{what}() {name} must be a real number, not {type(value).__name__!r}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
            raise ValueError(f"{what}() {name} must be a finite number {'>= 0' if low_ok else '> 0'}, got {value!r}")


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3):
    """True if grad(fn(*inputs), inputs) agrees with central finite differences of fn
    (step eps) within atol + rtol * |numerical| for every input; else GradcheckError
    naming the worst input. fn takes the inputs (Values) and returns one Value."""
    _check_tolerances("gradcheck", eps, atol, rtol)
    inputs = _as_values(inputs, "gradcheck")
    analytical = [g.data for g in grad(_output_of(fn, inputs, "gradcheck"), inputs)]
    numerical = _numerical(fn, inputs, eps)
    names = [f"input {i} (data {x.data!r})" for i, x in enumerate(inputs)]
    return _compare(analytical, numerical, atol, rtol, "gradcheck", names)


def gradgradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3):
    """True if the second derivatives of fn (grad of grad, with create_graph=True) agree
    with central finite differences of its first derivatives; else GradcheckError
    naming the worst (row, column) of the Hessian."""
    _check_tolerances("gradgradcheck", eps, atol, rtol)
    inputs = _as_values(inputs, "gradgradcheck")
    first = grad(_output_of(fn, inputs, "gradgradcheck"), inputs, create_graph=True)
    analytical, numerical, names = [], [], []
    for i, g in enumerate(first):
        analytical += [h.data for h in grad(g, inputs)]
        numerical += _numerical(lambda *xs, i=i: grad(fn(*xs), xs)[i], inputs, eps)
        names += [f"d2/(d input {i} d input {j})" for j in range(len(inputs))]
    return _compare(analytical, numerical, atol, rtol, "gradgradcheck", names)
