"""micrograd.nn on pyautograd: Module, Neuron, Layer, MLP, with the same API and numbers.

The same initialisation in the same order (random.uniform(-1, 1) per weight, bias 0),
so random.seed(s) gives micrograd's exact parameters, and the same reprs. What differs
is underneath: a neuron is one fused dot node (bias first, then w0*x0 + w1*x1 ...,
micrograd's order, so the values are bitwise micrograd's) and one relu, not a chain of
2*nin binary nodes; a whole layer is made in one C call (csrc/nn.c), an MLP passes its
activations from layer to layer as a NodeList (node ids it owns) without making Values
in between, and zero_grad is one C call.
"""

import numbers
import random
import weakref
from collections.abc import Iterable
from typing import Any

from . import _ag
from .engine import Value

__all__ = ["Module", "Neuron", "Layer", "MLP"]


# A layer keeps its weights' node ids in a C array so that applying it is one C call.
# Any change to what a layer is made of (a Neuron's w, b or nonlin, a w list, a Layer's
# neurons) bumps this counter, and a layer whose array is older rebuilds it: one global
# counter, so a change reached through any alias is seen.
_structure_version = [0]

# The layers and MLPs holding C arrays (their rows hold the weights' nodes): a change
# drops the arrays at once, so weights the program replaced die with their Values, not
# at the model's next call (or never, for a model not called again). Keyed by id, not a
# WeakSet: a module whose class defines __eq__ is unhashable.
_holding_arrays: "dict[int, weakref.ref[Module]]" = {}


def _holds_arrays(module):
    key = id(module)

    def forget(ref):  # the module died: its entry goes, unless a new module has its id
        if _holding_arrays.get(key) is ref:
            _holding_arrays.pop(key, None)  # another thread may have emptied it meanwhile

    _holding_arrays[key] = weakref.ref(module, forget)


def _structure_changed():
    _structure_version[0] += 1
    while _holding_arrays:  # one entry at a time: a module another thread adds meanwhile is met too
        try:
            _, ref = _holding_arrays.popitem()
        except KeyError:  # another thread took the last one
            break
        module = ref()
        if module is not None:
            vars(module).pop("_plan_cache", None)
            vars(module).pop("_plans_cache", None)


_ag._set_class_change_hook(_structure_changed)  # w.__class__ = Sub: the caches check again


def _tracked(method):
    """list's mutating method, bumping the structure version before and after: a cache
    that another thread stamps in between (with the old structure) is stale at once."""

    def mutate(self, *args):
        _structure_changed()
        try:
            return method(self, *args)
        finally:
            _structure_changed()

    mutate.__name__ = method.__name__
    return mutate


class _TrackedList(list):
    """A list (Neuron.w, Layer.neurons) that tells the layer caches when it changes."""

    __slots__ = ()
    __init__ = _tracked(list.__init__)
    __setitem__ = _tracked(list.__setitem__)
    __delitem__ = _tracked(list.__delitem__)
    __iadd__ = _tracked(list.__iadd__)
    __imul__ = _tracked(list.__imul__)
    append = _tracked(list.append)
    extend = _tracked(list.extend)
    insert = _tracked(list.insert)
    pop = _tracked(list.pop)
    remove = _tracked(list.remove)
    clear = _tracked(list.clear)
    reverse = _tracked(list.reverse)

    def sort(self, *, key=None, reverse=False):  # keyword-only, unlike the other mutators
        _structure_changed()
        try:
            list.sort(self, key=key, reverse=reverse)
        finally:
            _structure_changed()

    def __reduce_ex__(self, protocol):
        return _TrackedList, (list(self),)


def _check_size(what, name, n):
    """A layer size: an int >= 1 (micrograd's range() would make an empty layer of 0 or
    less, silently)."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"{what}() {name} must be an int, not {type(n).__name__!r}")
    if n < 1:
        raise ValueError(f"{what}() {name} must be an int >= 1, got {n}")


def _too_few(what, nin, x):
    # micrograd's zip would compute on the inputs there are, as if the rest were 0
    return ValueError(f"{what}() takes {nin} inputs, got {len(x)}")


class Module:
    def zero_grad(self) -> None:
        """Sets every parameter's grad to 0, in one C call."""
        _ag.zero_grad(self.parameters())

    def parameters(self) -> list[Value]:
        return []

    def to_torch(self) -> Any:
        """This Neuron, Layer or MLP as a torch.nn.Sequential of nn.Linear (float64, the
        same weights) and nn.ReLU (pyautograd.export.module_to_torch; needs torch)."""
        from .export import module_to_torch

        return module_to_torch(self)


def _value_arithmetic(v):
    """Whether v is a Value of Value itself: a fused dot over such weights computes what
    micrograd's wi * xi and sum(..., b) compute while Value's + and * are its own, which
    the C calls check each time (a subclass's could change unseen). A Value that changes
    class changes the structure (the hook below)."""
    return type(v) is Value


class Neuron(Module):
    # The structure version in which this neuron's weights and bias were found to be
    # Values of Value's arithmetic (_value_arithmetic); an instance's own shadows this.
    _fused_for: int = -1

    def __init__(self, nin: int, nonlin: bool = True) -> None:
        _check_size("Neuron", "nin", nin)
        self.w: list[Value] = _TrackedList(Value(random.uniform(-1, 1)) for _ in range(nin))
        self.b = Value(0)
        self.nonlin = nonlin

    def __setattr__(self, name, value):
        _structure_changed()  # before and after, as _tracked's
        object.__setattr__(self, name, value)
        _structure_changed()

    def __call__(self, x: Iterable[Value | float]) -> Value:
        x = list(x)  # holds a generator's temporaries while the dot node is made
        version = _structure_version[0]
        w, b = list(self.w), self.b  # read once, checked and used: another thread may change them
        n = len(w)
        if len(x) < n:
            raise _too_few("Neuron", n, x)
        if not (self._fused_for == version or self._fusable(w, b, version)) or not _ag.fusable(x):
            act = sum((wi * xi for wi, xi in zip(w, x)), b)  # micrograd's, through their own + and *
            return act.relu() if self.nonlin else act
        classes = _ag._class_changes()
        try:  # micrograd's zip: extra inputs are ignored
            act = _ag.dot(w, x[:n] if len(x) > n else x, b)
        except TypeError as error:  # name the call that was made, not the op inside it
            if not str(error).startswith("dot() xs "):
                raise
            raise TypeError(f"Neuron() {str(error)[len('dot() xs ') :]}") from None
        if _ag._class_changes() != classes:  # a number's __float__ changed a class: as micrograd
            act = sum((wi * xi for wi, xi in zip(w, x)), b)
        return act.relu() if self.nonlin else act

    def _fusable(self, w, b, version):
        """Whether one dot node over w and b (the neuron's, read by the caller after
        version) computes this neuron; remembered for that version."""
        if not (all(map(_value_arithmetic, w)) and _value_arithmetic(b)):
            return False
        object.__setattr__(self, "_fused_for", version)
        return True

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_fused_for", None)  # a version of this process's counter
        return state

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class _LayerPlan:
    """A Layer's weights as a LayerWeights (one row per neuron, holding its nodes) for
    one-call application, valid while _structure_version is."""

    __slots__ = ("version", "nin", "nout", "weights", "nonlin")

    def __init__(self, rows, biases, nonlin, version):
        self.version = version
        self.nin = len(rows[0])
        self.nout = len(rows)
        self.weights = _ag.LayerWeights([w for row in rows for w in row], biases)
        self.nonlin = bytes(bool(n) for n in nonlin)


class Layer(Module):
    # The C arrays of _plan for one structure version (a _LayerPlan, or a _NoPlan when
    # this layer can't have them); an instance's own, set by _plan, shadows this None.
    _plan_cache: Any = None

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        _check_size("Layer", "nin", nin)
        _check_size("Layer", "nout", nout)
        self.neurons: list[Neuron] = _TrackedList(Neuron(nin, **kwargs) for _ in range(nout))

    def __setattr__(self, name, value):
        _structure_changed()  # before and after, as _tracked's
        object.__setattr__(self, name, value)
        _structure_changed()

    def _plan(self):
        """The C arrays for one-call application, or None when this layer can't have
        them (a Neuron subclass, a w that is not ours, neurons of unequal sizes...)."""
        if Neuron.__call__ is not _NEURON_CALL:  # patched: the plan would not do what it does
            return None
        version = _structure_version[0]  # read first: a change while this checks makes it stale
        cached = self._plan_cache
        if cached is not None and cached.version == version:
            return cached if type(cached) is _LayerPlan else None
        neurons = self.neurons
        # What is checked is what the plan is made of: copies, read once (another thread
        # may change a list meanwhile; the version then makes the plan stale).
        ok = type(neurons) is _TrackedList and all(type(n) is Neuron and type(n.w) is _TrackedList for n in neurons)
        rows = [list(n.w) for n in neurons] if ok else []
        biases = [n.b for n in neurons] if ok else []
        ok = (
            ok
            and rows
            and len({len(row) for row in rows}) == 1
            and len(rows[0]) > 0
            and all(map(_value_arithmetic, biases))
            and all(_value_arithmetic(w) for row in rows for w in row)
        )
        plan = _LayerPlan(rows, biases, [n.nonlin for n in neurons], version) if ok else None
        # A layer that can't have a plan remembers that too, for this version.
        object.__setattr__(self, "_plan_cache", plan or _NoPlan(version))
        if plan is not None:
            _holds_arrays(self)
        return plan

    # One output: a bare Value, as micrograd's Layer returns; else a list. Typed Any, as
    # micrograd's result is dynamic: code that adds or indexes it type-checks as it runs.
    def __call__(self, x: Iterable[Value | float]) -> Any:
        if type(x) is not list and not hasattr(x, "__len__"):
            if not self.neurons:  # micrograd's: no neuron reads x (a bare Value, say)
                return []
            x = list(x)  # a generator is read once, for every neuron
        cached = self._plan_cache  # _plan's work, inline: this runs once per sample
        if type(cached) is _LayerPlan and cached.version == _structure_version[0] and Neuron.__call__ is _NEURON_CALL:
            plan = cached
        else:
            plan = self._plan()
        if plan is not None and len(x) != plan.nin:
            if len(x) < plan.nin:
                raise _too_few("Layer", plan.nin, x)
            x = list(x)[: plan.nin]  # micrograd's zip: extra inputs are ignored
        out = NotImplemented if plan is None else _ag.layer(plan.weights, plan.nonlin, x)
        if out is NotImplemented:  # no plan, or Value's +, * or relu patched
            out = [n(x) for n in self.neurons]  # micrograd's way, one neuron at a time
        else:
            out = out.values()
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_plan_cache", None)  # C arrays: rebuilt on first use
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)
        _structure_changed()

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class _NoPlan:
    """A Layer._plan result remembered as "not possible" for one structure version."""

    __slots__ = ("version",)

    def __init__(self, version):
        self.version = version


class MLP(Module):
    # (structure version, (chain, nin)), set by _plans; an instance's own shadows this None.
    _plans_cache: Any = None

    def __init__(self, nin: int, nouts: list[int]) -> None:
        _check_size("MLP", "nin", nin)
        if not isinstance(nouts, (list, tuple)):
            raise TypeError(f"MLP() nouts must be a list of layer sizes, not {type(nouts).__name__!r}")
        if not nouts:
            raise ValueError("MLP() nouts must name at least one layer, got []")
        for i, nout in enumerate(nouts):
            _check_size("MLP", f"nouts[{i}]", nout)
        sz = [nin] + list(nouts)
        self.layers: list[Layer] = _TrackedList(
            Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1) for i in range(len(nouts))
        )

    def __setattr__(self, name, value):
        _structure_changed()  # before and after, as _tracked's
        object.__setattr__(self, name, value)
        _structure_changed()

    def _plans(self):
        """Every layer's plan as (weights, nonlin) when they chain (each takes what the one
        before gives, and no hidden layer gives a bare Value), else None; remembered for
        the structure version it was made in."""
        if not _own_calls():  # a class's __call__ patched: the chain would not do what it does
            return None, 0
        version = _structure_version[0]  # read first: a change while this checks makes it stale
        cached = self._plans_cache
        if cached is not None and cached[0] == version:
            return cached[1]
        layers = self.layers
        plans = []
        # Only our own list says when it changes: a plain one (model.layers = [...]) can be
        # changed in place unseen, so such a model has no plans and runs layer by layer.
        for i, layer in enumerate(layers if type(layers) is _TrackedList else ()):
            plan = layer._plan() if type(layer) is Layer else None
            if plan is None or (plans and plans[-1].nout != plan.nin) or (plan.nout == 1 and i != len(layers) - 1):
                plans = None
                break
            plans.append(plan)
        chain = tuple((p.weights, p.nonlin) for p in plans) if plans else None
        nin = plans[0].nin if plans else 0
        object.__setattr__(self, "_plans_cache", (version, (chain, nin)))
        if chain is not None:
            _holds_arrays(self)
        return chain, nin

    # One output: a bare Value, as micrograd's MLP returns; else a list. Typed Any, as
    # micrograd's result is dynamic: code that adds or indexes it type-checks as it runs.
    def __call__(self, x: Iterable[Value | float]) -> Any:
        if type(x) is not list and not hasattr(x, "__len__"):
            x = list(x)  # a generator is read once
        cached = self._plans_cache  # _plans' work, inline: this runs once per sample
        if (
            cached is not None
            and cached[0] == _structure_version[0]
            and Neuron.__call__ is _NEURON_CALL  # _own_calls(), inline
            and Layer.__call__ is _LAYER_CALL
        ):
            chain, nin = cached[1]
        else:
            chain, nin = self._plans()
        if chain is not None and len(x) != nin:
            if len(x) < nin:
                raise _too_few("MLP", nin, x)
            x = list(x)[:nin]  # micrograd's zip: extra inputs are ignored
        out = NotImplemented if chain is None else _ag.layers(chain, x)  # the whole MLP in one C call
        if out is NotImplemented:  # no chain, or Value's +, * or relu patched
            for layer in self.layers:
                x = layer(x)
            return x
        return out[0] if len(out) == 1 else out

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_plans_cache", None)  # rebuilt on first use
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)
        _structure_changed()

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


# What a Layer's plan and an MLP's chain compute in one C call is what these two methods
# do; while either is patched on its class, they step aside and the calls are made.
_NEURON_CALL, _LAYER_CALL, _MLP_CALL = Neuron.__call__, Layer.__call__, MLP.__call__


def _own_calls():
    return Neuron.__call__ is _NEURON_CALL and Layer.__call__ is _LAYER_CALL


def _computes_as_defined(module):
    """Whether module is a Neuron, Layer or MLP that runs this file's __call__ (a subclass
    may, if it does not define its own): what to_torch() can stand for."""
    for cls, call in ((MLP, _MLP_CALL), (Layer, _LAYER_CALL), (Neuron, _NEURON_CALL)):
        if isinstance(module, cls):
            return type(module).__call__ is call
    return False
