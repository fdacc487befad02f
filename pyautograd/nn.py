"""micrograd.nn on pyautograd: Module, Neuron, Layer, MLP, with the same API and numbers.

The same initialisation in the same order (random.uniform(-1, 1) per weight, bias 0),
so random.seed(s) gives micrograd's exact parameters, and the same reprs. What differs
is underneath: a neuron is one fused dot node (bias first, then w0*x0 + w1*x1 ...,
micrograd's order, so the values are bitwise micrograd's) and one relu, not a chain of
2*nin binary nodes; zero_grad is one C call.
"""
import numbers
import random

from ._ag import lib
from .engine import OP_NAMES, Value, _raise_failure

__all__ = ["Module", "Neuron", "Layer", "MLP"]

_new = object.__new__
_FAST_NUMBERS = (float, int, bool)
_RELU = OP_NAMES.index("relu")


class Module:

    def zero_grad(self):
        """Sets every parameter's grad to 0, in one C call."""
        ids = [p._id for p in self.parameters()]
        lib.ag_zero_grads(ids, len(ids))

    def parameters(self):
        return []


def _input_ids(x, temporaries):
    """Node ids for a neuron's inputs: Values as they are, numbers as new leaves (as
    micrograd's w*x makes Value(x)); the leaves' ids also go in temporaries."""
    ids = []
    for xi in x:
        if isinstance(xi, Value):
            ids.append(xi._id)
        elif type(xi) in _FAST_NUMBERS or isinstance(xi, numbers.Real):
            node = lib.ag_leaf(xi)
            if not node:
                _raise_failure("Neuron")
            temporaries.append(node)
            ids.append(node)
        else:
            raise TypeError(f"Neuron inputs must be Values or real numbers, not {type(xi).__name__!r}")
    return ids


def _neuron_node(w, b, nonlin, x_ids):
    """The node of act = b + w0*x0 + ... (then relu): one dot node, one relu node.
    Like micrograd's zip, extra inputs or extra weights are ignored."""
    n = min(len(w), len(x_ids))
    w_ids = [wi._id for wi in (w if n == len(w) else w[:n])]
    act = lib.ag_dot(w_ids, x_ids, n, b._id)
    if not act:
        _raise_failure("Neuron")
    if not nonlin:
        return act
    out = lib.ag_apply1(_RELU, act)
    lib.ag_decref(act)  # the relu node holds it now
    if not out:
        _raise_failure("relu")
    return out


def _wrap(node):
    v = _new(Value)
    v._id = node
    return v


class Neuron(Module):

    def __init__(self, nin, nonlin=True):
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin

    def __call__(self, x):
        temporaries = []
        try:
            return _wrap(_neuron_node(self.w, self.b, self.nonlin, _input_ids(x, temporaries)))
        finally:
            if temporaries:
                lib.ag_decref_many(temporaries, len(temporaries))

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):

    def __init__(self, nin, nout, **kwargs):
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        neurons = self.neurons
        if any(type(n) is not Neuron for n in neurons):
            out = [n(x) for n in neurons]  # subclasses keep their own __call__
            return out[0] if len(out) == 1 else out
        # The inputs are turned into ids once for the whole layer, not once per neuron.
        temporaries = []
        try:
            x_ids = _input_ids(x, temporaries)
            out = [_wrap(_neuron_node(n.w, n.b, n.nonlin, x_ids)) for n in neurons]
        finally:
            if temporaries:
                lib.ag_decref_many(temporaries, len(temporaries))
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):

    def __init__(self, nin, nouts):
        sz = [nin] + nouts
        self.layers = [Layer(sz[i], sz[i+1], nonlin=i != len(nouts)-1) for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
