"""Refit PHASE_WEIGHTS and METER_WEIGHTS of abcgen/midi/meter.py (a measurement, not a test).

    python tests/data/midi/fit_detection.py      (from the repository root, in the venv)

Ground truth comes from ABC tunes of music21's corpus (400 each, drawn with a
fixed seed, from Ryan's Mammoth, O'Neill's 1850 and the Essen folk songs):
the meter of the tune and the length of its pickup.  The melody goes in as
note events on the 1/16 grid, as load_midi sees it.

Phase: an averaged perceptron over the candidate phases of each tune (tunes
with meter changes left out).  Meter: an averaged perceptron with one weight
vector per meter over standardized features (the standardization is folded
into the printed weights).  Each is trained on one half and scored on the
other, both ways, then trained on everything; the script prints the held-out
accuracies and the weights to paste into abcgen/midi/meter.py.  Meter classes:
C and 2/2 count as 4/4 (same bar), 12/8 and rarer meters are left out.
"""

from __future__ import annotations

import glob
import random
import sys
import warnings
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np

import abcgen.midi.meter as M
from abcgen.abc.reader import parse_tune, read_book
from abcgen.abc.writer import frac
from abcgen.midi.io import MidiTrack
from abcgen.sounding import note_events

BASE = str(Path(__import__("music21").__file__).parent / "corpus") + "/"
SETS = {"ryans": "ryansMammoth/*.abc", "oneills": "oneills1850/*.abc", "essen": "essenFolksong/*.abc"}
STEP = Fraction(1, 4)
METER_CLASS = {"2/4": "2/4", "4/4": "4/4", "C": "4/4", "2/2": "4/4", "C|": "4/4", "3/4": "3/4",
               "6/8": "6/8", "9/8": "9/8", "3/8": "3/8"}


def extract(pattern: str, limit: int, seed: int = 0) -> list[dict]:
    from music21 import meter, stream

    tunes = [t for f in sorted(glob.glob(BASE + pattern)) for t in read_book(f)]
    random.Random(seed).shuffle(tunes)
    out = []
    for t in tunes:
        if len(out) >= limit:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                s = parse_tune(t)
            except Exception:
                continue
        if len(s.parts) != 1:
            continue
        ms = s.parts[0].getElementsByClass(stream.Measure)
        tss = list(s.recurse().getElementsByClass(meter.TimeSignature))
        if not tss or not ms:
            continue
        m0 = ms[0]
        out.append(dict(
            ts=tss[0].ratioString,
            changes=len({x.ratioString for x in tss}) > 1,
            pickup=frac(m0.duration.quarterLength) if frac(m0.paddingLeft) > 0 else Fraction(0),
            onsets=M._onsets(M._Voice(MidiTrack(0), sorted(
                (float(on), float(on + d), p, 80) for _x, on, d, p in note_events(s))), STEP)))
    return out


def ts_of(text: str):
    text = {"C": "4/4", "C|": "2/2"}.get(text, text)
    return tuple(int(x) for x in text.split("/"))


def perceptron(items, score, update, dim, epochs=20, seed=0):
    w = np.zeros(dim)
    total = np.zeros(dim)
    rng = random.Random(seed)
    count = 0
    for _ in range(epochs):
        order = items[:]
        rng.shuffle(order)
        for it in order:
            pred = score(w, it)
            if pred != it[-1]:
                update(w, it, pred)
            total += w
            count += 1
    return total / count


def halves(items, fit, accuracy):
    rng = random.Random(1)
    items = items[:]
    rng.shuffle(items)
    h = len(items) // 2
    for train, test in ((items[:h], items[h:]), (items[h:], items[:h])):
        print("  held out:", accuracy(fit(train), test))
    w = fit(items)
    print("  trained on all:", accuracy(w, items))
    return w


def by_set(items, correct):
    res: dict = {}
    for it in items:
        r = res.setdefault(it[0], [0, 0])
        r[0] += correct(it)
        r[1] += 1
    return {k: f"{a}/{b} {a / b:.0%}" for k, (a, b) in sorted(res.items())}


def main():
    data = {name: extract(pat, 400) for name, pat in SETS.items()}

    # ---- phase
    items = []
    for name, tunes in data.items():
        for d in tunes:
            if d["changes"] or d["ts"] not in METER_CLASS:
                continue
            ts = ts_of(d["ts"])
            feats = M.phase_features(d["onsets"], ts, STEP, M._tonic_guess(d["onsets"]))
            truth = d["pickup"] % M._bar_length(ts)
            if truth in feats:
                keys = list(feats)
                items.append((name, np.array([feats[k] for k in keys]), keys.index(truth)))
    dim = items[0][1].shape[1]
    score = lambda w, it: int(np.argmax(it[1] @ w))

    def update(w, it, pred):
        w += it[1][it[2]] - it[1][pred]

    fit = lambda its: perceptron(its, score, update, dim)
    print("phase")
    wp = halves(items, fit, lambda w, its: by_set(its, lambda it: score(w, it) == it[2]))
    M.PHASE_WEIGHTS = list(wp)

    # ---- meter
    items = []
    for name, tunes in data.items():
        for d in tunes:
            if d["changes"] or d["ts"] not in METER_CLASS or len(d["onsets"].times) < 8:
                continue
            on = d["onsets"]
            sampled = M._sampled(on, M._resolution(on, STEP))
            X = np.array([M.meter_features(on, STEP, ts_of(m), sampled) for m in M.METERS])
            items.append((name, X, M.METERS.index(METER_CLASS[d["ts"]])))
    print("meters:", Counter(M.METERS[it[2]] for it in items))
    allx = np.concatenate([it[1] for it in items])
    mu, sd = allx.mean(0), allx.std(0)
    mu[0], sd[0] = 0.0, 1.0
    sd[sd == 0] = 1.0
    k, f = items[0][1].shape
    mscore = lambda w, it: int(np.argmax((w.reshape(k, f) * (it[1] - mu) / sd).sum(1)))

    def mupdate(w, it, pred):
        z = (it[1] - mu) / sd
        W = w.reshape(k, f)
        W[it[2]] += z[it[2]]
        W[pred] -= z[pred]

    family = {"2/4": "duple", "4/4": "duple", "3/4": "3/4", "3/8": "compound", "6/8": "compound",
              "9/8": "9/8"}

    def macc(w, its):
        exact = by_set(its, lambda it: mscore(w, it) == it[2])
        fam = by_set(its, lambda it: family[M.METERS[mscore(w, it)]] == family[M.METERS[it[2]]])
        return {"exact": exact, "same family (2/4~4/4, 3/8~6/8)": fam}

    print("meter")
    wm = halves(items, lambda its: perceptron(its, mscore, mupdate, k * f, epochs=30), macc)
    W = wm.reshape(k, f) / sd
    W[:, 0] = wm.reshape(k, f)[:, 0] - (wm.reshape(k, f) * mu / sd).sum(1)

    fmt = lambda xs: ", ".join(f"{x:.4g}" for x in xs)
    print("\nPHASE_WEIGHTS = [")
    for i in range(0, len(wp), 9):
        print("    " + fmt(wp[i:i + 9]) + ",")
    print("]\n\nMETER_WEIGHTS = {")
    for m, row in zip(M.METERS, W):
        print(f'    "{m}": [{fmt(row)}],')
    print("}")


if __name__ == "__main__":
    sys.exit(main())
