"""Tune books -> tunes -> music21 Streams.

A tune book is split on ``X:`` lines; each tune keeps where it came from
(file, X number, first line) so every later error can name it.  Field lines
of the file header (before the first ``X:``) apply to every tune, as ABC 2.1
says, so they are copied into each tune after its ``X:`` line.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import AbcParseError, InputError

_X_LINE = re.compile(r"^X:\s*(\S*)")
_FIELD_LINE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Tune:
    """One tune of a book: its ABC text and where it came from."""

    text: str
    file: str
    x: str
    line: int
    title: str = ""
    header_lines: int = 0    # field lines of the book's header copied after the X: line

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line} X:{self.x}"


def read_text(path: str | Path) -> str:
    """Read a file as UTF-8, falling back to Latin-1 (some music21 corpus files are Latin-1)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def split_book(text: str, file: str = "<string>") -> list[Tune]:
    """Split a tune book into tunes.  Text with no ``X:`` line is one tune, numbered 1."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, ln in enumerate(lines) if _X_LINE.match(ln)]
    if not starts:
        body = "\n".join(lines).strip()
        if not body:
            return []
        # The added X:1 line is not in the file: counted as a copied line, the tune's
        # second line maps to the file's first (book_line).
        return [Tune(text="X:1\n" + body + "\n", file=file, x="1", line=1, header_lines=1,
                     title=_title(lines))]
    header = [ln for ln in lines[: starts[0]]
              if _FIELD_LINE.match(ln) and not ln.startswith(("X:", "T:"))]
    tunes = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        chunk = lines[start:end]
        while chunk and not chunk[-1].strip():
            chunk.pop()
        x = _X_LINE.match(chunk[0]).group(1) or str(k + 1)
        body = [chunk[0]] + header + chunk[1:]
        tunes.append(Tune(text="\n".join(body) + "\n", file=file, x=x,
                          line=start + 1, title=_title(chunk), header_lines=len(header)))
    return tunes


def _title(lines: list[str]) -> str:
    for ln in lines:
        if ln.startswith("T:"):
            return ln[2:].strip()
    return ""


def read_book(path: str | Path) -> list[Tune]:
    return split_book(read_text(path), file=str(path))


def book_line(x_line: int | None, tune_line: int | None, header_lines: int = 0) -> int | None:
    """The line of the book that line ``tune_line`` of a tune's text stands at.

    A tune's text is its X: line (book line ``x_line``), the ``header_lines`` field lines of
    the book's header copied after it (see split_book), then its own lines.  Without a book
    line (text given alone) the tune's own line number is the answer; a copied header line or
    an unknown line gives the X: line."""
    if tune_line is None:
        return x_line
    if x_line is None:
        return tune_line
    if tune_line <= 1 + header_lines:
        return x_line
    return x_line + tune_line - 1 - header_lines


def parse_abc(text: str, *, file: str = "<string>", x: str | None = None,
              line: int | None = None, warn=None, rebar: bool | str = "fit",
              header_lines: int = 0):
    """Read the ABC text of one tune into a music21 Score with abcgen's own reader.

    The reader (``abcgen.abc.parse``) reads ABC 2.1 as abc2midi plays it and
    ``abcgen.abc.build`` makes the Score; music21's ABC reader is not used (it
    changes the music: issue 15).  Characters it cannot read are skipped;
    their warnings (naming line and column) go to ``warn`` when given and are
    kept on the Score as ``score.abc_warnings``.  Raises AbcParseError naming
    the tune when the text has no K: field or no notes.

    Bars that do not fit the meter are re-barred (``abcgen.abc.rebar``) where
    the notes allow, so the canonical form, the engraving and the MIDI never
    need an invented meter change: ``rebar="fit"`` (the default) keeps the
    source's bars where they cannot be moved, ``rebar=True`` (the corpus form)
    raises AbcParseError saying why, ``rebar=False`` keeps every bar as written.
    """
    from .build import build_score
    from .parse import AbcSyntaxError, read_tune

    try:
        model = read_tune(text, first_line=1)
        if rebar:
            from .rebar import rebar as _rebar

            _rebar(model, strict=rebar is True)
        score = build_score(model)
    except AbcSyntaxError as e:
        raise AbcParseError(str(e), file=file, tune=x,
                            line=book_line(line, e.line, header_lines)) from None
    except Exception as e:  # a reader bug must name the tune, not end a batch
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AbcParseError(f"cannot read this tune ({type(e).__name__}: {reason})",
                            file=file, tune=x, line=line) from None
    where = f"{file}" + (f" X:{x}" if x else "")
    score.abc_warnings = [f"{where}: {w}" for w in model.warnings]
    if warn is not None:
        for w in score.abc_warnings:
            warn(w)
    if not any(True for _ in sounding_notes_iter(score)):
        raise AbcParseError("the tune has no notes", file=file, tune=x, line=line)
    return score


def parse_abc_music21(text: str, *, file: str = "<string>", x: str | None = None,
                      line: int | None = None):
    """music21's own ABC reader (kept for comparison: ``abcgen check played --music21``)."""
    import music21

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handler = music21.abcFormat.ABCHandler()
            handler.process(text)
            score = music21.stream.Score()
            music21.abcFormat.translate.abcToStreamScore(handler, inputM21=score)
    except Exception as e:  # music21 raises many unrelated exception types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AbcParseError(f"music21 cannot parse this tune ({type(e).__name__}: {reason})",
                            file=file, tune=x, line=line) from None
    if not any(True for _ in sounding_notes_iter(score)):
        raise AbcParseError("the tune has no notes", file=file, tune=x, line=line)
    return score


def parse_tune(tune: Tune, rebar: bool | str = "fit"):
    return parse_abc(tune.text, file=tune.file, x=tune.x, line=tune.line, rebar=rebar,
                     header_lines=tune.header_lines)


def sounding_notes_iter(stream):
    """Notes and chords that sound: no grace notes, no chord symbols."""
    from music21 import harmony

    for n in stream.recurse().notes:
        if isinstance(n, harmony.Harmony) or n.duration.isGrace:
            continue
        yield n
