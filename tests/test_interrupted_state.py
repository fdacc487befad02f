"""A Ctrl-C at any bytecode of the library's Python code leaves its state whole: the
modes' flags put back, an optimizer's step either taken with its count or not taken,
load_state_dict's state all old or all new. A trace function raises KeyboardInterrupt
at the k-th event (call, line, return) in the files named, for k = 1, 2, ... until a run
gets through (CPython runs a signal handler at such points too).
test_signals.py does the same with real signals, for nodes leaked.
"""

import os
import random
import sys

import pytest

import pyautograd
from pyautograd import modes, optim
from pyautograd.engine import Value

# Not contextlib's: a trace function can raise where no signal can land, as at the first
# line inside a with statement, before its protection (a pending signal is run after a
# call returns, at a function's start and at a loop's jump back).
HERE = {os.path.abspath(f) for f in (modes.__file__, optim.__file__)}


def interrupted_at_each_event(run):
    """Runs run() with a KeyboardInterrupt at its k-th traced event, for each k in turn;
    yields after each interrupted run, and returns once a run completes."""
    for k in range(1, 10_000):
        seen = 0

        def tracer(frame, event, arg, k=k):
            nonlocal seen
            if os.path.abspath(frame.f_code.co_filename) not in HERE:
                return None
            seen += 1
            if seen == k:
                raise KeyboardInterrupt
            return tracer

        sys.settrace(tracer)
        try:
            run()
        except KeyboardInterrupt:
            sys.settrace(None)
            yield k
            continue
        finally:
            sys.settrace(None)
        return
    raise AssertionError("never got through")


@pyautograd.no_grad
def _decorated():
    return pyautograd.is_grad_enabled()


@pytest.mark.parametrize(
    "enter",
    [
        lambda: pyautograd.no_grad().__enter__,
        lambda: pyautograd.detect_anomaly().__enter__,
    ],
    ids=["no_grad", "detect_anomaly"],
)
def test_a_mode_is_put_back_whatever_bytecode_a_ctrl_c_lands_on(enter):
    # __enter__ and __exit__ were Python: a Ctrl-C after the flag was set and before
    # __enter__ returned, or before __exit__ put it back, left the mode on (no_grad on:
    # every later op recorded nothing, and backward gave 0.0 grads without a word).
    mode = type(enter().__self__)

    def run():
        with mode():
            with mode():
                pass
        assert not _decorated()

    hits = 0
    for _ in interrupted_at_each_event(run):
        hits += 1
        assert pyautograd.is_grad_enabled() and not pyautograd.modes.lib.ag_anomaly_mode()
    assert hits > 0
    x = Value(3.0)
    (x * x).backward()
    assert x.grad == 6.0


def _model_and_adam():
    random.seed(3)
    params = [Value(random.uniform(-1, 1)) for _ in range(5)]
    opt = optim.Adam(params, lr=0.1, weight_decay=0.01)
    return params, opt


def _take_grads(params, k):
    for i, p in enumerate(params):
        p.grad = 0.1 * (i + 1) - 0.05 * k


def test_an_adam_step_interrupted_anywhere_is_taken_with_its_count_or_not_at_all():
    # The count went up in Python after the C step: a Ctrl-C in between left the
    # parameters and moments moved with the count one short (every later bias
    # correction off, and state_dict() dropped the moments after a first step).
    params, opt = _model_and_adam()
    ref_params, ref_opt = _model_and_adam()
    for k in range(3):
        _take_grads(params, k)
        _take_grads(ref_params, k)
        ref_opt.step()
        for _ in interrupted_at_each_event(opt.step):
            steps = opt.state_dict()["state"].get(0, {}).get("step", 0)
            moved = [p.data for p in params] == [p.data for p in ref_params]
            assert steps == (k + 1 if moved else k)
            if moved:
                break
        assert [p.data for p in params] == [p.data for p in ref_params]
        assert opt.state_dict() == ref_opt.state_dict()


def test_load_state_dict_interrupted_anywhere_leaves_the_old_state_or_the_new():
    # Adam's moments were zeroed, then filled one by one in Python, after the new
    # hyper-parameters were set: a Ctrl-C in between left neither state.
    params, opt = _model_and_adam()
    for k in range(2):
        _take_grads(params, k)
        opt.step()
    new = opt.state_dict()
    new["param_groups"][0].update(lr=0.5, betas=(0.8, 0.9), eps=1e-6)
    for i, entry in new["state"].items():
        entry.update(exp_avg=float(i), exp_avg_sq=float(i) + 0.5, step=7)
    _, fresh = _model_and_adam()
    old = fresh.state_dict()
    for _ in interrupted_at_each_event(lambda: fresh.load_state_dict(new)):
        assert fresh.state_dict() in (old, new)
    assert fresh.state_dict() == new
