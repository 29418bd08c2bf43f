"""Re-barring: bar lines moved so that every bar fits the meter, where the notes allow.

Sources often misplace bar lines: Essen songs end a line (a phrase) in the
middle of a bar and go on without a bar line, or put two bars in one; real
books write jigs in 12/8 bars under ``M:6/8``.  The canonical corpus form
keeps the header's meter and moves the bar lines instead of inventing meter
changes (issue 15).

A tune is cut into *segments* at every structural mark: a start or end
repeat, an ending, a double or final bar line, a meter or key change, a part
label.  A segment whose bars all fit is left alone (its first bar may be
shorter, a pickup; its last bar too, the rest of that bar).  Otherwise its
notes are barred again from its start: the first bar line stays where the
source puts it when the first bar is shorter than the meter (a pickup), and
every later bar is a full bar of the meter; a note across a new bar line is
split into two tied notes.  Repeats, endings and pickups stay where they are.
The source's last bar line of the segment must fall on a new bar line: a
misplaced bar line is a local slip; if moving the bar lines would shift the
rest of the section, the tune cannot be re-barred.

A tune cannot be re-barred, and ``rebar`` raises ``RebarError`` naming why,
when a tuplet would cross a new bar line or the bar lines would shift the
rest of a section.
"""

from __future__ import annotations

import copy
from fractions import Fraction

from .parse import AbcSyntaxError, Bar, Event, TuneModel


class RebarError(AbcSyntaxError):
    """Bars that do not fit the meter and cannot be barred again."""


def _len(b: Bar) -> Fraction:
    return sum((e.length for e in b.events), Fraction(0))


def _segments(bars: list) -> list:
    """Lists of consecutive bars, cut at structural marks (see the module doc)."""
    out, cur = [], []
    for b in bars:
        starts = b.start_repeat or b.ending or b.meter is not None or b.meter_none or \
            b.key is not None or b.part
        if cur and starts:
            out.append(cur)
            cur = []
        cur.append(b)
        if b.end_repeat or b.close != "|":
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _fits(seg: list, bar: Fraction) -> bool:
    for i, b in enumerate(seg):
        n = _len(b)
        if n == bar or (n < bar and (i == 0 or i == len(seg) - 1)):
            continue
        return False
    return True


def _split(ev: Event, at: Fraction) -> tuple[Event, Event]:
    """ev cut at `at` (whole notes from its start): the first part tied to the second."""
    a, b = copy.copy(ev), copy.copy(ev)
    a.length, b.length = at, ev.length - at
    a.tones = [copy.copy(t) for t in ev.tones]
    for t in a.tones:
        t.tie = True
    b.tones = [copy.copy(t) for t in ev.tones]
    a.written = b.written = None
    return a, b


def _rebar_segment(seg: list, bar: Fraction, split_tuplets: bool = False) -> list:
    first = _len(seg[0])
    cut = first if Fraction(0) < first < bar else bar
    # the source's last bar line in the segment must be one of the new ones: the
    # misplaced bar lines are a local slip, not a shift of the rest of the section
    starts, at = [], Fraction(0)
    for b in seg[:-1]:
        at += _len(b)
        starts.append(at)
    if starts and (starts[-1] - cut) % bar != 0:
        raise RebarError("bars do not fit the meter and new bar lines would shift the rest of a section")
    events = [e for b in seg for e in b.events]
    bars: list[list] = [[]]
    pos = Fraction(0)            # in the current new bar
    limit = cut
    queue = list(events)
    while queue:
        ev = queue.pop(0)
        room = limit - pos
        if ev.length <= room:
            bars[-1].append(ev)
            pos += ev.length
        else:
            if ev.tuplet is not None and not split_tuplets:
                raise RebarError("bars do not fit the meter and a tuplet would cross a bar line")
            if room > 0:
                a, b = _split(ev, room)
                if ev.tuplet is not None:
                    a.tuplet = b.tuplet = None    # plain lengths of the same sound
                bars[-1].append(a)
                queue.insert(0, b)
                pos = limit
            else:
                queue.insert(0, ev)
        if pos == limit and queue:
            bars.append([])
            pos, limit = Fraction(0), bar
    out = []
    for k, evs in enumerate(bars):
        nb = copy.copy(seg[0]) if k == 0 else Bar()
        nb.events = evs
        if k > 0:
            nb.start_repeat, nb.ending, nb.meter, nb.key, nb.part = False, None, None, None, None
            nb.meter_none = False
        if k < len(bars) - 1:
            nb.end_repeat, nb.close = False, "|"
        else:
            nb.end_repeat, nb.close = seg[-1].end_repeat, seg[-1].close
        if k == 0 and len(bars) > 1:
            nb.end_repeat, nb.close = False, "|"
        out.append(nb)
    return out


def rebar(model: TuneModel, strict: bool = True) -> int:
    """Re-bar every voice of the model in place; the number of segments barred again.

    strict: a segment that cannot be re-barred raises RebarError.  Else a
    tuplet note over a new bar line is split into two tied notes of plain
    lengths (the same sound), and a segment whose bar lines would shift keeps
    the source's bars.
    """
    changed = 0
    for vid, bars in model.voices.items():
        bars = [b for b in bars if b.events]
        meter = model.meter
        new = []
        for seg in _segments(bars):
            if seg[0].meter is not None:
                meter = seg[0].meter
            elif seg[0].meter_none:
                meter = None
            if meter is None:
                if any(_len(b) != _len(seg[0]) for b in seg[1:-1]):
                    pass   # M:none: bars are free
                new.extend(seg)
                continue
            length = meter.length
            if _fits(seg, length):
                new.extend(seg)
                continue
            try:
                new.extend(_rebar_segment(seg, length, split_tuplets=not strict))
                changed += 1
            except RebarError:
                if strict:
                    raise
                new.extend(seg)
        model.voices[vid] = new
    return changed
