"""Shared test setup. Tests import the installed package, as users do (see README)."""

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
