"""ABC 2.1 text -> a small model of what is played, read the way abc2midi plays it.

This is abcgen's own ABC reader (music21's reader changes the music: see
issue 15).  ``read_tune`` turns the text of one tune into a ``TuneModel``:
header values and, per voice, a list of ``Bar``s holding ``Event``s (notes,
chords, rests) with exact pitches and lengths.  ``abcgen.abc.build`` turns the
model into a music21 Score.

Rules, as abc2midi (abcMIDI 4.x) plays them:

* Key signatures: ``K:`` tonic with any mode (``maj m min ion aeo dor phr lyd
  mix loc``, first three letters, any case) and explicit accidentals
  (``K:D ^g``); ``K:none`` and an empty ``K:`` have no signature; ``K:HP`` and
  ``K:Hp`` (Highland pipes) play F sharp, C sharp and G natural.
* An accidental holds for the same letter in every octave to the end of the
  bar; a note tied to the next note gives it its pitch (``^c-|c`` is one C
  sharp held), but not to the notes after it.
* ``L:`` defaults to 1/16 when ``M:`` is under 3/4, else 1/8 (``M:none``: 1/8).
* Durations ``A2 A/2 A/ A// A3/2``; broken rhythm ``> >> >>> < << <<<``
  between two notes written with the same length (else, as abc2midi, neither
  changes);
  tuplets ``(p:q:r`` with q's standard default (2 for 3, 6; 3 for 2, 4, 8;
  for 5, 7, 9: 3 when the meter's numerator is divisible by 3, 3/4 included
  as abc2midi has it, else 2) and r = p.
* Chords ``[CEG]2``: the first note's length times the length after ``]``.
* Ties ``-`` on notes and chords (and single notes in a chord).
* Bar lines ``|  ||  |]  [|  |:  :|  ::  :||:  :|:``; endings ``|1 [1 :|2 |2 [2
  |1,2 [1-3``.
* Field lines ``M: K: L: Q: V:`` in the body and inline fields ``[M:..]
  [K:..] [L:..] [Q:..] [V:..]``; other fields, ``%%`` directives, ``w:``
  lyrics and ``%`` comments are skipped; a ``\\`` at the end of a line joins it
  to the next; an empty line ends the tune (what follows is free text).
* Grace notes ``{..}`` are dropped (abc2midi plays them by stealing time
  from the next note; abcgen keeps what the tune's rhythm says).  Chord symbols
  and annotations ``"..."``, decorations ``!..!``, ``+..+`` and the shorthands
  ``. ~ H L M O P S T u v``, slurs, ``y``, backquotes and ``$`` are skipped.
* Voices: every ``V:`` id becomes a part, in order of first appearance.
  Voice overlay ``&`` is not read: the rest of that bar's overlay is skipped
  with a warning.
* Any other character is skipped with a warning naming its line and column;
  it never becomes a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

_STEPS = "CDEFGAB"
_SEMI = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHARP_ORDER = "FCGDAEB"
_MAJOR_SHARPS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F#": 6, "C#": 7,
                 "F": -1, "Bb": -2, "Eb": -3, "Ab": -4, "Db": -5, "Gb": -6, "Cb": -7}
_MODE_SHIFT = {"maj": 0, "ion": 0, "mix": -1, "dor": -2, "aeo": -3, "min": -3, "m": -3,
               "phr": -4, "loc": -5, "lyd": 1}
_MODE_NAME = {"maj": "major", "ion": "ionian", "mix": "mixolydian", "dor": "dorian",
              "aeo": "aeolian", "min": "minor", "m": "minor", "phr": "phrygian",
              "loc": "locrian", "lyd": "lydian"}
_DECO_SHORT = set(".~HLMOPSTuv")
_SILENT = set(" \t`$y")
_FIELD_LINE = re.compile(r"^([A-Za-z]):(?![|:])")
_DUR = re.compile(r"(\d*)((?:/\d*)*)")
_TUPLET = re.compile(r"\((\d+)(?::(\d*))?(?::(\d*))?")
_BAR = re.compile(r"(:*)(\[?\|+\]?)?(:*)")
_ENDING = re.compile(r"\[?(\d+(?:[-,]\d+)*)")


class AbcSyntaxError(ValueError):
    """A tune that cannot be read at all (no K:, no notes...); ``line``: the line of the tune's
    text where it stops (1 = its X: line), when there is one."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


@dataclass
class Key:
    """A key: the signature's alterations by letter, and how to name it."""

    alter: dict
    tonic: str | None = None     # 'F#', 'Bb'; None for K:none
    mode: str = "major"
    sharps: int = 0              # of the named key (explicit accidentals aside)


@dataclass
class Meter:
    num: int
    den: int

    @property
    def length(self) -> Fraction:
        return Fraction(self.num, self.den)

    @property
    def compound(self) -> bool:
        """For the (5 (7 (9 default: abc2midi counts any numerator divisible by 3 (3/4 too)."""
        return self.num % 3 == 0


@dataclass
class Tone:
    step: str
    octave: int       # music21 / scientific octave: C4 is middle C ('C' in ABC)
    alter: int
    tie: bool = False

    @property
    def midi(self) -> int:
        return 12 * (self.octave + 1) + _SEMI[self.step] + self.alter


@dataclass
class Event:
    """A note (one tone), chord (several) or rest (none); length in whole notes."""

    tones: list
    length: Fraction
    tuplet: tuple | None = None    # (p, q): the written length is length * p / q
    line: int = 0
    written: Fraction | None = None  # the length as written (before broken rhythm and tuplets)

    @property
    def is_rest(self) -> bool:
        return not self.tones


@dataclass
class Bar:
    events: list = field(default_factory=list)
    start_repeat: bool = False
    end_repeat: bool = False
    close: str = "|"               # '|', '||', '|]', '[|'
    ending: str | None = None      # '1', '2', '1,2' when an ending starts here
    part: str | None = None        # a part label (P:) starts here
    meter: Meter | None = None     # a meter change at the start of this bar
    meter_none: bool = False
    key: Key | None = None         # a key change at (or in) this bar
    line: int = 0


@dataclass
class TuneModel:
    title: str = ""
    meter: Meter | None = None
    key: Key = field(default_factory=lambda: Key({}, "C", "major", 0))
    tempo: tuple | None = None     # (beat length in whole notes, per minute)
    voices: dict = field(default_factory=dict)   # id -> list[Bar]
    warnings: list = field(default_factory=list)
    parts: str | None = None       # the header's P: play order ('ABA', '(AB)2C')


# --------------------------------------------------------------------------
# fields


def parse_meter(v: str) -> Meter | None | str:
    """M: value -> Meter; 'none' for M:none (or a value without a meter)."""
    v = v.split("%")[0].strip()
    if not v or v.lower() == "none":
        return "none"
    if v == "C":
        return Meter(4, 4)
    if v == "C|":
        return Meter(2, 2)
    m = re.match(r"\(?([\d+ ]+)\)?\s*/\s*(\d+)", v)
    if not m:
        return None
    try:
        num = sum(int(x) for x in m.group(1).replace(" ", "+").split("+") if x)
        den = int(m.group(2))
    except ValueError:
        return None
    if num <= 0 or den <= 0:
        return None
    return Meter(num, den)


def parse_length(v: str) -> Fraction | None:
    m = re.match(r"\s*(\d+)\s*/\s*(\d+)", v)
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = re.match(r"\s*1\s*$", v)
    return Fraction(1) if m else None


def parse_tempo(v: str, unit: Fraction):
    v = re.sub(r'"[^"]*"', "", v).strip()
    m = re.search(r"(\d+)\s*/\s*(\d+)\s*=\s*(\d+(?:\.\d+)?)", v)
    if m and int(m.group(2)) > 0:
        return Fraction(int(m.group(1)), int(m.group(2))), float(m.group(3))
    m = re.match(r"^(?:C\s*=\s*)?(\d+(?:\.\d+)?)$", v)
    if m:
        return unit, float(m.group(1))
    return None


def parse_key(v: str) -> Key:
    v = v.split("%")[0].strip()
    # drop clef and other key=value settings
    v = re.sub(r"\b\w+\s*=\s*\S+", "", v).strip()
    if not v or v.lower() == "none":
        return Key({}, None, "major", 0)
    if v in ("HP", "Hp") or v.startswith(("HP ", "Hp ")):
        return Key({"F": 1, "C": 1}, "D", "major", 2)
    m = re.match(r"([A-Ga-g])([#b]?)\s*([A-Za-z]*)(.*)$", v)
    if not m:
        # explicit accidentals only ('K:^f _b'): C plus them
        tonic, acc, mode_word, rest = "C", "", "", v
    else:
        tonic, acc, mode_word, rest = m.group(1).upper(), m.group(2), m.group(3), m.group(4)
    mode_key = mode_word[:3].lower() if mode_word else "maj"
    if mode_key not in _MODE_SHIFT:
        mode_key = "m" if mode_word.lower().startswith("m") and len(mode_word) == 1 else "maj"
        if mode_word and mode_word[:1].lower() != "m":
            rest = mode_word + rest   # not a mode: perhaps 'exp' or similar, ignored
    name = tonic + acc
    base = _MAJOR_SHARPS.get(name)
    if base is None:
        base = {"G#": 8, "D#": 9, "A#": 10, "E#": 11, "B#": 12, "Fb": -8}.get(name, 0)
    sharps = base + _MODE_SHIFT[mode_key]
    alter = _alter_of_sharps(sharps)
    for am in re.finditer(r"(\^\^|\^|__|_|=)([A-Ga-g])", rest):
        alter[am.group(2).upper()] = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}[am.group(1)]
    alter = {k: a for k, a in alter.items() if a}
    return Key(alter, name, _MODE_NAME[mode_key], sharps)


def _alter_of_sharps(sharps: int) -> dict:
    out = {}
    if sharps > 0:
        for i in range(sharps):
            s = _SHARP_ORDER[i % 7]
            out[s] = out.get(s, 0) + 1
    elif sharps < 0:
        for i in range(-sharps):
            s = _SHARP_ORDER[::-1][i % 7]
            out[s] = out.get(s, 0) - 1
    return out


def default_unit(meter: Meter | None) -> Fraction:
    if meter is None:
        return Fraction(1, 8)
    return Fraction(1, 16) if meter.length < Fraction(3, 4) else Fraction(1, 8)


# --------------------------------------------------------------------------
# the reader


class _Voice:
    def __init__(self, meter, key, unit):
        self.meter = meter
        self.key = key
        self.unit = unit
        self.bars: list[Bar] = [Bar()]
        self.bar_acc: dict = {}
        self.tied: dict = {}          # (step, octave) -> alter of a note tied into the next
        self.tuplet = None            # [p, q, notes left]
        self.broken: Fraction | None = None
        self.last: Event | None = None

    @property
    def bar(self) -> Bar:
        return self.bars[-1]


class _Reader:
    def __init__(self, text: str, first_line: int = 1):
        self.text = text
        self.first_line = first_line
        self.model = TuneModel()
        self.voices: dict = {}
        self.cur: _Voice | None = None
        self.unit: Fraction | None = None
        self.meter_none = False

    def warn(self, line: int, col: int, msg: str):
        self.model.warnings.append(f"tune line {line + self.first_line - 1}, column {col + 1}: {msg}")

    # -- header ----------------------------------------------------------
    def read(self) -> TuneModel:
        lines = self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body_at = None
        header_voice = None
        for i, raw in enumerate(lines):
            ln = raw.split("%")[0].rstrip() if not raw.startswith("%%") else ""
            m = _FIELD_LINE.match(ln)
            if not m:
                continue
            f, v = m.group(1), ln[2:].strip()
            if f == "T" and not self.model.title:
                self.model.title = v
            elif f == "M":
                mt = parse_meter(v)
                if mt == "none":
                    self.model.meter, self.meter_none = None, True
                elif mt is not None:
                    self.model.meter = mt
            elif f == "L":
                u = parse_length(v)
                if u is None:
                    raise AbcSyntaxError(f"L:{v} is not a note length", line=i + 1)
                self.unit = u
            elif f == "Q":
                self.model.tempo = v          # resolved once L: is known
            elif f == "P":
                self.model.parts = v
            elif f == "V" and header_voice is None:
                header_voice = v.split()[0] if v.split() else "1"
            elif f == "K":
                self.model.key = parse_key(v)
                body_at = i + 1
                break
        if body_at is None:
            music = [i for i, raw in enumerate(lines)
                     if raw.strip() and not raw.startswith("%") and not _FIELD_LINE.match(raw)]
            if music:
                raise AbcSyntaxError(f"the tune has no K: field before its music (tune line {music[0] + 1})")
            return self.model      # a header and nothing else: no notes
        if self.unit is None:
            self.unit = default_unit(self.model.meter)
        if isinstance(self.model.tempo, str):
            self.model.tempo = parse_tempo(self.model.tempo, self.unit)
        self._switch_voice(header_voice or "1")
        self._body(lines, body_at)
        self.model.voices = {vid: _play_parts(v.bars, self.model.parts, self.model.meter,
                                              self.model.key)
                             for vid, v in self.voices.items()}
        return self.model

    def _switch_voice(self, vid: str):
        if vid not in self.voices:
            base = self.cur
            if base is None:
                self.voices[vid] = _Voice(self.model.meter, self.model.key, self.unit)
            else:
                self.voices[vid] = _Voice(self.model.meter, self.model.key, self.unit)
        self.cur = self.voices[vid]

    # -- body ------------------------------------------------------------
    def _body(self, lines: list, start: int):
        i = start
        pending = ""
        pending_line = None
        while i < len(lines):
            raw = lines[i]
            i += 1
            if not raw.strip():
                break           # an empty line ends the tune (ABC 2.1; abc2midi too)
            if raw.startswith("%"):
                continue
            ln = _strip_comment(raw)
            m = _FIELD_LINE.match(ln)
            if m and not pending:
                self._field(m.group(1), ln[2:].strip(), i, 0, inline=False)
                continue
            if ln.rstrip().endswith("\\"):
                if pending_line is None:
                    pending_line = i
                pending += ln.rstrip()[:-1]
                continue
            if pending:
                self._music(pending + ln, pending_line)
                pending, pending_line = "", None
            else:
                self._music(ln, i)
        if pending:
            self._music(pending, pending_line)
        for v in self.voices.values():
            if v.bars and not v.bar.events and v.bar.meter is None and v.bar.key is None \
                    and len(v.bars) > 1:
                v.bars.pop()

    def _field(self, f: str, v: str, line: int, col: int, inline: bool):
        cur = self.cur
        if f == "M":
            mt = parse_meter(v)
            if mt is None:
                self.warn(line, col, f"M:{v} is not a meter; ignored")
                return
            if mt == "none":
                cur.meter = None
                cur.bar.meter_none = True
                cur.bar.meter = None
            else:
                cur.meter = mt
                cur.bar.meter = mt
                cur.bar.meter_none = False
            if not inline:
                pass
        elif f == "L":
            u = parse_length(v)
            if u is None:
                self.warn(line, col, f"L:{v} is not a length; ignored")
            else:
                cur.unit = u
        elif f == "K":
            k = parse_key(v)
            cur.key = k
            cur.bar.key = k
            cur.bar_acc = {}
        elif f == "V":
            vid = v.split()[0] if v.split() else "1"
            self._switch_voice(vid)
        elif f == "Q":
            if self.model.tempo is None:
                self.model.tempo = parse_tempo(v, cur.unit)
        elif f == "P":
            label = v.strip()[:1]
            if label.isalpha():
                if cur.bar.events:
                    self._close("|", False, line)
                cur.bar.part = label
                # the meter and key the part starts in, for when it is played again
                cur.bar.part_state = (cur.meter, cur.key)
        # other fields (T:, P:, W:, w:, N:, ...) do not change what is played

    def _music(self, s: str, line: int):
        i, n = 0, len(s)
        cur = self.cur
        while i < n:
            cur = self.cur
            c = s[i]
            if c in _SILENT:
                i += 1
            elif c == '"':
                j = s.find('"', i + 1)
                i = n if j < 0 else j + 1
            elif c == "!" or c == "+":
                j = s.find(c, i + 1)
                if j < 0:
                    i += 1          # an old line-break '!' or stray '+'
                else:
                    i = j + 1
            elif c == "{":
                j = s.find("}", i + 1)
                i = n if j < 0 else j + 1
            elif c in _DECO_SHORT:
                i += 1
            elif c == "(":
                m = _TUPLET.match(s, i)
                if m:
                    p = int(m.group(1))
                    q = int(m.group(2)) if m.group(2) else None
                    r = int(m.group(3)) if m.group(3) else None
                    if p >= 2:
                        if q is None:
                            q = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(
                                p, 3 if (cur.meter is not None and cur.meter.compound) else 2)
                        cur.tuplet = [p, q, r or p]
                    else:
                        self.warn(line, i, f"tuplet ({p} ignored")
                    i = m.end()
                else:
                    i += 1          # a slur
            elif c == ")":
                i += 1
            elif c == "[" and i + 2 < n and s[i + 1].isalpha() and s[i + 2] == ":":
                j = s.find("]", i)
                if j < 0:
                    j = n
                self._field(s[i + 1], s[i + 3:j].strip(), line, i, inline=True)
                i = j + 1
            elif c == "[" and i + 1 < n and s[i + 1].isdigit():
                m = _ENDING.match(s, i)
                self._ending(m.group(1), line)
                i = m.end()
            elif c in "|:" or (c == "[" and i + 1 < n and s[i + 1] == "|"):
                i = self._bar(s, i, line)
            elif c == "[":
                i = self._chord(s, i, line)
            elif c in "^_=" or c.upper() in _STEPS and c.isalpha() and c in "ABCDEFGabcdefg":
                i = self._note(s, i, line)
            elif c in "zx":
                m = _DUR.match(s, i + 1)
                base = self._len(m, cur)
                self._add(Event([], base * self._broken_next(base), line=line, written=base))
                i = m.end()
            elif c in "ZX":
                m = _DUR.match(s, i + 1)
                nbars = int(m.group(1)) if m.group(1) else 1
                length = cur.meter.length if cur.meter is not None else cur.unit * 8
                for k in range(nbars):
                    self._add(Event([], length, line=line))
                    if k < nbars - 1:
                        self._close("|", False, line)
                i = m.end()
            elif c in "<>":
                j = i
                while j < n and s[j] == c:
                    j += 1
                k = j - i
                short = Fraction(1, 2 ** k)
                long_ = 2 - short
                first, second = (long_, short) if c == ">" else (short, long_)
                if cur.last is not None:
                    cur.broken = (cur.last, first, second)
                else:
                    self.warn(line, i, f"broken rhythm '{s[i:j]}' with no note before it")
                i = j
            elif c == "-":
                i += 1               # a tie with nothing to tie (handled after notes)
            elif c == "&":
                self.warn(line, i, "voice overlay '&' is not read; the rest of the overlay skipped")
                j = i
                while j < n and s[j] not in "|":
                    j += 1
                i = j
            elif c == "\\":
                i += 1
            else:
                self.warn(line, i, f"cannot read {c!r}; skipped")
                i += 1

    # -- pieces ----------------------------------------------------------
    def _len(self, m, cur) -> Fraction:
        num = int(m.group(1)) if m.group(1) else 1
        r = Fraction(num)
        for part in m.group(2).split("/")[1:]:
            r /= int(part) if part else 2
        return cur.unit * r

    def _broken_next(self, base: Fraction) -> Fraction:
        """The broken-rhythm factor of the next note (and apply the first note's).

        As abc2midi: only between two notes written with the same length; else both
        keep their written lengths.
        """
        b = self.cur.broken
        self.cur.broken = None
        if b is None:
            return Fraction(1)
        prev, first, second = b
        if prev.written != base:
            return Fraction(1)
        prev.length *= first
        return second

    def _tone(self, s: str, i: int, line: int):
        """(Tone, next index) for accidental + letter + octave marks at s[i], or (None, i+1)."""
        cur = self.cur
        j = i
        acc = None
        while j < len(s) and s[j] in "^_=":
            j += 1
        if j > i:
            a = s[i:j]
            acc = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}.get(a)
            if acc is None:
                self.warn(line, i, f"cannot read accidental {a!r}; skipped")
        if j >= len(s) or s[j] not in "ABCDEFGabcdefg":
            self.warn(line, i, f"cannot read {s[i:j + 1]!r}; skipped")
            return None, max(j, i + 1)
        letter = s[j]
        step = letter.upper()
        octave = 4 if letter.isupper() else 5
        j += 1
        while j < len(s) and s[j] in ",'":
            octave += 1 if s[j] == "'" else -1
            j += 1
        if acc is not None:
            alter = acc
            cur.bar_acc[step] = acc
        elif (step, octave) in cur.tied:
            alter = cur.tied[(step, octave)]
        else:
            alter = cur.bar_acc.get(step, cur.key.alter.get(step, 0))
        return Tone(step, octave, alter), j

    def _note(self, s: str, i: int, line: int) -> int:
        tone, j = self._tone(s, i, line)
        if tone is None:
            return j
        m = _DUR.match(s, j)
        length = self._len(m, self.cur)
        j = m.end()
        if j < len(s) and s[j] == "-":
            tone.tie = True
            j += 1
        self._add(Event([tone], length * self._broken_next(length), line=line, written=length))
        return j

    def _chord(self, s: str, i: int, line: int) -> int:
        if "]" not in s[i:]:
            raise AbcSyntaxError(f"the chord at column {i + 1} is not closed with ']'",
                                 line=line + self.first_line - 1)
        j = i + 1
        tones, first_len = [], None
        while j < len(s) and s[j] != "]":
            c = s[j]
            if c in "^_=ABCDEFGabcdefg":
                tone, j = self._tone(s, j, line)
                if tone is None:
                    continue
                m = _DUR.match(s, j)
                if first_len is None:
                    first_len = self._len(m, self.cur) / self.cur.unit
                j = m.end()
                if j < len(s) and s[j] == "-":
                    tone.tie = True
                    j += 1
                tones.append(tone)
            elif c == '"':
                k = s.find('"', j + 1)
                j = len(s) if k < 0 else k + 1
            elif c == "!":
                k = s.find("!", j + 1)
                j = j + 1 if k < 0 else k + 1
            elif c in _DECO_SHORT or c in " ()-":
                j += 1
            else:
                self.warn(line, j, f"cannot read {c!r} in a chord; skipped")
                j += 1
        j += 1
        m = _DUR.match(s, j)
        outer = self._len(m, self.cur)
        j = m.end()
        if j < len(s) and s[j] == "-":
            for t in tones:
                t.tie = True
            j += 1
        if not tones:
            self.warn(line, i, "empty chord; skipped")
            return j
        uniq = tones    # a pitch written twice sounds twice, as in abc2midi
        base = outer * (first_len or 1)
        self._add(Event(uniq, base * self._broken_next(base), line=line, written=base))
        return j

    def _add(self, ev: Event):
        cur = self.cur
        if cur.tuplet is not None:
            p, q, left = cur.tuplet
            ev.tuplet = (p, q)
            ev.length = ev.length * q / p
            left -= 1
            cur.tuplet = None if left <= 0 else [p, q, left]
        cur.tied = {(t.step, t.octave): t.alter for t in ev.tones if t.tie}
        cur.bar.events.append(ev)
        if not cur.bar.line:
            cur.bar.line = ev.line
        cur.last = ev

    def _ending(self, num: str, line: int):
        cur = self.cur
        if cur.bar.events:
            self._close("|", False, line)
        cur.bar.ending = num

    def _close(self, kind: str, end_repeat: bool, line: int):
        """End the current bar with a bar line (a bar with nothing in it is not a bar)."""
        cur = self.cur
        b = cur.bar
        if not b.events:
            # a bar line right after another (or at the start): its marks join the bar
            # before, where there is one
            if len(cur.bars) > 1:
                prev = cur.bars[-2]
                if end_repeat:
                    prev.end_repeat = True
                if kind != "|":
                    prev.close = kind
            return
        b.end_repeat = b.end_repeat or end_repeat
        b.close = kind
        cur.bars.append(Bar())
        cur.bar_acc = {}
        cur.broken = None

    def _bar(self, s: str, i: int, line: int) -> int:
        m = _BAR.match(s, i)
        left, mid, right = m.group(1), m.group(2) or "", m.group(3)
        j = m.end()
        if mid.endswith("]") and right and j < len(s) and s[j] in "|[":
            # '[|]:|': the colons open the next bar line (':|'), not a start repeat
            j -= len(right)
            right = ""
        if not mid and len(left) < 2:
            self.warn(line, i, "cannot read ':'; skipped")
            return i + 1
        if not mid:
            # '::' with no bar: end and start repeat together
            left, right = ":", ":"
        kind = "|"
        if mid in ("||",):
            kind = "||"
        elif mid.endswith("]") and mid.startswith("|"):
            kind = "|]"
        elif mid.startswith("["):
            kind = "[|"
        self._close(kind, bool(left), line)
        cur = self.cur
        if right:
            cur.bar.start_repeat = True
        e = _ENDING.match(s, j) if j < len(s) and (s[j].isdigit() or
                                                   (s[j] == "[" and j + 1 < len(s) and s[j + 1].isdigit())) else None
        if e:
            cur.bar.ending = e.group(1)
            j = e.end()
        return j


def _expand_order(spec: str) -> list:
    """'ABA' -> [A, B, A]; '(AB)2C' -> [A, B, A, B, C]; 'A2B' -> [A, A, B]; dots and spaces ignored."""
    pos = 0

    def seq():
        nonlocal pos
        out = []
        while pos < len(spec):
            c = spec[pos]
            if c == "(":
                pos += 1
                group = seq()
                pos += 1  # ')'
                out.append([lb for g in group for lb in g])
            elif c == ")":
                return out
            elif c.isalpha():
                out.append([c])
                pos += 1
            elif c.isdigit():
                j = pos
                while j < len(spec) and spec[j].isdigit():
                    j += 1
                n = int(spec[pos:j])
                if out:
                    out[-1] = out[-1] * max(1, min(n, 16))
                pos = j
            else:
                pos += 1
        return out

    flat = []
    for g in seq():
        flat.extend(g)
    return flat


def _play_parts(bars: list, order: str | None, meter, key) -> list:
    """The bars in the order the header's P: field plays the parts (as abc2midi does)."""
    import copy

    if not order:
        return bars
    labels = _expand_order(order.split("%")[0])
    starts = [i for i, b in enumerate(bars) if b.part]
    if not labels or not starts:
        return bars
    sections: dict = {}
    for k, i in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(bars)
        sections.setdefault(bars[i].part, bars[i:end])
    if any(lb not in sections for lb in labels):
        return bars
    out = list(bars[:starts[0]])
    for lb in labels:
        sec = [copy.copy(b) for b in sections[lb]]
        m, k = getattr(sec[0], "part_state", (meter, key))
        if out:
            if sec[0].meter is None and m is not None:
                sec[0].meter = m
            if sec[0].key is None:
                sec[0].key = k
        out.extend(sec)
    return out


def _strip_comment(ln: str) -> str:
    out, in_q = [], False
    for k, c in enumerate(ln):
        if c == '"':
            in_q = not in_q
        elif c == "%" and not in_q and (k == 0 or ln[k - 1] != "\\"):
            break
        out.append(c)
    return "".join(out)


def read_tune(text: str, first_line: int = 1) -> TuneModel:
    """The model of one tune's ABC text (see the module doc)."""
    return _Reader(text, first_line).read()
