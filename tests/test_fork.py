"""fork() and the free loop. The loop that frees dead nodes calls Python (unpinning a
Value), and Python may switch threads there: another thread can fork while the loop is
inside that Python. The child has only the forking thread, and once inherited a loop
nobody ran (`releasing` set, a half-run worklist): it never freed a node again. Now the
child finishes that loop (csrc/arena.c, "fork"), and a fork from inside the loop's own
Python leaves the loop to carry on in the child as in the parent.
"""

import os
import threading
import warnings
import weakref

import pytest

from pyautograd.arena import stats
from pyautograd.engine import Value

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHAIN = 200_000


def live():
    return stats()["live_nodes"]


def fork():
    with warnings.catch_warnings():  # 3.12+: forking with threads running is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def child_checks(base):
    """In the child: the exit status says whether freeing works (0) or what failed."""
    try:
        if live() > base + 1:  # at most the node whose Value's release was cut off
            return 10
        x = Value(2.0)
        y = (x * x + x).tanh()
        for _ in range(1000):
            y = y * 1.0
        y.backward()
        if live() <= base + 1:
            return 11
        del x, y
        return 0 if live() <= base + 1 else 12
    except BaseException:
        return 13


def graph_whose_free_loop_calls(callback):
    """A graph whose death calls callback from inside the free loop: its root's inputs
    are a long chain (first, so the worklist holds it when callback runs) and a Value
    with Python state that only its pin keeps, whose weakref callback that is."""
    leaf = Value(0.5)
    chain = leaf
    for _ in range(CHAIN):
        chain = chain * 1.0
    held = Value(1.0)
    held.note = "state"  # pinned while the root uses it
    root = chain + held
    ref = weakref.ref(held, lambda _: callback())
    return root, ref


def wait_for(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_fork_while_another_thread_is_in_the_free_loop_leaves_the_child_able_to_free():
    base = live()
    inside, resume = threading.Event(), threading.Event()

    def block():
        inside.set()
        resume.wait(60)

    root, ref = graph_whose_free_loop_calls(block)
    holder = [root]
    del root
    dropper = threading.Thread(target=holder.clear)  # its free loop stops in block()
    dropper.start()
    assert inside.wait(60)
    assert live() > base + CHAIN  # the chain waits on the loop's worklist
    pid = fork()
    if pid == 0:
        os._exit(child_checks(base))
    resume.set()
    dropper.join(60)
    assert wait_for(pid) == 0
    assert ref() is None and live() == base  # the parent's loop finished as usual


def test_a_fork_from_inside_the_free_loop_lets_the_loop_carry_on_in_the_child():
    base = live()
    forked = []
    root, ref = graph_whose_free_loop_calls(lambda: forked.append(fork()))
    del root  # the callback forks from inside this thread's own free loop
    pid = forked[0]
    if pid == 0:  # the child: the loop went on when the callback returned
        os._exit(0 if live() == base and child_checks(base) == 0 else 20)
    assert wait_for(pid) == 0
    assert live() == base


def test_the_fork_hook_does_nothing_without_a_fork():
    from pyautograd._ag import lib

    x = Value(3.0)
    y = x * x
    lib.ag_after_fork_in_child()  # no fork happened: nothing to finish, nothing reset
    y.backward()
    assert x.grad == 6.0
    base = live()
    del y
    assert live() == base - 1


def child_status_then_resume(check, resume, thread):
    """Forks while a sweep waits in its rule (sweep_waiting_in_a_rule); the child exits
    with 0 if check() is true, 1 if not, 2 if it raised. Returns that status, once the
    parent's sweep is resumed and its thread joined (whatever happened)."""
    pid = fork()
    if pid == 0:
        try:
            status = 0 if check() else 1
        except BaseException:
            status = 2
        os._exit(status)
    try:
        return wait_for(pid)
    finally:
        resume.set()
        thread.join()


def sweep_waiting_in_a_rule(x, run):
    """out = 3 x^2 through a Python rule, and other = 5 x^2 over the same x^2; run(out) in
    a thread, which is inside the rule on return (resume lets it finish). Returns
    (shared, out, other, thread, resume)."""
    inside, resume = threading.Event(), threading.Event()
    shared = x * x
    out = Value(shared.data * 3.0, (shared,), "triple")

    def _backward():
        inside.set()
        resume.wait(60)
        shared.grad += 3.0 * out.grad

    out._backward = _backward
    t = threading.Thread(target=run, args=(out,))
    t.start()
    assert inside.wait(60)
    return shared, out, shared * 5.0, t, resume


def test_a_fork_while_another_thread_sweeps_with_a_python_rule_frees_its_nodes_in_the_child():
    """A sweep that runs Python rules owns its nodes until it ends (a second sweep over
    them refuses). In the child, the thread that ran it does not exist: its marks go, so
    the child can differentiate the same graph."""
    x = Value(2.0)
    shared, out, other, t, resume = sweep_waiting_in_a_rule(x, lambda out: out.backward())
    with pytest.raises(RuntimeError, match="another backward"):
        other.backward()  # in the parent the sweep is still running

    def in_the_child():
        other.backward()
        return x.grad == 20.0

    assert child_status_then_resume(in_the_child, resume, t) == 0
    assert x.grad == 12.0  # the parent's sweep, undisturbed


@pytest.mark.parametrize("call", ["backward", "grad"])
def test_grads_from_before_a_sweep_cut_off_by_a_fork_are_back_in_the_child(call):
    """The sweep zeroes the grads under its root and keeps the earlier ones aside, to add
    back (backward) or put back (grad) when it ends; in the child it never ends, so the
    fork puts them back: they once read 0 there, and the next backward lost them."""
    from pyautograd import grad

    x = Value(2.0)
    x.grad = 7.0  # from an earlier backward()
    run = (lambda out: out.backward()) if call == "backward" else (lambda out: grad(out, [x]))
    shared, out, other, t, resume = sweep_waiting_in_a_rule(x, run)

    def in_the_child():
        before = (x.grad, shared.grad, out.grad)
        other.backward()
        return before == (7.0, 0.0, 0.0) and x.grad == 27.0

    assert child_status_then_resume(in_the_child, resume, t) == 0
    assert x.grad == (7.0 + 12.0 if call == "backward" else 7.0)  # the parent's, undisturbed
