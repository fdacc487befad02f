"""A tiny pure-Python reverse-mode engine, micrograd's algorithm with no recursion: the
independent reference the random-graph tests (test_random_graphs.py) check the C core against.

Each op's forward and local derivatives are written out here again from their math, not
read from the C table, so a wrong row in csrc/ops.h shows up as a disagreement. Domain
errors follow IEEE (log(-1) is nan, 1/0 is inf), as the C core does, so both can be fed
anything. Besides each grad, backward() keeps `mass`: the sum of |contributions| that
made it, which bounds the rounding a different summation order can cause.
"""

import math


def _div(a, b):
    if b == 0.0:
        return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _pow(a, b):
    try:
        return math.pow(a, b)
    except ValueError:  # negative base, fractional exponent; 0 to a negative power
        return math.inf if a == 0.0 else math.nan
    except OverflowError:
        return math.inf if a > 0 or float(b).is_integer() and b % 2 == 0 else math.copysign(math.inf, a)


def _exp(a):
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def _log(a):
    if a < 0 or math.isnan(a):
        return math.nan
    return -math.inf if a == 0 else math.log(a)


def _sigmoid(a):
    return _div(1.0, 1.0 + _exp(-a))


def _sin(a):
    return math.nan if math.isinf(a) else math.sin(a)


def _cos(a):
    return math.nan if math.isinf(a) else math.cos(a)


def _sqrt(a):
    if a < 0 or math.isnan(a):
        return math.nan
    return math.sqrt(a)


def _sign(a):
    return 1.0 if a > 0 else -1.0 if a < 0 else 0.0  # 0 at 0 (and nan): PyTorch's abs'(0)


# gelu(approximate='tanh'), PyTorch's: 0.5 a (1 + tanh(beta (a + kappa a^3)))
_GELU_BETA = 1.41421356237309504880 * 1.12837916709551257390 * 0.5  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def _gelu(a):
    return 0.5 * a * (1.0 + math.tanh(_GELU_BETA * (a + _GELU_KAPPA * (a * a * a))))


def _gelu_grad(a):
    # d/da: 0.5 (1 + t) + 0.5 a (1 - t^2) beta (1 + 3 kappa a^2), t the tanh above
    t = math.tanh(_GELU_BETA * (a + _GELU_KAPPA * a**3))
    return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * _GELU_BETA * (1.0 + 3.0 * _GELU_KAPPA * a * a)


def _softplus(a):
    return a if a > 20.0 else math.log1p(_exp(a))  # PyTorch's threshold 20


def _maximum(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


def _minimum(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a <= b else b


def _shares(a, b):
    """(to a, to b) for maximum(a, b): all to the larger, half each at a tie (PyTorch's)."""
    return (0.5, 0.5) if a == b else (1.0, 0.0) if a > b else (0.0, 1.0)


def _pow_grads(a, b, out):
    d_base = 0.0 if b == 0.0 else b * _pow(a, b - 1.0)  # x ** 0 is constant
    d_exponent = 0.0 if a == 0.0 and b >= 0.0 else out * _log(a)  # no 0 * log 0
    return d_base, d_exponent


# name -> (arity, forward(a, b), local derivatives(a, b, out) -> (d out/d a, d out/d b))
OPS = {
    "add": (2, lambda a, b: a + b, lambda a, b, out: (1.0, 1.0)),
    "sub": (2, lambda a, b: a - b, lambda a, b, out: (1.0, -1.0)),
    "mul": (2, lambda a, b: a * b, lambda a, b, out: (b, a)),
    "truediv": (2, _div, lambda a, b, out: (_div(1.0, b), _div(-a, b * b))),
    "pow": (2, _pow, _pow_grads),
    "neg": (1, lambda a, b: -a, lambda a, b, out: (-1.0, 0.0)),
    "relu": (1, lambda a, b: 0.0 if a < 0 else a, lambda a, b, out: (1.0 if out > 0 else 0.0, 0.0)),
    "tanh": (1, lambda a, b: math.tanh(a), lambda a, b, out: (1.0 - out * out, 0.0)),
    "exp": (1, lambda a, b: _exp(a), lambda a, b, out: (out, 0.0)),
    "log": (1, lambda a, b: _log(a), lambda a, b, out: (_div(1.0, a), 0.0)),
    "sigmoid": (1, lambda a, b: _sigmoid(a), lambda a, b, out: (out * (1.0 - out), 0.0)),
    "sin": (1, lambda a, b: _sin(a), lambda a, b, out: (_cos(a), 0.0)),
    "cos": (1, lambda a, b: _cos(a), lambda a, b, out: (-_sin(a), 0.0)),
    "sqrt": (1, lambda a, b: _sqrt(a), lambda a, b, out: (_div(0.5, out), 0.0)),
    "abs": (1, lambda a, b: abs(a), lambda a, b, out: (_sign(a), 0.0)),
    "gelu": (1, lambda a, b: _gelu(a), lambda a, b, out: (_gelu_grad(a), 0.0)),
    "softplus": (1, lambda a, b: _softplus(a), lambda a, b, out: (1.0 if a > 20.0 else _sigmoid(a), 0.0)),
    "detach": (1, lambda a, b: a, lambda a, b, out: (0.0, 0.0)),  # the value; nothing back
    # v.leaky_relu(slope): b is the slope, a number (the C row's constant second input)
    "leaky_relu": (2, lambda a, b: a if a > 0.0 else a * b, lambda a, b, out: (1.0, 0.0) if a > 0.0 else (b, a)),
    "maximum": (2, _maximum, lambda a, b, out: _shares(a, b)),
    "minimum": (2, _minimum, lambda a, b, out: _shares(b, a)),
}
# ops whose second input is a number Python passes (v.leaky_relu(slope)), never a Value
NUMBER_SECOND = {"leaky_relu"}


class Node:
    """One scalar: its value, its inputs and the op that made it (None for leaves)."""

    __slots__ = ("data", "grad", "mass", "op", "inputs")

    def __init__(self, data, op=None, inputs=()):
        self.data = float(data)
        self.grad = 0.0
        self.mass = 0.0
        self.op = op
        self.inputs = inputs


def leaf(data):
    return Node(data)


def apply(op, *inputs):
    arity, forward, _ = OPS[op]
    assert len(inputs) == arity, (op, len(inputs))
    a = inputs[0].data
    b = inputs[1].data if arity == 2 else 0.0
    return Node(forward(a, b), op, inputs)


def topological_order(root):
    """Inputs before the nodes that use them, root last; an explicit stack, no recursion."""
    order, seen = [], {id(root)}
    stack = [(root, 0)]
    while stack:
        node, next_input = stack.pop()
        if next_input < len(node.inputs):
            stack.append((node, next_input + 1))
            child = node.inputs[next_input]
            if id(child) not in seen:
                seen.add(id(child))
                stack.append((child, 0))
        else:
            order.append(node)
    return order


def backward(root):
    """Sets grad (and mass) of every node under root to d root / d node; others keep theirs."""
    order = topological_order(root)
    for node in order:
        node.grad = node.mass = 0.0
    root.grad = root.mass = 1.0
    for node in reversed(order):
        if node.op is None:
            continue
        _, _, local_grads = OPS[node.op]
        a = node.inputs[0].data
        b = node.inputs[1].data if len(node.inputs) == 2 else 0.0
        for child, local in zip(node.inputs, local_grads(a, b, node.data)):
            child.grad += node.grad * local
            child.mass += abs(node.mass * local)
    return order


def recompute(root):
    """Forward again from the leaves' current data (what Value.forward() does)."""
    for node in topological_order(root):
        if node.op is not None:
            arity, forward, _ = OPS[node.op]
            a = node.inputs[0].data
            b = node.inputs[1].data if arity == 2 else 0.0
            node.data = forward(a, b)
    return root.data
