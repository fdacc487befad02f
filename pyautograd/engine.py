"""Value: micrograd's scalar with its graph in C.

A Value holds one thing, the id of its node in the C arena (csrc/). Arithmetic calls
into C, which computes the result and records the node; backward() is one C call.
The arithmetic methods are made from the C op table (csrc/ops.h), so each op is
defined once, in C. What is not here: the graph itself, the sort and the sweep.
"""
import numbers

from ._ag import ffi, lib

__all__ = ["Value"]

_new = object.__new__
_FAST_NUMBERS = (float, int, bool)
_CONST = None  # op codes, filled in from the table below
_POW = None
_CUSTOM = None


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


class Value:
    """A scalar that remembers how it was computed, so backward() can differentiate it.

    Value(data, _children=(), _op='', label='') is micrograd's signature. `_children`
    and `_op` make a hand-built node that keeps its children alive and passes no
    gradient, as micrograd's default _backward does.
    """

    __slots__ = ("_id",)

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
        self = _new(cls)
        self._id = node
        if _op:
            lib.ag_set_custom_op(node, str(_op).encode())
        if label:
            self.label = label
        return self

    def __del__(self, _decref=lib.ag_decref):
        # Bound as a default so it still works while the interpreter shuts down.
        _decref(self._id)

    @classmethod
    def _from_node(cls, node):
        """A new Value for an existing node (takes a new reference)."""
        lib.ag_incref(node)
        v = _new(Value)
        v._id = node
        return v

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


# ---- arithmetic, made from the C op table ----

def _binary_methods(code, symbol):
    apply2, apply2_const = lib.ag_apply2, lib.ag_apply2_const

    def forward(self, other):
        if isinstance(other, Value):
            node = apply2(code, self._id, other._id)
        elif type(other) in _FAST_NUMBERS or isinstance(other, numbers.Real):
            node = apply2_const(code, self._id, other, 0)
        else:
            return NotImplemented
        if not node:
            _raise_failure(symbol, (self, other))
        v = _new(Value)
        v._id = node
        return v

    def reflected(self, other):
        if type(other) in _FAST_NUMBERS or isinstance(other, numbers.Real):
            node = apply2_const(code, self._id, other, 1)
        else:
            return NotImplemented
        if not node:
            _raise_failure(symbol, (other, self))
        v = _new(Value)
        v._id = node
        return v

    return forward, reflected


def _unary_method(code, name):
    apply1 = lib.ag_apply1

    def method(self):
        node = apply1(code, self._id)
        if not node:
            _raise_failure(name, (self,))
        v = _new(Value)
        v._id = node
        return v

    return method


def _install_ops():
    """Gives Value one method per row of the C op table: __add__ and __radd__ for a
    binary row named "add", relu for a unary row named "relu", and so on."""
    global _CONST, _POW, _CUSTOM, _SYMBOLS
    names, symbols = [], []
    for code in range(lib.ag_op_count()):
        name = ffi.string(lib.ag_op_name(code)).decode()
        symbol = ffi.string(lib.ag_op_symbol(code)).decode()
        names.append(name)
        symbols.append(symbol)
        arity = lib.ag_op_arity(code)
        if arity == 2:
            forward, reflected = _binary_methods(code, symbol)
            for method, dunder in ((forward, f"__{name}__"), (reflected, f"__r{name}__")):
                method.__name__ = method.__qualname__ = dunder
                method.__doc__ = f"self {symbol} other" if method is forward else f"other {symbol} self"
                setattr(Value, dunder, method)
        elif arity == 1:
            method = _unary_method(code, name)
            method.__name__ = method.__qualname__ = name
            method.__doc__ = f"{symbol}(self); its derivative is in csrc/ops.h"
            setattr(Value, name, method)
    _SYMBOLS = tuple(symbols)
    _CONST, _POW, _CUSTOM = names.index("const"), names.index("pow"), names.index("custom")
    return tuple(names)


OP_NAMES = _install_ops()
