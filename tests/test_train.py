"""Training: the loss goes down, resume equals an uninterrupted run, checkpoints survive a crash."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abcgen import train as T
from abcgen.errors import InputError

MINI = str(Path(__file__).parent / "data" / "minicorpus")
TINY = dict(corpus=MINI, hidden=32, embed_dim=8, seq_len=16, batch_size=4, lr=0.01, seed=3)


def _weights(path):
    import keras

    return [np.asarray(w) for w in keras.models.load_model(path).get_weights()]


def test_tiny_model_lowers_the_loss(tmp_path):
    state = T.train(tmp_path / "run", dict(TINY, epochs=6, patience=10), log=lambda m: None)
    hist = state["history"]
    assert len(hist) == 6
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.05
    run = tmp_path / "run"
    for name in ("config.json", "vocab.json", "state.json", "metrics.csv", "curves.png",
                 "best.keras", "model.npz"):
        assert (run / name).is_file(), name
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_bits_per_token,train_bits_per_char,valid_loss")
    assert len(rows) == 7
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hidden"] == 32 and cfg["level"] == "token"


def test_resume_equals_uninterrupted(tmp_path):
    quiet = lambda m: None  # noqa: E731
    T.train(tmp_path / "a", dict(TINY, epochs=3, patience=10), log=quiet)
    T.train(tmp_path / "b", dict(TINY, epochs=1, patience=10), log=quiet)
    T.train(tmp_path / "b", dict(epochs=3), resume=True, log=quiet)
    wa, wb = _weights(tmp_path / "a" / "ckpt-003.keras"), _weights(tmp_path / "b" / "ckpt-003.keras")
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    ha = json.loads((tmp_path / "a" / "state.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "state.json").read_text())["history"]
    assert [h["valid_loss"] for h in ha] == pytest.approx([h["valid_loss"] for h in hb], abs=1e-5)


def test_resume_refuses_a_changed_model(tmp_path):
    T.train(tmp_path / "r", dict(TINY, epochs=1), log=lambda m: None)
    with pytest.raises(InputError, match="hidden=32.*hidden=64"):
        T.train(tmp_path / "r", dict(hidden=64, epochs=2), resume=True, log=lambda m: None)
    with pytest.raises(InputError, match="already holds a run"):
        T.train(tmp_path / "r", dict(TINY, epochs=2), log=lambda m: None)
    with pytest.raises(InputError, match="nothing to resume"):
        T.train(tmp_path / "empty", dict(TINY, epochs=2), resume=True, log=lambda m: None)
    vocab = json.loads((tmp_path / "r" / "vocab.json").read_text())
    vocab["symbols"] = vocab["symbols"][:-1]
    (tmp_path / "r" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(InputError):
        T.train(tmp_path / "r", dict(epochs=2), resume=True, log=lambda m: None)


def test_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "k"
    T.train(run, dict(TINY, epochs=1), log=lambda m: None)
    import keras

    real_save = keras.Model.save

    def dying_save(self, path, *a, **kw):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")  # killed mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        T.train(run, dict(epochs=2), resume=True, log=lambda m: None)
    monkeypatch.setattr(keras.Model, "save", real_save)
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1 and state["checkpoint"] == "ckpt-001.keras"
    keras.models.load_model(run / state["checkpoint"])  # loadable
    assert not list(run.glob(".tmp-*"))  # no half-written file left behind
    # and the run goes on from there
    state = T.train(run, dict(epochs=2), resume=True, log=lambda m: None)
    assert state["epoch"] == 2


def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    code = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from abcgen import train as T
st = T.train({str(tmp_path / 'm')!r}, dict(corpus={MINI!r}, hidden=16, embed_dim=8, seq_len=16,
             batch_size=4, epochs=2, distribute='mirrored'), log=print)
print('EPOCHS', st['epoch'], len(tf.config.list_logical_devices('CPU')))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "EPOCHS 2 2" in r.stdout


# --------------------------------------------------------------------------
# One config base, each format's own defaults


def test_each_format_has_its_own_defaults_and_help_shows_them():
    from abcgen.runs import FORMATS, RollConfig, RunConfig, TrainConfig, default_note

    assert FORMATS == {"abc": TrainConfig, "pianoroll": RollConfig}
    assert issubclass(TrainConfig, RunConfig) and issubclass(RollConfig, RunConfig)
    text, roll = TrainConfig(), RollConfig()
    assert (text.epochs, text.batch_size, text.patience, text.corpus) == (20, 64, 3, "folk")
    assert (roll.epochs, roll.batch_size, roll.patience, roll.corpus) == (100, 8, 5, "jsb")
    assert default_note("epochs") == "(default: abc 20, pianoroll 100)"
    assert default_note("hidden") == "(default 512)"
    assert default_note("seq_len") == "(default 256)"          # abc only
    assert default_note("window") == "(default 50)"           # pianoroll only
    r = subprocess.run([sys.executable, "-m", "abcgen", "train", "--help"], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="250", TERM="dumb"))
    assert r.returncode == 0, r.stderr
    help_text = " ".join(r.stdout.split())
    for note in ("Last epoch to train (default: abc 20, pianoroll 100).",
                 "Windows per batch (default: abc 64, pianoroll 8).",
                 "stopping (default: abc 3, pianoroll 5).",
                 "Corpus name or path (default: abc folk, pianoroll jsb)."):
        assert note in help_text, note


def test_resolve_config_per_format(tmp_path):
    from abcgen.runs import RollConfig, RunDir, resolve_config

    cfg = resolve_config(RunDir(tmp_path / "x"), False, {"format": "pianoroll", "hidden": 64}, RollConfig)
    assert (cfg.hidden, cfg.epochs, cfg.batch_size) == (64, 100, 8)
    with pytest.raises(InputError, match="--seq-len does not apply to --format pianoroll"):
        resolve_config(RunDir(tmp_path / "x"), False, {"format": "pianoroll", "seq_len": 8}, RollConfig)
    cfg = resolve_config(RunDir(tmp_path / "y"), False, {"format": None, "epochs": 2})
    assert (cfg.format, cfg.epochs, cfg.batch_size) == ("abc", 2, 64)


def test_format_dispatch(tmp_path):
    from abcgen.cli.model import _trainer
    from abcgen.pianoroll_train import train_roll

    assert _trainer(tmp_path, None, False) is T.train
    assert _trainer(tmp_path, "pianoroll", False) is train_roll
    (tmp_path / "config.json").write_text('{"format": "pianoroll"}')
    assert _trainer(tmp_path, None, True) is train_roll        # resuming: the run's own format
    assert _trainer(tmp_path, None, False) is T.train
    with pytest.raises(InputError, match="--format must be abc or pianoroll, not 'midi'"):
        _trainer(tmp_path, "midi", False)
