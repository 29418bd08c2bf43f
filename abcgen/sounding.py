"""The music as heard: played order, sounding notes, comparisons of two readings.

``played`` writes repeats and endings out (what render's MIDI, the checks and the piano
roll play).  ``sounding_events`` lists every sounding pitch; ``note_events`` and
``compare_events`` compare two readings of the same music.

A note event is (part, onset, duration, MIDI pitch) with ties merged and grace
notes and chord symbols left aside: what a listener hears, not how it is spelled.
Ties are merged by sound, as a player (or abc2midi) does: a note marked as
tied joins the next note of the same pitch that starts where it ends; a tie
to a different pitch, or to nothing, joins nothing.  (music21's stripTies
compares spellings, so ``=c-|c`` would not merge there.)
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Callable, Optional

from .abc.reader import sounding_notes_iter
from .abc.writer import frac

Log = Optional[Callable[[str], None]]

_TIED = ("start", "continue")


def _tied(el, n=None) -> bool:
    if el.tie is not None and el.tie.type in _TIED:
        return True
    return n is not None and n.tie is not None and n.tie.type in _TIED


def part_events(part) -> list[tuple[Fraction, Fraction, int]]:
    """(onset, duration, MIDI pitch) of one part, ties merged by sound."""
    flat = part.flatten()
    raw = []
    for el in sounding_notes_iter(flat):
        on = frac(el.getOffsetBySite(flat))
        d = frac(el.duration.quarterLength)
        if el.isChord:
            for n in el.notes:
                raw.append((on, d, int(round(n.pitch.ps)), _tied(el, n)))
        else:
            raw.append((on, d, int(round(el.pitch.ps)), _tied(el)))
    raw.sort(key=lambda e: (e[0], e[2]))
    out: list[list] = []
    waiting: dict = {}  # (pitch, time it ends) -> index in out
    for on, d, p, tied in raw:
        i = waiting.pop((p, on), None)
        if i is not None:
            out[i][1] += d
        else:
            i = len(out)
            out.append([on, d, p])
        if tied:
            waiting[(p, out[i][0] + out[i][1])] = i
    return sorted((on, d, p) for on, d, p in out)


def note_events(score) -> list[tuple[int, Fraction, Fraction, int]]:
    from music21 import stream as m21stream

    parts = list(score.parts) if isinstance(score, m21stream.Score) and score.parts else [score]
    out = []
    for pi, part in enumerate(parts):
        out.extend((pi, on, d, p) for on, d, p in part_events(part))
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


def played(score, log: Log = None):
    """The score as heard: repeats and endings written out, ties joined.

    music21's expander rejects some unbalanced repeat marks that players read
    fine; then the written order is played, with a warning.
    """
    if not any(True for _ in score.recurse().getElementsByClass(
            ("Repeat", "RepeatBracket", "RepeatExpression"))):
        return score   # nothing to expand; music21 also refuses tunes parsed without bars
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return score.expandRepeats()
    except Exception as e:  # music21's expander raises several unrelated types
        if log:
            log(f"abcgen: warning: repeats not expanded ({type(e).__name__}: {e}); "
                "playing the tune as written")
        return score


def sounding_events(stream) -> list[tuple[int, Fraction, Fraction]]:
    """(MIDI pitch, onset, duration) in quarter notes for every sounding pitch; chords give one per note."""
    flat = stream.flatten()
    out = []
    for n in sounding_notes_iter(flat):
        onset = Fraction(n.offset).limit_denominator(10080)
        dur = Fraction(n.quarterLength).limit_denominator(10080)
        for p in n.pitches:
            out.append((p.midi, onset, dur))
    out.sort()
    return out
