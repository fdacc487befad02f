"""The README's example: examples/readme_example.py prints numbers computed here
independently (with math.tanh), and README.md shows that very code and that very output
(the block between <!-- example-output --> and <!-- /example-output -->).
"""

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "readme_example.py"
README = ROOT / "README.md"


def run_example():
    # `python path/to/script.py` puts examples/ first on sys.path, not the source tree,
    # so the installed package is the one imported
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def expected_output():
    x, y = 2.0, 3.0
    z = x * y + y + math.tanh(x)
    dz_dx = y + (1 - math.tanh(x) ** 2)
    dz_dy = x + 1
    return f"z = {z:.4f}\ndz/dx = {dz_dx:.4f}\ndz/dy = {dz_dy:.4f}\n"


def readme_block(start_marker, end_marker):
    text = README.read_text(encoding="utf-8")
    assert start_marker in text and end_marker in text, (
        f"README.md must hold the example's output between {start_marker} and {end_marker}"
    )
    inside = text.split(start_marker, 1)[1].split(end_marker, 1)[0]
    fenced = re.fullmatch(r"\s*```[a-z]*\n(.*?)```\s*", inside, flags=re.S)
    assert fenced, f"expected one fenced code block between the markers, got {inside!r}"
    return fenced.group(1)


def test_example_prints_the_right_numbers():
    assert run_example() == expected_output()


def test_readme_shows_the_real_output():
    assert readme_block("<!-- example-output -->", "<!-- /example-output -->") == run_example()


def test_readme_shows_the_example_code():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = SCRIPT.read_text(encoding="utf-8")
    body = re.sub(r'\A""".*?"""\n', "", code, flags=re.S).strip() + "\n"
    assert body in blocks, "README.md's ```python blocks do not include examples/readme_example.py's code"


def micrograd_readme_example():
    """The example of micrograd's own README, as the installed micrograd 0.1.0 ships it."""
    import importlib.metadata

    description = importlib.metadata.metadata("micrograd").get_payload()
    return re.search(r"```python\n(from micrograd\.engine import Value\n.*?)```", description, re.S).group(1)


def test_readme_runs_micrograds_own_example_unchanged(tmp_path):
    # README.md's block is micrograd's README example with only the import switched, and
    # prints what micrograd prints (24.7041 138.8338 645.5773)
    ours = readme_block("<!-- micrograd-example -->", "<!-- /micrograd-example -->")
    theirs = micrograd_readme_example()
    assert ours == theirs.replace("from micrograd.engine import", "from pyautograd.engine import", 1)

    def run(code):  # from an empty directory: `-c` puts the current one first on sys.path
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run(ours) == run(theirs) == "24.7041\n138.8338\n645.5773\n"
