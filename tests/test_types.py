"""Type checkers see pyautograd's API (pyautograd/py.typed, engine.pyi, __init__.pyi and the
annotations of the pure-Python modules).

mypy --strict runs in a subprocess, in a temporary directory, against the installed package:
on a program that uses every public name (it must pass, and it runs too), on expressions
whose inferred types are checked, and on misuse it must flag. stubtest compares the stubs
of the C type with the runtime, so a Value method added in C without its stub fails here.
Every ```python block of README.md and docs/ must pass mypy --strict and pyright (in its
default mode, as an editor runs it); pyright is in the [test] extra, and its test is
skipped only where it is not installed.
"""

import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pyautograd

USAGE = '''
"""Every public name, used as the README uses it."""
import pyautograd
from pyautograd import Value, arena, detect_anomaly, is_grad_enabled, losses, no_grad, viz
from pyautograd.engine import Value as EngineValue
from pyautograd.nn import MLP, Layer, Module, Neuron
from pyautograd.optim import SGD, Adam, Optimizer
from pyautograd.viz import GraphSummary

x = Value(2.0, label="x")
y = Value(3)
z = x * y + y + x.tanh()
w = (-x - 1 + 2.5) / y * (1 / x) ** 2 + 2 ** x + x ** y - 4 * x
for u in (z.relu(), z.exp(), z.log(), z.sigmoid(), w):
    u.backward()
again: float = z.forward()
x.data -= 0.1 * x.grad
x.grad = 0
x.label = "input"
x.m = 0.0                                          # attributes of one's own, as optimizers keep
x.m = 0.9 * x.m + 0.1 * x.grad
children: set[Value] = z._prev
op: str = z._op
assert isinstance(z, EngineValue) and x.label == "input"


# micrograd's hand-made node, with its own chain-rule step
def square(v: Value) -> Value:
    out = Value(v.data ** 2, (v,), "sq")

    def _backward() -> None:
        v.grad += 2 * v.data * out.grad

    out._backward = _backward
    return out


sq = square(x)
sq.grad = 1.0
sq._backward()
sq._backward = None
by_numbers = Value(1.0, [x, y], [0.5, 0.25])      # microgpt's local derivatives
by_keyword = Value(1.0, (x,), local_grads=[2.0])

total: Value = pyautograd.sum([x, y, 1.0], start=0)
act: Value = pyautograd.dot([x, y], (1.0, 2), start=Value(0.5))
probs: list[Value] = pyautograd.softmax([x, y, 0.0])
logp: list[Value] = pyautograd.log_softmax(v for v in (x, y))

with no_grad():
    assert not is_grad_enabled()
with detect_anomaly():
    (x * y).backward()


@no_grad
def evaluate(v: Value) -> float:
    return (v * 2).data


@detect_anomaly()
def logged(v: Value) -> Value:
    return v.log()


assert evaluate(x) == 2 * x.data and logged(y).data > 0

model = MLP(2, [4, 1])
score: Value = model([1.0, x])   # one output: a Value; typed Any, as micrograd's is dynamic
(1 + model([x, 2.0])).backward()  # micrograd's way: used as it comes
layer = Layer(2, 3, nonlin=False)
outs: list[Value] = layer([0.5, -1.0])
neuron = Neuron(2)
single: Value = neuron([1.0, 2.0])
modules: list[Module] = [model, layer, neuron]
for module in modules:
    module.zero_grad()
params: list[Value] = model.parameters()

sgd = SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
adam = Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, decoupled=True)
for opt in (sgd, adam):
    loss = (losses.hinge([score], [1]) + losses.mse(score, 0.5)
            + losses.binary_cross_entropy_with_logits([score], [1.0])
            + losses.cross_entropy([[x, y, 0.0]], [2]) + losses.cross_entropy([x, y], 0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    opt.lr = opt.lr * 0.5
optimizers: list[Optimizer] = [sgd, adam]

source: str = viz.to_dot(z, rankdir="TB", max_nodes=None, expand_dot=True)
shape: GraphSummary = viz.summary(z)
counts: dict[str, int] = shape.ops
print(shape.nodes, shape.depth, str(shape))
bundle: dict[str, str] = viz.mimebundle(z, max_nodes=10)
viz.display_graphs()
viz.display_graphs(False)
try:
    viz.draw_dot(z, format="png", rankdir="LR", max_nodes=100).source
except ImportError:  # the graphviz package is optional ([viz])
    pass

held: dict[str, int] = arena.stats()
arena.set_node_limit(0)
size: int = arena.graph_size(z)
print("usage: ok", held["live_nodes"], size)
'''

# Higher-order derivatives (pyautograd/autograd.py)
HIGHER = """
import pyautograd
from pyautograd import GradcheckError, Value

x = Value(1.5)
y = x ** 3 + x.tanh()
(dy,) = pyautograd.grad(y, [x], create_graph=True)
(d2y,) = pyautograd.grad(dy, x)
second: float = d2y.data


def f(a: Value, b: Value) -> Value:
    return a * b.tanh() + a ** 2


passed: bool = pyautograd.gradcheck(f, [Value(0.3), Value(-0.7)], eps=1e-6)
try:
    passed = passed and pyautograd.gradgradcheck(f, (Value(0.3), Value(-0.7)), atol=1e-5)
except GradcheckError as error:
    raise SystemExit(str(error))
print("higher: ok", second, passed)
"""

# expression -> what mypy reveals, after the set-up lines
REVEAL_SETUP = """
import pyautograd
from pyautograd import Value, arena, losses, no_grad, viz
from pyautograd.nn import MLP, Layer, Neuron
from pyautograd.optim import SGD

x = Value(1.0)


@no_grad
def f(v: Value, k: int = 2) -> float:
    return v.data * k
"""
V = "pyautograd.engine.Value"
REVEALS = {
    "Value(1.0) + 2": V,
    "2 * Value(1.0)": V,
    "1.5 - x": V,
    "x / 3": V,
    "2 ** x": V,
    "x ** x": V,
    "-x": V,
    "x.tanh()": V,
    "Value(1.0).data": "float",
    "x.grad": "float",
    "x.label": "str",
    "x._prev": f"set[{V}]",
    "x._op": "str",
    "x.m": "Any",
    "x.backward()": "None",
    "x.forward()": "float",
    "pyautograd.sum([x, 1.0])": V,
    "pyautograd.softmax([x, 2.0])": f"list[{V}]",
    "pyautograd.grad(x * x, [x])": f"list[{V}]",
    "pyautograd.gradcheck(lambda a: a * a, [x])": "bool",
    "MLP(2, [3, 1])([1.0, 2.0])": "Any",
    "Layer(2, 3)([x, 2.0])": "Any",
    "Neuron(2)([1.0, 2.0])": V,
    "Neuron(2).parameters()": f"list[{V}]",
    "SGD([x], lr=0.1).lr": "float",
    "losses.mse([x], [1.0])": V,
    "viz.summary(x).ops": "dict[str, int]",
    "viz.to_dot(x)": "str",
    "arena.stats()": "dict[str, int]",
    "f": "def (v: pyautograd.engine.Value, k: int =) -> float",
    "no_grad()": "pyautograd.modes.no_grad",
}

# Each line marked `# E` must get an error, and no other line may.
MISUSE = """
import pyautograd
from pyautograd import Value
from pyautograd.nn import MLP
from pyautograd.optim import SGD

v = Value(1.0)
v + "x"  # E
"x" - v  # E  ("x" * v passes mypy: __getattr__ lets Value pass for SupportsIndex)
Value("1.0")  # E
v.data = "2"  # E
v._op = "+"  # E
v._prev = set()  # E
v.grad = "0"  # E  (attributes of one's own are Any; the Value's own keep their types)
v.relu(0)  # E
v._backward = 1  # E
pyautograd.grad(v, [1.0])  # E
pyautograd.gradcheck(lambda a: a * a, [0.5])  # E  (inputs are Values)
pyautograd.sum(["a"])  # E
SGD([v], lr="0.1")  # E
MLP(2, [3])("ab")  # E
"""


def _mypy_setup(tmp_path):
    """The environment for mypy on the installed package, and its config in tmp_path.

    mypy finds a package in site-packages; an editable install is found through an import
    hook mypy can't follow, so there its source directory is given as MYPYPATH. Errors
    inside the package's own files are not under test (mypy is silent on installed
    packages too): only what a user's code sees of it."""
    (tmp_path / "mypy.ini").write_text("[mypy]\n[mypy-pyautograd.*]\nignore_errors = True\n")
    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    root = Path(pyautograd.__file__).resolve().parent.parent
    if str(root) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        env["MYPYPATH"] = str(root)
    return env


def _mypy(tmp_path, files):
    """mypy --strict over files {name: source}; returns {name: [(line, kind, message)]}."""
    for name, source in files.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
            *files,
        ],
        cwd=tmp_path,
        env=_mypy_setup(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = {name: [] for name in files}
    for line in run.stdout.splitlines():
        match = re.match(r"(\w+\.py):(\d+): (error|note): (.*)", line)
        assert match and match[1] in found, f"unexpected mypy output:\n{run.stdout}{run.stderr}"
        found[match[1]].append((int(match[2]), match[3], match[4]))
    assert run.returncode in (0, 1), run.stdout + run.stderr
    return found


def _normalised(revealed):
    """What mypy reveals, as mypy 2 prints it: older versions write builtins.int for int
    and Union[A, B] for A | B."""
    revealed = revealed.replace("builtins.", "")
    if revealed.startswith("Union[") and revealed.endswith("]"):
        parts, depth, start = [], 0, 6
        for i, c in enumerate(revealed[6:-1], 6):
            depth += (c == "[") - (c == "]")
            if c == "," and depth == 0:
                parts.append(revealed[start:i].strip())
                start = i + 1
        return " | ".join(parts + [revealed[start:-1].strip()])
    return revealed


def test_mypy_strict_passes_on_every_public_name_flags_misuse_and_infers_the_types(tmp_path):
    lines = REVEAL_SETUP.splitlines()
    first = len(lines) + 1
    reveal = "\n".join(lines + [f"reveal_type({expression})" for expression in REVEALS]) + "\n"
    found = _mypy(tmp_path, {"usage.py": USAGE, "higher.py": HIGHER, "reveal.py": reveal, "misuse.py": MISUSE})

    for name in ("usage.py", "higher.py"):
        assert found[name] == [], f"mypy --strict on {name}:\n" + "\n".join(map(str, found[name]))

    revealed = {}
    for line, kind, message in found["reveal.py"]:
        match = re.fullmatch(r'Revealed type is "(.*)"', message)
        assert kind == "note" and match, (line, kind, message)
        revealed[list(REVEALS)[line - first]] = _normalised(match[1])
    assert revealed == REVEALS

    marked = {i for i, text in enumerate(textwrap.dedent(MISUSE).splitlines(), 1) if "# E" in text}
    flagged = {line for line, kind, _ in found["misuse.py"] if kind == "error"}
    assert flagged == marked, found["misuse.py"]


def test_the_usage_program_runs(tmp_path):
    """What the usage program does is real: it runs against the installed package."""
    for i, source in enumerate([USAGE, HIGHER]):
        path = tmp_path / f"program{i}.py"
        path.write_text(textwrap.dedent(source))
        run = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert ": ok" in run.stdout


def test_the_stubs_match_the_runtime(tmp_path):
    """mypy's stubtest: every name and signature in engine.pyi and __init__.pyi exists at
    runtime with that shape (C methods show only their names), and the C type has nothing
    the stub lacks. The modules typed inline are their own stubs."""
    allow = [
        r"pyautograd\.(arena|export|functional|losses|modes|nn|optim|viz)(\..*)?",
        r"pyautograd\.(no_grad|detect_anomaly)\..*",  # modes.py's, re-exported
        # stub-only, so that attributes of one's own (p.m) type-check; at runtime
        # they live in the instance's __dict__
        r"pyautograd\.engine\.Value\.__getattr__",
    ]
    (tmp_path / "allowlist.txt").write_text("\n".join(allow) + "\n")
    env = _mypy_setup(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "pyautograd",
            "--mypy-config-file",
            "mypy.ini",
            "--allowlist",
            "allowlist.txt",
            "--ignore-unused-allowlist",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_op_tables_stubs_are_current():
    """The stubs' op blocks are written from the op table (tools/op_stubs.py): a new row
    needs no hand edit, and a stale block fails here."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "op_stubs.py"
    done = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---- every python block of README.md and docs/ type-checks ----


def _doc_blocks():
    """{file name: code} for every ```python block of README.md and docs/*.md, named after
    its page and line (README_99.py) so that a report points at it. A block that needs an
    optional package (torch, jax: its `needs:` line) is checked where that package is
    installed, and always where CI requires the package (PYAUTOGRAD_REQUIRE_TORCH, ..._JAX)."""
    from test_docs import PAGES, ROOT, fenced_blocks

    def checkable(needs):
        return all(
            importlib.util.find_spec(name) is not None or os.environ.get(f"PYAUTOGRAD_REQUIRE_{name.upper()}")
            for name in needs
        )

    blocks = {}
    for page in PAGES:
        for line, language, code, needs in fenced_blocks(page):
            if language == "python" and checkable(needs):
                stem = re.sub(r"\W", "_", str(page.relative_to(ROOT).with_suffix("")))
                blocks[f"{stem}_{line}.py"] = code
    assert len(blocks) >= 10
    return blocks


def test_the_docs_python_blocks_pass_mypy_strict(tmp_path):
    found = _mypy(tmp_path, _doc_blocks())
    failing = {name: problems for name, problems in found.items() if problems}
    assert not failing, "mypy --strict on the docs' python blocks:\n" + "\n".join(
        f"{name}:{line}: {kind}: {message}" for name, problems in failing.items() for line, kind, message in problems
    )


def test_the_docs_python_blocks_pass_pyright(tmp_path):
    if importlib.util.find_spec("pyright") is None:
        pytest.skip("pyright is not installed (pip install pyright, in the [test] extra)")
    blocks = _doc_blocks()
    for name, code in blocks.items():
        (tmp_path / name).write_text(code)
    # pyright's default mode; the installed package is found through this interpreter, a
    # source tree (not in site-packages) through extraPaths, as for mypy
    config = {"pythonVersion": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    root = Path(pyautograd.__file__).resolve().parent.parent
    if str(root) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        config["extraPaths"] = [str(root)]
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")  # no version check online
    run = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable, *blocks],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(run.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert report["summary"]["filesAnalyzed"] == len(blocks), run.stdout + run.stderr
    assert not errors, "pyright on the docs' python blocks:\n" + "\n".join(
        f"{Path(d['file']).name}:{d['range']['start']['line'] + 1}: {d['message']}" for d in errors
    )
    assert run.returncode == 0, run.stdout + run.stderr
