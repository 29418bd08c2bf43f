"""The canonical text checked against an independent ABC reader: abc2midi."""

import shutil
from fractions import Fraction

import pytest

from abcgen.abc.reader import parse_abc, split_book
from abcgen.abc.writer import write_abc
from abcgen.sounding import note_events
from abcgen.roundtrip import check_tune, notes_agree, strip_repeats, summarize

from .test_writer import CASES

needs_abc2midi = pytest.mark.skipif(shutil.which("abc2midi") is None,
                                    reason="abc2midi (Debian package abcmidi) not installed")


def test_strip_repeats():
    abc = "X:1\nM:6/8\nL:1/8\nK:Dmaj\n|:A3 B3|1f3 e3:|2f3 d3::\nabc def|\n[1g6:|\n[2a6|]\n"
    assert strip_repeats(abc) == ("X:1\nM:6/8\nL:1/8\nK:Dmaj\n|A3 B3|f3 e3|f3 d3|\nabc def|\n"
                                  "g6|\na6|]\n")


def test_notes_agree_tolerates_ticks_not_notes():
    ours = [(Fraction(0), Fraction(1), 60), (Fraction(0), Fraction(1), 64), (Fraction(1), Fraction(1), 62)]
    tick = Fraction(1, 480)
    theirs = [(tick, 1 - 2 * tick, 60), (11 * tick, 1 - 12 * tick, 64), (1 + tick, 1 - 2 * tick, 62)]
    assert notes_agree(ours, theirs) == (True, True)
    wrong = theirs[:2] + [(1 + tick, 1 - 2 * tick, 63)]
    assert notes_agree(ours, wrong) == (False, False)
    assert notes_agree(ours, theirs[:2]) == (False, False)


@needs_abc2midi
@pytest.mark.parametrize("name", sorted(CASES))
def test_abc2midi_reads_the_same_notes_as_music21(name, tmp_path):
    src, _ = CASES[name]
    (tune,) = split_book(src, file=f"{name}.abc")
    r = check_tune(tune, use_abc2midi=True, workdir=str(tmp_path))
    assert r["status"] == "exact"
    assert r["abc2midi_accepted"], r["abc2midi_errors"]
    assert r["abc2midi_pitch_match"] and r["abc2midi_duration_match"]


@needs_abc2midi
def test_accidental_rule_matches_abc2midi(tmp_path):
    # ^c then c in one bar: C sharp in every octave to the end of the bar, as abc2midi
    # plays it; the canonical text writes every accidental out.
    (tune,) = split_book("X:1\nM:4/4\nL:1/4\nK:C\n^c c ^C c|^c4|c4|]\n")
    r = check_tune(tune, use_abc2midi=True, workdir=str(tmp_path))
    assert r["status"] == "exact" and r["abc2midi_pitch_match"]
    assert "^c ^c ^C ^c|^c4|c4|]" in write_abc(parse_abc(tune.text))


def test_summary_counts_categories():
    rs = [{"where": "a", "status": "exact", "notes": 10, "notes_equal": 10},
          {"where": "b", "status": "pitch differs", "notes": 10, "notes_equal": 7},
          {"where": "c", "status": "source does not parse", "reason": "x"}]
    s = summarize(rs, "t", use_abc2midi=False)["summary"]
    assert (s["tunes"], s["source_parsed"], s["exact"]) == (3, 2, 1)
    assert s["exact_pct"] == 50.0 and s["notes_exact_pct"] == 85.0
    assert s["mismatch"] == {"pitch differs": 1}


# --- canonical -> read -> canonical over corpus tunes --------------------------------

def test_canonical_is_stable_on_corpus_tunes():
    """write(read(write(read(src)))) == write(read(src)), byte for byte, on 200 folk tunes."""
    from abcgen.errors import AbcgenError
    from abcgen.midi_check import sample_tunes

    _name, tunes, _n = sample_tunes("folk", 200)
    done = 0
    for t in tunes:
        try:
            canon = write_abc(parse_abc(t.text, rebar=True), title=t.title)
        except AbcgenError:
            continue    # kept out of the corpus (bars that cannot fit the meter)
        assert write_abc(parse_abc(canon, rebar=True), title=t.title) == canon, t.source
        assert "\nM:" not in canon.split("\nK:", 1)[1] or "M:" in t.text.split("\nK:", 1)[1], t.source
        done += 1
    assert done >= 180


# --- check played ----------------------------------------------------------------------

def test_strip_unplayed():
    from abcgen.played import strip_unplayed

    src = 'X:1\nT:"quoted" title\nR:hornpipe\nK:G\n"Am"A !trill!B {g}c ~d .e [K:D] Tf|\n'
    assert strip_unplayed(src) == 'X:1\nT:"quoted" title\nK:G\nA B c d e [K:D] f|\n'


@needs_abc2midi
def test_check_played_on_a_fixture(tmp_path):
    from abcgen.played import check_tune as played_check

    (tune,) = split_book("X:1\nM:4/4\nL:1/8\nK:G\n|:^G2 G2 =f2 f2|1 G8:|2 A8|]\n")
    assert played_check(tune, str(tmp_path))["status"] == "identical"
    # music21's reader does not carry the accidentals: its reading plays other pitches
    r = played_check(tune, str(tmp_path), reader="music21")
    assert r["status"] == "our reading played out: pitch differs"


@needs_abc2midi
def test_check_played_command_on_a_book(tmp_path):
    import json

    from typer.testing import CliRunner

    from abcgen.cli import app

    book = tmp_path / "book.abc"
    book.write_text("X:1\nM:4/4\nL:1/8\nK:G\n|:^G2 G2 =f2 f2|1 G8:|2 A8|]\n\n"
                    "X:2\nM:6/8\nL:1/8\nK:D\n\"D\"A|d2e {g}f2d|e2f g3:|\n")
    r = CliRunner().invoke(app, ["check", "played", str(book), "--json", "-j", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output.strip().splitlines()[-1])
    assert (s["tunes"], s["checked"], s["identical"], s["identical_pct"]) == (2, 2, 2, 100.0)
    r = CliRunner().invoke(app, ["check", "played", str(book), "--reader", "music21", "--json", "-j", "1"])
    s = json.loads(r.output.strip().splitlines()[-1])
    assert s["identical"] == 1 and s["differences"] == {"our reading played out: pitch differs": 1}
    assert "pitch differs" in r.output and "book.abc:1 X:1" in r.output
