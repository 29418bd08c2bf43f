"""Sounding notes of a Stream, for comparing two readings of the same music.

A note event is (part, onset, duration, MIDI pitch) with ties merged and grace
notes and chord symbols left aside: what a listener hears, not how it is spelled.
"""

from __future__ import annotations

from fractions import Fraction

from .abc.reader import sounding_notes_iter
from .abc.writer import frac


def note_events(score) -> list[tuple[int, Fraction, Fraction, int]]:
    from music21 import stream as m21stream

    parts = list(score.parts) if isinstance(score, m21stream.Score) and score.parts else [score]
    out = []
    for pi, part in enumerate(parts):
        flat = part.flatten()
        try:
            # Not matchByPitch: music21 tells a written natural from no accidental
            # there, and the canonical text writes "=c3-|c" where the source had none.
            flat = flat.stripTies(matchByPitch=False)
        except Exception:  # music21 fails on some malformed tie chains; compare untied
            pass
        for n in sounding_notes_iter(flat):
            on = frac(n.getOffsetBySite(flat))
            d = frac(n.duration.quarterLength)
            for p in n.pitches:
                out.append((pi, on, d, int(round(p.ps))))
    out.sort()
    return out


def compare_events(a: list, b: list) -> str | None:
    """None when equal, else the first kind of difference: a short category name."""
    if a == b:
        return None
    if len(a) != len(b):
        return "note count differs"
    for x, y in zip(a, b):
        if x != y:
            if x[0] != y[0]:
                return "part differs"
            if x[1] != y[1]:
                return "onset differs"
            if x[3] != y[3]:
                return "pitch differs"
            return "duration differs"
    return "order differs"
