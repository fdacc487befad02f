"""Shared test setup. Tests import the installed package, as users do (see README)."""
import os

import pytest


def require(module_name, env_flag):
    """Imports an optional reference (torch); skips without it, unless CI sets env_flag."""
    if os.environ.get(env_flag):
        return pytest.importorskip(module_name) if False else __import__(module_name)
    return pytest.importorskip(module_name)
