"""``abcgen train --format abc``: the Keras LSTM that learns canonical ABC.

Data: every train tune is framed ``<s> ... </s>`` and the tunes are packed
end to end into one stream, cut into windows of ``seq_len`` tokens.  Packing
rather than bucketing: no padding is computed or masked, every window is full,
and the markers teach the model where tunes start and end.  Each epoch draws a
new tune order and a new window offset from (seed, epoch), so a resumed run
sees exactly the data an uninterrupted one would.

Checkpoints (the run layer, abcgen.runs, shared with the piano-roll trainer):
after every epoch the model (weights and optimizer state) goes to a new
``ckpt-NNN.keras`` file, and only then ``state.json`` is atomically replaced to
point at it, so a run killed at any moment leaves the last good checkpoint
named by ``state.json``.  ``best.keras`` and ``model.npz`` (the export the
NumPy sampler loads) follow the best valid loss.

Schedule: Adam with gradient clipping; the learning rate is halved after an
epoch whose valid loss does not improve, and training stops early after
``patience`` such epochs.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import plain_mode
from .runs import (RunDir, TrainConfig, check_out, epoch_loop, fit_epoch, fresh_state, global_batch, load_model,
                   quiet_tensorflow, replicas, resolve_config, strategy_scope, tf_dataset, trained_windows,
                   worker_dir)

LN2 = math.log(2)

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


# --------------------------------------------------------------------------
# Model


def compile_model(model, cfg: TrainConfig):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, clipnorm=cfg.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def new_model(cfg: TrainConfig, vocab_size: int):
    import keras

    from .model import build_text_model

    keras.utils.set_random_seed(cfg.seed)
    with strategy_scope(cfg):
        model = build_text_model(vocab_size, embed_dim=cfg.embed_dim, hidden=cfg.hidden,
                                 layers=cfg.layers, dropout=cfg.dropout)
        compile_model(model, cfg)
    return model


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
# Training


def train(out: Path, given: dict, resume: bool = False, log=print) -> dict:
    """Train (or resume) a text model into the run directory; returns the final state."""
    check_out(out)
    quiet_tensorflow()
    run = RunDir(out)
    cfg = resolve_config(run, resume, given, TrainConfig)
    if cfg.format != "abc":
        raise InputError(f"--format must be abc or pianoroll, not {cfg.format!r}")
    run = worker_dir(run, cfg, resume)  # multiworker: only the chief writes into --out
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
        plain_mode(run.path / "vocab.json")   # mkstemp made it 0600
        state = fresh_state(cfg)
    run.write_json("config.json", asdict(cfg))

    vx, vy = windows(pack(data.valid), cfg.seq_len)
    if len(vx) == 0:
        vx, vy = windows(pack(data.valid), max(2, len(pack(data.valid)) // 2))
    nrep = replicas(cfg)
    valid_ds = tf_dataset(vx, vy, global_batch(cfg), nrep)
    # bits per character = bits per predicted token x predicted tokens per character of
    # the model texts, so char- and token-level models compare on the same scale.
    valid_tok_per_char = sum(len(t) for t in data.valid) / max(1, data.chars["valid"])
    train_tok_per_char = sum(len(t) for t in data.train) / max(1, data.chars["train"])
    log(f"train {len(data.train)} tunes, valid {len(data.valid)}; vocabulary {len(data.vocab)} "
        f"({cfg.level}); model {cfg.layers}x{cfg.hidden}, {model.count_params():,} parameters")

    def one_epoch(epoch: int):
        x, y = epoch_windows(data, cfg, epoch)
        tloss, wall = fit_epoch(model, x, y, cfg, nrep, quiet_verbose=2)
        with contextlib.redirect_stdout(sys.stderr):
            vloss = float(model.evaluate(valid_ds, verbose=0))
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
            "tokens_per_s": round(trained_windows(len(x), cfg, nrep) * x.shape[1] / wall, 1),
        }

        def line(improved: bool) -> str:
            return (f"epoch {epoch}: valid {row['valid_bits_per_token']:.4f} bits/token, "
                    f"{row['valid_bits_per_char']:.4f} bits/char{' (best)' if improved else ''}; "
                    f"{row['tokens_per_s']:.0f} tokens/s")

        return row, vloss, lambda: export_for_sampling(model, run, cfg, data.vocab, row), line

    return epoch_loop(run, model, state, cfg, one_epoch, log)


def export_for_sampling(model, run: RunDir, cfg: TrainConfig, vocab, row: dict) -> None:
    from .model import export_npz

    meta = {"vocab": vocab.to_dict(), "config": asdict(cfg), "epoch": row["epoch"],
            "valid_bits_per_char": row["valid_bits_per_char"]}
    export_npz(model, run.path / "model.npz", meta, dtype="float32")
