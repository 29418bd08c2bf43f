"""What a tune book sounds like, in numbers: the figures ``abcgen evaluate`` compares.

Every figure is read from the canonical model text of a tune (see
:mod:`abcgen.abc.writer`), one token pass, no music21: a tune book under
evaluation is rewritten canonically first (music21 parse + writer), and the
reference corpus is already canonical, so both sides are measured by the same
code.  In canonical ABC a note without an accidental has the key signature's
pitch (accidentals never carry), so pitches are exact.

Per tune:

* ``meter``, ``key``: the header's ``M:`` and ``K:`` values (``6/8``, ``Gmaj``).
* ``pitches``: MIDI numbers of the notes that start (a note tied to the same
  pitch is not a new note; every note of a chord counts), all voices;
  ``pitch_classes`` is the same mod 12 (0 = C).
* ``low``, ``high``, ``span``: the lowest and highest of them and the span in
  semitones.
* ``intervals``: signed semitones from each melody note to the next, per voice
  (a chord counts as its highest note; rests and bar lines are skipped).
* ``bars``: the length of the first voice in bars of its meter, i.e. its total
  duration over the bar length, rounded (a pickup and the short closing bar
  make one bar together); under ``M:none`` the number of non-empty bars.
* ``length``: the same total duration of the first voice in bars, exact (a
  Fraction; None under ``M:none``).
* ``repeats``: end-of-repeat signs of the first voice (``:|``, ``::``, ``:|2``:
  one per repeated section).
* ``parts``: sections of the first voice, split at ``:|``, ``::``, ``||``,
  ``|]``, ``[|`` and ``|:``; a section counts when it lasts at least one bar
  (so a lone pickup is no part) and does not start with a second (or later)
  ending, which continues the section before it.
* ``part_bars``: the length of each of those parts in bars, rounded (a part
  with endings counts its body and first ending, as it is played once; a
  pickup and the short bar that completes it make one bar); empty under
  ``M:none``.
* ``bar_texts``: each non-empty bar as text, bar lines, spaces, line breaks and
  field lines left out (the unit of the novelty figures, :mod:`abcgen.novelty`).

Overlap of two histograms = 1 - total variation distance = the sum over all
values of min(p, q), with p and q the two histograms scaled to sum to 1:
1 means the same distribution, 0 no value in common.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import numpy as np

from .abc.symbols import (B_DOUBLE, B_END, B_END_ENDING, B_ENDING, B_ENDSTART, B_FINAL,
                          B_LINE_ENDING, B_START, B_THICK, bar_of, duration_of, fraction_of, meter_value,
                          pitch_of, tuplet_of)
from .abc.tokens import split_tokens

_BASE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACC = {"": None, "^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}
_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SHARP_ORDER = "FCGDAEB"
_MODE_SHIFT = {"maj": 0, "ion": 0, "mix": -1, "dor": -2, "min": -3, "aeo": -3, "phr": -4,
               "loc": -5, "lyd": 1}
_SECTION_END = {B_END, B_ENDSTART, B_DOUBLE, B_FINAL, B_THICK, B_START}
_REPEAT_END = {B_END, B_ENDSTART, B_END_ENDING}

# The histograms compared with the reference corpus, in report order.
HISTOGRAMS = ("meter", "key", "pitch_class", "pitch", "span", "interval", "bars", "repeats", "parts")


def key_alterations(key: str) -> dict:
    """Semitone alteration per letter of a K: value such as ``Gmaj``, ``Bbmin``, ``F#dor``.

    Unknown or missing keys (``none``) alter nothing.
    """
    if not key or key[0] not in _FIFTHS:
        return {}
    i = 1
    alter = 0
    while i < len(key) and key[i] in "#b":
        alter += 1 if key[i] == "#" else -1
        i += 1
    shift = _MODE_SHIFT.get(key[i:i + 3].lower())
    if shift is None:
        return {}
    sharps = _FIFTHS[key[0]] + 7 * alter + shift
    out = {}
    for k, letter in enumerate(_SHARP_ORDER):
        if sharps > 0:    # the k-th sharp, again every 7 (double sharps)
            n = (sharps - k + 6) // 7
        else:             # flats come in the reverse order: B E A D G C F
            n = -((-sharps - (6 - k) + 6) // 7)
        if n:
            out[letter] = n
    return out


def midi_of(tok: str, key_alter: dict) -> int | None:
    p = pitch_of(tok)
    if p is None:
        return None
    (letter, octave), acc = p
    a = _ACC.get(acc)
    if a is None:
        a = key_alter.get(letter, 0)
    return 12 * (octave + 1) + _BASE[letter] + a


def tune_stats(text: str) -> dict:
    """The figures of one tune from its canonical model text (see the module doc).

    Raises TokenizeError (an InputError) when the text is not canonical ABC.
    """
    toks = split_tokens(text, "token")
    meter_label = key_label = None
    meter = None          # bar length in whole notes, None for M:none
    unit = Fraction(1, 8)
    key_alter: dict = {}
    in_body = False
    voice = 0
    pitches: list[int] = []
    intervals: list[int] = []
    bar_texts: list[str] = []
    prev_melody = None
    last_sound: list = []          # the pitches of the last note or chord (none after a rest)
    tie_from: list = []            # the pitches a tie carries into the next sound
    chord: list | None = None
    last_len = Fraction(0)        # the last sound's length, in whole notes, before its duration token
    last_scale = Fraction(1)
    tup_left, tup_scale = 0, Fraction(1)
    bar_buf: list[str] = []
    bar_sound = False
    # first-voice structure
    total = Fraction(0)            # in bars
    measures = 0
    repeats = 0
    parts = 0
    part_bars: list[int] = []
    sec_len = Fraction(0)
    sec_sound = False
    sec_cont = False

    def sound(length_units: Fraction):
        nonlocal last_len, last_scale, tup_left, total, sec_len, bar_sound, sec_sound
        last_scale = tup_scale if tup_left else Fraction(1)
        tup_left = max(tup_left - 1, 0)
        last_len = unit * last_scale
        bar_sound = True
        if voice == 0:
            sec_sound = True
            if meter:
                total += last_len / meter
                sec_len += last_len / meter

    def onset(midis: list[int]):
        """Count the notes that start now; the melody moves to the highest."""
        nonlocal prev_melody, tie_from, last_sound
        pitches.extend(m for m in midis if m not in tie_from)
        top = max(midis)
        if top not in tie_from and prev_melody is not None:
            intervals.append(top - prev_melody)
        prev_melody, tie_from, last_sound = top, [], midis

    def end_bar():
        nonlocal bar_buf, bar_sound, measures
        if bar_sound:
            bar_texts.append("".join(bar_buf))
            if voice == 0:
                measures += 1
        bar_buf, bar_sound = [], False

    def end_section():
        nonlocal parts, sec_len, sec_sound, sec_cont
        if sec_sound and not sec_cont and (sec_len >= 1 if meter else True):
            parts += 1
            if meter:
                part_bars.append(int(sec_len + Fraction(1, 2)))
        sec_len, sec_sound, sec_cont = Fraction(0), False, False

    for tok in toks:
        if chord is None and len(tok) > 1 and tok[1] == ":" and tok[0] in "MLKV":
            val = tok[2:]
            if tok[0] == "M":
                m = meter_value(val)
                meter = None if m in (None, "bad") else m
                meter_label = meter_label or val
            elif tok[0] == "L":
                unit = fraction_of(val) or unit
            elif tok[0] == "K":
                key_alter = key_alterations(val)
                key_label = key_label or val
                in_body = True
            elif in_body and (bar_sound or pitches or measures):
                end_bar()
                if voice == 0:
                    end_section()
                voice += 1
                prev_melody, tie_from, last_sound = None, [], []
            continue
        if not in_body or tok in (" ", "\n"):
            continue
        if chord is not None:
            if tok == "]":
                onset(chord)
                chord = None
                sound(Fraction(1))
                bar_buf.append(tok)
            else:
                m = midi_of(tok, key_alter)
                if m is not None:
                    chord.append(m)
                    bar_buf.append(tok)
            continue
        b = bar_of(tok)
        if b is not None and b != "bad":
            kind = b[0]
            end_bar()
            if voice == 0:
                if kind in _REPEAT_END:
                    repeats += 1
                if kind in _SECTION_END or kind == B_END_ENDING:
                    end_section()
                if kind in (B_ENDING, B_LINE_ENDING, B_END_ENDING) and b[1] >= 2 and not sec_sound:
                    sec_cont = True
            continue
        bar_buf.append(tok)
        if tok == "[":
            chord = []
            continue
        if tok == "z":
            sound(Fraction(1))
            tie_from, last_sound = [], []
            continue
        if tok == "-":
            tie_from = list(last_sound)
            continue
        m = midi_of(tok, key_alter)
        if m is not None:
            onset([m])
            sound(Fraction(1))
            continue
        d = duration_of(tok)
        if d is not None:
            if voice == 0 and meter:
                extra = last_len * (d - 1) / meter
                total += extra
                sec_len += extra
            continue
        t = tuplet_of(tok) if tok.startswith("(") else None
        if t is not None:
            tup_left, tup_scale = t[2], Fraction(t[1], t[0])
    end_bar()
    end_section()
    bars = int(total + Fraction(1, 2)) if meter else measures
    return {
        "meter": meter_label or "none", "key": key_label or "none",
        "pitches": pitches, "intervals": intervals,
        "low": min(pitches) if pitches else None, "high": max(pitches) if pitches else None,
        "span": max(pitches) - min(pitches) if pitches else None,
        "bars": bars, "repeats": repeats, "parts": parts, "part_bars": part_bars, "bar_texts": bar_texts,
        "length": total if meter else None,
    }


# --------------------------------------------------------------------------
# Histograms of a tune book


def histograms(stats: list[dict]) -> dict:
    """Counters of every figure over a list of tune_stats results (keys: HISTOGRAMS)."""
    h = {name: Counter() for name in HISTOGRAMS}
    for s in stats:
        h["meter"][s["meter"]] += 1
        h["key"][s["key"]] += 1
        h["pitch"].update(s["pitches"])
        h["pitch_class"].update(p % 12 for p in s["pitches"])
        h["interval"].update(s["intervals"])
        if s["span"] is not None:
            h["span"][s["span"]] += 1
        h["bars"][s["bars"]] += 1
        h["repeats"][s["repeats"]] += 1
        h["parts"][s["parts"]] += 1
    return h


def overlap(p: dict, q: dict) -> float | None:
    """1 - total variation distance of two histograms (value -> count); None if one is empty."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return None
    return sum(min(p[k] / sp, q.get(k, 0) / sq) for k in p if k in q)


def mean(h: dict) -> float | None:
    n = sum(h.values())
    return sum(k * v for k, v in h.items()) / n if n else None


def summary(h: dict) -> dict:
    """Scalar figures of a tune book's histograms (means; None when there is nothing to average)."""
    def r(x):
        return None if x is None else round(x, 4)

    return {
        "mean_bars": r(mean(h["bars"])), "mean_repeats": r(mean(h["repeats"])),
        "mean_parts": r(mean(h["parts"])), "mean_span": r(mean(h["span"])),
        "mean_abs_interval": r(mean(_abs(h["interval"]))),
        "notes": sum(h["pitch"].values()),
    }


def _abs(h: dict) -> Counter:
    out = Counter()
    for k, v in h.items():
        out[abs(k)] += v
    return out


def jsonable(h: dict) -> dict:
    """A histogram with string keys, sorted by value (numbers numerically)."""
    keys = sorted(h, key=lambda k: (isinstance(k, str), k))
    return {str(k): h[k] for k in keys}


# --------------------------------------------------------------------------
# Form: what a musician checks before playing a tune as written


def bar_lines(text: str) -> int:
    """Bar lines of a tune's model text: every bar token (``|`` ``||`` ``|]``
    ``[|`` ``|:`` ``:|`` ``::`` and the ending bars ``|1`` ``:|2``; a line-start
    ``[2`` is no bar line)."""
    n = 0
    for tok in split_tokens(text, "token"):
        b = bar_of(tok)
        if b is not None and b != "bad" and b[0] != B_LINE_ENDING:
            n += 1
    return n


def form_figures(text: str) -> dict:
    """The form of one tune read from its model text (header from M: on), token by
    token, without the sampler's grammar machine:

    * ``meter_change``, ``key_change``: an ``M:`` or ``K:`` line after the header's K:;
    * ``final_early``: a ``|]`` with a note or rest after it;
    * ``open_first``: a first ending (``|1``, ``[1``) that no later ending
      (``:|2``, ``|2``, ``[2`` ...) follows;
    * ``tonic_end``: the last note (the lowest of a last chord) is the tonic of
      the key in force (a note without accidental takes the key signature's);
    * ``bar_lines``: as ``bar_lines``.
    """
    from .abc.grammar import tonic_of

    toks = split_tokens(text, "token")
    key = None
    in_body = False
    meter_change = key_change = final_early = False
    after_final = False
    open_first = 0
    last_note = None        # midi of the last note (or a chord's lowest)
    last_key = None
    chord: list | None = None
    bars = 0
    for tok in toks:
        if chord is None and len(tok) > 2 and tok[1] == ":" and tok[0] in "MLK":
            if tok[0] == "K":
                if in_body and tok[2:] != key:
                    key_change = True
                key = tok[2:]
                in_body = True
            elif tok[0] == "M" and in_body:
                meter_change = True
            continue
        if not in_body:
            continue
        if chord is not None:
            if tok == "]":
                if chord:
                    last_note, last_key = min(chord), key
                chord = None
            else:
                m = midi_of(tok, key_alterations(key))
                if m is not None:
                    chord.append(m)
            continue
        b = bar_of(tok)
        if b is not None and b != "bad":
            kind, first, _ = b
            if kind != B_LINE_ENDING:
                bars += 1
            if kind in (B_ENDING, B_LINE_ENDING, B_END_ENDING):
                if first == 1:
                    open_first += 1
                elif open_first:
                    open_first -= 1
            if kind == B_FINAL:
                after_final = True
            continue
        if tok == "[" or tok == "z":
            final_early |= after_final
            if tok == "[":
                chord = []
            continue
        m = midi_of(tok, key_alterations(key))
        if m is not None:
            final_early |= after_final
            last_note, last_key = m, key
    tonic_end = False
    t = tonic_of(last_key)
    if last_note is not None and t is not None:
        tonic_end = (last_note - _BASE[t[0]] - t[1]) % 12 == 0
    return {"meter_change": meter_change, "key_change": key_change, "final_early": final_early,
            "open_first": open_first > 0, "tonic_end": tonic_end, "bar_lines": bars}


def model_texts_of_book(book: str) -> list[str]:
    """The model text (from the first M: line on, X:, T: and comment lines left
    out) of every tune of a tune book written by ``abcgen sample``."""
    out = []
    for chunk in book.replace("\r\n", "\n").split("\n\n"):
        lines = [ln for ln in chunk.split("\n") if ln and not ln.startswith(("X:", "T:", "%"))]
        if lines:
            out.append("\n".join(lines) + "\n")
    return out


def tune_form(text: str, stats: dict | None = None) -> dict:
    """``form_figures`` of one tune's model text, with ``part_bars`` (see
    ``tune_stats``, or from ``stats`` when its tune_stats are at hand; empty when
    the text is not canonical ABC)."""
    from .errors import InputError

    f = form_figures(text)
    try:
        f["part_bars"] = (stats or tune_stats(text))["part_bars"]
    except InputError:
        f["part_bars"] = []
    return f


# The form table of ``abcgen evaluate``: label, figure, unit.
FORM_ROWS = (("meter change after the header", "meter_change_pct", "%"),
             ("key change after the header", "key_change_pct", "%"),
             ("final bar |] before the end", "final_early_pct", "%"),
             ("first ending with no second", "open_first_pct", "%"),
             ("last note on the tonic", "tonic_end_pct", "%"),
             ("bar lines per tune, median", "bar_lines_median", ""),
             ("bar lines per tune, 90th percentile", "bar_lines_p90", ""),
             ("parts of 4, 8 or 16 bars", "parts_4_8_16_pct", "%"))


FORM_SHARES = ("meter_change", "key_change", "final_early", "open_first", "tonic_end")


def form_summary(figs: list[dict]) -> dict:
    """Form figures of a list of tunes (``tune_form`` each): shares of tunes in
    percent, bar lines per tune (median, 90th percentile), and the share of parts
    that last 4, 8 or 16 bars."""
    n = len(figs)
    if not n:
        return {"tunes": 0}
    out: dict = {"tunes": n}
    for name in FORM_SHARES:
        out[f"{name}_pct"] = round(100.0 * sum(bool(f[name]) for f in figs) / n, 1)
    bars = np.sort(np.array([f["bar_lines"] for f in figs]))
    out["bar_lines_median"] = float(np.median(bars))
    out["bar_lines_p90"] = float(np.percentile(bars, 90))
    parts = [b for f in figs for b in f.get("part_bars", ())]
    if parts:
        out["parts_4_8_16_pct"] = round(100.0 * sum(b in (4, 8, 16) for b in parts) / len(parts), 1)
    return out


def form_report(texts: list[str]) -> dict:
    """``form_summary`` of tunes given as model texts."""
    return form_summary([tune_form(t) for t in texts])


def music21_bars(abc_text: str) -> tuple[int, int]:
    """(complete bars, wrong bars) of one tune as music21 reads it: its own ABC
    parser (not abcgen's reader, not the sampler's bar rule); see ``score_bars``."""
    from music21 import converter

    return score_bars(converter.parse(abc_text, format="abc", forceSource=True))   # text, never a pickle


def score_bars(score) -> tuple[int, int]:
    """(complete bars, wrong bars) of the first part of a music21 score (as
    music21's reader or abcgen's reader builds it): measure durations against
    the time signature in force.  Short measures that are no wrong bars, as a
    musician reads them: a pickup (a short measure that opens the tune or a
    part, i.e. follows a bar line other than a plain one), a short measure that
    completes a bar with a pickup seen before (the part comes round to it), a
    short measure that together with the next makes one bar (a bar split by a
    sign), and a short last measure.  Every other measure is a complete bar."""
    from music21 import meter

    part = score.parts[0] if score.parts else score
    rows = []
    ts = None
    measures = list(part.getElementsByClass("Measure"))
    for i, m in enumerate(measures):
        found = list(m.getElementsByClass(meter.TimeSignature))
        if found:
            ts = found[0]
        if ts is None:
            continue
        rows.append((Fraction(m.duration.quarterLength).limit_denominator(10000),
                     Fraction(ts.barDuration.quarterLength).limit_denominator(10000),
                     _section_line(m.rightBarline)
                     or (i + 1 < len(measures) and _section_line(measures[i + 1].leftBarline))))
    complete = wrong = 0
    pickups: set = set()
    opens = True                     # the measure opens the tune or a part
    i, n = 0, len(rows)
    while i < n:
        got, bar, section = rows[i]
        if got == bar:
            complete += 1
        elif got < bar and bar - got in pickups:
            complete += 1
        elif got < bar and opens:
            pickups.add(got)
        elif i + 1 < n and got < bar and got + rows[i + 1][0] == bar:
            complete += 1
            i += 1
            section = rows[i][2]
        elif not (got < bar and i == n - 1):
            complete += 1
            wrong += 1
        opens = section
        i += 1
    return complete, wrong


def _section_line(barline) -> bool:
    """A bar line that ends a part (a repeat sign, a double or final bar), not a plain one."""
    return barline is not None and (getattr(barline, "type", "regular") != "regular"
                                    or type(barline).__name__ == "Repeat")


def abc2midi_bar_warnings(abc_text: str) -> int | None:
    """How many bars of one tune abc2midi says have the wrong length ("Bar N has
    X time units while the time signature has Y"); None when abc2midi is not
    installed or does not play the tune.  abc2midi says it twice of a wrong bar
    inside a repeat, the second time "in repeat"; a warning said only "in repeat"
    is its reading of the usual pickup before ``|:`` (``A|:d2f edB|A3 A2:|``: the
    short last bar of the part is completed by the pickup, not by the bar the
    repeat goes back to), not a wrong bar, and is not counted."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if shutil.which("abc2midi") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="abcgen-bars-") as tmp:
        (Path(tmp) / "tune.abc").write_text(abc_text, encoding="utf-8")
        try:
            p = subprocess.run(["abc2midi", "tune.abc", "-o", "tune.mid"], cwd=tmp, capture_output=True,
                               text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return None
    if p.returncode != 0:
        return None
    return wrong_bar_warnings((p.stdout + p.stderr).splitlines())


_BAR_WARNING = re.compile(r"Bar \d+ has [\d/]+ time units while the time signature has [\d/]+(.*)$")


def wrong_bar_warnings(lines: list[str]) -> int:
    """The wrong bars among abc2midi's output lines (see ``abc2midi_bar_warnings``)."""
    return sum(1 for ln in lines if (m := _BAR_WARNING.search(ln)) and "in repeat" not in m.group(1))


def abc2midi_errors(book: str) -> int | None:
    """How many tunes of a tune book abc2midi reports an error for; None when
    abc2midi is not installed."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if shutil.which("abc2midi") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "book.abc"
        src.write_text(book, encoding="utf-8")
        p = subprocess.run(["abc2midi", "book.abc"], cwd=tmp, capture_output=True, text=True,
                           timeout=600)
        starts = [i + 1 for i, ln in enumerate(book.split("\n")) if ln.startswith("X:")]
        bad = set()
        for ln in (p.stdout + p.stderr).splitlines():
            if ln.startswith("Error"):
                m = re.match(r"Error in line-char (\d+)-", ln)
                line = int(m.group(1)) if m else 1
                bad.add(max((k for k, s in enumerate(starts) if s <= line), default=0))
        return len(bad)


def book_form_table(book: str, corpus_bars: dict | None = None) -> dict:
    """form_report of an ``abcgen sample`` tune book, plus the independent bar
    checks: music21's measures (share of complete bars with the meter's length,
    tunes music21 cannot read) and abc2midi's errors; with corpus_bars (bar lines
    -> tunes), the overlap of the bar-line histogram with it."""

    texts = model_texts_of_book(book)
    out = form_report(texts)
    complete = wrong = unread = 0
    for chunk in re.split(r"\n\s*\n", book.strip()):
        if not chunk.strip():
            continue
        try:
            c, w = music21_bars(chunk + "\n")
        except Exception:  # noqa: BLE001 - any music21 failure is a tune it cannot read
            unread += 1
            continue
        complete, wrong = complete + c, wrong + w
    out["music21_bars_right_pct"] = round(100.0 * (complete - wrong) / complete, 2) if complete else None
    out["music21_unread"] = unread
    out["abc2midi_error_tunes"] = abc2midi_errors(book)
    if corpus_bars:
        out["bar_lines_overlap"] = round(overlap(Counter(f["bar_lines"] for f in map(form_figures, texts)),
                                                 Counter(corpus_bars)), 3)
    return out


def folk_bar_lines(max_seconds: float = 420.0, seed: int = 1) -> dict:
    """Bar lines per tune (``bar_lines``) by the header's meter, and the form
    figures (shares), of the folk corpus's tunes (corpora/folk.toml: the five ABC
    collections of music21) in canonical text, the tunes in a seeded random order
    until ``max_seconds`` have passed (tunes abcgen cannot read are left out).
    (The sampler's length table, ``sample.CORPUS_BARS``, now counts complete bars
    of the prepared train split instead.)"""
    import random
    import time
    from collections import defaultdict
    from pathlib import Path

    import music21

    from .abc.reader import parse_abc, read_book
    from .abc.writer import model_text, write_abc

    root = Path(music21.__file__).parent / "corpus"
    tunes = []
    for coll in ("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"):
        for f in sorted((root / coll).rglob("*.abc")):
            try:
                tunes.extend(read_book(f))
            except Exception:  # noqa: BLE001 - a book abcgen cannot split is left out
                continue
    random.Random(seed).shuffle(tunes)
    by_meter: dict = defaultdict(Counter)
    figs = []
    t0 = time.monotonic()
    for t in tunes:
        if time.monotonic() - t0 > max_seconds:
            break
        try:
            text = model_text(write_abc(parse_abc(t.text)))
        except Exception:  # noqa: BLE001 - a tune abcgen cannot read is left out
            continue
        by_meter[text.split("\n", 1)[0][2:]][bar_lines(text)] += 1
        figs.append(form_figures(text))
    n = len(figs)
    return {"tunes": n, "by_meter": {m: sorted(c.items()) for m, c in by_meter.items()},
            "shares": {k: sum(f[k] for f in figs) / n for k in figs[0] if k != "bar_lines"} if n else {}}
