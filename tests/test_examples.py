"""The examples run as a user runs them (subprocesses): moons reaches 100% training
accuracy in its 100 steps, --replay prints the same losses as rebuilding, the plots are
written, and --help and --no-plot work without the [examples] extra installed; newton
reaches Rosenbrock's minimum within 1e-10 and says so in its exit code.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import require

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
MOONS = os.path.join(EXAMPLES, "moons.py")
MULTICLASS = os.path.join(EXAMPLES, "multiclass.py")

# Runs an example with tqdm and matplotlib made unimportable, as without the extra; the
# script's folder replaces -c's '' on sys.path, as when the script is run by its path.
WITHOUT_EXTRAS = (
    "import os, runpy, sys; sys.modules['tqdm'] = sys.modules['matplotlib'] = None; "
    "sys.argv = sys.argv[1:]; sys.path[0] = os.path.dirname(sys.argv[0]); "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run(*args, without_extras=False, check=True):
    command = [sys.executable]
    command += ["-c", WITHOUT_EXTRAS] if without_extras else []
    result = subprocess.run(command + list(args), capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def step_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("step ")]


def final_accuracy(stdout):
    return float(re.search(r"final loss \S+, accuracy ([\d.]+)%", stdout).group(1))


def test_moons_reaches_100_percent_in_100_steps():
    out = run(MOONS, "--no-plot").stdout
    assert final_accuracy(out) == 100.0


def test_moons_replay_prints_the_rebuilding_losses():
    rebuilt = step_lines(run(MOONS, "--steps", "25", "--no-plot", "--verbose").stdout)
    replayed = step_lines(run(MOONS, "--steps", "25", "--no-plot", "--verbose", "--replay").stdout)
    assert len(rebuilt) == 25
    assert replayed == rebuilt


def test_multiclass_runs_and_learns():
    out = run(MULTICLASS, "--steps", "60", "--no-plot", "--verbose").stdout
    losses = [float(re.match(r"step \d+ loss (\S+),", line).group(1)) for line in step_lines(out)]
    assert len(losses) == 60
    assert losses[-1] < 0.6 * losses[0]
    assert final_accuracy(out) > 60


@pytest.mark.parametrize("script, png", [(MOONS, "moons.png"), (MULTICLASS, "spirals.png")])
def test_plots_are_written(tmp_path, script, png):
    require("matplotlib", "PYAUTOGRAD_REQUIRE_MATPLOTLIB")
    path = tmp_path / png
    out = run(script, "--steps", "3", "--out", str(path)).stdout
    assert str(path) in out
    with open(path, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script, png", [(MOONS, "moons.png"), (MULTICLASS, "spirals.png")])
def test_by_default_plots_go_to_the_temporary_directory_not_the_current_one(tmp_path, script, png):
    # run from a folder standing for the checkout: nothing may appear there
    require("matplotlib", "PYAUTOGRAD_REQUIRE_MATPLOTLIB")
    here, temp = tmp_path / "checkout", tmp_path / "temp"
    here.mkdir()
    temp.mkdir()
    out = subprocess.run(
        [sys.executable, script, "--steps", "1"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TMPDIR=str(temp)),
    )
    assert out.returncode == 0, out.stderr
    assert list(here.iterdir()) == []
    assert f"written to {temp / png}" in out.stdout  # the whole path, printed
    assert (temp / png).read_bytes().startswith(b"\x89PNG")


def test_draw_graph_writes_to_the_temporary_directory_by_default(tmp_path):
    # its pictures' copies in docs/ are tracked: only --out docs may rewrite them
    require("graphviz", "PYAUTOGRAD_REQUIRE_DOT")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` program is not installed")
    here, temp = tmp_path / "checkout", tmp_path / "temp"
    here.mkdir()
    temp.mkdir()
    docs = os.path.join(EXAMPLES, "..", "docs")
    before = {name: os.stat(os.path.join(docs, name)).st_mtime_ns for name in os.listdir(docs)}
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "draw_graph.py")],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TMPDIR=str(temp)),
    )
    assert out.returncode == 0, out.stderr
    for fmt in ("svg", "png"):
        assert f"wrote {temp / f'seed_graph.{fmt}'}" in out.stdout
        assert (temp / f"seed_graph.{fmt}").stat().st_size > 0
    assert list(here.iterdir()) == []
    assert {name: os.stat(os.path.join(docs, name)).st_mtime_ns for name in os.listdir(docs)} == before


@pytest.mark.parametrize("script", [MOONS, MULTICLASS])
def test_without_the_examples_extra(script, tmp_path):
    help_text = run(script, "--help", without_extras=True).stdout
    assert "--no-plot" in help_text and "--steps" in help_text
    plain = run(script, "--steps", "2", "--no-plot", without_extras=True)
    assert "final loss" in plain.stdout
    no_plot = run(script, "--steps", "1", "--out", str(tmp_path / "x.png"), without_extras=True, check=False)
    assert no_plot.returncode == 2
    assert "--no-plot" in no_plot.stderr and not (tmp_path / "x.png").exists()


def test_bad_arguments_are_refused():
    result = run(MOONS, "--steps", "0", check=False)
    assert result.returncode == 2 and "--steps" in result.stderr


NEWTON = os.path.join(EXAMPLES, "newton.py")


def test_newton_reaches_the_rosenbrock_minimum():
    out = run(NEWTON).stdout
    steps = [
        re.match(r"step (\d+): x = (\S+), y = (\S+), f = (\S+), \|grad\| = (\S+), Hessian", line)
        for line in step_lines(out)
    ]
    assert steps and all(steps)
    assert [int(s.group(1)) for s in steps] == list(range(len(steps)))
    assert (float(steps[0].group(2)), float(steps[0].group(3))) == (-1.2, 1.0)
    assert "Hessian [[1330, 480], [480, 200]]" in step_lines(out)[0]  # the exact Hessian at the start
    x, y = float(steps[-1].group(2)), float(steps[-1].group(3))
    assert abs(x - 1) <= 1e-10 and abs(y - 1) <= 1e-10
    assert len(steps) <= 15  # Newton's quadratic convergence, not a crawl
    assert out.splitlines()[-1].startswith("converged in")


def test_newton_exit_code_says_whether_it_converged():
    assert run(NEWTON, "--max-steps", "2", check=False).returncode == 1
    assert run(NEWTON, "--start", "2", "-1").returncode == 0
    assert run(NEWTON, "--max-steps", "0", check=False).returncode == 2


MICROGPT = os.path.join(EXAMPLES, "microgpt.py")


def test_microgpt_trains_the_same_on_pyautograd_and_on_its_pure_python_value():
    # the same program, written for micrograd-style Values, on both engines: the same
    # losses (every op is an IEEE operation done in the same order on both)
    import importlib.util

    spec = importlib.util.spec_from_file_location("microgpt", MICROGPT)
    microgpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(microgpt)
    from pyautograd.engine import Value

    ours = microgpt.train(Value, 3)
    theirs = microgpt.train(microgpt.PyValue, 3)
    assert all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(ours, theirs)), (ours, theirs)
    assert 3.0 < ours[0] < 3.6  # about ln(27): a fresh model guesses uniformly


def test_microgpt_runs_as_a_script():
    lines = run(MICROGPT, "--steps", "3", "--samples", "2").stdout.splitlines()
    assert len([line for line in lines if re.match(r"step +\d+ / 3 \| loss \d+\.\d+$", line)]) == 3
    samples = lines[lines.index("samples (temperature 0.5):") + 1 :]
    assert len(samples) == 2 and all(s.strip().isalpha() for s in samples)
