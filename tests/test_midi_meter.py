"""Meter and pickup (abcgen.midi.meter): the file's time signatures, the meter argument,
a detected meter, and the phase of the bar lines.

End to end through load_midi on files built with mido, and the detectors
alone on hand-made voices.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from abcgen.abc.reader import parse_abc
from abcgen.abc.writer import write_abc
from abcgen.errors import InputError
from abcgen.midi.io import TPQ, MidiTrack, conductor, notes_track, smf, timesig
from abcgen.midi import load_midi
from abcgen.midi.meter import _onsets, detect_meter, detect_phase, parse_meter
from abcgen.midi.tracks import _Voice
from tests.midi_helpers import JIG, REEL, abcish, events, jig_file, plain, write

STEP = Fraction(1, 4)
JIG2 = "G2 B d2 B c2 A B2 G A2 ^F G2 E D2 E ^F2 D G2 B d2 B c2 e d2 B A2 ^F D2 ^F G3 G3"


def _onsets_of(text, shift=Fraction(0)):
    notes = [(float(on + shift), float(on + shift + d), p, 80) for on, d, p in abcish(text) if p is not None]
    return _onsets(_Voice(MidiTrack(0), notes), STEP)


def test_parse_meter():
    assert parse_meter("6/8", None) == (6, 8)
    for bad in ("six-eight", "6/7", "0/4"):
        with pytest.raises(InputError, match="meter must look like 6/8"):
            parse_meter(bad, "x.mid")


def test_detectors_alone():
    # the jig and the reel without time signatures: 6/8 and 4/4; the jig's
    # one-eighth pickup puts its bar lines half a quarter after the first note
    assert detect_meter(_onsets_of(JIG2 + " " + JIG2), STEP) == (6, 8)
    assert detect_meter(_onsets_of(REEL + " " + REEL), STEP) == (4, 4)
    assert detect_phase(_onsets_of(JIG), (6, 8), STEP) % 3 == Fraction(1, 2)
    assert detect_phase(_onsets_of(JIG, shift=Fraction(1)), (6, 8), STEP) % 3 == Fraction(3, 2)
    assert detect_phase(_onsets_of(REEL), (4, 4), STEP) % 4 == 0              # no pickup


def test_pickup_and_tie_across_the_bar_line(tmp_path):
    path, _ = jig_file(tmp_path)
    abc = write_abc(load_midi(path))
    body = abc.split("K:Gmaj\n")[1]
    assert body.startswith("D|GAB")               # the pickup is a short first bar
    assert "A2B-|B" in body                        # B crosses the bar line: tied


def test_pickup_after_leading_silence(tmp_path):
    # a sequencer puts the pickup at the end of an empty first bar
    notes = [(on + Fraction(5, 2), d, p) for on, d, p in abcish(JIG)]
    path = write(tmp_path, smf([conductor(ts=(6, 8), sharps=1), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert abc.split("K:Gmaj\n")[1].startswith("D|GAB")


def test_meter_change_from_the_file(tmp_path):
    notes = abcish("G A B c d2 d2 e2 d2 B2 G4 z2", unit=Fraction(1))
    extra = [(8 * TPQ, timesig(3, 4))]
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=1, extra=extra), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert abc == ("X:1\nT:tune\nM:4/4\nL:1/4\nQ:1/4=120\nK:Gmaj\n"
                   "G A B c|d2 d2|\nM:3/4\ne2 d-|d B2|\nG3-|G|]\n")


def test_meter_argument_overrides_the_file(tmp_path):
    notes = abcish(JIG)
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=1), notes_track(notes)]))
    assert "M:6/8" in write_abc(load_midi(path, meter="6/8"))
    with pytest.raises(InputError, match="meter"):
        load_midi(path, meter="six-eight")




@pytest.mark.parametrize("text,meter", [(JIG2 + " " + JIG2, "6/8"), (REEL + " " + REEL, "4/4")])
def test_meter_detected_without_a_time_signature(tmp_path, text, meter):
    notes = abcish(text)
    path = write(tmp_path, smf([conductor(ts=None, sharps=None), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert f"M:{meter}\n" in abc
    assert events(parse_abc(abc)) == plain(notes)

