"""Key and spelling (abcgen.midi.spelling): folk modes from the last note, pitches spelled for the key.

The stage alone on music21 keys and quantized events, and end to end
through load_midi on files built with mido.
"""

from __future__ import annotations

from fractions import Fraction

from music21 import key

from abcgen.abc.writer import write_abc
from abcgen.midi import load_midi
from abcgen.midi.io import conductor, notes_track, smf
from abcgen.midi.spelling import folk_key, spell_events, speller
from tests.midi_helpers import REEL, abcish, write


def test_folk_key_alone():
    # one sharp: G major, or the mode whose tonic is the last note
    assert (folk_key(1, "major", 57).tonic.name, folk_key(1, "major", 57).mode) == ("A", "dorian")
    assert (folk_key(1, "major", 62).tonic.name, folk_key(1, "major", 62).mode) == ("D", "mixolydian")
    assert (folk_key(1, "major", 64).tonic.name, folk_key(1, "major", 64).mode) == ("E", "minor")
    assert (folk_key(1, "major", 61).tonic.name, folk_key(1, "major", 61).mode) == ("G", "major")  # C#: no mode
    assert (folk_key(-1, "minor", None).tonic.name, folk_key(-1, "minor", None).mode) == ("D", "minor")


def test_spell_events_alone():
    f_major = key.Key("F")
    ev = [(0, 1, [65]), (1, 2, [67]), (2, 3, [66]), (3, 4, [67]), (4, 5, [69]), (5, 6, [68]), (6, 7, [67]),
          (7, 8, [60, 64, 68])]
    # chromatic steps the way they move; a chord on a black key keeps the key's spelling
    assert spell_events(ev, f_major) == [[("F", 0)], [("G", 0)], [("F", 1)], [("G", 0)], [("A", 0)],
                                         [("A", -1)], [("G", 0)], [("C", 0), ("E", 0), ("A", -1)]]
    e_minor = key.Key("e", "minor")
    assert spell_events([(0, 1, [63]), (1, 2, [62])], e_minor)[0] == [("D", 1)]   # the leading tone


def test_key_detected_and_mode_from_the_last_note(tmp_path):
    # no key signature: music21's key analysis
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=None), notes_track(abcish(REEL))]))
    assert "K:Dmaj\n" in write_abc(load_midi(path))
    # a one-sharp signature and a tune ending on A: A dorian, as fiddlers write it
    tune = "A B c d e2 d c B G A2 E A B c d2 e ^f g e d B "
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=1), notes_track(abcish(tune + "A4"))]))
    assert "K:Ador\n" in write_abc(load_midi(path))
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=1), notes_track(abcish(tune + "G4"))]))
    assert "K:Gmaj\n" in write_abc(load_midi(path))


def test_spelling_follows_the_key(tmp_path):
    from music21 import key

    assert speller(key.Key("e", "minor"))[3] == ("D", 1)       # D#, not Eb
    assert speller(key.Key("d", "minor"))[1] == ("C", 1)       # C#, the leading tone
    assert speller(key.Key("F"))[10] == ("B", -1)
    notes = abcish("E ^F G A B ^D E2", unit=Fraction(1, 2))
    path = write(tmp_path, smf([conductor(ts=(2, 4), sharps=1, minor=True), notes_track(notes)]))
    assert write_abc(load_midi(path)).endswith("K:Emin\nEF GA|B^D E2|]\n")
    # chromatic steps are spelled the way they move: up with a sharp, down with a flat
    notes = abcish("F G ^F G A _A G F", unit=Fraction(1, 2))
    path = write(tmp_path, smf([conductor(ts=(2, 4), sharps=-1), notes_track(notes)]))
    assert write_abc(load_midi(path)).endswith("K:Fmaj\nFG ^FG|A_A GF|]\n")

