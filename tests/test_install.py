"""The light install: every command but training runs without TensorFlow.

TensorFlow is the optional extra ``abcgen[train]``.  These tests run the command line in a
child process where ``import tensorflow`` and ``import keras`` fail exactly as they do when the
packages are not installed (a ``None`` entry in ``sys.modules`` raises ModuleNotFoundError).
"""

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

WITHOUT_TF = (
    "import sys\n"
    "sys.modules['tensorflow'] = None\n"
    "sys.modules['keras'] = None\n"
    "from abcgen.cli import app\n"
    "sys.argv = ['abcgen'] + sys.argv[1:]\n"
    "app()\n"
)


def run_without_tf(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", WITHOUT_TF, *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_blocking_works():
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None\n"
                        "import tensorflow"], capture_output=True, text=True)
    assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr


@pytest.mark.slow
def test_light_commands_run_without_tensorflow(tmp_path):
    tune = tmp_path / "tune.abc"
    r = run_without_tf("sample", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("X:1\n")
    tune.write_text(r.stdout)

    r = run_without_tf("convert", str(DATA / "minicorpus" / "more.abc"))
    assert r.returncode == 0, r.stderr
    assert "T:Polka" in r.stdout

    svg = tmp_path / "jig.svg"
    r = run_without_tf("render", str(DATA / "render" / "jig.abc"), "-o", str(svg))
    assert r.returncode == 0, r.stderr
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))

    r = run_without_tf("evaluate", str(tune), "--json")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args", [
    ("train", "--format", "abc", "--corpus", str(DATA / "minicorpus"), "--epochs", "1"),
    ("bench", "train"),
])
def test_training_commands_name_the_extra(tmp_path, args):
    if args[0] == "train":
        args = args + ("--out", str(tmp_path / "run"))
    r = run_without_tf(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "needs TensorFlow" in lines[0] and "pip install 'abcgen[train]'" in lines[0]
    assert lines[0].startswith(f"abcgen: error: abcgen {args[0]}")
