"""pyautograd.no_grad() and pyautograd.detect_anomaly(): context managers and decorators,
per thread, nesting, what they record and keep alive (checked with pyautograd.arena.stats),
and the errors anomaly mode raises in forward, backward and replay."""

import math
import threading

import pytest

import pyautograd
from pyautograd import arena, detect_anomaly, functional, grad, is_grad_enabled, no_grad
from pyautograd._ag import lib
from pyautograd.engine import Value


def live():
    return arena.stats()["live_nodes"]


def in_other_thread(action):
    """Runs action() in a new thread and returns its result (or raises its exception)."""
    box = {}

    def run():
        try:
            box["result"] = action()
        except BaseException as error:  # handed back to the caller
            box["error"] = error

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


# ---- no_grad ----


def test_no_grad_computes_values_but_records_no_graph():
    x = Value(1.5)
    expected = ((x * 2 + 1).tanh() ** 2 / x - x.exp()).data
    with no_grad():
        y = (x * 2 + 1).tanh() ** 2 / x - x.exp()
        s = functional.sum([x, y, 3.0])
        d = functional.dot([x, y], [y, x], 1.0)
    assert y.data == expected
    for result in (y, s, d):
        assert result._prev == set() and result._op == ""
    y.backward()
    assert y.grad == 1.0 and x.grad == 0.0  # nothing to flow into


def test_no_grad_results_keep_nothing_alive():
    base = live()
    x = Value(2.0)
    with no_grad():
        y = functional.sum([(x * i).tanh() for i in range(100)], x)
        z = functional.dot([x] * 50, [x] * 50, x)
    assert live() == base + 3  # x, y, z: every intermediate is already gone
    del x
    assert live() == base + 2  # x's node died although y and z were computed from it
    del y, z
    assert live() == base


def test_no_grad_as_a_decorator():
    @no_grad()
    def square(v):
        assert not is_grad_enabled()
        return v * v

    @no_grad
    def cube(v):  # without parentheses, as torch allows
        assert not is_grad_enabled()
        return v * v * v

    x = Value(3.0)
    assert square(x)._prev == set() and square(x).data == 9.0
    assert cube(x)._prev == set() and cube(x).data == 27.0
    assert square.__name__ == "square"
    assert is_grad_enabled() and (x * x)._prev == {x}


def test_a_decorated_generator_runs_its_body_inside_the_mode():
    # The decorator wrapped the call, which only makes the generator: its body ran
    # later, outside no_grad, recording a graph (torch's decorators cover the body).
    @no_grad()
    def squares(xs):
        for v in xs:
            received = yield v * v, is_grad_enabled()
            assert received in (None, "sent")
        return "done"

    @no_grad
    def failing():
        try:
            yield 1
        except KeyError:
            yield is_grad_enabled()

    x = Value(3.0)
    gen = squares([x, x])
    first, grad_inside = next(gen)
    assert is_grad_enabled() and not grad_inside and first._prev == set()
    second, grad_inside = gen.send("sent")
    assert not grad_inside and second._prev == set() and (x * x)._prev == {x}
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done" and squares.__name__ == "squares"
    gen = failing()
    next(gen)
    assert gen.throw(KeyError()) is False and is_grad_enabled()
    gen.close()
    assert is_grad_enabled()
    with detect_anomaly():
        assert [g for _, g in no_grad()(squares)([x])] == [False]


def test_no_grad_rejects_arguments_that_are_not_functions():
    with pytest.raises(TypeError, match="no_grad"):
        no_grad(3)


def test_no_grad_nests_and_restores_on_exit_and_on_error():
    assert is_grad_enabled()
    with no_grad():
        with no_grad():
            assert not is_grad_enabled()
        assert not is_grad_enabled()  # the inner exit restores the outer state, not "on"
    assert is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_a_decorated_function_restores_the_callers_mode():
    @no_grad()
    def inner():
        return is_grad_enabled()

    with no_grad():
        assert inner() is False
        assert not is_grad_enabled()
    assert inner() is False
    assert is_grad_enabled()


def test_no_grad_is_per_thread():
    x = Value(2.0)
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def hold_no_grad():
        with no_grad():
            seen["there"] = (x * 3)._prev
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold_no_grad)
    t.start()
    assert inside.wait(10)
    y = x * 4  # this thread still records while the other sits in no_grad
    release.set()
    t.join()
    assert x in y._prev and seen["there"] == set()
    with no_grad():
        other = in_other_thread(lambda: (x + 1, is_grad_enabled()))
    assert x in other[0]._prev and other[1] is True  # a new thread starts with grad on


# ---- detect_anomaly ----


def anomaly_message(action):
    """The message of the FloatingPointError action() raises under detect_anomaly(). The
    error and its traceback (which holds action's Values) are gone when this returns."""
    with detect_anomaly():
        try:
            action()
        except FloatingPointError as error:
            return str(error)
    raise AssertionError("no FloatingPointError")


def test_anomaly_mode_is_off_by_default_and_ieee_rules():
    assert lib.ag_anomaly_mode() == 0
    assert in_other_thread(lib.ag_anomaly_mode) == 0
    assert Value(0.0).log().data == -math.inf
    assert math.isnan((Value(0.0) / 0).data)


FORWARD_FAILURES = [
    ("log", lambda: Value(-1.0).log(), "nan", ["-1.0"]),
    ("log", lambda: Value(0.0).log(), "-inf", ["0.0"]),
    ("/", lambda: Value(1.0) / 0, "inf", ["1.0", "0.0"]),
    ("/", lambda: 0 / Value(0.0), "nan", ["0.0", "0.0"]),
    ("exp", lambda: Value(1000.0).exp(), "inf", ["1000.0"]),
    ("**", lambda: Value(0.0) ** -1, "inf", ["0.0", "-1.0"]),
    ("**", lambda: Value(-8.0) ** Value(1 / 3), "nan", ["-8.0", "0.333"]),
    ("*", lambda: Value(1e200) * Value(1e200), "inf", ["1e+200", "1e+200"]),
    ("-", lambda: Value(math.inf) - math.inf, "nan", ["inf", "inf"]),
    ("sum", lambda: functional.sum([Value(1e308), Value(1e308)]), "inf", ["1e+308", "1e+308"]),
    ("dot", lambda: functional.dot([Value(1e300)], [Value(1e300)], Value(2.0)), "inf", ["1e+300", "1e+300", "2.0"]),
]


@pytest.mark.parametrize(
    "op, make, produced, inputs", FORWARD_FAILURES, ids=[f"{op}->{p}" for op, _, p, _ in FORWARD_FAILURES]
)
def test_forward_anomaly_names_the_op_and_its_inputs(op, make, produced, inputs):
    base = live()
    message = anomaly_message(make)
    assert f"{op!r} produced {produced}" in message
    for value in inputs:
        assert value in message
    assert live() == base  # the failed op left no node behind
    result = make()  # outside the mode: IEEE again
    assert not math.isfinite(result.data)


def test_the_first_op_that_goes_non_finite_raises_not_a_later_one():
    with detect_anomaly():
        x = Value(-2.0)
        y = x * 3 + 1  # finite: fine
        with pytest.raises(FloatingPointError, match=r"'log' produced nan from inputs \(-5.0\)"):
            y.log().exp()  # log raises; exp is never reached


def test_wide_inputs_are_cut_short_in_the_message():
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"\.\.\. 92 more"):
            functional.sum([Value(1e308)] * 100)


def test_backward_anomaly_names_the_op_and_leaves_every_grad_untouched():
    x, w = Value(0.0), Value(2.0)
    hidden = x**0.5  # value 0.0 is fine; its gradient at 0 is inf
    y = hidden * w + w.tanh()
    for i, v in enumerate((x, w, hidden, y)):
        v.grad = 10.0 + i  # grads from earlier work that a failed backward must keep
    with detect_anomaly():
        with pytest.raises(FloatingPointError) as caught:
            y.backward()
    assert "'pow' produced a non-finite gradient in backward" in str(caught.value)
    assert "its inputs (0.0, 0.5)" in str(caught.value)
    assert [v.grad for v in (x, w, hidden, y)] == [10.0, 11.0, 12.0, 13.0]
    y.backward()  # outside the mode: IEEE, and the grads add as usual
    assert x.grad == math.inf and w.grad == 11.0 + 0.0 + (1 - math.tanh(2.0) ** 2)


def test_grad_anomaly_names_the_op_as_backward_does():
    # grad() once said "'grad' produced 0.0 from inputs (0.0)": a finite number, no op.
    x = Value(0.0)
    y = x.sqrt()  # its derivative at 0 is inf
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"'sqrt' produced a non-finite gradient in grad .*inputs \(0.0\)"):
            grad(y, [x])
        with pytest.raises(
            FloatingPointError, match=r"grad\(create_graph=True\) made a derivative node whose value is inf"
        ):
            grad(y * 1.0 + 3.0, [x], create_graph=True)
    assert x.grad == 0.0 and grad(y, [x])[0].data == math.inf  # outside the mode: IEEE


def test_backward_anomaly_on_a_replayed_graph():
    x = Value(1.0)
    y = (x * 2).log()
    y.forward()  # cached order and tape
    x.data = 1e-320  # log's value stays finite, its gradient 1/x overflows
    y.forward()
    assert math.isfinite(y.data)
    with detect_anomaly(), pytest.raises(FloatingPointError, match="'log'"):
        y.backward()
    assert x.grad == 0.0


def test_forward_replay_anomaly_names_the_op():
    x = Value(-1.0)
    y = (x + 2.0).log().tanh()
    x.data = -3.0
    with detect_anomaly():
        with pytest.raises(
            FloatingPointError, match=r"'log' produced a non-finite value in forward .*its inputs \(-1.0\)"
        ):
            y.forward()
    assert math.isnan(y.forward())  # outside the mode the replay runs through


def test_anomaly_mode_as_a_decorator_nests_and_is_per_thread():
    @detect_anomaly()
    def checked(v):
        return v.log()

    with pytest.raises(FloatingPointError):
        checked(Value(-1.0))
    assert lib.ag_anomaly_mode() == 0
    with detect_anomaly():
        with detect_anomaly():
            pass
        assert lib.ag_anomaly_mode() == 1
        assert math.isnan(in_other_thread(lambda: Value(-1.0).log().data))  # other thread: off
    assert lib.ag_anomaly_mode() == 0


def test_anomaly_mode_also_checks_under_no_grad():
    with no_grad(), detect_anomaly():
        with pytest.raises(FloatingPointError, match="'exp'"):
            Value(800.0).exp()


def test_modes_are_exported_at_the_top():
    assert pyautograd.no_grad is no_grad and pyautograd.detect_anomaly is detect_anomaly


@pytest.mark.parametrize("mode", [pyautograd.no_grad, pyautograd.detect_anomaly])
def test_one_mode_object_entered_inside_itself_puts_back_what_each_enter_found(mode):
    # Each enter saved the flag over the last: with m: with m: left the mode on after
    # both (no_grad: every later op recorded nothing).
    m = mode()
    with m:
        with m:
            pass
        assert pyautograd.is_grad_enabled() == (mode is not pyautograd.no_grad)
    assert pyautograd.is_grad_enabled() and not pyautograd.modes.lib.ag_anomaly_mode()


@pytest.mark.parametrize("mode", [pyautograd.no_grad, pyautograd.detect_anomaly])
def test_an_exit_without_its_enter_is_an_error_not_a_mode_turned_off(mode):
    with pytest.raises(RuntimeError, match="without __enter__"):
        mode().__exit__(None, None, None)
    assert pyautograd.is_grad_enabled() and not pyautograd.modes.lib.ag_anomaly_mode()


@pytest.mark.parametrize("mode", [pyautograd.no_grad, pyautograd.detect_anomaly])
def test_mode_objects_copy_and_pickle_as_new_ones(mode):
    import copy
    import pickle

    for copied in (copy.copy(mode()), copy.deepcopy(mode()), pickle.loads(pickle.dumps(mode(), protocol=0))):
        assert type(copied) is mode
        with copied:
            assert pyautograd.is_grad_enabled() == (mode is not pyautograd.no_grad)
    assert pyautograd.is_grad_enabled()


def test_a_decorated_legacy_coroutine_is_still_awaitable_and_thrown_errors_have_no_false_context():
    import asyncio
    import types

    @no_grad()
    @types.coroutine
    def legacy():
        yield from asyncio.sleep(0).__await__()
        return "awaited"

    async def main():
        return await legacy()

    assert asyncio.run(main()) == "awaited"

    @no_grad()
    def catches():
        try:
            yield 1
        except ValueError:
            pass
        raise KeyError("after")

    gen = catches()
    next(gen)
    with pytest.raises(KeyError) as raised:
        gen.throw(ValueError("v"))
    assert raised.value.__context__ is None
