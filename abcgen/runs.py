"""The run layer below both trainers (``abcgen.train`` for ABC text,
``abcgen.pianoroll_train`` for piano rolls): what a training run is, whatever
the model learns.

- The configs: ``RunConfig`` holds the options every format has; each format's
  config (``TrainConfig``, ``RollConfig``) adds its own and its own defaults,
  and names the options that shape the model or its data (``frozen``): a run
  directory keeps those for life.  ``FORMATS`` maps ``--format`` to its config,
  and ``default_note`` gives the help text of each format's defaults.
- The run directory (``RunDir``): config.json, state.json, checkpoints written
  so that a run killed at any moment leaves the last good one named by
  state.json, metrics.csv and curves.png.
- Config resolution (a new run: defaults + options; ``--resume``: the saved
  config, refusing a change of a frozen option), seeding from (seed, epoch)
  only, so that a resumed run draws what an uninterrupted one would, the
  distribution strategy, and one epoch loop with the end-of-epoch bookkeeping
  (best model, learning-rate halving, early stop, checkpoint, metrics).

Importing this module is cheap (no NumPy, Keras or TensorFlow until a
function needs them): the command line reads the configs for its help.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from .errors import AbcgenError, InputError
from .fileio import atomic_path, atomic_write_text

# --------------------------------------------------------------------------
# Configs


@dataclass
class RunConfig:
    """The options of every format (each format's config sets its own defaults)."""

    format: str = ""
    corpus: str = ""
    layers: int = 1
    hidden: int = 512
    dropout: float = 0.2
    batch_size: int = 0
    epochs: int = 0
    lr: float = 2e-3
    clipnorm: float = 5.0
    patience: int = 0
    seed: int = 1
    distribute: str = "none"   # none | mirrored | multiworker

    frozen: ClassVar[tuple] = ("format", "corpus", "layers", "hidden")

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig(RunConfig):
    """``--format abc``: the LSTM over ABC text (abcgen.train)."""

    format: str = "abc"
    corpus: str = "folk"
    level: str = "token"
    embed_dim: int = 128
    seq_len: int = 256
    batch_size: int = 64
    epochs: int = 20
    patience: int = 3
    transpose: str = "none"
    max_train_tokens: int = 0  # 0: all; else the train stream is cut (quick runs, tests)

    frozen: ClassVar[tuple] = ("format", "corpus", "level", "layers", "hidden", "embed_dim", "transpose")


@dataclass
class RollConfig(RunConfig):
    """``--format pianoroll``: the LSTM over piano-roll frames (abcgen.pianoroll_train)."""

    format: str = "pianoroll"
    corpus: str = "jsb"
    frames: str = ""        # "": the corpus default (1/4 on jsb, else 10 per second)
    pitches: int = 0        # 0: the corpus default (88 on jsb, else 128)
    onsets: bool = False
    window: int = 50
    loss: str = "bce"
    pos_weight: float = 1.0
    focal_gamma: float = 2.0
    batch_size: int = 8
    epochs: int = 100
    patience: int = 5
    max_pieces: int = 0     # 0: all; else the first N pieces of the corpus (quick runs)
    output: str = "independent"  # independent sigmoids per key | nade (the keys of a frame jointly)
    nade_hidden: int = 150  # hidden units of the NADE output

    frozen: ClassVar[tuple] = ("format", "corpus", "frames", "pitches", "onsets", "layers", "hidden",
                               "max_pieces", "loss", "pos_weight", "focal_gamma", "output", "nade_hidden")


FORMATS: dict[str, type] = {"abc": TrainConfig, "pianoroll": RollConfig}


def default_note(name: str) -> str:
    """Help text for an option's defaults: ``(default 1)``, or ``(default: abc 20, pianoroll 100)``
    where the formats differ.  Round brackets: the help's markup would eat square ones."""
    vals = [(fmt, getattr(cls(), name)) for fmt, cls in FORMATS.items()
            if name in {f.name for f in fields(cls)}]
    if len({repr(v) for _fmt, v in vals}) == 1:
        return f"(default {vals[0][1]})"
    return "(default: " + ", ".join(f"{fmt} {v}" for fmt, v in vals) + ")"


def run_format(out: Path, fmt: str | None, resume: bool) -> str:
    """The format asked for, else (resuming) the run's own, else abc."""
    if fmt:
        return fmt
    cfg = Path(out) / "config.json"
    if resume and cfg.is_file():
        return RunDir(out).read_json("config.json").get("format", "abc")
    return "abc"


def resolve_config(run: "RunDir", resume: bool, given: dict, cls=TrainConfig):
    """The run's config: the saved one when resuming (refusing frozen changes), else defaults + given."""
    names = {f.name for f in fields(cls)}
    for k, v in given.items():
        if v is not None and k not in names:
            fmt = given.get("format") or cls().format
            raise InputError(f"--{k.replace('_', '-')} does not apply to --format {fmt}")
    if resume:
        if not run.exists():
            raise InputError(f"nothing to resume in {run.path}: no state.json (start without --resume)")
        saved = cls.from_dict(run.read_json("config.json"))
        for k, v in given.items():
            if v is None:
                continue
            if k in cls.frozen and v != getattr(saved, k):
                raise InputError(f"{run.path} was trained with {k}={getattr(saved, k)!r}; this run asks "
                                 f"{k}={v!r}. Resume with the same {k}, or train into another --out")
            setattr(saved, k, v)
        return saved
    if run.exists():
        raise InputError(f"{run.path} already holds a run; pass --resume to continue it "
                         "or choose another --out")
    cfg = cls()
    for k, v in given.items():
        if v is not None:
            setattr(cfg, k, v)
    return cfg


# --------------------------------------------------------------------------
# Run directory


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def read_json(self, name: str) -> dict:
        p = self.path / name
        try:
            return json.loads(p.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {name}: {e}", file=str(p)) from None

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def save_model(self, model, name: str) -> None:
        """model.save into a temporary .keras name, then rename: never a half-written checkpoint."""
        with atomic_path(self.path / name) as tmp:
            model.save(tmp)

    def checkpoint(self, model, state: dict) -> None:
        name = f"ckpt-{state['epoch']:03d}.keras"
        self.save_model(model, name)
        state = dict(state, checkpoint=name)
        self.write_json("state.json", state)
        for old in sorted(self.path.glob("ckpt-*.keras"))[:-2]:
            if old.name != name:
                old.unlink()

    def write_metrics(self, history: list[dict], plot=None) -> None:
        """metrics.csv and curves.png (``plot(history, path)``; the text curves by default)."""
        if not history:
            return
        buf = io.StringIO()
        # The columns in the order of the first write: state.json (sorted keys) must not reorder
        # them on --resume.
        columns = list(history[-1].keys())
        try:
            with open(self.path / "metrics.csv", encoding="utf-8", newline="") as f:
                before = next(csv.reader(f), [])
            columns = [c for c in before if c in columns] + [c for c in columns if c not in before]
        except OSError:
            pass
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        w.writerows(history)
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())
        try:
            (plot or plot_curves)(history, self.path / "curves.png")
        except Exception as e:  # a plot must never cost a checkpoint
            print(f"abcgen: warning: cannot draw curves.png: {e}", file=sys.stderr)


def plot_curves(history: list[dict], path: Path, series=(("train_bits_per_char", "train"),
                                                          ("valid_bits_per_char", "valid")),
                ylabel: str = "bits per character of canonical ABC") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write_bytes

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (key, label), style in zip(series, ("o-", "s-", "^-", "v-")):
        ax.plot(ep, [h[key] for h in history], style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------
# Keras: quiet start, strategy, models, batches


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter is not for users.

    TF_CPP_MIN_LOG_LEVEL is set before TensorFlow loads; the lines its C++
    libraries write before their logging starts (oneDNN, CUDA stubs, cuInit
    on a machine with no GPU) ignore it, so the import and the first device
    query run with file descriptor 2 sent to a temporary file, which is shown
    only when the import fails.
    """
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as said:
        os.dup2(said.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            said.seek(0)
            sys.stderr.write(said.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def check_out(out: Path) -> None:
    """--out must be a folder that is or can be made writable: one line (exit 2) before any work."""
    from .fileio import check_writable_dir

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a run folder; choose another --out")
    check_writable_dir(out, "--out")


DISTRIBUTE = ("none", "mirrored", "multiworker")
_STRATEGIES: dict = {}


def set_tf_config(workers: str, index: int) -> dict:
    """``--workers host:port,host:port --index I``: the TF_CONFIG of this worker, set in the
    environment (worker 0 is the chief).  Returns it."""
    hosts = [h.strip() for h in workers.split(",") if h.strip()]
    if not hosts:
        raise InputError("--workers needs host:port,host:port,... (one per worker)")
    for h in hosts:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"--workers: {h!r} is not host:port")
    if len(set(hosts)) != len(hosts):
        raise InputError("--workers names a host:port twice")
    if index is None or not 0 <= index < len(hosts):
        raise InputError(f"--index must be 0 to {len(hosts) - 1} (this worker's place in --workers)")
    config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    os.environ["TF_CONFIG"] = json.dumps(config)
    return config


def tf_config() -> dict:
    """The TF_CONFIG of this process (``--distribute multiworker``), checked: one line if it is
    missing or malformed."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise InputError("--distribute multiworker needs TF_CONFIG in the environment "
                         "(or --workers host:port,... --index I)")
    try:
        config = json.loads(raw)
        task = config["task"]
        kind, index = task["type"], int(task["index"])
        members = config["cluster"][kind]
        if not isinstance(members, list) or not 0 <= index < len(members):
            raise ValueError(f"task index {index} is outside cluster.{kind}")
        if not all(isinstance(v, list) for v in config["cluster"].values()):
            raise ValueError("every cluster entry must be a list of host:port")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"TF_CONFIG is not a multi-worker config ({type(e).__name__}: {e}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                         '"index": I}}') from None
    if kind not in ("chief", "worker"):
        raise InputError(f"TF_CONFIG task type {kind!r}: abcgen runs chief and worker tasks only "
                         "(no parameter servers or evaluators)")
    return config


def is_chief(cfg: RunConfig) -> bool:
    """The process that writes the run directory: always on one host; under multiworker the
    ``chief`` task, or worker 0 where the cluster has no chief (TensorFlow's convention)."""
    if cfg.distribute != "multiworker":
        return True
    config = tf_config()
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])


def workers(cfg: RunConfig) -> int:
    """Processes training together (1 unless multiworker)."""
    if cfg.distribute != "multiworker":
        return 1
    cluster = tf_config()["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _strategy(cfg: RunConfig):
    """One strategy per process: the model, its reload and the batch split share it.

    MultiWorkerMirroredStrategy reads TF_CONFIG and must exist before TensorFlow
    runs anything (``worker_dir`` makes it first)."""
    kind = cfg.distribute
    if kind not in _STRATEGIES:
        import tensorflow as tf

        if kind == "mirrored":
            _STRATEGIES[kind] = tf.distribute.MirroredStrategy()
        else:
            tf_config()
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            strategy.reduce = _keras_safe_reduce(strategy, strategy.reduce)
            _STRATEGIES[kind] = strategy
    return _STRATEGIES[kind]


def _keras_safe_reduce(strategy, reduce_one):
    """``strategy.reduce`` as Keras 3 (3.15) calls it under MultiWorkerMirroredStrategy.

    Two calls of Keras' fail across workers: fit and evaluate reduce the first
    (x, y) batch to learn its shapes, a tuple where reduce takes one value
    ("Attempt to convert a value (PerReplica ...)"), and every step reduces the
    scalar loss "MEAN" along axis 0 ("Invalid reduction dimension 0 for input
    with 0 dimensions").  Reduce element by element, and a scalar across the
    replicas only (the mean of the workers' equal-sized batch losses: the loss of
    the global batch)."""
    import tensorflow as tf

    def reduce(op, value, axis=None):
        def one(v):
            local = strategy.experimental_local_results(v)[0]
            rank = getattr(getattr(local, "shape", None), "rank", None)
            return reduce_one(op, v, axis=None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)

    return reduce


def strategy_scope(cfg: RunConfig):
    if cfg.distribute in ("mirrored", "multiworker"):
        return _strategy(cfg).scope()
    if cfg.distribute != "none":
        raise InputError(f"--distribute must be one of {', '.join(DISTRIBUTE)}, not {cfg.distribute!r}")
    return contextlib.nullcontext()


def replicas(cfg: RunConfig) -> int:
    """Replicas in sync: the devices of this host (mirrored) or of all workers (multiworker)."""
    return _strategy(cfg).num_replicas_in_sync if cfg.distribute in ("mirrored", "multiworker") else 1


def global_batch(cfg: RunConfig) -> int:
    """Windows per optimizer step.  ``--batch-size`` is per worker: one host's batch is split over
    its devices (mirrored), and under multiworker the global batch is batch_size x workers, each
    worker taking its own slice of every global batch (tf.data's DATA auto-shard)."""
    return cfg.batch_size * workers(cfg)


def worker_dir(run: RunDir, cfg: RunConfig, resume: bool) -> RunDir:
    """The run directory this process writes.

    On one host, and for the multiworker chief, the run directory itself.  Every
    other worker runs the same epochs (saving a model may take part in collective
    ops, so all workers save) into a private temporary folder that is removed
    when the run object goes or the process ends (or, if the process was killed,
    by the next worker started on the host), as TensorFlow's multi-worker
    guide recommends: only the chief writes checkpoints, state.json, metrics and
    model.npz.  Resuming, that folder starts with a copy of the chief's config,
    vocabulary, state and last checkpoint, so every worker restarts from the same
    weights and optimizer state (``--out`` must be the chief's run directory, on
    a shared file system, or a copy of it).  Also creates the strategy, before
    TensorFlow runs anything else.
    """
    if cfg.distribute == "none":
        return run
    _strategy(cfg)
    import shutil
    import tempfile
    import weakref

    # Every worker process, the chief too, keeps its scratch files (its run folder if it is
    # not the chief, and the temporary files Keras makes while saving a model) in one folder
    # named by its process id: a worker killed outright cannot remove it, the next one does.
    _remove_dead_workers_dirs(Path(tempfile.gettempdir()))
    scratch = Path(tempfile.mkdtemp(prefix=f"abcgen-worker-{os.getpid()}-"))
    (scratch / "tmp").mkdir()
    tempfile.tempdir = str(scratch / "tmp")
    if is_chief(cfg):
        weakref.finalize(run, _drop_scratch, scratch)
        return run
    tmp = scratch / "run"
    tmp.mkdir()
    if resume:
        state = run.read_json("state.json")
        for name in ("config.json", "vocab.json", "state.json", "metrics.csv", state.get("checkpoint")):
            if name and (run.path / name).is_file():
                shutil.copy2(run.path / name, tmp / name)
    mine = RunDir(tmp)
    weakref.finalize(mine, _drop_scratch, scratch)
    return mine


def _drop_scratch(scratch: Path) -> None:
    import shutil
    import tempfile

    if tempfile.tempdir == str(scratch / "tmp"):
        tempfile.tempdir = None
    shutil.rmtree(scratch, ignore_errors=True)


def _remove_dead_workers_dirs(tmp: Path) -> None:
    """A worker killed outright cannot remove its folder; the next worker on the host does."""
    import shutil

    for d in tmp.glob("abcgen-worker-*-*"):
        pid = d.name.split("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass  # alive (another user's): not ours to remove


def _lost_worker(e: BaseException) -> bool:
    """TensorFlow's word for a peer that died: its collectives abort (heartbeats stop)."""
    return type(e).__name__ in ("UnavailableError", "AbortedError", "DeadlineExceededError", "CancelledError")


def load_model(path: Path, cfg: RunConfig | None = None):
    import keras

    try:
        if cfg is not None:
            with strategy_scope(cfg):
                return keras.models.load_model(path)
        return keras.models.load_model(path)
    except Exception as e:
        raise InputError(f"cannot load the model ({type(e).__name__}: {e})", file=str(path)) from None


def tf_dataset(x, y, batch_size: int, replicas: int = 1):
    """Batches of windows.  Under a distribution strategy every batch is whole and
    divisible by the replicas (a replica with an empty shard fails in AddN)."""
    import numpy as np
    import tensorflow as tf

    if replicas > 1:
        if len(x) < replicas:
            reps = -(-replicas // max(1, len(x)))
            x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
        batch_size = min(batch_size, len(x))
        batch_size -= batch_size % replicas
        drop = True
    else:
        drop = len(x) >= batch_size
    # Under multiworker each worker builds the same batches and keeps its own slice of
    # every one (DATA: the in-memory windows have no files to split by).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .batch(batch_size, drop_remainder=drop)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def trained_windows(n: int, cfg: RunConfig, nrep: int) -> int:
    """Windows an epoch of ``tf_dataset`` trains on: all of them on one replica; under a
    strategy only whole global batches (a remainder is dropped), which tokens/s must count."""
    if nrep <= 1:
        return n
    n = max(n, nrep)
    batch = min(global_batch(cfg), n)
    batch -= batch % nrep
    return n // batch * batch


def fit_epoch(model, x, y, cfg: RunConfig, nrep: int, quiet_verbose: int) -> tuple[float, float]:
    """One pass of ``model.fit`` over the windows (x, y): (train loss, wall seconds).

    Keras' progress bar goes to stderr; ``quiet_verbose`` is Keras' verbosity
    when stderr is no terminal."""
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        h = model.fit(tf_dataset(x, y, global_batch(cfg), nrep), epochs=1, shuffle=False,
                      verbose=1 if sys.stderr.isatty() else quiet_verbose)
    return float(h.history["loss"][-1]), time.monotonic() - t0


# --------------------------------------------------------------------------
# Seeding and the epoch loop


def fresh_state(cfg: RunConfig) -> dict:
    """The run state before the first epoch (state.json holds it after each one)."""
    return {"epoch": 0, "best_valid": None, "best_epoch": 0, "bad_epochs": 0, "lr": cfg.lr,
            "history": [], "stopped": None}


def seed_epoch(model, cfg: RunConfig, epoch: int) -> None:
    """Seeds from (seed, epoch) only, so a resumed run draws what an uninterrupted one would."""
    import keras

    keras.utils.set_random_seed(cfg.seed * 1000 + epoch)
    reseed_layers(model, cfg.seed * 1000 + epoch)


def reseed_layers(model, seed: int) -> None:
    """Reset every layer's random state (dropout) from (seed, epoch).

    A layer's SeedGenerator is created once with the model, so the global seed
    alone does not make an epoch's dropout masks depend on the epoch only; a
    resumed run would draw other masks than an uninterrupted one.
    """
    import numpy as np

    for layer in model._flatten_layers(include_self=False, recursive=True):
        sg = getattr(layer, "seed_generator", None)
        if sg is not None and hasattr(sg, "state"):
            sg.state.assign(np.asarray([seed, 0], dtype=sg.state.dtype))


def end_epoch(run: RunDir, model, state: dict, cfg: RunConfig, epoch: int, history: list, valid: float,
              on_best, plot=None, what: str = "valid loss") -> bool:
    """The bookkeeping after an epoch, the same for every format: a better valid figure
    saves best.keras and calls on_best (the export); a worse one halves the learning rate
    and, after cfg.patience of them, stops the run; then the checkpoint and the metrics
    are written.  Returns whether the epoch improved."""
    improved = state["best_valid"] is None or valid < state["best_valid"]
    if improved:
        state.update(best_valid=valid, best_epoch=epoch, bad_epochs=0)
        run.save_model(model, "best.keras")
        on_best()
    else:
        state["bad_epochs"] += 1
        state["lr"] = state["lr"] * 0.5
        model.optimizer.learning_rate.assign(state["lr"])
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = (f"early stop after epoch {epoch}: {what} did not improve "
                                f"for {cfg.patience} epochs")
    state["epoch"] = epoch
    state["history"] = history
    run.checkpoint(model, state)
    run.write_metrics(history, plot=plot)
    return improved


def interrupted(run: RunDir, model, epoch: int, state: dict, log) -> None:
    """Ctrl-C: keep the weights of the unfinished epoch beside the last checkpoint, then re-raise."""
    run.save_model(model, "interrupted.keras")
    log(f"interrupted in epoch {epoch}: weights saved to {run.path / 'interrupted.keras'}; "
        f"--resume continues from the checkpoint of epoch {state['epoch']}")
    raise KeyboardInterrupt


def epoch_loop(run: RunDir, model, state: dict, cfg: RunConfig, one_epoch, log, *, plot=None,
               what: str = "valid loss") -> dict:
    """Epochs until ``cfg.epochs`` or an early stop, each seeded from (seed, epoch).

    ``one_epoch(epoch)`` trains and measures one epoch and returns (metrics
    row, valid figure (lower is better), on_best (the export), line(improved)
    (the log line)); the row joins the history before the bookkeeping.  Ctrl-C
    keeps the weights of the unfinished epoch (``interrupted``).  Returns the
    final state.
    """
    history = state["history"]
    epoch = state["epoch"]
    try:
        while epoch < cfg.epochs and state["stopped"] is None:
            epoch += 1
            seed_epoch(model, cfg, epoch)
            row, valid, on_best, line = one_epoch(epoch)
            history.append(row)
            improved = end_epoch(run, model, state, cfg, epoch, history, valid, on_best=on_best,
                                 plot=plot, what=what)
            log(line(improved))
    except KeyboardInterrupt:
        interrupted(run, model, epoch, state, log)
    except Exception as e:
        if cfg.distribute != "multiworker" or not _lost_worker(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AbcgenError(f"multiworker: a worker stopped during epoch {epoch} ({type(e).__name__}: "
                          f"{first[:200]}); restart every worker with --resume to continue from the "
                          f"chief's checkpoint of epoch {state['epoch']}") from None
    if state["stopped"]:
        log(state["stopped"])
    return state
