"""What the source distribution ships, and what a source tree does on import.

- The sdist's test suite runs where it is unpacked: `pytest --collect-only` there collects
  every tests/test_*.py of this tree, without an error (the helpers, docs, examples, tools
  and benchmark the tests read are shipped).
- The sdist carries LICENSE, its version is the package's `__version__`, and its long
  description has nothing an index page cannot show (relative links, images).
- `import pyautograd` from a source tree without the built extension (a REPL or a script
  in the checkout) raises an ImportError that says so and how to fix it.
"""

import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".hypothesis",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.so",
    "*.o",
    "*.pyd",
    "_ag.c",
)


def source_version():
    """__version__ as written in pyautograd/__init__.py, the one place it is written."""
    text = (ROOT / "pyautograd" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def has_distribution(name):
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def unpacked_sdist(tmp_path_factory):
    """The sdist built from a copy of this tree (the checkout is not written to), unpacked."""
    work = tmp_path_factory.mktemp("sdist")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
    if has_distribution("build"):  # the [test] extra installs it
        command = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(work / "dist")]
    else:
        command = [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(work / "dist")]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (archive,) = (work / "dist").glob("*.tar.gz")
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", **safe)
    (unpacked,) = (work / "unpacked").iterdir()
    return unpacked


def test_the_sdist_test_suite_collects_every_module(unpacked_sdist):
    # As `pytest` run there, but from its parent: `python -m pytest` puts the current
    # directory first on sys.path, where the unpacked sources would shadow the package.
    # A module that skips itself (test_fuzz_torch without torch) shows in the JUnit report.
    report = unpacked_sdist.parent / "collect.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junit-xml={report}",
            unpacked_sdist.name,
        ],
        cwd=unpacked_sdist.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert not re.search(r"\berrors?\b", out.strip().splitlines()[-1]), out
    collected = set(re.findall(r"^(tests/test_\w+\.py)::", done.stdout, re.M))
    skipped = {
        "tests/" + re.search(r"(test_\w+)$", case.get("name")).group(1) + ".py"
        for case in ElementTree.parse(report).iter("testcase")
        if case.find("skipped") is not None
    }
    shipped = {f"tests/{p.name}" for p in (unpacked_sdist / "tests").glob("test_*.py")}
    ours = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    assert shipped == ours, f"not in the sdist: {sorted(ours - shipped)}"
    assert collected | skipped == ours, f"not collected: {sorted(ours - collected - skipped)}\n{out}"


def test_the_sdist_metadata(unpacked_sdist):
    assert (unpacked_sdist / "LICENSE").read_text(encoding="utf-8") == (ROOT / "LICENSE").read_text(encoding="utf-8")
    info = email.message_from_string((unpacked_sdist / "PKG-INFO").read_text(encoding="utf-8"))
    assert info["Version"] == source_version()
    assert info["License-Expression"] == "MIT" and info["License-File"] == "LICENSE"
    description = info.get_payload()
    assert "pip install" in description  # it is the README, ...
    assert "![" not in description  # ... without images
    relative = re.findall(r"\]\((?![a-z]+:)[^)]*\)", description)
    assert not relative, f"relative links in the long description: {relative}"


def source_tree_without_extension(tmp_path):
    """The package's sources as a checkout has them, with no compiled extension."""
    tree = tmp_path / "checkout"
    shutil.copytree(ROOT / "pyautograd", tree / "pyautograd", ignore=NOT_SOURCE)
    for name in ("build_ext.py", "pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, tree / name)
    assert not list((tree / "pyautograd").glob("_ag*"))
    return tree


@pytest.mark.parametrize("how", ["-c", "script"])
def test_importing_from_a_source_tree_without_the_extension_says_why(how, tmp_path):
    tree = source_tree_without_extension(tmp_path)
    (tree / "script.py").write_text("import pyautograd\n")
    # -S: no site-packages, so nothing but the tree can provide pyautograd (an editable
    # install's import hook would otherwise find its own extension)
    run = ["-c", "import pyautograd"] if how == "-c" else ["script.py"]
    done = subprocess.run(
        [sys.executable, "-S", *run],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pyautograd was imported from its source tree"), done.stderr
    assert "circular import" not in last
    for fix in ("Run Python from another directory", "pip install -e ."):
        assert fix in last, last
