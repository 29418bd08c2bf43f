"""Whole-file transcription (abcgen.midi.transcribe.load_midi): files built with mido, checked by the ABC they give.

The corpus round trip reads files music21's MIDI writer made
(tests/data/midi/roundtrip, see make_roundtrip.py there).
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import pytest

from abcgen.abc.reader import parse_abc, read_book
from abcgen.abc.writer import write_abc
from abcgen.errors import InputError
from abcgen.midi import load_midi
from abcgen.midi.io import TPQ, conductor, notes_track, smf, tempo
from tests.midi_helpers import REEL, REEL_ABC, JIG_ABC, abcish, events, jig_file, plain, reel_file, write


def test_jig_exact_abc(tmp_path):
    path, notes = jig_file(tmp_path)
    assert write_abc(load_midi(path)) == JIG_ABC


def test_reel_exact_abc(tmp_path):
    path, notes = reel_file(tmp_path)
    assert write_abc(load_midi(path)) == REEL_ABC


def test_abc_reads_back_to_the_same_notes(tmp_path):
    path, notes = jig_file(tmp_path)
    score = load_midi(path)
    assert events(parse_abc(write_abc(score))) == events(score) == plain(notes)


# --------------------------------------------------------------------------
# Tracks


def test_melody_is_chosen_and_drums_are_skipped(tmp_path):
    melody = abcish("G A B G A B c A B c d B c2 B2", unit=Fraction(1, 2))
    bass = abcish("G,,2 D,2 G,,2 D,2", unit=Fraction(1))
    drums = [(Fraction(k, 4), Fraction(1, 4), 81) for k in range(32)]   # high "pitch", many notes
    tracks = [conductor(), notes_track(bass, ch=1, title="Bass"),
              notes_track(melody, ch=0, title="Fiddle"), notes_track(drums, ch=9, title="Drums")]
    path = write(tmp_path, smf(tracks))
    score = load_midi(path)
    assert len(score.parts) == 1
    assert events(score) == plain(melody)
    assert events(load_midi(path, track=1)) == plain(bass)
    both = load_midi(path, all_tracks=True)
    assert [p.partName for p in both.parts] == ["Bass", "Fiddle"]
    abc = write_abc(both)
    assert "V:1\n" in abc and "V:2\n" in abc
    assert events(parse_abc(abc)) == sorted(plain(melody) + plain(bass))


def test_a_missing_track_lists_the_tracks(tmp_path):
    melody = abcish("G A B c")
    path = write(tmp_path, smf([conductor(), notes_track(melody, title="Fiddle"),
                                notes_track(melody, ch=9)]))
    with pytest.raises(InputError) as e:
        load_midi(path, track=0)
    msg = str(e.value)
    assert str(path) in msg and "1 (Fiddle, 4 notes)" in msg and "\n" not in msg
    with pytest.raises(InputError):
        load_midi(path, track=2)          # drums only


def test_title_from_sequence_name_else_file_name(tmp_path):
    path, _ = jig_file(tmp_path)
    assert load_midi(path).metadata.title == "The Test Jig"
    path = write(tmp_path, smf([conductor(), notes_track(abcish("G A B c"))]), "my_tune.mid")
    assert load_midi(path).metadata.title == "my_tune"


# --------------------------------------------------------------------------
# Round trip through music21's MIDI writer

ROUNDTRIP = Path(__file__).parent / "data" / "midi" / "roundtrip"
RYANS = Path(__import__("music21").__file__).parent / "corpus" / "ryansMammoth"


def test_round_trip_of_twenty_tunes():
    """Tunes of Ryan's Mammoth written to MIDI by music21 come back note for note.

    The .mid files and their source notes (repeats expanded, as music21
    plays them) were made by tests/data/midi/make_roundtrip.py from tunes
    whose notes lie on the 1/16-or-triplet grid.
    """
    expected = json.loads((ROUNDTRIP / "expected.json").read_text())
    assert len(expected) == 20
    misses = []
    for name, want in expected.items():
        want = [(Fraction(on), Fraction(d), p) for on, d, p in want]
        if events(load_midi(ROUNDTRIP / name)) != want:
            misses.append(name)
    assert not misses


@pytest.mark.skipif(not RYANS.is_dir(), reason="music21 corpus not installed")
def test_round_trip_live(tmp_path):
    """The same pipeline end to end with the installed music21: ABC -> MIDI -> Score -> ABC."""
    from abcgen.abc.reader import parse_tune

    for stem in ("LarkInTheMorningJig", "BostonBoysReel"):
        f = RYANS / f"{stem}.abc"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = parse_tune(read_book(f)[0])
            mid = tmp_path / f"{stem}.mid"
            src.write("midi", fp=str(mid))
            want = events(src.expandRepeats())
        score = load_midi(mid)
        assert events(score) == want
        assert events(parse_abc(write_abc(score))) == want


def test_tempo_change_keeps_the_first_tempo_and_the_notes(tmp_path):
    # a player slows down at bar 3: Q: is the first tempo, ticks still count the notes
    notes = abcish(REEL)
    path = write(tmp_path, smf([conductor(bpm=110, ts=(4, 4), sharps=2, extra=[(8 * TPQ, tempo(90))]),
                                notes_track(notes)]), "reel.mid")
    score = load_midi(path)
    assert write_abc(score) == REEL_ABC
    assert events(score) == plain(notes)
