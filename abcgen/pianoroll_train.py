"""``abcgen train --format pianoroll``: an LSTM over piano-roll frames, and its evaluation.

Model: frames (the roll's columns plus a start column) -> N x LSTM -> dropout ->
Dense logits, one per column; a sigmoid gives the probability that the column
is on in the next frame.  Loss: binary cross-entropy averaged over columns,
with ``pos_weight`` multiplying the terms of the notes that sound (a missed note
costs W times a spurious one: fewer false negatives), or a focal loss
(``loss="focal"``: each term times (1 - p_t)^gamma, so easy cells count less).

Data: each piece is one sequence whose first input is the start frame; frame t
is predicted from frames < t.  Pieces are packed end to end and cut into
windows of ``window`` frames (the start frame marks where a piece begins, as
``<s>`` does in the text mode); each epoch draws a new piece order and window
offset from (seed, epoch).  Evaluation runs every piece whole from its start
frame, so every frame is scored with its full history: NLL per frame is the
Bernoulli negative log-likelihood summed over the columns (the 88 keys on JSB),
averaged over all frames, and frame accuracy is TP / (TP + FP + FN) summed
over all frames (Bay et al. 2009), of the model's own decision about each frame:
keys at probability 0.5 for independent keys; for a NADE output, evaluate_run
reports abcgen.nade.DEFAULT_DECISION (marginals estimated from seeded samples,
thresholded) beside the greedy key-by-key rule, which the per-epoch figures use.

Run directory, checkpoints, resume, seeding, metrics.csv and curves.png are
the run layer's (abcgen.runs), as for the text model.  The epoch with the best valid NLL per frame is
kept as ``best.keras`` and exported to ``model.npz`` for the NumPy sampler.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import InputError
from .pianoroll import (JSB_ENCODING, SPLITS, Encoding, add_counts, is_jsb, model_input, roll_counts,
                        roll_metrics, run_rolls)
from .runs import (RollConfig, RunDir, check_out, epoch_loop, fit_epoch, fresh_state, load_model, plot_curves,
                   quiet_tensorflow, replicas, resolve_config, strategy_scope, worker_dir)

LOSSES = ("bce", "focal")
OUTPUTS = ("independent", "nade")
TRAIN_EVAL_FRAMES = 20000   # train metrics over the first pieces up to this many frames

# Published JSB Chorales test figures: NLL per frame, frame accuracy % (None: not reported).
PUBLISHED = [
    ("RNN (Boulanger-Lewandowski et al. 2012)", 8.71, 28.46),
    ("LSTM (Chung et al. 2014)", 8.67, None),
    ("RNN-RBM (Boulanger-Lewandowski et al. 2012)", 6.27, 33.12),
    ("RNN-NADE, Hessian-free (Boulanger-Lewandowski et al. 2012)", 5.56, 32.50),
]


def encoding(cfg: RollConfig) -> Encoding:
    """The roll encoding of a run's config."""
    return Encoding(frames=cfg.frames, pitches=cfg.pitches, onsets=cfg.onsets)


def settle(cfg: RollConfig) -> RollConfig:
    """Fill in the corpus defaults and check the options, before anything is written."""
    if is_jsb(cfg.corpus):
        cfg.frames = cfg.frames or JSB_ENCODING.frames
        cfg.pitches = cfg.pitches or JSB_ENCODING.pitches
    cfg.frames = cfg.frames or "10"
    cfg.pitches = cfg.pitches or 128
    encoding(cfg)  # raises on a bad --frames or --pitches
    if cfg.loss not in LOSSES:
        raise InputError(f"--loss must be one of {', '.join(LOSSES)}, not {cfg.loss!r}")
    if cfg.pos_weight <= 0:
        raise InputError(f"--pos-weight must be positive, not {cfg.pos_weight}")
    if cfg.window < 2:
        raise InputError(f"--window must be at least 2 frames, not {cfg.window}")
    if cfg.layers < 1 or cfg.hidden < 1 or cfg.batch_size < 1:
        raise InputError("--layers, --hidden and --batch-size must be positive")
    if cfg.output not in OUTPUTS:
        raise InputError(f"--output must be one of {', '.join(OUTPUTS)}, not {cfg.output!r}")
    if cfg.output == "nade":
        if cfg.nade_hidden < 1:
            raise InputError("--nade-hidden must be positive")
        if cfg.loss != "bce" or cfg.pos_weight != 1.0:
            raise InputError("--output nade is trained on its exact likelihood: it takes neither "
                             "--loss focal nor --pos-weight")
    return cfg


# --------------------------------------------------------------------------
# Model


def _loss_class():
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="abcgen", name="RollLoss")
    class RollLoss(keras.losses.Loss):
        """Per-frame mean over columns of weighted (optionally focal) sigmoid cross-entropy."""

        def __init__(self, pos_weight: float = 1.0, gamma: float = 0.0, name: str = "roll_loss", **kw):
            super().__init__(name=name, **kw)
            self.pos_weight = float(pos_weight)
            self.gamma = float(gamma)

        def call(self, y_true, y_pred):
            y = tf.cast(y_true, y_pred.dtype)
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=y_pred)
            w = 1.0 + (self.pos_weight - 1.0) * y
            if self.gamma:
                p = tf.sigmoid(y_pred)
                pt = y * p + (1.0 - y) * (1.0 - p)
                w = w * tf.pow(1.0 - pt, self.gamma)
            return tf.reduce_mean(ce * w, axis=-1)

        def get_config(self):
            return dict(super().get_config(), pos_weight=self.pos_weight, gamma=self.gamma)

    return RollLoss


_ROLL_LOSS = None


def roll_loss():
    """The loss class, built (and registered with Keras) on first use, so that importing this
    module loads no TensorFlow: TensorFlow's start-up lines are silenced only when
    runs.quiet_tensorflow loads it first."""
    global _ROLL_LOSS
    if _ROLL_LOSS is None:
        _ROLL_LOSS = _loss_class()
    return _ROLL_LOSS


def register_custom_objects() -> None:
    """What a saved roll model needs registered before keras.models.load_model reads it."""
    from .nade import keras_layer

    roll_loss()
    keras_layer()


def __getattr__(name):
    if name == "RollLoss":
        return roll_loss()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_roll_model(width: int, *, hidden: int = 512, layers: int = 1, dropout: float = 0.2,
                     output: str = "independent", nade_hidden: int = 150):
    """Frames (width + start column) in, next-frame logits (width) out.

    With ``output="nade"`` the input also carries the true next frame (width more columns), and
    each key's logit is conditioned on the keys below it in that frame (abcgen.nade): the
    model's loss is then the exact negative log-likelihood of the frame."""
    import keras

    from .nade import columns_layer, keras_layer

    cols = width + 1 + (width if output == "nade" else 0)
    inputs = keras.Input(shape=(None, cols), dtype="float32", name="frames")
    x = inputs if output != "nade" else columns_layer()(0, width + 1, name="past")(inputs)
    for i in range(layers):
        # The cuDNN-eligible settings, as in abcgen.model.build_text_model.
        x = keras.layers.LSTM(hidden, activation="tanh", recurrent_activation="sigmoid",
                              recurrent_dropout=0.0, unroll=False, use_bias=True,
                              return_sequences=True, name=f"lstm_{i}")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if output == "nade":
        frame = columns_layer()(width + 1, cols, name="frame")(inputs)
        outputs = keras_layer()(keys=width, hidden=nade_hidden, name="nade")([x, frame])
    else:
        outputs = keras.layers.Dense(width, name="logits")(x)
    return keras.Model(inputs, outputs, name="abcgen_pianoroll")


def new_model(cfg: RollConfig, width: int):
    import keras

    keras.utils.set_random_seed(cfg.seed)
    with strategy_scope(cfg):
        model = build_roll_model(width, hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout,
                                 output=cfg.output, nade_hidden=cfg.nade_hidden)
        gamma = cfg.focal_gamma if cfg.loss == "focal" else 0.0
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, clipnorm=cfg.clipnorm),
                      loss=roll_loss()(pos_weight=cfg.pos_weight, gamma=gamma))
    return model


def is_nade(model) -> bool:
    return any(layer.name == "nade" for layer in model.layers)


def with_frames(x: np.ndarray, y: np.ndarray, model) -> np.ndarray:
    """The model's input: the past frames, and for a NADE output the true frames beside them."""
    return np.concatenate([x, y.astype(np.float32)], axis=-1) if is_nade(model) else x


def init_output_bias(model, rolls: list) -> None:
    """Start each column's bias at the logit of its train frequency, not at p = 0.5.

    A roll is sparse (about 4 of 88 keys sound), so a fresh model first spends
    epochs learning that most keys are off; starting from the marginals it
    begins where a frame-independent model ends.
    """
    y = np.concatenate(rolls).astype(np.float64)
    p = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    bias = model.get_layer("nade").bv_bias if is_nade(model) else model.get_layer("logits").bias
    bias.assign(np.log(p / (1 - p)).astype(np.float32))


def export_npz(model, path: Path, meta: dict) -> None:
    """LSTM and output weights under stable names + JSON meta; loads with allow_pickle=False.
    Written by step.save_npz, the one .npz writer of abcgen (float32 here)."""
    from .step import save_npz

    arrays = {}
    i = 0
    while True:
        try:
            cell = model.get_layer(f"lstm_{i}").cell
        except ValueError:
            break
        for name in ("kernel", "recurrent_kernel", "bias"):
            arrays[f"lstm_{i}/{name}"] = np.array(getattr(cell, name).numpy(), np.float32)
        i += 1
    if is_nade(model):
        arrays.update(model.get_layer("nade").arrays())
        output = "nade"
    else:
        dense = model.get_layer("logits")
        arrays["logits/kernel"] = np.array(dense.kernel.numpy(), np.float32)
        arrays["logits/bias"] = np.array(dense.bias.numpy(), np.float32)
        output = "independent"
    meta = dict(meta, kind="pianoroll", layers=i, output=output,
                hidden=int(arrays["lstm_0/recurrent_kernel"].shape[0]))
    save_npz(path, arrays, meta, dtype="float32")


# --------------------------------------------------------------------------
# Data and evaluation


def packed(rolls: list) -> tuple[np.ndarray, np.ndarray]:
    """Pieces end to end: inputs (start frame, frames 0..T-2 of each) and targets (frames 0..T-1)."""
    x = np.concatenate([model_input(r) for r in rolls])
    y = np.concatenate(rolls).astype(np.float32)
    return x, y


def epoch_windows(rolls: list, cfg: RollConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The training windows of one epoch, drawn from (seed, epoch) only."""
    rng = np.random.default_rng([cfg.seed, epoch])
    x, y = packed([rolls[i] for i in rng.permutation(len(rolls))])
    w = min(cfg.window, len(x))
    off = int(rng.integers(w)) if len(x) >= 2 * w else 0
    n = (len(x) - off) // w
    x = x[off:off + n * w].reshape(n, w, -1)
    y = y[off:off + n * w].reshape(n, w, -1)
    perm = rng.permutation(n)
    return x[perm], y[perm]


def evaluate_rolls(model, rolls: list, batch_size: int = 32, decisions=("greedy",)) -> dict:
    """Counts over whole pieces, each from its start frame (full history for every frame), under
    each decision rule: {rule name: counts}.

    The NLL is exact for both outputs.  The decisions (FP, FN, frame accuracy) are the model's
    own, never the true frame's: keys above probability 0.5 for independent keys (whatever the
    rule); for a NADE, ``greedy`` decides each key at 0.5 given the keys below it as the model
    decided them, and the other rules of abcgen.nade.Decision (e.g. ``marginal-128>0.25``)
    draw their samples from a generator seeded by (the rule's seed, the piece's index in
    ``rolls``), so the figure does not depend on the batching."""
    import keras

    from .nade import Decision

    nade = is_nade(model)
    rules = list({d.name: d for d in map(Decision.parse, decisions)}.values())
    if nade:
        from .nade import Nade

        joint = Nade.from_arrays(model.get_layer("nade").arrays())
        context = keras.Model(model.inputs[0], model.get_layer("dropout").output)
    order = sorted(range(len(rolls)), key=lambda i: len(rolls[i]))
    counts: dict = {d.name: {} for d in rules}
    for s in range(0, len(order), batch_size):
        batch = [rolls[i] for i in order[s:s + batch_size]]
        n = max(len(r) for r in batch)
        w = batch[0].shape[1]
        x = np.zeros((len(batch), n, w + 1 + (w if nade else 0)), np.float32)
        for j, r in enumerate(batch):
            x[j, :len(r), :w + 1] = model_input(r)
            if nade:
                x[j, :len(r), w + 1:] = r
        logits = np.asarray(model(x, training=False))
        ctx = np.asarray(context(x, training=False)) if nade else None
        for j, r in enumerate(batch):
            piece = order[s + j]
            for d in rules:
                decided = None
                if nade:
                    rng = None if d.rule == "greedy" else np.random.default_rng([d.seed, piece])
                    decided = joint.decide(ctx[j, :len(r)], d, rng)
                counts[d.name] = add_counts(counts[d.name], roll_counts(r, logits[j, :len(r)], decisions=decided))
    return counts


def head(rolls: list, frames: int) -> list:
    out, total = [], 0
    for r in rolls:
        if total >= frames:
            break
        out.append(r)
        total += len(r)
    return out


def plot_roll_curves(history: list[dict], path: Path) -> None:
    plot_curves(history, path, (("train_nll_per_frame", "train"), ("valid_nll_per_frame", "valid")),
                "NLL per frame (nats, summed over the columns)")


# --------------------------------------------------------------------------
# Training


def train_roll(out: Path, given: dict, resume: bool = False, log=print) -> dict:
    """Train (or resume) a piano-roll model into the run directory; returns the final state."""
    check_out(out)
    quiet_tensorflow()
    run = RunDir(out)
    given = {k: v for k, v in given.items() if not (k == "format" and v is None)}
    cfg = settle(resolve_config(run, resume, given, RollConfig))
    run = worker_dir(run, cfg, resume)  # multiworker: only the chief writes into --out
    enc = encoding(cfg)
    rolls, failures = run_rolls(cfg.corpus, enc, cfg.max_pieces, log=log)
    for f in failures:
        log(f"abcgen: skipped {f}")
    if failures:
        log(f"abcgen: {len(failures)} piece(s) could not be rendered to rolls (listed above)")
    if not rolls["train"] or not rolls["valid"]:
        raise InputError(f"corpus {cfg.corpus!r} has {len(rolls['train'])} train and "
                         f"{len(rolls['valid'])} valid pieces; training needs both")
    run.path.mkdir(parents=True, exist_ok=True)

    if resume:
        state = run.read_json("state.json")
        register_custom_objects()
        model = load_model(run.path / state["checkpoint"], cfg)
        model.optimizer.learning_rate.assign(state["lr"])
        log(f"resuming {run.path} after epoch {state['epoch']} (lr {state['lr']:.3g})")
    else:
        model = new_model(cfg, enc.width)
        init_output_bias(model, rolls["train"])
        state = fresh_state(cfg)
    run.write_json("config.json", asdict(cfg))
    nrep = replicas(cfg)
    train_eval = head(rolls["train"], TRAIN_EVAL_FRAMES)
    nframes = {s: sum(len(r) for r in rolls[s]) for s in SPLITS}
    log(f"{cfg.corpus}: {len(rolls['train'])} train pieces ({nframes['train']:,} frames), "
        f"{len(rolls['valid'])} valid ({nframes['valid']:,}); roll {enc.to_dict()}, {enc.width} columns; "
        f"model {cfg.layers}x{cfg.hidden}" + (f" + NADE {cfg.nade_hidden}" if cfg.output == "nade" else "")
        + f", {model.count_params():,} parameters; "
        f"loss {cfg.loss}, pos_weight {cfg.pos_weight}")

    def one_epoch(epoch: int):
        x, y = epoch_windows(rolls["train"], cfg, epoch)
        tloss, wall = fit_epoch(model, with_frames(x, y, model), y, cfg, nrep, quiet_verbose=0)
        # Per-epoch figures use the greedy decision (one pass; the sampled rules of
        # evaluate_run take about a minute on JSB's valid split).
        tm = roll_metrics(evaluate_rolls(model, train_eval)["greedy"])
        vm = roll_metrics(evaluate_rolls(model, rolls["valid"])["greedy"])
        row = {"epoch": epoch, "train_loss": round(tloss, 6)}
        for prefix, m in (("train", tm), ("valid", vm)):
            row.update({
                f"{prefix}_accuracy": round(m["accuracy"], 6),
                f"{prefix}_fp": m["fp"],
                f"{prefix}_fn": m["fn"],
                f"{prefix}_nll_per_frame": round(m["nll_per_frame"], 5),
                f"{prefix}_frame_accuracy": round(m["frame_accuracy"], 5),
            })
        row.update(lr=float(state["lr"]), wall_s=round(wall, 1), frames_per_s=round(x.shape[0] * x.shape[1] / wall, 1))
        vnll = vm["nll_per_frame"]

        def export_best():
            export_npz(model, run.path / "model.npz",
                       {"config": asdict(cfg), "encoding": enc.to_dict(), "epoch": epoch,
                        "valid_nll_per_frame": row["valid_nll_per_frame"]})

        def line(improved: bool) -> str:
            return (f"epoch {epoch}: train loss {row['train_loss']:.5f}; valid NLL {vnll:.4f}/frame, "
                    f"frame accuracy {100 * vm['frame_accuracy']:.2f} % (greedy), FP {vm['fp']}, FN {vm['fn']}"
                    f"{' (best)' if improved else ''}; {row['frames_per_s']:.0f} frames/s")

        return row, vnll, export_best, line

    epoch_loop(run, model, state, cfg, one_epoch, log, plot=plot_roll_curves, what="valid NLL")
    if (run.path / "best.keras").is_file() and rolls["test"]:
        r = evaluate_run(run.path, split="test", rolls=rolls)
        run.write_json("test.json", r)
        log(format_report(r))
    return state


# --------------------------------------------------------------------------
# Evaluation of a run


def evaluate_run(run_dir: Path, *, corpus: str | None = None, split: str = "test", rolls=None,
                 log=None, decision=None) -> dict:
    """NLL per frame and frame accuracy of a run's best checkpoint on one split.

    For a NADE output the frame accuracy, FP and FN are those of ``decision`` (default
    abcgen.nade.DEFAULT_DECISION; its name and parameters are recorded), with the greedy
    rule's beside them; an independent output decides at probability 0.5."""
    from .nade import DEFAULT_DECISION, Decision

    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    run = RunDir(run_dir)
    cfg = RollConfig.from_dict(run.read_json("config.json"))
    corpus = corpus or cfg.corpus
    if rolls is None:
        rolls, _ = run_rolls(corpus, encoding(cfg), cfg.max_pieces, log=log)
    pieces = rolls[split]
    if not pieces:
        raise InputError(f"corpus {corpus!r} has no pieces in split {split!r}")
    best = run.path / "best.keras"
    if not best.is_file():
        raise InputError(f"{run.path} has no best.keras yet (no epoch finished)")
    quiet_tensorflow()
    register_custom_objects()
    model = load_model(best)
    try:
        dec = Decision.parse(decision if decision is not None else DEFAULT_DECISION)
    except ValueError as e:
        raise InputError(str(e)) from None
    nade = is_nade(model)
    if decision is not None and not nade:
        raise InputError(f"--decision is for a NADE output; {run.path} has independent outputs "
                         "(each key decided at probability 0.5)")
    counts = evaluate_rolls(model, pieces, decisions=("greedy", dec) if nade else ("greedy",))
    greedy = roll_metrics(counts["greedy"])
    m = roll_metrics(counts[dec.name]) if nade else greedy
    state = run.read_json("state.json") if run.exists() else {}
    extra = {}
    if nade:
        extra = {"decision": dec.name, "decision_params": dec.to_dict(),
                 "greedy_frame_accuracy_pct": round(100 * greedy["frame_accuracy"], 2),
                 "greedy_fp": greedy["fp"], "greedy_fn": greedy["fn"]}
    return {"format": "pianoroll", "model": str(run.path), "corpus": corpus, "split": split,
            "pieces": len(pieces), "frames": sum(len(p) for p in pieces),
            "encoding": encoding(cfg).to_dict(), "layers": cfg.layers, "hidden": cfg.hidden,
            "window": cfg.window, "loss": cfg.loss, "pos_weight": cfg.pos_weight,
            "output": cfg.output,
            "best_epoch": state.get("best_epoch"),
            "nll_per_frame": round(m["nll_per_frame"], 4),
            "frame_accuracy_pct": round(100 * m["frame_accuracy"], 2),
            "accuracy": round(m["accuracy"], 6), "fp": m["fp"], "fn": m["fn"], **extra}


def format_report(r: dict) -> str:
    lines = [f"{r['split']} split of {r['corpus']}: {r['pieces']} pieces, {r['frames']:,} frames",
             f"  LSTM {r['layers']}x{r['hidden']}"
             f"{' + NADE output' if r.get('output') == 'nade' else ''} (window {r['window']}, {r['loss']}, pos_weight "
             f"{r['pos_weight']}, epoch {r['best_epoch']}): NLL {r['nll_per_frame']:.3f} per frame, "
             f"frame accuracy {r['frame_accuracy_pct']:.2f} %, FP {r['fp']}, FN {r['fn']}"
             + (f" (decision {r['decision']}; greedy: {r['greedy_frame_accuracy_pct']:.2f} %, "
                f"FP {r['greedy_fp']}, FN {r['greedy_fn']})" if "decision" in r else "")]
    if is_jsb(r["corpus"]) and r["split"] == "test":
        lines.append("  published (JSB test):")
        for name, nll, acc in PUBLISHED:
            lines.append(f"    {name}: NLL {nll:.2f}" + (f", frame accuracy {acc:.2f} %" if acc else ""))
    return "\n".join(lines)
