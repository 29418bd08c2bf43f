"""``abcgen convert`` between ABC, MIDI and MusicXML, and the MIDI round-trip measurement.

ABC -> MIDI is checked by reading the MIDI bytes back with abcgen's own
reader (tempo, tracks, channels, title, the notes with and without repeats
played out); the other directions by the exact ABC they give.  Bad inputs of
every kind must give one line naming the file, the rest of the batch still
converted, exit 1, and no output file touched by a failed conversion.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from abcgen import midi_check
from abcgen.abc.reader import parse_abc, read_book
from abcgen.convert import convert, output_format, score_to_midi
from abcgen.errors import InputError
from abcgen.midi import load_midi, parse_midi_bytes
from abcgen.midi.io import conductor, jittered, notes_track, smf

POLKA = "X:1\nT:Polka\nM:2/4\nL:1/8\nQ:1/4=100\nK:Amaj\nAB cd|e2 e2|fe dc|B2 A2|]\n"
REPEATS = "X:1\nT:Ends\nM:2/4\nL:1/8\nK:Gmaj\n|:GA Bc|[1 d4:|[2 e4|]\n"
DUET = """X:1
T:Duet
M:6/8
L:1/8
Q:3/8=120
K:Gmaj
V:1
GAB d3|g6|]
V:2
G,3 D,3|G,6|]
"""


def quarters(mf, n):
    return Fraction(n.on) / mf.tpq, Fraction(n.off - n.on) / mf.tpq, n.pitch


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "abcgen", *args], capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------
# ABC -> MIDI


def test_midi_out_tempo_tracks_channels_title():
    score = parse_abc(DUET)
    score.parts[0].partName = "Fiddle"
    mf = parse_midi_bytes(score_to_midi(score, title="Duet"))
    assert mf.format == 1
    assert [t.name for t in mf.tracks] == ["Duet", "Fiddle", ""]      # conductor, then one per voice
    assert mf.title == "Duet"
    assert mf.tempos[0] == (0, 333_333)                              # Q:3/8=120 is 180 quarters a minute
    assert (0, 6, 8) in mf.time_sigs and mf.key_sigs[0][1:] == (1, False)
    assert not mf.tracks[0].notes
    v1, v2 = mf.tracks[1].notes, mf.tracks[2].notes
    assert {n.channel for n in v1} == {0} and {n.channel for n in v2} == {1}
    half = Fraction(1, 2)
    assert [quarters(mf, n) for n in v1] == [(0, half, 67), (half, half, 69), (1, half, 71),
                                             (Fraction(3, 2), Fraction(3, 2), 74), (3, 3, 79)]
    assert [quarters(mf, n) for n in v2] == [(0, Fraction(3, 2), 55), (Fraction(3, 2), Fraction(3, 2), 50),
                                             (3, 3, 55)]


def test_midi_out_default_tempo_is_120():
    mf = parse_midi_bytes(score_to_midi(parse_abc(REPEATS)))
    assert mf.tempos[0][1] == 500_000


H = Fraction(1, 2)


@pytest.mark.parametrize("expand,want", [
    (True, [(0, H, 67), (H, H, 69), (1, H, 71), (3 * H, H, 72), (2, 2, 74),
            (4, H, 67), (9 * H, H, 69), (5, H, 71), (11 * H, H, 72), (6, 2, 76)]),
    (False, [(0, H, 67), (H, H, 69), (1, H, 71), (3 * H, H, 72), (2, 2, 74), (4, 2, 76)])])
def test_midi_out_repeats_played_out_or_written_once(expand, want):
    mf = parse_midi_bytes(score_to_midi(parse_abc(REPEATS), expand_repeats=expand))
    assert [quarters(mf, n) for t in mf.tracks for n in t.notes] == want


def test_abc_to_midi_to_abc_gives_the_same_text(tmp_path):
    src = tmp_path / "polka.abc"
    src.write_text(POLKA)
    assert convert([str(src)], output=tmp_path / "polka.mid") == []
    assert convert([str(tmp_path / "polka.mid")], output=tmp_path / "back.abc") == []
    assert (tmp_path / "back.abc").read_text() == POLKA


def test_duet_to_midi_and_back_keeps_both_voices(tmp_path):
    src = tmp_path / "duet.abc"
    src.write_text(DUET)
    assert convert([str(src)], to="mid", outdir=tmp_path / "out") == []
    mid = tmp_path / "out" / "duet.mid"
    text = __import__("abcgen.abc.writer", fromlist=["write_abc"]).write_abc(load_midi(mid, all_tracks=True))
    assert text == ("X:1\nT:Duet\nM:6/8\nL:1/8\nQ:3/8=120\nK:Gmaj\n"
                    "V:1\nGAB d3|g6|]\nV:2\nG,3 D,3|G,6|]\n")


def test_no_expand_repeats_from_the_command_line(tmp_path):
    src = tmp_path / "ends.abc"
    src.write_text(REPEATS)
    r = run("convert", str(src), "-o", str(tmp_path / "a.mid"), "--no-expand-repeats")
    assert r.returncode == 0, r.stderr
    mf = parse_midi_bytes((tmp_path / "a.mid").read_bytes())
    assert len(mf.tracks[1].notes) == 6


# --------------------------------------------------------------------------
# Formats, inputs and outputs


def test_output_format_from_to_or_extension():
    assert output_format(None, None) == "abc"
    assert output_format(None, Path("x.mid")) == "mid"
    assert output_format(None, Path("x.MIDI")) == "mid"
    assert output_format(None, Path("x.xml")) == "musicxml"
    assert output_format(None, Path("x.mxl")) == "mxl"
    assert output_format(None, Path("x.txt")) == "abc"
    assert output_format("musicxml", Path("x.musicxml")) == "musicxml"
    with pytest.raises(InputError, match="does not match"):
        output_format("abc", Path("x.mid"))
    with pytest.raises(InputError, match="unknown output format"):
        output_format("wav", None)


@pytest.mark.parametrize("ext", [".musicxml", ".mxl"])
def test_musicxml_out_and_back(tmp_path, ext):
    src = tmp_path / "polka.abc"
    src.write_text(POLKA)
    assert convert([str(src)], output=tmp_path / ("p" + ext)) == []
    assert convert([str(tmp_path / ("p" + ext))], output=tmp_path / "back.abc") == []
    assert (tmp_path / "back.abc").read_text() == POLKA


def test_folders_and_globs(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.abc").write_text(POLKA)
    (tmp_path / "in" / "sub" / "b.abc").write_text(REPEATS)
    (tmp_path / "in" / "notes.txt").write_text("not a tune")
    assert convert([str(tmp_path / "in")], outdir=tmp_path / "out") == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.abc", "b.abc"]
    assert convert([str(tmp_path / "in" / "**" / "*.abc")], output=tmp_path / "all.abc") == []
    assert [t.title for t in read_book(tmp_path / "all.abc")] == ["Polka", "Ends"]
    with pytest.raises(InputError, match="no file matches"):
        convert([str(tmp_path / "*.nothing")])


def test_same_name_twice_in_outdir_is_a_failure_not_an_overwrite(tmp_path):
    for d, text in (("x", POLKA), ("y", REPEATS)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "tune.abc").write_text(text)
    failures = convert([str(tmp_path / "x"), str(tmp_path / "y")], outdir=tmp_path / "out")
    assert len(failures) == 1 and "y/tune.abc" in failures[0] and "same name" in failures[0]
    assert (tmp_path / "out" / "tune.abc").read_text() == POLKA


MIDI_GOOD = smf([conductor(ts=(2, 4), sharps=3), notes_track([(Fraction(k, 2), Fraction(1, 2), 69 + k)
                                                              for k in range(8)])])


@pytest.mark.parametrize("fname,data,reason", [
    ("abc.mid", POLKA.encode(), "not a MIDI file"),
    ("cut.mid", MIDI_GOOD[:-12], "truncated"),
    ("empty.mid", b"", "empty"),
    ("empty.musicxml", b"", "empty"),
    ("junk.musicxml", b"\x00\x01binary junk\xff", "cannot read as musicxml"),
    ("cut.musicxml", b"<?xml version='1.0'?><score-partwise><part-list>", "cannot read as musicxml"),
    ("midi.abc", MIDI_GOOD, "not ABC text: this is a MIDI file"),
    ("zeros.abc", b"X:1\x00\x00\x00", "not ABC text: binary data"),
    ("tune.wav", b"RIFF....WAVE", "unsupported input type"),
])
def test_bad_inputs_one_line_each_the_rest_converted(tmp_path, fname, data, reason):
    good = tmp_path / "good.mid"
    good.write_bytes(MIDI_GOOD)
    bad = tmp_path / fname
    bad.write_bytes(data)
    out = tmp_path / "out.abc"
    out.write_text("old\n")
    failures = convert([str(bad), str(good)], output=out)
    assert len(failures) == 1
    assert failures[0].startswith(str(bad)) and reason in failures[0] and "\n" not in failures[0]
    assert out.read_text().startswith("X:1\nT:good\nM:2/4\n")          # the good file still converted


def test_failed_batch_leaves_existing_output_alone_and_exits_2(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(MIDI_GOOD[:30])
    out = tmp_path / "out.abc"
    out.write_text("old\n")
    r = run("convert", str(bad), "-o", str(out))
    assert r.returncode == 2      # nothing converted: bad input
    assert "bad.mid" in r.stderr and "truncated" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mid", "out.abc"]


def test_midi_options_on_the_command_line(tmp_path):
    melody = [(Fraction(k, 2), Fraction(1, 2), 72 + k % 5) for k in range(16)]
    bass = [(Fraction(k), Fraction(1), 48) for k in range(8)]
    mid = tmp_path / "two.mid"
    mid.write_bytes(smf([conductor(ts=(4, 4)), notes_track(bass, ch=1, title="Bass"),
                         notes_track(melody, title="Tune")]))
    r = run("convert", str(mid), "--grid", "1/12")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "grid must be one of" in r.stderr
    r = run("convert", str(mid), "--meter", "x")
    assert r.returncode == 2 and "meter must look like" in r.stderr
    r = run("convert", str(mid), "--track", "1", "--meter", "2/4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("M:2/4\nL:1/4\nQ:1/4=120\nK:Cmaj\nC, C,|C, C,|C, C,|C, C,|]\n")
    r = run("convert", str(mid), "--all-tracks")
    assert r.returncode == 0, r.stderr
    assert "V:1\n" in r.stdout and "V:2\n" in r.stdout
    r = run("convert", str(mid), "--track", "7")
    assert r.returncode == 2 and "no track 7" in r.stderr and "1 (Bass, channel" not in r.stderr
    assert "1 (Bass, 8 notes), 2 (Tune, 16 notes)" in r.stderr


# --------------------------------------------------------------------------
# Jitter and the measurement


def test_jittered_moves_every_note_within_the_bound():
    mf = parse_midi_bytes(MIDI_GOOD)
    same = parse_midi_bytes(jittered(mf, 0, seed=1))
    assert [(n.on, n.off, n.pitch) for n in same.tracks[1].notes] == \
        [(n.on, n.off, n.pitch) for n in mf.tracks[1].notes]
    moved = parse_midi_bytes(jittered(mf, 30, seed=1))
    bound = int(0.030 * 2 * 480)                                      # 30 ms at 120 bpm, in ticks
    pairs = list(zip(mf.tracks[1].notes, moved.tracks[1].notes))
    assert all(abs(a.on - b.on) <= bound and abs(a.off - b.off) <= bound for a, b in pairs)
    assert any(a.on != b.on for a, b in pairs)
    assert moved.time_sigs == mf.time_sigs and moved.key_sigs == mf.key_sigs


def test_midi_roundtrip_measurement_on_a_tiny_corpus(tmp_path):
    quintuplets = "X:3\nT:Fives\nM:2/4\nL:1/8\nK:C\n(5cdefg (5gfedc|c4|]\n"
    (tmp_path / "tunes.abc").write_text(POLKA + "\n" + DUET + "\n" + quintuplets)
    rep = midi_check.run(str(tmp_path), limit=0, jobs=1, use_midi2abc=shutil.which("midi2abc") is not None)
    s = rep["summary"]
    assert s["measured"] == 3
    a = s["abcgen"]
    assert (a["on_grid"]["tunes"], a["on_grid"]["exact"]) == (2, 2)
    assert (a["off_grid"]["tunes"], a["off_grid"]["exact"]) == (1, 0)  # fifths of an eighth: off the grid
    assert a["on_grid"]["notes"] == 12 + 8 and a["on_grid"]["notes_exact_pct"] == 100.0
    assert 0 < a["off_grid"]["notes_exact_pct"] < 100
    text = midi_check.format_report(rep)
    assert "on the grid  exact     2/2" in text


def test_sample_spreads_over_the_corpus(tmp_path):
    (tmp_path / "book.abc").write_text("\n".join(f"X:{i}\nT:T{i}\nM:2/4\nL:1/8\nK:C\nCD EF|G4|]\n"
                                                 for i in range(1, 11)))
    _name, tunes, total = midi_check.sample_tunes(str(tmp_path), 4)
    assert total == 10 and [t.x for t in tunes] == ["1", "3", "6", "8"]


# --------------------------------------------------------------------------
# Hardening (issue 17): no pickle, no input overwritten, streaming, exit codes


class _Planted:
    """Unpickling this makes the folder ``path``: the proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_musicxml_never_loads_or_stores_a_music21_pickle(tmp_path):
    import pickle
    import zlib

    from music21 import converter

    xml = tmp_path / "polka.musicxml"
    (tmp_path / "polka.abc").write_text(POLKA)
    assert convert([str(tmp_path / "polka.abc")], output=xml) == []
    fp_pickle = converter.PickleFilter(xml).status()[2]
    assert fp_pickle is not None, "music21 has no scratch folder: the planted pickle cannot be tested"
    fp_pickle = Path(fp_pickle)
    fp_pickle.parent.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "pickle-was-loaded"
    try:
        fp_pickle.write_bytes(zlib.compress(pickle.dumps(_Planted(marker))))
        import os
        import time

        later = time.time() + 3600            # newer than the file: music21 would prefer it
        os.utime(fp_pickle, (later, later))
        out = tmp_path / "back.abc"
        assert convert([str(xml)], output=out) == []
        assert not marker.exists(), "the planted pickle was unpickled"
        assert "AB cd|e2 e2|" in out.read_text()
        fp_pickle.unlink()
        assert convert([str(xml)], output=tmp_path / "again.abc") == []
        assert not fp_pickle.exists(), "music21 stored a pickle of the parsed file"
    finally:
        if fp_pickle.exists():
            fp_pickle.unlink()


def test_output_over_an_input_is_refused_exit_2(tmp_path):
    src = tmp_path / "tune.abc"
    src.write_text(POLKA)
    r = run("convert", str(src), "-o", str(src))
    assert r.returncode == 2 and "refusing to write over an input" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and src.read_text() == POLKA
    r = run("convert", "tune.abc", "-O", ".", cwd=tmp_path)
    assert r.returncode == 2 and "refusing to write over an input" in r.stderr, r.stderr
    assert src.read_text() == POLKA
    link = tmp_path / "link.abc"
    link.symlink_to(src)
    r = run("convert", str(src), "-o", str(link))
    assert r.returncode == 2 and src.read_text() == POLKA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.abc", "tune.abc"]


def test_single_bad_input_exits_2_and_says_0_converted(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(MIDI_GOOD[:30])
    r = run("convert", str(bad))
    assert r.returncode == 2, r.stderr
    assert "converted 0 file(s), 1 failure(s)" in r.stderr and "converted 1" not in r.stderr
    assert "bad.mid" in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_abc_out_is_streamed_tune_by_tune_in_order(tmp_path, monkeypatch):
    """Each tune is written before the next one is parsed; the output is the whole book, in order."""
    import io

    import abcgen.convert as C

    events = []
    real_parse = C.parse_tune

    def parse(t):
        events.append(("parse", t.x))
        return real_parse(t)

    class Out(io.StringIO):
        def write(self, s):
            events.append(("write", s[s.index("T:") + 2: s.index("\n", s.index("T:"))]))
            return super().write(s)

    monkeypatch.setattr(C, "parse_tune", parse)
    book = tmp_path / "book.abc"
    book.write_text("".join(f"X:{i}\nT:t{i}\nM:2/4\nL:1/8\nK:C\nCD EF|G4|]\n\n" for i in range(1, 5))
                    + "X:9\nT:bad\nM:2/4\nL:1/8\nK:C\n")
    out = Out()
    failures = convert([str(book)], stdout=out)
    assert len(failures) == 1 and "X:9" in failures[0]
    assert events[:8] == [("parse", "1"), ("write", "t1"), ("parse", "2"), ("write", "t2"),
                          ("parse", "3"), ("write", "t3"), ("parse", "4"), ("write", "t4")]
    text = out.getvalue()
    assert [ln for ln in text.splitlines() if ln.startswith("X:")] == ["X:1", "X:2", "X:3", "X:4"]
    # the same book to a file: the same text, written atomically
    assert convert([str(book)], output=tmp_path / "o.abc") == failures
    assert (tmp_path / "o.abc").read_text() == text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("head,bad_line", [("", 8), ("M:4/4\nL:1/8\n\nX:1\nT:a\nK:C\nCDEF|\n\n", 16)])
def test_unterminated_chord_is_reported_at_its_own_line(tmp_path, head, bad_line):
    book = tmp_path / "chord.abc"
    book.write_text(head + "X:2\nT:t\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\nCDEF GABc|\n[CEG GABc|\nCDEF|\n")
    assert book.read_text().splitlines()[bad_line - 1] == "[CEG GABc|"
    r = run("convert", str(book))
    assert f"{book}:{bad_line} tune X:2: the chord at column 1 is not closed with ']'" in r.stderr, r.stderr
    r = run("render", str(book), "-o", str(tmp_path / "c.svg"))
    assert f"{book}:{bad_line} tune X:2: the chord at column 1 is not closed with ']'" in r.stderr, r.stderr
