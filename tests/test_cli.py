"""The command line: help, exit codes, one-line errors, batch conversion."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from abcgen.cli import app

MINI = Path(__file__).parent / "data" / "minicorpus"
runner = CliRunner()


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "abcgen", *args], capture_output=True, text=True, **kw)


def test_help_lists_every_command():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("prepare", "convert", "render", "check"):
        assert cmd in r.output


def test_convert_to_stdout_is_canonical():
    r = run("convert", str(MINI / "more.abc"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("X:1\nT:Air\nM:3/4\nL:1/4\nK:Ador\nA B c|d2 e|c B A|A3|]\n\n"
                        "X:2\nT:Polka\nM:2/4\nL:1/8\nK:Amaj\nAB cd|e2 e2|fe dc|B2 A2|]\n")


def test_missing_file_one_line_exit_2():
    r = run("convert", "no/such/file.abc")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "no/such/file.abc" in r.stderr and "Traceback" not in r.stderr


def test_batch_goes_on_and_lists_failures(tmp_path):
    bad = tmp_path / "bad.abc"
    bad.write_text("X:5\nT:Nothing\nM:4/4\nK:C\n")
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"MThd\x00\x00")
    out = tmp_path / "out"
    r = run("convert", str(MINI / "book.abc"), str(bad), str(corrupt), "-O", str(out))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "bad.abc" in r.stderr and "X:5" in r.stderr and "corrupt.mid" in r.stderr
    assert "book.abc" in r.stderr and "X:4" in r.stderr  # the tune without notes in book.abc
    written = (out / "book.abc").read_text()
    assert written.count("X:") == 3  # the three good tunes of book.abc
    assert not (out / "bad.abc").exists()


def test_output_file_written_atomically(tmp_path):
    target = tmp_path / "out.abc"
    r = runner.invoke(app, ["convert", str(MINI / "more.abc"), "-o", str(target)])
    assert r.exit_code == 0
    assert target.read_text().startswith("X:1\nT:Air\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.abc"]


def test_prepare_print_split_and_stats():
    r = run("prepare", "--corpus", str(MINI), "--print-split", "train")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("X:1\n")
    assert "K:" in r.stdout
    r = run("prepare", "--corpus", str(MINI))
    assert r.returncode == 0
    assert "failed 1" in r.stdout and "duplicates dropped 1" in r.stdout


def test_prepare_bad_usage():
    r = run("prepare", "--corpus", "nosuchcorpus")
    assert r.returncode == 2 and "unknown corpus" in r.stderr and "Traceback" not in r.stderr
    r = run("prepare", "--corpus", str(MINI), "--print-split", "dev")
    assert r.returncode == 2 and "--print-split" in r.stderr
    r = run("prepare", "--nosuchoption")
    assert r.returncode == 2


def test_debug_shows_traceback():
    r = run("--debug", "convert", "no/such/file.abc")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_export_and_sample_never_write_over_their_model(tmp_path, random_model):
    import shutil

    m = tmp_path / "m.npz"
    shutil.copy(random_model, m)
    before = m.read_bytes()
    r = run("export", str(m), "-o", str(m))
    assert r.returncode == 2 and "refusing to write over an input" in r.stderr, r.stderr
    assert m.read_bytes() == before
    r = run("sample", "--format", "pianoroll", "--model", str(m), "-o", str(tmp_path / "m.mid"),
            "--length", "5")
    assert r.returncode == 2 and "Traceback" not in r.stderr   # m.npz is not a pianoroll model...
    r = run("sample", "--format", "pianoroll", "--model", str(m), "-o", str(m))
    assert r.returncode == 2 and "refusing to write over an input" in r.stderr, r.stderr
    assert m.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
