"""Reading tune books: splitting, encodings, sources, failures with reasons."""

from pathlib import Path

import pytest

from abcgen.abc.reader import parse_abc, parse_tune, read_book, split_book
from abcgen.errors import AbcParseError, InputError

DATA = Path(__file__).parent / "data" / "books"


def test_split_keeps_source_and_file_header():
    text = "% a book\nL:1/16\nR:reel\n\nX:4\nT:One\nM:2/4\nK:G\nGABc|\n\nX:9\nT:Two\nK:D\nDEFG|\n"
    tunes = split_book(text, file="book.abc")
    assert [(t.x, t.line, t.title) for t in tunes] == [("4", 5, "One"), ("9", 11, "Two")]
    # the file header's fields apply to every tune, right after its X: line
    assert tunes[1].text == "X:9\nL:1/16\nR:reel\nT:Two\nK:D\nDEFG|\n"
    assert tunes[0].source == "book.abc:5 X:4"


def test_text_without_x_is_one_tune():
    (t,) = split_book("M:4/4\nK:C\nCDEF|GABc|c4|]\n")
    assert t.x == "1" and t.text.startswith("X:1\nM:4/4")
    assert split_book("  \n\n") == []


def test_latin1_fallback():
    (t,) = read_book(DATA / "latin1.abc")
    assert t.title == "Café Reel"


def test_missing_file_is_input_error():
    with pytest.raises(InputError, match="cannot read"):
        read_book(DATA / "nope.abc")


def test_tune_without_notes_is_reported_with_reason():
    tunes = read_book(DATA / "two_good_one_empty.abc")
    assert [t.x for t in tunes] == ["1", "2", "3"]
    parse_tune(tunes[0])
    with pytest.raises(AbcParseError) as e:
        parse_tune(tunes[2])
    msg = str(e.value)
    assert "two_good_one_empty.abc:" in msg and "X:3" in msg and "no notes" in msg


def test_parse_gives_measures_and_key():
    s = parse_abc("X:1\nM:6/8\nL:1/8\nK:Dmix\nA|:B2c def|gfe d3|A3 B3:|\n")
    from music21 import key

    k = s.recurse().getElementsByClass(key.Key).first()
    assert (k.tonic.name, k.mode) == ("D", "mixolydian")
    assert len(s.parts[0].getElementsByClass("Measure")) == 4  # pickup + 3 bars


def test_errors_name_the_book_line_with_a_copied_header_and_without_x():
    from abcgen.abc.reader import book_line, parse_tune, split_book
    from abcgen.errors import AbcParseError

    book = "M:4/4\nL:1/8\n\nX:1\nT:a\nK:C\nCDEF|\n\nX:2\nT:b\nK:C\nCDEF|\n[CEG GA|\n"
    t1, t2 = split_book(book, file="b.abc")
    assert t2.header_lines == 2 and t2.line == 9
    with pytest.raises(AbcParseError) as e:
        parse_tune(t2)
    assert e.value.line == 13 and book.split("\n")[12] == "[CEG GA|"
    assert "the chord at column 1 is not closed" in e.value.message
    (t,) = split_book("T:no x\nL:1/0\nK:C\nCDEF|\n", file="n.abc")
    with pytest.raises(AbcParseError) as e:
        parse_tune(t)
    assert e.value.line == 2 and "L:1/0 is not a note length" in e.value.message
    assert book_line(None, 8) == 8 and book_line(9, None) == 9 and book_line(9, 2, 2) == 9
