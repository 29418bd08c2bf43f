"""Shared fixtures of the MIDI import tests (tests/test_midi_*.py).

Every test file is built with mido through abcgen.midi.io (``conductor``,
``notes_track``, ``smf``): notes given as ABC-like text, tracks and meta
events given explicitly, so every case is self-contained.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from abcgen.midi.io import conductor, notes_track, smf
from abcgen.sounding import note_events
from abcgen.render import played

_STEP = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def abcish(text: str, unit=Fraction(1, 2)):
    """'D G2 A/ z ^c' -> [(onset, length, midi or None)] in quarter notes; letters as in ABC."""
    out, t = [], Fraction(0)
    for tok in text.split():
        acc = tok.count("^") - tok.count("_")
        tok = tok.replace("^", "").replace("_", "")
        letter = tok[0]
        rest = tok[1:]
        octave = 0
        while rest[:1] in (",", "'"):
            octave += 1 if rest[0] == "'" else -1
            rest = rest[1:]
        length = unit * (Fraction(rest.replace("/", "1/2") if rest == "/" else rest) if rest else 1)
        if letter == "z":
            midi = None
        else:
            midi = 60 + _STEP[letter.upper()] + acc + 12 * octave + (12 if letter.islower() else 0)
        out.append((t, length, midi))
        t += length
    return out


def write(tmp_path, data: bytes, fname="tune.mid") -> Path:
    p = tmp_path / fname
    p.write_bytes(data)
    return p


def events(score):
    """(onset, length, midi) of the sounding notes, repeats played out, from the first note, parts merged."""
    ev = [(on, d, p) for _part, on, d, p in note_events(played(score))]
    t0 = min(e[0] for e in ev)
    return sorted((on - t0, d, p) for on, d, p in ev)


def plain(notes):
    return sorted((on, d, p) for on, d, p in notes if p is not None)


# --------------------------------------------------------------------------
# Fixtures: a jig and a reel as a folk musician writes them

JIG = "D G A B A G E G A B d2 B c B A B A G A3 A2 D G A B A G E G A B d2 e d B G A2 B2 G2 G2"
JIG_ABC = """X:1
T:The Test Jig
M:6/8
L:1/8
Q:3/8=120
K:Gmaj
D|GAB AGE|GAB d2B|cBA BAG|A3 A2D|
GAB AGE|GAB d2e|dBG A2B-|BG2 G2|]
"""

REEL = "d2 ^f d A d ^F A d ^f a ^f g e ^f d e/ ^f/ g ^f e d B A ^F G B A G ^F D D2"
REEL_ABC = """X:1
T:reel
M:4/4
L:1/8
Q:1/4=110
K:Dmaj
d2 fd Ad FA|df af ge fd|e/2f/2g fe dB AF|GB AG FD D2|]
"""


def jig_file(tmp_path, **kw):
    notes = abcish(JIG)
    return write(tmp_path, smf([conductor(bpm=180, ts=(6, 8), sharps=1, title="The Test Jig"),
                                notes_track(notes, **kw)]), "jig.mid"), notes


def reel_file(tmp_path, **kw):
    notes = abcish(REEL)
    return write(tmp_path, smf([conductor(bpm=110, ts=(4, 4), sharps=2),
                                notes_track(notes, **kw)]), "reel.mid"), notes
