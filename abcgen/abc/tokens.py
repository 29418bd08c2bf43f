"""Tokenizers for canonical ABC model text, and the vocabulary that numbers them.

Two levels are offered so they can be compared on the same corpus:

* ``char``: every character is a symbol.  The smallest vocabulary, but the
  model must learn to spell pitches and durations letter by letter.
* ``token``: the musically meaningful units, in the spirit of folk-rnn.  A
  whole field line (``M:6/8``, ``K:Dmix``, ``V:1``) is one symbol, as is a
  pitch with its accidental and octave marks (``^c'``), a duration (``3/2``),
  a bar, repeat or ending (``:|2``, ``[1``) and a tuplet marker (``(3:2:2``).

Both levels accept exactly the same texts: the char level runs the token
grammar too, so a text that one level rejects is never silently learnt by the
other.  The grammar is the canonical form of :mod:`abcgen.abc.writer`, kept
strict so that a writer bug or a hand-edited file shows up here, with the
symbol and its position, rather than as a strange token in the vocabulary.

Splitting never loses a character: ``"".join(split_tokens(t, level)) == t``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import AbcgenError, InputError, TokenizeError

LEVELS = ("char", "token")
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FORMAT = "abcgen-vocabulary"
FORMAT_VERSION = 1

# Only the fields the canonical writer emits.  None of them is a pitch letter,
# so a line starting with a note before a bar (``A:|``) is never a field.
_FIELD = re.compile(r"[KLMQTVX]:[^\n]*")
_INLINE_FIELD = re.compile(r"\[?[A-Za-z]:")
_PITCH = re.compile(r"(?:\^\^|\^|__|_|=)?[A-Ga-g](?:'+|,+)?")
_DURATION = re.compile(r"\d+(?:/\d+)?|/\d+")
_TUPLET = re.compile(r"\(\d+(?::\d+){0,2}")
_ENDING = r"\d+(?:[,-]\d+)*"
# Order matters: the longer readings of '|', ':' and '[' must win.
_BAR = re.compile(
    rf":\|{_ENDING}|\|{_ENDING}|\[{_ENDING}|\|\]|\|\||\[\||\|:|:\||::|\|")

# The kinds a duration or a tie may follow; anything else is a stray number.
_SOUNDS = ("pitch", "rest", "close")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _fail(text: str, pos: int, what: str, symbol: str, why: str = "") -> TokenizeError:
    line = _line_of(text, pos)
    msg = f"{what} {symbol!r} at position {pos} (line {line})" + (f": {why}" if why else "")
    return TokenizeError(msg, position=pos)


def _scan(text: str) -> list[tuple[int, str]]:
    """(start, token) pairs; a small state machine so that context errors
    (a duration after a bar, a bar inside a chord) are caught, not learnt."""
    out: list[tuple[int, str]] = []
    pos, n = 0, len(text)
    prev = "nl"            # kind of the previous token
    sound = None           # kind of the last pitch, rest or chord: ties need a note
    chord_at = None        # position of the open '[' while inside a chord
    chord_notes = 0
    while pos < n:
        c = text[pos]
        if chord_at is None and (pos == 0 or text[pos - 1] == "\n"):
            m = _FIELD.match(text, pos)
            if m:
                out.append((pos, m.group()))
                pos, prev = m.end(), "field"
                continue
        if chord_at is not None:
            m = _PITCH.match(text, pos)
            if m:
                kind, tok, sound = "pitch", m.group(), "pitch"
                chord_notes += 1
            elif c == "]" and chord_notes:
                kind, tok, chord_at, sound = "close", c, None, "close"
            elif c in "-0123456789/":
                kind, tok = None, None       # handled below with the note rules
            else:
                raise _fail(text, pos, "unexpected symbol", c,
                            f"inside the chord opened at position {chord_at}")
            if kind:
                out.append((pos, tok))
                pos, prev = pos + len(tok), kind
                continue
        if c == "\n" or c == " ":
            out.append((pos, c))
            pos, prev = pos + 1, ("nl" if c == "\n" else "space")
            continue
        m = _PITCH.match(text, pos)
        if m:
            out.append((pos, m.group()))
            pos, prev, sound = m.end(), "pitch", "pitch"
            continue
        if c in "0123456789/":
            m = _DURATION.match(text, pos)
            if m is None:
                raise _fail(text, pos, "unknown symbol", c)
            if prev not in _SOUNDS:
                raise _fail(text, pos, "unexpected duration", m.group(),
                            "a duration must follow a note, rest or chord")
            out.append((pos, m.group()))
            pos, prev = m.end(), "duration"
            continue
        if c == "-":
            if prev not in _SOUNDS + ("duration",) or sound == "rest":
                raise _fail(text, pos, "unexpected tie", c, "a tie must follow a note or chord")
            out.append((pos, c))
            pos, prev = pos + 1, "tie"
            continue
        if c == "z":
            out.append((pos, c))
            pos, prev, sound = pos + 1, "rest", "rest"
            continue
        m = _BAR.match(text, pos)
        if m:
            out.append((pos, m.group()))
            pos, prev = m.end(), "bar"
            continue
        if c == "[":
            if _INLINE_FIELD.match(text, pos + 1):
                raise _fail(text, pos, "inline field", text[pos:pos + 3],
                            "field changes go on a line of their own")
            out.append((pos, c))
            chord_at, chord_notes = pos, 0
            pos, prev = pos + 1, "open"
            continue
        m = _TUPLET.match(text, pos)
        if m:
            out.append((pos, m.group()))
            pos, prev = m.end(), "tuplet"
            continue
        if _INLINE_FIELD.match(text, pos):
            at_start = pos == 0 or text[pos - 1] == "\n"
            raise _fail(text, pos, "field", text[pos:pos + 2],
                        "not a field of canonical model text" if at_start
                        else "a field line must start a line")
        raise _fail(text, pos, "unknown symbol", c)
    if chord_at is not None:
        raise _fail(text, chord_at, "unclosed chord", "[")
    return out


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise InputError(f"unknown tokenizer level {level!r}; choose one of {', '.join(LEVELS)}")


def _spans(text: str, level: str) -> list[tuple[int, str]]:
    _check_level(level)
    spans = _scan(text)    # run at both levels: they must reject the same texts
    if level == "char":
        return list(enumerate(text))
    return spans


def split_tokens(text: str, level: str) -> list[str]:
    """The symbols of ``text`` at ``level``; raises TokenizeError off the grammar."""
    return [tok for _, tok in _spans(text, level)]


def count_tokens(text: str, level: str) -> int:
    return len(_spans(text, level))


def _problem(symbols: Sequence, level) -> str | None:
    """Why a symbol list cannot be a vocabulary, or None: shared by the
    constructor and load() so a hand-edited file fails as early as a bug."""
    if level not in LEVELS:
        return f"unknown level {level!r}"
    if not isinstance(symbols, (list, tuple)) or not all(isinstance(s, str) for s in symbols):
        return "symbols must be a list of strings"
    if tuple(symbols[:len(SPECIALS)]) != SPECIALS:
        return f"the first symbols must be {', '.join(SPECIALS)}"
    if len(set(symbols)) != len(symbols):
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        return f"repeated symbols {dup[:5]!r}"
    if any(s == "" for s in symbols):
        return "empty symbol"
    return None


class Vocabulary:
    """Symbol <-> id for one level.  The ids are the model's input and output
    indices, so a vocabulary is saved next to every run and compared by
    fingerprint before a checkpoint is reused."""

    def __init__(self, symbols: Sequence[str], level: str):
        why = _problem(symbols, level)
        if why:
            raise InputError(f"bad vocabulary: {why}")
        self._symbols = tuple(symbols)
        self.level = level
        self._ids = {s: i for i, s in enumerate(self._symbols)}

    @classmethod
    def build(cls, texts: Iterable[str], level: str) -> "Vocabulary":
        """Sorted symbols, so the same corpus always gives the same ids."""
        _check_level(level)
        seen: set[str] = set()
        for t in texts:
            seen.update(split_tokens(t, level))
        return cls(SPECIALS + tuple(sorted(seen)), level)

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.level == other.level and self._symbols == other._symbols

    def __hash__(self) -> int:
        return hash((self.level, self._symbols))

    def __repr__(self) -> str:
        return f"Vocabulary(level={self.level!r}, {len(self)} symbols)"

    def id_of(self, symbol: str) -> int:
        try:
            return self._ids[symbol]
        except KeyError:
            raise TokenizeError(f"symbol {symbol!r} is not in the vocabulary "
                                f"({self.level} level, {len(self)} symbols)") from None

    def fingerprint(self) -> str:
        """Independent of file layout and Python version, so run directories
        can store it and compare it later."""
        blob = json.dumps({"level": self.level, "symbols": list(self._symbols)},
                          ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("ascii")).hexdigest()

    def encode(self, text: str, add_markers: bool = True) -> list[int]:
        ids = [BOS_ID] if add_markers else []
        for pos, tok in _spans(text, self.level):
            i = self._ids.get(tok)
            if i is None or i < len(SPECIALS):
                raise TokenizeError(
                    f"symbol {tok!r} at position {pos} is not in the vocabulary "
                    f"({self.level} level, {len(self)} symbols)",
                    position=pos)
            ids.append(i)
        if add_markers:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Markers and padding carry no text, so they are dropped wherever they are."""
        out = []
        for k, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < len(self._symbols):
                raise TokenizeError(f"id {i} at position {k} is outside the vocabulary "
                                    f"({self.level} level, {len(self)} symbols)", position=k)
            if i >= len(SPECIALS):
                out.append(self._symbols[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "level": self.level,
                "fingerprint": self.fingerprint(), "symbols": list(self._symbols)}

    def save(self, path: str | Path) -> None:
        """Write to a temp file beside ``path`` and rename it over, so a crash
        never leaves a half-written vocabulary that a later run would trust."""
        path = Path(path)
        data = json.dumps(self.to_dict(), indent=1, ensure_ascii=True) + "\n"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.",
                                       suffix=".tmp")
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            raise AbcgenError(f"cannot write vocabulary: {e.strerror or e}", file=str(path)) from e
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)

        def bad(why: str) -> InputError:
            return InputError(f"not a usable vocabulary file: {why}", file=str(path))

        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot read vocabulary: {e.strerror or e}", file=str(path)) from e
        except UnicodeDecodeError as e:
            raise bad("not UTF-8 text") from e
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise bad(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"missing format tag {FORMAT!r}")
        if d.get("version") != FORMAT_VERSION:
            raise bad(f"format version {d.get('version')!r}, expected {FORMAT_VERSION}")
        why = _problem(d.get("symbols"), d.get("level"))
        if why:
            raise bad(why)
        vocab = cls(d["symbols"], d["level"])
        if "fingerprint" in d and d["fingerprint"] != vocab.fingerprint():
            raise bad("fingerprint does not match the symbols (edited by hand?)")
        return vocab
