"""A MIDI file as a music21 Score ready for the canonical ABC writer: the stages put together.

``load_midi`` reads the file (``io``), picks the melody (``tracks``), finds
the meter and the pickup (``meter``), quantizes every part on one set of
bars (``quantize``), spells the pitches for the key (``spelling``), finds the
repeats (``repeats``) and builds the Score, notes cut at bar lines and beat
lines so that every piece is a plain note value.

Tempo and title.  The first tempo event becomes a MetronomeMark (a dotted
quarter beat in compound meters) so the writer prints ``Q:``; the title is the
sequence name (the name of the first chunk, as the MIDI spec defines it),
else the file name.  A change of key signature after the first bar starts a
new key there.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from ..errors import InputError
from .io import MidiFile, read_midi
from .meter import _bar_length, _compound, _Onsets, _onsets, _snap, detect_meter, detect_phase, parse_meter
from .quantize import (DEFAULT_GRID, _Bar, _bars, _centers, _Grid, _quantize, _segments, parse_grid,
                       triplet_alignment)
from .repeats import _repeat_plan
from .spelling import _pitch, folk_key, spell_events
from .tracks import _Voice, _voice, choose_melody, note_tracks


# --------------------------------------------------------------------------
# Building the Score


def _cuts(a: Fraction, b: Fraction, bar: _Bar, grid: _Grid) -> list:
    """[a, b) within one bar as pieces that each have a plain note value."""
    if _compound(bar.ts) or (grid.on_straight(a) and grid.on_straight(b)):
        return [(a, b)]
    pts = [a]
    x = bar.start + math.floor(a - bar.start) + 1
    while x < b:
        pts.append(x)
        x += 1
    pts.append(b)
    return list(zip(pts, pts[1:]))


def _element(pitches: list, names: list, ql: Fraction):
    from music21 import chord, note

    if not pitches:
        return note.Rest(quarterLength=ql)
    if len(pitches) == 1:
        return note.Note(_pitch(pitches[0], names[0]), quarterLength=ql)
    return chord.Chord([_pitch(p, n) for p, n in zip(pitches, names)], quarterLength=ql)


def _bar_pieces(events, bars: list[_Bar], grid: _Grid, names: list) -> list[list]:
    """Per bar: (start, end, pitches, spelling, tie) pieces, notes cut at bar lines and beat lines."""
    import bisect

    starts = [b.start for b in bars]
    per_bar: list = [[] for _ in bars]
    for (on, off, pitches), spelled in zip(events, names):
        i = max(0, bisect.bisect_right(starts, on) - 1)
        pieces = []
        while i < len(bars) and bars[i].start < off:
            bar = bars[i]
            a, b = max(on, bar.start), min(off, bar.end)
            if a < b:
                pieces.extend((i, x, y) for x, y in _cuts(a, b, bar, grid))
            i += 1
        for k, (i, x, y) in enumerate(pieces):
            kind = None
            if len(pieces) > 1:
                kind = "start" if k == 0 else "stop" if k == len(pieces) - 1 else "continue"
            per_bar[i].append((x, y, pitches, spelled, kind))
    for pieces in per_bar:
        pieces.sort(key=lambda e: e[0])
    return per_bar


def _build_part(per_bar: list, bars: list[_Bar], grid: _Grid, t0: Fraction, end: Fraction,
                first_key, key_changes: dict, tempo_mark=None, repeats=()):
    from music21 import bar as m21bar, meter, spanner, stream, tie

    skip: set = set()
    opens, closes, endings = set(), set(), {}
    for r in repeats:
        a, length, k = r.start, r.length, r.ending
        skip.update(range(a + length, a + 2 * length - k))
        opens.add(a)
        closes.add(a + length - 1)
        if k:
            endings[a + length - k] = (1, k)
            endings[a + 2 * length - k] = (2, k)

    part = stream.Part()
    prev_ts = None
    number = 1
    pos_in_part = Fraction(0)
    measures = []
    for i, bar in enumerate(bars):
        lo, hi = max(bar.start, t0), min(bar.end, end)
        if lo >= hi or i in skip:
            continue
        first = prev_ts is None
        pickup = first and lo > bar.start
        m = stream.Measure(number=0 if pickup else number)
        number = number if pickup else number + 1
        if pickup:
            m.paddingLeft = float(lo - bar.start)
        if first or bar.ts != prev_ts:
            m.insert(0, meter.TimeSignature(f"{bar.ts[0]}/{bar.ts[1]}"))
        if first:
            m.insert(0, first_key)
            if tempo_mark is not None:
                m.insert(0, tempo_mark)
        elif i in key_changes:
            m.insert(0, _copy_key(key_changes[i]))
        prev_ts = bar.ts
        pos = lo
        for x, y, pitches, spelled, kind in per_bar[i]:
            if x > pos:
                for ra, rb in _cuts(pos, x, bar, grid):
                    m.insert(ra - lo, _element([], [], rb - ra))
            el = _element(pitches, spelled, y - x)
            if kind:
                el.tie = tie.Tie(kind)
            m.insert(x - lo, el)
            pos = y
        if pos < hi:
            for ra, rb in _cuts(pos, hi, bar, grid):
                m.insert(ra - lo, _element([], [], rb - ra))
        if i in opens:
            m.leftBarline = m21bar.Repeat(direction="start")
        if i in closes:
            m.rightBarline = m21bar.Repeat(direction="end")
        part.insert(pos_in_part, m)
        pos_in_part += hi - lo
        measures.append((i, m))
    for n, (i, _m) in enumerate(measures):
        if i in endings:
            number, k = endings[i]
            part.insert(0, spanner.RepeatBracket([mm for _j, mm in measures[n:n + k]], number=number))
    if measures and not isinstance(measures[-1][1].rightBarline, m21bar.Repeat):
        measures[-1][1].rightBarline = m21bar.Barline("final")
    return part


def _tempo_mark(usec: int, ts):
    from music21 import duration, tempo

    bpm = 60_000_000 / usec
    if _compound(ts) and ts[0] > 3:
        return tempo.MetronomeMark(number=round(bpm / 1.5), referent=duration.Duration(1.5))
    return tempo.MetronomeMark(number=round(bpm), referent=duration.Duration(1.0))


def _analyzed_key(events):
    from music21 import note, stream

    s = stream.Stream()
    for on, off, pitches in events:
        for p in pitches:
            s.insert(on, note.Note(midi=p, quarterLength=off - on))
    k = s.analyze("key")
    return k.sharps, k.mode


def load_midi(path, *, grid=DEFAULT_GRID, triplets: bool = True, track: int | None = None,
              all_tracks: bool = False, meter: str | None = None, repeats: bool = True):
    """A MIDI file as a music21 Score that ``write_abc`` turns into hand-written-looking ABC.

    ``grid``: the shortest note, a fraction of a whole note (1/8, 1/16, 1/32).
    ``triplets``: let each beat take the triplet grid when it fits better.
    ``track``: the track to read (numbered as the module doc says), else the
    melody.  ``all_tracks``: one Part per track (voices in the ABC); meter,
    pickup and key are still read from the melody, or from ``track`` when
    given.  ``meter``: e.g. "6/8", overriding the file.  ``repeats``: write a
    section played twice in a row once, between repeat marks (with first and
    second endings where the passes end differently; see ``find_repeats``);
    False writes every bar as played.  Raises InputError
    naming the file, in one line.
    """
    from music21 import metadata, stream

    file = str(path)
    step = parse_grid(grid, file) * 4
    meter_arg = parse_meter(meter, file) if meter is not None else None
    mf = read_midi(path)
    tracks = note_tracks(mf)
    if not tracks:
        raise InputError("the file has no notes (drum tracks aside)", file=file)
    voices = [_voice(t, mf.tpq) for t in tracks]
    if track is not None:
        chosen = [v for v in voices if v.track.index == track]
        if not chosen:
            listing = ", ".join(t.label() for t in tracks)
            raise InputError(f"no track {track} with notes; tracks with notes: {listing}", file=file)
        melody = chosen[0]
    else:
        melody = choose_melody(voices)
    parts = voices if all_tracks else [melody]

    pre = {id(v): _onsets(v, step) for v in {id(v): v for v in parts + [melody]}.values()}  # each once
    t0_pre = min(pre[id(v)].times[0] for v in parts)
    end_pre = max(pre[id(v)].end for v in parts)
    tpq = mf.tpq
    ts0, anchors, phase = _bar_lines(mf, melody, pre[id(melody)], step, meter_arg, triplets, t0_pre)
    bar0 = _bar_length(ts0)
    first_line = phase + math.floor((t0_pre - phase) / bar0) * bar0
    bars = _bars(first_line, ts0, anchors, end_pre + 2 * bar0)
    segs = _segments(bars, step, triplets)

    quantized = []
    for v in parts:
        g = _Grid(segs, step, triplets)
        quantized.append((g, _quantize(v, g)))
    t0 = min(evs[0][0] for _g, evs in quantized)
    end = max(evs[-1][1] for _g, evs in quantized)
    while bars and bars[0].end <= t0:
        bars.pop(0)
    bars = [b for b in bars if b.start < end]

    mel_events = next(evs for v, (_g, evs) in zip(parts, quantized) if v is melody)
    k0 = _first_key(mf, mel_events, t0 + step)
    key_changes = _key_changes(mf, bars, k0, tpq)

    tempo_mark = _tempo_mark(mf.tempos[0][1], bars[0].ts) if mf.tempos else None
    score = stream.Score()
    score.metadata = metadata.Metadata()
    score.metadata.title = mf.title or Path(file).stem
    per_bar = [_bar_pieces(evs, bars, g, spell_events(evs, k0)) for g, evs in quantized]
    plan = _repeat_plan(per_bar, bars, t0, end, key_changes) if repeats else []
    for n, (v, (g, _evs)) in enumerate(zip(parts, quantized)):
        part = _build_part(per_bar[n], bars, g, t0, end, _copy_key(k0), key_changes,
                           tempo_mark if n == 0 else None, plan)
        if v.track.name:
            part.partName = v.track.name
        score.insert(0, part)
    return score


def _bar_lines(mf: MidiFile, melody: _Voice, on: _Onsets, step: Fraction, meter_arg, triplets: bool,
               t0: Fraction) -> tuple[tuple, list, Fraction]:
    """The first meter, the later meter changes (time, meter) and the phase of the first bar lines."""
    if meter_arg is not None:
        ts_events = [(Fraction(0), meter_arg)]
    elif mf.time_sigs:
        ts_events = [(_snap(float(t / mf.tpq), step), (num, den)) for t, num, den in mf.time_sigs]
    else:
        ts_events = [(Fraction(0), detect_meter(on, step))]
    ts0, changes = _meter_changes(ts_events, t0)
    head = _until(on, changes[0][0]) if changes else on
    phase = detect_phase(head, ts0, step)
    if triplets and not _compound(ts0):
        # triplets, where there are any, show where the beats are
        xs = [x for x in _centers(melody, step)[1] if x < float(head.end)]
        gains = triplet_alignment(xs, step)
        best = max(gains, key=lambda o: (gains[o], -o))
        if gains[best] > gains[phase % 1]:
            phase = detect_phase(head, ts0, step, beat=best)
    return ts0, changes, phase


def _first_key(mf: MidiFile, events, until: Fraction):
    """The key at the start: the file's signature (else music21's analysis), mode by the last note."""
    last = min(events[-1][2])
    ks = [k for k in mf.key_sigs if k[0] / mf.tpq <= until] or mf.key_sigs[:1]
    if ks:
        return folk_key(ks[-1][1], "minor" if ks[-1][2] else "major", last)
    sharps, mode = _analyzed_key(events)
    return folk_key(sharps, mode, last)


def _meter_changes(ts_events: list, t0: Fraction) -> tuple[tuple, list]:
    """The meter at the first note, and the later changes of meter (each one a bar line).

    A time signature that repeats the current one is no bar line: music21,
    for one, repeats it wherever a repeat or a new section starts, pickup
    bar included.
    """
    last: dict = {}
    for q, ts in ts_events:
        last[q] = ts                      # several at one time: the last one counts
    times = sorted(last)
    before = [q for q in times if q <= t0]
    first = current = last[before[-1]] if before else last[times[0]]
    changes = []
    for q in times:
        if q > t0 and last[q] != current:
            changes.append((q, last[q]))
            current = last[q]
    return first, changes


def _until(on: _Onsets, limit: Fraction) -> _Onsets:
    """The part of a melody before ``limit`` (all of it when that is too little to judge)."""
    k = sum(1 for t in on.times if t < limit)
    if k < 8:
        return on
    end = max(t + ioi for t, ioi in zip(on.times[:k], on.iois[:k]))
    return _Onsets(on.times[:k], on.iois[:k], on.pitches[:k], min(end, limit))


def _copy_key(k):
    import copy

    return copy.deepcopy(k)


def _key_changes(mf: MidiFile, bars: list[_Bar], k0, tpq) -> dict:
    """Bar index -> Key for key signatures that change after the first bar."""
    out: dict = {}
    current = k0.sharps
    for tick, sharps, minor in mf.key_sigs:
        q = Fraction(tick) / tpq
        idx = next((i for i, b in enumerate(bars) if b.start >= q), None)
        if idx and sharps != current:
            out[idx] = folk_key(sharps, "minor" if minor else "major", None)
            current = sharps
    return out
