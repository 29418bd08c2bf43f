"""``abcgen train --format abc``: the Keras LSTM that learns canonical ABC.

Data: every train tune is framed ``<s> ... </s>`` and the tunes are packed
end to end into one stream, cut into windows of ``seq_len`` tokens.  Packing
rather than bucketing: no padding is computed or masked, every window is full,
and the markers teach the model where tunes start and end.  Each epoch draws a
new tune order and a new window offset from (seed, epoch), so a resumed run
sees exactly the data an uninterrupted one would.

Checkpoints: after every epoch the model (weights and optimizer state) goes to
a new ``ckpt-NNN.keras`` file, and only then ``state.json`` is atomically
replaced to point at it, so a run killed at any moment leaves the last good
checkpoint named by ``state.json``.  ``best.keras`` and ``model.npz`` (the
export the NumPy sampler loads) follow the best valid loss.

Schedule: Adam with gradient clipping; the learning rate is halved after an
epoch whose valid loss does not improve, and training stops early after
``patience`` such epochs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import atomic_write_text

LN2 = math.log(2)

# Options that shape the model or its data: a run directory keeps them for life.
FROZEN = ("format", "corpus", "level", "layers", "hidden", "embed_dim", "transpose")


@dataclass
class TrainConfig:
    format: str = "abc"
    corpus: str = "folk"
    level: str = "token"
    layers: int = 1
    hidden: int = 512
    embed_dim: int = 128
    dropout: float = 0.2
    seq_len: int = 256
    batch_size: int = 64
    epochs: int = 20
    lr: float = 2e-3
    clipnorm: float = 5.0
    patience: int = 3
    seed: int = 1
    transpose: str = "none"
    max_train_tokens: int = 0  # 0: all; else the train stream is cut (quick runs, tests)
    distribute: str = "none"   # none | mirrored

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------
# Data


@dataclass
class Data:
    vocab: object
    train: list          # list of int32 arrays, one per tune: <s> ids </s>
    valid: list
    test: list
    chars: dict          # characters of the model texts per split


def load_data(cfg: TrainConfig, log=None) -> Data:
    """Prepared corpus -> vocabulary and framed token arrays per split."""
    from .abc.tokens import Vocabulary
    from .corpus import prepare

    prep = prepare(cfg.corpus, transpose=cfg.transpose, progress=log is not None)
    texts = {s: prep.texts(s) for s in ("train", "valid", "test")}
    if not texts["train"] or not texts["valid"]:
        raise InputError(f"corpus {cfg.corpus!r} has {len(texts['train'])} train and "
                         f"{len(texts['valid'])} valid tunes; training needs both")
    # The vocabulary is the symbol inventory of all splits (no statistics of
    # valid or test leak through it), so held-out text never fails to encode.
    vocab = Vocabulary.build(texts["train"] + texts["valid"] + texts["test"], cfg.level)
    enc = {s: [np.asarray(vocab.encode(t), dtype=np.int32) for t in ts] for s, ts in texts.items()}
    chars = {s: sum(len(t) for t in ts) for s, ts in texts.items()}
    return Data(vocab, enc["train"], enc["valid"], enc["test"], chars)


def pack(tunes: list, order=None) -> np.ndarray:
    if order is not None:
        tunes = [tunes[i] for i in order]
    return np.concatenate(tunes) if tunes else np.zeros(0, np.int32)


def windows(stream: np.ndarray, seq_len: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = (len(stream) - 1 - offset) // seq_len
    x = stream[offset:offset + n * seq_len].reshape(n, seq_len)
    y = stream[offset + 1:offset + 1 + n * seq_len].reshape(n, seq_len)
    return x, y


def epoch_windows(data: Data, cfg: TrainConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The training windows of one epoch, drawn from (seed, epoch) only."""
    rng = np.random.default_rng([cfg.seed, epoch])
    stream = pack(data.train, rng.permutation(len(data.train)))
    if cfg.max_train_tokens:
        stream = stream[:cfg.max_train_tokens + 1]
    x, y = windows(stream, cfg.seq_len, int(rng.integers(cfg.seq_len)))
    perm = rng.permutation(len(x))
    return x[perm], y[perm]


def tf_dataset(x, y, batch_size: int, replicas: int = 1):
    """Batches of windows.  Under a distribution strategy every batch is whole and
    divisible by the replicas (a replica with an empty shard fails in AddN)."""
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
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .batch(batch_size, drop_remainder=drop)
            .prefetch(tf.data.AUTOTUNE))


def replicas(cfg: TrainConfig) -> int:
    return _strategy(cfg).num_replicas_in_sync if cfg.distribute == "mirrored" else 1


# --------------------------------------------------------------------------
# Model


def compile_model(model, cfg: TrainConfig):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, clipnorm=cfg.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


_STRATEGIES: dict = {}


def _strategy(cfg: TrainConfig):
    """One MirroredStrategy per process: the model, its reload and the batch split share it."""
    if "mirrored" not in _STRATEGIES:
        import tensorflow as tf

        _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy()
    return _STRATEGIES["mirrored"]


def strategy_scope(cfg: TrainConfig):
    if cfg.distribute == "mirrored":
        return _strategy(cfg).scope()
    if cfg.distribute != "none":
        raise InputError(f"--distribute must be none or mirrored, not {cfg.distribute!r}")
    return contextlib.nullcontext()


def new_model(cfg: TrainConfig, vocab_size: int):
    import keras

    from .model import build_text_model

    keras.utils.set_random_seed(cfg.seed)
    with strategy_scope(cfg):
        model = build_text_model(vocab_size, embed_dim=cfg.embed_dim, hidden=cfg.hidden,
                                 layers=cfg.layers, dropout=cfg.dropout)
        compile_model(model, cfg)
    return model


def load_model(path: Path, cfg: TrainConfig | None = None):
    import keras

    try:
        if cfg is not None:
            with strategy_scope(cfg):
                return keras.models.load_model(path)
        return keras.models.load_model(path)
    except Exception as e:
        raise InputError(f"cannot load the model ({type(e).__name__}: {e})", file=str(path)) from None


def tune_bits(model, tunes: list, batch_size: int = 32) -> tuple[float, int]:
    """Total bits of every tune from its <s> (full context), and the number of predicted tokens."""
    import tensorflow as tf

    from .step import padded_batches

    total, count = 0.0, 0
    for x, y, mask in padded_batches(tunes, batch_size):
        logits = model(x, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y.astype(np.int32), logits=logits).numpy()
        total += float(nll[mask].sum()) / LN2
        count += int(mask.sum())
    return total, count


# --------------------------------------------------------------------------
# Run directory


def _share(path: Path) -> None:
    """The mode a plain open() gives (0644 under the usual umask), as the other run files have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


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
        tmp = self.path / f".tmp-{os.getpid()}-{name}"
        try:
            model.save(tmp)
            os.replace(tmp, self.path / name)
        finally:
            if tmp.exists():
                tmp.unlink()

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
        # The columns in the order of the first write: state.json (sorted keys) must not reorder them
        # on --resume.
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
# Training


def resolve_config(run: RunDir, resume: bool, given: dict, cls=TrainConfig, frozen=FROZEN):
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
            if k in frozen and v != getattr(saved, k):
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


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter is not for users.

    TF_CPP_MIN_LOG_LEVEL is set before TensorFlow loads; the lines its C++
    libraries write before their logging starts (oneDNN, CUDA stubs, cuInit
    on a machine with no GPU) ignore it, so the import and the first device
    query run with file descriptor 2 sent to a temporary file, which is shown
    only when the import fails.
    """
    import sys
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


def check_out(out: Path, resume: bool) -> None:
    """--out must be a folder that is or can be made writable: one line (exit 2) before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a run folder; choose another --out")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"--out {out}: {probe} is a file, not a folder")
    try:
        import tempfile

        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"--out {out} is not writable: {e.strerror or e}") from None


def run_format(out: Path, given: dict, resume: bool) -> str:
    """The format asked for, else (resuming) the run's own, else abc."""
    if given.get("format"):
        return given["format"]
    cfg = Path(out) / "config.json"
    if resume and cfg.is_file():
        return RunDir(out).read_json("config.json").get("format", "abc")
    return "abc"


def train(out: Path, given: dict, resume: bool = False, log=print) -> dict:
    """Train (or resume) a model into the run directory; returns the final state."""
    check_out(out, resume)
    quiet_tensorflow()
    if run_format(out, given, resume) == "pianoroll":
        from .pianoroll_train import train_roll

        return train_roll(out, given, resume=resume, log=log)
    run = RunDir(out)
    cfg = resolve_config(run, resume, given)
    if cfg.format != "abc":
        raise InputError(f"--format must be abc or pianoroll, not {cfg.format!r}")
    run.path.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg, log=log)

    if resume:
        from .abc.tokens import Vocabulary

        saved_vocab = Vocabulary.load(run.path / "vocab.json")
        if saved_vocab != data.vocab:
            raise InputError(f"the vocabulary in {run.path / 'vocab.json'} does not match corpus "
                             f"{cfg.corpus!r} at level {cfg.level!r} as prepared now; "
                             "train into another --out")
        state = run.read_json("state.json")
        model = load_model(run.path / state["checkpoint"], cfg)
        model.optimizer.learning_rate.assign(state["lr"])
        log(f"resuming {run.path} after epoch {state['epoch']} (lr {state['lr']:.3g})")
    else:
        model = new_model(cfg, len(data.vocab))
        data.vocab.save(run.path / "vocab.json")
        _share(run.path / "vocab.json")
        state = fresh_state(cfg)
    run.write_json("config.json", asdict(cfg))

    vx, vy = windows(pack(data.valid), cfg.seq_len)
    if len(vx) == 0:
        vx, vy = windows(pack(data.valid), max(2, len(pack(data.valid)) // 2))
    nrep = replicas(cfg)
    valid_ds = tf_dataset(vx, vy, cfg.batch_size, nrep)
    # bits per character = bits per predicted token x predicted tokens per character of
    # the model texts, so char- and token-level models compare on the same scale.
    valid_tok_per_char = sum(len(t) for t in data.valid) / max(1, data.chars["valid"])
    train_tok_per_char = sum(len(t) for t in data.train) / max(1, data.chars["train"])
    log(f"train {len(data.train)} tunes, valid {len(data.valid)}; vocabulary {len(data.vocab)} "
        f"({cfg.level}); model {cfg.layers}x{cfg.hidden}, {model.count_params():,} parameters")

    history = state["history"]
    epoch = state["epoch"]
    try:
        while epoch < cfg.epochs and state["stopped"] is None:
            epoch += 1
            seed_epoch(model, cfg, epoch)
            x, y = epoch_windows(data, cfg, epoch)
            t0 = time.monotonic()
            with contextlib.redirect_stdout(sys.stderr):  # Keras' progress bar goes to stderr
                h = model.fit(tf_dataset(x, y, cfg.batch_size, nrep), epochs=1, shuffle=False,
                              verbose=1 if sys.stderr.isatty() else 2)
            wall = time.monotonic() - t0
            with contextlib.redirect_stdout(sys.stderr):
                vloss = float(model.evaluate(valid_ds, verbose=0))
            tloss = float(h.history["loss"][-1])
            row = {
                "epoch": epoch,
                "train_loss": round(tloss, 5),
                "train_bits_per_token": round(tloss / LN2, 5),
                "train_bits_per_char": round(tloss / LN2 * train_tok_per_char, 5),
                "valid_loss": round(vloss, 5),
                "valid_bits_per_token": round(vloss / LN2, 5),
                "valid_bits_per_char": round(vloss / LN2 * valid_tok_per_char, 5),
                "valid_perplexity": round(math.exp(vloss), 4),
                "lr": float(state["lr"]),
                "wall_s": round(wall, 1),
                "tokens_per_s": round(x.size / wall, 1),
            }
            history.append(row)
            improved = end_epoch(run, model, state, cfg, epoch, history, vloss,
                                 on_best=lambda: export_for_sampling(model, run, cfg, data.vocab, row))
            log(f"epoch {epoch}: valid {row['valid_bits_per_token']:.4f} bits/token, "
                f"{row['valid_bits_per_char']:.4f} bits/char{' (best)' if improved else ''}; "
                f"{row['tokens_per_s']:.0f} tokens/s")
    except KeyboardInterrupt:
        interrupted(run, model, epoch, state, log)
    if state["stopped"]:
        log(state["stopped"])
    return state


def fresh_state(cfg) -> dict:
    """The run state before the first epoch (state.json holds it after each one)."""
    return {"epoch": 0, "best_valid": None, "best_epoch": 0, "bad_epochs": 0, "lr": cfg.lr,
            "history": [], "stopped": None}


def seed_epoch(model, cfg, epoch: int) -> None:
    """Seeds from (seed, epoch) only, so a resumed run draws what an uninterrupted one would."""
    import keras

    keras.utils.set_random_seed(cfg.seed * 1000 + epoch)
    reseed_layers(model, cfg.seed * 1000 + epoch)


def end_epoch(run: "RunDir", model, state: dict, cfg, epoch: int, history: list, valid: float,
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
    if plot is None:
        run.write_metrics(history)
    else:
        run.write_metrics(history, plot=plot)
    return improved


def interrupted(run: "RunDir", model, epoch: int, state: dict, log) -> None:
    """Ctrl-C: keep the weights of the unfinished epoch beside the last checkpoint, then re-raise."""
    run.save_model(model, "interrupted.keras")
    log(f"interrupted in epoch {epoch}: weights saved to {run.path / 'interrupted.keras'}; "
        f"--resume continues from the checkpoint of epoch {state['epoch']}")
    raise KeyboardInterrupt


def reseed_layers(model, seed: int) -> None:
    """Reset every layer's random state (dropout) from (seed, epoch).

    A layer's SeedGenerator is created once with the model, so the global seed
    alone does not make an epoch's dropout masks depend on the epoch only; a
    resumed run would draw other masks than an uninterrupted one.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        sg = getattr(layer, "seed_generator", None)
        if sg is not None and hasattr(sg, "state"):
            sg.state.assign(np.asarray([seed, 0], dtype=sg.state.dtype))


def export_for_sampling(model, run: RunDir, cfg: TrainConfig, vocab, row: dict) -> None:
    from .model import export_npz

    meta = {"vocab": vocab.to_dict(), "config": asdict(cfg), "epoch": row["epoch"],
            "valid_bits_per_char": row["valid_bits_per_char"]}
    export_npz(model, run.path / "model.npz", meta, dtype="float32")
