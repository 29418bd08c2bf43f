"""MIDI quantizing (abcgen.midi.quantize): the grid, triplets, chords and played timing.

End to end through load_midi on files built with mido, and the grid stage
alone on hand-made voices.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from abcgen.abc.reader import parse_abc
from abcgen.abc.writer import write_abc
from abcgen.errors import InputError
from abcgen.midi import load_midi
from abcgen.midi.io import TPQ, MidiTrack, conductor, notes_track, smf
from abcgen.midi.meter import _bar_length
from abcgen.midi.quantize import _bars, _Grid, _quantize, _segments, parse_grid
from abcgen.midi.tracks import _Voice
from tests.midi_helpers import JIG, REEL, abcish, events, plain, reel_file, write


def _voice(notes):
    """A voice of (on, off, pitch) given in quarter notes, velocity 80."""
    return _Voice(MidiTrack(0), sorted((on, off, p, 80) for on, off, p in notes))


def _grid(ts=(2, 4), bars=2, step=Fraction(1, 4), triplets=True):
    bs = _bars(Fraction(0), ts, [], bars * _bar_length(ts))
    return _Grid(_segments(bs, step, triplets), step, triplets)


def test_quantize_alone_snaps_to_sixteenths_and_cuts_overlaps():
    # 0.03 quarters off the grid, a note held into the next onset, a two-note chord
    v = _voice([(0.03, 0.52, 60), (0.49, 1.3, 62), (1.02, 2.0, 64), (1.0, 1.98, 67)])
    assert _quantize(v, _grid()) == [(Fraction(0), Fraction(1, 2), [60]), (Fraction(1, 2), Fraction(1), [62]),
                                      (Fraction(1), Fraction(2), [64, 67])]


def test_quantize_alone_takes_the_triplet_grid_beat_by_beat():
    third = 1 / 3
    v = _voice([(0.0, third, 60), (third, 2 * third, 62), (2 * third, 1.0, 64), (1.0, 1.5, 65), (1.5, 2.0, 67)])
    got = _quantize(v, _grid())
    assert [(on, end) for on, end, _p in got] == [(0, Fraction(1, 3)), (Fraction(1, 3), Fraction(2, 3)),
                                                  (Fraction(2, 3), 1), (1, Fraction(3, 2)), (Fraction(3, 2), 2)]
    straight = _quantize(v, _grid(triplets=False))
    assert [on for on, _e, _p in straight] == [0, Fraction(1, 4), Fraction(3, 4), 1, Fraction(3, 2)]


def test_parse_grid():
    assert parse_grid("1/16", None) == Fraction(1, 16)
    with pytest.raises(InputError, match="grid must be one of"):
        parse_grid("1/12", "x.mid")


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
