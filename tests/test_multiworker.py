"""``abcgen train --distribute multiworker``: two worker processes on 127.0.0.1.

TensorFlow's own multi-worker engine (MultiWorkerMirroredStrategy, one CPU
replica per worker, gRPC between them) against a one-process run with the same
global batch: the two-worker run is the same optimisation split in two, so its
per-epoch losses must equal the one-process run's to float32 round-off
(tolerance 2e-4 absolute on losses of about 3.3 nats; measured difference
about 1e-5).  The data is chosen so that every batch is whole: 8 training
windows of 7 tokens per epoch (``--max-train-tokens 62``) in global batches of
4 (2 per worker), 4 valid windows, dropout 0.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from abcgen import runs
from abcgen import train as T
from abcgen.cli import app
from abcgen.errors import InputError

MINI = str(Path(__file__).parent / "data" / "minicorpus")
PER_WORKER = 2
MODEL = dict(corpus=MINI, hidden=16, embed_dim=8, seq_len=7, max_train_tokens=62, dropout=0.0, lr=0.01,
             patience=10, seed=3)
TOL = 2e-4
RUN_FILES = {"config.json", "vocab.json", "state.json", "metrics.csv", "curves.png", "best.keras", "model.npz"}



def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _args(**opts) -> list[str]:
    out = []
    for k, v in opts.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _start(tmp_path: Path, outs: list[Path], epochs: int, resume: bool = False, tag: str = "") -> list:
    """One `abcgen train` process per worker, worker 0 the chief; private TMPDIR to see leftovers."""
    ports = _free_ports(len(outs))
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path / "tmp"),
               OMP_NUM_THREADS="1")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    opts = dict(MODEL, batch_size=PER_WORKER, epochs=epochs)
    if resume:
        opts = dict(epochs=epochs)
    procs = []
    for i, out in enumerate(outs):
        cmd = [sys.executable, "-m", "abcgen", "train", "--out", str(out), *_args(**opts),
               "--workers", workers, "--index", str(i)] + (["--resume"] if resume else [])
        log = open(tmp_path / f"worker{i}{tag}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    return procs


def _wait(procs, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
            pytest.fail(f"workers still running after {timeout} s")
        finally:
            log.close()
    return codes


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("worker*.log")))


def _same_losses(got: list[dict], want: list[dict]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want):
        for key in ("train_loss", "valid_loss"):
            assert float(g[key]) == pytest.approx(float(w[key]), abs=TOL), (g["epoch"], key)


# --------------------------------------------------------------------------
# TF_CONFIG: written by --workers/--index, read and checked (no TensorFlow needed)


@pytest.fixture
def no_tf_config(monkeypatch):
    """No TF_CONFIG during the test, and none left after it (set_tf_config writes os.environ)."""
    monkeypatch.setenv("TF_CONFIG", "")  # records the state before, restored at teardown
    monkeypatch.delenv("TF_CONFIG")
    return monkeypatch


def test_workers_and_index_write_tf_config(no_tf_config):
    monkeypatch = no_tf_config
    runs.set_tf_config("10.0.0.1:2222, 10.0.0.2:2222", 1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    cfg = runs.TrainConfig(distribute="multiworker", batch_size=32)
    assert not runs.is_chief(cfg) and runs.workers(cfg) == 2 and runs.global_batch(cfg) == 64
    runs.set_tf_config("10.0.0.1:2222,10.0.0.2:2222", 0)
    assert runs.is_chief(cfg)
    # a cluster with a chief task: the chief writes, worker 0 does not
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not runs.is_chief(cfg) and runs.workers(cfg) == 3 and runs.global_batch(cfg) == 96
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "chief", "index": 0}}))
    assert runs.is_chief(cfg)
    one = runs.TrainConfig(batch_size=32)
    assert runs.is_chief(one) and runs.workers(one) == 1 and runs.global_batch(one) == 32


@pytest.mark.parametrize("workers, index, message", [
    ("", 0, "one per worker"),
    ("10.0.0.1", 0, "'10.0.0.1' is not host:port"),
    ("10.0.0.1:x,10.0.0.2:1", 0, "is not host:port"),
    ("a:1,a:1", 0, "twice"),
    ("a:1,b:1", 2, "--index must be 0 to 1"),
    ("a:1,b:1", None, "--index must be 0 to 1"),
])
def test_bad_workers_are_one_line(no_tf_config, workers, index, message):
    with pytest.raises(InputError, match=message):
        runs.set_tf_config(workers, index)
    assert "TF_CONFIG" not in os.environ


@pytest.mark.parametrize("value, message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not a multi-worker config"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "outside cluster.worker"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "chief and worker tasks only"),
])
def test_bad_tf_config_is_one_line(no_tf_config, value, message):
    if value is not None:
        no_tf_config.setenv("TF_CONFIG", value)
    with pytest.raises(InputError, match=message):
        runs.is_chief(runs.TrainConfig(distribute="multiworker"))


def test_cli_refuses_bad_workers_before_any_work(no_tf_config, tmp_path):
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--corpus", MINI,
                                 "--workers", "127.0.0.1:1,127.0.0.1:2", "--index", "5"])
    assert r.exit_code == 2 and "--index must be 0 to 1" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--corpus", MINI,
                                 "--workers", "127.0.0.1:1", "--index", "0", "--distribute", "mirrored"])
    assert r.exit_code == 2 and "--workers is for --distribute multiworker" in r.output
    assert not (tmp_path / "r").exists()
    assert "TF_CONFIG" not in os.environ


# --------------------------------------------------------------------------
# Two worker processes


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, global batch 2 workers x 2 windows, 3 epochs: the reference."""
    out = tmp_path_factory.mktemp("single") / "run"
    T.train(out, dict(MODEL, batch_size=2 * PER_WORKER, epochs=3), log=lambda m: None)
    return out


@pytest.mark.slow
def test_two_workers_equal_one_process_with_the_same_global_batch(tmp_path, single):
    chief, other = tmp_path / "chief", tmp_path / "other"
    codes = _wait(_start(tmp_path, [chief, other], epochs=2), timeout=240)
    assert codes == [0, 0], _logs(tmp_path)
    # The chief's run directory is a single-host run's; the other worker leaves nothing behind.
    assert {p.name for p in chief.iterdir()} >= RUN_FILES
    assert sorted(p.name for p in chief.glob("ckpt-*.keras")) == ["ckpt-001.keras", "ckpt-002.keras"]
    state = json.loads((chief / "state.json").read_text())
    assert state["epoch"] == 2 and state["checkpoint"] == "ckpt-002.keras"
    assert json.loads((chief / "config.json").read_text())["distribute"] == "multiworker"
    assert not other.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    _same_losses(_metrics(chief), _metrics(single)[:2])


@pytest.mark.slow
def test_a_killed_worker_then_resume_completes_the_run(tmp_path, single):
    # Both workers are given the chief's run directory (a shared file system): a
    # resuming worker starts from the chief's last checkpoint.
    chief = tmp_path / "chief"
    procs = _start(tmp_path, [chief, chief], epochs=3)
    state_file = chief / "state.json"
    deadline = time.monotonic() + 180
    while not (state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 1):
        assert all(p.poll() is None for p, _ in procs), _logs(tmp_path)
        assert time.monotonic() < deadline, "no checkpoint within 180 s\n" + _logs(tmp_path)
        time.sleep(0.05)
    procs[1][0].send_signal(signal.SIGKILL)  # worker 1 dies mid-run
    # The chief cannot go on alone: TensorFlow's heartbeats find the dead peer, the
    # all-reduce aborts, and the chief stops with one line naming --resume.
    try:
        code = procs[0][0].wait(timeout=90)
    except subprocess.TimeoutExpired:
        procs[0][0].kill()
        pytest.fail("the chief hung after its peer died\n" + _logs(tmp_path))
    for p, log in procs:
        p.wait()
        log.close()
    died_after = json.loads(state_file.read_text())["epoch"]
    assert 1 <= died_after < 3, "the run finished before the kill; the test needs a longer run"
    said = (tmp_path / "worker0.log").read_text()
    assert code == 1 and "a worker stopped during epoch" in said and "--resume" in said, said[-2000:]
    assert "Traceback" not in said

    codes = _wait(_start(tmp_path, [chief, chief], epochs=3, resume=True, tag="-resumed"), timeout=240)
    assert codes == [0, 0], _logs(tmp_path)
    state = json.loads(state_file.read_text())
    assert state["epoch"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert {p.name for p in chief.iterdir()} >= RUN_FILES
    assert sorted(p.name for p in chief.glob("ckpt-*.keras")) == ["ckpt-002.keras", "ckpt-003.keras"]
    assert not list(chief.glob(".tmp-*")) and list((tmp_path / "tmp").iterdir()) == []
    # Resumed exactly: the same losses as the uninterrupted one-process run.
    _same_losses(_metrics(chief), _metrics(single))
