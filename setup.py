# setuptools refuses `cffi_modules` in pyproject.toml; this file only passes it on.
from setuptools import setup

setup(cffi_modules=["build_ext.py:ffibuilder"])
