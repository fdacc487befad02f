"""What anomaly detection and no_grad cost per op: the default path, the same path after
detect_anomaly() was switched on and off again, and the path inside each mode, with the
ratio of each to the default. A benchmark, not a test: it asserts nothing.

The modes are per-thread flags in C, so the default path should pay nothing measurable
for them: the "after on/off" rows should read 1.00x within noise.
Usage: python bench/bench_modes.py [--quick]
"""

import statistics
import sys
import timeit

import pyautograd
from pyautograd.engine import Value

QUICK = "--quick" in sys.argv
REPEATS = 5 if QUICK else 15
NUMBER = 20_000 if QUICK else 200_000


def workloads():
    a, b = Value(1.25), Value(-0.5)
    x = Value(0.3)

    def small_graph():  # a micrograd-sized expression, built and differentiated
        y = ((a * b + x).tanh() * a + b.exp()).relu()
        y.backward()

    return {
        "a + b": (lambda: a + b, NUMBER),
        "a.tanh()": (lambda: a.tanh(), NUMBER),
        "a * 2.0": (lambda: a * 2.0, NUMBER),
        "small graph + backward": (small_graph, NUMBER // 10),
    }


def per_call_ns(fn, number):
    """Median over REPEATS of the time per call, in ns."""
    runs = timeit.repeat(fn, number=number, repeat=REPEATS)
    return statistics.median(runs) / number * 1e9


def measure(label, enter):
    results = {}
    for name, (fn, number) in workloads().items():
        with enter():
            results[name] = per_call_ns(fn, number)
    return label, results


class Default:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main():
    measure("warm-up", Default)  # first calls pay for caches and lazy set-up: not measured
    rows = [measure("default", Default)]
    with pyautograd.detect_anomaly():  # switch it on once and off again
        Value(1.0) + 1.0
    rows.append(measure("default, after anomaly on/off", Default))
    rows.append(measure("inside detect_anomaly()", pyautograd.detect_anomaly))
    rows.append(measure("inside no_grad()", pyautograd.no_grad))
    rows.append(measure("default again", Default))
    names = list(rows[0][1])
    base = rows[0][1]
    width = max(len(label) for label, _ in rows)
    print(f"{'':{width}}  " + "  ".join(f"{n:>28}" for n in names))
    for label, results in rows:
        cells = [f"{results[n]:8.0f} ns ({results[n] / base[n]:4.2f}x)" for n in names]
        print(f"{label:{width}}  " + "  ".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
