"""Books of the shipped model played by abc2midi: the bar rule where repeats meet (see
test_grammar's REPEAT_BARS) holds for whole sampled books, and --form AABB gives two
repeated parts of eight bars by tunestats' own count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from abcgen.tunestats import abc2midi_bar_warnings, model_texts_of_book, tune_form


def _need_abc2midi() -> None:
    if shutil.which("abc2midi") is None:
        if os.environ.get("CI"):
            pytest.fail("abc2midi is not installed")
        pytest.skip("abc2midi is not installed: the independent check did not run")


def _book(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "abcgen", "sample", *args],
                          capture_output=True, text=True, check=True).stdout


def _tunes(book: str) -> list[str]:
    return [t for t in book.split("\n\n") if t.strip()]


def test_a_hot_book_has_no_bar_abc2midi_calls_wrong():
    """Temperature 1.3 writes the rare repeat structures (pickups after :|, second
    endings closed by :|, bare :| after endings) most often."""
    _need_abc2midi()
    tunes = _tunes(_book("-n", "100", "--seed", "1", "-t", "1.3"))
    assert len(tunes) == 100
    wrong = {i: t for i, t in enumerate(tunes) if abc2midi_bar_warnings(t + "\n") != 0}
    assert not wrong, wrong


@pytest.mark.parametrize("meter", ["4/4", "6/8"])
def test_form_aabb_parts_by_tunestats_and_abc2midi(meter):
    _need_abc2midi()
    book = _book("-n", "100", "--seed", "2", "--form", "AABB", "--meter", meter, "--unit", "1/8")
    texts = model_texts_of_book(book)
    assert len(texts) == 100
    for text in texts:
        assert text.count(":|") == 2, text
        assert tune_form(text)["part_bars"] == [8, 8], text
    tunes = _tunes(book)
    assert [abc2midi_bar_warnings(t + "\n") for t in tunes] == [0] * 100
