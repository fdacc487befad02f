"""The package under test is the installed one, with its compiled extension and the GIL fix."""

import importlib.metadata

import pyautograd
from pyautograd import _ag


def test_imports_the_installed_package_not_the_source_tree():
    assert "site-packages" in pyautograd.__file__, pyautograd.__file__


def test_calls_into_c_keep_the_gil():
    # build_ext.py neutralises cffi's GIL release; without it this returns 0.
    assert _ag.lib.ag_gil_held() == 1


def test_the_version_is_the_distributions():
    # written once, in pyautograd/__init__.py; setuptools reads it from there
    assert pyautograd.__version__ == importlib.metadata.version("pyautograd-arena")
