"""Piano rolls: music21 Streams <-> binary frame arrays, MIDI and ABC out, corpora, metrics.

A roll is a ``uint8`` array of shape (frames, width).  Columns ``0..P-1`` are
the pitches that sound in the frame (P = 88 keys A0-C8, MIDI 21-108, or 128
MIDI pitches); with ``onsets`` a second block of P columns marks the frames
where a note starts, so two repeated quarter notes stay two notes (the
source's 128 + 128 = 256 columns).

Frames are either at a fixed rate (``frames="10"``: ten per second, from the
Stream's tempo marks, 120 bpm where it has none) or aligned to the beat
(``frames="1/16"``: one frame per sixteenth note, likewise ``1/8``, ``1/4``).
A note covers the frames from its rounded start to its rounded end (at least
one frame); notes outside the pitch range are dropped.

Back from a roll, every run of sounding frames of a pitch is a note (split at
onset frames when the onset block is there).  The notes are dealt into voices
(each a Part that never holds two notes at once; at a common start the highest
note takes the first free voice), and a frame is placed at quarter offset
``frame * q`` where q is the frame's note value (beat-aligned), or a sixteenth
at ``15 * rate`` bpm (fixed rate: at 10 frames per second, 150 bpm, so the
timing in seconds is the roll's).  That Score goes to MIDI through music21, and
to canonical ABC through abcgen's MIDI reader (which quantizes, finds meter,
key and pickup) and the canonical writer, one ``V:`` per voice.

Nothing here imports TensorFlow: sampling steps the exported LSTM in NumPy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import atomic_write_bytes

LOW_KEY = 21           # A0, the lowest of the 88 keys
PITCH_CHOICES = (88, 128)
BEAT_FRAMES = ("1/16", "1/8", "1/4")
DEFAULT_BPM = 120
SPLITS = ("train", "valid", "test")
JSB_ENV = "ABCGEN_JSB"
JSB_FILE = "jsb_chorales.json"
CACHE_FORMAT = 1


# --------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class Encoding:
    frames: str = "10"      # frames per second ("10") or a note value per frame ("1/16")
    pitches: int = 128      # 88 | 128
    onsets: bool = False

    def __post_init__(self):
        if self.pitches not in PITCH_CHOICES:
            raise InputError(f"--pitches must be 88 or 128, not {self.pitches}")
        if self.frames in BEAT_FRAMES:
            return
        try:
            rate = float(self.frames)
        except ValueError:
            rate = 0.0
        if not (0 < rate <= 1000) or not math.isfinite(rate):
            raise InputError(f"--frames must be a rate in frames per second (e.g. 10) or one of "
                             f"{', '.join(BEAT_FRAMES)} (one frame per note value), not {self.frames!r}")

    @property
    def low(self) -> int:
        return LOW_KEY if self.pitches == 88 else 0

    @property
    def width(self) -> int:
        return self.pitches * (2 if self.onsets else 1)

    @property
    def beat_aligned(self) -> bool:
        return self.frames in BEAT_FRAMES

    @property
    def rate(self) -> float:
        return float(self.frames)

    @property
    def frame_quarters(self) -> Fraction:
        """Quarter notes per frame in the Score a roll turns back into."""
        return 4 * Fraction(self.frames) if self.beat_aligned else Fraction(1, 4)

    @property
    def bpm(self) -> float:
        """Tempo of the Score a roll turns back into."""
        return 100.0 if self.beat_aligned else 15.0 * self.rate

    def to_dict(self) -> dict:
        return {"frames": self.frames, "pitches": self.pitches, "onsets": self.onsets}


def _tempo_map(flat) -> list[tuple[float, float, float]]:
    """(start quarter, start second, seconds per quarter) pieces from the metronome marks."""
    pieces = []
    sec = 0.0
    try:
        bounds = flat.metronomeMarkBoundaries()
    except Exception:
        bounds = []
    for start, end, mm in bounds:
        try:
            spq = float(mm.secondsPerQuarter())
        except Exception:
            spq = 60.0 / DEFAULT_BPM
        pieces.append((float(start), sec, spq))
        sec += (float(end) - float(start)) * spq
    if not pieces:
        pieces.append((0.0, 0.0, 60.0 / DEFAULT_BPM))
    return pieces


def _seconds(q: float, pieces) -> float:
    cur = pieces[0]
    for p in pieces:
        if p[0] <= q:
            cur = p
        else:
            break
    return cur[1] + (q - cur[0]) * cur[2]


def stream_events(score):
    """(MIDI pitch, start, end) in quarter notes of every sounding pitch (ties joined), and the flat stream."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = score.stripTies().flatten()
    out = []
    for n in flat.notes:
        if n.duration.isGrace or type(n).__name__ in ("ChordSymbol", "Harmony", "NoChord"):
            continue
        on = float(n.offset)
        off = on + float(n.quarterLength)
        for p in n.pitches:
            out.append((int(p.midi), on, off))
    out.sort()
    return out, flat


def stream_to_roll(score, enc: Encoding, *, file: str = "<stream>") -> np.ndarray:
    """A music21 Score (or Part) as a roll; see the module doc for the rounding."""
    events, flat = stream_events(score)
    if not events:
        raise InputError("no notes to put in a piano roll", file=file)
    if enc.beat_aligned:
        fq = float(enc.frame_quarters)
        spans = [(p, on / fq, off / fq) for p, on, off in events]
    else:
        pieces = _tempo_map(flat)
        spans = [(p, _seconds(on, pieces) * enc.rate, _seconds(off, pieces) * enc.rate)
                 for p, on, off in events]
    notes = []
    for p, a, b in spans:
        start = _nearest(a)
        notes.append((p, start, max(start + 1, _nearest(b))))
    return notes_to_roll(notes, enc)


def _nearest(x: float) -> int:
    """Round half up (Python's round() rounds half to even: 2.5 -> 2 but 7.5 -> 8)."""
    return int(math.floor(x + 0.5 + 1e-9))


def notes_to_roll(notes, enc: Encoding, frames: int | None = None) -> np.ndarray:
    """(pitch, start frame, end frame) triples -> roll; out-of-range pitches are dropped."""
    n = frames if frames is not None else max((b for _, _, b in notes), default=0)
    roll = np.zeros((n, enc.width), np.uint8)
    for p, a, b in notes:
        k = p - enc.low
        if not 0 <= k < enc.pitches or a >= n:
            continue
        roll[a:b, k] = 1
        if enc.onsets:
            roll[a, enc.pitches + k] = 1
    return roll


def roll_to_notes(roll: np.ndarray, enc: Encoding) -> list[tuple[int, int, int]]:
    """Every run of sounding frames of a pitch as (MIDI pitch, start, end), split at onsets."""
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != enc.width:
        raise InputError(f"a roll of this encoding has {enc.width} columns, not shape {roll.shape}")
    on = roll[:, :enc.pitches] > 0
    starts = roll[:, enc.pitches:] > 0 if enc.onsets else None
    notes = []
    for k in np.flatnonzero(on.any(axis=0)):
        col = on[:, k]
        t = 0
        n = len(col)
        while t < n:
            if not col[t]:
                t += 1
                continue
            a = t
            t += 1
            while t < n and col[t] and not (starts is not None and starts[t, k]):
                t += 1
            notes.append((int(k) + enc.low, a, t))
    notes.sort(key=lambda x: (x[1], -x[0], x[2]))
    return notes


def voices(notes) -> list[list[tuple[int, int, int]]]:
    """Deal notes into monophonic voices; at a common start the highest note takes the first free voice."""
    out: list[list] = []
    ends: list[int] = []
    for p, a, b in sorted(notes, key=lambda x: (x[1], -x[0], x[2])):
        for i, e in enumerate(ends):
            if e <= a:
                out[i].append((p, a, b))
                ends[i] = b
                break
        else:
            out.append([(p, a, b)])
            ends.append(b)
    return out


def roll_to_score(roll: np.ndarray, enc: Encoding, title: str = ""):
    """A roll as a music21 Score: one Part per voice, a tempo mark that keeps the roll's timing."""
    from music21 import metadata, note, stream, tempo

    fq = enc.frame_quarters
    score = stream.Score()
    score.metadata = metadata.Metadata()
    score.metadata.title = title
    for i, vs in enumerate(voices(roll_to_notes(roll, enc)) or [[]]):
        part = stream.Part()
        part.partName = f"voice {i + 1}"
        if i == 0:
            part.insert(0, tempo.MetronomeMark(number=enc.bpm, referent=1.0))
        for p, a, b in vs:
            n = note.Note(p)
            n.quarterLength = (b - a) * fq
            part.insert(a * fq, n)
        score.insert(0, part)
    return score


def roll_to_midi_bytes(roll: np.ndarray, enc: Encoding, title: str = "") -> bytes:
    from music21 import midi

    return midi.translate.streamToMidiFile(roll_to_score(roll, enc, title)).writestr()


def write_midi(roll: np.ndarray, enc: Encoding, path: str | Path, title: str = "") -> None:
    atomic_write_bytes(path, roll_to_midi_bytes(roll, enc, title))


def midi_to_roll(path: str | Path, enc: Encoding) -> np.ndarray:
    """A MIDI file read by music21 (no quantization: the roll does its own) as a roll."""
    from .convert import parse_file_no_pickle   # never music21's pickle cache

    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(p))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = parse_file_no_pickle(p, "midi", quantizePost=False)
    except Exception as e:
        raise InputError(f"not a MIDI file music21 can read ({type(e).__name__}: {e})", file=str(p)) from None
    return stream_to_roll(score, enc, file=str(p))


def roll_to_abc(roll: np.ndarray, enc: Encoding, title: str = "", *, meter: str | None = None) -> str:
    """Canonical ABC of a roll: roll -> MIDI -> abcgen's MIDI reader (every voice) -> writer."""
    import tempfile

    from .abc.writer import write_abc
    from .midi import load_midi

    if not roll_to_notes(roll, enc):
        raise InputError("the roll has no notes to write as ABC")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "roll.mid"
        path.write_bytes(roll_to_midi_bytes(roll, enc, title))
        score = load_midi(path, grid="1/16", all_tracks=True, meter=meter)
    if title:
        score.metadata.title = title
    return write_abc(score, title=title)


def roll_png(roll: np.ndarray, enc: Encoding, title: str = "", mark: int | None = None) -> bytes:
    """The roll as an image (pitch up, time right); ``mark``: a frame to draw a line at."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    on = np.asarray(roll)[:, :enc.pitches].T
    keys = np.flatnonzero(on.any(axis=1))
    lo, hi = (int(keys[0]), int(keys[-1])) if len(keys) else (0, enc.pitches - 1)
    lo, hi = max(0, lo - 2), min(enc.pitches - 1, hi + 2)
    fig = Figure(figsize=(min(24.0, max(8.0, on.shape[1] * 0.06)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(on[lo:hi + 1], origin="lower", aspect="auto", interpolation="nearest", cmap="Greys",
              vmin=0, vmax=1, extent=(0, on.shape[1], lo + enc.low - 0.5, hi + enc.low + 0.5))
    if mark:
        ax.axvline(mark, color="tab:red", linewidth=1.0)
    cs = [m for m in range(lo + enc.low, hi + enc.low + 1) if m % 12 == 0]
    ax.set_yticks(cs, [f"C{m // 12 - 1}" for m in cs])
    unit = f"{enc.frames} note" if enc.beat_aligned else f"1/{enc.frames} s"
    ax.set_xlabel(f"frame ({unit})")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------
# Corpora


def jsb_path(corpus: str = "jsb") -> Path:
    """The benchmark file: a .json path, else $ABCGEN_JSB, else ../shared/data/jsb-chorales/ beside the repo."""
    if corpus.endswith(".json"):
        return Path(corpus)
    env = os.environ.get(JSB_ENV)
    if env:
        p = Path(env)
        return p / JSB_FILE if p.is_dir() else p
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsb-chorales" / JSB_FILE


def is_jsb(corpus: str) -> bool:
    return corpus == "jsb" or corpus.endswith(".json")


JSB_ENCODING = Encoding(frames="1/4", pitches=88, onsets=False)


def load_jsb(corpus: str = "jsb") -> dict[str, list[np.ndarray]]:
    """The JSB Chorales split as 88-key rolls, one frame per quarter note (as published)."""
    path = jsb_path(corpus)
    if not path.is_file():
        raise InputError(f"JSB Chorales not found; put {JSB_FILE} there, set ${JSB_ENV}, "
                         "or pass --corpus PATH.json", file=str(path))
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the JSB Chorales JSON: {e}", file=str(path)) from None
    out = {}
    for s in SPLITS:
        seqs = data.get(s) if isinstance(data, dict) else None
        if not isinstance(seqs, list):
            raise InputError(f"no list of chorales under {s!r} (expected "
                             '{"train": [...], "valid": [...], "test": [...]})', file=str(path))
        rolls = []
        for i, ch in enumerate(seqs):
            try:
                roll = np.zeros((len(ch), 88), np.uint8)
                for t, frame in enumerate(ch):
                    for p in frame:
                        if not (isinstance(p, int) and LOW_KEY <= p < LOW_KEY + 88):
                            raise ValueError(f"frame {t} has {p!r}, not a MIDI key 21-108")
                        roll[t, p - LOW_KEY] = 1
            except (TypeError, ValueError) as e:
                raise InputError(f"{s} chorale {i}: {e}", file=str(path)) from None
            if len(roll):
                rolls.append(roll)
        out[s] = rolls
    return out


def _roll_cache(key: str) -> Path:
    from .corpus import cache_root

    return cache_root() / "pianoroll" / f"{key}.npz"


def _save_rolls(path: Path, splits: dict, meta: dict) -> None:
    import io

    arrays = {}
    for s, rolls in splits.items():
        arrays[f"{s}/rolls"] = (np.concatenate(rolls) if rolls else np.zeros((0, 0), np.uint8))
        arrays[f"{s}/lengths"] = np.asarray([len(r) for r in rolls], np.int64)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_rolls(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for s in SPLITS:
                flat, lengths = z[f"{s}/rolls"], z[f"{s}/lengths"]
                out[s] = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
            return out
    except (OSError, KeyError, ValueError):
        return None


def _abc_roll(args):
    """Worker: one prepared tune's canonical ABC -> roll (as played, repeats out)."""
    text, enc_d, where = args
    from .abc.reader import parse_abc
    from .errors import AbcgenError
    from .sounding import played

    try:
        score = played(parse_abc(text, file=where))
        return stream_to_roll(score, Encoding(**enc_d), file=where), None
    except AbcgenError as e:
        return None, str(e)
    except Exception as e:  # music21 raises many types; one bad tune must not stop the batch
        return None, f"{where}: {type(e).__name__}: {e}"


def _chorale_roll(args):
    path, enc_d = args
    from .convert import parse_file_no_pickle   # never music21's pickle cache

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = parse_file_no_pickle(Path(path))
        return stream_to_roll(score, Encoding(**enc_d), file=path), None
    except InputError as e:
        return None, str(e)
    except Exception as e:
        return None, f"{path}: {type(e).__name__}: {e}"


def chorale_files() -> list[str]:
    """music21's Bach chorales (bwv*.mxl/.xml/.krn under bach/), one file per chorale number."""
    from music21 import corpus

    files = sorted(str(p) for p in corpus.getComposer("bach") if re.match(r"bwv\d", Path(str(p)).name))
    return files


def _split_of(name: str, salt: str = "abcgen-pianoroll") -> str:
    h = int.from_bytes(hashlib.sha256(f"{salt}\0{name}".encode()).digest()[:8], "big") / 2 ** 64
    return "test" if h < 0.05 else "valid" if h < 0.10 else "train"


def run_rolls(corpus: str, enc: Encoding, max_pieces: int = 0, log=None) -> tuple[dict, list[str]]:
    """The rolls of a training run (``load_rolls``), its ``max_pieces`` applied: the first N
    pieces of the corpus, or on jsb (split by its authors) the first N of each split."""
    rolls, failures = load_rolls(corpus, enc, limit=max_pieces, log=log)
    if max_pieces and is_jsb(corpus):
        rolls = {s: rs[:max_pieces] for s, rs in rolls.items()}
    return rolls, failures


def load_rolls(corpus: str, enc: Encoding, *, limit: int = 0, jobs: int = 0,
               log=None) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Rolls per split, and the failures: jsb (its own split), chorales, or an abcgen corpus."""
    from .corpus import parallel_map

    if is_jsb(corpus):
        if enc != JSB_ENCODING:
            raise InputError("--corpus jsb is one frame per quarter note over 88 keys without onsets "
                             "(--frames 1/4 --pitches 88 --no-onsets)")
        return load_jsb(corpus), []
    if corpus == "chorales":
        files = chorale_files()
        if limit:
            files = files[:limit]
        if not files:
            raise InputError("music21's corpus has no Bach chorales (bach/bwv*)")
        h = hashlib.sha256(json.dumps([CACHE_FORMAT, enc.to_dict(), [Path(f).name for f in files]]).encode())
        items = [(f, enc.to_dict()) for f in files]
        names = [Path(f).name for f in files]
        fn = _chorale_roll
        label = "chorales"
    else:
        from .corpus import prepare

        prep = prepare(corpus, progress=log is not None)
        tunes = prep.tunes[:limit] if limit else prep.tunes
        key = prep.cache_dir.name if prep.cache_dir else hashlib.sha256(
            "".join(t["abc"] for t in tunes).encode()).hexdigest()
        h = hashlib.sha256(json.dumps([CACHE_FORMAT, enc.to_dict(), key, limit]).encode())
        items = [(t["abc"], enc.to_dict(), f"{t.get('file', corpus)} X:{t.get('x', '?')}") for t in tunes]
        names = None
        splits_of = [t["split"] for t in tunes]
        fn = _abc_roll
        label = corpus
    cache = _roll_cache(h.hexdigest()[:24])
    if cache.is_file():
        got = _load_rolls(cache)
        if got is not None:
            return got, []
    if log:
        log(f"rendering {len(items)} pieces of {label} to rolls ({enc.to_dict()})")
    results = parallel_map(fn, items, jobs, progress="rolls" if log else None)
    out = {s: [] for s in SPLITS}
    failures = []
    for i, (roll, err) in enumerate(results):
        if err is not None:
            failures.append(err)
            continue
        split = _split_of(names[i]) if names is not None else splits_of[i]
        out[split].append(roll)
    _save_rolls(cache, out, {"corpus": label, "encoding": enc.to_dict(), "failures": failures})
    return out, failures


# --------------------------------------------------------------------------
# Metrics


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def roll_counts(y: np.ndarray, logits: np.ndarray, threshold: float = 0.5,
                decisions: np.ndarray | None = None) -> dict:
    """Sums over frames: TP, FP, FN, TN at the threshold, total NLL in nats, frames.

    NLL of a frame = sum over its columns of -log p(y | logits) (Bernoulli), the
    benchmark's per-frame figure; the threshold applies to the probability.  A model
    whose decisions are not the logits at a threshold (a NADE) passes them as
    ``decisions`` (0/1, the shape of y).
    """
    y = np.asarray(y, np.float64).reshape(-1, np.shape(y)[-1])
    z = np.asarray(logits, np.float64).reshape(y.shape)
    nll = -(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z)).sum()
    if decisions is not None:
        pred = np.asarray(decisions).reshape(y.shape) > 0.5
    else:
        pred = z > math.log(threshold / (1 - threshold))
    truth = y > 0.5
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(y.size - tp - fp - fn), "nll": float(nll),
            "frames": int(y.shape[0])}


def add_counts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b[k] for k in b}


def roll_metrics(c: dict) -> dict:
    """Counts -> accuracy (true negatives included, as Keras), FP, FN, NLL per frame, frame accuracy."""
    cells = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    den = c["tp"] + c["fp"] + c["fn"]
    return {
        "accuracy": (c["tp"] + c["tn"]) / cells if cells else 0.0,
        "fp": c["fp"],
        "fn": c["fn"],
        "nll_per_frame": c["nll"] / c["frames"] if c["frames"] else 0.0,
        "frame_accuracy": c["tp"] / den if den else 1.0,
    }


# --------------------------------------------------------------------------
# Sequences for the model


def model_input(roll: np.ndarray) -> np.ndarray:
    """Inputs of one piece: a start frame (only the extra start column set), then frames 0..T-2.

    Frame t is predicted from frames < t; frame 0 from the start frame alone, so
    every frame of a piece is scored, as the benchmark averages over all frames.
    """
    x = np.zeros((len(roll), roll.shape[1] + 1), np.float32)
    x[0, -1] = 1.0
    x[1:, :-1] = roll[:-1]
    return x


# --------------------------------------------------------------------------
# NumPy LSTM (sampling without TensorFlow)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class RollLSTM:
    """The exported roll model, stepped one frame at a time (Keras' gate order i, f, c, o)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                self.w = {k: np.asarray(z[k], np.float32) for k in z.files if k != "__meta__"}
                self.meta = json.loads(bytes(z["__meta__"]).decode("utf-8"))
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"not a piano-roll model export ({type(e).__name__}: {e})", file=str(path)) from None
        if self.meta.get("kind") != "pianoroll":
            raise InputError("not a piano-roll model (train one with --format pianoroll)", file=str(path))
        self.layers = int(self.meta["layers"])
        self.hidden = int(self.meta["hidden"])
        self.enc = Encoding(**self.meta["encoding"])
        self.nade = None
        if self.meta.get("output", "independent") == "nade":
            from .nade import Nade

            try:
                self.nade = Nade.from_arrays(self.w)
            except (KeyError, ValueError) as e:
                raise InputError(f"a NADE piano-roll model without its NADE weights ({e})",
                                 file=str(path)) from None

        from .step import NumpyLSTM   # the one NumPy LSTM, here over dense frames

        try:
            self.net = NumpyLSTM({k: v for k, v in self.w.items() if k.startswith(("lstm_", "logits/"))})
        except ValueError as e:
            raise InputError(f"not a piano-roll model export ({e})", file=str(path)) from None

    def initial_state(self):
        return self.net.initial_state(1)

    def step(self, x: np.ndarray, state):
        """One input frame (width + 1) -> logits of the next frame (for a NADE output: the top
        LSTM's output, the context its keys are drawn from), new state."""
        out, new = self.net.step_frames(np.asarray(x, np.float32).reshape(1, -1), state)
        return out[0], new

    def draw(self, out: np.ndarray, rng, *, temperature: float = 1.0,
             threshold: float | None = None) -> np.ndarray:
        """The next frame from what step returned: Bernoulli draws at the temperature, or
        the keys above the threshold; a NADE draws the keys of the frame jointly."""
        if self.nade is not None:
            return self.nade.draw(out[None], rng, temperature=temperature, threshold=threshold)[0] > 0.5
        if threshold is not None:
            return _sigmoid(out) > threshold
        return rng.random(self.enc.width) < _sigmoid(out / temperature)


def sample_roll(m: RollLSTM, prime: np.ndarray, length: int, *, temperature: float = 1.0,
                threshold: float | None = None, seed: int = 0) -> np.ndarray:
    """Feed the prime (a real window), then draw ``length`` frames, each fed back in.

    Bernoulli draws of sigmoid(logits / temperature), or with ``threshold`` the
    columns whose probability exceeds it.  With an onset block, a drawn onset
    also sounds its pitch, so the roll stays consistent.
    """
    rng = np.random.default_rng(seed)
    enc = m.enc
    state = m.initial_state()
    x = model_input(prime)
    logits = None
    for row in x:
        logits, state = m.step(row, state)
    last = np.zeros(enc.width + 1, np.float32)
    last[:-1] = prime[-1]
    logits, state = m.step(last, state)
    out = np.zeros((length, enc.width), np.uint8)
    for t in range(length):
        frame = m.draw(logits, rng, temperature=temperature, threshold=threshold)
        if enc.onsets:
            frame[:enc.pitches] |= frame[enc.pitches:]
        out[t] = frame
        last[:-1] = frame
        if t + 1 < length:
            logits, state = m.step(last, state)
    return out


def write_sample(run_dir: Path, output: Path, *, length: int = 200, temperature: float = 1.0,
                 threshold: float | None = None, seed: int = 0, split: str = "valid",
                 log=None) -> list[Path]:
    """``abcgen sample --format pianoroll``: OUT.mid, OUT.abc and OUT.png of prime + continuation."""
    from .fileio import atomic_write_text

    run_dir = Path(run_dir)
    npz = run_dir / "model.npz" if run_dir.is_dir() else run_dir
    if not npz.is_file():
        raise InputError("no model.npz (train with abcgen train --format pianoroll --out RUN)", file=str(npz))
    if output.suffix.lower() not in (".mid", ".midi"):
        raise InputError("-o must name a .mid file (the .abc and .png go beside it)", file=str(output))
    if length < 1:
        raise InputError("--length must be at least 1")
    if threshold is not None and not 0 < threshold < 1:
        raise InputError("--threshold must be in (0, 1)")
    if temperature <= 0:
        raise InputError("--temperature must be positive")
    m = RollLSTM(npz)
    cfg = m.meta["config"]
    rolls, _ = run_rolls(cfg["corpus"], m.enc, cfg.get("max_pieces", 0), log=log)
    pool = [r for r in rolls.get(split, []) if len(r) >= 2] or [r for r in rolls["train"] if len(r) >= 2]
    if not pool:
        raise InputError(f"corpus {cfg['corpus']!r} has no piece to prime with")
    rng = np.random.default_rng(seed)
    piece = pool[int(rng.integers(len(pool)))]
    w = min(int(cfg["window"]), len(piece))
    start = int(rng.integers(len(piece) - w + 1))
    prime = piece[start:start + w]
    new = sample_roll(m, prime, length, temperature=temperature, threshold=threshold, seed=seed)
    roll = np.concatenate([prime, new])
    how = f"threshold {threshold}" if threshold is not None else f"temperature {temperature}"
    title = f"abcgen pianoroll, seed {seed}, {how}"
    write_midi(roll, m.enc, output, title)
    written = [output]
    png = output.with_suffix(".png")
    atomic_write_bytes(png, roll_png(roll, m.enc, title, mark=len(prime)))
    written.append(png)
    try:
        abc = roll_to_abc(roll, m.enc, title)
        atomic_write_text(output.with_suffix(".abc"), abc)
        written.insert(1, output.with_suffix(".abc"))
    except Exception as e:  # a silent sample has no ABC; MIDI and PNG still stand
        if log:
            log(f"abcgen: warning: no ABC written: {e}")
    if log:
        log(f"primed with frames {start}..{start + w - 1} of a {split} piece; {length} frames sampled ({how})")
    return written
