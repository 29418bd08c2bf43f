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


def _char_labelled(random_model, tmp_path):
    """The random model with its vocabulary labelled char (as an old, unbound char-level run loads)."""
    import json

    import numpy as np

    from abcgen.abc.tokens import Vocabulary

    with np.load(random_model, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta.pop("vocab_binding")
    v = meta["vocab"]
    v["level"] = "char"
    v["fingerprint"] = Vocabulary(v["symbols"], "char").fingerprint()
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "char.npz", **arrays)
    return tmp_path / "char.npz"


def test_sample_options_out_of_bounds_are_one_line_exit_2(random_model, tmp_path):
    m = str(random_model)
    for args, message in [
        (["--seed", "-5"], "--seed must be between 0 and 2**63-1, not -5"),
        (["--temperature", "inf"], "--temperature must be above 0 and at most 5, not inf"),
        (["--temperature", "1e9"], "--temperature must be above 0 and at most 5, not 1e+09"),
        (["--temperature", "nan"], "--temperature must be above 0 and at most 5, not nan"),
        (["--temperature", "0"], "--temperature must be above 0 and at most 5, not 0"),
        (["-n", "0"], "-n must be between 1 and 10000"),
    ]:
        r = run("sample", "--model", m, *args)
        assert r.returncode == 2 and r.stderr == f"abcgen: error: {message}\n", (args, r.stderr)
        assert r.stdout == ""
    r = run("sample", "--model", m, "--temperature", "5", "--max-tokens", "40", "--seed", "3")
    assert r.returncode == 0 and r.stdout.startswith("X:1\n")


def test_char_level_model_is_a_clear_error_not_an_internal_one(random_model, tmp_path):
    char = _char_labelled(random_model, tmp_path)
    r = run("sample", "--model", str(char))
    assert r.returncode == 2 and "internal error" not in r.stderr
    assert "char-level model: the ABC grammar mask works on token-level models only" in r.stderr
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = run("serve", "--model", str(char), "--port", str(port))
    assert r.returncode == 2 and "char-level model" in r.stderr and "internal error" not in r.stderr
    r = run("sample", "--model", str(char), "--no-constraints", "--max-tokens", "20")
    assert r.returncode == 0 and r.stdout.startswith("X:1\n")


def test_train_out_checks_quiet_tensorflow_file_modes_and_metrics_order(tmp_path):
    tiny = ["--corpus", str(MINI), "--hidden", "16", "--embed-dim", "8", "--seq-len", "16",
            "--batch-size", "4", "--seed", "3", "--patience", "10"]
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    r = run("train", "--out", str(afile), *tiny, "--epochs", "1")
    assert r.returncode == 2 and r.stderr == f"abcgen: error: --out {afile} is a file, not a run folder; " \
                                             "choose another --out\n", r.stderr
    assert afile.read_text() == "keep me\n"
    r = run("train", "--out", str(afile / "run"), *tiny, "--epochs", "1")
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "internal error" not in r.stderr
    r = run("train", "--out", "/proc/abcgen-cannot-be-here/run", *tiny, "--epochs", "1")
    assert r.returncode == 2 and "is not writable" in r.stderr and "internal error" not in r.stderr

    out = tmp_path / "run"
    r = run("train", "--out", str(out), *tiny, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    for marker in ("I0000", "E0000", "W0000", "cuInit", "oneDNN", "absl", "cuda"):
        assert marker not in r.stderr, r.stderr
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file()}
    assert modes["vocab.json"] == modes["config.json"] == modes["metrics.csv"], modes
    r = run("train", "--out", str(out), "--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == header and len(rows) == 3


def test_checks_leave_no_temporary_folders(tmp_path):
    import os
    import shutil

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    abc2midi = [] if shutil.which("abc2midi") else ["--no-abc2midi"]
    r = run("check", "roundtrip", "--corpus", str(MINI), "--limit", "4", "-j", "2", *abc2midi, env=env)
    assert r.returncode == 0, r.stderr
    midi2abc = [] if shutil.which("midi2abc") else ["--no-midi2abc"]
    r = run("check", "midi-roundtrip", "--corpus", str(MINI), "--limit", "4", "-j", "2", *midi2abc, env=env)
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in scratch.iterdir() if p.name != "music21")
    assert left == [], left
