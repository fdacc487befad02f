"""Per-thread modes: no_grad() and detect_anomaly(), like torch's.

Both are flags in C (per thread), so the per-op path in Python checks nothing and
pays nothing for them.
"""

import contextlib
import functools
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _ag
from ._ag import lib

__all__ = ["no_grad", "detect_anomaly", "is_grad_enabled"]

_F = TypeVar("_F", bound=Callable[..., Any])
_M = TypeVar("_M", bound="_Mode")


def is_grad_enabled() -> bool:
    return bool(lib.ag_grad_enabled())


if TYPE_CHECKING:  # what type checkers see of the C base

    class _Switch:
        def __enter__(self: _M) -> _M: ...
        def __exit__(self, *exc_info: object) -> Literal[False]: ...

else:
    _Switch = _ag.ModeSwitch


class _Mode(_Switch, contextlib.ContextDecorator):
    """Sets a C flag for the current thread inside a `with` block or a decorated call,
    and restores what was there before (so modes nest). __enter__ and __exit__ are
    ModeSwitch's, in C (csrc/mode_switch.c): a Ctrl-C cannot land between setting the
    flag and the block, or between the block and putting the flag back."""

    _anomaly = False  # which flag: detect_anomaly's, else no_grad's

    @overload
    def __new__(cls: type[_M], func: None = None) -> _M: ...
    @overload
    def __new__(cls, func: _F) -> _F: ...  # type: ignore[misc]

    def __new__(cls, func: Callable[..., Any] | None = None) -> Any:
        # `@no_grad` without parentheses, as torch allows, decorates func at once.
        self = super().__new__(cls)
        if func is None:
            return self
        if not callable(func):
            raise TypeError(f"{cls.__name__}() takes no arguments, or a function to decorate")
        return self(func)

    def _recreate_cm(self):
        # A decorated function may run in several threads at once: a fresh
        # instance per call keeps each call's saved flag its own.
        return type(self)()

    def __call__(self, func: _F) -> _F:
        code = getattr(func, "__code__", None)
        iterable_coroutine = code is not None and code.co_flags & inspect.CO_ITERABLE_COROUTINE
        if inspect.isgeneratorfunction(func) and not iterable_coroutine:  # types.coroutine: awaited, as before
            return self._decorate_generator(func)  # type: ignore[return-value]
        return super().__call__(func)

    def _decorate_generator(self, func):
        """A generator function whose body runs inside the mode, one step at a time (as
        torch's decorators do): between its steps, the caller's mode is back."""
        mode = self._recreate_cm

        def step(resume, *value):
            with mode():
                return resume(*value)

        @functools.wraps(func)
        def stepped(*args, **kwargs):
            generator = func(*args, **kwargs)
            try:
                out = step(generator.send, None)
                while True:
                    thrown = None
                    try:
                        sent = yield out
                    except GeneratorExit:
                        step(generator.close)
                        raise
                    except BaseException as error:  # thrown in: it goes on inside the mode,
                        thrown = error  # thrown from outside this handler (no false context)
                    if thrown is None:
                        out = step(generator.send, sent)
                    else:
                        out = step(generator.throw, thrown)
            except StopIteration as stop:
                return stop.value

        return stepped


class no_grad(_Mode):
    """Ops compute values but record no graph: results are leaves that keep nothing alive."""

    _anomaly = False


class detect_anomaly(_Mode):
    """The first op whose value (forward) or gradient contribution (backward) is nan
    or inf raises FloatingPointError naming the op and its inputs."""

    _anomaly = True


def _describe(x):
    from .engine import Value

    return repr(x.data) if isinstance(x, Value) else repr(float(x))


def _describe_all(inputs, shown=8):
    """The input values, the first few of a wide op's and how many more there are."""
    inputs = list(inputs)
    text = ", ".join(_describe(x) for x in inputs[:shown])
    return text + (f", ... {len(inputs) - shown} more" if len(inputs) > shown else "")


def anomaly_error(what, inputs, node, node_op, value):
    """The FloatingPointError for a failed call under detect_anomaly(): in backward,
    forward or grad, node is the node that went non-finite (node_op its op); value is the
    nan or inf an op produced."""
    if what in ("backward", "forward", "_backward", "grad") and node is not None:
        phase = "value" if what == "forward" else "gradient"
        return FloatingPointError(
            f"detect_anomaly: {node_op!r} produced a non-finite {phase} in {what} "
            f"(its value {node.data!r}, its inputs ({_describe_all(node._inputs)}))"
        )
    kind = "nan" if math.isnan(value) else repr(value)
    if what == "grad":  # create_graph: a node of the derivative graph went non-finite as it was made
        return FloatingPointError(
            f"detect_anomaly: grad(create_graph=True) made a derivative node whose value is {kind} "
            f"(the output: {_describe_all(inputs)})"
        )
    return FloatingPointError(f"detect_anomaly: {what!r} produced {kind} from inputs ({_describe_all(inputs)})")
