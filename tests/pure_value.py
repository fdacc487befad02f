"""PureValue: a small, complete micrograd-style engine in pure Python, the reference that
tests/test_micrograd_world.py runs every micrograd-world program on beside pyautograd.

It is written the way micrograd users write their own engines: each op makes
`out = PureValue(result, (self, other), op)` and sets `out._backward` to a closure that
adds (+=) the local derivative times `out.grad` into each input. Unlike micrograd, the
topological sort in backward() is iterative, so depth is no limit. What it is not:
fast, or free of reference cycles (every closure refers to its own `out`; the cyclic
GC collects them).

Node structure follows pyautograd's op table where micrograd composes (`a - b`, `a / b`
and `-a` are one node each), and micrograd where pyautograd adds a node (`a ** 2` has one
child; pyautograd also keeps the exponent as a constant leaf). Numbers met as operands
become constant leaves, like micrograd's `Value(2)`. Data and grads are floats.

Besides micrograd's `PureValue(data, _children, _op, label)`, a node can be made
microgpt's way, `PureValue(data, children, local_grads)` (or `local_grads=`): a
sequence of numbers, one per child, whose backward adds `local_grad * out.grad` into
each child. A third positional argument that is a str is micrograd's `_op`.
"""

import math

__all__ = ["PureValue"]


class PureValue:
    """One scalar, the inputs that made it and the rule that sends its grad back to them."""

    def __init__(self, data, _children=(), _op="", label="", local_grads=None):
        if not isinstance(_op, str):  # microgpt: Value(data, children, local_grads)
            if local_grads is not None:
                raise TypeError("local_grads given twice")
            local_grads, _op = _op, ""
        self.data = float(data)
        self.grad = 0.0
        self._children = tuple(_children)  # in order: the sort below is deterministic
        self._prev = set(self._children)
        self._op = _op
        self.label = label
        self._backward = lambda: None
        if local_grads is not None:
            local_grads = tuple(float(g) for g in local_grads)
            if len(local_grads) != len(self._children):
                raise ValueError("one local grad per child")
            children, out = self._children, self

            def _backward():
                for child, local in zip(children, local_grads):
                    child.grad += local * out.grad

            self._backward = _backward

    @staticmethod
    def _lift(other):
        return other if isinstance(other, PureValue) else PureValue(other)

    # ---- binary ops: forward, then d out/d self and d out/d other ----

    def __add__(self, other):
        other = PureValue._lift(other)
        out = PureValue(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __sub__(self, other):
        other = PureValue._lift(other)
        out = PureValue(self.data - other.data, (self, other), "-")

        def _backward():
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = PureValue._lift(other)
        out = PureValue(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __truediv__(self, other):
        other = PureValue._lift(other)
        out = PureValue(self.data / other.data, (self, other), "/")

        def _backward():
            self.grad += out.grad / other.data  # d(a/b)/da = 1/b
            other.grad -= out.data / other.data * out.grad  # d(a/b)/db = -(a/b)/b

        out._backward = _backward
        return out

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            return NotImplemented
        e = int(exponent) if float(exponent).is_integer() else exponent
        out = PureValue(self.data**exponent, (self,), f"**{e}")

        def _backward():
            self.grad += exponent * self.data ** (exponent - 1) * out.grad

        out._backward = _backward
        return out

    # ---- reflected forms: the number becomes a constant leaf ----

    def __radd__(self, other):  # other + self
        return PureValue._lift(other) + self

    def __rsub__(self, other):  # other - self
        return PureValue._lift(other) - self

    def __rmul__(self, other):  # other * self
        return PureValue._lift(other) * self

    def __rtruediv__(self, other):  # other / self
        return PureValue._lift(other) / self

    # ---- unary ops ----

    def __neg__(self):
        out = PureValue(-self.data, (self,), "neg")

        def _backward():
            self.grad -= out.grad

        out._backward = _backward
        return out

    def relu(self):
        out = PureValue(0.0 if self.data < 0 else self.data, (self,), "ReLU")

        def _backward():
            self.grad += (out.data > 0) * out.grad

        out._backward = _backward
        return out

    def tanh(self):
        out = PureValue(math.tanh(self.data), (self,), "tanh")

        def _backward():
            self.grad += (1.0 - out.data * out.data) * out.grad

        out._backward = _backward
        return out

    def exp(self):
        out = PureValue(math.exp(self.data), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self):
        out = PureValue(math.log(self.data), (self,), "log")

        def _backward():
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    # ---- the whole graph ----

    def _topo(self):
        """Every node under self, inputs before the nodes that use them; an explicit stack."""
        order, seen = [], {id(self)}
        stack = [(self, iter(self._children))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(child._children)))
                    break
            else:
                stack.pop()
                order.append(node)
        return order

    def backward(self):
        """micrograd's backward: the root's grad is set to 1, then each node's rule, root first."""
        order = self._topo()
        self.grad = 1.0
        for node in reversed(order):
            node._backward()

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"  # micrograd's text
