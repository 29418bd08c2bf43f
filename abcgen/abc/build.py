"""The reader's model (``abcgen.abc.parse``) -> a music21 Score.

One Part per voice, one Measure per bar as the source bars it (a bar that
does not fit the meter keeps its length: nothing is re-barred here), the
first bar's TimeSignature, Key and tempo, and a TimeSignature or Key in the
bar where the source changes them.  Notes carry their exact spelled pitch
(the accidental rules are applied by the parser) and their tie; tuplet notes
carry a music21 Tuplet so the canonical writer writes ``(p:q:r``.  Repeats
are ``bar.Repeat`` bar lines and endings ``spanner.RepeatBracket``s, so
``expandRepeats`` plays them out.  A first bar shorter than the meter is a
pickup (``paddingLeft``).
"""

from __future__ import annotations

from fractions import Fraction

from .parse import Event, Key, Meter, TuneModel


def _key(k: Key):
    from music21 import key as m21key

    if k.tonic is None:
        return m21key.KeySignature(0)
    try:
        return m21key.Key(k.tonic.replace("b", "-") if len(k.tonic) > 1 else k.tonic, k.mode)
    except Exception:
        return m21key.KeySignature(max(-7, min(7, k.sharps)))


def _meter(m: Meter):
    from music21 import meter

    return meter.TimeSignature(f"{m.num}/{m.den}")


def _duration(ev: Event):
    from music21 import duration

    ql = ev.length * 4
    if ev.tuplet is not None:
        p, q = ev.tuplet
        written = ql * p / q
        d = duration.Duration(written)
        if d.type not in ("complex", "inexpressible"):
            t = duration.Tuplet(p, q)
            t.setDurationType(d.type, d.dots)
            d.appendTuplet(t)
            if Fraction(d.quarterLength) == ql:
                return d
    return duration.Duration(ql)


def _element(ev: Event, tie_in: set):
    """A music21 Note, Chord or Rest; tie_in holds the (midi) pitches tied into this onset."""
    from music21 import chord, note, pitch, tie

    d = _duration(ev)
    if ev.is_rest:
        r = note.Rest()
        r.duration = d
        return r
    notes = []
    for t in ev.tones:
        p = pitch.Pitch(step=t.step, octave=t.octave)
        if t.alter:
            p.accidental = pitch.Accidental(t.alter)
        else:
            p.accidental = None
        n = note.Note(p)
        n.duration = d
        into = t.midi in tie_in
        if t.tie and into:
            n.tie = tie.Tie("continue")
        elif t.tie:
            n.tie = tie.Tie("start")
        elif into:
            n.tie = tie.Tie("stop")
        notes.append(n)
    if len(notes) == 1:
        return notes[0]
    c = chord.Chord(notes)
    c.duration = d
    ties = {n.tie.type for n in notes if n.tie is not None}
    if ties and all(n.tie is not None for n in notes) and len(ties) == 1:
        c.tie = tie.Tie(ties.pop())
    return c


def build_score(model: TuneModel):
    """The music21 Score of a tune model (see the module doc)."""
    from music21 import bar as m21bar, duration, metadata, spanner, stream, tempo

    score = stream.Score()
    score.abc_implied_with_endings = False
    score.metadata = metadata.Metadata()
    score.metadata.title = model.title or ""
    for vi, (vid, bars) in enumerate(model.voices.items()):
        bars = [b for b in bars if b.events or b.meter is not None or b.key is not None]
        bars = [b for b in bars if b.events]
        if not bars:
            continue
        part = stream.Part()
        part.id = f"V{vid}"
        meter = model.meter
        offset = Fraction(0)
        tie_in: set = set()
        measures = []
        for bi, b in enumerate(bars):
            m = stream.Measure(number=bi + 1)
            if bi == 0:
                if model.meter is not None:
                    m.insert(0, _meter(model.meter))
                m.insert(0, _key(model.key))
                if vi == 0 and model.tempo is not None:
                    beat, num = model.tempo
                    mm = tempo.MetronomeMark(number=int(num) if float(num).is_integer() else num,
                                             referent=duration.Duration(beat * 4))
                    m.insert(0, mm)
            if b.meter is not None and (bi > 0 or model.meter is None or
                                        (b.meter.num, b.meter.den) != (model.meter.num, model.meter.den)):
                for el in list(m.getElementsByClass("TimeSignature")):
                    m.remove(el)
                m.insert(0, _meter(b.meter))
                meter = b.meter
            elif b.meter_none:
                meter = None
            if b.key is not None:
                for el in list(m.getElementsByClass("KeySignature")):
                    m.remove(el)
                m.insert(0, _key(b.key))
            pos = Fraction(0)
            for ev in b.events:
                el = _element(ev, tie_in)
                m.insert(pos, el)
                tie_in = {t.midi for t in ev.tones if t.tie}
                pos += ev.length * 4
            if bi == 0 and meter is not None and len(bars) > 1 and pos < meter.length * 4:
                m.paddingLeft = meter.length * 4 - pos
            if b.start_repeat:
                m.leftBarline = m21bar.Repeat(direction="start")
            if b.end_repeat:
                m.rightBarline = m21bar.Repeat(direction="end")
            elif b.close == "||":
                m.rightBarline = m21bar.Barline("double")
            elif b.close == "|]":
                m.rightBarline = m21bar.Barline("final")
            elif b.close == "[|":
                m.rightBarline = m21bar.Barline("heavy-light")
            part.insert(offset, m)
            measures.append(m)
            offset += pos
        implied = _implied_starts(bars, measures, m21bar)
        if implied and (any(b.ending for b in bars) or len(model.voices) > 1):
            score.abc_implied_with_endings = True
        _endings(part, bars, measures, spanner)
        score.insert(0, part)
    return score


def _implied_starts(bars, measures, m21bar):
    """Repeats made explicit as abc2midi plays them.

    An end repeat with no start repeat of its own goes back to the start of the
    tune, or after an earlier end repeat to just after it (or after a double bar
    line that follows it): that bar gets a start repeat.  A start repeat that no
    end repeat closes is no repeat (abc2midi plays that part once): it goes.
    """
    open_at, back_to, implied = None, 0, []
    for i, b in enumerate(bars):
        if b.start_repeat:
            if open_at is not None:
                bars[open_at].start_repeat = False
                measures[open_at].leftBarline = None
            open_at = i
        if b.end_repeat:
            if open_at is None and back_to and back_to <= i:   # (to the start: no mark needed)
                bars[back_to].start_repeat = True
                measures[back_to].leftBarline = m21bar.Repeat(direction="start")
                implied.append(back_to)
            open_at = None
            back_to = i + 1 if i + 1 < len(bars) else None
        elif back_to and b.close in ("||", "[|", "|]") and i + 1 < len(bars):
            back_to = i + 1     # after a repeat, a double bar line is where the next one goes back to
    if open_at is not None:
        bars[open_at].start_repeat = False
        measures[open_at].leftBarline = None
    return implied


def _endings(part, bars, measures, spanner):
    """A RepeatBracket from each bar that starts an ending to the bar that closes it.

    An ending closes at an end repeat, a double or final bar line, a start
    repeat, or the start of the next ending; a last ending with none of these
    is one bar long.
    """
    i = 0
    while i < len(bars):
        num = bars[i].ending
        if not num:
            i += 1
            continue
        j = i
        while True:
            b = bars[j]
            if b.end_repeat or b.close in ("||", "|]", "[|"):
                break
            if j + 1 >= len(bars) or bars[j + 1].ending or bars[j + 1].start_repeat:
                break
            if not any(bars[k].end_repeat for k in range(i, len(bars))) and j == i:
                break
            j += 1
        number = _range(num)
        rb = spanner.RepeatBracket(measures[i:j + 1], number=number)
        part.insert(0, rb)
        i = j + 1


def _range(num: str) -> str:
    out = []
    for piece in num.split(","):
        if "-" in piece:
            a, b = piece.split("-", 1)
            out.extend(str(x) for x in range(int(a), int(b) + 1))
        else:
            out.append(piece)
    return ",".join(out)
