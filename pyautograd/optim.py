"""Optimizers: SGD and Adam (AdamW as an option), torch.optim's updates, one C call per step.

Each optimizer holds its parameters' nodes in a NodeList (a reference to each node, so
they live as long as the optimizer, whatever happens to the `params` list) and its state
buffers in cffi arrays of its own (csrc/optim.c updates them in place), so step() and
zero_grad() cross into C once, however many parameters there are.

state_dict() and load_state_dict() save and restore an optimizer in torch.optim's shape,
and an optimizer pickles and deep-copies together with its model (its parameters travel
as the model's Values, so they stay shared), so a run saved at step k and resumed gives
bitwise the losses of the run that never stopped.

Every hyper-parameter (lr, momentum, betas, eps, weight_decay, decoupled) is a property
that checks what it is given at once, so one set between steps (a schedule, a warm-up of
momentum) takes effect at the next step, and a bad one raises where it is set, naming
itself and its valid range, not later inside step().
"""

import copyreg
import math
import numbers
from collections.abc import Iterable, Sequence

from . import _ag
from ._ag import ffi, lib
from .engine import Value, _raise_failure

__all__ = ["Optimizer", "SGD", "Adam"]

_MAX_STEPS = 2**53  # Adam's count is a C long long; past 2**53 a float step is not whole-exact


def _check_real(name: str, value: float, low: float = 0.0, high: float | None = None, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__!r}")
    value = float(value)
    too_high = high is not None and (value >= high if open_high else value > high)
    if not value >= low or too_high:
        bounds = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return value


_GONE = object()  # a slot a setter deleted


def _inert(copy):
    """load_state_dict's copy of an optimizer, before it goes: its attributes dropped and
    its class made one with no __del__, so a subclass's (closing a file the copy shares)
    never runs for it; where the layouts allow (a subclass with slots of its own keeps
    its class, and its __del__ runs, on the emptied copy)."""
    vars(copy).clear()
    try:
        object.__setattr__(copy, "__class__", _Optimizer_Inert)
    except TypeError:
        pass


class Optimizer:
    """What SGD and Adam share: the parameters, their ids in a C array, zero_grad, lr."""

    def __init__(self, params: Iterable[Value], lr: float) -> None:
        if isinstance(params, Value):
            raise TypeError("params must be an iterable of Values (e.g. model.parameters()), not one Value")
        params = list(params)
        for p in params:
            if not isinstance(p, Value):
                raise TypeError(f"params must be Values, not {type(p).__name__!r}")
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if len(set(params)) != len(params):
            raise ValueError("a parameter appears more than once in params")
        self._attach(params)
        self.lr = lr

    def _attach(self, params: list[Value]) -> None:
        self.params = params
        self._nodes = _ag.NodeList(params)  # owns the nodes the ids below name
        self._n = len(params)
        self._ids = ffi.from_buffer("ag_id[]", self._nodes)

    # ---- saving: torch's state_dict, and pickle and copy.deepcopy ----

    _HYPER: tuple[str, ...] = ("lr",)

    def state_dict(self) -> dict:
        """torch.optim's shape: {"state": {index: {name: number}}, "param_groups": [{the
        hyper-parameters, "params": [index, ...]}]}, parameters by position in params."""
        group = {name: getattr(self, name) for name in self._HYPER}
        group["params"] = list(range(self._n))
        return {"state": self._param_state(), "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Takes back what state_dict() gave, for an optimizer over as many parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or list(groups[0]["params"]) != list(range(self._n)):
            raise ValueError(
                f"load_state_dict: this optimizer has {self._n} parameter(s) in one "
                f"group; the state has groups of {[len(g['params']) for g in groups]}"
            )
        group = groups[0]
        missing = [name for name in self._HYPER if name not in group]
        if missing:
            raise ValueError(f"load_state_dict: the parameter group has no {missing[0]!r}")
        # All or nothing, a Ctrl-C included: the new hyper-parameters and state are made
        # aside, then taken in one update of the instance's dict, inside which no Python
        # code runs (a subclass's slots are set one by one, after).
        fields, slots = self._hyper_parameters_aside(group)
        fields.update(self._state_fields(self._read_param_state(state_dict["state"])))
        self.__dict__.update(fields)
        for name, value in slots.items():
            if value is _GONE:
                object.__delattr__(self, name)
            else:
                object.__setattr__(self, name, value)

    def _hyper_parameters_aside(self, group: dict) -> tuple[dict, dict]:
        """The dict fields and the slots that taking group's hyper-parameters changes,
        changing nothing: they are set on a copy of the optimizer (same class, its
        attributes and slots as they are now, no __init__), the plain ones (a subclass's
        own) first, then those a descriptor holds (a property, a slot) through it, which
        may read the instance, as a subclass's setters do."""
        snapshot = dict(vars(self))
        through = {name: hasattr(getattr(type(self), name, None), "__set__") for name in self._HYPER}
        aside = object.__new__(type(self))
        try:
            vars(aside).update(snapshot)
            slots = {name: getattr(self, name) for name in copyreg._slotnames(type(self)) if hasattr(self, name)}
            for name, value in slots.items():
                object.__setattr__(aside, name, value)
            vars(aside).update((name, group[name]) for name in self._HYPER if not through[name])
            for name in self._HYPER:
                if through[name]:
                    setattr(aside, name, group[name])
            fields = {key: value for key, value in vars(aside).items() if snapshot.get(key, aside) is not value}
            now = {name: getattr(aside, name, _GONE) for name in slots}
            return fields, {name: value for name, value in now.items() if value is not slots[name]}
        finally:
            _inert(aside)

    def _numbers_of(self, state: dict, key: str) -> list[float]:
        """state[i][key] as a float for every parameter i, or ValueError naming what is
        missing or not a real number (a bool, a string or an int beyond a float too)."""
        try:
            found = [state[i][key] for i in range(self._n)]
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"load_state_dict: the state has no {key!r} for every parameter ({error!r})") from None
        for i, value in enumerate(found):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"load_state_dict: {key!r} of parameter {i} must be a real number, not {value!r}")
            try:
                found[i] = float(value)
            except (OverflowError, ValueError) as error:
                raise ValueError(f"load_state_dict: {key!r} of parameter {i}: {error}") from None
        return found

    def __getstate__(self) -> dict:
        # The parameters travel as Values: pickled with their model, they stay shared.
        # Those the optimizer steps, in its order: its own nodes, not self.params, a list
        # the program may have changed since (which the optimizer never reads again).
        # A subclass's own attributes travel as they are.
        return {
            "params": self._nodes.values(),
            "state_dict": self.state_dict(),
            "attributes": {name: value for name, value in vars(self).items() if not self._engine_field(name)},
            "slots": {name: getattr(self, name) for name in copyreg._slotnames(type(self)) if hasattr(self, name)},
        }

    def __setstate__(self, state: dict) -> None:
        self._attach(list(state["params"]))
        self._fresh_state()
        self.__dict__.update(state.get("attributes", {}))  # first: a setter may read them
        for name, value in state.get("slots", {}).items():
            object.__setattr__(self, name, value)
        self.load_state_dict(state["state_dict"])

    def _engine_field(self, name: str) -> bool:
        """Whether name is a field the optimizer itself keeps: what _attach sets, its
        state's fields and its hyper-parameters' (saved by state_dict)."""
        return (
            name in ("params", "_nodes", "_n", "_ids")
            or name in self._HYPER
            or name.startswith("_")
            and name[1:] in self._HYPER
            or name in self._state_fields(None)
        )

    def _fresh_state(self) -> None:
        self.__dict__.update(self._state_fields(None))

    def _param_state(self) -> dict:
        raise NotImplementedError

    def _read_param_state(self, state: dict):
        """The numbers of state() checked and read, changing nothing."""
        raise NotImplementedError

    def _state_fields(self, numbers) -> dict:
        """The private fields that hold what _read_param_state read (None: a fresh
        state), made anew, to be taken at once: cannot fail but for memory."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_real("lr", value)

    def zero_grad(self) -> None:
        """Sets every parameter's grad to 0, in one C call."""
        if lib.ag_zero_grads(self._ids, self._n):
            _raise_failure("zero_grad", (), None, "")

    def _buffer(self):
        return ffi.new("double[]", self._n)  # zeroed


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (dampening 0, no nesterov):
    d = grad + weight_decay * p; buf = d, then momentum * buf + d; p -= lr * buf.

    As torch's, the momentum buffer is made at the first step with momentum != 0 (so
    momentum may be turned on after construction), and kept while momentum is 0."""

    def __init__(self, params: Iterable[Value], lr: float, momentum: float = 0, weight_decay: float = 0) -> None:
        super().__init__(params, lr)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._fresh_state()

    _HYPER = ("lr", "momentum", "weight_decay")

    def _param_state(self) -> dict:
        if self._momentum_buffer is None:
            return {}
        return {i: {"momentum_buffer": self._momentum_buffer[i]} for i in range(self._n)}

    def _read_param_state(self, state: dict):
        return self._numbers_of(state, "momentum_buffer") if state else None

    def _state_fields(self, numbers) -> dict:
        buffer = None if numbers is None else self._buffer()  # a double[] from the first step with momentum on
        for i, x in enumerate(numbers or ()):
            buffer[i] = x
        return {"_momentum_buffer": buffer}

    @property
    def momentum(self) -> float:
        return self._momentum

    @momentum.setter
    def momentum(self, value: float) -> None:
        self._momentum = _check_real("momentum", value)

    @property
    def weight_decay(self) -> float:
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        self._weight_decay = _check_real("weight_decay", value)

    def step(self) -> None:
        """Updates every parameter from its .grad, in one C call."""
        momentum = self._momentum  # read once: another thread may turn it on meanwhile
        first_momentum_step = momentum != 0.0 and self._momentum_buffer is None
        if first_momentum_step:
            self._momentum_buffer = self._buffer()
        buffer = ffi.NULL if self._momentum_buffer is None else self._momentum_buffer
        if lib.ag_sgd_step(self._ids, self._n, self._lr, momentum, self._weight_decay, buffer, first_momentum_step):
            if first_momentum_step:
                self._momentum_buffer = None  # nothing was updated: the next step is the first
            _raise_failure("SGD.step", (), None, "")

    def __repr__(self) -> str:
        return f"SGD({self._n} parameters, lr={self._lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """Adam, as torch.optim.Adam; with decoupled=True, AdamW (torch.optim.AdamW): the
    weight decay shrinks the parameters directly instead of joining the gradient."""

    def __init__(
        self,
        params: Iterable[Value],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.decoupled = decoupled
        self._fresh_state()

    _HYPER = ("lr", "betas", "eps", "weight_decay", "decoupled")

    @property
    def _steps(self) -> int:
        return self._steps_taken[0]  # counted by the C step itself, with its update

    def _param_state(self) -> dict:
        if not self._steps:
            return {}
        return {
            i: {"step": self._steps, "exp_avg": self._exp_avg[i], "exp_avg_sq": self._exp_avg_sq[i]}
            for i in range(self._n)
        }

    def _read_param_state(self, state: dict):
        if not state:
            return None
        steps = self._numbers_of(state, "step")[0]
        if isinstance(state[0]["step"], numbers.Integral) and state[0]["step"] > _MAX_STEPS:
            steps = math.inf  # 2**53 + 1 would round to 2**53 as a float: out of range, as it is
        if not (math.isfinite(steps) and steps == int(steps) and 1 <= steps <= _MAX_STEPS):
            raise ValueError(f"load_state_dict: step must be a whole number from 1 to {_MAX_STEPS}, not {steps!r}")
        return int(steps), self._numbers_of(state, "exp_avg"), self._numbers_of(state, "exp_avg_sq")

    def _state_fields(self, numbers) -> dict:
        fields = {"_exp_avg": self._buffer(), "_exp_avg_sq": self._buffer(), "_steps_taken": ffi.new("long long[1]")}
        if numbers is not None:
            fields["_steps_taken"][0], exp_avg, exp_avg_sq = numbers
            for i in range(self._n):
                fields["_exp_avg"][i], fields["_exp_avg_sq"][i] = exp_avg[i], exp_avg_sq[i]
        return fields

    @property
    def betas(self) -> tuple[float, float]:
        return self._betas

    @betas.setter
    def betas(self, value: Sequence[float]) -> None:
        if not hasattr(value, "__len__") or len(value) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), not {value!r}")
        self._betas = (
            _check_real("betas[0]", value[0], 0.0, 1.0, open_high=True),
            _check_real("betas[1]", value[1], 0.0, 1.0, open_high=True),
        )

    @property
    def eps(self) -> float:
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps = _check_real("eps", value)

    @property
    def weight_decay(self) -> float:
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        self._weight_decay = _check_real("weight_decay", value)

    @property
    def decoupled(self) -> bool:
        return self._decoupled

    @decoupled.setter
    def decoupled(self, value: bool) -> None:
        if not isinstance(value, numbers.Integral) or value not in (0, 1):  # bool("no") would be True
            raise TypeError(f"decoupled must be True or False, not {value!r}")
        self._decoupled = bool(value)

    def step(self) -> None:
        """Updates every parameter from its .grad, in one C call."""
        beta1, beta2 = self._betas
        if lib.ag_adam_step(
            self._ids,
            self._n,
            self._lr,
            beta1,
            beta2,
            self._eps,
            self._weight_decay,
            self._decoupled,
            self._steps_taken,  # counted up in the same C call
            self._exp_avg,
            self._exp_avg_sq,
        ):
            _raise_failure("Adam.step", (), None, "")

    def __repr__(self) -> str:
        return (
            f"Adam({self._n} parameters, lr={self._lr}, betas={self.betas}, eps={self.eps}, "
            f"weight_decay={self.weight_decay}, decoupled={self.decoupled})"
        )


class _Optimizer_Inert(Optimizer):  # Optimizer's layout, without a __del__ (see _inert)
    __slots__ = ()
