"""Repeats recovered in the MIDI import (abcgen.midi.repeats.find_repeats and load_midi).

A MIDI file plays its repeats out; the import writes a section played twice
in a row once, between ``|:`` and ``:|``, with first and second endings where
the two passes end differently.  Checked three ways: the exact ABC of small
files built with mido (abcgen.midi.io), the repeat finder on bar sequences whose
structure is known, and, for random tunes, the notes of the written ABC with
its repeats played out (by music21 and by abc2midi) against the MIDI notes.
"""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from abcgen.abc.reader import parse_abc
from abcgen.abc.writer import write_abc
from abcgen.midi import Repeat, find_repeats, load_midi
from abcgen.midi.io import conductor, notes_track, smf
from abcgen.roundtrip import abc2midi_available, abc2midi_check, notes_agree
from tests.midi_helpers import abcish, events, plain, write

# A reel in D: an A part (two four-bar halves), a short B part.
A1 = "d2 ^f d A d ^F A d ^f a ^f g e ^f d e ^f g ^f e d B A G B A G ^F D D2"
A2 = "A d ^f d A d ^F A B e g e B e g e ^f a g ^f e d ^c e d2 ^f e d2 z2"
A2_END = "A d ^f d A d ^F A B e g e B e g e ^f a g ^f e d ^c e d2 ^f e d4"   # last bar differs
B1 = "a2 ^f a g e ^c e ^f d ^f a g e ^c e d4"

HEAD = "X:1\nT:Reel\nM:4/4\nL:1/8\nQ:1/4=110\nK:Dmaj\n"
A_WRITTEN = "d2 fd Ad FA|df af ge fd|ef gf ed BA|GB AG FD D2|\nAd fd Ad FA|Be ge Be ge|fa gf ed ce|"
B_WRITTEN = "a2 fa ge ce|fd fa ge ce|d4|]\n"


def reel(tmp_path, text, name="reel.mid"):
    notes = abcish(text)
    return write(tmp_path, smf([conductor(bpm=110, ts=(4, 4), sharps=2, title="Reel"),
                                notes_track(notes)]), name), notes


def played_back(abc: str):
    """The notes of ABC text with its repeats played out (music21), from the first note."""
    return events(parse_abc(abc))


def abc2midi_agrees(abc: str, notes, tmp_path) -> None:
    """abc2midi, which plays repeats itself, plays the notes of the MIDI file.

    Called last in a test: without abc2midi the test skips here, its own
    checks done (and fails in CI, where abc2midi must be installed).
    """
    if not abc2midi_available():
        if os.environ.get("CI"):
            pytest.fail("abc2midi is missing: CI must install Debian's abcmidi")
        pytest.skip("abc2midi is missing (apt-get install abcmidi): the independent player's check not run")
    res = abc2midi_check(abc, str(tmp_path))
    assert res["rc"] == 0 and not res["errors"], res
    t0 = res["notes"][0][0]
    theirs = sorted((on - t0, d, p) for on, d, p in res["notes"])
    assert notes_agree(plain(notes), theirs) == (True, True)


# --------------------------------------------------------------------------
# Exact ABC of hand-built files


def test_part_played_twice_is_written_once_between_repeat_marks(tmp_path):
    path, notes = reel(tmp_path, " ".join([A1, A2, A1, A2, B1]))
    abc = write_abc(load_midi(path))
    assert abc == HEAD + "|:" + A_WRITTEN + "d2 fe d2 z2:|\n" + B_WRITTEN
    assert played_back(abc) == plain(notes)
    abc2midi_agrees(abc, notes, tmp_path)


def test_no_repeats_writes_every_bar_as_played(tmp_path):
    path, notes = reel(tmp_path, " ".join([A1, A2, A1, A2, B1]))
    abc = write_abc(load_midi(path, repeats=False))
    a = A_WRITTEN + "d2 fe d2 z2|\n"
    assert abc == HEAD + a + a + B_WRITTEN
    assert played_back(abc) == plain(notes)


def test_passes_that_end_differently_get_first_and_second_endings(tmp_path):
    path, notes = reel(tmp_path, " ".join([A1, A2, A1, A2_END, B1]))
    abc = write_abc(load_midi(path))
    assert abc == HEAD + "|:" + A_WRITTEN + "1d2 fe d2 z2:|\n" + "[2d2 fe d4|" + B_WRITTEN
    assert played_back(abc) == plain(notes)
    abc2midi_agrees(abc, notes, tmp_path)


JIG_A = "D G A B A G E G A B d2 B c B A B A G A3 A2 D G A B A G E G A B d2 e d B G A2 B"
JIG_B = "g ^f g d B G c B A B G E D E G A G A G3 G3"


def test_pickup_stays_outside_and_the_first_ending_leads_back(tmp_path):
    # The pickup D starts the tune; the first pass ends G3 G2 D (the pickup again),
    # the second G3 G2 d, the pickup of the B part: A|:...|1 ... A:|2 ...|
    text = f"{JIG_A} G3 G2 D {JIG_A[2:]} G3 G2 d {JIG_B}"
    notes = abcish(text)
    path = write(tmp_path, smf([conductor(bpm=110, ts=(6, 8), sharps=1, title="Jig"), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert abc == ("X:1\nT:Jig\nM:6/8\nL:1/8\nQ:3/8=73\nK:Gmaj\n"
                   "D|:GAB AGE|GAB d2B|cBA BAG|A3 A2D|\n"
                   "GAB AGE|GAB d2e|dBG A2B|1G3 G2D:|\n"
                   "[2G3 G2d|gfg dBG|cBA BGE|DEG AGA|\n"
                   "G3 G3|]\n")
    assert played_back(abc) == plain(notes)
    abc2midi_agrees(abc, notes, tmp_path)


def test_through_composed_tune_gets_no_repeat(tmp_path):
    path, notes = reel(tmp_path, " ".join([A1, A2, B1]))
    abc = write_abc(load_midi(path))
    assert abc == HEAD + A_WRITTEN + "d2 fe d2 z2|\n" + B_WRITTEN
    assert abc == write_abc(load_midi(path, repeats=False))


def test_voices_repeat_only_where_all_of_them_do(tmp_path):
    bass_bar = "D,4 A,,4"
    melody = abcish(" ".join([A1, A2, A1, A2, B1]))
    same = abcish(" ".join([bass_bar] * 19), unit=Fraction(1, 2))
    other = abcish(" ".join([bass_bar] * 12 + ["G,,4 A,,4"] + [bass_bar] * 6), unit=Fraction(1, 2))
    for bass, repeated in ((same, True), (other, False)):
        path = write(tmp_path, smf([conductor(bpm=110, ts=(4, 4), sharps=2), notes_track(melody, title="Fiddle"),
                                    notes_track(bass, ch=1, title="Bass")]))
        abc = write_abc(load_midi(path, all_tracks=True))
        assert abc.count("|:") == (2 if repeated else 0) and abc.count(":|") == (2 if repeated else 0)
        assert played_back(abc) == sorted(plain(melody) + plain(bass))


def test_a_tie_into_a_section_keeps_the_repeat_mark_off_it(tmp_path):
    # Bars 2-3 come back as bars 4-5, but bar 2 starts with the end of a note
    # held from bar 1: the repeat starts at bar 3 instead, bars 3-4 played twice.
    notes = abcish("G6 A4 B2 c2 d2 e2 d2 c2 A4 B2 c2 d2 e2 d2 c2 A4 B2 c2 d2 G8")
    path = write(tmp_path, smf([conductor(bpm=120, ts=(4, 4), sharps=1), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert abc.endswith("L:1/4\nQ:1/4=120\nK:Gmaj\nG3 A-|A B c d|:e d c A-|A B c d:|\nG4|]\n")
    assert played_back(abc) == plain(notes)
    abc2midi_agrees(abc, notes, tmp_path)


# --------------------------------------------------------------------------
# The repeat finder


def fresh(n, start=0):
    return list(range(start, start + n))


def test_finder_two_parts_each_played_twice():
    a, b = fresh(8), fresh(8, 100)
    assert find_repeats(a + a + b + b) == [Repeat(0, 8, 0), Repeat(16, 8, 0)]


def test_finder_endings_and_a_pickup_bar():
    a, b = fresh(7, 1), fresh(8, 100)
    keys = ["pickup"] + a + ["end 1"] + a + ["end 2"] + b
    assert find_repeats(keys) == [Repeat(1, 8, 1)]
    # more than a quarter of the part differs: no endings, no repeat
    assert find_repeats(a[:5] + ["x", "y", "z"] + a[:5] + ["u", "v", "w"]) == []


def test_finder_prefers_the_usual_part_lengths():
    a, b = fresh(8), fresh(8, 100)
    tune = a + a + b + b
    # the whole tune played twice: two parts of 8 bars, not one section of 32
    assert find_repeats(tune + tune) == [Repeat(0, 8, 0), Repeat(16, 8, 0), Repeat(32, 8, 0), Repeat(48, 8, 0)]
    # a part whose halves are the same four bars: the 8-bar part is the section
    x = fresh(4)
    assert find_repeats(x + x + x + x) == [Repeat(0, 8, 0)]
    # short sections too, where nothing longer fits
    assert find_repeats([1, 2, 1, 2, 3]) == [Repeat(0, 2, 0)]
    assert find_repeats([1, 1, 2, 3]) == []                  # one bar is no section


def test_finder_respects_ties_and_key_changes():
    a = fresh(8)
    assert find_repeats(a + a, cut={0}) == []                # a tie runs into the first bar
    assert find_repeats(["p"] + a + a, cut={1}) == []
    assert find_repeats(a + a, breaks={8}) == []             # the key changes at the second pass
    assert find_repeats(a + a, breaks={0, 16}) == [Repeat(0, 8, 0)]
    # a tie into the first ending rules the endings out
    keys = a[:7] + ["e1"] + a[:7] + ["e2"]
    assert find_repeats(keys) == [Repeat(0, 8, 1)]
    assert find_repeats(keys, cut={7}) == []


def play_plan(keys, plan):
    """The bars a musician plays from the written bars: each section's first pass, then its second."""
    out, i = [], 0
    for r in plan:
        out.extend(keys[i:r.start])
        written = keys[r.start:r.start + r.length]
        second = keys[r.start + 2 * r.length - r.ending:r.start + 2 * r.length]
        out.extend(written + written[:r.length - r.ending] + second)
        i = r.start + 2 * r.length
    return out + keys[i:]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=40), st.data())
def test_finder_plan_plays_back_the_bars(keys, data):
    cut = set(data.draw(st.sets(st.integers(0, 40), max_size=4)))
    plan = find_repeats(keys, cut=cut)
    assert play_plan(keys, plan) == keys
    for r in plan:
        assert r.length >= 2 and r.start not in cut and 0 <= r.ending <= r.length // 4
    assert all(a.start + 2 * a.length <= b.start for a, b in zip(plan, plan[1:]))


# --------------------------------------------------------------------------
# Random tunes with repeats, end to end

PALETTE = [  # bars of 4/4 as (eighths, scale step) pairs
    [(2, 0), (1, 2), (1, 4), (2, 3), (2, 1)],
    [(1, 4), (1, 5), (1, 4), (1, 2), (4, 0)],
    [(3, 1), (1, 2), (2, 3), (2, 4)],
    [(1, 7), (1, 6), (1, 5), (1, 4), (1, 3), (1, 2), (2, 1)],
    [(4, 4), (4, 2)],
    [(2, 5), (2, 3), (3, 1), (1, 0)],
    [(6, 0), (2, -1)],
]
SCALE = [62, 64, 66, 67, 69, 71, 73]


def bar_notes(pattern, shift):
    out, t = [], Fraction(0)
    for eighths, step in pattern:
        p = SCALE[(step + shift) % 7] + 12 * ((step + shift) // 7)
        out.append((t, Fraction(eighths, 2), p))
        t += Fraction(eighths, 2)
    return out


section = st.tuples(st.lists(st.tuples(st.integers(0, len(PALETTE) - 1), st.integers(0, 3)),
                             min_size=2, max_size=6),
                    st.booleans(),                      # played twice
                    st.booleans())                      # the second pass ends differently


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(section, min_size=1, max_size=3))
def test_random_tunes_with_repeats_play_back_the_midi_notes(tmp_path, sections):
    bars = []
    for body, twice, other_end in sections:
        bars += body
        if twice:
            bars += body[:-1] + [((body[-1][0] + 1) % len(PALETTE), body[-1][1])] if other_end else body
    notes, t = [], Fraction(0)
    for pattern, shift in bars:
        notes += [(t + on, d, p) for on, d, p in bar_notes(PALETTE[pattern], shift)]
        t += 4
    path = write(tmp_path, smf([conductor(bpm=120, ts=(4, 4), sharps=2), notes_track(notes)]))
    abc = write_abc(load_midi(path))
    assert played_back(abc) == plain(notes)
    assert abc == write_abc(parse_abc(abc))          # canonical: the writer gives it back unchanged
    abc2midi_agrees(abc, notes, tmp_path)


def test_command_line_no_repeats(tmp_path):
    import subprocess
    import sys

    path, _notes = reel(tmp_path, " ".join([A1, A2, A1, A2, B1]))
    on = subprocess.run([sys.executable, "-m", "abcgen", "convert", str(path)], capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-m", "abcgen", "convert", str(path), "--no-repeats"],
                         capture_output=True, text=True)
    assert on.returncode == off.returncode == 0
    assert on.stdout == write_abc(load_midi(path), title="Reel") and on.stdout.count(":|") == 1
    assert off.stdout == write_abc(load_midi(path, repeats=False), title="Reel") and ":" not in off.stdout[40:]


def test_too_few_plain_bar_lines_for_music21_means_no_repeat(tmp_path):
    # |:x|y:| has one plain bar line: music21 would read it as one bar, once
    two_bars = "d2 ^f d A d ^F A d ^f a ^f g e ^f d"
    path, notes = reel(tmp_path, " ".join([two_bars, two_bars]))
    abc = write_abc(load_midi(path))
    assert ":" not in abc.split("K:")[1]
    assert played_back(abc) == plain(notes)


def test_repeat_after_a_bare_capital_note_reads_back_in_music21(tmp_path):
    # Essen's "Die Rheinbraut" (ballad20 X:67), its two-bar first line sung twice:
    # "...EEz3G::GGc" would be read by music21 as a field G: to the end of the line.
    from abcgen.convert import score_to_midi

    src = parse_abc("X:1\nT:Rheinbraut\nM:6/8\nL:1/8\nK:C\nG|G2AF2G|EEz3|G|G2AF2G|EEz3|G|GGce2d|ccEG2|"
                    "c|B2DF2A|G2CE2|G|GGce2d|ccEG2|c|B2DF2A|G2FE2|]\n")
    path = write(tmp_path, score_to_midi(src), "rheinbraut.mid")
    abc = write_abc(load_midi(path))
    assert abc.endswith("K:Cmaj\nG|:G2A F2G|EEz3G:||:GGc e2d|ccE G2c|\nB2D F2A|1G2C E2G:|2G2F E2|]\n")
    assert played_back(abc) == events(src)
    abc2midi_agrees(abc, events(src), tmp_path)
