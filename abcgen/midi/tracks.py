"""Tracks of a MIDI file: the ones with notes, in quarter notes, and the melody among them.

Tracks.  A "track" is an MTrk chunk with (non-drum) notes, numbered by its
0-based index in the file, so ``track=0`` is the first chunk of the file
(often a conductor track without notes; the error lists the tracks that do
have notes).  A format-0 file whose one chunk holds several channels is split
by channel first, and those pseudo-tracks are numbered 0, 1, ... in channel
order.  The melody, chosen when ``track`` is not given: among tracks with at
least a quarter as many notes as the largest one, prefer the mostly
monophonic ones (at most 20% of onsets carry a chord or overlap a sounding
note), then the highest mean pitch.  ``all_tracks=True`` gives one Part per
track instead, in file order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .io import DRUM_CHANNEL, MidiFile, MidiTrack

MONOPHONIC_MAX = 0.2      # share of chord/overlap onsets a melody track may have


def note_tracks(mf: MidiFile) -> list[MidiTrack]:
    """The tracks with non-drum notes, numbered as the module doc says."""
    out = []
    for tr in mf.tracks:
        notes = [n for n in tr.notes if n.channel != DRUM_CHANNEL]
        if notes:
            out.append(MidiTrack(tr.index, tr.name, notes))
    if mf.format == 0 and len(out) == 1:
        channels = sorted({n.channel for n in out[0].notes})
        if len(channels) > 1:
            base = out[0]
            out = [MidiTrack(i, base.name, [n for n in base.notes if n.channel == ch], channel=ch)
                   for i, ch in enumerate(channels)]
    return out



@dataclass
class _Voice:
    """One track's notes in quarter notes (floats), as read."""

    track: MidiTrack
    notes: list                   # (on, off, pitch, velocity), sorted


def _voice(tr: MidiTrack, tpq: Fraction) -> _Voice:
    q = float(tpq)
    notes = sorted((n.on / q, max(n.off, n.on + 1) / q, n.pitch, n.velocity) for n in tr.notes)
    return _Voice(tr, notes)


def polyphony(notes, tol: float = 0.1) -> float:
    """Share of onsets (notes within ``tol`` quarters are one onset) that hold a chord or overlap a sounding note."""
    groups = poly = 0
    start, latest_off, flagged = None, -math.inf, False
    for on, off, _p, _v in notes:
        if start is not None and on - start <= tol:
            if not flagged:
                poly += 1
                flagged = True
        else:
            groups += 1
            start = on
            flagged = on < latest_off - tol
            poly += flagged
        latest_off = max(latest_off, off)
    return poly / groups if groups else 0.0


def choose_melody(voices: list[_Voice]) -> _Voice:
    """The melody track by the rule in the module doc."""
    most = max(len(v.notes) for v in voices)
    enough = [v for v in voices if len(v.notes) * 4 >= most]
    mono = [v for v in enough if polyphony(v.notes) <= MONOPHONIC_MAX]
    pool = mono or enough
    return max(pool, key=lambda v: (sum(n[2] for n in v.notes) / len(v.notes), len(v.notes), -v.track.index))

