"""The documentation is true of the code: README.md and docs/*.md.

- Every ```python block runs on its own, as a reader would run it: written to a file in
  an empty temporary directory and run there in a fresh interpreter, it must exit 0.
  Blocks are self-contained (a block that needs data makes it). A block that needs more
  than pyautograd says so on the line before its fence, `<!-- needs: graphviz -->` or
  `<!-- needs: torch -->`, and is skipped exactly when tests/conftest.py's `require`
  would skip (never in CI, which sets PYAUTOGRAD_REQUIRE_DOT and _TORCH).
- Fences carry a known language: python, bash (shell commands), c, or none (output).
- docs/errors.md's table of bad inputs is what tools/bad_input_table.py prints now, and
  the tool's --write puts it back in place.
- Every relative link and image points at a file that exists, and every #anchor at a
  heading of the page it names.
- README.md stays a front page: at most 250 lines.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ERRORS = ROOT / "docs" / "errors.md"
TOOL = ROOT / "tools" / "bad_input_table.py"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([^`\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NEEDS = re.compile(r"<!--\s*needs:\s*([\w ,]+?)\s*-->\s*\Z")
LANGUAGES = {"python", "bash", "c", ""}
TABLE_START, TABLE_END = "<!-- bad-input-table -->\n", "<!-- /bad-input-table -->"


def fenced_blocks(page):
    """(line, language, code, needs) for each fenced block of page, in order."""
    text = page.read_text(encoding="utf-8")
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        needs = NEEDS.search(text[: m.start()])
        wanted = needs.group(1).replace(",", " ").split() if needs else []
        yield line, m.group(1).strip(), m.group(2), wanted


def python_blocks():
    return [
        pytest.param(code, needs, id=f"{page.relative_to(ROOT)}:{line}")
        for page in PAGES
        for line, language, code, needs in fenced_blocks(page)
        if language == "python"
    ]


def require_dot():
    """graphviz and its dot program: skipped when missing, a failure in CI."""
    require("graphviz", "PYAUTOGRAD_REQUIRE_DOT")
    if shutil.which("dot") is None:
        if os.environ.get("PYAUTOGRAD_REQUIRE_DOT"):
            pytest.fail("PYAUTOGRAD_REQUIRE_DOT is set but Graphviz's `dot` is not on PATH")
        pytest.skip("Graphviz's `dot` program is not installed")


REQUIREMENTS = {
    "graphviz": require_dot,
    "torch": lambda: require("torch", "PYAUTOGRAD_REQUIRE_TORCH"),
    "jax": lambda: require("jax", "PYAUTOGRAD_REQUIRE_JAX"),
}


def test_the_pages_have_python_blocks():
    assert len(python_blocks()) >= 10  # the fence pattern finds them
    for page in PAGES:
        assert page.exists(), page


@pytest.mark.parametrize("code, needs", python_blocks())
def test_python_block_runs_on_its_own(code, needs, tmp_path):
    for name in needs:
        assert name in REQUIREMENTS, f"unknown requirement {name!r}: one of {sorted(REQUIREMENTS)}"
        REQUIREMENTS[name]()
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    # `python block.py` puts tmp_path first on sys.path: the installed package is imported
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the block exited {done.returncode}:\n{done.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_fences_name_a_known_language(page):
    for line, language, _, needs in fenced_blocks(page):
        assert language in LANGUAGES, (
            f"{page.name}:{line}: ```{language}: use ```python, ```bash (shell), ```c or a bare ``` (output)"
        )
        assert not needs or language == "python", f"{page.name}:{line}: needs: on a non-python block"


# ---- the table of bad inputs ----


def tool_output(*args, cwd):
    # run from a fresh process: the memory rows show how many nodes are live
    done = subprocess.run([sys.executable, str(TOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def table_in(text):
    assert TABLE_START in text and TABLE_END in text, (
        f"docs/errors.md must hold the table between {TABLE_START.strip()} and {TABLE_END}"
    )
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]


def test_the_errors_page_shows_what_the_tool_prints_now(tmp_path):
    printed = tool_output(cwd=tmp_path)
    assert printed.startswith("| input | what it gets |\n| --- | --- |\n")
    assert table_in(ERRORS.read_text(encoding="utf-8")) == printed, (
        "docs/errors.md's table of bad inputs is stale: run python tools/bad_input_table.py --write docs/errors.md"
    )


def test_the_tool_writes_the_table_in_place(tmp_path):
    page = ERRORS.read_text(encoding="utf-8")
    stale = page.replace(table_in(page), "| an old table |\n")
    copy = tmp_path / "errors.md"
    copy.write_text(stale, encoding="utf-8")
    tool_output("--write", str(copy), cwd=tmp_path)
    written = copy.read_text(encoding="utf-8")
    assert table_in(written) == tool_output(cwd=tmp_path)
    assert written.replace(table_in(written), "") == stale.replace(table_in(stale), "")


def test_the_tool_refuses_a_page_without_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# no markers here\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(TOOL), "--write", str(page)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1 and "bad-input-table" in done.stderr
    assert page.read_text(encoding="utf-8") == "# no markers here\n"


# ---- links ----

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


def without_code(text):
    return FENCE.sub("", text)


def anchors(page):
    """GitHub's anchors for page's headings: lower case, punctuation dropped, spaces to -."""
    headings = HEADING.findall(without_code(page.read_text(encoding="utf-8")))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings_that_exist(page):
    for target in LINK.findall(without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name} links to {target}: no such heading"


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


# ---- the op lists ----
# README.md, docs/api.md, docs/how-it-works.md and docs/differences.md each list the ops
# of the C table between <!-- op-list --> and <!-- /op-list -->: the README as words in
# `code spans`, the docs as a table with one row per op, the op's name first.

OP_LIST_START, OP_LIST_END = "<!-- op-list -->", "<!-- /op-list -->"
OP_LIST_PAGES = [README, ROOT / "docs" / "api.md", ROOT / "docs" / "how-it-works.md", ROOT / "docs" / "differences.md"]


def op_list(page):
    text = page.read_text(encoding="utf-8")
    assert text.count(OP_LIST_START) == 1 and text.count(OP_LIST_END) == 1, (
        f"{page.name} must hold one op list between {OP_LIST_START} and {OP_LIST_END}"
    )
    return text.split(OP_LIST_START, 1)[1].split(OP_LIST_END, 1)[0]


def table_rows(block):
    """The cells of a markdown table's body rows (no header, no |---| line)."""
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def ops_named(block):
    """The ops a list names: a table's first column, or else every word in `code spans`."""
    rows = table_rows(block)
    if rows:
        return [row[0].strip("`") for row in rows]
    return [word for span in re.findall(r"`([^`]+)`", block) for word in span.split()]


def op_list_problems(block):
    from pyautograd.engine import OP_NAMES

    named = ops_named(block)
    problems = [f"no row for {op!r}" for op in OP_NAMES if op not in named]
    if table_rows(block):
        problems += [
            f"{name!r} is not an op of the table, or is there twice"
            for name in named
            if name not in OP_NAMES or named.count(name) > 1
        ]
    return problems


@pytest.mark.parametrize("page", OP_LIST_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_op_of_the_table_is_in_the_pages_op_list(page):
    problems = op_list_problems(op_list(page))
    assert not problems, f"{page.relative_to(ROOT)}'s op list: {problems}"


def test_the_docs_op_lists_are_tables():
    for page in OP_LIST_PAGES[1:]:
        assert table_rows(op_list(page)), page


@pytest.mark.parametrize("page", OP_LIST_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_missing_op_is_caught(page):
    from pyautograd.engine import OP_NAMES

    block = op_list(page)
    for op in OP_NAMES:
        if table_rows(block):
            without = "\n".join(line for line in block.splitlines() if not line.strip().startswith(f"| `{op}` |"))
        else:
            without = re.sub(rf"\b{op}\b", "", block)
        assert without != block and f"no row for {op!r}" in op_list_problems(without), op


def test_how_it_works_says_where_python_reaches_each_op():
    from pyautograd.engine import OP_NAMES, OP_PYTHON

    rows = table_rows(op_list(ROOT / "docs" / "how-it-works.md"))
    shown = {row[0].strip("`"): (row[1].strip("`"), row[2].strip("`")) for row in rows}
    # the structural ops (nodes.h) have no Python slot; the elementwise ones are ops.h rows
    assert shown == {op: ("ops.h", python) if python else ("nodes.h", "—") for op, python in zip(OP_NAMES, OP_PYTHON)}
    assert [row[0].strip("`") for row in rows] == list(OP_NAMES)  # in table order
