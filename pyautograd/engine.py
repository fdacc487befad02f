"""Value: micrograd's scalar with its graph in C.

A Value holds one thing, the id of its node in the C arena (csrc/). Its arithmetic
(+ - * / ** and unary -, relu, tanh, exp, log, sigmoid) comes from the C type it
subclasses, _Node (csrc/value_type.c), whose slots are generated from the op table
(csrc/ops.h) and call the arena directly: each op is defined once, in C. This class
adds the rest of micrograd's API. What is not here: the graph, the sort and the sweep.
"""
import numbers

from . import _ag
from ._ag import ffi, lib

__all__ = ["Value"]

if lib.ag_make_value_type():
    raise ImportError("pyautograd: could not create the Value type")
_Node = _ag._Node
_FAST_NUMBERS = (float, int, bool)


def _number(x):
    """x as something C takes as a double, or None when it is not a real number."""
    if type(x) in _FAST_NUMBERS or isinstance(x, numbers.Real):
        return x
    return None


def _raise_failure(what, inputs=()):
    """Turns the C side's status for a failed call into the matching exception."""
    status = lib.ag_last_error()
    if status == lib.AG_ENOMEM:
        raise MemoryError(f"pyautograd: out of memory in {what} "
                          f"({lib.ag_live_nodes():,} nodes live)")
    if status == lib.AG_EANOMALY:
        from .modes import anomaly_error
        raise anomaly_error(what, inputs)
    raise ValueError(f"pyautograd: invalid arguments to {what}")


class Value(_Node):
    """A scalar that remembers how it was computed, so backward() can differentiate it.

    Value(data, _children=(), _op='', label='') is micrograd's signature. `_children`
    and `_op` make a hand-built node that keeps its children alive and passes no
    gradient, as micrograd's default _backward does.
    """

    __slots__ = ()  # no state of its own: a Value is _Node's 24 bytes, untracked by the GC

    def __new__(cls, data, _children=(), _op="", label=""):
        x = _number(data)
        if x is None:
            raise TypeError(f"Value() data must be a real number, not {type(data).__name__!r}")
        if _children or _op:  # a hand-made node, even with no children, keeps its _op
            children = list(_children)
            for child in children:
                if not isinstance(child, Value):
                    raise TypeError(f"Value() _children must be Values, not {type(child).__name__!r}")
            node = lib.ag_custom(x, [c._id for c in children], len(children))
        else:
            node = lib.ag_leaf(x)
        if not node:
            _raise_failure("Value()")
        self = _Node.__new__(cls, node)
        if _op:
            lib.ag_set_custom_op(node, str(_op).encode())
        if label:
            self.label = label
        return self

    @staticmethod
    def _from_node(node):
        """A new Value for an existing node (takes a new reference)."""
        lib.ag_incref(node)
        return _Node.__new__(Value, node)

    # ---- data, grad, label ----

    @property
    def data(self):
        return lib.ag_data(self._id)

    @data.setter
    def data(self, value):
        if _number(value) is None:
            raise TypeError(f"Value.data must be a real number, not {type(value).__name__!r}")
        lib.ag_set_data(self._id, value)

    @property
    def grad(self):
        return lib.ag_grad(self._id)

    @grad.setter
    def grad(self, value):
        if _number(value) is None:
            raise TypeError(f"Value.grad must be a real number, not {type(value).__name__!r}")
        lib.ag_set_grad(self._id, value)

    @property
    def label(self):
        return ffi.string(lib.ag_label(self._id)).decode()

    @label.setter
    def label(self, text):
        if lib.ag_set_label(self._id, str(text).encode()):
            raise MemoryError("pyautograd: out of memory storing a label")

    # ---- introspection, as micrograd names it ----

    @property
    def _prev(self):
        """The input Values of this node, as a set (micrograd's `_prev`)."""
        node = self._id
        return {Value._from_node(lib.ag_input(node, i)) for i in range(lib.ag_input_count(node))}

    @property
    def _op(self):
        """The op that made this node, as micrograd shows it ('+', '*', '**2', 'ReLU')."""
        node = self._id
        op = lib.ag_op(node)
        if op == _CUSTOM:
            return ffi.string(lib.ag_custom_op(node)).decode()
        symbol = _SYMBOLS[op]
        if op == _POW:
            exponent = lib.ag_input(node, 1)
            if lib.ag_op(exponent) == _CONST:
                e = lib.ag_data(exponent)
                return f"**{int(e) if e.is_integer() else e}"
        return symbol

    # ---- whole-graph work ----

    def backward(self):
        """Adds d(self)/d(node) to .grad of every node this Value depends on (self gets +1).

        Like PyTorch, each call adds once; micrograd instead compounds interior grads
        when called twice. Zero the grads (Module.zero_grad) between steps.
        """
        if lib.ag_backward(self._id):
            _raise_failure("backward", (self,))

    def forward(self):
        """Recomputes this Value and everything under it from the current leaf data.

        Replays the recorded graph in C: Python control flow is not re-run, branches
        inside ops (relu) are. Returns self.data.
        """
        if lib.ag_forward(self._id):
            _raise_failure("forward", (self,))
        return lib.ag_data(self._id)

    # ---- identity: one node, however many Values name it ----

    def __eq__(self, other):
        if isinstance(other, Value):
            return self._id == other._id
        return NotImplemented

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # ---- pickling and copying: a Value travels as a leaf with its data, grad, label ----

    def __reduce__(self):
        return _restore_leaf, (self.data, self.grad, self.label)

    # ---- notebooks: a Value shows its graph (pyautograd.viz) ----

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .viz import mimebundle
        return mimebundle(self)


def _restore_leaf(data, grad, label):
    """Unpickles a Value: a new leaf; the graph that made it does not travel."""
    v = Value(data, label=label)
    v.grad = grad
    return v


def _wrap(node):
    """A Value for a node just made in C, taking over the reference it came with."""
    if not node:
        _raise_failure("making a node")
    return _Node.__new__(Value, node)


def _op_table():
    """Names and symbols of the C op table's rows, indexed by op code."""
    names = tuple(ffi.string(lib.ag_op_name(code)).decode() for code in range(lib.ag_op_count()))
    symbols = tuple(ffi.string(lib.ag_op_symbol(code)).decode() for code in range(lib.ag_op_count()))
    return names, symbols


OP_NAMES, _SYMBOLS = _op_table()
_CONST, _POW, _CUSTOM = OP_NAMES.index("const"), OP_NAMES.index("pow"), OP_NAMES.index("custom")
_Node._bind(Value, _raise_failure)
