"""Shared test setup. Tests import the installed package, as users do (see README)."""

import gc
import importlib
import os
import sys

import pytest


def require(module_name, env_flag):
    """Imports an optional reference (torch, graphviz): skipped when it is missing,
    unless the environment sets env_flag (CI does), where missing is a failure."""
    if os.environ.get(env_flag):
        return importlib.import_module(module_name)
    return pytest.importorskip(module_name)


@pytest.fixture
def switch_often():
    """Thread switches every microsecond, so the threads of a test really interleave."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(saved)


@pytest.fixture(autouse=True, scope="module")
def collect_earlier_garbage():
    """Each module starts with the cycles of the modules before it collected, so a GC pass
    that happens to run inside a test (threads allocate a lot) does not free them in the
    middle of that test's count of live nodes."""
    gc.collect()
    yield


@pytest.fixture
def node_limit():
    """Sets a cap on live nodes for one test and always lifts it afterwards. Earlier
    garbage is collected first and the GC is off meanwhile, so that no pass frees
    nodes in the middle of the test's count against the cap."""
    from pyautograd import arena

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield arena.set_node_limit
    finally:
        arena.set_node_limit(0)
        if was_enabled:
            gc.enable()
