"""Value: micrograd's scalar with its graph in C.

`Value` is a CPython type written in C (csrc/value.c): construction, `data`, `grad`,
`label`, the operators, `relu tanh exp log sigmoid`, `_prev`, `_op`, `_backward`,
`backward()` and `forward()` all call the C arena directly, and the arithmetic is
generated from the op table (csrc/ops.h). A Value is still a Python object like
micrograd's: one object per node, with attributes and weak references, and subclasses
and Python-written ops (`out._backward = fn`) work. What this module adds, in Python:
pickling and copying, and the messages of the exceptions the C side raises.
"""

import gc
import os
import sys
import sysconfig

from . import _ag
from ._ag import ffi, lib

__all__ = ["Value"]


# ---- the GIL is the arena's lock (csrc/arena.h, invariant 4) ----


def _refusal_without_gil(free_threaded_build, gil_enabled):
    """Why pyautograd cannot run in this interpreter, or None when it can.

    The arena has no lock of its own: every C call relies on the GIL to keep other
    threads out. A free-threaded build (3.13t, 3.14t) can run with the GIL off, and
    cffi 2.x declares its modules safe without it, so importing pyautograd._ag does not
    turn it back on. Only an interpreter whose GIL is on right now can run the arena.
    """
    if gil_enabled:
        return None
    build = "this free-threaded build of Python" if free_threaded_build else "this Python"
    return (
        f"pyautograd needs the GIL, and {build} runs without it: the C arena has no "
        "lock of its own, and two threads in it at once would corrupt the graph. "
        "Run Python with the GIL on: PYTHON_GIL=1 in the environment, or python -X gil=1."
    )


def _gil_refusal():
    """_refusal_without_gil for the running interpreter. Read after pyautograd._ag is
    imported: importing an extension that does not declare itself free-threading-safe
    is what turns the GIL back on in a free-threaded build."""
    return _refusal_without_gil(
        bool(sysconfig.get_config_var("Py_GIL_DISABLED")), getattr(sys, "_is_gil_enabled", lambda: True)()
    )


_no_gil = _gil_refusal()
if _no_gil is not None:
    raise ImportError(_no_gil)

if lib.ag_python_init():
    raise ImportError(ffi.string(lib.ag_python_init_error()).decode())

# A fork while another thread's free loop is inside Python (unpinning a Value) would
# leave the child's loop half run, and the child would never free a node again: the
# child finishes it (csrc/arena.c, "fork"). Here, not in a pthread_atfork handler:
# finishing may run Python, which is ready only once CPython has set up the child.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lib.ag_after_fork_in_child)

Value = _ag.Value


def _python_method(function):
    """Adds a method written here to Value, the C type."""
    setattr(Value, function.__name__, function)
    return function


# ---- pickling and copying: a Value travels as a leaf with its data, grad, label and
# attributes; the graph that made it does not ----


@_python_method
def __reduce__(self):
    return _restore, (type(self), self.data, self.grad, self.label), self.__getstate__()


def _restore(cls, data, grad, label):
    """Unpickles a Value: a new leaf of the same class, whose __init__ is not run (as for
    any pickled object); the attributes follow as the pickle's state."""
    if not isinstance(cls, type) or not issubclass(cls, Value):
        raise TypeError(f"cannot restore a Value as {cls!r}")
    value = Value(data) if cls is Value else Value.__new__(cls, data)
    if cls is not Value:  # made whole now: a later __init__ does nothing, as for any Value
        Value.__init__(value, data)
    value.grad = grad
    value.label = label
    return value


_restore_leaf = _restore  # older pickles name it so


# ---- errors: the C side calls this to raise the exception for a failed call ----


def _op_column(column):
    """One column of the C op table (csrc/ops.h), indexed by op code."""
    return tuple(ffi.string(column(code)).decode() for code in range(lib.ag_op_count()))


OP_NAMES = _op_column(lib.ag_op_name)  # "add", "relu", ...
_SYMBOLS = _op_column(lib.ag_op_symbol)  # what `_op` shows: "+", "ReLU", ...
OP_PYTHON = _op_column(lib.ag_op_python)  # how Python reaches it: "nb_add", "method", ...

# The rows Python reaches as module functions (pyautograd.maximum, ...): the C module
# has one per row; they are published here and in pyautograd.
OP_FUNCTIONS = {name: getattr(_ag, name) for name, how in zip(OP_NAMES, OP_PYTHON) if how == "function"}
globals().update(OP_FUNCTIONS)
__all__ += sorted(OP_FUNCTIONS)


def _raise_failure(what, inputs, node, node_op, status=None, value=None, live=None):
    """Raises the exception for a failed call: `what` names the operation, inputs are
    its operands, node (or None) the node the failure happened at and node_op its op.
    The C side passes the failure's status, value (the nan or inf of an anomaly) and the
    live node count; a caller of a cffi function (the optimizers) leaves them to be read."""
    if status is None:
        status, value, live = lib.ag_last_error(), lib.ag_error_value(), lib.ag_live_nodes()
    if status == lib.AG_ENOMEM:
        raise MemoryError(f"pyautograd: out of memory in {what} ({live:,} node{'' if live == 1 else 's'} live)")
    if status == lib.AG_EANOMALY:
        from .modes import anomaly_error

        raise anomaly_error(what, inputs, node, node_op, value)
    if status == lib.AG_ENOREPLAY:
        op = f"_op {node._op!r}" if node is not None and node._op else "no _op"
        raise RuntimeError(
            f"forward() cannot replay this graph: it holds a node made by hand ({op}, "
            f"data {node.data!r}), whose value was computed in Python, so there is no "
            f"forward function to run again. Rebuild the graph instead."
        )
    if status == lib.AG_EPYRULE:
        call = "grad(create_graph=True)" if what == "grad" else f"{what}()"
        instead = "Use create_graph=False, or build" if what == "grad" else "Use grad(), or build"
        raise RuntimeError(
            f"{call} cannot differentiate a node whose _backward is written "
            f"in Python (_op {node._op!r}, data {node.data!r}): a Python function is no graph. "
            f"{instead} the op from Value operations."
        )
    if status == lib.AG_ECHOSEN:
        raise RuntimeError(
            f"forward() cannot replay this graph: it holds a derivative built by "
            f"grad(create_graph=True) that picked a branch by the values of the time "
            f"(node _op {node._op!r}, data {node.data!r}): the call differentiated a pow "
            f"whose exponent is a Value, whose derivative takes one form at a zero base or "
            f"exponent and another elsewhere, so every result of that call "
            f"is right only at the values of the time. Call grad() again at the new values instead."
        )
    if status == lib.AG_EBUSY:
        raise RuntimeError(
            f"{what}() reached a node that another backward() or grad() is using: one "
            f"that runs Python _backward rules, in another thread or around this call "
            f"(called from one of its rules). Its gradients are half-summed in those "
            f"nodes; run the two one after the other (e.g. under a lock)."
        )
    raise ValueError(f"pyautograd: invalid arguments to {what}")


_ag._set_failure_hook(_raise_failure)


def _before_gc_pass(phase, info):
    """Before each GC pass: Values that came to hold a pin are tracked (csrc/pins.c),
    so that the pass sees every reference a pin holds; a young generation's pass looks
    for them only once enough has come since the last look (what a pass leaves counts)."""
    if phase == "start":
        _ag._track_pin_holders(info["generation"])
    else:
        _ag._gc_pass_ended()


gc.callbacks.append(_before_gc_pass)
