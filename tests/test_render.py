"""``abcgen render``: the files are checked by what is in them, not only that they exist.

Sheet music is compared with music21 by counting verovio's note elements;
MIDI and MusicXML are read back with music21 and compared note by note.
WAV needs the Debian packages fluidsynth and fluid-soundfont-gm and is
skipped only when the fluidsynth command is missing.
"""

from __future__ import annotations

import io
import re
import shutil
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from abcgen import render, sounding
from abcgen.abc.reader import parse_abc, parse_tune, read_book, sounding_notes_iter
from abcgen.cli import app
from abcgen.errors import AbcParseError, InputError

DATA = Path(__file__).parent / "data" / "render"
JIG = DATA / "jig.abc"          # repeats, first and second endings, 6/8, G major
CHORDS = DATA / "chords.abc"    # chords and a triplet, 4/4, D major
BOOK = DATA / "book.abc"        # two tunes, X:1 and X:2
BAD = DATA / "bad.abc"          # X:1 fine, X:7 has L:1/0


def cli(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def score_of(path: Path, x: str = "1"):
    return parse_tune(next(t for t in read_book(path) if t.x == x))


def n_pitches(score) -> int:
    return sum(len(n.pitches) for n in sounding_notes_iter(score))


def events(stream):
    """(MIDI pitch, onset, duration) of every sounding pitch, ties joined, sorted."""
    flat = stream.stripTies().flatten()
    out = []
    for n in sounding_notes_iter(flat):
        for p in n.pitches:
            out.append((p.midi, Fraction(n.offset).limit_denominator(96),
                        Fraction(n.quarterLength).limit_denominator(96)))
    return sorted(out)


def reread_midi(path: Path):
    """music21's reading of a MIDI file, unquantized.

    Its default grid (quarters and thirds of a beat) cannot hold a triplet
    that starts off the beat, and music21 writes exact ticks anyway.
    """
    import music21

    return music21.converter.parse(str(path), format="midi", quantizePost=False, forceSource=True)


def svg_notes(svg: str) -> int:
    return len(re.findall(r'class="note"', svg))


def ink(png: Path) -> float:
    """Share of clearly dark pixels: 0 for a blank page."""
    img = np.asarray(Image.open(png).convert("L"))
    return float((img < 128).mean())


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- sheet music


@pytest.mark.parametrize("abc", [JIG, CHORDS], ids=["jig", "chords"])
def test_svg_has_one_note_head_per_sounding_pitch(tmp_path, abc):
    out = tmp_path / "tune.svg"
    assert render.render_file(abc, out) == [out]
    svg = out.read_text()
    assert svg_notes(svg) == n_pitches(score_of(abc))
    assert len(re.findall(r'class="notehead"', svg)) == n_pitches(score_of(abc))
    assert no_temp_files(tmp_path)


def test_svg_shows_title_meter_key_repeats_and_endings(tmp_path):
    out = tmp_path / "jig.svg"
    render.render_file(JIG, out)
    svg = out.read_text()
    assert "The Test Jig" in svg
    assert svg.count('class="meterSig"') == 1
    assert svg.count('class="keySig"') == 1
    assert svg.count('class="voltaBracket"') == 2          # first and second ending
    assert re.search(r'class="barLine"', svg)


def test_untitled_tune_gets_no_music21_placeholder(tmp_path):
    score = parse_abc("X:1\nL:1/8\nK:C\nCDEF GABc|]\n")
    paths = render.render_tune(score, tmp_path / "u.svg")
    svg = paths[0].read_text()
    assert "Music21" not in svg
    assert svg_notes(svg) == 8
    xml = render.musicxml_bytes(score)
    assert b"Music21 Fragment" not in xml and b">Music21<" not in xml


def test_long_tune_spills_onto_numbered_pages(tmp_path):
    bars = "|".join(["CDEF GABc", "dcBA GFED", "C2E2 G2c2", "B2G2 E2C2"] * 40)
    score = parse_abc(f"X:1\nT:Long\nM:4/4\nL:1/8\nK:C\n{bars}|]\n")
    paths = render.render_tune(score, tmp_path / "long.svg")
    assert len(paths) >= 2
    assert paths[0] == tmp_path / "long.svg"
    assert paths[1] == tmp_path / "long-p2.svg"
    assert sum(svg_notes(p.read_text()) for p in paths) == n_pitches(score)


def test_png_is_a_plausible_non_blank_page(tmp_path):
    out = tmp_path / "jig.png"
    render.render_file(JIG, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        w, h = img.size
    assert w == 1680                      # an A4-wide page at twice verovio's size
    assert 150 <= h <= 1200               # one system plus title, page height trimmed
    assert 0.01 < ink(out) < 0.4


def test_pdf_of_a_book_is_one_file_one_page_per_tune(tmp_path):
    from pypdf import PdfReader

    out = tmp_path / "book.pdf"
    assert render.render_file(BOOK, out) == [out]
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 2
    assert abs(float(reader.pages[0].mediabox.width) - 595.3) < 1   # A4
    assert "First Tune" in reader.pages[0].extract_text()
    assert "Second Tune" in reader.pages[1].extract_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.pdf"]


def test_book_writes_one_file_per_tune_numbered_by_x(tmp_path):
    out = tmp_path / "book.svg"
    written = render.render_file(BOOK, out)
    assert written == [tmp_path / "book-1.svg", tmp_path / "book-2.svg"]
    for path, x in zip(written, ("1", "2")):
        assert svg_notes(path.read_text()) == n_pitches(score_of(BOOK, x))


def test_tune_option_picks_one_tune_and_writes_the_plain_name(tmp_path):
    out = tmp_path / "second.svg"
    assert render.render_file(BOOK, out, tune=2) == [out]
    svg = out.read_text()
    assert "Second Tune" in svg and "First Tune" not in svg
    assert svg_notes(svg) == n_pitches(score_of(BOOK, "2"))


def test_repeated_x_numbers_fall_back_to_positions(tmp_path):
    book = tmp_path / "dup.abc"
    book.write_text("X:1\nT:A\nL:1/8\nK:C\nCDEF|]\n\nX:1\nT:B\nL:1/8\nK:C\nGABc|]\n")
    written = render.render_file(book, tmp_path / "dup.musicxml")
    assert [p.name for p in written] == ["dup-1.musicxml", "dup-2.musicxml"]


# --------------------------------------------------------------------------- MusicXML, MIDI, WAV


@pytest.mark.parametrize("abc", [JIG, CHORDS], ids=["jig", "chords"])
@pytest.mark.parametrize("ext", [".musicxml", ".xml"])
def test_musicxml_reparses_to_the_same_notes(tmp_path, abc, ext):
    import music21

    out = tmp_path / f"tune{ext}"
    render.render_file(abc, out)
    back = music21.converter.parse(str(out), format="musicxml", forceSource=True)
    assert events(back) == events(score_of(abc))


@pytest.mark.parametrize("abc", [JIG, CHORDS], ids=["jig", "chords"])
def test_midi_rereads_to_the_notes_as_played(tmp_path, abc):
    import music21

    out = tmp_path / "tune.mid"
    render.render_file(abc, out)
    assert out.read_bytes()[:4] == b"MThd"
    back = reread_midi(out)
    score = score_of(abc)
    assert events(back) == events(sounding.played(score))


def test_midi_plays_repeats_and_endings_out(tmp_path):
    score = score_of(JIG)
    heard = sounding.played(score)
    # |: A B C |1 D :|2 E |]  is heard as  A B C D A B C E
    assert heard.highestTime == 8 * 3
    assert n_pitches(heard) > n_pitches(score)


@pytest.mark.skipif(shutil.which("fluidsynth") is None,
                    reason="fluidsynth not installed (Debian: fluidsynth fluid-soundfont-gm)")
def test_wav_is_audible_and_as_long_as_the_tune(tmp_path):
    out = tmp_path / "jig.wav"
    render.render_file(JIG, out)
    with wave.open(str(out)) as w:
        rate, frames, width, channels = (w.getframerate(), w.getnframes(),
                                         w.getsampwidth(), w.getnchannels())
        samples = np.frombuffer(w.readframes(frames), dtype=np.int16)
    assert (rate, width) == (44100, 2) and channels in (1, 2)
    seconds = frames / rate
    tune_seconds = 24 * 0.5                   # 8 bars of 6/8 played out, 120 crotchets a minute
    assert tune_seconds <= seconds <= tune_seconds + 6
    assert np.abs(samples).max() > 1000
    # sound through the whole tune, not only at the start
    per_sec = samples.reshape(-1, channels)[: int(tune_seconds) * rate].reshape(
        int(tune_seconds), -1)
    assert (np.abs(per_sec).max(axis=1) > 300).all()
    assert no_temp_files(tmp_path)


def test_wav_without_fluidsynth_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(InputError) as e:
        render.render_file(JIG, tmp_path / "x.wav")
    assert "fluidsynth" in str(e.value) and "fluid-soundfont-gm" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    r = cli("render", JIG, "-o", tmp_path / "x.wav")
    assert r.exit_code == 2
    assert "fluid-soundfont-gm" in r.output and len(r.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- piano roll


def test_pianoroll_instead_of_sheet_music_for_png(tmp_path):
    out = tmp_path / "roll.png"
    r = cli("render", CHORDS, "-o", out, "--pianoroll")
    assert r.exit_code == 0, r.output
    with Image.open(out) as img:
        assert img.size == (800, 400)
    assert 0.005 < ink(out) < 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roll.png"]


def test_pianoroll_beside_another_format(tmp_path):
    written = render.render_file(BOOK, tmp_path / "b.mid", pianoroll=True)
    assert sorted(p.name for p in written) == ["b-1.mid", "b-2.mid",
                                               "b-roll-1.png", "b-roll-2.png"]


# --------------------------------------------------------------------------- errors and the CLI


def test_cli_writes_and_reports(tmp_path):
    out = tmp_path / "jig.svg"
    r = cli("render", JIG, "-o", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output
    assert svg_notes(out.read_text()) == n_pitches(score_of(JIG))


def test_unknown_extension_exits_2_listing_formats(tmp_path):
    r = cli("render", JIG, "-o", tmp_path / "tune.docx")
    assert r.exit_code == 2
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    for ext in (".svg", ".png", ".pdf", ".musicxml", ".mid", ".wav"):
        assert ext in line
    assert list(tmp_path.iterdir()) == []


def test_bad_tune_in_a_book_the_good_ones_rendered_exit_1(tmp_path):
    r = cli("render", BAD, "-o", tmp_path / "bad.svg")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert f"wrote {tmp_path / 'bad-1.svg'}" in r.output
    assert "bad.abc:11 tune X:7" in r.output      # the L:1/0 line, not the X: line and "rendered 1 of 2 tune(s); 1 failed" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad-1.svg"]      # X:1, and nothing of X:7


def test_bad_abc_raises_render_failed_with_the_parse_error_line(tmp_path):
    with pytest.raises(render.RenderFailed) as e:
        render.render_file(BAD, tmp_path / "unused.svg")
    assert e.value.written == [tmp_path / "unused-1.svg"] and e.value.exit_code == 1
    assert len(e.value.failures) == 1 and e.value.failures[0].startswith(f"{BAD}:11 tune X:7: ")


def test_book_with_one_good_and_two_bad_tunes_lists_every_failure(tmp_path):
    good = JIG.read_text().replace("X:1", "X:2", 1)
    book = tmp_path / "book.abc"
    book.write_text("X:1\nT:one\nM:4/4\nL:1/0\nK:C\nCDEF|\n\n" + good
                    + "\nX:3\nT:three\nM:4/4\nL:1/8\nK:C\n\n")
    for ext in ("svg", "pdf", "mid"):
        r = cli("render", book, "-o", tmp_path / f"out.{ext}")
        assert r.exit_code == 1, r.output
        assert "X:1" in r.output and "X:3" in r.output and "rendered 1 of 3 tune(s); 2 failed" in r.output
        assert "Traceback" not in r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["book.abc", "out-2.mid", "out-2.svg", "out.pdf"], names
    assert svg_notes((tmp_path / "out-2.svg").read_text()) == n_pitches(score_of(JIG))


def test_single_bad_tune_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "one.abc"
    bad.write_text("X:1\nT:one\nM:4/4\nL:1/0\nK:C\nCDEF|\n")
    r = cli("render", bad, "-o", tmp_path / "one.svg")
    assert r.exit_code == 2 and "one.abc" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.abc"]


@pytest.mark.parametrize("name", ["tune.abc", "tune-1.abc"])
def test_render_never_writes_over_its_input(tmp_path, name):
    """``-o`` naming the input itself (an .abc output is not a format, but a book's per-tune name can be)."""
    src = tmp_path / name
    src.write_text(JIG.read_text())
    before = src.read_bytes()
    link = tmp_path / "tune.svg"
    link.symlink_to(src)
    r = cli("render", src, "-o", link)
    assert r.exit_code == 2 and "refusing to write over an input" in r.output, r.output
    assert src.read_bytes() == before and link.is_symlink()


def test_missing_tune_number_lists_what_there_is(tmp_path):
    r = cli("render", BOOK, "--tune", "5", "-o", tmp_path / "x.svg")
    assert r.exit_code == 2
    assert "X:5" in r.output and "X:1, X:2" in r.output


def test_missing_input_file_exits_2(tmp_path):
    r = cli("render", tmp_path / "nope.abc", "-o", tmp_path / "x.svg")
    assert r.exit_code == 2 and "nope.abc" in r.output and "Traceback" not in r.output


def test_missing_output_folder_is_an_input_error(tmp_path):
    r = cli("render", JIG, "-o", tmp_path / "nowhere" / "x.svg")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_failed_write_leaves_neither_file_nor_temp(tmp_path, monkeypatch):
    def boom(svg):
        raise RuntimeError("cairo fell over")

    monkeypatch.setattr(render, "svg_to_png", boom)
    with pytest.raises(RuntimeError):
        render.render_file(JIG, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_whole(tmp_path):
    out = tmp_path / "jig.mid"
    out.write_bytes(b"old" * 10000)
    render.render_file(JIG, out)
    assert out.read_bytes()[:4] == b"MThd" and b"oldold" not in out.read_bytes()


# --------------------------------------------------------------------------- random tunes

PITCHES = ["C", "D", "E", "F", "G", "A", "B", "c", "d", "e", "f", "g", "^F", "_B", "=c"]
LENGTHS = ["", "2", "/2", "3", "4"]
note = st.builds(lambda p, n: p + n, st.sampled_from(PITCHES), st.sampled_from(LENGTHS))
chord = st.builds(lambda ps, n: "[" + "".join(sorted(set(ps), key=PITCHES.index)) + "]" + n,
                  st.lists(st.sampled_from(PITCHES[:8]), min_size=2, max_size=3),
                  st.sampled_from(["", "2"]))
triplet = st.builds(lambda a, b, c: f"(3{a}{b}{c}", *[st.sampled_from(PITCHES)] * 3)
item = st.one_of(note, note, chord, triplet)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(item, min_size=1, max_size=16))
def test_random_tunes_keep_their_notes_in_every_format(tmp_path, body):
    import music21

    abc = "X:1\nT:Random\nM:4/4\nL:1/8\nK:C\n" + " ".join(body) + "|]\n"
    path = tmp_path / "r.abc"
    path.write_text(abc)
    score = parse_abc(abc)
    render.render_file(path, tmp_path / "r.musicxml")
    engraved = music21.converter.parse(str(tmp_path / "r.musicxml"), forceSource=True)
    assert events(engraved) == events(score)
    render.render_file(path, tmp_path / "r.svg")
    # notes across a bar line are engraved as two tied heads, as in the MusicXML
    assert svg_notes((tmp_path / "r.svg").read_text()) == n_pitches(engraved)
    render.render_file(path, tmp_path / "r.mid")
    assert events(reread_midi(tmp_path / "r.mid")) == events(score)


def test_bar_count_counts_bar_lines_of_the_body_only():
    from abcgen.abc.reader import split_book

    t = split_book("X:1\nT:a|b\nM:4/4\nL:1/8\nK:C\n% a | comment\n|:CDEF GABc|[1 d4:|[2 e4||\nC8|]\n")[0]
    assert render.bar_count(t) == 5          # |:  |  :|  ||  |]   ([1 and [2 are endings)


def test_a_tune_too_long_to_render_is_refused_at_once_the_others_rendered(tmp_path):
    import time

    long = "X:2\nT:Long\nM:4/4\nL:1/8\nK:D\n" + "|".join(["ABcd efga"] * (render.MAX_BARS + 100)) + "|]\n"
    book = tmp_path / "book.abc"
    book.write_text(JIG.read_text() + "\n" + long)
    t0 = time.monotonic()
    r = cli("render", book, "-o", tmp_path / "out.svg")
    assert time.monotonic() - t0 < 30                      # refused before music21 reads it
    assert r.exit_code == 1, r.output
    assert f"tune X:2: the tune has about {render.MAX_BARS + 100} bars; abcgen renders at most" in r.output
    assert (tmp_path / "out-1.svg").is_file() and not (tmp_path / "out-2.svg").exists()
