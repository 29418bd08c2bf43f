"""tunestats' form figures: exact values on hand-written tunes, and the
independent bar readings (music21's measures, abc2midi)."""

import os
import shutil

import pytest

from abcgen import tunestats as T

GOOD = "M:6/8\nL:1/8\nK:Dmaj\nA|:d2f edB|A3 A2:|\n|:f|a2f d2e|1f3 e2:|2d3 d2|]\n"
BAD = ("M:6/8\nL:1/8\nK:Dmaj\nA|d2f edB|A3 A2|]\nM:5/4\nK:Gmaj\n"
       "B2 c2 d2 e2 f2|1G3 A2 B2 c2 d|\n")


def test_form_figures_exact():
    g = T.form_figures(GOOD)
    assert g == {"meter_change": False, "key_change": False, "final_early": False,
                 "open_first": False, "tonic_end": True, "bar_lines": 8}
    b = T.form_figures(BAD)
    assert b == {"meter_change": True, "key_change": True, "final_early": True,
                 "open_first": True, "tonic_end": False, "bar_lines": 5}
    # the tonic of the key in force; an accidental overrides the signature
    assert T.form_figures("M:2/4\nL:1/8\nK:F#min\nAB c^F|]\n")["tonic_end"]
    assert not T.form_figures("M:2/4\nL:1/8\nK:F#min\nAB c=F|]\n")["tonic_end"]
    assert T.form_figures("M:2/4\nL:1/8\nK:Bbmaj\nAB [Bdf]2|]\n")["tonic_end"]


def test_form_report_and_book_reading():
    book = "X:1\nT:a\n" + GOOD + "\nX:2\nT:b\n% a comment\n" + BAD
    texts = T.model_texts_of_book(book)
    assert texts == [GOOD, BAD]
    r = T.form_report(texts)
    assert r == {"tunes": 2, "meter_change_pct": 50.0, "key_change_pct": 50.0, "final_early_pct": 50.0,
                 "open_first_pct": 50.0, "tonic_end_pct": 50.0, "bar_lines_median": 6.5,
                 "bar_lines_p90": 7.7}


def test_music21_reads_the_bars():
    # pickup, a bar split by the repeat (pairs with the pickup), full bars: none wrong
    assert T.music21_bars("X:1\n" + GOOD) == (5, 0)
    # a bar one unit long in the middle
    assert T.music21_bars("X:1\nM:2/4\nL:1/8\nK:Dmaj\nAB cd|A|AB cd|d4|]\n") == (4, 1)


def test_abc2midi_counts_tunes_with_errors():
    if shutil.which("abc2midi") is None:
        if os.environ.get("CI"):
            pytest.fail("abc2midi is not installed")
        pytest.skip("abc2midi is not installed: the independent check did not run")
    good = "X:1\nT:a\n" + GOOD
    assert T.abc2midi_errors(good) == 0
    assert T.abc2midi_errors(good + "\nX:2\nT:b\nM:2/4\nL:1/8\nK:D\nAB c-d|]\n") == 1


def test_folk_bar_lines_counts_canonical_tunes():
    r = T.folk_bar_lines(max_seconds=0.5)
    assert r["tunes"] >= 1
    assert sum(v for c in r["by_meter"].values() for _, v in c) == r["tunes"]
    assert set(r["shares"]) == {"meter_change", "key_change", "final_early", "open_first", "tonic_end"}
    assert all(0 <= v <= 1 for v in r["shares"].values())
