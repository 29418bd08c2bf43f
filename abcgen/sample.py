"""``abcgen sample``: new tunes from an exported model, with NumPy only.

This module never imports TensorFlow (or music21): ``abcgen sample`` loads a
``model.npz`` (weights and vocabulary, no pickle), steps the LSTM in NumPy for
the requested tunes at once (up to SAMPLE_BATCH; a longer book refills the rows of
ended tunes), and masks every next-token distribution with the
ABC state machine of ``abc.grammar`` so each tune is valid ABC whose complete
bars have the meter's length.

Randomness: each tune has its own seed and its own ``numpy.random.Generator``,
which draws one uniform number per step of that tune.  Tune 1 of ``--seed S``
uses S itself and tune k a seed derived from S and k (``tune_seed``), which its
title names, so ``--seed`` of that value alone makes the same tune again, and
tune k of a book does not depend on how many tunes the book has.  The same seed,
model and options give the same tune book byte for byte.

Form (``abc.grammar.Form``): beside the grammar, the mask keeps a meter or key
change out unless asked for (``changes``), ``|]`` for the last bar, every
first ending followed by its second, the last note on the key's tonic
(``tonic``) and lengths a reader engraves as one note.  Length: each tune gets
a target number of bars (``--bars``, else drawn from the corpus's bars per
tune for its meter, ``CORPUS_BARS``, both in complete bars); once it has written one bar less than
that, at a bar line, the sampler only takes the closing moves, which finish
the bar, close any repeat or ending and end on the tonic.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AbcgenError, InputError
from .threads import FEW_TUNES, current_blas_threads, spare_core

DEFAULT_MODEL = Path(__file__).parent / "models" / "default.npz"
# Steps past --max-tokens the closing moves get before the sampler ends a tune itself.
CLOSING_STEPS = 1500
# Above this the distribution is all but uniform: noise, not tunes (and the studio's bound too).
MAX_TEMPERATURE = 5.0
# At most this many tunes are sampled at once; in a longer book a waiting tune takes the row of
# one that ended (memory flat in -n).  Every tune has its own generator (tune_seed), so the
# rows change no tune.
SAMPLE_BATCH = 64
# From this many tunes on (with the mask on), the LSTM step runs in a thread beside the state
# machines; below, only where a core is free for it (threads.spare_core) and BLAS does not
# take that core already (two BLAS threads split a few tunes' product: threads.blas_threads).
OVERLAP_MIN_BATCH = FEW_TUNES


@dataclass
class SampleOptions:
    count: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = 0
    meter: str | None = None
    key: str | None = None
    unit: str | None = None
    prime: str = ""
    max_tokens: int = 1000
    constraints: bool = True
    changes: bool = False        # allow meter and key changes in the body
    tonic: bool = True           # end on the key's tonic
    bars: int | None = None      # about this many bars (None: the corpus's lengths for the meter)
    form: str | None = None      # parts, e.g. 'AABB' (a doubled letter: a repeated part)
    part_bars: int = 8           # bars per part of the form


def check_options(opts: SampleOptions) -> None:
    """Refuse option values no sampling can use (InputError naming the option).

    ``abcgen sample`` and ``abcgen serve`` both call this, so both refuse the same values.
    """
    if opts.count < 1 or opts.count > 10000:
        raise InputError("-n must be between 1 and 10000")
    if not 0 < opts.temperature <= MAX_TEMPERATURE:
        raise InputError(f"--temperature must be above 0 and at most {MAX_TEMPERATURE:g}, "
                         f"not {opts.temperature:g}")
    if not 0 < opts.top_p <= 1:
        raise InputError("--top-p must be in (0, 1]")
    if opts.top_k < 0:
        raise InputError("--top-k must be 0 (all) or positive")
    if opts.max_tokens < 1:
        raise InputError("--max-tokens must be positive")
    if opts.bars is not None and not 1 <= opts.bars <= 1000:
        raise InputError("--bars must be between 1 and 1000")
    if opts.form is not None:
        form_parts(opts.form)
        if opts.bars is not None:
            raise InputError("--bars and --form both set the length: give one")
        if not opts.constraints:
            raise InputError("--form needs the constraints (drop --no-constraints)")
    if not 1 <= opts.part_bars <= 64:
        raise InputError("--part-bars must be between 1 and 64")
    if opts.seed is not None and not 0 <= opts.seed < 2**63:
        raise InputError(f"--seed must be between 0 and 2**63-1, not {opts.seed}")


def form_parts(form: str) -> list[bool]:
    """The parts of a --form such as 'AABB' (two parts, each repeated), 'AB' or
    'AABBCC': per part, whether it is repeated.  A letter doubled is a part played
    twice (written once between |: and :|); InputError for anything else."""
    f = form.strip().upper()
    if not re.fullmatch(r"[A-Z]+", f):
        raise InputError(f"--form {form!r}: write the parts as letters, e.g. AABB or AB")
    parts, i = [], 0
    while i < len(f):
        rep = i + 1 < len(f) and f[i + 1] == f[i]
        parts.append(rep)
        i += 2 if rep else 1
    letters = [ch for k, ch in enumerate(f) if k == 0 or f[k - 1] != ch]
    if len(set(letters)) != len(letters) or len(parts) > 8:
        raise InputError(f"--form {form!r}: each part once (a doubled letter repeats it), at most 8 parts")
    return parts


def fresh_seed() -> int:
    """A new random seed (for a run without --seed)."""
    import secrets

    return secrets.randbelow(2**31)


def tune_seed(seed: int, k: int) -> int:
    """The seed of tune k (1-based) of a book sampled with ``seed``: tune 1 uses
    the seed itself, tune k > 1 one derived from (seed, k), below 2**31."""
    if k == 1:
        return seed
    state = np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFFFFFF


def generate(model: "Model", opts: SampleOptions, deadline: float | None = None) -> str:
    """The tune book of ``abcgen sample``: checked options, sampled tunes, X: and T: lines.
    A seed of None is replaced by a fresh one (opts.seed then names it)."""
    check_options(opts)
    check_model(model, opts)
    if opts.seed is None:
        opts.seed = fresh_seed()
    return tune_book(model, sample(model, opts, deadline=deadline), opts)


def check_model(model: "Model", opts: SampleOptions | None = None) -> None:
    """InputError when the model cannot sample with these options (the grammar mask needs tokens)."""
    if model.vocab.level != "token" and (opts is None or opts.constraints):
        how = "sample with --no-constraints" if opts is not None else "the studio always uses the mask"
        raise InputError(f"this is a {model.vocab.level}-level model: the ABC grammar mask works on "
                         f"token-level models only (train with --level token; {how})", file=str(model.path))


def resolve_model(path: str | None) -> Path:
    """A run directory, a .npz file, or the model that ships with abcgen."""
    if path is None:
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        raise InputError("no default model ships with this version of abcgen yet: train one with "
                         "'abcgen train --format abc --corpus folk --out RUN_DIR' and pass --model RUN_DIR")
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model.npz").is_file():
            return p / "model.npz"
        raise InputError(f"{p} has no model.npz (a run directory writes one after its first epoch)")
    if not p.exists():
        raise InputError("no such model file or run directory", file=str(p))
    return p


class Model:
    """Weights, vocabulary and NumPy LSTM of an exported model."""

    def __init__(self, path: Path):
        from .abc.tokens import Vocabulary
        from .step import NumpyLSTM, load_npz

        weights, meta = load_npz(path)
        try:
            v = meta["vocab"]
            self.vocab = Vocabulary(v["symbols"], v["level"])
        except (KeyError, TypeError) as e:
            raise InputError(f"the model has no vocabulary in its metadata ({e})", file=str(path)) from None
        self.net = NumpyLSTM(weights)
        self.meta = meta
        self.path = path
        self.name = path.parent.name if path.name == "model.npz" else path.stem


NEG_INF = np.float64(-np.inf)


def _filter_logits(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering; rows sum to 1."""
    z = logits / max(temperature, 1e-6)
    if top_k and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")
        sp = np.take_along_axis(p, order, axis=1)
        cum = np.cumsum(sp, axis=1)
        keep_sorted = (cum - sp) < top_p  # always keeps the most likely token
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


def _draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one index per row, given one uniform number per row."""
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0 + 1e-12
    return (cum < u[:, None]).sum(axis=1)


def _draw_plain(z: np.ndarray, temperature: float, u: np.ndarray) -> np.ndarray:
    """``_draw(_filter_logits(z, temperature, 0, 1.0), u)`` with the same arithmetic, so
    the same draws, in place on z (which it overwrites): a fraction of the calls, which
    count at one tune a step.  Dividing by a temperature of 1 changes no number."""
    if temperature != 1.0:
        z /= max(temperature, 1e-6)
    # the ufuncs' own reduce and accumulate: what max, sum and cumsum call, without
    # their Python wrappers
    z -= np.maximum.reduce(z, axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= np.add.reduce(z, axis=1, keepdims=True)
    np.add.accumulate(z, axis=1, out=z)
    z[:, -1] = 1.0 + 1e-12
    return np.add.reduce(z < u[:, None], axis=1)


def _draw_row(z: np.ndarray, temperature: float, u: float) -> int:
    """``_draw_plain`` of one row (1-D, overwritten), without the per-axis bookkeeping of
    the 2-D calls: the same reductions over the same contiguous row, so the same draw
    (checked against it in the tests)."""
    if temperature != 1.0:
        z /= max(temperature, 1e-6)
    z -= np.maximum.reduce(z)
    np.exp(z, out=z)
    z /= np.add.reduce(z)
    np.add.accumulate(z, out=z)
    z[-1] = 1.0 + 1e-12
    return int(np.count_nonzero(z < u))


# --------------------------------------------------------------------------
# Header values in the spellings musicians use

_MODES = {"": "maj", "maj": "maj", "major": "maj", "ion": "maj", "ionian": "maj",
          "m": "min", "min": "min", "minor": "min", "aeo": "min", "aeolian": "min",
          "dor": "dor", "dorian": "dor", "mix": "mix", "mixolydian": "mix",
          "phr": "phr", "phrygian": "phr", "lyd": "lyd", "lydian": "lyd",
          "loc": "loc", "locrian": "loc"}
_MODE_ORDER = ("maj", "mix", "dor", "min", "phr", "lyd", "loc")
_MODE_FIFTHS = {"maj": 0, "mix": -1, "dor": -2, "min": -3, "phr": -4, "lyd": 1, "loc": -5}
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(r"^\s*(?:K:)?\s*([A-Ga-g])\s*([#b\u266f\u266d]?)\s*([A-Za-z]*)\s*$")


def key_token(text: str) -> str | None:
    """A key as musicians write it (D, Dm, Dmin, D minor, Ddor, D dorian, Amix, F#m,
    Bb, K:Gmaj) in the model's spelling ('Dmin'); None when it is no key."""
    m = _KEY_RE.match(text)
    if m is None:
        return None
    letter, acc, mode = m.group(1).upper(), m.group(2), m.group(3)
    acc = {"\u266f": "#", "\u266d": "b"}.get(acc, acc)
    if mode == "M":
        mode = "maj"
    mode = _MODES.get(mode if mode == "m" else mode.lower())
    if mode is None:
        return None
    return f"{letter}{acc}{mode}"


def key_fifths(tok: str) -> int | None:
    """Sharps (positive) or flats (negative) of a model key such as 'F#min'."""
    t = key_token(tok)
    if t is None:
        return None
    alt = 7 if t[1:2] == "#" else -7 if t[1:2] == "b" else 0
    return _LETTER_FIFTHS[t[0]] + alt + _MODE_FIFTHS[t[-3:]]


def key_order(tok: str):
    """Musical order of keys: by tonic (C, C#/Db, D, ...), then mode (major first)."""
    t = key_token(tok)
    if t is None:
        return (99, 99, tok)
    alt = 1 if t[1:2] == "#" else -1 if t[1:2] == "b" else 0
    return ((_LETTER_PC[t[0]] + alt) % 12, _MODE_ORDER.index(t[-3:]), tok)


def meter_order(value: str):
    """Musical order of meters: by bar length (2/4, 3/8, 3/4 and 6/8, 4/4 and 2/2 ...),
    then the finer beat first (6/8 after 3/4); 'none' last."""
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if m is None:
        return (1, 0, 0, value)
    a, b = int(m.group(1)), int(m.group(2))
    return (0, a / b, b, value)


def meter_value(text: str) -> str:
    """'6/8', 'M:6/8', 'C' (4/4) or 'C|' (2/2) as the model writes it after 'M:'."""
    t = text.strip()
    if t.startswith("M:"):
        t = t[2:].strip()
    return {"C": "4/4", "C|": "2/2"}.get(t, t.replace(" ", ""))


def _known(vocab, field: str) -> list[str]:
    return [x[2:] for x in vocab.symbols if x.startswith(field + ":") and len(x) > 2]


def _in_vocab(vocab, sym: str) -> bool:
    if vocab.level == "token":
        return sym in vocab
    return all(ch in vocab for ch in sym)


def resolve_header(vocab, meter: str | None, unit: str | None, key: str | None):
    """(meter, unit, key) as the model's values ('6/8', '1/8', 'Dmix'), each None
    when not given; InputError for one the model does not know, naming the
    nearest known ones in musical order."""
    out = []
    for field, val, order in (("M", meter, meter_order), ("L", unit, meter_order)):
        if val is None:
            out.append(None)
            continue
        v = meter_value(val) if field == "M" else val.strip().removeprefix("L:").strip()
        if not _in_vocab(vocab, f"{field}:{v}"):
            known = sorted(_known(vocab, field), key=order)
            common = [x for x in known if order(x)[0] == 0]
            want = order(v)
            if want[0] == 0:
                common.sort(key=lambda x: (abs(order(x)[1] - want[1]), order(x)))
            near = sorted(common[:6], key=order)
            raise InputError(f"{field}:{v} is not in the model's vocabulary"
                             + (f" (nearest: {', '.join(near)})" if near else ""))
        out.append(v)
    if key is None:
        out.append(None)
    else:
        k = key_token(key)
        if k is None:
            raise InputError(f"--key {key}: not a key (write e.g. D, Dm, D minor, Ddor, Amix, F#m, Bb)")
        if not _in_vocab(vocab, f"K:{k}"):
            known = _known(vocab, "K")
            fifths = key_fifths(k)
            same = k[-3:]
            near = sorted(known, key=lambda x: (x[-3:] != same,
                                                abs((key_fifths(x) or 0) - fifths), key_order(x)))
            raise InputError(f"K:{k} is not in the model's vocabulary (nearest: "
                             f"{', '.join(sorted(near[:6], key=key_order))})")
        out.append(k)
    return tuple(out)


def header_menu(model: "Model", min_share: float = 0.002) -> dict:
    """The meters, units and keys a user may ask for, in musical order: those the
    model gives at least ``min_share`` of its probability (it learnt them from
    the corpus, so a meter music21 invented for one odd bar, such as 116/4,
    falls below).  Meters by p(M: | start); units by p(L: | M:) summed over
    those meters; keys by p(K: | M:, L:) summed over both.  A char-level model
    lists what its vocabulary spells (no header tokens to weigh)."""
    vocab = model.vocab
    if vocab.level != "token":
        return {"meters": [], "units": [], "keys": []}

    def fields(letter):
        ids = [i for i, x in enumerate(vocab.symbols) if x.startswith(letter + ":") and len(x) > 2]
        return np.asarray(ids, dtype=np.int64)

    def probs(prefix, ids):
        logits, _ = model.net.run(np.asarray([vocab.bos_id] + prefix, dtype=np.int64))
        z = np.asarray(logits, dtype=np.float64).reshape(-1)[ids]
        z = np.exp(z - z.max())
        return z / z.sum()

    nl = vocab.id_of("\n")
    M, L, K = fields("M"), fields("L"), fields("K")
    pm = probs([], M)
    meters = [(int(i), p) for i, p in zip(M, pm) if p >= min_share]
    units, keys = np.zeros(len(L)), np.zeros(len(K))
    total = sum(p for _, p in meters)
    for mi, p in meters:
        pu = probs([mi, nl], L) * p / total
        units += pu
        for li, q in zip(L, pu):
            if q >= min_share:
                keys += probs([mi, nl, int(li), nl], K) * q
    keys /= max(keys.sum(), 1e-12)

    def names(ids, share=None):
        return [vocab.symbols[int(i)][2:] for j, i in enumerate(ids)
                if share is None or share[j] >= min_share]

    return {"meters": sorted((vocab.symbols[i][2:] for i, _ in meters), key=meter_order),
            "units": sorted(names(L, units), key=meter_order),
            "keys": sorted(names(K, keys), key=key_order)}


def _header_tokens(model: Model, opts: SampleOptions) -> list[str]:
    """Forced header (the given fields up to the first one not given: the rest
    the mask forces) and prime as tokens of the model's vocabulary; refuse
    unknown symbols."""
    from .abc.tokens import split_tokens

    vocab = model.vocab
    wanted = []
    for field, val in zip("MLK", resolve_header(vocab, opts.meter, opts.unit, opts.key)):
        if val is None:
            break  # the header is fed in order up to the first field not given
        wanted.extend(split_tokens(f"{field}:{val}\n", vocab.level))
    if opts.prime:
        if any(v is None for v in (opts.meter, opts.unit, opts.key)) and not opts.prime.startswith("M:"):
            raise InputError("--prime continues a tune body: give --meter, --unit and --key with it, "
                             "or start the prime with its own M:, L: and K: lines")
        for i, s in enumerate(split_tokens(opts.prime, vocab.level)):
            if s not in vocab:
                raise InputError(f"the prime's symbol {s!r} (token {i + 1}) is not in the model's vocabulary")
            wanted.append(s)
    return wanted


class SamplingTimeout(AbcgenError):
    """Sampling passed its deadline (``abcgen serve`` bounds each request)."""


# Tune lengths of the folk corpus, by the header's meter: (bars, tunes) pairs, the
# bars counted as a musician counts them (the tune's total length over the bar's,
# rounded: a pickup and the short bar that completes it make one; tunestats.tune_stats
# "bars") on the canonical text of the 10,475 train-split tunes with a meter
# (`abcgen prepare --corpus folk`), meters with 50 tunes or more (the others draw from
# all meters' lengths).  Lengths are mostly multiples of 4: 16 bars 31 %, 8 bars 15 %,
# 12 bars 12 %.
CORPUS_BARS: dict = {
    "2/4": ((3, 1), (4, 17), (5, 6), (6, 19), (7, 11), (8, 336), (9, 69), (10, 183), (11, 51), (12, 228), (13,
        52), (14, 119), (15, 58), (16, 848), (17, 72), (18, 76), (19, 39), (20, 95), (21, 19), (22, 50),
        (23, 23), (24, 196), (25, 21), (26, 28), (27, 10), (28, 30), (29, 17), (30, 17), (31, 11), (32, 73),
        (33, 7), (34, 8), (35, 8), (36, 10), (37, 3), (38, 5), (39, 4), (40, 10), (41, 4), (42, 2), (43, 7),
        (44, 7), (46, 5), (47, 3), (48, 1), (49, 3), (50, 1), (53, 1), (54, 2), (55, 1), (56, 1), (58, 2),
        (59, 1), (60, 2), (61, 2), (63, 2), (64, 2), (73, 2), (75, 1), (78, 1), (80, 1), (81, 1), (90, 1),
        (91, 1), (103, 1), (105, 1), (106, 1), (107, 1), (116, 1), (120, 1)),
    "4/4": ((4, 33), (5, 10), (6, 62), (7, 42), (8, 476), (9, 57), (10, 154), (11, 38), (12, 440), (13, 35),
        (14, 83), (15, 29), (16, 527), (17, 21), (18, 60), (19, 21), (20, 66), (21, 9), (22, 18), (23, 6),
        (24, 66), (25, 7), (26, 6), (27, 1), (28, 11), (29, 1), (30, 4), (31, 1), (32, 12), (34, 2), (36,
        2), (37, 2), (38, 1), (40, 2), (42, 1), (43, 1), (49, 1), (50, 1), (60, 1), (66, 1), (121, 1)),
    "6/8": ((2, 2), (4, 13), (5, 2), (6, 26), (7, 6), (8, 249), (9, 39), (10, 105), (11, 16), (12, 176), (13,
        12), (14, 39), (15, 6), (16, 793), (17, 25), (18, 45), (19, 4), (20, 78), (21, 3), (22, 9), (23, 1),
        (24, 129), (25, 3), (26, 3), (27, 2), (28, 11), (32, 28), (34, 2), (36, 1), (40, 7), (41, 1), (42,
        1), (48, 8), (56, 2), (64, 1), (88, 1)),
    "3/4": ((2, 1), (4, 24), (5, 5), (6, 27), (7, 13), (8, 327), (9, 12), (10, 53), (11, 18), (12, 220), (13,
        30), (14, 47), (15, 17), (16, 355), (17, 15), (18, 28), (19, 13), (20, 57), (21, 12), (22, 6), (23,
        4), (24, 80), (25, 11), (26, 10), (27, 2), (28, 15), (29, 3), (30, 6), (31, 7), (32, 58), (33, 1),
        (34, 1), (35, 1), (36, 3), (37, 1), (38, 1), (40, 3), (41, 1), (42, 1), (43, 1), (44, 1), (46, 1),
        (48, 4), (113, 1)),
    "2/2": ((4, 5), (6, 2), (7, 2), (8, 48), (9, 9), (10, 7), (11, 3), (12, 100), (13, 40), (14, 16), (15, 1),
        (16, 573), (17, 16), (18, 13), (20, 9), (21, 4), (22, 3), (23, 2), (24, 42), (25, 3), (26, 3), (27,
        1), (28, 2), (29, 1), (31, 1), (32, 14), (39, 1), (40, 2), (48, 1)),
    "3/8": ((6, 1), (7, 1), (8, 34), (9, 2), (10, 11), (11, 4), (12, 44), (13, 2), (14, 12), (15, 21), (16,
        76), (17, 6), (18, 17), (19, 3), (20, 9), (21, 3), (22, 6), (23, 3), (24, 28), (25, 7), (26, 1),
        (27, 2), (28, 7), (29, 1), (30, 6), (32, 7), (34, 1), (35, 1), (37, 2), (38, 1), (40, 2), (43, 1),
        (48, 1), (49, 1), (57, 1)),
    "4/2": ((4, 3), (6, 2), (7, 1), (8, 14), (9, 6), (10, 13), (11, 6), (12, 11), (13, 8), (14, 14), (15, 8),
        (16, 22), (17, 7), (18, 15), (19, 4), (20, 17), (21, 11), (22, 7), (23, 4), (24, 3), (25, 3), (26,
        5), (27, 2), (28, 1), (29, 1), (30, 2), (31, 3), (40, 1), (76, 1)),
    "9/8": ((4, 1), (8, 64), (9, 2), (10, 2), (12, 41), (13, 2), (16, 27), (17, 2), (20, 1), (21, 2), (24, 3),
        (36, 1)),
    "6/4": ((4, 4), (5, 2), (6, 8), (7, 2), (8, 38), (9, 7), (10, 10), (11, 1), (12, 12), (13, 2), (14, 6),
        (15, 1), (16, 13), (18, 2), (20, 2), (24, 2), (28, 1)),
    "3/2": ((4, 8), (8, 11), (9, 2), (10, 1), (12, 17), (13, 1), (14, 6), (15, 4), (16, 12), (17, 8), (18, 3),
        (20, 10), (21, 1), (22, 1), (24, 4), (25, 1), (26, 1), (27, 2), (28, 3), (30, 1), (31, 1), (32, 2),
        (33, 1), (40, 1)),
}
_CORPUS_BARS_ALL: tuple = ((2, 3), (3, 1), (4, 110), (5, 25), (6, 150), (7, 78), (8, 1614), (9, 215), (10, 554), (11, 140),
        (12, 1299), (13, 186), (14, 351), (15, 150), (16, 3251), (17, 174), (18, 263), (19, 87), (20, 348),
        (21, 64), (22, 103), (23, 44), (24, 557), (25, 56), (26, 57), (27, 22), (28, 83), (29, 25), (30,
        38), (31, 27), (32, 194), (33, 11), (34, 14), (35, 11), (36, 17), (37, 8), (38, 8), (39, 6), (40,
        28), (41, 6), (42, 6), (43, 10), (44, 8), (46, 7), (47, 3), (48, 15), (49, 5), (50, 2), (53, 1),
        (54, 2), (55, 1), (56, 3), (57, 1), (58, 3), (59, 1), (60, 3), (61, 2), (63, 2), (64, 3), (66, 1),
        (73, 2), (75, 1), (76, 1), (78, 1), (80, 1), (81, 1), (88, 1), (90, 1), (91, 1), (103, 1), (105, 1),
        (106, 1), (107, 1), (113, 1), (116, 1), (120, 1), (121, 1))


def target_bars(meter: str | None, rng: np.random.Generator) -> int:
    """A tune length in bars drawn from the corpus's lengths for this meter (all
    meters' where the meter has too few tunes)."""
    table = CORPUS_BARS.get(meter) or _CORPUS_BARS_ALL
    if not table:
        return 16
    bars, share = zip(*table)
    p = np.asarray(share, dtype=np.float64)
    return int(bars[int(rng.choice(len(bars), p=p / p.sum()))])


def sample(model: Model, opts: SampleOptions, deadline: float | None = None) -> list[str]:
    """The model texts of opts.count tunes (header from M: on, body, no X:/T:).

    ``deadline`` (a ``time.monotonic()`` value) stops a sampling that runs past
    it with SamplingTimeout; it is checked between steps.
    """
    vocab = model.vocab
    seed = opts.seed if opts.seed is not None else 0
    seeds = [tune_seed(seed, k + 1) for k in range(opts.count)]
    head = _header_tokens(model, opts)
    head_ids = [vocab.id_of(s) for s in head]
    meter, unit, key = resolve_header(vocab, opts.meter, opts.unit, opts.key)

    c0 = None
    if opts.constraints:
        from .abc.grammar import AbcConstraint, Form

        form = Form(changes=opts.changes, tonic=opts.tonic, replay=not opts.form)
        c0 = AbcConstraint(vocab, form)
        try:
            c0.reset(meter=meter, unit=unit, key=key)
        except ValueError as e:
            raise InputError(f"the header cannot be forced: {e}") from None
        try:
            for t in head_ids:
                c0.advance(t)
        except ValueError as e:
            raise InputError(f"the header/prime is not valid canonical ABC here: {e}") from None
    elif not opts.prime and any(v is not None for v in
                                (meter, unit, key)[[meter, unit, key, None].index(None):]):
        raise InputError("--meter, --unit and --key other than in that order (M:, L:, K:) need the "
                         "constraints (drop --no-constraints)")

    return _sample_batch(model, opts, seeds, head_ids, c0, deadline)


def _sample_batch(model: Model, opts: SampleOptions, seeds: list[int], head_ids: list[int], c0,
                  deadline: float | None) -> list[str]:
    """The tunes of ``seeds`` (the body of :func:`sample`), at most SAMPLE_BATCH at once: where
    tunes end and more are waiting, the next ones take their rows, so a long book keeps the
    batch full (memory stays that of one batch however many tunes are asked for)."""
    vocab = model.vocab
    n = len(seeds)
    width = min(n, SAMPLE_BATCH)
    bos, eos = vocab.bos_id, vocab.eos_id
    # Per tune, set as it starts (start()): its generator, state machine, length target
    # in bar lines (drawn from a generator of its own, not the one of its tokens), tokens,
    # tokens drawn so far, closing flag and --form part.
    rngs: list = [None] * n
    cons: list | None = None if c0 is None else [None] * n
    targets: list = [opts.bars] * n
    target_rngs: list = [None] * n
    out: list = [None] * n
    drawn = [0] * n
    closing = [False] * n

    # Feed <s> + the forced prefix once; every tune starts from its state and logits.
    head_logits, head_state = model.net.run(np.asarray([bos] + head_ids, dtype=np.int64))
    head_logits = np.asarray(head_logits).reshape(1, -1)
    budget = max(opts.max_tokens - len(head_ids), 1)

    def start(ids) -> None:
        for i in ids:
            rngs[i] = np.random.default_rng(seeds[i])
            if cons is not None:
                cons[i] = c0.copy()
            if opts.bars is None:
                target_rngs[i] = np.random.default_rng([seeds[i], 1])
            out[i] = list(head_ids)

    def done(i) -> None:
        """A tune ended: its text kept, what it sampled with let go (memory flat in -n)."""
        texts[i] = vocab.decode(out[i])
        out[i] = rngs[i] = target_rngs[i] = None
        if cons is not None:
            cons[i] = None

    texts: list = [None] * n

    head = (head_logits, head_state)
    active = np.arange(width)
    start(range(width))
    waiting = width                   # the next tune to start
    logits, state = _header_rows(head, width)
    final_ids = np.asarray([i for i, x in enumerate(vocab.symbols) if x == "|]"], dtype=np.int64)
    part_closers = {i for i, x in enumerate(vocab.symbols) if x in (":|", "||", "|]")}

    def written(i):
        """The tune's length so far, in complete bars as a musician counts them (the
        unit of --bars and of the corpus table)."""
        return cons[i].bars

    parts = form_parts(opts.form) if opts.form else None
    part_idx = [0] * n
    sym_ids = {x: i for i, x in enumerate(vocab.symbols)}
    bar_ids = np.asarray([i for i, x in enumerate(vocab.symbols) if "|" in x or x == "::"
                          or re.fullmatch(r"\[\d.*", x)], dtype=np.int64)

    def form_row(i, row):
        """The --form's rule on a mask row: plain bars inside a part, the part's
        closing bar (:| for a repeated part, || between unrepeated ones, |] at the
        end) after its last bar, |: only to open a repeated part, no end before
        the last part is done."""
        c, p = cons[i], part_idx[i]
        if p >= len(parts):
            return row
        original = row
        if c.part_bars + 1 >= opts.part_bars:
            row = c.toward_closing_bar(row, closing[i])   # short, where the repeat plays a pickup again
        want = np.zeros(len(row), dtype=bool)
        if c.part_bars + 1 >= opts.part_bars and not c.at_bar:
            closer = ":|" if parts[p] else ("|]" if p == len(parts) - 1 else "||")
            want[sym_ids.get(closer, 0)] = closer in sym_ids
            if "-" in sym_ids:                # a tie cannot cross the part's end
                row = row.copy()
                row[sym_ids["-"]] = False
        else:
            want[sym_ids.get("|", 0)] = "|" in sym_ids
            if c.at_bar and c.part_bars + 1 >= opts.part_bars and "\n" in sym_ids:
                # the last bar on the line before it: a line of one letter may not
                # take ':|' ('F:|' reads as a field); the full mask, as the closing
                # one offers only the newline here
                row = c.toward_closing_bar(c.mask_view(False), closing[i]).copy()
                row[sym_ids["\n"]] = False
            if parts[p] and c.at_bar and c.part_bars == 0:
                want[sym_ids.get("|:", 0)] = "|:" in sym_ids
        new = row.copy()
        new[bar_ids] &= want[bar_ids]
        if parts[p] and c.part_bars == 0 and c.in_pickup_after_repeat():
            new[bar_ids] = False              # a repeated part opens with no pickup after :|
        new[eos] = False
        return new if new.any() else original

    # Whether a (shared, read-only) mask row allows </s> or |], by the row's identity: the
    # too-short rule below looks at most rows, and a row is met again and again.
    ends_of: dict = {}

    def has_end(row) -> bool:
        hit = ends_of.get(id(row))
        if hit is None or hit[0] is not row:
            if len(ends_of) >= 4096:      # it holds its rows: bounded, as a long book meets many
                ends_of.clear()
            hit = ends_of[id(row)] = (row, bool(row[eos]) or bool(row[final_ids].any()))
        return hit[1]

    def masks(active):
        """The mask rows of the active tunes, stacked (a fresh array: wants_end writes to it)."""
        if cons is None:
            return None
        rows = []
        short = []        # tunes too short yet to end whose row allows </s> or |]
        for j, i in enumerate(active.tolist()):
            c = cons[i]
            if parts is not None:
                p = part_idx[i]
                if not closing[i] and (drawn[i] >= budget or p >= len(parts) or (
                        p == len(parts) - 1 and c.at_bar and c.part_bars + 1 >= opts.part_bars)):
                    closing[i] = True
                rows.append(form_row(i, c.mask_view(closing[i])))
                continue
            if not closing[i]:
                if drawn[i] >= budget:
                    closing[i] = True
                elif c.at_bar:
                    if targets[i] is None and c.bar_length() is not None:
                        targets[i] = target_bars(_meter_of(vocab, out[i]), target_rngs[i])
                    if targets[i] is not None and written(i) >= targets[i] - 1:
                        closing[i] = True
            row = c.mask_view(closing[i])
            rows.append(row)
            if not closing[i] and targets[i] is not None and written(i) < targets[i] - 1 \
                    and has_end(row):
                short.append(j)
        mask = np.array(rows)             # a fresh array (np.stack's result, at a third of its cost)
        for j in short:                   # no end, no |], unless that leaves nothing
            row = mask[j].copy()
            row[eos] = False
            row[final_ids] = False
            if row.any():
                mask[j] = row
        return mask

    def wants_end(active, logits, mask):
        """A tune at a line start where the model would rather stop (</s> over
        half its probability) but the Form refuses the end (off the tonic, say)
        goes over to the closing moves, which end it on the tonic within a bar,
        instead of making the model go on against its will."""
        if cons is None or parts is not None:
            return mask
        for j, i in enumerate(active.tolist()):
            c = cons[i]
            if closing[i] or not c.end_refused or c.bars < 2 or (
                    targets[i] is not None and written(i) < targets[i] - 1):
                continue
            z = logits[j].astype(np.float64) / max(opts.temperature, 1e-6)
            z = np.exp(z - z.max())
            if z[eos] > 0.5 * z.sum():
                closing[i] = True
                mask[j] = c.mask_view(True)
        return mask

    # With the mask on, the LSTM runs in a second thread (NumPy's matrix products release
    # the GIL) while this one draws the tokens, advances the ABC state machines and builds
    # their masks: on two cores the step and the mask cost the longer of the two, not their
    # sum.  The step's big product, the recurrent one, needs the state but not the tokens,
    # so where no row can drop out it starts as soon as the last step is done, before the
    # draw (_Pipeline).  One or a few tunes step in the thread only where a core is free for
    # it and BLAS runs one thread (with two, it splits their product over both cores, and
    # the step runs in turn with the masks: faster, as their masks are few).  Nothing random
    # happens in the thread, so the output is the same byte for byte either way.
    threaded = cons is not None and (width >= OVERLAP_MIN_BATCH or (
        current_blas_threads() == 1 and spare_core()))
    pipe = _Pipeline(model.net, state, threaded=threaded, head=head)
    mask = masks(active)
    mask = wants_end(active, logits, mask)
    steps = 0
    plain = not opts.top_k and opts.top_p >= 1.0      # no top-k or top-p filter: _draw_plain
    try:
        while len(active):
            if deadline is not None and time.monotonic() > deadline:
                raise SamplingTimeout(f"sampling stopped after {steps} steps: it ran past its time limit")
            before = active.tolist()
            forced = set()
            if cons is not None and steps >= budget + CLOSING_STEPS:
                # the closing moves have not ended these tunes (a rare state the model keeps
                # steering around): end each the one deterministic way, or as it stands
                forced = {i for i in before if drawn[i] >= budget + CLOSING_STEPS}
                for i in forced:
                    try:
                        out[i].extend(t for t in cons[i].force_end_tokens() if t != eos)
                    except RuntimeError:
                        pass
            if mask is not None:     # float64 (the -inf's type): the numbers of astype, in one call
                lg = np.where(mask, logits, NEG_INF)
            else:
                lg = logits.astype(np.float64)
            if mask is None and steps >= budget:      # at the length cap only </s>
                over = [j for j, i in enumerate(before) if drawn[i] >= budget]
                lg[over] = -np.inf
                lg[over, eos] = 0.0
            if plain and len(before) == 1:     # one row: the same numbers on its 1-D view
                tok = np.array([_draw_row(lg[0], opts.temperature, rngs[before[0]].random())])
            elif plain:
                u = np.array([rngs[i].random() for i in before])
                tok = _draw_plain(lg, opts.temperature, u)
            else:
                u = np.array([rngs[i].random() for i in before])
                tok = _draw(_filter_logits(lg, opts.temperature, opts.top_k, opts.top_p), u)
            toks = tok.tolist()
            keep = []
            for j, i in enumerate(before):
                t = toks[j]
                if t == eos or i in forced:
                    done(i)
                    continue
                out[i].append(t)
                drawn[i] += 1
                keep.append(j)
            steps += 1
            # tunes waiting take the rows of those that ended
            add = min(width - len(keep), n - waiting)
            if add:
                new = np.arange(waiting, waiting + add)
                start(new.tolist())
                waiting += add
            if not keep:
                if not add:
                    break
                # every row ended at once: the new tunes start as the first ones did
                pipe.close()
                active = new
                logits, state = _header_rows(head, add)
                pipe = _Pipeline(model.net, state, threaded=threaded, head=head)
                mask = wants_end(active, logits, masks(active))
                continue
            if len(keep) < len(before):       # some tunes ended: drop their rows (and add)
                sel = np.asarray(keep)
                active = np.concatenate([active[sel], new]) if add else active[sel]
                pipe.submit(tok[sel], sel, add)
            else:
                pipe.submit(tok, None)
            if cons is not None:
                for j in keep:
                    i, t = before[j], toks[j]
                    cons[i].advance(t)
                    if parts is not None and t in part_closers:
                        part_idx[i] += 1
                mask = masks(active)
                if pipe.thread is not None and not mask[:, eos].any():
                    pipe.rows_stay()          # no tune can end at the next draw
            logits = pipe.result()
            mask = wants_end(active, logits, mask)
    finally:
        pipe.close()
    for i in active.tolist():
        if texts[i] is None:
            done(i)
    return texts


class _Pipeline:
    """The LSTM steps of a sampling, in a worker thread or inline.

    ``submit(tokens, sel, add)`` gives the drawn tokens (and, where tunes ended, the rows
    ``sel`` that go on, and the number of new tunes that take rows after them, ``add``:
    they start from ``head``, the logits and state after the header); ``result()`` returns
    the next logits.  Inline (no thread) each step is ``NumpyLSTM.step_ids``.  Only the
    worker touches the net's scratch buffers.

    Threaded, the two threads share one GIL, and only the step's big product, the
    recurrent one (``NumpyLSTM.recurrent``), runs without it.  So the product must be
    under way before this thread goes back to its Python work (advancing the state
    machines, building masks), or the worker waits for the GIL until that work is done
    and nothing overlaps (as it did: the product of a batch started about 1 ms, all the
    masks' time, after its tokens were handed over).  Hence:

    * a batch: ``submit`` waits until the worker has the tokens and is entering the
      product (it releases ``ack`` right before), or ``ACK_WAIT`` where the worker does
      not get a core that soon;
    * a few tunes (``FEW``), or a batch where no tune can end at the next draw (no
      mask row allows ``</s>``: ``rows_stay``, said before the worker is done with the
      step): the worker hands over the step's output and goes straight on to the next
      step's product, which needs the state, not the tokens, so it runs while this thread
      draws the next tokens and builds the masks (and the worker need not be woken).
      Where a tune ends after all the product is made again on the rows that go on.
    * with a few tunes the worker hands over the top layer's h, and this thread makes
      the logits while the worker goes on with the next product (in a cache that product
      does not stream the recurrent kernel through, which would push the output kernel
      out of it).

    Every product has the shape of the plain step's, so the numbers are the same."""

    FEW = 4
    # Seconds submit() waits at most for the worker to start the product.
    ACK_WAIT = 0.0005

    def __init__(self, net, state, threaded: bool, head=None):
        self.net = net
        self.state = state
        self.head = head               # (logits (1, V), state) that new tunes start from
        self.thread = None
        self.pending = None
        self.owed = False              # an ack not waited for (ACK_WAIT ran out)
        self.submitted = 0             # steps submitted
        self.stay = -1                 # rows_stay() after this many steps submitted
        self.started = len(state[0][0]) <= self.FEW     # the worker's product is under way
        if threaded:
            import queue
            import threading

            self.inbox: queue.SimpleQueue = queue.SimpleQueue()
            self.outbox: queue.SimpleQueue = queue.SimpleQueue()
            self.ack = threading.Lock()
            self.ack.acquire()                 # released by the worker as its product starts
            self.thread = threading.Thread(target=self._work, name="abcgen-step", daemon=True)
            self.thread.start()

    def _work(self) -> None:
        net, inbox, outbox, few, ack = self.net, self.inbox, self.outbox, self.FEW, self.ack
        try:
            state = self.state
            started = self.started
            if started:
                net.recurrent(state)
            done = 0                           # steps handed over
            while True:
                item = inbox.get()
                if item is None:
                    return
                tokens, sel, add = item
                if sel is not None:
                    state = [(h[sel], c[sel]) for h, c in state]
                if sel is not None or not started:
                    ack.release()              # submit() goes on as the product lets go of the GIL
                    net.recurrent(state)
                # a few tunes: hand over the top h, the sampling thread makes the logits (for a
                # batch, measured side by side, no faster: that thread has the masks to build)
                own = len(tokens) <= few and not add
                out, state = net.finish(tokens, state, output=not own)   # own: the top h
                if add:
                    out, state = self._join(out, state, add)
                done += 1
                started = len(tokens) <= few or self.stay == done
                outbox.put((out, own, started, None))
                if started:
                    net.recurrent(state)       # the next step's product, before its tokens come
        except BaseException as e:             # handed to the sampling thread by result()
            outbox.put((None, False, False, e))
            try:
                ack.release()                  # a submit() waiting for the product goes on
            except RuntimeError:
                pass                           # it was released already

    def rows_stay(self) -> None:
        """No tune can end at the next draw: the worker may start the next product before
        the tokens come (where it has not handed the step over yet)."""
        self.stay = self.submitted

    def _join(self, logits, state, add: int):
        """Logits and state with ``add`` new tunes' rows after them (the header's)."""
        new_logits, new_state = _header_rows(self.head, add)
        logits = np.concatenate([logits, new_logits])
        state = [(np.concatenate([h, h0]), np.concatenate([c, c0]))
                 for (h, c), (h0, c0) in zip(state, new_state)]
        return logits, state

    def submit(self, tokens, sel, add: int = 0) -> None:
        self.submitted += 1
        if self.thread is not None:
            if self.owed:              # released long since: before the output result() took
                self.ack.acquire()
                self.owed = False
            self.inbox.put((tokens, sel, add))
            if sel is not None or not self.started:
                # not for long: where no core is free the worker may not run for a while,
                # and this thread's Python work is better done meanwhile than waited out
                self.owed = not self.ack.acquire(timeout=self.ACK_WAIT)
            return
        if sel is not None:
            self.state = [(h[sel], c[sel]) for h, c in self.state]
        self.pending, self.state = self.net.step_ids(tokens, self.state)
        if add:
            self.pending, self.state = self._join(self.pending, self.state, add)

    def result(self):
        if self.thread is None:
            logits, self.pending = self.pending, None
            return logits
        out, own, self.started, err = self.outbox.get()
        if err is not None:
            raise err
        return self.net.output_layer(out) if own else out

    def close(self) -> None:
        if self.thread is not None:
            self.inbox.put(None)
            self.thread.join()


def _header_rows(head, k: int):
    """``k`` rows of the header's logits and LSTM state (``head``), for tunes that start."""
    head_logits, head_state = head
    return (np.repeat(head_logits, k, axis=0),
            [(np.repeat(h, k, axis=0), np.repeat(c, k, axis=0)) for h, c in head_state])


def _meter_of(vocab, ids: list[int]) -> str | None:
    for t in ids:
        sym = vocab.symbols[t]
        if sym.startswith("M:"):
            return sym[2:]
    return None


def tune_book(model: Model, texts: list[str], opts: SampleOptions) -> str:
    parts = []
    for i, t in enumerate(texts, 1):
        if not t.endswith("\n"):
            t += "\n"
        title = f"T:abcgen {model.name} seed {tune_seed(opts.seed or 0, i)}"
        if opts.temperature != 1.0:
            title += f" temperature {opts.temperature:g}"
        parts.append(f"X:{i}\n{title}\n{t}")
    return "\n".join(parts)

