"""MIDI import (abcgen.midi): files built byte by byte here, checked by the ABC they give.

The small Standard MIDI File assembler abcgen.smf writes exactly the bytes
each test needs (running status, note-on with velocity 0, drum channel, meta events),
so every case is self-contained.  The corpus round trip reads files music21's
MIDI writer made (tests/data/midi/roundtrip, see make_roundtrip.py there).
"""

from __future__ import annotations

import json
import random
import warnings
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from abcgen.abc.reader import parse_abc, read_book
from abcgen.abc.writer import write_abc
from abcgen.errors import InputError
from abcgen.midi import load_midi, parse_midi_bytes, speller
from abcgen.notes import note_events
from abcgen.render import played
from abcgen.smf import TPQ, chunk, conductor, keysig, mtrk, notes_track, smf, tempo, timesig

# The bytes of every test file come from abcgen.smf, a small MIDI assembler.


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
# Reading the bytes


def test_running_status_and_note_on_velocity_zero(tmp_path):
    notes = abcish("G A B c d2 B2")
    track = notes_track(notes, running=True, zero_off=True)
    assert track.count(b"\x90") == 1 and b"\x80" not in track     # one status byte for all
    path = write(tmp_path, smf([conductor(), track]))
    mf = parse_midi_bytes(path.read_bytes())
    got = [(n.on, n.off, n.pitch) for n in mf.tracks[1].notes]
    assert got == [(int(on * TPQ), int((on + d) * TPQ), p) for on, d, p in notes]
    assert events(load_midi(path)) == plain(notes)


def test_data_byte_without_a_status_is_corrupt(tmp_path):
    # a data byte first in a track has no status to run on
    bad = chunk(b"MTrk", b"\x00\x3c\x40\x00\xff\x2f\x00")
    path = write(tmp_path, smf([conductor(), bad]))
    with pytest.raises(InputError, match="corrupt"):
        load_midi(path)


def test_format_0_with_tempo_time_and_key_in_the_same_track(tmp_path):
    notes = abcish("A B c d e2 e2 f e d c B2 A2", unit=Fraction(1))
    tr = notes_track(notes)
    meta_ev = tempo(90) + b"\x00" + timesig(3, 4) + b"\x00" + keysig(0, True)
    tr = chunk(b"MTrk", b"\x00" + meta_ev + tr[8:])
    score = load_midi(write(tmp_path, smf([tr], fmt=0)))
    abc = write_abc(score)
    assert "M:3/4\n" in abc and "Q:1/4=90\n" in abc and "K:Amin\n" in abc
    assert events(score) == plain(notes)


def test_format_0_channels_become_tracks(tmp_path):
    melody = abcish("e d c d e e e2", unit=Fraction(1))
    bass = abcish("C, G,, C, G,, C, G,, C,2", unit=Fraction(1))
    both = []                                       # melody on channel 1, bass on channel 2
    for on, d, p in melody:
        both.append((int(on * TPQ), bytes([0x90, p, 80])))
        both.append((int((on + d) * TPQ), bytes([0x80, p, 0])))
    for on, d, p in bass:
        both.append((int(on * TPQ), bytes([0x91, p, 80])))
        both.append((int((on + d) * TPQ), bytes([0x81, p, 0])))
    tr = mtrk([(0, timesig(4, 4))] + both)
    path = write(tmp_path, smf([tr], fmt=0))
    assert events(load_midi(path)) == plain(melody)
    assert events(load_midi(path, track=1)) == plain(bass)
    assert len(load_midi(path, all_tracks=True).parts) == 2


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
# Grid, meter, pickup, ties


def test_notes_30ms_off_the_grid_snap_back(tmp_path):
    notes = abcish(REEL)
    clean_abc = write_abc(load_midi(reel_file(tmp_path)[0]))
    ms30 = round(0.030 * TPQ * 110 / 60)           # 30 ms in ticks at the reel's 110 bpm
    for seed in range(12):
        rng = random.Random(seed)
        path = write(tmp_path, smf([conductor(bpm=110, ts=(4, 4), sharps=2),
                                    notes_track(notes, jitter=lambda: rng.randint(-ms30, ms30))]),
                     "reel.mid")
        score = load_midi(path)
        assert events(score) == plain(notes), seed
        assert write_abc(score) == clean_abc, seed


def test_jittered_jig_at_120_bpm(tmp_path):
    notes = abcish(JIG)
    ms30 = round(0.030 * TPQ * 2)                  # 30 ms in ticks at 120 quarters a minute
    for seed in range(8):
        rng = random.Random(100 + seed)
        path = write(tmp_path, smf([conductor(bpm=120, ts=(6, 8), sharps=1),
                                    notes_track(notes, jitter=lambda: rng.randint(-ms30, ms30))]))
        assert events(load_midi(path)) == plain(notes), seed


def test_worst_case_jitter_stays_straight(tmp_path):
    # sixteenth, eighth, sixteenth in every beat, both short notes pushed 30 ms
    # toward the triplet points (1/3, 2/3): still read straight at 120 bpm
    push = Fraction(round(0.030 * TPQ * 2), TPQ)
    clean, played = [], []
    for beat in range(8):
        b = Fraction(beat)
        for on, length, p, shift in ((b, Fraction(1, 4), 67, 0), (b + Fraction(1, 4), Fraction(1, 2), 69, push),
                                     (b + Fraction(3, 4), Fraction(1, 4), 71, -push)):
            clean.append((on, length, p))
            played.append((on + shift, length - shift, p))
    path = write(tmp_path, smf([conductor(ts=(2, 4)), notes_track(played)]))
    assert events(load_midi(path)) == plain(clean)


LENGTHS = [Fraction(x, 4) for x in (1, 2, 2, 2, 3, 4, 6, 8)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(LENGTHS), st.integers(55, 84), st.booleans()), min_size=4,
                max_size=40),
       st.sampled_from([(2, 4), (3, 4), (4, 4), (6, 8)]), st.integers(0, 10_000))
def test_any_straight_melody_comes_back_even_when_played(tmp_path, tune, ts, seed):
    """Random rhythms on the 1/16 grid (some rests), each note then moved by up to 25 ms at 120 bpm."""
    notes, t = [], Fraction(0)
    for length, pitch, rest in tune:
        notes.append((t, length, None if rest and notes else pitch))
        t += length
    rng = random.Random(seed)
    ms25 = round(0.025 * TPQ * 2)
    path = write(tmp_path, smf([conductor(ts=ts), notes_track(notes, jitter=lambda: rng.randint(-ms25, ms25))]))
    score = load_midi(path)
    assert events(score) == plain(notes)
    assert events(parse_abc(write_abc(score))) == plain(notes)


def test_triplet_passage(tmp_path):
    third = Fraction(1, 3)
    notes = abcish("A B ^c d")
    t = Fraction(2)
    for p in (74, 76, 78, 79, 78, 76):           # two triplets of eighths
        notes.append((t, third, p))
        t += third
    notes += [(t, Fraction(1), 69), (t + 1, Fraction(1), 74)]
    path = write(tmp_path, smf([conductor(ts=(4, 4), sharps=2), notes_track(notes)]))
    score = load_midi(path)
    assert events(score) == plain(notes)
    assert write_abc(score).endswith("K:Dmaj\nAB cd (3def (3gfe|A2 d2|]\n")
    # without triplets the same notes land on sixteenths
    straight = load_midi(path, triplets=False)
    assert "(3" not in write_abc(straight)
    assert all(on % Fraction(1, 4) == 0 for on, _d, _p in events(straight))


def test_slightly_uneven_triplets_stay_triplets(tmp_path):
    third = Fraction(1, 3)
    notes = [(k * third, third, 67 + 2 * (k % 3)) for k in range(12)] + [(Fraction(4), Fraction(2), 67)]
    ms8 = round(0.008 * TPQ * 2)
    rng = random.Random(5)
    path = write(tmp_path, smf([conductor(ts=(2, 4)),
                                notes_track(notes, jitter=lambda: rng.randint(-ms8, ms8))]))
    assert events(load_midi(path)) == plain(notes)


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


JIG2 = "G2 B d2 B c2 A B2 G A2 ^F G2 E D2 E ^F2 D G2 B d2 B c2 e d2 B A2 ^F D2 ^F G3 G3"


@pytest.mark.parametrize("text,meter", [(JIG2 + " " + JIG2, "6/8"), (REEL + " " + REEL, "4/4")])
def test_meter_detected_without_a_time_signature(tmp_path, text, meter):
    notes = abcish(text)
    path = write(tmp_path, smf([conductor(ts=None, sharps=None), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert f"M:{meter}\n" in abc
    assert events(parse_abc(abc)) == plain(notes)


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


def test_chords_and_overlaps(tmp_path):
    notes = [(Fraction(0), Fraction(1), 60), (Fraction(0), Fraction(1), 64), (Fraction(0), Fraction(1), 67),
             (Fraction(1), Fraction(3, 2), 62),                      # held into the next note: cut
             (Fraction(2), Fraction(2), 65), (Fraction(2), Fraction(2), 69)]
    path = write(tmp_path, smf([conductor(ts=(4, 4)), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert "[CEG] D" in abc and "[FA]2|]" in abc
    assert events(parse_abc(abc)) == [(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 1, 62), (2, 2, 65), (2, 2, 69)]


@pytest.mark.parametrize("grid,expected", [("1/8", Fraction(1, 2)), ("1/32", Fraction(1, 8))])
def test_grid_option(tmp_path, grid, expected):
    notes = [(Fraction(0), Fraction(1, 8), 60), (Fraction(1, 8), Fraction(7, 8), 62),
             (Fraction(1), Fraction(1), 64), (Fraction(2), Fraction(2), 65)]
    path = write(tmp_path, smf([conductor(ts=(4, 4)), notes_track(notes)]))
    got = events(load_midi(path, grid=grid))
    assert all(on % expected == 0 and d % expected == 0 for on, d, _p in got)
    if grid == "1/32":
        assert got == plain(notes)
    with pytest.raises(InputError, match="grid"):
        load_midi(path, grid="1/12")


# --------------------------------------------------------------------------
# Bad files


def _good(tmp_path) -> bytes:
    return jig_file(tmp_path)[0].read_bytes()


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "truncated header", "corrupt",
                                  "missing track", "no notes", "missing file"])
def test_bad_files_raise_one_line_input_error(tmp_path, case):
    good = _good(tmp_path)
    data = {
        "empty": b"",
        "text": b"X:1\nT:not midi\nK:G\nGAB|\n",
        "truncated": good[:len(good) - 40],
        "truncated header": good[:10],
        "corrupt": smf([conductor(), chunk(b"MTrk", b"\x00\x90\x3c\x90\x00\xff\x2f\x00")]),
        "missing track": good[:10] + b"\x00\x03" + good[12:],
        "no notes": smf([conductor(), notes_track(abcish("G A B c"), ch=9)]),
    }.get(case)
    path = tmp_path / "bad.mid"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(InputError) as e:
        load_midi(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert e.value.exit_code == 2


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
