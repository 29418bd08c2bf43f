"""abcgen evaluate --model: the LSTM's held-out bits, checked against the NumPy step, and the baselines."""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from abcgen import evaluate as ev
from abcgen import train as T
from abcgen.abc.tokens import Vocabulary
from abcgen.corpus import prepare
from abcgen.step import NumpyLSTM, load_npz, log_softmax

MINI = str(Path(__file__).parent / "data" / "minicorpus")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalrun") / "run"
    T.train(d, dict(corpus=MINI, hidden=16, embed_dim=8, seq_len=16, batch_size=4, epochs=2, seed=5),
            log=lambda m: None)
    return d


def test_bits_match_the_numpy_step(run_dir):
    r = ev.evaluate_model(run_dir, split="train", baselines=False)
    # the same figure computed independently: NumPy LSTM over model.npz (= best.keras)
    weights, meta = load_npz(run_dir / "model.npz")
    net = NumpyLSTM(weights)
    vocab = Vocabulary.load(run_dir / "vocab.json")
    texts = prepare(MINI, progress=False).texts("train")
    bits = 0.0
    for t in texts:
        ids = np.asarray(vocab.encode(t))
        logits, _ = net.run(ids[:-1], return_all=True)
        lp = log_softmax(np.asarray(logits).reshape(len(ids) - 1, -1))
        bits -= lp[np.arange(len(ids) - 1), ids[1:]].sum() / math.log(2)
    chars = sum(len(t) for t in texts)
    assert r["test_chars"] == chars
    assert r["bits_per_char"] == pytest.approx(bits / chars, rel=1e-4)
    assert r["perplexity"] == pytest.approx(2 ** r["bits_per_token"], rel=1e-3)


def test_cli_json_has_the_baselines(run_dir):
    from abcgen.cli import app

    res = CliRunner().invoke(app, ["evaluate", "--model", str(run_dir), "--split", "train", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output.strip().splitlines()[-1])
    for k in ("bits_per_char", "bits_per_token", "ngram_bits_per_char", "xz_bits_per_char", "test_chars"):
        assert isinstance(d[k], (int, float)) and d[k] > 0, k
    assert d["xz_bits_per_char"] < d["xz_alone_bits_per_char"]


def test_not_a_run_dir(tmp_path):
    from abcgen.errors import InputError

    with pytest.raises(InputError, match="not a run directory"):
        ev.evaluate_model(tmp_path)


def test_tune_book_validity(tmp_path):
    book = tmp_path / "b.abc"
    book.write_text("X:1\nM:4/4\nL:1/4\nK:Cmaj\nC D E F|G A B|c4|C4|]\n\n"
                    "X:2\nM:3/4\nL:1/4\nK:Gmaj\nG|A B c|d3|B2 G|G2|]\n\n"
                    "X:3\nM:2/4\nK:Cmaj\n\n")
    r = ev.evaluate_tunes(book, jobs=1)
    assert r["tunes"] == 3
    assert r["music21_parse_pct"] == pytest.approx(200 / 3, abs=1e-3)  # X:3 has no notes
    # As abcgen's reader builds the measures: X:1: 4 complete bars, "G A B|" one beat short;
    # X:2: A B c|, d3|, B2 G|, and the pickup G| with the last bar G2|] that completes it
    assert (r["complete_bars"], r["wrong_bars"]) == (8, 1)
    # form, read from the text: X:1 ends on C in C, X:2 on G in G
    f = r["form"]
    assert (f["tunes"], f["tonic_end_pct"], f["meter_change_pct"], f["bar_lines_median"]) == (3, 66.7, 0.0, 4.0)
    if shutil.which("abc2midi"):
        # abc2midi: X:1's short bar is its one wrong bar (X:3, with no notes, has none)
        assert r["abc2midi_wrong_bars"] == 1
        assert r["abc2midi_bars_right_tunes_pct"] == pytest.approx(200 / 3, abs=1e-3)
    elif os.environ.get("CI"):
        pytest.fail("abc2midi is not installed")


def test_npz_bits_equal_the_keras_bits(run_dir):
    keras_r = ev.evaluate_model(run_dir, split="train", baselines=False)
    np_r = ev.evaluate_model(run_dir / "model.npz", split="train", baselines=False)  # corpus from its meta
    assert (keras_r["engine"], np_r["engine"]) == ("keras", "numpy")
    assert np_r["corpus"] == keras_r["corpus"] == MINI
    assert np_r["test_tokens"] == keras_r["test_tokens"] and np_r["test_chars"] == keras_r["test_chars"]
    assert abs(np_r["bits_per_char"] - keras_r["bits_per_char"]) < 1e-4
    assert abs(np_r["bits_per_token"] - keras_r["bits_per_token"]) < 1e-4


def test_cli_uses_the_shipped_model(run_dir, monkeypatch, tmp_path):
    import abcgen.sample as S
    from abcgen.cli import app

    monkeypatch.setattr(S, "DEFAULT_MODEL", tmp_path / "absent.npz")
    res = CliRunner().invoke(app, ["evaluate", "--corpus", MINI, "--split", "train"])
    assert res.exit_code == 2
    err = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("abcgen: error: no default model ships"), res.output

    monkeypatch.setattr(S, "DEFAULT_MODEL", run_dir / "model.npz")
    res = CliRunner().invoke(app, ["evaluate", "--corpus", MINI, "--split", "train", "--no-baselines", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output.strip().splitlines()[-1])
    assert d["engine"] == "numpy" and d["model"] == str(run_dir / "model.npz")
    keras_r = ev.evaluate_model(run_dir, split="train", baselines=False)
    assert abs(d["bits_per_char"] - keras_r["bits_per_char"]) < 1e-4


def test_report_dir_that_cannot_be_written_fails_first_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    book = tmp_path / "b.abc"
    book.write_text("X:1\nM:4/4\nL:1/4\nK:Cmaj\nC D E F|G A B c|]\n")
    afile = tmp_path / "afile"
    afile.write_text("x")

    def evaluate(*args):
        return subprocess.run([sys.executable, "-m", "abcgen", "evaluate", str(book), "--against", "none",
                               "-j", "1", *args], capture_output=True, text=True)

    cases = [(afile, "is a file, not a folder"), (afile / "sub", "is a file, not a folder"),
             (Path("/proc/abcgen-cannot-be-here"), "is not writable")]
    if os.geteuid() != 0:                  # root writes in a read-only folder anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append((ro, "is not writable"))
    for where, message in cases:
        r = evaluate("-O", str(where))
        assert r.returncode == 2 and message in r.stderr, (where, r.stderr)
        assert "internal error" not in r.stderr and r.stdout == ""   # refused before the evaluation ran
    r = evaluate("-O", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.md").is_file()
    os.replace(book, tmp_path / "report.md")
    r = subprocess.run([sys.executable, "-m", "abcgen", "evaluate", str(tmp_path / "report.md"), "--against",
                        "none", "-j", "1", "-O", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "refusing to write over an input" in r.stderr
