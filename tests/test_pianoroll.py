"""Piano-roll mode: encoding, MIDI and ABC round trips, metrics, training, resume, sampling, errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from abcgen import pianoroll as P
from abcgen.errors import InputError

DATA = Path(__file__).parent / "data"
JSB = str(DATA / "jsb_excerpt.json")
MINI = str(DATA / "minicorpus")
TINY = dict(format="pianoroll", corpus=JSB, hidden=16, window=8, batch_size=4, lr=0.01, seed=3)

# Three notes: a quarter C4, then two eighth E4s (a repeated note), at 120 bpm.
THREE = "X:1\nT:Three\nM:2/4\nL:1/8\nQ:1/4=120\nK:Cmaj\nC2 EE|\n"


def _parse(text):
    from abcgen.abc.reader import parse_abc

    return parse_abc(text)


def test_three_notes_beat_aligned_with_onsets():
    roll = P.stream_to_roll(_parse(THREE), P.Encoding(frames="1/8", pitches=128, onsets=True))
    want = np.zeros((4, 256), np.uint8)
    want[0:2, 60] = 1          # C4 sounds for two eighths
    want[2:4, 64] = 1          # E4 sounds for two eighths...
    want[0, 128 + 60] = 1      # ...but starts twice
    want[2, 128 + 64] = 1
    want[3, 128 + 64] = 1
    np.testing.assert_array_equal(roll, want)


def test_three_notes_at_ten_frames_per_second_88_keys():
    # 120 bpm: a quarter is 0.5 s = 5 frames, an eighth 2.5 frames; edges round half up.
    roll = P.stream_to_roll(_parse(THREE), P.Encoding(frames="10", pitches=88, onsets=False))
    want = np.zeros((10, 88), np.uint8)
    want[0:5, 60 - 21] = 1
    want[5:10, 64 - 21] = 1    # the two E4s merge without an onset block
    np.testing.assert_array_equal(roll, want)
    assert P.roll_to_notes(roll, P.Encoding("10", 88)) == [(60, 0, 5), (64, 5, 10)]


ENCODINGS = [P.Encoding("1/16", 88, False), P.Encoding("10", 128, True), P.Encoding("1/4", 88, True),
             P.Encoding("1/8", 128, False)]


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(ENCODINGS),
       st.lists(st.tuples(st.integers(21, 108), st.integers(0, 30), st.integers(1, 6)), min_size=1, max_size=25))
def test_roll_midi_roll_is_the_identity(tmp_path_factory, enc, notes):
    roll = P.notes_to_roll([(p, a, a + d) for p, a, d in notes], enc)
    path = tmp_path_factory.mktemp("mid") / "r.mid"
    P.write_midi(roll, enc, path)
    back = P.midi_to_roll(path, enc)
    np.testing.assert_array_equal(back, roll)


def test_roll_abc_roll_is_the_identity():
    """Chorale-like voices on a sixteenth grid survive roll -> MIDI -> abcgen's reader -> ABC -> music21."""
    enc = P.Encoding("1/16", 88, True)
    notes = [(72, 0, 4), (76, 4, 8), (74, 8, 16), (67, 0, 8), (67, 8, 12), (65, 12, 16),
             (48, 0, 16), (79, 16, 24), (60, 16, 20), (60, 20, 24)]
    roll = P.notes_to_roll(notes, enc)
    abc = P.roll_to_abc(roll, enc, "Voices")
    assert "V:1" in abc and "V:3" in abc and abc.startswith("X:1\nT:Voices\nM:")
    np.testing.assert_array_equal(P.stream_to_roll(_parse(abc), enc), roll)


def test_voices_never_overlap():
    notes = [(60, 0, 4), (64, 0, 2), (67, 1, 3), (62, 2, 6), (60, 4, 5)]
    vs = P.voices(notes)
    assert sorted(n for v in vs for n in v) == sorted(notes)
    for v in vs:
        assert all(a[2] <= b[1] for a, b in zip(v, v[1:]))
    assert vs[0][0] == (64, 0, 2)  # at a common start the higher note takes the first voice


def test_metrics_on_a_hand_computed_example():
    y = np.array([[1, 0], [0, 1]])
    p = np.array([[0.8, 0.6], [0.3, 0.2]])
    c = P.roll_counts(y, np.log(p / (1 - p)))
    assert (c["tp"], c["fp"], c["fn"], c["tn"], c["frames"]) == (1, 1, 1, 1, 2)
    m = P.roll_metrics(c)
    assert m["frame_accuracy"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(0.5)
    # (-ln .8 - ln .4 - ln .7 - ln .2) / 2 frames
    assert m["nll_per_frame"] == pytest.approx(1.552774, abs=1e-6)
    assert (m["fp"], m["fn"]) == (1, 1)


def test_keras_loss_agrees_with_the_numpy_nll():
    from abcgen.pianoroll_train import RollLoss

    rng = np.random.default_rng(0)
    y = (rng.random((3, 5, 88)) < 0.05).astype(np.float32)
    z = rng.normal(size=(3, 5, 88)).astype(np.float32) * 3
    per_frame = np.asarray(RollLoss()(y, z))  # mean over keys and frames
    assert per_frame * 88 == pytest.approx(P.roll_counts(y, z)["nll"] / 15, rel=1e-5)
    # pos_weight W: the positive terms count W times
    pos = -(y * P.log_sigmoid(z.astype(np.float64))).sum()
    assert float(RollLoss(pos_weight=3.0)(y, z)) * 88 * 15 == pytest.approx(
        P.roll_counts(y, z)["nll"] + 2 * pos, rel=1e-5)


def test_tiny_model_lowers_the_loss_on_the_jsb_excerpt(tmp_path):
    from abcgen.pianoroll_train import train_roll

    state = train_roll(tmp_path / "run", dict(TINY, epochs=5, patience=10), log=lambda m: None)
    hist = state["history"]
    assert len(hist) == 5
    # The output bias starts at the train marginals (about 11 nats per frame here), so the
    # loss starts low; what the LSTM learns on top shows in the NLL of the train frames.
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["train_nll_per_frame"] < hist[0]["train_nll_per_frame"] - 0.5
    assert hist[-1]["valid_nll_per_frame"] < hist[0]["valid_nll_per_frame"]
    run = tmp_path / "run"
    for name in ("config.json", "state.json", "metrics.csv", "curves.png", "best.keras", "model.npz",
                 "test.json"):
        assert (run / name).is_file(), name
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("train_loss", "train_accuracy", "train_fp", "train_fn", "valid_nll_per_frame",
                "valid_frame_accuracy"):
        assert col in header
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["format"], cfg["frames"], cfg["pitches"]) == ("pianoroll", "1/4", 88)
    test = json.loads((run / "test.json").read_text())
    assert test["frames"] == 48 and test["split"] == "test"


def test_numpy_step_matches_keras(tmp_path):
    import keras

    from abcgen.pianoroll_train import train_roll

    train_roll(tmp_path / "r", dict(TINY, epochs=1), log=lambda m: None)
    model = keras.models.load_model(tmp_path / "r" / "best.keras")
    rolls = P.load_jsb(JSB)["valid"]
    x = P.model_input(rolls[0])
    want = np.asarray(model(x[None], training=False))[0]
    m = P.RollLSTM(tmp_path / "r" / "model.npz")
    state = m.initial_state()
    got = []
    for row in x:
        z, state = m.step(row, state)
        got.append(z)
    np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-5)


def test_resume_equals_uninterrupted(tmp_path):
    from abcgen.pianoroll_train import train_roll

    quiet = lambda m: None  # noqa: E731
    train_roll(tmp_path / "a", dict(TINY, epochs=3, patience=10), log=quiet)
    train_roll(tmp_path / "b", dict(TINY, epochs=1, patience=10), log=quiet)
    from abcgen.cli.model import _trainer

    assert _trainer(tmp_path / "b", None, True) is train_roll      # the run's format is read back
    train_roll(tmp_path / "b", dict(epochs=3), resume=True, log=quiet)
    import keras

    wa = keras.models.load_model(tmp_path / "a" / "ckpt-003.keras").get_weights()
    wb = keras.models.load_model(tmp_path / "b" / "ckpt-003.keras").get_weights()
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    ha = json.loads((tmp_path / "a" / "state.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "state.json").read_text())["history"]
    assert [h["valid_nll_per_frame"] for h in ha] == pytest.approx([h["valid_nll_per_frame"] for h in hb],
                                                                   abs=1e-4)
    with pytest.raises(InputError, match="pos_weight=1.0.*pos_weight=2.0"):
        train_roll(tmp_path / "b", dict(pos_weight=2.0, epochs=4), resume=True, log=quiet)


def test_sample_writes_midi_abc_png_and_evaluate_dispatches(tmp_path):
    from abcgen.pianoroll_train import train_roll

    train_roll(tmp_path / "r", dict(TINY, epochs=1), log=lambda m: None)
    out = tmp_path / "s" / "out.mid"
    r = subprocess.run([sys.executable, "-m", "abcgen", "sample", "--format", "pianoroll", "--model",
                        str(tmp_path / "r"), "-o", str(out), "--length", "12", "--threshold", "0.2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for ext in (".mid", ".abc", ".png"):
        assert out.with_suffix(ext).is_file(), ext
    back = P.midi_to_roll(out, P.JSB_ENCODING)
    assert len(back) <= 8 + 12 and back.any()
    assert out.with_suffix(".abc").read_text().startswith("X:1\n")

    from abcgen.evaluate import evaluate_model, format_model_report

    rep = evaluate_model(tmp_path / "r", split="valid")
    assert rep["format"] == "pianoroll" and rep["frames"] == 48
    assert "NLL" in format_model_report(rep)


def test_sampling_is_seeded_and_threshold_is_deterministic(tmp_path):
    from abcgen.pianoroll_train import train_roll

    train_roll(tmp_path / "r", dict(TINY, epochs=1), log=lambda m: None)
    m = P.RollLSTM(tmp_path / "r" / "model.npz")
    prime = P.load_jsb(JSB)["valid"][0][:8]
    a = P.sample_roll(m, prime, 10, seed=5)
    b = P.sample_roll(m, prime, 10, seed=5)
    np.testing.assert_array_equal(a, b)
    low = P.sample_roll(m, prime, 10, threshold=0.01)
    high = P.sample_roll(m, prime, 10, threshold=0.99)
    assert low.sum() >= high.sum()


def test_folk_and_chorale_corpora_render_to_rolls():
    rolls, failures = P.load_rolls(MINI, P.Encoding("1/16", 128, True))
    assert not failures
    pieces = [r for s in P.SPLITS for r in rolls[s]]
    assert len(pieces) >= 3 and all(r.shape[1] == 256 and r.any() for r in pieces)
    again, _ = P.load_rolls(MINI, P.Encoding("1/16", 128, True))  # from the cache
    assert [len(r) for s in P.SPLITS for r in again[s]] == [len(r) for r in pieces]
    ch, failures = P.load_rolls("chorales", P.Encoding("1/4", 88, False), limit=1)
    assert not failures and sum(len(ch[s]) for s in P.SPLITS) == 1
    roll = next(r for s in P.SPLITS for r in ch[s])
    assert roll.sum(axis=1).max() >= 3  # four-part harmony in one roll


def _one_line_error(args, code=2, env=None):
    import os

    r = subprocess.run([sys.executable, "-m", "abcgen", *args], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == code, r.stderr[-2000:]
    err = [l for l in r.stderr.splitlines() if l.startswith("abcgen:")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return err[0]


def test_bad_input_errors_are_one_line(tmp_path):
    msg = _one_line_error(["train", "--format", "pianoroll", "--out", str(tmp_path / "a")],
                          env={"ABCGEN_JSB": str(tmp_path / "nowhere")})
    assert "JSB Chorales not found" in msg and "nowhere" in msg
    msg = _one_line_error(["train", "--format", "pianoroll", "--corpus", JSB, "--pitches", "128",
                           "--out", str(tmp_path / "b")])
    assert "one frame per quarter note" in msg
    msg = _one_line_error(["train", "--format", "pianoroll", "--corpus", MINI, "--frames", "1/7",
                           "--out", str(tmp_path / "c")])
    assert "--frames" in msg
    msg = _one_line_error(["train", "--out", str(tmp_path / "d"), "--pos-weight", "2"])
    assert "--pos-weight does not apply to --format abc" in msg
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": [[[60, 200]]], "valid": [], "test": []}')
    msg = _one_line_error(["train", "--format", "pianoroll", "--corpus", str(bad), "--out", str(tmp_path / "e")])
    assert str(bad) in msg and "train chorale 0" in msg
    msg = _one_line_error(["sample", "--format", "pianoroll", "--model", str(tmp_path), "-o", "x.mid"])
    assert "model.npz" in msg
    msg = _one_line_error(["sample", "-o", "x.mid"])
    assert "-o and --threshold are for --format pianoroll" in msg
    notmidi = tmp_path / "x.mid"
    notmidi.write_text("hello")
    with pytest.raises(InputError, match="x.mid"):
        P.midi_to_roll(notmidi, P.JSB_ENCODING)


def test_run_rolls_applies_max_pieces():
    whole, _ = P.run_rolls(JSB, P.JSB_ENCODING)
    assert {s: len(r) for s, r in whole.items()} == {"train": 4, "valid": 2, "test": 2}
    one, _ = P.run_rolls(JSB, P.JSB_ENCODING, 1)       # jsb: the first piece of each split
    for s in P.SPLITS:
        assert len(one[s]) == 1 and np.array_equal(one[s][0], whole[s][0])
    mini, _ = P.run_rolls(MINI, P.Encoding("1/16", 128, True), 2)   # else the first N pieces
    assert sum(len(r) for r in mini.values()) == 2


def test_sampling_primes_from_the_run_s_own_pieces(tmp_path, monkeypatch):
    """write_sample loads the corpus as the run did: its max_pieces (the config has no "limit")."""
    (tmp_path / "model.npz").write_bytes(b"")

    class Stub:
        def __init__(self, path):
            self.meta = {"config": {"corpus": JSB, "max_pieces": 1, "window": 8}}
            self.enc = P.JSB_ENCODING

    seen = []

    def spy(corpus, enc, max_pieces=0, log=None):
        seen.append((corpus, max_pieces))
        raise RuntimeError("stop here")

    monkeypatch.setattr(P, "RollLSTM", Stub)
    monkeypatch.setattr(P, "run_rolls", spy)
    with pytest.raises(RuntimeError, match="stop here"):
        P.write_sample(tmp_path, tmp_path / "out.mid")
    assert seen == [(JSB, 1)]


def test_midi_to_roll_never_loads_or_stores_a_music21_pickle(tmp_path):
    """The piano roll reads MIDI with music21 from the source: a pickle planted in music21's
    scratch folder for that path is never loaded, and none is stored."""
    import os
    import pickle
    import time
    import zlib

    from music21 import converter

    from tests.test_convert import _Planted

    enc = P.Encoding(frames="1/4", pitches=88)
    mid = tmp_path / "three.mid"
    P.write_midi(P.stream_to_roll(_parse(THREE), enc), enc, mid)
    want = P.midi_to_roll(mid, enc)
    fp_pickle = converter.PickleFilter(mid).status()[2]
    assert fp_pickle is not None, "music21 has no scratch folder: the planted pickle cannot be tested"
    fp_pickle = Path(fp_pickle)
    fp_pickle.parent.mkdir(parents=True, exist_ok=True)
    assert not fp_pickle.exists(), "music21 stored a pickle of the parsed file"
    marker = tmp_path / "pickle-was-loaded"
    try:
        fp_pickle.write_bytes(zlib.compress(pickle.dumps(_Planted(marker))))
        later = time.time() + 3600
        os.utime(fp_pickle, (later, later))
        assert np.array_equal(P.midi_to_roll(mid, enc), want)
        assert not marker.exists(), "the planted pickle was unpickled"
    finally:
        fp_pickle.unlink(missing_ok=True)
