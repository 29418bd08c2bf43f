"""abcgen's ABC reader, rule by rule: tiny tunes with their exact notes, checked against abc2midi.

Each fixture gives the notes the tune plays (repeats played out) as
(onset, length) in quarter notes and MIDI pitch, or just the pitches.  Where
abc2midi (Debian abcmidi) is installed, it must play the same notes from the
same text: the reader reads ABC the way abc2midi plays it.
"""

import os
import shutil
import tempfile
from fractions import Fraction as F

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from abcgen.abc.parse import _expand_order, parse_key, read_tune
from abcgen.abc.reader import parse_abc
from abcgen.abc.writer import write_abc
from abcgen.errors import AbcParseError
from abcgen.sounding import note_events
from abcgen.sounding import played
from abcgen.roundtrip import abc2midi_check, notes_agree

HAVE_ABC2MIDI = shutil.which("abc2midi") is not None


def _abc2midi_or_skip():
    if not HAVE_ABC2MIDI:
        if os.environ.get("CI"):
            pytest.fail("abc2midi (Debian package abcmidi) is required under CI")
        pytest.skip("abc2midi (Debian package abcmidi) not installed: no independent player")


def tune(body: str, head: str = "M:4/4\nL:1/4\nK:C") -> str:
    return f"X:1\n{head}\n{body}\n"


def events(text: str):
    """(onset, length, pitch) of the tune played out, sorted."""
    return sorted((on, d, p) for _pi, on, d, p in note_events(played(parse_abc(text))))


def pitches(text: str):
    return [p for _on, _d, p in events(text)]


def assert_abc2midi_agrees(text: str):
    _abc2midi_or_skip()
    res = abc2midi_check(text, tempfile.mkdtemp(prefix="abcgen-test-"))
    assert res["notes"], res["errors"]
    assert notes_agree(events(text), res["notes"]) == (True, True), (events(text), res["notes"])


# fixture name -> (tune text, expected pitches, whether abc2midi must agree)
PITCHES = {
    "accidental carries to the end of the bar": (
        tune("^G2 G2 =f2 f2|G2 f2 z4|", "M:4/4\nL:1/8\nK:G"), [68, 68, 77, 77, 67, 78], True),
    "accidental carries to every octave of the letter": (
        tune("^c C c' c|c4|"), [73, 61, 85, 73, 72], True),
    "Essen's _B3B": (tune("_B3B c4|", "M:4/4\nL:1/8\nK:C"), [70, 70, 72], True),
    "a tie carries the accidental over the bar line, to the tied note only": (
        tune("A3 ^c-|c c3|"), [69, 73, 72], True),
    "K:HP plays F and C sharp, G natural": (tune("F C G B|", "M:4/4\nL:1/4\nK:HP"), [66, 61, 67, 71], True),
    "K:Hp as K:HP": (tune("F C G B|", "M:4/4\nL:1/4\nK:Hp"), [66, 61, 67, 71], True),
    "K:none": (tune("F C G B|", "M:4/4\nL:1/4\nK:none"), [65, 60, 67, 71], True),
    "K: with a mode": (tune("F C G B|", "M:4/4\nL:1/4\nK:Ador"), [66, 60, 67, 71], True),
    "K: with explicit accidentals": (tune("F C G B|", "M:4/4\nL:1/4\nK:D ^g"), [66, 61, 68, 71], True),
    "K:Bbm": (tune("B E A D|", "M:4/4\nL:1/4\nK:Bbm"), [70, 63, 68, 61], True),
    "inline [K:] changes the key at once": (tune("F F [K:D] F F|F4|"), [65, 65, 66, 66, 66], True),
    "body K: line": (tune("F4|\nK:Bb\nB4|"), [65, 70], True),
    "stray letters are skipped, never notes": (tune("C q D J E p F|"), [60, 62, 64, 65], True),
    "bass-only slash chord symbol": (tune('"/F,#"C D E F|'), [60, 62, 64, 65], False),
    "chord symbols, annotations, decorations, graces skipped": (
        tune('"Am"A "^text"B !trill!c {g}d|~e .f Hg +fermata+a|'), [69, 71, 72, 74, 76, 77, 79, 81], False),
    "A:: is a note and a repeat, not a field": (
        tune("|:G2 A2::d2 e2:|", "M:4/4\nL:1/8\nK:C"), [67, 69, 67, 69, 74, 76, 74, 76], True),
    "repeat and endings |1 :|2": (tune("|:C D|1 E F:|2 G A|]", "M:2/4\nL:1/4\nK:C"),
                                  [60, 62, 64, 65, 60, 62, 67, 69], True),
    "endings [1 [2 at line starts": (tune("|:C D|\n[1 E F:|\n[2 G A|]", "M:2/4\nL:1/4\nK:C"),
                                     [60, 62, 64, 65, 60, 62, 67, 69], True),
    "ending |1,2 and |3": (tune("|:C D|1,2 E F:|3 G A|]", "M:2/4\nL:1/4\nK:C"),
                           [60, 62, 64, 65, 60, 62, 64, 65, 60, 62, 67, 69], True),
    "second ending without a following |: stays an ending": (
        tune("|:CD EF|1 EF GA:|2 GA c2||", "M:4/4\nL:1/4\nK:C"),
        [60, 62, 64, 65, 64, 65, 67, 69, 60, 62, 64, 65, 67, 69, 72], True),
    ":| without |: goes back to the start": (tune("C D|E F:|G A|]", "M:2/4\nL:1/4\nK:C"),
                                            [60, 62, 64, 65, 60, 62, 64, 65, 67, 69], True),
    ":| without |: after a repeat goes back to the last double bar": (
        tune("|:C D:|E E||F F|G G:|", "M:2/4\nL:1/4\nK:C"),
        [60, 62, 60, 62, 64, 64, 65, 65, 67, 67, 65, 65, 67, 67], True),
    "continuation lines and comments": (tune("C D \\\nE F|% a comment\nG4|]"), [60, 62, 64, 65, 67], True),
    "chords": (tune("[CEG]2 [C2E2] [DF]/ [DF]/|"), [60, 64, 67, 60, 64, 62, 65, 62, 65], True),
    "P: plays the parts in the header's order": (
        tune("P:A\nC D|E F:|\nP:B\nG A|B c|]", "M:2/4\nL:1/4\nP:ABA\nK:C"),
        [60, 62, 64, 65, 60, 62, 64, 65, 67, 69, 71, 72, 60, 62, 64, 65, 60, 62, 64, 65], True),
}


@pytest.mark.parametrize("name", sorted(PITCHES))
def test_pitches(name):
    text, want, check = PITCHES[name]
    assert pitches(text) == want


@pytest.mark.parametrize("name", sorted(k for k, v in PITCHES.items() if v[2]))
def test_pitches_as_abc2midi_plays_them(name):
    assert_abc2midi_agrees(PITCHES[name][0])


q = F
# fixture name -> (tune text, expected (onset, length, pitch) list)
TIMES = {
    "L: defaults to 1/16 under 3/4": (tune("C D E F|", "M:2/4\nK:C"),
                                     [(q(0), q(1, 4), 60), (q(1, 4), q(1, 4), 62), (q(1, 2), q(1, 4), 64),
                                      (q(3, 4), q(1, 4), 65)]),
    "L: defaults to 1/8 from 3/4": (tune("C D E2|", "M:3/4\nK:C"),
                                   [(q(0), q(1, 2), 60), (q(1, 2), q(1, 2), 62), (q(1), q(1), 64)]),
    "broken rhythm > < >>": (tune("C>D E<F G>>A|", "M:4/4\nL:1/8\nK:C"),
                             [(q(0), q(3, 4), 60), (q(3, 4), q(1, 4), 62), (q(1), q(1, 4), 64),
                              (q(5, 4), q(3, 4), 65), (q(2), q(7, 8), 67), (q(23, 8), q(1, 8), 69)]),
    "broken rhythm between unequal notes changes neither (as abc2midi)": (
        tune("C>D/ E2|", "M:4/4\nL:1/8\nK:C"),
        [(q(0), q(1, 2), 60), (q(1, 2), q(1, 4), 62), (q(3, 4), q(1), 64)]),
    "triplet (3": (tune("(3CDE F2|", "M:2/4\nL:1/8\nK:C"),
                   [(q(0), q(1, 3), 60), (q(1, 3), q(1, 3), 62), (q(2, 3), q(1, 3), 64), (q(1), q(1), 65)]),
    "tuplet (3:2:2 and a chord in a tuplet": (
        tune("(3:2:2C2D (3[CE]DE|", "M:2/4\nL:1/8\nK:C"),
        [(q(0), q(2, 3), 60), (q(2, 3), q(1, 3), 62), (q(1), q(1, 3), 60), (q(1), q(1, 3), 64),
         (q(4, 3), q(1, 3), 62), (q(5, 3), q(1, 3), 64)]),
    "(5 in compound meter is 5 in the time of 3": (
        tune("(5CDEFG A|", "M:6/8\nL:1/8\nK:C"),
        [(q(0), q(3, 10), 60), (q(3, 10), q(3, 10), 62), (q(3, 5), q(3, 10), 64), (q(9, 10), q(3, 10), 65),
         (q(6, 5), q(3, 10), 67), (q(3, 2), q(1, 2), 69)]),
    "ties across the bar and within a chord": (
        tune("C2 [CE]2-|[CE] z3|"),
        [(q(0), q(2), 60), (q(2), q(3), 60), (q(2), q(3), 64)]),
    "(5 under 3/4 is 5 in the time of 3 too (as abc2midi)": (
        tune("(5CDEFG A|", "M:3/4\nL:1/8\nK:C"),
        [(q(0), q(3, 10), 60), (q(3, 10), q(3, 10), 62), (q(3, 5), q(3, 10), 64), (q(9, 10), q(3, 10), 65),
         (q(6, 5), q(3, 10), 67), (q(3, 2), q(1, 2), 69)]),
    "(5 under 2/4 is 5 in the time of 2": (
        tune("(5CDEFG|", "M:2/4\nL:1/8\nK:C"),
        [(q(0), q(1, 5), 60), (q(1, 5), q(1, 5), 62), (q(2, 5), q(1, 5), 64), (q(3, 5), q(1, 5), 65),
         (q(4, 5), q(1, 5), 67)]),
    "inline [L:] and [M:]": (tune("C2 [L:1/16] D4 E4|[M:3/4] F2 G4|", "M:4/4\nL:1/8\nK:C"),
                             [(q(0), q(1), 60), (q(1), q(1), 62), (q(2), q(1), 64), (q(3), q(1, 2), 65),
                              (q(7, 2), q(1), 67)]),
}


@pytest.mark.parametrize("name", sorted(TIMES))
def test_times(name):
    text, want = TIMES[name]
    assert events(text) == want


@pytest.mark.parametrize("name", sorted(TIMES))
def test_times_as_abc2midi_plays_them(name):
    assert_abc2midi_agrees(TIMES[name][0])


def test_meter_changes_give_bars_of_their_length():
    text = tune("CDE FGA|\nM:4/4\nc2 B2 A2 G2|[M:3/4] F2 E2 D2|]", "M:6/8\nL:1/8\nK:C")
    s = parse_abc(text)
    ms = list(s.parts[0].getElementsByClass("Measure"))
    assert [float(m.duration.quarterLength) for m in ms] == [3.0, 4.0, 3.0]
    assert [m.timeSignature.ratioString if m.timeSignature else None for m in ms] == ["6/8", "4/4", "3/4"]
    assert write_abc(s) == ("X:1\nM:6/8\nL:1/8\nK:Cmaj\nCDE FGA|\nM:4/4\nc2 B2 A2 G2|\nM:3/4\nF2 E2 D2|]\n")
    assert_abc2midi_agrees(write_abc(s))


def test_key_change_in_the_bar_where_the_source_writes_it():
    s = parse_abc(tune("F4|\nK:D\nF4|]"))
    ms = list(s.parts[0].getElementsByClass("Measure"))
    assert ms[1].keySignature is not None and ms[1].keySignature.sharps == 2
    assert write_abc(s) == "X:1\nM:4/4\nL:1/8\nK:Cmaj\nF8|\nK:Dmaj\nF8|]\n"


def test_bars_that_do_not_fit_the_meter_are_kept_as_written():
    # a jig written in 12/8 bars under M:6/8: no meter change is invented
    s = parse_abc(tune("|:ABc def ABc def:|", "M:6/8\nL:1/8\nK:D"))
    out = write_abc(s)
    assert out.count("M:") == 1 and "|:" in out and ":|" in out


def test_voices_are_parts():
    s = parse_abc(tune("V:1\nC D E F|\nV:2\nC, D, E, F,|", "M:4/4\nL:1/4\nK:C"))
    assert len(s.parts) == 2
    assert [p for pi, _o, _d, p in note_events(s) if pi == 1] == [48, 50, 52, 53]


def test_unreadable_characters_warned_with_line_and_column():
    seen = []
    parse_abc(tune("C q D|\nE J F|"), warn=seen.append)
    assert seen == ["<string>: tune line 5, column 3: cannot read 'q'; skipped",
                    "<string>: tune line 6, column 3: cannot read 'J'; skipped"]


def test_tune_without_key_or_notes_fails_with_reason():
    with pytest.raises(AbcParseError, match="no K: field before its music"):
        parse_abc("X:1\nT:t\nM:4/4\nCDEF|\n", file="b.abc", x="3")
    with pytest.raises(AbcParseError, match="no notes"):
        parse_abc("X:1\nT:t\nM:4/4\n", file="b.abc", x="3")
    with pytest.raises(AbcParseError, match="no notes"):
        parse_abc(tune("|]"))


def test_key_parsing():
    assert parse_key("Em").alter == {"F": 1}
    assert parse_key("F#m").alter == {"F": 1, "C": 1, "G": 1}
    assert parse_key("Dmix").alter == {"F": 1}
    assert parse_key("Ephr").alter == {}
    assert parse_key("Bb").alter == {"B": -1, "E": -1}
    assert parse_key("C clef=bass").alter == {}
    assert parse_key("G exp ^f").alter == {"F": 1}


def test_part_order_expansion():
    assert _expand_order("ABA") == list("ABA")
    assert _expand_order("(AB)2C") == list("ABABC")
    assert _expand_order("A2.B") == list("AAB")


def test_model_keeps_bars_as_written():
    m = read_tune(tune("|:C D|1 E F:|2 G A||", "M:2/4\nL:1/4\nK:C"))
    bars = m.voices["1"]
    assert [(b.start_repeat, b.end_repeat, b.ending, b.close) for b in bars] == [
        (True, False, None, "|"), (False, True, "1", "|"), (False, False, "2", "||")]


# --- property: random small tunes, our reading against abc2midi ------------------

_LETTERS = list("CDEFGABcdefgab") + ["C,", "G,", "c'"]
_ACCS = ["", "", "", "^", "_", "="]
_LENS = ["", "", "2", "/2", "3", "3/2"]


@st.composite
def small_tunes(draw):
    key = draw(st.sampled_from(["C", "G", "D", "F", "Bb", "Am", "Edor", "Amix", "HP", "none"]))
    bars = []
    for _ in range(draw(st.integers(1, 6))):
        toks = []
        for _ in range(draw(st.integers(1, 5))):
            kind = draw(st.sampled_from(["note", "note", "note", "chord", "rest", "triplet", "broken", "tie"]))
            note = lambda: draw(st.sampled_from(_ACCS)) + draw(st.sampled_from(_LETTERS))  # noqa: E731
            if kind == "note":
                toks.append(note() + draw(st.sampled_from(_LENS)))
            elif kind == "chord":
                # two different letters: a pitch twice in a chord, split over a new bar line,
                # ties one way in sound (abcgen.sounding merges ties by pitch): left aside
                a, b = draw(st.lists(st.sampled_from(_LETTERS), min_size=2, max_size=2, unique=True))
                toks.append("[" + draw(st.sampled_from(_ACCS)) + a + draw(st.sampled_from(_ACCS)) + b + "]"
                            + draw(st.sampled_from(_LENS)))
            elif kind == "rest":
                toks.append("z" + draw(st.sampled_from(_LENS)))
            elif kind == "triplet":
                toks.append("(3" + note() + note() + note())
            elif kind == "broken":
                n = note()
                toks.append(n + draw(st.sampled_from([">", "<"])) + note())
            else:
                n = note()
                toks.append(n + "2-" + n.lstrip("^_="))
        bars.append(" ".join(toks))
    body = "|".join(bars)
    if draw(st.booleans()):
        body = "|:" + body + ":|"
    return tune(body + "|]" if not body.endswith(":|") else body, f"M:4/4\nL:1/8\nK:{key}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tunes())
def test_random_tunes_play_as_abc2midi_plays_them(text):
    _abc2midi_or_skip()
    assume(any(c in "ABCDEFGabcdefg" for c in text.split("\nK:", 1)[1].split("\n", 1)[1]))
    res = abc2midi_check(text, tempfile.mkdtemp(prefix="abcgen-prop-"))
    assert res["notes"], res["errors"]
    ours = events(text)
    assert notes_agree(ours, res["notes"]) == (True, True), (text, ours, res["notes"])
    # and the canonical text plays the same under abc2midi
    can = abc2midi_check(write_abc(parse_abc(text)), tempfile.mkdtemp(prefix="abcgen-prop-"))
    assert notes_agree(ours, can["notes"]) == (True, True), write_abc(parse_abc(text))


# --- re-barring: the corpus form keeps the header's meter --------------------------

REBAR = {
    # Essen ends a line in the middle of a bar and goes on, or puts two bars in one
    "two bars in one (Essen)": (tune("G2|_B2B2c2c2|d4d4\nz2d4d2|d2e2f2d2|G8|]", "M:4/2\nL:1/4\nK:G"),
                                "X:1\nM:4/2\nL:1/4\nK:Gmaj\nG2|_B2 _B2 c2 c2|d4 d4|z2 d4 d2|d2 e2 f2 d2|\n"
                                "G8|]\n"),
    "12/8 bars under M:6/8, repeats kept": (tune("|:ABc def ABc def:|", "M:6/8\nL:1/8\nK:D"),
                                             "X:1\nM:6/8\nL:1/8\nK:Dmaj\n|:ABc def|ABc def:|\n"),
    "a note across a new bar line is tied": (tune("C4 D4 E4|F12|]", "M:3/4\nL:1/8\nK:C"),
                                             "X:1\nM:3/4\nL:1/4\nK:Cmaj\nC2 D-|D E2|F3-|F3|]\n"),
    "pickup kept": (tune("A|B2c d2e f2g a3|z3 A3|]", "M:3/4\nL:1/8\nK:D"),
                    "X:1\nM:3/4\nL:1/8\nK:Dmaj\nA|B2 cd2e|f2 ga3|z3A3|]\n"),
}


@pytest.mark.parametrize("name", sorted(REBAR))
def test_rebar(name):
    text, want = REBAR[name]
    s = parse_abc(text, rebar=True)
    out = write_abc(s)
    assert out == want
    assert write_abc(parse_abc(out, rebar=True)) == out      # canonical is stable
    assert events(out) == events(text)                        # the same notes


def test_rebar_refuses_a_shift_of_the_rest_of_the_section():
    with pytest.raises(AbcParseError, match="bars do not fit the meter and new bar lines would shift"):
        parse_abc(tune("C2 D2 E2 F2|G2 A2 B2 c2|d4 e2|]", "M:3/4\nL:1/8\nK:C"), rebar=True)
    # as written (no rebar) it reads, bars and all, with no meter change invented
    out = write_abc(parse_abc(tune("C2 D2 E2 F2|G2 A2 B2 c2|d4 e2|]", "M:3/4\nL:1/8\nK:C")))
    assert out.count("M:") == 1


def test_rebar_refuses_a_tuplet_across_a_bar_line():
    with pytest.raises(AbcParseError, match="tuplet would cross"):
        parse_abc(tune("C2 z (3DEF|", "M:2/4\nL:1/8\nK:C"), rebar=True)


def test_unclosed_chord_is_an_error_naming_line_and_column():
    with pytest.raises(AbcParseError, match=":6: the chord at column 1 is not closed"):
        parse_abc(tune("CDEF GABc|\n[CEG GABc|\nCDEF|"))


def test_end_repeat_after_a_last_ending_is_a_double_bar():
    # '|1 ..:|2 ..:|': the repeat was taken; the canonical text keeps the second ending
    text = tune("|:C D|1 E F:|2 G A:|c2|]", "M:2/4\nL:1/4\nK:C")
    assert pitches(text) == [60, 62, 64, 65, 60, 62, 67, 69, 72]
    assert write_abc(parse_abc(text)).endswith("|:C D|1E F:|2G A||c2|]\n")


def test_colons_before_a_bar_line_belong_to_it():
    # '[|]:|' is an invisible bar line, then an end repeat (Ryan's Mammoth)
    text = tune("|:C D|E F[|]:|G A|]", "M:2/4\nL:1/4\nK:C")
    assert pitches(text) == [60, 62, 64, 65, 60, 62, 64, 65, 67, 69]
    assert_abc2midi_agrees(text)


def test_start_repeat_then_bar_line_is_no_end_repeat():
    # '|:|' at the end (O'Neill's): a start repeat nothing closes, played once as abc2midi does
    text = tune("C D|E F|:|", "M:2/4\nL:1/4\nK:C")
    assert pitches(text) == [60, 62, 64, 65]
    assert_abc2midi_agrees(text)
