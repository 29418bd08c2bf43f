"""The canonical ABC writer: music21 Score or Part -> ABC 2.1 text.

abcgen reads ABC itself (``abcgen.abc.parse``); music21 cannot write it.  This writer gives every Stream one
spelling and one layout, so the model never spends capacity on variants and
``parse(write(parse(abc)))`` can be checked against ``parse(abc)``.

The canonical form, rule by rule:

* Header, in this order: ``X:``, ``T:`` (when the Stream has a title), ``M:``
  (numeric, ``M:4/4`` never ``M:C``; ``M:none`` without a meter), ``L:``,
  ``Q:1/4=120`` (when the Stream has a tempo), ``K:`` with its mode always
  spelled (``K:Gmaj``, ``K:Emin``, ``K:Ador``, ``K:Dmix``).
* ``L:`` is chosen per tune: of 1/8, 1/16 and 1/4, the unit that needs the
  fewest duration characters over the whole tune; ties go to 1/8, then 1/16.
  So jigs and reels come out in ``L:1/8`` as people write them by hand.
* Durations relative to ``L:``: nothing for 1, ``2``, ``3/2``, ``/2``, ``/4``.
* Pitches keep music21's spelling.  An accidental is written on every note
  whose alteration differs from the key signature, and a natural (or other
  accidental) wherever an earlier accidental in the bar would otherwise carry
  over.  This reads the same under ABC 2.1 (accidentals carry to the end of
  the bar), abc2midi, abcgen's reader, and readers that carry none.  A note
  tied over a bar line gets its accidental again in the new bar.
* Ties ``-``; tuplets ``(3`` (and ``(2``, ``(4``) when the group is the plain
  one, else ``(p:q:r``; rests ``z``; chords ``[CEG]2`` with the duration after
  the bracket and the notes from low to high.  A tied chord is written
  ``[CEG]2-`` as ABC 2.1 says, though music21 10 reads no tie on a chord.
* Grace notes are dropped, as are chord symbols, decorations, slurs and
  lyrics: the canonical form keeps what sounds.
* Bars: ``|``, ``||``, ``|]``, ``[|``, repeats ``|:``, ``:|`` and ``::`` (end
  and start together; music21 misreads ``:|:``; ``:||:`` after a note letter
  in capitals, since music21 reads ``G::`` as a field ``G:``), endings ``|1``,
  ``:|2`` (``[2`` at the start of a line).
* Spacing: no spaces except one before a note (or tuplet group) that starts on
  a beat of the meter, so beams follow the beat (``ABc def`` in 6/8).
* Lines: four bars to a line (a pickup does not count).  Meter and key
  changes, written only where the Stream has one (abcgen's reader puts one
  only where the source writes it), go on a line of their own (``M:3/4``,
  ``K:Dmaj``) at the start of the bar, which every reader reads right.
* Several parts are written as voices: ``V:1``, then that voice's lines, then
  ``V:2``, and so on.

The same Stream always gives byte-identical text.
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import WriterError

MODE_ABBR = {
    "major": "maj", "minor": "min", "dorian": "dor", "mixolydian": "mix",
    "lydian": "lyd", "phrygian": "phr", "locrian": "loc", "aeolian": "aeo",
    "ionian": "ion",
}
UNIT_CHOICES = (Fraction(1, 8), Fraction(1, 16), Fraction(1, 4))
BARS_PER_LINE = 4
_ACC = {1: "^", 2: "^^", -1: "_", -2: "__", 0: "="}
_DEFAULT_Q = {2: 3, 3: 2, 4: 3}


def frac(x) -> Fraction:
    """A music21 offset or quarterLength as an exact Fraction."""
    if isinstance(x, Fraction):
        return x
    return Fraction(x).limit_denominator(100000)


def duration_str(r: Fraction) -> str:
    """A length in units of L: as ABC writes it: '', '2', '3/2', '/2'."""
    if r <= 0:
        raise WriterError(f"non-positive duration {r}")
    if r == 1:
        return ""
    if r.denominator == 1:
        return str(r.numerator)
    if r.numerator == 1:
        return f"/{r.denominator}"
    return f"{r.numerator}/{r.denominator}"


def note_letter(step: str, octave: int) -> str:
    if octave >= 5:
        return step.lower() + "'" * (octave - 5)
    return step.upper() + "," * (4 - octave)


def key_str(k) -> str:
    """K: value for a music21 Key or KeySignature, mode always spelled."""
    from music21 import key as m21key

    if k is None:
        return "Cmaj"
    if not isinstance(k, m21key.Key):
        k = k.asKey("major")
    mode = MODE_ABBR.get(k.mode)
    if mode is None:
        k = m21key.KeySignature(k.sharps).asKey("major")
        mode = "maj"
    return k.tonic.name.replace("-", "b") + mode


def meter_str(ts) -> str:
    if ts is None:
        return "none"
    return ts.ratioString


def tempo_str(mm) -> str | None:
    if mm is None or mm.number is None:
        return None
    beat = frac(mm.referent.quarterLength) / 4
    num = mm.number
    num = int(num) if float(num).is_integer() else num
    return f"{beat.numerator}/{beat.denominator}={num}"


def model_text(abc: str) -> str:
    """A canonical tune as the model sees it: the header without X:, T: and Q:."""
    lines = abc.rstrip("\n").split("\n")
    out, in_header = [], True
    for ln in lines:
        if in_header and ln[:2] in ("X:", "T:", "Q:"):
            continue
        if ln.startswith("K:"):
            in_header = False
        out.append(ln)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Stream inspection


def _parts(stream):
    from music21 import stream as m21stream

    if isinstance(stream, m21stream.Score):
        parts = list(stream.parts)
        if not parts:
            parts = [stream]
    else:
        parts = [stream]
    out = []
    for p in parts:
        if not p.getElementsByClass(m21stream.Measure):
            p = p.makeMeasures(inPlace=False)
            p.makeTies(inPlace=True)
        out.append(p)
    return out


def _first(stream, classes):
    for el in stream.recurse().getElementsByClass(classes):
        return el
    return None


def _sounding(m):
    """The notes, chords and rests of a measure in order, without graces and chord symbols."""
    from music21 import harmony, stream as m21stream

    if m.getElementsByClass(m21stream.Voice):
        raise WriterError(f"bar {m.number} holds several voices (ABC '&' overlay), "
                          "which the canonical writer does not write")
    out = []
    for el in m.notesAndRests:
        if isinstance(el, harmony.Harmony) or el.duration.isGrace:
            continue
        if el.duration.quarterLength == 0:
            continue
        out.append(el)
    return out


def _tuplet_ratio(el):
    tups = el.duration.tuplets
    if not tups:
        return None
    t = tups[0]
    return t


class _Bar:
    """Accidental state of one bar, read three ways at once (see module doc)."""

    def __init__(self, key_alter: dict):
        self.key_alter = key_alter
        self.by_octave: dict = {}
        self.by_step: dict = {}

    def pitch(self, p) -> str:
        step = p.step
        octave = p.octave if p.octave is not None else p.implicitOctave
        alter = int(round(p.alter))
        if alter not in _ACC:
            raise WriterError(f"pitch {p.nameWithOctave} has an alteration ABC cannot write")
        ka = self.key_alter.get(step, 0)
        written = ""
        if (alter != ka or alter != self.by_octave.get((step, octave), ka)
                or alter != self.by_step.get(step, ka)):
            written = _ACC[alter]
            self.by_octave[(step, octave)] = alter
            self.by_step[step] = alter
        return written + note_letter(step, octave)


def _key_alter(k) -> dict:
    if k is None:
        return {}
    return {p.step: int(round(p.alter)) for p in k.alteredPitches}


# --------------------------------------------------------------------------
# Writing


class _PartWriter:
    def __init__(self, part, unit: Fraction, key0, ts0, brackets: dict):
        self.part = part
        self.unit_ql = unit * 4
        self.key = key0
        self.ts = ts0
        self.brackets = brackets

    def dur(self, ql: Fraction) -> str:
        return duration_str(ql / self.unit_ql)

    def _tie(self, el, start: Fraction) -> str:
        """'-' when el is tied and a note of one of its pitches starts where it ends.

        A tie to another pitch (some sources use ``-`` like a slur) is no tie
        in sound; abc2midi rejects it, so it is not written.
        """
        tied = el.tie is not None and el.tie.type in ("start", "continue")
        if el.isChord:
            tied = tied or any(n.tie is not None and n.tie.type in ("start", "continue") for n in el.notes)
        if not tied:
            return ""
        end = start + frac(el.duration.quarterLength)
        return "-" if any((int(round(p.ps)), end) in self.onsets for p in el.pitches) else ""

    def element(self, el, bar: _Bar, start: Fraction, scale: Fraction = Fraction(1)) -> str:
        ql = frac(el.duration.quarterLength) * scale
        if el.isRest:
            return "z" + self.dur(ql)
        tie = self._tie(el, start)
        if el.isChord:
            pitches = sorted(el.pitches, key=lambda p: (p.ps, p.step))
            return "[" + "".join(bar.pitch(p) for p in pitches) + "]" + self.dur(ql) + tie
        return bar.pitch(el.pitch) + self.dur(ql) + tie

    def measure(self, m) -> str:
        """The text of one bar, without bar lines."""
        bar = _Bar(_key_alter(self.key))
        beat = frac(self.ts.beatDuration.quarterLength) if self.ts is not None else Fraction(1)
        pos = frac(m.paddingLeft)
        m_on = frac(m.getOffsetBySite(self.part))
        els = _sounding(m)
        out = []
        i = 0
        while i < len(els):
            el = els[i]
            t = _tuplet_ratio(el)
            if t is None:
                group = [el]
                text = self.element(el, bar, m_on + frac(el.offset))
                length = frac(el.duration.quarterLength)
            else:
                # Gather the group: consecutive notes with the same ratio until
                # their length is a whole multiple of the shortest tuplet span
                # among them ((3:2:2 A2B ends after B, (3 A2B2c2 after c2).
                group, length, span = [], Fraction(0), None
                j = i
                while j < len(els):
                    tj = _tuplet_ratio(els[j])
                    if tj is None or (tj.numberNotesActual, tj.numberNotesNormal) != (
                            t.numberNotesActual, t.numberNotesNormal):
                        break
                    group.append(els[j])
                    length += frac(els[j].duration.quarterLength)
                    total = frac(tj.totalTupletLength())
                    span = total if span is None else min(span, total)
                    j += 1
                    if span and length % span == 0:
                        break
                p, q, r = t.numberNotesActual, t.numberNotesNormal, len(group)
                scale = Fraction(p, q)
                head = f"({p}" if (_DEFAULT_Q.get(p) == q and r == p) else f"({p}:{q}:{r}"
                text = head + "".join(self.element(g, bar, m_on + frac(g.offset), scale) for g in group)
            if out and beat and pos % beat == 0:
                out.append(" ")
            out.append(text)
            pos += length
            i += len(group)
        return "".join(out)

    def changes(self, m, apply: bool = True) -> list[str]:
        """Field lines for meter and key changes at the start of bar m.

        With apply=False only looks (does the next bar need a line of its own?).
        """
        from music21 import key as m21key, meter

        lines = []
        ts = _writable_meter(_first(m, meter.TimeSignature))
        if ts is not None and (self.ts is None or ts.ratioString != self.ts.ratioString):
            if apply:
                self.ts = ts
            lines.append("M:" + meter_str(ts))
        k = _first(m, m21key.KeySignature)
        if k is not None and key_str(k) != key_str(self.key):
            if apply:
                self.key = k
            lines.append("K:" + key_str(k))
        return lines

    def lines(self) -> list[str]:
        from music21 import stream as m21stream

        ms = []
        # A bar with nothing to sound (music21 leaves one where it dropped a note it
        # could not read) would write two bar lines with nothing between ('|::'):
        # drop it and give its closing bar line to the bar before.
        self.close_of = {}
        for m in self.part.getElementsByClass(m21stream.Measure):
            if ms and not _sounding(m):
                c = _closing(m)
                if c != "|":
                    self.close_of[id(ms[-1])] = c
                continue
            ms.append(m)
        if not ms:
            return []
        # (pitch, onset) of every sounding note: where a tie can land
        self.onsets = set()
        for m in ms:
            m_on = frac(m.getOffsetBySite(self.part))
            for el in _sounding(m):
                if not el.isRest:
                    for p in el.pitches:
                        self.onsets.add((int(round(p.ps)), m_on + frac(el.offset)))
        drop, add = _repeat_fixes(ms, self.close_of)
        self.brackets = dict(self.brackets, unmatched=drop, implied=add)
        bar_ql = frac(self.ts.barDuration.quarterLength) if self.ts is not None else None
        pickup = len(ms) > 1 and (frac(ms[0].paddingLeft) > 0 or (
            bar_ql is not None and frac(ms[0].duration.quarterLength) < bar_ql))
        out: list[str] = []
        line = _opening(ms[0], self.brackets, line_start=True)
        count = 0
        # The first bar's signatures are the header's; later ones are changes.
        self.changes(ms[0])
        for i, m in enumerate(ms):
            if i > 0:
                ch = self.changes(m)
                out.extend(ch)
            line += self.measure(m)
            close = self.close_of.get(id(m)) or _closing(m)
            if i == len(ms) - 1:
                out.append(line + close)
                break
            nxt = ms[i + 1]
            if not (i == 0 and pickup):
                count += 1
            if (count and count % BARS_PER_LINE == 0 and not (i == 0 and pickup)) or \
                    self.changes(nxt, apply=False):
                out.append(line + close)
                line = _opening(nxt, self.brackets, line_start=True)
            else:
                joined = _join(close, _opening(nxt, self.brackets, line_start=False))
                if joined == "::" and line[-1:].isupper():
                    joined = ":||:"     # music21 reads "G::" as a field G: to the end of the line
                line += joined
        return out

def _closing(m) -> str:
    from music21 import bar as m21bar

    rb = m.rightBarline
    if rb is None:
        return "|"
    if isinstance(rb, m21bar.Repeat):
        return ":|" if rb.direction == "end" else "|"
    return {"double": "||", "final": "|]", "heavy-light": "[|",
            "light-heavy": "|]", "heavy-heavy": "||"}.get(rb.type, "|")


def _writable_meter(ts):
    """A meter ABC can write: music21 sometimes invents one like 1/6 for a bar it split."""
    if ts is None:
        return None
    d = ts.denominator
    return ts if d > 0 and d & (d - 1) == 0 else None


def _repeat_fixes(ms, close_of: dict | None = None) -> tuple[set, set]:
    """(start repeats to drop, start repeats to add), by bar identity.

    Dropped: a start repeat that no end repeat closes (music21 keeps one whose
    end it lost in sources with ``[|]:|`` and the like).  Added: the start of a
    section that ends with an end repeat but has no start repeat of its own,
    right after the previous end repeat, where the repeat goes back to.  abc2midi
    rejects both forms; neither changes a note.
    """
    from music21 import bar as m21bar

    drop, add = set(), set()
    open_at, after_end = None, None
    for i, m in enumerate(ms):
        lb, rb = m.leftBarline, m.rightBarline
        if isinstance(lb, m21bar.Repeat) and lb.direction == "start":
            if open_at is not None:
                drop.add(id(open_at))
            open_at = m
        ends = (isinstance(rb, m21bar.Repeat) and rb.direction == "end") or \
            (close_of or {}).get(id(m)) == ":|"
        if ends:
            if open_at is None and after_end is not None and after_end is not m:
                add.add(id(after_end))
            open_at = None
            after_end = ms[i + 1] if i + 1 < len(ms) else None
    if open_at is not None:
        drop.add(id(open_at))
    return drop, add


def _opening(m, brackets: dict, line_start: bool) -> str:
    """'|:' when bar m starts a repeat, the ending number when it starts an ending, else ''."""
    from music21 import bar as m21bar

    lb = m.leftBarline
    starts = isinstance(lb, m21bar.Repeat) and lb.direction == "start"
    if (starts and id(m) not in brackets.get("unmatched", ())) or id(m) in brackets.get("implied", ()):
        return "|:"
    n = brackets.get(id(m))
    if n:
        return ("[" + n) if line_start else n
    return ""


def _join(close: str, opening: str) -> str:
    if not opening:
        return close
    if opening == "|:":
        return "::" if close == ":|" else "|:"
    # an ending number
    return close + opening if close in ("|", ":|") else close + "[" + opening


def _brackets(stream, parts) -> dict:
    from music21 import spanner

    out = {}
    seen = set()
    for s in [stream] + list(parts):
        for sp in s.spannerBundle.getByClass(spanner.RepeatBracket):
            if id(sp) in seen:
                continue
            seen.add(id(sp))
            first = sp.getFirst()
            if first is not None and sp.number is not None:
                out[id(first)] = str(sp.number).replace(" ", "")
    return out


def choose_unit(parts) -> Fraction:
    """L: by the rule in the module doc: fewest duration characters, ties to 1/8."""
    lengths = []
    for p in parts:
        for el in p.recurse().notesAndRests:
            from music21 import harmony

            if isinstance(el, harmony.Harmony) or el.duration.isGrace:
                continue
            ql = frac(el.duration.quarterLength)
            if ql == 0:
                continue
            t = el.duration.tuplets
            if t:
                ql = ql * Fraction(t[0].numberNotesActual, t[0].numberNotesNormal)
            lengths.append(ql)
    best, best_cost = UNIT_CHOICES[0], None
    for u in UNIT_CHOICES:
        cost = sum(len(duration_str(ql / (u * 4))) for ql in lengths)
        if best_cost is None or cost < best_cost:
            best, best_cost = u, cost
    return best


def write_abc(stream, *, index: int = 1, title: str | None = None) -> str:
    """Write a music21 Score or Part as canonical ABC (see the module doc)."""
    from music21 import key as m21key, meter, tempo

    parts = _parts(stream)
    if title is None:
        md = getattr(stream, "metadata", None)
        title = (md.title if md is not None else None) or ""
    title = " ".join(str(title).split())
    ts0 = _first(parts[0], meter.TimeSignature)
    key0 = _first(parts[0], m21key.KeySignature)
    mm = _first(stream, tempo.MetronomeMark)
    unit = choose_unit(parts)
    brackets = _brackets(stream, parts)

    head = [f"X:{index}"]
    if title:
        head.append(f"T:{title}")
    head.append(f"M:{meter_str(ts0)}")
    head.append(f"L:{unit.numerator}/{unit.denominator}")
    q = tempo_str(mm)
    if q:
        head.append(f"Q:{q}")
    head.append(f"K:{key_str(key0)}")

    body = []
    for i, p in enumerate(parts):
        if len(parts) > 1:
            body.append(f"V:{i + 1}")
        body.extend(_PartWriter(p, unit, key0, ts0, brackets).lines())
    return "\n".join(head + body) + "\n"
