"""Several Python threads using the one arena at once. The GIL is the arena's lock
(build_ext.py keeps it held during every C call), so threads may build, differentiate
and drop graphs concurrently, share leaves, and free each other's graphs.
Timing beside a busy thread is a benchmark (bench/bench_core.py), not a test.
"""

import gc
import math
import threading

import pytest

import pyautograd
from pyautograd._ag import lib
from pyautograd.arena import stats
from pyautograd.engine import Value

THREADS = 4


pytestmark = pytest.mark.usefixtures("switch_often")  # tests/conftest.py


def run_threads(target, args_list):
    errors = []

    def guarded(*args):
        try:
            target(*args)
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def neuron_loss(xs, ws, b):
    act = sum((w * x for w, x in zip(ws, xs)), b).tanh()
    return (act - 0.5) ** 2 + act.sigmoid().log()


def compute(seed):
    """One graph from a seed: its value and the grads of its leaves."""
    xs = [Value(math.sin(seed + i)) for i in range(8)]
    ws = [Value(math.cos(seed * 3 + i)) for i in range(8)]
    b = Value(0.1 * seed)
    loss = neuron_loss(xs, ws, b)
    loss.backward()
    return loss.data, [v.grad for v in xs + ws + [b]]


def test_gil_is_held_inside_c_calls():
    # cffi releases the GIL around each call unless build_ext.py's preamble stops it;
    # PyGILState_Check() run inside a call tells which happened.
    assert lib.ag_gil_held() == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(lib.ag_gil_held()))
    t.start()
    t.join()
    assert seen == [1]


def test_threads_build_differentiate_and_drop_at_once():
    seeds = range(40)
    expected = {seed: compute(seed) for seed in seeds}  # one thread, first
    gc.collect()  # earlier tests' cycles, which a GC pass in the threads would free mid-count
    base = stats()["live_nodes"]
    results = {}

    def worker(my_seeds):
        for _ in range(5):
            for seed in my_seeds:
                got = compute(seed)
                assert got == expected[seed], seed
        results[tuple(my_seeds)] = True

    run_threads(worker, [(list(seeds)[k::THREADS],) for k in range(THREADS)])
    assert len(results) == THREADS
    assert stats()["live_nodes"] == base


def test_threads_sharing_leaves_accumulate_every_backward():
    x, w = Value(0.7), Value(-1.3)
    single = (x * w).tanh() + x
    single.backward()
    dx, dw = x.grad, w.grad
    x.grad = w.grad = 0.0
    del single
    calls = 200

    def worker():
        for _ in range(calls):
            y = (x * w).tanh() + x  # each thread its own graph over the shared leaves
            y.backward()  # one C call: its += on x.grad cannot interleave with another's

    run_threads(worker, [()] * THREADS)
    n = THREADS * calls
    # the same n additions in some order: exact up to the rounding of the running sum
    assert math.isclose(x.grad, n * dx, rel_tol=1e-12)
    assert math.isclose(w.grad, n * dw, rel_tol=1e-12)


def test_graph_built_in_one_thread_dropped_in_another():
    gc.collect()  # as above
    base = stats()["live_nodes"]
    handoff = []
    ready, dropped = threading.Event(), threading.Event()
    values = {}

    def builder():
        x = Value(1.5)
        y = x
        for _ in range(10_000):
            y = y * 1.0001 + 0.001
        handoff.append(y)
        values["data"] = y.data
        ready.set()

    def dropper():
        ready.wait()
        (y,) = handoff
        y.backward()
        values["grad_root"] = y.grad
        handoff.clear()
        del y
        dropped.set()

    run_threads(lambda f: f(), [(builder,), (dropper,)])
    assert dropped.is_set() and values["grad_root"] == 1.0
    assert math.isclose(values["data"], 1.5 * 1.0001**10_000 + 0.001 * (1.0001**10_000 - 1) / 0.0001, rel_tol=1e-9)
    assert stats()["live_nodes"] == base


def test_many_threads_dropping_parts_of_one_graph():
    gc.collect()  # earlier tests' cycles, which a GC pass in the threads would free mid-count
    base = stats()["live_nodes"]
    x = Value(2.0)
    roots = [x * float(i) + 1.0 for i in range(400)]
    expected = [r.data for r in roots]
    shared = roots[0]
    branches = [[shared * r for r in roots[k::THREADS]] for k in range(THREADS)]
    del roots

    def drop(branch):
        for b in branch:
            b.backward()
        while branch:
            branch.pop()

    run_threads(drop, [(b,) for b in branches])
    assert shared.data == expected[0]
    assert x.grad != 0.0
    del shared, branches, x
    assert stats()["live_nodes"] == base


def test_modes_stay_per_thread_under_contention():
    flags = []

    def worker(grad_on):
        for _ in range(200):
            if grad_on:
                y = Value(1.0) * 2
                flags.append(len(y._prev) == 2)
            else:
                with pyautograd.no_grad():
                    y = Value(1.0) * 2
                    flags.append(y._prev == set())

    run_threads(worker, [(k % 2 == 0,) for k in range(THREADS)])
    assert len(flags) == THREADS * 200 and all(flags)


# ---- free-threaded CPython: no GIL, no pyautograd ----
# No free-threaded interpreter runs these tests: the decision is a pure function of two
# inputs, tested here with each combination, and the import path with the inputs faked.


@pytest.mark.parametrize(
    "free_threaded_build, gil_enabled, refused",
    [
        (False, True, False),  # an ordinary build: the GIL is always on
        (True, True, False),  # 3.13t / 3.14t with PYTHON_GIL=1 or -X gil=1
        (True, False, True),  # 3.13t / 3.14t as they start: no GIL
    ],
)
def test_the_import_refuses_an_interpreter_running_without_the_gil(free_threaded_build, gil_enabled, refused):
    from pyautograd.engine import _refusal_without_gil

    reason = _refusal_without_gil(free_threaded_build, gil_enabled)
    assert (reason is not None) == refused
    if refused:
        assert "needs the GIL" in reason and "PYTHON_GIL=1" in reason and "-X gil=1" in reason


def test_the_gil_check_reads_the_running_interpreter(monkeypatch):
    import sys
    import sysconfig

    from pyautograd.engine import _gil_refusal

    assert _gil_refusal() is None  # this interpreter has its GIL on
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1 if name == "Py_GIL_DISABLED" else real(name))
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert _gil_refusal() is None
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert "free-threaded" in _gil_refusal()


def test_importing_without_the_gil_raises_import_error_before_anything_is_made():
    import subprocess
    import sys
    import tempfile

    script = (
        "import sys, sysconfig\n"
        "real = sysconfig.get_config_var\n"
        "sysconfig.get_config_var = lambda name: 1 if name == 'Py_GIL_DISABLED' else real(name)\n"
        "sys._is_gil_enabled = lambda: False\n"
        "try:\n"
        "    import pyautograd\n"
        "except ImportError as error:\n"
        "    from pyautograd._ag import lib\n"
        "    print('refused', lib.ag_live_nodes())\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused 0"), result.stdout
    assert "needs the GIL" in result.stdout and "PYTHON_GIL=1" in result.stdout
